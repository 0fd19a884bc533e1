//! Onward limits over a real two-gateway federation (issue 21 §3): the
//! sending gateway decides what the recipient may pass on (the person's
//! onward consent, its DPO's `refer_onward` permits, the built-in rules)
//! and the limits travel in the packet to the organisation; without a
//! permit, or without onward consent, nothing may be passed on.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client_for, policy_files, send, variant, Backend, Who};
use crate::peers::{status_of, wait_for, wait_for_status, Federation, Peer};

const LIMIT: Duration = Duration::from_secs(40);

crate::on_both_backends!(onward_limits_travel_with_the_case_to_the_organisation, a_case_passed_on_is_followed_and_withdrawn_along_the_chain);

/// The DPO's permit: reintegration cases may go on to organisations that are not state actors.
const ONWARD_PERMIT: &str = "@id(\"onward.reintegration_non_state\")\npermit (principal, action == Action::\"refer_onward\", resource)\n\
                             when { context.onward_purpose == Purpose::\"reintegration\" && !principal.state_actor };\n";

/// IOM Rome's reintegration referral to the health provider in Lagos; its
/// first consent scope lets the provider pass the case on to health
/// providers, NGOs and the social welfare ministry.
fn with_onward_consent(key: &str) -> Value {
    let mut referral = variant("returnee_hiv_reintegration", key, None);
    referral["consent"]["scopes"][0]["onward"] = json!({ "recipient_kinds": ["health_provider", "ngo", "social_welfare"] });
    referral
}

/// The packet ids in the Lagos provider's inbox.
async fn listed(nga: &Peer) -> Vec<String> {
    let listed = nga.get(Who::NgaHealth, "/v1/inbox").await.body;
    listed["items"].as_array().unwrap().iter().map(|item| item["packet_id"].as_str().unwrap().to_owned()).collect()
}

/// The one case of the inbox that is not among `before`, as the provider
/// reads it once screened (a delivery is receipted before it is listed).
async fn new_case(nga: &Peer, before: &[String]) -> Value {
    wait_for("a new case in the inbox", LIMIT, || async { listed(nga).await.iter().any(|id| !before.contains(id)) }).await;
    let packet_id = listed(nga).await.into_iter().find(|id| !before.contains(id)).expect("a new case in the inbox");
    let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(case.status, 200, "{}", case.text);
    case.body
}

/// The case as the Lagos provider reads it from its inbox, once delivered.
async fn as_received(federation: &Federation, referral: &Value) -> Value {
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let before = listed(nga).await;
    let answer = ita.submit(Who::IomRome, referral).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let id = answer.body["referral_id"].as_str().unwrap().to_owned();
    wait_for_status(ita, Who::IomRome, &id, "delivered", LIMIT).await;
    new_case(nga, &before).await
}

async fn adopt_onward_permit(peer: &Peer, (dpo, second_dpo): (Who, Who)) {
    let mut files = policy_files();
    files.insert("30-onward.cedar".to_owned(), ONWARD_PERMIT.to_owned());
    let stored = send(client_for(dpo).put(peer.url("/v1/policies")).json(&json!({ "files": files }))).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let number = stored.body["number"].as_i64().unwrap();
    let approved = send(client_for(second_dpo).post(peer.url(&format!("/v1/policies/{number}/approve"))).json(&json!({}))).await;
    assert_eq!(approved.status, 200, "{}", approved.text);
}

async fn onward_limits_travel_with_the_case_to_the_organisation(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let ita = federation.peer("ITA");

    // The shipped policy permits no onward referral: the case comes without limits.
    let before = as_received(&federation, &with_onward_consent("onward-test-0001")).await;
    assert!(before["case"].is_object() && before.get("onward").is_none(), "{before}");

    adopt_onward_permit(ita, (Who::Dpo, Who::SecondDpo)).await;
    let case = as_received(&federation, &with_onward_consent("onward-test-0002")).await;
    let onward = &case["onward"];
    let grants = onward["grants"].as_array().unwrap_or_else(|| panic!("no onward limits: {case}"));
    assert_eq!(grants.len(), 1, "{onward}");
    // The consent's kinds less the state actor the DPO's permit leaves out;
    // the categories of the onward scope that were sent; until the scope's end.
    assert_eq!(grants[0]["recipient_kinds"], json!(["ngo", "health_provider"]), "{onward}");
    assert_eq!(grants[0]["purposes"], json!(["reintegration"]), "{onward}");
    let sent: Vec<&String> = case["case"].as_object().unwrap().keys().collect();
    let granted: Vec<&str> = grants[0]["categories"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(granted, ["identity", "contact", "health"], "{onward}");
    assert!(granted.iter().all(|c| sent.iter().any(|s| s.as_str() == *c)), "never more than was sent: {sent:?}");
    assert_eq!(grants[0]["until"], "2027-10-15T00:00:00Z", "{onward}");
    // Nothing of the person but the limits: no origin state, no refusal.
    let text = onward.to_string();
    assert!(!text.contains("NGA") && !text.contains("refus"), "{text}");

    // Without onward consent, nothing may be passed on, whatever the policy.
    let without = as_received(&federation, &variant("returnee_hiv_reintegration", "onward-test-0003", None)).await;
    assert!(without.get("onward").is_none(), "{without}");

    // Health withdrawn before the case could leave: the limits are cut with it.
    let before = listed(federation.peer("NGA")).await;
    federation.stop_peer("NGA").await;
    let ita = federation.peer("ITA");
    let answer = ita.submit(Who::IomRome, &with_onward_consent("onward-test-0004")).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let id = answer.body["referral_id"].as_str().unwrap().to_owned();
    let narrowed = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{id}/consent-withdrawal"))).json(&json!({ "categories": ["health"] }))).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    federation.start_peer("NGA", true).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    wait_for_status(ita, Who::IomRome, &id, "delivered", LIMIT).await;
    // The packet made before the withdrawal (Nigeria was down) may arrive and be listed before the
    // withdrawal cuts it: what counts is that the case is cut, limits included, once both are in.
    wait_for("the case cut", LIMIT, || async {
        let Some(packet_id) = listed(nga).await.into_iter().find(|id| !before.contains(id)) else { return false };
        let read = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
        read.status == 200 && read.body["case"].get("health").is_none()
    })
    .await;
    let cut = new_case(nga, &before).await;
    assert!(cut["case"].get("health").is_none(), "{cut}");
    assert_eq!(cut["onward"]["grants"][0]["categories"], json!(["identity", "contact"]), "{cut}");
}

/// The reason codes of the `onward` entries of a referral's timeline, in order.
async fn onward_entries(ita: &Peer, referral_id: &str) -> Vec<Vec<String>> {
    let view = ita.get(Who::IomRome, &format!("/v1/referrals/{referral_id}")).await.body;
    view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|step| step["status"] == "onward")
        .map(|step| step["reason_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .collect()
}

/// Waits until the referral's timeline has an `onward` entry with `codes`.
async fn wait_for_onward(ita: &Peer, referral_id: &str, codes: &[&str]) {
    let what = format!("onward entry {codes:?}");
    wait_for(&what, LIMIT, || async { onward_entries(ita, referral_id).await.iter().any(|entry| entry == codes) }).await;
}

async fn refer_onward(nga: &Peer, packet_id: &str, body: Value) -> crate::helpers::Reply {
    send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/refer-onward"))).json(&body)).await
}

/// The case of `packet_id` as the shelter reads it.
async fn shelter_reads(nga: &Peer, packet_id: &str) -> crate::helpers::Reply {
    nga.get(Who::NgaShelter, &format!("/v1/inbox/{packet_id}")).await
}

async fn a_case_passed_on_is_followed_and_withdrawn_along_the_chain(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    adopt_onward_permit(ita, (Who::Dpo, Who::SecondDpo)).await;

    // Before this gateway's DPO permits it, nothing is passed on here, whatever the limits say.
    let before = listed(nga).await;
    let answer = ita.submit(Who::IomRome, &with_onward_consent("onward-chain-0001")).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let referral_id = answer.body["referral_id"].as_str().unwrap().to_owned();
    let case = new_case(nga, &before).await;
    let packet_id = case["packet_id"].as_str().unwrap().to_owned();
    let to_shelter = json!({ "recipient": "nga-ngo-shelter", "purpose": "reintegration", "categories": ["identity", "contact"] });
    let refused = refer_onward(nga, &packet_id, to_shelter.clone()).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(refused.body["type"].as_str().unwrap().ends_with("/onward-refused"), "{}", refused.text);
    assert_eq!(refused.body["reason_code"], "onward_policy_no_permit");
    // Nigeria's DPOs adopt the same permit for their own gateway.
    adopt_onward_permit(nga, (Who::NgaDpo, Who::NgaSecondDpo)).await;

    // Outside the limits: refused, and the sender is told the kind and why, never the organisation.
    let cases = [
        (json!({ "recipient": "nga-immigration", "purpose": "reintegration" }), "onward_not_consented"),
        (json!({ "recipient": "nga-ngo-shelter", "purpose": "return" }), "onward_not_consented"),
        (json!({ "recipient": "nga-ngo-shelter", "purpose": "reintegration", "categories": ["asylum"] }), "onward_not_consented"),
        (json!({ "recipient": "nga-health-lagos", "purpose": "reintegration" }), "same_organisation"),
        (json!({ "recipient": "nga-nobody", "purpose": "reintegration" }), "recipient_unknown"),
    ];
    for (body, code) in &cases {
        let refused = refer_onward(nga, &packet_id, body.clone()).await;
        assert_eq!(refused.status, 422, "{body}: {}", refused.text);
        assert_eq!(refused.body["reason_code"], *code, "{body}");
    }
    let bad = refer_onward(nga, &packet_id, json!({ "recipient": "nga-ngo-shelter", "purpose": "reintegration", "name": "x" })).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    // Another organisation's case is not there to pass on.
    let foreign = send(client_for(Who::NgaShelter).post(nga.url(&format!("/v1/inbox/{packet_id}/refer-onward"))).json(&to_shelter)).await;
    assert_eq!(foreign.status, 404, "{}", foreign.text);

    // Within them: a copy for the shelter, cut to what was asked and what reintegration needs.
    let passed = refer_onward(nga, &packet_id, to_shelter.clone()).await;
    assert_eq!(passed.status, 201, "{}", passed.text);
    assert_eq!(passed.body["categories"], json!(["identity", "contact"]), "{}", passed.text);
    assert_eq!(passed.body["onward_copy"], 1);
    assert_eq!(passed.body["referred_from"], packet_id.as_str());
    let copy_id = passed.body["packet_id"].as_str().unwrap().to_owned();
    // A retry gets the same copy back.
    let again = refer_onward(nga, &packet_id, to_shelter.clone()).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["packet_id"], copy_id.as_str());

    let listed_to_shelter = nga.get(Who::NgaShelter, "/v1/inbox").await.body;
    let entries = listed_to_shelter["items"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed_to_shelter}");
    assert_eq!(entries[0]["packet_id"], copy_id.as_str());
    assert_eq!(entries[0]["purpose"], "reintegration");
    let copy = shelter_reads(nga, &copy_id).await;
    assert_eq!(copy.status, 200, "{}", copy.text);
    let held: std::collections::BTreeSet<&String> = copy.body["case"].as_object().unwrap().keys().collect();
    assert_eq!(held, [&"contact".to_owned(), &"identity".to_owned()].into(), "{}", copy.text);
    assert_eq!(copy.body["referred_onward_by"], "nga-health-lagos");
    assert!(copy.body.get("onward").is_none(), "a copy is never passed on again: {}", copy.text);
    for category in ["identity", "contact"] {
        for (field, value) in copy.body["case"][category].as_object().unwrap() {
            assert_eq!(case["case"][category].get(field), Some(value), "the copy holds the case's own data, never more: {category}.{field}");
        }
    }
    // Nor may the shelter pass it on, nor read the case it came from.
    let onward_again = send(client_for(Who::NgaShelter).post(nga.url(&format!("/v1/inbox/{copy_id}/refer-onward"))).json(&json!({ "recipient": "nga-health-lagos", "purpose": "reintegration" }))).await;
    assert_eq!(onward_again.status, 422, "{}", onward_again.text);
    assert_eq!(onward_again.body["reason_code"], "onward_not_consented");
    assert_eq!(shelter_reads(nga, &packet_id).await.status, 404);

    // The sender follows it, as codes: the copy's number, the organisation's kind, the step.
    wait_for_onward(ita, &referral_id, &["immigration", "refused", "onward_not_consented"]).await;
    wait_for_onward(ita, &referral_id, &["onward_1", "ngo", "referred"]).await;
    let acknowledged = send(client_for(Who::NgaShelter).post(nga.url(&format!("/v1/inbox/{copy_id}/ack")))).await;
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.text);
    let accepted = send(client_for(Who::NgaShelter).post(nga.url(&format!("/v1/inbox/{copy_id}/status"))).json(&json!({ "status": "accepted" }))).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    wait_for_onward(ita, &referral_id, &["onward_1", "ngo", "acknowledged"]).await;
    wait_for_onward(ita, &referral_id, &["onward_1", "ngo", "accepted"]).await;
    // The referral's own status is its recipient's, not the copy's.
    assert_eq!(status_of(ita, Who::IomRome, &referral_id).await, "delivered");
    let timeline = ita.get(Who::IomRome, &format!("/v1/referrals/{referral_id}")).await.text;
    assert!(!timeline.contains("nga-ngo-shelter") && !timeline.contains(&copy_id), "{timeline}");

    // A partial withdrawal reaches the copy: cut there too (told only of what it held), and confirmed back.
    let narrowed = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{referral_id}/consent-withdrawal"))).json(&json!({ "categories": ["contact", "health"] }))).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    // (While the cut is written its old key is gone already: the copy answers 410 for that moment.)
    wait_for("the copy cut", LIMIT, || async { shelter_reads(nga, &copy_id).await.body["erased_categories"] == json!(["contact"]) }).await;
    let cut = shelter_reads(nga, &copy_id).await.body;
    assert!(cut["case"].get("contact").is_none() && cut["case"].get("identity").is_some(), "{cut}");
    let listed_again = nga.get(Who::NgaShelter, "/v1/inbox").await.text;
    assert!(!listed_again.contains("health"), "the shelter never held the health category: {listed_again}");
    let confirmed = send(client_for(Who::NgaShelter).post(nga.url(&format!("/v1/inbox/{copy_id}/erasure-confirmed")))).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    wait_for_onward(ita, &referral_id, &["onward_1", "ngo", "narrowing_confirmed"]).await;

    // The whole withdrawal erases the copy; the shelter's confirmation comes back along the chain.
    let withdrawn = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{referral_id}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    wait_for("the copy erased", LIMIT, || async { shelter_reads(nga, &copy_id).await.status == 410 }).await;
    // Its key goes before its state is written: for that moment it is unreadable but not yet listed as erased.
    wait_for("the copy listed as erased", LIMIT, || async { nga.get(Who::NgaShelter, "/v1/inbox").await.body["items"][0]["state"] == "erased" }).await;
    let erased = nga.get(Who::NgaShelter, "/v1/inbox").await.body;
    assert_eq!(erased["items"].as_array().map(Vec::len), Some(1), "{erased}");
    assert_eq!(erased["items"][0]["packet_id"], copy_id.as_str(), "{erased}");
    let confirmed = send(client_for(Who::NgaShelter).post(nga.url(&format!("/v1/inbox/{copy_id}/erasure-confirmed")))).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text);
    wait_for_onward(ita, &referral_id, &["onward_1", "ngo", "erasure_confirmed"]).await;
    // Nothing is passed on of a case withdrawn.
    assert_eq!(refer_onward(nga, &packet_id, to_shelter).await.status, 410);
    // Nothing about the copy (its acknowledgement, report, confirmations, a refusal to pass it on) went to the
    // sender but as a movement of the case: never naming the shelter, nor the copy.
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE recipient_org = 'nga-ngo-shelter'").await, 0);
    assert!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'status'").await >= 6);
    // A refusal is told once per kind and code, however often it is asked.
    let entries = onward_entries(ita, &referral_id).await;
    assert_eq!(entries.iter().filter(|e| *e == &["ngo", "refused", "onward_not_consented"]).count(), 1, "{entries:?}");
    assert!(entries.iter().all(|e| !e.contains(&"same_organisation".to_owned()) && !e.contains(&"recipient_unknown".to_owned())), "{entries:?}");
}
