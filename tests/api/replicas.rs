//! Two replicas of the sending gateway and two of the receiving one, as
//! separate processes on one PostgreSQL (`operations.md` §3.4), deliver
//! every referral exactly once while one replica of each side is killed
//! (`kill -9`) and started again on its node mid-run.
//!
//! "Exactly once": Italy holds one referral per idempotency key (a
//! submission sent again to the other replica after a failure is the same
//! referral), one packet per referral, each with the Gambia's receipt and
//! recorded as delivered once; the Gambia holds exactly those packets, each
//! accepted once and screened once, available to IOM Banjul; both audit
//! chains, appended to by every replica, verify.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::replica_processes::{deliver, Outage, ReplicaFederation, Workload};

/// As many as the bench sends.
const REFERRALS: u64 = 3_000;

/// The log tails of every replica, for a failure's message.
fn log_tails(federation: &ReplicaFederation) -> String {
    let tails: Vec<String> = [&federation.ita, &federation.gmb]
        .iter()
        .flat_map(|side| side.replicas.iter())
        .map(|replica| format!("--- {}:\n{}", replica.node, replica.log_tail(20)))
        .collect();
    tails.join("\n")
}

/// One replica a side, IOM Banjul acknowledging each case at the Gambia's:
/// each acknowledgement reaches Italy as a `forwarded` status, once (and
/// the bench's acknowledging workload keeps working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_reach_the_sending_replica_once_each() {
    const CASES: u64 = 20;
    let prefix = format!("rgwtest_{}_replicas", std::process::id());
    let mut federation = ReplicaFederation::start(Path::new(env!("CARGO_BIN_EXE_referral-gateway")), 1, &prefix).await.unwrap();
    let workload = Workload { referrals: CASES, submitters: 4, outage: None, acknowledge: true };
    let delivered = match deliver(&mut federation, workload, Duration::from_secs(120)).await {
        Ok(delivered) => delivered,
        Err(error) => panic!("{error}\n{}", log_tails(&federation)),
    };
    assert!(delivered.acknowledged_after.is_some());
    let gmb = &federation.gmb;
    assert_eq!(gmb.count("SELECT count(*) FROM inbox WHERE packet_type = 'referral' AND state = 'acknowledged'").await.unwrap() as u64, CASES);
    let ita = &federation.ita;
    let forwarded = "SELECT count(DISTINCT referral_id) FROM referral_events WHERE status = 'forwarded'";
    crate::helpers::wait_for("every acknowledgement at Italy", Duration::from_secs(60), || async { ita.count(forwarded).await.unwrap() as u64 == CASES }).await;
    assert_eq!(ita.count("SELECT count(*) FROM referral_events WHERE status = 'forwarded'").await.unwrap() as u64, CASES, "a status recorded twice");
    federation.tear_down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_a_side_deliver_each_referral_once_though_one_of_each_is_killed() {
    // The suite's schema prefix: its sweep drops what a failed run leaves.
    let prefix = format!("rgwtest_{}_replicas", std::process::id());
    let mut federation = ReplicaFederation::start(Path::new(env!("CARGO_BIN_EXE_referral-gateway")), 2, &prefix).await.unwrap();
    let outage = Outage { kill_after: REFERRALS / 3, restart_after: REFERRALS * 2 / 3 };
    let workload = Workload { referrals: REFERRALS, submitters: 8, outage: Some(outage), acknowledge: false };
    let delivered = match deliver(&mut federation, workload, Duration::from_secs(300)).await {
        Ok(delivered) => delivered,
        Err(error) => panic!("{error}\n{}", log_tails(&federation)),
    };
    let at_the_kill = delivered.at_the_kill.clone().unwrap();
    eprintln!(
        "{REFERRALS} referrals through 2+2 replicas, one of each side killed and restarted: delivered in {:.1} s, screened in {:.1} s; \
         {} submissions sent again; at the kill {} held {} claims, and the Gambian replica killed had taken {} connections",
        delivered.delivered_after.as_secs_f64(),
        delivered.screened_after.as_secs_f64(),
        delivered.resubmitted,
        at_the_kill.ita_node,
        at_the_kill.ita_claims,
        at_the_kill.gmb_connections,
    );

    // The outage hit work in progress, and the replicas came back.
    assert!(at_the_kill.gmb_connections > 0, "the Gambian replica killed had received nothing");
    for side in [&mut federation.ita, &mut federation.gmb] {
        for replica in &mut side.replicas {
            let exited = replica.exit_status();
            assert!(exited.is_none() && replica.is_running(), "{} is not running: {exited:?}\n{}", replica.node, replica.log_tail(20));
        }
        let restarted = side.replicas.last().unwrap();
        assert_eq!(restarted.logged("gateway listening"), 2, "{} was not started again", restarted.node);
    }
    // Claims the killed Italian replica held are taken back by its successor on the node.
    if at_the_kill.ita_claims > 0 {
        let restarted = federation.ita.replicas.last().unwrap();
        assert_eq!(restarted.logged("claims of this node's earlier process taken back"), 1, "{}", restarted.log_tail(20));
    }
    let (ita, gmb) = (&federation.ita, &federation.gmb);

    // Italy: one referral per submission, each sent as one packet with a receipt, recorded as delivered once.
    assert_eq!(delivered.referral_ids.len() as u64, REFERRALS, "a submission went unanswered");
    let answered: BTreeSet<String> = delivered.referral_ids.values().cloned().collect();
    assert_eq!(answered.len() as u64, REFERRALS, "two idempotency keys were answered with one referral");
    let stored: BTreeSet<String> = ita.texts("SELECT id FROM referrals").await.unwrap().into_iter().collect();
    assert_eq!(stored, answered, "the referrals stored are not those answered (a key made two)");
    let sent = ita
        .texts("SELECT packet_id FROM outbox WHERE packet_type = 'referral' AND state = 'delivered' AND receipt IS NOT NULL ORDER BY packet_id")
        .await
        .unwrap();
    assert_eq!(sent.len() as u64, REFERRALS);
    assert_eq!(ita.count("SELECT count(*) FROM outbox WHERE packet_type = 'referral'").await.unwrap() as u64, REFERRALS);
    let delivered_events = ita.count("SELECT count(*) FROM referral_events WHERE status = 'delivered'").await.unwrap();
    assert_eq!(delivered_events as u64, REFERRALS, "a referral recorded as delivered twice (or not at all)");
    let distinct = ita.count("SELECT count(DISTINCT referral_id) FROM referral_events WHERE status = 'delivered'").await.unwrap();
    assert_eq!(distinct as u64, REFERRALS);

    // The Gambia: exactly those packets, each accepted once and screened once,
    // whichever replica took or screened it (a packet sent again after a kill
    // is audited as a duplicate).
    let received = gmb.texts("SELECT packet_id FROM inbox WHERE packet_type = 'referral' ORDER BY packet_id").await.unwrap();
    assert_eq!(received, sent, "the Gambia holds another set of packets than Italy sent");
    let accepted = gmb.count("SELECT count(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'accepted'").await.unwrap();
    assert_eq!(accepted as u64, REFERRALS, "packets accepted as new");
    // A screening's audit entry names the packet.
    let screened = gmb
        .texts("SELECT referral_id FROM audit_log WHERE action = 'packet.screen' AND outcome = 'available' ORDER BY referral_id")
        .await
        .unwrap();
    assert_eq!(screened, sent, "a packet screened twice, or not at all");

    // Both chains, which every replica appended to (the killed ones mid-run), verify.
    for side in [ita, gmb] {
        let verified = federation.audit_verify(side).unwrap();
        assert_eq!(
            verified.status.code(),
            Some(0),
            "{}: {}{}",
            side.schema,
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
    }
    federation.tear_down().await.unwrap();
}
