//! Replicas on one PostgreSQL (issue 23 §4): the release binary as separate
//! processes, Italy's replicas sending to the Gambia's through TCP
//! balancers (`tests/common/replicas.rs`). Reports referrals per second
//! from the first submission until Italy holds every receipt, with one and
//! with two replicas per side; and, with IOM Banjul acknowledging every
//! case (a `forwarded` status travels back, as in the federation bench),
//! until every case is acknowledged. The four workloads are alternated
//! `rounds` times in one run (the order reversed each round), then one more
//! run has two per side while one replica of each is killed and restarted.
//! Every run checks one referral per key and the same set of packets on
//! both sides (`tests/api/replicas.rs` checks more).
//!
//! On one machine the replicas share its cores with PostgreSQL, the bench's
//! clients and the balancers: the ratio of two to one measures contention
//! there, not scaling across machines.
//!
//! `cargo bench --bench replicas [-- rounds=N]`. Not run by `cargo test`:
//! `tests/api/replicas.rs` runs the same federation (debug build) with the
//! outage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../tests/common/replicas.rs"]
mod replicas;

use std::path::Path;
use std::time::Duration;

use replicas::{deliver, BoxError, Delivered, Outage, ReplicaFederation, Side, Workload};

const REFERRALS: u64 = 3_000;
const SUBMITTERS: usize = 16;

/// The tables of the gateway's schema and of its case keys'.
const SCHEMA_TABLES: &str = "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                             WHERE n.nspname IN (current_schema(), current_schema() || '_case_keys') AND c.relkind = 'r'";

/// Referrals per second until the end the workload times: every case
/// acknowledged with a recipient, every receipt at Italy without.
async fn run(per_side: usize, outage: Option<Outage>, acknowledge: bool) -> Result<f64, BoxError> {
    let prefix = format!("rgwbench_replicas_{}", std::process::id());
    let mut federation = ReplicaFederation::start(Path::new(env!("CARGO_BIN_EXE_referral-gateway")), per_side, &prefix).await?;
    let workload = Workload { referrals: REFERRALS, submitters: SUBMITTERS, outage, acknowledge };
    let outcome = deliver(&mut federation, workload, Duration::from_secs(900)).await;
    let checked = match &outcome {
        Ok(delivered) => check(&federation, delivered).await,
        Err(_) => Ok(String::new()),
    };
    // Peak resident memory of each replica (a restarted one: since its restart).
    let peaks: Vec<String> = [&federation.ita, &federation.gmb]
        .iter()
        .flat_map(|side| side.replicas.iter())
        .map(|replica| format!("{} {} MiB", replica.node, replica.peak_rss_kib().map_or("?".to_owned(), |kib| (kib / 1024).to_string())))
        .collect();
    // How the Gambian balancer spread Italy's connections.
    let spread: Vec<String> = federation
        .gmb
        .replicas
        .iter()
        .filter_map(|replica| replica.federation.map(|addr| format!("{} {}", replica.node, federation.gmb.balancer.connections_to(addr))))
        .collect();
    federation.tear_down().await?;
    let delivered = outcome?;
    let sizes = checked?;
    let rate = |elapsed: Duration| REFERRALS as f64 / elapsed.as_secs_f64();
    let acknowledged = delivered.acknowledged_after.map_or(String::new(), |after| format!(", acknowledged in {:.1} s = {:.0}/s", after.as_secs_f64(), rate(after)));
    println!(
        "{per_side} replica(s) per side{}{}: {REFERRALS} referrals delivered in {:.1} s = {:.0}/s, screened in {:.1} s = {:.0}/s{acknowledged}; \
         {} submissions sent again; {sizes}; peak RSS: {}; connections to the Gambian replicas now running: {}",
        if acknowledge { ", IOM Banjul acknowledging" } else { "" },
        if outage.is_some() { ", one of each killed and restarted" } else { "" },
        delivered.delivered_after.as_secs_f64(),
        rate(delivered.delivered_after),
        delivered.screened_after.as_secs_f64(),
        rate(delivered.screened_after),
        delivered.resubmitted,
        peaks.join(", "),
        spread.join(", "),
    );
    Ok(rate(delivered.acknowledged_after.unwrap_or(delivered.delivered_after)))
}

/// One referral per key, the same packets on both sides; then each side's database size.
async fn check(federation: &ReplicaFederation, delivered: &Delivered) -> Result<String, BoxError> {
    let answered: std::collections::BTreeSet<&String> = delivered.referral_ids.values().collect();
    let stored = federation.ita.count("SELECT count(*) FROM referrals").await?;
    let sent = federation.ita.texts("SELECT packet_id FROM outbox WHERE packet_type = 'referral' ORDER BY packet_id").await?;
    let received = federation.gmb.texts("SELECT packet_id FROM inbox WHERE packet_type = 'referral' ORDER BY packet_id").await?;
    if answered.len() as u64 != REFERRALS || stored as u64 != REFERRALS || sent.len() as u64 != REFERRALS || received != sent {
        return Err(format!(
            "{} referral ids answered, {stored} stored, {} packets sent, {} received, the same set: {}",
            answered.len(),
            sent.len(),
            received.len(),
            received == sent
        )
        .into());
    }
    let (ita, gmb) = (per_referral(&federation.ita).await?, per_referral(&federation.gmb).await?);
    Ok(format!(
        "database per referral (as left, then live after VACUUM FULL): sender {:.1} then {:.1} KiB, receiver {:.1} then {:.1} KiB",
        ita.0, ita.1, gmb.0, gmb.1
    ))
}

/// The side's size per referral as the run left it, and once `VACUUM FULL`
/// has given back the space of rows updated or deleted (a payload blanked
/// after delivery, say).
async fn per_referral(side: &Side) -> Result<(f64, f64), BoxError> {
    // Tables with their indexes and TOAST.
    let bytes = format!("SELECT sum(pg_total_relation_size(c.oid))::bigint {SCHEMA_TABLES}");
    let as_left = side.count(&bytes).await?;
    for vacuum in side.texts(&format!("SELECT format('VACUUM FULL %I.%I', n.nspname, c.relname) {SCHEMA_TABLES}")).await? {
        side.execute(&vacuum).await?;
    }
    let live = side.count(&bytes).await?;
    let kib = |bytes: i64| bytes as f64 / REFERRALS as f64 / 1024.0;
    Ok((kib(as_left), kib(live)))
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.iter().find_map(|a| a.strip_prefix("rounds=")) {
        Some(n) => n.parse::<usize>()?.max(1),
        None => 1,
    };
    println!("{} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let workloads: [(usize, bool); 4] = [(1, false), (2, false), (1, true), (2, true)];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for round in 0..rounds {
        // Forward in even rounds, backward in odd ones: each pair swaps order every round.
        for k in 0..workloads.len() {
            let index = if round % 2 == 0 { k } else { workloads.len() - 1 - k };
            let (per_side, acknowledge) = workloads[index];
            rates[index].push(runtime.block_on(run(per_side, None, acknowledge))?);
        }
    }
    let outage = Outage { kill_after: REFERRALS / 3, restart_after: REFERRALS * 2 / 3 };
    runtime.block_on(run(2, Some(outage), false))?;
    let mut medians = Vec::new();
    for ((per_side, acknowledge), mut runs) in workloads.into_iter().zip(rates) {
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        medians.push(median);
        let what = if acknowledge { "until acknowledged" } else { "until delivered" };
        println!("median of {rounds}, {per_side} replica(s) per side, {what}: {median:.0}/s");
    }
    println!("two per side against one: {:.2} until delivered, {:.2} until acknowledged", medians[1] / medians[0], medians[3] / medians[2]);
    Ok(())
}
