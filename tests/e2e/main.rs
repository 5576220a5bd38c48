//! End-to-end tests: a real broker process driven over HTTP as a partner system would, each on
//! SQLite and on PostgreSQL. Modules mirror the routes.

// Test code: a failed expectation should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod receiver;
mod support;

mod access_log;
mod audit;
mod audited_writes;
mod auth;
mod backup;
mod console;
mod durability;
mod faults;
mod federated_subscriptions;
mod federation;
mod fhir;
mod limits;
mod lookups;
mod notices;
mod ops;
mod query_params;
mod request_ids;
mod review;
mod subscriptions;
mod validation;
