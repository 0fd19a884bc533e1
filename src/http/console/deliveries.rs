//! The deliveries page, for DPOs and auditors: per partner gateway, what is
//! queued, retrying, delivered, failed (its window passed), withdrawn or
//! erased before delivery, and which erasures the partner has not confirmed.
//! Counts only.

use axum::extract::State;
use axum::response::IntoResponse;
use maud::{html, Markup};

use super::layout::page;
use super::{PageResult, SignedIn};
use crate::app::access::Overseers;
use crate::app::dpo::queries::{Deliveries, PacketStates};
use crate::http::AppState;

pub async fn overview(State(state): State<AppState>, SignedIn(session): SignedIn) -> PageResult {
    let caller = state.gateway.authorize::<Overseers>(&session.principal).await?;
    let deliveries = state.gateway.deliveries(&caller).await?;
    Ok(page("Deliveries", Some(&session), deliveries_of(&deliveries)).into_response())
}

fn states(states: &PacketStates) -> Markup {
    html! {
        td.number { (states.queued) } td.number { (states.retrying) } td.number { (states.delivered) }
        td.number { (states.expired) } td.number { (states.withdrawn) } td.number { (states.erased) }
    }
}

fn deliveries_of(deliveries: &Deliveries) -> Markup {
    html! {
        p { "What this gateway has sent or still holds for each partner gateway. A packet that fails is tried again with growing pauses until its delivery window ends; then it has failed." }
        @if deliveries.partners.is_empty() {
            p { "Nothing was ever queued for a partner." }
        } @else {
            table {
                caption { "Packets by partner gateway" }
                thead {
                    tr {
                        th scope="col" { "Partner" } th scope="col" { "Packets" }
                        th.number scope="col" { "Queued" } th.number scope="col" { "Retrying" } th.number scope="col" { "Delivered" }
                        th.number scope="col" { "Failed (window passed)" } th.number scope="col" { "Withdrawn before delivery" } th.number scope="col" { "Erased before delivery" }
                    }
                }
                tbody {
                    @for partner in &deliveries.partners {
                        tr { th scope="row" rowspan="2" { (partner.country) } td { "referrals" } (states(&partner.referrals)) }
                        tr { td { "statuses, withdrawals, replies" } (states(&partner.other_packets)) }
                    }
                }
            }
            table {
                caption { "Erasures awaited after a withdrawal (deadline " (deliveries.erasure_deadline_hours) " hours)" }
                thead { tr { th scope="col" { "Partner" } th.number scope="col" { "Not confirmed yet" } th.number scope="col" { "Of which overdue" } } }
                tbody {
                    @for partner in &deliveries.partners {
                        tr {
                            th scope="row" { (partner.country) }
                            td.number { (partner.erasures_awaited) }
                            td class=(if partner.erasures_overdue > 0 { "number outcome-bad" } else { "number" }) { (partner.erasures_overdue) }
                        }
                    }
                }
            }
        }
    }
}
