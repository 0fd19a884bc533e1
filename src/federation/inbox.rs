//! The inbox worker: screens received referrals and applies received
//! statuses, whenever a packet arrives and at each poll interval (which also
//! picks up what a stopped gateway left `received`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::Gateway;

/// Packets processed per round.
const BATCH: i64 = 64;

pub async fn run(gateway: Arc<Gateway>, poll: Duration, mut stopped: watch::Receiver<()>) {
    loop {
        let full = match gateway.process_inbox(BATCH).await {
            Ok(moved) => moved as i64 >= BATCH,
            Err(error) => {
                tracing::error!(%error, "inbox round failed; received packets stay queued");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {},
            _ = gateway.processing_wanted() => {},
            _ = stopped.changed() => return,
        }
    }
}
