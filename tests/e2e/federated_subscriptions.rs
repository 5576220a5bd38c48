//! Federated subscriptions: a partner at A subscribes to notices published in B's area. B holds
//! the subscription, decides every event under its agreement and pushes it to A; A passes it on
//! to the partner's webhook. Two real brokers on loopback (A on SQLite, B on PostgreSQL), a real
//! webhook receiver, and restarts of each broker while events are flowing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::federation::{entries_with, federate};
use crate::receiver::{Mode, Receiver};
use crate::subscriptions::{assert_is_event, publish_address, verified_claims, withdraw};
use crate::support::*;

/// Fast retries, and plain-http loopback webhooks (demo mode; the keys are fresh non-demo ones).
fn delivering(cfg: &mut toml::Table) {
    let delivery: toml::Table = toml::from_str(
        "initial_backoff_ms = 100\nmax_backoff_seconds = 1\ntimeout_ms = 3000\nlease_seconds = 2\npoll_ms = 50",
    )
    .expect("delivery table");
    cfg.insert("delivery".into(), delivery.into());
}

/// A (ICS X, SQLite) and B (ICS Y, PostgreSQL), peered with each other.
fn two() -> Option<(TestBroker, TestBroker)> {
    let a = TestBroker::unstarted('X', Backend::Sqlite, delivering)?;
    let b = TestBroker::unstarted('Y', Backend::Postgres, delivering)?;
    federate(&a, 'X', &[('Y', &b)], &[], 2000);
    federate(&b, 'Y', &[('X', &a)], &[], 2000);
    a.spawn();
    b.spawn();
    Some((a, b))
}

fn subscription_at_peer(receiver: &Receiver, extra: Value) -> Value {
    let mut body = json!({
        "purpose": "staff-safety",
        "role": "ambulance-dispatcher",
        "criteria": {"postcodes": ["LS"]},
        "payload": "view",
        "delivery": {"method": "webhook", "url": receiver.url},
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        "tag": "border-cad",
        "peer": "YIC01",
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}

fn wait_events(r: &Receiver, n: usize, a: &TestBroker, b: &TestBroker) {
    assert!(
        r.wait_for(n, Duration::from_secs(60)),
        "the receiver has {:?}, expected {n} events\nA:\n{}\nB:\n{}",
        r.deduplicated(),
        a.log(),
        b.log()
    );
}

/// B's view of the relayed subscription, through its IG lead.
fn at_b(b: &TestBroker) -> Value {
    let r = b.as_ig(b.http.get(b.url("/v1/subscriptions?all=true"))).send().unwrap();
    assert_eq!(r.status(), 200);
    let all = json_of(r);
    let subs = all["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{all:#}");
    subs[0].clone()
}

#[test]
fn a_federated_subscription_gets_the_neighbours_events_in_order_once_each_across_restarts() {
    let Some((a, b)) = two() else { return };
    let receiver = Receiver::start();
    let partner = a.token("amb-cad");
    let sub = a.subscribe(&partner, &subscription_at_peer(&receiver, json!({})));
    let id = sub["id"].as_str().unwrap().to_owned();
    assert_eq!(sub["status"], "active", "{sub:#}");
    assert_eq!(sub["federation"]["peer"], "YIC01");
    // B's agreement decided it, in its own clause for a neighbouring ICS's dispatchers.
    assert_eq!(sub["approval"]["decided_by"], "peer");
    assert_eq!(sub["approval"]["clauses"], json!(["FED-SUB-1"]));
    let held = at_b(&b);
    assert_eq!(held["id"], sub["federation"]["peer_subscription_id"]);
    assert_eq!(held["owner"]["ods_code"], "XAM01");
    assert_eq!(held["federation"]["relayed_by"], "XIC01");
    assert_eq!(held["delivery"]["url"], format!("{}/v1/federation/events/{id}", a.base));
    assert_eq!(held["tag"], Value::Null, "the partner's own label stays at its broker");
    let subscribed = entries_with(&b, "subscribe");
    assert_eq!(subscribed.len(), 1);
    assert_eq!(subscribed[0]["organisation"]["ods_code"], "XAM01", "{:#}", subscribed[0]);
    assert_eq!(subscribed[0]["federation"]["relayed_by"], "XIC01", "{:#}", subscribed[0]);

    // A's own notices are A's to tell: a subscription held at B gets none of them.
    publish_address(&a, &partner, "LS1 1AA", "1 Home Street");
    // B's publishers publish; a notice outside the criteria reaches nobody.
    let publisher = b.token("amb-cad");
    let n1 = publish_address(&b, &publisher, "LS6 2AB", "1 Border Road");
    publish_address(&b, &publisher, "M1 1AA", "1 Elsewhere Street");
    let n2 = publish_address(&b, &publisher, "LS7 1AA", "2 Border Road");
    wait_events(&receiver, 2, &a, &b);

    // A restarts while B publishes: B keeps retrying until A is back.
    a.terminate();
    let n3 = publish_address(&b, &publisher, "LS8 1AA", "3 Border Road");
    std::thread::sleep(Duration::from_millis(800));
    a.spawn();
    wait_events(&receiver, 3, &a, &b);
    let third: Vec<_> = receiver.hits().into_iter().filter(|h| h.number == 3).collect();
    assert!(third.iter().all(|h| h.attempt != "1"), "B tried while A was down, then again: {third:?}");

    // B restarts: its delivery state is durable, and it resumes where it was.
    b.terminate();
    b.spawn();
    let publisher = b.token("amb-cad");
    let n4 = publish_address(&b, &publisher, "LS9 1AA", "4 Border Road");
    wait_events(&receiver, 4, &a, &b);

    // A withdrawal at B reaches A's subscriber, with no more than the notice's existence.
    withdraw(&b, &publisher, &n1);
    wait_events(&receiver, 5, &a, &b);
    assert_eq!(receiver.deduplicated(), vec![1, 2, 3, 4, 5], "in order, each once after de-duplication");

    let bodies = receiver.bodies();
    let claims: Vec<Value> = bodies.iter().map(|body| verified_claims(&a, body)).collect();
    for (c, n) in claims.iter().zip([&n1, &n2, &n3, &n4, &n1]) {
        // Signed by A (the partner's own broker), for the partner's subscription at A.
        assert_eq!(c["sub"], id.as_str());
        assert_eq!(c["aud"], "amb-cad");
        assert_eq!(c["subscription"]["tag"], "border-cad");
        assert_eq!(c["broker"]["id"], "YIC01");
        assert_eq!(c["event"]["notice_id"], n.as_str(), "{c:#}");
        assert_is_event(&c["event"]);
    }
    for c in &claims[..4] {
        assert_eq!(c["event"]["type"], "notice-created");
        // The view B's agreement gives a neighbouring ICS's dispatcher (FED-SS-1).
        assert_eq!(c["event"]["notice"]["decision"]["view"], "summary", "{c:#}");
        assert_eq!(c["event"]["notice"]["decision"]["clauses"], json!(["FED-SS-1"]));
        assert_eq!(c["event"]["notice"]["broker"], "YIC01");
        assert!(c["event"]["notice"].get("subject").is_none(), "a summary shows no address");
    }
    let gone = &claims[4]["event"];
    assert_eq!(gone["type"], "notice-withdrawn");
    assert_eq!(gone["notice"]["decision"]["view"], "existence");
    assert_eq!(gone["notice"]["decision"]["clauses"], json!(["FED-RT-1"]));

    // Both sides audit: B each delivery, decided for the remote partner and naming A; A each
    // event passed on, naming B's notice, view and clauses (never the content).
    let delivered = entries_with(&b, "deliver");
    assert!(!delivered.is_empty());
    for e in &delivered {
        assert_eq!(e["federation"]["relayed_by"], "XIC01", "{e:#}");
        assert_eq!(e["organisation"]["ods_code"], "XAM01");
    }
    let passed: Vec<Value> = entries_with(&a, "peer-event");
    let noticed: std::collections::BTreeSet<String> = passed
        .iter()
        .flat_map(|e| e["federation"]["peers"][0]["notices"].as_array().cloned().unwrap_or_default())
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(noticed, [&n1, &n2, &n3, &n4].iter().map(|s| s.to_string()).collect());
    for e in &passed {
        assert_eq!(e["federation"]["peers"][0]["broker"], "YIC01");
        assert!(!e.to_string().contains("Border Road"), "no content in A's audit: {e}");
    }
    // Nothing of B's notices rests at A: only A's own notice, and no event row.
    assert_eq!(a.count("notices"), 1);
    assert_eq!(a.count("subscription_events"), 0);

    // A replay of a push B signed is acknowledged, not passed on again; a push B signed for
    // another subscription, for another system, or long ago is refused.
    let peer_sub = held["id"].as_str().unwrap();
    let b_key =
        vpr_auth::SigningKeyFile::from_json(&std::fs::read_to_string(b.dir.path().join("signing-1.jwk")).unwrap())
            .unwrap();
    let b_keys = vpr_auth::BrokerKeys::new(&[b_key]).unwrap();
    let first = &claims[0]["event"];
    let signed = |sub: &str, aud: &str, age: i64| {
        let c = json!({"sub": sub, "aud": aud, "iat": chrono::Utc::now().timestamp() - age, "jti": first["event_id"],
                       "event": first});
        b_keys.sign_event(&c).unwrap()
    };
    let push = |body: String| {
        let r = a
            .http
            .post(a.url(&format!("/v1/federation/events/{id}")))
            .header("Content-Type", "application/jose")
            .body(body)
            .send()
            .unwrap();
        r.status().as_u16()
    };
    let hits = receiver.hits().len();
    assert_eq!(push(signed(peer_sub, "amb-cad", 0)), 204);
    assert_eq!(push(signed(&uuid::Uuid::new_v4().to_string(), "amb-cad", 0)), 403);
    assert_eq!(push(signed(peer_sub, "police", 0)), 422);
    assert_eq!(push(signed(peer_sub, "amb-cad", 3600)), 403);
    assert_eq!(receiver.hits().len(), hits, "nothing replayed reached the partner");

    // The partner's webhook fails: A answers B 502 and B retries until it is back.
    receiver.set_mode(Mode::Fail(503));
    let n5 = publish_address(&b, &publisher, "LS10 1AA", "5 Border Road");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !at_b(&b)["events"]["last_error"].as_str().unwrap_or_default().contains("502") {
        assert!(Instant::now() < deadline, "B saw no failure: {:#}", at_b(&b));
        std::thread::sleep(Duration::from_millis(50));
    }
    receiver.set_mode(Mode::Ack);
    wait_events(&receiver, 6, &a, &b);
    assert_eq!(receiver.deduplicated(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(verified_claims(&a, receiver.bodies().last().unwrap())["event"]["notice_id"], n5.as_str());

    // Deleted at A while B is down: B is told at its next push (410 Gone) and ends it.
    b.terminate();
    let r = a.delete(&partner, &format!("/v1/subscriptions/{id}"));
    assert_eq!(r.status(), 200);
    b.spawn();
    let publisher = b.token("amb-cad");
    publish_address(&b, &publisher, "LS11 1AA", "6 Border Road");
    let deadline = Instant::now() + Duration::from_secs(40);
    while at_b(&b)["status"] != "deleted" {
        assert!(Instant::now() < deadline, "B never ended it: {:#}\n{}", at_b(&b), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = entries_with(&b, "unsubscribe");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["outcome"], 410);
    publish_address(&b, &publisher, "LS12 1AA", "7 Border Road");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.deduplicated().len(), 6, "nothing more after the end");
}

#[test]
fn the_neighbours_agreement_refuses_what_it_does_not_allow_and_forged_pushes_are_refused() {
    let Some((a, b)) = two() else { return };
    let receiver = Receiver::start();
    // B answers peers for staff safety and direct care only: a police force's subscription for
    // crime prevention is refused there, audited there, and nothing is stored at A.
    let police = a.token("police");
    let body = subscription_at_peer(&receiver, json!({"purpose": "crime-prevention", "role": "police-officer"}));
    let r = a.post_json(&police, "/v1/subscriptions", &body);
    let status = r.status().as_u16();
    let p = json_of(r);
    assert_eq!(status, 403, "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("YIC01"), "{p:#}");
    assert_eq!(a.count("subscriptions"), 0);
    assert_eq!(b.count("subscriptions"), 0);
    let refused = entries_with(&b, "subscribe");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["decision"], "refused");
    // A subscription the peer's agreement does not start outright waits for its IG leads.
    let everywhere = subscription_at_peer(&receiver, json!({"criteria": {}}));
    let pending = a.subscribe(&a.token("amb-cad"), &everywhere);
    assert_eq!(pending["status"], "pending-approval", "{pending:#}");
    // Bad input is refused at A before anything is asked of B.
    let bad = subscription_at_peer(&receiver, json!({"peer": "QIC99"}));
    let r = a.post_json(&a.token("amb-cad"), "/v1/subscriptions", &bad);
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["rule"], "unknown-peer");
    let feed = subscription_at_peer(&receiver, json!({"delivery": {"method": "feed"}}));
    let r = a.post_json(&a.token("amb-cad"), "/v1/subscriptions", &feed);
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["rule"], "webhook-for-peer");

    // A push to A that B did not sign is refused; one for no subscription is told it is gone.
    let id = pending["id"].as_str().unwrap();
    let forger =
        vpr_auth::BrokerKeys::new(&[vpr_auth::SigningKeyFile::generate("broker-y-1", false).unwrap()]).unwrap();
    let peer_id = pending["federation"]["peer_subscription_id"].as_str().unwrap();
    let claims = json!({"sub": peer_id, "iat": chrono::Utc::now().timestamp(), "jti": uuid::Uuid::new_v4(),
                        "event": {"event_id": uuid::Uuid::new_v4(), "event_number": 1, "type": "withheld"}});
    let forged = forger.sign_event(&claims).unwrap();
    let push = |path: String, body: String| {
        let r = a.http.post(a.url(&path)).header("Content-Type", "application/jose").body(body).send().unwrap();
        let status = r.status().as_u16();
        (status, json_of(r))
    };
    let (status, p) = push(format!("/v1/federation/events/{id}"), forged.clone());
    assert_eq!(status, 403, "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("not signed"), "{p:#}");
    let (status, _) = push(format!("/v1/federation/events/{}", uuid::Uuid::new_v4()), forged);
    assert_eq!(status, 410);
    assert!(receiver.hits().is_empty());

    // B's IG leads decide it there; A's copy follows (reported at once, and with every push).
    let ig = b.token("icb-ig");
    let decide = |decision: &str| {
        let held = at_b(&b)["id"].as_str().unwrap().to_owned();
        let r = b.post_json(
            &ig,
            &format!("/v1/subscriptions/{held}/approval"),
            &json!({
                "decision": decision, "note": "border dispatch cover agreed with the neighbouring ICB",
                "reviewer": {"user_id": "ig-9", "role": "ig-lead"}
            }),
        );
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    };
    let status_at_a = || json_of(a.get(&a.token("amb-cad"), &format!("/v1/subscriptions/{id}")))["status"].clone();
    let wait_status = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status_at_a() != want {
            assert!(Instant::now() < deadline, "A's copy is {} not {want}\n{}", status_at_a(), b.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    decide("approve");
    wait_status("active");
    decide("revoke");
    wait_status("revoked");
    let decided = entries_with(&a, "subscription-approval");
    assert_eq!(decided.len(), 2, "{decided:#?}");
    assert_eq!(decided[0]["organisation"]["ods_code"], "YIC01");

    // Deleted at A while B is up: ended at B at once.
    let r = a.delete(&a.token("amb-cad"), &format!("/v1/subscriptions/{id}"));
    assert_eq!(r.status(), 200);
    assert_eq!(at_b(&b)["status"], "deleted");
    assert_eq!(entries_with(&b, "unsubscribe").len(), 1);
}

#[test]
fn a_delivery_whose_retries_ran_out_at_the_peer_is_resumed_and_replayed_from_the_asking_broker() {
    let Some(a) = TestBroker::unstarted('X', Backend::Sqlite, delivering) else { return };
    let Some(b) = TestBroker::unstarted('Y', Backend::Sqlite, |cfg| {
        delivering(cfg);
        let d = cfg.get_mut("delivery").and_then(toml::Value::as_table_mut).unwrap();
        d.insert("retry_for_seconds".into(), 1.into());
    }) else {
        return;
    };
    federate(&a, 'X', &[('Y', &b)], &[], 2000);
    federate(&b, 'Y', &[('X', &a)], &[], 2000);
    a.spawn();
    b.spawn();
    let receiver = Receiver::start();
    receiver.set_mode(Mode::Fail(500));
    let partner = a.token("amb-cad");
    let sub = a.subscribe(&partner, &subscription_at_peer(&receiver, json!({})));
    let id = sub["id"].as_str().unwrap().to_owned();
    publish_address(&b, &b.token("amb-cad"), "LS6 2AB", "1 Border Road");
    let deadline = Instant::now() + Duration::from_secs(30);
    while at_b(&b)["events"]["state"] != "suspended" {
        assert!(Instant::now() < deadline, "B never gave up: {:#}", at_b(&b));
        std::thread::sleep(Duration::from_millis(100));
    }
    receiver.set_mode(Mode::Ack);
    // The partner asks its own broker, which asks B.
    let r = a.post_json(&partner, &format!("/v1/subscriptions/{id}/redeliver"), &json!({}));
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    wait_events(&receiver, 1, &a, &b);
    // A replay from the first event passes it on again (the partner de-duplicates it).
    let r = a.post_json(&partner, &format!("/v1/subscriptions/{id}/redeliver"), &json!({"from_event": 1}));
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.duplicates() == 0 {
        assert!(Instant::now() < deadline, "the replay never arrived\n{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(receiver.deduplicated(), vec![1]);
    // A shows how far events were passed on.
    let shown = json_of(a.get(&partner, &format!("/v1/subscriptions/{id}")));
    assert_eq!(shown["events"]["delivered_upto"], 1, "{shown:#}");
    assert_eq!(shown["events"]["last_event_number"], 1, "{shown:#}");
    let r = a.post_json(&partner, &format!("/v1/subscriptions/{id}/redeliver"), &json!({"from_event": 9}));
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["rule"], "beyond-last-event");
}
