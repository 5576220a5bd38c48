//! The broker's HTTP edge: authenticate and parse a request, call the application service
//! (`vpr_app`), render its answer (VPR JSON, FHIR, problem+json). No decision is made here.

pub mod audit_view;
pub mod console;
pub mod docs;
pub mod error;
pub mod extract;
pub mod fhir;
pub mod handlers;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod server;

pub use error::ApiError;
pub use server::{run, OpenApiDoc};
