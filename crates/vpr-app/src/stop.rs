//! The signal that tells workers to stop.

use tokio::sync::watch;

/// Tells workers to stop.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop signal read from `rx`.
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Self(rx)
    }

    /// Resolves once the workers are told to stop.
    pub async fn stopped(&mut self) {
        // An error means the sender is gone: stop as well.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}
