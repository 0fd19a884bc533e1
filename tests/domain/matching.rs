//! Which cases a responding gateway may put in the match index an asking
//! organisation sees (`domain::match_index::may_be_matched`): those whose
//! identity and family could be referred to that organisation for family
//! tracing, under consent, the DPO policy and the built-in rules.

use referral_gateway::domain::decide::case_facts;
use referral_gateway::domain::match_index::may_be_matched;
use referral_gateway::domain::policy::DataProtectionPolicy;
use referral_gateway::domain::submission::ReferralSubmission;
use referral_gateway::domain::{CountryCode, OrgId};
use serde_json::{json, Value};

use crate::support::{default_policy, directory, now, permit_all_policy};

/// The girl's tracing request from Italy (the scenario fixture), its
/// consent widened to `recipients` and, when `fled` names a state, an
/// asylum claim against it.
fn girl(recipients: Value, fled: Option<&str>) -> ReferralSubmission {
    let text = std::fs::read_to_string(crate::support::repo_path("config/policies/tests/referrals/unaccompanied_girl_tracing.json")).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    body["consent"]["scopes"][0]["recipients"] = recipients;
    if let Some(state) = fled {
        body["case"]["asylum"] = json!({"status": ["asylum_seeker"], "feared_return": [state]});
    }
    ReferralSubmission::parse(&body.to_string(), now()).unwrap()
}

fn matched_for(submission: &ReferralSubmission, asker: &str, policy: &DataProtectionPolicy) -> bool {
    let asker = directory().recipient(&OrgId::parse(asker).unwrap()).unwrap();
    let facts = case_facts(&submission.case, &submission.consent, now());
    may_be_matched(&facts, &submission.consent, CountryCode::parse("ITA").unwrap(), &asker, policy, now())
}

#[test]
fn a_case_is_indexed_for_an_organisation_its_consent_and_policy_let_it_be_traced_by() {
    let girl = girl(json!([{"kind": "red_cross_red_crescent", "country": "GIN"}]), None);
    assert!(matched_for(&girl, "gin-red-cross", default_policy()));
    // Not for an organisation the consent does not name, even under a policy that permits all.
    assert!(!matched_for(&girl, "gin-child-protection", permit_all_policy()));
    assert!(!matched_for(&girl, "som-red-crescent", permit_all_policy()));
}

#[test]
fn a_case_outside_the_consents_period_is_never_indexed() {
    let girl = girl(json!([{"kind": "red_cross_red_crescent"}]), None);
    let asker = directory().recipient(&OrgId::parse("gin-red-cross").unwrap()).unwrap();
    let later = now() + chrono::Duration::days(3 * 365);
    let facts = case_facts(&girl.case, &girl.consent, later);
    assert!(!may_be_matched(&facts, &girl.consent, CountryCode::parse("ITA").unwrap(), &asker, default_policy(), later));
}

#[test]
fn an_asylum_linked_case_is_never_indexed_for_an_official_of_the_state_fled() {
    let everyone = json!([{"country": "GIN"}]);
    let fled = girl(everyone.clone(), Some("GIN"));
    // The state's child protection directorate, under a policy that permits all and a consent that names it: never.
    assert!(!matched_for(&fled, "gin-child-protection", permit_all_policy()));
    // The same case without the asylum claim is.
    let not_fled = girl(everyone, None);
    assert!(matched_for(&not_fled, "gin-child-protection", permit_all_policy()));
}
