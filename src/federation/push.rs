//! The push worker: posts cases to recipients' webhooks when screening
//! queues one, and at each poll interval for the retries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::receiving::pushing::RecipientPush;
use crate::app::Gateway;

pub async fn run(gateway: Arc<Gateway>, webhooks: Arc<dyn RecipientPush>, poll: Duration, stopped: watch::Receiver<()>) {
    let round = || async { Ok(gateway.push_due(&webhooks).await? as i64 >= gateway.delivery_batch()) };
    super::rounds::run("push", round, || gateway.pushing_wanted(), poll, super::rounds::Pace::FlatOut, stopped).await;
}
