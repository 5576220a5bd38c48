//! The notice lifecycle: publish, read, amend, withdraw, review, versions.
//!
//! Only the publishing organisation changes a notice, and every change makes a new version.
//! Reads by other organisations go through the agreement's decision and are audited.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use vpr_auth::{Principal, Scope};
use vpr_domain::NoticeRules;
use vpr_store::{Change, NewNotice, Published, StoredNotice};

use crate::disclose::{govern, refuse_unread, AccessRequest, Read};
use crate::error::ApiError;
use crate::handlers::read_body;
use crate::openapi::{
    NoticeInputDoc, NoticeResourceDoc, NoticeVersionsDoc, ProblemDoc, ReviewInputDoc, WithdrawInputDoc,
};
use crate::pipeline::{authenticate, blocking, json_body};
use crate::AppState;

/// The strong entity tag of a notice version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("no notice has this id".into()))
}

fn rules(state: &AppState) -> NoticeRules {
    NoticeRules {
        today: state.clock.now().date_naive(),
        max_review_interval_days: state.notices.max_review_interval_days,
    }
}

fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
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
        errors: vec![vpr_domain::FieldError::new("", "if-match-format", "a quoted version number")],
    })
}

/// The notice as its publisher sees it: the full view, with the effective contact point.
pub fn resource(state: &AppState, n: &StoredNotice) -> Value {
    let partner = state.tokens.registry().partner(&n.publisher_ods);
    let mut body = serde_json::to_value(&n.content).unwrap_or_else(|_| json!({}));
    let contact = n
        .content
        .contact
        .clone()
        .or_else(|| partner.map(|p| p.contact.clone()))
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null));
    if let Value::Object(map) = &mut body {
        map.insert("id".into(), json!(n.id));
        map.insert("version".into(), json!(n.version.version));
        map.insert("status".into(), json!(n.status));
        map.insert(
            "publisher".into(),
            json!({ "ods_code": n.publisher_ods, "name": partner.map(|p| p.name.as_str()).unwrap_or_default() }),
        );
        map.insert("created_at".into(), json!(n.created_at));
        map.insert("updated_at".into(), json!(n.version.at));
        map.insert("last_change".into(), serde_json::to_value(&n.version).unwrap_or(Value::Null));
        map.insert("contact".into(), contact.unwrap_or(Value::Null));
    }
    body
}

fn respond(state: &AppState, builder: &mut actix_web::HttpResponseBuilder, n: &StoredNotice) -> HttpResponse {
    builder
        .insert_header((header::ETAG, etag(n.version.version)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(resource(state, n))
}

fn count(state: &AppState, n: &StoredNotice) {
    state.metrics.notice_changes.with_label_values(&[n.version.change.code()]).inc();
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().ok().map(str::trim).filter(|k| !k.is_empty() && k.len() <= 255);
    key.map(|k| Some(k.to_owned())).ok_or_else(|| ApiError::BadRequest {
        detail: "`Idempotency-Key` must be 1 to 255 visible characters".into(),
        errors: vec![vpr_domain::FieldError::new("", "idempotency-key-format", "1 to 255 visible characters")],
    })
}

/// Publishes a notice for the caller's organisation.
#[utoipa::path(
    tag = "notices",
    request_body(content = NoticeInputDoc, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried publish return the first result instead of a duplicate")),
    responses(
        (status = 201, description = "Published; `Location` names the notice, `ETag` its version", body = NoticeResourceDoc),
        (status = 200, description = "A retry with the same `Idempotency-Key`: the notice as first published", body = NoticeResourceDoc),
        (status = 400, description = "Body is not JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks `notices:write`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed: every failing field by JSON pointer, with its rule", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[post("/v1/notices")]
pub async fn publish(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::NoticesWrite)?;
    let key = idempotency_key(&req)?;
    let body = json_body(&req, &read_body(payload).await?)?;
    let content = rules(&state).notice(&body).map_err(ApiError::Validation)?;
    let hash = format!("{:x}", Sha256::digest(body.to_string().as_bytes()));
    let new = NewNotice {
        publisher_ods: principal.org.as_str().to_owned(),
        by_system: principal.client_id.clone(),
        content,
        idempotency: key.map(|k| (k, hash)),
    };
    let store = state.store.clone();
    let now = state.clock.now();
    let published = blocking(move || store.publish(&new, now).map_err(ApiError::from)).await?;
    match published {
        Published::Created(n) => {
            state.outbox.changed();
            count(&state, &n);
            tracing::info!(notice_id = %n.id, org = %principal.org, "notice published");
            let location = format!("/v1/notices/{}", n.id);
            Ok(respond(&state, HttpResponse::Created().insert_header((header::LOCATION, location)), &n))
        }
        Published::Replayed(n) => {
            let location = format!("/v1/notices/{}", n.id);
            Ok(respond(
                &state,
                HttpResponse::Ok()
                    .insert_header((header::LOCATION, location))
                    .insert_header(("Idempotent-Replayed", "true")),
                &n,
            ))
        }
    }
}

fn publisher_only(principal: &Principal, n: &StoredNotice) -> Result<(), ApiError> {
    if principal.org.as_str() == n.publisher_ods {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this notice belongs to another organisation: find notices about a subject with `POST /v1/lookups`".into(),
        ))
    }
}

fn header(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => {
            v.to_str().map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty())).map_err(|_| ApiError::BadRequest {
                detail: format!("`{name}` must be visible ASCII"),
                errors: vec![vpr_domain::FieldError::new(
                    "",
                    "header-format",
                    format!("`{name}` must be visible ASCII"),
                )],
            })
        }
    }
}

/// The access context of a read by another organisation, from `VPR-*` headers.
pub(crate) fn access_from_headers(req: &HttpRequest) -> Result<AccessRequest, ApiError> {
    let required = |name: &str, rule: &str| -> Result<String, ApiError> {
        header(req, name)?.ok_or_else(|| {
            ApiError::Validation(vec![vpr_domain::FieldError::new(
                "",
                rule,
                format!("the `{name}` header is required"),
            )])
        })
    };
    Ok(AccessRequest {
        purpose: required("VPR-Purpose", "purpose-required")?,
        user_id: required("VPR-User-Id", "user-required")?,
        role: required("VPR-User-Role", "role-required")?,
        context_ref: header(req, "VPR-Context-Ref")?,
        justification: header(req, "VPR-Break-Glass")?,
    })
}

/// Reads the current version of a notice. Its publisher sees the full view; anyone else is
/// decided by the agreement for the purpose and role in the `VPR-*` headers, and audited.
#[utoipa::path(
    tag = "notices",
    params(
        ("id" = Uuid, Path, description = "Notice id"),
        ("VPR-Purpose" = Option<String>, Header, description = "Purpose of use (required unless you are the publisher)"),
        ("VPR-User-Id" = Option<String>, Header, description = "The end user (required unless you are the publisher)"),
        ("VPR-User-Role" = Option<String>, Header, description = "The user's role (required unless you are the publisher)"),
        ("VPR-Context-Ref" = Option<String>, Header, description = "Incident, encounter or case reference"),
        ("VPR-Break-Glass" = Option<String>, Header, description = "Emergency justification; the read is marked for IG review"),
    ),
    responses(
        (status = 200, description = "The publisher's full view (`NoticeResource`, with `ETag`), or another organisation's decided view (`DisclosedNotice`)", body = NoticeResourceDoc),
        (status = 403, description = "Refused by the agreement (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A `VPR-*` header is missing", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The audit entry could not be written: nothing is disclosed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:read"]), ("bearer" = ["notices:write"]))
)]
#[get("/v1/notices/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal =
        authenticate(&state, &req, Scope::NoticesWrite).or_else(|_| authenticate(&state, &req, Scope::NoticesRead))?;
    let id = parse_id(&id)?;
    let store = state.store.clone();
    let n = blocking(move || store.get(id).map_err(ApiError::from))
        .await?
        .ok_or(vpr_store::StoreError::NotFound(vpr_store::Missing::Notice))?;
    if principal.org.as_str() == n.publisher_ods {
        return Ok(respond(&state, &mut HttpResponse::Ok(), &n));
    }
    if !principal.has(Scope::NoticesRead) {
        return Err(ApiError::InsufficientScope(Scope::NoticesRead.code()));
    }
    let access = match access_from_headers(&req) {
        Ok(a) => a,
        Err(refusal) => return Err(refuse_unread(&state, &principal, "read", refusal).await),
    };
    let st = state.clone();
    let now = state.clock.now();
    let disclosure = blocking(move || {
        let subject_refs =
            st.store.blind_indexes_of(n.id)?.into_iter().map(|b| format!("notice-subject:{b}")).collect();
        let read = Read::new("read", subject_refs, vec![(n, vec![])], 403);
        govern(&st, &principal, &access, read, now)
    })
    .await?;
    if let Some(why) = disclosure.refused {
        return Err(ApiError::Forbidden(why));
    }
    match disclosure.results.into_iter().next() {
        Some(view) => Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(view)),
        None => Err(ApiError::Forbidden(
            "the data-sharing agreement does not permit this read for this purpose and role".into(),
        )),
    }
}

/// Lists every version of a notice, oldest first (publisher only).
#[utoipa::path(
    tag = "notices",
    params(("id" = Uuid, Path, description = "Notice id")),
    responses(
        (status = 200, description = "Every version, oldest first", body = NoticeVersionsDoc),
        (status = 403, description = "Not the publisher", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[get("/v1/notices/{id}/versions")]
pub async fn versions(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::NoticesWrite)?;
    let id = parse_id(&id)?;
    let store = state.store.clone();
    let all = blocking(move || store.versions(id).map_err(ApiError::from)).await?;
    if let Some(first) = all.first() {
        publisher_only(&principal, first)?;
    }
    let items: Vec<Value> = all.iter().map(|n| resource(&state, n)).collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "notice_id": id, "versions": items })))
}

/// The publisher's changes share one flow: authenticate, the notice id, `If-Match`, the body
/// validated into a change, then the store.
async fn publisher_change(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    payload: web::Payload,
    if_match_required: bool,
    validate: impl FnOnce(NoticeRules, &Value) -> Result<Change, Vec<vpr_domain::FieldError>>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(state, req, Scope::NoticesWrite)?;
    let id = parse_id(id)?;
    let expected = match if_match(req)? {
        None if if_match_required => return Err(ApiError::PreconditionRequired),
        other => other,
    };
    let body = json_body(req, &read_body(payload).await?)?;
    let change_to = validate(rules(state), &body).map_err(ApiError::Validation)?;
    change(state, &principal, id, expected, change_to).await
}

async fn change(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    expected: Option<i64>,
    change: Change,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let now = state.clock.now();
    let (org, system) = (principal.org.as_str().to_owned(), principal.client_id.clone());
    let n = blocking(move || store.change(id, &org, &system, expected, change, now).map_err(ApiError::from)).await?;
    state.outbox.changed();
    count(state, &n);
    tracing::info!(notice_id = %n.id, version = n.version.version, change = %n.version.change, "notice changed");
    Ok(respond(state, &mut HttpResponse::Ok(), &n))
}

/// Amends a notice: a new version with new content. Needs `If-Match` with the current ETag.
#[utoipa::path(
    tag = "notices",
    params(("id" = Uuid, Path, description = "Notice id"), ("If-Match" = String, Header, description = "The ETag of the version being amended")),
    request_body(content = NoticeInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The new version", body = NoticeResourceDoc),
        (status = 403, description = "Not the publisher", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The notice is not active", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "Stale `If-Match`: `ETag` names the current version", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 428, description = "`If-Match` missing", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[put("/v1/notices/{id}")]
pub async fn amend(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    publisher_change(&state, &req, &id, payload, true, |rules, body| {
        rules.notice(body).map(|content| Change::Amend(Box::new(content)))
    })
    .await
}

/// Withdraws a notice (reason required), or marks it as entered in error.
#[utoipa::path(
    tag = "notices",
    params(("id" = Uuid, Path, description = "Notice id"), ("If-Match" = Option<String>, Header, description = "Optional: refuse if the notice has changed")),
    request_body(content = WithdrawInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The withdrawn version", body = NoticeResourceDoc),
        (status = 403, description = "Not the publisher", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Already withdrawn", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "Stale `If-Match`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[post("/v1/notices/{id}/withdraw")]
pub async fn withdraw(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    publisher_change(&state, &req, &id, payload, false, |rules, body| {
        let input = rules.withdraw(body)?;
        Ok(Change::Withdraw { reason: input.reason.trim().to_owned(), entered_in_error: input.entered_in_error })
    })
    .await
}

/// Reviews a notice: re-applies it with a new review date and a note (also revives an expired one).
#[utoipa::path(
    tag = "notices",
    params(("id" = Uuid, Path, description = "Notice id"), ("If-Match" = Option<String>, Header, description = "Optional: refuse if the notice has changed")),
    request_body(content = ReviewInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The reviewed version", body = NoticeResourceDoc),
        (status = 403, description = "Not the publisher", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Withdrawn notices cannot be reviewed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "Stale `If-Match`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[post("/v1/notices/{id}/review")]
pub async fn review(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    publisher_change(&state, &req, &id, payload, false, |rules, body| {
        let input = rules.review(body)?;
        Ok(Change::Review { review_date: input.review_date, note: input.note.trim().to_owned() })
    })
    .await
}
