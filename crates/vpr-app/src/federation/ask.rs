//! The asking side: a look-up relayed to every peer broker in parallel, within the time budget.

use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use vpr_auth::RelayedRequester;
use vpr_store::audit::{AuditedNotice, PeerRecord};

use crate::App;

/// What one peer answered: the record the asking broker's audit entry keeps, and the notices it
/// disclosed (passed on to the requester as they came, never stored here).
#[derive(Debug, Clone)]
pub struct PeerAnswer {
    /// For the audit entry.
    pub record: PeerRecord,
    /// The disclosed notices, as the peer minimised them.
    pub notices: Vec<Value>,
}

/// The hex SHA-256 of a subject's JSON, as the relay names it.
pub fn subject_digest(subject: &Value) -> String {
    let bytes = serde_json::to_vec(subject).unwrap_or_default();
    vpr_audit::hex(&Sha256::digest(bytes))
}

pub(crate) fn failed(peer: &str, outcome: &str, status: Option<u16>, detail: impl Into<String>) -> PeerAnswer {
    PeerAnswer {
        record: PeerRecord {
            broker: peer.to_owned(),
            outcome: outcome.to_owned(),
            status,
            lookup_id: None,
            notices: vec![],
            detail: Some(detail.into()),
        },
        notices: vec![],
    }
}

/// Asks every peer whose circuit is closed, in parallel, for the notices about `subject` that
/// its agreement lets `requester` see; each answers within the budget or is recorded as not
/// having answered. Never fails: every peer's outcome is in the result, in peer order.
pub async fn ask_peers(app: &App, requester: RelayedRequester, subject: Value, request_id: &str) -> Vec<PeerAnswer> {
    let peers: Vec<String> = app.tokens.peers().iter().map(|p| p.id.clone()).collect();
    let budget = app.federation.settings.budget;
    let mut tasks = Vec::with_capacity(peers.len());
    for peer in peers {
        let (app, requester, subject, request_id) =
            (app.clone(), requester.clone(), subject.clone(), request_id.to_owned());
        tasks.push((
            peer.clone(),
            tokio::spawn(async move {
                let started = Instant::now();
                if !app.federation.may_ask(&peer, started) {
                    app.metrics.federation.observe(&peer, "skipped", started.elapsed(), true);
                    return failed(&peer, "skipped", None, "skipped: its circuit is open after repeated failures");
                }
                let answer =
                    match tokio::time::timeout(budget, ask_one(&app, &peer, &requester, &subject, &request_id)).await {
                        Ok(a) => a,
                        Err(_) => failed(&peer, "timeout", None, format!("no answer within {} ms", budget.as_millis())),
                    };
                let ok = matches!(answer.record.outcome.as_str(), "answered" | "refused");
                let now_open = app.federation.record(&peer, ok, Instant::now());
                app.metrics.federation.observe(&peer, &answer.record.outcome, started.elapsed(), now_open);
                answer
            }),
        ));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for (peer, task) in tasks {
        answers.push(
            task.await.unwrap_or_else(|e| failed(&peer, "unavailable", None, format!("the request failed: {e}"))),
        );
    }
    answers
}

/// Asks one peer: a token (cached), a fresh relay, the relayed look-up.
async fn ask_one(
    app: &App,
    peer_id: &str,
    requester: &RelayedRequester,
    subject: &Value,
    request_id: &str,
) -> PeerAnswer {
    let peers = app.tokens.peers();
    let Some(peer) = peers.get(peer_id) else {
        return failed(peer_id, "unavailable", None, "not a configured peer");
    };
    let token = match token_for(app, peer).await {
        Ok(t) => t,
        Err(why) => return failed(peer_id, "unavailable", None, why),
    };
    let own = &peers.own_id;
    let relay = match app.tokens.keys().sign_relay(own, peer_id, requester, app.now()) {
        Ok(r) => r,
        Err(e) => return failed(peer_id, "unavailable", None, format!("cannot sign the relay: {e}")),
    };
    let sent = app
        .federation
        .client
        .post(format!("{}/v1/federation/lookups", peer.base_url))
        .bearer_auth(&token)
        .header("X-Request-Id", request_id)
        .json(&serde_json::json!({"relay": relay, "subject": subject}))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return failed(peer_id, "timeout", None, "no answer within the budget"),
        Err(e) => return failed(peer_id, "unavailable", None, format!("cannot reach the peer: {}", short(&e))),
    };
    let status = response.status().as_u16();
    let body = match read_capped(response).await {
        Ok(b) => b,
        Err(why) => return failed(peer_id, "invalid", Some(status), why),
    };
    match status {
        200 => answered(peer_id, body),
        401 => {
            app.federation.forget_token(peer_id);
            failed(peer_id, "unavailable", Some(status), "the peer did not accept this broker's token")
        }
        403 => failed(peer_id, "refused", Some(status), problem_detail(&body)),
        _ => failed(peer_id, "unavailable", Some(status), format!("the peer answered {status}")),
    }
}

/// The cause of a client error, without the URL.
pub(crate) fn short(e: &reqwest::Error) -> String {
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
}

/// The most a peer's answer may be: enough for [`MAX_RESULTS`] full notices.
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// The most notices a peer may disclose in one answer.
const MAX_RESULTS: usize = 500;

/// The longest text from a peer that is passed on or recorded.
const MAX_DETAIL_CHARS: usize = 300;

/// A peer's answer as JSON, refused past [`MAX_ANSWER_BYTES`].
pub(crate) async fn read_capped(mut response: reqwest::Response) -> Result<Value, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("the answer was cut short: {}", short(&e)))? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Text from a peer, bounded.
fn bounded(text: &str) -> String {
    text.chars().take(MAX_DETAIL_CHARS).collect()
}

pub(crate) fn problem_detail(body: &Value) -> String {
    bounded(body.get("detail").and_then(Value::as_str).unwrap_or("refused by the peer's agreement"))
}

/// The members each view shows (a peer's notice is cut to those of the view it declares, so
/// nothing beyond what its decision allows is passed on whatever the peer sent).
const EXISTENCE_FIELDS: [&str; 7] = ["id", "status", "publisher", "contact", "matched_on", "decision", "broker"];
const SUMMARY_FIELDS: [&str; 8] = [
    "subject_kinds",
    "category",
    "risk_level",
    "aggravating_factors",
    "medical_factor_operative",
    "safety_advice",
    "advice_text",
    "review_date",
];
const FULL_FIELDS: [&str; 7] =
    ["version", "subject", "incident_date", "subject_informed", "lawful_basis", "created_at", "updated_at"];

/// A peer's notice cut to the members of its declared view (`restricted` only when the decision
/// says so, above existence).
pub(crate) fn cut_to_view(mut notice: Value) -> Option<Value> {
    let d = notice.get("decision")?;
    let view = d.get("view")?.as_str()?.to_owned();
    let restricted = d.get("restricted").and_then(Value::as_bool).unwrap_or(false);
    let allowed: Vec<&str> = match view.as_str() {
        "existence" => EXISTENCE_FIELDS.to_vec(),
        "summary" => [&EXISTENCE_FIELDS[..], &SUMMARY_FIELDS[..]].concat(),
        "full" => [&EXISTENCE_FIELDS[..], &SUMMARY_FIELDS[..], &FULL_FIELDS[..]].concat(),
        _ => return None,
    };
    let map = notice.as_object_mut()?;
    map.retain(|k, _| allowed.contains(&k.as_str()) || (k == "restricted" && restricted && view != "existence"));
    Some(notice)
}

/// The disclosed-notice schema a peer's results are held to, so nothing but a minimised notice
/// is passed on to a partner.
fn disclosed_notice_schema() -> Option<&'static jsonschema::Validator> {
    static SCHEMA: std::sync::OnceLock<Result<jsonschema::Validator, String>> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            vpr_domain::validate::compile_schema(include_str!("../../../../schemas/disclosed-notice.schema.json"))
        })
        .as_ref()
        .ok()
}

/// A 200 answer: its notices, each checked against the disclosed-notice schema and for what
/// the audit entry needs.
fn answered(peer_id: &str, body: Value) -> PeerAnswer {
    let lookup_id = body.get("lookup_id").and_then(Value::as_str).filter(|id| uuid::Uuid::parse_str(id).is_ok());
    let Some(lookup_id) = lookup_id.map(str::to_owned) else {
        return failed(peer_id, "invalid", Some(200), "the answer has no `lookup_id` (a UUID)");
    };
    let Some(results) = body.get("results").and_then(Value::as_array) else {
        return failed(peer_id, "invalid", Some(200), "the answer has no `results`");
    };
    if results.len() > MAX_RESULTS {
        return failed(peer_id, "invalid", Some(200), format!("the answer has over {MAX_RESULTS} notices"));
    }
    let mut records: Vec<AuditedNotice> = Vec::with_capacity(results.len());
    let mut notices = Vec::with_capacity(results.len());
    let Some(schema) = disclosed_notice_schema() else {
        return failed(peer_id, "invalid", Some(200), "the disclosed-notice schema is unavailable");
    };
    for r in results {
        if !schema.is_valid(r) {
            return failed(peer_id, "invalid", Some(200), "a result is not a disclosed notice");
        }
        let (Some(a), Some(cut)) = (audited_remote(r), cut_to_view(r.clone())) else {
            return failed(peer_id, "invalid", Some(200), "a result has no id or no known view");
        };
        if records.iter().any(|seen| seen.id == a.id) {
            return failed(peer_id, "invalid", Some(200), "a notice is disclosed twice");
        }
        records.push(a);
        notices.push(cut);
    }
    PeerAnswer {
        record: PeerRecord {
            broker: peer_id.to_owned(),
            outcome: "answered".to_owned(),
            status: Some(200),
            lookup_id: Some(lookup_id),
            notices: records,
            detail: None,
        },
        notices,
    }
}

/// What the asking broker records of a notice a peer disclosed: its id, the version shown
/// (0 when the view does not show one) and the peer's decision.
pub(crate) fn audited_remote(r: &Value) -> Option<AuditedNotice> {
    let d = r.get("decision")?;
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    Some(AuditedNotice {
        id: r.get("id")?.as_str()?.to_owned(),
        version: r.get("version").and_then(Value::as_i64).unwrap_or(0),
        decision: "permit".to_owned(),
        view: Some(d.get("view")?.as_str()?.to_owned()),
        restricted: d.get("restricted").and_then(Value::as_bool).unwrap_or(false),
        lawful_basis: strings(d.get("lawful_basis")),
        clauses: strings(d.get("clauses")),
    })
}

/// This broker's access token at `peer`, by `private_key_jwt` with the `federation` scope.
pub(crate) async fn token_for(app: &App, peer: &vpr_auth::Peer) -> Result<String, String> {
    let now = Instant::now();
    if let Some(t) = app.federation.cached_token(&peer.id, now) {
        return Ok(t);
    }
    let own = &app.tokens.peers().own_id;
    let assertion = app
        .tokens
        .keys()
        .client_assertion(own, &peer.token_endpoint(), app.now())
        .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", vpr_auth::tokens::JWT_BEARER),
        ("client_assertion", assertion.as_str()),
        ("scope", "federation"),
    ];
    let response = app
        .federation
        .client
        .post(peer.token_endpoint())
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("cannot reach the peer's token endpoint: {}", short(&e)))?;
    let status = response.status().as_u16();
    // Capped like every answer from a peer: an endless body is cut off, not buffered.
    let body: Value = read_capped(response).await?;
    let token = body.get("access_token").and_then(Value::as_str).filter(|_| status == 200);
    let Some(token) = token else {
        let why = bounded(body.get("error_description").and_then(Value::as_str).unwrap_or("no token"));
        return Err(format!("the peer's token endpoint answered {status}: {why}"));
    };
    let lifetime = Duration::from_secs(body.get("expires_in").and_then(Value::as_u64).unwrap_or(60));
    app.federation.keep_token(&peer.id, token.to_owned(), lifetime, now);
    Ok(token.to_owned())
}
