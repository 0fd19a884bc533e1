//! Statuses coalesced per peer (protocol version 2, `federation.md` §5b),
//! over real TLS between two gateways: the statuses one round of the
//! receiving gateway's outbox finds for a peer travel in one `statuses`
//! packet with one receipt, each applied at the sending gateway as if it
//! had come alone; a peer whose directory entry does not list version 2
//! (a gateway of the release before) gets one status packet each; a
//! coalesced packet is applied status by status, each checked as a status
//! of its own.

use std::sync::Arc;
use std::time::Duration;

use referral_gateway::app::sending::delivery::{DeliveryRound, PeerTransport, SendFailure};
use referral_gateway::crypto::packet::PacketType;
use serde_json::json;

use crate::forwarding::{forged_packet, post_as};
use crate::helpers::{client_for, send, variant, Backend, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation};
use crate::visibility::Failing;

on_both_backends!(
    statuses_queued_while_the_outbox_was_stopped_travel_in_one_packet,
    a_peer_of_the_release_before_gets_one_status_packet_each,
    a_coalesced_packet_applies_each_status_that_holds_and_refuses_the_rest,
    a_coalesced_packet_refused_by_a_peer_that_no_longer_lists_version_2_goes_as_single_statuses,
    a_coalesced_packet_never_sent_to_a_peer_that_no_longer_lists_version_2_goes_as_single_statuses,
);

const LIMIT: Duration = Duration::from_secs(40);
const CASES: usize = 5;

/// `CASES` referrals from Italy to Nigeria's health organisation, each
/// listed in its inbox; then Nigeria's gateway restarted without its
/// federation side (its workers stopped) and every case acknowledged
/// there, so that each status waits in its outbox. Returns the referral
/// ids at Italy.
async fn acknowledged_without_workers(federation: &mut Federation, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..CASES {
        let reply = federation.peer("ITA").submit(Who::IomRome, &variant("returnee_hiv_reintegration", &format!("{prefix}-{n}"), None)).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        ids.push(reply.body["referral_id"].as_str().unwrap().to_owned());
    }
    let nga = federation.peer("NGA");
    wait_for("every case listed to its recipient", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.len() == CASES)
    })
    .await;
    let listed = nga.get(Who::NgaHealth, "/v1/inbox").await.body;
    let packet_ids: Vec<String> = listed["items"].as_array().unwrap().iter().map(|item| item["packet_id"].as_str().unwrap().to_owned()).collect();

    federation.stop_peer("NGA").await;
    federation.start_peer("NGA", false).await;
    let nga = federation.peer("NGA");
    for packet_id in &packet_ids {
        let ack = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/ack")))).await;
        assert_eq!(ack.status, 200, "{}", ack.text);
    }
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'status' AND state = 'pending' AND attempts = 0").await, CASES as i64);
    ids
}

/// As [`acknowledged_without_workers`], then Nigeria's federation side
/// comes back: one outbox round finds every status, and every status is
/// applied at Italy. Returns the referral ids at Italy.
async fn acknowledged_while_the_outbox_was_stopped(federation: &mut Federation, prefix: &str) -> Vec<String> {
    let ids = acknowledged_without_workers(federation, prefix).await;

    federation.stop_peer("NGA").await;
    federation.start_peer("NGA", true).await;
    federation.publish().await;
    let ita = federation.peer("ITA");
    for id in &ids {
        wait_for("forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, id).await == "forwarded" }).await;
    }
    ids
}

/// How many timeline entries `status` the referral has at Italy.
async fn entries(federation: &Federation, id: &str, status: &str) -> usize {
    let referral = federation.peer("ITA").get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    referral["timeline"].as_array().unwrap().iter().filter(|entry| entry["status"] == status).count()
}

async fn statuses_queued_while_the_outbox_was_stopped_travel_in_one_packet(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let ids = acknowledged_while_the_outbox_was_stopped(&mut federation, "coalesced").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));

    // Nigeria: one carrier, delivered with a receipt; every status carried by it, settled with it, with its receipt.
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses'").await, 1);
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses' AND state = 'delivered' AND receipt IS NOT NULL").await, 1);
    let carried = "SELECT COUNT(*) FROM outbox s JOIN outbox c ON c.id = s.carried_by \
                   WHERE s.packet_type = 'status' AND s.state = 'delivered' AND s.receipt = c.receipt AND s.packet IS NULL";
    assert_eq!(nga.count(carried).await, CASES as i64);
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'status' AND packet IS NOT NULL").await, 0, "no status was sealed alone");

    // Italy: one packet received and applied, each status applied once and audited on its own.
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'statuses' AND state = 'applied'").await, 1);
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'status'").await, 0);
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'accepted'").await, 1, "one packet came back");
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'applied'").await, CASES as i64);
    for id in &ids {
        assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'applied' AND referral_id = '{id}'")).await, 1);
        assert_eq!(entries(&federation, id, "forwarded").await, 1, "{id}");
    }
}

async fn a_peer_of_the_release_before_gets_one_status_packet_each(backend: Backend) {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    // Italy's entry lists no protocol version: version 1 only, as a gateway of the release before.
    federation.peer_mut("ITA").protocol_versions = Some(Vec::new());
    federation.launch(&["ITA", "NGA"]).await;
    let ids = acknowledged_while_the_outbox_was_stopped(&mut federation, "one-each").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));

    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses'").await, 0);
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'status' AND state = 'delivered' AND packet IS NOT NULL AND carried_by IS NULL").await, CASES as i64);
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'status' AND state = 'applied'").await, CASES as i64);
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'statuses'").await, 0);
    for id in &ids {
        assert_eq!(entries(&federation, id, "forwarded").await, 1, "{id}");
    }
}

async fn a_coalesced_packet_applies_each_status_that_holds_and_refuses_the_rest(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA", "GMB"]).await;
    let reply = federation.peer("ITA").submit(Who::IomRome, &variant("returnee_hiv_reintegration", "mixed-batch-1", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    let ita = federation.peer("ITA");
    wait_for("delivery", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE referral_id = '{id}'")).await.unwrap();

    // From Nigeria, where the referral went: two statuses about it, one about
    // no referral of Italy's, one with free text, one with a status no gateway knows.
    let statuses = json!({ "statuses": [
        { "in_reply_to": packet_id, "status": "accepted" },
        { "in_reply_to": "no-such-packet", "status": "closed" },
        { "in_reply_to": packet_id, "status": "declined", "reason_codes": ["Mr Okafor left"] },
        { "in_reply_to": packet_id, "status": "teleported" },
        { "in_reply_to": packet_id, "status": "in_progress", "reason_codes": ["services_started"] },
    ]});
    let mixed = forged_packet(&federation, ("NGA", "ITA"), "coalesced-mixed-1", PacketType::Statuses, "nga-health-lagos", None, statuses);
    post_as(&federation, ("NGA", "ITA"), &mixed).await;
    // From the Gambia, where it did not go: nothing of it applies.
    let elsewhere = json!({ "statuses": [{ "in_reply_to": packet_id, "status": "closed" }, { "in_reply_to": packet_id, "status": "arrived" }] });
    let forged = forged_packet(&federation, ("GMB", "ITA"), "coalesced-elsewhere-1", PacketType::Statuses, "gmb-iom-banjul", None, elsewhere);
    post_as(&federation, ("GMB", "ITA"), &forged).await;
    // Not a list of statuses at all.
    let empty = forged_packet(&federation, ("NGA", "ITA"), "coalesced-empty-1", PacketType::Statuses, "nga-health-lagos", None, json!({ "statuses": [] }));
    post_as(&federation, ("NGA", "ITA"), &empty).await;

    wait_for("all three screened", LIMIT, || async { ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'statuses' AND state <> 'received'").await == 3 }).await;
    assert_eq!(ita.text("SELECT state FROM inbox WHERE packet_id = 'coalesced-mixed-1'").await.unwrap(), "applied");
    let reasons = ita.text("SELECT reasons FROM inbox WHERE packet_id = 'coalesced-mixed-1'").await.unwrap();
    assert!(reasons.contains("status_about_unknown_referral") && reasons.contains("status_unreadable"), "{reasons}");
    assert_eq!(ita.text("SELECT state FROM inbox WHERE packet_id = 'coalesced-elsewhere-1'").await.unwrap(), "refused");
    assert_eq!(ita.text("SELECT state FROM inbox WHERE packet_id = 'coalesced-empty-1'").await.unwrap(), "refused");
    assert!(ita.text("SELECT reasons FROM inbox WHERE packet_id = 'coalesced-empty-1'").await.unwrap().contains("status_unreadable"));

    // The two that hold, in their order; one audit entry for each status of the mixed packet.
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert!(!referral.text.contains("Okafor"));
    let timeline: Vec<&str> = referral.body["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(timeline, ["queued", "delivered", "accepted", "in_progress"]);
    assert_eq!(referral.body["status"], "in_progress");
    assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'applied' AND referral_id = '{id}'")).await, 2);
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'refused' AND referral_id = 'coalesced-mixed-1'").await, 3);
    // Refused whole, still one entry per status it carried.
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'refused' AND referral_id = 'coalesced-elsewhere-1'").await, 2);
}

/// Coalesced while Italy's entry listed version 2, sent, not taken; then
/// Italy's entry lists version 1 only (a gateway rolled back to the release
/// before, say), which refuses what it cannot read: the carrier goes, and
/// its statuses go one packet each, each applied once.
async fn a_coalesced_packet_refused_by_a_peer_that_no_longer_lists_version_2_goes_as_single_statuses(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    // Nigeria's deliveries are run by hand below.
    let ids = acknowledged_without_workers(&mut federation, "dissolved").await;
    let nga = federation.peer("NGA");
    let gateway = Arc::clone(nga.app().gateway());
    let unreachable: Arc<dyn PeerTransport> = Arc::new(Failing(SendFailure::Unreachable { code: "peer-unreachable" }));
    assert_eq!(gateway.deliver_due(&unreachable).await.unwrap(), DeliveryRound { claimed: CASES, retrying: 1, ..DeliveryRound::default() });
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses' AND packet IS NOT NULL").await, 1);
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE carried_by IS NOT NULL AND attempts = 0").await, CASES as i64);

    federation.peer_mut("ITA").protocol_versions = Some(Vec::new());
    federation.publish().await;
    federation.clock.advance(chrono::Duration::minutes(1));
    let refused: Arc<dyn PeerTransport> = Arc::new(Failing(SendFailure::Refused { code: "packet-bad-signature".to_owned() }));
    assert_eq!(gateway.deliver_due(&refused).await.unwrap(), DeliveryRound { claimed: 1, retrying: 1, ..DeliveryRound::default() });
    assert_eq!(federation.peer("NGA").count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses' OR carried_by IS NOT NULL").await, 0);

    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("NGA", Duration::from_secs(5)));
    assert_eq!(gateway.deliver_due(&real).await.unwrap(), DeliveryRound { claimed: CASES, delivered: CASES, ..DeliveryRound::default() });
    let ita = federation.peer("ITA");
    for id in &ids {
        wait_for("forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, id).await == "forwarded" }).await;
        assert_eq!(entries(&federation, id, "forwarded").await, 1, "{id}");
    }
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'status' AND state = 'applied'").await, CASES as i64);
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'statuses'").await, 0);
}

/// Coalesced while Italy's entry listed version 2, but never sealed (the
/// directory listed no encryption key of Italy's at the time); then Italy's
/// entry lists its key again and version 1 only: the carrier goes before
/// anything is sent, and its statuses go one packet each.
async fn a_coalesced_packet_never_sent_to_a_peer_that_no_longer_lists_version_2_goes_as_single_statuses(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let ids = acknowledged_without_workers(&mut federation, "never-sent").await;
    let ita_encryption_kid = referral_gateway::crypto::federation_keys::load(federation.peer("ITA").keys_dir()).unwrap().decryption[0].kid().to_owned();
    let now = federation.clock_now();
    federation.peer_mut("ITA").windows.insert(ita_encryption_kid.clone(), (now, now)); // left out of the directory
    federation.publish().await;
    let nga = federation.peer("NGA");
    let gateway = Arc::clone(nga.app().gateway());
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("NGA", Duration::from_secs(5)));
    assert_eq!(gateway.deliver_due(&real).await.unwrap(), DeliveryRound { claimed: CASES, retrying: 1, ..DeliveryRound::default() });
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses' AND packet IS NULL AND last_error = 'peer-key-missing'").await, 1);
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox WHERE carried_by IS NOT NULL").await, CASES as i64);

    let ita = federation.peer_mut("ITA");
    ita.windows.remove(&ita_encryption_kid);
    ita.protocol_versions = Some(Vec::new());
    federation.publish().await;
    federation.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(gateway.deliver_due(&real).await.unwrap(), DeliveryRound { claimed: 1, retrying: 1, ..DeliveryRound::default() });
    assert_eq!(federation.peer("NGA").count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'statuses' OR carried_by IS NOT NULL").await, 0);
    assert_eq!(gateway.deliver_due(&real).await.unwrap(), DeliveryRound { claimed: CASES, delivered: CASES, ..DeliveryRound::default() });
    let ita = federation.peer("ITA");
    for id in &ids {
        wait_for("forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, id).await == "forwarded" }).await;
        assert_eq!(entries(&federation, id, "forwarded").await, 1, "{id}");
    }
    assert_eq!(ita.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'statuses'").await, 0);
}
