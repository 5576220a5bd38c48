//! The console's pages as typed templates (askama: checked when the broker is built, every value
//! HTML-escaped), and the headers every page is sent with.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use askama::Template;

use super::session::Session;

/// A link in the menu, on a card or under a message.
#[derive(Debug, Clone)]
pub struct Link {
    /// Where it goes.
    pub href: String,
    /// Its text.
    pub text: String,
    /// Whether it is the page being shown.
    pub current: bool,
}

impl Link {
    /// A link.
    pub fn to(href: &str, text: &str) -> Self {
        Self { href: href.to_owned(), text: text.to_owned(), current: false }
    }
}

/// The signed-in person, as the header shows them.
#[derive(Debug, Clone)]
pub struct Who {
    /// Name.
    pub name: String,
    /// Console role.
    pub role: String,
    /// Organisation's name.
    pub org_name: String,
    /// The session's CSRF token, for the sign-out form.
    pub csrf: String,
    /// The menu for their role.
    pub menu: Vec<Link>,
}

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The ICS's name.
    pub ics: String,
    /// Whether the broker runs in demo mode.
    pub demo: bool,
    /// The signed-in person, if any.
    pub who: Option<Who>,
}

/// The pages each role may open, as the menu lists them (`current` marks `here`).
pub fn menu(session: &Session, here: &str) -> Vec<Link> {
    let mut links = vec![Link::to("/console", "Home")];
    if session.person.is_ig() {
        links.push(Link::to("/console/audit", "Audit search"));
        links.push(Link::to("/console/break-glass", "Break-glass review"));
        links.push(Link::to("/console/subject-access", "Subject access"));
        links.push(Link::to("/console/subscriptions", "Approvals"));
        links.push(Link::to("/console/consents", "Consents and objections"));
        links.push(Link::to("/console/integrity", "Log integrity"));
    }
    if session.person.role == "vpr-lead" {
        links.push(Link::to("/console/notices", "Your notices"));
    }
    links.push(Link::to("/console/figures", "Figures"));
    for l in &mut links {
        l.current = l.href == here;
    }
    links
}

/// A message page: a heading, some lines and perhaps a link.
#[derive(Template)]
#[template(path = "console/message.html")]
pub struct MessagePage {
    /// Frame.
    pub chrome: Chrome,
    /// Heading.
    pub heading: String,
    /// Paragraphs.
    pub lines: Vec<String>,
    /// A way on.
    pub link: Option<Link>,
}

/// A home page card.
#[derive(Debug, Clone)]
pub struct Card {
    /// Where it goes.
    pub href: String,
    /// Heading.
    pub text: String,
    /// What it is for.
    pub description: String,
}

/// The home page.
#[derive(Template)]
#[template(path = "console/home.html")]
pub struct HomePage {
    /// Frame.
    pub chrome: Chrome,
    /// The person's name.
    pub name: String,
    /// Their role's title in the agreement.
    pub role_title: String,
    /// Their organisation's name.
    pub org_name: String,
    /// The pages their role may open.
    pub cards: Vec<Card>,
}

/// One filter of the audit search form.
#[derive(Debug, Clone)]
pub struct Field {
    /// Parameter name (and the input's id).
    pub name: &'static str,
    /// Label.
    pub label: &'static str,
    /// Hint.
    pub hint: Option<&'static str>,
    /// Input type.
    pub kind: &'static str,
    /// Value as given.
    pub value: String,
    /// For a select: `(value, text)`.
    pub options: Vec<(String, String)>,
    /// The error for this field, if any.
    pub error: Option<String>,
}

/// An error summary item.
#[derive(Debug, Clone)]
pub struct FieldProblem {
    /// The field's id.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// An audit entry as a table row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Position in the log.
    pub seq: i64,
    /// The entry's id.
    pub id: String,
    /// When.
    pub at: String,
    /// Action.
    pub action: String,
    /// Organisation, system, user and role.
    pub who: String,
    /// Purpose.
    pub purpose: String,
    /// Decision.
    pub decision: String,
    /// HTTP outcome.
    pub outcome: u16,
    /// Notices decided on (ids and views).
    pub notices: String,
    /// Emergency access.
    pub break_glass: bool,
}

/// The audit search page.
#[derive(Template)]
#[template(path = "console/audit.html")]
pub struct AuditPage {
    /// Frame.
    pub chrome: Chrome,
    /// The filters.
    pub fields: Vec<Field>,
    /// Problems with them.
    pub errors: Vec<FieldProblem>,
    /// Whether a search was run.
    pub searched: bool,
    /// The entries found.
    pub rows: Vec<Row>,
    /// The next page's URL.
    pub next: Option<String>,
    /// Every matching entry as CSV.
    pub export_csv: String,
    /// Every matching entry as NDJSON.
    pub export_ndjson: String,
}

/// The Content-Security-Policy of every page: nothing but the broker's own styles and images,
/// no scripts, no framing; forms go to the broker or (signing out) the identity provider.
fn csp(form_origin: &str) -> String {
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; font-src 'self' https://assets.nhs.uk; \
         form-action 'self' {form_origin}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// A rendered page with the console's headers (never cached, never framed, no referrer to other
/// sites).
pub fn html(status: StatusCode, page: &impl Template, form_origin: &str) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header(("content-security-policy", csp(form_origin)))
            .insert_header(("x-frame-options", "DENY"))
            .insert_header(("x-content-type-options", "nosniff"))
            // `same-origin`, not `no-referrer`: with no referrer the browser sends `Origin: null`
            // on the console's own forms, which the CSRF check refuses.
            .insert_header(("referrer-policy", "same-origin"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .insert_header(("cache-control", "no-store"))
                .body("The page could not be shown. The error has been logged.")
        }
    }
}

/// An emergency access as the break-glass queue shows it.
#[derive(Debug, Clone)]
pub struct Access {
    /// Its audit entry's id.
    pub id: String,
    /// When.
    pub at: String,
    /// Organisation, system, user and role.
    pub who: String,
    /// The justification given.
    pub justification: String,
    /// The purpose asserted.
    pub purpose: String,
    /// The notices seen and at which view.
    pub seen: String,
    /// The decision.
    pub decision: String,
    /// The outcome recorded, if any.
    pub review: Option<String>,
}

/// The break-glass queue.
#[derive(Template)]
#[template(path = "console/break_glass.html")]
pub struct BreakGlassPage {
    /// Frame.
    pub chrome: Chrome,
    /// The session's CSRF token.
    pub csrf: String,
    /// Links to each review status.
    pub statuses: Vec<Link>,
    /// The status shown, in words.
    pub status_text: String,
    /// The accesses.
    pub items: Vec<Access>,
    /// The outcomes, `(value, label)`.
    pub outcomes: Vec<(String, String)>,
    /// Problems with the form just sent.
    pub errors: Vec<FieldProblem>,
    /// The access whose outcome was just recorded.
    pub recorded: Option<String>,
}

/// A subject access report as the page shows it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The request's reference.
    pub reference: String,
    /// When it was made.
    pub generated_at: String,
    /// The agreement in force.
    pub agreement_version: String,
    /// Whether it was cut short.
    pub truncated: bool,
    /// Notices: id, publisher, category, status, published.
    pub notices: Vec<(String, String, String, String, String)>,
    /// Organisations disclosed to.
    pub recipients: Vec<String>,
    /// Disclosures: when, to, role, purpose, what, lawful basis.
    pub disclosures: Vec<(String, String, String, String, String, String)>,
    /// Searches that disclosed nothing.
    pub searches: usize,
}

/// The subject access page.
#[derive(Template)]
#[template(path = "console/subject_access.html")]
pub struct SubjectAccessPage {
    /// Frame.
    pub chrome: Chrome,
    /// The session's CSRF token.
    pub csrf: String,
    /// The identifiers and reference.
    pub fields: Vec<Field>,
    /// Problems with them.
    pub errors: Vec<FieldProblem>,
    /// The report made.
    pub report: Option<Report>,
}

/// A subscription waiting for IG's decision.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Id.
    pub id: String,
    /// The subscribing organisation and system.
    pub owner: String,
    /// Purpose and role.
    pub purpose: String,
    /// Topic and criteria, in words.
    pub what: String,
    /// Delivery method (and where).
    pub delivery: String,
    /// When it was asked for.
    pub created: String,
    /// When it ends.
    pub expires: String,
    /// Why the agreement did not approve it by itself.
    pub why: String,
}

/// The subscriptions awaiting approval.
#[derive(Template)]
#[template(path = "console/subscriptions.html")]
pub struct SubscriptionsPage {
    /// Frame.
    pub chrome: Chrome,
    /// The session's CSRF token.
    pub csrf: String,
    /// The subscriptions waiting.
    pub items: Vec<Waiting>,
    /// Problems with the form just sent.
    pub errors: Vec<FieldProblem>,
    /// The subscription just decided.
    pub decided: Option<String>,
}

/// Who acted, as one line: organisation, system, user and role.
pub fn actor(e: &vpr_store::audit::AuditEntry) -> String {
    [Some(e.actor_org.as_str()), Some(e.actor_system.as_str()), e.actor_user.as_deref(), e.actor_role.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" · ")
}
