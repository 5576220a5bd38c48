//! The access checks every service shares: may this system act in this role for its
//! organisation, and is this request's purpose, role and justification one the agreement allows.

use vpr_auth::Principal;

use crate::caller::Access;
use crate::error::{AppError, AppResult};
use crate::App;

/// Roles of information governance: they record consents and objections, review the audit and
/// decide subscriptions that wait for approval.
pub const IG_ROLES: [&str; 3] = ["ig-lead", "caldicott-guardian", "dpo"];

/// The client id the console acts under in audit entries (`actor_system`); no partner system
/// may be registered under it.
pub const CONSOLE_CLIENT: &str = "vpr-console";

/// The roles a person may hold in the console: the IG roles, and VPR leads.
pub const CONSOLE_ROLES: [&str; 4] = [IG_ROLES[0], IG_ROLES[1], IG_ROLES[2], "vpr-lead"];

/// Why a system may not act in a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRefusal {
    /// The registry does not give the system this role.
    NotHeld,
    /// The agreement gives this role to no organisation of the system's type.
    NotGiven,
}

/// Whether the system holds `role` in the registry and the agreement gives that role to its
/// organisation's type: the one check behind every role a caller asserts.
pub fn may_act_as(app: &App, principal: &Principal, role: &str) -> Result<(), RoleRefusal> {
    // The console acts in the role the person's identity provider asserted, checked at sign-in;
    // it never passes a role a person typed.
    let holds = if principal.client_id == CONSOLE_CLIENT {
        CONSOLE_ROLES.contains(&role)
    } else {
        app.tokens.registry().system(&principal.client_id).is_some_and(|s| s.roles.iter().any(|r| r == role))
    };
    if !holds {
        return Err(RoleRefusal::NotHeld);
    }
    if !app.agreement.role_allowed(role, principal.org_type) {
        return Err(RoleRefusal::NotGiven);
    }
    Ok(())
}

/// Whether `role` is an IG role this system may act in.
pub fn is_ig_role(app: &App, principal: &Principal, role: &str) -> bool {
    IG_ROLES.contains(&role) && may_act_as(app, principal, role).is_ok()
}

/// Refuses anyone but an IG role this system may act in; `what` names what is reserved to IG.
pub fn ig_only(app: &App, principal: &Principal, role: &str, what: &str) -> AppResult<()> {
    if is_ig_role(app, principal, role) {
        Ok(())
    } else {
        Err(AppError::Forbidden(format!("{what} is for information governance roles only")))
    }
}

/// What of the audit log an IG role at `principal`'s organisation reviews: at the ICB, the
/// whole ICS's (`None`); at any other organisation, what its own people and systems did and
/// what was decided on its own notices (`Some(its ODS code)`) — it answers for its own data.
pub fn audit_scope(principal: &Principal) -> Option<String> {
    (principal.org_type != vpr_domain::vocab::OrgType::Icb).then(|| principal.org.to_string())
}

/// Whether an entry is within `scope` (see [`audit_scope`]).
pub fn in_scope(app: &App, scope: Option<&str>, e: &vpr_store::audit::AuditEntry) -> AppResult<bool> {
    let Some(org) = scope else { return Ok(true) };
    if e.actor_org == org {
        return Ok(true);
    }
    let ids: Vec<String> = e.notices.iter().map(|n| n.id.clone()).collect();
    Ok(!app.store.published_by(org, &ids)?.is_empty())
}

/// Entries as a reviewer of `scope` is shown them: in another organisation's entry, only the
/// decisions on its own notices (not what other publishers hold about the same person).
pub fn scoped_entries(
    app: &App,
    scope: Option<&str>,
    entries: &mut [vpr_store::audit::StoredAuditEntry],
) -> AppResult<()> {
    let Some(org) = scope else { return Ok(()) };
    let ids: std::collections::BTreeSet<String> = entries
        .iter()
        .filter(|e| e.entry.actor_org != org)
        .flat_map(|e| e.entry.notices.iter().map(|n| n.id.clone()))
        .collect();
    let ids: Vec<String> = ids.into_iter().collect();
    let mut own = std::collections::BTreeSet::new();
    for chunk in ids.chunks(1000) {
        own.extend(app.store.published_by(org, chunk)?);
    }
    for e in entries.iter_mut().filter(|e| e.entry.actor_org != org) {
        e.entry.notices.retain(|n| own.contains(&n.id));
    }
    Ok(())
}

/// Why a requester is refused before any notice is considered, if it is: the purpose is not
/// the agreement's, the role is not this system's or not given to its organisation's type, or a
/// break-glass justification is too short.
pub fn requester_refusal(app: &App, principal: &Principal, access: &Access) -> Option<String> {
    let agreement = &app.agreement;
    if !agreement.purposes.contains_key(&access.purpose) {
        return Some(format!("purpose `{}` is not a purpose of the agreement", access.purpose));
    }
    if let Some(peer) = &access.relayed_by {
        return relayed_refusal(app, principal, access, peer);
    }
    match may_act_as(app, principal, &access.role) {
        Err(RoleRefusal::NotHeld) => return Some(format!("this system may not act in the role `{}`", access.role)),
        Err(RoleRefusal::NotGiven) => {
            return Some(format!("the agreement gives no `{}` role to a {}", access.role, principal.org_type))
        }
        Ok(()) => {}
    }
    short_justification(app, access)
}

/// Why a requester of a neighbouring ICS, vouched for by `peer`, is refused, if it is: the
/// agreement does not answer peers for this purpose, or gives the role to no organisation of its
/// type. (Its own broker checked that its system holds the role.)
fn relayed_refusal(app: &App, principal: &Principal, access: &Access, peer: &str) -> Option<String> {
    let agreement = &app.agreement;
    if !agreement.federation.purposes.contains(&access.purpose) {
        let allowed = agreement.federation.purposes.join(", ");
        return Some(format!(
            "the agreement answers requests relayed by peer brokers (here `{peer}`) only for: {}",
            if allowed.is_empty() { "no purpose" } else { allowed.as_str() }
        ));
    }
    if !agreement.role_allowed(&access.role, principal.org_type) {
        return Some(format!("the agreement gives no `{}` role to a {}", access.role, principal.org_type));
    }
    short_justification(app, access)
}

/// Why a break-glass justification is refused, if it is: shorter than the agreement asks.
fn short_justification(app: &App, access: &Access) -> Option<String> {
    let min = app.agreement.break_glass.min_justification_chars;
    let j = access.justification.as_deref()?;
    (j.trim().chars().count() < min).then(|| format!("a break-glass justification needs at least {min} characters"))
}

/// Refuses a caller whose token lacks `scope`.
pub fn require_scope(principal: &Principal, scope: vpr_auth::Scope) -> AppResult<()> {
    if principal.has(scope) {
        Ok(())
    } else {
        Err(AppError::InsufficientScope(scope.code()))
    }
}
