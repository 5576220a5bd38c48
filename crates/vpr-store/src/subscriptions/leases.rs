//! Webhook delivery under leases: claiming due subscriptions, failures, retries and dead
//! letters, redelivery, and heartbeats.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use diesel::prelude::*;
use uuid::Uuid;
use vpr_domain::subscription::SubscriptionStatus;

use super::model::{db_time, delivery_state, DeadLetter, Row, Subscription};
use crate::db::{write_tx, DbConnection};
use crate::schema::{subscription_counters as cnt, subscription_dead_letters as dl, subscriptions as s};
use crate::{Missing, Store, StoreError};

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

impl Store {
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
        // Status codes are constants, never input: inlined.
        let receiving: Vec<String> =
            SubscriptionStatus::RECEIVING.iter().map(|st| format!("'{}'", st.code())).collect();
        let receiving = receiving.join(", ");
        let sql = format!(
            "UPDATE subscriptions SET lease_owner = $1, lease_until = $2 WHERE id IN (\
               SELECT s.id FROM subscriptions s JOIN subscription_counters c ON c.subscription_id = s.id \
               WHERE {among}s.method = 'webhook' AND s.status IN ({receiving}) \
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
            let last: Option<i64> = cnt::table.find(&sid).select(cnt::last_event_number).first(conn).optional()?;
            let last = last.ok_or(StoreError::NotFound(Missing::Subscription))?;
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
            .filter(s::status.eq(SubscriptionStatus::Active.code()))
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
}
