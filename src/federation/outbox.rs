//! The outbox worker: delivers due packets round after round, woken by a
//! submission or a status to send, and at each poll interval for retries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::sending::delivery::PeerTransport;
use crate::app::Gateway;

pub async fn run(gateway: Arc<Gateway>, transport: Arc<dyn PeerTransport>, poll: Duration, stopped: watch::Receiver<()>) {
    let round = || async {
        let round = gateway.deliver_due(&transport).await?;
        if round.claimed > 0 {
            tracing::debug!(claimed = round.claimed, delivered = round.delivered, expired = round.expired, retrying = round.retrying, "delivery round");
        }
        Ok(round.claimed as i64 >= gateway.delivery_batch())
    };
    super::rounds::run("outbox", round, || gateway.delivery_wanted(), poll, super::rounds::Pace::FlatOut, stopped).await;
}
