//! The console: the DPO's and the auditor's pages in the browser, served by
//! the gateway under `/console/` on the API's listener. Server-rendered HTML
//! (maud, checked and escaped at compile time), its stylesheet compiled into
//! the binary; no script runs on a page.
//!
//! Every page calls the same use cases as the API, with the signed-in
//! person as the caller, authorised as the API authorises (`Dpos`,
//! `Overseers`): the console shows nothing the API would not give that
//! person, and whatever it reads is audited alike.
//!
//! What protects the person using it:
//! - the session cookie is `__Host-`, `Secure`, `HttpOnly`, `SameSite=Strict`;
//! - every form carries the session's CSRF token, and a request another
//!   site started (`Sec-Fetch-Site`, `Origin`) changes nothing;
//! - the Content-Security-Policy allows no script at all and no inline
//!   style, no framing, and forms only to the console itself;
//! - pages are `no-store`, and no personal data goes into a URL or a title:
//!   what would be personal (a subject reference) is sent in a form body.

mod deliveries;
mod entry;
mod layout;
mod pages;
mod people;
mod policies;
mod simulate;
mod statistics;
pub mod sessions;
pub mod sign_in;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::problem::Problem;
use super::AppState;
use crate::app::AppError;
use crate::config::GatewayConfig;
use sessions::{cookie, csrf_matches, Session, SessionLimits, Sessions, SESSION_COOKIE};
use sign_in::{ProviderSignIn, SignInSecrets};

/// The console's own state, beside the API's.
#[derive(Debug)]
pub struct Console {
    sessions: Sessions<SignInSecrets>,
    /// Sign-in with the identity provider, when `[console.oidc]` is set.
    provider: Option<ProviderSignIn>,
    /// `https://host[:port]`: a form must come from there.
    public_origin: String,
}

impl Console {
    /// The console `config` asks for, if any; `listening` is the API's address.
    pub fn from_config(config: &GatewayConfig, listening: std::net::SocketAddr) -> Result<Option<Self>, String> {
        let Some(console) = &config.console else {
            return Ok(None);
        };
        let public_origin = console.public_origin(listening);
        let provider = match (&console.oidc, &config.auth.oidc) {
            (Some(client), Some(oidc)) => Some(ProviderSignIn::new(oidc, client, &public_origin)?),
            _ => None,
        };
        let hours = i64::try_from(console.session_hours).unwrap_or(8);
        let minutes = i64::try_from(console.idle_minutes).unwrap_or(30);
        let limits = SessionLimits { idle: chrono::Duration::minutes(minutes), longest: chrono::Duration::hours(hours) };
        Ok(Some(Self { sessions: Sessions::new(limits), provider, public_origin }))
    }
}

/// The console's routes, to be merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::home))
        .route("/console/assets/console.css", get(layout::stylesheet))
        .route("/console/sign-in", get(entry::sign_in_page))
        .route("/console/sign-in/provider", get(entry::start_provider_sign_in))
        .route("/console/sign-in/certificate", post(entry::certificate_sign_in))
        .route(sign_in::CALLBACK_PATH, get(entry::provider_callback))
        .route("/console/sign-out", post(entry::sign_out))
        .route("/console/audit", get(pages::audit))
        .route("/console/audit/chain", get(pages::audit_chain))
        .route("/console/simulate", get(simulate::form).post(simulate::decide))
        .route("/console/people", get(people::form).post(people::look_up))
        .route("/console/statistics", get(statistics::tables))
        .route("/console/deliveries", get(deliveries::overview))
        .route("/console/policies", get(policies::list).post(policies::upload))
        .route("/console/policies/new", get(policies::new_draft))
        .route("/console/policies/{number}", get(policies::version))
        .route("/console/policies/{number}/review", post(policies::review))
        .route("/console/{*rest}", get(pages::not_found).post(pages::not_found))
        .layer(axum::middleware::from_fn(security_headers))
}

/// What no page of the console goes without.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    // The console is served over TLS only (its configuration requires it).
    set(headers, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    // Nothing a page shows stays in the browser's cache or history files.
    set(headers, header::CACHE_CONTROL, "no-store");
    // The identity provider, or a link followed, learns no console URL.
    // (`same-origin`, not `no-referrer`: under that, the browser's forms
    // send `Origin: null`, and the console's own could not be told apart.)
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    response
}

/// A console page's error: shown as a page, never as problem+json.
#[derive(Debug)]
pub enum PageError {
    /// No session (or an ended one): to the sign-in page.
    SignIn,
    /// A form without this session's CSRF token, or sent from another site.
    Forged,
    /// The console is not configured.
    NoConsole,
    /// As many sessions as the gateway keeps are open.
    Busy,
    /// What the use case refused, as the API would have.
    App(Problem),
}

impl From<AppError> for PageError {
    fn from(error: AppError) -> Self {
        PageError::App(Problem::from(error))
    }
}

impl From<Problem> for PageError {
    fn from(problem: Problem) -> Self {
        PageError::App(problem)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/console/sign-in").into_response(),
            PageError::Forged => layout::error_page(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form did not come from a page of this console, or your session changed since it was shown. Nothing was changed. Go back, reload the page and try again.",
            ),
            PageError::NoConsole => layout::error_page(StatusCode::NOT_FOUND, "Not found", "This gateway has no console."),
            PageError::Busy => layout::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in not possible now",
                "As many people are signed in as this gateway allows. Try again in a few minutes.",
            ),
            // A server-side failure is said in the console's words: the API's
            // detail speaks to programs (retries, idempotency keys).
            PageError::App(problem) if problem.status().is_server_error() => layout::error_page(
                problem.status(),
                "Not possible just now",
                "The gateway could not complete this just now. Nothing was changed; try again in a few minutes, and tell the gateway's operator if it goes on.",
            ),
            PageError::App(problem) => layout::error_page(problem.status(), problem.title(), problem.detail()),
        }
    }
}

type PageResult = Result<Response, PageError>;

fn console_of(state: &AppState) -> Result<&Arc<Console>, PageError> {
    state.console.as_ref().ok_or(PageError::NoConsole)
}

/// The signed-in person of a request, or a redirect to the sign-in page.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let console = console_of(state)?;
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or(PageError::SignIn)?;
        console.sessions.touch(token, state.gateway.now()).map(SignedIn).ok_or(PageError::SignIn)
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        match <SignedIn as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(signed_in) => Ok(Some(signed_in)),
            Err(PageError::SignIn) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// What a form of the console carries back: the session's CSRF token.
pub trait CarriesCsrf {
    fn csrf(&self) -> &str;
}

/// A form posted by the signed-in person from a page of the console itself,
/// with the session's CSRF token ([`check_form`]): the only way a handler
/// gets a form's fields, so that none can forget the check.
pub struct CheckedForm<T>(pub Session, pub T);

impl<T: CarriesCsrf + serde::de::DeserializeOwned + Send> axum::extract::FromRequest<AppState> for CheckedForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let SignedIn(session) = <SignedIn as FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
        let console = console_of(state)?;
        let headers = parts.headers.clone();
        let axum::Form(form) = axum::Form::<T>::from_request(Request::from_parts(parts, body), state).await.map_err(|_| PageError::Forged)?;
        check_form(&headers, console, &session, form.csrf())?;
        Ok(Self(session, form))
    }
}

/// A form whose fields are named by the page (a draft's files): the token among them.
impl CarriesCsrf for Vec<(String, String)> {
    fn csrf(&self) -> &str {
        self.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or_default()
    }
}

/// Refuses what another site may have started: a form is taken only from a
/// page of the console itself, and only with the session's CSRF token.
fn check_form(parts_headers: &HeaderMap, console: &Console, session: &Session, csrf: &str) -> Result<(), PageError> {
    check_same_origin(parts_headers, console)?;
    if !csrf_matches(session, csrf) {
        return Err(PageError::Forged);
    }
    Ok(())
}

/// Refuses a request the browser says another site started (`Sec-Fetch-Site`,
/// `Origin`); what sends neither (a command-line client) is let through.
fn check_same_origin(parts_headers: &HeaderMap, console: &Console) -> Result<(), PageError> {
    let site = parts_headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|site| site != "same-origin") {
        return Err(PageError::Forged);
    }
    // The browser names the page's origin: the console's public address, or
    // the one this request was sent to (a demo's `localhost`, say).
    let origin = parts_headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let requested = parts_headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(|host| format!("https://{host}"));
    if origin.is_some_and(|origin| origin != console.public_origin && Some(origin) != requested.as_deref()) {
        return Err(PageError::Forged);
    }
    Ok(())
}
