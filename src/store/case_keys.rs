//! The case-key store: every case's data key, wrapped, kept apart from the
//! data it opens, so that destroying a key here erases the case in every
//! copy of the database (see `crypto::case_keys`).
//!
//! SQLite: a file of its own beside the gateway's database, with
//! `secure_delete` on and its WAL truncated after each destruction, so that
//! no page of either file still holds a destroyed key. PostgreSQL: a schema
//! of its own (or a database: `[database] case_keys_url`); PostgreSQL leaves
//! a deleted row's bytes in the table's free space until they are
//! overwritten, which `docs/data-protection.md` weighs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row};

use super::StoreError;
use crate::config::{sqlite_path, DatabaseConfig};
use crate::crypto::case_keys::WrappedCaseKey;

/// Keys read, stored or destroyed per statement: far below both backends' bind limits.
const KEYS_PER_STATEMENT: usize = 500;

#[async_trait]
pub trait CaseKeyStore: Send + Sync + std::fmt::Debug {
    /// Stores wrapped keys, durably, before it returns: nothing may be
    /// sealed under a key that a crash could lose.
    async fn put(&self, keys: &[WrappedCaseKey], at_ms: i64) -> Result<(), StoreError>;
    /// The wrapped keys held for `ids`; destroyed or unknown ids are absent.
    async fn get(&self, ids: &[String]) -> Result<Vec<WrappedCaseKey>, StoreError>;
    /// Destroys the keys of `ids`; answers how many were held, once the
    /// deletion is committed.
    async fn destroy(&self, ids: &[String]) -> Result<u64, StoreError>;
    /// After a destruction: wipes what of the destroyed keys the storage
    /// still holds outside its table (SQLite's write-ahead log). Apart from
    /// [`CaseKeyStore::destroy`], so that a slow wipe never turns a committed
    /// destruction into a failure.
    async fn scrub_destroyed(&self) -> Result<(), StoreError>;
}

/// Opens (creating and migrating if needed) the case-key store for the
/// gateway's database configuration.
pub async fn open(config: &DatabaseConfig) -> Result<Arc<dyn CaseKeyStore>, StoreError> {
    let url = config.case_keys_url.clone().unwrap_or_else(|| config.url.clone());
    match sqlite_path(&url) {
        Some(path) => {
            let path = if config.case_keys_url.is_some() { path.to_owned() } else { beside(path) };
            let keys = SqliteCaseKeys::open_with(&path, config.max_connections, config.acquire_timeout()).await?;
            let keys: Arc<dyn CaseKeyStore> = Arc::new(keys);
            Ok(Arc::new(super::deadline::Deadlined::new(keys, config.statement_timeout())))
        }
        None => {
            if config.case_keys_url.is_none() {
                // Not an error: a single-database set-up is how one starts. But
                // a dump of that database then holds the keys with the data.
                tracing::warn!(
                    "case keys are kept in the data's own PostgreSQL database: a backup of it can still be read after an erasure; \
                     set [database] case_keys_url to another database"
                );
            }
            let schema = match &config.schema {
                Some(schema) => format!("{schema}_case_keys"),
                None => "case_keys".to_owned(),
            };
            let keys = PostgresCaseKeys::open(&url, &schema, config).await?;
            let keys: Arc<dyn CaseKeyStore> = Arc::new(keys);
            Ok(Arc::new(super::deadline::Deadlined::new(keys, config.statement_timeout())))
        }
    }
}

/// The case-key file for a database file: `var/gateway.db` → `var/gateway.case-keys.db`.
pub fn beside(database_path: &str) -> String {
    let path = Path::new(database_path);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "gateway".to_owned());
    path.with_file_name(format!("{stem}.case-keys.db")).to_string_lossy().into_owned()
}

#[derive(Debug, Clone)]
pub struct SqliteCaseKeys {
    pool: SqlitePool,
}

#[derive(Debug, Clone)]
pub struct PostgresCaseKeys {
    pool: PgPool,
}

/// SQLite's `cache_size` for the case-key store: negative, in KiB per connection.
const CASE_KEY_CACHE_SIZE: &str = "-256";

impl SqliteCaseKeys {
    pub async fn open(path: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::open_with(path, max_connections, Duration::from_secs(10)).await
    }

    pub async fn open_with(path: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Self, StoreError> {
        // A deleted key's bytes are overwritten with zeros, not left in a free page.
        // journal_size_limit 0: every checkpoint that empties the WAL also truncates it.
        // cache_size: a case key is one small row read by its id, so a page
        // cache of 256 KiB per connection holds the index's upper levels;
        // SQLite's default (2 MiB per connection, filled as the table grows)
        // only added to the gateway's memory (`performance.md`, soak).
        let options = super::sql::sqlite_file(path)?
            .pragma("secure_delete", "ON")
            .pragma("journal_size_limit", "0")
            .pragma("cache_size", CASE_KEY_CACHE_SIZE);
        let pool = SqlitePoolOptions::new().max_connections(max_connections).acquire_timeout(acquire_timeout).connect_with(options).await?;
        sqlx::migrate!("schemas/db/sqlite-case-keys").run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl PostgresCaseKeys {
    pub async fn open(url: &str, schema: &str, config: &DatabaseConfig) -> Result<Self, StoreError> {
        // The data schema's name is checked by the configuration; this adds a fixed suffix.
        if schema.len() > 63 {
            return Err(StoreError::Unavailable("the case-key schema name is longer than PostgreSQL allows".to_owned()));
        }
        let options = super::sql::postgres_options(url, config.statement_timeout())?;
        super::sql::create_schema(&options, schema, config.connect_timeout()).await?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options.options([("search_path", schema)]))
            .await?;
        super::sql::migrate_postgres(&pool, &sqlx::migrate!("schemas/db/postgres-case-keys")).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

macro_rules! case_key_store {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl CaseKeyStore for $store {
            async fn put(&self, keys: &[WrappedCaseKey], at_ms: i64) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                for chunk in keys.chunks(KEYS_PER_STATEMENT) {
                    // `persistent(false)`: the text depends on the batch's size (see store::sql).
                    let mut query = QueryBuilder::<$db>::new("INSERT INTO case_keys (id, wrapped, created_ms) ");
                    query.push_values(chunk, |mut row, key| {
                        row.push_bind(key.id.clone()).push_bind(key.wrapped.clone()).push_bind(at_ms);
                    });
                    query.build().persistent(false).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get(&self, ids: &[String]) -> Result<Vec<WrappedCaseKey>, StoreError> {
                let mut found = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(KEYS_PER_STATEMENT) {
                    let mut query = QueryBuilder::<$db>::new("SELECT id, wrapped FROM case_keys WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id.clone());
                    }
                    query.push(")");
                    for row in query.build().persistent(false).fetch_all(&self.pool).await? {
                        found.push(WrappedCaseKey { id: row.try_get("id")?, wrapped: row.try_get("wrapped")? });
                    }
                }
                Ok(found)
            }

            async fn destroy(&self, ids: &[String]) -> Result<u64, StoreError> {
                let mut destroyed = 0;
                let mut tx = self.pool.begin().await?;
                for chunk in ids.chunks(KEYS_PER_STATEMENT) {
                    let mut query = QueryBuilder::<$db>::new("DELETE FROM case_keys WHERE id IN (");
                    let mut list = query.separated(", ");
                    for id in chunk {
                        list.push_bind(id.clone());
                    }
                    query.push(")");
                    destroyed += query.build().persistent(false).execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(destroyed)
            }

            async fn scrub_destroyed(&self) -> Result<(), StoreError> {
                self.after_destroy().await
            }
        }
    };
}

case_key_store!(SqliteCaseKeys, sqlx::Sqlite);
case_key_store!(PostgresCaseKeys, sqlx::Postgres);

impl SqliteCaseKeys {
    /// Copies the WAL into the database file and empties it: the page images
    /// in the WAL that still held the destroyed keys are gone with it. A
    /// reader can hold the WAL for a moment; the checkpoint is tried again.
    async fn after_destroy(&self) -> Result<(), StoreError> {
        for _ in 0..20 {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await?;
            if row.try_get::<i64, _>(0)? == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The keys are gone from the table; their bytes may remain in the WAL
        // until the next destruction (or checkpoint) truncates it.
        tracing::warn!("case-key store: WAL still held by a reader after a destruction; truncated at the next one");
        Ok(())
    }
}

impl PostgresCaseKeys {
    async fn after_destroy(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection of the pool, not only the first, keeps its page
    /// cache within the bound: the pragma is part of the connect options.
    #[tokio::test]
    async fn every_sqlite_connection_has_the_small_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteCaseKeys::open(&dir.path().join("case-keys.db").display().to_string(), 2).await.unwrap();
        let (mut first, mut second) = (store.pool().acquire().await.unwrap(), store.pool().acquire().await.unwrap());
        for connection in [&mut first, &mut second] {
            let size: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&mut **connection).await.unwrap();
            assert_eq!(size.to_string(), CASE_KEY_CACHE_SIZE);
        }
    }
}
