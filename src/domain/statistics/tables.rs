//! The predefined statistics tables of one closed period (issue 20 §2),
//! built from the gateway's own records of that period and released through
//! a [`DisclosureControl`]. No table is broken down by anything a caller
//! chooses, and none by a person's origin state: the partner country is
//! the destination organisation's, as the directory lists it.
//!
//! Pure: records in, released tables out.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Cell, DisclosureControl, Period};
use crate::domain::decision::{Outcome, ReasonCode};
use crate::domain::{CountryCode, DataCategory, Purpose};

/// One referral this gateway decided in the period, as the tables see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedReferral {
    pub purpose: Purpose,
    /// `None` when the directory did not know the destination.
    pub partner_country: Option<CountryCode>,
    pub outcome: Outcome,
    /// Each category withheld, with each reason it was withheld for.
    pub withheld: Vec<(DataCategory, ReasonCode)>,
    /// Minutes from acceptance to the receiving gateway's receipt, if delivered.
    pub delivered_after_minutes: Option<u64>,
    /// Minutes from acceptance to the recipient's first acknowledgement or progress report, if any.
    pub acknowledged_after_minutes: Option<u64>,
}

/// How an erasure a withdrawal asked for came out, by the end of the period's release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureTimeliness {
    /// Nothing had reached the peer: erased here only.
    NotNeeded,
    ConfirmedInTime,
    ConfirmedLate,
    Outstanding,
}

/// Granularity of every released time: a percentile is one case's time, told only this coarsely.
pub const TIME_STEP_MINUTES: u64 = 15;

/// A released count of referrals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReferralsCell {
    pub purpose: Purpose,
    /// `null`: the destination was not in the directory.
    pub partner_country: Option<CountryCode>,
    pub outcome: Outcome,
    pub count: Cell,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WithheldCell {
    pub category: DataCategory,
    pub reason: ReasonCode,
    /// Referrals in which the category was withheld for that reason.
    pub count: Cell,
}

/// Percentiles of a time, in minutes rounded to [`TIME_STEP_MINUTES`];
/// released only when `count` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Times {
    pub count: Cell,
    pub p50_minutes: Option<u64>,
    pub p90_minutes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WithdrawalsTable {
    pub whole: Cell,
    pub partial: Cell,
    pub erasures: BTreeMap<ErasureTimeliness, Cell>,
}

/// Everything released about one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tables {
    pub period: Period,
    pub referrals: Vec<ReferralsCell>,
    pub withheld: Vec<WithheldCell>,
    pub delivery: Times,
    pub acknowledgement: Times,
    pub withdrawals: WithdrawalsTable,
    /// Packets received from peers and refused at screening, by reason.
    pub screening_refusals: BTreeMap<ReasonCode, Cell>,
}

/// A withdrawal made in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawal {
    pub whole: bool,
    pub erasure: ErasureTimeliness,
}

/// The period's tables, every count released through `control`.
pub fn tables(
    period: Period,
    control: DisclosureControl,
    decided: &[DecidedReferral],
    withdrawals: &[Withdrawal],
    refusals: &[ReasonCode],
) -> Tables {
    let mut referrals: BTreeMap<(Purpose, Option<CountryCode>, Outcome), u64> = BTreeMap::new();
    let mut withheld: BTreeMap<(DataCategory, ReasonCode), u64> = BTreeMap::new();
    for referral in decided {
        *referrals.entry((referral.purpose, referral.partner_country, referral.outcome)).or_default() += 1;
        let mut reasons = referral.withheld.clone();
        reasons.sort();
        reasons.dedup();
        for pair in reasons {
            *withheld.entry(pair).or_default() += 1;
        }
    }
    let mut erasures: BTreeMap<ErasureTimeliness, u64> = BTreeMap::new();
    for withdrawal in withdrawals {
        *erasures.entry(withdrawal.erasure).or_default() += 1;
    }
    let mut refused: BTreeMap<ReasonCode, u64> = BTreeMap::new();
    for reason in refusals {
        *refused.entry(*reason).or_default() += 1;
    }
    let count = |n: usize| control.release(n as u64);
    Tables {
        period,
        referrals: referrals
            .into_iter()
            .map(|((purpose, partner_country, outcome), n)| ReferralsCell { purpose, partner_country, outcome, count: control.release(n) })
            .collect(),
        withheld: withheld.into_iter().map(|((category, reason), n)| WithheldCell { category, reason, count: control.release(n) }).collect(),
        delivery: times(control, decided.iter().filter_map(|r| r.delivered_after_minutes).collect()),
        acknowledgement: times(control, decided.iter().filter_map(|r| r.acknowledged_after_minutes).collect()),
        withdrawals: WithdrawalsTable {
            whole: count(withdrawals.iter().filter(|w| w.whole).count()),
            partial: count(withdrawals.iter().filter(|w| !w.whole).count()),
            erasures: erasures.into_iter().map(|(timeliness, n)| (timeliness, control.release(n))).collect(),
        },
        screening_refusals: refused.into_iter().map(|(reason, n)| (reason, control.release(n))).collect(),
    }
}

/// Percentiles of `minutes`, released only when their count is.
fn times(control: DisclosureControl, mut minutes: Vec<u64>) -> Times {
    let count = control.release(minutes.len() as u64);
    if count.value().is_none_or(|released| released == 0) {
        return Times { count, p50_minutes: None, p90_minutes: None };
    }
    minutes.sort_unstable();
    // Nearest rank.
    let percentile = |p: u64| {
        let rank = (p * minutes.len() as u64).div_ceil(100).max(1);
        let value = minutes.get(usize::try_from(rank - 1).unwrap_or(usize::MAX)).copied().unwrap_or(0);
        (value + TIME_STEP_MINUTES / 2) / TIME_STEP_MINUTES * TIME_STEP_MINUTES
    };
    Times { count, p50_minutes: Some(percentile(50)), p90_minutes: Some(percentile(90)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn period() -> Period {
        Period::parse("2026-11").unwrap()
    }

    fn referral(purpose: Purpose, country: &str, outcome: Outcome) -> DecidedReferral {
        DecidedReferral {
            purpose,
            partner_country: Some(CountryCode::parse(country).unwrap()),
            outcome,
            withheld: vec![(DataCategory::Health, ReasonCode::PolicyNoPermit)],
            delivered_after_minutes: (outcome == Outcome::Allow).then_some(7),
            acknowledged_after_minutes: None,
        }
    }

    #[test]
    fn small_groups_are_suppressed_and_large_ones_rounded() {
        let mut decided = vec![referral(Purpose::Return, "GMB", Outcome::Allow); 23];
        decided.extend(vec![referral(Purpose::Return, "GMB", Outcome::Deny); 3]);
        let released = tables(period(), DisclosureControl::default(), &decided, &[], &[ReasonCode::AsylumFirewall]);
        let cells: Vec<(Outcome, Cell)> = released.referrals.iter().map(|c| (c.outcome, c.count)).collect();
        assert_eq!(cells, [(Outcome::Allow, Cell::Released { value: 25 }), (Outcome::Deny, Cell::Suppressed)]);
        assert_eq!(released.withheld[0].count, Cell::Released { value: 25 }, "26 referrals withheld health");
        assert_eq!(released.delivery, Times { count: Cell::Released { value: 25 }, p50_minutes: Some(0), p90_minutes: Some(0) });
        assert_eq!(released.acknowledgement, Times { count: Cell::Released { value: 0 }, p50_minutes: None, p90_minutes: None });
        assert_eq!(released.screening_refusals[&ReasonCode::AsylumFirewall], Cell::Suppressed);
        // Three deliveries: neither their number nor their times are released.
        let few = tables(period(), DisclosureControl::default(), &decided[..3], &[], &[]);
        assert_eq!(few.delivery, Times { count: Cell::Suppressed, p50_minutes: None, p90_minutes: None });
    }

    fn decided() -> impl Strategy<Value = Vec<DecidedReferral>> {
        let one = (
            prop::sample::select(Purpose::ALL),
            prop::sample::select(vec!["GMB", "NGA", "ETH"]),
            prop::bool::ANY,
            prop::option::of(0u64..5_000),
        )
            .prop_map(|(purpose, country, allowed, delivered)| DecidedReferral {
                purpose,
                partner_country: Some(CountryCode::parse(country).unwrap()),
                outcome: if allowed { Outcome::Allow } else { Outcome::Deny },
                withheld: vec![(DataCategory::Contact, ReasonCode::ConsentNotGiven)],
                delivered_after_minutes: delivered.filter(|_| allowed),
                acknowledged_after_minutes: None,
            });
        prop::collection::vec(one, 0..60)
    }

    proptest! {
        /// No released cell of any table is a count under the threshold,
        /// and every released count is a multiple of the rounding base.
        #[test]
        fn no_table_releases_a_small_count(decided in decided()) {
            let control = DisclosureControl::default();
            let released = tables(period(), control, &decided, &[], &[]);
            let json = serde_json::to_value(&released).unwrap();
            let mut values = Vec::new();
            collect_counts(&json, &mut values);
            prop_assert!(!values.is_empty());
            for value in values {
                prop_assert!(value == 0 || value >= control.threshold(), "{value} released");
                prop_assert_eq!(value % control.rounding_base(), 0);
            }
            prop_assert!(released.delivery.p50_minutes.is_none_or(|m| m % TIME_STEP_MINUTES == 0));
        }

        /// Adding or removing one referral changes any released cell by a
        /// whole base or not at all: never by a single case.
        #[test]
        fn one_case_more_never_shows_as_one(decided in decided(), extra in decided()) {
            prop_assume!(!extra.is_empty());
            let control = DisclosureControl::default();
            let mut with_one = decided.clone();
            with_one.push(extra[0].clone());
            let (before, after) = (tables(period(), control, &decided, &[], &[]), tables(period(), control, &with_one, &[], &[]));
            for cell in &after.referrals {
                let earlier = before.referrals.iter().find(|c| (c.purpose, c.partner_country, c.outcome) == (cell.purpose, cell.partner_country, cell.outcome));
                if let (Some(x), Some(Some(y))) = (cell.count.value(), earlier.map(|c| c.count.value())) {
                    prop_assert!(x == y || x.abs_diff(y) >= control.rounding_base());
                }
            }
        }
    }

    /// Every `"value"` of a released cell in `json`.
    fn collect_counts(json: &serde_json::Value, values: &mut Vec<u64>) {
        match json {
            serde_json::Value::Object(map) => {
                if map.get("flag").and_then(|f| f.as_str()) == Some("released") {
                    values.extend(map.get("value").and_then(serde_json::Value::as_u64));
                }
                map.values().for_each(|v| collect_counts(v, values));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_counts(v, values)),
            _ => {}
        }
    }
}
