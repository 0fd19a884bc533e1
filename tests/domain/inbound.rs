//! The receiving gateway's screening: what the sender's decision allowed
//! under the same policy passes; the asylum firewall holds at the receiving
//! end whatever the sender did; every other refusal has its reason.

use chrono::Duration;
use proptest::prelude::*;
use referral_gateway::domain::decision::ReasonCode;
use referral_gateway::domain::inbound::{screen, Received, Screening};
use referral_gateway::domain::{CountryCode, OrgId, Purpose};
use serde_json::{json, Value};

use crate::support::{decide_for, default_policy, directory, fixture, fixture_names, italy, now, permit_all_policy};

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

fn received(body: &Value, purpose: Purpose) -> Received<'_> {
    Received { sender: italy(), purpose, body, consent_expires_at: None, retention_until: None }
}

fn screen_at(body: &Value, purpose: Purpose, to: &str, policy: &referral_gateway::domain::policy::DataProtectionPolicy) -> Screening {
    let recipient = directory().recipient(&OrgId::parse(to).unwrap()).unwrap();
    screen(&received(body, purpose), Some(&recipient), recipient.country, policy, now())
}

fn refused(screening: Screening) -> Vec<ReasonCode> {
    match screening {
        Screening::Refuse(reasons) => reasons.into_iter().collect(),
        Screening::Forward => panic!("forwarded"),
    }
}

/// The whole case of a fixture as a body: what a broken or malicious
/// sending gateway could put in a packet.
fn whole_case(name: &str) -> Value {
    serde_json::to_value(&fixture(name).case).unwrap()
}

#[test]
fn what_the_sender_allowed_under_the_same_policy_is_forwarded() {
    let mut allowed = 0;
    for name in fixture_names() {
        let submission = fixture(&name);
        for organisation in directory().organisations() {
            if organisation.country == italy() {
                continue;
            }
            let (decision, payload) = decide_for(&submission, organisation.id.as_str(), default_policy());
            if !decision.is_allow() {
                continue;
            }
            allowed += 1;
            let body = payload.to_json();
            assert_eq!(
                screen_at(&body, submission.purpose, organisation.id.as_str(), default_policy()),
                Screening::Forward,
                "{name} to {}",
                organisation.id
            );
        }
    }
    assert!(allowed >= 6, "the fixtures exercise several allowed corridors ({allowed})");
}

#[test]
fn an_asylum_linked_case_never_reaches_the_origin_states_officials_even_if_the_sender_sent_it() {
    let body = whole_case("dual_national_fear");
    for official in ["eri-immigration", "eri-police", "eth-immigration"] {
        let reasons = refused(screen_at(&body, Purpose::Return, official, permit_all_policy()));
        assert!(reasons.contains(&ReasonCode::AsylumFirewall), "{official}: {reasons:?}");
    }
    let gambian = whole_case("rejected_asylum_avr");
    let reasons = refused(screen_at(&gambian, Purpose::Return, "gmb-immigration", permit_all_policy()));
    assert!(reasons.contains(&ReasonCode::AsylumFirewall));
    assert!(reasons.contains(&ReasonCode::AsylumCategoryToOriginState));
}

#[test]
fn an_asylum_linked_case_without_its_origin_goes_to_no_state_actor() {
    let body = json!({ "asylum": { "status": ["refugee"] }, "return_logistics": whole_case("rejected_asylum_avr")["return_logistics"] });
    let reasons = refused(screen_at(&body, Purpose::Return, "nga-immigration", permit_all_policy()));
    assert!(reasons.contains(&ReasonCode::AsylumFirewall), "{reasons:?}");
}

#[test]
fn each_other_refusal_names_its_reason() {
    let submission = fixture("returnee_hiv_reintegration");
    let (decision, payload) = decide_for(&submission, "nga-health-lagos", default_policy());
    assert!(decision.is_allow());
    let body = payload.to_json();
    let health = directory().recipient(&OrgId::parse("nga-health-lagos").unwrap()).unwrap();
    let purpose = submission.purpose;

    assert_eq!(screen(&received(&body, purpose), None, country("NGA"), default_policy(), now()), Screening::Refuse([ReasonCode::RecipientUnknown].into()));
    assert_eq!(
        refused(screen(&received(&body, purpose), Some(&health), country("GMB"), default_policy(), now())),
        [ReasonCode::RecipientNotServedHere]
    );
    let late = Received { consent_expires_at: Some(now() - Duration::seconds(1)), retention_until: Some(now()), ..received(&body, purpose) };
    assert_eq!(refused(screen(&late, Some(&health), country("NGA"), default_policy(), now())), [ReasonCode::ConsentExpired, ReasonCode::RetentionPassed]);
    let in_time = Received { consent_expires_at: Some(now() + Duration::days(1)), retention_until: Some(now() + Duration::days(1)), ..received(&body, purpose) };
    assert_eq!(screen(&in_time, Some(&health), country("NGA"), default_policy(), now()), Screening::Forward);
    for unreadable in [json!({}), json!({ "identity": 5 }), json!({ "secrets": {} }), json!([1, 2])] {
        assert_eq!(refused(screen(&received(&unreadable, purpose), Some(&health), country("NGA"), default_policy(), now())), [ReasonCode::PayloadUnreadable]);
    }
    // This gateway's own policy: health data never to a state actor, whatever was sent.
    let reasons = refused(screen_at(&body, purpose, "nga-immigration", default_policy()));
    assert!(reasons.contains(&ReasonCode::PolicyForbid), "{reasons:?}");
}

fn categories_of(body: &Value) -> Vec<String> {
    body.as_object().unwrap().keys().cloned().collect()
}

proptest! {
    /// Whatever part of an asylum-linked case arrives, no state actor of an
    /// origin state receives it: not when the part shows the origin, nor
    /// when it hides the nationalities that would show it.
    #[test]
    fn no_part_of_an_asylum_linked_case_reaches_an_origin_state_actor(mask in 1u32..(1 << 11), official in 0usize..3) {
        let whole = whole_case("dual_national_fear");
        let names = categories_of(&whole);
        let mut body = serde_json::Map::new();
        for (index, name) in names.iter().enumerate() {
            if mask & (1 << index) != 0 {
                body.insert(name.clone(), whole[name].clone());
            }
        }
        // The case reads as asylum-linked only with the asylum category.
        body.insert("asylum".to_owned(), whole["asylum"].clone());
        let body = Value::Object(body);
        let to = ["eri-immigration", "eri-police", "eth-immigration"][official];
        let screening = screen_at(&body, Purpose::Return, to, permit_all_policy());
        prop_assert!(matches!(&screening, Screening::Refuse(reasons) if reasons.contains(&ReasonCode::AsylumFirewall)), "{screening:?}");
    }
}

#[test]
fn a_packet_sealed_end_to_end_is_routed_on_its_recipient_alone() {
    use referral_gateway::domain::inbound::screen_routing;
    let red_cross = directory().recipient(&OrgId::parse("gin-red-cross").unwrap()).unwrap();
    assert_eq!(screen_routing(Some(&red_cross), country("GIN")), Screening::Forward);
    assert_eq!(refused(screen_routing(Some(&red_cross), country("NGA"))), [ReasonCode::RecipientNotServedHere]);
    assert_eq!(refused(screen_routing(None, country("GIN"))), [ReasonCode::RecipientUnknown]);
}

/// Rule (d) at the requesting gateway, as far as the reply as received
/// shows a child (a date of birth; a replying gateway that hides it can
/// only be caught at its own end): a reply carrying the child's contact
/// details passes only with the determination that lets them go
/// (recommending the child rejoin the family); a reply without them passes.
#[test]
fn a_reply_about_a_child_with_contact_details_needs_the_determination_that_allows_them() {
    let child = json!({ "identity": { "given_names": "Ada", "date_of_birth": "2012-06-01" }, "contact": { "phone": "+234 803 555 0143" } });
    let determination = |recommendation: &str| {
        let mut body = child.clone();
        body["child_safeguards"] = json!({ "best_interests_determination": { "status": "completed", "completed_on": "2026-10-01", "recommendation": recommendation } });
        body
    };
    for purpose in [Purpose::TracingReply, Purpose::FamilyAssessment] {
        let to = "ita-child-protection";
        assert!(refused(screen_at(&child, purpose, to, permit_all_policy())).contains(&ReasonCode::ChildWhereaboutsToFamily), "{purpose}");
        assert!(refused(screen_at(&determination("local_integration"), purpose, to, permit_all_policy())).contains(&ReasonCode::ChildWhereaboutsToFamily), "{purpose}");
        assert_eq!(screen_at(&determination("family_reunification_elsewhere"), purpose, to, permit_all_policy()), Screening::Forward, "{purpose}");
        let mut without_contact = child.clone();
        without_contact.as_object_mut().unwrap().remove("contact");
        assert_eq!(screen_at(&without_contact, purpose, to, permit_all_policy()), Screening::Forward, "{purpose}");
    }
    // Not a reply: a referral about a child with contact details is not this rule's.
    assert_eq!(screen_at(&child, Purpose::Reintegration, "ita-child-protection", permit_all_policy()), Screening::Forward);
}
