//! `POST /v1/consents` and `POST /v1/objections`: IG records a subject's consent or objection
//! for a purpose, with evidence. The agreement decides what each changes.

use actix_web::{post, web, HttpRequest, HttpResponse};
use serde_json::json;
use vpr_auth::{Principal, Scope};
use vpr_store::audit::AuditEntry;
use vpr_store::directives::{DirectiveKind, NewDirective};

use crate::disclose::{audit_base, subject_keys};
use crate::error::ApiError;
use crate::handlers::read_body;
use crate::openapi::{ConsentInputDoc, ObjectionInputDoc, ProblemDoc};
use crate::pipeline::{authenticate, blocking, json_body};
use crate::AppState;

/// Roles that may record consents and objections.
pub const IG_ROLES: [&str; 3] = ["ig-lead", "caldicott-guardian", "dpo"];

async fn record(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    kind: DirectiveKind,
) -> Result<HttpResponse, ApiError> {
    let principal: Principal = authenticate(&state, &req, Scope::IgWrite)?;
    let body = json_body(&req, &read_body(payload).await?)?;
    let now = state.clock.now();
    let valid = vpr_domain::validate::directive(&body, kind == DirectiveKind::Objection, now.date_naive())
        .map_err(ApiError::Validation)?;
    let input = &valid.input;
    if !state.agreement.purposes.contains_key(&input.purpose) {
        return Err(ApiError::Validation(vec![vpr_domain::FieldError::new(
            "/purpose",
            "agreement-purpose",
            format!("`{}` is not a purpose of the agreement", input.purpose),
        )]));
    }
    let role = &input.requester.role;
    let holds = state.tokens.registry().system(&principal.client_id).is_some_and(|s| s.roles.contains(role));
    if !IG_ROLES.contains(&role.as_str()) || !holds || !state.agreement.role_allowed(role, principal.org_type) {
        return Err(ApiError::Forbidden(
            "consents and objections are recorded by information governance roles only".into(),
        ));
    }
    let (blind, subject_refs) = subject_keys(&state, &valid.subject);
    let directive = NewDirective {
        kind,
        blind_indexes: blind,
        purpose: input.purpose.clone(),
        status: input.status.clone(),
        evidence_reference: input.evidence_reference.clone(),
        reason: input.reason.clone(),
        effective_from: input.effective_from.unwrap_or(now.date_naive()),
        expires_on: input.expires_on,
        recorded_by_org: principal.org.as_str().to_owned(),
        recorded_by_user: input.requester.user_id.clone(),
    };
    let action = match kind {
        DirectiveKind::Consent => vpr_domain::audit::AuditAction::Consent.code(),
        DirectiveKind::Objection => vpr_domain::audit::AuditAction::Objection.code(),
    };
    let audit = AuditEntry {
        actor_user: Some(input.requester.user_id.clone()),
        actor_role: Some(role.clone()),
        purpose: Some(input.purpose.clone()),
        context_ref: Some(input.evidence_reference.clone()),
        subject_refs,
        decision: input.status.clone(),
        ..audit_base(&state, &principal, action, 201)
    };
    let store = state.store.clone();
    let id =
        blocking(move || store.audited(|tx| Ok::<_, ApiError>((tx.record_directive(&directive, now)?, audit)))).await?;
    Ok(HttpResponse::Created().json(json!({
        "id": id, "kind": action, "purpose": input.purpose, "status": input.status,
        "evidence_reference": input.evidence_reference, "recorded_at": now,
    })))
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
pub async fn consent(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    record(state, req, payload, DirectiveKind::Consent).await
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
pub async fn objection(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    record(state, req, payload, DirectiveKind::Objection).await
}
