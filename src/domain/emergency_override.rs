//! Sharing without consent when a life is at risk (issue 21 §4), as the
//! field guidance allows, decided here and nowhere else: what an approved
//! override may replace, and what it never touches. Pure; who approves it,
//! and when, is the use case's (a DPO other than the submitter, within a
//! window, or a standing rule for emergencies).
//!
//! An override stands in for *missing* consent (never given, expired, not
//! yet valid) for the categories the purpose needs, and for a child's
//! guardian's. It never replaces an
//! explicit no (a refusal, a withdrawal); never lets `case_notes` or the
//! `asylum` category go; never goes to a state actor of one of the person's
//! origin states; and never touches the built-in rules or the DPO's policy,
//! which decide as for any referral.
//!
use std::collections::BTreeSet;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::case::Case;
use super::consent::Consent;
use super::decide::{decide_from, gather, payload_of, CategoryFact, ConsentFact, DecisionFacts};
use super::minimise::Payload;
use super::recipient::Recipient;
use super::{CountryCode, Purpose};
use super::decision::Decision;
use super::policy::DataProtectionPolicy;
use super::{DataCategory, ParseError};

vocabulary! {
    /// Why consent cannot wait, as the field guidance names it.
    OverrideReason, "override reason" {
        LifeThreatening => "life_threatening",
        ChildAtImminentRisk => "child_at_imminent_risk",
    }
}

vocabulary! {
    /// Where an override stands: waiting for a DPO's approval within the
    /// window; approved (the referral is queued); rejected, or not approved
    /// in time (`expired`: the referral is denied, its payload erased); or
    /// `stopped` by a withdrawal or the retention's end before any DPO decided.
    OverrideState, "override state" {
        AwaitingApproval => "awaiting_approval",
        Approved => "approved",
        Rejected => "rejected",
        Expired => "expired",
        Stopped => "stopped",
    }
}

/// What a submitter asks for: a reason and a justification code (never
/// free text: it crosses into the audit log and the subject report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// Why consent cannot wait: `life_threatening`, or `child_at_imminent_risk` (the person must be a child).
    pub reason: OverrideReason,
    /// The organisation's own code for the circumstances (e.g. `medical_evacuation`): 1 to 64 of a-z, 0-9 and _; never free text.
    pub justification_code: JustificationCode,
}

/// A code of the form of a reason code: 1 to 64 of `a-z`, `0-9`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JustificationCode(String);

impl JustificationCode {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if super::status::is_reason_code(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new("justification code", "must be 1 to 64 of a-z, 0-9 and _"))
        }
    }

}
super::ids::string_newtype!(JustificationCode, r"^[a-z0-9_]{1,64}$", "A justification code: 1 to 64 of a-z, 0-9 and _");

/// Why an override cannot apply at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverrideRefusal {
    /// The recipient is a state actor of one of the person's origin states
    /// (sits there, or acts for it): no emergency makes that safe to decide
    /// without the person.
    #[error("an override never goes to a state actor of one of the person's origin states")]
    StateActorOfOriginState,
    /// `child_at_imminent_risk` for a person who is not a child.
    #[error("the reason child_at_imminent_risk needs a child")]
    NotAChild,
    /// The directory does not know the recipient.
    #[error("the recipient is not in the directory")]
    RecipientUnknown,
}

impl OverrideRefusal {
    /// Stable code (audit reasons).
    pub const fn code(self) -> &'static str {
        match self {
            Self::StateActorOfOriginState => "state_actor_of_origin_state",
            Self::NotAChild => "not_a_child",
            Self::RecipientUnknown => "recipient_unknown",
        }
    }
}

/// Why a DPO's approval or rejection of an override is not taken. The codes
/// are stable (audit reasons, problem members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverrideDecisionRefusal {
    #[error("the override no longer awaits approval: it is {0}")]
    Settled(OverrideState),
    #[error("whoever asked for an override cannot approve or reject it; another DPO must")]
    OwnRequest,
    #[error("the override's approval window has passed; the referral is denied")]
    WindowPassed,
}

impl OverrideDecisionRefusal {
    pub const fn code(self) -> &'static str {
        match self {
            Self::Settled(_) => "settled",
            Self::OwnRequest => "own_request",
            Self::WindowPassed => "window_passed",
        }
    }
}

/// Whether `decider` (organisation, subject) may approve or reject an
/// override in `state` that `requester` asked for, at `now_ms`: four eyes,
/// within the window.
pub fn may_decide(
    state: OverrideState,
    requester: (&str, &str),
    decider: (&str, &str),
    approve_by_ms: i64,
    now_ms: i64,
) -> Result<(), OverrideDecisionRefusal> {
    if state != OverrideState::AwaitingApproval {
        return Err(OverrideDecisionRefusal::Settled(state));
    }
    if requester == decider {
        return Err(OverrideDecisionRefusal::OwnRequest);
    }
    if now_ms >= approve_by_ms {
        return Err(OverrideDecisionRefusal::WindowPassed);
    }
    Ok(())
}

/// Categories an override never releases, whatever the emergency.
pub const NEVER_OVERRIDDEN: &[DataCategory] = &[DataCategory::CaseNotes, DataCategory::Asylum];

/// Whether an override may stand in for this consent: only for one missing,
/// never for an explicit no.
const fn is_missing(consent: ConsentFact) -> bool {
    matches!(consent, ConsentFact::NotGiven | ConsentFact::Expired | ConsentFact::NotYetValid)
}

/// The facts a decision under `request` reads: missing consent replaced
/// for every category the purpose needs but those in [`NEVER_OVERRIDDEN`];
/// and which categories that was.
pub fn facts_under_override(facts: &DecisionFacts, request: &OverrideRequest) -> Result<(DecisionFacts, BTreeSet<DataCategory>), OverrideRefusal> {
    let recipient = facts.recipient.as_ref().ok_or(OverrideRefusal::RecipientUnknown)?;
    let origins = &facts.case.origin_states;
    if recipient.is_state_actor() && (origins.contains(&recipient.country) || origins.contains(&recipient.state())) {
        return Err(OverrideRefusal::StateActorOfOriginState);
    }
    if request.reason == OverrideReason::ChildAtImminentRisk && !facts.case.child {
        return Err(OverrideRefusal::NotAChild);
    }
    let mut overridden = BTreeSet::new();
    let mut under = facts.clone();
    // A child's guardian did not consent either: the override stands in for that too
    // (a best-interests determination against return still stands).
    under.case.consent_by_guardian |= under.case.child;
    for (category, fact) in &mut under.categories {
        if let CategoryFact::Needed { consent } = fact
            && is_missing(*consent)
            && !NEVER_OVERRIDDEN.contains(category)
        {
            // Granted, but not named: whatever needs a scope to name it stays out.
            *consent = ConsentFact::Granted { named: false };
            overridden.insert(*category);
        }
    }
    Ok((under, overridden))
}

/// The decision `policy` makes on `facts` under an approved override, and
/// the categories the override stood in for (of those, the ones sent went
/// without the person's consent: the subject report names them).
pub fn decide_under_override(
    facts: &DecisionFacts,
    policy: &DataProtectionPolicy,
    request: &OverrideRequest,
) -> Result<(Decision, BTreeSet<DataCategory>), OverrideRefusal> {
    let (under, overridden) = facts_under_override(facts, request)?;
    Ok((decide_from(&under, policy), overridden))
}

/// What a referral under an override comes to: the decision, the payload
/// it lets go (cut to what the decision sends: as the person's consent
/// limits a category it covers, and to the purpose's need for one the
/// override stood in for), and the categories the override stood in for.
#[allow(clippy::too_many_arguments)]
pub fn decide_and_minimise_under_override(
    case: &Case,
    consent: &Consent,
    sender_country: CountryCode,
    recipient: Option<&Recipient>,
    purpose: Purpose,
    policy: &DataProtectionPolicy,
    now: DateTime<Utc>,
    request: &OverrideRequest,
) -> Result<(Decision, Payload, BTreeSet<DataCategory>), OverrideRefusal> {
    let (facts, mut early_projections) = gather(case, consent, sender_country, recipient, purpose, now);
    let (decision, overridden) = decide_under_override(&facts, policy, request)?;
    let payload = payload_of(case, purpose, &decision, &mut early_projections);
    Ok((decision, payload, overridden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_justification_is_a_code_never_text() {
        assert!(JustificationCode::parse("medical_evacuation_needed").is_ok());
        for text in ["", "Amina needs surgery", "x".repeat(65).as_str(), "UPPER", "dash-code"] {
            assert!(JustificationCode::parse(text).is_err(), "{text:?}");
        }
        assert_eq!("child_at_imminent_risk".parse::<OverrideReason>(), Ok(OverrideReason::ChildAtImminentRisk));
        assert!("convenience".parse::<OverrideReason>().is_err());
    }

    #[test]
    fn another_person_decides_within_the_window() {
        let (asker, other) = (("ita-iom-rome", "caseworker-7"), ("ita-dpo", "dpo-2"));
        assert_eq!(may_decide(OverrideState::AwaitingApproval, asker, other, 1000, 999), Ok(()));
        assert_eq!(may_decide(OverrideState::AwaitingApproval, asker, asker, 1000, 999), Err(OverrideDecisionRefusal::OwnRequest));
        // The same subject name in another organisation is another person.
        assert_eq!(may_decide(OverrideState::AwaitingApproval, asker, ("ita-dpo", "caseworker-7"), 1000, 999), Ok(()));
        assert_eq!(may_decide(OverrideState::AwaitingApproval, asker, other, 1000, 1000), Err(OverrideDecisionRefusal::WindowPassed));
        for settled in [OverrideState::Approved, OverrideState::Rejected, OverrideState::Expired, OverrideState::Stopped] {
            assert_eq!(may_decide(settled, asker, other, 1000, 0), Err(OverrideDecisionRefusal::Settled(settled)));
        }
    }

    #[test]
    fn only_missing_consent_is_replaced() {
        for (consent, replaced) in [
            (ConsentFact::NotGiven, true),
            (ConsentFact::Expired, true),
            (ConsentFact::NotYetValid, true),
            (ConsentFact::Refused, false),
            (ConsentFact::Withdrawn, false),
            (ConsentFact::Granted { named: false }, false),
        ] {
            assert_eq!(is_missing(consent), replaced, "{consent:?}");
        }
    }
}
