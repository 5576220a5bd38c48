//! The background work beside the edges: the periodic jobs (notice expiry, audit sealing and
//! retention, subscription expiry) through one loop helper, and the delivery workers, all held
//! in [`Workers`] so the binary sees a worker that ends or panics and stops them all on
//! shutdown. Safe on several replicas: each job moves a row only from the state it read, and
//! sealing takes a lock.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

pub use crate::stop::Stop;

use crate::error::AppResult;
use crate::App;

/// Runs `job` on the blocking pool every `every` until told to stop, handing each result to
/// `done`. A failed or panicked run is logged and counted in
/// `vpr_background_task_failures_total{task}`, and the job runs again at the next tick.
pub async fn periodic<T, J, D>(app: App, task: &'static str, every: Duration, mut stop: Stop, job: J, done: D)
where
    T: Send + 'static,
    J: Fn(&App) -> AppResult<T> + Clone + Send + 'static,
    D: Fn(&App, T),
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.stopped() => return,
        }
        let run = job.clone();
        match app.blocking(move |app| run(app)).await {
            Ok(v) => done(&app, v),
            Err(e) => {
                app.metrics.task_failures.with_label_values(&[task]).inc();
                tracing::warn!(task, error = %e, "background task failed; will retry");
            }
        }
    }
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    set: JoinSet<&'static str>,
    stop: watch::Sender<bool>,
}

impl Default for Workers {
    fn default() -> Self {
        Self { set: JoinSet::new(), stop: watch::channel(false).0 }
    }
}

impl Workers {
    /// The signal a worker stops on.
    pub fn stop_signal(&self) -> Stop {
        Stop::new(self.stop.subscribe())
    }

    /// Runs a worker on the current runtime.
    pub fn spawn(&mut self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(async move {
            work.await;
            name
        });
    }

    /// Runs a worker on another runtime (delivery has its own, so slow receivers never hold up
    /// the edges).
    pub fn spawn_on(
        &mut self,
        name: &'static str,
        work: impl Future<Output = ()> + Send + 'static,
        runtime: &tokio::runtime::Handle,
    ) {
        self.set.spawn_on(
            async move {
                work.await;
                name
            },
            runtime,
        );
    }

    /// Resolves when a worker ends before being told to stop (a bug: workers run until
    /// shutdown), with what happened to it.
    pub async fn ended(&mut self) -> String {
        match self.set.join_next().await {
            Some(Ok(name)) => format!("the `{name}` worker ended"),
            Some(Err(e)) if e.is_panic() => format!("a worker panicked: {e}"),
            Some(Err(e)) => format!("a worker was cancelled: {e}"),
            None => std::future::pending().await,
        }
    }

    /// Tells every worker to stop and waits up to `grace` for them; returns what went wrong
    /// (a panic, or a worker still running after `grace`, which is then aborted).
    pub async fn stop(mut self, grace: Duration) -> Vec<String> {
        let _ = self.stop.send(true);
        let mut problems = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) if e.is_panic() => problems.push(format!("a worker panicked: {e}")),
                Ok(Some(Err(_))) => {}
                Err(_) => {
                    problems.push(format!("{} workers were still running after {grace:?}", self.set.len()));
                    self.set.abort_all();
                    break;
                }
            }
        }
        problems
    }
}

/// How often the periodic jobs run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Notice expiry.
    pub expire_notices: Duration,
    /// Audit sealing.
    pub seal_audit: Duration,
    /// Audit retention.
    pub retain_audit: Duration,
    /// Subscription expiry.
    pub expire_subscriptions: Duration,
}

/// Starts every worker: the periodic jobs on this runtime, fan-out and delivery on `delivery`.
pub fn start(app: &App, schedule: Schedule, client: reqwest::Client, delivery: &tokio::runtime::Handle) -> Workers {
    let mut w = Workers::default();
    let a = app.clone();
    w.spawn("expire-notices", jobs::expire_notices(a, schedule.expire_notices, w.stop_signal()));
    w.spawn("seal-audit", jobs::seal_audit(app.clone(), schedule.seal_audit, w.stop_signal()));
    w.spawn("retain-audit", jobs::retain_audit(app.clone(), schedule.retain_audit, w.stop_signal()));
    w.spawn(
        "expire-subscriptions",
        jobs::expire_subscriptions(app.clone(), schedule.expire_subscriptions, w.stop_signal()),
    );
    w.spawn("peer-keys", crate::federation::keys::refresh_peer_keys(app.clone(), w.stop_signal()));
    w.spawn_on("fan-out", crate::delivery::fan_out(app.clone(), w.stop_signal()), delivery);
    w.spawn_on("deliver", crate::delivery::deliver(app.clone(), client, w.stop_signal()), delivery);
    w
}

mod jobs;
