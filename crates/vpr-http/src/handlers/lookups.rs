//! `POST /v1/lookups`: the notices about a person, address or telephone number that the
//! agreement lets the caller see, for a purpose, each at its own view.

use actix_web::http::header;
use actix_web::{post, web, HttpRequest, HttpResponse};
use serde_json::json;
use vpr_auth::Scope;

use crate::disclose::{govern, refuse_unread, subject_keys, AccessRequest, Read};
use crate::error::ApiError;
use crate::handlers::read_body;
use crate::openapi::{LookupInputDoc, LookupResultDoc, ProblemDoc};
use crate::pipeline::{authenticate, blocking, json_body};
use crate::AppState;

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
pub async fn lookup(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Lookups)?;
    let parsed = match json_body(&req, &read_body(payload).await?) {
        Ok(body) => vpr_domain::validate::lookup(&body).map_err(ApiError::Validation),
        Err(e) => Err(e),
    };
    let valid = match parsed {
        Ok(v) => v,
        Err(refusal) => return Err(refuse_unread(&state, &principal, "lookup", refusal).await),
    };
    let access = AccessRequest {
        purpose: valid.input.purpose.clone(),
        user_id: valid.input.requester.user_id.clone(),
        role: valid.input.requester.role.clone(),
        context_ref: valid.input.context.as_ref().and_then(|c| c.reference.clone()),
        justification: valid.input.break_glass.as_ref().map(|b| b.justification.trim().to_owned()),
    };
    let now = state.clock.now();
    let st = state.clone();
    let purpose = access.purpose.clone();
    let disclosure = blocking(move || {
        let (blind, subject_refs) = subject_keys(&st, &valid.subject);
        let mut candidates = Vec::new();
        for (id, matched) in st.store.find_by_blind_indexes(&blind)? {
            if let Some(n) = st.store.get(id)? {
                // Only notices in force are disclosed by look-ups.
                if n.status == vpr_domain::vocab::NoticeStatus::Active {
                    candidates.push((n, matched));
                }
            }
        }
        let read = Read::new("lookup", subject_refs, candidates, 403);
        govern(&st, &principal, &access, read, now)
    })
    .await?;
    if let Some(why) = disclosure.refused {
        return Err(ApiError::Forbidden(why));
    }
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
        "lookup_id": disclosure.audit_id,
        "purpose": purpose,
        "agreement_version": state.agreement.version,
        "results": disclosure.results,
    })))
}
