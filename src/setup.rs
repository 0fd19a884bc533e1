//! `referral-gateway init`: a new gateway's files in one directory, ready but
//! for what only others can give it (the coordinator's signed directory and
//! key) and who may call it (a client certificate or an identity provider).
//!
//! ```text
//! <dir>/gateway.toml           every configuration key, with its default (config::template)
//! <dir>/keys/                  at-rest keys; federation/ signing, encryption and TLS keys
//! <dir>/tls/api.crt, api.key   a self-signed certificate for the national API
//! <dir>/policies/              the shipped DPO policy, stored as version 1 on first start
//! <dir>/directory-entry.json   what to send the federation coordinator
//! ```
//!
//! Nothing that exists is overwritten: every path is checked before the
//! first is written, and what a failed run wrote is taken away again. The
//! directories and the configuration are the gateway user's alone (0700,
//! 0600), as the keys are.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rcgen::{CertificateParams, DnType, KeyPair};

use crate::config::template::{self, Template};
use crate::crypto::at_rest::{self, write_private, DATA_KEY_FILE, INDEX_KEY_FILE};
use crate::crypto::federation_keys::{self, FEDERATION_DIR};
use crate::directory::membership::MemberEntry;
use crate::directory::{GatewayEntry, MemberStatus};
use crate::domain::CountryCode;

pub const CONFIG_FILE: &str = "gateway.toml";
pub const ENTRY_FILE: &str = "directory-entry.json";

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub country: CountryCode,
    pub dir: PathBuf,
    /// The address both listeners bind.
    pub listen_address: IpAddr,
    pub national_port: u16,
    pub federation_port: u16,
    /// The federation endpoint peers reach this gateway at; by default
    /// `https://` the listen address (or, listening on every address, the
    /// first TLS name) and the federation port.
    pub endpoint: Option<String>,
    /// Host names or addresses of the TLS certificates.
    pub tls_names: Vec<String>,
    /// The published keys' validity window.
    pub keys_from: DateTime<Utc>,
    pub keys_until: DateTime<Utc>,
}

/// What [`init`] wrote.
#[derive(Debug, Clone)]
pub struct Initialised {
    pub config: PathBuf,
    pub entry: PathBuf,
    pub endpoint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} exists; init never overwrites a file (choose an empty directory)")]
    Exists(PathBuf),
    #[error("--endpoint must be an https:// URL")]
    EndpointNotHttps,
    #[error("the national API and the federation listener need two different ports")]
    SamePorts,
    #[error("--federation-port must be a fixed port: peers reach the gateway at the endpoint the directory lists")]
    FederationPortZero,
    #[error("listening on every address, the federation endpoint cannot be guessed: give --endpoint (the https:// URL peers reach) or a --tls-name other than localhost")]
    EndpointRequired,
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Keys(String),
}

pub fn init(options: &InitOptions) -> Result<Initialised, InitError> {
    if options.national_port == options.federation_port && options.national_port != 0 {
        return Err(InitError::SamePorts);
    }
    if options.federation_port == 0 {
        return Err(InitError::FederationPortZero);
    }
    if options.endpoint.is_none() && options.listen_address.is_unspecified() && options.tls_names.first().is_none_or(|name| is_loopback_name(name)) {
        return Err(InitError::EndpointRequired);
    }
    let endpoint = options.endpoint.clone().unwrap_or_else(|| default_endpoint(options));
    if !endpoint.starts_with("https://") {
        return Err(InitError::EndpointNotHttps);
    }
    let dir = &options.dir;
    let keys = dir.join(template::KEYS_DIR);
    let policies = dir.join(template::POLICY_DIR);
    let mut planned = vec![
        dir.join(CONFIG_FILE),
        dir.join(ENTRY_FILE),
        dir.join(template::TLS_CERTIFICATE),
        dir.join(template::TLS_PRIVATE_KEY),
        keys.join(DATA_KEY_FILE),
        keys.join(INDEX_KEY_FILE),
        keys.join(FEDERATION_DIR),
        // The default database's place: new keys over an old gateway's data would leave it unreadable.
        dir.join("var"),
    ];
    planned.extend(crate::policy_files::SHIPPED.iter().map(|(name, _)| policies.join(name)));
    if let Some(existing) = planned.into_iter().find(|path| path.exists()) {
        return Err(InitError::Exists(existing));
    }

    // What can fail for another reason than the disk comes first.
    let (api_certificate, api_key) = self_signed(&options.tls_names)?;
    let text = template::render(&Template {
        country: options.country.to_string(),
        listen: SocketAddr::new(options.listen_address, options.national_port),
        federation_listen: SocketAddr::new(options.listen_address, options.federation_port),
        example_client: false,
    });

    // What this run creates, taken away again if it fails midway, so that a
    // second run is not refused by a first run's leftovers.
    let created: Vec<PathBuf> = [keys.clone(), dir.join("tls"), policies.clone(), dir.join(ENTRY_FILE), dir.join(CONFIG_FILE)]
        .into_iter()
        .filter(|path| !path.exists())
        .collect();
    let written = write_all(options, &WriteParts { keys: &keys, policies: &policies, endpoint: &endpoint, api_certificate, api_key, config: text });
    if written.is_err() {
        for path in created.iter().rev() {
            let _ = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        }
    }
    written?;
    Ok(Initialised { config: dir.join(CONFIG_FILE), entry: dir.join(ENTRY_FILE), endpoint })
}

struct WriteParts<'a> {
    keys: &'a Path,
    policies: &'a Path,
    endpoint: &'a str,
    api_certificate: String,
    api_key: String,
    config: String,
}

fn write_all(options: &InitOptions, parts: &WriteParts<'_>) -> Result<(), InitError> {
    let (dir, keys, policies) = (&options.dir, parts.keys, parts.policies);
    create_private_dir(keys)?;
    at_rest::init(keys).map_err(|e| InitError::Keys(e.to_string()))?;
    federation_keys::init(keys, &options.tls_names).map_err(|e| InitError::Keys(e.to_string()))?;
    let federation = federation_keys::load(keys).map_err(|e| InitError::Keys(e.to_string()))?;
    let gateway = GatewayEntry {
        country: options.country,
        endpoint: parts.endpoint.to_owned(),
        status: MemberStatus::Active,
        tls_spki_sha256: vec![federation.tls_spki_pin().map_err(|e| InitError::Keys(e.to_string()))?],
        keys: crate::directory::published_keys(&federation, options.keys_from, options.keys_until).map_err(|e| InitError::Keys(e.to_string()))?,
        max_packet_bytes: None,
        // Listed by the coordinator once every member reads the field (`federation.md` §5b).
        protocol_versions: Vec::new(),
    };
    let entry = MemberEntry { gateway, organisations: Some(Vec::new()) };
    let entry_text = serde_json::to_string_pretty(&entry).map_err(|e| InitError::Keys(e.to_string()))? + "\n";

    create_private_dir(&dir.join("tls"))?;
    write_private(&dir.join(template::TLS_PRIVATE_KEY), parts.api_key.as_bytes()).map_err(|e| InitError::Keys(e.to_string()))?;
    write_new(&dir.join(template::TLS_CERTIFICATE), &parts.api_certificate, 0o644)?;
    create_private_dir(policies)?;
    for (name, text) in crate::policy_files::SHIPPED {
        write_new(&policies.join(name), text, 0o600)?;
    }
    write_new(&dir.join(ENTRY_FILE), &entry_text, 0o644)?;
    // It will hold client registrations, and perhaps a database URL with a password.
    write_new(&dir.join(CONFIG_FILE), &parts.config, 0o600)?;
    Ok(())
}

/// `localhost`, or a loopback address: no name for peers to reach.
fn is_loopback_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
}

fn default_endpoint(options: &InitOptions) -> String {
    let host = if options.listen_address.is_unspecified() {
        options.tls_names.first().cloned().unwrap_or_else(|| "localhost".to_owned())
    } else {
        match options.listen_address {
            IpAddr::V4(address) => address.to_string(),
            IpAddr::V6(address) => format!("[{address}]"),
        }
    };
    format!("https://{host}:{}", options.federation_port)
}

/// A certificate and key (PEM) for the national API, until the operator
/// puts one its national systems trust in their place.
fn self_signed(names: &[String]) -> Result<(String, String), InitError> {
    let failed = |e: rcgen::Error| InitError::Keys(format!("cannot make the national API's TLS certificate: {e}"));
    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(failed)?;
    params.distinguished_name.push(DnType::CommonName, "referral-gateway national API");
    let certificate = params.self_signed(&key).map_err(failed)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// A directory for the gateway's user alone (0700), with its parents.
fn create_private_dir(path: &Path) -> Result<(), InitError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path).map_err(|source| InitError::Write { path: path.to_path_buf(), source })
}

/// Writes a file that must not exist yet, with `mode`, and syncs it to disk.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), InitError> {
    use std::io::Write;
    let failed = |source| InitError::Write { path: path.to_path_buf(), source };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = open.open(path).map_err(failed)?;
    file.write_all(contents.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> InitOptions {
        let from = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z").unwrap().with_timezone(&Utc);
        InitOptions {
            country: CountryCode::parse("GMB").unwrap(),
            dir: dir.to_path_buf(),
            listen_address: IpAddr::from([127, 0, 0, 1]),
            national_port: 8443,
            federation_port: 9443,
            endpoint: None,
            tls_names: vec!["localhost".to_owned()],
            keys_from: from,
            keys_until: from + chrono::Duration::days(365),
        }
    }

    #[test]
    fn init_writes_a_configuration_that_starts_once_a_client_is_registered_and_an_entry_for_the_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let written = init(&options(dir.path())).unwrap();
        assert_eq!(written.endpoint, "https://127.0.0.1:9443");

        // Nobody may call it yet: the configuration says so, naming the key.
        let refused = crate::config::GatewayConfig::load(&written.config).unwrap_err().to_string();
        assert!(refused.contains("auth"), "{refused}");
        let mut text = std::fs::read_to_string(&written.config).unwrap();
        text.push_str("\n[auth.clients.national_system]\nfingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\norg = \"gmb-system\"\nroles = [\"submitter\"]\n");
        std::fs::write(&written.config, text).unwrap();
        let config = crate::config::GatewayConfig::load(&written.config).unwrap();
        assert_eq!(config.country.as_str(), "GMB");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(config.federation.as_ref().unwrap().listen.to_string(), "127.0.0.1:9443");
        // Every file it names is there (the directory comes from the coordinator).
        let tls = config.server.tls.as_ref().unwrap();
        for path in [&tls.certificate, &tls.private_key, &config.keys.dir.join("data.key")] {
            assert!(path.is_file(), "{}", path.display());
        }
        crate::policy_files::load(&config.policy.initial_dir).unwrap();
        crate::crypto::federation_keys::load(&config.keys.dir).unwrap();

        // The entry: this gateway's endpoint, TLS pin and public keys, and no organisation yet.
        let entry: MemberEntry = serde_json::from_str(&std::fs::read_to_string(&written.entry).unwrap()).unwrap();
        let keys = crate::crypto::federation_keys::load(&config.keys.dir).unwrap();
        assert_eq!(entry.gateway.endpoint, "https://127.0.0.1:9443");
        assert_eq!(entry.gateway.tls_spki_sha256, [keys.tls_spki_pin().unwrap()]);
        assert_eq!(entry.gateway.keys.len(), 2);
        assert_eq!(entry.organisations, Some(Vec::new()));
    }

    #[test]
    fn what_init_writes_is_the_gateway_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init(&options(dir.path())).unwrap();
        let mode = |relative: &str| std::fs::metadata(dir.path().join(relative)).unwrap().permissions().mode() & 0o777;
        for private in ["keys", "tls", "policies"] {
            assert_eq!(mode(private), 0o700, "{private}");
        }
        for private in ["gateway.toml", "tls/api.key", "keys/data.key"] {
            assert_eq!(mode(private), 0o600, "{private}");
        }
    }

    #[test]
    fn an_endpoint_peers_cannot_reach_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut everywhere = options(dir.path());
        everywhere.listen_address = IpAddr::from([0, 0, 0, 0]);
        assert!(matches!(init(&everywhere), Err(InitError::EndpointRequired)));
        everywhere.tls_names = vec!["gateway.gm.example".to_owned()];
        let mut any_port = everywhere.clone();
        any_port.federation_port = 0;
        assert!(matches!(init(&any_port), Err(InitError::FederationPortZero)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
        assert_eq!(init(&everywhere).unwrap().endpoint, "https://gateway.gm.example:9443");
    }

    #[test]
    fn a_run_that_fails_midway_takes_away_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        // A file where init makes its TLS directory: the keys are written, then the run fails.
        std::fs::write(dir.path().join("tls"), "in the way").unwrap();
        assert!(matches!(init(&options(dir.path())).unwrap_err(), InitError::Write { .. }));
        assert!(!dir.path().join("keys").exists(), "the keys of the failed run remain");
        assert_eq!(std::fs::read_to_string(dir.path().join("tls")).unwrap(), "in the way", "what was there before is left alone");
    }

    #[test]
    fn init_overwrites_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/10-permits.cedar"), "// the DPO's own").unwrap();
        let error = init(&options(dir.path())).unwrap_err();
        assert!(matches!(&error, InitError::Exists(path) if path.ends_with("policies/10-permits.cedar")), "{error}");
        assert_eq!(std::fs::read_to_string(dir.path().join("policies/10-permits.cedar")).unwrap(), "// the DPO's own");
        assert!(!dir.path().join("keys").exists() && !dir.path().join("gateway.toml").exists(), "nothing written before the check");

        let dir = tempfile::tempdir().unwrap();
        init(&options(dir.path())).unwrap();
        let config = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
        assert!(matches!(init(&options(dir.path())).unwrap_err(), InitError::Exists(_)));
        assert_eq!(std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap(), config);
    }
}
