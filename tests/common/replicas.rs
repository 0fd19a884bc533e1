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

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use referral_gateway::demo::fixtures::{days_since_written, move_dates, written_at};
use referral_gateway::demo::setup::{self, DemoFiles, Options};
use referral_gateway::domain::CountryCode;
use serde_json::Value;

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
                    if let Ok(event) = serde_json::from_str::<Value>(&line) {
                        let fields = &event["fields"];
                        let address = match fields["message"].as_str() {
                            Some("gateway listening") => fields["local_addr"].as_str().map(|a| (false, a.to_owned())),
                            Some("federation listener up") => fields["addr"].as_str().map(|a| (true, a.to_owned())),
                            _ => None,
                        };
                        if let Some(address) = address {
                            let _ = sender.send(address);
                        }
                    }
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(line);
                    }
                }
            });
        }
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
                Err(_) => {
                    self.kill();
                    return Err(format!("replica {} did not start within {START_LIMIT:?}:\n{}", self.node, self.log_tail(40)).into());
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

    pub fn is_running(&self) -> bool {
        self.child.is_some()
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
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start() -> Result<Self, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let backends: Arc<Mutex<Vec<SocketAddr>>> = Arc::new(Mutex::new(Vec::new()));
        let turn = Arc::new(AtomicUsize::new(0));
        let shared = Arc::clone(&backends);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let candidates = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let first = turn.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let Some(backend) = candidates.get((first + i) % candidates.len()) else { continue };
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                    // No replica answers: the connection is dropped, and the peer retries later.
                });
            }
        });
        Ok(Self { addr, backends, task })
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
        self.replicas.iter().map(|r| r.api.map(|a| format!("https://localhost:{}", a.port()))).collect()
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
    pub async fn start(binary: &Path, per_side: usize) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let prefix = format!("rgw_replicas_{}_{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
        let schemas = [format!("{prefix}_ita"), format!("{prefix}_gmb")];
        drop_schemas(&[schemas[0].as_str(), schemas[1].as_str()]).await?;
        let options = Options { countries: &["ITA", "GMB"], postgres: Some((POSTGRES_URL, prefix.as_str())), sealed_recipient: false };
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
        let mut ita = Side { replicas: replicas("ITA", &ita_config), balancer: ita_balancer, schema: schemas[0].clone() };
        let mut gmb = Side { replicas: replicas("GMB", &gmb_config), balancer: gmb_balancer, schema: schemas[1].clone() };
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

    /// A count from one side's schema.
    pub async fn count(&self, side: &Side, sql: &str) -> Result<i64, BoxError> {
        let pool = sqlx::PgPool::connect(POSTGRES_URL).await?;
        let mut connection = pool.acquire().await?;
        sqlx::query(&format!("SET search_path TO \"{}\"", side.schema)).execute(&mut *connection).await?;
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&mut *connection).await?;
        drop(connection);
        pool.close().await;
        Ok(count)
    }

    /// The texts of one column from one side's schema.
    pub async fn texts(&self, side: &Side, sql: &str) -> Result<Vec<String>, BoxError> {
        let pool = sqlx::PgPool::connect(POSTGRES_URL).await?;
        let mut connection = pool.acquire().await?;
        sqlx::query(&format!("SET search_path TO \"{}\"", side.schema)).execute(&mut *connection).await?;
        let texts: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut *connection).await?;
        drop(connection);
        pool.close().await;
        Ok(texts)
    }

    /// `audit verify` on one side's chain, which every replica appended to.
    pub fn audit_verifies(&self, side: &Side) -> Result<bool, BoxError> {
        let config = side.replicas.first().ok_or("no replica")?.config.clone();
        let output = Command::new(&self.binary).args(["audit", "verify", "--config"]).arg(config).env_remove("RUST_LOG").output()?;
        Ok(output.status.success())
    }

    /// Ends the processes and drops both schemas.
    pub async fn tear_down(mut self) -> Result<(), BoxError> {
        for side in [&mut self.ita, &mut self.gmb] {
            for replica in &mut side.replicas {
                replica.kill();
            }
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

/// What a run did.
#[derive(Debug)]
pub struct Delivered {
    /// Referral ids as the Italian replicas answered them, one per idempotency key.
    pub referral_ids: BTreeSet<String>,
    /// Submissions sent again to the other replica after a failure.
    pub resubmitted: u64,
    /// From the first submission until every referral was delivered.
    pub elapsed: Duration,
}

/// Submits `count` referrals with `submitters` concurrent clients, each to
/// the Italian replicas in turn (a failed one goes to the next, with the
/// same idempotency key), applies `outage` on the way, and waits until
/// Italy has every referral delivered (its outbox entry holds the
/// Gambia's receipt), at most `limit`.
pub async fn deliver(federation: &mut ReplicaFederation, count: u64, submitters: usize, outage: Option<Outage>, limit: Duration) -> Result<Delivered, BoxError> {
    match tokio::time::timeout(limit, deliver_within(federation, count, submitters, outage)).await {
        Ok(delivered) => delivered,
        Err(_) => {
            let delivered = federation.count(&federation.ita, DELIVERED).await?;
            let stored = federation.count(&federation.ita, "SELECT count(*) FROM referrals").await?;
            Err(format!("after {limit:?}: {stored} of {count} referrals accepted, {delivered} delivered").into())
        }
    }
}

const DELIVERED: &str = "SELECT count(*) FROM outbox WHERE packet_type = 'referral' AND state = 'delivered'";

async fn deliver_within(federation: &mut ReplicaFederation, count: u64, submitters: usize, outage: Option<Outage>) -> Result<Delivered, BoxError> {
    let started = Instant::now();
    let client = federation.files.client_builder("iom-rome")?.pool_max_idle_per_host(16).timeout(Duration::from_secs(30)).build()?;
    let urls = Arc::new(Mutex::new(federation.ita.api_urls()));
    let template = Arc::new(federation.template.clone());
    let next = Arc::new(AtomicU64::new(0));
    let resubmitted = Arc::new(AtomicU64::new(0));
    let (accepted_tx, mut accepted_rx) = tokio::sync::watch::channel(0u64);
    let accepted_tx = Arc::new(accepted_tx);
    let run = std::process::id();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..submitters {
        let (client, urls, template, next, resubmitted, accepted_tx) =
            (client.clone(), Arc::clone(&urls), Arc::clone(&template), Arc::clone(&next), Arc::clone(&resubmitted), Arc::clone(&accepted_tx));
        tasks.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, BoxError>(ids);
                }
                let body = template.replace("__KEY__", &format!("replicas-{run}-{n:08}"));
                let mut failures = Vec::new();
                let mut attempt = 0usize;
                let id = loop {
                    let candidates = urls.lock().map(|u| u.clone()).unwrap_or_default();
                    let replicas = candidates.len().max(1);
                    let url = candidates.get((n as usize + attempt) % replicas).cloned().flatten();
                    attempt += 1;
                    if attempt > 1 {
                        resubmitted.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(url) = url {
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
                    if attempt >= 200 {
                        return Err(format!("submission {n} failed {attempt} times: {failures:?}").into());
                    }
                    if attempt % replicas == 0 {
                        // Every replica refused or is down: give the restart a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                ids.push(id);
                accepted_tx.send_modify(|accepted| *accepted += 1);
            }
        });
    }
    if let Some(outage) = outage {
        accepted_rx.wait_for(|accepted| *accepted >= outage.kill_after).await?;
        let last = federation.ita.replicas.len().saturating_sub(1);
        federation.ita.kill(last);
        federation.gmb.kill(last);
        if let Ok(mut urls) = urls.lock() {
            *urls = federation.ita.api_urls();
        }
        accepted_rx.wait_for(|accepted| *accepted >= outage.restart_after).await?;
        federation.gmb.restart(last)?;
        federation.ita.restart(last)?;
        if let Ok(mut urls) = urls.lock() {
            *urls = federation.ita.api_urls();
        }
    }
    let mut referral_ids = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        referral_ids.extend(joined??);
    }
    while (federation.count(&federation.ita, DELIVERED).await? as u64) < count {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Delivered { referral_ids, resubmitted: resubmitted.load(Ordering::Relaxed), elapsed: started.elapsed() })
}
