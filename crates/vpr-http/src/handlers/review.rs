//! The information-governance review of the audit log: search with filters and stable paging,
//! exports as CSV and NDJSON, daily summaries per partner and purpose, and the subject access
//! report. IG roles only, and every use is itself audited.

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{Days, NaiveDate};
use serde_json::{json, Value};
use vpr_app::services::ig::SummaryDay;
use vpr_app::{App, Caller, Reviewer};
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::{audit_query, audit_query_params, AuditQuery};
use vpr_domain::FieldError;

use crate::audit_view::{cell, csv_bytes, entry_json, export, report_csv, Format};
use crate::docs::{AuditQueryDoc, ProblemDoc};
use crate::error::ApiError;
use crate::extract::{authenticate, header_or_empty, json, Query, MAX_BODY_BYTES};

/// The IG user and role a request acts for (`VPR-User-Id`, `VPR-User-Role`), checked; a
/// refusal is audited as `action`.
async fn reviewer(app: &App, req: &HttpRequest, caller: &Caller, action: AuditAction) -> Result<Reviewer, ApiError> {
    let (user, role) = (header_or_empty(req, "VPR-User-Id"), header_or_empty(req, "VPR-User-Role"));
    Ok(app.check_reviewer(caller, user, role, action).await?)
}

/// Runs a validated review query: a page of JSON, or a whole export.
async fn run_query(
    app: web::Data<App>,
    caller: Caller,
    who: Reviewer,
    q: AuditQuery,
    format: Format,
) -> Result<HttpResponse, ApiError> {
    if format != Format::Json {
        let started = app.begin_export(&caller, who, q).await?;
        return Ok(export(&app, started, format));
    }
    let limit = q.input.limit.unwrap_or(100);
    let entries = app.search_audit(&caller, who, q).await?;
    let next_before =
        (i64::try_from(entries.len()).unwrap_or_default() == limit).then(|| entries.last().map(|s| s.seq)).flatten();
    let items: Vec<Value> = entries.iter().map(|s| entry_json(&app, s)).collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "entries": items, "next_before": next_before })))
}

/// Search the audit log (filters in the query string; no subject), newest first.
#[utoipa::path(tag = "audit",
    params(
        ("from" = Option<String>, Query, description = "At or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "Before (RFC 3339)"),
        ("organisation" = Option<String>, Query, description = "ODS code of the acting organisation"),
        ("user" = Option<String>, Query, description = "End user"),
        ("role" = Option<String>, Query, description = "Role"),
        ("purpose" = Option<String>, Query, description = "Purpose of use"),
        ("decision" = Option<String>, Query, description = "permit, deny, partial, no-match, refused"),
        ("action" = Option<String>, Query, description = "lookup, read, access-log, ..."),
        ("break_glass" = Option<bool>, Query, description = "Emergency accesses only (true) or ordinary only (false)"),
        ("notice" = Option<String>, Query, description = "Entries deciding on this notice"),
        ("reference" = Option<String>, Query, description = "Why IG is looking; recorded in the audit"),
        ("before" = Option<i64>, Query, description = "Paging cursor (`next_before`)"),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 500 (default 100); exports are not paged"),
        ("format" = Option<String>, Query, description = "json (default), csv or ndjson; or use `Accept`"),
        ("VPR-User-Id" = String, Header, description = "The IG user"),
        ("VPR-User-Role" = String, Header, description = "An IG role: ig-lead, caldicott-guardian, dpo"),
    ),
    responses(
        (status = 200, description = "A page of entries (JSON) or every matching entry (CSV, NDJSON)", body = Object),
        (status = 403, description = "Not an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A filter is invalid, or a subject was put in the URL", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"])))]
#[get("/v1/audit/entries")]
pub async fn list_entries(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let who = reviewer(&app, &req, &caller, AuditAction::AuditSearch).await?;
    let query = Query::of(&req)?;
    let format = Format::of(&req, &query)?;
    let filters: Vec<(String, String)> = query.pairs().iter().filter(|(k, _)| k != "format").cloned().collect();
    let q = audit_query_params(&filters).map_err(ApiError::Validation)?;
    run_query(app, caller, who, q, format).await
}

/// Search the audit log with the filters in the body, which may name a subject.
#[utoipa::path(tag = "audit",
    params(
        ("format" = Option<String>, Query, description = "json (default), csv or ndjson; or use `Accept`"),
        ("VPR-User-Id" = String, Header, description = "The IG user"),
        ("VPR-User-Role" = String, Header, description = "An IG role"),
    ),
    request_body(content = AuditQueryDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "A page of entries (JSON) or every matching entry (CSV, NDJSON)", body = Object),
        (status = 403, description = "Not an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A filter is invalid", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"])))]
#[post("/v1/audit/entries/search")]
pub async fn search(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let who = reviewer(&app, &req, &caller, AuditAction::AuditSearch).await?;
    let format = Format::of(&req, &Query::of(&req)?)?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    let q = audit_query(&body).map_err(ApiError::Validation)?;
    run_query(app, caller, who, q, format).await
}

/// Longest range a summary covers.
const MAX_SUMMARY_DAYS: u64 = 366;

fn date_param(name: &str, value: Option<&str>) -> Result<Option<NaiveDate>, FieldError> {
    value
        .map(|v| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| FieldError::new(format!("/{name}"), "format", "must be a date, `YYYY-MM-DD`"))
        })
        .transpose()
}

/// Decisions per day, partner and purpose.
#[utoipa::path(tag = "audit",
    params(
        ("from" = Option<String>, Query, description = "First day, `YYYY-MM-DD` (default 29 days before `to`)"),
        ("to" = Option<String>, Query, description = "Last day, `YYYY-MM-DD` (default today, UTC); at most 366 days after `from`"),
        ("format" = Option<String>, Query, description = "json (default) or csv; or use `Accept`"),
        ("VPR-User-Id" = String, Header, description = "The IG user"),
        ("VPR-User-Role" = String, Header, description = "An IG role"),
    ),
    responses(
        (status = 200, description = "One row per day, organisation and purpose, with counts by decision", body = Object),
        (status = 403, description = "Not an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Bad dates", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"])))]
#[get("/v1/audit/summary")]
pub async fn summary(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let who = reviewer(&app, &req, &caller, AuditAction::AuditSummary).await?;
    let q = Query::of(&req)?;
    let format = Format::of(&req, &q)?;
    let (from, to) = match (date_param("from", q.text("from")?), date_param("to", q.text("to")?)) {
        (Ok(f), Ok(t)) => (f, t),
        (f, t) => return Err(ApiError::Validation([f.err(), t.err()].into_iter().flatten().collect())),
    };
    let to = to.unwrap_or_else(|| app.clock.now().date_naive());
    let from = from.unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    if to < from || from.checked_add_days(Days::new(MAX_SUMMARY_DAYS)).is_some_and(|end| to >= end) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/to",
            "summary-range",
            format!("`to` must be on or after `from` and within {MAX_SUMMARY_DAYS} days of it"),
        )]));
    }
    let days = app.audit_summary(&caller, who, from, to).await?;
    if format == Format::Csv {
        return Ok(HttpResponse::Ok()
            .content_type(Format::Csv.content_type())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(summary_csv(&app, &days)?));
    }
    let registry = app.tokens.registry();
    let rows: Vec<Value> = days
        .iter()
        .map(|d| {
            let mut row = json!({
                "day": d.day,
                "organisation": {"ods_code": d.org, "name": registry.partner(&d.org).map(|p| p.name.clone())},
                "purpose": d.purpose,
            });
            for c in COUNTS {
                if let Some(obj) = row.as_object_mut() {
                    obj.insert(c.replace('-', "_"), json!(d.counts.get(c).copied().unwrap_or_default()));
                }
            }
            row
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "from": from, "to": to, "rows": rows })))
}

/// The counts a summary row shows, in order.
const COUNTS: [&str; 7] = ["entries", "permit", "partial", "deny", "no-match", "refused", "break_glass"];

fn summary_csv(app: &App, days: &[SummaryDay]) -> Result<web::Bytes, ApiError> {
    let registry = app.tokens.registry();
    let mut header = vec!["day", "organisation", "organisation_name", "purpose"];
    header.extend(COUNTS);
    let records: Vec<Vec<String>> = days
        .iter()
        .map(|d| {
            let mut rec = vec![
                d.day.clone(),
                d.org.clone(),
                registry.partner(&d.org).map(|p| p.name.clone()).unwrap_or_default(),
                d.purpose.clone().unwrap_or_default(),
            ];
            rec.extend(COUNTS.iter().map(|c| d.counts.get(*c).copied().unwrap_or_default().to_string()));
            rec.into_iter().map(|c| cell(&c)).collect()
        })
        .collect();
    csv_bytes(Some(&header), &records)
}

/// Every disclosure of notices about one person (or address, or number), ready to answer an
/// Article 15 request: who saw what, when, why and under which lawful basis and clause.
#[utoipa::path(tag = "audit",
    params(
        ("format" = Option<String>, Query, description = "json (default) or csv (the disclosures); or use `Accept`"),
        ("VPR-User-Id" = String, Header, description = "The IG user"),
        ("VPR-User-Role" = String, Header, description = "An IG role"),
    ),
    request_body(content = AuditQueryDoc, content_type = "application/json", description = "`subject` is required; `from`, `to` and `reference` (the request's reference) are honoured"),
    responses(
        (status = 200, description = "The report", body = Object),
        (status = 403, description = "Not an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "No subject, or invalid filters", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["audit:read"])))]
#[post("/v1/audit/subject-access-report")]
pub async fn subject_access_report(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let who = reviewer(&app, &req, &caller, AuditAction::SubjectAccessReport).await?;
    let format = Format::of(&req, &Query::of(&req)?)?;
    let body = json(&req, payload, MAX_BODY_BYTES).await?;
    let q = audit_query(&body).map_err(ApiError::Validation)?;
    let report = app.subject_access_report(&caller, who, q).await?;
    if format == Format::Csv {
        return Ok(HttpResponse::Ok()
            .content_type(Format::Csv.content_type())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(report_csv(&report.disclosures)?));
    }
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(report))
}
