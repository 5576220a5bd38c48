//! Faults an operations team meets: PostgreSQL stopped under load and started again. The
//! broker answers 503 problem+json promptly (never a hang, never a 500), `/readyz` says why,
//! it recovers on its own within 5 s of the database's return, and nothing it acknowledged is
//! lost. The test runs a PostgreSQL server of its own (initdb as the `postgres` user), so
//! stopping it touches no other test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A PostgreSQL server of the test's own, on a free port, with its data in a temporary folder.
struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

impl OwnPostgres {
    /// Starts one, or `None` (said, and a failure under `CI=true`) where it cannot be run:
    /// no PostgreSQL server binaries, or not root (initdb runs as `postgres`).
    fn start() -> Option<Self> {
        let is_root =
            Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let Some(bin) = pg_bin().filter(|_| is_root) else {
            let why = "this test runs a PostgreSQL server of its own: it needs the server binaries and root";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("SKIPPING: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap().success());
        let data = dir.path().join("data");
        let out = as_postgres(&bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let pg = Self { dir, bin, port };
        pg.up();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn up(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let out = as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("start")
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn down(&self, mode: &str) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-t", "30", "-m", mode, "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.down("immediate");
    }
}

/// One request's outcome during the run: when, what status, how long it took, and for a
/// publish its id.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    took: Duration,
    published: Option<String>,
    problem: Option<Value>,
}

#[test]
fn postgresql_stopped_under_load_gives_prompt_503s_and_the_broker_recovers_losing_nothing() {
    let Some(pg) = OwnPostgres::start() else { return };
    let b = TestBroker::unstarted_on(&pg.url(), |_| {});
    b.spawn();
    let amb = b.token("amb-cad");
    // Publishes and look-ups from two threads for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let load: Vec<_> = (0..2u32)
        .map(|t| {
            let (base, token, stop, outcomes) = (b.base.clone(), amb.clone(), stop.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let nhs = ["9990000018", "9990000026", "9990000034"][(i % 3) as usize];
                    let started = Instant::now();
                    let r = if t == 0 {
                        http.post(format!("{base}/v1/notices")).bearer_auth(&token).json(&person_notice(nhs)).send()
                    } else {
                        let body = serde_json::json!({"purpose": "staff-safety",
                            "requester": {"user_id": "disp-1", "role": "ambulance-dispatcher"},
                            "subject": {"person": {"nhs_number": nhs}}});
                        http.post(format!("{base}/v1/lookups")).bearer_auth(&token).json(&body).send()
                    };
                    let r = r.expect("the broker answers (never a dropped connection)");
                    let status = r.status().as_u16();
                    let took = started.elapsed();
                    let body: Value = r.json().unwrap_or(Value::Null);
                    let published = (t == 0 && status == 201).then(|| body["id"].as_str().unwrap().to_owned());
                    let problem = (status >= 400).then_some(body);
                    outcomes.lock().unwrap().push(Outcome { status, took, published, problem });
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    // PostgreSQL stops under load (a fast shutdown: connections are cut).
    pg.down("fast");
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let asked = Instant::now();
    let ready = b.http.get(b.url("/readyz")).send().unwrap();
    assert!(asked.elapsed() < Duration::from_secs(2), "/readyz answers promptly: {:?}", asked.elapsed());
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().get("retry-after").is_some());
    let why: Value = ready.json().unwrap();
    assert_eq!(why["reason"], "the database cannot be reached", "{why}");
    let during = outcomes.lock().unwrap().len();
    // Back: the broker serves again within 5 s, on its own.
    pg.up();
    let back_at = Instant::now();
    let amb_http = &b.http;
    loop {
        let r =
            amb_http.post(b.url("/v1/notices")).bearer_auth(&amb).json(&person_notice("9990000042")).send().unwrap();
        if r.status() == 201 {
            break;
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(5),
            "not recovered 5 s after the database returned: {}",
            r.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recovered = back_at.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    // During the outage: 503 problem+json, never a 500, each within the 5 s a request waits
    // for a connection (and a second of slack).
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status >= 400).collect();
    assert!(!failed.is_empty(), "the outage was seen ({} requests, {during} before it ended)", outcomes.len());
    for o in &failed {
        assert_eq!(o.status, 503, "{o:?}");
        assert_eq!(o.problem.as_ref().unwrap()["type"], "urn:vpr-broker:problem:unavailable", "{o:?}");
        assert!(o.took < Duration::from_secs(6), "a request held {:?}", o.took);
    }
    // Once the database is known to be down, the refusals come at once.
    let prompt = failed.iter().filter(|o| o.took < Duration::from_secs(1)).count();
    assert!(prompt * 2 >= failed.len(), "{prompt} of {} refusals within a second", failed.len());
    assert!(outcomes.iter().filter(|o| o.status < 400).count() > 20, "served before and after");
    // Nothing acknowledged was lost: every published notice is there.
    let published: Vec<&String> = outcomes.iter().filter_map(|o| o.published.as_ref()).collect();
    for id in &published {
        assert_eq!(b.get(&amb, &format!("/v1/notices/{id}")).status(), 200, "{id} was acknowledged");
    }
    // And every look-up answered has its audit entry, in a log that verifies.
    let answered = outcomes.iter().filter(|o| o.status == 200).count() as i64;
    b.wait_sealed();
    let audited = b.count("audit_entries WHERE action = 'lookup' AND decision <> 'refused'");
    assert!(audited >= answered, "{audited} look-ups audited, {answered} answered");
    let (verifies, printed) = b.audit_verifies();
    assert!(verifies, "{printed}");
    eprintln!(
        "outage {:?}: {} requests refused 503 (slowest {:?}); recovered {recovered:?} after the database returned; {} publishes acknowledged and kept",
        back_at - stopped_at,
        failed.len(),
        failed.iter().map(|o| o.took).max().unwrap_or_default(),
        published.len()
    );
}

/// A small filesystem of the test's own (tmpfs), to fill.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let why = "this test fills a small tmpfs of its own: it needs to mount one (root)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("SKIPPING: {why}");
            return None;
        }
        Some(Self { dir })
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.dir.path()).status();
        assert!(ok.unwrap().success(), "remount");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_on_sqlite_gives_503s_and_no_corruption_and_the_broker_recovers_when_space_is_freed() {
    let Some(disk) = SmallDisk::mount("3m") else { return };
    let url = format!("sqlite://{}/broker.db", disk.dir.path().display());
    let b = TestBroker::unstarted_on(&url, |_| {});
    b.spawn();
    let amb = b.token("amb-cad");
    // Publish until the disk is full: each answer 201 or 503 problem+json, never a 500.
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut i = 0u64;
    while refused < 5 {
        i += 1;
        assert!(i < 20_000, "the disk never filled");
        let mut body = person_notice("9990000018");
        body["advice_text"] = serde_json::json!(format!("{i} {}", "padding to fill the disk ".repeat(10)));
        let r = b.publish(&amb, &body);
        match r.status().as_u16() {
            201 => acknowledged.push(json_of(r)["id"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(json_of(r)["type"], "urn:vpr-broker:problem:unavailable");
                refused += 1;
            }
            other => panic!("publish {i} answered {other}: {}", r.text().unwrap_or_default()),
        }
    }
    assert!(acknowledged.len() > 10, "{} published before the disk filled", acknowledged.len());
    // Space is freed: the broker publishes again within 5 s, on its own.
    disk.grow("256m");
    let freed = Instant::now();
    loop {
        let r = b.publish(&amb, &person_notice("9990000026"));
        if r.status() == 201 {
            acknowledged.push(json_of(r)["id"].as_str().unwrap().to_owned());
            break;
        }
        assert!(freed.elapsed() < Duration::from_secs(5), "not recovered: {}", r.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing acknowledged was lost, the database is intact, and the audit log verifies.
    for id in &acknowledged {
        assert_eq!(b.get(&amb, &format!("/v1/notices/{id}")).status(), 200, "{id} was acknowledged");
    }
    {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Check {
            #[diesel(sql_type = diesel::sql_types::Text)]
            integrity_check: String,
        }
        let rows: Vec<Check> = diesel::sql_query("PRAGMA integrity_check").load(&mut b.db()).unwrap();
        assert_eq!(rows[0].integrity_check, "ok");
    }
    // A look-up after the disk filled and was freed: decided, answered, audited, sealed.
    let lookup = serde_json::json!({"purpose": "staff-safety", "requester": {"user_id": "disp-1", "role": "ambulance-dispatcher"},
        "subject": {"person": {"nhs_number": "9990000026"}}});
    let r = b.post_json(&amb, "/v1/lookups", &lookup);
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r)["results"].as_array().unwrap().len(), 1);
    b.wait_sealed();
    let (verifies, printed) = b.audit_verifies();
    assert!(verifies, "{printed}");
    eprintln!("{} publishes acknowledged before the disk filled, then {refused} refused 503; recovered {:?} after space was freed", acknowledged.len() - 1, freed.elapsed());
    b.terminate();
}
