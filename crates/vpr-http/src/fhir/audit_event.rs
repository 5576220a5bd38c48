//! The audit log as FHIR `AuditEvent`s for IG tools, in the shape of IHE Basic Audit Log
//! Patterns (BALP): who (organisation, system, user, role), what (the Flags decided on, with
//! their view and decision), why (purpose of use), under which policy (the agreement's clauses)
//! and with what outcome. IG roles only; every export is itself audited. Subjects appear only as
//! the blind references the audit holds, never as identifiers.

#![expect(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing reads yield Null for a missing key, and writes go to objects built here"
)]

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::Scope;
use vpr_domain::FieldError;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};
use vpr_store::review::AuditQuery;

use super::flag::vio_label;
use super::{base, coding, fhir_ok, FhirError, ODS_CODE, VPR_FHIR};
use crate::disclose::audit_base;
use crate::error::ApiError;
use crate::handlers::review::reviewer;
use crate::pipeline::{authenticate, blocking};
use crate::AppState;

fn instant(t: DateTime<Utc>) -> String {
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

/// One audit entry as an `AuditEvent`.
pub fn audit_event(state: &AppState, s: &StoredAuditEntry) -> Value {
    let e = &s.entry;
    let (subtype, action) = interaction(&e.action);
    let refused = matches!(e.decision.as_str(), "deny" | "refused");
    let policy: Vec<String> =
        e.clauses.iter().map(|c| format!("urn:vpr-broker:agreement:{}:clause:{c}", e.agreement_version)).collect();
    let org_name = state.tokens.registry().partner(&e.actor_org).map(|p| p.name.clone());
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
            requester,
            {
                "type": {"coding": [coding("http://dicom.nema.org/resources/ontology/DCM", "110150", "Application")]},
                "who": {"identifier": {"system": format!("{VPR_FHIR}/Id/client-id"), "value": e.actor_system}},
                "requestor": false,
            },
        ],
        "source": {
            "site": "vpr-broker",
            "observer": {"display": state.tokens.settings().issuer.clone()},
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
        "entity": entities,
    });
    if let Some(p) = &e.purpose {
        event["purposeOfEvent"] = json!([{"coding": [coding(&format!("{VPR_FHIR}/CodeSystem/purpose-of-use"), p, p)]}]);
    }
    event
}

fn bad(param: &str, rule: &str, detail: &str) -> ApiError {
    ApiError::Validation(vec![FieldError::new(format!("/{param}"), rule, detail)])
}

fn when(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
    })
}

/// The search: filters, page size, and where the page starts (newest first).
fn query(params: &[(String, String)]) -> Result<(AuditQuery, i64, Option<i64>), ApiError> {
    let mut q = AuditQuery::default();
    let mut count = 100;
    let mut cursor = None;
    for (name, value) in params {
        match name.as_str() {
            "date" => {
                let (prefix, rest) = value.split_at(value.len().min(2));
                let at = when(rest)
                    .ok_or_else(|| bad("date", "date", "give `ge`, `gt`, `le` or `lt` and a date or instant"))?;
                match prefix {
                    "ge" | "gt" => q.from = Some(at),
                    "le" | "lt" => q.to = Some(at),
                    _ => return Err(bad("date", "date", "give `ge`, `gt`, `le` or `lt` and a date or instant")),
                }
            }
            "agent" => q.org = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
            "altid" => q.user = Some(value.clone()),
            "agent-role" => q.role = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
            "purpose" => q.purpose = Some(value.rsplit('|').next().unwrap_or(value).to_owned()),
            "entity" => {
                let id = value.strip_prefix("Flag/").unwrap_or(value);
                q.notice =
                    Some(Uuid::parse_str(id).map_err(|_| bad("entity", "reference", "`entity` is `Flag/<id>`"))?);
            }
            "_count" => {
                count = value
                    .parse()
                    .ok()
                    .filter(|c| (1..=500).contains(c))
                    .ok_or_else(|| bad("_count", "range", "`_count` must be 1 to 500"))?;
            }
            "_cursor" => {
                cursor =
                    Some(value.parse().map_err(|_| bad("_cursor", "cursor", "`_cursor` comes from a `next` link"))?)
            }
            "_format" if value.contains("json") => {}
            other => return Err(bad(other, "unknown-parameter", "not a supported search parameter")),
        }
    }
    Ok((q, count, cursor))
}

/// Audit entries as AuditEvents (IG roles only), newest first, for IG tools.
#[utoipa::path(
    tag = "fhir",
    params(
        ("date" = Option<String>, Query, description = "`ge`/`gt` and `le`/`lt` with a date or instant (repeat for a range)"),
        ("agent" = Option<String>, Query, description = "The acting organisation's ODS code"),
        ("altid" = Option<String>, Query, description = "The acting user"),
        ("agent-role" = Option<String>, Query, description = "The user's role"),
        ("purpose" = Option<String>, Query, description = "Purpose of use"),
        ("entity" = Option<String>, Query, description = "`Flag/<id>`: entries deciding on that notice"),
        ("_count" = Option<i64>, Query, description = "1 to 500 (default 100)"),
        ("_cursor" = Option<i64>, Query, description = "From a `next` link"),
        ("VPR-User-Id" = String, Header, description = "The IG user"),
        ("VPR-User-Role" = String, Header, description = "An IG role: ig-lead, caldicott-guardian, dpo"),
    ),
    responses(
        (status = 200, description = "A searchset Bundle of AuditEvents", body = Object, content_type = "application/fhir+json"),
        (status = 403, description = "Not an IG role (audited)", body = Object, content_type = "application/fhir+json"),
        (status = 422, description = "A bad search parameter", body = Object, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["audit:read"]))
)]
#[get("/fhir/R4/AuditEvent")]
pub async fn search(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, FhirError> {
    let principal = authenticate(&state, &req, Scope::AuditRead)?;
    let who = reviewer(&state, &req, &principal, "audit-event-export").await?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| ApiError::BadRequest { detail: "the query string is malformed".into(), errors: vec![] })?;
    let (q, count, cursor) = query(&params)?;
    let audit = AuditEntry {
        actor_user: Some(who.user.clone()),
        actor_role: Some(who.role.clone()),
        purpose: Some("vpr-management".into()),
        context_ref: Some(format!("fhir AuditEvent?{}", req.query_string())),
        decision: "permit".into(),
        ..audit_base(&state, &principal, "audit-event-export", 200)
    };
    let st = state.clone();
    let entries = blocking(move || {
        let entries = st.store.search_audit(&q, cursor, count)?;
        st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(entries)
    })
    .await?;
    let base = base(&state);
    let mut links = vec![json!({"relation": "self", "url": format!("{base}/AuditEvent?{}", req.query_string())})];
    if i64::try_from(entries.len()).unwrap_or(0) == count {
        if let Some(last) = entries.last() {
            let kept: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "_cursor").cloned().collect();
            let mut next = serde_urlencoded::to_string(&kept).unwrap_or_default();
            if !next.is_empty() {
                next.push('&');
            }
            links.push(json!({"relation": "next", "url": format!("{base}/AuditEvent?{next}_cursor={}", last.seq)}));
        }
    }
    let entry: Vec<Value> = entries
        .iter()
        .map(|s| json!({"fullUrl": format!("{base}/AuditEvent/{}", s.entry.id), "resource": audit_event(&state, s), "search": {"mode": "match"}}))
        .collect();
    Ok(fhir_ok(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "id": Uuid::new_v4(), "type": "searchset", "link": links, "entry": entry}),
    ))
}
