//! Prometheus metrics, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The broker's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route pattern and status.
    pub http_requests: IntCounterVec,
    /// Request latency by method and route pattern.
    pub http_duration: HistogramVec,
    /// Notice changes by kind (created, amended, reviewed, withdrawn, entered-in-error, expired).
    pub notice_changes: IntCounterVec,
    /// Token requests by outcome.
    pub token_requests: IntCounterVec,
    /// Subscription events created by fan-out.
    pub events_fanned_out: IntCounter,
    /// Webhook pushes by outcome (delivered, failed, dead-lettered).
    pub deliveries: IntCounterVec,
    /// From a notice change to its acknowledged delivery.
    pub delivery_latency: Histogram,
    /// Failed or panicked runs of a background task, by task.
    pub task_failures: IntCounterVec,
    /// Requests to peer brokers.
    pub federation: FederationMetrics,
}

/// Requests to peer brokers: by outcome, how long they took, and whose circuit is open.
#[derive(Clone, Debug)]
pub struct FederationMetrics {
    /// Relayed look-ups by peer and outcome (answered, refused, unavailable, timeout, invalid, skipped).
    pub requests: IntCounterVec,
    /// Their latency by peer.
    pub latency: HistogramVec,
    /// 1 while a peer's circuit is open (it is skipped), else 0.
    pub circuit_open: IntGaugeVec,
}

impl FederationMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("federation_requests_total", "Look-ups relayed to peer brokers, by peer and outcome"),
            &["peer", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("federation_request_duration_seconds", "Relayed look-up latency by peer")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            &["peer"],
        )?;
        let circuit_open = IntGaugeVec::new(
            Opts::new("federation_circuit_open", "1 while a peer broker is skipped after repeated failures"),
            &["peer"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(circuit_open.clone()))?;
        Ok(Self { requests, latency, circuit_open })
    }

    /// Records one relayed request.
    pub fn observe(&self, peer: &str, outcome: &str, took: std::time::Duration, circuit_open: bool) {
        self.requests.with_label_values(&[peer, outcome]).inc();
        if outcome != "skipped" {
            self.latency.with_label_values(&[peer]).observe(took.as_secs_f64());
        }
        self.circuit_open.with_label_values(&[peer]).set(i64::from(circuit_open));
    }
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("vpr".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method, route and status"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["method", "route"],
        )?;
        let notice_changes =
            IntCounterVec::new(Opts::new("notice_changes_total", "Notice versions written, by kind"), &["change"])?;
        let token_requests =
            IntCounterVec::new(Opts::new("token_requests_total", "Token requests by outcome"), &["outcome"])?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(notice_changes.clone()))?;
        let events_fanned_out = IntCounter::new("subscription_events_total", "Subscription events created by fan-out")?;
        let deliveries =
            IntCounterVec::new(Opts::new("webhook_deliveries_total", "Webhook pushes by outcome"), &["outcome"])?;
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new("delivery_latency_seconds", "From a notice change to its acknowledged delivery")
                .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0, 3600.0]),
        )?;
        registry.register(Box::new(token_requests.clone()))?;
        registry.register(Box::new(events_fanned_out.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(delivery_latency.clone()))?;
        let task_failures = IntCounterVec::new(
            Opts::new("background_task_failures_total", "Failed or panicked runs of a background task"),
            &["task"],
        )?;
        registry.register(Box::new(task_failures.clone()))?;
        let federation = FederationMetrics::register(&registry)?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            notice_changes,
            token_requests,
            events_fanned_out,
            deliveries,
            delivery_latency,
            task_failures,
            federation,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
