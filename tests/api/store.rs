//! The store port, directly: the same conformance suite on SQLite and PostgreSQL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use referral_gateway::audit::{Action, Actor, AuditEvent};
use referral_gateway::config::DatabaseConfig;
use referral_gateway::domain::lifecycle::{InboxState, ReferralEvent, ReferralStatus};
use referral_gateway::store::writer::Writer;
use referral_gateway::store::{
    verify_audit_chain, AuditFilter, InboxChange, InboxMove, StoredRetention, InboxReceipt, NewInboxEntry, NewOutboxEntry, NewPolicyVersion, NewReferral, NewWithdrawal, SealedPayload, SentNarrowing, Settlement, Store,
    StoredPacket, StoredReferral, Write, Written,
};

use crate::helpers::{Backend, POSTGRES_URL};
use crate::on_both_backends;

on_both_backends!(
    a_batch_is_numbered_in_order_and_chained,
    a_taken_idempotency_key_writes_nothing,
    policy_versions_are_numbered,
    audit_filters_combine,
    a_failed_batch_leaves_no_trace,
    concurrent_writers_keep_one_chain,
    a_known_packet_id_is_stored_once_and_keeps_its_first_receipt,
    outbox_entries_are_claimed_for_a_lease_keep_their_first_packet_and_settle_once,
    a_status_that_came_first_is_not_overwritten_by_the_delivery,
    the_recipients_cursor_follows_the_order_cases_became_visible,
    a_destroyed_case_key_is_gone_from_the_key_store_and_its_files,
    one_bad_write_fails_alone_in_the_group_commit,
    a_withdrawal_stops_delivery_and_names_the_packet_it_withdraws,
    a_partial_withdrawal_cuts_the_payload_it_was_cut_from_and_keeps_the_referral_going,
    a_restarted_node_takes_back_its_predecessors_claims_and_leaves_other_nodes_leases,
    state_columns_take_exactly_the_lifecycle_states,
    referrals_stored_before_migration_0011_keep_their_policy_number,
    a_denied_referral_records_its_withdrawal_once,
);

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
        },
        outbox: allowed.then(|| NewOutboxEntry {
            payload: SealedPayload { sealed: vec![1, 2, 3], key_id: "k".to_owned() },
            consent_expires_ms: Some(at(60).timestamp_millis()),
            deadline_ms: at(60).timestamp_millis(),
            retention: None,
            end_to_end: false,
        }),
    }
}

fn submit(referral: NewReferral) -> Write {
    let audit = event(0, &referral.record.sender_org.clone(), Action::ReferralSubmit).referral(&referral.record.id);
    Write::Referral { referral: Box::new(referral), audit }
}

async fn a_batch_is_numbered_in_order_and_chained(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let results = store
        .write_batch(&[
            Write::Audit(event(0, "a-org", Action::AuditRead)),
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            Write::Audit(event(1, "b-org", Action::PolicyRead)),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Written::Audited { seq: 1 }, Written::Audited { seq: 2 }, Written::Audited { seq: 3 }]);
    let more = store.write_batch(&[Write::Audit(event(2, "a-org", Action::AuditRead))]).await.unwrap();
    assert_eq!(more, vec![Written::Audited { seq: 4 }]);
    let verified = verify_audit_chain(store).await.unwrap().unwrap();
    assert_eq!(verified.entries, 4);
    assert_eq!(store.audit_head().await.unwrap(), (4, verified.head));

    let stored = store.referral("r1").await.unwrap().unwrap();
    assert_eq!(stored, referral("r1", "ita-nrm", "key-00001", "s1", true).record);
    assert_eq!(store.timeline("r1").await.unwrap().len(), 1);
    assert_eq!(store.sealed_payload("r1").await.unwrap().unwrap().sealed, vec![1, 2, 3]);
    assert_eq!(store.outbox_depth().await.unwrap(), 1);
    assert!(store.referral("r2").await.unwrap().is_none());
}

async fn a_taken_idempotency_key_writes_nothing(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true))]).await.unwrap();
    let results = store
        .write_batch(&[
            submit(referral("r2", "ita-nrm", "key-00001", "s2", true)),
            // The same key from another organisation is another referral.
            submit(referral("r3", "ita-iom-rome", "key-00001", "s3", false)),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Written::DuplicateKey, Written::Audited { seq: 2 }]);
    assert!(store.referral("r2").await.unwrap().is_none());
    assert_eq!(store.referral_by_key("ita-nrm", "key-00001").await.unwrap().unwrap().id, "r1");
    assert_eq!(store.referral_by_key("ita-iom-rome", "key-00001").await.unwrap().unwrap().id, "r3");
    assert_eq!(store.outbox_depth().await.unwrap(), 1, "a denied referral has no payload to queue");
    assert_eq!(verify_audit_chain(store).await.unwrap().unwrap().entries, 2);
}

async fn policy_versions_are_numbered(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let policy = |version: &str| Write::Policy {
        policy: NewPolicyVersion {
            version: version.to_owned(),
            author_org: Some("ita-nrm".to_owned()),
            author_subject: "dpo".to_owned(),
            note: None,
            created_ms: at(0).timestamp_millis(),
            files: "{}".to_owned(),
        },
        audit: event(0, "ita-nrm", Action::PolicyUpdate),
    };
    assert_eq!(store.latest_policy_number().await.unwrap(), 0);
    let results = store.write_batch(&[policy("sha256:a"), policy("sha256:b")]).await.unwrap();
    assert_eq!(store.latest_policy_number().await.unwrap(), 2);
    assert_eq!(results, vec![Written::PolicyStored { number: 1, seq: 1 }, Written::PolicyStored { number: 2, seq: 2 }]);
    let versions = store.policy_versions().await.unwrap();
    assert_eq!(versions.iter().map(|v| (v.number, v.version.as_str())).collect::<Vec<_>>(), vec![(1, "sha256:a"), (2, "sha256:b")]);
}

async fn audit_filters_combine(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store
        .write_batch(&[
            Write::Audit(event(0, "a-org", Action::AuditRead)),
            Write::Audit(event(10, "b-org", Action::AuditRead)),
            Write::Audit(event(20, "a-org", Action::PolicyRead).subject_key("k1".to_owned())),
            Write::Audit(event(30, "a-org", Action::AuditRead).referral("r9")),
        ])
        .await
        .unwrap();
    let seqs = |filter: AuditFilter| async move {
        store.audit(&AuditFilter { limit: 100, ..filter }).await.unwrap().iter().map(|r| r.seq).collect::<Vec<_>>()
    };
    assert_eq!(seqs(AuditFilter::default()).await, vec![1, 2, 3, 4]);
    assert_eq!(seqs(AuditFilter { org: Some("a-org".into()), ..Default::default() }).await, vec![1, 3, 4]);
    assert_eq!(seqs(AuditFilter { action: Some("audit.read".into()), org: Some("a-org".into()), ..Default::default() }).await, vec![1, 4]);
    let window = AuditFilter { from_ms: Some(at(10).timestamp_millis()), to_ms: Some(at(30).timestamp_millis()), ..Default::default() };
    assert_eq!(seqs(window).await, vec![2, 3], "from is inclusive, to exclusive");
    assert_eq!(seqs(AuditFilter { subject_key: Some("k1".into()), ..Default::default() }).await, vec![3]);
    assert_eq!(seqs(AuditFilter { referral_id: Some("r9".into()), ..Default::default() }).await, vec![4]);
    assert_eq!(seqs(AuditFilter { after_seq: Some(2), ..Default::default() }).await, vec![3, 4]);
    let page = store.audit(&AuditFilter { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(page.len(), 2);
}

async fn a_failed_batch_leaves_no_trace(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    // The second write breaks the primary key of referrals: the whole batch,
    // audit entries included, must roll back.
    let result = store
        .write_batch(&[
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            submit(referral("r1", "ita-nrm", "key-00002", "s1", true)),
        ])
        .await;
    assert!(result.is_err());
    assert!(store.referral("r1").await.unwrap().is_none());
    assert_eq!(store.audit_head().await.unwrap().0, 0);
    assert_eq!(verify_audit_chain(store).await.unwrap().unwrap().entries, 0);
}

async fn one_bad_write_fails_alone_in_the_group_commit(backend: Backend) {
    let opened = open(backend).await;
    let writer = Writer::start(Arc::clone(&opened.store));
    // The second breaks the primary key of the first; the third is fine.
    let results = writer
        .write_all(vec![
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            submit(referral("r1", "ita-nrm", "key-00002", "s1", true)),
            submit(referral("r2", "ita-nrm", "key-00003", "s2", true)),
        ])
        .await;
    assert!(matches!(results[0], Ok(Written::Audited { .. })), "{results:?}");
    assert!(results[1].is_err(), "{results:?}");
    assert!(matches!(results[2], Ok(Written::Audited { .. })), "{results:?}");
    let store = opened.store.as_ref();
    assert!(store.referral("r1").await.unwrap().is_some());
    assert!(store.referral("r2").await.unwrap().is_some());
    assert_eq!(verify_audit_chain(store).await.unwrap().unwrap().entries, 2);
}

async fn concurrent_writers_keep_one_chain(backend: Backend) {
    let opened = open(backend).await;
    let writer = Writer::start(Arc::clone(&opened.store));
    let mut tasks = Vec::new();
    for n in 0..200 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("r{n}");
            writer.write(submit(referral(&id, "ita-nrm", &format!("key-{n:06}"), "s", n % 2 == 0))).await
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Written::Audited { seq } => seqs.push(seq),
            other => panic!("{other:?}"),
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert_eq!(verify_audit_chain(opened.store.as_ref()).await.unwrap().unwrap().entries, 200);
    assert_eq!(opened.store.outbox_depth().await.unwrap(), 100);
}

/// `audit verify` may run while a gateway appends: what comes after the head
/// it read first is not a break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_while_appending_sees_no_break() {
    let opened = open(Backend::Postgres).await;
    let writer = Writer::start(Arc::clone(&opened.store));
    let appending = tokio::spawn(async move {
        for n in 0..400 {
            writer.write(Write::Audit(event(n, "a-org", Action::AuditRead))).await.unwrap();
        }
    });
    let mut checks = 0;
    while !appending.is_finished() {
        let verified = verify_audit_chain(opened.store.as_ref()).await.unwrap();
        assert!(verified.is_ok(), "{verified:?}");
        checks += 1;
    }
    appending.await.unwrap();
    assert!(checks > 1);
    assert_eq!(verify_audit_chain(opened.store.as_ref()).await.unwrap().unwrap().entries, 400);
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
            receipt: format!("receipt-for-{digest}"),
            received_ms: at(0).timestamp_millis(),
            expires_ms: at(60 * 24 * 7).timestamp_millis(),
        }),
        audit: event(0, "ITA", Action::ReferralRead),
    }
}

async fn a_known_packet_id_is_stored_once_and_keeps_its_first_receipt(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    assert_eq!(store.inbox_receipt("p1").await.unwrap(), None);
    // The same id twice in one batch, and again in a later one: only the first is new.
    let results = store.write_batch(&[packet("p1", "digest-a"), packet("p1", "digest-b"), packet("p2", "digest-c")]).await.unwrap();
    assert_eq!(results, vec![Written::Audited { seq: 1 }, Written::KnownPacket, Written::Audited { seq: 2 }]);
    let later = store.write_batch(&[packet("p1", "digest-a")]).await.unwrap();
    assert_eq!(later, vec![Written::KnownPacket]);
    assert_eq!(
        store.inbox_receipt("p1").await.unwrap(),
        Some(InboxReceipt { packet_sha256: "digest-a".to_owned(), receipt: "receipt-for-digest-a".to_owned() })
    );
    assert_eq!(verify_audit_chain(store).await.unwrap().unwrap().entries, 2, "a known packet adds no audit entry of its own");
}

async fn outbox_entries_are_claimed_for_a_lease_keep_their_first_packet_and_settle_once(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), submit(referral("r2", "ita-nrm", "key-00002", "s1", false))]).await.unwrap();
    let now = at(0).timestamp_millis();
    let lease = 60_000;

    let claimed = store.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "only the allowed referral is queued");
    let entry = &claimed[0];
    assert_eq!((entry.id.as_str(), entry.referral_id.as_deref(), entry.packet_type.as_str()), ("r1", Some("r1"), "referral"));
    assert_eq!((entry.recipient_org.as_str(), entry.destination_country.as_str()), ("gmb-iom-banjul", "GMB"));
    assert_eq!((entry.purpose.as_deref(), entry.policy_version.as_deref()), (Some("return"), Some("sha256:0")));
    assert_eq!((entry.attempts, entry.packet.clone()), (1, None));
    assert_eq!(entry.payload.sealed, vec![1, 2, 3]);
    assert_eq!(entry.deadline_ms, at(60).timestamp_millis());
    // Claimed: nobody else gets it during the lease; after it, it is due again.
    assert!(store.claim_deliveries(now + 1, lease, 10).await.unwrap().is_empty());
    let again = store.claim_deliveries(now + lease, lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);

    // The first packet kept is the one every later attempt sends.
    let first = StoredPacket { packet_id: "p-1".to_owned(), packet: "sealed-1".to_owned() };
    let second = StoredPacket { packet_id: "p-2".to_owned(), packet: "sealed-2".to_owned() };
    let keep = |packet: &StoredPacket| vec![Write::KeepPacket { entry_id: "r1".to_owned(), packet: packet.clone(), sealed_from: "k".to_owned() }];
    assert_eq!(store.write_batch(&keep(&first)).await.unwrap(), vec![Written::PacketKept(first.clone())]);
    assert_eq!(store.write_batch(&keep(&second)).await.unwrap(), vec![Written::PacketKept(first.clone())]);
    let gone = vec![Write::KeepPacket { entry_id: "no-such-entry".to_owned(), packet: first.clone(), sealed_from: "k".to_owned() }];
    assert_eq!(store.write_batch(&gone).await.unwrap(), vec![Written::AlreadySettled]);

    // A failed attempt schedules the next one and records its code.
    store.retry_later("r1", now + 5 * lease, "peer-unreachable", false).await.unwrap();
    assert!(store.claim_deliveries(now + 4 * lease, lease, 10).await.unwrap().is_empty());
    let delivery = store.delivery("r1").await.unwrap().unwrap();
    assert_eq!((delivery.state.as_str(), delivery.last_error.as_deref(), delivery.packet_id.as_deref()), ("pending", Some("peer-unreachable"), Some("p-1")));
    // Forgetting the packet lets a new one be kept.
    store.retry_later("r1", now + 5 * lease, "packet-undecryptable", true).await.unwrap();
    // Two packets for one entry in one batch: the first write's is kept, and both hear of it.
    let both = [keep(&second), keep(&first)].concat();
    assert_eq!(store.write_batch(&both).await.unwrap(), vec![Written::PacketKept(second.clone()), Written::PacketKept(second.clone())]);

    let settle = |settlement: Settlement| Write::Settle {
        entry_id: "r1".to_owned(),
        settlement,
        at_ms: at(5).timestamp_millis(),
        audit: event(5, "ITA", Action::PacketSend).referral("r1"),
    };
    let results = store.write_batch(&[settle(Settlement::Delivered { receipt: "receipt-1".to_owned() }), settle(Settlement::Expired)]).await.unwrap();
    assert_eq!(results, vec![Written::Audited { seq: 3 }, Written::AlreadySettled]);
    let delivery = store.delivery("r1").await.unwrap().unwrap();
    assert_eq!((delivery.state.as_str(), delivery.receipt.as_deref()), ("delivered", Some("receipt-1")));
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "delivered");
    let timeline: Vec<String> = store.timeline("r1").await.unwrap().into_iter().map(|t| t.status.as_str().to_owned()).collect();
    assert_eq!(timeline, ["queued", "delivered"]);
    assert!(store.claim_deliveries(now + 100 * lease, lease, 10).await.unwrap().is_empty(), "a settled entry is never claimed");
    assert_eq!(store.outbox_depth().await.unwrap(), 0);
    assert!(store.delivery("r2").await.unwrap().is_none());
}

async fn a_status_that_came_first_is_not_overwritten_by_the_delivery(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), packet("p1", "digest-a")]).await.unwrap();
    // The peer's refusal is applied before this gateway settles the delivery.
    let change = InboxChange {
        packet_id: "p1".to_owned(),
        from: InboxState::Received,
        step: InboxMove::ApplyToReferral {
            referral_id: "r1".to_owned(),
            events: vec![ReferralEvent::Refused],
            reasons: vec!["policy_no_permit".to_owned()],
            retention_until_ms: None,
        },
        at_ms: at(1).timestamp_millis(),
    };
    let moved = store.write_batch(&[Write::InboxMove { change: Box::new(change.clone()), audit: event(1, "NGA", Action::PacketScreen) }]).await.unwrap();
    assert!(matches!(moved[..], [Written::Audited { .. }]));
    let again = store.write_batch(&[Write::InboxMove { change: Box::new(change), audit: event(1, "NGA", Action::PacketScreen) }]).await.unwrap();
    assert_eq!(again, vec![Written::AlreadySettled], "a packet moves on once");
    let settle = Write::Settle {
        entry_id: "r1".to_owned(),
        settlement: Settlement::Delivered { receipt: "receipt-1".to_owned() },
        at_ms: at(2).timestamp_millis(),
        audit: event(2, "ITA", Action::PacketSend).referral("r1"),
    };
    store.write_batch(&[settle]).await.unwrap();
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "refused");
    let timeline: Vec<(String, Vec<String>)> = store.timeline("r1").await.unwrap().into_iter().map(|t| (t.status.as_str().to_owned(), t.reasons)).collect();
    assert_eq!(
        timeline,
        [("queued".to_owned(), vec![]), ("refused".to_owned(), vec!["policy_no_permit".to_owned()]), ("delivered".to_owned(), vec![])]
    );
    assert_eq!(store.inbox_item("p1").await.unwrap().unwrap().claims.sealed, Vec::<u8>::new(), "an applied status is not kept");
}

fn make_visible(packet_id: &str, minutes: i64) -> Write {
    let retention = StoredRetention { until_ms: at(600).timestamp_millis(), days_after_closure: None };
    let change = InboxChange {
        packet_id: packet_id.to_owned(),
        from: InboxState::Received,
        step: InboxMove::Forward { pushed: false, retention, reseal: None },
        at_ms: at(minutes).timestamp_millis(),
    };
    Write::InboxMove { change: Box::new(change), audit: event(minutes, "NGA", Action::PacketScreen) }
}

async fn the_recipients_cursor_follows_the_order_cases_became_visible(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    // p1 arrived first but is screened after p2: a cursor taken after p2 must still see p1.
    store.write_batch(&[packet("p1", "digest-1"), packet("p2", "digest-2")]).await.unwrap();
    store.write_batch(&[make_visible("p2", 1)]).await.unwrap();
    let first = store.inbox_for("nga-iom-lagos", &[InboxState::Available], None, 10).await.unwrap();
    assert_eq!(first.iter().map(|i| i.packet_id.as_str()).collect::<Vec<_>>(), ["p2"]);
    let cursor = first[0].visible_seq;
    store.write_batch(&[make_visible("p1", 2)]).await.unwrap();
    let next = store.inbox_for("nga-iom-lagos", &[InboxState::Available], cursor, 10).await.unwrap();
    assert_eq!(next.iter().map(|i| i.packet_id.as_str()).collect::<Vec<_>>(), ["p1"]);
    assert!(store.inbox_for("nga-iom-lagos", &[InboxState::Available], next[0].visible_seq, 10).await.unwrap().is_empty());
    assert_eq!(store.receipt_for_bytes("digest-1", "ITA").await.unwrap().as_deref(), Some("receipt-for-digest-1"));
    assert_eq!(store.receipt_for_bytes("digest-1", "GMB").await.unwrap(), None, "only from the member that sent it");
}

/// Every file of a SQLite database (the file and its WAL), concatenated.
fn sqlite_bytes(path: &str) -> Vec<u8> {
    [path.to_owned(), format!("{path}-wal")].iter().filter_map(|p| std::fs::read(p).ok()).flatten().collect()
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn a_destroyed_case_key_is_gone_from_the_key_store_and_its_files(backend: Backend) {
    use referral_gateway::crypto::at_rest::{init, KeyRing};
    use referral_gateway::crypto::case_keys::{new_case_key, unwrap_case_key};

    let opened = open(backend).await;
    let keys = referral_gateway::store::case_keys::open(&opened.config).await.unwrap();
    let kek_dir = tempfile::tempdir().unwrap();
    init(kek_dir.path()).unwrap();
    let kek = KeyRing::load(kek_dir.path()).unwrap();
    let made: Vec<_> = (0..3).map(|_| new_case_key(&kek).unwrap()).collect();
    let wrapped: Vec<_> = made.iter().map(|(_, w)| w.clone()).collect();
    keys.put(&wrapped, at(0).timestamp_millis()).await.unwrap();
    let ids: Vec<String> = wrapped.iter().map(|w| w.id.clone()).collect();
    let mut found = keys.get(&ids).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = wrapped.clone();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(found, expected);

    let sqlite_file = referral_gateway::config::sqlite_path(&opened.config.url).map(referral_gateway::store::case_keys::beside);
    if let Some(file) = &sqlite_file {
        // Kept apart: the data's file never holds a key; the key store's does, until destroyed.
        let data_file = referral_gateway::config::sqlite_path(&opened.config.url).unwrap();
        assert!(!holds(&sqlite_bytes(data_file), &wrapped[0].wrapped));
        assert!(holds(&sqlite_bytes(file), &wrapped[0].wrapped));
    }

    let destroyed = keys.destroy(&[ids[0].clone(), "00000000000000000000000000000000".to_owned()]).await.unwrap();
    assert_eq!(destroyed, 1);
    // As the vault does after every destruction (answered apart from it).
    keys.scrub_destroyed().await.unwrap();
    assert!(keys.get(&ids[..1]).await.unwrap().is_empty());
    assert_eq!(keys.get(&ids).await.unwrap().len(), 2);
    // The remaining keys still unwrap and open what they sealed.
    let second = unwrap_case_key(&kek, &keys.get(&ids[1..2]).await.unwrap()[0]).unwrap();
    assert_eq!(second.open(&made[1].0.seal(b"x", b"c").unwrap(), b"c").unwrap(), b"x");
    if let Some(file) = &sqlite_file {
        // Neither the key file nor its WAL holds the destroyed key's bytes any more; the others are still there.
        let bytes = sqlite_bytes(file);
        assert!(!holds(&bytes, &wrapped[0].wrapped), "a destroyed key's bytes remain on disk");
        assert!(holds(&bytes, &wrapped[1].wrapped));
    }
}

async fn a_withdrawal_stops_delivery_and_names_the_packet_it_withdraws(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store
        .write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), submit(referral("r2", "ita-nrm", "key-00002", "s2", true))])
        .await
        .unwrap();
    let keep = |entry: &str, id: &str| Write::KeepPacket { entry_id: entry.to_owned(), packet: StoredPacket { packet_id: id.to_owned(), packet: format!("sealed-{id}") }, sealed_from: "k".to_owned() };
    let withdraw = |entry: &str, notice: &str| Write::Withdraw {
        referral_id: entry.to_owned(),
        withdrawal: NewWithdrawal {
            packet_id: notice.to_owned(),
            payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() },
            deadline_ms: at(60).timestamp_millis(),
        },
        at_ms: at(1).timestamp_millis(),
        audit: event(1, "ITA", Action::ConsentWithdraw).referral(entry),
    };
    let delivered = |entry: &str| Write::Settle {
        entry_id: entry.to_owned(),
        settlement: Settlement::Delivered { receipt: format!("receipt-{entry}") },
        at_ms: at(2).timestamp_millis(),
        audit: event(2, "ITA", Action::PacketSend).referral(entry),
    };

    // r1's packet was made (and may be on its way): the withdrawal names it.
    store.write_batch(&[keep("r1", "p-1")]).await.unwrap();
    let results = store.write_batch(&[withdraw("r1", "w-1"), keep("r1", "p-other"), withdraw("r1", "w-again")]).await.unwrap();
    assert!(matches!(results[0], Written::Withdrawn { peer_notified: true, .. }), "{results:?}");
    assert_eq!(results[1..], [Written::AlreadySettled, Written::AlreadySettled], "no packet is kept into a withdrawn entry, and it is withdrawn once");
    let due = store.claim_deliveries(at(1).timestamp_millis(), 60_000, 10).await.unwrap();
    let notices: Vec<_> = due.iter().filter(|d| d.packet_type == "withdrawal").collect();
    assert_eq!(notices.len(), 1, "{due:?}");
    assert_eq!((notices[0].id.as_str(), notices[0].in_reply_to.as_deref(), notices[0].referral_id.as_deref()), ("w-1", Some("p-1"), Some("r1")));
    assert!(due.iter().all(|d| d.id != "r1"), "a withdrawn referral is not delivered");
    // A send that was under way still leaves its receipt; the entry stays withdrawn.
    assert!(matches!(store.write_batch(&[delivered("r1")]).await.unwrap()[..], [Written::Audited { .. }]));
    assert_eq!(store.write_batch(&[delivered("r1")]).await.unwrap(), vec![Written::AlreadySettled]);
    let r1 = store.delivery("r1").await.unwrap().unwrap();
    assert_eq!((r1.state.as_str(), r1.receipt.as_deref(), r1.packet.as_deref()), ("withdrawn", Some("receipt-r1"), None));
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "withdrawn");

    // r2 never had a packet: nothing to tell the peer, and none is made after.
    let results = store.write_batch(&[withdraw("r2", "w-2"), keep("r2", "p-2")]).await.unwrap();
    assert!(matches!(results[0], Written::Withdrawn { peer_notified: false, .. }), "{results:?}");
    assert_eq!(results[1], Written::AlreadySettled);
    assert_eq!(store.delivery("r2").await.unwrap().unwrap().state.as_str(), "withdrawn");
    assert!(store.claim_deliveries(at(1).timestamp_millis(), 60_000, 10).await.unwrap().iter().all(|d| d.id != "w-2"));
    assert_eq!(verify_audit_chain(store).await.unwrap().unwrap().entries, 5, "two submissions, two withdrawals, one receipt");
}

async fn a_partial_withdrawal_cuts_the_payload_it_was_cut_from_and_keeps_the_referral_going(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store
        .write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), submit(referral("r2", "ita-nrm", "key-00002", "s2", true))])
        .await
        .unwrap();
    let narrow = |entry: &str, notice: &str, from: &str, to: &str| Write::Narrow {
        referral_id: entry.to_owned(),
        narrowing: Box::new(SentNarrowing {
            categories: vec!["health".to_owned()],
            payload: Some((SealedPayload { sealed: vec![7, 7], key_id: to.to_owned() }, from.to_owned())),
        }),
        withdrawal: NewWithdrawal {
            packet_id: notice.to_owned(),
            payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() },
            deadline_ms: at(60).timestamp_millis(),
        },
        at_ms: at(1).timestamp_millis(),
        audit: event(1, "ITA", Action::ConsentWithdraw).referral(entry),
    };
    let keep = |entry: &str, id: &str, from: &str| Write::KeepPacket {
        entry_id: entry.to_owned(),
        packet: StoredPacket { packet_id: id.to_owned(), packet: format!("sealed-{id}") },
        sealed_from: from.to_owned(),
    };

    // r1 had no packet yet: its payload is replaced, and a packet made from the old one is not kept.
    let results = store.write_batch(&[narrow("r1", "w-1", "k", "k-cut"), keep("r1", "p-stale", "k")]).await.unwrap();
    assert!(matches!(results[0], Written::Withdrawn { peer_notified: false, .. }), "{results:?}");
    assert_eq!(results[1], Written::AlreadySettled, "a packet made from the payload before the cut is not kept");
    let payload = store.sealed_payload("r1").await.unwrap().unwrap();
    assert_eq!((payload.sealed, payload.key_id.as_str()), (vec![7, 7], "k-cut"));
    assert!(matches!(store.write_batch(&[keep("r1", "p-1", "k-cut")]).await.unwrap()[..], [Written::PacketKept(_)]));
    let r1 = store.referral("r1").await.unwrap().unwrap();
    assert_eq!(r1.status, ReferralStatus::Queued, "the rest of the referral goes on");
    let timeline = store.timeline("r1").await.unwrap();
    let narrowed = timeline.iter().find(|t| t.status == ReferralEvent::ConsentNarrowedBeforeSending).expect("recorded in the timeline");
    assert_eq!(narrowed.reasons, vec!["health".to_owned()]);

    // A cut made from a payload replaced meanwhile writes nothing, and says so: it is made again.
    let results = store.write_batch(&[narrow("r1", "w-stale", "k-stale", "k-other")]).await.unwrap();
    assert_eq!(results, vec![Written::PayloadMoved]);
    assert_eq!(store.sealed_payload("r1").await.unwrap().unwrap().key_id, "k-cut");

    // Now a packet was made: a second cut tells the peer.
    let results = store.write_batch(&[narrow("r1", "w-2", "k-cut", "k-cut-2")]).await.unwrap();
    assert!(matches!(results[0], Written::Withdrawn { peer_notified: true, .. }), "{results:?}");
    assert_eq!(store.sealed_payload("r1").await.unwrap().unwrap().key_id, "k-cut-2");
    assert!(store.timeline("r1").await.unwrap().iter().any(|t| t.status == ReferralEvent::ConsentNarrowed));
    let due = store.claim_deliveries(at(1).timestamp_millis(), 60_000, 10).await.unwrap();
    assert!(due.iter().all(|d| d.id != "w-stale"), "nothing queued for a cut not written");
    let notice = due.iter().find(|d| d.id == "w-2").expect("the withdrawal is queued");
    assert_eq!((notice.packet_type.as_str(), notice.in_reply_to.as_deref()), ("withdrawal", Some("p-1")));
    assert!(due.iter().any(|d| d.id == "r1"), "the referral itself is still delivered");
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "queued");

    // Withdrawn whole first: a partial withdrawal after it changes nothing.
    let whole = Write::Withdraw {
        referral_id: "r2".to_owned(),
        withdrawal: NewWithdrawal { packet_id: "w-3".to_owned(), payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() }, deadline_ms: at(60).timestamp_millis() },
        at_ms: at(1).timestamp_millis(),
        audit: event(1, "ITA", Action::ConsentWithdraw).referral("r2"),
    };
    let results = store.write_batch(&[whole, narrow("r2", "w-4", "k", "k-cut")]).await.unwrap();
    assert_eq!(results[1], Written::AlreadySettled);
    assert!(store.timeline("r2").await.unwrap().iter().all(|t| !t.status.records_narrowing()));
}

/// A process killed (`kill -9`) while it held claims leaves them leased; the
/// next process of the same node takes them back at start, while a claim of
/// another node (a live replica) keeps its lease, and an entry whose attempt
/// ended keeps the time its backoff chose.
async fn a_restarted_node_takes_back_its_predecessors_claims_and_leaves_other_nodes_leases(backend: Backend) {
    let opened = open(backend).await;
    let on_node = |node: &str| DatabaseConfig { node: Some(node.to_owned()), ..opened.config.clone() };
    let killed = referral_gateway::store::open(&on_node("node-a")).await.unwrap();
    let replica = referral_gateway::store::open(&on_node("node-b")).await.unwrap();
    killed
        .write_batch(&[
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            submit(referral("r2", "ita-nrm", "key-00002", "s1", true)),
            submit(referral("r3", "ita-nrm", "key-00003", "s1", true)),
        ])
        .await
        .unwrap();
    let now = at(0).timestamp_millis();
    let lease = 120_000;
    let claimed_by_killed = killed.claim_deliveries(now, lease, 2).await.unwrap();
    assert_eq!(claimed_by_killed.len(), 2);
    let claimed_by_replica = replica.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed_by_replica.len(), 1, "the live replica holds the third");
    // One of the killed process's attempts had ended (a retry scheduled) before it died.
    let retried = &claimed_by_killed[1].id;
    killed.retry_later(retried, now + 600_000, "peer-unreachable", false).await.unwrap();
    drop(killed);

    let restarted = referral_gateway::store::open(&on_node("node-a")).await.unwrap();
    assert!(restarted.claim_deliveries(now + 1, lease, 10).await.unwrap().is_empty(), "leased until taken back");
    assert_eq!(restarted.release_earlier_claims(now + 1).await.unwrap(), 1, "only the claim still leased by the killed process");
    let resumed = restarted.claim_deliveries(now + 1, lease, 10).await.unwrap();
    assert_eq!(resumed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec![claimed_by_killed[0].id.as_str()]);

    // Another node's start leaves both live claims alone.
    let other = referral_gateway::store::open(&on_node("node-c")).await.unwrap();
    assert_eq!(other.release_earlier_claims(now + 2).await.unwrap(), 0);
    assert!(other.claim_deliveries(now + 2, lease, 10).await.unwrap().is_empty());
    // A process never takes back its own live claims.
    assert_eq!(replica.release_earlier_claims(now + 3).await.unwrap(), 0, "node-b's own process holds its claim");
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

/// Every state column takes each value of its lifecycle enum and nothing
/// else: the `CHECK` constraints of migration 0010 on both backends.
async fn state_columns_take_exactly_the_lifecycle_states(backend: Backend) {
    use referral_gateway::domain::lifecycle::OutboxState;
    let opened = open(backend).await;
    opened.store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), packet("p1", "digest-a")]).await.unwrap();
    let columns: [(&str, &str, Vec<&str>); 4] = [
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

/// A denied referral sent nothing, but a withdrawal of the person's consent
/// is still recorded, once: its status becomes `withdrawn`, and a second
/// withdrawal finds it withdrawn already.
async fn a_denied_referral_records_its_withdrawal_once(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", false))]).await.unwrap();
    let withdraw = |notice: &str| Write::Withdraw {
        referral_id: "r1".to_owned(),
        withdrawal: NewWithdrawal { packet_id: notice.to_owned(), payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() }, deadline_ms: at(60).timestamp_millis() },
        at_ms: at(1).timestamp_millis(),
        audit: event(1, "ITA", Action::ConsentWithdraw).referral("r1"),
    };
    let results = store.write_batch(&[withdraw("w-1"), withdraw("w-2")]).await.unwrap();
    assert!(matches!(results[0], Written::Withdrawn { peer_notified: false, .. }), "{results:?}");
    assert_eq!(results[1], Written::AlreadySettled);
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status, ReferralStatus::Withdrawn);
    let timeline: Vec<String> = store.timeline("r1").await.unwrap().into_iter().map(|t| t.status.as_str().to_owned()).collect();
    assert_eq!(timeline, ["denied", "withdrawn"]);
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
