//! What both sides of the federation endpoint agree on: the sending
//! gateway's client (`federation::client`) and delivery (`app::sending::delivery`),
//! and the receiving gateway's listener (`http::federation`) and inbox
//! (`app::receiving::inbox`), take these from here, so that neither side can change
//! alone. A module of its own, below `app` and `federation` both:
//! `federation` implements ports `app` declares, so a vocabulary they share
//! cannot live in either without a cycle.

use crate::crypto::packet::OpenError;
use crate::crypto::receipt::ReceiptError;

/// Where packets are posted, below a gateway's endpoint.
pub const PACKETS_PATH: &str = "/federation/v1/packets";
/// Where a batch of packets is posted (JSON, protocol version 3,
/// `federation.md` §5c), below a gateway's endpoint.
pub const PACKET_BATCHES_PATH: &str = "/federation/v1/packet-batches";
/// Most packets in one batch.
pub const MAX_BATCH_PACKETS: usize = 64;
/// What a batch's body may hold beyond its packets' bytes, which together
/// stay within the receiving gateway's packet limit: the JSON around them.
pub const BATCH_ENVELOPE_BYTES: usize = 4 * 1024;
/// Largest answer to a batch a gateway reads: a receipt listing every
/// packet, and a refusal for each.
pub const MAX_BATCH_ANSWER_BYTES: usize = 64 * 1024;
/// Where a match query is posted (JSON; answered at once), below a gateway's endpoint.
pub const MATCH_QUERY_PATH: &str = "/federation/v1/match";
/// Where a match found is told (JSON), below a gateway's endpoint.
pub const MATCH_FOUND_PATH: &str = "/federation/v1/match/found";
/// Largest match query or notice a gateway reads.
pub const MAX_MATCH_REQUEST_BYTES: usize = 256 * 1024;
/// Largest match answer a gateway reads: about 9 KB per search held.
pub const MAX_MATCH_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Media type of a compact JWE or JWS body: a packet, and the receipt that answers it.
pub const JOSE_MEDIA_TYPE: &str = "application/jose";

/// Base of the RFC 9457 problem `type` URIs, of the national API and the
/// federation endpoint alike: one stable URI per cause. A sending gateway
/// reads a peer's refusal code back from it.
pub const PROBLEM_TYPE_BASE: &str = "https://referral-gateway.example/problems/";

/// The problem `type` URI of a cause.
pub fn problem_type(code: &str) -> String {
    format!("{PROBLEM_TYPE_BASE}{code}")
}

/// A batch of sealed packets from one gateway to another, each as it would
/// be posted alone (compact JWE).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketBatch {
    pub packets: Vec<String>,
}

/// The receiving gateway's answer to a batch: one signed batch receipt for
/// every packet it took (absent if it took none), and the refusal of each
/// other packet, by its place in the batch.
/// Members a later version may add are ignored, so that an answer stays readable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// A refusal that is not an index and a code is dropped, so that it
    /// cannot void the signed receipt beside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "readable_refusals")]
    pub refused: Vec<BatchRefusal>,
}

fn readable_refusals<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<BatchRefusal>, D::Error> {
    let refusals: Vec<serde_json::Value> = serde::Deserialize::deserialize(deserializer)?;
    Ok(refusals.into_iter().filter_map(|refusal| serde_json::from_value(refusal).ok()).collect())
}

/// One packet of a batch refused, and why: the code a packet posted alone
/// would have been refused with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRefusal {
    /// Its place in the batch, from 0.
    pub index: usize,
    pub code: String,
}

vocabulary! {
    /// Why an attempt to deliver a packet failed: the code the outbox
    /// records (`last_error`) and the metrics count. The `packet-*` codes
    /// and those of the listener are what a receiving gateway answers (the
    /// last part of its problem's `type`), read back by the sender; the
    /// others the sending gateway finds itself. A peer may answer any code
    /// of the right form: one not listed here is recorded as it came and
    /// counted as `other`, so a hostile peer cannot add metric labels.
    FailureCode, "delivery failure code" {
        // The directory and the keys, at the sending gateway.
        PeerSuspended => "peer-suspended",
        PeerNotListed => "peer-not-listed",
        PeerKeyMissing => "peer-key-missing",
        RecipientKeyMissing => "recipient-key-missing",
        // The transport.
        PeerTlsSetup => "peer-tls-setup",
        PeerTimeout => "peer-timeout",
        PeerUnreachable => "peer-unreachable",
        PeerTransport => "peer-transport",
        PeerUnavailable => "peer-unavailable",
        // The receipt, checked by the sender.
        ReceiptMalformed => "receipt-malformed",
        ReceiptTooLarge => "receipt-too-large",
        ReceiptNotSigned => "receipt-not-signed",
        ReceiptUnknownSigner => "receipt-unknown-signer",
        ReceiptBadSignature => "receipt-bad-signature",
        ReceiptSignerSuspended => "receipt-signer-suspended",
        ReceiptWrongIssuer => "receipt-wrong-issuer",
        ReceiptMismatch => "receipt-mismatch",
        // The receiving gateway's refusals of the packet (`OpenError`).
        PacketTooLarge => "packet-too-large",
        PacketUndecryptable => "packet-undecryptable",
        PacketUnknownSigner => "packet-unknown-signer",
        PacketBadSignature => "packet-bad-signature",
        PacketIssuerMismatch => "packet-issuer-mismatch",
        PacketSenderMismatch => "packet-sender-mismatch",
        PacketIssuerSuspended => "packet-issuer-suspended",
        PacketWrongAudience => "packet-wrong-audience",
        PacketExpired => "packet-expired",
        PacketLifetimeTooLong => "packet-lifetime-too-long",
        PacketIssuedInFuture => "packet-issued-in-future",
        PacketReplayed => "packet-replayed",
        PacketMalformedId => "packet-malformed-id",
        // The receiving gateway's listener, before the packet is read.
        PeerNotMember => "peer-not-member",
        UnsupportedMediaType => "unsupported-media-type",
        MalformedBody => "malformed-body",
        BatchMalformed => "batch-malformed",
        BatchTooLarge => "batch-too-large",
        BodyUnreadable => "body-unreadable",
        RequestTimeout => "request-timeout",
        NotFound => "not-found",
        MethodNotAllowed => "method-not-allowed",
    }
}

impl FailureCode {
    /// The peer cannot open the packet as it was sealed, or cannot trust
    /// its signer: sealed to a key the peer no longer holds, or signed with
    /// one of ours the directory no longer lists. A packet sealed anew to the
    /// directory as it is now may pass; any other refusal may pass later as
    /// the same bytes (a directory edition the peer has not read yet, a
    /// suspension lifted).
    pub const fn asks_for_a_new_packet(self) -> bool {
        matches!(self, Self::PacketUndecryptable | Self::PacketUnknownSigner)
    }

    /// Whether a peer's `code` says it refused a packet on opening it
    /// (`federation.md` §5), so that it cannot have taken those bytes: a
    /// gateway answers bytes it took with their receipt, whenever they
    /// come. `packet-replayed` is not one: the peer holds the id.
    pub fn refused_on_opening(code: &str) -> bool {
        OpenError::every().iter().map(Self::from).any(|known| known != Self::PacketReplayed && known.as_str() == code)
    }

    /// `code` if it is one a receiving gateway refuses a packet with (§5:
    /// the refusals of `OpenError`), as a batch's answer names them.
    pub fn packet_refusal(code: &str) -> Option<Self> {
        OpenError::every().iter().map(Self::from).find(|known| known.as_str() == code)
    }
}

impl From<&OpenError> for FailureCode {
    fn from(error: &OpenError) -> Self {
        match error {
            OpenError::TooLarge { .. } => Self::PacketTooLarge,
            OpenError::Undecryptable => Self::PacketUndecryptable,
            OpenError::UnknownSigner => Self::PacketUnknownSigner,
            OpenError::BadSignature => Self::PacketBadSignature,
            OpenError::IssuerMismatch => Self::PacketIssuerMismatch,
            OpenError::SenderMismatch => Self::PacketSenderMismatch,
            OpenError::IssuerSuspended => Self::PacketIssuerSuspended,
            OpenError::WrongAudience => Self::PacketWrongAudience,
            OpenError::Expired => Self::PacketExpired,
            OpenError::LifetimeTooLong => Self::PacketLifetimeTooLong,
            OpenError::IssuedInFuture => Self::PacketIssuedInFuture,
            OpenError::Replayed => Self::PacketReplayed,
            OpenError::MalformedId => Self::PacketMalformedId,
        }
    }
}

impl From<&ReceiptError> for FailureCode {
    fn from(error: &ReceiptError) -> Self {
        match error {
            ReceiptError::Sign(_) => Self::ReceiptNotSigned,
            ReceiptError::UnknownSigner => Self::ReceiptUnknownSigner,
            ReceiptError::BadSignature => Self::ReceiptBadSignature,
            ReceiptError::SignerSuspended => Self::ReceiptSignerSuspended,
            ReceiptError::WrongIssuer => Self::ReceiptWrongIssuer,
            ReceiptError::Mismatch => Self::ReceiptMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_of_a_packet_have_codes_of_their_own() {
        let codes: std::collections::BTreeSet<FailureCode> = OpenError::every().iter().map(FailureCode::from).collect();
        assert_eq!(codes.len(), OpenError::every().len(), "two refusals share a code");
        assert!(codes.iter().all(|code| code.as_str().starts_with("packet-")));
        let new_packet: Vec<&str> = FailureCode::ALL.iter().filter(|c| c.asks_for_a_new_packet()).map(|c| c.as_str()).collect();
        assert_eq!(new_packet, ["packet-undecryptable", "packet-unknown-signer"]);
        assert!(FailureCode::refused_on_opening("packet-bad-signature"));
        assert!(FailureCode::refused_on_opening("packet-too-large"));
        for taken_or_unknown in ["packet-replayed", "receipt-malformed", "receipt-too-large", "peer-unavailable", "http-404", "packet-made-up"] {
            assert!(!FailureCode::refused_on_opening(taken_or_unknown), "{taken_or_unknown}");
        }
        assert_eq!(FailureCode::packet_refusal("packet-replayed"), Some(FailureCode::PacketReplayed));
        assert_eq!(FailureCode::packet_refusal("packet-undecryptable"), Some(FailureCode::PacketUndecryptable));
        for other in ["receipt-malformed", "peer-unavailable", "batch-malformed", "packet-made-up", "Mr Okafor", ""] {
            assert_eq!(FailureCode::packet_refusal(other), None, "{other}");
        }
    }

    #[test]
    fn a_batch_answer_keeps_its_receipt_whatever_its_refusals_hold() {
        let answer: BatchAnswer = serde_json::from_str(
            r#"{"receipt": "r", "refused": [{"index": 1, "code": "packet-replayed"}, {"index": -1, "code": "packet-expired"}, {"index": 2, "code": 7}, "free text"], "later": true}"#,
        )
        .unwrap();
        assert_eq!(answer.receipt.as_deref(), Some("r"));
        assert_eq!(answer.refused, [BatchRefusal { index: 1, code: "packet-replayed".to_owned() }]);
        assert!(serde_json::from_str::<BatchAnswer>(r#"{"receipt": 5}"#).is_err());
    }

    #[test]
    fn codes_read_back_as_written() {
        for code in FailureCode::ALL {
            assert_eq!(code.as_str().parse::<FailureCode>(), Ok(*code));
        }
        for other in ["packet-made-up", "http-418", "", "PACKET-REPLAYED", "packet-replayed ", "other"] {
            assert!(other.parse::<FailureCode>().is_err(), "{other}");
        }
    }
}
