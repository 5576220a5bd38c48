//! The decision point.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    Request, RestrictedExpression,
};
use serde::{Deserialize, Serialize};
use vpr_domain::vocab::OrgType;

use crate::Agreement;

/// How much of a notice a recipient may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// A notice exists: call this contact.
    Existence,
    /// The category, risk, safety advice and review date.
    Summary,
    /// Everything but the restricted fields (unless those are separately permitted).
    Full,
}

impl View {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            View::Existence => "existence",
            View::Summary => "summary",
            View::Full => "full",
        }
    }

    fn action(self) -> &'static str {
        match self {
            View::Existence => "view-existence",
            View::Summary => "view-summary",
            View::Full => "view-full",
        }
    }
}

/// Who is asking: a partner system acting for a user in a role, at this broker or (`via`) at a
/// peer broker that vouches for it.
#[derive(Debug, Clone)]
pub struct Requester {
    /// ODS code.
    pub org: String,
    /// Organisation type.
    pub org_type: OrgType,
    /// Role the user acts in.
    pub role: String,
    /// System (client id).
    pub system: String,
    /// The peer broker that relayed the request, for a partner of a neighbouring ICS: the
    /// clauses see it as a `Vpr::RemoteRequester`.
    pub via: Option<String>,
}

impl Requester {
    /// The Cedar entity type the clauses see this requester as.
    fn entity_type(&self) -> &'static str {
        if self.via.is_some() {
            "Vpr::RemoteRequester"
        } else {
            "Vpr::Requester"
        }
    }

    fn uid(&self) -> Option<EntityUid> {
        uid(self.entity_type(), &format!("{}/{}", self.system, self.role))
    }
}

/// What the policies may know about a notice (never its subject's identifiers).
#[derive(Debug, Clone)]
pub struct NoticeFacts {
    /// Notice id.
    pub id: String,
    /// Publisher's ODS code.
    pub publisher: String,
    /// Publisher's organisation type.
    pub publisher_type: OrgType,
    /// Category code.
    pub category: String,
    /// Risk level code.
    pub risk_level: String,
    /// Whether a medical factor was operative.
    pub medical_factor_operative: bool,
    /// The publisher's lawful-basis codes.
    pub lawful_basis: Vec<String>,
    /// `person`, `address`, `telephone`.
    pub subject_kinds: Vec<String>,
    /// Whether a crime reference is held.
    pub has_crime_reference: bool,
    /// Whether the notice is in force.
    pub active: bool,
}

/// The circumstances of a read.
#[derive(Debug, Clone)]
pub struct AccessContext {
    /// Purpose of use.
    pub purpose: String,
    /// An emergency was asserted with a justification.
    pub break_glass: bool,
    /// An upheld objection for this purpose covers the subject.
    pub objection_upheld: bool,
    /// A current consent for this purpose covers the subject.
    pub consent_given: bool,
    /// An incident, encounter or case reference was given.
    pub has_context_reference: bool,
    /// The recipient (a subscription) was given this notice before.
    pub previously_received: bool,
}

/// The outcome for one notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Permit (some view) or deny.
    pub permit: bool,
    /// The view permitted.
    pub view: Option<View>,
    /// Whether the restricted fields may be shown too.
    pub restricted: bool,
    /// Lawful-basis codes of the deciding clauses.
    pub lawful_basis: Vec<String>,
    /// The clauses that decided it (forbid clauses for a denial; none for a default denial).
    pub clauses: Vec<String>,
}

fn uid(type_name: &str, id: &str) -> Option<EntityUid> {
    EntityTypeName::from_str(type_name).ok().map(|t| EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn strings(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(items.iter().map(|s| RestrictedExpression::new_string(s.clone())))
}

/// The requester as a Cedar entity (`None` if its attributes do not evaluate: the caller denies).
fn requester_entity(id: &EntityUid, who: &Requester) -> Option<Entity> {
    let mut attrs = HashMap::from([
        ("org".to_owned(), RestrictedExpression::new_string(who.org.clone())),
        ("org_type".to_owned(), RestrictedExpression::new_string(who.org_type.code().to_owned())),
        ("role".to_owned(), RestrictedExpression::new_string(who.role.clone())),
        ("system".to_owned(), RestrictedExpression::new_string(who.system.clone())),
    ]);
    if let Some(broker) = &who.via {
        attrs.insert("broker".to_owned(), RestrictedExpression::new_string(broker.clone()));
    }
    Entity::new(id.clone(), attrs, HashSet::new()).ok()
}

/// Memoised decisions: a decision is a pure function of the facts the clauses can see.
#[derive(Debug, Default)]
pub(crate) struct DecisionCache {
    map: std::sync::RwLock<HashMap<String, Decision>>,
}

/// Bound on remembered decisions; the cache starts afresh when it is full.
const CACHE_LIMIT: usize = 100_000;

fn cache_key(who: &Requester, n: &NoticeFacts, ctx: &AccessContext) -> String {
    let mut basis = n.lawful_basis.clone();
    basis.sort();
    let mut kinds = n.subject_kinds.clone();
    kinds.sort();
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        who.via.as_deref().unwrap_or("-"),
        who.org,
        who.org_type.code(),
        who.role,
        who.system,
        n.publisher,
        n.publisher_type.code(),
        n.category,
        n.risk_level,
        n.medical_factor_operative,
        basis.join(","),
        kinds.join(","),
        n.has_crime_reference,
        n.active,
        ctx.purpose,
        ctx.break_glass,
        ctx.objection_upheld,
        u8::from(ctx.consent_given) * 2 + u8::from(ctx.has_context_reference),
        ctx.previously_received,
    )
}

impl Agreement {
    /// Decides what `who` may see of `notice` in `ctx`. Evaluation errors deny.
    pub fn decide(&self, who: &Requester, notice: &NoticeFacts, ctx: &AccessContext) -> Decision {
        let Some(cache) = &self.cache else { return self.evaluate(who, notice, ctx) };
        let key = cache_key(who, notice, ctx);
        if let Some(d) = cache.map.read().ok().and_then(|m| m.get(&key).cloned()) {
            return d;
        }
        let d = self.evaluate(who, notice, ctx);
        if let Ok(mut m) = cache.map.write() {
            if m.len() >= CACHE_LIMIT {
                m.clear();
            }
            m.insert(key, d.clone());
        }
        d
    }

    /// Asks the clauses, without the cache.
    pub fn evaluate(&self, who: &Requester, notice: &NoticeFacts, ctx: &AccessContext) -> Decision {
        let deny = |clauses: Vec<String>| Decision {
            permit: false,
            view: None,
            restricted: false,
            lawful_basis: vec![],
            clauses,
        };
        let (Some(p_uid), Some(r_uid)) = (who.uid(), uid("Vpr::Notice", &notice.id)) else {
            return deny(vec![]);
        };
        let principal = requester_entity(&p_uid, who);
        let resource = notice_entity(&r_uid, notice);
        let (Some(principal), Some(resource)) = (principal, resource) else { return deny(vec![]) };
        let Ok(entities) = Entities::from_entities([principal, resource], None) else { return deny(vec![]) };
        let Some(context) = context_of(ctx) else { return deny(vec![]) };
        let authorizer = Authorizer::new();
        let ask = |action: &str| -> Option<(bool, Vec<PolicyId>)> {
            let a = uid("Vpr::Action", action)?;
            let req = Request::new(p_uid.clone(), a, r_uid.clone(), context.clone(), Some(&self.schema)).ok()?;
            let resp = authorizer.is_authorized(&req, &self.policies, &entities);
            // A policy that errors is skipped by Cedar; for this broker an error must deny.
            if resp.diagnostics().errors().next().is_some() {
                return Some((false, vec![]));
            }
            Some((resp.decision() == CedarDecision::Allow, resp.diagnostics().reason().cloned().collect()))
        };
        let mut denial = Vec::new();
        for view in [View::Full, View::Summary, View::Existence] {
            let Some((allowed, reasons)) = ask(view.action()) else { return deny(vec![]) };
            if allowed {
                let mut clauses = BTreeSet::new();
                let mut basis = BTreeSet::new();
                self.collect(&reasons, &mut clauses, &mut basis);
                let mut restricted = false;
                if view != View::Existence {
                    if let Some((true, r)) = ask("view-restricted") {
                        restricted = true;
                        self.collect(&r, &mut clauses, &mut basis);
                    }
                }
                return Decision {
                    permit: true,
                    view: Some(view),
                    restricted,
                    lawful_basis: basis.into_iter().collect(),
                    clauses: clauses.into_iter().collect(),
                };
            }
            if view == View::Existence {
                denial = reasons;
            }
        }
        let mut clauses = BTreeSet::new();
        self.collect(&denial, &mut clauses, &mut BTreeSet::new());
        deny(clauses.into_iter().collect())
    }

    fn collect(&self, ids: &[PolicyId], clauses: &mut BTreeSet<String>, basis: &mut BTreeSet<String>) {
        for id in ids {
            if let Some(p) = self.policies.policy(id) {
                if let Some(c) = p.annotation("clause") {
                    clauses.insert(c.to_owned());
                }
                if let Some(b) = p.annotation("basis") {
                    basis.extend(b.split_whitespace().map(str::to_owned));
                }
            }
        }
    }
}

/// What a subscription asks for, as the `subscribe` clauses see it.
#[derive(Debug, Clone)]
pub struct SubscriptionFacts {
    /// `notices` or `disclosures`.
    pub topic: String,
    /// Subject kinds it is limited to (empty: all).
    pub subject_kinds: Vec<String>,
    /// Limited to a cohort.
    pub has_cohort: bool,
    /// Limited to postcode areas or districts.
    pub has_geography: bool,
    /// `id-only` or `view`.
    pub payload: String,
    /// `webhook` or `feed`.
    pub method: String,
}

impl Agreement {
    /// Whether a subscription may start without an IG lead's approval: a permit names the
    /// clauses (and their bases) that allow it; a denial means it waits for approval.
    pub fn decide_subscription(
        &self,
        who: &Requester,
        sub: &SubscriptionFacts,
        purpose: &str,
        has_context_reference: bool,
    ) -> Decision {
        let deny = Decision { permit: false, view: None, restricted: false, lawful_basis: vec![], clauses: vec![] };
        let (Some(p_uid), Some(r_uid), Some(a_uid)) =
            (who.uid(), uid("Vpr::SubscriptionRequest", "requested"), uid("Vpr::Action", "subscribe"))
        else {
            return deny;
        };
        let principal = requester_entity(&p_uid, who);
        let resource = Entity::new(
            r_uid.clone(),
            HashMap::from([
                ("topic".to_owned(), RestrictedExpression::new_string(sub.topic.clone())),
                ("subject_kinds".to_owned(), strings(&sub.subject_kinds)),
                ("has_cohort".to_owned(), RestrictedExpression::new_bool(sub.has_cohort)),
                ("has_geography".to_owned(), RestrictedExpression::new_bool(sub.has_geography)),
                ("payload".to_owned(), RestrictedExpression::new_string(sub.payload.clone())),
                ("method".to_owned(), RestrictedExpression::new_string(sub.method.clone())),
            ]),
            HashSet::new(),
        );
        let (Some(principal), Ok(resource)) = (principal, resource) else { return deny };
        let Ok(entities) = Entities::from_entities([principal, resource], None) else { return deny };
        let Ok(context) = Context::from_pairs([
            ("purpose".to_owned(), RestrictedExpression::new_string(purpose.to_owned())),
            ("has_context_reference".to_owned(), RestrictedExpression::new_bool(has_context_reference)),
        ]) else {
            return deny;
        };
        let Ok(req) = Request::new(p_uid, a_uid, r_uid, context, Some(&self.schema)) else { return deny };
        let resp = Authorizer::new().is_authorized(&req, &self.policies, &entities);
        if resp.diagnostics().errors().next().is_some() || resp.decision() != CedarDecision::Allow {
            return deny;
        }
        let reasons: Vec<PolicyId> = resp.diagnostics().reason().cloned().collect();
        let mut clauses = BTreeSet::new();
        let mut basis = BTreeSet::new();
        self.collect(&reasons, &mut clauses, &mut basis);
        Decision {
            permit: true,
            view: None,
            restricted: false,
            lawful_basis: basis.into_iter().collect(),
            clauses: clauses.into_iter().collect(),
        }
    }
}

/// The notice as a Cedar entity.
fn notice_entity(r_uid: &EntityUid, notice: &NoticeFacts) -> Option<Entity> {
    Entity::new(
        r_uid.clone(),
        HashMap::from([
            ("publisher".to_owned(), RestrictedExpression::new_string(notice.publisher.clone())),
            ("publisher_type".to_owned(), RestrictedExpression::new_string(notice.publisher_type.code().to_owned())),
            ("category".to_owned(), RestrictedExpression::new_string(notice.category.clone())),
            ("risk_level".to_owned(), RestrictedExpression::new_string(notice.risk_level.clone())),
            ("medical_factor_operative".to_owned(), RestrictedExpression::new_bool(notice.medical_factor_operative)),
            ("lawful_basis".to_owned(), strings(&notice.lawful_basis)),
            ("subject_kinds".to_owned(), strings(&notice.subject_kinds)),
            ("has_crime_reference".to_owned(), RestrictedExpression::new_bool(notice.has_crime_reference)),
            ("active".to_owned(), RestrictedExpression::new_bool(notice.active)),
        ]),
        HashSet::new(),
    )
    .ok()
}

/// The request context of a read, for Cedar.
fn context_of(ctx: &AccessContext) -> Option<Context> {
    Context::from_pairs([
        ("purpose".to_owned(), RestrictedExpression::new_string(ctx.purpose.clone())),
        ("break_glass".to_owned(), RestrictedExpression::new_bool(ctx.break_glass)),
        ("objection_upheld".to_owned(), RestrictedExpression::new_bool(ctx.objection_upheld)),
        ("consent_given".to_owned(), RestrictedExpression::new_bool(ctx.consent_given)),
        ("has_context_reference".to_owned(), RestrictedExpression::new_bool(ctx.has_context_reference)),
        ("previously_received".to_owned(), RestrictedExpression::new_bool(ctx.previously_received)),
    ])
    .ok()
}
