//! Replicas on one PostgreSQL (issue 23 §4): the release binary as separate
//! processes, Italy's replicas sending to the Gambia's through TCP
//! balancers (`tests/common/replicas.rs`). Reports referrals per second
//! from the first submission until Italy holds every receipt, and until the
//! Gambia has screened every referral, with one and with two replicas per
//! side, alternated `rounds` times in one run (the order swapped each
//! round), then once with two per side while one replica of each is killed
//! and restarted. Every run checks one referral per key and the same set of
//! packets on both sides (`tests/api/replicas.rs` checks more).
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

use replicas::{deliver, BoxError, Delivered, Outage, ReplicaFederation, Side};

const REFERRALS: u64 = 3_000;
const SUBMITTERS: usize = 16;

/// Tables, their indexes and TOAST, of the gateway's schema and its case keys' (not vacuumed).
const SCHEMA_BYTES: &str = "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
                            JOIN pg_namespace n ON n.oid = c.relnamespace \
                            WHERE n.nspname IN (current_schema(), current_schema() || '_case_keys') AND c.relkind = 'r'";

async fn run(per_side: usize, outage: Option<Outage>) -> Result<(f64, f64), BoxError> {
    let prefix = format!("rgwbench_replicas_{}", std::process::id());
    let mut federation = ReplicaFederation::start(Path::new(env!("CARGO_BIN_EXE_referral-gateway")), per_side, &prefix).await?;
    let outcome = deliver(&mut federation, REFERRALS, SUBMITTERS, outage, Duration::from_secs(900)).await;
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
    let delivered_rate = REFERRALS as f64 / delivered.delivered_after.as_secs_f64();
    let screened_rate = REFERRALS as f64 / delivered.screened_after.as_secs_f64();
    println!(
        "{per_side} replica(s) per side{}: {REFERRALS} referrals delivered in {:.1} s = {delivered_rate:.0}/s, screened in {:.1} s = {screened_rate:.0}/s; \
         {} submissions sent again; {sizes}; peak RSS: {}; connections to the Gambian replicas now running: {}",
        if outage.is_some() { ", one of each killed and restarted" } else { "" },
        delivered.delivered_after.as_secs_f64(),
        delivered.screened_after.as_secs_f64(),
        delivered.resubmitted,
        peaks.join(", "),
        spread.join(", "),
    );
    Ok((delivered_rate, screened_rate))
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
    Ok(format!("database per referral: sender {:.1} KiB, receiver {:.1} KiB", per_referral(&federation.ita).await?, per_referral(&federation.gmb).await?))
}

async fn per_referral(side: &Side) -> Result<f64, BoxError> {
    Ok(side.count(SCHEMA_BYTES).await? as f64 / REFERRALS as f64 / 1024.0)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.iter().find_map(|a| a.strip_prefix("rounds=")) {
        Some(n) => n.parse::<usize>()?.max(1),
        None => 1,
    };
    println!("{} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order: [usize; 2] = if round % 2 == 0 { [1, 2] } else { [2, 1] };
        for per_side in order {
            let rates = runtime.block_on(run(per_side, None))?;
            if per_side == 1 { one.push(rates) } else { two.push(rates) }
        }
    }
    let outage = Outage { kill_after: REFERRALS / 3, restart_after: REFERRALS * 2 / 3 };
    runtime.block_on(run(2, Some(outage)))?;
    let median = |values: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut picked: Vec<f64> = values.iter().map(pick).collect();
        picked.sort_by(f64::total_cmp);
        picked[picked.len() / 2]
    };
    for (what, pick) in [("delivered", (|r: &(f64, f64)| r.0) as fn(&(f64, f64)) -> f64), ("screened", |r: &(f64, f64)| r.1)] {
        let (one, two) = (median(&one, pick), median(&two, pick));
        println!("median of {rounds}, {what}: one replica per side {one:.0}/s, two {two:.0}/s, two/one {:.2}", two / one);
    }
    Ok(())
}
