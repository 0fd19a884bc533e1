//! The database schema: the lifecycle `CHECK` constraints and migrations over stored data, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    state_columns_take_exactly_the_lifecycle_states,
    referrals_stored_before_migration_0011_keep_their_policy_number,
    cases_visible_before_migration_0016_are_queued_without_deadlines,
    referrals_and_timelines_stored_before_migration_0018_are_kept_whole,
    audit_entries_kept_before_migration_0028_are_found_by_time_window,
    the_retention_sweep_reads_only_what_it_takes,
);

/// Every state column takes each value of its lifecycle enum and nothing
/// else: the `CHECK` constraints of migrations 0010, 0012 and 0016 to 0019 on both backends.
async fn state_columns_take_exactly_the_lifecycle_states(backend: Backend) {
    use referral_gateway::domain::lifecycle::OutboxState;
    let opened = open(backend).await;
    let registered = referral_gateway::store::CallbackSubscription { org: "ita-nrm".to_owned(), retry_ms: 1 };
    opened.store.register_callbacks(&[registered]).await.unwrap();
    opened.store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), packet("p1", "digest-a")]).await.unwrap();
    use referral_gateway::domain::signoff::{PolicyVersionState, Verdict};
    opened.store.write_batch(&[policy_version()]).await.unwrap();
    raw(&opened, "INSERT INTO policy_signoffs (number, reviewer_org, reviewer_subject, verdict, at_ms) VALUES (1, 'ita-nrm', 'b', 'approve', 0)")
        .await
        .unwrap();
    use referral_gateway::domain::priority::{DeadlineKind, Priority};
    raw(
        &opened,
        "INSERT INTO emergency_overrides (referral_id, reason, justification_code, overridden, requested_org, requested_by, requested_ms, \
         approve_by_ms, state) VALUES ('r1', 'life_threatening', 'code', '[]', 'ita-nrm', 'a', 0, 1, 'awaiting_approval')",
    )
    .await
    .unwrap();
    use referral_gateway::domain::emergency_override::{OverrideReason, OverrideState};
    use referral_gateway::domain::lifecycle::CallbackState;
    let columns: [(&str, &str, Vec<&str>); 12] = [
        ("emergency_overrides", "state", OverrideState::ALL.iter().map(|s| s.as_str()).collect()),
        ("emergency_overrides", "reason", OverrideReason::ALL.iter().map(|s| s.as_str()).collect()),
        ("callbacks", "state", CallbackState::ALL.iter().map(|s| s.as_str()).collect()),
        ("referrals", "priority", Priority::ALL.iter().map(|s| s.as_str()).collect()),
        ("referrals", "overdue_warned", DeadlineKind::ALL.iter().map(|s| s.as_str()).collect()),
        ("inbox", "priority", Priority::ALL.iter().map(|s| s.as_str()).collect()),
        ("policy_versions", "state", PolicyVersionState::ALL.iter().map(|s| s.as_str()).collect()),
        ("policy_signoffs", "verdict", Verdict::ALL.iter().map(|s| s.as_str()).collect()),
        ("referrals", "status", ReferralStatus::ALL.iter().map(|s| s.as_str()).collect()),
        ("referral_events", "status", ReferralEvent::ALL.iter().map(|s| s.as_str()).collect()),
        ("outbox", "state", OutboxState::ALL.iter().map(|s| s.as_str()).collect()),
        ("inbox", "state", InboxState::ALL.iter().map(|s| s.as_str()).collect()),
    ];
    for (table, column, values) in columns {
        for value in values {
            assert_eq!(raw(&opened, &format!("UPDATE {table} SET {column} = '{value}'")).await, Ok(1), "{table}.{column} = {value}");
        }
        for unknown in ["sent", "", "Queued", "pending "] {
            let refused = raw(&opened, &format!("UPDATE {table} SET {column} = '{unknown}'")).await;
            assert!(refused.as_ref().is_err_and(|e| e.contains(&format!("{table}_{column}_known"))), "{table}.{column} = {unknown:?}: {refused:?}");
        }
    }
}

/// Migration 0011 over referrals stored before it: the answer each was
/// given is rendered from its decision from then on, with the policy
/// number its stored answer held.
/// A database as the gateway left it before migration `version`, with
/// `rows` inserted then; opened as a store, the migrations from `version`
/// on run over them.
async fn database_before(backend: Backend, version: i64, rows: &[&str]) -> (DatabaseConfig, tempfile::TempDir) {
    use sqlx::migrate::Migrator;
    let dir = tempfile::tempdir().unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let folder = match backend {
        Backend::Sqlite => "schemas/db/sqlite",
        Backend::Postgres => "schemas/db/postgres",
    };
    let mut before = Migrator::new(crate::helpers::repo_path(folder)).await.unwrap();
    before.migrations = before.migrations.iter().filter(|m| m.version < version).cloned().collect::<Vec<_>>().into();
    assert_eq!(before.migrations.last().map(|m| m.version), Some(version - 1));
    let config = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            before.run(&pool).await.unwrap();
            for row in rows {
                sqlx::query(row).execute(&pool).await.unwrap();
            }
            pool.close().await;
            DatabaseConfig { url, schema: None, max_connections: 4, case_keys_url: None, ..DatabaseConfig::default() }
        }
        Backend::Postgres => {
            let schema = format!("rgwtest_{}_store_{n}", std::process::id());
            let admin = sqlx::PgPool::connect(POSTGRES_URL).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
            admin.close().await;
            let pool = crate::helpers::pg_pool_in(&schema).await;
            before.run(&pool).await.unwrap();
            for row in rows {
                sqlx::query(row).execute(&pool).await.unwrap();
            }
            pool.close().await;
            DatabaseConfig { url: POSTGRES_URL.to_owned(), schema: Some(schema), max_connections: 4, case_keys_url: None, ..DatabaseConfig::default() }
        }
    };
    (config, dir)
}

async fn referrals_stored_before_migration_0011_keep_their_policy_number(backend: Backend) {
    let insert = "INSERT INTO referrals (id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, purpose, outcome, \
                  policy_version, decision, consent, response, status, created_ms) VALUES \
                  ('r-old', 'ita-nrm', 'key-old-1', 'fp', 's1', 'gmb-iom-banjul', 'return', 'deny', 'sha256:0', '{}', '{}', \
                  '{\"type\": \"https://referral-gateway.example/problems/referral-denied\", \"policy_number\": 7}', 'denied', 0)";
    let (config, _dir) = database_before(backend, 11, &[insert]).await;
    let store = referral_gateway::store::open(&config).await.unwrap();
    let stored = store.referral("r-old").await.unwrap().unwrap();
    assert_eq!(stored.policy_number, 7);
    assert_eq!(stored.status, ReferralStatus::Denied);
}

/// Migration 0016 (priorities): referrals stored before it are normal;
/// cases made visible before it are queued without deadlines, those not
/// acknowledged yet awaiting their recipient in the order they arrived,
/// the others awaiting nothing; a case never visible is not listed.
async fn cases_visible_before_migration_0016_are_queued_without_deadlines(backend: Backend) {
    use referral_gateway::domain::priority::Priority;
    let old_referral = "INSERT INTO referrals (id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, purpose, outcome, \
                    policy_version, decision, consent, policy_number, status, created_ms) VALUES \
                    ('r-old', 'ita-nrm', 'key-old-1', 'fp', 's1', 'gmb-iom-banjul', 'return', 'allow', 'sha256:0', '{}', '{}', 1, 'delivered', 0)";
    let case = |id: &str, state: &str, received_ms: i64, seq: Option<i64>| {
        format!(
            "INSERT INTO inbox (packet_id, issuer, packet_sha256, packet_type, recipient_org, sealed, key_id, receipt, received_ms, expires_ms, state, visible_seq) \
             VALUES ('{id}', 'ITA', 'digest-{id}', 'referral', 'nga-iom-lagos', '', 'k', 'receipt', {received_ms}, 999999999, '{state}', {})",
            seq.map_or("NULL".to_owned(), |s| s.to_string())
        )
    };
    let rows = [
        case("acknowledged", "acknowledged", 100, Some(1)),
        case("later", "available", 300, Some(2)),
        case("earlier", "available", 200, Some(3)),
        case("erased", "erased", 50, Some(4)),
        case("unseen", "received", 10, None),
    ];
    let mut statements = vec![old_referral];
    statements.extend(rows.iter().map(String::as_str));
    let (config, _dir) = database_before(backend, 16, &statements).await;
    let store = referral_gateway::store::open(&config).await.unwrap();
    assert_eq!(store.referral("r-old").await.unwrap().unwrap().priority, Priority::Normal);
    // Numbered for the listing in the order accepted; the next one stored comes after.
    store.write_batch(&[submit(referral("r-new", "ita-nrm", "key-new-1", "s1", false))]).await.unwrap();
    let listed = store.referrals_of("ita-nrm", &referral_gateway::store::ReferralFilter::default(), None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|l| (l.referral.id.as_str(), l.listed_seq)).collect::<Vec<_>>(), [("r-old", 1), ("r-new", 2)]);
    let listed = [InboxState::Available, InboxState::Acknowledged, InboxState::Erased, InboxState::Received];
    let queue = store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap();
    let order: Vec<(&str, Option<i64>)> = queue.iter().map(|i| (i.packet_id.as_str(), i.queue.map(|q| q.rank))).collect();
    assert_eq!(order, [("earlier", Some(1)), ("later", Some(1)), ("acknowledged", Some(2)), ("erased", Some(2))]);
    assert!(queue.iter().all(|i| i.priority.is_none()), "no priority known for them");
    // An old case acknowledged now awaits nothing: it had no first-answer deadline.
    let reply = referral_gateway::store::NewReply {
        packet_id: "ack-earlier".to_owned(),
        packet_type: "status".to_owned(),
        destination_country: "ITA".to_owned(),
        recipient_org: "ita-nrm".to_owned(),
        payload: SealedPayload { sealed: vec![1], key_id: "k".to_owned() },
        deadline_ms: 1_000_000,
        created_ms: 400,
    };
    let change = InboxChange { packet_id: "earlier".to_owned(), from: InboxState::Available, step: InboxMove::Acknowledge { reply }, at_ms: 400 };
    store.write_batch(&[Write::InboxMove { change: Box::new(change), audit: event(1, "NGA", Action::InboxUpdate) }]).await.unwrap();
    let after = store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap();
    assert_eq!(after.iter().map(|i| i.packet_id.as_str()).collect::<Vec<_>>(), ["later", "acknowledged", "earlier", "erased"]);
}

/// Migration 0018 (statuses of an emergency override) rebuilds `referrals`
/// and `referral_events` on SQLite: every column is kept, the timeline's
/// order too, and a new entry still comes after the old ones.
async fn referrals_and_timelines_stored_before_migration_0018_are_kept_whole(backend: Backend) {
    use referral_gateway::domain::priority::Priority;
    let rows = [
        "INSERT INTO referrals (id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, destination_country, \
         purpose, outcome, policy_version, decision, consent, policy_number, status, created_ms, handover, retention_until_ms, \
         retention_days_after_closure, priority, overdue_warned, listed_seq) VALUES \
         ('r-old', 'ita-nrm', 'key-old-1', 'fp', 's1', 'gmb-iom-banjul', 'GMB', 'return', 'allow', 'sha256:0', '{}', '{}', 3, 'delivered', \
         1000, TRUE, 99000, 30, 'urgent', 'delivery', 5)",
        "INSERT INTO referral_events (referral_id, status, at_ms, reasons) VALUES ('r-old', 'queued', 1000, NULL)",
        "INSERT INTO referral_events (referral_id, status, at_ms, reasons) VALUES ('r-old', 'refused', 2000, '[\"policy_no_permit\"]')",
    ];
    let (config, _dir) = database_before(backend, 18, &rows).await;
    let store = referral_gateway::store::open(&config).await.unwrap();
    let stored = store.referral("r-old").await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.priority, stored.handover, stored.policy_number, stored.created_ms, stored.destination_country.as_deref()),
        (ReferralStatus::Delivered, Priority::Urgent, true, 3, 1000, Some("GMB"))
    );
    let retention = store.referral_retention("r-old").await.unwrap().unwrap();
    assert_eq!((retention.until_ms, retention.days_after_closure), (99000, Some(30)));
    let listed = store.referrals_of("ita-nrm", &referral_gateway::store::ReferralFilter::default(), None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|l| l.listed_seq).collect::<Vec<_>>(), [5]);
    // An entry recorded now: after the two kept, in that order.
    let erasure = referral_gateway::store::RetentionErasure::Sent { referral_id: "r-old".to_owned() };
    store.write_batch(&[Write::RetentionErase { erasure, at_ms: 500, audit: event(3, "ITA", Action::ReferralRead) }]).await.unwrap();
    let timeline: Vec<(ReferralEvent, i64, Vec<String>)> = store.timeline("r-old").await.unwrap().into_iter().map(|t| (t.status, t.at_ms, t.reasons)).collect();
    assert_eq!(
        timeline,
        [
            (ReferralEvent::Queued, 1000, vec![]),
            (ReferralEvent::Refused, 2000, vec!["policy_no_permit".to_owned()]),
            (ReferralEvent::RetentionExpired, 500, vec![])
        ]
    );
}

/// Migration 0028 counts the hours of the entries already kept, whatever
/// their order along the chain: a time window finds each of them.
async fn audit_entries_kept_before_migration_0028_are_found_by_time_window(backend: Backend) {
    const HOUR: i64 = 3_600_000;
    // In chain order: on across hours, one two and a half hours back, on, one back again.
    let times = [2 * HOUR, 2 * HOUR + 10, 3 * HOUR + 5, HOUR / 2, 4 * HOUR, 3 * HOUR + 1];
    let rows: Vec<String> = (1..)
        .zip(times)
        .map(|(seq, at_ms)| {
            format!(
                "INSERT INTO audit_log (seq, at_ms, actor_subject, action, outcome, reasons, prev_hash, hash) \
                 VALUES ({seq}, {at_ms}, 'client', 'audit.read', 'ok', '[]', 'p', 'h')"
            )
        })
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let (config, _dir) = database_before(backend, 28, &rows).await;
    let store = referral_gateway::store::open(&config).await.unwrap();
    let window = |from_ms: i64, to_ms: i64| {
        let store = &store;
        async move {
            let filter = AuditFilter { from_ms: Some(from_ms), to_ms: Some(to_ms), limit: 100, ..Default::default() };
            store.audit(&filter).await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(window(0, HOUR).await, [4]);
    assert_eq!(window(3 * HOUR, 4 * HOUR).await, [3, 6]);
    assert_eq!(window(2 * HOUR, 3 * HOUR + 2).await, [1, 2, 6]);
    assert_eq!(window(HOUR / 2, 4 * HOUR + 1).await, [1, 2, 3, 4, 5, 6]);
}

/// Migration 0029: the sweep's reads take the partial indexes that hold
/// only what it erases. Their conditions must be implied by the reads'
/// own; a lifecycle state added to either list without a migration would
/// make PostgreSQL pass them over and SQLite (which names them) refuse the
/// statement, and this fail.
async fn the_retention_sweep_reads_only_what_it_takes(backend: Backend) {
    let opened = open(backend).await;
    let [referrals, received] = match backend {
        Backend::Sqlite => referral_gateway::store::SqliteStore::sweep_statements(),
        Backend::Postgres => referral_gateway::store::PostgresStore::sweep_statements(),
    };
    let referrals = plan_of(&opened, &referrals).await;
    assert!(referrals.contains("referrals_to_sweep"), "{referrals}");
    let received = plan_of(&opened, &received).await;
    assert!(received.contains("inbox_to_sweep"), "{received}");
}

/// The plan of `statement` with `$1` (a time) and `$2` (a limit) bound, a
/// line a step.
async fn plan_of(opened: &Opened, statement: &str) -> String {
    use sqlx::{Connection, Row};
    use std::str::FromStr;
    match &opened.config.schema {
        None => {
            let pool = sqlx::SqlitePool::connect(&opened.config.url).await.unwrap();
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {statement}")).bind(0_i64).bind(256_i64).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows.iter().map(|row| row.get::<String, _>("detail")).collect::<Vec<_>>().join("\n")
        }
        Some(schema) => {
            let options = sqlx::postgres::PgConnectOptions::from_str(&opened.config.url).unwrap().options([("search_path", schema.as_str())]);
            let mut connection = sqlx::PgConnection::connect_with(&options).await.unwrap();
            // The tables are empty: the planner would rather read them whole.
            sqlx::query("SET enable_seqscan = off").execute(&mut connection).await.unwrap();
            let rows = sqlx::query(&format!("EXPLAIN {statement}")).bind(0_i64).bind(256_i64).fetch_all(&mut connection).await.unwrap();
            rows.iter().map(|row| row.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
        }
    }
}

fn policy_version() -> Write {
    Write::Policy {
        policy: NewPolicyVersion {
            version: "sha256:a".to_owned(),
            author_org: None,
            author_subject: "gateway".to_owned(),
            note: None,
            created_ms: 0,
            files: "{}".to_owned(),
            state: referral_gateway::domain::signoff::PolicyVersionState::Draft,
            effective_from_ms: None,
            // Set, so that the state column may take `approved` (PostgreSQL
            // requires an approved version to say when it acts).
            effective_ms: Some(0),
            restores: None,
            checks: None,
        },
        audit: AuditEvent::new(at(0), Actor::gateway(), Action::PolicyUpdate, "draft"),
    }
}
