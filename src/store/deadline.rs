//! A deadline on every store call, kept by the gateway itself: when the
//! network path to the database drops packets, neither the socket nor a
//! server-side statement timeout ever answers, and a request would hang
//! until the kernel gives the connection up. Past the deadline a call fails
//! as [`StoreError::Unavailable`] (answered 503 `unavailable`).
//!
//! A write cut off by its deadline may still commit on the server: a
//! submission is then answered as stored when retried with its idempotency key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::case_keys::CaseKeyStore;
use super::*;
use crate::crypto::case_keys::WrappedCaseKey;

/// A store (or case-key store) whose every call ends within `limit`.
#[derive(Debug)]
pub(super) struct Deadlined<S: ?Sized> {
    inner: Arc<S>,
    limit: Duration,
}

impl<S: ?Sized> Deadlined<S> {
    pub(super) fn new(inner: impl Into<Arc<S>>, limit: Duration) -> Self {
        Self { inner: inner.into(), limit }
    }

    async fn bounded<T>(&self, call: &'static str, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.limit, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("the database did not answer {call} within {} ms", self.limit.as_millis()))),
        }
    }
}

#[async_trait]
impl CaseKeyStore for Deadlined<dyn CaseKeyStore> {
    async fn put(&self, keys: &[WrappedCaseKey], at_ms: i64) -> Result<(), StoreError> {
        self.bounded("put", self.inner.put(keys, at_ms)).await
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<WrappedCaseKey>, StoreError> {
        self.bounded("get", self.inner.get(ids)).await
    }

    async fn destroy(&self, ids: &[String]) -> Result<u64, StoreError> {
        self.bounded("destroy", self.inner.destroy(ids)).await
    }
}

#[async_trait]
impl Store for Deadlined<dyn Store> {
    async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Written>, StoreError> {
        self.bounded("write_batch", self.inner.write_batch(batch)).await
    }

    async fn referral(&self, id: &str) -> Result<Option<StoredReferral>, StoreError> {
        self.bounded("referral", self.inner.referral(id)).await
    }

    async fn referral_by_key(&self, sender_org: &str, key: &str) -> Result<Option<StoredReferral>, StoreError> {
        self.bounded("referral_by_key", self.inner.referral_by_key(sender_org, key)).await
    }

    async fn timeline(&self, referral_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        self.bounded("timeline", self.inner.timeline(referral_id)).await
    }

    async fn sealed_payload(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError> {
        self.bounded("sealed_payload", self.inner.sealed_payload(referral_id)).await
    }

    async fn claim_deliveries(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.bounded("claim_deliveries", self.inner.claim_deliveries(now_ms, lease_ms, limit)).await
    }

    async fn retry_later(&self, referral_id: &str, next_attempt_ms: i64, error_code: &str, forget_packet: bool) -> Result<(), StoreError> {
        self.bounded("retry_later", self.inner.retry_later(referral_id, next_attempt_ms, error_code, forget_packet)).await
    }

    async fn delivery(&self, referral_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        self.bounded("delivery", self.inner.delivery(referral_id)).await
    }

    async fn sent_packet(&self, packet_id: &str) -> Result<Option<SentPacket>, StoreError> {
        self.bounded("sent_packet", self.inner.sent_packet(packet_id)).await
    }

    async fn unprocessed_inbox(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("unprocessed_inbox", self.inner.unprocessed_inbox(limit)).await
    }

    async fn withdrawn_part(&self, packet_id: &str, issuer: &str) -> Result<Option<WithdrawnPart>, StoreError> {
        self.bounded("withdrawn_part", self.inner.withdrawn_part(packet_id, issuer)).await
    }

    async fn sealed_withdrawals(&self, packet_id: &str, issuer: &str) -> Result<Vec<SealedWithdrawal>, StoreError> {
        self.bounded("sealed_withdrawals", self.inner.sealed_withdrawals(packet_id, issuer)).await
    }

    async fn subject_referrals(&self, subject_key: &str) -> Result<Vec<SubjectReferral>, StoreError> {
        self.bounded("subject_referrals", self.inner.subject_referrals(subject_key)).await
    }

    async fn inbox_item(&self, packet_id: &str) -> Result<Option<InboxItem>, StoreError> {
        self.bounded("inbox_item", self.inner.inbox_item(packet_id)).await
    }

    async fn claim_pushes(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("claim_pushes", self.inner.claim_pushes(now_ms, lease_ms, limit)).await
    }

    async fn retry_push(&self, packet_id: &str, next_push_ms: i64, error_code: &str) -> Result<(), StoreError> {
        self.bounded("retry_push", self.inner.retry_push(packet_id, next_push_ms, error_code)).await
    }

    async fn inbox_for(&self, recipient_org: &str, states: &[&str], after: Option<i64>, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("inbox_for", self.inner.inbox_for(recipient_org, states, after, limit)).await
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
        self.bounded("policy_versions", self.inner.policy_versions()).await
    }

    async fn latest_policy_number(&self) -> Result<i64, StoreError> {
        self.bounded("latest_policy_number", self.inner.latest_policy_number()).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded("audit", self.inner.audit(filter)).await
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        self.bounded("audit_head", self.inner.audit_head()).await
    }

    async fn outbox_depth(&self) -> Result<i64, StoreError> {
        self.bounded("outbox_depth", self.inner.outbox_depth()).await
    }

    async fn inbox_receipt(&self, packet_id: &str) -> Result<Option<InboxReceipt>, StoreError> {
        self.bounded("inbox_receipt", self.inner.inbox_receipt(packet_id)).await
    }

    async fn referral_retention(&self, referral_id: &str) -> Result<Option<StoredRetention>, StoreError> {
        self.bounded("referral_retention", self.inner.referral_retention(referral_id)).await
    }

    async fn expired_referrals(&self, now_ms: i64, limit: i64) -> Result<Vec<ExpiredReferral>, StoreError> {
        self.bounded("expired_referrals", self.inner.expired_referrals(now_ms, limit)).await
    }

    async fn expired_received(&self, now_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("expired_received", self.inner.expired_received(now_ms, limit)).await
    }

    async fn receipt_for_bytes(&self, packet_sha256: &str, issuer: &str) -> Result<Option<String>, StoreError> {
        self.bounded("receipt_for_bytes", self.inner.receipt_for_bytes(packet_sha256, issuer)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", self.inner.ping()).await
    }

    async fn release_earlier_claims(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.bounded("release_earlier_claims", self.inner.release_earlier_claims(now_ms)).await
    }
}
