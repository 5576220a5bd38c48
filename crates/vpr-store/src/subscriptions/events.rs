//! Reading a subscription's numbered events, and what it has been given before.

use std::collections::{BTreeSet, HashMap, HashSet};

use diesel::prelude::*;
use uuid::Uuid;

use super::model::{EventRow, SubscriptionEvent};
use crate::schema::{
    subscription_cohort as sc, subscription_events as se, subscription_notice_seen as seen, subscriptions as s,
};
use crate::{Store, StoreError};

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

impl Store {
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
}
