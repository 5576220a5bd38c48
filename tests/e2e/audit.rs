//! The sealed audit log: signed checkpoints, and offline verification that catches entries
//! edited, deleted, inserted, reordered, or a truncated tail — on both databases.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both;
use crate::support::*;

fn verify(b: &TestBroker, jwks: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary())
        .args(["audit", "verify", "--database", &b.database_url, "--jwks"])
        .arg(jwks)
        .env_remove("VPR_DATABASE_URL")
        .output()
        .unwrap();
    let text =
        format!("{}{}\n[{}]", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), out.status);
    (out.status.success(), text)
}

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
    let (ok, text) = verify(b, &jwks);
    assert!(ok && text.contains("12 sealed entries") && text.contains("the audit log verifies"), "{text}");

    b.exec("CREATE TABLE audit_backup AS SELECT * FROM audit_entries");
    let restore = || {
        b.exec("DELETE FROM audit_entries");
        b.exec("INSERT INTO audit_entries SELECT * FROM audit_backup");
        let (ok, text) = verify(b, &jwks);
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
        let (ok, text) = verify(b, &jwks);
        assert!(!ok, "{case}: tampering not detected:\n{text}");
        assert!(text.contains(names), "{case}: expected `{names}` in:\n{text}");
        if *case == "checkpoint forged" {
            b.exec("UPDATE audit_checkpoints SET jws = substr(jws, 2)");
        }
        restore();
    }
});
