//! Proof that the log is intact: one entry with its inclusion proof checked against the latest
//! signed checkpoint, and the log-integrity page (the latest checkpoint, when it was signed,
//! and whether it extends the one before). IG roles only; each view is audited.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use vpr_app::services::proofs::CheckedCheckpoint;
use vpr_app::App;
use vpr_domain::audit::AuditAction;

use super::view::{actor, html, Chrome};
use super::{ctx, Console};

/// A checkpoint as the pages show it.
#[derive(Debug, Clone)]
pub struct ShownCheckpoint {
    /// Entries in the tree.
    pub size: i64,
    /// Root hash.
    pub root: String,
    /// When signed (UTC).
    pub signed_at: String,
    /// How long ago, in words.
    pub age: String,
    /// Whether the signature verifies.
    pub signature_ok: bool,
}

fn shown(c: &CheckedCheckpoint, now: chrono::DateTime<chrono::Utc>) -> ShownCheckpoint {
    let secs = (now - c.signed_at).num_seconds().max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    let age = match secs {
        0..=59 => plural(secs, "second"),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=172_799 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    };
    ShownCheckpoint {
        size: c.tree_size,
        root: c.root_hash.clone(),
        signed_at: c.signed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        age,
        signature_ok: c.signature_ok,
    }
}

/// The log-integrity page.
#[derive(Template)]
#[template(path = "console/integrity.html")]
pub struct IntegrityPage {
    /// Frame.
    pub chrome: Chrome,
    /// The newest checkpoint.
    pub latest: Option<ShownCheckpoint>,
    /// The one before.
    pub previous: Option<ShownCheckpoint>,
    /// Whether the newer extends the older.
    pub consistent: Option<bool>,
    /// The consistency proof's length.
    pub proof_len: usize,
    /// Entries not yet sealed.
    pub unsealed: i64,
}

/// `GET /console/integrity`.
pub(super) async fn integrity(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    const HERE: &str = "/console/integrity";
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = match app.check_reviewer(&caller, who.user, who.role, AuditAction::LogIntegrity).await {
        Ok(who) => app.log_integrity(&caller, who).await,
        Err(e) => Err(e),
    };
    let i = match result {
        Ok(i) => i,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let now = app.clock.now();
    let page = IntegrityPage {
        chrome: c.chrome(Some(c.who(&s, HERE))),
        latest: i.latest.as_ref().map(|c| shown(c, now)),
        previous: i.previous.as_ref().map(|c| shown(c, now)),
        consistent: i.consistent,
        proof_len: i.proof_len,
        unsealed: i.unsealed,
    };
    html(StatusCode::OK, &page, &c.form_origin())
}

/// One entry's page.
#[derive(Template)]
#[template(path = "console/entry.html")]
pub struct EntryPage {
    /// Frame.
    pub chrome: Chrome,
    /// The entry's id.
    pub id: String,
    /// What it records, `(label, value)`.
    pub facts: Vec<(String, String)>,
    /// Its notices: id, version, decision, view.
    pub notices: Vec<(String, String, String, String)>,
    /// Its position in the tree.
    pub leaf_index: Option<i64>,
    /// Its sealed leaf hash.
    pub leaf: Option<String>,
    /// Whether the stored content still hashes to it.
    pub content_matches: bool,
    /// The checkpoint it was proved against.
    pub checkpoint: Option<ShownCheckpoint>,
    /// The audit path.
    pub path: Vec<String>,
    /// Whether the path leads to the checkpoint's root.
    pub included: bool,
}

fn facts(e: &vpr_store::audit::StoredAuditEntry) -> Vec<(String, String)> {
    let a = &e.entry;
    let list = |v: &[String]| if v.is_empty() { "None".to_owned() } else { v.join(", ") };
    let mut out = vec![
        ("When (UTC)", a.at.format("%Y-%m-%d %H:%M:%S").to_string()),
        ("Action", a.action.clone()),
        ("Who", actor(a)),
        ("Purpose", a.purpose.clone().unwrap_or_else(|| "None given".into())),
        ("Decision", format!("{} (answered {})", a.decision, a.outcome)),
        ("Lawful basis", list(&a.lawful_basis)),
        ("Agreement clauses", list(&a.clauses)),
        ("Agreement version", a.agreement_version.clone()),
        ("Reference", a.context_ref.clone().unwrap_or_else(|| "None".into())),
        ("Request id", a.request_id.clone()),
        ("Subjects (blind references)", a.subject_refs.len().to_string()),
    ];
    if a.break_glass {
        out.push(("Break-glass justification", a.justification.clone().unwrap_or_default()));
        out.push(("IG review", a.ig_review.clone().unwrap_or_else(|| "pending".into())));
    }
    out.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// `GET /console/audit/entries/{id}`: the entry and its inclusion proof.
pub(super) async fn entry(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    id: web::Path<String>,
) -> HttpResponse {
    const HERE: &str = "/console/audit";
    let c = ctx(&app, &console, &req);
    let (s, caller, who) = match super::reading(&c, HERE) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return c.failure(&s, HERE, &vpr_app::AppError::NotFound("no audit entry has this id".into()));
    };
    let result = match app.check_reviewer(&caller, who.user, who.role, AuditAction::AuditEntryRead).await {
        Ok(who) => app.entry_proof(&caller, who, id).await,
        Err(e) => Err(e),
    };
    let p = match result {
        Ok(p) => p,
        Err(e) => return c.failure(&s, HERE, &e),
    };
    let page = EntryPage {
        chrome: c.chrome(Some(c.who(&s, HERE))),
        id: id.to_string(),
        facts: facts(&p.entry),
        notices: p
            .entry
            .entry
            .notices
            .iter()
            .map(|n| (n.id.clone(), n.version.to_string(), n.decision.clone(), n.view.clone().unwrap_or_default()))
            .collect(),
        leaf_index: p.entry.leaf_index,
        leaf: p.leaf,
        content_matches: p.content_matches,
        checkpoint: p.checkpoint.as_ref().map(|cp| shown(cp, app.clock.now())),
        path: p.path,
        included: p.included,
    };
    html(StatusCode::OK, &page, &c.form_origin())
}
