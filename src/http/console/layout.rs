//! What every console page shares: the document, the navigation, who is
//! signed in, error pages and the stylesheet.
//!
//! Titles are fixed words, never data: a browser keeps them in its history.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::sessions::Session;
use crate::auth::Role;

const STYLESHEET: &str = include_str!("console.css");

pub async fn stylesheet() -> Response {
    let mut response = STYLESHEET.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    response
}

/// The pages in the navigation, with who sees them.
const NAVIGATION: &[(&str, &str, &[Role])] = &[
    ("/console/", "Overview", &[Role::Dpo, Role::Auditor]),
    ("/console/policies", "Policies", &[Role::Dpo]),
    ("/console/simulate", "Simulate", &[Role::Dpo]),
    ("/console/people", "People", &[Role::Dpo, Role::Auditor]),
    ("/console/audit", "Audit log", &[Role::Dpo, Role::Auditor]),
    ("/console/deliveries", "Deliveries", &[Role::Dpo, Role::Auditor]),
    ("/console/statistics", "Statistics", &[Role::Dpo, Role::Auditor]),
];

/// A whole page: `title` is fixed words (it stays in the browser's history).
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · referral-gateway console" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.band {
                    strong { "referral-gateway console" }
                    @if let Some(session) = session {
                        nav aria-label="Console pages" {
                            ul {
                                @for (href, label, roles) in NAVIGATION {
                                    @if roles.iter().any(|role| session.principal.has(*role)) {
                                        // The page's own entry says so to assistive technology.
                                        li { a href=(href) aria-current=[title.starts_with(label).then_some("page")] { (label) } }
                                    }
                                }
                            }
                        }
                        div.who {
                            span {
                                "Signed in as " code { (session.principal.subject) }
                                " of " (session.principal.org.as_str()) " ("
                                (session.principal.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))
                                ")"
                            }
                            (form_post("/console/sign-out", session, html! { button type="submit" { "Sign out" } }))
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A closed value as the API writes it (`snake_case`), for a page to show.
pub fn code_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A form that posts to `action` with the session's CSRF token.
pub fn form_post(action: &str, session: &Session, fields: Markup) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(session.csrf_token);
            (fields)
        }
    }
}

/// A page of its own for an error, with its status.
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    let markup = page(
        title,
        None,
        html! {
            p.notice.bad role="alert" { (detail) }
            p { a href="/console/" { "Back to the console" } }
        },
    );
    (status, markup).into_response()
}
