//! Creating, reading, replacing and closing subscriptions, and their cohorts.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;
use uuid::Uuid;
use vpr_domain::subscription::SubscriptionStatus;

use super::model::{corrupt, db_time, method_code, NewSubscription, Row, Subscription};
use crate::db::{DbConnection, Tx};
use crate::schema::{subscription_cohort as sc, subscription_counters as cnt, subscriptions as s};
use crate::{Missing, Store, StoreError};

fn insert_cohort(conn: &mut DbConnection, id: &str, blind: &[String]) -> Result<(), StoreError> {
    let unique: BTreeSet<&String> = blind.iter().collect();
    let rows: Vec<_> = unique.into_iter().map(|b| (sc::subscription_id.eq(id), sc::blind_index.eq(b))).collect();
    crate::db::insert_chunks!(conn, sc::table, rows, 2000);
    Ok(())
}

fn subscription_in(conn: &mut DbConnection, id: &str) -> Result<Option<Subscription>, StoreError> {
    let row: Option<(Row, i64)> = s::table
        .inner_join(cnt::table)
        .filter(s::id.eq(id))
        .select((Row::as_select(), cnt::last_event_number))
        .first(conn)
        .optional()?;
    row.map(|(r, n)| r.decode(n)).transpose()
}

impl Store {
    /// A subscription.
    pub fn subscription(&self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        subscription_in(&mut *self.conn()?, &id.to_string())
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
        status_is: Option<SubscriptionStatus>,
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
            q = q.filter(s::status.eq(st.code()));
        }
        q.load::<(Row, i64)>(&mut conn)?.into_iter().map(|(r, n)| r.decode(n)).collect()
    }

    /// For a subscription held at a peer broker: event `number` of the peer's was passed on and
    /// acknowledged (its high-water mark, so a replayed push is not passed on again).
    pub fn passed_on(&self, id: Uuid, number: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::update(s::table.filter(s::id.eq(id.to_string())).filter(s::delivered_upto.lt(number)))
            .set((s::delivered_upto.eq(number), s::last_delivered_at.eq(db_time(now))))
            .execute(&mut conn)?;
        Ok(())
    }

    /// For a subscription held at a peer broker whose events are replayed from `from_event`:
    /// lowers the high-water mark so they are passed on again.
    pub fn replay_from(&self, id: Uuid, from_event: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mark = (from_event - 1).max(0);
        diesel::update(s::table.filter(s::id.eq(id.to_string())).filter(s::delivered_upto.gt(mark)))
            .set(s::delivered_upto.eq(mark))
            .execute(&mut conn)?;
        Ok(())
    }

    /// Marks active subscriptions past their expiry as expired; returns how many.
    pub fn expire_subscriptions(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let due =
            s::table.filter(s::status.eq(SubscriptionStatus::Active.code())).filter(s::expires_at.le(db_time(now)));
        Ok(diesel::update(due)
            .set((s::status.eq(SubscriptionStatus::Expired.code()), s::updated_at.eq(db_time(now))))
            .execute(&mut conn)?)
    }
}

impl Tx<'_> {
    /// A subscription, as this transaction sees it.
    pub fn subscription(&mut self, id: Uuid) -> Result<Option<Subscription>, StoreError> {
        subscription_in(self.conn, &id.to_string())
    }

    /// Creates a subscription (and its cohort).
    pub fn create_subscription(
        &mut self,
        new: &NewSubscription,
        now: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        let at = db_time(now);
        let id = new.id.to_string();
        diesel::insert_into(s::table)
            .values((
                s::id.eq(&id),
                s::owner_ods.eq(&new.owner_ods),
                s::owner_system.eq(&new.owner_system),
                s::status.eq(new.status.code()),
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
                s::federation.eq(new.federation.as_ref().map(serde_json::to_string).transpose().map_err(corrupt)?),
            ))
            .execute(self.conn)?;
        diesel::insert_into(cnt::table)
            .values((cnt::subscription_id.eq(&id), cnt::last_event_number.eq(0i64)))
            .execute(self.conn)?;
        if let Some(blind) = &new.cohort {
            insert_cohort(self.conn, &id, blind)?;
        }
        subscription_in(self.conn, &id)?.ok_or(StoreError::NotFound(Missing::Subscription))
    }

    /// Replaces a subscription's settings and cohort (its owner's `PUT`), keeping its events and
    /// delivery state. Refused unless its status is [`SubscriptionStatus::replaceable`].
    pub fn replace_subscription(
        &mut self,
        new: &NewSubscription,
        now: DateTime<Utc>,
    ) -> Result<Subscription, StoreError> {
        let id = new.id.to_string();
        self.replaceable(&id)?;
        diesel::update(s::table.find(&id))
            .set((
                s::status.eq(new.status.code()),
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
            .execute(self.conn)?;
        diesel::delete(sc::table.filter(sc::subscription_id.eq(&id))).execute(self.conn)?;
        if let Some(blind) = &new.cohort {
            insert_cohort(self.conn, &id, blind)?;
        }
        subscription_in(self.conn, &id)?.ok_or(StoreError::NotFound(Missing::Subscription))
    }

    /// The subscription's status, if its owner may still change it; otherwise why not.
    fn replaceable(&mut self, id: &str) -> Result<SubscriptionStatus, StoreError> {
        let current: Option<String> = s::table.find(id).select(s::status).first(self.conn).optional()?;
        let current = current.ok_or(StoreError::NotFound(Missing::Subscription))?;
        let status = SubscriptionStatus::from_code(&current)
            .ok_or_else(|| corrupt(format!("unknown subscription status `{current}`")))?;
        if status.replaceable() {
            Ok(status)
        } else {
            Err(StoreError::SubscriptionClosed(status))
        }
    }

    /// Adds and removes cohort members (by blind index); returns the cohort's new size. Refused
    /// unless the subscription's status is [`SubscriptionStatus::replaceable`].
    pub fn change_cohort(&mut self, id: Uuid, add: &[String], remove: &[String]) -> Result<i64, StoreError> {
        let id = id.to_string();
        self.replaceable(&id)?;
        for chunk in remove.chunks(2000) {
            diesel::delete(sc::table.filter(sc::subscription_id.eq(&id)).filter(sc::blind_index.eq_any(chunk)))
                .execute(self.conn)?;
        }
        let existing: HashSet<String> = sc::table
            .filter(sc::subscription_id.eq(&id))
            .select(sc::blind_index)
            .load::<String>(self.conn)?
            .into_iter()
            .collect();
        let fresh: Vec<String> = add.iter().filter(|b| !existing.contains(*b)).cloned().collect();
        insert_cohort(self.conn, &id, &fresh)?;
        Ok(sc::table.filter(sc::subscription_id.eq(&id)).count().get_result(self.conn)?)
    }

    /// Moves a subscription from one of `from` to `to` (IG's approval, rejection or
    /// revocation), recording `approval`. Returns the subscription if it moved, `None` if it was
    /// not in one of `from`.
    pub fn set_subscription_status(
        &mut self,
        id: Uuid,
        from: &[SubscriptionStatus],
        to: SubscriptionStatus,
        approval: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<Option<Subscription>, StoreError> {
        let sid = id.to_string();
        let target = s::table.filter(s::id.eq(&sid)).filter(s::status.eq_any(SubscriptionStatus::codes(from)));
        let changed = (s::status.eq(to.code()), s::updated_at.eq(db_time(now)));
        let n = match approval {
            Some(a) => diesel::update(target).set((changed, s::approval.eq(a.to_string()))).execute(self.conn)?,
            None => diesel::update(target).set(changed).execute(self.conn)?,
        };
        if n == 1 && to == SubscriptionStatus::Deleted {
            // Nothing more is sent, so the cohort's blind indexes are no longer needed.
            diesel::delete(sc::table.filter(sc::subscription_id.eq(&sid))).execute(self.conn)?;
        }
        if n == 1 {
            subscription_in(self.conn, &sid)
        } else {
            Ok(None)
        }
    }

    /// Deletes a subscription for its owner (from any [`SubscriptionStatus::DELETABLE`] status):
    /// nothing more is sent. `None` if there is no such subscription or it is deleted already.
    pub fn delete_subscription(&mut self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Subscription>, StoreError> {
        self.set_subscription_status(id, SubscriptionStatus::DELETABLE, SubscriptionStatus::Deleted, None, now)
    }
}
