//! FHIR R4 `Subscription` per the Subscriptions Backport IG: the violence-risk flag topic, a
//! `rest-hook` channel with `id-only` or `full-resource` payloads and heartbeats, optionally
//! filtered to patients by NHS number; `$status` and `$events` so a record can detect and fill
//! gaps. Each FHIR subscription is an ordinary broker subscription underneath, so it has the
//! same guarantees: the outbox, per-subscription order, retries, dead letters, a decision and an
//! audit entry for every notification.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use actix_web::http::{header, StatusCode};
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::{Principal, Scope};
use vpr_domain::audit::AuditAction;
use vpr_domain::notice::{Person, Subject};
use vpr_domain::subscription::{
    webhook_url, Criteria, DeliveryMethod, Payload, SubscriptionSpec, SubscriptionStatus, Topic,
};
use vpr_domain::{FieldError, NhsNumber};
use vpr_store::subscriptions::{delivery_state, Subscription, SubscriptionEvent};

use super::flag::{flag, KnownSubject};
use super::notification::{notification_bundle, status_bundle, NotificationEvent};
use super::{base, fhir_body, fhir_ok, FhirError, BACKPORT, FHIR_JSON, NHS_NUMBER, TOPIC};
use crate::delivery::{decide_events, Decided};
use crate::error::ApiError;
use crate::handlers::read_body_up_to;
use crate::handlers::subscriptions::{prepare, subscription_audit, MAX_SUBSCRIPTION_BODY};
use crate::pipeline::{authenticate, blocking, query_int, query_text};
use crate::AppState;

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

/// Checks a FHIR Subscription body, reporting every problem by its path.
fn requested(state: &AppState, req: &HttpRequest, body: &Value) -> Result<Requested, ApiError> {
    let mut errs = Vec::new();
    let now = state.clock.now();
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
            webhook_url(u, state.delivery.allow_insecure_webhooks, "/channel/endpoint").map_err(|e| errs.push(e)).ok()
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
    let min_heartbeat = i64::try_from(state.delivery.min_heartbeat.as_secs()).unwrap_or(10);
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
    let max = chrono::Duration::days(state.delivery.max_subscription_days);
    let expires_at = match body["end"].as_str() {
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
    };
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
        },
        heartbeat,
    })
}

/// The FHIR status of a subscription.
fn fhir_status(sub: &Subscription) -> &'static str {
    match sub.status {
        SubscriptionStatus::Active if sub.delivery.state == delivery_state::SUSPENDED => "error",
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::Pending => "requested",
        _ => "off",
    }
}

/// A stored FHIR subscription as a FHIR `Subscription` (a cohort filter is held as blind
/// indexes only, so it is shown by its size, not echoed).
pub fn resource(sub: &Subscription, cohort_size: i64) -> Value {
    let content = match sub.payload {
        Payload::IdOnly => "id-only",
        Payload::View => "full-resource",
    };
    let mut channel = json!({
        "type": "rest-hook",
        "endpoint": sub.endpoint,
        "payload": FHIR_JSON,
        "_payload": {"extension": [{"url": format!("{BACKPORT}/backport-payload-content"), "valueCode": content}]},
    });
    if let Some(h) = sub.heartbeat_seconds {
        channel["extension"] = json!([{"url": format!("{BACKPORT}/backport-heartbeat-period"), "valueUnsignedInt": h}]);
    }
    let mut r = json!({
        "resourceType": "Subscription",
        "id": sub.id,
        "meta": {
            "profile": [format!("{BACKPORT}/backport-subscription")],
            "lastUpdated": sub.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
        "status": fhir_status(sub),
        "end": sub.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "reason": sub.tag.clone().unwrap_or_else(|| "violence-risk flags".into()),
        "criteria": TOPIC,
        "channel": channel,
    });
    if sub.criteria.cohort {
        r["extension"] = json!([{"url": format!("{}/StructureDefinition/cohort-size", super::VPR_FHIR), "valueUnsignedInt": cohort_size}]);
    }
    if let Some(e) = &sub.delivery.last_error {
        if fhir_status(sub) == "error" {
            r["error"] = json!(e);
        }
    }
    r
}

async fn owned(state: &AppState, principal: &Principal, raw: &str) -> Result<Subscription, ApiError> {
    let id = Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("no Subscription has this id".into()))?;
    let store = state.store.clone();
    match blocking(move || store.subscription(id).map_err(ApiError::from)).await? {
        Some(s) if s.channel == "fhir" && s.owner_ods == principal.org.as_str() => Ok(s),
        Some(s) if s.channel == "fhir" => {
            Err(ApiError::Forbidden("this Subscription belongs to another organisation".into()))
        }
        _ => Err(ApiError::NotFound("no Subscription has this id".into())),
    }
}

async fn respond(state: &AppState, sub: Subscription, code: StatusCode) -> Result<HttpResponse, FhirError> {
    let st = state.clone();
    let id = sub.id;
    let size = blocking(move || st.store.cohort_size(id).map_err(ApiError::from)).await?;
    let mut r = fhir_ok(code, &resource(&sub, size));
    if code == StatusCode::CREATED {
        if let Ok(v) = header::HeaderValue::from_str(&format!("{}/Subscription/{}", base(state), sub.id)) {
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
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, FhirError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let body = fhir_body(&req, &read_body_up_to(payload, MAX_SUBSCRIPTION_BODY).await?)?;
    let asked = requested(&state, &req, &body)?;
    let mut new = prepare(&state, &principal, &asked.spec, Uuid::new_v4())?;
    new.channel = "fhir".into();
    new.heartbeat_seconds = asked.heartbeat;
    let st = state.clone();
    let now = state.clock.now();
    let who = principal.clone();
    let sub = blocking(move || {
        st.store.audited(|tx| {
            let sub = tx.create_subscription(&new, now)?;
            let entry = subscription_audit(&st, &who, AuditAction::Subscribe.code(), &sub, 201);
            Ok::<_, ApiError>((sub, entry))
        })
    })
    .await?;
    respond(&state, sub, StatusCode::CREATED).await
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
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let sub = owned(&state, &principal, &id).await?;
    respond(&state, sub, StatusCode::OK).await
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
pub async fn remove(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let sub = owned(&state, &principal, &id).await?;
    let st = state.clone();
    let now = state.clock.now();
    blocking(move || {
        st.store.audited(|tx| {
            // Deleting what is deleted already changes nothing, so records nothing.
            let gone = tx.delete_subscription(sub.id, now)?;
            let entries: Vec<_> = gone
                .iter()
                .map(|gone| subscription_audit(&st, &principal, AuditAction::Unsubscribe.code(), gone, 204))
                .collect();
            Ok::<_, ApiError>(((), entries))
        })
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
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
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let sub = owned(&state, &principal, &id).await?;
    let error = (fhir_status(&sub) == "error").then(|| sub.delivery.last_error.clone()).flatten();
    Ok(fhir_ok(
        StatusCode::OK,
        &status_bundle(&base(&state), sub.id, fhir_status(&sub), sub.delivery.last_event_number, error.as_deref()),
    ))
}

/// Builds the notification events (and Flags, for full-resource) from decided events.
pub fn notification_events(decided: &Decided, events: &[SubscriptionEvent], full: bool) -> Vec<NotificationEvent> {
    events
        .iter()
        .zip(&decided.events)
        .map(|(e, body)| {
            let notice = body.get("notice").filter(|n| n.is_object());
            let shown = decided.shown.get(&e.notice_id);
            let resource = match (notice, shown, full) {
                (Some(d), Some(s), true) => {
                    let known = KnownSubject { nhs_number: s.nhs_in_cohort.clone() };
                    Some(flag(d, super::flag::Shown { version: s.version, updated_at: s.updated_at }, &known))
                }
                _ => None,
            };
            NotificationEvent {
                number: e.number,
                timestamp: e.occurred_at,
                focus: notice.map(|_| e.notice_id.to_string()),
                resource,
            }
        })
        .collect()
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
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let since = query_int(&req, "eventsSinceNumber", 1, i64::MAX, 1)?;
    let until = query_int(&req, "eventsUntilNumber", 1, i64::MAX, i64::MAX)?;
    let full = match query_text(&req, "content")?.as_deref() {
        None => None,
        Some("id-only") => Some(false),
        Some("full-resource") => Some(true),
        Some(_) => {
            return Err(ApiError::Validation(vec![field(
                "/content",
                "code",
                "`content` is `id-only` or `full-resource`",
            )])
            .into())
        }
    };
    let sub = owned(&state, &principal, &id).await?;
    if !sub.status.receives() {
        return Err(ApiError::Conflict(format!("a subscription that is `{}` has no events", fhir_status(&sub))).into());
    }
    let full = full.unwrap_or(sub.payload == Payload::View);
    let st = state.clone();
    let s = sub.clone();
    let request_id = crate::error::current_request_id().unwrap_or_default();
    let (events, decided) = blocking(move || {
        let limit = until.saturating_sub(since).saturating_add(1).clamp(1, 500);
        let events: Vec<SubscriptionEvent> =
            st.store.events_after(s.id, since - 1, limit)?.into_iter().filter(|e| e.number <= until).collect();
        if events.is_empty() {
            return Ok((events, None));
        }
        let d = decide_events(&st, &s, &events, "fhir-events", false, request_id)?;
        Ok((events, Some(d)))
    })
    .await?;
    let items = match &decided {
        Some(d) if d.refused.is_some() => return Err(ApiError::Forbidden(d.refused.clone().unwrap_or_default()).into()),
        Some(d) => notification_events(d, &events, full),
        None => Vec::new(),
    };
    let bundle = notification_bundle(
        &base(&state),
        sub.id,
        "query-event",
        fhir_status(&sub),
        sub.delivery.last_event_number,
        &items,
        state.clock.now(),
    );
    Ok(fhir_ok(StatusCode::OK, &bundle))
}

/// The body of a pushed notification for one decided event.
pub fn pushed(
    state: &AppState,
    sub: &Subscription,
    decided: &Decided,
    event: &SubscriptionEvent,
    body: &Value,
) -> Value {
    let one =
        Decided { audit_id: decided.audit_id, refused: None, events: vec![body.clone()], shown: decided.shown.clone() };
    let items = notification_events(&one, std::slice::from_ref(event), sub.payload == Payload::View);
    notification_bundle(
        &base(state),
        sub.id,
        "event-notification",
        fhir_status(sub),
        event.number,
        &items,
        state.clock.now(),
    )
}

/// A heartbeat notification.
pub fn heartbeat(state: &AppState, sub: &Subscription) -> Value {
    notification_bundle(
        &base(state),
        sub.id,
        "heartbeat",
        fhir_status(sub),
        sub.delivery.last_event_number,
        &[],
        state.clock.now(),
    )
}
