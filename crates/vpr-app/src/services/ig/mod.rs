//! Information governance: the review API over the audit log (searches, exports, daily
//! summaries, the subject access report), the break-glass queue, and the publishers' access
//! logs. Every use is audited, refusals included.

mod report;

use std::collections::BTreeSet;

use chrono::NaiveDate;
use uuid::Uuid;
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::AuditQuery;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};
use vpr_store::review::{AuditQuery as StoreQuery, SubjectKeys, SummaryRow};

pub use report::{SubjectAccessReport, MAX_REPORT_ENTRIES};

use crate::access::{audit_scope, ig_only, scoped_entries};
use crate::audit::{caller_entry, record_refusal, record_refused_for, MANAGEMENT_PURPOSE};
use crate::caller::{Caller, Reviewer};
use crate::disclose::subject_keys;
use crate::error::{AppError, AppResult};
use crate::App;

/// What the audit records of an IG query: its reference, and the filters other than the subject
/// (whose blind references go in `subject_refs`).
fn described(q: &AuditQuery) -> String {
    let i = &q.input;
    let mut parts = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    };
    add("from", i.from.map(|t| t.to_rfc3339()));
    add("to", i.to.map(|t| t.to_rfc3339()));
    add("organisation", i.organisation.clone());
    add("user", i.user.clone());
    add("role", i.role.clone());
    add("purpose", i.purpose.clone());
    add("decision", i.decision.clone());
    add("action", i.action.clone());
    add("break_glass", i.break_glass.map(|b| b.to_string()));
    add("notice", i.notice.map(|n| n.to_string()));
    add("subject", q.subject.as_ref().map(|_| "given".to_owned()));
    let filters = parts.join(";");
    match &i.reference {
        Some(r) => format!("{r} | {filters}"),
        None => filters,
    }
}

/// The entry of an IG use of the audit, for `who`.
fn ig_audit(app: &App, caller: &Caller, who: &Reviewer, action: AuditAction, q: Option<&AuditQuery>) -> AuditEntry {
    let subject_refs = q.and_then(|q| q.subject.as_ref()).map(|s| subject_keys(app, s).1).unwrap_or_default();
    AuditEntry {
        actor_user: Some(who.user.clone()),
        actor_role: Some(who.role.clone()),
        purpose: Some(MANAGEMENT_PURPOSE.into()),
        context_ref: q.map(described),
        subject_refs,
        decision: "permit".into(),
        ..caller_entry(app, caller, action, 200)
    }
}

/// The store's form of validated filters: the subject becomes its blind references, and the
/// caller's organisation bounds what it sees ([`audit_scope`]).
fn store_query(app: &App, caller: &Caller, q: &AuditQuery) -> StoreQuery {
    let i = &q.input;
    StoreQuery {
        from: i.from,
        to: i.to,
        org: i.organisation.clone(),
        user: i.user.clone(),
        role: i.role.clone(),
        purpose: i.purpose.clone(),
        decision: i.decision.clone(),
        action: i.action.clone(),
        break_glass: i.break_glass,
        notice: i.notice,
        subject: q.subject.as_ref().map(|s| {
            let (blind, refs) = subject_keys(app, s);
            SubjectKeys { refs, blind }
        }),
        publisher: None,
        visible_to: audit_scope(&caller.principal),
    }
}

/// An export begun: its audit entry is committed; read it in chunks with [`App::audit_chunk`].
#[derive(Debug, Clone)]
pub struct AuditExport {
    /// The filters.
    pub query: StoreQuery,
    /// Start before this `seq`.
    pub before: Option<i64>,
    /// The organisation the reviewer sees for ([`audit_scope`]).
    pub scope: Option<String>,
}

/// Daily counts for one organisation and purpose.
#[derive(Debug, Clone, Default)]
pub struct SummaryDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The acting organisation.
    pub org: String,
    /// The purpose asserted.
    pub purpose: Option<String>,
    /// Counts by decision, plus `entries` and `break_glass`.
    pub counts: std::collections::BTreeMap<String, i64>,
}

impl App {
    /// The IG user and role a request acts for, checked: a named user in an IG role this system
    /// may act in. A refusal is audited as `action`.
    pub fn reviewer(&self, caller: &Caller, user: &str, role: &str, action: AuditAction) -> AppResult<Reviewer> {
        let checked = if user.trim().is_empty() {
            Err(AppError::Forbidden("the IG user must be named in `VPR-User-Id`".into()))
        } else {
            ig_only(self, &caller.principal, role, "the audit log")
        };
        let who = Reviewer { user: user.trim().to_owned(), role: role.to_owned() };
        match checked {
            Ok(()) => Ok(who),
            // The refusal names whom the request was for, as asserted.
            Err(refusal) => match record_refused_for(self, caller, Some(&who), action, refusal.status()) {
                Ok(()) => Err(refusal),
                Err(e) => Err(e),
            },
        }
    }

    /// [`App::reviewer`] from async code (the refusal's entry is written off the runtime).
    pub async fn check_reviewer(
        &self,
        caller: &Caller,
        user: String,
        role: String,
        action: AuditAction,
    ) -> AppResult<Reviewer> {
        let caller = caller.clone();
        self.blocking(move |app| app.reviewer(&caller, &user, &role, action)).await
    }

    /// A page of the audit log matching `q`, newest first, audited as `audit-search`.
    pub async fn search_audit(
        &self,
        caller: &Caller,
        who: Reviewer,
        q: AuditQuery,
    ) -> AppResult<Vec<StoredAuditEntry>> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let audit = ig_audit(app, &caller, &who, AuditAction::AuditSearch, Some(&q));
            let (before, limit) = (q.input.before, q.input.limit.unwrap_or(100));
            let mut entries = app.store.search_audit(&store_query(app, &caller, &q), before, limit)?;
            scoped_entries(app, audit_scope(&caller.principal).as_deref(), &mut entries)?;
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(entries)
        })
        .await
    }

    /// Begins an export of every entry matching `q`, audited as `audit-export` before any is read.
    pub async fn begin_export(&self, caller: &Caller, who: Reviewer, q: AuditQuery) -> AppResult<AuditExport> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let audit = ig_audit(app, &caller, &who, AuditAction::AuditExport, Some(&q));
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            let query = store_query(app, &caller, &q);
            Ok(AuditExport { scope: query.visible_to.clone(), query, before: q.input.before })
        })
        .await
    }

    /// The next chunk of an export, before `seq` `before` (on the blocking pool).
    pub fn audit_chunk(
        &self,
        export: &AuditExport,
        before: Option<i64>,
        limit: i64,
    ) -> AppResult<Vec<StoredAuditEntry>> {
        let mut entries = self.store.search_audit(&export.query, before, limit)?;
        scoped_entries(self, export.scope.as_deref(), &mut entries)?;
        Ok(entries)
    }

    /// Decisions per day, organisation and purpose over `from..=to`, audited as `audit-summary`.
    pub async fn audit_summary(
        &self,
        caller: &Caller,
        who: Reviewer,
        from: NaiveDate,
        to: NaiveDate,
    ) -> AppResult<Vec<SummaryDay>> {
        let caller = caller.clone();
        let rows = self
            .blocking(move |app| {
                let mut audit = ig_audit(app, &caller, &who, AuditAction::AuditSummary, None);
                audit.context_ref = Some(format!("from={from};to={to}"));
                let mut rows = app.store.audit_summary(from, to)?;
                if let Some(org) = audit_scope(&caller.principal) {
                    rows.retain(|r| r.actor_org == org);
                }
                app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
                Ok(rows)
            })
            .await?;
        Ok(summary_days(rows))
    }

    /// Emergency accesses with review `status` (`pending` or an outcome), newest first, audited
    /// as `break-glass-queue`.
    pub async fn break_glass_queue(
        &self,
        caller: &Caller,
        who: Reviewer,
        status: String,
    ) -> AppResult<Vec<StoredAuditEntry>> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let audit = AuditEntry {
                purpose: Some(MANAGEMENT_PURPOSE.into()),
                ..ig_audit(app, &caller, &who, AuditAction::BreakGlassQueue, None)
            };
            let scope = audit_scope(&caller.principal);
            let mut entries = app.store.break_glass_entries(&status, scope.as_deref(), 500)?;
            scoped_entries(app, scope.as_deref(), &mut entries)?;
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(entries)
        })
        .await
    }

    /// Records IG's outcome for one emergency access, with its entry.
    pub async fn review_break_glass(
        &self,
        caller: &Caller,
        id: Uuid,
        input: vpr_domain::validate::BreakGlassReviewInput,
    ) -> AppResult<()> {
        let caller = caller.clone();
        self.blocking(move |app| {
            ig_only(app, &caller.principal, &input.reviewer.role, "the break-glass queue")
                .map_err(|refusal| record_refusal(app, &caller, AuditAction::BreakGlassReview, refusal))?;
            let audit = AuditEntry {
                actor_user: Some(input.reviewer.user_id.clone()),
                actor_role: Some(input.reviewer.role.clone()),
                context_ref: Some(id.to_string()),
                decision: input.outcome.clone(),
                justification: Some(input.note.clone()),
                ..caller_entry(app, &caller, AuditAction::BreakGlassReview, 200)
            };
            // Outside the ICB, an organisation reviews its own staff's emergency accesses only
            // (the refusal audited, the answer as for an unknown id).
            if let Some(org) = audit_scope(&caller.principal) {
                let theirs = app.store.audit_entries_by_id(&[id])?;
                if !theirs.iter().any(|s| s.entry.actor_org == org) {
                    record_refused_for(app, &caller, None, AuditAction::BreakGlassReview, 403)?;
                    return Err(AppError::Conflict("no pending break-glass access has this id".into()));
                }
            }
            // The outcome and its entry commit together.
            app.store.audited(|tx| {
                if !tx.review_break_glass(id, &input.outcome)? {
                    return Err(AppError::Conflict("no pending break-glass access has this id".into()));
                }
                Ok(((), audit))
            })
        })
        .await
    }

    /// Who accessed a notice, for its publisher, newest first; audited as `access-log`, a
    /// refused attempt too.
    pub async fn notice_access_log(
        &self,
        caller: &Caller,
        who: Option<Reviewer>,
        id: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> AppResult<Vec<StoredAuditEntry>> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let notice = app.store.get(id)?.ok_or_else(|| AppError::NotFound("no notice has this id".into()))?;
            if notice.publisher_ods != caller.org() {
                let refusal = AppError::Forbidden("only the publishing organisation sees a notice's access log".into());
                record_refused_for(app, &caller, who.as_ref(), AuditAction::AccessLog, refusal.status())?;
                return Err(refusal);
            }
            let entries = app.store.notice_access_log(id, before, limit)?;
            // Reading who saw personal data is itself recorded, naming the person when one asked.
            let audit = AuditEntry {
                actor_user: who.as_ref().map(|w| w.user.clone()),
                actor_role: who.as_ref().map(|w| w.role.clone()),
                purpose: Some(MANAGEMENT_PURPOSE.into()),
                context_ref: Some(id.to_string()),
                decision: "permit".into(),
                ..caller_entry(app, &caller, AuditAction::AccessLog, 200)
            };
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(entries)
        })
        .await
    }

    /// Every decision on any of the caller's notices after leaf `after`, in the sealed log's
    /// order, with the ids of the caller's notices among them. A read that returns entries is
    /// audited (`access-log-feed`); an empty poll discloses nothing and is not.
    pub async fn access_log_feed(
        &self,
        caller: &Caller,
        after: Option<i64>,
        limit: i64,
    ) -> AppResult<(Vec<StoredAuditEntry>, BTreeSet<String>)> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let publisher = caller.org().to_owned();
            let q = StoreQuery { publisher: Some(publisher.clone()), ..Default::default() };
            let entries = app.store.sealed_audit_after(&q, after, limit)?;
            let ids: Vec<String> = entries.iter().flat_map(|s| s.entry.notices.iter().map(|n| n.id.clone())).collect();
            let mine: BTreeSet<String> = app.store.published_by(&publisher, &ids)?.into_iter().collect();
            if !entries.is_empty() {
                let audit = AuditEntry {
                    purpose: Some(MANAGEMENT_PURPOSE.into()),
                    context_ref: Some(format!("after={}", after.unwrap_or(-1))),
                    decision: "permit".into(),
                    ..caller_entry(app, &caller, AuditAction::AccessLogFeed, 200)
                };
                app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            }
            Ok((entries, mine))
        })
        .await
    }

    /// Audit entries for the FHIR `AuditEvent` search, audited as `audit-event-export`.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        who: Reviewer,
        q: StoreQuery,
        described: String,
        before: Option<i64>,
        limit: i64,
    ) -> AppResult<Vec<StoredAuditEntry>> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let audit = AuditEntry {
                context_ref: Some(described),
                ..ig_audit(app, &caller, &who, AuditAction::AuditEventExport, None)
            };
            let entries = app.store.search_audit(&q, before, limit)?;
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(entries)
        })
        .await
    }
}

/// One row per (day, organisation, purpose), decisions as counts.
fn summary_days(rows: Vec<SummaryRow>) -> Vec<SummaryDay> {
    let mut grouped: std::collections::BTreeMap<(String, String, Option<String>), SummaryDay> = Default::default();
    for r in rows {
        let key = (r.day.clone(), r.actor_org.clone(), r.purpose.clone());
        let day = grouped.entry(key).or_insert_with(|| SummaryDay {
            day: r.day,
            org: r.actor_org,
            purpose: r.purpose,
            ..Default::default()
        });
        *day.counts.entry(r.decision).or_default() += r.entries;
        *day.counts.entry("break_glass".into()).or_default() += r.break_glass;
        *day.counts.entry("entries".into()).or_default() += r.entries;
    }
    grouped.into_values().collect()
}
