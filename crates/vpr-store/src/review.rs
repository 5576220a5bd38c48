//! Queries for information governance over the audit log: filtered search with stable paging,
//! daily summaries, a publisher's feed of decisions on its notices, and retention.
//!
//! Subjects are found by blind reference only: an entry concerns a subject if it was a search
//! with one of the subject's identifiers, or if it decided on a notice about the subject.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{AuditEntry, AuditRow, StoredAuditEntry};
use crate::db::{write_tx, DbConnection};
use crate::schema::{
    audit_entries as ae, audit_notice_refs as nrefs, audit_subject_refs as srefs, notice_match_keys as keys, notices,
};
use crate::{Store, StoreError};

type Db = <DbConnection as Connection>::Backend;

/// A subject, as the audit knows it: the references entries record (`kind:blind-index`) and
/// the blind indexes notices are matched by.
#[derive(Debug, Clone, Default)]
pub struct SubjectKeys {
    /// `kind:blind-index` references.
    pub refs: Vec<String>,
    /// Blind indexes.
    pub blind: Vec<String>,
}

/// Filters for the review API; every one given must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Actor organisation (ODS code).
    pub org: Option<String>,
    /// Actor user.
    pub user: Option<String>,
    /// Actor role.
    pub role: Option<String>,
    /// Purpose of use.
    pub purpose: Option<String>,
    /// Overall decision.
    pub decision: Option<String>,
    /// Action (`lookup`, `read`, `access-log`, ...).
    pub action: Option<String>,
    /// Break-glass asserted (or not).
    pub break_glass: Option<bool>,
    /// Entries deciding on this notice.
    pub notice: Option<Uuid>,
    /// Entries concerning this subject.
    pub subject: Option<SubjectKeys>,
    /// Entries deciding on a notice of this publisher.
    pub publisher: Option<String>,
    /// Only what this organisation may review: entries its own people and systems made, and
    /// entries deciding on its notices (`None`: the whole ICS).
    pub visible_to: Option<String>,
}

impl AuditQuery {
    pub(crate) fn boxed(&self) -> ae::BoxedQuery<'_, Db> {
        // Pruned entries keep only their seal: there is nothing left to review.
        let mut q = ae::table.filter(ae::pruned_at.is_null()).into_boxed::<Db>();
        if let Some(from) = self.from {
            q = q.filter(ae::at.ge(from.naive_utc()));
        }
        if let Some(to) = self.to {
            q = q.filter(ae::at.lt(to.naive_utc()));
        }
        if let Some(org) = &self.org {
            q = q.filter(ae::actor_org.eq(org));
        }
        if let Some(user) = &self.user {
            q = q.filter(ae::actor_user.eq(user));
        }
        if let Some(role) = &self.role {
            q = q.filter(ae::actor_role.eq(role));
        }
        if let Some(purpose) = &self.purpose {
            q = q.filter(ae::purpose.eq(purpose));
        }
        if let Some(decision) = &self.decision {
            q = q.filter(ae::decision.eq(decision));
        }
        if let Some(action) = &self.action {
            q = q.filter(ae::action.eq(action));
        }
        if let Some(bg) = self.break_glass {
            q = q.filter(ae::break_glass.eq(bg));
        }
        if let Some(notice) = self.notice {
            q = q.filter(
                ae::id.eq_any(nrefs::table.filter(nrefs::notice_id.eq(notice.to_string())).select(nrefs::audit_id)),
            );
        }
        if let Some(subject) = &self.subject {
            let searched = srefs::table.filter(srefs::subject_ref.eq_any(&subject.refs)).select(srefs::audit_id);
            let about = nrefs::table
                .filter(
                    nrefs::notice_id
                        .eq_any(keys::table.filter(keys::blind_index.eq_any(&subject.blind)).select(keys::notice_id)),
                )
                .select(nrefs::audit_id);
            q = q.filter(ae::id.eq_any(searched).or(ae::id.eq_any(about)));
        }
        if let Some(org) = &self.visible_to {
            let theirs = nrefs::table
                .filter(
                    nrefs::notice_id.eq_any(notices::table.filter(notices::publisher_ods.eq(org)).select(notices::id)),
                )
                .select(nrefs::audit_id);
            q = q.filter(ae::actor_org.eq(org).or(ae::id.eq_any(theirs)));
        }
        if let Some(publisher) = &self.publisher {
            q =
                q.filter(
                    ae::id.eq_any(
                        nrefs::table
                            .filter(nrefs::notice_id.eq_any(
                                notices::table.filter(notices::publisher_ods.eq(publisher)).select(notices::id),
                            ))
                            .select(nrefs::audit_id),
                    ),
                );
        }
        q
    }
}

/// Counts for one day, organisation and purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
pub struct SummaryRow {
    /// `YYYY-MM-DD` (UTC).
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub day: String,
    /// Actor organisation.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub actor_org: String,
    /// Purpose of use, if one was asserted.
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub purpose: Option<String>,
    /// Overall decision.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub decision: String,
    /// Entries.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub entries: i64,
    /// Of which break-glass.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub break_glass: i64,
}

impl Store {
    /// The audit entries concerning one notice, newest first, before `before_seq` (for stable
    /// paging), at most `limit`.
    pub fn notice_access_log(
        &self,
        notice_id: Uuid,
        before_seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let q = AuditQuery { notice: Some(notice_id), ..Default::default() };
        self.search_audit(&q, before_seq, limit)
    }

    /// Entries matching `q`, newest first, older than the `before` seq (the paging cursor), at
    /// most `limit`. Paging by `seq` is stable: entries already seen never reappear or shift,
    /// and entries appended meanwhile appear only on a fresh first page.
    pub fn search_audit(
        &self,
        q: &AuditQuery,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let mut conn = self.conn()?;
        let mut query = q.boxed().order(ae::seq.desc()).limit(limit);
        if let Some(before) = before {
            query = query.filter(ae::seq.lt(before));
        }
        let rows: Vec<AuditRow> = query.load(&mut conn)?;
        self.decode(rows)
    }

    /// Sealed entries matching `q` after leaf `after`, in tree order, at most `limit`. The tree
    /// order never changes once sealed, so a reader that keeps its cursor misses nothing.
    pub fn sealed_audit_after(
        &self,
        q: &AuditQuery,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<AuditRow> = q
            .boxed()
            .filter(ae::leaf_index.gt(after.unwrap_or(-1)))
            .order(ae::leaf_index.asc())
            .limit(limit)
            .load(&mut conn)?;
        self.decode(rows)
    }

    /// Break-glass accesses with this IG review status (`pending`, or an outcome), newest
    /// first, at most `limit`; with `visible_to`, only those that organisation may review.
    pub fn break_glass_entries(
        &self,
        status: &str,
        visible_to: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredAuditEntry>, StoreError> {
        let mut conn = self.conn()?;
        let scope =
            AuditQuery { break_glass: Some(true), visible_to: visible_to.map(str::to_owned), ..Default::default() };
        let rows: Vec<AuditRow> =
            scope.boxed().filter(ae::ig_review.eq(status)).order(ae::seq.desc()).limit(limit).load(&mut conn)?;
        self.decode(rows)
    }

    /// Entries per UTC day, actor organisation, purpose and decision, for days `from..=to`.
    pub fn audit_summary(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<SummaryRow>, StoreError> {
        let mut conn = self.conn()?;
        let start = from.and_hms_opt(0, 0, 0).unwrap_or_default();
        let end = to.succ_opt().unwrap_or(to).and_hms_opt(0, 0, 0).unwrap_or_default();
        // The bounds are dates parsed and formatted here, never input text, so they are inlined
        // (placeholders differ between the two backends).
        let sql = format!(
            "SELECT substr(CAST(at AS TEXT), 1, 10) AS day, actor_org, purpose, decision, \
             COUNT(*) AS entries, SUM(CASE WHEN break_glass THEN 1 ELSE 0 END) AS break_glass \
             FROM audit_entries WHERE at >= '{}' AND at < '{}' AND pruned_at IS NULL \
             GROUP BY substr(CAST(at AS TEXT), 1, 10), actor_org, purpose, decision \
             ORDER BY day, actor_org, purpose, decision",
            start.format("%Y-%m-%d %H:%M:%S"),
            end.format("%Y-%m-%d %H:%M:%S"),
        );
        Ok(diesel::sql_query(sql).load(&mut conn)?)
    }

    /// Retention: removes the content of sealed entries older than `before`, keeping each
    /// entry's id, time, position and leaf hash so the tree and every checkpoint still verify.
    /// Entries are pruned oldest first in tree order and only as a prefix, so a pruned entry is
    /// never followed by a kept one. When any are, the audit entry `entry(pruned)` records the
    /// prune, committed with it. Returns how many entries were pruned.
    pub fn prune_audit(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        entry: impl FnOnce(usize) -> AuditEntry,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            // Sealing must not run meanwhile (on PostgreSQL each statement sees its own
            // snapshot): the sealer's lock makes the bounds below one consistent view.
            crate::seal::lock_sealer(conn)?;
            // The first sealed entry that must be kept bounds the prefix.
            let keep_from: Option<i64> = ae::table
                .filter(ae::leaf_index.is_not_null())
                .filter(ae::at.ge(before.naive_utc()))
                .select(diesel::dsl::min(ae::leaf_index))
                .first(conn)?;
            let sealed: Option<i64> = ae::table.select(diesel::dsl::max(ae::leaf_index)).first(conn)?;
            let bound = keep_from.unwrap_or_else(|| sealed.map_or(0, |m| m + 1));
            // Only entries past retention, whatever the bound says.
            let old = before.naive_utc();
            let doomed = ae::table
                .filter(ae::leaf_index.lt(bound))
                .filter(ae::at.lt(old))
                .filter(ae::pruned_at.is_null())
                .select(ae::id);
            diesel::delete(nrefs::table.filter(nrefs::audit_id.eq_any(doomed))).execute(conn)?;
            diesel::delete(srefs::table.filter(srefs::audit_id.eq_any(doomed))).execute(conn)?;
            let n = diesel::update(
                ae::table.filter(ae::leaf_index.lt(bound)).filter(ae::at.lt(old)).filter(ae::pruned_at.is_null()),
            )
            .set((
                ae::pruned_at.eq(Some(now.naive_utc())),
                ae::request_id.eq(""),
                ae::action.eq(""),
                ae::actor_org.eq(""),
                ae::actor_org_type.eq(""),
                ae::actor_system.eq(""),
                ae::actor_user.eq(None::<String>),
                ae::actor_role.eq(None::<String>),
                ae::purpose.eq(None::<String>),
                ae::context_ref.eq(None::<String>),
                ae::break_glass.eq(false),
                ae::justification.eq(None::<Vec<u8>>),
                ae::subject_refs.eq("[]"),
                ae::decision.eq(""),
                ae::notices.eq("[]"),
                ae::lawful_basis.eq("[]"),
                ae::clauses.eq("[]"),
                ae::agreement_version.eq(""),
                ae::outcome.eq(0),
                ae::ig_review.eq(None::<String>),
                ae::federation.eq(None::<String>),
            ))
            .execute(conn)?;
            if n > 0 {
                crate::audit::insert_entries(conn, &self.vault, &[entry(n)])?;
            }
            Ok(n)
        })
    }
}
