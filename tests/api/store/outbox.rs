//! `OutboxStore`: claims, leases and settlement of what is to be sent, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    outbox_entries_are_claimed_for_a_lease_keep_their_first_packet_and_settle_once,
    a_restarted_node_takes_back_its_predecessors_claims_and_leaves_other_nodes_leases,
);

async fn outbox_entries_are_claimed_for_a_lease_keep_their_first_packet_and_settle_once(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), submit(referral("r2", "ita-nrm", "key-00002", "s1", false))]).await.unwrap();
    let now = at(0).timestamp_millis();
    let lease = 60_000;

    let claimed = store.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the allowed referral is queued");
    let entry = &claimed[0];
    assert_eq!((entry.id.as_str(), entry.referral_id.as_deref(), entry.packet_type.as_str()), ("r1", Some("r1"), "referral"));
    assert_eq!((entry.recipient_org.as_str(), entry.destination_country.as_str()), ("gmb-iom-banjul", "GMB"));
    assert_eq!((entry.purpose.as_deref(), entry.policy_version.as_deref()), (Some("return"), Some("sha256:0")));
    assert_eq!((entry.attempts, entry.packet.clone()), (1, None));
    assert_eq!(entry.payload.sealed, vec![1, 2, 3]);
    assert_eq!(entry.deadline_ms, at(60).timestamp_millis());
    // Claimed: nobody else gets it during the lease; after it, it is due again.
    assert!(store.claim_deliveries(now + 1, lease, 10).await.unwrap().is_empty());
    let again = store.claim_deliveries(now + lease, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);

    // The first packet kept is the one every later attempt sends.
    let first = StoredPacket { packet_id: "p-1".to_owned(), packet: "sealed-1".to_owned() };
    let second = StoredPacket { packet_id: "p-2".to_owned(), packet: "sealed-2".to_owned() };
    let keep = |packet: &StoredPacket| vec![Write::KeepPacket { entry_id: "r1".to_owned(), packet: packet.clone(), sealed_from: "k".to_owned() }];
    assert_eq!(store.write_batch(&keep(&first)).await.unwrap(), vec![Written::PacketKept(first.clone())]);
    assert_eq!(store.write_batch(&keep(&second)).await.unwrap(), vec![Written::PacketKept(first.clone())]);
    let gone = vec![Write::KeepPacket { entry_id: "no-such-entry".to_owned(), packet: first.clone(), sealed_from: "k".to_owned() }];
    assert_eq!(store.write_batch(&gone).await.unwrap(), vec![Written::AlreadySettled]);

    // A failed attempt schedules the next one and records its code.
    store.retry_later("r1", now + 5 * lease, "peer-unreachable", false).await.unwrap();
    assert!(store.claim_deliveries(now + 4 * lease, lease, 10).await.unwrap().is_empty());
    let delivery = store.delivery("r1").await.unwrap().unwrap();
    assert_eq!((delivery.state.as_str(), delivery.last_error.as_deref(), delivery.packet_id.as_deref()), ("pending", Some("peer-unreachable"), Some("p-1")));
    // Forgetting the packet lets a new one be kept.
    store.retry_later("r1", now + 5 * lease, "packet-undecryptable", true).await.unwrap();
    // Two packets for one entry in one batch: the first write's is kept, and both hear of it.
    let both = [keep(&second), keep(&first)].concat();
    assert_eq!(store.write_batch(&both).await.unwrap(), vec![Written::PacketKept(second.clone()), Written::PacketKept(second.clone())]);

    let settle = |settlement: Settlement| Write::Settle {
        entry_id: "r1".to_owned(),
        settlement,
        at_ms: at(5).timestamp_millis(),
        audit: event(5, "ITA", Action::PacketSend).referral("r1"),
    };
    let results = store.write_batch(&[settle(Settlement::Delivered { receipt: "receipt-1".to_owned() }), settle(Settlement::Expired)]).await.unwrap();
    assert_eq!(results, vec![Written::Audited { seq: 3 }, Written::AlreadySettled]);
    let delivery = store.delivery("r1").await.unwrap().unwrap();
    assert_eq!((delivery.state.as_str(), delivery.receipt.as_deref()), ("delivered", Some("receipt-1")));
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "delivered");
    let timeline: Vec<String> = store.timeline("r1").await.unwrap().into_iter().map(|t| t.status.as_str().to_owned()).collect();
    assert_eq!(timeline, ["queued", "delivered"]);
    assert!(store.claim_deliveries(now + 100 * lease, lease, 10).await.unwrap().is_empty(), "a settled entry is never claimed");
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
    assert!(store.delivery("r2").await.unwrap().is_none());
}

/// A process killed (`kill -9`) while it held claims leaves them leased; the
/// next process of the same node takes them back at start, while a claim of
/// another node (a live replica) keeps its lease, and an entry whose attempt
/// ended keeps the time its backoff chose.
async fn a_restarted_node_takes_back_its_predecessors_claims_and_leaves_other_nodes_leases(backend: Backend) {
    let opened = open(backend).await;
    let on_node = |node: &str| DatabaseConfig { node: Some(node.to_owned()), ..opened.config.clone() };
    let killed = referral_gateway::store::open(&on_node("node-a")).await.unwrap();
    let replica = referral_gateway::store::open(&on_node("node-b")).await.unwrap();
    killed
        .write_batch(&[
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            submit(referral("r2", "ita-nrm", "key-00002", "s1", true)),
            submit(referral("r3", "ita-nrm", "key-00003", "s1", true)),
        ])
        .await
        .unwrap();
    let now = at(0).timestamp_millis();
    let lease = 120_000;
    let claimed_by_killed = killed.claim_deliveries(now, lease, 2).await.unwrap();
    assert_eq!(claimed_by_killed.len(), 2);
    let claimed_by_replica = replica.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed_by_replica.len(), 1, "the live replica holds the third");
    // One of the killed process's attempts had ended (a retry scheduled) before it died.
    let retried = &claimed_by_killed[1].id;
    killed.retry_later(retried, now + 600_000, "peer-unreachable", false).await.unwrap();
    drop(killed);

    let restarted = referral_gateway::store::open(&on_node("node-a")).await.unwrap();
    assert!(restarted.claim_deliveries(now + 1, lease, 10).await.unwrap().is_empty(), "leased until taken back");
    assert_eq!(restarted.release_earlier_claims(now + 1).await.unwrap(), 1, "only the claim still leased by the killed process");
    let resumed = restarted.claim_deliveries(now + 1, lease, 10).await.unwrap();
    assert_eq!(resumed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![claimed_by_killed[0].id.as_str()]);

    // Another node's start leaves both live claims alone.
    let other = referral_gateway::store::open(&on_node("node-c")).await.unwrap();
    assert_eq!(other.release_earlier_claims(now + 2).await.unwrap(), 0);
    assert!(other.claim_deliveries(now + 2, lease, 10).await.unwrap().is_empty());
    // A process never takes back its own live claims.
    assert_eq!(replica.release_earlier_claims(now + 3).await.unwrap(), 0, "node-b's own process holds its claim");
}
