//! The request pipeline. Every handler runs its request through these steps, in this order:
//!
//! ```text
//! authenticate (bearer JWT)  -> authenticate()
//! validate input             -> json_body() then the domain rules (vpr_domain::NoticeRules)
//! resolve principal          -> done by authenticate(): organisation, type, system, scopes
//! policy decision            -> (the agreement-as-code issue adds decide() here)
//! read/write store           -> blocking(): sync diesel calls moved off the async runtime
//! minimise to the view       -> (with the policy decision: the view it names)
//! append audit (durable)     -> (the policy issue: committed before the response)
//! respond
//! ```
//!
//! Handlers call these in sequence so a reader sees the order at a glance.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use serde_json::Value;
use vpr_auth::{Principal, Scope};

use crate::error::ApiError;
use crate::AppState;

/// Authenticates the bearer token and resolves the principal, then checks it holds `scope`.
pub fn authenticate(state: &AppState, req: &HttpRequest, scope: Scope) -> Result<Principal, ApiError> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("an `Authorization: Bearer` access token is required".into()))?;
    let token = auth
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("the `Authorization` header must be `Bearer <token>`".into()))?;
    let principal = state
        .tokens
        .verify_access_token(token, state.clock.now())
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if !principal.has(scope) {
        return Err(ApiError::InsufficientScope(scope.code()));
    }
    Ok(principal)
}

/// Parses a JSON request body, insisting on `application/json`.
pub fn json_body(req: &HttpRequest, body: &[u8]) -> Result<Value, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType("the request body must be `application/json`".into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        detail: "the request body is not valid JSON".into(),
        errors: vec![vpr_domain::FieldError::new(
            "",
            "json-syntax",
            format!("invalid JSON at line {} column {}", e.line(), e.column()),
        )],
    })?;
    if !value.is_object() {
        return Err(ApiError::Validation(vec![vpr_domain::FieldError::new(
            "",
            "type",
            "the request body must be a JSON object",
        )]));
    }
    Ok(value)
}

/// Runs a synchronous store call on the blocking pool.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    web::block(f).await.map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// An integer query parameter in `min..=max`, or `default` when absent; a bad value is a
/// validation problem naming the parameter.
pub fn query_int(req: &HttpRequest, name: &str, min: i64, max: i64, default: i64) -> Result<i64, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).map_err(|_| {
        ApiError::Validation(vec![vpr_domain::FieldError::new("", "query-string", "the query string is malformed")])
    })?;
    let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let Some(raw) = values.next() else { return Ok(default) };
    let bad = |rule: &str, detail: String| {
        ApiError::Validation(vec![vpr_domain::FieldError::new(format!("/{name}"), rule, detail)])
    };
    if values.next().is_some() {
        return Err(bad("repeated", format!("`{name}` is given twice")));
    }
    let n: i64 = raw.trim().parse().map_err(|_| bad("type", format!("`{name}` must be an integer")))?;
    if !(min..=max).contains(&n) {
        return Err(bad("range", format!("`{name}` must be {min} to {max}")));
    }
    Ok(n)
}

/// A text query parameter, if given once.
pub fn query_text(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).map_err(|_| {
        ApiError::Validation(vec![vpr_domain::FieldError::new("", "query-string", "the query string is malformed")])
    })?;
    let values: Vec<String> = pairs.into_iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
    match values.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(ApiError::Validation(vec![vpr_domain::FieldError::new(
            format!("/{name}"),
            "repeated",
            format!("`{name}` is given twice"),
        )])),
    }
}
