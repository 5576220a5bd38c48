//! Subscriptions: a partner's standing request to be told of notice changes that match its
//! criteria, pushed to a webhook (signed, optionally encrypted) or read from a replayable feed.
//! Subscriptions the agreement does not allow outright wait for an IG lead's approval; every
//! delivery and feed read is decided by the agreement when it is made, and audited.

use actix_web::http::header;
use actix_web::{delete, get, post, put, web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::{EncryptionKey, Principal, Scope};
use vpr_domain::audit::AuditAction;
use vpr_domain::subscription::{DeliveryMethod, SubscriptionRules, SubscriptionSpec, SubscriptionStatus, Topic};
use vpr_domain::FieldError;
use vpr_policy::{Requester, SubscriptionFacts};
use vpr_store::audit::AuditEntry;
use vpr_store::subscriptions::{NewSubscription, Subscription};

use crate::delivery::{decide_events, event_type};
use crate::disclose::{audit_base, refuse_unread};
use crate::error::ApiError;
use crate::handlers::break_glass::ig_reviewer;
use crate::handlers::read_body_up_to;
use crate::openapi::{
    ApprovalInputDoc, CohortChangeDoc, EventFeedDoc, ProblemDoc, RedeliverInputDoc, SubscriptionDoc,
    SubscriptionInputDoc,
};
use crate::pipeline::{authenticate, blocking, json_body, query_int, query_text};
use crate::AppState;

/// Largest subscription body: a cohort of registered patients can be large.
pub const MAX_SUBSCRIPTION_BODY: usize = 2 * 1024 * 1024;

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("no subscription has this id".into()))
}

fn rules(state: &AppState) -> SubscriptionRules {
    SubscriptionRules {
        now: state.clock.now(),
        max_duration: chrono::Duration::days(state.delivery.max_subscription_days),
        allow_insecure_webhooks: state.delivery.allow_insecure_webhooks,
    }
}

/// A subscription as its owner (or IG) sees it. The cohort is shown only by its size.
pub fn resource(sub: &Subscription, cohort_size: i64) -> Value {
    let mut criteria = serde_json::to_value(&sub.criteria).unwrap_or_else(|_| json!({}));
    if let Some(c) = criteria.as_object_mut() {
        c.remove("cohort");
        if sub.criteria.cohort {
            c.insert("cohort".into(), json!({"size": cohort_size}));
        }
    }
    let encryption_alg = sub.encryption_jwk.as_deref().and_then(|t| {
        serde_json::from_str(t).ok().and_then(|m| EncryptionKey::from_jwk(&m).ok()).map(|k| k.algorithm().to_owned())
    });
    let d = &sub.delivery;
    json!({
        "id": sub.id,
        "status": sub.status,
        "owner": {"ods_code": sub.owner_ods, "client_id": sub.owner_system},
        "purpose": sub.purpose,
        "role": sub.role,
        "context_reference": sub.context_ref,
        "topic": sub.topic,
        "criteria": criteria,
        "payload": sub.payload,
        "delivery": {
            "method": sub.method,
            "url": sub.endpoint,
            "encrypted": sub.encryption_jwk.is_some(),
            "encryption_alg": encryption_alg,
        },
        "expires_at": sub.expires_at,
        "tag": sub.tag,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
        "approval": sub.approval,
        "events": {
            "last_event_number": d.last_event_number,
            "delivered_upto": (sub.method == DeliveryMethod::Webhook).then_some(d.delivered_upto),
            "state": (sub.method == DeliveryMethod::Webhook).then_some(d.state.as_str()),
            "attempts": d.attempts,
            "failing_since": d.failing_since,
            "next_attempt_at": (sub.method == DeliveryMethod::Webhook && d.delivered_upto < d.last_event_number).then_some(d.next_attempt_at),
            "last_attempt_at": d.last_attempt_at,
            "last_delivered_at": d.last_delivered_at,
            "last_error": d.last_error,
        },
        "links": {"events": format!("/v1/subscriptions/{}/events?after=0", sub.id)},
    })
}

/// Checks what the agreement must allow before anything is stored, decides whether the
/// subscription may start outright, and computes its cohort's blind indexes.
pub(crate) fn prepare(
    state: &AppState,
    principal: &Principal,
    spec: &SubscriptionSpec,
    id: Uuid,
) -> Result<NewSubscription, ApiError> {
    // Disclosures of an organisation's notices go to a system that publishes for it.
    if spec.topic == Topic::Disclosures && !principal.has(Scope::NoticesWrite) {
        return Err(ApiError::InsufficientScope(Scope::NoticesWrite.code()));
    }
    let mut errs = Vec::new();
    if !state.agreement.purposes.contains_key(&spec.purpose) {
        errs.push(FieldError::new("/purpose", "unknown-purpose", "not a purpose of the data-sharing agreement"));
    }
    let holds = state.tokens.registry().system(&principal.client_id).is_some_and(|s| s.roles.contains(&spec.role));
    if !holds {
        errs.push(FieldError::new("/role", "role-not-held", "this system may not act in this role"));
    } else if !state.agreement.role_allowed(&spec.role, principal.org_type) {
        errs.push(FieldError::new(
            "/role",
            "role-not-allowed",
            "the agreement gives this role to no organisation of your type",
        ));
    }
    if let Some(k) = &spec.encryption_key {
        if let Err(why) = EncryptionKey::from_jwk(k) {
            errs.push(FieldError::new("/delivery/encryption_key", "jwk-unusable", why));
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::Validation(errs));
    }
    let requester = Requester {
        org: principal.org.as_str().to_owned(),
        org_type: principal.org_type,
        role: spec.role.clone(),
        system: principal.client_id.clone(),
    };
    let facts = SubscriptionFacts {
        topic: spec.topic.code().to_owned(),
        subject_kinds: spec.criteria.subject_kinds.iter().map(|k| k.code().to_owned()).collect(),
        has_cohort: spec.criteria.cohort,
        has_geography: !spec.criteria.postcodes.is_empty(),
        payload: spec.payload.code().to_owned(),
        method: match spec.method {
            DeliveryMethod::Webhook => "webhook".into(),
            DeliveryMethod::Feed => "feed".into(),
        },
    };
    let now = state.clock.now();
    let decision =
        state.agreement.decide_subscription(&requester, &facts, &spec.purpose, spec.context_reference.is_some());
    let (status, approval) = if decision.permit {
        (
            SubscriptionStatus::Active,
            json!({"decided_by": "agreement", "clauses": decision.clauses, "lawful_basis": decision.lawful_basis,
                   "agreement_version": state.agreement.version, "at": now}),
        )
    } else {
        (
            SubscriptionStatus::Pending,
            json!({"decided_by": null, "awaiting": "an IG lead's approval: the agreement does not allow this subscription outright",
                   "agreement_version": state.agreement.version, "at": now}),
        )
    };
    let cohort = spec.cohort.as_ref().map(|subjects| {
        subjects.iter().flat_map(|s| crate::disclose::subject_keys(state, s).0).collect::<Vec<String>>()
    });
    Ok(NewSubscription {
        id,
        owner_ods: principal.org.as_str().to_owned(),
        owner_system: principal.client_id.clone(),
        status: status.to_owned(),
        purpose: spec.purpose.clone(),
        role: spec.role.clone(),
        context_ref: spec.context_reference.clone(),
        topic: spec.topic,
        criteria: spec.criteria.clone(),
        payload: spec.payload,
        channel: "vpr".into(),
        method: spec.method,
        endpoint: spec.url.clone(),
        encryption_jwk: spec.encryption_key.as_ref().map(|k| Value::Object(k.clone()).to_string()),
        tag: spec.tag.clone(),
        expires_at: spec.expires_at,
        heartbeat_seconds: None,
        approval,
        cohort,
    })
}

/// The audit entry of a change to a subscription (not a disclosure, but IG reviews who asked to
/// be told of what).
pub(crate) fn subscription_audit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    sub: &Subscription,
    outcome: u16,
) -> AuditEntry {
    AuditEntry {
        actor_role: Some(sub.role.clone()),
        purpose: Some(sub.purpose.clone()),
        context_ref: Some(format!("subscription={};status={}", sub.id, sub.status)),
        decision: sub.status.code().to_owned(),
        clauses: sub.approval.get("clauses").and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default(),
        lawful_basis: sub
            .approval
            .get("lawful_basis")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default(),
        ..audit_base(state, principal, action, outcome)
    }
}

async fn respond_with(
    state: &AppState,
    sub: Subscription,
    builder: &mut actix_web::HttpResponseBuilder,
) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let id = sub.id;
    let size = blocking(move || st.store.cohort_size(id).map_err(ApiError::from)).await?;
    Ok(builder.insert_header((header::CACHE_CONTROL, "no-store")).json(resource(&sub, size)))
}

/// The owner's subscription (any system of the owning organisation).
async fn owned(state: &AppState, principal: &Principal, id: Uuid) -> Result<Subscription, ApiError> {
    let st = state.clone();
    let sub = blocking(move || st.store.subscription(id).map_err(ApiError::from)).await?;
    match sub {
        None => Err(ApiError::NotFound("no subscription has this id".into())),
        Some(s) if s.owner_ods != principal.org.as_str() => {
            Err(ApiError::Forbidden("this subscription belongs to another organisation".into()))
        }
        Some(s) => Ok(s),
    }
}

/// Creates a subscription.
#[utoipa::path(
    tag = "subscriptions",
    request_body(content = SubscriptionInputDoc, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: `active`, or `pending-approval` when the agreement does not allow it outright (an IG lead decides)", body = SubscriptionDoc),
        (status = 401, description = "No valid access token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "Token lacks `subscriptions`", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed: every failing field by JSON pointer, with its rule", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/v1/subscriptions")]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let body = json_body(&req, &read_body_up_to(payload, MAX_SUBSCRIPTION_BODY).await?)?;
    let spec = rules(&state).subscription(&body).map_err(ApiError::Validation)?;
    let new = prepare(&state, &principal, &spec, Uuid::new_v4())?;
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
    tracing::info!(subscription = %sub.id, status = %sub.status, org = %principal.org, "subscription created");
    let location = format!("/v1/subscriptions/{}", sub.id);
    respond_with(&state, sub, HttpResponse::Created().insert_header((header::LOCATION, location))).await
}

/// Lists your organisation's subscriptions, newest first (`?status=`). With `?all=true`, an IG
/// role (`ig:write`, and `VPR-User-Role`) sees every organisation's, e.g. those awaiting approval.
#[utoipa::path(
    tag = "subscriptions",
    params(
        ("status" = Option<String>, Query, description = "`active`, `pending-approval`, `rejected`, `revoked`, `expired` or `deleted`"),
        ("all" = Option<bool>, Query, description = "IG only: every organisation's subscriptions"),
        ("limit" = Option<i64>, Query, description = "1 to 500 (default 100)"),
        ("VPR-User-Role" = Option<String>, Header, description = "An IG role, with `all=true`"),
    ),
    responses(
        (status = 200, description = "Subscriptions", body = Object),
        (status = 403, description = "`all=true` without an IG role", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad parameter", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]), ("bearer" = ["ig:write"]))
)]
#[get("/v1/subscriptions")]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let all = match query_text(&req, "all")?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError::new("/all", "type", "`all` must be `true` or `false`")]))
        }
    };
    let principal = if all {
        let p = authenticate(&state, &req, Scope::IgWrite)?;
        let role = req.headers().get("VPR-User-Role").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if let Err(refusal) = ig_reviewer(&state, &p, &role) {
            return Err(refuse_unread(&state, &p, "subscriptions-list", refusal).await);
        }
        p
    } else {
        authenticate(&state, &req, Scope::Subscriptions)?
    };
    let st = query_text(&req, "status")?;
    if let Some(s) = &st {
        if SubscriptionStatus::from_code(s).is_none() {
            return Err(ApiError::Validation(vec![FieldError::new("/status", "enum", "not a subscription status")]));
        }
    }
    let limit = query_int(&req, "limit", 1, 500, 100)?;
    let store = state.store.clone();
    let owner = (!all).then(|| principal.org.as_str().to_owned());
    let items = blocking(move || {
        let status_is = st.as_deref().and_then(SubscriptionStatus::from_code);
        let subs = store.subscriptions(owner.as_deref(), status_is, limit)?;
        subs.into_iter()
            .map(|s| {
                let size = if s.criteria.cohort { store.cohort_size(s.id)? } else { 0 };
                Ok(resource(&s, size))
            })
            .collect::<Result<Vec<Value>, vpr_store::StoreError>>()
            .map_err(ApiError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({ "subscriptions": items })))
}

/// One subscription, with where its delivery stands.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription and its delivery status", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/v1/subscriptions/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let sub = owned(&state, &principal, parse_id(&id)?).await?;
    respond_with(&state, sub, &mut HttpResponse::Ok()).await
}

/// Replaces a subscription's settings, cohort included (a `PUT` without `criteria.cohort` drops
/// it); its events and their numbering continue, and notices it was given still reach it when
/// withdrawn. Deliveries are then decided for the system that made the change. A change the
/// agreement does not allow outright waits for an IG lead's approval again.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = SubscriptionInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription as changed", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Deleted, rejected or revoked subscriptions cannot be changed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[put("/v1/subscriptions/{id}")]
pub async fn replace(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let id = parse_id(&id)?;
    let body = json_body(&req, &read_body_up_to(payload, MAX_SUBSCRIPTION_BODY).await?)?;
    let spec = rules(&state).subscription(&body).map_err(ApiError::Validation)?;
    owned(&state, &principal, id).await?;
    let new = prepare(&state, &principal, &spec, id)?;
    let st = state.clone();
    let now = state.clock.now();
    let who = principal.clone();
    let sub = blocking(move || {
        st.store.audited(|tx| {
            let sub = tx.replace_subscription(&new, now)?;
            let entry = subscription_audit(&st, &who, AuditAction::SubscriptionChange.code(), &sub, 200);
            Ok::<_, ApiError>((sub, entry))
        })
    })
    .await?;
    respond_with(&state, sub, &mut HttpResponse::Ok()).await
}

/// Ends a subscription: nothing more is sent (including retractions; its events stay readable
/// by IG in the audit log).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Deleted", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Already deleted", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[delete("/v1/subscriptions/{id}")]
pub async fn delete_subscription(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let id = parse_id(&id)?;
    owned(&state, &principal, id).await?;
    let st = state.clone();
    let now = state.clock.now();
    let who = principal.clone();
    let sub = blocking(move || {
        st.store.audited(|tx| {
            let sub = tx
                .delete_subscription(id, now)?
                .ok_or_else(|| ApiError::Conflict("the subscription is already deleted".into()))?;
            let entry = subscription_audit(&st, &who, AuditAction::Unsubscribe.code(), &sub, 200);
            Ok::<_, ApiError>((sub, entry))
        })
    })
    .await?;
    respond_with(&state, sub, &mut HttpResponse::Ok()).await
}

/// The feed: the subscription's events after `after`, each decided by the agreement now, the
/// same events a webhook receives. Replay from any point; event numbers have no gaps.
#[utoipa::path(
    tag = "subscriptions",
    params(
        ("id" = Uuid, Path, description = "Subscription id"),
        ("after" = Option<i64>, Query, description = "Events numbered after this (default 0: from the start)"),
        ("limit" = Option<i64>, Query, description = "1 to 500 (default 100)"),
    ),
    responses(
        (status = 200, description = "Events, oldest first; `next_after` continues", body = EventFeedDoc),
        (status = 403, description = "Another organisation's subscription, or the subscriber is refused by the agreement (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Awaiting approval, rejected or deleted", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "The audit entry could not be written: nothing is disclosed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/v1/subscriptions/{id}/events")]
pub async fn events(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let id = parse_id(&id)?;
    let after = query_int(&req, "after", 0, i64::MAX, 0)?;
    let limit = query_int(&req, "limit", 1, 500, 100)?;
    let sub = owned(&state, &principal, id).await?;
    if !sub.status.receives() {
        return Err(ApiError::Conflict(format!("a subscription that is `{}` has no feed", sub.status)));
    }
    let st = state.clone();
    let s = sub.clone();
    let request_id = crate::error::current_request_id().unwrap_or_default();
    let (decided, last) = blocking(move || {
        let events = st.store.events_after(id, after, limit)?;
        if events.is_empty() {
            // Nothing disclosed: an empty poll is not an audited read.
            return Ok((None, s.delivery.last_event_number));
        }
        let d = decide_events(&st, &s, &events, "feed", false, request_id)?;
        Ok((Some((d, events.last().map_or(after, |e| e.number))), s.delivery.last_event_number))
    })
    .await?;
    let (items, next_after, feed_id) = match decided {
        None => (vec![], after, None),
        Some((d, next)) => {
            if let Some(why) = d.refused {
                return Err(ApiError::Forbidden(why));
            }
            (d.events, next, Some(d.audit_id))
        }
    };
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
        "subscription_id": sub.id,
        "tag": sub.tag,
        "feed_id": feed_id,
        "events": items,
        "next_after": next_after,
        "last_event_number": last.max(next_after),
    })))
}

/// Adds subjects to and removes them from the cohort (as patients register and leave).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = CohortChangeDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The cohort's new size", body = Object),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The subscription has no cohort criterion, or is closed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/v1/subscriptions/{id}/cohort")]
pub async fn change_cohort(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let id = parse_id(&id)?;
    let body = json_body(&req, &read_body_up_to(payload, MAX_SUBSCRIPTION_BODY).await?)?;
    let change = vpr_domain::subscription::cohort_change(&body).map_err(ApiError::Validation)?;
    let sub = owned(&state, &principal, id).await?;
    if !sub.criteria.cohort {
        return Err(ApiError::Conflict(
            "this subscription has no cohort: give `criteria.cohort` with PUT first".into(),
        ));
    }
    if !sub.status.replaceable() {
        return Err(ApiError::Conflict(format!("a subscription that is `{}` cannot be changed", sub.status)));
    }
    let keys = |subjects: &[vpr_domain::notice::Subject]| -> Vec<String> {
        subjects.iter().flat_map(|s| crate::disclose::subject_keys(&state, s).0).collect()
    };
    let (add, remove) = (keys(&change.add), keys(&change.remove));
    let store = state.store.clone();
    let size = blocking(move || store.write(|tx| tx.change_cohort(id, &add, &remove)).map_err(ApiError::from)).await?;
    Ok(HttpResponse::Ok().json(json!({"subscription_id": id, "cohort": {"size": size}})))
}

/// IG decides on a subscription: approve or reject one awaiting approval, or revoke an active
/// one. Audited.
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = ApprovalInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The subscription after the decision", body = SubscriptionDoc),
        (status = 403, description = "Not an IG role (audited)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The subscription is not in a state this decision applies to", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Validation failed", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["ig:write"]))
)]
#[post("/v1/subscriptions/{id}/approval")]
pub async fn decide_approval(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::IgWrite)?;
    let id = parse_id(&id)?;
    let body = json_body(&req, &read_body_up_to(payload, crate::handlers::MAX_BODY_BYTES).await?)?;
    let input = vpr_domain::subscription::approval(&body).map_err(ApiError::Validation)?;
    if let Err(refusal) = ig_reviewer(&state, &principal, &input.reviewer.role) {
        return Err(refuse_unread(&state, &principal, AuditAction::SubscriptionApproval.code(), refusal).await);
    }
    let (from, to): (&[SubscriptionStatus], SubscriptionStatus) = match input.decision.as_str() {
        "approve" => (&[SubscriptionStatus::Pending], SubscriptionStatus::Active),
        "reject" => (&[SubscriptionStatus::Pending], SubscriptionStatus::Rejected),
        _ => (SubscriptionStatus::REVOCABLE, SubscriptionStatus::Revoked),
    };
    let st = state.clone();
    let now = state.clock.now();
    let who = principal.clone();
    let sub = blocking(move || st.store.audited(|tx| {
        let current = tx.subscription(id)?.ok_or_else(|| ApiError::NotFound("no subscription has this id".into()))?;
        let record = json!({
            "decided_by": "ig", "decision": input.decision, "note": input.note.trim(),
            "reviewer": {"organisation": who.org.as_str(), "user_id": input.reviewer.user_id, "role": input.reviewer.role},
            "agreement_version": st.agreement.version, "at": now, "previous": current.approval,
        });
        let sub = tx.set_subscription_status(id, from, to, Some(&record), now)?.ok_or_else(|| {
            ApiError::Conflict(format!("a subscription that is `{}` cannot be given `{}`", current.status, input.decision))
        })?;
        let audit = AuditEntry {
            actor_user: Some(input.reviewer.user_id.clone()),
            actor_role: Some(input.reviewer.role.clone()),
            purpose: Some("vpr-management".into()),
            context_ref: Some(format!("subscription={id};decision={};owner={}", input.decision, sub.owner_ods)),
            decision: to.code().to_owned(),
            ..audit_base(&st, &who, AuditAction::SubscriptionApproval.code(), 200)
        };
        Ok::<_, ApiError>((sub, audit))
    }))
    .await?;
    state.outbox.changed();
    respond_with(&state, sub, &mut HttpResponse::Ok()).await
}

/// Events whose retries ran out, newest first; the subscription stays suspended until
/// redelivery is asked for (its later events wait, in order; nothing is dropped).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "Dead letters", body = Object),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[get("/v1/subscriptions/{id}/dead-letters")]
pub async fn dead_letters(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let id = parse_id(&id)?;
    let sub = owned(&state, &principal, id).await?;
    let store = state.store.clone();
    let items = blocking(move || store.dead_letters(id).map_err(ApiError::from)).await?;
    let held = sub.delivery.last_event_number - sub.delivery.delivered_upto;
    Ok(HttpResponse::Ok().json(json!({
        "subscription_id": id,
        "delivery_state": sub.delivery.state,
        "undelivered_events": held,
        "dead_letters": items,
    })))
}

/// Resumes a suspended webhook subscription from its first undelivered event, or replays from
/// `from_event` (each event decided and audited again when sent).
#[utoipa::path(
    tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body(content = RedeliverInputDoc, content_type = "application/json"),
    responses(
        (status = 202, description = "Delivery resumes", body = SubscriptionDoc),
        (status = 403, description = "Another organisation's subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such subscription", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Not a webhook subscription, or closed", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`from_event` is beyond the last event", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["subscriptions"]))
)]
#[post("/v1/subscriptions/{id}/redeliver")]
pub async fn redeliver(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::Subscriptions)?;
    let id = parse_id(&id)?;
    let body = json_body(&req, &read_body_up_to(payload, crate::handlers::MAX_BODY_BYTES).await?)?;
    let input = vpr_domain::subscription::redeliver(&body).map_err(ApiError::Validation)?;
    let sub = owned(&state, &principal, id).await?;
    if sub.method != DeliveryMethod::Webhook {
        return Err(ApiError::Conflict("a feed subscription is replayed by reading its feed from any `after`".into()));
    }
    if !sub.status.receives() {
        return Err(ApiError::Conflict(format!("a subscription that is `{}` is not delivered", sub.status)));
    }
    let st = state.clone();
    let now = state.clock.now();
    let sub = blocking(move || {
        if !st.store.redeliver(id, input.from_event, now)? {
            return Err(ApiError::Validation(vec![FieldError::new(
                "/from_event",
                "beyond-last-event",
                "there is no event with this number yet",
            )]));
        }
        st.store.subscription(id)?.ok_or_else(|| ApiError::NotFound("no subscription has this id".into()))
    })
    .await?;
    state.outbox.due();
    respond_with(&state, sub, &mut HttpResponse::Accepted()).await
}

/// The wire type of every event kind, for the OpenAPI description.
pub fn event_types() -> Vec<String> {
    let mut v: Vec<String> = vpr_domain::vocab::ChangeKind::ALL.iter().map(|k| event_type(k.code())).collect();
    v.push("withheld".into());
    v
}
