//! The audit log as FHIR `AuditEvent`s for IG tools, in the shape of IHE Basic Audit Log
//! Patterns (BALP): who (organisation, system, user, role), what (the Flags decided on, with
//! their view and decision), why (purpose of use), under which policy (the agreement's clauses)
//! and with what outcome. IG roles only; every export is itself audited. Subjects appear only as
//! the blind references the audit holds, never as identifiers.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_app::render::fhir::audit_event::audit_event;
use vpr_app::App;
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;
use vpr_domain::FieldError;
use vpr_store::review::AuditQuery;

use super::{base, fhir_ok, FhirError};
use crate::error::ApiError;
use crate::extract::{authenticate, header_or_empty, Query};

fn bad(param: &str, rule: &str, detail: &str) -> ApiError {
    ApiError::Validation(vec![FieldError::new(format!("/{param}"), rule, detail)])
}

fn when(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
    })
}

/// The search: filters, page size, and where the page starts (newest first).
fn query(params: &[(String, String)]) -> Result<(AuditQuery, i64, Option<i64>), ApiError> {
    let mut q = AuditQuery::default();
    let mut count = 100;
    let mut cursor = None;
    for (name, value) in params {
        match name.as_str() {
            "date" => {
                let (prefix, rest) = value.split_at(value.len().min(2));
                let at = when(rest)
                    .ok_or_else(|| bad("date", "date", "give `ge`, `gt`, `le` or `lt` and a date or instant"))?;
                match prefix {
                    "ge" | "gt" => q.from = Some(at),
                    "le" | "lt" => q.to = Some(at),
                    _ => return Err(bad("date", "date", "give `ge`, `gt`, `le` or `lt` and a date or instant")),
                }
            }
            "agent" => q.org = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
            "altid" => q.user = Some(value.clone()),
            "agent-role" => q.role = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
            "purpose" => q.purpose = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
            "entity" => {
                let id = value.strip_prefix("Flag/").unwrap_or(value);
                q.notice =
                    Some(Uuid::parse_str(id).map_err(|_| bad("entity", "reference", "`entity` is `Flag/<id>`"))?);
            }
            "_count" => {
                count = value
                    .parse()
                    .ok()
                    .filter(|c| (1..=500).contains(c))
                    .ok_or_else(|| bad("_count", "range", "`_count` must be 1 to 500"))?;
            }
            "_cursor" => {
                cursor =
                    Some(value.parse().map_err(|_| bad("_cursor", "cursor", "`_cursor` comes from a `next` link"))?)
            }
            "_format" if value.contains("json") => {}
            other => return Err(bad(other, "unknown-parameter", "not a supported search parameter")),
        }
    }
    Ok((q, count, cursor))
}

/// Audit entries as AuditEvents (IG roles only), newest first, for IG tools.
#[utoipa::path(
    tag = "fhir",
    params(
        ("date" = Option<String>, Query, description = "`ge`/`gt` and `le`/`lt` with a date or instant (repeat for a range)"),
        ("agent" = Option<String>, Query, description = "The acting organisation's ODS code"),
        ("altid" = Option<String>, Query, description = "The acting user"),
        ("agent-role" = Option<String>, Query, description = "The user's role"),
        ("purpose" = Option<String>, Query, description = "Purpose of use"),
        ("entity" = Option<String>, Query, description = "`Flag/<id>`: entries deciding on that notice"),
        ("_count" = Option<i64>, Query, description = "1 to 500 (default 100)"),
        ("_cursor" = Option<i64>, Query, description = "From a `next` link"),
        ("VPR-User-Id" = String, Header, description = "The IG user"),
        ("VPR-User-Role" = String, Header, description = "An IG role: ig-lead, caldicott-guardian, dpo"),
    ),
    responses(
        (status = 200, description = "A searchset Bundle of AuditEvents", body = Object, content_type = "application/fhir+json"),
        (status = 403, description = "Not an IG role (audited)", body = Object, content_type = "application/fhir+json"),
        (status = 422, description = "A bad search parameter", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["audit:read"]))
)]
#[get("/fhir/R4/AuditEvent")]
pub async fn search(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::AuditRead])?;
    let (user, role) = (header_or_empty(&req, "VPR-User-Id"), header_or_empty(&req, "VPR-User-Role"));
    let who = app.check_reviewer(&caller, user, role, AuditAction::AuditEventExport).await?;
    let params = Query::of(&req)?.pairs().to_vec();
    let (q, count, cursor) = query(&params)?;
    let described = format!("fhir AuditEvent?{}", req.query_string());
    let entries = app.audit_events(&caller, who, q, described, cursor, count).await?;
    let base = base(&app);
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/AuditEvent?{}", req.query_string())})];
    if i64::try_from(entries.len()).unwrap_or(0) == count {
        if let Some(last) = entries.last() {
            let kept: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
            let mut next = serde_urlencoded::to_string(&kept).unwrap_or_default();
            if !next.is_empty() {
                next.push('&');
            }
            links.push(json!({"relation": "next", "url": format!("{base}/AuditEvent?{next}_cursor={}", last.seq)}));
        }
    }
    let entry: Vec<Value> = entries
        .iter()
        .map(|s| json!({"fullUrl": format!("{base}/AuditEvent/{}", s.entry.id), "resource": audit_event(&app, s), "search": {"mode": "match"}}))
        .collect();
    Ok(fhir_ok(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "id": Uuid::new_v4(), "type": "searchset", "link": links, "entry": entry}),
    ))
}
