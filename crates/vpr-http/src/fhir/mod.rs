//! The FHIR R4 facade for shared care records: notices as `Flag` resources that render as
//! alerts, topic-based subscriptions per the R4 Subscriptions Backport IG riding on the broker's
//! delivery guarantees, and the audit log as `AuditEvent`s for IG tools.
//!
//! Every read goes through the same decision point and audit as the REST API: the Flag is built
//! from the notice already minimised to the decided view, so a field outside the view cannot
//! appear. Errors are `OperationOutcome`s.

pub mod audit_event;
pub mod capability;
pub mod search;
pub mod subscription;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};
pub use vpr_app::render::fhir::{
    base, coding, tidy, BACKPORT, FHIR_JSON, FHIR_VERSION, NHS_NUMBER, ODS_CODE, TOPIC, UK_CORE_FLAG, VPR_FHIR,
};

use crate::error::{current_request_id, ApiError};

/// An error answered as an `OperationOutcome`.
#[derive(Debug)]
pub struct FhirError(pub ApiError);

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<vpr_app::AppError> for FhirError {
    fn from(e: vpr_app::AppError) -> Self {
        Self(ApiError::from(e))
    }
}

impl std::fmt::Display for FhirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The FHIR issue type for an error.
fn issue_code(e: &ApiError) -> &'static str {
    match e {
        ApiError::BadRequest { .. } => "structure",
        ApiError::Validation(_) | ApiError::IdempotencyKeyReused => "invalid",
        ApiError::UnsupportedMediaType(_) => "not-supported",
        ApiError::Unauthorized(_) => "login",
        ApiError::InsufficientScope(_) | ApiError::Forbidden(_) | ApiError::RelayRefused { .. } => "forbidden",
        ApiError::NotFound(_) | ApiError::Gone(_) => "not-found",
        ApiError::Conflict(_) | ApiError::PreconditionFailed { .. } | ApiError::PreconditionRequired => "conflict",
        ApiError::OAuth(_) => "security",
        ApiError::Unavailable(_) | ApiError::BadGateway(_) => "transient",
        ApiError::TooManyRequests(_) => "throttled",
        ApiError::PayloadTooLarge { .. } => "too-costly",
        ApiError::MethodNotAllowed { .. } => "not-supported",
        ApiError::Internal(_) => "exception",
    }
}

/// An `OperationOutcome` for an error: one issue per failing field (its FHIRPath-like location
/// and rule), or one for the whole request. Internal causes are never included.
pub fn operation_outcome(e: &ApiError) -> Value {
    let problem = e.problem();
    let code = issue_code(e);
    let mut issues: Vec<Value> = problem
        .errors
        .iter()
        .map(|f| {
            json!({"severity": "error", "code": code, "details": {"text": f.detail},
                   "diagnostics": format!("{} ({})", f.rule, f.pointer), "expression": [f.pointer.trim_start_matches('/').replace('/', ".")]})
        })
        .collect();
    if issues.is_empty() {
        issues.push(json!({"severity": "error", "code": code, "diagnostics": problem.detail}));
    }
    for issue in &mut issues {
        if let (Some(map), Some(id)) = (issue.as_object_mut(), &problem.request_id) {
            map.insert(
                "details".into(),
                json!({"text": format!("{} (request id {id})", map.get("details").and_then(|d| d["text"].as_str()).unwrap_or(&problem.detail))}),
            );
        }
        if let Some(map) = issue.as_object_mut() {
            if map.get("expression").is_some_and(|e| e[0] == "") {
                map.remove("expression");
            }
        }
    }
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) | ApiError::Unavailable(cause) = &self.0 {
            tracing::error!(request_id = ?current_request_id(), error = %cause, "FHIR request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, FHIR_JSON));
        resp.insert_header((header::CACHE_CONTROL, "no-store"));
        self.0.add_headers(&mut resp);
        resp.body(tidy(operation_outcome(&self.0)).to_string())
    }
}

/// A FHIR JSON response.
pub fn fhir_ok(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, FHIR_JSON))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(tidy(body.clone()).to_string())
}

/// Accepts `application/fhir+json` or `application/json` bodies.
pub fn fhir_body(req: &HttpRequest, body: &[u8]) -> Result<Value, ApiError> {
    crate::extract::json_body(req, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpr_domain::FieldError;

    #[test]
    fn errors_become_operation_outcomes_naming_the_field() {
        let e = ApiError::Validation(vec![FieldError::new("/channel/endpoint", "https-required", "use https")]);
        let oo = operation_outcome(&e);
        assert_eq!(oo["resourceType"], "OperationOutcome");
        assert_eq!(oo["issue"][0]["code"], "invalid");
        assert_eq!(oo["issue"][0]["expression"][0], "channel.endpoint");
        assert_eq!(oo["issue"][0]["diagnostics"], "https-required (/channel/endpoint)");
        let oo = operation_outcome(&ApiError::Internal("secret database detail".into()));
        assert!(!oo.to_string().contains("secret"));
        assert_eq!(oo["issue"][0]["code"], "exception");
        assert_eq!(operation_outcome(&ApiError::Forbidden("no".into()))["issue"][0]["code"], "forbidden");
    }
}
