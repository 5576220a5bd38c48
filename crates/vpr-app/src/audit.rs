//! Audit entries for the services: who acted, for which request, and refusals recorded before
//! they are answered.

use uuid::Uuid;
use vpr_domain::audit::AuditAction;
use vpr_store::audit::AuditEntry;

use crate::caller::Caller;
use crate::error::AppError;
use crate::App;

/// The purpose the broker's own management uses are recorded under (IG review, access logs,
/// subscription decisions, retention): the agreement's security-management purpose.
pub const MANAGEMENT_PURPOSE: &str = "vpr-management";

/// The actor an entry names: an organisation, its type and the system (which may no longer be
/// in the registry).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// ODS code.
    pub org: &'a str,
    /// Organisation type code.
    pub org_type: &'a str,
    /// Client id.
    pub system: &'a str,
}

/// An entry for `actor` doing `action` now, for request `request_id`, with every other field
/// empty for the caller to fill in.
pub fn audit_entry(app: &App, actor: Actor<'_>, request_id: &str, action: AuditAction, outcome: u16) -> AuditEntry {
    AuditEntry {
        id: Uuid::new_v4(),
        at: app.clock.now(),
        request_id: request_id.to_owned(),
        action: action.code().to_owned(),
        actor_org: actor.org.to_owned(),
        actor_org_type: actor.org_type.to_owned(),
        actor_system: actor.system.to_owned(),
        actor_user: None,
        actor_role: None,
        purpose: None,
        context_ref: None,
        break_glass: false,
        justification: None,
        subject_refs: vec![],
        decision: String::new(),
        notices: vec![],
        lawful_basis: vec![],
        clauses: vec![],
        agreement_version: app.agreement.version.clone(),
        outcome,
        ig_review: None,
        federation: None,
        received_by: None,
        replay_guard: None,
    }
}

/// An entry for the caller doing `action` now, in its request.
pub fn caller_entry(app: &App, caller: &Caller, action: AuditAction, outcome: u16) -> AuditEntry {
    let p = &caller.principal;
    let actor = Actor { org: p.org.as_str(), org_type: p.org_type.code(), system: &p.client_id };
    audit_entry(app, actor, &caller.request_id, action, outcome)
}

/// Records an authenticated request refused before anything was decided or read (bad input, a
/// role it may not act in), then returns the refusal; if the entry cannot be committed the
/// answer is that failure instead. Nothing about a subject is recorded: the input was not valid.
/// Runs on the blocking pool.
pub fn record_refusal(app: &App, caller: &Caller, action: AuditAction, refusal: AppError) -> AppError {
    match record_refused(app, caller, action, refusal.status()) {
        Ok(()) => refusal,
        Err(e) => e,
    }
}

/// Records a refusal answered with `status` (for refusals an edge makes itself, such as a body
/// that is not JSON).
pub fn record_refused(app: &App, caller: &Caller, action: AuditAction, status: u16) -> Result<(), AppError> {
    record_refused_for(app, caller, None, action, status)
}

/// [`record_refused`] naming the end user and role the request was for, as asserted.
pub fn record_refused_for(
    app: &App,
    caller: &Caller,
    who: Option<&crate::caller::Reviewer>,
    action: AuditAction,
    status: u16,
) -> Result<(), AppError> {
    let asserted = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let entry = AuditEntry {
        decision: "refused".to_owned(),
        actor_user: who.and_then(|w| asserted(&w.user)),
        actor_role: who.and_then(|w| asserted(&w.role)),
        ..caller_entry(app, caller, action, status)
    };
    app.store.append_audit(&entry).map_err(AppError::audit_write_failed)
}

/// What a refused look-up's body named, kept only where it is no one's personal data and is
/// what it claims to be: the purpose if it is one of the agreement's, the role if the system
/// may act in it, the user id if it passed its own rule (as every accepted look-up's does). A
/// field a rule refused is never kept (it could be anything: a name typed in the wrong box),
/// and nothing about the subject is.
fn asserted_in(
    app: &App,
    caller: &Caller,
    body: &serde_json::Value,
    errs: &[vpr_domain::FieldError],
) -> (Option<String>, Option<String>, Option<String>) {
    let refused = |pointer: &str| errs.iter().any(|e| e.pointer == pointer || e.pointer.is_empty());
    let text = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_str).map(str::trim).map(str::to_owned);
    let requester = body.get("requester");
    let purpose =
        text(body.get("purpose")).filter(|p| !refused("/purpose") && app.agreement.purposes.contains_key(p.as_str()));
    let registry = app.tokens.registry();
    let roles = registry.system(&caller.principal.client_id).map(|s| &s.roles);
    let role = text(requester.and_then(|r| r.get("role")))
        .filter(|r| !refused("/requester/role") && roles.is_some_and(|roles| roles.contains(r.as_str())));
    let user = text(requester.and_then(|r| r.get("user_id")))
        .filter(|u| !refused("/requester/user_id") && !refused("/requester") && !u.is_empty());
    (purpose, user, role)
}

/// [`record_refusal`] for a look-up refused as bad input (`errs`): the entry names the
/// purpose, user and role the body asserted, where [`asserted_in`] keeps them.
pub fn record_refusal_of(
    app: &App,
    caller: &Caller,
    action: AuditAction,
    body: &serde_json::Value,
    errs: Vec<vpr_domain::FieldError>,
) -> AppError {
    let (purpose, user, role) = asserted_in(app, caller, body, &errs);
    let refusal = AppError::Validation(errs);
    let entry = AuditEntry {
        decision: "refused".to_owned(),
        purpose,
        actor_user: user,
        actor_role: role,
        ..caller_entry(app, caller, action, refusal.status())
    };
    match app.store.append_audit(&entry) {
        Ok(()) => refusal,
        Err(e) => AppError::audit_write_failed(e),
    }
}

/// [`record_refusal`] from async code.
pub async fn refuse(app: &App, caller: &Caller, action: AuditAction, refusal: AppError) -> AppError {
    let caller = caller.clone();
    match app.blocking(move |app| Ok(record_refusal(app, &caller, action, refusal))).await {
        Ok(e) | Err(e) => e,
    }
}
