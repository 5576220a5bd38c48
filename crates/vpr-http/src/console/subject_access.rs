//! The subject access report (UK GDPR Article 15): a person's, address's or telephone
//! number's identifiers in a form (POSTed, never in a URL), the report on screen or as a
//! download. IG roles only; each report is audited as `subject-access-report`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use vpr_app::services::ig::SubjectAccessReport;
use vpr_app::App;
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::audit_query;

use super::pages::day_bound;
use super::view::{html, Field, FieldProblem, Report, SubjectAccessPage};
use super::{ctx, signed_in, Console, Ctx};

const HERE: &str = "/console/subject-access";

/// The form: `(name, label, hint, input type)`.
pub(super) const FIELDS: [(&str, &str, Option<&str>, &str); 12] = [
    ("reference", "Your reference", Some("The subject access request's reference (required)"), "text"),
    ("nhs_number", "NHS number", Some("10 digits"), "text"),
    ("family_name", "Family name", None, "text"),
    ("given_name", "Given name", None, "text"),
    ("birth_date", "Date of birth", None, "date"),
    ("postcode", "Postcode (of the person)", None, "text"),
    ("uprn", "Address: UPRN", None, "text"),
    ("address_postcode", "Address: postcode", None, "text"),
    ("line1", "Address: first line", None, "text"),
    ("telephone", "Telephone number", None, "tel"),
    ("from", "From (date)", Some("On or after, UTC"), "date"),
    ("to", "To (date)", Some("Up to and including, UTC"), "date"),
];

fn fields(given: &[(String, String)], problems: &[FieldProblem]) -> Vec<Field> {
    FIELDS
        .iter()
        .map(|(name, label, hint, kind)| Field {
            name,
            label,
            hint: *hint,
            kind,
            value: given.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default(),
            options: vec![],
            error: problems.iter().find(|p| p.field == *name).map(|p| p.message.clone()),
        })
        .collect()
}

/// The subject the form's identifiers name, as the API's `subject` object (`None` if none
/// were given).
pub(super) fn subject_of(given: &[(String, String)]) -> Option<Value> {
    let get =
        |name: &str| given.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut person = Map::new();
    for name in ["nhs_number", "family_name", "given_name", "birth_date", "postcode"] {
        if let Some(v) = get(name) {
            person.insert(name.into(), json!(v));
        }
    }
    let mut address = Map::new();
    for (form, api) in [("uprn", "uprn"), ("address_postcode", "postcode"), ("line1", "line1")] {
        if let Some(v) = get(form) {
            address.insert(api.into(), json!(v));
        }
    }
    let mut subject = Map::new();
    if !person.is_empty() {
        subject.insert("person".into(), Value::Object(person));
    }
    if !address.is_empty() {
        subject.insert("address".into(), Value::Object(address));
    }
    if let Some(t) = get("telephone") {
        subject.insert("telephone".into(), json!(t));
    }
    (!subject.is_empty()).then_some(Value::Object(subject))
}

/// The review API's body for the form: the subject from whichever identifiers were given (a
/// date that is not one is a problem in `problems`).
fn body_of(given: &[(String, String)], problems: &mut Vec<FieldProblem>) -> Value {
    let get =
        |name: &str| given.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut body = Map::new();
    if let Some(subject) = subject_of(given) {
        body.insert("subject".into(), subject);
    }
    if let Some(r) = get("reference") {
        body.insert("reference".into(), json!(r));
    }
    for name in ["from", "to"] {
        match get(name).map(|v| day_bound(name, &v)) {
            Some(Ok(at)) => {
                body.insert(name.into(), json!(at));
            }
            Some(Err(p)) => problems.push(p),
            None => {}
        }
    }
    Value::Object(body)
}

/// Which form field a validation error's pointer is about.
pub(super) fn field_of(pointer: &str) -> String {
    match pointer {
        "/subject/address/postcode" => "address_postcode".into(),
        "/subject" | "" => "nhs_number".into(),
        p => p.rsplit('/').next().unwrap_or("reference").to_owned(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn report_view(r: &SubjectAccessReport) -> Report {
    let org = |o: &Value| match o.get("name").map(text).filter(|n| !n.is_empty()) {
        Some(name) => format!("{name} ({})", text(&o["ods_code"])),
        None => text(&o["ods_code"]),
    };
    Report {
        reference: r.reference.clone().unwrap_or_default(),
        generated_at: r.generated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        agreement_version: r.agreement_version.clone(),
        truncated: r.truncated,
        notices: r
            .notices
            .iter()
            .map(|n| {
                (
                    text(&n["notice_id"]),
                    org(&n["publisher"]),
                    text(&n["category"]),
                    text(&n["status"]),
                    text(&n["published_at"]),
                )
            })
            .collect(),
        recipients: r.recipients.iter().map(org).collect(),
        disclosures: r
            .disclosures
            .iter()
            .map(|d| {
                let purpose =
                    d.get("purpose_title").map(text).filter(|t| !t.is_empty()).unwrap_or_else(|| text(&d["purpose"]));
                let what = format!("notice {} ({} view)", text(&d["notice_id"]), text(&d["view"]));
                (text(&d["at"]), org(&d["organisation"]), text(&d["role"]), purpose, what, text(&d["lawful_basis"]))
            })
            .collect(),
        searches: r.searches.len(),
    }
}

/// `GET /console/subject-access`: the form.
pub(super) async fn form(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match signed_in(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(e) = app.check_reviewer(&caller, who.user, who.role, AuditAction::SubjectAccessReport).await {
        return c.failure(&s, HERE, &e);
    }
    page(&c, &s, &[], vec![], None, StatusCode::OK)
}

fn page(
    c: &Ctx<'_>,
    s: &super::session::Session,
    given: &[(String, String)],
    errors: Vec<FieldProblem>,
    report: Option<Report>,
    status: StatusCode,
) -> HttpResponse {
    let view = SubjectAccessPage {
        chrome: c.chrome(Some(c.who(s, HERE))),
        csrf: s.csrf.clone(),
        fields: fields(given, &errors),
        errors,
        report,
    };
    html(status, &view, &c.form_origin())
}

/// `POST /console/subject-access`: the report, on the page or as a download (`show`).
pub(super) async fn make(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who, mut given) = match super::posted(&c, HERE, form.into_inner()) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let show = given.iter().find(|(k, _)| k == "show").map(|(_, v)| v.clone()).unwrap_or_default();
    given.retain(|(k, _)| k != "show");
    let who = match app.check_reviewer(&caller, who.user, who.role, AuditAction::SubjectAccessReport).await {
        Ok(w) => w,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let mut problems = Vec::new();
    if !given.iter().any(|(k, v)| k == "reference" && !v.trim().is_empty()) {
        problems.push(FieldProblem { field: "reference".into(), message: "Enter the request's reference".into() });
    }
    let body = body_of(&given, &mut problems);
    if body.get("subject").is_none() {
        problems.push(FieldProblem { field: "nhs_number".into(), message: "Enter at least one identifier".into() });
    }
    let q = match audit_query(&body) {
        Ok(q) if problems.is_empty() => q,
        Ok(_) => return page(&c, &s, &given, problems, None, StatusCode::UNPROCESSABLE_ENTITY),
        Err(errs) => {
            problems.extend(errs.into_iter().map(|e| FieldProblem { field: field_of(&e.pointer), message: e.detail }));
            return page(&c, &s, &given, problems, None, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let report = match app.subject_access_report(&caller, who, q).await {
        Ok(r) => r,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    match show.as_str() {
        "json" => download("application/json", "json", serde_json::to_vec_pretty(&report).unwrap_or_default()),
        "csv" => match crate::audit_view::report_csv(&report.disclosures) {
            Ok(bytes) => download("text/csv; charset=utf-8", "csv", bytes.to_vec()),
            Err(_) => c.failure(&s, HERE, &vpr_app::AppError::Unavailable("the CSV could not be written".into())),
        },
        _ => page(&c, &s, &given, vec![], Some(report_view(&report)), StatusCode::OK),
    }
}

fn download(kind: &str, ext: &str, body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(kind.to_owned())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"subject-access-report.{ext}\"")))
        .body(body)
}
