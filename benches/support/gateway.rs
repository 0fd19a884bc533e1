//! A gateway for the benchmarks that drive one over HTTPS (`load`,
//! `impact`): the example directory with IOM Banjul given an end-to-end
//! key, the shipped policies, the fixtures' clock, one client certificate
//! per client asked for. Included by each with `#[path]`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use referral_gateway::app::Clock;
use referral_gateway::config::GatewayConfig;
use referral_gateway::startup::Application;

pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Gateway {
    pub app: Application,
    /// One per client asked for, in order.
    pub clients: Vec<reqwest::Client>,
    _dir: tempfile::TempDir,
}

pub fn repo(relative: &str) -> String {
    format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))
}

/// The PostgreSQL schema of this process's gateway (the case keys' beside
/// it, `<schema>_case_keys`).
fn schema() -> String {
    format!("rgwbench_{}", std::process::id())
}

/// Drops the gateway's schema and its case keys', together, before a run
/// (one left by an earlier process of the same id) and after it (nothing
/// left behind). Waits at most 10 s for a lock: a gateway not shut down may
/// still be writing in them.
async fn drop_schemas(schema: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(POSTGRES_URL).await?;
    let mut connection = pool.acquire().await?;
    sqlx::query("SET lock_timeout = '10s'").execute(&mut *connection).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\", \"{schema}_case_keys\" CASCADE")).execute(&mut *connection).await?;
    drop(connection);
    pool.close().await;
    Ok(())
}

/// Stops the gateway's server and workers, once nothing else holds it.
pub async fn shut_down(gateway: impl Into<Arc<Gateway>>) {
    if let Ok(gateway) = Arc::try_unwrap(gateway.into()) {
        gateway.app.shut_down().await;
    }
}

/// A gateway on `backend` with one client per `(organisation, role)`.
pub async fn start(backend: Backend, clients: &[(&str, &str)]) -> Result<Gateway, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    referral_gateway::crypto::at_rest::init(&dir.path().join("keys"))?;
    let names: Vec<String> = (0..clients.len()).map(|n| format!("bench-client-{n}")).collect();
    let pki = referral_gateway::dev_pki::create(&dir.path().join("pki"), &names.iter().map(String::as_str).collect::<Vec<_>>())?;
    // IOM Banjul publishes its own key: the AVR case is asylum-linked and
    // goes to the person's origin state, which needs end-to-end sealing.
    let mut document: referral_gateway::directory::DirectoryDocument =
        serde_json::from_str(&std::fs::read_to_string(repo("config/directory.example.json"))?)?;
    let key = referral_gateway::crypto::jose_keys::generate(referral_gateway::crypto::jose_keys::KeyUse::Enc)?;
    // Key windows, consent and the gateway's clock: one instant, the fixtures' own.
    let now = referral_gateway::demo::fixtures::written_at();
    let entry = referral_gateway::directory::published_key(&key, now - chrono::Duration::days(1), now + chrono::Duration::days(365), referral_gateway::crypto::jose_keys::KeyUse::Enc)?;
    let banjul = document.organisations.iter_mut().find(|o| o.id.as_str() == "gmb-iom-banjul").ok_or("no IOM Banjul in the example directory")?;
    banjul.keys = vec![entry];
    let signed = referral_gateway::dev_pki::sign_directory(&dir.path().join("federation"), &serde_json::to_string(&document)?)?;
    let database = match backend {
        Backend::Sqlite => format!("url = \"sqlite://{}\"", dir.path().join("gateway.db").display()),
        Backend::Postgres => {
            let schema = schema();
            drop_schemas(&schema).await?;
            format!("url = \"{POSTGRES_URL}\"\nschema = \"{schema}\"\nmax_connections = 8")
        }
    };
    let config = format!(
        "country = \"ITA\"\n[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\
         [database]\n{database}\n[keys]\ndir = \"keys\"\n[directory]\nfile = \"{}\"\ncoordinator_key = \"{}\"\n[policy]\ninitial_dir = \"{}\"\n\
         {}[log]\nlevel = \"warn\"\n",
        pki.server_certificate.display(),
        pki.server_key.display(),
        signed.directory.display(),
        signed.coordinator_key.display(),
        repo("config/policies"),
        client_tables(&pki, clients)?,
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config)?;
    let config = GatewayConfig::load(&path)?;
    let app = Application::build(&config, Arc::new(FixedClock(now))).await?;
    let mut built = Vec::new();
    for files in &pki.clients {
        built.push(
            reqwest::Client::builder()
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&pki.ca)?)?)
                .identity(reqwest::Identity::from_pem(&std::fs::read(&files.pem)?)?)
                .pool_max_idle_per_host(128)
                .build()?,
        );
    }
    Ok(Gateway { app, clients: built, _dir: dir })
}

/// The `[auth.clients.*]` tables: each client certificate, its organisation and role.
fn client_tables(pki: &referral_gateway::dev_pki::DevPki, clients: &[(&str, &str)]) -> Result<String, Box<dyn std::error::Error>> {
    let mut tables = String::new();
    for (n, (org, role)) in clients.iter().enumerate() {
        let files = pki.clients.get(n).ok_or("a client certificate is missing")?;
        tables.push_str(&format!(
            "[auth.clients.bench{n}]\nfingerprint = \"{}\"\norg = \"{org}\"\nroles = [\"{role}\"]\n",
            files.fingerprint.display()
        ));
    }
    Ok(tables)
}


/// Runs `run` on each backend the command line names (all if none), in
/// full under `cargo bench` (`--bench`), as a short smoke run under `cargo test`.
pub fn on_each_backend<F, Fut>(run: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn(Backend, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = format!("{backend:?}").to_lowercase();
        if only.is_empty() || only.iter().any(|o| name.contains(o.as_str())) {
            let outcome = runtime.block_on(run(backend, full));
            if backend == Backend::Postgres {
                // Whether the run passed or not; a schema that cannot be
                // dropped is said, and the run's own outcome reported.
                if let Err(error) = runtime.block_on(drop_schemas(&schema())) {
                    eprintln!("left the PostgreSQL schemas {0} and {0}_case_keys: {error}", schema());
                }
            }
            outcome?;
        }
    }
    Ok(())
}
