//! `POST /v1/lookups` and governed reads: what each partner type sees for each purpose, and the
//! audit entry every request leaves.

use serde_json::{json, Value};

use crate::both;
use crate::support::*;

const NHS: &str = "9990000018";

fn lookup(b: &TestBroker, client: &str, role: &str, purpose: &str, subject: Value, extra: Value) -> (u16, Value) {
    let t = b.token(client);
    let mut body = json!({"purpose": purpose, "requester": {"user_id": format!("{client}-user"), "role": role}, "subject": subject});
    if let (Value::Object(m), Value::Object(x)) = (&mut body, extra) {
        m.extend(x);
    }
    let r = b.http.post(b.url("/v1/lookups")).bearer_auth(&t).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, json_of(r))
}

fn by_nhs() -> Value {
    json!({"person": {"nhs_number": NHS}})
}

/// Publishes the notices the scenarios use; returns their ids by name.
fn seed(b: &TestBroker) -> std::collections::HashMap<&'static str, String> {
    let mut ids = std::collections::HashMap::new();
    let mut publish = |name: &'static str, client: &str, body: Value| {
        let r = b.publish(&b.token(client), &body);
        assert_eq!(r.status(), 201, "{name}");
        ids.insert(name, json_of(r)["id"].as_str().unwrap().to_owned());
    };
    // An ambulance crew assaulted: health and safety basis, a Datix reference.
    publish("crew-assault", "amb-cad", person_notice(NHS));
    // An ED assault reported to police: criminal offence basis, crime reference.
    let mut crime = person_notice(NHS);
    crime["lawful_basis"] = json!(["UKGDPR-6-1-e", "UKGDPR-9-2-h", "UKGDPR-10"]);
    crime["restricted"] = json!({"crime_reference": "NP/0001/26", "incident_reference": "ED-77"});
    crime["category"] = json!("threat-with-weapon");
    publish("ed-crime", "acute-ed", crime);
    // A post-ictal assault at the GP surgery: medical factor operative.
    let mut medical = person_notice(NHS);
    medical["medical_factor_operative"] = json!(true);
    medical["lawful_basis"] = json!(["UKGDPR-6-1-e", "UKGDPR-9-2-h", "UKGDPR-10"]);
    medical["category"] = json!("attempted-physical-assault");
    publish("gp-medical", "gp-green", medical);
    // An address with a dangerous dog, and an abusive caller.
    let mut address = person_notice(NHS);
    address["subject"] = json!({"address": {"postcode": "ZZ99 3WZ", "line1": "17 Marrowbone Crescent"}});
    address["safety_advice"] = json!(["dangerous-animal", "telephone-first"]);
    publish("address", "amb-cad", address);
    let mut phone = person_notice(NHS);
    phone["subject"] = json!({"telephone": "07700 900123"});
    phone["category"] = json!("directed-verbal-abuse");
    publish("caller", "amb-cad", phone);
    ids
}

fn ids_of(results: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        results["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Asserts the request left exactly one new audit entry, and returns it.
fn one_audit(b: &TestBroker, before: i64) -> Value {
    assert_eq!(b.count("audit_entries"), before + 1, "exactly one audit entry per request");
    let a = b.last_audit();
    let refs = a["subject_refs"].to_string();
    assert!(!refs.contains(NHS) && !refs.contains("07700"), "plain identifier in audit: {refs}");
    a
}

both!(each_partner_type_sees_what_the_agreement_allows, |b: &TestBroker| {
    let ids = seed(b);
    let person = sorted(vec![ids["crew-assault"].clone(), ids["ed-crime"].clone(), ids["gp-medical"].clone()]);

    // Ambulance dispatch, staff safety: a summary of every person notice, no restricted fields.
    let n = b.count("audit_entries");
    let (status, r) = lookup(b, "amb-cad", "ambulance-dispatcher", "staff-safety", by_nhs(), json!({}));
    assert_eq!(status, 200);
    assert_eq!(ids_of(&r), person);
    for item in r["results"].as_array().unwrap() {
        assert_matches_schema("disclosed-notice.schema.json", item);
        assert_eq!(item["decision"]["view"], "summary");
        assert_eq!(item["decision"]["clauses"], json!(["SS-1"]));
        assert!(
            item.get("restricted").is_none() && item.get("subject").is_none() && item.get("incident_date").is_none()
        );
        assert!(item.get("category").is_some() && item.get("safety_advice").is_some());
        assert_eq!(item["matched_on"], json!(["nhs-number"]));
    }
    let a = one_audit(b, n);
    assert_eq!(
        (a["action"].as_str(), a["decision"].as_str(), a["purpose"].as_str()),
        (Some("lookup"), Some("permit"), Some("staff-safety"))
    );
    assert_eq!(a["lawful_basis"], json!(["CLDC-PUBLIC-INTEREST", "UKGDPR-6-1-c", "UKGDPR-9-2-h"]));
    assert_eq!(a["notices"].as_array().unwrap().len(), 3);
    assert_eq!(a["agreement_version"], "NA-ICS-VPR-2026.1-demo");

    // GP reception, staff safety: existence only, and whom to call.
    let n = b.count("audit_entries");
    let (_, r) = lookup(b, "gp-green", "gp-receptionist", "staff-safety", by_nhs(), json!({}));
    assert_eq!(ids_of(&r), person);
    for item in r["results"].as_array().unwrap() {
        assert_eq!(item["decision"]["view"], "existence");
        let keys: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            sorted(keys.iter().map(|k| k.to_string()).collect()),
            ["contact", "decision", "id", "matched_on", "publisher", "status"]
        );
        assert!(item["contact"]["telephone"].is_string());
    }
    assert_eq!(one_audit(b, n)["clauses"], json!(["SS-3"]));

    // GP clinician, staff safety: summary.
    let (_, r) = lookup(b, "gp-green", "gp-clinician", "staff-safety", by_nhs(), json!({}));
    assert!(r["results"].as_array().unwrap().iter().all(|i| i["decision"]["view"] == "summary"));

    // Police, crime prevention: only the notice with a crime-related basis, with its crime
    // reference; never the medical-factor notice; not the health-and-safety one.
    let n = b.count("audit_entries");
    let (_, r) = lookup(b, "police", "police-officer", "crime-prevention", by_nhs(), json!({}));
    assert_eq!(ids_of(&r), vec![ids["ed-crime"].clone()]);
    let item = &r["results"][0];
    assert_eq!(item["restricted"]["crime_reference"], "NP/0001/26");
    assert_eq!(item["decision"]["restricted"], true);
    let a = one_audit(b, n);
    assert_eq!(a["decision"], "partial");
    let medical =
        a["notices"].as_array().unwrap().iter().find(|x| x["id"] == ids["gp-medical"].as_str()).unwrap().clone();
    assert_eq!((medical["decision"].as_str(), medical["clauses"].clone()), (Some("deny"), json!(["CP-F1"])));
    assert_eq!(a["lawful_basis"], json!(["CDA98-S115", "DPA18-PART3", "DPA18-S1-P10", "UKGDPR-10"]));

    // Police for staff safety: no clause, so nothing — and the refusal is audited.
    let n = b.count("audit_entries");
    let (status, r) = lookup(b, "police", "police-officer", "staff-safety", by_nhs(), json!({}));
    assert_eq!((status, r["results"].as_array().unwrap().len()), (200, 0));
    let a = one_audit(b, n);
    assert_eq!((a["decision"].as_str(), a["outcome"].as_i64()), (Some("deny"), Some(200)));

    // Council safeguarding: a summary with a case reference, nothing without.
    let (_, r) = lookup(
        b,
        "council",
        "social-worker",
        "safeguarding",
        by_nhs(),
        json!({"context": {"reference": "ASC-2026-114"}}),
    );
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    assert!(r["results"].as_array().unwrap().iter().all(|i| i["decision"]["clauses"] == json!(["SG-1"])));
    let n = b.count("audit_entries");
    let (_, r) = lookup(b, "council", "social-worker", "safeguarding", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 0);
    assert_eq!(one_audit(b, n)["decision"], "deny");

    // Security management specialist, VPR management: full, with restricted fields.
    let (_, r) = lookup(b, "acute-ed", "security-management-specialist", "vpr-management", by_nhs(), json!({}));
    let crime = r["results"].as_array().unwrap().iter().find(|i| i["id"] == ids["ed-crime"].as_str()).unwrap().clone();
    assert_eq!(crime["decision"]["view"], "full");
    assert_eq!(crime["subject"]["person"]["nhs_number"], NHS);
    assert_eq!(crime["restricted"]["incident_reference"], "ED-77");

    // ICB information governance answering a subject access request: everything, in full, but
    // only against a request reference.
    let (_, r) =
        lookup(b, "icb-ig", "ig-lead", "subject-access", by_nhs(), json!({"context": {"reference": "SAR-2026-031"}}));
    assert_eq!(ids_of(&r), person);
    assert!(r["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["decision"]["view"] == "full" && i["decision"]["clauses"] == json!(["SA-1"])));
    let n = b.count("audit_entries");
    let (_, r) = lookup(b, "icb-ig", "ig-lead", "subject-access", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 0);
    assert_eq!(one_audit(b, n)["decision"], "deny");

    // Address (another spelling of the same line) and telephone look-ups.
    let (_, r) = lookup(
        b,
        "amb-cad",
        "ambulance-dispatcher",
        "staff-safety",
        json!({"address": {"postcode": "zz993wz", "line1": "17, Marrowbone Cres"}}),
        json!({}),
    );
    assert_eq!(ids_of(&r), vec![ids["address"].clone()]);
    assert_eq!(r["results"][0]["safety_advice"], json!(["dangerous-animal", "telephone-first"]));
    let (_, r) = lookup(
        b,
        "amb-cad",
        "ambulance-dispatcher",
        "staff-safety",
        json!({"telephone": "+44 7700 900123"}),
        json!({}),
    );
    assert_eq!(ids_of(&r), vec![ids["caller"].clone()]);

    // No match: an empty answer, still audited.
    let n = b.count("audit_entries");
    let (_, r) = lookup(
        b,
        "amb-cad",
        "ambulance-dispatcher",
        "staff-safety",
        json!({"person": {"nhs_number": "9990000026"}}),
        json!({}),
    );
    assert_eq!(r["results"].as_array().unwrap().len(), 0);
    assert_eq!(one_audit(b, n)["decision"], "no-match");
});

both!(refused_purposes_and_roles_are_audited, |b: &TestBroker| {
    seed(b);
    for (client, role, purpose, why) in [
        ("amb-cad", "ambulance-dispatcher", "research", "not a purpose"),
        ("gp-green", "police-officer", "crime-prevention", "may not act in the role"),
        ("council", "social-worker", "employment-vetting", "not a purpose"),
    ] {
        let n = b.count("audit_entries");
        let (status, r) = lookup(b, client, role, purpose, by_nhs(), json!({}));
        assert_eq!(status, 403, "{client} {role} {purpose}");
        assert!(r["detail"].as_str().unwrap().contains(why), "{r}");
        assert!(r.get("results").is_none());
        let a = one_audit(b, n);
        assert_eq!((a["decision"].as_str(), a["outcome"].as_i64()), (Some("refused"), Some(403)));
    }
    // No purpose at all: refused as bad input.
    let t = b.token("amb-cad");
    let r = b
        .http
        .post(b.url("/v1/lookups"))
        .bearer_auth(&t)
        .json(&json!({"requester": {"user_id": "u", "role": "ambulance-dispatcher"}, "subject": by_nhs()}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["pointer"], "/purpose");
    // Bad input that named a purpose is audited with it, and with the user and role asserted;
    // nothing about the subject.
    let n = b.count("audit_entries");
    let r = b
        .http
        .post(b.url("/v1/lookups"))
        .bearer_auth(&t)
        .json(&json!({"purpose": "staff-safety", "requester": {"user_id": "disp-9", "role": "ambulance-dispatcher"},
                      "subject": {"person": {"nhs_number": "9990000019"}}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let a = one_audit(b, n);
    assert_eq!((a["decision"].as_str(), a["outcome"].as_i64()), (Some("refused"), Some(422)));
    assert_eq!(
        (a["purpose"].as_str(), a["actor_role"].as_str()),
        (Some("staff-safety"), Some("ambulance-dispatcher")),
        "{a}"
    );
    assert!(a["subject_refs"].as_array().is_none_or(|r| r.is_empty()), "{a}");
    // What a rule refused, or is not what it claims, is not kept: a name typed as the purpose,
    // a role the system may not act in.
    let n = b.count("audit_entries");
    let r = b
        .http
        .post(b.url("/v1/lookups"))
        .bearer_auth(&t)
        .json(&json!({"purpose": "Jane Example 1 Test Street", "requester": {"user_id": "disp-9", "role": "police-officer"},
                      "subject": {"person": {"nhs_number": "9990000019"}}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let a = one_audit(b, n);
    assert_eq!((a["purpose"].as_str(), a["actor_role"].as_str()), (None, None), "{a}");
});

both!(objections_consent_and_break_glass, |b: &TestBroker| {
    let ids = seed(b);
    let ig = b.token("icb-ig");
    let record = |path: &str, body: Value| b.http.post(b.url(path)).bearer_auth(&ig).json(&body).send().unwrap();
    // Direct care works until the subject's objection is upheld.
    let (_, r) = lookup(b, "gp-green", "gp-clinician", "direct-care", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    let objection = json!({"subject": {"person": {"nhs_number": "999 000 0018"}}, "purpose": "direct-care", "status": "upheld",
        "evidence_reference": "IG-OBJ-2026-001", "requester": {"user_id": "ig-1", "role": "ig-lead"}});
    let r = record("/v1/objections", objection.clone());
    assert_eq!(r.status(), 201);
    assert_eq!(b.last_audit()["action"], "objection");
    let n = b.count("audit_entries");
    let (_, r) = lookup(b, "gp-green", "gp-clinician", "direct-care", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 0, "upheld objection");
    let a = one_audit(b, n);
    assert!(a["notices"].as_array().unwrap().iter().all(|x| x["clauses"] == json!(["DC-F1"])));
    // Staff safety still applies: the objection does not stop it.
    let (_, r) = lookup(b, "amb-cad", "ambulance-dispatcher", "staff-safety", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    // Break-glass in an emergency unlocks a summary and is queued for IG review.
    let n = b.count("audit_entries");
    let bg =
        json!({"break_glass": {"justification": "patient unconscious in ED resus, history unknown, staff at risk"}});
    let (_, r) = lookup(b, "acute-ed", "ed-clinician", "direct-care", by_nhs(), bg);
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    assert!(r["results"].as_array().unwrap().iter().all(|i| i["decision"]["clauses"] == json!(["BG-1", "DC-1"])));
    let a = one_audit(b, n);
    assert_eq!(a["ig_review"], "pending");
    assert!(a["lawful_basis"].as_array().unwrap().contains(&json!("UKGDPR-6-1-d")));
    // A thin justification is refused.
    let (status, _) = lookup(
        b,
        "acute-ed",
        "ed-clinician",
        "direct-care",
        by_nhs(),
        json!({"break_glass": {"justification": "urgent"}}),
    );
    assert_eq!(status, 403);
    // The objection overridden, with a reason: direct care resumes.
    let mut overridden = objection.clone();
    overridden["status"] = json!("overridden");
    assert_eq!(record("/v1/objections", overridden.clone()).status(), 422, "an override needs a reason");
    overridden["reason"] = json!("Caldicott guardian: overriding public interest, risk to staff at home visits");
    assert_eq!(record("/v1/objections", overridden).status(), 201);
    let (_, r) = lookup(b, "gp-green", "gp-clinician", "direct-care", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    // Consent: social care support only with consent.
    let (_, r) = lookup(b, "council", "social-worker", "social-care-support", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 0);
    let consent = json!({"subject": {"person": {"nhs_number": NHS}}, "purpose": "social-care-support", "status": "given",
        "evidence_reference": "ASC-CONSENT-9", "requester": {"user_id": "ig-1", "role": "ig-lead"}});
    assert_eq!(record("/v1/consents", consent).status(), 201);
    let (_, r) = lookup(b, "council", "social-worker", "social-care-support", by_nhs(), json!({}));
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    // Only IG roles record consents and objections.
    let gp = b.token("gp-green");
    let r = b.http.post(b.url("/v1/objections")).bearer_auth(&gp).json(&objection).send().unwrap();
    assert_eq!(r.status(), 403);
    let _ = ids;
});

both!(a_failed_audit_write_discloses_nothing, |b: &TestBroker| {
    seed(b);
    b.exec("ALTER TABLE audit_entries RENAME TO audit_entries_unwritable");
    let (status, r) = lookup(b, "amb-cad", "ambulance-dispatcher", "staff-safety", by_nhs(), json!({}));
    assert_eq!(status, 503);
    let text = r.to_string();
    assert!(r.get("results").is_none());
    for leak in [NHS, "physical-assault", "XAM01", "Crew assaulted", "summary"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    assert_matches_schema("problem.schema.json", &r);
    b.exec("ALTER TABLE audit_entries_unwritable RENAME TO audit_entries");
    let (status, _) = lookup(b, "amb-cad", "ambulance-dispatcher", "staff-safety", by_nhs(), json!({}));
    assert_eq!(status, 200);
});

#[test]
fn policy_check_validates_the_demo_agreement_and_registry() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(binary())
        .current_dir(root)
        .args(["policy", "check", "--registry", "examples/demo-ics/registry.json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ALLOW/DENY fixtures pass") && text.contains("fits the agreement"), "{text}");
}

#[test]
fn the_broker_refuses_to_start_on_an_invalid_policy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap();
    for f in ["agreement.json", "vpr.cedarschema"] {
        std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("tests")).unwrap();
    std::fs::copy(root.join("tests/fixtures.json"), dir.path().join("tests/fixtures.json")).unwrap();
    // One clause reads an attribute the Cedar schema does not have.
    let broken =
        std::fs::read_to_string(root.join("agreement.cedar")).unwrap().replace("principal.role ==", "principal.job ==");
    std::fs::write(dir.path().join("agreement.cedar"), broken).unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-ics/broker.toml");
    let out = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .env("VPR_AGREEMENT", dir.path().join("agreement.json"))
        .env("VPR_DATABASE_URL", format!("sqlite://{}/x.db", dir.path().display()))
        .env("VPR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policies are invalid"), "{err}");
    // A fixture that no longer holds also stops the broker.
    std::fs::copy(root.join("agreement.cedar"), dir.path().join("agreement.cedar")).unwrap();
    let fixtures = std::fs::read_to_string(root.join("tests/fixtures.json")).unwrap().replacen(
        "\"view\": \"summary\"",
        "\"view\": \"full\"",
        1,
    );
    std::fs::write(dir.path().join("tests/fixtures.json"), fixtures).unwrap();
    let out = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .env("VPR_AGREEMENT", dir.path().join("agreement.json"))
        .env("VPR_DATABASE_URL", format!("sqlite://{}/x.db", dir.path().display()))
        .env("VPR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fixtures failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
