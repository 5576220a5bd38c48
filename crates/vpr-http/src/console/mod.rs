//! The IG and VPR console at `/console`: server-rendered pages in the NHS.UK design system for
//! the people who govern the sharing, signed in with OpenID Connect. Each page calls the same
//! services as the API, with the person as the caller; every page that shows notice or audit
//! data is decided and audited before it renders.

mod approvals;
mod assets;
mod break_glass;
mod consents;
mod figures;
mod integrity;
mod notices;
mod oidc;
mod pages;
mod session;
mod subject_access;
mod view;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use vpr_app::{App, AppError, Caller, Reviewer};
use vpr_domain::audit::AuditAction;

use oidc::Provider;
pub use oidc::{ClientAuth, ConsoleSettings};
use session::{NoSession, PendingSignIn, Session, Sessions, SESSION_COOKIE, SIGN_IN_COOKIE, SIGN_IN_LIFETIME};
use view::{html, Chrome, Link, MessagePage, Who};

/// The console's state: its identity provider and sessions (absent when not configured).
#[derive(Debug)]
pub struct Console {
    enabled: Option<Enabled>,
    demo: bool,
}

#[derive(Debug)]
struct Enabled {
    provider: Provider,
    sessions: Sessions,
}

impl Console {
    /// A console signing people in at the identity provider of `settings`; `None` serves a page
    /// saying the console is not configured.
    pub fn new(settings: Option<ConsoleSettings>, demo: bool) -> Result<Self, String> {
        let enabled = match settings {
            Some(s) => {
                let sessions = Sessions::new(s.idle_timeout, s.absolute_lifetime);
                Some(Enabled { provider: Provider::new(s)?, sessions })
            }
            None => None,
        };
        Ok(Self { enabled, demo })
    }

    /// Sessions live now (for `/metrics`).
    pub fn live_sessions(&self) -> usize {
        self.enabled.as_ref().map_or(0, |e| e.sessions.count())
    }
}

/// The console's routes (HTML, so not in the OpenAPI document).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .route("", web::get().to(pages::home))
            .route("/", web::get().to(pages::home))
            .route("/sign-in", web::get().to(sign_in))
            .route("/callback", web::get().to(callback))
            .route("/sign-out", web::post().to(sign_out))
            .route("/signed-out", web::get().to(signed_out))
            .route("/audit", web::get().to(pages::audit))
            .route("/audit/export", web::get().to(pages::audit_export))
            .route("/audit/entries/{id}", web::get().to(integrity::entry))
            .route("/integrity", web::get().to(integrity::integrity))
            .route("/subject-access", web::get().to(subject_access::form))
            .route("/subject-access", web::post().to(subject_access::make))
            .route("/subscriptions", web::get().to(approvals::list))
            .route("/subscriptions/{id}", web::post().to(approvals::decide))
            .route("/figures", web::get().to(figures::figures))
            .route("/notices", web::get().to(notices::list))
            .route("/notices/{id}/access-log", web::get().to(notices::access_log))
            .route("/consents", web::get().to(consents::list))
            .route("/consents/new", web::get().to(consents::form))
            .route("/consents/new", web::post().to(consents::record))
            .route("/consents/find", web::get().to(consents::form))
            .route("/consents/find", web::post().to(consents::find))
            .route("/break-glass", web::get().to(break_glass::queue))
            .route("/break-glass/{id}", web::post().to(break_glass::record))
            .route("/assets/{name}", web::get().to(assets::asset))
            .default_service(web::to(not_found)),
    );
}

/// What a console handler has: the application, the console and the request.
pub(crate) struct Ctx<'a> {
    app: &'a App,
    console: &'a Console,
    req: &'a HttpRequest,
}

impl<'a> Ctx<'a> {
    fn chrome(&self, who: Option<Who>) -> Chrome {
        Chrome { ics: self.app.tokens.registry().ics.name.clone(), demo: self.console.demo, who }
    }

    fn form_origin(&self) -> String {
        self.console.enabled.as_ref().map(|e| e.provider.issuer_origin()).unwrap_or_default()
    }

    /// A message page.
    fn message(
        &self,
        status: StatusCode,
        who: Option<Who>,
        heading: &str,
        lines: Vec<String>,
        link: Option<Link>,
    ) -> HttpResponse {
        let page = MessagePage { chrome: self.chrome(who), heading: heading.to_owned(), lines, link };
        html(status, &page, &self.form_origin())
    }

    /// The frame's view of a session's person, on page `here`.
    fn who(&self, s: &Session, here: &str) -> Who {
        let org_name = self
            .app
            .tokens
            .registry()
            .partner(&s.person.org)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| s.person.org.clone());
        Who {
            name: s.person.name.clone(),
            role: s.person.role.clone(),
            org_name,
            csrf: s.csrf.clone(),
            menu: view::menu(s, here),
        }
    }

    /// A service's refusal or failure as a page: never a stack trace, never internal text.
    fn failure(&self, s: &Session, here: &str, e: &AppError) -> HttpResponse {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (heading, line) = match status.as_u16() {
            403 => ("You do not have access to this page", e.to_string()),
            404 => ("Page not found", e.to_string()),
            422 | 400 => ("There is a problem with what you entered", e.to_string()),
            _ => (
                "Sorry, there is a problem with the service",
                "Try again later. The problem has been logged.".to_owned(),
            ),
        };
        let lines = vec![line, format!("Reference: {}", crate::extract::request_id(self.req))];
        self.message(
            status,
            Some(self.who(s, here)),
            heading,
            lines,
            Some(Link::to("/console", "Go to the console home page")),
        )
    }
}

fn ctx<'a>(app: &'a web::Data<App>, console: &'a web::Data<Console>, req: &'a HttpRequest) -> Ctx<'a> {
    Ctx { app: app.get_ref(), console: console.get_ref(), req }
}

/// Sets a console cookie on `r`: HttpOnly, Secure, SameSite=Lax (the identity provider's
/// redirect back is a top-level navigation), for the whole host (`__Host-`); `None` as the value
/// removes it.
fn set_cookie(r: &mut HttpResponse, name: &'static str, value: Option<&str>, max_age: Option<std::time::Duration>) {
    let mut c = Cookie::build(name, value.unwrap_or_default().to_owned())
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .finish();
    match (value, max_age) {
        (None, _) => c.make_removal(),
        (Some(_), Some(age)) => {
            c.set_max_age(CookieDuration::seconds(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)))
        }
        (Some(_), None) => {}
    }
    if let Err(e) = r.add_cookie(&c) {
        tracing::error!(error = %e, cookie = name, "a console cookie could not be set");
    }
}

fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.cookie(name).map(|c| c.value().to_owned()).filter(|v| !v.is_empty())
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_owned()))
        .insert_header(("cache-control", "no-store"))
        .insert_header(("referrer-policy", "no-referrer"))
        .finish()
}

/// The session a page needs, or the response to send instead: the console not configured, or
/// a redirect to sign in (coming back to `here`).
pub(crate) fn signed_in(c: &Ctx<'_>, here: &str) -> Result<(Session, Caller, Reviewer), Box<HttpResponse>> {
    let Some(enabled) = &c.console.enabled else { return Err(Box::new(not_configured(c))) };
    let cookie = cookie_value(c.req, SESSION_COOKIE);
    let session = match cookie.as_deref().map(|v| enabled.sessions.touch(v)) {
        Some(Ok(s)) => s,
        Some(Err(NoSession::Idle | NoSession::Expired)) | None | Some(Err(NoSession::Missing)) => {
            let back = form_urlencoded(here);
            return Err(Box::new(redirect(&format!("/console/sign-in?return_to={back}"))));
        }
    };
    match c.app.person_caller(&session.person, &session.reference, &crate::extract::request_id(c.req)) {
        Ok((caller, reviewer)) => Ok((session, caller, reviewer)),
        Err(e) => {
            // The registry or agreement changed since sign-in: the session ends.
            if let Some(v) = cookie {
                enabled.sessions.end(&v);
            }
            Err(Box::new(c.message(
                StatusCode::FORBIDDEN,
                None,
                "You do not have access to the console",
                vec![e.to_string()],
                None,
            )))
        }
    }
}

/// The session a page that reads and audits data on opening needs, or the response to send
/// instead: [`signed_in`], then [`from_elsewhere`].
pub(crate) fn reading(c: &Ctx<'_>, here: &str) -> Result<(Session, Caller, Reviewer), Box<HttpResponse>> {
    let (s, caller, who) = signed_in(c, here)?;
    match from_elsewhere(c, &s, here) {
        Some(ask) => Err(Box::new(ask)),
        None => Ok((s, caller, who)),
    }
}

/// A posted form: the session, its caller and person, and the form's fields but the token.
pub(crate) type Posted = (Session, Caller, Reviewer, Vec<(String, String)>);

/// A form posted to `here`: the session (else sign-in), the CSRF token checked (else a refusal,
/// nothing changed), and the form's other fields.
pub(crate) fn posted(c: &Ctx<'_>, here: &str, form: Vec<(String, String)>) -> Result<Posted, Box<HttpResponse>> {
    let (s, caller, who) = signed_in(c, here)?;
    let csrf = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    if !csrf_ok(c, &s, csrf) {
        return Err(Box::new(csrf_refused(c, Some(c.who(&s, here)))));
    }
    let given = form.into_iter().filter(|(k, _)| k != "csrf").collect();
    Ok((s, caller, who, given))
}

/// For a page whose opening reads and audits data: when another site sent the browser here
/// (`Sec-Fetch-Site: cross-site`), a page asking the person to go on, so that no other site can
/// make someone's browser run an audited read in their name.
pub(crate) fn from_elsewhere(c: &Ctx<'_>, s: &Session, here: &str) -> Option<HttpResponse> {
    let site = c.req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok())?;
    if site != "cross-site" {
        return None;
    }
    let target = match c.req.query_string() {
        "" => c.req.path().to_owned(),
        q => format!("{}?{q}", c.req.path()),
    };
    Some(c.message(
        StatusCode::OK,
        Some(c.who(s, here)),
        "Continue to the console",
        vec!["You followed a link from another site. Opening this page is recorded in the audit log under your name, so the console asks you first.".into()],
        Some(Link::to(&target, "Continue")),
    ))
}

fn form_urlencoded(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|t| t.trim_start_matches('=').to_owned()).unwrap_or_default()
}

fn not_configured(c: &Ctx<'_>) -> HttpResponse {
    c.message(
        StatusCode::NOT_FOUND,
        None,
        "The console is not set up on this broker",
        vec!["Its operator has not configured an identity provider (`[console]` in the broker's configuration).".into()],
        None,
    )
}

async fn not_found(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    c.message(
        StatusCode::NOT_FOUND,
        None,
        "Page not found",
        vec![],
        Some(Link::to("/console", "Go to the console home page")),
    )
}

/// Only console pages are returned to after sign-in (never another site).
fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(t) if (t == "/console" || t.starts_with("/console/")) && !t.contains("//") && !t.contains('\\') => {
            t.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

#[derive(serde::Deserialize)]
struct SignInQuery {
    return_to: Option<String>,
}

/// `GET /console/sign-in`: to the identity provider, with PKCE, `state` and `nonce` kept here
/// and the browser bound to this sign-in by a cookie.
async fn sign_in(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let Some(enabled) = &console.enabled else { return not_configured(&c) };
    let q = web::Query::<SignInQuery>::from_query(req.query_string()).ok();
    let return_to = safe_return(q.as_ref().and_then(|q| q.return_to.as_deref()));
    match enabled.provider.authorize().await {
        Ok(a) => {
            enabled.sessions.begin(&a.state, PendingSignIn::new(a.verifier, a.nonce, return_to));
            let mut r = redirect(&a.url);
            set_cookie(&mut r, SIGN_IN_COOKIE, Some(&a.state), Some(SIGN_IN_LIFETIME));
            r
        }
        Err(e) => {
            tracing::warn!(error = %e.0, "console sign-in: the identity provider is unavailable");
            c.message(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Sign-in is not available at the moment",
                vec!["The identity provider cannot be reached. Try again in a few minutes.".into()],
                Some(Link::to("/console/sign-in", "Try again")),
            )
        }
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/callback`: the identity provider's answer. The `state` must be the one this
/// browser started (cookie) and still pending (once); the code is exchanged with the PKCE
/// verifier; the ID token verified; the person checked against the registry and agreement.
async fn callback(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let Some(enabled) = &console.enabled else { return not_configured(&c) };
    let refuse = |why: &str| {
        let mut r = c.message(
            StatusCode::BAD_REQUEST,
            None,
            "You could not be signed in",
            vec![why.to_owned(), format!("Reference: {}", crate::extract::request_id(&req))],
            Some(Link::to("/console/sign-in", "Sign in again")),
        );
        set_cookie(&mut r, SIGN_IN_COOKIE, None, None);
        r
    };
    let Ok(q) = web::Query::<CallbackQuery>::from_query(req.query_string()) else {
        return refuse("The identity provider's answer could not be read.");
    };
    let bound = cookie_value(&req, SIGN_IN_COOKIE);
    let state = q.state.clone().unwrap_or_default();
    let pending = match bound {
        Some(b) if !state.is_empty() && session::same_token(&b, &state) => enabled.sessions.take_pending(&state),
        _ => None,
    };
    let Some(pending) = pending else {
        tracing::warn!("console sign-in refused: the state is not one this browser started, or was used");
        return refuse("This sign-in was not started here, has expired or was already used.");
    };
    if let Some(err) = &q.error {
        let detail = q.error_description.clone().unwrap_or_default();
        tracing::info!(error = %err, %detail, "console sign-in: the identity provider answered an error");
        return refuse("The identity provider did not sign you in.");
    }
    let Some(code) = q.code.clone() else { return refuse("The identity provider sent no code.") };
    finish_sign_in(&c, enabled, &code, pending).await.unwrap_or_else(|why| refuse(&why))
}

async fn finish_sign_in(
    c: &Ctx<'_>,
    enabled: &Enabled,
    code: &str,
    pending: PendingSignIn,
) -> Result<HttpResponse, String> {
    let settings = enabled.provider.settings();
    let client_id = settings.client_id.clone();
    let keys = c.app.tokens.keys();
    let now = c.app.clock.now();
    let assertion = |endpoint: &str| keys.client_assertion(&client_id, endpoint, now).map_err(|e| e.to_string());
    let signed = match enabled.provider.finish(code, &pending.verifier, &pending.nonce, assertion).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e.0, "console sign-in refused");
            return Err("The identity provider's answer could not be verified.".into());
        }
    };
    let request_id = crate::extract::request_id(c.req);
    if let Err(e) = c.app.person_caller(&signed.person, "", &request_id) {
        let why = e.to_string();
        let audit = c
            .app
            .record_console_session(
                signed.person,
                AuditAction::ConsoleSignIn,
                Some(why.clone()),
                String::new(),
                request_id,
            )
            .await;
        if audit.is_err() {
            return Err("The sign-in could not be recorded, so it was refused.".into());
        }
        return Err(format!("You may not use the console: {why}."));
    }
    let (cookie_v, session) = enabled.sessions.start(signed.person.clone(), signed.id_token);
    let recorded = c
        .app
        .record_console_session(signed.person, AuditAction::ConsoleSignIn, None, session.reference.clone(), request_id)
        .await;
    if recorded.is_err() {
        enabled.sessions.end(&cookie_v);
        return Err("The sign-in could not be recorded, so it was refused.".into());
    }
    let mut r = redirect(&pending.return_to);
    set_cookie(&mut r, SESSION_COOKIE, Some(&cookie_v), None);
    set_cookie(&mut r, SIGN_IN_COOKIE, None, None);
    Ok(r)
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

/// Whether a form came with the session's CSRF token (and, when the browser says where it
/// came from, from this broker's own pages).
fn csrf_ok(c: &Ctx<'_>, s: &Session, given: Option<&str>) -> bool {
    let public = c.console.enabled.as_ref().map(|e| e.provider.settings().public_url.clone()).unwrap_or_default();
    let origin_ok = match c.req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(o) => public.starts_with(o) && (public.len() == o.len() || public.as_bytes().get(o.len()) == Some(&b'/')),
        None => true,
    };
    origin_ok && given.is_some_and(|g| session::same_token(g, &s.csrf))
}

/// A form posted to `here` about one record: the session (else sign-in), the CSRF token
/// checked (else a refusal, nothing changed), and the record's id (else `missing`'s page).
pub(crate) fn form_for(
    c: &Ctx<'_>,
    here: &str,
    csrf: Option<&str>,
    id: &str,
    missing: AppError,
) -> Result<(Session, Caller, Reviewer, uuid::Uuid), Box<HttpResponse>> {
    let (s, caller, who) = signed_in(c, here)?;
    if !csrf_ok(c, &s, csrf) {
        return Err(Box::new(csrf_refused(c, Some(c.who(&s, here)))));
    }
    match uuid::Uuid::parse_str(id) {
        Ok(id) => Ok((s, caller, who, id)),
        Err(_) => Err(Box::new(c.failure(&s, here, &missing))),
    }
}

/// The page for a form refused for its CSRF token: nothing was changed.
fn csrf_refused(c: &Ctx<'_>, who: Option<Who>) -> HttpResponse {
    c.message(
        StatusCode::FORBIDDEN,
        who,
        "This form has expired",
        vec!["Nothing was changed. Go back, reload the page and try again.".into()],
        Some(Link::to("/console", "Go to the console home page")),
    )
}

/// `POST /console/sign-out`: ends the session here (audited), then at the identity provider.
async fn sign_out(
    app: web::Data<App>,
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    let Some(enabled) = &console.enabled else { return not_configured(&c) };
    let Some(cookie_v) = cookie_value(&req, SESSION_COOKIE) else { return redirect("/console/signed-out") };
    let Ok(s) = enabled.sessions.touch(&cookie_v) else { return redirect("/console/signed-out") };
    if !csrf_ok(&c, &s, form.csrf.as_deref()) {
        return csrf_refused(&c, Some(c.who(&s, "")));
    }
    enabled.sessions.end(&cookie_v);
    let request_id = crate::extract::request_id(&req);
    if let Err(e) = app
        .record_console_session(s.person.clone(), AuditAction::ConsoleSignOut, None, s.reference.clone(), request_id)
        .await
    {
        // The session has ended whatever the audit says: signing out must always work.
        tracing::error!(error = %e, "the console sign-out could not be audited");
    }
    let to = enabled.provider.sign_out_url(&s.id_token, &session::random_token()).await;
    let mut r = redirect(to.as_deref().unwrap_or("/console/signed-out"));
    set_cookie(&mut r, SESSION_COOKIE, None, None);
    r
}

/// `GET /console/signed-out`.
async fn signed_out(app: web::Data<App>, console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let c = ctx(&app, &console, &req);
    c.message(
        StatusCode::OK,
        None,
        "You have signed out",
        vec!["Your console session has ended.".into()],
        Some(Link::to("/console/sign-in", "Sign in again")),
    )
}
