//! The demo OpenID Provider (examples/demo-oidc, npm `oidc-provider`) as a real process, and a
//! sign-in at it driven over HTTP as a browser would: the broker's redirect, the provider's own
//! login form, its redirect back, the broker's callback.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client, Response};

/// The console's session cookie. `__Host-` and `Secure`: over plain http a cookie jar would not
/// send it back, so it is passed by hand.
pub(super) const SESSION: &str = "__Host-vpr-console";
/// The cookie binding a sign-in to the browser that started it.
const SIGN_IN: &str = "__Host-vpr-console-sign-in";
/// Every demo user's password (examples/demo-oidc/users.json).
const PASSWORD: &str = "demo-password";

/// The demo OpenID Provider, running.
pub(super) struct Provider {
    child: Child,
    pub(super) issuer: String,
}

impl Provider {
    /// Starts `script` on `port` for a console at `console_base`, and waits until it listens.
    pub(super) fn start(script: &Path, port: u16, console_base: &str) -> Result<Self> {
        let modules = script.parent().context("the provider's folder")?.join("node_modules/oidc-provider");
        if !modules.exists() {
            bail!("the demo OpenID Provider is not installed: run `npm ci` in {}", modules.display());
        }
        let issuer = format!("http://127.0.0.1:{port}");
        let mut child = Command::new("node")
            .arg(script)
            .env("PORT", port.to_string())
            .env("ISSUER", &issuer)
            .env("CONSOLE_BASE", console_base)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `node` (Node.js 20 or later is needed)")?;
        let stdout = child.stdout.take().context("the provider's output")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Read to the end, so the provider never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        let provider = Self { child, issuer };
        rx.recv_timeout(Duration::from_secs(30)).context("the OpenID Provider did not start in 30 s")?;
        Ok(provider)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn absolute(base: &str, url: &str) -> String {
    if url.starts_with("http") {
        url.to_owned()
    } else {
        format!("{base}{url}")
    }
}

/// Signs `username` in at the console of the broker at `base` (`http` follows no redirects);
/// returns the session cookie's value.
pub(super) fn sign_in(http: &Client, base: &str, op: &Provider, username: &str) -> Result<String> {
    let r = http.get(format!("{base}/console/sign-in")).send()?;
    if r.status() != 303 {
        bail!("/console/sign-in answered {}, not a redirect to the provider", r.status());
    }
    let bound = set_cookie(&r, SIGN_IN).context("no sign-in cookie")?;
    let callback = at_provider(&op.issuer, base, &location(&r), username)?;
    let r = http.get(&callback).header("cookie", format!("{SIGN_IN}={bound}")).send()?;
    if r.status() != 303 {
        bail!("the console's callback answered {}: {}", r.status(), super::start_of(&r.text().unwrap_or_default()));
    }
    set_cookie(&r, SESSION).context("the callback set no session cookie")
}

/// Follows the provider's pages from `next` (in a fresh browser, with its own cookie jar) and
/// fills its login form; returns the URL it sends the browser back to at `base`.
fn at_provider(issuer: &str, base: &str, next: &str, username: &str) -> Result<String> {
    if !next.starts_with(issuer) {
        bail!("sign-in did not redirect to the provider: `{next}`");
    }
    let browser = Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build()?;
    let mut next = next.to_owned();
    for _ in 0..10 {
        let r = browser.get(&next).send()?;
        if r.status().is_redirection() {
            next = absolute(issuer, &location(&r));
            if next.starts_with(base) {
                return Ok(next);
            }
            continue;
        }
        let page = r.text()?;
        let action = page.split("action=\"").nth(1).and_then(|s| s.split('"').next()).context("no login form")?;
        let r =
            browser.post(absolute(issuer, action)).form(&[("username", username), ("password", PASSWORD)]).send()?;
        if !r.status().is_redirection() {
            bail!("the provider refused the login of `{username}`: {}", r.status());
        }
        next = absolute(issuer, &location(&r));
        if next.starts_with(base) {
            return Ok(next);
        }
    }
    bail!("the provider never sent the browser back")
}
