//! For VPR leads: their organisation's notices due for review in the next 30 days, those that
//! expired unreviewed, and each notice's access log (who saw it, when, why, what view). Each
//! view is audited (`notices-due`, `access-log`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use vpr_app::records::decision_on;
use vpr_app::App;
use vpr_store::notices::NoticeHead;

use super::view::{actor, html, Chrome};
use super::{ctx, Console};

const HERE: &str = "/console/notices";

/// The most notices each list shows.
const LISTED: i64 = 200;

/// Access-log entries a page shows.
const LOG_PAGE: i64 = 50;

/// A notice in a list.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// Category, in words.
    pub category: String,
    /// Risk level.
    pub risk: String,
    /// Review date.
    pub review: String,
    /// Days until review (negative: overdue).
    pub days: i64,
    /// Version.
    pub version: i64,
    /// Last changed.
    pub changed: String,
}

/// The notices page.
#[derive(Template)]
#[template(path = "console/notices.html")]
pub struct NoticesPage {
    /// Frame.
    pub chrome: Chrome,
    /// The organisation's name.
    pub org_name: String,
    /// The last day the review list covers.
    pub due_by: String,
    /// Due for review.
    pub due: Vec<Listed>,
    /// Expired.
    pub expired: Vec<Listed>,
}

fn listed(n: &NoticeHead, today: chrono::NaiveDate) -> Listed {
    let spaced = n.category.replace('-', " ");
    let mut chars = spaced.chars();
    Listed {
        id: n.id.to_string(),
        category: chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default(),
        risk: n.risk_level.clone(),
        review: n.review_date.to_string(),
        days: (n.review_date - today).num_days(),
        version: n.version,
        changed: n.updated_at.format("%Y-%m-%d").to_string(),
    }
}

/// `GET /console/notices`.
pub(super) async fn list(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let due = match app.notices_due(&caller, who, LISTED).await {
        Ok(d) => d,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let today = app.clock.now().date_naive();
    let page = NoticesPage {
        chrome: c.chrome(Some(c.who(&s, HERE))),
        org_name: caller.principal.org_name.clone(),
        due_by: due.due_by.to_string(),
        due: due.due.iter().map(|n| listed(n, today)).collect(),
        expired: due.expired.iter().map(|n| listed(n, today)).collect(),
    };
    html(StatusCode::OK, &page, &c.form_origin())
}

/// One access, as the log shows it.
#[derive(Debug, Clone)]
pub struct Access {
    /// When (UTC).
    pub at: String,
    /// Organisation, system, user and role.
    pub who: String,
    /// What they did.
    pub action: String,
    /// Purpose.
    pub purpose: String,
    /// The decision on this notice, and the view shown.
    pub decision: String,
    /// Lawful basis.
    pub basis: String,
    /// Whether it was an emergency access.
    pub break_glass: bool,
}

/// The access log page.
#[derive(Template)]
#[template(path = "console/access_log.html")]
pub struct AccessLogPage {
    /// Frame.
    pub chrome: Chrome,
    /// The notice.
    pub id: String,
    /// The accesses, newest first.
    pub entries: Vec<Access>,
    /// The next page's link.
    pub next: Option<String>,
}

/// `GET /console/notices/{id}/access-log[?before=SEQ]`: every decision on the notice.
pub(super) async fn access_log(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return c.failure(&s, HERE, &vpr_app::AppError::NotFound("no notice has this id".into()));
    };
    let given: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let before = given.iter().find(|(k, _)| k == "before").and_then(|(_, v)| v.parse::<i64>().ok());
    let entries = match app.notice_access_log(&caller, Some(who), id, before, LOG_PAGE).await {
        Ok(e) => e,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let next = (entries.len() as i64 == LOG_PAGE)
        .then(|| entries.last().map(|e| format!("{HERE}/{id}/access-log?before={}", e.seq)))
        .flatten();
    let rows = entries
        .iter()
        .map(|e| {
            let on = decision_on(e, id);
            let decision = match on {
                Some(n) => match &n.view {
                    Some(view) => format!("{} ({view} view)", n.decision),
                    None => n.decision.clone(),
                },
                None => e.entry.decision.clone(),
            };
            Access {
                at: e.entry.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                who: actor(&e.entry),
                action: e.entry.action.clone(),
                purpose: e.entry.purpose.clone().unwrap_or_default(),
                decision,
                basis: on.map(|n| n.lawful_basis.join(", ")).unwrap_or_default(),
                break_glass: e.entry.break_glass,
            }
        })
        .collect();
    let page = AccessLogPage { chrome: c.chrome(Some(c.who(&s, HERE))), id: id.to_string(), entries: rows, next };
    html(StatusCode::OK, &page, &c.form_origin())
}
