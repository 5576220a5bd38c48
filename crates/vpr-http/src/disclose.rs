//! Disclosure: the policy decision, minimisation and audit steps of the pipeline, shared by
//! every read of notice data by anyone but its publisher.
//!
//! Order, for each read: check the requester (role held, purpose in the agreement, break-glass
//! justified) -> decide per notice (with the subject's consents and objections) -> minimise to
//! the decided view -> append the audit entry durably -> only then respond. If the audit entry
//! cannot be written the read fails with 503 and nothing is disclosed.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use vpr_auth::Principal;
use vpr_policy::{AccessContext, Decision, NoticeFacts, Requester, View};
use vpr_store::audit::{AuditEntry, AuditedNotice};
use vpr_store::directives::DirectiveState;
use vpr_store::StoredNotice;

use crate::error::{current_request_id, ApiError};
use crate::AppState;

/// The circumstances a caller asserts for a read.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    /// Purpose of use.
    pub purpose: String,
    /// End user.
    pub user_id: String,
    /// Role.
    pub role: String,
    /// Incident, encounter or case reference.
    pub context_ref: Option<String>,
    /// Break-glass justification.
    pub justification: Option<String>,
}

/// Why a requester was refused before any notice was considered.
fn requester_refusal(state: &AppState, principal: &Principal, access: &AccessRequest) -> Option<String> {
    let agreement = &state.agreement;
    if !agreement.purposes.contains_key(&access.purpose) {
        return Some(format!("purpose `{}` is not a purpose of the agreement", access.purpose));
    }
    let holds = state.tokens.registry().system(&principal.client_id).is_some_and(|s| s.roles.contains(&access.role));
    if !holds {
        return Some(format!("this system may not act in the role `{}`", access.role));
    }
    if !agreement.role_allowed(&access.role, principal.org_type) {
        return Some(format!("the agreement gives no `{}` role to a {}", access.role, principal.org_type));
    }
    if let Some(j) = &access.justification {
        let min = agreement.break_glass.min_justification_chars;
        if j.trim().chars().count() < min {
            return Some(format!("a break-glass justification needs at least {min} characters"));
        }
    }
    None
}

/// The blind indexes of a subject's identifiers, and the references the audit records for them
/// (`kind:blind-index`, never the identifier itself).
pub fn subject_keys(state: &AppState, subject: &vpr_domain::notice::Subject) -> (Vec<String>, Vec<String>) {
    subject
        .match_keys()
        .iter()
        .map(|(kind, value)| {
            let blind = state.store.vault().blind_index(*kind, value);
            let reference = format!("{}:{blind}", kind.code());
            (blind, reference)
        })
        .unzip()
}

/// What the policies may know about a notice.
pub fn facts(state: &AppState, n: &StoredNotice) -> NoticeFacts {
    let publisher_type = state
        .tokens
        .registry()
        .partner(&n.publisher_ods)
        .map(|p| p.org_type)
        .unwrap_or(vpr_domain::vocab::OrgType::Icb);
    let s = &n.content.subject;
    let kinds =
        [("person", s.person.is_some()), ("address", s.address.is_some()), ("telephone", s.telephone.is_some())];
    NoticeFacts {
        id: n.id.to_string(),
        publisher: n.publisher_ods.clone(),
        publisher_type,
        category: n.content.category.code().to_owned(),
        risk_level: n.content.risk_level.code().to_owned(),
        medical_factor_operative: n.content.medical_factor_operative,
        lawful_basis: n.content.lawful_basis.iter().map(|b| b.code().to_owned()).collect(),
        subject_kinds: kinds.iter().filter(|(_, present)| *present).map(|(k, _)| (*k).to_owned()).collect(),
        has_crime_reference: n.content.restricted.as_ref().is_some_and(|r| r.crime_reference.is_some()),
        active: n.status == vpr_domain::vocab::NoticeStatus::Active,
    }
}

/// One notice considered for disclosure.
#[derive(Debug)]
pub struct Considered {
    /// The notice.
    pub notice: StoredNotice,
    /// How the caller's query matched it (look-ups).
    pub matched: Vec<String>,
    /// The decision.
    pub decision: Decision,
}

/// The result of a governed read, ready to send.
#[derive(Debug)]
pub struct Disclosure {
    /// The audit entry's id.
    pub audit_id: Uuid,
    /// The permitted notices, minimised.
    pub results: Vec<Value>,
    /// Whether anything was refused at the requester level.
    pub refused: Option<String>,
}

/// A read to govern.
#[derive(Debug)]
pub struct Read {
    /// `lookup` or `read`.
    pub action: &'static str,
    /// Subject references for the audit (`kind:blind-index`).
    pub subject_refs: Vec<String>,
    /// The notices found, with how the query matched each.
    pub candidates: Vec<(StoredNotice, Vec<String>)>,
    /// The status a refusal is answered with.
    pub refusal_status: u16,
    /// For deliveries and feed reads: the subscription receiving the notices, and which of them
    /// it was given before (so it is told of withdrawals).
    pub recipient: Option<Recipient>,
}

/// A subscription on the receiving end of a read.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Notices it was given before.
    pub received: std::collections::HashSet<String>,
    /// The broadest view its payload allows (`id-only` subscriptions get the existence view).
    pub max_view: View,
    /// A push: recorded with outcome 0, since the receiver's answer comes after the entry is
    /// committed (it is kept in the subscription's delivery status).
    pub push: bool,
    /// The request id to record when there is no HTTP request (a push).
    pub request_id: Option<String>,
}

impl Read {
    /// A read by an API caller (not a subscription).
    pub fn new(
        action: &'static str,
        subject_refs: Vec<String>,
        candidates: Vec<(StoredNotice, Vec<String>)>,
        refusal_status: u16,
    ) -> Self {
        Self { action, subject_refs, candidates, refusal_status, recipient: None }
    }
}

/// Decides, minimises and audits a read. Runs on the blocking pool.
pub fn govern(
    state: &AppState,
    principal: &Principal,
    access: &AccessRequest,
    read: Read,
    now: DateTime<Utc>,
) -> Result<Disclosure, ApiError> {
    let states = if state.ungoverned_reads || requester_refusal(state, principal, access).is_some() {
        HashMap::new()
    } else {
        let ids: Vec<Uuid> = read.candidates.iter().map(|(n, _)| n.id).collect();
        state.store.directive_states(&ids, &access.purpose, now.date_naive())?
    };
    let (disclosure, entry) = decide_read(state, principal, access, read, now, &states);
    // Guarantee 1: no disclosure without a committed audit entry. (The benchmark switches that
    // skip it are refused outside demo mode.)
    if let Some(entry) = entry {
        state.store.append_audit(&entry).map_err(ApiError::audit_write_failed)?;
    }
    Ok(disclosure)
}

/// Decides and minimises a read, given the directives in force for its notices' subjects (read
/// just before, for the read's purpose), and makes its audit entry. Nothing may be disclosed
/// until the caller has committed that entry; there is none only for the benchmark baselines
/// (refused outside demo mode).
pub fn decide_read(
    state: &AppState,
    principal: &Principal,
    access: &AccessRequest,
    read: Read,
    now: DateTime<Utc>,
    states: &HashMap<Uuid, DirectiveState>,
) -> (Disclosure, Option<AuditEntry>) {
    let Read { action, subject_refs, candidates, refusal_status, recipient } = read;
    if state.ungoverned_reads {
        // Benchmark baseline only (refused outside demo mode): no decision, no audit.
        let full =
            Decision { permit: true, view: Some(View::Full), restricted: false, lawful_basis: vec![], clauses: vec![] };
        let results = candidates.iter().map(|(n, m)| minimise(state, n, m, View::Full, &full)).collect();
        return (Disclosure { audit_id: Uuid::nil(), results, refused: None }, None);
    }
    let refused = requester_refusal(state, principal, access);
    let mut considered = Vec::new();
    if refused.is_none() {
        let requester = Requester {
            org: principal.org.as_str().to_owned(),
            org_type: principal.org_type,
            role: access.role.clone(),
            system: principal.client_id.clone(),
        };
        for (notice, matched) in candidates {
            let directives = states.get(&notice.id).copied().unwrap_or_default();
            let ctx = AccessContext {
                purpose: access.purpose.clone(),
                break_glass: access.justification.is_some(),
                objection_upheld: directives.objection_upheld,
                consent_given: directives.consent_given,
                has_context_reference: access.context_ref.is_some(),
                previously_received: recipient.as_ref().is_some_and(|r| r.received.contains(&notice.id.to_string())),
            };
            let mut decision = state.agreement.decide(&requester, &facts(state, &notice), &ctx);
            if let (Some(r), Some(view)) = (&recipient, decision.view) {
                if view > r.max_view {
                    decision.view = Some(r.max_view);
                    decision.restricted = false;
                }
            }
            considered.push(Considered { notice, matched, decision });
        }
    }
    let permitted = considered.iter().filter(|c| c.decision.permit).count();
    let decision = match (&refused, considered.len(), permitted) {
        (Some(_), _, _) => "refused",
        (None, 0, _) => "no-match",
        (None, n, p) if p == n => "permit",
        (None, _, 0) => "deny",
        _ => "partial",
    };
    let outcome = if recipient.as_ref().is_some_and(|r| r.push) {
        0
    } else if refused.is_some() || (action == "read" && permitted == 0) {
        refusal_status
    } else {
        200
    };
    let mut basis = BTreeSet::new();
    let mut clauses = BTreeSet::new();
    for c in &considered {
        basis.extend(c.decision.lawful_basis.iter().cloned());
        clauses.extend(c.decision.clauses.iter().cloned());
    }
    let entry = AuditEntry {
        id: Uuid::new_v4(),
        at: now,
        request_id: recipient
            .as_ref()
            .and_then(|r| r.request_id.clone())
            .or_else(current_request_id)
            .unwrap_or_default(),
        action: action.to_owned(),
        actor_org: principal.org.as_str().to_owned(),
        actor_org_type: principal.org_type.code().to_owned(),
        actor_system: principal.client_id.clone(),
        actor_user: Some(access.user_id.clone()),
        actor_role: Some(access.role.clone()),
        purpose: Some(access.purpose.clone()),
        context_ref: access.context_ref.clone(),
        break_glass: access.justification.is_some(),
        justification: access.justification.clone(),
        subject_refs,
        decision: decision.to_owned(),
        notices: considered
            .iter()
            .map(|c| AuditedNotice {
                id: c.notice.id.to_string(),
                version: c.notice.version.version,
                decision: if c.decision.permit { "permit" } else { "deny" }.to_owned(),
                view: c.decision.view.map(|v| v.code().to_owned()),
                restricted: c.decision.restricted,
                lawful_basis: c.decision.lawful_basis.clone(),
                clauses: c.decision.clauses.clone(),
            })
            .collect(),
        lawful_basis: basis.into_iter().collect(),
        clauses: clauses.into_iter().collect(),
        agreement_version: state.agreement.version.clone(),
        outcome,
        ig_review: (access.justification.is_some() && refused.is_none()).then(|| "pending".to_owned()),
        received_by: recipient.as_ref().map(|r| r.subscription_id.to_string()),
    };
    // Minimise first, so nothing but the minimised form exists past this point.
    let results: Vec<Value> = considered
        .iter()
        .filter_map(|c| c.decision.view.map(|v| minimise(state, &c.notice, &c.matched, v, &c.decision)))
        .collect();
    let disclosure = Disclosure { audit_id: entry.id, results, refused };
    (disclosure, (!state.unaudited_reads).then_some(entry))
}

/// An audit entry for `principal` doing `action` now, with every other field empty, for callers
/// to fill in.
pub fn audit_base(state: &AppState, principal: &Principal, action: &str, outcome: u16) -> AuditEntry {
    audit_entry(state, principal.org.as_str(), principal.org_type.code(), &principal.client_id, action, outcome)
}

/// An audit entry for an actor named by its organisation, type and system (which may no longer
/// be in the registry), doing `action` now.
pub fn audit_entry(
    state: &AppState,
    org: &str,
    org_type: &str,
    system: &str,
    action: &str,
    outcome: u16,
) -> AuditEntry {
    AuditEntry {
        id: Uuid::new_v4(),
        at: state.clock.now(),
        request_id: current_request_id().unwrap_or_default(),
        action: action.to_owned(),
        actor_org: org.to_owned(),
        actor_org_type: org_type.to_owned(),
        actor_system: system.to_owned(),
        actor_user: None,
        actor_role: None,
        purpose: None,
        context_ref: None,
        break_glass: false,
        justification: None,
        subject_refs: vec![],
        decision: String::new(),
        notices: vec![],
        lawful_basis: vec![],
        clauses: vec![],
        agreement_version: state.agreement.version.clone(),
        outcome,
        ig_review: None,
        received_by: None,
    }
}

/// Audits an authenticated read refused before any decision (bad input, e.g. no purpose), then
/// returns the refusal. Nothing about the subject is recorded: the input was not valid.
pub async fn refuse_unread(
    state: &AppState,
    principal: &Principal,
    action: &'static str,
    refusal: ApiError,
) -> ApiError {
    let status = actix_web::ResponseError::status_code(&refusal).as_u16();
    let entry = AuditEntry { decision: "refused".to_owned(), ..audit_base(state, principal, action, status) };
    let store = state.store.clone();
    match crate::pipeline::blocking(move || store.append_audit(&entry).map_err(ApiError::from)).await {
        Ok(()) => refusal,
        Err(e) => ApiError::audit_write_failed(e),
    }
}

/// Shapes a notice to a view: fields outside the view are absent, not blank.
pub fn minimise(state: &AppState, n: &StoredNotice, matched: &[String], view: View, d: &Decision) -> Value {
    let partner = state.tokens.registry().partner(&n.publisher_ods);
    let contact = n.content.contact.clone().or_else(|| partner.map(|p| p.contact.clone()));
    let mut m = Map::new();
    m.insert("id".into(), json!(n.id));
    m.insert("status".into(), json!(n.status));
    m.insert(
        "publisher".into(),
        json!({"ods_code": n.publisher_ods, "name": partner.map(|p| p.name.as_str()).unwrap_or_default()}),
    );
    m.insert("contact".into(), json!(contact));
    if !matched.is_empty() {
        m.insert("matched_on".into(), json!(matched));
    }
    m.insert(
        "decision".into(),
        json!({"view": view.code(), "restricted": d.restricted, "lawful_basis": d.lawful_basis, "clauses": d.clauses, "agreement_version": state.agreement.version}),
    );
    let c = &n.content;
    if view >= View::Summary {
        let s = &c.subject;
        let kinds: Vec<&str> =
            [("person", s.person.is_some()), ("address", s.address.is_some()), ("telephone", s.telephone.is_some())]
                .iter()
                .filter(|(_, p)| *p)
                .map(|(k, _)| *k)
                .collect();
        m.insert("subject_kinds".into(), json!(kinds));
        m.insert("category".into(), json!(c.category));
        m.insert("risk_level".into(), json!(c.risk_level));
        m.insert("aggravating_factors".into(), json!(c.aggravating_factors));
        m.insert("medical_factor_operative".into(), json!(c.medical_factor_operative));
        m.insert("safety_advice".into(), json!(c.safety_advice));
        if let Some(t) = &c.advice_text {
            m.insert("advice_text".into(), json!(t));
        }
        m.insert("review_date".into(), json!(c.review_date));
    }
    if view >= View::Full {
        m.insert("version".into(), json!(n.version.version));
        m.insert("subject".into(), json!(c.subject));
        m.insert("incident_date".into(), json!(c.incident_date));
        m.insert("subject_informed".into(), json!(c.subject_informed));
        m.insert("lawful_basis".into(), json!(c.lawful_basis));
        m.insert("created_at".into(), json!(n.created_at));
        m.insert("updated_at".into(), json!(n.version.at));
    }
    if d.restricted && view >= View::Summary {
        if let Some(r) = &c.restricted {
            m.insert("restricted".into(), json!(r));
        }
    }
    Value::Object(m)
}
