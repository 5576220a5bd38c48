//! Verifying the sealed audit log offline, from the database alone or from an export: every
//! leaf recomputed from the stored content, the tree rebuilt, every signed checkpoint checked.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use vpr_audit::merkle::{leaf_hash, Frontier, Hash};
use vpr_audit::parse_hash;

use crate::audit::AuditRow;
use crate::db::DbConnection;
use crate::schema::{audit_checkpoints as cp, audit_entries as ae};
use crate::seal::leaf_bytes;
use crate::{Store, StoreError};

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
    /// `None` (reported by [`Self::push`] as an entry without a valid seal) if there is none.
    pub fn leaf_of(row: &AuditRow) -> Option<Hash> {
        match row.pruned_at {
            None => leaf_bytes(row.leaf_index.unwrap_or(-1), row).ok().map(|bytes| leaf_hash(&bytes)),
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
                    match hash_rows(rows) {
                        Ok(hashed) if each(&hashed) => {}
                        Ok(_) => break,
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // A reader that panicked ends the stream early: that is a failure, not a short log.
        match (reader.join(), result) {
            (Err(_), Ok(())) => Err(StoreError::Internal("the audit reader thread panicked".into())),
            (_, result) => result,
        }
    })
}

/// Recomputes the leaf hashes of a chunk, split across the machine's cores.
fn hash_rows(rows: Vec<AuditRow>) -> Result<Vec<(AuditRow, Option<Hash>)>, StoreError> {
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
        let mut hashed = Vec::new();
        for handle in handles {
            let part = handle.join().map_err(|_| StoreError::Internal("an audit hashing thread panicked".into()))?;
            hashed.extend(part);
        }
        Ok(hashed)
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
/// One entry as the log holds it: decoded, with the leaf hash recomputed from its stored
/// content and the one stored when it was sealed (both `None` until it is sealed).
#[derive(Debug, Clone)]
pub struct SealedEntry {
    /// The entry.
    pub entry: crate::audit::StoredAuditEntry,
    /// Its leaf hash, recomputed from what is stored now (for a pruned entry, the stored one).
    pub recomputed: Option<Hash>,
    /// The leaf hash stored when it was sealed.
    pub stored: Option<Hash>,
}

impl Store {
    /// The entry with this id, with its leaf hashes, if there is one.
    pub fn sealed_entry(&self, id: uuid::Uuid) -> Result<Option<SealedEntry>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<AuditRow> = ae::table.filter(ae::id.eq(id.to_string())).first(&mut conn).optional()?;
        let Some(row) = row else { return Ok(None) };
        let sealed = row.leaf_index.is_some();
        let recomputed = if sealed { Verifier::leaf_of(&row) } else { None };
        let stored = row.leaf_hash.as_deref().and_then(parse_hash);
        let entry =
            self.decode(vec![row])?.pop().ok_or_else(|| StoreError::Corrupt("an entry did not decode".into()))?;
        Ok(Some(SealedEntry { entry, recomputed, stored }))
    }
}
