//! The NHS.UK design system's stylesheet and icons (`nhsuk-frontend`, vendored unmodified under
//! `assets/nhsuk-frontend/`), embedded in the binary and served under `/console/assets/`.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};

/// The `nhsuk-frontend` version the assets come from.
pub const VERSION: &str = "10.6.1";

const CSS: &str = include_str!("../../assets/nhsuk-frontend/nhsuk-frontend.min.css");

const ICONS: [(&str, &str); 5] = [
    ("favicon.svg", include_str!("../../assets/nhsuk-frontend/favicon.svg")),
    ("nhsuk-icon-arrow-down.svg", include_str!("../../assets/nhsuk-frontend/nhsuk-icon-arrow-down.svg")),
    ("nhsuk-icon-arrow-up-down.svg", include_str!("../../assets/nhsuk-frontend/nhsuk-icon-arrow-up-down.svg")),
    ("nhsuk-icon-arrow-up.svg", include_str!("../../assets/nhsuk-frontend/nhsuk-icon-arrow-up.svg")),
    ("nhsuk-icon-cross.svg", include_str!("../../assets/nhsuk-frontend/nhsuk-icon-cross.svg")),
];

/// The stylesheet with its `/assets/images/` references pointed at where the broker serves them.
fn stylesheet() -> &'static str {
    static CSS_HERE: OnceLock<String> = OnceLock::new();
    CSS_HERE.get_or_init(|| CSS.replace("/assets/images/", "/console/assets/"))
}

/// `GET /console/assets/{name}`.
pub async fn asset(name: web::Path<String>) -> HttpResponse {
    let (body, kind) = if name.as_str() == "nhsuk-frontend.min.css" {
        (stylesheet(), "text/css; charset=utf-8")
    } else if let Some((_, svg)) = ICONS.iter().find(|(n, _)| *n == name.as_str()) {
        (*svg, "image/svg+xml")
    } else {
        return HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("no such asset");
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header(("cache-control", "public, max-age=86400"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("etag", format!("\"nhsuk-frontend-{VERSION}\"")))
        .body(body)
}
