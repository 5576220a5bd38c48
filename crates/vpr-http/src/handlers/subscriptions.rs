//! Subscriptions: a partner's standing request to be told of notice changes that match its
//! criteria, pushed to a webhook (signed, optionally encrypted) or read from a replayable feed.
//! Subscriptions the agreement does not allow outright wait for an IG lead's approval; every
//! delivery and feed read is decided by the agreement when it is made, and audited.

use actix_web::http::header;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_app::services::subscriptions::Facade;
use vpr_app::App;
use vpr_auth::{EncryptionKey, Scope};
use vpr_domain::subscription::SubscriptionStatus;
use vpr_domain::subscription::{DeliveryMethod, PeerLink};
use vpr_store::subscriptions::Subscription;

use crate::docs::{
    ApprovalInputDoc, CohortChangeDoc, EventFeedDoc, ProblemDoc, RedeliverInputDoc, SubscriptionDoc,
    SubscriptionInputDoc,
};
use crate::error::ApiError;
use crate::extract::{authenticate, header_or_empty, json, path_id, Query, MAX_BODY_BYTES, MAX_SUBSCRIPTION_BODY};

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    path_id(raw, "subscription")
}

/// A subscription as its owner (or IG) sees it. The cohort is shown only by its size.
pub fn resource(sub: &Subscription, cohort_size: i64) -> Value {
    let mut criteria = serde_json::to_value(&sub.criteria).unwrap_or_else(|_| json!({}));
    if let Some(c) = criteria.as_object_mut() {
        c.remove("cohort");
        if sub.criteria.cohort {
            c.insert("cohort".into(), json!({"size": cohort_size}));
        }
    }
    let encryption_alg = sub.encryption_jwk.as_deref().and_then(|t| {
        serde_json::from_str(t).ok().and_then(|m| EncryptionKey::from_jwk(&m).ok()).map(|k| k.algorithm().to_owned())
    });
    let mut d = sub.delivery.clone();
    if matches!(sub.federation, Some(PeerLink::AtPeer { .. })) {
        // Its events are numbered at the peer: here, those passed on so far.
        d.last_event_number = d.last_event_number.max(d.delivered_upto);
    }
    let d = &d;
    let mut body = json!({
        "id": sub.id,
        "status": sub.status,
        "owner": {"ods_code": sub.owner_ods, "client_id": sub.owner_system},
        "purpose": sub.purpose,
        "role": sub.role,
        "context_reference": sub.context_ref,
        "topic": sub.topic,
        "criteria": criteria,
        "payload": sub.payload,
        "delivery": {
            "method": sub.method,
            "url": sub.endpoint,
            "encrypted": sub.encryption_jwk.is_some(),
            "encryption_alg": encryption_alg,
        },
        "expires_at": sub.expires_at,
        "tag": sub.tag,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
        "approval": sub.approval,
        "events": {
            "last_event_number": d.last_event_number,
            "delivered_upto": (sub.method == DeliveryMethod::Webhook).then_some(d.delivered_upto),
            "state": (sub.method == DeliveryMethod::Webhook).then_some(d.state.as_str()),
            "attempts": d.attempts,
            "failing_since": d.failing_since,
            "next_attempt_at": (sub.method == DeliveryMethod::Webhook && d.delivered_upto < d.last_event_number).then_some(d.next_attempt_at),
            "last_attempt_at": d.last_attempt_at,
            "last_delivered_at": d.last_delivered_at,
            "last_error": d.last_error,
        },
        "links": {"events": format!("/v1/subscriptions/{}/events?after=0", sub.id)},
    });
    if let (Some(link), Some(m)) = (&sub.federation, body.as_object_mut()) {
        let shown = match link {
            PeerLink::AtPeer { peer, subscription_id } => {
                json!({"peer": peer, "peer_subscription_id": subscription_id})
            }
            PeerLink::RelayedBy { peer, .. } => json!({"relayed_by": peer}),
        };
        m.insert("federation".into(), shown);
    }
    body
}

async fn respond_with(
    app: &App,
    sub: Subscription,
    builder: &mut actix_web::HttpResponseBuilder,
) -> Result<HttpResponse, ApiError> {
    let size = app.cohort_size(sub.id).await?;
    Ok(builder.insert_header((header::CACHE_CONTROL, "no-store")).json(resource(&sub, size)))
}

/// Creates a subscription.
#[utoipa::path(
    tag = "subscriptions",
    request_body(content = SubscriptionInputDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: `active`, or `pending-approval` when the agreement does not allow it outright (an IG lead decides). With `peer`, the peer broker's agreement and IG leads decide.", body = SubscriptionDoc),
        (status = 401, description = "No valid access token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks `subscriptions`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed: every failing field by JSON pointer, with its rule", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 502, description = "With `peer`: the peer broker could not be asked (nothing is stored)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/v1/subscriptions")]
pub async fn create(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let body = json(&req, payload, MAX_SUBSCRIPTION_BODY).await?;
    let spec = app.subscription_rules().subscription(&body).map_err(ApiError::Validation)?;
    let sub = if spec.peer.is_some() {
        app.subscribe_at_peer(&caller, spec, &body).await?
    } else {
        let new = app.admit(&caller, &spec, Uuid::new_v4())?;
        app.subscribe(&caller, new).await?
    };
    let location = format!("/v1/subscriptions/{}", sub.id);
    respond_with(&app, sub, HttpResponse::Created().insert_header((header::LOCATION, location))).await
}

/// Lists your organisation's subscriptions, newest first (`?status=`). With `?all=true`, an IG
/// role (`ig:write`, and `VPR-User-Role`) sees every organisation's, e.g. those awaiting approval.
#[utoipa::path(
    tag = "subscriptions",
    params(
        ("status" = Option<String>, Query, description = "`active`, `pending-approval`, `rejected`, `revoked`, `expired` or `deleted`"),
        ("all" = Option<bool>, Query, description = "IG only: every organisation's subscriptions"),
        ("limit" = Option<i64>, Query, description = "1 to 500 (default 100)"),
        ("VPR-User-Role" = Option<String>, Header, description = "An IG role, with `all=true`"),
    ),
    responses(
        (status = 200, description = "Subscriptions", body = Object),
        (status = 403, description = "`all=true` without an IG role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad parameter", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]), ("bearer" = ["ig:write"]))
)]
#[get("/v1/subscriptions")]
pub async fn list(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q = Query::of(&req)?;
    let all = q.boolean("all")?.unwrap_or(false);
    let caller = if all {
        authenticate(&app, &req, &[Scope::IgWrite])?
    } else {
        authenticate(&app, &req, &[Scope::Subscriptions])?
    };
    let known: Vec<&str> = SubscriptionStatus::ALL.iter().map(|s| s.code()).collect();
    let st = q.one_of("status", &known)?.and_then(|s| SubscriptionStatus::from_code(&s));
    let limit = q.int("limit", 1, 500)?.unwrap_or(100);
    let ig_role = all.then(|| header_or_empty(&req, "VPR-User-Role"));
    let subs = app.list_subscriptions(&caller, ig_role, st, limit).await?;
    let items: Vec<Value> = subs.iter().map(|(s, size)| resource(s, *size)).collect();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({ "subscriptions": items })))
}

/// One subscription, with where its delivery stands.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription and its delivery status", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/v1/subscriptions/{id}")]
pub async fn read(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let sub = app.owned_subscription(&caller, parse_id(&id)?, Facade::Vpr).await?;
    respond_with(&app, sub, &mut HttpResponse::Ok()).await
}

/// Replaces a subscription's settings, cohort included (a `PUT` without `criteria.cohort` drops
/// it); its events and their numbering continue, and notices it was given still reach it when
/// withdrawn. Deliveries are then decided for the system that made the change. A change the
/// agreement does not allow outright waits for an IG lead's approval again.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = SubscriptionInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription as changed", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Deleted, rejected or revoked subscriptions cannot be changed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[put("/v1/subscriptions/{id}")]
pub async fn replace(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let id = parse_id(&id)?;
    let body = json(&req, payload, MAX_SUBSCRIPTION_BODY).await?;
    let spec = app.subscription_rules().subscription(&body).map_err(ApiError::Validation)?;
    let sub = app.replace_subscription(&caller, id, spec).await?;
    respond_with(&app, sub, &mut HttpResponse::Ok()).await
}

/// Ends a subscription: nothing more is sent (including retractions; its events stay readable
/// by IG in the audit log).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Deleted", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Already deleted", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[delete("/v1/subscriptions/{id}")]
pub async fn delete_subscription(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let sub = app.owned_subscription(&caller, parse_id(&id)?, Facade::Vpr).await?;
    let sub = app.delete_subscription(&caller, &sub, 200).await?;
    respond_with(&app, sub, &mut HttpResponse::Ok()).await
}

/// The feed: the subscription's events after `after`, each decided by the agreement now, the
/// same events a webhook receives. Replay from any point; event numbers have no gaps.
#[utoipa::path(
    tag = "subscriptions",
    params(
        ("id" = Uuid, Path, description = "Subscription id"),
        ("after" = Option<i64>, Query, description = "Events numbered after this (default 0: from the start)"),
        ("limit" = Option<i64>, Query, description = "1 to 500 (default 100)"),
    ),
    responses(
        (status = 200, description = "Events, oldest first; `next_after` continues", body = EventFeedDoc),
        (status = 403, description = "Another organisation's subscription, or the subscriber is refused by the agreement (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Awaiting approval, rejected or deleted", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The audit entry could not be written: nothing is disclosed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/v1/subscriptions/{id}/events")]
pub async fn events(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let id = parse_id(&id)?;
    let q = Query::of(&req)?;
    let after = q.int("after", 0, i64::MAX)?.unwrap_or(0);
    let limit = q.int("limit", 1, 500)?.unwrap_or(100);
    let page = app.feed(&caller, id, after, limit).await?;
    let sub = &page.sub;
    let (items, feed_id) = match &page.decided {
        None => (vec![], None),
        Some(d) => (d.events.iter().map(|e| e.to_json()).collect::<Vec<_>>(), Some(d.audit_id)),
    };
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
        "subscription_id": sub.id,
        "tag": sub.tag,
        "feed_id": feed_id,
        "events": items,
        "next_after": page.next_after,
        "last_event_number": sub.delivery.last_event_number.max(page.next_after),
    })))
}

/// Adds subjects to and removes them from the cohort (as patients register and leave).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = CohortChangeDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The cohort's new size", body = Object),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The subscription has no cohort criterion, or is closed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/v1/subscriptions/{id}/cohort")]
pub async fn change_cohort(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let id = parse_id(&id)?;
    let body = json(&req, payload, MAX_SUBSCRIPTION_BODY).await?;
    let size = app.change_cohort(&caller, id, body).await?;
    Ok(HttpResponse::Ok().json(json!({"subscription_id": id, "cohort": {"size": size}})))
}

/// IG decides on a subscription: approve or reject one awaiting approval, or revoke an active
/// one. Audited.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = ApprovalInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription after the decision", body = SubscriptionDoc),
        (status = 403, description = "Not an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The subscription is not in a state this decision applies to", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["ig:write"]))
)]
#[post("/v1/subscriptions/{id}/approval")]
pub async fn decide_approval(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::IgWrite])?;
    let id = parse_id(&id)?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    let sub = app.decide_approval(&caller, id, body).await?;
    respond_with(&app, sub, &mut HttpResponse::Ok()).await
}

/// Events whose retries ran out, newest first; the subscription stays suspended until
/// redelivery is asked for (its later events wait, in order; nothing is dropped).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Dead letters", body = Object),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/v1/subscriptions/{id}/dead-letters")]
pub async fn dead_letters(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let id = parse_id(&id)?;
    let (sub, items) = app.dead_letters(&caller, id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "subscription_id": id,
        "delivery_state": sub.delivery.state,
        "undelivered_events": sub.delivery.last_event_number - sub.delivery.delivered_upto,
        "dead_letters": items,
    })))
}

/// Resumes a suspended webhook subscription from its first undelivered event, or replays from
/// `from_event` (each event decided and audited again when sent).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = RedeliverInputDoc, content_type = "application/json"),
    responses(
        (status = 202, description = "Delivery resumes", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Not a webhook subscription, or closed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`from_event` is beyond the last event", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/v1/subscriptions/{id}/redeliver")]
pub async fn redeliver(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let id = parse_id(&id)?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    let sub = app.redeliver(&caller, id, body).await?;
    respond_with(&app, sub, &mut HttpResponse::Accepted()).await
}
