//! A notice as a FHIR `Flag`, in the spirit of the UK Core Flag profile, so a shared care record
//! shows it as an alert.
//!
//! The Flag is made from the [`DisclosedNotice`] *already minimised to the decided view*, so it
//! cannot carry a field outside that view: `existence` gives the
//! status, author and whom to call; `summary` adds the category, risk, safety advice and review
//! date; `full` adds the subject's identifiers, the incident date and the lawful bases.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::{coding, NHS_NUMBER, ODS_CODE, UK_CORE_FLAG, VPR_FHIR};
use vpr_domain::notice::ContactPoint;

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

fn patient(nhs: &str) -> Value {
    json!({"type": "Patient", "identifier": {"system": NHS_NUMBER, "value": nhs}})
}

/// The subject: by NHS number when one is shown or already held, else as the full view
/// describes it, else a pointer to the contact.
fn subject(d: &DisclosedNotice, known: &KnownSubject) -> Value {
    let s = d.full.as_ref().map(|f| &f.subject);
    if let Some(nhs) = s.and_then(|s| s.person.as_ref()).and_then(|p| p.nhs_number.as_ref()) {
        return patient(nhs.as_str());
    }
    if let Some(nhs) = &known.nhs_number {
        return patient(nhs);
    }
    if let Some(a) = s.and_then(|s| s.address.as_ref()) {
        let parts: Vec<&str> =
            [a.line1.as_deref(), a.postcode.as_ref().map(|p| p.as_str())].into_iter().flatten().collect();
        let display = if parts.is_empty() { "An address".to_owned() } else { parts.join(", ") };
        let mut r = json!({"type": "Location", "display": display});
        if let (Some(uprn), Some(map)) = (&a.uprn, r.as_object_mut()) {
            map.insert("identifier".into(), json!({"system": format!("{VPR_FHIR}/Id/uprn"), "value": uprn.as_str()}));
        }
        return r;
    }
    if let Some(p) = s.and_then(|s| s.person.as_ref()) {
        let name: Vec<&str> = [p.given_name.as_deref(), p.family_name.as_deref()].into_iter().flatten().collect();
        let display = if name.is_empty() { "A person".to_owned() } else { name.join(" ") };
        return json!({"type": "Patient", "display": display});
    }
    if let Some(t) = s.and_then(|s| s.telephone.as_ref()) {
        return json!({"display": format!("Telephone {}", t.as_str())});
    }
    json!({"display": "The subject is not disclosed in this view: search by an identifier you hold, or call the contact"})
}

fn contact(c: &ContactPoint) -> Option<Value> {
    let mut telecom = Vec::new();
    if let Some(t) = &c.telephone {
        telecom.push(json!({"system": "phone", "value": t.as_str()}));
    }
    if let Some(e) = &c.email {
        telecom.push(json!({"system": "email", "value": e}));
    }
    let mut detail = Map::new();
    if let Some(n) = &c.name {
        detail.insert("name".into(), json!(n));
    }
    if !telecom.is_empty() {
        detail.insert("telecom".into(), json!(telecom));
    }
    (!detail.is_empty())
        .then(|| json!({"url": format!("{VPR_FHIR}/StructureDefinition/flag-contact"), "valueContactDetail": detail}))
}

fn code_text(d: &DisclosedNotice) -> String {
    let publisher = Some(d.publisher.name.as_str()).filter(|n| !n.is_empty()).unwrap_or("the publisher");
    let Some(s) = &d.summary else {
        return format!("A violence-risk notice exists: call {publisher} before attending.");
    };
    let mut text = format!(
        "{} risk of violence to staff: {}.",
        words(s.risk_level.code()),
        words(s.category.code()).to_lowercase()
    );
    if !s.aggravating_factors.is_empty() {
        let factors: Vec<String> = s.aggravating_factors.iter().map(|f| words(f.code()).to_lowercase()).collect();
        text.push_str(&format!(" Aggravated ({}).", factors.join(", ")));
    }
    if !s.safety_advice.is_empty() {
        let advice: Vec<String> = s.safety_advice.iter().map(|a| words(a.code())).collect();
        text.push_str(&format!(" {}.", advice.join("; ")));
    }
    if let Some(t) = &s.advice_text {
        text.push_str(&format!(" {t}"));
    }
    if s.medical_factor_operative {
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
    let mut flag = json!({
        "resourceType": "Flag",
        "id": d.id,
        "meta": {
            "versionId": shown.version.to_string(),
            "lastUpdated": shown.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "profile": [UK_CORE_FLAG],
            "security": [vio_label()],
        },
        "extension": extensions(d),
        "status": flag_status(d.status.code()),
        "category": categories(d),
        "code": {"coding": codings(d), "text": code_text(d)},
        "subject": subject(d, known),
        "author": {
            "type": "Organization",
            "identifier": {"system": ODS_CODE, "value": d.publisher.ods_code},
            "display": d.publisher.name,
        },
    });
    let mut period = Map::new();
    if let Some(f) = &d.full {
        period.insert("start".into(), json!(f.incident_date));
    }
    if let Some(s) = &d.summary {
        period.insert("end".into(), json!(s.review_date));
    }
    if let (false, Some(map)) = (period.is_empty(), flag.as_object_mut()) {
        map.insert("period".into(), Value::Object(period));
    }
    flag
}

fn categories(d: &DisclosedNotice) -> Vec<Value> {
    let mut category = vec![
        json!({"coding": [coding("http://terminology.hl7.org/CodeSystem/flag-category", "behavioral", "Behavioral")]}),
    ];
    if let Some(s) = &d.summary {
        let c = s.category.code();
        category.push(json!({"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/violence-category"), c, &words(c))], "text": words(c)}));
    }
    category
}

fn codings(d: &DisclosedNotice) -> Vec<Value> {
    let mut codings =
        vec![coding("http://snomed.info/sct", SNOMED_AT_RISK_OF_HARMING_OTHERS.0, SNOMED_AT_RISK_OF_HARMING_OTHERS.1)];
    if let Some(s) = &d.summary {
        let r = s.risk_level.code();
        codings.push(coding(
            &format!("{VPR_FHIR}/CodeSystem/violence-risk-level"),
            r,
            &format!("{} risk of violence", words(r)),
        ));
    }
    codings
}

/// The view's own extensions: whom to call, safety advice, aggravating factors, the medical
/// factor, lawful bases and restricted references, then the decision the view was shown under.
fn extensions(d: &DisclosedNotice) -> Vec<Value> {
    let mut extensions: Vec<Value> = d.contact.as_ref().and_then(contact).into_iter().collect();
    if let Some(s) = &d.summary {
        for advice in s.safety_advice.iter().map(|a| a.code()) {
            let concept = json!({"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/safety-advice"), advice, &words(advice))], "text": words(advice)});
            extensions.push(ext("flag-safety-advice", "valueCodeableConcept", concept));
        }
        for factor in s.aggravating_factors.iter().map(|f| f.code()) {
            let c = coding(&format!("{VPR_FHIR}/CodeSystem/aggravating-factor"), factor, &words(factor));
            extensions.push(ext("flag-aggravating-factor", "valueCoding", c));
        }
        extensions.push(ext("flag-medical-factor-operative", "valueBoolean", json!(s.medical_factor_operative)));
    }
    for basis in d.full.iter().flat_map(|f| f.lawful_basis.iter()).map(|b| b.code()) {
        let c = coding(&format!("{VPR_FHIR}/CodeSystem/lawful-basis"), basis, basis);
        extensions.push(ext("flag-lawful-basis", "valueCoding", c));
    }
    if let Some(r) = &d.restricted {
        let parts: Vec<Value> = [("incidentReference", &r.incident_reference), ("crimeReference", &r.crime_reference)]
            .into_iter()
            .filter_map(|(url, v)| v.as_ref().map(|v| json!({"url": url, "valueString": v})))
            .collect();
        extensions.push(json!({"url": format!("{VPR_FHIR}/StructureDefinition/flag-restricted"), "extension": parts}));
    }
    let decision = &d.decision;
    let mut decided = vec![json!({"url": "view", "valueCode": decision.view.code()})];
    decided.extend(decision.clauses.iter().map(|c| json!({"url": "clause", "valueString": c})));
    decided.extend(decision.lawful_basis.iter().map(|b| json!({"url": "lawfulBasis", "valueCode": b})));
    decided.push(json!({"url": "agreementVersion", "valueString": decision.agreement_version}));
    extensions
        .push(json!({"url": format!("{VPR_FHIR}/StructureDefinition/disclosure-decision"), "extension": decided}));
    extensions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use vpr_domain::vocab::{AggravatingFactor, Category, NoticeStatus, RiskLevel, SafetyAdvice};
    use vpr_domain::Telephone;
    use vpr_policy::View;

    use super::*;
    use crate::disclose::{Publisher, Shown as Decided, SummaryPart};

    fn shown() -> Shown {
        Shown { version: 3, updated_at: Utc::now() }
    }

    fn existence() -> DisclosedNotice {
        DisclosedNotice {
            id: uuid::Uuid::parse_str("7d2c6f0e-0000-4000-8000-000000000001").unwrap(),
            status: NoticeStatus::Active,
            publisher: Publisher { ods_code: "XAC01".into(), name: "Northmoor General (fictional)".into() },
            contact: Some(ContactPoint {
                name: Some("Duty lead".into()),
                telephone: Some(Telephone::parse("+441134960999").unwrap()),
                email: None,
            }),
            matched_on: vec![],
            decision: Decided {
                view: View::Existence,
                restricted: false,
                lawful_basis: vec!["UKGDPR-6-1-c".into()],
                clauses: vec!["SS-3".into()],
                agreement_version: "v1".into(),
            },
            summary: None,
            full: None,
            restricted: None,
        }
    }

    #[test]
    fn an_existence_view_shows_only_that_a_notice_exists_and_whom_to_call() {
        let f = flag(&existence(), shown(), &KnownSubject::default());
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
        assert_eq!(flag(&existence(), shown(), &known)["subject"]["identifier"]["value"], "9990000018");
    }

    #[test]
    fn a_summary_view_adds_category_risk_advice_and_review_date() {
        let mut d = existence();
        d.decision.view = View::Summary;
        d.summary = Some(SummaryPart {
            subject_kinds: vec!["person"],
            category: Category::PhysicalAssault,
            risk_level: RiskLevel::High,
            aggravating_factors: vec![AggravatingFactor::RacialOrReligious],
            medical_factor_operative: false,
            safety_advice: vec![SafetyAdvice::AttendWithPolice],
            advice_text: Some("Crew assaulted.".into()),
            review_date: chrono::NaiveDate::from_ymd_opt(2027, 5, 15).unwrap(),
        });
        let f = flag(&d, shown(), &KnownSubject::default());
        assert_eq!(f["period"]["end"], "2027-05-15");
        assert!(f["period"].get("start").is_none(), "the incident date is in the full view only");
        assert_eq!(f["code"]["coding"][1]["code"], "high");
        assert!(f["code"]["text"].as_str().unwrap().starts_with("High risk of violence to staff: physical assault."));
        assert_eq!(f["category"][1]["coding"][0]["code"], "physical-assault");
        d.status = NoticeStatus::Withdrawn;
        assert_eq!(flag(&d, shown(), &KnownSubject::default())["status"], "inactive");
    }
}
