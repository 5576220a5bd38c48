//! Handlers, one module per resource.

pub mod access_log;
pub mod audit_proofs;
pub mod break_glass;
pub mod directives;
pub mod lookups;
pub mod notices;
pub mod oauth;
pub mod ops;
pub mod review;
pub mod subscriptions;

use actix_web::web;
use futures_util::StreamExt;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Reads a request body up to [`MAX_BODY_BYTES`], refusing larger ones with a problem.
pub async fn read_body(payload: web::Payload) -> Result<web::Bytes, ApiError> {
    read_body_up_to(payload, MAX_BODY_BYTES).await
}

/// Reads a request body up to `max` bytes, refusing larger ones with a problem.
pub async fn read_body_up_to(mut payload: web::Payload, max: usize) -> Result<web::Bytes, ApiError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest {
            detail: "the request body could not be read".into(),
            errors: vec![],
        })?;
        if buf.len() + chunk.len() > max {
            return Err(ApiError::BadRequest {
                detail: format!("the request body is larger than {max} bytes"),
                errors: vec![vpr_domain::FieldError::new("", "max-body-size", format!("at most {max} bytes"))],
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
