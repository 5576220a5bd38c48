//! The HTTP server: routes, middleware and graceful shutdown.

use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpServer};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;

use vpr_app::App as Application;

pub use crate::docs::OpenApiDoc;
use crate::error::ApiError;
use crate::handlers::{
    access_log, audit, directives, federation, lookups, notices, oauth, ops, review, statistics, subscriptions,
};

/// Every route the broker serves. The OpenAPI document is generated from this same function.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(oauth::token)
        .service(oauth::jwks)
        .service(oauth::metadata)
        .service(notices::publish)
        .service(notices::versions)
        .service(access_log::access_log)
        .service(notices::read)
        .service(notices::amend)
        .service(notices::withdraw)
        .service(notices::review)
        .service(lookups::lookup)
        .service(federation::relayed_lookup)
        .service(federation::relayed_subscription)
        .service(federation::end_relayed_subscription)
        .service(federation::redeliver_relayed)
        .service(federation::peer_event)
        .service(directives::consent)
        .service(directives::objection)
        .service(ops::healthz)
        .service(ops::readyz)
        .service(ops::metrics)
        .service(ops::openapi)
        .service(ops::latest_checkpoint)
        .service(audit::inclusion)
        .service(audit::consistency)
        .service(audit::queue)
        .service(audit::review)
        .service(review::list_entries)
        .service(review::search)
        .service(review::summary)
        .service(review::subject_access_report)
        .service(statistics::statistics)
        .service(access_log::feed)
        .service(subscriptions::create)
        .service(subscriptions::list)
        .service(subscriptions::events)
        .service(subscriptions::change_cohort)
        .service(subscriptions::decide_approval)
        .service(subscriptions::dead_letters)
        .service(subscriptions::redeliver)
        .service(subscriptions::read)
        .service(subscriptions::replace)
        .service(subscriptions::delete_subscription)
        .service(crate::fhir::capability::metadata)
        .service(crate::fhir::search::search_post)
        .service(crate::fhir::search::search_get)
        .service(crate::fhir::search::read)
        .service(crate::fhir::subscription::create)
        .service(crate::fhir::subscription::status_op)
        .service(crate::fhir::subscription::events_op)
        .service(crate::fhir::subscription::read)
        .service(crate::fhir::subscription::remove)
        .service(crate::fhir::audit_event::search);
}

/// The methods the API answers at `path`, from its OpenAPI document (a `{name}` template
/// segment matches any one segment), in the document's order.
fn allowed_methods(doc: &serde_json::Value, path: &str) -> Vec<String> {
    let asked: Vec<&str> = path.split('/').collect();
    let matches = |template: &str| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == asked.len()
            && parts
                .iter()
                .zip(&asked)
                .all(|(t, a)| (t.starts_with('{') && t.ends_with('}') && !a.is_empty()) || t == a)
    };
    let mut methods = Vec::new();
    for (template, ops) in doc["paths"].as_object().into_iter().flatten() {
        if !matches(template) {
            continue;
        }
        for method in ops.as_object().into_iter().flat_map(|o| o.keys()) {
            let m = method.to_ascii_uppercase();
            if ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()) && !methods.contains(&m) {
                methods.push(m);
            }
        }
    }
    methods
}

/// No route answered: `405` with `Allow` where the path is served with other methods,
/// otherwise `404`.
async fn not_found(req: HttpRequest) -> actix_web::HttpResponse {
    let allow = req.app_data::<web::Data<OpenApiDoc>>().map(|d| allowed_methods(&d.0, req.path())).unwrap_or_default();
    let e = if allow.is_empty() {
        ApiError::NotFound(format!("no resource at `{} {}`", req.method(), req.path()))
    } else {
        ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            allow: allow.join(", "),
        }
    };
    // FHIR clients get an OperationOutcome; everyone else a problem.
    if req.path().starts_with("/fhir/") {
        actix_web::ResponseError::error_response(&crate::fhir::FhirError(e))
    } else {
        actix_web::ResponseError::error_response(&e)
    }
}

/// The OpenAPI document of [`routes`].
pub fn openapi() -> OpenApiDoc {
    OpenApiDoc(crate::openapi::build(routes))
}

/// Binds the server; it serves until SIGINT/SIGTERM, then stops accepting and lets in-flight
/// requests finish within `grace`. Await the returned server to run it.
pub fn run(
    app: Application,
    console: crate::console::Console,
    limits: crate::limits::Limits,
    listen: &str,
    workers: usize,
    grace: Duration,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(app);
    let console = web::Data::new(console);
    let limits = web::Data::new(limits);
    let doc = web::Data::new(openapi());
    let server = HttpServer::new(move || {
        App::new()
            .into_utoipa_app()
            .configure(routes)
            .into_app()
            .configure(crate::console::routes)
            .app_data(data.clone())
            .app_data(console.clone())
            .app_data(limits.clone())
            .app_data(doc.clone())
            .app_data(crate::middleware::query_config())
            .app_data(crate::middleware::json_config())
            .app_data(crate::middleware::path_config())
            .default_service(web::to(not_found))
            .wrap(from_fn(crate::middleware::request_context))
    })
    .workers(workers)
    .shutdown_timeout(grace.as_secs())
    .bind(listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, "listening");
    }
    Ok(server.run())
}
