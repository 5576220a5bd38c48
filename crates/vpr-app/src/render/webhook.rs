//! The body of a VPR webhook push: the decided event in a JWS signed by the broker, encrypted
//! to the subscriber's key when it gave one.

use serde_json::{json, Map, Value};
use uuid::Uuid;
use vpr_auth::EncryptionKey;
use vpr_store::subscriptions::Subscription;

use super::event::DecidedEvent;
use crate::App;

/// The signed (and, if the subscriber gave a key, encrypted) body of one webhook push.
pub fn webhook_body(app: &App, sub: &Subscription, event: &DecidedEvent, audit_id: Uuid) -> Result<String, String> {
    let settings = app.tokens.settings();
    let claims = json!({
        "iss": settings.issuer,
        "aud": sub.owner_system,
        "sub": sub.id,
        "iat": app.clock.now().timestamp(),
        "jti": event.event.event_id,
        "subscription": {"id": sub.id, "tag": sub.tag, "status": sub.status},
        "audit_id": audit_id,
        "event": event.to_json(),
    });
    sealed(app, sub, &claims)
}

/// Event claims signed by this broker, and encrypted to the subscriber's key when it gave one.
pub fn sealed(app: &App, sub: &Subscription, claims: &Value) -> Result<String, String> {
    let jws = app.tokens.keys().sign_event(claims).map_err(|e| e.to_string())?;
    match &sub.encryption_jwk {
        None => Ok(jws),
        Some(text) => {
            let map: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let key = EncryptionKey::from_jwk(&map)?;
            key.encrypt(&jws).map_err(|e| e.to_string())
        }
    }
}
