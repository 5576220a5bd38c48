//! Storage for the broker on SQLite and PostgreSQL from one diesel codebase, with subject
//! identifiers encrypted at rest and matched through keyed blind indexes.
//!
//! Calls here are synchronous; the HTTP layer moves them off the async runtime.

pub mod audit;
pub mod backup;
pub mod db;
pub mod directives;
mod group;
pub mod notices;
pub mod review;
pub mod schema;
pub mod seal;
pub mod statistics;
pub mod subscriptions;
#[cfg(any(test, feature = "testdb"))]
pub mod testdb;
pub mod tokens;
pub mod vault;
pub mod verify;

pub use audit::AuditEntries;
pub use db::Tx;
use std::time::Duration;

use db::{Backend, DbConnection, DbPool, PooledDb};
pub use notices::{Change, NewNotice, Published, StoredNotice};
pub use vault::{DataKeyFile, Vault, VaultError};
use vpr_domain::subscription::SubscriptionStatus;
use vpr_domain::vocab::NoticeStatus;

/// Errors from the store. Internal causes stay in logs; the HTTP edge shows only the kind.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad storage configuration.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The database cannot be reached or the pool is exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Stored data could not be opened or decoded.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Encryption failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(Missing),
    /// An entry's replay guard found its id used before: the entry was not written.
    #[error("this assertion was used before")]
    Replayed,
    /// The caller's organisation did not publish the notice.
    #[error("only the publishing organisation may change a notice")]
    NotPublisher,
    /// `If-Match` named a version that is no longer current.
    #[error("the notice is at version {current}")]
    VersionMismatch {
        /// The current version.
        current: i64,
    },
    /// The change is not allowed in the notice's status.
    #[error("a notice that is `{status}` cannot be {action}")]
    NotChangeable {
        /// The notice's status.
        status: NoticeStatus,
        /// What was attempted.
        action: &'static str,
    },
    /// An idempotency key was reused for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyConflict,
    /// The subscription can no longer be changed.
    #[error("a subscription that is `{0}` cannot be changed")]
    SubscriptionClosed(SubscriptionStatus),
    /// A worker thread of the store failed (a panic), so its result is unknown.
    #[error("internal failure: {0}")]
    Internal(String),
    /// The audit entry a change or a disclosure depends on could not be committed (so neither
    /// was); the edge answers 503.
    #[error("the audit entry could not be written: {0}")]
    AuditWrite(String),
}

/// What a database says when it is out of reach rather than the request wrong: gone or
/// restarting (PostgreSQL), busy or out of disk (SQLite).
const OUTAGE_MESSAGES: [&str; 11] = [
    "terminating connection",
    "server closed the connection",
    "connection refused",
    "could not connect",
    "no connection to the server",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "database or disk is full",
    "disk i/o error",
    "database is locked",
];

impl StoreError {
    /// Whether the database is out of reach (stopped, restarting, its disk full, its lock
    /// held) rather than the request or the data wrong: answered 503, to be retried.
    pub fn is_outage(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Unavailable(_) | StoreError::AuditWrite(_) => true,
            StoreError::Db(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _))
            | StoreError::Db(Error::BrokenTransactionManager) => true,
            StoreError::Db(Error::DatabaseError(_, info)) => {
                let m = info.message().to_ascii_lowercase();
                OUTAGE_MESSAGES.iter().any(|o| m.contains(o))
            }
            _ => false,
        }
    }
}

/// What a [`StoreError::NotFound`] did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// A notice (or a version of it).
    Notice,
    /// A subscription.
    Subscription,
    /// Sealed audit entries: the tree is smaller than the size asked for.
    SealedLeaves,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Notice => "no notice has this id",
            Missing::Subscription => "no subscription has this id",
            Missing::SealedLeaves => "the sealed audit log has fewer entries than asked for",
        })
    }
}

/// The broker's store: a connection pool and the vault for identifiers at rest.
#[derive(Clone)]
pub struct Store {
    pool: DbPool,
    backend: Backend,
    vault: Vault,
    audit_writer: audit::AuditWriter,
    ack_writer: subscriptions::AckWriter,
    jti_writer: tokens::JtiWriter,
    recent: std::sync::Arc<notices::RecentNotices>,
    /// The sealed leaf hashes read so far, in tree order (they never change once sealed).
    leaves: std::sync::Arc<std::sync::Mutex<Vec<vpr_audit::merkle::Hash>>>,
    /// Whether the database was just found out of reach (shared with the writers).
    gate: db::Gate,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database named by `url` (`sqlite://...` or `postgres://...`).
    pub fn open(url: &str, pool_size: u32, vault: Vault) -> Result<Self, StoreError> {
        let (backend, pool) = db::open_pool(url, pool_size)?;
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        let gate = db::Gate::default();
        let audit_writer = audit::audit_writer(pool.clone(), gate.clone(), vault.clone(), writers);
        let ack_writer = subscriptions::ack_writer(pool.clone(), writers.min(2));
        let jti_writer = tokens::jti_writer(pool.clone(), gate.clone(), writers.min(2));
        Ok(Self {
            pool,
            backend,
            vault,
            audit_writer,
            ack_writer,
            jti_writer,
            recent: Default::default(),
            leaves: Default::default(),
            gate,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The vault (for computing blind indexes of look-up keys).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// A pooled connection: waiting up to the pool's timeout, or only a moment while the
    /// database was just found out of reach ([`db::Gate`]).
    pub fn conn(&self) -> Result<PooledDb, StoreError> {
        self.gate.get(&self.pool)
    }

    /// Applies pending migrations; returns their names.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        db::run_migrations(&mut *self.conn()?)
    }

    /// Checks the database answers and every migration is applied (for `/readyz`, which must
    /// answer promptly: it waits at most a second for a connection).
    pub fn ready(&self) -> Result<(), StoreError> {
        let mut conn = match self.pool.get_timeout(Duration::from_secs(1)) {
            Ok(c) => c,
            // Every connection in use is a busy database, not a missing one: still ready.
            Err(e) if !db::unreachable(&self.pool, &e) => return Ok(()),
            Err(e) => return Err(StoreError::Unavailable(e.to_string())),
        };
        let pending = db::pending_migrations(&mut conn)?;
        if pending > 0 {
            return Err(StoreError::Migration(format!("{pending} migrations pending")));
        }
        Ok(())
    }
}

/// Anything a query can run on: lets callers compose queries inside one transaction.
pub type Conn = DbConnection;

#[cfg(test)]
mod tests;
