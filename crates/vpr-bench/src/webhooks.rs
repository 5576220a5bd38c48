//! `webhooks`: signed webhook deliveries through a real broker to a real HTTP receiver on
//! loopback. Two measurements, on each backend:
//!
//! - fan-out: one notice to N subscribers (default 1,000): deliveries per second, from the
//!   publish request to the last acknowledged push;
//! - latency: notices published at a steady rate (default 50 per second) to a few subscribers,
//!   from each publish's scheduled time (open loop, so a stall is not hidden) to its arrival at
//!   the receiver: p50 and p99.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{percentile, start_broker, token, Broker};

#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    #[command(flatten)]
    brokers: crate::Brokers,
    /// Subscribers one notice is fanned out to.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Notices fanned out, one after the other (each to every subscriber).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Publishes per second in the latency phase.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Subscribers in the latency phase.
    #[arg(long, default_value_t = 10)]
    latency_subscribers: usize,
    /// The broker's `delivery.concurrency`.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
}

/// One push that arrived: which subscriber (by URL path), its event number, when.
type Arrival = (usize, i64, Instant);
/// What the receiver's handler shares: the arrivals and their count.
type Shared = (Arc<Mutex<Vec<Arrival>>>, Arc<AtomicUsize>);

struct Receiver {
    url: String,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    count: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Shared>) -> HttpResponse {
    let at = Instant::now();
    let sub = req.match_info().get("n").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX);
    let number =
        req.headers().get("vpr-event-number").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(-1);
    // A real receiver would verify the signature; the body is at least read whole.
    if !body.is_empty() {
        if let Ok(mut a) = state.0.lock() {
            a.push((sub, number, at));
        }
        state.1.fetch_add(1, Ordering::SeqCst);
    }
    HttpResponse::Accepted().finish()
}

impl Receiver {
    fn start() -> Result<Self> {
        let port = crate::free_port()?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let data = web::Data::new((arrivals.clone(), count.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = match HttpServer::new(move || {
                    App::new().app_data(data.clone()).route("/hook/{n}", web::post().to(receive))
                })
                .workers(2)
                .backlog(4096)
                .max_connections(100_000)
                .bind(("127.0.0.1", port))
                {
                    Ok(s) => s.run(),
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(server.handle()));
                let _ = server.await;
            });
        });
        let handle = rx.recv_timeout(Duration::from_secs(10))?.map_err(anyhow::Error::msg)?;
        Ok(Self { url: format!("http://127.0.0.1:{port}/hook"), arrivals, count, handle })
    }

    fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(stop);
        }
    }
}

fn subscribe(http: &reqwest::blocking::Client, b: &Broker, token: &str, url: &str) -> Result<()> {
    let body = json!({
        "purpose": "staff-safety", "role": "ambulance-dispatcher", "criteria": {"postcodes": ["LS"]},
        "payload": "view", "delivery": {"method": "webhook", "url": url},
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
    });
    let r = http.post(format!("{}/v1/subscriptions", b.base)).bearer_auth(token).json(&body).send()?;
    if r.status() != 201 {
        bail!("subscribe failed: {}", r.text()?);
    }
    Ok(())
}

fn notice(n: usize) -> serde_json::Value {
    let today = chrono::Utc::now().date_naive();
    json!({
        "subject": {"address": {"postcode": format!("LS{} 1AA", n % 9 + 1), "line1": format!("{n} Bench Street")}},
        "category": "threat-with-weapon", "risk_level": "high", "safety_advice": ["attend-with-police"],
        "incident_date": (today - chrono::Duration::days(1)).to_string(),
        "review_date": (today + chrono::Duration::days(90)).to_string(),
        "subject_informed": {"withheld_because": "risk to staff"}, "lawful_basis": ["UKGDPR-6-1-c", "UKGDPR-9-2-h"]
    })
}

fn publish(http: &reqwest::blocking::Client, b: &Broker, token: &str, n: usize) -> Result<()> {
    let r = http.post(format!("{}/v1/notices", b.base)).bearer_auth(token).json(&notice(n)).send()?;
    if r.status() != 201 {
        bail!("publish failed: {}", r.text()?);
    }
    Ok(())
}

fn broker(args: &WebhookArgs, backend: &str) -> Result<Broker> {
    let extra = format!("[delivery]\nconcurrency = {}\n", args.concurrency);
    start_broker(&args.brokers.broker, &args.brokers.agreement, backend, "governed", &extra)
}

pub fn run(args: WebhookArgs) -> Result<()> {
    println!(
        "webhooks through real brokers (signed ES256 JWS per push, each push decided and durably audited), delivery concurrency {}",
        args.concurrency
    );
    for backend in &args.brokers.backends {
        // Fan-out: one notice to every subscriber.
        let b = broker(&args, backend)?;
        let t = token(&b)?;
        let receiver = Receiver::start()?;
        let http = reqwest::blocking::Client::new();
        for i in 0..args.subscribers {
            subscribe(&http, &b, &t, &format!("{}/{i}", receiver.url))?;
        }
        let mut rates = Vec::new();
        for round in 0..args.rounds {
            let before = receiver.count.load(Ordering::SeqCst);
            let started = Instant::now();
            publish(&http, &b, &t, round)?;
            if !receiver.wait_for(before + args.subscribers, Duration::from_secs(300)) {
                bail!("{backend}: the fan-out did not complete");
            }
            let elapsed = started.elapsed().as_secs_f64();
            let first = receiver
                .arrivals
                .lock()
                .ok()
                .and_then(|a| a.get(before).map(|(_, _, at)| at.duration_since(started).as_secs_f64() * 1000.0))
                .unwrap_or(f64::NAN);
            rates.push(args.subscribers as f64 / elapsed);
            println!(
                "{backend:<9} fan-out round {}: {} deliveries in {:.2} s = {:.0} deliveries/s (first after {:.1} ms)",
                round + 1,
                args.subscribers,
                elapsed,
                args.subscribers as f64 / elapsed,
                first
            );
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        let median = percentile(&rates, 0.5);
        println!(
            "{backend:<9} fan-out to {} subscribers: median {:.0} deliveries/s (target >= 1000: {})",
            args.subscribers,
            median,
            if median >= 1000.0 { "met" } else { "MISSED" }
        );
        drop(receiver);
        drop(b);

        // Latency at a steady publish rate.
        let b = broker(&args, backend)?;
        let t = token(&b)?;
        let receiver = Receiver::start()?;
        for i in 0..args.latency_subscribers {
            subscribe(&http, &b, &t, &format!("{}/{i}", receiver.url))?;
        }
        let total = usize::try_from(args.rate * args.seconds).context("too many publishes")?;
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        let mut scheduled = Vec::with_capacity(total);
        let started = Instant::now();
        let mut late_publishes = 0;
        for n in 0..total {
            let at = started + interval * u32::try_from(n).unwrap_or(u32::MAX);
            match at.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None => late_publishes += 1,
            }
            scheduled.push(at);
            publish(&http, &b, &t, n)?;
        }
        let achieved = total as f64 / started.elapsed().as_secs_f64();
        if !receiver.wait_for(total * args.latency_subscribers, Duration::from_secs(120)) {
            bail!("{backend}: not every publish was delivered");
        }
        let arrivals = receiver.arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        // One publisher, publishing in turn: each subscriber's event N is the N-th publish.
        let mut latencies: Vec<f64> = arrivals
            .iter()
            .filter_map(|(_, number, at)| {
                let publish_at = scheduled.get(usize::try_from(*number - 1).ok()?)?;
                Some(at.saturating_duration_since(*publish_at).as_secs_f64() * 1000.0)
            })
            .collect();
        // A timeline, by when the notice was published: a stall shows as a bump, a shortfall as a
        // climb.
        let mut windows: Vec<Vec<f64>> = vec![Vec::new(); usize::try_from(args.seconds.div_ceil(2)).unwrap_or(1)];
        for (_, number, at) in &arrivals {
            if let Some(publish_at) = usize::try_from(*number - 1).ok().and_then(|i| scheduled.get(i)) {
                let w = usize::try_from(publish_at.duration_since(started).as_secs() / 2).unwrap_or(0);
                if let Some(v) = windows.get_mut(w) {
                    v.push(at.saturating_duration_since(*publish_at).as_secs_f64() * 1000.0);
                }
            }
        }
        let timeline: Vec<String> = windows
            .iter_mut()
            .enumerate()
            .map(|(i, w)| {
                w.sort_by(|a, b| a.total_cmp(b));
                format!("{}s:{:.0}/{:.0}", i * 2, percentile(w, 0.5), percentile(w, 0.99))
            })
            .collect();
        println!("{backend:<9} latency timeline (p50/p99 ms by 2 s of publishing): {}", timeline.join(" "));
        latencies.sort_by(|a, b| a.total_cmp(b));
        let p99 = percentile(&latencies, 0.99);
        println!(
            "{backend:<9} latency: {} publishes at {:.1}/s to {} subscribers ({} deliveries; {} publishes started late): \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 250 ms: {})",
            total,
            achieved,
            args.latency_subscribers,
            latencies.len(),
            late_publishes,
            percentile(&latencies, 0.5),
            p99,
            latencies.last().copied().unwrap_or(f64::NAN),
            if p99 < 250.0 { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
