//! Audit entries as IG sees them, in the review API and the console alike: one entry as JSON,
//! a CSV row (spreadsheet-safe), and whole exports streamed a chunk at a time.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use vpr_app::services::ig::AuditExport;
use vpr_app::App;
use vpr_domain::FieldError;
use vpr_store::audit::StoredAuditEntry;

use crate::error::ApiError;
use crate::extract::Query;

/// How a result is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A page of JSON.
    Json,
    /// CSV, every matching entry.
    Csv,
    /// NDJSON, every matching entry.
    Ndjson,
}

impl Format {
    /// From `?format=` if given, else from `Accept`.
    pub fn of(req: &HttpRequest, q: &Query) -> Result<Self, ApiError> {
        match q.text("format")? {
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

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// An organisation as IG sees it: code, name from the registry, and type.
fn organisation(app: &App, ods: &str, org_type: &str) -> Value {
    let registry = app.tokens.registry();
    json!({"ods_code": ods, "name": registry.partner(ods).map(|p| p.name.clone()), "type": org_type})
}

/// One entry as the review API shows it. Subject references (blind indexes) are left out.
pub fn entry_json(app: &App, s: &StoredAuditEntry) -> Value {
    let e = &s.entry;
    let mut v = json!({
        "seq": s.seq,
        "leaf_index": s.leaf_index,
        "audit_id": e.id,
        "at": e.at,
        "request_id": e.request_id,
        "action": e.action,
        "organisation": organisation(app, &e.actor_org, &e.actor_org_type),
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
    });
    // A read that crossed an ICS border: the peer that relayed it, or what each peer answered.
    if let (Some(f), Value::Object(m)) = (&e.federation, &mut v) {
        m.insert("federation".into(), json!(f));
    }
    v
}

/// Spreadsheet-safe: a cell that a spreadsheet would run as a formula is prefixed with `'`.
pub fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

const CSV_COLUMNS: [&str; 24] = [
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
    "federation",
];

/// A federated read in one cell: `relayed by <peer>`, or each peer asked with its outcome and
/// the notices it disclosed (`YIC01:answered:2 ZIC01:timeout:0`).
fn federation_cell(e: &vpr_store::audit::AuditEntry) -> String {
    let Some(f) = &e.federation else { return String::new() };
    if let Some(peer) = &f.relayed_by {
        return format!("relayed by {peer}");
    }
    f.peers.iter().map(|p| format!("{}:{}:{}", p.broker, p.outcome, p.notices.len())).collect::<Vec<_>>().join(" ")
}

fn csv_record(app: &App, s: &StoredAuditEntry) -> Vec<String> {
    let e = &s.entry;
    let registry = app.tokens.registry();
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
        federation_cell(e),
    ]
    .iter()
    .map(|c| cell(c))
    .collect()
}

/// Renders rows as CSV (with the header when `header`).
pub fn csv_bytes(header: Option<&[&str]>, rows: &[Vec<String>]) -> Result<web::Bytes, ApiError> {
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
pub fn export(app: &web::Data<App>, export: AuditExport, format: Format) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(4);
    let app2 = app.clone();
    tokio::task::spawn_blocking(move || {
        let mut cursor = export.before;
        if format == Format::Csv && tx.blocking_send(csv_bytes(Some(&CSV_COLUMNS), &[])).is_err() {
            return;
        }
        loop {
            let chunk = match app2.audit_chunk(&export, cursor, EXPORT_CHUNK) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed part way");
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            let bytes = match format {
                Format::Csv => csv_bytes(None, &chunk.iter().map(|s| csv_record(&app2, s)).collect::<Vec<_>>()),
                _ => Ok(web::Bytes::from(chunk.iter().fold(String::new(), |mut out, s| {
                    out.push_str(&entry_json(&app2, s).to_string());
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

/// The report's disclosures as CSV.
pub fn report_csv(disclosures: &[Value]) -> Result<web::Bytes, ApiError> {
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
    csv_bytes(Some(&COLS), &records)
}

/// The figures as one CSV file: `measure, by, key, label, month, count`, protected counts
/// (`<8` where suppressed), each table's totals as the key `total`.
pub fn figures_csv(figures: &vpr_app::services::statistics::Figures) -> Result<web::Bytes, ApiError> {
    let records: Vec<Vec<String>> = figures
        .tables
        .iter()
        .flat_map(|t| t.records(&figures.months))
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    csv_bytes(Some(&["measure", "by", "key", "label", "month", "count"]), &records)
}
