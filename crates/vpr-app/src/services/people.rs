//! People signed in to the console through the ICS's identity provider: who they are, checked
//! against the registry and the agreement, and how they call the services (as the console
//! acting for their organisation, in their role, with their OIDC subject as the user).

use std::collections::BTreeSet;

use vpr_auth::{Principal, Scope};
use vpr_domain::audit::AuditAction;
use vpr_store::audit::AuditEntry;

use crate::access::IG_ROLES;
use crate::audit::{audit_entry, Actor, MANAGEMENT_PURPOSE};
use crate::caller::{Caller, Reviewer};
use crate::error::{AppError, AppResult};
use crate::App;

pub use crate::access::{CONSOLE_CLIENT, CONSOLE_ROLES};

/// A person as their identity provider asserted them in a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The identity provider (its issuer URL).
    pub issuer: String,
    /// Their subject at the identity provider: the user in every audit entry.
    pub subject: String,
    /// Their name, as shown on the console.
    pub name: String,
    /// Their organisation's ODS code.
    pub org: String,
    /// Their console role.
    pub role: String,
}

impl Person {
    /// Whether the person holds an IG role.
    pub fn is_ig(&self) -> bool {
        IG_ROLES.contains(&self.role.as_str())
    }
}

/// The scopes a console role acts with.
fn scopes_of(role: &str) -> BTreeSet<Scope> {
    if IG_ROLES.contains(&role) {
        BTreeSet::from([Scope::AuditRead, Scope::IgWrite, Scope::NoticesRead, Scope::Subscriptions])
    } else {
        BTreeSet::from([Scope::NoticesRead])
    }
}

impl App {
    /// The caller a signed-in person acts as, checked: a console role, an organisation in the
    /// registry, and the agreement giving that role to that organisation's type. `session_ref`
    /// (a reference to the console session, never the cookie) stands where a token id would.
    pub fn person_caller(&self, person: &Person, session_ref: &str, request_id: &str) -> AppResult<(Caller, Reviewer)> {
        if !CONSOLE_ROLES.contains(&person.role.as_str()) {
            return Err(AppError::Forbidden(format!(
                "`{}` is not a console role (the console is for {})",
                person.role,
                CONSOLE_ROLES.join(", ")
            )));
        }
        let registry = self.tokens.registry();
        let Some(partner) = registry.partner(&person.org) else {
            return Err(AppError::Forbidden(format!("`{}` is not an organisation of this ICS", person.org)));
        };
        if !self.agreement.role_allowed(&person.role, partner.org_type) {
            return Err(AppError::Forbidden(format!(
                "the agreement gives no `{}` role to a {}",
                person.role, partner.org_type
            )));
        }
        let principal = Principal {
            client_id: CONSOLE_CLIENT.to_owned(),
            system_name: "IG and VPR console".to_owned(),
            org: partner.ods_code.clone(),
            org_name: partner.name.clone(),
            org_type: partner.org_type,
            scopes: scopes_of(&person.role),
            token_id: session_ref.to_owned(),
        };
        let reviewer = Reviewer { user: person.subject.clone(), role: person.role.clone() };
        Ok((Caller::new(principal, request_id), reviewer))
    }

    /// Records a sign-in to the console (or its refusal, with the reason) or a sign-out, for
    /// the person; `org` and `role` are as the identity provider asserted them.
    pub async fn record_console_session(
        &self,
        person: Person,
        action: AuditAction,
        refusal: Option<String>,
        session_ref: String,
        request_id: String,
    ) -> AppResult<()> {
        self.blocking(move |app| {
            let entry = console_entry(app, &person, action, refusal, &session_ref, &request_id);
            app.store.append_audit(&entry).map_err(AppError::audit_write_failed)
        })
        .await
    }
}

/// The audit entry of a sign-in, refused sign-in or sign-out: the person as asserted (a refused
/// one may name an organisation that is not a partner), the identity provider and the name.
fn console_entry(
    app: &App,
    person: &Person,
    action: AuditAction,
    refusal: Option<String>,
    session_ref: &str,
    request_id: &str,
) -> AuditEntry {
    let org_type = app.tokens.registry().partner(&person.org).map(|p| p.org_type.code()).unwrap_or("unknown");
    let actor = Actor { org: &person.org, org_type, system: CONSOLE_CLIENT };
    let mut context = format!("issuer={} | name={} | session={session_ref}", person.issuer, person.name);
    if let Some(why) = &refusal {
        context.push_str(&format!(" | refused: {why}"));
    }
    let base = audit_entry(app, actor, request_id, action, if refusal.is_some() { 403 } else { 200 });
    AuditEntry {
        actor_user: Some(person.subject.clone()),
        actor_role: Some(person.role.clone()),
        purpose: Some(MANAGEMENT_PURPOSE.into()),
        context_ref: Some(context),
        decision: if refusal.is_some() { "refused" } else { "permit" }.into(),
        ..base
    }
}
