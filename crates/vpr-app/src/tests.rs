//! In-process service tests, on SQLite and PostgreSQL: the disclosure service, minimisation,
//! the subject access report and subscription admission, called as an edge calls them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;
use vpr_auth::{BrokerKeys, Principal, Registry, SigningKeyFile, TokenService, TokenSettings};
use vpr_policy::{Decision, View};
use vpr_store::{testdb, DataKeyFile, Published, Store, Vault};

use crate::delivery::{DeliverySettings, Outbox};
use crate::{App, AppError, Benchmark, Caller, NoticeSettings, Reviewer, SystemClock};

struct Apps {
    apps: Vec<(&'static str, App)>,
    _dir: tempfile::TempDir,
    _pg: Option<testdb::PgTestDb>,
}

fn root(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn app_on(store: Store) -> App {
    let registry =
        Registry::from_json(&std::fs::read_to_string(root("examples/demo-ics/registry.json")).unwrap()).unwrap();
    let keys = BrokerKeys::new(&[SigningKeyFile::generate("test-1", true).unwrap()]).unwrap();
    let settings = TokenSettings {
        issuer: "http://broker.test".into(),
        access_token_ttl: Duration::from_secs(300),
        max_assertion_ttl: Duration::from_secs(300),
        leeway: Duration::from_secs(30),
    };
    let agreement = vpr_policy::Agreement::load(&root("policies/agreement.json")).unwrap();
    App {
        store,
        tokens: TokenService::new(Arc::new(registry), Arc::new(keys), settings),
        notices: NoticeSettings { max_review_interval_days: agreement.max_review_interval_days },
        agreement: Arc::new(agreement),
        clock: Arc::new(SystemClock),
        delivery: Arc::new(DeliverySettings { allow_insecure_webhooks: true, ..Default::default() }),
        benchmark: Benchmark::default(),
        outbox: Outbox::default(),
        metrics: crate::metrics::Metrics::new().unwrap(),
        federation: crate::federation::Federation::new(Default::default(), reqwest::Client::new()).unwrap(),
    }
}

fn apps() -> Apps {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::new(&DataKeyFile::generate(true)).unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let mut stores = vec![("sqlite", Store::open(&url, 4, vault.clone()).unwrap())];
    let pg = testdb::fresh_postgres();
    if let Some(db) = &pg {
        stores.push(("postgres", Store::open(&db.url, 4, vault).unwrap()));
    }
    let apps = stores
        .into_iter()
        .map(|(name, s)| {
            s.migrate().unwrap();
            (name, app_on(s))
        })
        .collect();
    Apps { apps, _dir: dir, _pg: pg }
}

/// A caller acting as `client` (a system of the demo registry), for request `request_id`.
fn caller(app: &App, client: &str, request_id: &str) -> Caller {
    let registry = app.tokens.registry();
    let system = registry.system(client).unwrap();
    let partner = registry.partner(system.ods_code.as_str()).unwrap();
    let principal = Principal {
        client_id: system.client_id.clone(),
        system_name: system.name.clone(),
        org: partner.ods_code.clone(),
        org_name: partner.name.clone(),
        org_type: partner.org_type,
        scopes: system.scopes.clone(),
        token_id: String::new(),
    };
    Caller::new(principal, request_id)
}

fn notice(nhs: &str) -> Value {
    let day = |d: i64| (chrono::Utc::now().date_naive() + chrono::Duration::days(d)).to_string();
    json!({
        "subject": {"person": {"nhs_number": nhs, "family_name": "Fictional", "given_name": "Alex"}},
        "category": "physical-assault", "medical_factor_operative": false, "risk_level": "high",
        "safety_advice": ["attend-with-police"], "incident_date": day(-10), "review_date": day(180),
        "subject_informed": {"withheld_because": "informing would put staff at risk"},
        "lawful_basis": ["UKGDPR-6-1-c", "UKGDPR-9-2-h"], "restricted": {"incident_reference": "DATIX-0001"}
    })
}

fn lookup(nhs: &str, purpose: &str, role: &str) -> Value {
    json!({"purpose": purpose, "requester": {"user_id": "u-1", "role": role}, "subject": {"person": {"nhs_number": nhs}}})
}

async fn publish(app: &App, nhs: &str) -> Uuid {
    let gp = caller(app, "ashdale-gp-green", "publish-1");
    match app.publish(&gp, notice(nhs), None).await.unwrap() {
        Published::Created(n) => n.id,
        Published::Replayed(n) => n.id,
    }
}

fn entry_with(app: &App, request_id: &str) -> vpr_store::audit::StoredAuditEntry {
    let all = app.store.audit_entries(0, 10_000).unwrap();
    let mut found: Vec<_> = all.into_iter().filter(|e| e.entry.request_id == request_id).collect();
    assert_eq!(found.len(), 1, "one entry for request {request_id}");
    found.remove(0)
}

#[tokio::test]
async fn a_look_up_is_decided_minimised_and_audited_under_its_request_id() {
    let t = apps();
    for (db, app) in &t.apps {
        let id = publish(app, "9990000018").await;
        let crew = caller(app, "northmoor-cad", "req-lookup-1");
        let found = app.lookup(&crew, lookup("9990000018", "staff-safety", "ambulance-dispatcher")).await.unwrap();
        assert_eq!(found.results.len(), 1, "{db}");
        let shown = found.results[0].here().unwrap();
        assert_eq!(shown.id, id, "{db}");
        assert!(shown.decision.view >= View::Existence, "{db}");
        let entry = entry_with(app, "req-lookup-1");
        assert_eq!(entry.entry.id, found.lookup_id, "{db}: the result names its audit entry");
        assert_eq!(entry.entry.action, "lookup", "{db}");
        assert_eq!(entry.entry.notices.len(), 1, "{db}");
        // A purpose outside the agreement is refused before any notice is considered, and audited.
        let refused = app
            .lookup(
                &caller(app, "northmoor-cad", "req-lookup-2"),
                lookup("9990000018", "marketing", "ambulance-dispatcher"),
            )
            .await;
        assert!(matches!(refused, Err(AppError::Forbidden(_))), "{db}: {refused:?}");
        let entry = entry_with(app, "req-lookup-2");
        assert_eq!(entry.entry.decision, "refused", "{db}");
        assert!(entry.entry.notices.is_empty(), "{db}");
        // So is an invalid body, naming no subject.
        let invalid =
            app.lookup(&caller(app, "northmoor-cad", "req-lookup-3"), json!({"purpose": "staff-safety"})).await;
        assert!(matches!(invalid, Err(AppError::Validation(_))), "{db}");
        assert!(entry_with(app, "req-lookup-3").entry.subject_refs.is_empty(), "{db}");
    }
}

#[tokio::test]
async fn minimisation_shows_only_the_fields_of_the_decided_view() {
    let t = apps();
    let (_, app) = &t.apps[0];
    let id = publish(app, "9990000026").await;
    let n = app.store.get(id).unwrap().unwrap();
    let decided = |view: View, restricted: bool| Decision {
        permit: true,
        view: Some(view),
        restricted,
        lawful_basis: vec!["UKGDPR-6-1-c".into()],
        clauses: vec!["SS-1".into()],
    };
    let as_json = |view, restricted| json!(crate::disclose::minimise(app, &n, &[], view, &decided(view, restricted)));
    let existence = as_json(View::Existence, true);
    for absent in ["category", "risk_level", "safety_advice", "review_date", "subject", "incident_date", "restricted"] {
        assert!(existence.get(absent).is_none(), "existence view carries `{absent}`");
    }
    assert!(existence["contact"].is_object(), "whom to call is always shown");
    let summary = as_json(View::Summary, false);
    assert_eq!(summary["category"], "physical-assault");
    assert!(summary.get("subject").is_none() && summary.get("restricted").is_none());
    let full = as_json(View::Full, false);
    assert_eq!(full["subject"]["person"]["nhs_number"], "9990000026");
    assert!(full.get("restricted").is_none(), "restricted fields need their own permission");
    assert_eq!(as_json(View::Full, true)["restricted"]["incident_reference"], "DATIX-0001");
}

#[tokio::test]
async fn the_subject_access_report_lists_each_disclosure_of_the_subject() {
    let t = apps();
    for (db, app) in &t.apps {
        let id = publish(app, "9990000034").await;
        let crew = caller(app, "northmoor-cad", "req-sar-lookup");
        app.lookup(&crew, lookup("9990000034", "staff-safety", "ambulance-dispatcher")).await.unwrap();
        let ig = caller(app, "icb-ig", "req-sar");
        let who = Reviewer { user: "ig-lead-1".into(), role: "ig-lead".into() };
        let q = vpr_domain::validate::audit_query(
            &json!({"subject": {"person": {"nhs_number": "9990000034"}}, "reference": "SAR-1"}),
        )
        .unwrap();
        let report = app.subject_access_report(&ig, who, q).await.unwrap();
        assert_eq!(report.notices.len(), 1, "{db}");
        assert_eq!(report.notices[0]["notice_id"], json!(id), "{db}");
        assert_eq!(report.disclosures.len(), 1, "{db}: {:?}", report.disclosures);
        assert_eq!(report.disclosures[0]["organisation"]["ods_code"], "XAM01", "{db}");
        assert_eq!(report.disclosures[0]["purpose"], "staff-safety", "{db}");
        assert_eq!(report.reference.as_deref(), Some("SAR-1"), "{db}");
        let entry = entry_with(app, "req-sar");
        assert_eq!(
            (entry.entry.action.as_str(), entry.entry.purpose.as_deref()),
            ("subject-access-report", Some("subject-access"))
        );
        // Only IG may ask.
        let refused = app.reviewer(
            &caller(app, "northmoor-cad", "req-sar-2"),
            "u",
            "ambulance-dispatcher",
            vpr_domain::audit::AuditAction::SubjectAccessReport,
        );
        assert!(matches!(refused, Err(AppError::Forbidden(_))), "{db}");
        assert_eq!(entry_with(app, "req-sar-2").entry.decision, "refused", "{db}");
    }
}

#[tokio::test]
async fn admission_checks_what_the_agreement_must_allow_before_anything_is_stored() {
    let t = apps();
    for (db, app) in &t.apps {
        let crew = caller(app, "northmoor-cad", "req-admit");
        let spec = |purpose: &str, role: &str| {
            let body = json!({
                "purpose": purpose, "role": role, "criteria": {"postcodes": ["LS"]}, "payload": "view",
                "delivery": {"method": "feed"},
                "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
            });
            app.subscription_rules().subscription(&body).unwrap()
        };
        let admitted = app.admit(&crew, &spec("staff-safety", "ambulance-dispatcher"), Uuid::new_v4()).unwrap();
        assert!(["active", "pending-approval"].contains(&admitted.status.code()), "{db}: {}", admitted.status);
        assert_eq!(admitted.approval["agreement_version"], json!(app.agreement.version), "{db}");
        let pointers = |r: Result<_, AppError>| match r {
            Err(AppError::Validation(errs)) => errs.into_iter().map(|e| (e.pointer, e.rule)).collect::<Vec<_>>(),
            other => panic!("{db}: expected a validation failure, got {other:?}"),
        };
        assert_eq!(
            pointers(app.admit(&crew, &spec("marketing", "ambulance-dispatcher"), Uuid::new_v4())),
            vec![("/purpose".to_owned(), "unknown-purpose".to_owned())]
        );
        assert_eq!(
            pointers(app.admit(&crew, &spec("staff-safety", "gp-receptionist"), Uuid::new_v4())),
            vec![("/role".to_owned(), "role-not-held".to_owned())]
        );
        assert!(app.store.subscriptions(None, None, 100).unwrap().is_empty(), "{db}: admission stores nothing");
    }
}

/// A clock stopped at one instant.
#[derive(Debug)]
struct StoppedClock(chrono::DateTime<chrono::Utc>);

impl crate::Clock for StoppedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }
}

#[tokio::test]
async fn a_month_s_figures_are_published_once_it_has_ended_and_settled() {
    let apps = apps();
    for (name, app) in &apps.apps {
        let at = |text: &str| {
            let mut app = app.clone();
            app.clock = Arc::new(StoppedClock(chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc()));
            app
        };
        let who = || Reviewer { user: "lead-1".into(), role: crate::services::statistics::VPR_LEAD.into() };
        let month = |m: u32| chrono::NaiveDate::from_ymd_opt(2026, m, 1).unwrap();
        let lead = caller(app, "northmoor-cad", "figures-1");
        // November, read in its own last minute: not ended, refused as a month not complete.
        match at("2026-11-30T23:59:00Z").figures(&lead, who(), month(10), month(11)).await {
            Err(AppError::Validation(errs)) => assert_eq!(errs[0].rule, "month-complete", "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        // Five minutes after it ended: entries stamped in it may still be committing.
        match at("2026-12-01T00:05:00Z").figures(&lead, who(), month(10), month(11)).await {
            Err(AppError::Unavailable(why)) => assert!(why.contains("not final yet"), "{name}: {why}"),
            other => panic!("{name}: {other:?}"),
        }
        // Settled, and sealed: published.
        let f = at("2026-12-01T00:15:00Z").figures(&lead, who(), month(10), month(11)).await.unwrap();
        assert_eq!(f.months, ["2026-10", "2026-11"], "{name}");
    }
}
