//! `POST /oauth2/token` (client credentials with `private_key_jwt`) and the discovery documents.

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use vpr_auth::registry::Scope;
use vpr_auth::AuthError;

use crate::docs::{JwksDoc, ProblemDoc, TokenResponseDoc};
use crate::error::ApiError;
use crate::extract::blocking;
use crate::extract::{body, MAX_BODY_BYTES};
use crate::limits::Class;
use vpr_app::App;

fn form(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !ct.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::OAuth(AuthError::InvalidRequest(
            "the token request must be `application/x-www-form-urlencoded`".into(),
        )));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|_| ApiError::OAuth(AuthError::InvalidRequest("the form body cannot be parsed".into())))
}

fn single<'a>(params: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut found = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(ApiError::OAuth(AuthError::InvalidRequest(format!("`{name}` is given more than once"))));
    }
    Ok(first)
}

/// Issues an access token to a partner system that authenticates with a signed JWT assertion.
#[utoipa::path(
    tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "grant_type=client_credentials, client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer, client_assertion=<signed JWT>, optional scope"),
    responses(
        (status = 200, description = "Access token", body = TokenResponseDoc),
        (status = 400, description = "Malformed request or unknown scope", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Client authentication failed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "The form is larger than 64 KiB", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 429, description = "Too many token requests from this address (`limits.token`): `Retry-After` says when to try again", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
#[post("/oauth2/token")]
pub async fn token(state: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let result = issue(&state, &req, payload).await;
    let outcome = match &result {
        Ok(_) => "issued",
        Err(ApiError::OAuth(e)) => e.oauth_code(),
        Err(_) => "error",
    };
    state.metrics.token_requests.with_label_values(&[outcome]).inc();
    let issued = result?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(issued))
}

async fn issue(
    state: &App,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<vpr_auth::tokens::IssuedToken, ApiError> {
    // Token requests are limited per client address: the client is not known until its
    // assertion is verified, which is the work the limit protects.
    crate::extract::admit_address(req, Class::Token)?;
    let body = body(payload, MAX_BODY_BYTES).await?;
    let params = form(req, &body)?;
    match single(&params, "grant_type")? {
        Some("client_credentials") => {}
        Some(_) => return Err(ApiError::OAuth(AuthError::UnsupportedGrantType)),
        None => return Err(ApiError::OAuth(AuthError::InvalidRequest("`grant_type` is required".into()))),
    }
    let now = state.clock.now();
    let assertion = single(&params, "client_assertion")?;
    let verified = state
        .tokens
        .verify_client_assertion(
            single(&params, "client_assertion_type")?,
            assertion,
            single(&params, "client_id")?,
            now,
        )
        .map_err(|e| {
            // A peer whose keys come from a URL may have rotated them: fetch them again soon.
            let peer = assertion.and_then(vpr_auth::peers::unverified_issuer);
            if let Some(p) = peer.filter(|p| state.tokens.peers().get(p).is_some_and(|p| p.jwks_url.is_some())) {
                state.federation.want_keys(&p);
            }
            ApiError::OAuth(e)
        })?;
    let store = state.store.clone();
    let v = verified.clone();
    let fresh = blocking(move || {
        store
            .claim_assertion_jti(&v.client_id, &v.jti, v.expires_at.naive_utc(), now.naive_utc())
            .map_err(|e| ApiError::OAuth(AuthError::ReplayStore(e.to_string())))
    })
    .await?;
    if !fresh {
        return Err(ApiError::OAuth(AuthError::InvalidClient(
            "this client assertion was already used (`jti` replayed)".into(),
        )));
    }
    let scope = single(&params, "scope")?;
    let issued = state.tokens.issue(&verified.client_id, scope, now).map_err(ApiError::OAuth)?;
    tracing::info!(client_id = %verified.client_id, scope = %issued.scope, "access token issued");
    Ok(issued)
}

/// The broker's public signing keys (current and still-valid previous keys).
#[utoipa::path(tag = "oauth", responses((status = 200, description = "JWK Set", body = JwksDoc)))]
#[get("/.well-known/jwks.json")]
pub async fn jwks(state: web::Data<App>) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, max-age=300")).json(state.tokens.keys().jwks())
}

/// OAuth 2.0 authorization server metadata (RFC 8414).
#[utoipa::path(tag = "oauth", responses((status = 200, description = "Authorization server metadata", body = Object)))]
#[get("/.well-known/oauth-authorization-server")]
pub async fn metadata(state: web::Data<App>) -> HttpResponse {
    let s = state.tokens.settings();
    HttpResponse::Ok().json(serde_json::json!({
        "issuer": s.issuer,
        "token_endpoint": s.token_endpoint(),
        "jwks_uri": format!("{}/.well-known/jwks.json", s.issuer),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256"],
        "scopes_supported": Scope::ALL.iter().map(|s| s.code()).collect::<Vec<_>>(),
        "response_types_supported": [],
    }))
}
