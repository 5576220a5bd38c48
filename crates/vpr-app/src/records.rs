//! Audit entries as partners and IG are shown them: who acted on a notice, when and why.

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::Registry;
use vpr_store::audit::{AuditedNotice, StoredAuditEntry};

/// An organisation as the records name it: code, name from the registry, and type.
#[derive(Debug, Clone, Serialize)]
pub struct OrgRef {
    /// ODS code.
    pub ods_code: String,
    /// Name (absent if it has left the registry).
    pub name: Option<String>,
    /// Organisation type code.
    #[serde(rename = "type")]
    pub org_type: String,
}

impl OrgRef {
    /// The organisation `ods` of type `org_type`, named from the registry.
    pub fn of(registry: &Registry, ods: &str, org_type: &str) -> Self {
        Self {
            ods_code: ods.to_owned(),
            name: registry.partner(ods).map(|p| p.name.clone()),
            org_type: org_type.to_owned(),
        }
    }
}

/// Who acted on a notice, when and why: the part of an entry both access logs show.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    /// Position in the log.
    pub seq: i64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The request that caused it.
    pub request_id: String,
    /// What was done.
    pub action: String,
    /// By which organisation.
    pub organisation: OrgRef,
    /// Which system.
    pub system: String,
    /// Which user.
    pub user: Option<String>,
    /// In which role.
    pub role: Option<String>,
    /// For which purpose.
    pub purpose: Option<String>,
    /// Incident, encounter or case reference.
    pub context_reference: Option<String>,
    /// An emergency access.
    pub break_glass: bool,
    /// Its justification.
    pub break_glass_justification: Option<String>,
    /// The agreement version that decided.
    pub agreement_version: String,
    /// For a partner of a neighbouring ICS: the peer broker that relayed its request (its ICB's
    /// ODS code) and vouches for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_by: Option<String>,
}

/// The access record of a stored entry.
pub fn who_and_why(registry: &Registry, s: &StoredAuditEntry) -> AccessRecord {
    let e = &s.entry;
    AccessRecord {
        seq: s.seq,
        at: e.at,
        request_id: e.request_id.clone(),
        action: e.action.clone(),
        organisation: OrgRef::of(registry, &e.actor_org, &e.actor_org_type),
        system: e.actor_system.clone(),
        user: e.actor_user.clone(),
        role: e.actor_role.clone(),
        purpose: e.purpose.clone(),
        context_reference: e.context_ref.clone(),
        break_glass: e.break_glass,
        break_glass_justification: e.justification.clone(),
        agreement_version: e.agreement_version.clone(),
        relayed_by: e.federation.as_ref().and_then(|f| f.relayed_by.clone()),
    }
}

/// The decision an entry made on one notice, if it made one.
pub fn decision_on(s: &StoredAuditEntry, notice: Uuid) -> Option<&AuditedNotice> {
    let id = notice.to_string();
    s.entry.notices.iter().find(|n| n.id == id)
}

fn merged(base: &impl Serialize, extra: Value) -> Value {
    let mut v = json!(base);
    if let (Some(b), Value::Object(x)) = (v.as_object_mut(), extra) {
        b.extend(x);
    }
    v
}

impl AccessRecord {
    /// The record with the decision on `notice` (a per-notice access log row: fields null
    /// when the entry decided nothing on it).
    pub fn on_notice(&self, s: &StoredAuditEntry, notice: Uuid) -> Value {
        let this = decision_on(s, notice);
        merged(
            self,
            json!({
                "decision": this.map(|n| n.decision.as_str()),
                "view": this.and_then(|n| n.view.as_deref()),
                "restricted": this.map(|n| n.restricted),
                "version": this.map(|n| n.version),
                "lawful_basis": this.map(|n| n.lawful_basis.clone()),
                "clauses": this.map(|n| n.clauses.clone()),
            }),
        )
    }

    /// The record as a disclosure event carries it: the entry's id and, when it decided on
    /// `notice`, that decision.
    pub fn with_decision_on(&self, s: &StoredAuditEntry, notice: Uuid) -> Value {
        let mut extra = json!({"audit_id": s.entry.id});
        if let (Some(n), Some(map)) = (decision_on(s, notice), extra.as_object_mut()) {
            map.insert("decision".into(), json!(n.decision));
            map.insert("view".into(), json!(n.view));
            map.insert("restricted".into(), json!(n.restricted));
            map.insert("lawful_basis".into(), json!(n.lawful_basis));
            map.insert("clauses".into(), json!(n.clauses));
        }
        merged(self, extra)
    }

    /// The record as the access-log feed shows it: its leaf index and the caller's notices.
    pub fn in_feed(&self, s: &StoredAuditEntry, mine: &std::collections::BTreeSet<String>) -> Value {
        let notices: Vec<&AuditedNotice> = s.entry.notices.iter().filter(|n| mine.contains(&n.id)).collect();
        merged(self, json!({"leaf_index": s.leaf_index, "notices": notices}))
    }
}
