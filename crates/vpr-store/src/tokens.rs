//! Replay protection for client assertions (RFC 7523 `jti`) and peer brokers' relays, shared by
//! every broker replica. Claims go through a group commit: concurrent claims share one durable
//! transaction (a replayed id is still refused, within a batch too).

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::{write_tx, DbConnection};
use crate::schema::assertion_jtis;
use crate::{Store, StoreError};

/// One claim: client, `jti`, remembered until, and now (ids expired by then are purged).
pub(crate) type JtiClaim = (String, String, NaiveDateTime, NaiveDateTime);

/// The claim writer: answers, per claim, whether the id was new.
pub(crate) type JtiWriter = crate::group::GroupCommit<JtiClaim, bool>;

/// Forgets ids whose time has passed.
pub(crate) fn purge_expired(conn: &mut DbConnection, now: NaiveDateTime) -> Result<(), StoreError> {
    diesel::delete(assertion_jtis::table.filter(assertion_jtis::expires_at.lt(now))).execute(conn)?;
    Ok(())
}

/// Records one id unless it is there already; true if it was new. An id whose time has passed by
/// the time it is claimed is refused: its first use may have been purged already.
pub(crate) fn claim_one(conn: &mut DbConnection, (client, jti, until, _): &JtiClaim) -> Result<bool, StoreError> {
    if *until <= chrono::Utc::now().naive_utc() {
        return Ok(false);
    }
    let row = (assertion_jtis::client_id.eq(client), assertion_jtis::jti.eq(jti), assertion_jtis::expires_at.eq(until));
    let inserted = match conn {
        DbConnection::Pg(c) => {
            diesel::insert_into(assertion_jtis::table).values(row).on_conflict_do_nothing().execute(c)?
        }
        DbConnection::Sqlite(c) => diesel::insert_or_ignore_into(assertion_jtis::table).values(row).execute(c)?,
    };
    Ok(inserted == 1)
}

/// The claim writer (`writers` threads).
pub(crate) fn jti_writer(pool: crate::db::DbPool, gate: crate::db::Gate, writers: usize) -> JtiWriter {
    crate::group::GroupCommit::new(
        "jti-writer",
        writers,
        512,
        std::sync::Arc::new(move |claims: &[&JtiClaim]| {
            let mut conn = gate.get(&pool)?;
            write_tx(&mut conn, |conn| {
                if let Some(now) = claims.iter().map(|c| c.3).min() {
                    purge_expired(conn, now)?;
                }
                let mut in_batch = HashSet::new();
                let mut fresh = Vec::with_capacity(claims.len());
                for c in claims {
                    // The same id twice in one batch: only the first is new.
                    let first = in_batch.insert((c.0.as_str(), c.1.as_str()));
                    fresh.push(first && claim_one(conn, c)?);
                }
                Ok(fresh)
            })
        }),
    )
}

impl Store {
    /// Records an assertion id (a client's, or a peer's relay as `relay:<peer>`). Returns false
    /// if it was seen before (a replay). Expired ids are purged as a side effect so the table
    /// stays small.
    pub fn claim_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Result<bool, StoreError> {
        self.jti_writer.submit((client_id.to_owned(), jti.to_owned(), expires_at, now))
    }
}
