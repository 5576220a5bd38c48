//! The partner registry: organisations, their systems (OAuth clients) and public keys, loaded
//! from a JSON file validated against `schemas/partner-registry.schema.json`.

use std::collections::{BTreeMap, BTreeSet};

use josekit::jwk::Jwk;
use josekit::jws::alg::ecdsa::EcdsaJwsAlgorithm;
use josekit::jws::alg::rsassa::RsassaJwsAlgorithm;
use josekit::jws::alg::rsassa_pss::RsassaPssJwsAlgorithm;
use josekit::jws::JwsVerifier;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vpr_domain::notice::ContactPoint;
use vpr_domain::validate::{compile_schema, schema_errors};
use vpr_domain::vocab::OrgType;
use vpr_domain::{FieldError, OdsCode, Telephone};

use crate::AuthError;

/// The registry's JSON Schema.
pub const REGISTRY_SCHEMA: &str = include_str!("../../../schemas/partner-registry.schema.json");

/// What a system may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Publish, amend, review and withdraw its organisation's notices.
    #[serde(rename = "notices:write")]
    NoticesWrite,
    /// Read notices.
    #[serde(rename = "notices:read")]
    NoticesRead,
    /// Look subjects up.
    #[serde(rename = "lookups")]
    Lookups,
    /// Manage subscriptions.
    #[serde(rename = "subscriptions")]
    Subscriptions,
    /// Read the audit log (IG roles).
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Record consents and objections (IG roles).
    #[serde(rename = "ig:write")]
    IgWrite,
    /// Ask on behalf of partners vouched for (peer brokers only; never in the registry).
    #[serde(rename = "federation")]
    Federation,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 7] = [
        Scope::NoticesWrite,
        Scope::NoticesRead,
        Scope::Lookups,
        Scope::Subscriptions,
        Scope::AuditRead,
        Scope::IgWrite,
        Scope::Federation,
    ];

    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            Scope::NoticesWrite => "notices:write",
            Scope::NoticesRead => "notices:read",
            Scope::Lookups => "lookups",
            Scope::Subscriptions => "subscriptions",
            Scope::AuditRead => "audit:read",
            Scope::IgWrite => "ig:write",
            Scope::Federation => "federation",
        }
    }

    /// Looks a wire code up.
    pub fn from_code(code: &str) -> Option<Self> {
        Scope::ALL.into_iter().find(|s| s.code() == code)
    }
}

#[derive(Debug, Deserialize)]
struct RegistryFile {
    #[allow(dead_code)]
    registry_version: u32,
    ics: IcsInfo,
    #[serde(default)]
    demo_only: bool,
    partners: Vec<PartnerFile>,
}

/// The ICS the registry describes.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IcsInfo {
    /// Its name.
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PartnerFile {
    ods_code: String,
    name: String,
    #[serde(rename = "type")]
    org_type: OrgType,
    contact: ContactFile,
    systems: Vec<SystemFile>,
}

#[derive(Debug, Deserialize)]
struct ContactFile {
    name: Option<String>,
    telephone: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SystemFile {
    client_id: String,
    name: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    rate_limit: Option<Rate>,
    jwks: JwksFile,
}

/// A token bucket's size: requests a second sustained, and a burst above it (the bucket's
/// capacity). A partner system's own (in the registry) replaces the broker's default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests a second, sustained.
    pub per_second: f64,
    /// Requests allowed at once above it.
    pub burst: u32,
}

#[derive(Debug, Deserialize)]
struct JwksFile {
    keys: Vec<serde_json::Map<String, Value>>,
}

/// A partner organisation.
#[derive(Debug, Clone)]
pub struct Partner {
    /// ODS code.
    pub ods_code: OdsCode,
    /// Name.
    pub name: String,
    /// Kind of organisation.
    pub org_type: OrgType,
    /// Who to call about its notices.
    pub contact: ContactPoint,
}

/// A partner's system: an OAuth client.
pub struct PartnerSystem {
    /// OAuth client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// The owning organisation's ODS code.
    pub ods_code: OdsCode,
    /// Scopes it may be granted.
    pub scopes: BTreeSet<Scope>,
    /// Roles its users may act in.
    pub roles: BTreeSet<String>,
    /// Its own request rate, if the registry sets one (else the broker's default).
    pub rate_limit: Option<Rate>,
    verifiers: BTreeMap<String, Box<dyn JwsVerifier>>,
}

impl std::fmt::Debug for PartnerSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerSystem")
            .field("client_id", &self.client_id)
            .field("ods_code", &self.ods_code)
            .field("keys", &self.verifiers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PartnerSystem {
    /// The verifier for one of this system's keys.
    pub fn verifier(&self, kid: &str) -> Option<&dyn JwsVerifier> {
        self.verifiers.get(kid).map(|v| v.as_ref())
    }
}

/// The loaded registry.
#[derive(Debug)]
pub struct Registry {
    /// The ICS.
    pub ics: IcsInfo,
    /// True for a fictional registry with demo keys.
    pub demo_only: bool,
    partners: BTreeMap<OdsCode, Partner>,
    systems: BTreeMap<String, PartnerSystem>,
}

pub(crate) fn verifier_for(jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, String> {
    let alg = match (jwk.algorithm(), jwk.key_type(), jwk.curve()) {
        (Some(a), _, _) => a.to_owned(),
        (None, "EC", Some("P-256")) => "ES256".to_owned(),
        (None, "EC", Some("P-384")) => "ES384".to_owned(),
        (None, "RSA", _) => "RS256".to_owned(),
        _ => return Err("cannot tell the key's algorithm: give `alg`".to_owned()),
    };
    let built: Result<Box<dyn JwsVerifier>, _> = match alg.as_str() {
        "ES256" => EcdsaJwsAlgorithm::Es256.verifier_from_jwk(jwk).map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        "ES384" => EcdsaJwsAlgorithm::Es384.verifier_from_jwk(jwk).map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        "RS256" => RsassaJwsAlgorithm::Rs256.verifier_from_jwk(jwk).map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        "RS384" => RsassaJwsAlgorithm::Rs384.verifier_from_jwk(jwk).map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        "RS512" => RsassaJwsAlgorithm::Rs512.verifier_from_jwk(jwk).map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        "PS256" => RsassaPssJwsAlgorithm::Ps256.verifier_from_jwk(jwk).map(|v| Box::new(v) as Box<dyn JwsVerifier>),
        other => return Err(format!("algorithm `{other}` is not accepted")),
    };
    built.map_err(|e| format!("key is not usable: {e}"))
}

impl Registry {
    /// Parses and validates a registry document.
    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| AuthError::Registry(vec![FieldError::new("", "json", e.to_string())]))?;
        let validator = compile_schema(REGISTRY_SCHEMA).map_err(AuthError::Config)?;
        let errs = schema_errors(&validator, &doc);
        if !errs.is_empty() {
            return Err(AuthError::Registry(errs));
        }
        let file: RegistryFile = serde_json::from_value(doc)
            .map_err(|e| AuthError::Registry(vec![FieldError::new("", "shape", e.to_string())]))?;
        let mut errs = Vec::new();
        let mut partners = BTreeMap::new();
        let mut systems = BTreeMap::new();
        let mut kids = BTreeSet::new();
        for (pi, p) in file.partners.into_iter().enumerate() {
            let at = format!("/partners/{pi}");
            let Ok(ods) = OdsCode::parse(&p.ods_code) else {
                errs.push(FieldError::new(format!("{at}/ods_code"), "ods-code-format", "not an ODS code"));
                continue;
            };
            let contact = contact_of(p.contact, &at, &mut errs);
            for (si, s) in p.systems.into_iter().enumerate() {
                let sat = format!("{at}/systems/{si}");
                let verifiers = verifiers_of(s.jwks.keys, &sat, &mut kids, &mut errs);
                if systems.contains_key(&s.client_id) {
                    errs.push(FieldError::new(
                        format!("{sat}/client_id"),
                        "unique",
                        format!("client `{}` is listed twice", s.client_id),
                    ));
                    continue;
                }
                systems.insert(
                    s.client_id.clone(),
                    PartnerSystem {
                        client_id: s.client_id,
                        name: s.name,
                        ods_code: ods.clone(),
                        scopes: s.scopes.into_iter().collect(),
                        roles: s.roles.into_iter().collect(),
                        rate_limit: s.rate_limit,
                        verifiers,
                    },
                );
            }
            if partners.contains_key(&ods) {
                errs.push(FieldError::new(format!("{at}/ods_code"), "unique", format!("`{ods}` is listed twice")));
                continue;
            }
            partners.insert(ods.clone(), Partner { ods_code: ods, name: p.name, org_type: p.org_type, contact });
        }
        if !errs.is_empty() {
            return Err(AuthError::Registry(errs));
        }
        Ok(Self { ics: file.ics, demo_only: file.demo_only, partners, systems })
    }

    /// A partner by ODS code.
    pub fn partner(&self, ods: &str) -> Option<&Partner> {
        OdsCode::parse(ods).ok().and_then(|o| self.partners.get(&o))
    }

    /// A system by client id.
    pub fn system(&self, client_id: &str) -> Option<&PartnerSystem> {
        self.systems.get(client_id)
    }

    /// The system owning a key id.
    pub fn system_for_kid(&self, kid: &str) -> Option<&PartnerSystem> {
        self.systems.values().find(|s| s.verifiers.contains_key(kid))
    }

    /// Every partner.
    pub fn partners(&self) -> impl Iterator<Item = &Partner> {
        self.partners.values()
    }

    /// Every system.
    pub fn systems(&self) -> impl Iterator<Item = &PartnerSystem> {
        self.systems.values()
    }
}

/// A partner's contact point; a telephone that does not parse, or no way to reach it, is an
/// error at `at`.
fn contact_of(c: ContactFile, at: &str, errs: &mut Vec<FieldError>) -> ContactPoint {
    let telephone = match c.telephone.as_deref().map(Telephone::parse).transpose() {
        Ok(t) => t,
        Err(e) => {
            errs.push(FieldError::new(format!("{at}/contact/telephone"), e.rule_id(), e.to_string()));
            None
        }
    };
    if telephone.is_none() && c.email.is_none() {
        errs.push(FieldError::new(format!("{at}/contact"), "contact-reachable", "give a telephone number or an email"));
    }
    ContactPoint { name: c.name, telephone, email: c.email }
}

/// The verifiers of a system's keys (at `sat`), by key id; key ids are unique across the
/// registry (`kids` holds those seen so far).
fn verifiers_of(
    keys: Vec<serde_json::Map<String, Value>>,
    sat: &str,
    kids: &mut BTreeSet<String>,
    errs: &mut Vec<FieldError>,
) -> BTreeMap<String, Box<dyn JwsVerifier>> {
    let mut verifiers = BTreeMap::new();
    for (ki, key) in keys.into_iter().enumerate() {
        let kat = format!("{sat}/jwks/keys/{ki}");
        let jwk = match Jwk::from_map(key) {
            Ok(j) => j,
            Err(e) => {
                errs.push(FieldError::new(kat, "jwk", e.to_string()));
                continue;
            }
        };
        let kid = jwk.key_id().unwrap_or_default().to_owned();
        // Key ids are unique across the registry, so an assertion's `kid` names one client.
        if !kids.insert(kid.clone()) {
            errs.push(FieldError::new(format!("{kat}/kid"), "unique", format!("key id `{kid}` is used twice")));
            continue;
        }
        match verifier_for(&jwk) {
            Ok(v) => {
                verifiers.insert(kid, v);
            }
            Err(e) => errs.push(FieldError::new(kat, "jwk", e)),
        }
    }
    verifiers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{public_jwk, SigningKeyFile};
    use serde_json::json;

    fn registry_with(keys: Vec<Value>, second_kid_dup: bool) -> String {
        let mut systems =
            vec![json!({"client_id": "cad", "name": "CAD", "scopes": ["notices:write"], "jwks": {"keys": keys}})];
        if second_kid_dup {
            let k = SigningKeyFile::generate("cad-1", false).unwrap();
            let p = Value::Object(public_jwk(&k.jwk).unwrap().as_ref().clone());
            systems
                .push(json!({"client_id": "cad2", "name": "CAD 2", "scopes": ["notices:read"], "jwks": {"keys": [p]}}));
        }
        json!({
            "registry_version": 1, "ics": {"name": "Test"},
            "partners": [{"ods_code": "XAM01", "name": "Ambulance", "type": "ambulance-trust",
                "contact": {"telephone": "0113 496 0000"}, "systems": systems}]
        })
        .to_string()
    }

    fn public(kid: &str) -> Value {
        let k = SigningKeyFile::generate(kid, false).unwrap();
        Value::Object(public_jwk(&k.jwk).unwrap().as_ref().clone())
    }

    #[test]
    fn a_valid_registry_loads() {
        let r = Registry::from_json(&registry_with(vec![public("cad-1")], false)).unwrap();
        assert_eq!(r.system("cad").map(|s| s.ods_code.as_str()), Some("XAM01"));
        assert!(r.system_for_kid("cad-1").is_some());
        assert_eq!(r.partner("xam01").map(|p| p.org_type), Some(OrgType::AmbulanceTrust));
    }

    #[test]
    fn private_key_material_is_refused() {
        let k = SigningKeyFile::generate("cad-1", false).unwrap();
        let private = Value::Object(k.jwk.as_ref().clone());
        let err = Registry::from_json(&registry_with(vec![private], false)).unwrap_err();
        let AuthError::Registry(errs) = err else { panic!("{err}") };
        assert!(errs.iter().any(|e| e.pointer == "/partners/0/systems/0/jwks/keys/0/d"), "{errs:?}");
    }

    #[test]
    fn key_ids_are_unique_across_the_registry() {
        let err = Registry::from_json(&registry_with(vec![public("cad-1")], true)).unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
    }

    #[test]
    fn schema_errors_name_the_field() {
        let mut doc: Value = serde_json::from_str(&registry_with(vec![public("cad-1")], false)).unwrap();
        doc["partners"][0]["type"] = json!("hospital");
        doc["partners"][0]["systems"][0]["scopes"] = json!(["everything"]);
        let AuthError::Registry(errs) = Registry::from_json(&doc.to_string()).unwrap_err() else { panic!() };
        let pointers: Vec<&str> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/partners/0/type"), "{pointers:?}");
        assert!(pointers.contains(&"/partners/0/systems/0/scopes/0"), "{pointers:?}");
    }
}
