//! `vpr-broker backup` and `vpr-broker restore`: a copy of the database that proves itself.
//!
//! A backup is a folder: the copy (SQLite's online `VACUUM INTO`, or PostgreSQL's `pg_dump` in
//! its custom format) and `manifest.json` (what it holds, its SHA-256, the latest signed
//! checkpoint). Both commands end by checking a copy as a restore must find it: the audit log
//! verifies against its signed checkpoints, and every version of every notice opens with the
//! data keys. A backup checks its own copy (a PostgreSQL dump is restored into a scratch
//! database, checked and dropped); a restore refuses a target that is not empty.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vpr_store::backup::Contents;
use vpr_store::Store;

use crate::config::Config;

const MANIFEST: &str = "manifest.json";
const SQLITE_COPY: &str = "vpr.db";
const PG_COPY: &str = "vpr.pgdump";

/// What a backup folder holds.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    broker_version: String,
    backend: String,
    created_at: chrono::DateTime<chrono::Utc>,
    file: String,
    bytes: u64,
    sha256: String,
    contents: Contents,
    /// The latest signed checkpoint in the copy: `(tree_size, root_hash)`.
    checkpoint: Option<(i64, String)>,
    /// What the check of the copy found.
    checked: Checked,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checked {
    audit_entries_verified: u64,
    checkpoints_verified: u64,
    notice_versions_read: i64,
}

fn sha256_of(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((bytes, hex::encode(hasher.finalize())))
}

/// The audit log verifies against its signed checkpoints and every notice opens: what was
/// checked.
fn check(store: &Store, jwks: &serde_json::Value) -> Result<Checked> {
    let open = |jws: &str| -> Result<(i64, vpr_audit::merkle::Hash), String> {
        let (size, root) = vpr_auth::keys::open_checkpoint(jwks, jws)?;
        Ok((size, vpr_audit::parse_hash(&root).ok_or("the root hash is not hex")?))
    };
    let report = store.verify_audit(&open)?;
    if let Some(p) = report.problems.first() {
        bail!("the audit log in the copy does not verify ({} problems), first: {p}", report.problems.len());
    }
    let read = store.read_every_notice().context("a notice in the copy does not open with the data keys")?;
    Ok(Checked {
        audit_entries_verified: report.entries,
        checkpoints_verified: report.checkpoints,
        notice_versions_read: read,
    })
}

fn latest_checkpoint(store: &Store) -> Result<Option<(i64, String)>> {
    Ok(store.latest_checkpoint()?.map(|c| (c.tree_size, c.root_hash)))
}

/// A PostgreSQL URL in parts: `postgres://[user[:password]@]host[:port]/database[?query]`.
struct PgUrl {
    scheme: String,
    user: String,
    password: Option<String>,
    host: String,
    database: String,
    query: String,
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(*b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl PgUrl {
    fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").context("not a PostgreSQL URL")?;
        let (rest, query) = rest.split_once('?').map_or((rest, String::new()), |(r, q)| (r, format!("?{q}")));
        let (authority, database) = rest.split_once('/').context("the PostgreSQL URL names no database")?;
        let (userinfo, host) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(percent_decoded(p))),
            None => (userinfo.to_owned(), None),
        };
        Ok(Self { scheme: scheme.into(), user, password, host: host.into(), database: database.into(), query })
    }

    /// The URL of `database` on this server without the password, which goes to the tools as
    /// `PGPASSWORD`, never on a command line another local user can read.
    fn without_password(&self, database: &str) -> String {
        let user = if self.user.is_empty() { String::new() } else { format!("{}@", self.user) };
        format!("{}://{user}{}/{database}{}", self.scheme, self.host, self.query)
    }

    /// The URL of `database` on this server with the password (the broker's own connection).
    fn with_password(&self, database: &str) -> String {
        let user = match &self.password {
            Some(p) => {
                let p = p.replace('%', "%25").replace('@', "%40").replace(':', "%3A").replace('/', "%2F");
                format!("{}:{p}@", self.user)
            }
            None if self.user.is_empty() => String::new(),
            None => format!("{}@", self.user),
        };
        format!("{}://{user}{}/{database}{}", self.scheme, self.host, self.query)
    }
}

/// `pg_dump` or `pg_restore`, given the password (if any) in its environment.
fn pg_tool(tool: &str, url: &PgUrl) -> Command {
    let mut c = Command::new(tool);
    if let Some(p) = &url.password {
        c.env("PGPASSWORD", p);
    }
    c
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what} (is it installed?)"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// What the check of a copy found, what the copy holds, and its latest signed checkpoint.
type Described = (Checked, Contents, Option<(i64, String)>);

/// Checks a PostgreSQL dump by restoring it into a scratch database on the same server.
fn check_pg_dump(cfg: &Config, dump: &Path, vault: &vpr_store::Vault, jwks: &serde_json::Value) -> Result<Described> {
    let url = PgUrl::parse(&cfg.database_url)?;
    let name = format!("vpr_backup_check_{}", std::process::id());
    vpr_store::backup::scratch_database(&cfg.database_url, &name, true)
        .context("cannot create a scratch database to check the dump (the role needs CREATEDB)")?;
    let checked = (|| {
        let mut restore = pg_tool("pg_restore", &url);
        restore.args(["--no-owner", "--exit-on-error", "--dbname"]).arg(url.without_password(&name)).arg(dump);
        run(&mut restore, "pg_restore")?;
        let store = Store::open(&url.with_password(&name), 2, vault.clone())?;
        Ok((check(&store, jwks)?, store.contents()?, latest_checkpoint(&store)?))
    })();
    let _ = vpr_store::backup::scratch_database(&cfg.database_url, &name, false);
    checked
}

/// `vpr-broker backup --out DIR`: copies the configured database while the broker serves,
/// checks the copy and writes its manifest.
pub fn backup(cfg: &Config, store: &Store, jwks: &serde_json::Value, out: &Path) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("`{}` is not empty: a backup goes into a new folder", out.display());
    }
    // As sensitive as the database: readable by its owner only.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(out)
        .with_context(|| format!("cannot create `{}`", out.display()))?;
    let backend = store.backend();
    let (file, checked, contents, checkpoint) = match backend {
        vpr_store::db::Backend::Sqlite => {
            let copy = out.join(SQLITE_COPY);
            store.sqlite_snapshot(&copy)?;
            // Checked on a scratch copy: opening a database changes its file.
            let scratch = out.join(format!(".check-{}.db", std::process::id()));
            std::fs::copy(&copy, &scratch)?;
            let checked = (|| {
                let opened = Store::open(&format!("sqlite://{}", scratch.display()), 2, store.vault().clone())?;
                Ok::<_, anyhow::Error>((check(&opened, jwks)?, opened.contents()?, latest_checkpoint(&opened)?))
            })();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
            }
            let (checked, contents, checkpoint) = checked?;
            (copy, checked, contents, checkpoint)
        }
        vpr_store::db::Backend::Postgres => {
            let copy = out.join(PG_COPY);
            let url = PgUrl::parse(&cfg.database_url)?;
            let mut dump = pg_tool("pg_dump", &url);
            dump.args(["--format=custom", "--no-owner", "--file"]).arg(&copy).arg(url.without_password(&url.database));
            run(&mut dump, "pg_dump")?;
            // Described from the copy itself, restored into a scratch database.
            let (checked, contents, checkpoint) = check_pg_dump(cfg, &copy, store.vault(), jwks)?;
            (copy, checked, contents, checkpoint)
        }
    };
    let (bytes, sha256) = sha256_of(&file)?;
    let manifest = Manifest {
        format: "vpr-broker-backup/1".into(),
        broker_version: env!("CARGO_PKG_VERSION").into(),
        backend: backend.name().into(),
        created_at: chrono::Utc::now(),
        file: file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        bytes,
        sha256,
        contents,
        checkpoint,
        checked: checked.clone(),
    };
    std::fs::write(out.join(MANIFEST), serde_json::to_string_pretty(&manifest)?)?;
    println!(
        "backed up {} notices ({} versions opened) and {} audit entries ({} verified against {} signed checkpoints) to {}",
        manifest.contents.notices,
        checked.notice_versions_read,
        manifest.contents.audit_entries,
        checked.audit_entries_verified,
        checked.checkpoints_verified,
        out.display()
    );
    Ok(())
}

/// `vpr-broker restore --from DIR`: brings a backup back into the configured database, which
/// must be empty, then checks it as `backup` did and applies any newer migrations.
pub fn restore(cfg: &Config, vault: vpr_store::Vault, jwks: &serde_json::Value, from: &Path) -> Result<()> {
    let text = std::fs::read_to_string(from.join(MANIFEST))
        .with_context(|| format!("`{}` has no {MANIFEST}: not a backup", from.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).context("the manifest cannot be read")?;
    if manifest.format != "vpr-broker-backup/1" {
        bail!("`{}` is not a backup this broker reads", manifest.format);
    }
    let file: PathBuf = from.join(&manifest.file);
    let (_, sha256) = sha256_of(&file)?;
    if sha256 != manifest.sha256 {
        bail!("`{}` does not match its manifest (SHA-256 differs): the backup is damaged", file.display());
    }
    let (backend, target) = vpr_store::db::Backend::from_url(&cfg.database_url)?;
    if backend.name() != manifest.backend {
        bail!("the backup is of a {} database; the configuration names a {} one", manifest.backend, backend.name());
    }
    match backend {
        vpr_store::db::Backend::Sqlite => {
            if Path::new(&target).exists() {
                bail!("`{target}` exists: a restore goes into a new database");
            }
            if let Some(dir) = Path::new(&target).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(&file, &target).with_context(|| format!("cannot write `{target}`"))?;
        }
        vpr_store::db::Backend::Postgres => {
            if !Store::open(&cfg.database_url, 2, vault.clone())?.is_blank()? {
                bail!("the target database is not empty: a restore goes into a new database");
            }
            let url = PgUrl::parse(&cfg.database_url)?;
            let mut restore = pg_tool("pg_restore", &url);
            restore
                .args(["--no-owner", "--exit-on-error", "--dbname"])
                .arg(url.without_password(&url.database))
                .arg(&file);
            run(&mut restore, "pg_restore").context(
                "the target database may now hold part of the backup: drop and create it again before retrying",
            )?;
        }
    }
    let restored = (|| {
        let store = Store::open(&cfg.database_url, 2, vault)?;
        // A backup of an older schema is brought up to this broker's before it is read.
        let applied = store.migrate()?;
        let checked = check(&store, jwks)?;
        let contents = store.contents()?;
        if contents.notices < manifest.contents.notices || contents.audit_entries < manifest.contents.audit_entries {
            bail!(
                "the restored database holds less than the manifest says: {contents:?} against {:?}",
                manifest.contents
            );
        }
        Ok((applied, checked, contents))
    })();
    let (applied, checked, contents) = match restored {
        Ok(r) => r,
        Err(e) => {
            if backend == vpr_store::db::Backend::Sqlite {
                // Not left half-restored: the file this restore made goes, so a retry can run.
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{target}{suffix}"));
                }
            }
            return Err(e);
        }
    };
    println!(
        "restored {} notices ({} versions opened) and {} audit entries ({} verified against {} signed checkpoints) from {}{}",
        contents.notices,
        checked.notice_versions_read,
        contents.audit_entries,
        checked.audit_entries_verified,
        checked.checkpoints_verified,
        from.display(),
        if applied.is_empty() { String::new() } else { format!("; {} newer migrations applied", applied.len()) }
    );
    Ok(())
}
