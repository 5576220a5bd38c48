//! Signed and encrypted event deliveries: the broker signs each webhook body (JWS, with its key
//! id, so receivers verify it against `/.well-known/jwks.json`) and, when the subscriber
//! registered an encryption key, encrypts the signed body to it (JWE, sign then encrypt).

use base64::Engine;
use josekit::jwe::{JweEncrypter, JweHeader};
use josekit::jwk::Jwk;
use serde_json::{Map, Value};

use crate::{AuthError, BrokerKeys};

/// The JWS `typ` of a signed event.
pub const EVENT_TYP: &str = "vpr-event+jwt";

/// The content encryption used for every encrypted delivery.
pub const CONTENT_ENCRYPTION: &str = "A256GCM";

impl BrokerKeys {
    /// Signs an event payload (a JSON object of claims) as a compact JWS.
    pub fn sign_event(&self, claims: &Value) -> Result<String, AuthError> {
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type(EVENT_TYP);
        josekit::jws::serialize_compact(claims.to_string().as_bytes(), &header, self.signer())
            .map_err(|e| AuthError::Config(format!("cannot sign an event: {e}")))
    }
}

/// The JWS `typ` of a detached signature over a FHIR notification body.
pub const NOTIFICATION_TYP: &str = "vpr-notification+jws";

impl BrokerKeys {
    /// A detached JWS over a body (RFC 7515 appendix F: `header..signature`; a receiver puts
    /// the base64url of the body it received in the middle and verifies).
    pub fn sign_detached(&self, body: &[u8]) -> Result<String, AuthError> {
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type(NOTIFICATION_TYP);
        let jws = josekit::jws::serialize_compact(body, &header, self.signer())
            .map_err(|e| AuthError::Config(format!("cannot sign a notification: {e}")))?;
        let mut parts = jws.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(h), Some(_), Some(sig)) => Ok(format!("{h}..{sig}")),
            _ => Err(AuthError::Config("a compact JWS has three parts".into())),
        }
    }
}

/// A subscriber's public encryption key, checked and ready to encrypt to.
pub struct EncryptionKey {
    encrypter: Box<dyn JweEncrypter>,
    kid: Option<String>,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("alg", &self.encrypter.algorithm().name())
            .field("kid", &self.kid)
            .finish()
    }
}

impl EncryptionKey {
    /// Checks a subscriber's JWK: a public EC key on P-256, P-384 or P-521 (key agreement
    /// `ECDH-ES+A256KW` unless the JWK names another ECDH-ES algorithm) or an RSA key of at
    /// least 2048 bits (`RSA-OAEP-256`). Says why a key cannot be used.
    pub fn from_jwk(map: &Map<String, Value>) -> Result<Self, String> {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            if map.contains_key(private) {
                return Err(format!("the key has a private member `{private}`: send only the public key"));
            }
        }
        let jwk = Jwk::from_map(map.clone()).map_err(|e| format!("not a JWK: {e}"))?;
        let kid = jwk.key_id().map(str::to_owned);
        let encrypter: Box<dyn JweEncrypter> = match jwk.key_type() {
            "EC" => {
                match jwk.curve() {
                    Some("P-256" | "P-384" | "P-521") => {}
                    other => return Err(format!("EC keys must be on P-256, P-384 or P-521, not {other:?}")),
                }
                let alg = match jwk.algorithm() {
                    None | Some("ECDH-ES+A256KW") => josekit::jwe::ECDH_ES_A256KW,
                    Some("ECDH-ES+A128KW") => josekit::jwe::ECDH_ES_A128KW,
                    Some("ECDH-ES") => josekit::jwe::ECDH_ES,
                    Some(other) => return Err(format!("algorithm `{other}` is not accepted for an EC key")),
                };
                Box::new(alg.encrypter_from_jwk(&jwk).map_err(|e| format!("the key is not usable: {e}"))?)
            }
            "RSA" => {
                let n = jwk.parameter("n").and_then(Value::as_str).unwrap_or_default();
                let bits = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(n)
                    .map(|b| b.iter().skip_while(|x| **x == 0).count() * 8)
                    .unwrap_or(0);
                if bits < 2048 {
                    return Err("RSA keys must be at least 2048 bits".into());
                }
                match jwk.algorithm() {
                    None | Some("RSA-OAEP-256") => {}
                    Some(other) => return Err(format!("algorithm `{other}` is not accepted for an RSA key")),
                }
                Box::new(
                    josekit::jwe::RSA_OAEP_256
                        .encrypter_from_jwk(&jwk)
                        .map_err(|e| format!("the key is not usable: {e}"))?,
                )
            }
            other => return Err(format!("key type `{other}` is not accepted")),
        };
        Ok(Self { encrypter, kid })
    }

    /// The key agreement or key wrapping algorithm.
    pub fn algorithm(&self) -> &str {
        self.encrypter.algorithm().name()
    }

    /// Encrypts a signed event (compact JWS) to the subscriber: a compact JWE whose content type
    /// says it holds a JWT.
    pub fn encrypt(&self, jws: &str) -> Result<String, AuthError> {
        let mut header = JweHeader::new();
        header.set_content_encryption(CONTENT_ENCRYPTION);
        header.set_content_type("JWT");
        if let Some(kid) = &self.kid {
            header.set_key_id(kid.clone());
        }
        josekit::jwe::serialize_compact(jws.as_bytes(), &header, self.encrypter.as_ref())
            .map_err(|e| AuthError::Config(format!("cannot encrypt an event: {e}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use josekit::jwk::alg::ec::EcCurve;

    use super::*;

    #[test]
    fn a_subscriber_key_round_trips_and_private_or_weak_keys_are_refused() {
        let private = Jwk::generate_ec_key(EcCurve::P256).unwrap();
        let public = private.to_public_key().unwrap();
        let key = EncryptionKey::from_jwk(public.as_ref()).unwrap();
        assert_eq!(key.algorithm(), "ECDH-ES+A256KW");
        let jwe = key.encrypt("a.b.c").unwrap();
        let decrypter = josekit::jwe::ECDH_ES_A256KW.decrypter_from_jwk(&private).unwrap();
        let (plain, header) = josekit::jwe::deserialize_compact(&jwe, &decrypter).unwrap();
        assert_eq!(plain, b"a.b.c");
        assert_eq!(header.content_type(), Some("JWT"));
        assert!(EncryptionKey::from_jwk(private.as_ref()).unwrap_err().contains("private member `d`"));
        let k1 = Jwk::generate_ec_key(EcCurve::Secp256k1).unwrap().to_public_key().unwrap();
        assert!(EncryptionKey::from_jwk(k1.as_ref()).is_err());
        let small = Jwk::generate_rsa_key(1024).unwrap().to_public_key().unwrap();
        assert!(EncryptionKey::from_jwk(small.as_ref()).unwrap_err().contains("2048"));
        let rsa = Jwk::generate_rsa_key(2048).unwrap().to_public_key().unwrap();
        assert_eq!(EncryptionKey::from_jwk(rsa.as_ref()).unwrap().algorithm(), "RSA-OAEP-256");
    }
}
