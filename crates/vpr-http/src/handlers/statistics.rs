//! `GET /v1/statistics`: the figures — notices published and notices shown, per partner,
//! category, purpose and month — with small numbers suppressed, for VPR leads and IG roles.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde_json::json;
use vpr_app::services::statistics::MAX_MONTHS;
use vpr_app::App;
use vpr_auth::Scope;
use vpr_domain::figures::{span, RULE, THRESHOLD};

use crate::audit_view::{figures_csv, Format};
use crate::docs::ProblemDoc;
use crate::error::ApiError;
use crate::extract::{authenticate, header_or_empty, Query};

/// The figures, protected.
#[utoipa::path(tag = "audit",
    params(
        ("from" = Option<String>, Query, description = "First month, `YYYY-MM` (default 11 months before `to`)"),
        ("to" = Option<String>, Query, description = "Last month, `YYYY-MM` (default last month, UTC): a month that has ended, as the figures publish complete months only, so a figure once shown never changes; at most 24 months from `from`"),
        ("format" = Option<String>, Query, description = "json (default) or csv; or use `Accept`"),
        ("VPR-User-Id" = String, Header, description = "The person asking"),
        ("VPR-User-Role" = String, Header, description = "`vpr-lead` or an IG role"),
    ),
    responses(
        (status = 200, description = "Tables of counts by month (notices by publisher and by category; notices shown by organisation, purpose and category), each count 0, `\"<8\"` (1 to 7, suppressed) or rounded to the nearest 5; totals summed before rounding", body = Object),
        (status = 403, description = "Not a VPR lead or an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Bad months: not `YYYY-MM` (`month`), a month not yet ended (`month-complete`), or a span over 24 months (`month-range`)", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"]), ("bearer" = ["notices:write"])))]
#[get("/v1/statistics")]
pub async fn statistics(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesWrite, Scope::AuditRead])?;
    let (user, role) = (header_or_empty(&req, "VPR-User-Id"), header_or_empty(&req, "VPR-User-Role"));
    let who = app.figures_reader(&caller, user, role).await?;
    let q = Query::of(&req)?;
    let format = match Format::of(&req, &q)? {
        Format::Ndjson => Format::Json,
        f => f,
    };
    let (from, to) =
        span(q.text("from")?, q.text("to")?, app.clock.now().date_naive(), MAX_MONTHS).map_err(ApiError::Validation)?;
    let figures = app.figures(&caller, who, from, to).await?;
    if format == Format::Csv {
        return Ok(HttpResponse::Ok()
            .content_type(Format::Csv.content_type())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(figures_csv(&figures)?));
    }
    let tables: Vec<_> = figures.tables.iter().map(|t| t.json(&figures.months)).collect();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
        "from": figures.months.first(),
        "to": figures.months.last(),
        "months": figures.months,
        "disclosure_control": {"rule": RULE, "smallest_shown": THRESHOLD, "suppressed_as": "<8", "rounded_to": 5},
        "tables": tables,
    })))
}
