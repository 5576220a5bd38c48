//! The break-glass queue: IG leads list emergency accesses awaiting review and record each
//! outcome. Every use is audited.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::{Principal, Scope};
use vpr_store::audit::AuditEntry;

use crate::disclose::{audit_base, refuse_unread};
use crate::error::ApiError;
use crate::handlers::directives::IG_ROLES;
use crate::handlers::read_body;
use crate::openapi::{BreakGlassReviewDoc, ProblemDoc};
use crate::pipeline::{authenticate, blocking, json_body};
use crate::AppState;

/// The IG reviewer, from `VPR-User-Id` and `VPR-User-Role` (list) or the body (review).
pub(crate) fn ig_reviewer(state: &AppState, principal: &Principal, role: &str) -> Result<(), ApiError> {
    let holds = state.tokens.registry().system(&principal.client_id).is_some_and(|s| s.roles.contains(role));
    if IG_ROLES.contains(&role) && holds && state.agreement.role_allowed(role, principal.org_type) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the break-glass queue is for information governance roles only".into()))
    }
}

fn audit_of(
    state: &AppState,
    principal: &Principal,
    action: &str,
    user: &str,
    role: &str,
    reference: Option<String>,
    decision: &str,
) -> AuditEntry {
    AuditEntry {
        actor_user: Some(user.to_owned()),
        actor_role: Some(role.to_owned()),
        context_ref: reference,
        decision: decision.to_owned(),
        ..audit_base(state, principal, action, 200)
    }
}

/// `?status=pending` (default) or an outcome.
#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    status: Option<String>,
}

/// Emergency accesses awaiting IG review (or with a given outcome), newest first.
#[utoipa::path(tag = "audit",
    params(
        ("status" = Option<String>, Query, description = "`pending` (default), `appropriate`, `inappropriate` or `referred`"),
        ("VPR-User-Id" = String, Header, description = "The IG reviewer"),
        ("VPR-User-Role" = String, Header, description = "An IG role: ig-lead, caldicott-guardian, dpo"),
    ),
    responses(
        (status = 200, description = "The queue", body = Object),
        (status = 403, description = "Not an IG role", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"])))]
#[get("/v1/audit/break-glass")]
pub async fn queue(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<QueueQuery>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (user, role) = (header("VPR-User-Id"), header("VPR-User-Role"));
    if let Err(refusal) = ig_reviewer(&state, &principal, &role) {
        return Err(refuse_unread(&state, &principal, "break-glass-queue", refusal).await);
    }
    let status = q.status.clone().unwrap_or_else(|| "pending".into());
    if !["pending", "appropriate", "inappropriate", "referred"].contains(&status.as_str()) {
        return Err(ApiError::Validation(vec![vpr_domain::FieldError::new("", "status", "unknown review status")]));
    }
    let st = state.clone();
    let audit = audit_of(&state, &principal, "break-glass-queue", &user, &role, None, "permit");
    let entries = blocking(move || {
        let entries = st.store.break_glass_entries(&status, 500)?;
        st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(entries)
    })
    .await?;
    let items: Vec<Value> = entries
        .iter()
        .map(|s| {
            let e = &s.entry;
            json!({
                "audit_id": e.id, "seq": s.seq, "at": e.at, "request_id": e.request_id,
                "organisation": e.actor_org, "system": e.actor_system, "user": e.actor_user, "role": e.actor_role,
                "purpose": e.purpose, "justification": e.justification, "decision": e.decision,
                "notices": e.notices, "review": e.ig_review,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(json!({ "entries": items })))
}

/// Records the IG outcome for one emergency access.
#[utoipa::path(tag = "audit",
    params(("id" = Uuid, Path, description = "The audit entry of the break-glass access")),
    request_body(content = BreakGlassReviewDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded", body = Object),
        (status = 403, description = "Not an IG role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "No pending break-glass access has this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"])))]
#[post("/v1/audit/break-glass/{id}/review")]
pub async fn review(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let id =
        Uuid::parse_str(&id).map_err(|_| ApiError::Conflict("no pending break-glass access has this id".into()))?;
    let body = json_body(&req, &read_body(payload).await?)?;
    let input: vpr_domain::validate::BreakGlassReviewInput =
        vpr_domain::validate::parse_body(vpr_domain::validate::BodySchema::BreakGlassReview, &body)
            .map_err(ApiError::Validation)?;
    if let Err(refusal) = ig_reviewer(&state, &principal, &input.reviewer.role) {
        return Err(refuse_unread(&state, &principal, "break-glass-review", refusal).await);
    }
    let mut audit = audit_of(
        &state,
        &principal,
        "break-glass-review",
        &input.reviewer.user_id,
        &input.reviewer.role,
        Some(id.to_string()),
        &input.outcome,
    );
    audit.justification = Some(input.note.clone());
    let st = state.clone();
    let outcome = input.outcome.clone();
    blocking(move || {
        st.store.audited(|tx| {
            if !tx.review_break_glass(id, &outcome)? {
                return Err(ApiError::Conflict("no pending break-glass access has this id".into()));
            }
            Ok(((), audit))
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "audit_id": id, "review": input.outcome })))
}
