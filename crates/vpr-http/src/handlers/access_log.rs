//! `GET /v1/notices/{id}/access-log`: the publisher, as controller, sees who accessed its notice —
//! every decision on it, permits and refusals, newest first.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::Scope;
use vpr_store::audit::{AuditEntry, StoredAuditEntry};

use crate::disclose::{audit_base, refuse_unread};
use crate::error::ApiError;
use crate::openapi::ProblemDoc;
use crate::pipeline::{authenticate, blocking};
use crate::AppState;

/// Who acted on a notice, when and why: the part of an entry both access logs show.
pub(crate) fn who_and_why(registry: &vpr_auth::Registry, s: &StoredAuditEntry) -> Value {
    let e = &s.entry;
    let org = registry.partner(&e.actor_org);
    json!({
        "seq": s.seq,
        "at": e.at,
        "request_id": e.request_id,
        "action": e.action,
        "organisation": {"ods_code": e.actor_org, "name": org.map(|p| p.name.as_str()), "type": e.actor_org_type},
        "system": e.actor_system,
        "user": e.actor_user,
        "role": e.actor_role,
        "purpose": e.purpose,
        "context_reference": e.context_ref,
        "break_glass": e.break_glass,
        "break_glass_justification": e.justification,
        "agreement_version": e.agreement_version,
    })
}

fn extend(base: &mut Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(x)) = (base.as_object_mut(), extra) {
        b.extend(x);
    }
    base.take()
}

/// Paging: `before` is the `seq` of the last entry seen; `limit` at most 200.
#[derive(Debug, Deserialize)]
pub struct Page {
    before: Option<i64>,
    limit: Option<i64>,
}

/// Who accessed a notice, for its publisher.
#[utoipa::path(
    tag = "notices",
    params(
        ("id" = Uuid, Path, description = "Notice id"),
        ("before" = Option<i64>, Query, description = "Return entries older than this `seq` (from `next_before`)"),
        ("limit" = Option<i64>, Query, description = "At most this many entries (1 to 200, default 50)"),
    ),
    responses(
        (status = 200, description = "Every decision on this notice, newest first: who, when, why, under which basis, what they saw", body = Object),
        (status = 403, description = "Only the publishing organisation sees its notice's access log", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No such notice", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[get("/v1/notices/{id}/access-log")]
pub async fn access_log(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::NoticesWrite)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("no notice has this id".into()))?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Validation(vec![vpr_domain::FieldError::new(
            "",
            "limit-range",
            "`limit` must be 1 to 200",
        )]));
    }
    let st = state.clone();
    let before = page.before;
    let refused_by = principal.clone();
    let entries = blocking(move || {
        let notice = st.store.get(id)?.ok_or(vpr_store::StoreError::NotFound(vpr_store::Missing::Notice))?;
        if notice.publisher_ods != principal.org.as_str() {
            return Err(ApiError::Forbidden("only the publishing organisation sees a notice's access log".into()));
        }
        let entries = st.store.notice_access_log(id, before, limit)?;
        // Reading who saw personal data is itself recorded.
        let audit = AuditEntry {
            purpose: Some("vpr-management".into()),
            context_ref: Some(id.to_string()),
            decision: "permit".into(),
            ..audit_base(&st, &principal, "access-log", 200)
        };
        st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Ok(entries)
    })
    .await;
    // A refused attempt to see who accessed a notice is itself recorded.
    let entries = match entries {
        Err(refusal @ ApiError::Forbidden(_)) => {
            return Err(refuse_unread(&state, &refused_by, "access-log", refusal).await)
        }
        other => other?,
    };
    let registry = state.tokens.registry();
    let notice_id = id.to_string();
    let items: Vec<Value> = entries
        .iter()
        .map(|s| {
            let e = &s.entry;
            let this = e.notices.iter().find(|n| n.id == notice_id);
            let mut item = who_and_why(registry, s);
            let extra = json!({
                "decision": this.map(|n| n.decision.as_str()),
                "view": this.and_then(|n| n.view.as_deref()),
                "restricted": this.map(|n| n.restricted),
                "version": this.map(|n| n.version),
                "lawful_basis": this.map(|n| n.lawful_basis.clone()),
                "clauses": this.map(|n| n.clauses.clone()),
            });
            extend(&mut item, extra)
        })
        .collect();
    let next_before = (items.len() as i64 == limit).then(|| entries.last().map(|s| s.seq)).flatten();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "notice_id": id, "entries": items, "next_before": next_before })))
}

/// Paging for the feed: `after` is the `leaf_index` of the last entry seen.
#[derive(Debug, Deserialize)]
pub struct FeedPage {
    after: Option<i64>,
    limit: Option<i64>,
}

/// Every decision on any of the caller's notices, in the sealed log's order: a publisher polls
/// it with the `next_after` it was last given and so learns of each disclosure of its notices,
/// missing none. Entries appear once sealed (within about a second). A read that returns
/// entries is itself audited; an empty poll discloses nothing and is not.
#[utoipa::path(
    tag = "notices",
    params(
        ("after" = Option<i64>, Query, description = "Return entries after this `leaf_index` (from `next_after`)"),
        ("limit" = Option<i64>, Query, description = "At most this many entries (1 to 200, default 100)"),
    ),
    responses(
        (status = 200, description = "Decisions on the caller's notices, oldest first, from the cursor", body = Object),
        (status = 422, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["notices:write"]))
)]
#[get("/v1/access-log")]
pub async fn feed(
    state: web::Data<AppState>,
    req: HttpRequest,
    page: web::Query<FeedPage>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req, Scope::NoticesWrite)?;
    let limit = page.limit.unwrap_or(100);
    let mut errs = Vec::new();
    if !(1..=200).contains(&limit) {
        errs.push(vpr_domain::FieldError::new("/limit", "limit-range", "`limit` must be 1 to 200"));
    }
    if page.after.is_some_and(|a| a < -1) {
        errs.push(vpr_domain::FieldError::new("/after", "minimum", "`after` must be a leaf index"));
    }
    if !errs.is_empty() {
        return Err(ApiError::Validation(errs));
    }
    let after = page.after;
    let st = state.clone();
    let publisher = principal.org.as_str().to_owned();
    let audit = AuditEntry {
        purpose: Some("vpr-management".into()),
        context_ref: Some(format!("after={}", after.unwrap_or(-1))),
        decision: "permit".into(),
        ..audit_base(&state, &principal, "access-log-feed", 200)
    };
    let (entries, mine) = blocking(move || {
        let q = vpr_store::review::AuditQuery { publisher: Some(publisher.clone()), ..Default::default() };
        let entries = st.store.sealed_audit_after(&q, after, limit)?;
        let ids: Vec<String> = entries.iter().flat_map(|s| s.entry.notices.iter().map(|n| n.id.clone())).collect();
        let mine: std::collections::BTreeSet<String> = st.store.published_by(&publisher, &ids)?.into_iter().collect();
        if !entries.is_empty() {
            st.store.append_audit(&audit).map_err(|e| ApiError::Unavailable(e.to_string()))?;
        }
        Ok((entries, mine))
    })
    .await?;
    let registry = state.tokens.registry();
    let items: Vec<Value> = entries
        .iter()
        .map(|s| {
            let e = &s.entry;
            let extra = json!({
                "leaf_index": s.leaf_index,
                "notices": e.notices.iter().filter(|n| mine.contains(&n.id)).collect::<Vec<_>>(),
            });
            extend(&mut who_and_why(registry, s), extra)
        })
        .collect();
    let next_after = entries.last().and_then(|s| s.leaf_index).or(after);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "entries": items, "next_after": next_after })))
}
