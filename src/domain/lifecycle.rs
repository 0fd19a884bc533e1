//! The lifecycles of what the gateway stores, as closed types with their
//! rules: a referral's status and timeline (the sending gateway's), an
//! outbox entry's state (every packet a gateway sends), a received packet's
//! state (the receiving gateway's). Pure: the store writes what these
//! functions decide, and the database's `CHECK` constraints are made from
//! the same lists (a test compares them).
//!
//! Each transition function answers the next state for a state and an
//! event, or `None`: the event does not move that state (it came too late,
//! out of order, or cannot apply). A move is always to another state, or
//! (for the inbox) the same state with something recorded beside it.

use crate::domain::status::ReferralProgress;

vocabulary! {
    /// Where a referral sent from here stands, as its sender sees it.
    ReferralStatus, "referral status" {
        Queued => "queued",
        Denied => "denied",
        AwaitingOverride => "awaiting_override",
        Delivered => "delivered",
        Expired => "expired",
        Forwarded => "forwarded",
        Refused => "refused",
        Accepted => "accepted",
        Declined => "declined",
        InProgress => "in_progress",
        Arrived => "arrived",
        ServicesDelivered => "services_delivered",
        Closed => "closed",
        Handover => "handover",
        Withdrawn => "withdrawn",
        ErasedAtGateway => "erased_at_gateway",
        ErasureConfirmed => "erasure_confirmed",
        RetentionExpired => "retention_expired",
    }
}

vocabulary! {
    /// An entry of a referral's timeline: every status it took, and the steps
    /// that never become its status (a partial withdrawal and its erasure,
    /// the delivery of a withdrawal packet, an onward movement of the case, a
    /// reply case received in answer to it, a search found to meet another).
    ReferralEvent, "referral timeline entry" {
        Queued => "queued",
        Denied => "denied",
        AwaitingOverride => "awaiting_override",
        OverrideApproved => "override_approved",
        OverrideRejected => "override_rejected",
        OverrideExpired => "override_expired",
        Delivered => "delivered",
        Expired => "expired",
        Forwarded => "forwarded",
        Refused => "refused",
        Accepted => "accepted",
        Declined => "declined",
        InProgress => "in_progress",
        Arrived => "arrived",
        ServicesDelivered => "services_delivered",
        Closed => "closed",
        Handover => "handover",
        Withdrawn => "withdrawn",
        ErasedAtGateway => "erased_at_gateway",
        ErasureConfirmed => "erasure_confirmed",
        RetentionExpired => "retention_expired",
        ConsentNarrowed => "consent_narrowed",
        ConsentNarrowedBeforeSending => "consent_narrowed_before_sending",
        NarrowedAtGateway => "narrowed_at_gateway",
        NarrowingConfirmed => "narrowing_confirmed",
        WithdrawalDelivered => "withdrawal_delivered",
        WithdrawalExpired => "withdrawal_expired",
        Onward => "onward",
        ReplyReceived => "reply_received",
        MatchFound => "match_found",
    }
}

/// The stages a referral passes through, in order: a status never goes back
/// to an earlier stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReferralStage {
    /// Decided, waiting for delivery (or denied: nothing will happen).
    Decided,
    /// Delivered to the peer gateway, or given up on.
    Sent,
    /// What the receiving side reported.
    AtPeer,
    /// Consent withdrawn whole: only the erasure's steps follow.
    Withdrawn,
    /// Erased here at the end of its retention.
    Erased,
}

impl ReferralStatus {
    pub const fn stage(self) -> ReferralStage {
        match self {
            Self::Queued | Self::Denied | Self::AwaitingOverride => ReferralStage::Decided,
            Self::Delivered | Self::Expired => ReferralStage::Sent,
            Self::Forwarded
            | Self::Refused
            | Self::Accepted
            | Self::Declined
            | Self::InProgress
            | Self::Arrived
            | Self::ServicesDelivered
            | Self::Closed
            | Self::Handover => ReferralStage::AtPeer,
            Self::Withdrawn | Self::ErasedAtGateway | Self::ErasureConfirmed => ReferralStage::Withdrawn,
            Self::RetentionExpired => ReferralStage::Erased,
        }
    }

    /// Consent was withdrawn whole: the payload is gone, only the erasure's
    /// confirmations are still awaited.
    pub const fn is_withdrawn_whole(self) -> bool {
        matches!(self.stage(), ReferralStage::Withdrawn)
    }

    /// Consent still stands for it: neither withdrawn whole nor erased. (A
    /// denied referral shared nothing, but a withdrawal still records the
    /// consent's end in its timeline.)
    pub const fn still_shared(self) -> bool {
        !matches!(self.stage(), ReferralStage::Withdrawn | ReferralStage::Erased)
    }

    /// A status the recipient organisation reports itself.
    const fn reported_by_recipient(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::Declined | Self::InProgress | Self::Arrived | Self::ServicesDelivered | Self::Closed | Self::Handover
        )
    }

    /// The status after `event`, or `None` when the event leaves it as it is
    /// (it is then only recorded in the timeline):
    /// - only a withdrawal moves a denied referral (it records the consent's
    ///   end; nothing was sent to erase); nothing moves one erased at the end
    ///   of its retention or whose erasure its recipient confirmed;
    /// - delivery settles only a queued referral (a status from the peer may
    ///   have come first);
    /// - once consent is withdrawn whole, only the erasure's confirmations
    ///   move it, forward (the gateway's and the organisation's may come in
    ///   either order);
    /// - the receiving side's reports: the receiving gateway's `forwarded`
    ///   or `refused` only over `queued`, `delivered` or `expired`; the
    ///   recipient's own reports, the latest wins (a handover follows its
    ///   acceptance), never after a refusal;
    /// - the steps of a partial withdrawal never become the status: it stays
    ///   with the part still shared;
    /// - a referral awaiting the approval of an emergency override is queued
    ///   when a DPO approves it, denied when one rejects it or the window
    ///   passes; only a withdrawal or its retention's end moves it otherwise.
    pub fn after(self, event: ReferralEvent) -> Option<ReferralStatus> {
        use ReferralEvent as E;
        use ReferralStatus as S;
        let next = match (self, event) {
            (S::Denied, E::Withdrawn) => Some(S::Withdrawn),
            (S::Denied | S::RetentionExpired | S::ErasureConfirmed, _) => None,
            (S::Withdrawn, E::ErasedAtGateway) => Some(S::ErasedAtGateway),
            (S::Withdrawn | S::ErasedAtGateway, E::ErasureConfirmed) => Some(S::ErasureConfirmed),
            (S::Withdrawn | S::ErasedAtGateway, _) => None,
            // Still shared from here on.
            (_, E::Withdrawn) => Some(S::Withdrawn),
            (_, E::RetentionExpired) => Some(S::RetentionExpired),
            (S::AwaitingOverride, event) => event.settles_override(),
            (S::Queued, E::Delivered) => Some(S::Delivered),
            (S::Queued, E::Expired) => Some(S::Expired),
            (S::Queued | S::Delivered | S::Expired, E::Forwarded) => Some(S::Forwarded),
            (S::Queued | S::Delivered | S::Expired, E::Refused) => Some(S::Refused),
            (S::Accepted, E::Handover) => Some(S::Handover),
            (from, report) => match report.status() {
                Some(to) if to.reported_by_recipient() && to != S::Handover && from != S::Refused => Some(to),
                _ => None,
            },
        };
        next.filter(|to| *to != self)
    }
}

impl ReferralStatus {
    /// The statuses of a family-tracing request still searching: allowed
    /// and not given up, refused, closed, withdrawn or erased. Only these
    /// are matched against another gateway's searches.
    pub const SEARCHING: [ReferralStatus; 6] = [Self::Queued, Self::Delivered, Self::Forwarded, Self::Accepted, Self::InProgress, Self::Handover];
}

impl ReferralEvent {
    /// The status this entry names, if it is one.
    pub fn status(self) -> Option<ReferralStatus> {
        ReferralStatus::ALL.iter().copied().find(|status| status.as_str() == self.as_str())
    }

    /// The status an entry that settles an emergency override moves a
    /// referral awaiting it to: queued once approved, denied once rejected
    /// or lapsed.
    pub const fn settles_override(self) -> Option<ReferralStatus> {
        match self {
            Self::OverrideApproved => Some(ReferralStatus::Queued),
            Self::OverrideRejected | Self::OverrideExpired => Some(ReferralStatus::Denied),
            _ => None,
        }
    }

    /// An entry recording a partial withdrawal: told to the peer, or made
    /// before any packet was (nothing to erase elsewhere).
    pub const fn records_narrowing(self) -> bool {
        matches!(self, Self::ConsentNarrowed | Self::ConsentNarrowedBeforeSending)
    }

    /// The entry the settling of a packet about a referral makes: its own
    /// packet's `delivered` or `expired`, a withdrawal's `withdrawal_delivered`
    /// or `withdrawal_expired`.
    pub const fn settled(referral_packet: bool, delivered: bool) -> Self {
        match (referral_packet, delivered) {
            (true, true) => Self::Delivered,
            (true, false) => Self::Expired,
            (false, true) => Self::WithdrawalDelivered,
            (false, false) => Self::WithdrawalExpired,
        }
    }
}

impl From<ReferralStatus> for ReferralEvent {
    fn from(status: ReferralStatus) -> Self {
        Self::ALL.iter().copied().find(|event| event.as_str() == status.as_str()).unwrap_or(Self::Queued)
    }
}

impl From<ReferralProgress> for ReferralEvent {
    fn from(progress: ReferralProgress) -> Self {
        match progress {
            ReferralProgress::Accepted => Self::Accepted,
            ReferralProgress::Declined => Self::Declined,
            ReferralProgress::InProgress => Self::InProgress,
            ReferralProgress::Arrived => Self::Arrived,
            ReferralProgress::ServicesDelivered => Self::ServicesDelivered,
            ReferralProgress::Closed => Self::Closed,
            ReferralProgress::Refused => Self::Refused,
            ReferralProgress::Forwarded => Self::Forwarded,
            ReferralProgress::Onward => Self::Onward,
        }
    }
}

vocabulary! {
    /// Where a packet this gateway sends stands.
    OutboxState, "outbox state" {
        Pending => "pending",
        Delivered => "delivered",
        Expired => "expired",
        Withdrawn => "withdrawn",
        Erased => "erased",
    }
}

/// What ends an outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxEvent {
    /// The peer gave its signed receipt.
    Delivered,
    /// Its deadline passed first.
    Expired,
    /// Consent for its referral was withdrawn.
    Withdrawn,
    /// Its referral's retention ended.
    Erased,
}

impl OutboxEvent {
    pub const ALL: [OutboxEvent; 4] = [Self::Delivered, Self::Expired, Self::Withdrawn, Self::Erased];
}

impl OutboxState {
    /// Only a pending entry moves, once: whatever ends it first wins.
    pub const fn after(self, event: OutboxEvent) -> Option<OutboxState> {
        match (self, event) {
            (Self::Pending, OutboxEvent::Delivered) => Some(Self::Delivered),
            (Self::Pending, OutboxEvent::Expired) => Some(Self::Expired),
            (Self::Pending, OutboxEvent::Withdrawn) => Some(Self::Withdrawn),
            (Self::Pending, OutboxEvent::Erased) => Some(Self::Erased),
            _ => None,
        }
    }

    /// A receipt that arrives for an entry stopped while its delivery was
    /// under way is still kept, as proof of what reached the peer; the
    /// entry stays stopped.
    pub const fn keeps_late_receipt(self) -> bool {
        matches!(self, Self::Withdrawn | Self::Erased)
    }
}

vocabulary! {
    /// What became of a packet received from a peer gateway.
    InboxState, "inbox state" {
        Received => "received",
        Refused => "refused",
        Available => "available",
        Pushing => "pushing",
        Acknowledged => "acknowledged",
        Undeliverable => "undeliverable",
        Applied => "applied",
        Erased => "erased",
        ErasurePushing => "erasure_pushing",
        ErasureConfirmed => "erasure_confirmed",
        NarrowingPushing => "narrowing_pushing",
    }
}

vocabulary! {
    /// Where a status callback event stands (the sending gateway's): waiting
    /// for the organisation's 2xx (and retried with backoff), or given up at
    /// its deadline. A delivered event is not kept.
    CallbackState, "callback state" {
        Pending => "pending",
        Failed => "failed",
    }
}

/// What moves a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxEvent {
    /// Screening (or reading it) refused it.
    Refused,
    /// Screening passed a referral: listed to its recipient, or pushed to
    /// its webhook.
    Forwarded { pushed: bool },
    /// A status, withdrawal or erasure confirmation was applied.
    Applied,
    /// Its recipient took the case: it acknowledged it, or the push was answered.
    Acknowledged,
    /// The push never succeeded before the packet expired (or nothing is left to push).
    PushGivenUp,
    /// The recipient takes its cases by pulling now.
    RecipientNowPulls,
    /// A notice of an erasure or of a cut reached the webhook, or was given up on.
    NoticeSettled,
    /// A cut made while the case was being pushed is to be pushed as a notice.
    NarrowingDue,
    /// The organisation says it erased its copy of an erased case.
    ErasureConfirmed,
    /// The organisation says it erased the categories withdrawn from a case it still holds.
    NarrowingConfirmed,
    /// Its sender withdrew it whole: erased, whatever its state (but not twice).
    /// A case already pushed to a webhook (`pushed`) is pushed a notice first.
    WithdrawnWhole { pushed: bool },
    /// Its retention ended: a live case is erased, as a withdrawal erases.
    RetentionPassed { pushed: bool },
    /// Its sender withdrew some categories: a live case is cut down; one
    /// already pushed to a webhook (`pushed`) is pushed a notice.
    Narrowed { pushed: bool },
}

impl InboxEvent {
    /// Every event, each flag both ways.
    pub const ALL: [InboxEvent; 17] = [
        Self::Refused,
        Self::Forwarded { pushed: false },
        Self::Forwarded { pushed: true },
        Self::Applied,
        Self::Acknowledged,
        Self::PushGivenUp,
        Self::RecipientNowPulls,
        Self::NoticeSettled,
        Self::NarrowingDue,
        Self::ErasureConfirmed,
        Self::NarrowingConfirmed,
        Self::WithdrawnWhole { pushed: false },
        Self::WithdrawnWhole { pushed: true },
        Self::RetentionPassed { pushed: false },
        Self::RetentionPassed { pushed: true },
        Self::Narrowed { pushed: false },
        Self::Narrowed { pushed: true },
    ];
}

impl InboxState {
    /// States in which its recipient holds the case and may read it.
    pub const LIVE: [InboxState; 4] = [Self::Available, Self::Acknowledged, Self::Pushing, Self::NarrowingPushing];
    /// States of a case erased at this gateway.
    pub const ERASED: [InboxState; 3] = [Self::Erased, Self::ErasurePushing, Self::ErasureConfirmed];
    /// States in which a case is listed to a recipient that pulls: also once
    /// erased, so that it learns it must erase its own copy.
    pub const LISTED: [InboxState; 4] = [Self::Available, Self::Acknowledged, Self::NarrowingPushing, Self::Erased];
    /// States in which something is to be pushed to the recipient's webhook.
    pub const PUSHING: [InboxState; 3] = [Self::Pushing, Self::ErasurePushing, Self::NarrowingPushing];

    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    pub fn is_erased(self) -> bool {
        Self::ERASED.contains(&self)
    }

    /// A case's state as its recipient sees it: a notice being pushed about
    /// it changes nothing for them.
    pub const fn shown(self) -> InboxState {
        match self {
            Self::NarrowingPushing => Self::Acknowledged,
            other => other,
        }
    }

    /// The state after `event`, or `None` when the event does not apply to
    /// this state (another worker moved the packet first, say).
    pub fn after(self, event: InboxEvent) -> Option<InboxState> {
        use InboxEvent as E;
        use InboxState as S;
        match (self, event) {
            (S::Received, E::Refused) => Some(S::Refused),
            (S::Received, E::Forwarded { pushed: false }) => Some(S::Available),
            (S::Received, E::Forwarded { pushed: true }) => Some(S::Pushing),
            (S::Received, E::Applied) => Some(S::Applied),
            (S::Available | S::Pushing, E::Acknowledged) => Some(S::Acknowledged),
            (S::Pushing, E::PushGivenUp) => Some(S::Undeliverable),
            (S::Pushing, E::RecipientNowPulls) => Some(S::Available),
            (S::ErasurePushing, E::NoticeSettled) => Some(S::Erased),
            (S::NarrowingPushing, E::NoticeSettled) => Some(S::Acknowledged),
            (S::Acknowledged, E::NarrowingDue) => Some(S::NarrowingPushing),
            (S::Erased | S::ErasurePushing, E::ErasureConfirmed) => Some(S::ErasureConfirmed),
            (from, E::NarrowingConfirmed) if from.is_live() => Some(from),
            (from, E::WithdrawnWhole { pushed }) if !from.is_erased() => Some(Self::erased_from(from, pushed)),
            (from, E::RetentionPassed { pushed }) if from.is_live() => Some(Self::erased_from(from, pushed)),
            (S::Acknowledged, E::Narrowed { pushed: true }) => Some(S::NarrowingPushing),
            (from, E::Narrowed { .. }) if from.is_live() => Some(from),
            _ => None,
        }
    }

    /// Erased: a case its webhook recipient was pushed is pushed a notice
    /// of it first. (Both states it is pushed from always have a place in
    /// the recipients' order, `visible_seq`: a case gets one when it becomes
    /// `available` or `pushing`, before it can be `acknowledged`.)
    fn erased_from(from: InboxState, pushed: bool) -> InboxState {
        match from {
            Self::Acknowledged | Self::NarrowingPushing if pushed => Self::ErasurePushing,
            _ => Self::Erased,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent model of the order of a referral's statuses.
    fn rank(status: ReferralStatus) -> u8 {
        use ReferralStatus as S;
        match status {
            S::AwaitingOverride | S::Queued | S::Denied => 0,
            S::Delivered | S::Expired => 1,
            S::Forwarded | S::Refused => 2,
            S::Accepted | S::Declined | S::InProgress | S::Arrived | S::ServicesDelivered | S::Closed | S::Handover => 3,
            S::Withdrawn => 4,
            S::ErasedAtGateway => 5,
            S::ErasureConfirmed => 6,
            S::RetentionExpired => 7,
        }
    }

    fn any_status() -> impl Strategy<Value = ReferralStatus> {
        prop::sample::select(ReferralStatus::ALL)
    }

    fn any_event() -> impl Strategy<Value = ReferralEvent> {
        prop::sample::select(ReferralEvent::ALL)
    }

    #[test]
    fn names_are_the_wire_and_column_values() {
        for status in ReferralStatus::ALL {
            assert_eq!(status.as_str().parse::<ReferralStatus>(), Ok(*status));
            assert_eq!(ReferralEvent::from(*status).status(), Some(*status), "{status}");
        }
        let steps: Vec<&str> = ReferralEvent::ALL.iter().filter(|e| e.status().is_none()).map(|e| e.as_str()).collect();
        assert_eq!(
            steps,
            [
                "override_approved",
                "override_rejected",
                "override_expired",
                "consent_narrowed",
                "consent_narrowed_before_sending",
                "narrowed_at_gateway",
                "narrowing_confirmed",
                "withdrawal_delivered",
                "withdrawal_expired",
                "onward",
                "reply_received",
                "match_found"
            ]
        );
        for progress in ReferralProgress::REPORTED_BY_RECIPIENTS.into_iter().chain([ReferralProgress::Refused, ReferralProgress::Forwarded]) {
            assert_eq!(ReferralEvent::from(progress).as_str(), progress.as_str());
        }
        for state in InboxState::ALL {
            assert_eq!(state.as_str().parse::<InboxState>(), Ok(*state));
        }
        assert!("sent".parse::<OutboxState>().is_err());
    }

    #[test]
    fn a_referral_goes_the_usual_way() {
        use ReferralEvent as E;
        let path = [E::Delivered, E::Forwarded, E::Accepted, E::Handover, E::InProgress, E::Arrived, E::ServicesDelivered, E::Closed];
        let mut status = ReferralStatus::Queued;
        for event in path {
            status = status.after(event).unwrap_or_else(|| panic!("{status} does not move on {event}"));
            assert_eq!(status.as_str(), event.as_str());
        }
        let withdrawn = status.after(E::Withdrawn).unwrap();
        let erased = withdrawn.after(E::ErasedAtGateway).unwrap();
        assert_eq!(erased.after(E::ErasureConfirmed), Some(ReferralStatus::ErasureConfirmed));
        // The two confirmations may come in either order.
        assert_eq!(withdrawn.after(E::ErasureConfirmed).and_then(|s| s.after(E::ErasedAtGateway)), None);
    }

    #[test]
    fn an_emergency_override_is_approved_rejected_or_lapses() {
        use ReferralEvent as E;
        use ReferralStatus as S;
        assert_eq!(S::AwaitingOverride.after(E::OverrideApproved), Some(S::Queued));
        assert_eq!(S::AwaitingOverride.after(E::OverrideRejected), Some(S::Denied));
        assert_eq!(S::AwaitingOverride.after(E::OverrideExpired), Some(S::Denied));
        assert_eq!(S::AwaitingOverride.after(E::Withdrawn), Some(S::Withdrawn));
        // Nothing was sent: nothing from the other side can move it.
        for event in [E::Delivered, E::Forwarded, E::Refused, E::Accepted, E::Closed, E::ErasedAtGateway] {
            assert_eq!(S::AwaitingOverride.after(event), None, "{event}");
        }
        // Settled once: a late approval moves nothing.
        for settled in [S::Queued, S::Denied, S::Withdrawn] {
            assert_eq!(settled.after(E::OverrideApproved), None, "{settled}");
            assert_eq!(settled.after(E::OverrideExpired), None, "{settled}");
        }
    }

    #[test]
    fn what_came_first_stays() {
        use ReferralEvent as E;
        use ReferralStatus as S;
        // The peer's refusal applied before the delivery was settled.
        assert_eq!(S::Refused.after(E::Delivered), None);
        // The gateway's `forwarded` delivered after the recipient's own report.
        assert_eq!(S::Accepted.after(E::Forwarded), None);
        assert_eq!(S::Closed.after(E::Refused), None);
        assert_eq!(S::Refused.after(E::Accepted), None);
        // The recipient's latest report wins.
        assert_eq!(S::Closed.after(E::InProgress), Some(S::InProgress));
        assert_eq!(S::Declined.after(E::Handover), None, "a handover follows an acceptance");
    }

    proptest! {
        #[test]
        fn statuses_only_move_forward(from in any_status(), event in any_event()) {
            if let Some(to) = from.after(event) {
                prop_assert!(to != from);
                prop_assert!(rank(to) >= rank(from), "{from} -> {to} on {event}");
                prop_assert!(to.stage() >= from.stage());
                // A move is always to the status the event names, or the
                // one an override's approval, rejection or lapse settles on.
                prop_assert_eq!(Some(to), event.status().or(event.settles_override()));
            }
        }

        #[test]
        fn nothing_leaves_an_end(event in any_event()) {
            for end in [ReferralStatus::ErasureConfirmed, ReferralStatus::RetentionExpired] {
                prop_assert_eq!(end.after(event), None);
            }
            // A denied referral sent nothing: only its consent's end is recorded.
            let withdrawn = (event == ReferralEvent::Withdrawn).then_some(ReferralStatus::Withdrawn);
            prop_assert_eq!(ReferralStatus::Denied.after(event), withdrawn);
        }

        #[test]
        fn a_withdrawal_wins_over_later_statuses(from in any_status(), events in prop::collection::vec(any_event(), 0..12)) {
            let Some(withdrawn) = from.after(ReferralEvent::Withdrawn) else {
                // Only what is withdrawn already, or ended, refuses it.
                prop_assert!(!from.still_shared());
                return Ok(());
            };
            let mut status = withdrawn;
            for event in events {
                status = status.after(event).unwrap_or(status);
                prop_assert!(status.is_withdrawn_whole(), "{event} moved a withdrawn referral to {status}");
            }
        }

        #[test]
        fn steps_of_a_partial_withdrawal_never_become_the_status(from in any_status()) {
            for event in ReferralEvent::ALL.iter().filter(|e| e.status().is_none() && e.settles_override().is_none()) {
                prop_assert_eq!(from.after(*event), None);
            }
        }

        #[test]
        fn an_outbox_entry_ends_once(first in prop::sample::select(OutboxEvent::ALL.to_vec()), second in prop::sample::select(OutboxEvent::ALL.to_vec())) {
            let ended = OutboxState::Pending.after(first).expect("a pending entry ends");
            prop_assert_ne!(ended, OutboxState::Pending);
            prop_assert_eq!(ended.after(second), None);
        }

        #[test]
        fn an_erased_case_is_never_readable_again(from in prop::sample::select(InboxState::ALL), events in prop::collection::vec(prop::sample::select(InboxEvent::ALL.to_vec()), 0..12)) {
            let mut state = from;
            let mut erased = state.is_erased();
            for event in events {
                state = state.after(event).unwrap_or(state);
                if erased {
                    prop_assert!(state.is_erased(), "{event:?} brought an erased case back as {state}");
                }
                erased |= state.is_erased();
            }
        }

        #[test]
        fn inbox_moves_leave_received_for_good(from in prop::sample::select(InboxState::ALL), event in prop::sample::select(InboxEvent::ALL.to_vec())) {
            if let Some(to) = from.after(event) {
                prop_assert_ne!(to, InboxState::Received);
                // Ended packets do not move, except to be erased.
                if matches!(from, InboxState::Refused | InboxState::Applied | InboxState::Undeliverable) {
                    prop_assert!(to.is_erased());
                }
                prop_assert_ne!(from, InboxState::ErasureConfirmed);
            }
        }
    }

    #[test]
    fn a_pushed_case_is_told_of_its_erasure() {
        use InboxEvent as E;
        use InboxState as S;
        assert_eq!(S::Acknowledged.after(E::WithdrawnWhole { pushed: true }), Some(S::ErasurePushing));
        assert_eq!(S::Acknowledged.after(E::WithdrawnWhole { pushed: false }), Some(S::Erased));
        // Not acknowledged yet: the push of the case itself stops; nothing to tell.
        assert_eq!(S::Pushing.after(E::RetentionPassed { pushed: true }), Some(S::Erased));
        assert_eq!(S::Refused.after(E::RetentionPassed { pushed: false }), None, "only a live case ends its retention here");
        assert_eq!(S::ErasurePushing.after(E::WithdrawnWhole { pushed: true }), None, "erased once");
        assert_eq!(S::NarrowingPushing.after(E::NoticeSettled), Some(S::Acknowledged));
        assert_eq!(S::Available.after(E::Narrowed { pushed: true }), Some(S::Available));
    }
}
