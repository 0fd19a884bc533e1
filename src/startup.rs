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

use crate::app::policies::{load_active, PolicyStartError};
use crate::app::{Clock, Gateway};
use crate::auth::client_cert::ClientCertificates;
use crate::auth::oidc::{OidcSetupError, OidcVerifier};
use crate::config::GatewayConfig;
use crate::crypto::at_rest::{KeyError, KeyRing};
use crate::crypto::jose_keys::VerifyingKey;
use crate::directory::signed;
use crate::http::auth::Authenticator;
use crate::http::metrics::Metrics;
use crate::http::server::{serve, tls_acceptor, TlsSetupError};
use crate::http::{openapi_json, router, AppState};
use crate::store::writer::Writer;
use crate::store::StoreError;

/// How often a replica looks for a policy version stored by another.
const POLICY_REFRESH: Duration = Duration::from_secs(5);

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
}

/// A started gateway.
pub struct Application {
    local_addr: SocketAddr,
    tls: bool,
    gateway: Arc<Gateway>,
    shutdown: watch::Sender<()>,
    server: JoinHandle<()>,
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
        let tls = config.server.tls.as_ref().map(tls_acceptor).transpose()?;
        let openapi = openapi_json().map_err(StartError::OpenApi)?;
        let oidc = match &config.auth.oidc {
            Some(oidc) => Some(OidcVerifier::discover(oidc).await?),
            None => None,
        };

        let store = crate::store::open(&config.database).await?;
        let writer = Writer::start(Arc::clone(&store));
        let initial_dir = config.policy.initial_dir.clone();
        let policy = load_active(
            store.as_ref(),
            &writer,
            move || crate::policy_files::read_sources(&initial_dir).map_err(|e| e.to_string()),
            clock.now(),
        )
        .await?;
        let mut gateway = Gateway::new(config.country, directory, keys, store, writer, clock, policy);
        // Federation keys are optional until the peer transport is configured.
        if config.keys.dir.join(crate::crypto::federation_keys::FEDERATION_DIR).is_dir() {
            gateway = gateway.with_federation_keys(crate::crypto::federation_keys::load(&config.keys.dir)?);
        }
        let gateway = Arc::new(gateway);

        let state = AppState {
            gateway: Arc::clone(&gateway),
            auth: Arc::new(Authenticator { clients: ClientCertificates::new(config.auth.clients.values()), oidc }),
            metrics: Arc::new(Metrics::new()),
            openapi: Arc::new(openapi),
            body_limit: config.server.body_limit_bytes,
        };
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| StartError::Bind { addr: config.server.listen, reason: e.to_string() })?;
        let local_addr = listener.local_addr().map_err(|e| StartError::Bind { addr: config.server.listen, reason: e.to_string() })?;
        let (shutdown, stopped) = watch::channel(());
        let is_tls = tls.is_some();
        let server = tokio::spawn(serve(listener, tls, router(state), stopped.clone()));
        tokio::spawn(refresh_policy(Arc::clone(&gateway), stopped.clone()));
        let watch = DirectoryWatch {
            path: config.directory.file.clone(),
            coordinator,
            every: Duration::from_secs(config.directory.refresh_seconds),
            last_text: directory_text,
        };
        tokio::spawn(refresh_directory(Arc::clone(&gateway), watch, stopped));
        tracing::info!(%local_addr, tls = is_tls, country = %config.country, "gateway listening");
        Ok(Self { local_addr, tls: is_tls, gateway, shutdown, server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:PORT` or `http://...`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops accepting connections.
    pub fn stop(&self) {
        let _ = self.shutdown.send(());
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
        self.stop();
        let _ = self.server.await;
    }
}

struct DirectoryWatch {
    path: PathBuf,
    coordinator: VerifyingKey,
    every: Duration,
    /// The text last read, good or bad: a file is checked again only once it changes.
    last_text: String,
}

/// Re-reads the signed directory when its file changes. A new edition that
/// fails its signature or checks, is older, or drops this gateway is logged
/// and ignored: the last good edition stays in force.
async fn refresh_directory(gateway: Arc<Gateway>, mut watch: DirectoryWatch, mut stopped: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(watch.every) => {},
            _ = stopped.changed() => return,
        }
        let Ok(text) = tokio::fs::read_to_string(&watch.path).await else {
            tracing::warn!(path = %watch.path.display(), "directory file unreadable; the previous edition stays in force");
            continue;
        };
        if text == watch.last_text {
            continue;
        }
        let outcome = signed::verify(&text, &watch.coordinator).and_then(|offered| gateway.replace_directory(offered));
        watch.last_text = text;
        match outcome {
            Ok(serial) => tracing::info!(serial, "directory edition in force"),
            Err(error) => tracing::error!(%error, "new directory refused; the previous edition stays in force"),
        }
    }
}

async fn refresh_policy(gateway: Arc<Gateway>, mut stopped: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLICY_REFRESH) => {},
            _ = stopped.changed() => return,
        }
        if let Err(error) = gateway.refresh_policy().await {
            tracing::error!(%error, "policy refresh failed; the previous version stays active");
        }
    }
}
