//! Matching answers (issue 22 §2): a responding gateway must take as long
//! to answer whether the asker may see every open search or none, so that
//! "not found" and "not allowed" cannot be told apart by time either.
//!
//!   cargo bench --bench matching            # both backends
//!   cargo bench --bench matching -- sqlite  # one
//!
//! Italy's gateway holds 64 family-tracing searches, each consented for the
//! Red Cross in Nigeria. The same query (520 blinded elements) is answered,
//! in turn, for the Nigerian Red Cross (every search shown: a tracing
//! service the consent and the shipped policy allow) and for NAPTIP (none
//! shown: not a tracing service), 15 times each, interleaved so that the
//! machine's drift falls on both alike. What is compared is the ratio of
//! the medians, measured in the same run. Under `cargo test` it answers 8
//! searches twice each and checks only that the answers have the same
//! shape.

#![allow(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

#[path = "support/gateway.rs"]
mod support;

use referral_gateway::app::matching::{MatchAnswer, MatchQuery};
use referral_gateway::crypto::match_function::Asking;
use referral_gateway::domain::match_index::QUERY_SLOTS;
use referral_gateway::domain::matching::MatchKey;
use referral_gateway::domain::{CountryCode, OrgId};
use support::{shut_down, start, Backend};

const NAMES: [&str; 8] = ["Chidi", "Emeka", "Obinna", "Ifeanyi", "Tunde", "Kelechi", "Uche", "Nnamdi"];
const FAMILIES: [&str; 8] = ["Okafor", "Nwosu", "Eze", "Okeke", "Adeyemi", "Obi", "Ibe", "Chukwu"];

/// The n-th boy's search for his mother, consented for the Red Cross in Nigeria.
fn search(n: usize) -> serde_json::Value {
    let (given, family) = (NAMES[n % 8], FAMILIES[(n / 8) % 8]);
    serde_json::json!({
        "idempotency_key": format!("bench-match-{n:05}"),
        "purpose": "family_tracing",
        "destination": "nga-red-cross",
        "subject_ref": format!("BENCH-{n:05}"),
        "case": {
            "identity": { "given_names": given, "family_name": family, "sex": "male", "date_of_birth": format!("{}-03-04", 2008 + n % 8) },
            "family": { "members": [{ "relationship": "mother", "given_names": "Grace", "family_name": family }] }
        },
        "consent": {
            "given_by": { "type": "guardian", "role": "appointed_guardian", "organisation": "Tutore volontario, Roma" },
            "method": "written", "given_at": "2026-11-10T10:00:00Z",
            "scopes": [{ "purposes": ["family_tracing"], "categories": ["identity", "family"], "recipients": [{ "kind": "red_cross_red_crescent", "country": "NGA" }], "valid_until": "2027-11-10T00:00:00Z" }]
        }
    })
}

fn query(asking_org: &str) -> Result<MatchQuery, Box<dyn std::error::Error>> {
    let keys: Vec<MatchKey> = (0..QUERY_SLOTS).map(|n| u8::try_from(n % 251).map(|byte| MatchKey::filler([byte; 32]))).collect::<Result<_, _>>()?;
    let (_, blinded) = Asking::blind(keys)?;
    Ok(MatchQuery { asking_org: OrgId::parse(asking_org)?, blinded: blinded.iter().map(|b| referral_gateway::hex::encode(b)).collect() })
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// How many entries and how long every field: what an observer of the answer sees.
fn shape(answer: &MatchAnswer) -> Vec<usize> {
    answer.entries.iter().flat_map(|e| std::iter::once(e.handle.len()).chain(e.subject.iter().map(String::len)).chain(e.sought.iter().flatten().map(String::len))).collect()
}

async fn run(backend: Backend, full: bool) -> Result<(), Box<dyn std::error::Error>> {
    let (searches, rounds) = if full { (64, 15) } else { (8, 2) };
    let gateway = start(backend, &[("ita-child-protection", "submitter")]).await?;
    let url = format!("{}/v1/referrals", gateway.app.base_url().replace("127.0.0.1", "localhost"));
    for n in 0..searches {
        let response = gateway.clients[0].post(&url).json(&search(n)).send().await?;
        if response.status().as_u16() != 202 {
            return Err(format!("search {n} answered {}", response.status()).into());
        }
    }
    let nigeria = CountryCode::parse("NGA")?;
    let (shown, withheld) = (query("nga-red-cross")?, query("nga-naptip")?);
    let (mut all, mut none) = (Vec::new(), Vec::new());
    let (mut first_all, mut first_none) = (None, None);
    for _ in 0..rounds {
        let started = Instant::now();
        let answer = gateway.app.gateway().answer_match_query(nigeria, shown.clone()).await?;
        all.push(started.elapsed());
        first_all.get_or_insert(answer);
        let started = Instant::now();
        let answer = gateway.app.gateway().answer_match_query(nigeria, withheld.clone()).await?;
        none.push(started.elapsed());
        first_none.get_or_insert(answer);
    }
    let (first_all, first_none) = (first_all.ok_or("no answer")?, first_none.ok_or("no answer")?);
    if shape(&first_all) != shape(&first_none) {
        return Err("answers for every search shown and for none differ in shape".into());
    }
    let (all, none) = (median(all), median(none));
    println!(
        "{backend:?}: {searches} searches, {} entries; median answer, every search shown {all:.1?}, none shown {none:.1?}; ratio {:.3}",
        first_all.entries.len(),
        all.as_secs_f64() / none.as_secs_f64()
    );
    shut_down(gateway).await;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::on_each_backend(run)
}
