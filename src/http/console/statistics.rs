//! The statistics page, for DPOs and auditors: the released tables of a
//! closed month or quarter, as `GET /v1/statistics` gives them, with bars.
//! The bars are SVG shapes with presentation attributes (no script, no
//! style attribute), beside the numbers, which stay the accessible truth.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{code_of as code, page};
use super::{PageResult, SignedIn};
use crate::app::access::StatisticsReaders;
use crate::app::millis_to_rfc3339;
use crate::app::statistics::StatisticsAnswer;
use crate::domain::statistics::{Cell, Period};
use crate::http::AppState;

/// Months offered in the period list, counting back from the last closed one.
const MONTHS_OFFERED: usize = 12;
/// Quarters offered.
const QUARTERS_OFFERED: usize = 4;
/// The longest bar, in SVG user units.
const BAR_WIDTH: u64 = 240;

#[derive(Debug, Deserialize)]
pub struct Chosen {
    period: Option<String>,
}

pub async fn tables(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    chosen: Result<Query<Chosen>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let caller = state.gateway.authorize::<StatisticsReaders>(&session.principal).await?;
    let now = state.gateway.now();
    // The latest periods released: one that ended less than an hour ago is not yet.
    let latest = |quarterly: bool| {
        let closed = Period::last_closed(quarterly, now);
        if closed.is_released_at(now) { closed } else { closed.previous() }
    };
    let mut offered = Vec::new();
    let mut month = latest(false);
    for _ in 0..MONTHS_OFFERED {
        offered.push(month);
        month = month.previous();
    }
    let mut quarter = latest(true);
    for _ in 0..QUARTERS_OFFERED {
        offered.push(quarter);
        quarter = quarter.previous();
    }
    let asked = chosen.ok().and_then(|Query(chosen)| chosen.period).filter(|p| !p.is_empty());
    let period = match asked.as_deref().map(Period::parse) {
        None => latest(false),
        Some(Ok(period)) => {
            // An older (or not yet released) period asked by its address is listed too, as chosen.
            if !offered.contains(&period) {
                offered.insert(0, period);
            }
            period
        }
        Some(Err(_)) => {
            let markup = statistics_page(&session, &offered, None, Some("A period is a month (2026-11) or a quarter (2026-Q4)."), None);
            return Ok((StatusCode::BAD_REQUEST, markup).into_response());
        }
    };
    let (status, problem, answer) = match state.gateway.statistics(&caller, period).await {
        Ok(answer) => (StatusCode::OK, None, Some(answer)),
        Err(error) => {
            let problem = crate::http::problem::Problem::from(error);
            (problem.status(), Some(problem.detail().to_owned()), None)
        }
    };
    Ok((status, statistics_page(&session, &offered, Some(period), problem.as_deref(), answer.as_ref())).into_response())
}

fn statistics_page(session: &super::sessions::Session, offered: &[Period], period: Option<Period>, problem: Option<&str>, answer: Option<&StatisticsAnswer>) -> Markup {
    page(
        "Statistics",
        Some(session),
        html! {
            p { "What this gateway releases to the coordinating body: predefined tables of a closed month or quarter, every count rounded and small counts suppressed, so that no table tells about one person." }
            form.filters method="get" action="/console/statistics" {
                div {
                    label for="period" { "Period" }
                    select id="period" name="period" {
                        @for p in offered { option value=(p.to_string()) selected[Some(*p) == period] { (p.to_string()) } }
                    }
                }
                div { button type="submit" { "Show" } }
            }
            @if let Some(problem) = problem { p.notice.bad role="alert" { (problem) } }
            @if let Some(answer) = answer { (tables_of(answer)) }
        },
    )
}

fn shown(cell: Cell) -> String {
    match cell {
        Cell::Released { value } => value.to_string(),
        Cell::Suppressed => "suppressed".to_owned(),
        Cell::PartlySuppressed { at_least } => format!("at least {at_least}"),
    }
}

/// A table of counts with a bar for each released one.
fn bars(caption: &str, heading: &str, rows: &[(String, Cell)]) -> Markup {
    let largest = rows.iter().filter_map(|(_, c)| c.value()).max().unwrap_or(0).max(1);
    html! {
        table.bars {
            caption { (caption) }
            thead { tr { th scope="col" { (heading) } th.number scope="col" { "Count" } th scope="col" { span.muted { "Bar" } } } }
            tbody {
                @for (label, cell) in rows {
                    tr {
                        th scope="row" { (label) }
                        td.number { (shown(*cell)) }
                        td {
                            @if let Some(value) = cell.value() {
                                svg width=(BAR_WIDTH) height="14" viewBox=(format!("0 0 {BAR_WIDTH} 14")) aria-hidden="true" focusable="false" {
                                    rect x="0" y="1" height="12" width=(value * BAR_WIDTH / largest) fill="#0b3d62" {}
                                }
                            }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="3" { "Nothing in this period." } } }
            }
        }
    }
}

fn tables_of(answer: &StatisticsAnswer) -> Markup {
    let statistics = &answer.statistics;
    let tables = &statistics.tables;
    let method = &statistics.method;
    let referrals: Vec<(String, Cell)> = tables
        .referrals
        .iter()
        .map(|c| {
            let to = match (c.asylum_linked, c.partner_country) {
                (true, _) => "asylum-linked (no country)".to_owned(),
                (false, Some(country)) => country.to_string(),
                (false, None) => "unknown destination".to_owned(),
            };
            (format!("{} → {to}: {}", c.purpose, code(&c.outcome)), c.count)
        })
        .collect();
    let withheld: Vec<(String, Cell)> = tables.withheld.iter().map(|c| (format!("{}: {}", c.category, c.reason.as_str()), c.count)).collect();
    let erasures: Vec<(String, Cell)> = tables.withdrawals.erasures.iter().map(|(k, v)| (code(k), *v)).collect();
    let refusals: Vec<(String, Cell)> = tables.screening_refusals.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let times: BTreeMap<&str, &crate::domain::statistics::tables::Times> =
        BTreeMap::from([("Delivery (acceptance to the peer's receipt)", &tables.delivery), ("First answer of the recipient", &tables.acknowledgement)]);
    html! {
        p.muted {
            (statistics.gateway.as_str()) ", " (tables.period.to_string()) ", issued " (millis_to_rfc3339(statistics.issued_at.0))
            " by method " code { (method.name) } ": counts rounded to a multiple of " (method.rounding_base)
            ", a count under " (method.threshold) " suppressed, times to " (method.time_step_minutes) " minutes. The API's answer is signed."
        }
        (bars("Referrals by purpose, partner country and outcome", "Purpose → country: outcome", &referrals))
        (bars("Categories withheld, by reason", "Category: reason", &withheld))
        table {
            caption { "Times" }
            thead { tr { th scope="col" { "Time" } th.number scope="col" { "Count" } th.number scope="col" { "Median (minutes)" } th.number scope="col" { "90th percentile (minutes)" } } }
            tbody {
                @for (name, t) in &times {
                    tr {
                        th scope="row" { (name) } td.number { (shown(t.count)) }
                        td.number { (t.p50_minutes.map(|m| m.to_string()).unwrap_or_default()) }
                        td.number { (t.p90_minutes.map(|m| m.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
        (bars("Consent withdrawals", "Withdrawn", &[("whole".to_owned(), tables.withdrawals.whole), ("partly".to_owned(), tables.withdrawals.partial)]))
        (bars("Erasures after those withdrawals, at the period's end", "Erasure", &erasures))
        (bars("Packets refused at screening, by reason", "Reason", &refusals))
    }
}
