//! The stored shapes of subscriptions, their events and dead letters, and their decoding.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use vpr_domain::subscription::{Criteria, DeliveryMethod, Payload, PeerLink, SubscriptionStatus, Topic};

use crate::schema::{subscription_events as se, subscriptions as s};
use crate::StoreError;

/// Delivery states of a webhook subscription.
pub mod delivery_state {
    /// Delivering (or waiting to retry).
    pub const ACTIVE: &str = "active";
    /// Retries ran out: the head event is dead-lettered until redelivery is asked for.
    pub const SUSPENDED: &str = "suspended";
}

/// A subscription to create or to replace.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// Id.
    pub id: Uuid,
    /// Owning organisation.
    pub owner_ods: String,
    /// The system deliveries are decided for.
    pub owner_system: String,
    /// [`SubscriptionStatus::Active`] or [`SubscriptionStatus::Pending`].
    pub status: SubscriptionStatus,
    /// Purpose of use.
    pub purpose: String,
    /// Role.
    pub role: String,
    /// Standing reference.
    pub context_ref: Option<String>,
    /// What it is told of.
    pub topic: Topic,
    /// Criteria.
    pub criteria: Criteria,
    /// Payload.
    pub payload: Payload,
    /// `vpr` (signed JSON events) or `fhir` (notification bundles).
    pub channel: String,
    /// Webhook or feed.
    pub method: DeliveryMethod,
    /// Webhook URL.
    pub endpoint: Option<String>,
    /// Subscriber's public encryption JWK (JSON).
    pub encryption_jwk: Option<String>,
    /// Subscriber's label.
    pub tag: Option<String>,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// FHIR rest-hook: seconds of quiet before a heartbeat notification.
    pub heartbeat_seconds: Option<i32>,
    /// How it was approved (or why it waits), as recorded.
    pub approval: Value,
    /// The cohort's blind indexes, when the cohort criterion is given (replaces any existing).
    pub cohort: Option<Vec<String>>,
    /// Set when the subscription crosses an ICS border.
    pub federation: Option<PeerLink>,
}

/// Where a webhook subscription's delivery stands.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryStatus {
    /// Events numbered so far.
    pub last_event_number: i64,
    /// Events acknowledged by the receiver (webhooks).
    pub delivered_upto: i64,
    /// `active` or `suspended`.
    pub state: String,
    /// Failed attempts at the head event.
    pub attempts: i32,
    /// Since when the head event has been failing.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// Last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Last acknowledged delivery.
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A stored subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Id.
    pub id: Uuid,
    /// Owning organisation.
    pub owner_ods: String,
    /// The system deliveries are decided for.
    pub owner_system: String,
    /// Status.
    pub status: SubscriptionStatus,
    /// Purpose.
    pub purpose: String,
    /// Role.
    pub role: String,
    /// Standing reference.
    pub context_ref: Option<String>,
    /// What it is told of.
    pub topic: Topic,
    /// Criteria.
    pub criteria: Criteria,
    /// Payload.
    pub payload: Payload,
    /// Channel.
    pub channel: String,
    /// Method.
    pub method: DeliveryMethod,
    /// Webhook URL.
    pub endpoint: Option<String>,
    /// Encryption JWK.
    pub encryption_jwk: Option<String>,
    /// Label.
    pub tag: Option<String>,
    /// Until when.
    pub expires_at: DateTime<Utc>,
    /// FHIR rest-hook: seconds of quiet before a heartbeat notification.
    pub heartbeat_seconds: Option<i32>,
    /// The last heartbeat sent.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Approval record.
    pub approval: Value,
    /// Delivery.
    pub delivery: DeliveryStatus,
    /// Set when the subscription crosses an ICS border.
    pub federation: Option<PeerLink>,
}

#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = s)]
pub(crate) struct Row {
    id: String,
    owner_ods: String,
    owner_system: String,
    status: String,
    purpose: String,
    role: String,
    context_ref: Option<String>,
    criteria: String,
    payload: String,
    channel: String,
    method: String,
    endpoint: Option<String>,
    encryption_jwk: Option<String>,
    tag: Option<String>,
    expires_at: NaiveDateTime,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    approval: String,
    topic: String,
    heartbeat_seconds: Option<i32>,
    last_heartbeat_at: Option<NaiveDateTime>,
    delivered_upto: i64,
    delivery_state: String,
    attempts: i32,
    failing_since: Option<NaiveDateTime>,
    next_attempt_at: NaiveDateTime,
    last_attempt_at: Option<NaiveDateTime>,
    last_delivered_at: Option<NaiveDateTime>,
    last_error: Option<String>,
    federation: Option<String>,
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Row {
    pub(crate) fn decode(self, last_event_number: i64) -> Result<Subscription, StoreError> {
        let method = match self.method.as_str() {
            "webhook" => DeliveryMethod::Webhook,
            "feed" => DeliveryMethod::Feed,
            other => return Err(corrupt(format!("unknown delivery method `{other}`"))),
        };
        Ok(Subscription {
            id: Uuid::parse_str(&self.id).map_err(corrupt)?,
            owner_ods: self.owner_ods,
            owner_system: self.owner_system,
            status: SubscriptionStatus::from_code(&self.status)
                .ok_or_else(|| corrupt(format!("unknown subscription status `{}`", self.status)))?,
            purpose: self.purpose,
            role: self.role,
            context_ref: self.context_ref,
            topic: Topic::from_code(&self.topic).ok_or_else(|| corrupt("unknown topic"))?,
            criteria: serde_json::from_str(&self.criteria).map_err(corrupt)?,
            payload: Payload::from_code(&self.payload).ok_or_else(|| corrupt("unknown payload"))?,
            channel: self.channel,
            method,
            endpoint: self.endpoint,
            encryption_jwk: self.encryption_jwk,
            tag: self.tag,
            expires_at: self.expires_at.and_utc(),
            heartbeat_seconds: self.heartbeat_seconds,
            last_heartbeat_at: self.last_heartbeat_at.map(|t| t.and_utc()),
            created_at: self.created_at.and_utc(),
            updated_at: self.updated_at.and_utc(),
            approval: serde_json::from_str(&self.approval).map_err(corrupt)?,
            delivery: DeliveryStatus {
                last_event_number,
                delivered_upto: self.delivered_upto,
                state: self.delivery_state,
                attempts: self.attempts,
                failing_since: self.failing_since.map(|t| t.and_utc()),
                next_attempt_at: self.next_attempt_at.and_utc(),
                last_attempt_at: self.last_attempt_at.map(|t| t.and_utc()),
                last_delivered_at: self.last_delivered_at.map(|t| t.and_utc()),
                last_error: self.last_error,
            },
            federation: self.federation.as_deref().map(serde_json::from_str).transpose().map_err(corrupt)?,
        })
    }
}

/// One event as numbered for one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionEvent {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Its number in the subscription (1, 2, ...; no gaps).
    pub number: i64,
    /// Unique id, for receivers to de-duplicate by.
    pub event_id: Uuid,
    /// The notice.
    pub notice_id: Uuid,
    /// The version the change made.
    pub notice_version: i64,
    /// What happened: a change kind (`created`, `amended`, ...).
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Whether the notice matched the criteria (false: sent because the subscriber was given
    /// the notice before).
    pub matched: bool,
    /// For a `disclosed` event: the audit entry recording the disclosure.
    pub audit_id: Option<Uuid>,
}

#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = se)]
pub(crate) struct EventRow {
    subscription_id: String,
    event_number: i64,
    event_id: String,
    notice_id: String,
    notice_version: i64,
    kind: String,
    occurred_at: NaiveDateTime,
    matched: bool,
    audit_id: Option<String>,
}

impl EventRow {
    pub(crate) fn decode(self) -> Result<SubscriptionEvent, StoreError> {
        Ok(SubscriptionEvent {
            subscription_id: Uuid::parse_str(&self.subscription_id).map_err(corrupt)?,
            number: self.event_number,
            event_id: Uuid::parse_str(&self.event_id).map_err(corrupt)?,
            notice_id: Uuid::parse_str(&self.notice_id).map_err(corrupt)?,
            notice_version: self.notice_version,
            kind: self.kind,
            occurred_at: self.occurred_at.and_utc(),
            matched: self.matched,
            audit_id: self.audit_id.as_deref().map(Uuid::parse_str).transpose().map_err(corrupt)?,
        })
    }
}

/// An event whose retries ran out.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Event number.
    pub event_number: i64,
    /// When it was given up.
    pub dead_at: DateTime<Utc>,
    /// Attempts made.
    pub attempts: i32,
    /// The last failure.
    pub last_error: String,
    /// When redelivery was asked for.
    pub resolved_at: Option<DateTime<Utc>>,
}

pub(crate) fn db_time(t: DateTime<Utc>) -> NaiveDateTime {
    use chrono::DurationRound;
    let n = t.naive_utc();
    n.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(n)
}

pub(crate) fn method_code(m: DeliveryMethod) -> &'static str {
    match m {
        DeliveryMethod::Webhook => "webhook",
        DeliveryMethod::Feed => "feed",
    }
}
