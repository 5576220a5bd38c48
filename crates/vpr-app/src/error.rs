//! What a service can fail with, without HTTP: the edges map each kind to their own status and
//! body (problem+json, an `OperationOutcome`, a console page).

use vpr_domain::FieldError;
use vpr_store::StoreError;

/// Every failure a service reports.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input failed its schema, the domain rules or the agreement's vocabulary.
    #[error("the request failed validation")]
    Validation(Vec<FieldError>),
    /// The caller's token lacks a scope.
    #[error("this request needs the `{0}` scope")]
    InsufficientScope(&'static str),
    /// Authenticated but not allowed (the reason is safe to show).
    #[error("{0}")]
    Forbidden(String),
    /// A peer broker's relay is refused: `rule` is the rule it broke (`signature`, `audience`,
    /// `lifetime`, `expired`, `jti`, `replay`, `vouch`, `subject`, `claims`).
    #[error("the relayed requester is refused: {detail}")]
    RelayRefused {
        /// The rule broken.
        rule: &'static str,
        /// In words.
        detail: String,
    },
    /// Nothing has this id (the message names what was looked for).
    #[error("{0}")]
    NotFound(String),
    /// The resource's state does not allow the change.
    #[error("{0}")]
    Conflict(String),
    /// The version the caller changes is no longer current.
    #[error("the notice has changed: it is now at version {current}")]
    PreconditionFailed {
        /// The current version.
        current: i64,
    },
    /// An idempotency key was reused for a different request.
    #[error("this `Idempotency-Key` was already used with a different request body")]
    IdempotencyKeyReused,
    /// Nothing here has this id any more, nor will again (a subscription ended).
    #[error("{0}")]
    Gone(String),
    /// A peer broker, or the webhook an event is passed on to, failed (the reason is safe to
    /// show: it names no more than what the other end answered).
    #[error("{0}")]
    BadGateway(String),
    /// A dependency (the database, the audit log) is unavailable: retry later.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
    /// A bug or corrupt data. The cause is logged, never shown.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// The audit entry a request depends on could not be committed: the request fails and
    /// nothing it would have disclosed or changed takes effect.
    pub fn audit_write_failed(cause: impl std::fmt::Display) -> Self {
        AppError::Unavailable(format!("audit write failed: {cause}"))
    }

    /// One failing field.
    pub fn invalid(pointer: impl Into<String>, rule: &str, detail: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError::new(pointer, rule, detail)])
    }

    /// The status an edge answers with, as a number (the audit records it for refusals).
    pub fn status(&self) -> u16 {
        match self {
            AppError::Validation(_) | AppError::IdempotencyKeyReused => 422,
            AppError::InsufficientScope(_) | AppError::Forbidden(_) | AppError::RelayRefused { .. } => 403,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::Gone(_) => 410,
            AppError::BadGateway(_) => 502,
            AppError::PreconditionFailed { .. } => 412,
            AppError::Unavailable(_) => 503,
            AppError::Internal(_) => 500,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AppError::NotFound(what.to_string()),
            StoreError::NotPublisher => {
                AppError::Forbidden("only the publishing organisation may change this notice".into())
            }
            StoreError::VersionMismatch { current } => AppError::PreconditionFailed { current },
            e @ StoreError::NotChangeable { .. } => AppError::Conflict(e.to_string()),
            StoreError::IdempotencyConflict => AppError::IdempotencyKeyReused,
            e @ StoreError::SubscriptionClosed(_) => AppError::Conflict(e.to_string()),
            StoreError::AuditWrite(cause) => AppError::audit_write_failed(cause),
            // The database gone, restarting or out of disk mid-request: 503, not a 500.
            e if e.is_outage() => AppError::Unavailable(e.to_string()),
            StoreError::Replayed => {
                AppError::RelayRefused { rule: "replay", detail: "this relay was used before".into() }
            }
            e => AppError::Internal(e.to_string()),
        }
    }
}

/// A service result.
pub type AppResult<T> = Result<T, AppError>;
