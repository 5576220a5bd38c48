//! Receivers' acknowledgements, group-committed.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::model::db_time;
use crate::db::{write_tx, DbConnection};
use crate::schema::subscriptions as s;
use crate::{Store, StoreError};

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

impl Store {
    /// Records that the receiver acknowledged an event (group-committed with other
    /// acknowledgements). False if the lease was lost: another replica now delivers this
    /// subscription.
    pub fn ack_delivery(&self, ack: Ack) -> Result<bool, StoreError> {
        self.ack_writer.submit(ack)
    }
}
