//! A person's consent withdrawn, whole or in part: which referrals it
//! reaches and how far ([`reach`]), and what crosses a border because of it:
//! the sender's `withdrawal` notice naming the referral packet to erase (all
//! of it, or some categories), and the receiver's `erasure_confirmation`.
//! Packet ids and category names only: nothing personal.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{DataCategory, OrgId, Purpose};
use super::lifecycle::ReferralEvent;

/// What a person withdraws consent for: the referrals of these purposes, to
/// these recipients, and within them these categories. A filter left out
/// reaches everything; with none, the consent is withdrawn whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WithdrawalScope {
    purposes: Option<BTreeSet<Purpose>>,
    recipients: Option<BTreeSet<OrgId>>,
    categories: Option<BTreeSet<DataCategory>>,
}

/// Why a scope was not built: a filter given but naming nothing would
/// withdraw nothing, which is never what a person asking to withdraw means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a filter of a consent withdrawal names nothing")]
pub struct EmptyFilter;

impl WithdrawalScope {
    /// Everything: the consent withdrawn whole.
    pub fn whole() -> Self {
        Self::default()
    }

    pub fn new(
        purposes: Option<BTreeSet<Purpose>>,
        recipients: Option<BTreeSet<OrgId>>,
        categories: Option<BTreeSet<DataCategory>>,
    ) -> Result<Self, EmptyFilter> {
        let empty = purposes.as_ref().is_some_and(BTreeSet::is_empty)
            || recipients.as_ref().is_some_and(BTreeSet::is_empty)
            || categories.as_ref().is_some_and(BTreeSet::is_empty);
        if empty {
            return Err(EmptyFilter);
        }
        Ok(Self { purposes, recipients, categories })
    }
}

/// A referral as sent: what a withdrawal is measured against.
#[derive(Debug, Clone, Copy)]
pub struct SentReferral<'a> {
    pub purpose: Purpose,
    pub recipient: &'a OrgId,
    /// The categories sent and not withdrawn before.
    pub held: &'a BTreeSet<DataCategory>,
}

/// How far a withdrawal reaches into one referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Outside the scope, or nothing of it left to withdraw.
    Untouched,
    /// All that is still held: the referral is withdrawn whole.
    Whole,
    /// Some of the categories still held (never empty, never all of them):
    /// only these are erased; the rest stays shared.
    Categories(BTreeSet<DataCategory>),
}

/// How far `scope` reaches into `referral`: narrowing a consent withdraws
/// the removed part only, and removing every category still held is a whole
/// withdrawal.
pub fn reach(scope: &WithdrawalScope, referral: SentReferral<'_>) -> Reach {
    let purpose_in = scope.purposes.as_ref().is_none_or(|p| p.contains(&referral.purpose));
    let recipient_in = scope.recipients.as_ref().is_none_or(|r| r.contains(referral.recipient));
    if !purpose_in || !recipient_in {
        return Reach::Untouched;
    }
    let Some(categories) = &scope.categories else {
        return Reach::Whole;
    };
    let withdrawn: BTreeSet<DataCategory> = referral.held.intersection(categories).copied().collect();
    if withdrawn.is_empty() {
        Reach::Untouched
    } else if withdrawn.len() == referral.held.len() {
        Reach::Whole
    } else {
        Reach::Categories(withdrawn)
    }
}

/// The body of a `withdrawal` packet: erase what came in this referral
/// packet; all of it, or only `categories` when they are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalNotice {
    pub in_reply_to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<BTreeSet<DataCategory>>,
}

impl WithdrawalNotice {
    /// A notice naming an empty set of categories is malformed: it would ask
    /// to erase nothing, or (read as "all") more than was meant.
    pub fn is_well_formed(&self) -> bool {
        self.categories.as_ref().is_none_or(|c| !c.is_empty())
    }
}

/// Who has erased the data of a referral packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasedBy {
    /// The receiving gateway: its case key destroyed, its copy unreadable.
    Gateway,
    /// The recipient organisation, which says it erased what it was given.
    Organisation,
}

impl ErasedBy {
    /// The entry it makes in the sending gateway's timeline, for an erasure
    /// of the whole referral or (`partial`) of some of its categories.
    pub const fn timeline_status(self, partial: bool) -> ReferralEvent {
        match (self, partial) {
            (Self::Gateway, false) => ReferralEvent::ErasedAtGateway,
            (Self::Organisation, false) => ReferralEvent::ErasureConfirmed,
            (Self::Gateway, true) => ReferralEvent::NarrowedAtGateway,
            (Self::Organisation, true) => ReferralEvent::NarrowingConfirmed,
        }
    }
}

/// The body of an `erasure_confirmation` packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureNotice {
    /// The referral packet whose data was erased.
    pub in_reply_to: String,
    pub erased_by: ErasedBy,
    /// Only these categories were erased; the rest of the case stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<BTreeSet<DataCategory>>,
    /// For a case sealed end to end, whose gateway cannot read which
    /// categories a withdrawal names: the withdrawal packets whose part was
    /// erased. The sender knows the categories of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawals: Option<BTreeSet<String>>,
}

/// Most withdrawal packets one erasure confirmation may name.
pub const MAX_CONFIRMED_WITHDRAWALS: usize = 64;

impl ErasureNotice {
    /// Whole, or a part named one way: by at least one category, or by
    /// 1 to [`MAX_CONFIRMED_WITHDRAWALS`] withdrawal packets.
    pub fn is_well_formed(&self) -> bool {
        match (&self.categories, &self.withdrawals) {
            (None, None) => true,
            (Some(categories), None) => !categories.is_empty(),
            (None, Some(withdrawals)) => !withdrawals.is_empty() && withdrawals.len() <= MAX_CONFIRMED_WITHDRAWALS,
            (Some(_), Some(_)) => false,
        }
    }

    /// Whether only part of the case was erased.
    pub fn is_partial(&self) -> bool {
        self.categories.is_some() || self.withdrawals.is_some()
    }
}

/// Where the erasure a withdrawal asked for stands, as the sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureState {
    /// No packet had been made: nothing left this gateway, nothing to erase elsewhere.
    NothingSent,
    /// The withdrawal is on its way or awaits the peer's confirmation.
    Requested,
    ErasedAtGateway,
    /// The recipient organisation confirmed it erased its copy too.
    Confirmed,
    /// The receiving gateway has not confirmed its erasure by the deadline.
    Overdue,
}

/// What the sender shows of an erasure: its state and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureProgress {
    pub state: ErasureState,
    pub due_by: Option<chrono::DateTime<chrono::Utc>>,
}

/// The erasure after a withdrawal at `withdrawn_at` (of some categories
/// only when `partial`): `packet_left` when a packet had been made for the
/// referral (so the peer may hold it), `steps` the referral's timeline
/// statuses since the withdrawal. Overdue once `deadline` has passed without
/// the receiving gateway's confirmation; the organisation's comes on top and
/// does not decide it.
pub fn erasure_progress(
    withdrawn_at: chrono::DateTime<chrono::Utc>,
    partial: bool,
    packet_left: bool,
    steps: &[ReferralEvent],
    deadline: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> ErasureProgress {
    if !packet_left {
        return ErasureProgress { state: ErasureState::NothingSent, due_by: None };
    }
    let due_by = withdrawn_at.checked_add_signed(deadline).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let state = if steps.contains(&ErasedBy::Organisation.timeline_status(partial)) {
        ErasureState::Confirmed
    } else if steps.contains(&ErasedBy::Gateway.timeline_status(partial)) {
        ErasureState::ErasedAtGateway
    } else if now >= due_by {
        ErasureState::Overdue
    } else {
        ErasureState::Requested
    };
    ErasureProgress { state, due_by: Some(due_by) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_erasure_is_overdue_only_past_its_deadline_without_the_gateways_confirmation() {
        let withdrawn = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let deadline = Duration::hours(72);
        let at = |hours| withdrawn + Duration::hours(hours);
        use ReferralEvent::*;
        let progress = |left, steps: &[ReferralEvent], hours| erasure_progress(withdrawn, false, left, steps, deadline, at(hours)).state;
        assert_eq!(progress(false, &[Withdrawn], 1000), ErasureState::NothingSent);
        assert_eq!(erasure_progress(withdrawn, false, false, &[], deadline, at(0)).due_by, None);
        assert_eq!(progress(true, &[Withdrawn], 71), ErasureState::Requested);
        assert_eq!(progress(true, &[Withdrawn, WithdrawalDelivered], 72), ErasureState::Overdue);
        assert_eq!(progress(true, &[Withdrawn, ErasedAtGateway], 1000), ErasureState::ErasedAtGateway);
        assert_eq!(progress(true, &[Withdrawn, ErasureConfirmed, ErasedAtGateway], 1000), ErasureState::Confirmed);
        assert_eq!(erasure_progress(withdrawn, false, true, &[], deadline, at(0)).due_by, Some(at(72)));
        // A partial erasure is told by its own steps: the whole referral's do not count for it.
        let partial = |steps: &[ReferralEvent], hours| erasure_progress(withdrawn, true, true, steps, deadline, at(hours)).state;
        assert_eq!(partial(&[ConsentNarrowed, ErasedAtGateway], 80), ErasureState::Overdue);
        assert_eq!(partial(&[ConsentNarrowed, NarrowedAtGateway], 80), ErasureState::ErasedAtGateway);
        assert_eq!(partial(&[NarrowingConfirmed], 1), ErasureState::Confirmed);
    }

    proptest! {
        #[test]
        fn a_confirmed_erasure_is_never_overdue(hours in 0i64..10_000, deadline in 1i64..1_000, organisation in any::<bool>()) {
            let withdrawn = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
            let step = if organisation { ErasedBy::Organisation } else { ErasedBy::Gateway };
            for partial in [false, true] {
                let steps = [ReferralEvent::Withdrawn, step.timeline_status(partial)];
                let progress = erasure_progress(withdrawn, partial, true, &steps, Duration::hours(deadline), withdrawn + Duration::hours(hours));
                prop_assert!(progress.state != ErasureState::Overdue && progress.state != ErasureState::Requested);
            }
        }
    }

    #[test]
    fn notices_have_one_wire_form_and_refuse_anything_more() {
        let notice = WithdrawalNotice { in_reply_to: "p-1".to_owned(), categories: None };
        assert_eq!(serde_json::to_value(&notice).unwrap(), json!({ "in_reply_to": "p-1" }));
        assert!(serde_json::from_value::<WithdrawalNotice>(json!({ "in_reply_to": "p-1", "name": "Amina" })).is_err());
        let partial = WithdrawalNotice { in_reply_to: "p-1".to_owned(), categories: Some([DataCategory::Health].into()) };
        assert_eq!(serde_json::to_value(&partial).unwrap(), json!({ "in_reply_to": "p-1", "categories": ["health"] }));
        assert!(partial.is_well_formed() && notice.is_well_formed());
        let empty: WithdrawalNotice = serde_json::from_value(json!({ "in_reply_to": "p-1", "categories": [] })).unwrap();
        assert!(!empty.is_well_formed());
        assert!(serde_json::from_value::<WithdrawalNotice>(json!({ "in_reply_to": "p-1", "categories": ["amina"] })).is_err());
        let erased = ErasureNotice { in_reply_to: "p-1".to_owned(), erased_by: ErasedBy::Organisation, categories: None, withdrawals: None };
        assert_eq!(serde_json::to_value(&erased).unwrap(), json!({ "in_reply_to": "p-1", "erased_by": "organisation" }));
        assert!(erased.is_well_formed() && !erased.is_partial());
        assert!(serde_json::from_value::<ErasureNotice>(json!({ "in_reply_to": "p-1", "erased_by": "someone" })).is_err());
    }

    #[test]
    fn a_partial_confirmation_names_its_part_one_way_and_not_emptily() {
        let notice = |value| serde_json::from_value::<ErasureNotice>(value).unwrap();
        let by_category = notice(json!({ "in_reply_to": "p-1", "erased_by": "gateway", "categories": ["health"] }));
        assert!(by_category.is_well_formed() && by_category.is_partial());
        let by_withdrawal = notice(json!({ "in_reply_to": "p-1", "erased_by": "gateway", "withdrawals": ["w-1"] }));
        assert!(by_withdrawal.is_well_formed() && by_withdrawal.is_partial());
        assert_eq!(serde_json::to_value(&by_withdrawal).unwrap(), json!({ "in_reply_to": "p-1", "erased_by": "gateway", "withdrawals": ["w-1"] }));
        for malformed in [
            json!({ "in_reply_to": "p-1", "erased_by": "gateway", "categories": [] }),
            json!({ "in_reply_to": "p-1", "erased_by": "gateway", "withdrawals": [] }),
            json!({ "in_reply_to": "p-1", "erased_by": "gateway", "categories": ["health"], "withdrawals": ["w-1"] }),
        ] {
            assert!(!notice(malformed).is_well_formed());
        }
        let many: Vec<String> = (0..=MAX_CONFIRMED_WITHDRAWALS).map(|n| format!("w-{n}")).collect();
        assert!(!notice(json!({ "in_reply_to": "p-1", "erased_by": "organisation", "withdrawals": many })).is_well_formed());
        assert!(notice(json!({ "in_reply_to": "p-1", "erased_by": "organisation", "withdrawals": many[1..] })).is_well_formed());
    }

    #[test]
    fn each_eraser_has_its_own_timeline_entry() {
        assert_eq!(ErasedBy::Gateway.timeline_status(false).as_str(), "erased_at_gateway");
        assert_eq!(ErasedBy::Organisation.timeline_status(false).as_str(), "erasure_confirmed");
        for by in [ErasedBy::Gateway, ErasedBy::Organisation] {
            // A partial erasure's entry never becomes the referral's status; a whole one's does.
            assert_eq!(by.timeline_status(true).status(), None);
            assert!(by.timeline_status(false).status().is_some());
        }
    }

    fn org(id: &str) -> OrgId {
        OrgId::parse(id).unwrap()
    }

    #[test]
    fn a_withdrawal_reaches_only_what_it_names() {
        use DataCategory::*;
        let lagos = org("nga-health-lagos");
        let held: BTreeSet<DataCategory> = [Identity, Contact, Health].into();
        let sent = SentReferral { purpose: Purpose::Reintegration, recipient: &lagos, held: &held };
        let scope = |p: Option<&[Purpose]>, r: Option<&[&str]>, c: Option<&[DataCategory]>| {
            WithdrawalScope::new(p.map(|p| p.iter().copied().collect()), r.map(|r| r.iter().map(|o| org(o)).collect()), c.map(|c| c.iter().copied().collect()))
                .unwrap()
        };
        assert_eq!(reach(&WithdrawalScope::whole(), sent), Reach::Whole);
        assert_eq!(reach(&scope(None, None, Some(&[Health])), sent), Reach::Categories([Health].into()));
        assert_eq!(reach(&scope(None, None, Some(&[Health, Asylum])), sent), Reach::Categories([Health].into()));
        assert_eq!(reach(&scope(None, None, Some(&[Asylum])), sent), Reach::Untouched);
        assert_eq!(reach(&scope(None, None, Some(&[Identity, Contact, Health, Family])), sent), Reach::Whole);
        assert_eq!(reach(&scope(Some(&[Purpose::FamilyTracing]), None, None), sent), Reach::Untouched);
        assert_eq!(reach(&scope(Some(&[Purpose::Reintegration]), None, Some(&[Contact])), sent), Reach::Categories([Contact].into()));
        assert_eq!(reach(&scope(None, Some(&["gmb-iom-banjul"]), None), sent), Reach::Untouched);
        assert_eq!(reach(&scope(None, Some(&["nga-health-lagos", "gmb-iom-banjul"]), None), sent), Reach::Whole);
        assert_eq!(WithdrawalScope::new(None, None, Some(BTreeSet::new())), Err(EmptyFilter));
        assert_eq!(WithdrawalScope::new(Some(BTreeSet::new()), None, None), Err(EmptyFilter));
        assert_eq!(WithdrawalScope::new(None, Some(BTreeSet::new()), None), Err(EmptyFilter));
    }

    fn categories() -> impl Strategy<Value = BTreeSet<DataCategory>> {
        proptest::sample::subsequence(DataCategory::ALL.to_vec(), 0..=DataCategory::ALL.len()).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        /// A partial reach is never empty and never all that is held; a
        /// category-only scope never reaches outside what was held.
        #[test]
        fn a_partial_withdrawal_erases_part_of_what_is_held(held in categories(), named in categories(), same_purpose in any::<bool>()) {
            let lagos = org("nga-health-lagos");
            let sent = SentReferral { purpose: Purpose::Return, recipient: &lagos, held: &held };
            let purposes = Some([if same_purpose { Purpose::Return } else { Purpose::FamilyTracing }].into());
            let Ok(scope) = WithdrawalScope::new(purposes, None, Some(named.clone())) else {
                prop_assert!(named.is_empty());
                return Ok(());
            };
            match reach(&scope, sent) {
                Reach::Categories(withdrawn) => {
                    prop_assert!(same_purpose);
                    prop_assert!(!withdrawn.is_empty() && withdrawn.len() < held.len());
                    prop_assert!(withdrawn.is_subset(&held) && withdrawn.is_subset(&named));
                }
                Reach::Whole => prop_assert!(same_purpose && !held.is_empty() && held.is_subset(&named)),
                Reach::Untouched => prop_assert!(!same_purpose || held.is_disjoint(&named)),
            }
        }
    }
}
