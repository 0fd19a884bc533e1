//! Flat as data grows (issue 23 §3): the same federation as the
//! `federation` bench (IOM Rome submits at Italy's gateway, IOM Banjul
//! acknowledges at the Gambia's) measured with 1,000, 100,000 or 1,000,000
//! referrals already stored.
//!
//! The stored referrals are made by a bulk loader, not the API:
//!
//! 1. **A history through the gateways.** `TEMPLATE` referrals (each
//!    person a subject of their own) are submitted, delivered and
//!    acknowledged; of them, one in five is then accepted by IOM Banjul,
//!    one in ten narrowed (the person withdraws the health category) and
//!    one in ten withdrawn whole, and every status, withdrawal and
//!    confirmation is left to travel and settle.
//! 2. **Copied in the database.** With both gateways stopped, the rows of
//!    that history are copied, round after round, until Italy's gateway
//!    holds the size: referrals, their timelines and decision facts, the
//!    settled outbox entries and the withdrawal records at both gateways,
//!    the Gambian gateway's inbox, and the audit log of each (re-chained,
//!    each entry hashed as the gateway would, and the whole chain walked
//!    once loaded). A copy gets new ids (the UUID's second group is the
//!    round, its version 8), a subject and a digest of its own, and times
//!    moved later, the rounds spread evenly over `SPAN_DAYS`, so that a
//!    log's times rise with its chain as they do in service. A case still
//!    held in the inbox is sealed under a case key of its own with its
//!    packet id as associated data: each copy of one is opened and sealed
//!    again under a new key (one more row in the case-key store).
//! 3. **Measured**: the databases' size, still stopped; then, started
//!    again on a clock just past the last copy, one request at a time
//!    (p50, p99): `GET /v1/referrals/{id}` of any referral, the audit
//!    query by referral, by subject, by the history's rarest action and
//!    for a day drawn in the span, the inbox list in `due` order and in
//!    arrival order from a cursor drawn anywhere, and a case read from the
//!    inbox; then the end-to-end rate (submissions and acknowledgements
//!    together, the recipient tailing from its last case), the process's
//!    resident memory as it ends (both gateways and their clients), and
//!    the submission rate alone (the median of three rounds).
//!
//! At Italy, each referral's case key is copied under an id of the copy's
//! own (the sweep destroys it), but as the history's wrapped bytes: a
//! copy's decision facts, copied as they are, cannot be opened (a policy
//! impact replay reaching back to them would fail; the gateways are
//! started again keeping decision facts longer than the copies' span, so
//! that they do not forget four months of them at once). Nothing measured
//! here opens them.
//!
//! Every copied table is counted before and after; the copies' reads must
//! all answer `200` (a copy sealed wrongly would fail its inbox with 500).
//!
//! With `sweep`, each size over `SWEPT` is then started once more, on a
//! clock where `SWEPT` referrals are past their retention: how long
//! Italy's sweep takes to erase them, and the end-to-end rate meanwhile
//! (submitted with a consent running a year longer, or they would be
//! refused), against the rate measured before; a sweep not done in
//! 1,200 s at a share of 10 % or more, in 2,400 s × ⌈10 / share⌉ under
//! it (4,800 s at 5 %, 24,000 s at 1 %), fails the run. `share=N` sets the
//! sweep's `backlog_share_percent` (default: the gateway's); `control`
//! makes the same restart and run on a clock where nothing is past its
//! retention (the rate of that run without a sweep).
//!
//! With `apart` (not with `sweep` or `control`), each size is then run end
//! to end once more (20,000 referrals) with each gateway in a process of
//! its own: this binary again, holding one gateway on its databases and a
//! clock of its own running on from the measurements' (`gateway-alone`);
//! the rate, and each process's resident memory meanwhile (the most
//! `VmRSS` seen, its anonymous part, and `VmHWM`). SQLite's page cache is
//! in the gateway's process; PostgreSQL's memory is the server's, not
//! counted. `keep` leaves a PostgreSQL run's schemas in place, to look at
//! their plans afterwards (drop them by hand).
//!
//!   cargo bench --bench growth                                  # both backends, 1,000 and 100,000
//!   cargo bench --bench growth -- sqlite sizes=1000,1000000     # one backend, the sizes named
//!   cargo bench --bench growth -- sizes=200000 sweep            # the sweep of 100,000
//!   cargo bench --bench growth -- sizes=110000 sweep share=100  # the same, flat out
//!   cargo bench --bench growth -- sizes=110000 control          # the same run, nothing to sweep
//!   cargo bench --bench growth -- postgres sizes=1000000 apart keep
//!
//! Under `cargo test`, a short run per backend: 40 referrals grown to 120,
//! 20 end to end with the gateways apart, 30 then swept.

// The two gateways' configurations and databases are pairs indexed 0 (Italy)
// and 1 (the Gambia); JSON's `value["key"]` gives `Null` for what is missing.
#![allow(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use referral_gateway::audit::AuditRecord;
use referral_gateway::demo::fixtures;
use referral_gateway::store::AuditFilter;
use serde_json::{json, Value};

#[path = "support/federation.rs"]
mod federation;

/// The binary's allocator (`src/main.rs`), so that the resident memory
/// measured is what the gateways would hold in the binary.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use federation::{acknowledge_all, acknowledge_all_at, client, referral_template, start, submit_all, submit_all_of, submit_all_to, Backend, BoxError, Federation, Stopped};

/// Referrals of the history made through the gateways (full runs).
const TEMPLATE: u64 = 500;
/// The copies' times are spread over this many days after the history.
const SPAN_DAYS: i64 = 120;
/// Requests per latency figure (full runs).
const SAMPLES: usize = 1000;
/// Referrals the sweep run finds past their retention (full runs).
const SWEPT: i64 = 100_000;

/// What one size measured.
struct Figures {
    size: u64,
    load: Duration,
    index_build: Duration,
    /// Migration 0028's audit hours counted at Italy.
    hours_build: Duration,
    end_to_end: f64,
    submissions: f64,
    get_referral: Latency,
    audit_by_referral: Latency,
    audit_by_subject: Latency,
    audit_by_action: Latency,
    audit_by_day: Latency,
    inbox_due: Latency,
    inbox_tail: Latency,
    inbox_case: Latency,
    bytes: (u64, u64),
    rss_kib: u64,
    apart: Option<Apart>,
    sweep: Option<Sweep>,
}

/// End to end with each gateway in a process of its own (`apart`): the
/// rate, and each gateway's resident memory meanwhile (Italy, the Gambia).
struct Apart {
    count: u64,
    end_to_end: f64,
    memory: [Memory; 2],
}

/// A gateway process's resident memory while end to end ran, KiB.
#[derive(Clone, Copy, Default)]
struct Memory {
    /// The most `VmRSS` seen (read every 100 ms), and its anonymous part (`RssAnon`: the heap) then.
    largest: u64,
    anonymous: u64,
    /// `VmHWM` as the run ended: the peak since the process started, its start-up included.
    peak: u64,
}

/// The retention sweep run: the gateways started again where `due`
/// referrals sent from Italy are past their retention (and, at the
/// Gambia, the cases received with them), end to end going on meanwhile.
struct Sweep {
    due: i64,
    /// The sweep's `backlog_share_percent`.
    share: u32,
    /// Until no referral past its retention is left unerased at Italy.
    duration: Duration,
    /// End to end while the sweep ran, as the acknowledgements came.
    end_to_end: f64,
}

#[derive(Clone, Copy, Default)]
struct Latency {
    p50: Duration,
    p99: Duration,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {:.1} ms, p99 {:.1} ms", self.p50.as_secs_f64() * 1000.0, self.p99.as_secs_f64() * 1000.0)
    }
}

/// One gateway's database, opened beside the gateway (or while it is
/// stopped). Statements are not kept prepared: the loader's are large and
/// would sit in the process the gateways' memory is measured in.
#[derive(Clone)]
enum Database {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool, String),
}

impl Database {
    async fn open(config: &referral_gateway::config::GatewayConfig) -> Result<Self, BoxError> {
        let database = &config.database;
        Ok(match &database.schema {
            None => Database::Sqlite(sqlx::SqlitePool::connect(&database.url).await?),
            Some(schema) => {
                let schema = schema.clone();
                let search_path = schema.clone();
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .after_connect(move |connection, _| {
                        let search_path = search_path.clone();
                        Box::pin(async move {
                            sqlx::query(&format!("SET search_path TO \"{search_path}\"")).execute(connection).await?;
                            Ok(())
                        })
                    })
                    .connect(&database.url)
                    .await?;
                Database::Postgres(pool, schema)
            }
        })
    }

    async fn execute(&self, sql: &str) -> Result<u64, BoxError> {
        Ok(match self {
            Database::Sqlite(pool) => sqlx::query(sql).persistent(false).execute(pool).await?.rows_affected(),
            Database::Postgres(pool, _) => sqlx::query(sql).persistent(false).execute(pool).await?.rows_affected(),
        })
    }

    async fn number(&self, sql: &str) -> Result<i64, BoxError> {
        Ok(match self {
            Database::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).persistent(false).fetch_one(pool).await?,
            Database::Postgres(pool, _) => sqlx::query_scalar::<_, i64>(sql).persistent(false).fetch_one(pool).await?,
        })
    }

    async fn texts(&self, sql: &str) -> Result<Vec<String>, BoxError> {
        Ok(match self {
            Database::Sqlite(pool) => sqlx::query_scalar::<_, String>(sql).persistent(false).fetch_all(pool).await?,
            Database::Postgres(pool, _) => sqlx::query_scalar::<_, String>(sql).persistent(false).fetch_all(pool).await?,
        })
    }

    /// Each inbox entry named: its claims sealed as given, under the key given.
    async fn set_sealed(&self, rows: &[(Vec<u8>, String, String)]) -> Result<(), BoxError> {
        const UPDATE: &str = "UPDATE inbox SET sealed = $1, key_id = $2 WHERE packet_id = $3";
        match self {
            Database::Sqlite(pool) => {
                let mut transaction = pool.begin().await?;
                for (sealed, key_id, packet_id) in rows {
                    sqlx::query(UPDATE).bind(sealed).bind(key_id).bind(packet_id).execute(&mut *transaction).await?;
                }
                transaction.commit().await?;
            }
            Database::Postgres(pool, _) => {
                let mut transaction = pool.begin().await?;
                for (sealed, key_id, packet_id) in rows {
                    sqlx::query(UPDATE).bind(sealed).bind(key_id).bind(packet_id).execute(&mut *transaction).await?;
                }
                transaction.commit().await?;
            }
        }
        Ok(())
    }

    /// A table's columns, in order.
    async fn columns(&self, table: &str) -> Result<Vec<String>, BoxError> {
        match self {
            Database::Sqlite(_) => self.texts(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid")).await,
            Database::Postgres(_, schema) => {
                self.texts(&format!(
                    "SELECT column_name::text FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
                ))
                .await
            }
        }
    }

    /// `n` as four hexadecimal digits.
    fn hex4(&self, n: &str) -> String {
        match self {
            Database::Sqlite(_) => format!("printf('%04x', {n})"),
            Database::Postgres(..) => format!("lpad(to_hex({n}), 4, '0')"),
        }
    }

    /// The rounds `first..=last` as a table `rounds(n)` to join.
    fn rounds(&self, first: i64, last: i64) -> String {
        match self {
            Database::Sqlite(_) => format!("(WITH RECURSIVE r(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM r WHERE n < {last}) SELECT n FROM r) AS rounds"),
            Database::Postgres(..) => format!("generate_series({first}, {last}) AS rounds(n)"),
        }
    }

    /// Bytes the gateway's tables take, with their indexes (and, for
    /// SQLite, the file's free pages): the gateway's database and its case
    /// keys'. Measured with the gateways stopped.
    async fn size(&self, config: &referral_gateway::config::GatewayConfig) -> Result<u64, BoxError> {
        match self {
            Database::Sqlite(pool) => {
                // The pages written since the last checkpoint into the file, once.
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
                let path = config.database.url.trim_start_matches("sqlite://").to_owned();
                let keys = referral_gateway::store::case_keys::beside(&path);
                let mut bytes = 0;
                for file in [path.clone(), format!("{path}-wal"), keys.clone(), format!("{keys}-wal")] {
                    bytes += std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                }
                Ok(bytes)
            }
            Database::Postgres(_, schema) => Ok(self
                .number(&format!(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
                     WHERE s.nspname IN ('{schema}', '{schema}_case_keys') AND c.relkind = 'r'"
                ))
                .await? as u64),
        }
    }
}

/// A copy's id: a UUID's second group replaced by the round and its
/// version made 8 (the gateway's own ids are version 7, so that no copy
/// is ever an original); any other text suffixed with the round.
fn copied_id(sql: &Database, column: &str) -> String {
    format!(
        "CASE WHEN {column} IS NULL THEN NULL WHEN length({column}) = 36 AND substr({column}, 9, 1) = '-' \
         THEN substr({column}, 1, 9) || {} || '-8' || substr({column}, 16) ELSE {column} || '#' || rounds.n END",
        sql.hex4("rounds.n")
    )
}

/// A copy's case key id (32 hexadecimal digits, as the vault destroys
/// only such ids): the last eight digits are the round and `c0de`.
fn copied_key(sql: &Database) -> String {
    format!("CASE WHEN length(key_id) = 32 THEN substr(key_id, 1, 24) || {} || 'c0de' ELSE key_id END", sql.hex4("rounds.n"))
}

/// The same mapping in Rust, for the audit log.
fn copied_id_of(id: &str, round: i64) -> String {
    if id.len() == 36 && id.get(8..9) == Some("-") {
        format!("{}{round:04x}-8{}", id.get(..9).unwrap_or_default(), id.get(15..).unwrap_or_default())
    } else {
        format!("{id}#{round}")
    }
}

/// A copy's subject: the keyed hash with its last four digits the round's.
fn copied_subject_of(key: &str, round: i64) -> String {
    format!("{}{round:04x}", key.get(..key.len().saturating_sub(4)).unwrap_or_default())
}

/// What a column of a copied row holds.
fn copied_value(sql: &Database, table: &str, column: &str, shift_ms: &str, strides: &Strides) -> Option<String> {
    Some(match column {
        // Numbered by the database.
        "id" if table == "referral_events" => return None,
        "id" | "referral_id" | "packet_id" | "in_reply_to" | "carried_by" | "answers_packet" | "answers_referral" | "onward_of" | "withdrawal_id" => {
            copied_id(sql, column)
        }
        "visible_seq" => format!("visible_seq + CAST(rounds.n AS BIGINT) * {}", strides.visible),
        "packet_sha256" => format!("substr(packet_sha256, 1, length(packet_sha256) - 4) || {}", sql.hex4("rounds.n")),
        "subject_key" => format!("CASE WHEN subject_key IS NULL THEN NULL ELSE substr(subject_key, 1, length(subject_key) - 4) || {} END", sql.hex4("rounds.n")),
        "idempotency_key" => "idempotency_key || '#' || rounds.n".to_owned(),
        "listed_seq" => format!("listed_seq + CAST(rounds.n AS BIGINT) * {}", strides.listed),
        "claim_node" | "claim_instance" => "NULL".to_owned(),
        // A referral's case key is its own: the copy's is copied too (`copy_case_keys`).
        "key_id" if table == "decision_facts" || table == "outbox" => copied_key(sql),
        // Moved later, but not a time that stands for "never" (past the year 2255) or for none.
        // (`due_ms` 0 stands for "nothing awaited".)
        time if time.ends_with("_ms") => format!("CASE WHEN {time} > 9000000000000 OR {time} = 0 THEN {time} ELSE {time} + {shift_ms} END"),
        other => other.to_owned(),
    })
}

/// How far a round moves the numbers that must stay unique.
struct Strides {
    listed: i64,
    visible: i64,
}

/// The tables copied: each with the column whose id tells the history's
/// rows from copies, and which of the history's rows are copied.
const COPIED: [(&str, &str, &str); 7] = [
    ("referrals", "id", "1 = 1"),
    ("referral_events", "referral_id", "1 = 1"),
    ("decision_facts", "referral_id", "1 = 1"),
    // Settled only: nothing copied is to be sent.
    ("outbox", "id", "state <> 'pending'"),
    ("withdrawn_packets", "packet_id", "1 = 1"),
    ("narrowed_packets", "packet_id", "1 = 1"),
    // Sealed again by `reseal_inbox` once copied.
    ("inbox", "packet_id", "1 = 1"),
];

/// Copies the history's rows in `sql` `rounds` times, round `n` moved `n * round_ms` later.
async fn copy_rows(sql: &Database, rounds: i64, round_ms: i64) -> Result<(), BoxError> {
    // Rounds per statement: a transaction of tens of thousands of rows.
    const CHUNK: i64 = 50;
    let strides = Strides {
        listed: sql.number("SELECT COALESCE(MAX(listed_seq), 0) + 1 FROM referrals").await?,
        visible: sql.number("SELECT COALESCE(MAX(visible_seq), 0) + 1 FROM inbox").await?,
    };
    // 64-bit: PostgreSQL's generate_series counts in 32 bits.
    let shift = format!("CAST(rounds.n AS BIGINT) * {round_ms}");
    for (table, key, rows) in COPIED {
        let columns = sql.columns(table).await?;
        let (names, values): (Vec<String>, Vec<String>) =
            columns.iter().filter_map(|column| copied_value(sql, table, column, &shift, &strides).map(|value| (column.clone(), value))).unzip();
        let order = if table == "referral_events" { " ORDER BY rounds.n, id" } else { "" };
        // From the history's own rows, never from copies made by an earlier chunk.
        let history = format!("{key} NOT LIKE '%#%' AND substr({key}, 15, 1) <> '8'");
        let before = sql.number(&format!("SELECT COUNT(*) FROM {table}")).await?;
        let copied = sql.number(&format!("SELECT COUNT(*) FROM {table} WHERE {rows} AND {history}")).await?;
        let mut first = 1;
        while first <= rounds {
            let last = (first + CHUNK - 1).min(rounds);
            sql.execute(&format!(
                "INSERT INTO {table} ({}) SELECT {} FROM {table}, {} WHERE {rows} AND {history}{order}",
                names.join(", "),
                values.join(", "),
                sql.rounds(first, last),
            ))
            .await?;
            first = last + 1;
        }
        let after = sql.number(&format!("SELECT COUNT(*) FROM {table}")).await?;
        if after != before + rounds * copied {
            return Err(format!("{table}: {before} rows, {copied} of them copied {rounds} times, but {after} rows now").into());
        }
    }
    Ok(())
}

/// Italy's case keys, one per referral in service (it seals the payload
/// until delivery and the decision facts until retention; the sweep
/// destroys it): each history referral's key copied under the copy's key
/// id, into the case-key store (a file of its own on SQLite, a schema of
/// its own on PostgreSQL). The wrapped bytes are the history's: a copy's
/// key is destroyed, never opened.
async fn copy_case_keys(sql: &Database, config: &referral_gateway::config::GatewayConfig, rounds: i64) -> Result<u64, BoxError> {
    let ids = sql
        .texts("SELECT DISTINCT key_id FROM outbox WHERE packet_type = 'referral' AND length(key_id) = 32 AND substr(id, 15, 1) <> '8' AND id NOT LIKE '%#%'")
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let case_keys = referral_gateway::store::case_keys::open(&config.database).await?;
    let keys = case_keys.get(&ids).await?;
    let at_ms = fixtures::written_at().timestamp_millis();
    let mut copies = Vec::new();
    let mut written = 0;
    for round in 1..=rounds {
        for key in &keys {
            let id = format!("{}{round:04x}c0de", key.id.get(..24).unwrap_or_default());
            copies.push(referral_gateway::crypto::case_keys::WrappedCaseKey { id, wrapped: key.wrapped.clone() });
            if copies.len() == 2000 {
                case_keys.put(&copies, at_ms).await?;
                written += copies.len() as u64;
                copies.clear();
            }
        }
    }
    if !copies.is_empty() {
        case_keys.put(&copies, at_ms).await?;
    }
    Ok(written + copies.len() as u64)
}

/// A case received is sealed under a case key of its own, with its packet
/// id as associated data: each copy of one still held is opened from the
/// history's case and sealed again under a new key, its claims naming the
/// copy's packet id. How many were sealed again.
async fn reseal_inbox(sql: &Database, config: &referral_gateway::config::GatewayConfig, rounds: i64) -> Result<u64, BoxError> {
    use referral_gateway::crypto::case_keys::{new_case_key, unwrap_case_key};
    let kek = referral_gateway::crypto::at_rest::KeyRing::load(&config.keys.dir)?;
    let case_keys = referral_gateway::store::case_keys::open(&config.database).await?;
    let query = "SELECT packet_id, sealed, key_id FROM inbox WHERE length(sealed) > 0 AND substr(packet_id, 15, 1) <> '8' AND packet_id NOT LIKE '%#%'";
    let held: Vec<(String, Vec<u8>, String)> = match sql {
        Database::Sqlite(pool) => sqlx::query_as(query).fetch_all(pool).await?,
        Database::Postgres(pool, _) => sqlx::query_as(query).fetch_all(pool).await?,
    };
    let ids: Vec<String> = held.iter().map(|(_, _, key_id)| key_id.clone()).collect();
    let wrapped = case_keys.get(&ids).await?;
    let mut cases = Vec::with_capacity(held.len());
    for (packet_id, sealed, key_id) in &held {
        let wrapped = wrapped.iter().find(|w| &w.id == key_id).ok_or("a held case without its key")?;
        let claims: Value = serde_json::from_slice(&unwrap_case_key(&kek, wrapped)?.open(sealed, packet_id.as_bytes())?)?;
        cases.push((packet_id, claims));
    }
    let at_ms = fixtures::written_at().timestamp_millis();
    let (mut keys, mut rows) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (packet_id, claims) in &cases {
            let copy = copied_id_of(packet_id, round);
            let mut claims = claims.clone();
            claims["packet_id"] = json!(copy);
            let (key, wrapped) = new_case_key(&kek)?;
            rows.push((key.seal(&serde_json::to_vec(&claims)?, copy.as_bytes())?, key.id().to_owned(), copy));
            keys.push(wrapped);
            if rows.len() == 1000 {
                case_keys.put(&keys, at_ms).await?;
                sql.set_sealed(&rows).await?;
                keys.clear();
                rows.clear();
            }
        }
    }
    case_keys.put(&keys, at_ms).await?;
    sql.set_sealed(&rows).await?;
    Ok(cases.len() as u64 * rounds as u64)
}

/// SQL text of a literal: `NULL`, or quoted.
fn literal(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_owned(),
        Some(text) => format!("'{}'", text.replace('\'', "''")),
    }
}

/// Appends `rounds` copies of the history's audit entries to the chain,
/// each linked and hashed as the gateway appends.
async fn copy_audit(sql: &Database, history: &[AuditRecord], rounds: i64, round_ms: i64) -> Result<(), BoxError> {
    let (mut seq, mut hash) = match sql {
        Database::Sqlite(pool) => sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool).await?,
        Database::Postgres(pool, _) => sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool).await?,
    };
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for original in history {
            let mut record = AuditRecord {
                seq: seq + 1,
                at_ms: original.at_ms + round * round_ms,
                referral_id: original.referral_id.as_deref().map(|id| copied_id_of(id, round)),
                subject_key: original.subject_key.as_deref().map(|key| copied_subject_of(key, round)),
                prev_hash: hash.clone(),
                hash: String::new(),
                ..original.clone()
            };
            record.hash = record.computed_hash();
            seq = record.seq;
            hash = record.hash.clone();
            rows.push(format!(
                "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                record.seq,
                record.at_ms,
                literal(record.actor_org.as_deref()),
                literal(Some(&record.actor_subject)),
                literal(Some(&record.action)),
                literal(record.referral_id.as_deref()),
                literal(record.subject_key.as_deref()),
                literal(record.policy_version.as_deref()),
                literal(Some(&record.outcome)),
                literal(Some(&serde_json::to_string(&record.reasons)?)),
                literal(Some(&record.prev_hash)),
                literal(Some(&record.hash)),
                literal(record.counterpart_org.as_deref()),
                literal(record.counterpart_subject.as_deref()),
            ));
            if rows.len() == 2000 {
                insert_audit(sql, &mut rows).await?;
            }
        }
    }
    insert_audit(sql, &mut rows).await?;
    sql.execute(&format!("UPDATE audit_head SET seq = {seq}, hash = '{hash}' WHERE id = 1")).await?;
    Ok(())
}

async fn insert_audit(sql: &Database, rows: &mut Vec<String>) -> Result<(), BoxError> {
    if rows.is_empty() {
        return Ok(());
    }
    sql.execute(&format!(
        "INSERT INTO audit_log (seq, at_ms, actor_org, actor_subject, action, referral_id, subject_key, policy_version, outcome, reasons, prev_hash, hash, \
         counterpart_org, counterpart_subject) VALUES {}",
        rows.join(", ")
    ))
    .await?;
    rows.clear();
    Ok(())
}

/// The history through the gateways: `count` referrals submitted and
/// acknowledged, some then accepted, narrowed or withdrawn, all settled;
/// the audit entries it left at each gateway.
async fn make_history(federation: &Federation, databases: &[Database; 2], count: u64) -> Result<History, BoxError> {
    let limit = Duration::from_secs(600);
    // Entries before the history (the gateways' start) are not copied.
    let first = [databases[0].number("SELECT seq FROM audit_head").await?, databases[1].number("SELECT seq FROM audit_head").await?];
    let recipient = acknowledge_all(federation, count, limit, None);
    let (acknowledged, ids) = tokio::try_join!(recipient, submit_all(federation, count, "growth-history"))?;
    if ids.len() as u64 != count || acknowledged.cases != count {
        return Err(format!("history: {count} submitted, {} accepted, {} acknowledged", ids.len(), acknowledged.cases).into());
    }
    let rome = client(&federation.files, "iom-rome")?;
    let banjul = client(&federation.files, "iom-banjul")?;
    let (ita, gmb) = (federation.ita.local_addr().port(), federation.gmb.local_addr().port());
    let mut packets: Vec<&String> = acknowledged.at.keys().collect();
    packets.sort();
    for (n, packet_id) in packets.iter().enumerate() {
        if n % 5 == 0 {
            let url = format!("https://localhost:{gmb}/v1/inbox/{packet_id}/status");
            rome_or_banjul(&banjul, &url, json!({ "status": "accepted" }), 202).await?;
        }
    }
    for (n, id) in ids.iter().enumerate() {
        let url = format!("https://localhost:{ita}/v1/referrals/{id}/consent-withdrawal");
        match n % 10 {
            3 => rome_or_banjul(&rome, &url, json!({ "categories": ["health"] }), 200).await?,
            7 => rome_or_banjul(&rome, &url, json!({}), 200).await?,
            _ => {}
        }
    }
    settle(databases, limit).await.map_err(|error| format!("history: {error}"))?;
    Ok([audit_after(&federation.ita, first[0]).await?, audit_after(&federation.gmb, first[1]).await?])
}

/// Until nothing is left to send, nor received and not yet screened, at
/// either gateway, twice in a row.
async fn settle(databases: &[Database; 2], limit: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while quiet < 2 {
        let mut busy = 0;
        for sql in databases {
            busy += sql.number("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").await?;
            busy += sql.number("SELECT COUNT(*) FROM inbox WHERE state = 'received'").await?;
        }
        quiet = if busy == 0 { quiet + 1 } else { 0 };
        if Instant::now() > deadline {
            return Err(format!("{busy} packets still to send or screen").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn rome_or_banjul(client: &reqwest::Client, url: &str, body: Value, expected: u16) -> Result<(), BoxError> {
    let response = client.post(url).json(&body).send().await?;
    if response.status().as_u16() != expected {
        return Err(format!("{url}: HTTP {}", response.status()).into());
    }
    Ok(())
}

/// The `q` quantile (0 to 1) of sorted durations, nearest rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// `GET` each of `urls` in turn with `client`, each answered `200`.
async fn latency(client: &reqwest::Client, urls: &[String]) -> Result<Latency, BoxError> {
    let mut times = Vec::with_capacity(urls.len());
    for url in urls {
        let started = Instant::now();
        let response = client.get(url).send().await?;
        let status = response.status();
        response.bytes().await?;
        times.push(started.elapsed());
        if status.as_u16() != 200 {
            return Err(format!("{url}: HTTP {status}").into());
        }
    }
    times.sort();
    Ok(Latency { p50: quantile(&times, 0.5), p99: quantile(&times, 0.99) })
}

/// The Gambian recipient's arrival cursor after its last case.
async fn tail_cursor(federation: &Federation) -> Result<Option<String>, BoxError> {
    let banjul = client(&federation.files, "iom-banjul")?;
    let base = format!("https://localhost:{}/v1/inbox", federation.gmb.local_addr().port());
    let mut cursor: Option<String> = None;
    loop {
        let mut request = banjul.get(&base).query(&[("order", "arrival"), ("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor.as_str())]);
        }
        let page: Value = request.send().await?.error_for_status()?.json().await?;
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) if page["items"].as_array().is_some_and(|items| !items.is_empty()) => cursor = Some(next.to_owned()),
            _ => return Ok(cursor),
        }
    }
}

/// Resident memory of this process (both gateways), in KiB.
fn rss_kib() -> u64 {
    status_kib("self", ["VmRSS:"]).map_or(0, |[rss]| rss)
}

/// Fields of `/proc/<process>/status` (`self`, or a process id) counted in KiB, by name.
fn status_kib<const N: usize>(process: &str, names: [&str; N]) -> Result<[u64; N], BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{process}/status"))?;
    let mut values = [0; N];
    for (value, name) in values.iter_mut().zip(names) {
        let line = status.lines().find(|line| line.starts_with(name)).ok_or_else(|| format!("no {name} line"))?;
        *value = line.split_whitespace().nth(1).ok_or("an empty line")?.parse()?;
    }
    Ok(values)
}

/// One size on one backend: the history, the copies, then the measurements.
async fn grow(backend: Backend, size: u64, full: bool, runs: Runs) -> Result<Figures, BoxError> {
    let Runs { sweeping, control, share, .. } = runs;
    let history_size = if full { TEMPLATE } else { 40 }.min(size);
    let federation = start(backend, false, None).await?;
    let databases = [Database::open(&federation.files.configs[0].1).await?, Database::open(&federation.files.configs[1].1).await?];
    let history = make_history(&federation, &databases, history_size).await;
    let stopped = federation.stop().await;
    let mut rare = String::new();
    let loaded = match history {
        Ok(history) => {
            rare = rarest_action(&history[0]);
            load(&databases, &stopped.files().configs, &history, size, history_size).await
        }
        Err(error) => Err(error),
    };
    let (load, index_build, hours_build) = match loaded {
        Ok(load) => load,
        Err(error) => {
            stopped.tear_down().await;
            return Err(error);
        }
    };
    // Decision facts are kept for impact replays as long as `impact_days`: a gateway
    // forgets them day by day, not the copies' four months at once as it starts again.
    let mut stopped = stopped;
    for (_, config) in &mut stopped.files_mut().configs {
        config.policy.impact_days = u32::try_from(SPAN_DAYS).unwrap_or(u32::MAX) + 30;
    }
    let stored = databases[0].number("SELECT COUNT(*) FROM referrals").await;
    // What the size takes, before the measurements add their referrals.
    let configs = &stopped.files().configs;
    let sizes = async { Ok::<_, BoxError>((databases[0].size(&configs[0].1).await?, databases[1].size(&configs[1].1).await?)) }.await;
    let measured_from = fixtures::written_at() + chrono::Duration::days(SPAN_DAYS + 1);
    let launched = Instant::now();
    let federation = stopped.launch_at(measured_from).await?;
    // The copied logs are chains as the gateways write them: `audit verify` would pass.
    let verified = async {
        for app in [&federation.ita, &federation.gmb] {
            verify_chain(app).await?;
        }
        Ok::<_, BoxError>(())
    }
    .await;
    if let Err(error) = verified {
        federation.tear_down().await;
        return Err(error);
    }
    let (samples, count) = if full { (SAMPLES, 3000) } else { (20, 20) };
    let measured = measure(&federation, &databases, history_size, &rare, samples, count).await;
    let sweeping = sweeping && (!full || size as i64 > SWEPT);
    if (sweeping || runs.apart) && measured.is_ok() {
        // The measurements' last referrals delivered, so that the recipient's tail holds the next run's only.
        if let Err(error) = settle(&databases, Duration::from_secs(120)).await {
            federation.tear_down().await;
            return Err(format!("after the measurements: {error}").into());
        }
    }
    let mut stopped = federation.stop().await;
    let apart = if runs.apart && measured.is_ok() {
        // The measurements' clock, run on: the children's start where the gateways stopped.
        let impact_days = stopped.files().configs[0].1.policy.impact_days;
        Some(measure_apart(&mut stopped, &databases, (measured_from, launched), impact_days, if full { 20_000 } else { 20 }).await)
    } else {
        None
    };
    let sweep = if sweeping && measured.is_ok() && apart.as_ref().is_none_or(Result::is_ok) {
        if let Some(share) = share {
            for (_, config) in &mut stopped.files_mut().configs {
                config.retention.backlog_share_percent = share;
            }
        }
        let share = stopped.files().configs[0].1.retention.backlog_share_percent;
        let swept = if full { SWEPT } else { 30 };
        // The clock just past the retention of the `swept`th referral to expire (one withdrawn whole was erased then).
        let erasable = format!("retention_until_ms IS NOT NULL AND erased_ms IS NULL AND status NOT IN ({})", withdrawn_whole());
        let at = databases[0].number(&format!("SELECT retention_until_ms FROM referrals WHERE {erasable} ORDER BY retention_until_ms LIMIT 1 OFFSET {}", swept - 1)).await;
        let at = match at {
            // The control: the same restart and run with nothing past its retention, on the measurements' clock.
            Ok(_) if control => measured_from.timestamp_millis(),
            Ok(at) => at + 1,
            Err(error) => {
                stopped.tear_down().await;
                return Err(format!("fewer than {swept} referrals to sweep: {error}").into());
            }
        };
        let left = format!("SELECT COUNT(*) FROM referrals WHERE {erasable} AND retention_until_ms < {at}");
        let due = databases[0].number(&left).await?;
        // Timed from the start: the sweep begins with the gateway.
        stage(&format!("the sweep of {due}, end to end meanwhile"));
        let started = Instant::now();
        let federation = stopped.launch_at(chrono::DateTime::from_timestamp_millis(at).ok_or("no such time")?).await?;
        let sweep = measure_sweep(&federation, &databases[0], (&left, due, share), started, if full { 20_000 } else { 20 }).await;
        stopped = federation.stop().await;
        Some(sweep)
    } else {
        None
    };
    if runs.keep && backend == Backend::Postgres {
        println!("kept the run's PostgreSQL schemas: {}_*", stopped.keep());
    } else {
        stopped.tear_down().await;
    }
    let (end_to_end, submissions, [get_referral, audit_by_referral, audit_by_subject, audit_by_action, audit_by_day, inbox_due, inbox_tail, inbox_case], rss) =
        measured?;
    Ok(Figures {
        size: stored? as u64,
        load,
        index_build,
        hours_build,
        end_to_end,
        submissions,
        get_referral,
        audit_by_referral,
        audit_by_subject,
        audit_by_action,
        audit_by_day,
        inbox_due,
        inbox_tail,
        inbox_case,
        bytes: sizes?,
        rss_kib: rss,
        apart: apart.transpose()?,
        sweep: sweep.transpose()?,
    })
}

/// What runs after the measurements, and what is kept (the bench's arguments).
#[derive(Clone, Copy, Default)]
struct Runs {
    /// `sweep`: the retention sweep run.
    sweeping: bool,
    /// `control`: the sweep run's restart and end to end with nothing past its retention.
    control: bool,
    /// `share=N`: the sweep's `backlog_share_percent`.
    share: Option<u32>,
    /// `apart`: end to end with each gateway in a process of its own.
    apart: bool,
    /// `keep`: a PostgreSQL run's schemas left in place.
    keep: bool,
}

/// The first argument that makes this binary a child holding one gateway (see [`serve_alone`]).
const ALONE: &str = "gateway-alone";

/// This binary again, holding one gateway on its databases ([`serve_alone`]):
/// killed if the bench fails before stopping it.
struct Alone {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    api: u16,
    federation: u16,
}

impl Drop for Alone {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Alone {
    /// Starts the gateway of `config` on a clock running from `at` (see [`Self::listening`]).
    fn spawn(config: &std::path::Path, at: chrono::DateTime<chrono::Utc>, impact_days: u32) -> Result<Self, BoxError> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg(ALONE)
            .arg(config)
            .arg(at.timestamp_millis().to_string())
            .arg(impact_days.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("the child has no stdout")?;
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, stdin, lines, api: 0, federation: 0 })
    }

    /// Waits until the child listens: its ports.
    fn listening(&mut self) -> Result<(), BoxError> {
        let listening = self.expect("listening ", Duration::from_secs(600))?;
        let ports: Vec<u16> = listening.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
        let [api, federation] = ports[..] else { return Err(format!("the child said {listening:?}").into()) };
        (self.api, self.federation) = (api, federation);
        Ok(())
    }

    /// The rest of the child's next line, which must start with `prefix`.
    fn expect(&mut self, prefix: &str, limit: Duration) -> Result<String, BoxError> {
        let line = match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Err(format!("the child said nothing starting {prefix:?} within {limit:?}").into()),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait()?;
                return Err(format!("the child closed its output ({status}) before saying {prefix:?}").into());
            }
        };
        line.strip_prefix(prefix).map(str::to_owned).ok_or_else(|| format!("the child said {line:?}, not {prefix:?}").into())
    }

    /// Has the child read the directory file again; the serial it put in force.
    fn refresh(&mut self) -> Result<u64, BoxError> {
        use std::io::Write;
        let stdin = self.stdin.as_mut().ok_or("the child's stdin is closed")?;
        writeln!(stdin, "refresh")?;
        stdin.flush()?;
        Ok(self.expect("in force ", Duration::from_secs(60))?.parse()?)
    }

    /// `VmRSS`, `RssAnon` and `VmHWM` of the child, KiB.
    fn memory(&self) -> Result<[u64; 3], BoxError> {
        status_kib(&self.child.id().to_string(), ["VmRSS:", "RssAnon:", "VmHWM:"])
    }

    /// Closes the child's stdin (it shuts its gateway down) and waits for it to exit, successfully.
    fn stop(mut self) -> Result<(), BoxError> {
        drop(self.stdin.take());
        // Its output closes as it exits.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Err("the child did not stop within 120 s of its stdin closing".into()),
            }
        }
        let status = self.child.wait()?;
        if status.success() { Ok(()) } else { Err(format!("the child exited with {status}").into()) }
    }
}

/// The child's side: `<config> <start ms> <impact_days>`. Builds the
/// gateway of the configuration file on a clock running from the start
/// (the binary's own clock would be the calendar's), says `listening
/// <api port> <federation port>`, then for each `refresh` line on stdin
/// reads its directory file again and says `in force <serial>`; shuts
/// the gateway down when stdin closes.
fn serve_alone(args: &[String]) -> Result<(), BoxError> {
    use std::io::BufRead;
    let [config, at, impact_days] = args else { return Err(format!("{ALONE} takes <config> <start ms> <impact_days>").into()) };
    let mut config = referral_gateway::config::GatewayConfig::load(std::path::Path::new(config))?;
    config.policy.impact_days = impact_days.parse()?;
    let at = chrono::DateTime::from_timestamp_millis(at.parse()?).ok_or("no such time")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let clock = std::sync::Arc::new(referral_gateway::app::SteadyClock::starting_at(at));
        let app = referral_gateway::startup::Application::build(&config, clock).await?;
        println!("listening {} {}", app.local_addr().port(), app.federation_addr().map(|addr| addr.port()).unwrap_or_default());
        let (sender, mut commands) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(command) = commands.recv().await {
            if command.trim() == "refresh" {
                // The gateway's own refresh task (every `refresh_seconds`) may have read the new file first.
                match app.refresh_directory().await {
                    referral_gateway::startup::DirectoryRefresh::Refused(reason) => println!("refused {reason}"),
                    _ => println!("in force {}", app.gateway().directory().serial()),
                }
            }
        }
        app.shut_down().await;
        Ok::<_, BoxError>(())
    })
}

/// End to end, `count` referrals, with each gateway in a process of its
/// own on the stopped federation's files, their clocks running on from
/// `clock` (a time, and the instant it was): the rate, and each process's
/// resident memory meanwhile. The children stop once everything has settled.
async fn measure_apart(stopped: &mut Stopped, databases: &[Database; 2], clock: (chrono::DateTime<chrono::Utc>, Instant), impact_days: u32, count: u64) -> Result<Apart, BoxError> {
    let now = || clock.0 + chrono::Duration::milliseconds(i64::try_from(clock.1.elapsed().as_millis()).unwrap_or(i64::MAX));
    let root = stopped.files().root.clone();
    let mut gateways = Vec::new();
    // Both started before either is waited for: their clocks agree to the spawn's time.
    for (country, _) in &stopped.files().configs {
        let config = root.join(country.as_str().to_ascii_lowercase()).join("gateway.toml");
        gateways.push((*country, Alone::spawn(&config, now(), impact_days)?));
    }
    for (_, alone) in &mut gateways {
        alone.listening()?;
    }
    let endpoints: Vec<_> = gateways.iter().map(|(country, alone)| (*country, format!("https://127.0.0.1:{}", alone.federation))).collect();
    let serial = stopped.publish_next(&endpoints, now())?;
    for (country, alone) in &mut gateways {
        let in_force = alone.refresh()?;
        if in_force != serial {
            return Err(format!("{country}: directory edition {in_force} in force, not {serial}").into());
        }
    }
    let [(_, italy), (_, gambia)] = &gateways[..] else { return Err("not two gateways".into()) };
    let files = stopped.files();
    // The recipient tails from the last case stored (read in the database: walking the
    // inbox through the child would count that walk in its memory).
    let cursor = Some(databases[1].number("SELECT COALESCE(MAX(visible_seq), 0) FROM inbox").await?.to_string());
    let template = referral_template()?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let sample = async {
        let mut memory = [Memory::default(); 2];
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            for (seen, alone) in memory.iter_mut().zip([italy, gambia]) {
                let [rss, anonymous, _] = alone.memory()?;
                if rss > seen.largest {
                    (seen.largest, seen.anonymous) = (rss, anonymous);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (seen, alone) in memory.iter_mut().zip([italy, gambia]) {
            seen.peak = alone.memory()?[2];
        }
        Ok::<_, BoxError>(memory)
    };
    let run = async {
        let started = Instant::now();
        let limit = Duration::from_secs(if count < 1000 { 120 } else { 1200 });
        let recipient = acknowledge_all_at(files, gambia.api, count, limit, cursor);
        let ran = tokio::try_join!(recipient, submit_all_to(files, italy.api, &template, count, "growth-apart"));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (acknowledged, accepted) = ran?;
        if acknowledged.cases != count || accepted.len() as u64 != count {
            return Err(format!("apart: {count} submitted, {} accepted, {} acknowledged", accepted.len(), acknowledged.cases).into());
        }
        Ok::<_, BoxError>(acknowledged.cases as f64 / started.elapsed().as_secs_f64())
    };
    let (memory, end_to_end) = tokio::join!(sample, run);
    let (memory, end_to_end) = (memory?, end_to_end?);
    settle(databases, Duration::from_secs(120)).await.map_err(|error| format!("after the run apart: {error}"))?;
    for (_, alone) in gateways {
        alone.stop()?;
    }
    Ok(Apart { count, end_to_end, memory })
}

/// The history's audit entries at each gateway (after the gateways' start).
type History = [Vec<AuditRecord>; 2];

/// The copies of the history, with both gateways stopped, until Italy's
/// gateway holds `size` referrals; how long it took, how long the
/// Gambian gateway's inbox index of migration 0027 then takes to build,
/// and Italy's audit hours of migration 0028 to count.
async fn load(
    databases: &[Database; 2],
    configs: &[(referral_gateway::domain::CountryCode, referral_gateway::config::GatewayConfig)],
    history: &History,
    size: u64,
    history_size: u64,
) -> Result<(Duration, Duration, Duration), BoxError> {
    let rounds = (size / history_size).saturating_sub(1) as i64;
    let round_ms = SPAN_DAYS * 86_400_000 / rounds.max(1);
    let loading = Instant::now();
    for ((sql, entries), (_, config)) in databases.iter().zip(history).zip(configs) {
        copy_case_keys(sql, config, rounds).await?;
        copy_rows(sql, rounds, round_ms).await?;
        reseal_inbox(sql, config, rounds).await?;
        copy_audit(sql, entries, rounds, round_ms).await?;
        if let Database::Postgres(pool, _) = sql {
            // As autovacuum would in time: the inbox's re-sealing left a dead row per copy.
            for table in COPIED.iter().map(|(table, _, _)| *table).chain(["audit_log", "audit_hours"]) {
                sqlx::query(&format!("VACUUM (ANALYZE) {table}")).execute(pool).await?;
            }
        }
    }
    let loaded = loading.elapsed();
    // What migration 0027 costs a gateway of this size: its index built once more, beside it.
    let gambia = &databases[1];
    let building = Instant::now();
    gambia.execute("CREATE INDEX inbox_by_recipient_seq_timed ON inbox (recipient_org, visible_seq)").await?;
    let built = building.elapsed();
    gambia.execute("DROP INDEX inbox_by_recipient_seq_timed").await?;
    // What migration 0028 costs: Italy's audit hours counted once more, beside
    // those its trigger kept as the copies were appended, which must be the same.
    let italy = &databases[0];
    let counting = Instant::now();
    italy
        .execute(
            "CREATE TABLE audit_hours_timed AS SELECT at_ms / 3600000 AS hour, MIN(seq) AS first_seq, MAX(seq) AS last_seq \
             FROM audit_log GROUP BY at_ms / 3600000",
        )
        .await?;
    let counted = counting.elapsed();
    let compared = async {
        let kept = italy.number("SELECT COUNT(*) FROM audit_hours").await?;
        let recounted = italy.number("SELECT COUNT(*) FROM audit_hours_timed").await?;
        let same = italy
            .number("SELECT COUNT(*) FROM audit_hours h JOIN audit_hours_timed t ON t.hour = h.hour AND t.first_seq = h.first_seq AND t.last_seq = h.last_seq")
            .await?;
        if kept != recounted || same != kept {
            return Err(format!("audit hours: {kept} kept by the trigger, {recounted} counted again, {same} the same").into());
        }
        Ok::<_, BoxError>(())
    }
    .await;
    italy.execute("DROP TABLE audit_hours_timed").await?;
    compared?;
    Ok((loaded, built, counted))
}

/// Walks a gateway's whole audit chain, a page at a time, as `audit verify` does.
async fn verify_chain(app: &referral_gateway::startup::Application) -> Result<(), BoxError> {
    let mut verifier = referral_gateway::audit::ChainVerifier::default();
    let mut after = 0;
    loop {
        let page = app.gateway().store.audit(&AuditFilter { after_seq: Some(after), limit: 100_000, ..Default::default() }).await?;
        let Some(last) = page.last() else { return Ok(()) };
        after = last.seq;
        for record in &page {
            verifier.check(record)?;
        }
    }
}

/// A gateway's audit entries after `seq`, in chain order.
async fn audit_after(app: &referral_gateway::startup::Application, seq: i64) -> Result<Vec<AuditRecord>, BoxError> {
    let filter = AuditFilter { after_seq: Some(seq), limit: 10_000_000, ..Default::default() };
    Ok(app.gateway().store.audit(&filter).await?)
}

/// Says on standard error which stage of the measurements begins (or a
/// round of one ends), for whoever watches a long run: a profiler started
/// and stopped on the stage it is after.
fn stage(what: &str) {
    eprintln!("  growth stage: {what}");
}

/// The end-to-end and submission rates, the reads, and the resident memory as end to end ended.
type Measured = (f64, f64, [Latency; 8], u64);

/// The measurements on a grown federation: the reads, then the rates.
async fn measure(federation: &Federation, databases: &[Database; 2], history_size: u64, rare: &str, samples: usize, count: u64) -> Result<Measured, BoxError> {
    let (ita, gmb) = (federation.ita.local_addr().port(), federation.gmb.local_addr().port());
    let rome = client(&federation.files, "iom-rome")?;
    let dpo = client(&federation.files, "ita-dpo")?;
    let banjul = client(&federation.files, "iom-banjul")?;
    let ids = databases[0].texts(&format!("SELECT id FROM referrals ORDER BY random() LIMIT {samples}")).await?;
    let referrals: Vec<String> = ids.iter().map(|id| format!("https://localhost:{ita}/v1/referrals/{id}")).collect();
    let audit = |query: String| format!("https://localhost:{ita}/v1/audit?limit=50&{query}");
    let by_referral: Vec<String> = ids.iter().map(|id| audit(format!("referral_id={id}"))).collect();
    let by_subject: Vec<String> = (0..samples as u64).map(|n| audit(format!("subject_ref={}", federation::subject_ref("growth-history", n % history_size)))).collect();
    // The rarest action of the copied history; a day of the copies' span, each sample its own.
    let by_action: Vec<String> = (0..samples).map(|_| audit(format!("action={rare}"))).collect();
    let mut draw = Draw(0x9E37_79B9_7F4A_7C15);
    let day = |d: u64| (fixtures::written_at() + chrono::Duration::days(d as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let by_day: Vec<String> = (0..samples)
        .map(|_| {
            let d = 1 + draw.below(SPAN_DAYS as u64);
            audit(format!("from={}&to={}", day(d), day(d + 1)))
        })
        .collect();
    let due: Vec<String> = (0..samples).map(|_| format!("https://localhost:{gmb}/v1/inbox?order=due&limit=50")).collect();
    // Arrival order from a cursor anywhere in the inbox.
    let seqs = databases[1].number("SELECT COALESCE(MAX(visible_seq), 0) FROM inbox").await?;
    let tail: Vec<String> = (0..samples).map(|_| format!("https://localhost:{gmb}/v1/inbox?order=arrival&limit=50&cursor={}", draw.below(seqs.max(1) as u64))).collect();
    // Cases IOM Banjul still holds, copies among them (each must open: a copy sealed wrongly answers 500).
    let held = databases[1]
        .texts(&format!(
            "SELECT packet_id FROM inbox WHERE length(sealed) > 0 AND recipient_org = 'gmb-iom-banjul' AND state IN ('available', 'acknowledged') \
             ORDER BY random() LIMIT {samples}"
        ))
        .await?;
    let cases: Vec<String> = held.iter().map(|id| format!("https://localhost:{gmb}/v1/inbox/{id}")).collect();
    // The reads first, on gateways with nothing else to do.
    let reads = [
        latency(&rome, &referrals).await?,
        latency(&dpo, &by_referral).await?,
        latency(&dpo, &by_subject).await?,
        latency(&dpo, &by_action).await?,
        latency(&dpo, &by_day).await?,
        latency(&banjul, &due).await?,
        latency(&banjul, &tail).await?,
        latency(&banjul, &cases).await?,
    ];
    // End to end: the recipient tails from its last case.
    let cursor = tail_cursor(federation).await?;
    stage(&format!("end to end, {count} referrals"));
    let started = Instant::now();
    let recipient = acknowledge_all(federation, count, Duration::from_secs(600), cursor);
    let (acknowledged, accepted) = tokio::try_join!(recipient, submit_all(federation, count, "growth-e2e"))?;
    let end_to_end = acknowledged.cases as f64 / started.elapsed().as_secs_f64();
    let rss = rss_kib();
    if acknowledged.cases != count || accepted.len() as u64 != count {
        return Err(format!("end to end: {count} submitted, {} accepted, {} acknowledged", accepted.len(), acknowledged.cases).into());
    }
    // Submissions alone (their deliveries go on behind), three times: the median, a round
    // being a few seconds of work. Each round starts with the last one's deliveries done.
    let mut rates = Vec::new();
    for round in 0..3 {
        settle(databases, Duration::from_secs(120)).await?;
        stage(&format!("submissions alone, round {} of 3", round + 1));
        let started = Instant::now();
        let accepted = submit_all(federation, count, &format!("growth-submit-{round}")).await?;
        rates.push(accepted.len() as f64 / started.elapsed().as_secs_f64());
        stage(&format!("submissions alone, round {} of 3 done", round + 1));
    }
    rates.sort_by(f64::total_cmp);
    Ok((end_to_end, rates[1], reads, rss))
}

/// The sweep run on gateways started at `started` where `due` referrals
/// are past their retention (`left` counts those not erased yet), the
/// sweep working `share` % of the time: `count` referrals end to end (their consent running a year
/// longer than the history's, or they would be refused) while the sweep
/// erases; the rate counts the acknowledgements answered before it ended
/// (all of them if nothing was due).
async fn measure_sweep(federation: &Federation, italy: &Database, (left, due, share): (&str, i64, u32), started: Instant, count: u64) -> Result<Sweep, BoxError> {
    // Under 10 %, 2,400 s × ⌈10 / share⌉: at 5 % of 200,000 the sweep erased 39/s
    // (performance.md), some 2,550 s for the backlog. A slow sweep is to be measured, not cut off.
    let limit = Duration::from_secs(if cfg!(debug_assertions) {
        30
    } else if share >= 10 {
        1200
    } else {
        2400 * u64::from(10_u32.div_ceil(share))
    });
    // Watched from now, whatever the end-to-end run is doing.
    let watcher = {
        let (italy, left) = (italy.clone(), left.to_owned());
        tokio::spawn(async move {
            loop {
                let unerased = italy.number(&left).await?;
                if unerased == 0 {
                    return Ok::<_, BoxError>(started.elapsed());
                }
                if started.elapsed() > limit {
                    return Err(format!("sweep: {unerased} of {due} referrals past their retention still there after {} s", limit.as_secs()).into());
                }
                // Seldom: the count reads the index the sweep is working through.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let template = referral_template()?.replace("2027-05-02T", "2028-05-02T");
    let cursor = tail_cursor(federation).await?;
    let submitting = Instant::now();
    let recipient = acknowledge_all(federation, count, Duration::from_secs(1200), cursor);
    let (acknowledged, accepted) = tokio::try_join!(recipient, submit_all_of(federation, &template, count, "growth-sweep"))?;
    if acknowledged.cases != count || accepted.len() as u64 != count {
        return Err(format!("sweep: {count} submitted, {} accepted, {} acknowledged", accepted.len(), acknowledged.cases).into());
    }
    let duration = watcher.await??;
    // The rate over the part of the run the sweep overlapped: from the first submission to the sweep's end (or the last acknowledgement);
    // with nothing to sweep (the control), over the whole run.
    let ended = if due == 0 { Instant::now() } else { started + duration };
    let during = acknowledged.at.values().filter(|at| **at <= ended).count();
    let last = acknowledged.at.values().max().copied().unwrap_or(ended).min(ended);
    let window = last.saturating_duration_since(submitting).as_secs_f64();
    Ok(Sweep { due, share, duration, end_to_end: if during == 0 || window <= 0.0 { 0.0 } else { during as f64 / window } })
}

/// The action of the fewest entries in a history (the first by name of those).
fn rarest_action(history: &[AuditRecord]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for record in history {
        *counts.entry(record.action.as_str()).or_default() += 1;
    }
    counts.iter().min_by_key(|(_, count)| **count).map(|(action, _)| (*action).to_owned()).unwrap_or_default()
}

/// Numbers drawn the same way in every run.
struct Draw(u64);

impl Draw {
    /// One below `bound` (at least 1).
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound.max(1)
    }
}

/// The referral statuses of a withdrawal of the whole consent, as an SQL
/// list: such a referral was erased then, and the sweep passes it over.
fn withdrawn_whole() -> String {
    use referral_gateway::domain::lifecycle::ReferralStatus;
    ReferralStatus::ALL.iter().filter(|status| status.is_withdrawn_whole()).map(|status| format!("'{}'", status.as_str())).collect::<Vec<_>>().join(", ")
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|first| first == ALONE) {
        return serve_alone(&args[1..]);
    }
    let full = args.iter().any(|a| a == "--bench");
    let sizes: Vec<u64> = match args.iter().find_map(|a| a.strip_prefix("sizes=")) {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None if full => vec![1_000, 100_000],
        None => vec![120],
    };
    // `sweep`: after the measurements at each size over `SWEPT`, the retention sweep run (always in the smoke run).
    let sweeping = args.iter().any(|a| a == "sweep") || !full;
    let share: Option<u32> = args.iter().find_map(|a| a.strip_prefix("share=")).map(str::parse).transpose()?;
    if share.is_some_and(|share| !(1..=100).contains(&share)) {
        return Err("share= takes a percentage, 1 to 100".into());
    }
    // `control`: the sweep run's restart and end-to-end run, on a clock where nothing is past its retention.
    let control = args.iter().any(|a| a == "control");
    let sweeping = sweeping || control;
    // `apart`: end to end again with each gateway in a process of its own (always in the smoke run); `keep`: PostgreSQL's schemas left.
    let apart = args.iter().any(|a| a == "apart") || !full;
    let keep = args.iter().any(|a| a == "keep");
    if full && apart && sweeping {
        // The run apart adds 20,000 cases and moves the clock on: the sweep run would no longer compare with the rate measured before it.
        return Err("apart is a run of its own: not with sweep or control".into());
    }
    let runs = Runs { sweeping, control, share, apart, keep };
    let only: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && !a.starts_with("sizes=") && !a.starts_with("share=") && !["sweep", "control", "apart", "keep"].contains(&a.as_str()))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = format!("{backend:?}").to_lowercase();
        if !(only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))) {
            continue;
        }
        if backend == Backend::Postgres {
            // Dead row versions weigh on PostgreSQL's figures (the sweep's most): say whether the server vacuums on its own.
            let server = runtime.block_on(sqlx::PgPool::connect(federation::POSTGRES_URL))?;
            let autovacuum: String = runtime.block_on(sqlx::query_scalar("SHOW autovacuum").fetch_one(&server))?;
            runtime.block_on(server.close());
            println!("{backend:?}: the server runs with autovacuum {autovacuum}");
        }
        let mut first: Option<(f64, f64)> = None;
        for &size in &sizes {
            let figures = runtime.block_on(grow(backend, size, full, runs))?;
            let (e2e, submitted) = *first.get_or_insert((figures.end_to_end, figures.submissions));
            println!(
                "{backend:?}, {} referrals stored (loaded in {:.1} s, migration 0027's index built in {:.2} s, 0028's audit hours counted in {:.2} s{}): end to end {:.0}/s ({:.0} % of the first size's), submissions {:.0}/s ({:.0} %); \
                 GET /v1/referrals/{{id}} {}; audit by referral {}; by subject {}; by a rare action {}; one day {}; inbox due {}; inbox from a cursor {}; a case from the inbox {}; \
                 database {:.1} MB at Italy ({:.0} bytes a referral), {:.1} MB at the Gambia; resident memory as end to end ended {:.0} MB (the bench's process: both gateways and their clients)",
                figures.size,
                figures.load.as_secs_f64(),
                figures.index_build.as_secs_f64(),
                figures.hours_build.as_secs_f64(),
                if full { "" } else { "; smoke run, debug build" },
                figures.end_to_end,
                100.0 * figures.end_to_end / e2e,
                figures.submissions,
                100.0 * figures.submissions / submitted,
                figures.get_referral,
                figures.audit_by_referral,
                figures.audit_by_subject,
                figures.audit_by_action,
                figures.audit_by_day,
                figures.inbox_due,
                figures.inbox_tail,
                figures.inbox_case,
                figures.bytes.0 as f64 / 1e6,
                figures.bytes.0 as f64 / figures.size.max(1) as f64,
                figures.bytes.1 as f64 / 1e6,
                figures.rss_kib as f64 / 1024.0,
            );
            if let Some(apart) = &figures.apart {
                let [italy, gambia] = apart.memory;
                let mb = |kib: u64| kib as f64 / 1024.0;
                println!(
                    "{backend:?}, {} referrals stored: each gateway in a process of its own, {} referrals end to end at {:.0}/s; resident memory meanwhile at most \
                     {:.0} MB at Italy ({:.0} MB of it anonymous; peak since its start {:.0} MB), {:.0} MB at the Gambia ({:.0} MB; {:.0} MB)",
                    figures.size,
                    apart.count,
                    apart.end_to_end,
                    mb(italy.largest),
                    mb(italy.anonymous),
                    mb(italy.peak),
                    mb(gambia.largest),
                    mb(gambia.anonymous),
                    mb(gambia.peak),
                );
            }
            if let Some(sweep) = figures.sweep.as_ref().filter(|sweep| sweep.due == 0) {
                println!(
                    "{backend:?}, {} referrals stored: started again with none past their retention (the control); end to end {:.0}/s, {:.0} % of the rate before",
                    figures.size,
                    sweep.end_to_end,
                    100.0 * sweep.end_to_end / figures.end_to_end,
                );
            } else if let Some(sweep) = figures.sweep.as_ref().filter(|sweep| sweep.end_to_end == 0.0) {
                println!(
                    "{backend:?}, {} referrals stored: started again with {} of them past their retention; Italy's sweep (working {} % of the time) erased them in {:.1} s, \
                     before any case submitted meanwhile was acknowledged",
                    figures.size,
                    sweep.due,
                    sweep.share,
                    sweep.duration.as_secs_f64(),
                );
            } else if let Some(sweep) = &figures.sweep {
                println!(
                    "{backend:?}, {} referrals stored: started again with {} of them past their retention; Italy's sweep (working {} % of the time) erased them in {:.1} s; \
                     end to end meanwhile {:.0}/s, {:.0} % of the rate before",
                    figures.size,
                    sweep.due,
                    sweep.share,
                    sweep.duration.as_secs_f64(),
                    sweep.end_to_end,
                    100.0 * sweep.end_to_end / figures.end_to_end,
                );
            }
        }
    }
    Ok(())
}
