//! decide + minimise (`decide_and_minimise`, what a gateway runs on submit) on realistic cases with the shipped default policy.
//! Target (issue 2): median under 50 µs per referral on the CI machine.
//!
//! Run: `cargo bench --bench decide`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use chrono::{TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use referral_gateway::directory::Directory;
use referral_gateway::domain::decide::decide_and_minimise;
use referral_gateway::domain::submission::ReferralSubmission;
use referral_gateway::domain::{CountryCode, OrgId};
use referral_gateway::policy_files;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

fn bench_decide_and_minimise(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let directory = Directory::parse(&read("config/directory.example.json")).unwrap();
    let policy = policy_files::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")).unwrap();
    let sender = CountryCode::parse("ITA").unwrap();

    // (fixture, recipient): an allow with health to a health provider, an
    // asylum-linked return to IOM, and a firewall deny.
    let cases = [
        ("returnee_hiv_reintegration", "nga-health-lagos"),
        ("rejected_asylum_avr", "gmb-iom-banjul"),
        ("rejected_asylum_avr", "gmb-immigration"),
    ];
    let mut group = c.benchmark_group("decide_and_minimise");
    for (fixture, to) in cases {
        let submission =
            ReferralSubmission::parse(&read(&format!("tests/fixtures/referrals/{fixture}.json")), now).unwrap();
        let recipient = directory.recipient(&OrgId::parse(to).unwrap()).unwrap();
        group.bench_function(format!("{fixture}->{to}"), |b| {
            b.iter(|| {
                decide_and_minimise(
                    black_box(&submission.case),
                    black_box(&submission.consent),
                    sender,
                    Some(black_box(&recipient)),
                    submission.purpose,
                    &policy,
                    now,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decide_and_minimise);
criterion_main!(benches);
