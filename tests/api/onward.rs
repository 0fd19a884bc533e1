//! Onward limits over a real two-gateway federation (issue 21 §3): the
//! sending gateway decides what the recipient may pass on (the person's
//! onward consent, its DPO's `refer_onward` permits, the built-in rules)
//! and the limits travel in the packet to the organisation; without a
//! permit, or without onward consent, nothing may be passed on.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client_for, policy_files, send, variant, Backend, Who};
use crate::peers::{status_of, wait_for, Federation, Peer};

const LIMIT: Duration = Duration::from_secs(40);

crate::on_both_backends!(onward_limits_travel_with_the_case_to_the_organisation);

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
    wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    new_case(nga, &before).await
}

async fn adopt_onward_permit(ita: &Peer) {
    let mut files = policy_files();
    files.insert("30-onward.cedar".to_owned(), ONWARD_PERMIT.to_owned());
    let stored = send(client_for(Who::Dpo).put(ita.url("/v1/policies")).json(&json!({ "files": files }))).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let number = stored.body["number"].as_i64().unwrap();
    let approved = send(client_for(Who::SecondDpo).post(ita.url(&format!("/v1/policies/{number}/approve"))).json(&json!({}))).await;
    assert_eq!(approved.status, 200, "{}", approved.text);
}

async fn onward_limits_travel_with_the_case_to_the_organisation(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let ita = federation.peer("ITA");

    // The shipped policy permits no onward referral: the case comes without limits.
    let before = as_received(&federation, &with_onward_consent("onward-test-0001")).await;
    assert!(before["case"].is_object() && before.get("onward").is_none(), "{before}");

    adopt_onward_permit(ita).await;
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
    wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let cut = new_case(nga, &before).await;
    assert!(cut["case"].get("health").is_none(), "{cut}");
    assert_eq!(cut["onward"]["grants"][0]["categories"], json!(["identity", "contact"]), "{cut}");
}
