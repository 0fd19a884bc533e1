//! The loop every background worker runs: a round, then (unless the round
//! came back full) a wait for whichever comes first of the poll interval, a
//! wake-up from the gateway, or the stop.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::AppError;

/// Runs `round` until `stopped` changes; a round under way is finished
/// first. A round answers whether it was full (more work is waiting); a
/// failed round is logged, its work stays queued.
pub async fn run<R, RF, W, WF>(what: &'static str, mut round: R, mut wanted: W, poll: Duration, mut stopped: watch::Receiver<()>)
where
    R: FnMut() -> RF,
    RF: Future<Output = Result<bool, AppError>>,
    W: FnMut() -> WF,
    WF: Future<Output = ()>,
{
    loop {
        let full = match round().await {
            Ok(full) => full,
            Err(error) => {
                tracing::error!(%error, worker = what, "round failed; its work stays queued");
                false
            }
        };
        if full {
            // More work waits, but a stop comes first: the work stays queued.
            if stopped.has_changed().unwrap_or(true) {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {},
            _ = wanted() => {},
            _ = stopped.changed() => return,
        }
    }
}
