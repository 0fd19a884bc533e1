//! What a status packet reports about a referral, back to its sender.

use serde::{Deserialize, Serialize};

/// A referral's progress at the receiving end. The recipient organisation
/// reports the first six; the receiving gateway the last three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralProgress {
    Accepted,
    Declined,
    InProgress,
    Arrived,
    ServicesDelivered,
    Closed,
    /// The receiving gateway's screening refused the packet; the recipient got nothing.
    Refused,
    /// The recipient has taken the case (pull acknowledged, or webhook answered).
    Forwarded,
    /// A movement of the case passed on by its recipient within its
    /// country (issue 21 §3): what, as reason codes (`OnwardMovement`).
    Onward,
}

impl ReferralProgress {
    pub const REPORTED_BY_RECIPIENTS: [ReferralProgress; 6] =
        [Self::Accepted, Self::Declined, Self::InProgress, Self::Arrived, Self::ServicesDelivered, Self::Closed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::InProgress => "in_progress",
            Self::Arrived => "arrived",
            Self::ServicesDelivered => "services_delivered",
            Self::Closed => "closed",
            Self::Refused => "refused",
            Self::Forwarded => "forwarded",
            Self::Onward => "onward",
        }
    }
}

/// The body of a status packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// The id of the referral packet it is about.
    pub in_reply_to: String,
    pub status: ReferralProgress,
    /// Stable codes only (lower case, digits, `_`), never free text: a
    /// status crosses a border and may not carry personal data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reason_codes: Vec<String>,
}

/// The body of a coalesced status packet (`statuses`, protocol version 2):
/// statuses about referrals one gateway sent to the issuer, each applied
/// on its own as if it had come in a status packet of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBatch {
    pub statuses: Vec<StatusReport>,
}

impl StatusBatch {
    /// The most statuses one packet carries: a sending gateway coalesces
    /// no more, and a receiving one reads no more.
    pub const MAX: usize = 256;
}

/// Whether `code` has the form of a reason code: 1 to 64 of `a-z`, `0-9`, `_`.
pub fn is_reason_code(code: &str) -> bool {
    (1..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for progress in ReferralProgress::REPORTED_BY_RECIPIENTS.into_iter().chain([ReferralProgress::Refused, ReferralProgress::Forwarded, ReferralProgress::Onward]) {
            assert_eq!(serde_json::to_value(progress).unwrap(), serde_json::json!(progress.as_str()));
        }
    }

    #[test]
    fn reason_codes_are_codes_not_text() {
        assert!(is_reason_code("asylum_firewall"));
        assert!(is_reason_code("no_capacity_2026"));
        for text in ["", "Has a name", "no-capacity", "ñ", &"x".repeat(65)] {
            assert!(!is_reason_code(text), "{text}");
        }
    }
}
