//! Notice wire types: what a publisher sends, and what the broker holds and returns.
//!
//! Input types keep identifiers as strings so that each bad field can be reported by its JSON
//! pointer; [`crate::validate`] turns them into the typed [`NoticeContent`].

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{NhsNumber, Postcode, Telephone, Uprn};
use crate::vocab::{AggravatingFactor, Category, ChangeKind, LawfulBasis, RiskLevel, SafetyAdvice};

/// Body of `POST /v1/notices` and `PUT /v1/notices/{id}`, as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticeInput {
    pub subject: SubjectInput,
    pub category: Category,
    #[serde(default)]
    pub aggravating_factors: Vec<AggravatingFactor>,
    #[serde(default)]
    pub medical_factor_operative: bool,
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub safety_advice: Vec<SafetyAdvice>,
    pub advice_text: Option<String>,
    pub incident_date: NaiveDate,
    pub review_date: NaiveDate,
    pub subject_informed: SubjectInformed,
    pub lawful_basis: Vec<LawfulBasis>,
    pub restricted: Option<Restricted>,
    pub contact: Option<ContactInput>,
}

/// Who or what the notice is about, as received.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectInput {
    pub person: Option<PersonInput>,
    pub address: Option<AddressInput>,
    pub telephone: Option<String>,
}

/// A person, by NHS number or by demographics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonInput {
    pub nhs_number: Option<String>,
    pub family_name: Option<String>,
    pub given_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub postcode: Option<String>,
}

/// An address, by UPRN or by postcode and first line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    pub uprn: Option<String>,
    pub postcode: Option<String>,
    pub line1: Option<String>,
}

/// Contact point for the notice, as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    pub name: Option<String>,
    pub telephone: Option<String>,
    pub email: Option<String>,
}

/// Whether the subject was told about the notice, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectInformed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub informed_on: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld_because: Option<String>,
}

/// Fields only some recipients may see (police, security management specialists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restricted {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crime_reference: Option<String>,
}

/// Body of `POST /v1/notices/{id}/withdraw`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawInput {
    pub reason: String,
    #[serde(default)]
    pub entered_in_error: bool,
}

/// Body of `POST /v1/notices/{id}/review`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewInput {
    pub review_date: NaiveDate,
    pub note: String,
}

/// A validated subject with normalised identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<Person>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<Telephone>,
}

/// A validated person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<NhsNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postcode: Option<Postcode>,
}

/// A validated address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uprn: Option<Uprn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postcode: Option<Postcode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
}

/// A contact point: who to call about the notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<Telephone>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The validated content of one version of a notice. Stored encrypted as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeContent {
    pub subject: Subject,
    pub category: Category,
    pub aggravating_factors: Vec<AggravatingFactor>,
    pub medical_factor_operative: bool,
    pub risk_level: RiskLevel,
    pub safety_advice: Vec<SafetyAdvice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice_text: Option<String>,
    pub incident_date: NaiveDate,
    pub review_date: NaiveDate,
    pub subject_informed: SubjectInformed,
    pub lawful_basis: Vec<LawfulBasis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restricted: Option<Restricted>,
    /// Set when the publisher gave one; otherwise the registry's contact point applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<ContactPoint>,
}

/// Kind of a keyed match on a subject, used for blind indexes and look-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    /// A person by NHS number.
    NhsNumber,
    /// A person by family name, date of birth and postcode.
    PersonDemographics,
    /// An address by UPRN.
    Uprn,
    /// An address by postcode and first line.
    AddressLine,
    /// A telephone number.
    Telephone,
}

impl MatchKind {
    /// The stable code stored beside each blind index.
    pub fn code(self) -> &'static str {
        match self {
            MatchKind::NhsNumber => "nhs-number",
            MatchKind::PersonDemographics => "person-demographics",
            MatchKind::Uprn => "uprn",
            MatchKind::AddressLine => "address-line",
            MatchKind::Telephone => "telephone",
        }
    }
}

/// Normalises a name for matching: letters only, upper case (`O'Brien` and `OBRIEN` match).
pub fn normalise_name(raw: &str) -> String {
    raw.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_uppercase).collect()
}

/// Normalises an address line for matching: upper case words of letters and digits, with the
/// usual street abbreviations expanded (`12, High St.` and `12 HIGH STREET` match).
pub fn normalise_address_line(raw: &str) -> String {
    raw.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let w = w.to_uppercase();
            let expanded = match w.as_str() {
                "ST" => "STREET",
                "RD" => "ROAD",
                "AVE" | "AV" => "AVENUE",
                "LN" => "LANE",
                "DR" => "DRIVE",
                "CT" => "COURT",
                "CL" => "CLOSE",
                "PL" => "PLACE",
                "SQ" => "SQUARE",
                "CRES" => "CRESCENT",
                "TER" | "TERR" => "TERRACE",
                "GDNS" => "GARDENS",
                _ => return w,
            };
            expanded.to_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Subject {
    /// The normalised match keys of this subject: each becomes one keyed blind index at rest.
    pub fn match_keys(&self) -> Vec<(MatchKind, String)> {
        let mut keys = Vec::new();
        if let Some(p) = &self.person {
            if let Some(n) = &p.nhs_number {
                keys.push((MatchKind::NhsNumber, n.as_str().to_owned()));
            }
            if let (Some(f), Some(d), Some(pc)) = (&p.family_name, &p.birth_date, &p.postcode) {
                keys.push((MatchKind::PersonDemographics, person_key(f, *d, pc)));
            }
        }
        if let Some(a) = &self.address {
            if let Some(u) = &a.uprn {
                keys.push((MatchKind::Uprn, u.as_str().to_owned()));
            }
            if let (Some(pc), Some(l)) = (&a.postcode, &a.line1) {
                keys.push((MatchKind::AddressLine, address_key(pc, l)));
            }
        }
        if let Some(t) = &self.telephone {
            keys.push((MatchKind::Telephone, t.as_str().to_owned()));
        }
        keys
    }
}

/// The match key of a person by demographics.
pub fn person_key(family_name: &str, birth_date: NaiveDate, postcode: &Postcode) -> String {
    format!("{}|{}|{}", normalise_name(family_name), birth_date, postcode.as_str())
}

/// The match key of an address by postcode and first line.
pub fn address_key(postcode: &Postcode, line1: &str) -> String {
    format!("{}|{}", postcode.as_str(), normalise_address_line(line1))
}

/// Why the latest version of a notice was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: i64,
    pub change: ChangeKind,
    pub at: DateTime<Utc>,
    /// The partner system that made the change (absent for broker-made changes such as expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lines_match_across_spellings() {
        assert_eq!(normalise_address_line("12, High St."), normalise_address_line("12 high street"));
        assert_eq!(normalise_address_line("Flat 3,  7 Rose Gdns"), "FLAT 3 7 ROSE GARDENS");
    }

    #[test]
    fn names_match_across_punctuation_and_case() {
        assert_eq!(normalise_name("O'Brien-Smith"), normalise_name("obriensmith"));
    }
}
