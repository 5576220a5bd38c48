//! Deliveries and feed reads decided: each event carries the notice as it stands now, in the
//! view the agreement allows now; an event the agreement does not allow is withheld (its number
//! kept, nothing about the notice in it). Every decision is audited before anything is sent.

use std::collections::{BTreeSet, HashMap, HashSet};

use uuid::Uuid;
use vpr_auth::Principal;
use vpr_domain::audit::AuditAction;
use vpr_domain::notice::MatchKind;
use vpr_domain::subscription::{Payload, Topic};
use vpr_policy::View;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};
use vpr_store::directives::DirectiveState;
use vpr_store::subscriptions::{Subscription, SubscriptionEvent};
use vpr_store::StoredNotice;

use super::subscriber;
use crate::audit::{audit_entry, Actor};
use crate::caller::Access;
use crate::disclose::{decide_read, Read, Recipient};
use crate::error::{AppError, AppResult};
use crate::records::who_and_why;
use crate::render::event::{Carried, Decided, DecidedEvent, Shown};
use crate::App;

/// One subscription's events to decide, and the request id its audit entry records.
#[derive(Debug)]
pub struct ToDecide<'a> {
    /// The subscription.
    pub sub: &'a Subscription,
    /// Its events, in order.
    pub events: &'a [SubscriptionEvent],
    /// The request id to record.
    pub request_id: String,
}

/// Decides, minimises and audits `events` for `sub` (on the blocking pool).
pub fn decide_events(
    app: &App,
    sub: &Subscription,
    events: &[SubscriptionEvent],
    action: AuditAction,
    push: bool,
    request_id: String,
) -> AppResult<Decided> {
    let mut decided = decide_many(app, &[ToDecide { sub, events, request_id }], action, push)?;
    decided.pop().ok_or_else(|| AppError::Internal("no decision was made".into()))
}

/// What a delivery round reads for all its subscriptions in a few queries, just before the
/// decisions: the notices, what each subscription was given before, cohort membership and the
/// subjects' directives per purpose.
struct RoundFacts {
    notices: HashMap<Uuid, (StoredNotice, Vec<String>)>,
    in_cohort: HashSet<(Uuid, String)>,
    received: HashMap<Uuid, HashSet<String>>,
    directives: HashMap<String, HashMap<Uuid, DirectiveState>>,
}

impl RoundFacts {
    fn nhs_of(&self, id: &Uuid) -> Option<String> {
        let (n, _) = self.notices.get(id)?;
        n.content.subject.person.as_ref()?.nhs_number.as_ref().map(|n| n.as_str().to_owned())
    }

    fn read(app: &App, governed: &[(&ToDecide<'_>, &Vec<Uuid>)]) -> AppResult<Self> {
        let all: BTreeSet<Uuid> = governed.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
        let mut facts = RoundFacts {
            notices: app.store.current_notices(&all.into_iter().collect::<Vec<_>>())?,
            in_cohort: HashSet::new(),
            received: HashMap::new(),
            directives: HashMap::new(),
        };
        let vault = app.store.vault();
        let mut cohort_asked = Vec::new();
        let mut received_asked = Vec::new();
        let mut by_purpose: HashMap<&str, BTreeSet<Uuid>> = HashMap::new();
        for (d, ids) in governed {
            if d.sub.criteria.cohort {
                for nhs in ids.iter().filter_map(|id| facts.nhs_of(id)) {
                    cohort_asked.push((d.sub.id, vault.blind_index(MatchKind::NhsNumber, &nhs)));
                }
            }
            let known = ids.iter().filter(|id| facts.notices.contains_key(id));
            by_purpose.entry(d.sub.purpose.as_str()).or_default().extend(known);
            received_asked.push((d.sub.id, ids.iter().map(ToString::to_string).collect::<Vec<_>>()));
        }
        facts.in_cohort = app.store.in_cohorts(&cohort_asked)?.into_iter().collect();
        facts.received = app.store.received_many(&received_asked)?;
        let today = app.clock.now().date_naive();
        for (purpose, ids) in by_purpose {
            let ids: Vec<Uuid> = ids.into_iter().collect();
            facts.directives.insert(purpose.to_owned(), app.store.directive_states(&ids, purpose, today)?);
        }
        Ok(facts)
    }
}

/// [`decide_events`] for several subscriptions at once (a delivery round): the facts are read
/// in a few queries for all of them, and the audit entries (one per subscription) share
/// commits. Every entry is committed before this returns; one result per subscription, in order.
pub fn decide_many(app: &App, batch: &[ToDecide<'_>], action: AuditAction, push: bool) -> AppResult<Vec<Decided>> {
    let principals: Vec<Option<Principal>> = batch.iter().map(|d| subscriber(app, d.sub)).collect();
    // Each subscription's notices, once each, in order.
    let notice_ids: Vec<Vec<Uuid>> = batch
        .iter()
        .map(|d| d.events.iter().map(|e| e.notice_id).collect::<BTreeSet<_>>().into_iter().collect())
        .collect();
    // Subscriptions to notices, with a subscriber the registry still knows, are decided.
    let governed: Vec<(&ToDecide<'_>, &Vec<Uuid>)> = batch
        .iter()
        .zip(&principals)
        .zip(&notice_ids)
        .filter(|((d, p), _)| p.is_some() && d.sub.topic == Topic::Notices)
        .map(|((d, _), ids)| (d, ids))
        .collect();
    let mut facts = RoundFacts::read(app, &governed)?;
    let mut decided = Vec::with_capacity(batch.len());
    let mut entries = Vec::with_capacity(batch.len());
    for ((d, principal), ids) in batch.iter().zip(&principals).zip(&notice_ids) {
        let (one, entry) = match principal {
            None => refused_subscriber(app, d, action, push),
            Some(p) if d.sub.topic == Topic::Disclosures => disclosures(app, p, d, action, push)?,
            Some(p) => notices(app, p, d, ids, &mut facts, action, push),
        };
        entries.extend(entry);
        decided.push(one);
    }
    // Guarantee 1: nothing is disclosed before its audit entry is committed.
    app.store.append_audits(entries).map_err(AppError::audit_write_failed)?;
    Ok(decided)
}

fn withheld(events: &[SubscriptionEvent]) -> Vec<DecidedEvent> {
    events.iter().map(|e| DecidedEvent { event: e.clone(), carried: Carried::Withheld }).collect()
}

/// A subscriber the registry no longer knows with the `subscriptions` scope: refused, every
/// event withheld.
fn refused_subscriber(app: &App, d: &ToDecide<'_>, action: AuditAction, push: bool) -> (Decided, Option<AuditEntry>) {
    let sub = d.sub;
    let actor = Actor { org: &sub.owner_ods, org_type: "unknown", system: &sub.owner_system };
    let entry = AuditEntry {
        actor_user: Some(format!("subscription:{}", sub.id)),
        actor_role: Some(sub.role.clone()),
        purpose: Some(sub.purpose.clone()),
        context_ref: sub.context_ref.clone(),
        decision: "refused".into(),
        ..audit_entry(app, actor, &d.request_id, action, if push { 0 } else { 403 })
    };
    let decided = Decided {
        audit_id: entry.id,
        refused: Some(match &sub.federation {
            Some(link) => format!("peer broker `{}` no longer vouches for the subscribing organisation", link.peer()),
            None => "the subscribing system is no longer in the registry with the `subscriptions` scope".to_owned(),
        }),
        events: withheld(d.events),
        shown: HashMap::new(),
    };
    (decided, Some(entry))
}

/// A subscription to notices: its events' notices decided for its purpose and role.
fn notices(
    app: &App,
    principal: &Principal,
    d: &ToDecide<'_>,
    ids: &[Uuid],
    facts: &mut RoundFacts,
    action: AuditAction,
    push: bool,
) -> (Decided, Option<AuditEntry>) {
    let sub = d.sub;
    let vault = app.store.vault();
    let mut candidates = Vec::new();
    let mut subject_refs = BTreeSet::new();
    let mut shown = HashMap::new();
    for id in ids {
        let Some((n, blind)) = facts.notices.get(id) else { continue };
        subject_refs.extend(blind.iter().map(|b| format!("notice-subject:{b}")));
        let nhs_in_cohort = facts.nhs_of(id).filter(|nhs| {
            sub.criteria.cohort && facts.in_cohort.contains(&(sub.id, vault.blind_index(MatchKind::NhsNumber, nhs)))
        });
        shown.insert(n.id, Shown { version: n.version.version, updated_at: n.version.at, nhs_in_cohort });
        candidates.push((n.clone(), vec![]));
    }
    let access = Access {
        purpose: sub.purpose.clone(),
        user_id: format!("subscription:{}", sub.id),
        role: sub.role.clone(),
        context_ref: sub.context_ref.clone(),
        justification: None,
        relayed_by: match &sub.federation {
            Some(vpr_domain::subscription::PeerLink::RelayedBy { peer, .. }) => Some(peer.clone()),
            _ => None,
        },
        replay_guard: None,
    };
    let max_view = match sub.payload {
        Payload::IdOnly => View::Existence,
        Payload::View => View::Full,
    };
    let received = facts.received.remove(&sub.id).unwrap_or_default();
    let read = Read {
        action,
        request_id: d.request_id.clone(),
        subject_refs: subject_refs.into_iter().collect(),
        candidates,
        refusal_status: 403,
        recipient: Some(Recipient { subscription_id: sub.id, received, max_view, push }),
    };
    let none = HashMap::new();
    let states = facts.directives.get(sub.purpose.as_str()).unwrap_or(&none);
    let (disclosure, entry) = decide_read(app, principal, &access, read, app.clock.now(), states);
    let mut by_id: HashMap<Uuid, _> = disclosure.results.into_iter().map(|n| (n.id, n)).collect();
    let events = d
        .events
        .iter()
        .map(|e| {
            let carried = match by_id.get(&e.notice_id) {
                Some(n) => Carried::Notice(Box::new(n.clone())),
                None => Carried::Withheld,
            };
            DecidedEvent { event: e.clone(), carried }
        })
        .collect();
    by_id.clear();
    (Decided { audit_id: disclosure.audit_id, refused: disclosure.refused, events, shown }, entry)
}

/// Disclosures of the subscriber's own notices: its access log, pushed. The publisher is the
/// controller and sees its access log without a policy decision; the push is audited (as
/// `access-log-push`, naming no notice, so it does not itself become a disclosure to report).
fn disclosures(
    app: &App,
    principal: &Principal,
    d: &ToDecide<'_>,
    action: AuditAction,
    push: bool,
) -> AppResult<(Decided, Option<AuditEntry>)> {
    let (sub, events) = (d.sub, d.events);
    let ids: Vec<Uuid> = events.iter().filter_map(|e| e.audit_id).collect();
    let entries: HashMap<Uuid, StoredAuditEntry> =
        app.store.audit_entries_by_id(&ids)?.into_iter().map(|e| (e.entry.id, e)).collect();
    let (first, last) = (events.first().map_or(0, |e| e.number), events.last().map_or(0, |e| e.number));
    let actor =
        Actor { org: principal.org.as_str(), org_type: principal.org_type.code(), system: &principal.client_id };
    // An access-log push or read names no notice, so it is not itself a disclosure to report.
    let logged = match (push, action) {
        (true, _) => AuditAction::AccessLogPush,
        (false, AuditAction::FhirEvents) => AuditAction::AccessLogFhirEvents,
        (false, _) => AuditAction::AccessLogFeed,
    };
    let entry = AuditEntry {
        actor_user: Some(format!("subscription:{}", sub.id)),
        actor_role: Some(sub.role.clone()),
        purpose: Some(sub.purpose.clone()),
        context_ref: Some(format!("subscription={};events={first}-{last}", sub.id)),
        decision: "permit".into(),
        ..audit_entry(app, actor, &d.request_id, logged, if push { 0 } else { 200 })
    };
    let registry = app.tokens.registry();
    let decided = events
        .iter()
        .map(|e| {
            let carried = match e.audit_id.and_then(|id| entries.get(&id)) {
                None => Carried::Withheld,
                Some(stored) => Carried::Disclosure(match sub.payload {
                    Payload::IdOnly => serde_json::json!({"audit_id": stored.entry.id}),
                    Payload::View => who_and_why(registry, stored).with_decision_on(stored, e.notice_id),
                }),
            };
            DecidedEvent { event: e.clone(), carried }
        })
        .collect();
    Ok((Decided { audit_id: entry.id, refused: None, events: decided, shown: HashMap::new() }, Some(entry)))
}
