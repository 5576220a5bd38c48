//! Tamper evidence for the disclosure audit log.
//!
//! Groundwork for the audit issue: the Merkle tree of RFC 9162 (Certificate Transparency 2.0),
//! with inclusion and consistency proofs and their verification, and a compact frontier for
//! appending entries one at a time. Sealing, signed checkpoints and `audit verify` build on it.

pub mod merkle;
