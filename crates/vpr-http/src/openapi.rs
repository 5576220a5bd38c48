//! The OpenAPI document, generated from the routes actually registered (utoipa-actix-web), with
//! the request and response bodies described by the JSON Schemas in `schemas/` — the same
//! documents the broker validates against — so the description cannot drift from what is served.

use std::borrow::Cow;

use actix_web::App;
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use utoipa_actix_web::AppExt;

macro_rules! contract_schema {
    ($(#[$meta:meta])* $ty:ident, $name:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub struct $ty;
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                // Replaced by the contract document in `build()`.
                ObjectBuilder::new().into()
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

contract_schema!(/// `schemas/notice.schema.json`
    NoticeInputDoc, "NoticeInput");
contract_schema!(/// `schemas/withdraw.schema.json`
    WithdrawInputDoc, "WithdrawInput");
contract_schema!(/// `schemas/review.schema.json`
    ReviewInputDoc, "ReviewInput");
contract_schema!(/// `schemas/notice-resource.schema.json`
    NoticeResourceDoc, "NoticeResource");
contract_schema!(/// A notice's versions.
    NoticeVersionsDoc, "NoticeVersions");
contract_schema!(/// `schemas/problem.schema.json`
    ProblemDoc, "Problem");
contract_schema!(/// OAuth2 token response.
    TokenResponseDoc, "TokenResponse");
contract_schema!(/// JWK Set.
    JwksDoc, "JwkSet");
contract_schema!(/// `schemas/break-glass-review.schema.json`
    BreakGlassReviewDoc, "BreakGlassReviewInput");
contract_schema!(/// `schemas/lookup.schema.json`
    LookupInputDoc, "LookupInput");
contract_schema!(/// Look-up results.
    LookupResultDoc, "LookupResult");
contract_schema!(/// `schemas/consent.schema.json`
    ConsentInputDoc, "ConsentInput");
contract_schema!(/// `schemas/objection.schema.json`
    ObjectionInputDoc, "ObjectionInput");
contract_schema!(/// `schemas/audit-query.schema.json`
    AuditQueryDoc, "AuditQuery");

/// The response-body contract for notices.
pub const NOTICE_RESOURCE_SCHEMA: &str = include_str!("../../../schemas/notice-resource.schema.json");
/// A notice as disclosed to someone other than its publisher, minimised to a view.
pub const DISCLOSED_NOTICE_SCHEMA: &str = include_str!("../../../schemas/disclosed-notice.schema.json");
/// The problem details contract.
pub const PROBLEM_SCHEMA: &str = include_str!("../../../schemas/problem.schema.json");

fn contract(source: &str) -> Value {
    let mut v: Value = serde_json::from_str(source).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.remove("$schema");
        m.remove("$id");
    }
    v
}

/// Builds the OpenAPI document from the same route configuration the server uses.
pub fn build() -> Value {
    let (_, api) = App::new().into_utoipa_app().configure(crate::server::routes).split_for_parts();
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
    schemas.insert(
        "LookupResult".into(),
        json!({
            "type": "object", "required": ["lookup_id", "purpose", "agreement_version", "results"],
            "properties": {
                "lookup_id": {"type": "string", "format": "uuid", "description": "The audit entry recording this look-up"},
                "purpose": {"type": "string"}, "agreement_version": {"type": "string"},
                "results": {"type": "array", "items": {"$ref": "#/components/schemas/DisclosedNotice"}}
            }
        }),
    );
    schemas.insert("DisclosedNotice".into(), contract(DISCLOSED_NOTICE_SCHEMA));
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
    let security = json!({
        "bearer": {
            "type": "oauth2",
            "description": "Access tokens from the client credentials grant with a private_key_jwt client assertion (RFC 7523).",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {
                "notices:write": "publish, amend, review and withdraw your organisation's notices",
                "notices:read": "read notices",
                "lookups": "look subjects up",
                "subscriptions": "manage subscriptions",
                "audit:read": "read the audit log (IG)",
                "ig:write": "record consents and objections (IG)"
            }}}
        }
    });
    // Every placeholder utoipa registered is replaced by its contract document.
    root.insert("components".into(), json!({ "schemas": schemas, "securitySchemes": security }));
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_is_defined() {
        let doc = build();
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
        let doc = build();
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
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
        }
    }
}
