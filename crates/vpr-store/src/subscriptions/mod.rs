//! Subscriptions, the outbox of notice changes, and delivery state.
//!
//! A change to a notice writes a `notice_events` row in the same transaction (the outbox). The
//! fan-out step, one replica at a time, matches each new event against the subscriptions —
//! judging criteria on the decrypted content, so nothing identifying is stored in clear — and
//! numbers it per subscription. Webhook delivery then proceeds per subscription strictly in
//! event order, under a lease so replicas never push the same subscription at once.

mod acks;
mod crud;
mod events;
mod fanout;
mod leases;
mod model;

pub use acks::Ack;
pub(crate) use acks::{ack_writer, AckWriter};
pub use fanout::FanOut;
pub use leases::{FailedAttempt, Failure};
pub use model::{delivery_state, DeadLetter, DeliveryStatus, NewSubscription, Subscription, SubscriptionEvent};
