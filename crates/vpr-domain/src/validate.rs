//! Validation of request bodies: first the JSON Schema (the contract in `schemas/`), then the
//! domain rules that a schema cannot express. Every failing field is reported, by JSON pointer,
//! with the rule it broke.

use std::sync::OnceLock;

use chrono::{Duration, NaiveDate};
use jsonschema::{error::ValidationErrorKind, Validator};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::ids::{IdError, NhsNumber, Postcode, Telephone, Uprn};
use crate::notice::{
    Address, AddressInput, ContactInput, ContactPoint, NoticeContent, NoticeInput, Person, PersonInput, ReviewInput,
    Subject, WithdrawInput,
};
use crate::vocab::LawfulBasis;

/// One failing field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the field, `""` for the whole body.
    pub pointer: String,
    /// Stable id of the rule that was broken (`required`, `nhs-number-check-digit`, ...).
    pub rule: String,
    /// What was wrong, in words; never echoes an identifier.
    pub detail: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(pointer: impl Into<String>, rule: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { pointer: pointer.into(), rule: rule.into(), detail: detail.into() }
    }

    fn from_id(pointer: &str, err: &IdError) -> Self {
        Self::new(pointer, err.rule_id(), err.to_string())
    }
}

/// The JSON Schemas request bodies are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySchema {
    /// `schemas/notice.schema.json`
    Notice,
    /// `schemas/withdraw.schema.json`
    Withdraw,
    /// `schemas/review.schema.json`
    Review,
    /// `schemas/lookup.schema.json`
    Lookup,
    /// `schemas/consent.schema.json`
    Consent,
    /// `schemas/objection.schema.json`
    Objection,
    /// `schemas/break-glass-review.schema.json`
    BreakGlassReview,
    /// `schemas/audit-query.schema.json`
    AuditQuery,
    /// `schemas/subscription.schema.json`
    Subscription,
    /// `schemas/subscription-cohort.schema.json`
    SubscriptionCohort,
    /// `schemas/subscription-approval.schema.json`
    SubscriptionApproval,
    /// `schemas/redeliver.schema.json`
    Redeliver,
    /// `schemas/relayed-lookup.schema.json`
    RelayedLookup,
    /// `schemas/relayed-subscription.schema.json`
    RelayedSubscription,
}

impl BodySchema {
    /// The schema document.
    pub fn source(self) -> &'static str {
        match self {
            BodySchema::Notice => include_str!("../../../schemas/notice.schema.json"),
            BodySchema::Withdraw => include_str!("../../../schemas/withdraw.schema.json"),
            BodySchema::Review => include_str!("../../../schemas/review.schema.json"),
            BodySchema::Lookup => include_str!("../../../schemas/lookup.schema.json"),
            BodySchema::Consent => include_str!("../../../schemas/consent.schema.json"),
            BodySchema::Objection => include_str!("../../../schemas/objection.schema.json"),
            BodySchema::BreakGlassReview => include_str!("../../../schemas/break-glass-review.schema.json"),
            BodySchema::AuditQuery => include_str!("../../../schemas/audit-query.schema.json"),
            BodySchema::Subscription => include_str!("../../../schemas/subscription.schema.json"),
            BodySchema::SubscriptionCohort => include_str!("../../../schemas/subscription-cohort.schema.json"),
            BodySchema::SubscriptionApproval => include_str!("../../../schemas/subscription-approval.schema.json"),
            BodySchema::Redeliver => include_str!("../../../schemas/redeliver.schema.json"),
            BodySchema::RelayedLookup => include_str!("../../../schemas/relayed-lookup.schema.json"),
            BodySchema::RelayedSubscription => include_str!("../../../schemas/relayed-subscription.schema.json"),
        }
    }

    fn validator(self) -> &'static Result<Validator, String> {
        static NOTICE: OnceLock<Result<Validator, String>> = OnceLock::new();
        static WITHDRAW: OnceLock<Result<Validator, String>> = OnceLock::new();
        static REVIEW: OnceLock<Result<Validator, String>> = OnceLock::new();
        static LOOKUP: OnceLock<Result<Validator, String>> = OnceLock::new();
        static CONSENT: OnceLock<Result<Validator, String>> = OnceLock::new();
        static OBJECTION: OnceLock<Result<Validator, String>> = OnceLock::new();
        static BG_REVIEW: OnceLock<Result<Validator, String>> = OnceLock::new();
        static AUDIT_QUERY: OnceLock<Result<Validator, String>> = OnceLock::new();
        static SUBSCRIPTION: OnceLock<Result<Validator, String>> = OnceLock::new();
        static COHORT: OnceLock<Result<Validator, String>> = OnceLock::new();
        static APPROVAL: OnceLock<Result<Validator, String>> = OnceLock::new();
        static REDELIVER: OnceLock<Result<Validator, String>> = OnceLock::new();
        static RELAYED: OnceLock<Result<Validator, String>> = OnceLock::new();
        static RELAYED_SUB: OnceLock<Result<Validator, String>> = OnceLock::new();
        let cell = match self {
            BodySchema::Notice => &NOTICE,
            BodySchema::Withdraw => &WITHDRAW,
            BodySchema::Review => &REVIEW,
            BodySchema::Lookup => &LOOKUP,
            BodySchema::Consent => &CONSENT,
            BodySchema::Objection => &OBJECTION,
            BodySchema::BreakGlassReview => &BG_REVIEW,
            BodySchema::AuditQuery => &AUDIT_QUERY,
            BodySchema::Subscription => &SUBSCRIPTION,
            BodySchema::SubscriptionCohort => &COHORT,
            BodySchema::SubscriptionApproval => &APPROVAL,
            BodySchema::Redeliver => &REDELIVER,
            BodySchema::RelayedLookup => &RELAYED,
            BodySchema::RelayedSubscription => &RELAYED_SUB,
        };
        cell.get_or_init(|| compile_schema(self.source()))
    }
}

/// Compiles a JSON Schema (draft 2020-12) with format assertions switched on.
pub fn compile_schema(source: &str) -> Result<Validator, String> {
    let schema: Value = serde_json::from_str(source).map_err(|e| format!("schema is not JSON: {e}"))?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| format!("schema does not compile: {e}"))
}

/// Checks a JSON value against a compiled schema, reporting every failure by pointer and rule.
pub fn schema_errors(validator: &Validator, body: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    for err in validator.iter_errors(body) {
        let base = err.instance_path().as_str().to_owned();
        let detail = err.masked().to_string();
        match err.kind() {
            // Point at the missing or unexpected field itself, not its parent.
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                out.push(FieldError::new(
                    format!("{base}/{}", escape_pointer(name)),
                    "required",
                    format!("`{name}` is required"),
                ));
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    out.push(FieldError::new(
                        format!("{base}/{}", escape_pointer(name)),
                        "unknown-field",
                        format!("`{name}` is not a field of this object"),
                    ));
                }
            }
            kind => out.push(FieldError::new(base, kind.keyword().to_owned(), detail)),
        }
    }
    out
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Validates a body against one of the broker's schemas and deserialises it.
pub fn parse_body<T: DeserializeOwned>(schema: BodySchema, body: &Value) -> Result<T, Vec<FieldError>> {
    let validator =
        schema.validator().as_ref().map_err(|e| vec![FieldError::new("", "schema-unavailable", e.clone())])?;
    let errors = schema_errors(validator, body);
    if !errors.is_empty() {
        return Err(errors);
    }
    // The schema is stricter than serde, so this only fails if the two drift apart.
    serde_json::from_value(body.clone()).map_err(|e| vec![FieldError::new("", "shape", e.to_string())])
}

/// The domain rules for notices, with the settings and the day they are judged on.
#[derive(Debug, Clone, Copy)]
pub struct NoticeRules {
    /// The current date in the broker's clock (notices are dated in UK local days).
    pub today: NaiveDate,
    /// The longest a notice may go before review.
    pub max_review_interval_days: i64,
}

impl NoticeRules {
    /// Validates a publish or amend body into notice content.
    pub fn notice(&self, body: &Value) -> Result<NoticeContent, Vec<FieldError>> {
        let input: NoticeInput = parse_body(BodySchema::Notice, body)?;
        let mut errs = Vec::new();
        let subject = subject(&input, &mut errs);
        self.dates(&input, &mut errs);
        if let Some(on) = input.subject_informed.informed_on {
            if on > self.today {
                errs.push(FieldError::new(
                    "/subject_informed/informed_on",
                    "date-in-future",
                    "the date the subject was informed cannot be in the future",
                ));
            }
        }
        if input.subject_informed.informed_on.is_some() == input.subject_informed.withheld_because.is_some() {
            errs.push(FieldError::new(
                "/subject_informed",
                "exactly-one-of",
                "give exactly one of `informed_on` and `withheld_because`",
            ));
        }
        lawful_basis(&input, &mut errs);
        let contact = input.contact.as_ref().and_then(|c| contact(c, &mut errs));
        if !errs.is_empty() {
            return Err(errs);
        }
        let Some(subject) = subject else {
            return Err(vec![FieldError::new("/subject", "subject-required", "a subject is required")]);
        };
        Ok(NoticeContent {
            subject,
            category: input.category,
            aggravating_factors: input.aggravating_factors,
            medical_factor_operative: input.medical_factor_operative,
            risk_level: input.risk_level,
            safety_advice: input.safety_advice,
            advice_text: input.advice_text.map(|t| t.trim().to_owned()),
            incident_date: input.incident_date,
            review_date: input.review_date,
            subject_informed: input.subject_informed,
            lawful_basis: input.lawful_basis,
            restricted: input.restricted,
            contact,
        })
    }

    /// Validates a review body.
    pub fn review(&self, body: &Value) -> Result<ReviewInput, Vec<FieldError>> {
        let input: ReviewInput = parse_body(BodySchema::Review, body)?;
        let mut errs = Vec::new();
        self.review_date("/review_date", input.review_date, &mut errs);
        if input.note.trim().is_empty() {
            errs.push(FieldError::new("/note", "not-blank", "the review note cannot be blank"));
        }
        if errs.is_empty() {
            Ok(input)
        } else {
            Err(errs)
        }
    }

    /// Validates a withdraw body.
    pub fn withdraw(&self, body: &Value) -> Result<WithdrawInput, Vec<FieldError>> {
        let input: WithdrawInput = parse_body(BodySchema::Withdraw, body)?;
        if input.reason.trim().is_empty() {
            return Err(vec![FieldError::new("/reason", "not-blank", "a reason for withdrawal is required")]);
        }
        Ok(input)
    }

    fn dates(&self, input: &NoticeInput, errs: &mut Vec<FieldError>) {
        if input.incident_date > self.today {
            errs.push(FieldError::new("/incident_date", "date-in-future", "the incident date cannot be in the future"));
        }
        self.review_date("/review_date", input.review_date, errs);
        if input.review_date <= input.incident_date {
            errs.push(FieldError::new(
                "/review_date",
                "review-after-incident",
                "the review date must be after the incident date",
            ));
        }
    }

    fn review_date(&self, pointer: &str, date: NaiveDate, errs: &mut Vec<FieldError>) {
        if date <= self.today {
            errs.push(FieldError::new(pointer, "review-date-in-future", "the review date must be after today"));
        } else if date > self.today + Duration::days(self.max_review_interval_days) {
            errs.push(FieldError::new(
                pointer,
                "review-interval",
                format!("the review date must be at most {} days ahead", self.max_review_interval_days),
            ));
        }
    }
}

fn subject(input: &NoticeInput, errs: &mut Vec<FieldError>) -> Option<Subject> {
    subject_of(&input.subject, errs)
}

/// Validates a subject (person, address, telephone) into normalised identifiers.
pub fn subject_of(s: &crate::notice::SubjectInput, errs: &mut Vec<FieldError>) -> Option<Subject> {
    if s.person.is_none() && s.address.is_none() && s.telephone.is_none() {
        errs.push(FieldError::new("/subject", "subject-required", "give a person, an address or a telephone number"));
        return None;
    }
    let before = errs.len();
    let person = s.person.as_ref().map(|p| person(p, errs));
    let address = s.address.as_ref().map(|a| address(a, errs));
    let telephone = s
        .telephone
        .as_deref()
        .and_then(|t| Telephone::parse(t).map_err(|e| errs.push(FieldError::from_id("/subject/telephone", &e))).ok());
    (errs.len() == before).then_some(Subject { person, address, telephone })
}

fn parse_into<T>(
    raw: Option<&str>,
    pointer: &str,
    parse: fn(&str) -> Result<T, IdError>,
    errs: &mut Vec<FieldError>,
) -> Option<T> {
    raw.and_then(|v| parse(v).map_err(|e| errs.push(FieldError::from_id(pointer, &e))).ok())
}

fn person(p: &PersonInput, errs: &mut Vec<FieldError>) -> Person {
    let nhs_number = parse_into(p.nhs_number.as_deref(), "/subject/person/nhs_number", NhsNumber::parse, errs);
    let postcode = parse_into(p.postcode.as_deref(), "/subject/person/postcode", Postcode::parse, errs);
    let demographics = p.family_name.is_some() && p.birth_date.is_some() && p.postcode.is_some();
    if p.nhs_number.is_none() && !demographics {
        errs.push(FieldError::new(
            "/subject/person",
            "person-identifiable",
            "give an NHS number, or family name, date of birth and postcode",
        ));
    }
    for (field, value) in [("family_name", &p.family_name), ("given_name", &p.given_name)] {
        if value.as_deref().is_some_and(|v| crate::notice::normalise_name(v).is_empty()) {
            errs.push(FieldError::new(
                format!("/subject/person/{field}"),
                "name-letters",
                "a name must contain letters",
            ));
        }
    }
    if let Some(d) = p.birth_date {
        if d > chrono::Utc::now().date_naive() {
            errs.push(FieldError::new(
                "/subject/person/birth_date",
                "date-in-future",
                "the date of birth cannot be in the future",
            ));
        }
    }
    Person {
        nhs_number,
        family_name: p.family_name.as_ref().map(|v| v.trim().to_owned()),
        given_name: p.given_name.as_ref().map(|v| v.trim().to_owned()),
        birth_date: p.birth_date,
        postcode,
    }
}

fn address(a: &AddressInput, errs: &mut Vec<FieldError>) -> Address {
    let uprn = parse_into(a.uprn.as_deref(), "/subject/address/uprn", Uprn::parse, errs);
    let postcode = parse_into(a.postcode.as_deref(), "/subject/address/postcode", Postcode::parse, errs);
    if a.uprn.is_none() && (a.postcode.is_none() || a.line1.is_none()) {
        errs.push(FieldError::new(
            "/subject/address",
            "address-identifiable",
            "give a UPRN, or a postcode and first line",
        ));
    }
    if a.line1.as_deref().is_some_and(|l| crate::notice::normalise_address_line(l).is_empty()) {
        errs.push(FieldError::new(
            "/subject/address/line1",
            "not-blank",
            "the first line must contain letters or digits",
        ));
    }
    Address { uprn, postcode, line1: a.line1.as_ref().map(|v| v.trim().to_owned()) }
}

fn contact(c: &ContactInput, errs: &mut Vec<FieldError>) -> Option<ContactPoint> {
    if c.telephone.is_none() && c.email.is_none() {
        errs.push(FieldError::new(
            "/contact",
            "contact-reachable",
            "a contact point needs a telephone number or an email",
        ));
        return None;
    }
    let telephone = parse_into(c.telephone.as_deref(), "/contact/telephone", Telephone::parse, errs);
    Some(ContactPoint { name: c.name.clone(), telephone, email: c.email.clone() })
}

fn lawful_basis(input: &NoticeInput, errs: &mut Vec<FieldError>) {
    if !input.lawful_basis.iter().any(|b| b.is_article_6()) {
        errs.push(FieldError::new(
            "/lawful_basis",
            "article-6-basis",
            "name an Article 6 basis (UKGDPR-6-1-c, -d or -e) or DPA18-PART3 for law-enforcement processing",
        ));
    }
    let crime_data = input.restricted.as_ref().is_some_and(|r| r.crime_reference.is_some());
    let criminal_basis =
        input.lawful_basis.iter().any(|b| matches!(b, LawfulBasis::Ukgdpr10 | LawfulBasis::Dpa18Part3));
    if crime_data && !criminal_basis {
        errs.push(FieldError::new(
            "/restricted/crime_reference",
            "criminal-offence-basis",
            "a crime reference is criminal offence data: name UKGDPR-10 or DPA18-PART3",
        ));
    }
}

/// Who the calling system acts for.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequesterInput {
    /// The end user (e.g. an SDS user id).
    pub user_id: String,
    /// The role the user acts in.
    pub role: String,
}

/// A case or incident reference.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextInput {
    /// The reference.
    pub reference: Option<String>,
}

/// An emergency assertion.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassInput {
    /// Why.
    pub justification: String,
}

/// Body of `POST /v1/lookups`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupInput {
    /// Purpose of use.
    pub purpose: String,
    /// Who the system acts for.
    pub requester: RequesterInput,
    /// Case or incident reference.
    pub context: Option<ContextInput>,
    /// Emergency assertion.
    pub break_glass: Option<BreakGlassInput>,
    /// The subject to look up.
    pub subject: crate::notice::SubjectInput,
    /// `local`: this broker's notices only; `federated` (the default): its peers' too.
    #[serde(default)]
    pub scope: Option<String>,
}

/// Body of `POST /v1/federation/lookups`: a look-up a peer broker relays for one of its partners.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedLookupInput {
    /// The relay: the requester, signed by the peer broker (JWS compact).
    pub relay: String,
    /// The subject to look up.
    pub subject: Value,
}

/// Checks a relayed look-up's body against its schema (the subject is checked once the relay
/// is, as a look-up's).
pub fn relayed_lookup(body: &Value) -> Result<RelayedLookupInput, Vec<FieldError>> {
    parse_body(BodySchema::RelayedLookup, body)
}

/// Body of `POST /v1/federation/subscriptions`: a subscription a peer broker relays for one of
/// its partners.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedSubscriptionInput {
    /// The relay: the requester, signed by the peer broker (JWS compact).
    pub relay: String,
    /// The subscription's id at the asking broker.
    pub asking_id: uuid::Uuid,
    /// The subscription, checked once the relay is, as a partner's.
    pub subscription: Value,
}

/// Checks a relayed subscription's envelope against its schema.
pub fn relayed_subscription(body: &Value) -> Result<RelayedSubscriptionInput, Vec<FieldError>> {
    parse_body(BodySchema::RelayedSubscription, body)
}

/// Body of `POST /v1/consents` and `POST /v1/objections`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveInput {
    /// The subject.
    pub subject: crate::notice::SubjectInput,
    /// Purpose of use.
    pub purpose: String,
    /// `given`/`withdrawn`, or `upheld`/`overridden`.
    pub status: String,
    /// Evidence reference.
    pub evidence_reference: String,
    /// Why (required to override an objection).
    pub reason: Option<String>,
    /// From when (default today).
    pub effective_from: Option<NaiveDate>,
    /// Until when.
    pub expires_on: Option<NaiveDate>,
    /// Who records it.
    pub requester: RequesterInput,
}

/// Body of `POST /v1/audit/break-glass/{id}/review`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassReviewInput {
    /// `appropriate`, `inappropriate` or `referred`.
    pub outcome: String,
    /// The reviewer's note.
    pub note: String,
    /// Who reviewed.
    pub reviewer: RequesterInput,
}

/// Filters for the IG review of the audit log (`schemas/audit-query.schema.json`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQueryInput {
    /// At or after.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Before.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Acting organisation.
    pub organisation: Option<String>,
    /// End user.
    pub user: Option<String>,
    /// Role.
    pub role: Option<String>,
    /// Purpose of use.
    pub purpose: Option<String>,
    /// Overall decision.
    pub decision: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Emergency accesses only, or ordinary only.
    pub break_glass: Option<bool>,
    /// A notice.
    pub notice: Option<uuid::Uuid>,
    /// A subject (body only).
    pub subject: Option<crate::notice::SubjectInput>,
    /// Why IG is looking.
    pub reference: Option<String>,
    /// Paging cursor.
    pub before: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Validated review filters.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// The filters as sent.
    pub input: AuditQueryInput,
    /// The subject, normalised.
    pub subject: Option<Subject>,
}

/// Validates review filters from a body (`POST`).
pub fn audit_query(body: &Value) -> Result<AuditQuery, Vec<FieldError>> {
    let input: AuditQueryInput = parse_body(BodySchema::AuditQuery, body)?;
    let mut errs = Vec::new();
    let subject = input.subject.as_ref().and_then(|s| subject_of(s, &mut errs));
    if let (Some(from), Some(to)) = (input.from, input.to) {
        if to <= from {
            errs.push(FieldError::new("/to", "to-after-from", "`to` must be after `from`"));
        }
    }
    if errs.is_empty() {
        Ok(AuditQuery { input, subject })
    } else {
        Err(errs)
    }
}

/// Validates review filters from a query string (`GET`): the same rules, except that a subject
/// may not be given, since identifiers in a URL end up in logs and browser histories.
pub fn audit_query_params(params: &[(String, String)]) -> Result<AuditQuery, Vec<FieldError>> {
    let mut body = serde_json::Map::new();
    let mut errs = Vec::new();
    for (name, value) in params {
        if name == "subject" || name.starts_with("subject.") || name.starts_with("subject[") {
            errs.push(FieldError::new(
                "/subject",
                "subject-in-url",
                "a subject's identifiers must not be sent in a URL: POST the filters instead",
            ));
            continue;
        }
        let typed = match name.as_str() {
            "break_glass" => match value.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(value.clone()),
            },
            "before" | "limit" => value.parse::<i64>().map_or_else(|_| Value::String(value.clone()), Value::from),
            _ => Value::String(value.clone()),
        };
        if body.insert(name.clone(), typed).is_some() {
            errs.push(FieldError::new(
                format!("/{}", escape_pointer(name)),
                "repeated",
                format!("`{name}` is given twice"),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    audit_query(&Value::Object(body))
}

/// A validated look-up.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The body as sent.
    pub input: LookupInput,
    /// The subject, normalised.
    pub subject: Subject,
}

/// Validates a look-up body.
pub fn lookup(body: &Value) -> Result<Lookup, Vec<FieldError>> {
    let input: LookupInput = parse_body(BodySchema::Lookup, body)?;
    let mut errs = Vec::new();
    let subject = subject_of(&input.subject, &mut errs);
    if let Some(bg) = &input.break_glass {
        if bg.justification.trim().is_empty() {
            errs.push(FieldError::new(
                "/break_glass/justification",
                "not-blank",
                "a break-glass justification is required",
            ));
        }
    }
    match subject {
        Some(subject) if errs.is_empty() => Ok(Lookup { input, subject }),
        _ => Err(errs),
    }
}

/// A validated consent or objection.
#[derive(Debug, Clone)]
pub struct Directive {
    /// The body as sent.
    pub input: DirectiveInput,
    /// The subject, normalised.
    pub subject: Subject,
}

/// Validates a consent (`objection = false`) or objection body.
pub fn directive(body: &Value, objection: bool, today: NaiveDate) -> Result<Directive, Vec<FieldError>> {
    let schema = if objection { BodySchema::Objection } else { BodySchema::Consent };
    let input: DirectiveInput = parse_body(schema, body)?;
    let mut errs = Vec::new();
    let subject = subject_of(&input.subject, &mut errs);
    if objection && input.status == "overridden" && input.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        errs.push(FieldError::new("/reason", "override-reason", "overriding an objection needs a recorded reason"));
    }
    let from = input.effective_from.unwrap_or(today);
    if input.expires_on.is_some_and(|e| e < from) {
        errs.push(FieldError::new("/expires_on", "expires-after-start", "must not be before `effective_from`"));
    }
    match subject {
        Some(subject) if errs.is_empty() => Ok(Directive { input, subject }),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{AggravatingFactor, Category, SafetyAdvice};
    use serde_json::json;

    fn rules() -> NoticeRules {
        NoticeRules { today: NaiveDate::from_ymd_opt(2026, 11, 21).unwrap_or_default(), max_review_interval_days: 365 }
    }

    fn good() -> Value {
        json!({
            "subject": {"person": {"nhs_number": "999 000 0018"}},
            "category": "physical-assault",
            "risk_level": "high",
            "incident_date": "2026-11-01",
            "review_date": "2027-05-01",
            "subject_informed": {"withheld_because": "informing would put staff at risk"},
            "lawful_basis": ["UKGDPR-6-1-e", "UKGDPR-9-2-h"]
        })
    }

    #[test]
    fn a_good_notice_passes() {
        let n = rules().notice(&good());
        assert!(n.is_ok(), "{n:?}");
    }

    #[test]
    fn errors_point_at_the_field_and_name_the_rule() {
        let mut body = good();
        body["subject"]["person"]["nhs_number"] = json!("999 000 0019");
        body["review_date"] = json!("2028-01-01");
        body.as_object_mut().map(|o| o.remove("category"));
        body["colour"] = json!("red");
        let errs = rules().notice(&body).err().unwrap_or_default();
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.pointer.as_str(), e.rule.as_str())).collect();
        assert!(got.contains(&("/category", "required")), "{got:?}");
        assert!(got.contains(&("/colour", "unknown-field")), "{got:?}");
        // Domain rules run only once the schema passes.
        let mut body = good();
        body["subject"]["person"]["nhs_number"] = json!("999 000 0019");
        body["review_date"] = json!("2028-01-01");
        let errs = rules().notice(&body).err().unwrap_or_default();
        let got: Vec<(&str, &str)> = errs.iter().map(|e| (e.pointer.as_str(), e.rule.as_str())).collect();
        assert_eq!(
            got,
            vec![("/subject/person/nhs_number", "nhs-number-check-digit"), ("/review_date", "review-interval")]
        );
    }

    #[test]
    fn schema_errors_never_echo_values() {
        let mut body = good();
        body["subject"]["person"]["nhs_number"] = json!("ABC9990000");
        let errs = rules().notice(&body).err().unwrap_or_default();
        assert!(errs.iter().all(|e| !e.detail.contains("ABC9990000")), "{errs:?}");
    }

    #[test]
    fn schema_vocabularies_match_the_code() {
        let schema: Value = serde_json::from_str(BodySchema::Notice.source()).unwrap_or_default();
        let codes = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()).unwrap_or_default()
        };
        let p = &schema["properties"];
        assert_eq!(
            codes(&p["category"]["enum"]),
            Category::ALL.iter().map(|c| c.code().to_owned()).collect::<Vec<_>>()
        );
        assert_eq!(
            codes(&p["aggravating_factors"]["items"]["enum"]),
            AggravatingFactor::ALL.iter().map(|c| c.code().to_owned()).collect::<Vec<_>>()
        );
        assert_eq!(
            codes(&p["safety_advice"]["items"]["enum"]),
            SafetyAdvice::ALL.iter().map(|c| c.code().to_owned()).collect::<Vec<_>>()
        );
        assert_eq!(
            codes(&p["lawful_basis"]["items"]["enum"]),
            LawfulBasis::ALL.iter().map(|c| c.code().to_owned()).collect::<Vec<_>>()
        );
    }
}
