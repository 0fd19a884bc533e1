//! Pushing signed cases to recipient organisations' webhooks: HTTPS with
//! the public certificate authorities (and any the configuration adds),
//! this gateway's federation certificate presented as the client's.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::app::sending::delivery::SendFailure;
use crate::app::receiving::pushing::{RecipientPush, CASE_MEDIA_TYPE};

#[derive(Debug)]
pub struct WebhookClient {
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("federation.webhook_ca_file {path}: {reason}")]
    Authorities { path: String, reason: String },
    #[error("webhook client: {0}")]
    Client(String),
}

impl WebhookClient {
    pub fn new(identity_pem: &str, extra_authorities: Option<&Path>, timeout: Duration) -> Result<Self, WebhookSetupError> {
        let identity = reqwest::Identity::from_pem(identity_pem.as_bytes()).map_err(|e| WebhookSetupError::Client(e.to_string()))?;
        Ok(Self { http: https_client(Some(identity), extra_authorities, timeout)? })
    }
}

/// An HTTPS-only client that follows no redirect, trusting the public
/// authorities and those of `extra_authorities`, presenting `identity` if given.
pub fn https_client(identity: Option<reqwest::Identity>, extra_authorities: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, WebhookSetupError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    if let Some(path) = extra_authorities {
        let failed = |reason: String| WebhookSetupError::Authorities { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| WebhookSetupError::Client(e.to_string()))
}

#[async_trait]
impl RecipientPush for WebhookClient {
    async fn push(&self, url: &str, signed_case: &str) -> Result<(), SendFailure> {
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CASE_MEDIA_TYPE)
            .body(signed_case.to_owned())
            .send()
            .await
            .map_err(|error| SendFailure::Unreachable { code: if error.is_timeout() { "recipient-timeout" } else { "recipient-unreachable" } })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SendFailure::Refused { code: format!("recipient-http-{}", response.status().as_u16()) })
        }
    }
}
