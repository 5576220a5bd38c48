//! The disclosure service, shared by every read of notice data by anyone but its publisher
//! (look-ups, reads, FHIR searches, feed reads and webhook pushes).
//!
//! [`govern`] runs steps 3 to 7 of the pipeline for one read: check the requester (role held,
//! purpose in the agreement, break-glass justified) → read the subjects' consents and
//! objections → decide each notice → minimise it to the decided view → commit the audit entry →
//! only then return. If the entry cannot be committed the read fails and nothing is disclosed.

mod minimise;

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vpr_auth::Principal;
use vpr_domain::audit::AuditAction;
use vpr_policy::{AccessContext, Decision, NoticeFacts, Requester, View};
use vpr_store::audit::{AuditEntry, AuditedNotice, FederationRecord};
use vpr_store::directives::DirectiveState;
use vpr_store::{StoreError, StoredNotice};

pub use minimise::{minimise, publisher_view, subject_kinds, DisclosedNotice, FullPart, Publisher, Shown, SummaryPart};

use crate::access::requester_refusal;
use crate::audit::{audit_entry, Actor};
use crate::caller::{Access, Caller};
use crate::error::{AppError, AppResult};
use crate::App;

/// The blind indexes of a subject's identifiers, and the references the audit records for them
/// (`kind:blind-index`, never the identifier itself).
pub fn subject_keys(app: &App, subject: &vpr_domain::notice::Subject) -> (Vec<String>, Vec<String>) {
    subject
        .match_keys()
        .iter()
        .map(|(kind, value)| {
            let blind = app.store.vault().blind_index(*kind, value);
            let reference = format!("{}:{blind}", kind.code());
            (blind, reference)
        })
        .unzip()
}

/// What the policies may know about a notice; `None` when its publisher is not in the registry
/// (such a notice is denied: the agreement cannot say what its publisher allows).
pub fn facts(app: &App, n: &StoredNotice) -> Option<NoticeFacts> {
    let publisher_type = app.tokens.registry().partner(&n.publisher_ods)?.org_type;
    let c = &n.content;
    Some(NoticeFacts {
        id: n.id.to_string(),
        publisher: n.publisher_ods.clone(),
        publisher_type,
        category: c.category.code().to_owned(),
        risk_level: c.risk_level.code().to_owned(),
        medical_factor_operative: c.medical_factor_operative,
        lawful_basis: c.lawful_basis.iter().map(|b| b.code().to_owned()).collect(),
        subject_kinds: subject_kinds(&c.subject).into_iter().map(str::to_owned).collect(),
        has_crime_reference: c.restricted.as_ref().is_some_and(|r| r.crime_reference.is_some()),
        active: n.status == vpr_domain::vocab::NoticeStatus::Active,
    })
}

/// A notice found for a read, with how the query matched it (look-ups).
pub type Candidate = (StoredNotice, Vec<String>);

/// One notice considered for disclosure.
#[derive(Debug)]
struct Considered {
    notice: StoredNotice,
    matched: Vec<String>,
    decision: Decision,
}

/// The result of a governed read.
#[derive(Debug)]
pub struct Disclosure {
    /// The audit entry's id.
    pub audit_id: Uuid,
    /// The permitted notices, minimised, in the candidates' order.
    pub results: Vec<DisclosedNotice>,
    /// Why the requester was refused before any notice was considered, if it was.
    pub refused: Option<String>,
}

/// A read to govern.
#[derive(Debug)]
pub struct Read {
    /// The audit action (look-up, read, FHIR search, delivery, ...).
    pub action: AuditAction,
    /// The request id the audit entry records.
    pub request_id: String,
    /// Subject references for the audit (`kind:blind-index`).
    pub subject_refs: Vec<String>,
    /// The notices found.
    pub candidates: Vec<Candidate>,
    /// The status a refusal is answered with.
    pub refusal_status: u16,
    /// For deliveries and feed reads: the subscription receiving the notices.
    pub recipient: Option<Recipient>,
}

/// A subscription on the receiving end of a read.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The subscription.
    pub subscription_id: Uuid,
    /// Notices it was given before (so it is told of withdrawals).
    pub received: HashSet<String>,
    /// The broadest view its payload allows (`id-only` subscriptions get the existence view).
    pub max_view: View,
    /// A push: recorded with outcome 0, since the receiver's answer comes after the entry is
    /// committed (it is kept in the subscription's delivery status).
    pub push: bool,
}

impl Read {
    /// A read by an API caller (not a subscription), refused with 403.
    pub fn new(action: AuditAction, caller: &Caller, subject_refs: Vec<String>, candidates: Vec<Candidate>) -> Self {
        Self {
            action,
            request_id: caller.request_id.clone(),
            subject_refs,
            candidates,
            refusal_status: 403,
            recipient: None,
        }
    }
}

/// Governs a read by an API caller (steps 3-7): decides, minimises and audits it. Runs on the
/// blocking pool.
pub fn govern(app: &App, caller: &Caller, access: &Access, read: Read) -> AppResult<Disclosure> {
    let (disclosure, entry) = prepare(app, caller, access, read)?;
    // Guarantee 1: no disclosure without a committed audit entry. (The benchmark switches that
    // skip it are refused outside demo mode.)
    match (entry, &access.replay_guard) {
        (Some(entry), _) => app.store.append_audit(&entry).map_err(|e| match e {
            StoreError::Replayed => AppError::from(e),
            e => AppError::audit_write_failed(e),
        })?,
        // Unaudited (benchmark) reads still refuse a replayed relay.
        (None, Some(g)) => {
            if !app.store.claim_assertion_jti(&g.client_id, &g.jti, g.expires_at, g.now)? {
                return Err(AppError::from(StoreError::Replayed));
            }
        }
        (None, None) => {}
    }
    Ok(disclosure)
}

/// Steps 3 to 6 of [`govern`] without the commit: the disclosure and the entry that must be
/// committed before any of it is returned (a federated look-up adds its peers' answers to the
/// entry first). Runs on the blocking pool.
pub fn prepare(app: &App, caller: &Caller, access: &Access, read: Read) -> AppResult<(Disclosure, Option<AuditEntry>)> {
    let now = app.clock.now();
    let principal = &caller.principal;
    let states = if app.benchmark.ungoverned_reads || requester_refusal(app, principal, access).is_some() {
        HashMap::new()
    } else {
        let ids: Vec<Uuid> = read.candidates.iter().map(|(n, _)| n.id).collect();
        app.store.directive_states(&ids, &access.purpose, now.date_naive())?
    };
    Ok(decide_read(app, principal, access, read, now, &states))
}

/// The benchmark baseline (refused outside demo mode): every candidate in full, no decision.
fn ungoverned(app: &App, candidates: &[Candidate]) -> Disclosure {
    let full =
        Decision { permit: true, view: Some(View::Full), restricted: false, lawful_basis: vec![], clauses: vec![] };
    let results = candidates.iter().map(|(n, m)| minimise(app, n, m, View::Full, &full)).collect();
    Disclosure { audit_id: Uuid::nil(), results, refused: None }
}

/// Step 5: each candidate decided by the agreement, with the subject's directives in force.
fn decide_each(
    app: &App,
    principal: &Principal,
    access: &Access,
    candidates: Vec<Candidate>,
    recipient: Option<&Recipient>,
    states: &HashMap<Uuid, DirectiveState>,
) -> Vec<Considered> {
    let requester = Requester {
        org: principal.org.as_str().to_owned(),
        org_type: principal.org_type,
        role: access.role.clone(),
        system: principal.client_id.clone(),
        via: access.relayed_by.clone(),
    };
    let mut considered = Vec::with_capacity(candidates.len());
    for (notice, matched) in candidates {
        let directives = states.get(&notice.id).copied().unwrap_or_default();
        let ctx = AccessContext {
            purpose: access.purpose.clone(),
            break_glass: access.justification.is_some(),
            objection_upheld: directives.objection_upheld,
            consent_given: directives.consent_given,
            has_context_reference: access.context_ref.is_some(),
            previously_received: recipient.is_some_and(|r| r.received.contains(&notice.id.to_string())),
        };
        let mut decision = match facts(app, &notice) {
            Some(f) => app.agreement.decide(&requester, &f, &ctx),
            None => Decision { permit: false, view: None, restricted: false, lawful_basis: vec![], clauses: vec![] },
        };
        if let (Some(r), Some(view)) = (recipient, decision.view) {
            if view > r.max_view {
                decision.view = Some(r.max_view);
                decision.restricted = false;
            }
        }
        considered.push(Considered { notice, matched, decision });
    }
    considered
}

/// The read's overall decision code and the outcome its entry records.
fn overall(read: &Read, refused: bool, considered: &[Considered]) -> (&'static str, u16) {
    let permitted = considered.iter().filter(|c| c.decision.permit).count();
    let decision = match (refused, considered.len(), permitted) {
        (true, _, _) => "refused",
        (false, 0, _) => "no-match",
        (false, n, p) if p == n => "permit",
        (false, _, 0) => "deny",
        _ => "partial",
    };
    let outcome = if read.recipient.as_ref().is_some_and(|r| r.push) {
        0
    } else if refused || (read.action == AuditAction::Read && permitted == 0) {
        read.refusal_status
    } else {
        200
    };
    (decision, outcome)
}

/// Step 6's record: the entry naming every decision of the read.
fn entry_of(
    app: &App,
    principal: &Principal,
    access: &Access,
    read: &Read,
    refused: bool,
    considered: &[Considered],
) -> AuditEntry {
    let (decision, outcome) = overall(read, refused, considered);
    let mut basis = BTreeSet::new();
    let mut clauses = BTreeSet::new();
    for c in considered {
        basis.extend(c.decision.lawful_basis.iter().cloned());
        clauses.extend(c.decision.clauses.iter().cloned());
    }
    let actor =
        Actor { org: principal.org.as_str(), org_type: principal.org_type.code(), system: &principal.client_id };
    AuditEntry {
        actor_user: Some(access.user_id.clone()),
        actor_role: Some(access.role.clone()),
        purpose: Some(access.purpose.clone()),
        context_ref: access.context_ref.clone(),
        break_glass: access.justification.is_some(),
        justification: access.justification.clone(),
        subject_refs: read.subject_refs.clone(),
        decision: decision.to_owned(),
        notices: considered.iter().map(audited).collect(),
        lawful_basis: basis.into_iter().collect(),
        clauses: clauses.into_iter().collect(),
        ig_review: (access.justification.is_some() && !refused).then(|| "pending".to_owned()),
        received_by: read.recipient.as_ref().map(|r| r.subscription_id.to_string()),
        replay_guard: access.replay_guard.clone(),
        federation: access
            .relayed_by
            .as_ref()
            .map(|peer| FederationRecord { relayed_by: Some(peer.clone()), peers: vec![] }),
        ..audit_entry(app, actor, &read.request_id, read.action, outcome)
    }
}

fn audited(c: &Considered) -> AuditedNotice {
    AuditedNotice {
        id: c.notice.id.to_string(),
        version: c.notice.version.version,
        decision: if c.decision.permit { "permit" } else { "deny" }.to_owned(),
        view: c.decision.view.map(|v| v.code().to_owned()),
        restricted: c.decision.restricted,
        lawful_basis: c.decision.lawful_basis.clone(),
        clauses: c.decision.clauses.clone(),
    }
}

/// Decides and minimises a read, given the directives in force for its notices' subjects (read
/// just before, for the read's purpose), and makes its audit entry. Nothing may be disclosed
/// until the caller has committed that entry; there is none only for the benchmark baselines
/// (refused outside demo mode).
pub fn decide_read(
    app: &App,
    principal: &Principal,
    access: &Access,
    mut read: Read,
    now: DateTime<Utc>,
    states: &HashMap<Uuid, DirectiveState>,
) -> (Disclosure, Option<AuditEntry>) {
    if app.benchmark.ungoverned_reads {
        return (ungoverned(app, &read.candidates), None);
    }
    let refused = requester_refusal(app, principal, access);
    let candidates = std::mem::take(&mut read.candidates);
    let considered = match refused {
        Some(_) => Vec::new(),
        None => decide_each(app, principal, access, candidates, read.recipient.as_ref(), states),
    };
    let entry = AuditEntry { at: now, ..entry_of(app, principal, access, &read, refused.is_some(), &considered) };
    // Minimise first, so nothing but the minimised form exists past this point.
    let results = considered
        .iter()
        .filter_map(|c| c.decision.view.map(|v| minimise(app, &c.notice, &c.matched, v, &c.decision)))
        .collect();
    let disclosure = Disclosure { audit_id: entry.id, results, refused };
    (disclosure, (!app.benchmark.unaudited_reads).then_some(entry))
}
