//! `AuditStore`: the hash-chained audit log, its numbering and filters, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    a_batch_is_numbered_in_order_and_chained,
    audit_filters_combine,
    a_time_window_finds_its_entries_whatever_order_the_clock_wrote_them,
    concurrent_writers_keep_one_chain,
);

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

/// The window query walks the chain between its hours' first and last
/// entries (migration 0028): times that go back along the chain, by
/// minutes or hours, must not hide an entry from any window.
async fn a_time_window_finds_its_entries_whatever_order_the_clock_wrote_them(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    // Minutes after noon, in chain order: on across hours, a clock set back
    // two hours, a write a minute behind its predecessor, on again, an entry
    // before all others last.
    let minutes = [0, 30, 61, 125, 5, 6, 130, 129, 190, 245, 244, 62, 300, 301, 299, -50];
    // Single and multi-row statements both keep the hours.
    for (index, batch) in [&minutes[..1], &minutes[1..5], &minutes[5..6], &minutes[6..]].into_iter().enumerate() {
        let writes: Vec<Write> = batch.iter().map(|m| Write::Audit(event(*m, "a-org", Action::AuditRead))).collect();
        assert_eq!(store.write_batch(&writes).await.unwrap().len(), batch.len(), "batch {index}");
    }
    let ms = |minute: i64| at(minute).timestamp_millis();
    let expected = |from: Option<i64>, to: Option<i64>| -> Vec<i64> {
        (1_i64..)
            .zip(minutes)
            .filter(|(_, m)| from.is_none_or(|from| ms(*m) >= ms(from)) && to.is_none_or(|to| ms(*m) < ms(to)))
            .map(|(seq, _)| seq)
            .collect()
    };
    let found = |from: Option<i64>, to: Option<i64>, limit: i64| async move {
        let mut seqs: Vec<i64> = Vec::new();
        let mut after_seq: Option<i64> = None;
        loop {
            let filter = AuditFilter { from_ms: from.map(ms), to_ms: to.map(ms), after_seq, limit, ..Default::default() };
            let page: Vec<i64> = store.audit(&filter).await.unwrap().iter().map(|r| r.seq).collect();
            seqs.extend(&page);
            match page.last() {
                Some(last) if page.len() as i64 == limit => after_seq = Some(*last),
                _ => return seqs,
            }
        }
    };
    let edges: Vec<i64> = (-120..=360).step_by(15).chain([-50, 6, 62, 129, 244, 299, 301]).collect();
    let mut windows = 0;
    for from in edges.iter().map(|e| Some(*e)).chain([None]) {
        for to in edges.iter().map(|e| Some(*e)).chain([None]) {
            if from.zip(to).is_some_and(|(from, to)| from >= to) {
                continue;
            }
            let expected = expected(from, to);
            assert_eq!(found(from, to, 100).await, expected, "window {from:?}..{to:?}");
            if windows % 7 == 0 {
                assert_eq!(found(from, to, 2).await, expected, "window {from:?}..{to:?} by pages of 2");
            }
            windows += 1;
        }
    }
    assert!(windows > 500, "{windows}");
    assert_eq!(expected(Some(0), Some(60)), vec![1, 2, 5, 6]);
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
