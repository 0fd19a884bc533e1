//! When to try a failed delivery again: exponential backoff with jitter.
//! Pure, so that its bounds are tested without waiting.

use std::time::Duration;

/// How retries are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt (before jitter).
    pub first: Duration,
    /// No delay exceeds this.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failed` failed attempts (at least 1): `first`
    /// doubled per further failure, capped at `max`, then scaled by a factor
    /// between 0.5 and 1 taken from `random`. The jitter keeps the retries of
    /// many packets queued during one outage from reaching the peer together
    /// when it comes back.
    pub fn delay(&self, failed: u32, random: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(32);
        let uncapped = self.first.saturating_mul(1u32 << doublings.min(31));
        let capped = uncapped.min(self.max);
        let factor = 0.5 + f64::from(random) / f64::from(u32::MAX) / 2.0;
        capped.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BACKOFF: Backoff = Backoff { first: Duration::from_secs(2), max: Duration::from_secs(600) };

    #[test]
    fn doubles_from_first_then_stays_at_max() {
        assert_eq!(BACKOFF.delay(1, u32::MAX), Duration::from_secs(2));
        assert_eq!(BACKOFF.delay(2, u32::MAX), Duration::from_secs(4));
        assert_eq!(BACKOFF.delay(5, u32::MAX), Duration::from_secs(32));
        assert_eq!(BACKOFF.delay(9, u32::MAX), Duration::from_secs(512));
        assert_eq!(BACKOFF.delay(10, u32::MAX), Duration::from_secs(600));
        assert_eq!(BACKOFF.delay(u32::MAX, u32::MAX), Duration::from_secs(600));
        assert_eq!(BACKOFF.delay(1, 0), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn within_half_and_whole_of_the_capped_doubling(failed in 1u32..200, random in any::<u32>()) {
            let delay = BACKOFF.delay(failed, random);
            let doubled = BACKOFF.first.saturating_mul(1u32 << (failed - 1).min(31)).min(BACKOFF.max);
            prop_assert!(delay <= doubled);
            prop_assert!(delay >= doubled / 2);
            prop_assert!(delay <= BACKOFF.max);
        }

        #[test]
        fn never_shorter_after_more_failures(failed in 1u32..200, random in any::<u32>()) {
            prop_assert!(BACKOFF.delay(failed + 1, random) >= BACKOFF.delay(failed, random));
        }
    }
}
