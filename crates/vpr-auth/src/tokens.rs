//! OAuth2 client credentials with `private_key_jwt` (RFC 7523) and the broker's access tokens
//! (JWT, RFC 9068 style). Time is always passed in: nothing here reads the clock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use josekit::jws::{JwsHeader, JwsVerifier};
use josekit::jwt::{self, JwtPayload};
use serde::Serialize;
use vpr_domain::vocab::OrgType;
use vpr_domain::OdsCode;

use crate::keys::BrokerKeys;
use crate::peers::Peers;
use crate::registry::{Registry, Scope};
use crate::AuthError;

/// The only client assertion type accepted.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Token settings, handed in by the binary.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The broker's public base URL: issuer and audience of its access tokens.
    pub issuer: String,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Longest lifetime accepted for a client assertion (its `exp` at most this far ahead).
    pub max_assertion_ttl: Duration,
    /// Clock skew tolerated.
    pub leeway: Duration,
}

impl TokenSettings {
    /// The token endpoint URL, the audience client assertions must name.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.issuer)
    }
}

/// A verified client assertion, to be checked for replay before a token is issued.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    /// The authenticated client.
    pub client_id: String,
    /// Its `jti`.
    pub jti: String,
    /// Until when it is accepted: its `exp` plus the leeway (the `jti` must be remembered until
    /// then, or it could be replayed inside the leeway).
    pub expires_at: DateTime<Utc>,
}

/// An issued access token.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    /// The token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// Granted scopes, space separated.
    pub scope: String,
}

/// Claims the broker puts in its access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessClaims {
    /// The client (system).
    pub client_id: String,
    /// The organisation's ODS code.
    pub org: String,
    /// Granted scopes.
    pub scopes: BTreeSet<Scope>,
}

/// Who is calling: resolved from a verified access token and the current registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The system's client id.
    pub client_id: String,
    /// The system's name.
    pub system_name: String,
    /// The organisation.
    pub org: OdsCode,
    /// The organisation's name.
    pub org_name: String,
    /// The organisation's type.
    pub org_type: OrgType,
    /// Scopes granted in the token (and still held in the registry).
    pub scopes: BTreeSet<Scope>,
    /// The token's id, for the audit trail.
    pub token_id: String,
}

impl Principal {
    /// True if the principal holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Issues and verifies tokens.
#[derive(Debug, Clone)]
pub struct TokenService {
    registry: Arc<Registry>,
    keys: Arc<BrokerKeys>,
    /// The peers, replaced as a whole when a peer's keys are fetched afresh.
    peers: Arc<std::sync::RwLock<Arc<Peers>>>,
    settings: TokenSettings,
    /// Access tokens whose signature has been checked, by token.
    verified: Arc<std::sync::RwLock<std::collections::HashMap<String, TokenClaims>>>,
}

/// The most verified access tokens remembered; the memory starts afresh when full (a token is
/// about 600 bytes: a few MB at most).
const VERIFIED_TOKENS: usize = 10_000;

/// What a verified access token says.
#[derive(Debug, Clone)]
struct TokenClaims {
    client_id: String,
    org: String,
    scope: String,
    token_id: String,
    exp: DateTime<Utc>,
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(t.timestamp_millis()).unwrap_or(0))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl TokenService {
    /// Builds the service.
    pub fn new(registry: Arc<Registry>, keys: Arc<BrokerKeys>, settings: TokenSettings) -> Self {
        Self { registry, keys, peers: Arc::default(), settings, verified: Arc::default() }
    }

    /// The same service, with peer brokers as clients (granted only the `federation` scope).
    pub fn with_peers(self, peers: Arc<Peers>) -> Self {
        Self { peers: Arc::new(std::sync::RwLock::new(peers)), ..self }
    }

    /// The peer brokers, as they stand now.
    pub fn peers(&self) -> Arc<Peers> {
        self.peers.read().map(|p| Arc::clone(&p)).unwrap_or_default()
    }

    /// Takes `jwks`, fetched from peer `peer_id`'s URL, as its keys (checked as at start-up).
    /// Returns whether they changed.
    pub fn replace_peer_keys(&self, peer_id: &str, jwks: &serde_json::Value) -> Result<bool, AuthError> {
        let mut guard = self.peers.write().map_err(|_| AuthError::Config("the peers are unavailable".into()))?;
        if guard.get(peer_id).is_some_and(|p| p.has_jwks(jwks)) {
            return Ok(false);
        }
        let next = guard.with_peer_keys(peer_id, jwks, &self.registry)?;
        *guard = Arc::new(next);
        Ok(true)
    }

    /// The settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The broker's keys.
    pub fn keys(&self) -> &BrokerKeys {
        &self.keys
    }

    /// Verifies a client assertion: signature by a key registered to the client, `iss` = `sub`
    /// = the client, `aud` naming the token endpoint, a bounded `exp`, a `jti`.
    pub fn verify_client_assertion(
        &self,
        assertion_type: Option<&str>,
        assertion: Option<&str>,
        client_id_param: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedAssertion, AuthError> {
        if assertion_type != Some(JWT_BEARER) {
            return Err(AuthError::InvalidClient(format!("`client_assertion_type` must be `{JWT_BEARER}`")));
        }
        let assertion = assertion.ok_or_else(|| AuthError::InvalidClient("`client_assertion` is required".into()))?;
        let peers = self.peers();
        let registry = &self.registry;
        let selected = std::cell::Cell::new(None::<String>);
        let decoded = jwt::decode_with_verifier_selector(assertion, |header: &JwsHeader| {
            let kid = header.key_id().unwrap_or_default();
            // A partner system's key, or else a peer broker's.
            let (client_id, verifier) = match (registry.system_for_kid(kid), peers.for_kid(kid)) {
                (Some(system), _) => (system.client_id.clone(), system.verifier(kid)),
                (None, Some(peer)) => (peer.id.clone(), peer.verifier(kid)),
                (None, None) => return Ok(None),
            };
            if let Some(v) = verifier {
                if header.algorithm() != Some(v.algorithm().name()) {
                    return Ok(None);
                }
            }
            selected.set(Some(client_id));
            Ok(verifier)
        });
        let (payload, _) = decoded.map_err(|e| {
            let why = match e {
                josekit::JoseError::InvalidSignature(_) => "signature does not verify",
                _ => "no registered key verifies this assertion (unknown `kid` or `alg`)",
            };
            AuthError::InvalidClient(format!("client assertion rejected: {why}"))
        })?;
        let client_id = selected
            .take()
            .ok_or_else(|| AuthError::InvalidClient("no registered key verifies this assertion".into()))?;
        if payload.issuer() != Some(&client_id) || payload.subject() != Some(&client_id) {
            return Err(AuthError::InvalidClient(
                "`iss` and `sub` must both be the client id that owns the signing key".into(),
            ));
        }
        if client_id_param.is_some_and(|c| c != client_id) {
            return Err(AuthError::InvalidClient("`client_id` does not match the assertion".into()));
        }
        let endpoint = self.settings.token_endpoint();
        let aud_ok = payload.audience().is_some_and(|a| a.iter().any(|x| *x == endpoint || *x == self.settings.issuer));
        if !aud_ok {
            return Err(AuthError::InvalidClient(format!("`aud` must be the token endpoint `{endpoint}`")));
        }
        let exp = payload.expires_at().ok_or_else(|| AuthError::InvalidClient("`exp` is required".into()))?;
        let exp: DateTime<Utc> = exp.into();
        let leeway = chrono::Duration::seconds(secs(self.settings.leeway));
        if exp + leeway < now {
            return Err(AuthError::InvalidClient("client assertion has expired".into()));
        }
        if exp > now + chrono::Duration::seconds(secs(self.settings.max_assertion_ttl)) + leeway {
            return Err(AuthError::InvalidClient(format!(
                "client assertion lives too long: `exp` may be at most {} seconds ahead",
                self.settings.max_assertion_ttl.as_secs()
            )));
        }
        if let Some(nbf) = payload.not_before() {
            if DateTime::<Utc>::from(nbf) > now + leeway {
                return Err(AuthError::InvalidClient("client assertion is not yet valid".into()));
            }
        }
        if let Some(iat) = payload.issued_at() {
            if DateTime::<Utc>::from(iat) > now + leeway {
                return Err(AuthError::InvalidClient("`iat` is in the future".into()));
            }
        }
        let jti = payload.jwt_id().filter(|j| !j.is_empty() && j.len() <= 256);
        let jti = jti.ok_or_else(|| AuthError::InvalidClient("`jti` is required (at most 256 characters)".into()))?;
        Ok(VerifiedAssertion { client_id, jti: jti.to_owned(), expires_at: exp + leeway })
    }

    /// Issues an access token for an authenticated client. `scope` narrows the grant; by default
    /// the token carries every scope the registry gives the system.
    pub fn issue(&self, client_id: &str, scope: Option<&str>, now: DateTime<Utc>) -> Result<IssuedToken, AuthError> {
        let (org, held) = self.client(client_id).ok_or_else(|| AuthError::InvalidClient("unknown client".into()))?;
        let scopes: BTreeSet<Scope> = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => held,
            Some(s) => {
                let mut out = BTreeSet::new();
                for code in s.split_whitespace() {
                    let sc = Scope::from_code(code)
                        .ok_or_else(|| AuthError::InvalidScope(format!("unknown scope `{code}`")))?;
                    if !held.contains(&sc) {
                        return Err(AuthError::InvalidScope(format!("scope `{code}` is not granted to this client")));
                    }
                    out.insert(sc);
                }
                out
            }
        };
        let scope_str = scopes.iter().map(|s| s.code()).collect::<Vec<_>>().join(" ");
        let mut payload = JwtPayload::new();
        payload.set_issuer(&self.settings.issuer);
        payload.set_subject(client_id);
        payload.set_audience(vec![self.settings.issuer.clone()]);
        payload.set_issued_at(&system_time(now));
        payload.set_expires_at(&system_time(now + chrono::Duration::seconds(secs(self.settings.access_token_ttl))));
        payload.set_jwt_id(uuid::Uuid::new_v4().to_string());
        let claim =
            |p: &mut JwtPayload, k: &str, v: &str| p.set_claim(k, Some(serde_json::Value::String(v.to_owned())));
        claim(&mut payload, "client_id", client_id).map_err(|e| AuthError::Config(e.to_string()))?;
        claim(&mut payload, "org", &org).map_err(|e| AuthError::Config(e.to_string()))?;
        claim(&mut payload, "scope", &scope_str).map_err(|e| AuthError::Config(e.to_string()))?;
        let mut header = JwsHeader::new();
        header.set_token_type("at+jwt");
        let token = jwt::encode_with_signer(&payload, &header, self.keys.signer())
            .map_err(|e| AuthError::Config(format!("cannot sign access token: {e}")))?;
        Ok(IssuedToken {
            access_token: token,
            token_type: "Bearer",
            expires_in: self.settings.access_token_ttl.as_secs(),
            scope: scope_str,
        })
    }

    /// The claims of one of this broker's access tokens whose signature, type, issuer and audience
    /// have been checked — once per token: a token that verified is remembered (bounded), so a
    /// partner calling many times with one token pays for the signature check once.
    fn verified_claims(&self, token: &str) -> Result<TokenClaims, AuthError> {
        if let Some(c) = self.verified.read().ok().and_then(|m| m.get(token).cloned()) {
            return Ok(c);
        }
        let bad = |why: &str| AuthError::InvalidToken(why.to_owned());
        let keys = &self.keys;
        let (payload, header) = jwt::decode_with_verifier_selector(token, |h: &JwsHeader| {
            Ok(h.key_id().and_then(|kid| keys.verifier(kid)).map(|v| v as &dyn JwsVerifier))
        })
        .map_err(|_| bad("the access token is malformed or its signature does not verify"))?;
        if header.token_type() != Some("at+jwt") {
            return Err(bad("not an access token"));
        }
        if payload.issuer() != Some(&self.settings.issuer)
            || !payload.audience().is_some_and(|a| a.contains(&self.settings.issuer.as_str()))
        {
            return Err(bad("the access token was not issued for this broker"));
        }
        let exp: DateTime<Utc> = payload.expires_at().ok_or_else(|| bad("the access token has no expiry"))?.into();
        let str_claim = |k: &str| payload.claim(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        let claims = TokenClaims {
            client_id: str_claim("client_id"),
            org: str_claim("org"),
            scope: str_claim("scope"),
            token_id: payload.jwt_id().unwrap_or_default().to_owned(),
            exp,
        };
        if let Ok(mut m) = self.verified.write() {
            if m.len() >= VERIFIED_TOKENS {
                m.clear();
            }
            m.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    /// Verifies a bearer access token and resolves who is calling against the current registry
    /// (a system removed from the registry loses access at once).
    pub fn verify_access_token(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let bad = |why: &str| AuthError::InvalidToken(why.to_owned());
        let claims = self.verified_claims(token)?;
        if claims.exp + chrono::Duration::seconds(secs(self.settings.leeway)) < now {
            return Err(bad("the access token has expired"));
        }
        let TokenClaims { client_id, org, scope, token_id, .. } = claims;
        if let Some(peer) = self.peers().get(&client_id) {
            if self.registry.system(&client_id).is_none() {
                return peer_principal(peer, &scope, &token_id);
            }
        }
        let system = self.registry.system(&client_id).ok_or_else(|| bad("the client is no longer registered"))?;
        if org != system.ods_code.as_str() {
            return Err(bad("the client's organisation has changed"));
        }
        let partner = self
            .registry
            .partner(system.ods_code.as_str())
            .ok_or_else(|| bad("the organisation is no longer registered"))?;
        let scopes =
            scope.split_whitespace().filter_map(Scope::from_code).filter(|s| system.scopes.contains(s)).collect();
        Ok(Principal {
            client_id,
            system_name: system.name.clone(),
            org: partner.ods_code.clone(),
            org_name: partner.name.clone(),
            org_type: partner.org_type,
            scopes,
            token_id,
        })
    }

    /// A client's organisation and the scopes it may be granted: a partner system's from the
    /// registry, or a peer broker's (its id, and `federation` only).
    fn client(&self, client_id: &str) -> Option<(String, BTreeSet<Scope>)> {
        match (self.registry.system(client_id), self.peers().get(client_id)) {
            (Some(system), _) => Some((system.ods_code.as_str().to_owned(), system.scopes.clone())),
            (None, Some(peer)) => Some((peer.id.clone(), BTreeSet::from([Scope::Federation]))),
            (None, None) => None,
        }
    }
}

/// A peer broker calling with one of our access tokens: its organisation is its ICB.
fn peer_principal(peer: &crate::peers::Peer, scope: &str, token_id: &str) -> Result<Principal, AuthError> {
    let org = OdsCode::parse(&peer.id)
        .map_err(|_| AuthError::InvalidToken(format!("peer id `{}` is not an ODS code", peer.id)))?;
    Ok(Principal {
        client_id: peer.id.clone(),
        system_name: peer.name.clone(),
        org,
        org_name: peer.name.clone(),
        org_type: OrgType::Icb,
        scopes: scope.split_whitespace().filter_map(Scope::from_code).filter(|s| *s == Scope::Federation).collect(),
        token_id: token_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::keys::SigningKeyFile;

    fn service() -> TokenService {
        let registry = serde_json::json!({
            "registry_version": 1, "ics": {"name": "Test"},
            "partners": [{"ods_code": "XAM01", "name": "Ambulance", "type": "ambulance-trust",
                "contact": {"telephone": "0113 496 0000"},
                "systems": [{"client_id": "cad", "name": "CAD", "scopes": ["lookups"], "jwks": {"keys": [
                    serde_json::Value::Object(crate::keys::public_jwk(&SigningKeyFile::generate("cad-1", false).unwrap().jwk).unwrap().as_ref().clone())
                ]}}]}]
        });
        let keys = BrokerKeys::new(&[SigningKeyFile::generate("broker-1", false).unwrap()]).unwrap();
        TokenService::new(
            Arc::new(Registry::from_json(&registry.to_string()).unwrap()),
            Arc::new(keys),
            TokenSettings {
                issuer: "https://vpr.example".into(),
                access_token_ttl: Duration::from_secs(300),
                max_assertion_ttl: Duration::from_secs(300),
                leeway: Duration::from_secs(30),
            },
        )
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_tampered_one_still_fails() {
        let tokens = service();
        let now = Utc::now();
        let t = tokens.issue("cad", None, now).unwrap().access_token;
        assert_eq!(tokens.verify_access_token(&t, now).unwrap().client_id, "cad");
        // The second check is from memory: the same answer, and the expiry still applies.
        assert_eq!(tokens.verify_access_token(&t, now).unwrap().org.as_str(), "XAM01");
        let later = now + chrono::Duration::seconds(300 + 31);
        assert!(matches!(tokens.verify_access_token(&t, later), Err(AuthError::InvalidToken(_))));
        // A character of the claims changed (not the signature's last, whose low bits may not count).
        let at = t.find('.').unwrap() + 5;
        let swapped = if t.get(at..=at) == Some("A") { "B" } else { "A" };
        let tampered = format!("{}{swapped}{}", t.get(..at).unwrap(), t.get(at + 1..).unwrap());
        assert_ne!(tampered, t);
        assert!(tokens.verify_access_token(&tampered, now).is_err());
    }
}
