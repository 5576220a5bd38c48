//! The OpenAPI document, generated from the routes actually registered (utoipa-actix-web), with
//! the request and response bodies described by the JSON Schemas in `schemas/` — the same
//! documents the broker validates against — so the description cannot drift from what is served.

use actix_web::App;
use serde_json::{json, Map, Value};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;

/// The response-body contract for notices.
pub const NOTICE_RESOURCE_SCHEMA: &str = include_str!("../../../schemas/notice-resource.schema.json");
/// A notice as disclosed to someone other than its publisher, minimised to a view.
pub const DISCLOSED_NOTICE_SCHEMA: &str = include_str!("../../../schemas/disclosed-notice.schema.json");
/// The problem details contract.
pub const PROBLEM_SCHEMA: &str = include_str!("../../../schemas/problem.schema.json");
/// A subscription as its owner sees it.
pub const SUBSCRIPTION_RESOURCE_SCHEMA: &str = include_str!("../../../schemas/subscription-resource.schema.json");
/// One subscription event, pushed or read from the feed.
pub const SUBSCRIPTION_EVENT_SCHEMA: &str = include_str!("../../../schemas/subscription-event.schema.json");

/// References between contract files become references between components.
fn component_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if r == "disclosed-notice.schema.json" {
                    *r = "#/components/schemas/DisclosedNotice".into();
                }
            }
            m.values_mut().for_each(component_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(component_refs),
        _ => {}
    }
}

fn contract(source: &str) -> Value {
    let mut v: Value = serde_json::from_str(source).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.remove("$schema");
        m.remove("$id");
    }
    component_refs(&mut v);
    v
}

/// Builds the OpenAPI document from the route configuration the server uses (`routes`).
pub fn build(routes: fn(&mut ServiceConfig)) -> Value {
    let (_, api) = App::new().into_utoipa_app().configure(routes).split_for_parts();
    let Ok(Value::Object(mut root)) = serde_json::to_value(&api) else {
        return json!({});
    };
    root.insert(
        "info".into(),
        json!({
            "title": "vpr-broker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Federated broker for violence-risk notices between the partners of an Integrated Care System. \
                Errors are RFC 9457 problem details. Authenticate with OAuth2 client credentials and a signed JWT assertion (private_key_jwt).",
        }),
    );
    // Every placeholder utoipa registered is replaced by its contract document.
    root.insert("components".into(), json!({ "schemas": schemas(), "securitySchemes": security() }));
    if let Some(Value::Object(paths)) = root.get_mut("paths") {
        paths.iter_mut().for_each(|(path, ops)| edge_responses(path, ops));
    }
    Value::Object(root)
}

/// The answers every operation of a kind can give, whatever its handler, where the handler's
/// own description does not list them: where a token is needed 401 (none, or not valid), 403
/// (a scope it lacks), 429 (the system's rate limit, `crate::limits`) and 503 (the database
/// out of reach); where a body is read 400 (not parseable), 413 (too large), 415 (not JSON) and
/// 422 (failed its rules). FHIR operations answer an `OperationOutcome`, the rest problem+json.
fn edge_responses(path: &str, ops: &mut Value) {
    let content = if path.starts_with("/fhir/") {
        json!({"application/fhir+json": {"schema": {"type": "object", "description": "An OperationOutcome"}}})
    } else {
        json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
    };
    let problem = |description: &str| json!({"description": description, "content": content});
    let Value::Object(ops) = ops else { return };
    for op in ops.values_mut() {
        let Value::Object(op) = op else { continue };
        let secured = op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
        let json_body = op
            .get("requestBody")
            .and_then(|b| b.get("content"))
            .and_then(Value::as_object)
            .map(|c| c.keys().any(|k| k.contains("json")));
        let Some(Value::Object(responses)) = op.get_mut("responses") else { continue };
        let mut add = |status: &str, answer: Value| {
            responses.entry(status.to_owned()).or_insert(answer);
        };
        if secured {
            add("401", problem("No access token, or one that is not valid (expired, revoked, not this broker's)"));
            add("403", problem("The token lacks a scope this operation needs, or the agreement refuses (audited)"));
            add(
                "429",
                json!({
                    "description": "Over this system's rate limit (`limits`, or its own in the registry): `Retry-After` says when to try again; `RateLimit-Policy` and `RateLimit` are on every answer",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    "content": content,
                }),
            );
            add(
                "503",
                json!({
                    "description": "The database (or the audit write a disclosure depends on) is out of reach: nothing was done; retry after `Retry-After`",
                    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                    "content": content,
                }),
            );
        }
        if let Some(is_json) = json_body {
            add("400", problem("The body cannot be parsed"));
            add("413", problem("The request body is larger than the operation accepts"));
            if is_json {
                add("415", problem("The body is not `application/json`"));
                add(
                    "422",
                    problem("The body failed its schema or the domain rules: `errors` names each field and rule"),
                );
            }
        }
    }
}

/// A look-up's answer: this broker's notices and its peers', and the peers that did not answer.
fn lookup_result() -> Value {
    json!({
        "type": "object", "required": ["lookup_id", "purpose", "agreement_version", "results"],
        "properties": {
            "lookup_id": {"type": "string", "format": "uuid", "description": "The audit entry recording this look-up"},
            "purpose": {"type": "string"}, "agreement_version": {"type": "string"},
            "results": {
                "type": "array", "items": {"$ref": "#/components/schemas/DisclosedNotice"},
                "description": "This broker's notices, then each peer broker's as its own agreement decided them (`broker` says whose)"
            },
            "incomplete": {
                "type": "array",
                "description": "Present when the broker federates: the peer brokers that did not answer in time, refused, or are skipped while failing",
                "items": {
                    "type": "object", "required": ["broker", "reason", "detail"],
                    "properties": {
                        "broker": {"type": "string"},
                        "reason": {"enum": ["refused", "unavailable", "timeout", "invalid", "skipped"]},
                        "detail": {"type": "string"}
                    }
                }
            }
        }
    })
}

/// The request and response bodies: the contract documents, and the shapes described here.
fn schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert("NoticeInput".into(), contract(vpr_domain::validate::BodySchema::Notice.source()));
    schemas.insert("WithdrawInput".into(), contract(vpr_domain::validate::BodySchema::Withdraw.source()));
    schemas.insert("ReviewInput".into(), contract(vpr_domain::validate::BodySchema::Review.source()));
    schemas.insert("NoticeResource".into(), contract(NOTICE_RESOURCE_SCHEMA));
    schemas
        .insert("BreakGlassReviewInput".into(), contract(vpr_domain::validate::BodySchema::BreakGlassReview.source()));
    schemas.insert("LookupInput".into(), contract(vpr_domain::validate::BodySchema::Lookup.source()));
    schemas.insert("ConsentInput".into(), contract(vpr_domain::validate::BodySchema::Consent.source()));
    schemas.insert("ObjectionInput".into(), contract(vpr_domain::validate::BodySchema::Objection.source()));
    schemas.insert("AuditQuery".into(), contract(vpr_domain::validate::BodySchema::AuditQuery.source()));
    schemas.insert("LookupResult".into(), lookup_result());
    schemas.insert("RelayedLookupInput".into(), contract(vpr_domain::validate::BodySchema::RelayedLookup.source()));
    schemas.insert(
        "RelayedSubscriptionInput".into(),
        contract(vpr_domain::validate::BodySchema::RelayedSubscription.source()),
    );
    schemas.insert("DisclosedNotice".into(), contract(DISCLOSED_NOTICE_SCHEMA));
    schemas.insert("SubscriptionInput".into(), contract(vpr_domain::validate::BodySchema::Subscription.source()));
    schemas.insert(
        "SubscriptionCohortChange".into(),
        contract(vpr_domain::validate::BodySchema::SubscriptionCohort.source()),
    );
    schemas.insert(
        "SubscriptionApprovalInput".into(),
        contract(vpr_domain::validate::BodySchema::SubscriptionApproval.source()),
    );
    schemas.insert("RedeliverInput".into(), contract(vpr_domain::validate::BodySchema::Redeliver.source()));
    schemas.insert("Subscription".into(), contract(SUBSCRIPTION_RESOURCE_SCHEMA));
    schemas.insert("SubscriptionEvent".into(), contract(SUBSCRIPTION_EVENT_SCHEMA));
    schemas.insert(
        "EventFeed".into(),
        json!({
            "type": "object", "required": ["subscription_id", "events", "next_after", "last_event_number"],
            "properties": {
                "subscription_id": {"type": "string", "format": "uuid"},
                "tag": {"type": ["string", "null"]},
                "feed_id": {"type": ["string", "null"], "format": "uuid", "description": "The audit entry recording this read (none when no events were returned)"},
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/SubscriptionEvent"}},
                "next_after": {"type": "integer", "description": "Pass as `after` to continue"},
                "last_event_number": {"type": "integer"}
            }
        }),
    );
    wire_schemas(&mut schemas);
    schemas
}

/// The bodies with no contract document of their own.
fn wire_schemas(schemas: &mut Map<String, Value>) {
    schemas.insert(
        "WebhookEvent".into(),
        json!({
            "description": "The claims of a webhook body: a compact JWS (`typ` `vpr-event+jwt`, ES256, `kid` in `/.well-known/jwks.json`), encrypted to the subscriber's key as a compact JWE (`cty` `JWT`, `enc` A256GCM) when it registered one. Sent as `application/jose` with headers `VPR-Event-Id`, `VPR-Event-Number`, `VPR-Subscription-Id`, `VPR-Timestamp`, `VPR-Delivery-Attempt`. Any 2xx acknowledges.",
            "type": "object", "required": ["iss", "aud", "sub", "iat", "jti", "subscription", "audit_id", "event"],
            "properties": {
                "iss": {"type": "string", "description": "The broker's public URL"},
                "aud": {"type": "string", "description": "The subscribing system's client id"},
                "sub": {"type": "string", "format": "uuid", "description": "The subscription"},
                "iat": {"type": "integer"},
                "jti": {"type": "string", "format": "uuid", "description": "The event id"},
                "subscription": {"type": "object", "properties": {"id": {"type": "string"}, "tag": {"type": ["string", "null"]}}},
                "audit_id": {"type": "string", "format": "uuid", "description": "The audit entry recording this disclosure"},
                "event": {"$ref": "#/components/schemas/SubscriptionEvent"}
            }
        }),
    );
    schemas.insert("Problem".into(), contract(PROBLEM_SCHEMA));
    schemas.insert(
        "NoticeVersions".into(),
        json!({
            "type": "object", "required": ["notice_id", "versions"],
            "properties": {
                "notice_id": {"type": "string", "format": "uuid"},
                "versions": {"type": "array", "items": {"$ref": "#/components/schemas/NoticeResource"}}
            }
        }),
    );
    schemas.insert(
        "TokenResponse".into(),
        json!({
            "type": "object", "required": ["access_token", "token_type", "expires_in", "scope"],
            "properties": {
                "access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer"}, "scope": {"type": "string"}
            }
        }),
    );
    schemas.insert(
        "JwkSet".into(),
        json!({"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}}),
    );
}

/// The OAuth2 security scheme and its scopes.
fn security() -> Value {
    json!({
        "bearer": {
            "type": "oauth2",
            "description": "Access tokens from the client credentials grant with a private_key_jwt client assertion (RFC 7523).",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {
                "notices:write": "publish, amend, review and withdraw your organisation's notices",
                "notices:read": "read notices",
                "lookups": "look subjects up",
                "subscriptions": "subscribe to notice changes and read their feeds",
                "audit:read": "read the audit log (IG)",
                "ig:write": "record consents and objections (IG)",
                "federation": "relay look-ups for partners you vouch for (peer brokers only)"
            }}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_is_defined() {
        let doc = build(crate::server::routes);
        let text = doc.to_string();
        for name in [
            "NoticeInput",
            "NoticeResource",
            "Problem",
            "WithdrawInput",
            "ReviewInput",
            "NoticeVersions",
            "TokenResponse",
            "JwkSet",
        ] {
            assert!(doc["components"]["schemas"][name].is_object(), "{name} missing");
        }
        let mut rest = text.as_str();
        let prefix = "#/components/schemas/";
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(doc["components"]["schemas"][&name].is_object(), "{name} referenced but not defined");
        }
    }

    #[test]
    fn lists_the_public_contract_paths() {
        let doc = build(crate::server::routes);
        for (path, method) in [
            ("/oauth2/token", "post"),
            ("/.well-known/jwks.json", "get"),
            ("/.well-known/oauth-authorization-server", "get"),
            ("/v1/notices", "post"),
            ("/v1/notices/{id}", "get"),
            ("/v1/notices/{id}", "put"),
            ("/v1/notices/{id}/withdraw", "post"),
            ("/v1/notices/{id}/review", "post"),
            ("/v1/notices/{id}/versions", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/openapi.json", "get"),
            ("/v1/subscriptions", "post"),
            ("/v1/subscriptions", "get"),
            ("/v1/subscriptions/{id}", "get"),
            ("/v1/subscriptions/{id}", "delete"),
            ("/v1/subscriptions/{id}/events", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
        }
    }
}
