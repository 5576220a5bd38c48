//! Subscription events as the VPR wire shows them: the same body in a webhook push and a feed
//! item. Rendered from the typed decision, never parsed back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_store::subscriptions::SubscriptionEvent;

use crate::disclose::DisclosedNotice;

/// The wire name of an event kind.
pub fn event_type(kind: &str) -> String {
    format!("notice-{kind}")
}

/// The wire type of every event kind, for the OpenAPI description.
pub fn event_types() -> Vec<String> {
    let mut v: Vec<String> = vpr_domain::vocab::ChangeKind::ALL.iter().map(|k| event_type(k.code())).collect();
    v.push("withheld".into());
    v
}

/// What one event carries, as decided for its recipient.
#[derive(Debug, Clone)]
pub enum Carried {
    /// The notice, in the view the agreement allows now.
    Notice(Box<DisclosedNotice>),
    /// A disclosure of the subscriber's own notice (its access log).
    Disclosure(Value),
    /// Nothing: the agreement does not let the subscriber know of it.
    Withheld,
}

/// One event decided for its recipient.
#[derive(Debug, Clone)]
pub struct DecidedEvent {
    /// The stored event.
    pub event: SubscriptionEvent,
    /// What it carries.
    pub carried: Carried,
}

impl DecidedEvent {
    /// The notice it discloses, if any.
    pub fn notice(&self) -> Option<&DisclosedNotice> {
        match &self.carried {
            Carried::Notice(n) => Some(n),
            _ => None,
        }
    }

    /// The event's JSON body.
    pub fn to_json(&self) -> Value {
        let e = &self.event;
        let carried = match &self.carried {
            Carried::Withheld => {
                return json!({"event_id": e.event_id, "event_number": e.number, "type": "withheld", "occurred_at": e.occurred_at})
            }
            Carried::Notice(n) => ("notice", json!(n)),
            Carried::Disclosure(d) => ("disclosure", d.clone()),
        };
        let mut body = json!({
            "event_id": e.event_id,
            "event_number": e.number,
            "type": event_type(&e.kind),
            "occurred_at": e.occurred_at,
            "notice_id": e.notice_id,
            "notice_version": e.notice_version,
        });
        if let Some(map) = body.as_object_mut() {
            if matches!(self.carried, Carried::Notice(_)) {
                map.insert("matched_criteria".into(), json!(e.matched));
            }
            map.insert(carried.0.into(), carried.1);
        }
        body
    }
}

impl Serialize for DecidedEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// Events decided for one recipient.
#[derive(Debug)]
pub struct Decided {
    /// The audit entry recording the decisions.
    pub audit_id: Uuid,
    /// Why the subscriber itself was refused, if it was (every event is then withheld).
    pub refused: Option<String>,
    /// One per event, in order.
    pub events: Vec<DecidedEvent>,
    /// What was shown of each notice: its current version, and the NHS number when it is one
    /// the subscriber holds in its cohort (for FHIR, which must name the patient).
    pub shown: HashMap<Uuid, Shown>,
}

/// What a delivery showed of one notice.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The version shown.
    pub version: i64,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The subject's NHS number, when it is in the subscriber's own cohort.
    pub nhs_in_cohort: Option<String>,
}
