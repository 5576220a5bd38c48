//! The federation edge: look-ups and subscriptions relayed by a peer broker for one of its
//! partners, decided, minimised and audited here under this broker's agreement (peer brokers
//! only), and the events a peer pushes for subscriptions held there, passed on to partners.

use actix_web::http::header;
use actix_web::{delete, post, web, HttpRequest, HttpResponse};
use serde_json::json;
use vpr_app::federation::subscriptions::RELAY_HEADER;
use vpr_app::App;
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;

use crate::docs::{LookupResultDoc, ProblemDoc, RelayedLookupDoc, RelayedSubscriptionDoc, SubscriptionDoc};
use crate::error::ApiError;
use crate::extract::{
    authenticate, body, header_or_empty, json, path_id, refused, MAX_BODY_BYTES, MAX_SUBSCRIPTION_BODY,
};

/// Answers a look-up relayed by a peer broker. The relay (a JWS signed by the peer, at most a
/// minute long, used once) names the requester; this broker's agreement decides what it sees.
#[utoipa::path(
    tag = "federation",
    request_body(content = RelayedLookupDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The notices this broker's agreement lets the remote requester see, each minimised to its view", body = LookupResultDoc),
        (status = 403, description = "The relay is refused (`/relay`, naming the rule: signature, audience, lifetime, expired, jti, replay, vouch, subject, claims), or the purpose or role is refused by the agreement (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The audit entry could not be written: nothing is disclosed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["federation"]))
)]
#[post("/v1/federation/lookups")]
pub async fn relayed_lookup(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Federation])?;
    let body = match json(&req, payload, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(refusal) => return Err(refused(&app, &caller, AuditAction::RelayedLookup, refusal).await),
    };
    let result = app.answer_relayed_lookup(&caller, body).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(result))
}

/// What the asking broker is told of a subscription it relayed: its id here, its status and how
/// it was decided. Nothing else of it is the asking broker's.
fn relayed_resource(sub: &vpr_store::subscriptions::Subscription) -> serde_json::Value {
    json!({"id": sub.id, "status": sub.status, "approval": sub.approval, "expires_at": sub.expires_at})
}

/// Holds a subscription a peer broker relays for one of its partners, to notices published
/// here. This broker's agreement admits it (outright, or for its IG leads to approve) and decides
/// every event when it is pushed; events go to the peer's configured base URL.
#[utoipa::path(
    tag = "federation",
    request_body(content = RelayedSubscriptionDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Held here: its id, `active` or `pending-approval`, and the approval record", body = SubscriptionDoc),
        (status = 403, description = "The relay is refused (`/relay`, naming the rule), or the purpose or role is refused by the agreement (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed (pointers under `/subscription`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["federation"]))
)]
#[post("/v1/federation/subscriptions")]
pub async fn relayed_subscription(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Federation])?;
    let body = match json(&req, payload, MAX_SUBSCRIPTION_BODY).await {
        Ok(b) => b,
        Err(refusal) => return Err(refused(&app, &caller, AuditAction::Subscribe, refusal).await),
    };
    let sub = app.answer_relayed_subscription(&caller, body).await?;
    Ok(HttpResponse::Created().insert_header((header::CACHE_CONTROL, "no-store")).json(relayed_resource(&sub)))
}

/// Ends a subscription a peer broker relayed here (its partner ended it there). The relay, in the
/// `VPR-Relay` header, names this subscription.
#[utoipa::path(
    tag = "federation",
    params(
        ("id" = uuid::Uuid, Path, description = "The subscription's id here"),
        ("VPR-Relay" = String, Header, description = "The relay (JWS compact) naming this subscription"),
    ),
    responses(
        (status = 200, description = "Ended"),
        (status = 403, description = "The relay is refused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No subscription relayed by this peer has this id", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["federation"]))
)]
#[delete("/v1/federation/subscriptions/{id}")]
pub async fn end_relayed_subscription(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Federation])?;
    let id = path_id(&id, "subscription")?;
    let sub = app.end_relayed_subscription(&caller, id, header_or_empty(&req, RELAY_HEADER)).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(relayed_resource(&sub)))
}

/// An event a peer broker pushes for a subscription held there on behalf of a partner here: the
/// body is the peer's signed event (`application/jose`), checked against the peer's keys, then
/// signed by this broker and passed on to the partner's webhook. Answered `204` only once the
/// partner acknowledged it; `502` if it did not (the peer retries); `410` if the subscription
/// ended here (the peer ends it too).
#[utoipa::path(
    tag = "federation",
    params(("id" = uuid::Uuid, Path, description = "The subscription's id here")),
    request_body(content = String, content_type = "application/jose"),
    responses(
        (status = 204, description = "Passed on and acknowledged by the partner"),
        (status = 403, description = "Not signed by the peer holding this subscription, or stale", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 410, description = "The subscription ended here", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 502, description = "The partner's webhook did not acknowledge it", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
#[post("/v1/federation/events/{id}")]
pub async fn peer_event(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // Signed by the peer (checked below), not authenticated by a token: limited by address.
    crate::extract::admit_address(&req, crate::limits::Class::Public)?;
    let id = path_id(&id, "subscription")?;
    let bytes = body(payload, MAX_SUBSCRIPTION_BODY).await?;
    let jws = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::BadRequest { detail: "the body must be a compact JWS".into(), errors: vec![] })?;
    let attempt = Some(header_or_empty(&req, "VPR-Delivery-Attempt")).filter(|a| !a.is_empty() && a.len() < 12);
    app.pass_on_peer_event(id, jws, attempt).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Resumes (after retries ran out) or replays (`from_event`) the delivery of a subscription a
/// peer broker relayed here, for its partner. The relay, in the `VPR-Relay` header, names this
/// subscription and the body.
#[utoipa::path(
    tag = "federation",
    params(
        ("id" = uuid::Uuid, Path, description = "The subscription's id here"),
        ("VPR-Relay" = String, Header, description = "The relay (JWS compact) naming this request"),
    ),
    request_body(content = crate::docs::RedeliverInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Delivery resumes"),
        (status = 403, description = "The relay is refused", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No subscription relayed by this peer has this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`from_event` is beyond the last event", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["federation"]))
)]
#[post("/v1/federation/subscriptions/{id}/redeliver")]
pub async fn redeliver_relayed(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Federation])?;
    let id = path_id(&id, "subscription")?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    app.redeliver_relayed(&caller, id, header_or_empty(&req, RELAY_HEADER), body).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({"resumed": true})))
}
