//! The coordinating body's view: the released tables of several gateways
//! for one period, added up cell by cell (issue 20 §2). Nothing is
//! un-rounded or un-suppressed: a sum is told whole only when every part
//! was, otherwise as "at least" the parts released. Percentiles do not add
//! up, so times stay per gateway.
//!
//! Pure: released tables in, merged tables out. Which tables may be merged
//! (signed by whom, checked against what) is the caller's to decide.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tables::{ErasureTimeliness, ReferralsCell, Tables, Times, WithheldCell, WithdrawalsTable};
use super::{Cell, Period};
use crate::domain::decision::{Outcome, ReasonCode};
use crate::domain::{CountryCode, DataCategory, Purpose};

/// Why tables cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("nothing to merge")]
    Nothing,
    #[error("the tables are of different periods ({0} and {1})")]
    PeriodsDiffer(Period, Period),
    #[error("two tables come from the gateway of {0}")]
    SameGatewayTwice(CountryCode),
}

/// Several gateways' tables of one period, added up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MergedTables {
    pub period: Period,
    pub referrals: Vec<ReferralsCell>,
    pub withheld: Vec<WithheldCell>,
    /// Each gateway's, as it released them.
    pub delivery: BTreeMap<CountryCode, Times>,
    pub acknowledgement: BTreeMap<CountryCode, Times>,
    pub withdrawals: WithdrawalsTable,
    pub screening_refusals: BTreeMap<String, Cell>,
}

/// The tables of `parts` (each a gateway's, of the same period) added up.
/// A row one gateway lacks counts as its true zero there.
pub fn merge(parts: &[(CountryCode, Tables)]) -> Result<MergedTables, MergeError> {
    let (_, first) = parts.first().ok_or(MergeError::Nothing)?;
    let mut seen = std::collections::BTreeSet::new();
    for (gateway, tables) in parts {
        if tables.period != first.period {
            return Err(MergeError::PeriodsDiffer(first.period, tables.period));
        }
        if !seen.insert(*gateway) {
            return Err(MergeError::SameGatewayTwice(*gateway));
        }
    }
    let mut referrals: BTreeMap<(Purpose, Option<CountryCode>, bool, Outcome), Cell> = BTreeMap::new();
    let mut withheld: BTreeMap<(DataCategory, ReasonCode), Cell> = BTreeMap::new();
    let mut erasures: BTreeMap<ErasureTimeliness, Cell> = BTreeMap::new();
    let mut refusals: BTreeMap<String, Cell> = BTreeMap::new();
    let zero = Cell::Released { value: 0 };
    let (mut whole, mut partial) = (zero, zero);
    for (_, tables) in parts {
        for cell in &tables.referrals {
            let key = (cell.purpose, cell.partner_country, cell.asylum_linked, cell.outcome);
            let sum = referrals.get(&key).copied().unwrap_or(zero).sum(cell.count);
            referrals.insert(key, sum);
        }
        for cell in &tables.withheld {
            let sum = withheld.get(&(cell.category, cell.reason)).copied().unwrap_or(zero).sum(cell.count);
            withheld.insert((cell.category, cell.reason), sum);
        }
        for (timeliness, count) in &tables.withdrawals.erasures {
            let sum = erasures.get(timeliness).copied().unwrap_or(zero).sum(*count);
            erasures.insert(*timeliness, sum);
        }
        for (reason, count) in &tables.screening_refusals {
            let sum = refusals.get(reason).copied().unwrap_or(zero).sum(*count);
            refusals.insert(reason.clone(), sum);
        }
        whole = whole.sum(tables.withdrawals.whole);
        partial = partial.sum(tables.withdrawals.partial);
    }
    Ok(MergedTables {
        period: first.period,
        referrals: referrals
            .into_iter()
            .map(|((purpose, partner_country, asylum_linked, outcome), count)| ReferralsCell { purpose, partner_country, asylum_linked, outcome, count })
            .collect(),
        withheld: withheld.into_iter().map(|((category, reason), count)| WithheldCell { category, reason, count }).collect(),
        delivery: parts.iter().map(|(gateway, tables)| (*gateway, tables.delivery.clone())).collect(),
        acknowledgement: parts.iter().map(|(gateway, tables)| (*gateway, tables.acknowledgement.clone())).collect(),
        withdrawals: WithdrawalsTable { whole, partial, erasures },
        screening_refusals: refusals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::statistics::tables::{tables, DecidedReferral, Records};
    use crate::domain::statistics::DisclosureControl;
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    fn released(period: Period, returns_to_gambia: usize) -> Tables {
        let referral = DecidedReferral {
            accepted_at: Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap(),
            purpose: Purpose::Return,
            partner_country: Some(country("GMB")),
            asylum_linked: false,
            outcome: Outcome::Allow,
            withheld: Vec::new(),
        };
        let records = Records { decided: vec![referral; returns_to_gambia], ..Records::default() };
        tables(period, DisclosureControl::default(), Duration::hours(72), &records)
    }

    #[test]
    fn cells_add_up_and_a_suppressed_part_makes_the_sum_a_lower_bound() {
        let november = Period::parse("2026-11").unwrap();
        let merged = merge(&[(country("ITA"), released(november, 12)), (country("ESP"), released(november, 21))]).unwrap();
        assert_eq!(merged.referrals[0].count, Cell::Released { value: 30 });
        let with_few = merge(&[(country("ITA"), released(november, 12)), (country("ESP"), released(november, 3))]).unwrap();
        assert_eq!(with_few.referrals[0].count, Cell::PartlySuppressed { at_least: 10 });
        assert_eq!(with_few.delivery.len(), 2, "times stay per gateway");
        let october = Period::parse("2026-10").unwrap();
        assert_eq!(merge(&[(country("ITA"), released(november, 1)), (country("ESP"), released(october, 1))]), Err(MergeError::PeriodsDiffer(november, october)));
        assert_eq!(merge(&[(country("ITA"), released(november, 1)), (country("ITA"), released(november, 1))]), Err(MergeError::SameGatewayTwice(country("ITA"))));
        assert_eq!(merge(&[]), Err(MergeError::Nothing));
    }

    proptest! {
        /// A merged cell is told whole exactly when every gateway told its
        /// part whole, and is then their sum: never finer than its parts.
        #[test]
        fn a_merge_tells_nothing_its_parts_did_not(counts in prop::collection::vec(0usize..40, 1..5)) {
            let november = Period::parse("2026-11").unwrap();
            let codes = ["ITA", "ESP", "GRC", "MLT", "PRT"];
            let parts: Vec<(CountryCode, Tables)> = counts.iter().zip(codes).map(|(n, code)| (country(code), released(november, *n))).collect();
            let merged = merge(&parts).unwrap();
            let cells: Vec<Cell> = parts.iter().map(|(_, t)| t.referrals.first().map_or(Cell::Released { value: 0 }, |c| c.count)).collect();
            let total = merged.referrals.first().map_or(Cell::Released { value: 0 }, |c| c.count);
            match total {
                Cell::Released { value } => {
                    prop_assert!(cells.iter().all(|c| c.value().is_some()));
                    prop_assert_eq!(value, cells.iter().filter_map(|c| c.value()).sum::<u64>());
                    prop_assert_eq!(value % 5, 0);
                }
                Cell::PartlySuppressed { at_least } => {
                    let zero = Cell::Released { value: 0 };
                    prop_assert!(cells.iter().filter(|c| **c != zero).count() > 1, "more than one gateway had some");
                    prop_assert!(cells.contains(&Cell::Suppressed));
                    prop_assert_eq!(at_least, cells.iter().filter_map(|c| c.value()).sum::<u64>());
                }
                Cell::Suppressed => {
                    // Exactly one gateway had any, fewer than its threshold: told as that gateway told it.
                    prop_assert_eq!(cells.iter().filter(|c| **c == Cell::Suppressed).count(), 1);
                    let zero = Cell::Released { value: 0 };
                    prop_assert!(cells.iter().all(|c| *c == Cell::Suppressed || *c == zero), "the others had none");
                }
            }
        }
    }
}
