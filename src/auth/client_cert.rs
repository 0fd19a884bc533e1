//! Client certificates pinned by fingerprint.
//!
//! The TLS layer accepts any client certificate whose holder proves
//! possession of its private key; the HTTP layer then looks its SHA-256
//! fingerprint up in the configuration. An unregistered certificate thus gets
//! a `401` problem and an audit entry rather than a bare TLS alert.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{AuthError, AuthMethod, Principal, Role};
use crate::config::{CertificateFingerprint, ClientCertificateConfig};
use crate::domain::OrgId;

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
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
