//! The one application error at the HTTP edge. Every error renders as RFC 9457
//! `application/problem+json` with a stable `type`, the failing fields, and the request id.
//! 5xx bodies never carry internal text: the cause goes to the log under the same request id.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use vpr_app::AppError;
use vpr_auth::AuthError;
use vpr_domain::FieldError;
use vpr_store::StoreError;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The current request id, if inside a request.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not the media type expected.
    #[error("{detail}")]
    BadRequest {
        /// What was wrong.
        detail: String,
        /// Failing fields, if any.
        errors: Vec<FieldError>,
    },
    /// The body failed its schema or the domain rules.
    #[error("the request body failed validation")]
    Validation(Vec<FieldError>),
    /// Wrong media type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No or bad bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token lacks a scope.
    #[error("this request needs the `{0}` scope")]
    InsufficientScope(&'static str),
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A peer broker's relay is refused (the failing field is `/relay`).
    #[error("{detail}")]
    RelayRefused {
        /// What was wrong.
        detail: String,
        /// `/relay` and the rule it broke.
        errors: Vec<FieldError>,
    },
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource's state does not allow the change.
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` is stale.
    #[error("the notice has changed: it is now at version {current}")]
    PreconditionFailed {
        /// The current version.
        current: i64,
    },
    /// `If-Match` is missing.
    #[error("this request needs an `If-Match` header with the version you are changing")]
    PreconditionRequired,
    /// An idempotency key was reused for a different request.
    #[error("this `Idempotency-Key` was already used with a different request body")]
    IdempotencyKeyReused,
    /// The resource ended and will not come back.
    #[error("{0}")]
    Gone(String),
    /// A peer broker, or the webhook an event is passed on to, failed.
    #[error("{0}")]
    BadGateway(String),
    /// OAuth token endpoint errors (RFC 6749 §5.2), also rendered as problem details.
    #[error("{0}")]
    OAuth(AuthError),
    /// Over the caller's rate limit (`crate::limits`): retry after the seconds it says.
    #[error("{}", .0.detail)]
    TooManyRequests(crate::limits::Limited),
    /// The request body is larger than the operation accepts.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The most accepted.
        limit: usize,
    },
    /// The path is served, but not with this method.
    #[error("`{path}` does not answer {method}: it answers {allow}")]
    MethodNotAllowed {
        /// The method asked.
        method: String,
        /// The path.
        path: String,
        /// The methods it answers, for `Allow`.
        allow: String,
    },
    /// A dependency (database) is unavailable: retry later.
    #[error("the service is temporarily unavailable")]
    Unavailable(String),
    /// A bug or corrupt data. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// The problem details body.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// Stable problem type URI.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// This occurrence, in words.
    pub detail: String,
    /// Failing fields by JSON pointer, with the rule each broke.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request id, as in the `X-Request-Id` header and the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// OAuth2 `error` code, on token endpoint errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// OAuth2 `error_description`, on token endpoint errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// Base of the problem type URIs.
pub const PROBLEM_BASE: &str = "urn:vpr-broker:problem:";

impl ApiError {
    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest { .. } => ("bad-request", "Malformed request"),
            ApiError::Validation(_) => ("validation", "Request body failed validation"),
            ApiError::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported media type"),
            ApiError::Unauthorized(_) => ("unauthorized", "Authentication required"),
            ApiError::InsufficientScope(_) => ("insufficient-scope", "Insufficient scope"),
            ApiError::Forbidden(_) => ("forbidden", "Not allowed"),
            ApiError::RelayRefused { .. } => ("relay-refused", "Relayed requester refused"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::Conflict(_) => ("conflict", "Conflict with the resource's state"),
            ApiError::PreconditionFailed { .. } => ("stale-version", "Version has changed"),
            ApiError::PreconditionRequired => ("precondition-required", "If-Match required"),
            ApiError::IdempotencyKeyReused => ("idempotency-key-reused", "Idempotency key reused"),
            ApiError::Gone(_) => ("gone", "Gone"),
            ApiError::BadGateway(_) => ("bad-gateway", "The other end failed"),
            ApiError::OAuth(_) => ("oauth", "Token request refused"),
            ApiError::TooManyRequests(_) => ("rate-limited", "Too many requests"),
            ApiError::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            ApiError::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            ApiError::Unavailable(_) => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }

    /// The problem body for this error.
    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let status = self.status_code();
        let detail = match self {
            // Internal causes are logged, never sent.
            ApiError::Unavailable(_) => "the service is temporarily unavailable; retry shortly".to_owned(),
            ApiError::Internal(_) => "an internal error occurred; quote the request id to the service desk".to_owned(),
            ApiError::OAuth(e) if status.is_server_error() => {
                let _ = e;
                "the token service is temporarily unavailable".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Validation(e)
            | ApiError::BadRequest { errors: e, .. }
            | ApiError::RelayRefused { errors: e, .. } => e.clone(),
            ApiError::PayloadTooLarge { limit } => {
                vec![FieldError::new("", "max-body-size", format!("at most {limit} bytes"))]
            }
            _ => Vec::new(),
        };
        let (error, error_description) = match self {
            ApiError::OAuth(e) => (Some(e.oauth_code()), Some(detail.clone())),
            _ => (None, None),
        };
        Problem {
            type_uri: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail,
            errors,
            request_id: current_request_id(),
            error,
            error_description,
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Validation(errors) => ApiError::Validation(errors),
            AppError::InsufficientScope(scope) => ApiError::InsufficientScope(scope),
            AppError::Forbidden(why) => ApiError::Forbidden(why),
            AppError::RelayRefused { rule, detail } => ApiError::RelayRefused {
                errors: vec![FieldError::new("/relay", rule, detail.clone())],
                detail: format!("the relayed requester is refused: {detail}"),
            },
            AppError::NotFound(what) => ApiError::NotFound(what),
            AppError::Gone(what) => ApiError::Gone(what),
            AppError::BadGateway(why) => ApiError::BadGateway(why),
            AppError::Conflict(why) => ApiError::Conflict(why),
            AppError::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
            AppError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            AppError::Unavailable(cause) => ApiError::Unavailable(cause),
            AppError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<crate::limits::Limited> for ApiError {
    fn from(l: crate::limits::Limited) -> Self {
        ApiError::TooManyRequests(l)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        AppError::from(e).into()
    }
}

/// The strong entity tag of a notice version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

impl ApiError {
    /// The headers an error answer carries whatever its body: the bearer challenge, the
    /// current version's `ETag`, `Retry-After` (shared by problem+json and FHIR answers).
    pub fn add_headers(&self, resp: &mut actix_web::HttpResponseBuilder) {
        match self {
            ApiError::Unauthorized(why) => {
                resp.insert_header((header::WWW_AUTHENTICATE, bearer_challenge("invalid_token", why)));
            }
            ApiError::InsufficientScope(scope) => {
                let v = format!("Bearer realm=\"vpr-broker\", error=\"insufficient_scope\", scope=\"{scope}\"");
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer")),
                ));
            }
            ApiError::OAuth(AuthError::InvalidClient(_)) => {
                resp.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vpr-broker\"")));
            }
            ApiError::PreconditionFailed { current } => {
                resp.insert_header((header::ETAG, etag(*current)));
            }
            ApiError::Unavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")));
            }
            ApiError::TooManyRequests(limited) => {
                resp.insert_header((header::RETRY_AFTER, HeaderValue::from(limited.retry_after)));
                resp.insert_header((crate::limits::POLICY_HEADER, limited.headers.policy.clone()));
                resp.insert_header((crate::limits::STATE_HEADER, limited.headers.state.clone()));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    resp.insert_header((header::ALLOW, v));
                }
            }
            _ => {}
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_) | ApiError::Forbidden(_) | ApiError::RelayRefused { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::OAuth(e) => match e {
                AuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
                AuthError::InvalidRequest(_) | AuthError::UnsupportedGrantType | AuthError::InvalidScope(_) => {
                    StatusCode::BAD_REQUEST
                }
                AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
                AuthError::ReplayStore(_) => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::Config(_) | AuthError::Registry(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Internal(cause) | ApiError::Unavailable(cause) => {
                tracing::error!(%status, cause, "request failed")
            }
            ApiError::OAuth(e) if status.is_server_error() => {
                tracing::error!(%status, cause = %e, "token request failed")
            }
            // A flood's refusals would drown the log: each is still counted in the metrics.
            ApiError::TooManyRequests(_) => tracing::debug!(%status, problem = %self, "request refused"),
            other => tracing::info!(%status, problem = %other, "request refused"),
        }
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json")));
        resp.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        self.add_headers(&mut resp);
        resp.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

fn bearer_challenge(code: &str, description: &str) -> HeaderValue {
    // Header values cannot carry quotes or control characters from the description.
    let safe: String =
        description.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ').collect();
    HeaderValue::from_str(&format!("Bearer realm=\"vpr-broker\", error=\"{code}\", error_description=\"{safe}\""))
        .unwrap_or(HeaderValue::from_static("Bearer realm=\"vpr-broker\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn render(e: ApiError) -> (u16, serde_json::Value, Option<String>) {
        let resp = e.error_response();
        let status = resp.status().as_u16();
        let www = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let body = resp.into_body().try_into_bytes().unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or_default(), www)
    }

    #[test]
    fn each_error_has_its_status_and_problem_type() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest { detail: "x".into(), errors: vec![] }, 400, "bad-request"),
            (ApiError::Validation(vec![FieldError::new("/a", "required", "x")]), 422, "validation"),
            (ApiError::UnsupportedMediaType("x".into()), 415, "unsupported-media-type"),
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::InsufficientScope("notices:write"), 403, "insufficient-scope"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("x".into()), 404, "not-found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::PreconditionFailed { current: 3 }, 412, "stale-version"),
            (ApiError::PreconditionRequired, 428, "precondition-required"),
            (ApiError::IdempotencyKeyReused, 422, "idempotency-key-reused"),
            (ApiError::OAuth(AuthError::InvalidClient("x".into())), 401, "oauth"),
            (ApiError::OAuth(AuthError::UnsupportedGrantType), 400, "oauth"),
            (ApiError::Unavailable("db down".into()), 503, "unavailable"),
            (ApiError::Internal("secret cause".into()), 500, "internal"),
        ];
        for (err, status, slug) in cases {
            let (got, body, _) = render(err);
            assert_eq!(got, status);
            assert_eq!(body["status"], status);
            assert_eq!(body["type"], format!("{PROBLEM_BASE}{slug}"));
        }
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let (_, body, _) = render(ApiError::Internal("password=hunter2 at db.rs:12".into()));
        assert!(!body.to_string().contains("hunter2"));
        let (_, body, _) = render(ApiError::Unavailable("connection refused 10.0.0.1".into()));
        assert!(!body.to_string().contains("10.0.0.1"));
    }

    #[test]
    fn unauthorized_carries_a_bearer_challenge() {
        let (_, _, www) = render(ApiError::Unauthorized("the access token has expired".into()));
        assert_eq!(
            www.as_deref(),
            Some("Bearer realm=\"vpr-broker\", error=\"invalid_token\", error_description=\"the access token has expired\"")
        );
        let (_, _, www) = render(ApiError::InsufficientScope("notices:write"));
        assert!(www.unwrap_or_default().contains("insufficient_scope"));
    }

    #[test]
    fn validation_lists_every_field() {
        let (_, body, _) = render(ApiError::Validation(vec![
            FieldError::new("/category", "required", "`category` is required"),
            FieldError::new("/review_date", "review-interval", "too far"),
        ]));
        assert_eq!(body["errors"][0]["pointer"], "/category");
        assert_eq!(body["errors"][1]["rule"], "review-interval");
    }
}
