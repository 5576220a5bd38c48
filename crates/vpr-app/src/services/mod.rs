//! The services: one module per capability, each a set of `App` methods an edge calls with a
//! [`crate::Caller`] and validated or raw input, returning typed results.

pub mod directives;
pub mod ig;
pub mod lookups;
pub mod notices;
pub mod people;
pub mod proofs;
pub mod statistics;
pub mod subscriptions;
