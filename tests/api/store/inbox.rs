//! `InboxStore`: what peers sent, stored once, and the recipient's cursor, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    a_known_packet_id_is_stored_once_and_keeps_its_first_receipt,
    the_recipients_cursor_follows_the_order_cases_became_visible,
    the_recipients_queue_puts_emergencies_first_then_deadlines_then_what_awaits_nothing,
    a_copy_passed_on_is_listed_to_its_organisation_linked_to_its_case_and_numbered_once,
);

/// A copy passed on (`Write::ReferOnward`): stored, made visible to the
/// onward organisation and the sender's `onward` status queued in one
/// write; listed with its case; a second copy of the same number writes nothing.
async fn a_copy_passed_on_is_listed_to_its_organisation_linked_to_its_case_and_numbered_once(backend: Backend) {
    use referral_gateway::domain::RecipientKind;
    use referral_gateway::store::{NewOnwardCopy, NewReply, OnwardCopyOf, StoredRetention};
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[packet("case", "d-1")]).await.unwrap();
    let queue = InboxQueue { priority: None, acknowledge_by_ms: at(100).timestamp_millis(), answer_by_ms: at(200).timestamp_millis() };
    store.write_batch(&[make_visible_as("case", 1, queue)]).await.unwrap();
    let copy = |id: &str, number: u32| {
        let of = OnwardCopyOf { parent: "case".to_owned(), number, kind: RecipientKind::Ngo, referred_by: "nga-iom-lagos".to_owned() };
        let entry = referral_gateway::store::NewInboxEntry {
            packet_id: id.to_owned(),
            issuer: "ITA".to_owned(),
            packet_sha256: String::new(),
            packet_type: "referral".to_owned(),
            recipient_org: "nga-ngo-shelter".to_owned(),
            claims: SealedPayload { sealed: vec![7], key_id: format!("k-{id}") },
            receipt: None,
            received_ms: at(10).timestamp_millis(),
            expires_ms: at(600).timestamp_millis(),
        };
        let retention = StoredRetention { until_ms: at(9000).timestamp_millis(), days_after_closure: None };
        let step = InboxMove::Forward { pushed: false, retention, reseal: None, queue, answers: None };
        let forward = InboxChange { packet_id: id.to_owned(), from: InboxState::Received, step, at_ms: at(10).timestamp_millis() };
        let reply = NewReply {
            packet_id: format!("onward-{id}"),
            packet_type: "status".to_owned(),
            destination_country: "ITA".to_owned(),
            recipient_org: "nga-iom-lagos".to_owned(),
            payload: SealedPayload { sealed: vec![1], key_id: "k".to_owned() },
            deadline_ms: at(600).timestamp_millis(),
            created_ms: at(10).timestamp_millis(),
        };
        let parent_key_id = "k".to_owned();
        Write::ReferOnward { copy: Box::new(NewOnwardCopy { entry, of, parent_key_id, forward, reply }), audit: event(10, "NGA", Action::InboxUpdate) }
    };
    let for_org = |write: Write, org: &str| match write {
        Write::ReferOnward { mut copy, audit } => {
            copy.entry.recipient_org = org.to_owned();
            Write::ReferOnward { copy, audit }
        }
        other => other,
    };
    let written = store.write_batch(&[copy("copy-1", 1)]).await.unwrap();
    assert!(matches!(written[0], Written::Audited { .. }), "{written:?}");
    let copies = store.onward_copies("case").await.unwrap();
    assert_eq!(copies.len(), 1);
    let listed = &copies[0];
    assert_eq!((listed.packet_id.as_str(), listed.state, listed.recipient_org.as_str()), ("copy-1", InboxState::Available, "nga-ngo-shelter"));
    assert!(listed.visible_seq.is_some() && listed.retention.is_some() && listed.queue.is_some(), "{listed:?}");
    assert_eq!(listed.onward.as_ref().map(|o| (o.parent.as_str(), o.number, o.kind)), Some(("case", 1, RecipientKind::Ngo)));
    let shelter = store.inbox_for("nga-ngo-shelter", &[InboxState::Available], None, 10).await.unwrap();
    assert_eq!(shelter.iter().map(|i| i.packet_id.as_str()).collect::<Vec<_>>(), ["copy-1"]);
    let queued = |id: &str| format!("UPDATE outbox SET next_attempt_ms = next_attempt_ms WHERE id = 'onward-{id}'");
    assert_eq!(raw(&opened, &queued("copy-1")).await, Ok(1), "the sender's status is queued with it");
    // The same organisation again: it holds one. The same number again: nothing written, not even its status.
    assert_eq!(store.write_batch(&[copy("copy-2", 2)]).await.unwrap()[0], Written::KnownPacket);
    let again = store.write_batch(&[for_org(copy("copy-2", 1), "nga-health-lagos")]).await.unwrap();
    assert_eq!(again[0], Written::DuplicateKey);
    assert!(store.inbox_item("copy-2").await.unwrap().is_none());
    assert_eq!(raw(&opened, &queued("copy-2")).await, Ok(0));
    store.write_batch(&[for_org(copy("copy-2", 2), "nga-health-lagos")]).await.unwrap();
    let numbers: Vec<u32> = store.onward_copies("case").await.unwrap().iter().filter_map(|c| c.onward.as_ref().map(|o| o.number)).collect();
    assert_eq!(numbers, [1, 2]);
    assert!(store.onward_copies("copy-1").await.unwrap().is_empty());
    assert!(store.inbox_item("case").await.unwrap().unwrap().onward.is_none());

    // The case read under another key than it holds now (a withdrawal cut it meanwhile): nothing written.
    raw(&opened, "UPDATE inbox SET key_id = 'k-cut' WHERE packet_id = 'case'").await.unwrap();
    assert_eq!(store.write_batch(&[for_org(copy("copy-3", 3), "nga-red-cross")]).await.unwrap()[0], Written::AlreadySettled);
    assert!(store.inbox_item("copy-3").await.unwrap().is_none());
    raw(&opened, "UPDATE inbox SET key_id = 'k' WHERE packet_id = 'case'").await.unwrap();

    // A withdrawal that worked out its effects before copy-2 was made (it saw copy-1 only): copy-2 is erased whole
    // with it; taken by its organisation already, a notice of the erasure is pushed to it if it takes pushes.
    use referral_gateway::store::{NewReply as Reply, Tombstone};
    let taken = Reply {
        packet_id: "ack-copy-2".to_owned(),
        packet_type: "status".to_owned(),
        destination_country: "ITA".to_owned(),
        recipient_org: "nga-iom-lagos".to_owned(),
        payload: SealedPayload { sealed: vec![1], key_id: "k".to_owned() },
        deadline_ms: at(600).timestamp_millis(),
        created_ms: at(15).timestamp_millis(),
    };
    let acknowledge = InboxChange { packet_id: "copy-2".to_owned(), from: InboxState::Available, step: InboxMove::Acknowledge { reply: taken }, at_ms: at(15).timestamp_millis() };
    store.write_batch(&[Write::InboxMove { change: Box::new(acknowledge), audit: event(15, "NGA", Action::InboxUpdate) }]).await.unwrap();
    store.write_batch(&[packet("withdrawal", "d-2")]).await.unwrap();
    let reply = Reply {
        packet_id: "confirmation".to_owned(),
        packet_type: "erasure_confirmation".to_owned(),
        destination_country: "ITA".to_owned(),
        recipient_org: "nga-iom-lagos".to_owned(),
        payload: SealedPayload { sealed: vec![1], key_id: "k".to_owned() },
        deadline_ms: at(600).timestamp_millis(),
        created_ms: at(20).timestamp_millis(),
    };
    let tombstone = Tombstone { withdrawal_id: "withdrawal".to_owned(), packet_id: "case".to_owned(), issuer: "ITA".to_owned(), categories: Some(vec!["health".to_owned()]), end_to_end: None };
    let step = InboxMove::ApplyWithdrawal { categories: vec!["health".to_owned()], reply, tombstone, effects: Vec::new(), copies: vec!["copy-1".to_owned()] };
    let change = InboxChange { packet_id: "withdrawal".to_owned(), from: InboxState::Received, step, at_ms: at(20).timestamp_millis() };
    store.write_batch(&[Write::InboxMove { change: Box::new(change), audit: event(20, "NGA", Action::PacketScreen) }]).await.unwrap();
    let states: Vec<(String, InboxState)> = store.onward_copies("case").await.unwrap().into_iter().map(|c| (c.packet_id, c.state)).collect();
    assert_eq!(states, [("copy-1".to_owned(), InboxState::Available), ("copy-2".to_owned(), InboxState::ErasurePushing)]);
    assert_eq!(store.inbox_item("copy-2").await.unwrap().unwrap().claims.sealed, Vec::<u8>::new(), "nothing of it left readable");
}

async fn the_recipients_queue_puts_emergencies_first_then_deadlines_then_what_awaits_nothing(backend: Backend) {
    use referral_gateway::domain::priority::Priority;
    use referral_gateway::store::{NewReply, QueuePlace};
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let queue = |priority: Option<Priority>, acknowledge_by: i64, answer_by: i64| InboxQueue {
        priority,
        acknowledge_by_ms: at(acknowledge_by).timestamp_millis(),
        answer_by_ms: at(answer_by).timestamp_millis(),
    };
    let ids = |items: &[referral_gateway::store::InboxItem]| items.iter().map(|i| i.packet_id.clone()).collect::<Vec<_>>();
    let listed = [InboxState::Available, InboxState::Acknowledged, InboxState::Erased];
    store.write_batch(&[packet("normal", "d-1"), packet("urgent", "d-2"), packet("emergency", "d-3"), packet("sealed", "d-4")]).await.unwrap();
    store
        .write_batch(&[
            make_visible_as("normal", 1, queue(Some(Priority::Normal), 3000, 20000)),
            make_visible_as("urgent", 2, queue(Some(Priority::Urgent), 1000, 4000)),
            make_visible_as("emergency", 3, queue(Some(Priority::Emergency), 240, 1440)),
            // Sealed end to end: its priority unknown here, queued by the normal deadlines.
            make_visible_as("sealed", 4, queue(None, 2000, 20000)),
        ])
        .await
        .unwrap();
    let all = store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap();
    assert_eq!(ids(&all), ["emergency", "urgent", "sealed", "normal"]);
    assert_eq!(all[0].priority, Some(Priority::Emergency));
    assert_eq!(all[2].priority, None);
    assert_eq!(all[0].queue.map(|q| (q.rank, q.due_ms)), Some((0, at(240).timestamp_millis())), "its acknowledgement is awaited");
    // Pages of one walk the same order.
    let mut walked = Vec::new();
    let mut after: Option<QueuePlace> = None;
    loop {
        let page = store.inbox_queue("nga-iom-lagos", &listed, after, 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.queue;
        walked.extend(ids(&page));
    }
    assert_eq!(walked, ids(&all));
    // Acknowledged, the emergency awaits its first answer, still first.
    let acknowledge = |id: &str, minutes: i64| {
        let reply = NewReply {
            packet_id: format!("ack-{id}"),
            packet_type: "status".to_owned(),
            destination_country: "ITA".to_owned(),
            recipient_org: "ita-nrm".to_owned(),
            payload: SealedPayload { sealed: vec![1], key_id: "k".to_owned() },
            deadline_ms: at(minutes + 600).timestamp_millis(),
            created_ms: at(minutes).timestamp_millis(),
        };
        let change = InboxChange { packet_id: id.to_owned(), from: InboxState::Available, step: InboxMove::Acknowledge { reply }, at_ms: at(minutes).timestamp_millis() };
        Write::InboxMove { change: Box::new(change), audit: event(minutes, "NGA", Action::InboxUpdate) }
    };
    store.write_batch(&[acknowledge("emergency", 10)]).await.unwrap();
    let now_first = store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap();
    assert_eq!(ids(&now_first), ["emergency", "urgent", "sealed", "normal"]);
    assert_eq!(now_first[0].queue.map(|q| (q.rank, q.due_ms)), Some((0, at(1440).timestamp_millis())), "then its first answer");
    // Answered, it awaits nothing more of its recipient: last.
    let answer = |id: &str| Write::Reply {
        reply: Box::new(NewReply {
            packet_id: format!("status-{id}"),
            packet_type: "status".to_owned(),
            destination_country: "ITA".to_owned(),
            recipient_org: "ita-nrm".to_owned(),
            payload: SealedPayload { sealed: vec![2], key_id: "k".to_owned() },
            deadline_ms: at(620).timestamp_millis(),
            created_ms: at(20).timestamp_millis(),
        }),
        audit: event(20, "NGA", Action::InboxUpdate),
        brings_forward: None,
        answers: Some(id.to_owned()),
    };
    store.write_batch(&[answer("emergency")]).await.unwrap();
    assert_eq!(ids(&store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap()), ["urgent", "sealed", "normal", "emergency"]);
    // Acknowledged, the urgent case's first answer is due after the others' acknowledgements.
    store.write_batch(&[acknowledge("urgent", 21)]).await.unwrap();
    assert_eq!(ids(&store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap()), ["sealed", "normal", "urgent", "emergency"]);
    // Answered without an acknowledgement, then acknowledged: it awaits nothing still.
    store.write_batch(&[answer("normal")]).await.unwrap();
    store.write_batch(&[acknowledge("normal", 22)]).await.unwrap();
    let after_answer = store.inbox_queue("nga-iom-lagos", &listed, None, 10).await.unwrap();
    assert_eq!(ids(&after_answer), ["sealed", "urgent", "normal", "emergency"], "the answered in the order they became visible");
    assert_eq!(after_answer[2].queue.map(|q| q.rank), Some(2));
    // Erased, a case keeps no priority: nothing of it is left in clear.
    let erase = Write::RetentionErase {
        erasure: referral_gateway::store::RetentionErasure::Received { packet_id: "urgent".to_owned(), erasure_pushed: false, push_until_ms: at(700).timestamp_millis() },
        at_ms: at(30).timestamp_millis(),
        audit: event(30, "NGA", Action::RetentionErase),
    };
    store.write_batch(&[erase]).await.unwrap();
    let erased = store.inbox_item("urgent").await.unwrap().unwrap();
    assert_eq!((erased.state, erased.priority, erased.queue.map(|q| q.rank)), (InboxState::Erased, None, Some(2)));
    // The arrival order is unchanged by the rest; the erased case is listed again, last.
    assert_eq!(ids(&store.inbox_for("nga-iom-lagos", &listed, None, 10).await.unwrap()), ["normal", "emergency", "sealed", "urgent"]);
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
        Some(InboxReceipt {
            packet_id: "p1".to_owned(),
            packet_sha256: "digest-a".to_owned(),
            receipt: Some("receipt-for-digest-a".to_owned()),
            received_ms: at(0).timestamp_millis()
        })
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
    let known = store.receipt_for_bytes("digest-1", "ITA").await.unwrap().unwrap();
    assert_eq!((known.packet_id.as_str(), known.receipt.as_deref()), ("p1", Some("receipt-for-digest-1")));
    assert_eq!(store.receipt_for_bytes("digest-1", "GMB").await.unwrap(), None, "only from the member that sent it");
    // Taken in a batch: no receipt of its own.
    let Write::Inbox { mut entry, audit } = packet("p3", "digest-3") else { unreachable!() };
    entry.receipt = None;
    store.write_batch(&[Write::Inbox { entry, audit }]).await.unwrap();
    let known = store.receipt_for_bytes("digest-3", "ITA").await.unwrap().unwrap();
    assert_eq!((known.packet_id.as_str(), known.receipt), ("p3", None));
    assert_eq!(store.inbox_receipt("p3").await.unwrap().unwrap().receipt, None);
}
