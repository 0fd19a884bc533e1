//! The impact replay of a policy upload (issue 19 §2): `PUT /v1/policies`
//! over HTTPS after 10,000 recorded sending decisions, so that the upload
//! replays all of them (read, opened under their case keys, decided under
//! the version in force and the new one). Target: median of 5 uploads
//! under 10 s, on each backend.
//!
//!   cargo bench --bench impact            # both backends
//!   cargo bench --bench impact -- sqlite  # one
//!
//! The decisions are the six scenario referrals in turn (allowed and
//! denied, to their own destinations). The upload adds one forbid on
//! health data, so that some decisions change. No solver is configured:
//! the proofs are benchmarked apart (`--bench policy`). Under `cargo test`
//! it replays 60 decisions once per backend, so that it cannot rot.

#![allow(clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/gateway.rs"]
mod support;

use support::{repo, shut_down, start, Backend, Gateway};

const ROUNDS: usize = 5;
const TARGET: Duration = Duration::from_secs(10);
const FIXTURES: [&str; 6] = [
    "dual_national_fear",
    "rejected_asylum_avr",
    "returnee_hiv_reintegration",
    "separated_child_tracing",
    "trafficking_victim_reintegration",
    "unaccompanied_girl_tracing",
];
const SUBMITTER: usize = 0;
const DPO: usize = 1;

/// Each scenario referral, with placeholders for a unique key and subject.
fn templates() -> Result<Vec<String>, Box<dyn std::error::Error>> {
    FIXTURES
        .iter()
        .map(|name| {
            let mut referral: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo(&format!("tests/fixtures/referrals/{name}.json")))?)?;
            let fields = referral.as_object_mut().ok_or("a fixture is not an object")?;
            fields.insert("idempotency_key".to_owned(), serde_json::json!("__KEY__"));
            fields.insert("subject_ref".to_owned(), serde_json::json!("__SUBJECT__"));
            Ok(referral.to_string())
        })
        .collect()
}

/// Submits `count` referrals from 16 clients at once; answers how many were allowed and denied.
async fn record_decisions(gateway: &Arc<Gateway>, count: u64) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let url = format!("{}/v1/referrals", gateway.app.base_url().replace("127.0.0.1", "localhost"));
    let templates = Arc::new(templates()?);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (gateway, templates, next, url) = (Arc::clone(gateway), Arc::clone(&templates), Arc::clone(&next), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut allowed, mut denied) = (0u64, 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, String>((allowed, denied));
                }
                let template = &templates[(n % templates.len() as u64) as usize];
                let body = template.replace("__KEY__", &format!("impact-{n:010}")).replace("__SUBJECT__", &format!("IMPACT-{n:08}"));
                let response = gateway.clients[SUBMITTER]
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status().as_u16() {
                    202 => allowed += 1,
                    422 => denied += 1,
                    status => return Err(format!("submission answered {status}")),
                }
            }
        }));
    }
    let (mut allowed, mut denied) = (0, 0);
    for task in tasks {
        let (a, d) = task.await??;
        allowed += a;
        denied += d;
    }
    Ok((allowed, denied))
}

/// One upload of the shipped policies plus a forbid on health data: its time and recorded impact.
async fn upload(gateway: &Gateway) -> Result<(Duration, serde_json::Value), Box<dyn std::error::Error>> {
    let mut files = referral_gateway::policy_files::read_upload(std::path::Path::new(&repo("config/policies")))?;
    // The shipped tests expect health to go: without them, the upload is only replayed.
    files.retain(|name, _| !name.starts_with("tests/"));
    files.insert("30-no-health.cedar".to_owned(), "@id(\"no_health\")\nforbid (principal, action, resource == Category::\"health\");\n".to_owned());
    let url = format!("{}/v1/policies", gateway.app.base_url().replace("127.0.0.1", "localhost"));
    let started = Instant::now();
    let response = gateway.clients[DPO].put(&url).json(&serde_json::json!({ "files": files })).send().await?;
    let took = started.elapsed();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await?;
    if status != 201 {
        return Err(format!("upload answered {status}: {body}").into());
    }
    Ok((took, body["checks"]["impact"].clone()))
}

async fn run(backend: Backend, full: bool) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Arc::new(start(backend, &[("ita-iom-rome", "submitter"), ("ita-nrm", "dpo")]).await?);
    let count = if full { 10_000 } else { 60 };
    let started = Instant::now();
    let (allowed, denied) = record_decisions(&gateway, count).await?;
    println!("{backend:?}: {count} decisions recorded ({allowed} allowed, {denied} denied) in {:.1} s", started.elapsed().as_secs_f64());
    let rounds = if full { ROUNDS } else { 1 };
    let mut times = Vec::new();
    for round in 1..=rounds {
        let (took, impact) = upload(&gateway).await?;
        if impact["replayed"] != serde_json::json!(count) || impact["changed"]["decisions"].as_u64().unwrap_or(0) == 0 {
            return Err(format!("round {round}: not every decision replayed, or none changed: {impact}").into());
        }
        println!("{backend:?} round {round}: {count} decisions replayed in {:.3} s; changed {}", took.as_secs_f64(), impact["changed"]);
        times.push(took);
    }
    times.sort();
    let median = times[rounds / 2];
    println!("{backend:?}: upload with impact replay over {count} decisions, median of {rounds} {:.3} s (target under 10 s)", median.as_secs_f64());
    shut_down(gateway).await;
    if full && median >= TARGET {
        return Err(format!("{backend:?}: over the 10 s target").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::on_each_backend(run)
}
