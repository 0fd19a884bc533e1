//! The receiving side over real TLS: Nigeria's gateway screens what Italy
//! sent, hands it to the recipient organisation (pull inbox), and the
//! recipient's acknowledgement and progress flow back into the sender's
//! timeline; a refusal reaches the sender with its reasons and nobody else.
//! (Some 700 lines: a few long scenarios over two real gateways, each read
//! from the submission to the last status.)

use std::time::Duration;

use referral_gateway::app::sending::delivery::PeerTransport;
use referral_gateway::crypto::packet::{seal, PacketClaims, PacketType};
use referral_gateway::domain::{CountryCode, OrgId, Purpose};
use serde_json::{json, Value};

use crate::helpers::{client_for, fixture, repo_path, send, variant, Backend, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation, Peer, Webhook};

on_both_backends!(
    a_case_is_screened_handed_over_and_its_progress_flows_back,
    a_case_refused_by_the_receiving_gateway_reaches_nobody_and_the_sender_learns_why,
    an_asylum_linked_case_forced_through_by_a_sender_is_stopped_at_the_receiving_gateway,
    a_webhook_recipient_down_then_up_gets_the_signed_case_once,
    a_status_with_free_text_or_from_another_gateway_changes_nothing,
    a_withdrawal_after_delivery_erases_the_case_at_the_peer_and_comes_back_confirmed,
    a_referral_packet_arriving_after_its_withdrawal_is_erased_on_arrival,
    a_withdrawal_while_the_peer_is_down_is_overdue_until_the_peer_erases,
    a_partial_withdrawal_erases_one_category_at_the_peer_and_the_rest_stays_shared,
    a_partial_withdrawal_that_overtakes_its_referral_cuts_it_down_on_arrival,
    a_withdrawal_forged_by_another_gateway_replayed_or_from_a_non_member_erases_nothing,
    a_sealed_partial_withdrawal_is_kept_only_for_a_sealed_case_that_may_still_take_it,
);

const LIMIT: Duration = Duration::from_secs(40);

async fn submitted(federation: &Federation, key: &str) -> String {
    submitted_with(federation, key, false).await
}

async fn submitted_with(federation: &Federation, key: &str, handover: bool) -> String {
    let mut referral = variant("returnee_hiv_reintegration", key, None);
    if handover {
        referral["handover"] = json!(true);
    }
    let reply = federation.peer("ITA").submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["referral_id"].as_str().unwrap().to_owned()
}

/// Nigeria's health organisation's inbox, once it lists exactly one case.
async fn the_one_case_listed(nga: &Peer) -> Value {
    wait_for("the case in the recipient's inbox", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.len() == 1)
    })
    .await;
    nga.get(Who::NgaHealth, "/v1/inbox").await.body
}

fn timeline(referral: &Value) -> Vec<String> {
    referral["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

async fn a_case_is_screened_handed_over_and_its_progress_flows_back(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submitted_with(&federation, "forward-test-0001", true).await;
    let nga = federation.peer("NGA");
    let listed = the_one_case_listed(nga).await;
    let item = &listed["items"][0];
    assert_eq!((item["from_country"].as_str(), item["purpose"].as_str(), item["state"].as_str()), (Some("ITA"), Some("reintegration"), Some("available")));
    let packet_id = item["packet_id"].as_str().unwrap().to_owned();

    // The recipient reads the minimised case: what Italy's decision sent, no more.
    let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(case.status, 200, "{}", case.text);
    let submission = fixture("returnee_hiv_reintegration");
    let mut sent_categories: Vec<&str> = case.body["case"].as_object().unwrap().keys().map(String::as_str).collect();
    sent_categories.sort();
    assert_eq!(sent_categories, ["contact", "health", "identity"]);
    assert_eq!(case.body["case"]["identity"]["family_name"], submission["case"]["identity"]["family_name"]);
    assert_eq!(nga.count(&format!("SELECT COUNT(*) FROM audit_log WHERE action = 'inbox.read' AND outcome = 'read' AND referral_id = '{packet_id}' AND actor_org = 'nga-health-lagos'")).await, 1);

    // Nobody else at Nigeria's gateway sees it.
    assert_eq!(nga.get(Who::Foreign, "/v1/inbox").await.status, 403, "a submitter is not a recipient");
    assert_eq!(nga.get(Who::Recipient, &format!("/v1/inbox/{packet_id}")).await.status, 403, "Italy's UNHCR is not served here");

    let ack = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/ack")))).await;
    assert_eq!(ack.status, 200, "{}", ack.text);
    let ita = federation.peer("ITA");
    wait_for("forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "forwarded" }).await;

    // A handover: accepting it moves case management, and the timeline says so.
    assert_eq!(case.body["handover"], true);
    for (status, reason, shown) in [("accepted", None, "handover"), ("closed", Some("services_completed"), "closed")] {
        let mut report = json!({ "status": status });
        if let Some(reason) = reason {
            report["reason_code"] = json!(reason);
        }
        let reply = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/status"))).json(&report)).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        wait_for(status, LIMIT, || async { status_of(ita, Who::IomRome, &id).await == shown }).await;
    }
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(timeline(&referral), ["queued", "delivered", "forwarded", "accepted", "handover", "closed"]);
    assert_eq!(referral["timeline"][5]["reason_codes"], json!(["services_completed"]));
    assert_eq!(referral["handover"], true);

    // A report with free text, or an unknown status, is refused and sends nothing.
    for bad in [json!({ "status": "accepted", "reason_code": "Mr Okafor moved" }), json!({ "status": "lost" }), json!({ "status": "closed", "note": "x" })] {
        let reply = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/status"))).json(&bad)).await;
        assert_eq!((reply.status, reply.problem()), (400, "invalid-request"), "{bad}");
        assert!(!reply.text.contains("Okafor"));
    }
    // Statuses were sealed packets too: every one receipted at Italy.
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'status' AND state = 'delivered' AND receipt IS NOT NULL").await, 3);
    // Delivered, Italy keeps no readable copy: the receipt and the packet only Nigeria can open.
    assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM outbox WHERE referral_id = '{id}' AND length(sealed) = 0 AND packet IS NOT NULL")).await, 1);

    // Once the consent it was sent under has ended, the case is no longer there to read.
    let consent_end = chrono::DateTime::parse_from_rfc3339(case.body["consent_expires_at"].as_str().unwrap()).unwrap();
    federation.clock.advance(consent_end.with_timezone(&chrono::Utc) - federation.clock_now() + chrono::Duration::seconds(1));
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"], json!([]));
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.status, 404);
}

async fn a_case_refused_by_the_receiving_gateway_reaches_nobody_and_the_sender_learns_why(backend: Backend) {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.peer_mut("NGA").config.policy.initial_dir = repo_path("tests/fixtures/policies/returns-only");
    federation.launch(&["ITA", "NGA"]).await;
    let id = submitted(&federation, "refuse-test-0001").await;
    let ita = federation.peer("ITA");
    wait_for("the refusal at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "refused" }).await;
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(timeline(&referral), ["queued", "delivered", "refused"]);
    assert_eq!(referral["timeline"][2]["reason_codes"], json!(["policy_no_permit"]));

    let nga = federation.peer("NGA");
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"], json!([]));
    // The refused case is not kept to be read later.
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE state = 'refused' AND length(sealed) = 0").await, 1);
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'refused' AND reasons LIKE '%policy_no_permit%'").await, 1);
}

async fn an_asylum_linked_case_forced_through_by_a_sender_is_stopped_at_the_receiving_gateway(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA", "GMB"]).await;
    let (ita, gmb) = (federation.peer("ITA"), federation.peer("GMB"));
    // A broken sending gateway: the whole case of a rejected Gambian asylum
    // seeker, to Gambia's immigration service, signed with Italy's key.
    let case = fixture("rejected_asylum_avr")["case"].clone();
    let packet = forged_packet(&federation, ("ITA", "GMB"), "forced-asylum-case-1", PacketType::Referral, "gmb-immigration", Some(Purpose::Return), case);
    post_as(&federation, ("ITA", "GMB"), &packet).await;

    wait_for("the screening", LIMIT, || async { gmb.count("SELECT COUNT(*) FROM inbox WHERE state = 'refused'").await == 1 }).await;
    // Refused by the rule nobody can switch off, recorded without naming
    // asylum: this is a gateway of the person's country of origin.
    let reasons = gmb.text("SELECT reasons FROM inbox").await.unwrap();
    assert!(reasons.contains(r#""non_negotiable_rule""#) && !reasons.contains("asylum"), "{reasons}");
    assert_eq!(gmb.count("SELECT COUNT(*) FROM audit_log WHERE reasons LIKE '%asylum%'").await, 0);
    assert_eq!(gmb.count("SELECT COUNT(*) FROM inbox WHERE length(sealed) = 0").await, 1, "nothing of the case is kept");
    let key_id = gmb.text("SELECT key_id FROM inbox").await.unwrap();
    assert!(referral_gateway::crypto::case_keys::is_case_key_id(&key_id));
    assert!(gmb.app().gateway().vault().case_key(&key_id).await.unwrap().is_none(), "nor its key");
    // The refusal goes back to Italy, which sent no such referral and applies nothing.
    wait_for("the refusal delivered to Italy", LIMIT, || async {
        gmb.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'status' AND state = 'delivered'").await == 1
    })
    .await;
    wait_for("Italy's screening of it", LIMIT, || async {
        ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'status' AND state = 'refused' AND reasons LIKE '%status_about_unknown_referral%'").await == 1
    })
    .await;
}

async fn a_webhook_recipient_down_then_up_gets_the_signed_case_once(backend: Backend) {
    let mut webhook = Webhook::reserve();
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.webhooks.insert("nga-health-lagos".to_owned(), webhook.url());
    federation.launch(&["ITA", "NGA"]).await;
    let id = submitted(&federation, "webhook-test-0001").await;
    let nga = federation.peer("NGA");
    wait_for("pushes failing while the webhook is down", LIMIT, || async {
        nga.count("SELECT COUNT(*) FROM inbox WHERE state = 'pushing' AND push_attempts >= 2 AND push_error = 'recipient-unreachable'").await == 1
    })
    .await;
    assert!(webhook.received.lock().unwrap().is_empty());

    webhook.start().await;
    let ita = federation.peer("ITA");
    wait_for("forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "forwarded" }).await;
    let received = webhook.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "pushed once");
    // Signed by Nigeria's gateway, checkable against the directory.
    let nga = federation.peer("NGA");
    let directory = nga.app().gateway().directory();
    let document = referral_gateway::crypto::case_push::verify(&received[0], directory.as_ref(), federation.clock_now(), CountryCode::parse("NGA").unwrap()).unwrap();
    assert_eq!(document["recipient"], "nga-health-lagos");
    assert_eq!(document["from_country"], "ITA");
    assert!(document["case"]["health"].is_object());
    assert!(
        referral_gateway::crypto::case_push::verify(&received[0], directory.as_ref(), federation.clock_now(), CountryCode::parse("ITA").unwrap()).is_err(),
        "not Italy's signature"
    );
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE state = 'acknowledged'").await, 1);
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'inbox.update' AND outcome = 'pushed'").await, 1);

    // Consent withdrawn for health only: the organisation is pushed a signed notice naming it, nothing of the case.
    let narrowed = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{id}/consent-withdrawal"))).json(&json!({ "categories": ["health"] }))).await;
    assert_eq!((narrowed.status, &narrowed.body["peer_notified"]), (200, &json!(true)), "{}", narrowed.text);
    wait_for("the narrowing notice pushed", LIMIT, || async { webhook.received.lock().unwrap().len() == 2 }).await;
    let notice_jws = webhook.received.lock().unwrap()[1].clone();
    let notice = referral_gateway::crypto::case_push::verify(&notice_jws, directory.as_ref(), federation.clock_now(), CountryCode::parse("NGA").unwrap()).unwrap();
    assert_eq!(notice, json!({ "packet_id": document["packet_id"], "recipient": "nga-health-lagos", "from_country": "ITA", "state": "narrowed", "erased_categories": ["health"] }));
    wait_for("the narrowing settled at the peer", LIMIT, || async {
        nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'inbox.update' AND outcome = 'narrowing_pushed'").await == 1
    })
    .await;
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE state = 'acknowledged' AND narrowed IS NOT NULL").await, 1, "still the recipient's case");

    // Consent withdrawn whole: the organisation is told through its webhook too, signed, with nothing of the case.
    let withdrawn = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{id}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(withdrawn.body["peer_notified"], true, "{}", withdrawn.text);
    wait_for("the erasure notice pushed", LIMIT, || async { webhook.received.lock().unwrap().len() == 3 }).await;
    let notice_jws = webhook.received.lock().unwrap()[2].clone();
    let notice = referral_gateway::crypto::case_push::verify(&notice_jws, directory.as_ref(), federation.clock_now(), CountryCode::parse("NGA").unwrap()).unwrap();
    assert_eq!((notice["state"].as_str(), notice["packet_id"].as_str()), (Some("erased"), document["packet_id"].as_str()));
    assert!(notice.get("case").is_none(), "{notice}");
    wait_for("the erasure settled at the peer", LIMIT, || async {
        nga.count("SELECT COUNT(*) FROM inbox WHERE state = 'erased' AND length(sealed) = 0").await == 1
    })
    .await;
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'inbox.update' AND outcome = 'erasure_pushed'").await, 1);
    wait_for("erased at the gateway, at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "erased_at_gateway" }).await;
}

/// A packet as a broken or malicious gateway `from` could make it for `to`:
/// signed with `from`'s key, sealed to `to`'s, whatever it carries.
pub(crate) fn forged_packet(
    federation: &Federation,
    (from, to): (&str, &str),
    packet_id: &str,
    packet_type: PacketType,
    recipient: &str,
    purpose: Option<Purpose>,
    body: Value,
) -> String {
    let claims = packet_claims(federation, (from, to), packet_id, packet_type, recipient, purpose, body);
    sealed_as(federation, (from, to), &claims)
}

/// `claims` signed with `from`'s key and sealed to `to`'s.
fn sealed_as(federation: &Federation, (from, to): (&str, &str), claims: &PacketClaims) -> String {
    let sender = federation.peer(from).app().gateway();
    let now = federation.clock_now();
    let directory = sender.directory();
    let keys = sender.federation_keys().unwrap();
    let signer = directory.current_signing_key(CountryCode::parse(from).unwrap(), now, &keys.signing).unwrap();
    let sealed_to = directory.encryption_key(CountryCode::parse(to).unwrap(), now).unwrap();
    seal(claims, signer, sealed_to).unwrap().as_str().to_owned()
}

/// Claims of a packet from `from` to `to`, valid for a day from now.
fn packet_claims(
    federation: &Federation,
    (from, to): (&str, &str),
    packet_id: &str,
    packet_type: PacketType,
    recipient: &str,
    purpose: Option<Purpose>,
    body: Value,
) -> PacketClaims {
    let now = federation.clock_now();
    PacketClaims {
        packet_id: packet_id.to_owned(),
        packet_type,
        issuer: CountryCode::parse(from).unwrap(),
        audience: CountryCode::parse(to).unwrap(),
        recipient: OrgId::parse(recipient).unwrap(),
        purpose,
        policy_version: None,
        decision_id: None,
        consent_expires_at: None,
        retention_until: None,
        retention_days_after_closure: None,
        issued_at: now,
        expires_at: now + chrono::Duration::days(1),
        handover: false,
        priority: Default::default(),
        body,
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    }
}

/// Posts `packet` to `to`'s federation listener as `from`'s gateway; it must be receipted.
pub(crate) async fn post_as(federation: &Federation, (from, to): (&str, &str), packet: &str) {
    let client = federation.peer_client(from, Duration::from_secs(5));
    let endpoint = format!("https://127.0.0.1:{}", federation.peer(to).app().federation_addr().unwrap().port());
    client.send(CountryCode::parse(to).unwrap(), &endpoint, packet).await.unwrap();
}

async fn a_status_with_free_text_or_from_another_gateway_changes_nothing(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA", "GMB"]).await;
    let id = submitted(&federation, "forged-status-0001").await;
    let ita = federation.peer("ITA");
    wait_for("delivery", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE referral_id = '{id}'")).await.unwrap();

    // Nigeria's gateway tries to put free text into Italy's timeline...
    let report = json!({ "in_reply_to": packet_id, "status": "declined", "reason_codes": ["Mr Okafor left"] });
    let free_text = forged_packet(&federation, ("NGA", "ITA"), "forged-status-1", PacketType::Status, "nga-health-lagos", None, report);
    post_as(&federation, ("NGA", "ITA"), &free_text).await;
    // ...and the Gambian gateway reports on a referral that never went there.
    let report = json!({ "in_reply_to": packet_id, "status": "closed" });
    let elsewhere = forged_packet(&federation, ("GMB", "ITA"), "forged-status-2", PacketType::Status, "gmb-iom-banjul", None, report);
    post_as(&federation, ("GMB", "ITA"), &elsewhere).await;

    wait_for("both screened", LIMIT, || async { ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'status' AND state = 'refused'").await == 2 }).await;
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE reasons LIKE '%status_unreadable%'").await, 1);
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE reasons LIKE '%status_about_unknown_referral%'").await, 1);
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert!(!referral.text.contains("Okafor"));
    assert_eq!(timeline(&referral.body), ["queued", "delivered"]);
}

async fn a_withdrawal_after_delivery_erases_the_case_at_the_peer_and_comes_back_confirmed(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submitted(&federation, "withdraw-test-0001").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let listed = the_one_case_listed(nga).await;
    let packet_id = listed["items"][0]["packet_id"].as_str().unwrap().to_owned();
    let cursor = listed["next_cursor"].as_str().unwrap().to_owned();
    let key_id = nga.text(&format!("SELECT key_id FROM inbox WHERE packet_id = '{packet_id}'")).await.unwrap();
    let nga_vault = nga.app().gateway().vault();
    assert!(nga_vault.case_key(&key_id).await.unwrap().is_some());

    let withdrawn = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{id}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    assert_eq!(withdrawn.body["peer_notified"], true);

    wait_for("the peer's erasure confirmed in the sender's timeline", LIMIT, || async {
        timeline(&ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body).contains(&"erased_at_gateway".to_owned())
    })
    .await;
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    let steps = timeline(&referral);
    for step in ["delivered", "withdrawn", "withdrawal_delivered", "erased_at_gateway"] {
        assert!(steps.contains(&step.to_owned()), "{step} missing from {steps:?}");
    }
    assert_eq!(referral["status"], "erased_at_gateway");
    // What came back (statuses, the confirmation) carries no personal data and needs no case key.
    let back = ita.text("SELECT MIN(key_id) FROM inbox").await.unwrap();
    assert!(!referral_gateway::crypto::case_keys::is_case_key_id(&back), "{back}");
    assert_eq!(ita.count("SELECT COUNT(DISTINCT key_id) FROM inbox").await, 1);

    // At the peer: the key is gone and the claims blanked; the recipient,
    // tailing its inbox, sees the case again, erased, and can read nothing of it.
    assert!(nga_vault.case_key(&key_id).await.unwrap().is_none());
    assert_eq!(nga.count(&format!("SELECT COUNT(*) FROM inbox WHERE packet_id = '{packet_id}' AND state = 'erased' AND length(sealed) = 0")).await, 1);
    let tail = nga.get(Who::NgaHealth, &format!("/v1/inbox?cursor={cursor}")).await.body;
    assert_eq!(tail["items"].as_array().unwrap().len(), 1, "{tail}");
    assert_eq!(tail["items"][0]["state"], "erased");
    assert_eq!(tail["items"][0]["packet_id"], packet_id.as_str());
    assert!(tail["items"][0].get("purpose").is_none());
    let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!((case.status, case.body["type"].as_str().unwrap_or_default().ends_with("/erased")), (410, true), "{}", case.text);
    let ack = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/ack")))).await;
    assert_eq!(ack.status, 410, "{}", ack.text);
    let report = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/status"))).json(&json!({ "status": "accepted" }))).await;
    assert_eq!(report.status, 410, "no progress to report on an erased case: {}", report.text);

    // The organisation erased its own copy and says so; the sender sees it.
    let confirm = |who: Who| send(client_for(who).post(nga.url(&format!("/v1/inbox/{packet_id}/erasure-confirmed"))));
    assert_eq!(confirm(Who::Foreign).await.status, 403, "only a recipient confirms");
    let confirmed = confirm(Who::NgaHealth).await;
    assert_eq!((confirmed.status, &confirmed.body["state"]), (200, &json!("erasure_confirmed")), "{}", confirmed.text);
    assert_eq!(confirm(Who::NgaHealth).await.status, 200, "idempotent");
    assert_eq!(
        nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'erasure_confirmation'").await,
        2,
        "one confirmation from the gateway, one from the organisation, whatever the repeats"
    );
    wait_for("the organisation's confirmation at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "erasure_confirmed" }).await;
    let confirmed_view = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    let steps = timeline(&confirmed_view);
    assert_eq!(steps.iter().filter(|s| *s == "erasure_confirmed").count(), 1, "{steps:?}");
    assert_eq!(confirmed_view["erasure"]["state"], "confirmed");
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.status, 410);
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox?cursor={cursor}")).await.body["items"].as_array().unwrap().len(), 0, "no longer listed");

    // A live case has nothing to confirm.
    let live = submitted(&federation, "withdraw-test-0002").await;
    wait_for("the second case in the inbox", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.iter().any(|i| i["state"] == "available"))
    })
    .await;
    let items = nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].clone();
    let live_packet = items.as_array().unwrap().iter().find(|i| i["state"] == "available").unwrap()["packet_id"].as_str().unwrap().to_owned();
    let early = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{live_packet}/erasure-confirmed")))).await;
    assert_eq!(early.status, 409, "{}", early.text);
    assert!(early.body["type"].as_str().unwrap().ends_with("/not-erased"));
    assert_eq!(nga.count(&format!("SELECT COUNT(*) FROM inbox WHERE packet_id = '{live_packet}' AND state = 'available'")).await, 1, "the live case is untouched");
    assert!(!live.is_empty());
}

async fn a_referral_packet_arriving_after_its_withdrawal_is_erased_on_arrival(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let nga = federation.peer("NGA");
    // The withdrawal overtakes its referral packet (which was still being sent).
    let withdrawal = forged_packet(&federation, ("ITA", "NGA"), "overtaking-withdrawal", PacketType::Withdrawal, "nga-health-lagos", None, json!({ "in_reply_to": "late-referral-1" }));
    post_as(&federation, ("ITA", "NGA"), &withdrawal).await;
    wait_for("the withdrawal kept", LIMIT, || async { nga.count("SELECT COUNT(*) FROM withdrawn_packets WHERE packet_id = 'late-referral-1' AND issuer = 'ITA'").await == 1 }).await;
    assert_eq!(nga.text("SELECT state FROM inbox WHERE packet_id = 'overtaking-withdrawal'").await.as_deref(), Some("applied"));

    let case = fixture("returnee_hiv_reintegration")["case"].clone();
    let referral = forged_packet(&federation, ("ITA", "NGA"), "late-referral-1", PacketType::Referral, "nga-health-lagos", Some(Purpose::Reintegration), case);
    post_as(&federation, ("ITA", "NGA"), &referral).await;
    wait_for("the late packet processed", LIMIT, || async {
        nga.text("SELECT state FROM inbox WHERE packet_id = 'late-referral-1'").await.as_deref() == Some("refused")
    })
    .await;
    assert_eq!(nga.text("SELECT reasons FROM inbox WHERE packet_id = 'late-referral-1'").await.as_deref(), Some(r#"["consent_withdrawn"]"#));
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_id = 'late-referral-1' AND length(sealed) = 0").await, 1);
    let key_id = nga.text("SELECT key_id FROM inbox WHERE packet_id = 'late-referral-1'").await.unwrap();
    assert!(nga.app().gateway().vault().case_key(&key_id).await.unwrap().is_none(), "its key is destroyed on arrival");
    // The recipient never sees it, not even as erased.
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"], json!([]));
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox/late-referral-1").await.status, 404);
}

async fn a_withdrawal_while_the_peer_is_down_is_overdue_until_the_peer_erases(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submitted(&federation, "withdraw-down-0001").await;
    the_one_case_listed(federation.peer("NGA")).await;
    federation.stop_peer("NGA").await;
    let ita = federation.peer("ITA");
    let withdrawn = send(client_for(Who::IomRome).post(ita.url(&format!("/v1/referrals/{id}/consent-withdrawal"))).json(&json!({}))).await;
    assert_eq!(withdrawn.body["peer_notified"], true, "{}", withdrawn.text);
    let view = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(view["erasure"]["state"], "requested", "{view}");
    let due_by = view["erasure"]["due_by"].as_str().unwrap().to_owned();

    // Past the deadline (72 hours by default) with the peer still down: overdue.
    federation.clock.advance(chrono::Duration::hours(73));
    let view = federation.peer("ITA").get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(view["erasure"]["state"], "overdue", "{view}");
    let last = view["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last, json!({ "status": "erasure_overdue", "at": due_by }));

    // The peer comes back: the withdrawal is delivered, the case erased, and it is overdue no longer.
    federation.start_peer("NGA", true).await;
    let ita = federation.peer("ITA");
    wait_for("the erasure at the peer", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["erasure"]["state"] == "erased_at_gateway"
    })
    .await;
    let steps = timeline(&ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body);
    assert!(!steps.contains(&"erasure_overdue".to_owned()), "{steps:?}");
    assert!(steps.contains(&"withdrawal_delivered".to_owned()), "{steps:?}");
}

async fn a_partial_withdrawal_erases_one_category_at_the_peer_and_the_rest_stays_shared(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submitted(&federation, "narrow-test-0001").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let listed = the_one_case_listed(nga).await;
    let packet_id = listed["items"][0]["packet_id"].as_str().unwrap().to_owned();
    let cursor = listed["next_cursor"].as_str().unwrap().to_owned();
    let before = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.body;
    let mut held: Vec<String> = before["case"].as_object().unwrap().keys().cloned().collect();
    assert!(held.contains(&"health".to_owned()) && held.len() > 1, "{held:?}");
    let old_key = nga.text(&format!("SELECT key_id FROM inbox WHERE packet_id = '{packet_id}'")).await.unwrap();
    let nga_vault = nga.app().gateway().vault();
    wait_for("delivered, at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;

    let path = format!("/v1/referrals/{id}/consent-withdrawal");
    let narrowed = send(client_for(Who::IomRome).post(ita.url(&path)).json(&json!({ "categories": ["health", "asylum"] }))).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    assert_eq!(
        narrowed.body,
        json!({ "referral_id": id, "status": "delivered", "withdrawn": "categories", "categories": ["health"], "peer_notified": true }),
        "only what was sent is withdrawn, and the referral goes on"
    );

    wait_for("the peer's partial erasure at the sender", LIMIT, || async {
        timeline(&ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body).contains(&"narrowed_at_gateway".to_owned())
    })
    .await;
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(referral["status"], "delivered", "the status stays with the part still shared");
    assert_eq!(referral["erasure"]["scope"], "categories");
    assert_eq!(referral["erasure"]["categories"], json!(["health"]));
    assert_eq!(referral["erasure"]["state"], "erased_at_gateway");
    let steps = timeline(&referral);
    for step in ["delivered", "consent_narrowed", "withdrawal_delivered", "narrowed_at_gateway"] {
        assert!(steps.contains(&step.to_owned()), "{step} missing from {steps:?}");
    }

    // At the peer: the key that held the whole case is gone; the case lives on, cut down, under a new one.
    assert!(nga_vault.case_key(&old_key).await.unwrap().is_none(), "the old key is destroyed");
    let new_key = nga.text(&format!("SELECT key_id FROM inbox WHERE packet_id = '{packet_id}'")).await.unwrap();
    assert_ne!(new_key, old_key);
    let after = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(after.status, 200, "{}", after.text);
    held.retain(|c| c != "health");
    let now_held: Vec<String> = after.body["case"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(now_held, held, "health erased, the rest as it was");
    assert_eq!(after.body["erased_categories"], json!(["health"]));
    for category in &held {
        assert_eq!(after.body["case"][category], before["case"][category]);
    }
    // Listed again, last, so that a recipient tailing its inbox learns what to erase.
    let tail = nga.get(Who::NgaHealth, &format!("/v1/inbox?cursor={cursor}")).await.body;
    assert_eq!(tail["items"].as_array().unwrap().len(), 1, "{tail}");
    assert_eq!((tail["items"][0]["packet_id"].as_str(), &tail["items"][0]["erased_categories"]), (Some(packet_id.as_str()), &json!(["health"])));
    assert_eq!(tail["items"][0]["state"], "available");

    // The organisation erased health too and says so, once.
    let confirm = || send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/erasure-confirmed"))));
    let confirmed = confirm().await;
    assert_eq!((confirmed.status, &confirmed.body["erasure"]), (200, &json!("confirmed")), "{}", confirmed.text);
    assert_eq!(confirm().await.status, 200, "idempotent");
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'erasure_confirmation'").await, 2, "the gateway's and the organisation's");
    wait_for("the organisation's confirmation at the sender", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["erasure"]["state"] == "confirmed"
    })
    .await;
    assert_eq!(status_of(ita, Who::IomRome, &id).await, "delivered");
    // The case is still the recipient's to work on.
    let ack = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/ack")))).await;
    assert_eq!(ack.status, 200, "{}", ack.text);

    // The DPO's report shows what was withdrawn and erased where.
    let subject_ref = fixture("returnee_hiv_reintegration")["subject_ref"].as_str().unwrap().to_owned();
    let report = ita.get(Who::Dpo, &format!("/v1/subjects/{subject_ref}/report")).await.body;
    let ours = report["referrals"].as_array().unwrap().iter().find(|r| r["referral_id"] == id.as_str()).unwrap().clone();
    assert_eq!(ours["categories"]["withdrawn"], json!(["health"]));
    let places: Vec<&str> = ours["erased"].as_array().unwrap().iter().filter(|e| e["categories"] == json!(["health"])).map(|e| e["where"].as_str().unwrap()).collect();
    assert_eq!(places, ["this_gateway", "recipient_gateway", "recipient_organisation"], "{ours}");

    // Withdrawing the rest later is a whole withdrawal: the case is erased at the peer.
    let rest = send(client_for(Who::IomRome).post(ita.url(&path)).json(&json!({ "categories": held }))).await;
    assert_eq!((rest.status, &rest.body["withdrawn"]), (200, &json!("whole")), "{}", rest.text);
    wait_for("erased whole at the peer", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "erased_at_gateway" }).await;
    assert!(nga_vault.case_key(&new_key).await.unwrap().is_none());
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.status, 410);
}

async fn a_partial_withdrawal_that_overtakes_its_referral_cuts_it_down_on_arrival(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let nga = federation.peer("NGA");
    let body = json!({ "in_reply_to": "late-referral-2", "categories": ["health"] });
    let withdrawal = forged_packet(&federation, ("ITA", "NGA"), "overtaking-narrowing", PacketType::Withdrawal, "nga-health-lagos", None, body);
    post_as(&federation, ("ITA", "NGA"), &withdrawal).await;
    wait_for("the partial withdrawal kept", LIMIT, || async { nga.count("SELECT COUNT(*) FROM narrowed_packets WHERE packet_id = 'late-referral-2'").await == 1 }).await;

    let case = identity_contact_health();
    let referral = forged_packet(&federation, ("ITA", "NGA"), "late-referral-2", PacketType::Referral, "nga-health-lagos", Some(Purpose::Reintegration), case);
    post_as(&federation, ("ITA", "NGA"), &referral).await;
    wait_for("the late packet available", LIMIT, || async {
        nga.text("SELECT state FROM inbox WHERE packet_id = 'late-referral-2'").await.as_deref() == Some("available")
    })
    .await;
    let read = nga.get(Who::NgaHealth, "/v1/inbox/late-referral-2").await;
    assert_eq!(read.status, 200, "{}", read.text);
    let mut categories: Vec<&String> = read.body["case"].as_object().unwrap().keys().collect();
    categories.sort();
    assert_eq!(categories, ["contact", "identity"], "cut down before anyone saw it");
    assert!(read.body.get("erased_categories").is_none_or(Value::is_null), "nothing to erase for a recipient that never had it: {}", read.body);
    assert!(!read.text.contains("HIV") && !read.text.to_lowercase().contains("antiretroviral"), "{}", read.text);

    // A referral and its partial withdrawal arriving together, in whichever round: the
    // recipient gets the case cut down, and it is never lost or refused for it.
    let case = identity_contact_health();
    let together = forged_packet(&federation, ("ITA", "NGA"), "together-referral", PacketType::Referral, "nga-health-lagos", Some(Purpose::Reintegration), case);
    let body = json!({ "in_reply_to": "together-referral", "categories": ["health"] });
    let its_withdrawal = forged_packet(&federation, ("ITA", "NGA"), "together-narrowing", PacketType::Withdrawal, "nga-health-lagos", None, body);
    post_as(&federation, ("ITA", "NGA"), &together).await;
    post_as(&federation, ("ITA", "NGA"), &its_withdrawal).await;
    wait_for("both processed", LIMIT, || async {
        nga.count("SELECT COUNT(*) FROM inbox WHERE packet_id IN ('together-referral', 'together-narrowing') AND state <> 'received'").await == 2
    })
    .await;
    let read = nga.get(Who::NgaHealth, "/v1/inbox/together-referral").await;
    assert_eq!(read.status, 200, "{}", read.text);
    let mut categories: Vec<&String> = read.body["case"].as_object().unwrap().keys().collect();
    categories.sort();
    assert_eq!(categories, ["contact", "identity"]);
    assert_eq!(nga.text("SELECT state FROM inbox WHERE packet_id = 'together-narrowing'").await.as_deref(), Some("applied"));
}

async fn a_withdrawal_forged_by_another_gateway_replayed_or_from_a_non_member_erases_nothing(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA", "GMB"]).await;
    let id = submitted(&federation, "forged-withdrawal-0001").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let packet_id = the_one_case_listed(nga).await["items"][0]["packet_id"].as_str().unwrap().to_owned();
    let key_id = nga.text(&format!("SELECT key_id FROM inbox WHERE packet_id = '{packet_id}'")).await.unwrap();

    // The Gambian gateway, a member, withdraws a case Italy sent: refused.
    let forged = forged_packet(&federation, ("GMB", "NGA"), "forged-withdrawal-1", PacketType::Withdrawal, "nga-health-lagos", None, json!({ "in_reply_to": packet_id }));
    post_as(&federation, ("GMB", "NGA"), &forged).await;
    wait_for("the forged withdrawal screened", LIMIT, || async {
        nga.text("SELECT state FROM inbox WHERE packet_id = 'forged-withdrawal-1'").await.as_deref() == Some("refused")
    })
    .await;
    assert_eq!(nga.text("SELECT reasons FROM inbox WHERE packet_id = 'forged-withdrawal-1'").await.as_deref(), Some(r#"["withdrawal_not_from_sender"]"#));
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'erasure_confirmation'").await, 0, "nothing confirmed to anyone");

    // A packet signed with a key the directory does not list is refused before it is kept.
    let claims = packet_claims(
        &federation,
        ("ITA", "NGA"),
        "stranger-withdrawal-1",
        PacketType::Withdrawal,
        "nga-health-lagos",
        None,
        json!({ "in_reply_to": packet_id }),
    );
    let stranger = referral_gateway::crypto::jose_keys::generate(referral_gateway::crypto::jose_keys::KeyUse::Sig).unwrap();
    let directory = ita.app().gateway().directory();
    let sealed_to = directory.encryption_key(CountryCode::parse("NGA").unwrap(), federation.clock_now()).unwrap();
    let stranger = referral_gateway::crypto::jose_keys::SigningKey::from_jwk(&stranger).unwrap();
    let unlisted = seal(&claims, &stranger, sealed_to).unwrap().as_str().to_owned();
    let refused = try_post_as(&federation, ("ITA", "NGA"), &unlisted).await;
    assert!(refused.is_err(), "a non-member's signature is refused");
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_id = 'stranger-withdrawal-1'").await, 0);

    // Italy's own withdrawal, sent twice alike, is processed once; another packet under its id is a replay.
    let genuine = forged_packet(&federation, ("ITA", "NGA"), "genuine-withdrawal-1", PacketType::Withdrawal, "nga-health-lagos", None, json!({ "in_reply_to": "no-such-packet" }));
    post_as(&federation, ("ITA", "NGA"), &genuine).await;
    post_as(&federation, ("ITA", "NGA"), &genuine).await;
    let replay = forged_packet(&federation, ("ITA", "NGA"), "genuine-withdrawal-1", PacketType::Withdrawal, "nga-health-lagos", None, json!({ "in_reply_to": packet_id }));
    assert!(try_post_as(&federation, ("ITA", "NGA"), &replay).await.is_err(), "same id, other bytes: a replay");
    wait_for("the genuine withdrawal applied", LIMIT, || async {
        nga.text("SELECT state FROM inbox WHERE packet_id = 'genuine-withdrawal-1'").await.as_deref() == Some("applied")
    })
    .await;
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_id = 'genuine-withdrawal-1'").await, 1);

    // The case is untouched throughout: its key, its state, its content.
    assert!(nga.app().gateway().vault().case_key(&key_id).await.unwrap().is_some());
    let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!((case.status, &case.body["state"]), (200, &json!("available")), "{}", case.text);
    assert_eq!(status_of(ita, Who::IomRome, &id).await, "delivered");
}

/// A returnee's case cut to identity, contact and health, as a sender would minimise it for reintegration.
fn identity_contact_health() -> Value {
    let mut case = json!({});
    for (category, value) in fixture("returnee_hiv_reintegration")["case"].as_object().unwrap() {
        if ["identity", "contact", "health"].contains(&category.as_str()) {
            case[category] = value.clone();
        }
    }
    case
}

/// Like [`post_as`], but the refusal is the caller's to check.
async fn try_post_as(federation: &Federation, (from, to): (&str, &str), packet: &str) -> Result<String, String> {
    let client = federation.peer_client(from, Duration::from_secs(5));
    let endpoint = format!("https://127.0.0.1:{}", federation.peer(to).app().federation_addr().unwrap().port());
    client.send(CountryCode::parse(to).unwrap(), &endpoint, packet).await.map_err(|failure| format!("{failure:?}"))
}

/// A partial withdrawal sealed end to end names categories the receiving
/// gateway cannot read: it keeps the withdrawal's envelope to hand over with
/// a sealed case, live or still to come, and for nothing else.
async fn a_sealed_partial_withdrawal_is_kept_only_for_a_sealed_case_that_may_still_take_it(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let nga = federation.peer("NGA");
    submitted(&federation, "sealed-narrowing-0001").await;
    let readable = the_one_case_listed(nga).await["items"][0]["packet_id"].as_str().unwrap().to_owned();
    let listed_at = nga.text(&format!("SELECT CAST(visible_seq AS TEXT) FROM inbox WHERE packet_id = '{readable}'")).await;
    assert!(listed_at.is_some());
    let sealed_withdrawal = |packet_id: &str, of: &str| {
        let mut claims = packet_claims(&federation, ("ITA", "NGA"), packet_id, PacketType::Withdrawal, "nga-health-lagos", None, Value::Null);
        claims.end_to_end = Some("sealed.to.the.organisation.alone".to_owned());
        claims.in_reply_to = Some(of.to_owned());
        sealed_as(&federation, ("ITA", "NGA"), &claims)
    };
    for (withdrawal, of) in [("narrowing-of-readable", readable.as_str()), ("narrowing-of-unknown", "referral-still-to-come")] {
        post_as(&federation, ("ITA", "NGA"), &sealed_withdrawal(withdrawal, of)).await;
        wait_for("the withdrawal applied", LIMIT, || async {
            nga.text(&format!("SELECT state FROM inbox WHERE packet_id = '{withdrawal}'")).await.as_deref() == Some("applied")
        })
        .await;
    }
    let kept = |withdrawal: &'static str| async move {
        nga.text(&format!("SELECT COALESCE(end_to_end, 'none') FROM narrowed_packets WHERE withdrawal_id = '{withdrawal}'")).await
    };
    // A case this gateway reads has no organisation waiting for a sealed withdrawal: not kept, not listed again.
    assert_eq!(kept("narrowing-of-readable").await.as_deref(), Some("none"));
    assert_eq!(nga.text(&format!("SELECT CAST(visible_seq AS TEXT) FROM inbox WHERE packet_id = '{readable}'")).await, listed_at);
    assert_eq!(nga.count(&format!("SELECT COUNT(*) FROM inbox WHERE packet_id = '{readable}' AND narrowed IS NOT NULL")).await, 0);
    // One that may still arrive gets it when it does.
    assert_eq!(kept("narrowing-of-unknown").await.as_deref(), Some("sealed.to.the.organisation.alone"));
    // Both are confirmed to the sender by naming the withdrawal, never a category.
    wait_for("both confirmations queued", LIMIT, || async {
        nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'erasure_confirmation'").await == 2
    })
    .await;
}
