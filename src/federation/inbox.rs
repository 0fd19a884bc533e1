//! The inbox worker: screens received referrals and applies received
//! statuses, whenever a packet arrives and at each poll interval (which also
//! picks up what a stopped gateway left `received`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::Gateway;

/// Packets processed per round.
const BATCH: i64 = 64;

pub async fn run(gateway: Arc<Gateway>, poll: Duration, stopped: watch::Receiver<()>) {
    let round = || async { Ok(gateway.process_inbox(BATCH).await? as i64 >= BATCH) };
    super::rounds::run("inbox", round, || gateway.processing_wanted(), poll, super::rounds::Pace::FlatOut, stopped).await;
}
