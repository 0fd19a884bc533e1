//! The SQL of the store, written once for both backends: every statement is
//! portable (`$n` placeholders, `ON CONFLICT`, `RETURNING`, integer
//! milliseconds, text JSON). The backends differ only in how they connect
//! and in how a transaction takes the audit chain head: PostgreSQL locks the
//! head row, so that replicas sharing one database append in turn.

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
    NewReply, NewWithdrawal, PolicyVersionRecord, SentNarrowing, Tombstone, WithdrawnPart, SealedPayload, SentPacket, Settlement, Store, StoreError, StoredPacket, StoredReferral, SubjectReferral, TimelineEntry, Write,
    Written, ExpiredReferral, RetentionErasure, StoredRetention, SealedWithdrawal, Claimant, Connecting, InboxMove, WithdrawalEffect, ReceivedNarrowing,
    AuditStore, InboxStore, OutboxStore, PolicyStore, ReferralStore,
};
use super::transitions::{list, moves};
use crate::domain::lifecycle::{InboxEvent, InboxState, OutboxEvent, OutboxState, ReferralEvent, ReferralStatus};
use crate::domain::ParseError;
use crate::audit::{AuditEvent, AuditRecord};
use crate::config::sqlite_path;

const REFERRAL_COLUMNS: &str = "id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, \
     destination_country, purpose, outcome, policy_version, decision, consent, response, status, created_ms, handover";

const INBOX_COLUMNS: &str = "packet_id, issuer, packet_type, recipient_org, sealed, key_id, state, reasons, received_ms, expires_ms, push_attempts, \
     visible_seq, narrowed, narrowing_confirmed_ms, retention_until_ms, retention_days_after_closure";

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

/// A retention deadline from its two columns (`None` without a date).
fn retention_of(until_ms: Option<i64>, days_after_closure: Option<i64>) -> Option<StoredRetention> {
    until_ms.map(|until_ms| StoredRetention { until_ms, days_after_closure })
}

const AUDIT_COLUMNS: &str =
    "seq, at_ms, actor_org, actor_subject, action, referral_id, subject_key, policy_version, outcome, reasons, prev_hash, hash";

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
        let options = sqlite_file(path)?;
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
    ($store:ident, $row:ty, $begin:literal, $head_query:literal, $claim_query:expr, $push_query:expr) => {
        impl $store {
            fn referral_from_row(row: &$row) -> Result<StoredReferral, sqlx::Error> {
                Ok(StoredReferral {
                    id: row.try_get("id")?,
                    sender_org: row.try_get("sender_org")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    request_fingerprint: row.try_get("request_fingerprint")?,
                    subject_key: row.try_get("subject_key")?,
                    destination_org: row.try_get("destination_org")?,
                    destination_country: row.try_get("destination_country")?,
                    purpose: row.try_get("purpose")?,
                    outcome: row.try_get("outcome")?,
                    policy_version: row.try_get("policy_version")?,
                    decision: row.try_get("decision")?,
                    consent: row.try_get("consent")?,
                    response: row.try_get("response")?,
                    status: parsed(row.try_get("status")?)?,
                    created_ms: row.try_get("created_ms")?,
                    handover: row.try_get("handover")?,
                })
            }

            fn audit_from_row(row: &$row) -> Result<AuditRecord, StoreError> {
                let reasons: String = row.try_get("reasons")?;
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    at_ms: row.try_get("at_ms")?,
                    actor_org: row.try_get("actor_org")?,
                    actor_subject: row.try_get("actor_subject")?,
                    action: row.try_get("action")?,
                    referral_id: row.try_get("referral_id")?,
                    subject_key: row.try_get("subject_key")?,
                    policy_version: row.try_get("policy_version")?,
                    outcome: row.try_get("outcome")?,
                    reasons: serde_json::from_str(&reasons)
                        .map_err(|_| StoreError::Corrupt("audit reasons are not a JSON array of strings".to_owned()))?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            }

            /// Inserts referrals whose idempotency key is free, with their first
            /// timeline event and (on allow) their outbox entry, in one statement
            /// per table. Returns the ids inserted; the others found their key taken.
            async fn insert_referrals(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referrals: &[&NewReferral],
            ) -> Result<HashSet<String>, sqlx::Error> {
                let mut inserted = HashSet::new();
                for chunk in referrals.chunks(ROWS_PER_STATEMENT) {
                    let mut query =
                        QueryBuilder::new(format!("INSERT INTO referrals ({REFERRAL_COLUMNS}, retention_until_ms, retention_days_after_closure) "));
                    query.push_values(chunk, |mut row, new| {
                        let r = &new.record;
                        let retention = new.outbox.as_ref().and_then(|o| o.retention);
                        row.push_bind(r.id.clone())
                            .push_bind(r.sender_org.clone())
                            .push_bind(r.idempotency_key.clone())
                            .push_bind(r.request_fingerprint.clone())
                            .push_bind(r.subject_key.clone())
                            .push_bind(r.destination_org.clone())
                            .push_bind(r.destination_country.clone())
                            .push_bind(r.purpose.clone())
                            .push_bind(r.outcome.clone())
                            .push_bind(r.policy_version.clone())
                            .push_bind(r.decision.clone())
                            .push_bind(r.consent.clone())
                            .push_bind(r.response.clone())
                            .push_bind(r.status.as_str())
                            .push_bind(r.created_ms)
                            .push_bind(r.handover)
                            .push_bind(retention.map(|k| k.until_ms))
                            .push_bind(retention.and_then(|k| k.days_after_closure));
                    });
                    query.push(" ON CONFLICT (sender_org, idempotency_key) DO NOTHING RETURNING id");
                    for row in query.build().persistent(false).fetch_all(&mut *connection).await? {
                        inserted.insert(row.try_get::<String, _>("id")?);
                    }
                }
                let stored: Vec<&NewReferral> = referrals.iter().copied().filter(|r| inserted.contains(&r.record.id)).collect();
                for chunk in stored.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new("INSERT INTO referral_events (referral_id, status, at_ms) ");
                    query.push_values(chunk, |mut row, new| {
                        row.push_bind(new.record.id.clone()).push_bind(ReferralEvent::from(new.record.status).as_str()).push_bind(new.record.created_ms);
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                let queued: Vec<(&NewReferral, &NewOutboxEntry, &String)> = stored
                    .iter()
                    .filter_map(|new| Some((*new, new.outbox.as_ref()?, new.record.destination_country.as_ref()?)))
                    .collect();
                for chunk in queued.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(
                        "INSERT INTO outbox (id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version, \
                         sealed, key_id, next_attempt_ms, created_ms, consent_expires_ms, deadline_ms, handover, end_to_end) ",
                    );
                    query.push_values(chunk, |mut row, (new, entry, country)| {
                        row.push_bind(new.record.id.clone())
                            .push_bind(new.record.id.clone())
                            .push_bind("referral")
                            .push_bind((*country).clone())
                            .push_bind(new.record.destination_org.clone())
                            .push_bind(new.record.purpose.clone())
                            .push_bind(new.record.policy_version.clone())
                            .push_bind(entry.payload.sealed.clone())
                            .push_bind(entry.payload.key_id.clone())
                            .push_bind(new.record.created_ms)
                            .push_bind(new.record.created_ms)
                            .push_bind(entry.consent_expires_ms)
                            .push_bind(entry.deadline_ms)
                            .push_bind(new.record.handover)
                            .push_bind(entry.end_to_end);
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                Ok(inserted)
            }

            /// Inserts packets whose id is new, one statement per chunk.
            /// Returns the ids inserted; the others were known already.
            async fn insert_inbox(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                entries: &[&NewInboxEntry],
            ) -> Result<HashSet<String>, sqlx::Error> {
                let mut inserted = HashSet::new();
                for chunk in entries.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(
                        "INSERT INTO inbox (packet_id, issuer, packet_sha256, packet_type, recipient_org, sealed, key_id, receipt, received_ms, expires_ms) ",
                    );
                    query.push_values(chunk, |mut row, entry| {
                        row.push_bind(entry.packet_id.clone())
                            .push_bind(entry.issuer.clone())
                            .push_bind(entry.packet_sha256.clone())
                            .push_bind(entry.packet_type.clone())
                            .push_bind(entry.recipient_org.clone())
                            .push_bind(entry.claims.sealed.clone())
                            .push_bind(entry.claims.key_id.clone())
                            .push_bind(entry.receipt.clone())
                            .push_bind(entry.received_ms)
                            .push_bind(entry.expires_ms);
                    });
                    query.push(" ON CONFLICT (packet_id) DO NOTHING RETURNING packet_id");
                    for row in query.build().persistent(false).fetch_all(&mut *connection).await? {
                        inserted.insert(row.try_get::<String, _>("packet_id")?);
                    }
                }
                Ok(inserted)
            }

            /// Ends a pending outbox entry and moves its referral on; false
            /// when the entry was not pending any more.
            async fn keep_packet(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                entry_id: &str,
                packet: &StoredPacket,
                sealed_from: &str,
            ) -> Result<Written, sqlx::Error> {
                // One statement: the values on the right are the row's before the update.
                let row = sqlx::query(
                    "UPDATE outbox SET packet_id = CASE WHEN packet IS NULL THEN $1 ELSE packet_id END, packet = COALESCE(packet, $2) \
                     WHERE id = $3 AND state = $5 AND (packet IS NOT NULL OR key_id = $4) RETURNING packet_id, packet",
                )
                .bind(&packet.packet_id)
                .bind(&packet.packet)
                .bind(entry_id)
                .bind(sealed_from)
                .bind(OutboxState::Pending.as_str())
                .fetch_optional(&mut *connection)
                .await?;
                let kept: Option<(Option<String>, Option<String>)> = row.map(|row| Ok::<_, sqlx::Error>((row.try_get("packet_id")?, row.try_get("packet")?))).transpose()?;
                Ok(match kept {
                    Some((Some(packet_id), Some(packet))) => Written::PacketKept(StoredPacket { packet_id, packet }),
                    // Settled, withdrawn or gone: there is nothing left to send.
                    _ => Written::AlreadySettled,
                })
            }

            async fn settle(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                entry_id: &str,
                settlement: &Settlement,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                let receipt = match settlement {
                    Settlement::Delivered { receipt } => Some(receipt.clone()),
                    Settlement::Expired => None,
                };
                let event = settlement.event();
                let Some(moving) = moves("state", |state: OutboxState| state.after(event)) else {
                    return Ok(false);
                };
                // A delivery that was under way when consent was withdrawn, or the
                // retention sweep erased the referral, still leaves its receipt (proof
                // of what reached the peer); the entry stays withdrawn or erased.
                let late: Vec<OutboxState> =
                    OutboxState::ALL.iter().copied().filter(|state| receipt.is_some() && state.keeps_late_receipt()).collect();
                let late_receipt = if late.is_empty() { String::new() } else { format!(" OR (state IN {} AND receipt IS NULL)", list(&late)) };
                // Delivered or expired, the body at rest has served: only the
                // packet (readable by the peer alone) and the receipt stay, as proof.
                let updated = sqlx::query(&format!(
                    "UPDATE outbox SET state = {}, receipt = $1, settled_ms = $2, sealed = $4 \
                     WHERE id = $3 AND (state IN {}{late_receipt}) RETURNING referral_id, packet_type",
                    moving.set, moving.from
                ))
                .bind(receipt)
                .bind(at_ms)
                .bind(entry_id)
                .bind(Vec::<u8>::new())
                .fetch_optional(&mut *connection)
                .await?;
                let Some(row) = updated else {
                    return Ok(false);
                };
                let packet_type: String = row.try_get("packet_type")?;
                if let Some(referral_id) = row.try_get::<Option<String>, _>("referral_id")? {
                    // A status from the peer may have come first: it stays the
                    // referral's status; the timeline still records this. Another
                    // packet about the referral (its withdrawal) is named in the timeline.
                    let step = ReferralEvent::settled(packet_type == "referral", event == OutboxEvent::Delivered);
                    Self::referral_moves(connection, &referral_id, step, &[], at_ms).await?;
                }
                Ok(true)
            }

            /// See [`Write::Withdraw`]: whether the peer is to be told, or
            /// `None` if the referral is unknown or was withdrawn before.
            async fn withdraw(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                withdrawal: &NewWithdrawal,
                at_ms: i64,
            ) -> Result<Option<bool>, sqlx::Error> {
                if !Self::still_consented(connection, referral_id).await? {
                    return Ok(None);
                }
                // Queued and stopped in the same transaction.
                let notified = Self::queue_withdrawal(connection, referral_id, withdrawal, at_ms).await?;
                Self::stop_referral_packet(connection, referral_id, OutboxEvent::Withdrawn).await?;
                Self::referral_moves(connection, referral_id, ReferralEvent::Withdrawn, &[], at_ms).await?;
                Ok(Some(notified))
            }

            /// A referral's payload and kept packet blanked (the packet id stays:
            /// statuses about the referral are still recognised), its delivery
            /// stopped if still pending.
            async fn stop_referral_packet(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                event: OutboxEvent,
            ) -> Result<(), sqlx::Error> {
                let state = moves("state", |state: OutboxState| state.after(event)).map_or_else(|| "state".to_owned(), |moving| moving.set);
                sqlx::query(&format!("UPDATE outbox SET state = {state}, sealed = $1, packet = NULL WHERE id = $2 AND packet_type = 'referral'"))
                    .bind(Vec::<u8>::new())
                    .bind(referral_id)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// Whether the referral exists and what it sent is still shared.
            async fn still_consented(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
            ) -> Result<bool, sqlx::Error> {
                let row = sqlx::query("SELECT status FROM referrals WHERE id = $1").bind(referral_id).fetch_optional(&mut *connection).await?;
                let status: Option<ReferralStatus> = row.map(|row| parsed(row.try_get("status")?)).transpose()?;
                Ok(status.is_some_and(ReferralStatus::still_shared))
            }

            /// See [`Write::Narrow`]: whether the peer is to be told, or
            /// `None` when the referral was withdrawn whole before.
            async fn narrow(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                narrowing: &SentNarrowing,
                withdrawal: &NewWithdrawal,
                at_ms: i64,
            ) -> Result<Written, sqlx::Error> {
                if !Self::still_consented(connection, referral_id).await? {
                    return Ok(Written::AlreadySettled);
                }
                if let Some((payload, sealed_from)) = &narrowing.payload {
                    // Only over the payload it was cut from: one cut by another withdrawal
                    // meanwhile holds what that one left, and is cut again by the caller.
                    let replaced = sqlx::query("UPDATE outbox SET sealed = $1, key_id = $2 WHERE id = $3 AND packet_type = 'referral' AND key_id = $4")
                        .bind(&payload.sealed)
                        .bind(&payload.key_id)
                        .bind(referral_id)
                        .bind(sealed_from)
                        .execute(&mut *connection)
                        .await?
                        .rows_affected();
                    if replaced == 0 {
                        return Ok(Written::PayloadMoved);
                    }
                }
                let notified = Self::queue_withdrawal(connection, referral_id, withdrawal, at_ms).await?;
                // Withdrawn before any packet was made: nothing is to be erased elsewhere.
                let step = if notified { ReferralEvent::ConsentNarrowed } else { ReferralEvent::ConsentNarrowedBeforeSending };
                Self::referral_moves(connection, referral_id, step, &narrowing.categories, at_ms).await?;
                Ok(Written::Withdrawn { seq: 0, peer_notified: notified })
            }

            /// Queues `withdrawal` for the peer if a packet was ever made for
            /// the referral (it may have arrived); whether it was queued. Read
            /// and queued in one statement: no attempt can make a packet for
            /// it after this reads that there was none.
            async fn queue_withdrawal(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                withdrawal: &NewWithdrawal,
                at_ms: i64,
            ) -> Result<bool, sqlx::Error> {
                Ok(sqlx::query(
                    "INSERT INTO outbox (id, referral_id, packet_type, destination_country, recipient_org, sealed, key_id, \
                                         next_attempt_ms, created_ms, deadline_ms, in_reply_to, end_to_end) \
                     SELECT $1, id, 'withdrawal', destination_country, recipient_org, $2, $3, $4, $4, $5, packet_id, end_to_end \
                     FROM outbox WHERE id = $6 AND packet_type = 'referral' AND packet_id IS NOT NULL",
                )
                .bind(&withdrawal.packet_id)
                .bind(&withdrawal.payload.sealed)
                .bind(&withdrawal.payload.key_id)
                .bind(at_ms)
                .bind(withdrawal.deadline_ms)
                .bind(referral_id)
                .execute(&mut *connection)
                .await?
                .rows_affected()
                    > 0)
            }

            /// A referral's entry in the timeline, and its new status if the
            /// entry moves it (see `ReferralStatus::after`).
            async fn referral_moves(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                referral_id: &str,
                event: ReferralEvent,
                reasons: &[String],
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                if let Some(moving) = moves("status", |status: ReferralStatus| status.after(event)) {
                    sqlx::query(&format!("UPDATE referrals SET status = {} WHERE id = $1 AND status IN {}", moving.set, moving.from))
                        .bind(referral_id)
                        .execute(&mut *connection)
                        .await?;
                }
                let reasons = (!reasons.is_empty()).then(|| serde_json::to_string(reasons).unwrap_or_else(|_| "[]".to_owned()));
                sqlx::query("INSERT INTO referral_events (referral_id, status, at_ms, reasons) VALUES ($1, $2, $3, $4)")
                    .bind(referral_id)
                    .bind(event.as_str())
                    .bind(at_ms)
                    .bind(reasons)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            /// Moves a received packet on; false when it was not in the expected state.
            async fn inbox_moves(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                change: &InboxChange,
            ) -> Result<bool, sqlx::Error> {
                let Some(to) = change.to() else {
                    return Ok(false);
                };
                let reasons = serde_json::to_string(change.step.reasons()).unwrap_or_else(|_| "[]".to_owned());
                // What is refused, or applied to a referral, is not kept to be read later.
                // Numbered when it first becomes visible: see `visible_seq` in migration 0003.
                const NUMBERED: &str = ", visible_seq = COALESCE(visible_seq, (SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox))";
                let forget = match to {
                    InboxState::Refused | InboxState::Applied | InboxState::Undeliverable => ", sealed = $6".to_owned(),
                    // The first push is due at once.
                    InboxState::Pushing => format!(", next_push_ms = $3{NUMBERED}"),
                    InboxState::NarrowingPushing => ", next_push_ms = $3, push_attempts = 0".to_owned(),
                    InboxState::Available => NUMBERED.to_owned(),
                    _ => String::new(),
                };
                let confirmed = if matches!(change.step, InboxMove::ConfirmNarrowing { .. }) { ", narrowing_confirmed_ms = $3" } else { "" };
                let statement = format!("UPDATE inbox SET state = $1, reasons = $2, settled_ms = $3{forget}{confirmed} WHERE packet_id = $4 AND state = $5");
                let mut update = sqlx::query(&statement)
                    .bind(to.as_str())
                    .bind(reasons)
                    .bind(change.at_ms)
                    .bind(&change.packet_id)
                    .bind(change.from.as_str());
                if forget.contains("$6") {
                    update = update.bind(Vec::<u8>::new());
                }
                if update.execute(&mut *connection).await?.rows_affected() == 0 {
                    return Ok(false);
                }
                if matches!(to, InboxState::Refused | InboxState::Undeliverable) {
                    // A case nobody will be handed over: nor are its sealed withdrawals.
                    sqlx::query("UPDATE narrowed_packets SET end_to_end = '' WHERE packet_id = $1 AND end_to_end IS NOT NULL")
                        .bind(&change.packet_id)
                        .execute(&mut *connection)
                        .await?;
                }
                match &change.step {
                    InboxMove::Forward { retention, reseal, .. } => {
                        if let Some(reseal) = reseal {
                            sqlx::query("UPDATE inbox SET sealed = $1, key_id = $2 WHERE packet_id = $3")
                                .bind(&reseal.sealed)
                                .bind(&reseal.key_id)
                                .bind(&change.packet_id)
                                .execute(&mut *connection)
                                .await?;
                        }
                        sqlx::query("UPDATE inbox SET retention_until_ms = $1, retention_days_after_closure = $2 WHERE packet_id = $3")
                            .bind(retention.until_ms)
                            .bind(retention.days_after_closure)
                            .bind(&change.packet_id)
                            .execute(&mut *connection)
                            .await?;
                    }
                    InboxMove::ApplyToReferral { referral_id, events, reasons, retention_until_ms } => {
                        if let Some(until_ms) = retention_until_ms {
                            Self::bring_forward(connection, "referrals", "id", referral_id, *until_ms).await?;
                        }
                        for event in events {
                            Self::referral_moves(connection, referral_id, *event, reasons, change.at_ms).await?;
                        }
                    }
                    InboxMove::ApplyWithdrawal { tombstone, effect, .. } => {
                        Self::keep_tombstone(connection, tombstone, change.at_ms).await?;
                        match effect {
                            Some(WithdrawalEffect::Narrow { narrowing, notice_until_ms }) => {
                                Self::narrow_received(connection, narrowing, change.at_ms, *notice_until_ms).await?;
                            }
                            Some(WithdrawalEffect::Erase { packet_id, pushed, notice_until_ms }) => {
                                let erasure =
                                    ReceivedErasure { event: InboxEvent::WithdrawnWhole { pushed: *pushed }, notice_until_ms: *notice_until_ms, reasons: None };
                                Self::erase_received(connection, packet_id, change.at_ms, &erasure).await?;
                            }
                            None => {}
                        }
                    }
                    _ => {}
                }
                if let Some(reply) = change.step.reply() {
                    Self::queue_reply(connection, reply).await?;
                }
                Ok(true)
            }

            /// Keeps what a withdrawal withdraws, whether or not the referral
            /// packet is held yet: a packet arriving later is erased or cut down on arrival.
            async fn keep_tombstone(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                tombstone: &Tombstone,
                at_ms: i64,
            ) -> Result<(), sqlx::Error> {
                match tombstone {
                    Tombstone { packet_id, issuer, categories: None, .. } => {
                        sqlx::query("INSERT INTO withdrawn_packets (packet_id, issuer, at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(packet_id)
                            .bind(issuer)
                            .bind(at_ms)
                            .execute(&mut *connection)
                            .await?;
                    }
                    Tombstone { withdrawal_id, packet_id, issuer, categories: Some(categories), end_to_end } => {
                        sqlx::query(
                            "INSERT INTO narrowed_packets (withdrawal_id, packet_id, issuer, categories, at_ms, end_to_end) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(withdrawal_id)
                        .bind(packet_id)
                        .bind(issuer)
                        .bind(serde_json::to_string(categories).unwrap_or_else(|_| "[]".to_owned()))
                        .bind(at_ms)
                        .bind(end_to_end)
                        .execute(&mut *connection)
                        .await?;
                    }
                }
                Ok(())
            }

            /// A received case cut down by a partial withdrawal: listed again,
            /// last, so that a recipient tailing its inbox learns what to erase;
            /// a case already pushed to a webhook is told of by a push, tried
            /// until `notice_until_ms` at least.
            async fn narrow_received(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                narrowing: &ReceivedNarrowing,
                at_ms: i64,
                notice_until_ms: i64,
            ) -> Result<(), sqlx::Error> {
                let event = InboxEvent::Narrowed { pushed: narrowing.pushed };
                let Some(moving) = moves("state", |state: InboxState| state.after(event)) else {
                    return Ok(());
                };
                // The states from which a notice is to be pushed.
                let noticed: Vec<InboxState> =
                    InboxState::ALL.iter().copied().filter(|state| *state != InboxState::NarrowingPushing && state.after(event) == Some(InboxState::NarrowingPushing)).collect();
                let (next_push, attempts) = if noticed.is_empty() {
                    ("next_push_ms".to_owned(), "push_attempts".to_owned())
                } else {
                    let noticed = list(&noticed);
                    (format!("CASE WHEN state IN {noticed} THEN $4 ELSE next_push_ms END"), format!("CASE WHEN state IN {noticed} THEN 0 ELSE push_attempts END"))
                };
                sqlx::query(&format!(
                    "UPDATE inbox SET sealed = $1, key_id = $2, narrowed = $3, narrowing_confirmed_ms = NULL, \
                     state = {}, next_push_ms = {next_push}, push_attempts = {attempts}, \
                     expires_ms = CASE WHEN $5 AND expires_ms < $7 THEN $7 ELSE expires_ms END, \
                     visible_seq = CASE WHEN visible_seq IS NULL THEN NULL ELSE (SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox) END \
                     WHERE packet_id = $6 AND state IN {}",
                    moving.set, moving.from
                ))
                .bind(&narrowing.claims.sealed)
                .bind(&narrowing.claims.key_id)
                .bind(serde_json::to_string(&narrowing.categories).unwrap_or_else(|_| "[]".to_owned()))
                .bind(at_ms)
                .bind(narrowing.pushed)
                .bind(&narrowing.packet_id)
                .bind(notice_until_ms)
                .execute(&mut *connection)
                .await?;
                Ok(())
            }

            /// Brings a row's retention deadline forward to `until_ms`; a
            /// later date changes nothing, so racing closures keep the earliest.
            async fn bring_forward(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                table: &str,
                key: &str,
                id: &str,
                until_ms: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query(&format!("UPDATE {table} SET retention_until_ms = $1 WHERE {key} = $2 AND retention_until_ms > $1"))
                    .bind(until_ms)
                    .bind(id)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
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

            /// Erases a received case in a state `erasure.event` erases: claims
            /// blanked; listed again, last, if its recipient could see it, so that
            /// a recipient tailing its inbox learns it must erase its own copy; a
            /// case already pushed to a webhook is told of by a push first, tried
            /// until `notice_until_ms` at least (the packet's own expiry may be
            /// long past). Whether it was erased.
            async fn erase_received(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                packet_id: &str,
                at_ms: i64,
                erasure: &ReceivedErasure<'_>,
            ) -> Result<bool, sqlx::Error> {
                let Some(moving) = moves("state", |state: InboxState| state.after(erasure.event)) else {
                    return Ok(false);
                };
                let pushed = matches!(erasure.event, InboxEvent::WithdrawnWhole { pushed: true } | InboxEvent::RetentionPassed { pushed: true });
                let erased = sqlx::query(&format!(
                    "UPDATE inbox SET state = {}, \
                     reasons = COALESCE($4, reasons), next_push_ms = $2, push_attempts = 0, sealed = $1, settled_ms = $2, \
                     expires_ms = CASE WHEN $5 AND expires_ms < $6 THEN $6 ELSE expires_ms END, \
                     visible_seq = CASE WHEN visible_seq IS NULL THEN NULL ELSE (SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox) END \
                     WHERE packet_id = $3 AND state IN {}",
                    moving.set, moving.from
                ))
                .bind(Vec::<u8>::new())
                .bind(at_ms)
                .bind(packet_id)
                .bind(erasure.reasons)
                .bind(pushed)
                .bind(erasure.notice_until_ms)
                .execute(&mut *connection)
                .await?
                .rows_affected();
                if erased > 0 {
                    // Its sealed withdrawals name categories of it: they go with it.
                    sqlx::query("UPDATE narrowed_packets SET end_to_end = '' WHERE packet_id = $1 AND end_to_end IS NOT NULL")
                        .bind(packet_id)
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(erased > 0)
            }

            async fn queue_reply(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                reply: &NewReply,
            ) -> Result<(), sqlx::Error> {
                    sqlx::query(
                        "INSERT INTO outbox (id, packet_type, destination_country, recipient_org, sealed, key_id, next_attempt_ms, created_ms, deadline_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(&reply.packet_id)
                    .bind(&reply.packet_type)
                    .bind(&reply.destination_country)
                    .bind(&reply.recipient_org)
                    .bind(&reply.payload.sealed)
                    .bind(&reply.payload.key_id)
                    .bind(reply.created_ms)
                    .bind(reply.created_ms)
                    .bind(reply.deadline_ms)
                    .execute(&mut *connection)
                    .await?;
                Ok(())
            }

            fn inbox_from_row(row: &$row) -> Result<InboxItem, StoreError> {
                let reasons: Option<String> = row.try_get("reasons")?;
                Ok(InboxItem {
                    packet_id: row.try_get("packet_id")?,
                    issuer: row.try_get("issuer")?,
                    packet_type: row.try_get("packet_type")?,
                    recipient_org: row.try_get("recipient_org")?,
                    claims: SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? },
                    state: parsed(row.try_get("state")?)?,
                    reasons: match reasons {
                        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("inbox reasons are not a JSON array".to_owned()))?,
                        None => Vec::new(),
                    },
                    received_ms: row.try_get("received_ms")?,
                    expires_ms: row.try_get("expires_ms")?,
                    push_attempts: row.try_get("push_attempts")?,
                    visible_seq: row.try_get("visible_seq")?,
                    narrowed: match row.try_get::<Option<String>, _>("narrowed")? {
                        Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("inbox narrowing is not a JSON array".to_owned()))?,
                        None => Vec::new(),
                    },
                    narrowing_confirmed: row.try_get::<Option<i64>, _>("narrowing_confirmed_ms")?.is_some(),
                    retention: retention_of(row.try_get("retention_until_ms")?, row.try_get("retention_days_after_closure")?),
                })
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

            /// The outbox columns of a delivery record; `None` when `state` is null (no entry joined).
            fn delivery_record_from_row(row: &$row) -> Result<Option<DeliveryRecord>, sqlx::Error> {
                let Some(state) = row.try_get::<Option<String>, _>("state")? else {
                    return Ok(None);
                };
                Ok(Some(DeliveryRecord {
                    state: parsed(state)?,
                    attempts: row.try_get("attempts")?,
                    packet_id: row.try_get("packet_id")?,
                    packet: row.try_get("packet")?,
                    receipt: row.try_get("receipt")?,
                    last_error: row.try_get("last_error")?,
                }))
            }

            fn delivery_from_row(row: &$row) -> Result<ClaimedDelivery, sqlx::Error> {
                let packet_id: Option<String> = row.try_get("packet_id")?;
                let packet: Option<String> = row.try_get("packet")?;
                Ok(ClaimedDelivery {
                    id: row.try_get("id")?,
                    referral_id: row.try_get("referral_id")?,
                    packet_type: row.try_get("packet_type")?,
                    recipient_org: row.try_get("recipient_org")?,
                    destination_country: row.try_get("destination_country")?,
                    purpose: row.try_get("purpose")?,
                    policy_version: row.try_get("policy_version")?,
                    payload: SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? },
                    consent_expires_ms: row.try_get("consent_expires_ms")?,
                    deadline_ms: row.try_get("deadline_ms")?,
                    attempts: row.try_get("attempts")?,
                    handover: row.try_get("handover")?,
                    end_to_end: row.try_get("end_to_end")?,
                    packet: packet_id.zip(packet).map(|(packet_id, packet)| StoredPacket { packet_id, packet }),
                    created_ms: row.try_get("created_ms")?,
                    in_reply_to: row.try_get("in_reply_to")?,
                    retention: retention_of(row.try_get("retention_until_ms")?, row.try_get("retention_days_after_closure")?),
                })
            }

            async fn insert_audit(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                records: &[AuditRecord],
            ) -> Result<(), sqlx::Error> {
                for chunk in records.chunks(ROWS_PER_STATEMENT) {
                    let mut query = QueryBuilder::new(format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) "));
                    query.push_values(chunk, |mut row, record| {
                        row.push_bind(record.seq)
                            .push_bind(record.at_ms)
                            .push_bind(record.actor_org.clone())
                            .push_bind(record.actor_subject.clone())
                            .push_bind(record.action.clone())
                            .push_bind(record.referral_id.clone())
                            .push_bind(record.subject_key.clone())
                            .push_bind(record.policy_version.clone())
                            .push_bind(record.outcome.clone())
                            .push_bind(audit_reasons(record))
                            .push_bind(record.prev_hash.clone())
                            .push_bind(record.hash.clone());
                    });
                    query.build().persistent(false).execute(&mut *connection).await?;
                }
                Ok(())
            }
        }

        #[async_trait]
        impl ReferralStore for $store {
            async fn referral(&self, id: &str) -> Result<Option<StoredReferral>, StoreError> {
                let row = sqlx::query(&format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::referral_from_row).transpose()?)
            }

            async fn referral_by_key(&self, sender_org: &str, key: &str) -> Result<Option<StoredReferral>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE sender_org = $1 AND idempotency_key = $2"
                ))
                .bind(sender_org)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.as_ref().map(Self::referral_from_row).transpose()?)
            }

            async fn timeline(&self, referral_id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
                let rows = sqlx::query("SELECT status, at_ms, reasons FROM referral_events WHERE referral_id = $1 ORDER BY id")
                    .bind(referral_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let reasons: Option<String> = row.try_get("reasons")?;
                        Ok(TimelineEntry {
                            status: parsed(row.try_get("status")?)?,
                            at_ms: row.try_get("at_ms")?,
                            reasons: match reasons {
                                Some(text) => serde_json::from_str(&text).map_err(|_| StoreError::Corrupt("timeline reasons are not a JSON array".to_owned()))?,
                                None => Vec::new(),
                            },
                        })
                    })
                    .collect()
            }

            async fn sealed_payload(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError> {
                let row = sqlx::query("SELECT sealed, key_id FROM outbox WHERE referral_id = $1 AND packet_type = 'referral'")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .map(|row| Ok::<_, sqlx::Error>(SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? }))
                    .transpose()?)
            }

            async fn subject_referrals(&self, subject_key: &str) -> Result<Vec<SubjectReferral>, StoreError> {
                let rows = sqlx::query(
                    "SELECT r.id, r.sender_org, r.destination_org, r.destination_country, r.purpose, r.outcome, r.decision, r.consent, \
                            r.policy_version, r.status, r.created_ms, \
                            o.state, o.attempts, o.packet_id, o.packet, o.receipt, o.last_error \
                     FROM referrals r LEFT JOIN outbox o ON o.id = r.id AND o.packet_type = 'referral' \
                     WHERE r.subject_key = $1 ORDER BY r.created_ms, r.id",
                )
                .bind(subject_key)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let delivery = Self::delivery_record_from_row(row)?;
                        Ok(SubjectReferral {
                            referral_id: row.try_get("id")?,
                            sender_org: row.try_get("sender_org")?,
                            destination_org: row.try_get("destination_org")?,
                            destination_country: row.try_get("destination_country")?,
                            purpose: row.try_get("purpose")?,
                            outcome: row.try_get("outcome")?,
                            decision: row.try_get("decision")?,
                            consent: row.try_get("consent")?,
                            policy_version: row.try_get("policy_version")?,
                            status: parsed(row.try_get("status")?)?,
                            created_ms: row.try_get("created_ms")?,
                            delivery,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?)
            }

            async fn referral_retention(&self, referral_id: &str) -> Result<Option<StoredRetention>, StoreError> {
                let row = sqlx::query("SELECT retention_until_ms, retention_days_after_closure FROM referrals WHERE id = $1")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => retention_of(row.try_get("retention_until_ms")?, row.try_get("retention_days_after_closure")?),
                    None => None,
                })
            }

            async fn expired_referrals(&self, now_ms: i64, limit: i64) -> Result<Vec<ExpiredReferral>, StoreError> {
                // A referral whose consent was withdrawn was erased then: nothing is left for the deadline.
                let withdrawn: Vec<ReferralStatus> = ReferralStatus::ALL.iter().copied().filter(|s| s.is_withdrawn_whole()).collect();
                let rows = sqlx::query(&format!(
                    "SELECT r.id, o.key_id FROM referrals r LEFT JOIN outbox o ON o.id = r.id AND o.packet_type = 'referral' \
                     WHERE r.retention_until_ms <= $1 AND r.erased_ms IS NULL \
                     AND r.status NOT IN {} \
                     ORDER BY r.retention_until_ms, r.id LIMIT $2",
                    list(&withdrawn)
                ))
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| Ok(ExpiredReferral { referral_id: row.try_get("id")?, key_id: row.try_get("key_id")? }))
                    .collect::<Result<_, sqlx::Error>>()?)
            }
        }

        #[async_trait]
        impl OutboxStore for $store {
            async fn claim_deliveries(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<ClaimedDelivery>, StoreError> {
                // A referral's retention deadline lives on its row; it goes into its packet.
                let columns = "id, referral_id, packet_type, destination_country, recipient_org, purpose, policy_version, sealed, key_id, \
                               attempts, packet_id, packet, consent_expires_ms, deadline_ms, created_ms, handover, end_to_end, in_reply_to, \
                               (SELECT r.retention_until_ms FROM referrals r WHERE r.id = outbox.referral_id AND outbox.packet_type = 'referral') AS retention_until_ms, \
                               (SELECT r.retention_days_after_closure FROM referrals r WHERE r.id = outbox.referral_id AND outbox.packet_type = 'referral') \
                               AS retention_days_after_closure";
                let rows = self.claim(&$claim_query, "outbox", "id", columns, now_ms, lease_ms, limit).await?;
                Ok(rows.iter().map(Self::delivery_from_row).collect::<Result<_, _>>()?)
            }

            async fn retry_later(&self, entry_id: &str, next_attempt_ms: i64, error_code: &str, forget_packet: bool) -> Result<(), StoreError> {
                let forget = if forget_packet { ", packet_id = NULL, packet = NULL" } else { "" };
                sqlx::query(&format!(
                    "UPDATE outbox SET next_attempt_ms = $1, last_error = $2{forget}, claim_node = NULL, claim_instance = NULL \
                     WHERE id = $3 AND state = $4"
                ))
                .bind(next_attempt_ms)
                .bind(error_code)
                .bind(entry_id)
                .bind(OutboxState::Pending.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delivery(&self, referral_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
                let row = sqlx::query("SELECT state, attempts, packet_id, packet, receipt, last_error FROM outbox WHERE referral_id = $1 AND packet_type = 'referral'")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Self::delivery_record_from_row(&row)?,
                    None => None,
                })
            }

            async fn sent_packet(&self, packet_id: &str) -> Result<Option<SentPacket>, StoreError> {
                let row = sqlx::query("SELECT id, referral_id, destination_country, packet_type, in_reply_to, created_ms FROM outbox WHERE packet_id = $1")
                    .bind(packet_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(SentPacket {
                        entry_id: row.try_get("id")?,
                        referral_id: row.try_get("referral_id")?,
                        destination_country: row.try_get("destination_country")?,
                        packet_type: row.try_get("packet_type")?,
                        in_reply_to: row.try_get("in_reply_to")?,
                        created_ms: row.try_get("created_ms")?,
                    }),
                    None => None,
                })
            }

            async fn outbox_depth(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS depth FROM outbox WHERE state = $1").bind(OutboxState::Pending.as_str()).fetch_one(&self.pool).await?;
                Ok(row.try_get("depth")?)
            }
        }

        #[async_trait]
        impl InboxStore for $store {
            async fn unprocessed_inbox(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query(&format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE state = $2 ORDER BY received_ms, packet_id LIMIT $1"))
                    .bind(limit)
                    .bind(InboxState::Received.as_str())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn withdrawn_part(&self, packet_id: &str, issuer: &str) -> Result<Option<WithdrawnPart>, StoreError> {
                // One read for both kinds: it is made for every received referral.
                let rows = sqlx::query(
                    "SELECT NULL AS categories FROM withdrawn_packets WHERE packet_id = $1 AND issuer = $2 \
                     UNION ALL SELECT categories FROM narrowed_packets WHERE packet_id = $1 AND issuer = $2",
                )
                .bind(packet_id)
                .bind(issuer)
                .fetch_all(&self.pool)
                .await?;
                let mut categories = std::collections::BTreeSet::new();
                for row in &rows {
                    match row.try_get::<Option<String>, _>("categories")? {
                        None => return Ok(Some(WithdrawnPart::Whole)),
                        Some(text) => categories.extend(
                            serde_json::from_str::<Vec<String>>(&text).map_err(|_| StoreError::Corrupt("narrowed categories are not a JSON array".to_owned()))?,
                        ),
                    }
                }
                Ok((!categories.is_empty()).then(|| WithdrawnPart::Categories(categories.into_iter().collect())))
            }

            async fn sealed_withdrawals(&self, packet_id: &str, issuer: &str) -> Result<Vec<SealedWithdrawal>, StoreError> {
                let rows = sqlx::query(
                    "SELECT withdrawal_id, end_to_end FROM narrowed_packets WHERE packet_id = $1 AND issuer = $2 AND end_to_end <> '' \
                     ORDER BY at_ms, withdrawal_id",
                )
                .bind(packet_id)
                .bind(issuer)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| Ok(SealedWithdrawal { withdrawal_id: row.try_get("withdrawal_id")?, end_to_end: row.try_get("end_to_end")? }))
                    .collect()
            }

            async fn inbox_item(&self, packet_id: &str) -> Result<Option<InboxItem>, StoreError> {
                let row = sqlx::query(&format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE packet_id = $1")).bind(packet_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::inbox_from_row).transpose()
            }

            async fn claim_pushes(&self, now_ms: i64, lease_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let rows = self.claim(&$push_query, "inbox", "packet_id", INBOX_COLUMNS, now_ms, lease_ms, limit).await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn retry_push(&self, packet_id: &str, next_push_ms: i64, error_code: &str) -> Result<(), StoreError> {
                sqlx::query(&format!(
                    "UPDATE inbox SET next_push_ms = $1, push_error = $2, claim_node = NULL, claim_instance = NULL \
                     WHERE packet_id = $3 AND state IN {}",
                    list(&InboxState::PUSHING)
                ))
                    .bind(next_push_ms)
                    .bind(error_code)
                    .bind(packet_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn inbox_for(&self, recipient_org: &str, states: &[InboxState], after: Option<i64>, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let mut query = QueryBuilder::new(format!("SELECT {INBOX_COLUMNS} FROM inbox WHERE recipient_org = "));
                query.push_bind(recipient_org.to_owned()).push(" AND state IN (");
                let mut listed = query.separated(", ");
                for state in states {
                    listed.push_bind(state.as_str());
                }
                // Only what the recipient could see: a case refused before it was ever
                // visible is not listed, not even once erased.
                query.push(") AND visible_seq IS NOT NULL");
                if let Some(after) = after {
                    query.push(" AND visible_seq > ").push_bind(after);
                }
                query.push(" ORDER BY visible_seq LIMIT ").push_bind(limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn inbox_receipt(&self, packet_id: &str) -> Result<Option<InboxReceipt>, StoreError> {
                let row = sqlx::query("SELECT packet_sha256, receipt FROM inbox WHERE packet_id = $1")
                    .bind(packet_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(InboxReceipt { packet_sha256: row.try_get("packet_sha256")?, receipt: row.try_get("receipt")? }),
                    None => None,
                })
            }

            async fn expired_received(&self, now_ms: i64, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {INBOX_COLUMNS} FROM inbox WHERE state IN {} AND retention_until_ms <= $1 \
                     ORDER BY retention_until_ms, packet_id LIMIT $2",
                    list(&InboxState::LIVE)
                ))
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::inbox_from_row).collect()
            }

            async fn receipt_for_bytes(&self, packet_sha256: &str, issuer: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT receipt FROM inbox WHERE packet_sha256 = $1 AND issuer = $2")
                    .bind(packet_sha256)
                    .bind(issuer)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(row.try_get("receipt")?),
                    None => None,
                })
            }
        }

        #[async_trait]
        impl PolicyStore for $store {
            async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT number, version, author_org, author_subject, note, created_ms, files FROM policy_versions ORDER BY number",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        Ok(PolicyVersionRecord {
                            number: row.try_get("number")?,
                            version: row.try_get("version")?,
                            author_org: row.try_get("author_org")?,
                            author_subject: row.try_get("author_subject")?,
                            note: row.try_get("note")?,
                            created_ms: row.try_get("created_ms")?,
                            files: row.try_get("files")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?)
            }

            async fn latest_policy_number(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COALESCE(MAX(number), 0) AS latest FROM policy_versions").fetch_one(&self.pool).await?;
                Ok(row.try_get("latest")?)
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
                let mut query = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
                if let Some(from) = filter.from_ms {
                    query.push(" AND at_ms >= ").push_bind(from);
                }
                if let Some(to) = filter.to_ms {
                    query.push(" AND at_ms < ").push_bind(to);
                }
                if let Some(action) = &filter.action {
                    query.push(" AND action = ").push_bind(action.clone());
                }
                if let Some(org) = &filter.org {
                    query.push(" AND actor_org = ").push_bind(org.clone());
                }
                if let Some(id) = &filter.referral_id {
                    query.push(" AND referral_id = ").push_bind(id.clone());
                }
                if let Some(key) = &filter.subject_key {
                    query.push(" AND subject_key = ").push_bind(key.clone());
                }
                if let Some(after) = filter.after_seq {
                    query.push(" AND seq > ").push_bind(after);
                }
                query.push(" ORDER BY seq LIMIT ").push_bind(filter.limit);
                let rows = query.build().fetch_all(&self.pool).await?;
                rows.iter().map(Self::audit_from_row).collect()
            }

            async fn audit_head(&self) -> Result<(i64, String), StoreError> {
                let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?;
                Ok((row.try_get("seq")?, row.try_get("hash")?))
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Written>, StoreError> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row = sqlx::query($head_query).fetch_one(&mut *tx).await?;
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
                                "INSERT INTO policy_versions (number, version, author_org, author_subject, note, created_ms, files) \
                                 SELECT COALESCE(MAX(number), 0) + 1, $1, $2, $3, $4, $5, $6 FROM policy_versions \
                                 RETURNING number",
                            )
                            .bind(&policy.version)
                            .bind(&policy.author_org)
                            .bind(&policy.author_subject)
                            .bind(&policy.note)
                            .bind(policy.created_ms)
                            .bind(&policy.files)
                            .fetch_one(&mut *tx)
                            .await?
                            .try_get("number")?;
                            Written::PolicyStored { number, seq: chain(&mut head, audit, &mut records) }
                        }
                        Write::Reply { reply, audit, brings_forward } => {
                            Self::queue_reply(&mut tx, reply).await?;
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
                        Write::Settle { entry_id, settlement, at_ms, audit } => {
                            if Self::settle(&mut tx, entry_id, settlement, *at_ms).await? {
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::AlreadySettled
                            }
                        }
                        Write::KeepPacket { entry_id, packet, sealed_from } => Self::keep_packet(&mut tx, entry_id, packet, sealed_from).await?,
                        Write::Narrow { referral_id, narrowing, withdrawal, at_ms, audit } => {
                            match Self::narrow(&mut tx, referral_id, narrowing, withdrawal, *at_ms).await? {
                                Written::Withdrawn { peer_notified, .. } => Written::Withdrawn { seq: chain(&mut head, audit, &mut records), peer_notified },
                                other => other,
                            }
                        }
                        Write::Withdraw { referral_id, withdrawal, at_ms, audit } => match Self::withdraw(&mut tx, referral_id, withdrawal, *at_ms).await? {
                            Some(peer_notified) => Written::Withdrawn { seq: chain(&mut head, audit, &mut records), peer_notified },
                            None => Written::AlreadySettled,
                        },
                        Write::RetentionErase { erasure, at_ms, audit } => {
                            if Self::erase_retained(&mut tx, erasure, *at_ms).await? {
                                Written::Audited { seq: chain(&mut head, audit, &mut records) }
                            } else {
                                Written::AlreadySettled
                            }
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
                Ok(deliveries + pushes)
            }
        }
    };
}

sql_store!(
    SqliteStore,
    sqlx::sqlite::SqliteRow,
    // Takes the write lock at once: a deferred transaction that read first
    // fails outright (not after the busy timeout) when another connection
    // wrote meanwhile, and the outbox worker writes beside the batch writer.
    "BEGIN IMMEDIATE",
    "SELECT seq, hash FROM audit_head WHERE id = 1",
    // One statement, hence one write transaction: two workers cannot both claim a row.
    format!(
        "UPDATE outbox SET next_attempt_ms = $1, attempts = attempts + 1, claim_node = $4, claim_instance = $5 WHERE id IN \
         (SELECT id FROM outbox WHERE state = '{}' AND next_attempt_ms <= $2 ORDER BY next_attempt_ms LIMIT $3) \
         RETURNING id",
        OutboxState::Pending
    ),
    format!(
        "UPDATE inbox SET next_push_ms = $1, push_attempts = push_attempts + 1, claim_node = $4, claim_instance = $5 WHERE packet_id IN \
         (SELECT packet_id FROM inbox WHERE state IN {} AND next_push_ms <= $2 ORDER BY next_push_ms LIMIT $3) \
         RETURNING packet_id",
        list(&InboxState::PUSHING)
    )
);
sql_store!(
    PostgresStore,
    sqlx::postgres::PgRow,
    "BEGIN",
    "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
    // Replicas sharing the database skip each other's locked rows instead of waiting.
    format!(
        "UPDATE outbox SET next_attempt_ms = $1, attempts = attempts + 1, claim_node = $4, claim_instance = $5 WHERE id IN \
         (SELECT id FROM outbox WHERE state = '{}' AND next_attempt_ms <= $2 ORDER BY next_attempt_ms LIMIT $3 \
         FOR UPDATE SKIP LOCKED) RETURNING id",
        OutboxState::Pending
    ),
    format!(
        "UPDATE inbox SET next_push_ms = $1, push_attempts = push_attempts + 1, claim_node = $4, claim_instance = $5 WHERE packet_id IN \
         (SELECT packet_id FROM inbox WHERE state IN {} AND next_push_ms <= $2 ORDER BY next_push_ms LIMIT $3 \
         FOR UPDATE SKIP LOCKED) RETURNING packet_id",
        list(&InboxState::PUSHING)
    )
);
