//! RFC 9162 §2.1 Merkle tree hash, inclusion and consistency proofs, over SHA-256.
//!
//! Leaves are hashed as `SHA-256(0x00 || entry)` and interior nodes as
//! `SHA-256(0x01 || left || right)`, so a leaf can never be passed off as a node.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of a leaf entry.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly less than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let (l, r) = leaves.split_at(split(leaves.len()));
            node_hash(&root(l), &root(r))
        }
    }
}

/// The audit path for leaf `index` in the tree of `leaves` (RFC 9162 §2.1.3.1), or `None` if
/// the index is outside the tree.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let mut lo = 0;
    let mut hi = leaves.len();
    let mut m = index;
    // Walk down, collecting siblings; the RFC lists them leaf-first, so reverse at the end.
    while hi - lo > 1 {
        let k = split(hi - lo);
        let (l, r) = leaves.get(lo..hi)?.split_at(k);
        if m < k {
            path.push(root(r));
            hi = lo + k;
        } else {
            path.push(root(l));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// The consistency proof between the tree of the first `m` leaves and the tree of all `leaves`
/// (RFC 9162 §2.1.4.1), or `None` unless 0 < m ≤ n.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if m == 0 || m > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    subproof(m, leaves, true, &mut proof);
    Some(proof)
}

fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    let (l, r) = leaves.split_at(k);
    if m <= k {
        subproof(m, l, complete, out);
        out.push(root(r));
    } else {
        subproof(m - k, r, false, out);
        out.push(root(l));
    }
}

/// Verifies an inclusion proof (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], expected_root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *expected_root
}

/// Verifies a consistency proof between an old tree (`old_size`, `old_root`) and a new one
/// (RFC 9162 §2.1.4.2): the new tree is the old one with entries appended, nothing changed.
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if old_size.is_power_of_two() {
        proof.insert(0, *old_root);
    }
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let Some((first, rest)) = proof.split_first() else { return false };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && fr == *old_root && sr == *new_root
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first. Appends
/// in O(log n) and gives the same root as [`root`] over all leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, hash), heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The frontier as (size, [(height, hash)]), to persist it.
    pub fn to_parts(&self) -> (u64, Vec<(u32, Hash)>) {
        (self.size, self.nodes.clone())
    }

    /// Restores a frontier saved with [`Frontier::to_parts`]; `None` if the parts are not a
    /// frontier of a tree of that size.
    pub fn from_parts(size: u64, nodes: Vec<(u32, Hash)>) -> Option<Self> {
        let total: u64 = nodes.iter().try_fold(0u64, |acc, (h, _)| acc.checked_add(1u64.checked_shl(*h)?))?;
        let decreasing = nodes.windows(2).all(|w| matches!(w, [a, b] if a.0 > b.0));
        (total == size && decreasing).then_some(Self { size, nodes })
    }

    /// The tree head (MTH) of everything pushed.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else { return empty_root() };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect()
    }

    #[test]
    fn rfc_hashing_separates_leaves_from_nodes() {
        let a = leaf_hash(b"a");
        assert_ne!(a, node_hash(&[0; 32], &[0; 32]));
        assert_eq!(root(&[a]), a);
        // The empty tree hash is SHA-256 of the empty string.
        assert_eq!(
            empty_root().iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn frontier_matches_the_recursive_root() {
        let all = leaves(130);
        let mut f = Frontier::default();
        assert_eq!(f.root(), root(&[]));
        for (i, l) in all.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), root(&all[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn frontier_round_trips_through_its_parts() {
        let mut f = Frontier::default();
        for l in leaves(13) {
            f.push(l);
        }
        let (size, nodes) = f.to_parts();
        assert_eq!(Frontier::from_parts(size, nodes.clone()), Some(f.clone()));
        assert_eq!(Frontier::from_parts(size + 1, nodes), None);
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=40usize {
            let all = leaves(n);
            let r = root(&all);
            for i in 0..n {
                let proof = inclusion_proof(i, &all).unwrap_or_default();
                assert!(verify_inclusion(i as u64, n as u64, &all[i], &proof, &r), "n={n} i={i}");
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &r));
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(i as u64, n as u64, &all[i], &bad, &r));
                }
            }
            assert!(inclusion_proof(n, &all).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_history_fails() {
        for n in 1..=40usize {
            let all = leaves(n);
            let new_root = root(&all);
            for m in 1..=n {
                let proof = consistency_proof(m, &all).unwrap_or_default();
                let old_root = root(&all[..m]);
                assert!(verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof), "m={m} n={n}");
                // A history in which entry 0 was edited is not consistent.
                let mut edited = all.clone();
                edited[0] = leaf_hash(b"edited");
                if m < n {
                    let forged_old = root(&edited[..m]);
                    assert!(!verify_consistency(m as u64, n as u64, &forged_old, &new_root, &proof), "m={m} n={n}");
                }
            }
        }
    }
}
