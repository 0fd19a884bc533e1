//! Onward referral (issue 21 §3): the limits a sending gateway's decision
//! puts on what its recipient may pass on within its own country, and the
//! check the receiving gateway makes before it passes anything on. Pure.
//!
//! The limits travel inside the sealed packet, where the payload is: a
//! gateway that cannot read the case cannot read them either, and so never
//! passes on a case sealed end to end to the organisation.
//!
//! What may go onward is never more than what was sent, and only what the
//! person's consent lets go onward: a scope with `onward` (the kinds of
//! organisation, and whether it may leave the country), for that scope's
//! purposes and until its end, less what a refusal names, and only what
//! the sending DPO's policy permits (Cedar action `refer_onward`, asked per
//! kind, purpose and category by the caller). One rule nobody
//! can switch off holds whatever the limits say: an asylum-linked case is
//! never passed on to a state actor that sits in, or acts for, one of the
//! person's origin states.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::consent::{Consent, Refusal};
use super::policy::{CaseFacts, OnwardQuestion};
use super::recipient::Recipient;
use super::{CountryCode, DataCategory, Purpose, RecipientKind};

/// One scope's consent to onward referral, cut to what was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnwardGrant {
    /// Categories of the packet that may be passed on.
    pub categories: BTreeSet<DataCategory>,
    /// Purposes an onward referral may be for.
    pub purposes: BTreeSet<Purpose>,
    /// Kinds of organisation it may go to.
    pub recipient_kinds: BTreeSet<RecipientKind>,
    /// No onward referral at or after this.
    pub until: DateTime<Utc>,
    /// It may go to an organisation outside the recipient's country.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leave_country: bool,
}

/// What the recipient may pass on, and to whom: empty `grants` means nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnwardLimits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<OnwardGrant>,
    /// The person's refusals, checked against each onward recipient (a
    /// refusal of an organisation, a kind or a country holds onward too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<Refusal>,
    /// Built in: state actors that sit in or act for these states never
    /// receive it onward (the person's origin states, when the case is
    /// asylum-linked; empty otherwise).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub never_to_state_actors_of: BTreeSet<CountryCode>,
}

impl OnwardLimits {
    /// Nothing may be passed on.
    pub fn allow_nothing(&self) -> bool {
        self.grants.is_empty()
    }
}

/// The limits for a referral for `purpose` to `recipient` that sends the
/// categories `sent`: from the consent's onward scopes, each cut to what
/// `permits` (the DPO's policy, action `refer_onward`) lets go to each kind
/// of organisation for each purpose, and the built-in rule from the case's
/// facts. A category sent under an emergency override and not under
/// consent is never passed on: no scope covers it.
pub fn onward_limits(
    consent: &Consent,
    case: &CaseFacts,
    purpose: Purpose,
    recipient: &Recipient,
    sent: &BTreeSet<DataCategory>,
    now: DateTime<Utc>,
    permits: impl Fn(OnwardQuestion) -> bool,
) -> OnwardLimits {
    let mut grants: Vec<OnwardGrant> = Vec::new();
    for (scope_grant, named) in consent.onward_grants(purpose, recipient, sent, now) {
        for &onward_purpose in &scope_grant.purposes {
            for &onward_kind in &scope_grant.recipient_kinds {
                let categories: BTreeSet<DataCategory> = scope_grant
                    .categories
                    .iter()
                    .copied()
                    .filter(|&category| permits(OnwardQuestion { onward_kind, onward_purpose, category, named: named.contains(&category) }))
                    .collect();
                if categories.is_empty() {
                    continue;
                }
                // One grant for every kind the same categories may go to.
                let same = grants.iter_mut().find(|g| {
                    g.categories == categories && g.purposes == [onward_purpose].into() && g.until == scope_grant.until && g.leave_country == scope_grant.leave_country
                });
                match same {
                    Some(grant) => {
                        grant.recipient_kinds.insert(onward_kind);
                    }
                    None => grants.push(OnwardGrant {
                        categories,
                        purposes: [onward_purpose].into(),
                        recipient_kinds: [onward_kind].into(),
                        until: scope_grant.until,
                        leave_country: scope_grant.leave_country,
                    }),
                }
            }
        }
    }
    if grants.is_empty() {
        // Nothing to limit: the refusals and the origin states would only tell about the person.
        return OnwardLimits::default();
    }
    OnwardLimits {
        grants,
        refusals: consent.refusals.clone(),
        never_to_state_actors_of: if case.asylum_linked { case.origin_states.iter().copied().collect() } else { BTreeSet::new() },
    }
}

/// Why an onward referral may not go at all. Codes are stable (problem
/// members, audit reasons, the sender's timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OnwardRefusal {
    /// Built in: an asylum-linked case, and a state actor of an origin state.
    #[error("the case may never be passed on to this organisation")]
    StateActorOfOriginState,
    /// Only outside the country would the consent allow it, and it does not let the case leave.
    #[error("the consent does not let the case leave the country")]
    LeavesCountry,
    /// The consent's onward scopes have ended.
    #[error("the consent to pass the case on has ended")]
    Expired,
    /// No onward scope covers this purpose and kind of organisation, or a refusal holds back every category.
    #[error("the consent does not let the case be passed on to this organisation for this purpose")]
    NotConsented,
}

impl OnwardRefusal {
    pub const fn code(self) -> &'static str {
        match self {
            Self::StateActorOfOriginState => "state_actor_of_origin_state",
            Self::LeavesCountry => "leaves_country",
            Self::Expired => "onward_consent_expired",
            Self::NotConsented => "onward_not_consented",
        }
    }
}

/// What of `held` (the categories the recipient still holds of the case)
/// may be passed on to `onward` for `purpose` at `now`, by a recipient in
/// `here`: never more than `held`, never outside the limits.
pub fn onward_categories(
    limits: &OnwardLimits,
    purpose: Purpose,
    onward: &Recipient,
    here: CountryCode,
    held: &BTreeSet<DataCategory>,
    now: DateTime<Utc>,
) -> Result<BTreeSet<DataCategory>, OnwardRefusal> {
    let origins = &limits.never_to_state_actors_of;
    if onward.is_state_actor() && (origins.contains(&onward.country) || origins.contains(&onward.state())) {
        return Err(OnwardRefusal::StateActorOfOriginState);
    }
    // A consulate here acting for another state is abroad for this purpose.
    let stays = onward.country == here && onward.state() == here;
    let for_this = |grant: &&OnwardGrant| grant.purposes.contains(&purpose) && grant.recipient_kinds.contains(&onward.kind);
    let in_time = |grant: &&OnwardGrant| now < grant.until;
    let where_allowed = |grant: &&OnwardGrant| stays || grant.leave_country;
    let allowed: BTreeSet<DataCategory> = limits
        .grants
        .iter()
        .filter(for_this)
        .filter(in_time)
        .filter(where_allowed)
        .flat_map(|grant| grant.categories.iter().copied())
        .filter(|category| held.contains(category))
        .filter(|category| !limits.refusals.iter().any(|refusal| refusal.applies_to(purpose, *category, onward)))
        .collect();
    if !allowed.is_empty() {
        return Ok(allowed);
    }
    // Nothing: say what stood in the way, nearest first.
    let matching: Vec<&OnwardGrant> = limits.grants.iter().filter(for_this).collect();
    if matching.iter().any(|g| in_time(g) && !where_allowed(g)) {
        Err(OnwardRefusal::LeavesCountry)
    } else if !matching.is_empty() && matching.iter().all(|g| !in_time(g)) {
        Err(OnwardRefusal::Expired)
    } else {
        Err(OnwardRefusal::NotConsented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrgId;
    use chrono::TimeZone;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, 12, 0, 0).unwrap()
    }

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    fn org(id: &str, kind: RecipientKind, sits_in: &str) -> Recipient {
        Recipient::new(OrgId::parse(id).unwrap(), country(sits_in), kind, false, BTreeSet::new())
    }

    fn grant(categories: &[DataCategory], kinds: &[RecipientKind], leave_country: bool) -> OnwardGrant {
        OnwardGrant {
            categories: categories.iter().copied().collect(),
            purposes: [Purpose::Reintegration].into(),
            recipient_kinds: kinds.iter().copied().collect(),
            until: at(20),
            leave_country,
        }
    }

    use DataCategory::{Contact, Health, Identity};
    use RecipientKind::{HealthProvider, Ngo, SocialWelfare};

    #[test]
    fn only_what_a_grant_covers_and_the_recipient_still_holds() {
        let limits = OnwardLimits {
            grants: vec![grant(&[Identity, Health], &[HealthProvider], false), grant(&[Identity, Contact], &[Ngo], false)],
            ..OnwardLimits::default()
        };
        let clinic = org("nga-clinic-ikeja", HealthProvider, "NGA");
        let held: BTreeSet<DataCategory> = [Identity, Contact, Health].into();
        let categories = |limits: &OnwardLimits, to: &Recipient, purpose, held: &BTreeSet<DataCategory>, day| onward_categories(limits, purpose, to, country("NGA"), held, at(day));
        assert_eq!(categories(&limits, &clinic, Purpose::Reintegration, &held, 10), Ok([Identity, Health].into()));
        // Never more than it still holds (a partial withdrawal took health).
        assert_eq!(categories(&limits, &clinic, Purpose::Reintegration, &[Identity].into(), 10), Ok([Identity].into()));
        assert_eq!(categories(&limits, &org("nga-shelter", Ngo, "NGA"), Purpose::Reintegration, &held, 10), Ok([Identity, Contact].into()));
        // Another kind, another purpose, past the end: nothing.
        assert_eq!(categories(&limits, &org("nga-welfare", SocialWelfare, "NGA"), Purpose::Reintegration, &held, 10), Err(OnwardRefusal::NotConsented));
        assert_eq!(categories(&limits, &clinic, Purpose::Return, &held, 10), Err(OnwardRefusal::NotConsented));
        assert_eq!(categories(&limits, &clinic, Purpose::Reintegration, &held, 20), Err(OnwardRefusal::Expired));
        // Abroad, or to a foreign consulate here, only when a grant lets it leave.
        assert_eq!(categories(&limits, &org("gha-clinic", HealthProvider, "GHA"), Purpose::Reintegration, &held, 10), Err(OnwardRefusal::LeavesCountry));
        let leaving = OnwardLimits { grants: vec![grant(&[Identity], &[HealthProvider], true)], ..OnwardLimits::default() };
        assert_eq!(categories(&leaving, &org("gha-clinic", HealthProvider, "GHA"), Purpose::Reintegration, &held, 10), Ok([Identity].into()));
        assert_eq!(categories(&OnwardLimits::default(), &clinic, Purpose::Reintegration, &held, 10), Err(OnwardRefusal::NotConsented));
    }

    #[test]
    fn the_persons_refusals_and_the_built_in_rule_hold_onward() {
        let clinic = org("nga-clinic-ikeja", HealthProvider, "NGA");
        let held: BTreeSet<DataCategory> = [Identity, Health].into();
        let mut limits = OnwardLimits { grants: vec![grant(&[Identity, Health], &[HealthProvider, SocialWelfare], false)], ..OnwardLimits::default() };
        limits.refusals = vec![Refusal { categories: [Health].into(), ..Refusal::default() }];
        assert_eq!(onward_categories(&limits, Purpose::Reintegration, &clinic, country("NGA"), &held, at(10)), Ok([Identity].into()));
        limits.refusals = vec![Refusal::default()];
        assert_eq!(onward_categories(&limits, Purpose::Reintegration, &clinic, country("NGA"), &held, at(10)), Err(OnwardRefusal::NotConsented));

        limits.refusals.clear();
        limits.never_to_state_actors_of = [country("NGA")].into();
        let welfare = org("nga-welfare", SocialWelfare, "NGA");
        assert!(welfare.is_state_actor());
        assert_eq!(onward_categories(&limits, Purpose::Reintegration, &welfare, country("NGA"), &held, at(10)), Err(OnwardRefusal::StateActorOfOriginState));
        // Non-state organisations there are not touched by it.
        assert_eq!(onward_categories(&limits, Purpose::Reintegration, &clinic, country("NGA"), &held, at(10)), Ok(held.clone()));
    }
}
