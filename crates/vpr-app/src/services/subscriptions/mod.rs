//! Subscriptions: a partner's standing request to be told of notice changes that match its
//! criteria, pushed to a webhook or read from a replayable feed. Admission checks what the
//! agreement must allow before anything is stored; a subscription the agreement does not allow
//! outright waits for an IG lead's approval. Every change is audited with the change.

use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::{EncryptionKey, Scope};
use vpr_domain::audit::AuditAction;
use vpr_domain::subscription::PeerLink;
use vpr_domain::subscription::{DeliveryMethod, SubscriptionRules, SubscriptionSpec, SubscriptionStatus, Topic};
use vpr_domain::FieldError;
use vpr_policy::{Requester, SubscriptionFacts};
use vpr_store::audit::{AuditEntry, FederationRecord, PeerRecord};
use vpr_store::subscriptions::{NewSubscription, Subscription, SubscriptionEvent};

use crate::access::{ig_only, may_act_as, require_scope, RoleRefusal};
use crate::audit::{caller_entry, record_refusal};
use crate::caller::Caller;
use crate::delivery::{decide_events, Decided};
use crate::disclose::subject_keys;
use crate::error::{AppError, AppResult};
use crate::App;

/// A page of a subscription's feed.
#[derive(Debug)]
pub struct FeedPage {
    /// The subscription.
    pub sub: Subscription,
    /// The events read, decided now; `None` when there were none (an empty poll is not an
    /// audited read).
    pub decided: Option<Decided>,
    /// The cursor to continue from.
    pub next_after: i64,
}

/// Which facade a subscription belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facade {
    /// The VPR REST API.
    Vpr,
    /// The FHIR facade.
    Fhir,
}

fn no_subscription(facade: Facade) -> AppError {
    match facade {
        Facade::Vpr => AppError::NotFound("no subscription has this id".into()),
        Facade::Fhir => AppError::NotFound("no Subscription has this id".into()),
    }
}

/// What the audit entry of a subscription crossing an ICS border records of it: the peer that
/// relayed it here, or the peer holding it.
fn federation_record(link: &PeerLink) -> FederationRecord {
    match link {
        PeerLink::RelayedBy { peer, .. } => FederationRecord { relayed_by: Some(peer.clone()), peers: vec![] },
        PeerLink::AtPeer { peer, subscription_id } => FederationRecord {
            relayed_by: None,
            peers: vec![PeerRecord {
                broker: peer.clone(),
                outcome: "answered".into(),
                status: None,
                lookup_id: None,
                notices: vec![],
                detail: Some(format!("held there as subscription {subscription_id}")),
            }],
        },
    }
}

/// The audit entry of a change to a subscription (not a disclosure, but IG reviews who asked to
/// be told of what).
pub(crate) fn subscription_audit(
    app: &App,
    caller: &Caller,
    action: AuditAction,
    sub: &Subscription,
    outcome: u16,
) -> AuditEntry {
    let from_approval = |key: &str| -> Vec<String> {
        sub.approval.get(key).and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default()
    };
    AuditEntry {
        actor_role: Some(sub.role.clone()),
        purpose: Some(sub.purpose.clone()),
        context_ref: Some(format!("subscription={};status={}", sub.id, sub.status)),
        decision: sub.status.code().to_owned(),
        clauses: from_approval("clauses"),
        lawful_basis: from_approval("lawful_basis"),
        federation: sub.federation.as_ref().map(federation_record),
        ..caller_entry(app, caller, action, outcome)
    }
}

/// What the agreement must allow before anything is stored, every problem by its field.
fn admission_problems(app: &App, caller: &Caller, spec: &SubscriptionSpec) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !app.agreement.purposes.contains_key(&spec.purpose) {
        errs.push(FieldError::new("/purpose", "unknown-purpose", "not a purpose of the data-sharing agreement"));
    }
    match may_act_as(app, &caller.principal, &spec.role) {
        Err(RoleRefusal::NotHeld) => {
            errs.push(FieldError::new("/role", "role-not-held", "this system may not act in this role"))
        }
        Err(RoleRefusal::NotGiven) => errs.push(FieldError::new(
            "/role",
            "role-not-allowed",
            "the agreement gives this role to no organisation of your type",
        )),
        Ok(()) => {}
    }
    if let Some(k) = &spec.encryption_key {
        if let Err(why) = EncryptionKey::from_jwk(k) {
            errs.push(FieldError::new("/delivery/encryption_key", "jwk-unusable", why));
        }
    }
    errs
}

/// Whether the agreement lets `requester`'s subscription start outright: its status and
/// approval record.
fn admission_decision(app: &App, requester: &Requester, spec: &SubscriptionSpec) -> (SubscriptionStatus, Value) {
    let facts = SubscriptionFacts {
        topic: spec.topic.code().to_owned(),
        subject_kinds: spec.criteria.subject_kinds.iter().map(|k| k.code().to_owned()).collect(),
        has_cohort: spec.criteria.cohort,
        has_geography: !spec.criteria.postcodes.is_empty(),
        payload: spec.payload.code().to_owned(),
        method: match spec.method {
            DeliveryMethod::Webhook => "webhook".into(),
            DeliveryMethod::Feed => "feed".into(),
        },
    };
    let now = app.clock.now();
    let version = &app.agreement.version;
    let d = app.agreement.decide_subscription(requester, &facts, &spec.purpose, spec.context_reference.is_some());
    if d.permit {
        let record = json!({"decided_by": "agreement", "clauses": d.clauses, "lawful_basis": d.lawful_basis,
                            "agreement_version": version, "at": now});
        (SubscriptionStatus::Active, record)
    } else {
        let record = json!({"decided_by": null, "awaiting": "an IG lead's approval: the agreement does not allow this subscription outright",
                            "agreement_version": version, "at": now});
        (SubscriptionStatus::Pending, record)
    }
}

impl App {
    /// The rules subscriptions are validated by now.
    pub fn subscription_rules(&self) -> SubscriptionRules {
        SubscriptionRules {
            now: self.clock.now(),
            max_duration: chrono::Duration::days(self.delivery.max_subscription_days),
            allow_insecure_webhooks: self.delivery.allow_insecure_webhooks,
        }
    }

    /// Admission: checks what the agreement must allow, decides whether the subscription may
    /// start outright, and computes its cohort's blind indexes. Nothing is stored.
    pub fn admit(&self, caller: &Caller, spec: &SubscriptionSpec, id: Uuid) -> AppResult<NewSubscription> {
        // Disclosures of an organisation's notices go to a system that publishes for it.
        if spec.topic == Topic::Disclosures {
            require_scope(&caller.principal, Scope::NoticesWrite)?;
        }
        let errs = admission_problems(self, caller, spec);
        if !errs.is_empty() {
            return Err(AppError::Validation(errs));
        }
        Ok(self.admitted(id, &caller.principal, None, spec))
    }

    /// The subscription `spec` of `owner` (relayed by peer `via`, if any) as admitted: started
    /// outright if the agreement allows it, otherwise held for an IG lead; with its cohort's
    /// blind indexes. Nothing is stored.
    pub(crate) fn admitted(
        &self,
        id: Uuid,
        owner: &vpr_auth::Principal,
        via: Option<&str>,
        spec: &SubscriptionSpec,
    ) -> NewSubscription {
        let requester = Requester {
            org: owner.org.as_str().to_owned(),
            org_type: owner.org_type,
            role: spec.role.clone(),
            system: owner.client_id.clone(),
            via: via.map(str::to_owned),
        };
        let (status, approval) = admission_decision(self, &requester, spec);
        NewSubscription {
            id,
            owner_ods: owner.org.as_str().to_owned(),
            owner_system: owner.client_id.clone(),
            status,
            purpose: spec.purpose.clone(),
            role: spec.role.clone(),
            context_ref: spec.context_reference.clone(),
            topic: spec.topic,
            criteria: spec.criteria.clone(),
            payload: spec.payload,
            channel: "vpr".into(),
            method: spec.method,
            endpoint: spec.url.clone(),
            encryption_jwk: spec.encryption_key.as_ref().map(|k| Value::Object(k.clone()).to_string()),
            tag: spec.tag.clone(),
            expires_at: spec.expires_at,
            heartbeat_seconds: None,
            approval,
            cohort: self.cohort_keys(spec),
            federation: None,
        }
    }

    /// The blind indexes of a subscription's cohort, when it has one.
    pub(crate) fn cohort_keys(&self, spec: &SubscriptionSpec) -> Option<Vec<String>> {
        spec.cohort
            .as_ref()
            .map(|subjects| subjects.iter().flat_map(|s| subject_keys(self, s).0).collect::<Vec<String>>())
    }

    /// Stores an admitted subscription with its `subscribe` entry.
    pub async fn subscribe(&self, caller: &Caller, new: NewSubscription) -> AppResult<Subscription> {
        let caller = caller.clone();
        let sub = self
            .blocking(move |app| {
                app.store.audited(|tx| {
                    let sub = tx.create_subscription(&new, app.clock.now())?;
                    let entry = subscription_audit(app, &caller, AuditAction::Subscribe, &sub, 201);
                    Ok::<_, AppError>((sub, entry))
                })
            })
            .await?;
        tracing::info!(subscription = %sub.id, status = %sub.status, "subscription created");
        Ok(sub)
    }

    /// The caller's organisation's subscription `id` (any of its systems), of `facade`.
    pub async fn owned_subscription(&self, caller: &Caller, id: Uuid, facade: Facade) -> AppResult<Subscription> {
        let sub = self.blocking(move |app| Ok(app.store.subscription(id)?)).await?;
        let fhir = |s: &Subscription| s.channel == "fhir";
        match sub {
            Some(s) if facade == Facade::Fhir && !fhir(&s) => Err(no_subscription(facade)),
            None => Err(no_subscription(facade)),
            Some(s) if s.owner_ods != caller.org() => Err(AppError::Forbidden(match facade {
                Facade::Vpr => "this subscription belongs to another organisation".into(),
                Facade::Fhir => "this Subscription belongs to another organisation".into(),
            })),
            Some(s) => Ok(s),
        }
    }

    /// The size of a subscription's cohort (its subjects are held as blind indexes only).
    pub async fn cohort_size(&self, id: Uuid) -> AppResult<i64> {
        self.blocking(move |app| Ok(app.store.cohort_size(id)?)).await
    }

    /// Subscriptions, newest first, with their cohort sizes: the caller's organisation's, or
    /// with `all` every organisation's for an IG `role` (refused and audited otherwise).
    pub async fn list_subscriptions(
        &self,
        caller: &Caller,
        all: Option<String>,
        status: Option<SubscriptionStatus>,
        limit: i64,
    ) -> AppResult<Vec<(Subscription, i64)>> {
        let caller = caller.clone();
        self.blocking(move |app| {
            if let Some(role) = &all {
                ig_only(app, &caller.principal, role, "every organisation's subscriptions")
                    .map_err(|refusal| record_refusal(app, &caller, AuditAction::SubscriptionsList, refusal))?;
            }
            let owner = all.is_none().then(|| caller.org().to_owned());
            let subs = app.store.subscriptions(owner.as_deref(), status, limit)?;
            subs.into_iter()
                .map(|s| {
                    let size = if s.criteria.cohort { app.store.cohort_size(s.id)? } else { 0 };
                    Ok((s, size))
                })
                .collect()
        })
        .await
    }

    /// Replaces an owned subscription's settings, cohort included, re-admitted for the caller.
    pub async fn replace_subscription(
        &self,
        caller: &Caller,
        id: Uuid,
        spec: SubscriptionSpec,
    ) -> AppResult<Subscription> {
        let current = self.owned_subscription(caller, id, Facade::Vpr).await?;
        held_here(&current)?;
        if spec.peer.is_some() {
            return Err(AppError::invalid(
                "/peer",
                "peer-unchangeable",
                "a subscription cannot be moved to a peer broker: subscribe there anew",
            ));
        }
        let new = self.admit(caller, &spec, id)?;
        let caller = caller.clone();
        self.blocking(move |app| {
            app.store.audited(|tx| {
                let sub = tx.replace_subscription(&new, app.clock.now())?;
                let entry = subscription_audit(app, &caller, AuditAction::SubscriptionChange, &sub, 200);
                Ok::<_, AppError>((sub, entry))
            })
        })
        .await
    }

    /// Ends an owned subscription: nothing more is sent. `outcome` is the status the edge
    /// answers with (recorded in the entry).
    pub async fn delete_subscription(
        &self,
        caller: &Caller,
        sub: &Subscription,
        outcome: u16,
    ) -> AppResult<Subscription> {
        let (c, id) = (caller.clone(), sub.id);
        let deleted = self
            .blocking(move |app| {
                app.store.audited(|tx| {
                    let sub = tx
                        .delete_subscription(id, app.clock.now())?
                        .ok_or_else(|| AppError::Conflict("the subscription is already deleted".into()))?;
                    let entry = subscription_audit(app, &c, AuditAction::Unsubscribe, &sub, outcome);
                    Ok((sub, entry))
                })
            })
            .await?;
        if let Some(PeerLink::AtPeer { peer, subscription_id }) = &deleted.federation {
            // The peer is told now; if it cannot be, its next push is answered `410 Gone` and
            // it ends the subscription then.
            self.end_at_peer(caller, &deleted, peer, subscription_id).await;
        }
        Ok(deleted)
    }

    /// Events of a subscription decided now for a read (`feed` or `fhir-events`): `since`
    /// (exclusive) up to `limit` events and at most `until`. `None` when there are none.
    pub async fn read_events(
        &self,
        caller: &Caller,
        sub: &Subscription,
        action: AuditAction,
        after: i64,
        until: i64,
        limit: i64,
    ) -> AppResult<(Vec<SubscriptionEvent>, Option<Decided>)> {
        if !sub.status.receives() {
            return Err(AppError::Conflict(format!("a subscription that is `{}` has no feed", sub.status)));
        }
        held_here(sub)?;
        let (s, request_id) = (sub.clone(), caller.request_id.clone());
        let (events, decided) = self
            .blocking(move |app| {
                let events: Vec<SubscriptionEvent> =
                    app.store.events_after(s.id, after, limit)?.into_iter().filter(|e| e.number <= until).collect();
                if events.is_empty() {
                    return Ok((events, None));
                }
                let d = decide_events(app, &s, &events, action, false, request_id)?;
                Ok((events, Some(d)))
            })
            .await?;
        if let Some(why) = decided.as_ref().and_then(|d| d.refused.clone()) {
            return Err(AppError::Forbidden(why));
        }
        Ok((events, decided))
    }

    /// A page of an owned subscription's feed after `after`.
    pub async fn feed(&self, caller: &Caller, id: Uuid, after: i64, limit: i64) -> AppResult<FeedPage> {
        let sub = self.owned_subscription(caller, id, Facade::Vpr).await?;
        let (events, decided) = self.read_events(caller, &sub, AuditAction::Feed, after, i64::MAX, limit).await?;
        let next_after = events.last().map_or(after, |e| e.number);
        Ok(FeedPage { sub, decided, next_after })
    }
}

/// Refuses a change or a feed read of a subscription held at a peer broker: the peer holds its
/// criteria and events; here it is only passed on.
pub(crate) fn held_here(sub: &Subscription) -> AppResult<()> {
    match &sub.federation {
        Some(PeerLink::AtPeer { peer, .. }) => Err(AppError::Conflict(format!(
            "this subscription is held at peer broker `{peer}`, which pushes its events as they happen: it has no feed here and cannot be changed (delete it and subscribe anew)"
        ))),
        _ => Ok(()),
    }
}

mod changes;
