//! Proving the shipped policy set (`policy prove config/policies`): the
//! whole proof, solver start included. Target (issue 19): median of 5 under
//! 10 s on the CI machine.
//!
//! Run: `CVC5_PYTHON=target/cvc5-venv/bin/python cargo bench --bench policy`
//! (or `CVC5=<a cvc5 program>`; see docs/policy-guide.md §7).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{Duration, Instant};

use referral_gateway::policy_files;
use referral_gateway::policy_proofs::{prove, SolverCommand, SHIPPED_BUILTIN_RULES};

const ROUNDS: usize = 5;

fn main() {
    let policy = policy_files::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")).unwrap();
    let dpo = policy.dpo_policy_set();
    let solver = SolverCommand::from_environment();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut times: Vec<Duration> = Vec::new();
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let report = runtime.block_on(prove(SHIPPED_BUILTIN_RULES, &dpo, &solver)).unwrap();
        let took = started.elapsed();
        assert!(report.all_hold(), "{report}");
        println!("round {round}: {} properties proved in {:.3} s", report.outcomes.len(), took.as_secs_f64());
        times.push(took);
    }
    times.sort();
    let median = times[ROUNDS / 2];
    println!("policy prove, shipped set ({solver}): median of {ROUNDS} {:.3} s (target under 10 s)", median.as_secs_f64());
    assert!(median < Duration::from_secs(10), "over the 10 s target");
}
