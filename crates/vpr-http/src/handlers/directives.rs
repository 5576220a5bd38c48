//! `POST /v1/consents` and `POST /v1/objections`: IG records a subject's consent or objection
//! for a purpose, with evidence. The agreement decides what each changes.

use actix_web::{post, web, HttpRequest, HttpResponse};
use vpr_app::App;
use vpr_auth::Scope;
use vpr_store::directives::DirectiveKind;

use crate::docs::{ConsentInputDoc, ObjectionInputDoc, ProblemDoc};
use crate::error::ApiError;
use crate::extract::{authenticate, json, MAX_BODY_BYTES};

async fn record(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
    kind: DirectiveKind,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::IgWrite])?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    let recorded = app.record_directive(&caller, kind, body).await?;
    Ok(HttpResponse::Created().json(recorded))
}

/// Records a subject's consent (or its withdrawal) for a purpose (IG roles only).
#[utoipa::path(
    tag = "consents and objections",
    request_body(content = ConsentInputDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded", body = Object),
        (status = 403, description = "Not an IG role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["ig:write"]))
)]
#[post("/v1/consents")]
pub async fn consent(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    record(app, req, payload, DirectiveKind::Consent).await
}

/// Records a subject's objection for a purpose, upheld or overridden with a reason (IG roles only).
#[utoipa::path(
    tag = "consents and objections",
    request_body(content = ObjectionInputDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Recorded", body = Object),
        (status = 403, description = "Not an IG role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed (an override needs a reason)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["ig:write"]))
)]
#[post("/v1/objections")]
pub async fn objection(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    record(app, req, payload, DirectiveKind::Objection).await
}
