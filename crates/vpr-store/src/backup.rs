//! What a backup needs of the store: a consistent copy of an SQLite database taken while the
//! broker serves, the figures a backup's manifest records, and the check that every notice in
//! a copy opens with the data keys (PostgreSQL copies are made with `pg_dump` by the binary).

use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use uuid::Uuid;

use crate::db::{Backend, DbConnection};
use crate::schema::{audit_entries as ae, notices};
use crate::{Store, StoreError};

/// What a database holds, for a backup's manifest and the check of its copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Contents {
    /// Notices.
    pub notices: i64,
    /// Notice versions.
    pub versions: i64,
    /// Audit entries.
    pub audit_entries: i64,
    /// The newest migration applied.
    pub schema_version: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// Creates a scratch database `name` (letters, digits and `_` only) on the PostgreSQL server
/// of `url`, or with `create` false drops it (closing its connections).
pub fn scratch_database(url: &str, name: &str, create: bool) -> Result<(), StoreError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(StoreError::Config(format!("`{name}` is not a scratch database name")));
    }
    let mut conn = crate::verify::connect(url)?;
    let sql =
        if create { format!("CREATE DATABASE {name}") } else { format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)") };
    diesel::sql_query(sql).execute(&mut conn)?;
    Ok(())
}

impl Store {
    /// Writes a consistent copy of this SQLite database to `path` (which must not exist) while
    /// the broker goes on serving: SQLite's `VACUUM INTO`, one read transaction.
    pub fn sqlite_snapshot(&self, path: &Path) -> Result<(), StoreError> {
        if self.backend() != Backend::Sqlite {
            return Err(StoreError::Config("a PostgreSQL database is copied with pg_dump".into()));
        }
        let text = path.to_str().ok_or_else(|| StoreError::Config("the backup path is not UTF-8".into()))?;
        // A file name, not input from a request; quoted as an SQL string.
        let sql = format!("VACUUM INTO '{}'", text.replace('\'', "''"));
        diesel::sql_query(sql).execute(&mut *self.conn()?)?;
        Ok(())
    }

    /// What the database holds.
    pub fn contents(&self) -> Result<Contents, StoreError> {
        let mut conn = self.conn()?;
        let count = |conn: &mut DbConnection, table: &str| -> Result<i64, StoreError> {
            let rows: Vec<Count> = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}")).load(conn)?;
            Ok(rows.first().map_or(0, |r| r.n))
        };
        let version: Vec<Version> =
            diesel::sql_query("SELECT MAX(version) AS v FROM __diesel_schema_migrations").load(&mut conn)?;
        Ok(Contents {
            notices: count(&mut conn, "notices")?,
            versions: count(&mut conn, "notice_versions")?,
            audit_entries: ae::table.count().get_result(&mut conn)?,
            schema_version: version.into_iter().next().and_then(|v| v.v).unwrap_or_default(),
        })
    }

    /// Opens every version of every notice with the data keys (each is sealed to its id and
    /// version): the number of versions read. A copy restored with the wrong keys, or a damaged
    /// one, fails here rather than at a crew's look-up.
    pub fn read_every_notice(&self) -> Result<i64, StoreError> {
        let mut after = String::new();
        let mut read = 0i64;
        loop {
            let ids: Vec<String> = notices::table
                .filter(notices::id.gt(&after))
                .order(notices::id.asc())
                .select(notices::id)
                .limit(500)
                .load(&mut *self.conn()?)?;
            let Some(last) = ids.last() else { return Ok(read) };
            after = last.clone();
            for id in &ids {
                let id = Uuid::parse_str(id).map_err(|e| StoreError::Corrupt(format!("notice id `{id}`: {e}")))?;
                let versions = self.versions(id)?;
                if versions.is_empty() {
                    return Err(StoreError::Corrupt(format!("notice {id} has no versions")));
                }
                read += i64::try_from(versions.len()).unwrap_or(i64::MAX);
            }
        }
    }

    /// Whether the database has none of the broker's tables yet (a restore's target must be
    /// empty: restoring over live data would mix two logs).
    pub fn is_blank(&self) -> Result<bool, StoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'notices'",
            Backend::Postgres => {
                "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'notices'"
            }
        };
        let rows: Vec<Count> = diesel::sql_query(sql).load(&mut *self.conn()?)?;
        Ok(rows.first().map_or(0, |r| r.n) == 0)
    }
}
