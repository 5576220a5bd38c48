//! The disclosure audit log: one entry per decision, permits and refusals alike, committed
//! before the response leaves the broker.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::write_tx;
use crate::schema::audit_entries as ae;
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

/// An audit entry to append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Entry id.
    pub id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// The request id (as in `X-Request-Id` and the logs).
    pub request_id: String,
    /// `lookup`, `read`, `consent`, `objection`.
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
    /// For a delivery or feed read: the subscription that received the permitted notices. Not
    /// part of the sealed entry; recorded beside it in the same transaction, so a subscriber
    /// that was given a notice is always told when it is withdrawn or expires.
    #[serde(skip)]
    pub received_by: Option<String>,
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

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
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

/// Group commit for the audit log: requests hand their entries to writer threads, which commit
/// everything waiting in one durable transaction and then acknowledge each. Every request still
/// waits for its own entry to be durable; the cost of a commit (an fsync) is shared.
pub(crate) type AuditWriter = crate::group::GroupCommit<AuditEntry, ()>;

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 512;

/// The audit writer: `writers` threads (one for SQLite, several for PostgreSQL, so an entry
/// arriving during a commit need not wait for it).
pub(crate) fn audit_writer(pool: crate::db::DbPool, vault: crate::Vault, writers: usize) -> AuditWriter {
    crate::group::GroupCommit::new(
        "audit-writer",
        writers,
        MAX_BATCH,
        std::sync::Arc::new(move |entries: &[&AuditEntry]| {
            write_batch(&pool, &vault, entries)?;
            Ok(vec![(); entries.len()])
        }),
    )
}

fn write_batch(pool: &crate::db::DbPool, vault: &crate::Vault, entries: &[&AuditEntry]) -> Result<(), StoreError> {
    use crate::schema::{audit_notice_refs as nrefs, audit_subject_refs as srefs};
    let mut rows = Vec::with_capacity(entries.len());
    let mut notice_refs = Vec::new();
    let mut subject_refs = Vec::new();
    let mut received = Vec::new();
    for e in entries {
        let id = e.id.to_string();
        let justification = e
            .justification
            .as_deref()
            .map(|j| vault.seal(j.as_bytes(), &format!("audit/{id}/justification")))
            .transpose()?;
        let mut seen = std::collections::BTreeSet::new();
        for n in e.notices.iter().filter(|n| seen.insert(n.id.as_str())) {
            notice_refs.push((nrefs::notice_id.eq(n.id.clone()), nrefs::audit_id.eq(id.clone())));
            if let (Some(sub), "permit") = (&e.received_by, n.decision.as_str()) {
                received.push((sub.clone(), n.id.clone()));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in e.subject_refs.iter().filter(|r| seen.insert(r.as_str())) {
            subject_refs.push((srefs::subject_ref.eq(r.clone()), srefs::audit_id.eq(id.clone())));
        }
        rows.push((
            ae::id.eq(id),
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
            ae::justification.eq(justification),
            ae::subject_refs.eq(json(&e.subject_refs)),
            ae::decision.eq(&e.decision),
            ae::notices.eq(json(&e.notices)),
            ae::lawful_basis.eq(json(&e.lawful_basis)),
            ae::clauses.eq(json(&e.clauses)),
            ae::agreement_version.eq(&e.agreement_version),
            ae::outcome.eq(i32::from(e.outcome)),
            ae::ig_review.eq(&e.ig_review),
        ));
    }
    let mut conn = pool.get().map_err(|e| StoreError::Unavailable(e.to_string()))?;
    // A few multi-row statements per batch, not one round trip per row.
    write_tx(&mut conn, |conn| {
        crate::db::insert_chunks!(conn, ae::table, rows, 512);
        crate::db::insert_chunks!(conn, nrefs::table, notice_refs, 2000);
        crate::db::insert_chunks!(conn, srefs::table, subject_refs, 2000);
        crate::subscriptions::record_received(conn, &received)?;
        Ok(())
    })
}

impl Store {
    /// Appends an entry durably: returns only once it is committed (group commit). Nothing may
    /// be disclosed unless this returns `Ok`.
    pub fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.audit_writer.submit(e.clone())
    }

    /// Appends several entries durably, sharing commits: returns once every one is committed,
    /// or the first failure (some may then be committed, none is disclosed).
    pub fn append_audits(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        self.audit_writer.submit_many(entries).into_iter().collect()
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

    /// The audit entries concerning one notice, newest first, before `before_seq` (for stable
    /// paging), at most `limit`.
    pub fn notice_access_log(
        &self,
        notice_id: Uuid,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let q = crate::review::AuditQuery { notice: Some(notice_id), ..Default::default() };
        self.search_audit(&q, before_seq, limit)
    }

    /// Break-glass accesses with this IG review status (`pending`, or an outcome), newest
    /// first, at most `limit`.
    pub fn break_glass_entries(&self, status: &str, limit: i64) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<AuditRow> = ae::table
            .filter(ae::break_glass.eq(true))
            .filter(ae::ig_review.eq(status))
            .order(ae::seq.desc())
            .limit(limit)
            .load(&mut conn)?;
        self.decode(rows)
    }

    /// Records the IG outcome on a pending break-glass entry. Returns false if there is no such
    /// pending entry (unknown, not break-glass, or already reviewed). The status column is
    /// outside the seal; the review itself is recorded as an audit entry of its own.
    pub fn review_break_glass(&self, audit_id: Uuid, outcome: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let n = diesel::update(
            ae::table
                .filter(ae::id.eq(audit_id.to_string()))
                .filter(ae::ig_review.eq("pending"))
                .filter(ae::break_glass.eq(true)),
        )
        .set(ae::ig_review.eq(outcome))
        .execute(&mut conn)?;
        Ok(n == 1)
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
                        received_by: None,
                    },
                })
            })
            .collect()
    }
}
