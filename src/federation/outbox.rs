//! The outbox worker: delivers due referrals round after round. It sleeps
//! between rounds until the poll interval passes or a submission wakes it,
//! and goes on at once while rounds come back full.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::delivery::PeerTransport;
use crate::app::Gateway;

/// Runs until `stopped` changes. A failed round (the database away, say)
/// is logged and tried again at the next interval: entries stay queued.
pub async fn run(gateway: Arc<Gateway>, transport: Arc<dyn PeerTransport>, poll: Duration, mut stopped: watch::Receiver<()>) {
    loop {
        let full = match gateway.deliver_due(&transport).await {
            Ok(round) => {
                if round.claimed > 0 {
                    tracing::debug!(claimed = round.claimed, delivered = round.delivered, expired = round.expired, retrying = round.retrying, "delivery round");
                }
                round.claimed as i64 >= gateway.delivery_batch()
            }
            Err(error) => {
                tracing::error!(%error, "delivery round failed; the outbox keeps its entries");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {},
            _ = gateway.delivery_wanted() => {},
            _ = stopped.changed() => return,
        }
    }
}
