//! `POST /oauth2/token` and bearer authentication.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use vpr_auth::SigningKeyFile;

use crate::both;
use crate::support::*;

fn refused(r: Response, status: u16, error: &str) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body = json_of(r);
    assert_eq!(body["error"], error, "{body}");
    assert_matches_schema("problem.schema.json", &body);
    body
}

both!(good_assertion_gets_a_working_token, |b: &TestBroker| {
    let a = b.assertion(b.client("amb-cad"), |_| {});
    let r = b.request_token(&a, None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = json_of(r);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "notices:write notices:read lookups subscriptions");
    let token = body["access_token"].as_str().unwrap();
    let r = b.publish(token, &person_notice("9990000018"));
    assert_eq!(r.status(), 201);
});

both!(expired_assertion_is_refused, |b: &TestBroker| {
    let a = b.assertion(b.client("amb-cad"), |p| p.set_expires_at(&(SystemTime::now() - Duration::from_secs(120))));
    let body = refused(b.request_token(&a, None), 401, "invalid_client");
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
});

both!(assertion_living_too_long_is_refused, |b: &TestBroker| {
    let a = b.assertion(b.client("amb-cad"), |p| p.set_expires_at(&(SystemTime::now() + Duration::from_secs(3600))));
    refused(b.request_token(&a, None), 401, "invalid_client");
});

both!(wrong_audience_is_refused, |b: &TestBroker| {
    let a = b.assertion(b.client("amb-cad"), |p| p.set_audience(vec!["https://other-broker.example/oauth2/token"]));
    let body = refused(b.request_token(&a, None), 401, "invalid_client");
    assert!(body["detail"].as_str().unwrap().contains("aud"), "{body}");
});

both!(replayed_jti_is_refused, |b: &TestBroker| {
    let a = b.assertion(b.client("amb-cad"), |_| {});
    assert_eq!(b.request_token(&a, None).status(), 200);
    let body = refused(b.request_token(&a, None), 401, "invalid_client");
    assert!(body["detail"].as_str().unwrap().contains("jti"), "{body}");
});

both!(unknown_key_is_refused, |b: &TestBroker| {
    let stranger = SigningKeyFile::generate("stranger-1", false).unwrap();
    let mut c = b.client("amb-cad").clone();
    c.jwk = stranger.jwk;
    refused(b.request_token(&b.assertion(&c, |_| {}), None), 401, "invalid_client");
});

both!(known_kid_with_the_wrong_key_is_refused, |b: &TestBroker| {
    // An attacker who knows the kid but not the private key.
    let mut forged = SigningKeyFile::generate("x", false).unwrap().jwk;
    forged.set_key_id(b.client("amb-cad").kid());
    let mut c = b.client("amb-cad").clone();
    c.jwk = forged;
    refused(b.request_token(&b.assertion(&c, |_| {}), None), 401, "invalid_client");
});

both!(issuer_must_be_the_key_owner, |b: &TestBroker| {
    // Signed with the GP's key but claiming to be the ambulance CAD.
    let a = b.assertion(b.client("gp-green"), |p| {
        p.set_issuer("amb-cad");
        p.set_subject("amb-cad");
    });
    refused(b.request_token(&a, None), 401, "invalid_client");
});

both!(grant_and_scope_rules, |b: &TestBroker| {
    let r = b.http.post(b.token_endpoint()).form(&[("grant_type", "password")]).send().unwrap();
    refused(r, 400, "unsupported_grant_type");
    let r =
        b.http.post(b.token_endpoint()).json(&serde_json::json!({"grant_type": "client_credentials"})).send().unwrap();
    refused(r, 400, "invalid_request");
    let a = b.assertion(b.client("police"), |_| {});
    refused(b.request_token(&a, Some("notices:write")), 400, "invalid_scope");
    // A narrowed token cannot publish.
    let a = b.assertion(b.client("amb-cad"), |_| {});
    let r = b.request_token(&a, Some("notices:read"));
    let token = json_of(r)["access_token"].as_str().unwrap().to_owned();
    let r = b.publish(&token, &person_notice("9990000018"));
    assert_eq!(r.status(), 403);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
});

both!(bearer_tokens_are_checked, |b: &TestBroker| {
    let body = person_notice("9990000018");
    let r = b.http.post(b.url("/v1/notices")).json(&body).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let r = b.publish("not-a-token", &body);
    assert_eq!(r.status(), 401);
    // A client assertion is not an access token.
    let a = b.assertion(b.client("amb-cad"), |_| {});
    assert_eq!(b.publish(&a, &body).status(), 401);
    // A token whose claims were tampered with (one character of the payload changed; the
    // signature's last character is not used: its low bits may not count, or it may be `x`).
    let t = b.token("amb-cad");
    let at = t.find('.').unwrap() + 5;
    let swapped = if &t[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &t[..at], &t[at + 1..]);
    assert_ne!(tampered, t);
    assert_eq!(b.publish(&tampered, &body).status(), 401);
    assert_eq!(b.count("notices"), 0);
});

both!(key_rotation_keeps_issued_tokens_valid, |b: &TestBroker| {
    let old_token = b.token("amb-cad");
    // Rotate: a new key signs, the old one stays to verify.
    let new_key = SigningKeyFile::generate("broker-test-2", false).unwrap();
    std::fs::write(b.dir.path().join("signing-2.jwk"), new_key.to_json()).unwrap();
    let cfg = std::fs::read_to_string(b.config_path()).unwrap();
    let cfg =
        cfg.replace(r#"signing_keys = ["signing-1.jwk"]"#, r#"signing_keys = ["signing-2.jwk", "signing-1.jwk"]"#);
    std::fs::write(b.config_path(), cfg).unwrap();
    b.restart();
    let jwks = json_of(b.http.get(b.url("/.well-known/jwks.json")).send().unwrap());
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["broker-test-2", "broker-test-1"]);
    assert!(jwks["keys"].as_array().unwrap().iter().all(|k| k.get("d").is_none()), "no private parts published");
    assert_eq!(b.publish(&old_token, &person_notice("9990000018")).status(), 201, "old token still valid");
    let new_token = b.token("amb-cad");
    let header = josekit::jwt::decode_header(&new_token).unwrap();
    assert_eq!(header.claim("kid").and_then(|v| v.as_str()), Some("broker-test-2"));
    assert_eq!(b.publish(&new_token, &person_notice("9990000026")).status(), 201);
});

both!(discovery_documents, |b: &TestBroker| {
    let meta = json_of(b.http.get(b.url("/.well-known/oauth-authorization-server")).send().unwrap());
    assert_eq!(meta["issuer"], b.base);
    assert_eq!(meta["token_endpoint"], b.token_endpoint());
    assert_eq!(meta["token_endpoint_auth_methods_supported"], serde_json::json!(["private_key_jwt"]));
});

#[test]
fn demo_keys_are_refused_outside_demo_mode() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-ics/broker.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&demo)
        .env("VPR_DEMO", "false")
        .env("VPR_DATABASE_URL", format!("sqlite://{}/x.db", dir.path().display()))
        .env("VPR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("demo-only"), "{err}");
    assert!(!dir.path().join("x.db").exists(), "nothing was opened");
}
