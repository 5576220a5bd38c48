//! The audit log's public side and IG's break-glass queue: inclusion and consistency proofs
//! over the sealed log (RFC 9162), emergency accesses awaiting review and their outcomes.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use vpr_app::App;
use vpr_audit::hex;
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;

use crate::docs::{BreakGlassReviewDoc, ProblemDoc};
use crate::error::ApiError;
use crate::extract::{authenticate, header_or_empty, json, Query, MAX_BODY_BYTES};

/// The audit path proving that entry `leaf_index` is in the tree of `tree_size` entries.
#[utoipa::path(tag = "audit",
    params(("leaf_index" = i64, Query, description = "Entry position in the tree"), ("tree_size" = i64, Query, description = "A checkpointed tree size")),
    responses(
        (status = 200, description = "`leaf_hash` and `audit_path` (hex, leaf first); hash up to the checkpoint's `root_hash`", body = Object),
        (status = 422, description = "Index or size out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[get("/v1/audit/proofs/inclusion")]
pub async fn inclusion(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    crate::extract::admit_address(&req, crate::limits::Class::Public)?;
    let q = Query::of(&req)?;
    let index = q.int("leaf_index", 0, i64::MAX)?.ok_or_else(|| required("leaf_index"))?;
    let size = q.int("tree_size", 1, i64::MAX)?.ok_or_else(|| required("tree_size"))?;
    let proof = app.inclusion_proof(index, size).await?;
    Ok(HttpResponse::Ok().json(json!({
        "leaf_index": index, "tree_size": size, "leaf_hash": hex(&proof.leaf),
        "audit_path": proof.path.iter().map(|h| hex(h)).collect::<Vec<_>>(),
    })))
}

fn required(name: &str) -> ApiError {
    ApiError::Validation(vec![vpr_domain::FieldError::new(
        format!("/{name}"),
        "required",
        format!("`{name}` is required"),
    )])
}

/// The proof that the tree of `second` entries extends the tree of `first` entries.
#[utoipa::path(tag = "audit",
    params(("first" = i64, Query, description = "The older checkpointed tree size"), ("second" = i64, Query, description = "The newer checkpointed tree size")),
    responses(
        (status = 200, description = "`consistency_path` (hex), as RFC 9162 §2.1.4", body = Object),
        (status = 422, description = "Sizes out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[get("/v1/audit/proofs/consistency")]
pub async fn consistency(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    crate::extract::admit_address(&req, crate::limits::Class::Public)?;
    let q = Query::of(&req)?;
    let first = q.int("first", 1, i64::MAX)?.ok_or_else(|| required("first"))?;
    let second = q.int("second", 1, i64::MAX)?.ok_or_else(|| required("second"))?;
    let proof = app.consistency_proof(first, second).await?;
    Ok(HttpResponse::Ok().json(json!({
        "first": first, "second": second, "consistency_path": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
    })))
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
pub async fn queue(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let (user, role) = (header_or_empty(&req, "VPR-User-Id"), header_or_empty(&req, "VPR-User-Role"));
    let who = app.check_reviewer(&caller, user, role, AuditAction::BreakGlassQueue).await?;
    let status = Query::of(&req)?
        .one_of("status", &["pending", "appropriate", "inappropriate", "referred"])?
        .unwrap_or_else(|| "pending".into());
    let entries = app.break_glass_queue(&caller, who, status).await?;
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
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::Conflict("no pending break-glass access has this id".into()))?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    let input: vpr_domain::validate::BreakGlassReviewInput =
        vpr_domain::validate::parse_body(vpr_domain::validate::BodySchema::BreakGlassReview, &body)
            .map_err(ApiError::Validation)?;
    let outcome = input.outcome.clone();
    app.review_break_glass(&caller, id, input).await?;
    Ok(HttpResponse::Ok().json(json!({ "audit_id": id, "review": outcome })))
}
