//! `Flag` read and search. A search names a patient by NHS number
//! (`patient.identifier`, `patient:identifier` or `subject:identifier` =
//! `https://fhir.nhs.uk/Id/nhs-number|<n>`), optionally `status` and `_lastUpdated`; prefer
//! `POST Flag/_search` so the identifier travels in the body. Every search and read is decided
//! by the agreement for the purpose and role in the `VPR-*` headers and audited; a refusal is an
//! `OperationOutcome`. Pages are linked by an opaque token sealed by the broker, so no
//! identifier appears in a link.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_app::render::fhir::flag::{flag, flag_status, KnownSubject, Shown};
use vpr_app::services::notices::NoticeRead;
use vpr_app::{App, Caller};
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;
use vpr_domain::{FieldError, NhsNumber};
use vpr_store::StoredNotice;

use super::{base, fhir_ok, FhirError, NHS_NUMBER};
use crate::error::ApiError;
use crate::extract::{asserted, authenticate, body, refused, MAX_BODY_BYTES};

/// A `_lastUpdated` comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

/// A validated search, as sealed into page tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlagSearch {
    /// The searching client (a token works only for it).
    client: String,
    nhs_number: String,
    statuses: Vec<String>,
    last_updated: Vec<(Cmp, DateTime<Utc>)>,
    count: usize,
    offset: usize,
    /// Unix time after which the token is refused.
    expires: i64,
}

const PAGE_CONTEXT: &str = "fhir/flag-search-page";
const PAGE_LIFETIME_SECONDS: i64 = 600;

fn bad(param: &str, rule: &str, detail: impl Into<String>) -> ApiError {
    ApiError::Validation(vec![FieldError::new(format!("/{param}"), rule, detail)])
}

fn parse_date(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
    })
}

/// The NHS number of a patient search parameter (`<system>|<number>`).
fn patient(name: &str, value: &str) -> Result<String, ApiError> {
    let (system, n) = value.split_once('|').unwrap_or(("", value));
    if system != NHS_NUMBER {
        return Err(bad(name, "identifier-system", format!("the identifier system must be `{NHS_NUMBER}`")));
    }
    let n = NhsNumber::parse(n).map_err(|e| bad(name, e.rule_id(), e.to_string()))?;
    Ok(n.as_str().to_owned())
}

/// The Flag statuses of a `status` parameter.
fn flag_statuses(value: &str) -> Result<Vec<String>, ApiError> {
    value
        .split(',')
        .map(|s| {
            if ["active", "inactive", "entered-in-error"].contains(&s) {
                Ok(s.to_owned())
            } else {
                Err(bad("status", "code", "`status` is active, inactive or entered-in-error"))
            }
        })
        .collect()
}

/// A `_lastUpdated` comparison.
fn last_updated_of(value: &str) -> Result<(Cmp, DateTime<Utc>), ApiError> {
    let (cmp, rest) = match value.get(..2) {
        Some("ge") => (Cmp::Ge, value.get(2..).unwrap_or_default()),
        Some("gt") => (Cmp::Gt, value.get(2..).unwrap_or_default()),
        Some("le") => (Cmp::Le, value.get(2..).unwrap_or_default()),
        Some("lt") => (Cmp::Lt, value.get(2..).unwrap_or_default()),
        Some("eq") => (Cmp::Eq, value.get(2..).unwrap_or_default()),
        _ => (Cmp::Eq, value),
    };
    let at = parse_date(rest).ok_or_else(|| {
        bad("_lastUpdated", "date", "give a date or an instant, with an optional ge, gt, le, lt or eq prefix")
    })?;
    Ok((cmp, at))
}

impl FlagSearch {
    fn from_params(app: &App, caller: &Caller, params: &[(String, String)]) -> Result<Self, ApiError> {
        if let Some((_, token)) = params.iter().find(|(k, _)| k == "_page") {
            if params.iter().any(|(k, _)| k != "_page" && k != "_format") {
                return Err(bad("_page", "page-alone", "`_page` continues a search: give it alone"));
            }
            return Self::open(app, caller, token);
        }
        let mut nhs = None;
        let mut statuses = Vec::new();
        let mut last_updated = Vec::new();
        let mut count = 50;
        for (name, value) in params {
            match name.as_str() {
                "patient.identifier" | "patient:identifier" | "subject:identifier" => {
                    if nhs.is_some() {
                        return Err(bad(name, "repeated", "give one patient identifier"));
                    }
                    nhs = Some(patient(name, value)?);
                }
                "status" => statuses.extend(flag_statuses(value)?),
                "_lastUpdated" => last_updated.push(last_updated_of(value)?),
                "_count" => {
                    count = value
                        .parse()
                        .ok()
                        .filter(|c| (1..=200).contains(c))
                        .ok_or_else(|| bad("_count", "range", "`_count` must be 1 to 200"))?;
                }
                "_format" if value.contains("json") => {}
                other => {
                    return Err(bad(
                        other,
                        "unknown-parameter",
                        format!("`{other}` is not a supported search parameter"),
                    ))
                }
            }
        }
        let nhs_number = nhs.ok_or_else(|| {
            bad(
                "patient.identifier",
                "required",
                format!("search by a patient's NHS number: `patient.identifier={NHS_NUMBER}|<n>`"),
            )
        })?;
        Ok(Self {
            client: caller.principal.client_id.clone(),
            nhs_number,
            statuses,
            last_updated,
            count,
            offset: 0,
            expires: (app.clock.now() + chrono::Duration::seconds(PAGE_LIFETIME_SECONDS)).timestamp(),
        })
    }

    fn seal(&self, app: &App, offset: usize) -> Result<String, ApiError> {
        let page = Self { offset, ..self.clone() };
        let plain = serde_json::to_vec(&page).map_err(|e| ApiError::Internal(e.to_string()))?;
        let sealed = app.store.vault().seal(&plain, PAGE_CONTEXT).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed))
    }

    fn open(app: &App, caller: &Caller, token: &str) -> Result<Self, ApiError> {
        let invalid = || bad("_page", "page-token", "the page link is not valid (or has expired): search again");
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let plain = app.store.vault().open(&sealed, PAGE_CONTEXT).map_err(|_| invalid())?;
        let page: Self = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        if page.client != caller.principal.client_id || page.expires < app.clock.now().timestamp() {
            return Err(invalid());
        }
        Ok(page)
    }

    fn keeps(&self, n: &StoredNotice) -> bool {
        let status = flag_status(n.status.code());
        let at = n.version.at;
        (self.statuses.is_empty() || self.statuses.iter().any(|s| s == status))
            && self.last_updated.iter().all(|(cmp, t)| match cmp {
                Cmp::Ge => at >= *t,
                Cmp::Gt => at > *t,
                Cmp::Le => at <= *t,
                Cmp::Lt => at < *t,
                Cmp::Eq => at.date_naive() == t.date_naive(),
            })
    }
}

/// The token of a search, checked (and counted against the system's limit) before anything is
/// read, a body included.
fn searcher(app: &App, req: &HttpRequest) -> Result<vpr_app::Caller, FhirError> {
    Ok(authenticate(app, req, &[Scope::NoticesWrite, Scope::NoticesRead])?)
}

async fn search(
    app: &App,
    req: &HttpRequest,
    caller: vpr_app::Caller,
    params: Vec<(String, String)>,
) -> Result<HttpResponse, FhirError> {
    vpr_app::access::require_scope(&caller.principal, Scope::NoticesRead)?;
    let checked = FlagSearch::from_params(app, &caller, &params).and_then(|s| Ok((s, asserted(req)?)));
    let (query, access) = match checked {
        Ok(v) => v,
        Err(refusal) => return Err(refused(app, &caller, AuditAction::FhirSearch, refusal).await.into()),
    };
    let q = query.clone();
    let (shown_notices, found) =
        app.search_flags(&caller, access, query.nhs_number.clone(), move |n| q.keeps(n)).await?;
    let known = KnownSubject { nhs_number: Some(query.nhs_number.clone()) };
    let mut flags: Vec<Value> = shown_notices
        .iter()
        .filter_map(|d| {
            let f = found.get(&d.id)?;
            Some(flag(d, Shown { version: f.version, updated_at: f.updated_at }, &known))
        })
        .collect();
    flags.sort_by(|a, b| {
        b["meta"]["lastUpdated"]
            .as_str()
            .cmp(&a["meta"]["lastUpdated"].as_str())
            .then(a["id"].as_str().cmp(&b["id"].as_str()))
    });
    Ok(fhir_ok(StatusCode::OK, &searchset(app, &query, flags)?))
}

/// The `searchset` Bundle of one page of Flags, with its page links.
fn searchset(app: &App, query: &FlagSearch, flags: Vec<Value>) -> Result<Value, ApiError> {
    let base = base(app);
    let total = flags.len();
    let page: Vec<Value> = flags.into_iter().skip(query.offset).take(query.count).collect();
    let mut links =
        vec![json!({"relation": "self", "url": format!("{base}/Flag?_page={}", query.seal(app, query.offset)?)})];
    if query.offset + query.count < total {
        links.push(json!({"relation": "next", "url": format!("{base}/Flag?_page={}", query.seal(app, query.offset + query.count)?)}));
    }
    let entries: Vec<Value> = page
        .into_iter()
        .map(|f| json!({"fullUrl": format!("{base}/Flag/{}", f["id"].as_str().unwrap_or_default()), "resource": f, "search": {"mode": "match"}}))
        .collect();
    Ok(json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4(),
        "meta": {"lastUpdated": app.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)},
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    }))
}

/// Searches Flags by patient NHS number (identifier in the URL: prefer `POST Flag/_search`).
#[utoipa::path(
    tag = "fhir",
    params(
        ("patient.identifier" = Option<String>, Query, description = "`https://fhir.nhs.uk/Id/nhs-number|<n>` (also `patient:identifier`, `subject:identifier`)"),
        ("status" = Option<String>, Query, description = "active, inactive, entered-in-error (comma-separated)"),
        ("_lastUpdated" = Option<String>, Query, description = "A date or instant with a ge, gt, le, lt or eq prefix; repeatable"),
        ("_count" = Option<i64>, Query, description = "1 to 200 (default 50)"),
        ("_page" = Option<String>, Query, description = "An opaque page token from a `next` link"),
        ("VPR-Purpose" = String, Header, description = "Purpose of use"),
        ("VPR-User-Id" = String, Header, description = "The end user"),
        ("VPR-User-Role" = String, Header, description = "The user's role"),
    ),
    responses(
        (status = 200, description = "A `searchset` Bundle of Flags, each in its decided view", body = Object, content_type = "application/fhir+json"),
        (status = 403, description = "Refused by the agreement (audited): an OperationOutcome", body = Object, content_type = "application/fhir+json"),
        (status = 422, description = "A bad search parameter: an OperationOutcome naming it", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["notices:read"]))
)]
#[get("/fhir/R4/Flag")]
pub async fn search_get(app: web::Data<App>, req: HttpRequest) -> Result<HttpResponse, FhirError> {
    let caller = searcher(&app, &req)?;
    let params = crate::extract::Query::of(&req)?.pairs().to_vec();
    search(&app, &req, caller, params).await
}

/// Searches Flags with the parameters in a form body, so the NHS number is not in the URL.
#[utoipa::path(
    tag = "fhir",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "The same parameters as `GET /fhir/R4/Flag`"),
    responses(
        (status = 200, description = "A `searchset` Bundle", body = Object, content_type = "application/fhir+json"),
        (status = 403, description = "Refused by the agreement (audited)", body = Object, content_type = "application/fhir+json"),
        (status = 422, description = "A bad search parameter", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["notices:read"]))
)]
#[post("/fhir/R4/Flag/_search")]
pub async fn search_post(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, FhirError> {
    let caller = searcher(&app, &req)?;
    let body = body(payload, MAX_BODY_BYTES).await?;
    let mut params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| ApiError::BadRequest { detail: "the form body is malformed".into(), errors: vec![] })?;
    let from_query: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    params.extend(from_query);
    search(&app, &req, caller, params).await
}

/// Reads one Flag: its publisher sees it in full; anyone else in the view the agreement decides
/// for the purpose and role in the `VPR-*` headers (audited).
#[utoipa::path(
    tag = "fhir",
    params(
        ("id" = Uuid, Path, description = "Flag (notice) id"),
        ("VPR-Purpose" = Option<String>, Header, description = "Purpose of use (required unless you are the publisher)"),
        ("VPR-User-Id" = Option<String>, Header, description = "The end user"),
        ("VPR-User-Role" = Option<String>, Header, description = "The user's role"),
    ),
    responses(
        (status = 200, description = "The Flag", body = Object, content_type = "application/fhir+json"),
        (status = 403, description = "Refused by the agreement (audited)", body = Object, content_type = "application/fhir+json"),
        (status = 404, description = "No such Flag", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["notices:read"]))
)]
#[get("/fhir/R4/Flag/{id}")]
pub async fn read(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::NoticesRead, Scope::NoticesWrite])?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no Flag has this id".into()))?;
    let access = asserted(&req);
    let read = app.read_notice(&caller, id, AuditAction::FhirRead, move || access).await.map_err(|e| match e {
        vpr_app::AppError::NotFound(_) => ApiError::NotFound("no Flag has this id".into()),
        other => other.into(),
    })?;
    let (d, shown) = match read {
        NoticeRead::Own(n) => (
            vpr_app::disclose::publisher_view(&app, &n),
            Shown { version: n.version.version, updated_at: n.version.at },
        ),
        NoticeRead::Disclosed(d, version, updated_at) => (*d, Shown { version, updated_at }),
    };
    Ok(fhir_ok(StatusCode::OK, &flag(&d, shown, &KnownSubject::default())))
}
