//! FHIR R4 resources rendered from typed decisions: `Flag`s, subscription notifications, the
//! `Subscription` resource and `AuditEvent`s. The HTTP facade serves them; the delivery worker
//! pushes them.

pub mod audit_event;
pub mod flag;
pub mod notification;
pub mod subscription;

use serde_json::{json, Value};

use crate::App;

/// The FHIR media type.
pub const FHIR_JSON: &str = "application/fhir+json";
/// The FHIR version served.
pub const FHIR_VERSION: &str = "4.0.1";
/// The canonical URL of the violence-risk flag subscription topic.
pub const TOPIC: &str = "https://vpr-broker.example/fhir/SubscriptionTopic/violence-risk-flag";
/// UK Core Flag profile.
pub const UK_CORE_FLAG: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Flag";
/// NHS number identifier system.
pub const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// ODS organisation code identifier system.
pub const ODS_CODE: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// The broker's own code systems and extensions live under this base.
pub const VPR_FHIR: &str = "https://vpr-broker.example/fhir";
/// The Subscriptions Backport IG's structure definitions.
pub const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition";

/// The base URL of the FHIR endpoint as partners reach it.
pub fn base(app: &App) -> String {
    format!("{}/fhir/R4", app.tokens.settings().issuer)
}

/// FHIR forbids empty strings, objects and arrays: drops them, recursively (a member left
/// empty by the drop goes too).
pub fn tidy(v: Value) -> Value {
    fn keep(v: &Value) -> bool {
        match v {
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Null => false,
            _ => true,
        }
    }
    match v {
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, tidy(v))).filter(|(_, v)| keep(v)).collect()),
        Value::Array(a) => Value::Array(a.into_iter().map(tidy).filter(keep).collect()),
        other => other,
    }
}

/// A coding.
pub fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_dropped_as_fhir_requires() {
        let v = json!({"a": "", "b": [], "c": {"d": "", "e": null}, "f": ["", "x"], "g": 0, "h": false});
        assert_eq!(tidy(v), json!({"f": ["x"], "g": 0, "h": false}));
    }
}
