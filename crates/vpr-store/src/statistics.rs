//! Raw counts for the figures: notices published, and notices disclosed, per month and
//! organisation, category and purpose (the latter kept by the sealer as it seals, in
//! `figure_counts`). The application protects them before anyone sees them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use crate::audit::{AuditRow, AuditedNotice};
use crate::db::DbConnection;
use crate::schema::{figure_counts as fc, notices};
use crate::{Store, StoreError};

/// The actions whose entries record a notice shown to someone (their per-notice `permit`).
pub const DISCLOSING_ACTIONS: [&str; 8] =
    ["lookup", "relayed-lookup", "read", "fhir-search", "fhir-read", "feed", "fhir-events", "deliver"];

/// A count for one month, organisation, category and purpose.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct CountRow {
    /// `YYYY-MM` (UTC).
    #[diesel(sql_type = Text)]
    pub month: String,
    /// The publisher (notices) or the organisation shown the notice (disclosures).
    #[diesel(sql_type = Text)]
    pub org: String,
    /// The notice's category.
    #[diesel(sql_type = Text)]
    pub category: String,
    /// The purpose asserted (disclosures only).
    #[diesel(sql_type = Nullable<Text>)]
    pub purpose: Option<String>,
    /// How many.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// The bounds of months `from..=to` as SQL literals: the first day of `from`, and of the month
/// after `to`. They are dates formatted here, never input text, so they are inlined
/// (placeholders differ between the two backends).
fn bounds(from: NaiveDate, to: NaiveDate) -> (String, String) {
    let end = to.checked_add_months(chrono::Months::new(1)).unwrap_or(to);
    (format!("{} 00:00:00", from.format("%Y-%m-01")), format!("{} 00:00:00", end.format("%Y-%m-01")))
}

impl Store {
    /// Notices published per month, publisher and the category they were published with, in
    /// months `from..=to` (any day of each). A notice amended later stays where it was counted.
    pub fn notices_published(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<CountRow>, StoreError> {
        let (start, end) = bounds(from, to);
        // The month as `YYYY-MM` whatever the server's date style (PostgreSQL's text form of a
        // timestamp follows its `DateStyle`).
        let month = match self.backend() {
            crate::Backend::Postgres => "to_char(created_at, 'YYYY-MM')",
            crate::Backend::Sqlite => "strftime('%Y-%m', created_at)",
        };
        let sql = format!(
            "SELECT {month} AS month, publisher_ods AS org, published_category AS category, \
             CAST(NULL AS TEXT) AS purpose, COUNT(*) AS n FROM notices \
             WHERE created_at >= '{start}' AND created_at < '{end}' \
             GROUP BY {month}, publisher_ods, published_category"
        );
        Ok(diesel::sql_query(sql).load(&mut self.conn()?)?)
    }

    /// Notices disclosed per month, recipient organisation, category and purpose, in months
    /// `from..=to`: one for each notice an entry of a [`DISCLOSING_ACTIONS`] action showed, as
    /// of the latest seal (the sealer counts them, [`disclosure_increments`]).
    pub fn disclosures(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<CountRow>, StoreError> {
        let (first, last) = (from.format("%Y-%m").to_string(), to.format("%Y-%m").to_string());
        let rows: Vec<(String, String, String, String, i64)> = fc::table
            .filter(fc::month.ge(first))
            .filter(fc::month.le(last))
            .select((fc::month, fc::org, fc::category, fc::purpose, fc::n))
            .load(&mut self.conn()?)?;
        Ok(rows
            .into_iter()
            .map(|(month, org, category, purpose, n)| CountRow {
                month,
                org,
                category,
                purpose: Some(purpose).filter(|p| !p.is_empty()),
                n,
            })
            .collect())
    }
}

/// Notices shown, per (month, organisation, category, purpose or `""`).
pub(crate) type Increments = BTreeMap<(String, String, String, String), i64>;

/// What entries about to be sealed add to the figures: per (month, organisation, category,
/// purpose or `""`), the notices they showed. Read before the sealer's write lock.
pub(crate) fn disclosure_increments(conn: &mut DbConnection, rows: &[AuditRow]) -> Result<Increments, StoreError> {
    let mut shown: Vec<(&AuditRow, String)> = Vec::new();
    for row in rows.iter().filter(|r| DISCLOSING_ACTIONS.contains(&r.action.as_str())) {
        // An entry whose notices cannot be read is left out of the figures, never the seal.
        let Ok(notices) = serde_json::from_str::<Vec<AuditedNotice>>(&row.notices) else { continue };
        let mut seen = BTreeSet::new();
        for n in notices.into_iter().filter(|n| n.decision == "permit") {
            if seen.insert(n.id.clone()) {
                shown.push((row, n.id));
            }
        }
    }
    let ids: BTreeSet<&str> = shown.iter().map(|(_, id)| id.as_str()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut category = BTreeMap::new();
    for chunk in ids.chunks(1000) {
        let found: Vec<(String, String)> =
            notices::table.filter(notices::id.eq_any(chunk)).select((notices::id, notices::category)).load(conn)?;
        category.extend(found);
    }
    let mut out = BTreeMap::new();
    for (row, id) in shown {
        // A peer's notice shown here is counted by the peer, whose notice it is.
        if let Some(c) = category.get(&id) {
            let month = row.at.format("%Y-%m").to_string();
            let key = (month, row.actor_org.clone(), c.clone(), row.purpose.clone().unwrap_or_default());
            *out.entry(key).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Adds `increments` to the figures, in the caller's (the sealer's) transaction.
pub(crate) fn add_counts(conn: &mut DbConnection, increments: &Increments) -> Result<(), StoreError> {
    use diesel::upsert::excluded;
    let rows: Vec<_> = increments
        .iter()
        .map(|((m, o, c, p), n)| (fc::month.eq(m), fc::org.eq(o), fc::category.eq(c), fc::purpose.eq(p), fc::n.eq(*n)))
        .collect();
    for chunk in rows.chunks(500) {
        let key = (fc::month, fc::org, fc::category, fc::purpose);
        match &mut *conn {
            DbConnection::Pg(c) => diesel::insert_into(fc::table)
                .values(chunk)
                .on_conflict(key)
                .do_update()
                .set(fc::n.eq(fc::n + excluded(fc::n)))
                .execute(c)?,
            DbConnection::Sqlite(c) => diesel::insert_into(fc::table)
                .values(chunk)
                .on_conflict(key)
                .do_update()
                .set(fc::n.eq(fc::n + excluded(fc::n)))
                .execute(c)?,
        };
    }
    Ok(())
}
