//! Delivery of subscription events: the fan-out of committed notice changes, and webhook pushes
//! that are decided and audited one by one when they are made, signed (and encrypted to the
//! subscriber's key if it gave one), retried with exponential back-off and jitter, and
//! dead-lettered only after the retry window. Per subscription, events go strictly in order:
//! event N+1 is not sent until event N is acknowledged.
//!
//! Safe with several replicas: fan-out takes a lock; each subscription is delivered under a
//! lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so two replicas never push it at once. A
//! replica that dies mid-delivery leaves a lease that expires; the next one resumes from the
//! last acknowledged event, so a receiver may see an event twice (it de-duplicates by event id)
//! but never misses one.

mod decide;
mod fanout;
mod push;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;
use vpr_auth::{Principal, Scope};
use vpr_domain::subscription::PeerLink;
use vpr_store::subscriptions::Subscription;

pub use crate::render::event::{Decided, Shown};
pub use decide::{decide_events, decide_many, ToDecide};
pub use fanout::fan_out;
pub use push::deliver;
pub(crate) use push::{post, Outgoing};
/// The HTTP client webhooks are pushed with ([`webhook_client`]).
pub use reqwest::Client as WebhookClient;

use crate::App;

/// Delivery settings, handed in by the binary.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Keep retrying a failing event this long before dead-lettering it.
    pub retry_for: Duration,
    /// First retry delay; doubles with each failure.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// A receiver must answer within this.
    pub timeout: Duration,
    /// Most webhook requests in flight at once.
    pub concurrency: usize,
    /// How long a replica holds a subscription while pushing it.
    pub lease: Duration,
    /// How often to look for work that another replica committed.
    pub poll: Duration,
    /// Longest a subscription may run before it must be renewed.
    pub max_subscription_days: i64,
    /// Demo mode: plain-http and loopback webhook URLs are accepted.
    pub allow_insecure_webhooks: bool,
    /// The shortest heartbeat period a FHIR subscription may ask for.
    pub min_heartbeat: Duration,
    /// Extra trusted root certificates (PEM) for webhook TLS, e.g. a private network's CA.
    pub extra_roots_pem: Vec<Vec<u8>>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(72 * 3600),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 128,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(250),
            max_subscription_days: 365,
            allow_insecure_webhooks: false,
            min_heartbeat: Duration::from_secs(10),
            extra_roots_pem: Vec::new(),
        }
    }
}

/// Wake-ups between the request handlers and the delivery tasks of this replica.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    pub(crate) fan_out: Arc<Notify>,
    pub(crate) deliver: Arc<Notify>,
    /// Subscriptions this replica's fan-out just gave events: claimed first, by id. Only a
    /// hint: the claim checks each is due, and the general claim still finds every due one.
    hinted: Arc<std::sync::Mutex<Vec<Uuid>>>,
}

/// Most hints kept; beyond that the general claim finds the rest.
const MAX_HINTS: usize = 100_000;

impl Outbox {
    pub(crate) fn hint(&self, subscriptions: Vec<Uuid>) {
        if let Ok(mut hinted) = self.hinted.lock() {
            let room = MAX_HINTS.saturating_sub(hinted.len());
            hinted.extend(subscriptions.into_iter().take(room));
        }
    }

    /// Up to `n` hinted subscriptions, oldest hints first, without repeats.
    pub(crate) fn take_hints(&self, n: usize) -> Vec<Uuid> {
        let Ok(mut hinted) = self.hinted.lock() else { return Vec::new() };
        let mut taken = Vec::new();
        let mut used = 0;
        for id in hinted.iter() {
            if taken.len() == n {
                break;
            }
            used += 1;
            if !taken.contains(id) {
                taken.push(*id);
            }
        }
        hinted.drain(..used);
        taken
    }

    /// A notice change was committed: fan it out now rather than at the next poll.
    pub fn changed(&self) {
        self.fan_out.notify_one();
    }

    /// Deliveries may be due now (a redelivery was asked for).
    pub fn due(&self) {
        self.deliver.notify_one();
    }
}

/// The identity a subscription's deliveries are decided for: its system, as the registry
/// describes it now (a system removed from the registry, or without the `subscriptions` scope,
/// has none, and its deliveries are refused). A subscription relayed by a peer broker is
/// decided for its partner as a remote requester, while that peer still vouches for it.
pub fn subscriber(app: &App, sub: &Subscription) -> Option<Principal> {
    if let Some(PeerLink::RelayedBy { peer, .. }) = &sub.federation {
        let org_type = *app.tokens.peers().get(peer)?.vouches_for.get(&sub.owner_ods)?;
        return Some(Principal {
            client_id: sub.owner_system.clone(),
            system_name: sub.owner_system.clone(),
            org: vpr_domain::OdsCode::parse(&sub.owner_ods).ok()?,
            org_name: String::new(),
            org_type,
            scopes: std::collections::BTreeSet::new(),
            token_id: String::new(),
        });
    }
    let registry = app.tokens.registry();
    let system = registry.system(&sub.owner_system)?;
    let partner = registry.partner(system.ods_code.as_str())?;
    if partner.ods_code.as_str() != sub.owner_ods || !system.scopes.contains(&Scope::Subscriptions) {
        return None;
    }
    Some(Principal {
        client_id: system.client_id.clone(),
        system_name: system.name.clone(),
        org: partner.ods_code.clone(),
        org_name: partner.name.clone(),
        org_type: partner.org_type,
        scopes: system.scopes.clone(),
        token_id: String::new(),
    })
}

/// The delay before retry number `attempts` (1 = the first retry): exponential, capped, with
/// jitter (between half and all of it) so receivers coming back are not stampeded.
pub fn backoff(settings: &DeliverySettings, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = settings.initial_backoff.saturating_mul(2u32.saturating_pow(exp)).min(settings.max_backoff);
    let half = full / 2;
    half + full.mul_f64(rand::random::<f64>() * 0.5)
}

/// Builds the HTTP client for webhooks: no redirects followed, a timeout, and any extra roots.
pub fn webhook_client(settings: &DeliverySettings) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("vpr-broker/", env!("CARGO_PKG_VERSION")));
    for pem in &settings.extra_roots_pem {
        let cert =
            reqwest::Certificate::from_pem(pem).map_err(|e| format!("a webhook CA certificate is invalid: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| format!("cannot build the webhook client: {e}"))
}
