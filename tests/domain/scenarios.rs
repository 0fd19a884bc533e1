//! Scenario tests written from the field guidance: one fixture per person,
//! decided against the shipped directory and DPO policy (and against a
//! reckless permit-all policy, to show that the built-in rules stand alone).
//! (Some 850 lines: one short test per person of the field guidance, read
//! as a list.)
//!
//! Assertion messages name categories, reason codes and field names only,
//! never a value from a case.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use referral_gateway::domain::baseline::Fields;
use referral_gateway::domain::decide::decide;
use referral_gateway::domain::decision::{Decision, Outcome, Withholding};
use referral_gateway::domain::minimise::{minimise, Payload};
use referral_gateway::domain::policy::{PolicySource, DataProtectionPolicy};
use referral_gateway::domain::submission::ReferralSubmission;
use referral_gateway::domain::{DataCategory, OrgId, Purpose};
use serde_json::{json, Value};

use crate::support::{
    decide_for, default_policy, directory, fixture, fixture_names, fixture_text, italy, now, permit_all_policy, repo_path,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fixture changed as JSON, then parsed like any submission (so a variant
/// that the schema would refuse fails here rather than testing nothing).
fn variant(name: &str, change: impl FnOnce(&mut Value)) -> ReferralSubmission {
    let mut value: Value = serde_json::from_str(&fixture_text(name)).unwrap();
    change(&mut value);
    match ReferralSubmission::parse(&value.to_string(), now()) {
        Ok(submission) => submission,
        Err(error) => panic!("variant of {name} does not parse: {error}"),
    }
}

fn with_purpose(name: &str, purpose: Purpose) -> ReferralSubmission {
    let mut submission = fixture(name);
    submission.purpose = purpose;
    submission
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// Decides at an arbitrary time (the support helper always uses `now()`).
fn decide_at(submission: &ReferralSubmission, to: &str, policy: &DataProtectionPolicy, when: DateTime<Utc>) -> (Decision, Payload) {
    let recipient = directory().recipient(&OrgId::parse(to).unwrap());
    let decision =
        decide(&submission.case, &submission.consent, italy(), recipient.as_ref(), submission.purpose, policy, when);
    let payload = minimise(&submission.case, &decision);
    (decision, payload)
}

/// Decides for `to` as the directory lists it, but publishing an end-to-end
/// key or not, whatever the example directory says.
fn decide_with_key(submission: &ReferralSubmission, to: &str, policy: &DataProtectionPolicy, has_key: bool) -> (Decision, Payload) {
    let recipient = directory().recipient(&OrgId::parse(to).unwrap()).map(|r| r.with_end_to_end_key(has_key));
    let decision =
        decide(&submission.case, &submission.consent, italy(), recipient.as_ref(), submission.purpose, policy, now());
    let payload = minimise(&submission.case, &decision);
    (decision, payload)
}

/// Asserts a deny for the missing end-to-end key alone, under `rule`.
fn assert_denied_for_the_key_alone(decision: &Decision, payload: &Payload, rule: &str, context: &str) {
    assert_denied_with_nothing_sent(decision, payload, context);
    assert_eq!(deny_reasons(decision), set(&["recipient_key_required"]), "{context}");
    assert_eq!(decision.end_to_end_required_by(), Some(rule), "{context}");
}

const ASYLUM_END_TO_END: &str = "builtin.asylum_end_to_end";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn sent(decision: &Decision) -> BTreeSet<String> {
    decision.sent().keys().map(|c| c.as_str().to_owned()).collect()
}

fn deny_reasons(decision: &Decision) -> BTreeSet<String> {
    decision.deny_reasons().iter().map(|r| r.as_str().to_owned()).collect()
}

fn withheld(decision: &Decision, category: DataCategory) -> BTreeSet<String> {
    decision
        .withheld()
        .get(&category)
        .map(|reasons| reasons.iter().map(|w| w.reason.as_str().to_owned()).collect())
        .unwrap_or_default()
}

fn withheld_by_policy(decision: &Decision, category: DataCategory) -> BTreeSet<String> {
    decision
        .withheld()
        .get(&category)
        .map(|reasons| reasons.iter().filter_map(|w| w.policy.clone()).collect())
        .unwrap_or_default()
}

fn payload_categories(payload: &Payload) -> BTreeSet<String> {
    payload.categories().map(|c| c.as_str().to_owned()).collect()
}

/// The JSON keys of one category in the payload (of every entry, for a list).
fn payload_keys(payload: &Payload, category: DataCategory) -> BTreeSet<String> {
    fn keys_of(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => out.extend(map.keys().cloned()),
            Value::Array(items) => items.iter().for_each(|item| keys_of(item, out)),
            _ => {}
        }
    }
    let mut keys = BTreeSet::new();
    if let Some(value) = payload.get(category) {
        keys_of(value, &mut keys);
    }
    keys
}

fn payload_text(payload: &Payload) -> String {
    payload.to_json().to_string()
}

fn sent_fields(decision: &Decision, category: DataCategory) -> Option<Fields> {
    decision.sent().get(&category).map(|s| s.fields)
}

fn permitted_by(decision: &Decision, category: DataCategory) -> BTreeSet<String> {
    decision.sent().get(&category).map(|s| s.permitted_by.iter().cloned().collect()).unwrap_or_default()
}

fn assert_denied_with_nothing_sent(decision: &Decision, payload: &Payload, context: &str) {
    assert_eq!(decision.outcome(), Outcome::Deny, "{context}: expected a deny");
    assert!(decision.sent().is_empty(), "{context}: a deny sends nothing, but sends {:?}", sent(decision));
    assert!(payload.is_empty(), "{context}: a deny has an empty payload, but it holds {:?}", payload_categories(payload));
}

/// Asserts that the asylum firewall, and nothing else, stops the packet: every
/// category the purpose could use is withheld by it, and the only other deny
/// reasons allowed are a required category the case does not hold at all and
/// a missing end-to-end key (the firewall's cases need end-to-end sealing too).
fn assert_stopped_by_the_firewall_alone(decision: &Decision, payload: &Payload, context: &str) {
    assert_denied_with_nothing_sent(decision, payload, context);
    assert_eq!(decision.end_to_end_required_by(), Some(ASYLUM_END_TO_END), "{context}");
    let mut reasons = deny_reasons(decision);
    let required_missing = reasons.remove("required_category_missing");
    reasons.remove("recipient_key_required");
    // A purpose whose required category the case does not hold at all (a
    // family assessment of a case that holds none) is denied for that; the
    // firewall still withholds every category it could use (below).
    if !(required_missing && reasons.is_empty()) {
        assert_eq!(reasons, set(&["asylum_firewall"]), "{context}");
    }
    for (category, withholdings) in decision.withheld() {
        let reasons: BTreeSet<&str> = withholdings.iter().map(|w| w.reason.as_str()).collect();
        assert!(
            reasons == BTreeSet::from(["not_needed_for_purpose"]) || reasons.contains("asylum_firewall"),
            "{context}: {category} withheld without the firewall: {reasons:?}"
        );
    }
}

/// A consent by the right person that grants every purpose and every category
/// (case notes named) to every organisation of the directory, with no refusal:
/// whatever is still withheld is withheld by a rule, not by the person.
fn consent_to_everything(value: &mut Value) {
    let recipients: Vec<Value> = directory().organisations().map(|o| json!({ "organisation": o.id.as_str() })).collect();
    let categories: Vec<&str> = DataCategory::ALL.iter().map(|c| c.as_str()).collect();
    value["consent"]["scopes"] = json!([{
        "purposes": Purpose::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "categories": categories,
        "recipients": recipients,
        "valid_until": "2027-06-30T00:00:00Z"
    }]);
    value["consent"]["refusals"] = json!([]);
}

/// Every organisation of the directory, by id.
fn organisation_ids() -> Vec<String> {
    directory().organisations().map(|o| o.id.as_str().to_owned()).collect()
}

/// Ids of the directory's state actors that sit in or act for one of `states`.
fn state_actors_of(states: &[&str]) -> Vec<String> {
    organisation_ids()
        .into_iter()
        .filter(|id| {
            let recipient = directory().recipient(&OrgId::parse(id).unwrap()).unwrap();
            recipient.is_state_actor()
                && (states.contains(&recipient.country.as_str()) || states.contains(&recipient.state().as_str()))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A 16-year-old unaccompanied girl who wants to continue school in Rome and
// does not wish to return. Tracing of her mother, through the Red Cross.
// ---------------------------------------------------------------------------

const GIRL: &str = "unaccompanied_girl_tracing";

#[test]
fn girl_tracing_to_red_cross_sends_identity_family_and_guardian_only() {
    let (decision, payload) = decide_for(&fixture(GIRL), "gin-red-cross", default_policy());

    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "family", "child_safeguards"]));
    assert_eq!(payload_categories(&payload), set(&["identity", "family", "child_safeguards"]));

    // Child safeguards: who answers for her, never the best-interests procedure.
    assert_eq!(sent_fields(&decision, DataCategory::ChildSafeguards), Some(Fields::Only(&["guardian"])));
    assert_eq!(payload_keys(&payload, DataCategory::ChildSafeguards), set(&["guardian"]));

    // Never where she is: no contact category, and no trace of it anywhere.
    assert_eq!(withheld(&decision, DataCategory::Contact), set(&["not_needed_for_purpose"]));
    let text = payload_text(&payload);
    for where_she_lives in ["Via dei Volsci", "Casa famiglia", "+39 06 555 0101"] {
        assert!(!text.contains(where_she_lives), "the payload reveals where the child lives");
    }
    assert!(!text.contains("best_interests"), "the payload carries the best-interests procedure");

    // Identity within the tracing baseline; the rest withheld, each with its reason.
    assert_eq!(
        payload_keys(&payload, DataCategory::Identity),
        set(&["given_names", "family_name", "sex", "date_of_birth", "place_of_birth", "nationalities", "languages", "former_habitual_residence"])
    );
    assert_eq!(withheld(&decision, DataCategory::Documents), set(&["consent_not_given"]));
    assert_eq!(withheld(&decision, DataCategory::Protection), set(&["not_needed_for_purpose"]));
    assert_eq!(withheld(&decision, DataCategory::ReintegrationNeeds), set(&["not_needed_for_purpose"]));
    assert_eq!(withheld(&decision, DataCategory::CaseNotes), set(&["consent_not_given", "case_notes_not_named_by_consent"]));
    assert!(!text.contains("secondary school"), "case notes leak into the payload");
}

#[test]
fn girl_return_is_denied_refused_by_her_and_without_best_interests_determination() {
    let submission = with_purpose(GIRL, Purpose::Return);
    for to in ["gin-child-protection", "gin-red-cross", "nga-iom-lagos"] {
        for policy in [default_policy(), permit_all_policy()] {
            let (decision, payload) = decide_for(&submission, to, policy);
            let context = format!("return to {to}");
            assert_denied_with_nothing_sent(&decision, &payload, &context);
            let reasons = deny_reasons(&decision);
            assert!(reasons.contains("consent_refused"), "{context}: {reasons:?}");
            assert!(reasons.contains("child_best_interests_missing"), "{context}: {reasons:?}");
        }
    }
    // Exactly those two reasons towards the child protection directorate.
    let (decision, _) = decide_for(&submission, "gin-child-protection", permit_all_policy());
    assert_eq!(deny_reasons(&decision), set(&["consent_refused", "child_best_interests_missing"]));
}

#[test]
fn girl_consenting_herself_without_guardian_is_denied() {
    let submission = variant(GIRL, |v| v["consent"]["given_by"] = json!({ "type": "subject" }));
    for policy in [default_policy(), permit_all_policy()] {
        let (decision, payload) = decide_for(&submission, "gin-red-cross", policy);
        assert_denied_with_nothing_sent(&decision, &payload, "tracing on the child's own consent");
        assert_eq!(deny_reasons(&decision), set(&["child_guardian_consent_missing"]));
        assert!(withheld(&decision, DataCategory::Identity).contains("child_guardian_consent_missing"));
        assert!(withheld(&decision, DataCategory::Family).contains("child_guardian_consent_missing"));
    }
}

/// The child rules are not a blanket ban on returns: with the guardian's
/// consent and a determination that recommends return, a return may go; with
/// a determination that recommends staying, it may not.
#[test]
fn child_return_follows_the_best_interests_determination() {
    let return_consent = |v: &mut Value| {
        v["purpose"] = json!("return");
        v["consent"]["refusals"] = json!([]);
        v["consent"]["scopes"] = json!([{
            "purposes": ["return"],
            "categories": ["identity", "contact", "documents", "child_safeguards"],
            "recipients": [{ "organisation": "gin-child-protection" }],
            "valid_until": "2027-10-01T00:00:00Z"
        }]);
    };
    let determination = |recommendation: &str| {
        json!({ "status": "completed", "completed_on": "2026-11-01", "recommendation": recommendation })
    };

    let against = variant(GIRL, |v| {
        return_consent(v);
        v["case"]["child_safeguards"]["best_interests_determination"] = determination("local_integration");
    });
    let (decision, payload) = decide_for(&against, "gin-child-protection", permit_all_policy());
    assert_denied_with_nothing_sent(&decision, &payload, "return against the determination");
    assert_eq!(deny_reasons(&decision), set(&["child_best_interests_against_return"]));

    let for_return = variant(GIRL, |v| {
        return_consent(v);
        v["case"]["child_safeguards"]["best_interests_determination"] = determination("return_to_country_of_origin");
    });
    let (decision, payload) = decide_for(&for_return, "gin-child-protection", permit_all_policy());
    assert_eq!(decision.outcome(), Outcome::Allow, "deny reasons: {:?}", deny_reasons(&decision));
    assert_eq!(sent(&decision), set(&["identity", "contact", "documents", "child_safeguards"]));
    assert_eq!(payload_categories(&payload), sent(&decision));
    // The same, consented by the girl herself, is still refused.
    let own_consent = variant(GIRL, |v| {
        return_consent(v);
        v["case"]["child_safeguards"]["best_interests_determination"] = determination("return_to_country_of_origin");
        v["consent"]["given_by"] = json!({ "type": "subject" });
    });
    let (decision, _) = decide_for(&own_consent, "gin-child-protection", permit_all_policy());
    assert_eq!(deny_reasons(&decision), set(&["child_guardian_consent_missing"]));
}

// ---------------------------------------------------------------------------
// A man returning to Nigeria after 20 years abroad, HIV-positive with a
// history of depression, seeking work.
// ---------------------------------------------------------------------------

const RETURNEE: &str = "returnee_hiv_reintegration";

#[test]
fn returnee_health_goes_to_the_health_provider_with_conditions() {
    let (decision, payload) = decide_for(&fixture(RETURNEE), "nga-health-lagos", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "contact", "health"]));
    assert_eq!(payload_categories(&payload), set(&["identity", "contact", "health"]));
    assert_eq!(payload_keys(&payload, DataCategory::Health), set(&["conditions", "medication_needs"]));
    assert_eq!(
        payload.get(DataCategory::Health).and_then(|h| h["conditions"].as_array()).map(Vec::len),
        Some(2),
        "both conditions go to the clinic"
    );
    assert!(permitted_by(&decision, DataCategory::Health).contains("reintegration.health_providers"));
    // Travel fitness is not care: the reintegration baseline leaves it out.
    assert!(!payload_keys(&payload, DataCategory::Health).contains("fitness_to_travel"));
    // The clinic gets nothing it was not consented for.
    for category in [DataCategory::Documents, DataCategory::Family, DataCategory::ReintegrationNeeds] {
        assert_eq!(withheld(&decision, category), set(&["consent_not_given"]), "{category}");
    }
    assert_eq!(withheld(&decision, DataCategory::CaseNotes), set(&["consent_not_given", "case_notes_not_named_by_consent"]));
}

/// The shipped policy with `end_to_end.toml` replaced by `rules`.
fn with_end_to_end_rules(rules: &str) -> DataProtectionPolicy {
    let mut sources = referral_gateway::policy_files::read_sources(&repo_path("config/policies")).unwrap();
    sources.retain(|s| s.name != "end_to_end.toml");
    sources.push(PolicySource { name: "end_to_end.toml".to_owned(), text: rules.to_owned() });
    DataProtectionPolicy::compile(&sources).unwrap()
}

/// Health data is special-category: a DPO may require health providers to be
/// reached only end to end. The case is not asylum-linked, so only the DPO's
/// rule requires it.
#[test]
fn a_dpo_rule_requires_end_to_end_sealing_towards_health_providers() {
    let shipped = default_policy();
    assert!(shipped.end_to_end().rules().is_empty(), "the shipped rule is an example only");
    let (decision, _) = decide_with_key(&fixture(RETURNEE), "nga-health-lagos", shipped, false);
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(decision.end_to_end_required_by(), None);

    let policy = with_end_to_end_rules("[[require]]\ncountries = [\"ERI\"]\n\n[[require]]\nrecipient_kinds = [\"health_provider\"]\n");
    assert_ne!(policy.version(), shipped.version(), "the rules count in the version");
    let (decision, payload) = decide_with_key(&fixture(RETURNEE), "nga-health-lagos", &policy, false);
    assert_denied_for_the_key_alone(&decision, &payload, "end_to_end.toml#2", "nga-health-lagos without a key");
    let (decision, payload) = decide_with_key(&fixture(RETURNEE), "nga-health-lagos", &policy, true);
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(decision.end_to_end_required_by(), Some("end_to_end.toml#2"));
    assert_eq!(payload_categories(&payload), set(&["identity", "contact", "health"]));
    let json = serde_json::to_value(&decision).unwrap();
    assert_eq!(json["end_to_end"], "end_to_end.toml#2");
    // Other kinds are not concerned.
    let (decision, _) = decide_with_key(&fixture(RETURNEE), "nga-employment-service", &policy, false);
    assert_eq!((decision.outcome(), decision.end_to_end_required_by()), (Outcome::Allow, None));
}

/// A DPO rule cannot name itself over the built-in rule, nor switch it off.
#[test]
fn the_builtin_end_to_end_rule_wins_over_a_dpo_rule() {
    let policy = with_end_to_end_rules("[[require]]\nrecipient_kinds = [\"iom\"]\n");
    let (decision, _) = decide_with_key(&fixture(AVR), "gmb-iom-banjul", &policy, true);
    assert_eq!((decision.outcome(), decision.end_to_end_required_by()), (Outcome::Allow, Some(ASYLUM_END_TO_END)));
    let returnee = with_purpose(RETURNEE, Purpose::Return);
    let (decision, payload) = decide_with_key(&returnee, "nga-iom-lagos", &policy, false);
    assert_denied_for_the_key_alone(&decision, &payload, "end_to_end.toml#1", "nga-iom-lagos");
}

#[test]
fn returnee_health_never_goes_to_the_employment_service() {
    let (decision, payload) = decide_for(&fixture(RETURNEE), "nga-employment-service", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "contact", "documents", "reintegration_needs"]));
    assert_eq!(payload_categories(&payload), set(&["identity", "contact", "documents", "reintegration_needs"]));
    assert!(withheld(&decision, DataCategory::Health).contains("consent_not_given"));
    assert!(!payload_text(&payload).contains("HIV"), "a diagnosis reaches the employment service");

    // Even had he consented to everything, health and notes stay with the health provider.
    let everything = variant(RETURNEE, consent_to_everything);
    let (decision, payload) = decide_for(&everything, "nga-employment-service", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "contact", "documents", "reintegration_needs"]));
    assert!(payload.get(DataCategory::Health).is_none());
    assert!(withheld(&decision, DataCategory::Health).contains("policy_forbid"));
    assert!(withheld_by_policy(&decision, DataCategory::Health).contains("health.never_to_state_actors"));
    assert!(withheld_by_policy(&decision, DataCategory::CaseNotes).contains("case_notes.never_to_state_actors"));
    assert!(withheld_by_policy(&decision, DataCategory::Protection).contains("protection.state_actors_only_for_return"));
    let text = payload_text(&payload);
    for diagnosis in ["HIV", "depression", "dolutegravir"] {
        assert!(!text.contains(diagnosis), "health data reaches the employment service");
    }
}

#[test]
fn returnee_return_with_iom_carries_travel_health_only() {
    let submission = with_purpose(RETURNEE, Purpose::Return);
    let (decision, payload) = decide_for(&submission, "nga-iom-lagos", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "contact", "documents", "health", "return_logistics"]));
    assert_eq!(
        sent_fields(&decision, DataCategory::Health),
        Some(Fields::Only(&["fitness_to_travel", "escort_needs"]))
    );
    // The case has no escort need recorded, so only fitness appears.
    assert_eq!(payload_keys(&payload, DataCategory::Health), set(&["fitness_to_travel"]));
    let text = payload_text(&payload);
    assert!(!text.contains("conditions"), "diagnoses travel with a return");
    // A drug's name reveals the diagnosis: no medication in a return packet.
    assert!(!text.contains("medication") && !text.contains("dolutegravir"), "medication travels with a return");
    assert!(!text.contains("HIV") && !text.contains("depression"), "diagnoses travel with a return");
    // Reintegration needs are not a return's business.
    assert_eq!(withheld(&decision, DataCategory::ReintegrationNeeds), set(&["not_needed_for_purpose"]));
}

// ---------------------------------------------------------------------------
// A rejected asylum seeker on assisted voluntary return with IOM to The Gambia.
// ---------------------------------------------------------------------------

const AVR: &str = "rejected_asylum_avr";

#[test]
fn avr_to_iom_in_the_origin_country_sends_identity_and_travel_without_asylum() {
    let (decision, payload) = decide_with_key(&fixture(AVR), "gmb-iom-banjul", default_policy(), true);
    assert_eq!(decision.outcome(), Outcome::Allow);
    // Asylum-linked, and IOM sits in his country of origin: sealed end to end.
    assert_eq!(decision.end_to_end_required_by(), Some(ASYLUM_END_TO_END));
    assert_eq!(sent(&decision), set(&["identity", "contact", "documents", "health", "protection", "return_logistics"]));
    assert_eq!(payload_categories(&payload), sent(&decision));
    assert_eq!(withheld(&decision, DataCategory::Asylum), set(&["not_needed_for_purpose"]));
    assert!(payload.get(DataCategory::Asylum).is_none());
    assert_eq!(payload_keys(&payload, DataCategory::Health), set(&["fitness_to_travel"]));
    assert_eq!(payload_keys(&payload, DataCategory::Protection), set(&["profiles", "risk_level"]));
    let text = payload_text(&payload);
    for asylum_trace in ["asylum", "rejected", "applications"] {
        assert!(!text.contains(asylum_trace), "the payload reveals the asylum history ({asylum_trace})");
    }
}

/// The gateway of The Gambia, run by the state he left, routes the packet:
/// without a key of IOM Banjul's own to seal it to, nothing goes.
#[test]
fn avr_to_iom_in_the_origin_country_without_an_end_to_end_key_is_denied() {
    for policy in [default_policy(), permit_all_policy()] {
        let (decision, payload) = decide_with_key(&fixture(AVR), "gmb-iom-banjul", policy, false);
        assert_denied_for_the_key_alone(&decision, &payload, ASYLUM_END_TO_END, "gmb-iom-banjul");
        // The per-category explanation is that of the allow it would have been.
        let (with_key, _) = decide_with_key(&fixture(AVR), "gmb-iom-banjul", policy, true);
        assert!(with_key.is_allow());
        assert_eq!(decision.withheld(), with_key.withheld());
    }
}

/// The same IOM office, for a case that is not asylum-linked: no rule
/// requires end-to-end sealing, and a key or none changes nothing.
#[test]
fn without_an_asylum_link_no_end_to_end_key_is_needed() {
    let not_linked = variant(AVR, |v| {
        v["case"].as_object_mut().unwrap().remove("asylum");
    });
    let (without_key, payload) = decide_with_key(&not_linked, "gmb-iom-banjul", default_policy(), false);
    assert_eq!(without_key.outcome(), Outcome::Allow, "deny reasons: {:?}", deny_reasons(&without_key));
    assert_eq!(without_key.end_to_end_required_by(), None);
    assert!(!payload.is_empty());
    let (with_key, _) = decide_with_key(&not_linked, "gmb-iom-banjul", default_policy(), true);
    assert_eq!(with_key, without_key);
    let json = serde_json::to_value(&without_key).unwrap();
    assert!(json.get("end_to_end").is_none(), "{json}");
}

#[test]
fn avr_nothing_to_the_origin_ministry_even_with_its_consent_and_a_permit_all_policy() {
    let submission = fixture(AVR);
    // The consent names gmb-immigration for identity, documents and travel.
    for policy in [default_policy(), permit_all_policy()] {
        // Without an end-to-end key: the firewall alone is named (a key would not help).
        let (decision, _) = decide_with_key(&submission, "gmb-immigration", policy, false);
        assert_eq!(deny_reasons(&decision), set(&["asylum_firewall"]));
        // A key of its own changes nothing: the firewall stands.
        let (decision, payload) = decide_with_key(&submission, "gmb-immigration", policy, true);
        assert_denied_with_nothing_sent(&decision, &payload, "gmb-immigration");
        assert_eq!(deny_reasons(&decision), set(&["asylum_firewall"]));
        assert_eq!(decision.end_to_end_required_by(), Some(ASYLUM_END_TO_END));
        for category in [DataCategory::Identity, DataCategory::Documents, DataCategory::ReturnLogistics] {
            assert_eq!(withheld(&decision, category), set(&["asylum_firewall"]), "{category}");
        }
    }
}

#[test]
fn avr_no_state_actor_of_the_origin_state_gets_anything_whatever_the_consent() {
    let submission = variant(AVR, consent_to_everything);
    let targets = state_actors_of(&["GMB"]);
    assert_eq!(targets, ["gmb-immigration", "gmb-social-welfare"]);
    for to in &targets {
        for purpose in Purpose::ALL {
            let mut submission = submission.clone();
            submission.purpose = *purpose;
            let (decision, payload) = decide_for(&submission, to, permit_all_policy());
            assert_stopped_by_the_firewall_alone(&decision, &payload, &format!("{purpose} to {to}"));
        }
    }
}

#[test]
fn avr_no_asylum_category_to_anyone_for_its_return() {
    let submission = fixture(AVR);
    for to in organisation_ids() {
        for policy in [default_policy(), permit_all_policy()] {
            let (decision, payload) = decide_for(&submission, &to, policy);
            assert!(!decision.sent().contains_key(&DataCategory::Asylum), "asylum decided for {to}");
            assert!(payload.get(DataCategory::Asylum).is_none(), "asylum in the payload for {to}");
        }
    }
}

/// The scenario: "no asylum category anywhere". The reintegration
/// baseline carries `asylum.status`, and the consent's IOM scope covers
/// reintegration with "all", so IOM offices outside The Gambia would receive
/// the rejected asylum status for a reintegration referral.
#[test]
fn avr_no_asylum_category_to_anyone_for_any_purpose() {
    for purpose in Purpose::ALL {
        let submission = with_purpose(AVR, *purpose);
        for to in organisation_ids() {
            for policy in [default_policy(), permit_all_policy()] {
                let (decision, payload) = decide_for(&submission, &to, policy);
                assert!(!decision.sent().contains_key(&DataCategory::Asylum), "asylum decided for {purpose} to {to}");
                assert!(payload.get(DataCategory::Asylum).is_none(), "asylum in the payload for {purpose} to {to}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A dual national of Eritrea and Ethiopia who fears return to Eritrea.
// ---------------------------------------------------------------------------

const DUAL: &str = "dual_national_fear";

#[test]
fn dual_national_unhcr_in_ethiopia_gets_what_is_allowed_but_never_asylum() {
    let (decision, payload) = decide_with_key(&fixture(DUAL), "eth-unhcr", default_policy(), true);
    assert_eq!(decision.outcome(), Outcome::Allow);
    // Ethiopia is an origin state and the case is asylum-linked: sealed end to end.
    assert_eq!(decision.end_to_end_required_by(), Some(ASYLUM_END_TO_END));
    assert_eq!(sent(&decision), set(&["identity", "contact", "documents", "family", "protection", "reintegration_needs"]));
    assert_eq!(payload_categories(&payload), sent(&decision));
    // Ethiopia is an origin state (a nationality), though not the feared one;
    // and a consent to "all" never covers the asylum history.
    assert_eq!(withheld(&decision, DataCategory::Asylum), set(&["asylum_category_to_origin_state", "consent_not_given"]));
    let text = payload_text(&payload);
    for asylum_trace in ["asylum", "feared_return", "applications"] {
        assert!(!text.contains(asylum_trace), "the payload reveals the asylum link ({asylum_trace})");
    }
    // Even a reckless DPO cannot send the asylum category to Ethiopia.
    let (decision, payload) = decide_with_key(&fixture(DUAL), "eth-unhcr", permit_all_policy(), true);
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert!(withheld(&decision, DataCategory::Asylum).contains("asylum_category_to_origin_state"));
    assert!(payload.get(DataCategory::Asylum).is_none());
    // Nor can it reach UNHCR in Ethiopia without a key of UNHCR's own.
    for policy in [default_policy(), permit_all_policy()] {
        let (decision, payload) = decide_with_key(&fixture(DUAL), "eth-unhcr", policy, false);
        assert_denied_for_the_key_alone(&decision, &payload, ASYLUM_END_TO_END, "eth-unhcr");
    }
}

#[test]
fn dual_national_no_state_actor_of_either_nationality_gets_anything() {
    let as_given = fixture(DUAL);
    let everything = variant(DUAL, consent_to_everything);
    let targets = state_actors_of(&["ERI", "ETH"]);
    assert_eq!(targets, ["eri-immigration", "eri-police", "eth-immigration"]);
    for to in &targets {
        for policy in [default_policy(), permit_all_policy()] {
            let (decision, payload) = decide_for(&as_given, to, policy);
            assert_denied_with_nothing_sent(&decision, &payload, to);
            assert!(deny_reasons(&decision).contains("asylum_firewall"), "{to}: {:?}", deny_reasons(&decision));

            // With consent to everything, the firewall is the only reason left.
            let (decision, payload) = decide_for(&everything, to, policy);
            assert_stopped_by_the_firewall_alone(&decision, &payload, to);
        }
    }
    // Her consent covers Ethiopia: towards its immigration service, only the
    // firewall denies, key or no key (a key would not help, so it is not asked for).
    let (decision, _) = decide_with_key(&as_given, "eth-immigration", permit_all_policy(), true);
    assert_eq!(deny_reasons(&decision), set(&["asylum_firewall"]));
    let (decision, _) = decide_with_key(&as_given, "eth-immigration", permit_all_policy(), false);
    assert_eq!(deny_reasons(&decision), set(&["asylum_firewall"]));
    // Her refusal of Eritrea holds as well.
    let (decision, _) = decide_with_key(&as_given, "eri-immigration", permit_all_policy(), true);
    assert_eq!(deny_reasons(&decision), set(&["consent_refused", "asylum_firewall"]));
}

/// A consulate sits in the host country but acts for its own state: for an
/// asylum-linked Nigerian, the Nigerian consulate in Rome is an origin-state actor.
#[test]
fn asylum_linked_national_is_never_disclosed_to_the_own_consulate_abroad() {
    let recipient = directory().recipient(&OrgId::parse("nga-consulate-rome").unwrap()).unwrap();
    assert_eq!((recipient.country.as_str(), recipient.state().as_str()), ("ITA", "NGA"));

    let asylum_linked = variant("trafficking_victim_reintegration", |v| {
        consent_to_everything(v);
        v["case"]["asylum"] = json!({ "status": ["asylum_seeker"] });
    });
    for purpose in Purpose::ALL {
        for policy in [default_policy(), permit_all_policy()] {
            let mut submission = asylum_linked.clone();
            submission.purpose = *purpose;
            let (decision, payload) = decide_for(&submission, "nga-consulate-rome", policy);
            assert_stopped_by_the_firewall_alone(&decision, &payload, &format!("{purpose} to nga-consulate-rome"));
        }
    }

    // Without an asylum link the firewall does not apply to the consulate.
    let not_linked = variant("trafficking_victim_reintegration", consent_to_everything);
    let (decision, _) = decide_for(&not_linked, "nga-consulate-rome", permit_all_policy());
    assert_eq!(decision.outcome(), Outcome::Allow, "deny reasons: {:?}", deny_reasons(&decision));
    assert!(decision.withheld().values().flatten().all(|w| w.reason.as_str() != "asylum_firewall"));
}

// ---------------------------------------------------------------------------
// Tracing of a separated boy's parents in Somalia.
// ---------------------------------------------------------------------------

const SEPARATED: &str = "separated_child_tracing";

#[test]
fn separated_child_tracing_sends_identity_family_guardian_and_named_notes() {
    let (decision, payload) = decide_for(&fixture(SEPARATED), "som-red-crescent", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "family", "child_safeguards", "case_notes"]));
    assert_eq!(payload_categories(&payload), sent(&decision));
    assert_eq!(payload_keys(&payload, DataCategory::ChildSafeguards), set(&["guardian"]));
    assert_eq!(withheld(&decision, DataCategory::Health), set(&["not_needed_for_purpose"]));
    assert_eq!(withheld(&decision, DataCategory::Contact), set(&["not_needed_for_purpose"]));
    let text = payload_text(&payload);
    assert!(!text.contains("malnutrition"), "health reaches a tracing service");
    assert!(!text.contains("Centro di accoglienza"), "the child's address reaches a tracing service");
    assert_eq!(
        payload.get(DataCategory::Family).and_then(|f| f["members"].as_array()).map(Vec::len),
        Some(3),
        "every family member to trace goes"
    );
}

#[test]
fn separated_child_tracing_documents_carry_type_and_issuing_country_only() {
    let submission = variant(SEPARATED, |v| {
        v["case"]["documents"] = json!([
            { "type": "passport", "number": "SO-P-7788990", "issuing_country": "SOM", "expiry": "2029-01-01" },
            { "type": "birth_certificate", "number": "BAI-2012-5566" }
        ]);
    });
    let (decision, payload) = decide_for(&submission, "som-red-crescent", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert!(sent(&decision).contains("documents"));
    assert_eq!(sent_fields(&decision, DataCategory::Documents), Some(Fields::Only(&["type", "issuing_country"])));
    assert_eq!(payload_keys(&payload, DataCategory::Documents), set(&["type", "issuing_country"]));
    assert_eq!(payload.get(DataCategory::Documents).and_then(Value::as_array).map(Vec::len), Some(2));
    let text = payload_text(&payload);
    assert!(!text.contains("7788990") && !text.contains("5566") && !text.contains("2029"), "document details leak");
    // Health never serves tracing, whatever the consent and policy say.
    let everything = variant(SEPARATED, consent_to_everything);
    let (decision, payload) = decide_for(&everything, "som-red-crescent", permit_all_policy());
    assert_eq!(withheld(&decision, DataCategory::Health), set(&["not_needed_for_purpose"]));
    assert!(payload.get(DataCategory::Health).is_none());
}

#[test]
fn separated_child_notes_stay_unless_the_consent_names_them() {
    let submission = variant(SEPARATED, |v| v["consent"]["scopes"][0]["categories"] = json!("all"));
    for policy in [default_policy(), permit_all_policy()] {
        let (decision, payload) = decide_for(&submission, "som-red-crescent", policy);
        assert_eq!(decision.outcome(), Outcome::Allow);
        assert!(!sent(&decision).contains("case_notes"));
        assert!(withheld(&decision, DataCategory::CaseNotes).contains("case_notes_not_named_by_consent"));
        assert!(payload.get(DataCategory::CaseNotes).is_none());
        assert!(!payload_text(&payload).contains("Libya"), "notes leave without being named");
    }
}

// ---------------------------------------------------------------------------
// A victim of trafficking whose consent covers reintegration but not return.
// ---------------------------------------------------------------------------

const TRAFFICKING: &str = "trafficking_victim_reintegration";

#[test]
fn trafficking_victim_return_is_denied_without_consent_to_return() {
    let submission = with_purpose(TRAFFICKING, Purpose::Return);
    for policy in [default_policy(), permit_all_policy()] {
        let (decision, payload) = decide_for(&submission, "nga-iom-lagos", policy);
        assert_denied_with_nothing_sent(&decision, &payload, "return to nga-iom-lagos");
        assert_eq!(deny_reasons(&decision), set(&["consent_not_given"]));
    }
}

#[test]
fn trafficking_victim_reintegration_to_shelter_carries_exploitation_types_but_not_health() {
    let (decision, payload) = decide_for(&fixture(TRAFFICKING), "nga-ngo-shelter", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "contact", "protection", "reintegration_needs"]));
    assert_eq!(payload_categories(&payload), sent(&decision));
    assert_eq!(payload_keys(&payload, DataCategory::Protection), set(&["profiles", "risk_level", "exploitation_types"]));
    assert_eq!(withheld(&decision, DataCategory::Health), set(&["consent_refused"]));
    assert_eq!(withheld(&decision, DataCategory::Documents), set(&["consent_not_given"]));
    assert_eq!(withheld(&decision, DataCategory::ReturnLogistics), set(&["consent_not_given"]));
    let text = payload_text(&payload);
    assert!(!text.contains("pregnancy_weeks") && !text.contains("trimester"), "health reaches the shelter");

    // Her refusal of health holds even under a permit-all policy.
    let (decision, payload) = decide_for(&fixture(TRAFFICKING), "nga-ngo-shelter", permit_all_policy());
    assert_eq!(withheld(&decision, DataCategory::Health), set(&["consent_refused"]));
    assert!(payload.get(DataCategory::Health).is_none());
}

#[test]
fn trafficking_victim_exploitation_details_stay_away_from_the_state_referral_mechanism() {
    let (decision, payload) = decide_for(&fixture(TRAFFICKING), "nga-naptip", default_policy());
    assert_eq!(decision.outcome(), Outcome::Allow);
    assert_eq!(sent(&decision), set(&["identity", "contact", "reintegration_needs"]));
    assert_eq!(withheld(&decision, DataCategory::Protection), set(&["policy_forbid"]));
    assert_eq!(withheld_by_policy(&decision, DataCategory::Protection), set(&["protection.state_actors_only_for_return"]));
    assert!(!payload_text(&payload).contains("exploitation_types"));
}

// ---------------------------------------------------------------------------
// Consent over time, and recipients outside the federation.
// ---------------------------------------------------------------------------

#[test]
fn withdrawn_consent_denies() {
    for name in [TRAFFICKING, GIRL, RETURNEE] {
        let submission = variant(name, |v| v["consent"]["withdrawn_at"] = json!("2026-11-20T09:00:00Z"));
        let to = submission.destination.as_str().to_owned();
        for policy in [default_policy(), permit_all_policy()] {
            let (decision, payload) = decide_for(&submission, &to, policy);
            assert_denied_with_nothing_sent(&decision, &payload, name);
            assert_eq!(deny_reasons(&decision), set(&["consent_withdrawn"]), "{name}");
        }
        // The unwithdrawn fixture is allowed: it is the withdrawal that denies.
        assert!(decide_for(&fixture(name), &to, default_policy()).0.is_allow(), "{name}");
    }
}

#[test]
fn expired_consent_denies() {
    // The shelter scope runs until 2027-11-12; the clinic scope until 2027-10-15.
    for (name, until) in [(TRAFFICKING, "2027-11-12T00:00:00Z"), (RETURNEE, "2027-10-15T00:00:00Z")] {
        let submission = fixture(name);
        let to = submission.destination.as_str().to_owned();
        let (before, _) = decide_at(&submission, &to, default_policy(), at(until) - chrono::Duration::seconds(1));
        assert!(before.is_allow(), "{name}: allowed until the scope ends");
        for when in [at(until), at(until) + chrono::Duration::days(30)] {
            let (decision, payload) = decide_at(&submission, &to, default_policy(), when);
            assert_denied_with_nothing_sent(&decision, &payload, name);
            assert_eq!(deny_reasons(&decision), set(&["consent_expired"]), "{name}");
        }
    }
}

#[test]
fn consent_not_yet_valid_denies() {
    let submission = variant(TRAFFICKING, |v| v["consent"]["scopes"][0]["valid_from"] = json!("2026-12-01T00:00:00Z"));
    let (decision, payload) = decide_for(&submission, "nga-ngo-shelter", default_policy());
    assert_denied_with_nothing_sent(&decision, &payload, "scope not yet started");
    assert_eq!(deny_reasons(&decision), set(&["consent_not_yet_valid"]));
    let (decision, _) = decide_at(&submission, "nga-ngo-shelter", default_policy(), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
    assert!(decision.is_allow());
}

#[test]
fn unknown_recipient_is_denied() {
    for name in fixture_names() {
        for policy in [default_policy(), permit_all_policy()] {
            let (decision, payload) = decide_for(&fixture(&name), "xyz-not-in-directory", policy);
            assert_denied_with_nothing_sent(&decision, &payload, &name);
            assert_eq!(deny_reasons(&decision), set(&["recipient_unknown"]), "{name}");
            assert!(decision.withheld().is_empty(), "{name}: nothing is evaluated for an unknown recipient");
        }
    }
}

// ---------------------------------------------------------------------------
// Explanations.
// ---------------------------------------------------------------------------

/// The same referral decided twice gives the same decision: decisions are
/// audited, compared on idempotent resubmission and shown to DPOs. Cedar
/// reports the determining policies as a hash set, so with two permits the
/// order of `permitted_by` changes from one evaluation to the next.
#[test]
fn the_same_referral_always_gets_the_same_decision() {
    let submission = fixture(TRAFFICKING);
    let (first, _) = decide_for(&submission, "nga-ngo-shelter", default_policy());
    // Two permits allow identity, contact and reintegration needs here.
    assert_eq!(
        permitted_by(&first, DataCategory::Identity),
        set(&["reintegration.livelihood", "reintegration.reintegration_assistance"])
    );
    let first_json = serde_json::to_string(&first).unwrap();
    for _ in 0..32 {
        let (again, _) = decide_for(&submission, "nga-ngo-shelter", default_policy());
        assert!(again == first, "the same input gave a different decision");
        assert_eq!(serde_json::to_string(&again).unwrap(), first_json);
    }
}

/// Every sent category names the DPO permits that allowed it, and every DPO
/// forbid that withholds one is named too: a DPO can explain any decision.
#[test]
fn every_sent_category_is_explained_by_a_dpo_permit() {
    let dpo = default_policy().dpo_policies();
    assert!(!dpo.is_empty());
    let mut allows = 0;
    let mut forbids = 0;
    for name in fixture_names() {
        let submission = fixture(&name);
        for to in organisation_ids() {
            let (decision, payload) = decide_for(&submission, &to, default_policy());
            let context = format!("{name} to {to}");
            assert_eq!(decision.policy_version(), default_policy().version(), "{context}");
            if decision.is_allow() {
                allows += 1;
                assert!(!decision.sent().is_empty(), "{context}: an allow sends something");
                assert!(decision.deny_reasons().is_empty(), "{context}");
            }
            for (category, sent) in decision.sent() {
                assert!(!sent.permitted_by.is_empty(), "{context}: {category} sent without a permit named");
                for id in &sent.permitted_by {
                    assert_eq!(dpo.get(id).copied(), Some("permit"), "{context}: {category} permitted by unknown {id}");
                }
            }
            for (category, reasons) in decision.withheld() {
                assert!(!reasons.is_empty(), "{context}: {category} withheld without a reason");
                for Withholding { reason, policy } in reasons {
                    if reason.as_str() == "policy_forbid" {
                        forbids += 1;
                        let id = policy.as_deref().unwrap_or("(none)");
                        assert_eq!(dpo.get(id).copied(), Some("forbid"), "{context}: {category} forbidden by unknown {id}");
                    }
                }
            }
            // The payload holds exactly the sent categories.
            assert_eq!(
                payload_categories(&payload),
                decision.sent().keys().map(|c| c.as_str().to_owned()).collect::<BTreeSet<_>>(),
                "{context}"
            );
        }
    }
    assert!(allows >= 6, "the scenarios allow at least one referral each (got {allows})");
    assert!(forbids > 0, "some DPO forbid applies in the scenarios");
}
