//! The store port, directly: the same conformance suite on SQLite and
//! PostgreSQL, one module per aggregate trait (and one for the whole
//! port's batches and one for the schema). Here: the harness they share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use referral_gateway::audit::{Action, Actor, AuditEvent};
use referral_gateway::config::DatabaseConfig;
use referral_gateway::domain::lifecycle::{InboxState, ReferralEvent, ReferralStatus};
use referral_gateway::domain::priority::Priority;
use referral_gateway::store::writer::Writer;
use referral_gateway::store::{
    verify_audit_chain, AuditFilter, InboxChange, InboxMove, InboxQueue, StoredRetention, InboxReceipt, NewInboxEntry, NewOutboxEntry, NewPolicyVersion, NewReferral, NewWithdrawal, SealedFacts, SealedPayload, SentNarrowing, Settlement, Store,
    StoredPacket, StoredReferral, Write, Written,
};

use crate::helpers::{Backend, POSTGRES_URL};

mod audit;
mod batches;
mod callbacks;
mod inbox;
mod matching;
mod outbox;
mod policies;
mod referrals;
mod schema;

static NEXT: AtomicU64 = AtomicU64::new(0);

struct Opened {
    store: Arc<dyn Store>,
    config: DatabaseConfig,
    _dir: tempfile::TempDir,
}

async fn open(backend: Backend) -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let config = match backend {
        Backend::Sqlite => DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("store.db").display()),
            schema: None,
            max_connections: 4,
            case_keys_url: None,
            ..DatabaseConfig::default()
        },
        Backend::Postgres => DatabaseConfig {
            url: POSTGRES_URL.to_owned(),
            schema: Some(format!("rgwtest_{}_store_{n}", std::process::id())),
            max_connections: 4,
            case_keys_url: None,
            ..DatabaseConfig::default()
        },
    };
    let store = referral_gateway::store::open(&config).await.unwrap();
    Opened { store, config, _dir: dir }
}

fn at(minutes: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn event(minutes: i64, org: &str, action: Action) -> AuditEvent {
    AuditEvent::new(at(minutes), Actor { org: Some(org.to_owned()), subject: "client".to_owned() }, action, "ok")
}

fn referral(id: &str, sender: &str, key: &str, subject_key: &str, allowed: bool) -> NewReferral {
    NewReferral {
        record: StoredReferral {
            answers: None,
            id: id.to_owned(),
            sender_org: sender.to_owned(),
            idempotency_key: key.to_owned(),
            request_fingerprint: format!("fp-{id}"),
            subject_key: subject_key.to_owned(),
            destination_org: "gmb-iom-banjul".to_owned(),
            destination_country: Some("GMB".to_owned()),
            purpose: "return".to_owned(),
            outcome: if allowed { "allow" } else { "deny" }.to_owned(),
            policy_version: "sha256:0".to_owned(),
            decision: r#"{"sent":{"identity":{}}}"#.to_owned(),
            consent: "{}".to_owned(),
            policy_number: 1,
            status: if allowed { ReferralStatus::Queued } else { ReferralStatus::Denied },
            created_ms: at(0).timestamp_millis(),
            handover: false,
            priority: Priority::default(),
        },
        outbox: allowed.then(|| NewOutboxEntry {
            payload: SealedPayload { sealed: vec![1, 2, 3], key_id: "k".to_owned() },
            onward: None,
            consent_expires_ms: Some(at(60).timestamp_millis()),
            deadline_ms: at(60).timestamp_millis(),
            retention: None,
            end_to_end: false,
            held: false,
        }),
        emergency_override: None,
        // An allowed referral's facts are sealed under its payload's key; a denied one's under a key of their own.
        facts: Some(SealedFacts {
            sealed: SealedPayload { sealed: format!("facts of {id}").into_bytes(), key_id: if allowed { "k".to_owned() } else { format!("f-{id}") } },
            key_for_facts_only: !allowed,
        }),
        match_entry: None,
    }
}

/// Outbox entry `entry` delivered (its receipt `receipt-<entry>`) at minute `minutes`.
fn delivered(entry: &str, minutes: i64) -> Write {
    Write::Settle {
        entry_id: entry.to_owned(),
        settlement: Settlement::Delivered { receipt: format!("receipt-{entry}") },
        at_ms: at(minutes).timestamp_millis(),
        audit: event(minutes, "ITA", Action::PacketSend).referral(entry),
    }
}

fn submit(referral: NewReferral) -> Write {
    let audit = event(0, &referral.record.sender_org.clone(), Action::ReferralSubmit).referral(&referral.record.id);
    Write::Referral { referral: Box::new(referral), audit }
}

fn packet(id: &str, digest: &str) -> Write {
    Write::Inbox {
        entry: Box::new(NewInboxEntry {
            packet_id: id.to_owned(),
            issuer: "ITA".to_owned(),
            packet_sha256: digest.to_owned(),
            packet_type: "referral".to_owned(),
            recipient_org: "nga-iom-lagos".to_owned(),
            claims: SealedPayload { sealed: vec![9, 9, 9], key_id: "k".to_owned() },
            receipt: Some(format!("receipt-for-{digest}")),
            received_ms: at(0).timestamp_millis(),
            expires_ms: at(60 * 24 * 7).timestamp_millis(),
        }),
        audit: event(0, "ITA", Action::ReferralRead),
    }
}

fn make_visible(packet_id: &str, minutes: i64) -> Write {
    let queue = InboxQueue { priority: Some(Priority::Normal), acknowledge_by_ms: at(minutes + 72 * 60).timestamp_millis(), answer_by_ms: at(minutes + 14 * 24 * 60).timestamp_millis() };
    make_visible_as(packet_id, minutes, queue)
}

fn make_visible_as(packet_id: &str, minutes: i64, queue: InboxQueue) -> Write {
    let retention = StoredRetention { until_ms: at(600).timestamp_millis(), days_after_closure: None };
    let change = InboxChange {
        packet_id: packet_id.to_owned(),
        from: InboxState::Received,
        step: InboxMove::Forward { pushed: false, retention, reseal: None, queue, answers: None },
        at_ms: at(minutes).timestamp_millis(),
    };
    Write::InboxMove { change: Box::new(change), audit: event(minutes, "NGA", Action::PacketScreen) }
}

/// Every file of a SQLite database (the file and its WAL), concatenated.
fn sqlite_bytes(path: &str) -> Vec<u8> {
    [path.to_owned(), format!("{path}-wal")].iter().filter_map(|p| std::fs::read(p).ok()).flatten().collect()
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Runs one statement below the port, on the store's own database (and schema).
async fn raw(opened: &Opened, statement: &str) -> Result<u64, String> {
    use std::str::FromStr;
    match &opened.config.schema {
        None => {
            let pool = sqlx::SqlitePool::connect(&opened.config.url).await.unwrap();
            let result = sqlx::query(statement).execute(&pool).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
            pool.close().await;
            result
        }
        Some(schema) => {
            let options = sqlx::postgres::PgConnectOptions::from_str(&opened.config.url).unwrap().options([("search_path", schema.as_str())]);
            let pool = sqlx::PgPool::connect_with(options).await.unwrap();
            let result = sqlx::query(statement).execute(&pool).await.map(|r| r.rows_affected()).map_err(|e| e.to_string());
            pool.close().await;
            result
        }
    }
}
