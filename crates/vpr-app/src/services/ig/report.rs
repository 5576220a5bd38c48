//! The subject access report: every disclosure of notices about one person (or address, or
//! number), ready to answer an Article 15 request — who saw what, when, why and under which
//! lawful basis and clause.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::AuditQuery;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};
use vpr_store::review::{AuditQuery as StoreQuery, SubjectKeys};
use vpr_store::StoredNotice;

use super::ig_audit;
use crate::caller::{Caller, Reviewer};
use crate::disclose::subject_keys;
use crate::error::{AppError, AppResult};
use crate::records::OrgRef;
use crate::App;

/// Most entries a subject access report gathers.
pub const MAX_REPORT_ENTRIES: usize = 50_000;

/// The report.
#[derive(Debug, Serialize)]
pub struct SubjectAccessReport {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// The request's reference.
    pub reference: Option<String>,
    /// From.
    pub from: Option<DateTime<Utc>>,
    /// To.
    pub to: Option<DateTime<Utc>>,
    /// The agreement in force.
    pub agreement_version: String,
    /// Whether [`MAX_REPORT_ENTRIES`] was reached.
    pub truncated: bool,
    /// The notices about the subject.
    pub notices: Vec<Value>,
    /// The organisations that were shown any of them.
    pub recipients: Vec<Value>,
    /// Each disclosure, oldest first.
    pub disclosures: Vec<Value>,
    /// Searches that matched the subject but disclosed nothing.
    pub searches: Vec<Value>,
}

/// The entries and notices about the subject (on the blocking pool).
fn gather(app: &App, blind: &[String], q: &StoreQuery) -> AppResult<(Vec<StoredNotice>, Vec<StoredAuditEntry>)> {
    let mut notices = Vec::new();
    for (id, _) in app.store.find_by_blind_indexes(blind)? {
        if let Some(n) = app.store.get(id)? {
            notices.push(n);
        }
    }
    let mut entries = Vec::new();
    let mut cursor = None;
    loop {
        let chunk = app.store.search_audit(q, cursor, 1000)?;
        let full = chunk.len() == 1000;
        cursor = chunk.last().map(|s| s.seq);
        entries.extend(chunk);
        if !full || entries.len() >= MAX_REPORT_ENTRIES {
            break;
        }
    }
    Ok((notices, entries))
}

/// Whose disclosures a report lists: for the ICB, those of every notice about the subject; for
/// another organisation, those of its own notices, and what its own staff were shown of any
/// publisher's (its own processing, which its Article 15 answer covers too).
struct About {
    /// The notices whose every disclosure is listed.
    notices: BTreeSet<String>,
    /// The organisation in scope and every notice about the subject.
    own_staff: Option<(String, BTreeSet<String>)>,
}

impl About {
    fn covers(&self, actor_org: &str, notice_id: &str) -> bool {
        self.notices.contains(notice_id)
            || self.own_staff.as_ref().is_some_and(|(org, all)| org == actor_org && all.contains(notice_id))
    }
}

fn disclosure_rows(app: &App, entries: &[StoredAuditEntry], about: &About) -> (Vec<Value>, Vec<Value>) {
    let registry = app.tokens.registry();
    let purpose_title =
        |p: &Option<String>| p.as_ref().and_then(|p| app.agreement.purposes.get(p)).map(|p| p.title.clone());
    let mut disclosures = Vec::new();
    let mut searches = Vec::new();
    // Oldest first reads as a history.
    for s in entries.iter().rev() {
        let e = &s.entry;
        let org = OrgRef::of(registry, &e.actor_org, &e.actor_org_type);
        let shown: Vec<_> =
            e.notices.iter().filter(|n| n.view.is_some() && about.covers(&e.actor_org, &n.id)).collect();
        for n in &shown {
            disclosures.push(json!({
                "at": e.at, "audit_id": e.id, "notice_id": n.id, "notice_version": n.version,
                "organisation": org, "role": e.actor_role, "user": e.actor_user,
                "purpose": e.purpose, "purpose_title": purpose_title(&e.purpose),
                "lawful_basis": n.lawful_basis, "clauses": n.clauses, "view": n.view, "restricted": n.restricted,
                "break_glass": e.break_glass, "context_reference": e.context_ref, "agreement_version": e.agreement_version,
            }));
        }
        if shown.is_empty() && matches!(e.action.as_str(), "lookup" | "read") {
            searches.push(json!({
                "at": e.at, "audit_id": e.id, "organisation": org,
                "role": e.actor_role, "purpose": e.purpose, "decision": e.decision,
            }));
        }
    }
    (disclosures, searches)
}

impl App {
    /// The subject access report for `q`'s subject (required), audited as
    /// `subject-access-report` for the purpose `subject-access`.
    pub async fn subject_access_report(
        &self,
        caller: &Caller,
        who: Reviewer,
        q: AuditQuery,
    ) -> AppResult<SubjectAccessReport> {
        let subject =
            q.subject.clone().ok_or_else(|| AppError::invalid("/subject", "required", "`subject` is required"))?;
        let caller = caller.clone();
        self.blocking(move |app| {
            let (blind, refs) = subject_keys(app, &subject);
            // Outside the ICB, an organisation reports on its own notices and its own disclosures.
            let scope = crate::access::audit_scope(&caller.principal);
            let store_q = StoreQuery {
                from: q.input.from,
                to: q.input.to,
                subject: Some(SubjectKeys { refs, blind: blind.clone() }),
                visible_to: scope.clone(),
                ..Default::default()
            };
            let audit = AuditEntry {
                purpose: Some("subject-access".into()),
                ..ig_audit(app, &caller, &who, AuditAction::SubjectAccessReport, Some(&q))
            };
            let (mut notices, entries) = gather(app, &blind, &store_q)?;
            let all: BTreeSet<String> = notices.iter().map(|n| n.id.to_string()).collect();
            if let Some(org) = &scope {
                notices.retain(|n| &n.publisher_ods == org);
            }
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            let about = About {
                notices: notices.iter().map(|n| n.id.to_string()).collect(),
                own_staff: scope.clone().map(|org| (org, all)),
            };
            let (disclosures, searches) = disclosure_rows(app, &entries, &about);
            let registry = app.tokens.registry();
            let recipients: BTreeSet<String> = entries
                .iter()
                .filter(|s| s.entry.notices.iter().any(|n| n.view.is_some() && about.covers(&s.entry.actor_org, &n.id)))
                .map(|s| s.entry.actor_org.clone())
                .collect();
            let name = |ods: &str| registry.partner(ods).map(|p| p.name.clone());
            Ok(SubjectAccessReport {
                generated_at: app.clock.now(),
                reference: q.input.reference.clone(),
                from: q.input.from,
                to: q.input.to,
                agreement_version: app.agreement.version.clone(),
                truncated: entries.len() >= MAX_REPORT_ENTRIES,
                notices: notices
                    .iter()
                    .map(|n| json!({"notice_id": n.id, "publisher": {"ods_code": n.publisher_ods, "name": name(&n.publisher_ods)},
                                   "status": n.status, "category": n.content.category, "published_at": n.created_at}))
                    .collect(),
                recipients: recipients.iter().map(|o| json!({"ods_code": o, "name": name(o)})).collect(),
                disclosures,
                searches,
            })
        })
        .await
    }
}
