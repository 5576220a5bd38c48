//! Figures with small numbers suppressed: counts of notices and disclosures arranged as tables
//! (a dimension by month), protected by NHS England's published disclosure-control method for
//! sub-national statistics (NHS Digital, "Disclosure control methodology for Hospital Episode
//! Statistics and Emergency Care Data Set", September 2018):
//!
//! - a count of 0 is shown as 0;
//! - a count of 1 to 7 is suppressed and shown as `<8`;
//! - every other count is rounded to the nearest 5;
//! - totals are summed from the unrounded counts, then protected the same way.
//!
//! Rounding every shown count is what makes the totals safe to show: a total less the shown
//! counts beside it gives a range, never a suppressed count, and that holds across tables that
//! count the same things by other dimensions (where hiding totals alone would not).

use std::collections::BTreeMap;

use chrono::{Datelike, Months, NaiveDate};
use serde::Serialize;
use serde_json::{json, Value};

use crate::FieldError;

/// The rule, as figures name it.
pub const RULE: &str = "NHS Digital disclosure control for HES and ECDS (2018): counts of 1 to 7 are \
     shown as \"<8\", all other counts rounded to the nearest 5, totals summed before rounding";

/// The smallest count shown.
pub const THRESHOLD: i64 = 8;

/// What a protected count shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A count, rounded to the nearest 5 (or 0).
    Count(i64),
    /// A count of 1 to 7, not shown.
    Suppressed,
}

impl Shown {
    /// The protected form of a raw count.
    pub fn of(raw: i64) -> Self {
        match raw {
            i64::MIN..=0 => Shown::Count(0),
            1..=7 => Shown::Suppressed,
            n => Shown::Count((n + 2) / 5 * 5),
        }
    }

    /// The count as a chart's bar height (a suppressed one has none).
    pub fn height(self) -> i64 {
        match self {
            Shown::Count(n) => n,
            Shown::Suppressed => 0,
        }
    }

    /// As JSON: a number, or the string `<8`.
    pub fn json(self) -> Value {
        match self {
            Shown::Count(n) => json!(n),
            Shown::Suppressed => json!("<8"),
        }
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shown::Count(n) => write!(f, "{n}"),
            Shown::Suppressed => f.write_str("<8"),
        }
    }
}

/// One row of a table: a partner, category or purpose, by month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureRow {
    /// Its code (ODS code, category code, purpose code).
    pub key: String,
    /// Its name.
    pub label: String,
    /// One count per month of the table.
    pub counts: Vec<Shown>,
    /// The row's total.
    pub total: Shown,
}

/// A table of protected counts: one measure, by one dimension and month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FigureTable {
    /// What is counted (`notices` or `disclosures`).
    pub measure: &'static str,
    /// The dimension of its rows (`partner`, `category` or `purpose`).
    pub by: &'static str,
    /// The table's caption.
    pub caption: String,
    /// The rows, by key.
    pub rows: Vec<FigureRow>,
    /// Each month's total.
    pub totals: Vec<Shown>,
    /// The grand total.
    pub total: Shown,
}

/// A raw count of the figures: `n` things in `month` for row `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawCount {
    /// `YYYY-MM`.
    pub month: String,
    /// The row's key.
    pub key: String,
    /// How many.
    pub n: i64,
}

impl FigureTable {
    /// The protected table of `raw` over `months` (oldest first); `label` names each key. Rows
    /// come in key order; counts outside `months` are ignored.
    pub fn build(
        measure: &'static str,
        by: &'static str,
        caption: String,
        months: &[String],
        raw: &[RawCount],
        label: &dyn Fn(&str) -> String,
    ) -> Self {
        let column: BTreeMap<&str, usize> = months.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
        let mut cells: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for c in raw {
            if let Some(&i) = column.get(c.month.as_str()) {
                let row = cells.entry(c.key.as_str()).or_insert_with(|| vec![0; months.len()]);
                if let Some(cell) = row.get_mut(i) {
                    *cell += c.n;
                }
            }
        }
        let mut totals = vec![0; months.len()];
        let rows = cells
            .iter()
            .map(|(key, counts)| {
                for (t, n) in totals.iter_mut().zip(counts) {
                    *t += n;
                }
                FigureRow {
                    key: (*key).to_owned(),
                    label: label(key),
                    counts: counts.iter().map(|n| Shown::of(*n)).collect(),
                    total: Shown::of(counts.iter().sum()),
                }
            })
            .collect();
        let total = Shown::of(totals.iter().sum());
        Self { measure, by, caption, rows, totals: totals.into_iter().map(Shown::of).collect(), total }
    }

    /// As JSON, its counts protected.
    pub fn json(&self, months: &[String]) -> Value {
        let counts = |c: &[Shown]| c.iter().map(|s| s.json()).collect::<Vec<_>>();
        json!({
            "measure": self.measure,
            "by": self.by,
            "caption": self.caption,
            "months": months,
            "rows": self.rows.iter().map(|r| json!({
                "key": r.key, "label": r.label, "counts": counts(&r.counts), "total": r.total.json(),
            })).collect::<Vec<_>>(),
            "totals": counts(&self.totals),
            "total": self.total.json(),
        })
    }

    /// As records for a CSV file (`measure, by, key, label, month, count`), totals as the key
    /// `total` and the month `total`.
    pub fn records(&self, months: &[String]) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut add = |key: &str, label: &str, counts: &[Shown], total: Shown| {
            let cells = months.iter().map(String::as_str).zip(counts.iter().copied()).chain([("total", total)]);
            for (month, c) in cells {
                out.push(vec![
                    self.measure.to_owned(),
                    self.by.to_owned(),
                    key.to_owned(),
                    label.to_owned(),
                    month.to_owned(),
                    c.to_string(),
                ]);
            }
        };
        for r in &self.rows {
            add(&r.key, &r.label, &r.counts, r.total);
        }
        add("total", "All", &self.totals, self.total);
        out
    }
}

/// The last month the figures publish on `today`: the month before `today`'s. A month is
/// published only once it has ended, so a figure once shown never changes: re-reading a month
/// still being counted would reveal the exact numbers the rule hides (a cell moving from "<8"
/// to 10 means exactly 8).
pub fn last_complete_month(today: NaiveDate) -> NaiveDate {
    let first = today.with_day(1).unwrap_or(today);
    first.checked_sub_months(Months::new(1)).unwrap_or(first)
}

/// The problem with the bound `name` of the figures if its month `m` has not ended by `today`
/// (rule `month-complete`): the figures publish complete months only.
pub fn not_ended(m: NaiveDate, today: NaiveDate, name: &str) -> Option<FieldError> {
    let latest = last_complete_month(today);
    (m > latest).then(|| {
        FieldError::new(
            format!("/{name}"),
            "month-complete",
            format!(
                "`{name}` must be a month that has ended ({} or earlier): the figures publish complete months only",
                latest.format("%Y-%m")
            ),
        )
    })
}

/// The months the figures cover: `from` and `to` as `YYYY-MM` (both optional), by default the
/// twelve complete months before `today`'s; at most `max` months, and none that has not ended
/// ([`last_complete_month`]). Returns the first day of each bound's month.
pub fn span(
    from: Option<&str>,
    to: Option<&str>,
    today: NaiveDate,
    max: u32,
) -> Result<(NaiveDate, NaiveDate), Vec<FieldError>> {
    let month = |name: &str, v: &str| {
        NaiveDate::parse_from_str(&format!("{}-01", v.trim()), "%Y-%m-%d")
            .map_err(|_| FieldError::new(format!("/{name}"), "month", format!("`{name}` must be a month, `YYYY-MM`")))
    };
    let (from, to) = match (from.map(|v| month("from", v)).transpose(), to.map(|v| month("to", v)).transpose()) {
        (Ok(f), Ok(t)) => (f, t),
        (f, t) => return Err([f.err(), t.err()].into_iter().flatten().collect()),
    };
    let latest = last_complete_month(today);
    let to = to.unwrap_or(latest);
    let from = from.unwrap_or_else(|| to.checked_sub_months(Months::new(11)).unwrap_or(to));
    let last = from.checked_add_months(Months::new(max - 1)).unwrap_or(from);
    let unended: Vec<FieldError> =
        [not_ended(from, today, "from"), not_ended(to, today, "to")].into_iter().flatten().collect();
    if !unended.is_empty() {
        return Err(unended);
    }
    if to < from || to > last {
        return Err(vec![FieldError::new(
            "/to",
            "month-range",
            format!("`to` must be the month of `from` or later, and within {max} months of it"),
        )]);
    }
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn small_counts_are_suppressed_and_the_rest_rounded() {
        let shown: Vec<String> = [0, 1, 7, 8, 12, 13, 22, 23, 100].iter().map(|n| Shown::of(*n).to_string()).collect();
        assert_eq!(shown, ["0", "<8", "<8", "10", "10", "15", "20", "25", "100"]);
    }

    #[test]
    fn totals_are_summed_before_they_are_protected() {
        let months = vec!["2026-11".to_owned(), "2026-12".to_owned()];
        let raw = [
            RawCount { month: "2026-11".into(), key: "A".into(), n: 3 },
            RawCount { month: "2026-12".into(), key: "A".into(), n: 9 },
            RawCount { month: "2026-11".into(), key: "B".into(), n: 40 },
            RawCount { month: "2026-10".into(), key: "B".into(), n: 500 },
        ];
        let t = FigureTable::build("notices", "partner", "t".into(), &months, &raw, &|k| format!("name {k}"));
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].counts, [Shown::Suppressed, Shown::Count(10)]);
        // 3 + 9 = 12, shown rounded: the suppressed 3 cannot be told from the total.
        assert_eq!(t.rows[0].total, Shown::Count(10));
        assert_eq!(t.totals, [Shown::Count(45), Shown::Count(10)]);
        assert_eq!(t.total, Shown::Count(50));
        let csv = t.records(&months);
        assert!(csv.iter().any(|r| r[2] == "A" && r[4] == "2026-11" && r[5] == "<8"));
        assert_eq!(t.json(&months)["rows"][0]["counts"][0], "<8");
    }

    #[test]
    fn the_span_defaults_to_the_twelve_complete_months_and_names_a_bad_bound() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap_or_default();
        let (from, to) = span(None, None, today, 24).unwrap_or_default();
        assert_eq!((from.to_string(), to.to_string()), ("2025-12-01".into(), "2026-11-01".into()));
        let jan = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
        assert_eq!(last_complete_month(jan).to_string(), "2026-12-01");
        // This month is still being counted: it is not published, nor is a later one.
        let open = span(Some("2026-12"), None, today, 24).err().unwrap_or_default();
        assert_eq!((open[0].pointer.as_str(), open[0].rule.as_str()), ("/from", "month-complete"));
        let open = span(Some("2026-06"), Some("2027-01"), today, 24).err().unwrap_or_default();
        assert_eq!((open[0].pointer.as_str(), open[0].rule.as_str()), ("/to", "month-complete"));
        assert!(span(Some("2026-11"), Some("2026-11"), today, 24).is_ok());
        let bad = span(Some("2026-13"), Some("2026-01"), today, 24).err().unwrap_or_default();
        assert_eq!(bad[0].pointer, "/from");
        let long = span(Some("2020-01"), Some("2026-01"), today, 24).err().unwrap_or_default();
        assert_eq!(long[0].rule, "month-range");
    }
}
