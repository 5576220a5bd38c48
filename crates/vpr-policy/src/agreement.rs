//! Loading and checking the agreement and its policies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cedar_policy::{Effect, PolicySet, PrincipalConstraint, Schema, ValidationMode, Validator};
use serde::Deserialize;
use vpr_domain::validate::{compile_schema, schema_errors};
use vpr_domain::vocab::{LawfulBasis, OrgType};

use crate::PolicyError;

/// The agreement's JSON Schema.
pub const AGREEMENT_SCHEMA: &str = include_str!("../../../schemas/agreement.schema.json");

/// A party to the agreement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// ODS code.
    pub ods_code: String,
    /// Name.
    pub name: String,
    /// Organisation type.
    #[serde(rename = "type")]
    pub org_type: OrgType,
}

/// A purpose of use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    /// Code, e.g. `staff-safety`.
    pub code: String,
    /// In words.
    pub title: String,
    /// The lawful bases the purpose relies on.
    pub lawful_basis: Vec<LawfulBasis>,
    /// Whether a recorded consent is needed.
    pub consent_required: bool,
    /// What an objection changes, in words.
    pub objection: String,
}

/// A role partners' users act in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Code, e.g. `ambulance-dispatcher`.
    pub code: String,
    /// In words.
    pub title: String,
    /// Organisation types whose users may hold it.
    pub org_types: Vec<OrgType>,
}

/// Break-glass rules.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    /// Shortest justification accepted.
    pub min_justification_chars: usize,
    /// How soon IG must review an emergency access.
    pub ig_review_within_days: u32,
}

/// What this broker answers for partners of neighbouring ICSs, relayed by its peer brokers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// The purposes a relayed request may be made for; any other is refused before a notice is
    /// considered. Empty: peers are answered for no purpose.
    pub purposes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Review {
    max_interval_days: i64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retention {
    audit_years: u32,
    withdrawn_notice_years: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFiles {
    cedar_schema: String,
    files: Vec<String>,
    fixtures: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgreementFile {
    agreement_version: String,
    title: String,
    #[allow(dead_code)]
    effective_from: String,
    parties: Vec<Party>,
    purposes: Vec<Purpose>,
    roles: Vec<Role>,
    review: Review,
    retention: Retention,
    break_glass: BreakGlass,
    #[serde(default)]
    federation: Federation,
    policies: PolicyFiles,
}

/// The loaded, validated agreement.
#[derive(Debug)]
pub struct Agreement {
    /// Version, recorded on every decision.
    pub version: String,
    /// Title.
    pub title: String,
    /// Parties by ODS code.
    pub parties: BTreeMap<String, Party>,
    /// Purposes by code.
    pub purposes: BTreeMap<String, Purpose>,
    /// Roles by code.
    pub roles: BTreeMap<String, Role>,
    /// Longest a notice may go before review.
    pub max_review_interval_days: i64,
    /// How long audit entries are kept.
    pub audit_retention_years: u32,
    /// How long withdrawn notices are kept.
    pub withdrawn_notice_retention_years: u32,
    /// Break-glass rules.
    pub break_glass: BreakGlass,
    /// What partners of neighbouring ICSs may ask for.
    pub federation: Federation,
    pub(crate) policies: PolicySet,
    pub(crate) schema: Schema,
    /// Decisions already made, by everything a clause can see except entity ids; `None` when
    /// some clause names a particular entity, so decisions could depend on ids.
    pub(crate) cache: Option<crate::decide::DecisionCache>,
    /// Where the ALLOW/DENY fixtures are, if named.
    pub fixtures_path: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path)
        .map_err(|e| PolicyError::Read { path: path.display().to_string(), cause: e.to_string() })
}

impl Agreement {
    /// Loads `agreement.json` and the Cedar schema and policies it names; validates them all.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = read(path)?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PolicyError::Agreement(vec![format!("not JSON: {e}")]))?;
        let validator = compile_schema(AGREEMENT_SCHEMA).map_err(|e| PolicyError::Agreement(vec![e]))?;
        let errs = schema_errors(&validator, &doc);
        if !errs.is_empty() {
            return Err(PolicyError::Agreement(
                errs.iter().map(|e| format!("{} ({}): {}", e.pointer, e.rule, e.detail)).collect(),
            ));
        }
        let file: AgreementFile =
            serde_json::from_value(doc).map_err(|e| PolicyError::Agreement(vec![e.to_string()]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let (schema, _) = Schema::from_cedarschema_str(&read(&base.join(&file.policies.cedar_schema))?)
            .map_err(|e| PolicyError::Policies(vec![format!("Cedar schema: {e}")]))?;
        let mut source = String::new();
        for f in &file.policies.files {
            source.push_str(&read(&base.join(f))?);
            source.push('\n');
        }
        let policies: PolicySet =
            source.parse().map_err(|e: cedar_policy::ParseErrors| PolicyError::Policies(vec![e.to_string()]))?;
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            return Err(PolicyError::Policies(result.validation_errors().map(|e| e.to_string()).collect()));
        }
        let mut errs = annotation_errors(&policies);
        errs.extend(scope_errors(&policies));
        for code in &file.federation.purposes {
            if !file.purposes.iter().any(|p| &p.code == code) {
                errs.push(format!("federation purpose `{code}` is not a purpose of the agreement"));
            }
        }
        let mut seen = BTreeSet::new();
        for code in file.purposes.iter().map(|p| &p.code).chain(file.roles.iter().map(|r| &r.code)) {
            if !seen.insert(code.clone()) {
                errs.push(format!("`{code}` is defined twice"));
            }
        }
        if !errs.is_empty() {
            return Err(PolicyError::Policies(errs));
        }
        Ok(Self {
            version: file.agreement_version,
            title: file.title,
            parties: file.parties.into_iter().map(|p| (p.ods_code.to_ascii_uppercase(), p)).collect(),
            purposes: file.purposes.into_iter().map(|p| (p.code.clone(), p)).collect(),
            roles: file.roles.into_iter().map(|r| (r.code.clone(), r)).collect(),
            max_review_interval_days: file.review.max_interval_days,
            audit_retention_years: file.retention.audit_years,
            withdrawn_notice_retention_years: file.retention.withdrawn_notice_years,
            break_glass: file.break_glass,
            federation: file.federation,
            // A clause naming a particular entity (`Vpr::Notice::"..."`) could make a decision
            // depend on ids, which the cache key leaves out.
            cache: (!source.contains("Notice::\"") && !source.contains("Requester::\""))
                .then(crate::decide::DecisionCache::default),
            policies,
            schema,
            fixtures_path: file.policies.fixtures.map(|f| base.join(f)),
        })
    }

    /// True if `role` is one the agreement lets users of `org_type` hold.
    pub fn role_allowed(&self, role: &str, org_type: OrgType) -> bool {
        self.roles.get(role).is_some_and(|r| r.org_types.contains(&org_type))
    }

    /// Whether decisions are memoised.
    pub fn caches_decisions(&self) -> bool {
        self.cache.is_some()
    }

    /// Number of clauses.
    pub fn clause_count(&self) -> usize {
        self.policies.policies().count()
    }
}

/// Permit clauses that do not say whom they permit: each must name its principal's type
/// (`principal is Vpr::Requester` for this ICS's partners, `Vpr::RemoteRequester` for partners of
/// a neighbouring ICS relayed by a peer broker), so a clause written for local partners never
/// opens notices across the border by accident. Forbid clauses may apply to everyone.
fn scope_errors(policies: &PolicySet) -> Vec<String> {
    policies
        .policies()
        .filter(|p| p.effect() == Effect::Permit)
        .filter(|p| matches!(p.principal_constraint(), PrincipalConstraint::Any | PrincipalConstraint::In(_)))
        .map(|p| {
            let clause = p.annotation("clause").unwrap_or_default();
            format!(
                "permit clause `{clause}` must name its principal's type: `principal is Vpr::Requester` or `principal is Vpr::RemoteRequester`"
            )
        })
        .collect()
}

/// What is wrong with the policies' annotations: each needs a unique `@clause`, a `@title`, and
/// a `@basis` of lawful-basis codes.
fn annotation_errors(policies: &PolicySet) -> Vec<String> {
    let mut errs = Vec::new();
    let mut clauses = BTreeSet::new();
    for p in policies.policies() {
        let where_ = format!("policy at {}", p.id());
        match p.annotation("clause") {
            Some(c) if !c.is_empty() => {
                if !clauses.insert(c.to_owned()) {
                    errs.push(format!("{where_}: clause `{c}` is used twice"));
                }
            }
            _ => errs.push(format!("{where_}: needs a @clause(\"...\") annotation")),
        }
        if p.annotation("title").is_none_or(str::is_empty) {
            errs.push(format!("{where_}: needs a @title(\"...\") annotation"));
        }
        match p.annotation("basis") {
            Some(b) if !b.trim().is_empty() => {
                for code in b.split_whitespace() {
                    if LawfulBasis::from_code(code).is_none() {
                        errs.push(format!("{where_}: `{code}` is not a lawful-basis code"));
                    }
                }
            }
            _ => errs.push(format!("{where_}: needs a @basis(\"...\") annotation of lawful-basis codes")),
        }
    }
    errs
}
