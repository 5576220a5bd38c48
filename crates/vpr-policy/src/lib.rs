//! The ICS data-sharing agreement as code, and the one decision point every read goes through.
//!
//! The agreement (`policies/agreement.json`, validated by `schemas/agreement.schema.json`) names
//! the parties, purposes of use with their lawful bases, roles, and review and retention
//! intervals. Cedar policies, validated against a Cedar schema, decide each read: for a notice,
//! the broadest view (`existence`, `summary`, `full`) any clause permits, plus whether the
//! restricted fields may be shown. Each clause carries `@clause` and `@basis` annotations, so a
//! decision names the clauses that decided it and the lawful bases they rely on.

mod agreement;
mod decide;
pub mod fixtures;

pub use agreement::{Agreement, BreakGlass, Party, Purpose, Role};
pub use decide::{AccessContext, Decision, NoticeFacts, Requester, SubscriptionFacts, View};

/// Why an agreement could not be loaded or a fixture failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: String,
    },
    /// The agreement document is invalid.
    #[error("the agreement is invalid: {}", .0.join("; "))]
    Agreement(Vec<String>),
    /// The Cedar schema or policies are invalid.
    #[error("the policies are invalid: {}", .0.join("; "))]
    Policies(Vec<String>),
    /// Fixtures failed to replay.
    #[error("{} of {total} policy fixtures failed:\n{}", .failures.len(), .failures.join("\n"))]
    Fixtures {
        /// How many fixtures ran.
        total: usize,
        /// What failed.
        failures: Vec<String>,
    },
}
