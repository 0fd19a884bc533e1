//! Signing in to the console and out of it (DPOs and auditors).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;

use super::layout::{error_page, page};
use super::sessions::{cookie, SESSION_COOKIE, SIGN_IN_COOKIE, SIGN_IN_WITHIN};
use super::sign_in::SignInError;
use super::{check_same_origin, console_of, CarriesCsrf, CheckedForm, Console, PageError, PageResult, SignedIn};
use crate::app::access::Overseers;
use crate::audit::Actor;
use crate::auth::Principal;
use crate::http::extract::ConnectionInfo;
use crate::http::AppState;

fn session_cookie(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

fn expired(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for value in cookies {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

pub async fn sign_in_page(State(state): State<AppState>, signed_in: Option<SignedIn>) -> PageResult {
    let console = console_of(&state)?;
    if signed_in.is_some() {
        return Ok(Redirect::to("/console/").into_response());
    }
    let markup = page(
        "Sign in",
        None,
        html! {
            p { "This console is for the data-protection officers and auditors of the organisations this gateway serves." }
            ul {
                @if console.provider.is_some() {
                    li { a href="/console/sign-in/provider" { "Sign in with your organisation's account" } }
                }
                li {
                    form method="post" action="/console/sign-in/certificate" {
                        button type="submit" { "Sign in with the client certificate in your browser" }
                        " (one registered with this gateway for a DPO or an auditor)"
                    }
                }
            }
        },
    );
    Ok(markup.into_response())
}

/// Sends the browser to the identity provider, with a fresh state, nonce
/// and PKCE challenge; the state is also bound to this browser by a cookie.
pub async fn start_provider_sign_in(State(state): State<AppState>) -> PageResult {
    let console = console_of(&state)?;
    let provider = console.provider.as_ref().ok_or(PageError::NoConsole)?;
    let now = state.gateway.now();
    // Checked before the provider is asked anything: a flood of starts from
    // elsewhere makes the gateway fetch nothing more.
    if !console.sessions.has_room_for_sign_in(now) {
        return Ok(busy());
    }
    let started = match provider.start().await {
        Ok(started) => started,
        Err(error) => return Ok(refused(&state, error, true).await),
    };
    if !console.sessions.begin_sign_in(started.state.clone(), started.secrets, now) {
        return Ok(busy());
    }
    let bound = format!("{SIGN_IN_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}", started.state, SIGN_IN_WITHIN.num_seconds());
    Ok(with_cookies(Redirect::to(&started.authorize_url).into_response(), &[bound]))
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
}

/// Where the identity provider sends the browser back.
pub async fn provider_callback(State(state): State<AppState>, headers: HeaderMap, query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>) -> PageResult {
    let console = console_of(&state)?;
    let provider = console.provider.as_ref().ok_or(PageError::NoConsole)?;
    let access = state.auth.oidc.as_ref().ok_or(PageError::NoConsole)?;
    let Ok(Query(Callback { code: Some(code), state: Some(returned) })) = query else {
        // The provider answered with an error (the person cancelled, say), or nothing usable.
        return Ok(refused(&state, SignInError::ProviderRefused, true).await);
    };
    // The state must be the one this browser was given, and one still pending.
    let same_browser = cookie(&headers, SIGN_IN_COOKIE).is_some_and(|bound| super::sessions::same_secret(bound, &returned));
    let now = state.gateway.now();
    let pending = if same_browser { console.sessions.finish_sign_in(&returned, now) } else { None };
    let Some(secrets) = pending else {
        // Not this browser's sign-in (another site sent it here, say): its
        // own sign-in under way, if any, is left alone.
        return Ok(refused(&state, SignInError::UnknownSignIn, false).await);
    };
    let signed_in = match provider.finish(secrets, code, now, access).await {
        Ok(signed_in) => signed_in,
        Err(error) => return Ok(refused(&state, error, true).await),
    };
    // Back from another site: the browser would not send a SameSite=Strict
    // cookie on a redirect from here, so a page of ours moves on to the
    // console, which it then does from this site.
    let opened = match open_session(&state, console, signed_in.principal, Some(signed_in.credential_ends), now).await {
        Ok(opened) => opened,
        Err(error) => return Ok(with_cookies(error.into_response(), &[expired(SIGN_IN_COOKIE)])),
    };
    let markup = page(
        "Signed in",
        None,
        html! {
            p.notice.good { "You are signed in." }
            p { a href="/console/" { "Continue to the console" } }
        },
    );
    let mut response = markup.into_response();
    response.headers_mut().insert(header::REFRESH, HeaderValue::from_static("0; url=/console/"));
    Ok(with_cookies(response, &[session_cookie(&opened), expired(SIGN_IN_COOKIE)]))
}

/// Signs in whoever presented a registered client certificate with a role
/// of the console: a form of the sign-in page, never another site's.
pub async fn certificate_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Result<axum::Extension<ConnectionInfo>, axum::extract::rejection::ExtensionRejection>,
) -> PageResult {
    let console = console_of(&state)?;
    check_same_origin(&headers, console)?;
    let certificate = connection.ok().and_then(|axum::Extension(info)| info.certificate);
    let principal = certificate.as_ref().and_then(|fingerprint| state.auth.clients.authenticate(fingerprint).ok());
    let Some(principal) = principal else {
        return Ok(refused(&state, SignInError::NoCertificate, false).await);
    };
    let now = state.gateway.now();
    let opened = open_session(&state, console, principal, None, now).await?;
    Ok(with_cookies(Redirect::to("/console/").into_response(), &[session_cookie(&opened)]))
}

/// A session for `principal`, if it may use the console: a DPO or an
/// auditor of an organisation this gateway serves (a refusal is audited).
async fn open_session(
    state: &AppState,
    console: &Console,
    principal: Principal,
    credential_ends: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<String, PageError> {
    match state.gateway.authorize::<Overseers>(&principal).await {
        Ok(_) => {}
        Err(crate::app::AppError::Forbidden { code }) => {
            let detail = if code == "missing_role" {
                "This console is for data-protection officers and auditors: your account has neither role here."
            } else {
                "Your organisation is not one this gateway serves."
            };
            return Err(PageError::App(crate::http::problem::Problem::new(StatusCode::FORBIDDEN, code, "Not for this account", detail)));
        }
        Err(other) => return Err(other.into()),
    }
    console.sessions.open(principal, now, credential_ends).ok_or(PageError::Busy)
}

/// Too many sign-ins or sessions at once.
fn busy() -> Response {
    error_page(StatusCode::SERVICE_UNAVAILABLE, "Sign-in not possible now", "Too many sign-ins are under way. Try again in a few minutes.")
}

/// A failed sign-in: audited with its code, answered with a page that says
/// what to do and nothing of what the provider sent. `ends_sign_in`: the
/// browser's sign-in under way is over (its cookie is expired).
async fn refused(state: &AppState, error: SignInError, ends_sign_in: bool) -> Response {
    tracing::info!(code = error.code(), "console sign-in refused");
    let actor = Actor { org: None, subject: "console".to_owned() };
    if let Err(audit_error) = state.gateway.audit_refusal(actor, "unauthenticated", error.code()).await {
        return PageError::from(audit_error).into_response();
    }
    let (status, detail) = match error {
        SignInError::ProviderUnavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "The identity provider cannot be reached just now. Try again in a few minutes.")
        }
        SignInError::NoCertificate => (
            StatusCode::UNAUTHORIZED,
            "Your browser presented no client certificate registered with this gateway. Sign in with your organisation's account, or ask the gateway's operator to register your certificate.",
        ),
        _ => (StatusCode::UNAUTHORIZED, "The sign-in did not complete. Start again from the sign-in page."),
    };
    let response = error_page(status, "Sign-in failed", detail);
    if ends_sign_in {
        with_cookies(response, &[expired(SIGN_IN_COOKIE)])
    } else {
        response
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

impl CarriesCsrf for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn sign_out(State(state): State<AppState>, headers: HeaderMap, CheckedForm(_, _): CheckedForm<CsrfOnly>) -> PageResult {
    let console = console_of(&state)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        console.sessions.close(token);
    }
    Ok(with_cookies(Redirect::to("/console/sign-in").into_response(), &[expired(SESSION_COOKIE)]))
}
