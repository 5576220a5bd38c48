//! FHIR `Subscription` resources and their notifications (R4 Subscriptions Backport IG).

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use serde_json::{json, Value};
use vpr_domain::subscription::Payload;
use vpr_domain::subscription::SubscriptionStatus;
use vpr_store::subscriptions::{delivery_state, Subscription, SubscriptionEvent};

use super::flag::{flag, KnownSubject, Shown};
use super::notification::{notification_bundle, NotificationEvent};
use super::{base, BACKPORT, FHIR_JSON, TOPIC, VPR_FHIR};
use crate::render::event::{Decided, DecidedEvent};
use crate::App;

/// The FHIR status of a subscription.
pub fn fhir_status(sub: &Subscription) -> &'static str {
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
        r["extension"] =
            json!([{"url": format!("{}/StructureDefinition/cohort-size", VPR_FHIR), "valueUnsignedInt": cohort_size}]);
    }
    if let Some(e) = &sub.delivery.last_error {
        if fhir_status(sub) == "error" {
            r["error"] = json!(e);
        }
    }
    r
}

/// The notification events (and Flags, for full-resource) of decided events.
pub fn notification_events(decided: &Decided, events: &[DecidedEvent], full: bool) -> Vec<NotificationEvent> {
    events
        .iter()
        .map(|d| {
            let e: &SubscriptionEvent = &d.event;
            let notice = d.notice();
            let shown = decided.shown.get(&e.notice_id);
            let resource = match (notice, shown, full) {
                (Some(n), Some(s), true) => {
                    let known = KnownSubject { nhs_number: s.nhs_in_cohort.clone() };
                    Some(flag(n, Shown { version: s.version, updated_at: s.updated_at }, &known))
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

/// The body of a pushed notification for one decided event.
pub fn pushed(
    app: &App,
    sub: &Subscription,
    decided: &Decided,
    event: &SubscriptionEvent,
    body: &DecidedEvent,
) -> Value {
    let items = notification_events(decided, std::slice::from_ref(body), sub.payload == Payload::View);
    notification_bundle(
        &base(app),
        sub.id,
        "event-notification",
        fhir_status(sub),
        event.number,
        &items,
        app.clock.now(),
    )
}

/// A heartbeat notification.
pub fn heartbeat(app: &App, sub: &Subscription) -> Value {
    notification_bundle(
        &base(app),
        sub.id,
        "heartbeat",
        fhir_status(sub),
        sub.delivery.last_event_number,
        &[],
        app.clock.now(),
    )
}
