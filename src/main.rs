//! vpr-broker: the binary. Reads configuration, hands each part its settings, and runs the
//! server, the background tasks, migrations or key generation.

mod backup;
mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use vpr_app::{App, Benchmark, NoticeSettings, SystemClock};
use vpr_auth::{BrokerKeys, Registry, SigningKeyFile, TokenService, TokenSettings};
use vpr_policy::Agreement;
use vpr_store::{DataKeyFile, Store, Vault};

use crate::config::Config;

// Many small allocations are freed on other threads than made them (database rows read on one
// thread and hashed on others; request bodies across the runtime's workers), which glibc's
// allocator serialises on its arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Federated broker for violence-risk notices between the partners of an Integrated Care System.
#[derive(Parser, Debug)]
#[command(name = "vpr-broker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Serve {
        /// Configuration file.
        #[arg(long, env = "VPR_CONFIG", default_value = "vpr-broker.toml")]
        config: PathBuf,
    },
    /// Run the broker in demo mode with the fictional demo ICS on SQLite (demo keys only).
    Demo {
        /// Demo configuration file.
        #[arg(long, default_value = "examples/demo-ics/broker.toml")]
        config: PathBuf,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        /// Configuration file.
        #[arg(long, env = "VPR_CONFIG", default_value = "vpr-broker.toml")]
        config: PathBuf,
    },
    /// Back up the database into a new folder while the broker serves (SQLite's online copy, or
    /// pg_dump), check the copy (the audit log verifies, every notice opens) and write its
    /// manifest.
    Backup {
        /// Configuration file (the database, and the keys the check needs).
        #[arg(long, env = "VPR_CONFIG", default_value = "vpr-broker.toml")]
        config: PathBuf,
        /// The backup folder: new, or empty.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into the configured database, which must be new or empty, then check it
    /// as the backup was checked and apply any newer migrations.
    Restore {
        /// Configuration file (the database to restore into, and the keys).
        #[arg(long, env = "VPR_CONFIG", default_value = "vpr-broker.toml")]
        config: PathBuf,
        /// The backup folder.
        #[arg(long)]
        from: PathBuf,
    },
    /// Generate keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the data-sharing agreement.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with the disclosure audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify the audit log offline: every entry against its seal, every signed checkpoint
    /// against the rebuilt tree. Needs no running broker and no data keys.
    Verify {
        /// The database (`sqlite://...` or `postgres://...`).
        #[arg(long, env = "VPR_DATABASE_URL", required_unless_present = "export", conflicts_with = "export")]
        database: Option<String>,
        /// Verify an export written by `audit export` instead of a database.
        #[arg(long)]
        export: Option<PathBuf>,
        /// The broker's public keys: a JWKS file (a saved copy of `/.well-known/jwks.json`).
        #[arg(long)]
        jwks: PathBuf,
    },
    /// Export the sealed audit log with its signed checkpoints, as stored (sealed fields stay
    /// sealed), to archive it or to verify it elsewhere with `audit verify --export`.
    Export {
        /// The database (`sqlite://...` or `postgres://...`).
        #[arg(long, env = "VPR_DATABASE_URL")]
        database: String,
        /// Where to write the export (NDJSON); refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate the agreement and its Cedar policies, and replay the ALLOW/DENY fixtures.
    Check {
        /// The agreement file.
        #[arg(long, default_value = "policies/agreement.json")]
        agreement: PathBuf,
        /// Also check a partner registry against the agreement.
        #[arg(long)]
        registry: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// A new ES256 signing key (private JWK). Add it first in `keys.signing_keys` to rotate.
    Signing {
        /// Key id.
        #[arg(long)]
        kid: String,
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
        /// Also write the public JWK here (for a partner registry entry).
        #[arg(long)]
        public_out: Option<PathBuf>,
        /// Mark the key demo-only: refused unless the broker runs in demo mode.
        #[arg(long)]
        demo_only: bool,
    },
    /// New data keys (identifier encryption and blind index).
    Data {
        /// Where to write them.
        #[arg(long)]
        out: PathBuf,
        /// Mark the keys demo-only.
        #[arg(long)]
        demo_only: bool,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPR_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("VPR_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.compact().init();
    }
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if path.exists() {
        bail!("`{}` exists: refusing to overwrite a key", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
}

fn load_data_keys(path: &Path) -> Result<DataKeyFile> {
    // Keys may come straight from the environment so they never touch the disk.
    let text = match std::env::var("VPR_DATA_KEYS") {
        Ok(inline) => inline,
        Err(_) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read data keys `{}`", path.display()))?
        }
    };
    serde_json::from_str(&text).context("data keys are not a valid key file")
}

/// Every partner must be a party of the agreement, with the same type, and every role a system
/// may assert must be one the agreement gives that type of organisation.
fn check_registry_against_agreement(registry: &Registry, agreement: &Agreement) -> Result<()> {
    let mut problems = Vec::new();
    for p in registry.partners() {
        match agreement.parties.get(p.ods_code.as_str()) {
            None => problems.push(format!("partner `{}` is not a party to the agreement", p.ods_code)),
            Some(party) if party.org_type != p.org_type => problems.push(format!(
                "partner `{}` is a {} in the registry but a {} in the agreement",
                p.ods_code, p.org_type, party.org_type
            )),
            Some(_) => {}
        }
    }
    for s in registry.systems() {
        if s.client_id == vpr_app::services::people::CONSOLE_CLIENT {
            problems.push(format!("system `{}`: that client id is the console's own", s.client_id));
        }
        let Some(p) = registry.partner(s.ods_code.as_str()) else { continue };
        for role in &s.roles {
            if !agreement.role_allowed(role, p.org_type) {
                problems.push(format!(
                    "system `{}` lists role `{role}`, which the agreement does not give a {}",
                    s.client_id, p.org_type
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("the registry does not fit the agreement:\n  {}", problems.join("\n  "))
    }
}

fn load_agreement(path: &Path) -> Result<Agreement> {
    let agreement = Agreement::load(path)?;
    if let Some(fixtures) = &agreement.fixtures_path {
        let text = std::fs::read_to_string(fixtures)
            .with_context(|| format!("cannot read fixtures `{}`", fixtures.display()))?;
        vpr_policy::fixtures::replay(&agreement, &text)?;
    }
    Ok(agreement)
}

fn data_vault(cfg: &Config) -> Result<Vault> {
    let keys = load_data_keys(&cfg.keys.data_keys)?;
    if keys.demo_only && !cfg.demo {
        bail!("the data keys are marked demo-only: refusing to run outside demo mode");
    }
    Ok(Vault::new(&keys)?)
}

fn open_store(cfg: &Config) -> Result<Store> {
    Ok(Store::open(&cfg.database_url, cfg.database_pool_size, data_vault(cfg)?)?)
}

/// The public keys of the broker's signing keys (current and previous): what checkpoints are
/// verified with.
fn broker_jwks(cfg: &Config) -> Result<serde_json::Value> {
    let (_, key_files) = load_registry_and_keys(cfg)?;
    let keys = BrokerKeys::new(&key_files)?;
    if keys.any_demo_only() && !cfg.demo {
        bail!("a signing key is marked demo-only: refusing to run outside demo mode");
    }
    Ok(keys.jwks())
}

/// The partner registry and the signing key files, refused if demo-only outside demo mode.
fn load_registry_and_keys(cfg: &Config) -> Result<(Registry, Vec<SigningKeyFile>)> {
    let registry_text = std::fs::read_to_string(&cfg.registry)
        .with_context(|| format!("cannot read registry `{}`", cfg.registry.display()))?;
    let registry = Registry::from_json(&registry_text)?;
    if registry.demo_only && !cfg.demo {
        bail!("the partner registry is marked demo-only: refusing to run outside demo mode");
    }
    let key_files = cfg
        .keys
        .signing_keys
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("cannot read signing key `{}`", p.display()))?;
            Ok(SigningKeyFile::from_json(&text)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((registry, key_files))
}

/// The peer brokers, each with its public keys (refused if any is invalid).
fn load_peers(cfg: &Config) -> Result<vpr_auth::Peers> {
    let Some(f) = &cfg.federation else { return Ok(vpr_auth::Peers::default()) };
    cfg.check_peer_urls()?;
    let mut peers = Vec::new();
    for p in &f.peers {
        let vouches = p.vouches_for.iter().map(|v| (v.ods_code.clone(), v.org_type)).collect();
        let (id, name, base) = (p.id.clone(), p.name.clone(), p.base_url.clone());
        let peer = match (&p.jwks, &p.jwks_url) {
            (Some(file), _) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("peer `{}`: cannot read its JWKS `{}`", p.id, file.display()))?;
                let jwks: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| format!("peer `{}`: its JWKS is not JSON", p.id))?;
                vpr_auth::Peer::new(id, name, base, vouches, &jwks)?
            }
            // Fetched once the broker runs (and refreshed): a peer that is down at start-up
            // must not keep this broker from starting.
            (None, Some(url)) => vpr_auth::Peer::with_keys_at(id, name, base, vouches, url.clone()),
            (None, None) => anyhow::bail!("peer `{}`: give `jwks` or `jwks_url`", p.id),
        };
        peers.push(peer);
    }
    Ok(vpr_auth::Peers::new(f.id.clone(), peers)?)
}

fn federation_settings(cfg: &Config) -> vpr_app::federation::FederationSettings {
    let defaults = vpr_app::federation::FederationSettings::default();
    match &cfg.federation {
        Some(f) => vpr_app::federation::FederationSettings {
            budget: Duration::from_millis(f.lookup_budget_ms),
            failures_to_open: f.circuit_failures,
            open_for: Duration::from_secs(f.circuit_open_seconds),
            jwks_refresh: Duration::from_secs(f.jwks_refresh_seconds),
            jwks_min_interval: Duration::from_secs(f.jwks_min_interval_seconds),
        },
        None => defaults,
    }
}

/// Delivery settings from the configuration (subscriptions may run as long as a notice may go
/// unreviewed).
fn delivery_settings(cfg: &Config, max_subscription_days: i64) -> Result<vpr_app::delivery::DeliverySettings> {
    let extra_roots_pem = match &cfg.delivery.ca_file {
        Some(p) => vec![std::fs::read(p).with_context(|| format!("cannot read `delivery.ca_file` `{}`", p.display()))?],
        None => Vec::new(),
    };
    Ok(vpr_app::delivery::DeliverySettings {
        retry_for: Duration::from_secs(cfg.delivery.retry_for_seconds),
        initial_backoff: Duration::from_millis(cfg.delivery.initial_backoff_ms),
        max_backoff: Duration::from_secs(cfg.delivery.max_backoff_seconds),
        timeout: Duration::from_millis(cfg.delivery.timeout_ms),
        concurrency: cfg.delivery.concurrency,
        lease: Duration::from_secs(cfg.delivery.lease_seconds),
        poll: Duration::from_millis(cfg.delivery.poll_ms),
        max_subscription_days,
        allow_insecure_webhooks: cfg.demo,
        min_heartbeat: Duration::from_secs(cfg.delivery.min_heartbeat_seconds),
        extra_roots_pem,
    })
}

/// The console's settings.
fn console_settings(cfg: &Config) -> Result<Option<vpr_http::console::ConsoleSettings>> {
    use vpr_http::console::{ClientAuth, ConsoleSettings};
    let Some(c) = &cfg.console else { return Ok(None) };
    let client_auth = if c.client_auth == "private_key_jwt" {
        ClientAuth::PrivateKeyJwt
    } else {
        // Read from its file, and checked (not demo-only outside demo mode), by `Config::load`.
        let Some(secret) = c.client_secret.clone() else {
            bail!("`console.client_secret` is required with `client_secret_basic`")
        };
        ClientAuth::Secret(secret)
    };
    Ok(Some(ConsoleSettings {
        issuer: c.issuer.clone(),
        client_id: c.client_id.clone(),
        client_auth,
        public_url: cfg.public_url.clone(),
        org_claim: c.org_claim.clone(),
        role_claim: c.role_claim.clone(),
        scopes: c.scopes.clone(),
        idle_timeout: Duration::from_secs(c.idle_timeout_minutes * 60),
        absolute_lifetime: Duration::from_secs(c.absolute_lifetime_hours * 3600),
    }))
}

/// Runs the HTTP edge and the workers until shutdown or until a worker ends; then stops the
/// workers within the grace period. A worker that ended or did not stop cleanly is an error.
async fn run_app(
    cfg: &Config,
    app: App,
    client: vpr_app::delivery::WebhookClient,
    delivery: &tokio::runtime::Handle,
) -> Result<()> {
    tracing::info!(database = app.store.backend().name(), public_url = %cfg.public_url, "vpr-broker starting");
    let schedule = vpr_app::tasks::Schedule {
        expire_notices: Duration::from_secs(cfg.notices.expiry_check_seconds),
        seal_audit: Duration::from_secs(1),
        retain_audit: Duration::from_secs(3600),
        expire_subscriptions: Duration::from_secs(60),
    };
    // Fan-out and webhook delivery run on a runtime of their own, so pushes to slow receivers
    // never hold up the HTTP workers.
    let mut workers = vpr_app::tasks::start(&app, schedule, client, delivery);
    let http_workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let grace = Duration::from_secs(cfg.shutdown_grace_seconds);
    let console = vpr_http::console::Console::new(console_settings(cfg)?, cfg.demo).map_err(anyhow::Error::msg)?;
    let l = &cfg.limits;
    let limits = vpr_http::limits::Limits::new(l.api, l.ig, l.token, l.public);
    let server = vpr_http::run(app, console, limits, &cfg.listen, http_workers, grace)?;
    let handle = server.handle();
    let mut failed = None;
    tokio::select! {
        served = server => served?,
        ended = workers.ended() => {
            tracing::error!(problem = %ended, "a background worker stopped: shutting down");
            failed = Some(ended);
            handle.stop(true).await;
        }
    }
    let problems = workers.stop(grace).await;
    for p in &problems {
        tracing::error!(problem = %p, "background worker did not stop cleanly");
    }
    if let Some(why) = failed.or_else(|| problems.first().cloned()) {
        bail!("stopped because {why}");
    }
    Ok(())
}

async fn serve(cfg: Config, delivery_runtime: tokio::runtime::Handle) -> Result<()> {
    if cfg.demo {
        tracing::warn!("DEMO MODE: fictional partners and demo-only keys are accepted; never use with real data");
    }
    if cfg.benchmark_unaudited_reads {
        tracing::warn!("BENCHMARK: look-ups are decided but NOT audited");
    }
    if cfg.benchmark_ungoverned_reads {
        tracing::warn!("BENCHMARK: look-ups are answered with NO policy decision and NO audit");
    }
    let (registry, key_files) = load_registry_and_keys(&cfg)?;
    let agreement = load_agreement(&cfg.agreement)?;
    check_registry_against_agreement(&registry, &agreement)?;
    tracing::info!(version = %agreement.version, clauses = agreement.clause_count(), "data-sharing agreement loaded");
    let keys = BrokerKeys::new(&key_files)?;
    if keys.any_demo_only() && !cfg.demo {
        bail!("a signing key is marked demo-only: refusing to run outside demo mode");
    }
    let store = open_store(&cfg)?;
    let applied = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.migrate()).await??
    };
    for m in &applied {
        tracing::info!(migration = %m, "migration applied");
    }
    let peers = load_peers(&cfg)?;
    peers.check_against(&registry)?;
    for p in peers.iter() {
        tracing::info!(peer = %p.id, url = %p.base_url, vouches_for = p.vouches_for.len(), "peer broker configured");
    }
    let tokens = TokenService::new(
        Arc::new(registry),
        Arc::new(keys),
        TokenSettings {
            issuer: cfg.public_url.clone(),
            access_token_ttl: Duration::from_secs(cfg.tokens.access_token_seconds),
            max_assertion_ttl: Duration::from_secs(cfg.tokens.max_assertion_seconds),
            leeway: Duration::from_secs(30),
        },
    )
    .with_peers(Arc::new(peers));
    let delivery = delivery_settings(&cfg, agreement.max_review_interval_days)?;
    let webhook_client = vpr_app::delivery::webhook_client(&delivery).map_err(anyhow::Error::msg)?;
    let app = App {
        store,
        tokens,
        notices: NoticeSettings { max_review_interval_days: agreement.max_review_interval_days },
        agreement: Arc::new(agreement),
        benchmark: Benchmark {
            ungoverned_reads: cfg.benchmark_ungoverned_reads,
            unaudited_reads: cfg.benchmark_unaudited_reads,
        },
        clock: Arc::new(SystemClock),
        metrics: vpr_app::metrics::Metrics::new()?,
        delivery: Arc::new(delivery),
        outbox: vpr_app::delivery::Outbox::default(),
        federation: vpr_app::federation::Federation::new(federation_settings(&cfg), webhook_client.clone())
            .map_err(anyhow::Error::msg)?,
    };
    run_app(&cfg, app, webhook_client, &delivery_runtime).await?;
    tracing::info!("vpr-broker stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpr-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config } => run_server(Config::load(&config)?),
        Command::Demo { config } => {
            let cfg = Config::load(&config)?;
            if !cfg.demo {
                bail!("`{}` is not a demo configuration (`demo = true`)", config.display());
            }
            run_server(cfg)
        }
        Command::Migrate { config } => {
            let cfg = Config::load(&config)?;
            let applied = open_store(&cfg)?.migrate()?;
            println!("{} migrations applied", applied.len());
            for m in applied {
                println!("  {m}");
            }
            Ok(())
        }
        Command::Backup { config, out } => {
            let cfg = Config::load(&config)?;
            let jwks = broker_jwks(&cfg)?;
            backup::backup(&cfg, &open_store(&cfg)?, &jwks, &out)
        }
        Command::Restore { config, from } => {
            let cfg = Config::load(&config)?;
            let jwks = broker_jwks(&cfg)?;
            backup::restore(&cfg, data_vault(&cfg)?, &jwks, &from)
        }
        Command::Keys(KeysCommand::Signing { kid, out, public_out, demo_only }) => {
            let key = SigningKeyFile::generate(&kid, demo_only)?;
            write_new(&out, &key.to_json())?;
            if let Some(p) = public_out {
                let public = vpr_auth::keys::public_jwk(&key.jwk)?;
                write_new(&p, &serde_json::to_string_pretty(public.as_ref())?)?;
            }
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Policy(PolicyCommand::Check { agreement, registry }) => policy_check(&agreement, registry.as_deref()),
        Command::Audit(AuditCommand::Export { database, out }) => audit_export(&database, &out),
        Command::Audit(AuditCommand::Verify { database, export, jwks }) => {
            audit_verify(database.as_deref(), export.as_deref(), &jwks)
        }
        Command::Keys(KeysCommand::Data { out, demo_only }) => {
            write_new(&out, &serde_json::to_string_pretty(&DataKeyFile::generate(demo_only))?)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

/// `vpr-broker policy check`: the agreement's clauses against the Cedar schema, its fixtures,
/// and optionally a registry against it.
fn policy_check(agreement: &std::path::Path, registry: Option<&std::path::Path>) -> Result<()> {
    let a = Agreement::load(agreement)?;
    println!("agreement {} ({}): {} clauses valid against the Cedar schema", a.version, a.title, a.clause_count());
    match &a.fixtures_path {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("cannot read `{}`", f.display()))?;
            let n = vpr_policy::fixtures::replay(&a, &text)?;
            println!("{n} ALLOW/DENY fixtures pass");
        }
        None => println!("no fixtures named"),
    }
    if let Some(r) = registry {
        let text = std::fs::read_to_string(r).with_context(|| format!("cannot read `{}`", r.display()))?;
        check_registry_against_agreement(&Registry::from_json(&text)?, &a)?;
        println!("registry {} fits the agreement", r.display());
    }
    Ok(())
}

/// `vpr-broker audit export`: the sealed log, for offline verification.
fn audit_export(database: &str, out: &std::path::Path) -> Result<()> {
    let mut conn = vpr_store::verify::connect(database)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create `{}` (it must not exist)", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let n = vpr_store::verify::export_audit(&mut conn, chrono::Utc::now(), &mut writer)?;
    std::io::Write::flush(&mut writer)?;
    println!("exported {n} sealed entries to {}", out.display());
    Ok(())
}

/// `vpr-broker audit verify`: the sealed log against its signed checkpoints.
fn audit_verify(database: Option<&str>, export: Option<&std::path::Path>, jwks: &std::path::Path) -> Result<()> {
    let jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(jwks).with_context(|| format!("cannot read `{}`", jwks.display()))?,
    )
    .context("the JWKS is not JSON")?;
    let open = |jws: &str| -> Result<(i64, vpr_audit::merkle::Hash), String> {
        let (size, root) = vpr_auth::keys::open_checkpoint(&jwks, jws)?;
        let hash = vpr_audit::parse_hash(&root).ok_or("the root hash is not hex")?;
        Ok((size, hash))
    };
    let started = std::time::Instant::now();
    // Verification reads stored bytes only (it never decrypts) over one plain connection.
    let report = match (export, database) {
        (Some(path), _) => {
            let file = std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            vpr_store::verify::verify_export(std::io::BufReader::new(file), &open)?
        }
        (None, Some(database)) => vpr_store::verify::verify_audit(&mut vpr_store::verify::connect(database)?, &open)?,
        (None, None) => bail!("give `--database` or `--export`"),
    };
    println!(
        "{} sealed entries ({} pruned under retention), {} pending, {} signed checkpoints checked in {:.2}s",
        report.entries,
        report.pruned,
        report.unsealed,
        report.checkpoints,
        started.elapsed().as_secs_f64()
    );
    if report.problems.is_empty() {
        println!("the audit log verifies");
        Ok(())
    } else {
        for p in &report.problems {
            println!("PROBLEM: {p}");
        }
        bail!(
            "the audit log does not verify: {} problem(s), first: {}",
            report.problems.len(),
            report.problems.first().cloned().unwrap_or_default()
        )
    }
}

fn run_server(cfg: Config) -> Result<()> {
    let delivery = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("delivery")
        .enable_all()
        .build()
        .context("cannot start the delivery runtime")?;
    let result = actix_web::rt::System::new().block_on(serve(cfg, delivery.handle().clone()));
    // Pushes cut short here are sent again after a restart (receivers de-duplicate by event id).
    delivery.shutdown_timeout(Duration::from_secs(2));
    result
}
