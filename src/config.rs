//! Broker configuration: a versioned TOML file, overlaid by `VPR_*` environment variables,
//! validated against `schemas/broker-config.schema.json`. Only the binary reads configuration;
//! each part is handed its own settings.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// The configuration's JSON Schema.
pub const CONFIG_SCHEMA: &str = include_str!("../schemas/broker-config.schema.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[allow(dead_code)]
    pub config_version: u32,
    #[serde(default)]
    pub demo: bool,
    #[serde(default = "default_listen")]
    pub listen: String,
    pub public_url: String,
    pub database_url: String,
    #[serde(default = "default_pool")]
    pub database_pool_size: u32,
    pub registry: PathBuf,
    pub agreement: PathBuf,
    pub keys: KeysConfig,
    #[serde(default)]
    pub notices: NoticesConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    #[serde(default)]
    pub federation: Option<FederationConfig>,
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    #[serde(default)]
    pub benchmark_ungoverned_reads: bool,
    #[serde(default)]
    pub benchmark_unaudited_reads: bool,
}

/// The console's sign-in at the ICS's OpenID Provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub issuer: String,
    pub client_id: String,
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_org_claim")]
    pub org_claim: String,
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    #[serde(default = "default_console_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_idle_minutes")]
    pub idle_timeout_minutes: u64,
    #[serde(default = "default_absolute_hours")]
    pub absolute_lifetime_hours: u64,
}

fn default_client_auth() -> String {
    "client_secret_basic".into()
}
fn default_org_claim() -> String {
    "ods_code".into()
}
fn default_role_claim() -> String {
    "console_role".into()
}
fn default_console_scopes() -> Vec<String> {
    vec!["profile".into(), "vpr".into()]
}
fn default_idle_minutes() -> u64 {
    15
}
fn default_absolute_hours() -> u64 {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub signing_keys: Vec<PathBuf>,
    pub data_keys: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    pub id: String,
    #[serde(default = "default_budget")]
    pub lookup_budget_ms: u64,
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    #[serde(default = "default_circuit_open")]
    pub circuit_open_seconds: u64,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    #[serde(default = "default_jwks_min_interval")]
    pub jwks_min_interval_seconds: u64,
    pub peers: Vec<PeerConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: String,
    pub name: String,
    pub base_url: String,
    pub jwks: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub vouches_for: Vec<VouchConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VouchConfig {
    pub ods_code: String,
    #[serde(rename = "type")]
    pub org_type: vpr_domain::vocab::OrgType,
}

fn default_budget() -> u64 {
    300
}
fn default_circuit_failures() -> u32 {
    3
}
fn default_circuit_open() -> u64 {
    30
}
fn default_jwks_refresh() -> u64 {
    3600
}
fn default_jwks_min_interval() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesConfig {
    #[serde(default = "default_expiry")]
    pub expiry_check_seconds: u64,
}

impl Default for NoticesConfig {
    fn default() -> Self {
        Self { expiry_check_seconds: default_expiry() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    #[serde(default = "default_access")]
    pub access_token_seconds: u64,
    #[serde(default = "default_assertion")]
    pub max_assertion_seconds: u64,
}

/// Back-pressure: the default token buckets (`vpr_http::limits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_api_rate")]
    pub api: vpr_auth::Rate,
    #[serde(default = "default_ig_rate")]
    pub ig: vpr_auth::Rate,
    #[serde(default = "default_token_rate")]
    pub token: vpr_auth::Rate,
    #[serde(default = "default_public_rate")]
    pub public: vpr_auth::Rate,
}

fn default_api_rate() -> vpr_auth::Rate {
    vpr_auth::Rate { per_second: 100.0, burst: 200 }
}
fn default_ig_rate() -> vpr_auth::Rate {
    vpr_auth::Rate { per_second: 10.0, burst: 30 }
}
fn default_token_rate() -> vpr_auth::Rate {
    vpr_auth::Rate { per_second: 20.0, burst: 100 }
}
fn default_public_rate() -> vpr_auth::Rate {
    vpr_auth::Rate { per_second: 50.0, burst: 200 }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            api: default_api_rate(),
            ig: default_ig_rate(),
            token: default_token_rate(),
            public: default_public_rate(),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self { access_token_seconds: default_access(), max_assertion_seconds: default_assertion() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_retry_for")]
    pub retry_for_seconds: u64,
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    #[serde(default = "default_min_heartbeat")]
    pub min_heartbeat_seconds: u64,
    pub ca_file: Option<PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry_for_seconds: default_retry_for(),
            initial_backoff_ms: default_initial_backoff(),
            max_backoff_seconds: default_max_backoff(),
            timeout_ms: default_timeout(),
            concurrency: default_concurrency(),
            lease_seconds: default_lease(),
            poll_ms: default_poll(),
            min_heartbeat_seconds: default_min_heartbeat(),
            ca_file: None,
        }
    }
}

fn default_retry_for() -> u64 {
    72 * 3600
}
fn default_initial_backoff() -> u64 {
    1000
}
fn default_max_backoff() -> u64 {
    3600
}
fn default_timeout() -> u64 {
    10_000
}
fn default_concurrency() -> usize {
    128
}
fn default_lease() -> u64 {
    30
}
fn default_poll() -> u64 {
    250
}
fn default_min_heartbeat() -> u64 {
    10
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_pool() -> u32 {
    8
}
fn default_grace() -> u64 {
    30
}
fn default_expiry() -> u64 {
    60
}
fn default_access() -> u64 {
    300
}
fn default_assertion() -> u64 {
    300
}

/// Environment variables that override the file, by the config key they set.
const OVERLAY: &[(&str, &str)] = &[
    ("VPR_LISTEN", "listen"),
    ("VPR_PUBLIC_URL", "public_url"),
    ("VPR_DATABASE_URL", "database_url"),
    ("VPR_REGISTRY", "registry"),
    ("VPR_AGREEMENT", "agreement"),
];

impl Config {
    /// Loads the file, applies the environment overlay, validates, and resolves relative paths
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config `{}`", path.display()))?;
        let toml_value: toml::Value =
            toml::from_str(&text).with_context(|| format!("config `{}` is not TOML", path.display()))?;
        let Value::Object(mut doc) = serde_json::to_value(toml_value)? else {
            bail!("config `{}` must be a TOML table", path.display());
        };
        for (var, key) in OVERLAY {
            if let Ok(v) = std::env::var(var) {
                doc.insert((*key).to_owned(), Value::String(v));
            }
        }
        if let Ok(v) = std::env::var("VPR_DEMO") {
            doc.insert("demo".into(), Value::Bool(v == "true" || v == "1"));
        }
        let keys = doc.entry("keys").or_insert_with(|| Value::Object(serde_json::Map::new()));
        if let Value::Object(keys) = keys {
            if let Ok(v) = std::env::var("VPR_DATA_KEYS_FILE") {
                keys.insert("data_keys".into(), Value::String(v));
            }
            if let Ok(v) = std::env::var("VPR_SIGNING_KEYS") {
                let list = v.split(',').map(|s| Value::String(s.trim().to_owned())).collect();
                keys.insert("signing_keys".into(), Value::Array(list));
            }
        }
        let doc = Value::Object(doc);
        let validator = vpr_domain::validate::compile_schema(CONFIG_SCHEMA).map_err(anyhow::Error::msg)?;
        let errs = vpr_domain::validate::schema_errors(&validator, &doc);
        if !errs.is_empty() {
            let list: Vec<String> =
                errs.iter().map(|e| format!("  {} ({}): {}", e.pointer, e.rule, e.detail)).collect();
            bail!("config `{}` is invalid:\n{}", path.display(), list.join("\n"));
        }
        let mut cfg: Config = serde_json::from_value(doc)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.registry = base.join(&cfg.registry);
        cfg.agreement = base.join(&cfg.agreement);
        cfg.keys.data_keys = base.join(&cfg.keys.data_keys);
        cfg.keys.signing_keys = cfg.keys.signing_keys.iter().map(|p| base.join(p)).collect();
        cfg.delivery.ca_file = cfg.delivery.ca_file.as_ref().map(|p| base.join(p));
        if let Some(c) = &mut cfg.console {
            c.client_secret_file = c.client_secret_file.as_ref().map(|p| base.join(p));
            if let Ok(secret) = std::env::var("VPR_CONSOLE_CLIENT_SECRET") {
                c.client_secret = Some(secret);
            }
            if let (None, Some(path)) = (&c.client_secret, &c.client_secret_file) {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read `console.client_secret_file` `{}`", path.display()))?;
                c.client_secret = Some(text.trim().to_owned());
            }
        }
        if let Some(f) = &mut cfg.federation {
            for peer in &mut f.peers {
                peer.jwks = peer.jwks.as_ref().map(|j| base.join(j));
            }
        }
        if let Some(rel) = cfg.database_url.strip_prefix("sqlite://") {
            if !Path::new(rel).is_absolute() {
                cfg.database_url = format!("sqlite://{}", base.join(rel).display());
            }
        }
        cfg.public_url = cfg.public_url.trim_end_matches('/').to_owned();
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        if self.benchmark_ungoverned_reads && !self.demo {
            bail!("`benchmark_ungoverned_reads` switches off the policy decision and audit: it is refused outside demo mode");
        }
        if self.benchmark_unaudited_reads && !self.demo {
            bail!("`benchmark_unaudited_reads` switches off the audit: it is refused outside demo mode");
        }
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
        let plain = |url: &str| url.starts_with("http://") && !loopback.iter().any(|p| url.starts_with(p));
        if !self.demo && plain(&self.public_url) {
            bail!("`public_url` must be https outside demo mode (plain http is allowed only on loopback)");
        }
        if let Some(c) = &self.console {
            if !self.demo && plain(&c.issuer) {
                bail!("`console.issuer` must be https outside demo mode (plain http is allowed only on loopback)");
            }
            if c.client_auth == "client_secret_basic" && c.client_secret.is_none() {
                bail!("`console.client_secret` (or `client_secret_file`, or VPR_CONSOLE_CLIENT_SECRET) is required with `client_secret_basic`");
            }
            if !self.demo && c.client_secret.as_deref().is_some_and(|s| s.starts_with("demo-only")) {
                bail!("`console.client_secret` is a demo-only secret: it is refused outside demo mode");
            }
        }
        Ok(())
    }

    /// Peers must be reached over https outside demo mode. (Checked when the peers are loaded,
    /// after the keys: a demo configuration outside demo mode is refused for its keys first.)
    pub fn check_peer_urls(&self) -> Result<()> {
        for peer in self.federation.iter().flat_map(|f| &f.peers) {
            if !self.demo && !peer.base_url.starts_with("https://") {
                bail!("peer `{}`: `base_url` must be https outside demo mode", peer.id);
            }
            if !self.demo && peer.jwks_url.as_ref().is_some_and(|u| !u.starts_with("https://")) {
                bail!("peer `{}`: `jwks_url` must be https outside demo mode", peer.id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(extra: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            format!(
                "config_version = 1\npublic_url = \"https://vpr.example\"\ndatabase_url = \"sqlite://vpr.db\"\n\
                 registry = \"r.json\"\nagreement = \"a.json\"\n{extra}\n[keys]\nsigning_keys = [\"s.jwk\"]\ndata_keys = \"d.json\"\n"
            ),
        )
        .unwrap();
        Config::load(&path)
    }

    #[test]
    fn benchmark_switches_are_refused_outside_demo_mode() {
        assert!(load("").is_ok());
        for switch in ["benchmark_ungoverned_reads", "benchmark_unaudited_reads"] {
            let err = load(&format!("{switch} = true")).unwrap_err().to_string();
            assert!(err.contains(switch) && err.contains("demo mode"), "{err}");
            assert!(load(&format!("demo = true\n{switch} = true")).is_ok());
        }
    }

    #[test]
    fn an_invalid_peer_entry_is_refused() {
        let peer = |url: &str, extra: &str| {
            format!(
                "[federation]\nid = \"XIC01\"\n[[federation.peers]]\nid = \"YIC01\"\nname = \"West\"\nbase_url = \"{url}\"\n\
                 jwks = \"west.jwks.json\"\nvouches_for = [{{ ods_code = \"YAM01\", type = \"ambulance-trust\" }}]\n{extra}"
            )
        };
        assert!(load(&peer("https://west.example", "")).unwrap().check_peer_urls().is_ok());
        let plain = load(&peer("http://west.example", "")).unwrap().check_peer_urls().unwrap_err().to_string();
        assert!(plain.contains("https"), "{plain}");
        let unknown = load(&peer("https://west.example", "colour = \"red\"")).unwrap_err().to_string();
        assert!(unknown.contains("/federation/peers/0"), "{unknown}");
        let bad_type =
            load(&peer("https://west.example", "").replace("ambulance-trust", "hospital")).unwrap_err().to_string();
        assert!(bad_type.contains("vouches_for"), "{bad_type}");
        // Keys from a file or from a URL, exactly one of them; the URL https outside demo mode.
        let by_url = |url: &str| {
            peer("https://west.example", "").replace("jwks = \"west.jwks.json\"", &format!("jwks_url = \"{url}\""))
        };
        let cfg = load(&by_url("https://west.example/.well-known/jwks.json")).unwrap();
        assert!(cfg.check_peer_urls().is_ok());
        assert!(cfg.federation.unwrap().peers[0].jwks.is_none());
        let plain = load(&by_url("http://west.example/jwks")).unwrap().check_peer_urls().unwrap_err().to_string();
        assert!(plain.contains("jwks_url") && plain.contains("https"), "{plain}");
        let both = peer("https://west.example", "jwks_url = \"https://west.example/jwks\"");
        assert!(load(&both).unwrap_err().to_string().contains("/federation/peers/0"));
        let neither = peer("https://west.example", "").replace("jwks = \"west.jwks.json\"\n", "");
        assert!(load(&neither).unwrap_err().to_string().contains("/federation/peers/0"));
    }

    #[test]
    fn an_invalid_console_entry_is_refused() {
        let console = |issuer: &str, secret: &str| {
            format!("[console]\nissuer = \"{issuer}\"\nclient_id = \"vpr-console\"\nclient_secret = \"{secret}\"")
        };
        let ok = load(&console("https://login.example", "a-real-secret-of-some-length")).unwrap();
        let c = ok.console.unwrap();
        assert_eq!(
            (c.org_claim.as_str(), c.role_claim.as_str(), c.idle_timeout_minutes),
            ("ods_code", "console_role", 15)
        );
        let plain = load(&console("http://login.example", "a-real-secret-of-some-length")).unwrap_err().to_string();
        assert!(plain.contains("console.issuer") && plain.contains("https"), "{plain}");
        let demo = load(&console("https://login.example", "demo-only-console-secret")).unwrap_err().to_string();
        assert!(demo.contains("demo-only"), "{demo}");
        assert!(load(&format!("demo = true\n{}", console("http://127.0.0.1:8090", "demo-only-console-secret"))).is_ok());
        let no_secret = load("[console]\nissuer = \"https://login.example\"\nclient_id = \"vpr-console\"").unwrap_err();
        assert!(no_secret.to_string().contains("client_secret"), "{no_secret}");
        let short = load(&console("https://login.example", "short")).unwrap_err().to_string();
        assert!(short.contains("/console/client_secret"), "{short}");
        let unknown =
            load(&format!("{}\ncolour = \"red\"", console("https://login.example", "a-real-secret-of-some-length")));
        assert!(unknown.unwrap_err().to_string().contains("/console"));
    }
}
