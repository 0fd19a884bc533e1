//! The console's pages for DPOs and auditors: the overview and the audit log.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{NaiveDate, NaiveTime};
use maud::{html, Markup};

use super::layout::{error_page, page};
use super::{PageError, PageResult, SignedIn};
use crate::app::access::Overseers;
use crate::app::dpo::queries::{AuditEntry, AuditQuery};
use crate::app::millis_to_rfc3339;
use crate::audit::Action;
use crate::auth::Role;
use crate::http::AppState;

/// Entries per page of the audit log.
const AUDIT_PAGE: i64 = 50;

pub async fn not_found() -> axum::response::Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page in this console.")
}

pub async fn home(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    state.gateway.authorize::<Overseers>(&session.principal).await?;
    let dpo = session.principal.has(Role::Dpo);
    let markup = page(
        "Overview",
        Some(&session),
        html! {
            p { "What this gateway did, and under which rules, for the organisations it serves in " (state.gateway.country.as_str()) "." }
            ul {
                @if dpo {
                    li { a href="/console/policies" { "Policies" } ": the version in force, drafts with their proofs, tests and impact, and your sign-off." }
                }
                @if dpo {
                    li { a href="/console/simulate" { "Simulate" } ": what a referral would send to a recipient, and what it would withhold, rule by rule." }
                }
                li { a href="/console/people" { "People" } ": everything about one person, by the subject reference." }
                li { a href="/console/deliveries" { "Deliveries" } ": what waits, failed or awaits an erasure, per partner gateway." }
                li { a href="/console/audit" { "The audit log" } ": every read, decision, delivery and refusal, in a chain you can verify." }
                li { a href="/console/statistics" { "Statistics" } ": what this gateway releases to the coordinating body." }
            }
            @if !dpo {
                p.muted { "You are signed in as an auditor: you can read everything here and change nothing." }
            }
        },
    );
    Ok(markup.into_response())
}

/// The filters of the audit page, as a person fills them in: a day, not an RFC 3339 instant.
#[derive(Debug, Default)]
struct AuditFilters {
    action: Option<Action>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    org: Option<String>,
    referral_id: Option<String>,
    cursor: Option<i64>,
}

impl AuditFilters {
    /// Empty fields are no filter; anything unknown or malformed is said.
    fn parse(params: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut filters = Self::default();
        for (key, value) in params.iter().filter(|(_, v)| !v.trim().is_empty()) {
            let value = value.trim();
            let day = |name: &str| NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| format!("{name} must be a day, as 2026-11-30"));
            match key.as_str() {
                "action" => filters.action = Some(Action::parse(value).ok_or("action is not one of the listed actions")?),
                "from" => filters.from = Some(day("From")?),
                "to" => filters.to = Some(day("To")?),
                "org" => filters.org = Some(value.to_owned()),
                "referral_id" => filters.referral_id = Some(value.to_owned()),
                "cursor" => filters.cursor = Some(value.parse().map_err(|_| "the page cursor is malformed")?),
                _ => return Err("the address names a filter this page does not have".to_owned()),
            }
        }
        Ok(filters)
    }

    fn query(&self) -> AuditQuery {
        let start_of = |day: NaiveDate| day.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
        AuditQuery {
            from_ms: self.from.map(start_of),
            // The whole of the last day.
            to_ms: self.to.and_then(|day| day.succ_opt()).map(|next| start_of(next) - 1),
            action: self.action,
            org: self.org.clone(),
            referral_id: self.referral_id.clone(),
            subject_ref: None,
            cursor: self.cursor,
            limit: Some(AUDIT_PAGE),
        }
    }

    /// The address of the page after `cursor`, with the same filters.
    fn next_page(&self, cursor: &str) -> String {
        let mut pairs = Vec::new();
        if let Some(action) = self.action {
            pairs.push(("action", action.as_str().to_owned()));
        }
        if let Some(from) = self.from {
            pairs.push(("from", from.to_string()));
        }
        if let Some(to) = self.to {
            pairs.push(("to", to.to_string()));
        }
        if let Some(org) = &self.org {
            pairs.push(("org", org.clone()));
        }
        if let Some(referral_id) = &self.referral_id {
            pairs.push(("referral_id", referral_id.clone()));
        }
        pairs.push(("cursor", cursor.to_owned()));
        let query = openidconnect::url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        format!("/console/audit?{query}")
    }
}

pub async fn audit(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let caller = state.gateway.authorize::<Overseers>(&session.principal).await?;
    let params = query.map(|Query(params)| params).unwrap_or_default();
    let (filters, problem) = match AuditFilters::parse(&params) {
        Ok(filters) => (filters, None),
        Err(problem) => (AuditFilters::default(), Some(problem)),
    };
    let entries = match &problem {
        None => Some(state.gateway.audit_log(&caller, filters.query()).await?),
        Some(_) => None,
    };
    let status = if problem.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let markup = page(
        "Audit log",
        Some(&session),
        html! {
            p {
                "Every entry holds the hash of the one before it, so that none can be changed or removed unnoticed. "
                a href="/console/audit/chain" { "Verify the whole chain" }
            }
            (audit_filters(&filters))
            @if let Some(problem) = &problem {
                p.notice.bad role="alert" { (problem) }
            }
            @if let Some(page) = &entries {
                @if page.entries.is_empty() {
                    p { "No entry matches these filters." }
                } @else {
                    (audit_table(&page.entries))
                }
                @if let Some(cursor) = &page.next_cursor {
                    p { a href=(filters.next_page(cursor)) rel="next" { "Next page" } }
                }
            }
        },
    );
    Ok((status, markup).into_response())
}

fn audit_filters(filters: &AuditFilters) -> Markup {
    let day = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    html! {
        form.filters method="get" action="/console/audit" role="search" aria-label="Filter the audit log" {
            div {
                label for="action" { "Action" }
                select id="action" name="action" {
                    option value="" { "Any" }
                    @for action in Action::ALL {
                        option value=(action.as_str()) selected[filters.action == Some(*action)] { (action.as_str()) }
                    }
                }
            }
            div { label for="from" { "From (day, UTC)" } input id="from" name="from" type="date" value=(day(filters.from)); }
            div { label for="to" { "To (day, UTC)" } input id="to" name="to" type="date" value=(day(filters.to)); }
            div { label for="org" { "Organisation" } input id="org" name="org" type="text" value=(filters.org.clone().unwrap_or_default()); }
            div {
                label for="referral_id" { "Referral id" }
                input id="referral_id" name="referral_id" type="text" value=(filters.referral_id.clone().unwrap_or_default());
            }
            div { button type="submit" { "Filter" } }
        }
    }
}

fn audit_table(entries: &[AuditEntry]) -> Markup {
    html! {
        table {
            caption { "Entries in chain order" }
            thead {
                tr {
                    th.number scope="col" { "#" }
                    th scope="col" { "When (UTC)" }
                    th scope="col" { "Who" }
                    th scope="col" { "Action" }
                    th scope="col" { "Referral" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Reasons" }
                    th scope="col" { "Policy version" }
                }
            }
            tbody {
                @for entry in entries {
                    tr {
                        td.number { (entry.seq) }
                        td { (millis_to_rfc3339(entry.at.0)) }
                        td { (entry.actor.org.as_deref().unwrap_or("the gateway")) " " code { (entry.actor.subject) } }
                        td { code { (entry.action) } }
                        td { @if let Some(id) = &entry.referral_id { code { (id) } } }
                        td { (entry.outcome) }
                        td { (entry.reasons.join(", ")) }
                        td { (entry.policy_version.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// The whole chain recomputed, on the page.
pub async fn audit_chain(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    let caller = state.gateway.authorize::<Overseers>(&session.principal).await?;
    let verified = state.gateway.audit_chain(&caller).await.map_err(PageError::from)?;
    let markup = page(
        "Audit chain",
        Some(&session),
        html! {
            @match &verified {
                Ok(chain) => {
                    p.notice.good role="status" {
                        "The chain holds: all " (chain.entries) " entries were recomputed from the first, and the last matches the recorded head."
                    }
                    p { "Head hash: " span.hash { (chain.head) } }
                }
                Err(broken) => {
                    p.notice.bad role="alert" { "The chain is broken: " (broken.to_string()) ". Tell the gateway's operator and keep a copy of the database as it is." }
                }
            }
            p { a href="/console/audit" { "Back to the audit log" } }
        },
    );
    let status = if verified.is_ok() { StatusCode::OK } else { StatusCode::CONFLICT };
    Ok((status, markup).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next page's address carries the filters back as they were, odd characters and all.
    #[test]
    fn the_next_page_keeps_the_filters() {
        let filters = AuditFilters {
            action: Some(Action::ReferralSubmit),
            from: NaiveDate::from_ymd_opt(2026, 11, 1),
            to: NaiveDate::from_ymd_opt(2026, 11, 30),
            org: Some("ita nrm&x=1".to_owned()),
            referral_id: Some("r+1/é".to_owned()),
            cursor: None,
        };
        let next: axum::http::Uri = filters.next_page("50").parse().unwrap();
        assert_eq!(next.path(), "/console/audit");
        let Query(params) = Query::<BTreeMap<String, String>>::try_from_uri(&next).unwrap();
        let again = AuditFilters::parse(&params).unwrap();
        assert_eq!((again.action, again.from, again.to, again.cursor), (filters.action, filters.from, filters.to, Some(50)));
        assert_eq!((again.org, again.referral_id), (filters.org, filters.referral_id));
    }
}
