//! ALLOW/DENY fixtures (`policies/tests/`), replayed against the agreement in CI and by
//! `vpr-broker policy check`.

use serde::Deserialize;
use vpr_domain::vocab::OrgType;

use crate::{AccessContext, Agreement, Decision, NoticeFacts, PolicyError, Requester, SubscriptionFacts, View};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    name: String,
    #[allow(dead_code)]
    seed: String,
    principal: FixturePrincipal,
    purpose: String,
    #[serde(default)]
    context: FixtureContext,
    /// A read of this notice is decided...
    notice: Option<FixtureNotice>,
    /// ...or whether this subscription may start without IG approval.
    subscription: Option<FixtureSubscription>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureSubscription {
    #[serde(default = "notices")]
    topic: String,
    #[serde(default)]
    subject_kinds: Vec<String>,
    has_cohort: bool,
    has_geography: bool,
    payload: String,
    method: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixturePrincipal {
    org_type: OrgType,
    org: String,
    role: String,
    /// A partner of a neighbouring ICS, relayed by this peer broker.
    #[serde(default)]
    via: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureContext {
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    objection_upheld: bool,
    #[serde(default)]
    consent_given: bool,
    #[serde(default)]
    has_context_reference: bool,
    #[serde(default)]
    previously_received: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureNotice {
    category: String,
    risk_level: String,
    medical_factor_operative: bool,
    lawful_basis: Vec<String>,
    subject_kinds: Vec<String>,
    has_crime_reference: bool,
    active: bool,
    publisher_type: OrgType,
    publisher: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: String,
    view: Option<View>,
    #[serde(default)]
    restricted: bool,
    lawful_basis: Vec<String>,
    clauses: Vec<String>,
}

fn notices() -> String {
    "notices".into()
}

/// Replays every fixture; returns how many passed, or every failure.
pub fn replay(agreement: &Agreement, fixtures_json: &str) -> Result<usize, PolicyError> {
    let fixtures: Vec<Fixture> = serde_json::from_str(fixtures_json)
        .map_err(|e| PolicyError::Fixtures { total: 0, failures: vec![format!("fixtures are not valid: {e}")] })?;
    let mut failures = Vec::new();
    for (i, f) in fixtures.iter().enumerate() {
        let who = Requester {
            org: f.principal.org.clone(),
            org_type: f.principal.org_type,
            role: f.principal.role.clone(),
            system: "fixture".into(),
            via: f.principal.via.clone(),
        };
        let d = match (&f.notice, &f.subscription) {
            (Some(n), None) => {
                let (d, mismatch) = replay_notice(agreement, &who, f, n, i);
                failures.extend(mismatch);
                d
            }
            (None, Some(sub)) => {
                let facts = SubscriptionFacts {
                    topic: sub.topic.clone(),
                    subject_kinds: sub.subject_kinds.clone(),
                    has_cohort: sub.has_cohort,
                    has_geography: sub.has_geography,
                    payload: sub.payload.clone(),
                    method: sub.method.clone(),
                };
                agreement.decide_subscription(&who, &facts, &f.purpose, f.context.has_context_reference)
            }
            _ => {
                failures.push(format!("  #{i} {}: give exactly one of `notice` and `subscription`", f.name));
                continue;
            }
        };
        let d: Decision = d;
        let mut basis = f.expect.lawful_basis.clone();
        basis.sort();
        let mut clauses = f.expect.clauses.clone();
        clauses.sort();
        let decision = if d.permit { "permit" } else { "deny" };
        if decision != f.expect.decision
            || d.view != f.expect.view
            || d.restricted != f.expect.restricted
            || d.lawful_basis != basis
            || d.clauses != clauses
        {
            failures.push(format!(
                "  #{i} {}: expected {} {:?} restricted={} basis={:?} clauses={:?}; got {decision} {:?} restricted={} basis={:?} clauses={:?}",
                f.name, f.expect.decision, f.expect.view, f.expect.restricted, basis, clauses, d.view, d.restricted, d.lawful_basis, d.clauses
            ));
        }
    }
    if failures.is_empty() {
        Ok(fixtures.len())
    } else {
        Err(PolicyError::Fixtures { total: fixtures.len(), failures })
    }
}

/// Decides a notice fixture; also checks the memoised path gives the same answer, first time
/// and from the cache (a failure line if not).
fn replay_notice(
    agreement: &Agreement,
    who: &Requester,
    f: &Fixture,
    n: &FixtureNotice,
    i: usize,
) -> (Decision, Option<String>) {
    let notice = NoticeFacts {
        id: format!("fixture-{i}"),
        publisher: n.publisher.clone(),
        publisher_type: n.publisher_type,
        category: n.category.clone(),
        risk_level: n.risk_level.clone(),
        medical_factor_operative: n.medical_factor_operative,
        lawful_basis: n.lawful_basis.clone(),
        subject_kinds: n.subject_kinds.clone(),
        has_crime_reference: n.has_crime_reference,
        active: n.active,
    };
    let ctx = AccessContext {
        purpose: f.purpose.clone(),
        break_glass: f.context.break_glass,
        objection_upheld: f.context.objection_upheld,
        consent_given: f.context.consent_given,
        has_context_reference: f.context.has_context_reference,
        previously_received: f.context.previously_received,
    };
    let d = agreement.evaluate(who, &notice, &ctx);
    let differs = (0..2).any(|_| agreement.decide(who, &notice, &ctx) != d);
    let mismatch = differs.then(|| format!("  #{i} {}: the cached decision differs from the evaluated one", f.name));
    (d, mismatch)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn demo() -> Agreement {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/agreement.json");
        match Agreement::load(&path) {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_demo_agreement_passes_its_fixtures() {
        let a = demo();
        let text = std::fs::read_to_string(a.fixtures_path.clone().unwrap_or_default()).unwrap_or_default();
        match replay(&a, &text) {
            Ok(n) => assert!(n >= 40, "only {n} fixtures"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_demo_agreement_memoises_decisions() {
        assert!(demo().caches_decisions());
    }

    #[test]
    fn a_fixture_that_expects_the_wrong_view_fails() {
        let a = demo();
        let text = std::fs::read_to_string(a.fixtures_path.clone().unwrap_or_default()).unwrap_or_default();
        let mut fixtures: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        fixtures[0]["expect"]["view"] = serde_json::json!("full");
        let err = replay(&a, &fixtures.to_string()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("1 of"), "{err}");
    }

    #[test]
    fn invalid_policies_are_refused() {
        let dir = std::env::temp_dir().join(format!("vpr-policy-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let _ = std::fs::copy(root.join("agreement.json"), dir.join("agreement.json"));
        let _ = std::fs::copy(root.join("vpr.cedarschema"), dir.join("vpr.cedarschema"));
        // A typo in an attribute name fails strict validation against the Cedar schema.
        let _ = std::fs::write(
            dir.join("agreement.cedar"),
            "@clause(\"X-1\") @title(\"t\") @basis(\"UKGDPR-6-1-e\")\npermit (principal, action, resource) when { principal.rolle == \"x\" };",
        );
        let err = Agreement::load(&dir.join("agreement.json")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("policies are invalid"), "{err}");
        // A clause without a lawful basis is refused.
        let _ = std::fs::write(
            dir.join("agreement.cedar"),
            "@clause(\"X-1\") @title(\"t\")\npermit (principal, action, resource) when { principal.role == \"x\" };",
        );
        let err = Agreement::load(&dir.join("agreement.json")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("@basis"), "{err}");
        let _ = std::fs::write(
            dir.join("agreement.cedar"),
            "@clause(\"X-1\") @title(\"t\") @basis(\"GDPR-MADE-UP\")\npermit (principal, action, resource) when { principal.role == \"x\" };",
        );
        let err = Agreement::load(&dir.join("agreement.json")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("GDPR-MADE-UP"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
