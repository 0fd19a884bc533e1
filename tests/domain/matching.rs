//! Which cases a responding gateway may put in the match index an asking
//! organisation sees (`domain::match_index::match_decision`): those whose
//! identity and family could be referred to that organisation for family
//! tracing, under consent, the DPO policy and the built-in rules.

use chrono::{DateTime, Utc};
use referral_gateway::domain::decide::gather;
use referral_gateway::domain::decision::{Decision, ReasonCode};
use referral_gateway::domain::match_index::{categories_matched, match_decision};
use referral_gateway::domain::policy::DataProtectionPolicy;
use referral_gateway::domain::submission::ReferralSubmission;
use referral_gateway::domain::{CountryCode, OrgId, Purpose};
use serde_json::{json, Value};

use crate::support::{default_policy, directory, now, permit_all_policy};

/// The girl's tracing request from Italy (the scenario fixture), its
/// consent widened to `recipients`, and `change` applied to its case.
fn girl(recipients: Value, change: impl FnOnce(&mut Value)) -> ReferralSubmission {
    let text = std::fs::read_to_string(crate::support::repo_path("config/policies/tests/referrals/unaccompanied_girl_tracing.json")).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["consent"]["scopes"][0]["recipients"] = recipients;
    change(&mut body["case"]);
    ReferralSubmission::parse(&body.to_string(), now()).unwrap()
}

/// The decision on matching `submission` for `asker` at `at`, from what its
/// gateway keeps (the facts gathered when it was sent to the Guinean Red Cross).
fn decided_at(submission: &ReferralSubmission, asker: &str, policy: &DataProtectionPolicy, at: DateTime<Utc>) -> Decision {
    let sent_to = directory().recipient(&OrgId::parse("gin-red-cross").unwrap());
    let (facts, _) = gather(&submission.case, &submission.consent, CountryCode::parse("ITA").unwrap(), sent_to.as_ref(), Purpose::FamilyTracing, now());
    let asker = directory().recipient(&OrgId::parse(asker).unwrap()).unwrap();
    match_decision(&facts.case, &categories_matched(&facts), &submission.consent, CountryCode::parse("ITA").unwrap(), &asker, policy, at)
}

fn decided(submission: &ReferralSubmission, asker: &str, policy: &DataProtectionPolicy) -> Decision {
    decided_at(submission, asker, policy, now())
}

fn denied_because(decision: &Decision, reason: ReasonCode) -> bool {
    !decision.is_allow() && decision.deny_reasons().contains(&reason)
}

#[test]
fn a_case_is_indexed_for_an_organisation_its_consent_and_policy_let_it_be_traced_by() {
    let girl = girl(json!([{"kind": "red_cross_red_crescent", "country": "GIN"}]), |_| {});
    assert!(decided(&girl, "gin-red-cross", default_policy()).is_allow());
    // Not for an organisation the consent does not name, even under a policy that permits all.
    for other in ["gin-child-protection", "som-red-crescent"] {
        let decision = decided(&girl, other, permit_all_policy());
        assert!(!decision.is_allow(), "{other}");
        assert!(!decision.deny_reasons().contains(&ReasonCode::AsylumFirewall));
    }
}

#[test]
fn a_case_outside_the_consents_period_is_never_indexed() {
    let girl = girl(json!([{"kind": "red_cross_red_crescent"}]), |_| {});
    let later = now() + chrono::Duration::days(3 * 365);
    assert!(denied_because(&decided_at(&girl, "gin-red-cross", permit_all_policy(), later), ReasonCode::ConsentExpired));
}

#[test]
fn a_case_without_family_is_not_a_search_and_is_never_indexed() {
    let alone = girl(json!([{"country": "GIN"}]), |case| {
        case.as_object_mut().unwrap().remove("family");
    });
    assert!(denied_because(&decided(&alone, "gin-red-cross", permit_all_policy()), ReasonCode::RequiredCategoryMissing));
}

#[test]
fn an_asylum_linked_case_is_never_indexed_for_an_official_of_the_state_fled() {
    let everyone = json!([{"country": "GIN"}]);
    let fled = girl(everyone.clone(), |case| case["asylum"] = json!({"status": ["asylum_seeker"], "feared_return": ["GIN"]}));
    // The state's child protection directorate, under a policy that permits all and a consent that names it: never, by the firewall.
    assert!(denied_because(&decided(&fled, "gin-child-protection", permit_all_policy()), ReasonCode::AsylumFirewall));
    // The same case without the asylum claim is.
    let not_fled = girl(everyone, |_| {});
    assert!(decided(&not_fled, "gin-child-protection", permit_all_policy()).is_allow());
}

#[test]
fn an_asylum_linked_case_is_never_shown_to_anyone_in_the_state_fled_not_even_a_national_society() {
    use referral_gateway::domain::decide::case_facts;
    use referral_gateway::domain::match_index::outside_origin_states;
    let everyone = json!([{"country": "GIN"}]);
    let fled = girl(everyone.clone(), |case| case["asylum"] = json!({"status": ["asylum_seeker"], "feared_return": ["GIN"]}));
    let facts = case_facts(&fled.case, &fled.consent, now());
    let asker = |org: &str| directory().recipient(&OrgId::parse(org).unwrap()).unwrap();
    assert!(!outside_origin_states(&facts, &asker("gin-red-cross")), "a non-state body, but its gateway is the state's");
    assert!(!outside_origin_states(&facts, &asker("gin-child-protection")));
    assert!(outside_origin_states(&facts, &asker("nga-red-cross")));
    let not_fled = girl(everyone, |_| {});
    assert!(outside_origin_states(&case_facts(&not_fled.case, &not_fled.consent, now()), &asker("gin-red-cross")));
}
