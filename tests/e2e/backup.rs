//! Backup and restore as an operations team would run them: `vpr-broker backup` while the
//! broker serves, `vpr-broker restore` into a fresh database, then the broker started on the
//! restored copy serves every notice and its audit log verifies. A damaged backup and a target
//! that is not empty are refused.

use std::process::Command;

use serde_json::{json, Value};

use crate::both_backends;
use crate::support::*;

fn broker_command(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).output().expect("vpr-broker")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

both_backends!(a_backup_taken_while_serving_restores_into_a_fresh_database_that_serves_every_notice, |backend| {
    let Some(b) = TestBroker::start(backend) else { return };
    let amb = b.token("amb-cad");
    let mut ids = Vec::new();
    for nhs in ["9990000018", "9990000026", "9990000034"] {
        let r = b.publish(&amb, &person_notice(nhs));
        assert_eq!(r.status(), 201);
        ids.push(json_of(r)["id"].as_str().unwrap().to_owned());
    }
    let mut amended = person_notice("9990000018");
    amended["risk_level"] = json!("moderate");
    let r = b
        .http
        .put(b.url(&format!("/v1/notices/{}", ids[0])))
        .bearer_auth(&amb)
        .header("If-Match", "\"1\"")
        .json(&amended)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let lookup = json!({"purpose": "staff-safety", "requester": {"user_id": "disp-1", "role": "ambulance-dispatcher"},
                        "subject": {"person": {"nhs_number": "9990000018"}}});
    assert_eq!(b.post_json(&amb, "/v1/lookups", &lookup).status(), 200);
    b.wait_sealed();

    // Backed up while the broker serves; the copy is checked and described.
    let out = b.dir.path().join("backup-1");
    let config = b.config_path();
    let r = broker_command(&["backup", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("backed up 3 notices (4 versions opened)"), "{}", text(&r));
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["contents"]["notices"], 3);
    assert_eq!(manifest["checked"]["notice_versions_read"], 4);
    assert!(manifest["checked"]["audit_entries_verified"].as_u64().unwrap() >= 1, "{manifest}");
    assert_eq!(manifest["sha256"].as_str().unwrap().len(), 64);
    // Into the same folder again: refused.
    let again = broker_command(&["backup", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!again.status.success() && text(&again).contains("is not empty"), "{}", text(&again));

    // Restored into a fresh database, with the same keys.
    let fresh_pg = match backend {
        Backend::Postgres => Some(vpr_store::testdb::fresh_postgres().expect("a fresh database")),
        Backend::Sqlite => None,
    };
    let target = match &fresh_pg {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}/restored.db", b.dir.path().display()),
    };
    let restored_config = b.dir.path().join("restored.toml");
    let mut cfg: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg.insert("database_url".into(), toml::Value::String(target.clone()));
    std::fs::write(&restored_config, toml::to_string(&cfg).unwrap()).unwrap();
    let restore = |from: &std::path::Path| {
        broker_command(&["restore", "--config", restored_config.to_str().unwrap(), "--from", from.to_str().unwrap()])
    };
    // A damaged backup is refused before anything is written.
    let damaged = b.dir.path().join("backup-damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::copy(out.join("manifest.json"), damaged.join("manifest.json")).unwrap();
    let file = manifest["file"].as_str().unwrap();
    let mut bytes = std::fs::read(out.join(file)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(damaged.join(file), bytes).unwrap();
    let r = restore(&damaged);
    assert!(!r.status.success() && text(&r).contains("damaged"), "{}", text(&r));
    match backend {
        Backend::Sqlite => assert!(!b.dir.path().join("restored.db").exists(), "nothing written"),
        Backend::Postgres => {
            use diesel::{Connection, RunQueryDsl};
            #[derive(diesel::QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let mut c = diesel::PgConnection::establish(&target).unwrap();
            let tables: Vec<N> =
                diesel::sql_query("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public'")
                    .load(&mut c)
                    .unwrap();
            assert_eq!(tables[0].n, 0, "nothing written");
        }
    }

    let r = restore(&out);
    assert!(r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("restored 3 notices (4 versions opened)"), "{}", text(&r));
    // Not over a database that holds data.
    let r = restore(&out);
    assert!(!r.status.success(), "{}", text(&r));
    assert!(text(&r).contains("a restore goes into a new database"), "{}", text(&r));
    // The broker, moved onto the restored copy, serves every notice as it was.
    let before: Vec<Value> = ids.iter().map(|id| json_of(b.get(&amb, &format!("/v1/notices/{id}")))).collect();
    b.terminate();
    b.edit_config(|c| {
        c.insert("database_url".into(), toml::Value::String(target.clone()));
    });
    b.spawn();
    let amb = b.token("amb-cad");
    for (id, was) in ids.iter().zip(&before) {
        let r = b.get(&amb, &format!("/v1/notices/{id}"));
        assert_eq!(r.status(), 200);
        assert_eq!(&json_of(r), was);
    }
    let r = b.post_json(&amb, "/v1/lookups", &lookup);
    assert_eq!(json_of(r)["results"].as_array().unwrap().len(), 1);
    drop(fresh_pg);
});
