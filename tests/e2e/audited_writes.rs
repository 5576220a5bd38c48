//! Every write that carries an audit entry commits the change and its entry together: with the
//! audit log unwritable the write is refused (503, and nothing internal in the answer), and once
//! the log is back nothing had changed and the same write succeeds. The read path is tested the
//! same way in `lookups.rs`.
//!
//! Each write is tried under both outages of `AuditOutage` (the table renamed away, and a trigger
//! refusing new rows), on fresh fixtures each time; the failure message names the write and the
//! outage. Writes covered: consent, objection, break-glass review, subscription create, replace,
//! approve, reject, revoke and delete, and the FHIR facade's Subscription create and delete.
//! (Publishing, amending and withdrawing notices and changing a cohort write no audit entry, so
//! they are not here.)

use serde_json::{json, Value};

use crate::both;
use crate::support::*;

/// Checks the refusal a write gets while the audit log is unwritable: 503, problem+json, a
/// valid problem, and no internal error text.
fn assert_refused(what: &str, r: Response) {
    let status = r.status().as_u16();
    let ct = content_type(&r);
    let text = r.text().unwrap_or_default();
    assert_eq!(status, 503, "{what}: while the audit log is unwritable the write must be refused with 503: {text}");
    assert_eq!(ct, "application/problem+json", "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert_matches_schema("problem.schema.json", &body);
    assert_eq!(body["status"], 503, "{what}: {body}");
    no_internal_text(what, &text);
}

/// The same, for the FHIR facade, whose errors are OperationOutcomes by contract.
fn assert_refused_fhir(what: &str, r: Response) {
    let status = r.status().as_u16();
    let ct = content_type(&r);
    let text = r.text().unwrap_or_default();
    assert_eq!(status, 503, "{what}: while the audit log is unwritable the write must be refused with 503: {text}");
    assert_eq!(ct, "application/fhir+json", "{what}: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
    assert_eq!(
        (body["resourceType"].as_str(), body["issue"][0]["code"].as_str()),
        (Some("OperationOutcome"), Some("transient")),
        "{what}: {body}"
    );
    no_internal_text(what, &text);
}

fn no_internal_text(what: &str, text: &str) {
    for leak in ["audit_entries", "e2e:", "unwritable", "trigger", "relation", "sqlite", "SQL"] {
        assert!(!text.contains(leak), "{what}: internal error text `{leak}` reached the client: {text}");
    }
}

/// Runs `case` once per outage, naming it.
fn under_each_outage(name: &str, mut case: impl FnMut(&str, AuditOutage, usize)) {
    for (i, how) in AuditOutage::ALL.into_iter().enumerate() {
        case(&format!("{name} (audit log {how:?})"), how, i);
    }
}

/// Fresh, valid test-range NHS numbers, one per outage.
const SUBJECTS: [&str; 2] = ["9990000034", "9990000042"];

fn lookup_count(b: &TestBroker, client: &str, role: &str, purpose: &str, nhs: &str) -> usize {
    let body = json!({"purpose": purpose, "requester": {"user_id": format!("{client}-user"), "role": role},
        "subject": {"person": {"nhs_number": nhs}}});
    let r = b.post_json(&b.token(client), "/v1/lookups", &body);
    assert_eq!(r.status(), 200, "look-up by {client} for {purpose}");
    json_of(r)["results"].as_array().unwrap().len()
}

fn publish_about(b: &TestBroker, nhs: &str) -> String {
    let r = b.publish(&b.token("amb-cad"), &person_notice(nhs));
    assert_eq!(r.status(), 201);
    json_of(r)["id"].as_str().unwrap().to_owned()
}

fn directive(nhs: &str, purpose: &str, status: &str, evidence: &str) -> Value {
    json!({"subject": {"person": {"nhs_number": nhs}}, "purpose": purpose, "status": status,
        "evidence_reference": evidence, "requester": {"user_id": "ig-1", "role": "ig-lead"}})
}

both!(a_consent_is_not_recorded_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("POST /v1/consents", |what, how, i| {
        let nhs = SUBJECTS[i];
        publish_about(b, nhs);
        let social_care = || lookup_count(b, "council", "social-worker", "social-care-support", nhs);
        assert_eq!(social_care(), 0, "{what}: social care support needs consent");
        let ig = b.token("icb-ig");
        let consent = directive(nhs, "social-care-support", "given", &format!("ASC-CONSENT-{i}"));
        let directives = b.count("subject_directives");
        b.break_audit(how);
        let r = b.post_json(&ig, "/v1/consents", &consent);
        b.restore_audit(how);
        assert_refused(what, r);
        assert_eq!(b.count("subject_directives"), directives, "{what}: the consent was stored without its audit entry");
        assert_eq!(social_care(), 0, "{what}: the refused consent took effect");
        assert_eq!(b.post_json(&ig, "/v1/consents", &consent).status(), 201, "{what}: once the log is back");
        assert_eq!(b.last_audit()["action"], "consent", "{what}");
        assert_eq!(social_care(), 1, "{what}: the recorded consent takes effect");
    });
});

both!(an_objection_is_not_recorded_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("POST /v1/objections", |what, how, i| {
        let nhs = SUBJECTS[i];
        publish_about(b, nhs);
        let direct_care = || lookup_count(b, "gp-green", "gp-clinician", "direct-care", nhs);
        assert_eq!(direct_care(), 1, "{what}: direct care sees the notice before any objection");
        let ig = b.token("icb-ig");
        let objection = directive(nhs, "direct-care", "upheld", &format!("IG-OBJ-{i}"));
        let directives = b.count("subject_directives");
        b.break_audit(how);
        let r = b.post_json(&ig, "/v1/objections", &objection);
        b.restore_audit(how);
        assert_refused(what, r);
        assert_eq!(
            b.count("subject_directives"),
            directives,
            "{what}: the objection was stored without its audit entry"
        );
        assert_eq!(direct_care(), 1, "{what}: the refused objection took effect");
        assert_eq!(b.post_json(&ig, "/v1/objections", &objection).status(), 201, "{what}: once the log is back");
        assert_eq!(b.last_audit()["action"], "objection", "{what}");
        assert_eq!(direct_care(), 0, "{what}: the upheld objection takes effect");
    });
});

/// The break-glass queue with the given review status, as audit ids.
fn queue(b: &TestBroker, status: &str) -> Vec<String> {
    let r = b.as_ig(b.http.get(b.url(&format!("/v1/audit/break-glass?status={status}")))).send().unwrap();
    assert_eq!(r.status(), 200);
    json_of(r)["entries"].as_array().unwrap().iter().map(|e| e["audit_id"].as_str().unwrap().to_owned()).collect()
}

both!(a_break_glass_review_is_not_recorded_without_its_audit_entry, |b: &TestBroker| {
    // The outcome is kept on the break-glass access's own audit entry, so with the table renamed
    // the review could not be recorded at all; the outage here refuses only new entries.
    let what = "POST /v1/audit/break-glass/{id}/review (audit log InsertsRefused)";
    let how = AuditOutage::InsertsRefused;
    let nhs = SUBJECTS[0];
    publish_about(b, nhs);
    let body = json!({"purpose": "direct-care", "requester": {"user_id": "ed-doc-9", "role": "ed-clinician"},
        "break_glass": {"justification": "patient unconscious in resus, history unknown, staff at risk"},
        "subject": {"person": {"nhs_number": nhs}}});
    assert_eq!(b.post_json(&b.token("acute-ed"), "/v1/lookups", &body).status(), 200);
    let pending = queue(b, "pending");
    assert_eq!(pending.len(), 1, "{what}: the emergency access awaits review");
    let id = pending[0].clone();
    let review = json!({"outcome": "appropriate", "note": "emergency access justified: unconscious patient",
        "reviewer": {"user_id": "ig-7", "role": "ig-lead"}});
    let path = format!("/v1/audit/break-glass/{id}/review");
    let ig = b.token("icb-ig");
    b.break_audit(how);
    let r = b.post_json(&ig, &path, &review);
    b.restore_audit(how);
    assert_refused(what, r);
    assert_eq!(queue(b, "pending"), vec![id.clone()], "{what}: the access must still await review");
    assert!(queue(b, "appropriate").is_empty(), "{what}: an outcome was recorded without its audit entry");
    let r = b.post_json(&ig, &path, &review);
    assert_eq!(r.status(), 200, "{what}: once the log is back: {}", r.text().unwrap_or_default());
    assert_eq!(b.last_audit()["action"], "break-glass-review", "{what}");
    assert!(queue(b, "pending").is_empty(), "{what}");
    assert_eq!(queue(b, "appropriate"), vec![id], "{what}");
});

/// An ambulance dispatcher's feed subscription to `LS` (allowed outright by SUB-1).
fn ambulance_feed(tag: &str, postcodes: &[&str]) -> Value {
    json!({
        "purpose": "staff-safety", "role": "ambulance-dispatcher", "criteria": {"postcodes": postcodes},
        "payload": "view", "delivery": {"method": "feed"}, "tag": tag,
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
    })
}

/// A police subscription for crime prevention, which waits for an IG lead's approval.
fn police_feed(tag: &str) -> Value {
    json!({
        "purpose": "crime-prevention", "role": "police-officer", "criteria": {"postcodes": ["LS"]},
        "payload": "view", "delivery": {"method": "feed"}, "tag": tag,
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
    })
}

fn subscription(b: &TestBroker, token: &str, id: &str) -> Value {
    let r = b.get(token, &format!("/v1/subscriptions/{id}"));
    assert_eq!(r.status(), 200);
    json_of(r)
}

fn tags(b: &TestBroker, token: &str) -> Vec<String> {
    json_of(b.get(token, "/v1/subscriptions"))["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["tag"].as_str().map(str::to_owned))
        .collect()
}

both!(a_subscription_is_not_created_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("POST /v1/subscriptions", |what, how, i| {
        let amb = b.token("amb-cad");
        let tag = format!("created-{i}");
        let before = b.count("subscriptions");
        b.break_audit(how);
        let r = b.post_json(&amb, "/v1/subscriptions", &ambulance_feed(&tag, &["LS"]));
        b.restore_audit(how);
        assert_refused(what, r);
        assert_eq!(b.count("subscriptions"), before, "{what}: the subscription was stored without its audit entry");
        assert!(!tags(b, &amb).contains(&tag), "{what}: the refused subscription is listed");
        let sub = b.subscribe(&amb, &ambulance_feed(&tag, &["LS"]));
        assert_eq!(sub["status"], "active", "{what}");
        assert_eq!(b.last_audit()["action"], "subscribe", "{what}");
        assert!(tags(b, &amb).contains(&tag), "{what}");
    });
});

both!(a_subscription_is_not_replaced_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("PUT /v1/subscriptions/{id}", |what, how, i| {
        let amb = b.token("amb-cad");
        let tag = format!("replaced-{i}");
        let id = b.subscribe(&amb, &ambulance_feed(&tag, &["LS"]))["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/subscriptions/{id}");
        b.break_audit(how);
        let r = b.put_json(&amb, &path, &ambulance_feed(&tag, &["BD"]));
        b.restore_audit(how);
        assert_refused(what, r);
        assert_eq!(
            subscription(b, &amb, &id)["criteria"]["postcodes"],
            json!(["LS"]),
            "{what}: the change was stored without its audit entry"
        );
        let r = b.put_json(&amb, &path, &ambulance_feed(&tag, &["BD"]));
        assert_eq!(r.status(), 200, "{what}: once the log is back");
        assert_eq!(b.last_audit()["action"], "subscription-change", "{what}");
        assert_eq!(subscription(b, &amb, &id)["criteria"]["postcodes"], json!(["BD"]), "{what}");
    });
});

/// IG's decision on a subscription: approve and reject one awaiting approval, revoke an active one.
fn ig_decision(b: &TestBroker, decision: &str, from_status: &str, to_status: &str) {
    under_each_outage(&format!("POST /v1/subscriptions/{{id}}/approval ({decision})"), |what, how, i| {
        let (owner, id) = if from_status == "pending-approval" {
            let police = b.token("police");
            let sub = b.subscribe(&police, &police_feed(&format!("{decision}-{i}")));
            assert_eq!(sub["status"], "pending-approval", "{what}");
            (police, sub["id"].as_str().unwrap().to_owned())
        } else {
            let amb = b.token("amb-cad");
            let sub = b.subscribe(&amb, &ambulance_feed(&format!("{decision}-{i}"), &["LS"]));
            assert_eq!(sub["status"], from_status, "{what}");
            (amb, sub["id"].as_str().unwrap().to_owned())
        };
        let ig = b.token("icb-ig");
        let body = json!({"decision": decision, "note": "reviewed by the Caldicott guardian",
            "reviewer": {"user_id": "ig-7", "role": "ig-lead"}});
        let path = format!("/v1/subscriptions/{id}/approval");
        b.break_audit(how);
        let r = b.post_json(&ig, &path, &body);
        b.restore_audit(how);
        assert_refused(what, r);
        assert_eq!(
            subscription(b, &owner, &id)["status"],
            from_status,
            "{what}: the decision was stored without its audit entry"
        );
        let r = b.post_json(&ig, &path, &body);
        assert_eq!(r.status(), 200, "{what}: once the log is back");
        assert_eq!(b.last_audit()["action"], "subscription-approval", "{what}");
        assert_eq!(subscription(b, &owner, &id)["status"], to_status, "{what}");
    });
}

both!(a_subscription_is_not_approved_without_its_audit_entry, |b: &TestBroker| {
    ig_decision(b, "approve", "pending-approval", "active");
});

both!(a_subscription_is_not_rejected_without_its_audit_entry, |b: &TestBroker| {
    ig_decision(b, "reject", "pending-approval", "rejected");
});

both!(a_subscription_is_not_revoked_without_its_audit_entry, |b: &TestBroker| {
    ig_decision(b, "revoke", "active", "revoked");
});

both!(a_subscription_is_not_deleted_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("DELETE /v1/subscriptions/{id}", |what, how, i| {
        let amb = b.token("amb-cad");
        let id =
            b.subscribe(&amb, &ambulance_feed(&format!("deleted-{i}"), &["LS"]))["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/subscriptions/{id}");
        b.break_audit(how);
        let r = b.delete(&amb, &path);
        b.restore_audit(how);
        assert_refused(what, r);
        assert_eq!(
            subscription(b, &amb, &id)["status"],
            "active",
            "{what}: the deletion was stored without its audit entry"
        );
        let r = b.delete(&amb, &path);
        assert_eq!(r.status(), 200, "{what}: once the log is back");
        assert_eq!(b.last_audit()["action"], "unsubscribe", "{what}");
        assert_eq!(subscription(b, &amb, &id)["status"], "deleted", "{what}");
    });
});

const TOPIC: &str = "https://vpr-broker.example/fhir/SubscriptionTopic/violence-risk-flag";
const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

fn fhir_subscription(nhs: &str) -> Value {
    json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Keep the ED's alerts for its patients true",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": format!("{BACKPORT}/backport-filter-criteria"),
            "valueString": format!("Flag?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}")}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://record.example.nhs.uk/fhir/notify",
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": format!("{BACKPORT}/backport-payload-content"), "valueCode": "id-only"}]},
        },
    })
}

fn fhir_create(b: &TestBroker, token: &str, body: &Value) -> Response {
    b.http
        .post(b.url("/fhir/R4/Subscription"))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .header("VPR-Purpose", "direct-care")
        .header("VPR-User-Id", "ed-user-1")
        .header("VPR-User-Role", "ed-clinician")
        .body(body.to_string())
        .send()
        .unwrap()
}

both!(a_fhir_subscription_is_not_created_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("POST /fhir/R4/Subscription", |what, how, i| {
        let ed = b.token("acute-ed");
        let body = fhir_subscription(SUBJECTS[i]);
        let before = b.count("subscriptions");
        let listed = json_of(b.get(&ed, "/v1/subscriptions"))["subscriptions"].as_array().unwrap().len();
        b.break_audit(how);
        let r = fhir_create(b, &ed, &body);
        b.restore_audit(how);
        assert_refused_fhir(what, r);
        assert_eq!(b.count("subscriptions"), before, "{what}: the Subscription was stored without its audit entry");
        assert_eq!(
            json_of(b.get(&ed, "/v1/subscriptions"))["subscriptions"].as_array().unwrap().len(),
            listed,
            "{what}: the refused Subscription is listed"
        );
        let r = fhir_create(b, &ed, &body);
        assert_eq!(r.status(), 201, "{what}: once the log is back: {}", r.text().unwrap_or_default());
        assert_eq!(b.last_audit()["action"], "subscribe", "{what}");
    });
});

both!(a_fhir_subscription_is_not_deleted_without_its_audit_entry, |b: &TestBroker| {
    under_each_outage("DELETE /fhir/R4/Subscription/{id}", |what, how, i| {
        let ed = b.token("acute-ed");
        let r = fhir_create(b, &ed, &fhir_subscription(SUBJECTS[i]));
        assert_eq!(r.status(), 201, "{what}");
        let id = json_of(r)["id"].as_str().unwrap().to_owned();
        let path = format!("/fhir/R4/Subscription/{id}");
        let status = || json_of(b.get(&ed, &path))["status"].as_str().unwrap_or_default().to_owned();
        assert_eq!(status(), "active", "{what}");
        b.break_audit(how);
        let r = b.delete(&ed, &path);
        b.restore_audit(how);
        assert_refused_fhir(what, r);
        assert_eq!(status(), "active", "{what}: the deletion was stored without its audit entry");
        assert_eq!(b.delete(&ed, &path).status(), 204, "{what}: once the log is back");
        assert_eq!(b.last_audit()["action"], "unsubscribe", "{what}");
        assert_eq!(status(), "off", "{what}");
    });
});
