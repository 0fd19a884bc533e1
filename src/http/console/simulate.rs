//! The DPO's simulation page: a referral pasted in, decided for a recipient
//! of the directory under the policy in force, with nothing stored or sent.
//! The answer names categories, fields and rules, never a value: a page
//! never shows what the decision withheld, nor, once decided, what was pasted.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::extract::Multipart;
use maud::{html, Markup};

use super::layout::page;
use super::sessions::Session;
use super::{check_form, console_of, PageError, PageResult, SignedIn};
use crate::app::access::Dpos;
use crate::app::dpo::policies::{Simulation, SimulationAnswer};
use crate::app::AppError;
use crate::domain::decision::{FieldsRecord, Outcome};
use crate::domain::OrgId;
use crate::http::AppState;

pub async fn form(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    state.gateway.authorize::<Dpos>(&session.principal).await?;
    Ok(simulation_page(&state, &session, "", "", None, None).into_response())
}

fn simulation_page(state: &AppState, session: &Session, typed: &str, chosen: &str, problem: Option<Markup>, answer: Option<&SimulationAnswer>) -> Markup {
    let directory = state.gateway.directory();
    let mut organisations: Vec<_> = directory.organisations().collect();
    organisations.sort_by(|a, b| (a.country.as_str(), a.id.as_str()).cmp(&(b.country.as_str(), b.id.as_str())));
    page(
        "Simulate a decision",
        Some(session),
        html! {
            @if let Some(answer) = answer {
                (decision(answer))
                h2 { "Another referral" }
            }
            p { "Paste a referral as a national system would submit it, or choose its file. The gateway decides it under the policy in force, for the recipient you choose, and shows what would be sent and withheld. Nothing is stored or sent." }
            @if let Some(problem) = problem {
                div.notice.bad role="alert" { (problem) }
            }
            // multipart/form-data: a referral may come as a file.
            form method="post" action="/console/simulate" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(session.csrf_token);
                label for="referral" { "Referral (JSON), pasted" }
                textarea id="referral" name="referral" rows="16" cols="100" spellcheck="false" { "\n" (typed) }
                label for="referral_file" { "or a referral file (JSON)" }
                input id="referral_file" name="referral_file" type="file" accept="application/json,.json";
                label for="to" { "Recipient" }
                select id="to" name="to" {
                    option value="" { "The referral's own destination" }
                    @for organisation in &organisations {
                        option value=(organisation.id.as_str()) selected[organisation.id.as_str() == chosen] {
                            (organisation.name) " (" (organisation.id.as_str()) ", " (organisation.country.as_str()) ", " (organisation.kind.as_str()) ")"
                        }
                    }
                }
                p { button type="submit" { "Decide" } }
            }
        },
    )
}

/// The decision, category by category, with the rule for each.
fn decision(answer: &SimulationAnswer) -> Markup {
    let record = &answer.decision;
    html! {
        h2 { "The decision" }
        @let allowed = record.outcome == Outcome::Allow;
        p.notice.(if allowed { "good" } else { "bad" }) role="status" {
            "For " @match &answer.recipient { Some(r) => { (r.org) @if let Some(c) = &r.country { " in " (c) } } None => { "a recipient the directory does not know" } }
            ", purpose " code { (record.purpose) } ": " strong { (if allowed { "allow" } else { "deny" }) } "."
            @if !record.deny_reasons.is_empty() {
                " Why: " (record.deny_reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) "."
            }
        }
        p.muted { "Decided under policy " span.hash { (record.policy_version) } "." }
        @if let Some(rule) = &record.end_to_end {
            p { "Sealed end to end to the organisation's own key, by rule " code { (rule) } "." }
        }
        table {
            caption { "Sent" }
            thead { tr { th scope="col" { "Category" } th scope="col" { "Fields" } th scope="col" { "Allowed by" } } }
            tbody {
                @for (category, sent) in &record.sent {
                    tr {
                        th scope="row" { (category) }
                        td { @match &sent.fields { FieldsRecord::All(_) => { "all of its fields" } FieldsRecord::Only(fields) => { (fields.join(", ")) } } }
                        td { (sent.permitted_by.join(", ")) }
                    }
                }
                @if record.sent.is_empty() { tr { td colspan="3" { "Nothing." } } }
            }
        }
        table {
            caption { "Withheld (names only: no value of a withheld field is ever shown)" }
            thead { tr { th scope="col" { "Category" } th scope="col" { "Why" } th scope="col" { "Rule" } } }
            tbody {
                @for (category, reasons) in &record.withheld {
                    @for reason in reasons {
                        tr { th scope="row" { (category) } td { (reason.reason.as_str()) } td { (reason.policy.as_deref().unwrap_or("")) } }
                    }
                }
                @if record.withheld.is_empty() { tr { td colspan="3" { "Nothing." } } }
            }
        }
    }
}

/// The simulation form, read from its multipart body.
#[derive(Debug, Default)]
struct SimulationForm {
    csrf: String,
    referral: String,
    to: String,
}

/// Why the form could not be read.
enum Unreadable {
    /// Not a multipart form of this page (another site's, say).
    Malformed,
    /// A field larger than a submission may be.
    TooLarge,
}

/// Reads the form's fields, each at most `limit` bytes; a file, when one
/// was chosen, takes the place of the pasted text.
async fn read_form(mut multipart: Multipart, limit: usize) -> Result<SimulationForm, Unreadable> {
    let mut form = SimulationForm::default();
    let mut file = None;
    while let Some(field) = multipart.next_field().await.map_err(|_| Unreadable::Malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|_| Unreadable::TooLarge)?;
        if bytes.len() > limit {
            return Err(Unreadable::TooLarge);
        }
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| Unreadable::Malformed)?;
        match name.as_str() {
            "csrf" => form.csrf = text,
            "referral" => form.referral = text,
            "referral_file" if !text.trim().is_empty() => file = Some(text),
            "to" => form.to = text,
            _ => {}
        }
    }
    if let Some(file) = file {
        form.referral = file;
    }
    Ok(form)
}

pub async fn decide(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> PageResult {
    let console = console_of(&state)?;
    let Ok(multipart) = multipart else {
        return Err(PageError::Forged);
    };
    let form = match read_form(multipart, state.body_limit).await {
        Ok(form) => form,
        Err(Unreadable::Malformed) => return Err(PageError::Forged),
        Err(Unreadable::TooLarge) => {
            let said = html! { "The referral is larger than this gateway takes (" (state.body_limit) " bytes)." };
            return Ok((StatusCode::PAYLOAD_TOO_LARGE, simulation_page(&state, &session, "", "", Some(said), None)).into_response());
        }
    };
    check_form(&headers, console, &session, &form.csrf)?;
    let caller = state.gateway.authorize::<Dpos>(&session.principal).await?;
    let shown_again = |status: StatusCode, problem: Markup| (status, simulation_page(&state, &session, &form.referral, form.to.trim(), Some(problem), None)).into_response();
    let unprocessable = |problem: Markup| shown_again(StatusCode::UNPROCESSABLE_ENTITY, problem);
    let referral: serde_json::Value = match serde_json::from_str(&form.referral) {
        Ok(referral) => referral,
        Err(error) => return Ok(unprocessable(html! { "This is not JSON: line " (error.line()) ", column " (error.column()) "." })),
    };
    let to = match form.to.trim() {
        "" => None,
        id => match OrgId::parse(id) {
            Ok(org) => Some(org),
            Err(_) => return Ok(unprocessable(html! { "Choose a recipient from the list." })),
        },
    };
    match state.gateway.simulate(&caller, Simulation { referral, to, at: None, files: None }).await {
        // The pasted referral is not shown again: the page would show what the decision withheld.
        Ok(answer) => Ok(simulation_page(&state, &session, "", form.to.trim(), None, Some(&answer)).into_response()),
        Err(AppError::Invalid(problems)) => Ok(unprocessable(html! {
            p { "The referral is not one the gateway would accept:" }
            ul { @for p in &problems { li { code { (p.field) } " " (p.problem) } } }
        })),
        Err(AppError::MalformedJson { line, column }) => Ok(unprocessable(html! { "This is not JSON: line " (line) ", column " (column) "." })),
        // Whatever else went wrong, the form comes back as it was.
        Err(other) => {
            let status = crate::http::problem::Problem::from(other).status();
            Ok(shown_again(status, html! { "The gateway could not decide this just now. Try again in a few minutes." }))
        }
    }
}
