//! Several gateways federated over real mutual TLS on loopback: each with
//! its own database (SQLite file or PostgreSQL schema), federation keys and
//! listener, all trusting one coordinator's signed directory. Gateways can
//! be stopped and started again on the same database; each start binds a
//! fresh federation port (port 0, never one reserved and released), and the
//! directory, republished, tells the others where it now listens. The
//! directory can also be republished with new keys or status.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use referral_gateway::app::Clock;
use referral_gateway::config::GatewayConfig;
use referral_gateway::crypto::federation_keys;
use referral_gateway::crypto::jose_keys::{self, KeyUse, SigningKey};
use referral_gateway::directory::{Delivery, Directory, DirectoryDocument, MemberStatus, PublishedKey, signed};
use referral_gateway::startup::Application;
use serde_json::Value;

pub use crate::helpers::wait_for;
use crate::helpers::{
    client_for, fixture_time, repo_path, send, sql_scalar_at, sql_text_at, test_ca_pem, test_server_identity, write_config_for, Backend, Reply, Who,
};

/// Fast retries, so that outages in tests last seconds.
pub const FEDERATION_TABLE: &str = r#"[federation]
listen = "127.0.0.1:0"
retry_first_seconds = 1
retry_max_seconds = 2
poll_millis = 50
send_timeout_seconds = 5
"#;

/// The fixture time, running on with the real clock, plus any jump a test makes.
#[derive(Debug)]
pub struct RunningClock {
    started: Instant,
    jumped: Mutex<chrono::Duration>,
}

impl RunningClock {
    pub fn advance(&self, by: chrono::Duration) {
        *self.jumped.lock().unwrap() += by;
    }
}

impl Clock for RunningClock {
    fn now(&self) -> DateTime<Utc> {
        fixture_time() + chrono::Duration::from_std(self.started.elapsed()).unwrap() + *self.jumped.lock().unwrap()
    }
}

pub struct Peer {
    pub country: &'static str,
    pub config: GatewayConfig,
    /// The configuration file, for the command line (the webhook authority aside).
    pub config_path: std::path::PathBuf,
    pub app: Option<Application>,
    pub backend: Backend,
    pub schema: Option<String>,
    /// Where its federation listener last listened, which the directory lists.
    pub endpoint: Option<std::net::SocketAddr>,
    /// Key windows as published, by key id (default: the federation's
    /// window); an empty window leaves the key out of the directory.
    pub windows: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    pub status: MemberStatus,
    /// The packet limit its directory entry publishes (none: the federation's default).
    pub max_packet_bytes: Option<u32>,
    /// The protocol versions its entry lists (none: the example directory's).
    /// An empty list makes it a gateway of the release before version 2.
    pub protocol_versions: Option<Vec<referral_gateway::directory::ProtocolVersion>>,
    _dir: tempfile::TempDir,
}

impl Peer {
    pub fn app(&self) -> &Application {
        self.app.as_ref().expect("gateway running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.app().local_addr().port())
    }

    pub async fn submit(&self, who: Who, referral: &Value) -> Reply {
        send(client_for(who).post(self.url("/v1/referrals")).json(referral)).await
    }

    pub async fn get(&self, who: Who, path: &str) -> Reply {
        send(client_for(who).get(self.url(path))).await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sql_scalar_at(self.backend, &self.config.database.url, self.schema.as_deref(), sql).await
    }

    pub async fn text(&self, sql: &str) -> Option<String> {
        sql_text_at(self.backend, &self.config.database.url, self.schema.as_deref(), sql).await
    }

    pub fn keys_dir(&self) -> &Path {
        &self.config.keys.dir
    }
}

pub struct Federation {
    pub peers: Vec<Peer>,
    /// Organisations that take cases by webhook: id to URL.
    pub webhooks: BTreeMap<String, String>,
    /// Organisations' own end-to-end keys as published: id to entries.
    pub organisation_keys: BTreeMap<String, Vec<PublishedKey>>,
    pub clock: Arc<RunningClock>,
    coordinator: SigningKey,
    serial: u64,
}

impl Federation {
    /// Gateways for `countries`, every one federated, started and listed
    /// with its real endpoint.
    pub async fn start(backend: Backend, countries: &[&'static str]) -> Self {
        Self::start_with(backend, countries, countries).await
    }

    /// As [`Federation::start`], but only the gateways of `federated` send
    /// and receive; the others queue referrals until restarted federated.
    pub async fn start_with(backend: Backend, countries: &[&'static str], federated: &[&'static str]) -> Self {
        let mut federation = Self::prepare(backend, countries);
        federation.launch(federated).await;
        federation
    }

    /// Starts every prepared gateway (federated or not) and lists their endpoints.
    pub async fn launch(&mut self, federated: &[&'static str]) {
        self.publish().await;
        let countries: Vec<&'static str> = self.peers.iter().map(|p| p.country).collect();
        for country in countries {
            self.start_peer(country, federated.contains(&country)).await;
        }
        self.publish().await;
    }

    /// The gateways' files, keys and configuration, none started: a test may
    /// change a configuration before [`Federation::launch`].
    pub fn prepare(backend: Backend, countries: &[&'static str]) -> Self {
        crate::helpers::repeat_panic_messages_last();
        let coordinator_jwk = jose_keys::generate(KeyUse::Sig).unwrap();
        let mut federation = Federation {
            peers: Vec::new(),
            webhooks: BTreeMap::new(),
            organisation_keys: BTreeMap::new(),
            clock: Arc::new(RunningClock { started: Instant::now(), jumped: Mutex::new(chrono::Duration::zero()) }),
            coordinator: SigningKey::from_jwk(&coordinator_jwk).unwrap(),
            serial: 0,
        };
        let coordinator_public = jose_keys::public_of(&coordinator_jwk).unwrap().to_string();
        for country in countries {
            let dir = tempfile::tempdir().unwrap();
            let (path, schema) = write_config_for(dir.path(), backend, country, FEDERATION_TABLE);
            let mut config = GatewayConfig::load(&path).unwrap();
            federation_keys::init(&config.keys.dir, &["localhost".to_owned()]).unwrap();
            // Test webhooks present certificates of the test authority.
            let authority = dir.path().join("webhook-ca.pem");
            std::fs::write(&authority, test_ca_pem()).unwrap();
            config.federation.as_mut().unwrap().webhook_ca_file = Some(authority);
            std::fs::write(&config.directory.coordinator_key, &coordinator_public).unwrap();
            federation.peers.push(Peer {
                country,
                config,
                config_path: path,
                app: None,
                backend,
                schema,
                endpoint: None,
                windows: BTreeMap::new(),
                status: MemberStatus::Active,
                max_packet_bytes: None,
                protocol_versions: None,
                _dir: dir,
            });
        }
        federation
    }

    /// The federation's time now.
    pub fn clock_now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `from`'s gateway as a client of the others: its federation TLS
    /// identity, peers pinned through the directory it holds.
    pub fn peer_client(&self, from: &str, timeout: std::time::Duration) -> referral_gateway::federation::client::PeerClient {
        let gateway = self.peer(from).app().gateway();
        let (chain, key) = gateway.federation_keys().unwrap().tls_identity().unwrap();
        let members: Arc<dyn referral_gateway::federation::tls::Members> = gateway.clone();
        referral_gateway::federation::client::PeerClient::new(members, chain, key, timeout)
    }

    pub fn peer(&self, country: &str) -> &Peer {
        self.peers.iter().find(|p| p.country == country).unwrap()
    }

    pub fn peer_mut(&mut self, country: &str) -> &mut Peer {
        self.peers.iter_mut().find(|p| p.country == country).unwrap()
    }

    /// Starts (or starts again) a gateway on its database and keys. Its
    /// federation listener binds a port of its own (port 0); once it has
    /// listened, the directory is republished with its new endpoint.
    pub async fn start_peer(&mut self, country: &str, federated: bool) {
        let clock: Arc<dyn Clock> = self.clock.clone();
        let peer = self.peer_mut(country);
        assert!(peer.app.is_none(), "{country} is running");
        let mut config = peer.config.clone();
        if !federated {
            config.federation = None;
        }
        let app = Application::build(&config, clock).await.unwrap();
        let restarted = peer.endpoint.is_some();
        let moved = app.federation_addr().is_some_and(|addr| peer.endpoint.replace(addr) != Some(addr));
        peer.app = Some(app);
        if moved {
            self.publish().await;
        }
        if restarted {
            // Whatever waits for its next attempt (retry_max_seconds = 2
            // away at most) falls due now, instead of the test waiting out
            // the backoff in real time.
            self.clock.advance(chrono::Duration::seconds(3));
        }
    }

    /// Stops a gateway: listeners closed, open connections dropped, workers ended.
    pub async fn stop_peer(&mut self, country: &str) {
        let app = self.peer_mut(country).app.take().unwrap();
        app.shut_down().await;
    }

    /// Signs a new directory edition from the peers' keys, windows, status
    /// and endpoints, writes it where each gateway reads it, and puts it in
    /// force in the running ones.
    pub async fn publish(&mut self) {
        self.serial += 1;
        let mut document: DirectoryDocument =
            serde_json::from_str(&std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap()).unwrap();
        document.serial = self.serial;
        let (from, until) = default_window();
        for peer in &self.peers {
            let keys = federation_keys::load(peer.keys_dir()).unwrap();
            let entry = document.gateways.iter_mut().find(|g| g.country.as_str() == peer.country).unwrap();
            entry.keys = referral_gateway::directory::published_keys(&keys, from, until)
                .unwrap()
                .into_iter()
                .filter_map(|key| apply_window(key, &peer.windows))
                .collect();
            entry.tls_spki_sha256 = vec![keys.tls_spki_pin().unwrap()];
            entry.status = peer.status;
            entry.max_packet_bytes = peer.max_packet_bytes;
            if let Some(versions) = &peer.protocol_versions {
                entry.protocol_versions = versions.clone();
            }
            if let Some(endpoint) = peer.endpoint {
                entry.endpoint = format!("https://127.0.0.1:{}", endpoint.port());
            }
        }
        for organisation in &mut document.organisations {
            if let Some(url) = self.webhooks.get(organisation.id.as_str()) {
                organisation.delivery = Delivery::Webhook { url: url.clone() };
            }
            organisation.keys = self.organisation_keys.get(organisation.id.as_str()).cloned().unwrap_or_default();
        }
        let json = serde_json::to_string(&document).unwrap();
        let jws = signed::sign(&json, &self.coordinator).unwrap();
        for peer in &self.peers {
            std::fs::write(&peer.config.directory.file, &jws).unwrap();
            if let Some(app) = &peer.app {
                app.gateway().replace_directory(Directory::parse(&json).unwrap()).unwrap();
            }
        }
    }
}

/// The window every key gets unless a test sets its own.
pub fn default_window() -> (DateTime<Utc>, DateTime<Utc>) {
    (fixture_time() - chrono::Duration::days(1), fixture_time() + chrono::Duration::days(365))
}

/// The key with the window the test set for it; `None` drops it from the directory.
fn apply_window(mut key: PublishedKey, windows: &BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>) -> Option<PublishedKey> {
    let kid = key.jwk.get("kid").and_then(Value::as_str).unwrap_or_default();
    match windows.get(kid) {
        Some((from, until)) if from < until => {
            key.not_before = *from;
            key.not_after = *until;
            Some(key)
        }
        Some(_) => None,
        None => Some(key),
    }
}

/// Waits until a referral shows `wanted`, up to `limit`; on timeout, panics
/// with the whole referral as last shown (status, timeline, delivery), to
/// tell a delivery that never came from one that went on past `wanted`.
pub async fn wait_for_status(peer: &Peer, who: Who, referral_id: &str, wanted: &str, limit: Duration) {
    crate::helpers::wait_showing(wanted, limit, || async {
        let reply = peer.get(who, &format!("/v1/referrals/{referral_id}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.body["status"] == wanted { Ok(()) } else { Err(format!("the referral: {}", reply.text)) }
    })
    .await;
}

/// The referral's status as its sender sees it.
pub async fn status_of(peer: &Peer, who: Who, referral_id: &str) -> String {
    let reply = peer.get(who, &format!("/v1/referrals/{referral_id}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["status"].as_str().unwrap().to_owned()
}

/// A recipient organisation's webhook: HTTPS on loopback with a certificate
/// of the test authority, keeping every body it is sent.
pub struct Webhook {
    pub port: u16,
    pub received: Arc<Mutex<Vec<String>>>,
    /// The status it answers every POST with once started (`204` unless a
    /// test sets another), after keeping the body.
    pub answer: Arc<std::sync::atomic::AtomicU16>,
    /// Bound to `port` and kept, not listening yet: the port stays ours,
    /// and a connection to it is refused until [`Webhook::start`].
    socket: Option<tokio::net::TcpSocket>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Webhook {
    /// A webhook not started yet: its port is bound (so no one else takes
    /// it), but nothing listens there.
    pub fn reserve() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let answer = Arc::new(std::sync::atomic::AtomicU16::new(204));
        Webhook { port, received: Arc::new(Mutex::new(Vec::new())), answer, socket: Some(socket), stop: None }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/cases", self.port)
    }

    /// Where a sending system takes status callback events.
    pub fn events_url(&self) -> String {
        format!("https://localhost:{}/events", self.port)
    }

    /// Starts answering [`Webhook::answer`] to every POST, on its port: the socket bound at
    /// [`Webhook::reserve`] begins to listen.
    pub async fn start(&mut self) {
        use rustls::pki_types::pem::PemObject;
        let (certificate, key) = test_server_identity();
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(certificate.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = self.socket.take().expect("a webhook starts once").listen(1024).unwrap();
        let (received, answer) = (Arc::clone(&self.received), Arc::clone(&self.answer));
        let keep = axum::routing::post(move |body: String| {
            let (received, answer) = (Arc::clone(&received), Arc::clone(&answer));
            async move {
                received.lock().unwrap().push(body);
                axum::http::StatusCode::from_u16(answer.load(std::sync::atomic::Ordering::SeqCst)).unwrap()
            }
        });
        let router = axum::Router::new().route("/cases", keep.clone()).route("/events", keep);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => accepted.unwrap(),
                    _ = &mut stopped => return,
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        use tower::ServiceExt;
                        router.clone().oneshot(request.map(axum::body::Body::new))
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
    }
}
