//! A deadline on every store call, kept by the gateway itself: when the
//! network path to the database drops packets, neither the socket nor a
//! server-side statement timeout ever answers, and a request would hang
//! until the kernel gives the connection up. Past the deadline a call fails
//! as [`StoreError::Unavailable`] (answered 503 `unavailable`).
//!
//! A write cut off by its deadline may still commit on the server: a
//! submission is then answered as stored when retried with its idempotency key.
//!
//! A call that takes longer than [`SLOW_OPERATION`] is logged as a `slow
//! database operation`, by the operation's name (never its SQL, which sqlx
//! no longer logs), at most once a minute per name. Both measures are of
//! real time (`std::time::Instant`), like the deadline itself: they are
//! about the database's IO, not the domain's clock, and the store has no
//! clock port.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::case_keys::CaseKeyStore;
use super::*;
use crate::crypto::case_keys::WrappedCaseKey;

/// A store call that takes longer than this is logged by its name.
pub(super) const SLOW_OPERATION: Duration = Duration::from_secs(1);
/// At most one slow-operation line per operation name in this time.
const SLOW_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A store (or case-key store) whose every call ends within `limit`.
#[derive(Debug)]
pub(super) struct Deadlined<S: ?Sized> {
    inner: Arc<S>,
    limit: Duration,
    slow: SlowOperations,
}

impl<S: ?Sized> Deadlined<S> {
    pub(super) fn new(inner: impl Into<Arc<S>>, limit: Duration) -> Self {
        Self { inner: inner.into(), limit, slow: SlowOperations::new(SLOW_OPERATION, SLOW_LOG_INTERVAL) }
    }

    async fn bounded<T>(&self, call: &'static str, work: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.limit, work).await;
        let elapsed = started.elapsed();
        if let Some(not_logged) = self.slow.note(call, elapsed, Instant::now()) {
            tracing::warn!(
                operation = call,
                elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                slow_calls_not_logged = not_logged,
                "slow database operation"
            );
        }
        match result {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!("the database did not answer {call} within {} ms", self.limit.as_millis()))),
        }
    }
}

/// Which slow calls get a log line: the first of each operation name, then
/// one per name per interval, which says how many were not logged since.
#[derive(Debug)]
struct SlowOperations {
    threshold: Duration,
    interval: Duration,
    /// Per operation name (a fixed set: the store's methods): when its last
    /// line was written, and the slow calls since then.
    logged: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl SlowOperations {
    fn new(threshold: Duration, interval: Duration) -> Self {
        Self { threshold, interval, logged: Mutex::new(HashMap::new()) }
    }

    /// For a call of `operation` that took `elapsed` and ended `at`: `None`
    /// if no line is due, else how many slow calls of it went unlogged
    /// since its last line.
    fn note(&self, operation: &'static str, elapsed: Duration, at: Instant) -> Option<u64> {
        if elapsed < self.threshold {
            return None;
        }
        let mut logged = match self.logged.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match logged.get_mut(operation) {
            Some((last, not_logged)) if at.saturating_duration_since(*last) < self.interval => {
                *not_logged += 1;
                None
            }
            Some((last, not_logged)) => {
                let since = *not_logged;
                (*last, *not_logged) = (at, 0);
                Some(since)
            }
            None => {
                logged.insert(operation, (at, 0));
                Some(0)
            }
        }
    }
}

#[async_trait]
impl CaseKeyStore for Deadlined<dyn CaseKeyStore> {
    async fn put(&self, keys: &[WrappedCaseKey], at_ms: i64) -> Result<(), StoreError> {
        self.bounded("case_keys.put", self.inner.put(keys, at_ms)).await
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<WrappedCaseKey>, StoreError> {
        self.bounded("case_keys.get", self.inner.get(ids)).await
    }

    async fn destroy(&self, ids: &[String]) -> Result<u64, StoreError> {
        self.bounded("case_keys.destroy", self.inner.destroy(ids)).await
    }

    /// Bounded on its own: the keys are destroyed already, and the caller
    /// reports a wipe that waits too long for readers of the log without
    /// failing the destruction.
    async fn scrub_destroyed(&self) -> Result<(), StoreError> {
        self.bounded("case_keys.scrub_destroyed", self.inner.scrub_destroyed()).await
    }
}

#[async_trait]
impl ReferralStore for Deadlined<dyn Store> {
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

    async fn sealed_payload_and_onward(&self, referral_id: &str) -> Result<Option<(SealedPayload, Option<Vec<u8>>)>, StoreError> {
        self.bounded("sealed_payload_and_onward", self.inner.sealed_payload_and_onward(referral_id)).await
    }

    async fn subject_referrals(&self, subject_key: &str) -> Result<Vec<SubjectReferral>, StoreError> {
        self.bounded("subject_referrals", self.inner.subject_referrals(subject_key)).await
    }

    async fn referral_retention(&self, referral_id: &str) -> Result<Option<StoredRetention>, StoreError> {
        self.bounded("referral_retention", self.inner.referral_retention(referral_id)).await
    }

    async fn expired_referrals(&self, now_ms: i64, limit: i64) -> Result<Vec<ExpiredReferral>, StoreError> {
        self.bounded("expired_referrals", self.inner.expired_referrals(now_ms, limit)).await
    }

    async fn referrals_of(&self, sender_org: &str, filter: &ReferralFilter, after: Option<i64>, limit: i64) -> Result<Vec<ListedReferral>, StoreError> {
        self.bounded("referrals_of", self.inner.referrals_of(sender_org, filter, after, limit)).await
    }

    async fn count_awaiting(&self, cutoffs: &[AwaitingCutoff]) -> Result<Vec<i64>, StoreError> {
        self.bounded("count_awaiting", self.inner.count_awaiting(cutoffs)).await
    }

    async fn overdue_unlogged(&self, cutoffs: &[AwaitingCutoff], limit: i64) -> Result<Vec<OverdueReferral>, StoreError> {
        self.bounded("overdue_unlogged", self.inner.overdue_unlogged(cutoffs, limit)).await
    }

    async fn mark_overdue_logged(&self, referral_id: &str, deadline: DeadlineKind) -> Result<bool, StoreError> {
        self.bounded("mark_overdue_logged", self.inner.mark_overdue_logged(referral_id, deadline)).await
    }

    async fn decision_facts_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<DecisionFactsAtRest>, StoreError> {
        self.bounded("decision_facts_between", self.inner.decision_facts_between(window, after, limit)).await
    }

    async fn referrals_accepted_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<AcceptedReferral>, StoreError> {
        self.bounded("referrals_accepted_between", self.inner.referrals_accepted_between(window, after, limit)).await
    }

    async fn released_statistics(&self, period: &str) -> Result<Option<String>, StoreError> {
        self.bounded("released_statistics", self.inner.released_statistics(period)).await
    }

    async fn keep_released_statistics(&self, period: &str, answer: &str, released_ms: i64) -> Result<String, StoreError> {
        self.bounded("keep_released_statistics", self.inner.keep_released_statistics(period, answer, released_ms)).await
    }

    async fn steps_of_referrals_active_between(&self, window: (i64, i64), after: Option<(String, i64)>, limit: i64) -> Result<Vec<PeriodStep>, StoreError> {
        self.bounded("steps_of_referrals_active_between", self.inner.steps_of_referrals_active_between(window, after, limit)).await
    }

    async fn decision_facts_before(&self, before_ms: i64, limit: i64) -> Result<Vec<DecisionFactsAtRest>, StoreError> {
        self.bounded("decision_facts_before", self.inner.decision_facts_before(before_ms, limit)).await
    }

    async fn decision_facts_of(&self, referral_id: &str) -> Result<Option<DecisionFactsAtRest>, StoreError> {
        self.bounded("decision_facts_of", self.inner.decision_facts_of(referral_id)).await
    }

    async fn forget_decision_facts(&self, referral_ids: &[String]) -> Result<u64, StoreError> {
        self.bounded("forget_decision_facts", self.inner.forget_decision_facts(referral_ids)).await
    }
}

#[async_trait]
impl OverrideStore for Deadlined<dyn Store> {
    async fn emergency_override(&self, referral_id: &str) -> Result<Option<StoredOverride>, StoreError> {
        self.bounded("emergency_override", self.inner.emergency_override(referral_id)).await
    }

    async fn awaiting_overrides(&self, limit: i64) -> Result<Vec<StoredOverride>, StoreError> {
        self.bounded("awaiting_overrides", self.inner.awaiting_overrides(limit)).await
    }

    async fn lapsed_overrides(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        self.bounded("lapsed_overrides", self.inner.lapsed_overrides(now_ms, limit)).await
    }
}

#[async_trait]
impl MatchStore for Deadlined<dyn Store> {
    async fn match_candidates(&self) -> Result<Vec<MatchCandidate>, StoreError> {
        self.bounded("match_candidates", self.inner.match_candidates()).await
    }

    async fn count_match_query(&self, gateway: &str, since_ms: i64, at_ms: i64, limit: i64) -> Result<bool, StoreError> {
        self.bounded("count_match_query", self.inner.count_match_query(gateway, since_ms, at_ms, limit)).await
    }

    async fn keep_match_handles(&self, handles: &[MatchHandle], now_ms: i64) -> Result<(), StoreError> {
        self.bounded("keep_match_handles", self.inner.keep_match_handles(handles, now_ms)).await
    }

    async fn match_candidate(&self, referral_id: &str) -> Result<Option<MatchCandidate>, StoreError> {
        self.bounded("match_candidate", self.inner.match_candidate(referral_id)).await
    }

    async fn match_people(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError> {
        self.bounded("match_people", self.inner.match_people(referral_id)).await
    }

    async fn match_handle(&self, handle: &str, gateway: &str, now_ms: i64) -> Result<Option<MatchHandle>, StoreError> {
        self.bounded("match_handle", self.inner.match_handle(handle, gateway, now_ms)).await
    }
}

#[async_trait]
impl CallbackStore for Deadlined<dyn Store> {
    async fn register_callbacks(&self, subscriptions: &[CallbackSubscription]) -> Result<(), StoreError> {
        self.bounded("register_callbacks", self.inner.register_callbacks(subscriptions)).await
    }

    async fn claim_callbacks(&self, orgs: &[crate::domain::OrgId], now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<DueCallback>, StoreError> {
        self.bounded("claim_callbacks", self.inner.claim_callbacks(orgs, now_ms, lease_ms, limit)).await
    }

    async fn callback_delivered(&self, id: &str) -> Result<(), StoreError> {
        self.bounded("callback_delivered", self.inner.callback_delivered(id)).await
    }

    async fn retry_callback(&self, id: &str, next_ms: i64, error_code: &str) -> Result<(), StoreError> {
        self.bounded("retry_callback", self.inner.retry_callback(id, next_ms, error_code)).await
    }

    async fn give_up_callback(&self, id: &str, error_code: &str) -> Result<(), StoreError> {
        self.bounded("give_up_callback", self.inner.give_up_callback(id, error_code)).await
    }

    async fn undelivered_callbacks(&self, referral_id: &str) -> Result<UndeliveredCallbacks, StoreError> {
        self.bounded("undelivered_callbacks", self.inner.undelivered_callbacks(referral_id)).await
    }

    async fn callback_counts(&self) -> Result<Vec<CallbackCount>, StoreError> {
        self.bounded("callback_counts", self.inner.callback_counts()).await
    }
}

#[async_trait]
impl OutboxStore for Deadlined<dyn Store> {
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

    async fn outbox_depth(&self) -> Result<i64, StoreError> {
        self.bounded("outbox_depth", self.inner.outbox_depth()).await
    }

    async fn delivery_tallies(&self) -> Result<Vec<DeliveryTally>, StoreError> {
        self.bounded("delivery_tallies", self.inner.delivery_tallies()).await
    }

    async fn erasures_awaited(&self, deadline_ms: i64, now_ms: i64) -> Result<Vec<ErasuresAwaited>, StoreError> {
        self.bounded("erasures_awaited", self.inner.erasures_awaited(deadline_ms, now_ms)).await
    }
}

#[async_trait]
impl InboxStore for Deadlined<dyn Store> {
    async fn unprocessed_inbox(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("unprocessed_inbox", self.inner.unprocessed_inbox(limit)).await
    }

    async fn withdrawn_part(&self, packet_id: &str, issuer: &str) -> Result<Option<WithdrawnPart>, StoreError> {
        self.bounded("withdrawn_part", self.inner.withdrawn_part(packet_id, issuer)).await
    }

    async fn sealed_withdrawals(&self, packet_id: &str, issuer: &str) -> Result<Vec<SealedWithdrawal>, StoreError> {
        self.bounded("sealed_withdrawals", self.inner.sealed_withdrawals(packet_id, issuer)).await
    }

    async fn inbox_item(&self, packet_id: &str) -> Result<Option<InboxItem>, StoreError> {
        self.bounded("inbox_item", self.inner.inbox_item(packet_id)).await
    }

    async fn onward_copies(&self, packet_id: &str) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("onward_copies", self.inner.onward_copies(packet_id)).await
    }

    async fn claim_pushes(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("claim_pushes", self.inner.claim_pushes(now_ms, lease_ms, limit)).await
    }

    async fn retry_push(&self, packet_id: &str, next_push_ms: i64, error_code: &str) -> Result<(), StoreError> {
        self.bounded("retry_push", self.inner.retry_push(packet_id, next_push_ms, error_code)).await
    }

    async fn inbox_for(&self, recipient_org: &str, states: &[crate::domain::lifecycle::InboxState], after: Option<i64>, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("inbox_for", self.inner.inbox_for(recipient_org, states, after, limit)).await
    }

    async fn inbox_queue(&self, recipient_org: &str, states: &[crate::domain::lifecycle::InboxState], after: Option<QueuePlace>, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("inbox_queue", self.inner.inbox_queue(recipient_org, states, after, limit)).await
    }

    async fn inbox_receipt(&self, packet_id: &str) -> Result<Option<InboxReceipt>, StoreError> {
        self.bounded("inbox_receipt", self.inner.inbox_receipt(packet_id)).await
    }

    async fn expired_received(&self, now_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        self.bounded("expired_received", self.inner.expired_received(now_ms, limit)).await
    }

    async fn refused_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<RefusedPacket>, StoreError> {
        self.bounded("refused_between", self.inner.refused_between(window, after, limit)).await
    }

    async fn receipt_for_bytes(&self, packet_sha256: &str, issuer: &str) -> Result<Option<InboxReceipt>, StoreError> {
        self.bounded("receipt_for_bytes", self.inner.receipt_for_bytes(packet_sha256, issuer)).await
    }
}

#[async_trait]
impl PolicyStore for Deadlined<dyn Store> {
    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
        self.bounded("policy_versions", self.inner.policy_versions()).await
    }

    async fn policy_sign_offs(&self) -> Result<Vec<PolicySignOffRecord>, StoreError> {
        self.bounded("policy_sign_offs", self.inner.policy_sign_offs()).await
    }

    async fn policy_mark(&self) -> Result<PolicyMark, StoreError> {
        self.bounded("policy_mark", self.inner.policy_mark()).await
    }
}

#[async_trait]
impl AuditStore for Deadlined<dyn Store> {
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.bounded("audit", self.inner.audit(filter)).await
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        self.bounded("audit_head", self.inner.audit_head()).await
    }
}

#[async_trait]
impl Store for Deadlined<dyn Store> {
    async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Written>, StoreError> {
        self.bounded("write_batch", self.inner.write_batch(batch)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded("ping", self.inner.ping()).await
    }

    async fn release_earlier_claims(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.bounded("release_earlier_claims", self.inner.release_earlier_claims(now_ms)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_operation_is_logged_once_a_minute_per_name_with_the_calls_not_logged() {
        let slow = SlowOperations::new(Duration::from_secs(1), Duration::from_secs(60));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let long = Duration::from_secs(2);
        assert_eq!(slow.note("audit", Duration::from_millis(999), at(0)), None, "not slow");
        assert_eq!(slow.note("audit", long, at(0)), Some(0));
        assert_eq!(slow.note("audit", long, at(10)), None);
        assert_eq!(slow.note("audit", long, at(59)), None);
        assert_eq!(slow.note("claim_deliveries", long, at(30)), Some(0), "each name has its own minute");
        assert_eq!(slow.note("audit", Duration::ZERO, at(61)), None, "a fast call is not counted");
        assert_eq!(slow.note("audit", long, at(61)), Some(2));
        assert_eq!(slow.note("audit", long, at(62)), None);
    }

    /// A case-key store that answers at once.
    #[derive(Debug)]
    struct Prompt;

    #[async_trait]
    impl CaseKeyStore for Prompt {
        async fn put(&self, _keys: &[WrappedCaseKey], _at_ms: i64) -> Result<(), StoreError> {
            Ok(())
        }
        async fn get(&self, _ids: &[String]) -> Result<Vec<WrappedCaseKey>, StoreError> {
            Ok(Vec::new())
        }
        async fn destroy(&self, _ids: &[String]) -> Result<u64, StoreError> {
            Ok(0)
        }
        async fn scrub_destroyed(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn slow_calls_are_logged_by_the_operations_name() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt().json().with_writer(logs.clone()).finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let inner: Arc<dyn CaseKeyStore> = Arc::new(Prompt);
        // Every call is slow past a threshold of zero.
        let store = Deadlined { inner, limit: Duration::from_secs(5), slow: SlowOperations::new(Duration::ZERO, SLOW_LOG_INTERVAL) };
        for _ in 0..3 {
            store.get(&[]).await.unwrap();
        }
        store.put(&[], 0).await.unwrap();
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let operations: Vec<String> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| event["fields"]["message"] == "slow database operation" && event["level"] == "WARN")
            .map(|event| event["fields"]["operation"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(operations, ["case_keys.get", "case_keys.put"], "{text}");
    }

    use crate::store::case_keys::SqliteCaseKeys;

    /// A destruction is answered once its deletion commits. The wipe of the
    /// write-ahead log that follows waits for readers, under a deadline of
    /// its own: inside the destruction's, it once turned a committed
    /// destruction into a 503.
    #[tokio::test]
    async fn a_committed_destruction_is_not_failed_by_a_slow_wipe_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case-keys.db").display().to_string();
        let sqlite = Arc::new(SqliteCaseKeys::open(&path, 2).await.unwrap());
        let store = Deadlined::<dyn CaseKeyStore>::new(Arc::clone(&sqlite) as Arc<dyn CaseKeyStore>, Duration::from_millis(800));
        let key = WrappedCaseKey { id: "ck-1".to_owned(), wrapped: vec![7; 60] };
        store.put(std::slice::from_ref(&key), 0).await.unwrap();

        // A reader in the middle of a transaction holds the log.
        let mut reader = sqlite.pool().acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM case_keys").fetch_one(&mut *reader).await.unwrap();
        assert_eq!(held, 1);

        assert_eq!(store.destroy(&["ck-1".to_owned()]).await.unwrap(), 1);
        assert!(store.get(&["ck-1".to_owned()]).await.unwrap().is_empty());
        // The wipe waits for the reader past its deadline; released, the next one empties the log.
        assert!(matches!(store.scrub_destroyed().await, Err(StoreError::Unavailable(_))));
        sqlx::query("ROLLBACK").execute(&mut *reader).await.unwrap();
        drop(reader);
        store.scrub_destroyed().await.unwrap();
        let wal = std::fs::metadata(format!("{path}-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the log still holds pages");
    }
}
