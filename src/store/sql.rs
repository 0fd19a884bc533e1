//! The SQL of the store, written once for both backends: every statement is
//! portable (`$n` placeholders, `ON CONFLICT`, `RETURNING`, integer
//! milliseconds, text JSON). The backends differ only in how they connect
//! and in how a transaction takes the audit chain head: PostgreSQL locks the
//! head row, so that replicas sharing one database append in turn.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row};

use super::{
    AuditFilter, DisclosureRow, NewReferral, PolicyVersionRecord, SealedPayload, Store, StoreError, StoredReferral,
    TimelineEntry, Write, Written,
};
use crate::audit::{AuditEvent, AuditRecord};
use crate::config::sqlite_path;

const REFERRAL_COLUMNS: &str = "id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, \
     destination_country, purpose, outcome, policy_version, decision, consent, response, status, created_ms";

const AUDIT_COLUMNS: &str =
    "seq, at_ms, actor_org, actor_subject, action, referral_id, subject_key, policy_version, outcome, reasons, prev_hash, hash";

/// The embedded store: one SQLite file in WAL mode.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// The production store: PostgreSQL, optionally in its own schema.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl SqliteStore {
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let path = sqlite_path(url).ok_or_else(|| StoreError::Unavailable("not an sqlite URL".to_owned()))?;
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable(format!("{}: {e}", parent.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an accepted referral survives a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(max_connections).connect_with(options).await?;
        sqlx::migrate!("schemas/db/sqlite").run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self { pool })
    }

    /// The pool, for tests and maintenance commands that must reach below the port.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl PostgresStore {
    pub async fn open(url: &str, schema: Option<&str>, max_connections: u32) -> Result<Self, StoreError> {
        let mut options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if let Some(schema) = schema {
            // `schema` is checked by the configuration: lower-case letters, digits, `_`.
            let mut connection = sqlx::PgConnection::connect_with(&options).await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).execute(&mut connection).await?;
            connection.close().await?;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("schemas/db/postgres").run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn audit_reasons(record: &AuditRecord) -> String {
    serde_json::to_string(&record.reasons).unwrap_or_else(|_| "[]".to_owned())
}

macro_rules! sql_store {
    ($store:ident, $row:ty, $head_query:literal) => {
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
                    status: row.try_get("status")?,
                    created_ms: row.try_get("created_ms")?,
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

            /// Inserts a referral unless its idempotency key is taken; `false` if taken.
            async fn insert_referral(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                new: &NewReferral,
            ) -> Result<bool, sqlx::Error> {
                let referral = &new.record;
                let inserted = sqlx::query(
                    "INSERT INTO referrals (id, sender_org, idempotency_key, request_fingerprint, subject_key, \
                     destination_org, destination_country, purpose, outcome, policy_version, decision, consent, \
                     response, status, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                     ON CONFLICT (sender_org, idempotency_key) DO NOTHING",
                )
                .bind(&referral.id)
                .bind(&referral.sender_org)
                .bind(&referral.idempotency_key)
                .bind(&referral.request_fingerprint)
                .bind(&referral.subject_key)
                .bind(&referral.destination_org)
                .bind(&referral.destination_country)
                .bind(&referral.purpose)
                .bind(&referral.outcome)
                .bind(&referral.policy_version)
                .bind(&referral.decision)
                .bind(&referral.consent)
                .bind(&referral.response)
                .bind(&referral.status)
                .bind(referral.created_ms)
                .execute(&mut *connection)
                .await?
                .rows_affected()
                    == 1;
                if !inserted {
                    return Ok(false);
                }
                sqlx::query("INSERT INTO referral_events (referral_id, status, at_ms) VALUES ($1, $2, $3)")
                    .bind(&referral.id)
                    .bind(&referral.status)
                    .bind(referral.created_ms)
                    .execute(&mut *connection)
                    .await?;
                if let (Some(payload), Some(country)) = (&new.payload, &referral.destination_country) {
                    sqlx::query(
                        "INSERT INTO outbox (referral_id, destination_country, sealed, key_id, next_attempt_ms, created_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&referral.id)
                    .bind(country)
                    .bind(&payload.sealed)
                    .bind(&payload.key_id)
                    .bind(referral.created_ms)
                    .bind(referral.created_ms)
                    .execute(&mut *connection)
                    .await?;
                }
                Ok(true)
            }

            async fn append_audit(
                connection: &mut <<$row as Row>::Database as sqlx::Database>::Connection,
                head: &mut (i64, String),
                event: &AuditEvent,
            ) -> Result<i64, sqlx::Error> {
                let record = event.clone().into_record(head.0 + 1, head.1.clone());
                sqlx::query(
                    "INSERT INTO audit_log (seq, at_ms, actor_org, actor_subject, action, referral_id, subject_key, \
                     policy_version, outcome, reasons, prev_hash, hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(record.seq)
                .bind(record.at_ms)
                .bind(&record.actor_org)
                .bind(&record.actor_subject)
                .bind(&record.action)
                .bind(&record.referral_id)
                .bind(&record.subject_key)
                .bind(&record.policy_version)
                .bind(&record.outcome)
                .bind(audit_reasons(&record))
                .bind(&record.prev_hash)
                .bind(&record.hash)
                .execute(&mut *connection)
                .await?;
                *head = (record.seq, record.hash);
                Ok(head.0)
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn write_batch(&self, batch: &[Write]) -> Result<Vec<Written>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query($head_query).fetch_one(&mut *tx).await?;
                let mut head: (i64, String) = (row.try_get("seq")?, row.try_get("hash")?);
                let mut results = Vec::with_capacity(batch.len());
                for write in batch {
                    let result = match write {
                        Write::Referral { referral, audit } => {
                            if Self::insert_referral(&mut tx, referral).await? {
                                Written::Audited { seq: Self::append_audit(&mut tx, &mut head, audit).await? }
                            } else {
                                Written::DuplicateKey
                            }
                        }
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
                            let seq = Self::append_audit(&mut tx, &mut head, audit).await?;
                            Written::PolicyStored { number, seq }
                        }
                        Write::Audit(event) => Written::Audited { seq: Self::append_audit(&mut tx, &mut head, event).await? },
                    };
                    results.push(result);
                }
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(head.0)
                    .bind(&head.1)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(results)
            }

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
                let rows = sqlx::query("SELECT status, at_ms FROM referral_events WHERE referral_id = $1 ORDER BY id")
                    .bind(referral_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| Ok(TimelineEntry { status: row.try_get("status")?, at_ms: row.try_get("at_ms")? }))
                    .collect::<Result<_, sqlx::Error>>()?)
            }

            async fn sealed_payload(&self, referral_id: &str) -> Result<Option<SealedPayload>, StoreError> {
                let row = sqlx::query("SELECT sealed, key_id FROM outbox WHERE referral_id = $1")
                    .bind(referral_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .map(|row| Ok::<_, sqlx::Error>(SealedPayload { sealed: row.try_get("sealed")?, key_id: row.try_get("key_id")? }))
                    .transpose()?)
            }

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

            async fn disclosures(&self, subject_key: &str) -> Result<Vec<DisclosureRow>, StoreError> {
                let rows = sqlx::query(
                    "SELECT id, sender_org, destination_org, destination_country, purpose, decision, consent, \
                     policy_version, status, created_ms FROM referrals \
                     WHERE subject_key = $1 AND outcome = 'allow' ORDER BY created_ms, id",
                )
                .bind(subject_key)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        Ok(DisclosureRow {
                            referral_id: row.try_get("id")?,
                            sender_org: row.try_get("sender_org")?,
                            destination_org: row.try_get("destination_org")?,
                            destination_country: row.try_get("destination_country")?,
                            purpose: row.try_get("purpose")?,
                            decision: row.try_get("decision")?,
                            consent: row.try_get("consent")?,
                            policy_version: row.try_get("policy_version")?,
                            status: row.try_get("status")?,
                            created_ms: row.try_get("created_ms")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?)
            }

            async fn audit_head(&self) -> Result<(i64, String), StoreError> {
                let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?;
                Ok((row.try_get("seq")?, row.try_get("hash")?))
            }

            async fn outbox_depth(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS depth FROM outbox WHERE state = 'pending'").fetch_one(&self.pool).await?;
                Ok(row.try_get("depth")?)
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

sql_store!(SqliteStore, sqlx::sqlite::SqliteRow, "SELECT seq, hash FROM audit_head WHERE id = 1");
sql_store!(PostgresStore, sqlx::postgres::PgRow, "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE");
