//! `POST /v1/lookups`: the notices about a person, address or telephone number that the
//! agreement lets the caller see, for a purpose, each at its own view.

use actix_web::http::header;
use actix_web::{post, web, HttpRequest, HttpResponse};
use vpr_app::App;
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;

use crate::docs::{LookupInputDoc, LookupResultDoc, ProblemDoc};
use crate::error::ApiError;
use crate::extract::{authenticate, json, refused, MAX_BODY_BYTES};

/// Looks a subject up. Identifiers travel in the body, never the URL.
#[utoipa::path(
    tag = "lookups",
    request_body(content = LookupInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The notices the agreement lets you see, each minimised to its view (an empty list when none)", body = LookupResultDoc),
        (status = 403, description = "The purpose, role or break-glass justification is refused (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The audit entry could not be written: nothing is disclosed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["lookups"]))
)]
#[post("/v1/lookups")]
pub async fn lookup(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::Lookups])?;
    let body = match json(&req, payload, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(refusal) => return Err(refused(&app, &caller, AuditAction::Lookup, refusal).await),
    };
    let result = app.lookup(&caller, body).await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(result))
}
