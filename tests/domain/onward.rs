//! The receiving gateway's decision on an onward referral (issue 21 §3):
//! whatever limits came with a case (a broken or malicious sending gateway
//! may send any), nothing goes to an organisation abroad, nothing the case
//! no longer holds, nothing the onward purpose does not need, nothing the
//! gateway's own policy does not permit, and an asylum-linked case never to
//! a state actor of the person's origin state.

use std::collections::BTreeSet;

use chrono::Duration;
use referral_gateway::domain::minimise::project;
use referral_gateway::domain::onward::{decide_onward, OnwardAsk, OnwardGrant, OnwardLimits, OnwardRefusal};
use referral_gateway::domain::{DataCategory, OrgId, Purpose, RecipientKind};
use serde_json::Value;

use crate::support::{default_policy, directory, fixture, fixture_names, italy, now, permit_all_policy};

/// Limits that let everything go, to every kind, for every purpose.
fn everything() -> OnwardLimits {
    OnwardLimits {
        grants: vec![OnwardGrant {
            categories: DataCategory::ALL.iter().copied().collect(),
            purposes: Purpose::ALL.iter().copied().collect(),
            recipient_kinds: RecipientKind::ALL.iter().copied().collect(),
            until: now() + Duration::days(365),
        }],
        refused_organisations: BTreeSet::new(),
    }
}

fn whole_case(name: &str) -> Value {
    serde_json::to_value(&fixture(name).case).unwrap()
}

fn org(id: &str) -> referral_gateway::domain::recipient::Recipient {
    directory().recipient(&OrgId::parse(id).unwrap()).unwrap()
}

#[test]
fn whatever_the_limits_say_the_copy_is_the_case_cut_to_the_purpose_and_never_to_an_origin_state_actor_of_an_asylum_linked_case() {
    let limits = everything();
    let mut passed = 0;
    for name in fixture_names() {
        let submission = fixture(&name);
        let body = whole_case(&name);
        let referred_by = org(submission.destination.as_str());
        let here = referred_by.country;
        let asylum_linked = submission.case.is_asylum_linked();
        let origin: BTreeSet<String> = submission.case.identity.iter().flat_map(|i| i.nationalities.iter().map(|c| c.to_string())).collect();
        for entry in directory().organisations() {
            let onward = org(entry.id.as_str());
            for &purpose in Purpose::ALL {
                let ask = OnwardAsk { limits: Some(&limits), purpose, onward: Some(&onward), referred_by: &referred_by, here, sender: italy(), body: &body, requested: None };
                let Ok(copy) = decide_onward(&ask, permit_all_policy(), now()) else { continue };
                passed += 1;
                assert_eq!(onward.country, here, "{name}: passed abroad to {}", onward.id);
                assert_ne!(onward.id, referred_by.id);
                assert!(!(asylum_linked && onward.is_state_actor() && origin.contains(&onward.state().to_string())), "{name}: to {}", onward.id);
                let fields = copy.body.as_object().unwrap();
                for category in &copy.categories {
                    let expected = project(&submission.case, purpose, *category);
                    assert_eq!(fields.get(category.as_str()), expected.as_ref(), "{name}: {category} for {purpose}");
                }
                assert_eq!(fields.len(), copy.categories.len());
                if origin.contains(&here.to_string()) {
                    assert!(!copy.categories.contains(&DataCategory::Asylum), "{name}: asylum history in the origin state");
                }
            }
        }
    }
    assert!(passed > 0, "some copy must be allowed, or the test proves nothing");
}

#[test]
fn every_refusal_has_its_reason() {
    // A rejected asylum seeker's return case at IOM Banjul, in the person's origin state.
    let submission = fixture("rejected_asylum_avr");
    let body = whole_case("rejected_asylum_avr");
    let iom = org("gmb-iom-banjul");
    let limits = everything();
    let ask = |to: Option<&referral_gateway::domain::recipient::Recipient>, purpose, requested: Option<&BTreeSet<DataCategory>>, limits: Option<&OnwardLimits>| {
        let ask = OnwardAsk { limits, purpose, onward: to, referred_by: &iom, here: iom.country, sender: italy(), body: &body, requested };
        decide_onward(&ask, permit_all_policy(), now())
    };
    let welfare = org("gmb-social-welfare");
    assert!(submission.case.is_asylum_linked());
    // A state actor of the origin state, for an asylum-linked case: never.
    assert_eq!(ask(Some(&org("gmb-immigration")), Purpose::Reintegration, None, Some(&limits)), Err(OnwardRefusal::NonNegotiableRule));
    assert_eq!(ask(Some(&welfare), Purpose::Reintegration, None, Some(&limits)), Err(OnwardRefusal::NonNegotiableRule));
    assert_eq!(ask(None, Purpose::Reintegration, None, Some(&limits)), Err(OnwardRefusal::UnknownOrganisation));
    assert_eq!(ask(Some(&iom), Purpose::Reintegration, None, Some(&limits)), Err(OnwardRefusal::SameOrganisation));
    assert_eq!(ask(Some(&org("nga-ngo-shelter")), Purpose::Reintegration, None, Some(&limits)), Err(OnwardRefusal::LeavesCountry));
    assert_eq!(ask(Some(&welfare), Purpose::Reintegration, None, None), Err(OnwardRefusal::NotConsented));

    // A case that is not asylum-linked, at the shelter in Nigeria, to the health provider there.
    let body = whole_case("trafficking_victim_reintegration");
    let shelter = org("nga-ngo-shelter");
    let clinic = org("nga-health-lagos");
    let ask = |requested: Option<&BTreeSet<DataCategory>>, policy, purpose| {
        let ask = OnwardAsk { limits: Some(&limits), purpose, onward: Some(&clinic), referred_by: &shelter, here: shelter.country, sender: italy(), body: &body, requested };
        decide_onward(&ask, policy, now())
    };
    let copy = ask(Some(&[DataCategory::Identity, DataCategory::Health].into()), permit_all_policy(), Purpose::Reintegration).unwrap();
    assert_eq!(copy.categories, [DataCategory::Identity, DataCategory::Health].into());
    assert_eq!(copy.until, limits.grants[0].until, "kept no longer than what let it go on");
    // Two grants for health: it may go until the later one ends; the copy as a whole until identity's grant ends.
    let mut two = limits.clone();
    two.grants[0].until = now() + Duration::days(10);
    two.grants.push(OnwardGrant { categories: [DataCategory::Health].into(), until: now() + Duration::days(20), ..limits.grants[0].clone() });
    let ask_two = OnwardAsk { limits: Some(&two), purpose: Purpose::Reintegration, onward: Some(&clinic), referred_by: &shelter, here: shelter.country, sender: italy(), body: &body, requested: Some(&[DataCategory::Identity, DataCategory::Health].into()) };
    assert_eq!(decide_onward(&ask_two, permit_all_policy(), now()).unwrap().until, now() + Duration::days(10));
    let health_only: BTreeSet<DataCategory> = [DataCategory::Health].into();
    let ask_health = OnwardAsk { requested: Some(&health_only), ..ask_two };
    assert_eq!(decide_onward(&ask_health, permit_all_policy(), now()).unwrap().until, now() + Duration::days(20));
    // This gateway's permit rests on an agreement that ends sooner: the copy ends with it.
    let sources = [referral_gateway::domain::policy::PolicySource {
        name: "agreement.cedar".to_owned(),
        text: "@id(\"test.permit_everything\")\npermit (principal, action, resource);\n\
               @id(\"onward.until_december\")\n@expires(\"2026-11-30\")\npermit (principal, action == Action::\"refer_onward\", resource);\n"
            .to_owned(),
    }];
    let with_agreement = referral_gateway::domain::policy::DataProtectionPolicy::compile(&sources).unwrap();
    let until = decide_onward(&ask_health, &with_agreement, now()).unwrap().until;
    assert!(until < now() + Duration::days(20) && until > now(), "{until}");
    assert_eq!(until.date_naive(), chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(), "{until}");
    // A body that is not a case: refused as such.
    let broken = serde_json::json!({ "identity": "not a category's fields" });
    let ask_broken = OnwardAsk { body: &broken, requested: None, ..ask_two };
    assert_eq!(decide_onward(&ask_broken, permit_all_policy(), now()), Err(OnwardRefusal::CaseUnreadable));
    // Only what may go may be asked for; and the shipped policy permits no onward referral.
    assert_eq!(ask(Some(&[DataCategory::Asylum].into()), permit_all_policy(), Purpose::Reintegration), Err(OnwardRefusal::NotConsented));
    assert_eq!(ask(None, default_policy(), Purpose::Reintegration), Err(OnwardRefusal::NotPermittedHere));
    // Asked only for what the purpose does not need: nothing to pass on.
    let unneeded: BTreeSet<DataCategory> = DataCategory::ALL
        .iter()
        .copied()
        .filter(|c| body.get(c.as_str()).is_some() && project(&fixture("trafficking_victim_reintegration").case, Purpose::FamilyTracing, *c).is_none())
        .collect();
    if !unneeded.is_empty() {
        assert_eq!(ask(Some(&unneeded), permit_all_policy(), Purpose::FamilyTracing), Err(OnwardRefusal::NothingNeeded));
    }
    // Past the limits' end: expired.
    let ended = OnwardLimits { grants: vec![OnwardGrant { until: now(), ..limits.grants[0].clone() }], ..OnwardLimits::default() };
    let ask = OnwardAsk { limits: Some(&ended), purpose: Purpose::Reintegration, onward: Some(&clinic), referred_by: &shelter, here: shelter.country, sender: italy(), body: &body, requested: None };
    assert_eq!(decide_onward(&ask, permit_all_policy(), now()), Err(OnwardRefusal::Expired));
    // Every refusal code is distinct: the sender's timeline and the problem tell them apart.
    let codes: BTreeSet<&str> = OnwardRefusal::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(codes.len(), OnwardRefusal::ALL.len());
}
