//! Replicas on one PostgreSQL (issue 23 §4): the release binary as separate
//! processes, Italy's replicas sending to the Gambia's through TCP
//! balancers (`tests/common/replicas.rs`). Reports referrals per second
//! from the first submission until every one is delivered, with one and
//! with two replicas per side, alternated `rounds` times in one run, then
//! once with two per side while one replica of each is killed and
//! restarted. Each run checks that every referral was delivered exactly
//! once.
//!
//! `cargo bench --bench replicas [-- rounds=N]`. Not run by `cargo test`:
//! `tests/api/replicas.rs` runs the same federation (debug build) with the
//! outage and checks more.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../tests/common/replicas.rs"]
mod replicas;

use std::path::Path;
use std::time::Duration;

use replicas::{deliver, BoxError, Outage, ReplicaFederation};

const REFERRALS: u64 = 3_000;
const SUBMITTERS: usize = 16;

async fn run(per_side: usize, outage: Option<Outage>) -> Result<f64, BoxError> {
    let mut federation = ReplicaFederation::start(Path::new(env!("CARGO_BIN_EXE_referral-gateway")), per_side).await?;
    let outcome = deliver(&mut federation, REFERRALS, SUBMITTERS, outage, Duration::from_secs(900)).await;
    let checked = match &outcome {
        Ok(delivered) => check(&federation, delivered).await,
        Err(_) => Ok((0, 0)),
    };
    federation.tear_down().await?;
    let delivered = outcome?;
    let (sent_bytes, received_bytes) = checked?;
    let rate = REFERRALS as f64 / delivered.elapsed.as_secs_f64();
    println!(
        "{per_side} replica(s) per side{}: {REFERRALS} referrals in {:.1} s = {rate:.0}/s ({} submissions sent again); \
         database per referral: sender {:.1} KiB, receiver {:.1} KiB",
        if outage.is_some() { ", one of each killed and restarted" } else { "" },
        delivered.elapsed.as_secs_f64(),
        delivered.resubmitted,
        sent_bytes as f64 / REFERRALS as f64 / 1024.0,
        received_bytes as f64 / REFERRALS as f64 / 1024.0,
    );
    Ok(rate)
}

/// Tables, their indexes and TOAST, of the schema on the search path.
const SCHEMA_BYTES: &str = "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
                            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'";

/// One referral per key, one packet per referral, the same packets on both
/// sides; then each side's database size.
async fn check(federation: &ReplicaFederation, delivered: &replicas::Delivered) -> Result<(i64, i64), BoxError> {
    let sent = federation.texts(&federation.ita, "SELECT packet_id FROM outbox WHERE packet_type = 'referral' ORDER BY packet_id").await?;
    let received = federation.texts(&federation.gmb, "SELECT packet_id FROM inbox WHERE packet_type = 'referral' ORDER BY packet_id").await?;
    if delivered.referral_ids.len() as u64 != REFERRALS || sent.len() as u64 != REFERRALS || received != sent {
        return Err(format!("{} referral ids, {} packets sent, {} received, same set: {}", delivered.referral_ids.len(), sent.len(), received.len(), received == sent).into());
    }
    Ok((federation.count(&federation.ita, SCHEMA_BYTES).await?, federation.count(&federation.gmb, SCHEMA_BYTES).await?))
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds = match args.iter().find_map(|a| a.strip_prefix("rounds=")) {
        Some(n) => n.parse::<usize>()?.max(1),
        None => 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        one.push(runtime.block_on(run(1, None))?);
        two.push(runtime.block_on(run(2, None))?);
    }
    let outage = Outage { kill_after: REFERRALS / 3, restart_after: REFERRALS * 2 / 3 };
    runtime.block_on(run(2, Some(outage)))?;
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (one, two) = (median(&mut one), median(&mut two));
    println!("median of {rounds}: one replica per side {one:.0}/s, two {two:.0}/s, ratio two/one {:.2}", two / one);
    Ok(())
}
