//! Notification bundles in the shape of the FHIR R4 Subscriptions Backport IG: a `history`
//! Bundle whose first entry is a subscription-status `Parameters` (event numbers counted from
//! the subscription's start, so a receiver can see a gap), followed by the focus resources when
//! the payload is `full-resource`. The same shapes answer `$status` and `$events`.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{BACKPORT, TOPIC};

/// One event in a notification.
#[derive(Debug, Clone)]
pub struct NotificationEvent {
    /// Its number in the subscription.
    pub number: i64,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The Flag it concerns, when the agreement lets the subscriber know it (absent: withheld).
    pub focus: Option<String>,
    /// The Flag itself, for `full-resource` payloads.
    pub resource: Option<Value>,
}

/// The subscription-status `Parameters` resource.
pub fn status_parameters(
    base: &str,
    subscription: Uuid,
    kind: &str,
    status: &str,
    events_since_start: i64,
    events: &[NotificationEvent],
    error: Option<&str>,
) -> Value {
    let mut parameter = vec![
        json!({"name": "subscription", "valueReference": {"reference": format!("{base}/Subscription/{subscription}")}}),
        json!({"name": "topic", "valueCanonical": TOPIC}),
        json!({"name": "status", "valueCode": status}),
        json!({"name": "type", "valueCode": kind}),
        json!({"name": "events-since-subscription-start", "valueString": events_since_start.to_string()}),
    ];
    for e in events {
        let mut part = vec![
            json!({"name": "event-number", "valueString": e.number.to_string()}),
            json!({"name": "timestamp", "valueInstant": e.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
        ];
        if let Some(id) = &e.focus {
            part.push(json!({"name": "focus", "valueReference": {"reference": format!("{base}/Flag/{id}")}}));
        }
        parameter.push(json!({"name": "notification-event", "part": part}));
    }
    if let Some(why) = error {
        parameter.push(json!({"name": "error", "valueCodeableConcept": {"text": why}}));
    }
    json!({
        "resourceType": "Parameters",
        "id": Uuid::new_v4(),
        "meta": {"profile": [format!("{BACKPORT}/backport-subscription-status-r4")]},
        "parameter": parameter,
    })
}

/// A notification (`event-notification`, `heartbeat` or `query-event`): a `history` Bundle.
pub fn notification_bundle(
    base: &str,
    subscription: Uuid,
    kind: &str,
    status: &str,
    events_since_start: i64,
    events: &[NotificationEvent],
    now: DateTime<Utc>,
) -> Value {
    let params = status_parameters(base, subscription, kind, status, events_since_start, events, None);
    let mut entry = vec![json!({
        "fullUrl": format!("urn:uuid:{}", params["id"].as_str().unwrap_or_default()),
        "resource": params,
        "request": {"method": "GET", "url": format!("{base}/Subscription/{subscription}/$status")},
        "response": {"status": "200"},
    })];
    for e in events {
        if let (Some(id), Some(resource)) = (&e.focus, &e.resource) {
            entry.push(json!({
                "fullUrl": format!("{base}/Flag/{id}"),
                "resource": resource,
                "request": {"method": "PUT", "url": format!("Flag/{id}")},
                "response": {"status": "200"},
            }));
        }
    }
    json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4(),
        "meta": {"profile": [format!("{BACKPORT}/backport-subscription-notification-r4")]},
        "type": "history",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "entry": entry,
    })
}

/// The answer to `$status`: a `searchset` Bundle holding the status `Parameters`.
pub fn status_bundle(
    base: &str,
    subscription: Uuid,
    status: &str,
    events_since_start: i64,
    error: Option<&str>,
) -> Value {
    let params = status_parameters(base, subscription, "query-status", status, events_since_start, &[], error);
    json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4(),
        "type": "searchset",
        "total": 1,
        "entry": [{
            "fullUrl": format!("urn:uuid:{}", params["id"].as_str().unwrap_or_default()),
            "resource": params,
            "search": {"mode": "match"},
        }],
    })
}
