//! The federation directory (trust list): member gateways with their keys,
//! and recipient organisations.
//!
//! This is the document's content model, its checks and its lookups. The
//! coordinator's signature over it is in `signed`.

pub mod membership;
pub mod signed;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use josekit::jwk::Jwk;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crypto::federation_keys::FederationKeys;
use crate::crypto::jose_keys::{self, DecryptionKey, EncryptionKey, KeyUse, SigningKey, VerifyingKey};
use crate::crypto::packet::{PublishedSigner, SignerDirectory};
use crate::domain::recipient::{Recipient, Service};
use crate::domain::{CountryCode, OrgId, RecipientKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryDocument {
    /// Edition number, at least 1, raised with every edition the
    /// coordinator signs: a gateway never replaces its directory with an
    /// older edition, nor with another one under the same number.
    pub serial: u64,
    pub gateways: Vec<GatewayEntry>,
    pub organisations: Vec<OrganisationEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayEntry {
    pub country: CountryCode,
    /// Base URL of the gateway's federation endpoint (`https://`).
    pub endpoint: String,
    #[serde(default)]
    pub status: MemberStatus,
    /// SHA-256 of the DER SubjectPublicKeyInfo of each TLS certificate the
    /// gateway may present, standard base64. Two during a certificate change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_spki_sha256: Vec<String>,
    /// Public signing and encryption keys, each with its validity window.
    /// Windows overlap during a rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<PublishedKey>,
    /// Largest sealed packet the gateway takes, in bytes (default 1048576,
    /// the federation's). Senders refuse at submission a case whose packet
    /// could exceed it, rather than queue what would be refused on arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536, max = 16777216))]
    pub max_packet_bytes: Option<u32>,
    /// The versions of the packet protocol the gateway takes
    /// (`federation.md` §5b); absent: version 1 only. A gateway sends a
    /// peer only what the peer's entry lists: version 2 adds the coalesced
    /// status packet (`statuses`), version 3 batches of packets with one
    /// receipt (§5c).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocol_versions: Vec<ProtocolVersion>,
}

/// A version of the packet protocol between gateways (`federation.md` §5b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ProtocolVersion(u32);

impl JsonSchema for ProtocolVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProtocolVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "minimum": 1,
            "description": "A version of the packet protocol between gateways (federation.md §5b)."
        })
    }
}

impl ProtocolVersion {
    /// Every gateway takes it: one packet per referral, status, withdrawal
    /// or confirmation, one receipt per packet.
    pub const FIRST: Self = Self(1);
    /// Statuses about several referrals to one peer in one packet (`statuses`).
    pub const COALESCED_STATUSES: Self = Self(2);
    /// Several packets to one peer in one request, with one signed batch
    /// receipt for them all (`federation.md` §5c).
    pub const BATCHES: Self = Self(3);
}

impl TryFrom<u32> for ProtocolVersion {
    type Error = &'static str;
    fn try_from(number: u32) -> Result<Self, Self::Error> {
        if number == 0 {
            Err("a protocol version is at least 1")
        } else {
            Ok(Self(number))
        }
    }
}

impl From<ProtocolVersion> for u32 {
    fn from(version: ProtocolVersion) -> u32 {
        version.0
    }
}

/// Largest sealed packet a gateway takes unless its directory entry says otherwise.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1024 * 1024;
/// The range a gateway's published packet limit must fall in: room for an
/// ordinary case sealed end to end, and no more than a body may hold.
pub const PACKET_LIMIT_RANGE: std::ops::RangeInclusive<u32> = 64 * 1024..=16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    #[default]
    Active,
    /// Nothing is sent to it and nothing from it is accepted.
    Suspended,
}

impl MemberStatus {
    /// The wire name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedKey {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// A public P-256 JWK with `use` (`sig` or `enc`) and `kid` (its RFC 7638 thumbprint).
    pub jwk: serde_json::Map<String, serde_json::Value>,
}

/// How a recipient organisation receives what its gateway forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Delivery {
    /// It fetches from `GET /v1/inbox` with the `recipient` role.
    #[default]
    Pull,
    /// Its gateway posts each packet, signed, to this `https://` URL.
    Webhook { url: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganisationEntry {
    pub id: OrgId,
    /// Display name of the organisation (not personal data).
    pub name: String,
    /// Where the organisation sits: the gateway of this country serves it.
    pub country: CountryCode,
    /// The state it acts for, when not `country`: required for consulates and
    /// embassies, which sit abroad but are state actors of their own state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub represents: Option<CountryCode>,
    pub kind: RecipientKind,
    /// Marks a non-government organisation as a state actor; a government kind
    /// is a state actor whatever this says.
    #[serde(default)]
    pub state_actor: bool,
    #[serde(default)]
    pub services: BTreeSet<Service>,
    #[serde(default)]
    pub delivery: Delivery,
    /// The organisation's own encryption keys (`use` `enc`), each with its
    /// validity window. While one is valid, every packet to the organisation
    /// is sealed end to end to it, so that its gateway routes what it
    /// cannot read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<PublishedKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory is not valid JSON of the directory schema: {0}")]
    Malformed(String),
    #[error("organisation id {0} appears more than once")]
    DuplicateOrganisation(OrgId),
    #[error("gateway country {0} appears more than once")]
    DuplicateGateway(CountryCode),
    #[error("organisation {0} is in {1}, which has no gateway in the directory")]
    NoGateway(OrgId, CountryCode),
    #[error("organisation {0} is consular: it must name the state it represents")]
    ConsularWithoutState(OrgId),
    #[error("gateway {country}: key {index}: {reason}")]
    BadKey { country: CountryCode, index: usize, reason: String },
    #[error("organisation {org}: key {index}: {reason}")]
    BadOrganisationKey { org: OrgId, index: usize, reason: String },
    #[error("key id {0} is published more than once")]
    DuplicateKey(String),
    #[error("gateway {0}: a TLS pin is not the base64 of a SHA-256 digest")]
    BadPin(CountryCode),
    #[error("TLS pin of gateway {0} is also another gateway's")]
    DuplicatePin(CountryCode),
    #[error("{0}: the URL must start with https://")]
    NotHttps(String),
    #[error("gateway {0}: max_packet_bytes must be between 65536 and 16777216")]
    BadPacketLimit(CountryCode),
    #[error("serial must be at least 1")]
    NoSerial,
}

/// A key as checked when the directory was read.
#[derive(Debug, Clone)]
struct Window {
    country: CountryCode,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
}

impl Window {
    fn valid_at(&self, at: DateTime<Utc>) -> bool {
        self.not_before <= at && at < self.not_after
    }
}

/// Of encryption keys, the newest (latest `not_before`) valid at `at`, so
/// that senders move to a new key as soon as its window opens.
fn newest_valid<'k>(keys: impl Iterator<Item = &'k (Window, EncryptionKey)>, at: DateTime<Utc>) -> Option<&'k EncryptionKey> {
    keys.filter(|(window, _)| window.valid_at(at)).max_by_key(|(window, _)| window.not_before).map(|(_, key)| key)
}

/// Takes `kid` in the one set of ids across gateways, organisations and
/// both uses: a key is published once, for one use.
fn claim_kid(kid: &str, kids: &mut std::collections::HashSet<String>) -> Result<(), DirectoryError> {
    if kids.insert(kid.to_owned()) { Ok(()) } else { Err(DirectoryError::DuplicateKey(kid.to_owned())) }
}

impl PublishedKey {
    /// Its JWK, once its window is checked; why not otherwise.
    fn checked_jwk(&self) -> Result<Jwk, String> {
        if self.not_before >= self.not_after {
            return Err("not_before is not before not_after".to_owned());
        }
        Jwk::from_map(self.jwk.clone()).map_err(|e| e.to_string())
    }
}

/// A checked directory with lookups by organisation id, key id and TLS pin.
#[derive(Debug, Clone)]
pub struct Directory {
    serial: u64,
    /// SHA-256 of the document as parsed, to tell two editions apart.
    digest: [u8; 32],
    gateways: BTreeMap<CountryCode, GatewayEntry>,
    organisations: BTreeMap<OrgId, OrganisationEntry>,
    signers: HashMap<String, (Window, VerifyingKey)>,
    encryption: HashMap<String, (Window, EncryptionKey)>,
    /// Recipient organisations' end-to-end keys, by organisation.
    organisation_keys: HashMap<OrgId, Vec<(Window, EncryptionKey)>>,
    pins: HashMap<String, CountryCode>,
}

impl Directory {
    pub fn parse(json: &str) -> Result<Self, DirectoryError> {
        let document: DirectoryDocument =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json)).map_err(|e| {
                DirectoryError::Malformed(format!("{}: {}", e.path(), e.inner()))
            })?;
        Self::from_document(document)
    }

    pub fn from_document(document: DirectoryDocument) -> Result<Self, DirectoryError> {
        if document.serial == 0 {
            return Err(DirectoryError::NoSerial);
        }
        let canonical = serde_json::to_vec(&document).map_err(|e| DirectoryError::Malformed(e.to_string()))?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &canonical).as_ref());
        let mut kids = std::collections::HashSet::new();
        let mut gateways = BTreeMap::new();
        let (mut signers, mut encryption, mut pins) = (HashMap::new(), HashMap::new(), HashMap::new());
        for gateway in document.gateways {
            let country = gateway.country;
            if !gateway.endpoint.starts_with("https://") {
                return Err(DirectoryError::NotHttps(format!("gateway {country} endpoint")));
            }
            for (index, published) in gateway.keys.iter().enumerate() {
                let bad = |reason: String| DirectoryError::BadKey { country, index, reason };
                let jwk = published.checked_jwk().map_err(bad)?;
                let window = Window { country, not_before: published.not_before, not_after: published.not_after };
                match jwk.key_use() {
                    Some("sig") => {
                        let key = VerifyingKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
                        claim_kid(key.kid(), &mut kids)?;
                        signers.insert(key.kid().to_owned(), (window, key));
                    }
                    Some("enc") => {
                        let key = EncryptionKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
                        claim_kid(key.kid(), &mut kids)?;
                        encryption.insert(key.kid().to_owned(), (window, key));
                    }
                    _ => return Err(bad("`use` must be sig or enc".to_owned())),
                }
            }
            if gateway.max_packet_bytes.is_some_and(|limit| !PACKET_LIMIT_RANGE.contains(&limit)) {
                return Err(DirectoryError::BadPacketLimit(country));
            }
            for pin in &gateway.tls_spki_sha256 {
                if STANDARD.decode(pin).map(|digest| digest.len()) != Ok(32) {
                    return Err(DirectoryError::BadPin(country));
                }
                if pins.insert(pin.clone(), country).is_some() {
                    return Err(DirectoryError::DuplicatePin(country));
                }
            }
            if gateways.insert(country, gateway).is_some() {
                return Err(DirectoryError::DuplicateGateway(country));
            }
        }
        let mut organisations = BTreeMap::new();
        let mut organisation_keys: HashMap<OrgId, Vec<(Window, EncryptionKey)>> = HashMap::new();
        for organisation in document.organisations {
            if !gateways.contains_key(&organisation.country) {
                return Err(DirectoryError::NoGateway(organisation.id, organisation.country));
            }
            if organisation.kind == RecipientKind::Consular && organisation.represents.is_none() {
                return Err(DirectoryError::ConsularWithoutState(organisation.id));
            }
            if let Delivery::Webhook { url } = &organisation.delivery
                && !url.starts_with("https://")
            {
                return Err(DirectoryError::NotHttps(format!("organisation {} webhook", organisation.id)));
            }
            for (index, published) in organisation.keys.iter().enumerate() {
                let bad = |reason: String| DirectoryError::BadOrganisationKey { org: organisation.id.clone(), index, reason };
                let jwk = published.checked_jwk().map_err(bad)?;
                if jwk.key_use() != Some("enc") {
                    return Err(bad("`use` must be enc".to_owned()));
                }
                let key = EncryptionKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
                claim_kid(key.kid(), &mut kids)?;
                let window = Window { country: organisation.country, not_before: published.not_before, not_after: published.not_after };
                organisation_keys.entry(organisation.id.clone()).or_default().push((window, key));
            }
            let id = organisation.id.clone();
            if organisations.insert(id.clone(), organisation).is_some() {
                return Err(DirectoryError::DuplicateOrganisation(id));
            }
        }
        Ok(Self { serial: document.serial, digest, gateways, organisations, signers, encryption, organisation_keys, pins })
    }

    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether `other` is the same edition, content and all.
    pub fn same_content(&self, other: &Directory) -> bool {
        self.digest == other.digest
    }

    pub fn recipient(&self, id: &OrgId) -> Option<Recipient> {
        self.organisations.get(id).map(|o| {
            let recipient = Recipient::new(o.id.clone(), o.country, o.kind, o.state_actor, o.services.clone());
            recipient.representing(o.represents.unwrap_or(o.country))
        })
    }

    /// The recipient as a sharing decision at `at` sees it: with whether it
    /// publishes an end-to-end key valid then.
    pub fn recipient_at(&self, id: &OrgId, at: DateTime<Utc>) -> Option<Recipient> {
        self.recipient(id).map(|recipient| recipient.with_end_to_end_key(self.organisation_key(id, at).is_some()))
    }

    /// The key to seal end to end to organisation `id` with at `at`: the
    /// newest of its valid keys, as for gateways.
    pub fn organisation_key(&self, id: &OrgId, at: DateTime<Utc>) -> Option<&EncryptionKey> {
        newest_valid(self.organisation_keys.get(id)?.iter(), at)
    }

    pub fn organisation(&self, id: &OrgId) -> Option<&OrganisationEntry> {
        self.organisations.get(id)
    }

    pub fn organisations(&self) -> impl Iterator<Item = &OrganisationEntry> {
        self.organisations.values()
    }

    pub fn gateway(&self, country: CountryCode) -> Option<&GatewayEntry> {
        self.gateways.get(&country)
    }

    /// The member gateways active now, by country.
    pub fn active_gateways(&self) -> Vec<CountryCode> {
        self.gateways.values().filter(|gateway| gateway.status == MemberStatus::Active).map(|gateway| gateway.country).collect()
    }

    /// Whether `country`'s gateway takes packets of `version`: what its
    /// entry lists, or version 1 alone when it lists none.
    pub fn speaks(&self, country: CountryCode, version: ProtocolVersion) -> bool {
        self.gateways.get(&country).is_some_and(|gateway| match gateway.protocol_versions.as_slice() {
            [] => version == ProtocolVersion::FIRST,
            listed => listed.contains(&version),
        })
    }

    /// The largest sealed packet `country`'s gateway takes: what its entry
    /// publishes, or the federation's default.
    pub fn packet_limit(&self, country: CountryCode) -> usize {
        self.gateways
            .get(&country)
            .and_then(|gateway| gateway.max_packet_bytes)
            .map_or(DEFAULT_MAX_PACKET_BYTES, |limit| usize::try_from(limit).unwrap_or(usize::MAX))
    }

    /// The largest packet limit any other member publishes: no submission
    /// whose packet exceeds it can be delivered anywhere.
    pub fn largest_peer_packet_limit(&self, own: CountryCode) -> usize {
        self.gateways.keys().filter(|country| **country != own).map(|country| self.packet_limit(*country)).max().unwrap_or(DEFAULT_MAX_PACKET_BYTES)
    }

    /// The member gateway presenting a TLS certificate with this SPKI pin.
    pub fn gateway_by_pin(&self, spki_sha256: &str) -> Option<&GatewayEntry> {
        self.pins.get(spki_sha256).and_then(|country| self.gateways.get(country))
    }

    /// The key to encrypt to `country` with at `at`: among its valid
    /// encryption keys, the newest (latest `not_before`), so that senders
    /// move to a new key as soon as its window opens.
    pub fn encryption_key(&self, country: CountryCode, at: DateTime<Utc>) -> Option<&EncryptionKey> {
        newest_valid(self.encryption.values().filter(|(window, _)| window.country == country), at)
    }

    /// Of this gateway's private keys, those the directory lists as valid
    /// for `country` at `at`: the ones a packet to us may be encrypted to.
    pub fn valid_decryption_keys(&self, country: CountryCode, at: DateTime<Utc>, keys: &[DecryptionKey]) -> Vec<DecryptionKey> {
        keys.iter()
            .filter(|key| self.encryption.get(key.kid()).is_some_and(|(window, _)| window.country == country && window.valid_at(at)))
            .cloned()
            .collect()
    }

    /// Of this gateway's signing keys, the one to sign with at `at`: published
    /// for `country`, valid, and the newest.
    pub fn current_signing_key<'k>(&self, country: CountryCode, at: DateTime<Utc>, keys: &'k [SigningKey]) -> Option<&'k SigningKey> {
        keys.iter()
            .filter_map(|key| {
                let (window, _) = self.signers.get(key.kid())?;
                (window.country == country && window.valid_at(at)).then_some((window.not_before, key))
            })
            .max_by_key(|(not_before, _)| *not_before)
            .map(|(_, key)| key)
    }
}

impl SignerDirectory for Directory {
    fn signer(&self, kid: &str, at: DateTime<Utc>) -> Option<PublishedSigner> {
        let (window, key) = self.signers.get(kid)?;
        if !window.valid_at(at) {
            return None;
        }
        let active = self.gateways.get(&window.country).is_some_and(|gateway| gateway.status == MemberStatus::Active);
        Some(PublishedSigner { country: window.country, active, key: key.clone() })
    }
}

/// The directory entries for a gateway's federation public keys, each
/// valid from `from` until `until`.
pub fn published_keys(keys: &FederationKeys, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Vec<PublishedKey>, jose_keys::JwkError> {
    keys.public_keys().iter().map(|(use_, jwk)| published_key(jwk, from, until, *use_)).collect()
}

/// The directory entry for the public half of `jwk`, valid from `from`
/// until `until`: what `keys public` prints for the coordinator.
pub fn published_key(jwk: &Jwk, from: DateTime<Utc>, until: DateTime<Utc>, use_: KeyUse) -> Result<PublishedKey, jose_keys::JwkError> {
    let public = jose_keys::public_of(jwk)?;
    jose_keys::check_public(&public, use_)?;
    Ok(PublishedKey { not_before: from, not_after: until, jwk: public.as_ref().clone() })
}

#[cfg(test)]
mod published_tests {
    use crate::crypto::federation_keys::{init, load};

    #[test]
    fn the_published_entry_holds_only_public_keys() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["localhost".to_owned()]).unwrap();
        let now = crate::demo::fixtures::written_at();
        let published = super::published_keys(&load(dir.path()).unwrap(), now, now + chrono::Duration::days(365)).unwrap();
        assert_eq!(published.len(), 2);
        assert!(published.iter().all(|key| !key.jwk.contains_key("d")));
    }
}
