//! Nothing accepted is lost; identifiers are unreadable at rest; markers expire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both;
use crate::support::*;

/// A valid NHS number in the 999 test range for a sequence number.
pub fn test_nhs_number(seq: u32) -> String {
    for check_try in 0..100u32 {
        let stem = format!("999{:06}", (seq * 7 + check_try) % 1_000_000);
        let sum: u32 = stem.bytes().zip((2..=10).rev()).map(|(d, w)| u32::from(d - b'0') * w).sum();
        let check = 11 - sum % 11;
        let check = if check == 11 { 0 } else { check };
        if check != 10 {
            return format!("{stem}{check}");
        }
    }
    unreachable!("some stem has a valid check digit")
}

both!(sigkill_during_publishes_loses_nothing_that_got_201, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let accepted: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let seq = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let nhs = test_nhs_number(n);
                    let mut body = person_notice(&nhs);
                    body["advice_text"] = json!(format!("crash test notice {n}"));
                    match b.http.post(b.url("/v1/notices")).bearer_auth(&t).json(&body).send() {
                        Ok(r) if r.status() == 201 => {
                            if let Ok(v) = r.json::<Value>() {
                                let id = v["id"].as_str().unwrap_or_default().to_owned();
                                accepted.lock().unwrap().push((id, nhs, format!("crash test notice {n}")));
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
        // Let publishes flow, then pull the plug mid-stream.
        let start = Instant::now();
        while accepted.lock().unwrap().len() < 40 && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        b.kill_hard();
        stop.store(true, Ordering::Relaxed);
    });
    let accepted = accepted.into_inner().unwrap();
    assert!(accepted.len() >= 40, "only {} publishes accepted before the kill", accepted.len());
    b.spawn();
    let t = b.token("amb-cad");
    for (id, nhs, advice) in &accepted {
        let r = b.get(&t, &format!("/v1/notices/{id}"));
        assert_eq!(r.status(), 200, "notice {id} that got a 201 is missing after SIGKILL");
        let n = json_of(r);
        assert_eq!(n["subject"]["person"]["nhs_number"], nhs.as_str());
        assert_eq!(n["advice_text"], advice.as_str());
        assert_eq!(n["status"], "active");
    }
    // Everything stored is whole: every notice has its first version.
    assert_eq!(b.count("notices"), b.count("notice_versions"));
    assert!(b.count("notices") >= accepted.len() as i64);
});

/// Every stored byte of every user table, as text, for searching.
fn stored_bytes(b: &TestBroker) -> Vec<u8> {
    match b.backend {
        Backend::Sqlite => {
            // Checkpoint nothing: read the database and its WAL exactly as they sit on disk.
            let mut all = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let p = b.dir.path().join(format!("broker.db{suffix}"));
                if let Ok(bytes) = std::fs::read(&p) {
                    all.extend(bytes);
                }
            }
            all
        }
        Backend::Postgres => {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Text)]
                t: String,
            }
            let mut conn = b.db();
            let tables: Vec<Row> = diesel::sql_query(
                "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .load(&mut conn)
            .unwrap();
            let mut all = Vec::new();
            for table in tables {
                let rows: Vec<Row> = diesel::sql_query(format!("SELECT row_to_json(x)::text AS t FROM {} x", table.t))
                    .load(&mut conn)
                    .unwrap();
                for row in rows {
                    all.extend(row.t.as_bytes());
                    // bytea columns appear as \x-prefixed hex: decode them too.
                    for part in row.t.split("\\\\x").skip(1) {
                        let hex: String = part.chars().take_while(char::is_ascii_hexdigit).collect();
                        let bytes: Vec<u8> = (0..hex.len() / 2)
                            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                            .collect();
                        all.extend(bytes);
                    }
                }
            }
            all
        }
    }
}

both!(a_database_copy_reveals_no_identifier, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let mut body = person_notice("9990000018");
    body["subject"] = json!({
        "person": {"nhs_number": "9990000026", "family_name": "Quillerfeather", "given_name": "Zebedee", "birth_date": "1971-04-05", "postcode": "ZZ99 3WZ"},
        "address": {"uprn": "987654321098", "postcode": "ZZ99 3WZ", "line1": "17 Marrowbone Crescent"},
        "telephone": "07700 900456"
    });
    body["advice_text"] = json!("Dog on premises.");
    assert_eq!(b.publish(&t, &body).status(), 201);
    // Look the subject up (with a break-glass justification that names them) and record an
    // objection, so the audit and directive tables hold rows about this subject too.
    let lookup = json!({"purpose": "staff-safety", "requester": {"user_id": "u1", "role": "ambulance-dispatcher"},
        "break_glass": {"justification": "Quillerfeather collapsed at 17 Marrowbone Crescent, crew at risk"},
        "subject": {"person": {"nhs_number": "9990000026"}}});
    let r = b.http.post(b.url("/v1/lookups")).bearer_auth(&t).json(&lookup).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r)["results"].as_array().unwrap().len(), 1);
    let ig = b.token("icb-ig");
    let objection = json!({"subject": {"person": {"family_name": "Quillerfeather", "birth_date": "1971-04-05", "postcode": "ZZ99 3WZ"}},
        "purpose": "direct-care", "status": "overridden", "evidence_reference": "IG-7",
        "reason": "Zebedee Quillerfeather poses a risk at 17 Marrowbone Crescent", "requester": {"user_id": "ig", "role": "ig-lead"}});
    assert_eq!(b.http.post(b.url("/v1/objections")).bearer_auth(&ig).json(&objection).send().unwrap().status(), 201);
    assert!(b.count("audit_entries") >= 2 && b.count("subject_directives") >= 1);
    let stored = stored_bytes(b);
    assert!(!stored.is_empty());
    let haystack = String::from_utf8_lossy(&stored).to_uppercase();
    for needle in [
        "9990000026",
        "999 000 0026",
        "QUILLERFEATHER",
        "ZEBEDEE",
        "1971-04-05",
        "ZZ99 3WZ",
        "ZZ993WZ",
        "987654321098",
        "MARROWBONE",
        "447700900456",
        "07700 900456",
        "7700900456",
    ] {
        assert!(!haystack.contains(needle), "{needle} found in plaintext in the {:?} database", b.backend);
    }
});

both!(unreviewed_notices_expire, |b: &TestBroker| {
    let t = b.token("amb-cad");
    let n = json_of(b.publish(&t, &person_notice("9990000018")));
    let id = n["id"].as_str().unwrap();
    // Wind the review date back, as if the notice had gone unreviewed.
    b.exec(&format!("UPDATE notices SET review_date = '{}' WHERE id = '{id}'", day(-1)));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = json_of(b.get(&t, &format!("/v1/notices/{id}")));
        if n["status"] == "expired" {
            assert_eq!(n["version"], 2);
            assert_eq!(n["last_change"]["change"], "expired");
            assert!(n["last_change"].get("by_system").is_none());
            break;
        }
        assert!(Instant::now() < deadline, "notice did not expire: {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The publisher can review it back into force.
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{id}/review")))
        .bearer_auth(&t)
        .json(&json!({"review_date": day(90), "note": "re-applied after review"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r)["status"], "active");
});
