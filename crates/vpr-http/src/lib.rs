//! The broker's HTTP interface: the request pipeline, handlers, problem+json errors, OpenAPI,
//! metrics and the background tasks that run beside the server.

pub mod delivery;
pub mod disclose;
pub mod error;
pub mod fhir;
pub mod handlers;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod pipeline;
pub mod server;
pub mod tasks;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vpr_auth::TokenService;
use vpr_store::Store;

pub use error::ApiError;
pub use server::run;

/// Where time comes from. Passed in, never read deep inside logic, so tests can move it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Settings for notices, handed in by the binary.
#[derive(Debug, Clone, Copy)]
pub struct NoticeSettings {
    /// The longest a notice may go before review (the agreement's maximum interval).
    pub max_review_interval_days: i64,
}

/// Everything a request handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Token issuance and verification (holds the registry and keys).
    pub tokens: TokenService,
    /// Notice settings.
    pub notices: NoticeSettings,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: metrics::Metrics,
    /// The data-sharing agreement: decides every read.
    pub agreement: Arc<vpr_policy::Agreement>,
    /// Benchmark only (demo mode): answer look-ups without decision or audit.
    pub ungoverned_reads: bool,
    /// Benchmark only (demo mode): decide look-ups but write no audit entry, to measure what
    /// the audit adds.
    pub unaudited_reads: bool,
    /// The OpenAPI document served at `/openapi.json`.
    pub openapi: Arc<serde_json::Value>,
    /// Subscription delivery settings.
    pub delivery: Arc<delivery::DeliverySettings>,
    /// Wakes this replica's fan-out and delivery tasks.
    pub outbox: delivery::Outbox,
}
