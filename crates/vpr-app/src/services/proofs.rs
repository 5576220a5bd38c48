//! Proofs over the sealed audit log (RFC 9162): that an entry is in a checkpointed tree, and
//! that a later tree extends an earlier one.

use vpr_audit::merkle;

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
