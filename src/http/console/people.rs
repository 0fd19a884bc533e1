//! The people page, for DPOs and auditors: the subject report and the
//! disclosures about one person, by the subject reference the DPO types.
//! The reference is sent in a form body, never in the URL, and is shown
//! only in the page's body.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{code_of as code, form_post, page};
use super::sessions::Session;
use super::{CarriesCsrf, CheckedForm, PageResult, SignedIn};
use crate::app::access::Overseers;
use crate::app::dpo::queries::Disclosures;
use crate::app::dpo::subject_report::SubjectReport;
use crate::app::millis_to_rfc3339;
use crate::domain::SubjectRef;
use crate::http::AppState;

pub async fn form(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    state.gateway.authorize::<Overseers>(&session.principal).await?;
    Ok(people_page(&session, None, None).into_response())
}

fn people_page(session: &Session, problem: Option<&str>, found: Option<(&SubjectReport, &Disclosures)>) -> Markup {
    page(
        "People",
        Some(session),
        html! {
            p { "Everything this gateway decided, sent, holds and erased about one person, and who received what: by the subject reference the national system gave the person. Each look is audited." }
            @if let Some(problem) = problem { p.notice.bad role="alert" { (problem) } }
            (form_post("/console/people", session, html! {
                label for="subject_ref" { "Subject reference" }
                input id="subject_ref" name="subject_ref" type="text" autocomplete="off" required;
                " " button type="submit" { "Look up" }
            }))
            @if let Some((report, disclosures)) = found { (report_of(report, disclosures)) }
        },
    )
}

fn report_of(report: &SubjectReport, disclosures: &Disclosures) -> Markup {
    html! {
        h2 { "About " code { (report.subject_ref) } }
        p.muted { "As of " (millis_to_rfc3339(report.generated_at.0)) "." }
        h3 { "Who received what" }
        @if disclosures.disclosures.is_empty() {
            p { "Nothing about this person went anywhere." }
        } @else {
            table {
                caption { "Disclosures" }
                thead { tr {
                    th scope="col" { "Referral" } th scope="col" { "Recipient" } th scope="col" { "Purpose" } th scope="col" { "Categories" }
                    th scope="col" { "Decided (UTC)" } th scope="col" { "Status" }
                } }
                tbody {
                    @for d in &disclosures.disclosures {
                        tr {
                            td { code { (d.referral_id) } }
                            td { (d.recipient.org) @if let Some(c) = &d.recipient.country { " (" (c) ")" } }
                            td { (d.purpose) } td { (d.categories.join(", ")) }
                            td { (millis_to_rfc3339(d.decided_at.0)) } td { (code(&d.status)) }
                        }
                    }
                }
            }
        }
        h3 { "Every referral" }
        @if report.referrals.is_empty() { p { "This gateway sent or refused no referral about this person." } }
        @for r in &report.referrals {
            section aria-label=(format!("Referral {}", r.referral_id)) {
                h4 { "Referral " code { (r.referral_id) } }
                dl {
                    dt { "From" } dd { (r.sender_org) }
                    dt { "To" } dd { (r.recipient.org) @if let Some(c) = &r.recipient.country { " (" (c) ")" } }
                    dt { "Purpose" } dd { (r.purpose) }
                    dt { "Submitted (UTC)" } dd { (millis_to_rfc3339(r.submitted_at.0)) }
                    dt { "Outcome" } dd { (r.outcome) @if !r.reason_codes.is_empty() { ": " (r.reason_codes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")) } }
                    dt { "Status" } dd { (code(&r.status)) }
                    dt { "Sent" } dd { (r.categories.sent.join(", ")) }
                    dt { "Withheld" } dd { (r.categories.withheld.join(", ")) }
                    @if !r.categories.withdrawn.is_empty() { dt { "Withdrawn" } dd { (r.categories.withdrawn.iter().cloned().collect::<Vec<_>>().join(", ")) } }
                    dt { "Held here" } dd { (code(&r.held.this_gateway)) }
                    dt { "Held at the recipient's gateway" } dd { (code(&r.held.recipient_gateway)) }
                    dt { "Held by the recipient" } dd { (code(&r.held.recipient_organisation)) }
                    @if let Some(o) = &r.emergency_override {
                        dt { "Emergency override" }
                        dd {
                            (code(&o.state)) ": " (code(&o.reason)) " (" (o.justification_code) ")"
                            @if !o.overridden_categories.is_empty() { "; without consent: " (o.overridden_categories.join(", ")) }
                            @if let Some(rule) = &o.standing_rule { "; approved at once under " code { (rule) } }
                        }
                    }
                    @if let Some(erasure) = &r.erasure { dt { "Erasure" } dd { (code(&erasure.state)) @if let Some(due) = erasure.due_by { ", due by " (millis_to_rfc3339(due.0)) } } }
                }
                @if !r.timeline.is_empty() {
                    ol.timeline {
                        @for step in &r.timeline {
                            li { (millis_to_rfc3339(step.at.0)) " " code { (code(&step.status)) } @if !step.reasons.is_empty() { " (" (step.reasons.join(", ")) ")" } }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LookUp {
    csrf: String,
    subject_ref: String,
}

impl CarriesCsrf for LookUp {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn look_up(State(state): State<AppState>, CheckedForm(session, form): CheckedForm<LookUp>) -> PageResult {
    let caller = state.gateway.authorize::<Overseers>(&session.principal).await?;
    let Ok(subject_ref) = SubjectRef::parse(form.subject_ref.trim()) else {
        let problem = "A subject reference is 8 to 64 letters, digits, '-', '_', '.' or ':', with at least one digit.";
        return Ok((StatusCode::BAD_REQUEST, people_page(&session, Some(problem), None)).into_response());
    };
    let subject_ref = String::from(subject_ref);
    let report = state.gateway.subject_report(&caller, &subject_ref).await?;
    let disclosures = state.gateway.disclosures(&caller, &subject_ref).await?;
    Ok(people_page(&session, None, Some((&report, &disclosures))).into_response())
}
