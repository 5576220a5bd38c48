//! The IG review API (filters, paging, exports, summaries), the subject access report and the
//! publisher's feed of decisions on its notices — on both databases.

use std::time::{Duration, Instant};

use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{json, Value};

use crate::both;
use crate::support::*;

const PERSON_A: &str = "9990000018";
const PERSON_B: &str = "9990000026";

fn lookup(b: &TestBroker, client: &str, user: &str, role: &str, purpose: &str, nhs: &str, bg: Option<&str>) -> u16 {
    let mut body = json!({"purpose": purpose, "requester": {"user_id": user, "role": role},
        "subject": {"person": {"nhs_number": nhs}}});
    if let Some(j) = bg {
        body["break_glass"] = json!({"justification": j});
    }
    b.http.post(b.url("/v1/lookups")).bearer_auth(b.token(client)).json(&body).send().unwrap().status().as_u16()
}

/// A request as the ICB's IG lead.
fn ig(b: &TestBroker, r: RequestBuilder) -> RequestBuilder {
    r.bearer_auth(b.token("icb-ig")).header("VPR-User-Id", "ig-lead-1").header("VPR-User-Role", "ig-lead")
}

fn entries_get(b: &TestBroker, query: &str) -> Response {
    ig(b, b.http.get(b.url(&format!("/v1/audit/entries{query}")))).send().unwrap()
}

fn search(b: &TestBroker, body: &Value) -> Response {
    ig(b, b.http.post(b.url("/v1/audit/entries/search"))).json(body).send().unwrap()
}

fn orgs(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["organisation"]["ods_code"].as_str().unwrap().to_owned())
        .collect()
}

fn error_rules(r: Response) -> Vec<(String, String)> {
    assert_eq!(r.status(), 422);
    let body = json_of(r);
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pointer"].as_str().unwrap().to_owned(), e["rule"].as_str().unwrap().to_owned()))
        .collect()
}

/// Publishes a notice about A, then: a GP existence check (permit), a police refusal (deny), an
/// ED break-glass read (permit), and a council search for B (no match). Returns A's notice id.
fn activity(b: &TestBroker) -> String {
    let notice = json_of(b.publish(&b.token("amb-cad"), &person_notice(PERSON_A)));
    assert_eq!(lookup(b, "gp-green", "=HYPERLINK(\"x\")", "gp-receptionist", "staff-safety", PERSON_A, None), 200);
    assert_eq!(lookup(b, "police", "pc-4411", "police-officer", "crime-prevention", PERSON_A, None), 200);
    let bg = Some("patient violent in resus, no history available");
    assert_eq!(lookup(b, "acute-ed", "ed-doc-3", "ed-clinician", "staff-safety", PERSON_A, bg), 200);
    assert_eq!(lookup(b, "council", "sw-20", "social-worker", "safeguarding", PERSON_B, None), 200);
    notice["id"].as_str().unwrap().to_owned()
}

both!(ig_review_filters_pages_and_exports_the_audit_log, |b: &TestBroker| {
    let notice = activity(b);
    let page = json_of(entries_get(b, ""));
    assert_eq!(orgs(&page), ["XLA01", "XAC01", "XPF01", "XGP01"], "newest first");
    assert!(page["next_before"].is_null());
    // The search itself was audited, with who asked and why.
    let audit = b.last_audit();
    assert_eq!((audit["action"].as_str(), audit["actor_role"].as_str()), (Some("audit-search"), Some("ig-lead")));

    let filtered = |q: &str| orgs(&json_of(entries_get(b, q)));
    let only_lookups = "action=lookup&";
    assert_eq!(filtered(&format!("?{only_lookups}organisation=XPF01")), ["XPF01"]);
    assert_eq!(filtered(&format!("?{only_lookups}decision=deny")), ["XPF01"]);
    assert_eq!(filtered(&format!("?{only_lookups}purpose=safeguarding")), ["XLA01"]);
    assert_eq!(filtered(&format!("?{only_lookups}role=gp-receptionist")), ["XGP01"]);
    assert_eq!(filtered(&format!("?{only_lookups}user=ed-doc-3")), ["XAC01"]);
    assert_eq!(filtered(&format!("?{only_lookups}break_glass=true")), ["XAC01"]);
    assert_eq!(filtered(&format!("?{only_lookups}break_glass=false")), ["XLA01", "XPF01", "XGP01"]);
    assert_eq!(filtered(&format!("?{only_lookups}notice={notice}")), ["XAC01", "XPF01", "XGP01"]);
    assert_eq!(filtered(&format!("?{only_lookups}decision=no-match&reference=IG-2026-17")), ["XLA01"]);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let earlier = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(filtered(&format!("?from={later}")).is_empty());
    assert!(filtered(&format!("?to={earlier}")).is_empty());
    assert_eq!(filtered(&format!("?{only_lookups}from={earlier}&to={later}")), ["XLA01", "XAC01", "XPF01", "XGP01"]);

    // By subject: identifiers go in a body, matched by blind index, never in a URL.
    let by_subject =
        |nhs: &str| json_of(search(b, &json!({"action": "lookup", "subject": {"person": {"nhs_number": nhs}}})));
    assert_eq!(orgs(&by_subject(PERSON_A)), ["XAC01", "XPF01", "XGP01"]);
    assert_eq!(orgs(&by_subject(PERSON_B)), ["XLA01"]);
    assert_eq!(
        b.last_audit()["subject_refs"].as_array().map(Vec::len),
        Some(1),
        "the IG search records whom it was about"
    );
    let r = entries_get(b, &format!("?subject.person.nhs_number={PERSON_A}"));
    assert_eq!(error_rules(r), [("/subject".to_owned(), "subject-in-url".to_owned())]);
    assert!(!b.log().contains(PERSON_A), "no identifier in the broker's log");

    // Bad filters are refused by name and rule.
    assert_eq!(error_rules(entries_get(b, "?colour=red")), [("/colour".to_owned(), "unknown-field".to_owned())]);
    assert_eq!(error_rules(entries_get(b, "?break_glass=maybe"))[0].0, "/break_glass");
    assert_eq!(error_rules(entries_get(b, "?from=yesterday"))[0].0, "/from");
    assert_eq!(error_rules(entries_get(b, "?decision=perhaps"))[0], ("/decision".to_owned(), "enum".to_owned()));
    assert_eq!(error_rules(entries_get(b, "?limit=0"))[0], ("/limit".to_owned(), "minimum".to_owned()));
    assert_eq!(
        error_rules(entries_get(b, &format!("?from={later}&to={earlier}")))[0],
        ("/to".to_owned(), "to-after-from".to_owned())
    );
    assert_eq!(
        error_rules(search(b, &json!({"subject": {"person": {"nhs_number": "9990000019"}}})))[0].0,
        "/subject/person/nhs_number"
    );

    // Stable paging: pages of two, following `next_before`, give every entry once, and entries
    // arriving meanwhile do not shift the pages still to come.
    let everything: Vec<i64> = json_of(entries_get(b, "?limit=500"))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let p = json_of(entries_get(b, &format!("?limit=2{cursor}")));
        paged.extend(p["entries"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()));
        assert_eq!(lookup(b, "gp-green", "gp-9", "gp-receptionist", "staff-safety", PERSON_B, None), 200);
        match p["next_before"].as_i64() {
            Some(before) => cursor = format!("&before={before}"),
            None => break,
        }
    }
    assert_eq!(
        paged.iter().filter(|s| everything.contains(s)).count(),
        everything.len(),
        "{paged:?} vs {everything:?}"
    );
    assert!(paged.windows(2).all(|w| w[0] > w[1]), "strictly newest first, no repeats: {paged:?}");

    // Exports: every matching entry, not a page.
    let lookups_now = json_of(entries_get(b, "?action=lookup&limit=500"))["entries"].as_array().unwrap().len();
    let csv = ig(b, b.http.get(b.url("/v1/audit/entries?action=lookup"))).header("Accept", "text/csv").send().unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let text = csv.text().unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(&header[..4], ["seq", "leaf_index", "audit_id", "at"]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), lookups_now);
    let user_col = header.iter().position(|h| h == "user").unwrap();
    assert!(
        rows.iter().any(|r| &r[user_col] == "'=HYPERLINK(\"x\")"),
        "a cell a spreadsheet would run as a formula is defused"
    );
    assert_eq!(b.last_audit()["action"], "audit-export");
    let nd = ig(b, b.http.get(b.url("/v1/audit/entries?action=lookup&format=ndjson"))).send().unwrap();
    assert_eq!(nd.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = nd.text().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), lookups_now);
    assert!(lines.iter().all(|e| e["action"] == "lookup" && e["audit_id"].is_string()));
    let nd_subject = ig(b, b.http.post(b.url("/v1/audit/entries/search?format=ndjson")))
        .json(&json!({"action": "lookup", "subject": {"person": {"nhs_number": PERSON_A}}}))
        .send()
        .unwrap();
    assert_eq!(nd_subject.text().unwrap().lines().count(), 3);

    // IG roles only; a refusal is itself audited.
    assert_eq!(b.get(&b.token("amb-cad"), "/v1/audit/entries").status(), 403);
    let r = b
        .http
        .get(b.url("/v1/audit/entries"))
        .bearer_auth(b.token("icb-ig"))
        .header("VPR-User-Id", "x")
        .header("VPR-User-Role", "gp-clinician")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        (b.last_audit()["action"].as_str(), b.last_audit()["decision"].as_str()),
        (Some("audit-search"), Some("refused"))
    );
    let r = b
        .http
        .get(b.url("/v1/audit/entries"))
        .bearer_auth(b.token("icb-ig"))
        .header("VPR-User-Role", "ig-lead")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "the IG user must be named");
});

both!(summaries_count_decisions_per_partner_and_purpose_per_day, |b: &TestBroker| {
    activity(b);
    assert_eq!(lookup(b, "gp-green", "gp-2", "gp-receptionist", "staff-safety", PERSON_A, None), 200);
    let today = chrono::Utc::now().date_naive().to_string();
    let r = ig(b, b.http.get(b.url(&format!("/v1/audit/summary?from={today}&to={today}")))).send().unwrap();
    assert_eq!(r.status(), 200);
    let s = json_of(r);
    let row = |org: &str, purpose: &str| {
        s["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["organisation"]["ods_code"] == org && r["purpose"] == purpose)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {org} {purpose}: {s:#}"))
    };
    let gp = row("XGP01", "staff-safety");
    assert_eq!(
        (gp["day"].as_str(), gp["entries"].as_i64(), gp["permit"].as_i64()),
        (Some(today.as_str()), Some(2), Some(2))
    );
    assert_eq!(gp["organisation"]["name"].as_str().map(|n| !n.is_empty()), Some(true));
    let police = row("XPF01", "crime-prevention");
    assert_eq!((police["deny"].as_i64(), police["permit"].as_i64()), (Some(1), Some(0)));
    assert_eq!(row("XAC01", "staff-safety")["break_glass"], 1);
    assert_eq!(row("XLA01", "safeguarding")["no_match"], 1);
    assert_eq!(b.last_audit()["action"], "audit-summary");

    let csv = ig(b, b.http.get(b.url("/v1/audit/summary?format=csv"))).send().unwrap().text().unwrap();
    assert!(csv.starts_with("day,organisation,organisation_name,purpose,entries,permit"), "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with(&format!("{today},XPF01,")) && l.contains(",crime-prevention,1,0,0,1,")),
        "{csv}"
    );

    let bad = |q: &str| error_rules(ig(b, b.http.get(b.url(&format!("/v1/audit/summary{q}")))).send().unwrap());
    assert_eq!(bad("?from=2026-13-01")[0], ("/from".to_owned(), "format".to_owned()));
    assert_eq!(bad("?from=2026-11-20&to=2026-11-01")[0], ("/to".to_owned(), "summary-range".to_owned()));
    assert_eq!(bad("?from=2024-01-01&to=2026-01-01")[0].1, "summary-range");
});

both!(subject_access_report_lists_every_disclosure_about_a_person, |b: &TestBroker| {
    let notice = activity(b);
    // Withdrawing the notice removes nothing from its audit.
    let amb = b.token("amb-cad");
    let current = b.get(&amb, &format!("/v1/notices/{notice}"));
    let etag = current.headers()["etag"].to_str().unwrap().to_owned();
    let r = b
        .http
        .post(b.url(&format!("/v1/notices/{notice}/withdraw")))
        .bearer_auth(&amb)
        .header("If-Match", etag)
        .json(&json!({"reason": "subject moved out of area"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    let sar = |body: Value, format: &str| {
        ig(b, b.http.post(b.url(&format!("/v1/audit/subject-access-report{format}")))).json(&body).send().unwrap()
    };
    let request = json!({"subject": {"person": {"nhs_number": PERSON_A}}, "reference": "SAR-2026-0042"});
    let r = sar(request.clone(), "");
    assert_eq!(r.status(), 200);
    let report = json_of(r);
    assert_eq!(report["reference"], "SAR-2026-0042");
    let notices = report["notices"].as_array().unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(
        (notices[0]["publisher"]["ods_code"].as_str(), notices[0]["status"].as_str()),
        (Some("XAM01"), Some("withdrawn"))
    );
    let disclosures = report["disclosures"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = disclosures
        .iter()
        .map(|d| {
            (
                d["organisation"]["ods_code"].as_str().unwrap(),
                d["view"].as_str().unwrap(),
                d["purpose"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("XGP01", "existence", "staff-safety"), ("XAC01", "summary", "staff-safety")], "oldest first");
    for d in disclosures {
        assert_eq!(d["notice_id"], notice.as_str());
        assert!(!d["lawful_basis"].as_array().unwrap().is_empty(), "{d}");
        assert!(!d["clauses"].as_array().unwrap().is_empty(), "{d}");
        assert!(d["purpose_title"].is_string());
    }
    assert_eq!(disclosures[1]["break_glass"], true);
    assert_eq!(
        report["recipients"].as_array().unwrap().iter().map(|r| r["ods_code"].as_str().unwrap()).collect::<Vec<_>>(),
        ["XAC01", "XGP01"]
    );
    let searches = report["searches"].as_array().unwrap();
    assert_eq!(searches.len(), 1, "the police look-up was refused: a search, not a disclosure");
    assert_eq!(
        (searches[0]["organisation"]["ods_code"].as_str(), searches[0]["decision"].as_str()),
        (Some("XPF01"), Some("deny"))
    );
    let audit = b.last_audit();
    assert_eq!(
        (audit["action"].as_str(), audit["purpose"].as_str()),
        (Some("subject-access-report"), Some("subject-access"))
    );
    assert_eq!(audit["subject_refs"].as_array().map(Vec::len), Some(1));

    // As CSV, one row per disclosure.
    let csv = sar(request, "?format=csv").text().unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("at,audit_id,notice_id,"));

    // Someone with no notices: nothing disclosed; the council's search is listed.
    let other = json_of(sar(json!({"subject": {"person": {"nhs_number": PERSON_B}}}), ""));
    assert!(other["disclosures"].as_array().unwrap().is_empty() && other["notices"].as_array().unwrap().is_empty());
    assert_eq!(other["searches"].as_array().unwrap().len(), 1);
    assert_eq!(error_rules(sar(json!({"reference": "SAR-1"}), ""))[0], ("/subject".to_owned(), "required".to_owned()));
    assert_eq!(b.get(&amb, "/v1/audit/summary").status(), 403);
});

/// Waits until everything committed is sealed.
fn sealed(b: &TestBroker) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = b.count("audit_entries");
    while json_of(b.http.get(b.url("/v1/audit/checkpoints/latest")).send().unwrap())["tree_size"].as_i64()
        != Some(total)
    {
        assert!(Instant::now() < deadline, "not sealed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

both!(publishers_follow_every_decision_on_their_notices, |b: &TestBroker| {
    let (amb, ed) = (b.token("amb-cad"), b.token("acute-ed"));
    let mine = json_of(b.publish(&amb, &person_notice(PERSON_A)))["id"].as_str().unwrap().to_owned();
    let theirs = json_of(b.publish(&ed, &person_notice(PERSON_A)))["id"].as_str().unwrap().to_owned();
    assert_eq!(lookup(b, "gp-green", "gp-1", "gp-receptionist", "staff-safety", PERSON_A, None), 200);
    assert_eq!(lookup(b, "police", "pc-1", "police-officer", "crime-prevention", PERSON_A, None), 200);
    assert_eq!(lookup(b, "council", "sw-1", "social-worker", "safeguarding", PERSON_B, None), 200);
    sealed(b);
    let feed = |token: &str, q: &str| {
        let r = b.get(token, &format!("/v1/access-log{q}"));
        assert_eq!(r.status(), 200);
        json_of(r)
    };
    let first = feed(&amb, "");
    assert_eq!(orgs(&first), ["XGP01", "XPF01"], "oldest first, only decisions on my notices");
    for e in first["entries"].as_array().unwrap() {
        let ids: Vec<&str> = e["notices"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [mine.as_str()], "another publisher's notice is not shown");
    }
    assert_eq!(first["entries"][1]["notices"][0]["decision"], "deny");
    assert_eq!(b.last_audit()["action"], "access-log-feed", "reading who saw what is audited");
    let after = first["next_after"].as_i64().unwrap();

    // Nothing new: an empty answer with the same cursor, and no audit entry for it.
    sealed(b);
    let entries_before = b.count("audit_entries");
    let idle = feed(&amb, &format!("?after={after}"));
    assert!(idle["entries"].as_array().unwrap().is_empty());
    assert_eq!(idle["next_after"].as_i64(), Some(after));
    assert_eq!(b.count("audit_entries"), entries_before);

    // A new disclosure appears once sealed, after the cursor, exactly once.
    let bg = Some("unconscious patient, violent on arrival last week per crew");
    assert_eq!(lookup(b, "acute-ed", "ed-doc-3", "ed-clinician", "direct-care", PERSON_A, bg), 200);
    sealed(b);
    let next = feed(&amb, &format!("?after={after}"));
    assert_eq!(orgs(&next), ["XAC01"]);
    assert_eq!(next["entries"][0]["break_glass"], true);
    assert_eq!(
        feed(&amb, &format!("?after={}", next["next_after"])).get("entries").map(|e| e.as_array().unwrap().len()),
        Some(0)
    );
    // The ED sees decisions on its own notice only; a partner with no notices sees none.
    assert!(orgs(&feed(&ed, "")).contains(&"XGP01".to_owned()));
    assert!(feed(&ed, "")["entries"].as_array().unwrap().iter().all(|e| e["notices"][0]["id"] == theirs.as_str()));
    assert!(feed(&b.token("gp-green"), "")["entries"].as_array().unwrap().is_empty());
    assert_eq!(b.get(&amb, "/v1/access-log?limit=500").status(), 422);
    assert_eq!(b.get(&b.token("police"), "/v1/access-log").status(), 403, "only publishers");
});

both!(review_actions_are_in_the_sealed_log_and_the_export_verifies, |b: &TestBroker| {
    activity(b);
    assert_eq!(entries_get(b, "?action=lookup").status(), 200);
    sealed(b);
    let jwks = b.dir.path().join("jwks.json");
    std::fs::write(&jwks, b.http.get(b.url("/.well-known/jwks.json")).send().unwrap().text().unwrap()).unwrap();
    b.kill_hard();
    let export = b.dir.path().join("audit.ndjson");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary()).args(args).env_remove("VPR_DATABASE_URL").output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = run(&["audit", "export", "--database", &b.database_url, "--out", export.to_str().unwrap()]);
    assert!(ok && text.contains("exported 5 sealed entries"), "{text}");
    let (ok, _) = run(&["audit", "export", "--database", &b.database_url, "--out", export.to_str().unwrap()]);
    assert!(!ok, "an export never overwrites");
    let verify = |path: &std::path::Path| {
        run(&["audit", "verify", "--export", path.to_str().unwrap(), "--jwks", jwks.to_str().unwrap()])
    };
    let (ok, text) = verify(&export);
    assert!(ok && text.contains("5 sealed entries") && text.contains("verifies"), "{text}");
    // The export holds no identifier, and an edited export is caught, naming the entry.
    let content = std::fs::read_to_string(&export).unwrap();
    assert!(!content.contains(PERSON_A) && !content.contains("999 000 0018"));
    let edited = b.dir.path().join("edited.ndjson");
    std::fs::write(&edited, content.replacen("\"XPF01\"", "\"XLA01\"", 1)).unwrap();
    let (ok, text) = verify(&edited);
    assert!(!ok && text.contains("entry at leaf 1"), "{text}");
    let truncated = b.dir.path().join("truncated.ndjson");
    std::fs::write(&truncated, content.lines().take(4).collect::<Vec<_>>().join("\n")).unwrap();
    let (ok, text) = verify(&truncated);
    assert!(!ok && text.contains("truncated"), "{text}");
});
