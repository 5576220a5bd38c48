//! The notice lifecycle: publish, read, amend, withdraw, review, versions.
//!
//! Only the publishing organisation changes a notice, and every change makes a new version.
//! Reads by other organisations go through the agreement's decision and are audited.

use actix_web::http::header;
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use vpr_app::services::notices::{NoticeRead, Validate};
use vpr_app::{App, Caller};
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;
use vpr_store::{Change, Published, StoredNotice};

use crate::docs::{NoticeInputDoc, NoticeResourceDoc, NoticeVersionsDoc, ProblemDoc, ReviewInputDoc, WithdrawInputDoc};
use crate::error::{etag, ApiError};
use crate::extract::{asserted, authenticate, idempotency_key, if_match, json, path_id, MAX_BODY_BYTES};

/// The notice as its publisher sees it: the full view, with the effective contact point.
pub fn resource(app: &App, n: &StoredNotice) -> Value {
    let partner = app.tokens.registry().partner(&n.publisher_ods);
    let mut body = serde_json::to_value(&n.content).unwrap_or_else(|_| json!({}));
    let contact = n.content.contact.clone().or_else(|| partner.map(|p| p.contact.clone()));
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
        map.insert("contact".into(), json!(contact));
    }
    body
}

fn respond(app: &App, builder: &mut actix_web::HttpResponseBuilder, n: &StoredNotice) -> HttpResponse {
    builder
        .insert_header((header::ETAG, etag(n.version.version)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(resource(app, n))
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
pub async fn publish(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesWrite])?;
    let key = idempotency_key(&req)?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    match app.publish(&caller, body, key).await? {
        Published::Created(n) => {
            let location = format!("/v1/notices/{}", n.id);
            Ok(respond(&app, HttpResponse::Created().insert_header((header::LOCATION, location)), &n))
        }
        Published::Replayed(n) => {
            let location = format!("/v1/notices/{}", n.id);
            let mut builder = HttpResponse::Ok();
            builder.insert_header((header::LOCATION, location)).insert_header(("Idempotent-Replayed", "true"));
            Ok(respond(&app, &mut builder, &n))
        }
    }
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
pub async fn read(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesWrite, Scope::NoticesRead])?;
    let id = path_id(&id, "notice")?;
    let access = asserted(&req);
    match app.read_notice(&caller, id, AuditAction::Read, move || access).await? {
        NoticeRead::Own(n) => Ok(respond(&app, &mut HttpResponse::Ok(), &n)),
        NoticeRead::Disclosed(view, _, _) => {
            Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(view))
        }
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
pub async fn versions(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesWrite])?;
    let id = path_id(&id, "notice")?;
    let all = app.notice_versions(&caller, id).await?;
    let items: Vec<Value> = all.iter().map(|n| resource(&app, n)).collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "notice_id": id, "versions": items })))
}

/// The publisher's changes share one flow: authenticate, the notice id, `If-Match`, the body
/// validated into a change, then the store.
async fn publisher_change(
    app: &App,
    req: &HttpRequest,
    id: &str,
    payload: web::Payload,
    if_match_required: bool,
    validate: Validate,
) -> Result<HttpResponse, ApiError> {
    let caller: Caller = authenticate(app, req, &[Scope::NoticesWrite])?;
    let id = path_id(id, "notice")?;
    let expected = match if_match(req)? {
        None if if_match_required => return Err(ApiError::PreconditionRequired),
        other => other,
    };
    let body = json(req, payload, MAX_BODY_BYTES).await?;
    let n = app.change_notice(&caller, id, expected, body, validate).await?;
    Ok(respond(app, &mut HttpResponse::Ok(), &n))
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
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let validate: Validate = Box::new(|rules, body| rules.notice(body).map(|content| Change::Amend(Box::new(content))));
    publisher_change(&app, &req, &id, payload, true, validate).await
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
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let validate: Validate = Box::new(|rules, body| {
        let input = rules.withdraw(body)?;
        Ok(Change::Withdraw { reason: input.reason.trim().to_owned(), entered_in_error: input.entered_in_error })
    });
    publisher_change(&app, &req, &id, payload, false, validate).await
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
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let validate: Validate = Box::new(|rules, body| {
        let input = rules.review(body)?;
        Ok(Change::Review { review_date: input.review_date, note: input.note.trim().to_owned() })
    });
    publisher_change(&app, &req, &id, payload, false, validate).await
}
