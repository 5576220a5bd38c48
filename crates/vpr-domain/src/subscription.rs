//! Subscriptions: what a partner asks to be told of, how it is delivered, and which notices match.
//!
//! Criteria are judged against a notice's decrypted content when its change is fanned out, so
//! no postcode or identifier needs to sit in clear in the database; a cohort is held only as
//! the blind indexes of its members' identifiers.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::notice::{NoticeContent, Subject, SubjectInput};
use crate::validate::{parse_body, subject_of, BodySchema, FieldError, RequesterInput};
use crate::vocab::{Category, RiskLevel};

crate::vocab::vocabulary! {
    /// Where a subscription stands, stored as its code.
    SubscriptionStatus {
        /// Receiving events.
        Active = "active",
        /// Waiting for an IG decision: receives nothing.
        Pending = "pending-approval",
        /// Refused by IG.
        Rejected = "rejected",
        /// Stopped by IG: no new events, but retractions of notices it was given still reach it.
        Revoked = "revoked",
        /// Past its expiry: no new events, but retractions still reach it.
        Expired = "expired",
        /// Deleted by its owner: nothing more is sent.
        Deleted = "deleted",
    }
}

impl SubscriptionStatus {
    /// Statuses still sent events: active ones for new matches; expired and revoked ones only
    /// for retractions of notices they were given.
    pub const RECEIVING: &'static [Self] = &[Self::Active, Self::Expired, Self::Revoked];
    /// Statuses its owner may still replace (or change the cohort of).
    pub const REPLACEABLE: &'static [Self] = &[Self::Active, Self::Pending, Self::Expired];
    /// Statuses its owner may still delete from.
    pub const DELETABLE: &'static [Self] = &[Self::Active, Self::Pending, Self::Expired, Self::Revoked, Self::Rejected];
    /// Statuses IG may revoke from.
    pub const REVOCABLE: &'static [Self] = &[Self::Active, Self::Expired];

    /// Whether events still reach it (see [`Self::RECEIVING`]).
    pub fn receives(self) -> bool {
        Self::RECEIVING.contains(&self)
    }

    /// Whether new matches reach it (only an active subscription's).
    pub fn receives_new(self) -> bool {
        self == Self::Active
    }

    /// Whether its owner may replace it or change its cohort.
    pub fn replaceable(self) -> bool {
        Self::REPLACEABLE.contains(&self)
    }

    /// Whether its owner may delete it.
    pub fn deletable(self) -> bool {
        Self::DELETABLE.contains(&self)
    }

    /// The codes of `statuses` (for queries).
    pub fn codes(statuses: &[Self]) -> Vec<&'static str> {
        statuses.iter().map(|s| s.code()).collect()
    }
}

/// What a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    /// The notice id and whom to call: the `existence` view.
    IdOnly,
    /// The view the agreement decides at delivery time.
    View,
}

impl Payload {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            Payload::IdOnly => "id-only",
            Payload::View => "view",
        }
    }

    /// Looks a wire code up.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "id-only" => Some(Payload::IdOnly),
            "view" => Some(Payload::View),
            _ => None,
        }
    }
}

/// What a subscription is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topic {
    /// Changes to notices that match the criteria.
    #[default]
    Notices,
    /// Each disclosure of the subscriber's own notices (its access log, pushed).
    Disclosures,
}

impl Topic {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            Topic::Notices => "notices",
            Topic::Disclosures => "disclosures",
        }
    }

    /// Looks a wire code up.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "notices" => Some(Topic::Notices),
            "disclosures" => Some(Topic::Disclosures),
            _ => None,
        }
    }
}

/// How a subscription crosses an ICS border, when it does (stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerLink {
    /// At the answering broker: a partner of the peer broker `peer` subscribed through it. Every
    /// event is decided here for that partner as a remote requester, and pushed to the peer.
    RelayedBy {
        /// The peer broker (its ICB's ODS code).
        peer: String,
        /// The subscription's id at the peer, which its events are pushed to.
        asking_id: String,
    },
    /// At the asking broker: held at peer `peer` as its subscription `subscription_id`, which
    /// decides every event. Nothing is fanned out here; events are passed on as they arrive.
    AtPeer {
        /// The peer broker holding it.
        peer: String,
        /// Its id there.
        subscription_id: String,
    },
}

impl PeerLink {
    /// The peer broker at the other end.
    pub fn peer(&self) -> &str {
        match self {
            PeerLink::RelayedBy { peer, .. } | PeerLink::AtPeer { peer, .. } => peer,
        }
    }
}

/// The purpose a `disclosures` subscription serves: the publisher managing its own notices.
pub const DISCLOSURES_PURPOSE: &str = "vpr-management";

/// How events reach the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMethod {
    /// Pushed to a URL, signed (and optionally encrypted).
    Webhook,
    /// Read from the feed only.
    Feed,
}

/// The kinds of subject a notice can be about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    /// A person.
    Person,
    /// An address.
    Address,
    /// A telephone number.
    Telephone,
}

impl SubjectKind {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            SubjectKind::Person => "person",
            SubjectKind::Address => "address",
            SubjectKind::Telephone => "telephone",
        }
    }

    /// The kinds a subject has.
    pub fn of(s: &Subject) -> Vec<SubjectKind> {
        let mut kinds = Vec::new();
        if s.person.is_some() {
            kinds.push(SubjectKind::Person);
        }
        if s.address.is_some() {
            kinds.push(SubjectKind::Address);
        }
        if s.telephone.is_some() {
            kinds.push(SubjectKind::Telephone);
        }
        kinds
    }
}

/// Criteria as received.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriteriaInput {
    /// Categories, any of.
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Lowest risk level.
    pub min_risk_level: Option<RiskLevel>,
    /// Subject kinds, any of.
    #[serde(default)]
    pub subject_kinds: Vec<SubjectKind>,
    /// Postcode areas or districts, any of.
    #[serde(default)]
    pub postcodes: Vec<String>,
    /// Subjects, any of.
    pub cohort: Option<Vec<SubjectInput>>,
}

/// Delivery as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryInput {
    /// Webhook or feed.
    pub method: DeliveryMethod,
    /// Webhook URL.
    pub url: Option<String>,
    /// The subscriber's public encryption JWK.
    pub encryption_key: Option<Map<String, Value>>,
}

/// Body of `POST /v1/subscriptions` and `PUT /v1/subscriptions/{id}`, as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionInput {
    /// Purpose of use.
    pub purpose: String,
    /// The role deliveries are decided for.
    pub role: String,
    /// Standing case or service reference.
    pub context_reference: Option<String>,
    /// Notice changes (default) or disclosures of one's own notices.
    #[serde(default)]
    pub topic: Topic,
    /// What to be told of.
    pub criteria: CriteriaInput,
    /// What each delivery carries.
    pub payload: Payload,
    /// How.
    pub delivery: DeliveryInput,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// The subscriber's own label.
    pub tag: Option<String>,
    /// A peer broker to subscribe at, to notices published in its ICS.
    pub peer: Option<String>,
}

/// Criteria as stored (the cohort itself is stored apart, as blind indexes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criteria {
    /// Categories, any of; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<Category>,
    /// Lowest risk level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_risk_level: Option<RiskLevel>,
    /// Subject kinds, any of; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_kinds: Vec<SubjectKind>,
    /// Normalised postcode areas or districts, any of; empty for anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub postcodes: Vec<String>,
    /// Whether the cohort criterion applies.
    #[serde(default)]
    pub cohort: bool,
}

impl Criteria {
    /// Whether a notice's content matches; `in_cohort` says whether its subject shares an
    /// identifier with the cohort (only consulted when the cohort criterion applies).
    pub fn matches(&self, c: &NoticeContent, in_cohort: bool) -> bool {
        if !self.categories.is_empty() && !self.categories.contains(&c.category) {
            return false;
        }
        if self.min_risk_level.is_some_and(|min| c.risk_level < min) {
            return false;
        }
        if !self.subject_kinds.is_empty() && !SubjectKind::of(&c.subject).iter().any(|k| self.subject_kinds.contains(k))
        {
            return false;
        }
        if !self.postcodes.is_empty() {
            let s = &c.subject;
            let postcodes = [
                s.person.as_ref().and_then(|p| p.postcode.as_ref()),
                s.address.as_ref().and_then(|a| a.postcode.as_ref()),
            ];
            let inside = postcodes
                .iter()
                .flatten()
                .any(|pc| self.postcodes.iter().any(|f| f == pc.district() || f == pc.area()));
            if !inside {
                return false;
            }
        }
        !self.cohort || in_cohort
    }
}

/// A validated subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// Purpose of use.
    pub purpose: String,
    /// Role.
    pub role: String,
    /// Standing reference.
    pub context_reference: Option<String>,
    /// What it is told of.
    pub topic: Topic,
    /// Criteria (without the cohort members).
    pub criteria: Criteria,
    /// The cohort's subjects, normalised, when given.
    pub cohort: Option<Vec<Subject>>,
    /// Payload.
    pub payload: Payload,
    /// Method.
    pub method: DeliveryMethod,
    /// Webhook URL, checked.
    pub url: Option<String>,
    /// The subscriber's encryption JWK, as given (its usability is checked by the JOSE layer).
    pub encryption_key: Option<Map<String, Value>>,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// The subscriber's label.
    pub tag: Option<String>,
    /// The peer broker to subscribe at (its notices, decided by it), if any.
    pub peer: Option<String>,
}

/// The rules subscriptions are judged by.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionRules {
    /// Now, from the broker's clock.
    pub now: DateTime<Utc>,
    /// Longest a subscription may run.
    pub max_duration: Duration,
    /// Demo mode: plain-http and loopback webhooks are accepted (for local receivers).
    pub allow_insecure_webhooks: bool,
}

/// Normalises a postcode area (`LS`) or district (`LS6`, `EC1A`); `None` if it is neither.
pub fn postcode_prefix(raw: &str) -> Option<String> {
    let p: String = raw.trim().to_ascii_uppercase();
    let letters = p.chars().take_while(char::is_ascii_alphabetic).count();
    let rest = p.get(letters..).unwrap_or_default();
    let ok_rest = match rest.len() {
        0 => true,
        1 => rest.chars().all(|c| c.is_ascii_digit()),
        2 => {
            let mut cs = rest.chars();
            cs.next().is_some_and(|c| c.is_ascii_digit()) && cs.next().is_some_and(|c| c.is_ascii_alphanumeric())
        }
        _ => false,
    };
    ((1..=2).contains(&letters) && ok_rest).then_some(p)
}

/// Checks a webhook URL: https (plain http only in demo mode), a host, no credentials or
/// fragment, and outside demo mode no loopback, link-local or unspecified address.
pub fn webhook_url(raw: &str, allow_insecure: bool, pointer: &str) -> Result<String, FieldError> {
    let bad = |rule: &str, detail: &str| FieldError::new(pointer, rule, detail);
    let (scheme, rest) = raw.split_once("://").ok_or_else(|| bad("url", "the webhook URL must be absolute"))?;
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "https" => {}
        "http" if allow_insecure => {}
        "http" => {
            return Err(bad(
                "https-required",
                "a webhook URL must use https (plain http is accepted only in demo mode)",
            ))
        }
        _ => return Err(bad("url-scheme", "a webhook URL must be https")),
    }
    if raw.contains('#') {
        return Err(bad("url-fragment", "a webhook URL must not have a fragment"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("url", "a webhook URL must not contain spaces or control characters"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("url-credentials", "a webhook URL must not carry credentials: the body is signed instead"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned(),
    };
    if host.is_empty() {
        return Err(bad("url-host", "a webhook URL needs a host"));
    }
    if !allow_insecure {
        let lower = host.to_ascii_lowercase();
        let internal = match lower.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local() || ip.is_unspecified(),
            Ok(std::net::IpAddr::V6(ip)) => {
                ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xffc0) == 0xfe80
            }
            Err(_) => lower == "localhost" || lower.ends_with(".localhost"),
        };
        if internal {
            return Err(bad("url-internal", "a webhook URL must not point at a loopback or link-local address"));
        }
    }
    Ok(format!("{scheme}://{rest}"))
}

/// Validates each subject of a cohort list, with pointers under `base`.
pub fn cohort_subjects(items: &[SubjectInput], base: &str, errs: &mut Vec<FieldError>) -> Vec<Subject> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut own = Vec::new();
        if let Some(s) = subject_of(item, &mut own) {
            out.push(s);
        }
        // `subject_of` points at `/subject/...`; re-root its pointers at this item.
        errs.extend(own.into_iter().map(|mut e| {
            let rest = e.pointer.strip_prefix("/subject").unwrap_or(&e.pointer).to_owned();
            e.pointer = format!("{base}/{i}{rest}");
            e
        }));
    }
    out
}

impl SubscriptionRules {
    /// The expiry must be in the future and within the longest duration allowed.
    fn check_expiry(&self, expires_at: DateTime<Utc>, errs: &mut Vec<FieldError>) {
        if expires_at <= self.now {
            errs.push(FieldError::new("/expires_at", "date-in-past", "the expiry must be in the future"));
        } else if expires_at > self.now + self.max_duration {
            errs.push(FieldError::new(
                "/expires_at",
                "expiry-too-far",
                format!(
                    "a subscription may run at most {} days: renew it before it ends",
                    self.max_duration.num_days()
                ),
            ));
        }
    }

    /// Validates a subscription body: the schema, then the domain rules.
    pub fn subscription(&self, body: &Value) -> Result<SubscriptionSpec, Vec<FieldError>> {
        let input: SubscriptionInput = parse_body(BodySchema::Subscription, body)?;
        let mut errs = Vec::new();
        let mut postcodes = Vec::new();
        for (i, raw) in input.criteria.postcodes.iter().enumerate() {
            match postcode_prefix(raw) {
                Some(p) if !postcodes.contains(&p) => postcodes.push(p),
                Some(_) => {}
                None => errs.push(FieldError::new(
                    format!("/criteria/postcodes/{i}"),
                    "postcode-prefix",
                    "give a postcode area (e.g. `LS`) or district (e.g. `LS6`)",
                )),
            }
        }
        let cohort = input.criteria.cohort.as_ref().map(|c| cohort_subjects(c, "/criteria/cohort", &mut errs));
        let url = match (input.delivery.method, &input.delivery.url) {
            (DeliveryMethod::Webhook, Some(u)) => {
                webhook_url(u, self.allow_insecure_webhooks, "/delivery/url").map_err(|e| errs.push(e)).ok()
            }
            _ => None,
        };
        self.check_expiry(input.expires_at, &mut errs);
        disclosures_rules(&input, &mut errs);
        peer_rules(&input, &mut errs);
        if input.tag.as_deref().is_some_and(|t| t.trim().is_empty()) {
            errs.push(FieldError::new("/tag", "not-blank", "the tag must not be blank"));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut categories = input.criteria.categories.clone();
        categories.sort();
        let mut subject_kinds = input.criteria.subject_kinds.clone();
        subject_kinds.sort();
        postcodes.sort();
        Ok(SubscriptionSpec {
            purpose: input.purpose,
            role: input.role,
            context_reference: input.context_reference.map(|r| r.trim().to_owned()),
            topic: input.topic,
            criteria: Criteria {
                categories,
                min_risk_level: input.criteria.min_risk_level,
                subject_kinds,
                postcodes,
                cohort: cohort.is_some(),
            },
            cohort,
            payload: input.payload,
            method: input.delivery.method,
            url,
            encryption_key: input.delivery.encryption_key,
            expires_at: input.expires_at,
            tag: input.tag,
            peer: input.peer,
        })
    }
}

/// A subscription at a peer broker is to notices, pushed: this broker passes each event on as it
/// arrives and keeps nothing to read back.
fn peer_rules(input: &SubscriptionInput, errs: &mut Vec<FieldError>) {
    if input.peer.is_none() {
        return;
    }
    if input.topic != Topic::Notices {
        errs.push(FieldError::new(
            "/topic",
            "topic-for-peer",
            "a subscription at a peer broker is to its `notices`; disclosures of your own notices are told here",
        ));
    }
    if input.delivery.method != DeliveryMethod::Webhook {
        errs.push(FieldError::new(
            "/delivery/method",
            "webhook-for-peer",
            "a subscription at a peer broker is delivered by `webhook`: events are passed on as they arrive, not kept here for a feed",
        ));
    }
}

/// A `disclosures` subscription takes no criteria and serves the management purpose only.
fn disclosures_rules(input: &SubscriptionInput, errs: &mut Vec<FieldError>) {
    if input.topic == Topic::Disclosures {
        let c = &input.criteria;
        if !c.categories.is_empty()
            || c.min_risk_level.is_some()
            || !c.subject_kinds.is_empty()
            || !c.postcodes.is_empty()
            || c.cohort.is_some()
        {
            errs.push(FieldError::new(
                "/criteria",
                "criteria-not-applicable",
                "a `disclosures` subscription takes no criteria: it covers every notice your organisation published",
            ));
        }
        if input.purpose != DISCLOSURES_PURPOSE {
            errs.push(FieldError::new(
                "/purpose",
                "purpose-for-topic",
                format!("a `disclosures` subscription serves `{DISCLOSURES_PURPOSE}`"),
            ));
        }
    }
}

/// Body of `POST /v1/subscriptions/{id}/cohort`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortChangeInput {
    /// Subjects to add.
    #[serde(default)]
    pub add: Vec<SubjectInput>,
    /// Subjects to remove.
    #[serde(default)]
    pub remove: Vec<SubjectInput>,
}

/// A validated cohort change.
#[derive(Debug, Clone)]
pub struct CohortChange {
    /// Subjects to add.
    pub add: Vec<Subject>,
    /// Subjects to remove.
    pub remove: Vec<Subject>,
}

/// Validates a cohort change.
pub fn cohort_change(body: &Value) -> Result<CohortChange, Vec<FieldError>> {
    let input: CohortChangeInput = parse_body(BodySchema::SubscriptionCohort, body)?;
    let mut errs = Vec::new();
    let add = cohort_subjects(&input.add, "/add", &mut errs);
    let remove = cohort_subjects(&input.remove, "/remove", &mut errs);
    if errs.is_empty() {
        Ok(CohortChange { add, remove })
    } else {
        Err(errs)
    }
}

/// Body of `POST /v1/subscriptions/{id}/approval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalInput {
    /// `approve`, `reject` or `revoke`.
    pub decision: String,
    /// The IG reviewer's note.
    pub note: String,
    /// Who decided.
    pub reviewer: RequesterInput,
}

/// Validates an approval.
pub fn approval(body: &Value) -> Result<ApprovalInput, Vec<FieldError>> {
    let input: ApprovalInput = parse_body(BodySchema::SubscriptionApproval, body)?;
    if input.note.trim().is_empty() {
        return Err(vec![FieldError::new("/note", "not-blank", "say why")]);
    }
    Ok(input)
}

/// Body of `POST /v1/subscriptions/{id}/redeliver`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverInput {
    /// Replay from this event number.
    pub from_event: Option<i64>,
}

/// Validates a redelivery request.
pub fn redeliver(body: &Value) -> Result<RedeliverInput, Vec<FieldError>> {
    parse_body(BodySchema::Redeliver, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::notice::{Address, Person, SubjectInformed};
    use crate::vocab::LawfulBasis;
    use crate::{NhsNumber, Postcode};
    use chrono::NaiveDate;
    use serde_json::json;

    fn rules() -> SubscriptionRules {
        SubscriptionRules { now: Utc::now(), max_duration: Duration::days(365), allow_insecure_webhooks: false }
    }

    fn notice(postcode: &str, risk: RiskLevel) -> NoticeContent {
        NoticeContent {
            subject: Subject {
                person: None,
                address: Some(Address {
                    uprn: None,
                    postcode: Some(Postcode::parse(postcode).unwrap()),
                    line1: Some("1 High Street".into()),
                }),
                telephone: None,
            },
            category: Category::PhysicalAssault,
            aggravating_factors: vec![],
            medical_factor_operative: false,
            risk_level: risk,
            safety_advice: vec![],
            advice_text: None,
            incident_date: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            review_date: NaiveDate::from_ymd_opt(2027, 5, 1).unwrap(),
            subject_informed: SubjectInformed { informed_on: None, withheld_because: Some("risk".into()) },
            lawful_basis: vec![LawfulBasis::Ukgdpr6_1C],
            restricted: None,
            contact: None,
        }
    }

    fn body(extra: Value) -> Value {
        let mut b = json!({
            "purpose": "staff-safety", "role": "ambulance-dispatcher",
            "criteria": {}, "payload": "view",
            "delivery": {"method": "webhook", "url": "https://cad.example.nhs.uk/vpr/events"},
            "expires_at": (Utc::now() + Duration::days(30)).to_rfc3339(),
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
            b.extend(e);
        }
        b
    }

    fn rules_of(errs: &[FieldError]) -> Vec<(String, String)> {
        errs.iter().map(|e| (e.pointer.clone(), e.rule.clone())).collect()
    }

    #[test]
    fn statuses_read_back_from_their_codes_and_say_what_they_allow() {
        for st in SubscriptionStatus::ALL {
            assert_eq!(SubscriptionStatus::from_code(st.code()), Some(*st));
        }
        assert_eq!(SubscriptionStatus::Pending.code(), "pending-approval");
        assert!(SubscriptionStatus::Revoked.receives() && !SubscriptionStatus::Revoked.receives_new());
        assert!(!SubscriptionStatus::Pending.receives() && SubscriptionStatus::Pending.replaceable());
        assert!(!SubscriptionStatus::Deleted.deletable() && SubscriptionStatus::Rejected.deletable());
        assert!(!SubscriptionStatus::Revoked.replaceable());
    }

    #[test]
    fn criteria_match_every_given_criterion() {
        let n = notice("LS6 1AA", RiskLevel::Moderate);
        assert!(Criteria::default().matches(&n, false));
        let area = Criteria { postcodes: vec!["LS".into()], ..Default::default() };
        let district = Criteria { postcodes: vec!["LS6".into()], ..Default::default() };
        let elsewhere = Criteria { postcodes: vec!["LS1".into(), "BD".into()], ..Default::default() };
        assert!(area.matches(&n, false) && district.matches(&n, false) && !elsewhere.matches(&n, false));
        let high = Criteria { min_risk_level: Some(RiskLevel::High), ..Default::default() };
        assert!(!high.matches(&n, false));
        assert!(high.matches(&notice("LS6 1AA", RiskLevel::High), false));
        let people = Criteria { subject_kinds: vec![SubjectKind::Person], ..Default::default() };
        assert!(!people.matches(&n, false));
        let verbal = Criteria { categories: vec![Category::DirectedVerbalAbuse], ..Default::default() };
        assert!(!verbal.matches(&n, false));
        let cohort = Criteria { cohort: true, ..Default::default() };
        assert!(!cohort.matches(&n, false) && cohort.matches(&n, true));
        // A person's own postcode counts too; a telephone-only subject is in no area.
        let mut p = n.clone();
        p.subject = Subject {
            person: Some(Person {
                nhs_number: None,
                family_name: Some("X".into()),
                given_name: None,
                birth_date: None,
                postcode: Some(Postcode::parse("BD1 1AA").unwrap()),
            }),
            address: None,
            telephone: None,
        };
        assert!(elsewhere.matches(&p, false) && !area.matches(&p, false));
        let _ = NhsNumber::parse("9990000018").unwrap();
    }

    #[test]
    fn postcode_prefixes_are_areas_or_districts() {
        for (raw, want) in [("ls", Some("LS")), ("LS6", Some("LS6")), (" ec1a ", Some("EC1A")), ("W1", Some("W1"))] {
            assert_eq!(postcode_prefix(raw).as_deref(), want, "{raw}");
        }
        for raw in ["LS6 1AA", "123", "ABC1", "LS123", ""] {
            assert_eq!(postcode_prefix(raw), None, "{raw}");
        }
    }

    #[test]
    fn webhook_urls_must_be_https_and_external_outside_demo_mode() {
        assert!(webhook_url("https://cad.example.nhs.uk/hook?x=1", false, "/u").is_ok());
        for (url, rule) in [
            ("http://cad.example.nhs.uk/hook", "https-required"),
            ("ftp://cad.example.nhs.uk/hook", "url-scheme"),
            ("cad.example.nhs.uk/hook", "url"),
            ("https://user:pw@cad.example.nhs.uk/hook", "url-credentials"),
            ("https://cad.example.nhs.uk/hook#frag", "url-fragment"),
            ("https://127.0.0.1:8443/hook", "url-internal"),
            ("https://[::1]/hook", "url-internal"),
            ("https://localhost/hook", "url-internal"),
            ("https://169.254.169.254/latest", "url-internal"),
            ("https:///hook", "url-host"),
        ] {
            assert_eq!(webhook_url(url, false, "/u").unwrap_err().rule, rule, "{url}");
        }
        assert!(webhook_url("http://127.0.0.1:9000/hook", true, "/u").is_ok());
    }

    #[test]
    fn a_subscription_is_validated_field_by_field() {
        let ok = rules()
            .subscription(&body(json!({"criteria": {"postcodes": ["ls6", "LS6", "bd"], "cohort": [{"person": {"nhs_number": "999 000 0018"}}]}, "tag": "north"})))
            .unwrap();
        assert_eq!(ok.criteria.postcodes, vec!["BD", "LS6"]);
        assert!(ok.criteria.cohort);
        assert_eq!(ok.cohort.unwrap().len(), 1);
        let errs = rules()
            .subscription(&body(json!({
                "criteria": {"postcodes": ["LS61A"], "cohort": [{"person": {"nhs_number": "9990000019"}}, {"telephone": "123"}]},
                "delivery": {"method": "webhook", "url": "http://cad.example.nhs.uk/"},
                "expires_at": (Utc::now() + Duration::days(400)).to_rfc3339(),
            })))
            .unwrap_err();
        let got = rules_of(&errs);
        for want in [
            ("/criteria/postcodes/0", "postcode-prefix"),
            ("/criteria/cohort/0/person/nhs_number", "nhs-number-check-digit"),
            ("/delivery/url", "https-required"),
            ("/expires_at", "expiry-too-far"),
        ] {
            assert!(got.iter().any(|(p, r)| p == want.0 && r == want.1), "{want:?} not in {got:?}");
        }
        assert!(got.iter().any(|(p, _)| p.starts_with("/criteria/cohort/1/telephone")), "{got:?}");
        // The schema: a webhook needs a URL; a feed takes none.
        let errs = rules().subscription(&body(json!({"delivery": {"method": "webhook"}}))).unwrap_err();
        assert!(rules_of(&errs).contains(&("/delivery/url".into(), "required".into())), "{errs:?}");
        let errs = rules()
            .subscription(&body(json!({"delivery": {"method": "feed", "url": "https://x.example/"}})))
            .unwrap_err();
        assert!(!errs.is_empty());
        let errs = rules()
            .subscription(&body(json!({"topic": "disclosures", "criteria": {"postcodes": ["LS"]}})))
            .unwrap_err();
        assert_eq!(
            rules_of(&errs),
            vec![
                ("/criteria".into(), "criteria-not-applicable".into()),
                ("/purpose".into(), "purpose-for-topic".into())
            ]
        );
        let ok = rules().subscription(&body(json!({"topic": "disclosures", "purpose": "vpr-management"}))).unwrap();
        assert_eq!(ok.topic, Topic::Disclosures);
        let errs = rules()
            .subscription(&body(json!({"delivery": {"method": "webhook", "url": "https://x.example/", "encryption_key": {"kty": "EC", "d": "secret"}}})))
            .unwrap_err();
        assert!(rules_of(&errs).iter().any(|(p, _)| p == "/delivery/encryption_key/d"), "{errs:?}");
    }
}
