//! `InboxStore`: what peers sent, stored once, and the recipient's cursor, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    a_known_packet_id_is_stored_once_and_keeps_its_first_receipt,
    the_recipients_cursor_follows_the_order_cases_became_visible,
);

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
