//! Consents and objections: recorded by IG per subject and purpose, matched by blind index.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::db::Tx;
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
    /// The directive state for each notice's subject (matched through every blind index of
    /// the notice), for one purpose, in two queries whatever the number of notices.
    pub fn directive_states(
        &self,
        notice_ids: &[uuid::Uuid],
        purpose: &str,
        today: NaiveDate,
    ) -> Result<std::collections::HashMap<uuid::Uuid, DirectiveState>, StoreError> {
        use crate::schema::notice_match_keys as mk;
        let mut out: std::collections::HashMap<uuid::Uuid, DirectiveState> =
            notice_ids.iter().map(|id| (*id, DirectiveState::default())).collect();
        if notice_ids.is_empty() {
            return Ok(out);
        }
        let mut conn = self.conn()?;
        let ids: Vec<String> = notice_ids.iter().map(ToString::to_string).collect();
        let keys: Vec<(String, String)> =
            mk::table.filter(mk::notice_id.eq_any(&ids)).select((mk::notice_id, mk::blind_index)).load(&mut conn)?;
        let blind: Vec<&String> = keys.iter().map(|(_, b)| b).collect();
        // Newest first, so the first record seen per (blind index, kind) is the one in force.
        let rows: Vec<(String, String, String)> = sd::table
            .filter(sd::blind_index.eq_any(&blind))
            .filter(sd::purpose.eq(purpose))
            .filter(sd::effective_from.le(today))
            .filter(sd::expires_on.is_null().or(sd::expires_on.ge(today)))
            .order(sd::recorded_at.desc())
            .select((sd::blind_index, sd::kind, sd::status))
            .load(&mut conn)?;
        for id in notice_ids {
            let mine: Vec<&String> = keys.iter().filter(|(n, _)| *n == id.to_string()).map(|(_, b)| b).collect();
            let latest = |kind: DirectiveKind| {
                rows.iter()
                    .find(|(b, k, _)| k == kind.code() && mine.contains(&b))
                    .map(|(_, _, status)| status.as_str())
            };
            if let Some(state) = out.get_mut(id) {
                state.consent_given = latest(DirectiveKind::Consent) == Some("given");
                state.objection_upheld = latest(DirectiveKind::Objection) == Some("upheld");
            }
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Records a consent or objection; the newest record for a subject and purpose wins.
    /// Returns the record's id.
    pub fn record_directive(&mut self, d: &NewDirective, now: DateTime<Utc>) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let reason = d
            .reason
            .as_deref()
            .map(|r| self.store.vault().seal(r.as_bytes(), &format!("directive/{id}/reason")))
            .transpose()?;
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
                .execute(self.conn)?;
        }
        Ok(id)
    }
}

/// A recorded consent or objection, as IG lists it (the subject only as blind indexes, which
/// are not shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectiveRecord {
    /// Its id.
    pub id: Uuid,
    /// `consent` or `objection`.
    pub kind: String,
    /// The purpose it concerns.
    pub purpose: String,
    /// Its status.
    pub status: String,
    /// Where the evidence is kept.
    pub evidence_reference: String,
    /// Why, if a reason was recorded.
    pub reason: Option<String>,
    /// From when.
    pub effective_from: NaiveDate,
    /// Until when.
    pub expires_on: Option<NaiveDate>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// By which organisation.
    pub recorded_by_org: String,
    /// By whom.
    pub recorded_by_user: String,
}

type RecordColumns = (
    String,
    String,
    String,
    String,
    String,
    Option<Vec<u8>>,
    NaiveDate,
    Option<NaiveDate>,
    chrono::NaiveDateTime,
    String,
    String,
);

impl Store {
    /// The newest `limit` consents and objections recorded, newest first; with `blind`, only
    /// those recorded for a subject with one of these blind indexes; with `recorded_by`, only
    /// those that organisation recorded.
    pub fn recent_directives(
        &self,
        blind: Option<&[String]>,
        recorded_by: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DirectiveRecord>, StoreError> {
        let mut conn = self.conn()?;
        let mut q = sd::table
            .select((
                sd::record_id,
                sd::kind,
                sd::purpose,
                sd::status,
                sd::evidence_reference,
                sd::reason,
                sd::effective_from,
                sd::expires_on,
                sd::recorded_at,
                sd::recorded_by_org,
                sd::recorded_by_user,
            ))
            .distinct()
            .order((sd::recorded_at.desc(), sd::record_id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some(blind) = blind {
            q = q.filter(sd::blind_index.eq_any(blind.to_vec()));
        }
        if let Some(org) = recorded_by {
            q = q.filter(sd::recorded_by_org.eq(org.to_owned()));
        }
        let rows: Vec<RecordColumns> = q.load(&mut conn)?;
        rows.into_iter()
            .map(
                |(id, kind, purpose, status, evidence_reference, reason, effective_from, expires_on, at, org, user)| {
                    let reason = reason
                        .map(|r| self.vault().open(&r, &format!("directive/{id}/reason")))
                        .transpose()?
                        .map(|b| String::from_utf8_lossy(&b).into_owned());
                    Ok(DirectiveRecord {
                        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        kind,
                        purpose,
                        status,
                        evidence_reference,
                        reason,
                        effective_from,
                        expires_on,
                        recorded_at: at.and_utc(),
                        recorded_by_org: org,
                        recorded_by_user: user,
                    })
                },
            )
            .collect()
    }
}
