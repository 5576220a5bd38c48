//! A bad query-string value on every GET endpoint that takes one is refused with 422, naming
//! the parameter: a problem+json whose `errors` has an entry with `pointer` `/<parameter>` and a
//! rule — or, on the FHIR facade, whose errors are OperationOutcomes by contract, an
//! OperationOutcome with an `invalid` issue whose `expression` is the parameter.
//!
//! The table is checked against the OpenAPI document: every query parameter of every GET
//! operation it describes must have at least one row, so a new parameter cannot slip past.

use std::collections::BTreeSet;

use reqwest::blocking::RequestBuilder;
use serde_json::{json, Value};

use crate::both;
use crate::support::*;

/// (path template, parameter, bad value, other parameters the request needs). In paths, values
/// and other parameters: `{notice}` a notice of the caller's, `{subscription}` a REST
/// subscription of the caller's, `{fhir_subscription}` a FHIR one, `{size}` the latest
/// checkpoint's tree size.
type Row = (&'static str, &'static str, &'static str, &'static str);

const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number|9990000018";

const ROWS: &[Row] = &[
    // The publisher's access log of one notice, and the feed of decisions on its notices.
    ("/v1/notices/{notice}/access-log", "before", "x", ""),
    ("/v1/notices/{notice}/access-log", "limit", "x", ""),
    ("/v1/notices/{notice}/access-log", "limit", "0", ""),
    ("/v1/notices/{notice}/access-log", "limit", "201", ""),
    ("/v1/access-log", "after", "x", ""),
    ("/v1/access-log", "after", "-5", ""),
    ("/v1/access-log", "limit", "x", ""),
    ("/v1/access-log", "limit", "0", ""),
    ("/v1/access-log", "limit", "201", ""),
    // The IG review.
    ("/v1/audit/entries", "from", "yesterday", ""),
    ("/v1/audit/entries", "to", "not-a-time", ""),
    ("/v1/audit/entries", "organisation", "not an ods code", ""),
    ("/v1/audit/entries", "user", "", ""),
    ("/v1/audit/entries", "role", "Not A Role", ""),
    ("/v1/audit/entries", "purpose", "Not_A_Purpose", ""),
    ("/v1/audit/entries", "decision", "perhaps", ""),
    ("/v1/audit/entries", "action", "NOT-AN-ACTION", ""),
    ("/v1/audit/entries", "break_glass", "maybe", ""),
    ("/v1/audit/entries", "notice", "not-a-uuid", ""),
    ("/v1/audit/entries", "reference", "", ""),
    ("/v1/audit/entries", "before", "x", ""),
    ("/v1/audit/entries", "before", "0", ""),
    ("/v1/audit/entries", "limit", "x", ""),
    ("/v1/audit/entries", "limit", "0", ""),
    ("/v1/audit/entries", "limit", "501", ""),
    ("/v1/audit/entries", "format", "xml", ""),
    ("/v1/audit/summary", "from", "2026-13-01", ""),
    ("/v1/audit/summary", "to", "yesterday", ""),
    ("/v1/audit/summary", "format", "xml", ""),
    ("/v1/audit/break-glass", "status", "unknown", ""),
    ("/v1/statistics", "from", "2026-13", ""),
    ("/v1/statistics", "to", "last-month", ""),
    ("/v1/statistics", "format", "xml", ""),
    // Proofs over the sealed log.
    ("/v1/audit/proofs/inclusion", "leaf_index", "x", "tree_size={size}"),
    ("/v1/audit/proofs/inclusion", "leaf_index", "-1", "tree_size={size}"),
    ("/v1/audit/proofs/inclusion", "leaf_index", "{size}", "tree_size={size}"),
    ("/v1/audit/proofs/inclusion", "tree_size", "x", "leaf_index=0"),
    ("/v1/audit/proofs/inclusion", "tree_size", "0", "leaf_index=0"),
    ("/v1/audit/proofs/consistency", "first", "x", "second={size}"),
    ("/v1/audit/proofs/consistency", "first", "0", "second={size}"),
    ("/v1/audit/proofs/consistency", "second", "x", "first=1"),
    ("/v1/audit/proofs/consistency", "second", "0", "first=1"),
    // Subscriptions.
    ("/v1/subscriptions", "status", "bogus", ""),
    ("/v1/subscriptions", "all", "maybe", ""),
    ("/v1/subscriptions", "limit", "x", ""),
    ("/v1/subscriptions", "limit", "0", ""),
    ("/v1/subscriptions", "limit", "501", ""),
    ("/v1/subscriptions/{subscription}/events", "after", "x", ""),
    ("/v1/subscriptions/{subscription}/events", "after", "-1", ""),
    ("/v1/subscriptions/{subscription}/events", "limit", "x", ""),
    ("/v1/subscriptions/{subscription}/events", "limit", "0", ""),
    ("/v1/subscriptions/{subscription}/events", "limit", "501", ""),
    // The FHIR facade.
    ("/fhir/R4/Flag", "patient.identifier", "https://example.org/mrn|12345", ""),
    ("/fhir/R4/Flag", "patient.identifier", "https://fhir.nhs.uk/Id/nhs-number|9990000019", ""),
    ("/fhir/R4/Flag", "patient:identifier", "https://example.org/mrn|12345", ""),
    ("/fhir/R4/Flag", "subject:identifier", "https://fhir.nhs.uk/Id/nhs-number|123", ""),
    ("/fhir/R4/Flag", "status", "bogus", "patient.identifier={nhs}"),
    ("/fhir/R4/Flag", "_lastUpdated", "yesterday", "patient.identifier={nhs}"),
    ("/fhir/R4/Flag", "_count", "x", "patient.identifier={nhs}"),
    ("/fhir/R4/Flag", "_count", "0", "patient.identifier={nhs}"),
    ("/fhir/R4/Flag", "_count", "201", "patient.identifier={nhs}"),
    ("/fhir/R4/Flag", "_page", "not-a-page-token", ""),
    ("/fhir/R4/AuditEvent", "date", "yesterday", ""),
    ("/fhir/R4/AuditEvent", "date", "xx2026-01-01", ""),
    ("/fhir/R4/AuditEvent", "entity", "Flag/not-a-uuid", ""),
    // The same filters as the REST review's `organisation`, `user`, `role` and `purpose`, held to
    // the same rules (today the FHIR export takes any text here).
    ("/fhir/R4/AuditEvent", "_count", "x", ""),
    ("/fhir/R4/AuditEvent", "_count", "0", ""),
    ("/fhir/R4/AuditEvent", "_cursor", "x", ""),
    ("/fhir/R4/Subscription/{fhir_subscription}/$events", "eventsSinceNumber", "x", ""),
    ("/fhir/R4/Subscription/{fhir_subscription}/$events", "eventsSinceNumber", "0", ""),
    ("/fhir/R4/Subscription/{fhir_subscription}/$events", "eventsUntilNumber", "x", ""),
    ("/fhir/R4/Subscription/{fhir_subscription}/$events", "eventsUntilNumber", "0", ""),
    ("/fhir/R4/Subscription/{fhir_subscription}/$events", "content", "everything", ""),
];

/// Query parameters the OpenAPI document describes that take any text: the FHIR AuditEvent
/// search's free-text filters (an unknown organisation, user, role or purpose matches nothing,
/// as the REST review's filters do). Listed so the completeness check stays honest.
const WITHOUT_BAD_VALUES: &[(&str, &str)] = &[
    ("/fhir/R4/AuditEvent", "agent"),
    ("/fhir/R4/AuditEvent", "altid"),
    ("/fhir/R4/AuditEvent", "agent-role"),
    ("/fhir/R4/AuditEvent", "purpose"),
];

struct Fixtures {
    notice: String,
    subscription: String,
    fhir_subscription: String,
    size: i64,
}

impl Fixtures {
    fn fill(&self, s: &str) -> String {
        s.replace("{notice}", &self.notice)
            .replace("{subscription}", &self.subscription)
            .replace("{fhir_subscription}", &self.fhir_subscription)
            .replace("{size}", &self.size.to_string())
            .replace("{nhs}", NHS_NUMBER)
    }
}

fn setup(b: &TestBroker) -> Fixtures {
    let (amb, ed) = (b.token("amb-cad"), b.token("acute-ed"));
    let r = b.publish(&amb, &person_notice("9990000018"));
    assert_eq!(r.status(), 201);
    let notice = json_of(r)["id"].as_str().unwrap().to_owned();
    let subscription = b.subscribe(
        &amb,
        &json!({
            "purpose": "staff-safety", "role": "ambulance-dispatcher", "criteria": {"postcodes": ["LS"]},
            "payload": "view", "delivery": {"method": "feed"},
            "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        }),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";
    let fhir = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "Alerts for the ED's patients",
        "criteria": "https://vpr-broker.example/fhir/SubscriptionTopic/violence-risk-flag",
        "_criteria": {"extension": [{"url": format!("{backport}/backport-filter-criteria"),
            "valueString": format!("Flag?patient.identifier={NHS_NUMBER}")}]},
        "channel": {"type": "rest-hook", "endpoint": "https://record.example.nhs.uk/fhir/notify",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": format!("{backport}/backport-payload-content"), "valueCode": "id-only"}]}},
    });
    let r = b
        .http
        .post(b.url("/fhir/R4/Subscription"))
        .bearer_auth(&ed)
        .header("content-type", "application/fhir+json")
        .header("VPR-Purpose", "direct-care")
        .header("VPR-User-Id", "ed-user-1")
        .header("VPR-User-Role", "ed-clinician")
        .body(fhir.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let fhir_subscription = json_of(r)["id"].as_str().unwrap().to_owned();
    // A look-up, so there is something to seal and prove.
    let lookup = json!({"purpose": "staff-safety", "requester": {"user_id": "u-1", "role": "ambulance-dispatcher"},
        "subject": {"person": {"nhs_number": "9990000018"}}});
    assert_eq!(b.post_json(&amb, "/v1/lookups", &lookup).status(), 200);
    let size = b.wait_sealed();
    Fixtures { notice, subscription, fhir_subscription, size }
}

/// The request for a path, made as whoever may use it.
fn as_caller(b: &TestBroker, template: &str, url: &str) -> RequestBuilder {
    let get = b.http.get(url);
    match template {
        t if t.starts_with("/v1/audit/proofs/") => get,
        t if t.starts_with("/v1/audit/") || t == "/fhir/R4/AuditEvent" => b.as_ig(get),
        "/fhir/R4/Flag" => get
            .bearer_auth(b.token("amb-cad"))
            .header("VPR-Purpose", "staff-safety")
            .header("VPR-User-Id", "user-1")
            .header("VPR-User-Role", "ambulance-dispatcher"),
        t if t.starts_with("/fhir/R4/Subscription/") => get.bearer_auth(b.token("acute-ed")),
        "/v1/statistics" => {
            get.bearer_auth(b.token("amb-cad")).header("VPR-User-Id", "lead-1").header("VPR-User-Role", "vpr-lead")
        }
        _ => get.bearer_auth(b.token("amb-cad")),
    }
}

/// What is wrong with the answer to one row, if anything.
fn check(b: &TestBroker, f: &Fixtures, (template, param, bad, rest): Row) -> Option<String> {
    let mut query: Vec<(String, String)> = f
        .fill(rest)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    query.push((param.to_owned(), f.fill(bad)));
    let url = b.url(&f.fill(template));
    let r = as_caller(b, template, &url).query(&query).send().unwrap();
    let status = r.status().as_u16();
    let ct = content_type(&r);
    let text = r.text().unwrap_or_default();
    let row = format!("GET {template}?{param}={:?}", f.fill(bad));
    let body: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) => return Some(format!("{row}: {status} {ct:?}, not JSON: {text:.200}")),
    };
    if template.starts_with("/fhir/") {
        let names_it = body["issue"].as_array().into_iter().flatten().any(|i| {
            i["code"] == "invalid"
                && i["expression"].as_array().is_some_and(|e| e.iter().any(|x| x == param))
                && i["diagnostics"].as_str().is_some_and(|d| !d.trim().is_empty())
        });
        let ok =
            status == 422 && ct == "application/fhir+json" && body["resourceType"] == "OperationOutcome" && names_it;
        (!ok).then(|| {
            format!(
                "{row}: want 422 application/fhir+json OperationOutcome with an `invalid` issue whose expression is \
                 [{param:?}]; got {status} {ct:?} {body}"
            )
        })
    } else {
        let pointer = format!("/{param}");
        let names_it = body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["pointer"] == pointer.as_str() && e["rule"].as_str().is_some_and(|r| !r.trim().is_empty()));
        let ok = status == 422 && ct == "application/problem+json" && body["status"] == 422 && names_it;
        (!ok).then(|| {
            format!(
                "{row}: want 422 application/problem+json with an `errors` entry {{pointer: {pointer:?}, rule: ..}}; \
                 got {status} {ct:?} {body}"
            )
        })
    }
}

both!(a_bad_query_parameter_on_any_get_endpoint_is_a_422_naming_it, |b: &TestBroker| {
    // Every query parameter of every GET operation in the OpenAPI document has a row.
    let doc = json_of(b.http.get(b.url("/openapi.json")).send().unwrap());
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let params = get["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(item["parameters"].as_array().into_iter().flatten());
        for p in params.filter(|p| p["in"] == "query") {
            described.insert((path.clone(), p["name"].as_str().unwrap().to_owned()));
        }
    }
    assert!(described.len() >= 30, "the OpenAPI document describes query parameters: {described:?}");
    let covered: BTreeSet<(String, String)> = ROWS
        .iter()
        .map(|(t, p, _, _)| {
            (
                t.replace("{notice}", "{id}").replace("{subscription}", "{id}").replace("{fhir_subscription}", "{id}"),
                (*p).to_owned(),
            )
        })
        .chain(WITHOUT_BAD_VALUES.iter().map(|(t, p)| ((*t).to_owned(), (*p).to_owned())))
        .collect();
    let missing: Vec<_> = described.iter().filter(|d| !covered.contains(*d)).collect();
    assert!(missing.is_empty(), "query parameters in the OpenAPI document with no row in the sweep: {missing:?}");

    let f = setup(b);
    let wrong: Vec<String> = ROWS.iter().filter_map(|row| check(b, &f, *row)).collect();
    assert!(wrong.is_empty(), "{} of {} rows answered wrongly:\n{}", wrong.len(), ROWS.len(), wrong.join("\n"));
});
