//! `GET /v1/notices/{id}/access-log`: publishers see who accessed their notices.

use serde_json::{json, Value};

use crate::both;
use crate::support::*;

fn lookup(b: &TestBroker, client: &str, role: &str, purpose: &str) -> u16 {
    let body = json!({"purpose": purpose, "requester": {"user_id": format!("{client}-user-7"), "role": role},
        "subject": {"person": {"nhs_number": "9990000018"}}});
    b.http.post(b.url("/v1/lookups")).bearer_auth(b.token(client)).json(&body).send().unwrap().status().as_u16()
}

both!(publishers_see_who_accessed_their_notice, |b: &TestBroker| {
    let amb = b.token("amb-cad");
    let n = json_of(b.publish(&amb, &person_notice("9990000018")));
    let id = n["id"].as_str().unwrap();
    assert_eq!(lookup(b, "gp-green", "gp-receptionist", "staff-safety"), 200);
    assert_eq!(lookup(b, "police", "police-officer", "crime-prevention"), 200);
    let bg = json!({"purpose": "staff-safety", "requester": {"user_id": "ed-user-1", "role": "ed-clinician"},
        "break_glass": {"justification": "patient violent in resus, no history available"},
        "subject": {"person": {"nhs_number": "9990000018"}}});
    assert_eq!(
        b.http.post(b.url("/v1/lookups")).bearer_auth(b.token("acute-ed")).json(&bg).send().unwrap().status(),
        200
    );

    let log = |query: &str, token: &str| b.get(token, &format!("/v1/notices/{id}/access-log{query}"));
    let r = log("", &amb);
    assert_eq!(r.status(), 200);
    let body: Value = json_of(r);
    let entries = body["entries"].as_array().unwrap();
    let who: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["organisation"]["ods_code"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
                e["purpose"].as_str().unwrap(),
            )
        })
        .collect();
    // Newest first: the ED break-glass summary, the police refusal, the GP reception existence check.
    assert_eq!(
        who,
        [
            ("XAC01", "permit", "staff-safety"),
            ("XPF01", "deny", "crime-prevention"),
            ("XGP01", "permit", "staff-safety")
        ]
    );
    assert_eq!(entries[0]["break_glass"], true);
    assert_eq!(entries[0]["break_glass_justification"], "patient violent in resus, no history available");
    assert_eq!(entries[0]["view"], "summary");
    assert_eq!(entries[2]["view"], "existence");
    assert_eq!(entries[2]["user"], "gp-green-user-7");
    assert_eq!(entries[2]["role"], "gp-receptionist");
    assert_eq!(entries[2]["clauses"], json!(["SS-3"]));
    assert_eq!(entries[1]["view"], Value::Null);
    assert!(body["next_before"].is_null());

    // Stable paging: one at a time, newest first.
    let p1 = json_of(log("?limit=1", &amb));
    assert_eq!(p1["entries"][0]["organisation"]["ods_code"], "XAC01");
    let before = p1["next_before"].as_i64().unwrap();
    let p2 = json_of(log(&format!("?limit=1&before={before}"), &amb));
    assert_eq!(p2["entries"][0]["organisation"]["ods_code"], "XPF01");
    assert_eq!(log("?limit=0", &amb).status(), 422);

    // Another partner cannot read the publisher's access log, and reading it is itself audited.
    assert_eq!(log("", &b.token("gp-green")).status(), 403);
    assert_eq!(b.last_audit()["action"], "access-log");
    assert_eq!((b.last_audit()["decision"].as_str(), b.last_audit()["outcome"].as_i64()), (Some("refused"), Some(403)));
    assert_eq!(b.get(&amb, "/v1/notices/6f1c2a56-8f7e-4a53-9d8e-2a4c7a0f0b11/access-log").status(), 404);
});
