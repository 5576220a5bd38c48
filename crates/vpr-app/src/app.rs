//! The application: everything a service, worker or edge needs, handed in by the binary.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use vpr_auth::TokenService;
use vpr_store::Store;

use crate::delivery::{DeliverySettings, Outbox};
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;

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

/// Settings for notices.
#[derive(Debug, Clone, Copy)]
pub struct NoticeSettings {
    /// The longest a notice may go before review (the agreement's maximum interval).
    pub max_review_interval_days: i64,
}

/// Benchmark baselines, refused outside demo mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Benchmark {
    /// Answer look-ups without decision or audit.
    pub ungoverned_reads: bool,
    /// Decide look-ups but write no audit entry, to measure what the audit adds.
    pub unaudited_reads: bool,
}

/// The broker's application state: cheap to clone, shared by every edge and worker.
#[derive(Debug, Clone)]
pub struct App {
    /// The store.
    pub store: Store,
    /// Token issuance and verification (holds the registry and keys).
    pub tokens: TokenService,
    /// The data-sharing agreement: decides every read.
    pub agreement: Arc<vpr_policy::Agreement>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Notice settings.
    pub notices: NoticeSettings,
    /// Subscription delivery settings.
    pub delivery: Arc<DeliverySettings>,
    /// Benchmark baselines (demo mode only).
    pub benchmark: Benchmark,
    /// Wakes this replica's fan-out and delivery workers.
    pub outbox: Outbox,
    /// Metrics.
    pub metrics: Metrics,
    /// Federation with peer brokers (the peers themselves are in `tokens`).
    pub federation: crate::federation::Federation,
}

impl App {
    /// Runs synchronous store work off the async runtime, on the blocking pool.
    pub async fn blocking<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&App) -> AppResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let app = self.clone();
        tokio::task::spawn_blocking(move || f(&app))
            .await
            .map_err(|e| AppError::Internal(format!("blocking task failed: {e}")))?
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
