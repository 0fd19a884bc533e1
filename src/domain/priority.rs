//! How soon a referral needs an answer, and when it is overdue (issue 21 §1).
//!
//! The inter-agency referral form marks a referral `emergency` (a response
//! within 24 hours), `urgent` (72 hours) or `normal` (two weeks). Each
//! priority has three deadlines, counted from acceptance:
//! - delivery to the recipient's gateway;
//! - acknowledgement by the recipient;
//! - the recipient's first status, `accepted` or `declined`.
//!
//! A referral past the deadline it awaits is overdue, naming that deadline
//! and since when. What it awaits follows from its status at the sending
//! gateway (the receiving gateway's inbox keeps the same order of deadlines
//! in its queue columns, `store::InboxQueue`). Pure: the caller gives the time.

use chrono::{DateTime, Duration, Utc};

use super::lifecycle::ReferralStatus;

vocabulary! {
    /// How soon a referral needs an answer, as on the inter-agency referral form.
    Priority, "priority" {
        Emergency => "emergency",
        Urgent => "urgent",
        Normal => "normal",
    }
}

impl Priority {
    /// The default: said by leaving the field out, so that a submission or
    /// packet without it keeps the form (and fingerprint) it had before priorities.
    pub fn is_normal(&self) -> bool {
        *self == Self::Normal
    }
}

impl Default for Priority {
    /// A submission that names none.
    fn default() -> Self {
        Self::Normal
    }
}

vocabulary! {
    /// Which deadline a referral missed.
    DeadlineKind, "deadline" {
        Delivery => "delivery",
        Acknowledgement => "acknowledgement",
        FirstStatus => "first_status",
    }
}

/// The three deadlines of one priority, from acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub delivery: Duration,
    pub acknowledgement: Duration,
    pub first_status: Duration,
}

/// Why a set of deadlines cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeadlinesInvalid {
    #[error("every deadline must be positive")]
    NotPositive,
    /// A referral cannot be acknowledged before it is delivered, nor answered before it is acknowledged.
    #[error("the deadlines must come in order: delivery, then acknowledgement, then first status")]
    OutOfOrder,
}

impl Deadlines {
    pub fn new(delivery: Duration, acknowledgement: Duration, first_status: Duration) -> Result<Self, DeadlinesInvalid> {
        if [delivery, acknowledgement, first_status].iter().any(|d| *d <= Duration::zero()) {
            return Err(DeadlinesInvalid::NotPositive);
        }
        if delivery > acknowledgement || acknowledgement > first_status {
            return Err(DeadlinesInvalid::OutOfOrder);
        }
        Ok(Self { delivery, acknowledgement, first_status })
    }

    pub const fn of(self, kind: DeadlineKind) -> Duration {
        match kind {
            DeadlineKind::Delivery => self.delivery,
            DeadlineKind::Acknowledgement => self.acknowledgement,
            DeadlineKind::FirstStatus => self.first_status,
        }
    }
}

/// The deadlines of each priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinesByPriority {
    pub emergency: Deadlines,
    pub urgent: Deadlines,
    pub normal: Deadlines,
}

impl Default for DeadlinesByPriority {
    /// The form's response times as the first-status deadlines (24 hours,
    /// 72 hours, two weeks); delivery and acknowledgement well inside them.
    fn default() -> Self {
        let hours = Duration::hours;
        Self {
            emergency: Deadlines { delivery: hours(1), acknowledgement: hours(4), first_status: hours(24) },
            urgent: Deadlines { delivery: hours(4), acknowledgement: hours(24), first_status: hours(72) },
            normal: Deadlines { delivery: hours(24), acknowledgement: hours(72), first_status: Duration::days(14) },
        }
    }
}

impl DeadlinesByPriority {
    pub const fn of(&self, priority: Priority) -> Deadlines {
        match priority {
            Priority::Emergency => self.emergency,
            Priority::Urgent => self.urgent,
            Priority::Normal => self.normal,
        }
    }
}

impl DeadlinesByPriority {
    /// When the deadline `kind` of a referral of `priority` accepted at `from` falls.
    pub fn due(&self, priority: Priority, from: DateTime<Utc>, kind: DeadlineKind) -> DateTime<Utc> {
        from.checked_add_signed(self.of(priority).of(kind)).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The deadline a referral sent from here awaits now, from its status:
/// delivery while queued, the recipient's acknowledgement once delivered
/// (`forwarded` says it took the case), its first answer once forwarded.
/// Awaiting the approval of an emergency override counts against the
/// delivery deadline: the clock runs from acceptance, whoever holds it up.
/// Any report of the recipient answers (`in_progress` and later imply an
/// acceptance); denied, refused, expired, withdrawn or erased referrals
/// await nothing. The deadlines come in order, so the one awaited is the
/// only one that can be missed: the earlier ones were met, if late.
pub const fn awaited_by_sender(status: ReferralStatus) -> Option<DeadlineKind> {
    match status {
        ReferralStatus::Queued | ReferralStatus::AwaitingOverride => Some(DeadlineKind::Delivery),
        ReferralStatus::Delivered => Some(DeadlineKind::Acknowledgement),
        ReferralStatus::Forwarded => Some(DeadlineKind::FirstStatus),
        ReferralStatus::Denied
        | ReferralStatus::Expired
        | ReferralStatus::Refused
        | ReferralStatus::Accepted
        | ReferralStatus::Declined
        | ReferralStatus::InProgress
        | ReferralStatus::Arrived
        | ReferralStatus::ServicesDelivered
        | ReferralStatus::Closed
        | ReferralStatus::Handover
        | ReferralStatus::Withdrawn
        | ReferralStatus::ErasedAtGateway
        | ReferralStatus::ErasureConfirmed
        | ReferralStatus::RetentionExpired => None,
    }
}

/// A deadline missed: which, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdue {
    pub deadline: DeadlineKind,
    pub since: DateTime<Utc>,
}

/// Whether a referral of `priority`, accepted at `accepted_at` and
/// awaiting `awaited`, is overdue at `now`: the deadline it awaits has passed.
pub fn overdue(priority: Priority, accepted_at: DateTime<Utc>, awaited: Option<DeadlineKind>, deadlines: &DeadlinesByPriority, now: DateTime<Utc>) -> Option<Overdue> {
    let kind = awaited?;
    let due = deadlines.due(priority, accepted_at, kind);
    (now >= due).then_some(Overdue { deadline: kind, since: due })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn accepted() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn hours(h: i64) -> DateTime<Utc> {
        accepted() + Duration::hours(h)
    }

    #[test]
    fn the_forms_priorities_and_their_default_deadlines() {
        assert_eq!(Priority::default(), Priority::Normal);
        assert_eq!("emergency".parse::<Priority>().unwrap(), Priority::Emergency);
        assert!("critical".parse::<Priority>().is_err());
        let defaults = DeadlinesByPriority::default();
        assert_eq!(defaults.of(Priority::Emergency).first_status, Duration::hours(24));
        assert_eq!(defaults.of(Priority::Urgent).first_status, Duration::hours(72));
        assert_eq!(defaults.of(Priority::Normal).first_status, Duration::days(14));
        for priority in Priority::ALL {
            let d = defaults.of(*priority);
            assert_eq!(Deadlines::new(d.delivery, d.acknowledgement, d.first_status), Ok(d), "{priority}: in order");
        }
    }

    #[test]
    fn deadlines_must_be_positive_and_in_order() {
        let h = Duration::hours;
        assert_eq!(Deadlines::new(h(0), h(1), h(2)), Err(DeadlinesInvalid::NotPositive));
        assert_eq!(Deadlines::new(h(2), h(1), h(3)), Err(DeadlinesInvalid::OutOfOrder));
        assert_eq!(Deadlines::new(h(1), h(3), h(2)), Err(DeadlinesInvalid::OutOfOrder));
        assert!(Deadlines::new(h(1), h(1), h(1)).is_ok());
    }

    #[test]
    fn an_emergency_names_the_deadline_it_awaits() {
        let defaults = DeadlinesByPriority::default();
        let check = |status: ReferralStatus, at| overdue(Priority::Emergency, accepted(), awaited_by_sender(status), &defaults, at);
        assert_eq!(check(ReferralStatus::Queued, hours(0) + Duration::minutes(59)), None);
        assert_eq!(check(ReferralStatus::Queued, hours(1)), Some(Overdue { deadline: DeadlineKind::Delivery, since: hours(1) }));
        assert_eq!(check(ReferralStatus::Queued, hours(30)), Some(Overdue { deadline: DeadlineKind::Delivery, since: hours(1) }), "still");
        assert_eq!(check(ReferralStatus::Delivered, hours(3)), None, "delivered late, but delivered");
        assert_eq!(check(ReferralStatus::Delivered, hours(4)), Some(Overdue { deadline: DeadlineKind::Acknowledgement, since: hours(4) }));
        assert_eq!(check(ReferralStatus::Forwarded, hours(24)), Some(Overdue { deadline: DeadlineKind::FirstStatus, since: hours(24) }));
        for answered in [ReferralStatus::Accepted, ReferralStatus::Declined, ReferralStatus::InProgress, ReferralStatus::Closed] {
            assert_eq!(check(answered, hours(1000)), None, "{answered}");
        }
        for ended in [ReferralStatus::Denied, ReferralStatus::Expired, ReferralStatus::Refused, ReferralStatus::Withdrawn, ReferralStatus::RetentionExpired] {
            assert_eq!(check(ended, hours(1000)), None, "{ended} awaits nothing");
        }
        // The same referral, normal: nothing is due for a day.
        assert_eq!(overdue(Priority::Normal, accepted(), Some(DeadlineKind::Delivery), &defaults, hours(23)), None);
    }

    proptest! {
        /// Never overdue before the deadline it names; once overdue, still
        /// overdue later, on the same deadline, while the status stands.
        #[test]
        fn overdue_starts_at_its_deadline_and_lasts(
            priority in prop::sample::select(Priority::ALL),
            status in prop::sample::select(ReferralStatus::ALL),
            at in 0i64..500,
            later in 0i64..500,
        ) {
            let defaults = DeadlinesByPriority::default();
            let awaited = awaited_by_sender(status);
            if let Some(found) = overdue(priority, accepted(), awaited, &defaults, hours(at)) {
                prop_assert!(found.since <= hours(at));
                prop_assert_eq!(found.since, accepted() + defaults.of(priority).of(found.deadline));
                prop_assert_eq!(overdue(priority, accepted(), awaited, &defaults, hours(at + later)), Some(found));
            } else if let Some(kind) = awaited {
                prop_assert!(hours(at) < defaults.due(priority, accepted(), kind));
            }
        }

        /// Whatever happens to a referral, it never goes back to awaiting a
        /// deadline it had met: what a later status awaits comes no earlier.
        #[test]
        fn a_referral_never_awaits_a_deadline_it_met(events in prop::collection::vec(prop::sample::select(crate::domain::lifecycle::ReferralEvent::ALL), 0..12)) {
            let mut status = ReferralStatus::Queued;
            let mut met: Option<DeadlineKind> = None;
            for event in events {
                if let Some(next) = status.after(event) {
                    if let (Some(before), Some(now)) = (awaited_by_sender(status), awaited_by_sender(next)) {
                        prop_assert!(now >= before, "{} -> {}", status, next);
                    }
                    if let (Some(earlier), Some(now)) = (met, awaited_by_sender(next)) {
                        prop_assert!(now > earlier, "{} awaits {} again", next, now);
                    }
                    if awaited_by_sender(next) != awaited_by_sender(status) {
                        met = awaited_by_sender(status).max(met);
                    }
                    status = next;
                }
            }
        }

        /// A more pressing priority is overdue no later than a less pressing one.
        #[test]
        fn an_emergency_is_never_overdue_after_a_normal_referral(at in 0i64..800, status in prop::sample::select(ReferralStatus::ALL)) {
            let defaults = DeadlinesByPriority::default();
            let normal = overdue(Priority::Normal, accepted(), awaited_by_sender(status), &defaults, hours(at));
            let emergency = overdue(Priority::Emergency, accepted(), awaited_by_sender(status), &defaults, hours(at));
            prop_assert!(normal.is_none() || emergency.is_some());
        }
    }
}
