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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
