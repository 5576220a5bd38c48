//! The broker's signing keys. The first key signs; the others only verify, so tokens issued
//! before a rotation stay valid until they expire. All public keys are published as a JWKS.

use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::Jwk;
use josekit::jws::alg::ecdsa::{EcdsaJwsAlgorithm, EcdsaJwsSigner, EcdsaJwsVerifier};
use josekit::jws::JwsSigner;
use serde_json::{Map, Value};

use crate::AuthError;

/// A signing key as stored on disk: a private EC P-256 JWK, optionally marked demo-only.
#[derive(Debug, Clone)]
pub struct SigningKeyFile {
    /// The private JWK.
    pub jwk: Jwk,
    /// Generated for the demo ICS; refused unless the broker runs in demo mode.
    pub demo_only: bool,
}

impl SigningKeyFile {
    /// Parses a key file: a JWK object with an optional `"demo_only": true` member.
    pub fn from_json(text: &str) -> Result<Self, AuthError> {
        let mut map: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| AuthError::Config(format!("signing key is not a JSON object: {e}")))?;
        let demo_only = map.remove("demo_only").and_then(|v| v.as_bool()).unwrap_or(false);
        let jwk = Jwk::from_map(map).map_err(|e| AuthError::Config(format!("signing key is not a JWK: {e}")))?;
        Ok(Self { jwk, demo_only })
    }

    /// Generates a fresh ES256 key with the given key id.
    pub fn generate(kid: &str, demo_only: bool) -> Result<Self, AuthError> {
        let mut jwk = Jwk::generate_ec_key(EcCurve::P256).map_err(|e| AuthError::Config(e.to_string()))?;
        jwk.set_key_id(kid);
        jwk.set_algorithm("ES256");
        jwk.set_key_use("sig");
        Ok(Self { jwk, demo_only })
    }

    /// The file form.
    pub fn to_json(&self) -> String {
        let mut map = self.jwk.as_ref().clone();
        if self.demo_only {
            map.insert("demo_only".into(), Value::Bool(true));
        }
        serde_json::to_string_pretty(&map).unwrap_or_default()
    }
}

/// The public part of a JWK, keeping `kid`, `alg` and `use` (josekit drops them).
pub fn public_jwk(jwk: &Jwk) -> Result<Jwk, AuthError> {
    let mut public = jwk.to_public_key().map_err(|e| AuthError::Config(format!("cannot derive a public key: {e}")))?;
    if let Some(kid) = jwk.key_id() {
        public.set_key_id(kid);
    }
    if let Some(alg) = jwk.algorithm() {
        public.set_algorithm(alg);
    }
    if let Some(u) = jwk.key_use() {
        public.set_key_use(u);
    }
    Ok(public)
}

/// The loaded signing keys.
pub struct BrokerKeys {
    signer: EcdsaJwsSigner,
    verifiers: Vec<(String, EcdsaJwsVerifier)>,
    public: Vec<Jwk>,
    demo: bool,
}

impl std::fmt::Debug for BrokerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerKeys").field("kids", &self.verifiers.iter().map(|(k, _)| k).collect::<Vec<_>>()).finish()
    }
}

impl BrokerKeys {
    /// Builds the key set; the first file signs.
    pub fn new(files: &[SigningKeyFile]) -> Result<Self, AuthError> {
        let first = files.first().ok_or_else(|| AuthError::Config("at least one signing key is required".into()))?;
        let mut verifiers = Vec::new();
        let mut public = Vec::new();
        for f in files {
            let kid =
                f.jwk.key_id().ok_or_else(|| AuthError::Config("every signing key needs a `kid`".into()))?.to_owned();
            if f.jwk.parameter("d").is_none() {
                return Err(AuthError::Config(format!("signing key `{kid}` has no private part")));
            }
            if verifiers.iter().any(|(k, _)| k == &kid) {
                return Err(AuthError::Config(format!("signing key id `{kid}` is used twice")));
            }
            let pubkey = public_jwk(&f.jwk)?;
            let verifier = EcdsaJwsAlgorithm::Es256
                .verifier_from_jwk(&pubkey)
                .map_err(|e| AuthError::Config(format!("signing key `{kid}` is not an ES256 key: {e}")))?;
            verifiers.push((kid, verifier));
            public.push(pubkey);
        }
        let signer = EcdsaJwsAlgorithm::Es256
            .signer_from_jwk(&first.jwk)
            .map_err(|e| AuthError::Config(format!("active signing key: {e}")))?;
        Ok(Self { signer, verifiers, public, demo: files.iter().any(|f| f.demo_only) })
    }

    /// True if any key is marked demo-only.
    pub fn any_demo_only(&self) -> bool {
        self.demo
    }

    /// The active signer.
    pub fn signer(&self) -> &dyn JwsSigner {
        &self.signer
    }

    /// The verifier for a key id.
    pub fn verifier(&self, kid: &str) -> Option<&EcdsaJwsVerifier> {
        self.verifiers.iter().find(|(k, _)| k == kid).map(|(_, v)| v)
    }

    /// The public JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.public.iter().map(|k| Value::Object(k.as_ref().clone())).collect();
        serde_json::json!({ "keys": keys })
    }
}

/// The JWS `typ` of signed audit checkpoints.
pub const CHECKPOINT_TYP: &str = "vpr-checkpoint+jws";

impl BrokerKeys {
    /// Signs an audit checkpoint: the tree size and hex root hash, and when.
    pub fn sign_checkpoint(&self, tree_size: i64, root_hex: &str, signed_at: &str) -> Result<String, AuthError> {
        let payload = serde_json::json!({"log": "vpr-broker audit", "tree_size": tree_size, "root_hash": root_hex, "signed_at": signed_at});
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type(CHECKPOINT_TYP);
        josekit::jws::serialize_compact(payload.to_string().as_bytes(), &header, self.signer())
            .map_err(|e| AuthError::Config(format!("cannot sign checkpoint: {e}")))
    }
}

/// Verifies a checkpoint against a JWKS (the broker's published keys, or a copy held offline)
/// and returns its tree size and hex root hash.
pub fn open_checkpoint(jwks: &Value, jws: &str) -> Result<(i64, String), String> {
    open_checkpoint_signed(jwks, jws).map(|(size, root, _)| (size, root))
}

/// As [`open_checkpoint`], also giving the time the checkpoint says it was signed (RFC 3339).
pub fn open_checkpoint_signed(jwks: &Value, jws: &str) -> Result<(i64, String, String), String> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or("the JWKS has no keys")?;
    let mut verifiers = Vec::new();
    for k in keys {
        let map = k.as_object().cloned().ok_or("a JWKS key is not an object")?;
        let jwk = Jwk::from_map(map).map_err(|e| e.to_string())?;
        let kid = jwk.key_id().unwrap_or_default().to_owned();
        verifiers.push((kid, EcdsaJwsAlgorithm::Es256.verifier_from_jwk(&jwk).map_err(|e| e.to_string())?));
    }
    let (payload, header) = josekit::jws::deserialize_compact_with_selector(jws, |h| {
        Ok(h.key_id()
            .and_then(|kid| verifiers.iter().find(|(k, _)| k == kid))
            .map(|(_, v)| v as &dyn josekit::jws::JwsVerifier))
    })
    .map_err(|_| "signature does not verify against the broker's keys".to_owned())?;
    if header.token_type() != Some(CHECKPOINT_TYP) {
        return Err("not an audit checkpoint".into());
    }
    let body: Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    let size = body.get("tree_size").and_then(Value::as_i64).ok_or("no tree_size")?;
    let root = body.get("root_hash").and_then(Value::as_str).ok_or("no root_hash")?;
    let signed_at = body.get("signed_at").and_then(Value::as_str).ok_or("no signed_at")?;
    Ok((size, root.to_owned(), signed_at.to_owned()))
}
