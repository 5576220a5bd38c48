//! `console`: response times of the IG and VPR console's pages (server-rendered HTML under
//! `/console`), signed in as an IG lead and a VPR lead at a real OpenID Provider (the demo one,
//! examples/demo-oidc), against a real broker of the demo ICS. Each page is read N times in turn
//! (one browser, one request at a time) twice in one run: with an almost empty audit log, then
//! with the log filled to `--entries` (100,000) through the broker's own API as partner systems
//! fill it (notices, then look-ups from every kind of partner on client threads), sealed.
//! Target: p99 under 200 ms with 100,000 entries.
//!
//! Every page view that shows data is itself audited, so the log grows while it is measured;
//! each phase prints its size at the start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::blocking::Client;

use crate::{free_port, percentile, wait_ready, Broker};

mod oidc;
mod seed;

/// Options of the console benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// The broker binary, built with --release [default: $CARGO_TARGET_DIR/release/vpr-broker].
    #[arg(long)]
    broker: Option<PathBuf>,
    /// `sqlite` (embedded) or `postgres` (a fresh database, as the tests make).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Audit entries in the log for the second measurement.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Measured GETs per page (one after the other).
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Unmeasured GETs per page before them.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Notices published before anything is measured.
    #[arg(long, default_value_t = 300)]
    notices: u32,
    /// Client threads filling the log with look-ups.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// The p99 target at the large log, in ms.
    #[arg(long, default_value_t = 200.0)]
    target_ms: f64,
    /// The filters of the second audit search measured (a selective combination).
    #[arg(long, default_value = "purpose=direct-care&decision=permit")]
    filter: String,
    /// The demo agreement.
    #[arg(long, default_value = "policies/agreement.json")]
    agreement: PathBuf,
    /// The demo ICS (its registry and demo-only keys).
    #[arg(long, default_value = "examples/demo-ics")]
    demo_ics: PathBuf,
    /// The demo OpenID Provider (`npm ci` done in its folder).
    #[arg(long, default_value = "examples/demo-oidc/provider.mjs")]
    provider: PathBuf,
}

/// Who reads a page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// `ig-lead`, an IG lead at the ICB (XIC01).
    Ig,
    /// `vpr-lead`, a VPR lead at the ambulance trust (XAM01).
    Vpr,
}

/// Where a page is: a fixed path, or the first link on page `from` that starts with `prefix`
/// and ends with `suffix`.
enum Target {
    Fixed(String),
    Linked { from: String, prefix: &'static str, suffix: &'static str },
}

/// A page measured: its name, its path as printed (`{id}` for an id taken from a link), who
/// reads it and where it is.
struct Page {
    name: &'static str,
    shown: String,
    reader: Reader,
    target: Target,
}

fn pages(filter: &str) -> Vec<Page> {
    let fixed =
        |name, path: &str, reader| Page { name, shown: path.to_owned(), reader, target: Target::Fixed(path.into()) };
    let search = "/console/audit?organisation=XAM01";
    vec![
        fixed("home", "/console", Reader::Ig),
        fixed("audit search", search, Reader::Ig),
        fixed("audit search, filtered", &format!("/console/audit?{filter}"), Reader::Ig),
        Page {
            name: "audit entry",
            shown: "/console/audit/entries/{id}".into(),
            reader: Reader::Ig,
            target: Target::Linked { from: search.into(), prefix: "/console/audit/entries/", suffix: "" },
        },
        fixed("log integrity", "/console/integrity", Reader::Ig),
        fixed("figures", "/console/figures", Reader::Ig),
        fixed("break-glass queue", "/console/break-glass", Reader::Ig),
        fixed("consents, objections", "/console/consents", Reader::Ig),
        fixed("notices (VPR lead)", "/console/notices", Reader::Vpr),
        Page {
            name: "access log (VPR lead)",
            shown: "/console/notices/{id}/access-log".into(),
            reader: Reader::Vpr,
            target: Target::Linked {
                from: "/console/notices".into(),
                prefix: "/console/notices/",
                suffix: "/access-log",
            },
        },
    ]
}

/// Response times of one page, in ms.
#[derive(Clone, Copy)]
struct Stats {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

/// What measuring a page gave.
enum Outcome {
    Measured(Stats),
    /// Not in this broker (404, or no link to it): why.
    Skipped(String),
    /// Any other answer than 200: the status and the start of the body.
    Failed(String),
}

/// The first 300 characters of `text`, white space folded.
fn start_of(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect()
}

/// The broker of the demo ICS, its console signing in at `issuer`; and its log file.
fn start_broker(args: &ConsoleArgs, binary: &Path, port: u16, issuer: &str) -> Result<(Broker, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let (database_url, pg) = match args.backend.as_str() {
        "sqlite" => (format!("sqlite://{}/console.db", dir.path().display()), None),
        "postgres" => {
            let db = vpr_store::testdb::fresh_postgres().context("PostgreSQL is not reachable")?;
            (db.url.clone(), Some(db))
        }
        other => bail!("unknown backend `{other}`"),
    };
    let ics = std::fs::canonicalize(&args.demo_ics).context("the demo ICS folder")?;
    let agreement = std::fs::canonicalize(&args.agreement).context("the agreement")?;
    let base = format!("http://127.0.0.1:{port}");
    // The demo ICS's registry and demo-only keys (so demo mode), without its federation peer.
    let config = format!(
        "config_version = 1\ndemo = true\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"{base}\"\n\
         database_url = \"{database_url}\"\ndatabase_pool_size = 16\nregistry = \"{ics}/registry.json\"\nagreement = \"{agreement}\"\n\
         [keys]\nsigning_keys = [\"{ics}/keys/broker-signing.DEMO-ONLY.jwk\"]\ndata_keys = \"{ics}/keys/data-keys.DEMO-ONLY.json\"\n\
         [limits]\napi = {{ per_second = 100000, burst = 100000 }}\nig = {{ per_second = 100000, burst = 100000 }}\ntoken = {{ per_second = 100000, burst = 100000 }}\npublic = {{ per_second = 100000, burst = 100000 }}\n[tokens]\naccess_token_seconds = 3600\n\
         [console]\nissuer = \"{issuer}\"\nclient_id = \"vpr-console\"\nclient_secret = \"demo-only-console-secret-not-for-production\"\n",
        ics = ics.display(),
        agreement = agreement.display(),
    );
    std::fs::write(dir.path().join("broker.toml"), config)?;
    let log = dir.path().join("broker.log");
    let child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(dir.path().join("broker.toml"))
        .env("VPR_LOG", "warn")
        .env_remove("VPR_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    // Unused: this benchmark's partner systems have their demo keys ([`seed::Partners`]).
    let key = vpr_auth::SigningKeyFile::generate("unused", false)?.jwk;
    let mut broker = Broker { child, base, key, _dir: dir, _pg: pg };
    if let Err(e) = wait_ready(&mut broker) {
        bail!("{e:#}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    Ok((broker, log))
}

/// The first link on `html` whose target starts with `prefix` and ends with `suffix`.
fn first_link(html: &str, prefix: &str, suffix: &str) -> Option<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|h| h.replace("&#38;", "&").replace("&amp;", "&"))
        .find(|h| h.starts_with(prefix) && h.len() > prefix.len() + suffix.len() && h.ends_with(suffix))
}

/// A signed-in reader's browser: a client that follows no redirects, and its session cookie.
struct Session<'a> {
    http: &'a Client,
    base: &'a str,
    cookie: String,
}

impl Session<'_> {
    /// GET `path`: status, body, and the time to the last byte in ms.
    fn get(&self, path: &str) -> Result<(u16, String, f64)> {
        let started = Instant::now();
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("{}={}", oidc::SESSION, self.cookie))
            .send()?;
        let status = r.status().as_u16();
        let body = r.text()?;
        Ok((status, body, started.elapsed().as_secs_f64() * 1000.0))
    }

    /// The path of `target`, or why it cannot be measured.
    fn resolve(&self, target: &Target) -> Result<String, Outcome> {
        let (from, prefix, suffix) = match target {
            Target::Fixed(path) => return Ok(path.clone()),
            Target::Linked { from, prefix, suffix } => (from, prefix, suffix),
        };
        match self.get(from) {
            Ok((200, body, _)) => first_link(&body, prefix, suffix)
                .ok_or_else(|| Outcome::Skipped(format!("no link to `{prefix}…{suffix}` on {from}"))),
            Ok((404, _, _)) => Err(Outcome::Skipped(format!("{from} is not served"))),
            Ok((status, body, _)) => Err(Outcome::Failed(format!("{from} answered {status}: {}", start_of(&body)))),
            Err(e) => Err(Outcome::Failed(format!("{from}: {e:#}"))),
        }
    }

    /// `warmup` unmeasured GETs of `path`, then `requests` measured.
    fn measure(&self, path: &str, warmup: usize, requests: usize) -> Outcome {
        let mut times = Vec::with_capacity(requests);
        for i in 0..warmup + requests {
            match self.get(path) {
                Ok((200, _, ms)) if i >= warmup => times.push(ms),
                Ok((200, _, _)) => {}
                Ok((404, _, _)) if i == 0 => return Outcome::Skipped("404".into()),
                Ok((status, body, _)) => return Outcome::Failed(format!("{status}: {}", start_of(&body))),
                Err(e) => return Outcome::Failed(format!("{e:#}")),
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Outcome::Measured(Stats {
            p50: percentile(&times, 0.5),
            p95: percentile(&times, 0.95),
            p99: percentile(&times, 0.99),
            max: times.last().copied().unwrap_or(f64::NAN),
        })
    }
}

/// One measurement of every page: the log's size at its start, and each page's outcome.
struct Phase {
    size: u64,
    outcomes: Vec<Outcome>,
}

/// The running broker and provider, and how to reach them.
struct Rig {
    broker: Broker,
    log: PathBuf,
    op: oidc::Provider,
    http: Client,
    partners: seed::Partners,
}

impl Rig {
    /// Signs `user` in at the provider: a new session.
    fn session(&self, user: &str) -> Result<Session<'_>> {
        let base = &self.broker.base;
        let cookie = oidc::sign_in(&self.http, base, &self.op, user).with_context(|| format!("signing in `{user}`"))?;
        Ok(Session { http: &self.http, base, cookie })
    }
}

/// Signs both readers in afresh and measures every page, printing each as it is done.
fn measure_phase(rig: &Rig, args: &ConsoleArgs, label: &str) -> Result<Phase> {
    let size = seed::sealed_size(&rig.http, &rig.broker.base)?;
    println!(
        "\n{label}: {} audit entries, sealed; {} GETs per page after {} warm-up",
        thousands(size),
        args.requests,
        args.warmup
    );
    let (ig, vpr) = (rig.session("ig-lead")?, rig.session("vpr-lead")?);
    let mut outcomes = Vec::new();
    for page in pages(&args.filter) {
        let reader = if page.reader == Reader::Ig { &ig } else { &vpr };
        let outcome = match reader.resolve(&page.target) {
            Ok(path) => reader.measure(&path, args.warmup, args.requests),
            Err(why) => why,
        };
        println!("  {:<24} {:<52} {}", page.name, page.shown, describe(&outcome));
        outcomes.push(outcome);
    }
    Ok(Phase { size, outcomes })
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Measured(s) => format!("p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1} ms", s.p50, s.p95, s.p99, s.max),
        Outcome::Skipped(why) => format!("skipped (not served): {why}"),
        Outcome::Failed(why) => format!("FAILED: {why}"),
    }
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Starts the provider and the broker, publishes the notices and records the directives, and
/// makes a few look-ups so that every page has something to show.
fn set_up(args: &ConsoleArgs) -> Result<Rig> {
    let binary = match &args.broker {
        Some(b) => b.clone(),
        None => PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("release/vpr-broker"),
    };
    if !binary.exists() {
        bail!("no broker binary at {} (cargo build --release --bin vpr-broker)", binary.display());
    }
    let port = free_port()?;
    let op = oidc::Provider::start(&args.provider, free_port()?, &format!("http://127.0.0.1:{port}"))?;
    let (broker, log) = start_broker(args, &binary, port, &op.issuer)?;
    let http =
        Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(120)).build()?;
    let partners = seed::Partners::load(&broker.base, &args.demo_ics)?;
    println!(
        "console pages on {} ({}), {} CPUs; broker {}",
        args.backend,
        broker.base,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        binary.display()
    );
    let subjects = (args.notices * 2 / 3).max(1);
    seed::publish(&partners, args.notices, subjects)?;
    seed::directives(&partners, subjects)?;
    report_tally(&seed::lookups(&partners, 0, FIRST_LOOKUPS, args.threads, subjects)?)?;
    Ok(Rig { broker, log, op, http, partners })
}

/// Look-ups made before the first measurement: each kind of look-up of the mix twenty times.
const FIRST_LOOKUPS: u64 = 240;

fn report_tally(t: &seed::Tally) -> Result<()> {
    let statuses: Vec<String> = t.by_status.iter().map(|(s, n)| format!("{s}: {}", thousands(*n))).collect();
    println!("  look-ups answered {}", statuses.join(", "));
    let total: u64 = t.by_status.values().sum::<u64>() + t.failures;
    if let Some(why) = &t.first_failure {
        println!("  {} look-ups failed; the first: {why}", t.failures);
        if t.failures * 100 > total {
            bail!("more than 1% of the look-ups failed");
        }
    }
    Ok(())
}

/// Fills the log with look-ups until at least `entries` are sealed.
fn fill(rig: &Rig, args: &ConsoleArgs) -> Result<()> {
    let subjects = (args.notices * 2 / 3).max(1);
    let mut first = FIRST_LOOKUPS;
    let started = Instant::now();
    loop {
        let size = seed::sealed_size(&rig.http, &rig.broker.base)?;
        if size >= args.entries {
            println!("  filled in {:.0} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        let count = args.entries - size;
        println!(
            "\nfilling the log: {} entries, {} look-ups to make on {} threads",
            thousands(size),
            thousands(count),
            args.threads
        );
        report_tally(&seed::lookups(&rig.partners, first, count, args.threads, subjects)?)?;
        first += count;
    }
}

/// Runs the benchmark.
pub fn run(args: ConsoleArgs) -> Result<()> {
    let rig = set_up(&args)?;
    let small = measure_phase(&rig, &args, "almost empty log")?;
    fill(&rig, &args)?;
    let large = measure_phase(&rig, &args, "filled log")?;
    let failed = report(&args, &small, &large);
    broker_log(&rig.log);
    if failed > 0 {
        bail!("{failed} page measurements failed");
    }
    Ok(())
}

/// Prints both phases side by side, the target per page and a summary table; returns how many
/// page measurements failed.
fn report(args: &ConsoleArgs, small: &Phase, large: &Phase) -> usize {
    let (a, b) = (thousands(small.size), thousands(large.size));
    println!(
        "\nconsole pages, {} sequential GETs each after {} warm-up, {} backend (ms)",
        args.requests, args.warmup, args.backend
    );
    println!("{:<24} | {:^31} | {:^31} | {:>9}", "", format!("log of {a} entries"), format!("log of {b} entries"), "");
    println!(
        "{:<24} | {:>7}{:>8}{:>8}{:>8} | {:>7}{:>8}{:>8}{:>8} | {:>9}",
        "page", "p50", "p95", "p99", "max", "p50", "p95", "p99", "max", "p99 ratio"
    );
    let cells = |o: &Outcome| match o {
        Outcome::Measured(s) => format!("{:>7.1}{:>8.1}{:>8.1}{:>8.1}", s.p50, s.p95, s.p99, s.max),
        Outcome::Skipped(_) => format!("{:^31}", "skipped (not served)"),
        Outcome::Failed(_) => format!("{:^31}", "FAILED"),
    };
    let all = pages(&args.filter);
    for ((page, s), l) in all.iter().zip(&small.outcomes).zip(&large.outcomes) {
        println!("{:<24} | {} | {} | {:>9}", page.name, cells(s), cells(l), ratio(s, l));
    }
    println!();
    let mut failed = 0;
    for ((page, s), l) in all.iter().zip(&small.outcomes).zip(&large.outcomes) {
        failed += usize::from(matches!(s, Outcome::Failed(_))) + usize::from(matches!(l, Outcome::Failed(_)));
        let verdict = match l {
            Outcome::Measured(st) if st.p99 < args.target_ms => format!("met ({:.1} ms)", st.p99),
            Outcome::Measured(st) => format!("MISSED ({:.1} ms)", st.p99),
            Outcome::Skipped(_) => "skipped (not served)".into(),
            Outcome::Failed(why) => format!("FAILED: {why}"),
        };
        println!("target p99 < {} ms at {b} entries, {:<24} {verdict}", args.target_ms, format!("{}:", page.name));
    }
    summary(args, small, large);
    failed
}

fn ratio(s: &Outcome, l: &Outcome) -> String {
    match (s, l) {
        (Outcome::Measured(s), Outcome::Measured(l)) => format!("{:.2}", l.p99 / s.p99),
        _ => "-".into(),
    }
}

/// A Markdown table of the p99s, to paste into a note.
fn summary(args: &ConsoleArgs, small: &Phase, large: &Phase) {
    let p99 = |o: &Outcome| match o {
        Outcome::Measured(s) => format!("{:.1}", s.p99),
        Outcome::Skipped(_) => "not served".into(),
        Outcome::Failed(_) => "failed".into(),
    };
    println!(
        "\n| page | path | p99 ms, {} entries | p99 ms, {} entries | ratio | p99 < {} ms |",
        thousands(small.size),
        thousands(large.size),
        args.target_ms
    );
    println!("| --- | --- | ---: | ---: | ---: | --- |");
    for ((page, s), l) in pages(&args.filter).iter().zip(&small.outcomes).zip(&large.outcomes) {
        let met = match l {
            Outcome::Measured(st) if st.p99 < args.target_ms => "met",
            Outcome::Measured(_) => "**missed**",
            _ => "-",
        };
        println!("| {} | `{}` | {} | {} | {} | {met} |", page.name, page.shown, p99(s), p99(l), ratio(s, l));
    }
    println!(
        "\n({} sequential GETs per page after {} warm-up, one signed-in browser; {} backend; {} CPUs; {})",
        args.requests,
        args.warmup,
        args.backend,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        chrono::Utc::now().format("%Y-%m-%d")
    );
}

/// What the broker logged at warn and above, beyond its demo-mode warning.
fn broker_log(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> =
        text.lines().map(plain).filter(|l| !l.trim().is_empty() && !l.contains("DEMO MODE")).collect();
    println!("\nthe broker logged {} lines at warn or above (besides the demo-mode warning)", lines.len());
    for l in lines.iter().take(5) {
        println!("  {}", l.chars().take(300).collect::<String>());
    }
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
