//! Status callbacks to the sending systems of this country: the HTTPS client
//! that posts signed events to organisations' URLs (the public certificate
//! authorities and any `federation.webhook_ca_file` adds; no client
//! certificate: the signature says who sent it), and the worker that sends
//! the events due at each poll interval.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::app::sending::callbacks::{CallbackPush, EVENT_MEDIA_TYPE};
use crate::app::sending::delivery::SendFailure;
use crate::app::Gateway;
use crate::federation::webhook::{https_client, WebhookSetupError};

#[derive(Debug)]
pub struct CallbackClient {
    http: reqwest::Client,
}

impl CallbackClient {
    pub fn new(extra_authorities: Option<&Path>, timeout: Duration) -> Result<Self, WebhookSetupError> {
        Ok(Self { http: https_client(None, extra_authorities, timeout)? })
    }
}

#[async_trait]
impl CallbackPush for CallbackClient {
    async fn post(&self, url: &str, signed_event: &str) -> Result<(), SendFailure> {
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, EVENT_MEDIA_TYPE)
            .body(signed_event.to_owned())
            .send()
            .await
            .map_err(|error| SendFailure::Unreachable { code: if error.is_timeout() { "callback-timeout" } else { "callback-unreachable" } })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(SendFailure::Refused { code: format!("callback-http-{}", response.status().as_u16()) })
        }
    }
}

/// The callback worker: the events due, at each poll interval.
pub async fn run(gateway: Arc<Gateway>, sender: Arc<dyn CallbackPush>, poll: Duration, stopped: watch::Receiver<()>) {
    let round = || async { Ok(gateway.push_callbacks_due(&sender).await? as i64 >= gateway.delivery_batch()) };
    super::rounds::run("callbacks", round, std::future::pending::<()>, poll, super::rounds::Pace::FlatOut, stopped).await;
}
