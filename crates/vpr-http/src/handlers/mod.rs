//! Handlers, one module per resource: each extracts, calls a `vpr_app` service, renders.
//! None imports another.

pub mod access_log;
pub mod audit;
pub mod directives;
pub mod federation;
pub mod lookups;
pub mod notices;
pub mod oauth;
pub mod ops;
pub mod review;
pub mod statistics;
pub mod subscriptions;
