//! The loop every background worker runs: a round, then (unless the round
//! came back full) a wait for whichever comes first of the poll interval, a
//! wake-up from the gateway, or the stop. After a full round a worker goes
//! on at once, or, paced, after a rest.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::AppError;

/// How a worker goes on after a full round (more work waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At once: the work is the traffic itself (deliveries, screening, pushes).
    FlatOut,
    /// After a rest, so that full rounds take at most this many percent of
    /// the time (1 to 100): housekeeping with a backlog (the retention
    /// sweep after a restart past many deadlines) must not starve the
    /// traffic of the writer and the cores it shares with it.
    Percent(u32),
}

impl Pace {
    /// The rest after a full round that took `took`: `took` × (100 − share)
    /// / share, never longer than `poll`, the wait of an idle worker.
    fn rest_after(self, took: Duration, poll: Duration) -> Duration {
        match self {
            Pace::FlatOut | Pace::Percent(100..) => Duration::ZERO,
            Pace::Percent(share) => {
                let share = share.max(1);
                (took.saturating_mul(100 - share) / share).min(poll)
            }
        }
    }
}

/// Runs `round` until `stopped` changes; a round under way is finished
/// first. A round answers whether it was full (more work is waiting); a
/// failed round is logged, its work stays queued.
pub async fn run<R, RF, W, WF>(what: &'static str, mut round: R, mut wanted: W, poll: Duration, pace: Pace, mut stopped: watch::Receiver<()>)
where
    R: FnMut() -> RF,
    RF: Future<Output = Result<bool, AppError>>,
    W: FnMut() -> WF,
    WF: Future<Output = ()>,
{
    loop {
        let began = Instant::now();
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
            let rest = pace.rest_after(began.elapsed(), poll);
            if !rest.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(rest) => {},
                    _ = stopped.changed() => return,
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const POLL: Duration = Duration::from_secs(60);

    /// When each round began (from the start), for `full_rounds` full
    /// rounds of `took` each, then one that finds nothing.
    async fn round_starts(pace: Pace, took: Duration, full_rounds: usize) -> Vec<Duration> {
        let start = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(());
        let round = || {
            let starts = Arc::clone(&starts);
            async move {
                let count = {
                    let mut starts = starts.lock().map_err(|_| AppError::Contended)?;
                    starts.push(start.elapsed());
                    starts.len()
                };
                tokio::time::sleep(took).await;
                Ok(count <= full_rounds)
            }
        };
        let worker = run("test", round, std::future::pending::<()>, POLL, pace, stopped);
        let stopper = async {
            // Past the last round, into the idle wait.
            tokio::time::sleep(POLL / 2).await;
            let _ = stop.send(());
        };
        tokio::join!(worker, stopper);
        starts.lock().map(|starts| starts.clone()).unwrap_or_default()
    }

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().copied().map(Duration::from_millis).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn flat_out_goes_on_at_once_after_a_full_round() {
        let starts = round_starts(Pace::FlatOut, Duration::from_millis(100), 3).await;
        assert_eq!(starts, millis(&[0, 100, 200, 300]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_of_a_quarter_rests_three_times_a_full_rounds_length() {
        let starts = round_starts(Pace::Percent(25), Duration::from_millis(100), 3).await;
        assert_eq!(starts, millis(&[0, 400, 800, 1200]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_that_finds_nothing_waits_the_poll_interval_whatever_the_pace() {
        let starts = round_starts(Pace::Percent(25), Duration::from_millis(100), 1).await;
        // The second round came back empty: the idle wait, cut short by the stop.
        assert_eq!(starts, millis(&[0, 400]));
    }

    #[test]
    fn the_rest_never_exceeds_the_poll_interval_and_a_whole_share_never_rests() {
        assert_eq!(Pace::Percent(10).rest_after(Duration::from_secs(30), POLL), POLL);
        assert_eq!(Pace::Percent(50).rest_after(Duration::from_secs(3), POLL), Duration::from_secs(3));
        assert_eq!(Pace::Percent(100).rest_after(Duration::from_secs(3), POLL), Duration::ZERO);
        assert_eq!(Pace::FlatOut.rest_after(Duration::from_secs(3), POLL), Duration::ZERO);
        // Zero is refused by the configuration; were it to come, it counts as 1 %.
        assert_eq!(Pace::Percent(0).rest_after(Duration::from_millis(100), POLL), Duration::from_millis(9900));
    }
}
