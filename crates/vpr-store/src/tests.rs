//! Database tests, each run on SQLite and on PostgreSQL.

use chrono::{Duration, Utc};
use diesel::RunQueryDsl;
use vpr_domain::audit::AuditAction;
use vpr_domain::notice::{MatchKind, NoticeContent, Person, Subject, SubjectInformed};
use vpr_domain::subscription::SubscriptionStatus;
use vpr_domain::vocab::{Category, ChangeKind, LawfulBasis, NoticeStatus, RiskLevel};
use vpr_domain::NhsNumber;

use super::*;

struct Backends {
    stores: Vec<(&'static str, Store)>,
    _dir: tempfile::TempDir,
    _pg: Option<testdb::PgTestDb>,
}

fn backends() -> Backends {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::new(&DataKeyFile::generate(false)).unwrap();
    let sqlite_url = format!("sqlite://{}/t.db", dir.path().display());
    let mut stores = vec![("sqlite", Store::open(&sqlite_url, 4, vault.clone()).unwrap())];
    let pg = testdb::fresh_postgres();
    if let Some(db) = &pg {
        stores.push(("postgres", Store::open(&db.url, 4, vault).unwrap()));
    }
    for (_, s) in &stores {
        s.migrate().unwrap();
    }
    Backends { stores, _dir: dir, _pg: pg }
}

fn content(nhs: &str) -> NoticeContent {
    let today = Utc::now().date_naive();
    NoticeContent {
        subject: Subject {
            person: Some(Person {
                nhs_number: Some(NhsNumber::parse(nhs).unwrap()),
                family_name: Some("Testperson".into()),
                given_name: None,
                birth_date: None,
                postcode: None,
            }),
            address: None,
            telephone: None,
        },
        category: Category::PhysicalAssault,
        aggravating_factors: vec![],
        medical_factor_operative: false,
        risk_level: RiskLevel::High,
        safety_advice: vec![],
        advice_text: None,
        incident_date: today - Duration::days(3),
        review_date: today + Duration::days(90),
        subject_informed: SubjectInformed { informed_on: None, withheld_because: Some("risk".into()) },
        lawful_basis: vec![LawfulBasis::Ukgdpr6_1E],
        restricted: None,
        contact: None,
    }
}

fn new_notice(nhs: &str, key: Option<&str>) -> NewNotice {
    NewNotice {
        publisher_ods: "RX9".into(),
        by_system: "cad".into(),
        content: content(nhs),
        idempotency: key.map(|k| (k.to_owned(), "hash-a".to_owned())),
    }
}

fn created(p: Published) -> StoredNotice {
    match p {
        Published::Created(n) => n,
        Published::Replayed(n) => panic!("expected a new notice, got a replay of {}", n.id),
    }
}

#[test]
fn migrations_run_up_down_and_up_again() {
    let b = backends();
    for (name, store) in &b.stores {
        let mut conn = store.conn().unwrap();
        let reverted = db::revert_migrations(&mut conn).unwrap();
        assert!(!reverted.is_empty(), "{name}");
        assert!(db::pending_migrations(&mut conn).unwrap() > 0, "{name}");
        let applied = db::run_migrations(&mut conn).unwrap();
        assert_eq!(applied.len(), reverted.len(), "{name}");
        drop(conn);
        store.ready().unwrap();
    }
}

#[test]
fn migrations_have_the_same_names_on_both_backends() {
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(format!("{}/../../migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"));
}

#[test]
fn lifecycle_keeps_every_version() {
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now();
        let n = created(store.publish(&new_notice("9990000018", None), now).unwrap());
        assert_eq!(n.version.version, 1);
        let mut amended = n.content.clone();
        amended.risk_level = RiskLevel::Moderate;
        let v2 = store.change(n.id, "RX9", "cad", Some(1), Change::Amend(Box::new(amended)), now).unwrap();
        assert_eq!((v2.version.version, v2.content.risk_level), (2, RiskLevel::Moderate), "{name}");
        let stale = store.change(n.id, "RX9", "cad", Some(1), Change::Amend(Box::new(n.content.clone())), now);
        assert!(matches!(stale, Err(StoreError::VersionMismatch { current: 2 })), "{name}: {stale:?}");
        let other = store.change(
            n.id,
            "A81001",
            "gp",
            None,
            Change::Withdraw { reason: "x".into(), entered_in_error: false },
            now,
        );
        assert!(matches!(other, Err(StoreError::NotPublisher)), "{name}");
        let review_to = Utc::now().date_naive() + Duration::days(200);
        let v3 = store
            .change(
                n.id,
                "RX9",
                "cad",
                None,
                Change::Review { review_date: review_to, note: "still needed".into() },
                now,
            )
            .unwrap();
        assert_eq!((v3.content.review_date, v3.version.reason.as_deref()), (review_to, Some("still needed")));
        let v4 = store
            .change(
                n.id,
                "RX9",
                "cad",
                Some(3),
                Change::Withdraw { reason: "resolved".into(), entered_in_error: false },
                now,
            )
            .unwrap();
        assert_eq!(v4.status, NoticeStatus::Withdrawn);
        let again = store.change(
            n.id,
            "RX9",
            "cad",
            None,
            Change::Withdraw { reason: "again".into(), entered_in_error: false },
            now,
        );
        assert!(matches!(again, Err(StoreError::NotChangeable { .. })), "{name}");
        let versions = store.versions(n.id).unwrap();
        let kinds: Vec<ChangeKind> = versions.iter().map(|v| v.version.change).collect();
        assert_eq!(
            kinds,
            [ChangeKind::Created, ChangeKind::Amended, ChangeKind::Reviewed, ChangeKind::Withdrawn],
            "{name}"
        );
        assert_eq!(versions[0].content.risk_level, RiskLevel::High, "history is not overwritten");
    }
}

#[test]
fn idempotent_publish_returns_the_first_result() {
    let b = backends();
    for (name, store) in &b.stores {
        let first = created(store.publish(&new_notice("9990000018", Some("k1")), Utc::now()).unwrap());
        let again = store.publish(&new_notice("9990000018", Some("k1")), Utc::now()).unwrap();
        assert!(matches!(&again, Published::Replayed(n) if n.id == first.id), "{name}");
        let mut different = new_notice("9990000026", Some("k1"));
        different.idempotency = Some(("k1".into(), "hash-b".into()));
        assert!(matches!(store.publish(&different, Utc::now()), Err(StoreError::IdempotencyConflict)), "{name}");
    }
}

#[test]
fn concurrent_amendments_from_one_version_make_exactly_one_winner() {
    let b = backends();
    for (name, store) in &b.stores {
        let n = created(store.publish(&new_notice("9990000018", None), Utc::now()).unwrap());
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let c = n.content.clone();
                    s.spawn(move || store.change(n.id, "RX9", "cad", Some(1), Change::Amend(Box::new(c)), Utc::now()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{name}: {results:?}");
        assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::VersionMismatch { .. }))), "{name}");
        assert_eq!(store.versions(n.id).unwrap().len(), 2, "{name}");
    }
}

#[test]
fn expiry_moves_overdue_notices_once() {
    let b = backends();
    for (name, store) in &b.stores {
        let n = created(store.publish(&new_notice("9990000018", None), Utc::now()).unwrap());
        let day_after_review = n.content.review_date + Duration::days(1);
        assert!(
            store.expire_due(n.content.review_date, Utc::now()).unwrap().is_empty(),
            "{name}: due on the day after"
        );
        let expired = store.expire_due(day_after_review, Utc::now()).unwrap();
        assert_eq!(expired.iter().map(|e| (e.id, e.status)).collect::<Vec<_>>(), vec![(n.id, NoticeStatus::Expired)]);
        assert!(store.expire_due(day_after_review, Utc::now()).unwrap().is_empty(), "{name}");
        assert_eq!(store.get(n.id).unwrap().unwrap().version.change, ChangeKind::Expired);
    }
}

#[test]
fn match_keys_follow_amendments() {
    let b = backends();
    for (name, store) in &b.stores {
        let n = created(store.publish(&new_notice("9990000018", None), Utc::now()).unwrap());
        assert_eq!(store.find_by_match_key(MatchKind::NhsNumber, "9990000018").unwrap(), vec![n.id], "{name}");
        store.change(n.id, "RX9", "cad", Some(1), Change::Amend(Box::new(content("9990000026"))), Utc::now()).unwrap();
        assert!(store.find_by_match_key(MatchKind::NhsNumber, "9990000018").unwrap().is_empty(), "{name}");
        assert_eq!(store.find_by_match_key(MatchKind::NhsNumber, "9990000026").unwrap(), vec![n.id], "{name}");
    }
}

#[test]
fn replayed_assertion_ids_are_refused() {
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now().naive_utc();
        let exp = now + Duration::minutes(5);
        assert!(store.claim_assertion_jti("c1", "j1", exp, now).unwrap(), "{name}");
        assert!(!store.claim_assertion_jti("c1", "j1", exp, now).unwrap(), "{name}");
        assert!(store.claim_assertion_jti("c2", "j1", exp, now).unwrap(), "{name}: per client");
    }
}

#[test]
fn sealed_content_is_bound_to_its_row() {
    let b = backends();
    for (name, store) in &b.stores {
        let a = created(store.publish(&new_notice("9990000018", None), Utc::now()).unwrap());
        let z = created(store.publish(&new_notice("9990000026", None), Utc::now()).unwrap());
        // Copy one notice's ciphertext over another's: it must not open as the other notice.
        let mut conn = store.conn().unwrap();
        diesel::sql_query(format!(
            "UPDATE notice_versions SET content = (SELECT content FROM notice_versions WHERE notice_id = '{}') WHERE notice_id = '{}'",
            a.id, z.id
        ))
        .execute(&mut *conn)
        .unwrap();
        drop(conn);
        assert!(matches!(store.get(z.id), Err(StoreError::Vault(_))), "{name}");
    }
}

fn audit_entry(n: usize, at: chrono::DateTime<Utc>) -> audit::AuditEntry {
    audit::AuditEntry {
        id: uuid::Uuid::new_v4(),
        at,
        request_id: format!("req-{n}"),
        action: "lookup".into(),
        actor_org: "XGP01".into(),
        actor_org_type: "gp-practice".into(),
        actor_system: "gp-green".into(),
        actor_user: Some(format!("user-{n}")),
        actor_role: Some("gp-receptionist".into()),
        purpose: Some("staff-safety".into()),
        context_ref: None,
        break_glass: n.is_multiple_of(3),
        justification: n.is_multiple_of(3).then(|| "emergency".to_owned()),
        subject_refs: vec![format!("nhs:{n}")],
        decision: "no-match".into(),
        notices: vec![],
        lawful_basis: vec![],
        clauses: vec![],
        agreement_version: "test".into(),
        outcome: 200,
        ig_review: None,
        federation: None,
        received_by: None,
        replay_guard: None,
    }
}

fn retention_entry(pruned: usize, at: chrono::DateTime<Utc>) -> audit::AuditEntry {
    audit::AuditEntry {
        action: AuditAction::AuditRetention.into(),
        context_ref: Some(format!("pruned={pruned}")),
        subject_refs: vec![],
        ..audit_entry(1000 + pruned, at)
    }
}

/// A stand-in signature for store tests (the real JWS is tested end to end): `size:root`.
fn sign_plain(size: i64, root: &vpr_audit::merkle::Hash, _: chrono::DateTime<Utc>) -> Result<String, String> {
    Ok(format!("{size}:{}", vpr_audit::hex(root)))
}

fn open_plain(jws: &str) -> Result<(i64, vpr_audit::merkle::Hash), String> {
    let (size, root) = jws.split_once(':').ok_or("no colon")?;
    Ok((size.parse().map_err(|_| "size")?, vpr_audit::parse_hash(root).ok_or("root")?))
}

#[test]
fn retention_prunes_old_content_but_the_log_still_verifies() {
    let b = backends();
    for (name, s) in &b.stores {
        let now = Utc::now();
        for n in 0..10 {
            // Six entries from nine years ago, four from this week.
            let at = if n < 6 { now - Duration::days(9 * 366) } else { now - Duration::days(1) };
            s.append_audit(&audit_entry(n, at)).unwrap();
            s.seal_pending(4, now, &sign_plain).unwrap();
        }
        while s.seal_pending(4, now, &sign_plain).unwrap().is_some() {}
        let before = s.verify_audit(&open_plain).unwrap();
        assert!(before.problems.is_empty(), "{name}: {:?}", before.problems);

        let cutoff = now - Duration::days(8 * 365);
        assert_eq!(s.prune_audit(cutoff, now, |n| retention_entry(n, now)).unwrap(), 6, "{name}");
        assert_eq!(
            s.prune_audit(cutoff, now, |n| retention_entry(n, now)).unwrap(),
            0,
            "{name}: pruning twice changes nothing"
        );
        let after = s.verify_audit(&open_plain).unwrap();
        assert!(after.problems.is_empty(), "{name}: {:?}", after.problems);
        assert_eq!((after.entries, after.pruned, after.checkpoints), (10, 6, before.checkpoints), "{name}");
        // Pruned entries are gone from review; the recent ones remain.
        // (The prune recorded itself, committed with it.)
        let all = s.search_audit(&review::AuditQuery::default(), None, 100).unwrap();
        assert_eq!(all.len(), 5, "{name}");
        assert_eq!(all.first().map(|e| e.entry.action.as_str()), Some("audit-retention"), "{name}");
        assert_eq!(all.first().and_then(|e| e.entry.context_ref.as_deref()), Some("pruned=6"), "{name}");
        let by_subject = review::AuditQuery {
            subject: Some(review::SubjectKeys { refs: vec!["nhs:1".into(), "nhs:7".into()], blind: vec![] }),
            ..Default::default()
        };
        let found: Vec<String> =
            s.search_audit(&by_subject, None, 100).unwrap().iter().map(|e| e.entry.request_id.clone()).collect();
        assert_eq!(found, ["req-7"], "{name}: the pruned entry's subject reference went with it");

        // An export of the pruned log verifies the same way, and an edit to it is caught.
        let mut conn = s.conn().unwrap();
        let mut out = Vec::new();
        assert_eq!(verify::export_audit(&mut conn, now, &mut out).unwrap(), 10);
        let report = verify::verify_export(&out[..], &open_plain).unwrap();
        assert!(report.problems.is_empty() && report.pruned == 6, "{name}: {report:?}");
        let text = String::from_utf8(out).unwrap();
        let edited = text.replacen("\"user-8\"", "\"user-9\"", 1);
        let report = verify::verify_export(edited.as_bytes(), &open_plain).unwrap();
        assert!(report.problems.first().is_some_and(|p| p.contains("leaf 8")), "{name}: {report:?}");

        // Removing the content of a recent entry out of order is not retention: it is reported.
        diesel::sql_query("UPDATE audit_entries SET pruned_at = at, actor_user = NULL WHERE leaf_index = 8")
            .execute(&mut *conn)
            .unwrap();
        drop(conn);
        let report = s.verify_audit(&open_plain).unwrap();
        assert!(
            report.problems.first().is_some_and(|p| p.contains("leaf 8") && p.contains("retention")),
            "{name}: {report:?}"
        );
    }
}

#[test]
fn replicas_sharing_one_postgres_seal_one_consistent_log() {
    let Some(db) = testdb::fresh_postgres() else { return };
    let vault = Vault::new(&DataKeyFile::generate(false)).unwrap();
    // Three "replicas": their own pools and audit writers, one database.
    let replicas: Vec<Store> = (0..3).map(|_| Store::open(&db.url, 4, vault.clone()).unwrap()).collect();
    replicas[0].migrate().unwrap();
    let per_replica: usize = 400;
    std::thread::scope(|scope| {
        for (r, store) in replicas.iter().enumerate() {
            // Each replica appends from several request threads...
            for t in 0..4 {
                scope.spawn(move || {
                    for n in 0..per_replica / 4 {
                        store.append_audit(&audit_entry(r * 10_000 + t * 1000 + n, Utc::now())).unwrap();
                    }
                });
            }
            // ...while its sealer runs in small batches, racing the others.
            scope.spawn(move || {
                for _ in 0..200 {
                    store.seal_pending(7, Utc::now(), &sign_plain).unwrap();
                }
            });
        }
    });
    while replicas[1].seal_pending(50, Utc::now(), &sign_plain).unwrap().is_some() {}
    let report = replicas[2].verify_audit(&open_plain).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.entries, 3 * per_replica as u64);
    assert_eq!(report.unsealed, 0);
    assert!(report.checkpoints > 3, "several sealers signed checkpoints: {}", report.checkpoints);
}

fn subscription(
    id: uuid::Uuid,
    criteria: vpr_domain::subscription::Criteria,
    cohort: Option<Vec<String>>,
) -> subscriptions::NewSubscription {
    subscriptions::NewSubscription {
        id,
        owner_ods: "XAM01".into(),
        owner_system: "amb-cad".into(),
        status: SubscriptionStatus::Active,
        purpose: "staff-safety".into(),
        role: "ambulance-dispatcher".into(),
        context_ref: None,
        topic: vpr_domain::subscription::Topic::Notices,
        criteria,
        payload: vpr_domain::subscription::Payload::View,
        channel: "vpr".into(),
        method: vpr_domain::subscription::DeliveryMethod::Webhook,
        endpoint: Some("https://cad.example/hook".into()),
        encryption_jwk: None,
        tag: Some("t".into()),
        expires_at: Utc::now() + Duration::days(30),
        heartbeat_seconds: None,
        approval: serde_json::json!({"decided_by": "agreement"}),
        cohort,
        federation: None,
    }
}

#[test]
fn changes_fan_out_numbered_per_subscription_and_withdrawals_follow_earlier_recipients() {
    use vpr_domain::subscription::Criteria;
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now();
        let everything = uuid::Uuid::new_v4();
        let high_only = uuid::Uuid::new_v4();
        let cohort_id = uuid::Uuid::new_v4();
        store.write(|tx| tx.create_subscription(&subscription(everything, Criteria::default(), None), now)).unwrap();
        let high = Criteria { min_risk_level: Some(RiskLevel::High), ..Default::default() };
        store.write(|tx| tx.create_subscription(&subscription(high_only, high, None), now)).unwrap();
        let member = store.vault().blind_index(MatchKind::NhsNumber, "9990000026");
        let in_cohort = Criteria { cohort: true, ..Default::default() };
        store.write(|tx| tx.create_subscription(&subscription(cohort_id, in_cohort, Some(vec![member])), now)).unwrap();
        assert_eq!(store.cohort_size(cohort_id).unwrap(), 1, "{name}");
        // Held at a peer broker: the peer tells it of the peer's notices; none of these reach it.
        let at_peer = uuid::Uuid::new_v4();
        let link = vpr_domain::subscription::PeerLink::AtPeer { peer: "YIC01".into(), subscription_id: "s-1".into() };
        let held = subscriptions::NewSubscription {
            federation: Some(link.clone()),
            ..subscription(at_peer, Criteria::default(), None)
        };
        store.write(|tx| tx.create_subscription(&held, now)).unwrap();
        assert_eq!(store.subscription(at_peer).unwrap().unwrap().federation, Some(link), "{name}");

        let a = created(store.publish(&new_notice("9990000018", None), now).unwrap());
        let c = created(store.publish(&new_notice("9990000026", None), now).unwrap());
        // Created and withdrawn before any fan-out: the withdrawal still follows the creation.
        let gone = created(store.publish(&new_notice("9990000034", None), now).unwrap());
        store
            .change(
                gone.id,
                "RX9",
                "cad",
                None,
                Change::Withdraw { reason: "error".into(), entered_in_error: true },
                now,
            )
            .unwrap();
        assert_eq!(store.outbox_backlog().unwrap(), 4, "{name}");
        let done = store.fan_out(100, now).unwrap();
        assert_eq!((done.events, done.deliveries, done.subscriptions.len()), (4, 9, 3), "{name}");
        let both: Vec<(String, uuid::Uuid)> =
            store.events_after(everything, 2, 10).unwrap().into_iter().map(|e| (e.kind, e.notice_id)).collect();
        assert_eq!(both, vec![("created".to_owned(), gone.id), ("entered-in-error".to_owned(), gone.id)], "{name}");
        assert_eq!(store.outbox_backlog().unwrap(), 0, "{name}");
        assert!(store.events_after(at_peer, 0, 10).unwrap().is_empty(), "{name}");
        // Lowered below `high_only`'s threshold: the amendment still reaches it, marked unmatched.
        let mut lowered = a.content.clone();
        lowered.risk_level = RiskLevel::Low;
        store.change(a.id, "RX9", "cad", None, Change::Amend(Box::new(lowered)), now).unwrap();
        store
            .change(a.id, "RX9", "cad", None, Change::Withdraw { reason: "gone".into(), entered_in_error: false }, now)
            .unwrap();
        store.fan_out(100, now).unwrap();
        let e = store.events_after(high_only, 0, 10).unwrap();
        let kinds: Vec<(i64, &str, bool)> = e.iter().map(|e| (e.number, e.kind.as_str(), e.matched)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, "created", true),
                (2, "created", true),
                (3, "created", true),
                (4, "entered-in-error", false),
                (5, "amended", false),
                (6, "withdrawn", false)
            ],
            "{name}"
        );
        assert_eq!(e[0].notice_id, a.id, "{name}");
        let cohort_events = store.events_after(cohort_id, 0, 10).unwrap();
        assert_eq!(cohort_events.iter().map(|e| e.notice_id).collect::<Vec<_>>(), vec![c.id], "{name}");
        let all = store.subscription(everything).unwrap().unwrap();
        assert_eq!(all.delivery.last_event_number, 6, "{name}");
        // Event ids are unique across subscriptions (receivers de-duplicate by them).
        let ids: std::collections::HashSet<_> =
            store.events_after(everything, 0, 10).unwrap().iter().chain(e.iter()).map(|e| e.event_id).collect();
        assert_eq!(ids.len(), 12, "{name}");
        // A deleted subscription gets nothing more.
        store.write(|tx| tx.delete_subscription(everything, now)).unwrap().unwrap();
        store
            .change(c.id, "RX9", "cad", None, Change::Withdraw { reason: "gone".into(), entered_in_error: false }, now)
            .unwrap();
        store.fan_out(100, now).unwrap();
        assert_eq!(store.subscription(everything).unwrap().unwrap().delivery.last_event_number, 6, "{name}");
        assert_eq!(store.events_after(cohort_id, 0, 10).unwrap().len(), 2, "{name}");
    }
}

#[test]
fn a_delivery_round_reads_many_subscriptions_at_once_as_it_would_each_alone() {
    use vpr_domain::subscription::Criteria;
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now();
        let (x, y, idle) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let member = store.vault().blind_index(MatchKind::NhsNumber, "9990000018");
        let stranger = store.vault().blind_index(MatchKind::NhsNumber, "9990000026");
        store.write(|tx| tx.create_subscription(&subscription(x, Criteria::default(), None), now)).unwrap();
        let cohort = Criteria { cohort: true, ..Default::default() };
        store.write(|tx| tx.create_subscription(&subscription(y, cohort, Some(vec![member.clone()])), now)).unwrap();
        store
            .write(|tx| {
                tx.create_subscription(&subscription(idle, Criteria { cohort: true, ..Default::default() }, None), now)
            })
            .unwrap();
        let a = created(store.publish(&new_notice("9990000018", None), now).unwrap());
        let c = created(store.publish(&new_notice("9990000026", None), now).unwrap());
        let done = store.fan_out(100, now).unwrap();
        let mut given: Vec<uuid::Uuid> = done.subscriptions.clone();
        given.sort();
        let mut expected = vec![x, y];
        expected.sort();
        assert_eq!(given, expected, "{name}: the fan-out names whom it gave events");

        // Pages of events per subscription from its cursor, each as `events_after` gives it.
        let pages = store.next_events_many(&[x, y, idle], 10).unwrap();
        assert_eq!(pages.get(&x).map(Vec::len), Some(2), "{name}");
        assert_eq!(pages.get(&y).map(|e| e[0].notice_id), Some(a.id), "{name}");
        assert!(!pages.contains_key(&idle), "{name}");
        assert_eq!(
            store.next_events_many(&[x], 1).unwrap().get(&x).map(|e| e.iter().map(|e| e.number).collect::<Vec<_>>()),
            Some(vec![1]),
            "{name}: at most the limit"
        );
        assert!(store.next_events_many(&[], 10).unwrap().is_empty(), "{name}");

        // Current notices, with the blind indexes of their subjects; unknown ids left out.
        let notices = store.current_notices(&[a.id, c.id, uuid::Uuid::new_v4()]).unwrap();
        assert_eq!(notices.len(), 2, "{name}");
        assert!(notices.get(&a.id).is_some_and(|(_, blind)| blind.contains(&member)), "{name}");
        assert_eq!(notices.get(&c.id).map(|(n, _)| n.id), store.current_notice(c.id).unwrap().map(|(n, _)| n.id));

        // Cohort membership and what each was given, asked for several subscriptions at once.
        let asked = vec![(y, member.clone()), (y, stranger.clone()), (x, member.clone())];
        let members = store.in_cohorts(&asked).unwrap();
        assert_eq!(members, [(y, member.clone())].into_iter().collect(), "{name}");
        let mut audit = audit_entry(1, now);
        audit.received_by = Some(x.to_string());
        audit.notices = vec![audit::AuditedNotice {
            id: a.id.to_string(),
            version: 1,
            decision: "permit".into(),
            view: Some("full".into()),
            restricted: false,
            lawful_basis: vec![],
            clauses: vec![],
        }];
        store.append_audits(vec![audit, audit_entry(2, now)]).unwrap();
        let ids = vec![a.id.to_string(), c.id.to_string()];
        let received = store.received_many(&[(x, ids.clone()), (y, ids.clone()), (idle, vec![])]).unwrap();
        assert_eq!(received.get(&x), Some(&[a.id.to_string()].into_iter().collect()), "{name}");
        assert_eq!(received.get(&y).map(|r| r.len()), Some(0), "{name}");
        assert_eq!(received.get(&x), Some(&store.received(x, &ids).unwrap()), "{name}");

        // The hinted claim takes only those named that are due, and respects leases.
        let lease = now + Duration::seconds(30);
        let claimed = store.claim_due_among("r1", &[y, idle], now, lease).unwrap();
        assert_eq!(claimed.iter().map(|s| s.id).collect::<Vec<_>>(), vec![y], "{name}: idle has nothing due");
        assert!(store.claim_due_among("r2", &[y], now, lease).unwrap().is_empty(), "{name}: leased by r1");
        let rest = store.claim_due("r2", 10, now, lease).unwrap();
        assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), vec![x], "{name}");
        assert!(store.claim_due_among("r3", &[], now, lease).unwrap().is_empty(), "{name}");
        let ack = subscriptions::Ack {
            subscription: x,
            owner: "r2".into(),
            number: 1,
            at: now,
            lease_until: lease,
            release: false,
        };
        assert!(store.ack_delivery(ack).unwrap(), "{name}");
        let after_ack = store.next_events_many(&[x], 10).unwrap();
        assert_eq!(
            after_ack.get(&x).map(|e| e.iter().map(|e| e.event_id).collect::<Vec<_>>()),
            Some(store.events_after(x, 1, 10).unwrap().iter().map(|e| e.event_id).collect()),
            "{name}: from the acknowledged cursor"
        );
    }
}

#[test]
fn deliveries_are_leased_acknowledged_retried_and_dead_lettered() {
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now();
        let id = uuid::Uuid::new_v4();
        store.write(|tx| tx.create_subscription(&subscription(id, Default::default(), None), now)).unwrap();
        for nhs in ["9990000018", "9990000026"] {
            store.publish(&new_notice(nhs, None), now).unwrap();
        }
        store.fan_out(100, now).unwrap();
        let lease = now + Duration::seconds(30);
        let claimed = store.claim_due("r1", 10, now, lease).unwrap();
        assert_eq!(claimed.len(), 1, "{name}");
        // Held by r1: another replica cannot take it until the lease passes.
        assert!(store.claim_due("r2", 10, now, lease).unwrap().is_empty(), "{name}");
        let ack = |owner: &str, number: i64, release: bool| subscriptions::Ack {
            subscription: id,
            owner: owner.into(),
            number,
            at: now,
            lease_until: lease,
            release,
        };
        assert!(store.ack_delivery(ack("r1", 1, false)).unwrap(), "{name}");
        assert!(!store.ack_delivery(ack("r2", 2, false)).unwrap(), "{name}: a replica without the lease");
        // Pipelined acknowledgements may commit out of order: the cursor never moves back.
        assert!(store.ack_delivery(ack("r1", 2, false)).unwrap(), "{name}");
        assert!(store.ack_delivery(ack("r1", 1, false)).unwrap(), "{name}");
        assert_eq!(store.subscription(id).unwrap().unwrap().delivery.delivered_upto, 2, "{name}");
        store.redeliver(id, Some(2), now).unwrap();
        let lease_again = store.claim_due("r1", 10, now, lease).unwrap();
        assert_eq!(lease_again.len(), 1, "{name}");
        let give_up_after = Duration::hours(72);
        let fail = |at: chrono::DateTime<Utc>, owner: &str| {
            store.fail_delivery(
                id,
                owner,
                subscriptions::FailedAttempt {
                    number: 2,
                    error: "the receiver answered 500",
                    at,
                    retry_at: at + Duration::seconds(1),
                    give_up_after,
                },
            )
        };
        assert_eq!(fail(now, "r1").unwrap(), subscriptions::Failure::Retry(now + Duration::seconds(1)), "{name}");
        let s = store.subscription(id).unwrap().unwrap();
        assert_eq!((s.delivery.delivered_upto, s.delivery.attempts), (1, 1), "{name}");
        assert!(store.claim_due("r2", 10, now, lease).unwrap().is_empty(), "{name}: not due yet");
        let later = now + Duration::seconds(2);
        assert_eq!(store.claim_due("r2", 10, later, later + Duration::seconds(30)).unwrap().len(), 1, "{name}");
        // 72 hours of failures later the event is dead-lettered and the subscription suspended.
        assert_eq!(fail(now + Duration::hours(73), "r2").unwrap(), subscriptions::Failure::DeadLettered, "{name}");
        let s = store.subscription(id).unwrap().unwrap();
        assert_eq!(s.delivery.state, subscriptions::delivery_state::SUSPENDED, "{name}");
        assert_eq!(store.dead_letters(id).unwrap()[0].event_number, 2, "{name}");
        let far = now + Duration::hours(80);
        assert!(store.claim_due("r3", 10, far, far).unwrap().is_empty(), "{name}: suspended");
        // Redelivery resumes from the first undelivered event; a replay goes back further.
        assert!(!store.redeliver(id, Some(9), far).unwrap(), "{name}");
        assert!(store.redeliver(id, Some(1), far).unwrap(), "{name}");
        let s = store.subscription(id).unwrap().unwrap();
        assert_eq!((s.delivery.state.as_str(), s.delivery.delivered_upto), ("active", 0), "{name}");
        assert!(store.dead_letters(id).unwrap()[0].resolved_at.is_some(), "{name}");
        assert_eq!(store.claim_due("r3", 10, far, far + Duration::seconds(30)).unwrap().len(), 1, "{name}");
    }
}

#[test]
fn retention_racing_the_sealer_never_prunes_a_recent_entry() {
    let b = backends();
    for (name, s) in &b.stores {
        let now = Utc::now();
        let cutoff = now - Duration::days(8 * 365);
        let pruned = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for n in 0..60 {
                    s.append_audit(&audit_entry(n, Utc::now())).unwrap();
                    s.seal_pending(3, Utc::now(), &sign_plain).unwrap();
                }
            });
            scope.spawn(|| {
                for _ in 0..200 {
                    let n = s.prune_audit(cutoff, Utc::now(), |n| retention_entry(n, Utc::now())).unwrap();
                    pruned.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        });
        while s.seal_pending(100, now, &sign_plain).unwrap().is_some() {}
        assert_eq!(pruned.load(std::sync::atomic::Ordering::SeqCst), 0, "{name}: a recent entry was pruned");
        let report = s.verify_audit(&open_plain).unwrap();
        assert!(report.problems.is_empty() && report.pruned == 0 && report.entries == 60, "{name}: {report:?}");
    }
}

/// Makes the audit table refuse inserts (or accept them again).
fn audit_unwritable(store: &Store, unwritable: bool) {
    use diesel::connection::SimpleConnection;
    let mut conn = store.conn().unwrap();
    let sql = match (&*conn, unwritable) {
        (db::DbConnection::Sqlite(_), true) => {
            "CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_entries \
             BEGIN SELECT RAISE(ABORT, 'the audit is unwritable'); END;"
        }
        (db::DbConnection::Pg(_), true) => {
            "CREATE FUNCTION audit_unwritable() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'the audit is unwritable'; END $$; \
             CREATE TRIGGER audit_unwritable BEFORE INSERT ON audit_entries \
             FOR EACH ROW EXECUTE FUNCTION audit_unwritable();"
        }
        (db::DbConnection::Sqlite(_), false) => "DROP TRIGGER audit_unwritable;",
        (db::DbConnection::Pg(_), false) => {
            "DROP TRIGGER audit_unwritable ON audit_entries; DROP FUNCTION audit_unwritable();"
        }
    };
    conn.batch_execute(sql).unwrap();
}

fn audit_of(action: AuditAction, n: usize) -> audit::AuditEntry {
    audit::AuditEntry { action: action.into(), ..audit_entry(n, Utc::now()) }
}

fn directive_rows(store: &Store) -> i64 {
    use diesel::QueryDsl;
    schema::subject_directives::table.count().get_result(&mut *store.conn().unwrap()).unwrap()
}

fn directive() -> directives::NewDirective {
    directives::NewDirective {
        kind: directives::DirectiveKind::Objection,
        blind_indexes: vec!["b1".into(), "b2".into()],
        purpose: "staff-safety".into(),
        status: "upheld".into(),
        evidence_reference: "case-1".into(),
        reason: Some("asked".into()),
        effective_from: Utc::now().date_naive(),
        expires_on: None,
        recorded_by_org: "XIG01".into(),
        recorded_by_user: "ig-1".into(),
    }
}

#[test]
fn an_audited_change_commits_with_its_entry_or_not_at_all() {
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now();
        let (kept, refused) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let created: subscriptions::Subscription = store
            .audited(|tx| {
                let sub =
                    tx.create_subscription(&subscription(kept, Default::default(), Some(vec!["m".into()])), now)?;
                Ok::<_, StoreError>((sub, audit_of(AuditAction::Subscribe, 1)))
            })
            .unwrap();
        assert_eq!(created.status, SubscriptionStatus::Active, "{name}");
        let logged = store.audit_entries(0, 10).unwrap();
        assert_eq!(logged.iter().map(|e| e.entry.action.as_str()).collect::<Vec<_>>(), ["subscribe"], "{name}");

        audit_unwritable(store, true);
        let err = store
            .audited(|tx| {
                let sub = tx.create_subscription(&subscription(refused, Default::default(), None), now)?;
                Ok::<_, StoreError>((sub, audit_of(AuditAction::Subscribe, 2)))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::AuditWrite(_)), "{name}: {err}");
        assert!(store.subscription(refused).unwrap().is_none(), "{name}: the subscription stayed unaudited");

        let err = store
            .audited(|tx| {
                Ok::<_, StoreError>((
                    tx.change_cohort(kept, &[], &["m".into()])?,
                    audit_of(AuditAction::SubscriptionCohort, 3),
                ))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::AuditWrite(_)), "{name}: {err}");
        assert_eq!(store.cohort_size(kept).unwrap(), 1, "{name}: the cohort changed unaudited");

        let err = store
            .audited(|tx| {
                Ok::<_, StoreError>((tx.delete_subscription(kept, now)?, audit_of(AuditAction::Unsubscribe, 4)))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::AuditWrite(_)), "{name}: {err}");
        assert_eq!(store.subscription(kept).unwrap().map(|s| s.status), Some(SubscriptionStatus::Active), "{name}");

        let err = store
            .audited(|tx| {
                Ok::<_, StoreError>((tx.record_directive(&directive(), now)?, audit_of(AuditAction::Objection, 5)))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::AuditWrite(_)), "{name}: {err}");
        assert_eq!(directive_rows(store), 0, "{name}: the objection was recorded unaudited");

        let err = store.prune_audit(now + Duration::days(1), now, |_| audit_of(AuditAction::AuditRetention, 6));
        assert_eq!(err.ok(), Some(0), "{name}: nothing sealed, so nothing to prune or record");
        assert_eq!(store.audit_entries(0, 10).unwrap().len(), 1, "{name}: only the first entry was written");

        audit_unwritable(store, false);
        let replaced = store
            .audited(|tx| {
                let sub = tx.replace_subscription(&subscription(kept, Default::default(), None), now)?;
                Ok::<_, StoreError>((sub, audit_of(AuditAction::SubscriptionChange, 7)))
            })
            .unwrap();
        assert_eq!(store.cohort_size(replaced.id).unwrap(), 0, "{name}");
        assert_eq!(store.audit_entries(0, 10).unwrap().len(), 2, "{name}");
        let missing = store.audited(|tx| {
            Ok::<_, StoreError>((tx.change_cohort(refused, &[], &[])?, audit_of(AuditAction::SubscriptionCohort, 8)))
        });
        assert!(matches!(missing, Err(StoreError::NotFound(Missing::Subscription))), "{name}: {missing:?}");
        assert_eq!(store.audit_entries(0, 10).unwrap().len(), 2, "{name}: a refused change writes no entry");
    }
}

#[test]
fn a_break_glass_review_commits_with_its_entry_or_not_at_all() {
    let b = backends();
    for (name, store) in &b.stores {
        let access =
            audit::AuditEntry { break_glass: true, ig_review: Some("pending".into()), ..audit_entry(1, Utc::now()) };
        store.append_audit(&access).unwrap();
        let review = |store: &Store, n| {
            store.audited(|tx| {
                let reviewed = tx.review_break_glass(access.id, "justified")?;
                Ok::<_, StoreError>((reviewed, audit_of(AuditAction::BreakGlassReview, n)))
            })
        };
        audit_unwritable(store, true);
        assert!(matches!(review(store, 2), Err(StoreError::AuditWrite(_))), "{name}");
        assert_eq!(store.break_glass_entries("pending", None, 10).unwrap().len(), 1, "{name}: reviewed unaudited");
        audit_unwritable(store, false);
        assert!(review(store, 3).unwrap(), "{name}");
        assert_eq!(store.break_glass_entries("justified", None, 10).unwrap().len(), 1, "{name}");
        assert!(!review(store, 4).unwrap(), "{name}: reviewed once only");
    }
}

#[test]
fn a_replay_guard_is_claimed_with_its_entry_and_a_replay_writes_nothing() {
    let b = backends();
    for (name, store) in &b.stores {
        let now = Utc::now();
        let guard = audit::ReplayGuard {
            client_id: "relay:YIC01".into(),
            jti: uuid::Uuid::new_v4().to_string(),
            expires_at: (now + Duration::seconds(90)).naive_utc(),
            now: now.naive_utc(),
        };
        let before = store.audit_entries(0, 10_000).unwrap().len();
        let first = audit::AuditEntry { replay_guard: Some(guard.clone()), ..audit_entry(1, now) };
        store.append_audit(&first).unwrap();
        let again = audit::AuditEntry { replay_guard: Some(guard.clone()), ..audit_entry(2, now) };
        assert!(matches!(store.append_audit(&again), Err(StoreError::Replayed)), "{name}");
        // Two in one batch: the first is written, the second refused.
        let other = audit::ReplayGuard { jti: uuid::Uuid::new_v4().to_string(), ..guard.clone() };
        let pair = vec![
            audit::AuditEntry { replay_guard: Some(other.clone()), ..audit_entry(3, now) },
            audit::AuditEntry { replay_guard: Some(other.clone()), ..audit_entry(4, now) },
        ];
        assert!(matches!(store.append_audits(pair), Err(StoreError::Replayed)), "{name}");
        let after = store.audit_entries(0, 10_000).unwrap();
        assert_eq!(after.len(), before + 2, "{name}: the first of each id only");
        // The id is the same one a separate claim sees.
        assert!(
            !store.claim_assertion_jti(&guard.client_id, &guard.jti, guard.expires_at, guard.now).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn the_figures_count_each_shown_notice_once_as_it_is_sealed() {
    let b = backends();
    for (name, s) in &b.stores {
        let now = Utc::now();
        let shown = created(s.publish(&new_notice("9990000018", None), now).unwrap());
        let refused = created(s.publish(&new_notice("9990000026", None), now).unwrap());
        let notice = |id: uuid::Uuid, decision: &str| audit::AuditedNotice {
            id: id.to_string(),
            version: 1,
            decision: decision.into(),
            view: (decision == "permit").then(|| "summary".to_owned()),
            restricted: false,
            lawful_basis: vec![],
            clauses: vec![],
        };
        for n in 0..5 {
            let e = audit::AuditEntry {
                decision: "partial".into(),
                notices: vec![notice(shown.id, "permit"), notice(refused.id, "deny")],
                ..audit_entry(n, now)
            };
            s.append_audit(&e).unwrap();
        }
        // Not a disclosure of the notice: an IG search that names it.
        let search = audit::AuditEntry {
            action: "audit-search".into(),
            notices: vec![notice(shown.id, "permit")],
            ..audit_entry(9, now)
        };
        s.append_audit(&search).unwrap();
        let month = now.date_naive();
        assert!(s.disclosures(month, month).unwrap().is_empty(), "{name}: nothing before the seal");
        let later = (now + chrono::Duration::seconds(1)).naive_utc();
        let earlier = (now - chrono::Duration::seconds(1)).naive_utc();
        assert!(s.unsealed_before(later).unwrap(), "{name}: the month is not final yet");
        assert!(!s.unsealed_before(earlier).unwrap(), "{name}");
        while s.seal_pending(2, now, &sign_plain).unwrap().is_some() {}
        assert!(!s.unsealed_before(later).unwrap(), "{name}: final once sealed");
        let rows = s.disclosures(month, month).unwrap();
        assert_eq!(rows.len(), 1, "{name}: {rows:?}");
        let r = &rows[0];
        assert_eq!(
            (r.org.as_str(), r.category.as_str(), r.purpose.as_deref(), r.n),
            ("XGP01", "physical-assault", Some("staff-safety"), 5),
            "{name}"
        );
        assert!(s.seal_pending(2, now, &sign_plain).unwrap().is_none());
        assert_eq!(s.disclosures(month, month).unwrap()[0].n, 5, "{name}: counted once");
    }
}
