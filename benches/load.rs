//! Load benchmark: `POST /v1/referrals` against a real server (HTTPS with a
//! client certificate), accepted and durably stored, on SQLite and on
//! PostgreSQL.
//!
//!   cargo bench --bench load            # full run (about a minute per backend)
//!   cargo bench --bench load -- sqlite  # one backend
//!
//! Closed loop at 2 to 64 concurrent clients (throughput), then an open loop
//! at 200 requests/s (latency percentiles). Client and server share the
//! machine's cores. Under `cargo test` it runs a few requests per backend
//! only, so that it cannot rot.

#![allow(clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/gateway.rs"]
mod support;

use support::{repo, shut_down, start, Backend, Gateway};

/// The AVR fixture with placeholders for a unique key and subject per request.
fn template() -> Result<String, Box<dyn std::error::Error>> {
    let mut referral: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo("tests/fixtures/referrals/rejected_asylum_avr.json"))?)?;
    let fields = referral.as_object_mut().ok_or("the fixture is not an object")?;
    fields.insert("idempotency_key".to_owned(), serde_json::json!("__KEY__"));
    fields.insert("subject_ref".to_owned(), serde_json::json!("__SUBJECT__"));
    Ok(referral.to_string())
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);

async fn submit_one(gateway: &Gateway, url: &str, template: &str) -> Result<Duration, String> {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let body = template.replace("__KEY__", &format!("bench-{}-{n:010}", std::process::id())).replace("__SUBJECT__", &format!("BENCH-{n:08}"));
    let started = Instant::now();
    let response = gateway.clients[0]
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    if status != 202 {
        return Err(format!("status {status}"));
    }
    Ok(started.elapsed())
}

/// `concurrency` clients submitting back to back for `length`: accepted per second.
async fn closed_loop(gateway: Arc<Gateway>, template: Arc<String>, concurrency: usize, length: Duration) -> (f64, Vec<Duration>) {
    let url = format!("{}/v1/referrals", gateway.app.base_url().replace("127.0.0.1", "localhost"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (gateway, template, url) = (Arc::clone(&gateway), Arc::clone(&template), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < length {
                match submit_one(&gateway, &url, &template).await {
                    Ok(latency) => latencies.push(latency),
                    Err(error) => {
                        FAILURES.fetch_add(1, Ordering::Relaxed);
                        eprintln!("request failed: {error}");
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    (latencies.len() as f64 / elapsed, latencies)
}

/// Requests started at a fixed rate, whatever the answers: latency under a steady load.
async fn open_loop(gateway: Arc<Gateway>, template: Arc<String>, rate: u64, length: Duration) -> Vec<Duration> {
    let url = format!("{}/v1/referrals", gateway.app.base_url().replace("127.0.0.1", "localhost"));
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::new();
    while started.elapsed() < length {
        ticker.tick().await;
        let (gateway, template, url) = (Arc::clone(&gateway), Arc::clone(&template), url.clone());
        tasks.push(tokio::spawn(async move { submit_one(&gateway, &url, &template).await }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        if let Ok(Ok(latency)) = task.await {
            latencies.push(latency);
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0))
}

async fn run(backend: Backend, full: bool) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Arc::new(start(backend, &[("ita-iom-rome", "submitter")]).await?);
    let template = Arc::new(template()?);
    if !full {
        let (rate, latencies) = closed_loop(Arc::clone(&gateway), Arc::clone(&template), 2, Duration::from_millis(300)).await;
        let failures = FAILURES.load(Ordering::Relaxed);
        if latencies.is_empty() || failures > 0 {
            return Err(format!("{backend:?}: {} accepted, {failures} failed", latencies.len()).into());
        }
        println!("{backend:?}: smoke run, {} accepted ({rate:.0}/s, debug build)", latencies.len());
        shut_down(gateway).await;
        return Ok(());
    }
    // Warm-up: connections, caches, the first policy slices.
    let _ = closed_loop(Arc::clone(&gateway), Arc::clone(&template), 8, Duration::from_secs(2)).await;
    for concurrency in [2, 8, 16, 32, 64] {
        let (rate, latencies) = closed_loop(Arc::clone(&gateway), Arc::clone(&template), concurrency, Duration::from_secs(8)).await;
        println!("{backend:?} closed loop, {concurrency:>2} clients: {rate:>6.0} accepted/s; {}", summary(latencies));
    }
    let latencies = open_loop(Arc::clone(&gateway), Arc::clone(&template), 200, Duration::from_secs(15)).await;
    println!("{backend:?} open loop, 200/s for 15 s: {} accepted; {}", latencies.len(), summary(latencies));
    let stored = gateway.app.gateway().store.outbox_depth().await?;
    println!("{backend:?}: {stored} referrals in the outbox at the end");
    shut_down(gateway).await;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    support::on_each_backend(run)
}
