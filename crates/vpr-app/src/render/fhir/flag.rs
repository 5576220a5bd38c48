//! A notice as a FHIR `Flag`, in the spirit of the UK Core Flag profile, so a shared care record
//! shows it as an alert.
//!
//! The Flag is made from the [`DisclosedNotice`] *already minimised to the decided view*, so it
//! cannot carry a field outside that view: `existence` gives the
//! status, author and whom to call; `summary` adds the category, risk, safety advice and review
//! date; `full` adds the subject's identifiers, the incident date and the lawful bases.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{coding, NHS_NUMBER, ODS_CODE, UK_CORE_FLAG, VPR_FHIR};
use crate::disclose::DisclosedNotice;

/// SNOMED CT: the finding every violence-risk flag is coded with.
pub const SNOMED_AT_RISK_OF_HARMING_OTHERS: (&str, &str) = ("391155006", "At risk of harming others");

/// The HL7 v3 ActCode confidentiality label for violence information.
pub fn vio_label() -> Value {
    coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "VIO", "violence information sensitivity")
}

fn words(code: &str) -> String {
    let mut w = code.replace('-', " ");
    if let Some(first) = w.get(..1) {
        w.replace_range(..1, &first.to_uppercase());
    }
    w
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// The FHIR status of a notice status.
pub fn flag_status(status: &str) -> &'static str {
    match status {
        "active" => "active",
        "entered-in-error" => "entered-in-error",
        _ => "inactive",
    }
}

/// What the caller already holds of the subject (an NHS number it searched by, or that is in
/// its cohort): shown even where the view withholds the subject, since it discloses nothing new.
#[derive(Debug, Clone, Default)]
pub struct KnownSubject {
    /// The NHS number.
    pub nhs_number: Option<String>,
}

/// The version and time of the notice as shown.
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    /// Version.
    pub version: i64,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

fn subject(d: &Value, known: &KnownSubject) -> Value {
    let s = &d["subject"];
    if let Some(nhs) = s["person"]["nhs_number"].as_str() {
        return json!({"type": "Patient", "identifier": {"system": NHS_NUMBER, "value": nhs}});
    }
    if let Some(nhs) = &known.nhs_number {
        return json!({"type": "Patient", "identifier": {"system": NHS_NUMBER, "value": nhs}});
    }
    if let Some(a) = s.get("address").filter(|a| a.is_object()) {
        let display =
            [a["line1"].as_str(), a["postcode"].as_str()].into_iter().flatten().collect::<Vec<_>>().join(", ");
        let mut r =
            json!({"type": "Location", "display": if display.is_empty() { "An address".to_owned() } else { display }});
        if let Some(uprn) = a["uprn"].as_str() {
            r["identifier"] = json!({"system": format!("{VPR_FHIR}/Id/uprn"), "value": uprn});
        }
        return r;
    }
    if let Some(p) = s.get("person").filter(|p| p.is_object()) {
        let name = [p["given_name"].as_str(), p["family_name"].as_str()].into_iter().flatten().collect::<Vec<_>>();
        return json!({"type": "Patient", "display": if name.is_empty() { "A person".to_owned() } else { name.join(" ") }});
    }
    if let Some(t) = s["telephone"].as_str() {
        return json!({"display": format!("Telephone {t}")});
    }
    json!({"display": "The subject is not disclosed in this view: search by an identifier you hold, or call the contact"})
}

fn contact(c: &Value) -> Option<Value> {
    let mut telecom = Vec::new();
    if let Some(t) = c["telephone"].as_str() {
        telecom.push(json!({"system": "phone", "value": t}));
    }
    if let Some(e) = c["email"].as_str() {
        telecom.push(json!({"system": "email", "value": e}));
    }
    let mut detail = Map::new();
    if let Some(n) = c["name"].as_str() {
        detail.insert("name".into(), json!(n));
    }
    if !telecom.is_empty() {
        detail.insert("telecom".into(), json!(telecom));
    }
    (!detail.is_empty())
        .then(|| json!({"url": format!("{VPR_FHIR}/StructureDefinition/flag-contact"), "valueContactDetail": detail}))
}

fn code_text(d: &Value) -> String {
    let publisher = d["publisher"]["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("the publisher");
    let Some(category) = d["category"].as_str() else {
        return format!("A violence-risk notice exists: call {publisher} before attending.");
    };
    let risk = d["risk_level"].as_str().map(words).unwrap_or_default();
    let mut text = format!("{risk} risk of violence to staff: {}.", words(category).to_lowercase());
    let factors = strs(&d["aggravating_factors"]);
    if !factors.is_empty() {
        text.push_str(&format!(
            " Aggravated ({}).",
            factors.iter().map(|f| words(f).to_lowercase()).collect::<Vec<_>>().join(", ")
        ));
    }
    let advice = strs(&d["safety_advice"]);
    if !advice.is_empty() {
        text.push_str(&format!(" {}.", advice.iter().map(|a| words(a)).collect::<Vec<_>>().join("; ")));
    }
    if let Some(t) = d["advice_text"].as_str() {
        text.push_str(&format!(" {t}"));
    }
    if d["medical_factor_operative"].as_bool() == Some(true) {
        text.push_str(" A medical factor was operative: for staff safety and care, not sanction.");
    }
    text
}

fn ext(name: &str, value_key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert("url".into(), json!(format!("{VPR_FHIR}/StructureDefinition/{name}")));
    m.insert(value_key.into(), value);
    Value::Object(m)
}

/// Builds the Flag for a disclosed (minimised) notice.
pub fn flag(d: &DisclosedNotice, shown: Shown, known: &KnownSubject) -> Value {
    flag_of(&json!(d), shown, known)
}

/// The Flag of a disclosed notice in its wire form (the fields of its view, and no others).
fn flag_of(d: &Value, shown: Shown, known: &KnownSubject) -> Value {
    let mut flag = json!({
        "resourceType": "Flag",
        "id": d["id"].as_str().unwrap_or_default(),
        "meta": {
            "versionId": shown.version.to_string(),
            "lastUpdated": shown.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "profile": [UK_CORE_FLAG],
            "security": [vio_label()],
        },
        "extension": extensions(d),
        "status": flag_status(d["status"].as_str().unwrap_or("inactive")),
        "category": categories(d),
        "code": {"coding": codings(d), "text": code_text(d)},
        "subject": subject(d, known),
        "author": {
            "type": "Organization",
            "identifier": {"system": ODS_CODE, "value": d["publisher"]["ods_code"]},
            "display": d["publisher"]["name"],
        },
    });
    let mut period = Map::new();
    if let Some(start) = d["incident_date"].as_str() {
        period.insert("start".into(), json!(start));
    }
    if let Some(end) = d["review_date"].as_str() {
        period.insert("end".into(), json!(end));
    }
    if !period.is_empty() {
        flag["period"] = Value::Object(period);
    }
    flag
}

fn categories(d: &Value) -> Vec<Value> {
    let mut category = vec![
        json!({"coding": [coding("http://terminology.hl7.org/CodeSystem/flag-category", "behavioral", "Behavioral")]}),
    ];
    if let Some(c) = d["category"].as_str() {
        category.push(json!({"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/violence-category"), c, &words(c))], "text": words(c)}));
    }
    category
}

fn codings(d: &Value) -> Vec<Value> {
    let mut codings =
        vec![coding("http://snomed.info/sct", SNOMED_AT_RISK_OF_HARMING_OTHERS.0, SNOMED_AT_RISK_OF_HARMING_OTHERS.1)];
    if let Some(r) = d["risk_level"].as_str() {
        codings.push(coding(
            &format!("{VPR_FHIR}/CodeSystem/violence-risk-level"),
            r,
            &format!("{} risk of violence", words(r)),
        ));
    }
    codings
}

fn extensions(d: &Value) -> Vec<Value> {
    let mut extensions = Vec::new();
    if let Some(c) = contact(&d["contact"]) {
        extensions.push(c);
    }
    for advice in strs(&d["safety_advice"]) {
        extensions.push(ext(
            "flag-safety-advice",
            "valueCodeableConcept",
            json!({"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/safety-advice"), advice, &words(advice))], "text": words(advice)}),
        ));
    }
    for factor in strs(&d["aggravating_factors"]) {
        extensions.push(ext(
            "flag-aggravating-factor",
            "valueCoding",
            coding(&format!("{VPR_FHIR}/CodeSystem/aggravating-factor"), factor, &words(factor)),
        ));
    }
    if let Some(m) = d["medical_factor_operative"].as_bool() {
        extensions.push(ext("flag-medical-factor-operative", "valueBoolean", json!(m)));
    }
    for basis in strs(&d["lawful_basis"]) {
        extensions.push(ext(
            "flag-lawful-basis",
            "valueCoding",
            coding(&format!("{VPR_FHIR}/CodeSystem/lawful-basis"), basis, basis),
        ));
    }
    if let Some(r) = d.get("restricted").filter(|r| r.is_object()) {
        let mut parts = Vec::new();
        for (key, url) in [("incident_reference", "incidentReference"), ("crime_reference", "crimeReference")] {
            if let Some(v) = r[key].as_str() {
                parts.push(json!({"url": url, "valueString": v}));
            }
        }
        extensions.push(json!({"url": format!("{VPR_FHIR}/StructureDefinition/flag-restricted"), "extension": parts}));
    }
    let decision = &d["decision"];
    let mut decided = vec![json!({"url": "view", "valueCode": decision["view"]})];
    decided.extend(strs(&decision["clauses"]).into_iter().map(|c| json!({"url": "clause", "valueString": c})));
    decided.extend(strs(&decision["lawful_basis"]).into_iter().map(|b| json!({"url": "lawfulBasis", "valueCode": b})));
    if let Some(v) = decision["agreement_version"].as_str() {
        decided.push(json!({"url": "agreementVersion", "valueString": v}));
    }
    extensions
        .push(json!({"url": format!("{VPR_FHIR}/StructureDefinition/disclosure-decision"), "extension": decided}));
    extensions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shown() -> Shown {
        Shown { version: 3, updated_at: Utc::now() }
    }

    fn existence() -> Value {
        json!({
            "id": "7d2c6f0e-0000-4000-8000-000000000001", "status": "active",
            "publisher": {"ods_code": "XAC01", "name": "Northmoor General (fictional)"},
            "contact": {"name": "Duty lead", "telephone": "+441134960999"},
            "decision": {"view": "existence", "restricted": false, "lawful_basis": ["UKGDPR-6-1-c"], "clauses": ["SS-3"], "agreement_version": "v1"}
        })
    }

    #[test]
    fn an_existence_view_shows_only_that_a_notice_exists_and_whom_to_call() {
        let f = flag_of(&existence(), shown(), &KnownSubject::default());
        let text = f.to_string();
        assert_eq!(f["status"], "active");
        assert!(f.get("period").is_none());
        assert_eq!(f["code"]["coding"].as_array().unwrap().len(), 1, "no risk level");
        assert!(f["subject"].get("identifier").is_none());
        assert!(text.contains("flag-contact") && text.contains("+441134960999"));
        assert!(!text.contains("violence-category") && !text.contains("safety-advice"));
        assert_eq!(f["meta"]["security"][0]["code"], "VIO");
        // An NHS number the caller already holds is shown as the subject.
        let known = KnownSubject { nhs_number: Some("9990000018".into()) };
        assert_eq!(flag_of(&existence(), shown(), &known)["subject"]["identifier"]["value"], "9990000018");
    }

    #[test]
    fn a_summary_view_adds_category_risk_advice_and_review_date() {
        let mut d = existence();
        let extra = json!({"subject_kinds": ["person"], "category": "physical-assault", "risk_level": "high",
            "aggravating_factors": ["racial-or-religious"], "medical_factor_operative": false,
            "safety_advice": ["attend-with-police"], "advice_text": "Crew assaulted.", "review_date": "2027-05-15"});
        d.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let f = flag_of(&d, shown(), &KnownSubject::default());
        assert_eq!(f["period"]["end"], "2027-05-15");
        assert!(f["period"].get("start").is_none(), "the incident date is in the full view only");
        assert_eq!(f["code"]["coding"][1]["code"], "high");
        assert!(f["code"]["text"].as_str().unwrap().starts_with("High risk of violence to staff: physical assault."));
        assert_eq!(f["category"][1]["coding"][0]["code"], "physical-assault");
        assert_eq!(flag_of(&json!({"status": "withdrawn"}), shown(), &KnownSubject::default())["status"], "inactive");
    }
}
