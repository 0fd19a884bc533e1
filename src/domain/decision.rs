//! The outcome of a sharing decision, with the reason for every category.
//!
//! A decision never holds a value from the case: only category names, stable
//! reason codes and policy ids. It can therefore be logged, audited and shown
//! to the sender as it is.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::baseline::Fields;
use super::{DataCategory, Purpose};

/// Why a category is withheld or a packet denied. The text of each code is a
/// stable public contract (problem types, audit entries, metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The recipient is not in the federation directory.
    RecipientUnknown,
    /// The purpose baseline does not include this category or any field of it that the case holds.
    NotNeededForPurpose,
    /// A category the purpose cannot do without is absent from the case.
    RequiredCategoryMissing,
    ConsentWithdrawn,
    ConsentRefused,
    ConsentExpired,
    ConsentNotYetValid,
    ConsentNotGiven,
    /// Case notes leave only if a consent scope names `case_notes`.
    CaseNotesNotNamedByConsent,
    /// Asylum-linked case and a state actor of one of the person's origin states.
    AsylumFirewall,
    /// The `asylum` category never goes to a recipient in an origin state.
    AsylumCategoryToOriginState,
    ChildGuardianConsentMissing,
    ChildBestInterestsMissing,
    ChildBestInterestsAgainstReturn,
    /// A reply (tracing reply, family assessment) about a child never tells
    /// the family's side where the child is (contact, guardian) unless the
    /// guardian consented and a completed best-interests determination
    /// recommends the child rejoin the family, sent along so the receiving
    /// gateway can see it.
    ChildWhereaboutsToFamily,
    /// No DPO permit covers this category (default deny).
    PolicyNoPermit,
    /// A DPO forbid applies; the policy id is in the explanation.
    PolicyForbid,
    /// A policy could not be evaluated; undecidable means deny.
    PolicyEvaluationError,
    /// The only permits that allowed the category rest on a sharing
    /// agreement that expired (`@expires`); the policy id is in the explanation.
    AgreementExpired,
    /// Packets to this recipient must be sealed end to end (the built-in
    /// `builtin.asylum_end_to_end` or a DPO rule of `end_to_end.toml`), and
    /// the recipient publishes no end-to-end key in the directory.
    RecipientKeyRequired,
    /// Receiving side: the recipient is listed, but behind another gateway.
    RecipientNotServedHere,
    /// Receiving side: the retention deadline the sender set has passed.
    RetentionPassed,
    /// Receiving side: the packet body is not a case this gateway can read.
    PayloadUnreadable,
}

impl ReasonCode {
    pub const ALL: &'static [ReasonCode] = &[
        Self::RecipientUnknown,
        Self::NotNeededForPurpose,
        Self::RequiredCategoryMissing,
        Self::ConsentWithdrawn,
        Self::ConsentRefused,
        Self::ConsentExpired,
        Self::ConsentNotYetValid,
        Self::ConsentNotGiven,
        Self::CaseNotesNotNamedByConsent,
        Self::AsylumFirewall,
        Self::AsylumCategoryToOriginState,
        Self::ChildGuardianConsentMissing,
        Self::ChildBestInterestsMissing,
        Self::ChildBestInterestsAgainstReturn,
        Self::ChildWhereaboutsToFamily,
        Self::PolicyNoPermit,
        Self::PolicyForbid,
        Self::PolicyEvaluationError,
        Self::AgreementExpired,
        Self::RecipientKeyRequired,
        Self::RecipientNotServedHere,
        Self::RetentionPassed,
        Self::PayloadUnreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecipientUnknown => "recipient_unknown",
            Self::NotNeededForPurpose => "not_needed_for_purpose",
            Self::RequiredCategoryMissing => "required_category_missing",
            Self::ConsentWithdrawn => "consent_withdrawn",
            Self::ConsentRefused => "consent_refused",
            Self::ConsentExpired => "consent_expired",
            Self::ConsentNotYetValid => "consent_not_yet_valid",
            Self::ConsentNotGiven => "consent_not_given",
            Self::CaseNotesNotNamedByConsent => "case_notes_not_named_by_consent",
            Self::AsylumFirewall => "asylum_firewall",
            Self::AsylumCategoryToOriginState => "asylum_category_to_origin_state",
            Self::ChildGuardianConsentMissing => "child_guardian_consent_missing",
            Self::ChildBestInterestsMissing => "child_best_interests_missing",
            Self::ChildBestInterestsAgainstReturn => "child_best_interests_against_return",
            Self::ChildWhereaboutsToFamily => "child_whereabouts_to_family",
            Self::PolicyNoPermit => "policy_no_permit",
            Self::PolicyForbid => "policy_forbid",
            Self::PolicyEvaluationError => "policy_evaluation_error",
            Self::AgreementExpired => "agreement_expired",
            Self::RecipientKeyRequired => "recipient_key_required",
            Self::RecipientNotServedHere => "recipient_not_served_here",
            Self::RetentionPassed => "retention_passed",
            Self::PayloadUnreadable => "payload_unreadable",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ReasonCode {
    type Err = super::ParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == text)
            .ok_or(super::ParseError::new("reason code", "not a known value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_serde() {
        for code in ReasonCode::ALL {
            assert_eq!(code.as_str().parse::<ReasonCode>().ok(), Some(*code));
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
        }
    }
}

/// One reason for withholding a category, with the policy that gave it, if any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Withholding {
    pub reason: ReasonCode,
    /// The policy that withheld it, when one did (a built-in rule or the DPO's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Withholding {
    pub fn because(reason: ReasonCode) -> Self {
        Self { reason, policy: None }
    }
}

/// A category that goes, with the fields and the policies that allowed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    #[serde(serialize_with = "serialize_fields")]
    pub fields: Fields,
    pub permitted_by: Vec<String>,
}

fn serialize_fields<S: serde::Serializer>(fields: &Fields, serializer: S) -> Result<S::Ok, S::Error> {
    match fields {
        Fields::All => serializer.serialize_str("all"),
        Fields::Only(names) => serializer.collect_seq(names.iter()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
}

/// The decision. Built only by [`crate::domain::decide::decide`], which keeps
/// its invariants: an allow sends at least one category and has no deny
/// reasons; a deny sends nothing and has at least one reason.
///
/// `end_to_end` names the rule that requires this referral's packets to be
/// sealed end to end (`builtin.asylum_end_to_end` or `end_to_end.toml#<n>`),
/// on allows and denies alike; absent when no rule does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    outcome: Outcome,
    purpose: Purpose,
    policy_version: String,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    deny_reasons: BTreeSet<ReasonCode>,
    sent: BTreeMap<DataCategory, Sent>,
    withheld: BTreeMap<DataCategory, BTreeSet<Withholding>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end: Option<String>,
}

impl Decision {
    pub(super) fn allow(
        purpose: Purpose,
        policy_version: String,
        sent: BTreeMap<DataCategory, Sent>,
        withheld: BTreeMap<DataCategory, BTreeSet<Withholding>>,
        end_to_end: Option<String>,
    ) -> Self {
        debug_assert!(!sent.is_empty());
        Self { outcome: Outcome::Allow, purpose, policy_version, deny_reasons: BTreeSet::new(), sent, withheld, end_to_end }
    }

    /// A deny keeps the per-category explanation for the sender, but sends nothing.
    pub(super) fn deny(
        purpose: Purpose,
        policy_version: String,
        deny_reasons: BTreeSet<ReasonCode>,
        withheld: BTreeMap<DataCategory, BTreeSet<Withholding>>,
        end_to_end: Option<String>,
    ) -> Self {
        debug_assert!(!deny_reasons.is_empty());
        Self { outcome: Outcome::Deny, purpose, policy_version, deny_reasons, sent: BTreeMap::new(), withheld, end_to_end }
    }

    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    pub fn is_allow(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    pub fn deny_reasons(&self) -> &BTreeSet<ReasonCode> {
        &self.deny_reasons
    }

    pub fn sent(&self) -> &BTreeMap<DataCategory, Sent> {
        &self.sent
    }

    pub fn withheld(&self) -> &BTreeMap<DataCategory, BTreeSet<Withholding>> {
        &self.withheld
    }

    pub fn sent_categories(&self) -> BTreeSet<DataCategory> {
        self.sent.keys().copied().collect()
    }

    /// The rule that requires this referral's packets to be sealed end to end
    /// to the recipient's own key, if any: `builtin.asylum_end_to_end` or
    /// `end_to_end.toml#<n>`. On an allow, the packet must not leave otherwise.
    pub fn end_to_end_required_by(&self) -> Option<&str> {
        self.end_to_end.as_deref()
    }
}

/// A decision as it was recorded and is shown: to the sender, to the DPO
/// and in a simulation. Unlike [`Decision`] it can be read back from the
/// store, and it can be built from any JSON of that shape, so nothing sends
/// on its say: what leaves is decided by [`Decision`] alone.
///
/// It serialises exactly as the [`Decision`] it comes from (a property test
/// holds the two together), so an answer rendered from a stored decision is
/// the answer given when it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionRecord {
    pub outcome: Outcome,
    pub purpose: Purpose,
    /// The policy set that decided (`sha256:` of its files).
    pub policy_version: String,
    /// Why a deny denied; absent on an allow.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub deny_reasons: BTreeSet<ReasonCode>,
    /// Each category that goes, with its fields and the policies that allowed it.
    pub sent: BTreeMap<DataCategory, SentRecord>,
    /// Each category withheld, with every reason.
    pub withheld: BTreeMap<DataCategory, BTreeSet<Withholding>>,
    /// The rule that requires sealing end to end to the organisation's own key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end: Option<String>,
}

/// A category that went, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SentRecord {
    pub fields: FieldsRecord,
    pub permitted_by: Vec<String>,
}

/// The fields of a category that went: all of them, or those named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldsRecord {
    All(AllFields),
    Only(Vec<String>),
}

/// `"all"`: every field of the category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AllFields {
    #[serde(rename = "all")]
    All,
}

impl From<&Decision> for DecisionRecord {
    fn from(decision: &Decision) -> Self {
        let sent = decision
            .sent
            .iter()
            .map(|(category, sent)| {
                let fields = match sent.fields {
                    Fields::All => FieldsRecord::All(AllFields::All),
                    Fields::Only(names) => FieldsRecord::Only(names.iter().map(|n| (*n).to_owned()).collect()),
                };
                (*category, SentRecord { fields, permitted_by: sent.permitted_by.clone() })
            })
            .collect();
        Self {
            outcome: decision.outcome,
            purpose: decision.purpose,
            policy_version: decision.policy_version.clone(),
            deny_reasons: decision.deny_reasons.clone(),
            sent,
            withheld: decision.withheld.clone(),
            end_to_end: decision.end_to_end.clone(),
        }
    }
}

impl DecisionRecord {
    pub fn is_allow(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// The categories that went.
    pub fn sent_categories(&self) -> BTreeSet<DataCategory> {
        self.sent.keys().copied().collect()
    }
}
