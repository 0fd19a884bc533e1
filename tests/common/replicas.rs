//! Replicas of the sending gateway (Italy) and of the receiving one (the
//! Gambia) as processes of the real binary, as `operations.md` §3.4 has
//! them: each side's replicas share one PostgreSQL schema and one set of key
//! files, each has a node name of its own, and the other side reaches them
//! through a balancer that passes TLS through at the TCP level.
//!
//! A run submits referrals to the Italian replicas in turn, may kill one
//! replica of each side (`SIGKILL`) and start it again on the same node
//! while referrals flow, and waits until every referral is delivered. What
//! each side stored is then read back for the caller to check: the replica
//! test (`tests/api/replicas.rs`) and bench (`benches/replicas.rs`) share it.
//!
//! The processes run on the machine's clock, as `serve` does. The files are
//! dated by the binary itself (`keys public` says when "now" is), and the
//! fixtures' dates are moved to that day, so that the run holds on any date
//! (and under `faketime`, which the children inherit).
//!
//! The children are killed when their [`Replica`] is dropped, a panic
//! included; a test process killed outright leaves them running (a parent's
//! death signal would need `unsafe`, which the crate forbids).

// The test and the bench use different parts.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use referral_gateway::demo::fixtures::{days_since_written, move_dates, written_at};
use referral_gateway::demo::setup::{self, DemoFiles, Options};
use referral_gateway::domain::CountryCode;
use serde_json::Value;

#[path = "recipient.rs"]
mod recipient;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a replica may take to start (migrations, policy, listeners).
const START_LIMIT: Duration = Duration::from_secs(90);

/// One gateway process on a node of its own.
pub struct Replica {
    pub node: String,
    config: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
    /// The national API's address.
    pub api: Option<SocketAddr>,
    /// The federation listener's address (behind the balancer).
    pub federation: Option<SocketAddr>,
    /// Its log lines, and those of its earlier processes on this node.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Replica {
    /// Starts the process and waits until both its listeners are up.
    pub fn start(&mut self) -> Result<(), BoxError> {
        if self.child.is_some() {
            return Err(format!("{} is running", self.node).into());
        }
        let mut child = Command::new(&self.binary)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RGW_DATABASE__NODE", &self.node)
            // Four replicas, each with a pool for the store and one for the
            // case keys, beside the rest of the suite on one PostgreSQL.
            .env("RGW_DATABASE__MAX_CONNECTIONS", "4")
            .env("RGW_LOG__LEVEL", "info")
            .env("RGW_LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (sender, addresses) = std::sync::mpsc::channel();
        for pipe in [child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)]
            .into_iter()
            .flatten()
        {
            let (lines, sender) = (Arc::clone(&self.lines), sender.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let address = serde_json::from_str::<Value>(&line).ok().and_then(|event| {
                        let fields = &event["fields"];
                        match fields["message"].as_str() {
                            Some("gateway listening") => fields["local_addr"].as_str().map(|a| (false, a.to_owned())),
                            Some("federation listener up") => fields["addr"].as_str().map(|a| (true, a.to_owned())),
                            _ => None,
                        }
                    });
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                    if let Some(address) = address {
                        let _ = sender.send(address);
                    }
                }
            });
        }
        // Only the readers hold a sender now: a child that exits closes the channel.
        drop(sender);
        self.child = Some(child);
        self.api = None;
        self.federation = None;
        let deadline = Instant::now() + START_LIMIT;
        while self.api.is_none() || self.federation.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match addresses.recv_timeout(left) {
                Ok((is_federation, address)) => {
                    let address: SocketAddr = address.parse()?;
                    if is_federation {
                        self.federation = Some(address);
                    } else {
                        self.api = Some(address);
                    }
                }
                Err(error) => {
                    let exited = self.exit_status();
                    self.kill();
                    let why = match exited {
                        Some(status) => format!("exited ({status})"),
                        None if matches!(error, std::sync::mpsc::RecvTimeoutError::Timeout) => format!("did not start within {START_LIMIT:?}"),
                        None => "closed its output".to_owned(),
                    };
                    return Err(format!("replica {} {why}:\n{}", self.node, self.log_tail(40)).into());
                }
            }
        }
        Ok(())
    }

    /// `kill -9`: nothing is settled, every claim is left as it was.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.api = None;
        self.federation = None;
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// How the process ended, if it did (`None` while it runs or was never started).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Started, and still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// How many of its log lines (all its processes) carry `message`.
    pub fn logged(&self, message: &str) -> usize {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["fields"]["message"] == message)
            .count()
    }

    pub fn log_tail(&self, count: usize) -> String {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP balancer in front of one side's replicas: each connection goes to
/// the next replica in turn, or the one after if it does not answer, and
/// TLS passes through untouched (the gateways check each other's
/// certificates end to end).
pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections passed to each backend so far.
    connections: Arc<Mutex<BTreeMap<SocketAddr, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start() -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::new(Mutex::new(Vec::new()));
        let connections: Arc<Mutex<BTreeMap<SocketAddr, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));
        let turn = Arc::new(AtomicUsize::new(0));
        let (shared, counted) = (Arc::clone(&backends), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            loop {
                let mut inbound = match listener.accept().await {
                    Ok((inbound, _)) => inbound,
                    // Out of descriptors, a connection reset before it was taken: the next one may do.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let candidates = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let first = turn.fetch_add(1, Ordering::Relaxed);
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let Some(backend) = candidates.get((first + i) % candidates.len()) else { continue };
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                            if let Ok(mut counted) = counted.lock() {
                                *counted.entry(*backend).or_default() += 1;
                            }
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                    // No replica answers: the connection is dropped, and the peer retries later.
                });
            }
        });
        Ok(Self { addr, backends, connections, task })
    }

    /// Connections passed to `backend` so far.
    pub fn connections_to(&self, backend: SocketAddr) -> u64 {
        self.connections.lock().ok().and_then(|c| c.get(&backend).copied()).unwrap_or(0)
    }

    /// The replicas now running behind it.
    pub fn route_to(&self, replicas: &[Replica]) {
        if let Ok(mut backends) = self.backends.lock() {
            *backends = replicas.iter().filter_map(|r| r.federation).collect();
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One side: a country's replicas and their balancer.
pub struct Side {
    pub replicas: Vec<Replica>,
    pub balancer: Balancer,
    pub schema: String,
    /// One connection to the side's schema, for reading what it stored.
    pool: sqlx::PgPool,
}

impl Side {
    /// Kills replica `index` (`kill -9`) and stops routing to it.
    pub fn kill(&mut self, index: usize) {
        if let Some(replica) = self.replicas.get_mut(index) {
            replica.kill();
        }
        self.balancer.route_to(&self.replicas);
    }

    /// Starts replica `index` again on its node, and routes to it.
    pub fn restart(&mut self, index: usize) -> Result<(), BoxError> {
        self.replicas.get_mut(index).ok_or("no such replica")?.start()?;
        self.balancer.route_to(&self.replicas);
        Ok(())
    }

    /// The national API's base URLs of the running replicas, by index.
    pub fn api_urls(&self) -> Vec<Option<String>> {
        self.replicas.iter().map(|r| r.api.map(|a| format!("https://127.0.0.1:{}", a.port()))).collect()
    }

    /// A count from the side's schema.
    pub async fn count(&self, sql: &str) -> Result<i64, BoxError> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    /// A statement on the side's schema (a `VACUUM`, say).
    pub async fn execute(&self, sql: &str) -> Result<(), BoxError> {
        // The simple protocol: no prepared statement (which `VACUUM` does not take).
        sqlx::raw_sql(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// The texts of one column from the side's schema.
    pub async fn texts(&self, sql: &str) -> Result<Vec<String>, BoxError> {
        Ok(sqlx::query_scalar(sql).fetch_all(&self.pool).await?)
    }
}

/// Italy's and the Gambia's replicas on one PostgreSQL, their files, and
/// what the run needs to send referrals.
pub struct ReplicaFederation {
    pub ita: Side,
    pub gmb: Side,
    pub files: DemoFiles,
    /// The AVR fixture, its dates moved to the replicas' day, with
    /// `__KEY__` where each referral's idempotency key goes.
    template: String,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// One connection whose search path is `schema`, named in its startup
/// options as the gateway's own connections do.
async fn pool_on(schema: &str) -> Result<sqlx::PgPool, BoxError> {
    let options = POSTGRES_URL.parse::<sqlx::postgres::PgConnectOptions>()?.options([("search_path", schema)]);
    Ok(sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options).await?)
}

/// What the binary takes "now" to be: the start of the window `keys
/// public` gives keys when not told one.
fn binarys_now(binary: &Path, keys: &Path) -> Result<chrono::DateTime<chrono::Utc>, BoxError> {
    let output = Command::new(binary).args(["keys", "public", "--dir"]).arg(keys).env_remove("RUST_LOG").output()?;
    if !output.status.success() {
        return Err(format!("keys public: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let entry: Value = serde_json::from_slice(&output.stdout)?;
    let from = entry["keys"][0]["not_before"].as_str().ok_or("keys public printed no not_before")?;
    Ok(chrono::DateTime::parse_from_rfc3339(from)?.with_timezone(&chrono::Utc))
}

async fn drop_schemas(schemas: &[&str]) -> Result<(), BoxError> {
    let pool = sqlx::PgPool::connect(POSTGRES_URL).await?;
    for schema in schemas {
        // The case keys live in a schema of their own beside the gateway's.
        for name in [schema.to_string(), format!("{schema}_case_keys")] {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).execute(&pool).await?;
        }
    }
    pool.close().await;
    Ok(())
}

impl ReplicaFederation {
    /// `per_side` replicas of each gateway, started one after the other
    /// (the first alone on the empty schema, as §3.4 asks), behind their
    /// balancers, with a directory that lists the balancers.
    ///
    /// `prefix` names the run's schemas (`<prefix>_<n>_ita`, ...): the test
    /// suite's own prefix, so that its sweep of stale schemas finds those a
    /// failed run left.
    pub async fn start(binary: &Path, per_side: usize, prefix: &str) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let prefix = format!("{prefix}_{}", RUNS.fetch_add(1, Ordering::Relaxed));
        let schemas = [format!("{prefix}_ita"), format!("{prefix}_gmb")];
        drop_schemas(&[schemas[0].as_str(), schemas[1].as_str()]).await?;
        let options = Options { countries: &["ITA", "GMB"], postgres: Some((POSTGRES_URL, prefix.as_str())), sealed_recipient: false, protocol_versions: None };
        // Edition 1 is dated by the fixtures; edition 2, below, by the binary.
        let files = setup::create(&dir.path().join("federation"), &options, written_at())?;
        let config_of = |country: &str| -> Result<(PathBuf, PathBuf), BoxError> {
            let (_, config) = files.configs.iter().find(|(c, _)| c.as_str() == country).ok_or("no such country")?;
            Ok((files.root.join(country.to_ascii_lowercase()).join("gateway.toml"), config.keys.dir.clone()))
        };
        let (ita_config, ita_keys) = config_of("ITA")?;
        let (gmb_config, _) = config_of("GMB")?;
        let now = binarys_now(binary, &ita_keys)?;
        let ita_balancer = Balancer::start().await?;
        let gmb_balancer = Balancer::start().await?;
        let endpoints = [
            (CountryCode::parse("ITA")?, format!("https://127.0.0.1:{}", ita_balancer.addr.port())),
            (CountryCode::parse("GMB")?, format!("https://127.0.0.1:{}", gmb_balancer.addr.port())),
        ];
        files.publish(2, &endpoints, now)?;

        let replicas = |country: &str, config: &Path| -> Vec<Replica> {
            (0..per_side)
                .map(|i| Replica {
                    node: format!("{}-{}", country.to_ascii_lowercase(), char::from(b'a' + i as u8)),
                    config: config.to_path_buf(),
                    binary: binary.to_path_buf(),
                    child: None,
                    api: None,
                    federation: None,
                    lines: Arc::new(Mutex::new(Vec::new())),
                })
                .collect()
        };
        let mut ita = Side { replicas: replicas("ITA", &ita_config), balancer: ita_balancer, schema: schemas[0].clone(), pool: pool_on(&schemas[0]).await? };
        let mut gmb = Side { replicas: replicas("GMB", &gmb_config), balancer: gmb_balancer, schema: schemas[1].clone(), pool: pool_on(&schemas[1]).await? };
        for side in [&mut ita, &mut gmb] {
            for replica in &mut side.replicas {
                replica.start()?;
            }
            side.balancer.route_to(&side.replicas);
        }

        let mut referral: Value = serde_json::from_str(&std::fs::read_to_string("tests/fixtures/referrals/rejected_asylum_avr.json")?)?;
        move_dates(&mut referral, days_since_written(now));
        let fields = referral.as_object_mut().ok_or("the fixture is not an object")?;
        fields.insert("idempotency_key".to_owned(), Value::from("__KEY__"));
        // An asylum-linked case to the Gambia goes only sealed end to end; this run sends it plain.
        fields.get_mut("case").and_then(Value::as_object_mut).ok_or("the fixture has no case")?.remove("asylum");
        Ok(Self { ita, gmb, files, template: referral.to_string(), binary: binary.to_path_buf(), _dir: dir })
    }

    /// An HTTPS client of the national system `name` (`iom-rome`, `iom-banjul`).
    fn client(&self, name: &str) -> Result<reqwest::Client, BoxError> {
        Ok(self.files.client_builder(name)?.pool_max_idle_per_host(16).timeout(Duration::from_secs(30)).build()?)
    }

    /// `audit verify` on one side's chain, which every replica appended to
    /// (exit 0: it verifies; 1: broken; 2: it could not be read).
    pub fn audit_verify(&self, side: &Side) -> Result<Output, BoxError> {
        let config = side.replicas.first().ok_or("no replica")?.config.clone();
        Ok(Command::new(&self.binary).args(["audit", "verify", "--config"]).arg(config).env_remove("RUST_LOG").output()?)
    }

    /// Ends the processes and drops both schemas.
    pub async fn tear_down(mut self) -> Result<(), BoxError> {
        for side in [&mut self.ita, &mut self.gmb] {
            for replica in &mut side.replicas {
                replica.kill();
            }
            side.pool.close().await;
        }
        drop_schemas(&[self.ita.schema.as_str(), self.gmb.schema.as_str()]).await
    }
}

/// When, in a run, to kill one replica of each side and start it again.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// After this many referrals are accepted, the last replica of each side is killed.
    pub kill_after: u64,
    /// After this many, both are started again on their nodes.
    pub restart_after: u64,
}

/// What the killed replicas had in hand when they were killed.
#[derive(Debug, Clone)]
pub struct AtTheKill {
    /// The killed Italian replica's node.
    pub ita_node: String,
    /// Connections from Italy the Gambian balancer had passed to the killed Gambian replica.
    pub gmb_connections: u64,
    /// Outbox entries the killed Italian replica had claimed and not settled.
    pub ita_claims: i64,
}

/// What a run did.
#[derive(Debug)]
pub struct Delivered {
    /// Referral ids as the Italian replicas answered them, by idempotency key.
    pub referral_ids: BTreeMap<String, String>,
    /// Submissions sent again to another replica after a failure.
    pub resubmitted: u64,
    /// From the first submission until Italy held every receipt.
    pub delivered_after: Duration,
    /// From the first submission until the Gambia had screened every
    /// referral (each available to IOM Banjul, or acknowledged by it),
    /// seen by polling every 100 ms.
    pub screened_after: Duration,
    /// With a recipient: from the first submission until IOM Banjul had
    /// acknowledged every case (which sends a `forwarded` status back).
    pub acknowledged_after: Option<Duration>,
    pub at_the_kill: Option<AtTheKill>,
}

/// What a run sends, and who answers.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub referrals: u64,
    /// Clients submitting at once.
    pub submitters: usize,
    pub outage: Option<Outage>,
    /// IOM Banjul tails its inbox at the Gambia's first replica and
    /// acknowledges each case, as in the federation bench.
    pub acknowledge: bool,
}

/// How long one submission may go on failing on every replica.
const SUBMISSION_LIMIT: Duration = Duration::from_secs(60);

/// Referral packets delivered at Italy.
const DELIVERED: &str = "SELECT count(*) FROM outbox WHERE packet_type = 'referral' AND state = 'delivered'";
/// Referral packets that ended at Italy without being delivered (expired, say).
const ENDED_UNDELIVERED: &str = "SELECT count(*) FROM outbox WHERE packet_type = 'referral' AND state NOT IN ('pending', 'delivered')";
/// Referrals screened at the Gambia and available to IOM Banjul.
const SCREENED: &str =
    "SELECT count(*) FROM inbox WHERE packet_type = 'referral' AND state IN ('available', 'acknowledged') AND recipient_org = 'gmb-iom-banjul'";

/// Submits the workload's referrals with its concurrent clients, each to
/// the Italian replicas in turn (a failed one goes to the next, with the
/// same idempotency key), applies its outage on the way, and waits until
/// Italy has every referral delivered (its outbox entry holds the
/// Gambia's receipt), the Gambia has screened every one (available to IOM
/// Banjul, or acknowledged by it) and, with a recipient, IOM Banjul has
/// acknowledged every one; all within `limit`.
pub async fn deliver(federation: &mut ReplicaFederation, workload: Workload, limit: Duration) -> Result<Delivered, BoxError> {
    let count = workload.referrals;
    match tokio::time::timeout(limit, deliver_within(federation, workload)).await {
        Ok(delivered) => delivered,
        Err(_) => {
            let stored = federation.ita.count("SELECT count(*) FROM referrals").await?;
            let delivered = federation.ita.count(DELIVERED).await?;
            let screened = federation.gmb.count(SCREENED).await?;
            let acknowledged = federation.gmb.count("SELECT count(*) FROM inbox WHERE packet_type = 'referral' AND state = 'acknowledged'").await?;
            Err(format!("after {limit:?}: {stored} of {count} referrals accepted, {delivered} delivered, {screened} screened, {acknowledged} acknowledged").into())
        }
    }
}

type Submitted = Result<Vec<(String, String)>, BoxError>;

/// Waits until `n` referrals are accepted, taking in the ids of submitters
/// that finished meanwhile; a submitter's failure ends the wait at once.
async fn wait_until_accepted(
    accepted: &mut tokio::sync::watch::Receiver<u64>,
    n: u64,
    tasks: &mut tokio::task::JoinSet<Submitted>,
    ids: &mut BTreeMap<String, String>,
) -> Result<(), BoxError> {
    loop {
        let all_ended = tokio::select! {
            waited = accepted.wait_for(|accepted| *accepted >= n) => return waited.map(|_| ()).map_err(|_| format!("the submitters ended before {n} referrals were accepted").into()),
            joined = tasks.join_next() => match joined {
                Some(joined) => {
                    ids.extend(joined??);
                    false
                }
                None => true,
            },
        };
        if all_ended {
            return if *accepted.borrow() >= n { Ok(()) } else { Err(format!("the submitters ended before {n} referrals were accepted").into()) };
        }
    }
}

/// IOM Banjul: tails its inbox at `base` and acknowledges every case (16
/// at once) until `count` are acknowledged; returns when the last
/// acknowledgement was answered.
async fn acknowledge_all(client: reqwest::Client, base: String, count: u64) -> Result<Instant, BoxError> {
    // The run's own limit ends it otherwise.
    let acknowledged = recipient::acknowledge_all(&client, &base, count, 16, Duration::MAX, None).await?;
    // Nothing to acknowledge (`count` 0): done at once.
    Ok(acknowledged.at.values().max().copied().unwrap_or_else(Instant::now))
}

async fn deliver_within(federation: &mut ReplicaFederation, workload: Workload) -> Result<Delivered, BoxError> {
    let Workload { referrals: count, submitters, outage, acknowledge } = workload;
    if outage.is_some() && (federation.ita.replicas.len() < 2 || federation.gmb.replicas.len() < 2) {
        return Err("an outage needs two replicas a side: one is killed".into());
    }
    let started = Instant::now();
    let client = federation.client("iom-rome")?;
    let urls = Arc::new(Mutex::new(federation.ita.api_urls()));
    let template = Arc::new(federation.template.clone());
    let next = Arc::new(AtomicU64::new(0));
    let resubmitted = Arc::new(AtomicU64::new(0));
    let (accepted_tx, mut accepted_rx) = tokio::sync::watch::channel(0u64);
    let accepted_tx = Arc::new(accepted_tx);
    let run = std::process::id();
    let mut tasks: tokio::task::JoinSet<Submitted> = tokio::task::JoinSet::new();
    for _ in 0..submitters {
        let (client, urls, template, next, resubmitted, accepted_tx) =
            (client.clone(), Arc::clone(&urls), Arc::clone(&template), Arc::clone(&next), Arc::clone(&resubmitted), Arc::clone(&accepted_tx));
        tasks.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok(ids);
                }
                let key = format!("replicas-{run}-{n:08}");
                let body = template.replace("__KEY__", &key);
                let deadline = Instant::now() + SUBMISSION_LIMIT;
                let mut failures: Vec<String> = Vec::new();
                let mut turn = n as usize;
                let id = loop {
                    let running: Vec<String> = urls.lock().map(|u| u.iter().flatten().cloned().collect()).unwrap_or_default();
                    if let Some(url) = running.get(turn % running.len().max(1)) {
                        if !failures.is_empty() {
                            resubmitted.fetch_add(1, Ordering::Relaxed);
                        }
                        match client.post(format!("{url}/v1/referrals")).header("content-type", "application/json").body(body.clone()).send().await {
                            Ok(response) if response.status().is_success() => {
                                let answer: Value = response.json().await?;
                                break answer["referral_id"].as_str().ok_or("an answer without referral_id")?.to_owned();
                            }
                            Ok(response) if response.status().is_server_error() => failures.push(format!("HTTP {}", response.status())),
                            Ok(response) => return Err(format!("submission {n}: HTTP {}: {}", response.status(), response.text().await.unwrap_or_default()).into()),
                            Err(error) => failures.push(error.to_string()),
                        }
                    }
                    turn += 1;
                    if Instant::now() > deadline {
                        return Err(format!("submission {n} failed for {SUBMISSION_LIMIT:?}: {failures:?}").into());
                    }
                    if turn % running.len().max(1) == n as usize % running.len().max(1) {
                        // Every running replica failed it once: give a restart a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                ids.push((key, id));
                accepted_tx.send_modify(|accepted| *accepted += 1);
            }
        });
    }
    // Only the submitters hold the sender now: the channel closes when they end.
    drop(accepted_tx);
    // Dropped with the run if it fails: the recipient stops with it.
    let mut recipient = tokio::task::JoinSet::new();
    if acknowledge {
        let base = federation.gmb.api_urls().first().cloned().flatten().ok_or("the Gambia's first replica is not running")?;
        recipient.spawn(acknowledge_all(federation.client("iom-banjul")?, base, count));
    }
    let mut referral_ids = BTreeMap::new();
    let mut at_the_kill = None;
    if let Some(outage) = outage {
        wait_until_accepted(&mut accepted_rx, outage.kill_after, &mut tasks, &mut referral_ids).await?;
        let last = federation.ita.replicas.len() - 1;
        let gmb_backend = federation.gmb.replicas.get(last).and_then(|r| r.federation);
        federation.ita.kill(last);
        federation.gmb.kill(last);
        if let Ok(mut urls) = urls.lock() {
            *urls = federation.ita.api_urls();
        }
        let ita_node = federation.ita.replicas.get(last).map(|r| r.node.clone()).unwrap_or_default();
        let claims = format!("SELECT count(*) FROM outbox WHERE claim_node = '{ita_node}' AND state = 'pending'");
        at_the_kill = Some(AtTheKill {
            gmb_connections: gmb_backend.map_or(0, |backend| federation.gmb.balancer.connections_to(backend)),
            ita_claims: federation.ita.count(&claims).await?,
            ita_node,
        });
        wait_until_accepted(&mut accepted_rx, outage.restart_after, &mut tasks, &mut referral_ids).await?;
        federation.gmb.restart(last)?;
        federation.ita.restart(last)?;
        if let Ok(mut urls) = urls.lock() {
            *urls = federation.ita.api_urls();
        }
    }
    while let Some(joined) = tasks.join_next().await {
        referral_ids.extend(joined??);
    }
    loop {
        let ended = federation.ita.count(ENDED_UNDELIVERED).await?;
        if ended > 0 {
            return Err(format!("{ended} referral packets ended undelivered").into());
        }
        if federation.ita.count(DELIVERED).await? as u64 >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered_after = started.elapsed();
    while (federation.gmb.count(SCREENED).await? as u64) < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let screened_after = started.elapsed();
    let acknowledged_after = match recipient.join_next().await {
        Some(joined) => Some(joined??.saturating_duration_since(started)),
        None => None,
    };
    Ok(Delivered { referral_ids, resubmitted: resubmitted.load(Ordering::Relaxed), delivered_after, screened_after, acknowledged_after, at_the_kill })
}
