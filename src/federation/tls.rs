//! Mutual TLS between member gateways, TLS 1.3 only. No certificate
//! authority is involved: a peer is whoever presents a certificate whose
//! SubjectPublicKeyInfo SHA-256 the directory lists for an active member,
//! and proves it holds the key. The directory in force is consulted on every
//! handshake, so a suspension or a new pin applies to the next connection.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::app::Gateway;
use crate::crypto::federation_keys::spki_pin;
use crate::directory::{Directory, MemberStatus};
use crate::domain::CountryCode;

/// What the TLS layer needs to know of the directory in force.
pub trait Members: Send + Sync + std::fmt::Debug {
    /// The active member gateway that lists `pin` among its TLS pins.
    fn active_member_by_pin(&self, pin: &str) -> Option<CountryCode>;
}

impl Members for Directory {
    fn active_member_by_pin(&self, pin: &str) -> Option<CountryCode> {
        self.gateway_by_pin(pin).filter(|gateway| gateway.status == MemberStatus::Active).map(|gateway| gateway.country)
    }
}

/// The directory in force at the moment of each handshake.
impl Members for Gateway {
    fn active_member_by_pin(&self, pin: &str) -> Option<CountryCode> {
        self.directory().active_member_by_pin(pin)
    }
}

/// The gateway's directory, through a weak reference: for a client the
/// gateway itself holds (matching's), which must not keep it alive (a
/// cycle would keep its store and connections open after it stops). Once
/// the gateway is gone, no member is known.
#[derive(Debug)]
pub struct MembersOf(pub std::sync::Weak<Gateway>);

impl Members for MembersOf {
    fn active_member_by_pin(&self, pin: &str) -> Option<CountryCode> {
        self.0.upgrade()?.active_member_by_pin(pin)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The SHA-256 pin of a certificate's SubjectPublicKeyInfo, if it parses.
pub fn pin_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
    Some(spki_pin(parsed.subject_public_key_info().as_ref()))
}

/// The member gateway at the other end of an established connection.
pub fn peer_member(members: &dyn Members, peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<CountryCode> {
    let end_entity = peer_certificates?.first()?;
    members.active_member_by_pin(&pin_of(end_entity)?)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: a client certificate is required and must be an active member's.
pub fn server_config(
    members: Arc<dyn Members>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, PeerTlsError> {
    let provider = provider();
    let verifier = Arc::new(MemberClientVerifier { members, algorithms: provider.signature_verification_algorithms });
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?)
}

/// Client side, for connections to `peer`: its certificate must carry one of
/// the pins the directory lists for it, and ours goes along.
pub fn client_config(
    members: Arc<dyn Members>,
    peer: CountryCode,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, PeerTlsError> {
    let provider = provider();
    let verifier = Arc::new(MemberServerVerifier { members, peer, algorithms: provider.signature_verification_algorithms });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?)
}

fn not_a_member() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("only TLS 1.3 is accepted between gateways".to_owned())
}

#[derive(Debug)]
struct MemberClientVerifier {
    members: Arc<dyn Members>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for MemberClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let pin = pin_of(end_entity).ok_or(not_a_member())?;
        self.members.active_member_by_pin(&pin).map(|_| ClientCertVerified::assertion()).ok_or(not_a_member())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
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

#[derive(Debug)]
struct MemberServerVerifier {
    members: Arc<dyn Members>,
    peer: CountryCode,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = pin_of(end_entity).ok_or(not_a_member())?;
        match self.members.active_member_by_pin(&pin) {
            Some(country) if country == self.peer => Ok(ServerCertVerified::assertion()),
            _ => Err(not_a_member()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
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

#[cfg(test)]
mod tests;
