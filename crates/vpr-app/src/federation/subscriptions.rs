//! Subscriptions across an ICS border. A partner here subscribes to notices published in a peer
//! ICS's area: this broker registers the subscription at the peer with a relay, as it relays a
//! look-up ([`App::subscribe_at_peer`]). The peer holds it, decides every event at delivery time
//! under its own agreement, audits it, and pushes it here over its ordinary webhook channel
//! (signed, ordered, retried); this broker checks the peer's signature and passes each event on
//! to the partner's webhook as it arrives ([`App::pass_on_peer_event`]), answering the peer only
//! once the partner has acknowledged it. Nothing of an event is stored here but its audit entry,
//! so a notice never comes to rest at a broker that is not its publisher's; order and retries
//! are the peer's, and a restart of either broker loses nothing.
//!
//! The answering side ([`App::answer_relayed_subscription`]) stores the subscription owned by
//! the remote partner, marked as relayed by the peer, with the peer's configured base URL as its
//! webhook. Withdrawals and expiries of notices it was given reach it like any subscriber's. A
//! subscription ended at the asking broker is ended at the peer then, or at the latest when the
//! peer's next push is answered `410 Gone`.

use serde_json::{json, Map, Value};
use uuid::Uuid;
use vpr_auth::{Principal, RelayedRequester};
use vpr_domain::audit::AuditAction;
use vpr_domain::subscription::{PeerLink, SubscriptionSpec, SubscriptionStatus, Topic};
use vpr_domain::FieldError;
use vpr_store::audit::{AuditEntry, FederationRecord, PeerRecord};
use vpr_store::subscriptions::{NewSubscription, Subscription};

use super::answer::{checked_relay, remote_principal, require_peer};
use super::ask::{audited_remote, cut_to_view, problem_detail, read_capped, short, subject_digest, token_for};
use crate::access::requester_refusal;
use crate::audit::{caller_entry, record_refusal};
use crate::caller::{Access, Caller};
use crate::delivery::{post, subscriber, Outgoing};
use crate::error::{AppError, AppResult};
use crate::services::subscriptions::subscription_audit;
use crate::App;

/// The path a peer pushes a subscription's events to, at the asking broker.
pub fn events_path(asking_id: Uuid) -> String {
    format!("/v1/federation/events/{asking_id}")
}

/// What a subscription's relay is bound to: the asking broker's id for it and the subscription
/// as sent.
fn subscription_digest(asking_id: Uuid, subscription: &Value) -> String {
    subject_digest(&json!([asking_id, subscription]))
}

/// What the relay ending a subscription is bound to.
fn ending_digest(subscription_id: &str) -> String {
    subject_digest(&json!(["end", subscription_id]))
}

/// What the relay asking for a redelivery is bound to.
fn redelivery_digest(subscription_id: &str, from_event: Option<i64>) -> String {
    subject_digest(&json!(["redeliver", subscription_id, from_event]))
}

/// The event type by which a peer reports a subscription's new status (not passed on).
pub const STATUS_EVENT: &str = "subscription-status";

/// The header carrying the relay when a subscription is ended.
pub const RELAY_HEADER: &str = "VPR-Relay";

/// The requester a subscription relays: the partner's system, acting for the subscription.
fn relayed_for(p: &Principal, sub_id: Uuid, spec_role: &str, purpose: &str, context: Option<&str>) -> RelayedRequester {
    RelayedRequester {
        org: p.org.as_str().to_owned(),
        org_type: p.org_type,
        system: p.client_id.clone(),
        user: format!("subscription:{sub_id}"),
        role: spec_role.to_owned(),
        purpose: purpose.to_owned(),
        context_ref: context.map(str::to_owned),
        break_glass: None,
        subject_sha256: String::new(),
    }
}

/// The peer's validation errors, pointing into the subscription the partner sent.
fn peer_field_errors(body: &Value) -> Vec<FieldError> {
    let items = body.get("errors").and_then(Value::as_array).cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|e| {
            let pointer = e.get("pointer")?.as_str()?;
            let pointer = pointer.strip_prefix("/subscription").unwrap_or(pointer);
            let rule = e.get("rule").and_then(Value::as_str).unwrap_or("peer-refused");
            let detail = e.get("detail").and_then(Value::as_str).unwrap_or("refused by the peer broker");
            Some(FieldError::new(pointer, bounded(rule, 64), bounded(detail, 300)))
        })
        .take(50)
        .collect()
}

fn bounded(text: &str, n: usize) -> String {
    text.chars().take(n).collect()
}

/// A peer's push, checked.
struct Push {
    sub: Subscription,
    peer: String,
    peer_sub: String,
    partner: Principal,
    claims: Map<String, Value>,
    event: Map<String, Value>,
    event_id: String,
    number: i64,
}

/// What the peer answered to a registration.
struct Registered {
    id: Uuid,
    status: SubscriptionStatus,
    approval: Value,
}

impl App {
    /// Subscribes the caller at peer broker `spec.peer` to notices published there: admitted
    /// here (role, purpose, encryption key), registered at the peer under its agreement (which
    /// may start it outright or hold it for its IG leads), then stored here with its entry.
    /// Nothing is stored if the peer refuses or cannot be reached.
    pub async fn subscribe_at_peer(
        &self,
        caller: &Caller,
        spec: SubscriptionSpec,
        body: &Value,
    ) -> AppResult<Subscription> {
        let peer_id = spec.peer.clone().unwrap_or_default();
        if self.tokens.peers().get(&peer_id).is_none() {
            return Err(AppError::invalid(
                "/peer",
                "unknown-peer",
                format!("`{peer_id}` is not a peer broker of this one"),
            ));
        }
        let id = Uuid::new_v4();
        let mut new = self.admit(caller, &spec, id)?;
        // The peer is sent the subscription as the partner gave it, but for delivery: it pushes
        // to this broker, which encrypts to the partner's key (if any) when it passes events on.
        let mut sent = body.clone();
        if let Value::Object(m) = &mut sent {
            m.remove("peer");
            m.remove("tag");
            let url = format!("{}{}", self.tokens.settings().issuer.trim_end_matches('/'), events_path(id));
            m.insert("delivery".into(), json!({"method": "webhook", "url": url}));
        }
        let mut who = relayed_for(&caller.principal, id, &spec.role, &spec.purpose, spec.context_reference.as_deref());
        who.subject_sha256 = subscription_digest(id, &sent);
        let registered = self.register_at_peer(&peer_id, &who, id, sent, &caller.request_id).await?;
        let clauses = registered.approval.get("clauses").cloned().unwrap_or_else(|| json!([]));
        let bases = registered.approval.get("lawful_basis").cloned().unwrap_or_else(|| json!([]));
        new.status = registered.status;
        new.approval = json!({
            "decided_by": "peer", "peer": peer_id, "peer_subscription_id": registered.id,
            "clauses": clauses, "lawful_basis": bases, "peer_approval": registered.approval, "at": self.now(),
        });
        new.federation = Some(PeerLink::AtPeer { peer: peer_id, subscription_id: registered.id.to_string() });
        self.subscribe(caller, new).await
    }

    async fn register_at_peer(
        &self,
        peer_id: &str,
        who: &RelayedRequester,
        asking_id: Uuid,
        subscription: Value,
        request_id: &str,
    ) -> AppResult<Registered> {
        let unreachable =
            |why: String| AppError::BadGateway(format!("peer broker `{peer_id}` could not be asked: {why}"));
        let peers = self.tokens.peers();
        let peer = peers.get(peer_id).ok_or_else(|| unreachable("not a configured peer".into()))?;
        let token = token_for(self, peer).await.map_err(unreachable)?;
        let own = &peers.own_id;
        let relay =
            self.tokens.keys().sign_relay(own, peer_id, who, self.now()).map_err(|e| unreachable(e.to_string()))?;
        let response = self
            .federation
            .client
            .post(format!("{}/v1/federation/subscriptions", peer.base_url))
            .timeout(self.delivery.timeout)
            .bearer_auth(&token)
            .header("X-Request-Id", request_id)
            .json(&json!({"relay": relay, "asking_id": asking_id, "subscription": subscription}))
            .send()
            .await
            .map_err(|e| unreachable(short(&e)))?;
        let status = response.status().as_u16();
        let body = read_capped(response).await.map_err(unreachable)?;
        match status {
            201 => {
                let id = body.get("id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
                let state = body.get("status").and_then(Value::as_str).and_then(SubscriptionStatus::from_code);
                match (id, state) {
                    (Some(id), Some(s @ (SubscriptionStatus::Active | SubscriptionStatus::Pending))) => {
                        Ok(Registered { id, status: s, approval: body.get("approval").cloned().unwrap_or(Value::Null) })
                    }
                    _ => Err(unreachable("its answer has no subscription id and status".into())),
                }
            }
            400 | 422 => {
                let errors = peer_field_errors(&body);
                if errors.is_empty() {
                    Err(AppError::Forbidden(format!("peer broker `{peer_id}` refused: {}", problem_detail(&body))))
                } else {
                    Err(AppError::Validation(errors))
                }
            }
            401 => {
                self.federation.forget_token(peer_id);
                Err(unreachable("it did not accept this broker's token".into()))
            }
            403 => Err(AppError::Forbidden(format!(
                "peer broker `{peer_id}` refused the subscription: {}",
                problem_detail(&body)
            ))),
            other => Err(unreachable(format!("it answered {other}"))),
        }
    }

    /// A request to peer `peer_id`'s `path` with this broker's token there and a fresh relay
    /// for `who` in the `VPR-Relay` header, within the delivery timeout.
    async fn relayed_request(
        &self,
        method: reqwest::Method,
        peer_id: &str,
        path: &str,
        who: &RelayedRequester,
        request_id: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let peers = self.tokens.peers();
        let peer = peers.get(peer_id).ok_or("not a configured peer")?;
        let token = token_for(self, peer).await?;
        let relay =
            self.tokens.keys().sign_relay(&peers.own_id, peer_id, who, self.now()).map_err(|e| e.to_string())?;
        Ok(self
            .federation
            .client
            .request(method, format!("{}{path}", peer.base_url))
            .timeout(self.delivery.timeout)
            .bearer_auth(token)
            .header(RELAY_HEADER, relay)
            .header("X-Request-Id", request_id))
    }

    /// Tells the peer holding `sub` that it ended here. Best effort: if the peer cannot be told
    /// now, its next push is answered `410 Gone` and it ends the subscription then.
    pub(crate) async fn end_at_peer(&self, caller: &Caller, sub: &Subscription, peer_id: &str, peer_sub: &str) {
        let mut who = relayed_for(&caller.principal, sub.id, &sub.role, &sub.purpose, sub.context_ref.as_deref());
        who.subject_sha256 = ending_digest(peer_sub);
        let path = format!("/v1/federation/subscriptions/{peer_sub}");
        let outcome =
            match self.relayed_request(reqwest::Method::DELETE, peer_id, &path, &who, &caller.request_id).await {
                Ok(request) => request.send().await.map_err(|e| short(&e)).and_then(|r| match r.status().as_u16() {
                    200..=299 | 404 | 410 => Ok(()),
                    s => Err(format!("it answered {s}")),
                }),
                Err(why) => Err(why),
            };
        if let Err(why) = outcome {
            tracing::warn!(subscription = %sub.id, peer = peer_id, error = %why, "the peer could not be told the subscription ended; its next push will be answered 410");
        }
    }

    /// Asks the peer holding `sub` to resume its delivery (after retries ran out there) or to
    /// replay it from `from_event` (passed on again here, each event decided again there).
    pub(crate) async fn redeliver_at_peer(
        &self,
        caller: &Caller,
        sub: &Subscription,
        peer_id: &str,
        peer_sub: &str,
        from_event: Option<i64>,
    ) -> AppResult<Subscription> {
        let unreachable =
            |why: String| AppError::BadGateway(format!("peer broker `{peer_id}` could not be asked: {why}"));
        let mut who = relayed_for(&caller.principal, sub.id, &sub.role, &sub.purpose, sub.context_ref.as_deref());
        who.subject_sha256 = redelivery_digest(peer_sub, from_event);
        let path = format!("/v1/federation/subscriptions/{peer_sub}/redeliver");
        let request = self.relayed_request(reqwest::Method::POST, peer_id, &path, &who, &caller.request_id).await;
        let request = request.map_err(unreachable)?;
        if let Some(f) = from_event {
            let id = sub.id;
            self.blocking(move |app| Ok(app.store.replay_from(id, f)?)).await?;
        }
        let response = request
            .json(&from_event.map_or_else(|| json!({}), |f| json!({"from_event": f})))
            .send()
            .await
            .map_err(|e| unreachable(short(&e)))?;
        let status = response.status().as_u16();
        let body = read_capped(response).await.map_err(unreachable)?;
        match status {
            200 => Ok(sub.clone()),
            422 => Err(AppError::Validation(peer_field_errors(&body))),
            409 => Err(AppError::Conflict(format!("peer broker `{peer_id}`: {}", problem_detail(&body)))),
            other => Err(unreachable(format!("it answered {other}: {}", problem_detail(&body)))),
        }
    }

    /// Resumes or replays, for the peer broker `caller`, the delivery of a subscription it
    /// relayed here (its partner asked there). The relay must be fresh and name this request.
    pub async fn redeliver_relayed(&self, caller: &Caller, id: Uuid, relay: String, body: Value) -> AppResult<()> {
        require_peer(self, caller, "resume or replay a relayed subscription")?;
        let caller = caller.clone();
        self.blocking(move |app| {
            let refuse = |e: AppError| record_refusal(app, &caller, AuditAction::SubscriptionChange, e);
            let input =
                vpr_domain::subscription::redeliver(&body).map_err(|errs| refuse(AppError::Validation(errs)))?;
            let digest = redelivery_digest(&id.to_string(), input.from_event);
            let relay = checked_relay(app, &caller, &relay, &digest).map_err(refuse)?;
            let sub = app.store.subscription(id)?.filter(|s| {
                matches!(&s.federation, Some(PeerLink::RelayedBy { peer, .. }) if *peer == relay.peer)
                    && s.owner_ods == relay.requester.org
            });
            let sub =
                sub.ok_or_else(|| AppError::NotFound("no subscription relayed by this peer has this id".into()))?;
            if !sub.status.receives() {
                return Err(AppError::Conflict(format!("a subscription that is `{}` is not delivered", sub.status)));
            }
            if !app.store.redeliver(id, input.from_event, app.clock.now())? {
                return Err(AppError::invalid(
                    "/from_event",
                    "beyond-last-event",
                    "there is no event with this number yet",
                ));
            }
            Ok(())
        })
        .await?;
        self.outbox.due();
        Ok(())
    }

    /// Passes on an event that the peer holding subscription `id` pushed: the peer's signature
    /// and the subscription are checked, the pass-on is audited here (naming the peer's notice
    /// ids, views and clauses, never the content), then the event is signed by this broker (and
    /// encrypted to the partner's key, if it gave one) and posted to the partner's webhook. Only
    /// when the partner acknowledges does this return, so the peer retries until it has; the
    /// partner de-duplicates by event id, as with any webhook. `410 Gone` tells the peer the
    /// subscription ended here.
    pub async fn pass_on_peer_event(&self, id: Uuid, jws: String, attempt: Option<String>) -> AppResult<()> {
        match self.checked_push(id, &jws).await? {
            Some(push) => self.pass_on(push, attempt).await,
            None => Ok(()),
        }
    }

    /// A push checked: signed by the peer holding subscription `id` for it and its system,
    /// recently; the subscription still receiving here; the partner still registered. `None`
    /// for an event passed on before.
    async fn checked_push(&self, id: Uuid, jws: &str) -> AppResult<Option<Push>> {
        let sub = self.blocking(move |app| Ok(app.store.subscription(id)?)).await?;
        let gone = || AppError::Gone("no subscription here receives this peer's events".into());
        let sub = sub.ok_or_else(gone)?;
        let Some(PeerLink::AtPeer { peer, subscription_id }) = sub.federation.clone() else { return Err(gone()) };
        let leeway = self.tokens.settings().leeway;
        let claims =
            self.tokens.peers().open_event(&peer, &subscription_id, jws, self.now(), leeway).map_err(|why| {
                // Perhaps a key rotation: fetched again at most once a `jwks_min_interval`.
                self.federation.want_keys(&peer);
                AppError::Forbidden(why)
            })?;
        if claims.get("aud").and_then(Value::as_str) != Some(sub.owner_system.as_str()) {
            return Err(AppError::invalid("/aud", "audience", "the event is not for this subscription's system"));
        }
        if !(sub.status.receives() || sub.status == SubscriptionStatus::Pending) {
            return Err(AppError::Gone(format!("the subscription is `{}` here", sub.status)));
        }
        // The peer's IG leads decide it: its status there, as the peer reports it, is taken here.
        let reported = claims.get("subscription").and_then(|s| s.get("status")).and_then(Value::as_str);
        let sub = match reported.and_then(SubscriptionStatus::from_code) {
            Some(status) if status != sub.status => self.take_peer_status(sub, &peer, status).await?,
            _ => sub,
        };
        if claims.get("event").and_then(|e| e.get("type")).and_then(Value::as_str) == Some(STATUS_EVENT) {
            return Ok(None);
        }
        // Only what the peer has started is passed on (a subscription it has not, or no longer,
        // lets receive is told so).
        if !sub.status.receives() {
            return Err(AppError::Gone(format!("the subscription is `{}` here", sub.status)));
        }
        // The partner, as the registry describes it now; if it is gone for now, the peer retries.
        let partner = subscriber(self, &sub).ok_or_else(|| {
            AppError::Unavailable("the subscribing system is not in the registry with the `subscriptions` scope".into())
        })?;
        let event: Map<String, Value> = claims.get("event").and_then(Value::as_object).cloned().unwrap_or_default();
        let event_id = event.get("event_id").and_then(Value::as_str).filter(|e| Uuid::parse_str(e).is_ok());
        let number = event.get("event_number").and_then(Value::as_i64).filter(|n| *n > 0);
        let (Some(event_id), Some(number)) = (event_id.map(str::to_owned), number) else {
            return Err(AppError::invalid(
                "/event",
                "event",
                "the event needs an `event_id` (a UUID) and an `event_number`",
            ));
        };
        if number <= sub.delivery.delivered_upto {
            // Passed on and acknowledged before (a replay, or the peer resending after a lost
            // answer): acknowledged again, not passed on again.
            return Ok(None);
        }
        Ok(Some(Push { sub, peer, peer_sub: subscription_id, partner, claims, event, event_id, number }))
    }

    /// Passes on a checked push: audited, signed by this broker and posted to the partner.
    async fn pass_on(&self, push: Push, attempt: Option<String>) -> AppResult<()> {
        let Push { sub, peer, peer_sub: subscription_id, partner, claims, mut event, event_id, number } = push;
        let id = sub.id;

        // What the peer decided is all that is passed on: its notice cut to its declared view.
        let notice = match event.remove("notice") {
            Some(n) => Some(cut_to_view(n).ok_or_else(|| {
                AppError::invalid("/event/notice/decision/view", "view", "the event's notice has no known view")
            })?),
            None => None,
        };
        let record = PeerRecord {
            broker: peer.clone(),
            outcome: "answered".into(),
            status: None,
            lookup_id: claims.get("audit_id").and_then(Value::as_str).map(str::to_owned),
            notices: notice.as_ref().and_then(audited_remote).into_iter().collect(),
            detail: Some(format!("event {number} ({event_id}) of subscription {subscription_id} there")),
        };
        if let Some(mut n) = notice {
            if let Value::Object(m) = &mut n {
                m.insert("broker".into(), Value::String(peer.clone()));
            }
            event.insert("notice".into(), n);
        }
        let caller = Caller::new(partner, format!("peer-event:{id}:{number}"));
        let (s, c) = (sub.clone(), caller.clone());
        let entry_id = self.blocking(move |app| app.record_pass_on(&c, &s, record)).await?;
        let payload = json!({
            "iss": self.tokens.settings().issuer,
            "aud": sub.owner_system,
            "sub": sub.id,
            "iat": self.now().timestamp(),
            "jti": event_id,
            "subscription": {"id": sub.id, "tag": sub.tag},
            "audit_id": entry_id,
            "broker": {"id": peer, "subscription_id": subscription_id, "audit_id": claims.get("audit_id")},
            "event": Value::Object(event),
        });
        let body = crate::render::webhook::sealed(self, &sub, &payload)
            .map_err(|e| AppError::Internal(format!("cannot seal the event: {e}")))?;
        let url = sub.endpoint.as_deref().ok_or_else(|| AppError::Internal("no webhook URL".into()))?;
        let sent = (event_id, number, attempt.unwrap_or_else(|| "1".into()));
        // Answered well inside the peer's own timeout, so a slow partner is a failure the peer
        // retries, never an acknowledgement it missed.
        let client = &self.federation.partner_client;
        let within = self.delivery.timeout.mul_f64(0.6);
        match post(self, client, url, sub.id, Some(sent), Outgoing::jose(body), Some(within)).await {
            Ok(()) => {
                self.metrics.deliveries.with_label_values(&["passed-on"]).inc();
                self.blocking(move |app| Ok(app.store.passed_on(id, number, app.clock.now())?)).await
            }
            Err(not) => {
                self.metrics.deliveries.with_label_values(&["pass-on-failed"]).inc();
                Err(AppError::BadGateway(format!(
                    "the subscriber's webhook did not acknowledge the event: {}",
                    not.why
                )))
            }
        }
    }

    /// Takes the status the peer holding `sub` reports (its IG leads approved, rejected or
    /// revoked it there), audited as the peer's decision. A status this copy cannot move to
    /// (e.g. it was deleted here meanwhile) leaves it as it is.
    async fn take_peer_status(
        &self,
        sub: Subscription,
        peer: &str,
        status: SubscriptionStatus,
    ) -> AppResult<Subscription> {
        let (from, decision): (&[SubscriptionStatus], &str) = match status {
            SubscriptionStatus::Active => (&[SubscriptionStatus::Pending], "approve"),
            SubscriptionStatus::Rejected => (&[SubscriptionStatus::Pending], "reject"),
            // A report of its approval may have been lost on the way: revoked from pending too.
            SubscriptionStatus::Revoked => {
                (&[SubscriptionStatus::Pending, SubscriptionStatus::Active, SubscriptionStatus::Expired], "revoke")
            }
            _ => return Ok(sub),
        };
        let Ok(org) = vpr_domain::OdsCode::parse(peer) else {
            tracing::warn!(peer, "a peer's id is not an ODS code: its status report is ignored");
            return Ok(sub);
        };
        let principal = Principal {
            client_id: peer.to_owned(),
            system_name: peer.to_owned(),
            org,
            org_name: String::new(),
            org_type: vpr_domain::vocab::OrgType::Icb,
            scopes: std::collections::BTreeSet::new(),
            token_id: String::new(),
        };
        let caller = Caller::new(principal, format!("peer-status:{}", sub.id));
        let (id, peer) = (sub.id, peer.to_owned());
        let changed = self
            .blocking(move |app| {
                let now = app.clock.now();
                let record = json!({"decided_by": "peer", "peer": peer, "decision": decision, "at": now,
                                    "previous": sub.approval});
                app.store.audited(|tx| {
                    let Some(moved) = tx.set_subscription_status(id, from, status, Some(&record), now)? else {
                        return Ok::<_, AppError>((sub.clone(), vec![]));
                    };
                    let entry = AuditEntry {
                        context_ref: Some(format!("subscription={id};decision={decision};owner={}", moved.owner_ods)),
                        ..subscription_audit(app, &caller, AuditAction::SubscriptionApproval, &moved, 200)
                    };
                    Ok((moved, vec![entry]))
                })
            })
            .await?;
        Ok(changed)
    }

    /// Tells the peer that relayed `sub` here its new status (this ICS's IG leads decided it),
    /// with an event signed by this broker, in the background: tried a few times over about a
    /// minute (every later push carries the status too). Only the status crosses the border.
    pub(crate) fn report_status_to_peer(&self, sub: &Subscription) {
        let (app, sub) = (self.clone(), sub.clone());
        tokio::spawn(async move {
            let Some(url) = sub.endpoint.clone() else { return };
            let mut wait = std::time::Duration::from_secs(1);
            for attempt in 1..=6 {
                let claims = json!({
                    "iss": app.tokens.settings().issuer,
                    "aud": sub.owner_system,
                    "sub": sub.id,
                    "iat": app.now().timestamp(),
                    "jti": Uuid::new_v4(),
                    "subscription": {"id": sub.id, "status": sub.status},
                    "event": {"type": STATUS_EVENT, "status": sub.status},
                });
                let body = match app.tokens.keys().sign_event(&claims) {
                    Ok(b) => b,
                    Err(e) => {
                        return tracing::warn!(subscription = %sub.id, error = %e, "cannot sign the status report")
                    }
                };
                let client = &app.federation.partner_client;
                match post(&app, client, &url, sub.id, None, Outgoing::jose(body), None).await {
                    Ok(()) => return,
                    Err(not) if not.gone => return,
                    Err(not) => {
                        tracing::info!(subscription = %sub.id, attempt, error = %not.why, "the peer was not told the subscription's new status yet")
                    }
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            tracing::warn!(subscription = %sub.id, "the peer could not be told the subscription's new status; its next push carries it");
        });
    }

    /// The audit entry of an event passed on. Returns the entry's id.
    fn record_pass_on(&self, caller: &Caller, sub: &Subscription, record: PeerRecord) -> AppResult<Uuid> {
        self.store.audited(|_| {
            let decision = if record.notices.is_empty() { "withheld" } else { "permit" };
            let entry = AuditEntry {
                actor_user: Some(format!("subscription:{}", sub.id)),
                actor_role: Some(sub.role.clone()),
                purpose: Some(sub.purpose.clone()),
                context_ref: sub.context_ref.clone(),
                decision: decision.into(),
                clauses: record.notices.iter().flat_map(|n| n.clauses.clone()).collect(),
                lawful_basis: record.notices.iter().flat_map(|n| n.lawful_basis.clone()).collect(),
                federation: Some(FederationRecord { relayed_by: None, peers: vec![record] }),
                ..caller_entry(self, caller, AuditAction::PeerEvent, 0)
            };
            let id = entry.id;
            Ok::<_, AppError>((id, entry))
        })
    }

    /// Answers a subscription relayed by the peer broker `caller` for one of its partners, to
    /// notices published here: the relay checked (signature, lifetime, replay, vouching, and that
    /// it names this subscription), the subscription validated as a partner's, admitted under
    /// this agreement for the remote partner (outright, or held for this ICS's IG leads), and
    /// stored with its entry. Every refusal is audited. Its events are pushed to the peer.
    pub async fn answer_relayed_subscription(&self, caller: &Caller, body: Value) -> AppResult<Subscription> {
        require_peer(self, caller, "relay a subscription")?;
        let caller = caller.clone();
        self.blocking(move |app| {
            let refuse = |e: AppError| record_refusal(app, &caller, AuditAction::Subscribe, e);
            let input =
                vpr_domain::validate::relayed_subscription(&body).map_err(|errs| refuse(AppError::Validation(errs)))?;
            let digest = subscription_digest(input.asking_id, &input.subscription);
            let relay = checked_relay(app, &caller, &input.relay, &digest).map_err(refuse)?;
            let remote = Caller::new(remote_principal(&relay).map_err(refuse)?, caller.request_id.clone());
            let spec = app.subscription_rules().subscription(&input.subscription).map_err(|errs| {
                refuse(AppError::Validation(
                    errs.into_iter()
                        .map(|e| FieldError { pointer: format!("/subscription{}", e.pointer), ..e })
                        .collect(),
                ))
            })?;
            let new = app.admit_relayed(&remote, &relay.peer, input.asking_id, &spec).map_err(refuse)?;
            app.store.audited(|tx| {
                let sub = tx.create_subscription(&new, app.clock.now())?;
                let entry = subscription_audit(app, &remote, AuditAction::Subscribe, &sub, 201);
                Ok::<_, AppError>((sub, entry))
            })
        })
        .await
    }

    /// Admission of a relayed subscription: to notices, pushed to the peer; for a purpose this
    /// agreement answers peers for and a role it gives the partner's type; started outright if a
    /// clause for remote requesters allows it, otherwise held for this ICS's IG leads.
    fn admit_relayed(
        &self,
        remote: &Caller,
        peer_id: &str,
        asking_id: Uuid,
        spec: &SubscriptionSpec,
    ) -> AppResult<NewSubscription> {
        let mut errs = Vec::new();
        if spec.peer.is_some() {
            errs.push(FieldError::new(
                "/subscription/peer",
                "no-relay-on",
                "a relayed subscription is held here: it is not relayed on",
            ));
        }
        if spec.topic != Topic::Notices {
            errs.push(FieldError::new(
                "/subscription/topic",
                "topic-for-peer",
                "a relayed subscription is to `notices`",
            ));
        }
        if spec.method != vpr_domain::subscription::DeliveryMethod::Webhook || spec.encryption_key.is_some() {
            errs.push(FieldError::new(
                "/subscription/delivery",
                "webhook-to-peer",
                "a relayed subscription is pushed, unencrypted, to the peer broker (which encrypts for its partner)",
            ));
        }
        if !errs.is_empty() {
            return Err(AppError::Validation(errs));
        }
        let p = &remote.principal;
        let access = Access {
            purpose: spec.purpose.clone(),
            user_id: format!("subscription:{asking_id}"),
            role: spec.role.clone(),
            context_ref: spec.context_reference.clone(),
            justification: None,
            relayed_by: Some(peer_id.to_owned()),
            replay_guard: None,
        };
        if let Some(why) = requester_refusal(self, p, &access) {
            return Err(AppError::Forbidden(why));
        }
        let peers = self.tokens.peers();
        let peer = peers.get(peer_id).ok_or_else(|| AppError::Forbidden("not a peer broker".into()))?;
        Ok(NewSubscription {
            // Always the peer's configured address, whatever the request said.
            endpoint: Some(format!("{}{}", peer.base_url, events_path(asking_id))),
            encryption_jwk: None,
            tag: None,
            federation: Some(PeerLink::RelayedBy { peer: peer_id.to_owned(), asking_id: asking_id.to_string() }),
            ..self.admitted(Uuid::new_v4(), p, Some(peer_id), spec)
        })
    }

    /// Ends, for the peer broker `caller`, a subscription it relayed here (its partner ended it
    /// there). The relay must be fresh and name this subscription; the end is audited.
    pub async fn end_relayed_subscription(&self, caller: &Caller, id: Uuid, relay: String) -> AppResult<Subscription> {
        require_peer(self, caller, "end a relayed subscription")?;
        let caller = caller.clone();
        self.blocking(move |app| {
            let refuse = |e: AppError| record_refusal(app, &caller, AuditAction::Unsubscribe, e);
            let relay = checked_relay(app, &caller, &relay, &ending_digest(&id.to_string())).map_err(refuse)?;
            let remote = Caller::new(remote_principal(&relay).map_err(refuse)?, caller.request_id.clone());
            let sub = app.store.subscription(id)?;
            let relayed_here = sub.as_ref().is_some_and(|s| {
                matches!(&s.federation, Some(PeerLink::RelayedBy { peer, .. }) if *peer == relay.peer)
                    && s.owner_ods == relay.requester.org
            });
            if !relayed_here {
                return Err(refuse(AppError::NotFound("no subscription relayed by this peer has this id".into())));
            }
            app.store.audited(|tx| {
                let sub = tx
                    .delete_subscription(id, app.clock.now())?
                    .ok_or_else(|| AppError::Conflict("the subscription is already deleted".into()))?;
                let entry = subscription_audit(app, &remote, AuditAction::Unsubscribe, &sub, 200);
                Ok((sub, entry))
            })
        })
        .await
    }

    /// The asking broker answered a push of relayed subscription `sub` with `410 Gone`: it
    /// ended there. Ends it here, audited for the partner it was relayed for. Returns whether it
    /// is ended (false for any other subscription, and for one younger than a few delivery
    /// timeouts, which may still be being stored at the asking broker: those are retried).
    pub(crate) async fn end_gone(&self, sub: &Subscription) -> bool {
        let Some(PeerLink::RelayedBy { peer, .. }) = &sub.federation else { return false };
        let grace = chrono::Duration::from_std(self.delivery.timeout * 4).unwrap_or_default();
        if self.now() - sub.created_at < grace {
            return false;
        }
        // Decided for the partner while its peer vouches for it; recorded as the peer otherwise.
        let principal = subscriber(self, sub).or_else(|| {
            Some(Principal {
                client_id: peer.clone(),
                system_name: peer.clone(),
                org: vpr_domain::OdsCode::parse(peer).ok()?,
                org_name: String::new(),
                org_type: vpr_domain::vocab::OrgType::Icb,
                scopes: std::collections::BTreeSet::new(),
                token_id: String::new(),
            })
        });
        let Some(principal) = principal else { return false };
        let (id, caller) = (sub.id, Caller::new(principal, format!("delivery:{}:gone", sub.id)));
        let ended = self
            .blocking(move |app| {
                app.store.audited(|tx| {
                    let Some(sub) = tx.delete_subscription(id, app.clock.now())? else {
                        return Ok((false, vec![]));
                    };
                    let entry = subscription_audit(app, &caller, AuditAction::Unsubscribe, &sub, 410);
                    Ok::<_, AppError>((true, vec![entry]))
                })
            })
            .await;
        match ended {
            Ok(_) => {
                tracing::info!(subscription = %id, "the asking broker answered 410 Gone: the relayed subscription ended");
                true
            }
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "ending a relayed subscription the peer no longer has failed");
                false
            }
        }
    }
}
