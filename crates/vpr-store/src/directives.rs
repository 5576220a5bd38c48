//! Consents and objections: recorded by IG per subject and purpose, matched by blind index.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::db::write_tx;
use crate::schema::subject_directives as sd;
use crate::{Store, StoreError};

/// Consent or objection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirectiveKind {
    /// A consent: `given` or `withdrawn`.
    Consent,
    /// An objection: `upheld` or `overridden`.
    Objection,
}

impl DirectiveKind {
    fn code(self) -> &'static str {
        match self {
            DirectiveKind::Consent => "consent",
            DirectiveKind::Objection => "objection",
        }
    }
}

/// A consent or objection to record.
#[derive(Debug, Clone)]
pub struct NewDirective {
    /// Which.
    pub kind: DirectiveKind,
    /// Blind indexes of every identifier given for the subject.
    pub blind_indexes: Vec<String>,
    /// Purpose of use it concerns.
    pub purpose: String,
    /// `given`/`withdrawn` for consent; `upheld`/`overridden` for an objection.
    pub status: String,
    /// Where the evidence is (a document or case reference).
    pub evidence_reference: String,
    /// Why (required when an objection is overridden); sealed at rest.
    pub reason: Option<String>,
    /// From when.
    pub effective_from: NaiveDate,
    /// Until when, if limited.
    pub expires_on: Option<NaiveDate>,
    /// Recording organisation.
    pub recorded_by_org: String,
    /// Recording user.
    pub recorded_by_user: String,
}

/// The subject's directives in force for a purpose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectiveState {
    /// A current consent is recorded.
    pub consent_given: bool,
    /// An objection is recorded and upheld.
    pub objection_upheld: bool,
}

impl Store {
    /// Records a consent or objection; the newest record for a subject and purpose wins.
    pub fn record_directive(&self, d: &NewDirective, now: DateTime<Utc>) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let reason = d
            .reason
            .as_deref()
            .map(|r| self.vault().seal(r.as_bytes(), &format!("directive/{id}/reason")))
            .transpose()?;
        let mut conn = self.conn()?;
        write_tx(&mut conn, |conn| {
            for blind in &d.blind_indexes {
                diesel::insert_into(sd::table)
                    .values((
                        sd::record_id.eq(id.to_string()),
                        sd::blind_index.eq(blind),
                        sd::kind.eq(d.kind.code()),
                        sd::purpose.eq(&d.purpose),
                        sd::status.eq(&d.status),
                        sd::evidence_reference.eq(&d.evidence_reference),
                        sd::reason.eq(&reason),
                        sd::effective_from.eq(d.effective_from),
                        sd::expires_on.eq(d.expires_on),
                        sd::recorded_at.eq(now.naive_utc()),
                        sd::recorded_by_org.eq(&d.recorded_by_org),
                        sd::recorded_by_user.eq(&d.recorded_by_user),
                    ))
                    .execute(conn)?;
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// What is in force for any of these blind indexes and this purpose on `today`.
    pub fn directive_state(
        &self,
        blind_indexes: &[String],
        purpose: &str,
        today: NaiveDate,
    ) -> Result<DirectiveState, StoreError> {
        if blind_indexes.is_empty() {
            return Ok(DirectiveState::default());
        }
        let mut conn = self.conn()?;
        let latest = |conn: &mut crate::Conn, kind: DirectiveKind| -> Result<Option<String>, StoreError> {
            Ok(sd::table
                .filter(sd::blind_index.eq_any(blind_indexes))
                .filter(sd::kind.eq(kind.code()))
                .filter(sd::purpose.eq(purpose))
                .filter(sd::effective_from.le(today))
                .filter(sd::expires_on.is_null().or(sd::expires_on.ge(today)))
                .order(sd::recorded_at.desc())
                .select(sd::status)
                .first(conn)
                .optional()?)
        };
        Ok(DirectiveState {
            consent_given: latest(&mut conn, DirectiveKind::Consent)?.as_deref() == Some("given"),
            objection_upheld: latest(&mut conn, DirectiveKind::Objection)?.as_deref() == Some("upheld"),
        })
    }
}
