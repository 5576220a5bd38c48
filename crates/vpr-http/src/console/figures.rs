//! The figures page: notices published and notices shown, per partner, category, purpose and
//! month, as tables and bar charts (SVG drawn here, no script), small numbers suppressed by the
//! rule `vpr_domain::figures` names. For VPR leads and IG roles; each view is audited.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use vpr_app::services::statistics::{Figures, MAX_MONTHS};
use vpr_app::App;
use vpr_domain::figures::{span, FigureTable, Shown, RULE};

use super::view::{html, Chrome, FieldProblem};
use super::{ctx, Console};

const HERE: &str = "/console/figures";

/// One bar of a chart, placed.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Left edge.
    pub x: i64,
    /// Top edge.
    pub y: i64,
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// Its month, short (`Jan 26`).
    pub label: String,
    /// Its value as shown (`<8` where suppressed).
    pub value: String,
    /// The x of its centre, for the labels.
    pub centre: i64,
}

/// A bar chart of one measure's monthly totals.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Its id (for `aria-labelledby`).
    pub id: String,
    /// Its title.
    pub title: String,
    /// What it shows, for screen readers.
    pub description: String,
    /// The bars.
    pub bars: Vec<Bar>,
    /// The y axis's top value.
    pub top: i64,
}

/// The chart's canvas.
const WIDTH: i64 = 640;
const HEIGHT: i64 = 220;
const LEFT: i64 = 48;
const BOTTOM: i64 = 36;
const TOP_MARGIN: i64 = 20;

/// `2026-01` as `Jan 26`.
fn short_month(m: &str) -> String {
    chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
        .map(|d| d.format("%b %y").to_string())
        .unwrap_or_else(|_| m.to_owned())
}

/// The chart of a table's monthly totals.
fn chart(id: &str, title: &str, months: &[String], t: &FigureTable) -> Chart {
    let top = t.totals.iter().map(|s| s.height()).max().unwrap_or(0).max(10);
    let n = i64::try_from(months.len().max(1)).unwrap_or(1);
    let slot = (WIDTH - LEFT - 8) / n;
    let plot = HEIGHT - BOTTOM - TOP_MARGIN;
    let bars = months
        .iter()
        .zip(&t.totals)
        .enumerate()
        .map(|(i, (m, shown))| {
            let height = shown.height() * plot / top;
            let x = LEFT + i64::try_from(i).unwrap_or(0) * slot + slot / 6;
            let width = (slot * 2 / 3).max(2);
            Bar {
                x,
                y: HEIGHT - BOTTOM - height,
                width,
                height,
                label: short_month(m),
                value: shown.to_string(),
                centre: x + width / 2,
            }
        })
        .collect();
    let described =
        months.iter().zip(&t.totals).map(|(m, s)| format!("{}: {s}", short_month(m))).collect::<Vec<_>>().join("; ");
    Chart { id: id.to_owned(), title: title.to_owned(), description: described, bars, top }
}

/// A table as the page shows it.
#[derive(Debug, Clone)]
pub struct ShownTable {
    /// Its id.
    pub id: String,
    /// Its caption.
    pub caption: String,
    /// The rows' heading (`Publisher`, `Category`, ...).
    pub by: String,
    /// Rows: label, counts, total.
    pub rows: Vec<(String, Vec<String>, String)>,
    /// The totals row.
    pub totals: Vec<String>,
    /// The grand total.
    pub total: String,
}

fn shown_table(t: &FigureTable) -> ShownTable {
    let texts = |c: &[Shown]| c.iter().map(ToString::to_string).collect::<Vec<_>>();
    let by = match (t.measure, t.by) {
        ("notices", "partner") => "Publisher",
        ("disclosures", "partner") => "Organisation shown them",
        (_, "purpose") => "Purpose",
        _ => "Category",
    };
    ShownTable {
        id: format!("{}-by-{}", t.measure, t.by),
        caption: t.caption.clone(),
        by: by.to_owned(),
        rows: t.rows.iter().map(|r| (r.label.clone(), texts(&r.counts), r.total.to_string())).collect(),
        totals: texts(&t.totals),
        total: t.total.to_string(),
    }
}

/// A month field of the form.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its name and id.
    pub name: &'static str,
    /// Its label.
    pub label: &'static str,
    /// What was entered.
    pub value: String,
    /// What is wrong with it.
    pub error: Option<String>,
}

fn month_fields(from: Option<&str>, to: Option<&str>, errors: &[FieldProblem]) -> Vec<Field> {
    [("from", "From (month)", from), ("to", "To (month)", to)]
        .into_iter()
        .map(|(name, label, value)| Field {
            name,
            label,
            value: value.unwrap_or_default().to_owned(),
            error: errors.iter().find(|e| e.field == name).map(|e| e.message.clone()),
        })
        .collect()
}

/// The figures page.
#[derive(Template)]
#[template(path = "console/figures.html")]
pub struct FiguresPage {
    /// Frame.
    pub chrome: Chrome,
    /// The form's two months.
    pub month_fields: Vec<Field>,
    /// Problems with them.
    pub errors: Vec<FieldProblem>,
    /// The months shown, short.
    pub months: Vec<String>,
    /// Charts: notices, and notices shown.
    pub charts: Vec<Chart>,
    /// Tables.
    pub tables: Vec<ShownTable>,
    /// The disclosure-control rule, in words.
    pub rule: &'static str,
    /// The CSV download's link.
    pub csv: String,
}

impl FiguresPage {
    fn fill(&mut self, f: &Figures) {
        self.months = f.months.iter().map(|m| short_month(m)).collect();
        let first = |measure: &str| f.tables.iter().find(|t| t.measure == measure);
        if let Some(t) = first("notices") {
            self.charts.push(chart("chart-notices", "Notices published each month", &f.months, t));
        }
        if let Some(t) = first("disclosures") {
            self.charts.push(chart("chart-disclosures", "Notices shown each month", &f.months, t));
        }
        self.tables = f.tables.iter().map(shown_table).collect();
    }
}

/// `GET /console/figures?from=YYYY-MM&to=YYYY-MM[&format=csv]`: the figures, protected, audited
/// as `statistics` before they render.
pub(super) async fn figures(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let given: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let value =
        |k: &str| given.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let (from, to) = (value("from"), value("to"));
    let mut page = FiguresPage {
        chrome: c.chrome(Some(c.who(&s, HERE))),
        month_fields: vec![],
        errors: vec![],
        months: vec![],
        charts: vec![],
        tables: vec![],
        rule: RULE,
        csv: String::new(),
    };
    let who = match app.figures_reader(&caller, who.user, who.role).await {
        Ok(w) => w,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let (start, end) = match span(from.as_deref(), to.as_deref(), app.clock.now().date_naive(), MAX_MONTHS) {
        Ok(x) => x,
        Err(errs) => {
            page.errors = errs
                .into_iter()
                .map(|e| FieldProblem { field: e.pointer.trim_start_matches('/').to_owned(), message: e.detail })
                .collect();
            page.month_fields = month_fields(from.as_deref(), to.as_deref(), &page.errors);
            return html(StatusCode::UNPROCESSABLE_ENTITY, &page, &c.form_origin());
        }
    };
    let figures = match app.figures(&caller, who, start, end).await {
        Ok(f) => f,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    if value("format").as_deref() == Some("csv") {
        return match crate::audit_view::figures_csv(&figures) {
            Ok(body) => HttpResponse::Ok()
                .content_type("text/csv; charset=utf-8")
                .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"vpr-figures.csv\""))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(body),
            Err(_) => c.failure(&s, HERE, &vpr_app::AppError::Internal("the CSV could not be written".into())),
        };
    }
    let (from, to) = (start.format("%Y-%m").to_string(), end.format("%Y-%m").to_string());
    page.csv = format!("{HERE}?from={from}&to={to}&format=csv");
    page.month_fields = month_fields(Some(&from), Some(&to), &[]);
    page.fill(&figures);
    html(StatusCode::OK, &page, &c.form_origin())
}
