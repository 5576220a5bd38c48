//! Identifiers at rest: authenticated encryption of notice content and keyed blind indexes for
//! matching. The keys live outside the database, so a copy of the database alone reveals no
//! NHS number, name, address or telephone number.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vpr_domain::notice::MatchKind;

/// Why keys could not be loaded or data could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file is malformed.
    #[error("data keys are invalid: {0}")]
    Keys(String),
    /// Sealed data could not be opened (wrong key, or tampered with).
    #[error("sealed data could not be opened: {0}")]
    Open(&'static str),
}

/// The data-key file: encryption keys by id (the active one seals) and the blind-index key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKeyFile {
    /// Marks keys generated for the demo ICS; refused unless the broker runs in demo mode.
    #[serde(default)]
    pub demo_only: bool,
    /// Id of the key that seals new data.
    pub active: String,
    /// Base64 AES-256 keys by id; old ids stay to open old data.
    pub encryption_keys: BTreeMap<String, String>,
    /// Base64 HMAC-SHA256 key for blind indexes.
    pub index_key: String,
}

impl DataKeyFile {
    /// Generates fresh random keys.
    pub fn generate(demo_only: bool) -> Self {
        let mut rng = rand::thread_rng();
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        let mut i = [0u8; 32];
        rng.fill_bytes(&mut i);
        let id = format!("k{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
        Self {
            demo_only,
            active: id.clone(),
            encryption_keys: BTreeMap::from([(id, B64.encode(k))]),
            index_key: B64.encode(i),
        }
    }
}

/// Seals and opens notice content; computes blind indexes.
#[derive(Clone)]
pub struct Vault {
    active: String,
    ciphers: BTreeMap<String, Aes256Gcm>,
    index_key: Vec<u8>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("active", &self.active).finish_non_exhaustive()
    }
}

const FORMAT_V1: u8 = 1;

impl Vault {
    /// Builds a vault from a key file.
    pub fn new(keys: &DataKeyFile) -> Result<Self, VaultError> {
        let decode = |what: &str, v: &str| -> Result<Vec<u8>, VaultError> {
            let bytes = B64.decode(v).map_err(|_| VaultError::Keys(format!("{what} is not base64")))?;
            if bytes.len() != 32 {
                return Err(VaultError::Keys(format!("{what} must be 32 bytes")));
            }
            Ok(bytes)
        };
        let mut ciphers = BTreeMap::new();
        for (id, key) in &keys.encryption_keys {
            if id.is_empty() || id.len() > 64 {
                return Err(VaultError::Keys("key ids must be 1 to 64 bytes".into()));
            }
            let bytes = decode(&format!("encryption key `{id}`"), key)?;
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| VaultError::Keys("bad key length".into()))?;
            ciphers.insert(id.clone(), cipher);
        }
        if !ciphers.contains_key(&keys.active) {
            return Err(VaultError::Keys(format!("active key `{}` is not among the encryption keys", keys.active)));
        }
        Ok(Self { active: keys.active.clone(), ciphers, index_key: decode("index key", &keys.index_key)? })
    }

    /// Encrypts `plain`, bound to `context` (e.g. the notice id and version) so a sealed value
    /// cannot be moved to another row unnoticed. Layout: format, key-id length, key id, nonce, ciphertext.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, VaultError> {
        let cipher = self.ciphers.get(&self.active).ok_or(VaultError::Open("active key missing"))?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: context.as_bytes() })
            .map_err(|_| VaultError::Open("encryption failed"))?;
        let id = self.active.as_bytes();
        let mut out = Vec::with_capacity(2 + id.len() + 12 + ct.len());
        out.push(FORMAT_V1);
        out.push(u8::try_from(id.len()).map_err(|_| VaultError::Open("key id too long"))?);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`Vault::seal`] produced with the same context.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, VaultError> {
        let (&format, rest) = sealed.split_first().ok_or(VaultError::Open("empty"))?;
        if format != FORMAT_V1 {
            return Err(VaultError::Open("unknown format"));
        }
        let (&id_len, rest) = rest.split_first().ok_or(VaultError::Open("truncated"))?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + 12 {
            return Err(VaultError::Open("truncated"));
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, ct) = rest.split_at(12);
        let id = std::str::from_utf8(id).map_err(|_| VaultError::Open("bad key id"))?;
        let cipher = self.ciphers.get(id).ok_or(VaultError::Open("unknown key id"))?;
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| VaultError::Open("authentication failed"))
    }

    /// The keyed blind index of a normalised match key: hex HMAC-SHA256 over kind and value.
    pub fn blind_index(&self, kind: MatchKind, normalised: &str) -> String {
        // A key of the right length cannot fail; fall back to an index that matches nothing.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key) else {
            return String::new();
        };
        mac.update(kind.code().as_bytes());
        mac.update(b"\x1f");
        mac.update(normalised.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() -> Result<(), VaultError> {
        let v = Vault::new(&DataKeyFile::generate(true))?;
        let sealed = v.seal(b"9990000018", "n1/1")?;
        assert!(!sealed.windows(10).any(|w| w == b"9990000018"));
        assert_eq!(v.open(&sealed, "n1/1")?, b"9990000018");
        assert!(v.open(&sealed, "n1/2").is_err(), "moved to another row");
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(v.open(&tampered, "n1/1").is_err());
        Ok(())
    }

    #[test]
    fn rotation_keeps_old_data_readable() -> Result<(), VaultError> {
        let mut keys = DataKeyFile::generate(false);
        let old = Vault::new(&keys)?;
        let sealed = old.seal(b"x", "c")?;
        keys.encryption_keys.insert("k-new".into(), B64.encode([7u8; 32]));
        keys.active = "k-new".into();
        let new = Vault::new(&keys)?;
        assert_eq!(new.open(&sealed, "c")?, b"x");
        assert_eq!(
            new.blind_index(MatchKind::Telephone, "+447700900123"),
            old.blind_index(MatchKind::Telephone, "+447700900123")
        );
        Ok(())
    }

    #[test]
    fn blind_indexes_are_keyed() -> Result<(), VaultError> {
        let a = Vault::new(&DataKeyFile::generate(false))?;
        let b = Vault::new(&DataKeyFile::generate(false))?;
        assert_ne!(
            a.blind_index(MatchKind::NhsNumber, "9990000018"),
            b.blind_index(MatchKind::NhsNumber, "9990000018")
        );
        assert_ne!(a.blind_index(MatchKind::NhsNumber, "1"), a.blind_index(MatchKind::Uprn, "1"));
        Ok(())
    }
}
