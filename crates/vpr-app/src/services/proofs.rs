//! Proofs over the sealed audit log (RFC 9162): that an entry is in a checkpointed tree, and
//! that a later tree extends an earlier one; and the same, checked, for the console's entry and
//! log-integrity pages.

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vpr_audit::merkle;
use vpr_domain::audit::AuditAction;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};
use vpr_store::seal::Checkpoint;
use vpr_store::verify::SealedEntry;

use crate::audit::{caller_entry, MANAGEMENT_PURPOSE};
use crate::caller::{Caller, Reviewer};
use crate::error::{AppError, AppResult};
use crate::App;

/// An inclusion proof.
#[derive(Debug)]
pub struct Inclusion {
    /// The leaf's hash.
    pub leaf: [u8; 32],
    /// The audit path, leaf first.
    pub path: Vec<[u8; 32]>,
}

fn checkpointed(app: &App, param: &str, size: i64) -> AppResult<()> {
    let latest = app.store.latest_checkpoint()?.map(|c| c.tree_size).unwrap_or(0);
    if size < 1 || size > latest {
        return Err(AppError::invalid(
            format!("/{param}"),
            "tree-size",
            format!("the tree size must be between 1 and the latest checkpoint's ({latest})"),
        ));
    }
    Ok(())
}

fn unproven() -> AppError {
    AppError::Internal("the proof could not be computed from the stored leaves".into())
}

impl App {
    /// The audit path proving entry `index` is in the tree of `size` entries. A proof that
    /// cannot be computed is an internal error, never an empty path.
    pub async fn inclusion_proof(&self, index: i64, size: i64) -> AppResult<Inclusion> {
        self.blocking(move |app| {
            checkpointed(app, "tree_size", size)?;
            let leaves = app.store.leaf_hashes(size)?;
            let i = usize::try_from(index).ok().filter(|i| *i < leaves.len()).ok_or_else(|| {
                AppError::invalid("/leaf_index", "leaf-index", "`leaf_index` must be below `tree_size`")
            })?;
            let path = merkle::inclusion_proof(i, &leaves).ok_or_else(unproven)?;
            let leaf = leaves.get(i).copied().ok_or_else(unproven)?;
            Ok(Inclusion { leaf, path })
        })
        .await
    }

    /// The proof that the tree of `second` entries extends the tree of `first`.
    pub async fn consistency_proof(&self, first: i64, second: i64) -> AppResult<Vec<[u8; 32]>> {
        self.blocking(move |app| {
            checkpointed(app, "second", second)?;
            if first < 1 || first > second {
                return Err(AppError::invalid("/first", "first", "`first` must be 1 to `second`"));
            }
            let leaves = app.store.leaf_hashes(second)?;
            let first = usize::try_from(first).map_err(|_| unproven())?;
            merkle::consistency_proof(first, &leaves).ok_or_else(unproven)
        })
        .await
    }
}

/// A signed checkpoint, opened and checked with the broker's own keys.
#[derive(Debug, Clone)]
pub struct CheckedCheckpoint {
    /// Entries in the tree.
    pub tree_size: i64,
    /// The root hash (hex).
    pub root_hash: String,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
    /// Whether its signature verifies with one of the broker's keys and says this size and root.
    pub signature_ok: bool,
}

/// One entry, and the proof that it is in the log as it was sealed.
#[derive(Debug, Clone)]
pub struct EntryProof {
    /// The entry.
    pub entry: StoredAuditEntry,
    /// Its leaf hash as sealed (hex), once sealed.
    pub leaf: Option<String>,
    /// Whether what is stored now still hashes to the sealed leaf.
    pub content_matches: bool,
    /// The latest checkpoint, if the entry is in it.
    pub checkpoint: Option<CheckedCheckpoint>,
    /// The audit path (hex, leaf first).
    pub path: Vec<String>,
    /// Whether the path leads from the leaf to the checkpoint's root.
    pub included: bool,
}

/// The log's latest two checkpoints, and whether the later extends the earlier.
#[derive(Debug, Clone)]
pub struct Integrity {
    /// The newest checkpoint.
    pub latest: Option<CheckedCheckpoint>,
    /// The one before it.
    pub previous: Option<CheckedCheckpoint>,
    /// Whether the consistency proof from `previous` to `latest` verifies (`None` with fewer
    /// than two checkpoints).
    pub consistent: Option<bool>,
    /// The consistency proof's length.
    pub proof_len: usize,
    /// Entries written and not yet sealed.
    pub unsealed: i64,
}

/// A checkpoint as its signature vouches for it: the size, root and signing time inside the
/// JWS must be those stored beside it (the time shown is the signed one).
fn checked(app: &App, c: &Checkpoint) -> CheckedCheckpoint {
    let opened = vpr_auth::keys::open_checkpoint_signed(&app.tokens.keys().jwks(), &c.jws);
    let signed = opened.as_ref().ok().and_then(|(_, _, at)| DateTime::parse_from_rfc3339(at).ok()).map(|t| t.to_utc());
    // The database keeps microseconds; the signature the full time.
    let same_time = signed.is_some_and(|t| (t - c.signed_at).num_milliseconds().abs() < 1);
    let signature_ok =
        matches!(opened, Ok((size, ref root, _)) if size == c.tree_size && *root == c.root_hash) && same_time;
    CheckedCheckpoint {
        tree_size: c.tree_size,
        root_hash: c.root_hash.clone(),
        signed_at: signed.unwrap_or(c.signed_at),
        signature_ok,
    }
}

fn reviewed(app: &App, caller: &Caller, who: &Reviewer, action: AuditAction, context: String) -> AuditEntry {
    AuditEntry {
        actor_user: Some(who.user.clone()),
        actor_role: Some(who.role.clone()),
        purpose: Some(MANAGEMENT_PURPOSE.into()),
        context_ref: Some(context),
        decision: "permit".into(),
        ..caller_entry(app, caller, action, 200)
    }
}

fn prove(app: &App, sealed: &SealedEntry, latest: Option<&Checkpoint>) -> AppResult<(Vec<String>, bool)> {
    let (Some(index), Some(cp), Some(leaf)) = (sealed.entry.leaf_index, latest, sealed.stored) else {
        return Ok((vec![], false));
    };
    if index >= cp.tree_size {
        return Ok((vec![], false));
    }
    let leaves = app.store.leaf_hashes(cp.tree_size)?;
    let i = usize::try_from(index).map_err(|_| unproven())?;
    let path = merkle::inclusion_proof(i, &leaves).ok_or_else(unproven)?;
    let root = vpr_audit::parse_hash(&cp.root_hash).ok_or_else(unproven)?;
    let size = u64::try_from(cp.tree_size).map_err(|_| unproven())?;
    let included = merkle::verify_inclusion(i as u64, size, &leaf, &path, &root);
    Ok((path.iter().map(|h| vpr_audit::hex(h)).collect(), included))
}

impl App {
    /// One audit entry with its inclusion proof, checked against the latest signed checkpoint,
    /// for an IG reviewer; audited as `audit-entry` before it is returned.
    pub async fn entry_proof(&self, caller: &Caller, who: Reviewer, id: Uuid) -> AppResult<EntryProof> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let missing = || AppError::NotFound("no audit entry has this id".into());
            let sealed = app.store.sealed_entry(id)?.ok_or_else(missing)?;
            // Outside the ICB, only the organisation's own part of the log.
            let scope = crate::access::audit_scope(&caller.principal);
            if !crate::access::in_scope(app, scope.as_deref(), &sealed.entry.entry)? {
                // Refused (and audited), answered as for an unknown id.
                crate::audit::record_refused_for(app, &caller, Some(&who), AuditAction::AuditEntryRead, 403)?;
                return Err(missing());
            }
            let mut sealed = sealed;
            crate::access::scoped_entries(app, scope.as_deref(), std::slice::from_mut(&mut sealed.entry))?;
            let latest = app.store.latest_checkpoint()?;
            let (path, included) = prove(app, &sealed, latest.as_ref())?;
            let in_checkpoint = latest.filter(|cp| sealed.entry.leaf_index.is_some_and(|i| i < cp.tree_size));
            app.store
                .append_audit(&reviewed(app, &caller, &who, AuditAction::AuditEntryRead, id.to_string()))
                .map_err(AppError::audit_write_failed)?;
            Ok(EntryProof {
                leaf: sealed.stored.map(|h| vpr_audit::hex(&h)),
                content_matches: sealed.stored.is_some() && sealed.recomputed == sealed.stored,
                checkpoint: in_checkpoint.as_ref().map(|c| checked(app, c)),
                path,
                included,
                entry: sealed.entry,
            })
        })
        .await
    }

    /// The latest checkpoint and the one before, their signatures checked, and whether the
    /// later extends the earlier; audited as `log-integrity`.
    pub async fn log_integrity(&self, caller: &Caller, who: Reviewer) -> AppResult<Integrity> {
        let caller = caller.clone();
        self.blocking(move |app| {
            let cps = app.store.checkpoints(2)?;
            let (latest, previous) = (cps.first(), cps.get(1));
            let mut consistent = None;
            let mut proof_len = 0;
            if let (Some(new), Some(old)) = (latest, previous) {
                let leaves = app.store.leaf_hashes(new.tree_size)?;
                let m = usize::try_from(old.tree_size).map_err(|_| unproven())?;
                let proof = merkle::consistency_proof(m, &leaves).ok_or_else(unproven)?;
                proof_len = proof.len();
                let roots = (vpr_audit::parse_hash(&old.root_hash), vpr_audit::parse_hash(&new.root_hash));
                consistent = Some(match roots {
                    (Some(a), Some(b)) => merkle::verify_consistency(m as u64, leaves.len() as u64, &a, &b, &proof),
                    _ => false,
                });
            }
            let unsealed = app.store.unsealed_count()?;
            let context = latest.map_or("no checkpoint".to_owned(), |c| format!("tree_size={}", c.tree_size));
            app.store
                .append_audit(&reviewed(app, &caller, &who, AuditAction::LogIntegrity, context))
                .map_err(AppError::audit_write_failed)?;
            Ok(Integrity {
                latest: latest.map(|c| checked(app, c)),
                previous: previous.map(|c| checked(app, c)),
                consistent,
                proof_len,
                unsealed,
            })
        })
        .await
    }
}
