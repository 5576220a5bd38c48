//! The broker's application layer: the services every edge calls (the HTTP API, the FHIR
//! facade, and next a peer broker and the IG console), the delivery workers and periodic jobs,
//! and the wire renderers. No HTTP here: edges authenticate, parse and render; services decide.
//!
//! # The pipeline
//!
//! Every request for notice data runs these steps, in this order:
//!
//! 1. **Authenticate** the bearer token to a principal — at the edge
//!    (`vpr_http::extract::authenticate`), which hands a [`Caller`] carrying the principal and
//!    the request id to a service.
//! 2. **Validate** the input against its schema and the domain rules — in the service, e.g.
//!    [`App::lookup`] through `vpr_domain::validate`; an invalid read is refused and audited
//!    ([`audit::record_refusal`]).
//! 3. **Check the requester**: purpose in the agreement, a role this system holds and the
//!    agreement gives its organisation's type, a break-glass justification long enough —
//!    [`access::requester_refusal`] (one role check, [`access::may_act_as`]).
//! 4. **Read** the candidate notices and the subjects' consents and objections — in the service
//!    and [`disclose::govern`].
//! 5. **Decide** each notice with the agreement (Cedar) — [`disclose::decide_read`], which
//!    calls `vpr_policy::Agreement::decide`.
//! 6. **Minimise** each to its decided view — [`disclose::minimise`], giving a typed
//!    [`disclose::DisclosedNotice`].
//! 7. **Audit** durably: the entry naming every decision is committed before anything is
//!    returned — [`disclose::govern`]; writes commit their entry with the change.
//! 8. **Render** at the edge: VPR JSON, a FHIR `Flag` ([`render::fhir::flag::flag`]) or a
//!    webhook event ([`render::event::DecidedEvent`], [`render::webhook::webhook_body`]).
//!
//! Deliveries run steps 3-8 when each event is pushed or read from a feed
//! ([`delivery::decide_many`]), so a subscription is told only what the agreement allows now.
//!
//! A look-up at a broker with peers also relays the requester, once step 3 has passed, to every
//! peer broker in parallel ([`federation::ask::ask_peers`]); each peer runs steps 1-7 under its
//! own agreement ([`App::answer_relayed_lookup`]), and the asking broker's entry names what
//! each peer answered before anything is returned.

pub mod access;
mod app;
pub mod audit;
pub mod caller;
pub mod delivery;
pub mod disclose;
mod error;
pub mod federation;
pub mod metrics;
pub mod records;
pub mod render;
pub mod services;
pub mod stop;
pub mod tasks;

pub use app::{App, Benchmark, Clock, NoticeSettings, SystemClock};
pub use caller::{Access, Caller, Reviewer};
pub use error::{AppError, AppResult};

#[cfg(test)]
mod tests;
