//! Tamper evidence for the disclosure audit log.
//!
//! Groundwork for the audit issue: the Merkle tree of RFC 9162 (Certificate Transparency 2.0),
//! with inclusion and consistency proofs and their verification, and a compact frontier for
//! appending entries one at a time. Sealing, signed checkpoints and `audit verify` build on it.

pub mod merkle;

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex into a hash.
pub fn parse_hash(text: &str) -> Option<merkle::Hash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
