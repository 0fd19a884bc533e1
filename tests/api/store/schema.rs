//! The database schema: the lifecycle `CHECK` constraints and migrations over stored data, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    state_columns_take_exactly_the_lifecycle_states,
    referrals_stored_before_migration_0011_keep_their_policy_number,
);

/// Every state column takes each value of its lifecycle enum and nothing
/// else: the `CHECK` constraints of migrations 0010 and 0012 on both backends.
async fn state_columns_take_exactly_the_lifecycle_states(backend: Backend) {
    use referral_gateway::domain::lifecycle::OutboxState;
    let opened = open(backend).await;
    opened.store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), packet("p1", "digest-a")]).await.unwrap();
    use referral_gateway::domain::signoff::{PolicyVersionState, Verdict};
    opened.store.write_batch(&[policy_version()]).await.unwrap();
    raw(&opened, "INSERT INTO policy_signoffs (number, reviewer_org, reviewer_subject, verdict, at_ms) VALUES (1, 'ita-nrm', 'b', 'approve', 0)")
        .await
        .unwrap();
    let columns: [(&str, &str, Vec<&str>); 6] = [
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
async fn referrals_stored_before_migration_0011_keep_their_policy_number(backend: Backend) {
    use sqlx::migrate::Migrator;
    let dir = tempfile::tempdir().unwrap();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let folder = match backend {
        Backend::Sqlite => "schemas/db/sqlite",
        Backend::Postgres => "schemas/db/postgres",
    };
    // The database as the gateway left it before 0011.
    let mut before = Migrator::new(crate::helpers::repo_path(folder)).await.unwrap();
    before.migrations = before.migrations.iter().filter(|m| m.version < 11).cloned().collect::<Vec<_>>().into();
    assert_eq!(before.migrations.last().map(|m| m.version), Some(10));
    let insert = "INSERT INTO referrals (id, sender_org, idempotency_key, request_fingerprint, subject_key, destination_org, purpose, outcome, \
                  policy_version, decision, consent, response, status, created_ms) VALUES \
                  ('r-old', 'ita-nrm', 'key-old-1', 'fp', 's1', 'gmb-iom-banjul', 'return', 'deny', 'sha256:0', '{}', '{}', \
                  '{\"type\": \"https://referral-gateway.example/problems/referral-denied\", \"policy_number\": 7}', 'denied', 0)";
    let config = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            before.run(&pool).await.unwrap();
            sqlx::query(insert).execute(&pool).await.unwrap();
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
            sqlx::query(insert).execute(&pool).await.unwrap();
            pool.close().await;
            DatabaseConfig { url: POSTGRES_URL.to_owned(), schema: Some(schema), max_connections: 4, case_keys_url: None, ..DatabaseConfig::default() }
        }
    };
    let store = referral_gateway::store::open(&config).await.unwrap();
    let stored = store.referral("r-old").await.unwrap().unwrap();
    assert_eq!(stored.policy_number, 7);
    assert_eq!(stored.status, ReferralStatus::Denied);
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
