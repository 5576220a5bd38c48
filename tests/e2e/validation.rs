//! Invalid notices: each is refused with RFC 9457 problem details naming the failing field by
//! JSON pointer and the rule it broke, and nothing is stored.

use serde_json::{json, Value};

use crate::both;
use crate::support::*;

type Mutate = fn(&mut Value);

fn remove(v: &mut Value, path: &[&str]) {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = v;
    for p in parents {
        cur = &mut cur[*p];
    }
    cur.as_object_mut().unwrap().remove(*last);
}

/// (case, mutation, expected pointer, expected rule)
const CASES: &[(&str, Mutate, &str, &str)] = &[
    ("missing category", |v| remove(v, &["category"]), "/category", "required"),
    ("unknown category", |v| v["category"] = json!("shouting"), "/category", "enum"),
    ("missing subject", |v| remove(v, &["subject"]), "/subject", "required"),
    ("empty subject", |v| v["subject"] = json!({}), "/subject", "minProperties"),
    (
        "NHS number check digit",
        |v| v["subject"]["person"]["nhs_number"] = json!("9990000019"),
        "/subject/person/nhs_number",
        "nhs-number-check-digit",
    ),
    (
        "NHS number too short",
        |v| v["subject"]["person"]["nhs_number"] = json!("999000001"),
        "/subject/person/nhs_number",
        "pattern",
    ),
    (
        "NHS number as a number",
        |v| v["subject"]["person"]["nhs_number"] = json!(9990000018u64),
        "/subject/person/nhs_number",
        "type",
    ),
    (
        "person not identifiable",
        |v| v["subject"]["person"] = json!({"given_name": "Alex"}),
        "/subject/person",
        "person-identifiable",
    ),
    (
        "bad person postcode",
        |v| {
            v["subject"]["person"] =
                json!({"family_name": "Fictional", "birth_date": "1980-02-03", "postcode": "ZZ99 ZZZ"})
        },
        "/subject/person/postcode",
        "postcode-format",
    ),
    (
        "birth date in future",
        |v| v["subject"]["person"] = json!({"family_name": "Fictional", "birth_date": day(5), "postcode": "ZZ99 3WZ"}),
        "/subject/person/birth_date",
        "date-in-future",
    ),
    (
        "birth date not a date",
        |v| v["subject"]["person"]["birth_date"] = json!("03/02/1980"),
        "/subject/person/birth_date",
        "format",
    ),
    (
        "name without letters",
        |v| v["subject"]["person"]["family_name"] = json!("1234"),
        "/subject/person/family_name",
        "name-letters",
    ),
    (
        "unknown person field",
        |v| v["subject"]["person"]["ethnicity"] = json!("x"),
        "/subject/person/ethnicity",
        "unknown-field",
    ),
    (
        "address not identifiable",
        |v| v["subject"] = json!({"address": {"line1": "12 Fictional Street"}}),
        "/subject/address",
        "address-identifiable",
    ),
    ("bad UPRN", |v| v["subject"] = json!({"address": {"uprn": "12AB"}}), "/subject/address/uprn", "pattern"),
    ("zero UPRN", |v| v["subject"] = json!({"address": {"uprn": "0000"}}), "/subject/address/uprn", "uprn-format"),
    (
        "bad address postcode",
        |v| v["subject"] = json!({"address": {"postcode": "12345", "line1": "1 Fictional Road"}}),
        "/subject/address/postcode",
        "postcode-format",
    ),
    ("bad telephone", |v| v["subject"] = json!({"telephone": "7700 900123"}), "/subject/telephone", "telephone-format"),
    ("unknown risk level", |v| v["risk_level"] = json!("extreme"), "/risk_level", "enum"),
    ("unknown aggravating factor", |v| v["aggravating_factors"] = json!(["drunk"]), "/aggravating_factors/0", "enum"),
    (
        "duplicate aggravating factor",
        |v| v["aggravating_factors"] = json!(["sexual", "sexual"]),
        "/aggravating_factors",
        "uniqueItems",
    ),
    ("unknown safety advice", |v| v["safety_advice"] = json!(["bring-biscuits"]), "/safety_advice/0", "enum"),
    (
        "medical factor not boolean",
        |v| v["medical_factor_operative"] = json!("yes"),
        "/medical_factor_operative",
        "type",
    ),
    ("advice text too long", |v| v["advice_text"] = json!("x".repeat(281)), "/advice_text", "maxLength"),
    ("missing review date", |v| remove(v, &["review_date"]), "/review_date", "required"),
    ("review date in past", |v| v["review_date"] = json!(day(-1)), "/review_date", "review-date-in-future"),
    (
        "review date beyond the maximum interval",
        |v| v["review_date"] = json!(day(400)),
        "/review_date",
        "review-interval",
    ),
    ("incident date in future", |v| v["incident_date"] = json!(day(2)), "/incident_date", "date-in-future"),
    ("incident date not a date", |v| v["incident_date"] = json!("2026-13-45"), "/incident_date", "format"),
    (
        "subject informed: both",
        |v| v["subject_informed"] = json!({"informed_on": day(-1), "withheld_because": "x"}),
        "/subject_informed",
        "exactly-one-of",
    ),
    ("subject informed: empty", |v| v["subject_informed"] = json!({}), "/subject_informed", "minProperties"),
    (
        "subject informed in future",
        |v| v["subject_informed"] = json!({"informed_on": day(3)}),
        "/subject_informed/informed_on",
        "date-in-future",
    ),
    ("no lawful basis", |v| v["lawful_basis"] = json!([]), "/lawful_basis", "minItems"),
    ("unknown lawful basis", |v| v["lawful_basis"] = json!(["UKGDPR-6-1-e", "PCSCA22-S16"]), "/lawful_basis/1", "enum"),
    ("no Article 6 basis", |v| v["lawful_basis"] = json!(["UKGDPR-9-2-h"]), "/lawful_basis", "article-6-basis"),
    (
        "crime reference without criminal-offence basis",
        |v| v["restricted"] = json!({"crime_reference": "NP/12345/26"}),
        "/restricted/crime_reference",
        "criminal-offence-basis",
    ),
    (
        "contact without telephone or email",
        |v| v["contact"] = json!({"name": "Duty lead"}),
        "/contact",
        "contact-reachable",
    ),
    ("contact email malformed", |v| v["contact"] = json!({"email": "not-an-email"}), "/contact/email", "format"),
    (
        "contact telephone malformed",
        |v| v["contact"] = json!({"telephone": "call me"}),
        "/contact/telephone",
        "telephone-format",
    ),
    ("unknown top-level field", |v| v["colour"] = json!("red"), "/colour", "unknown-field"),
];

both!(thirty_plus_kinds_of_invalid_notice_are_refused_and_nothing_is_stored, |b: &TestBroker| {
    assert!(CASES.len() >= 30);
    let t = b.token("amb-cad");
    for (case, mutate, pointer, rule) in CASES {
        let mut body = person_notice("9990000018");
        mutate(&mut body);
        let r = b.publish(&t, &body);
        assert_eq!(r.status(), 422, "{case}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{case}");
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let problem = json_of(r);
        assert_matches_schema("problem.schema.json", &problem);
        assert_eq!(problem["type"], "urn:vpr-broker:problem:validation", "{case}");
        assert_eq!(problem["request_id"], request_id, "{case}");
        let errors = problem["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["pointer"] == *pointer && e["rule"] == *rule),
            "{case}: expected {pointer} / {rule}, got {errors:?}"
        );
    }
    assert_eq!(b.count("notices"), 0);
    assert_eq!(b.count("notice_versions"), 0);
    assert_eq!(b.count("notice_match_keys"), 0);
});

both!(every_failing_field_is_listed_at_once, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let mut body = person_notice("9990000018");
    remove(&mut body, &["category"]);
    body["risk_level"] = json!("extreme");
    body["colour"] = json!("red");
    let problem = json_of(b.publish(&t, &body));
    let mut pointers: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    pointers.sort();
    assert_eq!(pointers, ["/category", "/colour", "/risk_level"]);
});

both!(malformed_bodies_are_refused, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let send = |ct: &str, body: &str| {
        b.http
            .post(b.url("/v1/notices"))
            .bearer_auth(&t)
            .header("content-type", ct)
            .body(body.to_owned())
            .send()
            .unwrap()
    };
    let r = send("application/json", "{\"category\": ");
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r)["errors"][0]["rule"], "json-syntax");
    let r = send("application/json", "[1, 2]");
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["pointer"], "");
    let r = send("text/plain", &person_notice("9990000018").to_string());
    assert_eq!(r.status(), 415);
    let big = format!("{{\"advice_text\": \"{}\"}}", "x".repeat(70_000));
    let r = send("application/json", &big);
    assert_eq!(r.status(), 413);
    assert_eq!(json_of(r)["errors"][0]["rule"], "max-body-size");
    // Amendments are validated the same way and change nothing.
    let n = json_of(b.publish(&t, &person_notice("9990000018")));
    let mut bad = person_notice("9990000018");
    bad["review_date"] = json!(day(-3));
    let r = b
        .http
        .put(b.url(&format!("/v1/notices/{}", n["id"].as_str().unwrap())))
        .bearer_auth(&t)
        .header("If-Match", "\"1\"")
        .json(&bad)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(b.count("notice_versions"), 1);
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{}/review", n["id"].as_str().unwrap())))
        .bearer_auth(&t)
        .json(&json!({"review_date": day(500), "note": "x"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["rule"], "review-interval");
    assert_eq!(b.count("notice_versions"), 1);
});
