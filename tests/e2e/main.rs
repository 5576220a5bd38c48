//! End-to-end tests: a real broker process driven over HTTP as a partner system would, each on
//! SQLite and on PostgreSQL. Modules mirror the routes.

mod support;

mod auth;
mod durability;
mod notices;
mod ops;
mod validation;
