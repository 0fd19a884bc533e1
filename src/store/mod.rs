//! Durable storage: one [`Store`] port in the gateway's terms, implemented for
//! SQLite (embedded default) and PostgreSQL (production, several replicas).
//!
//! Every write goes through the [`writer::Writer`], which commits waiting
//! writes together (group commit) and places their audit entries in the hash
//! chain in the same transaction: a referral is never stored unaudited.

pub mod case_keys;
mod deadline;
mod records;
mod sql;
mod transitions;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::{AuditRecord, ChainBreak, ChainVerifier};
use crate::config::{sqlite_path, DatabaseConfig};
use crate::domain::lifecycle::InboxState;
use crate::domain::priority::DeadlineKind;

pub use records::*;
pub use sql::{PostgresStore, SqliteStore};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
                StoreError::Unavailable(error.to_string())
            }
            // A connection cut mid-answer surfaces as a protocol error ("unexpected end of file").
            sqlx::Error::Protocol(_) => StoreError::Unavailable(error.to_string()),
            sqlx::Error::Database(database) if unreachable(database.as_ref()) => StoreError::Unavailable(error.to_string()),
            _ => StoreError::Database(error.to_string()),
        }
    }
}

/// Whether a database error says the database cannot be reached or cannot
/// serve now (rather than that the statement is wrong): a client may try
/// again later. The backend is told by the error's type, not by the code's
/// shape: many PostgreSQL SQLSTATEs are digits only (`08006`, `53100`).
fn unreachable(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else { return false };
    if error.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        sqlite_code_unreachable(&code)
    } else {
        postgres_code_unreachable(&code)
    }
}

/// SQLite result codes (sqlx gives the extended code; its low byte is the
/// primary one): BUSY (5) and LOCKED (6) past the busy timeout, READONLY
/// (8), IOERR (10), FULL (13), CANTOPEN (14).
fn sqlite_code_unreachable(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
}

/// PostgreSQL SQLSTATEs: 08 connection exception; 53 insufficient
/// resources (too many connections, disk full, out of memory); 57P01-57P05
/// the server is shutting down, starting up or dropped the session; 58
/// system error.
fn postgres_code_unreachable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code.starts_with("58")
}

#[cfg(test)]
mod unreachable_tests {
    use super::*;

    #[test]
    fn postgres_codes_made_of_digits_are_read_as_sqlstates() {
        for code in ["08000", "08006", "53100", "53200", "53300", "57P01", "57P03", "58030"] {
            assert!(postgres_code_unreachable(code), "{code}");
        }
        for code in ["21000", "23505", "42P01", "57014", "40001"] {
            assert!(!postgres_code_unreachable(code), "{code}");
        }
    }

    #[test]
    fn sqlite_primary_codes_are_read_from_extended_ones() {
        for code in ["5", "6", "8", "10", "13", "14", "261", "517", "3850"] {
            assert!(sqlite_code_unreachable(code), "{code}");
        }
        for code in ["1", "19", "2067", "787"] {
            assert!(!sqlite_code_unreachable(code), "{code}");
        }
    }
}

/// The referrals sent from here, as the sending gateway keeps them: records, timelines, payloads, retention.
#[async_trait]
pub trait ReferralStore: Send + Sync {
    async fn referral(&self, id: &str) -> Result<Option<StoredReferral>, StoreError>;

    async fn referral_by_key(&self, sender_org: &str, key: &str) -> Result<Option<StoredReferral>, StoreError>;

    async fn timeline(&self, referral_id: &str) -> Result<Vec<TimelineEntry>, StoreError>;

    async fn sealed_payload(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError>;

    /// A referral's payload and its onward limits (sealed under the
    /// payload's case key, if it has any still), read together: a cut
    /// replaces both at once.
    async fn sealed_payload_and_onward(&self, referral_id: &str) -> Result<Option<(SealedPayload, Option<Vec<u8>>)>, StoreError>;

    /// Every referral about the subject whose keyed reference is
    /// `subject_key`, allowed or denied, oldest first; nothing of any other subject.
    async fn subject_referrals(&self, subject_key: &str) -> Result<Vec<SubjectReferral>, StoreError>;

    /// The retention deadline of a referral sent from here, if it has one.
    async fn referral_retention(&self, referral_id: &str) -> Result<Option<StoredRetention>, StoreError>;

    /// Up to `limit` referrals sent from here past their retention deadline
    /// at `now_ms` and not erased yet (by the sweep, or by a consent
    /// withdrawal), earliest deadline first.
    async fn expired_referrals(&self, now_ms: i64, limit: i64) -> Result<Vec<ExpiredReferral>, StoreError>;

    /// Up to `limit` decisions' facts made from `window.0` to `window.1`
    /// (both included), in the order they were made, after `after` (the last one
    /// of the page before: time and referral id).
    async fn decision_facts_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<DecisionFactsAtRest>, StoreError>;

    /// Up to `limit` decisions' facts made before `before_ms`, oldest first:
    /// past the replay window, to forget.
    async fn decision_facts_before(&self, before_ms: i64, limit: i64) -> Result<Vec<DecisionFactsAtRest>, StoreError>;

    /// The facts kept of one referral's decision, if any.
    async fn decision_facts_of(&self, referral_id: &str) -> Result<Option<DecisionFactsAtRest>, StoreError>;

    /// Deletes the facts of these referrals; answers how many were held.
    async fn forget_decision_facts(&self, referral_ids: &[String]) -> Result<u64, StoreError>;

    /// Up to `limit` referrals accepted from `window.0` (included) to
    /// `window.1` (excluded), in the order they were accepted, after `after`
    /// (the last of the page before: time and id).
    async fn referrals_accepted_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<AcceptedReferral>, StoreError>;

    /// Up to `limit` referrals of `sender_org` that `filter` takes in, in
    /// the order they were recorded, after `after` (the `listed_seq` of the
    /// last of the page before). Numbers are given as referrals are stored,
    /// under the lock every write takes: one recorded later never comes
    /// before one listed already, so a walk neither skips nor repeats one.
    async fn referrals_of(&self, sender_org: &str, filter: &ReferralFilter, after: Option<i64>, limit: i64) -> Result<Vec<ListedReferral>, StoreError>;

    /// For each cutoff, how many referrals it takes in.
    async fn count_awaiting(&self, cutoffs: &[AwaitingCutoff]) -> Result<Vec<i64>, StoreError>;

    /// Up to `limit` referrals that some cutoff takes in and that were not
    /// marked as logged for that cutoff's deadline, oldest first.
    async fn overdue_unlogged(&self, cutoffs: &[AwaitingCutoff], limit: i64) -> Result<Vec<OverdueReferral>, StoreError>;

    /// Marks a referral as logged overdue for `deadline`; false if it was
    /// marked so already (by another replica, say), when it is not to be logged again.
    async fn mark_overdue_logged(&self, referral_id: &str, deadline: DeadlineKind) -> Result<bool, StoreError>;

    /// The answer released first for `period` (a month or quarter, as `2026-11`), if any.
    async fn released_statistics(&self, period: &str) -> Result<Option<String>, StoreError>;

    /// Keeps `answer` as `period`'s release unless one is kept already, and
    /// returns the one kept: of two replicas releasing at once, both answer
    /// with the first stored.
    async fn keep_released_statistics(&self, period: &str, answer: &str, released_ms: i64) -> Result<String, StoreError>;

    /// Up to `limit` timeline steps, made before `window.1`, of the referrals
    /// with a step from `window.0` to `window.1` (excluded): each referral's
    /// steps up to the window's end, by referral then step, after `after`
    /// (the last of the page before: referral id and step).
    async fn steps_of_referrals_active_between(&self, window: (i64, i64), after: Option<(String, i64)>, limit: i64) -> Result<Vec<PeriodStep>, StoreError>;
}

/// Every packet this gateway sends, queued until a peer takes it.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Claims up to `limit` pending outbox entries due at `now_ms` and moves
    /// them `lease_ms` ahead, so that no other worker takes them meanwhile
    /// and a crashed worker's entries fall due again. On PostgreSQL rows
    /// locked by another replica's claim are skipped.
    async fn claim_deliveries(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Schedules the next attempt of a pending entry after a failed one;
    /// `forget_packet` drops the kept packet, to seal a new one next time.
    async fn retry_later(&self, referral_id: &str, next_attempt_ms: i64, error_code: &str, forget_packet: bool) -> Result<(), StoreError>;

    async fn delivery(&self, referral_id: &str) -> Result<Option<DeliveryRecord>, StoreError>;

    /// The outbox entry that sent `packet_id`.
    async fn sent_packet(&self, packet_id: &str) -> Result<Option<SentPacket>, StoreError>;

    async fn outbox_depth(&self) -> Result<i64, StoreError>;

    /// Every outbox entry counted by partner country, packet type, state
    /// and whether an attempt already failed (the DPO's deliveries page).
    async fn delivery_tallies(&self) -> Result<Vec<DeliveryTally>, StoreError>;

    /// By partner country: referrals withdrawn whole after their packet was
    /// made whose erasure the partner's gateway has not confirmed, and how
    /// many of them were withdrawn at least `deadline_ms` before `now_ms`.
    async fn erasures_awaited(&self, deadline_ms: i64, now_ms: i64) -> Result<Vec<ErasuresAwaited>, StoreError>;
}

/// Packets received from peer gateways, what became of them, and what their senders withdrew.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Received packets still to be processed, oldest first.
    async fn unprocessed_inbox(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError>;

    /// How much of the referral packet `packet_id` `issuer` withdrew (see
    /// [`InboxMove::ApplyWithdrawal`]): whole, some categories (all those named by
    /// its partial withdrawals), or nothing.
    async fn withdrawn_part(&self, packet_id: &str, issuer: &str) -> Result<Option<WithdrawnPart>, StoreError>;

    /// The partial withdrawals sealed end to end that `issuer` sent for its
    /// referral packet `packet_id`, oldest first; none once it is erased.
    async fn sealed_withdrawals(&self, packet_id: &str, issuer: &str) -> Result<Vec<SealedWithdrawal>, StoreError>;

    async fn inbox_item(&self, packet_id: &str) -> Result<Option<InboxItem>, StoreError>;

    /// The copies its recipient passed on of the case `packet_id` held
    /// here, in the order they were made.
    async fn onward_copies(&self, packet_id: &str) -> Result<Vec<InboxItem>, StoreError>;

    /// Claims up to `limit` cases due for a push to their recipient's
    /// webhook, moving them `lease_ms` ahead (as [`Store::claim_deliveries`]).
    async fn claim_pushes(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError>;

    async fn retry_push(&self, packet_id: &str, next_push_ms: i64, error_code: &str) -> Result<(), StoreError>;

    /// Packets for `recipient_org` in one of `states`, in the order they
    /// became visible, after the cursor (a `visible_seq`).
    async fn inbox_for(&self, recipient_org: &str, states: &[InboxState], after: Option<i64>, limit: i64) -> Result<Vec<InboxItem>, StoreError>;

    /// Up to `limit` of an organisation's visible cases in `states`, in the
    /// order its inbox puts them (see [`QueuePlace`]), after `after`.
    async fn inbox_queue(&self, recipient_org: &str, states: &[InboxState], after: Option<QueuePlace>, limit: i64) -> Result<Vec<InboxItem>, StoreError>;

    /// The digest and receipt stored for a received packet id, if any.
    async fn inbox_receipt(&self, packet_id: &str) -> Result<Option<InboxReceipt>, StoreError>;

    /// Up to `limit` live received cases (`available`, `acknowledged`,
    /// `pushing`) past their retention deadline at `now_ms`, earliest first.
    async fn expired_received(&self, now_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError>;

    /// The packet taken as exactly these bytes (by their digest) from `issuer`, if any.
    async fn receipt_for_bytes(&self, packet_sha256: &str, issuer: &str) -> Result<Option<InboxReceipt>, StoreError>;

    /// Up to `limit` received packets refused at screening from `window.0`
    /// (included) to `window.1` (excluded), in the order they were refused,
    /// after `after` (the last of the page before: time and packet id).
    async fn refused_between(&self, window: (i64, i64), after: Option<(i64, String)>, limit: i64) -> Result<Vec<RefusedPacket>, StoreError>;
}

/// The DPO's policy versions.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Every policy version, oldest first, in any state.
    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError>;

    /// Every sign-off, by version number, then in the order given.
    async fn policy_sign_offs(&self) -> Result<Vec<PolicySignOffRecord>, StoreError>;

    /// Changes whenever a version is stored or signed off: a replica reads
    /// the versions again only when it did.
    async fn policy_mark(&self) -> Result<PolicyMark, StoreError>;
}

/// The hash-chained audit log, read back.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Audit entries matching `filter`, in chain order.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// The chain head as last written: sequence number and hash.
    async fn audit_head(&self) -> Result<(i64, String), StoreError>;
}

/// Emergency overrides (the sending gateway's): what was asked, for the
/// DPOs who decide and for the referral's view.
#[async_trait]
pub trait OverrideStore: Send + Sync {
    async fn emergency_override(&self, referral_id: &str) -> Result<Option<StoredOverride>, StoreError>;

    /// Up to `limit` overrides a DPO may still decide (their referral awaits
    /// them), the window closing first first.
    async fn awaiting_overrides(&self, limit: i64) -> Result<Vec<StoredOverride>, StoreError>;

    /// Up to `limit` referral ids whose override awaits approval past its window at `now_ms`.
    async fn lapsed_overrides(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError>;
}

/// Status callbacks (the sending gateway's): the events queued for the
/// organisations registered, as the store records each timeline entry.
#[async_trait]
pub trait CallbackStore: Send + Sync {
    /// Registers these organisations (or updates their retry), so that their
    /// events are queued from now on; others stay registered (another
    /// replica may serve them), and nothing queued is dropped.
    async fn register_callbacks(&self, subscriptions: &[CallbackSubscription]) -> Result<(), StoreError>;

    /// Claims up to `limit` pending events of `orgs` due at `now_ms` for `lease_ms`,
    /// each the earliest pending one of its referral (a referral's events go
    /// in timeline order, one at a time).
    async fn claim_callbacks(&self, orgs: &[crate::domain::OrgId], now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<DueCallback>, StoreError>;

    /// The organisation took the event: it is not kept.
    async fn callback_delivered(&self, id: &str) -> Result<(), StoreError>;

    /// The attempt failed: the event is due again at `next_ms`.
    async fn retry_callback(&self, id: &str, next_ms: i64, error_code: &str) -> Result<(), StoreError>;

    /// The attempt failed at or after the event's deadline: it is given up
    /// (`failed`), and the referral's next event may go.
    async fn give_up_callback(&self, id: &str, error_code: &str) -> Result<(), StoreError>;

    async fn undelivered_callbacks(&self, referral_id: &str) -> Result<UndeliveredCallbacks, StoreError>;

    /// The events not delivered, per organisation and state (only counts above zero).
    async fn callback_counts(&self) -> Result<Vec<CallbackCount>, StoreError>;
}

/// Matching without disclosure (the responding gateway's, issue 22 §2):
/// the searches a query may meet, the handles an answer gave, and when each
/// member gateway asked.
#[async_trait]
pub trait MatchStore: Send + Sync {
    /// Every family-tracing request sent from here still searching and not
    /// erased, with its sealed entry, in id order.
    async fn match_candidates(&self) -> Result<Vec<MatchCandidate>, StoreError>;

    /// Counts a query of `gateway` at `at_ms` unless it already asked
    /// `limit` times since `since_ms`: false (nothing recorded) then.
    async fn count_match_query(&self, gateway: &str, since_ms: i64, at_ms: i64, limit: i64) -> Result<bool, StoreError>;

    /// Keeps the handles an answer gave; forgets those expired by `now_ms`.
    async fn keep_match_handles(&self, handles: &[MatchHandle], now_ms: i64) -> Result<(), StoreError>;

    /// One search's entry, if it is still a candidate (as [`MatchStore::match_candidates`]).
    async fn match_candidate(&self, referral_id: &str) -> Result<Option<MatchCandidate>, StoreError>;

    /// The people a search's own queries are made of, sealed, if it keeps a match entry.
    async fn match_people(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError>;

    /// The handle `handle` given to `gateway`, if still kept at `now_ms`.
    async fn match_handle(&self, handle: &str, gateway: &str, now_ms: i64) -> Result<Option<MatchHandle>, StoreError>;
}

/// The whole store: every aggregate, and the group commit that writes them together.
#[async_trait]
pub trait Store: ReferralStore + OutboxStore + InboxStore + PolicyStore + AuditStore + CallbackStore + OverrideStore + MatchStore + Send + Sync + 'static {
    /// Writes a batch in one transaction; results in the batch's order.
    async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Written>, StoreError>;

    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes the deliveries, pushes and callbacks still claimed by an earlier process
    /// of this store's node (another instance than its own) due at
    /// `now_ms`: that process is gone, or the node would not have started
    /// another. Claims of other nodes keep their lease. Answers how many.
    async fn release_earlier_claims(&self, now_ms: i64) -> Result<u64, StoreError>;
}

/// Who claims deliveries and pushes through a store: the node it runs on,
/// and this process among those the node has run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub node: String,
    pub instance: String,
}

impl Claimant {
    /// This process on `node`, under an instance id drawn at random.
    pub fn on_node(node: &str) -> Self {
        use ring::rand::SecureRandom;
        let mut random = [0u8; 12];
        // The id only tells processes apart; should the generator fail, the
        // process id still does on one node.
        let instance = match ring::rand::SystemRandom::new().fill(&mut random) {
            Ok(()) => crate::hex::encode(&random),
            Err(_) => format!("pid-{}", std::process::id()),
        };
        Self { node: node.to_owned(), instance }
    }
}

/// How a store connects: its pool and the claims it makes.
#[derive(Debug, Clone)]
pub struct Connecting {
    pub max_connections: u32,
    pub connect_timeout: std::time::Duration,
    pub acquire_timeout: std::time::Duration,
    /// The gateway's deadline on a store call; PostgreSQL's own statement
    /// timeout is set a little above it.
    pub statement_timeout: std::time::Duration,
    pub claimant: Claimant,
}

impl Connecting {
    pub fn from_config(config: &DatabaseConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            connect_timeout: config.connect_timeout(),
            acquire_timeout: config.acquire_timeout(),
            statement_timeout: config.statement_timeout(),
            claimant: Claimant::on_node(&config.node_name()),
        }
    }
}

/// Opens (creating and migrating if needed) the store the configuration names.
/// Every call on it is bounded by `statement_timeout` (see [`deadline`]).
pub async fn open(config: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let connecting = Connecting::from_config(config);
    let store: Arc<dyn Store> = if sqlite_path(&config.url).is_some() {
        Arc::new(SqliteStore::open(&config.url, &connecting).await?)
    } else {
        Arc::new(PostgresStore::open(&config.url, config.schema.as_deref(), &connecting).await?)
    };
    Ok(Arc::new(deadline::Deadlined::new(store, config.statement_timeout())))
}

/// An intact audit chain: how many entries, and the last hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    pub entries: i64,
    pub head: String,
}

/// Where the stored chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenChain {
    #[error("{0}")]
    Entry(#[from] ChainBreak),
    #[error("the chain ends at entry {entries} but the recorded head is entry {head_seq} (entries at the end removed)")]
    Truncated { entries: i64, head_seq: i64 },
    #[error("the last entry ({entries}) does not match the recorded head hash")]
    HeadMismatch { entries: i64 },
}

/// Recomputes the whole audit chain, page by page, up to the head recorded
/// when verification began: a gateway may go on appending meanwhile.
pub async fn verify_audit_chain(store: &dyn Store) -> Result<Result<VerifiedChain, BrokenChain>, StoreError> {
    const PAGE: i64 = 1000;
    let (head_seq, head_hash) = store.audit_head().await?;
    let mut verifier = ChainVerifier::default();
    let mut cursor = None;
    'pages: loop {
        let page = store.audit(&AuditFilter { after_seq: cursor, limit: PAGE, ..AuditFilter::default() }).await?;
        for record in &page {
            if record.seq > head_seq {
                break 'pages;
            }
            if let Err(broken) = verifier.check(record) {
                return Ok(Err(broken.into()));
            }
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => cursor = Some(last.seq),
            _ => break,
        }
    }
    let entries = verifier.verified();
    if entries != head_seq {
        return Ok(Err(BrokenChain::Truncated { entries, head_seq }));
    }
    if head_hash != verifier.head() {
        return Ok(Err(BrokenChain::HeadMismatch { entries }));
    }
    Ok(Ok(VerifiedChain { entries, head: verifier.head().to_owned() }))
}
