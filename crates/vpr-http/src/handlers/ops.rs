//! Operations: liveness, readiness, metrics and the OpenAPI document.

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::blocking;
use vpr_app::App;

use crate::docs::OpenApiDoc;

/// Liveness: the process is up.
#[utoipa::path(tag = "operations", responses((status = 200, description = "Alive", body = Object)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and every migration is applied.
#[utoipa::path(tag = "operations", responses(
    (status = 200, description = "Ready", body = Object),
    (status = 503, description = "Not ready: `{\"status\": \"unavailable\", \"database\": ..., \"reason\": ...}` says why (the database cannot be reached, or migrations are pending), with `Retry-After`", body = Object),
))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<App>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let backend = store.backend().name();
    let ready = blocking(move || Ok(store.ready())).await?;
    if let Err(e) = ready {
        // Why, in words an operator can act on; the cause itself goes to the log.
        let reason = match &e {
            vpr_store::StoreError::Migration(_) => "migrations are pending: run `vpr-broker migrate`",
            e if e.is_outage() => "the database cannot be reached",
            _ => "the database answered with an error",
        };
        tracing::warn!(cause = %e, reason, "not ready");
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header(("retry-after", "5"))
            .insert_header(("cache-control", "no-store"))
            .json(json!({"status": "unavailable", "database": backend, "reason": reason})));
    }
    let mut body = serde_json::Map::new();
    body.insert("status".into(), json!("ready"));
    body.insert("database".into(), json!(backend));
    if !state.tokens.peers().is_empty() {
        // Peers never make this broker unready (its own answers do not depend on them): each
        // is listed with its circuit, `open` while it is skipped after repeated failures.
        body.insert("peers".into(), json!(state.federation.states(&state.tokens.peers())));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// Prometheus metrics.
#[utoipa::path(tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

/// This API's OpenAPI 3.1 document, generated from the routes that are served.
#[utoipa::path(tag = "operations", responses((status = 200, description = "OpenAPI document", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi(doc: web::Data<OpenApiDoc>) -> HttpResponse {
    HttpResponse::Ok().json(&doc.0)
}

/// The newest signed audit checkpoint (tree size and root hash, signed by the broker as JWS).
/// Anyone holding an older checkpoint can check that the log only grew.
#[utoipa::path(tag = "audit", responses(
    (status = 200, description = "The newest checkpoint", body = Object),
    (status = 404, description = "Nothing sealed yet", body = crate::docs::ProblemDoc, content_type = "application/problem+json"),
))]
#[get("/v1/audit/checkpoints/latest")]
pub async fn latest_checkpoint(state: web::Data<App>, req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    crate::extract::admit_address(&req, crate::limits::Class::Public)?;
    let store = state.store.clone();
    let cp = blocking(move || store.latest_checkpoint().map_err(ApiError::from)).await?;
    let cp = cp.ok_or_else(|| ApiError::NotFound("no audit entry has been sealed yet".into()))?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(cp))
}
