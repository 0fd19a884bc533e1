//! The predefined statistics tables of one closed period (issue 20 §2),
//! built from the gateway's own records and released through a
//! [`DisclosureControl`]. No table is broken down by anything a caller
//! chooses, and none by a person's origin state: the partner country is the
//! destination organisation's, as the directory lists it, and an
//! asylum-linked referral is counted with no partner country at all (for a
//! return, the partner country is often the one the person fled).
//!
//! Every event is counted in the period it happened in, and told as it
//! stood when the period ended: nothing later changes a closed period's
//! tables, so one period is never released twice with different counts.
//!
//! Pure: records in, released tables out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Cell, DisclosureControl, Period};
use crate::domain::decision::{DecisionRecord, Outcome, ReasonCode};
use crate::domain::lifecycle::ReferralEvent;
use crate::domain::status::is_reason_code;
use crate::domain::{CountryCode, DataCategory, Purpose};

/// A referral this gateway decided, as the tables see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedReferral {
    pub accepted_at: DateTime<Utc>,
    pub purpose: Purpose,
    /// `None` when the directory did not know the destination.
    pub partner_country: Option<CountryCode>,
    /// Whether the case held anything about asylum, or the firewall acted on
    /// it: such referrals are never counted by partner country.
    pub asylum_linked: bool,
    pub outcome: Outcome,
    /// Each category withheld, with each reason it was withheld for.
    pub withheld: Vec<(DataCategory, ReasonCode)>,
}

impl DecidedReferral {
    /// What the tables need of a stored decision. A referral counts as
    /// asylum-linked when its case held the `asylum` category (sent or
    /// withheld), when an asylum rule withheld anything or denied it, or
    /// when the built-in asylum rule sealed it end to end: a wider net than
    /// the firewall's own test, so that no asylum-linked case slips into a
    /// country's row.
    pub fn from_record(accepted_at: DateTime<Utc>, record: &DecisionRecord, partner_country: Option<CountryCode>) -> Self {
        let asylum_reason = |reason: &ReasonCode| matches!(reason, ReasonCode::AsylumFirewall | ReasonCode::AsylumCategoryToOriginState);
        let asylum_linked = record.sent.contains_key(&DataCategory::Asylum)
            || record.withheld.contains_key(&DataCategory::Asylum)
            || record.deny_reasons.iter().any(asylum_reason)
            || record.withheld.values().flatten().any(|w| asylum_reason(&w.reason))
            || record.end_to_end.as_deref() == Some(crate::domain::sealing::BUILTIN_END_TO_END_RULE);
        let withheld = record.withheld.iter().flat_map(|(category, reasons)| reasons.iter().map(|w| (*category, w.reason))).collect();
        Self { accepted_at, purpose: record.purpose, partner_country, asylum_linked, outcome: record.outcome, withheld }
    }
}

/// One entry of a referral's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub event: ReferralEvent,
    pub at: DateTime<Utc>,
    /// The categories a partial withdrawal, or its erasure, names.
    pub categories: BTreeSet<String>,
}

/// A referral's timeline, for the deliveries, acknowledgements and
/// withdrawals of a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub accepted_at: DateTime<Utc>,
    /// Whether a packet was made for it, so that a peer may hold it.
    pub packet_made: bool,
    /// In the order they were recorded.
    pub steps: Vec<Step>,
}

/// A packet a peer sent that this gateway refused at screening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub at: DateTime<Utc>,
    pub reasons: Vec<String>,
}

/// What the tables of a period are made from. The store gives the
/// referrals accepted in the period, the timelines of those with a step in
/// it (up to its end) and the refusals of it; anything outside is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    pub decided: Vec<DecidedReferral>,
    pub timelines: Vec<Timeline>,
    pub refusals: Vec<Refusal>,
}

/// How the erasure a withdrawal asked for stood when the period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureTimeliness {
    /// No packet had been made: erased here, nothing to erase elsewhere.
    NotNeeded,
    /// The peer confirmed within the erasure deadline.
    ConfirmedInTime,
    /// The peer confirmed, after the deadline.
    ConfirmedLate,
    /// Not confirmed yet, and not yet due.
    Pending,
    /// Not confirmed, and past the deadline.
    Overdue,
}

/// How a receiving gateway records a refusal by an asylum rule (the firewall,
/// or the asylum category to an origin state), whichever it was.
pub const NON_NEGOTIABLE_RULE: &str = "non_negotiable_rule";

/// Granularity of every released time: a percentile is one case's time, told only this coarsely.
pub const TIME_STEP_MINUTES: u64 = 15;

/// The steps that are a recipient's first answer to a referral.
const ACKNOWLEDGEMENTS: &[ReferralEvent] = &[
    ReferralEvent::Accepted,
    ReferralEvent::Declined,
    ReferralEvent::InProgress,
    ReferralEvent::Arrived,
    ReferralEvent::ServicesDelivered,
    ReferralEvent::Closed,
    ReferralEvent::Handover,
];

/// A released count of referrals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReferralsCell {
    pub purpose: Purpose,
    /// `null` for asylum-linked referrals (never counted by country) and
    /// for destinations the directory did not know.
    pub partner_country: Option<CountryCode>,
    pub asylum_linked: bool,
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
    /// Consents withdrawn whole in the period.
    pub whole: Cell,
    /// Consents withdrawn for some categories in the period.
    pub partial: Cell,
    /// Those withdrawals by how their erasure stood at the period's end.
    pub erasures: BTreeMap<ErasureTimeliness, Cell>,
}

/// Everything released about one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tables {
    pub period: Period,
    /// Referrals accepted in the period, by purpose, partner country and outcome.
    pub referrals: Vec<ReferralsCell>,
    /// Of those, the categories withheld, by reason.
    pub withheld: Vec<WithheldCell>,
    /// From acceptance to the receiving gateway's receipt, for referrals delivered in the period.
    pub delivery: Times,
    /// From acceptance to the recipient's first answer, for first answers in the period.
    pub acknowledgement: Times,
    pub withdrawals: WithdrawalsTable,
    /// Packets received from peers and refused at screening in the period, by
    /// reason; refusals by an asylum rule are never counted.
    pub screening_refusals: BTreeMap<String, Cell>,
}

impl Tables {
    /// Every count of the tables.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self.referrals.iter().map(|c| c.count).collect();
        cells.extend(self.withheld.iter().map(|c| c.count));
        cells.extend([self.delivery.count, self.acknowledgement.count, self.withdrawals.whole, self.withdrawals.partial]);
        cells.extend(self.withdrawals.erasures.values().copied());
        cells.extend(self.screening_refusals.values().copied());
        cells
    }

    /// Whether every count is one `control` could have released: a true
    /// zero, suppressed, or a multiple of its base at or above its
    /// threshold; and times only with their released count.
    pub fn could_come_from(&self, control: DisclosureControl) -> bool {
        let cell_ok = |cell: Cell| match cell {
            Cell::Released { value } => value == 0 || (value >= control.threshold() && value % control.rounding_base() == 0),
            Cell::Suppressed => true,
            Cell::PartlySuppressed { .. } => false,
        };
        let times_ok = |times: &Times| {
            let told = times.count.value().is_some_and(|n| n > 0);
            [times.p50_minutes, times.p90_minutes].iter().all(|m| m.is_some() == told && m.is_none_or(|m| m % TIME_STEP_MINUTES == 0))
        };
        self.cells().into_iter().all(cell_ok) && times_ok(&self.delivery) && times_ok(&self.acknowledgement)
    }
}

/// The period's tables, every count released through `control`; an
/// erasure not confirmed within `erasure_deadline` of its withdrawal is
/// late.
pub fn tables(period: Period, control: DisclosureControl, erasure_deadline: chrono::Duration, records: &Records) -> Tables {
    let end = period.end();
    let mut referrals: BTreeMap<(Purpose, Option<CountryCode>, bool, Outcome), u64> = BTreeMap::new();
    let mut withheld: BTreeMap<(DataCategory, ReasonCode), u64> = BTreeMap::new();
    for referral in records.decided.iter().filter(|r| period.contains(r.accepted_at)) {
        let country = if referral.asylum_linked { None } else { referral.partner_country };
        *referrals.entry((referral.purpose, country, referral.asylum_linked, referral.outcome)).or_default() += 1;
        let reasons: BTreeSet<(DataCategory, ReasonCode)> = referral.withheld.iter().copied().collect();
        for pair in reasons {
            *withheld.entry(pair).or_default() += 1;
        }
    }

    let (mut delivered, mut acknowledged) = (Vec::new(), Vec::new());
    let (mut whole, mut partial) = (0, 0);
    let mut erasures: BTreeMap<ErasureTimeliness, u64> = BTreeMap::new();
    for timeline in &records.timelines {
        // As the timeline stood when the period ended.
        let steps: Vec<&Step> = timeline.steps.iter().filter(|s| s.at < end).collect();
        let minutes = |at: DateTime<Utc>| u64::try_from((at - timeline.accepted_at).num_minutes()).unwrap_or(0);
        if let Some(step) = steps.iter().find(|s| s.event == ReferralEvent::Delivered).filter(|s| period.contains(s.at)) {
            delivered.push(minutes(step.at));
        }
        if let Some(step) = steps.iter().find(|s| ACKNOWLEDGEMENTS.contains(&s.event)).filter(|s| period.contains(s.at)) {
            acknowledged.push(minutes(step.at));
        }
        for (index, step) in steps.iter().enumerate().filter(|(_, s)| period.contains(s.at)) {
            let is_whole = step.event == ReferralEvent::Withdrawn;
            if !is_whole && !step.event.records_narrowing() {
                continue;
            }
            if is_whole {
                whole += 1;
            } else {
                partial += 1;
            }
            let later = steps.get(index + 1..).unwrap_or_default();
            *erasures.entry(erasure_timeliness(step, timeline.packet_made, later, erasure_deadline, end)).or_default() += 1;
        }
    }

    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for refusal in records.refusals.iter().filter(|r| period.contains(r.at)) {
        // A refusal by an asylum rule is never counted: the gateway that
        // refused is in the person's origin state, so its count would be one
        // of asylum-linked people by origin state.
        let reasons: BTreeSet<&String> = refusal.reasons.iter().filter(|r| is_reason_code(r) && r.as_str() != NON_NEGOTIABLE_RULE).collect();
        for reason in reasons {
            *refused.entry(reason.clone()).or_default() += 1;
        }
    }

    Tables {
        period,
        referrals: referrals
            .into_iter()
            .map(|((purpose, partner_country, asylum_linked, outcome), n)| ReferralsCell {
                purpose,
                partner_country,
                asylum_linked,
                outcome,
                count: control.release(n),
            })
            .collect(),
        withheld: withheld.into_iter().map(|((category, reason), n)| WithheldCell { category, reason, count: control.release(n) }).collect(),
        delivery: times(control, delivered),
        acknowledgement: times(control, acknowledged),
        withdrawals: WithdrawalsTable {
            whole: control.release(whole),
            partial: control.release(partial),
            erasures: erasures.into_iter().map(|(timeliness, n)| (timeliness, control.release(n))).collect(),
        },
        screening_refusals: refused.into_iter().map(|(reason, n)| (reason, control.release(n))).collect(),
    }
}

/// How the erasure `withdrawal` asked for stood at `end`, from the steps
/// after it: the receiving gateway's erasure, or its organisation's, of the
/// whole case or (for a partial withdrawal) of at least its categories.
fn erasure_timeliness(withdrawal: &Step, packet_made: bool, later: &[&Step], deadline: chrono::Duration, end: DateTime<Utc>) -> ErasureTimeliness {
    let partial = withdrawal.event.records_narrowing();
    let packet_left = if partial { withdrawal.event == ReferralEvent::ConsentNarrowed } else { packet_made };
    if !packet_left {
        return ErasureTimeliness::NotNeeded;
    }
    let due = withdrawal.at.checked_add_signed(deadline).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let confirms = |step: &&&Step| {
        if partial {
            matches!(step.event, ReferralEvent::NarrowedAtGateway | ReferralEvent::NarrowingConfirmed) && withdrawal.categories.is_subset(&step.categories)
        } else {
            matches!(step.event, ReferralEvent::ErasedAtGateway | ReferralEvent::ErasureConfirmed)
        }
    };
    match later.iter().find(confirms) {
        Some(step) if step.at <= due => ErasureTimeliness::ConfirmedInTime,
        Some(_) => ErasureTimeliness::ConfirmedLate,
        None if end >= due => ErasureTimeliness::Overdue,
        None => ErasureTimeliness::Pending,
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
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn november() -> Period {
        Period::parse("2026-11").unwrap()
    }

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    const DEADLINE: Duration = Duration::hours(72);

    fn referral(purpose: Purpose, country: &str, outcome: Outcome) -> DecidedReferral {
        DecidedReferral {
            accepted_at: at(2, 9),
            purpose,
            partner_country: Some(CountryCode::parse(country).unwrap()),
            asylum_linked: false,
            outcome,
            withheld: vec![(DataCategory::Health, ReasonCode::PolicyNoPermit)],
        }
    }

    fn step(event: ReferralEvent, at: DateTime<Utc>) -> Step {
        Step { event, at, categories: BTreeSet::new() }
    }

    fn timeline(steps: Vec<Step>) -> Timeline {
        Timeline { accepted_at: at(2, 9), packet_made: true, steps }
    }

    #[test]
    fn small_groups_are_suppressed_and_large_ones_rounded() {
        let mut decided = vec![referral(Purpose::Return, "GMB", Outcome::Allow); 23];
        decided.extend(vec![referral(Purpose::Return, "GMB", Outcome::Deny); 3]);
        let delivered = timeline(vec![step(ReferralEvent::Queued, at(2, 9)), step(ReferralEvent::Delivered, at(2, 10))]);
        let refusal = Refusal { at: at(3, 0), reasons: vec!["recipient_not_served_here".into()] };
        let asylum = Refusal { at: at(3, 0), reasons: vec!["non_negotiable_rule".into()] };
        let records = Records { decided, timelines: vec![delivered; 23], refusals: [vec![refusal], vec![asylum; 20]].concat() };
        let released = tables(november(), DisclosureControl::default(), DEADLINE, &records);
        let cells: Vec<(Outcome, Cell)> = released.referrals.iter().map(|c| (c.outcome, c.count)).collect();
        assert_eq!(cells, [(Outcome::Allow, Cell::Released { value: 25 }), (Outcome::Deny, Cell::Suppressed)]);
        assert_eq!(released.withheld[0].count, Cell::Released { value: 25 }, "26 referrals withheld health");
        assert_eq!(released.delivery, Times { count: Cell::Released { value: 25 }, p50_minutes: Some(60), p90_minutes: Some(60) });
        assert_eq!(released.acknowledgement, Times { count: Cell::Released { value: 0 }, p50_minutes: None, p90_minutes: None });
        assert_eq!(released.screening_refusals["recipient_not_served_here"], Cell::Suppressed);
        assert!(!released.screening_refusals.contains_key("non_negotiable_rule"), "a receiving gateway's asylum refusals are by origin state");
        // Three deliveries: neither their number nor their times are released.
        let few = Records { timelines: records.timelines[..3].to_vec(), ..Records::default() };
        assert_eq!(tables(november(), DisclosureControl::default(), DEADLINE, &few).delivery, Times { count: Cell::Suppressed, p50_minutes: None, p90_minutes: None });
    }

    #[test]
    fn asylum_linked_referrals_are_never_counted_by_country() {
        let mut linked = referral(Purpose::Return, "NGA", Outcome::Allow);
        linked.asylum_linked = true;
        let released = tables(november(), DisclosureControl::default(), DEADLINE, &Records { decided: vec![linked; 12], ..Records::default() });
        assert_eq!(released.referrals.len(), 1);
        assert_eq!((released.referrals[0].partner_country, released.referrals[0].asylum_linked), (None, true));
        // Told from a stored decision: the asylum category, held back or sent, is enough.
        let record: DecisionRecord = serde_json::from_value(serde_json::json!({
            "outcome": "allow", "purpose": "return", "policy_version": "sha256:x",
            "sent": { "identity": { "fields": "all", "permitted_by": ["p"] } },
            "withheld": { "asylum": [{ "reason": "not_needed_for_purpose" }] }
        }))
        .unwrap();
        assert!(DecidedReferral::from_record(at(2, 9), &record, None).asylum_linked);
        let plain: DecisionRecord = serde_json::from_value(serde_json::json!({
            "outcome": "deny", "purpose": "return", "policy_version": "sha256:x", "deny_reasons": ["required_category_missing"],
            "sent": {}, "withheld": { "health": [{ "reason": "policy_no_permit" }] }
        }))
        .unwrap();
        let decided = DecidedReferral::from_record(at(2, 9), &plain, None);
        assert!(!decided.asylum_linked);
        assert_eq!(decided.withheld, [(DataCategory::Health, ReasonCode::PolicyNoPermit)]);
        let firewall: DecisionRecord = serde_json::from_value(serde_json::json!({
            "outcome": "deny", "purpose": "return", "policy_version": "sha256:x", "deny_reasons": ["asylum_firewall"],
            "sent": {}, "withheld": {}
        }))
        .unwrap();
        assert!(DecidedReferral::from_record(at(2, 9), &firewall, None).asylum_linked);
    }

    #[test]
    fn each_erasure_is_told_as_it_stood_when_the_period_ended() {
        use ReferralEvent::*;
        let timeliness = |packet_made: bool, steps: Vec<Step>| {
            let one = Timeline { accepted_at: at(1, 0), packet_made, steps };
            let released = tables(november(), DisclosureControl::new(5, 5).unwrap(), DEADLINE, &Records { timelines: vec![one; 5], ..Records::default() });
            let stood: Vec<ErasureTimeliness> = released.withdrawals.erasures.into_keys().collect();
            (stood, released.withdrawals.whole.value(), released.withdrawals.partial.value())
        };
        let withdrawn = at(10, 0);
        assert_eq!(timeliness(false, vec![step(Withdrawn, withdrawn)]), (vec![ErasureTimeliness::NotNeeded], Some(5), Some(0)));
        assert_eq!(timeliness(true, vec![step(Withdrawn, withdrawn), step(ErasedAtGateway, at(12, 0))]).0, [ErasureTimeliness::ConfirmedInTime]);
        assert_eq!(timeliness(true, vec![step(Withdrawn, withdrawn), step(ErasureConfirmed, at(13, 1))]).0, [ErasureTimeliness::ConfirmedLate]);
        assert_eq!(timeliness(true, vec![step(Withdrawn, withdrawn), step(WithdrawalDelivered, at(10, 1))]).0, [ErasureTimeliness::Overdue]);
        // Withdrawn a day before the end: not due yet; confirmed after the end: not known then.
        let late = at(29, 0);
        assert_eq!(timeliness(true, vec![step(Withdrawn, late), step(ErasedAtGateway, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())]).0, [ErasureTimeliness::Pending]);
        // A partial withdrawal is confirmed only by an erasure of at least its categories.
        let health: BTreeSet<String> = ["health".to_owned()].into();
        let narrowed = Step { event: ConsentNarrowed, at: withdrawn, categories: health.clone() };
        let other = Step { event: NarrowedAtGateway, at: at(10, 5), categories: ["contact".to_owned()].into() };
        assert_eq!(timeliness(true, vec![narrowed.clone(), other.clone()]), (vec![ErasureTimeliness::Overdue], Some(0), Some(5)));
        let own = Step { event: NarrowingConfirmed, at: at(11, 0), categories: health.clone() };
        assert_eq!(timeliness(true, vec![narrowed, other, own]).0, [ErasureTimeliness::ConfirmedInTime]);
        let before_sending = Step { event: ConsentNarrowedBeforeSending, at: withdrawn, categories: health };
        assert_eq!(timeliness(true, vec![before_sending]).0, [ErasureTimeliness::NotNeeded]);
        // A withdrawal of October is not November's, though its erasure is late in November.
        assert_eq!(timeliness(true, vec![step(Withdrawn, at(1, 0) - Duration::days(2)), step(ErasedAtGateway, at(10, 0))]), (vec![], Some(0), Some(0)));
    }

    #[test]
    fn deliveries_and_first_answers_count_in_the_period_they_happen() {
        use ReferralEvent::*;
        let october = Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap();
        let one = Timeline {
            accepted_at: october,
            packet_made: true,
            steps: vec![step(Queued, october), step(Delivered, at(1, 1)), step(Accepted, at(3, 2)), step(InProgress, at(5, 0))],
        };
        let released = tables(november(), DisclosureControl::new(5, 5).unwrap(), DEADLINE, &Records { timelines: vec![one.clone(); 5], ..Records::default() });
        assert_eq!(released.delivery, Times { count: Cell::Released { value: 5 }, p50_minutes: Some(120), p90_minutes: Some(120) });
        assert_eq!(released.acknowledgement.p50_minutes, Some(51 * 60), "the first answer, not a later one");
        assert!(released.referrals.is_empty(), "accepted in October");
        let answered_in_october = Timeline { steps: vec![step(Accepted, october), step(InProgress, at(5, 0))], ..one };
        let released = tables(november(), DisclosureControl::new(5, 5).unwrap(), DEADLINE, &Records { timelines: vec![answered_in_october; 5], ..Records::default() });
        assert_eq!(released.acknowledgement.count, Cell::Released { value: 0 });
    }

    fn quarter() -> Period {
        Period::parse("2026-Q4").unwrap()
    }

    /// Referrals and timelines spread over the fourth quarter of 2026 and a little either side.
    fn records() -> impl Strategy<Value = Records> {
        let start = quarter().start() - Duration::days(10);
        let instant = move || (0i64..(110 * 24 * 60)).prop_map(move |minutes| start + Duration::minutes(minutes));
        let decided = (
            instant(),
            prop::sample::select(Purpose::ALL),
            prop::sample::select(vec!["GMB", "NGA", "ETH"]),
            any::<bool>(),
            any::<bool>(),
            prop::sample::subsequence(vec![(DataCategory::Contact, ReasonCode::ConsentNotGiven), (DataCategory::Asylum, ReasonCode::AsylumCategoryToOriginState)], 0..=2),
        )
            .prop_map(|(accepted_at, purpose, country, allowed, asylum_linked, withheld)| DecidedReferral {
                accepted_at,
                purpose,
                partner_country: Some(CountryCode::parse(country).unwrap()),
                asylum_linked,
                outcome: if allowed { Outcome::Allow } else { Outcome::Deny },
                withheld,
            });
        let events = prop::sample::select(vec![
            ReferralEvent::Delivered,
            ReferralEvent::Accepted,
            ReferralEvent::InProgress,
            ReferralEvent::Withdrawn,
            ReferralEvent::ConsentNarrowed,
            ReferralEvent::ErasedAtGateway,
            ReferralEvent::NarrowedAtGateway,
        ]);
        let timeline = (instant(), any::<bool>(), prop::collection::vec((events, 0i64..(40 * 24 * 60)), 0..5)).prop_map(|(accepted_at, packet_made, steps)| {
            let mut steps: Vec<Step> = steps.into_iter().map(|(event, after)| Step { event, at: accepted_at + Duration::minutes(after), categories: ["contact".to_owned()].into() }).collect();
            steps.sort_by_key(|s| s.at);
            Timeline { accepted_at, packet_made, steps }
        });
        let refusal = (instant(), prop::sample::select(vec!["non_negotiable_rule", "consent_withdrawn", "Not A Code"]))
            .prop_map(|(at, reason)| Refusal { at, reasons: vec![reason.to_owned()] });
        (prop::collection::vec(decided, 0..80), prop::collection::vec(timeline, 0..60), prop::collection::vec(refusal, 0..30))
            .prop_map(|(decided, timelines, refusals)| Records { decided, timelines, refusals })
    }

    /// Every released cell of `tables`, by where it sits.
    fn cells(tables: &Tables) -> BTreeMap<String, u64> {
        let mut cells = BTreeMap::new();
        collect_counts(&serde_json::to_value(tables).unwrap(), String::new(), &mut cells);
        cells
    }

    /// Every `"value"` of a released cell in `json`, keyed by its path (array
    /// items by their other members, so that the same row of two tables
    /// shares a key).
    fn collect_counts(json: &serde_json::Value, path: String, cells: &mut BTreeMap<String, u64>) {
        match json {
            serde_json::Value::Object(map) => {
                if map.get("flag").and_then(|f| f.as_str()) == Some("released") {
                    cells.extend(map.get("value").and_then(serde_json::Value::as_u64).map(|v| (path.clone(), v)));
                }
                for (key, value) in map {
                    collect_counts(value, format!("{path}/{key}"), cells);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    let mut row = item.clone();
                    if let Some(row) = row.as_object_mut() {
                        row.remove("count");
                    }
                    collect_counts(item, format!("{path}[{row}]"), cells);
                }
            }
            _ => {}
        }
    }

    proptest! {
        /// No released cell of any table is a count under the threshold,
        /// and every released count is a multiple of the rounding base.
        #[test]
        fn no_table_releases_a_small_count(records in records(), base in 5u64..12, threshold in 5u64..15) {
            let control = DisclosureControl::new(base, threshold).unwrap();
            for period in [quarter(), november()] {
                let released = tables(period, control, DEADLINE, &records);
                for (cell, value) in cells(&released) {
                    prop_assert!(value == 0 || value >= control.threshold(), "{cell}: {value} released");
                    prop_assert_eq!(value % control.rounding_base(), 0, "{}", cell);
                }
                prop_assert!(released.could_come_from(control));
                for times in [&released.delivery, &released.acknowledgement] {
                    prop_assert_eq!(times.p50_minutes.is_some(), times.count.value().is_some_and(|n| n > 0));
                    prop_assert!(times.p50_minutes.is_none_or(|m| m % TIME_STEP_MINUTES == 0));
                }
            }
        }

        /// The tables of two overlapping periods (a quarter and one of its
        /// months) never differ, cell for cell, by a single case: any
        /// difference is zero or a whole rounding base. (It follows from the
        /// rounding; what it does not cover, combining several cells to
        /// narrow a suppressed one, is in threat-model.md §4.15.)
        #[test]
        fn overlapping_periods_never_differ_by_one_case(records in records()) {
            let control = DisclosureControl::default();
            let whole = cells(&tables(quarter(), control, DEADLINE, &records));
            for month in quarter().months() {
                let part = cells(&tables(month, control, DEADLINE, &records));
                for (cell, value) in part.iter().map(|(c, v)| (c.replacen(&month.to_string(), "", 1), *v)) {
                    if let Some(other) = whole.iter().find(|(c, _)| c.replacen("2026-Q4", "", 1) == cell).map(|(_, v)| *v) {
                        let difference = value.abs_diff(other);
                        prop_assert!(difference == 0 || difference >= control.rounding_base(), "{cell}: {value} against {other}");
                    }
                }
            }
        }

        /// One referral more never shows as one: every cell moves by a whole base or not at all.
        #[test]
        fn one_case_more_never_shows_as_one(records in records(), extra in records()) {
            prop_assume!(!extra.decided.is_empty() && !extra.timelines.is_empty());
            let control = DisclosureControl::default();
            let mut with_one = records.clone();
            with_one.decided.push(extra.decided[0].clone());
            with_one.timelines.push(extra.timelines[0].clone());
            let (before, after) = (cells(&tables(quarter(), control, DEADLINE, &records)), cells(&tables(quarter(), control, DEADLINE, &with_one)));
            for (cell, value) in &after {
                if let Some(earlier) = before.get(cell) {
                    prop_assert!(value == earlier || value.abs_diff(*earlier) >= control.rounding_base(), "{cell}");
                }
            }
        }

        /// A closed period's tables never change: whatever happens after its
        /// end (an erasure confirmed, a late answer) leaves them as they were.
        #[test]
        fn nothing_after_the_end_changes_a_period(records in records(), later in records()) {
            let mut grown = records.clone();
            let end = november().end();
            for (timeline, more) in grown.timelines.iter_mut().zip(&later.timelines) {
                timeline.steps.extend(more.steps.iter().cloned().map(|mut s| { s.at = s.at.max(end); s }));
            }
            grown.refusals.extend(later.refusals.iter().cloned().map(|mut r| { r.at = r.at.max(end); r }));
            grown.decided.extend(later.decided.iter().cloned().map(|mut d| { d.accepted_at = d.accepted_at.max(end); d }));
            let control = DisclosureControl::default();
            prop_assert_eq!(tables(november(), control, DEADLINE, &records), tables(november(), control, DEADLINE, &grown));
        }

        /// An asylum-linked referral's partner country changes nothing released.
        #[test]
        fn the_country_of_an_asylum_linked_referral_is_never_told(records in records(), country in prop::sample::select(vec!["GMB", "NGA", "ITA"])) {
            let mut moved = records.clone();
            for referral in moved.decided.iter_mut().filter(|r| r.asylum_linked) {
                referral.partner_country = Some(CountryCode::parse(country).unwrap());
            }
            let control = DisclosureControl::default();
            let released = tables(quarter(), control, DEADLINE, &records);
            prop_assert!(released.referrals.iter().all(|c| !c.asylum_linked || c.partner_country.is_none()));
            prop_assert_eq!(released, tables(quarter(), control, DEADLINE, &moved));
        }
    }
}
