//! The sharing decision: consent, the built-in rules and the DPO policy,
//! category by category, then the purpose's required categories, then
//! whether the recipient can be reached sealed end to end where a rule
//! requires it (`sealing`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::baseline::{needed_fields, required_categories, Fields};
use super::case::{BestInterests, Case, DurableSolution};
use super::consent::{Consent, Coverage};
use super::decision::{Decision, ReasonCode, Sent, Withholding};
use super::minimise::{project, Payload};
use super::policy::{builtin_rule, CaseFacts, DataProtectionPolicy};
use super::recipient::Recipient;
use super::sealing::end_to_end_requirement;
use super::{CountryCode, DataCategory, Profile, Purpose};

/// The facts policies see, derived from the case and consent at `now`.
pub fn case_facts(case: &Case, consent: &Consent, now: DateTime<Utc>) -> CaseFacts {
    facts_with_consent_giver(case, consent.is_by_guardian(), now)
}

/// The facts policies see, when who gave the consent is known otherwise
/// (the receiving gateway sees no consent, only its expiry).
pub fn facts_with_consent_giver(case: &Case, consent_by_guardian: bool, now: DateTime<Utc>) -> CaseFacts {
    let determination = case.best_interests_determination();
    let protection = case.protection.iter().flat_map(|p| p.profiles.iter().map(|x| Profile::Protection(*x)));
    let asylum = case.asylum.iter().flat_map(|a| a.status.iter().map(|x| Profile::Asylum(*x)));
    CaseFacts {
        asylum_linked: case.is_asylum_linked(),
        child: case.is_child(now.date_naive()),
        profiles: protection.chain(asylum).collect(),
        origin_states: case.origin_states().into_iter().collect(),
        consent_by_guardian,
        best_interests_determined: determination.is_some(),
        best_interests_recommend_return: matches!(
            determination,
            Some(BestInterests::Completed { recommendation: Some(DurableSolution::ReturnToCountryOfOrigin), .. })
        ),
        best_interests_favour_family: matches!(
            determination,
            Some(BestInterests::Completed {
                recommendation: Some(DurableSolution::ReturnToCountryOfOrigin | DurableSolution::FamilyReunificationElsewhere),
                ..
            })
        ),
    }
}

fn consent_reason(coverage: ConsentFact) -> ReasonCode {
    match coverage {
        ConsentFact::Withdrawn => ReasonCode::ConsentWithdrawn,
        ConsentFact::Refused => ReasonCode::ConsentRefused,
        ConsentFact::Expired => ReasonCode::ConsentExpired,
        ConsentFact::NotYetValid => ReasonCode::ConsentNotYetValid,
        ConsentFact::NotGiven | ConsentFact::Granted { .. } => ReasonCode::ConsentNotGiven,
    }
}

/// Rules (a), (b) and (c) checked once more in plain Rust after the policy
/// engine: the guarantees nobody can switch off must not rest on one
/// mechanism. Every rule that applies is named, for the explanation.
pub(super) fn non_negotiable(
    coverage: ConsentFact,
    purpose: Purpose,
    category: DataCategory,
    recipient: &Recipient,
    facts: &CaseFacts,
) -> Vec<ReasonCode> {
    let mut reasons = Vec::new();
    let sits_in_origin_state = facts.origin_states.contains(&recipient.country);
    let acts_for_origin_state = recipient.is_state_actor() && facts.origin_states.contains(&recipient.state());
    if facts.asylum_linked && recipient.is_state_actor() && (sits_in_origin_state || acts_for_origin_state) {
        reasons.push(ReasonCode::AsylumFirewall);
    }
    if category == DataCategory::Asylum && (sits_in_origin_state || acts_for_origin_state) {
        reasons.push(ReasonCode::AsylumCategoryToOriginState);
    }
    if category == DataCategory::CaseNotes && !matches!(coverage, ConsentFact::Granted { named: true }) {
        reasons.push(ReasonCode::CaseNotesNotNamedByConsent);
    }
    if reveals_child_whereabouts(purpose, category, facts) {
        reasons.push(ReasonCode::ChildWhereaboutsToFamily);
    }
    if !matches!(coverage, ConsentFact::Granted { .. }) {
        reasons.push(consent_reason(coverage));
    }
    reasons
}

/// Rule (d): whether `category` of a child's case, in a reply to the
/// family's side, would tell where the child is without the guardian's
/// consent and a determination that the child rejoin the family.
pub(super) fn reveals_child_whereabouts(purpose: Purpose, category: DataCategory, facts: &CaseFacts) -> bool {
    purpose.is_reply()
        && facts.child
        && WHEREABOUTS.contains(&category)
        && !(facts.consent_by_guardian && facts.best_interests_favour_family)
}

/// The categories that tell where a child is: contact details; the
/// guardian (an institution or a carer names the placement); the family (a
/// relative the child lives with, and their address or phone); free-text
/// notes (which may say anything, a school or a town included).
pub const WHEREABOUTS: [DataCategory; 4] = [DataCategory::Contact, DataCategory::ChildSafeguards, DataCategory::Family, DataCategory::CaseNotes];

/// Decides what of `case` may go to `recipient` for `purpose`.
///
/// `recipient` is `None` when the directory does not know the destination;
/// like every decision that cannot be made, that is a deny.
pub fn decide(
    case: &Case,
    consent: &Consent,
    sender_country: CountryCode,
    recipient: Option<&Recipient>,
    purpose: Purpose,
    policy: &DataProtectionPolicy,
    now: DateTime<Utc>,
) -> Decision {
    decide_from(&gather(case, consent, sender_country, recipient, purpose, now).0, policy)
}

/// How the consent stood for one category when a decision was made: the
/// part of [`Coverage`] a decision reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentFact {
    Granted { named: bool },
    Withdrawn,
    Refused,
    Expired,
    NotYetValid,
    NotGiven,
}

impl From<Coverage> for ConsentFact {
    fn from(coverage: Coverage) -> Self {
        match coverage {
            Coverage::Granted { named, .. } => Self::Granted { named },
            Coverage::Withdrawn => Self::Withdrawn,
            Coverage::Refused => Self::Refused,
            Coverage::Expired => Self::Expired,
            Coverage::NotYetValid => Self::NotYetValid,
            Coverage::NotGiven => Self::NotGiven,
        }
    }
}

/// One category the case holds, as a decision sees it before any policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "need")]
pub enum CategoryFact {
    /// The purpose baseline needs none of what the case holds of it.
    NotNeeded,
    Needed { consent: ConsentFact },
}

/// Everything a decision reads that no policy decides, derived from the
/// submission once (sender): a decision is [`decide_from`] these facts and
/// a policy version. They hold no value of the case, only what the rules
/// ask (recipient attributes, case facts, consent per category), and are
/// what a replay under another policy version needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionFacts {
    pub purpose: Purpose,
    pub sender_country: CountryCode,
    pub at: DateTime<Utc>,
    /// `None` when the directory did not know the destination.
    pub recipient: Option<Recipient>,
    pub case: CaseFacts,
    /// Each category the case holds.
    pub categories: BTreeMap<DataCategory, CategoryFact>,
}

/// The facts of a decision, and the projections of partially needed
/// categories made to tell whether they are needed (reused for the payload).
pub fn gather(
    case: &Case,
    consent: &Consent,
    sender_country: CountryCode,
    recipient: Option<&Recipient>,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> (DecisionFacts, BTreeMap<DataCategory, serde_json::Value>) {
    let mut categories = BTreeMap::new();
    let mut early_projections = BTreeMap::new();
    if let Some(recipient) = recipient {
        for &category in DataCategory::ALL.iter().filter(|c| case.has(**c)) {
            // A whole category with data is never empty once projected; a partial
            // one may be, and must be projected now to tell.
            let needed = needed_fields(purpose, category);
            let early_projection = match needed {
                Some(Fields::Only(_)) => project(case, purpose, category),
                _ => None,
            };
            let fact = if needed.is_some_and(|f| f == Fields::All || early_projection.is_some()) {
                CategoryFact::Needed { consent: consent.coverage(purpose, category, recipient, now).into() }
            } else {
                CategoryFact::NotNeeded
            };
            categories.insert(category, fact);
            if let Some(projection) = early_projection {
                early_projections.insert(category, projection);
            }
        }
    }
    let facts = DecisionFacts {
        purpose,
        sender_country,
        at: now,
        recipient: recipient.cloned(),
        case: case_facts(case, consent, now),
        categories,
    };
    (facts, early_projections)
}

/// [`decide`] and [`crate::domain::minimise::minimise`] in one pass, cutting
/// each category to the purpose baseline once: what a gateway does on submit.
pub fn decide_and_minimise(
    case: &Case,
    consent: &Consent,
    sender_country: CountryCode,
    recipient: Option<&Recipient>,
    purpose: Purpose,
    policy: &DataProtectionPolicy,
    now: DateTime<Utc>,
) -> (Decision, Payload) {
    let (_, decision, payload) = decide_and_minimise_keeping_facts(case, consent, sender_country, recipient, purpose, policy, now);
    (decision, payload)
}

/// [`decide_and_minimise`], and the facts it decided on: what a sending
/// gateway keeps so that a later policy version can be replayed on it.
pub fn decide_and_minimise_keeping_facts(
    case: &Case,
    consent: &Consent,
    sender_country: CountryCode,
    recipient: Option<&Recipient>,
    purpose: Purpose,
    policy: &DataProtectionPolicy,
    now: DateTime<Utc>,
) -> (DecisionFacts, Decision, Payload) {
    let (facts, mut early_projections) = gather(case, consent, sender_country, recipient, purpose, now);
    let decision = decide_from(&facts, policy);
    let payload = payload_of(case, purpose, &decision, &mut early_projections);
    (facts, decision, payload)
}

/// What an allowed `decision` lets go of `case`: each category it sends, as
/// projected while the facts were gathered (cut to what consent covers) or
/// else to the purpose's need; nothing for a denial.
pub fn payload_of(case: &Case, purpose: Purpose, decision: &Decision, early_projections: &mut BTreeMap<DataCategory, serde_json::Value>) -> Payload {
    if !decision.is_allow() {
        return Payload::default();
    }
    let projections = decision
        .sent()
        .keys()
        .filter_map(|category| {
            let projection = early_projections.remove(category).or_else(|| project(case, purpose, *category));
            projection.map(|p| (*category, p))
        })
        .collect();
    Payload::from_categories(projections)
}

/// The decision `policy` makes on `facts`: consent, the built-in rules and
/// the DPO policy, category by category, then the purpose's required
/// categories, then whether the recipient can be reached sealed end to end
/// where a rule requires it.
pub fn decide_from(facts: &DecisionFacts, policy: &DataProtectionPolicy) -> Decision {
    let (purpose, now) = (facts.purpose, facts.at);
    let version = policy.version().to_owned();
    let Some(recipient) = facts.recipient.as_ref() else {
        return Decision::deny(purpose, version, [ReasonCode::RecipientUnknown].into(), BTreeMap::new(), None);
    };
    let case_facts = &facts.case;
    let request_facts = policy.facts(recipient, facts.sender_country, case_facts);
    let end_to_end = end_to_end_requirement(case_facts, recipient, policy.end_to_end());

    let mut sent = BTreeMap::new();
    let mut withheld: BTreeMap<DataCategory, BTreeSet<Withholding>> = BTreeMap::new();
    for (&category, fact) in &facts.categories {
        let (CategoryFact::Needed { consent }, Some(fields)) = (fact, needed_fields(purpose, category)) else {
            withheld.insert(category, [Withholding::because(ReasonCode::NotNeededForPurpose)].into());
            continue;
        };
        let coverage = *consent;
        let (covers, named) = match coverage {
            ConsentFact::Granted { named } => (true, named),
            _ => (false, false),
        };
        let mut reasons = BTreeSet::new();
        let verdict = match &request_facts {
            Ok(request_facts) => policy.evaluate(request_facts, purpose, category, covers, named, now),
            Err(_) => {
                reasons.insert(Withholding::because(ReasonCode::PolicyEvaluationError));
                withheld.insert(category, reasons);
                continue;
            }
        };
        for (policy_id, reason) in &verdict.forbidden_by {
            // The policy engine only knows "not covered"; consent knows why.
            let reason = if *reason == ReasonCode::ConsentNotGiven { consent_reason(coverage) } else { *reason };
            reasons.insert(Withholding { reason, policy: Some(policy_id.clone()) });
        }
        for policy_id in &verdict.failed {
            reasons.insert(Withholding { reason: ReasonCode::PolicyEvaluationError, policy: Some(policy_id.clone()) });
        }
        for policy_id in &verdict.expired {
            reasons.insert(Withholding { reason: ReasonCode::AgreementExpired, policy: Some(policy_id.clone()) });
        }
        if !verdict.allowed && verdict.forbidden_by.is_empty() && verdict.failed.is_empty() && verdict.expired.is_empty() {
            reasons.insert(Withholding::because(ReasonCode::PolicyNoPermit));
        }
        reasons.extend(
            non_negotiable(coverage, purpose, category, recipient, case_facts)
                .into_iter()
                .map(|reason| Withholding { reason, policy: builtin_rule(reason).map(str::to_owned) }),
        );
        if verdict.allowed && reasons.is_empty() {
            sent.insert(category, Sent { fields, permitted_by: verdict.permitted_by });
        } else {
            withheld.insert(category, reasons);
        }
    }

    // Rule (d) as the receiving gateway will check it: what tells where a
    // child is goes back only with the determination that lets it go.
    if purpose.is_reply() && case_facts.child && !sent.contains_key(&DataCategory::ChildSafeguards) {
        for category in WHEREABOUTS {
            if sent.remove(&category).is_some() {
                let reason = ReasonCode::ChildWhereaboutsToFamily;
                withheld.entry(category).or_default().insert(Withholding { reason, policy: builtin_rule(reason).map(str::to_owned) });
            }
        }
    }

    let mut deny_reasons = BTreeSet::new();
    for required in required_categories(purpose) {
        if sent.contains_key(required) {
            continue;
        }
        match withheld.get(required) {
            Some(reasons) => deny_reasons.extend(
                reasons.iter().map(|w| w.reason).map(|r| match r {
                    ReasonCode::NotNeededForPurpose => ReasonCode::RequiredCategoryMissing,
                    other => other,
                }),
            ),
            None => {
                deny_reasons.insert(ReasonCode::RequiredCategoryMissing);
            }
        }
    }
    // A packet that must be sealed end to end cannot go to a recipient
    // without a key of its own: the gateway routing it could read it.
    // Only when nothing else stops it: a key would not help a recipient the
    // firewall or the consent already refuses, and must not seem to.
    if end_to_end.is_some() && !recipient.has_end_to_end_key() && deny_reasons.is_empty() {
        deny_reasons.insert(ReasonCode::RecipientKeyRequired);
    }
    let end_to_end = end_to_end.map(|requirement| requirement.rule_id());
    if deny_reasons.is_empty() {
        Decision::allow(purpose, version, sent, withheld, end_to_end)
    } else {
        Decision::deny(purpose, version, deny_reasons, withheld, end_to_end)
    }
}
