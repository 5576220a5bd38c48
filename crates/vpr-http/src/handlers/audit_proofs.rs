//! Proofs over the sealed audit log (RFC 9162): that an entry is in a checkpointed tree, and
//! that a newer checkpoint's tree extends an older one. Public: they reveal hashes only.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use vpr_audit::{hex, merkle};

use crate::error::ApiError;
use crate::openapi::ProblemDoc;
use crate::pipeline::blocking;
use crate::AppState;

/// `?leaf_index=&tree_size=`
#[derive(Debug, Deserialize)]
pub struct InclusionQuery {
    leaf_index: i64,
    tree_size: i64,
}

/// `?first=&second=`
#[derive(Debug, Deserialize)]
pub struct ConsistencyQuery {
    first: i64,
    second: i64,
}

fn checkpointed(state: &AppState, size: i64) -> Result<(), ApiError> {
    let latest = state.store.latest_checkpoint()?.map(|c| c.tree_size).unwrap_or(0);
    if size < 1 || size > latest {
        return Err(ApiError::Validation(vec![vpr_domain::FieldError::new(
            "",
            "tree-size",
            format!("the tree size must be between 1 and the latest checkpoint's ({latest})"),
        )]));
    }
    Ok(())
}

/// The audit path proving that entry `leaf_index` is in the tree of `tree_size` entries.
#[utoipa::path(tag = "audit",
    params(("leaf_index" = i64, Query, description = "Entry position in the tree"), ("tree_size" = i64, Query, description = "A checkpointed tree size")),
    responses(
        (status = 200, description = "`leaf_hash` and `audit_path` (hex, leaf first); hash up to the checkpoint's `root_hash`", body = Object),
        (status = 422, description = "Index or size out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[get("/v1/audit/proofs/inclusion")]
pub async fn inclusion(state: web::Data<AppState>, q: web::Query<InclusionQuery>) -> Result<HttpResponse, ApiError> {
    let (index, size) = (q.leaf_index, q.tree_size);
    let st = state.clone();
    let (leaf, path) = blocking(move || {
        checkpointed(&st, size)?;
        let leaves = st.store.leaf_hashes(size)?;
        let i = usize::try_from(index).ok().filter(|i| *i < leaves.len());
        let i = i.ok_or_else(|| {
            ApiError::Validation(vec![vpr_domain::FieldError::new(
                "",
                "leaf-index",
                "`leaf_index` must be below `tree_size`",
            )])
        })?;
        let path = merkle::inclusion_proof(i, &leaves).unwrap_or_default();
        Ok((leaves.get(i).copied().unwrap_or_default(), path))
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "leaf_index": index, "tree_size": size, "leaf_hash": hex(&leaf),
        "audit_path": path.iter().map(|h| hex(h)).collect::<Vec<_>>(),
    })))
}

/// The proof that the tree of `second` entries extends the tree of `first` entries.
#[utoipa::path(tag = "audit",
    params(("first" = i64, Query, description = "The older checkpointed tree size"), ("second" = i64, Query, description = "The newer checkpointed tree size")),
    responses(
        (status = 200, description = "`consistency_path` (hex), as RFC 9162 §2.1.4", body = Object),
        (status = 422, description = "Sizes out of range", body = ProblemDoc, content_type = "application/problem+json"),
    ))]
#[get("/v1/audit/proofs/consistency")]
pub async fn consistency(
    state: web::Data<AppState>,
    q: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (first, second) = (q.first, q.second);
    let st = state.clone();
    let proof = blocking(move || {
        checkpointed(&st, second)?;
        if first < 1 || first > second {
            return Err(ApiError::Validation(vec![vpr_domain::FieldError::new(
                "",
                "first",
                "`first` must be 1 to `second`",
            )]));
        }
        let leaves = st.store.leaf_hashes(second)?;
        Ok(merkle::consistency_proof(usize::try_from(first).unwrap_or(0), &leaves).unwrap_or_default())
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "first": first, "second": second, "consistency_path": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
    })))
}
