//! The delivery worker: claims due subscriptions, decides and audits their events (committed
//! before any is sent), renders each — a signed (and, if the subscriber gave a key, encrypted)
//! VPR event, or a FHIR notification Bundle with a detached signature — and pushes them in
//! order, retrying with back-off, and sends FHIR heartbeats. Per subscription, event N+1 is not
//! sent until event N is acknowledged.
//!
//! Safe with several replicas: each subscription is pushed under a lease (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL), so two replicas never push it at once. A replica that dies
//! mid-delivery leaves a lease that expires; the next one resumes from the last acknowledged
//! event, so a receiver may see an event twice (it de-duplicates by event id) but never misses one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use uuid::Uuid;
use vpr_domain::audit::AuditAction;
use vpr_store::subscriptions::{Ack, FailedAttempt, Failure, Subscription, SubscriptionEvent};

use super::backoff;
use super::decide::{decide_many, ToDecide};
use crate::error::AppResult;
use crate::render::event::Decided;
use crate::render::fhir;
use crate::render::webhook::webhook_body;
use crate::stop::Stop;
use crate::App;

/// Pushes due webhook events until told to stop.
pub async fn deliver(app: App, client: reqwest::Client, mut stop: Stop) {
    let settings = app.delivery.clone();
    let owner = format!("replica-{}", Uuid::new_v4());
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut last_heartbeats = std::time::Instant::now();
    loop {
        tokio::select! {
            () = app.outbox.deliver.notified() => {}
            () = tokio::time::sleep(settings.poll) => {}
            () = stop.stopped() => return,
        }
        if last_heartbeats.elapsed() >= Duration::from_secs(1) {
            last_heartbeats = std::time::Instant::now();
            let (a, c) = (app.clone(), client.clone());
            tokio::spawn(async move { heartbeats(&a, &c).await });
        }
        // Claim in batches, whose first rounds are prepared together: wait for half the permits
        // unless nothing is in flight.
        let batch = (settings.concurrency / 2).max(1);
        loop {
            let free = permits.available_permits();
            if free == 0 || (free < batch && free < settings.concurrency.max(1)) {
                break;
            }
            let subs = claim(&app, &owner, free).await;
            if subs.is_empty() {
                break;
            }
            let rounds = first_rounds_of(&app, &subs).await;
            for (sub, round) in subs.into_iter().zip(rounds) {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (a, c, o) = (app.clone(), client.clone(), owner.clone());
                tokio::spawn(async move {
                    push_subscription(&a, &c, &o, sub, round).await;
                    drop(permit);
                    // A permit is free: claim more now rather than at the next poll.
                    a.outbox.due();
                });
            }
        }
    }
}

/// Claims up to `free` due subscriptions: the ones this replica's fan-out hinted first, then,
/// with permits to spare, any due (retries now due, redeliveries, events other replicas fanned
/// out). A failed claim is logged and counted; the next wake-up tries again.
async fn claim(app: &App, owner: &str, free: usize) -> Vec<Subscription> {
    let o = owner.to_owned();
    let lease = chrono::Duration::from_std(app.delivery.lease).unwrap_or_default();
    let hinted = app.outbox.take_hints(free);
    let claimed = app
        .blocking(move |app| {
            let now = app.clock.now();
            let mut subs = app.store.claim_due_among(&o, &hinted, now, now + lease)?;
            if subs.len() < free {
                let more = i64::try_from(free - subs.len()).unwrap_or(1);
                subs.extend(app.store.claim_due(&o, more, now, now + lease)?);
            }
            Ok(subs)
        })
        .await;
    claimed.unwrap_or_else(|e| {
        app.metrics.task_failures.with_label_values(&["deliver"]).inc();
        tracing::warn!(error = %e, "claiming due deliveries failed; will retry");
        Vec::new()
    })
}

/// The claimed subscriptions' first rounds, prepared together; if they cannot be, each
/// subscription loads its own.
async fn first_rounds_of(app: &App, subs: &[Subscription]) -> Vec<Option<FirstRound>> {
    let claimed = subs.to_vec();
    match app.blocking(move |app| first_rounds(app, &claimed)).await {
        Ok(rounds) => rounds.into_iter().map(Some).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "loading due events failed");
            subs.iter().map(|_| None).collect()
        }
    }
}

/// Sends the heartbeats due to quiet FHIR subscriptions (one replica each: a heartbeat is
/// claimed before it is sent). A heartbeat discloses nothing, so it is not audited; a failed one
/// is not retried (the next is due a period later).
async fn heartbeats(app: &App, client: &reqwest::Client) {
    let due = match app.blocking(|app| Ok(app.store.due_heartbeats(app.clock.now())?)).await {
        Ok(d) => d,
        Err(e) => return tracing::warn!(error = %e, "listing due heartbeats failed"),
    };
    for sub in due {
        let (id, seen) = (sub.id, sub.last_heartbeat_at);
        let claimed = app.blocking(move |app| Ok(app.store.claim_heartbeat(id, seen, app.clock.now())?)).await;
        if !matches!(claimed, Ok(true)) {
            continue;
        }
        let body = fhir::subscription::heartbeat(app, &sub).to_string();
        let signature = app.tokens.keys().sign_detached(body.as_bytes()).ok();
        let out = Outgoing { body, content_type: fhir::FHIR_JSON, signature };
        if let Err(not) = send(app, client, &sub, None, out).await {
            tracing::info!(subscription = %sub.id, error = %not.why, "heartbeat not delivered");
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
    fn record(&mut self, app: &App, ack: Ack) {
        let a = app.clone();
        self.in_flight.push(tokio::task::spawn_blocking(move || a.store.ack_delivery(ack)));
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
    app: &App,
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
        let round = match first.take() {
            Some(r) => Some(Round { events: r.events, ready: Some(r.bodies) }),
            None => load_round(app, &mut sub, reload).await,
        };
        reload = true;
        let Some(round) = round.filter(|r| !r.events.is_empty()) else {
            acks.settle().await;
            return release(app, sid, owner).await;
        };
        if push_round(app, client, owner, &mut sub, round, &mut acks).await == Pushed::Stopped {
            return;
        }
    }
}

/// A round of a subscription's due events, maybe already prepared.
struct Round {
    events: Vec<SubscriptionEvent>,
    ready: Option<Result<Vec<Outgoing>, String>>,
}

/// Loads the next round; `None` if it cannot be loaded or the subscription is no longer
/// delivered (the lease is then given back).
async fn load_round(app: &App, sub: &mut Subscription, reload: bool) -> Option<Round> {
    let (sid, after) = (sub.id, sub.delivery.delivered_upto);
    let loaded = app
        .blocking(move |app| {
            let current = if reload { app.store.subscription(sid)? } else { None };
            Ok((current, app.store.events_after(sid, after, BATCH)?))
        })
        .await;
    let (current, events) = match loaded {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(subscription = %sid, error = %e, "loading events failed; will retry");
            return None;
        }
    };
    if reload {
        let c = current.filter(|c| c.status.receives())?;
        let upto = sub.delivery.delivered_upto;
        *sub = c;
        sub.delivery.delivered_upto = upto;
    }
    Some(Round { events, ready: None })
}

/// How a round ended.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// Every event was acknowledged and more may be due.
    More,
    /// The subscription is done for now (caught up, failed or taken by another replica).
    Stopped,
}

/// Pushes a round, run by run: each run decided and audited together, then sent in order.
async fn push_round(
    app: &App,
    client: &reqwest::Client,
    owner: &str,
    sub: &mut Subscription,
    mut round: Round,
    acks: &mut Acks,
) -> Pushed {
    let events = &round.events;
    // A short round is all that is due: its last acknowledgement gives the lease back too.
    let last =
        if i64::try_from(events.len()).unwrap_or(BATCH) < BATCH { events.last().map(|e| e.number) } else { None };
    for run in events.chunks(run_len(sub)) {
        let prepared = match round.ready.take() {
            Some(bodies) => bodies,
            None => prepare(app, sub, run).await,
        };
        let bodies = match prepared {
            Ok(b) => b,
            Err(why) => {
                acks.settle().await;
                failed(app, sub, owner, run.first().map_or(0, |e| e.number), why).await;
                return Pushed::Stopped;
            }
        };
        for (event, body) in run.iter().zip(bodies) {
            if acks.lease_lost().await {
                // Another replica has the subscription now: stop here.
                acks.settle().await;
                return Pushed::Stopped;
            }
            if let Err(not) = send(app, client, sub, Some(event), body).await {
                acks.settle().await;
                if not.gone && app.end_gone(sub).await {
                    release(app, sub.id, owner).await;
                    return Pushed::Stopped;
                }
                failed(app, sub, owner, event.number, not.why).await;
                return Pushed::Stopped;
            }
            if acknowledge(app, owner, sub, event, last == Some(event.number), acks).await {
                return Pushed::Stopped;
            }
        }
    }
    Pushed::More
}

/// Records a delivered event; `release` gives the lease back with it (the round's last).
/// Returns whether the subscription is done for now.
async fn acknowledge(
    app: &App,
    owner: &str,
    sub: &mut Subscription,
    event: &SubscriptionEvent,
    release: bool,
    acks: &mut Acks,
) -> bool {
    app.metrics.deliveries.with_label_values(&["delivered"]).inc();
    let latency = (app.clock.now() - event.occurred_at).num_milliseconds();
    app.metrics.delivery_latency.observe(latency.max(0) as f64 / 1000.0);
    sub.delivery.delivered_upto = event.number;
    sub.delivery.attempts = 0;
    let now = app.clock.now();
    let lease = chrono::Duration::from_std(app.delivery.lease).unwrap_or_default();
    let ack = Ack {
        subscription: sub.id,
        owner: owner.to_owned(),
        number: event.number,
        at: now,
        lease_until: now + lease,
        release,
    };
    if release {
        // Earlier acknowledgements first: the lease goes back with the last.
        if acks.settle().await {
            acks.record(app, ack);
            acks.settle().await;
        }
        return true;
    }
    acks.record(app, ack);
    false
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
async fn failed(app: &App, sub: &Subscription, owner: &str, number: i64, why: String) {
    app.metrics.deliveries.with_label_values(&["failed"]).inc();
    let settings = &app.delivery;
    let (sid, o) = (sub.id, owner.to_owned());
    let attempts = sub.delivery.attempts.saturating_add(1);
    let wait = chrono::Duration::from_std(backoff(settings, attempts)).unwrap_or_default();
    let give_up_after = chrono::Duration::from_std(settings.retry_for).unwrap_or_default();
    let error = why.clone();
    let outcome = app
        .blocking(move |app| {
            let now = app.clock.now();
            let attempt = FailedAttempt { number, error: &error, at: now, retry_at: now + wait, give_up_after };
            Ok(app.store.fail_delivery(sid, &o, attempt)?)
        })
        .await;
    match outcome {
        Ok(Failure::DeadLettered) => {
            app.metrics.deliveries.with_label_values(&["dead-lettered"]).inc();
            tracing::warn!(subscription = %sid, event = number, error = %why, "delivery dead-lettered: retries ran out; the subscription is suspended until redelivery is asked for");
        }
        Ok(Failure::Retry(at)) => {
            tracing::info!(subscription = %sid, event = number, error = %why, retry_at = %at, "delivery failed; will retry");
        }
        Ok(Failure::LeaseLost) => {}
        Err(e) => tracing::warn!(subscription = %sid, error = %e, "recording a failed delivery failed"),
    }
}

async fn release(app: &App, sid: Uuid, owner: &str) {
    let o = owner.to_owned();
    if let Err(e) = app.blocking(move |app| Ok(app.store.release_lease(sid, &o)?)).await {
        tracing::warn!(subscription = %sid, error = %e, "releasing a lease failed; it expires on its own");
    }
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
fn first_rounds(app: &App, subs: &[Subscription]) -> AppResult<Vec<FirstRound>> {
    let ids: Vec<Uuid> = subs.iter().map(|s| s.id).collect();
    let mut due = app.store.next_events_many(&ids, BATCH)?;
    let loaded: Vec<Vec<SubscriptionEvent>> = subs.iter().map(|s| due.remove(&s.id).unwrap_or_default()).collect();
    let runs: Vec<(Subscription, Vec<SubscriptionEvent>)> = subs
        .iter()
        .zip(&loaded)
        .filter(|(_, events)| !events.is_empty())
        .map(|(sub, events)| (sub.clone(), events.iter().take(run_len(sub)).cloned().collect()))
        .collect();
    let mut prepared = prepare_many(app, &runs).into_iter();
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
async fn prepare(app: &App, sub: &Subscription, events: &[SubscriptionEvent]) -> Result<Vec<Outgoing>, String> {
    let runs = vec![(sub.clone(), events.to_vec())];
    let mut prepared =
        app.blocking(move |app| Ok(prepare_many(app, &runs))).await.map_err(|e| format!("not sent: {e}"))?;
    prepared.pop().unwrap_or_else(|| Err("not sent: nothing was prepared".into()))
}

/// [`prepare`] for a run of each of several subscriptions (on the blocking pool): decided and
/// audited together, then rendered. One result per run, in order.
fn prepare_many(app: &App, runs: &[(Subscription, Vec<SubscriptionEvent>)]) -> Vec<Result<Vec<Outgoing>, String>> {
    let batch: Vec<ToDecide<'_>> = runs
        .iter()
        .map(|(sub, events)| {
            let (first, last) = (events.first().map_or(0, |e| e.number), events.last().map_or(0, |e| e.number));
            let attempt = sub.delivery.attempts.saturating_add(1);
            ToDecide { sub, events, request_id: format!("delivery:{}:{first}-{last}:{attempt}", sub.id) }
        })
        .collect();
    let decided = match decide_many(app, &batch, AuditAction::Deliver, true) {
        Ok(d) => d,
        Err(err) => return runs.iter().map(|_| Err(format!("not sent: {err}"))).collect(),
    };
    runs.iter().zip(&decided).map(|((sub, events), decided)| render(app, sub, events, decided)).collect()
}

/// Renders decided events for the wire.
fn render(
    app: &App,
    sub: &Subscription,
    events: &[SubscriptionEvent],
    decided: &Decided,
) -> Result<Vec<Outgoing>, String> {
    events
        .iter()
        .zip(&decided.events)
        .map(|(event, body)| {
            if sub.channel == "fhir" {
                let bundle = fhir::subscription::pushed(app, sub, decided, event, body).to_string();
                let signature =
                    app.tokens.keys().sign_detached(bundle.as_bytes()).map_err(|err| format!("not sent: {err}"))?;
                Ok(Outgoing { body: bundle, content_type: fhir::FHIR_JSON, signature: Some(signature) })
            } else {
                let body = webhook_body(app, sub, body, decided.audit_id).map_err(|err| format!("not sent: {err}"))?;
                Ok(Outgoing { body, content_type: "application/jose", signature: None })
            }
        })
        .collect()
}

/// Why a push was not acknowledged.
#[derive(Debug)]
pub(crate) struct NotAcknowledged {
    /// In words, for `last_error`.
    pub why: String,
    /// The receiver answered `410 Gone`: the subscription ended at its end.
    pub gone: bool,
}

impl From<String> for NotAcknowledged {
    fn from(why: String) -> Self {
        Self { why, gone: false }
    }
}

/// Sends one prepared event. Any 2xx acknowledges it.
async fn send(
    app: &App,
    client: &reqwest::Client,
    sub: &Subscription,
    event: Option<&SubscriptionEvent>,
    out: Outgoing,
) -> Result<(), NotAcknowledged> {
    let Some(url) = sub.endpoint.as_deref() else {
        return Err("the subscription has no webhook URL".to_owned().into());
    };
    let attempt = sub.delivery.attempts.saturating_add(1);
    let event = event.map(|e| (e.event_id.to_string(), e.number, attempt.to_string()));
    post(app, client, url, sub.id, event, out, None).await
}

impl Outgoing {
    /// A signed VPR event body.
    pub(crate) fn jose(body: String) -> Self {
        Self { body, content_type: "application/jose", signature: None }
    }
}

/// Posts one event body to `url` with the delivery headers: the subscription, and for an event
/// its id, number and the attempt; within `timeout` if given (else the client's). Any 2xx
/// acknowledges it.
pub(crate) async fn post(
    app: &App,
    client: &reqwest::Client,
    url: &str,
    subscription: Uuid,
    event: Option<(String, i64, String)>,
    out: Outgoing,
    timeout: Option<std::time::Duration>,
) -> Result<(), NotAcknowledged> {
    let sent_at: DateTime<Utc> = app.clock.now();
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, out.content_type)
        .header("VPR-Subscription-Id", subscription.to_string())
        .header("VPR-Timestamp", sent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    if let Some((id, number, attempt)) = event {
        request = request
            .header("VPR-Event-Id", id)
            .header("VPR-Event-Number", number.to_string())
            .header("VPR-Delivery-Attempt", attempt);
    }
    if let Some(signature) = out.signature {
        request = request.header("VPR-JWS", signature);
    }
    if let Some(t) = timeout {
        request = request.timeout(t);
    }
    let response = request.body(out.body).send().await.map_err(|e| {
        let why = if e.is_timeout() {
            format!("no answer within {} s", app.delivery.timeout.as_secs_f64())
        } else if e.is_connect() {
            format!("could not connect to the receiver: {}", root_cause(&e))
        } else {
            format!("request failed: {}", root_cause(&e))
        };
        NotAcknowledged::from(why)
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(format!("the receiver answered {status}: redirects are not followed").into())
    } else {
        let gone = status == reqwest::StatusCode::GONE;
        Err(NotAcknowledged { why: format!("the receiver answered {status}"), gone })
    }
}
