//! vpr-bench: benchmarks run against real broker processes, printing figures measured side by
//! side in one run. Not a test: it asserts nothing, it measures.
//!
//! `webhooks`: see [`webhooks`]. `federation`: see [`federation`]. `console`: see [`console`].
//!
//! `lookups`: governed look-ups (token check, policy decision, database, durable audit write)
//! against the same look-ups with decision and audit switched off, on SQLite and PostgreSQL:
//! closed-loop throughput, and latency at a fixed offered rate (open loop, measured from each
//! request's scheduled time so a stall is not hidden).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use josekit::jws::{JwsHeader, ES256};
use josekit::jwt::{self, JwtPayload};
use serde_json::{json, Value};
use vpr_auth::SigningKeyFile;

#[derive(Parser, Debug)]
enum Bench {
    /// Governed against ungoverned look-ups through real brokers.
    Lookups(Args),
    /// Audit log: durable appends per second, sealing per second, and `audit verify` time.
    Audit(AuditArgs),
    /// Webhook delivery: one notice fanned out to many subscribers, and publish-to-delivery
    /// latency at a steady publish rate.
    Webhooks(webhooks::WebhookArgs),
    /// Federated look-ups with 1, 2 and 4 peer brokers against local-only look-ups.
    Federation(federation::FederationArgs),
    /// The IG and VPR console's pages (signed in at a real OpenID Provider): response times
    /// with an almost empty audit log and with 100,000 entries, side by side.
    Console(console::ConsoleArgs),
}

mod console;
mod federation;
mod webhooks;

// Many small allocations are freed on other threads than made them (as in the broker), which glibc's
// allocator serialises on its arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Entries to write, seal and verify.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Writer threads appending entries.
    #[arg(long, default_value_t = 32)]
    threads: u64,
    /// Keep the logs in this folder (a SQLite file, the name of a PostgreSQL database, and the
    /// checkpoint key's JWKS for `vpr-broker audit verify`); a later run with the same folder
    /// only verifies them again, so a change to the verifier can be measured on the same log.
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// The brokers a benchmark runs: which binary, agreement and backends.
#[derive(clap::Args, Debug, Clone)]
struct Brokers {
    /// The broker binary (build it with --release).
    #[arg(long)]
    broker: PathBuf,
    /// The demo agreement.
    #[arg(long, default_value = "policies/agreement.json")]
    agreement: PathBuf,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
}

#[derive(clap::Args, Debug, Clone)]
struct Args {
    #[command(flatten)]
    brokers: Brokers,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Offered rate for the latency phase (look-ups per second).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Client threads.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Distinct subjects seeded (each with two notices).
    #[arg(long, default_value_t = 200)]
    subjects: u32,
    /// Also print, for the fixed-rate phase, the slowest look-up in each half second (to see
    /// whether a high p99 is one stall or many).
    #[arg(long)]
    timeline: bool,
}

struct Broker {
    child: Child,
    base: String,
    key: josekit::jwk::Jwk,
    _dir: tempfile::TempDir,
    _pg: Option<vpr_store::testdb::PgTestDb>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How a benchmark broker answers look-ups: `governed` (the real pipeline), `unaudited`
/// (decided but not audited: the audit's cost) or `ungoverned` (neither decided nor audited).
fn start(args: &Args, backend: &str, mode: &str) -> Result<Broker> {
    start_broker(&args.brokers.broker, &args.brokers.agreement, backend, mode, "")
}

/// Starts a broker in demo mode on `backend`, with `extra` TOML appended to its configuration.
fn start_broker(broker: &Path, agreement: &Path, backend: &str, mode: &str, extra: &str) -> Result<Broker> {
    let signing = SigningKeyFile::generate("bench-broker", false)?;
    let spec = Spec { mode, extra, signing: &signing, port: free_port()?, ods: "XAM01" };
    start_signed_broker(broker, agreement, backend, &spec)
}

/// One benchmark broker: how it answers look-ups, extra TOML, its signing key and port (known
/// before it starts, so peers can be told), and its partner's ODS code.
struct Spec<'a> {
    mode: &'a str,
    extra: &'a str,
    signing: &'a SigningKeyFile,
    port: u16,
    ods: &'a str,
}

/// [`start_broker`] as `spec` says.
fn start_signed_broker(broker: &Path, agreement: &Path, backend: &str, spec: &Spec<'_>) -> Result<Broker> {
    let (mode, extra, signing, port) = (spec.mode, spec.extra, spec.signing, spec.port);
    let (ungoverned, unaudited) = (mode == "ungoverned", mode == "unaudited");
    let dir = tempfile::tempdir()?;
    let (database_url, pg) = match backend {
        "sqlite" => (format!("sqlite://{}/bench.db", dir.path().display()), None),
        "postgres" => {
            let db = vpr_store::testdb::fresh_postgres().context("PostgreSQL is not reachable")?;
            (db.url.clone(), Some(db))
        }
        other => bail!("unknown backend `{other}`"),
    };
    let key = SigningKeyFile::generate("bench-cad-1", false)?;
    let public = vpr_auth::keys::public_jwk(&key.jwk)?;
    let registry = json!({"registry_version": 1, "ics": {"name": "Bench ICS"}, "partners": [{
        "ods_code": spec.ods, "name": "Bench ambulance trust", "type": "ambulance-trust", "contact": {"telephone": "0113 496 0999"},
        "systems": [{"client_id": "bench-cad", "name": "CAD", "scopes": ["notices:write", "notices:read", "lookups", "subscriptions"],
            "roles": ["ambulance-dispatcher"], "jwks": {"keys": [Value::Object(public.as_ref().clone())]}}]}]});
    std::fs::write(dir.path().join("registry.json"), registry.to_string())?;
    std::fs::write(dir.path().join("signing.jwk"), signing.to_json())?;
    std::fs::write(dir.path().join("data.json"), serde_json::to_string(&vpr_store::DataKeyFile::generate(false))?)?;
    let base = format!("http://127.0.0.1:{port}");
    let agreement = std::fs::canonicalize(agreement)?;
    std::fs::write(
        dir.path().join("broker.toml"),
        format!(
            "config_version = 1\ndemo = true\nbenchmark_ungoverned_reads = {ungoverned}\nbenchmark_unaudited_reads = {unaudited}\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n\
             database_url = \"{database_url}\"\ndatabase_pool_size = 16\nregistry = \"registry.json\"\nagreement = \"{}\"\n\
             [keys]\nsigning_keys = [\"signing.jwk\"]\ndata_keys = \"data.json\"\n[limits]\napi = {{ per_second = 100000, burst = 100000 }}\nig = {{ per_second = 100000, burst = 100000 }}\ntoken = {{ per_second = 100000, burst = 100000 }}\npublic = {{ per_second = 100000, burst = 100000 }}\n[tokens]\naccess_token_seconds = 3600\n{extra}",
            agreement.display()
        ),
    )?;
    let child = Command::new(broker)
        .args(["serve", "--config"])
        .arg(dir.path().join("broker.toml"))
        .env("VPR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", broker.display()))?;
    let mut broker = Broker { child, base, key: key.jwk, _dir: dir, _pg: pg };
    wait_ready(&mut broker)?;
    Ok(broker)
}

/// Waits until `b` answers `/readyz` (at most a minute), or fails if it exited.
fn wait_ready(b: &mut Broker) -> Result<()> {
    let http = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{}/readyz", b.base)).send().map(|r| r.status() != 200).unwrap_or(true) {
        if let Some(status) = b.child.try_wait()? {
            bail!("the broker exited with {status} during start-up");
        }
        if Instant::now() > deadline {
            bail!("broker not ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn token(b: &Broker) -> Result<String> {
    token_as(&b.base, "bench-cad", &b.key)
}

/// An access token for partner system `client_id` of the broker at `base`, signed with `key`.
fn token_as(base: &str, client_id: &str, key: &josekit::jwk::Jwk) -> Result<String> {
    let now = SystemTime::now();
    let mut p = JwtPayload::new();
    p.set_issuer(client_id);
    p.set_subject(client_id);
    p.set_audience(vec![format!("{base}/oauth2/token")]);
    p.set_expires_at(&(now + Duration::from_secs(60)));
    p.set_jwt_id(uuid::Uuid::new_v4().to_string());
    let assertion = jwt::encode_with_signer(&p, &JwsHeader::new(), &ES256.signer_from_jwk(key)?)?;
    let r: Value = reqwest::blocking::Client::new()
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ])
        .send()?
        .json()?;
    let token = r.get("access_token").and_then(Value::as_str);
    Ok(token.with_context(|| format!("no token for `{client_id}`: {r}"))?.to_owned())
}

fn nhs(seq: u32) -> String {
    (0..100u32)
        .find_map(|t| {
            let stem = format!("999{:06}", (seq * 7 + t) % 1_000_000);
            let sum: u32 = stem.bytes().zip((2..=10).rev()).map(|(d, w)| u32::from(d - b'0') * w).sum();
            let check = (11 - sum % 11) % 11;
            (check != 10).then(|| format!("{stem}{check}"))
        })
        .unwrap_or_default()
}

fn seed(b: &Broker, token: &str, subjects: u32) -> Result<()> {
    seed_from(b, token, 0, subjects)
}

/// Seeds subjects `first..first + subjects`, two notices each.
fn seed_from(b: &Broker, token: &str, first: u32, subjects: u32) -> Result<()> {
    let http = reqwest::blocking::Client::new();
    let today = chrono::Utc::now().date_naive();
    for s in first..first + subjects {
        for category in ["physical-assault", "directed-verbal-abuse"] {
            let body = json!({
                "subject": {"person": {"nhs_number": nhs(s)}}, "category": category, "risk_level": "high",
                "safety_advice": ["two-staff-minimum"], "incident_date": (today - chrono::Duration::days(3)).to_string(),
                "review_date": (today + chrono::Duration::days(90)).to_string(),
                "subject_informed": {"withheld_because": "risk to staff"}, "lawful_basis": ["UKGDPR-6-1-c", "UKGDPR-9-2-h"]
            });
            let r = http.post(format!("{}/v1/notices", b.base)).bearer_auth(token).json(&body).send()?;
            if r.status() != 201 {
                bail!("seed publish failed: {}", r.text()?);
            }
        }
    }
    Ok(())
}

fn lookup_body(seq: u32) -> String {
    json!({"purpose": "staff-safety", "requester": {"user_id": "bench-dispatcher", "role": "ambulance-dispatcher"},
           "context": {"reference": "INC-1"}, "subject": {"person": {"nhs_number": nhs(seq)}}})
    .to_string()
}

/// A look-up asking no peer.
fn local_lookup_body(seq: u32) -> String {
    json!({"purpose": "staff-safety", "requester": {"user_id": "bench-dispatcher", "role": "ambulance-dispatcher"},
           "context": {"reference": "INC-1"}, "subject": {"person": {"nhs_number": nhs(seq)}}, "scope": "local"})
    .to_string()
}

struct Phase {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    /// The slowest request scheduled in each half second of the phase, in ms.
    worst_by_half_second: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or(f64::NAN)
}

/// `rate = None`: closed loop, as fast as the clients go. `Some(r)`: open loop at r per second.
fn run(args: &Args, b: &Broker, token: &str, rate: Option<u64>) -> Phase {
    run_bodies(args, b, token, rate, &lookup_body)
}

/// [`run`] with look-up bodies made by `body` from a subject's sequence number.
fn run_bodies(args: &Args, b: &Broker, token: &str, rate: Option<u64>, body: &(dyn Fn(u32) -> String + Sync)) -> Phase {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    // Clients are made before the clock starts: making one loads the TLS root store, which 16
    // threads doing at once on this machine takes about a second, and a partner system keeps
    // its client.
    let clients: Vec<reqwest::blocking::Client> = (0..args.clients).map(|_| reqwest::blocking::Client::new()).collect();
    let started = Instant::now();
    let duration = Duration::from_secs(args.seconds);
    std::thread::scope(|s| {
        for (c, http) in clients.into_iter().enumerate() {
            let (latencies, errors, stop) = (latencies.clone(), errors.clone(), stop.clone());
            let url = format!("{}/v1/lookups", b.base);
            s.spawn(move || {
                let mut mine = Vec::new();
                let interval = rate.map(|r| Duration::from_secs_f64(args.clients as f64 / r as f64));
                let offset = interval.map(|i| i.mul_f64(c as f64 / args.clients as f64)).unwrap_or_default();
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) && started.elapsed() < duration {
                    let scheduled = match interval {
                        Some(i) => {
                            let at = started + offset + i * n;
                            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            at
                        }
                        None => Instant::now(),
                    };
                    let seq = (n * args.clients as u32 + c as u32) % args.subjects;
                    let ok = http
                        .post(&url)
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body(seq))
                        .send()
                        .map(|r| r.status() == 200 && r.bytes().is_ok())
                        .unwrap_or(false);
                    if ok {
                        let at = scheduled.duration_since(started).as_secs_f64();
                        mine.push((at, scheduled.elapsed().as_secs_f64() * 1000.0));
                    } else if let Ok(mut e) = errors.lock() {
                        *e += 1;
                    }
                    n += 1;
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(mine);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let timed: Vec<(f64, f64)> = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    let mut worst_by_half_second = vec![0.0f64; (args.seconds * 2) as usize + 1];
    for (at, ms) in &timed {
        if let Some(w) = worst_by_half_second.get_mut((at * 2.0) as usize) {
            *w = w.max(*ms);
        }
    }
    let mut l: Vec<f64> = timed.into_iter().map(|(_, ms)| ms).collect();
    l.sort_by(|a, b| a.total_cmp(b));
    let errors = errors.lock().map(|e| *e).unwrap_or_default();
    Phase {
        per_second: l.len() as f64 / elapsed,
        p50_ms: percentile(&l, 0.5),
        p99_ms: percentile(&l, 0.99),
        errors,
        worst_by_half_second,
    }
}

fn main() -> Result<()> {
    match Bench::parse() {
        Bench::Lookups(args) => lookups(args),
        Bench::Audit(args) => audit(args),
        Bench::Webhooks(args) => webhooks::run(args),
        Bench::Federation(args) => federation::run(args),
        Bench::Console(args) => console::run(args),
    }
}

fn audit(args: AuditArgs) -> Result<()> {
    use vpr_store::audit::{AuditEntry, AuditedNotice};
    println!("audit log: {} entries, {} appending threads", args.entries, args.threads);
    println!("{:<9} {:>16} {:>16} {:>14}", "backend", "appends/s", "sealed/s", "verify s");
    let key = match &args.keep {
        Some(dir) if dir.join("seal-key.json").exists() => {
            SigningKeyFile::from_json(&std::fs::read_to_string(dir.join("seal-key.json"))?)?
        }
        _ => SigningKeyFile::generate("bench-seal", false)?,
    };
    let keys = vpr_auth::BrokerKeys::new(std::slice::from_ref(&key))?;
    let jwks = keys.jwks();
    if let Some(dir) = &args.keep {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("seal-key.json"), key.to_json())?;
        std::fs::write(dir.join("jwks.json"), jwks.to_string())?;
    }
    for backend in &args.backends {
        let dir = tempfile::tempdir()?;
        let mut pg = None;
        let kept = args.keep.as_ref().map(|k| k.join(format!("{backend}.url")));
        let reused = kept.as_ref().and_then(|k| std::fs::read_to_string(k).ok());
        let reusing = reused.is_some();
        let url = match (backend.as_str(), reused) {
            (_, Some(url)) => url,
            ("sqlite", None) => {
                let folder = args.keep.as_deref().unwrap_or(dir.path());
                format!("sqlite://{}/audit.db", std::fs::canonicalize(folder)?.display())
            }
            ("postgres", None) => {
                let db = vpr_store::testdb::fresh_postgres().context("PostgreSQL is not reachable")?;
                let url = db.url.clone();
                pg = Some(db);
                url
            }
            (other, None) => bail!("unknown backend `{other}`"),
        };
        if reusing {
            verify_only(backend, &url, &jwks, args.entries)?;
            continue;
        }
        let store = vpr_store::Store::open(&url, 40, vpr_store::Vault::new(&vpr_store::DataKeyFile::generate(false))?)?;
        store.migrate()?;
        let entry = |n: u64| AuditEntry {
            id: uuid::Uuid::new_v4(),
            at: chrono::Utc::now(),
            request_id: format!("req-{n}"),
            action: "lookup".into(),
            actor_org: "XAM01".into(),
            actor_org_type: "ambulance-trust".into(),
            actor_system: "bench-cad".into(),
            actor_user: Some("dispatcher-1".into()),
            actor_role: Some("ambulance-dispatcher".into()),
            purpose: Some("staff-safety".into()),
            context_ref: Some("INC-1".into()),
            break_glass: false,
            justification: None,
            subject_refs: vec![format!("nhs-number:{n:064x}")],
            decision: "permit".into(),
            notices: vec![AuditedNotice {
                id: uuid::Uuid::new_v4().to_string(),
                version: 1,
                decision: "permit".into(),
                view: Some("summary".into()),
                restricted: false,
                lawful_basis: vec!["UKGDPR-6-1-c".into(), "UKGDPR-9-2-h".into()],
                clauses: vec!["SS-1".into()],
            }],
            lawful_basis: vec!["UKGDPR-6-1-c".into(), "UKGDPR-9-2-h".into()],
            clauses: vec!["SS-1".into()],
            agreement_version: "bench".into(),
            outcome: 200,
            ig_review: None,
            federation: None,
            received_by: None,
            replay_guard: None,
        };
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..args.threads {
                let (store, entry) = (&store, &entry);
                let per = args.entries / args.threads + u64::from(t < args.entries % args.threads);
                s.spawn(move || {
                    for n in 0..per {
                        if let Err(e) = store.append_audit(&entry(t * 1_000_000_000 + n)) {
                            eprintln!("append failed: {e}");
                            return;
                        }
                    }
                });
            }
        });
        let appends = args.entries as f64 / started.elapsed().as_secs_f64();
        let sign = |size: i64, root: &[u8; 32], at: chrono::DateTime<chrono::Utc>| {
            keys.sign_checkpoint(size, &vpr_audit::hex(root), &at.to_rfc3339()).map_err(|e| e.to_string())
        };
        let started = Instant::now();
        let mut sealed = 0;
        while let Some(cp) = store.seal_pending(10_000, chrono::Utc::now(), &sign)? {
            sealed = cp.tree_size;
        }
        let sealing = sealed as f64 / started.elapsed().as_secs_f64();
        let verify = timed_verify(&url, &jwks, args.entries)?;
        println!("{backend:<9} {appends:>16.0} {sealing:>16.0} {verify:>14.2}");
        println!(
            "{backend:<9} targets: sealing >= 5000/s ({}), verify of {} entries {:.2} s (target < 10 s for 1,000,000)",
            if sealing >= 5000.0 { "met" } else { "MISSED" },
            args.entries,
            verify
        );
        drop(store);
        if let Some(kept) = &kept {
            // Kept for later runs: the database outlives this one.
            std::mem::forget(pg.take());
            std::fs::write(kept, &url)?;
        }
    }
    Ok(())
}

/// Verifies the log at `url` as `vpr-broker audit verify` does (one plain connection), and
/// returns the seconds it took.
fn timed_verify(url: &str, jwks: &Value, entries: u64) -> Result<f64> {
    let mut conn = vpr_store::verify::connect(url)?;
    let started = Instant::now();
    let report = vpr_store::verify::verify_audit(&mut conn, &|jws| {
        let (size, root) = vpr_auth::keys::open_checkpoint(jwks, jws)?;
        Ok((size, vpr_audit::parse_hash(&root).ok_or("bad root")?))
    })?;
    let verify = started.elapsed().as_secs_f64();
    if !report.problems.is_empty() || report.entries != entries {
        bail!("verification failed after {} entries: {:?}", report.entries, report.problems.first());
    }
    Ok(verify)
}

/// A kept log, verified again.
fn verify_only(backend: &str, url: &str, jwks: &Value, entries: u64) -> Result<()> {
    let verify = timed_verify(url, jwks, entries)?;
    println!("{backend:<9} {:>16} {:>16} {verify:>14.2}", "(kept)", "(kept)");
    Ok(())
}

fn lookups(args: Args) -> Result<()> {
    if !Path::new(&args.brokers.broker).exists() {
        bail!("no broker binary at {}", args.brokers.broker.display());
    }
    println!(
        "look-ups through the whole pipeline: {} client threads, {} s per phase, {} subjects x 2 notices",
        args.clients, args.seconds, args.subjects
    );
    println!(
        "{:<9} {:<11} {:>12} {:>9} {:>9} {:>8} | {:>9} {:>9} {:>9} {:>8}",
        "backend", "mode", "max req/s", "p50 ms", "p99 ms", "errors", "rate req/s", "p50 ms", "p99 ms", "errors"
    );
    for backend in &args.brokers.backends {
        let brokers = [
            start(&args, backend, "governed")?,
            start(&args, backend, "unaudited")?,
            start(&args, backend, "ungoverned")?,
        ];
        let tokens = brokers.iter().map(token).collect::<Result<Vec<_>>>()?;
        for (b, t) in brokers.iter().zip(&tokens) {
            seed(b, t, args.subjects)?;
        }
        // Warm all, then measure them in turn so drift on this noisy machine hits each.
        let warm = Args { seconds: 2, ..args.clone() };
        for (b, t) in brokers.iter().zip(&tokens) {
            run(&warm, b, t, None);
        }
        let max: Vec<Phase> = brokers.iter().zip(&tokens).map(|(b, t)| run(&args, b, t, None)).collect();
        let at_rate: Vec<Phase> = brokers.iter().zip(&tokens).map(|(b, t)| run(&args, b, t, Some(args.rate))).collect();
        for ((mode, max), at_rate) in ["governed", "unaudited", "ungoverned"].iter().zip(&max).zip(&at_rate) {
            println!(
                "{:<9} {:<11} {:>12.0} {:>9.2} {:>9.2} {:>8} | {:>9.0} {:>9.2} {:>9.2} {:>8}",
                backend,
                mode,
                max.per_second,
                max.p50_ms,
                max.p99_ms,
                max.errors,
                at_rate.per_second,
                at_rate.p50_ms,
                at_rate.p99_ms,
                at_rate.errors
            );
        }
        if args.timeline {
            for (mode, phase) in ["governed", "unaudited", "ungoverned"].iter().zip(&at_rate) {
                let worst: Vec<String> = phase.worst_by_half_second.iter().map(|w| format!("{w:.0}")).collect();
                println!("{backend:<9} {mode:<11} slowest ms per 0.5 s at {} req/s: {}", args.rate, worst.join(" "));
            }
        }
        let ([g, a, u], [gr, ar, _]) = (max.as_slice(), at_rate.as_slice()) else {
            bail!("three brokers were measured");
        };
        println!(
            "{:<9} governed/ungoverned throughput ratio: {:.2}  (target >= 0.50); governed p99 at {} req/s: {:.2} ms (target < 10 ms)",
            backend,
            g.per_second / u.per_second,
            args.rate,
            gr.p99_ms
        );
        println!(
            "{:<9} the audit adds {:+.2} ms at p50 and {:+.2} ms at p99 at {} req/s; governed/unaudited throughput ratio {:.2}",
            backend,
            gr.p50_ms - ar.p50_ms,
            gr.p99_ms - ar.p99_ms,
            args.rate,
            g.per_second / a.per_second
        );
    }
    Ok(())
}
