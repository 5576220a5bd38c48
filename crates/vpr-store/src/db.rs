//! One diesel codebase for two backends: the backend is chosen by the database URL scheme.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::StoreError;

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL: production, shared by several broker replicas.
    Pg(PgConnection),
    /// SQLite: the embedded default.
    Sqlite(SqliteConnection),
}

/// Which database the broker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`
    Postgres,
    /// `sqlite://path`
    Sqlite,
}

impl Backend {
    /// Picks the backend from the URL scheme and returns the URL diesel expects.
    pub fn from_url(url: &str) -> Result<(Self, String), StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok((Backend::Postgres, url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::Config("an SQLite URL needs a file path: `sqlite://path/to/vpr.db`".into()));
            }
            Ok((Backend::Sqlite, path.to_owned()))
        } else {
            Err(StoreError::Config("database URL must start with `sqlite://` or `postgres://`".into()))
        }
    }

    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Pooled connections.
pub type DbPool = Pool<ConnectionManager<DbConnection>>;
/// One pooled connection.
pub type PooledDb = PooledConnection<ConnectionManager<DbConnection>>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        let sql = match conn {
            // Durability is part of the contract: FULL sync, WAL for concurrent readers.
            DbConnection::Sqlite(_) => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 15000;"
            }
            DbConnection::Pg(_) => "SET synchronous_commit = on; SET TIME ZONE 'UTC';",
        };
        conn.batch_execute(sql).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// While the database was out of reach this recently, a request waits only [`DOWN_WAIT`] for
/// a connection (a database that is back answers well within it).
const DOWN_RECENTLY: Duration = Duration::from_secs(2);
const DOWN_WAIT: Duration = Duration::from_millis(250);

/// Takes connections from the pool, remembering when one was last not to be had: while the
/// database is down, requests are refused in a moment rather than each waiting out the
/// pool's timeout.
#[derive(Debug, Clone)]
pub struct Gate {
    /// When a connection was last refused (ms since `opened`; 0: it was not).
    down_at: std::sync::Arc<std::sync::atomic::AtomicU64>,
    opened: std::time::Instant,
}

impl Default for Gate {
    fn default() -> Self {
        Self { down_at: Default::default(), opened: std::time::Instant::now() }
    }
}

impl Gate {
    /// A connection from `pool`.
    pub fn get(&self, pool: &DbPool) -> Result<PooledDb, StoreError> {
        use std::sync::atomic::Ordering;
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let down = self.down_at.load(Ordering::Relaxed);
        let recently = down != 0 && u128::from(now.saturating_sub(down)) < DOWN_RECENTLY.as_millis();
        let got = if recently { pool.get_timeout(DOWN_WAIT) } else { pool.get() };
        match got {
            Ok(c) => {
                if down != 0 {
                    self.down_at.store(0, Ordering::Relaxed);
                }
                Ok(c)
            }
            Err(e) => {
                // Only an outage arms the gate, not a pool busy under load (every connection
                // in use, none refused): that would turn a spike into a storm of refusals.
                if unreachable(pool, &e) {
                    // When it failed, not when it was asked for: the next request is "recent".
                    let failed_at = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
                    self.down_at.store(failed_at, Ordering::Relaxed);
                }
                Err(StoreError::Unavailable(e.to_string()))
            }
        }
    }
}

/// Whether a failure to get a connection means the database cannot be reached (the pool has
/// no connection left, or the last attempt to make one failed), not that every connection is
/// in use.
pub fn unreachable(pool: &DbPool, e: &diesel::r2d2::PoolError) -> bool {
    // r2d2 names the last connection error after "timed out waiting for connection: ".
    pool.state().connections == 0 || e.to_string().contains("connection: ")
}

/// Opens a pool on the URL's backend.
pub fn open_pool(url: &str, size: u32) -> Result<(Backend, DbPool), StoreError> {
    let (backend, conn_url) = Backend::from_url(url)?;
    if backend == Backend::Sqlite {
        if let Some(dir) = std::path::Path::new(&conn_url).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create `{}`: {e}", dir.display())))?;
        }
    }
    let pool = Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        // A request waits at most this for a connection: with the database down it is answered
        // 503 promptly rather than held.
        .connection_timeout(Duration::from_secs(5))
        .connection_customizer(Box::new(Pragmas))
        .build(ConnectionManager::<DbConnection>::new(conn_url))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok((backend, pool))
}

fn harness_run(conn: &mut DbConnection, revert_all: bool) -> Result<Vec<String>, StoreError> {
    let mig = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    let done = match conn {
        DbConnection::Sqlite(c) => {
            if revert_all {
                c.revert_all_migrations(SQLITE_MIGRATIONS).map_err(mig)?
            } else {
                c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(mig)?
            }
        }
        DbConnection::Pg(c) => {
            if revert_all {
                c.revert_all_migrations(PG_MIGRATIONS).map_err(mig)?
            } else {
                c.run_pending_migrations(PG_MIGRATIONS).map_err(mig)?
            }
        }
    };
    Ok(done.iter().map(ToString::to_string).collect())
}

/// Applies pending migrations; returns the names applied.
pub fn run_migrations(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    harness_run(conn, false)
}

/// Reverts every migration (used by the up-down-up test and by operators rebuilding a database).
pub fn revert_migrations(conn: &mut DbConnection) -> Result<Vec<String>, StoreError> {
    harness_run(conn, true)
}

/// Number of migrations not yet applied.
pub fn pending_migrations(conn: &mut DbConnection) -> Result<usize, StoreError> {
    let mig = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    Ok(match conn {
        DbConnection::Sqlite(c) => c.pending_migrations(SQLITE_MIGRATIONS).map_err(mig)?.len(),
        DbConnection::Pg(c) => c.pending_migrations(PG_MIGRATIONS).map_err(mig)?.len(),
    })
}

/// Runs `f` in a write transaction. On SQLite it begins `IMMEDIATE`, taking the write lock up
/// front, so two writers never deadlock upgrading from a read; PostgreSQL uses its default.
pub fn write_tx<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    write_tx_as(conn, f)
}

/// [`write_tx`] for a closure with an error of its own (any error a [`StoreError`] converts to).
pub fn write_tx_as<T, E: From<StoreError>>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E> {
    type Tm = <DbConnection as Connection>::TransactionManager;
    let begun = match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
        DbConnection::Pg(_) => Tm::begin_transaction(conn),
    };
    begun.map_err(StoreError::from)?;
    match f(conn) {
        Ok(value) => {
            Tm::commit_transaction(conn).map_err(StoreError::from)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = Tm::rollback_transaction(conn) {
                tracing::error!(error = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}

/// One write transaction of the store, open: the changes that must commit together (a change
/// and its audit entry, see [`crate::Store::audited`]) are its methods.
pub struct Tx<'a> {
    pub(crate) conn: &'a mut DbConnection,
    pub(crate) store: &'a crate::Store,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").finish_non_exhaustive()
    }
}

impl crate::Store {
    /// Runs `f` in one write transaction, committed if it returns `Ok` (for changes that carry
    /// no audit entry; those that do use [`crate::Store::audited`]).
    pub fn write<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        let mut conn = self.conn()?;
        write_tx_as(&mut conn, |conn| f(&mut Tx { conn, store: self }))
    }
}

/// Inserts `rows` into `table` in multi-row statements of `per` rows. Multi-row inserts are not
/// available through `MultiConnection`, so each runs on the backend's own connection; chunks
/// stay well under both backends' bind-parameter limits.
macro_rules! insert_chunks {
    ($conn:expr, $table:expr, $rows:expr, $per:expr) => {
        for chunk in $rows.chunks($per) {
            match &mut *$conn {
                $crate::db::DbConnection::Pg(c) => diesel::insert_into($table).values(chunk).execute(c)?,
                $crate::db::DbConnection::Sqlite(c) => diesel::insert_into($table).values(chunk).execute(c)?,
            };
        }
    };
}
pub(crate) use insert_chunks;
