//! Federation between ICS brokers: a look-up here also asks the peer brokers of neighbouring
//! ICSs ([`ask`]), and a peer's relayed look-up is answered here under this broker's agreement
//! ([`answer`]).
//!
//! Each peer decides, minimises and audits under its own agreement before it answers; a notice
//! never comes to rest at a broker that is not its publisher's (the asking broker passes the
//! answer on and records only ids, views and clauses). A peer that is down, slow or refusing
//! never breaks the local answer: it is listed as incomplete, and a peer that keeps failing is
//! skipped for a while (its circuit opens). A relayed request is answered locally only: it is
//! never relayed on.

pub mod answer;
pub mod ask;
pub mod keys;
pub mod subscriptions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Federation settings, handed in by the binary.
#[derive(Debug, Clone)]
pub struct FederationSettings {
    /// How long a look-up waits for its peers.
    pub budget: Duration,
    /// Consecutive failures after which a peer's circuit opens.
    pub failures_to_open: u32,
    /// How long an open circuit skips its peer before one request tries it again.
    pub open_for: Duration,
    /// How often peers' keys given by URL are fetched again.
    pub jwks_refresh: Duration,
    /// The shortest time between two fetches of one peer's keys.
    pub jwks_min_interval: Duration,
}

impl Default for FederationSettings {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(300),
            failures_to_open: 3,
            open_for: Duration::from_secs(30),
            jwks_refresh: Duration::from_secs(3600),
            jwks_min_interval: Duration::from_secs(30),
        }
    }
}

/// One peer's circuit.
#[derive(Debug, Default, Clone, Copy)]
struct Circuit {
    failures: u32,
    open_until: Option<Instant>,
}

/// A peer's access token, cached until shortly before it expires.
#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    renew_at: Instant,
}

/// The state of federation on this replica: the HTTP client, each peer's circuit and token.
#[derive(Debug, Clone)]
pub struct Federation {
    /// The settings.
    pub settings: FederationSettings,
    client: reqwest::Client,
    /// The client events from peers are passed on to partners' webhooks with (the webhook
    /// client's settings: no redirects, its timeout and trusted roots).
    partner_client: reqwest::Client,
    circuits: Arc<Mutex<HashMap<String, Circuit>>>,
    tokens: Arc<Mutex<HashMap<String, CachedToken>>>,
    /// Wakes the key refresh: a peer signed with a key id not yet known.
    keys_wanted: Arc<tokio::sync::Notify>,
    /// The peers whose keys are wanted.
    keys_wanted_for: Arc<Mutex<std::collections::BTreeSet<String>>>,
}

/// A peer's state, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerState {
    /// The peer.
    pub id: String,
    /// `closed` (asked), or `open` (skipped after repeated failures).
    pub circuit: &'static str,
    /// Consecutive failures.
    pub failures: u32,
    /// How many of its public keys are known (none yet: its keys are fetched from a URL that
    /// has not answered).
    pub keys: usize,
}

impl Federation {
    /// The federation state, with an HTTP client bounded by the budget; events from peers are
    /// passed on to partners with `partner_client` (the webhook client).
    pub fn new(settings: FederationSettings, partner_client: reqwest::Client) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.budget.max(Duration::from_millis(50)))
            .connect_timeout(settings.budget.max(Duration::from_millis(50)))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("vpr-broker/", env!("CARGO_PKG_VERSION"), " (federation)"))
            .build()
            .map_err(|e| format!("cannot build the federation client: {e}"))?;
        Ok(Self {
            settings,
            client,
            partner_client,
            circuits: Arc::default(),
            tokens: Arc::default(),
            keys_wanted: Arc::default(),
            keys_wanted_for: Arc::default(),
        })
    }

    /// Whether `peer` may be asked now: its circuit is closed, or open long enough that one
    /// request may try it again.
    fn may_ask(&self, peer: &str, now: Instant) -> bool {
        let Ok(mut circuits) = self.circuits.lock() else { return true };
        let c = circuits.entry(peer.to_owned()).or_default();
        match c.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                // Half-open: this request tries; another failure opens the circuit again.
                c.open_until = Some(now + self.settings.open_for);
                true
            }
            None => true,
        }
    }

    /// Records how a request to `peer` went. Returns true if its circuit is now open.
    fn record(&self, peer: &str, ok: bool, now: Instant) -> bool {
        let Ok(mut circuits) = self.circuits.lock() else { return false };
        let c = circuits.entry(peer.to_owned()).or_default();
        if ok {
            *c = Circuit::default();
            return false;
        }
        c.failures += 1;
        if c.failures >= self.settings.failures_to_open {
            c.open_until = Some(now + self.settings.open_for);
        }
        c.open_until.is_some()
    }

    /// Every peer's circuit, for `/readyz`.
    pub fn states(&self, peers: &vpr_auth::Peers) -> Vec<PeerState> {
        let now = Instant::now();
        let circuits = self.circuits.lock().map(|c| c.clone()).unwrap_or_default();
        peers
            .iter()
            .map(|p| {
                let c = circuits.get(&p.id).copied().unwrap_or_default();
                let open = c.open_until.is_some_and(|u| now < u);
                PeerState {
                    id: p.id.clone(),
                    circuit: if open { "open" } else { "closed" },
                    failures: c.failures,
                    keys: p.key_count(),
                }
            })
            .collect()
    }

    /// Something `peer` signed did not verify against its keys: if they come from a URL, fetch
    /// them again soon (a key rotation), at most once every `jwks_min_interval`.
    pub fn want_keys(&self, peer: &str) {
        if let Ok(mut wanted) = self.keys_wanted_for.lock() {
            wanted.insert(peer.to_owned());
        }
        self.keys_wanted.notify_one();
    }

    fn keys_wanted_pending(&self, peer: &str) -> bool {
        self.keys_wanted_for.lock().map(|w| w.contains(peer)).unwrap_or(false)
    }

    fn take_keys_wanted(&self, peer: &str) -> bool {
        self.keys_wanted_for.lock().map(|mut w| w.remove(peer)).unwrap_or(false)
    }

    fn cached_token(&self, peer: &str, now: Instant) -> Option<String> {
        let tokens = self.tokens.lock().ok()?;
        tokens.get(peer).filter(|t| now < t.renew_at).map(|t| t.token.clone())
    }

    fn keep_token(&self, peer: &str, token: String, lifetime: Duration, now: Instant) {
        if let Ok(mut tokens) = self.tokens.lock() {
            // Renewed a little before it expires, so a request never carries an expiring token.
            let renew_at = now + lifetime.saturating_sub(Duration::from_secs(30)).max(lifetime / 2);
            tokens.insert(peer.to_owned(), CachedToken { token, renew_at });
        }
    }

    fn forget_token(&self, peer: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circuit_opens_after_repeated_failures_and_half_opens_after_a_while() {
        let f = Federation::new(
            FederationSettings {
                failures_to_open: 2,
                open_for: Duration::from_secs(10),
                ..FederationSettings::default()
            },
            reqwest::Client::new(),
        )
        .unwrap();
        let t0 = Instant::now();
        assert!(f.may_ask("P", t0));
        assert!(!f.record("P", false, t0));
        assert!(f.record("P", false, t0));
        assert!(!f.may_ask("P", t0 + Duration::from_secs(1)));
        // After the open period one request may try again; while it runs the rest are skipped.
        assert!(f.may_ask("P", t0 + Duration::from_secs(11)));
        assert!(!f.may_ask("P", t0 + Duration::from_secs(12)));
        // The probe failed: open again for the whole period.
        assert!(f.record("P", false, t0 + Duration::from_secs(12)));
        assert!(!f.may_ask("P", t0 + Duration::from_secs(20)));
        // The next probe succeeds: closed, failures forgotten.
        assert!(f.may_ask("P", t0 + Duration::from_secs(24)));
        assert!(!f.record("P", true, t0 + Duration::from_secs(24)));
        assert!(f.may_ask("P", t0 + Duration::from_secs(24)));
        assert!(!f.record("P", false, t0 + Duration::from_secs(25)), "one failure after a reset does not open it");
    }
}
