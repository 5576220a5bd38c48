//! Background work beside the server. Safe to run on several replicas at once: each step
//! moves a notice only from the version it read.

use std::time::Duration;

use crate::AppState;

/// Expires active notices whose review date has passed, every `every`.
pub async fn expire_notices(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = state.store.clone();
        let now = state.clock.now();
        let result = tokio::task::spawn_blocking(move || store.expire_due(now.date_naive(), now)).await;
        match result {
            Ok(Ok(expired)) => {
                for n in &expired {
                    state.metrics.notice_changes.with_label_values(&[n.version.change.code()]).inc();
                    tracing::info!(notice_id = %n.id, review_date = %n.content.review_date, "notice expired");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "expiry sweep failed; will retry"),
            Err(e) => tracing::error!(error = %e, "expiry sweep panicked"),
        }
    }
}
