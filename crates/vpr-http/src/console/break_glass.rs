//! The break-glass queue: emergency accesses with their justification and what was seen, and
//! IG's outcome for each, recorded with its audit entry. IG roles only (a refusal is audited).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use vpr_app::{App, Caller, Reviewer};
use vpr_domain::audit::AuditAction;
use vpr_domain::validate::{parse_body, BodySchema, BreakGlassReviewInput};
use vpr_store::audit::StoredAuditEntry;

use super::session::Session;
use super::view::{html, Access, BreakGlassPage, FieldProblem, Link};
use super::{ctx, form_for, redirect, Console, Ctx};

const HERE: &str = "/console/break-glass";

const STATUSES: [(&str, &str); 4] = [
    ("pending", "awaiting review"),
    ("appropriate", "found appropriate"),
    ("inappropriate", "found inappropriate"),
    ("referred", "referred"),
];

const OUTCOMES: [(&str, &str); 3] =
    [("appropriate", "Appropriate"), ("inappropriate", "Inappropriate"), ("referred", "Refer for investigation")];

fn access(s: &StoredAuditEntry) -> Access {
    let e = &s.entry;
    let who = super::view::actor(e);
    let seen = if e.notices.is_empty() {
        "nothing".to_owned()
    } else {
        e.notices
            .iter()
            .map(|n| format!("notice {} ({})", n.id, n.view.as_deref().unwrap_or(n.decision.as_str())))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Access {
        id: e.id.to_string(),
        at: e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        who,
        justification: e.justification.clone().unwrap_or_default(),
        purpose: e.purpose.clone().unwrap_or_default(),
        seen,
        decision: e.decision.clone(),
        review: e.ig_review.clone().filter(|r| r != "pending"),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct QueueQuery {
    status: Option<String>,
    recorded: Option<String>,
}

/// The queue for `status`, read (and audited as `break-glass-queue`) before it renders.
async fn queue_page(
    c: &Ctx<'_>,
    s: &Session,
    caller: &Caller,
    who: Reviewer,
    status: &str,
    error: Option<FieldProblem>,
    recorded: Option<String>,
) -> HttpResponse {
    let who = match c.app.check_reviewer(caller, who.user, who.role, AuditAction::BreakGlassQueue).await {
        Ok(w) => w,
        Err(e) => return c.failure(s, HERE, &e),
    };
    let entries = match c.app.break_glass_queue(caller, who, status.to_owned()).await {
        Ok(e) => e,
        Err(e) => return c.failure(s, HERE, &e),
    };
    let statuses = STATUSES
        .iter()
        .map(|(code, text)| Link {
            href: format!("{HERE}?status={code}"),
            text: capitalised(text),
            current: *code == status,
        })
        .collect();
    let status_text =
        STATUSES.iter().find(|(code, _)| *code == status).map(|(_, t)| (*t).to_owned()).unwrap_or_default();
    let page = BreakGlassPage {
        chrome: c.chrome(Some(c.who(s, HERE))),
        csrf: s.csrf.clone(),
        statuses,
        status_text,
        items: entries.iter().map(access).collect(),
        outcomes: OUTCOMES.iter().map(|(v, l)| ((*v).to_owned(), (*l).to_owned())).collect(),
        recorded,
        errors: error.iter().cloned().collect(),
    };
    let code = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    html(code, &page, &c.form_origin())
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|f| f.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// `GET /console/break-glass?status=`.
pub(super) async fn queue(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let q = web::Query::<QueueQuery>::from_query(req.query_string()).ok();
    let status = q.as_ref().and_then(|q| q.status.clone()).filter(|st| STATUSES.iter().any(|(code, _)| code == st));
    let recorded = q.and_then(|q| q.recorded.clone()).filter(|r| uuid::Uuid::parse_str(r).is_ok());
    queue_page(&c, &s, &caller, who, status.as_deref().unwrap_or("pending"), None, recorded).await
}

#[derive(serde::Deserialize)]
pub(super) struct OutcomeForm {
    csrf: Option<String>,
    outcome: Option<String>,
    note: Option<String>,
}

/// `POST /console/break-glass/{id}`: records the outcome (with its audit entry), then back to
/// the queue (post/redirect/get).
pub(super) async fn record(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<OutcomeForm>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who, id) = match form_for(
        &c,
        HERE,
        form.csrf.as_deref(),
        &id,
        vpr_app::AppError::Conflict("no pending break-glass access has this id".into()),
    ) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let body = json!({
        "outcome": form.outcome.clone().unwrap_or_default(),
        "note": form.note.clone().unwrap_or_default().trim(),
        "reviewer": {"user_id": who.user, "role": who.role},
    });
    let input: BreakGlassReviewInput = match parse_body(BodySchema::BreakGlassReview, &body) {
        Ok(i) => i,
        Err(errs) => {
            let first = errs.first();
            let field = match first.map(|e| e.pointer.as_str()) {
                Some("/note") => format!("note-{id}"),
                _ => format!("outcome-{id}-appropriate"),
            };
            let message = match first.map(|e| e.pointer.as_str()) {
                Some("/note") => "Write a note saying why (at most 2,000 characters)".to_owned(),
                _ => "Choose whether the access was appropriate".to_owned(),
            };
            return queue_page(&c, &s, &caller, who, "pending", Some(FieldProblem { field, message }), None).await;
        }
    };
    match app.review_break_glass(&caller, id, input).await {
        Ok(()) => redirect(&format!("{HERE}?recorded={id}")),
        Err(e) => c.failure(&s, HERE, &e),
    }
}
