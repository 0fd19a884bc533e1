//! Builds a running gateway from its configuration: keys, directory, store,
//! policy, authentication, router, listener. `main` and the tests both go
//! through [`Application::build`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::dpo::policies::{load_active, PolicyStartError};
use crate::app::backoff::Backoff;
use crate::app::sending::delivery::{DeliverySettings, PeerTransport};
use crate::app::sending::delivery_observer::DeliveryObserver;
use crate::app::{Clock, Gateway};
use crate::auth::client_cert::ClientCertificates;
use crate::auth::oidc::{OidcSetupError, OidcVerifier};
use crate::http::console::Console;
use crate::config::{FederationConfig, GatewayConfig};
use crate::app::receiving::pushing::RecipientPush;
use crate::federation::client::PeerClient;
use crate::federation::callbacks::CallbackClient;
use crate::federation::webhook::WebhookClient;
use crate::federation::outbox;
use crate::federation::tls::{server_config, Members};
use crate::crypto::at_rest::{KeyError, KeyRing};
use crate::crypto::jose_keys::VerifyingKey;
use crate::directory::signed;
use crate::http::auth::Authenticator;
use crate::http::metrics::Metrics;
use crate::http::server::{serve, tls_acceptor, TlsSetupError};
use crate::http::{openapi_json, router, AppState};
use crate::store::writer::Writer;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("keys: {0}")]
    Keys(#[from] KeyError),
    #[error("directory {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyStartError),
    #[error("console: {0}")]
    Console(String),
    #[error("auth.oidc: {0}")]
    Oidc(#[from] OidcSetupError),
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
    #[error("server.listen {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("{0}")]
    OpenApi(String),
    #[error("federation keys: {0}")]
    FederationKeys(#[from] crate::crypto::federation_keys::FederationKeyError),
    #[error("directory: the gateway's own country {0} has no gateway entry")]
    NotAMember(String),
    #[error("federation: {0}")]
    Federation(String),
    #[error(
        "server.body_limit_bytes {body_limit}: a case that large could never be delivered: sealed, it would exceed the largest packet any peer gateway takes ({packet_limit} bytes, from the directory); set it to at most {deliverable}"
    )]
    UndeliverableBodyLimit { body_limit: usize, packet_limit: usize, deliverable: usize },
    #[error("federation.listen {addr}: {reason}")]
    FederationBind { addr: SocketAddr, reason: String },
    #[error("callbacks.{name}: {reason}")]
    Callbacks { name: String, reason: String },
}

/// A started gateway.
pub struct Application {
    local_addr: SocketAddr,
    federation_addr: Option<SocketAddr>,
    tls: bool,
    gateway: Arc<Gateway>,
    directory_watch: Arc<tokio::sync::Mutex<DirectoryWatch>>,
    shutdown: watch::Sender<()>,
    server: JoinHandle<()>,
    federation_server: Option<JoinHandle<()>>,
    /// The workers and refresh tasks: each ends at the stop, once its round is done.
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Application {
    pub async fn build(config: &GatewayConfig, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let keys = KeyRing::load(&config.keys.dir)?;
        let directory_path = config.directory.file.display().to_string();
        let coordinator = signed::read_coordinator_key(&config.directory.coordinator_key)
            .map_err(|e| StartError::Directory { path: directory_path.clone(), reason: e.to_string() })?;
        let (directory_text, directory) = signed::read_signed(&config.directory.file, &coordinator)
            .map_err(|e| StartError::Directory { path: directory_path, reason: e.to_string() })?;
        if directory.gateway(config.country).is_none() {
            return Err(StartError::NotAMember(config.country.to_string()));
        }
        // The two limits coherent: a body the gateway takes must fit, sealed, the packets some peer takes.
        let packet_limit = directory.largest_peer_packet_limit(config.country);
        let deliverable = crate::crypto::packet::largest_body_within(packet_limit, false);
        if config.server.body_limit_bytes > deliverable {
            return Err(StartError::UndeliverableBodyLimit { body_limit: config.server.body_limit_bytes, packet_limit, deliverable });
        }
        let tls = config.server.tls.as_ref().map(tls_acceptor).transpose()?;
        let openapi = openapi_json().map_err(StartError::OpenApi)?;
        let oidc = match &config.auth.oidc {
            Some(oidc) => Some(OidcVerifier::discover(oidc).await?),
            None => None,
        };

        let store = crate::store::open(&config.database).await?;
        let writer = Writer::start(Arc::clone(&store)).with_deadline(config.database.statement_timeout());
        // A process killed before it settled its claims left them leased; this
        // node runs no other, so they are taken back now rather than after the lease.
        // Only an optimisation (the leases run out anyway): a failure, a slow
        // scan of a large backlog say, must not stop the start.
        match store.release_earlier_claims(clock.now().timestamp_millis()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(claims = released, "claims of this node's earlier process taken back"),
            Err(error) => tracing::warn!(%error, "claims of this node's earlier process not taken back; they are retried when their lease ends"),
        }
        let initial_dir = config.policy.initial_dir.clone();
        let policy = load_active(
            store.as_ref(),
            &writer,
            move || crate::policy_files::read_sources(&initial_dir).map_err(|e| e.to_string()),
            clock.now(),
        )
        .await?;
        let case_keys = crate::store::case_keys::open(&config.database).await?;
        let vault = crate::app::vault::Vault::new(keys, case_keys);
        let approvals_required = config.policy.approvals_required();
        if approvals_required.is_single_person() {
            tracing::warn!(
                "policy.approvals_required = 1: A POLICY VERSION TAKES EFFECT ON ONE DPO'S WORD, WITH NO SECOND PERSON SIGNING IT OFF. \
                 Use this for a demonstration only; set 2 (the default) or more in production"
            );
        }
        let governance = crate::app::PolicyGovernance { approvals_required, solver: config.policy.solver(), impact_days: config.policy.impact_days };
        let mut gateway = Gateway::new(config.country, directory, vault, store, writer, clock, policy)
            .with_readiness_timeout(config.database.readiness_timeout())
            .with_policy_governance(governance)
            .with_statistics(config.statistics.control())
            .with_deadlines(config.deadlines.deadlines())
            .with_callbacks(callback_targets(config)?)
            .with_override_window(config.overrides.approval_window())
            .with_matching(config.matching);
        // Federation keys are needed only once the peer side is configured.
        if config.federation.is_some() || config.keys.dir.join(crate::crypto::federation_keys::FEDERATION_DIR).is_dir() {
            gateway = gateway.with_federation_keys(crate::crypto::federation_keys::load(&config.keys.dir)?);
        }
        if let Some(federation) = &config.federation {
            gateway = gateway.with_delivery(delivery_settings(federation));
        }
        let metrics = Arc::new(Metrics::new());
        let gateway = Arc::new(gateway.with_delivery_observer(Arc::clone(&metrics) as Arc<dyn DeliveryObserver>));
        gateway.register_callbacks().await.map_err(|error| StartError::Callbacks { name: "*".to_owned(), reason: error.to_string() })?;

        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| StartError::Bind { addr: config.server.listen, reason: e.to_string() })?;
        let local_addr = listener.local_addr().map_err(|e| StartError::Bind { addr: config.server.listen, reason: e.to_string() })?;
        // The console's sign-in redirect names the address browsers reach, known once bound.
        let console = Console::from_config(config, local_addr).map_err(StartError::Console)?.map(Arc::new);
        let state = AppState {
            gateway: Arc::clone(&gateway),
            auth: Arc::new(Authenticator { clients: ClientCertificates::new(config.auth.clients.values()), oidc }),
            metrics: Arc::clone(&metrics),
            openapi: Arc::new(openapi),
            body_limit: config.server.body_limit_bytes,
            console,
        };
        let (shutdown, stopped) = watch::channel(());
        let mut tasks = Vec::new();
        let (federation_addr, federation_server) = match &config.federation {
            Some(federation) => {
                let (addr, server, workers) =
                    start_federation(&gateway, &metrics, federation, body_guard_of(&config.server), stopped.clone()).await?;
                tasks.extend(workers);
                (Some(addr), Some(server))
            }
            None => (None, None),
        };
        let is_tls = tls.is_some();
        let body_guard = body_guard_of(&config.server);
        let router = router(state).layer(axum::middleware::from_fn(move |request, next| body_guard.clone().guard(request, next)));
        let server = tokio::spawn(serve(listener, tls, router, stopped.clone()));
        tasks.push(tokio::spawn(refresh_policy(Arc::clone(&gateway), Duration::from_secs(config.policy.refresh_seconds), stopped.clone())));
        let sweep_pace = crate::federation::rounds::Pace::Percent(config.retention.backlog_share_percent);
        tasks.push(tokio::spawn(sweep_retention(Arc::clone(&gateway), Duration::from_secs(config.retention.sweep_seconds), sweep_pace, stopped.clone())));
        tasks.push(tokio::spawn(watch_deadlines(Arc::clone(&gateway), stopped.clone())));
        if gateway.has_callbacks() {
            let authorities = config.federation.as_ref().and_then(|f| f.webhook_ca_file.as_deref());
            let timeout = Duration::from_secs(config.federation.as_ref().map_or(DEFAULT_CALLBACK_TIMEOUT_SECONDS, |f| f.send_timeout_seconds));
            let sender = CallbackClient::new(authorities, timeout).map_err(|e| StartError::Callbacks { name: "*".to_owned(), reason: e.to_string() })?;
            let poll = Duration::from_millis(config.federation.as_ref().map_or(DEFAULT_CALLBACK_POLL_MILLIS, |f| f.poll_millis));
            tasks.push(tokio::spawn(crate::federation::callbacks::run(Arc::clone(&gateway), Arc::new(sender), poll, stopped.clone())));
        }
        let directory_watch =
            Arc::new(tokio::sync::Mutex::new(DirectoryWatch { path: config.directory.file.clone(), coordinator, last_text: directory_text }));
        let every = Duration::from_secs(config.directory.refresh_seconds);
        tasks.push(tokio::spawn(refresh_directory(Arc::clone(&gateway), Arc::clone(&directory_watch), every, stopped)));
        tracing::info!(%local_addr, tls = is_tls, country = %config.country, "gateway listening");
        Ok(Self { local_addr, federation_addr, tls: is_tls, gateway, directory_watch, shutdown, server, federation_server, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where member gateways connect, when the peer side is configured.
    pub fn federation_addr(&self) -> Option<SocketAddr> {
        self.federation_addr
    }

    /// `https://127.0.0.1:PORT` or `http://...`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Runs one round of the directory refresh now, as the refresh task does
    /// every `directory.refresh_seconds`: reads the file and, if it changed,
    /// puts the new edition in force or refuses it.
    pub async fn refresh_directory(&self) -> DirectoryRefresh {
        directory_round(&self.gateway, &mut *self.directory_watch.lock().await).await
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        let _ = self.shutdown.send(());
    }

    /// Stops and waits until both listeners are closed and their connections
    /// dropped, and every worker and refresh task has ended (a round under
    /// way is finished first): nothing of this gateway touches its database
    /// any more.
    pub async fn shut_down(self) {
        self.stop();
        let _ = self.server.await;
        if let Some(federation) = self.federation_server {
            let _ = federation.await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Serves until the process is asked to stop (Ctrl-C or SIGTERM).
    pub async fn run_until_stopped(self) {
        let stop_signal = async {
            #[cfg(unix)]
            {
                let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = async { match terminate.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        };
        stop_signal.await;
        tracing::info!("stopping");
        self.shut_down().await;
    }
}

fn delivery_settings(federation: &FederationConfig) -> DeliverySettings {
    DeliverySettings {
        window: Duration::from_secs(federation.delivery_window_hours * 3600),
        backoff: Backoff { first: Duration::from_secs(federation.retry_first_seconds), max: Duration::from_secs(federation.retry_max_seconds) },
        // A claim must outlast the slowest send, or another replica takes the entry meanwhile.
        lease: Duration::from_secs(2 * federation.send_timeout_seconds + 30).max(DeliverySettings::default().lease),
        erasure_deadline: Duration::from_secs(federation.erasure_deadline_hours * 3600),
        ..DeliverySettings::default()
    }
}

/// Opens the listener for member gateways and starts the outbox, push and
/// inbox workers; returns the listener's address and task, and the workers.
/// Each listener gets its own guard, so that bodies trickled to one do not
/// take the other's slots.
fn body_guard_of(server: &crate::config::ServerConfig) -> crate::http::body_guard::BodyGuard {
    crate::http::body_guard::BodyGuard::new(Duration::from_secs(server.body_read_timeout_seconds), server.max_concurrent_bodies)
}

async fn start_federation(
    gateway: &Arc<Gateway>,
    metrics: &Arc<Metrics>,
    federation: &FederationConfig,
    body_guard: crate::http::body_guard::BodyGuard,
    stopped: watch::Receiver<()>,
) -> Result<(SocketAddr, JoinHandle<()>, [JoinHandle<()>; 3]), StartError> {
    let keys = gateway.federation_keys().ok_or_else(|| StartError::Federation("no federation keys (keys init creates them)".to_owned()))?;
    let (chain, key) = keys.tls_identity()?;
    let members: Arc<dyn Members> = Arc::clone(gateway) as Arc<dyn Members>;
    let server = server_config(Arc::clone(&members), chain.clone(), key.clone_key()).map_err(|e| StartError::Federation(e.to_string()))?;
    let listener = TcpListener::bind(federation.listen)
        .await
        .map_err(|e| StartError::FederationBind { addr: federation.listen, reason: e.to_string() })?;
    let addr = listener.local_addr().map_err(|e| StartError::FederationBind { addr: federation.listen, reason: e.to_string() })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let router = crate::http::federation::router(Arc::clone(gateway), Arc::clone(metrics))
        .layer(axum::middleware::from_fn(move |request, next| body_guard.clone().guard(request, next)));
    let server = tokio::spawn(serve(listener, Some(acceptor), router, stopped.clone()));
    let timeout = Duration::from_secs(federation.send_timeout_seconds);
    // Matching's client is held by the gateway: it reaches the directory through a weak reference.
    let weak_members: Arc<dyn Members> = Arc::new(crate::federation::tls::MembersOf(Arc::downgrade(gateway)));
    gateway.set_match_transport(Arc::new(PeerClient::new(weak_members, chain.clone(), key.clone_key(), timeout)));
    let transport: Arc<dyn PeerTransport> = Arc::new(PeerClient::new(members, chain, key, timeout));
    let webhooks = WebhookClient::new(&keys.tls_identity_pem(), federation.webhook_ca_file.as_deref(), timeout)
        .map_err(|e| StartError::Federation(e.to_string()))?;
    let webhooks: Arc<dyn RecipientPush> = Arc::new(webhooks);
    let poll = Duration::from_millis(federation.poll_millis);
    let workers = [
        tokio::spawn(crate::federation::push::run(Arc::clone(gateway), webhooks, poll, stopped.clone())),
        tokio::spawn(outbox::run(Arc::clone(gateway), transport, poll, stopped.clone())),
        tokio::spawn(crate::federation::inbox::run(Arc::clone(gateway), poll, stopped)),
    ];
    tracing::info!(%addr, "federation listener up");
    Ok((addr, server, workers))
}

struct DirectoryWatch {
    path: PathBuf,
    coordinator: VerifyingKey,
    /// The text last read, good or bad: a file is checked again only once it changes.
    last_text: String,
}

/// What one round of the directory refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryRefresh {
    /// The file is as last read (or unreadable): nothing changed.
    Unchanged,
    /// A new edition, with this serial, is in force.
    InForce(u64),
    /// The new text was refused (signature, checks, older, or without this
    /// gateway); the previous edition stays in force.
    Refused(String),
}

/// Re-reads the signed directory every `every`, and puts a new edition in force.
async fn refresh_directory(
    gateway: Arc<Gateway>,
    watch: Arc<tokio::sync::Mutex<DirectoryWatch>>,
    every: Duration,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stopped.changed() => return,
        }
        directory_round(&gateway, &mut *watch.lock().await).await;
    }
}

/// Re-reads the signed directory if its file changed. A new edition that
/// fails its signature or checks, is older, or drops this gateway is logged
/// and ignored: the last good edition stays in force.
async fn directory_round(gateway: &Gateway, watch: &mut DirectoryWatch) -> DirectoryRefresh {
    let Ok(text) = tokio::fs::read_to_string(&watch.path).await else {
        tracing::warn!(path = %watch.path.display(), "directory file unreadable; the previous edition stays in force");
        return DirectoryRefresh::Unchanged;
    };
    if text == watch.last_text {
        return DirectoryRefresh::Unchanged;
    }
    let outcome = signed::verify(&text, &watch.coordinator).and_then(|offered| gateway.replace_directory(offered));
    watch.last_text = text;
    match outcome {
        Ok(serial) => {
            tracing::info!(serial, "directory edition in force");
            DirectoryRefresh::InForce(serial)
        }
        Err(error) => {
            tracing::error!(%error, "new directory refused; the previous edition stays in force");
            DirectoryRefresh::Refused(error.to_string())
        }
    }
}

/// Cases erased per sweep round at most, on each side; a full round runs again at once.
const RETENTION_BATCH: i64 = 256;
/// Decisions' facts forgotten per sweep round at most.
const FACTS_BATCH: i64 = 1000;

/// Erases what passed its retention deadline, every `every`, on every
/// gateway: a gateway that stopped federating still holds cases to erase.
/// A backlog is erased round after round at `pace`.
async fn sweep_retention(gateway: Arc<Gateway>, every: Duration, pace: crate::federation::rounds::Pace, stopped: watch::Receiver<()>) {
    let round = || async {
        // Past the impact replay window, decisions' facts go too (src/app/dpo/impact.rs):
        // apart, so that neither job's failure holds the other up.
        let forgotten = match gateway.forget_decision_facts(gateway.impact_since(), FACTS_BATCH).await {
            Ok(forgotten) => forgotten,
            Err(error) => {
                tracing::error!(%error, "forgetting decision facts past the impact window failed; the next round tries again");
                0
            }
        };
        let erased = gateway.erase_expired(RETENTION_BATCH).await?;
        Ok(i64::try_from(erased.sent.max(erased.received)).unwrap_or(i64::MAX) >= RETENTION_BATCH || i64::try_from(forgotten).unwrap_or(i64::MAX) >= FACTS_BATCH)
    };
    crate::federation::rounds::run("retention", round, std::future::pending::<()>, every, pace, stopped).await;
}

/// Without `[federation]`, how long one callback may take, and how often the
/// callback worker looks for events (its settings are the federation's).
const DEFAULT_CALLBACK_TIMEOUT_SECONDS: u64 = 10;
const DEFAULT_CALLBACK_POLL_MILLIS: u64 = 1000;

/// The `[callbacks]` tables, their keys read from their files.
fn callback_targets(config: &GatewayConfig) -> Result<crate::app::sending::callbacks::CallbackTargets, StartError> {
    use crate::app::sending::callbacks::CallbackTarget;
    let mut targets = crate::app::sending::callbacks::CallbackTargets::new();
    for (name, callback) in &config.callbacks {
        let failed = |reason: String| StartError::Callbacks { name: name.clone(), reason };
        let org = crate::domain::OrgId::parse(&callback.org).map_err(|e| failed(e.to_string()))?;
        let path = &callback.secret_file;
        let bytes = std::fs::read(path).map_err(|e| failed(format!("secret_file {}: {e}", path.display())))?;
        let key = crate::crypto::callback_event::CallbackKey::new(&bytes).map_err(|e| failed(format!("secret_file {}: {e}", path.display())))?;
        let retry = Duration::from_secs(callback.retry_hours.saturating_mul(3600));
        targets.insert(org, CallbackTarget { url: callback.url.clone(), key, retry });
    }
    Ok(targets)
}

/// How often overdue emergencies and lapsed overrides are looked for: a
/// deadline is at least an hour, so a warning comes within a minute of it;
/// an override lapsed is refused approval at once, denied within a minute.
const DEADLINE_WATCH: Duration = Duration::from_secs(60);

/// Logs each emergency referral that misses a deadline, once per deadline;
/// denies each referral whose emergency override was not approved in time.
async fn watch_deadlines(gateway: Arc<Gateway>, stopped: watch::Receiver<()>) {
    use crate::app::sending::deadlines::WARNINGS_PER_ROUND;
    use crate::app::dpo::overrides::LAPSED_PER_ROUND;
    let round = || async {
        let warned = gateway.warn_overdue_emergencies(WARNINGS_PER_ROUND).await?;
        let lapsed = gateway.lapse_overrides(LAPSED_PER_ROUND).await?;
        Ok(i64::try_from(warned).unwrap_or(i64::MAX) >= WARNINGS_PER_ROUND || i64::try_from(lapsed).unwrap_or(i64::MAX) >= LAPSED_PER_ROUND)
    };
    crate::federation::rounds::run("deadlines", round, std::future::pending::<()>, DEADLINE_WATCH, crate::federation::rounds::Pace::FlatOut, stopped).await;
}

/// Looks for a policy version another replica stored, every `every`
/// (`policy.refresh_seconds`).
async fn refresh_policy(gateway: Arc<Gateway>, every: Duration, mut stopped: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stopped.changed() => return,
        }
        if let Err(error) = gateway.refresh_policy().await {
            tracing::error!(%error, "policy refresh failed; the previous version stays active");
        }
    }
}
