//! Emergency overrides over a real two-gateway federation (issue 21 §4): a
//! referral whose consent has lapsed is denied; asked again with an
//! override, it waits, held, for a DPO's approval; approved, it is
//! delivered. Another, not approved within the window, is denied and its
//! payload erased; nothing of it ever leaves the gateway.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client_for, policy_files, send, variant, Backend, Who};
use crate::peers::{status_of, wait_for, Federation, Peer};

const LIMIT: Duration = Duration::from_secs(40);

crate::on_both_backends!(an_emergency_override_waits_for_another_person_and_lapses_without_one);
crate::on_both_backends!(a_standing_rule_lets_only_an_emergency_override_go_at_once);

/// IOM Rome's referral to the health provider in Lagos, its consent lapsed
/// at the start of November: the categories it needs have no consent now.
fn lapsed_consent(key: &str, emergency_override: bool) -> Value {
    let mut referral = variant("returnee_hiv_reintegration", key, None);
    for scope in referral["consent"]["scopes"].as_array_mut().unwrap() {
        scope["valid_until"] = json!("2026-11-01T00:00:00Z");
    }
    if emergency_override {
        referral["override"] = json!({ "reason": "life_threatening", "justification_code": "medical_evacuation" });
    }
    referral
}

async fn decide(peer: &Peer, who: Who, referral_id: &str, verdict: &str) -> crate::helpers::Reply {
    send(client_for(who).post(peer.url(&format!("/v1/overrides/{referral_id}/{verdict}")))).await
}

async fn an_emergency_override_waits_for_another_person_and_lapses_without_one(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let ita = federation.peer("ITA");

    // Without an override: denied for the consent.
    let denied = ita.submit(Who::IomRome, &lapsed_consent("override-test-0001", false)).await;
    assert_eq!(denied.status, 422, "{}", denied.text);

    // With one: allowed under it, held until a DPO approves.
    let asked = ita.submit(Who::IomRome, &lapsed_consent("override-test-0002", true)).await;
    assert_eq!(asked.status, 202, "{}", asked.text);
    assert_eq!(asked.body["status"], "awaiting_override", "{}", asked.text);
    let id = asked.body["referral_id"].as_str().unwrap().to_owned();
    let answer = &asked.body["override"];
    assert_eq!((answer["state"].as_str(), answer["reason"].as_str(), answer["justification_code"].as_str()), (Some("awaiting_approval"), Some("life_threatening"), Some("medical_evacuation")));
    let overridden: Vec<&str> = answer["overridden_categories"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(overridden, ["identity", "contact", "health"], "what goes without consent; the policy withholds the rest");
    let approve_by = chrono::DateTime::parse_from_rfc3339(answer["approve_by"].as_str().unwrap()).unwrap();
    let in_an_hour = federation.clock_now() + chrono::Duration::hours(1);
    assert!((approve_by.timestamp_millis() - in_an_hour.timestamp_millis()).abs() < 5_000, "{approve_by}");
    // The replay says the same.
    let replayed = ita.submit(Who::IomRome, &lapsed_consent("override-test-0002", true)).await;
    assert_eq!((replayed.body["status"].as_str(), replayed.body["override"]["state"].as_str()), (Some("awaiting_override"), Some("awaiting_approval")), "{}", replayed.text);

    // Held: no delivery worker can claim it, now or later (a claim here takes
    // nothing from the worker: there is nothing else to send).
    let gateway = ita.app().gateway();
    let later = (federation.clock_now() + chrono::Duration::minutes(30)).timestamp_millis();
    assert!(gateway.store.claim_deliveries(later, 1, 10).await.unwrap().is_empty(), "a held packet is never claimed");
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!((shown["status"].as_str(), shown["delivery"]["attempts"].as_i64()), (Some("awaiting_override"), Some(0)), "{shown}");
    assert_eq!(shown["override"]["state"], "awaiting_approval");
    let nga = federation.peer("NGA");
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"], json!([]));

    // The DPOs see it; the submitter cannot decide it (no dpo role).
    let listed = ita.get(Who::Dpo, "/v1/overrides").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", listed.text);
    assert_eq!((items[0]["referral_id"].as_str(), items[0]["requested_by_org"].as_str(), items[0]["recipient"]["org"].as_str()), (Some(id.as_str()), Some("ita-iom-rome"), Some("nga-health-lagos")));
    assert_eq!(decide(ita, Who::IomRome, &id, "approve").await.status, 403);

    // A DPO approves: queued, then delivered to Lagos.
    let approved = decide(ita, Who::Dpo, &id, "approve").await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    assert_eq!((approved.body["status"].as_str(), approved.body["override"]["state"].as_str()), (Some("queued"), Some("approved")), "{}", approved.text);
    wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let again = decide(ita, Who::Dpo, &id, "reject").await;
    assert_eq!((again.status, again.body["type"].as_str(), again.body["code"].as_str()), (409, Some("https://referral-gateway.example/problems/override-decision-refused"), Some("settled")), "{}", again.text);
    let timeline: Vec<String> = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["timeline"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap().to_owned()).collect();
    assert_eq!(timeline[..3], ["awaiting_override", "override_approved", "delivered"], "{timeline:?}");

    // Another, never approved: past the window it is denied and its payload erased.
    let lapsing = ita.submit(Who::IomRome, &lapsed_consent("override-test-0003", true)).await;
    assert_eq!(lapsing.status, 202, "{}", lapsing.text);
    let lapsing_id = lapsing.body["referral_id"].as_str().unwrap().to_owned();
    federation.clock.advance(chrono::Duration::minutes(61));
    let ita = federation.peer("ITA");
    let late = decide(ita, Who::Dpo, &lapsing_id, "approve").await;
    assert_eq!((late.status, late.body["code"].as_str()), (409, Some("window_passed")), "{}", late.text);
    assert_eq!(ita.app().gateway().lapse_overrides(10).await.unwrap(), 1);
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{lapsing_id}")).await.body;
    assert_eq!((shown["status"].as_str(), shown["override"]["state"].as_str(), shown["delivery"]["state"].as_str()), (Some("denied"), Some("expired"), Some("erased")), "{shown}");
    assert!(ita.app().gateway().store.sealed_payload(&lapsing_id).await.unwrap().is_none_or(|p| p.sealed.is_empty()), "the held payload is erased");
    assert_eq!(ita.get(Who::Dpo, "/v1/overrides").await.body["items"], json!([]));
    let nga = federation.peer("NGA");
    assert!(ita.app().gateway().store.claim_deliveries(later + 3_600_000, 1, 10).await.unwrap().is_empty(), "the lapsed one never goes");
    wait_for("the approved case listed", LIMIT, || async { nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|i| i.len() == 1) }).await;
}

/// The DPO's standing rule: emergency overrides for life-threatening
/// reintegration cases to health providers go at once.
const STANDING_RULE: &str = "[[standing]]\nreasons = [\"life_threatening\"]\npurposes = [\"reintegration\"]\nrecipient_kinds = [\"health_provider\"]\n";

async fn a_standing_rule_lets_only_an_emergency_override_go_at_once(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let ita = federation.peer("ITA");
    let emergency = |key: &str| {
        let mut referral = lapsed_consent(key, true);
        referral["priority"] = json!("emergency");
        referral
    };

    // Shipped without a rule: an emergency waits for a DPO too.
    let waits = ita.submit(Who::IomRome, &emergency("standing-test-0001")).await;
    assert_eq!((waits.status, waits.body["status"].as_str()), (202, Some("awaiting_override")), "{}", waits.text);

    // The DPO adds the rule; a second DPO signs it off.
    let mut files = policy_files();
    files.insert("overrides.toml".to_owned(), STANDING_RULE.to_owned());
    let stored = send(client_for(Who::Dpo).put(ita.url("/v1/policies")).json(&json!({ "files": files }))).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    // The second DPO is told what the Cedar label cannot show.
    assert_eq!(stored.body["checks"]["rule_files_changed"], json!(["overrides.toml"]), "{}", stored.text);
    let number = stored.body["number"].as_i64().unwrap();
    let approved = send(client_for(Who::SecondDpo).post(ita.url(&format!("/v1/policies/{number}/approve"))).json(&json!({}))).await;
    assert_eq!(approved.status, 200, "{}", approved.text);

    // An emergency it covers: approved at once, queued, delivered.
    let at_once = ita.submit(Who::IomRome, &emergency("standing-test-0002")).await;
    assert_eq!(at_once.status, 202, "{}", at_once.text);
    assert_eq!(at_once.body["status"], "queued", "{}", at_once.text);
    let answer = &at_once.body["override"];
    assert_eq!((answer["state"].as_str(), answer["standing_rule"].as_str()), (Some("approved"), Some("overrides.toml#1")), "{}", at_once.text);
    assert!(answer["decided_at"].is_string() && answer.get("approve_by").is_none(), "nothing awaits approval: {}", at_once.text);
    let id = at_once.body["referral_id"].as_str().unwrap().to_owned();
    let replayed = ita.submit(Who::IomRome, &emergency("standing-test-0002")).await;
    assert_eq!((replayed.body["status"].as_str(), &replayed.body["override"]), (Some("queued"), answer), "{}", replayed.text);
    wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    let timeline: Vec<&str> = shown["timeline"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(timeline[..3], ["awaiting_override", "override_approved", "delivered"], "{shown}");
    assert_eq!(shown["override"]["standing_rule"], "overrides.toml#1", "{shown}");
    let nga = federation.peer("NGA");
    wait_for("listed in Lagos", LIMIT, || async { nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|i| i.len() == 1) }).await;

    // Not an emergency, or another reason: it still waits for a DPO.
    let urgent = {
        let mut referral = emergency("standing-test-0003");
        referral["priority"] = json!("urgent");
        ita.submit(Who::IomRome, &referral).await
    };
    assert_eq!((urgent.body["status"].as_str(), urgent.body["override"]["state"].as_str()), (Some("awaiting_override"), Some("awaiting_approval")), "{}", urgent.text);
    assert!(urgent.body["override"].get("standing_rule").is_none(), "{}", urgent.text);
    let other_reason = {
        let mut referral = emergency("standing-test-0004");
        referral["override"]["reason"] = json!("child_at_imminent_risk");
        ita.submit(Who::IomRome, &referral).await
    };
    // The person is an adult: that reason cannot apply at all.
    assert_eq!(other_reason.status, 422, "{}", other_reason.text);
    let listed = ita.get(Who::Dpo, "/v1/overrides").await.body;
    let waiting: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|i| i["referral_id"].as_str().unwrap()).collect();
    let first_waiting = waits.body["referral_id"].as_str().unwrap();
    let urgent_id = urgent.body["referral_id"].as_str().unwrap();
    assert_eq!(waiting.len(), 2, "{listed}");
    assert!(waiting.contains(&first_waiting) && waiting.contains(&urgent_id), "{listed}");

    // The subject report tells who got what without consent, and under what.
    let subject_ref = emergency("any")["subject_ref"].as_str().unwrap().to_owned();
    let report = ita.get(Who::Dpo, &format!("/v1/subjects/{subject_ref}/report")).await;
    assert_eq!(report.status, 200, "{}", report.text);
    let reported: Vec<&Value> = report.body["referrals"].as_array().unwrap().iter().collect();
    assert_eq!(reported.len(), 4, "the adult's child_at_imminent_risk refusal is a denied referral too: {}", report.text);
    let of = |referral_id: &str| reported.iter().find(|r| r["referral_id"] == referral_id).map(|r| r["override"].clone()).unwrap();
    let at_once_reported = of(&id);
    assert_eq!((at_once_reported["state"].as_str(), at_once_reported["standing_rule"].as_str()), (Some("approved"), Some("overrides.toml#1")), "{}", report.text);
    assert_eq!(at_once_reported["overridden_categories"], json!(["identity", "contact", "health"]), "{}", report.text);
    assert_eq!(of(urgent_id)["state"], "awaiting_approval", "{}", report.text);
    let refused_id = other_reason.body["referral_id"].as_str().unwrap();
    assert!(of(refused_id).is_null(), "an override never applied is no override: {}", report.text);

    // The audit names the rule that stood in for a second person.
    let recorded = ita.text(&format!("SELECT reasons FROM audit_log WHERE referral_id = '{id}' AND action = 'referral.submit'")).await.unwrap();
    assert!(recorded.contains("standing_rule:overrides.toml#1"), "{recorded}");
}
