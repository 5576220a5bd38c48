//! The disclosure audit log: one entry per decision, permits and refusals alike, committed
//! before the response leaves the broker.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::BTreeSet;

use crate::db::{write_tx, DbConnection, Tx};
use crate::schema::{audit_entries as ae, subscription_notice_seen as seen};
use crate::{Store, StoreError};

/// The decision on one notice, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditedNotice {
    /// Notice id.
    pub id: String,
    /// Version decided on.
    pub version: i64,
    /// `permit` or `deny`.
    pub decision: String,
    /// View disclosed, if any.
    pub view: Option<String>,
    /// Whether restricted fields were disclosed.
    pub restricted: bool,
    /// Lawful bases.
    pub lawful_basis: Vec<String>,
    /// Deciding clauses.
    pub clauses: Vec<String>,
}

/// A read that crossed an ICS border, as its entry records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationRecord {
    /// At the answering broker: the peer broker that relayed the request (the actor is the
    /// partner it vouched for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayed_by: Option<String>,
    /// At the asking broker: each peer asked, and what it answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerRecord>,
}

/// What one peer broker answered to a relayed read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer.
    pub broker: String,
    /// `answered`, `refused` (by its agreement), `unavailable` (down or answering an error),
    /// `timeout` (past the time budget), `invalid` (an answer this broker could not accept) or
    /// `skipped` (its circuit is open after repeated failures).
    pub outcome: String,
    /// The HTTP status it answered, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its audit entry for the read, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_id: Option<String>,
    /// The notices it disclosed, as decided there (never their content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<AuditedNotice>,
    /// Why it was not answered, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Entry id.
    pub id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// The request id (as in `X-Request-Id` and the logs).
    pub request_id: String,
    /// The action's code ([`vpr_domain::audit::AuditAction::code`]; empty once pruned).
    pub action: String,
    /// Actor organisation (ODS).
    pub actor_org: String,
    /// Actor organisation type.
    pub actor_org_type: String,
    /// Actor system (client id).
    pub actor_system: String,
    /// Actor user, as asserted by the system.
    pub actor_user: Option<String>,
    /// Actor role.
    pub actor_role: Option<String>,
    /// Purpose of use.
    pub purpose: Option<String>,
    /// Incident, encounter or case reference.
    pub context_ref: Option<String>,
    /// Break-glass asserted.
    pub break_glass: bool,
    /// Break-glass justification (sealed at rest).
    pub justification: Option<String>,
    /// Subject references: `kind:blind-index`, never a plain identifier.
    pub subject_refs: Vec<String>,
    /// `permit`, `deny`, `partial` (some notices withheld), `no-match`, `refused`.
    pub decision: String,
    /// Per-notice decisions.
    pub notices: Vec<AuditedNotice>,
    /// Union of lawful bases relied on.
    pub lawful_basis: Vec<String>,
    /// Union of deciding clauses.
    pub clauses: Vec<String>,
    /// Agreement version.
    pub agreement_version: String,
    /// HTTP status answered.
    pub outcome: u16,
    /// `pending` when IG must review (break-glass).
    pub ig_review: Option<String>,
    /// For a read that crossed an ICS border: who relayed it, or whom it was relayed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<FederationRecord>,
    /// For a delivery or feed read: the subscription that received the permitted notices. Not
    /// part of the sealed entry; recorded beside it in the same transaction, so a subscriber
    /// that was given a notice is always told when it is withdrawn or expires.
    #[serde(skip)]
    pub received_by: Option<String>,
    /// For a request carrying a one-time assertion (a peer's relay): its id, claimed in the
    /// entry's own transaction. If it was used before, the entry is not written and the append
    /// fails with [`StoreError::Replayed`], so nothing it decided is disclosed. Not sealed.
    #[serde(skip)]
    pub replay_guard: Option<ReplayGuard>,
}

/// A stored entry, with its sequence number.
#[derive(Debug, Clone, Serialize)]
pub struct StoredAuditEntry {
    /// Position in the log.
    pub seq: i64,
    /// Position in the sealed tree, once sealed.
    pub leaf_index: Option<i64>,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// One stored audit entry, every column, in table order (read by the review API and the sealer,
/// and written as is to an export).
#[derive(Queryable, Debug, Clone, Serialize, Deserialize)]
pub struct AuditRow {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) at: chrono::NaiveDateTime,
    pub(crate) request_id: String,
    pub(crate) action: String,
    pub(crate) actor_org: String,
    pub(crate) actor_org_type: String,
    pub(crate) actor_system: String,
    pub(crate) actor_user: Option<String>,
    pub(crate) actor_role: Option<String>,
    pub(crate) purpose: Option<String>,
    pub(crate) context_ref: Option<String>,
    pub(crate) break_glass: bool,
    #[serde(with = "hex_bytes")]
    pub(crate) justification: Option<Vec<u8>>,
    pub(crate) subject_refs: String,
    pub(crate) decision: String,
    pub(crate) notices: String,
    pub(crate) lawful_basis: String,
    pub(crate) clauses: String,
    pub(crate) agreement_version: String,
    pub(crate) outcome: i32,
    pub(crate) ig_review: Option<String>,
    pub(crate) leaf_index: Option<i64>,
    pub(crate) leaf_hash: Option<String>,
    pub(crate) pruned_at: Option<chrono::NaiveDateTime>,
    #[serde(default)]
    pub(crate) federation: Option<String>,
}

/// Sealed bytes as hex in an export.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&vpr_audit::hex(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            (0..t.len())
                .step_by(2)
                .map(|i| t.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| serde::de::Error::custom("not hex"))
        })
        .transpose()
    }
}

/// A one-time id to claim with an audit entry: the client (or `relay:<peer>`), the id, until when
/// it must be remembered, and now (ids expired by then are purged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayGuard {
    /// Whose id it is.
    pub client_id: String,
    /// The id.
    pub jti: String,
    /// Remembered until.
    pub expires_at: chrono::NaiveDateTime,
    /// Now.
    pub now: chrono::NaiveDateTime,
}

/// Group commit for the audit log: requests hand their entries to writer threads, which commit
/// everything waiting in one durable transaction and then acknowledge each. Every request still
/// waits for its own entry to be durable; the cost of a commit (an fsync) is shared.
pub(crate) type AuditWriter = crate::group::GroupCommit<AuditEntry, bool>;

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 512;

/// The audit writer: `writers` threads (one for SQLite, several for PostgreSQL, so an entry
/// arriving during a commit need not wait for it).
pub(crate) fn audit_writer(
    pool: crate::db::DbPool,
    gate: crate::db::Gate,
    vault: crate::Vault,
    writers: usize,
) -> AuditWriter {
    crate::group::GroupCommit::new(
        "audit-writer",
        writers,
        MAX_BATCH,
        std::sync::Arc::new(move |entries: &[&AuditEntry]| write_batch(&pool, &gate, &vault, entries)),
    )
}

/// An entry's rows, ready to insert: the entry, its notice and subject references, and the
/// notices it recorded a subscription as given.
struct Encoded<'e> {
    entry: &'e AuditEntry,
    id: String,
    justification: Option<Vec<u8>>,
    /// Each notice the entry names, and whether it was disclosed.
    notice_refs: Vec<(String, bool)>,
    subject_refs: Vec<&'e str>,
    received: Vec<(String, String)>,
}

fn encode<'e>(vault: &crate::Vault, e: &'e AuditEntry) -> Result<Encoded<'e>, StoreError> {
    let id = e.id.to_string();
    let justification = e
        .justification
        .as_deref()
        .map(|j| vault.seal(j.as_bytes(), &format!("audit/{id}/justification")))
        .transpose()?;
    let mut seen = std::collections::BTreeSet::new();
    let mut notice_refs = Vec::new();
    let mut received = Vec::new();
    for n in e.notices.iter().filter(|n| seen.insert(n.id.as_str())) {
        notice_refs.push((n.id.clone(), n.decision == "permit"));
        if let (Some(sub), "permit") = (&e.received_by, n.decision.as_str()) {
            received.push((sub.clone(), n.id.clone()));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let subject_refs = e.subject_refs.iter().map(String::as_str).filter(|r| seen.insert(*r)).collect();
    Ok(Encoded { entry: e, id, justification, notice_refs, subject_refs, received })
}

fn text_of<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::AuditWrite(format!("cannot encode the entry: {e}")))
}

/// Inserts encoded entries, in a few multi-row statements rather than one round trip per row,
/// inside the caller's transaction.
fn insert_encoded(conn: &mut DbConnection, encoded: &[Encoded<'_>]) -> Result<(), StoreError> {
    use crate::schema::{audit_notice_refs as nrefs, audit_subject_refs as srefs};
    let mut rows = Vec::with_capacity(encoded.len());
    for x in encoded {
        let e = x.entry;
        rows.push((
            ae::id.eq(&x.id),
            ae::at.eq(e.at.naive_utc()),
            ae::request_id.eq(&e.request_id),
            ae::action.eq(&e.action),
            ae::actor_org.eq(&e.actor_org),
            ae::actor_org_type.eq(&e.actor_org_type),
            ae::actor_system.eq(&e.actor_system),
            ae::actor_user.eq(&e.actor_user),
            ae::actor_role.eq(&e.actor_role),
            ae::purpose.eq(&e.purpose),
            ae::context_ref.eq(&e.context_ref),
            ae::break_glass.eq(e.break_glass),
            ae::justification.eq(&x.justification),
            ae::subject_refs.eq(text_of(&e.subject_refs)?),
            ae::decision.eq(&e.decision),
            ae::notices.eq(text_of(&e.notices)?),
            ae::lawful_basis.eq(text_of(&e.lawful_basis)?),
            ae::clauses.eq(text_of(&e.clauses)?),
            ae::agreement_version.eq(&e.agreement_version),
            ae::outcome.eq(i32::from(e.outcome)),
            ae::ig_review.eq(&e.ig_review),
            ae::federation.eq(e.federation.as_ref().map(text_of).transpose()?),
        ));
    }
    let notice_refs: Vec<_> = encoded
        .iter()
        .flat_map(|x| {
            x.notice_refs.iter().map(|(n, disclosed)| {
                (nrefs::notice_id.eq(n), nrefs::audit_id.eq(&x.id), nrefs::disclosed.eq(*disclosed))
            })
        })
        .collect();
    let subject_refs: Vec<_> = encoded
        .iter()
        .flat_map(|x| x.subject_refs.iter().map(|r| (srefs::subject_ref.eq(*r), srefs::audit_id.eq(&x.id))))
        .collect();
    let received: Vec<(String, String)> = encoded.iter().flat_map(|x| x.received.iter().cloned()).collect();
    crate::db::insert_chunks!(conn, ae::table, rows, 512);
    crate::db::insert_chunks!(conn, nrefs::table, notice_refs, 2000);
    crate::db::insert_chunks!(conn, srefs::table, subject_refs, 2000);
    record_received(conn, &received)
}

/// Writes a batch of entries in one transaction; per entry, whether it was written (false: its
/// replay guard's id was used before, so it is not).
fn write_batch(
    pool: &crate::db::DbPool,
    gate: &crate::db::Gate,
    vault: &crate::Vault,
    entries: &[&AuditEntry],
) -> Result<Vec<bool>, StoreError> {
    let encoded = entries.iter().map(|e| encode(vault, e)).collect::<Result<Vec<_>, _>>()?;
    let mut conn = gate.get(pool)?;
    write_tx(&mut conn, |conn| {
        let mut written = vec![true; entries.len()];
        // Claimed in one order by every writer, so two batches never wait on each other's ids.
        let mut guarded: Vec<(usize, &ReplayGuard)> =
            entries.iter().enumerate().filter_map(|(i, e)| e.replay_guard.as_ref().map(|g| (i, g))).collect();
        guarded.sort_by(|a, b| (&a.1.client_id, &a.1.jti).cmp(&(&b.1.client_id, &b.1.jti)));
        for (i, g) in guarded {
            let claim = (g.client_id.clone(), g.jti.clone(), g.expires_at, g.now);
            if let Some(w) = written.get_mut(i) {
                *w = crate::tokens::claim_one(conn, &claim)?;
            }
        }
        let kept: Vec<Encoded<'_>> = encoded.into_iter().zip(&written).filter(|(_, w)| **w).map(|(x, _)| x).collect();
        insert_encoded(conn, &kept)?;
        Ok(written)
    })
}

/// Inserts entries inside the caller's transaction; any failure is [`StoreError::AuditWrite`].
pub(crate) fn insert_entries(
    conn: &mut DbConnection,
    vault: &crate::Vault,
    entries: &[AuditEntry],
) -> Result<(), StoreError> {
    let audit_write = |e: StoreError| match e {
        e @ StoreError::AuditWrite(_) => e,
        e => StoreError::AuditWrite(e.to_string()),
    };
    let encoded = entries.iter().map(|e| encode(vault, e)).collect::<Result<Vec<_>, _>>().map_err(audit_write)?;
    insert_encoded(conn, &encoded).map_err(audit_write)
}

/// Records that subscriptions were given notices (with their audit entries, in one transaction):
/// the receipts that make sure a subscriber given a notice is told when it is withdrawn.
fn record_received(conn: &mut DbConnection, pairs: &[(String, String)]) -> Result<(), StoreError> {
    let unique: BTreeSet<&(String, String)> = pairs.iter().collect();
    let rows: Vec<_> =
        unique.into_iter().map(|(sub, notice)| (seen::subscription_id.eq(sub), seen::notice_id.eq(notice))).collect();
    // A few multi-row statements, not one per pair; a pair recorded before is left as it is.
    for chunk in rows.chunks(1000) {
        match &mut *conn {
            DbConnection::Pg(c) => {
                diesel::insert_into(seen::table).values(chunk).on_conflict_do_nothing().execute(c)?
            }
            DbConnection::Sqlite(c) => {
                diesel::insert_into(seen::table).values(chunk).on_conflict_do_nothing().execute(c)?
            }
        };
    }
    Ok(())
}

/// What an audited change returns beside its result: one audit entry or several.
pub trait AuditEntries {
    /// The entries.
    fn into_entries(self) -> Vec<AuditEntry>;
}

impl AuditEntries for AuditEntry {
    fn into_entries(self) -> Vec<AuditEntry> {
        vec![self]
    }
}

impl AuditEntries for Vec<AuditEntry> {
    fn into_entries(self) -> Vec<AuditEntry> {
        self
    }
}

impl Store {
    /// Runs an audited change: `f` makes the change through the transaction handle and returns
    /// its result with the audit entry (or entries) recording it; the entries are inserted in
    /// the same transaction, and both commit or neither does. A failed audit insert is
    /// [`StoreError::AuditWrite`], and nothing is changed.
    pub fn audited<T, A: AuditEntries, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(T, A), E>,
    ) -> Result<T, E> {
        self.write(|tx| {
            let (value, entries) = f(tx)?;
            insert_entries(tx.conn, &self.vault, &entries.into_entries())?;
            Ok(value)
        })
    }

    /// Appends an entry durably: returns only once it is committed (group commit). Nothing may
    /// be disclosed unless this returns `Ok`.
    pub fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        match self.audit_writer.submit(e.clone()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::Replayed),
            Err(e) => Err(StoreError::AuditWrite(e.to_string())),
        }
    }

    /// Appends several entries durably, sharing commits: returns once every one is committed,
    /// or the first failure (some may then be committed, none is disclosed).
    pub fn append_audits(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        for written in self.audit_writer.submit_many(entries) {
            match written {
                Ok(true) => {}
                Ok(false) => return Err(StoreError::Replayed),
                Err(e) => return Err(StoreError::AuditWrite(e.to_string())),
            }
        }
        Ok(())
    }

    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    pub fn audit_entries(&self, after_seq: i64, limit: i64) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<AuditRow> =
            ae::table.filter(ae::seq.gt(after_seq)).order(ae::seq.asc()).limit(limit).load(&mut conn)?;
        self.decode(rows)
    }

    /// Audit entries by id (in no particular order; unknown ids are left out).
    pub fn audit_entries_by_id(&self, ids: &[Uuid]) -> Result<Vec<StoredAuditEntry>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<AuditRow> = ae::table.filter(ae::id.eq_any(&ids)).load(&mut conn)?;
        self.decode(rows)
    }

    pub(crate) fn decode(&self, rows: Vec<AuditRow>) -> Result<Vec<StoredAuditEntry>, StoreError> {
        rows.into_iter()
            .map(|r| {
                let justification = r
                    .justification
                    .map(|j: Vec<u8>| self.vault().open(&j, &format!("audit/{}/justification", r.id)))
                    .transpose()?
                    .map(|j: Vec<u8>| String::from_utf8_lossy(&j).into_owned());
                Ok(StoredAuditEntry {
                    seq: r.seq,
                    leaf_index: r.leaf_index,
                    entry: AuditEntry {
                        id: Uuid::parse_str(&r.id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        at: r.at.and_utc(),
                        request_id: r.request_id,
                        action: r.action,
                        actor_org: r.actor_org,
                        actor_org_type: r.actor_org_type,
                        actor_system: r.actor_system,
                        actor_user: r.actor_user,
                        actor_role: r.actor_role,
                        purpose: r.purpose,
                        context_ref: r.context_ref,
                        break_glass: r.break_glass,
                        justification,
                        subject_refs: parse(&r.subject_refs)?,
                        decision: r.decision,
                        notices: parse(&r.notices)?,
                        lawful_basis: parse(&r.lawful_basis)?,
                        clauses: parse(&r.clauses)?,
                        agreement_version: r.agreement_version,
                        outcome: u16::try_from(r.outcome).unwrap_or_default(),
                        ig_review: r.ig_review,
                        federation: r.federation.as_deref().map(parse).transpose()?,
                        received_by: None,
                        replay_guard: None,
                    },
                })
            })
            .collect()
    }
}

impl Tx<'_> {
    /// Records the IG outcome on a pending break-glass entry. Returns false if there is no such
    /// pending entry (unknown, not break-glass, or already reviewed). The status column is
    /// outside the seal; the review itself is recorded as an audit entry of its own.
    pub fn review_break_glass(&mut self, audit_id: Uuid, outcome: &str) -> Result<bool, StoreError> {
        let n = diesel::update(
            ae::table
                .filter(ae::id.eq(audit_id.to_string()))
                .filter(ae::ig_review.eq("pending"))
                .filter(ae::break_glass.eq(true)),
        )
        .set(ae::ig_review.eq(outcome))
        .execute(self.conn)?;
        Ok(n == 1)
    }
}
