//! Consents and objections: IG records a subject's consent or objection for a purpose, with
//! evidence. The agreement decides what each changes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use vpr_domain::audit::AuditAction;
use vpr_store::audit::AuditEntry;
use vpr_store::directives::{DirectiveKind, DirectiveRecord, NewDirective};

use crate::access::is_ig_role;
use crate::audit::{caller_entry, record_refusal, MANAGEMENT_PURPOSE};
use crate::caller::{Caller, Reviewer};
use crate::disclose::subject_keys;
use crate::error::{AppError, AppResult};
use crate::App;

/// A recorded consent or objection, as its recorder is shown it.
#[derive(Debug, Serialize)]
pub struct DirectiveRecorded {
    /// Its id.
    pub id: Uuid,
    /// `consent` or `objection`.
    pub kind: &'static str,
    /// The purpose it is for.
    pub purpose: String,
    /// Its status (`given`, `withdrawn`, `upheld`, `overridden`).
    pub status: String,
    /// Where the evidence is kept.
    pub evidence_reference: String,
    /// When.
    pub recorded_at: DateTime<Utc>,
}

fn kind_code(kind: DirectiveKind) -> AuditAction {
    match kind {
        DirectiveKind::Consent => AuditAction::Consent,
        DirectiveKind::Objection => AuditAction::Objection,
    }
}

impl App {
    /// Records a consent or an objection (IG roles only). A refused attempt is audited; the
    /// record and its audit entry commit together.
    pub async fn record_directive(
        &self,
        caller: &Caller,
        kind: DirectiveKind,
        body: Value,
    ) -> AppResult<DirectiveRecorded> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let action = kind_code(kind);
            let now = app.clock.now();
            let valid = vpr_domain::validate::directive(&body, kind == DirectiveKind::Objection, now.date_naive())
                .map_err(AppError::Validation)?;
            let input = &valid.input;
            if !app.agreement.purposes.contains_key(&input.purpose) {
                return Err(AppError::invalid(
                    "/purpose",
                    "agreement-purpose",
                    format!("`{}` is not a purpose of the agreement", input.purpose),
                ));
            }
            let role = &input.requester.role;
            if !is_ig_role(app, &caller.principal, role) {
                let refusal = AppError::Forbidden(
                    "consents and objections are recorded by information governance roles only".into(),
                );
                return Err(record_refusal(app, &caller, action, refusal));
            }
            let (blind, subject_refs) = subject_keys(app, &valid.subject);
            let directive = NewDirective {
                kind,
                blind_indexes: blind,
                purpose: input.purpose.clone(),
                status: input.status.clone(),
                evidence_reference: input.evidence_reference.clone(),
                reason: input.reason.clone(),
                effective_from: input.effective_from.unwrap_or(now.date_naive()),
                expires_on: input.expires_on,
                recorded_by_org: caller.org().to_owned(),
                recorded_by_user: input.requester.user_id.clone(),
            };
            let audit = AuditEntry {
                actor_user: Some(input.requester.user_id.clone()),
                actor_role: Some(role.clone()),
                purpose: Some(input.purpose.clone()),
                context_ref: Some(input.evidence_reference.clone()),
                subject_refs,
                decision: input.status.clone(),
                ..caller_entry(app, &caller, action, 201)
            };
            // The record and its entry commit together.
            let id = app.store.audited(|tx| Ok::<_, AppError>((tx.record_directive(&directive, now)?, audit)))?;
            Ok(DirectiveRecorded {
                id,
                kind: action.code(),
                purpose: input.purpose.clone(),
                status: input.status.clone(),
                evidence_reference: input.evidence_reference.clone(),
                recorded_at: now,
            })
        })
        .await
    }
}

impl App {
    /// The newest consents and objections (at most `limit`), for an IG reviewer; with a
    /// subject, only that subject's. Audited as `directives-list` before they are returned.
    pub async fn list_directives(
        &self,
        caller: &Caller,
        who: Reviewer,
        subject: Option<vpr_domain::notice::Subject>,
        limit: i64,
    ) -> AppResult<Vec<DirectiveRecord>> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let keys = subject.as_ref().map(|s| subject_keys(app, s));
            // Outside the ICB, an organisation sees the consents and objections it recorded.
            let scope = crate::access::audit_scope(&caller.principal);
            let blind = keys.as_ref().map(|(blind, _)| blind.as_slice());
            let records = app.store.recent_directives(blind, scope.as_deref(), limit)?;
            let audit = AuditEntry {
                actor_user: Some(who.user.clone()),
                actor_role: Some(who.role.clone()),
                purpose: Some(MANAGEMENT_PURPOSE.into()),
                subject_refs: keys.map(|(_, refs)| refs).unwrap_or_default(),
                context_ref: Some(format!("listed={}", records.len())),
                decision: "permit".into(),
                ..caller_entry(app, &caller, AuditAction::DirectivesList, 200)
            };
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(records)
        })
        .await
    }
}
