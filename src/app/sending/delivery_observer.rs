//! What delivery tells whoever watches it (the metrics, in a running
//! gateway): attempts, failures by cause, retries, time to deliver and
//! deadline expiries, per peer gateway. A port, so that the app layer does
//! not depend on the HTTP edge that exposes the figures.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::app::Gateway;
use crate::domain::CountryCode;
use crate::store::ClaimedDelivery;
use crate::wire::FailureCode;

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
    /// a `wire::FailureCode` or `other` (see [`failure_cause`]).
    fn failed(&self, _peer: ObservedPeer, _cause: &'static str) {}
    /// The peer's receipt was verified and kept, `after` the entry was queued.
    fn delivered(&self, _peer: ObservedPeer, _after: Duration) {}
    /// The entry's deadline passed before it could be delivered.
    fn expired(&self, _peer: ObservedPeer) {}
}

/// The failure an entry that must be sealed end to end meets while its
/// organisation publishes no key: observed under [`ObservedPeer::Withheld`].
const WAITING_FOR_ORGANISATION_KEY: FailureCode = FailureCode::RecipientKeyMissing;

/// Watches nothing: a gateway without metrics (tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl DeliveryObserver for Unobserved {}

/// The label for a failure code: the code itself if the federation knows
/// it (`wire::FailureCode`), `other` otherwise: a peer can answer any code
/// of the right shape, and a hostile one must not add labels.
pub fn failure_cause(code: &str) -> &'static str {
    code.parse::<FailureCode>().map_or("other", FailureCode::as_str)
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
        if let Some(peer) = Self::observed_peer(item, code == WAITING_FOR_ORGANISATION_KEY.as_str()) {
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
    use super::failure_cause;
    use crate::wire::FailureCode;
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
        let codes = OpenError::every().iter().map(FailureCode::from).chain(every_receipt_error().iter().map(FailureCode::from)).collect::<Vec<_>>();
        for code in codes {
            assert_eq!(failure_cause(code.as_str()), code.as_str());
        }
    }

    #[test]
    fn anything_else_a_peer_answers_is_other() {
        for code in ["packet-made-up", "http-418", "a-name-the-peer-chose", "", "PACKET-REPLAYED", "packet-replayed "] {
            assert_eq!(failure_cause(code), "other", "{code}");
        }
        let distinct: std::collections::BTreeSet<&str> = FailureCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), FailureCode::ALL.len(), "a cause listed twice");
        assert!(!distinct.contains("other"));
    }
}
