//! Console sessions, held on the server: the browser keeps only an opaque random id in an
//! HttpOnly, Secure, SameSite cookie. A session ends after its idle timeout, at its absolute
//! lifetime, or at sign-out; each has its own CSRF token. Sign-ins under way (state, nonce and
//! PKCE verifier) are held here too, each usable once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use vpr_app::services::people::Person;

/// The session cookie's name (the `__Host-` prefix makes browsers insist on Secure, `Path=/`
/// and no `Domain`).
pub const SESSION_COOKIE: &str = "__Host-vpr-console";

/// The cookie binding a browser to the sign-in it started (against login CSRF).
pub const SIGN_IN_COOKIE: &str = "__Host-vpr-console-sign-in";

/// How long a sign-in may take at the identity provider.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(600);

/// The most sign-ins under way at once (older ones are dropped first).
const MAX_PENDING: usize = 10_000;

/// A random token: 32 bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the server keeps of a cookie value: its SHA-256, so the map never holds a usable id.
fn key_of(cookie: &str) -> String {
    vpr_audit::hex(&Sha256::digest(cookie.as_bytes()))
}

/// A signed-in person's session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in.
    pub person: Person,
    /// A reference to the session for audit entries (not the cookie).
    pub reference: String,
    /// The token every state-changing form must carry.
    pub csrf: String,
    /// The ID token, as the hint for signing out at the identity provider.
    pub id_token: String,
    created: Instant,
    last_seen: Instant,
}

/// A sign-in under way.
#[derive(Debug, Clone)]
pub struct PendingSignIn {
    /// The PKCE code verifier.
    pub verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The console page to return to.
    pub return_to: String,
    started: Instant,
}

impl PendingSignIn {
    /// A sign-in begun now.
    pub fn new(verifier: String, nonce: String, return_to: String) -> Self {
        Self { verifier, nonce, return_to, started: Instant::now() }
    }
}

/// Why a request has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie, or one the server does not know.
    Missing,
    /// Idle for longer than the idle timeout.
    Idle,
    /// Older than the absolute lifetime.
    Expired,
}

/// Every session and sign-in under way.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    absolute: Duration,
    live: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingSignIn>>,
}

impl Sessions {
    /// Sessions that end after `idle` without a request, or `absolute` after sign-in.
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self { idle, absolute, live: Mutex::default(), pending: Mutex::default() }
    }

    /// Keeps a sign-in under `state` until it comes back or expires.
    pub fn begin(&self, state: &str, pending: PendingSignIn) {
        let mut map = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, p| p.started.elapsed() < SIGN_IN_LIFETIME);
        if map.len() >= MAX_PENDING {
            if let Some(oldest) = map.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(key_of(state), pending);
    }

    /// Takes the sign-in started under `state` (once: a second callback finds nothing).
    pub fn take_pending(&self, state: &str) -> Option<PendingSignIn> {
        let mut map = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&key_of(state)).filter(|p| p.started.elapsed() < SIGN_IN_LIFETIME)
    }

    /// Starts a session for `person`; returns the cookie value and the session.
    pub fn start(&self, person: Person, id_token: String) -> (String, Session) {
        let cookie = random_token();
        let now = Instant::now();
        let reference = key_of(&cookie).chars().take(16).collect();
        let session = Session { person, reference, csrf: random_token(), id_token, created: now, last_seen: now };
        let mut map = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, s| self.live_at(s, now).is_ok());
        map.insert(key_of(&cookie), session.clone());
        (cookie, session)
    }

    fn live_at(&self, s: &Session, now: Instant) -> Result<(), NoSession> {
        if now.duration_since(s.created) > self.absolute {
            Err(NoSession::Expired)
        } else if now.duration_since(s.last_seen) > self.idle {
            Err(NoSession::Idle)
        } else {
            Ok(())
        }
    }

    /// The session of `cookie`, if it is live; a request keeps it alive. An ended one is
    /// forgotten.
    pub fn touch(&self, cookie: &str) -> Result<Session, NoSession> {
        let key = key_of(cookie);
        let now = Instant::now();
        let mut map = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(s) = map.get_mut(&key) else { return Err(NoSession::Missing) };
        if let Err(why) = self.live_at(s, now) {
            map.remove(&key);
            return Err(why);
        }
        s.last_seen = now;
        Ok(s.clone())
    }

    /// Ends the session of `cookie`; returns it if it was live.
    pub fn end(&self, cookie: &str) -> Option<Session> {
        let mut map = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&key_of(cookie))
    }

    /// Sessions live now.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        let map = self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.values().filter(|s| self.live_at(s, now).is_ok()).count()
    }
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> Person {
        Person {
            issuer: "http://op".into(),
            subject: "s1".into(),
            name: "Demo".into(),
            org: "XIC01".into(),
            role: "ig-lead".into(),
        }
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_sign_out() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (cookie, s) = sessions.start(person(), "idt".into());
        assert_eq!(sessions.touch(&cookie).map(|t| t.csrf), Ok(s.csrf.clone()));
        assert_eq!(sessions.touch("not-a-session").err(), Some(NoSession::Missing));
        assert!(sessions.end(&cookie).is_some());
        assert_eq!(sessions.touch(&cookie).err(), Some(NoSession::Missing));
    }

    #[test]
    fn an_idle_session_ends() {
        let sessions = Sessions::new(Duration::from_millis(30), Duration::from_secs(600));
        let (cookie, _) = sessions.start(person(), "idt".into());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(sessions.touch(&cookie).err(), Some(NoSession::Idle));
        assert_eq!(sessions.touch(&cookie).err(), Some(NoSession::Missing));
    }

    #[test]
    fn a_session_ends_at_its_absolute_lifetime_even_when_used() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_millis(50));
        let (cookie, _) = sessions.start(person(), "idt".into());
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(10));
            assert!(sessions.touch(&cookie).is_ok());
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sessions.touch(&cookie).err(), Some(NoSession::Expired));
    }

    #[test]
    fn a_sign_in_is_taken_once() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        sessions.begin("st", PendingSignIn::new("v".into(), "n".into(), "/console".into()));
        assert_eq!(sessions.take_pending("st").map(|p| p.nonce), Some("n".into()));
        assert!(sessions.take_pending("st").is_none());
        assert!(sessions.take_pending("other").is_none());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }
}
