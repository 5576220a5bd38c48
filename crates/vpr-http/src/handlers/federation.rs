//! `POST /v1/federation/lookups`: a look-up relayed by a peer broker for one of its partners,
//! decided, minimised and audited here under this broker's agreement. Peer brokers only.

use actix_web::http::header;
use actix_web::{post, web, HttpRequest, HttpResponse};
use vpr_app::App;
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;

use crate::docs::{LookupResultDoc, ProblemDoc, RelayedLookupDoc};
use crate::error::ApiError;
use crate::extract::{authenticate, json, refused, MAX_BODY_BYTES};

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
