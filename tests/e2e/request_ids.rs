//! The request id reaches the audit: every audited kind of request is sent with its own chosen
//! `X-Request-Id`, and the IG review API then shows, for each, exactly one audit entry carrying
//! that id, of the action the request is audited as. So IG can tie an entry to its log lines.

use std::time::Duration;

use reqwest::blocking::RequestBuilder;
use serde_json::{json, Value};

use crate::both;
use crate::support::*;

const NHS_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
const PERSON: &str = "9990000018";
const OTHER: &str = "9990000026";
/// The FHIR Subscription's cohort (no directive recorded about it).
const THIRD: &str = "9990000034";
const TOPIC: &str = "https://vpr-broker.example/fhir/SubscriptionTopic/violence-risk-flag";
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

/// The requests sent so far: (what, the id it was sent with, the audit action it should leave).
#[derive(Default)]
struct Sent(std::cell::RefCell<Vec<(String, String, &'static str)>>);

impl Sent {
    /// Sends `rb` with a fresh `X-Request-Id`, checks the status and the echoed id, and records
    /// which audit action the request must have left. Returns the body (JSON, or text as a
    /// string).
    fn send(&self, what: &str, kind: &str, action: &'static str, status: u16, rb: RequestBuilder) -> Value {
        let id = request_id(kind);
        let r = rb.header("X-Request-Id", &id).send().unwrap();
        let got = r.status().as_u16();
        let echoed = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = r.text().unwrap_or_default();
        assert_eq!(got, status, "{what}: {text}");
        assert_eq!(echoed, id, "{what}: the response names the request id it was sent with");
        self.0.borrow_mut().push((what.to_owned(), id, action));
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

fn with_access(rb: RequestBuilder, purpose: &str, role: &str) -> RequestBuilder {
    rb.header("VPR-Purpose", purpose).header("VPR-User-Id", "user-1").header("VPR-User-Role", role)
}

fn lookup_body(role: &str, purpose: &str, nhs: &str) -> Value {
    json!({"purpose": purpose, "requester": {"user_id": "user-1", "role": role},
        "subject": {"person": {"nhs_number": nhs}}})
}

fn ambulance_feed(postcodes: &[&str]) -> Value {
    json!({
        "purpose": "staff-safety", "role": "ambulance-dispatcher", "criteria": {"postcodes": postcodes},
        "payload": "view", "delivery": {"method": "feed"}, "tag": "request-ids",
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
    })
}

both!(every_audited_request_names_its_request_id_in_its_audit_entry, |b: &TestBroker| {
    let sent = Sent::default();
    let (amb, gp, ed, police, ig) =
        (b.token("amb-cad"), b.token("gp-green"), b.token("acute-ed"), b.token("police"), b.token("icb-ig"));
    let notice = json_of(b.publish(&amb, &person_notice(PERSON)))["id"].as_str().unwrap().to_owned();
    let patient = format!("{NHS_SYSTEM}|{PERSON}");

    // Look-ups: a permitted one, a refused one, and an emergency one for the break-glass queue.
    let post = |token: &str, path: &str| b.http.post(b.url(path)).bearer_auth(token);
    let get = |token: &str, path: &str| b.http.get(b.url(path)).bearer_auth(token);
    sent.send(
        "look-up",
        "lookup",
        "lookup",
        200,
        post(&amb, "/v1/lookups").json(&lookup_body("ambulance-dispatcher", "staff-safety", PERSON)),
    );
    sent.send(
        "refused look-up",
        "lookup-refused",
        "lookup",
        403,
        post(&amb, "/v1/lookups").json(&lookup_body("ambulance-dispatcher", "research", PERSON)),
    );
    let mut emergency = lookup_body("ed-clinician", "direct-care", PERSON);
    emergency["break_glass"] = json!({"justification": "patient unconscious in resus, history unknown"});
    sent.send("break-glass look-up", "lookup-bg", "lookup", 200, post(&ed, "/v1/lookups").json(&emergency));

    // Reads of a notice, REST and FHIR, by another organisation; and a refused read.
    let path = format!("/v1/notices/{notice}");
    sent.send("notice read", "read", "read", 200, with_access(get(&gp, &path), "staff-safety", "gp-receptionist"));
    sent.send("notice read without its headers", "read-refused", "read", 422, get(&gp, &path));
    sent.send(
        "FHIR search (GET)",
        "fhir-search-get",
        "fhir-search",
        200,
        with_access(
            get(&amb, "/fhir/R4/Flag").query(&[("patient.identifier", patient.as_str())]),
            "staff-safety",
            "ambulance-dispatcher",
        ),
    );
    sent.send(
        "FHIR search (POST _search)",
        "fhir-search-post",
        "fhir-search",
        200,
        with_access(
            post(&amb, "/fhir/R4/Flag/_search").form(&[("patient.identifier", patient.as_str())]),
            "staff-safety",
            "ambulance-dispatcher",
        ),
    );
    sent.send(
        "FHIR read",
        "fhir-read",
        "fhir-read",
        200,
        with_access(get(&gp, &format!("/fhir/R4/Flag/{notice}")), "staff-safety", "gp-receptionist"),
    );

    // The publisher's access logs: per notice, and the feed (once what it shows is sealed).
    sent.send("per-notice access log", "access-log", "access-log", 200, get(&amb, &format!("{path}/access-log")));
    b.wait_sealed();
    let feed = sent.send("access-log feed", "access-log-feed", "access-log-feed", 200, get(&amb, "/v1/access-log"));
    assert!(!feed["entries"].as_array().unwrap().is_empty(), "the feed read must disclose something to be audited");

    // IG review.
    let ig_get = |path: &str| b.as_ig(b.http.get(b.url(path)));
    let ig_post = |path: &str| b.as_ig(b.http.post(b.url(path)));
    let today = chrono::Utc::now().date_naive().to_string();
    sent.send("IG audit search (GET)", "audit-search", "audit-search", 200, ig_get("/v1/audit/entries?action=lookup"));
    sent.send(
        "IG audit search (POST)",
        "audit-search-post",
        "audit-search",
        200,
        ig_post("/v1/audit/entries/search").json(&json!({"subject": {"person": {"nhs_number": PERSON}}})),
    );
    sent.send("IG audit export", "audit-export", "audit-export", 200, ig_get("/v1/audit/entries?format=ndjson"));
    sent.send(
        "IG audit summary",
        "audit-summary",
        "audit-summary",
        200,
        ig_get(&format!("/v1/audit/summary?from={today}&to={today}")),
    );
    let queue =
        sent.send("IG break-glass queue", "bg-queue", "break-glass-queue", 200, ig_get("/v1/audit/break-glass"));
    sent.send(
        "IG subject access report",
        "sar",
        "subject-access-report",
        200,
        ig_post("/v1/audit/subject-access-report")
            .json(&json!({"subject": {"person": {"nhs_number": PERSON}}, "reference": "SAR-2026-9"})),
    );
    sent.send("IG AuditEvent export", "audit-event", "audit-event-export", 200, ig_get("/fhir/R4/AuditEvent?_count=5"));
    sent.send(
        "refused IG audit search",
        "audit-search-refused",
        "audit-search",
        403,
        get(&ig, "/v1/audit/entries").header("VPR-User-Id", "x").header("VPR-User-Role", "gp-clinician"),
    );

    // Directives.
    let directive = |purpose: &str, status: &str| {
        json!({"subject": {"person": {"nhs_number": OTHER}}, "purpose": purpose, "status": status,
            "evidence_reference": "IG-REF-1", "requester": {"user_id": "ig-1", "role": "ig-lead"}})
    };
    sent.send(
        "consent",
        "consent",
        "consent",
        201,
        post(&ig, "/v1/consents").json(&directive("social-care-support", "given")),
    );
    sent.send(
        "objection",
        "objection",
        "objection",
        201,
        post(&ig, "/v1/objections").json(&directive("direct-care", "upheld")),
    );

    // Subscription changes, and a read of a subscription's feed.
    let sub = sent.send(
        "subscription create",
        "subscribe",
        "subscribe",
        201,
        post(&amb, "/v1/subscriptions").json(&ambulance_feed(&["LS"])),
    );
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let sub_path = format!("/v1/subscriptions/{sub_id}");
    sent.send(
        "subscription replace",
        "sub-change",
        "subscription-change",
        200,
        b.http.put(b.url(&sub_path)).bearer_auth(&amb).json(&ambulance_feed(&["LS", "BD"])),
    );
    assert_eq!(b.publish(&b.token("acute-ed"), &address_notice("LS6 1AA", "1 Test Street")).status(), 201);
    b.wait_subscription(&amb, &sub_id, Duration::from_secs(20), |s| s["events"]["last_event_number"] == 1);
    sent.send("subscription feed read", "feed", "feed", 200, get(&amb, &format!("{sub_path}/events")));
    let pending = json!({
        "purpose": "crime-prevention", "role": "police-officer", "criteria": {"postcodes": ["LS"]}, "payload": "view",
        "delivery": {"method": "feed"}, "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
    });
    let police_sub = sent.send(
        "subscription create (awaiting approval)",
        "subscribe-pending",
        "subscribe",
        201,
        post(&police, "/v1/subscriptions").json(&pending),
    );
    sent.send(
        "subscription approval",
        "sub-approval",
        "subscription-approval",
        200,
        post(&ig, &format!("/v1/subscriptions/{}/approval", police_sub["id"].as_str().unwrap())).json(&json!({
            "decision": "approve", "note": "s115 request reviewed", "reviewer": {"user_id": "ig-7", "role": "ig-lead"}
        })),
    );
    sent.send(
        "subscription delete",
        "unsubscribe",
        "unsubscribe",
        200,
        b.http.delete(b.url(&sub_path)).bearer_auth(&amb),
    );

    // The FHIR facade's Subscription: create, read its events, delete.
    let fhir_sub = json!({
        "resourceType": "Subscription", "status": "requested", "reason": "Alerts for the ED's patients",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": format!("{BACKPORT}/backport-filter-criteria"),
            "valueString": format!("Flag?patient.identifier={NHS_SYSTEM}|{THIRD}")}]},
        "channel": {"type": "rest-hook", "endpoint": "https://record.example.nhs.uk/fhir/notify",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": format!("{BACKPORT}/backport-payload-content"), "valueCode": "id-only"}]}},
    });
    let created = sent.send(
        "FHIR Subscription create",
        "fhir-subscribe",
        "subscribe",
        201,
        with_access(
            post(&ed, "/fhir/R4/Subscription")
                .header("content-type", "application/fhir+json")
                .body(fhir_sub.to_string()),
            "direct-care",
            "ed-clinician",
        ),
    );
    let fhir_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(b.publish(&b.token("gp-green"), &person_notice(THIRD)).status(), 201);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = json_of(get(&ed, &format!("/fhir/R4/Subscription/{fhir_id}/$status")).send().unwrap());
        let events = status["entry"][0]["resource"]["parameter"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "events-since-subscription-start"))
            .and_then(|p| p["valueString"].as_str())
            .unwrap_or("0")
            .to_owned();
        if events != "0" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the FHIR Subscription never had an event: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    sent.send(
        "FHIR Subscription $events",
        "fhir-events",
        "fhir-events",
        200,
        get(&ed, &format!("/fhir/R4/Subscription/{fhir_id}/$events?eventsSinceNumber=1")),
    );
    sent.send(
        "FHIR Subscription delete",
        "fhir-unsubscribe",
        "unsubscribe",
        204,
        b.http.delete(b.url(&format!("/fhir/R4/Subscription/{fhir_id}"))).bearer_auth(&ed),
    );

    // Break-glass review of the emergency look-up.
    let bg = queue["entries"].as_array().unwrap().first().unwrap_or_else(|| panic!("no break-glass entry: {queue}"));
    sent.send(
        "break-glass review",
        "bg-review",
        "break-glass-review",
        200,
        post(&ig, &format!("/v1/audit/break-glass/{}/review", bg["audit_id"].as_str().unwrap())).json(&json!({
            "outcome": "appropriate", "note": "justified", "reviewer": {"user_id": "ig-7", "role": "ig-lead"}
        })),
    );

    // Now, as an IG lead, every entry the review API shows.
    let entries = b.audit_entries_via_review();
    let mut wrong = Vec::new();
    for (what, id, action) in sent.0.borrow().iter() {
        let carrying: Vec<&Value> = entries.iter().filter(|e| e["request_id"] == id.as_str()).collect();
        let actions: Vec<&str> = carrying.iter().map(|e| e["action"].as_str().unwrap_or_default()).collect();
        if actions != [*action] {
            let newest_of_kind = entries
                .iter()
                .find(|e| e["action"] == *action)
                .map(|e| format!("the newest `{action}` entry has request_id {:?}", e["request_id"]))
                .unwrap_or_else(|| format!("no `{action}` entry at all"));
            wrong.push(format!(
                "{what}: sent with X-Request-Id {id}; want exactly one `{action}` entry with that id, found {actions:?} ({newest_of_kind})"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} audited requests are not found by their request id:\n{}",
        wrong.len(),
        sent.0.borrow().len(),
        wrong.join("\n")
    );
});
