//! Soak benchmark: does a gateway's memory stay flat under sustained load?
//!
//! Two gateways run as separate `serve` processes, as an operator runs them:
//! Italy sends, the Gambia receives (demo setup: fresh keys, signed
//! directory, mutual TLS on loopback). An open loop submits
//! `rejected_asylum_avr` referrals to IOM Banjul at Italy's API at a fixed
//! rate; IOM Banjul tails its inbox at the Gambian API and acknowledges each
//! case, whose `forwarded` status travels back to Italy. Every sample reads
//! each process's resident set size (`VmRSS` in `/proc/<pid>/status`).
//!
//!   cargo bench --bench soak                    # both backends, 30 min each
//!   cargo bench --bench soak -- sqlite          # one backend
//!   SOAK_MINUTES=5 SOAK_RATE=100 cargo bench --bench soak -- postgres
//!
//! The run is bounded: it stops after `SOAK_MINUTES`, and a submission is
//! skipped (and counted) rather than queued when 256 are already in flight,
//! so that a gateway that cannot keep up shows as skipped requests, not as
//! the client's memory. It fails if a request fails, if anything is skipped,
//! or if an accepted referral is not acknowledged at the Gambian gateway
//! within a minute of the end.
//!
//! The report gives, per process, the RSS at the end of the warm-up (the
//! first sixth of the run, at least one sample), at the end, the highest
//! after warm-up, and the least-squares slope after warm-up in MB per 10
//! minutes. Under `cargo test` it runs two seconds per backend at a low
//! rate, so that it cannot rot, and checks only that everything accepted
//! was delivered and acknowledged.
//!
//! The children run on the machine's clock, as `serve` does; the bench reads
//! their time from the `Date` header of an answer (never the clock itself)
//! and moves the fixture's dates to it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use referral_gateway::demo::fixtures::{referral_as_of, written_at};
use referral_gateway::demo::setup::{self, DemoFiles};
use referral_gateway::domain::CountryCode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Longest wait for a child to start, or for the directory's second edition.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait, after the load, for the last accepted referral to be acknowledged.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Submissions in flight beyond which the next one is skipped.
const MAX_IN_FLIGHT: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    length: Duration,
    rate: u64,
    sample_every: Duration,
    /// Printed as they come (a full run), or only summed up (a smoke run).
    verbose: bool,
}

impl Plan {
    fn full() -> Result<Self, BoxError> {
        let number = |name: &str, default: u64| -> Result<u64, BoxError> {
            match std::env::var(name) {
                Ok(text) => text.parse().map_err(|_| format!("{name} must be a whole number").into()),
                Err(_) => Ok(default),
            }
        };
        let minutes = number("SOAK_MINUTES", 30)?;
        let rate = number("SOAK_RATE", 50)?;
        let sample = number("SOAK_SAMPLE_SECONDS", 30)?;
        if minutes == 0 || rate == 0 || sample == 0 {
            return Err("SOAK_MINUTES, SOAK_RATE and SOAK_SAMPLE_SECONDS must be at least 1".into());
        }
        Ok(Self { length: Duration::from_secs(minutes * 60), rate, sample_every: Duration::from_secs(sample), verbose: true })
    }

    fn smoke() -> Self {
        Self { length: Duration::from_secs(2), rate: 20, sample_every: Duration::from_secs(1), verbose: false }
    }
}

/// What a child's log tells the bench: its addresses and directory editions.
#[derive(Debug)]
enum Event {
    Listening(String),
    Federation(String),
    Edition(u64),
}

/// A `serve` child, killed if the bench fails before stopping it.
struct Process {
    country: CountryCode,
    child: Child,
    events: mpsc::Receiver<Event>,
    /// Log lines at warn or error, counted by message (or by the line, when not JSON).
    warnings: Arc<Mutex<BTreeMap<String, u64>>>,
    api: String,
    federation: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Process {
    fn spawn(files: &DemoFiles, country: CountryCode) -> Result<Self, BoxError> {
        let config = files.root.join(country.as_str().to_ascii_lowercase()).join("gateway.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RGW_LOG__FORMAT", "json")
            .env("RGW_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (sender, events) = mpsc::channel();
        let warnings = Arc::new(Mutex::new(BTreeMap::new()));
        let counted = Arc::clone(&warnings);
        let count = move |message: String| {
            if let Ok(mut counts) = counted.lock() {
                *counts.entry(message).or_insert(0u64) += 1;
            }
        };
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    count(line);
                    continue;
                };
                let field = |name: &str| event.get("fields").and_then(|fields| fields.get(name));
                let message = field("message").and_then(Value::as_str);
                if let Some(level @ ("WARN" | "ERROR")) = event.get("level").and_then(Value::as_str) {
                    count(format!("{level} {}", message.unwrap_or_default()));
                }
                let found = match message {
                    Some("gateway listening") => field("local_addr").and_then(Value::as_str).map(|a| Event::Listening(a.to_owned())),
                    Some("federation listener up") => field("addr").and_then(Value::as_str).map(|a| Event::Federation(a.to_owned())),
                    Some("directory edition in force") => field("serial").and_then(Value::as_u64).map(Event::Edition),
                    _ => None,
                };
                if let Some(found) = found {
                    let _ = sender.send(found);
                }
            }
        });
        let mut process = Self { country, child, events, warnings, api: String::new(), federation: String::new() };
        let started = Instant::now();
        while process.api.is_empty() || process.federation.is_empty() {
            let left = START_LIMIT.checked_sub(started.elapsed()).ok_or_else(|| format!("{country}: not listening after {START_LIMIT:?}"))?;
            match process.events.recv_timeout(left) {
                Ok(Event::Listening(addr)) => process.api = addr,
                Ok(Event::Federation(addr)) => process.federation = addr,
                Ok(Event::Edition(_)) => {}
                Err(_) => return Err(format!("{country}: exited or silent before listening").into()),
            }
        }
        Ok(process)
    }

    fn api_base(&self) -> String {
        format!("https://localhost:{}", self.api.rsplit(':').next().unwrap_or_default())
    }

    /// Waits until the child logs that directory edition `serial` is in force.
    fn await_edition(&self, serial: u64) -> Result<(), BoxError> {
        let started = Instant::now();
        loop {
            let left = START_LIMIT.checked_sub(started.elapsed()).ok_or_else(|| format!("{}: edition {serial} not in force", self.country))?;
            match self.events.recv_timeout(left) {
                Ok(Event::Edition(seen)) if seen >= serial => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(format!("{}: edition {serial} not in force", self.country).into()),
            }
        }
    }

    /// Resident set size in bytes, from `/proc`: in all, and its anonymous
    /// part (the heap; the rest is mapped files and shared memory, such as
    /// SQLite's WAL index).
    fn rss(&self) -> Result<Rss, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<u64, BoxError> {
            let line = status.lines().find(|l| l.starts_with(name)).ok_or_else(|| format!("no {name} line"))?;
            let kilobytes: u64 = line.split_whitespace().nth(1).ok_or("empty line")?.parse()?;
            Ok(kilobytes * 1024)
        };
        Ok(Rss { all: field("VmRSS:")?, anonymous: field("RssAnon:")? })
    }

    /// SIGTERM, then the exit status (killed after 30 s).
    fn stop(&mut self) -> Result<(), BoxError> {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() { Ok(()) } else { Err(format!("{}: exited with {status}", self.country).into()) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{}: did not stop within 30 s of SIGTERM", self.country).into())
    }
}

fn client(files: &DemoFiles, name: &str) -> Result<reqwest::Client, BoxError> {
    Ok(files.client_builder(name)?.pool_max_idle_per_host(64).build()?)
}

/// The child's time, from the `Date` header of its answer.
async fn childs_time(client: &reqwest::Client, base: &str) -> Result<DateTime<Utc>, BoxError> {
    let response = client.get(format!("{base}/healthz")).send().await?;
    let date = response.headers().get("date").ok_or("no Date header")?.to_str()?;
    Ok(DateTime::parse_from_rfc2822(date)?.with_timezone(&Utc))
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicU64,
    acknowledged: AtomicU64,
    /// Woken at every acknowledgement (the drain waits on it).
    acknowledgement: tokio::sync::Notify,
}

/// Submissions at `plan.rate` per second for `plan.length`, whatever the answers.
async fn load(client: reqwest::Client, base: String, template: Arc<String>, plan: Plan, counters: Arc<Counters>) {
    let url = format!("{base}/v1/referrals");
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / plan.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sequence = 0u64;
    while started.elapsed() < plan.length {
        ticker.tick().await;
        while tasks.try_join_next().is_some() {}
        if counters.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        sequence += 1;
        let body = template.replace("__KEY__", &format!("soak-{}-{sequence:010}", std::process::id())).replace("__SUBJECT__", &format!("SOAK-{sequence:08}"));
        let (client, url, counters) = (client.clone(), url.clone(), Arc::clone(&counters));
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let answer = client.post(&url).header("content-type", "application/json").body(body).send().await;
            let accepted = match answer {
                Ok(response) => response.status().as_u16() == 202 && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            let counter = if accepted { &counters.accepted } else { &counters.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// IOM Banjul: tails its inbox and acknowledges every case until `stop`.
async fn acknowledge(client: reqwest::Client, base: String, counters: Arc<Counters>, stop: Arc<AtomicBool>) -> Result<(), BoxError> {
    let mut cursor: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        // Tailing: the arrival order (the default; `due` is a worklist that reorders as cases move).
        let mut request = client.get(format!("{base}/v1/inbox")).query(&[("limit", "100"), ("order", "arrival")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let page: Value = request.send().await?.json().await?;
        if let Some(next) = page.get("next_cursor").and_then(Value::as_str) {
            cursor = Some(next.to_owned());
        }
        let items: Vec<String> = page
            .get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter(|i| i.get("state") == Some(&Value::from("available")))
                    .filter_map(|i| i.get("packet_id")?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        for packet_id in items {
            let response = client.post(format!("{base}/v1/inbox/{packet_id}/ack")).send().await?;
            if !response.status().is_success() {
                return Err(format!("ack answered {}", response.status()).into());
            }
            counters.acknowledged.fetch_add(1, Ordering::Relaxed);
            counters.acknowledgement.notify_waiters();
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Rss {
    all: u64,
    anonymous: u64,
}

struct Sample {
    at: Duration,
    accepted: u64,
    acknowledged: u64,
    rss: Vec<Rss>,
}

const MB: f64 = 1024.0 * 1024.0;

/// Least-squares slope of `points` (seconds, bytes), in MB per 10 minutes.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mean_x, mean_y) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance == 0.0 { 0.0 } else { covariance / variance * 600.0 / MB }
}

fn report(backend: Backend, processes: &[Process], samples: &[Sample], plan: Plan) {
    let warm_up = (plan.length / 6).max(plan.sample_every);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up).collect();
    println!("soak {backend:?}: {} min at {}/s, warm-up {} s, {} samples after it", plan.length.as_secs() / 60, plan.rate, warm_up.as_secs(), after.len());
    for (index, process) in processes.iter().enumerate() {
        for (what, part) in [("RSS", (|r: &Rss| r.all) as fn(&Rss) -> u64), ("anonymous RSS", |r: &Rss| r.anonymous)] {
            let mb = |sample: Option<&Sample>| sample.and_then(|s| s.rss.get(index)).map_or(f64::NAN, |r| part(r) as f64 / MB);
            let series: Vec<(f64, f64)> = after.iter().filter_map(|s| Some((s.at.as_secs_f64(), part(s.rss.get(index)?) as f64))).collect();
            let highest = series.iter().map(|p| p.1).fold(f64::NAN, f64::max) / MB;
            println!(
                "  {} {what}: {:.1} MB at start, {:.1} MB after warm-up, {:.1} MB at the end, highest after warm-up {highest:.1} MB, slope after warm-up {:+.2} MB per 10 min",
                process.country,
                mb(samples.first()),
                mb(after.first().copied()),
                mb(after.last().copied()),
                slope(&series)
            );
        }
    }
}

async fn run(backend: Backend, plan: Plan) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let prefix = format!("rgwsoak_{}", std::process::id());
    let schemas: Vec<String> = ["ita", "gmb"].iter().flat_map(|c| [format!("{prefix}_{c}"), format!("{prefix}_{c}_case_keys")]).collect();
    let drop_schemas = || async {
        let pool = sqlx::PgPool::connect(POSTGRES_URL).await?;
        for schema in &schemas {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool).await?;
        }
        Ok::<(), BoxError>(())
    };
    if backend == Backend::Postgres {
        drop_schemas().await?;
    }
    let options = setup::Options {
        countries: &["ITA", "GMB"],
        postgres: (backend == Backend::Postgres).then_some((POSTGRES_URL, prefix.as_str())),
        sealed_recipient: true,
        protocol_versions: None,
    };
    // Edition 1 has no endpoints yet; edition 2 (below) has them and the children's time.
    let files = setup::create(&dir.path().join("federation"), &options, written_at())?;
    let mut processes = Vec::new();
    for (country, _) in &files.configs {
        processes.push(Process::spawn(&files, *country)?);
    }
    let [italy, gambia] = processes.as_slice() else { return Err("two gateways expected".into()) };
    let submitter = client(&files, "iom-rome")?;
    let now = childs_time(&submitter, &italy.api_base()).await?;
    let endpoints: Vec<(CountryCode, String)> =
        processes.iter().map(|p| (p.country, format!("https://127.0.0.1:{}", p.federation.rsplit(':').next().unwrap_or_default()))).collect();
    files.publish(2, &endpoints, now)?;
    for process in &processes {
        process.await_edition(2)?;
    }

    let mut referral = referral_as_of("rejected_asylum_avr", now)?;
    let fields = referral.as_object_mut().ok_or("the fixture is not an object")?;
    fields.insert("idempotency_key".to_owned(), Value::from("__KEY__"));
    fields.insert("subject_ref".to_owned(), Value::from("__SUBJECT__"));
    let template = Arc::new(referral.to_string());

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledger = tokio::spawn(acknowledge(client(&files, "iom-banjul")?, gambia.api_base(), Arc::clone(&counters), Arc::clone(&stop)));
    let loader = tokio::spawn(load(submitter, italy.api_base(), template, plan, Arc::clone(&counters)));

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(plan.sample_every);
    if plan.verbose {
        println!("{:>6} {:>9} {:>9} {:>14} {:>14}", "s", "accepted", "acked", "ITA MB (anon)", "GMB MB (anon)");
    }
    loop {
        ticker.tick().await;
        let sample = Sample {
            at: started.elapsed(),
            accepted: counters.accepted.load(Ordering::Relaxed),
            acknowledged: counters.acknowledged.load(Ordering::Relaxed),
            rss: processes.iter().map(Process::rss).collect::<Result<_, _>>()?,
        };
        if plan.verbose {
            let mb: Vec<String> = sample.rss.iter().map(|r| format!("{:>6.1} ({:>5.1})", r.all as f64 / MB, r.anonymous as f64 / MB)).collect();
            println!("{:>6} {:>9} {:>9} {}", sample.at.as_secs(), sample.accepted, sample.acknowledged, mb.join(" "));
        }
        samples.push(sample);
        if loader.is_finished() {
            break;
        }
    }
    loader.await?;
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let all_acknowledged = async {
        loop {
            // Registered before the count is read, so that no acknowledgement is missed.
            let next = counters.acknowledgement.notified();
            if counters.acknowledged.load(Ordering::Relaxed) >= accepted || acknowledger.is_finished() {
                return;
            }
            next.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_LIMIT, all_acknowledged).await;
    stop.store(true, Ordering::Relaxed);
    acknowledger.await??;
    report(backend, &processes, &samples, plan);
    let (failed, skipped, acknowledged) =
        (counters.failed.load(Ordering::Relaxed), counters.skipped.load(Ordering::Relaxed), counters.acknowledged.load(Ordering::Relaxed));
    println!("  {accepted} accepted, {failed} failed, {skipped} skipped, {acknowledged} acknowledged");
    for process in &processes {
        for (message, times) in process.warnings.lock().map(|w| w.clone()).unwrap_or_default() {
            println!("  {} logged {times} x: {message}", process.country);
        }
    }
    for process in &mut processes {
        process.stop()?;
    }
    if backend == Backend::Postgres {
        drop_schemas().await?;
    }
    if failed > 0 || skipped > 0 || accepted == 0 || acknowledged != accepted {
        return Err(format!("{backend:?}: {accepted} accepted, {failed} failed, {skipped} skipped, {acknowledged} acknowledged").into());
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let plan = if full { Plan::full()? } else { Plan::smoke() };
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = format!("{backend:?}").to_ascii_lowercase();
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        runtime.block_on(run(backend, plan))?;
    }
    Ok(())
}
