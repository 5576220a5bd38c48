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

use vpr_auth::RelayedRequester;
use vpr_domain::notice::Subject;
use vpr_domain::validate::Lookup;
use vpr_store::audit::{FederationRecord, PeerRecord};

use crate::access::requester_refusal;
use crate::audit::record_refusal_of;
use crate::caller::{Access, Caller};
use crate::disclose::{govern, prepare, subject_keys, Candidate, DisclosedNotice, Disclosure, Read};
use crate::error::{AppError, AppResult};
use crate::federation::ask::{ask_peers, failed, subject_digest, PeerAnswer};
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
    /// The notices, each minimised to its view (empty when none): this broker's first, then
    /// each peer's as it decided them.
    pub results: Vec<LookedUp>,
    /// The peer brokers that did not answer (down, slow past the budget, refusing, or skipped
    /// while their circuit is open). Present when this broker federates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Vec<Incomplete>>,
}

/// A notice found by a look-up, and where it came from.
#[derive(Debug, Serialize)]
pub struct LookedUp {
    /// The broker of the ICS that published it (its ICB's ODS code), when this broker
    /// federates; a peer's notices carry it in their own body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The notice.
    #[serde(flatten)]
    pub notice: LookedUpNotice,
}

/// A notice from this broker, typed, or from a peer, as the peer minimised it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LookedUpNotice {
    /// Published in this ICS.
    Here(Box<DisclosedNotice>),
    /// Published in a neighbouring ICS, disclosed by its broker.
    Peer(Value),
}

impl LookedUp {
    /// This broker's notice, if it is one.
    pub fn here(&self) -> Option<&DisclosedNotice> {
        match &self.notice {
            LookedUpNotice::Here(n) => Some(n.as_ref()),
            LookedUpNotice::Peer(_) => None,
        }
    }
}

/// A peer broker that did not answer a look-up.
#[derive(Debug, Clone, Serialize)]
pub struct Incomplete {
    /// The peer.
    pub broker: String,
    /// `refused`, `unavailable`, `timeout`, `invalid` or `skipped`.
    pub reason: String,
    /// In words.
    pub detail: String,
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

/// Every peer recorded as unavailable, when asking them failed as a whole.
fn every_peer_failed(app: &App, why: &str) -> Vec<PeerAnswer> {
    let detail = format!("the request failed: {why}");
    app.tokens.peers().iter().map(|p| failed(&p.id, "unavailable", None, detail.clone())).collect()
}

/// The circumstances a look-up body asserts.
fn access_of(i: &vpr_domain::validate::LookupInput) -> Access {
    Access {
        purpose: i.purpose.clone(),
        user_id: i.requester.user_id.clone(),
        role: i.requester.role.clone(),
        context_ref: i.context.as_ref().and_then(|c| c.reference.clone()),
        justification: i.break_glass.as_ref().map(|b| b.justification.trim().to_owned()),
        relayed_by: None,
        replay_guard: None,
    }
}

/// The requester a look-up relays to the peers.
fn relayed(caller: &Caller, access: &Access, subject: &Value) -> RelayedRequester {
    let p = &caller.principal;
    RelayedRequester {
        org: p.org.as_str().to_owned(),
        org_type: p.org_type,
        system: p.client_id.clone(),
        user: access.user_id.clone(),
        role: access.role.clone(),
        purpose: access.purpose.clone(),
        context_ref: access.context_ref.clone(),
        break_glass: access.justification.clone(),
        subject_sha256: subject_digest(subject),
    }
}

impl App {
    /// Validates a look-up body; an invalid one is refused and audited (naming no subject).
    fn valid_lookup(&self, caller: &Caller, body: &Value) -> AppResult<(Lookup, Access)> {
        let valid = vpr_domain::validate::lookup(body)
            .map_err(|errs| record_refusal_of(self, caller, AuditAction::Lookup, body, errs))?;
        let access = access_of(&valid.input);
        Ok((valid, access))
    }

    /// The notices in force about a subject, with how each matched.
    fn lookup_candidates(&self, subject: &Subject) -> AppResult<(Vec<Candidate>, Vec<String>)> {
        let (blind, subject_refs) = subject_keys(self, subject);
        let found = self.store.find_by_blind_indexes(&blind)?;
        let ids: Vec<_> = found.iter().map(|(id, _)| *id).collect();
        // Read together: one query for the heads, one for the versions not already opened.
        let mut current = self.store.current_notices(&ids)?;
        let mut candidates = Vec::new();
        for (id, matched) in found {
            // Only notices in force are disclosed by look-ups.
            if let Some((n, _)) = current.remove(&id).filter(|(n, _)| n.status == NoticeStatus::Active) {
                candidates.push((n, matched));
            }
        }
        Ok((candidates, subject_refs))
    }

    /// Looks a subject up here only: decided, minimised and audited as `action`. Runs on the
    /// blocking pool.
    pub(crate) fn lookup_governed(
        &self,
        caller: &Caller,
        access: Access,
        subject: &Subject,
        action: AuditAction,
    ) -> AppResult<LookupResult> {
        let (candidates, subject_refs) = self.lookup_candidates(subject)?;
        let d = govern(self, caller, &access, Read::new(action, caller, subject_refs, candidates))?;
        refused(&d)?;
        Ok(self.lookup_result(d, access.purpose, vec![]))
    }

    fn lookup_result(&self, d: Disclosure, purpose: String, peers: Vec<PeerAnswer>) -> LookupResult {
        let own = self.tokens.peers();
        let federates = !own.is_empty();
        let mut results: Vec<LookedUp> = d
            .results
            .into_iter()
            .map(|n| LookedUp {
                broker: federates.then(|| own.own_id.clone()),
                notice: LookedUpNotice::Here(Box::new(n)),
            })
            .collect();
        let mut incomplete = Vec::new();
        for p in peers {
            if p.record.outcome != "answered" {
                let detail = p.record.detail.clone().unwrap_or_default();
                incomplete.push(Incomplete {
                    broker: p.record.broker.clone(),
                    reason: p.record.outcome.clone(),
                    detail,
                });
            }
            for mut n in p.notices {
                if let Value::Object(m) = &mut n {
                    m.insert("broker".into(), Value::String(p.record.broker.clone()));
                }
                results.push(LookedUp { broker: None, notice: LookedUpNotice::Peer(n) });
            }
        }
        LookupResult {
            lookup_id: d.audit_id,
            purpose,
            agreement_version: self.agreement.version.clone(),
            results,
            incomplete: federates.then_some(incomplete),
        }
    }

    /// Looks a subject up: here, and (unless the body asks for `local` scope) at every peer
    /// broker in parallel within the time budget, each deciding under its own agreement. One
    /// audit entry records the local decisions and what each peer answered; it is committed
    /// before anything is returned.
    pub async fn lookup(&self, caller: &Caller, body: Value) -> AppResult<LookupResult> {
        let federate = !self.tokens.peers().is_empty() && body.get("scope").and_then(Value::as_str) != Some("local");
        let caller = caller.clone();
        if !federate {
            return self
                .blocking(move |app| {
                    let (valid, access) = app.valid_lookup(&caller, &body)?;
                    app.lookup_governed(&caller, access, &valid.subject, AuditAction::Lookup)
                })
                .await;
        }
        let subject = body.get("subject").cloned().unwrap_or(Value::Null);
        // Validated here (no store work unless it is refused), so the peers are asked at once.
        let (valid, access) = match vpr_domain::validate::lookup(&body) {
            Ok(valid) => {
                let access = access_of(&valid.input);
                (valid, access)
            }
            Err(errs) => {
                let caller = caller.clone();
                return Err(self
                    .blocking(move |app| Ok(record_refusal_of(app, &caller, AuditAction::Lookup, &body, errs)))
                    .await?);
            }
        };
        // A requester refused here is not vouched for to anyone.
        let peers = requester_refusal(self, &caller.principal, &access).is_none().then(|| {
            let (app, rid, who) = (self.clone(), caller.request_id.clone(), relayed(&caller, &access, &subject));
            tokio::spawn(async move { ask_peers(&app, who, subject, &rid).await })
        });
        let local = {
            let (caller, access) = (caller.clone(), access.clone());
            self.blocking(move |app| {
                let (candidates, refs) = app.lookup_candidates(&valid.subject)?;
                prepare(app, &caller, &access, Read::new(AuditAction::Lookup, &caller, refs, candidates))
            })
            .await?
        };
        let answers = match peers {
            Some(task) => task.await.unwrap_or_else(|e| every_peer_failed(self, &e.to_string())),
            None => Vec::new(),
        };
        let records: Vec<PeerRecord> = answers.iter().map(|a| a.record.clone()).collect();
        let (d, entry) = local;
        if let Some(mut entry) = entry {
            // The look-up disclosed what the peers disclosed too.
            let from_peers = records.iter().any(|r| !r.notices.is_empty());
            let widened = match (entry.decision.as_str(), from_peers) {
                ("no-match", true) => Some("permit"),
                ("deny", true) => Some("partial"),
                _ => None,
            };
            if let Some(d) = widened {
                entry.decision = d.to_owned();
            }
            entry.federation = (!records.is_empty()).then_some(FederationRecord { relayed_by: None, peers: records });
            // Guarantee 1: the entry, naming what every peer disclosed, is durable first.
            self.blocking(move |app| app.store.append_audit(&entry).map_err(AppError::audit_write_failed)).await?;
        }
        refused(&d)?;
        Ok(self.lookup_result(d, access.purpose, answers))
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
