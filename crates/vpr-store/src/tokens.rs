//! Replay protection for client assertions (RFC 7523 `jti`), shared by every broker replica.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::schema::assertion_jtis;
use crate::{Store, StoreError};

impl Store {
    /// Records a client assertion id. Returns false if it was seen before (a replay).
    /// Expired ids are purged as a side effect so the table stays small.
    pub fn claim_assertion_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: NaiveDateTime,
        now: NaiveDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        diesel::delete(assertion_jtis::table.filter(assertion_jtis::expires_at.lt(now))).execute(&mut conn)?;
        let inserted = diesel::insert_into(assertion_jtis::table)
            .values((
                assertion_jtis::client_id.eq(client_id),
                assertion_jtis::jti.eq(jti),
                assertion_jtis::expires_at.eq(expires_at),
            ))
            .execute(&mut conn);
        match inserted {
            Ok(_) => Ok(true),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
