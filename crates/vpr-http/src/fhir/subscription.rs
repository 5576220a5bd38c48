//! FHIR R4 `Subscription` per the Subscriptions Backport IG: the violence-risk flag topic, a
//! `rest-hook` channel with `id-only` or `full-resource` payloads and heartbeats, optionally
//! filtered to patients by NHS number; `$status` and `$events` so a record can detect and fill
//! gaps. Each FHIR subscription is an ordinary broker subscription underneath, so it has the
//! same guarantees: the outbox, per-subscription order, retries, dead letters, a decision and an
//! audit entry for every notification.

use actix_web::http::{header, StatusCode};
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;
use vpr_app::render::fhir::notification::{notification_bundle, status_bundle};
use vpr_app::render::fhir::subscription::{fhir_status, notification_events, resource};
use vpr_app::services::subscriptions::Facade;
use vpr_app::{App, AppError};
use vpr_auth::Scope;
use vpr_domain::audit::AuditAction;
use vpr_domain::notice::{Person, Subject};
use vpr_domain::subscription::{webhook_url, Criteria, DeliveryMethod, Payload, SubscriptionSpec, Topic};
use vpr_domain::{FieldError, NhsNumber};
use vpr_store::subscriptions::Subscription;

use super::{base, fhir_body, fhir_ok, FhirError, BACKPORT, NHS_NUMBER, TOPIC};
use crate::error::ApiError;
use crate::extract::{authenticate, body, path_id, Query, MAX_SUBSCRIPTION_BODY};

fn field(pointer: &str, rule: &str, detail: impl Into<String>) -> FieldError {
    FieldError::new(pointer, rule, detail)
}

fn header_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The extensions with this URL on a JSON element.
fn extensions<'a>(element: &'a Value, url: &str) -> Vec<&'a Value> {
    element["extension"].as_array().map(|a| a.iter().filter(|e| e["url"] == url).collect()).unwrap_or_default()
}

/// What a FHIR Subscription asks for, as the broker stores it.
struct Requested {
    spec: SubscriptionSpec,
    heartbeat: Option<i32>,
}

/// The channel a FHIR Subscription asks for: its endpoint, payload content and heartbeat.
struct Channel {
    url: Option<String>,
    payload: Payload,
    heartbeat: Option<i32>,
}

fn channel_of(app: &App, body: &Value, errs: &mut Vec<FieldError>) -> Channel {
    let channel = &body["channel"];
    if channel["type"] != "rest-hook" {
        errs.push(field("/channel/type", "channel-type", "only `rest-hook` channels are served"));
    }
    if channel.get("header").is_some() {
        errs.push(field(
            "/channel/header",
            "not-supported",
            "custom headers are not sent: notifications carry the broker's signature (`VPR-JWS`)",
        ));
    }
    if !matches!(channel["payload"].as_str(), Some("application/fhir+json" | "application/json")) {
        errs.push(field("/channel/payload", "payload-type", "`payload` must be `application/fhir+json`"));
    }
    let url = match channel["endpoint"].as_str() {
        Some(u) => {
            webhook_url(u, app.delivery.allow_insecure_webhooks, "/channel/endpoint").map_err(|e| errs.push(e)).ok()
        }
        None => {
            errs.push(field("/channel/endpoint", "required", "give the rest-hook endpoint"));
            None
        }
    };
    let content = extensions(&channel["_payload"], &format!("{BACKPORT}/backport-payload-content"));
    let payload = match content.first().and_then(|e| e["valueCode"].as_str()) {
        None | Some("id-only") => Payload::IdOnly,
        Some("full-resource") => Payload::View,
        Some(_) => {
            errs.push(field("/channel/_payload", "payload-content", "payload content is `id-only` or `full-resource`"));
            Payload::IdOnly
        }
    };
    let min_heartbeat = i64::try_from(app.delivery.min_heartbeat.as_secs()).unwrap_or(10);
    let heartbeat = match extensions(channel, &format!("{BACKPORT}/backport-heartbeat-period")).first() {
        None => None,
        Some(e) => match e["valueUnsignedInt"].as_i64() {
            Some(h) if (min_heartbeat..=86_400).contains(&h) => i32::try_from(h).ok(),
            _ => {
                errs.push(field(
                    "/channel/extension",
                    "heartbeat-period",
                    format!("the heartbeat period is {min_heartbeat} to 86400 seconds"),
                ));
                None
            }
        },
    };
    Channel { url, payload, heartbeat }
}

/// The patients a FHIR Subscription filters by (its cohort).
fn cohort_of(body: &Value, errs: &mut Vec<FieldError>) -> Vec<Subject> {
    let mut cohort = Vec::new();
    for (i, e) in
        extensions(&body["_criteria"], &format!("{BACKPORT}/backport-filter-criteria")).into_iter().enumerate()
    {
        let pointer = format!("/_criteria/extension/{i}/valueString");
        let filter = e["valueString"].as_str().unwrap_or_default();
        let Some(values) =
            filter.strip_prefix("Flag?patient.identifier=").or_else(|| filter.strip_prefix("Flag?subject:identifier="))
        else {
            errs.push(field(
                &pointer,
                "filter",
                format!("filter Flags by patient: `Flag?patient.identifier={NHS_NUMBER}|<n>[,...]`"),
            ));
            continue;
        };
        for value in values.split(',') {
            match value.split_once('|') {
                Some((NHS_NUMBER, n)) => match NhsNumber::parse(n) {
                    Ok(n) => cohort.push(Subject {
                        person: Some(Person {
                            nhs_number: Some(n),
                            family_name: None,
                            given_name: None,
                            birth_date: None,
                            postcode: None,
                        }),
                        address: None,
                        telephone: None,
                    }),
                    Err(err) => errs.push(field(&pointer, err.rule_id(), err.to_string())),
                },
                _ => errs.push(field(
                    &pointer,
                    "identifier-system",
                    format!("the identifier system must be `{NHS_NUMBER}`"),
                )),
            }
        }
    }
    cohort
}

/// When a FHIR Subscription ends (`end`, or the longest the agreement allows).
fn end_of(app: &App, body: &Value, errs: &mut Vec<FieldError>) -> DateTime<Utc> {
    let now = app.clock.now();
    let max = chrono::Duration::days(app.delivery.max_subscription_days);
    match body["end"].as_str() {
        None => now + max,
        Some(raw) => match DateTime::parse_from_rfc3339(raw) {
            Ok(t) if t.with_timezone(&Utc) <= now => {
                errs.push(field("/end", "date-in-past", "`end` must be in the future"));
                now
            }
            Ok(t) if t.with_timezone(&Utc) > now + max => {
                errs.push(field(
                    "/end",
                    "expiry-too-far",
                    format!("a subscription may run at most {} days", max.num_days()),
                ));
                now
            }
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => {
                errs.push(field("/end", "date-time", "`end` must be an instant"));
                now
            }
        },
    }
}

/// Checks a FHIR Subscription body, reporting every problem by its path.
fn requested(app: &App, req: &HttpRequest, body: &Value) -> Result<Requested, ApiError> {
    let mut errs = Vec::new();
    if body["resourceType"] != "Subscription" {
        errs.push(field("/resourceType", "resource-type", "the body must be a Subscription"));
    }
    if body["criteria"] != TOPIC {
        errs.push(field("/criteria", "topic", format!("`criteria` must be the topic `{TOPIC}`")));
    }
    let reason = body["reason"].as_str().map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned);
    if reason.is_none() {
        errs.push(field("/reason", "required", "say why the subscription is made (`reason`)"));
    }
    let Channel { url, payload, heartbeat } = channel_of(app, body, &mut errs);
    let cohort = cohort_of(body, &mut errs);
    let expires_at = end_of(app, body, &mut errs);
    let purpose = header_value(req, "VPR-Purpose");
    let role = header_value(req, "VPR-User-Role");
    if purpose.is_none() {
        errs.push(field("", "purpose-required", "the `VPR-Purpose` header is required"));
    }
    if role.is_none() {
        errs.push(field("", "role-required", "the `VPR-User-Role` header is required"));
    }
    if !errs.is_empty() {
        return Err(ApiError::Validation(errs));
    }
    let has_cohort = !cohort.is_empty();
    Ok(Requested {
        spec: SubscriptionSpec {
            purpose: purpose.unwrap_or_default(),
            role: role.unwrap_or_default(),
            context_reference: header_value(req, "VPR-Context-Ref"),
            topic: Topic::Notices,
            criteria: Criteria { cohort: has_cohort, ..Default::default() },
            cohort: has_cohort.then_some(cohort),
            payload,
            method: DeliveryMethod::Webhook,
            url,
            encryption_key: None,
            expires_at,
            tag: reason,
            peer: None,
        },
        heartbeat,
    })
}

async fn owned(app: &App, caller: &vpr_app::Caller, raw: &str) -> Result<Subscription, ApiError> {
    let id = path_id(raw, "Subscription")?;
    Ok(app.owned_subscription(caller, id, Facade::Fhir).await?)
}

async fn respond(app: &App, sub: Subscription, code: StatusCode) -> Result<HttpResponse, FhirError> {
    let size = app.cohort_size(sub.id).await?;
    let mut r = fhir_ok(code, &resource(&sub, size));
    if code == StatusCode::CREATED {
        if let Ok(v) = header::HeaderValue::from_str(&format!("{}/Subscription/{}", base(app), sub.id)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(r)
}

/// Creates a topic-based subscription to violence-risk flags.
#[utoipa::path(
    tag = "fhir",
    params(
        ("VPR-Purpose" = String, Header, description = "Purpose of use the notifications are decided for"),
        ("VPR-User-Role" = String, Header, description = "The role they are decided for"),
        ("VPR-Context-Ref" = Option<String>, Header, description = "A standing case or service reference"),
    ),
    request_body(content = Object, content_type = "application/fhir+json", description = "A Subscription (backport profile): `criteria` the topic, a rest-hook channel"),
    responses(
        (status = 201, description = "Created: `active`, or `requested` while it awaits an IG lead's approval", body = Object, content_type = "application/fhir+json"),
        (status = 422, description = "Not a valid subscription: an OperationOutcome naming each problem", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/fhir/R4/Subscription")]
pub async fn create(app: web::Data<App>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let body = fhir_body(&req, &body(payload, MAX_SUBSCRIPTION_BODY).await?)?;
    let asked = requested(&app, &req, &body)?;
    let mut new = app.admit(&caller, &asked.spec, Uuid::new_v4())?;
    new.channel = "fhir".into();
    new.heartbeat_seconds = asked.heartbeat;
    let sub = app.subscribe(&caller, new).await?;
    respond(&app, sub, StatusCode::CREATED).await
}

/// Reads a Subscription.
#[utoipa::path(
    tag = "fhir",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The Subscription", body = Object, content_type = "application/fhir+json"),
        (status = 404, description = "No such Subscription", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/fhir/R4/Subscription/{id}")]
pub async fn read(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let sub = owned(&app, &caller, &id).await?;
    respond(&app, sub, StatusCode::OK).await
}

/// Deletes a Subscription: nothing more is sent.
#[utoipa::path(
    tag = "fhir",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such Subscription", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[delete("/fhir/R4/Subscription/{id}")]
pub async fn remove(app: web::Data<App>, req: HttpRequest, id: web::Path<String>) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let sub = owned(&app, &caller, &id).await?;
    match app.delete_subscription(&caller, &sub, 204).await {
        // Deleting a deleted Subscription changes nothing: still 204.
        Ok(_) | Err(AppError::Conflict(_)) => Ok(HttpResponse::NoContent().finish()),
        Err(e) => Err(e.into()),
    }
}

/// The subscription's status: events so far, and whether it is healthy.
#[utoipa::path(
    tag = "fhir",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "A searchset Bundle holding the status Parameters", body = Object, content_type = "application/fhir+json"),
        (status = 404, description = "No such Subscription", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/fhir/R4/Subscription/{id}/$status")]
pub async fn status_op(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let sub = owned(&app, &caller, &id).await?;
    let error = (fhir_status(&sub) == "error").then(|| sub.delivery.last_error.clone()).flatten();
    Ok(fhir_ok(
        StatusCode::OK,
        &status_bundle(&base(&app), sub.id, fhir_status(&sub), sub.delivery.last_event_number, error.as_deref()),
    ))
}

/// Events by number, decided now (as pushes are), so a record can fill a gap.
#[utoipa::path(
    tag = "fhir",
    params(
        ("id" = Uuid, Path, description = "Subscription id"),
        ("eventsSinceNumber" = Option<i64>, Query, description = "First event number (default 1)"),
        ("eventsUntilNumber" = Option<i64>, Query, description = "Last event number (default the latest; at most 500 at a time)"),
        ("content" = Option<String>, Query, description = "`id-only` or `full-resource` (default: the subscription's)"),
    ),
    responses(
        (status = 200, description = "A history Bundle: query-event status Parameters and, for full-resource, the Flags", body = Object, content_type = "application/fhir+json"),
        (status = 403, description = "The subscriber is refused by the agreement (audited)", body = Object, content_type = "application/fhir+json"),
        (status = 404, description = "No such Subscription", body = Object, content_type = "application/fhir+json"),
        (status = 422, description = "A bad parameter", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/fhir/R4/Subscription/{id}/$events")]
pub async fn events_op(
    app: web::Data<App>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let caller = authenticate(&app, &req, &[Scope::Subscriptions])?;
    let q = Query::of(&req)?;
    let since = q.int("eventsSinceNumber", 1, i64::MAX)?.unwrap_or(1);
    let until = q.int("eventsUntilNumber", 1, i64::MAX)?.unwrap_or(i64::MAX);
    let full = q.one_of("content", &["id-only", "full-resource"])?.map(|c| c == "full-resource");
    let sub = owned(&app, &caller, &id).await?;
    let full = full.unwrap_or(sub.payload == Payload::View);
    let limit = until.saturating_sub(since).saturating_add(1).clamp(1, 500);
    let (_, decided) = app.read_events(&caller, &sub, AuditAction::FhirEvents, since - 1, until, limit).await.map_err(
        |e| match e {
            AppError::Conflict(_) => {
                AppError::Conflict(format!("a subscription that is `{}` has no events", fhir_status(&sub)))
            }
            other => other,
        },
    )?;
    let items = decided.as_ref().map(|d| notification_events(d, &d.events, full)).unwrap_or_default();
    let bundle = notification_bundle(
        &base(&app),
        sub.id,
        "query-event",
        fhir_status(&sub),
        sub.delivery.last_event_number,
        &items,
        app.clock.now(),
    );
    Ok(fhir_ok(StatusCode::OK, &bundle))
}
