//! The receiving gateway's protocol rules for what its peers send back and
//! across: which status report, withdrawal or erasure confirmation is
//! applied, to what, and which is refused and why. Pure functions of the
//! facts the gateway holds (what it sent, to whom; what it received, from
//! whom), so that screening reads "load the facts, decide, write once" and
//! the rules are property-tested on their own (`tests/domain/replies.rs`).
//!
//! The two rules nobody can switch off here: only the gateway a referral
//! went to may report on it or confirm its erasure, and only the gateway
//! that sent a case may withdraw it. A reply that breaks either is refused
//! and changes nothing.

use std::collections::BTreeSet;

use super::lifecycle::ReferralEvent;
use super::status::{is_reason_code, ReferralProgress, StatusReport};
use super::withdrawal::{ErasedBy, ErasureNotice, WithdrawalNotice};

/// Most reason codes a status report may carry.
pub const MAX_REASON_CODES: usize = 16;

vocabulary! {
    /// Why a received packet is refused: set aside, nothing of it applied,
    /// nothing sent back. Recorded as the packet's reason and audited.
    ReplyRefusal, "reply refusal" {
        ClaimsUnreadable => "claims_unreadable",
        ConsentWithdrawn => "consent_withdrawn",
        StatusUnreadable => "status_unreadable",
        StatusAboutUnknownReferral => "status_about_unknown_referral",
        WithdrawalUnreadable => "withdrawal_unreadable",
        WithdrawalNotFromSender => "withdrawal_not_from_sender",
        ErasureConfirmationUnreadable => "erasure_confirmation_unreadable",
        ErasureConfirmationAboutUnknownReferral => "erasure_confirmation_about_unknown_referral",
        ErasureConfirmationWithoutWithdrawal => "erasure_confirmation_without_withdrawal",
        ErasureConfirmationAboutUnknownWithdrawal => "erasure_confirmation_about_unknown_withdrawal",
        ReplyWithoutRequest => "reply_without_request",
        ReplyToUnknownRequest => "reply_to_unknown_request",
        ReplyPurposeMismatch => "reply_purpose_mismatch",
        ReplyToOtherOrganisation => "reply_to_other_organisation",
        RequestWithdrawn => "request_withdrawn",
    }
}

/// A packet this gateway sent, as a reply about it finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacketFacts<'a> {
    /// The country of the gateway it went to.
    pub destination_country: &'a str,
    /// The referral it belongs to.
    pub referral_id: Option<&'a str>,
}

/// The referral a reply from `issuer` is about: only the gateway the
/// referral's packet went to may report on it or confirm its erasure.
pub fn referral_replied_to<'a>(sent: Option<SentPacketFacts<'a>>, issuer: &str) -> Option<&'a str> {
    sent.filter(|s| s.destination_country == issuer).and_then(|s| s.referral_id)
}

/// A status report as it may cross a border: codes only, a bounded number
/// of them; anything else is not a report this gateway applies.
pub fn readable_status(report: StatusReport) -> Option<StatusReport> {
    Some(report).filter(|r| r.reason_codes.len() <= MAX_REASON_CODES && r.reason_codes.iter().all(|c| is_reason_code(c)))
}

/// What a status report comes to: the report and the referral it is
/// applied to, or why not. `about`: [`referral_replied_to`].
pub fn status_verdict(report: Option<StatusReport>, about: Option<&str>) -> Result<(StatusReport, &str), ReplyRefusal> {
    match (report, about) {
        (None, _) => Err(ReplyRefusal::StatusUnreadable),
        (Some(_), None) => Err(ReplyRefusal::StatusAboutUnknownReferral),
        (Some(report), Some(referral_id)) => Ok((report, referral_id)),
    }
}

/// The timeline events a status report adds: its status, and `handover`
/// when the recipient accepts a referral that hands case management over.
pub fn status_events(status: ReferralProgress, hands_over: bool) -> Vec<ReferralEvent> {
    let mut events = vec![ReferralEvent::from(status)];
    if status == ReferralProgress::Accepted && hands_over {
        events.push(ReferralEvent::Handover);
    }
    events
}

/// What a withdrawal comes to, before its effect on the case held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalVerdict {
    /// The categories it withdraws; `None` for the whole case; empty for a
    /// partial withdrawal sealed end to end (its categories are sealed).
    pub categories: Option<Vec<String>>,
    /// Sealed end to end and partial: this gateway cannot read what it
    /// names, so it hands the withdrawal to the organisation with the case.
    pub opaque: bool,
    /// What goes back to the sender: nothing withdrawn is readable here now.
    pub confirmation: ErasureNotice,
}

/// What a withdrawal packet comes to. `notice`: what it withdraws, as far
/// as this gateway can read it (`None` if unreadable); `sealed`: whether it
/// is sealed end to end; `foreign`: the case it names is held here and
/// came from another gateway, or is not a referral.
pub fn withdrawal_verdict(notice: Option<&WithdrawalNotice>, sealed: bool, foreign: bool, withdrawal_id: &str) -> Result<WithdrawalVerdict, ReplyRefusal> {
    // A sealed one names no categories here, by design; a readable one names
    // at least one, or none for a whole withdrawal.
    let notice = notice.filter(|notice| sealed || notice.is_well_formed()).ok_or(ReplyRefusal::WithdrawalUnreadable)?;
    // Only the gateway that sent a case may withdraw it. (A packet id not
    // held here may be on its way: its tombstone is kept under this issuer.)
    if foreign {
        return Err(ReplyRefusal::WithdrawalNotFromSender);
    }
    let categories: Option<Vec<String>> = notice.categories.as_ref().map(|c| c.iter().map(|c| c.as_str().to_owned()).collect());
    let opaque = categories.as_ref().is_some_and(Vec::is_empty);
    // Held or not (the withdrawal may have overtaken its packet), nothing
    // withdrawn is readable here now: that is what is confirmed, by the
    // withdrawal's own id when its categories are sealed.
    let confirmation = ErasureNotice {
        in_reply_to: notice.in_reply_to.clone(),
        erased_by: ErasedBy::Gateway,
        categories: notice.categories.clone().filter(|_| !opaque),
        withdrawals: opaque.then(|| BTreeSet::from([withdrawal_id.to_owned()])),
    };
    Ok(WithdrawalVerdict { categories, opaque, confirmation })
}

/// What an erasure confirmation comes to: the timeline event and the
/// categories it confirms, or why it is refused. `about`: the referral it is
/// about ([`referral_replied_to`]); `withdrawn`: whether that referral's
/// consent was withdrawn (whole, or in part for a partial confirmation);
/// `confirmed`: the categories confirmed (named, or those of the withdrawals
/// named), `None` when a named withdrawal is not one this gateway sent.
pub fn erasure_confirmation_verdict<'a>(
    notice: Option<&ErasureNotice>,
    about: Option<&'a str>,
    withdrawn: bool,
    confirmed: Option<Vec<String>>,
) -> Result<ConfirmedErasure<'a>, ReplyRefusal> {
    // A partial confirmation names its part one way, and not emptily.
    let notice = notice.filter(|n| n.is_well_formed()).ok_or(ReplyRefusal::ErasureConfirmationUnreadable)?;
    let referral_id = about.ok_or(ReplyRefusal::ErasureConfirmationAboutUnknownReferral)?;
    // Only a referral whose consent was withdrawn can have been erased on request.
    if !withdrawn {
        return Err(ReplyRefusal::ErasureConfirmationWithoutWithdrawal);
    }
    let categories = confirmed.ok_or(ReplyRefusal::ErasureConfirmationAboutUnknownWithdrawal)?;
    Ok(ConfirmedErasure { referral_id, event: notice.erased_by.timeline_status(notice.is_partial()), categories })
}

/// An erasure confirmation applied: to which referral, as which timeline
/// event, for which categories (none: the whole case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedErasure<'a> {
    pub referral_id: &'a str,
    pub event: ReferralEvent,
    pub categories: Vec<String>,
}
