//! Sealing the audit log into an RFC 9162 Merkle tree with signed checkpoints (verifying it is
//! the `verify` module).
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
/// reviews are recorded as entries of their own); a read that crossed an ICS border adds its
/// federation record last.
pub fn leaf_bytes(index: i64, r: &AuditRow) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Leaf { index, r })
        .map_err(|e| StoreError::Corrupt(format!("the audit entry at seq {} cannot be encoded as a leaf: {e}", r.seq)))
}

/// The leaf encoding, serialised straight from the row (no intermediate JSON values): the
/// array `[index, seq, id, at, request_id, ..., outcome]`.
struct Leaf<'a> {
    index: i64,
    r: &'a AuditRow,
}

impl Serialize for Leaf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let r = self.r;
        let mut seq = s.serialize_seq(Some(22 + usize::from(r.federation.is_some())))?;
        seq.serialize_element(&self.index)?;
        seq.serialize_element(&r.seq)?;
        seq.serialize_element(&r.id)?;
        seq.serialize_element(&r.at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Micros, true))?;
        seq.serialize_element(&r.request_id)?;
        seq.serialize_element(&r.action)?;
        seq.serialize_element(&r.actor_org)?;
        seq.serialize_element(&r.actor_org_type)?;
        seq.serialize_element(&r.actor_system)?;
        seq.serialize_element(&r.actor_user)?;
        seq.serialize_element(&r.actor_role)?;
        seq.serialize_element(&r.purpose)?;
        seq.serialize_element(&r.context_ref)?;
        seq.serialize_element(&r.break_glass)?;
        seq.serialize_element(&r.justification.as_deref().map(hex))?;
        seq.serialize_element(&r.subject_refs)?;
        seq.serialize_element(&r.decision)?;
        seq.serialize_element(&r.notices)?;
        seq.serialize_element(&r.lawful_basis)?;
        seq.serialize_element(&r.clauses)?;
        seq.serialize_element(&r.agreement_version)?;
        seq.serialize_element(&r.outcome)?;
        // Entries of reads that crossed a border seal their record too; every other entry's
        // leaf is as it was before federation.
        if let Some(f) = &r.federation {
            seq.serialize_element(f)?;
        }
        seq.end()
    }
}

fn frontier_of(size: i64, text: &str) -> Result<Frontier, StoreError> {
    let parts: Vec<(u32, String)> = serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let nodes: Option<Vec<(u32, Hash)>> =
        parts.into_iter().map(|(h, x)| parse_hash(&x).map(|hash| (h, hash))).collect();
    nodes
        .and_then(|n| Frontier::from_parts(u64::try_from(size).ok()?, n))
        .ok_or_else(|| StoreError::Corrupt("the audit seal state is not a valid frontier".into()))
}

fn frontier_text_of(parts: &[(u32, String)]) -> Result<String, StoreError> {
    serde_json::to_string(parts).map_err(|e| StoreError::Corrupt(format!("cannot encode the frontier: {e}")))
}

pub(crate) fn lock_sealer(conn: &mut DbConnection) -> Result<(), StoreError> {
    if let DbConnection::Pg(_) = conn {
        // One sealer at a time across replicas; released at commit.
        diesel::sql_query("SELECT pg_advisory_xact_lock(7215001)").execute(conn)?;
    }
    Ok(())
}

/// Signs a checkpoint: (tree size, root, signed at) to a JWS.
pub type SignCheckpoint<'a> = &'a dyn Fn(i64, &Hash, DateTime<Utc>) -> Result<String, String>;

impl Store {
    /// Seals up to `max` committed entries and signs a checkpoint of the new tree head with
    /// `sign(tree_size, root, signed_at)`. Returns the checkpoint, or `None` if nothing was pending
    /// (or another replica sealed first; the next call continues from its tree).
    pub fn seal_pending(
        &self,
        max: i64,
        now: DateTime<Utc>,
        sign: SignCheckpoint<'_>,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let mut conn = self.conn()?;
        // Read and hash the pending entries first, outside the write lock: on SQLite every
        // audit write waits while the sealer holds it, so only the updates are done under it.
        let (size, frontier_text): (i64, String) =
            st::table.find(1).select((st::tree_size, st::frontier)).first(&mut *conn)?;
        let mut frontier = frontier_of(size, &frontier_text)?;
        let pending: Vec<AuditRow> =
            ae::table.filter(ae::leaf_index.is_null()).order(ae::seq.asc()).limit(max).load(&mut *conn)?;
        if pending.is_empty() {
            return Ok(None);
        }
        let mut index = size;
        let mut sealed = Vec::with_capacity(pending.len());
        for row in &pending {
            let hash = leaf_hash(&leaf_bytes(index, row)?);
            frontier.push(hash);
            sealed.push((row.seq, index, hex(&hash)));
            index += 1;
        }
        // The figures never stop the seal: entries whose counts cannot be read are left out.
        let shown = crate::statistics::disclosure_increments(&mut conn, &pending).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the figures could not count a batch of sealed entries");
            Default::default()
        });
        drop(pending);
        write_tx(&mut conn, |conn| {
            lock_sealer(conn)?;
            // Another replica may have sealed since the read: then these leaves are stale, and
            // the next round starts again from the tree as it now stands.
            let now_size: i64 = st::table.find(1).select(st::tree_size).first(conn)?;
            if now_size != size {
                return Ok(None);
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
            // The figures count what these entries showed, once: with their seal.
            crate::statistics::add_counts(conn, &shown)?;
            let root = frontier.root();
            let signed_at = now;
            let jws = sign(index, &root, signed_at).map_err(StoreError::Corrupt)?;
            let (_, nodes) = frontier.to_parts();
            let parts: Vec<(u32, String)> = nodes.iter().map(|(h, x)| (*h, hex(x))).collect();
            diesel::update(st::table.find(1))
                .set((st::tree_size.eq(index), st::frontier.eq(frontier_text_of(&parts)?)))
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

    /// The stored leaf hashes of the first `size` sealed entries, in tree order. Sealed leaves
    /// never change, so each is read from the database once per process and kept (32 bytes an
    /// entry); `vpr-broker audit verify` re-reads and re-hashes everything.
    pub fn leaf_hashes(&self, size: i64) -> Result<Vec<Hash>, StoreError> {
        let want = usize::try_from(size).map_err(|_| StoreError::NotFound(crate::Missing::SealedLeaves))?;
        let have = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        if have < want {
            let mut conn = self.conn()?;
            let rows: Vec<Option<String>> = ae::table
                .filter(ae::leaf_index.is_not_null())
                .filter(ae::leaf_index.ge(i64::try_from(have).unwrap_or(i64::MAX)))
                .filter(ae::leaf_index.lt(size))
                .order(ae::leaf_index.asc())
                .select(ae::leaf_hash)
                .load(&mut conn)?;
            if rows.len() != want - have {
                return Err(StoreError::NotFound(crate::Missing::SealedLeaves));
            }
            let read = rows
                .iter()
                .map(|h| h.as_deref().and_then(parse_hash).ok_or_else(|| StoreError::Corrupt("bad leaf hash".into())))
                .collect::<Result<Vec<Hash>, StoreError>>()?;
            let mut kept = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Another request may have read some or all of them meanwhile: keep what is new.
            if kept.len() >= have {
                let already = kept.len() - have;
                kept.extend(read.into_iter().skip(already));
            }
        }
        let kept = self.leaves.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() < want {
            return Err(StoreError::NotFound(crate::Missing::SealedLeaves));
        }
        Ok(kept.iter().take(want).copied().collect())
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
}

impl Store {
    /// The newest `limit` checkpoints, newest first.
    pub fn checkpoints(&self, limit: i64) -> Result<Vec<Checkpoint>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(i64, String, NaiveDateTime, String)> = cp::table
            .order(cp::tree_size.desc())
            .limit(limit)
            .select((cp::tree_size, cp::root_hash, cp::signed_at, cp::jws))
            .load(&mut conn)?;
        Ok(rows
            .into_iter()
            .map(|(tree_size, root_hash, at, jws)| Checkpoint { tree_size, root_hash, signed_at: at.and_utc(), jws })
            .collect())
    }

    /// Entries written but not yet sealed into the tree.
    pub fn unsealed_count(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(ae::table.filter(ae::leaf_index.is_null()).count().get_result(&mut conn)?)
    }

    /// Whether an entry written before `at` is still waiting to be sealed (the figures of the
    /// months before `at` are final only once none is).
    pub fn unsealed_before(&self, at: NaiveDateTime) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let first: Option<i64> = ae::table
            .filter(ae::leaf_index.is_null())
            .filter(ae::at.lt(at))
            .select(ae::seq)
            .first(&mut conn)
            .optional()?;
        Ok(first.is_some())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_leaf_encoding_is_the_documented_json_array() {
        let row = AuditRow {
            seq: 41,
            id: "7d2c6f0e-0000-4000-8000-000000000001".into(),
            at: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap().and_hms_micro_opt(9, 30, 1, 250).unwrap(),
            request_id: "req \"quoted\" \u{e9}".into(),
            action: "lookup".into(),
            actor_org: "XGP01".into(),
            actor_org_type: "gp-practice".into(),
            actor_system: "gp-green".into(),
            actor_user: Some("user\n1".into()),
            actor_role: None,
            purpose: Some("staff-safety".into()),
            context_ref: None,
            break_glass: true,
            justification: Some(vec![0, 1, 254, 255]),
            subject_refs: "[\"nhs:ab\"]".into(),
            decision: "permit".into(),
            notices: "[]".into(),
            lawful_basis: "[\"UKGDPR-6-1-e\"]".into(),
            clauses: "[\"SS-1\"]".into(),
            agreement_version: "v1".into(),
            outcome: 200,
            ig_review: Some("pending".into()),
            leaf_index: Some(40),
            leaf_hash: None,
            pruned_at: None,
            federation: None,
        };
        let expected = serde_json::json!([
            40,
            41,
            row.id,
            "2026-11-22T09:30:01.000250Z",
            row.request_id,
            "lookup",
            "XGP01",
            "gp-practice",
            "gp-green",
            "user\n1",
            null,
            "staff-safety",
            null,
            true,
            "0001feff",
            row.subject_refs,
            "permit",
            "[]",
            row.lawful_basis,
            row.clauses,
            "v1",
            200
        ]);
        assert_eq!(leaf_bytes(40, &row).unwrap(), serde_json::to_vec(&expected).unwrap());
        // A read that crossed a border seals its federation record last; the rest is unchanged.
        let record = r#"{"relayed_by":"YIC01"}"#;
        let crossed = AuditRow { federation: Some(record.into()), ..row.clone() };
        let mut with_record = expected.as_array().unwrap().clone();
        with_record.push(serde_json::json!(record));
        assert_eq!(leaf_bytes(40, &crossed).unwrap(), serde_json::to_vec(&with_record).unwrap());
    }
}
