//! The audit log as FHIR `AuditEvent`s for IG tools, in the shape of IHE Basic Audit Log
//! Patterns (BALP): who (organisation, system, user, role), what (the Flags decided on, with
//! their view and decision), why (purpose of use), under which policy (the agreement's clauses)
//! and with what outcome. IG roles only; every export is itself audited. Subjects appear only as
//! the blind references the audit holds, never as identifiers.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use vpr_store::audit::{AuditEntry, StoredAuditEntry};

use super::flag::vio_label;
use super::{coding, ODS_CODE, VPR_FHIR};
use crate::App;

pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The RESTful interaction an action was, and its AuditEvent action code.
fn interaction(action: &str) -> (&'static str, &'static str) {
    match action {
        "lookup" | "fhir-search" | "feed" | "fhir-events" => ("search-type", "E"),
        "read" | "fhir-read" | "deliver" => ("read", "R"),
        "subscribe" | "consent" | "objection" => ("create", "C"),
        "unsubscribe" => ("delete", "D"),
        _ => ("operation", "E"),
    }
}

/// The requesting agent: the organisation, its user and role, and the clauses that decided.
fn requester(app: &App, e: &AuditEntry) -> Value {
    let policy: Vec<String> =
        e.clauses.iter().map(|c| format!("urn:vpr-broker:agreement:{}:clause:{c}", e.agreement_version)).collect();
    let org_name = app.tokens.registry().partner(&e.actor_org).map(|p| p.name.clone());
    let mut requester = json!({
        "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP", "information recipient")]},
        "who": {"identifier": {"system": ODS_CODE, "value": e.actor_org}, "display": org_name.unwrap_or_else(|| e.actor_org.clone())},
        "requestor": true,
    });
    if let Some(user) = &e.actor_user {
        requester["altId"] = json!(user);
    }
    if let Some(role) = &e.actor_role {
        requester["role"] = json!([{"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/role"), role, role)]}]);
    }
    if !policy.is_empty() {
        requester["policy"] = json!(policy);
    }
    requester
}

/// The entities: each Flag decided on, each subject reference, and the entry itself.
fn entities(e: &AuditEntry) -> Vec<Value> {
    let mut entities: Vec<Value> = e
        .notices
        .iter()
        .map(|n| {
            let mut detail = vec![
                json!({"type": "decision", "valueString": n.decision}),
                json!({"type": "version", "valueString": n.version.to_string()}),
            ];
            if let Some(v) = &n.view {
                detail.push(json!({"type": "view", "valueString": v}));
            }
            if !n.lawful_basis.is_empty() {
                detail.push(json!({"type": "lawful-basis", "valueString": n.lawful_basis.join(" ")}));
            }
            if !n.clauses.is_empty() {
                detail.push(json!({"type": "clauses", "valueString": n.clauses.join(" ")}));
            }
            json!({
                "what": {"reference": format!("Flag/{}", n.id)},
                "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
                "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource"),
                "securityLabel": [vio_label()],
                "detail": detail,
            })
        })
        .collect();
    for subject in &e.subject_refs {
        entities.push(json!({
            "what": {"identifier": {"system": "urn:vpr-broker:subject-reference", "value": subject}},
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
        }));
    }
    // A detail needs a value: empty ones are left out.
    let mut context = Vec::new();
    let mut add = |kind: &str, value: &str| {
        if !value.is_empty() {
            context.push(json!({"type": kind, "valueString": value}));
        }
    };
    add("action", &e.action);
    add("context-reference", e.context_ref.as_deref().unwrap_or_default());
    if e.break_glass {
        add("break-glass", e.justification.as_deref().unwrap_or("asserted"));
        add("ig-review", e.ig_review.as_deref().unwrap_or_default());
    }
    add("request-id", &e.request_id);
    add("http-outcome", &e.outcome.to_string());
    entities.push(json!({
        "what": {"identifier": {"system": "urn:vpr-broker:audit-entry", "value": e.id.to_string()}},
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
        "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "24", "Query"),
        "detail": context,
    }));
    entities
}

/// One audit entry as an `AuditEvent`.
pub fn audit_event(app: &App, s: &StoredAuditEntry) -> Value {
    let e = &s.entry;
    let (subtype, action) = interaction(&e.action);
    let refused = matches!(e.decision.as_str(), "deny" | "refused");
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": e.id,
        "meta": {"security": [vio_label()]},
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"),
        "subtype": [coding("http://hl7.org/fhir/restful-interaction", subtype, subtype)],
        "action": action,
        "recorded": instant(e.at),
        "outcome": if refused { "4" } else { "0" },
        "outcomeDesc": e.decision,
        "agent": [
            requester(app, e),
            {
                "type": {"coding": [coding("http://dicom.nema.org/resources/ontology/DCM", "110150", "Application")]},
                "who": {"identifier": {"system": format!("{VPR_FHIR}/Id/client-id"), "value": e.actor_system}},
                "requestor": false,
            },
        ],
        "source": {
            "site": "vpr-broker",
            "observer": {"display": app.tokens.settings().issuer.clone()},
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
        "entity": entities(e),
    });
    if let Some(p) = &e.purpose {
        event["purposeOfEvent"] = json!([{"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/purpose-of-use"), p, p)]}]);
    }
    event
}
