//! Partner identity: the registry of partner organisations and their systems, OAuth2 client
//! credentials with `private_key_jwt` client assertions (RFC 7523), and the broker's own
//! short-lived signed access tokens.

pub mod jose;
pub mod keys;
pub mod peers;
pub mod registry;
pub mod tokens;

pub use jose::EncryptionKey;
pub use keys::{BrokerKeys, SigningKeyFile};
pub use peers::{Peer, Peers, RelayRefused, RelayedRequester, VerifiedRelay};
pub use registry::{Partner, PartnerSystem, Rate, Registry, Scope};
pub use tokens::{AccessClaims, Principal, TokenService, TokenSettings};

/// Errors from identity and tokens, shaped for OAuth2 error responses (RFC 6749 §5.2).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The registry or a key file is invalid.
    #[error("{0}")]
    Config(String),
    /// The registry failed its JSON Schema or consistency checks.
    #[error("partner registry is invalid: {}", .0.iter().map(|e| format!("{} ({}): {}", e.pointer, e.rule, e.detail)).collect::<Vec<_>>().join("; "))]
    Registry(Vec<vpr_domain::FieldError>),
    /// The token request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed.
    #[error("{0}")]
    InvalidClient(String),
    /// The grant type is not client credentials.
    #[error("only the `client_credentials` grant is supported")]
    UnsupportedGrantType,
    /// A scope was asked for that the system does not hold.
    #[error("{0}")]
    InvalidScope(String),
    /// A bearer token is missing, malformed, expired or not ours.
    #[error("{0}")]
    InvalidToken(String),
    /// The replay store could not be reached.
    #[error("replay check unavailable: {0}")]
    ReplayStore(String),
}

impl AuthError {
    /// The OAuth2 `error` code for this error.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidClient(_) => "invalid_client",
            AuthError::UnsupportedGrantType => "unsupported_grant_type",
            AuthError::InvalidScope(_) => "invalid_scope",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Config(_) | AuthError::Registry(_) | AuthError::ReplayStore(_) => "server_error",
        }
    }
}
