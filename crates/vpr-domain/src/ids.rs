//! Identifiers that validate on construction and carry their normalised form.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a raw identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value is not in the shape the identifier takes.
    #[error("{what} must be {rule}")]
    Format {
        /// The identifier being checked.
        what: &'static str,
        /// The rule it broke, in words.
        rule: &'static str,
        /// A stable rule id for problem details.
        rule_id: &'static str,
    },
}

impl IdError {
    /// A stable, machine-readable id of the rule that was broken.
    pub fn rule_id(&self) -> &'static str {
        match self {
            IdError::Format { rule_id, .. } => rule_id,
        }
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            /// The normalised value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }
    };
}

/// An NHS number: ten digits whose last is a Modulus 11 check digit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NhsNumber(String);
string_newtype!(NhsNumber);

impl fmt::Debug for NhsNumber {
    // Never print a subject identifier into logs by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(***)")
    }
}

impl NhsNumber {
    /// FHIR identifier system for NHS numbers.
    pub const SYSTEM: &'static str = "https://fhir.nhs.uk/Id/nhs-number";

    /// Parses an NHS number, accepting spaces between digit groups (`943 476 5919`).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let digits: String = raw.chars().filter(|c| *c != ' ').collect();
        if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Format { what: "NHS number", rule: "ten digits", rule_id: "nhs-number-format" });
        }
        let values: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = values.iter().take(9).zip((2..=10).rev()).map(|(d, w)| d * w).sum();
        let check = match 11 - (sum % 11) {
            11 => 0,
            10 => {
                return Err(IdError::Format {
                    what: "NHS number",
                    rule: "a number whose Modulus 11 check digit is not 10",
                    rule_id: "nhs-number-check-digit",
                })
            }
            c => c,
        };
        if values.last() != Some(&check) {
            return Err(IdError::Format {
                what: "NHS number",
                rule: "a number whose last digit is its Modulus 11 check digit",
                rule_id: "nhs-number-check-digit",
            });
        }
        Ok(Self(digits))
    }
}

/// An ODS organisation code (`RX9`, `A81001`, `Y12345`), upper-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OdsCode(String);
string_newtype!(OdsCode);

impl OdsCode {
    /// FHIR identifier system for ODS organisation codes.
    pub const SYSTEM: &'static str = "https://fhir.nhs.uk/Id/ods-organization-code";

    /// Parses an ODS code: 3 to 10 letters and digits.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let code = raw.trim().to_ascii_uppercase();
        if (3..=10).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(code))
        } else {
            Err(IdError::Format { what: "ODS code", rule: "3 to 10 letters and digits", rule_id: "ods-code-format" })
        }
    }
}

/// A Unique Property Reference Number: 1 to 12 digits, not zero.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Uprn(String);
string_newtype!(Uprn);

impl fmt::Debug for Uprn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Uprn(***)")
    }
}

impl Uprn {
    /// Parses a UPRN, dropping leading zeros so that `000123` and `123` match.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let raw = raw.trim();
        let valid = !raw.is_empty() && raw.len() <= 12 && raw.bytes().all(|b| b.is_ascii_digit());
        let trimmed = raw.trim_start_matches('0');
        if !valid || trimmed.is_empty() {
            return Err(IdError::Format { what: "UPRN", rule: "1 to 12 digits, not zero", rule_id: "uprn-format" });
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// A UK postcode, upper-cased with one space before the inward code (`LS1 4AP`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Postcode(String);
string_newtype!(Postcode);

impl fmt::Debug for Postcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Postcode({} ***)", self.district())
    }
}

impl Postcode {
    /// Parses a UK postcode in any spacing or case.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
        let err =
            IdError::Format { what: "postcode", rule: "a UK postcode such as `LS1 4AP`", rule_id: "postcode-format" };
        if compact == "GIR0AA" {
            return Ok(Self("GIR 0AA".to_owned()));
        }
        if !(5..=7).contains(&compact.len()) || !compact.is_ascii() {
            return Err(err);
        }
        let (outward, inward) = compact.split_at(compact.len() - 3);
        let inward_ok = {
            let b = inward.as_bytes();
            matches!(b, [d, l1, l2] if d.is_ascii_digit() && l1.is_ascii_alphabetic() && l2.is_ascii_alphabetic())
        };
        if !inward_ok || !Self::outward_ok(outward) {
            return Err(err);
        }
        Ok(Self(format!("{outward} {inward}")))
    }

    // Outward codes: A9, A99, AA9, AA99, A9A, AA9A.
    fn outward_ok(outward: &str) -> bool {
        let shape: String = outward
            .bytes()
            .map(|b| match b {
                b'0'..=b'9' => '9',
                b'A'..=b'Z' => 'A',
                _ => '?',
            })
            .collect();
        matches!(shape.as_str(), "A9" | "A99" | "AA9" | "AA99" | "A9A" | "AA9A")
    }

    /// The outward code (postcode district), e.g. `LS1`.
    pub fn district(&self) -> &str {
        self.0.split(' ').next().unwrap_or_default()
    }

    /// The postcode area (its leading letters), e.g. `LS`.
    pub fn area(&self) -> &str {
        let d = self.district();
        let end = d.find(|c: char| c.is_ascii_digit()).unwrap_or(d.len());
        d.get(..end).unwrap_or(d)
    }
}

/// A telephone number normalised to E.164 (`+447700900123`). UK national numbers are accepted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Telephone(String);
string_newtype!(Telephone);

impl fmt::Debug for Telephone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Telephone(***)")
    }
}

impl Telephone {
    /// Parses `+44 7700 900123`, `07700 900123`, `0044 7700 900123` or `(0113) 496 0000`.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let err = IdError::Format {
            what: "telephone number",
            rule: "an E.164 number (`+447700900123`) or a UK national number (`07700 900123`)",
            rule_id: "telephone-format",
        };
        let trimmed = raw.trim();
        let plus = trimmed.starts_with('+');
        let body = if plus { trimmed.get(1..).unwrap_or_default() } else { trimmed };
        if body.chars().any(|c| !(c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')'))) {
            return Err(err);
        }
        let digits: String = body.chars().filter(char::is_ascii_digit).collect();
        let international = if plus {
            digits
        } else if let Some(rest) = digits.strip_prefix("00") {
            rest.to_owned()
        } else if let Some(rest) = digits.strip_prefix('0') {
            // UK national significant numbers are 9 or 10 digits after the trunk prefix.
            if !(9..=10).contains(&rest.len()) {
                return Err(err);
            }
            format!("44{rest}")
        } else {
            return Err(err);
        };
        let starts_ok = !international.starts_with('0');
        if !(8..=15).contains(&international.len()) || !starts_ok {
            return Err(err);
        }
        if let Some(national) = international.strip_prefix("44") {
            if !(9..=10).contains(&national.len()) || national.starts_with('0') {
                return Err(err);
            }
        }
        Ok(Self(format!("+{international}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_number_modulus_11() {
        assert_eq!(NhsNumber::parse("943 476 5919").map(|n| n.0), Ok("9434765919".into()));
        assert_eq!(NhsNumber::parse("9990000018").map(|n| n.0), Ok("9990000018".into()));
        assert_eq!(NhsNumber::parse("9434765918").map_err(|e| e.rule_id()), Err("nhs-number-check-digit"));
        assert_eq!(NhsNumber::parse("943476591").map_err(|e| e.rule_id()), Err("nhs-number-format"));
        assert_eq!(NhsNumber::parse("94347659A9").map_err(|e| e.rule_id()), Err("nhs-number-format"));
        // 1234567890 would need check digit 10, which no NHS number has.
        assert!(NhsNumber::parse("1234567890").is_err());
    }

    #[test]
    fn postcodes_normalise_and_refuse_bad_shapes() {
        for (raw, want) in [
            ("ls14ap", "LS1 4AP"),
            ("M1 1AE", "M1 1AE"),
            (" sw1a 1aa ", "SW1A 1AA"),
            ("B33 8TH", "B33 8TH"),
            ("W1A0AX", "W1A 0AX"),
        ] {
            assert_eq!(Postcode::parse(raw).map(|p| p.0), Ok(want.to_owned()), "{raw}");
        }
        for raw in ["", "LS1", "LS1 4A", "1S1 4AP", "LS1 AAP", "LSSS1 4AP", "LS1-4AP"] {
            assert!(Postcode::parse(raw).is_err(), "{raw}");
        }
        let p = Postcode::parse("sw1a1aa").map_err(|e| e.to_string());
        assert_eq!(p.as_ref().map(Postcode::district), Ok("SW1A"));
        assert_eq!(p.as_ref().map(Postcode::area), Ok("SW"));
    }

    #[test]
    fn telephone_to_e164() {
        for (raw, want) in [
            ("07700 900123", "+447700900123"),
            ("+44 7700 900123", "+447700900123"),
            ("0044 7700-900123", "+447700900123"),
            ("(0113) 496 0000", "+441134960000"),
            ("+33 1 23 45 67 89", "+33123456789"),
        ] {
            assert_eq!(Telephone::parse(raw).map(|t| t.0), Ok(want.to_owned()), "{raw}");
        }
        for raw in ["", "999", "7700900123", "+44 07700 900123", "0770090012345", "07700 9OO123", "+1234567890123456"] {
            assert!(Telephone::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn uprn_and_ods() {
        assert_eq!(Uprn::parse("000100023336956").ok(), None);
        assert_eq!(Uprn::parse("00012").map(|u| u.0), Ok("12".into()));
        assert!(Uprn::parse("0").is_err());
        assert!(Uprn::parse("12a").is_err());
        assert_eq!(OdsCode::parse("rx9").map(|o| o.0), Ok("RX9".into()));
        assert!(OdsCode::parse("R-9").is_err());
        assert!(OdsCode::parse("AB").is_err());
    }

    #[test]
    fn debug_never_prints_identifiers() {
        let n = NhsNumber::parse("9434765919").map(|n| format!("{n:?}"));
        assert_eq!(n, Ok("NhsNumber(***)".into()));
    }
}
