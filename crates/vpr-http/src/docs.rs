//! Placeholder types naming the contract documents in `schemas/`, for the handlers' OpenAPI
//! annotations; [`crate::openapi::build`] puts each document in its place.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

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
contract_schema!(/// `schemas/relayed-lookup.schema.json`
    RelayedLookupDoc, "RelayedLookupInput");
contract_schema!(/// `schemas/relayed-subscription.schema.json`
    RelayedSubscriptionDoc, "RelayedSubscriptionInput");
contract_schema!(/// `schemas/consent.schema.json`
    ConsentInputDoc, "ConsentInput");
contract_schema!(/// `schemas/objection.schema.json`
    ObjectionInputDoc, "ObjectionInput");
contract_schema!(/// `schemas/audit-query.schema.json`
    AuditQueryDoc, "AuditQuery");
contract_schema!(/// `schemas/subscription.schema.json`
    SubscriptionInputDoc, "SubscriptionInput");
contract_schema!(/// `schemas/subscription-resource.schema.json`
    SubscriptionDoc, "Subscription");
contract_schema!(/// The feed of a subscription's events.
    EventFeedDoc, "EventFeed");
contract_schema!(/// `schemas/subscription-cohort.schema.json`
    CohortChangeDoc, "SubscriptionCohortChange");
contract_schema!(/// `schemas/subscription-approval.schema.json`
    ApprovalInputDoc, "SubscriptionApprovalInput");
contract_schema!(/// `schemas/redeliver.schema.json`
    RedeliverInputDoc, "RedeliverInput");

/// The OpenAPI document served at `/openapi.json` (built once at start).
#[derive(Debug, Clone)]
pub struct OpenApiDoc(pub serde_json::Value);
