//! The figures: notices published and notices disclosed, per partner, category, purpose and
//! month, with small numbers suppressed (`vpr_domain::figures`), for VPR leads and IG roles.
//! Raw counts never leave this module; each read is audited as `statistics`.

use chrono::{Datelike, Months, NaiveDate};
use vpr_domain::audit::AuditAction;
use vpr_domain::figures::{not_ended, FigureTable, RawCount};
use vpr_store::audit::AuditEntry;
use vpr_store::statistics::CountRow;

use crate::access::{is_ig_role, may_act_as};
use crate::audit::{caller_entry, record_refused_for, MANAGEMENT_PURPOSE};
use crate::caller::{Caller, Reviewer};
use crate::error::{AppError, AppResult};
use crate::App;

/// The longest span of months the figures cover at once.
pub const MAX_MONTHS: u32 = 24;

/// Minutes after a month ends before its figures are published: longer than any request
/// (stamped at its start) can take to commit its audit entry.
pub const SETTLE_MINUTES: i64 = 10;

/// The role besides the IG roles that sees the figures.
pub const VPR_LEAD: &str = "vpr-lead";

/// The figures for a span of months, protected.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The months, oldest first (`YYYY-MM`).
    pub months: Vec<String>,
    /// Notices by publisher, notices by category, disclosures by recipient, by purpose and by
    /// category.
    pub tables: Vec<FigureTable>,
}

/// The months `from..=to` as `YYYY-MM`.
pub fn months_between(from: NaiveDate, to: NaiveDate) -> Vec<String> {
    let mut out = Vec::new();
    let mut m = from.with_day0(0).unwrap_or(from);
    while m <= to && out.len() < MAX_MONTHS as usize {
        out.push(m.format("%Y-%m").to_string());
        m = match m.checked_add_months(Months::new(1)) {
            Some(next) => next,
            None => break,
        };
    }
    out
}

/// A code in words: `physical-assault` as "Physical assault".
fn words(code: &str) -> String {
    let spaced = code.replace('-', " ");
    let mut chars = spaced.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn raw(rows: &[CountRow], key: impl Fn(&CountRow) -> String) -> Vec<RawCount> {
    rows.iter().map(|r| RawCount { month: r.month.clone(), key: key(r), n: r.n }).collect()
}

impl App {
    /// The person or system a request for the figures acts for, checked: a named user in an IG
    /// role or as a VPR lead, which this system may act in. A refusal is audited.
    pub async fn figures_reader(&self, caller: &Caller, user: String, role: String) -> AppResult<Reviewer> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let who = Reviewer { user: user.trim().to_owned(), role };
            let allowed = is_ig_role(app, &caller.principal, &who.role)
                || (who.role == VPR_LEAD && may_act_as(app, &caller.principal, VPR_LEAD).is_ok());
            let refusal = if who.user.is_empty() {
                AppError::Forbidden("the user must be named in `VPR-User-Id`".into())
            } else if !allowed {
                AppError::Forbidden("the figures are for VPR leads and information governance roles".into())
            } else {
                return Ok(who);
            };
            record_refused_for(app, &caller, Some(&who), AuditAction::Statistics, refusal.status())?;
            Err(refusal)
        })
        .await
    }

    /// The figures for months `from..=to` (at most [`MAX_MONTHS`], all ended: see
    /// `vpr_domain::figures::span`), protected, for `who` (from [`App::figures_reader`]);
    /// audited as `statistics` before they are returned. Unavailable while entries of those
    /// months still wait to be sealed, so that a month's figures never change once shown.
    pub async fn figures(&self, caller: &Caller, who: Reviewer, from: NaiveDate, to: NaiveDate) -> AppResult<Figures> {
        let caller = caller.clone();
        self.blocking(move |app| {
            // Checked here too, whichever edge asks: a month still being counted is never shown.
            if let Some(problem) = not_ended(to, app.clock.now().date_naive(), "to") {
                return Err(AppError::Validation(vec![problem]));
            }
            let months = months_between(from, to);
            // The last month is final once every entry written in it is sealed (seconds after
            // it ends, unless the sealer is behind): until then its figures could still move.
            let after = to.checked_add_months(Months::new(1)).unwrap_or(to).and_time(chrono::NaiveTime::MIN);
            // An entry is stamped before it commits (a request may wait seconds for the
            // database): a month is final only a while after it ends, and once sealed.
            let settled = app.clock.now().naive_utc() >= after + chrono::Duration::minutes(SETTLE_MINUTES);
            if !settled || app.store.unsealed_before(after)? {
                return Err(AppError::Unavailable(format!(
                    "the figures for {} are not final yet: the audit log is still being sealed",
                    to.format("%Y-%m")
                )));
            }
            let notices = app.store.notices_published(from, to)?;
            let disclosures = app.store.disclosures(from, to)?;
            let audit = AuditEntry {
                actor_user: Some(who.user.clone()),
                actor_role: Some(who.role.clone()),
                purpose: Some(MANAGEMENT_PURPOSE.into()),
                context_ref: Some(format!(
                    "from={};to={}",
                    months.first().map_or("", |m| m),
                    months.last().map_or("", |m| m)
                )),
                decision: "permit".into(),
                ..caller_entry(app, &caller, AuditAction::Statistics, 200)
            };
            app.store.append_audit(&audit).map_err(AppError::audit_write_failed)?;
            Ok(Figures { tables: app.tables(&months, &notices, &disclosures), months })
        })
        .await
    }

    fn tables(&self, months: &[String], notices: &[CountRow], disclosures: &[CountRow]) -> Vec<FigureTable> {
        let registry = self.tokens.registry();
        let partner = |k: &str| registry.partner(k).map(|p| p.name.clone()).unwrap_or_else(|| k.to_owned());
        let purpose = |k: &str| match self.agreement.purposes.get(k) {
            Some(p) => p.title.clone(),
            None if k.is_empty() => "None given".to_owned(),
            None => words(k),
        };
        let category = |k: &str| words(k);
        let by_org = |r: &CountRow| r.org.clone();
        let by_category = |r: &CountRow| r.category.clone();
        let by_purpose = |r: &CountRow| r.purpose.clone().unwrap_or_default();
        let table = |measure,
                     by,
                     caption: &str,
                     rows: &[CountRow],
                     key: &dyn Fn(&CountRow) -> String,
                     label: &dyn Fn(&str) -> String| {
            FigureTable::build(measure, by, caption.to_owned(), months, &raw(rows, key), label)
        };
        vec![
            table("notices", "partner", "Notices published, by publisher", notices, &by_org, &partner),
            table("notices", "category", "Notices published, by category", notices, &by_category, &category),
            table(
                "disclosures",
                "partner",
                "Notices shown, by the organisation shown them",
                disclosures,
                &by_org,
                &partner,
            ),
            table("disclosures", "purpose", "Notices shown, by purpose", disclosures, &by_purpose, &purpose),
            table("disclosures", "category", "Notices shown, by category", disclosures, &by_category, &category),
        ]
    }
}
