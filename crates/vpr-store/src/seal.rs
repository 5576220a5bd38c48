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
    serde_json::to_vec(&Leaf { index, r }).unwrap_or_default()
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
        let mut seq = s.serialize_seq(Some(22))?;
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

pub(crate) fn lock_sealer(conn: &mut DbConnection) -> Result<(), StoreError> {
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
    /// Entries whose content was removed under retention (their seals still checked).
    pub pruned: u64,
    /// Problems, first first. Empty means the log verifies.
    pub problems: Vec<String>,
}

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
            let hash = leaf_hash(&leaf_bytes(index, row));
            frontier.push(hash);
            sealed.push((row.seq, index, hex(&hash)));
            index += 1;
        }
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

/// Checks a stream of sealed entries, in tree order, against the signed checkpoints: the
/// verification shared by a database and an export.
pub struct Verifier<'a> {
    signed: Vec<(i64, Hash)>,
    next_checkpoint: usize,
    frontier: Frontier,
    expected: i64,
    kept_seen: bool,
    stopped: bool,
    report: VerifyReport,
    _open: std::marker::PhantomData<OpenCheckpoint<'a>>,
}

impl std::fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("expected", &self.expected).finish_non_exhaustive()
    }
}

impl<'a> Verifier<'a> {
    /// Opens every checkpoint (size and JWS, ascending) with `open`; bad ones are reported.
    pub fn new(checkpoints: &[(i64, String)], open: OpenCheckpoint<'a>) -> Self {
        let mut report = VerifyReport::default();
        let mut signed = Vec::new();
        for (size, jws) in checkpoints {
            match open(jws) {
                Ok((s, root)) if s == *size => signed.push((s, root)),
                Ok((s, _)) => {
                    report.problems.push(format!("checkpoint at size {size} was altered: its signed size is {s}"))
                }
                Err(e) => report.problems.push(format!("checkpoint at size {size} does not verify: {e}")),
            }
        }
        Self {
            signed,
            next_checkpoint: 0,
            frontier: Frontier::default(),
            expected: 0,
            kept_seen: false,
            stopped: false,
            report,
            _open: std::marker::PhantomData,
        }
    }

    /// The leaf hash `row` must have: recomputed from its content, or for an entry pruned under
    /// retention (whose content is gone) its stored hash, which the checkpoints still bind.
    pub fn leaf_of(row: &AuditRow) -> Option<Hash> {
        match row.pruned_at {
            None => Some(leaf_hash(&leaf_bytes(row.leaf_index.unwrap_or(-1), row))),
            Some(_) => row.leaf_hash.as_deref().and_then(parse_hash),
        }
    }

    /// Checks the next entry, whose leaf hash (from [`Self::leaf_of`], possibly computed on
    /// another thread) is `leaf`. Returns false once the log is broken beyond this point
    /// (an entry missing or duplicated), after which further entries are ignored.
    pub fn push(&mut self, row: &AuditRow, leaf: Option<Hash>) -> bool {
        if self.stopped {
            return false;
        }
        let index = row.leaf_index.unwrap_or(-1);
        if index != self.expected {
            self.report.problems.push(if index > self.expected {
                format!("entries at leaf {}..{} are missing (deleted)", self.expected, index - 1)
            } else {
                format!("leaf {index} appears twice (inserted)")
            });
            self.stopped = true;
            return false;
        }
        let hash = match (row.pruned_at, leaf) {
            (Some(_), _) if self.kept_seen => {
                self.report.problems.push(format!(
                    "entry at leaf {index} (seq {}, id {}) had its content removed although an older entry was kept: \
                     retention prunes only the oldest entries",
                    row.seq, row.id
                ));
                leaf.unwrap_or_default()
            }
            (Some(_), Some(hash)) => {
                self.report.pruned += 1;
                hash
            }
            (_, None) => {
                self.report
                    .problems
                    .push(format!("entry at leaf {index} (seq {}, id {}) has no valid seal", row.seq, row.id));
                [0; 32]
            }
            (None, Some(hash)) => {
                self.kept_seen = true;
                if !row.leaf_hash.as_deref().is_some_and(|stored| vpr_audit::is_hex_of(stored, &hash)) {
                    self.report.problems.push(format!(
                        "entry at leaf {index} (seq {}, id {}) does not match its seal: edited, inserted or reordered",
                        row.seq, row.id
                    ));
                }
                hash
            }
        };
        self.frontier.push(hash);
        self.expected += 1;
        while let Some((size, root)) = self.signed.get(self.next_checkpoint) {
            if *size != self.expected {
                break;
            }
            if self.frontier.root() != *root {
                self.report
                    .problems
                    .push(format!("the tree of the first {size} entries does not match its signed checkpoint"));
            }
            self.report.checkpoints += 1;
            self.next_checkpoint += 1;
        }
        true
    }

    /// The report, given how many entries are committed but not yet sealed.
    pub fn finish(mut self, unsealed: u64) -> VerifyReport {
        let expected = self.expected;
        self.report.entries = u64::try_from(expected).unwrap_or_default();
        self.report.unsealed = unsealed;
        if let Some((size, _)) = self.signed.get(self.next_checkpoint) {
            self.report.problems.push(format!(
                "a signed checkpoint covers {size} entries but only {expected} are present: the log was truncated or entries deleted"
            ));
        }
        if let Some((last, _)) = self.signed.last() {
            if expected > *last && !self.stopped {
                self.report.problems.push(format!(
                    "entries at leaf {last}..{} are sealed but covered by no signed checkpoint (inserted)",
                    expected - 1
                ));
            }
        }
        self.report
    }
}

/// Entries read per query when verifying or exporting.
const CHUNK: i64 = 20_000;

/// Reads the sealed entries in tree order, a chunk at a time, on a thread of its own, so the
/// database read overlaps the hashing; each chunk arrives with its recomputed leaf hashes.
fn for_each_sealed(
    conn: &mut DbConnection,
    mut each: impl FnMut(&[(AuditRow, Option<Hash>)]) -> bool,
) -> Result<(), StoreError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<AuditRow>, StoreError>>(2);
        let reader = scope.spawn(move || {
            let mut after = -1i64;
            loop {
                let chunk: Result<Vec<AuditRow>, StoreError> = ae::table
                    .filter(ae::leaf_index.gt(after))
                    .order(ae::leaf_index.asc())
                    .limit(CHUNK)
                    .load(conn)
                    .map_err(StoreError::from);
                let done = match &chunk {
                    Ok(rows) => match rows.last() {
                        Some(last) => {
                            after = last.leaf_index.unwrap_or(i64::MAX);
                            i64::try_from(rows.len()).unwrap_or_default() < CHUNK
                        }
                        None => true,
                    },
                    Err(_) => true,
                };
                if tx.send(chunk).is_err() || done {
                    return;
                }
            }
        });
        let mut result = Ok(());
        for chunk in rx {
            match chunk {
                Ok(rows) => {
                    if rows.is_empty() {
                        break;
                    }
                    let hashed = hash_rows(rows);
                    if !each(&hashed) {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let _ = reader.join();
        result
    })
}

/// Recomputes the leaf hashes of a chunk, split across the machine's cores.
fn hash_rows(rows: Vec<AuditRow>) -> Vec<(AuditRow, Option<Hash>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let per = rows.len().div_ceil(threads).max(1);
    let mut rows = rows;
    let mut parts = Vec::new();
    while rows.len() > per {
        let rest = rows.split_off(per);
        parts.push(std::mem::replace(&mut rows, rest));
    }
    parts.push(rows);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    part.into_iter()
                        .map(|r| {
                            let leaf = Verifier::leaf_of(&r);
                            (r, leaf)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn checkpoints_of(conn: &mut DbConnection) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(cp::table.order(cp::tree_size.asc()).select((cp::tree_size, cp::jws)).load(conn)?)
}

/// Verifies the whole log from the database alone: recomputes every leaf from the stored
/// content (never trusting stored hashes, except for entries pruned under retention), rebuilds
/// the tree, and checks every checkpoint's signature (with `open`, which returns the signed size
/// and root) against it.
pub fn verify_audit(conn: &mut DbConnection, open: OpenCheckpoint<'_>) -> Result<VerifyReport, StoreError> {
    let checkpoints = checkpoints_of(conn)?;
    let unsealed: i64 = ae::table.filter(ae::leaf_index.is_null()).count().get_result(conn)?;
    let mut verifier = Verifier::new(&checkpoints, open);
    for_each_sealed(conn, |chunk| chunk.iter().all(|(row, leaf)| verifier.push(row, *leaf)))?;
    Ok(verifier.finish(u64::try_from(unsealed).unwrap_or_default()))
}

/// The first line of an export.
#[derive(Debug, Serialize, serde::Deserialize)]
struct ExportHeader {
    format: String,
    version: u32,
    exported_at: DateTime<Utc>,
    tree_size: i64,
    checkpoints: Vec<(i64, String)>,
}

fn line_of<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

const EXPORT_FORMAT: &str = "vpr-broker audit export";

/// Writes the sealed log as an export: a header line with every signed checkpoint, then one
/// line per sealed entry in tree order, each exactly as stored (the justification still
/// sealed). `audit verify --export` checks it as it would the database. Returns the entries
/// written.
pub fn export_audit(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    out: &mut dyn std::io::Write,
) -> Result<u64, StoreError> {
    let checkpoints = checkpoints_of(conn)?;
    let tree_size = checkpoints.last().map_or(0, |(s, _)| *s);
    let header = ExportHeader { format: EXPORT_FORMAT.into(), version: 1, exported_at: now, tree_size, checkpoints };
    let io = |e: std::io::Error| StoreError::Unavailable(format!("cannot write the export: {e}"));
    writeln!(out, "{}", line_of(&header)?).map_err(io)?;
    let mut written = 0u64;
    let mut failed = None;
    for_each_sealed(conn, |chunk| {
        for (row, _) in chunk {
            match line_of(row).and_then(|line| writeln!(out, "{line}").map_err(io)) {
                Ok(()) => written += 1,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            }
        }
        true
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// Verifies an export made by [`export_audit`] exactly as [`verify_audit`] verifies a database.
pub fn verify_export(input: impl std::io::BufRead, open: OpenCheckpoint<'_>) -> Result<VerifyReport, StoreError> {
    let bad = |what: String| StoreError::Corrupt(format!("not an audit export: {what}"));
    let mut lines = input.lines();
    let first = lines.next().ok_or_else(|| bad("it is empty".into()))?.map_err(|e| bad(e.to_string()))?;
    let header: ExportHeader = serde_json::from_str(&first).map_err(|e| bad(format!("header: {e}")))?;
    if header.format != EXPORT_FORMAT || header.version != 1 {
        return Err(bad(format!("format `{}` version {}", header.format, header.version)));
    }
    let mut verifier = Verifier::new(&header.checkpoints, open);
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| bad(e.to_string()))?;
        let row: AuditRow = serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", n + 2)))?;
        let leaf = Verifier::leaf_of(&row);
        if !verifier.push(&row, leaf) {
            break;
        }
    }
    Ok(verifier.finish(0))
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
        assert_eq!(leaf_bytes(40, &row), serde_json::to_vec(&expected).unwrap());
    }
}
