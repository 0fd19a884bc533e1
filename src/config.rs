//! Typed gateway configuration: a TOML file, then `RGW_...` environment
//! variables on top (`RGW_DATABASE__URL` overrides `[database] url`).
//!
//! Everything is checked at start; an error names the key at fault.
//!
//! One file of some 800 lines, on purpose: its types are the configuration
//! file's format, section by section in the order `gateway.example.toml`
//! has them, with the checks beside the fields they check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

// Each module declares its own settings; this file composes them.
pub use crate::auth::client_cert::{CertificateFingerprint, ClientCertificateConfig};
pub use crate::auth::oidc::OidcConfig;
use crate::domain::priority::{Deadlines, DeadlinesByPriority, DeadlinesInvalid};
use crate::domain::CountryCode;

mod environment;
pub mod template;

pub use environment::KEY_PATHS;
use environment::Variable;

/// Prefix of the environment variables that override file keys; nested keys
/// are joined with `__`.
pub const ENV_PREFIX: &str = "RGW_";

/// Tolerated clock difference with an identity provider, at most: beyond
/// it, an expired token would stay valid for too long.
const MAX_LEEWAY_SECONDS: u64 = 300;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The country this gateway serves (ISO 3166-1 alpha-3). Referrals are
    /// submitted by organisations of this country.
    pub country: CountryCode,
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    pub keys: KeysConfig,
    pub directory: DirectoryConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// The peer side: listener for member gateways and delivery to them.
    /// Without it the gateway queues referrals but neither sends nor receives.
    #[serde(default)]
    pub federation: Option<FederationConfig>,
    /// The retention sweep, which runs on every gateway, federated or not.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// How statistics are released (`GET /v1/statistics`).
    #[serde(default)]
    pub statistics: StatisticsConfig,
    /// Deadlines per priority, for following referrals (`overdue`).
    #[serde(default)]
    pub deadlines: DeadlinesConfig,
    /// Emergency overrides (sharing without consent when a life is at risk).
    #[serde(default)]
    pub overrides: OverridesConfig,
    /// Matching tracing requests with other gateways' without disclosure.
    #[serde(default)]
    pub matching: MatchingConfig,
    /// Status callbacks: organisations of this country told of every entry
    /// added to their referrals' timelines, by a name of the operator's choosing.
    #[serde(default)]
    pub callbacks: BTreeMap<String, CallbackConfig>,
    /// The console for DPOs and auditors in the browser (`/console/`).
    /// Without this table there is none.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
    #[serde(default)]
    pub log: LogConfig,
}

/// The `[overrides]` settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesConfig {
    /// How long an emergency override waits for a DPO's approval before the
    /// referral is denied, in minutes (5 to 1440).
    #[serde(default = "default_override_window_minutes")]
    pub approval_window_minutes: u64,
}

pub(crate) fn default_override_window_minutes() -> u64 {
    60
}

impl Default for OverridesConfig {
    fn default() -> Self {
        Self { approval_window_minutes: default_override_window_minutes() }
    }
}

impl OverridesConfig {
    pub fn approval_window(&self) -> chrono::Duration {
        chrono::Duration::minutes(i64::try_from(self.approval_window_minutes).unwrap_or(i64::MAX))
    }
}

/// The `[matching]` settings (tracing requests matched across gateways).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// How many families of keys (a name part, its sound, the whole name)
    /// must agree for a match: 2 to 13. Lower finds more, and more wrongly.
    #[serde(default = "default_match_threshold")]
    pub threshold: usize,
    /// How many match queries each member gateway may ask of this one in
    /// any 24 hours: 1 to 10000. What a gateway could learn by guessing
    /// names is bounded by this.
    #[serde(default = "default_match_queries_per_day")]
    pub queries_per_day: i64,
    /// How long the handle an answer gives for a search stays good for
    /// telling this gateway of a match, in hours: 1 to 720.
    #[serde(default = "default_match_handle_hours")]
    pub handle_hours: i64,
}

pub(crate) fn default_match_threshold() -> usize {
    3
}

pub(crate) fn default_match_queries_per_day() -> i64 {
    200
}

pub(crate) fn default_match_handle_hours() -> i64 {
    72
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self { threshold: default_match_threshold(), queries_per_day: default_match_queries_per_day(), handle_hours: default_match_handle_hours() }
    }
}

/// A `[callbacks.<name>]` table: where an organisation is told of its
/// referrals' timeline entries, and the key the events are signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// The organisation's id in the directory; one callback each.
    pub org: String,
    /// Its `https://` URL, which each event is POSTed to.
    pub url: String,
    /// A file holding the key events are signed with (HS256), at least 32
    /// bytes, shared with the organisation; read at start.
    pub secret_file: PathBuf,
    /// How long an event is retried (with backoff) before it is given up
    /// (`failed`), in hours: 1 to 720.
    #[serde(default = "default_callback_retry_hours")]
    pub retry_hours: u64,
}

pub(crate) fn default_callback_retry_hours() -> u64 {
    72
}

/// Longest a callback event is retried: 30 days, as a packet.
pub const MAX_CALLBACK_RETRY_HOURS: u64 = 720;

/// The `[console]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where browsers reach this gateway (`https://host[:port]`, no path):
    /// the identity provider sends them back there. By default `https://`
    /// and the address the gateway listens on, which suits a test or a demo only.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Unused this many minutes, a session ends (5 to 240).
    #[serde(default = "default_console_idle_minutes")]
    pub idle_minutes: u64,
    /// However busy, a session ends this many hours after sign-in (1 to 24).
    #[serde(default = "default_console_session_hours")]
    pub session_hours: u64,
    /// Sign-in with the `[auth.oidc]` identity provider, as this client.
    /// Without it, only a browser's client certificate signs in.
    #[serde(default)]
    pub oidc: Option<ConsoleOidcConfig>,
}

/// The `[console.oidc]` settings: the console as a confidential client of
/// the `[auth.oidc]` provider (authorization code flow with PKCE).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleOidcConfig {
    pub client_id: String,
    /// Better set through `RGW_CONSOLE__OIDC__CLIENT_SECRET` than in the file.
    pub client_secret: String,
    /// Scopes asked for besides `openid`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ConsoleOidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOidcConfig").field("client_id", &self.client_id).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

pub(crate) fn default_console_idle_minutes() -> u64 {
    30
}

pub(crate) fn default_console_session_hours() -> u64 {
    8
}

impl ConsoleConfig {
    /// `https://host[:port]` of [`ConsoleConfig::public_url`], or of `listening`.
    pub fn public_origin(&self, listening: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://{listening}"),
        }
    }
}

/// The `[deadlines]` settings: for each priority, hours from a referral's
/// acceptance to its delivery, its recipient's acknowledgement and its
/// recipient's first answer.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlinesConfig {
    #[serde(default = "default_emergency_deadlines")]
    pub emergency: PriorityDeadlines,
    #[serde(default = "default_urgent_deadlines")]
    pub urgent: PriorityDeadlines,
    #[serde(default = "default_normal_deadlines")]
    pub normal: PriorityDeadlines,
}

/// One priority's deadlines, in whole hours (1 to [`MAX_DEADLINE_HOURS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityDeadlines {
    pub delivery_hours: u32,
    pub acknowledgement_hours: u32,
    pub first_status_hours: u32,
}

/// A year: a deadline further out follows nothing.
pub const MAX_DEADLINE_HOURS: u32 = 8784;

impl PriorityDeadlines {
    fn of(deadlines: Deadlines) -> Self {
        let hours = |d: chrono::Duration| u32::try_from(d.num_hours()).unwrap_or(u32::MAX);
        Self {
            delivery_hours: hours(deadlines.delivery),
            acknowledgement_hours: hours(deadlines.acknowledgement),
            first_status_hours: hours(deadlines.first_status),
        }
    }

    fn deadlines(self) -> Result<Deadlines, DeadlinesInvalid> {
        let hours = |h: u32| chrono::Duration::hours(i64::from(h));
        Deadlines::new(hours(self.delivery_hours), hours(self.acknowledgement_hours), hours(self.first_status_hours))
    }
}

pub(crate) fn default_emergency_deadlines() -> PriorityDeadlines {
    PriorityDeadlines::of(DeadlinesByPriority::default().emergency)
}

pub(crate) fn default_urgent_deadlines() -> PriorityDeadlines {
    PriorityDeadlines::of(DeadlinesByPriority::default().urgent)
}

pub(crate) fn default_normal_deadlines() -> PriorityDeadlines {
    PriorityDeadlines::of(DeadlinesByPriority::default().normal)
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        Self { emergency: default_emergency_deadlines(), urgent: default_urgent_deadlines(), normal: default_normal_deadlines() }
    }
}

impl DeadlinesConfig {
    /// Each priority's settings, with the key they sit under.
    fn each(&self) -> [(&'static str, PriorityDeadlines); 3] {
        [("deadlines.emergency", self.emergency), ("deadlines.urgent", self.urgent), ("deadlines.normal", self.normal)]
    }

    /// The deadlines these settings make; `validate` refuses any that make none.
    pub fn deadlines(&self) -> DeadlinesByPriority {
        let defaults = DeadlinesByPriority::default();
        DeadlinesByPriority {
            emergency: self.emergency.deadlines().unwrap_or(defaults.emergency),
            urgent: self.urgent.deadlines().unwrap_or(defaults.urgent),
            normal: self.normal.deadlines().unwrap_or(defaults.normal),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| Err(ConfigError::Invalid { key: key.to_owned(), problem: problem.to_owned() });
        for (key, settings) in self.each() {
            for (name, hours) in [
                ("delivery_hours", settings.delivery_hours),
                ("acknowledgement_hours", settings.acknowledgement_hours),
                ("first_status_hours", settings.first_status_hours),
            ] {
                if !(1..=MAX_DEADLINE_HOURS).contains(&hours) {
                    return invalid(&format!("{key}.{name}"), &format!("must be between 1 and {MAX_DEADLINE_HOURS}"));
                }
            }
            if let Err(error) = settings.deadlines() {
                return invalid(key, &error.to_string());
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatisticsConfig {
    /// Every released count is rounded to a multiple of this (at least 5).
    #[serde(default = "default_rounding_base")]
    pub rounding_base: u64,
    /// A count under this is not released (at least 5).
    #[serde(default = "default_threshold")]
    pub threshold: u64,
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        Self { rounding_base: default_rounding_base(), threshold: default_threshold() }
    }
}

impl StatisticsConfig {
    /// The disclosure control these settings make; `validate` refuses any other.
    pub fn control(&self) -> crate::domain::statistics::DisclosureControl {
        crate::domain::statistics::DisclosureControl::new(self.rounding_base, self.threshold).unwrap_or_default()
    }
}

pub(crate) fn default_rounding_base() -> u64 {
    crate::domain::statistics::DisclosureControl::default().rounding_base()
}

pub(crate) fn default_threshold() -> u64 {
    crate::domain::statistics::DisclosureControl::default().threshold()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between two sweeps for cases past their retention deadline
    /// (the deadlines themselves come from the DPO's `retention.toml`).
    #[serde(default = "default_sweep_seconds")]
    pub sweep_seconds: u64,
    /// While more is due than one round erases (a restart past many
    /// deadlines), the percentage of the time the sweep works: after a
    /// round of t it rests t × (100 − share) / share, so that erasing a
    /// backlog does not starve the traffic. 100 erases it flat out.
    #[serde(default = "default_backlog_share_percent")]
    pub backlog_share_percent: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { sweep_seconds: default_sweep_seconds(), backlog_share_percent: default_backlog_share_percent() }
    }
}

fn default_sweep_seconds() -> u64 {
    60
}

fn default_backlog_share_percent() -> u32 {
    // On SQLite end to end fell by 27 % at 10, by 31 to 36 % at 25, by 70 %
    // flat out while both gateways of one machine erased 100,000; on
    // PostgreSQL by 26 to 36 % at 10 (performance.md, "Pacing the retention sweep").
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Address of the listener for member gateways (mutual TLS 1.3, pinned
    /// through the directory). The directory lists it as this gateway's endpoint.
    pub listen: SocketAddr,
    /// How long after acceptance a referral may still be delivered, in
    /// hours; the consent's end cuts it short. At most 720 (30 days, the
    /// longest packet lifetime a gateway accepts).
    #[serde(default = "default_delivery_hours")]
    pub delivery_window_hours: u64,
    /// Delay before the first retry, in seconds; it doubles per failure.
    #[serde(default = "default_retry_first")]
    pub retry_first_seconds: u64,
    /// Longest delay between retries, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: u64,
    /// How often the outbox is looked at when nothing wakes it, in milliseconds.
    #[serde(default = "default_poll_millis")]
    pub poll_millis: u64,
    /// Time allowed for one send, connection included, in seconds.
    #[serde(default = "default_send_timeout")]
    pub send_timeout_seconds: u64,
    /// How long a receiving gateway has to confirm an erasure before the
    /// sender shows it as overdue.
    #[serde(default = "default_erasure_deadline")]
    pub erasure_deadline_hours: u64,
    /// PEM file of certificate authorities trusted for recipients' webhooks
    /// and status callbacks, besides the usual public ones (a national PKI, say).
    #[serde(default)]
    pub webhook_ca_file: Option<PathBuf>,
}

fn default_erasure_deadline() -> u64 {
    72
}

fn default_delivery_hours() -> u64 {
    168
}

fn default_retry_first() -> u64 {
    2
}

fn default_retry_max() -> u64 {
    600
}

fn default_poll_millis() -> u64 {
    1000
}

fn default_send_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Serve HTTPS (and accept client certificates) instead of plain HTTP.
    /// Without it the gateway must sit behind a TLS-terminating proxy, and
    /// only bearer tokens can authenticate callers.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How long a request body may take to arrive, counted from its head;
    /// past it the request is answered `408`.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout_seconds: u64,
    /// How many request bodies each listener reads at once; one more is
    /// answered `503` with `Retry-After`.
    #[serde(default = "default_max_concurrent_bodies")]
    pub max_concurrent_bodies: usize,
}

fn default_body_limit() -> usize {
    256 * 1024
}

fn default_body_read_timeout() -> u64 {
    30
}

fn default_max_concurrent_bodies() -> usize {
    64
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the server certificate, then its chain.
    pub certificate: PathBuf,
    /// PEM file: the server's private key (PKCS#8, SEC1 or PKCS#1).
    pub private_key: PathBuf,
}

/// `Debug` shows the URLs with their passwords replaced (`redacted_url`):
/// a configuration printed in a log or a panic must not carry them.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` for the embedded store,
    /// `postgres://user@host:port/db` for PostgreSQL.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// PostgreSQL only: the schema to use, created if missing.
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Where the case-key store lives, when not in its default place (a file
    /// beside the SQLite database; a schema `<schema>_case_keys` beside the
    /// PostgreSQL one): `sqlite://path` or `postgres://...`.
    #[serde(default)]
    pub case_keys_url: Option<String>,
    /// How long opening a connection at start may take (the first connect
    /// and the schema set-up), in milliseconds.
    #[serde(default = "default_connect_timeout_millis")]
    pub connect_timeout_millis: u64,
    /// How long a request waits for a pooled connection (opening a new one
    /// included), in milliseconds.
    #[serde(default = "default_acquire_timeout_millis")]
    pub acquire_timeout_millis: u64,
    /// How long one store call may take, waiting for a connection included,
    /// measured by the gateway itself: a server-side timeout cannot help when
    /// the network drops packets. Past it the call fails as `unavailable`.
    #[serde(default = "default_statement_timeout_millis")]
    pub statement_timeout_millis: u64,
    /// How long `/readyz` waits for the database before answering 503.
    #[serde(default = "default_readiness_timeout_millis")]
    pub readiness_timeout_millis: u64,
    /// The name of this gateway process's host or slot among replicas; its
    /// delivery and push claims carry it, so that a restart on the same
    /// node takes back its predecessor's claims at once. Default: the host name.
    #[serde(default)]
    pub node: Option<String>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a field added later cannot be left out unseen.
        let Self {
            url,
            schema,
            max_connections,
            case_keys_url,
            connect_timeout_millis,
            acquire_timeout_millis,
            statement_timeout_millis,
            readiness_timeout_millis,
            node,
        } = self;
        f.debug_struct("DatabaseConfig")
            .field("url", &redacted_url(url))
            .field("schema", schema)
            .field("max_connections", max_connections)
            .field("case_keys_url", &case_keys_url.as_deref().map(redacted_url))
            .field("connect_timeout_millis", connect_timeout_millis)
            .field("acquire_timeout_millis", acquire_timeout_millis)
            .field("statement_timeout_millis", statement_timeout_millis)
            .field("readiness_timeout_millis", readiness_timeout_millis)
            .field("node", node)
            .finish()
    }
}

/// The connection parameters sqlx's PostgreSQL driver reads from a URL's
/// query (sqlx-postgres, `options/parse.rs`, matched as written). It logs
/// any other one at warn with its value, so [`GatewayConfig::check`]
/// refuses them: a password put in a parameter it does not know
/// (`sslpassword`, `PASSWORD`) would reach the log.
const POSTGRES_URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

fn is_postgres_url_parameter(name: &str) -> bool {
    POSTGRES_URL_PARAMETERS.contains(&name) || name.starts_with("options[")
}

/// Whether a printed URL shows a parameter's value: one the driver reads,
/// other than the password and the server options (which may hold anything).
fn is_shown_url_parameter(name: &str) -> bool {
    POSTGRES_URL_PARAMETERS.contains(&name) && !["password", "options"].contains(&name)
}

/// Why a database URL (of the data or of the case keys) cannot be used.
fn database_url_problem(url: &str) -> Option<&'static str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres_url_problem(url)
    } else if sqlite_path(url).is_some_and(|path| !path.is_empty() && !path.starts_with(':')) {
        None
    } else {
        Some("must be sqlite://<file path> or postgres://...")
    }
}

/// Why a PostgreSQL URL cannot be used, without quoting any of it: a
/// parameter's name may be the tail of a password cut at an unencoded `&`.
fn postgres_url_problem(url: &str) -> Option<&'static str> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some("is not a valid URL (percent-encode special characters of the password)");
    };
    if parsed.query_pairs().any(|(name, _)| !is_postgres_url_parameter(&name)) {
        return Some(
            "has a connection parameter the PostgreSQL driver does not know, and would log with its value: \
             use only sslmode, sslrootcert, sslcert, sslkey, statement-cache-capacity, host, hostaddr, port, dbname, \
             user, password, application_name, options (percent-encode `&`, `=` and `#` in values)",
        );
    }
    None
}

/// What a printed database URL may show. SQLite URLs are paths and stay as
/// they are. A PostgreSQL URL is read as the driver reads it (the `url`
/// crate): its password becomes `***`, as does every query parameter's
/// value except those [`is_shown_url_parameter`] allows, and its fragment goes;
/// one that does not parse shows only its scheme.
pub fn redacted_url(url: &str) -> String {
    const HIDDEN: &str = "***";
    if sqlite_path(url).is_some() {
        return url.to_owned();
    }
    let scheme_only = || format!("{}://{HIDDEN}", url.split_once("://").map_or("", |(scheme, _)| scheme));
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return scheme_only();
    };
    if parsed.password().is_some() && parsed.set_password(Some(HIDDEN)).is_err() {
        return scheme_only();
    }
    if parsed.query().is_some() {
        let shown: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_shown_url_parameter(&name) { value.into_owned() } else { HIDDEN.to_owned() };
                // A name the driver does not know may be the tail of a
                // password cut at an unencoded `&`.
                let name = if is_postgres_url_parameter(&name) { name.into_owned() } else { HIDDEN.to_owned() };
                (name, value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(shown);
    }
    parsed.set_fragment(None);
    parsed.to_string()
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_database_url(),
            schema: None,
            max_connections: default_max_connections(),
            case_keys_url: None,
            connect_timeout_millis: default_connect_timeout_millis(),
            acquire_timeout_millis: default_acquire_timeout_millis(),
            statement_timeout_millis: default_statement_timeout_millis(),
            readiness_timeout_millis: default_readiness_timeout_millis(),
            node: None,
        }
    }
}

impl DatabaseConfig {
    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_millis)
    }

    pub fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.acquire_timeout_millis)
    }

    pub fn statement_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.statement_timeout_millis)
    }

    pub fn readiness_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.readiness_timeout_millis)
    }

    /// The node name claims carry: the configured one, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }
}

/// The host name as the kernel has it (`gateway` where it cannot be read).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

fn default_connect_timeout_millis() -> u64 {
    2000
}

fn default_acquire_timeout_millis() -> u64 {
    2000
}

fn default_statement_timeout_millis() -> u64 {
    3000
}

fn default_readiness_timeout_millis() -> u64 {
    1000
}

fn default_database_url() -> String {
    "sqlite://var/gateway.db".to_owned()
}

fn default_max_connections() -> u32 {
    8
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Directory holding the at-rest data key and the index key
    /// (`referral-gateway keys init --dir <dir>` creates them).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The federation directory as the coordinator signed it (compact JWS
    /// over JSON of `schemas/directory.schema.json`).
    pub file: PathBuf,
    /// The federation coordinator's public key (JWK) that must have signed it.
    pub coordinator_key: PathBuf,
    /// How often the file is checked for a new edition, in seconds.
    #[serde(default = "default_directory_refresh")]
    pub refresh_seconds: u64,
}

fn default_directory_refresh() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `*.cedar` files stored as policy version 1 on the first start. Later
    /// versions are uploaded by a DPO through `PUT /v1/policies`.
    pub initial_dir: PathBuf,
    /// How often, in seconds, the gateway looks for a policy version another
    /// replica stored.
    #[serde(default = "default_policy_refresh")]
    pub refresh_seconds: u64,
    /// How many distinct DPOs, the author included, sign a policy version
    /// off before it acts (four eyes: 2). 1 lets an upload act on its
    /// author's word alone, with a warning at every start.
    #[serde(default = "default_approvals_required")]
    pub approvals_required: u8,
    /// How many days of sending decisions an upload is replayed on (its
    /// impact), and so how long each decision's facts are kept.
    #[serde(default = "default_impact_days")]
    pub impact_days: u32,
    /// The SMT solver that proves each upload (docs/policy-guide.md §3.1):
    /// a cvc5 program, or a Python interpreter with PyPI's `cvc5` package.
    /// Without either, uploads are tested and labelled as not proved.
    #[serde(default)]
    pub cvc5: Option<PathBuf>,
    #[serde(default)]
    pub cvc5_python: Option<PathBuf>,
}

fn default_policy_refresh() -> u64 {
    5
}

pub(crate) fn default_impact_days() -> u32 {
    30
}

/// The longest replay window: a year of decisions' facts at most.
const MAX_IMPACT_DAYS: u32 = 366;

fn default_approvals_required() -> u8 {
    crate::domain::signoff::ApprovalsRequired::FOUR_EYES.get()
}

impl PolicyConfig {
    pub fn approvals_required(&self) -> crate::domain::signoff::ApprovalsRequired {
        crate::domain::signoff::ApprovalsRequired::new(self.approvals_required).unwrap_or(crate::domain::signoff::ApprovalsRequired::FOUR_EYES)
    }

    /// The solver named by the configuration, if any.
    pub fn solver(&self) -> Option<crate::policy_proofs::SolverCommand> {
        use crate::policy_proofs::SolverCommand;
        self.cvc5.clone().map(SolverCommand::Cvc5Program).or_else(|| self.cvc5_python.clone().map(SolverCommand::Cvc5Python))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Client certificates by a name of the operator's choosing.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientCertificateConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `referral_gateway=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_log_level(), format: LogFormat::default() }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl GatewayConfig {
    /// Reads `path`, applies `RGW_...` overrides, and checks the result.
    /// Relative paths in the file are taken relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        check_environment()?;
        // Only the gateway's own keys: the prefix is shared with wrapper
        // scripts, and RGW_CONFIG_FILE names this file (see the CLI).
        let environment = Env::prefixed(ENV_PREFIX)
            .filter(|name| environment::classify(name.as_str()) == Variable::Key)
            .split("__");
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(environment);
        let mut config: Self = figment.extract().map_err(|error| ConfigError::Load(describe(error)))?;
        if let Some(base) = path.parent() {
            config.resolve_relative_to(base);
        }
        config.check()?;
        Ok(config)
    }

    fn resolve_relative_to(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.keys.dir);
        resolve(&mut self.directory.file);
        resolve(&mut self.directory.coordinator_key);
        resolve(&mut self.policy.initial_dir);
        // A bare program name is looked up on the PATH, not next to the file.
        for solver in [&mut self.policy.cvc5, &mut self.policy.cvc5_python].into_iter().flatten() {
            if solver.components().count() > 1 {
                resolve(solver);
            }
        }
        if let Some(ca) = self.federation.as_mut().and_then(|f| f.webhook_ca_file.as_mut()) {
            resolve(ca);
        }
        for callback in self.callbacks.values_mut() {
            resolve(&mut callback.secret_file);
        }
        if let Some(tls) = &mut self.server.tls {
            resolve(&mut tls.certificate);
            resolve(&mut tls.private_key);
        }
        if let Some(path) = sqlite_path(&self.database.url)
            && Path::new(path).is_relative()
            && !path.is_empty()
        {
            self.database.url = format!("sqlite://{}", base.join(path).display());
        }
        if let Some(url) = &mut self.database.case_keys_url
            && let Some(path) = sqlite_path(url)
            && Path::new(path).is_relative()
            && !path.is_empty()
        {
            *url = format!("sqlite://{}", base.join(path).display());
        }
    }

    /// Checks what the types cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: &str| Err(ConfigError::Invalid { key: key.to_owned(), problem: problem.to_owned() });
        if !(1024..=16 * 1024 * 1024).contains(&self.server.body_limit_bytes) {
            return invalid("server.body_limit_bytes", "must be between 1024 and 16777216");
        }
        if !(1..=600).contains(&self.server.body_read_timeout_seconds) {
            return invalid("server.body_read_timeout_seconds", "must be between 1 and 600");
        }
        if !(1..=10_000).contains(&self.server.max_concurrent_bodies) {
            return invalid("server.max_concurrent_bodies", "must be between 1 and 10000");
        }
        let url = &self.database.url;
        if let Some(problem) = database_url_problem(url) {
            return invalid("database.url", problem);
        }
        if let Some(keys) = &self.database.case_keys_url {
            if let Some(problem) = database_url_problem(keys) {
                return invalid("database.case_keys_url", problem);
            }
            if sqlite_path(keys).is_some() && sqlite_path(keys) == sqlite_path(url) {
                return invalid("database.case_keys_url", "must name another file or database than database.url: the case keys are kept apart from the data");
            }
        }
        if !(1..=86_400).contains(&self.directory.refresh_seconds) {
            return invalid("directory.refresh_seconds", "must be between 1 and 86400");
        }
        if !(1..=86_400).contains(&self.policy.refresh_seconds) {
            return invalid("policy.refresh_seconds", "must be between 1 and 86400");
        }
        if crate::domain::signoff::ApprovalsRequired::new(self.policy.approvals_required).is_none() {
            return invalid("policy.approvals_required", "must be between 1 and 5 (the author and the DPOs who approve)");
        }
        if !(1..=MAX_IMPACT_DAYS).contains(&self.policy.impact_days) {
            return invalid("policy.impact_days", "must be between 1 and 366");
        }
        if self.policy.cvc5.is_some() && self.policy.cvc5_python.is_some() {
            return invalid("policy.cvc5_python", "name one solver: policy.cvc5 or policy.cvc5_python");
        }
        if let Err(weak) = crate::domain::statistics::DisclosureControl::new(self.statistics.rounding_base, self.statistics.threshold) {
            let key = match weak {
                crate::domain::statistics::ControlTooWeak::RoundingBase => "statistics.rounding_base",
                crate::domain::statistics::ControlTooWeak::Threshold => "statistics.threshold",
            };
            return invalid(key, &weak.to_string());
        }
        self.deadlines.validate()?;
        if let Some(console) = &self.console {
            if self.server.tls.is_none() {
                return invalid("console", "needs [server.tls]: its session cookies are Secure, sent over HTTPS only");
            }
            if !(5..=240).contains(&console.idle_minutes) {
                return invalid("console.idle_minutes", "must be between 5 and 240");
            }
            if !(1..=24).contains(&console.session_hours) {
                return invalid("console.session_hours", "must be between 1 and 24");
            }
            if let Some(url) = &console.public_url {
                let origin = url.trim_end_matches('/');
                let host = origin.strip_prefix("https://").unwrap_or_default();
                if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
                    return invalid("console.public_url", "must be https://host or https://host:port, without a path");
                }
            }
            if let Some(oidc) = &console.oidc {
                if self.auth.oidc.is_none() {
                    return invalid("console.oidc", "needs [auth.oidc]: the console signs in with that identity provider");
                }
                if console.public_url.is_none() && self.server.listen.ip().is_unspecified() {
                    return invalid("console.public_url", "must be set with [console.oidc] when server.listen is 0.0.0.0 or [::]: the identity provider sends browsers back there");
                }
                if oidc.client_id.trim().is_empty() {
                    return invalid("console.oidc.client_id", "must not be empty");
                }
                if oidc.client_secret.is_empty() {
                    return invalid("console.oidc.client_secret", "must not be empty");
                }
            }
        }
        if !(1..=86_400).contains(&self.retention.sweep_seconds) {
            return invalid("retention.sweep_seconds", "must be between 1 and 86400");
        }
        if !(1..=100).contains(&self.retention.backlog_share_percent) {
            return invalid("retention.backlog_share_percent", "must be between 1 and 100");
        }
        if let Some(federation) = &self.federation {
            if !(1..=720).contains(&federation.delivery_window_hours) {
                return invalid("federation.delivery_window_hours", "must be between 1 and 720");
            }
            if !(1..=86_400).contains(&federation.retry_max_seconds) {
                return invalid("federation.retry_max_seconds", "must be between 1 and 86400");
            }
            if federation.retry_first_seconds == 0 || federation.retry_first_seconds > federation.retry_max_seconds {
                return invalid("federation.retry_first_seconds", "must be at least 1 and at most federation.retry_max_seconds");
            }
            if !(10..=60_000).contains(&federation.poll_millis) {
                return invalid("federation.poll_millis", "must be between 10 and 60000");
            }
            if !(1..=720).contains(&federation.erasure_deadline_hours) {
                return invalid("federation.erasure_deadline_hours", "must be between 1 and 720");
            }
            if !(1..=600).contains(&federation.send_timeout_seconds) {
                return invalid("federation.send_timeout_seconds", "must be between 1 and 600");
            }
            if federation.listen == self.server.listen && federation.listen.port() != 0 {
                return invalid("federation.listen", "must differ from server.listen");
            }
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        for (key, millis) in [
            ("database.connect_timeout_millis", self.database.connect_timeout_millis),
            ("database.acquire_timeout_millis", self.database.acquire_timeout_millis),
            ("database.statement_timeout_millis", self.database.statement_timeout_millis),
            ("database.readiness_timeout_millis", self.database.readiness_timeout_millis),
        ] {
            if !(100..=600_000).contains(&millis) {
                return invalid(key, "must be between 100 and 600000");
            }
        }
        if self.database.acquire_timeout_millis > self.database.statement_timeout_millis {
            return invalid("database.acquire_timeout_millis", "must not exceed database.statement_timeout_millis, which includes it");
        }
        if let Some(node) = &self.database.node {
            let ok = (1..=64).contains(&node.len()) && node.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return invalid("database.node", "must be 1 to 64 letters, digits, '-', '_' or '.'");
            }
        }
        if let Some(schema) = &self.database.schema {
            // 53: the case-key store's schema adds `_case_keys`, within PostgreSQL's 63.
            let ok = (1..=53).contains(&schema.len())
                && schema.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return invalid("database.schema", "must be 1 to 53 lower-case letters, digits or _, not starting with a digit");
            }
            if sqlite_path(url).is_some() {
                return invalid("database.schema", "applies to PostgreSQL only");
            }
        }
        if let Some(oidc) = &self.auth.oidc {
            let issuer = reqwest::Url::parse(&oidc.issuer).ok();
            let acceptable = issuer.as_ref().is_some_and(|url| match url.scheme() {
                "https" => url.host().is_some(),
                // Plain http only on loopback, for tests.
                "http" => matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
                _ => false,
            });
            if !acceptable {
                return invalid("auth.oidc.issuer", "must be an https:// URL (plain http only on loopback, for tests)");
            }
            if oidc.leeway_seconds > MAX_LEEWAY_SECONDS {
                return invalid("auth.oidc.leeway_seconds", "must be at most 300");
            }
            if oidc.jwks_min_refresh_seconds == 0 {
                return invalid("auth.oidc.jwks_min_refresh_seconds", "must be at least 1: each unknown key id would otherwise fetch the issuer's keys");
            }
            if oidc.org_claim.is_empty() || oidc.roles_claim.is_empty() || oidc.org_claim == oidc.roles_claim {
                return invalid("auth.oidc.org_claim", "org_claim and roles_claim must be two different, non-empty claim names");
            }
            if oidc.audience.is_empty() {
                return invalid("auth.oidc.audience", "must not be empty");
            }
        }
        let mut seen = BTreeMap::new();
        for (name, client) in &self.auth.clients {
            if let Some(other) = seen.insert(client.fingerprint.clone(), name) {
                return invalid(&format!("auth.clients.{name}.fingerprint"), &format!("is also the fingerprint of auth.clients.{other}"));
            }
            if client.roles.is_empty() {
                return invalid(&format!("auth.clients.{name}.roles"), "must name at least one role");
            }
        }
        if !self.auth.clients.is_empty() && self.server.tls.is_none() {
            return invalid("auth.clients", "client certificates need server.tls");
        }
        if self.auth.clients.is_empty() && self.auth.oidc.is_none() {
            return invalid("auth", "configure auth.oidc, auth.clients, or both: otherwise nobody can call the gateway");
        }
        if !(2..=13).contains(&self.matching.threshold) {
            return invalid("matching.threshold", "must be between 2 and 13");
        }
        if !(1..=10_000).contains(&self.matching.queries_per_day) {
            return invalid("matching.queries_per_day", "must be between 1 and 10000");
        }
        if !(1..=720).contains(&self.matching.handle_hours) {
            return invalid("matching.handle_hours", "must be between 1 and 720");
        }
        if !(5..=1440).contains(&self.overrides.approval_window_minutes) {
            return invalid("overrides.approval_window_minutes", "must be between 5 and 1440");
        }
        let mut registered = BTreeMap::new();
        for (name, callback) in &self.callbacks {
            let key = |field: &str| format!("callbacks.{name}.{field}");
            if crate::domain::OrgId::parse(&callback.org).is_err() {
                return invalid(&key("org"), "is not an organisation id");
            }
            if let Some(other) = registered.insert(callback.org.as_str(), name) {
                return invalid(&key("org"), &format!("already has a callback: callbacks.{other}"));
            }
            match reqwest::Url::parse(&callback.url) {
                Ok(url) if url.scheme() == "https" && url.host().is_some() && url.username().is_empty() && url.password().is_none() => {}
                _ => return invalid(&key("url"), "must be an https:// URL with a host and no user name or password"),
            }
            if !(1..=MAX_CALLBACK_RETRY_HOURS).contains(&callback.retry_hours) {
                return invalid(&key("retry_hours"), &format!("must be between 1 and {MAX_CALLBACK_RETRY_HOURS}"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "is not a valid tracing filter");
        }
        Ok(())
    }
}

/// Refuses a variable that is a typo of a key; warns about (and ignores) a
/// variable with the prefix that names no key. Names only, never values.
fn check_environment() -> Result<(), ConfigError> {
    let prefix_length = ENV_PREFIX.len();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.get(prefix_length..).filter(|_| name.get(..prefix_length).is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))) else {
            continue;
        };
        match environment::classify(rest) {
            Variable::Key | Variable::NotAKey => {}
            // The log is not set up yet (its level is configuration): stderr.
            Variable::Unknown => eprintln!("warning: environment variable {name} is not a configuration key; ignored"),
            // A whole table written inline (`{certificate = "..."}`) was meant: ignoring it could start the
            // gateway without, say, its TLS settings.
            Variable::Table(key) if value.to_str().is_some_and(|v| v.trim_start().starts_with('{')) => {
                return Err(ConfigError::Load(format!(
                    "environment variable {name} sets a whole table, which is not read; set its keys one by one, such as {ENV_PREFIX}{}",
                    environment::variable_for(key)
                )));
            }
            Variable::Table(key) => eprintln!(
                "warning: environment variable {name} names a table, not a key; ignored (set its keys one by one, such as {ENV_PREFIX}{})",
                environment::variable_for(key)
            ),
            Variable::NearMiss(key) => {
                return Err(ConfigError::Load(format!(
                    "environment variable {name} is not a configuration key; did you mean {ENV_PREFIX}{}?",
                    environment::variable_for(key)
                )));
            }
        }
    }
    Ok(())
}

/// The file path of an SQLite URL, or `None` for another scheme.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
}

/// figment's message, which names the key (`for key "database.url"`) and the
/// source (file or environment variable), without the offending value.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::new() } else { format!("key `{}`: ", e.path.join(".")) };
            let kind = match &e.kind {
                // `actual` would quote the value: say only what was expected.
                figment::error::Kind::InvalidType(_, expected) => format!("invalid type, expected {expected}"),
                figment::error::Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
                figment::error::Kind::UnknownVariant(_, expected) => format!("unknown value, expected one of {}", expected.join(", ")),
                other => other.to_string(),
            };
            let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            format!("{key}{kind}{source}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_printed_database_urls() {
        for (url, shown) in [
            ("postgres://rgw:s3cret@db.example:5432/gateway", "postgres://rgw:***@db.example:5432/gateway"),
            ("postgres://rgw@db/gateway?sslmode=require&password=s3cret", "postgres://rgw@db/gateway?sslmode=require&password=***"),
            // An `@` after the host, in a parameter or the fragment.
            ("postgres://rgw@db/gateway?password=s3cret@x", "postgres://rgw@db/gateway?password=***"),
            ("postgres://db/gateway?password=s3cret&application_name=ops@site", "postgres://db/gateway?password=***&application_name=ops%40site"),
            ("postgres://rgw@db.internal/gateway?password=s3cret#x@y", "postgres://rgw@db.internal/gateway?password=***"),
            // Unknown or percent-encoded names, and an unencoded `&` in a value.
            ("postgres://db/gateway?%70assword=s3cret&PASSWORD=s3cret&sslpassword=s3cret", "postgres://db/gateway?password=***&***=***&***=***"),
            ("postgres://db/gateway?password=ab&s3cret", "postgres://db/gateway?password=***&***=***"),
            ("postgres://rgw:s3cret@[::1]:5432/gateway", "postgres://rgw:***@[::1]:5432/gateway"),
            ("postgres://:s3cret@db/gateway", "postgres://:***@db/gateway"),
            ("postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test"),
            ("postgres://rgw:s3cret@db:99999/gateway", "postgres://***"),
            ("sqlite://var/gateway.db", "sqlite://var/gateway.db"),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
            assert!(!redacted_url(url).contains("s3cret"), "{url}");
        }
    }

    #[test]
    fn only_parameters_the_postgres_driver_reads_are_accepted() {
        for url in ["postgres://rgw:s3cret@db/gateway", "postgres://db/gateway?sslmode=require&password=s3cret&options[statement_timeout]=5s"] {
            assert_eq!(postgres_url_problem(url), None, "{url}");
        }
        for url in [
            "postgres://db/gateway?sslpassword=s3cret",
            "postgres://db/gateway?PASSWORD=s3cret",
            "postgres://db/gateway?password=ab&s3cret",
            "postgres://rgw:s3cret@db:99999/gateway",
        ] {
            let problem = postgres_url_problem(url);
            assert!(problem.is_some_and(|p| !p.contains("s3cret")), "{url}: {problem:?}");
        }
    }

    #[test]
    fn a_printed_database_configuration_holds_no_password() {
        let config = DatabaseConfig {
            url: "postgres://rgw:s3cret-data@db/gateway".to_owned(),
            case_keys_url: Some("postgres://keys@db/keys?password=s3cret-keys".to_owned()),
            ..DatabaseConfig::default()
        };
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("postgres://rgw:***@db/gateway") && printed.contains("password=***"), "{printed}");
    }
}
