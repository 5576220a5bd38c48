//! The information-governance review of the audit log: search with filters and stable paging,
//! exports as CSV and NDJSON, daily summaries per partner and purpose, and the subject access
//! report. IG roles only, and every use is itself audited.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{Days, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Value};
use vpr_auth::{Principal, Scope};
use vpr_domain::validate::{audit_query, audit_query_params, AuditQuery};
use vpr_domain::FieldError;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};
use vpr_store::review::{AuditQuery as StoreQuery, SubjectKeys};

use crate::disclose::{audit_base, refuse_unread, subject_keys};
use crate::error::ApiError;
use crate::handlers::break_glass::ig_reviewer;
use crate::handlers::read_body;
use crate::openapi::{AuditQueryDoc, ProblemDoc};
use crate::pipeline::{authenticate, blocking, json_body};
use crate::AppState;

/// How a result is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Ndjson,
}

impl Format {
    /// From `?format=` if given, else from `Accept`.
    fn of(req: &HttpRequest, param: Option<&str>) -> Result<Self, ApiError> {
        match param {
            Some("json") => return Ok(Format::Json),
            Some("csv") => return Ok(Format::Csv),
            Some("ndjson") => return Ok(Format::Ndjson),
            Some(_) => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "/format",
                    "enum",
                    "`format` must be `json`, `csv` or `ndjson`",
                )]))
            }
            None => {}
        }
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        Ok(if accept.contains("text/csv") {
            Format::Csv
        } else if accept.contains("application/x-ndjson") || accept.contains("application/ndjson") {
            Format::Ndjson
        } else {
            Format::Json
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// The IG user and role a request acts for (`VPR-User-Id`, `VPR-User-Role`), checked.
pub(crate) struct Reviewer {
    pub(crate) user: String,
    pub(crate) role: String,
}

pub(crate) async fn reviewer(
    state: &AppState,
    req: &HttpRequest,
    principal: &Principal,
    action: &'static str,
) -> Result<Reviewer, ApiError> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().trim().to_owned();
    let (user, role) = (header("VPR-User-Id"), header("VPR-User-Role"));
    let checked = if user.is_empty() {
        Err(ApiError::Forbidden("the IG user must be named in `VPR-User-Id`".into()))
    } else {
        ig_reviewer(state, principal, &role)
    };
    match checked {
        Ok(()) => Ok(Reviewer { user, role }),
        Err(refusal) => Err(refuse_unread(state, principal, action, refusal).await),
    }
}

/// The store's form of validated filters: the subject becomes its blind references.
fn store_query(state: &AppState, q: &AuditQuery) -> StoreQuery {
    let i = &q.input;
    StoreQuery {
        from: i.from,
        to: i.to,
        org: i.organisation.clone(),
        user: i.user.clone(),
        role: i.role.clone(),
        purpose: i.purpose.clone(),
        decision: i.decision.clone(),
        action: i.action.clone(),
        break_glass: i.break_glass,
        notice: i.notice,
        subject: q.subject.as_ref().map(|s| {
            let (blind, refs) = subject_keys(state, s);
            SubjectKeys { refs, blind }
        }),
        publisher: None,
    }
}

/// What the audit records of an IG query: its reference, and the filters other than the subject
/// (whose blind references go in `subject_refs`).
fn described(q: &AuditQuery) -> String {
    let i = &q.input;
    let mut parts = Vec::new();
    let mut add = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    };
    add("from", i.from.map(|t| t.to_rfc3339()));
    add("to", i.to.map(|t| t.to_rfc3339()));
    add("organisation", i.organisation.clone());
    add("user", i.user.clone());
    add("role", i.role.clone());
    add("purpose", i.purpose.clone());
    add("decision", i.decision.clone());
    add("action", i.action.clone());
    add("break_glass", i.break_glass.map(|b| b.to_string()));
    add("notice", i.notice.map(|n| n.to_string()));
    add("subject", q.subject.as_ref().map(|_| "given".to_owned()));
    let filters = parts.join(";");
    match &i.reference {
        Some(r) => format!("{r} | {filters}"),
        None => filters,
    }
}

fn ig_audit(
    state: &AppState,
    principal: &Principal,
    who: &Reviewer,
    action: &str,
    q: Option<&AuditQuery>,
) -> AuditEntry {
    let subject_refs = q.and_then(|q| q.subject.as_ref()).map(|s| subject_keys(state, s).1).unwrap_or_default();
    AuditEntry {
        actor_user: Some(who.user.clone()),
        actor_role: Some(who.role.clone()),
        purpose: Some("vpr-management".into()),
        context_ref: q.map(described),
        subject_refs,
        decision: "permit".into(),
        ..audit_base(state, principal, action, 200)
    }
}

/// An organisation as IG sees it: code, name from the registry, and type.
fn organisation(state: &AppState, ods: &str, org_type: &str) -> Value {
    let registry = state.tokens.registry();
    json!({"ods_code": ods, "name": registry.partner(ods).map(|p| p.name.clone()), "type": org_type})
}

/// One entry as the review API shows it. Subject references (blind indexes) are left out.
pub(crate) fn entry_json(state: &AppState, s: &StoredAuditEntry) -> Value {
    let e = &s.entry;
    json!({
        "seq": s.seq,
        "leaf_index": s.leaf_index,
        "audit_id": e.id,
        "at": e.at,
        "request_id": e.request_id,
        "action": e.action,
        "organisation": organisation(state, &e.actor_org, &e.actor_org_type),
        "system": e.actor_system,
        "user": e.actor_user,
        "role": e.actor_role,
        "purpose": e.purpose,
        "context_reference": e.context_ref,
        "break_glass": e.break_glass,
        "break_glass_justification": e.justification,
        "decision": e.decision,
        "notices": e.notices,
        "lawful_basis": e.lawful_basis,
        "clauses": e.clauses,
        "agreement_version": e.agreement_version,
        "outcome": e.outcome,
        "ig_review": e.ig_review,
    })
}

/// Spreadsheet-safe: a cell that a spreadsheet would run as a formula is prefixed with `'`.
fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

const CSV_COLUMNS: [&str; 23] = [
    "seq",
    "leaf_index",
    "audit_id",
    "at",
    "request_id",
    "action",
    "organisation",
    "organisation_name",
    "organisation_type",
    "system",
    "user",
    "role",
    "purpose",
    "context_reference",
    "break_glass",
    "break_glass_justification",
    "decision",
    "notices",
    "lawful_basis",
    "clauses",
    "agreement_version",
    "outcome",
    "ig_review",
];

fn csv_record(state: &AppState, s: &StoredAuditEntry) -> Vec<String> {
    let e = &s.entry;
    let registry = state.tokens.registry();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let notices: Vec<String> = e
        .notices
        .iter()
        .map(|n| format!("{}@{}:{}:{}", n.id, n.version, n.decision, n.view.as_deref().unwrap_or("-")))
        .collect();
    [
        s.seq.to_string(),
        s.leaf_index.map(|l| l.to_string()).unwrap_or_default(),
        e.id.to_string(),
        e.at.to_rfc3339(),
        e.request_id.clone(),
        e.action.clone(),
        e.actor_org.clone(),
        registry.partner(&e.actor_org).map(|p| p.name.clone()).unwrap_or_default(),
        e.actor_org_type.clone(),
        e.actor_system.clone(),
        opt(&e.actor_user),
        opt(&e.actor_role),
        opt(&e.purpose),
        opt(&e.context_ref),
        e.break_glass.to_string(),
        opt(&e.justification),
        e.decision.clone(),
        notices.join(" "),
        e.lawful_basis.join(" "),
        e.clauses.join(" "),
        e.agreement_version.clone(),
        e.outcome.to_string(),
        opt(&e.ig_review),
    ]
    .iter()
    .map(|c| cell(c))
    .collect()
}

/// Renders rows as CSV (with the header when `header`).
fn csv_bytes(header: Option<&[&str]>, rows: &[Vec<String>]) -> Result<web::Bytes, ApiError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| ApiError::Unavailable(format!("cannot write CSV: {e}"));
    if let Some(h) = header {
        out.write_record(h).map_err(fail)?;
    }
    for r in rows {
        out.write_record(r).map_err(fail)?;
    }
    out.into_inner().map(web::Bytes::from).map_err(|e| ApiError::Unavailable(format!("cannot write CSV: {e}")))
}

/// Entries per export query.
const EXPORT_CHUNK: i64 = 1000;

/// Streams every entry matching `q`, newest first, as CSV or NDJSON, reading a chunk at a time
/// so an export of any size needs little memory.
fn export(state: &web::Data<AppState>, q: StoreQuery, before: Option<i64>, format: Format) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(4);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut cursor = before;
        if format == Format::Csv && tx.blocking_send(csv_bytes(Some(&CSV_COLUMNS), &[])).is_err() {
            return;
        }
        loop {
            let chunk = match st.store.search_audit(&q, cursor, EXPORT_CHUNK) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed part way");
                    let _ = tx.blocking_send(Err(ApiError::from(e)));
                    return;
                }
            };
            let bytes = match format {
                Format::Csv => csv_bytes(None, &chunk.iter().map(|s| csv_record(&st, s)).collect::<Vec<_>>()),
                _ => Ok(web::Bytes::from(chunk.iter().fold(String::new(), |mut out, s| {
                    out.push_str(&entry_json(&st, s).to_string());
                    out.push('\n');
                    out
                }))),
            };
            if tx.blocking_send(bytes).is_err() {
                return;
            }
            match chunk.last() {
                Some(last) if i64::try_from(chunk.len()).unwrap_or_default() == EXPORT_CHUNK => cursor = Some(last.seq),
                _ => return,
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let ext = if format == Format::Csv { "csv" } else { "ndjson" };
    HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"vpr-audit.{ext}\"")))
        .streaming(body)
}

/// Runs a validated review query: a page of JSON, or a whole export.
async fn run_query(
    state: web::Data<AppState>,
    principal: Principal,
    who: Reviewer,
    q: AuditQuery,
    format: Format,
) -> Result<HttpResponse, ApiError> {
    let action = if format == Format::Json { "audit-search" } else { "audit-export" };
    let audit = ig_audit(&state, &principal, &who, action, Some(&q));
    let store_q = store_query(&state, &q);
    let (before, limit) = (q.input.before, q.input.limit.unwrap_or(100));
    if format != Format::Json {
        let st = state.clone();
        blocking(move || st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))).await?;
        return Ok(export(&state, store_q, before, format));
    }
    let st = state.clone();
    let entries = blocking(move || {
        let entries = st.store.search_audit(&store_q, before, limit)?;
        st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(entries)
    })
    .await?;
    let next_before =
        (i64::try_from(entries.len()).unwrap_or_default() == limit).then(|| entries.last().map(|s| s.seq)).flatten();
    let items: Vec<Value> = entries.iter().map(|s| entry_json(&state, s)).collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "entries": items, "next_before": next_before })))
}

/// Splits `format` off the query string; the rest are filters.
/// Query-string pairs, in order.
type Params = Vec<(String, String)>;

fn query_params(req: &HttpRequest) -> Result<(Params, Option<String>), ApiError> {
    let params = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest { detail: format!("the query string is malformed: {e}"), errors: vec![] })?
        .into_inner();
    let format = params.iter().find(|(k, _)| k == "format").map(|(_, v)| v.clone());
    Ok((params.into_iter().filter(|(k, _)| k != "format").collect(), format))
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
pub async fn list_entries(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let who = reviewer(&state, &req, &principal, "audit-search").await?;
    let (params, format) = query_params(&req)?;
    let format = Format::of(&req, format.as_deref())?;
    let q = audit_query_params(&params).map_err(ApiError::Validation)?;
    run_query(state, principal, who, q, format).await
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
pub async fn search(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let who = reviewer(&state, &req, &principal, "audit-search").await?;
    let (_, format) = query_params(&req)?;
    let format = Format::of(&req, format.as_deref())?;
    let body = json_body(&req, &read_body(payload).await?)?;
    let q = audit_query(&body).map_err(ApiError::Validation)?;
    run_query(state, principal, who, q, format).await
}

/// `?from=` and `?to=` (dates, inclusive).
#[derive(Debug, Deserialize)]
pub struct SummaryQuery {
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
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
pub async fn summary(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let who = reviewer(&state, &req, &principal, "audit-summary").await?;
    let q = web::Query::<SummaryQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest { detail: format!("the query string is malformed: {e}"), errors: vec![] })?
        .into_inner();
    let format = Format::of(&req, q.format.as_deref())?;
    let (from, to) = match (date_param("from", q.from.as_deref()), date_param("to", q.to.as_deref())) {
        (Ok(f), Ok(t)) => (f, t),
        (f, t) => return Err(ApiError::Validation([f.err(), t.err()].into_iter().flatten().collect())),
    };
    let to = to.unwrap_or_else(|| state.clock.now().date_naive());
    let from = from.unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    if to < from || from.checked_add_days(Days::new(MAX_SUMMARY_DAYS)).is_some_and(|end| to >= end) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "/to",
            "summary-range",
            format!("`to` must be on or after `from` and within {MAX_SUMMARY_DAYS} days of it"),
        )]));
    }
    let mut audit = ig_audit(&state, &principal, &who, "audit-summary", None);
    audit.context_ref = Some(format!("from={from};to={to}"));
    let st = state.clone();
    let rows = blocking(move || {
        let rows = st.store.audit_summary(from, to)?;
        st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(rows)
    })
    .await?;
    // One row per (day, organisation, purpose), decisions as columns.
    let mut grouped: BTreeMap<(String, String, Option<String>), BTreeMap<String, i64>> = BTreeMap::new();
    for r in rows {
        let counts = grouped.entry((r.day, r.actor_org, r.purpose)).or_default();
        *counts.entry(r.decision).or_default() += r.entries;
        *counts.entry("break_glass".into()).or_default() += r.break_glass;
        *counts.entry("entries".into()).or_default() += r.entries;
    }
    const COUNTS: [&str; 7] = ["entries", "permit", "partial", "deny", "no-match", "refused", "break_glass"];
    let registry = state.tokens.registry();
    if format == Format::Csv {
        let mut header = vec!["day", "organisation", "organisation_name", "purpose"];
        header.extend(COUNTS);
        let records: Vec<Vec<String>> = grouped
            .iter()
            .map(|((day, org, purpose), counts)| {
                let mut rec = vec![
                    day.clone(),
                    org.clone(),
                    registry.partner(org).map(|p| p.name.clone()).unwrap_or_default(),
                    purpose.clone().unwrap_or_default(),
                ];
                rec.extend(COUNTS.iter().map(|c| counts.get(*c).copied().unwrap_or_default().to_string()));
                rec.into_iter().map(|c| cell(&c)).collect()
            })
            .collect();
        return Ok(HttpResponse::Ok()
            .content_type(Format::Csv.content_type())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(csv_bytes(Some(&header), &records)?));
    }
    let days: Vec<Value> = grouped
        .iter()
        .map(|((day, org, purpose), counts)| {
            let mut row = json!({
                "day": day,
                "organisation": {"ods_code": org, "name": registry.partner(org).map(|p| p.name.clone())},
                "purpose": purpose,
            });
            for c in COUNTS {
                if let Some(obj) = row.as_object_mut() {
                    obj.insert(c.replace('-', "_"), json!(counts.get(c).copied().unwrap_or_default()));
                }
            }
            row
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "from": from, "to": to, "rows": days })))
}

/// Most entries a subject access report gathers.
const MAX_REPORT_ENTRIES: usize = 50_000;

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
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let who = reviewer(&state, &req, &principal, "subject-access-report").await?;
    let (_, format) = query_params(&req)?;
    let format = Format::of(&req, format.as_deref())?;
    let body = json_body(&req, &read_body(payload).await?)?;
    let q = audit_query(&body).map_err(ApiError::Validation)?;
    let Some(subject) = q.subject.clone() else {
        return Err(ApiError::Validation(vec![FieldError::new("/subject", "required", "`subject` is required")]));
    };
    let (blind, refs) = subject_keys(&state, &subject);
    let store_q = StoreQuery {
        from: q.input.from,
        to: q.input.to,
        subject: Some(SubjectKeys { refs: refs.clone(), blind: blind.clone() }),
        ..Default::default()
    };
    let audit = AuditEntry {
        purpose: Some("subject-access".into()),
        ..ig_audit(&state, &principal, &who, "subject-access-report", Some(&q))
    };
    let st = state.clone();
    let (notices, entries) = blocking(move || {
        let ids = st.store.find_by_blind_indexes(&blind)?;
        let mut notices = Vec::new();
        for (id, _) in ids {
            if let Some(n) = st.store.get(id)? {
                notices.push(n);
            }
        }
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let chunk = st.store.search_audit(&store_q, cursor, 1000)?;
            let full = chunk.len() == 1000;
            cursor = chunk.last().map(|s| s.seq);
            entries.extend(chunk);
            if !full || entries.len() >= MAX_REPORT_ENTRIES {
                break;
            }
        }
        st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok((notices, entries))
    })
    .await?;
    let about: BTreeSet<String> = notices.iter().map(|n| n.id.to_string()).collect();
    let purpose_title =
        |p: &Option<String>| p.as_ref().and_then(|p| state.agreement.purposes.get(p)).map(|p| p.title.clone());
    let mut disclosures = Vec::new();
    let mut searches = Vec::new();
    // Oldest first reads as a history.
    for s in entries.iter().rev() {
        let e = &s.entry;
        let shown: Vec<_> = e.notices.iter().filter(|n| n.view.is_some() && about.contains(&n.id)).collect();
        for n in &shown {
            disclosures.push(json!({
                "at": e.at,
                "audit_id": e.id,
                "notice_id": n.id,
                "notice_version": n.version,
                "organisation": organisation(&state, &e.actor_org, &e.actor_org_type),
                "role": e.actor_role,
                "user": e.actor_user,
                "purpose": e.purpose,
                "purpose_title": purpose_title(&e.purpose),
                "lawful_basis": n.lawful_basis,
                "clauses": n.clauses,
                "view": n.view,
                "restricted": n.restricted,
                "break_glass": e.break_glass,
                "context_reference": e.context_ref,
                "agreement_version": e.agreement_version,
            }));
        }
        if shown.is_empty() && matches!(e.action.as_str(), "lookup" | "read") {
            searches.push(json!({
                "at": e.at,
                "audit_id": e.id,
                "organisation": organisation(&state, &e.actor_org, &e.actor_org_type),
                "role": e.actor_role,
                "purpose": e.purpose,
                "decision": e.decision,
            }));
        }
    }
    if format == Format::Csv {
        const COLS: [&str; 14] = [
            "at",
            "audit_id",
            "notice_id",
            "notice_version",
            "organisation",
            "organisation_name",
            "role",
            "user",
            "purpose",
            "lawful_basis",
            "clauses",
            "view",
            "break_glass",
            "context_reference",
        ];
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
            other => other.to_string(),
        };
        let records: Vec<Vec<String>> = disclosures
            .iter()
            .map(|d| {
                COLS.iter()
                    .map(|c| match *c {
                        "organisation" => text(d.pointer("/organisation/ods_code").unwrap_or(&Value::Null)),
                        "organisation_name" => text(d.pointer("/organisation/name").unwrap_or(&Value::Null)),
                        other => text(d.get(other).unwrap_or(&Value::Null)),
                    })
                    .map(|c| cell(&c))
                    .collect()
            })
            .collect();
        return Ok(HttpResponse::Ok()
            .content_type(Format::Csv.content_type())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(csv_bytes(Some(&COLS), &records)?));
    }
    let recipients: BTreeSet<String> = entries
        .iter()
        .filter(|s| s.entry.notices.iter().any(|n| n.view.is_some() && about.contains(&n.id)))
        .map(|s| s.entry.actor_org.clone())
        .collect();
    let registry = state.tokens.registry();
    let notice_items: Vec<Value> = notices
        .iter()
        .map(|n| {
            json!({
                "notice_id": n.id,
                "publisher": {"ods_code": n.publisher_ods, "name": registry.partner(&n.publisher_ods).map(|p| p.name.clone())},
                "status": n.status,
                "category": n.content.category,
                "published_at": n.created_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
        "generated_at": state.clock.now(),
        "reference": q.input.reference,
        "from": q.input.from,
        "to": q.input.to,
        "agreement_version": state.agreement.version,
        "truncated": entries.len() >= MAX_REPORT_ENTRIES,
        "notices": notice_items,
        "recipients": recipients.iter().map(|o| json!({"ods_code": o, "name": registry.partner(o).map(|p| p.name.clone())})).collect::<Vec<_>>(),
        "disclosures": disclosures,
        "searches": searches,
    })))
}
