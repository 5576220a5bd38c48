//! Operations endpoints, request ids, OpenAPI and graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::Value;

use crate::both;
use crate::support::*;

both!(health_readiness_and_metrics, |b: &TestBroker| {
    assert_eq!(b.http.get(b.url("/healthz")).send().unwrap().status(), 200);
    let ready = json_of(b.http.get(b.url("/readyz")).send().unwrap());
    assert_eq!(ready["database"], if b.backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let t = b.token("amb-cad");
    assert_eq!(b.publish(&t, &person_notice("9990000018")).status(), 201);
    let m = b.http.get(b.url("/metrics")).send().unwrap().text().unwrap();
    assert!(m.contains("vpr_http_requests_total{method=\"POST\",route=\"/v1/notices\",status=\"201\"} 1"), "{m}");
    assert!(m.contains("vpr_notice_changes_total{change=\"created\"} 1"), "{m}");
    assert!(m.contains("vpr_token_requests_total{outcome=\"issued\"} 1"), "{m}");
});

both!(request_ids_are_echoed_and_logged, |b: &TestBroker| {
    let r = b.http.get(b.url("/healthz")).header("X-Request-Id", "partner-trace-123").send().unwrap();
    assert_eq!(r.headers()["x-request-id"], "partner-trace-123");
    let r = b.http.get(b.url("/healthz")).header("X-Request-Id", "bad id with spaces").send().unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(generated, "bad id with spaces");
    let r = b.http.get(b.url("/nowhere")).send().unwrap();
    assert_eq!(r.status(), 404);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(json_of(r)["request_id"], id.as_str());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(b.log().contains("partner-trace-123"), "request id missing from log:\n{}", b.log());
});

both!(openapi_describes_exactly_what_is_served, |b: &TestBroker| {
    let doc: Value = json_of(b.http.get(b.url("/openapi.json")).send().unwrap());
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 11);
    for (path, item) in paths {
        let concrete = path.replace("{id}", "6f1c2a56-8f7e-4a53-9d8e-2a4c7a0f0b11");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = b.http.request(m, b.url(&concrete)).send().unwrap();
            let body: Value = r.json().unwrap_or(Value::Null);
            // A documented operation is routed: it never falls through to the unknown-route 404.
            // (FHIR routes answer an OperationOutcome, with the same words in its diagnostics.)
            let unrouted = body["detail"].as_str().is_some_and(|d| d.starts_with("no resource at"))
                || body["issue"][0]["diagnostics"].as_str().is_some_and(|d| d.starts_with("no resource at"));
            assert!(!unrouted, "{method} {path} is documented but not served");
        }
    }
    // And the contract schemas inside it are the ones the broker validates with.
    let notice: Value = serde_json::from_str(vpr_domain::validate::BodySchema::Notice.source()).unwrap();
    assert_eq!(doc["components"]["schemas"]["NoticeInput"]["properties"], notice["properties"]);
});

both!(graceful_shutdown_finishes_in_flight_requests, |b: &TestBroker| {
    let t = b.token("amb-cad");
    // One connection per request, so a failure is about this request, not a pooled connection.
    let http = reqwest::blocking::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let stop = AtomicBool::new(false);
    let seq = AtomicUsize::new(0);
    let completed = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("shutdown-{}", seq.fetch_add(1, Ordering::Relaxed));
                    let sent = http
                        .post(b.url("/v1/notices"))
                        .bearer_auth(&t)
                        .header("Idempotency-Key", &key)
                        .json(&person_notice("9990000018"))
                        .send();
                    let sent = sent.map(|r| (r.status(), r.json::<Value>().is_ok()));
                    match sent {
                        Ok((status, true)) if status == 201 => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        // The listener has closed: the request never reached the broker.
                        Err(e) if e.is_connect() => {}
                        Ok((status, _)) => failed.lock().unwrap().push((key, format!("status {status}"))),
                        Err(e) => failed.lock().unwrap().push((key, format!("{e:?}"))),
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let status = b.terminate();
        stop.store(true, Ordering::Relaxed);
        assert!(status.is_some_and(|s| s.success()), "broker did not exit cleanly: {status:?}");
    });
    assert!(b.log().contains("graceful shutdown"));
    let completed = completed.load(Ordering::Relaxed);
    assert!(completed > 0);
    // A connection still in the kernel's accept queue when the listener closes is reset without
    // the broker ever reading it. What must never happen is a request the broker processed whose
    // answer was lost: retrying each failure with its Idempotency-Key tells the two apart.
    let failed = failed.into_inner().unwrap();
    assert!(failed.len() <= 4, "more failures than connections in flight: {failed:?}");
    b.spawn();
    let t = b.token("amb-cad");
    for (key, why) in &failed {
        let r = b
            .http
            .post(b.url("/v1/notices"))
            .bearer_auth(&t)
            .header("Idempotency-Key", key)
            .json(&person_notice("9990000018"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "request {key} ({why}) was processed but its response was lost");
    }
    assert_eq!(b.count("notices") as usize, completed + failed.len(), "exactly once after retries");
});
