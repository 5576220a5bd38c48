//! Subscriptions, the outbox of notice changes, and delivery state.
//!
//! A change to a notice writes a `notice_events` row in the same transaction (the outbox). The
//! fan-out step, one replica at a time, matches each new event against the subscriptions —
//! judging criteria on the decrypted content, so nothing identifying is stored in clear — and
//! numbers it per subscription. Webhook delivery then proceeds per subscription strictly in
//! event order, under a lease so replicas never push the same subscription at once.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use vpr_domain::subscription::{Criteria, DeliveryMethod, Payload, Topic};
use vpr_domain::vocab::ChangeKind;

use crate::db::{write_tx, DbConnection};
use crate::schema::{
    audit_entries as ae, disclosure_fanout_state as dfs, notice_events as ne, notices as nt, subscription_cohort as sc,
    subscription_counters as cnt, subscription_dead_letters as dl, subscription_events as se,
    subscription_notice_seen as seen, subscriptions as s,
};
use crate::{Store, StoreError};

/// Subscription statuses.
pub mod status {
    /// Receiving events.
    pub const ACTIVE: &str = "active";
    /// Waiting for an IG decision: receives nothing.
    pub const PENDING: &str = "pending-approval";
    /// Refused by IG.
    pub const REJECTED: &str = "rejected";
    /// Stopped by IG: no new events, but retractions of notices it was given still reach it.
    pub const REVOKED: &str = "revoked";
    /// Past its expiry: no new events, but retractions still reach it.
    pub const EXPIRED: &str = "expired";
    /// Deleted by its owner: nothing more is sent.
    pub const DELETED: &str = "deleted";
}

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
    /// `active` or `pending-approval`.
    pub status: String,
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
    /// Status (see [`status`]).
    pub status: String,
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
}

#[derive(Queryable, Selectable, Debug, Clone)]
#[diesel(table_name = s)]
struct Row {
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
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Row {
    fn decode(self, last_event_number: i64) -> Result<Subscription, StoreError> {
        let method = match self.method.as_str() {
            "webhook" => DeliveryMethod::Webhook,
            "feed" => DeliveryMethod::Feed,
            other => return Err(corrupt(format!("unknown delivery method `{other}`"))),
        };
        Ok(Subscription {
            id: Uuid::parse_str(&self.id).map_err(corrupt)?,
            owner_ods: self.owner_ods,
            owner_system: self.owner_system,
            status: self.status,
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
struct EventRow {
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
    fn decode(self) -> Result<SubscriptionEvent, StoreError> {
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

/// A receiver's acknowledgement of one event, to record.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The subscription.
    pub subscription: Uuid,
    /// The replica holding its lease.
    pub owner: String,
    /// The event acknowledged.
    pub number: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The lease, renewed to this.
    pub lease_until: DateTime<Utc>,
    /// Give the lease back too (the last event due was acknowledged).
    pub release: bool,
}

/// Acknowledgements are group-committed: one transaction for all that arrive together.
pub(crate) type AckWriter = crate::group::GroupCommit<Ack, bool>;

/// The acknowledgement writer (`writers` threads).
pub(crate) fn ack_writer(pool: crate::db::DbPool, writers: usize) -> AckWriter {
    crate::group::GroupCommit::new(
        "ack-writer",
        writers,
        512,
        std::sync::Arc::new(move |acks: &[&Ack]| {
            let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            write_tx(&mut conn, |conn| {
                if let DbConnection::Pg(_) = conn {
                    // An acknowledgement lost in a crash only means the event is pushed again,
                    // which receivers de-duplicate: it need not wait for the WAL to reach disk.
                    // (Notices, audit entries and fan-out keep synchronous commit.)
                    diesel::sql_query("SET LOCAL synchronous_commit = off").execute(conn)?;
                }
                // Rows are locked in one order by every writer, so batches never deadlock.
                let mut order: Vec<usize> = (0..acks.len()).collect();
                order.sort_by_key(|&i| acks.get(i).map(|a| (a.subscription, a.number)));
                let mut results = vec![false; acks.len()];
                for i in order {
                    if let (Some(a), Some(r)) = (acks.get(i), results.get_mut(i)) {
                        *r = record_ack(conn, a)?;
                    }
                }
                Ok(results)
            })
        }),
    )
}

/// Records one acknowledgement. Acknowledgements may commit out of order (they are pipelined),
/// so the cursor only ever moves forward; false means the lease is no longer this replica's.
/// (Written with the query builder so the statement is prepared once per connection, not
/// planned per acknowledgement.)
fn record_ack(conn: &mut DbConnection, a: &Ack) -> Result<bool, StoreError> {
    use diesel::dsl::case_when;
    use diesel::sql_types::BigInt;
    let at = Some(db_time(a.at));
    let target = s::table.filter(s::id.eq(a.subscription.to_string())).filter(s::lease_owner.eq(&a.owner));
    let upto = case_when(s::delivered_upto.lt(a.number), a.number.into_sql::<BigInt>()).otherwise(s::delivered_upto);
    let cleared = (
        s::delivered_upto.eq(upto),
        s::attempts.eq(0),
        s::failing_since.eq(None::<NaiveDateTime>),
        s::last_error.eq(None::<String>),
        s::last_attempt_at.eq(at),
        s::last_delivered_at.eq(at),
    );
    let n = if a.release {
        diesel::update(target)
            .set((cleared, s::lease_until.eq(None::<NaiveDateTime>), s::lease_owner.eq(None::<String>)))
            .execute(conn)?
    } else {
        diesel::update(target).set((cleared, s::lease_until.eq(Some(db_time(a.lease_until))))).execute(conn)?
    };
    Ok(n == 1)
}

/// What one fan-out step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Notice events processed.
    pub events: usize,
    /// Subscription events created.
    pub deliveries: usize,
    /// The subscriptions given events (a hint for this replica's delivery).
    pub subscriptions: Vec<Uuid>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Retried at the given time.
    Retry(DateTime<Utc>),
    /// Retries ran out: dead-lettered and the subscription suspended.
    DeadLettered,
    /// The lease was lost meanwhile (another replica has it): nothing recorded.
    LeaseLost,
}

/// A failed push of a subscription's head event.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// The event's number.
    pub number: i64,
    /// Why it failed.
    pub error: &'a str,
    /// When.
    pub at: DateTime<Utc>,
    /// When to try again.
    pub retry_at: DateTime<Utc>,
    /// Give up (dead-letter) once the head event has been failing this long.
    pub give_up_after: TimeDelta,
}

fn db_time(t: DateTime<Utc>) -> NaiveDateTime {
    use chrono::DurationRound;
    let n = t.naive_utc();
    n.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(n)
}

/// Writes the outbox row of a notice change (inside the change's transaction).
pub(crate) fn record_notice_event(
    conn: &mut DbConnection,
    notice_id: &str,
    version: i64,
    kind: ChangeKind,
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    diesel::insert_into(ne::table)
        .values((ne::notice_id.eq(notice_id), ne::version.eq(version), ne::kind.eq(kind.code()), ne::at.eq(at)))
        .execute(conn)?;
    Ok(())
}

/// Records that subscriptions were given notices (with their audit entries, in one transaction).
pub(crate) fn record_received(conn: &mut DbConnection, pairs: &[(String, String)]) -> Result<(), StoreError> {
    let unique: BTreeSet<&(String, String)> = pairs.iter().collect();
    let rows: Vec<_> =
        unique.into_iter().map(|(sub, notice)| (seen::subscription_id.eq(sub), seen::notice_id.eq(notice))).collect();
    // A few multi-row statements, not one per pair; a pair recorded before is left as it is.
    for chunk in rows.chunks(1000) {
        match &mut *conn {
            DbConnection::Pg(c) => {
                diesel::insert_into(seen::table).values(chunk).on_conflict_do_nothing().execute(c)?
            }
            DbConnection::Sqlite(c) => {
                diesel::insert_into(seen::table).values(chunk).on_conflict_do_nothing().execute(c)?
            }
        };
    }
    Ok(())
}

/// The `(subscription, value)` rows of a query over several subscriptions and values that were
/// asked for together (the query matches every subscription with every value).
fn asked_pairs(
    rows: Vec<(String, String)>,
    wanted: &HashSet<(Uuid, String)>,
) -> impl Iterator<Item = (Uuid, String)> + '_ {
    rows.into_iter()
        .filter_map(|(sub, value)| Uuid::parse_str(&sub).ok().map(|id| (id, value)))
        .filter(move |pair| wanted.contains(pair))
}

fn insert_cohort(conn: &mut DbConnection, id: &str, blind: &[String]) -> Result<(), StoreError> {
    let unique: BTreeSet<&String> = blind.iter().collect();
    let rows: Vec<_> = unique.into_iter().map(|b| (sc::subscription_id.eq(id), sc::blind_index.eq(b))).collect();
    crate::db::insert_chunks!(conn, sc::table, rows, 2000);
    Ok(())
}

/// Subscriptions a change may be fanned out to: active ones for new matches; expired and
/// revoked ones only for retractions of notices they were given.
const RECEIVING: [&str; 3] = [status::ACTIVE, status::EXPIRED, status::REVOKED];

impl Store {
    /// Creates a subscription (and its cohort).
    pub fn create_subscription(&self, new: &NewSubscription, now: DateTime<Utc>) -> Result<Subscription, StoreError> {
        let mut conn = self.conn()?;
        let at = db_time(now);
        let id = new.id.to_string();
        write_tx(&mut conn, |conn| {
            diesel::insert_into(s::table)
                .values((
                    s::id.eq(&id),
                    s::owner_ods.eq(&new.owner_ods),
                    s::owner_system.eq(&new.owner_system),
                    s::status.eq(&new.status),
                    s::purpose.eq(&new.purpose),
                    s::role.eq(&new.role),
                    s::context_ref.eq(&new.context_ref),
                    s::criteria.eq(serde_json::to_string(&new.criteria).map_err(corrupt)?),
                    s::payload.eq(new.payload.code()),
                    s::channel.eq(&new.channel),
                    s::method.eq(method_code(new.method)),
                    s::endpoint.eq(&new.endpoint),
                    s::encryption_jwk.eq(&new.encryption_jwk),
                    s::tag.eq(&new.tag),
                    s::expires_at.eq(db_time(new.expires_at)),
                    s::created_at.eq(at),
                    s::updated_at.eq(at),
                    s::approval.eq(new.approval.to_string()),
                    s::topic.eq(new.topic.code()),
                    s::heartbeat_seconds.eq(new.heartbeat_seconds),
                    s::next_attempt_at.eq(at),
                ))
                .execute(conn)?;
            diesel::insert_into(cnt::table)
                .values((cnt::subscription_id.eq(&id), cnt::last_event_number.eq(0i64)))
                .execute(conn)?;
            if let Some(blind) = &new.cohort {
                insert_cohort(conn, &id, blind)?;
            }
            Ok(())
        })?;
        self.subscription(new.id)?.ok_or(StoreError::NotFound)
    }

    /// A subscription.
    pub fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<(Row, i64)> = s::table
            .inner_join(cnt::table)
            .filter(s::id.eq(id.to_string()))
            .select((Row::as_select(), cnt::last_event_number))
            .first(&mut conn)
            .optional()?;
        row.map(|(r, n)| r.decode(n)).transpose()
    }

    /// Members of a subscription's cohort (distinct identifiers).
    pub fn cohort_size(&self, id: Uuid) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(sc::table.filter(sc::subscription_id.eq(id.to_string())).count().get_result(&mut conn)?)
    }

    /// Subscriptions, newest first: an organisation's own, or (for IG) everyone's; optionally
    /// only those in one status.
    pub fn subscriptions(
        &self,
        owner: Option<&str>,
        status_is: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Subscription>, StoreError> {
        let mut conn = self.conn()?;
        let mut q = s::table
            .inner_join(cnt::table)
            .select((Row::as_select(), cnt::last_event_number))
            .order((s::created_at.desc(), s::id.desc()))
            .limit(limit)
            .into_boxed::<<DbConnection as Connection>::Backend>();
        if let Some(o) = owner {
            q = q.filter(s::owner_ods.eq(o.to_owned()));
        }
        if let Some(st) = status_is {
            q = q.filter(s::status.eq(st.to_owned()));
        }
        q.load::<(Row, i64)>(&mut conn)?.into_iter().map(|(r, n)| r.decode(n)).collect()
    }

    /// Replaces a subscription's settings and cohort (its owner's `PUT`), keeping its events and
    /// delivery state. Refused once deleted, rejected or revoked.
    pub fn replace_subscription(&self, new: &NewSubscription, now: DateTime<Utc>) -> Result<Subscription, StoreError> {
        let mut conn = self.conn()?;
        let id = new.id.to_string();
        write_tx(&mut conn, |conn| {
            let current: Option<String> = s::table.find(&id).select(s::status).first(conn).optional()?;
            match current.as_deref() {
                None => return Err(StoreError::NotFound),
                Some(st) if ![status::ACTIVE, status::PENDING, status::EXPIRED].contains(&st) => {
                    return Err(StoreError::SubscriptionClosed(st.to_owned()))
                }
                Some(_) => {}
            }
            diesel::update(s::table.find(&id))
                .set((
                    s::status.eq(&new.status),
                    s::purpose.eq(&new.purpose),
                    s::role.eq(&new.role),
                    s::context_ref.eq(&new.context_ref),
                    s::criteria.eq(serde_json::to_string(&new.criteria).map_err(corrupt)?),
                    s::payload.eq(new.payload.code()),
                    s::method.eq(method_code(new.method)),
                    s::endpoint.eq(&new.endpoint),
                    s::encryption_jwk.eq(&new.encryption_jwk),
                    s::tag.eq(&new.tag),
                    s::expires_at.eq(db_time(new.expires_at)),
                    s::updated_at.eq(db_time(now)),
                    s::approval.eq(new.approval.to_string()),
                    s::topic.eq(new.topic.code()),
                    s::heartbeat_seconds.eq(new.heartbeat_seconds),
                ))
                .execute(conn)?;
            diesel::delete(sc::table.filter(sc::subscription_id.eq(&id))).execute(conn)?;
            if let Some(blind) = &new.cohort {
                insert_cohort(conn, &id, blind)?;
            }
            Ok(())
        })?;
        self.subscription(new.id)?.ok_or(StoreError::NotFound)
    }

    /// Adds and removes cohort members (by blind index); returns the cohort's new size.
    pub fn change_cohort(&self, id: Uuid, add: &[String], remove: &[String]) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        let id = id.to_string();
        write_tx(&mut conn, |conn| {
            for chunk in remove.chunks(2000) {
                diesel::delete(sc::table.filter(sc::subscription_id.eq(&id)).filter(sc::blind_index.eq_any(chunk)))
                    .execute(conn)?;
            }
            let existing: HashSet<String> = sc::table
                .filter(sc::subscription_id.eq(&id))
                .select(sc::blind_index)
                .load::<String>(conn)?
                .into_iter()
                .collect();
            let fresh: Vec<String> = add.iter().filter(|b| !existing.contains(*b)).cloned().collect();
            insert_cohort(conn, &id, &fresh)?;
            Ok(sc::table.filter(sc::subscription_id.eq(&id)).count().get_result(conn)?)
        })
    }

    /// Moves a subscription from one of `from` to `to`, recording `approval`. Returns the
    /// subscription if it moved, `None` if it was not in one of `from`.
    pub fn set_subscription_status(
        &self,
        id: Uuid,
        from: &[&str],
        to: &str,
        approval: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<Option<Subscription>, StoreError> {
        let mut conn = self.conn()?;
        let sid = id.to_string();
        let moved = write_tx(&mut conn, |conn| {
            let target = s::table.filter(s::id.eq(&sid)).filter(s::status.eq_any(from));
            let n = match approval {
                Some(a) => diesel::update(target)
                    .set((s::status.eq(to), s::approval.eq(a.to_string()), s::updated_at.eq(db_time(now))))
                    .execute(conn)?,
                None => diesel::update(target).set((s::status.eq(to), s::updated_at.eq(db_time(now)))).execute(conn)?,
            };
            if n == 1 && to == status::DELETED {
                // Nothing more is sent, so the cohort's blind indexes are no longer needed.
                diesel::delete(sc::table.filter(sc::subscription_id.eq(&sid))).execute(conn)?;
            }
            Ok(n == 1)
        })?;
        if moved {
            self.subscription(id)
        } else {
            Ok(None)
        }
    }

    /// Marks active subscriptions past their expiry as expired; returns how many.
    pub fn expire_subscriptions(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        Ok(diesel::update(s::table.filter(s::status.eq(status::ACTIVE)).filter(s::expires_at.le(db_time(now))))
            .set((s::status.eq(status::EXPIRED), s::updated_at.eq(db_time(now))))
            .execute(&mut conn)?)
    }

    /// Fans out up to `max` notice changes to the subscriptions they concern, numbering them per
    /// subscription. One replica at a time (a PostgreSQL advisory lock; SQLite's single writer).
    pub fn fan_out(&self, max: i64, now: DateTime<Utc>) -> Result<FanOut, StoreError> {
        let mut conn = self.conn()?;
        // A plain read first: an idle poll must not take SQLite's write lock.
        let any: Option<i64> =
            ne::table.filter(ne::fanned_out_at.is_null()).select(ne::seq).first(&mut conn).optional()?;
        if any.is_none() {
            return Ok(FanOut::default());
        }
        write_tx(&mut conn, |conn| {
            if let DbConnection::Pg(_) = conn {
                diesel::sql_query("SELECT pg_advisory_xact_lock(7215002)").execute(conn)?;
            }
            let pending: Vec<(i64, String, i64, String, NaiveDateTime)> = ne::table
                .filter(ne::fanned_out_at.is_null())
                .order(ne::seq.asc())
                .limit(max)
                .select((ne::seq, ne::notice_id, ne::version, ne::kind, ne::at))
                .load(conn)?;
            if pending.is_empty() {
                return Ok(FanOut::default());
            }
            let subs: Vec<(String, String, String, i64)> = s::table
                .inner_join(cnt::table)
                .filter(s::status.eq_any(RECEIVING))
                .filter(s::topic.eq(Topic::Notices.code()))
                .select((s::id, s::status, s::criteria, cnt::last_event_number))
                .load(conn)?;
            let mut criteria: HashMap<String, (bool, Criteria)> = HashMap::new();
            let mut numbers: HashMap<String, i64> = HashMap::new();
            for (id, st, c, last) in subs {
                let parsed: Criteria = serde_json::from_str(&c).map_err(corrupt)?;
                criteria.insert(id.clone(), (st == status::ACTIVE, parsed));
                numbers.insert(id, last);
            }
            let mut rows = Vec::new();
            let mut touched = BTreeSet::new();
            // Recipients given events in this batch (not yet in the table): a notice created and
            // withdrawn in one batch must still reach whoever got its creation.
            let mut batch_prior: HashMap<String, HashSet<String>> = HashMap::new();
            for (_, notice_id, version, kind, at) in &pending {
                let Some(notice) = self.version_in(conn, notice_id, *version)? else { continue };
                let retraction = !matches!(
                    ChangeKind::from_code(kind),
                    Some(ChangeKind::Created | ChangeKind::Amended | ChangeKind::Reviewed)
                );
                let mut prior: HashSet<String> = se::table
                    .filter(se::notice_id.eq(notice_id))
                    .select(se::subscription_id)
                    .distinct()
                    .load::<String>(conn)?
                    .into_iter()
                    .collect();
                prior.extend(batch_prior.get(notice_id).into_iter().flatten().cloned());
                let in_cohort: HashSet<String> = if retraction {
                    HashSet::new()
                } else {
                    let blind: Vec<String> = notice
                        .content
                        .subject
                        .match_keys()
                        .iter()
                        .map(|(k, v)| self.vault.blind_index(*k, v))
                        .collect();
                    sc::table
                        .filter(sc::blind_index.eq_any(&blind))
                        .select(sc::subscription_id)
                        .distinct()
                        .load::<String>(conn)?
                        .into_iter()
                        .collect()
                };
                for (sub, (active, c)) in &criteria {
                    let matched = !retraction && *active && c.matches(&notice.content, in_cohort.contains(sub));
                    // Later changes reach whoever had earlier ones, whatever the criteria say now.
                    if !matched && !prior.contains(sub) {
                        continue;
                    }
                    let Some(n) = numbers.get_mut(sub) else { continue };
                    *n += 1;
                    touched.insert(sub.clone());
                    batch_prior.entry(notice_id.clone()).or_default().insert(sub.clone());
                    rows.push((
                        se::subscription_id.eq(sub.clone()),
                        se::event_number.eq(*n),
                        se::event_id.eq(Uuid::new_v4().to_string()),
                        se::notice_id.eq(notice_id.clone()),
                        se::notice_version.eq(*version),
                        se::kind.eq(kind.clone()),
                        se::occurred_at.eq(*at),
                        se::matched.eq(matched),
                        se::audit_id.eq(None::<String>),
                        se::created_at.eq(db_time(now)),
                    ));
                }
            }
            let deliveries = rows.len();
            crate::db::insert_chunks!(conn, se::table, rows, 500);
            let subscriptions = touched.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect();
            let updates: Vec<(String, i64)> =
                touched.into_iter().filter_map(|id| numbers.get(&id).map(|n| (id, *n))).collect();
            for chunk in updates.chunks(500) {
                // Ids are UUIDs made here and numbers are integers, never input: inlined.
                let values: Vec<String> = chunk.iter().map(|(id, n)| format!("('{id}', {n})")).collect();
                diesel::sql_query(format!(
                    "UPDATE subscription_counters SET last_event_number = v.column2 FROM (VALUES {}) AS v \
                     WHERE subscription_counters.subscription_id = v.column1",
                    values.join(", ")
                ))
                .execute(conn)?;
            }
            let seqs: Vec<i64> = pending.iter().map(|p| p.0).collect();
            diesel::update(ne::table.filter(ne::seq.eq_any(&seqs)))
                .set(ne::fanned_out_at.eq(db_time(now)))
                .execute(conn)?;
            Ok(FanOut { events: pending.len(), deliveries, subscriptions })
        })
    }

    /// Fans the sealed audit log out to `disclosures` subscriptions, in leaf order from a
    /// persisted cursor: for each sealed entry deciding on a notice, one `disclosed` event per
    /// such notice to every active `disclosures` subscription of its publisher. Returns the events
    /// created. One replica at a time (a PostgreSQL advisory lock; SQLite's single writer).
    pub fn fan_out_disclosures(&self, max: i64, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        // A plain read first: an idle poll must not take SQLite's write lock.
        let after: i64 = dfs::table.find(1).select(dfs::after_leaf).first(&mut conn)?;
        // Ordered, so PostgreSQL walks the leaf index from `after` rather than scanning the
        // table from its start (282 ms against 0.1 ms on a log of a million entries).
        let newer: Option<i64> = ae::table
            .filter(ae::leaf_index.gt(after))
            .order(ae::leaf_index.asc())
            .select(ae::leaf_index.assume_not_null())
            .first(&mut conn)
            .optional()?;
        if newer.is_none() {
            return Ok(0);
        }
        write_tx(&mut conn, |conn| {
            if let DbConnection::Pg(_) = conn {
                diesel::sql_query("SELECT pg_advisory_xact_lock(7215003)").execute(conn)?;
            }
            let after: i64 = dfs::table.find(1).select(dfs::after_leaf).first(conn)?;
            let subs: Vec<(String, String, i64)> = s::table
                .inner_join(cnt::table)
                .filter(s::status.eq(status::ACTIVE))
                .filter(s::topic.eq(Topic::Disclosures.code()))
                .select((s::id, s::owner_ods, cnt::last_event_number))
                .load(conn)?;
            if subs.is_empty() {
                // Nobody to tell: move past what is sealed without reading it, so this write
                // transaction (which the audit writer waits behind on SQLite) stays short.
                let last: Option<i64> = ae::table.select(diesel::dsl::max(ae::leaf_index)).first(conn)?;
                if let Some(last) = last.filter(|l| *l > after) {
                    diesel::update(dfs::table.find(1)).set(dfs::after_leaf.eq(last)).execute(conn)?;
                }
                return Ok(0);
            }
            let entries: Vec<(String, Option<i64>, NaiveDateTime, String)> = ae::table
                .filter(ae::leaf_index.gt(after))
                .order(ae::leaf_index.asc())
                .limit(max)
                .select((ae::id, ae::leaf_index, ae::at, ae::notices))
                .load(conn)?;
            let Some(last) = entries.last().and_then(|e| e.1) else { return Ok(0) };
            let mut rows = Vec::new();
            // Each entry's decisions (an entry pruned under retention has none).
            let decided: Vec<(&String, NaiveDateTime, Vec<crate::audit::AuditedNotice>)> = entries
                .iter()
                .map(|(id, _, at, notices)| Ok((id, *at, serde_json::from_str(notices).map_err(corrupt)?)))
                .collect::<Result<_, StoreError>>()?;
            let ids: BTreeSet<String> = decided.iter().flat_map(|d| d.2.iter().map(|n| n.id.clone())).collect();
            let ids: Vec<String> = ids.into_iter().collect();
            let mut publisher_of: HashMap<String, String> = HashMap::new();
            for chunk in ids.chunks(1000) {
                let found: Vec<(String, String)> =
                    nt::table.filter(nt::id.eq_any(chunk)).select((nt::id, nt::publisher_ods)).load(conn)?;
                publisher_of.extend(found);
            }
            let mut numbers: HashMap<String, i64> = subs.iter().map(|(id, _, n)| (id.clone(), *n)).collect();
            for (audit_id, at, notices) in &decided {
                let mut seen_notice = BTreeSet::new();
                for n in notices.iter().filter(|n| seen_notice.insert(n.id.clone())) {
                    let Some(publisher) = publisher_of.get(&n.id) else { continue };
                    for (sub, _, _) in subs.iter().filter(|(_, owner, _)| owner == publisher) {
                        let Some(number) = numbers.get_mut(sub) else { continue };
                        *number += 1;
                        rows.push((
                            se::subscription_id.eq(sub.clone()),
                            se::event_number.eq(*number),
                            se::event_id.eq(Uuid::new_v4().to_string()),
                            se::notice_id.eq(n.id.clone()),
                            se::notice_version.eq(n.version),
                            se::kind.eq("disclosed"),
                            se::occurred_at.eq(*at),
                            se::matched.eq(true),
                            se::audit_id.eq(Some((*audit_id).clone())),
                            se::created_at.eq(db_time(now)),
                        ));
                    }
                }
            }
            let created = rows.len();
            crate::db::insert_chunks!(conn, se::table, rows, 500);
            let touched: Vec<(String, i64)> = subs
                .iter()
                .filter_map(|(id, _, before)| numbers.get(id).filter(|n| *n != before).map(|n| (id.clone(), *n)))
                .collect();
            for (id, n) in &touched {
                diesel::update(cnt::table.find(id)).set(cnt::last_event_number.eq(n)).execute(conn)?;
            }
            diesel::update(dfs::table.find(1)).set(dfs::after_leaf.eq(last)).execute(conn)?;
            Ok(created)
        })
    }

    /// Leases up to `limit` webhook subscriptions with events due, for `owner` until
    /// `lease_until`. Replica-safe: `FOR UPDATE SKIP LOCKED` on PostgreSQL.
    pub fn claim_due(
        &self,
        owner: &str,
        limit: i64,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.claim(owner, limit, None, now, lease_until)
    }

    /// [`Store::claim_due`] among these subscriptions only (those a fan-out just gave events),
    /// without ordering every due subscription to pick the oldest. Those not due, or leased
    /// already, are left out.
    pub fn claim_due_among(
        &self,
        owner: &str,
        ids: &[Uuid],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Subscription>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.claim(owner, i64::try_from(ids.len()).unwrap_or(i64::MAX), Some(ids), now, lease_until)
    }

    fn claim(
        &self,
        owner: &str,
        limit: i64,
        among: Option<&[Uuid]>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Subscription>, StoreError> {
        use diesel::sql_types::{BigInt, Text, Timestamp};
        #[derive(QueryableByName)]
        struct Claimed {
            #[diesel(sql_type = Text)]
            id: String,
        }
        let mut conn = self.conn()?;
        let lock = match &*conn {
            DbConnection::Pg(_) => " FOR UPDATE OF s SKIP LOCKED",
            DbConnection::Sqlite(_) => {
                // Look before taking SQLite's one write lock (PostgreSQL's claim writes nothing
                // when nothing is due, and looking first would double the cost of each claim).
                let due: Option<String> = s::table
                    .inner_join(cnt::table)
                    .filter(s::method.eq("webhook"))
                    .filter(s::delivery_state.eq(delivery_state::ACTIVE))
                    .filter(s::delivered_upto.lt(cnt::last_event_number))
                    .filter(s::next_attempt_at.le(db_time(now)))
                    .select(s::id)
                    .first(&mut conn)
                    .optional()?;
                if due.is_none() && among.is_none() {
                    return Ok(Vec::new());
                }
                ""
            }
        };
        // Ids are parsed UUIDs, never raw input: inlined. Among named subscriptions the order
        // does not matter.
        let (among, order) = among.map_or_else(
            || (String::new(), "ORDER BY s.next_attempt_at "),
            |ids| {
                let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
                (format!("s.id IN ({}) AND ", list.join(", ")), "")
            },
        );
        let sql = format!(
            "UPDATE subscriptions SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT s.id FROM subscriptions s JOIN subscription_counters c ON c.subscription_id = s.id \
               WHERE {among}s.method = 'webhook' AND s.status IN ('active', 'expired', 'revoked') \
               AND s.delivery_state = 'active' AND s.delivered_upto < c.last_event_number AND s.next_attempt_at <= $3 \
               AND (s.lease_until IS NULL OR s.lease_until < $3) {order}LIMIT $4{lock}) \
             RETURNING id"
        );
        let claimed: Vec<Claimed> = write_tx(&mut conn, |conn| {
            Ok(diesel::sql_query(&sql)
                .bind::<Text, _>(owner)
                .bind::<Timestamp, _>(db_time(lease_until))
                .bind::<Timestamp, _>(db_time(now))
                .bind::<BigInt, _>(limit)
                .load(conn)?)
        })?;
        let ids: Vec<String> = claimed.into_iter().map(|c| c.id).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(Row, i64)> = s::table
            .inner_join(cnt::table)
            .filter(s::id.eq_any(&ids))
            .select((Row::as_select(), cnt::last_event_number))
            .load(&mut conn)?;
        rows.into_iter().map(|(r, n)| r.decode(n)).collect()
    }

    /// A subscription's events after `after`, oldest first, at most `limit`.
    pub fn events_after(&self, id: Uuid, after: i64, limit: i64) -> Result<Vec<SubscriptionEvent>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<EventRow> = se::table
            .filter(se::subscription_id.eq(id.to_string()))
            .filter(se::event_number.gt(after))
            .order(se::event_number.asc())
            .limit(limit)
            .select(EventRow::as_select())
            .load(&mut conn)?;
        rows.into_iter().map(EventRow::decode).collect()
    }

    /// The next events of several subscriptions in one query, each as [`Store::events_after`]
    /// from its acknowledged cursor (`delivered_upto`) gives them: at most `limit` each, oldest
    /// first. (A subscription's events are numbered without gaps, so a range of numbers past
    /// the cursor is a page of events, found through the primary key.)
    pub fn next_events_many(
        &self,
        ids: &[Uuid],
        limit: i64,
    ) -> Result<HashMap<Uuid, Vec<SubscriptionEvent>>, StoreError> {
        let mut out: HashMap<Uuid, Vec<SubscriptionEvent>> = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let mut conn = self.conn()?;
        let rows: Vec<EventRow> = se::table
            .inner_join(s::table.on(s::id.eq(se::subscription_id)))
            .filter(s::id.eq_any(&ids))
            .filter(se::event_number.gt(s::delivered_upto))
            .filter(se::event_number.le(s::delivered_upto + limit))
            .order((se::subscription_id.asc(), se::event_number.asc()))
            .select(EventRow::as_select())
            .load(&mut conn)?;
        for row in rows {
            let event = row.decode()?;
            out.entry(event.subscription_id).or_default().push(event);
        }
        Ok(out)
    }

    /// Which of their notices each subscription has been given, in one query (as
    /// [`Store::received`] for each).
    pub fn received_many(&self, asked: &[(Uuid, Vec<String>)]) -> Result<HashMap<Uuid, HashSet<String>>, StoreError> {
        let mut out: HashMap<Uuid, HashSet<String>> = asked.iter().map(|(id, _)| (*id, HashSet::new())).collect();
        let subs: BTreeSet<String> =
            asked.iter().filter(|(_, n)| !n.is_empty()).map(|(id, _)| id.to_string()).collect();
        let notices: BTreeSet<&String> = asked.iter().flat_map(|(_, n)| n).collect();
        if subs.is_empty() {
            return Ok(out);
        }
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = seen::table
            .filter(seen::subscription_id.eq_any(&subs))
            .filter(seen::notice_id.eq_any(&notices))
            .select((seen::subscription_id, seen::notice_id))
            .load(&mut conn)?;
        let wanted: HashSet<(Uuid, String)> =
            asked.iter().flat_map(|(id, n)| n.iter().map(move |n| (*id, n.clone()))).collect();
        for (sub, notice) in asked_pairs(rows, &wanted) {
            out.entry(sub).or_default().insert(notice);
        }
        Ok(out)
    }

    /// Which `(subscription, blind index)` pairs are in the subscription's cohort, in one query.
    pub fn in_cohorts(&self, asked: &[(Uuid, String)]) -> Result<HashSet<(Uuid, String)>, StoreError> {
        if asked.is_empty() {
            return Ok(HashSet::new());
        }
        let subs: BTreeSet<String> = asked.iter().map(|(id, _)| id.to_string()).collect();
        let blind: BTreeSet<&String> = asked.iter().map(|(_, b)| b).collect();
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = sc::table
            .filter(sc::subscription_id.eq_any(&subs))
            .filter(sc::blind_index.eq_any(&blind))
            .select((sc::subscription_id, sc::blind_index))
            .load(&mut conn)?;
        let wanted: HashSet<(Uuid, String)> = asked.iter().cloned().collect();
        Ok(asked_pairs(rows, &wanted).collect())
    }

    /// Records that the receiver acknowledged an event (group-committed with other
    /// acknowledgements). False if the lease was lost: another replica now delivers this
    /// subscription.
    pub fn ack_delivery(&self, ack: Ack) -> Result<bool, StoreError> {
        self.ack_writer.submit(ack)
    }

    /// Records a failed attempt at event `number`: schedules the retry at `retry_at`, or once
    /// the head event has failed for longer than the policy allows, dead-letters it and suspends
    /// the subscription. Releases the lease either way.
    pub fn fail_delivery(&self, id: Uuid, owner: &str, failed: FailedAttempt<'_>) -> Result<Failure, StoreError> {
        let FailedAttempt { number, error, at: now, retry_at, give_up_after } = failed;
        let mut conn = self.conn()?;
        let sid = id.to_string();
        let error: String = error.chars().take(500).collect();
        write_tx(&mut conn, |conn| {
            let row: Option<(i32, Option<NaiveDateTime>)> = s::table
                .filter(s::id.eq(&sid))
                .filter(s::lease_owner.eq(owner))
                .select((s::attempts, s::failing_since))
                .first(conn)
                .optional()?;
            let Some((attempts, failing_since)) = row else { return Ok(Failure::LeaseLost) };
            let since = failing_since.map_or(now, |t| t.and_utc());
            let attempts = attempts.saturating_add(1);
            let outcome = if now - since >= give_up_after {
                diesel::insert_into(dl::table)
                    .values((
                        dl::subscription_id.eq(&sid),
                        dl::event_number.eq(number),
                        dl::dead_at.eq(db_time(now)),
                        dl::attempts.eq(attempts),
                        dl::last_error.eq(&error),
                    ))
                    .execute(conn)?;
                Failure::DeadLettered
            } else {
                Failure::Retry(retry_at)
            };
            let state = match outcome {
                Failure::DeadLettered => delivery_state::SUSPENDED,
                _ => delivery_state::ACTIVE,
            };
            diesel::update(s::table.filter(s::id.eq(&sid)))
                .set((
                    s::attempts.eq(attempts),
                    s::failing_since.eq(Some(db_time(since))),
                    s::last_error.eq(Some(&error)),
                    s::last_attempt_at.eq(Some(db_time(now))),
                    s::next_attempt_at.eq(db_time(retry_at)),
                    s::delivery_state.eq(state),
                    s::lease_owner.eq(None::<String>),
                    s::lease_until.eq(None::<NaiveDateTime>),
                ))
                .execute(conn)?;
            Ok(outcome)
        })
    }

    /// Gives a lease back (nothing more due, or a batch done).
    pub fn release_lease(&self, id: Uuid, owner: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::update(s::table.filter(s::id.eq(id.to_string())).filter(s::lease_owner.eq(owner)))
            .set((s::lease_owner.eq(None::<String>), s::lease_until.eq(None::<NaiveDateTime>)))
            .execute(&mut conn)?;
        Ok(())
    }

    /// Resumes a suspended subscription from its first undelivered event, or replays from
    /// `from_event`. Returns false if `from_event` is beyond the last event.
    pub fn redeliver(&self, id: Uuid, from_event: Option<i64>, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let sid = id.to_string();
        write_tx(&mut conn, |conn| {
            let last: i64 = cnt::table.find(&sid).select(cnt::last_event_number).first(conn)?;
            if from_event.is_some_and(|f| f > last) {
                return Ok(false);
            }
            diesel::update(dl::table.filter(dl::subscription_id.eq(&sid)).filter(dl::resolved_at.is_null()))
                .set(dl::resolved_at.eq(db_time(now)))
                .execute(conn)?;
            // Clearing the lease stops a worker mid-batch: its acknowledgements no longer count.
            let base = diesel::update(s::table.find(&sid));
            let common = (
                s::delivery_state.eq(delivery_state::ACTIVE),
                s::attempts.eq(0),
                s::failing_since.eq(None::<NaiveDateTime>),
                s::next_attempt_at.eq(db_time(now)),
                s::lease_owner.eq(None::<String>),
                s::lease_until.eq(None::<NaiveDateTime>),
            );
            match from_event {
                Some(f) => base.set((common, s::delivered_upto.eq(f - 1))).execute(conn)?,
                None => base.set(common).execute(conn)?,
            };
            Ok(true)
        })
    }

    /// FHIR rest-hook subscriptions owed a heartbeat: active, caught up, and quiet for their
    /// heartbeat period.
    pub fn due_heartbeats(&self, now: DateTime<Utc>) -> Result<Vec<Subscription>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(Row, i64)> = s::table
            .inner_join(cnt::table)
            .filter(s::heartbeat_seconds.is_not_null())
            .filter(s::method.eq("webhook"))
            .filter(s::status.eq(status::ACTIVE))
            .filter(s::delivery_state.eq(delivery_state::ACTIVE))
            .filter(s::delivered_upto.ge(cnt::last_event_number))
            .select((Row::as_select(), cnt::last_event_number))
            .load(&mut conn)?;
        let subs = rows.into_iter().map(|(r, n)| r.decode(n)).collect::<Result<Vec<_>, _>>()?;
        Ok(subs
            .into_iter()
            .filter(|sub| {
                let quiet_since = [Some(sub.created_at), sub.delivery.last_delivered_at, sub.last_heartbeat_at]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or(sub.created_at);
                sub.heartbeat_seconds.is_some_and(|h| now - quiet_since >= TimeDelta::seconds(i64::from(h)))
            })
            .collect())
    }

    /// Takes the right to send one heartbeat (so replicas do not both send it): true if the
    /// last heartbeat is still the one this replica saw.
    pub fn claim_heartbeat(
        &self,
        id: Uuid,
        seen: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let target = s::table.filter(s::id.eq(id.to_string()));
        let n = match seen {
            Some(t) => diesel::update(target.filter(s::last_heartbeat_at.eq(db_time(t))))
                .set(s::last_heartbeat_at.eq(Some(db_time(now))))
                .execute(&mut conn)?,
            None => diesel::update(target.filter(s::last_heartbeat_at.is_null()))
                .set(s::last_heartbeat_at.eq(Some(db_time(now))))
                .execute(&mut conn)?,
        };
        Ok(n == 1)
    }

    /// A subscription's dead letters, newest first.
    pub fn dead_letters(&self, id: Uuid) -> Result<Vec<DeadLetter>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(i64, NaiveDateTime, i32, String, Option<NaiveDateTime>)> = dl::table
            .filter(dl::subscription_id.eq(id.to_string()))
            .order(dl::dead_at.desc())
            .select((dl::event_number, dl::dead_at, dl::attempts, dl::last_error, dl::resolved_at))
            .load(&mut conn)?;
        Ok(rows
            .into_iter()
            .map(|(event_number, dead_at, attempts, last_error, resolved)| DeadLetter {
                event_number,
                dead_at: dead_at.and_utc(),
                attempts,
                last_error,
                resolved_at: resolved.map(|t| t.and_utc()),
            })
            .collect())
    }

    /// Which of `notices` the subscription has been given.
    pub fn received(&self, id: Uuid, notices: &[String]) -> Result<HashSet<String>, StoreError> {
        if notices.is_empty() {
            return Ok(HashSet::new());
        }
        let mut conn = self.conn()?;
        Ok(seen::table
            .filter(seen::subscription_id.eq(id.to_string()))
            .filter(seen::notice_id.eq_any(notices))
            .select(seen::notice_id)
            .load::<String>(&mut conn)?
            .into_iter()
            .collect())
    }

    /// Notice changes not yet fanned out (for readiness and metrics).
    pub fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(ne::table.filter(ne::fanned_out_at.is_null()).count().get_result(&mut conn)?)
    }
}

fn method_code(m: DeliveryMethod) -> &'static str {
    match m {
        DeliveryMethod::Webhook => "webhook",
        DeliveryMethod::Feed => "feed",
    }
}
