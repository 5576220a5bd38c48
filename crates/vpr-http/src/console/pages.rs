//! The console's pages: the home page for each role, and the audit search.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use vpr_app::App;
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::audit_query_params;
use vpr_store::audit::StoredAuditEntry;

use crate::audit_view::Format;

use super::view::{html, AuditPage, Card, Field, FieldProblem, HomePage, Row};
use super::{ctx, signed_in, Console};

/// `GET /console`: what the person's role may do here.
pub(super) async fn home(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, _) = match signed_in(&c, "/console") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let p = &s.person;
    let cards = super::view::menu(&s, "/console")
        .into_iter()
        .filter(|l| l.href != "/console")
        .map(|l| Card { description: card_text(&l.href).into(), href: l.href, text: l.text })
        .collect();
    let role_title = app.agreement.roles.get(&p.role).map(|r| r.title.clone()).unwrap_or_else(|| p.role.clone());
    let page = HomePage {
        chrome: c.chrome(Some(c.who(&s, "/console"))),
        name: p.name.clone(),
        role_title,
        org_name: caller.principal.org_name.clone(),
        cards,
    };
    html(StatusCode::OK, &page, &c.form_origin())
}

/// What each page is for, as its home page card says.
fn card_text(href: &str) -> &'static str {
    match href {
        "/console/audit" => "Who saw what, about whom, why and under which law: search and download the audit log, and prove any entry is in it.",
        "/console/break-glass" => "Emergency accesses waiting for review: the justification, what was seen, and your outcome.",
        "/console/subject-access" => "A person's Article 15 report: the notices about them and every disclosure, on screen or as a download.",
        "/console/subscriptions" => "Standing subscriptions the agreement does not approve by itself: approve or refuse each with a reason.",
        "/console/consents" => "Record a person's consent or objection for a purpose, with its evidence, and see those recorded.",
        "/console/integrity" => "The latest signed checkpoint of the audit log, and whether it extends the one before.",
        "/console/notices" => "Your organisation's notices due for review in the next 30 days, expired ones, and who saw each.",
        "/console/figures" => "Notices and disclosures per partner, category, purpose and month, small numbers suppressed.",
        _ => "",
    }
}

/// The filters of the review API, as form fields.
fn fields(given: &[(String, String)]) -> Vec<Field> {
    let value = |name: &str| given.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let text = |name: &'static str, label: &'static str, hint: Option<&'static str>, kind: &'static str| Field {
        name,
        label,
        hint,
        kind,
        value: value(name),
        options: vec![],
        error: None,
    };
    let decisions =
        ["", "permit", "deny", "partial", "no-match", "refused", "appropriate", "inappropriate", "referred"];
    let select = |name: &'static str, label: &'static str, options: Vec<(String, String)>| Field {
        name,
        label,
        hint: None,
        kind: "select",
        value: value(name),
        options,
        error: None,
    };
    vec![
        text("reference", "Your reference", Some("The request or investigation this search is for"), "text"),
        text("from", "From (date)", Some("On or after, UTC"), "date"),
        text("to", "To (date)", Some("Up to and including, UTC"), "date"),
        text("organisation", "Organisation (ODS code)", None, "text"),
        text("user", "User", None, "text"),
        text("role", "Role", None, "text"),
        text("purpose", "Purpose", None, "text"),
        text("action", "Action", Some("For example lookup, read, audit-search"), "text"),
        text("notice", "Notice id", None, "text"),
        select(
            "decision",
            "Decision",
            decisions
                .iter()
                .map(|d| ((*d).to_owned(), if d.is_empty() { "Any".to_owned() } else { (*d).to_owned() }))
                .collect(),
        ),
        select(
            "break_glass",
            "Emergency access",
            vec![
                ("".into(), "Any".into()),
                ("true".into(), "Break-glass only".into()),
                ("false".into(), "Ordinary only".into()),
            ],
        ),
    ]
}

/// A date field (`YYYY-MM-DD`) as the review API's bound: `from` the start of the day, `to` the
/// start of the next day, so the day is included.
pub(super) fn day_bound(name: &str, value: &str) -> Result<String, FieldProblem> {
    let d = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| FieldProblem {
        field: name.to_owned(),
        message: format!("Enter the {name} date as a real date"),
    })?;
    let d = if name == "to" { d.succ_opt().unwrap_or(d) } else { d };
    Ok(format!("{}T00:00:00Z", d.format("%Y-%m-%d")))
}

/// The form's values as the review API's parameters: empty ones dropped, dates as the start of
/// the day (`to`: of the next day, so the day is included), paging kept.
fn api_params(given: &[(String, String)]) -> Result<Vec<(String, String)>, Vec<FieldProblem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (k, v) in given {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "from" | "to" => match day_bound(k, v) {
                Ok(at) => out.push((k.clone(), at)),
                Err(p) => problems.push(p),
            },
            _ => out.push((k.clone(), v.to_owned())),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The console's page size.
const PAGE: i64 = 50;

fn row(e: &StoredAuditEntry) -> Row {
    let a = &e.entry;
    let who = super::view::actor(a);
    let notices = a
        .notices
        .iter()
        .map(|n| format!("{} ({})", n.id, n.view.as_deref().unwrap_or(n.decision.as_str())))
        .collect::<Vec<_>>()
        .join(", ");
    Row {
        seq: e.seq,
        id: a.id.to_string(),
        at: a.at.format("%Y-%m-%d %H:%M:%S").to_string(),
        action: a.action.clone(),
        who,
        purpose: a.purpose.clone().unwrap_or_default(),
        decision: a.decision.clone(),
        outcome: a.outcome,
        notices,
        break_glass: a.break_glass,
    }
}

fn with_param(base: &[(String, String)], name: &str, value: &str) -> String {
    let mut q: Vec<(String, String)> =
        base.iter().filter(|(k, v)| k != name && k != "before" && !v.trim().is_empty()).cloned().collect();
    q.push((name.to_owned(), value.to_owned()));
    serde_urlencoded::to_string(&q).unwrap_or_default()
}

/// `GET /console/audit`: the search form, and with filters a page of entries (newest first,
/// stable paging by `before`), the search itself audited as `audit-search` before it renders.
pub(super) async fn audit(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match signed_in(&c, "/console/audit") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let given: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let chrome = c.chrome(Some(c.who(&s, "/console/audit")));
    let mut page = AuditPage {
        chrome,
        fields: fields(&given),
        errors: vec![],
        searched: false,
        rows: vec![],
        next: None,
        export_csv: String::new(),
        export_ndjson: String::new(),
    };
    let who = match app.check_reviewer(&caller, who.user, who.role, AuditAction::AuditSearch).await {
        Ok(w) => w,
        Err(e) => return c.failure(&s, "/console/audit", &e),
    };
    if given.iter().all(|(_, v)| v.trim().is_empty()) {
        return html(StatusCode::OK, &page, &c.form_origin());
    }
    if let Some(ask) = super::from_elsewhere(&c, &s, "/console/audit") {
        return ask;
    }
    let params = api_params(&given).and_then(|mut p| {
        if !p.iter().any(|(k, _)| k == "limit") {
            p.push(("limit".into(), PAGE.to_string()));
        }
        audit_query_params(&p).map_err(|errs| {
            errs.into_iter()
                .map(|e| FieldProblem { field: e.pointer.trim_start_matches('/').to_owned(), message: e.detail })
                .collect()
        })
    });
    let q = match params {
        Ok(q) => q,
        Err(problems) => {
            for f in &mut page.fields {
                f.error = problems.iter().find(|p| p.field == f.name).map(|p| p.message.clone());
            }
            page.errors = problems;
            return html(StatusCode::UNPROCESSABLE_ENTITY, &page, &c.form_origin());
        }
    };
    let limit = q.input.limit.unwrap_or(PAGE);
    match app.search_audit(&caller, who, q).await {
        Ok(entries) => {
            page.searched = true;
            if entries.len() as i64 >= limit {
                if let Some(last) = entries.last() {
                    page.next = Some(format!("/console/audit?{}", with_param(&given, "before", &last.seq.to_string())));
                }
            }
            page.rows = entries.iter().map(row).collect();
            page.export_csv = format!("/console/audit/export?{}", with_param(&given, "format", "csv"));
            page.export_ndjson = format!("/console/audit/export?{}", with_param(&given, "format", "ndjson"));
            html(StatusCode::OK, &page, &c.form_origin())
        }
        Err(e) => c.failure(&s, "/console/audit", &e),
    }
}

/// `GET /console/audit/export?format=csv|ndjson&...`: every entry matching the filters, as a
/// download, audited as `audit-export` before any entry is read.
pub(super) async fn audit_export(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match signed_in(&c, "/console/audit") {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let given: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    if let Some(ask) = super::from_elsewhere(&c, &s, "/console/audit") {
        return ask;
    }
    let format = match given.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()) {
        Some("ndjson") => Format::Ndjson,
        _ => Format::Csv,
    };
    let filters: Vec<(String, String)> = given.iter().filter(|(k, _)| k != "format" && k != "limit").cloned().collect();
    let who = match app.check_reviewer(&caller, who.user, who.role, AuditAction::AuditExport).await {
        Ok(w) => w,
        Err(e) => return c.failure(&s, "/console/audit", &e),
    };
    let q = match api_params(&filters).map_err(|_| ()).and_then(|p| audit_query_params(&p).map_err(|_| ())) {
        Ok(q) => q,
        Err(()) => {
            let bad = vpr_app::AppError::Validation(vec![vpr_domain::FieldError::new(
                "/filters",
                "invalid",
                "the filters are not valid: search first, then download",
            )]);
            return c.failure(&s, "/console/audit", &bad);
        }
    };
    match app.begin_export(&caller, who, q).await {
        Ok(started) => crate::audit_view::export(&app, started, format),
        Err(e) => c.failure(&s, "/console/audit", &e),
    }
}
