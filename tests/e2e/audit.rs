//! The sealed audit log: signed checkpoints, and offline verification that catches entries
//! edited, deleted, inserted, reordered, or a truncated tail — on both databases.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::both;
use crate::support::*;

both!(audit_verify_catches_every_kind_of_tampering, |b: &TestBroker| {
    let t = b.token("amb-cad");
    assert_eq!(b.publish(&t, &person_notice("9990000018")).status(), 201);
    let lookup = json!({"purpose": "staff-safety", "requester": {"user_id": "u", "role": "ambulance-dispatcher"},
        "subject": {"person": {"nhs_number": "9990000018"}}});
    for _ in 0..12 {
        assert_eq!(b.http.post(b.url("/v1/lookups")).bearer_auth(&t).json(&lookup).send().unwrap().status(), 200);
    }
    // The sealer signs a checkpoint within about a second of entries arriving.
    let deadline = Instant::now() + Duration::from_secs(20);
    let checkpoint = loop {
        let r = b.http.get(b.url("/v1/audit/checkpoints/latest")).send().unwrap();
        if r.status() == 200 {
            let cp = json_of(r);
            if cp["tree_size"].as_i64() == Some(12) {
                break cp;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint covering 12 entries");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(checkpoint["root_hash"].as_str().map(str::len), Some(64));
    let jwks = b.dir.path().join("jwks.json");
    std::fs::write(&jwks, b.http.get(b.url("/.well-known/jwks.json")).send().unwrap().text().unwrap()).unwrap();
    // Verification works offline: the broker is stopped.
    b.kill_hard();
    let (ok, text) = audit_verify(b, &jwks);
    assert!(ok && text.contains("12 sealed entries") && text.contains("the audit log verifies"), "{text}");

    b.exec("CREATE TABLE audit_backup AS SELECT * FROM audit_entries");
    let restore = || {
        b.exec("DELETE FROM audit_entries");
        b.exec("INSERT INTO audit_entries SELECT * FROM audit_backup");
        let (ok, text) = audit_verify(b, &jwks);
        assert!(ok, "restored log should verify: {text}");
    };
    let cases: &[(&str, &[&str], &str)] = &[
        ("edited", &["UPDATE audit_entries SET decision = 'deny' WHERE leaf_index = 3"], "leaf 3"),
        ("edited purpose", &["UPDATE audit_entries SET purpose = 'direct-care' WHERE leaf_index = 0"], "leaf 0"),
        ("deleted", &["DELETE FROM audit_entries WHERE leaf_index = 5"], "leaf 5..5 are missing"),
        (
            "reordered",
            &[
                "UPDATE audit_entries SET leaf_index = -1 WHERE leaf_index = 2",
                "UPDATE audit_entries SET leaf_index = 2 WHERE leaf_index = 4",
                "UPDATE audit_entries SET leaf_index = 4 WHERE leaf_index = -1",
            ],
            "leaf 2",
        ),
        (
            "inserted",
            &["INSERT INTO audit_entries (id, at, request_id, action, actor_org, actor_org_type, actor_system, break_glass, subject_refs, decision, notices, lawful_basis, clauses, agreement_version, outcome, leaf_index, leaf_hash) \
               SELECT 'forged-entry', at, request_id, action, actor_org, actor_org_type, actor_system, break_glass, subject_refs, decision, notices, lawful_basis, clauses, agreement_version, outcome, 12, leaf_hash FROM audit_entries WHERE leaf_index = 11"],
            "leaf 12",
        ),
        ("truncated", &["DELETE FROM audit_entries WHERE leaf_index >= 9"], "truncated"),
        ("checkpoint forged", &["UPDATE audit_checkpoints SET jws = 'x' || jws"], "does not verify"),
    ];
    for (case, sql, names) in cases {
        for s in *sql {
            b.exec(s);
        }
        let (ok, text) = audit_verify(b, &jwks);
        assert!(!ok, "{case}: tampering not detected:\n{text}");
        assert!(text.contains(names), "{case}: expected `{names}` in:\n{text}");
        if *case == "checkpoint forged" {
            b.exec("UPDATE audit_checkpoints SET jws = substr(jws, 2)");
        }
        restore();
    }
});

/// An independent RFC 9162 verifier: recursive reconstruction from the tree's definition,
/// sharing nothing with the broker's code but the hash rules (0x00 leaf / 0x01 node prefix).
mod independent {
    use sha2::{Digest, Sha256};

    pub type H = [u8; 32];

    pub fn node(l: &H, r: &H) -> H {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    fn split(n: u64) -> u64 {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// The root implied by a leaf and its audit path (leaf first), or None if the path has the
    /// wrong length for the tree.
    pub fn root_from_inclusion(index: u64, size: u64, leaf: H, path: &[H]) -> Option<H> {
        if size == 1 {
            return path.is_empty().then_some(leaf);
        }
        let (top, rest) = path.split_last()?;
        let k = split(size);
        if index < k {
            Some(node(&root_from_inclusion(index, k, leaf, rest)?, top))
        } else {
            Some(node(top, &root_from_inclusion(index - k, size - k, leaf, rest)?))
        }
    }

    /// Rebuilds (old root, new root) from a consistency proof, outermost level last.
    fn rebuild(m: u64, n: u64, whole: bool, proof: &mut Vec<H>, old_root: H) -> Option<(H, H)> {
        if m == n {
            return if whole {
                Some((old_root, old_root))
            } else {
                let h = proof.pop()?;
                Some((h, h))
            };
        }
        let k = split(n);
        let sibling = proof.pop()?;
        if m <= k {
            let (old, new) = rebuild(m, k, whole, proof, old_root)?;
            Some((old, node(&new, &sibling)))
        } else {
            let (old, new) = rebuild(m - k, n - k, false, proof, old_root)?;
            Some((node(&sibling, &old), node(&sibling, &new)))
        }
    }

    pub fn consistent(m: u64, n: u64, old_root: H, new_root: H, proof: &[H]) -> bool {
        let mut p = proof.to_vec();
        matches!(rebuild(m, n, true, &mut p, old_root), Some((o, nw)) if p.is_empty() && o == old_root && nw == new_root)
    }

    pub fn unhex(s: &str) -> H {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}

both!(proofs_check_out_with_an_independent_verifier, |b: &TestBroker| {
    use independent::*;
    let t = b.token("amb-cad");
    let lookup = json!({"purpose": "staff-safety", "requester": {"user_id": "u", "role": "ambulance-dispatcher"},
        "subject": {"telephone": "07700 900999"}});
    let jwks: serde_json::Value = json_of(b.http.get(b.url("/.well-known/jwks.json")).send().unwrap());
    let key = josekit::jwk::Jwk::from_map(jwks["keys"][0].as_object().unwrap().clone()).unwrap();
    let verifier = josekit::jws::ES256.verifier_from_jwk(&key).unwrap();
    // Make `count` entries, wait for a checkpoint covering them, and check its signature.
    let grow_to = |count: i64| {
        while b.count("audit_entries") < count {
            assert_eq!(b.http.post(b.url("/v1/lookups")).bearer_auth(&t).json(&lookup).send().unwrap().status(), 200);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let cp =
                json_of(b.http.get(b.url("/v1/audit/checkpoints/latest")).send().unwrap_or_else(|e| panic!("{e}")));
            if cp["tree_size"].as_i64() == Some(count) {
                let (payload, _) = josekit::jws::deserialize_compact(cp["jws"].as_str().unwrap(), &verifier).unwrap();
                let signed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(signed["tree_size"], count);
                assert_eq!(signed["root_hash"], cp["root_hash"]);
                return unhex(cp["root_hash"].as_str().unwrap());
            }
            assert!(Instant::now() < deadline, "no checkpoint at {count}: {cp}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let old_root = grow_to(11);
    let new_root = grow_to(27);
    // Every entry's inclusion in the newer tree.
    for i in 0..27u64 {
        let p = json_of(b.get(&t, &format!("/v1/audit/proofs/inclusion?leaf_index={i}&tree_size=27")));
        let path: Vec<H> = p["audit_path"].as_array().unwrap().iter().map(|h| unhex(h.as_str().unwrap())).collect();
        let leaf = unhex(p["leaf_hash"].as_str().unwrap());
        assert_eq!(root_from_inclusion(i, 27, leaf, &path), Some(new_root), "leaf {i}");
        assert_ne!(root_from_inclusion(i, 27, node(&leaf, &leaf), &path), Some(new_root));
    }
    // The newer tree extends the older one.
    let p = json_of(b.get(&t, "/v1/audit/proofs/consistency?first=11&second=27"));
    let proof: Vec<H> = p["consistency_path"].as_array().unwrap().iter().map(|h| unhex(h.as_str().unwrap())).collect();
    assert!(consistent(11, 27, old_root, new_root, &proof));
    assert!(!consistent(11, 27, node(&old_root, &old_root), new_root, &proof), "a different history is not consistent");
    assert_eq!(b.get(&t, "/v1/audit/proofs/consistency?first=11&second=999").status(), 422);
});

both!(break_glass_accesses_wait_for_ig_review, |b: &TestBroker| {
    let amb = b.token("amb-cad");
    assert_eq!(b.publish(&amb, &person_notice("9990000018")).status(), 201);
    let emergency = json!({"purpose": "direct-care", "requester": {"user_id": "ed-doc-3", "role": "ed-clinician"},
        "break_glass": {"justification": "unconscious patient, violent on arrival last week per crew"},
        "subject": {"person": {"nhs_number": "9990000018"}}});
    assert_eq!(
        b.http.post(b.url("/v1/lookups")).bearer_auth(b.token("acute-ed")).json(&emergency).send().unwrap().status(),
        200
    );
    let ig = b.token("icb-ig");
    let queue = |status: &str| {
        b.http
            .get(b.url(&format!("/v1/audit/break-glass?status={status}")))
            .bearer_auth(&ig)
            .header("VPR-User-Id", "ig-1")
            .header("VPR-User-Role", "ig-lead")
            .send()
            .unwrap()
    };
    let pending = json_of(queue("pending"));
    let entries = pending["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["justification"], "unconscious patient, violent on arrival last week per crew");
    assert_eq!(
        (entries[0]["organisation"].as_str(), entries[0]["role"].as_str()),
        (Some("XAC01"), Some("ed-clinician"))
    );
    let audit_id = entries[0]["audit_id"].as_str().unwrap().to_owned();
    let review = |body: serde_json::Value| {
        b.http
            .post(b.url(&format!("/v1/audit/break-glass/{audit_id}/review")))
            .bearer_auth(&ig)
            .json(&body)
            .send()
            .unwrap()
    };
    let outcome = json!({"outcome": "appropriate", "note": "emergency confirmed with the ED consultant", "reviewer": {"user_id": "ig-1", "role": "ig-lead"}});
    assert_eq!(
        review(json!({"outcome": "fine", "note": "x", "reviewer": {"user_id": "ig-1", "role": "ig-lead"}})).status(),
        422
    );
    assert_eq!(review(outcome.clone()).status(), 200);
    assert_eq!(b.last_audit()["action"], "break-glass-review");
    assert_eq!(review(outcome).status(), 409, "already reviewed");
    assert_eq!(json_of(queue("pending"))["entries"].as_array().unwrap().len(), 0);
    assert_eq!(json_of(queue("appropriate"))["entries"].as_array().unwrap().len(), 1);
    // Only IG roles: the ambulance trust holds no audit scope; a GP role is refused.
    assert_eq!(b.http.get(b.url("/v1/audit/break-glass")).bearer_auth(&amb).send().unwrap().status(), 403);
    let r = b
        .http
        .get(b.url("/v1/audit/break-glass"))
        .bearer_auth(&ig)
        .header("VPR-User-Id", "x")
        .header("VPR-User-Role", "gp-clinician")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // Recording a review does not disturb the sealed log.
    let total = b.count("audit_entries");
    let deadline = Instant::now() + Duration::from_secs(20);
    while json_of(b.http.get(b.url("/v1/audit/checkpoints/latest")).send().unwrap())["tree_size"].as_i64()
        != Some(total)
    {
        assert!(Instant::now() < deadline, "not sealed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let jwks = b.dir.path().join("jwks.json");
    std::fs::write(&jwks, b.http.get(b.url("/.well-known/jwks.json")).send().unwrap().text().unwrap()).unwrap();
    let (ok, text) = audit_verify(b, &jwks);
    assert!(ok, "{text}");
});
