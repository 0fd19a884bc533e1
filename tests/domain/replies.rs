//! The receiving gateway's reply rules (`domain::replies`), by property:
//! over any facts, a reply from the wrong gateway changes nothing, a
//! withdrawal is confirmed for exactly what it withdrew, and an erasure is
//! confirmed only after a withdrawal.

use std::collections::BTreeSet;

use proptest::prelude::*;
use referral_gateway::domain::lifecycle::ReferralEvent;
use referral_gateway::domain::replies::{
    erasure_confirmation_verdict, readable_status, referral_replied_to, status_events, status_verdict, withdrawal_verdict, ReplyRefusal,
    SentPacketFacts, MAX_REASON_CODES,
};
use referral_gateway::domain::status::{ReferralProgress, StatusReport};
use referral_gateway::domain::withdrawal::{ErasedBy, ErasureNotice, WithdrawalNotice};
use referral_gateway::domain::DataCategory;

const COUNTRIES: [&str; 3] = ["ITA", "GMB", "NGA"];

fn country() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&COUNTRIES[..])
}

fn categories() -> impl Strategy<Value = Option<BTreeSet<DataCategory>>> {
    proptest::option::of(proptest::sample::subsequence(DataCategory::ALL.to_vec(), 0..=3).prop_map(|c| c.into_iter().collect()))
}

fn progress() -> impl Strategy<Value = ReferralProgress> {
    proptest::sample::select(ReferralProgress::REPORTED_BY_RECIPIENTS.to_vec())
}

fn erased_by() -> impl Strategy<Value = ErasedBy> {
    prop_oneof![Just(ErasedBy::Gateway), Just(ErasedBy::Organisation)]
}

proptest! {
    /// Only the gateway a referral's packet went to may report on it or
    /// confirm its erasure; a packet that belongs to no referral is about none.
    #[test]
    fn only_the_recipient_gateway_replies_about_a_referral(
        destination in country(), issuer in country(), referral in proptest::option::of("[a-z0-9-]{1,12}"), known in any::<bool>(),
    ) {
        let sent = known.then_some(SentPacketFacts { destination_country: destination, referral_id: referral.as_deref() });
        let about = referral_replied_to(sent, issuer);
        prop_assert_eq!(about.is_some(), known && destination == issuer && referral.is_some());
        prop_assert!(about.is_none() || about == referral.as_deref());
    }

    /// A status report is applied only when readable and about a referral
    /// this gateway sent to its issuer; its events are its status, then
    /// `handover` exactly when an accepted referral hands case management over.
    #[test]
    fn a_status_is_applied_to_its_referral_with_handover_only_on_acceptance(
        status in progress(), codes in proptest::collection::vec("[a-z0-9_]{1,8}", 0..20), readable in any::<bool>(),
        about in proptest::option::of("[a-z0-9-]{1,12}"), hands_over in any::<bool>(),
    ) {
        let report = StatusReport { in_reply_to: "p1".to_owned(), status, reason_codes: codes.clone() };
        let report = if readable { readable_status(report) } else { None };
        prop_assert_eq!(report.is_some(), readable && codes.len() <= MAX_REASON_CODES);
        match status_verdict(report.clone(), about.as_deref()) {
            Ok((applied, referral_id)) => {
                prop_assert_eq!(Some(applied), report);
                prop_assert_eq!(Some(referral_id), about.as_deref());
            }
            Err(ReplyRefusal::StatusUnreadable) => prop_assert!(report.is_none()),
            Err(ReplyRefusal::StatusAboutUnknownReferral) => prop_assert!(report.is_some() && about.is_none()),
            Err(other) => prop_assert!(false, "{other}"),
        }
        let events = status_events(status, hands_over);
        prop_assert_eq!(events.first(), Some(&ReferralEvent::from(status)));
        let handover = events.contains(&ReferralEvent::Handover);
        prop_assert_eq!(handover, status == ReferralProgress::Accepted && hands_over);
        prop_assert_eq!(events.len(), 1 + usize::from(handover));
    }

    /// A withdrawal from anyone but the case's sender is refused; one that
    /// is applied is confirmed for exactly what it withdrew: the whole case,
    /// its categories, or (sealed end to end and partial) the withdrawal
    /// itself, since its categories cannot be read here.
    #[test]
    fn a_withdrawal_is_confirmed_for_what_it_withdrew_and_only_from_the_sender(
        named in categories(), sealed in any::<bool>(), foreign in any::<bool>(), readable in any::<bool>(),
    ) {
        // A sealed withdrawal names no categories here: an empty set stands for them.
        let named = if sealed { named.map(|_| BTreeSet::new()) } else { named };
        let notice = readable.then(|| WithdrawalNotice { in_reply_to: "case-1".to_owned(), categories: named.clone() });
        let well_formed = sealed || named.as_ref().is_none_or(|c| !c.is_empty());
        match withdrawal_verdict(notice.as_ref(), sealed, foreign, "withdrawal-1") {
            Ok(verdict) => {
                prop_assert!(readable && well_formed && !foreign);
                let confirmation = &verdict.confirmation;
                prop_assert_eq!(confirmation.in_reply_to.as_str(), "case-1");
                prop_assert_eq!(confirmation.erased_by, ErasedBy::Gateway);
                prop_assert!(confirmation.is_well_formed());
                prop_assert_eq!(verdict.opaque, sealed && named.is_some());
                prop_assert_eq!(confirmation.is_partial(), named.is_some(), "partial exactly when it named categories");
                if verdict.opaque {
                    prop_assert_eq!(confirmation.withdrawals.clone(), Some(BTreeSet::from(["withdrawal-1".to_owned()])));
                    prop_assert_eq!(confirmation.categories.clone(), None);
                } else {
                    prop_assert_eq!(confirmation.categories.clone(), named.clone());
                    prop_assert_eq!(confirmation.withdrawals.clone(), None);
                }
                let names: Option<Vec<String>> = named.map(|c| c.iter().map(|c| c.as_str().to_owned()).collect());
                prop_assert_eq!(verdict.categories, names);
            }
            Err(ReplyRefusal::WithdrawalUnreadable) => prop_assert!(!readable || !well_formed),
            Err(ReplyRefusal::WithdrawalNotFromSender) => prop_assert!(readable && well_formed && foreign),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    /// An erasure is confirmed only for a referral this gateway sent to the
    /// confirming gateway and whose consent was withdrawn, as the step of
    /// who erased and how much.
    #[test]
    fn an_erasure_is_confirmed_only_after_a_withdrawal(
        by in erased_by(), named in categories(), readable in any::<bool>(), about in proptest::option::of("[a-z0-9-]{1,12}"),
        withdrawn in any::<bool>(), confirmed in proptest::option::of(proptest::collection::vec("[a-z_]{1,8}", 0..3)),
    ) {
        let notice = readable.then(|| ErasureNotice { in_reply_to: "case-1".to_owned(), erased_by: by, categories: named.clone(), withdrawals: None });
        let well_formed = named.as_ref().is_none_or(|c| !c.is_empty());
        match erasure_confirmation_verdict(notice.as_ref(), about.as_deref(), withdrawn, confirmed.clone()) {
            Ok(applied) => {
                prop_assert!(readable && well_formed && withdrawn);
                prop_assert_eq!(Some(applied.referral_id), about.as_deref());
                prop_assert_eq!(applied.event, by.timeline_status(named.is_some()));
                prop_assert_eq!(Some(applied.categories), confirmed);
            }
            Err(ReplyRefusal::ErasureConfirmationUnreadable) => prop_assert!(!readable || !well_formed),
            Err(ReplyRefusal::ErasureConfirmationAboutUnknownReferral) => prop_assert!(about.is_none()),
            Err(ReplyRefusal::ErasureConfirmationWithoutWithdrawal) => prop_assert!(about.is_some() && !withdrawn),
            Err(ReplyRefusal::ErasureConfirmationAboutUnknownWithdrawal) => prop_assert!(withdrawn && confirmed.is_none()),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }
}

#[test]
fn a_status_report_carries_codes_only() {
    let report = |codes: &[&str]| StatusReport { in_reply_to: "p1".to_owned(), status: ReferralProgress::Declined, reason_codes: codes.iter().map(|c| (*c).to_owned()).collect() };
    assert!(readable_status(report(&["no_capacity"])).is_some());
    assert!(readable_status(report(&["Amina Diallo"])).is_none(), "free text does not cross a border");
    assert!(readable_status(report(&[""])).is_none());
}
