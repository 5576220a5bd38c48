//! Federation between ICS brokers: three real brokers on loopback, each with its own registry,
//! agreement, keys and database (one on PostgreSQL), peered with each other. A look-up at A
//! reaches B's and C's notices, decided and audited by them; faulty peers never break A's answer;
//! relays that are forged, replayed, expired or vouch wrongly are refused; nothing is relayed on.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vpr_auth::{BrokerKeys, RelayedRequester, SigningKeyFile};
use vpr_domain::vocab::OrgType;

use crate::support::*;

const NHS: &str = "9990000018";

/// An ICS's broker id: its ICB's ODS code.
fn id_of(ics: char) -> String {
    format!("{ics}IC01")
}

/// The partners of ICS `ics` a peer may vouch for (every test partner, with its type).
fn vouches(ics: char) -> Vec<Value> {
    PARTNERS.iter().map(|(_, ods, t, _, _)| json!({"ods_code": format!("{ics}{}", &ods[1..]), "type": t})).collect()
}

/// A peer entry for `peer` (ICS `ics`) in another broker's config.
fn peer_entry(dir: &std::path::Path, ics: char, peer: &TestBroker) -> toml::Value {
    let jwks = dir.join(format!("{ics}.jwks.json"));
    std::fs::write(&jwks, peer.jwks().to_string()).expect("write jwks");
    let v = json!({
        "id": id_of(ics), "name": format!("Test ICS {ics}"), "base_url": peer.base,
        "jwks": jwks.display().to_string(), "vouches_for": vouches(ics),
    });
    serde_json::from_value(v).expect("toml value")
}

/// Configures `b` (ICS `ics`) to federate with `peers`, with the given time budget.
pub(crate) fn federate(
    b: &TestBroker,
    ics: char,
    peers: &[(char, &TestBroker)],
    extra: &[(char, String)],
    budget_ms: i64,
) {
    let dir = b.dir.path().to_owned();
    b.edit_config(|cfg| {
        let mut list: Vec<toml::Value> = peers.iter().map(|(i, p)| peer_entry(&dir, *i, p)).collect();
        for (i, url) in extra {
            // A stand-in peer at `url`, signing with a key nobody holds.
            let key = SigningKeyFile::generate(&format!("{i}-stub"), false).expect("key");
            let jwks =
                json!({"keys": [Value::Object(vpr_auth::keys::public_jwk(&key.jwk).expect("pub").as_ref().clone())]});
            let path = dir.join(format!("{i}.jwks.json"));
            std::fs::write(&path, jwks.to_string()).expect("jwks");
            let v = json!({"id": id_of(*i), "name": format!("Faulty ICS {i}"), "base_url": url,
                           "jwks": path.display().to_string(), "vouches_for": []});
            list.push(serde_json::from_value(v).expect("toml"));
        }
        let f = json!({"id": id_of(ics), "lookup_budget_ms": budget_ms, "circuit_failures": 2,
                       "circuit_open_seconds": 60, "peers": []});
        let mut table: toml::Table = serde_json::from_value(f).expect("table");
        table.insert("peers".into(), toml::Value::Array(list));
        cfg.insert("federation".into(), toml::Value::Table(table));
        cfg.insert("demo".into(), true.into());
    });
}

/// Three ICSs, X (A, SQLite), Y (B, PostgreSQL) and Z (C, SQLite), each peered with the others.
fn three() -> Option<(TestBroker, TestBroker, TestBroker)> {
    let a = TestBroker::unstarted('X', Backend::Sqlite, |_| {})?;
    let b = TestBroker::unstarted('Y', Backend::Postgres, |_| {})?;
    let c = TestBroker::unstarted('Z', Backend::Sqlite, |_| {})?;
    federate(&a, 'X', &[('Y', &b), ('Z', &c)], &[], 2000);
    federate(&b, 'Y', &[('X', &a), ('Z', &c)], &[], 2000);
    federate(&c, 'Z', &[('X', &a), ('Y', &b)], &[], 2000);
    a.spawn();
    b.spawn();
    c.spawn();
    Some((a, b, c))
}

fn lookup(b: &TestBroker, client: &str, role: &str, purpose: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"purpose": purpose, "requester": {"user_id": format!("{client}-user"), "role": role},
                          "subject": {"person": {"nhs_number": NHS}}});
    if let (Value::Object(m), Value::Object(x)) = (&mut body, extra) {
        m.extend(x);
    }
    let r = b.http.post(b.url("/v1/lookups")).bearer_auth(b.token(client)).json(&body).send().unwrap();
    (r.status().as_u16(), json_of(r))
}

fn publish(b: &TestBroker, client: &str) -> String {
    let r = b.publish(&b.token(client), &person_notice(NHS));
    assert_eq!(r.status(), 201);
    json_of(r)["id"].as_str().unwrap().to_owned()
}

pub(crate) fn entries_with(b: &TestBroker, action: &str) -> Vec<Value> {
    b.audit_entries_via_review().into_iter().filter(|e| e["action"] == action).collect()
}

fn result_from<'a>(found: &'a Value, broker: &str) -> Vec<&'a Value> {
    found["results"].as_array().unwrap().iter().filter(|r| r["broker"] == broker).collect()
}

#[test]
fn a_lookup_reaches_the_neighbours_notices_at_the_views_their_agreements_decide() {
    let Some((a, b, c)) = three() else { return };
    let local = publish(&a, "amb-cad");
    let remote = publish(&b, "amb-cad");
    let rid = request_id("federated");
    let body = json!({"purpose": "staff-safety", "requester": {"user_id": "dispatcher-7", "role": "ambulance-dispatcher"},
                      "subject": {"person": {"nhs_number": NHS}}});
    let r = a
        .http
        .post(a.url("/v1/lookups"))
        .bearer_auth(a.token("amb-cad"))
        .header("X-Request-Id", &rid)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let found = json_of(r);
    assert_eq!(found["incomplete"], json!([]), "{found}");
    let here = result_from(&found, "XIC01");
    assert_eq!(here.len(), 1);
    assert_eq!(here[0]["id"], local.as_str());
    // B's notice, at the view B's agreement gives a neighbouring ICS's dispatcher (FED-SS-1).
    let there = result_from(&found, "YIC01");
    assert_eq!(there.len(), 1, "{found}");
    assert_eq!(there[0]["id"], remote.as_str());
    assert_eq!(there[0]["decision"]["view"], "summary");
    assert_eq!(there[0]["decision"]["clauses"], json!(["FED-SS-1"]));
    assert_eq!(there[0]["decision"]["agreement_version"], "Y-ICS-test");
    assert_eq!(there[0]["publisher"]["ods_code"], "YAM01");
    assert!(there[0]["contact"]["telephone"].is_string(), "whom to call: {}", there[0]);
    // Minimised at B: a summary shows no identifiers, no incident date, no restricted fields.
    for hidden in ["subject", "incident_date", "restricted", "version"] {
        assert!(there[0].get(hidden).is_none(), "{hidden} shown: {}", there[0]);
    }
    assert_eq!(there[0]["category"], "physical-assault");
    assert_matches_schema("disclosed-notice.schema.json", there[0]);
    assert!(result_from(&found, "ZIC01").is_empty(), "C holds nothing about the subject");
    // A's entry names what each peer answered (ids, views, clauses; never the content).
    let at_a = entries_with(&a, "lookup").into_iter().find(|e| e["request_id"] == rid.as_str()).expect("A's entry");
    let peers = at_a["federation"]["peers"].as_array().expect("peers recorded");
    let b_rec = peers.iter().find(|p| p["broker"] == "YIC01").unwrap();
    assert_eq!(b_rec["outcome"], "answered");
    assert_eq!(b_rec["notices"][0]["id"], remote.as_str());
    assert_eq!(b_rec["notices"][0]["view"], "summary");
    assert!(!b_rec.to_string().contains("Fictional"), "no content in A's entry");
    assert_eq!(peers.iter().find(|p| p["broker"] == "ZIC01").unwrap()["outcome"], "answered");
    // B's entry records the disclosure to the remote requester, relayed by A, under the same id.
    let at_b = entries_with(&b, "relayed-lookup");
    assert_eq!(at_b.len(), 1);
    let e = &at_b[0];
    assert_eq!(e["request_id"], rid.as_str());
    assert_eq!(e["organisation"]["ods_code"], "XAM01");
    assert_eq!(e["user"], "dispatcher-7");
    assert_eq!(e["federation"]["relayed_by"], "XIC01");
    assert_eq!(e["decision"], "permit");
    assert_eq!(e["notices"][0]["id"], remote.as_str());
    // IG's CSV export says so too, in its last column.
    let csv = b
        .as_ig(b.http.get(b.url("/v1/audit/entries?action=relayed-lookup&format=csv")))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let header = csv.lines().next().unwrap_or_default();
    assert!(header.ends_with(",federation"), "{header}");
    assert!(csv.lines().nth(1).is_some_and(|l| l.ends_with(",relayed by XIC01")), "{csv}");
    let csv_a =
        a.as_ig(a.http.get(a.url("/v1/audit/entries?action=lookup&format=csv"))).send().unwrap().text().unwrap();
    assert!(csv_a.contains("YIC01:answered:1") && csv_a.contains("ZIC01:answered:0"), "{csv_a}");
    // B's publisher sees the remote reader in its access log.
    let log = b.get(&b.token("amb-cad"), &format!("/v1/notices/{remote}/access-log"));
    assert_eq!(log.status(), 200);
    let log = json_of(log);
    let read = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "relayed-lookup")
        .expect("the remote read");
    assert_eq!(read["organisation"]["ods_code"], "XAM01", "{log}");
    assert_eq!(read["relayed_by"], "XIC01", "{log}");
    // No relayed request is relayed on: C heard from A only, once.
    let at_c = entries_with(&c, "relayed-lookup");
    assert_eq!(at_c.len(), 1, "{at_c:?}");
    assert_eq!(at_c[0]["federation"]["relayed_by"], "XIC01");
    assert!(entries_with(&a, "relayed-lookup").is_empty(), "B and C did not relay back to A");
    // Every broker can ask: C finds A's and B's notices.
    let (status, from_c) = lookup(&c, "amb-cad", "ambulance-dispatcher", "staff-safety", json!({}));
    assert_eq!(status, 200);
    assert_eq!(result_from(&from_c, "XIC01").len(), 1, "{from_c}");
    assert_eq!(result_from(&from_c, "YIC01").len(), 1, "{from_c}");
    assert_eq!(from_c["incomplete"], json!([]));
}

#[test]
fn a_peer_that_would_vouch_for_this_icss_own_partner_is_refused_at_start_up() {
    let Some(a) = TestBroker::unstarted('X', Backend::Sqlite, |_| {}) else { return };
    let b = TestBroker::unstarted('Y', Backend::Sqlite, |_| {}).unwrap();
    federate(&a, 'X', &[('Y', &b)], &[], 300);
    // Y's entry vouches for X's own ambulance trust.
    let text = std::fs::read_to_string(a.config_path()).unwrap().replace("\"YAM01\"", "\"XAM01\"");
    std::fs::write(a.config_path(), text).unwrap();
    let out = std::process::Command::new(binary()).args(["serve", "--config"]).arg(a.config_path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not vouch for `XAM01`"), "{err}");
}

#[test]
fn the_answering_agreement_refuses_what_it_does_not_allow_and_local_scope_asks_no_one() {
    let Some((a, b, _c)) = three() else { return };
    publish(&b, "amb-cad");
    // Police of X for crime prevention: A's agreement lets them ask, B's answers peers only for
    // staff safety and direct care.
    let (status, found) = lookup(&a, "police", "police-officer", "crime-prevention", json!({}));
    assert_eq!(status, 200);
    assert!(result_from(&found, "YIC01").is_empty());
    let inc = found["incomplete"].as_array().unwrap();
    let b_inc = inc.iter().find(|i| i["broker"] == "YIC01").expect("B listed");
    assert_eq!(b_inc["reason"], "refused");
    assert!(b_inc["detail"].as_str().unwrap().contains("staff-safety"), "{b_inc}");
    let refused_at_b = entries_with(&b, "relayed-lookup");
    assert_eq!(refused_at_b.len(), 1);
    assert_eq!(refused_at_b[0]["decision"], "refused");
    assert_eq!(refused_at_b[0]["outcome"], 403);
    // A GP receptionist across the border learns only that a notice exists (FED-SS-2).
    let (_, found) = lookup(&a, "gp-green", "gp-receptionist", "staff-safety", json!({}));
    assert_eq!(result_from(&found, "YIC01")[0]["decision"]["view"], "existence");
    // A holds nothing about the subject, but its entry records a disclosure: B's.
    let at_a = entries_with(&a, "lookup");
    let gp = at_a.iter().find(|e| e["role"] == "gp-receptionist").expect("A's entry");
    assert_eq!(gp["decision"], "permit", "{gp}");
    assert!(gp["notices"].as_array().unwrap().is_empty());
    // Local scope: no peer asked.
    let before = entries_with(&b, "relayed-lookup").len();
    let (status, found) = lookup(&a, "amb-cad", "ambulance-dispatcher", "staff-safety", json!({"scope": "local"}));
    assert_eq!(status, 200);
    assert!(result_from(&found, "YIC01").is_empty());
    assert_eq!(entries_with(&b, "relayed-lookup").len(), before);
    // A requester refused at A is not vouched for to anyone.
    let (status, _) = lookup(&a, "amb-cad", "gp-clinician", "staff-safety", json!({}));
    assert_eq!(status, 403);
    assert_eq!(entries_with(&b, "relayed-lookup").len(), before);
}

/// A stand-in for a faulty peer: answers the token endpoint, then `lookup` for the rest.
fn faulty_peer(lookup: fn(&mut std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 16384];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.starts_with("POST /oauth2/token") {
                    let body = r#"{"access_token":"stub","token_type":"Bearer","expires_in":300}"#;
                    let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                } else {
                    lookup(&mut s);
                }
            });
        }
    });
    url
}

fn slow(s: &mut std::net::TcpStream) {
    std::thread::sleep(Duration::from_secs(3));
    let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}");
}

fn error500(s: &mut std::net::TcpStream) {
    let _ = write!(s, "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

#[test]
fn peers_that_are_down_slow_or_failing_leave_the_local_answer_intact() {
    let Some(a) = TestBroker::unstarted('X', Backend::Postgres, |_| {}) else { return };
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let extra = [('P', down), ('Q', faulty_peer(slow)), ('R', faulty_peer(error500))];
    federate(&a, 'X', &[], &extra, 300);
    a.spawn();
    let local = publish(&a, "amb-cad");
    let started = Instant::now();
    let (status, found) = lookup(&a, "amb-cad", "ambulance-dispatcher", "staff-safety", json!({}));
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(found["results"].as_array().unwrap().len(), 1);
    assert_eq!(found["results"][0]["id"], local.as_str());
    assert!(took < Duration::from_millis(1500), "the slow peer held the answer for {took:?}");
    let reason = |id: &str| {
        found["incomplete"].as_array().unwrap().iter().find(|i| i["broker"] == id).map(|i| i["reason"].clone())
    };
    assert_eq!(reason("PIC01"), Some(json!("unavailable")), "{found}");
    assert_eq!(reason("QIC01"), Some(json!("timeout")), "{found}");
    assert_eq!(reason("RIC01"), Some(json!("unavailable")), "{found}");
    let entry = entries_with(&a, "lookup").into_iter().next().unwrap();
    assert_eq!(entry["decision"], "permit");
    assert_eq!(entry["federation"]["peers"].as_array().unwrap().len(), 3);
    // After two failures each circuit opens: the peers are skipped, and shown so.
    lookup(&a, "amb-cad", "ambulance-dispatcher", "staff-safety", json!({}));
    let (_, third) = lookup(&a, "amb-cad", "ambulance-dispatcher", "staff-safety", json!({}));
    let skipped: Vec<&Value> =
        third["incomplete"].as_array().unwrap().iter().filter(|i| i["reason"] == "skipped").collect();
    assert_eq!(skipped.len(), 3, "{third}");
    let ready = json_of(a.http.get(a.url("/readyz")).send().unwrap());
    assert_eq!(ready["status"], "ready");
    assert!(ready["peers"].as_array().unwrap().iter().all(|p| p["circuit"] == "open"), "{ready}");
    let metrics = a.http.get(a.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("vpr_federation_circuit_open{peer=\"QIC01\"} 1"), "{metrics}");
    let timed_out = |l: &&str| {
        l.starts_with("vpr_federation_requests_total{")
            && l.contains("peer=\"QIC01\"")
            && l.contains("outcome=\"timeout\"")
    };
    assert!(metrics.lines().any(|l| timed_out(&l)), "{metrics}");
}

/// Acting as broker A towards B: A's keys, a federation token from B.
struct AsPeer {
    keys: BrokerKeys,
    token: String,
}

fn as_peer(a: &TestBroker, b: &TestBroker) -> AsPeer {
    let text = std::fs::read_to_string(a.dir.path().join("signing-1.jwk")).unwrap();
    let keys = BrokerKeys::new(&[SigningKeyFile::from_json(&text).unwrap()]).unwrap();
    let assertion = keys.client_assertion("XIC01", &b.token_endpoint(), chrono::Utc::now()).unwrap();
    let r = b.request_token(&assertion, Some("federation"));
    assert_eq!(r.status(), 200);
    let token = json_of(r)["access_token"].as_str().unwrap().to_owned();
    AsPeer { keys, token }
}

fn requester(org: &str, subject: &Value) -> RelayedRequester {
    RelayedRequester {
        org: org.into(),
        org_type: OrgType::AmbulanceTrust,
        system: "amb-cad".into(),
        user: "dispatcher-1".into(),
        role: "ambulance-dispatcher".into(),
        purpose: "staff-safety".into(),
        context_ref: None,
        break_glass: None,
        subject_sha256: vpr_app::federation::ask::subject_digest(subject),
    }
}

fn relayed(b: &TestBroker, token: &str, relay: &str, subject: &Value) -> (u16, Value) {
    let r = b
        .http
        .post(b.url("/v1/federation/lookups"))
        .bearer_auth(token)
        .json(&json!({"relay": relay, "subject": subject}))
        .send()
        .unwrap();
    (r.status().as_u16(), json_of(r))
}

#[test]
fn forged_replayed_expired_and_wrongly_vouched_relays_are_refused() {
    let Some((a, b, _c)) = three() else { return };
    publish(&b, "amb-cad");
    let peer = as_peer(&a, &b);
    let subject = json!({"person": {"nhs_number": NHS}});
    let now = chrono::Utc::now();
    let good = peer.keys.sign_relay("XIC01", "YIC01", &requester("XAM01", &subject), now).unwrap();
    let (status, answer) = relayed(&b, &peer.token, &good, &subject);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 1);
    let rule = |(status, p): (u16, Value)| {
        assert_eq!(status, 403, "{p}");
        assert_eq!(p["errors"][0]["pointer"], "/relay", "{p}");
        p["errors"][0]["rule"].as_str().unwrap().to_owned()
    };
    assert_eq!(rule(relayed(&b, &peer.token, &good, &subject)), "replay");
    let forger = BrokerKeys::new(&[SigningKeyFile::generate("broker-test-1", false).unwrap()]).unwrap();
    let forged = forger.sign_relay("XIC01", "YIC01", &requester("XAM01", &subject), now).unwrap();
    assert_eq!(rule(relayed(&b, &peer.token, &forged, &subject)), "signature");
    let old = peer
        .keys
        .sign_relay("XIC01", "YIC01", &requester("XAM01", &subject), now - chrono::Duration::seconds(200))
        .unwrap();
    assert_eq!(rule(relayed(&b, &peer.token, &old, &subject)), "expired");
    // Just past its `exp` but inside the leeway it is still accepted, once.
    let late = peer
        .keys
        .sign_relay("XIC01", "YIC01", &requester("XAM01", &subject), now - chrono::Duration::seconds(70))
        .unwrap();
    assert_eq!(relayed(&b, &peer.token, &late, &subject).0, 200);
    assert_eq!(rule(relayed(&b, &peer.token, &late, &subject)), "replay");
    let stranger = peer.keys.sign_relay("XIC01", "YIC01", &requester("QAM99", &subject), now).unwrap();
    assert_eq!(rule(relayed(&b, &peer.token, &stranger, &subject)), "vouch");
    let other_subject = json!({"person": {"nhs_number": "9990000026"}});
    let swapped = peer.keys.sign_relay("XIC01", "YIC01", &requester("XAM01", &subject), now).unwrap();
    assert_eq!(rule(relayed(&b, &peer.token, &swapped, &other_subject)), "subject");
    // Each refusal is audited at B; only the first and the late relay disclosed anything.
    let entries = entries_with(&b, "relayed-lookup");
    assert_eq!(entries.len(), 8);
    assert_eq!(entries.iter().filter(|e| e["decision"] == "refused").count(), 6);
    // A partner's token cannot relay (it cannot hold the federation scope), and a peer's token
    // is good for federation only.
    let fresh = peer.keys.sign_relay("XIC01", "YIC01", &requester("XAM01", &subject), now).unwrap();
    let (status, p) = relayed(&b, &b.token("amb-cad"), &fresh, &subject);
    assert_eq!(status, 403);
    assert_eq!(p["type"], "urn:vpr-broker:problem:insufficient-scope", "{p}");
    let r = b.http.post(b.url("/v1/lookups")).bearer_auth(&peer.token).json(&json!({})).send().unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn a_peers_keys_are_fetched_from_its_url_and_a_rotation_is_picked_up() {
    let Some(a) = TestBroker::unstarted('X', Backend::Sqlite, |_| {}) else { return };
    let Some(b) = TestBroker::unstarted('Y', Backend::Sqlite, |_| {}) else { return };
    federate(&a, 'X', &[('Y', &b)], &[], 2000);
    federate(&b, 'Y', &[('X', &a)], &[], 2000);
    // A keeps asking B while B does not yet accept its signatures (no circuit opens).
    a.edit_config(|cfg| {
        let f = cfg.get_mut("federation").and_then(toml::Value::as_table_mut).unwrap();
        f.insert("circuit_failures".into(), 100.into());
    });
    // B takes A's keys from A's published JWKS rather than from a file.
    b.edit_config(|cfg| {
        let f = cfg.get_mut("federation").and_then(toml::Value::as_table_mut).unwrap();
        f.insert("jwks_min_interval_seconds".into(), 1.into());
        let peer = f.get_mut("peers").and_then(toml::Value::as_array_mut).unwrap()[0].as_table_mut().unwrap();
        peer.remove("jwks");
        peer.insert("jwks_url".into(), format!("{}/.well-known/jwks.json", a.base).into());
    });
    b.spawn();
    // B starts whether or not A answers: until it does, A's signatures are refused.
    let ready = json_of(b.http.get(b.url("/readyz")).send().unwrap());
    assert_eq!(ready["peers"][0]["keys"], 0, "{ready:#}");
    a.spawn();
    let remote = publish(&b, "amb-cad");
    let found = |a: &TestBroker| {
        let (status, found) = lookup(a, "amb-cad", "ambulance-dispatcher", "staff-safety", json!({}));
        assert_eq!(status, 200);
        found
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = found(&a);
        if result_from(&f, "YIC01").len() == 1 {
            assert_eq!(result_from(&f, "YIC01")[0]["id"], remote.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "B never took A's keys: {f:#}\n{}", b.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let ready = json_of(b.http.get(b.url("/readyz")).send().unwrap());
    assert_eq!(ready["peers"][0]["keys"], 1, "{ready:#}");

    // A rotates: a new active key, the old one still published. B learns of it when A first
    // signs with it, without a restart.
    a.terminate();
    let fresh = SigningKeyFile::generate("broker-test-2", false).unwrap();
    std::fs::write(a.dir.path().join("signing-2.jwk"), fresh.to_json()).unwrap();
    a.edit_config(|cfg| {
        let keys = cfg.get_mut("keys").and_then(toml::Value::as_table_mut).unwrap();
        keys.insert("signing_keys".into(), toml::Value::Array(vec!["signing-2.jwk".into(), "signing-1.jwk".into()]));
    });
    a.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = found(&a);
        if result_from(&f, "YIC01").len() == 1 {
            break;
        }
        assert_eq!(f["incomplete"][0]["broker"], "YIC01", "{f:#}");
        assert!(Instant::now() < deadline, "B never took A's new key: {f:#}\n{}", b.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let ready = json_of(b.http.get(b.url("/readyz")).send().unwrap());
    assert_eq!(ready["peers"][0]["keys"], 2, "{ready:#}");
}
