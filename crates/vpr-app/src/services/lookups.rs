//! Look-ups (`POST /v1/lookups`) and FHIR `Flag` searches: the notices about a subject that the
//! agreement lets the caller see, for a purpose, each at its own view.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use vpr_domain::audit::AuditAction;
use vpr_domain::notice::MatchKind;
use vpr_domain::vocab::NoticeStatus;
use vpr_store::StoredNotice;

use crate::audit::record_refusal;
use crate::caller::{Access, Caller};
use crate::disclose::{govern, subject_keys, DisclosedNotice, Disclosure, Read};
use crate::error::{AppError, AppResult};
use crate::App;

/// The answer to a look-up.
#[derive(Debug, Serialize)]
pub struct LookupResult {
    /// The audit entry recording it.
    pub lookup_id: Uuid,
    /// The purpose it was decided for.
    pub purpose: String,
    /// The agreement version that decided.
    pub agreement_version: String,
    /// The notices, each minimised to its view (empty when none).
    pub results: Vec<DisclosedNotice>,
}

/// The version and time of a notice found by a search, for its `Flag`'s `meta`.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// Version.
    pub version: i64,
    /// Last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

fn refused(d: &Disclosure) -> AppResult<()> {
    match &d.refused {
        Some(why) => Err(AppError::Forbidden(why.clone())),
        None => Ok(()),
    }
}

impl App {
    /// Looks a subject up. An invalid body is refused and audited (naming no subject).
    pub async fn lookup(&self, caller: &Caller, body: Value) -> AppResult<LookupResult> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let valid = vpr_domain::validate::lookup(&body)
                .map_err(|errs| record_refusal(app, &caller, AuditAction::Lookup, AppError::Validation(errs)))?;
            let i = &valid.input;
            let access = Access {
                purpose: i.purpose.clone(),
                user_id: i.requester.user_id.clone(),
                role: i.requester.role.clone(),
                context_ref: i.context.as_ref().and_then(|c| c.reference.clone()),
                justification: i.break_glass.as_ref().map(|b| b.justification.trim().to_owned()),
            };
            let (blind, subject_refs) = subject_keys(app, &valid.subject);
            let mut candidates = Vec::new();
            for (id, matched) in app.store.find_by_blind_indexes(&blind)? {
                // Only notices in force are disclosed by look-ups.
                if let Some(n) = app.store.get(id)?.filter(|n| n.status == NoticeStatus::Active) {
                    candidates.push((n, matched));
                }
            }
            let d = govern(app, &caller, &access, Read::new(AuditAction::Lookup, &caller, subject_refs, candidates))?;
            refused(&d)?;
            Ok(LookupResult {
                lookup_id: d.audit_id,
                purpose: access.purpose,
                agreement_version: app.agreement.version.clone(),
                results: d.results,
            })
        })
        .await
    }

    /// Searches notices about a patient by NHS number for FHIR, keeping those `keep` accepts
    /// (status and `_lastUpdated` filters); each decided and the search audited as
    /// `fhir-search`. Returns the disclosed notices with the version each was found at.
    pub async fn search_flags(
        &self,
        caller: &Caller,
        access: Access,
        nhs_number: String,
        keep: impl Fn(&StoredNotice) -> bool + Send + 'static,
    ) -> AppResult<(Vec<DisclosedNotice>, HashMap<Uuid, Found>)> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let blind = app.store.vault().blind_index(MatchKind::NhsNumber, &nhs_number);
            let mut candidates = Vec::new();
            let mut found = HashMap::new();
            for (id, matched) in app.store.find_by_blind_indexes(std::slice::from_ref(&blind))? {
                if let Some(n) = app.store.get(id)?.filter(|n| keep(n)) {
                    found.insert(n.id, Found { version: n.version.version, updated_at: n.version.at });
                    candidates.push((n, matched));
                }
            }
            let refs = vec![format!("nhs-number:{blind}")];
            let d = govern(app, &caller, &access, Read::new(AuditAction::FhirSearch, &caller, refs, candidates))?;
            refused(&d)?;
            Ok((d.results, found))
        })
        .await
    }
}
