//! The demo federation's files: one development PKI for the national
//! systems' client certificates and the gateways' public API, a coordinator
//! key, and per country its keys, configuration and SQLite file.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::config::GatewayConfig;
use josekit::jwk::Jwk;

use crate::crypto::jose_keys::{self, KeyUse, SigningKey};
use crate::crypto::{at_rest, federation_keys};
use crate::dev_pki::{self, DevPki};
use crate::directory::{Delivery, Directory, DirectoryDocument, ProtocolVersion};
use crate::domain::CountryCode;

/// Marks a directory as the demo's own, so that a new run may clear it.
const MARKER: &str = ".referral-gateway-demo";

/// A national system's client certificate: name, organisation, gateway country, role.
/// Italy and the Gambia have two DPOs each: a policy version one uploads,
/// the other signs off. Each Red Cross tracing service has a certificate to
/// ask (a search it registers) and another to answer (its inbox).
pub const NATIONAL_SYSTEMS: [(&str, &str, &str, &str); 16] = [
    ("iom-rome", "ita-iom-rome", "ITA", "submitter"),
    ("nrm", "ita-nrm", "ITA", "submitter"),
    ("ita-red-cross", "ita-red-cross", "ITA", "submitter"),
    ("ita-red-cross-inbox", "ita-red-cross", "ITA", "recipient"),
    ("ita-dpo", "ita-nrm", "ITA", "dpo"),
    ("ita-dpo-2", "ita-nrm", "ITA", "dpo"),
    ("ita-auditor", "ita-nrm", "ITA", "auditor"),
    ("ita-statistics", "ita-nrm", "ITA", "statistics"),
    ("iom-banjul", "gmb-iom-banjul", "GMB", "recipient"),
    ("gmb-immigration", "gmb-immigration", "GMB", "recipient"),
    ("gmb-returnee-ngo", "gmb-returnee-ngo", "GMB", "recipient"),
    ("gmb-health-banjul", "gmb-health-banjul", "GMB", "recipient"),
    ("gmb-dpo", "gmb-social-welfare", "GMB", "dpo"),
    ("gmb-dpo-2", "gmb-social-welfare", "GMB", "dpo"),
    ("gin-red-cross", "gin-red-cross", "GIN", "recipient"),
    ("gin-red-cross-desk", "gin-red-cross", "GIN", "submitter"),
];

pub const COUNTRIES: [&str; 3] = ["ITA", "GMB", "GIN"];

/// What to make: which of the demo's countries, on which database.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub countries: &'a [&'a str],
    /// PostgreSQL URL and a schema prefix (one schema per gateway); SQLite files when `None`.
    pub postgres: Option<(&'a str, &'a str)>,
    /// Whether IOM Banjul publishes its own key, so that cases to it are
    /// sealed end to end (the demo's does; the federation bench compares).
    pub sealed_recipient: bool,
    /// The protocol versions every gateway's entry lists, if not the
    /// example directory's (the federation bench compares); none listed:
    /// version 1 only, as gateways of the release before version 2 run the
    /// federation.
    pub protocol_versions: Option<Vec<ProtocolVersion>>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self { countries: &COUNTRIES, postgres: None, sealed_recipient: true, protocol_versions: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("demo setup: {0}")]
pub struct SetupError(pub String);

fn fail(error: impl std::fmt::Display) -> SetupError {
    SetupError(error.to_string())
}

pub struct DemoFiles {
    pub root: PathBuf,
    pub pki: DevPki,
    pub configs: Vec<(CountryCode, GatewayConfig)>,
    coordinator: SigningKey,
    directory_file: PathBuf,
    /// IOM Banjul's own end-to-end key (private): cases to it are sealed to
    /// it, out of the Gambian gateway's reach.
    pub recipient_key: Jwk,
    /// Whether the directory publishes `recipient_key`'s public half.
    pub sealed_recipient: bool,
    /// The protocol versions every gateway's entry lists, if not the example directory's.
    pub protocol_versions: Option<Vec<ProtocolVersion>>,
}

/// The organisation whose own key the demo publishes.
pub const SEALED_RECIPIENT: &str = "gmb-iom-banjul";

/// Writes a fresh demo federation under `root` (cleared first if an earlier
/// demo left it; refused if it holds anything else).
pub fn create(root: &Path, options: &Options<'_>, now: DateTime<Utc>) -> Result<DemoFiles, SetupError> {
    if root.exists() {
        let ours = root.join(MARKER).exists();
        let empty = std::fs::read_dir(root).map_err(fail)?.next().is_none();
        if !ours && !empty {
            return Err(SetupError(format!("{} exists and is not a demo directory; choose another --dir", root.display())));
        }
        std::fs::remove_dir_all(root).map_err(fail)?;
    }
    std::fs::create_dir_all(root).map_err(fail)?;
    std::fs::write(root.join(MARKER), "made by `referral-gateway demo`; cleared by the next run\n").map_err(fail)?;
    let root = std::path::absolute(root).map_err(fail)?;

    let names: Vec<&str> = NATIONAL_SYSTEMS.iter().map(|(name, ..)| *name).collect();
    let pki = dev_pki::create(&root.join("pki"), &names).map_err(fail)?;
    let coordinator_jwk = jose_keys::generate(KeyUse::Sig).map_err(fail)?;
    let coordinator = SigningKey::from_jwk(&coordinator_jwk).map_err(fail)?;
    let federation_dir = root.join("federation");
    std::fs::create_dir_all(&federation_dir).map_err(fail)?;
    let coordinator_public = federation_dir.join("coordinator.pub.jwk");
    std::fs::write(&coordinator_public, jose_keys::public_of(&coordinator_jwk).map_err(fail)?.to_string()).map_err(fail)?;
    let directory_file = federation_dir.join("directory.jws");
    let policies = std::path::absolute("config/policies").map_err(fail)?;

    let mut configs = Vec::new();
    for country in options.countries.iter().copied() {
        let dir = root.join(country.to_ascii_lowercase());
        let database = match options.postgres {
            Some((url, prefix)) => format!("url = \"{url}\"\nschema = \"{prefix}_{}\"\nmax_connections = 8", country.to_ascii_lowercase()),
            None => format!("url = \"sqlite://{}\"", dir.join("gateway.db").display()),
        };
        at_rest::init(&dir.join("keys")).map_err(fail)?;
        federation_keys::init(&dir.join("keys"), &["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(fail)?;
        let mut text = format!(
            "# Written by `referral-gateway demo`: the gateway of {country}.\ncountry = \"{country}\"\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\n\n[server.tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n\n\
             [database]\n{database}\n\n[keys]\ndir = \"{}\"\n\n\
             [directory]\nfile = \"{}\"\ncoordinator_key = \"{}\"\nrefresh_seconds = 1\n\n[policy]\ninitial_dir = \"{}\"\n\n\
             [federation]\nlisten = \"127.0.0.1:0\"\nretry_first_seconds = 1\nretry_max_seconds = 5\npoll_millis = 100\n\n\
             [log]\nlevel = \"warn\"\n\n",
            pki.server_certificate.display(),
            pki.server_key.display(),
            dir.join("keys").display(),
            directory_file.display(),
            coordinator_public.display(),
            policies.display(),
        );
        for (client, (name, org, served_by, role)) in pki.clients.iter().zip(NATIONAL_SYSTEMS) {
            if served_by == country {
                text.push_str(&format!(
                    "[auth.clients.{}]\nfingerprint = \"{}\"\norg = \"{org}\"\nroles = [\"{role}\"]\n\n",
                    name.replace('-', "_"),
                    client.fingerprint.display()
                ));
            }
        }
        if country == "ITA" {
            // Italy's DPOs and auditor sign in to the console with their certificates.
            text.push_str("[console]\n\n");
        }
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).map_err(fail)?;
        let config = GatewayConfig::load(&path).map_err(fail)?;
        configs.push((CountryCode::parse(country).map_err(fail)?, config));
    }
    let recipient_key = jose_keys::generate(KeyUse::Enc).map_err(fail)?;
    let files = DemoFiles { root, pki, configs, coordinator, directory_file, recipient_key, sealed_recipient: options.sealed_recipient, protocol_versions: options.protocol_versions.clone() };
    files.publish(1, &[], now)?;
    Ok(files)
}

impl DemoFiles {
    /// Signs directory edition `serial`: the example directory with the demo
    /// gateways' keys, pins and (once known) endpoints; writes it and
    /// returns it.
    pub fn publish(&self, serial: u64, endpoints: &[(CountryCode, String)], now: DateTime<Utc>) -> Result<Directory, SetupError> {
        let example = std::fs::read_to_string("config/directory.example.json").map_err(fail)?;
        let mut document: DirectoryDocument = serde_json::from_str(&example).map_err(fail)?;
        document.serial = serial;
        for (country, config) in &self.configs {
            let keys = federation_keys::load(&config.keys.dir).map_err(fail)?;
            let entry = document
                .gateways
                .iter_mut()
                .find(|g| g.country == *country)
                .ok_or_else(|| SetupError(format!("the example directory lists no gateway for {country}")))?;
            entry.keys = crate::directory::published_keys(&keys, now - Duration::hours(1), now + Duration::days(365)).map_err(fail)?;
            entry.tls_spki_sha256 = vec![keys.tls_spki_pin().map_err(fail)?];
            if let Some((_, endpoint)) = endpoints.iter().find(|(c, _)| c == country) {
                entry.endpoint = endpoint.clone();
            }
            if let Some(versions) = &self.protocol_versions {
                entry.protocol_versions = versions.clone();
            }
        }
        // The Guinean Red Cross takes cases by pull, like everyone here: the
        // demo's national systems fetch from the inbox.
        for organisation in &mut document.organisations {
            organisation.delivery = Delivery::Pull;
            if self.sealed_recipient && organisation.id.as_str() == SEALED_RECIPIENT {
                let window = (now - Duration::hours(1), now + Duration::days(365));
                organisation.keys = vec![crate::directory::published_key(&self.recipient_key, window.0, window.1, KeyUse::Enc).map_err(fail)?];
            }
        }
        let json = serde_json::to_string(&document).map_err(fail)?;
        let signed = crate::directory::signed::sign(&json, &self.coordinator).map_err(fail)?;
        std::fs::write(&self.directory_file, signed).map_err(fail)?;
        Directory::parse(&json).map_err(fail)
    }

    /// The PEM file (certificate and key) of a national system.
    pub fn client_pem(&self, name: &str) -> Option<&Path> {
        self.pki.clients.iter().find(|c| c.name == name).map(|c| c.pem.as_path())
    }

    /// An HTTPS client for national system `name`: its certificate as the
    /// identity, the demo's CA as the only root.
    pub fn client_builder(&self, name: &str) -> Result<reqwest::ClientBuilder, SetupError> {
        let pem = std::fs::read(self.client_pem(name).ok_or_else(|| fail(format!("no certificate for {name}")))?).map_err(fail)?;
        let ca = std::fs::read(&self.pki.ca).map_err(fail)?;
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).map_err(fail)?)
            .identity(reqwest::Identity::from_pem(&pem).map_err(fail)?))
    }
}
