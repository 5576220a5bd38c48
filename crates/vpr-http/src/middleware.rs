//! Request id, structured request log and HTTP metrics, for every request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use vpr_app::App;

use crate::error::REQUEST_ID;
use crate::extract::RequestId;
use crate::limits::RateHeaders;

/// The request id header, echoed on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    ok.then(|| v.to_owned())
}

/// Gives the request an id (a caller's well-formed `X-Request-Id`, or a new one), runs it inside
/// a span carrying that id so every log line names it, and records metrics.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = incoming_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.path());
    let metrics = req.app_data::<web::Data<App>>().map(|s| s.metrics.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let result = REQUEST_ID.scope(id.clone(), next.call(req).instrument(span.clone())).await;
    let _enter = span.enter();
    let mut resp = result?;
    let route = resp.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(m) = metrics {
        m.http_requests.with_label_values(&[method.as_str(), route.as_str(), &status.to_string()]).inc();
        m.http_duration.with_label_values(&[method.as_str(), route.as_str()]).observe(elapsed.as_secs_f64());
    }
    tracing::info!(status, route, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "served");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    // A limited request's answer says how much of its limit is left (`crate::limits`).
    let limited = resp.request().extensions().get::<RateHeaders>().cloned();
    if let Some(h) = limited {
        h.apply(resp.headers_mut());
    }
    Ok(resp)
}

fn problem(pointer: &str, rule: &str, detail: String) -> actix_web::Error {
    crate::error::ApiError::Validation(vec![vpr_domain::FieldError::new(pointer, rule, detail)]).into()
}

/// `web::Query` extraction failures as problem+json.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|e, _| problem("", "query-string", e.to_string()))
}

/// `web::Json` extraction failures as problem+json.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().error_handler(|e, _| problem("", "json", e.to_string()))
}

/// `web::Path` extraction failures as problem+json.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|e, _| problem("", "path", e.to_string()))
}
