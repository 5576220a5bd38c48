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

/// The URL of a scratch database beside `url`'s, and its name.
fn scratch_url(url: &str) -> Result<(String, String)> {
    let name = format!("vpr_backup_check_{}", std::process::id());
    let (base, _) = url.rsplit_once('/').context("the PostgreSQL URL names no database")?;
    let query = url.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    Ok((format!("{base}/{name}{query}"), name))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what} (is it installed?)"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Checks a PostgreSQL dump by restoring it into a scratch database on the same server.
fn check_pg_dump(cfg: &Config, dump: &Path, vault: &vpr_store::Vault, jwks: &serde_json::Value) -> Result<Checked> {
    let (scratch, name) = scratch_url(&cfg.database_url)?;
    vpr_store::backup::scratch_database(&cfg.database_url, &name, true)
        .context("cannot create a scratch database to check the dump (the role needs CREATEDB)")?;
    let checked = (|| {
        run(
            Command::new("pg_restore").args(["--no-owner", "--exit-on-error", "--dbname"]).arg(&scratch).arg(dump),
            "pg_restore",
        )?;
        let store = Store::open(&scratch, 2, vault.clone())?;
        check(&store, jwks)
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
    std::fs::create_dir_all(out).with_context(|| format!("cannot create `{}`", out.display()))?;
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
            // The contents before the dump: the dump holds at least these (the broker goes on
            // writing); the check counts what it does hold.
            let before = store.contents()?;
            run(
                Command::new("pg_dump")
                    .args(["--format=custom", "--no-owner", "--file"])
                    .arg(&copy)
                    .arg(&cfg.database_url),
                "pg_dump",
            )?;
            let checked = check_pg_dump(cfg, &copy, store.vault(), jwks)?;
            (copy, checked, before, latest_checkpoint(store)?)
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
            run(
                Command::new("pg_restore")
                    .args(["--no-owner", "--exit-on-error", "--dbname"])
                    .arg(&cfg.database_url)
                    .arg(&file),
                "pg_restore",
            )?;
        }
    }
    let store = Store::open(&cfg.database_url, 2, vault)?;
    let checked = check(&store, jwks)?;
    let contents = store.contents()?;
    if contents.notices < manifest.contents.notices || contents.audit_entries < manifest.contents.audit_entries {
        bail!("the restored database holds less than the manifest says: {contents:?} against {:?}", manifest.contents);
    }
    let applied = store.migrate()?;
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
