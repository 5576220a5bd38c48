//! The IG and VPR console, as the people who govern the sharing use it: a real browser (Debian's
//! headless Chromium, through ChromeDriver) signing in at the real demo OpenID Provider (npm
//! `oidc-provider`, examples/demo-oidc) against a running broker — and, over plain HTTP, every
//! way a sign-in or a form can be forged. On both databases. Screenshots of the pages are kept
//! in `$CARGO_TARGET_DIR/console-screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client as Http;
use serde_json::Value;

use crate::both_backends;
use crate::support::*;

/// The demo users (examples/demo-oidc/users.json): username, subject, name.
const IG_LEAD: (&str, &str, &str) = ("ig-lead", "nma-073498e39ae8fbbb", "Alex Thornbury");
const VPR_LEAD: (&str, &str, &str) = ("vpr-lead", "nma-3b8e7bc6be25b51d", "Jordan Ashcombe");
const OUTSIDER: (&str, &str, &str) = ("outsider", "nma-e2fe831900494096", "Riley Outram");
const PASSWORD: &str = "demo-password";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The demo OpenID Provider, run for one test with its test hooks on.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    /// Starts it for a console at `console_base`; `None` (skipped) if Node.js or the provider's
    /// packages are missing outside CI.
    fn start(console_base: &str) -> Option<Self> {
        let dir = repo().join("examples/demo-oidc");
        if !dir.join("node_modules/oidc-provider").exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "the demo OpenID Provider is not installed (scripts/test runs npm ci in examples/demo-oidc)"
            );
            eprintln!("SKIPPED: the demo OpenID Provider is not installed (npm ci in examples/demo-oidc)");
            return None;
        }
        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("PORT", port.to_string())
            .env("ISSUER", &issuer)
            .env("CONSOLE_BASE", console_base)
            .env("OIDC_TEST_HOOKS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("the OpenID Provider did not start");
        Some(Self { child, issuer })
    }

    /// Arms a test hook: the next ID token carries a wrong `aud` or `nonce`.
    fn arm(&self, hook: &str, name: &str, value: &str) {
        let r = Http::new().post(format!("{}/test/{hook}", self.issuer)).form(&[(name, value)]).send().unwrap();
        assert!(r.status().is_success(), "arming {hook}: {}", r.status());
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker with the console signing in at a fresh demo OpenID Provider.
fn console_broker(backend: Backend) -> Option<(TestBroker, Provider)> {
    console_broker_as(
        backend,
        "client_id = \"vpr-console\"\nclient_secret = \"demo-only-console-secret-not-for-production\"",
    )
}

/// The same, the console's client configured as `client`.
fn console_broker_as(backend: Backend, client: &str) -> Option<(TestBroker, Provider)> {
    let b = TestBroker::unstarted('X', backend, |_| {})?;
    let op = Provider::start(&b.base)?;
    let issuer = op.issuer.clone();
    b.edit_config(|cfg| {
        cfg.insert("demo".into(), toml::Value::Boolean(true));
        let console: toml::Table =
            toml::from_str(&format!("issuer = \"{issuer}\"\n{client}\nidle_timeout_minutes = 15")).unwrap();
        cfg.insert("console".into(), toml::Value::Table(console));
    });
    b.spawn();
    Some((b, op))
}

/// The value a `Set-Cookie` of `r` gives cookie `name`.
fn set_cookie(r: &Response, name: &str) -> Option<String> {
    r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k.trim() == name && !v.is_empty()).then(|| v.to_owned())
    })
}

fn location(r: &Response) -> String {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

const SESSION: &str = "__Host-vpr-console";
const SIGN_IN: &str = "__Host-vpr-console-sign-in";

/// A sign-in driven over HTTP as a browser would: the broker's redirect, the provider's own
/// login form, its redirect back. Returns the callback URL and the sign-in cookie, before the
/// broker is given them.
fn reach_callback(b: &TestBroker, op: &Provider, username: &str) -> (String, String) {
    let r = b.http.get(b.url("/console/sign-in")).send().unwrap();
    assert_eq!(r.status(), 303, "sign-in redirects to the identity provider");
    let bound = set_cookie(&r, SIGN_IN).expect("a sign-in cookie");
    let mut next = location(&r);
    assert!(next.starts_with(&op.issuer), "to the provider: {next}");
    assert!(next.contains("code_challenge_method=S256") && next.contains("nonce=") && next.contains("state="));
    let browser = Http::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..10 {
        let r = browser.get(&next).send().unwrap();
        if r.status().is_redirection() {
            next = absolute(&op.issuer, &location(&r));
            if next.starts_with(&b.base) {
                return (next, bound);
            }
            continue;
        }
        let page = r.text().unwrap();
        let action = page.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("the login form");
        let r = browser
            .post(absolute(&op.issuer, action))
            .form(&[("username", username), ("password", PASSWORD)])
            .send()
            .unwrap();
        assert!(r.status().is_redirection(), "the provider accepted the login: {}", r.status());
        next = absolute(&op.issuer, &location(&r));
    }
    panic!("the provider never sent the browser back");
}

fn absolute(base: &str, url: &str) -> String {
    if url.starts_with("http") {
        url.to_owned()
    } else {
        format!("{base}{url}")
    }
}

/// Gives the broker the callback: its answer.
fn callback(b: &TestBroker, url: &str, bound: &str) -> Response {
    b.http.get(url).header("cookie", format!("{SIGN_IN}={bound}")).send().unwrap()
}

/// Signs `username` in over HTTP; returns the session cookie.
fn sign_in(b: &TestBroker, op: &Provider, username: &str) -> String {
    let (url, bound) = reach_callback(b, op, username);
    let r = callback(b, &url, &bound);
    assert_eq!(r.status(), 303, "signed in: {}", r.text().unwrap_or_default());
    set_cookie(&r, SESSION).expect("a session cookie")
}

fn page(b: &TestBroker, session: &str, path: &str) -> Response {
    b.http.get(b.url(path)).header("cookie", format!("{SESSION}={session}")).send().unwrap()
}

/// The CSRF token of a page's sign-out form.
fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("a csrf field").to_owned()
}

fn entries(b: &TestBroker, action: &str) -> Vec<Value> {
    b.audit_entries_via_review().into_iter().filter(|e| e["action"] == action).collect()
}

both_backends!(forged_and_refused_sign_ins, |backend| {
    let Some((b, op)) = console_broker(backend) else { return };
    // No session: to sign-in, coming back to the page asked for.
    let r = b.http.get(b.url("/console/audit")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/console/sign-in?return_to=%2Fconsole%2Faudit");
    // A callback this browser did not start (forged state), with or without a sign-in cookie.
    let r = b.http.get(b.url("/console/callback?code=made-up&state=forged")).send().unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("was not started here"));
    let (url, bound) = reach_callback(&b, &op, IG_LEAD.0);
    let other = set_cookie(&b.http.get(b.url("/console/sign-in")).send().unwrap(), SIGN_IN).unwrap();
    assert_eq!(callback(&b, &url, &other).status(), 400, "a state bound to another browser");
    // The real one still works once; its code replayed does not.
    let r = callback(&b, &url, &bound);
    assert_eq!(r.status(), 303);
    assert!(set_cookie(&r, SESSION).is_some());
    let r = callback(&b, &url, &bound);
    assert_eq!(r.status(), 400, "a replayed code");
    assert!(set_cookie(&r, SESSION).is_none());
    // ID tokens with the wrong nonce or audience (the provider's test hooks).
    op.arm("next-id-token-nonce", "nonce", "not-the-console-nonce");
    let (url, bound) = reach_callback(&b, &op, IG_LEAD.0);
    let r = callback(&b, &url, &bound);
    assert_eq!(r.status(), 400, "wrong nonce");
    assert!(r.text().unwrap().contains("could not be verified"));
    op.arm("next-id-token-audience", "aud", "someone-else");
    let (url, bound) = reach_callback(&b, &op, IG_LEAD.0);
    assert_eq!(callback(&b, &url, &bound).status(), 400, "wrong audience");
    assert!(b.log().contains("audience"), "the log says why");
    // A person whose organisation is not in the registry: refused, and audited.
    let (url, bound) = reach_callback(&b, &op, OUTSIDER.0);
    let r = callback(&b, &url, &bound);
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("not an organisation of this ICS"));
    let refused = entries(&b, "console-sign-in");
    assert!(refused.iter().any(|e| e["user"] == OUTSIDER.1 && e["decision"] == "refused"), "{refused:?}");
    assert!(refused
        .iter()
        .any(|e| e["user"] == IG_LEAD.1 && e["decision"] == "permit" && e["system"] == "vpr-console"));
});

/// The console authenticates to the provider with `private_key_jwt`: an assertion signed with
/// the broker's own key, which the provider reads from the broker's JWKS. No secret is shared.
#[test]
fn the_console_can_authenticate_with_private_key_jwt() {
    let client = "client_id = \"vpr-console-pkjwt\"\nclient_auth = \"private_key_jwt\"";
    let Some((b, op)) = console_broker_as(Backend::Sqlite, client) else { return };
    let session = sign_in(&b, &op, IG_LEAD.0);
    assert_eq!(page(&b, &session, "/console").status(), 200);
    // The provider refuses a code for this client without the assertion: the secret client's
    // configuration signs in nowhere here.
    let Some((b2, op2)) = console_broker_as(
        Backend::Sqlite,
        "client_id = \"vpr-console-pkjwt\"\nclient_secret = \"demo-only-console-secret-not-for-production\"",
    ) else {
        return;
    };
    let (url, bound) = reach_callback(&b2, &op2, IG_LEAD.0);
    let r = callback(&b2, &url, &bound);
    assert_eq!(r.status(), 400, "a secret instead of the signed assertion");
    assert!(b2.log().contains("refused the code"), "the log says why");
}

both_backends!(forms_need_the_csrf_token_and_roles_are_kept_apart, |backend| {
    let Some((b, op)) = console_broker(backend) else { return };
    let session = sign_in(&b, &op, IG_LEAD.0);
    let home = page(&b, &session, "/console");
    assert_eq!(home.status(), 200);
    let csrf = csrf_of(&home.text().unwrap());
    for form in [vec![], vec![("csrf", "not-the-token")]] {
        let r = b
            .http
            .post(b.url("/console/sign-out"))
            .header("cookie", format!("{SESSION}={session}"))
            .form(&form)
            .send()
            .unwrap();
        assert_eq!(r.status(), 403, "a form without the session's CSRF token");
        assert_eq!(page(&b, &session, "/console").status(), 200, "and nothing changed: still signed in");
    }
    let r = b
        .http
        .post(b.url("/console/sign-out"))
        .header("cookie", format!("{SESSION}={session}"))
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "a form posted from another site");
    let sar = |form: &[(&str, &str)]| {
        b.http
            .post(b.url("/console/subject-access"))
            .header("cookie", format!("{SESSION}={session}"))
            .form(form)
            .send()
            .unwrap()
    };
    assert_eq!(sar(&[("reference", "SAR-1"), ("nhs_number", "9990000018")]).status(), 403, "no CSRF token");
    let r = sar(&[("csrf", csrf.as_str()), ("reference", "SAR-1")]);
    assert_eq!(r.status(), 422);
    assert!(r.text().unwrap().contains("Enter at least one identifier"));
    let r = sar(&[("csrf", csrf.as_str()), ("reference", "SAR-1"), ("nhs_number", "9990000019")]);
    assert_eq!(r.status(), 422, "an NHS number with a wrong check digit");
    assert!(r.text().unwrap().contains("href=\"#nhs_number\""), "the error names the field");
    let r =
        sar(&[("csrf", csrf.as_str()), ("reference", "SAR-1"), ("nhs_number", "9990000018"), ("from", "2026-13-45")]);
    assert_eq!(r.status(), 422, "a date that is not one");
    assert!(r.text().unwrap().contains("href=\"#from\""), "the error names the field");
    let r = sar(&[("csrf", csrf.as_str()), ("reference", "SAR-1"), ("nhs_number", "9990000018"), ("show", "json")]);
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("subject-access-report.json"));
    let report: Value = r.json().unwrap();
    assert_eq!(report["reference"], "SAR-1");
    // Another site cannot make the browser run an audited read: it is asked to go on first.
    let before = entries(&b, "audit-search").len();
    let r = b
        .http
        .get(b.url("/console/audit?reference=from-elsewhere&action=lookup"))
        .header("cookie", format!("{SESSION}={session}"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(
        text.contains("Continue to the console")
            && text.contains("href=\"/console/audit?reference=from-elsewhere&#38;action=lookup\""),
        "{text}"
    );
    let searches = entries(&b, "audit-search");
    assert!(
        !searches.iter().any(|e| e["context_reference"].as_str().is_some_and(|c| c.starts_with("from-elsewhere"))),
        "nothing was searched"
    );
    assert!(searches.len() >= before);
    let r = b
        .http
        .get(b.url("/console/audit?reference=from-here&action=lookup"))
        .header("cookie", format!("{SESSION}={session}"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .unwrap();
    assert!(r.text().unwrap().contains("results-heading"), "from the console's own pages it runs");
    // A VPR lead may not search the audit: a clear page, and the refusal audited.
    let vpr = sign_in(&b, &op, VPR_LEAD.0);
    let r = page(&b, &vpr, "/console/audit");
    assert_eq!(r.status(), 403);
    let text = r.text().unwrap();
    assert!(text.contains("You do not have access") && text.contains("information governance roles only"), "{text}");
    let refused = entries(&b, "audit-search");
    assert!(refused.iter().any(|e| e["user"] == VPR_LEAD.1 && e["decision"] == "refused" && e["role"] == "vpr-lead"));
    assert_eq!(page(&b, &vpr, "/console/break-glass").status(), 403, "nor open the break-glass queue");
    assert_eq!(page(&b, &vpr, "/console/subscriptions").status(), 403, "nor decide subscriptions");
    assert_eq!(page(&b, &vpr, "/console/subject-access").status(), 403, "nor make subject access reports");
    let refused = entries(&b, "break-glass-queue");
    assert!(refused.iter().any(|e| e["user"] == VPR_LEAD.1 && e["decision"] == "refused"));
    // Nor record an outcome, even with the form's token.
    let vpr_csrf = csrf_of(&page(&b, &vpr, "/console").text().unwrap());
    let r = b
        .http
        .post(b.url(&format!("/console/break-glass/{}", uuid::Uuid::new_v4())))
        .header("cookie", format!("{SESSION}={vpr}"))
        .form(&[("csrf", vpr_csrf.as_str()), ("outcome", "appropriate"), ("note", "no")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // The session cookie is HttpOnly, Secure and SameSite, for the host only.
    let (url, bound) = reach_callback(&b, &op, IG_LEAD.0);
    let r = callback(&b, &url, &bound);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(SESSION))
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Domain"));
});

/// ChromeDriver driving headless Chromium, for one test.
struct Browser {
    driver: Child,
    runtime: tokio::runtime::Runtime,
    client: fantoccini::Client,
    shots: PathBuf,
}

impl Browser {
    fn start(name: &str) -> Option<Self> {
        let (chromium, chromedriver) = (Path::new("/usr/bin/chromium"), Path::new("/usr/bin/chromedriver"));
        if !chromium.exists() || !chromedriver.exists() {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "chromium and chromium-driver are not installed");
            eprintln!("SKIPPED: chromium and chromium-driver are not installed");
            return None;
        }
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let caps: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1100",
            ]}
        }))
        .unwrap();
        let started = Instant::now();
        let client = loop {
            let connect = runtime.block_on(
                fantoccini::ClientBuilder::native()
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}")),
            );
            match connect {
                Ok(c) => break c,
                Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("chromedriver: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo().join("target"));
        let shots = target.join("console-screenshots").join(name);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Self { driver, runtime, client, shots })
    }

    fn goto(&self, url: &str) {
        self.runtime.block_on(self.client.goto(url)).unwrap();
    }

    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.runtime
            .block_on(self.client.wait().at_most(Duration::from_secs(15)).for_element(fantoccini::Locator::Css(css)))
            .unwrap_or_else(|e| panic!("no `{css}` on {}: {e}", self.url()))
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.runtime.block_on(e.text()).unwrap()
    }

    fn fill(&self, css: &str, value: &str) {
        let e = self.find(css);
        self.runtime.block_on(e.send_keys(value)).unwrap();
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.runtime.block_on(e.click()).unwrap();
    }

    fn url(&self) -> String {
        self.runtime.block_on(self.client.current_url()).map(|u| u.to_string()).unwrap_or_default()
    }

    fn wait_url(&self, part: &str) {
        let started = Instant::now();
        while !self.url().contains(part) {
            assert!(started.elapsed() < Duration::from_secs(15), "never reached `{part}`: at {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        let all = self.runtime.block_on(self.client.get_all_cookies()).unwrap();
        all.into_iter().find(|c| c.name() == name).map(|c| c.value().to_owned())
    }

    /// Runs axe-core (tests/browser, injected through WebDriver) on the page: no WCAG 2.0, 2.1
    /// or 2.2 A or AA violation may be found.
    fn axe(&self, page: &str) {
        let source = std::fs::read_to_string(repo().join("tests/browser/node_modules/axe-core/axe.min.js"))
            .expect("axe-core (scripts/test runs npm ci in tests/browser)");
        self.runtime.block_on(self.client.execute(&format!("{source}\nreturn typeof axe;"), vec![])).unwrap();
        let run = "const done = arguments[arguments.length - 1];
            axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})
              .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                  nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))
              .catch(e => done([{id: 'axe-error', help: String(e)}]));";
        let violations = self.runtime.block_on(self.client.execute_async(run, vec![])).unwrap();
        assert_eq!(violations, serde_json::json!([]), "axe-core found WCAG violations on the {page} page");
    }

    /// A screenshot of the whole page (the window stretched to the page's height for it).
    fn screenshot(&self, name: &str) {
        let height = self
            .runtime
            .block_on(self.client.execute("return document.documentElement.scrollHeight", vec![]))
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(1100)
            .clamp(600, 6000);
        let _ = self.runtime.block_on(self.client.set_window_size(1280, u32::try_from(height).unwrap_or(1100)));
        let png = self.runtime.block_on(self.client.screenshot()).unwrap();
        let _ = self.runtime.block_on(self.client.set_window_size(1280, 1100));
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.runtime.block_on(client.close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

both_backends!(an_ig_lead_signs_in_searches_the_audit_and_signs_out_in_a_browser, |backend| {
    let Some((b, op)) = console_broker(backend) else { return };
    let name = format!("{backend:?}").to_lowercase();
    let Some(browser) = Browser::start(&name) else { return };
    // Some activity to find: a notice, and an emergency department's break-glass look-up of it.
    let notice = json_of(b.publish(&b.token("amb-cad"), &person_notice("9990000018")));
    let notice_id = notice["id"].as_str().unwrap().to_owned();
    let lookup = serde_json::json!({"purpose": "direct-care", "requester": {"user_id": "ed-1", "role": "ed-clinician"},
        "subject": {"person": {"nhs_number": "9990000018"}},
        "break_glass": {"justification": "Unconscious patient brought in by ambulance, no history available"}});
    assert_eq!(b.post_json(&b.token("acute-ed"), "/v1/lookups", &lookup).status(), 200);
    // A page opened without a session goes to the provider's own login page.
    browser.goto(&b.url("/console/audit"));
    browser.find("#username");
    assert!(browser.url().starts_with(&op.issuer), "at the provider: {}", browser.url());
    browser.screenshot("provider-login");
    browser.fill("#username", IG_LEAD.0);
    browser.fill("#password", PASSWORD);
    browser.click("#sign-in");
    // Back at the page first asked for, signed in.
    browser.wait_url("/console/audit");
    assert_eq!(browser.text("#page-heading"), "Audit search");
    assert!(browser.text("#signed-in-as").contains(IG_LEAD.2));
    browser.screenshot("audit-form");
    browser.axe("audit search");
    browser.fill("#reference", "SAR-2026-0001");
    browser.fill("#organisation", "XAC01");
    browser.click("#search");
    browser.wait_url("reference=SAR-2026-0001");
    assert!(browser.text("#results-heading").starts_with("1 entry"), "{}", browser.text("#results-heading"));
    assert!(browser.text("#results").contains("lookup"));
    browser.screenshot("audit-results");
    browser.axe("audit results");
    let results = browser.url();
    // The same entries as a download (with the browser's own session).
    let href = {
        let link = browser.find("#export-csv");
        browser.runtime.block_on(link.attr("href")).unwrap().expect("a download link")
    };
    let session = browser.cookie(SESSION).expect("the session cookie");
    let csv = page(&b, &session, &href);
    assert_eq!(csv.status(), 200);
    assert!(content_type(&csv).starts_with("text/csv"));
    let csv = csv.text().unwrap();
    assert!(csv.starts_with("seq,leaf_index,audit_id"), "{csv}");
    assert_eq!(csv.lines().count(), 2, "the header and the one look-up: {csv}");
    assert!(entries(&b, "audit-export").iter().any(|e| e["user"] == IG_LEAD.1 && e["system"] == "vpr-console"));
    // The search is audited, naming the person.
    let searches = entries(&b, "audit-search");
    let mine = searches.iter().find(|e| e["user"] == IG_LEAD.1).expect("the console's search is audited");
    assert_eq!(mine["system"], "vpr-console");
    assert_eq!(mine["role"], "ig-lead");
    assert_eq!(mine["organisation"]["ods_code"], "XIC01");
    assert!(mine["context_reference"].as_str().unwrap().starts_with("SAR-2026-0001 | "));
    // The entry's detail, with its inclusion proof checked against the latest checkpoint.
    b.wait_sealed();
    browser.goto(&results);
    browser.click("#results a.nhsuk-link");
    browser.wait_url("/console/audit/entries/");
    assert!(browser.text("#proof-result").contains("Proven"), "{}", browser.text("#proof-result"));
    assert!(browser.text("#entry-facts").contains("ed-clinician"));
    browser.screenshot("audit-entry");
    browser.axe("audit entry");
    assert!(entries(&b, "audit-entry").iter().any(|e| e["user"] == IG_LEAD.1));
    // The log's integrity: the latest checkpoint, signed, consistent with the one before.
    browser.goto(&b.url("/console/integrity"));
    assert!(browser.text("#latest-signature").contains("Verified"));
    browser.screenshot("integrity");
    browser.axe("log integrity");
    assert!(entries(&b, "log-integrity").iter().any(|e| e["user"] == IG_LEAD.1));
    // The break-glass queue: record an outcome.
    let queue: Value = b.as_ig(b.http.get(b.url("/v1/audit/break-glass"))).send().unwrap().json().unwrap();
    let id = queue["entries"][0]["audit_id"].as_str().expect("a pending break-glass access").to_owned();
    browser.goto(&b.url("/console/break-glass"));
    assert!(browser.text(&format!("#access-{id}")).contains("Unconscious patient"));
    browser.click(&format!("#outcome-{id}-appropriate"));
    browser.fill(&format!("#note-{id}"), "Checked with the ED consultant: justified.");
    browser.screenshot("break-glass");
    browser.axe("break-glass");
    browser.click(&format!("#record-{id}"));
    std::thread::sleep(Duration::from_millis(500));
    browser.screenshot("break-glass-recorded");
    browser.wait_url("recorded=");
    assert!(browser.text("#recorded").contains(&id));
    let reviewed: Value =
        b.as_ig(b.http.get(b.url("/v1/audit/break-glass?status=appropriate"))).send().unwrap().json().unwrap();
    assert_eq!(reviewed["entries"][0]["audit_id"], id.as_str());
    let outcome = entries(&b, "break-glass-review");
    assert!(outcome
        .iter()
        .any(|e| e["user"] == IG_LEAD.1 && e["decision"] == "appropriate" && e["system"] == "vpr-console"));
    // A subject access report for the person, on screen.
    browser.goto(&b.url("/console/subject-access"));
    browser.fill("#reference", "SAR-2026-0002");
    browser.fill("#nhs_number", "999 000 0018");
    browser.click("#make-report");
    assert_eq!(browser.text("#report-heading"), "Report SAR-2026-0002");
    assert!(browser.text("#sar-notices").contains(&notice_id));
    assert!(browser.text("#sar-disclosures").contains("XAC01"), "the ED's break-glass disclosure");
    assert!(!browser.url().contains("9990000018"), "identifiers never in the URL");
    browser.screenshot("subject-access");
    browser.axe("subject access");
    let reports = entries(&b, "subject-access-report");
    assert!(reports.iter().any(|e| e["user"] == IG_LEAD.1 && e["purpose"] == "subject-access"));
    // A police subscription the agreement does not allow outright: approve it.
    let police = b.token("police");
    let sub = b.subscribe(
        &police,
        &serde_json::json!({
            "purpose": "crime-prevention", "role": "police-officer", "criteria": {"postcodes": ["LS"]},
            "payload": "view", "delivery": {"method": "feed"}, "tag": "console-approval",
            "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        }),
    );
    assert_eq!(sub["status"], "pending-approval");
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    browser.goto(&b.url("/console/subscriptions"));
    assert!(browser.text(&format!("#subscription-{sub_id}")).contains("crime-prevention"));
    browser.click(&format!("#decision-{sub_id}-approve"));
    browser.fill(&format!("#note-{sub_id}"), "Border district patrols; reviewed with the Caldicott guardian.");
    browser.screenshot("approvals");
    browser.axe("approvals");
    browser.click(&format!("#decide-{sub_id}"));
    browser.wait_url("decided=");
    assert!(browser.text("#decided").contains(&sub_id));
    let now = json_of(b.get(&police, &format!("/v1/subscriptions/{sub_id}")));
    assert_eq!(now["status"], "active", "{now:#}");
    let decisions = entries(&b, "subscription-approval");
    assert!(decisions.iter().any(|e| e["user"] == IG_LEAD.1 && e["system"] == "vpr-console"));
    // A consent recorded with its evidence, then listed.
    browser.goto(&b.url("/console/consents/new"));
    browser.click("#submit");
    assert!(
        browser.text("#error-summary").contains("Choose what is being recorded"),
        "nothing sent is nothing recorded"
    );
    browser.axe("consent form with errors");
    let select = |css: &str, value: &str| {
        let e = browser.find(css);
        browser.runtime.block_on(e.select_by_value(value)).unwrap();
    };
    select("#record", "consent-given");
    select("#purpose", "social-care-support");
    browser.fill("#nhs_number", "999 000 0018");
    browser.fill("#evidence_reference", "Signed form SC-2026-114, scanned to the case file");
    browser.screenshot("consent-form");
    browser.click("#submit");
    browser.wait_url("recorded=");
    assert!(browser.text("#records").contains("SC-2026-114"));
    browser.screenshot("consents");
    browser.axe("consents");
    assert!(entries(&b, "consent").iter().any(|e| e["user"] == IG_LEAD.1 && e["system"] == "vpr-console"));
    // The figures, small numbers suppressed: one notice and one disclosure are each "<8" (in
    // last month: the figures publish months that have ended).
    b.move_to_last_month();
    browser.goto(&b.url("/console/figures"));
    assert!(browser.text("#notices-by-partner").contains("<8"), "{}", browser.text("#notices-by-partner"));
    assert!(browser.text("#disclosures-by-partner").contains("<8"));
    browser.screenshot("figures");
    browser.axe("figures");
    assert!(entries(&b, "statistics").iter().any(|e| e["user"] == IG_LEAD.1));
    browser.goto(&b.url("/console"));
    browser.screenshot("home");
    browser.axe("home");
    // Sign out: at the broker, then at the provider; the session is gone.
    browser.click("#sign-out");
    browser.wait_url("/console/signed-out");
    assert_eq!(browser.text("#page-heading"), "You have signed out");
    browser.screenshot("signed-out");
    assert_eq!(page(&b, &session, "/console").status(), 303, "the old session cookie no longer works");
    assert!(entries(&b, "console-sign-out").iter().any(|e| e["user"] == IG_LEAD.1));
    browser.goto(&b.url("/console"));
    browser.find("#username");
    assert!(browser.url().starts_with(&op.issuer), "signed out at the provider too");
    // Every entry the console wrote names the person, in their role at their organisation.
    let written: Vec<Value> =
        b.audit_entries_via_review().into_iter().filter(|e| e["system"] == "vpr-console").collect();
    assert!(written.len() >= 15, "{} console entries", written.len());
    for e in &written {
        assert!(e["user"] == IG_LEAD.1 && e["role"] == "ig-lead" && e["organisation"]["ods_code"] == "XIC01", "{e}");
    }
});

/// A valid NHS number (fictional 999 range) for `seq`.
fn nhs(seq: u32) -> String {
    (0..100u32)
        .find_map(|t| {
            let stem = format!("999{:06}", (seq * 7 + t) % 1_000_000);
            let sum: u32 = stem.bytes().zip((2..=10).rev()).map(|(d, w)| u32::from(d - b'0') * w).sum();
            let check = (11 - sum % 11) % 11;
            (check != 10).then(|| format!("{stem}{check}"))
        })
        .unwrap()
}

/// Publishes `n` of the ambulance trust's notices from `first`, with `category`; their ids.
fn publish_many(b: &TestBroker, first: u32, n: u32, category: &str) -> Vec<String> {
    let t = b.token("amb-cad");
    (first..first + n)
        .map(|i| {
            let mut body = person_notice(&nhs(i));
            body["category"] = serde_json::json!(category);
            let r = b.publish(&t, &body);
            assert_eq!(r.status(), 201);
            json_of(r)["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn statistics(b: &TestBroker, client: &str, role: &str, query: &str) -> Response {
    b.http
        .get(b.url(&format!("/v1/statistics{query}")))
        .bearer_auth(b.token(client))
        .header("VPR-User-Id", "lead-1")
        .header("VPR-User-Role", role)
        .send()
        .unwrap()
}

/// The figure for `key` last month (the latest published) in the table of `measure` by `by`.
fn figure(stats: &Value, measure: &str, by: &str, key: &str) -> Value {
    let t = stats["tables"].as_array().unwrap().iter().find(|t| t["measure"] == measure && t["by"] == by).unwrap();
    let row = t["rows"].as_array().unwrap().iter().find(|r| r["key"] == key).unwrap_or_else(|| panic!("{key}: {t}"));
    row["counts"].as_array().unwrap().last().unwrap().clone()
}

both_backends!(a_vpr_lead_sees_notices_due_who_saw_them_and_figures_with_small_numbers_suppressed, |backend| {
    let Some((b, op)) = console_broker(backend) else { return };
    // Twelve assaults and one verbal-abuse notice from the ambulance trust; one due for review
    // in ten days, one expired unreviewed; the emergency department looks one up.
    let assaults = publish_many(&b, 1, 12, "physical-assault");
    let verbal = publish_many(&b, 40, 1, "directed-verbal-abuse");
    b.exec(&format!("UPDATE notices SET review_date = '{}' WHERE id = '{}'", day(10), assaults[0]));
    b.exec(&format!("UPDATE notices SET review_date = '{}' WHERE id = '{}'", day(-1), assaults[1]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while json_of(b.get(&b.token("amb-cad"), &format!("/v1/notices/{}", assaults[1])))["status"] != "expired" {
        assert!(Instant::now() < deadline, "the notice did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    let lookup = serde_json::json!({"purpose": "direct-care", "requester": {"user_id": "ed-1", "role": "ed-clinician"},
        "subject": {"person": {"nhs_number": nhs(3)}}});
    assert_eq!(b.post_json(&b.token("acute-ed"), "/v1/lookups", &lookup).status(), 200);
    let vpr = sign_in(&b, &op, VPR_LEAD.0);
    let r = page(&b, &vpr, "/console/notices");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    let due = text.split("id=\"expired-heading\"").next().unwrap();
    assert!(due.contains(&assaults[0]), "due in ten days");
    assert!(!due.contains(&assaults[2]) && !due.contains(&verbal[0]), "not due for months");
    assert!(text.split("id=\"expired-heading\"").nth(1).unwrap().contains(&assaults[1]), "expired");
    assert!(entries(&b, "notices-due")
        .iter()
        .any(|e| e["user"] == VPR_LEAD.1 && e["organisation"]["ods_code"] == "XAM01"));
    // Who saw the looked-up notice: the ED clinician, for direct care.
    let r = page(&b, &vpr, &format!("/console/notices/{}/access-log", assaults[2]));
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("ed-clinician") && text.contains("direct-care"), "{text}");
    assert!(entries(&b, "access-log").iter().any(|e| e["user"] == VPR_LEAD.1 && e["system"] == "vpr-console"));
    // Another organisation's notice's access log is not theirs to see.
    let theirs = json_of(b.publish(&b.token("acute-ed"), &person_notice(&nhs(60))));
    let r = page(&b, &vpr, &format!("/console/notices/{}/access-log", theirs["id"].as_str().unwrap()));
    assert_eq!(r.status(), 403);
    // The figures: the ambulance trust's 13 notices (shown rounded, 15), 13 assaults (12 and the
    // ED's one: 15); the ED's one notice, one verbal abuse and one disclosure (each 1 to 7: "<8").
    // The figures count what was shown as it is sealed (within about a second), and publish
    // months that have ended: this month's work is moved into last month.
    let month = b.move_to_last_month();
    let r = page(&b, &vpr, "/console/figures");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("id=\"notices-by-partner\"") && text.contains("&lt;8") && text.contains("<svg"), "{text}");
    assert!(text.contains("HES and ECDS"), "the rule is named");
    assert!(entries(&b, "statistics").iter().any(|e| e["user"] == VPR_LEAD.1 && e["role"] == "vpr-lead"));
    let stats = json_of(statistics(&b, "amb-cad", "vpr-lead", ""));
    assert_eq!(stats["months"].as_array().unwrap().len(), 12);
    assert_eq!(figure(&stats, "notices", "partner", "XAM01"), 15);
    assert_eq!(figure(&stats, "notices", "partner", "XAC01"), "<8");
    assert_eq!(figure(&stats, "notices", "category", "physical-assault"), 15);
    assert_eq!(figure(&stats, "notices", "category", "directed-verbal-abuse"), "<8");
    assert_eq!(figure(&stats, "disclosures", "partner", "XAC01"), "<8");
    assert_eq!(figure(&stats, "disclosures", "purpose", "direct-care"), "<8");
    assert!(!stats.to_string().contains("\"counts\":[0,0,0,0,0,0,0,0,0,0,0,13"), "no raw count leaves the broker");
    let csv = statistics(&b, "amb-cad", "vpr-lead", "?format=csv");
    assert!(content_type(&csv).starts_with("text/csv"));
    let csv = csv.text().unwrap();
    assert!(csv.starts_with("measure,by,key,label,month,count"));
    assert!(
        csv.lines().any(|l| l.starts_with("notices,category,directed-verbal-abuse,") && l.ends_with(",<8")),
        "{csv}"
    );
    // Not for a role that is neither a VPR lead nor IG (audited), and bad months are named.
    let r = statistics(&b, "acute-ed", "ed-clinician", "");
    assert_eq!(r.status(), 403);
    assert!(entries(&b, "statistics").iter().any(|e| e["decision"] == "refused" && e["role"] == "ed-clinician"));
    let r = statistics(&b, "amb-cad", "vpr-lead", "?from=2026-13");
    assert_eq!(r.status(), 422);
    assert_eq!(json_of(r)["errors"][0]["pointer"], "/from");
    let r = statistics(&b, "amb-cad", "vpr-lead", "?from=2020-01&to=2026-01");
    assert_eq!(json_of(r)["errors"][0]["rule"], "month-range");
    // This month is still being counted: not published, so no figure shown ever changes.
    let this_month = chrono::Utc::now().format("%Y-%m").to_string();
    let r = statistics(&b, "amb-cad", "vpr-lead", &format!("?from={month}&to={this_month}"));
    assert_eq!(r.status(), 422);
    let problem = json_of(r);
    assert_eq!(
        (problem["errors"][0]["pointer"].as_str(), problem["errors"][0]["rule"].as_str()),
        (Some("/to"), Some("month-complete"))
    );
    let r = page(&b, &vpr, &format!("/console/figures?from={this_month}"));
    assert_eq!(r.status(), 422);
    assert!(r.text().unwrap().contains("a month that has ended"));
    // A notice amended into another category stays where it was counted: a month once
    // published never changes.
    let before = json_of(statistics(&b, "amb-cad", "vpr-lead", ""));
    let mut amended = person_notice(&nhs(40));
    amended["category"] = serde_json::json!("physical-assault");
    let r = b
        .http
        .put(b.url(&format!("/v1/notices/{}", verbal[0])))
        .bearer_auth(b.token("amb-cad"))
        .header("If-Match", "\"1\"")
        .json(&amended)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let after = json_of(statistics(&b, "amb-cad", "vpr-lead", ""));
    assert_eq!(before["tables"], after["tables"]);
    assert_eq!(figure(&after, "notices", "category", "directed-verbal-abuse"), "<8");
    // The IG pages stay closed to a VPR lead.
    for p in ["/console/consents", "/console/integrity", "/console/consents/new"] {
        assert_eq!(page(&b, &vpr, p).status(), 403, "{p}");
    }
});

both_backends!(a_trusts_caldicott_guardian_reviews_only_its_own_part_of_the_log, |backend| {
    let Some((b, op)) = console_broker(backend) else { return };
    // The ambulance trust's notice, looked up by the police and by the hospital; the
    // hospital's notice, looked up by the ambulance trust.
    let (amb, ed, police) = (b.token("amb-cad"), b.token("acute-ed"), b.token("police"));
    assert_eq!(b.publish(&amb, &person_notice(&nhs(70))).status(), 201);
    assert_eq!(b.publish(&ed, &person_notice(&nhs(71))).status(), 201);
    let look = |token: &str, n: u32, purpose: &str, user: &str, role: &str| {
        let body = serde_json::json!({"purpose": purpose, "requester": {"user_id": user, "role": role},
            "subject": {"person": {"nhs_number": nhs(n)}}});
        assert_eq!(b.post_json(token, "/v1/lookups", &body).status(), 200);
    };
    look(&police, 70, "crime-prevention", "pc-1", "police-officer");
    look(&ed, 70, "direct-care", "ed-1", "ed-clinician");
    look(&amb, 71, "staff-safety", "disp-1", "ambulance-dispatcher");
    let lookups: Vec<Value> = entries(&b, "lookup");
    let police_entry = lookups.iter().find(|e| e["organisation"]["ods_code"] == "XPF01").unwrap();
    let police_id = police_entry["audit_id"].as_str().unwrap().to_owned();
    // The hospital's Caldicott guardian: its own staff's look-up, and the ambulance trust's
    // look-up of its notice; not the police's look-up of the ambulance trust's notice.
    let cg = sign_in(&b, &op, "caldicott");
    let r = page(&b, &cg, "/console/audit?reference=CG-1&action=lookup");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("2 entries"), "{text}");
    assert!(text.contains("ed-clinician") && text.contains("ambulance-dispatcher") && !text.contains("police-officer"));
    let r = page(&b, &cg, &format!("/console/audit/entries/{police_id}"));
    assert_eq!(r.status(), 404, "another organisation's entry is not there for it");
    assert!(
        entries(&b, "audit-entry").iter().any(|e| e["decision"] == "refused" && e["role"] == "caldicott-guardian"),
        "and the refusal is audited"
    );
    // Its subject access report on the ambulance trust's patient: what its own clinician was
    // shown of the ambulance trust's notice (its own processing), not the police's look-up.
    let csrf = csrf_of(&page(&b, &cg, "/console/subject-access").text().unwrap());
    let r = b
        .http
        .post(b.url("/console/subject-access"))
        .header("cookie", format!("{SESSION}={cg}"))
        .form(&[("csrf", csrf.as_str()), ("reference", "CG-SAR"), ("nhs_number", &nhs(70)), ("show", "json")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().unwrap();
    let shown: Vec<&Value> = report["disclosures"].as_array().unwrap().iter().collect();
    assert_eq!(shown.len(), 1, "{report}");
    assert_eq!((shown[0]["role"].as_str(), shown[0]["purpose"].as_str()), (Some("ed-clinician"), Some("direct-care")));
    assert!(report["notices"].as_array().unwrap().is_empty(), "the notice itself is the ambulance trust's to report");
    // Both trusts hold a notice about one person, and the police look them up: the hospital
    // sees the decision on its own notice, not that the ambulance trust holds one too.
    let theirs = json_of(b.publish(&amb, &person_notice(&nhs(72))))["id"].as_str().unwrap().to_owned();
    let ours = json_of(b.publish(&ed, &person_notice(&nhs(72))))["id"].as_str().unwrap().to_owned();
    look(&police, 72, "crime-prevention", "pc-2", "police-officer");
    let text = page(&b, &cg, "/console/audit?reference=CG-2&user=pc-2").text().unwrap();
    assert!(text.contains("1 entry") && text.contains(&ours) && !text.contains(&theirs), "{text}");
    // The ICB's IG lead reviews the whole ICS.
    let ig = sign_in(&b, &op, IG_LEAD.0);
    let text = page(&b, &ig, "/console/audit?reference=IG-1&action=lookup").text().unwrap();
    assert!(text.contains("4 entries") && text.contains("police-officer") && text.contains(&theirs), "{text}");
    assert_eq!(page(&b, &ig, &format!("/console/audit/entries/{police_id}")).status(), 200);
});
