//! Step 5 of the pipeline: a notice shaped to its decided view. The [`DisclosedNotice`] is all
//! that leaves the pipeline: fields outside the view are absent from the type's value, not blank,
//! and every wire form (VPR JSON, FHIR `Flag`, webhook events) is rendered from it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;
use vpr_domain::notice::{ContactPoint, Restricted, Subject, SubjectInformed};
use vpr_domain::vocab::{AggravatingFactor, Category, LawfulBasis, NoticeStatus, RiskLevel, SafetyAdvice};
use vpr_policy::{Decision, View};
use vpr_store::StoredNotice;

use crate::App;

/// The publishing organisation, as a recipient sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Publisher {
    /// ODS code.
    pub ods_code: String,
    /// Name, from the registry (empty if it has left).
    pub name: String,
}

/// The decision a disclosed notice was shown under.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// The view.
    pub view: View,
    /// Whether the restricted fields are shown.
    pub restricted: bool,
    /// Lawful-basis codes of the deciding clauses.
    pub lawful_basis: Vec<String>,
    /// The deciding clauses.
    pub clauses: Vec<String>,
    /// The agreement version that decided.
    pub agreement_version: String,
}

/// What the summary view adds.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryPart {
    /// Which kinds of subject the notice is about (`person`, `address`, `telephone`).
    pub subject_kinds: Vec<&'static str>,
    /// Category.
    pub category: Category,
    /// Risk level.
    pub risk_level: RiskLevel,
    /// Aggravating factors.
    pub aggravating_factors: Vec<AggravatingFactor>,
    /// Whether a medical factor was operative.
    pub medical_factor_operative: bool,
    /// Safety advice.
    pub safety_advice: Vec<SafetyAdvice>,
    /// Free-text advice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice_text: Option<String>,
    /// Review date.
    pub review_date: NaiveDate,
}

/// What the full view adds.
#[derive(Debug, Clone, Serialize)]
pub struct FullPart {
    /// The version.
    pub version: i64,
    /// The subject's identifiers.
    pub subject: Subject,
    /// When the incident happened.
    pub incident_date: NaiveDate,
    /// Whether the subject was told.
    pub subject_informed: SubjectInformed,
    /// The notice's lawful bases.
    pub lawful_basis: Vec<LawfulBasis>,
    /// First published.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A notice minimised to the view the agreement decided.
#[derive(Debug, Clone, Serialize)]
pub struct DisclosedNotice {
    /// Notice id.
    pub id: Uuid,
    /// Status.
    pub status: NoticeStatus,
    /// Publisher.
    pub publisher: Publisher,
    /// Whom to call: the notice's own contact, or the publisher's.
    pub contact: Option<ContactPoint>,
    /// How a look-up's query matched (look-ups only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched_on: Vec<String>,
    /// The decision.
    pub decision: Shown,
    /// Summary view and above.
    #[serde(flatten)]
    pub summary: Option<SummaryPart>,
    /// Full view.
    #[serde(flatten)]
    pub full: Option<FullPart>,
    /// Restricted fields, when the decision permits them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted: Option<Restricted>,
}

/// The kinds of subject a notice is about.
pub fn subject_kinds(s: &Subject) -> Vec<&'static str> {
    [("person", s.person.is_some()), ("address", s.address.is_some()), ("telephone", s.telephone.is_some())]
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(k, _)| k)
        .collect()
}

/// Shapes a notice to `view` under decision `d`.
pub fn minimise(app: &App, n: &StoredNotice, matched: &[String], view: View, d: &Decision) -> DisclosedNotice {
    let partner = app.tokens.registry().partner(&n.publisher_ods);
    let c = &n.content;
    let summary = (view >= View::Summary).then(|| SummaryPart {
        subject_kinds: subject_kinds(&c.subject),
        category: c.category,
        risk_level: c.risk_level,
        aggravating_factors: c.aggravating_factors.clone(),
        medical_factor_operative: c.medical_factor_operative,
        safety_advice: c.safety_advice.clone(),
        advice_text: c.advice_text.clone(),
        review_date: c.review_date,
    });
    let full = (view >= View::Full).then(|| FullPart {
        version: n.version.version,
        subject: c.subject.clone(),
        incident_date: c.incident_date,
        subject_informed: c.subject_informed.clone(),
        lawful_basis: c.lawful_basis.clone(),
        created_at: n.created_at,
        updated_at: n.version.at,
    });
    DisclosedNotice {
        id: n.id,
        status: n.status,
        publisher: Publisher {
            ods_code: n.publisher_ods.clone(),
            name: partner.map(|p| p.name.clone()).unwrap_or_default(),
        },
        contact: c.contact.clone().or_else(|| partner.map(|p| p.contact.clone())),
        matched_on: matched.to_vec(),
        decision: Shown {
            view,
            restricted: d.restricted,
            lawful_basis: d.lawful_basis.clone(),
            clauses: d.clauses.clone(),
            agreement_version: app.agreement.version.clone(),
        },
        summary,
        full,
        restricted: if d.restricted && view >= View::Summary { c.restricted.clone() } else { None },
    }
}

/// The notice as its own publisher is shown it through a disclosure form (a FHIR read of its
/// own Flag): the full view with the restricted fields.
pub fn publisher_view(app: &App, n: &StoredNotice) -> DisclosedNotice {
    let own =
        Decision { permit: true, view: Some(View::Full), restricted: true, lawful_basis: vec![], clauses: vec![] };
    minimise(app, n, &[], View::Full, &own)
}
