//! Peer brokers: the neighbouring ICSs' brokers this broker federates with, and the signed
//! assertions by which an asking broker vouches for the partner it asks on behalf of.
//!
//! A peer authenticates at this broker's token endpoint like a partner system does
//! (`private_key_jwt`, client id = the peer's ICB ODS code) and is granted only the
//! `federation` scope. With each federated request it sends a *relay*: a JWS signed by its own
//! key, at most [`MAX_RELAY_SECONDS`] long, naming the requester (organisation, type, system,
//! user, role, purpose, context, break-glass justification), the digest of the request's subject
//! and a `jti`. [`Peers::verify_relay`] checks all of that but the replay, which needs the store.
//! Time is always passed in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use josekit::jwk::Jwk;
use josekit::jws::{JwsHeader, JwsVerifier};
use josekit::jwt::{self, JwtPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vpr_domain::vocab::OrgType;

use crate::keys::BrokerKeys;
use crate::registry::verifier_for;
use crate::AuthError;

/// The JWS `typ` of a relayed requester.
pub const RELAY_TYP: &str = "vpr-relay+jwt";

/// The longest a relay may live (`exp` - `iat`), in seconds.
pub const MAX_RELAY_SECONDS: i64 = 60;

/// A peer broker, as configured.
#[derive(Clone)]
pub struct Peer {
    /// Its id: the ICB's ODS code (its client id here).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its base URL.
    pub base_url: String,
    /// The partner organisations it may vouch for, with their types.
    pub vouches_for: BTreeMap<String, OrgType>,
    /// Where its public keys are fetched from (and refreshed), when not from a file.
    pub jwks_url: Option<String>,
    verifiers: BTreeMap<String, Arc<dyn JwsVerifier>>,
    /// The JWKS its verifiers were built from (to tell whether a fetched one changed).
    jwks: Value,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("keys", &self.verifiers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A peer's public keys: a JWKS document of one or more keys, each with a `kid`.
fn verifiers_of(id: &str, jwks: &Value) -> Result<BTreeMap<String, Arc<dyn JwsVerifier>>, AuthError> {
    let bad = |why: String| AuthError::Config(format!("peer `{id}`: {why}"));
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or_else(|| bad("the JWKS has no `keys`".into()))?;
    let mut verifiers = BTreeMap::new();
    for k in keys {
        let map = k.as_object().cloned().ok_or_else(|| bad("a JWKS key is not an object".into()))?;
        let jwk = Jwk::from_map(map).map_err(|e| bad(format!("a JWKS key is not a JWK: {e}")))?;
        let kid = jwk.key_id().ok_or_else(|| bad("every key needs a `kid`".into()))?.to_owned();
        let verifier: Arc<dyn JwsVerifier> = verifier_for(&jwk).map_err(|e| bad(format!("key `{kid}`: {e}")))?.into();
        if verifiers.insert(kid.clone(), verifier).is_some() {
            return Err(bad(format!("key id `{kid}` is used twice in its JWKS")));
        }
    }
    if verifiers.is_empty() {
        return Err(bad("the JWKS has no keys".into()));
    }
    Ok(verifiers)
}

impl Peer {
    /// Builds a peer from its configured parts and its JWKS document.
    pub fn new(
        id: String,
        name: String,
        base_url: String,
        vouches_for: BTreeMap<String, OrgType>,
        jwks: &Value,
    ) -> Result<Self, AuthError> {
        let verifiers = verifiers_of(&id, jwks)?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        Ok(Self { id, name, base_url, vouches_for, jwks_url: None, verifiers, jwks: jwks.clone() })
    }

    /// A peer whose keys are fetched from `jwks_url` (and refreshed): it has none until the
    /// first fetch, and until then nothing it signs is accepted.
    pub fn with_keys_at(
        id: String,
        name: String,
        base_url: String,
        vouches_for: BTreeMap<String, OrgType>,
        jwks_url: String,
    ) -> Self {
        let base_url = base_url.trim_end_matches('/').to_owned();
        Self {
            id,
            name,
            base_url,
            vouches_for,
            jwks_url: Some(jwks_url),
            verifiers: BTreeMap::new(),
            jwks: Value::Null,
        }
    }

    /// The same peer with the keys of `jwks` (a fetched JWKS), or why they are refused.
    pub fn with_keys(&self, jwks: &Value) -> Result<Self, AuthError> {
        Ok(Self { verifiers: verifiers_of(&self.id, jwks)?, jwks: jwks.clone(), ..self.clone() })
    }

    /// Whether `jwks` is the JWKS its keys already come from.
    pub fn has_jwks(&self, jwks: &Value) -> bool {
        self.jwks == *jwks
    }

    /// How many keys it has.
    pub fn key_count(&self) -> usize {
        self.verifiers.len()
    }

    /// The verifier for one of the peer's keys.
    pub fn verifier(&self, kid: &str) -> Option<&dyn JwsVerifier> {
        self.verifiers.get(kid).map(|v| v.as_ref())
    }

    /// The peer's token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.base_url)
    }
}

/// This broker's federation: its own id and its peers.
#[derive(Debug, Default, Clone)]
pub struct Peers {
    /// This broker's id (its ICB's ODS code); empty when it federates with nobody.
    pub own_id: String,
    peers: BTreeMap<String, Peer>,
}

impl Peers {
    /// A federation of `own_id` with `peers`. Refuses a peer named twice or named as itself.
    pub fn new(own_id: String, peers: Vec<Peer>) -> Result<Self, AuthError> {
        let mut map = BTreeMap::new();
        let mut kids: BTreeMap<String, String> = BTreeMap::new();
        let mut vouched: BTreeMap<String, String> = BTreeMap::new();
        for p in peers {
            if p.id == own_id {
                return Err(AuthError::Config(format!("peer `{}` is this broker's own id", p.id)));
            }
            for kid in p.verifiers.keys() {
                if let Some(other) = kids.insert(kid.clone(), p.id.clone()) {
                    return Err(AuthError::Config(format!("key id `{kid}` belongs to peers `{other}` and `{}`", p.id)));
                }
            }
            // One organisation, one broker that may speak for it.
            for ods in p.vouches_for.keys() {
                if let Some(other) = vouched.insert(ods.clone(), p.id.clone()) {
                    return Err(AuthError::Config(format!(
                        "`{ods}` is vouched for by both peers `{other}` and `{}`",
                        p.id
                    )));
                }
            }
            let id = p.id.clone();
            if map.insert(id.clone(), p).is_some() {
                return Err(AuthError::Config(format!("peer `{id}` is configured twice")));
            }
        }
        Ok(Self { own_id, peers: map })
    }

    /// The peer with this id.
    pub fn get(&self, id: &str) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// The peer owning a key id.
    pub fn for_kid(&self, kid: &str) -> Option<&Peer> {
        self.peers.values().find(|p| p.verifiers.contains_key(kid))
    }

    /// Every peer, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The same federation with peer `peer_id`'s keys from `jwks` (fetched from its URL):
    /// checked as at start-up, so a fetched key id that another peer or a partner system uses is
    /// refused and the current keys kept.
    pub fn with_peer_keys(&self, peer_id: &str, jwks: &Value, registry: &crate::Registry) -> Result<Self, AuthError> {
        let peer = self.get(peer_id).ok_or_else(|| AuthError::Config(format!("`{peer_id}` is not a peer")))?;
        let fresh = peer.with_keys(jwks)?;
        let list = self.iter().map(|p| if p.id == peer_id { fresh.clone() } else { p.clone() }).collect();
        let next = Peers::new(self.own_id.clone(), list)?;
        next.check_against(registry)?;
        Ok(next)
    }

    /// Refuses peers that collide with the partner registry: a peer id that is a partner's
    /// client id, a key id a partner system also uses, or an organisation a peer would vouch for
    /// that is this ICS's own partner.
    pub fn check_against(&self, registry: &crate::Registry) -> Result<(), AuthError> {
        for p in self.iter() {
            if registry.system(&p.id).is_some() {
                return Err(AuthError::Config(format!("peer `{}` has the client id of a partner system", p.id)));
            }
            if let Some(kid) = p.verifiers.keys().find(|kid| registry.system_for_kid(kid).is_some()) {
                return Err(AuthError::Config(format!("peer `{}`: key id `{kid}` is also a partner system's", p.id)));
            }
            if let Some(ods) = p.vouches_for.keys().find(|ods| registry.partner(ods).is_some()) {
                return Err(AuthError::Config(format!(
                    "peer `{}` may not vouch for `{ods}`: it is a partner of this ICS",
                    p.id
                )));
            }
        }
        Ok(())
    }

    /// True when there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// The `iss` a compact JWS claims, unverified: only to know whose keys to fetch again when it
/// does not verify (never to trust).
pub fn unverified_issuer(jws: &str) -> Option<String> {
    use base64::Engine;
    let middle = jws.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(middle).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

/// The requester a broker vouches for, as its relay names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedRequester {
    /// The partner organisation's ODS code.
    pub org: String,
    /// Its type.
    pub org_type: OrgType,
    /// The system (client id at the asking broker).
    pub system: String,
    /// The end user.
    pub user: String,
    /// The role they act in.
    pub role: String,
    /// The purpose of use.
    pub purpose: String,
    /// Incident, encounter or case reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_ref: Option<String>,
    /// Break-glass justification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
    /// Hex SHA-256 of the request's subject (its JSON as serialised by the asking broker), so the
    /// relay cannot be used for another subject.
    pub subject_sha256: String,
}

/// A relay whose signature, audience, lifetime and vouching have been checked.
#[derive(Debug, Clone)]
pub struct VerifiedRelay {
    /// The peer that signed it.
    pub peer: String,
    /// The requester.
    pub requester: RelayedRequester,
    /// Its `jti` (to be claimed once, until `expires_at`).
    pub jti: String,
    /// Until when it is accepted: its `exp` plus the leeway (the `jti` must be remembered until
    /// then, or it could be replayed inside the leeway).
    pub expires_at: DateTime<Utc>,
}

fn system_time(t: DateTime<Utc>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(t.timestamp_millis()).unwrap_or(0))
}

fn set(p: &mut JwtPayload, k: &str, v: Value) -> Result<(), AuthError> {
    p.set_claim(k, Some(v)).map_err(|e| AuthError::Config(e.to_string()))
}

/// Claims from `iss` to `aud`, issued now, living [`MAX_RELAY_SECONDS`], with a fresh `jti`.
fn minute_claims(iss: &str, aud: &str, now: DateTime<Utc>) -> JwtPayload {
    let mut payload = JwtPayload::new();
    payload.set_issuer(iss);
    payload.set_audience(vec![aud.to_owned()]);
    payload.set_issued_at(&system_time(now));
    payload.set_expires_at(&system_time(now + chrono::Duration::seconds(MAX_RELAY_SECONDS)));
    payload.set_jwt_id(uuid::Uuid::new_v4().to_string());
    payload
}

impl BrokerKeys {
    /// Signs a relay from broker `iss` to peer `aud`, living [`MAX_RELAY_SECONDS`].
    pub fn sign_relay(
        &self,
        iss: &str,
        aud: &str,
        who: &RelayedRequester,
        now: DateTime<Utc>,
    ) -> Result<String, AuthError> {
        let mut payload = minute_claims(iss, aud, now);
        let claims = serde_json::to_value(who).map_err(|e| AuthError::Config(e.to_string()))?;
        set(&mut payload, "requester", claims)?;
        let mut header = JwsHeader::new();
        header.set_token_type(RELAY_TYP);
        jwt::encode_with_signer(&payload, &header, self.signer())
            .map_err(|e| AuthError::Config(format!("cannot sign the relay: {e}")))
    }

    /// A `private_key_jwt` client assertion for a peer's token endpoint, this broker being the
    /// client `client_id`.
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: DateTime<Utc>,
    ) -> Result<String, AuthError> {
        let mut payload = minute_claims(client_id, token_endpoint, now);
        payload.set_subject(client_id);
        jwt::encode_with_signer(&payload, &JwsHeader::new(), self.signer())
            .map_err(|e| AuthError::Config(format!("cannot sign the client assertion: {e}")))
    }
}

/// A relay refused: the rule it broke and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the relayed requester is refused ({rule}): {detail}")]
pub struct RelayRefused {
    /// `signature`, `audience`, `lifetime`, `expired`, `jti`, `vouch` or `claims`.
    pub rule: &'static str,
    /// In words.
    pub detail: String,
}

/// A client id as the registry allows one.
fn valid_system(s: &str) -> bool {
    (3..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
}

fn refused(rule: &'static str, detail: impl Into<String>) -> RelayRefused {
    RelayRefused { rule, detail: detail.into() }
}

impl Peers {
    /// Checks a relay sent by `peer_id` (the authenticated peer): signed by that peer's key with
    /// typ [`RELAY_TYP`], `iss` the peer, `aud` this broker, alive, at most
    /// [`MAX_RELAY_SECONDS`] long, with a `jti`, for an organisation of the type the peer may
    /// vouch for.
    pub fn verify_relay(
        &self,
        peer_id: &str,
        relay: &str,
        now: DateTime<Utc>,
        leeway: Duration,
    ) -> Result<VerifiedRelay, RelayRefused> {
        let peer = self.get(peer_id).ok_or_else(|| refused("signature", "the caller is not a peer broker"))?;
        let (payload, header) = jwt::decode_with_verifier_selector(relay, |h: &JwsHeader| {
            Ok(h.key_id().and_then(|kid| peer.verifier(kid)))
        })
        .map_err(|_| refused("signature", format!("the relay is not signed by a key of peer `{peer_id}`")))?;
        if header.token_type() != Some(RELAY_TYP) {
            return Err(refused("signature", format!("the relay's `typ` must be `{RELAY_TYP}`")));
        }
        if payload.issuer() != Some(peer_id) {
            return Err(refused("audience", "the relay's `iss` must be the peer that sends it"));
        }
        if !payload.audience().is_some_and(|a| a.contains(&self.own_id.as_str())) {
            return Err(refused("audience", format!("the relay's `aud` must be this broker, `{}`", self.own_id)));
        }
        let leeway = chrono::Duration::seconds(i64::try_from(leeway.as_secs()).unwrap_or(0));
        let (Some(iat), Some(exp)) = (payload.issued_at(), payload.expires_at()) else {
            return Err(refused("lifetime", "the relay needs `iat` and `exp`"));
        };
        let (iat, exp): (DateTime<Utc>, DateTime<Utc>) = (iat.into(), exp.into());
        if exp - iat > chrono::Duration::seconds(MAX_RELAY_SECONDS) || iat > now + leeway {
            return Err(refused("lifetime", format!("a relay lives at most {MAX_RELAY_SECONDS} seconds from now")));
        }
        if exp + leeway < now {
            return Err(refused("expired", "the relay has expired"));
        }
        let jti = payload.jwt_id().filter(|j| !j.is_empty() && j.len() <= 256);
        let jti = jti.ok_or_else(|| refused("jti", "the relay needs a `jti` (at most 256 characters)"))?.to_owned();
        let requester: RelayedRequester = payload
            .claim("requester")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| refused("claims", "the relay's `requester` claim is missing or malformed"))?;
        match peer.vouches_for.get(&requester.org) {
            Some(t) if *t == requester.org_type => {}
            Some(t) => {
                return Err(refused("vouch", format!("peer `{peer_id}` vouches for `{}` as a {t}", requester.org)))
            }
            None => return Err(refused("vouch", format!("peer `{peer_id}` may not vouch for `{}`", requester.org))),
        }
        if !valid_system(&requester.system) {
            return Err(refused(
                "claims",
                "the relay's `requester.system` must be a client id (3 to 128 of A-Z a-z 0-9 . _ : -)",
            ));
        }
        Ok(VerifiedRelay { peer: peer_id.to_owned(), requester, jti, expires_at: exp + leeway })
    }

    /// Opens an event that peer `peer_id` pushed for its subscription `subscription_id`: signed
    /// by one of that peer's keys with typ [`crate::jose::EVENT_TYP`], `sub` the subscription,
    /// issued within [`MAX_EVENT_AGE_SECONDS`] (each attempt is signed afresh). Returns its claims.
    pub fn open_event(
        &self,
        peer_id: &str,
        subscription_id: &str,
        jws: &str,
        now: DateTime<Utc>,
        leeway: Duration,
    ) -> Result<serde_json::Map<String, Value>, String> {
        let peer = self.get(peer_id).ok_or_else(|| format!("`{peer_id}` is not a peer broker of this one"))?;
        let (payload, header) = josekit::jws::deserialize_compact_with_selector(jws.trim(), |h: &JwsHeader| {
            Ok(h.key_id().and_then(|kid| peer.verifier(kid)))
        })
        .map_err(|_| format!("the event is not signed by a key of peer `{peer_id}`"))?;
        if header.token_type() != Some(crate::jose::EVENT_TYP) {
            return Err(format!("the event's `typ` must be `{}`", crate::jose::EVENT_TYP));
        }
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| "the event's claims are not a JSON object".to_owned())?;
        if claims.get("sub").and_then(Value::as_str) != Some(subscription_id) {
            return Err(format!("the event is not for subscription `{subscription_id}` at peer `{peer_id}`"));
        }
        let iat = claims.get("iat").and_then(Value::as_i64).ok_or("the event has no `iat`")?;
        let leeway = i64::try_from(leeway.as_secs()).unwrap_or(0);
        let age = now.timestamp() - iat;
        if age > MAX_EVENT_AGE_SECONDS + leeway || age < -leeway {
            return Err(format!("the event was not signed within the last {MAX_EVENT_AGE_SECONDS} seconds"));
        }
        if !claims.get("event").is_some_and(Value::is_object) {
            return Err("the event has no `event` object".into());
        }
        Ok(claims)
    }
}

/// How old a pushed event's signature may be when it arrives: each delivery attempt is signed
/// afresh, so an older one is a replay.
pub const MAX_EVENT_AGE_SECONDS: i64 = 600;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKeyFile;

    fn keys(kid: &str) -> BrokerKeys {
        BrokerKeys::new(&[SigningKeyFile::generate(kid, false).unwrap()]).unwrap()
    }

    fn requester(org: &str) -> RelayedRequester {
        RelayedRequester {
            org: org.into(),
            org_type: OrgType::AmbulanceTrust,
            system: "cad".into(),
            user: "u1".into(),
            role: "ambulance-dispatcher".into(),
            purpose: "staff-safety".into(),
            context_ref: None,
            break_glass: None,
            subject_sha256: "00".into(),
        }
    }

    fn federation(asking: &BrokerKeys) -> Peers {
        let vouches = BTreeMap::from([("YAM01".to_owned(), OrgType::AmbulanceTrust)]);
        let peer = Peer::new("YIC01".into(), "West".into(), "http://w".into(), vouches, &asking.jwks()).unwrap();
        Peers::new("XIC01".into(), vec![peer]).unwrap()
    }

    #[test]
    fn a_pushed_event_opens_only_for_its_peer_subscription_and_while_fresh() {
        let answering = keys("west-1");
        let peers = federation(&answering);
        let now = Utc::now();
        let claims =
            |sub: &str, iat: i64| serde_json::json!({"sub": sub, "iat": iat, "event": {"event_id": "e1"}, "jti": "e1"});
        let good = answering.sign_event(&claims("s1", now.timestamp())).unwrap();
        let leeway = Duration::from_secs(5);
        assert_eq!(peers.open_event("YIC01", "s1", &good, now, leeway).unwrap()["jti"], "e1");
        assert!(peers.open_event("YIC01", "s2", &good, now, leeway).unwrap_err().contains("not for subscription"));
        assert!(peers.open_event("ZIC01", "s1", &good, now, leeway).unwrap_err().contains("not a peer"));
        let old = answering.sign_event(&claims("s1", now.timestamp() - MAX_EVENT_AGE_SECONDS - 60)).unwrap();
        assert!(peers.open_event("YIC01", "s1", &old, now, leeway).unwrap_err().contains("within"));
        let stranger = keys("west-1").sign_event(&claims("s1", now.timestamp())).unwrap();
        assert!(peers.open_event("YIC01", "s1", &stranger, now, leeway).unwrap_err().contains("not signed"));
        let relay = answering.sign_relay("YIC01", "XIC01", &requester("YAM01"), now).unwrap();
        assert!(peers.open_event("YIC01", "s1", &relay, now, leeway).is_err(), "a relay is not an event");
        assert_eq!(unverified_issuer(&relay).as_deref(), Some("YIC01"));
        assert_eq!(unverified_issuer("not a jws"), None);
    }

    #[test]
    fn a_relay_is_checked_for_key_audience_lifetime_and_vouching() {
        let asking = keys("west-1");
        let peers = federation(&asking);
        let now = Utc::now();
        let ok = asking.sign_relay("YIC01", "XIC01", &requester("YAM01"), now).unwrap();
        let v = peers.verify_relay("YIC01", &ok, now, Duration::from_secs(5)).unwrap();
        assert_eq!(v.requester.role, "ambulance-dispatcher");
        let rule = |jws: &str, at| peers.verify_relay("YIC01", jws, at, Duration::from_secs(5)).unwrap_err().rule;
        assert_eq!(
            rule(&keys("west-1").sign_relay("YIC01", "XIC01", &requester("YAM01"), now).unwrap(), now),
            "signature"
        );
        assert_eq!(rule(&asking.sign_relay("YIC01", "ZIC01", &requester("YAM01"), now).unwrap(), now), "audience");
        assert_eq!(rule(&ok, now + chrono::Duration::seconds(120)), "expired");
        assert_eq!(rule(&asking.sign_relay("YIC01", "XIC01", &requester("YGP01"), now).unwrap(), now), "vouch");
        let mut wrong_type = requester("YAM01");
        wrong_type.org_type = OrgType::PoliceForce;
        assert_eq!(rule(&asking.sign_relay("YIC01", "XIC01", &wrong_type, now).unwrap(), now), "vouch");
        assert!(peers.verify_relay("ZIC01", &ok, now, Duration::from_secs(5)).is_err());
        // Only a relay: another JWT signed by the same key is not one.
        let mut p = JwtPayload::new();
        p.set_issuer("YIC01");
        p.set_audience(vec!["XIC01".to_owned()]);
        let not_relay = jwt::encode_with_signer(&p, &JwsHeader::new(), asking.signer()).unwrap();
        assert_eq!(rule(&not_relay, now), "signature");
        // At most a minute long, and `iss` the peer that sends it.
        let mut long = JwtPayload::new();
        long.set_issuer("YIC01");
        long.set_audience(vec!["XIC01".to_owned()]);
        long.set_issued_at(&system_time(now));
        long.set_expires_at(&system_time(now + chrono::Duration::seconds(600)));
        long.set_jwt_id("j");
        set(&mut long, "requester", serde_json::to_value(requester("YAM01")).unwrap()).unwrap();
        let mut typ = JwsHeader::new();
        typ.set_token_type(RELAY_TYP);
        assert_eq!(rule(&jwt::encode_with_signer(&long, &typ, asking.signer()).unwrap(), now), "lifetime");
        let other_iss = asking.sign_relay("ZIC01", "XIC01", &requester("YAM01"), now).unwrap();
        assert_eq!(rule(&other_iss, now), "audience");
    }

    #[test]
    fn a_peer_is_not_itself_nor_named_twice_and_shares_no_key_or_partner() {
        let k = keys("a-1");
        let peer = |id: &str, k: &BrokerKeys, vouches: &[&str]| {
            let v = vouches.iter().map(|o| ((*o).to_owned(), OrgType::AmbulanceTrust)).collect();
            Peer::new(id.into(), "p".into(), "http://p".into(), v, &k.jwks()).unwrap()
        };
        assert!(Peers::new("XIC01".into(), vec![peer("XIC01", &k, &[])]).is_err());
        assert!(Peers::new("XIC01".into(), vec![peer("YIC01", &k, &[]), peer("YIC01", &keys("b-1"), &[])]).is_err());
        let shared_kid = Peers::new("XIC01".into(), vec![peer("YIC01", &k, &[]), peer("ZIC01", &keys("a-1"), &[])]);
        assert!(shared_kid.unwrap_err().to_string().contains("a-1"));
        let both_vouch =
            Peers::new("XIC01".into(), vec![peer("YIC01", &k, &["QAM01"]), peer("ZIC01", &keys("b-1"), &["QAM01"])]);
        assert!(both_vouch.unwrap_err().to_string().contains("QAM01"));
        let one = k.jwks()["keys"][0].clone();
        let twice = serde_json::json!({"keys": [one.clone(), one]});
        assert!(Peer::new("YIC01".into(), "p".into(), "http://p".into(), BTreeMap::new(), &twice).is_err());
    }
}
