//! Test support: a real broker process per test on a free port, on SQLite or PostgreSQL, with
//! freshly generated (non-demo) keys and a test registry; and a partner-side HTTP client.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use josekit::jwk::Jwk;
use josekit::jws::{JwsHeader, ES256};
use josekit::jwt::{self, JwtPayload};
use serde_json::{json, Value};
use vpr_auth::SigningKeyFile;
use vpr_store::db::{Backend as DbBackend, DbConnection};
use vpr_store::testdb::{fresh_postgres, PgTestDb};

pub use reqwest::blocking::Response;

/// Which database a test broker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once on each backend: `both!(name, |b| { ... })`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                if let Some(b) = $crate::support::TestBroker::start($crate::support::Backend::Sqlite) {
                    ($body)(&b);
                }
            }
            #[test]
            fn postgres() {
                if let Some(b) = $crate::support::TestBroker::start($crate::support::Backend::Postgres) {
                    ($body)(&b);
                }
            }
        }
    };
}

/// Runs a test body once per backend, for tests that start their own broker:
/// `both_backends!(name, |backend| { ... })`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                ($body)($crate::support::Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                ($body)($crate::support::Backend::Postgres);
            }
        }
    };
}

/// A partner system the test registry knows.
#[derive(Clone)]
pub struct Client {
    pub id: &'static str,
    pub jwk: Jwk,
}

impl Client {
    pub fn kid(&self) -> String {
        self.jwk.key_id().unwrap_or_default().to_owned()
    }
}

/// Test partners: (client id, ODS, org type, scopes, roles). ODS codes are the demo agreement's parties.
/// (client id, ODS, org type, scopes, roles)
pub type PartnerRow = (&'static str, &'static str, &'static str, &'static [&'static str], &'static [&'static str]);

pub const PARTNERS: &[PartnerRow] = &[
    (
        "amb-cad",
        "XAM01",
        "ambulance-trust",
        &["notices:write", "notices:read", "lookups", "subscriptions"],
        &["ambulance-dispatcher", "ambulance-clinician", "vpr-lead"],
    ),
    (
        "gp-green",
        "XGP01",
        "gp-practice",
        &["notices:write", "notices:read", "lookups", "subscriptions"],
        &["gp-receptionist", "gp-clinician"],
    ),
    (
        "police",
        "XPF01",
        "police-force",
        &["notices:read", "lookups", "subscriptions"],
        &["police-officer", "police-call-handler"],
    ),
    (
        "acute-ed",
        "XAC01",
        "acute-trust",
        &["notices:write", "notices:read", "lookups", "subscriptions"],
        &["ed-clinician", "ed-receptionist", "security-management-specialist"],
    ),
    ("council", "XLA01", "local-authority", &["notices:read", "lookups", "subscriptions"], &["social-worker"]),
    ("icb-ig", "XIC01", "icb", &["notices:read", "lookups", "ig:write", "audit:read"], &["ig-lead", "dpo"]),
];

pub struct TestBroker {
    pub backend: Backend,
    pub base: String,
    pub database_url: String,
    pub dir: tempfile::TempDir,
    pub clients: Vec<Client>,
    pub http: reqwest::blocking::Client,
    child: std::sync::Mutex<Option<Child>>,
    log_seq: std::sync::atomic::AtomicU32,
    _pg: Option<PgTestDb>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// The demo agreement for test ICS `ics`: the file itself for `X`; for another ICS a copy
/// whose parties' ODS codes begin with `ics`, beside copies of the Cedar schema and clauses.
fn agreement_for(ics: char, dir: &Path) -> PathBuf {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    if ics == 'X' {
        return policies.join("agreement.json");
    }
    let mut a: Value =
        serde_json::from_str(&std::fs::read_to_string(policies.join("agreement.json")).expect("agreement"))
            .expect("json");
    a["agreement_version"] = json!(format!("{ics}-ICS-test"));
    for p in a["parties"].as_array_mut().expect("parties") {
        let ods = p["ods_code"].as_str().expect("ods").to_owned();
        p["ods_code"] = json!(format!("{ics}{}", &ods[1..]));
    }
    a["policies"].as_object_mut().expect("policies").remove("fixtures");
    for f in ["vpr.cedarschema", "agreement.cedar"] {
        std::fs::copy(policies.join(f), dir.join(f)).expect("copy policies");
    }
    let path = dir.join("agreement.json");
    std::fs::write(&path, a.to_string()).expect("write agreement");
    path
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vpr-broker")
}

impl TestBroker {
    /// Starts a broker with default settings, or `None` when PostgreSQL is unavailable outside CI.
    pub fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {})
    }

    /// Starts a broker after letting the caller adjust the config document.
    pub fn start_with(backend: Backend, adjust: impl FnOnce(&mut toml::Table)) -> Option<Self> {
        let b = Self::unstarted('X', backend, adjust)?;
        b.spawn();
        Some(b)
    }

    /// A broker for a test ICS, configured but not started: its partners' ODS codes begin with
    /// `ics` (`X` is the demo agreement's; another letter gives a neighbouring ICS, with the
    /// agreement copied and its parties renamed to match).
    pub fn unstarted(ics: char, backend: Backend, adjust: impl FnOnce(&mut toml::Table)) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, pg) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/broker.db", dir.path().display()), None),
            Backend::Postgres => {
                let db = fresh_postgres()?;
                (db.url.clone(), Some(db))
            }
        };
        Some(Self::prepared(ics, backend, dir, database_url, pg, adjust))
    }

    /// A broker configured, not started, on a database of the test's own (a PostgreSQL
    /// server it runs itself, say).
    pub fn unstarted_on(database_url: &str, adjust: impl FnOnce(&mut toml::Table)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = if database_url.starts_with("sqlite") { Backend::Sqlite } else { Backend::Postgres };
        Self::prepared('X', backend, dir, database_url.to_owned(), None, adjust)
    }

    fn prepared(
        ics: char,
        backend: Backend,
        dir: tempfile::TempDir,
        database_url: String,
        pg: Option<PgTestDb>,
        adjust: impl FnOnce(&mut toml::Table),
    ) -> Self {
        let mut clients = Vec::new();
        let mut partners = Vec::new();
        let ods_of = |ods: &str| format!("{ics}{}", &ods[1..]);
        for (id, ods, org_type, scopes, roles) in PARTNERS {
            let ods = &ods_of(ods);
            let key = SigningKeyFile::generate(&format!("{id}-1"), false).expect("key");
            let public = vpr_auth::keys::public_jwk(&key.jwk).expect("public");
            partners.push(json!({
                "ods_code": ods, "name": format!("Test {org_type} {ods}"), "type": org_type,
                "contact": {"name": "Duty lead", "telephone": "0113 496 0999", "email": format!("duty@{}.example", ods.to_lowercase())},
                "systems": [{"client_id": id, "name": format!("{id} system"), "scopes": scopes, "roles": roles, "jwks": {"keys": [Value::Object(public.as_ref().clone())]}}]
            }));
            clients.push(Client { id, jwk: key.jwk });
        }
        let registry = json!({"registry_version": 1, "ics": {"name": "Test ICS"}, "partners": partners});
        std::fs::write(dir.path().join("registry.json"), registry.to_string()).expect("registry");
        // Each ICS's broker its own key id (peers' key ids must not collide).
        let kid =
            if ics == 'X' { "broker-test-1".to_owned() } else { format!("broker-{}-1", ics.to_ascii_lowercase()) };
        let signing = SigningKeyFile::generate(&kid, false).expect("signing key");
        std::fs::write(dir.path().join("signing-1.jwk"), signing.to_json()).expect("write key");
        let data = vpr_store::DataKeyFile::generate(false);
        std::fs::write(dir.path().join("data-keys.json"), serde_json::to_string(&data).expect("json"))
            .expect("write keys");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut cfg: toml::Table = toml::from_str(&format!(
            r#"
            config_version = 1
            listen = "127.0.0.1:{port}"
            public_url = "{base}"
            database_url = "{database_url}"
            database_pool_size = 8
            registry = "registry.json"
            agreement = "{agreement}"
            shutdown_grace_seconds = 10
            [keys]
            signing_keys = ["signing-1.jwk"]
            data_keys = "data-keys.json"
            [notices]
            expiry_check_seconds = 1
            # Tests send requests as fast as they go from one address: limits out of their way
            # (tests/e2e/limits.rs sets its own).
            [limits]
            api = {{ per_second = 100000, burst = 100000 }}
            ig = {{ per_second = 100000, burst = 100000 }}
            token = {{ per_second = 100000, burst = 100000 }}
            public = {{ per_second = 100000, burst = 100000 }}
            "#,
            agreement = agreement_for(ics, dir.path()).display()
        ))
        .expect("config");
        adjust(&mut cfg);
        std::fs::write(dir.path().join("broker.toml"), toml::to_string(&cfg).expect("toml")).expect("write config");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            backend,
            base,
            database_url,
            dir,
            clients,
            http,
            child: std::sync::Mutex::new(None),
            log_seq: std::sync::atomic::AtomicU32::new(0),
            _pg: pg,
        }
    }

    /// The broker's public signing keys (a JWKS), as a peer configures them.
    pub fn jwks(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("signing-1.jwk")).expect("signing key");
        let key = SigningKeyFile::from_json(&text).expect("key");
        let public = vpr_auth::keys::public_jwk(&key.jwk).expect("public");
        json!({"keys": [Value::Object(public.as_ref().clone())]})
    }

    /// A broker that delivers to plain-http loopback receivers (demo mode; fresh non-demo keys
    /// all the same) and retries quickly.
    pub fn start_delivering(backend: Backend, adjust: impl FnOnce(&mut toml::Table)) -> Option<Self> {
        Self::start_with(backend, |cfg| {
            cfg.insert("demo".into(), true.into());
            let delivery: toml::Table = toml::from_str(
                "initial_backoff_ms = 100\nmax_backoff_seconds = 1\ntimeout_ms = 1000\nlease_seconds = 2\npoll_ms = 50\nconcurrency = 16",
            )
            .expect("delivery table");
            cfg.insert("delivery".into(), delivery.into());
            adjust(cfg);
        })
    }

    /// Edits the broker's config file (takes effect at the next start).
    pub fn edit_config(&self, adjust: impl FnOnce(&mut toml::Table)) {
        let mut cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(self.config_path()).expect("config")).expect("toml");
        adjust(&mut cfg);
        std::fs::write(self.config_path(), toml::to_string(&cfg).expect("toml")).expect("write config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("broker.toml")
    }

    /// Starts the broker process and waits until it is ready.
    pub fn spawn(&self) {
        let seq = self.log_seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let log = std::fs::File::create(self.dir.path().join(format!("broker-{seq}.log"))).expect("log");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env("VPR_LOG", "info")
            .env_remove("VPR_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn broker");
        *self.child.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send() {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.lock().expect("lock").as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("broker exited with {status} during start-up:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "broker not ready in time:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's log so far (the latest run).
    pub fn log(&self) -> String {
        let mut s = String::new();
        let path =
            self.dir.path().join(format!("broker-{}.log", self.log_seq.load(std::sync::atomic::Ordering::SeqCst)));
        let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn kill_hard(&self) {
        let taken = self.child.lock().map(|mut c| c.take()).unwrap_or_default();
        if let Some(mut c) = taken {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for exit; returns the exit status.
    pub fn terminate(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().ok()?.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().ok()
    }

    pub fn restart(&self) {
        self.kill_hard();
        self.spawn();
    }

    pub fn client(&self, id: &str) -> &Client {
        self.clients.iter().find(|c| c.id == id).expect("known client")
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.base)
    }

    /// A client assertion signed by `client`'s key, with claims adjusted by `adjust`.
    pub fn assertion(&self, client: &Client, adjust: impl FnOnce(&mut JwtPayload)) -> String {
        let now = SystemTime::now();
        let mut p = JwtPayload::new();
        p.set_issuer(client.id);
        p.set_subject(client.id);
        p.set_audience(vec![self.token_endpoint()]);
        p.set_issued_at(&now);
        p.set_expires_at(&(now + Duration::from_secs(60)));
        p.set_jwt_id(uuid::Uuid::new_v4().to_string());
        adjust(&mut p);
        let signer = ES256.signer_from_jwk(&client.jwk).expect("signer");
        jwt::encode_with_signer(&p, &JwsHeader::new(), &signer).expect("sign")
    }

    pub fn request_token(&self, assertion: &str, scope: Option<&str>) -> Response {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.http.post(self.token_endpoint()).form(&form).send().expect("token request")
    }

    /// An access token for a known client.
    pub fn token(&self, client_id: &str) -> String {
        let a = self.assertion(self.client(client_id), |_| {});
        let r = self.request_token(&a, None);
        assert_eq!(r.status(), 200, "token for {client_id}");
        let body: Value = r.json().expect("json");
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn publish(&self, token: &str, body: &Value) -> Response {
        self.http.post(self.url("/v1/notices")).bearer_auth(token).json(body).send().expect("publish")
    }

    pub fn post_json(&self, token: &str, path: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).bearer_auth(token).json(body).send().expect("post")
    }

    pub fn put_json(&self, token: &str, path: &str, body: &Value) -> Response {
        self.http.put(self.url(path)).bearer_auth(token).json(body).send().expect("put")
    }

    pub fn delete(&self, token: &str, path: &str) -> Response {
        self.http.delete(self.url(path)).bearer_auth(token).send().expect("delete")
    }

    /// Creates a subscription; panics unless it is created.
    pub fn subscribe(&self, token: &str, body: &Value) -> Value {
        let r = self.post_json(token, "/v1/subscriptions", body);
        let status = r.status();
        let v: Value = r.json().expect("json");
        assert_eq!(status, 201, "{v:#}");
        v
    }

    /// Waits until `check` holds of the subscription resource, or panics after `timeout`.
    pub fn wait_subscription(&self, token: &str, id: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v: Value = self.get(token, &format!("/v1/subscriptions/{id}")).json().expect("json");
            if check(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "subscription never reached the expected state: {v:#}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, token: &str, path: &str) -> Response {
        self.http.get(self.url(path)).bearer_auth(token).send().expect("get")
    }

    /// A direct database connection, to look at what is stored as an attacker with a copy would.
    pub fn db(&self) -> DbConnection {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let (_, url) = DbBackend::from_url(&self.database_url).expect("url");
        let mut conn = DbConnection::establish(&url).expect("db connection");
        if let DbConnection::Sqlite(c) = &mut conn {
            // The running broker writes too: wait for its lock rather than fail.
            c.batch_execute("PRAGMA busy_timeout = 10000;").expect("busy timeout");
        }
        conn
    }

    /// Rows of `table` (which may carry its own `WHERE`, written by the test).
    pub fn count(&self, table: &str) -> i64 {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let rows: Vec<N> =
            diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}")).load(&mut self.db()).expect("count");
        rows.first().map(|r| r.n).unwrap_or_default()
    }

    /// The newest audit entry, as stored.
    pub fn last_audit(&self) -> Value {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            action: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            decision: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            lawful_basis: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            clauses: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            notices: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            subject_refs: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            actor_role: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            purpose: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            ig_review: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            outcome: i32,
            #[diesel(sql_type = diesel::sql_types::Text)]
            agreement_version: String,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT action, decision, lawful_basis, clauses, notices, subject_refs, actor_role, purpose, ig_review, outcome, agreement_version \
             FROM audit_entries ORDER BY seq DESC LIMIT 1",
        )
        .load(&mut self.db())
        .expect("audit");
        let r = rows.into_iter().next().expect("an audit entry");
        let parse = |s: &str| serde_json::from_str::<Value>(s).expect("json column");
        json!({
            "action": r.action, "decision": r.decision, "lawful_basis": parse(&r.lawful_basis), "clauses": parse(&r.clauses),
            "notices": parse(&r.notices), "subject_refs": parse(&r.subject_refs), "actor_role": r.actor_role,
            "purpose": r.purpose, "ig_review": r.ig_review, "outcome": r.outcome, "agreement_version": r.agreement_version,
        })
    }

    pub fn exec(&self, sql: &str) {
        use diesel::RunQueryDsl;
        diesel::sql_query(sql).execute(&mut self.db()).expect("exec");
    }
}

/// A second broker process on the same database, keys and registry (another replica).
pub struct Replica {
    pub base: String,
    child: Option<Child>,
}

impl Replica {
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

impl TestBroker {
    /// Starts another replica of this broker on a new port, sharing its database.
    pub fn replica(&self) -> Replica {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut cfg: toml::Table =
            toml::from_str(&std::fs::read_to_string(self.config_path()).expect("config")).expect("toml");
        cfg.insert("listen".into(), format!("127.0.0.1:{port}").into());
        let path = self.dir.path().join(format!("replica-{port}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write config");
        let log = std::fs::File::create(self.dir.path().join(format!("replica-{port}.log"))).expect("log");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&path)
            .env("VPR_LOG", "info")
            .env_remove("VPR_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn replica");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.http.get(format!("{base}/readyz")).send().is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "replica not ready in time");
            std::thread::sleep(Duration::from_millis(50));
        }
        Replica { base, child: Some(child) }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Today in the broker's terms, and helpers for dates relative to it.
pub fn day(offset: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Duration::days(offset)).to_string()
}

/// `vpr-broker audit verify` on the broker's database with the public keys in `jwks`: whether
/// the log verifies, and what the command printed.
pub fn audit_verify(b: &TestBroker, jwks: &Path) -> (bool, String) {
    let out = Command::new(binary())
        .args(["audit", "verify", "--database", &b.database_url, "--jwks"])
        .arg(jwks)
        .env_remove("VPR_DATABASE_URL")
        .output()
        .expect("vpr-broker audit verify");
    let text =
        format!("{}{}\n[{}]", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), out.status);
    (out.status.success(), text)
}

impl TestBroker {
    /// [`audit_verify`] with the broker's own public keys.
    pub fn audit_verifies(&self) -> (bool, String) {
        let jwks = self.dir.path().join("jwks-for-verify.json");
        std::fs::write(&jwks, self.jwks().to_string()).expect("write jwks");
        audit_verify(self, &jwks)
    }
}

/// Last month, `YYYY-MM` (UTC): the latest month the figures publish.
pub fn last_month() -> String {
    use chrono::Datelike;
    let first = chrono::Utc::now().date_naive().with_day(1).expect("the first of the month");
    (first - chrono::Duration::days(1)).format("%Y-%m").to_string()
}

/// A valid notice about a person by NHS number (test-range numbers, fictional).
pub fn person_notice(nhs: &str) -> Value {
    json!({
        "subject": {"person": {"nhs_number": nhs, "family_name": "Fictional", "given_name": "Alex"}},
        "category": "physical-assault",
        "aggravating_factors": ["racial-or-religious"],
        "medical_factor_operative": false,
        "risk_level": "high",
        "safety_advice": ["attend-with-police", "two-staff-minimum"],
        "advice_text": "Crew assaulted on attendance; approach with police.",
        "incident_date": day(-10),
        "review_date": day(180),
        "subject_informed": {"withheld_because": "informing would put staff at risk"},
        "lawful_basis": ["UKGDPR-6-1-c", "UKGDPR-9-2-h"],
        "restricted": {"incident_reference": "DATIX-0001"}
    })
}

/// A valid notice about an address in `postcode` (fictional).
pub fn address_notice(postcode: &str, line1: &str) -> Value {
    json!({
        "subject": {"address": {"postcode": postcode, "line1": line1}},
        "category": "threat-with-weapon",
        "medical_factor_operative": false,
        "risk_level": "high",
        "safety_advice": ["attend-with-police", "weapons-reported"],
        "advice_text": "Knife reported at the address.",
        "incident_date": day(-3),
        "review_date": day(120),
        "subject_informed": {"withheld_because": "informing would put staff at risk"},
        "lawful_basis": ["UKGDPR-6-1-c", "UKGDPR-9-2-h"]
    })
}

/// The Python interpreter with the independent checkers installed (`scripts/test` sets it up);
/// `None` outside CI when it is missing (the check is then skipped with a message).
#[allow(clippy::panic)]
pub fn python() -> Option<String> {
    match std::env::var("VPR_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("VPR_TEST_PYTHON is not set under CI=true: run the tests with scripts/test")
        }
        _ => {
            eprintln!("SKIPPING the independent checks: VPR_TEST_PYTHON is not set (run scripts/test)");
            None
        }
    }
}

/// Runs one of the checkers in `tests/e2e/tools` with `input` on stdin; returns its output, or
/// its error output if it failed.
pub fn run_checker(python: &str, script: &str, input: &Value) -> Result<Value, String> {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/tools").join(script);
    let mut child = Command::new(python)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the checker");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write");
    let out = child.wait_with_output().expect("checker output");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("checker JSON"))
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Validates FHIR resources (Bundles with everything in them) with the independent R4
/// checkers: HL7's R4 JSON Schema and the fhir.resources models.
#[allow(clippy::panic)]
pub fn assert_fhir_valid(resources: &[Value]) {
    let Some(python) = python() else { return };
    if std::env::var("VPR_TEST_FHIR_SCHEMA").is_err() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("VPR_TEST_FHIR_SCHEMA is not set under CI=true: run the tests with scripts/test");
        }
        eprintln!("SKIPPING the FHIR validation: VPR_TEST_FHIR_SCHEMA is not set (run scripts/test)");
        return;
    }
    match run_checker(&python, "fhir_check.py", &json!({ "resources": resources })) {
        Ok(out) => assert_eq!(out["checked"].as_u64(), Some(resources.len() as u64)),
        Err(e) => panic!("not valid FHIR R4:\n{e}"),
    }
}

pub fn json_of(r: Response) -> Value {
    r.json().expect("json body")
}

/// Validates a value against one of the repository's JSON Schemas.
pub fn assert_matches_schema(schema_file: &str, value: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(schema_file);
    let source = std::fs::read_to_string(path).expect("schema file");
    let validator = vpr_domain::validate::compile_schema(&source).expect("schema compiles");
    let errors = vpr_domain::validate::schema_errors(&validator, value);
    assert!(errors.is_empty(), "{schema_file}: {errors:?}\n{value:#}");
}

/// Ways of making the audit log unwritable under a running broker, to show that a request that
/// depends on its audit entry fails and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutage {
    /// The table is renamed away: every statement on it fails (as the read-path test does).
    Renamed,
    /// A trigger refuses every new row: the table stays readable and updatable, only the append
    /// of an entry fails.
    InsertsRefused,
}

impl AuditOutage {
    pub const ALL: [AuditOutage; 2] = [AuditOutage::Renamed, AuditOutage::InsertsRefused];
}

impl TestBroker {
    /// Makes the audit log unwritable in the way given.
    pub fn break_audit(&self, how: AuditOutage) {
        match (how, self.backend) {
            (AuditOutage::Renamed, _) => self.exec("ALTER TABLE audit_entries RENAME TO audit_entries_unwritable"),
            (AuditOutage::InsertsRefused, Backend::Sqlite) => self.exec(
                "CREATE TRIGGER e2e_audit_refused BEFORE INSERT ON audit_entries \
                 BEGIN SELECT RAISE(ABORT, 'e2e: the audit log refuses new entries'); END",
            ),
            (AuditOutage::InsertsRefused, Backend::Postgres) => {
                self.exec(
                    "CREATE OR REPLACE FUNCTION e2e_audit_refused() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'e2e: the audit log refuses new entries'; END $$",
                );
                self.exec(
                    "CREATE TRIGGER e2e_audit_refused BEFORE INSERT ON audit_entries \
                     FOR EACH ROW EXECUTE FUNCTION e2e_audit_refused()",
                );
            }
        }
    }

    /// Undoes `break_audit`.
    pub fn restore_audit(&self, how: AuditOutage) {
        match (how, self.backend) {
            (AuditOutage::Renamed, _) => self.exec("ALTER TABLE audit_entries_unwritable RENAME TO audit_entries"),
            (AuditOutage::InsertsRefused, Backend::Sqlite) => self.exec("DROP TRIGGER e2e_audit_refused"),
            (AuditOutage::InsertsRefused, Backend::Postgres) => {
                self.exec("DROP TRIGGER e2e_audit_refused ON audit_entries");
                self.exec("DROP FUNCTION e2e_audit_refused()");
            }
        }
    }

    /// A request as the ICB's IG lead (`icb-ig`, with `VPR-User-Id` and `VPR-User-Role`).
    pub fn as_ig(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        r.bearer_auth(self.token("icb-ig")).header("VPR-User-Id", "ig-lead-1").header("VPR-User-Role", "ig-lead")
    }

    /// Every audit entry, newest first, as the IG review API (`GET /v1/audit/entries`) shows
    /// them, following `next_before` page by page. (Each page read is itself audited.)
    pub fn audit_entries_via_review(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let r =
                self.as_ig(self.http.get(self.url(&format!("/v1/audit/entries?limit=500{cursor}")))).send().unwrap();
            assert_eq!(r.status(), 200, "the IG review search");
            let page: Value = r.json().expect("json");
            all.extend(page["entries"].as_array().expect("entries").iter().cloned());
            match page["next_before"].as_i64() {
                Some(before) => cursor = format!("&before={before}"),
                None => return all,
            }
        }
    }

    /// Waits until every committed audit entry is sealed into a checkpoint; returns its size.
    /// Moves every notice published and every disclosure counted so far into last month (see
    /// [`last_month`]), once the log is sealed, so that the figures, which publish complete
    /// months only, show them. Returns the month.
    pub fn move_to_last_month(&self) -> String {
        self.wait_sealed();
        let month = last_month();
        self.exec(&format!("UPDATE notices SET created_at = '{month}-15 12:00:00'"));
        self.exec(&format!("UPDATE figure_counts SET month = '{month}'"));
        month
    }

    pub fn wait_sealed(&self) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let total = self.count("audit_entries");
            let size = self
                .http
                .get(self.url("/v1/audit/checkpoints/latest"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .and_then(|v| v["tree_size"].as_i64());
            if size == Some(total) && total > 0 {
                return total;
            }
            assert!(Instant::now() < deadline, "the audit log was not sealed in time:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A request id unique to this run, naming what it is for: `e2e-<kind>-<32 hex digits>`
/// (the broker accepts ids of up to 64 letters, digits, `-`, `_` and `.`).
pub fn request_id(kind: &str) -> String {
    let id = format!("e2e-{kind}-{}", uuid::Uuid::new_v4().simple());
    assert!(id.len() <= 64, "request id too long: {id}");
    id
}

/// The content type of a response, or "".
pub fn content_type(r: &Response) -> String {
    r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}
