//! Peers' public keys fetched from their URLs: at start, every `jwks_refresh`, every
//! `jwks_min_interval` (30 s) while a peer has none, and as soon as a peer signs with a key id not
//! yet known (a rotation), at most once every `jwks_min_interval` per peer. A fetch that fails, or whose keys are refused (a key id that another
//! peer or a partner system uses), keeps the current keys.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ask::{read_capped, short};
use crate::stop::Stop;
use crate::App;

/// Peers whose keys come from a URL: id and URL.
fn by_url(app: &App) -> Vec<(String, String)> {
    app.tokens.peers().iter().filter_map(|p| p.jwks_url.clone().map(|u| (p.id.clone(), u))).collect()
}

/// Fetches one peer's JWKS.
async fn fetch(app: &App, url: &str) -> Result<Value, String> {
    let response = app
        .federation
        .client
        .get(url)
        .timeout(app.delivery.timeout)
        .send()
        .await
        .map_err(|e| format!("cannot fetch it: {}", short(&e)))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("its JWKS URL answered {status}"));
    }
    read_capped(response).await
}

/// Fetches and takes one peer's keys; returns whether it now has any.
async fn refresh_one(app: &App, id: &str, url: &str) -> bool {
    match fetch(app, url).await {
        Ok(jwks) => match app.tokens.replace_peer_keys(id, &jwks) {
            Ok(true) => tracing::info!(peer = id, "the peer's keys were fetched and changed"),
            Ok(false) => tracing::debug!(peer = id, "the peer's keys are unchanged"),
            Err(e) => {
                tracing::warn!(peer = id, error = %e, "the peer's fetched keys are refused; the current ones are kept")
            }
        },
        Err(why) => {
            tracing::warn!(peer = id, error = %why, "the peer's keys could not be fetched; the current ones are kept")
        }
    }
    app.tokens.peers().get(id).is_some_and(|p| p.key_count() > 0)
}

/// Keeps the keys of peers given by `jwks_url` fresh, until told to stop.
pub async fn refresh_peer_keys(app: App, mut stop: Stop) {
    let peers = by_url(&app);
    if peers.is_empty() {
        // Nothing to refresh; a worker that ends early would stop the broker.
        return stop.stopped().await;
    }
    let min_interval = app.federation.settings.jwks_min_interval;
    let mut fetched: HashMap<String, Instant> = HashMap::new();
    let mut due: HashMap<String, Instant> = peers.iter().map(|(id, _)| (id.clone(), Instant::now())).collect();
    loop {
        let now = Instant::now();
        for (id, url) in &peers {
            // Fetched within the minimum interval: a wanted fetch waits until then (refreshes are due later).
            if let Some(until) = fetched.get(id).map(|at| *at + min_interval).filter(|u| *u > now) {
                if app.federation.keys_wanted_pending(id) {
                    due.entry(id.clone()).and_modify(|d| *d = (*d).min(until)).or_insert(until);
                }
                continue;
            }
            let wanted = app.federation.take_keys_wanted(id);
            let is_due = due.get(id).is_none_or(|at| *at <= now);
            if !(is_due || wanted) {
                continue;
            }
            fetched.insert(id.clone(), now);
            let has_keys = refresh_one(&app, id, url).await;
            let every = if has_keys { app.federation.settings.jwks_refresh } else { min_interval };
            due.insert(id.clone(), now + every);
        }
        let next = due.values().min().copied().unwrap_or(now + min_interval);
        let wait = next.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = app.federation.keys_wanted.notified() => {
                // Let the burst of requests signed by the new key settle into one fetch.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            () = stop.stopped() => return,
        }
    }
}
