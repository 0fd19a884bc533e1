//! The SQL of the store, written once for both backends: every statement is
//! portable (`$n` placeholders, `ON CONFLICT`, `RETURNING`, integer
//! milliseconds, text JSON). The backends differ only in how they connect
//! and in a small [`Dialect`]: how a transaction begins and takes the audit
//! chain head (PostgreSQL locks the head row, so that replicas sharing one
//! database append in turn), and how a claim skips rows another holds.
//!
//! One file per aggregate (`referrals`, `outbox`, `inbox`, `audit`), each a
//! macro that `sql_store!` expands for both stores; this file holds the
//! connection, the migrations, the group commit (`write_batch`) and what
//! several aggregates share.

mod audit;
mod callbacks;
mod inbox;
mod matching;
mod outbox;
mod overrides;
mod referrals;

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row};

use super::{
    AuditFilter, ClaimedDelivery, DeliveryRecord, InboxChange, InboxItem, InboxReceipt, NewInboxEntry, NewOutboxEntry, NewReferral,
    NewReply, NewWithdrawal, PolicyMark, PolicySignOffRecord, PolicyVersionRecord, SentNarrowing, Tombstone, WithdrawnPart, SealedPayload, SentPacket, Settlement, Store, StoreError, StoredPacket, StoredReferral, SubjectReferral, TimelineEntry, Write,
    Written, ExpiredReferral, DecisionFactsAtRest, AcceptedReferral, PeriodStep, RefusedPacket, SealedFacts, RetentionErasure, StoredRetention, SealedWithdrawal, Claimant, Connecting, InboxMove, WithdrawalEffect, ReceivedNarrowing, NewOnwardCopy, OnwardCopyOf,
    AuditStore, OverrideStore, MatchStore, MatchCandidate, MatchHandle, SealedMatchEntry, NewOverride, StoredOverride, CallbackStore, CallbackSubscription, CallbackCount, DueCallback, UndeliveredCallbacks, InboxStore, OutboxStore, PolicyStore, ReferralStore, DeliveryTally, ErasuresAwaited, AwaitingCutoff, OverdueReferral, QueuePlace, ReferralFilter, ListedReferral,
};
use super::transitions::{list, moves};
use crate::domain::lifecycle::{CallbackState, InboxEvent, InboxState, OutboxEvent, OutboxState, ReferralEvent, ReferralStatus};
use crate::domain::emergency_override::OverrideState;
use crate::domain::priority::{DeadlineKind, Priority};
use crate::domain::ParseError;
use crate::audit::{AuditEvent, AuditRecord};
use crate::crypto::packet::PacketType;
use crate::config::sqlite_path;

/// The columns of `decision_facts`, in the order `facts_from_row` and the insert use.
const FACTS_COLUMNS: &str = "referral_id, decided_ms, sealed, key_id, key_for_facts_only";
const REFERRAL_COLUMNS: &str = "id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, \
     destination_country, purpose, outcome, policy_version, decision, consent, policy_number, status, created_ms, handover, priority, answers_packet";

const INBOX_COLUMNS: &str = "packet_id, issuer, packet_type, recipient_org, sealed, key_id, state, reasons, received_ms, expires_ms, push_attempts, \
     visible_seq, narrowed, narrowing_confirmed_ms, retention_until_ms, retention_days_after_closure, priority, queue_rank, due_ms, \
     onward_of, onward_number, onward_kind, onward_referred_by, answers_referral";

/// An override with its referral's routing facts.
const OVERRIDE_COLUMNS: &str = "o.referral_id, o.reason, o.justification_code, o.overridden, o.requested_org, o.requested_by, o.requested_ms, \
     o.approve_by_ms, o.state, o.decided_by, o.decided_ms, o.standing_rule, r.purpose, r.destination_org, r.destination_country, r.priority";
const OVERRIDE_FROM: &str = "emergency_overrides o JOIN referrals r ON r.id = o.referral_id";

/// The columns of `callbacks` a claim reads.
const CALLBACK_COLUMNS: &str = "id, referral_id, org, position, event, at_ms, reasons, attempts, deadline_ms";
/// The columns of `callbacks` a queued event is inserted with.
const CALLBACK_INSERTED: &str = "id, referral_id, org, position, event, at_ms, reasons, state, next_ms, deadline_ms";

/// Queues the callback of the latest timeline entry of referral `$1` (event
/// `$2` at `$3` with reasons `$4`, state `$5`) if its organisation is
/// registered. Its position is the number of entries the referral has;
/// `uncounted` is `" + 1"` when the entry is inserted by the same statement,
/// which does not see it.
fn queue_callback_sql(uncounted: &str) -> String {
    format!(
        "INSERT INTO callbacks ({CALLBACK_INSERTED}) \
         SELECT id || '.' || CAST(position AS TEXT), id, org, position, $2, $3, $4, $5, $3, $3 + retry_ms FROM \
         (SELECT r.id AS id, r.sender_org AS org, s.retry_ms AS retry_ms, \
         (SELECT COUNT(*) FROM referral_events e WHERE e.referral_id = r.id){uncounted} AS position \
         FROM referrals r JOIN callback_subscriptions s ON s.org = r.sender_org WHERE r.id = $1) queued"
    )
}

/// How a received case is erased (see `erase_received`).
struct ReceivedErasure<'a> {
    /// Withdrawn whole, or past its retention: which states it erases, and
    /// whether a case already pushed to a webhook is pushed a notice of it.
    event: InboxEvent,
    notice_until_ms: i64,
    /// Reasons recorded for the erasure; `None` keeps the ones it has.
    reasons: Option<&'a str>,
}

/// A state column's value in its type; an unknown one is a decoding error.
fn parsed<S: FromStr<Err = ParseError>>(text: String) -> Result<S, sqlx::Error> {
    text.parse().map_err(|error: ParseError| sqlx::Error::Decode(Box::new(error)))
}

/// A column holding a JSON array of strings (reason codes, category names);
/// empty when NULL. `what` names it in the error.
fn string_list(text: Option<String>, what: &str) -> Result<Vec<String>, StoreError> {
    match text {
        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(format!("{what} are not a JSON array of strings"))),
        None => Ok(Vec::new()),
    }
}

/// A retention deadline from its two columns (`None` without a date).
fn retention_of(until_ms: Option<i64>, days_after_closure: Option<i64>) -> Option<StoredRetention> {
    until_ms.map(|until_ms| StoredRetention { until_ms, days_after_closure })
}

const AUDIT_COLUMNS: &str =
    "seq, at_ms, actor_org, actor_subject, action, referral_id, subject_key, policy_version, outcome, reasons, \
     counterpart_org, counterpart_subject, prev_hash, hash";

/// The retention sweep's read of the referrals sent from here past their
/// deadline (`$1`) and still to erase, in deadline order (`$2` of them at
/// most). A referral whose consent was withdrawn whole was erased then:
/// nothing is left for the deadline. The `WHERE` implies migration 0029's
/// partial index word for word; on SQLite, which names it, a statement
/// that no longer did would fail to prepare (tests/api/store/schema.rs
/// checks both backends take it).
fn expired_referrals_sql(dialect: &Dialect) -> String {
    let withdrawn: Vec<ReferralStatus> = ReferralStatus::ALL.iter().copied().filter(|s| s.is_withdrawn_whole()).collect();
    format!(
        "SELECT r.id, o.key_id FROM referrals r{} LEFT JOIN outbox o ON o.id = r.id AND o.packet_type = 'referral' \
         WHERE r.retention_until_ms <= $1 AND r.erased_ms IS NULL AND r.status NOT IN {} \
         ORDER BY r.retention_until_ms, r.id LIMIT $2",
        if dialect.names_sweep_indexes { " INDEXED BY referrals_to_sweep" } else { "" },
        list(&withdrawn)
    )
}

/// The retention sweep's read of the live cases received here past their
/// deadline (`$1`), in deadline order (`$2` of them at most); as
/// [`expired_referrals_sql`], on migration 0029's partial index.
fn expired_received_sql(dialect: &Dialect) -> String {
    format!(
        "SELECT {INBOX_COLUMNS} FROM inbox{} WHERE state IN {} AND retention_until_ms <= $1 \
         ORDER BY retention_until_ms, packet_id LIMIT $2",
        if dialect.names_sweep_indexes { " INDEXED BY inbox_to_sweep" } else { "" },
        list(&InboxState::LIVE)
    )
}

/// The hour of `audit_hours` an entry timed `at_ms` counts in: as migration
/// 0028's trigger computes it (SQL's integer division truncates, as Rust's).
fn audit_hour(at_ms: i64) -> i64 {
    at_ms / 3_600_000
}

/// The embedded store: one SQLite file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    claimant: Claimant,
}

/// The production store: PostgreSQL, optionally in its own schema.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    claimant: Claimant,
}

impl SqliteStore {
    pub async fn open(url: &str, connecting: &Connecting) -> Result<Self, StoreError> {
        let path = sqlite_path(url).ok_or_else(|| StoreError::Unavailable("not an sqlite URL".to_owned()))?;
        // Checkpoints every 10,000 WAL pages (about 40 MiB), not SQLite's
        // 1,000: a commit writes every page it touched, whole, and a page
        // that many commits touch between two checkpoints is written back
        // once. At 1,000, checkpoints were half of the pages written per
        // referral (`performance.md`, "Flat as data grows"). The price: the
        // commit that checkpoints waits for it, so accepting's p99 at a
        // steady 200/s went from 7 to 14 ms ("Lever: fewer checkpoints on
        // SQLite"; issue 3 had rejected this at 45 ms). Older versions
        // of pages stay in the WAL longer, as they stay in the file's free
        // pages; what they hold of a case is sealed under its case key, so
        // destroying the key erases them too (`data-protection.md`).
        let options = sqlite_file(path)?.pragma("wal_autocheckpoint", "10000");
        migrate_sqlite(&options, &sqlx::migrate!("schemas/db/sqlite")).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(connecting.max_connections)
            .acquire_timeout(connecting.acquire_timeout)
            .connect_with(options.foreign_keys(true))
            .await?;
        Ok(Self { pool, claimant: connecting.claimant.clone() })
    }

    /// The pool, for tests and maintenance commands that must reach below the port.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Runs `migrator` over a connection of its own with foreign keys off, as
/// SQLite's procedure for rebuilding a table requires (a migration that
/// adds a constraint drops and recreates tables others refer to), then,
/// if any ran, checks every foreign key: a migration that broke one fails
/// the start.
async fn migrate_sqlite(options: &SqliteConnectOptions, migrator: &sqlx::migrate::Migrator) -> Result<(), StoreError> {
    let mut connection = sqlx::SqliteConnection::connect_with(&options.clone().foreign_keys(false)).await?;
    const APPLIED: &str = "SELECT COUNT(*) FROM _sqlx_migrations";
    // No table yet on a new database: nothing applied.
    let before: i64 = sqlx::query_scalar(APPLIED).fetch_one(&mut connection).await.unwrap_or(0);
    migrator.run(&mut connection).await.map_err(|e| StoreError::Migration(e.to_string()))?;
    // Checked only when a migration ran: the check reads every referencing table whole.
    let ran = sqlx::query_scalar::<_, i64>(APPLIED).fetch_one(&mut connection).await? > before;
    let broken = if ran { sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut connection).await? } else { Vec::new() };
    connection.close().await?;
    if !broken.is_empty() {
        return Err(StoreError::Migration(format!("{} rows break a foreign key after migrating", broken.len())));
    }
    Ok(())
}

/// A SQLite file in WAL mode, created (with its folder) if missing, every
/// commit flushed: FULL, so that what was answered as stored survives a
/// power cut, not only a crash.
pub(super) fn sqlite_file(path: &str) -> Result<SqliteConnectOptions, StoreError> {
    if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable(format!("{}: {e}", parent.display())))?;
    }
    // sqlx's statement logging off: its slow-statement warning printed the
    // whole SQL text; the deadline wrapper names slow operations instead.
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .disable_statement_logging())
}

impl PostgresStore {
    pub async fn open(url: &str, schema: Option<&str>, connecting: &Connecting) -> Result<Self, StoreError> {
        let mut options = postgres_options(url, connecting.statement_timeout)?;
        if let Some(schema) = schema {
            // `schema` is checked by the configuration: lower-case letters, digits, `_`.
            create_schema(&options, schema, connecting.connect_timeout).await?;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(connecting.max_connections)
            .acquire_timeout(connecting.acquire_timeout)
            .connect_with(options)
            .await?;
        migrate_postgres(&pool, &sqlx::migrate!("schemas/db/postgres")).await?;
        Ok(Self { pool, claimant: connecting.claimant.clone() })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Longest a session may sit inside a transaction without a statement
/// before PostgreSQL ends it. The gateway's transactions run statement
/// after statement; only a client gone quiet (a call cut off by its
/// deadline, a black-holed network) leaves one idle, and its locks (the
/// audit chain's head row, claimed outbox rows) must not outlive it.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How much longer than the gateway's own deadline on a store call
/// (`database.statement_timeout_millis`) PostgreSQL lets a statement run:
/// the gateway gives up first and answers; the server then stops the
/// statement the gateway no longer waits for, and its locks go with it.
const SERVER_STATEMENT_MARGIN: Duration = Duration::from_secs(1);

/// Connect options for every PostgreSQL pool and connection of the gateway
/// (the store and the case-key store): sqlx's statement logging off (at
/// `warn` it printed every slow statement's whole text; the deadline
/// wrapper names slow operations instead, see `deadline`); only warnings
/// and errors from the server, not the NOTICEs `CREATE ... IF NOT EXISTS`
/// raises at every start; and the server-side timeouts above.
pub(super) fn postgres_options(url: &str, statement_deadline: Duration) -> Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let statement_timeout = statement_deadline.saturating_add(SERVER_STATEMENT_MARGIN);
    Ok(options
        .options([
            ("client_min_messages", "warning".to_owned()),
            ("idle_in_transaction_session_timeout", format!("{}ms", IDLE_IN_TRANSACTION_TIMEOUT.as_millis())),
            ("statement_timeout", format!("{}ms", statement_timeout.as_millis())),
        ])
        .disable_statement_logging())
}

/// Runs `migrator` on one connection of `pool` without the server-side
/// statement timeout: a migration (an index built on a large table, say)
/// may take longer than any statement of the running gateway, and waits
/// while another replica holds the migration lock.
pub(super) async fn migrate_postgres(pool: &PgPool, migrator: &sqlx::migrate::Migrator) -> Result<(), StoreError> {
    let mut connection = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0").execute(&mut *connection).await?;
    migrator.run(&mut *connection).await.map_err(|e| StoreError::Migration(e.to_string()))?;
    // Back to the value the connection was opened with.
    sqlx::query("RESET statement_timeout").execute(&mut *connection).await?;
    Ok(())
}

/// Creates `schema` if missing, over a connection of its own that must be
/// made within `connect_timeout` (a black-holed network would hold it forever).
pub(super) async fn create_schema(options: &PgConnectOptions, schema: &str, connect_timeout: Duration) -> Result<(), StoreError> {
    let create = async {
        let mut connection = sqlx::PgConnection::connect_with(options).await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).execute(&mut connection).await?;
        connection.close().await
    };
    match tokio::time::timeout(connect_timeout, create).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(StoreError::Unavailable(format!("no connection to the database within {} ms", connect_timeout.as_millis()))),
    }
}

/// Rows per multi-row INSERT: far below both backends' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 256;

/// Places `event` after `head` in the chain, queues its record, and returns its sequence number.
fn chain(head: &mut (i64, String), event: &AuditEvent, records: &mut Vec<AuditRecord>) -> i64 {
    let record = event.clone().into_record(head.0 + 1, head.1.clone());
    *head = (record.seq, record.hash.clone());
    records.push(record);
    head.0
}

fn audit_reasons(record: &AuditRecord) -> String {
    serde_json::to_string(&record.reasons).unwrap_or_else(|_| "[]".to_owned())
}

// Statements whose text depends on a batch's size (multi-row `VALUES`, `IN`
// lists) are built with `persistent(false)`: cached, every batch size seen
// would keep a compiled statement of its own on every connection (sqlx
// keeps up to 100 per connection; on SQLite a large multi-row insert
// compiles to megabytes), and the gateway's memory would grow with the
// variety of batch sizes. The soak benchmark showed it (`docs/performance.md`).
// Statements of a fixed text stay cached.
macro_rules! sql_store {
    ($store:ident, $row:ty) => {
        referrals::referral_sql!($store, $row);
        outbox::outbox_sql!($store, $row);
        inbox::inbox_sql!($store, $row);
        audit::audit_sql!($store, $row);
        callbacks::callback_sql!($store, $row);
        overrides::override_sql!($store, $row);
        matching::matching_sql!($store, $row);

        impl $store {
            /// The retention sweep's two reads, as this store runs them: for the
            /// test of their plans.
            #[doc(hidden)]
            pub fn sweep_statements() -> [String; 2] {
                [expired_referrals_sql(&Self::DIALECT), expired_received_sql(&Self::DIALECT)]
            }

            /// See [`RetentionErasure`]; false when there was nothing left to erase.
            async fn erase_retained(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                erasure: &RetentionErasure,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                match erasure {
                    RetentionErasure::Sent { referral_id } => {
                        let marked = sqlx::query("UPDATE referrals SET erased_ms = $1 WHERE id = $2 AND erased_ms IS NULL")
                            .bind(at_ms)
                            .bind(referral_id)
                            .execute(&mut *connection)
                            .await?
                            .rows_affected();
                        if marked == 0 {
                            return Ok(false);
                        }
                        Self::stop_referral_packet(connection, referral_id, OutboxEvent::Erased).await?;
                        Self::referral_moves(connection, referral_id, ReferralEvent::RetentionExpired, &[], at_ms).await?;
                        Ok(true)
                    }
                    RetentionErasure::Received { packet_id, erasure_pushed, push_until_ms } => {
                        // As a withdrawal erases, and only a live case.
                        let erasure = ReceivedErasure {
                            event: InboxEvent::RetentionPassed { pushed: *erasure_pushed },
                            notice_until_ms: *push_until_ms,
                            reasons: Some(r#"["retention_passed"]"#),
                        };
                        Self::erase_received(connection, packet_id, at_ms, &erasure).await
                    }
                }
            }

            /// Runs a claim statement (`$1` lease end, `$2` now, `$3` limit,
            /// returning the claimed `key`s), then reads the claimed rows.
            #[allow(clippy::too_many_arguments)]
            async fn claim(
                &self,
                claim_sql: &str,
                table: &str,
                key: &str,
                columns: &str,
                now_ms: i64,
                lease_ms: i64,
                limit: i64,
            ) -> Result<Vec<$row>, StoreError> {
                let claimed: Vec<String> = sqlx::query(claim_sql)
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .bind(limit)
                    .bind(&self.claimant.node)
                    .bind(&self.claimant.instance)
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|row| row.try_get(key))
                    .collect::<Result<_, _>>()?;
                if claimed.is_empty() {
                    return Ok(Vec::new());
                }
                let mut query = QueryBuilder::new(format!("SELECT {columns} FROM {table} WHERE {key} IN ("));
                let mut ids = query.separated(", ");
                for id in &claimed {
                    ids.push_bind(id.clone());
                }
                query.push(format!(") ORDER BY {key}"));
                Ok(query.build().persistent(false).fetch_all(&self.pool).await?)
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Written>, StoreError> {
                let mut tx = self.pool.begin_with(Self::DIALECT.begin).await?;
                let row = sqlx::query(Self::DIALECT.head_query).fetch_one(&mut *tx).await?;
                let mut head: (i64, String) = (row.try_get("seq")?, row.try_get("hash")?);
                let referrals: Vec<&NewReferral> = batch
                    .iter()
                    .filter_map(|write| match write {
                        Write::Referral { referral, .. } => Some(referral.as_ref()),
                        _ => None,
                    })
                    .collect();
                let inserted = Self::insert_referrals(&mut tx, &referrals).await?;
                let entries: Vec<&NewInboxEntry> = batch
                    .iter()
                    .filter_map(|write| match write {
                        Write::Inbox { entry, .. } => Some(entry.as_ref()),
                        _ => None,
                    })
                    .collect();
                // A packet id may come twice in one batch: only its first write is new.
                let mut received = Self::insert_inbox(&mut tx, &entries).await?;
                let mut records = Vec::with_capacity(batch.len());
                let mut results = Vec::with_capacity(batch.len());
                for write in batch {
                    let result = match write {
                        Write::Referral { referral, audit } if inserted.contains(&referral.record.id) => {
                            Written::Audited { seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::Referral { .. } => Written::DuplicateKey,
                        Write::Inbox { entry, audit } if received.remove(&entry.packet_id) => {
                            Written::Audited { seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::Inbox { .. } => Written::KnownPacket,
                        Write::Policy { policy, audit } => {
                            let number: i64 = sqlx::query(
                                "INSERT INTO policy_versions (number, version, author_org, author_subject, note, created_ms, files, \
                                 state, effective_from_ms, effective_ms, decided_ms, restores, checks) \
                                 SELECT COALESCE(MAX(number), 0) + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM policy_versions \
                                 RETURNING number",
                            )
                            .bind(&policy.version)
                            .bind(&policy.author_org)
                            .bind(&policy.author_subject)
                            .bind(&policy.note)
                            .bind(policy.created_ms)
                            .bind(&policy.files)
                            .bind(policy.state.as_str())
                            .bind(policy.effective_from_ms)
                            .bind(policy.effective_ms)
                            .bind(policy.effective_ms.map(|_| policy.created_ms))
                            .bind(policy.restores)
                            .bind(&policy.checks)
                            .fetch_one(&mut *tx)
                            .await?
                            .try_get("number")?;
                            Written::PolicyStored { number, seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::PolicyReview { review, audit } => {
                            let sign_off = &review.sign_off;
                            let decided = review.state != crate::domain::signoff::PolicyVersionState::Draft;
                            let moved = sqlx::query(
                                "UPDATE policy_versions SET reviews = reviews + 1, state = $1, effective_ms = $2, decided_ms = $3 \
                                 WHERE number = $4 AND reviews = $5 AND state = $6",
                            )
                            .bind(review.state.as_str())
                            .bind(review.effective_ms)
                            .bind(decided.then_some(sign_off.at_ms))
                            .bind(sign_off.number)
                            .bind(review.seen_reviews)
                            .bind(crate::domain::signoff::PolicyVersionState::Draft.as_str())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            if moved == 1 {
                                sqlx::query(
                                    "INSERT INTO policy_signoffs (number, reviewer_org, reviewer_subject, verdict, at_ms, note) \
                                     VALUES ($1, $2, $3, $4, $5, $6)",
                                )
                                .bind(sign_off.number)
                                .bind(&sign_off.reviewer_org)
                                .bind(&sign_off.reviewer_subject)
                                .bind(sign_off.verdict.as_str())
                                .bind(sign_off.at_ms)
                                .bind(&sign_off.note)
                                .execute(&mut *tx)
                                .await?;
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::ReviewedMeanwhile
                            }
                        }
                        Write::Reply { reply, audit, brings_forward, answers } => {
                            Self::queue_reply(&mut tx, reply).await?;
                            if let Some(packet_id) = answers {
                                Self::queue_answered(&mut tx, packet_id).await?;
                            }
                            if let Some((packet_id, until_ms)) = brings_forward {
                                Self::bring_forward(&mut tx, "inbox", "packet_id", packet_id, *until_ms).await?;
                            }
                            Written::Audited { seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::InboxMove { change, audit } => {
                            if Self::inbox_moves(&mut tx, change).await? {
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::AlreadySettled
                            }
                        }
                        Write::InboxMoveAudited { change, audits } => {
                            if Self::inbox_moves(&mut tx, change).await? {
                                let mut seq = head.0;
                                for audit in audits {
                                    seq = chain(&mut head, audit, &mut records);
                                }
                                Written::Audited { seq }
                            } else {
                                Written::AlreadySettled
                            }
                        }
                        Write::Settle { entry_id, settlement, at_ms, audit } => {
                            if Self::settle(&mut tx, entry_id, settlement, *at_ms).await? {
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::AlreadySettled
                            }
                        }
                        Write::KeepPacket { entry_id, packet, sealed_from } => Self::keep_packet(&mut tx, entry_id, packet, sealed_from).await?,
                        Write::Coalesce { carrier, members, lease_until_ms } => {
                            Self::coalesce(&mut tx, carrier, members, *lease_until_ms, &self.claimant).await?
                        }
                        Write::Dissolve { carrier_id, now_ms } => Self::dissolve(&mut tx, carrier_id, *now_ms).await?,
                        Write::Narrow { referral_id, narrowing, withdrawal, at_ms, audit } => {
                            // A search whose consent narrowed is matched no more: the entry goes
                            // (whichever categories went; matching reads identity and family).
                            Self::forget_match_entry(&mut tx, referral_id).await?;
                            match Self::narrow(&mut tx, referral_id, narrowing, withdrawal, *at_ms).await? {
                                Written::Withdrawn { peer_notified, .. } => Written::Withdrawn { seq: chain(&mut head, audit, &mut records), peer_notified },
                                other => other,
                            }
                        }
                        Write::SettleOverride { referral_id, outcome, decided_by, at_ms, audit } => {
                            if Self::settle_override(&mut tx, referral_id, *outcome, decided_by, *at_ms).await? {
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::AlreadySettled
                            }
                        }
                        Write::Withdraw { referral_id, withdrawal, at_ms, audit } => {
                            Self::forget_match_entry(&mut tx, referral_id).await?;
                            match Self::withdraw(&mut tx, referral_id, withdrawal, *at_ms).await? {
                                Some(peer_notified) => Written::Withdrawn { seq: chain(&mut head, audit, &mut records), peer_notified },
                                None => Written::AlreadySettled,
                            }
                        }
                        Write::RetentionErase { erasure, at_ms, audit } => {
                            if Self::erase_retained(&mut tx, erasure, *at_ms).await? {
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::AlreadySettled
                            }
                        }
                        Write::ReferOnward { copy, audit } => match Self::insert_onward_copy(&mut tx, copy).await? {
                            None => Written::Audited { seq: chain(&mut head, audit, &mut records) },
                            Some(refused) => refused,
                        },
                        Write::OnwardRefused { packet_id, told, reply, audit } => {
                            if Self::tell_onward_refusal(&mut tx, packet_id, told, reply.created_ms).await? {
                                Self::queue_reply(&mut tx, reply).await?;
                            }
                            Written::Audited { seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::MatchFound { referral_id, reasons, at_ms, audit, handle } => {
                            if let Some(handle) = handle {
                                // A handle records one match, once.
                                sqlx::query("UPDATE match_handles SET referral_id = NULL WHERE handle = $1").bind(handle).execute(&mut *tx).await?;
                            }
                            Self::referral_moves(&mut tx, referral_id, ReferralEvent::MatchFound, reasons, *at_ms).await?;
                            Written::Audited { seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::Audit(event) => Written::Audited { seq: chain(&mut head, event, &mut records) },
                    };
                    results.push(result);
                }
                Self::insert_audit(&mut tx, &records).await?;
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(head.0)
                    .bind(&head.1)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(results)
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn release_earlier_claims(&self, now_ms: i64) -> Result<u64, StoreError> {
                // Only claims still leased: one whose attempt ended has its
                // claimant cleared and keeps the time its backoff chose.
                let deliveries = sqlx::query(
                    "UPDATE outbox SET next_attempt_ms = $1, claim_node = NULL, claim_instance = NULL \
                     WHERE state = $4 AND claim_node = $2 AND claim_instance <> $3 AND next_attempt_ms > $1",
                )
                .bind(now_ms)
                .bind(&self.claimant.node)
                .bind(&self.claimant.instance)
                .bind(OutboxState::Pending.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
                let pushes = sqlx::query(&format!(
                    "UPDATE inbox SET next_push_ms = $1, claim_node = NULL, claim_instance = NULL \
                     WHERE state IN {} AND claim_node = $2 AND claim_instance <> $3 \
                     AND next_push_ms > $1",
                    list(&InboxState::PUSHING)
                ))
                .bind(now_ms)
                .bind(&self.claimant.node)
                .bind(&self.claimant.instance)
                .execute(&self.pool)
                .await?
                .rows_affected();
                let callbacks = sqlx::query(
                    "UPDATE callbacks SET next_ms = $1, claim_node = NULL, claim_instance = NULL \
                     WHERE state = $4 AND claim_node = $2 AND claim_instance <> $3 AND next_ms > $1",
                )
                .bind(now_ms)
                .bind(&self.claimant.node)
                .bind(&self.claimant.instance)
                .bind(CallbackState::Pending.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(deliveries + pushes + callbacks)
            }
        }
    };
}

/// What differs between the backends' SQL: how a write transaction
/// begins, how it takes the audit chain's head, and how a claim treats rows
/// another transaction holds.
pub(super) struct Dialect {
    begin: &'static str,
    head_query: &'static str,
    /// Taken first in a transaction that counts and then adds (a match
    /// query's rate limit): serialises those of one key (`$1`).
    count_lock: &'static str,
    /// Appended to a claim's row selection.
    claim_lock: &'static str,
    /// Whether a statement may write in its `WITH` clause (PostgreSQL's
    /// data-modifying CTEs): a timeline entry, its status and its callback
    /// are then one statement, one round trip of the group commit instead of three.
    writing_ctes: bool,
    /// Whether the retention sweep names its partial indexes (SQLite's
    /// `INDEXED BY`): SQLite, which keeps no statistics here, would take
    /// `inbox_by_state` for the `IN` list and read every live case each round.
    names_sweep_indexes: bool,
}

impl SqliteStore {
    const DIALECT: Dialect = Dialect {
        // Takes the write lock at once: a deferred transaction that read first
        // fails outright (not after the busy timeout) when another connection
        // wrote meanwhile, and the outbox worker writes beside the batch writer.
        begin: "BEGIN IMMEDIATE",
        head_query: "SELECT seq, hash FROM audit_head WHERE id = 1",
        // BEGIN IMMEDIATE already holds the database's one write lock.
        count_lock: "",
        // A claim is one statement, hence one write transaction: two workers cannot both claim a row.
        claim_lock: "",
        // SQLite has none; its statements are calls within the process anyway.
        writing_ctes: false,
        names_sweep_indexes: true,
    };
}

impl PostgresStore {
    const DIALECT: Dialect = Dialect {
        begin: "BEGIN",
        // Replicas sharing one database append to the chain in turn.
        head_query: "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        // Read committed lets two transactions count alike: one at a time per key, across replicas.
        count_lock: "SELECT pg_advisory_xact_lock(hashtext($1))",
        // Replicas sharing the database skip each other's locked rows instead of waiting.
        claim_lock: " FOR UPDATE SKIP LOCKED",
        writing_ctes: true,
        // Its statistics show the partial indexes the smaller.
        names_sweep_indexes: false,
    };
}

/// Claims pending outbox entries due now (`$1` lease end, `$2` now, `$3` limit, `$4`/`$5` the claimant).
fn claim_deliveries_sql(dialect: &Dialect) -> String {
    format!(
        "UPDATE outbox SET next_attempt_ms = $1, attempts = attempts + 1, claim_node = $4, claim_instance = $5 WHERE id IN \
         (SELECT id FROM outbox WHERE state = '{}' AND next_attempt_ms <= $2 AND NOT held ORDER BY next_attempt_ms LIMIT $3{}) \
         RETURNING id",
        OutboxState::Pending,
        dialect.claim_lock
    )
}

/// Claims received cases due for a push, as [`claim_deliveries_sql`].
fn claim_pushes_sql(dialect: &Dialect) -> String {
    format!(
        "UPDATE inbox SET next_push_ms = $1, push_attempts = push_attempts + 1, claim_node = $4, claim_instance = $5 WHERE packet_id IN \
         (SELECT packet_id FROM inbox WHERE state IN {} AND next_push_ms <= $2 ORDER BY next_push_ms LIMIT $3{}) \
         RETURNING packet_id",
        list(&InboxState::PUSHING),
        dialect.claim_lock
    )
}

/// Claims pending callback events due now, each the earliest pending one of
/// its referral: a referral's later events wait until it is delivered or
/// given up, so they reach the organisation in timeline order.
/// Only the events of `orgs`, the organisations this replica has a
/// callback for (ids are `[a-z0-9._-]`, written into the statement as literals).
fn claim_callbacks_sql(dialect: &Dialect, orgs: &[crate::domain::OrgId]) -> String {
    let orgs = orgs.iter().map(|org| format!("'{}'", org.as_str().replace('\'', ""))).collect::<Vec<_>>().join(", ");
    format!(
        "UPDATE callbacks SET next_ms = $1, attempts = attempts + 1, claim_node = $4, claim_instance = $5 WHERE id IN \
         (SELECT c.id FROM callbacks c WHERE c.state = '{pending}' AND c.next_ms <= $2 AND c.org IN ({orgs}) \
         AND NOT EXISTS (SELECT 1 FROM callbacks earlier WHERE earlier.referral_id = c.referral_id AND earlier.state = '{pending}' \
         AND earlier.position < c.position) \
         ORDER BY c.next_ms LIMIT $3{}) \
         RETURNING id",
        dialect.claim_lock,
        pending = CallbackState::Pending.as_str(),
    )
}

sql_store!(SqliteStore, sqlx::sqlite::SqliteRow);
sql_store!(PostgresStore, sqlx::postgres::PgRow);
