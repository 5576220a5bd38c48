//! Back-pressure: a token bucket (the `governor` crate's GCRA) per partner system, sized by the
//! system's own rate in the registry or the configured default, and separate buckets for token
//! issuance (per client address: the caller is not known yet) and for the IG endpoints (per
//! system), so one partner's flood cannot slow the others or starve its own IG reviews.
//!
//! A request over its limit is refused before any work with `429` problem+json and
//! `Retry-After`; every answer to a limited request carries the IETF `RateLimit-Policy` and
//! `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers): the policy's quota `q` (the
//! burst) over the window `w` that refills it, and what remains `r` with the seconds `t` until
//! the bucket is full again.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use vpr_auth::Rate;

/// The `RateLimit-Policy` header.
pub const POLICY_HEADER: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The `RateLimit` header.
pub const STATE_HEADER: HeaderName = HeaderName::from_static("ratelimit");

/// The most buckets kept per class; past it the buckets of that class start afresh (only the
/// per-address token buckets can grow so far).
const MAX_BUCKETS: usize = 10_000;

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The buckets in use, by class and key, each with the rate it was made for.
type Buckets = HashMap<(Class, String), (Rate, Arc<Bucket>)>;

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A partner system's API calls (and a peer broker's).
    Api,
    /// The IG endpoints (audit review, subject access, consents and objections), per system.
    Ig,
    /// Token requests, per client address.
    Token,
    /// Requests no token names (inclusion and consistency proofs, the latest checkpoint, a peer
    /// broker's pushed events), per client address.
    Public,
}

impl Class {
    /// The policy's name in the headers.
    pub fn name(self) -> &'static str {
        match self {
            Class::Api => "api",
            Class::Ig => "ig",
            Class::Token => "token",
            Class::Public => "public",
        }
    }
}

/// The broker's limits: the default rate of each class and the buckets in use.
#[derive(Debug)]
pub struct Limits {
    api: Rate,
    ig: Rate,
    token: Rate,
    public: Rate,
    buckets: Mutex<Buckets>,
    clock: DefaultClock,
}

/// The two headers of an answer to a limited request.
#[derive(Debug, Clone)]
pub struct RateHeaders {
    /// `RateLimit-Policy`.
    pub policy: HeaderValue,
    /// `RateLimit`.
    pub state: HeaderValue,
}

impl RateHeaders {
    /// Adds both to a response's headers.
    pub fn apply(&self, headers: &mut actix_web::http::header::HeaderMap) {
        headers.insert(POLICY_HEADER, self.policy.clone());
        headers.insert(STATE_HEADER, self.state.clone());
    }
}

/// A request refused for being over its limit (`ApiError::TooManyRequests`, 429).
#[derive(Debug, Clone)]
pub struct Limited {
    /// Which limit, and when to retry.
    pub detail: String,
    /// Seconds until a request will be admitted.
    pub retry_after: u64,
    /// The `RateLimit-Policy` and `RateLimit` headers.
    pub headers: RateHeaders,
}

fn quota(rate: Rate) -> Option<Quota> {
    let burst = NonZeroU32::new(rate.burst)?;
    let period = Duration::try_from_secs_f64(1.0 / rate.per_second).ok()?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

/// Seconds, rounded up, at least one when any time is left.
fn whole_seconds(d: Duration) -> u64 {
    let s = d.as_secs_f64().ceil();
    if s.is_finite() && s > 0.0 {
        s as u64
    } else {
        0
    }
}

fn header(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"api\""))
}

impl Limits {
    /// Limits with these default rates. A rate that makes no bucket (`per_second` 0) is
    /// refused when the configuration is read, not here.
    pub fn new(api: Rate, ig: Rate, token: Rate, public: Rate) -> Self {
        Self { api, ig, token, public, buckets: Mutex::new(HashMap::new()), clock: DefaultClock::default() }
    }

    fn default_rate(&self, class: Class) -> Rate {
        match class {
            Class::Api => self.api,
            Class::Ig => self.ig,
            Class::Token => self.token,
            Class::Public => self.public,
        }
    }

    fn bucket(&self, class: Class, key: &str, rate: Rate) -> Option<Arc<Bucket>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((r, b)) = buckets.get(&(class, key.to_owned())) {
            // The registry can change a system's rate: its bucket follows.
            if *r == rate {
                return Some(b.clone());
            }
        }
        // Only a class keyed by address can grow so far: the largest starts afresh alone, never
        // resetting the partners' own buckets.
        if buckets.len() >= MAX_BUCKETS {
            let size = |class: Class| buckets.keys().filter(|(c, _)| *c == class).count();
            let largest = [Class::Token, Class::Public, Class::Api, Class::Ig].into_iter().max_by_key(|c| size(*c));
            if let Some(largest) = largest {
                buckets.retain(|(c, _), _| *c != largest);
            }
        }
        let bucket = Arc::new(RateLimiter::direct_with_clock(quota(rate)?, self.clock.clone()).with_middleware());
        buckets.insert((class, key.to_owned()), (rate, bucket.clone()));
        Some(bucket)
    }

    /// Counts one request of `class` by `key` (a client id, or a client address for tokens),
    /// at `own` rate if the registry gives the system one: the headers for its answer, or a
    /// `429` refusal.
    pub fn admit(&self, class: Class, key: &str, own: Option<Rate>) -> Result<Option<RateHeaders>, Limited> {
        let rate = own.unwrap_or_else(|| self.default_rate(class));
        let Some(bucket) = self.bucket(class, key, rate) else { return Ok(None) };
        let name = class.name();
        let window = whole_seconds(Duration::from_secs_f64(f64::from(rate.burst) / rate.per_second)).max(1);
        let policy = header(format!("\"{name}\";q={};w={window}", rate.burst));
        match bucket.check() {
            Ok(snapshot) => {
                let left = snapshot.remaining_burst_capacity();
                let refill = f64::from(rate.burst.saturating_sub(left)) / rate.per_second;
                let until_full = whole_seconds(Duration::from_secs_f64(refill));
                Ok(Some(RateHeaders { policy, state: header(format!("\"{name}\";r={left};t={until_full}")) }))
            }
            Err(not_until) => {
                let retry_after = whole_seconds(not_until.wait_time_from(self.clock.now())).max(1);
                Err(Limited {
                    detail: format!(
                        "too many requests: the `{name}` limit is {} a second with bursts of {}; retry after {retry_after} s",
                        rate.per_second, rate.burst
                    ),
                    retry_after,
                    headers: RateHeaders { policy, state: header(format!("\"{name}\";r=0;t={retry_after}")) },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_how_long_to_wait() {
        let limits = Limits::new(
            Rate { per_second: 2.0, burst: 3 },
            Rate { per_second: 1.0, burst: 1 },
            Rate { per_second: 1.0, burst: 1 },
            Rate { per_second: 1.0, burst: 1 },
        );
        for left in [2, 1, 0] {
            let h = limits.admit(Class::Api, "amb-cad", None).unwrap().unwrap();
            assert_eq!(h.policy.to_str().unwrap(), "\"api\";q=3;w=2");
            assert!(h.state.to_str().unwrap().starts_with(&format!("\"api\";r={left};t=")));
        }
        match limits.admit(Class::Api, "amb-cad", None) {
            Err(Limited { retry_after, headers, .. }) => {
                assert_eq!(retry_after, 1);
                assert_eq!(headers.state.to_str().unwrap(), "\"api\";r=0;t=1");
            }
            other => panic!("{other:?}"),
        }
        // Another system, and the same system's IG calls, have buckets of their own.
        assert!(limits.admit(Class::Api, "gp-green", None).is_ok());
        assert!(limits.admit(Class::Ig, "amb-cad", None).is_ok());
        // A system's own rate from the registry replaces the default.
        let own = Some(Rate { per_second: 100.0, burst: 50 });
        for _ in 0..50 {
            assert!(limits.admit(Class::Api, "amb-cad", own).is_ok());
        }
        assert!(limits.admit(Class::Api, "amb-cad", own).is_err());
    }
}
