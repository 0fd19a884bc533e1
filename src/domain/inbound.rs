//! The receiving gateway's own decision on a packet it has opened, before
//! anything reaches the recipient: it trusts the sender's gateway for what
//! only the sender could see (the consent itself), and checks again all it
//! can read. Any reason refuses the whole packet: the recipient gets the
//! case as the sender's decision shaped it, or nothing, and the refusal's
//! reasons go back to the sender, never to the recipient.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::case::Case;
use super::consent::Coverage;
use super::decide::{facts_with_consent_giver, non_negotiable};
use super::decision::ReasonCode;
use super::policy::{CaseFacts, DataProtectionPolicy};
use super::recipient::Recipient;
use super::{CountryCode, DataCategory, Purpose};

/// What the receiving gateway can read of a packet.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub sender: CountryCode,
    pub purpose: Purpose,
    /// The minimised case: category name to its fields.
    pub body: &'a Value,
    pub consent_expires_at: Option<DateTime<Utc>>,
    pub retention_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screening {
    /// Hand the case to the recipient as received.
    Forward,
    /// Hand nothing over; tell the sender why.
    Refuse(BTreeSet<ReasonCode>),
}

/// Screens a packet sealed end to end, which this gateway can only route:
/// whether `recipient` (`None`: not in the directory) is one it serves. The
/// sending gateway's decision on the content is final; nothing here can
/// depend on the content, so a refusal tells nothing about the case.
pub fn screen_routing(recipient: Option<&Recipient>, here: CountryCode) -> Screening {
    match recipient {
        None => Screening::Refuse([ReasonCode::RecipientUnknown].into()),
        Some(recipient) if recipient.country != here => Screening::Refuse([ReasonCode::RecipientNotServedHere].into()),
        Some(_) => Screening::Forward,
    }
}

/// Screens `received` for `recipient` (`None`: not in the directory) at the
/// gateway of `here`, under this gateway's sharing policy.
pub fn screen(received: &Received<'_>, recipient: Option<&Recipient>, here: CountryCode, policy: &DataProtectionPolicy, now: DateTime<Utc>) -> Screening {
    let Some(recipient) = recipient else {
        return Screening::Refuse([ReasonCode::RecipientUnknown].into());
    };
    let mut reasons = BTreeSet::new();
    if recipient.country != here {
        reasons.insert(ReasonCode::RecipientNotServedHere);
    }
    if received.consent_expires_at.is_some_and(|end| end <= now) {
        reasons.insert(ReasonCode::ConsentExpired);
    }
    if received.retention_until.is_some_and(|end| end <= now) {
        reasons.insert(ReasonCode::RetentionPassed);
    }
    let case = match serde_json::from_value::<Case>(received.body.clone()) {
        Ok(case) => case,
        Err(_) => {
            reasons.insert(ReasonCode::PayloadUnreadable);
            return Screening::Refuse(reasons);
        }
    };
    let categories: Vec<DataCategory> = DataCategory::ALL.iter().copied().filter(|c| case.has(*c)).collect();
    if categories.is_empty() {
        reasons.insert(ReasonCode::PayloadUnreadable);
        return Screening::Refuse(reasons);
    }
    // The consent was checked by the sending gateway, the only one to see
    // it; here it counts as given, by a guardian where that is required.
    let facts = facts_with_consent_giver(&case, true, now);
    reasons.extend(built_in_refusals(&case, &facts, recipient, received.purpose, &categories));
    match policy.facts(recipient, received.sender, &facts) {
        Ok(request) => {
            for category in categories {
                let verdict = policy.evaluate(&request, received.purpose, category, true, true, now);
                reasons.extend(verdict.forbidden_by.iter().map(|(_, reason)| *reason));
                if !verdict.failed.is_empty() {
                    reasons.insert(ReasonCode::PolicyEvaluationError);
                }
                if !verdict.expired.is_empty() {
                    reasons.insert(ReasonCode::AgreementExpired);
                }
                if !verdict.allowed && verdict.forbidden_by.is_empty() && verdict.failed.is_empty() && verdict.expired.is_empty() {
                    reasons.insert(ReasonCode::PolicyNoPermit);
                }
            }
        }
        Err(_) => {
            reasons.insert(ReasonCode::PolicyEvaluationError);
        }
    }
    if reasons.is_empty() { Screening::Forward } else { Screening::Refuse(reasons) }
}

/// The rules nobody can switch off, checked by a gateway that received a
/// case (`facts` from [`facts_with_consent_giver`], the consent counting as
/// given: the sender checked it) for handing `categories` of it to
/// `recipient`: every rule that applies, named.
pub(super) fn built_in_refusals(case: &Case, facts: &CaseFacts, recipient: &Recipient, purpose: Purpose, categories: &[DataCategory]) -> BTreeSet<ReasonCode> {
    let checked = Coverage::Granted { named: true, until: DateTime::<Utc>::MAX_UTC };
    let mut reasons: BTreeSet<ReasonCode> =
        categories.iter().flat_map(|category| non_negotiable(checked.into(), purpose, *category, recipient, facts)).collect();
    // Rule (d) reads the determination from the case as received: a child's
    // contact details that came without it are refused here.
    // An asylum-linked case that does not say the person's nationalities:
    // no state actor gets it, since any might be of an origin state the
    // sender saw and this gateway cannot.
    let nationalities_readable = case.identity.as_ref().is_some_and(|identity| !identity.nationalities.is_empty());
    if facts.asylum_linked && !nationalities_readable && recipient.is_state_actor() {
        reasons.insert(ReasonCode::AsylumFirewall);
    }
    reasons
}
