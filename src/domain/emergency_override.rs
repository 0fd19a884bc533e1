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
//! Not wired yet: submissions and the DPO's approval take it next.

use std::collections::BTreeSet;

use super::decide::{decide_from, CategoryFact, ConsentFact, DecisionFacts};
use super::decision::Decision;
use super::policy::DataProtectionPolicy;
use super::DataCategory;

vocabulary! {
    /// Why consent cannot wait, as the field guidance names it.
    OverrideReason, "override reason" {
        LifeThreatening => "life_threatening",
        ChildAtImminentRisk => "child_at_imminent_risk",
    }
}

/// What a submitter asks for: a reason and a justification code (never
/// free text: it crosses into the audit log and the subject report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideRequest {
    pub reason: OverrideReason,
    pub justification_code: JustificationCode,
}

/// A code of the form of a reason code: 1 to 64 of `a-z`, `0-9`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JustificationCode(String);

impl JustificationCode {
    pub fn parse(text: &str) -> Result<Self, super::ParseError> {
        if super::status::is_reason_code(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(super::ParseError::new("justification code", "must be 1 to 64 of a-z, 0-9 and _"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
