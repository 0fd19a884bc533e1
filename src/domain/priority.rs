//! How soon a referral needs an answer, and when it is overdue (issue 21 §1).
//!
//! The inter-agency referral form marks a referral `emergency` (a response
//! within 24 hours), `urgent` (72 hours) or `normal` (two weeks). Each
//! priority has three deadlines, counted from acceptance:
//! - delivery to the recipient's gateway;
//! - acknowledgement by the recipient;
//! - the recipient's first status, `accepted` or `declined`.
//!
//! A referral past a deadline it has not met is overdue, naming the first
//! deadline missed and since when. Pure: the caller gives the time.
//!
//! Not wired yet: submissions, packets, answers and listings take it next.

use chrono::{DateTime, Duration, Utc};

vocabulary! {
    /// How soon a referral needs an answer, as on the inter-agency referral form.
    Priority, "priority" {
        Emergency => "emergency",
        Urgent => "urgent",
        Normal => "normal",
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

    fn of(self, kind: DeadlineKind) -> Duration {
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
    pub fn of(&self, priority: Priority) -> Deadlines {
        match priority {
            Priority::Emergency => self.emergency,
            Priority::Urgent => self.urgent,
            Priority::Normal => self.normal,
        }
    }
}

/// What has happened to a referral that its deadlines are about, as
/// recorded at the time it is judged (nothing later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub delivered: Option<DateTime<Utc>>,
    pub acknowledged: Option<DateTime<Utc>>,
    /// Its first `accepted` or `declined`.
    pub first_status: Option<DateTime<Utc>>,
    /// Denied, withdrawn, expired, erased or closed: nothing is awaited any more.
    pub ended: bool,
}

impl Progress {
    /// When the step `kind` is about happened, if it did. A later step
    /// implies the earlier: a recipient that answered has received.
    fn met(&self, kind: DeadlineKind) -> bool {
        match kind {
            DeadlineKind::Delivery => self.delivered.is_some() || self.acknowledged.is_some() || self.first_status.is_some(),
            DeadlineKind::Acknowledgement => self.acknowledged.is_some() || self.first_status.is_some(),
            DeadlineKind::FirstStatus => self.first_status.is_some(),
        }
    }
}

/// A deadline missed: which, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdue {
    pub deadline: DeadlineKind,
    pub since: DateTime<Utc>,
}

/// Whether a referral accepted at `accepted_at` is overdue at `now`: the
/// first of its deadlines, in order, that has passed unmet.
pub fn overdue(priority: Priority, accepted_at: DateTime<Utc>, progress: &Progress, deadlines: &DeadlinesByPriority, now: DateTime<Utc>) -> Option<Overdue> {
    if progress.ended {
        return None;
    }
    let deadlines = deadlines.of(priority);
    DeadlineKind::ALL.iter().find_map(|kind| {
        let due = accepted_at.checked_add_signed(deadlines.of(*kind))?;
        (!progress.met(*kind) && now >= due).then_some(Overdue { deadline: *kind, since: due })
    })
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
    fn an_emergency_names_the_first_deadline_it_missed() {
        let defaults = DeadlinesByPriority::default();
        let check = |progress: &Progress, at| overdue(Priority::Emergency, accepted(), progress, &defaults, at);
        let nothing = Progress::default();
        assert_eq!(check(&nothing, hours(0) + Duration::minutes(59)), None);
        assert_eq!(check(&nothing, hours(1)), Some(Overdue { deadline: DeadlineKind::Delivery, since: hours(1) }));
        assert_eq!(check(&nothing, hours(30)), Some(Overdue { deadline: DeadlineKind::Delivery, since: hours(1) }), "the first missed, still");
        let delivered = Progress { delivered: Some(hours(2)), ..Progress::default() };
        assert_eq!(check(&delivered, hours(3)), None, "delivered late, but delivered");
        assert_eq!(check(&delivered, hours(4)), Some(Overdue { deadline: DeadlineKind::Acknowledgement, since: hours(4) }));
        let acknowledged = Progress { acknowledged: Some(hours(3)), ..delivered };
        assert_eq!(check(&acknowledged, hours(24)), Some(Overdue { deadline: DeadlineKind::FirstStatus, since: hours(24) }));
        let answered = Progress { first_status: Some(hours(23)), ..acknowledged };
        assert_eq!(check(&answered, hours(1000)), None);
        assert_eq!(check(&Progress { ended: true, ..Progress::default() }, hours(1000)), None, "a withdrawn referral awaits nothing");
        // The same referral, normal: nothing is due for a day.
        assert_eq!(overdue(Priority::Normal, accepted(), &nothing, &defaults, hours(23)), None);
    }

    proptest! {
        /// Never overdue before the deadline it names; once overdue, still
        /// overdue later, on the same deadline, until something happens.
        #[test]
        fn overdue_starts_at_its_deadline_and_lasts(
            priority in prop::sample::select(Priority::ALL),
            delivered in prop::option::of(0i64..400),
            acknowledged in prop::option::of(0i64..400),
            answered in prop::option::of(0i64..400),
            at in 0i64..500,
            later in 0i64..500,
        ) {
            let defaults = DeadlinesByPriority::default();
            let progress = Progress { delivered: delivered.map(hours), acknowledged: acknowledged.map(hours), first_status: answered.map(hours), ended: false };
            if let Some(found) = overdue(priority, accepted(), &progress, &defaults, hours(at)) {
                prop_assert!(found.since <= hours(at));
                prop_assert_eq!(found.since, accepted() + defaults.of(priority).of(found.deadline));
                prop_assert_eq!(overdue(priority, accepted(), &progress, &defaults, hours(at + later)), Some(found));
            }
            // A first status answers every deadline.
            let answered_now = Progress { first_status: Some(hours(at)), ..progress };
            prop_assert_eq!(overdue(priority, accepted(), &answered_now, &defaults, hours(at + later)), None);
        }

        /// A more pressing priority is overdue no later than a less pressing one.
        #[test]
        fn an_emergency_is_never_overdue_after_a_normal_referral(at in 0i64..800) {
            let defaults = DeadlinesByPriority::default();
            let nothing = Progress::default();
            let normal = overdue(Priority::Normal, accepted(), &nothing, &defaults, hours(at));
            let emergency = overdue(Priority::Emergency, accepted(), &nothing, &defaults, hours(at));
            prop_assert!(normal.is_none() || emergency.is_some());
        }
    }
}
