//! Notices and their versions. History is append-only: every change writes a new version and
//! the current-state row moves forward only from the version the change was based on.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;
use vpr_domain::notice::{MatchKind, NoticeContent, VersionInfo};
use vpr_domain::vocab::{ChangeKind, NoticeStatus};

use crate::db::{write_tx, DbConnection};
use crate::schema::{idempotency_keys, notice_events, notice_match_keys, notice_versions, notices};
use crate::{Store, StoreError};

/// A notice version as stored, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotice {
    /// Notice id.
    pub id: Uuid,
    /// Publishing organisation's ODS code.
    pub publisher_ods: String,
    /// Status as of this version.
    pub status: NoticeStatus,
    /// When the notice was first published.
    pub created_at: DateTime<Utc>,
    /// This version.
    pub version: VersionInfo,
    /// This version's content.
    pub content: NoticeContent,
}

/// A notice to publish.
#[derive(Debug, Clone)]
pub struct NewNotice {
    /// Publisher's ODS code.
    pub publisher_ods: String,
    /// Publishing system's client id.
    pub by_system: String,
    /// Validated content.
    pub content: NoticeContent,
    /// `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<(String, String)>,
}

/// The result of a publish.
#[derive(Debug, Clone)]
pub enum Published {
    /// A new notice.
    Created(StoredNotice),
    /// A retry of an earlier publish with the same idempotency key: its first version.
    Replayed(StoredNotice),
}

/// A change by the publisher.
#[derive(Debug, Clone)]
pub enum Change {
    /// New content (`PUT`).
    Amend(Box<NoticeContent>),
    /// Re-applied with a new review date.
    Review {
        /// The new review date.
        review_date: NaiveDate,
        /// The reviewer's note.
        note: String,
    },
    /// Withdrawn, or marked as entered in error.
    Withdraw {
        /// Why.
        reason: String,
        /// Published by mistake rather than withdrawn on review.
        entered_in_error: bool,
    },
}

#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = notices)]
struct NoticeRow {
    id: String,
    publisher_ods: String,
    status: String,
    current_version: i64,
    category: String,
    risk_level: String,
    medical_factor_operative: bool,
    review_date: NaiveDate,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    /// The category it was published with, never amended (the figures count by it).
    published_category: String,
}

#[derive(Queryable, Selectable, Insertable, Debug, Clone)]
#[diesel(table_name = notice_versions)]
struct VersionRow {
    notice_id: String,
    version: i64,
    change_kind: String,
    status: String,
    content: Vec<u8>,
    reason: Option<Vec<u8>>,
    by_system: Option<String>,
    created_at: NaiveDateTime,
}

/// Times as both backends store them (PostgreSQL keeps microseconds), so what a write returns
/// equals what a later read returns.
fn db_time(now: DateTime<Utc>) -> NaiveDateTime {
    use chrono::{DurationRound, TimeDelta};
    let t = now.naive_utc();
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// What one new version records.
struct Step<'a> {
    kind: ChangeKind,
    status: NoticeStatus,
    content: &'a NoticeContent,
    reason: Option<&'a str>,
    by_system: Option<&'a str>,
}

fn context(id: &str, version: i64, part: &str) -> String {
    format!("notice/{id}/{version}/{part}")
}

fn status_of(code: &str) -> Result<NoticeStatus, StoreError> {
    NoticeStatus::from_code(code).ok_or_else(|| StoreError::Corrupt(format!("unknown status `{code}`")))
}

impl Store {
    fn seal_version(
        &self,
        id: &str,
        version: i64,
        step: &Step<'_>,
        at: NaiveDateTime,
    ) -> Result<VersionRow, StoreError> {
        let plain = serde_json::to_vec(step.content).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed_reason =
            step.reason.map(|r| self.vault.seal(r.as_bytes(), &context(id, version, "reason"))).transpose()?;
        Ok(VersionRow {
            notice_id: id.to_owned(),
            version,
            change_kind: step.kind.code().to_owned(),
            status: step.status.code().to_owned(),
            content: self.vault.seal(&plain, &context(id, version, "content"))?,
            reason: sealed_reason,
            by_system: step.by_system.map(str::to_owned),
            created_at: at,
        })
    }

    fn open_version(&self, row: VersionRow, head: &NoticeRow) -> Result<StoredNotice, StoreError> {
        let plain = self.vault.open(&row.content, &context(&row.notice_id, row.version, "content"))?;
        let content: NoticeContent = serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let reason = row
            .reason
            .map(|r| self.vault.open(&r, &context(&row.notice_id, row.version, "reason")))
            .transpose()?
            .map(|r| String::from_utf8_lossy(&r).into_owned());
        let change = ChangeKind::from_code(&row.change_kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown change kind `{}`", row.change_kind)))?;
        Ok(StoredNotice {
            id: Uuid::parse_str(&row.notice_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            publisher_ods: head.publisher_ods.clone(),
            status: status_of(&row.status)?,
            created_at: head.created_at.and_utc(),
            version: VersionInfo {
                version: row.version,
                change,
                at: row.created_at.and_utc(),
                by_system: row.by_system,
                reason,
            },
            content,
        })
    }

    fn write_match_keys(&self, conn: &mut DbConnection, id: &str, content: &NoticeContent) -> Result<(), StoreError> {
        diesel::delete(notice_match_keys::table.filter(notice_match_keys::notice_id.eq(id))).execute(conn)?;
        let mut seen = std::collections::BTreeSet::new();
        for (kind, key) in content.subject.match_keys() {
            let blind = self.vault.blind_index(kind, &key);
            if seen.insert(blind.clone()) {
                diesel::insert_into(notice_match_keys::table)
                    .values((
                        notice_match_keys::blind_index.eq(blind),
                        notice_match_keys::notice_id.eq(id),
                        notice_match_keys::kind.eq(kind.code()),
                    ))
                    .execute(conn)?;
            }
        }
        Ok(())
    }

    /// Publishes a notice, durably, in one transaction with its match keys and idempotency key.
    pub fn publish(&self, new: &NewNotice, now: DateTime<Utc>) -> Result<Published, StoreError> {
        let mut conn = self.conn()?;
        // A concurrent retry with the same key can lose the insert race on PostgreSQL; the
        // second attempt then finds the winner's row.
        match self.publish_once(&mut conn, new, now) {
            Err(StoreError::Db(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
                if new.idempotency.is_some() =>
            {
                self.publish_once(&mut conn, new, now)
            }
            other => other,
        }
    }

    fn publish_once(
        &self,
        conn: &mut DbConnection,
        new: &NewNotice,
        now: DateTime<Utc>,
    ) -> Result<Published, StoreError> {
        write_tx(conn, |conn| {
            if let Some((key, hash)) = &new.idempotency {
                let earlier: Option<(String, String)> = idempotency_keys::table
                    .filter(idempotency_keys::org_ods.eq(&new.publisher_ods))
                    .filter(idempotency_keys::idempotency_key.eq(key))
                    .select((idempotency_keys::request_hash, idempotency_keys::notice_id))
                    .first(conn)
                    .optional()?;
                if let Some((earlier_hash, notice_id)) = earlier {
                    if &earlier_hash != hash {
                        return Err(StoreError::IdempotencyConflict);
                    }
                    let first =
                        self.version_in(conn, &notice_id, 1)?.ok_or(StoreError::NotFound(crate::Missing::Notice))?;
                    return Ok(Published::Replayed(first));
                }
            }
            let at = db_time(now);
            let id = Uuid::new_v4().to_string();
            let c = &new.content;
            let head = NoticeRow {
                id: id.clone(),
                publisher_ods: new.publisher_ods.clone(),
                status: NoticeStatus::Active.code().to_owned(),
                current_version: 1,
                category: c.category.code().to_owned(),
                risk_level: c.risk_level.code().to_owned(),
                medical_factor_operative: c.medical_factor_operative,
                review_date: c.review_date,
                created_at: at,
                updated_at: at,
                published_category: c.category.code().to_owned(),
            };
            diesel::insert_into(notices::table).values(&head).execute(conn)?;
            let step = Step {
                kind: ChangeKind::Created,
                status: NoticeStatus::Active,
                content: c,
                reason: None,
                by_system: Some(&new.by_system),
            };
            let row = self.seal_version(&id, 1, &step, at)?;
            diesel::insert_into(notice_versions::table).values(&row).execute(conn)?;
            self.write_match_keys(conn, &id, c)?;
            record_notice_event(conn, &id, 1, ChangeKind::Created, at)?;
            if let Some((key, hash)) = &new.idempotency {
                diesel::insert_into(idempotency_keys::table)
                    .values((
                        idempotency_keys::org_ods.eq(&new.publisher_ods),
                        idempotency_keys::idempotency_key.eq(key),
                        idempotency_keys::request_hash.eq(hash),
                        idempotency_keys::notice_id.eq(&id),
                        idempotency_keys::created_at.eq(at),
                    ))
                    .execute(conn)?;
            }
            Ok(Published::Created(self.open_version(row, &head)?))
        })
    }

    fn head_in(&self, conn: &mut DbConnection, id: &str) -> Result<Option<NoticeRow>, StoreError> {
        Ok(notices::table.find(id).select(NoticeRow::as_select()).first(conn).optional()?)
    }

    pub(crate) fn version_in(
        &self,
        conn: &mut DbConnection,
        id: &str,
        version: i64,
    ) -> Result<Option<StoredNotice>, StoreError> {
        let Some(head) = self.head_in(conn, id)? else {
            return Ok(None);
        };
        let row: Option<VersionRow> =
            notice_versions::table.find((id, version)).select(VersionRow::as_select()).first(conn).optional()?;
        row.map(|r| self.open_version(r, &head)).transpose()
    }

    /// The current version of a notice.
    pub fn get(&self, id: Uuid) -> Result<Option<StoredNotice>, StoreError> {
        let mut conn = self.conn()?;
        let id = id.to_string();
        let Some(head) = self.head_in(&mut conn, &id)? else {
            return Ok(None);
        };
        self.version_in(&mut conn, &id, head.current_version)
    }

    /// The current version of a notice with the blind indexes of its subject (as
    /// [`Store::current_notices`] gives it).
    pub fn current_notice(&self, id: Uuid) -> Result<Option<(StoredNotice, Vec<String>)>, StoreError> {
        Ok(self.current_notices(&[id])?.remove(&id))
    }

    /// The current versions of several notices with the blind indexes of their subjects, from
    /// one connection: one query for the heads, one for the versions not cached; unknown ids are
    /// left out. Served from a small
    /// cache of recently read notices when the current version is unchanged (one fan-out
    /// delivers the same notice to many subscribers). The version is checked on every call, so
    /// a change is seen at once; entries live at most a minute.
    pub fn current_notices(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, (StoredNotice, Vec<String>)>, StoreError> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut conn = self.conn()?;
        let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let heads: Vec<NoticeRow> =
            notices::table.filter(notices::id.eq_any(&keys)).select(NoticeRow::as_select()).load(&mut conn)?;
        let mut missed = Vec::new();
        for head in heads {
            let id = Uuid::parse_str(&head.id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match self.recent.get(id, head.current_version) {
                Some(hit) => {
                    out.insert(id, hit);
                }
                None => missed.push((id, head)),
            }
        }
        // The current versions of the rest in one query (each head's own version: a change
        // committed since the heads were read is seen at the next call).
        let wanted: Vec<&str> = missed.iter().map(|(_, h)| h.id.as_str()).collect();
        let mut rows: HashMap<(String, i64), VersionRow> = HashMap::new();
        for chunk in wanted.chunks(500) {
            let found: Vec<VersionRow> = notice_versions::table
                .inner_join(notices::table)
                .filter(notices::id.eq_any(chunk))
                .filter(notice_versions::version.eq(notices::current_version))
                .select(VersionRow::as_select())
                .load(&mut conn)?;
            rows.extend(found.into_iter().map(|r| ((r.notice_id.clone(), r.version), r)));
        }
        for (id, head) in missed {
            let Some(row) = rows.remove(&(head.id.clone(), head.current_version)) else { continue };
            let n = self.open_version(row, &head)?;
            let mut blind: Vec<String> =
                n.content.subject.match_keys().iter().map(|(k, v)| self.vault.blind_index(*k, v)).collect();
            blind.sort();
            blind.dedup();
            self.recent.put(id, head.current_version, &n, &blind);
            out.insert(id, (n, blind));
        }
        Ok(out)
    }

    /// Every version of a notice, oldest first.
    pub fn versions(&self, id: Uuid) -> Result<Vec<StoredNotice>, StoreError> {
        let mut conn = self.conn()?;
        let id = id.to_string();
        let Some(head) = self.head_in(&mut conn, &id)? else {
            return Err(StoreError::NotFound(crate::Missing::Notice));
        };
        let rows: Vec<VersionRow> = notice_versions::table
            .filter(notice_versions::notice_id.eq(&id))
            .order(notice_versions::version.asc())
            .select(VersionRow::as_select())
            .load(&mut conn)?;
        rows.into_iter().map(|r| self.open_version(r, &head)).collect()
    }

    /// Ids of the notices whose current subject has this match key (via its blind index).
    pub fn find_by_match_key(&self, kind: MatchKind, normalised: &str) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn()?;
        let blind = self.vault.blind_index(kind, normalised);
        let ids: Vec<String> = notice_match_keys::table
            .filter(notice_match_keys::blind_index.eq(blind))
            .select(notice_match_keys::notice_id)
            .order(notice_match_keys::notice_id.asc())
            .load(&mut conn)?;
        ids.iter().map(|i| Uuid::parse_str(i).map_err(|e| StoreError::Corrupt(e.to_string()))).collect()
    }

    /// Ids of the notices whose current subject has any of these blind indexes, with the
    /// match kinds that matched.
    pub fn find_by_blind_indexes(&self, blind: &[String]) -> Result<Vec<(Uuid, Vec<String>)>, StoreError> {
        if blind.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = notice_match_keys::table
            .filter(notice_match_keys::blind_index.eq_any(blind))
            .select((notice_match_keys::notice_id, notice_match_keys::kind))
            .order(notice_match_keys::notice_id.asc())
            .load(&mut conn)?;
        let mut out: Vec<(Uuid, Vec<String>)> = Vec::new();
        for (id, kind) in rows {
            let id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match out.last_mut() {
                Some((last, kinds)) if *last == id => kinds.push(kind),
                _ => out.push((id, vec![kind])),
            }
        }
        Ok(out)
    }

    /// Which of these notices `publisher` published.
    pub fn published_by(&self, publisher: &str, ids: &[String]) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        Ok(notices::table
            .filter(notices::publisher_ods.eq(publisher))
            .filter(notices::id.eq_any(ids))
            .select(notices::id)
            .load(&mut conn)?)
    }

    /// The blind indexes of a notice's current subject (to match consents and objections).
    pub fn blind_indexes_of(&self, id: Uuid) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        Ok(notice_match_keys::table
            .filter(notice_match_keys::notice_id.eq(id.to_string()))
            .select(notice_match_keys::blind_index)
            .load(&mut conn)?)
    }

    /// Applies a publisher's change, making a new version. `expected_version` (from `If-Match`)
    /// must be current when given.
    pub fn change(
        &self,
        id: Uuid,
        actor_org: &str,
        actor_system: &str,
        expected_version: Option<i64>,
        change: Change,
        now: DateTime<Utc>,
    ) -> Result<StoredNotice, StoreError> {
        let mut conn = self.conn()?;
        let id = id.to_string();
        write_tx(&mut conn, |conn| {
            let head = self.head_in(conn, &id)?.ok_or(StoreError::NotFound(crate::Missing::Notice))?;
            if head.publisher_ods != actor_org {
                return Err(StoreError::NotPublisher);
            }
            if expected_version.is_some_and(|v| v != head.current_version) {
                return Err(StoreError::VersionMismatch { current: head.current_version });
            }
            let current = self
                .version_in(conn, &id, head.current_version)?
                .ok_or(StoreError::NotFound(crate::Missing::Notice))?;
            let status = current.status;
            let (kind, new_status, content, reason) = match change {
                Change::Amend(content) => {
                    if status != NoticeStatus::Active {
                        return Err(StoreError::NotChangeable { status, action: "amended" });
                    }
                    (ChangeKind::Amended, NoticeStatus::Active, *content, None)
                }
                Change::Review { review_date, note } => {
                    if !matches!(status, NoticeStatus::Active | NoticeStatus::Expired) {
                        return Err(StoreError::NotChangeable { status, action: "reviewed" });
                    }
                    let mut content = current.content.clone();
                    content.review_date = review_date;
                    (ChangeKind::Reviewed, NoticeStatus::Active, content, Some(note))
                }
                Change::Withdraw { reason, entered_in_error } => {
                    if !matches!(status, NoticeStatus::Active | NoticeStatus::Expired) {
                        return Err(StoreError::NotChangeable { status, action: "withdrawn" });
                    }
                    let (kind, st) = if entered_in_error {
                        (ChangeKind::EnteredInError, NoticeStatus::EnteredInError)
                    } else {
                        (ChangeKind::Withdrawn, NoticeStatus::Withdrawn)
                    };
                    (kind, st, current.content.clone(), Some(reason))
                }
            };
            let step = Step {
                kind,
                status: new_status,
                content: &content,
                reason: reason.as_deref(),
                by_system: Some(actor_system),
            };
            self.advance(conn, &head, &step, now)
        })
    }

    /// Moves a notice to its next version, only from the version read (optimistic concurrency:
    /// a concurrent writer on another replica makes this fail rather than overwrite).
    fn advance(
        &self,
        conn: &mut DbConnection,
        head: &NoticeRow,
        step: &Step<'_>,
        now: DateTime<Utc>,
    ) -> Result<StoredNotice, StoreError> {
        let at = db_time(now);
        let next = head.current_version + 1;
        let content = step.content;
        let moved = diesel::update(
            notices::table.filter(notices::id.eq(&head.id)).filter(notices::current_version.eq(head.current_version)),
        )
        .set((
            notices::current_version.eq(next),
            notices::status.eq(step.status.code()),
            notices::category.eq(content.category.code()),
            notices::risk_level.eq(content.risk_level.code()),
            notices::medical_factor_operative.eq(content.medical_factor_operative),
            notices::review_date.eq(content.review_date),
            notices::updated_at.eq(at),
        ))
        .execute(conn)?;
        if moved != 1 {
            return Err(StoreError::VersionMismatch { current: head.current_version + 1 });
        }
        let row = self.seal_version(&head.id, next, step, at)?;
        diesel::insert_into(notice_versions::table).values(&row).execute(conn)?;
        if step.kind == ChangeKind::Amended {
            self.write_match_keys(conn, &head.id, content)?;
        }
        // The outbox: subscribers learn of the change from this row, committed with it.
        record_notice_event(conn, &head.id, next, step.kind, at)?;
        let mut new_head = head.clone();
        new_head.current_version = next;
        self.open_version(row, &new_head)
    }

    /// Expires active notices whose review date has passed (`review_date < today`). Safe to run
    /// on several replicas at once: each notice moves only from the version read.
    pub fn expire_due(&self, today: NaiveDate, now: DateTime<Utc>) -> Result<Vec<StoredNotice>, StoreError> {
        let mut conn = self.conn()?;
        let due: Vec<String> = notices::table
            .filter(notices::status.eq(NoticeStatus::Active.code()))
            .filter(notices::review_date.lt(today))
            .select(notices::id)
            .limit(500)
            .load(&mut conn)?;
        let mut expired = Vec::new();
        for id in due {
            let result = write_tx(&mut conn, |conn| {
                let Some(head) = self.head_in(conn, &id)? else {
                    return Ok(None);
                };
                if head.status != NoticeStatus::Active.code() || head.review_date >= today {
                    return Ok(None);
                }
                let current = self
                    .version_in(conn, &id, head.current_version)?
                    .ok_or(StoreError::NotFound(crate::Missing::Notice))?;
                let reason = format!("review date {} passed without review", current.content.review_date);
                let step = Step {
                    kind: ChangeKind::Expired,
                    status: NoticeStatus::Expired,
                    content: &current.content,
                    reason: Some(&reason),
                    by_system: None,
                };
                self.advance(conn, &head, &step, now).map(Some)
            });
            match result {
                Ok(Some(n)) => expired.push(n),
                Ok(None) | Err(StoreError::VersionMismatch { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}

/// A cached notice: its version, when it was read, the notice and its subject's blind indexes.
type Recent = (i64, std::time::Instant, StoredNotice, Vec<String>);

/// Recently read current notices, keyed by id and checked against the current version.
#[derive(Debug, Default)]
pub(crate) struct RecentNotices {
    map: std::sync::Mutex<std::collections::HashMap<Uuid, Recent>>,
}

impl RecentNotices {
    const LIMIT: usize = 4096;
    const TTL: std::time::Duration = std::time::Duration::from_secs(60);

    fn get(&self, id: Uuid, version: i64) -> Option<(StoredNotice, Vec<String>)> {
        let map = self.map.lock().ok()?;
        let (v, at, n, blind) = map.get(&id)?;
        (*v == version && at.elapsed() < Self::TTL).then(|| (n.clone(), blind.clone()))
    }

    fn put(&self, id: Uuid, version: i64, n: &StoredNotice, blind: &[String]) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= Self::LIMIT {
                map.retain(|_, (_, at, _, _)| at.elapsed() < Self::TTL);
                if map.len() >= Self::LIMIT {
                    map.clear();
                }
            }
            map.insert(id, (version, std::time::Instant::now(), n.clone(), blind.to_vec()));
        }
    }
}

/// Writes the outbox row of a notice change (inside the change's transaction).
fn record_notice_event(
    conn: &mut DbConnection,
    notice_id: &str,
    version: i64,
    kind: ChangeKind,
    at: NaiveDateTime,
) -> Result<(), StoreError> {
    diesel::insert_into(notice_events::table)
        .values((
            notice_events::notice_id.eq(notice_id),
            notice_events::version.eq(version),
            notice_events::kind.eq(kind.code()),
            notice_events::at.eq(at),
        ))
        .execute(conn)?;
    Ok(())
}

/// A notice as its publisher's lists show it: what it is and where it stands, never its
/// subject or content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeHead {
    /// Its id.
    pub id: Uuid,
    /// Status.
    pub status: String,
    /// The current version.
    pub version: i64,
    /// Category.
    pub category: String,
    /// Risk level.
    pub risk_level: String,
    /// When it is due for review.
    pub review_date: NaiveDate,
    /// When it was first published.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

type HeadColumns = (String, String, i64, String, String, NaiveDate, NaiveDateTime, NaiveDateTime);

impl Store {
    /// `publisher`'s notices with `status`, reviewed by `review_by` when given (soonest due
    /// first), else most recently changed first; at most `limit`.
    pub fn publisher_notices(
        &self,
        publisher: &str,
        status: NoticeStatus,
        review_by: Option<NaiveDate>,
        limit: i64,
    ) -> Result<Vec<NoticeHead>, StoreError> {
        let mut conn = self.conn()?;
        let mut q = notices::table
            .filter(notices::publisher_ods.eq(publisher))
            .filter(notices::status.eq(status.code()))
            .select((
                notices::id,
                notices::status,
                notices::current_version,
                notices::category,
                notices::risk_level,
                notices::review_date,
                notices::created_at,
                notices::updated_at,
            ))
            .limit(limit)
            .into_boxed();
        q = match review_by {
            Some(by) => q.filter(notices::review_date.le(by)).order((notices::review_date.asc(), notices::id.asc())),
            None => q.order((notices::updated_at.desc(), notices::id.asc())),
        };
        let rows: Vec<HeadColumns> = q.load(&mut conn)?;
        rows.into_iter()
            .map(|(id, status, version, category, risk_level, review_date, created, updated)| {
                Ok(NoticeHead {
                    id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    status,
                    version,
                    category,
                    risk_level,
                    review_date,
                    created_at: created.and_utc(),
                    updated_at: updated.and_utc(),
                })
            })
            .collect()
    }
}
