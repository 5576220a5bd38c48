//! The notice lifecycle: publish, read, amend, withdraw, review, versions. Only the publishing
//! organisation changes a notice, and every change makes a new version. Reads by other
//! organisations go through the disclosure service and are audited.

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;
use vpr_domain::{FieldError, NoticeRules};
use vpr_store::{Change, NewNotice, Published, StoredNotice};

use crate::access::require_scope;
use crate::audit::record_refusal;
use crate::caller::{Access, Caller};
use crate::disclose::{govern, DisclosedNotice, Read};
use crate::error::{AppError, AppResult};
use crate::App;

/// A notice read: its publisher sees the stored notice; anyone else its decided view.
#[derive(Debug)]
pub enum NoticeRead {
    /// The caller published it.
    Own(Box<StoredNotice>),
    /// Another organisation's, decided and audited, with the version and time it was read at.
    Disclosed(Box<DisclosedNotice>, i64, chrono::DateTime<chrono::Utc>),
}

/// A validated change to a notice.
pub type Validate = Box<dyn FnOnce(NoticeRules, &Value) -> Result<Change, Vec<FieldError>> + Send>;

fn no_notice() -> AppError {
    AppError::NotFound("no notice has this id".into())
}

impl App {
    /// The rules notices are validated by today.
    pub fn notice_rules(&self) -> NoticeRules {
        NoticeRules {
            today: self.clock.now().date_naive(),
            max_review_interval_days: self.notices.max_review_interval_days,
        }
    }

    /// Publishes a notice for the caller's organisation; a retry with the same idempotency key
    /// returns the first result.
    pub async fn publish(&self, caller: &Caller, body: Value, key: Option<String>) -> AppResult<Published> {
        let content = self.notice_rules().notice(&body).map_err(AppError::Validation)?;
        let hash = format!("{:x}", Sha256::digest(body.to_string().as_bytes()));
        let new = NewNotice {
            publisher_ods: caller.org().to_owned(),
            by_system: caller.principal.client_id.clone(),
            content,
            idempotency: key.map(|k| (k, hash)),
        };
        let published = self.blocking(move |app| Ok(app.store.publish(&new, app.clock.now())?)).await?;
        if let Published::Created(n) = &published {
            self.outbox.changed();
            self.metrics.notice_changes.with_label_values(&[n.version.change.code()]).inc();
            tracing::info!(notice_id = %n.id, org = %caller.org(), "notice published");
        }
        Ok(published)
    }

    /// Reads a notice. Its publisher sees it whole; anyone else needs `notices:read` and the
    /// access it asserts (`access`, whose failure is refused and audited), and is decided.
    pub async fn read_notice(
        &self,
        caller: &Caller,
        id: Uuid,
        action: AuditAction,
        access: impl FnOnce() -> AppResult<Access> + Send + 'static,
    ) -> AppResult<NoticeRead> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let n = app.store.get(id)?.ok_or_else(no_notice)?;
            if caller.org() == n.publisher_ods {
                return Ok(NoticeRead::Own(Box::new(n)));
            }
            require_scope(&caller.principal, Scope::NoticesRead)?;
            let access = access().map_err(|refusal| record_refusal(app, &caller, action, refusal))?;
            let (version, at) = (n.version.version, n.version.at);
            let refs = app.store.blind_indexes_of(n.id)?.into_iter().map(|b| format!("notice-subject:{b}")).collect();
            let d = govern(app, &caller, &access, Read::new(action, &caller, refs, vec![(n, vec![])]))?;
            if let Some(why) = d.refused {
                return Err(AppError::Forbidden(why));
            }
            let shown = d.results.into_iter().next().ok_or_else(|| {
                AppError::Forbidden(
                    "the data-sharing agreement does not permit this read for this purpose and role".into(),
                )
            })?;
            Ok(NoticeRead::Disclosed(Box::new(shown), version, at))
        })
        .await
    }

    /// Every version of a notice, oldest first (publisher only).
    pub async fn notice_versions(&self, caller: &Caller, id: Uuid) -> AppResult<Vec<StoredNotice>> {
        let all = self.blocking(move |app| Ok(app.store.versions(id)?)).await?;
        if let Some(first) = all.first() {
            if first.publisher_ods != caller.org() {
                return Err(AppError::Forbidden(
                    "this notice belongs to another organisation: find notices about a subject with `POST /v1/lookups`"
                        .into(),
                ));
            }
        }
        Ok(all)
    }

    /// Changes a notice (amend, withdraw, review) for its publisher, from version `expected`
    /// when given.
    pub async fn change_notice(
        &self,
        caller: &Caller,
        id: Uuid,
        expected: Option<i64>,
        body: Value,
        validate: Validate,
    ) -> AppResult<StoredNotice> {
        let change = validate(self.notice_rules(), &body).map_err(AppError::Validation)?;
        let (org, system) = (caller.org().to_owned(), caller.principal.client_id.clone());
        let n = self
            .blocking(move |app| Ok(app.store.change(id, &org, &system, expected, change, app.clock.now())?))
            .await?;
        self.outbox.changed();
        self.metrics.notice_changes.with_label_values(&[n.version.change.code()]).inc();
        tracing::info!(notice_id = %n.id, version = n.version.version, change = %n.version.change, "notice changed");
        Ok(n)
    }
}

/// How far ahead the review list looks.
pub const REVIEW_WINDOW_DAYS: u64 = 30;

/// A publisher's notices needing attention.
#[derive(Debug, Clone)]
pub struct NoticesDue {
    /// Active notices due for review within [`REVIEW_WINDOW_DAYS`] (or overdue), soonest first.
    pub due: Vec<vpr_store::notices::NoticeHead>,
    /// Notices that expired unreviewed, most recent first.
    pub expired: Vec<vpr_store::notices::NoticeHead>,
    /// The last day the review list covers.
    pub due_by: chrono::NaiveDate,
}

impl App {
    /// The VPR lead's organisation's notices due for review in the next 30 days, and its
    /// expired ones (at most `limit` each), audited as `notices-due`. Only a VPR lead, which
    /// this caller may act as, is shown them; a refusal is audited.
    pub async fn notices_due(
        &self,
        caller: &Caller,
        who: crate::caller::Reviewer,
        limit: i64,
    ) -> AppResult<NoticesDue> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let lead = who.role == crate::services::statistics::VPR_LEAD
                && crate::access::may_act_as(app, &caller.principal, &who.role).is_ok();
            if !lead || who.user.trim().is_empty() {
                let refusal = AppError::Forbidden("the notices due for review are shown to VPR leads".into());
                crate::audit::record_refused_for(app, &caller, Some(&who), AuditAction::NoticesDue, refusal.status())?;
                return Err(refusal);
            }
            let today = app.clock.now().date_naive();
            let due_by = today.checked_add_days(chrono::Days::new(REVIEW_WINDOW_DAYS)).unwrap_or(today);
            let active = vpr_domain::vocab::NoticeStatus::Active;
            let due = app.store.publisher_notices(caller.org(), active, Some(due_by), limit)?;
            let expired =
                app.store.publisher_notices(caller.org(), vpr_domain::vocab::NoticeStatus::Expired, None, limit)?;
            let audit = vpr_store::audit::AuditEntry {
                actor_user: Some(who.user.clone()),
                actor_role: Some(who.role.clone()),
                purpose: Some(crate::audit::MANAGEMENT_PURPOSE.into()),
                context_ref: Some(format!("due_by={due_by};due={};expired={}", due.len(), expired.len())),
                decision: "permit".into(),
                ..crate::audit::caller_entry(app, &caller, AuditAction::NoticesDue, 200)
            };
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(NoticesDue { due, expired, due_by })
        })
        .await
    }
}
