//! `federation`: look-ups at broker A that also ask 1, 2 and 4 peer brokers on loopback (each a
//! real broker process with its own database, deciding and auditing under its agreement),
//! against A's local-only look-ups (`"scope": "local"`) on the same broker, in one run:
//! closed-loop throughput, and p50/p99 at a fixed offered rate (default 200/s).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vpr_auth::SigningKeyFile;

use super::{
    free_port, local_lookup_body, lookup_body, run_bodies, seed, seed_from, start_signed_broker, token, Args, Broker,
    Phase, Spec,
};

/// Options of the federation benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct FederationArgs {
    /// The broker binary (build it with --release).
    #[arg(long)]
    broker: PathBuf,
    /// The demo agreement.
    #[arg(long, default_value = "policies/agreement.json")]
    agreement: PathBuf,
    /// Backend of every broker.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Peer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    peers: Vec<usize>,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Offered rate for the latency phase (look-ups per second).
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Client threads.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Distinct subjects seeded at every broker (each with two notices).
    #[arg(long, default_value_t = 200)]
    subjects: u32,
    /// The asking broker's time budget for its peers (raise it to profile under valgrind).
    #[arg(long, default_value_t = 300)]
    budget_ms: u64,
    /// What the peers hold: `same` (notices about every subject looked up: each relayed look-up
    /// discloses two notices, the worst case) or `other` (notices about other people: each
    /// relayed look-up is a governed, audited no-match, as for most subjects at most peers).
    #[arg(long, value_delimiter = ',', default_value = "same,other")]
    peer_subjects: Vec<String>,
}

/// One broker to be: its id, signing key, port and partner, known before any starts.
struct Planned {
    id: String,
    key: SigningKeyFile,
    port: u16,
    /// Its one partner (an ambulance trust), and the prefix of its ICS's ODS codes.
    ods: String,
    prefix: String,
}

impl Planned {
    fn new(id: String, prefix: &str) -> Result<Self> {
        Ok(Self {
            key: SigningKeyFile::generate(&format!("{id}-bench"), false)?,
            id,
            port: free_port()?,
            ods: format!("{prefix}AM01"),
            prefix: prefix.to_owned(),
        })
    }

    fn jwks(&self, dir: &Path) -> Result<PathBuf> {
        let public = vpr_auth::keys::public_jwk(&self.key.jwk)?;
        let path = dir.join(format!("{}.jwks.json", self.id));
        std::fs::write(&path, json!({"keys": [Value::Object(public.as_ref().clone())]}).to_string())?;
        Ok(path)
    }
}

/// The `[federation]` table of `me`, peered with `peers` (each may vouch for its own partner).
fn federation_toml(dir: &Path, me: &Planned, peers: &[&Planned], budget_ms: u64) -> Result<String> {
    let mut out = format!("[federation]\nid = \"{}\"\nlookup_budget_ms = {budget_ms}\n", me.id);
    for p in peers {
        out.push_str(&format!(
            "[[federation.peers]]\nid = \"{}\"\nname = \"bench peer\"\nbase_url = \"http://127.0.0.1:{}\"\njwks = \"{}\"\n\
             vouches_for = [{{ ods_code = \"{}\", type = \"ambulance-trust\" }}]\n",
            p.id,
            p.port,
            p.jwks(dir)?.display(),
            p.ods
        ));
    }
    Ok(out)
}

/// The demo agreement for an ICS whose parties' ODS codes begin with `prefix` (a copy beside
/// copies of its Cedar files; the demo's own for `X`).
fn agreement_for(agreement: &Path, prefix: &str, dir: &Path) -> Result<PathBuf> {
    if prefix == "X" {
        return Ok(agreement.to_owned());
    }
    let policies = agreement.parent().context("the agreement's folder")?;
    let mut a: Value = serde_json::from_str(&std::fs::read_to_string(agreement)?)?;
    let parties = a.get_mut("parties").and_then(Value::as_array_mut).context("the agreement's parties")?;
    for p in parties {
        let ods = p.get("ods_code").and_then(Value::as_str).context("a party's ODS code")?;
        let renamed = format!("{prefix}{}", ods.get(1..).unwrap_or_default());
        if let Some(o) = p.as_object_mut() {
            o.insert("ods_code".into(), json!(renamed));
        }
    }
    if let Some(files) = a.get_mut("policies").and_then(Value::as_object_mut) {
        files.remove("fixtures");
    }
    let folder = dir.join(prefix);
    std::fs::create_dir_all(&folder)?;
    for f in ["vpr.cedarschema", "agreement.cedar"] {
        std::fs::copy(policies.join(f), folder.join(f))?;
    }
    let path = folder.join("agreement.json");
    std::fs::write(&path, a.to_string())?;
    Ok(path)
}

/// Broker A and `n` peers, started, each seeded; A's token first.
fn start_set(args: &FederationArgs, n: usize, dir: &Path, same: bool) -> Result<(Vec<Broker>, String)> {
    let a = Planned::new("XIC01".into(), "X")?;
    let peers: Vec<Planned> =
        (0..n).map(|i| Planned::new(format!("Y{i}IC01"), &format!("Y{i}"))).collect::<Result<_>>()?;
    let start = |me: &Planned, with: Vec<&Planned>| -> Result<Broker> {
        let extra = federation_toml(dir, me, &with, args.budget_ms)?;
        let agreement = agreement_for(&std::fs::canonicalize(&args.agreement)?, &me.prefix, dir)?;
        let spec = Spec { mode: "governed", extra: &extra, signing: &me.key, port: me.port, ods: &me.ods };
        start_signed_broker(&args.broker, &agreement, &args.backend, &spec)
    };
    let mut brokers = vec![start(&a, peers.iter().collect())?];
    for p in &peers {
        brokers.push(start(p, vec![&a])?);
    }
    let mut a_token = String::new();
    for (i, b) in brokers.iter().enumerate() {
        let t = token(b)?;
        if i == 0 || same {
            seed(b, &t, args.subjects)?;
        } else {
            seed_from(b, &t, 100_000, args.subjects)?;
        }
        if i == 0 {
            a_token = t;
        }
    }
    Ok((brokers, a_token))
}

/// One federated look-up must find every peer's notices and no peer missing.
fn check_answers(a: &Broker, token: &str, n: usize, same: bool) -> Result<()> {
    let found: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/lookups", a.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(lookup_body(0))
        .send()?
        .json()?;
    let results = found.get("results").and_then(Value::as_array).context("no results")?;
    let expected = if same { 2 * (n + 1) } else { 2 };
    if results.len() != expected || found.get("incomplete") != Some(&json!([])) {
        bail!("a federated look-up did not reach every peer: {found}");
    }
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: FederationArgs) -> Result<()> {
    if !args.broker.exists() {
        bail!("no broker binary at {}", args.broker.display());
    }
    let look = Args {
        brokers: super::Brokers { broker: args.broker.clone(), agreement: args.agreement.clone(), backends: vec![] },
        seconds: args.seconds,
        rate: args.rate,
        clients: args.clients,
        subjects: args.subjects,
        timeline: false,
    };
    println!(
        "federated look-ups on {}: {} client threads, {} s per phase, {} subjects x 2 notices at every broker",
        args.backend, args.clients, args.seconds, args.subjects
    );
    for held in &args.peer_subjects {
        let same = match held.as_str() {
            "same" => true,
            "other" => false,
            other => bail!("--peer-subjects: `same` or `other`, not `{other}`"),
        };
        let what = if same {
            "peers hold notices about every subject looked up (each answers two)"
        } else {
            "peers hold notices about other people (each answers no match)"
        };
        println!("\n{what}");
        run_set(&args, &look, same)?;
    }
    Ok(())
}

/// Measures every peer count with the peers holding `same` subjects as A, or other ones.
fn run_set(args: &FederationArgs, look: &Args, same: bool) -> Result<()> {
    println!(
        "{:<6} {:<10} {:>10} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>7}",
        "peers", "look-ups", "max req/s", "p50 ms", "p99 ms", "rate req/s", "p50 ms", "p99 ms", "errors"
    );
    for &n in &args.peers {
        let dir = tempfile::tempdir()?;
        let (brokers, t) = start_set(args, n, dir.path(), same)?;
        let a = brokers.first().context("broker A")?;
        check_answers(a, &t, n, same)?;
        let warm = Args { seconds: 2, ..look.clone() };
        run_bodies(&warm, a, &t, None, &local_lookup_body);
        run_bodies(&warm, a, &t, None, &lookup_body);
        let local_max = run_bodies(look, a, &t, None, &local_lookup_body);
        let fed_max = run_bodies(look, a, &t, None, &lookup_body);
        let local_rate = run_bodies(look, a, &t, Some(args.rate), &local_lookup_body);
        let fed_rate = run_bodies(look, a, &t, Some(args.rate), &lookup_body);
        let row = |what: &str, max: &Phase, at: &Phase| {
            println!(
                "{n:<6} {what:<10} {:>10.0} {:>8.2} {:>8.2} | {:>9.0} {:>8.2} {:>8.2} {:>7}",
                max.per_second,
                max.p50_ms,
                max.p99_ms,
                at.per_second,
                at.p50_ms,
                at.p99_ms,
                max.errors + at.errors
            );
        };
        row("local", &local_max, &local_rate);
        row("federated", &fed_max, &fed_rate);
        let target = if n == 2 { "  (targets with 2 peers: ratio >= 0.40, p99 at most +15 ms)" } else { "" };
        println!(
            "{n:<6} federated/local throughput ratio {:.2}; p99 at {} req/s {:+.2} ms over local-only{target}",
            fed_max.per_second / local_max.per_second,
            args.rate,
            fed_rate.p99_ms - local_rate.p99_ms
        );
    }
    Ok(())
}
