//! Client certificates pinned by fingerprint.
//!
//! The TLS layer accepts any client certificate whose holder proves
//! possession of its private key; the HTTP layer then looks its SHA-256
//! fingerprint up in the configuration. An unregistered certificate thus gets
//! a `401` problem and an audit entry rather than a bare TLS alert, as an
//! X.509 v3 or v1 certificate: webpki reads only v3 end-entity
//! certificates, so the key of a v1 certificate (as `openssl x509 -req` made
//! them for years) is read with webpki's trust-anchor parser, which takes v1
//! too. A v2 certificate, which nobody makes, still fails the handshake.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, verify_tls13_signature_with_raw_key, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, PeerMisbehaved, SignatureScheme};

use super::{AuthError, AuthMethod, Principal, Role};
use crate::domain::OrgId;
use serde::Deserialize;

/// One `[auth.clients.<name>]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateConfig {
    /// SHA-256 of the certificate (DER), as `sha256:` and 64 hex digits.
    pub fingerprint: CertificateFingerprint,
    pub org: OrgId,
    pub roles: Vec<Role>,
}

/// A certificate's SHA-256 fingerprint, normalised to lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CertificateFingerprint(String);

impl CertificateFingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Self(crate::hex::encode(digest.as_ref()))
    }

    /// `sha256:` then the hex digest: the form shown to operators.
    pub fn display(&self) -> String {
        format!("sha256:{}", self.0)
    }
}

impl TryFrom<String> for CertificateFingerprint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        let hex: String = text.strip_prefix("sha256:").unwrap_or(&text).chars().filter(|c| *c != ':').collect();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(hex.to_ascii_lowercase()))
        } else {
            Err("must be `sha256:` followed by 64 hex digits".to_owned())
        }
    }
}

/// Registered client certificates.
#[derive(Debug, Clone, Default)]
pub struct ClientCertificates {
    by_fingerprint: BTreeMap<CertificateFingerprint, (OrgId, BTreeSet<Role>)>,
}

impl ClientCertificates {
    pub fn new<'a>(clients: impl IntoIterator<Item = &'a ClientCertificateConfig>) -> Self {
        let by_fingerprint = clients
            .into_iter()
            .map(|c| (c.fingerprint.clone(), (c.org.clone(), c.roles.iter().copied().collect())))
            .collect();
        Self { by_fingerprint }
    }

    pub fn authenticate(&self, fingerprint: &CertificateFingerprint) -> Result<Principal, AuthError> {
        let (org, roles) = self.by_fingerprint.get(fingerprint).ok_or(AuthError::UnknownCertificate)?;
        Ok(Principal {
            org: org.clone(),
            subject: fingerprint.display(),
            roles: roles.clone(),
            method: AuthMethod::ClientCertificate,
        })
    }
}

/// Asks every client for a certificate, lets clients without one through (they
/// may carry a bearer token), and checks only proof of key possession: who the
/// certificate belongs to is decided by [`ClientCertificates`].
#[derive(Debug)]
pub struct PinnedClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientVerifier {
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> Arc<Self> {
        Arc::new(Self { algorithms: provider.signature_verification_algorithms })
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match v1_public_key(cert) {
            Some(key) => verify_tls12_signature_with_key(message, &key, dss, &self.algorithms),
            None => verify_tls12_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match v1_public_key(cert) {
            Some(key) => verify_tls13_signature_with_raw_key(message, &key, dss, &self.algorithms),
            None => verify_tls13_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SubjectPublicKeyInfo of an X.509 v1 certificate; `None` for any other
/// (rustls reads those itself). webpki refuses v1 end-entity certificates,
/// but reads them as trust anchors: that parser is used here only to get at
/// the key, whose proof of possession is then checked as for any other
/// certificate. Nothing is trusted on account of it being an "anchor".
fn v1_public_key(certificate: &CertificateDer<'_>) -> Option<SubjectPublicKeyInfoDer<'static>> {
    match webpki::EndEntityCert::try_from(certificate) {
        Err(webpki::Error::UnsupportedCertVersion) => {
            webpki::anchor_from_trusted_cert(certificate).ok().map(|anchor| webpki::spki_for_anchor(&anchor))
        }
        _ => None,
    }
}

/// What rustls's `verify_tls12_signature` does, with the key given directly:
/// each algorithm that may stand behind the TLS 1.2 scheme is tried in turn.
fn verify_tls12_signature_with_key(
    message: &[u8],
    key: &SubjectPublicKeyInfoDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, candidates)| *candidates)
        .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    let key = webpki::RawPublicKeyEntity::try_from(key).map_err(unusable_key)?;
    let mut last_error = rustls::Error::General("no signature algorithm for this scheme".to_owned());
    for algorithm in candidates {
        match key.verify_signature(*algorithm, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            Err(error @ webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => last_error = unusable_key(error),
            Err(webpki::Error::InvalidSignatureForPublicKey) => return Err(CertificateError::BadSignature.into()),
            Err(other) => return Err(unusable_key(other)),
        }
    }
    Err(last_error)
}

fn unusable_key(error: webpki::Error) -> rustls::Error {
    CertificateError::Other(rustls::OtherError(Arc::new(error))).into()
}
