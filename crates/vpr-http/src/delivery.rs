//! Delivery of subscription events: the fan-out of committed notice changes, and webhook pushes
//! that are decided and audited one by one when they are made, signed (and encrypted to the
//! subscriber's key if it gave one), retried with exponential back-off and jitter, and
//! dead-lettered only after the retry window. Per subscription, events go strictly in order:
//! event N+1 is not sent until event N is acknowledged.
//!
//! Safe with several replicas: fan-out takes a lock; each subscription is delivered under a
//! lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two replicas never push it at once. A
//! replica that dies mid-delivery leaves a lease that expires; the next one resumes from the
//! last acknowledged event, so a receiver may see an event twice (it de-duplicates by event id)
//! but never misses one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;
use vpr_auth::{EncryptionKey, Principal, Scope};
use vpr_domain::subscription::{Payload, Topic};
use vpr_policy::View;
use vpr_store::audit::AuditEntry;
use vpr_store::subscriptions::{Ack, FailedAttempt, Failure, Subscription, SubscriptionEvent};

use crate::disclose::{audit_base, audit_entry, decide_read, AccessRequest, Read, Recipient};
use crate::error::ApiError;
use crate::AppState;

/// Delivery settings, handed in by the binary.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Keep retrying a failing event this long before dead-lettering it.
    pub retry_for: Duration,
    /// First retry delay; doubles with each failure.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// A receiver must answer within this.
    pub timeout: Duration,
    /// Most webhook requests in flight at once.
    pub concurrency: usize,
    /// How long a replica holds a subscription while pushing it.
    pub lease: Duration,
    /// How often to look for work that another replica committed.
    pub poll: Duration,
    /// Longest a subscription may run before it must be renewed.
    pub max_subscription_days: i64,
    /// Demo mode: plain-http and loopback webhook URLs are accepted.
    pub allow_insecure_webhooks: bool,
    /// The shortest heartbeat period a FHIR subscription may ask for.
    pub min_heartbeat: Duration,
    /// Extra trusted root certificates (PEM) for webhook TLS, e.g. a private network's CA.
    pub extra_roots_pem: Vec<Vec<u8>>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(72 * 3600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 128,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(250),
            max_subscription_days: 365,
            allow_insecure_webhooks: false,
            min_heartbeat: Duration::from_secs(10),
            extra_roots_pem: Vec::new(),
        }
    }
}

/// Wake-ups between the request handlers and the delivery tasks of this replica.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    fan_out: Arc<Notify>,
    deliver: Arc<Notify>,
    /// Subscriptions this replica's fan-out just gave events: claimed first, by id. Only a
    /// hint: the claim checks each is due, and the general claim still finds every due one.
    hinted: Arc<std::sync::Mutex<Vec<Uuid>>>,
}

/// Most hints kept; beyond that the general claim finds the rest.
const MAX_HINTS: usize = 100_000;

impl Outbox {
    fn hint(&self, subscriptions: Vec<Uuid>) {
        if let Ok(mut hinted) = self.hinted.lock() {
            let room = MAX_HINTS.saturating_sub(hinted.len());
            hinted.extend(subscriptions.into_iter().take(room));
        }
    }

    /// Up to `n` hinted subscriptions, oldest hints first, without repeats.
    fn take_hints(&self, n: usize) -> Vec<Uuid> {
        let Ok(mut hinted) = self.hinted.lock() else { return Vec::new() };
        let mut taken = Vec::new();
        let mut used = 0;
        for id in hinted.iter() {
            if taken.len() == n {
                break;
            }
            used += 1;
            if !taken.contains(id) {
                taken.push(*id);
            }
        }
        hinted.drain(..used);
        taken
    }

    /// A notice change was committed: fan it out now rather than at the next poll.
    pub fn changed(&self) {
        self.fan_out.notify_one();
    }

    /// Deliveries may be due now (a redelivery was asked for).
    pub fn due(&self) {
        self.deliver.notify_one();
    }
}

/// The wire name of an event kind.
pub fn event_type(kind: &str) -> String {
    format!("notice-{kind}")
}

/// The identity a subscription's deliveries are decided for: its system, as the registry
/// describes it now (a system removed from the registry, or without the `subscriptions` scope,
/// has none, and its deliveries are refused).
pub fn subscriber(state: &AppState, sub: &Subscription) -> Option<Principal> {
    let registry = state.tokens.registry();
    let system = registry.system(&sub.owner_system)?;
    let partner = registry.partner(system.ods_code.as_str())?;
    if partner.ods_code.as_str() != sub.owner_ods || !system.scopes.contains(&Scope::Subscriptions) {
        return None;
    }
    Some(Principal {
        client_id: system.client_id.clone(),
        system_name: system.name.clone(),
        org: partner.ods_code.clone(),
        org_name: partner.name.clone(),
        org_type: partner.org_type,
        scopes: system.scopes.clone(),
        token_id: String::new(),
    })
}

/// Events decided for one recipient, as the wire shows them (webhook bodies and feed items).
#[derive(Debug)]
pub struct Decided {
    /// The audit entry recording the decisions.
    pub audit_id: Uuid,
    /// Why the subscriber itself was refused, if it was (every event is then withheld).
    pub refused: Option<String>,
    /// One body per event, in order.
    pub events: Vec<Value>,
    /// What was shown of each notice: its current version, and the NHS number when it is one
    /// the subscriber holds in its cohort (for FHIR, which must name the patient).
    pub shown: HashMap<Uuid, Shown>,
}

/// What a delivery showed of one notice.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The version shown.
    pub version: i64,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The subject's NHS number, when it is in the subscriber's own cohort.
    pub nhs_in_cohort: Option<String>,
}

/// Decides, minimises and audits `events` for `sub` (on the blocking pool). Each event carries
/// the notice as it stands now, in the view the agreement allows now; an event the agreement
/// does not allow is `withheld` (its number kept, nothing about the notice in it).
pub fn decide_events(
    state: &AppState,
    sub: &Subscription,
    events: &[SubscriptionEvent],
    action: &'static str,
    push: bool,
    request_id: String,
) -> Result<Decided, ApiError> {
    let mut decided = decide_many(state, &[ToDecide { sub, events, request_id }], action, push)?;
    decided.pop().ok_or_else(|| ApiError::Internal("no decision was made".into()))
}

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

/// [`decide_events`] for several subscriptions at once (a delivery round): the notices, what
/// each subscription was given before, its cohort and the subjects' directives are read in a
/// few queries for all of them, just before the decisions, and the audit entries (one per
/// subscription) share commits. Every entry is committed before this returns; one result per
/// subscription, in order.
pub fn decide_many(
    state: &AppState,
    batch: &[ToDecide<'_>],
    action: &'static str,
    push: bool,
) -> Result<Vec<Decided>, ApiError> {
    let now = state.clock.now();
    let principals: Vec<Option<Principal>> = batch.iter().map(|d| subscriber(state, d.sub)).collect();
    // Subscriptions to notices, with a subscriber the registry still knows: decided below.
    let governed: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            principals.get(i).is_some_and(Option::is_some)
                && batch.get(i).is_some_and(|d| d.sub.topic == Topic::Notices)
        })
        .collect();
    // Each subscription's notices, once each, in order.
    let notice_ids: Vec<Vec<Uuid>> = batch
        .iter()
        .map(|d| d.events.iter().map(|e| e.notice_id).collect::<BTreeSet<_>>().into_iter().collect())
        .collect();
    let all_ids: BTreeSet<Uuid> = governed.iter().filter_map(|&i| notice_ids.get(i)).flatten().copied().collect();
    let notices = state.store.current_notices(&all_ids.into_iter().collect::<Vec<_>>())?;
    let nhs_of = |id: &Uuid| {
        notices
            .get(id)
            .and_then(|(n, _)| n.content.subject.person.as_ref())
            .and_then(|p| p.nhs_number.as_ref())
            .map(|n| n.as_str().to_owned())
    };
    let vault = state.store.vault();
    let mut cohort_asked = Vec::new();
    let mut received_asked = Vec::new();
    let mut by_purpose: HashMap<&str, BTreeSet<Uuid>> = HashMap::new();
    for (d, ids) in governed.iter().filter_map(|&i| batch.get(i).zip(notice_ids.get(i))) {
        if d.sub.criteria.cohort {
            for nhs in ids.iter().filter_map(nhs_of) {
                cohort_asked.push((d.sub.id, vault.blind_index(vpr_domain::notice::MatchKind::NhsNumber, &nhs)));
            }
        }
        by_purpose.entry(d.sub.purpose.as_str()).or_default().extend(ids.iter().filter(|id| notices.contains_key(id)));
        received_asked.push((d.sub.id, ids.iter().map(ToString::to_string).collect::<Vec<_>>()));
    }
    let in_cohort = state.store.in_cohorts(&cohort_asked)?;
    let mut received = state.store.received_many(&received_asked)?;
    let mut directives = HashMap::new();
    for (purpose, ids) in by_purpose {
        let ids: Vec<Uuid> = ids.into_iter().collect();
        directives.insert(purpose, state.store.directive_states(&ids, purpose, now.date_naive())?);
    }
    let mut decided = Vec::with_capacity(batch.len());
    let mut entries = Vec::with_capacity(batch.len());
    for ((d, principal), ids) in batch.iter().zip(&principals).zip(&notice_ids) {
        let sub = d.sub;
        let Some(principal) = principal else {
            let entry = AuditEntry {
                request_id: d.request_id.clone(),
                actor_user: Some(format!("subscription:{}", sub.id)),
                actor_role: Some(sub.role.clone()),
                purpose: Some(sub.purpose.clone()),
                context_ref: sub.context_ref.clone(),
                decision: "refused".into(),
                ..audit_entry(state, &sub.owner_ods, "unknown", &sub.owner_system, action, if push { 0 } else { 403 })
            };
            decided.push(Decided {
                audit_id: entry.id,
                refused: Some(
                    "the subscribing system is no longer in the registry with the `subscriptions` scope".to_owned(),
                ),
                events: d.events.iter().map(withheld).collect(),
                shown: HashMap::new(),
            });
            entries.push(entry);
            continue;
        };
        if sub.topic == Topic::Disclosures {
            // Audited as it is decided (an access-log push names no notice).
            decided.push(disclosures(state, principal, sub, d.events, action, push, d.request_id.clone())?);
            continue;
        }
        let mut candidates = Vec::new();
        let mut subject_refs = BTreeSet::new();
        let mut shown = HashMap::new();
        for id in ids {
            let Some((n, blind)) = notices.get(id) else { continue };
            subject_refs.extend(blind.iter().map(|b| format!("notice-subject:{b}")));
            let nhs_in_cohort = nhs_of(id).filter(|nhs| {
                sub.criteria.cohort
                    && in_cohort.contains(&(sub.id, vault.blind_index(vpr_domain::notice::MatchKind::NhsNumber, nhs)))
            });
            shown.insert(n.id, Shown { version: n.version.version, updated_at: n.version.at, nhs_in_cohort });
            candidates.push((n.clone(), vec![]));
        }
        let access = AccessRequest {
            purpose: sub.purpose.clone(),
            user_id: format!("subscription:{}", sub.id),
            role: sub.role.clone(),
            context_ref: sub.context_ref.clone(),
            justification: None,
        };
        let max_view = match sub.payload {
            Payload::IdOnly => View::Existence,
            Payload::View => View::Full,
        };
        let recipient = Recipient {
            subscription_id: sub.id,
            received: received.remove(&sub.id).unwrap_or_default(),
            max_view,
            push,
            request_id: Some(d.request_id.clone()),
        };
        let read = Read {
            recipient: Some(recipient),
            ..Read::new(action, subject_refs.into_iter().collect(), candidates, 403)
        };
        let none = HashMap::new();
        let states = directives.get(sub.purpose.as_str()).unwrap_or(&none);
        let (disclosure, entry) = decide_read(state, principal, &access, read, now, states);
        entries.extend(entry);
        let by_id: HashMap<String, Value> = disclosure
            .results
            .into_iter()
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_owned).map(|id| (id, v)))
            .collect();
        let bodies = d
            .events
            .iter()
            .map(|e| match by_id.get(&e.notice_id.to_string()) {
                Some(view) => event_body(e, [("matched_criteria", json!(e.matched)), ("notice", view.clone())]),
                None => withheld(e),
            })
            .collect();
        decided.push(Decided { audit_id: disclosure.audit_id, refused: disclosure.refused, events: bodies, shown });
    }
    // Guarantee 1: nothing is disclosed before its audit entry is committed.
    state.store.append_audits(entries).map_err(ApiError::audit_write_failed)?;
    Ok(decided)
}

/// Disclosures of the subscriber's own notices: its access log, pushed. The publisher is the
/// controller and sees its access log without a policy decision; the push is audited (as
/// `access-log-push`, naming no notice, so it does not itself become a disclosure to report).
fn disclosures(
    state: &AppState,
    principal: &Principal,
    sub: &Subscription,
    events: &[SubscriptionEvent],
    action: &'static str,
    push: bool,
    request_id: String,
) -> Result<Decided, ApiError> {
    let ids: Vec<Uuid> = events.iter().filter_map(|e| e.audit_id).collect();
    let entries: HashMap<Uuid, vpr_store::audit::StoredAuditEntry> =
        state.store.audit_entries_by_id(&ids)?.into_iter().map(|e| (e.entry.id, e)).collect();
    let (first, last) = (events.first().map_or(0, |e| e.number), events.last().map_or(0, |e| e.number));
    let entry = AuditEntry {
        request_id,
        actor_user: Some(format!("subscription:{}", sub.id)),
        actor_role: Some(sub.role.clone()),
        purpose: Some(sub.purpose.clone()),
        context_ref: Some(format!("subscription={};events={first}-{last}", sub.id)),
        decision: "permit".into(),
        ..audit_base(
            state,
            principal,
            &format!("access-log-{}", if push { "push" } else { action }),
            if push { 0 } else { 200 },
        )
    };
    let audit_id = entry.id;
    state.store.append_audit(&entry).map_err(ApiError::audit_write_failed)?;
    let registry = state.tokens.registry();
    let bodies = events
        .iter()
        .map(|e| {
            let Some(stored) = e.audit_id.and_then(|id| entries.get(&id)) else { return withheld(e) };
            let disclosure = match sub.payload {
                Payload::IdOnly => json!({"audit_id": stored.entry.id}),
                Payload::View => {
                    let mut d = crate::handlers::access_log::who_and_why(registry, stored);
                    let this = stored.entry.notices.iter().find(|n| n.id == e.notice_id.to_string());
                    if let (Some(map), Some(n)) = (d.as_object_mut(), this) {
                        map.insert("audit_id".into(), json!(stored.entry.id));
                        map.insert("decision".into(), json!(n.decision));
                        map.insert("view".into(), json!(n.view));
                        map.insert("restricted".into(), json!(n.restricted));
                        map.insert("lawful_basis".into(), json!(n.lawful_basis));
                        map.insert("clauses".into(), json!(n.clauses));
                    }
                    d
                }
            };
            event_body(e, [("disclosure", disclosure)])
        })
        .collect();
    Ok(Decided { audit_id, refused: None, events: bodies, shown: HashMap::new() })
}

/// An event as the wire shows it, with what it carries (`notice`, `disclosure`).
fn event_body<const N: usize>(e: &SubscriptionEvent, carried: [(&str, Value); N]) -> Value {
    let mut body = json!({
        "event_id": e.event_id,
        "event_number": e.number,
        "type": event_type(&e.kind),
        "occurred_at": e.occurred_at,
        "notice_id": e.notice_id,
        "notice_version": e.notice_version,
    });
    if let Some(map) = body.as_object_mut() {
        map.extend(carried.into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    body
}

/// An event the subscriber may not be told about: its number and id only.
fn withheld(e: &SubscriptionEvent) -> Value {
    json!({"event_id": e.event_id, "event_number": e.number, "type": "withheld", "occurred_at": e.occurred_at})
}

/// The signed (and, if the subscriber gave a key, encrypted) body of one webhook push.
pub fn webhook_body(state: &AppState, sub: &Subscription, event: &Value, audit_id: Uuid) -> Result<String, String> {
    let settings = state.tokens.settings();
    let claims = json!({
        "iss": settings.issuer,
        "aud": sub.owner_system,
        "sub": sub.id,
        "iat": state.clock.now().timestamp(),
        "jti": event.get("event_id"),
        "subscription": {"id": sub.id, "tag": sub.tag},
        "audit_id": audit_id,
        "event": event,
    });
    let jws = state.tokens.keys().sign_event(&claims).map_err(|e| e.to_string())?;
    match &sub.encryption_jwk {
        None => Ok(jws),
        Some(text) => {
            let map: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let key = EncryptionKey::from_jwk(&map)?;
            key.encrypt(&jws).map_err(|e| e.to_string())
        }
    }
}

/// The delay before retry number `attempts` (1 = the first retry): exponential, capped, with
/// jitter (between half and all of it) so receivers coming back are not stampeded.
pub fn backoff(settings: &DeliverySettings, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = settings.initial_backoff.saturating_mul(2u32.saturating_pow(exp)).min(settings.max_backoff);
    let half = full / 2;
    half + full.mul_f64(rand::random::<f64>() * 0.5)
}

/// Fans committed notice changes out to subscriptions: on a wake-up from this replica's
/// handlers, or at the poll interval for changes other replicas committed. Also expires
/// subscriptions past their date.
pub async fn fan_out(state: AppState) {
    let settings = state.delivery.clone();
    let mut last_expiry = std::time::Instant::now();
    loop {
        tokio::select! {
            () = state.outbox.fan_out.notified() => {}
            () = tokio::time::sleep(settings.poll) => {}
        }
        let st = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut total = 0;
            loop {
                let done = st.store.fan_out(500, st.clock.now())?;
                total += done.deliveries;
                st.outbox.hint(done.subscriptions);
                if done.events == 0 {
                    break;
                }
            }
            // Disclosures follow the sealed log (sealed about every second).
            total += st.store.fan_out_disclosures(2000, st.clock.now())?;
            Ok::<_, vpr_store::StoreError>(total)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                state.metrics.events_fanned_out.inc_by(u64::try_from(n).unwrap_or_default());
                state.outbox.due();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "fan-out failed; will retry"),
            Err(e) => tracing::error!(error = %e, "fan-out panicked"),
        }
        if last_expiry.elapsed() >= Duration::from_secs(60) {
            last_expiry = std::time::Instant::now();
            let st = state.clone();
            if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || st.store.expire_subscriptions(st.clock.now())).await
            {
                if n > 0 {
                    tracing::info!(expired = n, "subscriptions past their expiry");
                }
            }
        }
    }
}

/// Builds the HTTP client for webhooks: no redirects followed, a timeout, and any extra roots.
pub fn webhook_client(settings: &DeliverySettings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("vpr-broker/", env!("CARGO_PKG_VERSION")));
    for pem in &settings.extra_roots_pem {
        let cert =
            reqwest::Certificate::from_pem(pem).map_err(|e| format!("a webhook CA certificate is invalid: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| format!("cannot build the webhook client: {e}"))
}

/// Pushes due webhook events, per subscription in order, until the process ends.
pub async fn deliver(state: AppState, client: reqwest::Client) {
    let settings = state.delivery.clone();
    let owner = format!("replica-{}", Uuid::new_v4());
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut last_heartbeats = std::time::Instant::now();
    loop {
        tokio::select! {
            () = state.outbox.deliver.notified() => {}
            () = tokio::time::sleep(settings.poll) => {}
        }
        if last_heartbeats.elapsed() >= Duration::from_secs(1) {
            last_heartbeats = std::time::Instant::now();
            let (st, c) = (state.clone(), client.clone());
            tokio::spawn(async move { heartbeats(&st, &c).await });
        }
        // Claim in batches, whose first rounds are prepared together: wait for half the permits
        // unless nothing is in flight.
        let batch = (settings.concurrency / 2).max(1);
        loop {
            let free = permits.available_permits();
            if free == 0 || (free < batch && free < settings.concurrency.max(1)) {
                break;
            }
            let st = state.clone();
            let o = owner.clone();
            let lease = chrono::Duration::from_std(settings.lease).unwrap_or_default();
            let hinted = state.outbox.take_hints(free);
            let claimed = tokio::task::spawn_blocking(move || {
                let now = st.clock.now();
                let mut subs = st.store.claim_due_among(&o, &hinted, now, now + lease)?;
                // With permits to spare, look through every subscription too: retries now due,
                // redeliveries, and events other replicas fanned out.
                if subs.len() < free {
                    let more = i64::try_from(free - subs.len()).unwrap_or(1);
                    subs.extend(st.store.claim_due(&o, more, now, now + lease)?);
                }
                Ok::<_, vpr_store::StoreError>(subs)
            })
            .await;
            let subs = match claimed {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "claiming due deliveries failed; will retry");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming due deliveries panicked");
                    break;
                }
            };
            if subs.is_empty() {
                break;
            }
            let (st, claimed) = (state.clone(), subs.clone());
            let rounds: Vec<Option<FirstRound>> =
                match tokio::task::spawn_blocking(move || first_rounds(&st, &claimed)).await {
                    Ok(Ok(rounds)) => rounds.into_iter().map(Some).collect(),
                    Ok(Err(e)) => {
                        // Each subscription then loads its own events.
                        tracing::warn!(error = %e, "loading due events failed");
                        subs.iter().map(|_| None).collect()
                    }
                    Err(_) => subs.iter().map(|_| None).collect(),
                };
            for (sub, round) in subs.into_iter().zip(rounds) {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (st, c, o) = (state.clone(), client.clone(), owner.clone());
                tokio::spawn(async move {
                    push_subscription(&st, &c, &o, sub, round).await;
                    drop(permit);
                    // A permit is free: claim more now rather than at the next poll.
                    st.outbox.due();
                });
            }
        }
    }
}

/// Sends the heartbeats due to quiet FHIR subscriptions (one replica each: a heartbeat is
/// claimed before it is sent). A heartbeat discloses nothing, so it is not audited; a failed one
/// is not retried (the next is due a period later).
async fn heartbeats(state: &AppState, client: &reqwest::Client) {
    let st = state.clone();
    let due = match tokio::task::spawn_blocking(move || st.store.due_heartbeats(st.clock.now())).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return tracing::warn!(error = %e, "listing due heartbeats failed"),
        Err(_) => return,
    };
    for sub in due {
        let st = state.clone();
        let (id, seen) = (sub.id, sub.last_heartbeat_at);
        let claimed = tokio::task::spawn_blocking(move || st.store.claim_heartbeat(id, seen, st.clock.now())).await;
        if !matches!(claimed, Ok(Ok(true))) {
            continue;
        }
        let body = crate::fhir::subscription::heartbeat(state, &sub).to_string();
        let signature = state.tokens.keys().sign_detached(body.as_bytes()).ok();
        let out = Outgoing { body, content_type: crate::fhir::FHIR_JSON, signature };
        if let Err(why) = send(state, client, &sub, None, out).await {
            tracing::info!(subscription = %sub.id, error = %why, "heartbeat not delivered");
        }
    }
}

/// Events loaded per round while pushing one subscription.
const BATCH: i64 = 50;

/// Acknowledgements being recorded while the next events are pushed: the next push need not
/// wait for the last one's commit. After a crash the cursor may lag a little, so a receiver may
/// get an event again (it de-duplicates by id); order and completeness are unaffected.
#[derive(Default)]
struct Acks {
    in_flight: Vec<tokio::task::JoinHandle<Result<bool, vpr_store::StoreError>>>,
}

impl Acks {
    fn record(&mut self, state: &AppState, ack: Ack) {
        let st = state.clone();
        self.in_flight.push(tokio::task::spawn_blocking(move || st.store.ack_delivery(ack)));
    }

    /// Whether an acknowledgement already recorded found the lease gone.
    async fn lease_lost(&mut self) -> bool {
        let mut lost = false;
        let mut pending = Vec::new();
        for handle in self.in_flight.drain(..) {
            if handle.is_finished() {
                lost |= !matches!(handle.await, Ok(Ok(true)));
            } else {
                pending.push(handle);
            }
        }
        self.in_flight = pending;
        lost
    }

    /// Waits for every acknowledgement; true if all held the lease.
    async fn settle(&mut self) -> bool {
        let mut ok = true;
        for handle in self.in_flight.drain(..) {
            ok &= matches!(handle.await, Ok(Ok(true)));
        }
        ok
    }
}

/// Pushes one leased subscription's due events in order, until it is caught up, a push fails,
/// or the lease is lost.
async fn push_subscription(
    state: &AppState,
    client: &reqwest::Client,
    owner: &str,
    mut sub: Subscription,
    mut first: Option<FirstRound>,
) {
    let sid = sub.id;
    let mut acks = Acks::default();
    // The claimed row is current; later rounds reload it (its settings or status may change).
    let mut reload = false;
    loop {
        let (current, events, mut ready) = if let Some(round) = first.take() {
            (None, round.events, Some(round.bodies))
        } else {
            let st = state.clone();
            let after = sub.delivery.delivered_upto;
            let loaded = tokio::task::spawn_blocking(move || {
                let current = if reload { st.store.subscription(sid)? } else { None };
                let events = st.store.events_after(sid, after, BATCH)?;
                Ok::<_, vpr_store::StoreError>((current, events))
            })
            .await;
            match loaded {
                Ok(Ok((current, events))) => (current, events, None),
                Ok(Err(e)) => {
                    tracing::warn!(subscription = %sid, error = %e, "loading events failed; will retry");
                    acks.settle().await;
                    return release(state, sid, owner).await;
                }
                Err(_) => {
                    acks.settle().await;
                    return release(state, sid, owner).await;
                }
            }
        };
        if reload {
            match current {
                Some(c) if c.status.receives() => {
                    let upto = sub.delivery.delivered_upto;
                    sub = c;
                    sub.delivery.delivered_upto = upto;
                }
                _ => {
                    acks.settle().await;
                    return release(state, sid, owner).await;
                }
            }
        }
        reload = true;
        if events.is_empty() {
            acks.settle().await;
            return release(state, sid, owner).await;
        }
        // A short round is all that is due: its last acknowledgement gives the lease back too.
        let last =
            if i64::try_from(events.len()).unwrap_or(BATCH) < BATCH { events.last().map(|e| e.number) } else { None };
        for run in events.chunks(run_len(&sub)) {
            let prepared = match ready.take() {
                Some(bodies) => bodies,
                None => prepare(state, &sub, run).await,
            };
            let bodies = match prepared {
                Ok(b) => b,
                Err(why) => {
                    acks.settle().await;
                    let head = run.first().map_or(0, |e| e.number);
                    return failed(state, &sub, owner, head, why).await;
                }
            };
            for (event, body) in run.iter().zip(bodies) {
                if acks.lease_lost().await {
                    // Another replica has the subscription now: stop here.
                    acks.settle().await;
                    return;
                }
                if let Err(why) = send(state, client, &sub, Some(event), body).await {
                    acks.settle().await;
                    return failed(state, &sub, owner, event.number, why).await;
                }
                state.metrics.deliveries.with_label_values(&["delivered"]).inc();
                let latency = (state.clock.now() - event.occurred_at).num_milliseconds();
                state.metrics.delivery_latency.observe(latency.max(0) as f64 / 1000.0);
                sub.delivery.delivered_upto = event.number;
                sub.delivery.attempts = 0;
                let now = state.clock.now();
                let release = last == Some(event.number);
                let lease = chrono::Duration::from_std(state.delivery.lease).unwrap_or_default();
                let ack = Ack {
                    subscription: sid,
                    owner: owner.to_owned(),
                    number: event.number,
                    at: now,
                    lease_until: now + lease,
                    release,
                };
                if release {
                    // Earlier acknowledgements first: the lease goes back with the last.
                    if acks.settle().await {
                        acks.record(state, ack);
                        acks.settle().await;
                    }
                    return;
                }
                acks.record(state, ack);
            }
        }
    }
}

/// The innermost cause of an HTTP client error (e.g. a refused connection or a certificate that
/// does not verify), for the subscription's `last_error`. URLs are not included.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() {
        "unknown".into()
    } else {
        text
    }
}

/// Records a failed push: a retry with back-off, or once the retry window has passed, a dead
/// letter and a suspended subscription.
async fn failed(state: &AppState, sub: &Subscription, owner: &str, number: i64, why: String) {
    state.metrics.deliveries.with_label_values(&["failed"]).inc();
    let settings = &state.delivery;
    let st = state.clone();
    let (sid, o) = (sub.id, owner.to_owned());
    let attempts = sub.delivery.attempts.saturating_add(1);
    let wait = chrono::Duration::from_std(backoff(settings, attempts)).unwrap_or_default();
    let give_up_after = chrono::Duration::from_std(settings.retry_for).unwrap_or_default();
    let error = why.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let now = st.clock.now();
        let attempt = FailedAttempt { number, error: &error, at: now, retry_at: now + wait, give_up_after };
        st.store.fail_delivery(sid, &o, attempt)
    })
    .await;
    match outcome {
        Ok(Ok(Failure::DeadLettered)) => {
            state.metrics.deliveries.with_label_values(&["dead-lettered"]).inc();
            tracing::warn!(subscription = %sid, event = number, error = %why, "delivery dead-lettered: retries ran out; the subscription is suspended until redelivery is asked for");
        }
        Ok(Ok(Failure::Retry(at))) => {
            tracing::info!(subscription = %sid, event = number, error = %why, retry_at = %at, "delivery failed; will retry");
        }
        Ok(Ok(Failure::LeaseLost)) => {}
        Ok(Err(e)) => tracing::warn!(subscription = %sid, error = %e, "recording a failed delivery failed"),
        Err(e) => tracing::error!(subscription = %sid, error = %e, "recording a failed delivery panicked"),
    }
}

async fn release(state: &AppState, sid: Uuid, owner: &str) {
    let st = state.clone();
    let o = owner.to_owned();
    let _ = tokio::task::spawn_blocking(move || st.store.release_lease(sid, &o)).await;
}

/// Events decided together, in one audit entry, when a subscription has several due: under load
/// a backlog drains without one audit commit per event. A subscription retrying its head event
/// decides that event alone.
const DECIDE_AT_ONCE: usize = 16;

/// How many of a subscription's due events are decided together.
fn run_len(sub: &Subscription) -> usize {
    if sub.delivery.attempts > 0 {
        1
    } else {
        DECIDE_AT_ONCE
    }
}

/// A claimed subscription's first round: its due events (at most [`BATCH`]) and its first run
/// of them, decided, audited and rendered together with the other subscriptions claimed with it.
struct FirstRound {
    events: Vec<SubscriptionEvent>,
    bodies: Result<Vec<Outgoing>, String>,
}

/// Loads and prepares the first round of each claimed subscription (on the blocking pool): a
/// fan-out to a thousand subscribers costs a few queries and shared audit commits per claim,
/// not several queries per subscriber. One round per subscription, in order.
fn first_rounds(state: &AppState, subs: &[Subscription]) -> Result<Vec<FirstRound>, vpr_store::StoreError> {
    let ids: Vec<Uuid> = subs.iter().map(|s| s.id).collect();
    let mut due = state.store.next_events_many(&ids, BATCH)?;
    let loaded: Vec<Vec<SubscriptionEvent>> = subs.iter().map(|s| due.remove(&s.id).unwrap_or_default()).collect();
    let runs: Vec<(Subscription, Vec<SubscriptionEvent>)> = subs
        .iter()
        .zip(&loaded)
        .filter(|(_, events)| !events.is_empty())
        .map(|(sub, events)| (sub.clone(), events.iter().take(run_len(sub)).cloned().collect()))
        .collect();
    let mut prepared = prepare_many(state, &runs).into_iter();
    Ok(loaded
        .into_iter()
        .map(|events| {
            let bodies = if events.is_empty() {
                Ok(Vec::new())
            } else {
                prepared.next().unwrap_or_else(|| Err("not sent: nothing was prepared".into()))
            };
            FirstRound { events, bodies }
        })
        .collect())
}

/// One push, ready to send.
#[derive(Debug)]
pub struct Outgoing {
    /// The body.
    body: String,
    /// Its media type.
    content_type: &'static str,
    /// A detached JWS over the body (FHIR notifications, whose body must stay plain FHIR).
    signature: Option<String>,
}

/// Decides and audits a run of a subscription's events (committed before any is sent), then
/// renders each: a signed (and optionally encrypted) event, or a FHIR notification Bundle with a
/// detached signature.
async fn prepare(state: &AppState, sub: &Subscription, events: &[SubscriptionEvent]) -> Result<Vec<Outgoing>, String> {
    let runs = vec![(sub.clone(), events.to_vec())];
    let st = state.clone();
    let mut prepared =
        tokio::task::spawn_blocking(move || prepare_many(&st, &runs)).await.map_err(|e| format!("not sent: {e}"))?;
    prepared.pop().unwrap_or_else(|| Err("not sent: nothing was prepared".into()))
}

/// [`prepare`] for a run of each of several subscriptions (on the blocking pool): decided and
/// audited together, then rendered. One result per run, in order.
fn prepare_many(
    state: &AppState,
    runs: &[(Subscription, Vec<SubscriptionEvent>)],
) -> Vec<Result<Vec<Outgoing>, String>> {
    let batch: Vec<ToDecide<'_>> = runs
        .iter()
        .map(|(sub, events)| {
            let (first, last) = (events.first().map_or(0, |e| e.number), events.last().map_or(0, |e| e.number));
            let attempt = sub.delivery.attempts.saturating_add(1);
            ToDecide { sub, events, request_id: format!("delivery:{}:{first}-{last}:{attempt}", sub.id) }
        })
        .collect();
    let decided = match decide_many(state, &batch, "deliver", true) {
        Ok(d) => d,
        Err(err) => return runs.iter().map(|_| Err(format!("not sent: {err}"))).collect(),
    };
    runs.iter().zip(&decided).map(|((sub, events), decided)| render(state, sub, events, decided)).collect()
}

/// Renders decided events for the wire.
fn render(
    state: &AppState,
    sub: &Subscription,
    events: &[SubscriptionEvent],
    decided: &Decided,
) -> Result<Vec<Outgoing>, String> {
    events
        .iter()
        .zip(&decided.events)
        .map(|(event, body)| {
            if sub.channel == "fhir" {
                let bundle = crate::fhir::subscription::pushed(state, sub, decided, event, body).to_string();
                let signature =
                    state.tokens.keys().sign_detached(bundle.as_bytes()).map_err(|err| format!("not sent: {err}"))?;
                Ok(Outgoing { body: bundle, content_type: crate::fhir::FHIR_JSON, signature: Some(signature) })
            } else {
                let body =
                    webhook_body(state, sub, body, decided.audit_id).map_err(|err| format!("not sent: {err}"))?;
                Ok(Outgoing { body, content_type: "application/jose", signature: None })
            }
        })
        .collect()
}

/// Sends one prepared event. Any 2xx acknowledges it.
async fn send(
    state: &AppState,
    client: &reqwest::Client,
    sub: &Subscription,
    event: Option<&SubscriptionEvent>,
    out: Outgoing,
) -> Result<(), String> {
    let Some(url) = sub.endpoint.as_deref() else { return Err("the subscription has no webhook URL".into()) };
    let attempt = sub.delivery.attempts.saturating_add(1);
    let sent_at: DateTime<Utc> = state.clock.now();
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, out.content_type)
        .header("VPR-Subscription-Id", sub.id.to_string())
        .header("VPR-Timestamp", sent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if let Some(event) = event {
        request = request
            .header("VPR-Event-Id", event.event_id.to_string())
            .header("VPR-Event-Number", event.number.to_string())
            .header("VPR-Delivery-Attempt", attempt.to_string());
    }
    if let Some(signature) = out.signature {
        request = request.header("VPR-JWS", signature);
    }
    let response = request.body(out.body).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {} s", state.delivery.timeout.as_secs_f64())
        } else if e.is_connect() {
            format!("could not connect to the receiver: {}", root_cause(&e))
        } else {
            format!("request failed: {}", root_cause(&e))
        }
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!("the receiver answered {status}: redirects are not followed"))
    } else {
        Err(format!("the receiver answered {status}"))
    }
}
