//! The fan-out worker: committed notice changes (and sealed disclosures) become subscription
//! events, on a wake-up from this replica's edges or at the poll interval for changes other
//! replicas committed.

use crate::error::AppResult;
use crate::stop::Stop;
use crate::App;

/// One pass: fans out until no change is left, then the disclosures the sealed log holds.
fn fan_out_once(app: &App) -> AppResult<usize> {
    let mut total = 0;
    loop {
        let done = app.store.fan_out(500, app.clock.now())?;
        total += done.deliveries;
        app.outbox.hint(done.subscriptions);
        if done.events == 0 {
            break;
        }
    }
    // Disclosures follow the sealed log (sealed about every second).
    total += app.store.fan_out_disclosures(2000, app.clock.now())?;
    Ok(total)
}

/// Fans out until told to stop. A failed pass is logged and counted, and retried at the next
/// wake-up.
pub async fn fan_out(app: App, mut stop: Stop) {
    let poll = app.delivery.poll;
    loop {
        tokio::select! {
            () = app.outbox.fan_out.notified() => {}
            () = tokio::time::sleep(poll) => {}
            () = stop.stopped() => return,
        }
        match app.blocking(fan_out_once).await {
            Ok(0) => {}
            Ok(n) => {
                app.metrics.events_fanned_out.inc_by(u64::try_from(n).unwrap_or_default());
                app.outbox.due();
            }
            Err(e) => {
                app.metrics.task_failures.with_label_values(&["fan-out"]).inc();
                tracing::warn!(error = %e, "fan-out failed; will retry");
            }
        }
    }
}
