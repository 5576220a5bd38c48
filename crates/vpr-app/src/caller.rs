//! Who is asking, for which request, and in what circumstances: what every service is given by
//! the edge that authenticated the request.

use vpr_auth::Principal;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The system, its organisation and its scopes, from the access token.
    pub principal: Principal,
    /// The id of the request being served (recorded in every audit entry it causes).
    pub request_id: String,
}

impl Caller {
    /// A caller for one request.
    pub fn new(principal: Principal, request_id: impl Into<String>) -> Self {
        Self { principal, request_id: request_id.into() }
    }

    /// The caller's organisation's ODS code.
    pub fn org(&self) -> &str {
        self.principal.org.as_str()
    }
}

/// The circumstances a caller asserts for a read of notice data.
#[derive(Debug, Clone)]
pub struct Access {
    /// Purpose of use.
    pub purpose: String,
    /// End user.
    pub user_id: String,
    /// Role.
    pub role: String,
    /// Incident, encounter or case reference.
    pub context_ref: Option<String>,
    /// Break-glass justification.
    pub justification: Option<String>,
    /// For a requester of a neighbouring ICS: the peer broker that relayed the request and
    /// vouches for it.
    pub relayed_by: Option<String>,
    /// The relay's one-time id, claimed in the same transaction as the read's audit entry (one
    /// commit, not two); a replay writes nothing and is refused.
    pub replay_guard: Option<vpr_store::audit::ReplayGuard>,
}

/// The IG user and role a request acts for.
#[derive(Debug, Clone)]
pub struct Reviewer {
    /// The IG user.
    pub user: String,
    /// Their role.
    pub role: String,
}
