//! Packets posted in batches (protocol version 3, `federation.md` §5c),
//! over real TLS between gateways: the packets one round of the outbox
//! finds for a peer that lists version 3 go in one request and come back
//! confirmed by one signed batch receipt, kept with each; a peer whose
//! directory entry does not list version 3 (a gateway of the release
//! before) gets each packet alone with a receipt of its own; at the
//! receiving gateway each packet of a batch is taken or refused exactly as
//! if it had come alone, and a packet the batch receipt does not list is
//! sent again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use referral_gateway::app::sending::delivery::{PeerTransport, SendFailure};
use referral_gateway::crypto::packet::{digest_of, PacketType};
use referral_gateway::crypto::receipt::{self, Expected};
use referral_gateway::directory::ProtocolVersion;
use referral_gateway::domain::CountryCode;
use referral_gateway::federation::client::PeerClient;
use referral_gateway::wire::{BatchAnswer, BatchRefusal, MAX_BATCH_PACKETS};
use serde_json::json;

use crate::forwarding::forged_packet;
use crate::helpers::{variant, Backend, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation};
use crate::visibility::Failing;

on_both_backends!(
    referrals_due_in_one_round_go_in_one_batch_with_one_receipt,
    a_peer_of_the_release_before_gets_each_packet_alone_with_its_own_receipt,
    a_packet_the_batch_receipt_does_not_list_is_sent_again_as_the_same_bytes,
    what_a_batch_answer_says_beyond_its_receipt_is_kept_as_codes_only,
    a_batch_receipt_that_lists_more_than_was_sent_confirms_nothing,
    a_batch_takes_each_packet_that_holds_and_is_refused_whole_only_when_unreadable,
);

const LIMIT: Duration = Duration::from_secs(40);
const CASES: usize = 5;

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

/// Italy without its federation side, Nigeria with it, listed with
/// versions 1 to 3 (the example directory lists 1 and 2: `performance.md`,
/// "Lever: batches of packets").
async fn batching_to_nigeria(backend: Backend) -> Federation {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.peer_mut("NGA").protocol_versions = Some(vec![ProtocolVersion::FIRST, ProtocolVersion::COALESCED_STATUSES, ProtocolVersion::BATCHES]);
    federation.launch(&["NGA"]).await;
    federation
}

/// `CASES` referrals from Italy to Nigeria's health organisation, accepted
/// at an Italian gateway without its federation side: each waits in the
/// outbox for a round run by hand. Returns their ids.
async fn queued_at_italy(federation: &Federation, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..CASES {
        let reply = federation.peer("ITA").submit(Who::IomRome, &variant("returnee_hiv_reintegration", &format!("{prefix}-{n}"), None)).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        ids.push(reply.body["referral_id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Italy's gateway's outbox round, through `transport`.
async fn round_at_italy(federation: &Federation, transport: Arc<dyn PeerTransport>) -> referral_gateway::app::sending::delivery::DeliveryRound {
    federation.peer("ITA").app().gateway().deliver_due(&transport).await.unwrap()
}

/// The packets Italy's outbox keeps for its referrals, with the receipt of each.
async fn kept_at_italy(federation: &Federation, ids: &[String]) -> Vec<(String, String, String)> {
    let ita = federation.peer("ITA");
    let mut kept = Vec::new();
    for id in ids {
        let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE referral_id = '{id}' AND packet_type = 'referral'")).await.unwrap();
        let packet = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}' AND packet_type = 'referral'")).await.unwrap();
        let receipt = ita.text(&format!("SELECT receipt FROM outbox WHERE referral_id = '{id}' AND packet_type = 'referral'")).await.unwrap();
        kept.push((packet_id, packet, receipt));
    }
    kept
}

async fn referrals_due_in_one_round_go_in_one_batch_with_one_receipt(backend: Backend) {
    let federation = batching_to_nigeria(backend).await;
    let ids = queued_at_italy(&federation, "batched").await;
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    let round = round_at_italy(&federation, real).await;
    assert_eq!((round.claimed, round.delivered), (CASES, CASES));

    // Italy: one receipt, a batch receipt signed by Nigeria, confirming each packet by its digest and nothing more.
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    assert_eq!(ita.count("SELECT COUNT(DISTINCT receipt) FROM outbox WHERE packet_type = 'referral' AND state = 'delivered'").await, 1);
    let kept = kept_at_italy(&federation, &ids).await;
    let directory = ita.app().gateway().directory();
    let receipt = &kept[0].2;
    let confirmed = receipt::verify_batch(receipt, directory.as_ref(), federation.clock_now(), country("NGA"), country("ITA")).unwrap();
    assert_eq!(confirmed.packets_sha256.len(), CASES);
    for (packet_id, packet, _) in &kept {
        assert!(confirmed.confirms(&digest_of(packet.as_bytes())), "{packet_id}");
    }
    // What the national system reads of a delivery: that receipt.
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{}", ids[0])).await;
    assert_eq!(referral.body["delivery"]["receipt"], json!(receipt));

    // Nigeria: each packet taken once, none with a receipt of its own.
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'referral' AND receipt = ''").await, CASES as i64);
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'accepted'").await, CASES as i64);
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome <> 'accepted'").await, 0);
}

async fn a_peer_of_the_release_before_gets_each_packet_alone_with_its_own_receipt(backend: Backend) {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    // Nigeria's entry lists versions 1 and 2, as a gateway of the release before.
    federation.peer_mut("NGA").protocol_versions = Some(vec![ProtocolVersion::FIRST, ProtocolVersion::COALESCED_STATUSES]);
    federation.launch(&["NGA"]).await;
    let ids = queued_at_italy(&federation, "one-by-one").await;
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    let round = round_at_italy(&federation, real).await;
    assert_eq!((round.claimed, round.delivered), (CASES, CASES));

    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let directory = ita.app().gateway().directory();
    for (packet_id, packet, receipt) in kept_at_italy(&federation, &ids).await {
        let digest = digest_of(packet.as_bytes());
        let expected = Expected { packet_id: &packet_id, packet_sha256: &digest, from: country("NGA"), to: country("ITA") };
        receipt::verify(&receipt, directory.as_ref(), federation.clock_now(), &expected).unwrap();
    }
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'referral' AND receipt <> ''").await, CASES as i64);
}

/// The packet Italy's outbox keeps for each referral.
async fn packets_at_italy(federation: &Federation, ids: &[String]) -> Vec<String> {
    let mut packets = Vec::new();
    for id in ids {
        packets.push(federation.peer("ITA").text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}'")).await.unwrap());
    }
    packets
}

/// A transport that posts every packet of a batch, then answers what the
/// peer says of the first of them posted again in a batch of its own: as a
/// peer whose batch receipt leaves out packets it took. Counts its batches.
struct FirstListed {
    real: PeerClient,
    batches: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl PeerTransport for FirstListed {
    async fn send(&self, peer: CountryCode, endpoint: &str, packet: &str) -> Result<String, SendFailure> {
        self.real.send(peer, endpoint, packet).await
    }

    async fn send_batch(&self, peer: CountryCode, endpoint: &str, packets: &[&str]) -> Result<BatchAnswer, SendFailure> {
        self.batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.real.send_batch(peer, endpoint, packets).await?;
        self.real.send_batch(peer, endpoint, &packets[..1]).await
    }
}

async fn a_packet_the_batch_receipt_does_not_list_is_sent_again_as_the_same_bytes(backend: Backend) {
    let federation = batching_to_nigeria(backend).await;
    let ids = queued_at_italy(&federation, "unlisted").await;
    let first_listed = Arc::new(FirstListed { real: federation.peer_client("ITA", Duration::from_secs(5)), batches: Default::default() });
    let round = round_at_italy(&federation, first_listed.clone()).await;
    assert_eq!((round.delivered, round.retrying), (1, CASES - 1));
    assert_eq!(first_listed.batches.load(std::sync::atomic::Ordering::SeqCst), 1, "one batch");
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    assert_eq!(
        ita.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'referral' AND state = 'pending' AND last_error = 'receipt-mismatch'").await,
        (CASES - 1) as i64,
    );
    let first_sent = packets_at_italy(&federation, &ids).await;
    let duplicates = "SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'duplicate'";
    assert_eq!(nga.count(duplicates).await, 1, "the first packet, posted again");

    federation.clock.advance(chrono::Duration::minutes(5));
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    let round = round_at_italy(&federation, real).await;
    assert_eq!((round.claimed, round.delivered), (CASES - 1, CASES - 1));
    assert_eq!(packets_at_italy(&federation, &ids).await, first_sent, "the same bytes");
    assert_eq!(ita.count("SELECT COUNT(*) FROM outbox WHERE packet_type = 'referral' AND state = 'delivered'").await, CASES as i64);
    assert_eq!(ita.count("SELECT COUNT(DISTINCT receipt) FROM outbox WHERE packet_type = 'referral'").await, 2);
    // Each taken once, at the first post; the second round's packets listed as redeliveries.
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'referral'").await, CASES as i64);
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'accepted'").await, CASES as i64);
    assert_eq!(nga.count(duplicates).await, CASES as i64);
    for id in &ids {
        assert_eq!(status_of(ita, Who::IomRome, id).await, "delivered");
    }
}

/// Posts only the first packet of each batch, then answers as a peer that
/// says more than its receipt: the first packet refused although listed,
/// the second refused in free text, the third refused twice, and a place
/// the batch does not have. Keeps the packets it was given, in order.
struct Tampered {
    real: PeerClient,
    sent: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl PeerTransport for Tampered {
    async fn send(&self, peer: CountryCode, endpoint: &str, packet: &str) -> Result<String, SendFailure> {
        self.real.send(peer, endpoint, packet).await
    }

    async fn send_batch(&self, peer: CountryCode, endpoint: &str, packets: &[&str]) -> Result<BatchAnswer, SendFailure> {
        self.sent.lock().unwrap().extend(packets.iter().map(|packet| (*packet).to_owned()));
        let mut answer = self.real.send_batch(peer, endpoint, &packets[..1]).await?;
        let refusal = |index: usize, code: &str| BatchRefusal { index, code: code.to_owned() };
        answer.refused = vec![
            refusal(0, "packet-undecryptable"),
            refusal(1, "Mr Okafor's case: refused"),
            refusal(2, "packet-undecryptable"),
            refusal(2, "packet-expired"),
            refusal(99, "packet-replayed"),
        ];
        Ok(answer)
    }
}

async fn what_a_batch_answer_says_beyond_its_receipt_is_kept_as_codes_only(backend: Backend) {
    let federation = batching_to_nigeria(backend).await;
    let ids = queued_at_italy(&federation, "tampered").await;
    // A first round to a peer that does not answer: every packet sealed and kept.
    let down: Arc<dyn PeerTransport> = Arc::new(Failing(SendFailure::Unreachable { code: "peer-unreachable" }));
    assert_eq!(round_at_italy(&federation, down).await.retrying, CASES);
    let ita = federation.peer("ITA");
    let mut entry_of = std::collections::HashMap::new();
    for id in &ids {
        let packet = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
        entry_of.insert(packet, id.clone());
    }

    federation.clock.advance(chrono::Duration::minutes(5));
    let tampered = Arc::new(Tampered { real: federation.peer_client("ITA", Duration::from_secs(5)), sent: Default::default() });
    let round = round_at_italy(&federation, tampered.clone()).await;
    assert_eq!((round.delivered, round.retrying), (1, CASES - 1));
    let sent: Vec<String> = tampered.sent.lock().unwrap().iter().map(|packet| entry_of[packet].clone()).collect();
    assert_eq!(sent.len(), CASES, "one batch");
    let state = |id: &String| {
        let sql = format!("SELECT state || '|' || COALESCE(last_error, '') || '|' || (CASE WHEN packet IS NULL THEN 'dropped' ELSE 'kept' END) FROM outbox WHERE referral_id = '{id}'");
        async move { ita.text(&sql).await.unwrap() }
    };
    // Listed in the signed receipt: delivered, whatever the refusals say.
    assert_eq!(state(&sent[0]).await, "delivered|peer-unreachable|kept");
    // Free text is kept as a code of ours, never as written.
    assert_eq!(state(&sent[1]).await, "pending|receipt-malformed|kept");
    assert_eq!(ita.count("SELECT COUNT(*) FROM outbox WHERE last_error LIKE '%Okafor%'").await, 0);
    // Refused twice: by its first refusal, which asks for a new packet.
    assert_eq!(state(&sent[2]).await, "pending|packet-undecryptable|dropped");
    // Neither listed nor refused.
    assert_eq!(state(&sent[3]).await, "pending|receipt-mismatch|kept");
    assert_eq!(state(&sent[4]).await, "pending|receipt-mismatch|kept");

    federation.clock.advance(chrono::Duration::minutes(5));
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    assert_eq!(round_at_italy(&federation, real).await.delivered, CASES - 1);
    let nga = federation.peer("NGA");
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox WHERE packet_type = 'referral'").await, CASES as i64, "each taken once");
}

/// Posts each batch, then answers a batch receipt the peer's own key signs
/// that lists one digest more than was sent: a text the sender would keep.
struct Padded {
    real: PeerClient,
    signer: referral_gateway::crypto::jose_keys::SigningKey,
    now: chrono::DateTime<chrono::Utc>,
}

#[async_trait]
impl PeerTransport for Padded {
    async fn send(&self, peer: CountryCode, endpoint: &str, packet: &str) -> Result<String, SendFailure> {
        self.real.send(peer, endpoint, packet).await
    }

    async fn send_batch(&self, peer: CountryCode, endpoint: &str, packets: &[&str]) -> Result<BatchAnswer, SendFailure> {
        let mut answer = self.real.send_batch(peer, endpoint, packets).await?;
        let mut listed: Vec<String> = packets.iter().map(|packet| digest_of(packet.as_bytes())).collect();
        listed.push("Mr Okafor, born 1990".to_owned());
        let claims = receipt::BatchReceiptClaims { packets_sha256: listed, received_at: self.now, issuer: peer, audience: country("ITA") };
        answer.receipt = Some(receipt::sign_batch(&claims, &self.signer).unwrap());
        Ok(answer)
    }
}

async fn a_batch_receipt_that_lists_more_than_was_sent_confirms_nothing(backend: Backend) {
    let federation = batching_to_nigeria(backend).await;
    let ids = queued_at_italy(&federation, "padded").await;
    let nga = federation.peer("NGA").app().gateway();
    let signer = nga.directory().current_signing_key(country("NGA"), federation.clock_now(), &nga.federation_keys().unwrap().signing).unwrap().clone();
    let padded: Arc<dyn PeerTransport> = Arc::new(Padded { real: federation.peer_client("ITA", Duration::from_secs(5)), signer, now: federation.clock_now() });
    let round = round_at_italy(&federation, padded).await;
    assert_eq!((round.delivered, round.retrying), (0, CASES));
    let ita = federation.peer("ITA");
    assert_eq!(ita.count("SELECT COUNT(*) FROM outbox WHERE last_error = 'receipt-mismatch' AND receipt IS NULL").await, CASES as i64);

    federation.clock.advance(chrono::Duration::minutes(5));
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    assert_eq!(round_at_italy(&federation, real).await.delivered, CASES);
    for id in &ids {
        assert_eq!(status_of(ita, Who::IomRome, id).await, "delivered");
    }
}

async fn a_batch_takes_each_packet_that_holds_and_is_refused_whole_only_when_unreadable(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA", "GMB"]).await;
    let reply = federation.peer("ITA").submit(Who::IomRome, &variant("returnee_hiv_reintegration", "batch-mixed-1", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    let ita = federation.peer("ITA");
    wait_for("delivery", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE referral_id = '{id}'")).await.unwrap();

    // From Nigeria: a status about the referral, one sealed to the Gambia, and one whose id is not a packet id.
    let status = |body| forged_packet(&federation, ("NGA", "ITA"), "batch-status-1", PacketType::Status, "nga-health-lagos", None, body);
    let good = status(json!({ "in_reply_to": packet_id, "status": "accepted" }));
    let elsewhere = forged_packet(&federation, ("NGA", "GMB"), "batch-status-2", PacketType::Status, "nga-health-lagos", None, json!({ "in_reply_to": packet_id, "status": "accepted" }));
    let bad_id = forged_packet(&federation, ("NGA", "ITA"), "not an id!", PacketType::Status, "nga-health-lagos", None, json!({ "in_reply_to": packet_id, "status": "accepted" }));
    let client = federation.peer_client("NGA", Duration::from_secs(5));
    let endpoint = format!("https://127.0.0.1:{}", ita.app().federation_addr().unwrap().port());
    let (nga_directory, now) = (federation.peer("NGA").app().gateway().directory(), federation.clock_now());
    let confirms = |answer: &BatchAnswer, packets: &[&str]| {
        let confirmed = receipt::verify_batch(answer.receipt.as_deref().unwrap(), nga_directory.as_ref(), now, country("ITA"), country("NGA")).unwrap();
        assert_eq!(confirmed.packets_sha256, packets.iter().map(|p| digest_of(p.as_bytes())).collect::<Vec<_>>());
    };

    let answer = client.send_batch(country("ITA"), &endpoint, &[&good, &elsewhere, &bad_id]).await.unwrap();
    confirms(&answer, &[&good]);
    let refused: Vec<(usize, &str)> = answer.refused.iter().map(|r| (r.index, r.code.as_str())).collect();
    assert_eq!(refused, [(1, "packet-undecryptable"), (2, "packet-malformed-id")]);

    // The same bytes again in a batch: listed again. Other bytes under the same id: a replay, refused.
    let replay = status(json!({ "in_reply_to": packet_id, "status": "declined" }));
    let answer = client.send_batch(country("ITA"), &endpoint, &[&replay, &good]).await.unwrap();
    confirms(&answer, &[&good]);
    assert_eq!(answer.refused.iter().map(|r| (r.index, r.code.as_str())).collect::<Vec<_>>(), [(0, "packet-replayed")]);
    // Alone, a packet first taken in a batch gets a receipt of its own, signed now.
    let alone = client.send(country("ITA"), &endpoint, &good).await.unwrap();
    let digest = digest_of(good.as_bytes());
    let expected = Expected { packet_id: "batch-status-1", packet_sha256: &digest, from: country("ITA"), to: country("NGA") };
    receipt::verify(&alone, nga_directory.as_ref(), now, &expected).unwrap();

    // A batch that cannot be read as one: refused whole, none of its packets looked at.
    let refusal = |result: Result<BatchAnswer, SendFailure>| match result {
        Err(SendFailure::Refused { code }) => code,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(refusal(client.send_batch(country("ITA"), &endpoint, &[]).await), "batch-malformed");
    let too_many: Vec<&str> = std::iter::repeat_n(good.as_str(), MAX_BATCH_PACKETS + 1).collect();
    assert_eq!(refusal(client.send_batch(country("ITA"), &endpoint, &too_many).await), "batch-malformed");
    // Over the limit together, by a byte, though each is within it; then far over, never read whole.
    let limit = ita.app().gateway().packet_limit();
    let (half, rest) = ("x".repeat(limit / 2), "x".repeat(limit - limit / 2 + 1));
    assert_eq!(refusal(client.send_batch(country("ITA"), &endpoint, &[&half, &rest]).await), "batch-too-large");
    let large = "x".repeat(limit);
    assert_eq!(refusal(client.send_batch(country("ITA"), &endpoint, &[&large, &large]).await), "batch-too-large");

    // Italy took the status once and applied it once; every refusal and redelivery audited.
    wait_for("the status applied", LIMIT, || async {
        ita.count("SELECT COUNT(*) FROM inbox WHERE packet_id = 'batch-status-1' AND state = 'applied'").await == 1
    })
    .await;
    let audited = |outcome: &'static str, reason: &'static str| {
        let sql = format!("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = '{outcome}' AND COALESCE(reasons, '') LIKE '%{reason}%'");
        async move { ita.count(&sql).await }
    };
    assert_eq!(audited("duplicate", "").await, 2);
    assert_eq!(audited("refused", "packet-replayed").await, 1);
    assert_eq!(audited("refused", "packet-undecryptable").await, 1);
    assert_eq!(audited("refused", "packet-malformed-id").await, 1);
    assert_eq!(audited("refused", "batch-malformed").await, 2);
    assert_eq!(audited("refused", "batch-too-large").await, 2);
    let timeline = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["timeline"].clone();
    assert_eq!(timeline.as_array().unwrap().iter().filter(|entry| entry["status"] == "accepted").count(), 1, "{timeline}");
}
