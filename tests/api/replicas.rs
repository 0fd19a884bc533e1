//! Two replicas of the sending gateway and two of the receiving one, as
//! separate processes on one PostgreSQL (`operations.md` §3.4), deliver
//! every referral exactly once while one replica of each side is killed
//! (`kill -9`) and started again on its node mid-run.
//!
//! "Exactly once": Italy holds one referral per idempotency key (a
//! submission sent again to the other replica after a failure is the same
//! referral), one packet per referral, each with the Gambia's receipt; the
//! Gambia holds exactly those packets, each once, each screened and
//! available to IOM Banjul; both audit chains, appended to by every
//! replica, verify.

use std::path::Path;
use std::time::Duration;

use crate::replica_processes::{deliver, Outage, ReplicaFederation};

/// As many as the bench sends.
const REFERRALS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_a_side_deliver_each_referral_once_though_one_of_each_is_killed() {
    let mut federation = ReplicaFederation::start(Path::new(env!("CARGO_BIN_EXE_referral-gateway")), 2).await.unwrap();
    let outage = Outage { kill_after: REFERRALS / 3, restart_after: REFERRALS * 2 / 3 };
    let delivered = match deliver(&mut federation, REFERRALS, 8, Some(outage), Duration::from_secs(300)).await {
        Ok(delivered) => delivered,
        Err(error) => {
            let tails: Vec<String> = [&federation.ita, &federation.gmb]
                .iter()
                .flat_map(|side| side.replicas.iter())
                .map(|replica| format!("--- {}:\n{}", replica.node, replica.log_tail(20)))
                .collect();
            panic!("{error}\n{}", tails.join("\n"));
        }
    };
    eprintln!(
        "{REFERRALS} referrals through 2+2 replicas, one of each side killed and restarted: {:.1} s, {} submissions sent again",
        delivered.elapsed.as_secs_f64(),
        delivered.resubmitted
    );
    let (ita, gmb) = (&federation.ita, &federation.gmb);

    // The outage happened: each killed replica started twice on its node.
    for side in [ita, gmb] {
        let restarted = side.replicas.last().unwrap();
        assert_eq!(restarted.logged("gateway listening"), 2, "{} was not started again", restarted.node);
        assert!(side.replicas.iter().all(|r| r.is_running()));
    }

    // Italy: one referral per submission, each sent as one packet with a receipt.
    assert_eq!(delivered.referral_ids.len() as u64, REFERRALS, "an idempotency key answered with two referral ids");
    assert_eq!(federation.count(ita, "SELECT count(*) FROM referrals").await.unwrap() as u64, REFERRALS);
    let sent = federation
        .texts(ita, "SELECT packet_id FROM outbox WHERE packet_type = 'referral' AND state = 'delivered' AND receipt IS NOT NULL ORDER BY packet_id")
        .await
        .unwrap();
    assert_eq!(sent.len() as u64, REFERRALS);
    assert_eq!(federation.count(ita, "SELECT count(*) FROM outbox WHERE packet_type = 'referral'").await.unwrap() as u64, REFERRALS);
    let delivered_once = "SELECT count(*) FROM referral_events WHERE status = 'delivered'";
    assert_eq!(federation.count(ita, delivered_once).await.unwrap() as u64, REFERRALS, "a referral recorded as delivered twice (or not at all)");
    let distinct = "SELECT count(DISTINCT referral_id) FROM referral_events WHERE status = 'delivered'";
    assert_eq!(federation.count(ita, distinct).await.unwrap() as u64, REFERRALS);
    let stored_ids = federation.texts(ita, "SELECT id FROM referrals ORDER BY id").await.unwrap();
    assert_eq!(stored_ids.into_iter().collect::<std::collections::BTreeSet<_>>(), delivered.referral_ids, "the answers name the stored referrals");

    // The Gambia: exactly those packets, each once, each screened for IOM Banjul.
    let received = federation.texts(gmb, "SELECT packet_id FROM inbox WHERE packet_type = 'referral' ORDER BY packet_id").await.unwrap();
    assert_eq!(received, sent, "the Gambia holds another set of packets than Italy sent");
    crate::helpers::wait_for("every received referral screened", Duration::from_secs(120), || async {
        federation.count(gmb, "SELECT count(*) FROM inbox WHERE packet_type = 'referral' AND state = 'available'").await.unwrap() as u64 == REFERRALS
    })
    .await;
    // Received and screened once each, whichever replica took the packet or
    // screened it (a packet sent again after a kill is audited as a duplicate).
    for (action, outcome) in [("packet.receive", "accepted"), ("packet.screen", "available")] {
        let entries = format!("SELECT count(*) FROM audit_log WHERE action = '{action}' AND outcome = '{outcome}'");
        assert_eq!(federation.count(gmb, &entries).await.unwrap() as u64, REFERRALS, "{action} {outcome}");
    }
    let screened = "SELECT count(DISTINCT referral_id) FROM audit_log WHERE action = 'packet.screen' AND outcome = 'available'";
    assert_eq!(federation.count(gmb, screened).await.unwrap() as u64, REFERRALS);

    // Both chains, which every replica appended to (the killed ones mid-run), verify.
    assert!(federation.audit_verifies(ita).unwrap(), "Italy's audit chain does not verify");
    assert!(federation.audit_verifies(gmb).unwrap(), "the Gambia's audit chain does not verify");
    federation.tear_down().await.unwrap();
}
