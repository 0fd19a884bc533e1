//! What delivery tells whoever watches it (the metrics, in a running
//! gateway): attempts, failures by cause, retries, time to deliver and
//! deadline expiries, per peer gateway. A port, so that the app layer does
//! not depend on the HTTP edge that exposes the figures.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Gateway;
use crate::domain::CountryCode;
use crate::store::ClaimedDelivery;

/// Which peer an observation is about, as the figures may name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedPeer {
    Gateway(CountryCode),
    /// Not named: an entry that waits for its recipient organisation's own
    /// key can only be one that must be sealed end to end, which the
    /// asylum rule requires for a case going to the person's origin state.
    /// Counted under a peer, it would tell whoever reads the figures that
    /// such a case is on its way to that country.
    Withheld,
}

/// Told about each delivery attempt once it ended, and about expiries.
/// Every method is called after the fact and must not block; the default
/// does nothing.
pub trait DeliveryObserver: Send + Sync + 'static {
    /// An attempt at an entry was made; `retry` when the entry was attempted before.
    fn attempted(&self, _peer: ObservedPeer, _retry: bool) {}
    /// An attempt failed and the entry waits for the next; `cause` is one of
    /// [`FAILURE_CAUSES`] or `other` (see [`failure_cause`]).
    fn failed(&self, _peer: ObservedPeer, _cause: &'static str) {}
    /// The peer's receipt was verified and kept, `after` the entry was queued.
    fn delivered(&self, _peer: ObservedPeer, _after: Duration) {}
    /// The entry's deadline passed before it could be delivered.
    fn expired(&self, _peer: ObservedPeer) {}
}

/// The failure an entry that must be sealed end to end meets while its
/// organisation publishes no key: observed under [`ObservedPeer::Withheld`].
const WAITING_FOR_ORGANISATION_KEY: &str = "recipient-key-missing";

/// Watches nothing: a gateway without metrics (tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl DeliveryObserver for Unobserved {}

/// Every failure code a delivery attempt may record that is worth its own
/// label: the gateway's own (the directory, keys, the transport, the
/// receipt's check) and the codes a peer's federation listener answers
/// with. A peer can answer any code of the right shape, so anything else
/// is counted as `other`: a hostile peer cannot add labels.
pub const FAILURE_CAUSES: &[&str] = &[
    // The directory and the keys, here.
    "peer-suspended",
    "peer-not-listed",
    "peer-key-missing",
    "recipient-key-missing",
    // The transport.
    "peer-tls-setup",
    "peer-timeout",
    "peer-unreachable",
    "peer-transport",
    "peer-unavailable",
    // The receipt.
    "receipt-malformed",
    "receipt-too-large",
    "receipt-not-signed",
    "receipt-unknown-signer",
    "receipt-bad-signature",
    "receipt-signer-suspended",
    "receipt-wrong-issuer",
    "receipt-mismatch",
    // The peer's refusals of the packet (`crypto::packet::OpenError`).
    "packet-too-large",
    "packet-undecryptable",
    "packet-unknown-signer",
    "packet-bad-signature",
    "packet-issuer-mismatch",
    "packet-sender-mismatch",
    "packet-issuer-suspended",
    "packet-wrong-audience",
    "packet-expired",
    "packet-lifetime-too-long",
    "packet-issued-in-future",
    "packet-replayed",
    "packet-malformed-id",
    // The peer's listener, before the packet is read.
    "peer-not-member",
    "unsupported-media-type",
    "malformed-body",
    "body-unreadable",
    "request-timeout",
    "not-found",
    "method-not-allowed",
];

/// The label for a failure code: the code itself if it is one of
/// [`FAILURE_CAUSES`], `other` otherwise.
pub fn failure_cause(code: &str) -> &'static str {
    FAILURE_CAUSES.iter().find(|known| **known == code).copied().unwrap_or("other")
}

impl Gateway {
    /// Whoever watches delivery from now on.
    pub fn with_delivery_observer(mut self, observer: std::sync::Arc<dyn DeliveryObserver>) -> Self {
        self.delivery_observer = observer;
        self
    }

    // The calls from `delivery`, once an attempt has ended: each names the
    // entry's peer, which the outbox holds as it was checked on the way in
    // (an unreadable one is an inconsistency the attempt reports itself, so
    // it is not counted), or withholds it (see `ObservedPeer::Withheld`).

    fn observed_peer(item: &ClaimedDelivery, withheld: bool) -> Option<ObservedPeer> {
        let peer = CountryCode::parse(&item.destination_country).ok()?;
        Some(if withheld { ObservedPeer::Withheld } else { ObservedPeer::Gateway(peer) })
    }

    /// An attempt that failed with `code`, the entry to be tried again.
    pub(super) fn observe_failure(&self, item: &ClaimedDelivery, code: &str) {
        if let Some(peer) = Self::observed_peer(item, code == WAITING_FOR_ORGANISATION_KEY) {
            self.delivery_observer.attempted(peer, item.attempts > 1);
            self.delivery_observer.failed(peer, failure_cause(code));
        }
    }

    /// An attempt that delivered. The time to deliver runs from the entry's
    /// creation to `at`, both by the clock port.
    pub(super) fn observe_delivery(&self, item: &ClaimedDelivery, at: DateTime<Utc>) {
        if let Some(peer) = Self::observed_peer(item, false) {
            self.delivery_observer.attempted(peer, item.attempts > 1);
            let after = u64::try_from(at.timestamp_millis().saturating_sub(item.created_ms)).unwrap_or(0);
            self.delivery_observer.delivered(peer, Duration::from_millis(after));
        }
    }

    /// An entry past its deadline. One to be sealed end to end that never
    /// was may have waited for its organisation's key all along.
    pub(super) fn observe_expiry(&self, item: &ClaimedDelivery) {
        if let Some(peer) = Self::observed_peer(item, item.end_to_end && item.packet.is_none()) {
            self.delivery_observer.expired(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{failure_cause, FAILURE_CAUSES};
    use crate::crypto::packet::OpenError;
    use crate::crypto::receipt::ReceiptError;

    /// Every refusal the receipt check knows, so that a new one cannot be
    /// added without being named here (the match is exhaustive).
    fn every_receipt_error() -> Vec<ReceiptError> {
        let all = vec![
            ReceiptError::Sign(String::new()),
            ReceiptError::UnknownSigner,
            ReceiptError::BadSignature,
            ReceiptError::SignerSuspended,
            ReceiptError::WrongIssuer,
            ReceiptError::Mismatch,
        ];
        for error in &all {
            match error {
                ReceiptError::Sign(_)
                | ReceiptError::UnknownSigner
                | ReceiptError::BadSignature
                | ReceiptError::SignerSuspended
                | ReceiptError::WrongIssuer
                | ReceiptError::Mismatch => {}
            }
        }
        all
    }

    #[test]
    fn every_code_the_checks_know_is_its_own_cause() {
        let codes = OpenError::every().iter().map(OpenError::code).chain(every_receipt_error().iter().map(ReceiptError::code)).collect::<Vec<_>>();
        for code in codes {
            assert_eq!(failure_cause(code), code);
        }
    }

    #[test]
    fn anything_else_a_peer_answers_is_other() {
        for code in ["packet-made-up", "http-418", "a-name-the-peer-chose", "", "PACKET-REPLAYED", "packet-replayed "] {
            assert_eq!(failure_cause(code), "other", "{code}");
        }
        let distinct: std::collections::BTreeSet<&str> = FAILURE_CAUSES.iter().copied().collect();
        assert_eq!(distinct.len(), FAILURE_CAUSES.len(), "a cause listed twice");
        assert!(!FAILURE_CAUSES.contains(&"other"));
    }
}
