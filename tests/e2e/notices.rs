//! The notice lifecycle over HTTP.

use serde_json::{json, Value};

use crate::both;
use crate::support::*;

fn publish_ok(b: &TestBroker, token: &str, body: &Value) -> Value {
    let r = b.publish(token, body);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let n = json_of(r);
    assert_eq!(location, format!("/v1/notices/{}", n["id"].as_str().unwrap()));
    assert_matches_schema("notice-resource.schema.json", &n);
    n
}

both!(publish_read_amend_review_withdraw_versions, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let n = publish_ok(b, &t, &person_notice("999 000 0018"));
    let id = n["id"].as_str().unwrap();
    assert_eq!(n["status"], "active");
    assert_eq!(n["version"], 1);
    assert_eq!(n["subject"]["person"]["nhs_number"], "9990000018", "normalised");
    assert_eq!(n["publisher"]["ods_code"], "XAM01");
    assert_eq!(n["contact"]["telephone"], "+441134960999", "registry contact point applies");
    assert_eq!(n["last_change"]["by_system"], "amb-cad");

    let r = b.get(&t, &format!("/v1/notices/{id}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(json_of(r), n);

    // Amend needs If-Match.
    let mut body = person_notice("9990000018");
    body["risk_level"] = json!("moderate");
    let put = |etag: Option<&str>, body: &Value| {
        let mut req = b.http.put(b.url(&format!("/v1/notices/{id}"))).bearer_auth(&t).json(body);
        if let Some(e) = etag {
            req = req.header("If-Match", e);
        }
        req.send().unwrap()
    };
    assert_eq!(put(None, &body).status(), 428);
    let r = put(Some("\"1\""), &body);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    let v2 = json_of(r);
    assert_eq!((v2["version"].as_i64(), v2["risk_level"].as_str()), (Some(2), Some("moderate")));
    assert_eq!(v2["last_change"]["change"], "amended");
    // A stale amend is refused, and names the current version.
    let r = put(Some("\"1\""), &body);
    assert_eq!(r.status(), 412);
    assert_eq!(r.headers()["etag"], "\"2\"");
    assert_matches_schema("problem.schema.json", &json_of(r));

    // Review: new review date and a note.
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{id}/review")))
        .bearer_auth(&t)
        .json(&json!({"review_date": day(300), "note": "reviewed with the VPR lead: still needed"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v3 = json_of(r);
    assert_eq!(v3["review_date"], day(300));
    assert_eq!(v3["last_change"]["reason"], "reviewed with the VPR lead: still needed");

    // Withdraw: a reason is required.
    let withdraw = |body: Value| {
        b.http.post(b.url(&format!("/v1/notices/{id}/withdraw"))).bearer_auth(&t).json(&body).send().unwrap()
    };
    let r = withdraw(json!({}));
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["pointer"], "/reason");
    let r = withdraw(json!({"reason": "   "}));
    assert_eq!(r.status(), 422);
    let r = withdraw(json!({"reason": "subject moved out of area; risk no longer current"}));
    assert_eq!(r.status(), 200);
    let v4 = json_of(r);
    assert_eq!(v4["status"], "withdrawn");
    assert_eq!(withdraw(json!({"reason": "again"})).status(), 409);
    // A withdrawn notice cannot be amended or reviewed.
    assert_eq!(put(Some("\"4\""), &body).status(), 409);

    let r = b.get(&t, &format!("/v1/notices/{id}/versions"));
    assert_eq!(r.status(), 200);
    let versions = json_of(r);
    let list = versions["versions"].as_array().unwrap();
    let changes: Vec<&str> = list.iter().map(|v| v["last_change"]["change"].as_str().unwrap()).collect();
    assert_eq!(changes, ["created", "amended", "reviewed", "withdrawn"]);
    assert_eq!(list[0]["risk_level"], "high", "history is never overwritten");
    for v in list {
        assert_matches_schema("notice-resource.schema.json", v);
    }
});

both!(idempotent_retry_returns_the_first_result, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let body = person_notice("9990000018");
    let send = |key: &str, body: &Value| {
        b.http.post(b.url("/v1/notices")).bearer_auth(&t).header("Idempotency-Key", key).json(body).send().unwrap()
    };
    let first = send("retry-1", &body);
    assert_eq!(first.status(), 201);
    let first = json_of(first);
    let again = send("retry-1", &body);
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(again)["id"], first["id"]);
    // Concurrent retries of the same request still make one notice.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert!(send("retry-2", &body).status().is_success()));
        }
    });
    let mut other = body.clone();
    other["risk_level"] = json!("low");
    let r = send("retry-1", &other);
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["type"], "urn:vpr-broker:problem:idempotency-key-reused");
    assert_eq!(b.count("notices"), 2);
    // Keys belong to an organisation: another partner's identical key is its own.
    let gp = b.token("gp-green");
    let r = b
        .http
        .post(b.url("/v1/notices"))
        .bearer_auth(&gp)
        .header("Idempotency-Key", "retry-1")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
});

both!(only_the_publisher_changes_or_reads_its_notice, |b: &TestBroker| {
    let amb = b.token("amb-cad");
    let gp = b.token("gp-green");
    let police = b.token("police");
    let n = publish_ok(b, &amb, &person_notice("9990000018"));
    let id = n["id"].as_str().unwrap();
    let r = b
        .http
        .put(b.url(&format!("/v1/notices/{id}")))
        .bearer_auth(&gp)
        .header("If-Match", "\"1\"")
        .json(&person_notice("9990000018"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{id}/withdraw")))
        .bearer_auth(&gp)
        .json(&json!({"reason": "not mine"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{id}/review")))
        .bearer_auth(&gp)
        .json(&json!({"review_date": day(30), "note": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Police hold no write scope at all.
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{id}/withdraw")))
        .bearer_auth(&police)
        .json(&json!({"reason": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Reads by others need a purpose and role, and are decided by the agreement.
    let r = b.get(&gp, &format!("/v1/notices/{id}"));
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["rule"], "purpose-required");
    let r = b
        .http
        .get(b.url(&format!("/v1/notices/{id}")))
        .bearer_auth(&gp)
        .header("VPR-Purpose", "staff-safety")
        .header("VPR-User-Id", "gp-user-1")
        .header("VPR-User-Role", "gp-receptionist")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json_of(r);
    assert_matches_schema("disclosed-notice.schema.json", &body);
    assert_eq!(body["decision"]["view"], "existence");
    let text = body.to_string();
    assert!(!text.contains("9990000018") && !text.contains("Fictional") && !text.contains("category"), "{text}");
    assert_eq!(b.get(&gp, &format!("/v1/notices/{id}/versions")).status(), 403);
    // Nothing changed.
    let r = b.get(&amb, &format!("/v1/notices/{id}"));
    assert_eq!(r.headers()["etag"], "\"1\"");
    assert_eq!(b.count("notice_versions"), 1);
});

both!(unknown_notices_are_not_found, |b: &TestBroker| {
    let t = b.token("amb-cad");
    for path in [
        "/v1/notices/6f1c2a56-8f7e-4a53-9d8e-2a4c7a0f0b11",
        "/v1/notices/not-a-uuid",
        "/v1/notices/6f1c2a56-8f7e-4a53-9d8e-2a4c7a0f0b11/versions",
    ] {
        let r = b.get(&t, path);
        assert_eq!(r.status(), 404, "{path}");
        assert_matches_schema("problem.schema.json", &json_of(r));
    }
});

both!(address_and_telephone_subjects, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let mut body = person_notice("9990000018");
    body["subject"] = json!({
        "address": {"postcode": "zz99 3wz", "line1": "12, Fictional St."},
        "telephone": "07700 900123"
    });
    body["category"] = json!("threat-with-weapon");
    body["safety_advice"] = json!(["weapons-reported", "dangerous-animal"]);
    let n = publish_ok(b, &t, &body);
    assert_eq!(n["subject"]["address"]["postcode"], "ZZ99 3WZ");
    assert_eq!(n["subject"]["telephone"], "+447700900123");
    let mut by_uprn = person_notice("9990000018");
    by_uprn["subject"] = json!({"address": {"uprn": "000012345678"}});
    let n = publish_ok(b, &t, &by_uprn);
    assert_eq!(n["subject"]["address"]["uprn"], "12345678");
});
