//! What crosses a border when a person withdraws consent: the sender's
//! `withdrawal` notice naming the referral packet to erase, and the receiver's
//! `erasure_confirmation`. Packet ids only: nothing personal.

use serde::{Deserialize, Serialize};

/// The body of a `withdrawal` packet: erase all that came in this referral packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalNotice {
    pub in_reply_to: String,
}

/// Who has erased the data of a referral packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasedBy {
    /// The receiving gateway: its case key destroyed, its copy unreadable.
    Gateway,
    /// The recipient organisation, which says it erased what it was given.
    Organisation,
}

impl ErasedBy {
    /// The entry it makes in the sending gateway's timeline.
    pub fn timeline_status(self) -> &'static str {
        match self {
            Self::Gateway => "erased_at_gateway",
            Self::Organisation => "erasure_confirmed",
        }
    }
}

/// The body of an `erasure_confirmation` packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureNotice {
    /// The referral packet whose data was erased.
    pub in_reply_to: String,
    pub erased_by: ErasedBy,
}

/// Where the erasure a withdrawal asked for stands, as the sender sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureState {
    /// No packet had been made: nothing left this gateway, nothing to erase elsewhere.
    NothingSent,
    /// The withdrawal is on its way or awaits the peer's confirmation.
    Requested,
    ErasedAtGateway,
    /// The recipient organisation confirmed it erased its copy too.
    Confirmed,
    /// The receiving gateway has not confirmed its erasure by the deadline.
    Overdue,
}

/// What the sender shows of an erasure: its state and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureProgress {
    pub state: ErasureState,
    pub due_by: Option<chrono::DateTime<chrono::Utc>>,
}

/// The erasure after a withdrawal at `withdrawn_at`: `packet_left` when a
/// packet had been made for the referral (so the peer may hold it), `steps`
/// the referral's timeline statuses. Overdue once `deadline` has passed
/// without the receiving gateway's confirmation; the organisation's comes on
/// top and does not decide it.
pub fn erasure_progress(
    withdrawn_at: chrono::DateTime<chrono::Utc>,
    packet_left: bool,
    steps: &[&str],
    deadline: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> ErasureProgress {
    if !packet_left {
        return ErasureProgress { state: ErasureState::NothingSent, due_by: None };
    }
    let due_by = withdrawn_at.checked_add_signed(deadline).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let state = if steps.contains(&ErasedBy::Organisation.timeline_status()) {
        ErasureState::Confirmed
    } else if steps.contains(&ErasedBy::Gateway.timeline_status()) {
        ErasureState::ErasedAtGateway
    } else if now >= due_by {
        ErasureState::Overdue
    } else {
        ErasureState::Requested
    };
    ErasureProgress { state, due_by: Some(due_by) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn an_erasure_is_overdue_only_past_its_deadline_without_the_gateways_confirmation() {
        let withdrawn = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let deadline = Duration::hours(72);
        let at = |hours| withdrawn + Duration::hours(hours);
        let progress = |left, steps: &[&str], hours| erasure_progress(withdrawn, left, steps, deadline, at(hours)).state;
        assert_eq!(progress(false, &["withdrawn"], 1000), ErasureState::NothingSent);
        assert_eq!(erasure_progress(withdrawn, false, &[], deadline, at(0)).due_by, None);
        assert_eq!(progress(true, &["withdrawn"], 71), ErasureState::Requested);
        assert_eq!(progress(true, &["withdrawn", "withdrawal_delivered"], 72), ErasureState::Overdue);
        assert_eq!(progress(true, &["withdrawn", "erased_at_gateway"], 1000), ErasureState::ErasedAtGateway);
        assert_eq!(progress(true, &["withdrawn", "erasure_confirmed", "erased_at_gateway"], 1000), ErasureState::Confirmed);
        assert_eq!(erasure_progress(withdrawn, true, &[], deadline, at(0)).due_by, Some(at(72)));
    }

    proptest! {
        #[test]
        fn a_confirmed_erasure_is_never_overdue(hours in 0i64..10_000, deadline in 1i64..1_000, organisation in any::<bool>()) {
            let withdrawn = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
            let step = if organisation { "erasure_confirmed" } else { "erased_at_gateway" };
            let progress = erasure_progress(withdrawn, true, &["withdrawn", step], Duration::hours(deadline), withdrawn + Duration::hours(hours));
            prop_assert!(progress.state != ErasureState::Overdue && progress.state != ErasureState::Requested);
        }
    }

    #[test]
    fn notices_have_one_wire_form_and_refuse_anything_more() {
        let notice = WithdrawalNotice { in_reply_to: "p-1".to_owned() };
        assert_eq!(serde_json::to_value(&notice).unwrap(), json!({ "in_reply_to": "p-1" }));
        assert!(serde_json::from_value::<WithdrawalNotice>(json!({ "in_reply_to": "p-1", "name": "Amina" })).is_err());
        let erased = ErasureNotice { in_reply_to: "p-1".to_owned(), erased_by: ErasedBy::Organisation };
        assert_eq!(serde_json::to_value(&erased).unwrap(), json!({ "in_reply_to": "p-1", "erased_by": "organisation" }));
        assert!(serde_json::from_value::<ErasureNotice>(json!({ "in_reply_to": "p-1", "erased_by": "someone" })).is_err());
    }

    #[test]
    fn each_eraser_has_its_own_timeline_entry() {
        assert_eq!(ErasedBy::Gateway.timeline_status(), "erased_at_gateway");
        assert_eq!(ErasedBy::Organisation.timeline_status(), "erasure_confirmed");
    }
}
