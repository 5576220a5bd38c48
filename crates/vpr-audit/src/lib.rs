//! Tamper evidence for the disclosure audit log.
//!
//! Groundwork for the audit issue: the Merkle tree of RFC 9162 (Certificate Transparency 2.0),
//! with inclusion and consistency proofs and their verification, and a compact frontier for
//! appending entries one at a time. Sealing, signed checkpoints and `audit verify` build on it.

pub mod merkle;

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Whether `text` is exactly the lower-case hex of `hash` (without building a string).
pub fn is_hex_of(text: &str, hash: &merkle::Hash) -> bool {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(hash, &mut buf).is_ok() && text.as_bytes() == buf
}

/// Parses lower- or upper-case hex into a hash.
pub fn parse_hash(text: &str) -> Option<merkle::Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn hex_round_trips_and_compares_exactly() {
        let hash: merkle::Hash = std::array::from_fn(|i| u8::try_from(i * 7).unwrap_or_default());
        let text = hex(&hash);
        assert_eq!(text.len(), 64);
        assert_eq!(&text[..6], "00070e");
        assert_eq!(parse_hash(&text), Some(hash));
        assert_eq!(parse_hash(&text.to_uppercase()), Some(hash));
        assert!(is_hex_of(&text, &hash));
        assert!(!is_hex_of(&text.to_uppercase(), &hash), "the stored form is lower-case");
        assert!(!is_hex_of(&text[..62], &hash));
        assert_eq!(parse_hash(&text[..62]), None);
        assert_eq!(parse_hash(&format!("{}zz", &text[..62])), None);
    }
}
