//! The sending gateway's watch over its referrals' deadlines (issue 21 §1):
//! how many are overdue, by priority and deadline (the metrics), and the
//! warning logged once for each deadline an emergency misses.
//!
//! A referral is overdue when the deadline its status awaits has passed
//! (`domain::priority`); the store counts by status, priority and time of
//! acceptance, so these are index ranges, not a scan of every referral.

use chrono::{DateTime, Utc};

use crate::app::{AppError, Gateway};
use crate::domain::lifecycle::ReferralStatus;
use crate::domain::priority::{awaited_by_sender, DeadlineKind, Priority};
use crate::store::AwaitingCutoff;

/// Overdue referrals sent from here, of one priority, past one deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverdueCount {
    pub priority: Priority,
    pub deadline: DeadlineKind,
    pub count: i64,
}

/// Overdue emergencies logged per round at most; the next round takes the rest.
pub const WARNINGS_PER_ROUND: i64 = 256;

impl Gateway {
    /// For each priority of `priorities` and each status that awaits a
    /// deadline: the referrals in that status past it at `now`.
    pub(crate) fn overdue_cutoffs(&self, priorities: &[Priority], now: DateTime<Utc>) -> Vec<AwaitingCutoff> {
        let mut cutoffs = Vec::new();
        for priority in priorities {
            for status in ReferralStatus::ALL {
                let Some(deadline) = awaited_by_sender(*status) else { continue };
                let allowed = self.deadlines.of(*priority).of(deadline);
                // Accepted at or before this, the deadline has passed by now.
                let accepted_by = now.checked_sub_signed(allowed).unwrap_or(DateTime::<Utc>::MIN_UTC);
                cutoffs.push(AwaitingCutoff { status: *status, priority: *priority, deadline, accepted_by_ms: accepted_by.timestamp_millis() });
            }
        }
        cutoffs
    }

    /// How many referrals sent from here are overdue now, for every
    /// priority and deadline (zeros included: a series that drops to zero
    /// stays in the metrics).
    pub async fn overdue_counts(&self) -> Result<Vec<OverdueCount>, AppError> {
        let cutoffs = self.overdue_cutoffs(Priority::ALL, self.now());
        let counts = self.store.count_awaiting(&cutoffs).await?;
        let mut totals: Vec<OverdueCount> = Priority::ALL
            .iter()
            .flat_map(|priority| DeadlineKind::ALL.iter().map(|deadline| OverdueCount { priority: *priority, deadline: *deadline, count: 0 }))
            .collect();
        for (cutoff, count) in cutoffs.iter().zip(counts) {
            if let Some(total) = totals.iter_mut().find(|t| t.priority == cutoff.priority && t.deadline == cutoff.deadline) {
                total.count += count;
            }
        }
        Ok(totals)
    }

    /// Logs, at warn level and by id only, each emergency referral past a
    /// deadline it was not logged for yet; returns how many it found. Each
    /// is marked first, and logged only by whoever marked it: two replicas
    /// never both log it. A referral logged late for delivery is logged
    /// again if it then misses its acknowledgement.
    #[tracing::instrument(name = "overdue_watch", skip_all)]
    pub async fn warn_overdue_emergencies(&self, limit: i64) -> Result<usize, AppError> {
        let now = self.now();
        let cutoffs = self.overdue_cutoffs(&[Priority::Emergency], now);
        let overdue = self.store.overdue_unlogged(&cutoffs, limit).await?;
        for referral in &overdue {
            let Some(deadline) = awaited_by_sender(referral.status) else { continue };
            if !self.store.mark_overdue_logged(&referral.referral_id, deadline).await? {
                continue;
            }
            let since = DateTime::<Utc>::from_timestamp_millis(referral.created_ms)
                .map(|accepted| self.deadlines.due(referral.priority, accepted, deadline))
                .unwrap_or(now);
            tracing::warn!(
                referral_id = %referral.referral_id,
                deadline = deadline.as_str(),
                since = %since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "an emergency referral is overdue"
            );
        }
        Ok(overdue.len())
    }
}
