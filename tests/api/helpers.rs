//! The test harness: `spawn_app(backend)` starts a gateway with fresh keys,
//! a fresh database (an SQLite file, or a PostgreSQL schema of its own), TLS,
//! and one registered client certificate per test identity.
//! (Some 650 lines: the one harness every black-box test uses; split, its
//! pieces would all import each other.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use referral_gateway::app::Clock;
use referral_gateway::config::{CertificateFingerprint, GatewayConfig};
use referral_gateway::startup::Application;
use serde_json::Value;

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Who calls: each has its own client certificate, registered (or not) in the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    /// IOM Rome, submitter.
    IomRome,
    /// The Italian NRM, submitter.
    ItaNrm,
    /// The gateway's DPO.
    Dpo,
    /// A second DPO of the same organisation: the other pair of eyes.
    SecondDpo,
    /// An auditor.
    Auditor,
    /// The coordinating body: statistics only.
    Coordinator,
    /// UNHCR Rome, recipient role only.
    Recipient,
    /// A Nigerian organisation with a submitter role: not served by this gateway.
    Foreign,
    /// The health provider in Lagos, recipient role: served by Nigeria's gateway.
    NgaHealth,
    /// The women's shelter NGO in Benin City, recipient role: served by Nigeria's gateway.
    NgaShelter,
    /// Two DPOs at Nigeria's gateway (of NAPTIP, which it serves): the four eyes there.
    NgaDpo,
    NgaSecondDpo,
    /// Rome's municipal child protection service: submitter, and (a second
    /// certificate) recipient of the replies to what it asked.
    ItaChildProtection,
    ItaChildProtectionInbox,
    /// The Nigerian Red Cross tracing service, recipient role: served by Nigeria's gateway.
    NgaRedCross,
    /// The Nigerian Red Cross's tracing desk, submitter: it registers the
    /// searches of families in Nigeria (a second certificate of the same organisation).
    NgaRedCrossDesk,
    /// The Italian Red Cross's tracing service: submitter, and (a second
    /// certificate) recipient, as the demo registers it (`docs/api.md`).
    ItaRedCross,
    ItaRedCrossInbox,
    /// A certificate the gateway does not know.
    Stranger,
    /// No certificate at all.
    Nobody,
}

impl Who {
    pub const REGISTERED: [Who; 18] = [
        Who::IomRome,
        Who::ItaNrm,
        Who::Dpo,
        Who::SecondDpo,
        Who::Auditor,
        Who::Coordinator,
        Who::Recipient,
        Who::Foreign,
        Who::NgaHealth,
        Who::NgaShelter,
        Who::NgaDpo,
        Who::NgaSecondDpo,
        Who::ItaChildProtection,
        Who::ItaChildProtectionInbox,
        Who::NgaRedCross,
        Who::NgaRedCrossDesk,
        Who::ItaRedCross,
        Who::ItaRedCrossInbox,
    ];
    pub const ALL: [Who; 20] = [
        Who::IomRome,
        Who::ItaNrm,
        Who::Dpo,
        Who::SecondDpo,
        Who::Auditor,
        Who::Coordinator,
        Who::Recipient,
        Who::Foreign,
        Who::NgaHealth,
        Who::NgaShelter,
        Who::NgaDpo,
        Who::NgaSecondDpo,
        Who::ItaChildProtection,
        Who::ItaChildProtectionInbox,
        Who::NgaRedCross,
        Who::NgaRedCrossDesk,
        Who::ItaRedCross,
        Who::ItaRedCrossInbox,
        Who::Stranger,
        Who::Nobody,
    ];

    /// The organisation the gateway registers this caller for.
    pub fn org(self) -> Option<&'static str> {
        self.registration().map(|(_, org, _)| org)
    }

    /// The certificate fingerprint (`sha256:...`) the gateway sees, if any.
    pub fn fingerprint(self) -> Option<String> {
        pki().clients.get(&self).map(|(_, fingerprint)| fingerprint.display())
    }

    /// The role the gateway registers this caller with.
    pub fn role(self) -> Option<&'static str> {
        self.registration().map(|(_, _, role)| role)
    }

    fn registration(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Who::IomRome => Some(("iom_rome", "ita-iom-rome", "submitter")),
            Who::ItaNrm => Some(("ita_nrm", "ita-nrm", "submitter")),
            Who::Dpo => Some(("dpo", "ita-nrm", "dpo")),
            Who::SecondDpo => Some(("second_dpo", "ita-nrm", "dpo")),
            Who::Auditor => Some(("auditor", "ita-nrm", "auditor")),
            Who::Coordinator => Some(("coordinator", "ita-nrm", "statistics")),
            Who::Recipient => Some(("unhcr", "ita-unhcr-rome", "recipient")),
            Who::Foreign => Some(("naptip", "nga-naptip", "submitter")),
            Who::NgaHealth => Some(("nga_health", "nga-health-lagos", "recipient")),
            Who::NgaShelter => Some(("nga_shelter", "nga-ngo-shelter", "recipient")),
            Who::NgaDpo => Some(("nga_dpo", "nga-naptip", "dpo")),
            Who::NgaSecondDpo => Some(("nga_second_dpo", "nga-naptip", "dpo")),
            Who::ItaChildProtection => Some(("ita_child_protection", "ita-child-protection", "submitter")),
            Who::ItaChildProtectionInbox => Some(("ita_child_protection_inbox", "ita-child-protection", "recipient")),
            Who::NgaRedCross => Some(("nga_red_cross", "nga-red-cross", "recipient")),
            Who::NgaRedCrossDesk => Some(("nga_red_cross_desk", "nga-red-cross", "submitter")),
            Who::ItaRedCross => Some(("ita_red_cross", "ita-red-cross", "submitter")),
            Who::ItaRedCrossInbox => Some(("ita_red_cross_inbox", "ita-red-cross", "recipient")),
            Who::Stranger | Who::Nobody => None,
        }
    }
}

/// The time the scenario fixtures are valid at: the one time source every
/// test clock, key window and token starts from.
pub fn fixture_time() -> DateTime<Utc> {
    referral_gateway::demo::fixtures::written_at()
}

#[derive(Debug)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// A clock that stands still until the test moves it.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(at)))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap() = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Waits until `check` holds, up to `limit`; panics with `what` otherwise.
/// The one way a test waits for something: it polls a condition, with a
/// deadline, and never sleeps a fixed time hoping it happened.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_showing(what, limit, || {
        let holds = check();
        async move { if holds.await { Ok(()) } else { Err(String::new()) } }
    })
    .await;
}

/// As [`wait_for`], with `check` saying what it saw when it does not hold
/// yet: the last of it goes into the panic on timeout.
pub async fn wait_showing<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(()) => return,
            Err(seen) if seen.is_empty() => assert!(Instant::now() < deadline, "timed out waiting for {what}"),
            Err(seen) => assert!(Instant::now() < deadline, "timed out waiting for {what}; last seen: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(&format!("tests/fixtures/referrals/{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub const FIXTURES: [&str; 6] = [
    "dual_national_fear",
    "rejected_asylum_avr",
    "returnee_hiv_reintegration",
    "separated_child_tracing",
    "trafficking_victim_reintegration",
    "unaccompanied_girl_tracing",
];

/// A certificate authority for the test server, and PEM material.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub clients: BTreeMap<Who, (String, CertificateFingerprint)>,
}

/// The test certificate authority, and a server certificate and key it
/// signed for `localhost` and `127.0.0.1` (PEM).
pub fn test_ca_pem() -> &'static str {
    &pki().ca_pem
}

/// This caller's client certificate and private key (PEM, one file as
/// curl's `--cert` takes it); `None` for [`Who::Nobody`].
pub fn client_pem(who: Who) -> Option<&'static str> {
    pki().clients.get(&who).map(|(pem, _)| pem.as_str())
}

pub fn test_server_identity() -> (&'static str, &'static str) {
    (&pki().server_cert_pem, &pki().server_key_pem)
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let callers: Vec<Who> = Who::REGISTERED.into_iter().chain([Who::Stranger]).collect();
        let names: Vec<String> = callers.iter().map(|who| format!("{who:?}")).collect();
        let generated = referral_gateway::dev_pki::generate(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let clients = callers.into_iter().zip(generated.clients).map(|(who, (_, pem, fingerprint))| (who, (pem, fingerprint))).collect();
        Pki {
            ca_pem: generated.ca_pem,
            server_cert_pem: generated.server_certificate_pem,
            server_key_pem: generated.server_key_pem,
            clients,
        }
    })
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique_name() -> String {
    format!("rgwtest_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Drops the schemas earlier test runs left behind (once per process).
async fn drop_stale_schemas() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let pool = sqlx::PgPool::connect(POSTGRES_URL).await.expect("PostgreSQL at 127.0.0.1:5432 (see .ci/run)");
        let mine = format!("rgwtest_{}_%", std::process::id());
        let stale: Vec<(String,)> = sqlx::query_as(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'rgwtest\\_%' AND nspname NOT LIKE $1",
        )
        .bind(&mine)
        .fetch_all(&pool)
        .await
        .unwrap();
        for (schema,) in stale {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool).await;
        }
    })
    .await;
}

/// Writes the gateway files into `dir` and returns the configuration text.
pub fn write_config(dir: &Path, backend: Backend, extra: &str) -> (PathBuf, Option<String>) {
    write_config_for(dir, backend, "ITA", extra)
}

/// As [`write_config`], for the gateway of `country`.
/// The directory `json` with an end-to-end key published for `org` (its
/// private half thrown away): the return case of the fixtures is
/// asylum-linked and goes to IOM in the person's origin state, which only
/// an organisation with its own key may receive.
pub fn with_recipient_key(json: &str, org: &str) -> String {
    use referral_gateway::crypto::jose_keys::{generate, KeyUse};
    let mut document: referral_gateway::directory::DirectoryDocument = serde_json::from_str(json).unwrap();
    let (from, until) = (fixture_time() - chrono::Duration::days(1), fixture_time() + chrono::Duration::days(365));
    let entry = referral_gateway::directory::published_key(&generate(KeyUse::Enc).unwrap(), from, until, KeyUse::Enc).unwrap();
    document.organisations.iter_mut().find(|o| o.id.as_str() == org).unwrap().keys = vec![entry];
    serde_json::to_string(&document).unwrap()
}

pub fn write_config_for(dir: &Path, backend: Backend, country: &str, extra: &str) -> (PathBuf, Option<String>) {
    let pki = pki();
    referral_gateway::crypto::at_rest::init(&dir.join("keys")).unwrap();
    std::fs::write(dir.join("server.pem"), &pki.server_cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &pki.server_key_pem).unwrap();
    let example = with_recipient_key(&std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap(), "gmb-iom-banjul");
    let signed = referral_gateway::dev_pki::sign_directory(&dir.join("federation"), &example).unwrap();
    let (database, schema) = match backend {
        Backend::Sqlite => (format!("url = \"sqlite://{}\"", dir.join("gateway.db").display()), None),
        Backend::Postgres => {
            let schema = unique_name();
            (format!("url = \"{POSTGRES_URL}\"\nschema = \"{schema}\"\nmax_connections = 4"), Some(schema))
        }
    };
    let mut clients = String::new();
    for who in Who::REGISTERED {
        let (name, org, role) = who.registration().unwrap();
        let fingerprint = &pki.clients[&who].1;
        clients.push_str(&format!(
            "[auth.clients.{name}]\nfingerprint = \"{}\"\norg = \"{org}\"\nroles = [\"{role}\"]\n\n",
            fingerprint.display()
        ));
    }
    let text = format!(
        r#"country = "{country}"

[server]
listen = "127.0.0.1:0"
body_limit_bytes = 65536

[server.tls]
certificate = "server.pem"
private_key = "server.key"

[database]
{database}

[keys]
dir = "keys"

[directory]
file = "{directory}"
coordinator_key = "{coordinator}"
refresh_seconds = 1

[policy]
initial_dir = "{policies}"

{clients}
{extra}
"#,
        directory = signed.directory.display(),
        coordinator = signed.coordinator_key.display(),
        policies = repo_path("config/policies").display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    (path, schema)
}

pub struct TestApp {
    pub app: Application,
    pub config: GatewayConfig,
    pub config_path: PathBuf,
    pub backend: Backend,
    pub schema: Option<String>,
    /// The gateway's clock: it stands still until the test moves it.
    pub clock: Arc<ManualClock>,
    /// Keeps the keys, certificates and SQLite file alive as long as the app.
    _dir: tempfile::TempDir,
    clients: BTreeMap<Who, reqwest::Client>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_at(backend, fixture_time()).await
}

pub async fn spawn_app_at(backend: Backend, now: DateTime<Utc>) -> TestApp {
    spawn_app_with(backend, now, "").await
}

/// A gateway whose configuration ends with `extra` (more TOML tables).
pub async fn spawn_app_with(backend: Backend, now: DateTime<Utc>, extra: &str) -> TestApp {
    spawn_app_configured(backend, now, extra, |_| {}).await
}

/// As [`spawn_app_with`], with the loaded configuration changed by `change` before the start.
pub async fn spawn_app_configured(backend: Backend, now: DateTime<Utc>, extra: &str, change: impl FnOnce(&mut GatewayConfig)) -> TestApp {
    repeat_panic_messages_last();
    if backend == Backend::Postgres {
        drop_stale_schemas().await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (config_path, schema) = write_config(dir.path(), backend, extra);
    let mut config = GatewayConfig::load(&config_path).unwrap();
    change(&mut config);
    let clock = ManualClock::new(now);
    let app = Application::build(&config, clock.clone()).await.unwrap();
    let clients = Who::ALL.into_iter().map(|who| (who, client_for(who))).collect();
    TestApp { app, config, config_path, backend, schema, clock, _dir: dir, clients }
}

/// An HTTPS client that trusts the test CA and presents `who`'s client
/// certificate (none for [`Who::Nobody`]): for a gateway of this harness,
/// in process or a child process.
pub fn client_for(who: Who) -> reqwest::Client {
    client_builder_for(who).build().unwrap()
}

/// As [`client_for`], with the builder left open (to refuse redirects, say).
pub fn client_builder_for(who: Who) -> reqwest::ClientBuilder {
    let pki = pki();
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder().use_rustls_tls().add_root_certificate(ca).tls_built_in_root_certs(false);
    if let Some((pem, _)) = pki.clients.get(&who) {
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder
}

/// Sends a request and reads the whole reply, which must be what the
/// OpenAPI document says it is (`contract`).
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let (client, request) = request.build_split();
    let request = request.unwrap();
    let (method, path) = (request.method().to_string(), request.url().path().to_owned());
    let response = client.execute(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    crate::contract::check(&method, &path, status, &content_type, &body, &text);
    Reply { status, content_type, body, text }
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The problem `type` code: the last segment of the URI.
    pub fn problem(&self) -> &str {
        assert_eq!(self.content_type, "application/problem+json", "not a problem: {} {}", self.status, self.text);
        self.body["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("")
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.app.local_addr().port())
    }

    pub fn client(&self, who: Who) -> &reqwest::Client {
        &self.clients[&who]
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        send(request).await
    }

    /// A request as `who`, to be completed and passed to [`TestApp::send`].
    pub fn request(&self, who: Who, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client(who).request(method, self.url(path))
    }

    pub async fn get(&self, who: Who, path: &str) -> Reply {
        self.send(self.client(who).get(self.url(path))).await
    }

    /// `GET path` with `query` encoded as the query string.
    pub async fn get_query(&self, who: Who, path: &str, query: &[(&str, &str)]) -> Reply {
        self.send(self.client(who).get(self.url(path)).query(query)).await
    }

    pub async fn post_json(&self, who: Who, path: &str, body: &Value) -> Reply {
        self.send(self.client(who).post(self.url(path)).json(body)).await
    }

    pub async fn put_json(&self, who: Who, path: &str, body: &Value) -> Reply {
        self.send(self.client(who).put(self.url(path)).json(body)).await
    }

    /// A policy upload by the DPO that a second DPO approves (four eyes):
    /// the reply to the upload, after the approval.
    pub async fn adopt_policy(&self, upload: &Value) -> Reply {
        let stored = self.put_json(Who::Dpo, "/v1/policies", upload).await;
        assert_eq!(stored.status, 201, "{}", stored.text);
        assert_eq!(stored.body["state"], "draft", "{}", stored.text);
        let number = stored.body["number"].as_i64().unwrap();
        let approved = self.post_json(Who::SecondDpo, &format!("/v1/policies/{number}/approve"), &serde_json::json!({})).await;
        assert_eq!(approved.status, 200, "{}", approved.text);
        assert_eq!(approved.body["state"], "approved", "{}", approved.text);
        stored
    }

    pub async fn post_raw(&self, who: Who, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(self.client(who).post(self.url(path)).header("content-type", content_type).body(body)).await
    }

    pub async fn submit(&self, who: Who, referral: &Value) -> Reply {
        self.post_json(who, "/v1/referrals", referral).await
    }

    /// Rows in a table, read directly from the database.
    pub async fn count(&self, table: &str) -> i64 {
        self.sql_scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    pub async fn sql_scalar(&self, sql: &str) -> i64 {
        sql_scalar_at(self.backend, &self.config.database.url, self.schema.as_deref(), sql).await
    }

    /// Runs one statement directly against the database; the database's refusal as an error.
    pub async fn sql_try(&self, statement: &str) -> Result<u64, String> {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.config.database.url).await.unwrap();
                let result = sqlx::query(statement).execute(&pool).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
                pool.close().await;
                result
            }
            Backend::Postgres => {
                let pool = self.pg_pool().await;
                let result = sqlx::query(statement).execute(&pool).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
                pool.close().await;
                result
            }
        }
    }

    /// Runs statements directly against the database, below the gateway.
    pub async fn sql_execute(&self, statements: &[&str]) {
        match self.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.config.database.url).await.unwrap();
                for statement in statements {
                    sqlx::query(statement).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = self.pg_pool().await;
                for statement in statements {
                    sqlx::query(statement).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
        }
    }

    /// Every text and binary value stored in the gateway's tables, concatenated.
    pub async fn database_dump(&self) -> Vec<u8> {
        let tables = ["referrals", "referral_events", "outbox", "decision_facts", "policy_versions", "audit_log", "audit_head"];
        let mut dump = Vec::new();
        for table in tables {
            match self.backend {
                Backend::Sqlite => {
                    use sqlx::{Column, Row, TypeInfo};
                    let pool = sqlx::SqlitePool::connect(&self.config.database.url).await.unwrap();
                    for row in sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(&pool).await.unwrap() {
                        for (i, column) in row.columns().iter().enumerate() {
                            match column.type_info().name() {
                                "TEXT" => dump.extend(row.try_get::<Option<String>, _>(i).unwrap().unwrap_or_default().into_bytes()),
                                "BLOB" => dump.extend(row.try_get::<Option<Vec<u8>>, _>(i).unwrap().unwrap_or_default()),
                                _ => {}
                            }
                            dump.push(b'\n');
                        }
                    }
                    pool.close().await;
                }
                Backend::Postgres => {
                    use sqlx::{Column, Row, TypeInfo};
                    let pool = self.pg_pool().await;
                    for row in sqlx::query(&format!("SELECT * FROM {table}")).fetch_all(&pool).await.unwrap() {
                        for (i, column) in row.columns().iter().enumerate() {
                            match column.type_info().name() {
                                "TEXT" => dump.extend(row.try_get::<Option<String>, _>(i).unwrap().unwrap_or_default().into_bytes()),
                                "BYTEA" => dump.extend(row.try_get::<Option<Vec<u8>>, _>(i).unwrap().unwrap_or_default()),
                                _ => {}
                            }
                            dump.push(b'\n');
                        }
                    }
                    pool.close().await;
                }
            }
        }
        dump
    }

    async fn pg_pool(&self) -> sqlx::PgPool {
        pg_pool_in(self.schema.as_deref().unwrap()).await
    }
}

/// A PostgreSQL pool on the test database, in `schema`.
pub async fn pg_pool_in(schema: &str) -> sqlx::PgPool {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(POSTGRES_URL).unwrap().options([("search_path", schema)]);
    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options).await.unwrap()
}

/// One integer a query returns, read directly from a gateway's database.
pub async fn sql_scalar_at(backend: Backend, url: &str, schema: Option<&str>, sql: &str) -> i64 {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
        Backend::Postgres => {
            let pool = pg_pool_in(schema.unwrap()).await;
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

/// One text value (or NULL, or no row) a query returns, read directly.
pub async fn sql_text_at(backend: Backend, url: &str, schema: Option<&str>, sql: &str) -> Option<String> {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let row: Option<(Option<String>,)> = sqlx::query_as(sql).fetch_optional(&pool).await.unwrap();
            pool.close().await;
            row.and_then(|(text,)| text)
        }
        Backend::Postgres => {
            let pool = pg_pool_in(schema.unwrap()).await;
            let row: Option<(Option<String>,)> = sqlx::query_as(sql).fetch_optional(&pool).await.unwrap();
            pool.close().await;
            row.and_then(|(text,)| text)
        }
    }
}

/// A referral fixture with another idempotency key (and optionally destination).
pub fn variant(name: &str, key: &str, destination: Option<&str>) -> Value {
    let mut referral = fixture(name);
    referral["idempotency_key"] = Value::String(key.to_owned());
    if let Some(destination) = destination {
        referral["destination"] = Value::String(destination.to_owned());
    }
    referral
}

/// Says a test's panic message once more after its backtrace. CI keeps the
/// head and the tail of a failed run's output; with `RUST_BACKTRACE` set, the
/// message, printed before the backtrace, fell in the part cut out.
pub fn repeat_panic_messages_last() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let print_as_usual = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |panic| {
            print_as_usual(panic);
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|set| set != "0") {
                let thread = std::thread::current();
                eprintln!("the panic above (thread {}), again after its backtrace: {panic}", thread.name().unwrap_or("unnamed"));
            }
        }));
    });
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::helpers::repeat_panic_messages_last();
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::helpers::repeat_panic_messages_last();
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Personal values of the fixtures that must never appear in logs or in the
/// database: names, dates of birth, document numbers, notes.
pub fn personal_values() -> Vec<String> {
    personal_values_of(FIXTURES.iter().map(|name| fixture(name)))
}

/// Personal values of `referrals` (fixtures moved to another date, say).
pub fn personal_values_of(referrals: impl IntoIterator<Item = Value>) -> Vec<String> {
    let mut values = std::collections::BTreeSet::new();
    for referral in referrals {
        collect_personal(&referral, "", &mut values);
    }
    values.into_iter().collect()
}

fn collect_personal(value: &Value, key: &str, out: &mut std::collections::BTreeSet<String>) {
    const PERSONAL_KEYS: [&str; 8] =
        ["given_names", "family_name", "date_of_birth", "number", "phone", "address", "email", "case_notes"];
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| collect_personal(v, k, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_personal(v, key, out)),
        Value::String(text) if PERSONAL_KEYS.contains(&key) && text.len() >= 4 => {
            out.insert(text.clone());
        }
        _ => {}
    }
}

/// The shipped policy files (`config/policies/*.cedar`): name -> text, as
/// `PUT /v1/policies` takes them.
pub fn policy_files() -> BTreeMap<String, String> {
    referral_gateway::policy_files::read_sources(&repo_path("config/policies"))
        .unwrap()
        .into_iter()
        .map(|source| (source.name, source.text))
        .collect()
}

/// Every subject reference of the fixtures.
pub fn subject_refs() -> Vec<String> {
    FIXTURES.iter().map(|name| fixture(name)["subject_ref"].as_str().unwrap().to_owned()).collect()
}

/// Everything the gateways log while a test runs on this thread (set it as
/// the thread's default subscriber's writer).
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
