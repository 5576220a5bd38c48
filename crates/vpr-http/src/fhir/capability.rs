//! `/fhir/R4/metadata`: the CapabilityStatement, built from [`SERVED`], the one list of what
//! the facade serves (a test requests every entry and checks it is routed).

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use serde_json::{json, Value};

use super::{fhir_ok, BACKPORT, FHIR_VERSION, TOPIC, VPR_FHIR};
use vpr_app::App;

/// A search parameter a resource supports.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Its type.
    pub kind: &'static str,
    /// What it means here.
    pub doc: &'static str,
}

/// What is served for one resource type.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// The resource type.
    pub resource: &'static str,
    /// Profiles its instances claim.
    pub profiles: &'static [&'static str],
    /// Interactions (`read`, `search-type`, `create`, `delete`).
    pub interactions: &'static [&'static str],
    /// Search parameters.
    pub params: &'static [Param],
    /// Operations on instances (`$status`, `$events`).
    pub operations: &'static [&'static str],
}

/// When what is served last changed (bump with [`SERVED`]).
pub const CAPABILITY_DATE: &str = "2026-11-22";

/// Everything the FHIR facade serves.
pub const SERVED: &[Served] = &[
    Served {
        resource: "Flag",
        profiles: &[super::UK_CORE_FLAG],
        interactions: &["read", "search-type"],
        params: &[
            Param { name: "patient.identifier", kind: "token", doc: "The patient's NHS number: https://fhir.nhs.uk/Id/nhs-number|<n> (also patient:identifier and subject:identifier); required" },
            Param { name: "status", kind: "token", doc: "active | inactive | entered-in-error" },
            Param { name: "_lastUpdated", kind: "date", doc: "When the notice last changed (ge, gt, le, lt, eq)" },
        ],
        operations: &[],
    },
    Served {
        resource: "Subscription",
        profiles: &["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"],
        interactions: &["create", "read", "delete"],
        params: &[],
        operations: &["status", "events"],
    },
    Served {
        resource: "AuditEvent",
        profiles: &[],
        interactions: &["search-type"],
        params: &[
            Param { name: "date", kind: "date", doc: "When the decision was recorded (ge, gt, le, lt)" },
            Param { name: "agent", kind: "reference", doc: "The acting organisation's ODS code" },
            Param { name: "altid", kind: "token", doc: "The acting user" },
            Param { name: "agent-role", kind: "token", doc: "The user's role" },
            Param { name: "purpose", kind: "token", doc: "Purpose of use" },
            Param { name: "entity", kind: "reference", doc: "Flag/<id>: decisions on that notice" },
        ],
        operations: &[],
    },
];

/// The CapabilityStatement.
pub fn capability_statement(app: &App) -> Value {
    let resources: Vec<Value> = SERVED
        .iter()
        .map(|s| {
            let mut r = json!({
                "type": s.resource,
                "interaction": s.interactions.iter().map(|i| json!({"code": i})).collect::<Vec<_>>(),
                "searchParam": s.params.iter().map(|p| json!({"name": p.name, "type": p.kind, "documentation": p.doc})).collect::<Vec<_>>(),
            });
            if !s.profiles.is_empty() {
                r["supportedProfile"] = json!(s.profiles);
            }
            if !s.operations.is_empty() {
                r["operation"] = json!(s
                    .operations
                    .iter()
                    .map(|o| json!({"name": o, "definition": format!("http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-{o}")}))
                    .collect::<Vec<_>>());
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "extension": [{
            "url": format!("{BACKPORT}/capabilitystatement-subscriptiontopic-canonical"),
            "valueCanonical": TOPIC,
        }],
        "url": format!("{}/metadata", super::base(app)),
        "name": "VprBrokerFhirFacade",
        "title": "vpr-broker FHIR R4 facade: violence-risk flags for shared care records",
        "status": "active",
        "date": CAPABILITY_DATE,
        "publisher": app.tokens.registry().ics.name,
        "kind": "instance",
        "software": {"name": "vpr-broker", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Violence-risk notices as Flags, decided by the ICS data-sharing agreement and audited on every read", "url": super::base(app)},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": format!("Authenticate with an OAuth2 access token (client credentials, private_key_jwt). Reads name a purpose of use, user and role in the VPR-Purpose, VPR-User-Id and VPR-User-Role headers. Codes and extensions of the broker's own are under {VPR_FHIR}."),
            "security": {"service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth", "display": "OAuth"}]}]},
            "resource": resources,
        }],
    })
}

/// The CapabilityStatement: exactly what the facade serves.
#[utoipa::path(
    tag = "fhir",
    responses((status = 200, description = "The CapabilityStatement", body = Object, content_type = "application/fhir+json")),
)]
#[get("/fhir/R4/metadata")]
pub async fn metadata(app: web::Data<App>) -> HttpResponse {
    fhir_ok(StatusCode::OK, &capability_statement(&app))
}
