//! Throwaway databases for tests, on both backends. PostgreSQL is required when `CI=true`;
//! elsewhere a missing server skips its half of each test with a clear message.

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

/// The admin URL tests use to create databases (`VPR_TEST_PG_URL`, default local trust auth).
pub fn admin_url() -> String {
    std::env::var("VPR_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A PostgreSQL database that is dropped when this value is dropped.
#[derive(Debug)]
pub struct PgTestDb {
    /// Connection URL of the new database.
    pub url: String,
    name: String,
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&admin_url()) {
            let _ =
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin);
        }
    }
}

/// Creates a fresh PostgreSQL database, or returns `None` (outside CI) if the server is not there.
///
/// # Panics
/// Under `CI=true` when PostgreSQL cannot be reached: CI must never skip the PostgreSQL half.
#[expect(clippy::panic, reason = "test support: CI must fail loudly without PostgreSQL")]
pub fn fresh_postgres() -> Option<PgTestDb> {
    let admin = admin_url();
    let mut conn = match PgConnection::establish(&admin) {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is required under CI=true but {admin} is unreachable: {e}");
            }
            eprintln!("SKIPPING PostgreSQL half of this test: {admin} is unreachable ({e})");
            return None;
        }
    };
    let name = format!("vpr_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn) {
        panic!("cannot create test database {name}: {e}");
    }
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin.clone());
    Some(PgTestDb { url: format!("{base}/{name}"), name })
}
