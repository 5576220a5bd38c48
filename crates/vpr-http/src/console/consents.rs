//! Consents and objections: the newest recorded, a person's (identifiers POSTed, never in a
//! URL), and a form to record one with its evidence reference. IG roles only; each list is
//! audited as `directives-list`, each record commits with its `consent` or `objection` entry.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde_json::{json, Map, Value};
use vpr_app::{App, Caller, Reviewer};
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::audit_query;
use vpr_store::directives::{DirectiveKind, DirectiveRecord};

use super::session::Session;
use super::subject_access::{field_of, subject_of, FIELDS as SUBJECT_FIELDS};
use super::view::{html, Chrome, Field, FieldProblem};
use super::{ctx, redirect, Console, Ctx};

const HERE: &str = "/console/consents";

/// The most records a list shows.
const LISTED: i64 = 100;

/// What may be recorded: `(value, label, kind, status)`.
const RECORDS: [(&str, &str, DirectiveKind, &str); 4] = [
    ("consent-given", "Consent given", DirectiveKind::Consent, "given"),
    ("consent-withdrawn", "Consent withdrawn", DirectiveKind::Consent, "withdrawn"),
    ("objection-upheld", "Objection upheld", DirectiveKind::Objection, "upheld"),
    ("objection-overridden", "Objection overridden (a reason is required)", DirectiveKind::Objection, "overridden"),
];

/// A record as the list shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// What it is, in words.
    pub what: String,
    /// The purpose's title.
    pub purpose: String,
    /// The evidence reference.
    pub evidence: String,
    /// The reason, if any.
    pub reason: String,
    /// From and until.
    pub dates: String,
    /// Who recorded it, and when.
    pub recorded: String,
}

/// The list page.
#[derive(Template)]
#[template(path = "console/consents.html")]
pub struct ConsentsPage {
    /// Frame.
    pub chrome: Chrome,
    /// Whether the list is one person's.
    pub for_subject: bool,
    /// The records.
    pub records: Vec<Listed>,
    /// The record just made.
    pub recorded: Option<String>,
}

/// A form page (record, or find).
#[derive(Template)]
#[template(path = "console/form.html")]
pub struct FormPage {
    /// Frame.
    pub chrome: Chrome,
    /// Heading.
    pub heading: String,
    /// What the form is for.
    pub intro: String,
    /// Where it posts.
    pub action: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// The fields.
    pub fields: Vec<Field>,
    /// Problems with what was sent.
    pub errors: Vec<FieldProblem>,
    /// The button's text.
    pub button: String,
    /// Where "back" goes.
    pub back: String,
}

fn listed(app: &App, r: &DirectiveRecord) -> Listed {
    let what = RECORDS
        .iter()
        .find(|(_, _, kind, status)| *status == r.status && (r.kind == "consent") == (*kind == DirectiveKind::Consent))
        .map_or_else(
            || format!("{} {}", r.kind, r.status),
            |(_, label, _, _)| label.split(" (").next().unwrap_or(label).to_owned(),
        );
    let org = app.tokens.registry().partner(&r.recorded_by_org).map_or(r.recorded_by_org.clone(), |p| p.name.clone());
    Listed {
        id: r.id.to_string(),
        what,
        purpose: app.agreement.purposes.get(&r.purpose).map_or(r.purpose.clone(), |p| p.title.clone()),
        evidence: r.evidence_reference.clone(),
        reason: r.reason.clone().unwrap_or_default(),
        dates: match r.expires_on {
            Some(until) => format!("{} to {until}", r.effective_from),
            None => format!("from {}", r.effective_from),
        },
        recorded: format!("{} UTC by {} ({org})", r.recorded_at.format("%Y-%m-%d %H:%M"), r.recorded_by_user),
    }
}

async fn list_page(
    c: &Ctx<'_>,
    s: &Session,
    caller: &Caller,
    who: Reviewer,
    subject: Option<vpr_domain::notice::Subject>,
    recorded: Option<String>,
) -> HttpResponse {
    let for_subject = subject.is_some();
    match c.app.list_directives(caller, who, subject, LISTED).await {
        Ok(records) => {
            let page = ConsentsPage {
                chrome: c.chrome(Some(c.who(s, HERE))),
                for_subject,
                records: records.iter().map(|r| listed(c.app, r)).collect(),
                recorded,
            };
            html(StatusCode::OK, &page, &c.form_origin())
        }
        Err(e) => c.failure(s, HERE, &e),
    }
}

/// `GET /console/consents`: the newest records.
pub(super) async fn list(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let who = match app.check_reviewer(&caller, who.user, who.role, AuditAction::DirectivesList).await {
        Ok(w) => w,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let given: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let recorded =
        given.into_iter().find(|(k, _)| k == "recorded").map(|(_, v)| v).filter(|v| uuid::Uuid::parse_str(v).is_ok());
    list_page(&c, &s, &caller, who, None, recorded).await
}

fn subject_fields(given: &[(String, String)], problems: &[FieldProblem]) -> Vec<Field> {
    SUBJECT_FIELDS
        .iter()
        .skip(1)
        .take(9)
        .map(|(name, label, hint, kind)| field(given, problems, name, label, *hint, kind, vec![]))
        .collect()
}

fn field(
    given: &[(String, String)],
    problems: &[FieldProblem],
    name: &'static str,
    label: &'static str,
    hint: Option<&'static str>,
    kind: &'static str,
    options: Vec<(String, String)>,
) -> Field {
    Field {
        name,
        label,
        hint,
        kind,
        value: given.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default(),
        options,
        error: problems.iter().find(|p| p.field == name).map(|p| p.message.clone()),
    }
}

fn record_fields(app: &App, given: &[(String, String)], problems: &[FieldProblem]) -> Vec<Field> {
    let mut purposes = vec![(String::new(), "Choose a purpose".to_owned())];
    purposes.extend(app.agreement.purposes.values().map(|p| (p.code.clone(), p.title.clone())));
    let mut records = vec![(String::new(), "Choose what to record".to_owned())];
    records.extend(RECORDS.iter().map(|(v, l, _, _)| ((*v).to_owned(), (*l).to_owned())));
    let mut out = vec![
        field(given, problems, "record", "What is being recorded", None, "select", records),
        field(given, problems, "purpose", "Purpose it concerns", None, "select", purposes),
    ];
    out.extend(subject_fields(given, problems));
    out.extend([
        field(
            given,
            problems,
            "evidence_reference",
            "Evidence reference",
            Some("Where the signed form, letter or decision is kept"),
            "text",
            vec![],
        ),
        field(given, problems, "reason", "Reason", Some("Required when an objection is overridden"), "text", vec![]),
        field(given, problems, "effective_from", "From (date)", Some("Leave empty for today"), "date", vec![]),
        field(given, problems, "expires_on", "Until (date)", Some("Leave empty if it does not end"), "date", vec![]),
    ]);
    out
}

fn form_page(c: &Ctx<'_>, s: &Session, record: bool, fields: Vec<Field>, errors: Vec<FieldProblem>) -> HttpResponse {
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let (heading, intro, action, button) = if record {
        (
            "Record a consent or objection",
            "Identify the person by NHS number, or by name, date of birth and postcode; or an address or telephone number. What you record, and who recorded it, goes into the audit log.",
            "/console/consents/new",
            "Record it",
        )
    } else {
        (
            "Find a person's consents and objections",
            "Enter the identifiers you hold. They are sent in the form, never in the page address; the search is recorded in the audit log.",
            "/console/consents/find",
            "Find",
        )
    };
    let page = FormPage {
        chrome: c.chrome(Some(c.who(s, HERE))),
        heading: heading.into(),
        intro: intro.into(),
        action: action.into(),
        csrf: s.csrf.clone(),
        fields,
        errors,
        button: button.into(),
        back: HERE.into(),
    };
    html(status, &page, &c.form_origin())
}

/// `GET /console/consents/new` and `/console/consents/find`: the forms.
pub(super) async fn form(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    // Its role check is audited, so another site is not let open it in someone's name.
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let record = req.path().ends_with("/new");
    let action = if record { AuditAction::Consent } else { AuditAction::DirectivesList };
    if let Err(e) = app.check_reviewer(&caller, who.user, who.role, action).await {
        return c.failure(&s, HERE, &e);
    }
    let fields = if record { record_fields(&app, &[], &[]) } else { subject_fields(&[], &[]) };
    form_page(&c, &s, record, fields, vec![])
}

/// The API's body for the record form, or what is wrong with it.
fn record_body(given: &[(String, String)], who: &Reviewer) -> Result<(DirectiveKind, Value), Vec<FieldProblem>> {
    let get =
        |name: &str| given.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut problems = Vec::new();
    let chosen = get("record").and_then(|r| RECORDS.iter().find(|(v, ..)| *v == r));
    if chosen.is_none() {
        problems.push(FieldProblem { field: "record".into(), message: "Choose what is being recorded".into() });
    }
    let mut body = Map::new();
    match subject_of(given) {
        Some(subject) => {
            body.insert("subject".into(), subject);
        }
        None => {
            problems.push(FieldProblem { field: "nhs_number".into(), message: "Enter at least one identifier".into() })
        }
    }
    for (name, message) in
        [("purpose", "Choose the purpose it concerns"), ("evidence_reference", "Enter where the evidence is kept")]
    {
        match get(name) {
            Some(v) => {
                body.insert(name.into(), json!(v));
            }
            None => problems.push(FieldProblem { field: name.into(), message: message.into() }),
        }
    }
    for name in ["reason", "effective_from", "expires_on"] {
        if let Some(v) = get(name) {
            body.insert(name.into(), json!(v));
        }
    }
    body.insert("requester".into(), json!({"user_id": who.user, "role": who.role}));
    match chosen {
        Some((_, _, kind, status)) if problems.is_empty() => {
            body.insert("status".into(), json!(status));
            Ok((*kind, Value::Object(body)))
        }
        _ => Err(problems),
    }
}

fn problems_of(e: &vpr_app::AppError) -> Option<Vec<FieldProblem>> {
    match e {
        vpr_app::AppError::Validation(errs) => Some(
            errs.iter()
                .map(|e| {
                    let field = match e.pointer.as_str() {
                        "/status" => "record".to_owned(),
                        p => field_of(p),
                    };
                    FieldProblem { field, message: e.detail.clone() }
                })
                .collect(),
        ),
        _ => None,
    }
}

/// `POST /console/consents/new`: records it, then back to the list.
pub(super) async fn record(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who, given) = match super::posted(&c, HERE, form.into_inner()) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (kind, body) = match record_body(&given, &who) {
        Ok(x) => x,
        Err(problems) => return form_page(&c, &s, true, record_fields(&app, &given, &problems), problems),
    };
    match app.record_directive(&caller, kind, body).await {
        Ok(done) => redirect(&format!("{HERE}?recorded={}", done.id)),
        Err(e) => match problems_of(&e) {
            Some(problems) => form_page(&c, &s, true, record_fields(&app, &given, &problems), problems),
            None => c.failure(&s, HERE, &e),
        },
    }
}

/// `POST /console/consents/find`: one person's records.
pub(super) async fn find(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who, given) = match super::posted(&c, HERE, form.into_inner()) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let who = match app.check_reviewer(&caller, who.user, who.role, AuditAction::DirectivesList).await {
        Ok(w) => w,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    // The identifiers are checked by the same rules as any subject the API is given.
    let subject = match subject_of(&given).map(|subject| audit_query(&json!({ "subject": subject }))) {
        Some(Ok(q)) => q.subject,
        Some(Err(errs)) => {
            let problems: Vec<FieldProblem> =
                errs.into_iter().map(|e| FieldProblem { field: field_of(&e.pointer), message: e.detail }).collect();
            return form_page(&c, &s, false, subject_fields(&given, &problems), problems);
        }
        None => {
            let problems =
                vec![FieldProblem { field: "nhs_number".into(), message: "Enter at least one identifier".into() }];
            return form_page(&c, &s, false, subject_fields(&given, &problems), problems);
        }
    };
    list_page(&c, &s, &caller, who, subject, None).await
}
