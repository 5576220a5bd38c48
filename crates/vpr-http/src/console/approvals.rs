//! Subscriptions awaiting approval: what each asks for, and IG's decision (approve or refuse,
//! with a reason), recorded with its audit entry. IG roles only (a refusal is audited).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use vpr_app::{App, Caller, Reviewer};
use vpr_domain::subscription::SubscriptionStatus;
use vpr_store::subscriptions::Subscription;

use super::session::Session;
use super::view::{html, FieldProblem, SubscriptionsPage, Waiting};
use super::{ctx, form_for, redirect, signed_in, Console, Ctx};

const HERE: &str = "/console/subscriptions";

/// The most subscriptions the page lists.
const MAX_LISTED: i64 = 200;

fn waiting(app: &App, s: &Subscription) -> Waiting {
    let registry = app.tokens.registry();
    let org =
        registry.partner(&s.owner_ods).map(|p| format!("{} ({})", p.name, s.owner_ods)).unwrap_or(s.owner_ods.clone());
    let c = &s.criteria;
    let list = |v: Value| match v {
        Value::Array(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        _ => "any".to_owned(),
    };
    let mut what = format!(
        "{}: categories {}; subjects {}; postcode districts {}",
        s.topic.code(),
        list(json!(c.categories)),
        list(json!(c.subject_kinds)),
        list(json!(c.postcodes)),
    );
    if let Some(level) = &c.min_risk_level {
        what.push_str(&format!("; risk at least {}", json!(level).as_str().unwrap_or_default()));
    }
    if c.cohort {
        what.push_str("; a cohort of named subjects");
    }
    let delivery = match &s.endpoint {
        Some(url) => format!("{} to {url}", json!(s.method).as_str().unwrap_or_default()),
        None => json!(s.method).as_str().unwrap_or_default().to_owned(),
    };
    Waiting {
        id: s.id.to_string(),
        owner: format!("{org} · {}", s.owner_system),
        purpose: format!("{} · {}", s.purpose, s.role),
        what,
        delivery,
        created: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        expires: s.expires_at.format("%Y-%m-%d").to_string(),
        why: s
            .approval
            .get("awaiting")
            .and_then(Value::as_str)
            .unwrap_or("the agreement does not allow it outright")
            .to_owned(),
    }
}

async fn list_page(
    c: &Ctx<'_>,
    s: &Session,
    caller: &Caller,
    who: &Reviewer,
    error: Option<FieldProblem>,
    decided: Option<String>,
) -> HttpResponse {
    let subs =
        c.app.list_subscriptions(caller, Some(who.role.clone()), Some(SubscriptionStatus::Pending), MAX_LISTED).await;
    let subs = match subs {
        Ok(list) => list,
        Err(e) => return c.failure(s, HERE, &e),
    };
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = SubscriptionsPage {
        chrome: c.chrome(Some(c.who(s, HERE))),
        csrf: s.csrf.clone(),
        items: subs.iter().map(|(sub, _)| waiting(c.app, sub)).collect(),
        errors: error.into_iter().collect(),
        decided,
    };
    html(status, &page, &c.form_origin())
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    decided: Option<String>,
}

/// `GET /console/subscriptions`.
pub(super) async fn list(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match signed_in(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let decided = web::Query::<ListQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.decided.clone())
        .filter(|d| uuid::Uuid::parse_str(d).is_ok());
    list_page(&c, &s, &caller, &who, None, decided).await
}

#[derive(serde::Deserialize)]
pub(super) struct DecisionForm {
    csrf: Option<String>,
    decision: Option<String>,
    note: Option<String>,
}

/// `POST /console/subscriptions/{id}`: the decision, then back to the list (post/redirect/get).
pub(super) async fn decide(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
    form: web::Form<DecisionForm>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who, id) = match form_for(
        &c,
        HERE,
        form.csrf.as_deref(),
        &id,
        vpr_app::AppError::NotFound("no subscription has this id".into()),
    ) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let decision = form.decision.clone().unwrap_or_default();
    let note = form.note.clone().unwrap_or_default();
    let problem = if !matches!(decision.as_str(), "approve" | "reject") {
        Some(FieldProblem { field: format!("decision-{id}-approve"), message: "Choose approve or refuse".into() })
    } else if note.trim().is_empty() {
        Some(FieldProblem { field: format!("note-{id}"), message: "Give your reason".into() })
    } else {
        None
    };
    if problem.is_some() {
        return list_page(&c, &s, &caller, &who, problem, None).await;
    }
    let body = json!({"decision": decision, "note": note.trim(), "reviewer": {"user_id": who.user, "role": who.role}});
    match app.decide_approval(&caller, id, body).await {
        Ok(_) => redirect(&format!("{HERE}?decided={id}")),
        Err(e) => c.failure(&s, HERE, &e),
    }
}
