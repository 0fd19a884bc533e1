//! `Store::write_batch`: the group commit, all or nothing per write, and keys that go, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    a_failed_batch_leaves_no_trace,
    one_bad_write_fails_alone_in_the_group_commit,
    a_destroyed_case_key_is_gone_from_the_key_store_and_its_files,
);

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
