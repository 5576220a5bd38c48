//! Subscriptions and guaranteed delivery, driven as partner systems would: real HTTP receivers
//! that go down, fail, hang or acknowledge late; the broker killed with SIGKILL mid-delivery;
//! signatures and encryption checked with an independent JOSE library; withdrawals after the
//! criteria changed; permission removed from the agreement; the feed; IG approval; dead letters.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::receiver::{Mode, Receiver};
use crate::support::*;
use crate::{both, both_backends};

/// An ambulance dispatcher's subscription to notices in the `LS` postcode area (allowed outright
/// by clause SUB-1).
fn ambulance_subscription(url: Option<&str>, extra: Value) -> Value {
    let delivery = match url {
        Some(u) => json!({"method": "webhook", "url": u}),
        None => json!({"method": "feed"}),
    };
    let mut body = json!({
        "purpose": "staff-safety",
        "role": "ambulance-dispatcher",
        "criteria": {"postcodes": ["LS"]},
        "payload": "view",
        "delivery": delivery,
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        "tag": "north-cad",
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

pub(crate) fn publish_address(b: &TestBroker, token: &str, postcode: &str, line: &str) -> String {
    let r = b.publish(token, &address_notice(postcode, line));
    assert_eq!(r.status(), 201);
    json_of(r)["id"].as_str().unwrap().to_owned()
}

pub(crate) fn withdraw(b: &TestBroker, token: &str, id: &str) {
    let r = b.post_json(token, &format!("/v1/notices/{id}/withdraw"), &json!({"reason": "no longer current"}));
    assert_eq!(r.status(), 200);
}

fn amend_risk(b: &TestBroker, token: &str, id: &str, postcode: &str, line: &str, risk: &str) {
    let current = json_of(b.get(token, &format!("/v1/notices/{id}")));
    let mut body = address_notice(postcode, line);
    body["risk_level"] = json!(risk);
    let version = current["version"].as_i64().unwrap();
    let r = b
        .http
        .put(b.url(&format!("/v1/notices/{id}")))
        .bearer_auth(token)
        .header("If-Match", format!("\"{version}\""))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

/// Verifies a webhook body's signature against the broker's JWKS (with josekit) and returns its
/// claims.
pub(crate) fn verified_claims(b: &TestBroker, body: &str) -> Value {
    let jwks: Value = json_of(b.http.get(b.url("/.well-known/jwks.json")).send().unwrap());
    let verifiers: Vec<(String, josekit::jws::alg::ecdsa::EcdsaJwsVerifier)> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let jwk = josekit::jwk::Jwk::from_map(k.as_object().unwrap().clone()).unwrap();
            (k["kid"].as_str().unwrap().to_owned(), josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap())
        })
        .collect();
    let (payload, header) = josekit::jws::deserialize_compact_with_selector(body, |h| {
        let kid = h.key_id().unwrap_or_default();
        Ok(verifiers.iter().find(|(k, _)| k == kid).map(|(_, v)| v as &dyn josekit::jws::JwsVerifier))
    })
    .expect("the signature verifies");
    assert_eq!(header.token_type(), Some("vpr-event+jwt"));
    serde_json::from_slice(&payload).unwrap()
}

/// The schema of one event, with the disclosed-notice reference inlined.
pub(crate) fn assert_is_event(event: &Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("subscription-event.schema.json")).unwrap()).unwrap();
    let mut notice: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("disclosed-notice.schema.json")).unwrap()).unwrap();
    notice.as_object_mut().unwrap().remove("$id");
    notice.as_object_mut().unwrap().remove("$schema");
    schema["oneOf"][0]["properties"]["notice"] = notice;
    let validator = vpr_domain::validate::compile_schema(&schema.to_string()).unwrap();
    let errors = vpr_domain::validate::schema_errors(&validator, event);
    assert!(errors.is_empty(), "{errors:?}\n{event:#}");
}

fn wait_all(receivers: &[(&str, &Receiver)], n: usize, b: &TestBroker) {
    for (name, r) in receivers {
        assert!(
            r.wait_for(n, Duration::from_secs(60)),
            "{name} has {:?}, expected {n} events\n{}",
            r.deduplicated(),
            b.log()
        );
    }
}

both_backends!(
    a_receiver_that_answers_200_with_an_endless_body_is_taken_at_its_word_and_not_waited_for,
    |backend: Backend| {
        let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
        let amb = b.token("amb-cad");
        let acute = b.token("acute-ed");
        let endless = Receiver::start();
        endless.set_mode(Mode::EndlessBody);
        b.subscribe(&amb, &ambulance_subscription(Some(&endless.url), json!({})));
        let started = std::time::Instant::now();
        for (postcode, line) in
            [("LS6 1AA", "1 Test Street"), ("LS6 1AB", "2 Test Street"), ("LS7 2AA", "3 Test Street")]
        {
            publish_address(&b, &acute, postcode, line);
        }
        assert!(endless.wait_for(3, Duration::from_secs(30)), "{:?}\n{}", endless.deduplicated(), b.log());
        // Each acknowledged by its status: none sent twice, none waiting out the timeout.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(endless.deduplicated(), vec![1, 2, 3]);
        assert_eq!(endless.duplicates(), 0, "an event was sent again: the broker waited for the body");
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    }
);

both_backends!(webhooks_deliver_every_event_once_in_order_through_outages_and_crashes, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let amb = b.token("amb-cad");
    let acute = b.token("acute-ed");
    let steady = Receiver::start();
    let down = Receiver::start();
    let failing = Receiver::start();
    let hanging = Receiver::start();
    let late = Receiver::start();
    let all = [("steady", &steady), ("down", &down), ("failing", &failing), ("hanging", &hanging), ("late", &late)];
    let mut subs = Vec::new();
    for (_, r) in &all {
        subs.push(
            b.subscribe(&amb, &ambulance_subscription(Some(&r.url), json!({})))["id"].as_str().unwrap().to_owned(),
        );
    }
    down.down();
    failing.set_mode(Mode::Fail(500));
    hanging.set_mode(Mode::Hang(Duration::from_secs(3)));
    late.set_mode(Mode::AckLate(Duration::from_millis(1500)));

    // Five changes while four receivers are in trouble: three notices, an amendment, a withdrawal.
    let n1 = publish_address(&b, &acute, "LS6 1AA", "1 Test Street");
    let _n2 = publish_address(&b, &acute, "LS6 1AB", "2 Test Street");
    let n3 = publish_address(&b, &acute, "LS7 2AA", "3 Test Street");
    amend_risk(&b, &acute, &n1, "LS6 1AA", "1 Test Street", "moderate");
    withdraw(&b, &acute, &n3);
    if !steady.wait_for(5, Duration::from_secs(30)) {
        let state = json_of(b.get(&amb, &format!("/v1/subscriptions/{}", subs[0])));
        panic!("steady got {:?}\n{state:#}\n{}", steady.deduplicated(), b.log());
    }
    // The late receiver processed its first event but answered after the timeout: sent again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while late.duplicates() == 0 {
        assert!(std::time::Instant::now() < deadline, "the late receiver was never sent an event twice");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tries = failing.hits();
    assert!(tries.len() >= 2, "the failing receiver was retried");
    assert_eq!((tries[0].attempt.as_str(), tries[1].attempt.as_str()), ("1", "2"));
    assert!(tries.iter().all(|h| h.number == 1 && h.subscription == subs[2]), "event 2 waits behind event 1");

    // Crash while retries are pending, then bring the receivers back.
    b.kill_hard();
    down.up();
    failing.set_mode(Mode::Ack);
    hanging.set_mode(Mode::Ack);
    late.set_mode(Mode::Ack);
    b.spawn();
    let n4 = publish_address(&b, &acute, "LS8 3AA", "4 Test Street");
    let post = json!({"review_date": day(200), "note": "still needed"});
    assert_eq!(b.post_json(&acute, &format!("/v1/notices/{n4}/review"), &post).status(), 200);
    // And crash again in the middle of delivering those.
    std::thread::sleep(Duration::from_millis(30));
    b.kill_hard();
    b.spawn();
    let _n5 = publish_address(&b, &acute, "LS9 4AA", "5 Test Street");

    wait_all(&all, 8, &b);
    for (name, r) in &all {
        assert_eq!(r.deduplicated(), (1..=8).collect::<Vec<i64>>(), "{name}: every event once, in order");
        for body in r.bodies() {
            let claims = verified_claims(&b, &body);
            assert_eq!(claims["aud"], "amb-cad");
            assert_eq!(claims["subscription"]["tag"], "north-cad");
            assert_is_event(&claims["event"]);
        }
    }
    assert!(late.duplicates() >= 1);
    // The broker's own account agrees.
    for id in &subs {
        b.wait_subscription(&amb, id, Duration::from_secs(10), |s| s["events"]["delivered_upto"] == 8);
    }
    for (name, r) in &all {
        let kinds: Vec<String> = r
            .bodies()
            .iter()
            .map(|body| verified_claims(&b, body)["event"]["type"].as_str().unwrap().to_owned())
            .collect();
        // Each event shows the notice as it stands when sent: the third notice was withdrawn
        // before some receivers came back, so they were never given it (both its events are
        // withheld); a receiver that was given it is told of the withdrawal.
        let third = (kinds[2].as_str(), kinds[4].as_str());
        assert!(
            third == ("notice-created", "notice-withdrawn") || third == ("withheld", "withheld"),
            "{name}: {kinds:?}"
        );
        for (i, want) in [
            (0, "notice-created"),
            (1, "notice-created"),
            (3, "notice-amended"),
            (5, "notice-created"),
            (6, "notice-reviewed"),
            (7, "notice-created"),
        ] {
            assert_eq!(kinds[i], want, "{name}: {kinds:?}");
        }
    }
});

both_backends!(webhook_bodies_verify_and_decrypt_with_an_independent_jose_library, |backend: Backend| {
    let Some(python) = python() else { return };
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let amb = b.token("amb-cad");
    let plain = Receiver::start();
    let ec = Receiver::start();
    let rsa = Receiver::start();
    let ec_key = josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let mut ec_public = ec_key.to_public_key().unwrap();
    ec_public.set_key_id("subscriber-ec-1");
    let rsa_key = josekit::jwk::Jwk::generate_rsa_key(2048).unwrap();
    let rsa_public = rsa_key.to_public_key().unwrap();
    b.subscribe(&amb, &ambulance_subscription(Some(&plain.url), json!({})));
    let enc = |url: &str, key: &josekit::jwk::Jwk| json!({"delivery": {"method": "webhook", "url": url, "encryption_key": Value::Object(key.as_ref().clone())}});
    let s = b.subscribe(&amb, &ambulance_subscription(Some(&ec.url), enc(&ec.url, &ec_public)));
    assert_eq!(s["delivery"]["encrypted"], true);
    assert_eq!(s["delivery"]["encryption_alg"], "ECDH-ES+A256KW");
    b.subscribe(&amb, &ambulance_subscription(Some(&rsa.url), enc(&rsa.url, &rsa_public)));
    let acute = b.token("acute-ed");
    publish_address(&b, &acute, "LS6 1AA", "1 Test Street");
    wait_all(&[("plain", &plain), ("ec", &ec), ("rsa", &rsa)], 1, &b);

    let jwks: Value = json_of(b.http.get(b.url("/.well-known/jwks.json")).send().unwrap());
    for (r, key, alg) in [
        (&plain, None, None),
        (&ec, Some(&ec_key), Some("ECDH-ES+A256KW")),
        (&rsa, Some(&rsa_key), Some("RSA-OAEP-256")),
    ] {
        let hit = r.hits().into_iter().find(|h| h.processed).unwrap();
        assert_eq!(hit.content_type, "application/jose");
        if key.is_some() {
            assert_eq!(hit.body.split('.').count(), 5, "a compact JWE");
            assert!(!hit.body.contains("threat-with-weapon"));
        }
        let input =
            json!({"body": hit.body, "jwks": jwks, "private_jwk": key.map(|k| Value::Object(k.as_ref().clone()))});
        let out = run_checker(&python, "jose_check.py", &input).unwrap_or_else(|e| panic!("jwcrypto refused it: {e}"));
        assert_eq!(out["jws_header"]["typ"], "vpr-event+jwt");
        assert_eq!(out["jws_header"]["alg"], "ES256");
        if let Some(alg) = alg {
            assert_eq!(out["jwe_header"]["alg"], alg);
            assert_eq!(out["jwe_header"]["enc"], "A256GCM");
            assert_eq!(out["jwe_header"]["cty"], "JWT");
        }
        let claims = &out["claims"];
        assert_eq!(claims["iss"], b.base);
        assert_eq!(claims["aud"], "amb-cad");
        assert_eq!(claims["jti"], hit.event_id);
        assert_eq!(claims["event"]["event_id"], hit.event_id);
        assert_eq!(claims["event"]["event_number"], 1);
        assert_eq!(claims["event"]["notice"]["category"], "threat-with-weapon");
        assert_eq!(claims["event"]["notice"]["decision"]["clauses"], json!(["SS-1"]));
        // A body altered in transit does not verify (one character changed mid-way through the
        // second segment: the JWS payload, or the JWE's wrapped key).
        let mut parts: Vec<String> = hit.body.split('.').map(str::to_owned).collect();
        let seg = &mut parts[1];
        let mid = seg.len() / 2;
        let c = seg.as_bytes()[mid];
        seg.replace_range(mid..=mid, if c == b'A' { "B" } else { "A" });
        let tampered = parts.join(".");
        let input =
            json!({"body": tampered, "jwks": jwks, "private_jwk": key.map(|k| Value::Object(k.as_ref().clone()))});
        assert!(run_checker(&python, "jose_check.py", &input).is_err(), "a tampered body must not verify");
    }
    // Someone else's key cannot read an encrypted body.
    let stranger = josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let hit = ec.hits().into_iter().find(|h| h.processed).unwrap();
    let input = json!({"body": hit.body, "jwks": jwks, "private_jwk": Value::Object(stranger.as_ref().clone())});
    assert!(run_checker(&python, "jose_check.py", &input).is_err());
});

both_backends!(a_withdrawal_reaches_a_subscriber_whose_criteria_no_longer_match, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let amb = b.token("amb-cad");
    let acute = b.token("acute-ed");
    let r = Receiver::start();
    let sub = b.subscribe(&amb, &ambulance_subscription(Some(&r.url), json!({})));
    let id = sub["id"].as_str().unwrap().to_owned();
    let leeds = publish_address(&b, &acute, "LS6 1AA", "1 Test Street");
    assert!(r.wait_for(1, Duration::from_secs(20)));
    // The dispatcher moves to Bradford: notices in Leeds no longer match.
    let changed = b.put_json(
        &amb,
        &format!("/v1/subscriptions/{id}"),
        &ambulance_subscription(Some(&r.url), json!({"criteria": {"postcodes": ["BD"]}})),
    );
    assert_eq!(changed.status(), 200);
    assert_eq!(json_of(changed)["criteria"]["postcodes"], json!(["BD"]));
    publish_address(&b, &acute, "LS7 1AA", "2 Test Street");
    withdraw(&b, &acute, &leeds);
    publish_address(&b, &acute, "BD1 1AA", "3 Test Street");
    assert!(r.wait_for(3, Duration::from_secs(20)), "{:?}", r.deduplicated());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(r.deduplicated(), vec![1, 2, 3], "the new Leeds notice is not sent");
    let events: Vec<Value> = r.bodies().iter().map(|body| verified_claims(&b, body)["event"].clone()).collect();
    let withdrawal = &events[1];
    assert_eq!(withdrawal["type"], "notice-withdrawn");
    assert_eq!(withdrawal["notice_id"], leeds);
    assert_eq!(withdrawal["matched_criteria"], false);
    assert_eq!(withdrawal["notice"]["status"], "withdrawn");
    assert_eq!(withdrawal["notice"]["decision"]["view"], "existence");
    assert_eq!(withdrawal["notice"]["decision"]["clauses"], json!(["RT-1"]));
    assert!(withdrawal["notice"].get("category").is_none(), "a retraction carries no content");
    assert_eq!(events[2]["notice"]["subject_kinds"], json!(["address"]));
    for e in &events {
        assert_is_event(e);
    }
});

fn without_clause(b: &TestBroker, clause: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = b.dir.path().join("changed-agreement");
    std::fs::create_dir_all(&dir).unwrap();
    let cedar = std::fs::read_to_string(root.join("agreement.cedar")).unwrap();
    let start = cedar.find(&format!("@clause(\"{clause}\")")).unwrap();
    let end = start + cedar[start..].find("};").unwrap() + 2;
    std::fs::write(dir.join("agreement.cedar"), format!("{}{}", &cedar[..start], &cedar[end..])).unwrap();
    std::fs::copy(root.join("vpr.cedarschema"), dir.join("vpr.cedarschema")).unwrap();
    let mut agreement: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("agreement.json")).unwrap()).unwrap();
    agreement["agreement_version"] = json!("NA-ICS-VPR-2026.2-test");
    agreement["policies"].as_object_mut().unwrap().remove("fixtures");
    std::fs::write(dir.join("agreement.json"), agreement.to_string()).unwrap();
    dir.join("agreement.json")
}

/// Each notice decision recorded by a push, in order: (agreement version, notice, decision,
/// clauses, outcome). A backlog may be decided in one entry, so entries are flattened.
fn deliveries_audited(b: &TestBroker) -> Vec<(String, String, String, Vec<String>, i32)> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        notices: String,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        outcome: i32,
        #[diesel(sql_type = diesel::sql_types::Text)]
        agreement_version: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT notices, outcome, agreement_version FROM audit_entries WHERE action = 'deliver' ORDER BY seq",
    )
    .load(&mut b.db())
    .unwrap();
    rows.into_iter()
        .flat_map(|r| {
            let notices: Vec<Value> = serde_json::from_str(&r.notices).unwrap();
            notices
                .into_iter()
                .map(|n| {
                    let clauses =
                        n["clauses"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
                    (
                        r.agreement_version.clone(),
                        n["id"].as_str().unwrap().to_owned(),
                        n["decision"].as_str().unwrap().to_owned(),
                        clauses,
                        r.outcome,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

both_backends!(
    a_subscriber_whose_permission_is_removed_gets_no_content_and_the_refusals_are_audited,
    |backend: Backend| {
        let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
        let amb = b.token("amb-cad");
        let acute = b.token("acute-ed");
        let r = Receiver::start();
        let id = b.subscribe(&amb, &ambulance_subscription(Some(&r.url), json!({})))["id"].as_str().unwrap().to_owned();
        let n = publish_address(&b, &acute, "LS6 1AA", "1 Test Street");
        assert!(r.wait_for(1, Duration::from_secs(20)));
        // Acknowledged (otherwise, after the restart below, it would rightly be sent again).
        b.wait_subscription(&amb, &id, Duration::from_secs(10), |s| s["events"]["delivered_upto"] == 1);
        // The ICS removes the clause that let ambulance crews see notices for staff safety.
        let changed = without_clause(&b, "SS-1");
        b.kill_hard();
        b.edit_config(|cfg| {
            cfg.insert("agreement".into(), changed.display().to_string().into());
        });
        b.spawn();
        let acute = b.token("acute-ed");
        amend_risk(&b, &acute, &n, "LS6 1AA", "1 Test Street", "moderate");
        let other = publish_address(&b, &acute, "LS7 1AA", "2 Test Street");
        // Sent before the withdrawal (each event shows the notice as it stands when sent).
        assert!(r.wait_for(3, Duration::from_secs(30)), "{:?}\n{}", r.deduplicated(), b.log());
        withdraw(&b, &acute, &n);
        assert!(r.wait_for(4, Duration::from_secs(30)), "{:?}\n{}", r.deduplicated(), b.log());
        let events: Vec<Value> = r.bodies().iter().map(|body| verified_claims(&b, body)["event"].clone()).collect();
        assert_eq!(events[0]["notice"]["category"], "threat-with-weapon", "before the change");
        for e in &events[1..3] {
            assert_eq!(e["type"], "withheld", "{e:#}");
            assert!(e.get("notice").is_none() && e.get("notice_id").is_none(), "nothing about the notice: {e:#}");
            assert_is_event(e);
        }
        assert!(!events[2].to_string().contains(&other));
        // It was given the notice before, so it is still told the notice was withdrawn.
        assert_eq!(events[3]["type"], "notice-withdrawn");
        assert_eq!(events[3]["notice"]["decision"]["clauses"], json!(["RT-1"]));
        assert!(events[3]["notice"].get("category").is_none());
        let audited = deliveries_audited(&b);
        let before: Vec<_> = audited.iter().filter(|a| a.0 == "NA-ICS-VPR-2026.1-demo").collect();
        let after: Vec<_> = audited.iter().filter(|a| a.0 == "NA-ICS-VPR-2026.2-test").collect();
        assert_eq!(before.len(), 1, "{audited:?}");
        assert_eq!(
            (before[0].1.as_str(), before[0].2.as_str(), before[0].3.clone()),
            (n.as_str(), "permit", vec!["SS-1".to_owned()])
        );
        // The refusals, each audited (no clause permits them now) ...
        let mut denied: Vec<&str> = after.iter().filter(|a| a.2 == "deny").map(|a| a.1.as_str()).collect();
        denied.sort_unstable();
        let mut expected = vec![n.as_str(), other.as_str()];
        expected.sort_unstable();
        assert_eq!(denied, expected, "{audited:?}");
        // ... and the retraction.
        let permitted: Vec<_> = after.iter().filter(|a| a.2 == "permit").collect();
        assert_eq!(permitted.len(), 1, "{audited:?}");
        assert_eq!((permitted[0].1.as_str(), permitted[0].3.clone()), (n.as_str(), vec!["RT-1".to_owned()]));
        assert!(audited.iter().all(|a| a.4 == 0), "pushes are recorded with outcome 0");
    }
);

both_backends!(the_feed_replays_events_decided_when_read, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let amb = b.token("amb-cad");
    let acute = b.token("acute-ed");
    let sub = b.subscribe(&amb, &ambulance_subscription(None, json!({"payload": "id-only"})));
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["approval"]["clauses"], json!(["SUB-1"]));
    let feed = |q: &str| b.get(&amb, &format!("/v1/subscriptions/{id}/events{q}"));
    let empty = json_of(feed(""));
    assert_eq!((empty["events"].as_array().unwrap().len(), &empty["feed_id"]), (0, &Value::Null));
    for i in 0..3 {
        publish_address(&b, &acute, &format!("LS{} 1AA", i + 1), "1 Test Street");
    }
    b.wait_subscription(&amb, &id, Duration::from_secs(20), |s| s["events"]["last_event_number"] == 3);
    let all = json_of(feed("?after=0"));
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["event_number"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
    for e in events {
        assert_is_event(e);
        // `id-only`: the existence view, whom to call, nothing more.
        assert_eq!(e["notice"]["decision"]["view"], "existence");
        assert!(e["notice"].get("category").is_none() && e["notice"]["contact"].is_object());
    }
    assert_eq!(all["next_after"], 3);
    assert_eq!(all["tag"], "north-cad");
    let page = json_of(feed("?after=1&limit=1"));
    assert_eq!((page["events"][0]["event_number"].as_i64(), page["next_after"].as_i64()), (Some(2), Some(2)));
    assert_eq!(page["events"][0]["event_id"], events[1]["event_id"], "replays carry the same event ids");
    let reads = b.count("audit_entries WHERE action = 'feed'");
    assert_eq!(reads, 2, "each read that disclosed something is audited; empty polls are not");
    for (q, pointer) in
        [("?after=-1", "/after"), ("?limit=0", "/limit"), ("?limit=x", "/limit"), ("?after=1&after=2", "/after")]
    {
        let r = feed(q);
        assert_eq!(r.status(), 422, "{q}");
        assert_eq!(json_of(r)["errors"][0]["pointer"], pointer, "{q}");
    }
    let gp = b.token("gp-green");
    assert_eq!(b.get(&gp, &format!("/v1/subscriptions/{id}/events")).status(), 403);
    assert_eq!(b.get(&amb, &format!("/v1/subscriptions/{}/events", uuid::Uuid::new_v4())).status(), 404);
});

both_backends!(subscriptions_the_agreement_does_not_allow_outright_wait_for_an_ig_lead, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let police = b.token("police");
    let r = Receiver::start();
    let body = json!({
        "purpose": "crime-prevention", "role": "police-officer", "criteria": {"postcodes": ["LS"]}, "payload": "view",
        "delivery": {"method": "webhook", "url": r.url},
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
    });
    let sub = b.subscribe(&police, &body);
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(sub["status"], "pending-approval");
    assert!(sub["approval"]["awaiting"].as_str().unwrap().contains("IG"));
    let acute = b.token("acute-ed");
    let mut crime = address_notice("LS6 1AA", "1 Test Street");
    crime["lawful_basis"] = json!(["UKGDPR-6-1-e", "UKGDPR-9-2-h", "UKGDPR-10", "CDA98-S115"]);
    crime["restricted"] = json!({"crime_reference": "CRN-2026-0001"});
    assert_eq!(b.publish(&acute, &crime).status(), 201);
    std::thread::sleep(Duration::from_millis(500));
    assert!(r.hits().is_empty(), "nothing is sent before approval");
    assert_eq!(b.get(&police, &format!("/v1/subscriptions/{id}/events")).status(), 409);
    // Only an IG role decides; a refused attempt is audited.
    let ig = b.token("icb-ig");
    let decide = |token: &str, role: &str, decision: &str| {
        b.post_json(token, &format!("/v1/subscriptions/{id}/approval"), &json!({
            "decision": decision, "note": "s115 request reviewed by the Caldicott guardian", "reviewer": {"user_id": "ig-7", "role": role}
        }))
    };
    assert_eq!(decide(&police, "police-officer", "approve").status(), 403);
    assert_eq!(b.count("audit_entries WHERE action = 'subscription-approval' AND decision = 'refused'"), 0);
    let listed = json_of(
        b.http
            .get(b.url("/v1/subscriptions?all=true&status=pending-approval"))
            .bearer_auth(&ig)
            .header("VPR-User-Role", "ig-lead")
            .send()
            .unwrap(),
    );
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(b.get(&ig, "/v1/subscriptions?all=true").status(), 403, "all=true needs an IG role");
    let approved = decide(&ig, "ig-lead", "approve");
    assert_eq!(approved.status(), 200);
    let approved = json_of(approved);
    assert_eq!(approved["status"], "active");
    assert_eq!(approved["approval"]["decided_by"], "ig");
    assert_eq!(decide(&ig, "ig-lead", "approve").status(), 409, "already approved");
    assert_eq!(b.count("audit_entries WHERE action = 'subscription-approval' AND decision = 'active'"), 1);
    crime["subject"] = json!({"address": {"postcode": "LS7 1AA", "line1": "2 Test Street"}});
    assert_eq!(b.publish(&acute, &crime).status(), 201);
    assert!(r.wait_for(1, Duration::from_secs(20)), "{}", b.log());
    let event = verified_claims(&b, &r.bodies()[0])["event"].clone();
    assert_eq!(event["notice"]["decision"]["clauses"], json!(["CP-1"]));
    assert_eq!(event["notice"]["restricted"]["crime_reference"], "CRN-2026-0001");
    // Revoked: nothing new is sent.
    assert_eq!(decide(&ig, "dpo", "revoke").status(), 200);
    crime["subject"] = json!({"address": {"postcode": "LS8 1AA", "line1": "3 Test Street"}});
    assert_eq!(b.publish(&acute, &crime).status(), 201);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(r.deduplicated(), vec![1]);
});

both_backends!(
    a_receiver_down_past_the_retry_window_is_dead_lettered_and_redelivered_on_request,
    |backend: Backend| {
        let Some(b) = TestBroker::start_delivering(backend, |cfg| {
            cfg["delivery"].as_table_mut().unwrap().insert("retry_for_seconds".into(), 2.into());
        }) else {
            return;
        };
        let amb = b.token("amb-cad");
        let acute = b.token("acute-ed");
        let r = Receiver::start();
        r.set_mode(Mode::Fail(503));
        let id = b.subscribe(&amb, &ambulance_subscription(Some(&r.url), json!({})))["id"].as_str().unwrap().to_owned();
        publish_address(&b, &acute, "LS6 1AA", "1 Test Street");
        publish_address(&b, &acute, "LS6 1AB", "2 Test Street");
        let s = b.wait_subscription(&amb, &id, Duration::from_secs(30), |s| s["events"]["state"] == "suspended");
        assert_eq!(s["events"]["delivered_upto"], 0);
        assert!(s["events"]["last_error"].as_str().unwrap().contains("503"), "{s:#}");
        let dead = json_of(b.get(&amb, &format!("/v1/subscriptions/{id}/dead-letters")));
        assert_eq!(dead["dead_letters"][0]["event_number"], 1);
        assert!(dead["dead_letters"][0]["attempts"].as_i64().unwrap() >= 2);
        assert_eq!(dead["undelivered_events"], 2, "later events wait in order; nothing is dropped");
        r.set_mode(Mode::Ack);
        std::thread::sleep(Duration::from_millis(500));
        assert!(r.deduplicated().is_empty(), "suspended until redelivery is asked for");
        let resumed = b.post_json(&amb, &format!("/v1/subscriptions/{id}/redeliver"), &json!({}));
        assert_eq!(resumed.status(), 202);
        assert!(r.wait_for(2, Duration::from_secs(20)));
        assert_eq!(r.deduplicated(), vec![1, 2]);
        // A replay from event 1 sends both again; the receiver de-duplicates.
        assert_eq!(
            b.post_json(&amb, &format!("/v1/subscriptions/{id}/redeliver"), &json!({"from_event": 1})).status(),
            202
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while r.duplicates() < 2 {
            assert!(std::time::Instant::now() < deadline, "the replay never came");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(r.deduplicated(), vec![1, 2]);
        let beyond = b.post_json(&amb, &format!("/v1/subscriptions/{id}/redeliver"), &json!({"from_event": 99}));
        assert_eq!(beyond.status(), 422);
        assert_eq!(json_of(beyond)["errors"][0]["rule"], "beyond-last-event");
        let dead = json_of(b.get(&amb, &format!("/v1/subscriptions/{id}/dead-letters")));
        assert!(dead["dead_letters"][0]["resolved_at"].is_string());
    }
);

both!(subscriptions_are_validated_owned_and_deleted, |b: &TestBroker| {
    let amb = b.token("amb-cad");
    let errors = |body: &Value| -> Vec<(String, String)> {
        let r = b.post_json(&amb, "/v1/subscriptions", body);
        assert_eq!(r.status(), 422, "{body:#}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        json_of(r)["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["pointer"].as_str().unwrap().to_owned(), e["rule"].as_str().unwrap().to_owned()))
            .collect()
    };
    let private = josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let k1 =
        josekit::jwk::Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::Secp256k1).unwrap().to_public_key().unwrap();
    let far = (chrono::Utc::now() + chrono::Duration::days(800)).to_rfc3339();
    for (extra, pointer, rule) in [
        (
            json!({"delivery": {"method": "webhook", "url": "http://cad.example.nhs.uk/hook"}}),
            "/delivery/url",
            "https-required",
        ),
        (
            json!({"delivery": {"method": "webhook", "url": "https://127.0.0.1:9/hook"}}),
            "/delivery/url",
            "url-internal",
        ),
        (json!({"purpose": "marketing"}), "/purpose", "unknown-purpose"),
        (json!({"role": "gp-clinician"}), "/role", "role-not-held"),
        (json!({"expires_at": far}), "/expires_at", "expiry-too-far"),
        (json!({"criteria": {"postcodes": ["L1 1"]}}), "/criteria/postcodes/0", "postcode-prefix"),
        (
            json!({"criteria": {"cohort": [{"person": {"nhs_number": "9990000019"}}]}}),
            "/criteria/cohort/0/person/nhs_number",
            "nhs-number-check-digit",
        ),
        (
            json!({"delivery": {"method": "webhook", "url": "https://cad.example.nhs.uk/hook", "encryption_key": Value::Object(private.as_ref().clone())}}),
            "/delivery/encryption_key/d",
            "falseSchema",
        ),
        (
            json!({"delivery": {"method": "webhook", "url": "https://cad.example.nhs.uk/hook", "encryption_key": Value::Object(k1.as_ref().clone())}}),
            "/delivery/encryption_key",
            "jwk-unusable",
        ),
        (json!({"payload": "everything"}), "/payload", "enum"),
        (json!({"surprise": 1}), "/surprise", "unknown-field"),
    ] {
        let got = errors(&ambulance_subscription(Some("https://cad.example.nhs.uk/hook"), extra.clone()));
        assert!(got.iter().any(|(p, r)| p == pointer && r == rule), "{extra}: {got:?}");
    }
    assert_eq!(b.count("subscriptions"), 0, "bad input changes nothing");
    let ig = b.token("icb-ig");
    assert_eq!(b.post_json(&ig, "/v1/subscriptions", &ambulance_subscription(None, json!({}))).status(), 403);
    // Ownership: another organisation can neither see nor end it.
    let sub = b.subscribe(&amb, &ambulance_subscription(Some("https://cad.example.nhs.uk/hook"), json!({})));
    let id = sub["id"].as_str().unwrap();
    assert_matches_schema_inlined(&sub);
    let gp = b.token("gp-green");
    assert_eq!(b.get(&gp, &format!("/v1/subscriptions/{id}")).status(), 403);
    assert_eq!(b.delete(&gp, &format!("/v1/subscriptions/{id}")).status(), 403);
    let listed = json_of(b.get(&gp, "/v1/subscriptions"));
    assert!(listed["subscriptions"].as_array().unwrap().is_empty());
    let mine = json_of(b.get(&amb, "/v1/subscriptions"));
    assert_eq!(mine["subscriptions"].as_array().unwrap().len(), 1);
    let deleted = b.delete(&amb, &format!("/v1/subscriptions/{id}"));
    assert_eq!(deleted.status(), 200);
    assert_eq!(json_of(deleted)["status"], "deleted");
    assert_eq!(b.delete(&amb, &format!("/v1/subscriptions/{id}")).status(), 409);
    let changed = b.put_json(&amb, &format!("/v1/subscriptions/{id}"), &ambulance_subscription(None, json!({})));
    assert_eq!(changed.status(), 409);
    assert_eq!(b.count("audit_entries WHERE action IN ('subscribe', 'unsubscribe')"), 2);
});

fn assert_matches_schema_inlined(v: &Value) {
    assert_matches_schema("subscription-resource.schema.json", v);
}

both_backends!(a_gp_cohort_subscription_hears_only_of_its_registered_patients, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let gp = b.token("gp-green");
    let acute = b.token("acute-ed");
    let cohort = json!([
        {"person": {"nhs_number": "999 000 0018"}},
        {"person": {"family_name": "Fictional", "birth_date": "1980-02-03", "postcode": "LS6 2BB"}},
    ]);
    let body = json!({
        "purpose": "staff-safety", "role": "gp-receptionist", "criteria": {"cohort": cohort}, "payload": "id-only",
        "delivery": {"method": "feed"}, "expires_at": (chrono::Utc::now() + chrono::Duration::days(60)).to_rfc3339(),
    });
    let sub = b.subscribe(&gp, &body);
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!((sub["status"].as_str(), sub["approval"]["clauses"].clone()), (Some("active"), json!(["SUB-2"])));
    assert_eq!(sub["criteria"]["cohort"]["size"], 2);
    assert!(!sub.to_string().contains("9990000018"), "cohort identifiers are never returned");
    let person = |subject: Value| {
        let mut n = person_notice("9990000018");
        n["subject"] = subject;
        let r = b.publish(&acute, &n);
        assert_eq!(r.status(), 201);
        json_of(r)["id"].as_str().unwrap().to_owned()
    };
    let by_nhs = person(json!({"person": {"nhs_number": "9990000018"}}));
    let by_demographics =
        person(json!({"person": {"family_name": "FICTIONAL", "birth_date": "1980-02-03", "postcode": "ls62bb"}}));
    let stranger = person(json!({"person": {"nhs_number": "9990000026"}}));
    b.wait_subscription(&gp, &id, Duration::from_secs(20), |s| s["events"]["last_event_number"] == 2);
    let feed = json_of(b.get(&gp, &format!("/v1/subscriptions/{id}/events")));
    let ids: Vec<&str> = feed["events"].as_array().unwrap().iter().map(|e| e["notice_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![by_nhs.as_str(), by_demographics.as_str()]);
    assert_eq!(feed["events"][0]["notice"]["decision"]["clauses"], json!(["SS-3"]), "reception: existence only");
    // The stranger registers; the first patient leaves. Later changes follow the new cohort, and
    // the leaver's notice, once given, still reports its changes.
    let change = json!({"add": [{"person": {"nhs_number": "9990000026"}}], "remove": [{"person": {"nhs_number": "9990000018"}}]});
    let changed = b.post_json(&gp, &format!("/v1/subscriptions/{id}/cohort"), &change);
    assert_eq!(changed.status(), 200);
    assert_eq!(json_of(changed)["cohort"]["size"], 2);
    let bad = b.post_json(&gp, &format!("/v1/subscriptions/{id}/cohort"), &json!({"add": [{"telephone": "123"}]}));
    assert_eq!(bad.status(), 422);
    assert_eq!(json_of(bad)["errors"][0]["pointer"], "/add/0/telephone");
    let review = json!({"review_date": day(200), "note": "reviewed"});
    assert_eq!(b.post_json(&acute, &format!("/v1/notices/{stranger}/review"), &review).status(), 200);
    assert_eq!(b.post_json(&acute, &format!("/v1/notices/{by_nhs}/review"), &review).status(), 200);
    b.wait_subscription(&gp, &id, Duration::from_secs(20), |s| s["events"]["last_event_number"] == 4);
    let feed = json_of(b.get(&gp, &format!("/v1/subscriptions/{id}/events?after=2")));
    let got: Vec<(String, bool)> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["notice_id"].as_str().unwrap().to_owned(), e["matched_criteria"].as_bool().unwrap()))
        .collect();
    assert_eq!(got, vec![(stranger.clone(), true), (by_nhs.clone(), false)]);
    // At rest, the cohort is blind indexes only.
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct B {
        #[diesel(sql_type = diesel::sql_types::Text)]
        blind_index: String,
    }
    let rows: Vec<B> = diesel::sql_query("SELECT blind_index FROM subscription_cohort").load(&mut b.db()).unwrap();
    assert_eq!(rows.len(), 2, "the remaining member by demographics and the new one by NHS number");
    for r in rows {
        assert!(!r.blind_index.contains("999000") && !r.blind_index.to_uppercase().contains("FICTIONAL"));
    }
});

#[test]
fn replicas_sharing_one_postgres_deliver_every_event_in_order() {
    let Some(b) = TestBroker::start_delivering(Backend::Postgres, |_| {}) else { return };
    let mut replica = b.replica();
    let amb = b.token("amb-cad");
    let acute = b.token("acute-ed");
    let receivers: Vec<Receiver> = (0..6).map(|_| Receiver::start()).collect();
    for r in &receivers {
        b.subscribe(&amb, &ambulance_subscription(Some(&r.url), json!({})));
    }
    let publish_via = |base: &str, i: usize| {
        let r = b
            .http
            .post(format!("{base}/v1/notices"))
            .bearer_auth(&acute)
            .json(&address_notice(&format!("LS{} 1AA", i % 9 + 1), &format!("{i} Test Street")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    };
    for i in 0..10 {
        publish_via(if i % 2 == 0 { &b.base } else { &replica.base }, i);
    }
    let named: Vec<(String, &Receiver)> = receivers.iter().enumerate().map(|(i, r)| (format!("r{i}"), r)).collect();
    let refs: Vec<(&str, &Receiver)> = named.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    wait_all(&refs, 10, &b);
    // Two live replicas never push the same subscription together: no duplicates at all.
    for r in &receivers {
        assert_eq!((r.deduplicated(), r.duplicates()), ((1..=10).collect::<Vec<i64>>(), 0));
    }
    // One replica dies while pushing; the other carries on from the last acknowledged events.
    for i in 10..20 {
        publish_via(if i % 2 == 0 { &b.base } else { &replica.base }, i);
    }
    replica.kill_hard();
    for i in 20..25 {
        publish_via(&b.base, i);
    }
    wait_all(&refs, 25, &b);
    let mut duplicates = 0;
    for r in &receivers {
        assert_eq!(r.deduplicated(), (1..=25).collect::<Vec<i64>>());
        duplicates += r.duplicates();
    }
    // At least once: what the dead replica had pushed but not yet recorded may come again.
    eprintln!("{duplicates} duplicate pushes after a replica was killed mid-delivery");
}

both_backends!(webhooks_are_delivered_over_tls_to_receivers_the_broker_trusts, |backend: Backend| {
    use crate::receiver::{TestPki, TlsReceiver};
    let pki = TestPki::new();
    let receiver = TlsReceiver::start(&pki);
    // One broker trusts the receiver's private CA (`delivery.ca_file`); one does not.
    let Some(trusting) = TestBroker::start_delivering(backend, |_| {}) else { return };
    std::fs::write(trusting.dir.path().join("webhook-ca.pem"), &pki.ca_pem).unwrap();
    trusting.kill_hard();
    trusting.edit_config(|cfg| {
        cfg["delivery"].as_table_mut().unwrap().insert("ca_file".into(), "webhook-ca.pem".into());
    });
    trusting.spawn();
    let Some(other) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let mut ids = Vec::new();
    for b in [&trusting, &other] {
        let amb = b.token("amb-cad");
        ids.push(
            b.subscribe(&amb, &ambulance_subscription(Some(&receiver.url), json!({})))["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        publish_address(b, &b.token("acute-ed"), "LS6 1AA", "1 Test Street");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while receiver.hits().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing arrived over TLS\n{}", trusting.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let hit = &receiver.hits()[0];
    assert_eq!((hit.number, hit.subscription.as_str()), (1, ids[0].as_str()));
    assert_eq!(verified_claims(&trusting, &hit.body)["event"]["type"], "notice-created");
    // The broker without the CA refuses the receiver's certificate and keeps retrying.
    let amb = other.token("amb-cad");
    let s = other
        .wait_subscription(&amb, &ids[1], Duration::from_secs(20), |s| s["events"]["attempts"].as_i64() >= Some(2));
    assert_eq!(s["events"]["delivered_upto"], 0);
    assert!(s["events"]["last_error"].as_str().unwrap().contains("certificate"), "{s:#}");
    assert!(receiver.hits().iter().all(|h| h.subscription != ids[1]), "nothing reached the receiver without trust");
});

both_backends!(a_receiver_that_redirects_is_not_followed_and_is_retried_until_it_answers, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let amb = b.token("amb-cad");
    let elsewhere = Receiver::start();
    let redirecting = Receiver::start();
    redirecting.set_mode(Mode::Redirect(elsewhere.port));
    let id = b.subscribe(&amb, &ambulance_subscription(Some(&redirecting.url), json!({})))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_address(&b, &b.token("acute-ed"), "LS6 1AA", "1 Test Street");
    let s = b.wait_subscription(&amb, &id, Duration::from_secs(20), |s| s["events"]["attempts"].as_i64() >= Some(2));
    assert_eq!(s["events"]["delivered_upto"], 0, "a redirect does not acknowledge");
    assert!(s["events"]["last_error"].as_str().unwrap().contains("redirects are not followed"), "{s:#}");
    assert!(elsewhere.hits().is_empty(), "the redirect target was never sent the event");
    // Once the receiver answers, the same event arrives, once.
    redirecting.set_mode(Mode::Ack);
    assert!(redirecting.wait_for(1, Duration::from_secs(20)), "{:?}", redirecting.deduplicated());
    b.wait_subscription(&amb, &id, Duration::from_secs(10), |s| s["events"]["delivered_upto"] == 1);
    assert_eq!(redirecting.deduplicated(), vec![1]);
    assert!(elsewhere.hits().is_empty());
});

both_backends!(a_publisher_is_told_of_each_disclosure_of_its_notices, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |_| {}) else { return };
    let acute = b.token("acute-ed");
    let r = Receiver::start();
    let body = json!({
        "purpose": "vpr-management", "role": "security-management-specialist", "topic": "disclosures",
        "criteria": {}, "payload": "view", "delivery": {"method": "webhook", "url": r.url},
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(), "tag": "lsms-alerts",
    });
    let sub = b.subscribe(&acute, &body);
    assert_eq!((sub["status"].as_str(), sub["approval"]["clauses"].clone()), (Some("active"), json!(["SUB-4"])));
    assert_eq!(sub["topic"], "disclosures");
    // A system that cannot publish cannot subscribe to disclosures.
    assert_eq!(b.post_json(&b.token("police"), "/v1/subscriptions", &body).status(), 403);
    let n = publish_address(&b, &acute, "LS6 1AA", "1 Test Street");
    let lookup = |token: &str, role: &str, purpose: &str| {
        let q = json!({"purpose": purpose, "requester": {"user_id": "user-42", "role": role},
                       "subject": {"address": {"postcode": "LS6 1AA", "line1": "1 Test Street"}}});
        assert_eq!(b.post_json(token, "/v1/lookups", &q).status(), 200);
    };
    lookup(&b.token("amb-cad"), "ambulance-dispatcher", "staff-safety");
    lookup(&b.token("police"), "police-officer", "crime-prevention");
    assert!(r.wait_for(2, Duration::from_secs(20)), "{:?}\n{}", r.deduplicated(), b.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(r.deduplicated(), vec![1, 2], "its own pushes are not disclosures to report");
    let events: Vec<Value> = r.bodies().iter().map(|body| verified_claims(&b, body)["event"].clone()).collect();
    for e in &events {
        assert_is_event(e);
        assert_eq!((e["type"].as_str(), e["notice_id"].as_str()), (Some("notice-disclosed"), Some(n.as_str())));
    }
    let (ambulance, police) = (&events[0]["disclosure"], &events[1]["disclosure"]);
    assert_eq!(ambulance["organisation"]["ods_code"], "XAM01");
    assert_eq!(
        (ambulance["role"].as_str(), ambulance["user"].as_str()),
        (Some("ambulance-dispatcher"), Some("user-42"))
    );
    assert_eq!((ambulance["decision"].as_str(), ambulance["clauses"].clone()), (Some("permit"), json!(["SS-1"])));
    assert_eq!(police["decision"], "deny", "refused attempts are reported too");
    // The same events from the feed; each push and read is itself audited, naming no notice.
    let id = sub["id"].as_str().unwrap();
    let feed = json_of(b.get(&acute, &format!("/v1/subscriptions/{id}/events")));
    assert_eq!(feed["events"][0]["disclosure"]["audit_id"], ambulance["audit_id"]);
    assert!(b.count("audit_entries WHERE action = 'access-log-push'") >= 1);
    assert_eq!(b.count("audit_entries WHERE action LIKE 'access-log%' AND notices <> '[]'"), 0);
});
