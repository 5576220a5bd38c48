//! Back-pressure at the edge: one partner's flood is answered 429 with `Retry-After` while
//! another partner's look-ups go on at their usual speed; every limited answer carries the
//! IETF `RateLimit` headers. Also the edge's other refusals: 413 for a body over the limit and
//! 405 with `Allow` for a method a path does not answer.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::support::*;

/// A broker whose police system has its own, small limit in the registry.
fn broker_with_a_limited_partner(backend: Backend) -> Option<TestBroker> {
    let b = TestBroker::unstarted('X', backend, |cfg| {
        // The defaults of the test harness are generous; the API's is set here to what a
        // real ICS would run with.
        let limits: toml::Table =
            toml::from_str("api = { per_second = 100, burst = 200 }\nig = { per_second = 10, burst = 30 }").unwrap();
        cfg.insert("limits".into(), toml::Value::Table(limits));
    })?;
    let path = b.dir.path().join("registry.json");
    let mut registry: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for p in registry["partners"].as_array_mut().unwrap() {
        for s in p["systems"].as_array_mut().unwrap() {
            if s["client_id"] == "police" {
                s["rate_limit"] = json!({"per_second": 5, "burst": 5});
            }
        }
    }
    std::fs::write(&path, registry.to_string()).unwrap();
    b.spawn();
    Some(b)
}

fn lookup_body(nhs: &str, user: &str, role: &str, purpose: &str) -> Value {
    json!({"purpose": purpose, "requester": {"user_id": user, "role": role},
           "subject": {"person": {"nhs_number": nhs}}})
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let at = ((ms.len() as f64) * 0.99).ceil() as usize;
    ms[at.saturating_sub(1).min(ms.len() - 1)]
}

/// `n` look-ups by the ambulance trust at about 25 a second: their times in ms, and any status
/// other than 200.
fn steady_lookups(b: &TestBroker, token: &str, n: usize) -> (Vec<f64>, Vec<u16>) {
    let body = lookup_body("9990000018", "disp-1", "ambulance-dispatcher", "staff-safety");
    let mut times = Vec::new();
    let mut other = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let r = b.post_json(token, "/v1/lookups", &body);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if r.status() != 200 {
            other.push(r.status().as_u16());
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    (times, other)
}

/// The flood tests one at a time: each measures latency.
static FLOODING: std::sync::Mutex<()> = std::sync::Mutex::new(());

both_backends!(a_partners_flood_is_refused_with_retry_after_while_another_partner_is_served, |backend| {
    let _one_at_a_time = FLOODING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(b) = broker_with_a_limited_partner(backend) else { return };
    let amb = b.token("amb-cad");
    assert_eq!(b.publish(&amb, &person_notice("9990000018")).status(), 201);
    // Every limited answer says how much of the limit is left.
    let r =
        b.post_json(&amb, "/v1/lookups", &lookup_body("9990000018", "disp-1", "ambulance-dispatcher", "staff-safety"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-policy"], "\"api\";q=200;w=2");
    assert!(r.headers()["ratelimit"].to_str().unwrap().starts_with("\"api\";r="), "{:?}", r.headers());
    // The police system floods from another process, over its own limit of 5 a second, run
    // at the lowest CPU priority as a flooder on another machine would be: the broker then
    // competes with its own work only.
    let police = b.token("police");
    let body = lookup_body("9990000018", "pc-1", "police-officer", "crime-prevention").to_string();
    let python = std::env::var("VPR_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/tools/flood.py");
    let flooder = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(&python)
        .arg(&script)
        .args([b.base.as_str(), "/v1/lookups", police.as_str(), body.as_str(), "16", "8"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the flooder");
    // Measured in alternating windows, the flooder paused (SIGSTOP) then flooding again
    // (SIGCONT), so whatever else the machine runs weighs on both sets alike.
    let signal = |sig: &str| {
        let sent = std::process::Command::new("kill").args([sig, &flooder.id().to_string()]).status();
        assert!(sent.unwrap().success(), "kill {sig}");
    };
    let (mut unloaded, mut loaded, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..10 {
        signal("-STOP");
        std::thread::sleep(Duration::from_millis(100));
        let (times, other) = steady_lookups(&b, &amb, 10);
        unloaded.extend(times);
        refused.extend(other);
        signal("-CONT");
        std::thread::sleep(Duration::from_millis(300));
        let (times, other) = steady_lookups(&b, &amb, 10);
        loaded.extend(times);
        refused.extend(other);
    }
    let out = flooder.wait_with_output().unwrap();
    assert!(out.status.success());
    let flood: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The flooder was held to its limit (5 a second over 16 s, and its burst of 5) and told
    // when to come back; the ambulance trust was never refused and not slowed.
    let count = |status: &str| flood["statuses"][status].as_u64().unwrap_or(0);
    let (admitted, limited) = (count("200"), count("429"));
    assert_eq!(flood["statuses"].as_object().unwrap().len(), 2, "only 200 and 429: {flood}");
    assert!(limited > 500, "the flood was limited: {flood}");
    assert!(admitted <= 5 + 5 * 17, "at most its rate: {flood}");
    assert!(flood["min_retry_after"].as_u64().unwrap() >= 1, "{flood}");
    let problem = &flood["problem"];
    assert_eq!(problem["body"]["type"], "urn:vpr-broker:problem:rate-limited");
    assert_eq!(problem["body"]["status"], 429);
    assert_eq!(problem["content_type"], "application/problem+json");
    assert!(problem["ratelimit"].as_str().unwrap().starts_with("\"api\";r=0;t="), "{problem}");
    assert!(refused.is_empty(), "the other partner got {refused:?}");
    let (before, during) = (p99(unloaded), p99(loaded));
    eprintln!("look-up p99: {before:.1} ms unloaded, {during:.1} ms during the flood: {flood}");
    assert!(during <= 2.0 * before, "p99 {during:.1} ms during the flood against {before:.1} ms before");
});

#[test]
fn token_requests_and_ig_calls_have_limits_of_their_own() {
    let Some(b) = TestBroker::start_with(Backend::Sqlite, |cfg| {
        let limits: toml::Table = toml::from_str(
            // Refilled every 100 s: nothing comes back while the test runs.
            "token = { per_second = 0.01, burst = 3 }\nig = { per_second = 0.01, burst = 2 }\napi = { per_second = 1000, burst = 1000 }",
        )
        .unwrap();
        cfg.insert("limits".into(), toml::Value::Table(limits));
    }) else {
        return;
    };
    let ig = b.token("icb-ig");
    let search = || {
        b.http
            .post(b.url("/v1/audit/entries/search"))
            .bearer_auth(&ig)
            .header("VPR-User-Id", "ig-1")
            .header("VPR-User-Role", "ig-lead")
            .json(&json!({}))
            .send()
            .unwrap()
    };
    let statuses: Vec<u16> = (0..4).map(|_| search().status().as_u16()).collect();
    assert_eq!(statuses[..2], [200, 200], "{statuses:?}");
    assert_eq!(statuses[3], 429, "the IG bucket: {statuses:?}");
    // The same system's other calls count against its API bucket, not its IG one.
    let body = lookup_body("9990000018", "ig-1", "ig-lead", "direct-care");
    assert_ne!(b.post_json(&ig, "/v1/lookups", &body).status(), 429);
    // Tokens: three at once, then the fourth is refused with a time to wait (one was taken above).
    let client = b.client("amb-cad").clone();
    let statuses: Vec<u16> =
        (0..3).map(|_| b.request_token(&b.assertion(&client, |_| {}), None).status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 429], "{statuses:?}");
    let r = b.request_token(&b.assertion(&client, |_| {}), None);
    assert_eq!(r.status(), 429);
    assert!(r.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(r.headers()["ratelimit-policy"].to_str().unwrap().starts_with("\"token\";q=3"));
}

#[test]
fn a_method_a_path_does_not_answer_is_405_with_allow_and_a_large_body_413() {
    let Some(b) = TestBroker::start(Backend::Sqlite) else { return };
    let t = b.token("amb-cad");
    let r = b.http.delete(b.url("/v1/lookups")).bearer_auth(&t).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let p: Value = r.json().unwrap();
    assert_eq!(p["type"], "urn:vpr-broker:problem:method-not-allowed");
    let r = b.http.patch(b.url("/v1/notices/7d2c6f0e-0000-4000-8000-000000000001")).bearer_auth(&t).send().unwrap();
    assert_eq!(r.status(), 405);
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("PUT"), "{allow}");
    // FHIR clients get an OperationOutcome.
    let r = b.http.delete(b.url("/fhir/R4/Flag")).bearer_auth(&t).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(json_of(r)["resourceType"], "OperationOutcome");
    // An unknown path is still 404.
    assert_eq!(b.http.get(b.url("/v1/nothing-here")).send().unwrap().status(), 404);
    // A body over the limit.
    let big = format!("{{\"advice_text\": \"{}\"}}", "x".repeat(70_000));
    let r = b
        .http
        .post(b.url("/v1/notices"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(json_of(r)["errors"][0]["rule"], "max-body-size");
    // The contract lists both.
    let doc: Value = b.http.get(b.url("/openapi.json")).send().unwrap().json().unwrap();
    let lookups = &doc["paths"]["/v1/lookups"]["post"]["responses"];
    assert!(lookups.get("429").is_some() && lookups.get("413").is_some(), "{lookups}");
    // Every operation lists what its edge can answer: with a token 401, 403, 429, 503; with a
    // JSON body also 400, 413, 415, 422.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let listed = |s: &str| op["responses"].get(s).is_some();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if secured {
                for s in ["401", "403", "429", "503"] {
                    assert!(listed(s), "{method} {path} does not list {s}");
                }
            }
            let json_body =
                op["requestBody"]["content"].as_object().is_some_and(|c| c.keys().any(|k| k.contains("json")));
            if json_body {
                for s in ["400", "413", "415", "422"] {
                    assert!(listed(s), "{method} {path} does not list {s}");
                }
            }
        }
    }
}
