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
//! kind, purpose and category by the caller).
//!
//! A case passed on never leaves the recipient's country, whatever the
//! consent's `leave_country` says: the DPO's policy is asked about an
//! organisation there, and the receiving gateway can check only those.
//! An organisation there acting for another state (a consulate) is abroad
//! for this purpose.
//!
//! One rule nobody can switch off holds whatever the consent and the policy
//! say: an asylum-linked case never reaches, onward, a state actor that sits
//! in or acts for one of the person's origin states. It is applied here, at
//! the sending gateway, so that the limits need not name the origin states
//! (nor tell that the case is asylum-linked) to whoever reads them:
//! - no origin state's body outside the recipient's country is reachable
//!   (the case stays in the country; consulates are abroad);
//! - when the recipient sits in an origin state, the government kinds are
//!   dropped from the limits: no origin state's body there is reachable by
//!   kind;
//! - an organisation the directory marks as a state actor although its kind
//!   is not a government one (a state-run NGO) never receives a case
//!   onward: the person consented to a kind, not to a state body of it.
//!
//! The other built-in rules hold here too, in Rust besides the Cedar rules
//! `refer_onward` meets: `case_notes` only when the onward scope names them;
//! `asylum` never when the recipient sits in an origin state; a child's
//! case never onward for `return` (its best-interests rules are the return
//! referral's, not an onward one's); and nothing of a referral sent under an
//! emergency override (it went without the person's, or a guardian's, say).
//!
//! The person's refusals are applied here too, as far as they can be before
//! the onward organisation is known (by kind, in the recipient's country:
//! everything it could be); a refusal naming an organisation travels as its
//! id.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::case::Case;
use super::consent::Consent;
use super::decide::facts_with_consent_giver;
use super::inbound::built_in_refusals;
use super::minimise::project;
use super::policy::{CaseFacts, DataProtectionPolicy, OnwardQuestion};
use super::status::ReferralProgress;
use super::recipient::Recipient;
use super::{CountryCode, DataCategory, OrgId, Purpose, RecipientKind};

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
    /// No onward referral at or after this: the scope's end, or that of the
    /// sharing agreement the DPO's permit rests on, whichever comes first.
    pub until: DateTime<Utc>,
}

/// What the recipient may pass on, and to whom: empty `grants` means nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnwardLimits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<OnwardGrant>,
    /// Organisations the person refused by name: never onward to them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub refused_organisations: BTreeSet<OrgId>,
}

impl OnwardLimits {
    /// Nothing may be passed on.
    pub fn allow_nothing(&self) -> bool {
        self.grants.is_empty()
    }

    /// The grants for passing the case on for `purpose` to an organisation of `kind`.
    fn grants_for(&self, purpose: Purpose, kind: RecipientKind) -> impl Iterator<Item = &OnwardGrant> {
        self.grants.iter().filter(move |grant| grant.purposes.contains(&purpose) && grant.recipient_kinds.contains(&kind))
    }

    /// The limits cut to the categories still `held` (after a withdrawal,
    /// or what the receiving gateway withheld); `None` when nothing is left.
    pub fn within(&self, held: &BTreeSet<DataCategory>) -> Option<Self> {
        let grants: Vec<OnwardGrant> = self
            .grants
            .iter()
            .map(|grant| OnwardGrant { categories: grant.categories.intersection(held).copied().collect(), ..grant.clone() })
            .filter(|grant| !grant.categories.is_empty())
            .collect();
        (!grants.is_empty()).then(|| Self { grants, refused_organisations: self.refused_organisations.clone() })
    }
}

/// The categories a case body (category name to fields) holds.
pub fn categories_in(body: &serde_json::Value) -> BTreeSet<DataCategory> {
    body.as_object().map(|fields| fields.keys().filter_map(|name| name.parse().ok()).collect()).unwrap_or_default()
}

/// An onward organisation as far as it is known before it is chosen: its
/// kind, sitting in and acting for `country`, a state actor when the kind is
/// a government one, no services. Its id names no real organisation.
pub fn onward_organisation(kind: RecipientKind, country: CountryCode) -> Option<Recipient> {
    let id = OrgId::parse(&format!("onward.{}", kind.as_str())).ok()?;
    Some(Recipient::new(id, country, kind, false, BTreeSet::new()))
}

/// How a referral was allowed: under the person's consent, or only under
/// an emergency override (nothing of it is ever passed on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentUnder {
    Consent,
    EmergencyOverride,
}

/// The limits for a referral for `purpose` to `recipient` that sends the
/// categories `sent`: from the consent's onward scopes, each cut to what
/// the person's refusals leave and to what `permits` (the DPO's policy,
/// action `refer_onward`: `Some(until)` when a permit allows it, until its
/// agreement ends) lets go to each kind of organisation for each purpose,
/// with the built-in rules applied (see the module).
#[allow(clippy::too_many_arguments)]
pub fn onward_limits(
    consent: &Consent,
    case: &CaseFacts,
    purpose: Purpose,
    recipient: &Recipient,
    sent: &BTreeSet<DataCategory>,
    sent_under: SentUnder,
    now: DateTime<Utc>,
    permits: impl Fn(OnwardQuestion) -> Option<DateTime<Utc>>,
) -> OnwardLimits {
    if sent_under == SentUnder::EmergencyOverride {
        return OnwardLimits::default();
    }
    let here = recipient.country;
    let in_origin_state = case.origin_states.contains(&recipient.country) || case.origin_states.contains(&recipient.state());
    let mut grants: Vec<OnwardGrant> = Vec::new();
    for (scope_grant, named) in consent.onward_grants(purpose, recipient, sent, now) {
        for &onward_purpose in &scope_grant.purposes {
            if case.child && onward_purpose == Purpose::Return {
                continue;
            }
            for &onward_kind in &scope_grant.recipient_kinds {
                if case.asylum_linked && in_origin_state && onward_kind.is_state_actor() {
                    continue;
                }
                let Some(like) = onward_organisation(onward_kind, here) else { continue };
                // Each category that may go, until when.
                let allowed = scope_grant.categories.iter().copied().filter_map(|category| {
                    let named = named.contains(&category);
                    let held_back = (category == DataCategory::CaseNotes && !named)
                        || (category == DataCategory::Asylum && in_origin_state)
                        || consent.refusals.iter().any(|r| r.applies_to(onward_purpose, category, &like));
                    if held_back {
                        return None;
                    }
                    let permitted_until = permits(OnwardQuestion { onward_kind, onward_purpose, category, named })?;
                    Some((category, permitted_until.min(scope_grant.until)))
                });
                for (category, until) in allowed {
                    add(&mut grants, onward_purpose, onward_kind, category, until);
                }
            }
        }
    }
    if grants.is_empty() {
        // Nothing to limit: the refusals would only tell about the person.
        return OnwardLimits::default();
    }
    // Grants that differ only in their kinds are one grant.
    let mut merged: Vec<OnwardGrant> = Vec::new();
    for grant in grants {
        match merged.iter_mut().find(|g| g.categories == grant.categories && g.purposes == grant.purposes && g.until == grant.until) {
            Some(same) => same.recipient_kinds.extend(grant.recipient_kinds),
            None => merged.push(grant),
        }
    }
    OnwardLimits { grants: merged, refused_organisations: consent.refusals.iter().flat_map(|r| r.named_organisations()).cloned().collect() }
}

/// Adds `category` to the grant for (`purpose`, `kind`, `until`), or starts one.
fn add(grants: &mut Vec<OnwardGrant>, purpose: Purpose, kind: RecipientKind, category: DataCategory, until: DateTime<Utc>) {
    let same = grants.iter_mut().find(|g| g.purposes == [purpose].into() && g.recipient_kinds == [kind].into() && g.until == until);
    match same {
        Some(grant) => {
            grant.categories.insert(category);
        }
        None => grants.push(OnwardGrant { categories: [category].into(), purposes: [purpose].into(), recipient_kinds: [kind].into(), until }),
    }
}

/// Why an onward referral may not go at all. Codes are stable (problem
/// members, audit reasons, the sender's timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OnwardRefusal {
    /// A state body of a kind that is not a government one (a state-run NGO).
    #[error("the organisation is a state body; the person consented to a kind of organisation, not to it")]
    StateBodyOfAnotherKind,
    /// The person refused this organisation by name.
    #[error("the person refused this organisation")]
    RefusedByPerson,
    /// The organisation is abroad, or acts for another state: a case passed on stays in the country.
    #[error("a case is passed on only within the recipient's country")]
    LeavesCountry,
    /// The consent's onward scopes have ended.
    #[error("the consent to pass the case on has ended")]
    Expired,
    /// No onward scope covers this purpose and kind of organisation (or a
    /// category asked for).
    #[error("the consent does not let the case be passed on to this organisation for this purpose")]
    NotConsented,
    /// Not an organisation of the federation's directory.
    #[error("the organisation is not in the directory")]
    UnknownOrganisation,
    /// The organisation that holds the case asked to pass it to itself.
    #[error("the case is already with this organisation")]
    SameOrganisation,
    /// Sealed end to end to the organisation: this gateway cannot read it,
    /// nor its limits, and so cannot pass it on.
    #[error("the case is sealed end to end; this gateway cannot pass it on")]
    SealedEndToEnd,
    /// One of the rules nobody can switch off, checked again here against the organisation itself.
    #[error("a rule nobody can switch off forbids it")]
    NonNegotiableRule,
    /// The receiving gateway's DPO's policy does not permit it (action `refer_onward`).
    #[error("this gateway's sharing policy does not permit it")]
    NotPermittedHere,
    /// What may go is nothing the onward purpose needs.
    #[error("nothing the case may pass on is needed for this purpose")]
    NothingNeeded,
    /// The case as held cannot be read as a case.
    #[error("the case cannot be read")]
    CaseUnreadable,
}

impl OnwardRefusal {
    pub const fn code(self) -> &'static str {
        match self {
            Self::StateBodyOfAnotherKind => "state_body_of_another_kind",
            Self::RefusedByPerson => "refused_by_person",
            Self::LeavesCountry => "leaves_country",
            Self::Expired => "onward_consent_expired",
            Self::NotConsented => "onward_not_consented",
            Self::UnknownOrganisation => "recipient_unknown",
            Self::SameOrganisation => "same_organisation",
            Self::SealedEndToEnd => "sealed_end_to_end",
            Self::NonNegotiableRule => "non_negotiable_rule",
            Self::NotPermittedHere => "onward_policy_no_permit",
            Self::NothingNeeded => "nothing_needed",
            Self::CaseUnreadable => "case_unreadable",
        }
    }

    pub const ALL: [OnwardRefusal; 12] = [
        Self::StateBodyOfAnotherKind,
        Self::RefusedByPerson,
        Self::LeavesCountry,
        Self::Expired,
        Self::NotConsented,
        Self::UnknownOrganisation,
        Self::SameOrganisation,
        Self::SealedEndToEnd,
        Self::NonNegotiableRule,
        Self::NotPermittedHere,
        Self::NothingNeeded,
        Self::CaseUnreadable,
    ];
}

/// An onward referral the organisation holding a case asks its gateway for.
#[derive(Debug, Clone, Copy)]
pub struct OnwardAsk<'a> {
    /// The limits the sending gateway put on the case (`None`: none came).
    pub limits: Option<&'a OnwardLimits>,
    pub purpose: Purpose,
    /// The organisation it is to go to; `None`: not in the directory.
    pub onward: Option<&'a Recipient>,
    /// The organisation that holds the case and asks.
    pub referred_by: &'a Recipient,
    /// The gateway's country: the case stays in it.
    pub here: CountryCode,
    /// The sending gateway's country.
    pub sender: CountryCode,
    /// The case as held (category name to fields): cut by withdrawals since.
    pub body: &'a serde_json::Value,
    /// Only these categories, if the organisation names them.
    pub requested: Option<&'a BTreeSet<DataCategory>>,
}

/// What an onward referral passes on: the categories, and the case cut to
/// them and to what the onward purpose needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OnwardCopy {
    pub categories: BTreeSet<DataCategory>,
    pub body: serde_json::Value,
    /// The end of what let them go on (the grants' `until`, the earliest
    /// over the categories, and the end of this gateway's sharing agreement
    /// behind its permit, if earlier): the copy is not kept past it.
    pub until: DateTime<Utc>,
}

/// The receiving gateway's decision on an onward referral: within the
/// limits that came with the case ([`onward_categories`]: never more than
/// is held, in the country, as the consent and the sender's DPO allow), for
/// what the organisation asks, under the rules nobody can switch off
/// checked again against the onward organisation itself, and under this
/// gateway's DPO's policy (action `refer_onward`, its principal the onward
/// organisation, per category); then minimised to what the onward purpose
/// needs. Any refusal refuses the whole of it.
pub fn decide_onward(ask: &OnwardAsk<'_>, policy: &DataProtectionPolicy, now: DateTime<Utc>) -> Result<OnwardCopy, OnwardRefusal> {
    let onward = ask.onward.ok_or(OnwardRefusal::UnknownOrganisation)?;
    if onward.id == ask.referred_by.id {
        return Err(OnwardRefusal::SameOrganisation);
    }
    let limits = ask.limits.ok_or(OnwardRefusal::NotConsented)?;
    let held = categories_in(ask.body);
    let mut categories = onward_categories(limits, ask.purpose, onward, ask.here, &held, now)?;
    if let Some(requested) = ask.requested {
        if !requested.is_subset(&categories) {
            return Err(OnwardRefusal::NotConsented);
        }
        categories = requested.clone();
    }
    let case: Case = serde_json::from_value(ask.body.clone()).map_err(|_| OnwardRefusal::CaseUnreadable)?;
    // The consent counts as given (the sender checked it), by a guardian where one is needed.
    let facts = facts_with_consent_giver(&case, true, now);
    let listed: Vec<DataCategory> = categories.iter().copied().collect();
    if !built_in_refusals(&case, &facts, onward, ask.purpose, &listed).is_empty() {
        return Err(OnwardRefusal::NonNegotiableRule);
    }
    let request = policy.facts(onward, ask.sender, &facts).map_err(|_| OnwardRefusal::NotPermittedHere)?;
    // Until when this gateway's permits let all of it go: the earliest of their agreements' ends.
    let mut permitted_until = DateTime::<Utc>::MAX_UTC;
    for &category in &categories {
        let question = OnwardQuestion { onward_kind: onward.kind, onward_purpose: ask.purpose, category, named: true };
        let until = policy.permits_onward_to(&request, ask.referred_by, onward, question, now).ok_or(OnwardRefusal::NotPermittedHere)?;
        permitted_until = permitted_until.min(until);
    }
    let kept: serde_json::Map<String, serde_json::Value> = categories
        .iter()
        .filter_map(|&category| project(&case, ask.purpose, category).map(|value| (category.as_str().to_owned(), value)))
        .collect();
    if kept.is_empty() {
        return Err(OnwardRefusal::NothingNeeded);
    }
    let categories: BTreeSet<DataCategory> = kept.keys().filter_map(|name| name.parse().ok()).collect();
    // Each category may go until the last in-time grant for it ends; the copy as a whole until the first of those.
    let until = categories
        .iter()
        .filter_map(|category| {
            limits.grants_for(ask.purpose, onward.kind).filter(|g| now < g.until && g.categories.contains(category)).map(|g| g.until).max()
        })
        .min()
        .ok_or(OnwardRefusal::NotConsented)?
        .min(permitted_until);
    Ok(OnwardCopy { categories, body: serde_json::Value::Object(kept), until })
}

vocabulary! {
    /// A step of an onward referral, as the original sender's timeline
    /// records it (an entry `onward`, among its reason codes).
    OnwardStep, "onward step" {
        Referred => "referred",
        Refused => "refused",
        Acknowledged => "acknowledged",
        Undeliverable => "undeliverable",
        Accepted => "accepted",
        Declined => "declined",
        InProgress => "in_progress",
        Arrived => "arrived",
        ServicesDelivered => "services_delivered",
        Closed => "closed",
        ErasureConfirmed => "erasure_confirmed",
        NarrowingConfirmed => "narrowing_confirmed",
    }
}

impl OnwardStep {
    /// The step an organisation's report on an onward copy is.
    pub const fn reported(progress: ReferralProgress) -> Self {
        match progress {
            ReferralProgress::Accepted => Self::Accepted,
            ReferralProgress::Declined => Self::Declined,
            ReferralProgress::InProgress => Self::InProgress,
            ReferralProgress::Arrived => Self::Arrived,
            ReferralProgress::ServicesDelivered => Self::ServicesDelivered,
            ReferralProgress::Closed => Self::Closed,
            ReferralProgress::Forwarded => Self::Acknowledged,
            // A push given up on (the gateway's own refusal never reaches a copy).
            ReferralProgress::Refused | ReferralProgress::Onward => Self::Undeliverable,
        }
    }
}

/// An onward movement of a case, as it goes back to the original sender:
/// codes only, never the onward organisation (its kind stands for it),
/// never the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnwardMovement {
    /// The copy's number among those of the case at the receiving gateway
    /// (`None`: nothing was passed on).
    pub copy: Option<u32>,
    pub kind: RecipientKind,
    pub step: OnwardStep,
    /// Why: a refusal's code, or the organisation's reason code.
    pub reason: Option<String>,
}

impl OnwardMovement {
    /// The reason codes of the `onward` status: `onward_<n>` (the copy, when
    /// there is one), the kind, the step, and the reason if any.
    pub fn reason_codes(&self) -> Vec<String> {
        let copy = self.copy.map(|n| format!("onward_{n}"));
        copy.into_iter()
            .chain([self.kind.as_str().to_owned(), self.step.as_str().to_owned()])
            .chain(self.reason.clone().filter(|code| super::status::is_reason_code(code)))
            .collect()
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
    if onward.is_state_actor() && !onward.kind.is_state_actor() {
        return Err(OnwardRefusal::StateBodyOfAnotherKind);
    }
    if limits.refused_organisations.contains(&onward.id) {
        return Err(OnwardRefusal::RefusedByPerson);
    }
    let in_time = |grant: &&OnwardGrant| now < grant.until;
    let matching: Vec<&OnwardGrant> = limits.grants_for(purpose, onward.kind).collect();
    // A consulate here acting for another state is abroad for this purpose.
    if onward.country != here || onward.state() != here {
        return Err(if matching.is_empty() { OnwardRefusal::NotConsented } else { OnwardRefusal::LeavesCountry });
    }
    let allowed: BTreeSet<DataCategory> = matching
        .iter()
        .copied()
        .filter(in_time)
        .flat_map(|grant| grant.categories.iter().copied())
        .filter(|category| held.contains(category))
        .collect();
    if !allowed.is_empty() {
        return Ok(allowed);
    }
    // Nothing: say what stood in the way.
    if !matching.is_empty() && matching.iter().all(|g| !in_time(g)) {
        Err(OnwardRefusal::Expired)
    } else {
        Err(OnwardRefusal::NotConsented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consent::{CategorySelection, ConsentGiver, ConsentMethod, OnwardConsent, RecipientSelector, Refusal, Scope};
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

    fn grant(categories: &[DataCategory], kinds: &[RecipientKind]) -> OnwardGrant {
        OnwardGrant {
            categories: categories.iter().copied().collect(),
            purposes: [Purpose::Reintegration].into(),
            recipient_kinds: kinds.iter().copied().collect(),
            until: at(20),
        }
    }

    use DataCategory::{Asylum, CaseNotes, Contact, Health, Identity};
    use RecipientKind::{HealthProvider, Ngo, SocialWelfare};

    #[test]
    fn only_what_a_grant_covers_and_the_recipient_still_holds_in_its_country() {
        let limits = OnwardLimits { grants: vec![grant(&[Identity, Health], &[HealthProvider]), grant(&[Identity, Contact], &[Ngo])], ..OnwardLimits::default() };
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
        // Abroad, or to a foreign consulate here: never.
        assert_eq!(categories(&limits, &org("gha-clinic", HealthProvider, "GHA"), Purpose::Reintegration, &held, 10), Err(OnwardRefusal::LeavesCountry));
        let consulate = org("gha-clinic-lagos", HealthProvider, "NGA").representing(country("GHA"));
        assert_eq!(categories(&limits, &consulate, Purpose::Reintegration, &held, 10), Err(OnwardRefusal::LeavesCountry));
        assert_eq!(categories(&OnwardLimits::default(), &clinic, Purpose::Reintegration, &held, 10), Err(OnwardRefusal::NotConsented));
    }

    #[test]
    fn limits_are_cut_to_what_is_still_held() {
        let limits = OnwardLimits {
            grants: vec![grant(&[Identity, Health], &[HealthProvider]), grant(&[Contact], &[Ngo])],
            refused_organisations: [OrgId::parse("nga-clinic-ikeja").unwrap()].into(),
        };
        let cut = limits.within(&[Identity, Contact].into()).unwrap();
        assert_eq!(cut.grants, vec![grant(&[Identity], &[HealthProvider]), grant(&[Contact], &[Ngo])]);
        assert_eq!(cut.refused_organisations, limits.refused_organisations);
        assert_eq!(limits.within(&[Identity].into()).unwrap().grants, vec![grant(&[Identity], &[HealthProvider])], "a grant left empty goes");
        assert_eq!(limits.within(&[Asylum].into()), None);
        assert_eq!(categories_in(&serde_json::json!({ "identity": {}, "health": {}, "not_a_category": 1 })), [Identity, Health].into());
    }

    fn consent_for(iom: &Recipient, categories: &[DataCategory], purposes: &[Purpose]) -> Consent {
        let scope = Scope::new(
            purposes.iter().copied().collect(),
            CategorySelection::Listed(categories.iter().copied().collect()),
            vec![RecipientSelector::new(Some(iom.id.clone()), None, None).unwrap()],
            None,
            at(20),
        )
        .unwrap()
        .with_onward(Some(OnwardConsent { recipient_kinds: [HealthProvider, Ngo, SocialWelfare].into(), leave_country: true }));
        Consent {
            given_by: ConsentGiver::Subject {},
            method: ConsentMethod::Written,
            given_at: at(1),
            informed_in_language: None,
            scopes: vec![scope],
            refusals: Vec::new(),
            withdrawn_at: None,
        }
    }

    fn case(asylum_linked: bool, child: bool) -> CaseFacts {
        CaseFacts {
            asylum_linked,
            child,
            profiles: Vec::new(),
            origin_states: vec![country("NGA")],
            consent_by_guardian: child,
            best_interests_determined: false,
            best_interests_recommend_return: false, best_interests_favour_family: false,
        }
    }

    fn kinds(limits: &OnwardLimits) -> BTreeSet<RecipientKind> {
        limits.grants.iter().flat_map(|g| g.recipient_kinds.iter().copied()).collect()
    }

    fn categories(limits: &OnwardLimits) -> BTreeSet<DataCategory> {
        limits.grants.iter().flat_map(|g| g.categories.iter().copied()).collect()
    }

    const FOREVER: Option<DateTime<Utc>> = Some(DateTime::<Utc>::MAX_UTC);

    #[test]
    fn the_persons_refusals_and_the_built_in_rules_are_applied_before_the_case_leaves() {
        let iom = org("nga-iom-lagos", RecipientKind::Iom, "NGA");
        let mut consent = consent_for(&iom, &[Identity, Contact, Health], &[Purpose::Reintegration]);
        let sent: BTreeSet<DataCategory> = [Identity, Contact, Health].into();
        let limits = |consent: &Consent, linked| onward_limits(consent, &case(linked, false), Purpose::Reintegration, &iom, &sent, SentUnder::Consent, at(10), |_| FOREVER);
        let held = sent.clone();
        let welfare = org("nga-welfare", SocialWelfare, "NGA");

        let plain = limits(&consent, false);
        assert_eq!(kinds(&plain), [HealthProvider, Ngo, SocialWelfare].into());
        assert_eq!(plain.grants.len(), 1, "one grant for the kinds the same categories go to: {plain:?}");
        assert_eq!(onward_categories(&plain, Purpose::Reintegration, &welfare, country("NGA"), &held, at(10)), Ok(sent.clone()));
        // The consent's leave_country is not followed: the case stays in the country.
        assert_eq!(onward_categories(&plain, Purpose::Reintegration, &org("gha-ngo", Ngo, "GHA"), country("NGA"), &held, at(10)), Err(OnwardRefusal::LeavesCountry));

        // Asylum-linked, the recipient in the origin state: no government kind.
        let linked = limits(&consent, true);
        assert_eq!(kinds(&linked), [HealthProvider, Ngo].into());
        assert_eq!(onward_categories(&linked, Purpose::Reintegration, &welfare, country("NGA"), &held, at(10)), Err(OnwardRefusal::NotConsented));
        // Nothing in the limits tells the origin state or that the case is asylum-linked but what they leave out.
        let text = serde_json::to_string(&linked).unwrap();
        assert!(!text.contains("NGA") && !text.contains("asylum"), "{text}");

        // A state-run NGO is not an NGO to the person.
        let state_run = Recipient::new(OrgId::parse("nga-state-shelter").unwrap(), country("NGA"), Ngo, true, BTreeSet::new());
        assert_eq!(onward_categories(&plain, Purpose::Reintegration, &state_run, country("NGA"), &held, at(10)), Err(OnwardRefusal::StateBodyOfAnotherKind));

        // Refusals: of health for everyone, of a kind, of an organisation by name.
        consent.refusals = vec![
            Refusal { categories: [Health].into(), ..Refusal::default() },
            Refusal { recipients: vec![RecipientSelector::new(None, Some(SocialWelfare), None).unwrap()], ..Refusal::default() },
            Refusal { purposes: [Purpose::Return].into(), recipients: vec![RecipientSelector::new(Some(OrgId::parse("nga-clinic-ikeja").unwrap()), None, None).unwrap()], ..Refusal::default() },
        ];
        let refused = limits(&consent, false);
        assert_eq!(kinds(&refused), [HealthProvider, Ngo].into());
        assert!(!categories(&refused).contains(&Health));
        assert_eq!(refused.refused_organisations, [OrgId::parse("nga-clinic-ikeja").unwrap()].into());
        let ikeja = org("nga-clinic-ikeja", HealthProvider, "NGA");
        assert_eq!(onward_categories(&refused, Purpose::Reintegration, &ikeja, country("NGA"), &held, at(10)), Err(OnwardRefusal::RefusedByPerson));
        // Withdrawn, or sent under an emergency override: nothing, and nothing of the person in the limits.
        let overridden = onward_limits(&consent, &case(false, false), Purpose::Reintegration, &iom, &sent, SentUnder::EmergencyOverride, at(10), |_| FOREVER);
        assert_eq!(overridden, OnwardLimits::default());
        consent.withdrawn_at = Some(at(5));
        assert_eq!(limits(&consent, false), OnwardLimits::default());
    }

    #[test]
    fn case_notes_asylum_a_childs_return_and_the_permits_end_are_kept_to() {
        // A UNHCR office in a third country gets the asylum history; the recipient in the origin state never passes it on.
        let unhcr = org("gha-unhcr-accra", RecipientKind::Unhcr, "GHA");
        let all = [Identity, Asylum, CaseNotes];
        let consent = consent_for(&unhcr, &all, &[Purpose::Reintegration, Purpose::Return]);
        let sent: BTreeSet<DataCategory> = all.into();
        let permits_until_15 = |_: OnwardQuestion| Some(at(15));
        let limits = onward_limits(&consent, &case(true, true), Purpose::Reintegration, &unhcr, &sent, SentUnder::Consent, at(10), permits_until_15);
        // A child: never onward for return. Case notes: the scope names them. The permit's agreement ends first.
        assert!(limits.grants.iter().all(|g| g.purposes == [Purpose::Reintegration].into() && g.until == at(15)), "{limits:?}");
        assert_eq!(categories(&limits), all.into());
        let in_origin = org("nga-unhcr-lagos", RecipientKind::Unhcr, "NGA");
        let consent = consent_for(&in_origin, &all, &[Purpose::Reintegration]);
        let limits = onward_limits(&consent, &case(true, false), Purpose::Reintegration, &in_origin, &sent, SentUnder::Consent, at(10), |_| FOREVER);
        assert_eq!(categories(&limits), [Identity, CaseNotes].into(), "never the asylum history from the origin state");
        // Case notes under `all`: not named, never onward.
        let mut consent = consent_for(&unhcr, &all, &[Purpose::Reintegration]);
        consent.scopes = vec![Scope::new(
            [Purpose::Reintegration].into(),
            CategorySelection::All(crate::domain::consent::AllCategories::All),
            vec![RecipientSelector::new(Some(unhcr.id.clone()), None, None).unwrap()],
            None,
            at(20),
        )
        .unwrap()
        .with_onward(Some(OnwardConsent { recipient_kinds: [Ngo].into(), leave_country: false }))];
        let limits = onward_limits(&consent, &case(false, false), Purpose::Reintegration, &unhcr, &[Identity, CaseNotes].into(), SentUnder::Consent, at(10), |_| FOREVER);
        assert_eq!(categories(&limits), [Identity].into());
        // No permit: nothing.
        let limits = onward_limits(&consent, &case(false, false), Purpose::Reintegration, &unhcr, &[Identity].into(), SentUnder::Consent, at(10), |_| None);
        assert!(limits.allow_nothing());
    }
}
