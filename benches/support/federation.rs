//! Two gateways in this process for the benches that drive a federation
//! (`federation`, `growth`): Italy's, where IOM Rome submits, and the
//! Gambia's, where IOM Banjul tails its inbox and acknowledges. Included
//! by each with `#[path]`.

// Each bench uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use referral_gateway::app::{Clock, SteadyClock};
use referral_gateway::demo::fixtures;
use referral_gateway::demo::setup::{self, DemoFiles, Options};
use referral_gateway::directory::ProtocolVersion;
use referral_gateway::domain::CountryCode;
use referral_gateway::startup::Application;
use serde_json::Value;

#[path = "../../tests/common/recipient.rs"]
mod recipient;
pub use recipient::Acknowledged;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Referrals in flight at once on the submitting side.
pub const SUBMITTERS: usize = 32;
/// Acknowledgements in flight at once on the receiving side.
pub const ACKNOWLEDGERS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Federation {
    pub files: DemoFiles,
    pub ita: Application,
    pub gmb: Application,
    /// The PostgreSQL schemas' prefix (one per run: an earlier run's workers
    /// may still be stopping in theirs).
    pub prefix: String,
    pub backend: Backend,
    /// The serial of the directory the gateways were given.
    serial: u64,
    _dir: tempfile::TempDir,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Drops a run's PostgreSQL schemas, the case keys' beside each gateway's.
pub async fn drop_schemas(prefix: &str) -> Result<(), BoxError> {
    let pool = sqlx::PgPool::connect(POSTGRES_URL).await?;
    for schema in ["ita", "gmb", "ita_case_keys", "gmb_case_keys"] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{prefix}_{schema}\" CASCADE")).execute(&pool).await?;
    }
    Ok(())
}

pub fn client(files: &DemoFiles, name: &str) -> Result<reqwest::Client, BoxError> {
    Ok(files.client_builder(name)?.pool_max_idle_per_host(64).build()?)
}

/// A fresh federation on `backend`, its clock running from the fixtures'
/// date (retries need time to pass; the calendar must not matter): IOM
/// Banjul publishing its own key if `sealed_recipient`, both gateways
/// listing `protocol_versions` (`None`: the example directory's).
pub async fn start(backend: Backend, sealed_recipient: bool, protocol_versions: Option<Vec<ProtocolVersion>>) -> Result<Federation, BoxError> {
    let dir = tempfile::tempdir()?;
    let prefix = format!("rgwbench_fed_{}_{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed));
    if backend == Backend::Postgres {
        drop_schemas(&prefix).await?;
    }
    let options = Options {
        countries: &["ITA", "GMB"],
        postgres: (backend == Backend::Postgres).then_some((POSTGRES_URL, prefix.as_str())),
        sealed_recipient,
        protocol_versions,
    };
    let clock = Arc::new(SteadyClock::starting_at(fixtures::written_at()));
    let files = setup::create(&dir.path().join("federation"), &options, clock.now())?;
    let (ita, gmb) = launch(&files, clock, 2).await?;
    Ok(Federation { files, ita, gmb, prefix, backend, serial: 2, _dir: dir })
}

/// Both gateways built from `files` on `clock`, each told the other's endpoint.
async fn launch(files: &DemoFiles, clock: Arc<SteadyClock>, serial: u64) -> Result<(Application, Application), BoxError> {
    let mut apps = Vec::new();
    for (_, config) in &files.configs {
        apps.push(Application::build(config, clock.clone()).await?);
    }
    let endpoints: Vec<(CountryCode, String)> = files
        .configs
        .iter()
        .zip(&apps)
        .map(|((country, _), app)| (*country, format!("https://127.0.0.1:{}", app.federation_addr().map(|a| a.port()).unwrap_or_default())))
        .collect();
    let directory = files.publish(serial, &endpoints, clock.now())?;
    for app in &apps {
        app.gateway().replace_directory(directory.clone())?;
    }
    let gmb = apps.pop().ok_or("no Gambian gateway")?;
    let ita = apps.pop().ok_or("no Italian gateway")?;
    Ok((ita, gmb))
}

/// A federation whose gateways are stopped: its files and databases kept.
pub struct Stopped {
    files: DemoFiles,
    prefix: String,
    backend: Backend,
    serial: u64,
    dir: tempfile::TempDir,
}

impl Stopped {
    pub fn files(&self) -> &DemoFiles {
        &self.files
    }

    /// The files, to change the gateways' configuration before they start again.
    pub fn files_mut(&mut self) -> &mut DemoFiles {
        &mut self.files
    }

    /// Signs the next directory edition, with `endpoints`, for gateways
    /// started elsewhere on these files (a later [`Self::launch_at`] signs
    /// the one after it); its serial.
    pub fn publish_next(&mut self, endpoints: &[(CountryCode, String)], now: DateTime<Utc>) -> Result<u64, BoxError> {
        self.serial += 1;
        self.files.publish(self.serial, endpoints, now)?;
        Ok(self.serial)
    }

    /// Leaves a PostgreSQL run's schemas in place (to look at them
    /// afterwards; its files are deleted): their prefix.
    pub fn keep(self) -> String {
        self.prefix
    }

    /// Both gateways started again on their databases, their clock running from `at`.
    pub async fn launch_at(self, at: DateTime<Utc>) -> Result<Federation, BoxError> {
        // The gateways remember the directory they had: this one has new endpoints, and a serial after it.
        let serial = self.serial + 1;
        let (ita, gmb) = launch(&self.files, Arc::new(SteadyClock::starting_at(at)), serial).await?;
        Ok(Federation { files: self.files, ita, gmb, prefix: self.prefix, backend: self.backend, serial, _dir: self.dir })
    }

    /// Drops a PostgreSQL run's schemas.
    pub async fn tear_down(self) {
        if self.backend == Backend::Postgres
            && let Err(error) = drop_schemas(&self.prefix).await
        {
            eprintln!("left schemas {}_*: {error}", self.prefix);
        }
    }
}

impl Federation {
    /// Both gateways stopped, with their workers: nothing writes to the databases.
    pub async fn stop(self) -> Stopped {
        self.ita.shut_down().await;
        self.gmb.shut_down().await;
        Stopped { files: self.files, prefix: self.prefix, backend: self.backend, serial: self.serial, dir: self._dir }
    }

    /// Stops both gateways and drops a PostgreSQL run's schemas.
    pub async fn tear_down(self) {
        self.ita.shut_down().await;
        self.gmb.shut_down().await;
        // shut_down waits for the gateways' workers too: nothing holds the schemas now.
        if self.backend == Backend::Postgres
            && let Err(error) = drop_schemas(&self.prefix).await
        {
            eprintln!("left schemas {}_*: {error}", self.prefix);
        }
    }
}

/// The AVR fixture without its asylum record: an asylum-linked case to the
/// Gambia may only go sealed end to end, and both workloads send one case.
/// Its idempotency key and subject are filled in by [`referral_body`].
pub fn referral_template() -> Result<String, BoxError> {
    let mut referral: Value = serde_json::from_str(&std::fs::read_to_string("tests/fixtures/referrals/rejected_asylum_avr.json")?)?;
    let fields = referral.as_object_mut().ok_or("the fixture is not an object")?;
    fields.insert("idempotency_key".to_owned(), serde_json::json!("__KEY__"));
    fields.insert("subject_ref".to_owned(), serde_json::json!("__SUBJECT__"));
    fields.get_mut("case").and_then(Value::as_object_mut).ok_or("the fixture has no case")?.remove("asylum");
    Ok(referral.to_string())
}

/// The `n`th referral of a run whose idempotency keys start with `keys`:
/// each about a person of its own.
pub fn referral_body(template: &str, keys: &str, n: u64) -> String {
    template.replace("__KEY__", &format!("{keys}-{}-{n:010}", std::process::id())).replace("__SUBJECT__", &subject_ref(keys, n))
}

/// The subject of the `n`th referral of a run (see [`referral_body`]).
pub fn subject_ref(keys: &str, n: u64) -> String {
    format!("{keys}-{}-{n:010}", std::process::id())
}

/// Submits `count` referrals with `SUBMITTERS` clients, their idempotency
/// keys starting with `keys`; the ids of those accepted.
pub async fn submit_all(federation: &Federation, count: u64, keys: &str) -> Result<Vec<String>, BoxError> {
    submit_all_of(federation, &referral_template()?, count, keys).await
}

/// [`submit_all`] of another template (see [`referral_template`]).
pub async fn submit_all_of(federation: &Federation, template: &str, count: u64, keys: &str) -> Result<Vec<String>, BoxError> {
    submit_all_to(&federation.files, federation.ita.local_addr().port(), template, count, keys).await
}

/// [`submit_all_of`] to Italy's gateway listening on `port`, wherever it runs.
pub async fn submit_all_to(files: &DemoFiles, port: u16, template: &str, count: u64, keys: &str) -> Result<Vec<String>, BoxError> {
    let url = format!("https://localhost:{port}/v1/referrals");
    let template = Arc::new(template.to_owned());
    let client = client(files, "iom-rome")?;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SUBMITTERS {
        let (client, url, template, next) = (client.clone(), url.clone(), Arc::clone(&template), Arc::clone(&next));
        let keys = keys.to_owned();
        tasks.spawn(async move {
            let mut accepted = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return accepted;
                }
                let body = referral_body(&template, &keys, n);
                match client.post(&url).header("content-type", "application/json").body(body).send().await {
                    Ok(response) if response.status().as_u16() == 202 => match response.json::<Value>().await {
                        Ok(answer) => accepted.extend(answer.get("referral_id").and_then(Value::as_str).map(str::to_owned)),
                        Err(error) => eprintln!("submit: {error}"),
                    },
                    Ok(response) => eprintln!("submit: HTTP {}", response.status()),
                    Err(error) => eprintln!("submit: {error}"),
                }
            }
        });
    }
    let mut accepted = Vec::new();
    while let Some(done) = tasks.join_next().await {
        accepted.extend(done?);
    }
    Ok(accepted)
}

/// The recipient: tails its inbox from `cursor` (the start if `None`) and
/// acknowledges every case, until `count` are acknowledged or `limit` passes.
pub async fn acknowledge_all(federation: &Federation, count: u64, limit: Duration, cursor: Option<String>) -> Result<Acknowledged, BoxError> {
    acknowledge_all_at(&federation.files, federation.gmb.local_addr().port(), count, limit, cursor).await
}

/// [`acknowledge_all`] at the Gambian gateway listening on `port`, wherever it runs.
pub async fn acknowledge_all_at(files: &DemoFiles, port: u16, count: u64, limit: Duration, cursor: Option<String>) -> Result<Acknowledged, BoxError> {
    let base = format!("https://localhost:{port}");
    recipient::acknowledge_all(&client(files, "iom-banjul")?, &base, count, ACKNOWLEDGERS, limit, cursor).await
}

/// Audit entries of `action` with `outcome` in a gateway's log.
pub async fn audited(app: &Application, action: &str, outcome: &str) -> Result<u64, BoxError> {
    let filter = referral_gateway::store::AuditFilter { action: Some(action.to_owned()), limit: 1_000_000, ..Default::default() };
    Ok(app.gateway().store.audit(&filter).await?.iter().filter(|r| r.outcome == outcome).count() as u64)
}
