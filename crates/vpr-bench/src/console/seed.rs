//! Filling the audit log as the demo ICS's partner systems would, through the broker's API:
//! notices from several publishers, IG's consents and objections, then look-ups from every
//! kind of partner (a mix of purposes and roles, some of them break-glass) on client threads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use josekit::jwk::Jwk;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use vpr_auth::SigningKeyFile;

use crate::{nhs, token_as};

/// The demo registry's systems (examples/demo-ics/registry.json), each with its demo key in
/// `keys/<client id>.DEMO-ONLY.jwk`.
const SYSTEMS: [&str; 7] = [
    "northmoor-cad",
    "northmoor-ed",
    "ashdale-gp-green",
    "ashdale-gp-river",
    "northmoor-police",
    "ashdale-council",
    "icb-ig",
];

/// The systems that publish notices, in turn.
const PUBLISHERS: [&str; 5] =
    ["northmoor-cad", "northmoor-ed", "ashdale-gp-green", "ashdale-gp-river", "northmoor-police"];

const CATEGORIES: [&str; 9] = [
    "physical-assault",
    "directed-verbal-abuse",
    "non-physical-assault",
    "attempted-physical-assault",
    "threat-with-weapon",
    "anti-social-behaviour",
    "credible-threat-to-individual",
    "witnessed-aggression",
    "false-imprisonment",
];
const RISK_LEVELS: [&str; 3] = ["high", "moderate", "low"];
const ADVICE: [&str; 6] = [
    "two-staff-minimum",
    "attend-with-police",
    "telephone-first",
    "no-lone-visits",
    "security-present",
    "weapons-reported",
];

/// Ordinary look-ups: system, role, purpose. Permitted, partly permitted, existence only and
/// denied ones (a practice manager has no clause; social care support needs consent).
const MIX: [(&str, &str, &str); 12] = [
    ("northmoor-cad", "ambulance-dispatcher", "staff-safety"),
    ("northmoor-cad", "ambulance-clinician", "direct-care"),
    ("northmoor-ed", "ed-clinician", "direct-care"),
    ("northmoor-ed", "ed-receptionist", "staff-safety"),
    ("ashdale-gp-green", "gp-clinician", "safeguarding"),
    ("ashdale-gp-river", "gp-receptionist", "staff-safety"),
    ("ashdale-gp-river", "gp-clinician", "direct-care"),
    ("northmoor-police", "police-officer", "crime-prevention"),
    ("ashdale-council", "social-worker", "safeguarding"),
    ("ashdale-council", "social-worker", "social-care-support"),
    ("ashdale-gp-green", "practice-manager", "staff-safety"),
    ("northmoor-cad", "vpr-lead", "vpr-management"),
];

/// Break-glass look-ups (about one in a hundred).
const BREAK_GLASS: [(&str, &str, &str); 2] =
    [("northmoor-ed", "ed-clinician", "direct-care"), ("northmoor-cad", "ambulance-dispatcher", "staff-safety")];

/// `xs[i % len]`.
fn pick<T: Copy + Default>(xs: &[T], i: u64) -> T {
    let len = xs.len().max(1) as u64;
    xs.get((i % len) as usize).copied().unwrap_or_default()
}

/// The demo ICS's partner systems at one broker, with their keys.
pub(super) struct Partners {
    base: String,
    keys: HashMap<&'static str, Jwk>,
}

impl Partners {
    /// Every system of [`SYSTEMS`], its key read from `demo_ics/keys`.
    pub(super) fn load(base: &str, demo_ics: &Path) -> Result<Self> {
        let mut keys = HashMap::new();
        for id in SYSTEMS {
            let path = demo_ics.join("keys").join(format!("{id}.DEMO-ONLY.jwk"));
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            keys.insert(id, SigningKeyFile::from_json(&text)?.jwk);
        }
        Ok(Self { base: base.to_owned(), keys })
    }

    fn token(&self, id: &str) -> Result<String> {
        token_as(&self.base, id, self.keys.get(id).with_context(|| format!("no key for `{id}`"))?)
    }

    fn post(&self, http: &Client, token: &str, path: &str, body: &Value) -> Result<reqwest::blocking::Response> {
        Ok(http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body).send()?)
    }
}

/// An address subject of the bench (fictional, in a real postcode format).
fn address(s: u32) -> Value {
    json!({"postcode": format!("LS{} {}AB", 1 + s % 27, 1 + s % 9), "line1": format!("{} Bench Street", 1 + s)})
}

/// Notice `i`, about subject `i % subjects` (every tenth about an address, every fourth also on
/// a crime-related basis so the police see some).
fn notice(i: u32, subjects: u32) -> Value {
    let s = i % subjects.max(1);
    let today = chrono::Utc::now().date_naive();
    let subject = if i % 10 == 9 { json!({"address": address(s)}) } else { json!({"person": {"nhs_number": nhs(s)}}) };
    let mut basis = vec!["UKGDPR-6-1-c", "UKGDPR-9-2-h"];
    if i.is_multiple_of(4) {
        basis.push("CDA98-S115");
    }
    let n = u64::from(i);
    // A third due for review within 30 days (the VPR lead's notices page lists those).
    let review_in = if i.is_multiple_of(3) { 2 + i64::from(i % 28) } else { 60 + i64::from(i % 180) };
    json!({
        "subject": subject, "category": pick(&CATEGORIES, n), "risk_level": pick(&RISK_LEVELS, n),
        "safety_advice": [pick(&ADVICE, n), pick(&ADVICE, n + 1)], "medical_factor_operative": i.is_multiple_of(11),
        "incident_date": (today - chrono::Duration::days(1 + i64::from(i % 60))).to_string(),
        "review_date": (today + chrono::Duration::days(review_in)).to_string(),
        "subject_informed": {"withheld_because": "informing would put staff at risk"}, "lawful_basis": basis,
    })
}

/// Publishes `count` notices about `subjects` subjects, the publishers taking turns.
pub(super) fn publish(p: &Partners, count: u32, subjects: u32) -> Result<()> {
    let http = Client::new();
    let tokens: HashMap<&str, String> = PUBLISHERS.iter().map(|id| Ok((*id, p.token(id)?))).collect::<Result<_>>()?;
    for i in 0..count {
        let publisher = pick(&PUBLISHERS, u64::from(i));
        let token = tokens.get(publisher).context("a publisher's token")?;
        let r = p.post(&http, token, "/v1/notices", &notice(i, subjects))?;
        if r.status() != 201 {
            bail!("publishing as `{publisher}` answered {}: {}", r.status(), super::start_of(&r.text()?));
        }
    }
    Ok(())
}

/// IG records consents to social care support (every tenth subject) and upheld objections to
/// direct care (every fifteenth).
pub(super) fn directives(p: &Partners, subjects: u32) -> Result<()> {
    let http = Client::new();
    let token = p.token("icb-ig")?;
    let ig = json!({"user_id": "ig-lead-1", "role": "ig-lead"});
    for s in (0..subjects).step_by(10) {
        let body = json!({"subject": {"person": {"nhs_number": nhs(s)}}, "purpose": "social-care-support",
            "status": "given", "evidence_reference": format!("ASC-CONSENT-{s}"), "requester": ig});
        expect_created(p.post(&http, &token, "/v1/consents", &body)?)?;
    }
    for s in (5..subjects).step_by(15) {
        let body = json!({"subject": {"person": {"nhs_number": nhs(s)}}, "purpose": "direct-care",
            "status": "upheld", "evidence_reference": format!("IG-OBJ-{s}"), "requester": ig});
        expect_created(p.post(&http, &token, "/v1/objections", &body)?)?;
    }
    Ok(())
}

fn expect_created(r: reqwest::blocking::Response) -> Result<()> {
    if r.status() != 201 {
        bail!("recording a directive answered {}: {}", r.status(), super::start_of(&r.text()?));
    }
    Ok(())
}

/// Look-up `n`: its system and body. Subjects range over twice those with notices, so about
/// half find nothing; every tenth is by address.
fn lookup(n: u64, subjects: u32) -> (&'static str, Value) {
    let (system, role, purpose) = if n % 100 == 37 { pick(&BREAK_GLASS, n / 100) } else { pick(&MIX, n) };
    let s = (n.wrapping_mul(7919) % (2 * u64::from(subjects.max(1)))) as u32;
    let subject = if s % 10 == 9 { json!({"address": address(s)}) } else { json!({"person": {"nhs_number": nhs(s)}}) };
    let mut body = json!({"purpose": purpose, "requester": {"user_id": format!("{role}-{}", n % 40), "role": role},
        "context": {"reference": format!("INC-{n}")}, "subject": subject});
    if n % 100 == 37 {
        if let Some(b) = body.as_object_mut() {
            b.insert(
                "break_glass".into(),
                json!({"justification": "Patient unconscious on arrival, no history available"}),
            );
        }
    }
    (system, body)
}

/// How the look-ups were answered: count per status, and what went wrong first.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) by_status: BTreeMap<u16, u64>,
    pub(super) failures: u64,
    pub(super) first_failure: Option<String>,
}

impl Tally {
    fn failed(&mut self, why: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(why);
    }
}

/// Look-ups `first..first + count` on `threads` client threads, with a progress line every
/// five seconds.
pub(super) fn lookups(p: &Partners, first: u64, count: u64, threads: usize, subjects: u32) -> Result<Tally> {
    let next = AtomicU64::new(first);
    let (done, finished) = (AtomicU64::new(0), AtomicUsize::new(0));
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut tokens = HashMap::new();
                let http = Client::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= first + count {
                        break;
                    }
                    let (system, body) = lookup(n, subjects);
                    let answer = one_lookup(p, &http, &mut tokens, system, &body);
                    if let Ok(mut t) = tally.lock() {
                        match answer {
                            Ok(status) if status < 500 => *t.by_status.entry(status).or_default() += 1,
                            Ok(status) => t.failed(format!("a look-up as `{system}` answered {status}")),
                            Err(e) => t.failed(format!("a look-up as `{system}` failed: {e:#}")),
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }
        let mut last = Instant::now();
        while finished.load(Ordering::Relaxed) < threads {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= Duration::from_secs(5) {
                last = Instant::now();
                let d = done.load(Ordering::Relaxed);
                let rate = d as f64 / started.elapsed().as_secs_f64();
                println!("  look-ups: {d:>7} of {count} ({rate:.0}/s)");
            }
        }
    });
    tally.into_inner().map_err(|_| anyhow::anyhow!("a look-up thread panicked"))
}

/// One look-up as `system` (its token fetched once per thread, and again if refused); its status.
fn one_lookup(
    p: &Partners,
    http: &Client,
    tokens: &mut HashMap<&'static str, String>,
    system: &'static str,
    body: &Value,
) -> Result<u16> {
    for _ in 0..2 {
        let token = match tokens.get(system) {
            Some(t) => t.clone(),
            None => tokens.entry(system).or_insert(p.token(system)?).clone(),
        };
        let r = p.post(http, &token, "/v1/lookups", body)?;
        let status = r.status().as_u16();
        r.bytes()?;
        if status != 401 {
            return Ok(status);
        }
        tokens.remove(system);
    }
    Ok(401)
}

/// The size of the newest signed checkpoint (0 before the first), once it has stopped growing
/// (the broker seals every second): every committed entry is then sealed.
pub(super) fn sealed_size(http: &Client, base: &str) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(900);
    let (mut last, mut since) = (None, Instant::now());
    loop {
        let size = latest_tree_size(http, base)?;
        if last != Some(size) {
            (last, since) = (Some(size), Instant::now());
        } else if since.elapsed() >= Duration::from_millis(2500) {
            return Ok(size);
        }
        if Instant::now() > deadline {
            bail!("the audit log was still being sealed after 15 minutes (at {size} entries)");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn latest_tree_size(http: &Client, base: &str) -> Result<u64> {
    let r = http.get(format!("{base}/v1/audit/checkpoints/latest")).send()?;
    match r.status().as_u16() {
        404 => Ok(0),
        200 => r.json::<Value>()?.get("tree_size").and_then(Value::as_u64).context("a checkpoint without tree_size"),
        other => bail!("/v1/audit/checkpoints/latest answered {other}"),
    }
}
