//! The FHIR R4 facade, driven as a shared care record would, on both databases. Every resource
//! and Bundle it emits here is checked with independent R4 validators (HL7's R4 JSON Schema and
//! the fhir.resources models).

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::receiver::{Mode, Receiver};
use crate::support::*;
use crate::{both, both_backends};

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";
const TOPIC: &str = "https://vpr-broker.example/fhir/SubscriptionTopic/violence-risk-flag";
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

/// Every FHIR body a test saw, for validation at the end.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<Value>>);

impl Seen {
    fn keep(&self, v: Value) -> Value {
        self.0.lock().unwrap().push(v.clone());
        v
    }

    fn validate(&self) {
        let all = self.0.lock().unwrap().clone();
        assert!(!all.is_empty());
        assert_fhir_valid(&all);
    }
}

fn fhir_response(r: Response, status: u16, seen: &Seen) -> Value {
    assert_eq!(r.status(), status, "expected {status}");
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert_eq!(ct, "application/fhir+json");
    seen.keep(r.json().unwrap())
}

fn with_access(rb: reqwest::blocking::RequestBuilder, purpose: &str, role: &str) -> reqwest::blocking::RequestBuilder {
    rb.header("VPR-Purpose", purpose).header("VPR-User-Id", "user-1").header("VPR-User-Role", role)
}

fn search(b: &TestBroker, token: &str, purpose: &str, role: &str, form: &[(&str, &str)]) -> Response {
    with_access(b.http.post(b.url("/fhir/R4/Flag/_search")).bearer_auth(token).form(form), purpose, role)
        .send()
        .unwrap()
}

fn publish_person(b: &TestBroker, token: &str, nhs: &str) -> String {
    let r = b.publish(token, &person_notice(nhs));
    assert_eq!(r.status(), 201);
    json_of(r)["id"].as_str().unwrap().to_owned()
}

both!(the_capability_statement_describes_exactly_what_is_served, |b: &TestBroker| {
    let seen = Seen::default();
    let cs = fhir_response(b.http.get(b.url("/fhir/R4/metadata")).send().unwrap(), 200, &seen);
    assert_eq!((cs["resourceType"].as_str(), cs["fhirVersion"].as_str()), (Some("CapabilityStatement"), Some("4.0.1")));
    assert_eq!(cs["extension"][0]["valueCanonical"], TOPIC);
    let id = "6f1c2a56-8f7e-4a53-9d8e-2a4c7a0f0b11";
    let routed = |method: reqwest::Method, path: &str| {
        let body: Value = b.http.request(method.clone(), b.url(path)).send().unwrap().json().unwrap_or(Value::Null);
        let text = body.to_string();
        assert!(!text.contains("no resource at"), "{method} {path} is declared but not served: {body}");
    };
    let mut declared = Vec::new();
    for r in cs["rest"][0]["resource"].as_array().unwrap() {
        let kind = r["type"].as_str().unwrap();
        for i in r["interaction"].as_array().unwrap() {
            let (method, path) = match i["code"].as_str().unwrap() {
                "read" => (reqwest::Method::GET, format!("/fhir/R4/{kind}/{id}")),
                "search-type" => (reqwest::Method::GET, format!("/fhir/R4/{kind}")),
                "create" => (reqwest::Method::POST, format!("/fhir/R4/{kind}")),
                "delete" => (reqwest::Method::DELETE, format!("/fhir/R4/{kind}/{id}")),
                other => panic!("undeclared interaction {other}"),
            };
            routed(method, &path);
            declared.push(path.replace(id, "{id}"));
        }
        for op in r["operation"].as_array().into_iter().flatten() {
            let path = format!("/fhir/R4/{kind}/{id}/${}", op["name"].as_str().unwrap());
            routed(reqwest::Method::GET, &path);
            declared.push(path.replace(id, "{id}"));
        }
    }
    // Nothing else is served under /fhir: every FHIR route in the OpenAPI document is declared.
    let doc: Value = json_of(b.http.get(b.url("/openapi.json")).send().unwrap());
    for path in doc["paths"].as_object().unwrap().keys().filter(|p| p.starts_with("/fhir/R4/")) {
        let ok = path == "/fhir/R4/metadata" || path == "/fhir/R4/Flag/_search" || declared.contains(path);
        assert!(ok, "{path} is served but not in the CapabilityStatement");
    }
    // An unknown FHIR path is an OperationOutcome.
    let oo = fhir_response(b.http.get(b.url("/fhir/R4/Patient")).send().unwrap(), 404, &seen);
    assert_eq!(oo["issue"][0]["code"], "not-found");
    seen.validate();
});

both!(flags_are_found_by_nhs_number_in_the_view_the_agreement_decides, |b: &TestBroker| {
    let seen = Seen::default();
    let (acute, amb, gp) = (b.token("acute-ed"), b.token("amb-cad"), b.token("gp-green"));
    let id = publish_person(b, &acute, "9990000018");
    publish_person(b, &acute, "9990000026");
    let patient = format!("{NHS}|9990000018");
    // An ambulance dispatcher: the summary view.
    let bundle = fhir_response(
        search(b, &amb, "staff-safety", "ambulance-dispatcher", &[("patient.identifier", &patient)]),
        200,
        &seen,
    );
    assert_eq!((bundle["type"].as_str(), bundle["total"].as_i64()), (Some("searchset"), Some(1)));
    let flag = &bundle["entry"][0]["resource"];
    assert_eq!((flag["id"].as_str(), flag["status"].as_str()), (Some(id.as_str()), Some("active")));
    assert_eq!(flag["meta"]["profile"][0], "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Flag");
    assert_eq!(flag["meta"]["security"][0]["code"], "VIO");
    assert_eq!(flag["code"]["coding"][0]["code"], "391155006");
    assert_eq!(flag["code"]["coding"][1]["code"], "high");
    assert!(flag["code"]["text"].as_str().unwrap().starts_with("High risk of violence to staff: physical assault."));
    assert_eq!(flag["subject"]["identifier"]["value"], "9990000018", "the NHS number searched by");
    assert_eq!(flag["author"]["identifier"]["value"], "XAC01");
    assert_eq!(flag["period"]["end"], day(180));
    assert!(flag["period"].get("start").is_none(), "the incident date is outside the summary view");
    assert!(flag.to_string().contains("flag-contact") && flag.to_string().contains("attend-with-police"));
    assert!(!flag.to_string().contains("DATIX"), "restricted fields are withheld");
    // The same search in the URL, with the other accepted spellings.
    for param in ["subject:identifier", "patient:identifier"] {
        let r = with_access(
            b.http.get(b.url("/fhir/R4/Flag")).query(&[(param, patient.as_str())]).bearer_auth(&amb),
            "staff-safety",
            "ambulance-dispatcher",
        )
        .send()
        .unwrap();
        assert_eq!(fhir_response(r, 200, &seen)["total"], 1, "{param}");
    }
    // A GP receptionist: that a notice exists, and whom to call.
    let bundle = fhir_response(
        search(b, &gp, "staff-safety", "gp-receptionist", &[("patient.identifier", &patient)]),
        200,
        &seen,
    );
    let flag = &bundle["entry"][0]["resource"];
    assert_eq!(flag["code"]["coding"].as_array().unwrap().len(), 1);
    assert!(flag.get("period").is_none() && !flag.to_string().contains("violence-category"));
    // Read by id: the dispatcher's summary; the publisher's full Flag.
    let read = |token: &str, access: bool| {
        let rb = b.http.get(b.url(&format!("/fhir/R4/Flag/{id}"))).bearer_auth(token);
        if access { with_access(rb, "staff-safety", "ambulance-dispatcher") } else { rb }.send().unwrap()
    };
    let summary = fhir_response(read(&amb, true), 200, &seen);
    assert!(summary["subject"].get("identifier").is_none(), "read by id, the subject is not in the summary view");
    let full = fhir_response(read(&acute, false), 200, &seen);
    assert_eq!(
        (full["subject"]["identifier"]["value"].as_str(), full["period"]["start"].as_str()),
        (Some("9990000018"), Some(day(-10).as_str()))
    );
    assert!(full.to_string().contains("DATIX-0001"));
    // Filters.
    let none = fhir_response(
        search(
            b,
            &amb,
            "staff-safety",
            "ambulance-dispatcher",
            &[("patient.identifier", &patient), ("status", "inactive")],
        ),
        200,
        &seen,
    );
    assert_eq!(none["total"], 0);
    let later = format!("gt{}", day(2));
    let none = fhir_response(
        search(
            b,
            &amb,
            "staff-safety",
            "ambulance-dispatcher",
            &[("patient.identifier", &patient), ("_lastUpdated", &later)],
        ),
        200,
        &seen,
    );
    assert_eq!(none["total"], 0);
    // Paging, by an opaque link that holds no identifier.
    publish_person(b, &acute, "9990000018");
    publish_person(b, &acute, "9990000018");
    let page1 = fhir_response(
        search(b, &amb, "staff-safety", "ambulance-dispatcher", &[("patient.identifier", &patient), ("_count", "2")]),
        200,
        &seen,
    );
    assert_eq!((page1["total"].as_i64(), page1["entry"].as_array().unwrap().len()), (Some(3), 2));
    let next = page1["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!next.contains("9990000018"));
    let next_path = next.strip_prefix(&b.base).unwrap().to_owned();
    let page2 = fhir_response(
        with_access(b.http.get(b.url(&next_path)).bearer_auth(&amb), "staff-safety", "ambulance-dispatcher")
            .send()
            .unwrap(),
        200,
        &seen,
    );
    assert_eq!(page2["entry"].as_array().unwrap().len(), 1);
    let stolen =
        with_access(b.http.get(b.url(&next_path)).bearer_auth(&gp), "staff-safety", "gp-receptionist").send().unwrap();
    assert_eq!(
        fhir_response(stolen, 422, &seen)["issue"][0]["diagnostics"].as_str().unwrap().split(' ').next(),
        Some("page-token")
    );
    // Bad input: an OperationOutcome naming the parameter and the rule.
    for (form, rule) in [
        (vec![("patient.identifier", format!("{NHS}|9990000019"))], "nhs-number-check-digit"),
        (vec![("patient.identifier", "https://example.org/mrn|12345".to_owned())], "identifier-system"),
        (vec![("status", "active".to_owned())], "required"),
        (vec![("patient.identifier", patient.clone()), ("colour", "red".to_owned())], "unknown-parameter"),
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let oo = fhir_response(search(b, &amb, "staff-safety", "ambulance-dispatcher", &form), 422, &seen);
        assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().starts_with(rule), "{oo}");
    }
    seen.validate();
});

both!(address_and_telephone_notices_read_as_flags_about_a_location_or_a_caller, |b: &TestBroker| {
    let seen = Seen::default();
    let (acute, amb) = (b.token("acute-ed"), b.token("amb-cad"));
    let mut address = address_notice("ZZ99 3WZ", "17 Marrowbone Crescent");
    address["subject"]["address"]["uprn"] = json!("987654321098");
    let mut phone = address_notice("ZZ99 3WZ", "unused");
    phone["subject"] = json!({"telephone": "07700 900123"});
    phone["category"] = json!("directed-verbal-abuse");
    let ids: Vec<String> = [address, phone]
        .iter()
        .map(|n| {
            let r = b.publish(&acute, n);
            assert_eq!(r.status(), 201);
            json_of(r)["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let read = |token: &str, id: &str, access: bool| {
        let rb = b.http.get(b.url(&format!("/fhir/R4/Flag/{id}"))).bearer_auth(token);
        fhir_response(
            if access { with_access(rb, "staff-safety", "ambulance-dispatcher") } else { rb }.send().unwrap(),
            200,
            &seen,
        )
    };
    // The publisher: the address is a Location with its UPRN; the caller's number is named.
    let full = read(&acute, &ids[0], false);
    assert_eq!(full["subject"]["type"], "Location");
    assert_eq!(full["subject"]["display"], "17 Marrowbone Crescent, ZZ99 3WZ");
    assert_eq!(full["subject"]["identifier"]["value"], "987654321098");
    let full = read(&acute, &ids[1], false);
    assert_eq!(full["subject"]["display"], "Telephone +447700900123");
    assert!(full["code"]["text"].as_str().unwrap().contains("directed verbal abuse"));
    // A dispatcher's summary: the alert and its advice, but neither the address nor the number.
    for id in &ids {
        let summary = read(&amb, id, true);
        assert_eq!(summary["status"], "active");
        let text = summary.to_string();
        assert!(
            !text.contains("Marrowbone") && !text.contains("987654321098") && !text.contains("7700900123"),
            "{summary:#}"
        );
        assert!(text.contains("weapons-reported"), "{summary:#}");
    }
    seen.validate();
});

both!(a_search_for_a_purpose_the_agreement_refuses_is_an_operation_outcome_and_audited, |b: &TestBroker| {
    let seen = Seen::default();
    let (acute, amb) = (b.token("acute-ed"), b.token("amb-cad"));
    publish_person(b, &acute, "9990000018");
    let patient = format!("{NHS}|9990000018");
    let before = b.count("audit_entries WHERE action = 'fhir-search'");
    let oo = fhir_response(
        search(b, &amb, "marketing", "ambulance-dispatcher", &[("patient.identifier", &patient)]),
        403,
        &seen,
    );
    assert_eq!(
        (oo["resourceType"].as_str(), oo["issue"][0]["code"].as_str()),
        (Some("OperationOutcome"), Some("forbidden"))
    );
    assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().contains("marketing"));
    let audit = b.last_audit();
    assert_eq!(
        (audit["action"].as_str(), audit["decision"].as_str(), audit["outcome"].as_i64()),
        (Some("fhir-search"), Some("refused"), Some(403))
    );
    assert_eq!(b.count("audit_entries WHERE action = 'fhir-search'"), before + 1);
    // A role the system does not hold, and no purpose at all, likewise.
    let oo =
        fhir_response(search(b, &amb, "staff-safety", "gp-clinician", &[("patient.identifier", &patient)]), 403, &seen);
    assert_eq!(oo["issue"][0]["code"], "forbidden");
    let bare = b
        .http
        .post(b.url("/fhir/R4/Flag/_search"))
        .bearer_auth(&amb)
        .form(&[("patient.identifier", patient.as_str())])
        .send()
        .unwrap();
    assert_eq!(
        fhir_response(bare, 422, &seen)["issue"][0]["diagnostics"].as_str().unwrap().split(' ').next(),
        Some("purpose-required")
    );
    assert_eq!(b.count("audit_entries WHERE action = 'fhir-search' AND decision = 'refused'"), 3);
    seen.validate();
});

/// The independent check of a FHIR notification's detached signature: the compact JWS with the
/// body put back in the middle.
fn assert_signed(b: &TestBroker, body: &str, signature: &str) {
    let Some(python) = python() else { return };
    let (header, sig) = signature.split_once("..").expect("a detached JWS");
    let compact = format!("{header}.{}.{sig}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body));
    let jwks: Value = json_of(b.http.get(b.url("/.well-known/jwks.json")).send().unwrap());
    let out =
        run_checker(&python, "jose_check.py", &json!({"body": compact, "jwks": jwks})).expect("the signature verifies");
    assert_eq!(out["jws_header"]["typ"], "vpr-notification+jws");
}

/// The status Parameters of a notification Bundle: (type, events since start, event numbers,
/// focus references).
fn status_of(bundle: &Value) -> (String, i64, Vec<i64>, Vec<String>) {
    let params = bundle["entry"][0]["resource"]["parameter"].as_array().unwrap();
    let get = |name: &str| params.iter().find(|p| p["name"] == name).cloned().unwrap_or(Value::Null);
    let mut numbers = Vec::new();
    let mut focus = Vec::new();
    for e in params.iter().filter(|p| p["name"] == "notification-event") {
        for part in e["part"].as_array().unwrap() {
            match part["name"].as_str().unwrap() {
                "event-number" => numbers.push(part["valueString"].as_str().unwrap().parse().unwrap()),
                "focus" => focus.push(part["valueReference"]["reference"].as_str().unwrap().to_owned()),
                _ => {}
            }
        }
    }
    (
        get("type")["valueCode"].as_str().unwrap().to_owned(),
        get("events-since-subscription-start")["valueString"].as_str().unwrap().parse().unwrap(),
        numbers,
        focus,
    )
}

both_backends!(a_care_record_subscribes_misses_notifications_and_fills_the_gap, |backend: Backend| {
    let Some(b) = TestBroker::start_delivering(backend, |cfg| {
        cfg["delivery"].as_table_mut().unwrap().insert("min_heartbeat_seconds".into(), 1.into());
    }) else {
        return;
    };
    let seen = Seen::default();
    let record = Receiver::start();
    let ed = b.token("acute-ed");
    let gp = b.token("gp-green");
    let subscription = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Keep the ED's alerts for its patients true",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": format!("{BACKPORT}/backport-filter-criteria"), "valueString": format!("Flag?patient.identifier={NHS}|9990000018")}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": record.url,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": format!("{BACKPORT}/backport-payload-content"), "valueCode": "full-resource"}]},
            "extension": [{"url": format!("{BACKPORT}/backport-heartbeat-period"), "valueUnsignedInt": 2}],
        },
    });
    let create = |body: &Value| {
        with_access(
            b.http
                .post(b.url("/fhir/R4/Subscription"))
                .bearer_auth(&ed)
                .header("content-type", "application/fhir+json")
                .body(body.to_string()),
            "direct-care",
            "ed-clinician",
        )
        .send()
        .unwrap()
    };
    let sub = fhir_response(create(&subscription), 201, &seen);
    assert_eq!(sub["status"], "active", "a clinician's cohort subscription is allowed outright (SUB-3)");
    let id = sub["id"].as_str().unwrap().to_owned();
    // Bad subscriptions are refused field by field.
    let mut bad = subscription.clone();
    bad["criteria"] = json!("Flag?status=active");
    bad.as_object_mut().unwrap().remove("reason");
    bad["channel"]["type"] = json!("websocket");
    let oo = fhir_response(create(&bad), 422, &seen);
    let rules: Vec<&str> = oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["diagnostics"].as_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(rules, vec!["topic", "required", "channel-type"]);

    // The GP publishes about the patient: created, then amended.
    let notice = publish_person(&b, &gp, "9990000018");
    publish_person(&b, &gp, "9990000026");
    assert!(record.wait_for(1, Duration::from_secs(20)), "{}", b.log());
    let mut amended = person_notice("9990000018");
    amended["risk_level"] = json!("moderate");
    let r = b
        .http
        .put(b.url(&format!("/v1/notices/{notice}")))
        .bearer_auth(&gp)
        .header("If-Match", "\"1\"")
        .json(&amended)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(record.wait_for(2, Duration::from_secs(20)));
    // The record loses two notifications (it failed after acknowledging them).
    record.set_mode(Mode::AckAndLose);
    let second = publish_person(&b, &gp, "9990000018");
    let review = json!({"review_date": day(200), "note": "still needed"});
    assert_eq!(b.post_json(&gp, &format!("/v1/notices/{second}/review"), &review).status(), 200);
    b.wait_subscription(&ed, &id, Duration::from_secs(20), |_| record.hits().len() >= 4);
    record.set_mode(Mode::Ack);
    assert_eq!(
        b.post_json(&gp, &format!("/v1/notices/{notice}/withdraw"), &json!({"reason": "no longer current"})).status(),
        200
    );
    assert!(record.wait_for(3, Duration::from_secs(20)));

    let kept: Vec<(Value, String)> = record
        .hits()
        .into_iter()
        .filter(|h| h.processed)
        .map(|h| (seen.keep(serde_json::from_str(&h.body).unwrap()), h.signature))
        .collect();
    let notifications: Vec<&(Value, String)> =
        kept.iter().filter(|(b, _)| status_of(b).0 == "event-notification").collect();
    let numbers: Vec<i64> = notifications.iter().map(|(b, _)| status_of(b).1).collect();
    assert_eq!(numbers, vec![1, 2, 5], "the record sees events 3 and 4 are missing");
    for (bundle, signature) in &kept {
        assert_eq!(bundle["type"], "history");
        assert_signed(&b, &bundle.to_string(), signature);
    }
    let (created, amended) = (&notifications[0].0, &notifications[1].0);
    assert_eq!(status_of(created).3, vec![format!("{}/fhir/R4/Flag/{notice}", b.base)]);
    let flag = &created["entry"][1]["resource"];
    assert_eq!(
        (flag["status"].as_str(), flag["subject"]["identifier"]["value"].as_str()),
        (Some("active"), Some("9990000018"))
    );
    assert_eq!(amended["entry"][1]["resource"]["code"]["coding"][1]["code"], "moderate");
    let withdrawn = &notifications[2].0["entry"][1]["resource"];
    assert_eq!(withdrawn["status"], "inactive", "the withdrawn Flag becomes inactive");
    assert_eq!(withdrawn["subject"]["identifier"]["value"], "9990000018");
    // Filling the gap with $events.
    let events = b
        .http
        .get(b.url(&format!("/fhir/R4/Subscription/{id}/$events?eventsSinceNumber=3&eventsUntilNumber=4")))
        .bearer_auth(&ed)
        .send()
        .unwrap();
    let events = fhir_response(events, 200, &seen);
    let (kind, since_start, numbers, focus) = status_of(&events);
    assert_eq!((kind.as_str(), since_start, numbers), ("query-event", 5, vec![3, 4]));
    assert_eq!(focus, vec![format!("{}/fhir/R4/Flag/{second}", b.base); 2]);
    assert_eq!(events["entry"].as_array().unwrap().len(), 3, "status and the Flag for each event");
    let id_only = fhir_response(
        b.http
            .get(b.url(&format!("/fhir/R4/Subscription/{id}/$events?eventsSinceNumber=3&content=id-only")))
            .bearer_auth(&ed)
            .send()
            .unwrap(),
        200,
        &seen,
    );
    assert_eq!((id_only["entry"].as_array().unwrap().len(), status_of(&id_only).2), (1, vec![3, 4, 5]));
    assert_eq!(
        b.count("audit_entries WHERE action = 'fhir-events'"),
        2,
        "each read of events is an audited disclosure"
    );
    // $status, and a heartbeat while nothing happens.
    let status = fhir_response(
        b.http.get(b.url(&format!("/fhir/R4/Subscription/{id}/$status"))).bearer_auth(&ed).send().unwrap(),
        200,
        &seen,
    );
    assert_eq!(status_of(&status).0, "query-status");
    assert_eq!(status_of(&status).1, 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let heartbeat = loop {
        let beat = record
            .hits()
            .into_iter()
            .map(|h| serde_json::from_str::<Value>(&h.body).unwrap())
            .find(|b| status_of(b).0 == "heartbeat");
        if let Some(beat) = beat {
            break beat;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status_of(&seen.keep(heartbeat)).1, 5);
    // Read back, then delete.
    let read = fhir_response(
        b.http.get(b.url(&format!("/fhir/R4/Subscription/{id}"))).bearer_auth(&ed).send().unwrap(),
        200,
        &seen,
    );
    assert_eq!((read["criteria"].as_str(), read["extension"][0]["valueUnsignedInt"].as_i64()), (Some(TOPIC), Some(1)));
    assert!(!read.to_string().contains("9990000018"), "the filter's identifiers are held as blind indexes only");
    let other = b.http.get(b.url(&format!("/fhir/R4/Subscription/{id}"))).bearer_auth(&gp).send().unwrap();
    assert_eq!(fhir_response(other, 403, &seen)["issue"][0]["code"], "forbidden");
    assert_eq!(
        b.http.delete(b.url(&format!("/fhir/R4/Subscription/{id}"))).bearer_auth(&ed).send().unwrap().status(),
        204
    );
    let gone = fhir_response(
        b.http.get(b.url(&format!("/fhir/R4/Subscription/{id}"))).bearer_auth(&ed).send().unwrap(),
        200,
        &seen,
    );
    assert_eq!(gone["status"], "off");
    seen.validate();
});

both!(the_audit_log_is_exported_as_audit_events_for_ig, |b: &TestBroker| {
    let seen = Seen::default();
    let (acute, amb, ig) = (b.token("acute-ed"), b.token("amb-cad"), b.token("icb-ig"));
    let id = publish_person(b, &acute, "9990000018");
    let patient = format!("{NHS}|9990000018");
    fhir_response(
        search(b, &amb, "staff-safety", "ambulance-dispatcher", &[("patient.identifier", &patient)]),
        200,
        &seen,
    );
    fhir_response(
        search(b, &amb, "marketing", "ambulance-dispatcher", &[("patient.identifier", &patient)]),
        403,
        &seen,
    );
    let export = |token: &str, role: &str, query: &str| {
        b.http
            .get(b.url(&format!("/fhir/R4/AuditEvent{query}")))
            .bearer_auth(token)
            .header("VPR-User-Id", "ig-1")
            .header("VPR-User-Role", role)
            .send()
            .unwrap()
    };
    let bundle = fhir_response(export(&ig, "ig-lead", &format!("?entity=Flag/{id}&date=ge{}", day(-1))), 200, &seen);
    let events: Vec<&Value> = bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    assert_eq!(events.len(), 1, "the permitted search, which decided on the Flag");
    let e = events[0];
    assert_eq!(
        (e["action"].as_str(), e["outcome"].as_str(), e["purposeOfEvent"][0]["coding"][0]["code"].as_str()),
        (Some("E"), Some("0"), Some("staff-safety"))
    );
    assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "XAM01");
    assert!(e["agent"][0]["policy"][0].as_str().unwrap().ends_with(":clause:SS-1"));
    assert_eq!(e["entity"][0]["what"]["reference"], format!("Flag/{id}"));
    assert!(!e.to_string().contains("9990000018"), "subjects only as blind references");
    let all = fhir_response(export(&ig, "dpo", "?_count=2"), 200, &seen);
    assert_eq!(all["entry"].as_array().unwrap().len(), 2);
    assert!(all["link"].as_array().unwrap().iter().any(|l| l["relation"] == "next"));
    let refused = fhir_response(export(&ig, "ig-lead", "?purpose=marketing"), 200, &seen);
    assert_eq!(refused["entry"][0]["resource"]["outcome"], "4");
    // Only IG roles; a refusal is audited.
    assert_eq!(fhir_response(export(&amb, "ambulance-dispatcher", ""), 403, &seen)["issue"][0]["code"], "forbidden");
    assert_eq!(fhir_response(export(&ig, "ig-lead", "?colour=red"), 422, &seen)["issue"][0]["code"], "invalid");
    assert!(b.count("audit_entries WHERE action = 'audit-event-export'") >= 3);
    seen.validate();
});
