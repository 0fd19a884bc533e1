//! Delivery between gateways over real mutual TLS: a referral accepted in
//! Italy reaches Nigeria's gateway once, with a signed receipt kept by the
//! sender, through peer outages, sender restarts and key rotation.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use referral_gateway::app::sending::delivery::{DeliveryRound, PeerTransport, SendFailure};
use referral_gateway::crypto::packet::digest_of;
use referral_gateway::domain::CountryCode;
use referral_gateway::federation::client::PeerClient;
use referral_gateway::federation::tls::Members;
use serde_json::Value;

use crate::helpers::{variant, Backend, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation};

on_both_backends!(
    a_referral_is_delivered_once_with_a_verified_receipt_in_its_timeline,
    a_peer_down_then_up_gets_every_packet_once,
    a_sender_restarted_before_delivering_delivers_what_it_accepted,
    redelivery_over_tls_gets_the_first_receipt_and_tampering_is_refused,
    an_undeliverable_referral_expires_at_its_deadline,
    keys_rotated_while_packets_are_in_flight_lose_nothing,
    a_sender_killed_holding_a_claim_resumes_it_at_once_on_restart,
);

const LIMIT: Duration = Duration::from_secs(40);

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

/// Submits a referral to Nigeria at Italy's gateway; returns its id.
async fn submit_to_nigeria(federation: &Federation, key: &str) -> String {
    let referral = variant("returnee_hiv_reintegration", &format!("delivery-test-{key}"), None);
    let reply = federation.peer("ITA").submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["referral_id"].as_str().unwrap().to_owned()
}

async fn wait_delivered(federation: &Federation, ids: &[String]) {
    let ita = federation.peer("ITA");
    for id in ids {
        wait_for(&format!("{id} delivered"), LIMIT, || async { status_of(ita, Who::IomRome, id).await == "delivered" }).await;
    }
}

fn jws_payload(compact: &str) -> Value {
    let payload = compact.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn a_referral_is_delivered_once_with_a_verified_receipt_in_its_timeline(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submit_to_nigeria(&federation, "e2e-1").await;
    wait_delivered(&federation, std::slice::from_ref(&id)).await;

    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    let statuses: Vec<&str> = referral["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "delivered"]);
    let delivery = &referral["delivery"];
    assert_eq!(delivery["state"], "delivered");
    let packet_id = delivery["packet_id"].as_str().unwrap();

    // The receipt is Nigeria's, about exactly the bytes Italy sent.
    let receipt = jws_payload(delivery["receipt"].as_str().unwrap());
    let sent = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    assert_eq!(receipt["packet_id"], packet_id);
    assert_eq!(receipt["packet_sha256"], digest_of(sent.as_bytes()));
    assert_eq!(receipt["issuer"], "NGA");
    assert_eq!(receipt["audience"], "ITA");

    // Nigeria holds it once, for the recipient named, and received nothing else.
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox").await, 1);
    let held = nga.text("SELECT packet_id || ' ' || recipient_org || ' ' || packet_type FROM inbox").await.unwrap();
    assert_eq!(held, format!("{packet_id} nga-health-lagos referral"));
    // Both sides audited it.
    assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.send' AND outcome = 'delivered' AND referral_id = '{id}'")).await, 1);
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'accepted' AND actor_subject = 'gateway:ITA'").await, 1);
    // The packet on the wire is readable only by Nigeria: no personal value of the case in it.
    for value in crate::helpers::personal_values() {
        assert!(!sent.contains(&value), "a personal value travels in clear");
    }
}

async fn a_peer_down_then_up_gets_every_packet_once(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    federation.stop_peer("NGA").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit_to_nigeria(&federation, &format!("down-{n}")).await);
    }
    let ita = federation.peer("ITA");
    wait_for("failed attempts while Nigeria is down", LIMIT, || async {
        ita.count("SELECT COUNT(*) FROM outbox WHERE attempts >= 2 AND last_error = 'peer-unreachable'").await == 3
    })
    .await;
    for id in &ids {
        assert_eq!(status_of(ita, Who::IomRome, id).await, "queued");
    }

    federation.start_peer("NGA", true).await;
    wait_delivered(&federation, &ids).await;
    let nga = federation.peer("NGA");
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox").await, 3);
    assert_eq!(nga.count("SELECT COUNT(DISTINCT packet_id) FROM inbox").await, 3);
    let ita = federation.peer("ITA");
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.send' AND outcome = 'delivered'").await, 3);
    assert_eq!(ita.count("SELECT COUNT(*) FROM outbox WHERE state = 'delivered' AND receipt IS NOT NULL").await, 3);
}

async fn a_sender_restarted_before_delivering_delivers_what_it_accepted(backend: Backend) {
    // Italy starts without its peer side: it accepts and queues only.
    let mut federation = Federation::start_with(backend, &["ITA", "NGA"], &["NGA"]).await;
    let ids = vec![submit_to_nigeria(&federation, "restart-1").await, submit_to_nigeria(&federation, "restart-2").await];
    federation.stop_peer("ITA").await;
    assert_eq!(federation.peer("NGA").count("SELECT COUNT(*) FROM inbox").await, 0);

    federation.start_peer("ITA", true).await;
    federation.publish().await;
    wait_delivered(&federation, &ids).await;
    assert_eq!(federation.peer("NGA").count("SELECT COUNT(*) FROM inbox").await, 2);
}

/// `kill -9` during an attempt leaves the entry claimed for the whole lease
/// (120 s). The next process on the same node takes the claim back at start
/// and delivers at once: the clock here moves 3 s on the restart, far short
/// of the lease.
async fn a_sender_killed_holding_a_claim_resumes_it_at_once_on_restart(backend: Backend) {
    let mut federation = Federation::start_with(backend, &["ITA", "NGA"], &["NGA"]).await;
    let ids = vec![submit_to_nigeria(&federation, "killed-1").await];
    federation.stop_peer("ITA").await;
    // The claim as the killed process left it: leased, under an earlier instance of this node.
    let ita = federation.peer("ITA");
    let leased_until = federation.clock_now().timestamp_millis() + 120_000;
    let node = ita.config.database.node_name();
    let claim = format!("UPDATE outbox SET attempts = 1, next_attempt_ms = {leased_until}, claim_node = '{node}', claim_instance = 'killed'");
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&ita.config.database.url).await.unwrap();
            sqlx::query(&claim).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = crate::helpers::pg_pool_in(ita.schema.as_deref().unwrap()).await;
            sqlx::query(&claim).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    federation.start_peer("ITA", true).await;
    federation.publish().await;
    wait_delivered(&federation, &ids).await;
    assert_eq!(federation.peer("NGA").count("SELECT COUNT(*) FROM inbox").await, 1);
}

async fn redelivery_over_tls_gets_the_first_receipt_and_tampering_is_refused(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submit_to_nigeria(&federation, "again-1").await;
    wait_delivered(&federation, std::slice::from_ref(&id)).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let packet = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    let first_receipt = ita.text(&format!("SELECT receipt FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    let endpoint = format!("https://127.0.0.1:{}", nga.app().federation_addr().unwrap().port());
    let client = federation.peer_client("ITA", Duration::from_secs(5));

    let again = client.send(country("NGA"), &endpoint, &packet).await.unwrap();
    assert_eq!(again, first_receipt);
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox").await, 1);

    // One character of the ciphertext changed: not readable, refused, audited.
    let mut parts: Vec<String> = packet.split('.').map(str::to_owned).collect();
    let ciphertext = parts[3].clone();
    let flipped = if ciphertext.starts_with('A') { "B" } else { "A" };
    parts[3] = format!("{flipped}{}", &ciphertext[1..]);
    let refused = client.send(country("NGA"), &endpoint, &parts.join(".")).await.unwrap_err();
    assert_eq!(refused, SendFailure::Refused { code: "packet-undecryptable".to_owned() });
    assert_eq!(
        nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'refused' AND reasons LIKE '%packet-undecryptable%'").await,
        1
    );
    // A client certificate no member lists: the federation listener ends the handshake.
    let stranger_keys = tempfile::tempdir().unwrap();
    referral_gateway::crypto::federation_keys::init(stranger_keys.path(), &["localhost".to_owned()]).unwrap();
    let (chain, key) = referral_gateway::crypto::federation_keys::load(stranger_keys.path()).unwrap().tls_identity().unwrap();
    let members: std::sync::Arc<dyn Members> = ita.app().gateway().clone();
    let stranger = PeerClient::new(members, chain, key, Duration::from_secs(5));
    let refused = stranger.send(country("NGA"), &endpoint, &packet).await.unwrap_err();
    assert!(matches!(refused, SendFailure::Unreachable { .. }), "{refused:?}");
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive'").await, 3, "accepted, duplicate, refused: nothing more reached the gateway");

    // Sent to a gateway that is not its audience: the TLS pin of the peer is checked first.
    let gambia = client.send(country("GMB"), &endpoint, &packet).await.unwrap_err();
    assert!(matches!(gambia, SendFailure::Unreachable { .. }), "{gambia:?}");
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox").await, 1);
}

async fn an_undeliverable_referral_expires_at_its_deadline(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    federation.stop_peer("NGA").await;
    let id = submit_to_nigeria(&federation, "expire-1").await;
    let ita = federation.peer("ITA");
    wait_for("a failed attempt", LIMIT, || async { ita.count("SELECT COUNT(*) FROM outbox WHERE attempts >= 1").await == 1 }).await;
    // Past the delivery window (7 days by default).
    federation.clock.advance(chrono::Duration::days(8));
    let ita = federation.peer("ITA");
    wait_for("expiry", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "expired" }).await;
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(referral["delivery"]["state"], "expired");
    assert!(referral["delivery"]["receipt"].is_null());
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.send' AND outcome = 'expired'").await, 1);

    // Nothing more is sent once expired, even with the peer back: past any
    // claim's lease, a delivery round run by hand over a transport that
    // reaches Nigeria finds nothing to claim, and the worker claimed nothing.
    federation.start_peer("NGA", true).await;
    let attempts = federation.peer("ITA").count("SELECT attempts FROM outbox").await;
    federation.clock.advance(chrono::Duration::hours(1));
    let transport: std::sync::Arc<dyn PeerTransport> = std::sync::Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    let round = federation.peer("ITA").app().gateway().deliver_due(&transport).await.unwrap();
    assert_eq!(round, DeliveryRound::default(), "an expired entry was claimed again");
    assert_eq!(federation.peer("ITA").count("SELECT attempts FROM outbox").await, attempts);
    assert_eq!(federation.peer("NGA").count("SELECT COUNT(*) FROM inbox").await, 0);
}

async fn keys_rotated_while_packets_are_in_flight_lose_nothing(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    federation.stop_peer("NGA").await;
    let mut ids = vec![submit_to_nigeria(&federation, "rotate-1").await, submit_to_nigeria(&federation, "rotate-2").await];
    let ita = federation.peer("ITA");
    wait_for("packets sealed to Nigeria's first key", LIMIT, || async {
        ita.count("SELECT COUNT(*) FROM outbox WHERE packet IS NOT NULL").await == 2
    })
    .await;
    let first_kid = jwe_kid(&ita.text("SELECT packet FROM outbox LIMIT 1").await.unwrap());

    // Nigeria adds a key pair valid from now; the old one stays valid (overlap).
    let (_, second_kid) = referral_gateway::crypto::federation_keys::rotate(federation.peer("NGA").keys_dir()).unwrap();
    let now = federation.clock_now();
    let (_, until) = crate::peers::default_window();
    federation.peer_mut("NGA").windows.insert(second_kid.clone(), (now, until));
    federation.publish().await;
    federation.start_peer("NGA", true).await;
    ids.push(submit_to_nigeria(&federation, "rotate-3").await);
    wait_delivered(&federation, &ids).await;
    let ita = federation.peer("ITA");
    let newest = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{}'", ids[2])).await.unwrap();
    assert_eq!(jwe_kid(&newest), second_kid, "new packets go to the newest key");
    assert_ne!(first_kid, second_kid);

    // A packet sealed to a key then withdrawn from the directory is sealed
    // again to the key in force, and still arrives.
    federation.stop_peer("NGA").await;
    ids.push(submit_to_nigeria(&federation, "rotate-4").await);
    let ita = federation.peer("ITA");
    wait_for("a packet sealed to the second key", LIMIT, || async {
        ita.count("SELECT COUNT(*) FROM outbox WHERE packet IS NOT NULL AND state = 'pending'").await == 1
    })
    .await;
    let (_, third_kid) = referral_gateway::crypto::federation_keys::rotate(federation.peer("NGA").keys_dir()).unwrap();
    let now = federation.clock_now();
    let nga = federation.peer_mut("NGA");
    nga.windows.insert(third_kid.clone(), (now, until));
    nga.windows.insert(second_kid.clone(), (now, now)); // dropped from the directory
    federation.publish().await;
    federation.start_peer("NGA", true).await;
    wait_delivered(&federation, &ids).await;
    let ita = federation.peer("ITA");
    let resealed = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{}'", ids[3])).await.unwrap();
    assert_eq!(jwe_kid(&resealed), third_kid);
    let nga = federation.peer("NGA");
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox").await, 4);
    assert_eq!(
        nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND reasons LIKE '%packet-undecryptable%'").await,
        1,
        "the packet sealed to the withdrawn key was refused once, then sealed again"
    );
}

/// The key id in a compact JWE's protected header.
fn jwe_kid(compact: &str) -> String {
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(compact.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}
