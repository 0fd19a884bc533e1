//! The listening side: plain HTTP, or TLS with optional client certificates
//! (rustls, ring provider). Each connection's certificate fingerprint is
//! handed to the router as a request extension.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::extract::ConnectionInfo;
use crate::auth::client_cert::PinnedClientVerifier;
use crate::config::{CertificateFingerprint, TlsConfig};

/// A slow client gets this long to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("server.tls.certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("server.tls.private_key {path}: {reason}")]
    PrivateKey { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The rustls server configuration: TLS 1.2 and 1.3 with ring, and client
/// certificates requested but not required.
pub fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsSetupError> {
    let shown = |p: &Path| p.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.certificate)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsSetupError::Certificate { path: shown(&config.certificate), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Certificate { path: shown(&config.certificate), reason: "no certificate in the file".to_owned() });
    }
    let key = PrivateKeyDer::from_pem_file(&config.private_key)
        .map_err(|e| TlsSetupError::PrivateKey { path: shown(&config.private_key), reason: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_client_cert_verifier(PinnedClientVerifier::new(&provider))
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Accepts connections until `shutdown` changes; then closes the open ones
/// too (dropping the set of connection tasks aborts them), so that a stopped
/// gateway answers nothing more, even on kept-alive connections.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, router: Router, mut shutdown: watch::Receiver<()>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        match &tls {
            None => {
                connections.spawn(serve_connection(stream, ConnectionInfo::default(), router));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let leaf = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                    let certificate = leaf.map(|leaf| CertificateFingerprint::of_der(leaf.as_ref()));
                    let spki_pin = leaf.and_then(crate::federation::tls::pin_of);
                    serve_connection(stream, ConnectionInfo { certificate, spki_pin }, router).await;
                });
            }
        }
    }
}

async fn serve_connection<I>(io: I, info: ConnectionInfo, router: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(super::head_limits::HYPER_MAX_HEADER_FIELDS)
        .serve_connection(TokioIo::new(io), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
