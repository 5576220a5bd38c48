//! The fan-out: notice changes from the outbox, and sealed disclosures, numbered into each
//! subscription's events.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;
use vpr_domain::subscription::{Criteria, PeerLink, SubscriptionStatus, Topic};
use vpr_domain::vocab::ChangeKind;

use super::model::{corrupt, db_time};
use crate::audit::AuditedNotice;
use crate::db::{write_tx, DbConnection};
use crate::schema::{
    audit_entries as ae, disclosure_fanout_state as dfs, notice_events as ne, notices as nt, subscription_cohort as sc,
    subscription_counters as cnt, subscription_events as se, subscriptions as s,
};
use crate::{Store, StoreError};

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

/// A subscription event to insert.
struct NewEvent {
    subscription_id: String,
    number: i64,
    notice_id: String,
    notice_version: i64,
    kind: String,
    occurred_at: NaiveDateTime,
    matched: bool,
    audit_id: Option<String>,
}

/// Inserts numbered events, a few multi-row statements per batch.
fn insert_events(conn: &mut DbConnection, events: &[NewEvent], now: DateTime<Utc>) -> Result<(), StoreError> {
    let created = db_time(now);
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            (
                se::subscription_id.eq(&e.subscription_id),
                se::event_number.eq(e.number),
                se::event_id.eq(Uuid::new_v4().to_string()),
                se::notice_id.eq(&e.notice_id),
                se::notice_version.eq(e.notice_version),
                se::kind.eq(&e.kind),
                se::occurred_at.eq(e.occurred_at),
                se::matched.eq(e.matched),
                se::audit_id.eq(&e.audit_id),
                se::created_at.eq(created),
            )
        })
        .collect();
    crate::db::insert_chunks!(conn, se::table, rows, 500);
    Ok(())
}

/// A notice change waiting in the outbox: `(seq, notice id, version, kind, at)`.
type PendingChange = (i64, String, i64, String, NaiveDateTime);

/// One fan-out step of notice changes: the subscriptions that may receive them and the events
/// numbered so far.
#[derive(Default)]
struct NoticeRound {
    /// Per subscription: whether it takes new matches (is active), and its criteria.
    criteria: HashMap<String, (bool, Criteria)>,
    /// Per subscription: its last event number.
    numbers: HashMap<String, i64>,
    events: Vec<NewEvent>,
    touched: BTreeSet<String>,
    /// Recipients given events in this batch (not yet in the table): a notice created and
    /// withdrawn in one batch must still reach whoever got its creation.
    batch_prior: HashMap<String, HashSet<String>>,
}

impl NoticeRound {
    /// The subscriptions to notices that may still receive events.
    fn load(conn: &mut DbConnection) -> Result<Self, StoreError> {
        let subs: Vec<(String, String, String, i64, Option<String>)> = s::table
            .inner_join(cnt::table)
            .filter(s::status.eq_any(SubscriptionStatus::codes(SubscriptionStatus::RECEIVING)))
            .filter(s::topic.eq(Topic::Notices.code()))
            .select((s::id, s::status, s::criteria, cnt::last_event_number, s::federation))
            .load(conn)?;
        let mut round = Self::default();
        for (id, st, c, last, federation) in subs {
            // A subscription held at a peer is told of the peer's notices, by the peer.
            let link: Option<PeerLink> =
                federation.as_deref().map(serde_json::from_str).transpose().map_err(corrupt)?;
            if matches!(link, Some(PeerLink::AtPeer { .. })) {
                continue;
            }
            let parsed: Criteria = serde_json::from_str(&c).map_err(corrupt)?;
            let active = SubscriptionStatus::from_code(&st).is_some_and(SubscriptionStatus::receives_new);
            round.criteria.insert(id.clone(), (active, parsed));
            round.numbers.insert(id, last);
        }
        Ok(round)
    }

    /// Numbers one change for every subscription it reaches: a match, or a subscription given
    /// the notice before (later changes reach whoever had earlier ones, whatever the criteria
    /// say now).
    fn number(&mut self, change: &PendingChange, reach: &Reach<'_>) {
        let (_, notice_id, version, kind, at) = change;
        for (sub, (active, c)) in &self.criteria {
            let matched = reach.content.is_some_and(|n| *active && c.matches(n, reach.in_cohort.contains(sub)));
            if !matched && !reach.prior.contains(sub) {
                continue;
            }
            let Some(n) = self.numbers.get_mut(sub) else { continue };
            *n += 1;
            self.touched.insert(sub.clone());
            self.batch_prior.entry(notice_id.clone()).or_default().insert(sub.clone());
            self.events.push(NewEvent {
                subscription_id: sub.clone(),
                number: *n,
                notice_id: notice_id.clone(),
                notice_version: *version,
                kind: kind.clone(),
                occurred_at: *at,
                matched,
                audit_id: None,
            });
        }
    }

    /// Writes the events and the subscriptions' new counters, and marks the changes done.
    fn write(
        self,
        conn: &mut DbConnection,
        pending: &[PendingChange],
        now: DateTime<Utc>,
    ) -> Result<FanOut, StoreError> {
        let deliveries = self.events.len();
        insert_events(conn, &self.events, now)?;
        let subscriptions = self.touched.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect();
        let updates: Vec<(String, i64)> =
            self.touched.into_iter().filter_map(|id| self.numbers.get(&id).map(|n| (id, *n))).collect();
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
    }
}

/// Whom one change reaches: its content if it can match (a retraction matches nobody), the
/// subscriptions whose cohort holds its subject, and those given the notice before.
struct Reach<'a> {
    content: Option<&'a vpr_domain::notice::NoticeContent>,
    in_cohort: HashSet<String>,
    prior: HashSet<String>,
}

impl Store {
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
            let pending: Vec<PendingChange> = ne::table
                .filter(ne::fanned_out_at.is_null())
                .order(ne::seq.asc())
                .limit(max)
                .select((ne::seq, ne::notice_id, ne::version, ne::kind, ne::at))
                .load(conn)?;
            if pending.is_empty() {
                return Ok(FanOut::default());
            }
            let mut round = NoticeRound::load(conn)?;
            for change in &pending {
                let (_, notice_id, version, kind, _) = change;
                let Some(notice) = self.version_in(conn, notice_id, *version)? else { continue };
                let retraction = !matches!(
                    ChangeKind::from_code(kind),
                    Some(ChangeKind::Created | ChangeKind::Amended | ChangeKind::Reviewed)
                );
                let mut prior = given_before(conn, notice_id)?;
                prior.extend(round.batch_prior.get(notice_id).into_iter().flatten().cloned());
                let in_cohort = if retraction { HashSet::new() } else { self.cohorts_holding(conn, &notice.content)? };
                let content = (!retraction).then_some(&notice.content);
                round.number(change, &Reach { content, in_cohort, prior });
            }
            round.write(conn, &pending, now)
        })
    }

    /// The subscriptions whose cohort holds the subject of `content`.
    fn cohorts_holding(
        &self,
        conn: &mut DbConnection,
        content: &vpr_domain::notice::NoticeContent,
    ) -> Result<HashSet<String>, StoreError> {
        let blind: Vec<String> =
            content.subject.match_keys().iter().map(|(k, v)| self.vault.blind_index(*k, v)).collect();
        Ok(sc::table
            .filter(sc::blind_index.eq_any(&blind))
            .select(sc::subscription_id)
            .distinct()
            .load::<String>(conn)?
            .into_iter()
            .collect())
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
                .filter(s::status.eq(SubscriptionStatus::Active.code()))
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
            let created = number_disclosures(conn, &subs, &entries, now)?;
            diesel::update(dfs::table.find(1)).set(dfs::after_leaf.eq(last)).execute(conn)?;
            Ok(created)
        })
    }

    /// Notice changes not yet fanned out (for readiness and metrics).
    pub fn outbox_backlog(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(ne::table.filter(ne::fanned_out_at.is_null()).count().get_result(&mut conn)?)
    }
}

/// The subscriptions given events of a notice before.
fn given_before(conn: &mut DbConnection, notice_id: &str) -> Result<HashSet<String>, StoreError> {
    Ok(se::table
        .filter(se::notice_id.eq(notice_id))
        .select(se::subscription_id)
        .distinct()
        .load::<String>(conn)?
        .into_iter()
        .collect())
}

/// Numbers a `disclosed` event for each notice decided on in `entries` (sealed audit entries:
/// id, leaf, time and decisions) to every subscription `(id, owner, last number)` of the
/// notice's publisher, writes them and the new counters; returns how many.
fn number_disclosures(
    conn: &mut DbConnection,
    subs: &[(String, String, i64)],
    entries: &[(String, Option<i64>, NaiveDateTime, String)],
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    // Each entry's decisions (an entry pruned under retention has none).
    let decided: Vec<(&String, NaiveDateTime, Vec<AuditedNotice>)> = entries
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
    let mut events = Vec::new();
    for (audit_id, at, notices) in &decided {
        let mut seen_notice = BTreeSet::new();
        for n in notices.iter().filter(|n| seen_notice.insert(n.id.clone())) {
            let Some(publisher) = publisher_of.get(&n.id) else { continue };
            for (sub, _, _) in subs.iter().filter(|(_, owner, _)| owner == publisher) {
                let Some(number) = numbers.get_mut(sub) else { continue };
                *number += 1;
                events.push(NewEvent {
                    subscription_id: sub.clone(),
                    number: *number,
                    notice_id: n.id.clone(),
                    notice_version: n.version,
                    kind: "disclosed".to_owned(),
                    occurred_at: *at,
                    matched: true,
                    audit_id: Some((*audit_id).clone()),
                });
            }
        }
    }
    insert_events(conn, &events, now)?;
    for (id, before) in subs.iter().map(|(id, _, n)| (id, *n)) {
        if let Some(n) = numbers.get(id).filter(|n| **n != before) {
            diesel::update(cnt::table.find(id)).set(cnt::last_event_number.eq(n)).execute(conn)?;
        }
    }
    Ok(events.len())
}
