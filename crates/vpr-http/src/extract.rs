//! Reading a request, each thing in one place: the bearer token (→ a [`Caller`] with the request
//! id), the JSON body, the query string, the `VPR-*` headers a read asserts, `If-Match` and
//! `Idempotency-Key`.

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;
use uuid::Uuid;
use vpr_app::{Access, App, AppError, Caller};
use vpr_auth::{Principal, Scope};
use vpr_domain::audit::AuditAction;
use vpr_domain::FieldError;

use crate::error::ApiError;
use crate::limits::{Class, Limits};

/// The request id the middleware gave this request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// This request's id.
pub fn request_id(req: &HttpRequest) -> String {
    req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
}

/// Authenticates the bearer token and resolves the principal, then checks it holds one of
/// `scopes` (the last is named in a refusal).
pub fn authenticate(app: &App, req: &HttpRequest, scopes: &[Scope]) -> Result<Caller, ApiError> {
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
    let principal: Principal =
        app.tokens.verify_access_token(token, app.clock.now()).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    admit(app, req, &principal, scopes)?;
    if !scopes.iter().any(|s| principal.has(*s)) {
        return Err(ApiError::InsufficientScope(scopes.last().map_or("", |s| s.code())));
    }
    Ok(Caller::new(principal, request_id(req)))
}

/// Counts a request no token names against its client address's `public` bucket (token
/// requests have their own, `token`), before any work.
pub fn admit_address(req: &HttpRequest, class: Class) -> Result<(), ApiError> {
    let Some(limits) = req.app_data::<web::Data<Limits>>() else { return Ok(()) };
    if let Some(headers) = limits.admit(class, &client_address(req), None)? {
        req.extensions_mut().insert(headers);
    }
    Ok(())
}

/// The client's address as a bucket key: the peer's IP (an IPv6 client by its /64, which it
/// can change addresses within at will).
pub fn client_address(req: &HttpRequest) -> String {
    match req.peer_addr().map(|a| a.ip()) {
        Some(std::net::IpAddr::V6(ip)) => {
            let s = ip.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

/// Counts the request against its system's limit (`crate::limits`), before any work: the IG
/// endpoints (those needing `audit:read` or `ig:write` only) against the system's IG bucket,
/// everything else against its API bucket. The headers for the answer are kept on the request.
fn admit(app: &App, req: &HttpRequest, principal: &Principal, scopes: &[Scope]) -> Result<(), ApiError> {
    let Some(limits) = req.app_data::<web::Data<Limits>>() else { return Ok(()) };
    let ig = !scopes.is_empty() && scopes.iter().all(|s| matches!(s, Scope::AuditRead | Scope::IgWrite));
    let class = if ig { Class::Ig } else { Class::Api };
    // A system's own rate in the registry replaces the API default only, never the IG one.
    let own = match class {
        Class::Api => app.tokens.registry().system(&principal.client_id).and_then(|s| s.rate_limit),
        _ => None,
    };
    if let Some(headers) = limits.admit(class, &principal.client_id, own)? {
        req.extensions_mut().insert(headers);
    }
    Ok(())
}

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest subscription body: a cohort of registered patients can be large.
pub const MAX_SUBSCRIPTION_BODY: usize = 2 * 1024 * 1024;

/// Reads a request body up to `max` bytes, refusing larger ones with a problem.
pub async fn body(mut payload: web::Payload, max: usize) -> Result<web::Bytes, ApiError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest {
            detail: "the request body could not be read".into(),
            errors: vec![],
        })?;
        if buf.len() + chunk.len() > max {
            return Err(ApiError::PayloadTooLarge { limit: max });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Parses a JSON request body, insisting on `application/json` (or a `+json` type).
pub fn json_body(req: &HttpRequest, body: &[u8]) -> Result<Value, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType("the request body must be `application/json`".into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        detail: "the request body is not valid JSON".into(),
        errors: vec![FieldError::new(
            "",
            "json-syntax",
            format!("invalid JSON at line {} column {}", e.line(), e.column()),
        )],
    })?;
    if !value.is_object() {
        return Err(ApiError::Validation(vec![FieldError::new("", "type", "the request body must be a JSON object")]));
    }
    Ok(value)
}

/// Reads and parses a JSON body of at most `max` bytes.
pub async fn json(req: &HttpRequest, payload: web::Payload, max: usize) -> Result<Value, ApiError> {
    json_body(req, &body(payload, max).await?)
}

/// A path id; anything but a UUID names nothing (`what` says what was looked for).
pub fn path_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("no {what} has this id")))
}

fn bad(name: &str, rule: &str, detail: String) -> ApiError {
    ApiError::Validation(vec![FieldError::new(format!("/{name}"), rule, detail)])
}

/// A query string, parsed once; every bad value is a problem naming its parameter.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses the request's query string.
    pub fn of(req: &HttpRequest) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(req.query_string()).map(Query).map_err(|_| {
            ApiError::Validation(vec![FieldError::new("", "query-string", "the query string is malformed")])
        })
    }

    /// Every parameter, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// A parameter given at most once.
    pub fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(bad(name, "repeated", format!("`{name}` is given twice")));
        }
        Ok(first)
    }

    /// An integer in `min..=max`, if given.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.text(name)? else { return Ok(None) };
        let n: i64 = raw.trim().parse().map_err(|_| bad(name, "type", format!("`{name}` must be an integer")))?;
        if !(min..=max).contains(&n) {
            return Err(bad(name, "range", format!("`{name}` must be {min} to {max}")));
        }
        Ok(Some(n))
    }

    /// One of `allowed`, if given.
    pub fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.text(name)? {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
            Some(_) => Err(bad(name, "enum", format!("`{name}` must be one of {}", allowed.join(", ")))),
        }
    }

    /// `true` or `false`, if given.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        Ok(self.one_of(name, &["true", "false"])?.map(|v| v == "true"))
    }
}

/// A header's value, trimmed; absent or empty is `None`, a value that is not visible ASCII a
/// problem naming the header.
pub fn header_text(req: &HttpRequest, name: &str) -> Result<Option<String>, AppError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty())).map_err(|_| {
            AppError::Validation(vec![FieldError::new("", "header-format", format!("`{name}` must be visible ASCII"))])
        }),
    }
}

/// A header's value, or empty.
pub fn header_or_empty(req: &HttpRequest, name: &str) -> String {
    header_text(req, name).ok().flatten().unwrap_or_default()
}

/// The access a read by another organisation asserts, from the `VPR-*` headers.
pub fn asserted(req: &HttpRequest) -> Result<Access, AppError> {
    let required = |name: &str, rule: &str| -> Result<String, AppError> {
        header_text(req, name)?.ok_or_else(|| AppError::invalid("", rule, format!("the `{name}` header is required")))
    };
    Ok(Access {
        purpose: required("VPR-Purpose", "purpose-required")?,
        user_id: required("VPR-User-Id", "user-required")?,
        role: required("VPR-User-Role", "role-required")?,
        context_ref: header_text(req, "VPR-Context-Ref")?,
        justification: header_text(req, "VPR-Break-Glass")?,
        relayed_by: None,
        replay_guard: None,
    })
}

/// `If-Match`: the version a change expects, if given.
pub fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let parsed = v
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|s| s.strip_prefix('"'))
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|s| s.parse::<i64>().ok());
    parsed.map(Some).ok_or_else(|| ApiError::BadRequest {
        detail: "`If-Match` must be the notice's ETag, e.g. `\"3\"`".into(),
        errors: vec![FieldError::new("", "if-match-format", "a quoted version number")],
    })
}

/// `Idempotency-Key`, if given.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= 255);
    key.map(|k| Some(k.to_owned())).ok_or_else(|| ApiError::BadRequest {
        detail: "`Idempotency-Key` must be 1 to 255 visible characters".into(),
        errors: vec![FieldError::new("", "idempotency-key-format", "1 to 255 visible characters")],
    })
}

/// Records a refusal the edge made itself (a body that is not JSON, say) for an audited kind
/// of request, then returns it.
pub async fn refused(app: &App, caller: &Caller, action: AuditAction, refusal: ApiError) -> ApiError {
    let status = actix_web::ResponseError::status_code(&refusal).as_u16();
    let c = caller.clone();
    match app.blocking(move |app| vpr_app::audit::record_refused(app, &c, action, status)).await {
        Ok(()) => refusal,
        Err(e) => e.into(),
    }
}

/// Runs a synchronous call on the blocking pool (for the few edge-only store calls: readiness,
/// checkpoints, token replay).
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    web::block(f).await.map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}
