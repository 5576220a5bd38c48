//! Raw counts for the figures: notices published, and notices disclosed, per month and
//! organisation, category and purpose. The application protects them before anyone sees them.

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

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
    /// Notices published per month, publisher and category, in months `from..=to` (any day of
    /// each).
    pub fn notices_published(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<CountRow>, StoreError> {
        let (start, end) = bounds(from, to);
        let sql = format!(
            "SELECT substr(CAST(created_at AS TEXT), 1, 7) AS month, publisher_ods AS org, category, \
             CAST(NULL AS TEXT) AS purpose, COUNT(*) AS n FROM notices \
             WHERE created_at >= '{start}' AND created_at < '{end}' \
             GROUP BY substr(CAST(created_at AS TEXT), 1, 7), publisher_ods, category"
        );
        Ok(diesel::sql_query(sql).load(&mut self.conn()?)?)
    }

    /// Notices disclosed per month, recipient organisation, category and purpose, in months
    /// `from..=to`: one for each notice an entry of a [`DISCLOSING_ACTIONS`] action showed.
    pub fn disclosures(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<CountRow>, StoreError> {
        let (start, end) = bounds(from, to);
        let actions = DISCLOSING_ACTIONS.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT substr(CAST(a.at AS TEXT), 1, 7) AS month, a.actor_org AS org, n.category AS category, \
             a.purpose AS purpose, COUNT(*) AS n \
             FROM audit_entries a \
             JOIN audit_notice_refs r ON r.audit_id = a.id AND r.disclosed \
             JOIN notices n ON n.id = r.notice_id \
             WHERE a.action IN ({actions}) AND a.at >= '{start}' AND a.at < '{end}' \
             GROUP BY substr(CAST(a.at AS TEXT), 1, 7), a.actor_org, n.category, a.purpose"
        );
        Ok(diesel::sql_query(sql).load(&mut self.conn()?)?)
    }
}
