//! The answering side: a peer broker's relayed look-up, decided, minimised and audited here
//! under this broker's agreement, as if the remote partner had asked directly.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use vpr_auth::{Principal, RelayRefused, VerifiedRelay};
use vpr_domain::audit::AuditAction;
use vpr_domain::OdsCode;
use vpr_store::audit::ReplayGuard;

use crate::access::require_scope;
use crate::audit::record_refusal;
use crate::caller::{Access, Caller};
use crate::error::{AppError, AppResult};
use crate::federation::ask::subject_digest;
use crate::services::lookups::LookupResult;
use crate::App;

/// Refuses a caller that is not a peer broker holding the `federation` scope; `what` names what
/// only a peer may do.
pub(crate) fn require_peer(app: &App, caller: &Caller, what: &str) -> AppResult<()> {
    require_scope(&caller.principal, vpr_auth::Scope::Federation)?;
    if app.tokens.peers().get(caller.org()).is_none() {
        return Err(AppError::Forbidden(format!("only a peer broker may {what}")));
    }
    Ok(())
}

/// The refusal of a relay, naming the rule it broke (`/relay`).
pub(crate) fn relay_refusal(r: RelayRefused) -> AppError {
    AppError::RelayRefused { rule: r.rule, detail: r.detail }
}

/// Checks the relay fully: signature, audience, lifetime, vouching (in vpr-auth), then the
/// replay (once per `jti`, shared by every replica) and that it names what was sent (`digest`,
/// the hex SHA-256 of the subject or subscription).
pub(crate) fn checked_relay(app: &App, caller: &Caller, relay: &str, digest: &str) -> AppResult<VerifiedRelay> {
    let v = verified_relay(app, caller, relay, digest)?;
    let g = replay_guard(&v, app.clock.now());
    if !app.store.claim_assertion_jti(&g.client_id, &g.jti, g.expires_at, g.now)? {
        return Err(relay_refusal(RelayRefused { rule: "replay", detail: "this relay was used before".into() }));
    }
    Ok(v)
}

/// The relay's one-time id, to claim (at the latest with the audit entry of what it asked).
fn replay_guard(v: &VerifiedRelay, now: chrono::DateTime<chrono::Utc>) -> ReplayGuard {
    ReplayGuard {
        client_id: format!("relay:{}", v.peer),
        jti: v.jti.clone(),
        expires_at: v.expires_at.naive_utc(),
        now: now.naive_utc(),
    }
}

/// [`checked_relay`] but for the replay, which the caller claims with its audit entry.
fn verified_relay(app: &App, caller: &Caller, relay: &str, digest: &str) -> AppResult<VerifiedRelay> {
    let peers = app.tokens.peers();
    let now = app.clock.now();
    let leeway = app.tokens.settings().leeway;
    let v = peers.verify_relay(caller.org(), relay, now, leeway).map_err(|r| {
        if r.rule == "signature" {
            app.federation.want_keys(caller.org());
        }
        relay_refusal(r)
    })?;
    if digest != v.requester.subject_sha256 {
        return Err(relay_refusal(RelayRefused {
            rule: "subject",
            detail: "the relay names another subject (or subscription) than the one sent".into(),
        }));
    }
    Ok(v)
}

/// The remote requester as a principal: its organisation and type as vouched for, its system
/// at its own broker. It holds no scope here.
pub(crate) fn remote_principal(v: &VerifiedRelay) -> AppResult<Principal> {
    let r = &v.requester;
    let org = OdsCode::parse(&r.org).map_err(|_| {
        relay_refusal(RelayRefused { rule: "claims", detail: format!("`{}` is not an ODS code", r.org) })
    })?;
    Ok(Principal {
        client_id: r.system.clone(),
        system_name: r.system.clone(),
        org,
        org_name: String::new(),
        org_type: r.org_type,
        scopes: BTreeSet::new(),
        token_id: v.jti.clone(),
    })
}

/// The relayed request as the body of a local look-up, to be validated as one.
fn lookup_body(v: &VerifiedRelay, subject: Value) -> Value {
    let r = &v.requester;
    let mut body = json!({
        "purpose": r.purpose,
        "requester": {"user_id": r.user, "role": r.role},
        "subject": subject,
        "scope": "local",
    });
    if let Value::Object(m) = &mut body {
        if let Some(reference) = &r.context_ref {
            m.insert("context".into(), json!({"reference": reference}));
        }
        if let Some(j) = &r.break_glass {
            m.insert("break_glass".into(), json!({"justification": j}));
        }
    }
    body
}

impl App {
    /// Answers a look-up relayed by the peer broker `caller` for one of its partners. Every
    /// refusal is audited here (the actor: the peer, or the partner once its relay is checked);
    /// a permitted answer is audited as a `relayed-lookup` by the remote partner, naming the
    /// peer that relayed it. Never relays on.
    pub async fn answer_relayed_lookup(&self, caller: &Caller, body: Value) -> AppResult<LookupResult> {
        require_peer(self, caller, "relay a look-up")?;
        let caller = caller.clone();
        self.blocking(move |app| {
            let refuse = |e: AppError| record_refusal(app, &caller, AuditAction::RelayedLookup, e);
            let input =
                vpr_domain::validate::relayed_lookup(&body).map_err(|errs| refuse(AppError::Validation(errs)))?;
            let digest = subject_digest(&input.subject);
            let relay = verified_relay(app, &caller, &input.relay, &digest).map_err(refuse)?;
            let remote = Caller::new(remote_principal(&relay).map_err(refuse)?, caller.request_id.clone());
            let valid = vpr_domain::validate::lookup(&lookup_body(&relay, input.subject))
                .map_err(|errs| refuse(AppError::Validation(errs)))?;
            let r = &relay.requester;
            let access = Access {
                purpose: r.purpose.clone(),
                user_id: r.user.clone(),
                role: r.role.clone(),
                context_ref: r.context_ref.clone(),
                justification: r.break_glass.as_ref().map(|j| j.trim().to_owned()),
                relayed_by: Some(relay.peer.clone()),
                // Claimed with the look-up's audit entry: one commit, not two.
                replay_guard: Some(replay_guard(&relay, app.clock.now())),
            };
            app.lookup_governed(&remote, access, &valid.subject, AuditAction::RelayedLookup).map_err(|e| match e {
                AppError::RelayRefused { .. } => refuse(e),
                other => other,
            })
        })
        .await
    }
}
