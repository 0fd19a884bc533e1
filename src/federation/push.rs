//! The push worker: posts cases to recipients' webhooks when screening
//! queues one, and at each poll interval for the retries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::pushing::RecipientPush;
use crate::app::Gateway;

pub async fn run(gateway: Arc<Gateway>, webhooks: Arc<dyn RecipientPush>, poll: Duration, mut stopped: watch::Receiver<()>) {
    loop {
        let full = match gateway.push_due(&webhooks).await {
            Ok(claimed) => claimed as i64 >= gateway.delivery_batch(),
            Err(error) => {
                tracing::error!(%error, "push round failed; the cases stay queued");
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {},
            _ = gateway.pushing_wanted() => {},
            _ = stopped.changed() => return,
        }
    }
}
