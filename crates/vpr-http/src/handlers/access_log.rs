//! `GET /v1/notices/{id}/access-log`: the publisher, as controller, sees who accessed its notice —
//! every decision on it, permits and refusals, newest first.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use vpr_app::records::who_and_why;
use vpr_app::App;
use vpr_auth::Scope;

use crate::docs::ProblemDoc;
use crate::error::ApiError;
use crate::extract::{authenticate, path_id, Query};

/// Who accessed a notice, for its publisher.
#[utoipa::path(
    tag = "notices",
    params(
        ("id" = Uuid, Path, description = "Notice id"),
        ("before" = Option<i64>, Query, description = "Return entries older than this `seq` (from `next_before`)"),
        ("limit" = Option<i64>, Query, description = "At most this many entries (1 to 200, default 50)"),
    ),
    responses(
        (status = 200, description = "Every decision on this notice, newest first: who, when, why, under which basis, what they saw", body = Object),
        (status = 403, description = "Only the publishing organisation sees its notice's access log", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[get("/v1/notices/{id}/access-log")]
pub async fn access_log(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesWrite])?;
    let id = path_id(&id, "notice")?;
    let q = Query::of(&req)?;
    let (before, limit) = (q.int("before", i64::MIN, i64::MAX)?, q.int("limit", 1, 200)?.unwrap_or(50));
    let entries = app.notice_access_log(&caller, None, id, before, limit).await?;
    let registry = app.tokens.registry();
    let items: Vec<Value> = entries.iter().map(|s| who_and_why(registry, s).on_notice(s, id)).collect();
    let next_before = (items.len() as i64 == limit).then(|| entries.last().map(|s| s.seq)).flatten();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "notice_id": id, "entries": items, "next_before": next_before })))
}

/// Every decision on any of the caller's notices, in the sealed log's order: a publisher polls
/// it with the `next_after` it was last given and so learns of each disclosure of its notices,
/// missing none. Entries appear once sealed (within about a second). A read that returns
/// entries is itself audited; an empty poll discloses nothing and is not.
#[utoipa::path(
    tag = "notices",
    params(
        ("after" = Option<i64>, Query, description = "Return entries after this `leaf_index` (from `next_after`)"),
        ("limit" = Option<i64>, Query, description = "At most this many entries (1 to 200, default 100)"),
    ),
    responses(
        (status = 200, description = "Decisions on the caller's notices, oldest first, from the cursor", body = Object),
        (status = 422, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[get("/v1/access-log")]
pub async fn feed(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesWrite])?;
    let q = Query::of(&req)?;
    let (after, limit) = (q.int("after", -1, i64::MAX)?, q.int("limit", 1, 200)?.unwrap_or(100));
    let (entries, mine) = app.access_log_feed(&caller, after, limit).await?;
    let registry = app.tokens.registry();
    let items: Vec<Value> = entries.iter().map(|s| who_and_why(registry, s).in_feed(s, &mine)).collect();
    let next_after = entries.last().and_then(|s| s.leaf_index).or(after);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "entries": items, "next_after": next_after })))
}
