//! Sealing the audit log into an RFC 9162 Merkle tree with signed checkpoints, and verifying it
//! from the database alone.
//!
//! Each committed, unsealed entry is given the next leaf index and sealed: its leaf is the
//! canonical encoding of its stored content (see [`leaf_bytes`]), so any later edit changes the
//! tree. Sealing happens under a lock (PostgreSQL advisory lock; SQLite's single writer), so
//! several replicas can run the sealer; the checkpoint is written in the same transaction.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use vpr_audit::merkle::{leaf_hash, Frontier, Hash};
use vpr_audit::{hex, parse_hash};

use crate::audit::AuditRow;
use crate::db::{write_tx, DbConnection};
use crate::schema::{audit_checkpoints as cp, audit_entries as ae, audit_seal_state as st};
use crate::{Store, StoreError};

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// Entries in the tree.
    pub tree_size: i64,
    /// Hex MTH.
    pub root_hash: String,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
    /// The signed statement (JWS compact).
    pub jws: String,
}

/// The canonical leaf encoding: a JSON array of the sealed columns in a fixed order, with the
/// leaf index first so an entry moved to another position no longer matches. Sealed: every
/// stored column except the seal itself and the IG review status (which changes as IG works;
/// reviews are recorded as entries of their own).
pub fn leaf_bytes(index: i64, r: &AuditRow) -> Vec<u8> {
    let at = r.at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let value = serde_json::json!([
        index,
        r.seq,
        r.id,
        at,
        r.request_id,
        r.action,
        r.actor_org,
        r.actor_org_type,
        r.actor_system,
        r.actor_user,
        r.actor_role,
        r.purpose,
        r.context_ref,
        r.break_glass,
        r.justification.as_deref().map(hex),
        r.subject_refs,
        r.decision,
        r.notices,
        r.lawful_basis,
        r.clauses,
        r.agreement_version,
        r.outcome,
    ]);
    serde_json::to_vec(&value).unwrap_or_default()
}

fn frontier_of(size: i64, text: &str) -> Result<Frontier, StoreError> {
    let parts: Vec<(u32, String)> = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let nodes: Option<Vec<(u32, Hash)>> =
        parts.into_iter().map(|(h, x)| parse_hash(&x).map(|hash| (h, hash))).collect();
    nodes
        .and_then(|n| Frontier::from_parts(u64::try_from(size).ok()?, n))
        .ok_or_else(|| StoreError::Corrupt("the audit seal state is not a valid frontier".into()))
}

fn lock_sealer(conn: &mut DbConnection) -> Result<(), StoreError> {
    if let DbConnection::Pg(_) = conn {
        // One sealer at a time across replicas; released at commit.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7215001)").execute(conn)?;
    }
    Ok(())
}

/// Signs a checkpoint: (tree size, root, signed at) to a JWS.
pub type SignCheckpoint<'a> = &'a dyn Fn(i64, &Hash, DateTime<Utc>) -> Result<String, String>;
/// Opens a signed checkpoint: JWS to (tree size, root), or why it does not verify.
pub type OpenCheckpoint<'a> = &'a dyn Fn(&str) -> Result<(i64, Hash), String>;

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Sealed entries checked.
    pub entries: u64,
    /// Entries committed but not yet sealed.
    pub unsealed: u64,
    /// Checkpoints whose signature and root were checked.
    pub checkpoints: u64,
    /// Problems, first first. Empty means the log verifies.
    pub problems: Vec<String>,
}

impl Store {
    /// Seals up to `max` committed entries and signs a checkpoint of the new tree head with
    /// `sign(tree_size, root, signed_at)`. Returns the checkpoint, or `None` if nothing was pending.
    pub fn seal_pending(
        &self,
        max: i64,
        now: DateTime<Utc>,
        sign: SignCheckpoint<'_>,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            lock_sealer(conn)?;
            let (size, frontier_text): (i64, String) =
                st::table.find(1).select((st::tree_size, st::frontier)).first(conn)?;
            let mut frontier = frontier_of(size, &frontier_text)?;
            let pending: Vec<AuditRow> =
                ae::table.filter(ae::leaf_index.is_null()).order(ae::seq.asc()).limit(max).load(conn)?;
            if pending.is_empty() {
                return Ok(None);
            }
            let mut index = size;
            let mut sealed = Vec::with_capacity(pending.len());
            for row in &pending {
                let hash = leaf_hash(&leaf_bytes(index, row));
                frontier.push(hash);
                sealed.push((row.seq, index, hex(&hash)));
                index += 1;
            }
            // Set-based, a few statements per batch rather than one round trip per entry. The
            // values are integers and hex digests made here, never input, so they are inlined.
            for chunk in sealed.chunks(1000) {
                let values: Vec<String> = chunk.iter().map(|(seq, i, h)| format!("({seq}, {i}, '{h}')")).collect();
                diesel::sql_query(format!(
                    "UPDATE audit_entries SET leaf_index = v.column2, leaf_hash = v.column3 \
                     FROM (VALUES {}) AS v WHERE audit_entries.seq = v.column1",
                    values.join(", ")
                ))
                .execute(conn)?;
            }
            let root = frontier.root();
            let signed_at = now;
            let jws = sign(index, &root, signed_at).map_err(StoreError::Corrupt)?;
            let (_, nodes) = frontier.to_parts();
            let parts: Vec<(u32, String)> = nodes.iter().map(|(h, x)| (*h, hex(x))).collect();
            diesel::update(st::table.find(1))
                .set((st::tree_size.eq(index), st::frontier.eq(serde_json::to_string(&parts).unwrap_or_default())))
                .execute(conn)?;
            let checkpoint = Checkpoint { tree_size: index, root_hash: hex(&root), signed_at, jws };
            diesel::insert_into(cp::table)
                .values((
                    cp::tree_size.eq(checkpoint.tree_size),
                    cp::root_hash.eq(&checkpoint.root_hash),
                    cp::signed_at.eq(signed_at.naive_utc()),
                    cp::jws.eq(&checkpoint.jws),
                ))
                .execute(conn)?;
            Ok(Some(checkpoint))
        })
    }

    /// The stored leaf hashes of the first `size` sealed entries, in tree order.
    pub fn leaf_hashes(&self, size: i64) -> Result<Vec<Hash>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<Option<String>> = ae::table
            .filter(ae::leaf_index.is_not_null())
            .filter(ae::leaf_index.lt(size))
            .order(ae::leaf_index.asc())
            .select(ae::leaf_hash)
            .load(&mut conn)?;
        if i64::try_from(rows.len()).ok() != Some(size) {
            return Err(StoreError::NotFound);
        }
        rows.iter()
            .map(|h| h.as_deref().and_then(parse_hash).ok_or_else(|| StoreError::Corrupt("bad leaf hash".into())))
            .collect()
    }

    /// The newest checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<(i64, String, NaiveDateTime, String)> = cp::table
            .order(cp::tree_size.desc())
            .select((cp::tree_size, cp::root_hash, cp::signed_at, cp::jws))
            .first(&mut conn)
            .optional()?;
        Ok(row.map(|(tree_size, root_hash, at, jws)| Checkpoint { tree_size, root_hash, signed_at: at.and_utc(), jws }))
    }

    /// Verifies the whole log; see [`verify_audit`].
    pub fn verify_audit(&self, open: OpenCheckpoint<'_>) -> Result<VerifyReport, StoreError> {
        verify_audit(&mut *self.conn()?, open)
    }
}

/// Opens one plain connection (no pool, no background threads) for a one-shot command.
pub fn connect(url: &str) -> Result<DbConnection, StoreError> {
    let (_, conn_url) = crate::db::Backend::from_url(url)?;
    <DbConnection as Connection>::establish(&conn_url).map_err(|e| StoreError::Unavailable(e.to_string()))
}

/// Verifies the whole log from the database alone: recomputes every leaf from the stored
/// content (never trusting stored hashes), rebuilds the tree, and checks every checkpoint's
/// signature (with `open`, which returns the signed size and root) against it.
pub fn verify_audit(conn: &mut DbConnection, open: OpenCheckpoint<'_>) -> Result<VerifyReport, StoreError> {
    {
        let mut report = VerifyReport::default();
        let rows: Vec<AuditRow> =
            ae::table.filter(ae::leaf_index.is_not_null()).order(ae::leaf_index.asc()).load(conn)?;
        let unsealed: i64 = ae::table.filter(ae::leaf_index.is_null()).count().get_result(conn)?;
        report.unsealed = u64::try_from(unsealed).unwrap_or_default();
        let checkpoints: Vec<(i64, String)> =
            cp::table.order(cp::tree_size.asc()).select((cp::tree_size, cp::jws)).load(conn)?;
        let mut signed = Vec::new();
        for (size, jws) in &checkpoints {
            match open(jws) {
                Ok((s, root)) if s == *size => signed.push((s, root)),
                Ok((s, _)) => {
                    report.problems.push(format!("checkpoint at size {size} was altered: its signed size is {s}"))
                }
                Err(e) => report.problems.push(format!("checkpoint at size {size} does not verify: {e}")),
            }
        }
        let mut frontier = Frontier::default();
        let mut next_checkpoint = signed.iter().peekable();
        let mut expected: i64 = 0;
        for row in &rows {
            let index = row.leaf_index.unwrap_or(-1);
            if index != expected {
                report.problems.push(if index > expected {
                    format!("entries at leaf {expected}..{} are missing (deleted)", index - 1)
                } else {
                    format!("leaf {index} appears twice (inserted)")
                });
                break;
            }
            let hash = leaf_hash(&leaf_bytes(index, row));
            if row.leaf_hash.as_deref() != Some(hex(&hash).as_str()) {
                report.problems.push(format!(
                    "entry at leaf {index} (seq {}, id {}) does not match its seal: edited, inserted or reordered",
                    row.seq, row.id
                ));
            }
            frontier.push(hash);
            expected += 1;
            while let Some((size, root)) = next_checkpoint.peek() {
                if *size != expected {
                    break;
                }
                if frontier.root() != *root {
                    report
                        .problems
                        .push(format!("the tree of the first {size} entries does not match its signed checkpoint"));
                }
                report.checkpoints += 1;
                next_checkpoint.next();
            }
        }
        report.entries = u64::try_from(expected).unwrap_or_default();
        if let Some((size, _)) = next_checkpoint.next() {
            report.problems.push(format!(
                "a signed checkpoint covers {size} entries but only {expected} are present: the log was truncated or entries deleted"
            ));
        }
        if let Some((last, _)) = signed.last() {
            if expected > *last {
                report.problems.push(format!(
                    "entries at leaf {last}..{} are sealed but covered by no signed checkpoint (inserted)",
                    expected - 1
                ));
            }
        }
        Ok(report)
    }
}
