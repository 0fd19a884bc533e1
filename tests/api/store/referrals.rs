//! `ReferralStore`: referrals, their timelines and withdrawals, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    a_taken_idempotency_key_writes_nothing,
    a_status_that_came_first_is_not_overwritten_by_the_delivery,
    a_withdrawal_stops_delivery_and_names_the_packet_it_withdraws,
    a_partial_withdrawal_cuts_the_payload_it_was_cut_from_and_keeps_the_referral_going,
    a_cut_before_any_packet_frees_the_entry_an_attempt_holds,
    a_denied_referral_records_its_withdrawal_once,
    decision_facts_are_kept_with_their_referral_read_in_pages_and_forgotten,
    a_periods_first_released_statistics_are_kept,
    overdue_referrals_are_counted_by_status_priority_and_age_and_logged_once_per_deadline,
    an_organisations_listing_follows_the_order_referrals_were_recorded,
    onward_limits_go_with_the_payload,
);

/// A referral's onward limits are kept sealed beside its payload, claimed
/// with it, blanked with it on delivery and on a withdrawal, and replaced
/// with it on a cut (both sealed again under the new key).
async fn onward_limits_go_with_the_payload(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let with_limits = |id: &str, key: &str| {
        let mut new = referral(id, "ita-nrm", key, "s1", true);
        if let Some(outbox) = new.outbox.as_mut() {
            outbox.onward = Some(SealedPayload { sealed: vec![5, 5], key_id: "k".to_owned() });
        }
        submit(new)
    };
    store.write_batch(&[with_limits("r1", "key-00001"), with_limits("r2", "key-00002"), with_limits("r3", "key-00003")]).await.unwrap();
    let due = store.claim_deliveries(at(1).timestamp_millis(), 60_000, 10).await.unwrap();
    assert_eq!(due.iter().filter(|d| d.onward.as_deref() == Some(&[5u8, 5][..])).count(), 3, "{due:?}");
    let blanked = |id: &str| format!("UPDATE outbox SET onward = onward WHERE id = '{id}' AND onward IS NULL");

    let withdrawn = Write::Withdraw {
        referral_id: "r2".to_owned(),
        withdrawal: NewWithdrawal { packet_id: "w-2".to_owned(), payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() }, deadline_ms: at(60).timestamp_millis() },
        at_ms: at(2).timestamp_millis(),
        audit: event(2, "ITA", Action::ConsentWithdraw).referral("r2"),
    };
    let cut = Write::Narrow {
        referral_id: "r3".to_owned(),
        narrowing: Box::new(SentNarrowing {
            categories: vec!["health".to_owned()],
            payload: Some((SealedPayload { sealed: vec![7, 7], key_id: "k-cut".to_owned() }, "k".to_owned())),
            onward: Some(vec![8, 8]),
        }),
        withdrawal: NewWithdrawal { packet_id: "w-3".to_owned(), payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() }, deadline_ms: at(60).timestamp_millis() },
        at_ms: at(2).timestamp_millis(),
        audit: event(2, "ITA", Action::ConsentWithdraw).referral("r3"),
    };
    store.write_batch(&[delivered("r1", 2), withdrawn, cut]).await.unwrap();
    for id in ["r1", "r2"] {
        assert_eq!(raw(&opened, &blanked(id)).await, Ok(1), "{id}'s onward limits are blanked");
    }
    let due = store.claim_deliveries(at(3).timestamp_millis() + 120_000, 60_000, 10).await.unwrap();
    let r3 = due.iter().find(|d| d.id == "r3").expect("the cut referral still goes");
    assert_eq!(r3.onward.as_deref(), Some(&[8u8, 8][..]), "cut with the payload");
    let (payload, onward) = store.sealed_payload_and_onward("r3").await.unwrap().expect("r3's entry");
    assert_eq!((payload.key_id.as_str(), onward), ("k-cut", Some(vec![8, 8])), "read together");
    assert_eq!(store.sealed_payload_and_onward("r1").await.unwrap().map(|(_, onward)| onward), Some(None));
}

/// A referral recorded after a page was read comes after it, even with an
/// earlier acceptance time (a submission held up on its way to the store,
/// another replica's clock): a walk by cursor never skips it.
async fn an_organisations_listing_follows_the_order_referrals_were_recorded(backend: Backend) {
    use referral_gateway::store::ReferralFilter;
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let made = |id: &str, key: &str, minutes: i64| {
        let mut new = referral(id, "ita-nrm", key, "s1", true);
        new.record.created_ms = at(minutes).timestamp_millis();
        submit(new)
    };
    let everything = ReferralFilter::default();
    let ids = |listed: &[referral_gateway::store::ListedReferral]| listed.iter().map(|l| l.referral.id.clone()).collect::<Vec<_>>();
    store.write_batch(&[made("r1", "key-00001", 10), made("r2", "key-00002", 20)]).await.unwrap();
    let first = store.referrals_of("ita-nrm", &everything, None, 10).await.unwrap();
    assert_eq!(ids(&first), ["r1", "r2"]);
    let cursor = first.last().map(|l| l.listed_seq);
    // Accepted before both, recorded after: after the cursor.
    store.write_batch(&[made("r0", "key-00000", 5), made("r1-again", "key-00001", 30)]).await.unwrap();
    assert_eq!(ids(&store.referrals_of("ita-nrm", &everything, cursor, 10).await.unwrap()), ["r0"], "a retry of a taken key adds nothing");
    assert_eq!(ids(&store.referrals_of("ita-nrm", &everything, None, 10).await.unwrap()), ["r1", "r2", "r0"]);
    // The time filters still read acceptance times.
    let early = ReferralFilter { to_ms: Some(at(15).timestamp_millis()), ..ReferralFilter::default() };
    assert_eq!(ids(&store.referrals_of("ita-nrm", &early, None, 10).await.unwrap()), ["r1", "r0"]);
    assert!(store.referrals_of("another-org", &everything, None, 10).await.unwrap().is_empty());
}

async fn overdue_referrals_are_counted_by_status_priority_and_age_and_logged_once_per_deadline(backend: Backend) {
    use referral_gateway::domain::priority::DeadlineKind;
    use referral_gateway::store::AwaitingCutoff;
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let made = |id: &str, key: &str, priority: Priority, minutes: i64, allowed: bool| {
        let mut new = referral(id, "ita-nrm", key, "s1", allowed);
        new.record.priority = priority;
        new.record.created_ms = at(minutes).timestamp_millis();
        submit(new)
    };
    store
        .write_batch(&[
            made("r1", "key-00001", Priority::Emergency, 0, true),
            made("r2", "key-00002", Priority::Normal, 0, true),
            made("r3", "key-00003", Priority::Emergency, 30, true),
            made("r4", "key-00004", Priority::Emergency, 0, false),
            made("r5", "key-00005", Priority::Urgent, 0, true),
        ])
        .await
        .unwrap();
    assert_eq!(store.referral("r1").await.unwrap().unwrap().priority, Priority::Emergency, "stored as submitted");
    let cutoff = |status, priority, deadline, minutes| AwaitingCutoff { status, priority, deadline, accepted_by_ms: at(minutes).timestamp_millis() };
    let queued = |priority, minutes| cutoff(ReferralStatus::Queued, priority, DeadlineKind::Delivery, minutes);
    // Accepted by minute 10: r1 (not r3, too recent; not r4, denied), and r2 of its own priority.
    let counts = store.count_awaiting(&[queued(Priority::Emergency, 10), queued(Priority::Normal, 10), queued(Priority::Urgent, -1)]).await.unwrap();
    assert_eq!(counts, [1, 1, 0]);
    assert_eq!(store.count_awaiting(&[]).await.unwrap(), Vec::<i64>::new());
    let ids = |found: Vec<referral_gateway::store::OverdueReferral>| found.into_iter().map(|r| r.referral_id).collect::<Vec<_>>();
    let emergencies = [queued(Priority::Emergency, 40), cutoff(ReferralStatus::Delivered, Priority::Emergency, DeadlineKind::Acknowledgement, 40)];
    assert_eq!(ids(store.overdue_unlogged(&emergencies, 10).await.unwrap()), ["r1", "r3"], "oldest first");
    assert_eq!(ids(store.overdue_unlogged(&emergencies, 1).await.unwrap()), ["r1"], "at most the limit");
    assert!(store.mark_overdue_logged("r1", DeadlineKind::Delivery).await.unwrap());
    assert!(!store.mark_overdue_logged("r1", DeadlineKind::Delivery).await.unwrap(), "marked once: a second replica does not log it");
    assert_eq!(ids(store.overdue_unlogged(&emergencies, 10).await.unwrap()), ["r3"], "logged once");
    // Delivered late: now it awaits its acknowledgement, a deadline it was not logged for.
    store.write_batch(&[delivered("r1", 35)]).await.unwrap();
    assert_eq!(ids(store.overdue_unlogged(&emergencies, 10).await.unwrap()), ["r1", "r3"]);
    assert!(store.mark_overdue_logged("r1", DeadlineKind::Acknowledgement).await.unwrap());
    assert_eq!(ids(store.overdue_unlogged(&emergencies, 10).await.unwrap()), ["r3"]);
    assert_eq!(store.count_awaiting(&emergencies).await.unwrap(), [1, 1], "counted whether logged or not");
}

async fn a_periods_first_released_statistics_are_kept(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    assert_eq!(store.released_statistics("2026-11").await.unwrap(), None);
    let first = store.keep_released_statistics("2026-11", "{\"first\":1}", at(0).timestamp_millis()).await.unwrap();
    assert_eq!(first, "{\"first\":1}");
    // A later (or another replica's) release of the same period keeps and answers the first.
    let second = store.keep_released_statistics("2026-11", "{\"second\":2}", at(60).timestamp_millis()).await.unwrap();
    assert_eq!(second, "{\"first\":1}");
    assert_eq!(store.released_statistics("2026-11").await.unwrap().as_deref(), Some("{\"first\":1}"));
    // Each period has its own.
    assert_eq!(store.keep_released_statistics("2026-Q4", "{\"quarter\":4}", at(60).timestamp_millis()).await.unwrap(), "{\"quarter\":4}");
    assert_eq!(store.released_statistics("2026-10").await.unwrap(), None);
}

async fn decision_facts_are_kept_with_their_referral_read_in_pages_and_forgotten(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let later = |mut new: NewReferral, minutes: i64| {
        new.record.created_ms = at(minutes).timestamp_millis();
        new
    };
    store
        .write_batch(&[
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            submit(later(referral("r3", "ita-nrm", "key-00003", "s1", false), 10)),
            submit(later(referral("r2", "ita-nrm", "key-00002", "s2", false), 10)),
            // A retry: its referral is not stored, nor are its facts.
            submit(later(referral("r4", "ita-nrm", "key-00001", "s1", false), 20)),
        ])
        .await
        .unwrap();
    let window = |from: i64| (at(from).timestamp_millis(), at(60).timestamp_millis());
    let through = |minutes: i64| (at(0).timestamp_millis(), at(minutes).timestamp_millis());
    assert_eq!(store.decision_facts_between(through(9), None, 10).await.unwrap().len(), 1, "nothing made after the window");
    assert_eq!(store.decision_facts_between(through(10), None, 10).await.unwrap().len(), 3, "its end included");
    let ids = |facts: &[referral_gateway::store::DecisionFactsAtRest]| facts.iter().map(|f| f.referral_id.clone()).collect::<Vec<_>>();
    let first = store.decision_facts_between(window(0), None, 2).await.unwrap();
    assert_eq!(ids(&first), ["r1", "r2"], "in the order made, then by id");
    assert_eq!(first[0].decided_ms, at(0).timestamp_millis());
    assert_eq!(first[0].facts.sealed, SealedPayload { sealed: b"facts of r1".to_vec(), key_id: "k".to_owned() });
    assert!(!first[0].facts.key_for_facts_only, "an allowed referral's facts share the payload's key");
    assert!(first[1].facts.key_for_facts_only);
    assert_eq!(first[1].facts.sealed.key_id, "f-r2");
    let after = Some((first[1].decided_ms, first[1].referral_id.clone()));
    assert_eq!(ids(&store.decision_facts_between(window(0), after, 2).await.unwrap()), ["r3"]);
    assert_eq!(ids(&store.decision_facts_between(window(5), None, 10).await.unwrap()), ["r2", "r3"]);
    assert_eq!(ids(&store.decision_facts_before(at(10).timestamp_millis(), 10).await.unwrap()), ["r1"]);
    assert_eq!(ids(&store.decision_facts_before(at(11).timestamp_millis(), 2).await.unwrap()), ["r1", "r2"]);

    assert_eq!(store.forget_decision_facts(&["r1".to_owned(), "r9".to_owned()]).await.unwrap(), 1);
    assert_eq!(ids(&store.decision_facts_between(window(0), None, 10).await.unwrap()), ["r2", "r3"]);
    assert!(store.referral("r1").await.unwrap().is_some(), "the referral stays; only its facts go");
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
    store.write_batch(&[delivered("r1", 2)]).await.unwrap();
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "refused");
    let timeline: Vec<(String, Vec<String>)> = store.timeline("r1").await.unwrap().into_iter().map(|t| (t.status.as_str().to_owned(), t.reasons)).collect();
    assert_eq!(
        timeline,
        [("queued".to_owned(), vec![]), ("refused".to_owned(), vec!["policy_no_permit".to_owned()]), ("delivered".to_owned(), vec![])]
    );
    assert_eq!(store.inbox_item("p1").await.unwrap().unwrap().claims.sealed, Vec::<u8>::new(), "an applied status is not kept");
}

async fn a_withdrawal_stops_delivery_and_names_the_packet_it_withdraws(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store
        .write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), submit(referral("r2", "ita-nrm", "key-00002", "s2", true))])
        .await
        .unwrap();
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

    // r1's packet was made (and may be on its way): the withdrawal names it.
    store.write_batch(&[keep("r1", "p-1", "k")]).await.unwrap();
    let results = store.write_batch(&[withdraw("r1", "w-1"), keep("r1", "p-other", "k"), withdraw("r1", "w-again")]).await.unwrap();
    assert!(matches!(results[0], Written::Withdrawn { peer_notified: true, .. }), "{results:?}");
    assert_eq!(results[1..], [Written::AlreadySettled, Written::AlreadySettled], "no packet is kept into a withdrawn entry, and it is withdrawn once");
    let due = store.claim_deliveries(at(1).timestamp_millis(), 60_000, 10).await.unwrap();
    let notices: Vec<_> = due.iter().filter(|d| d.packet_type == "withdrawal").collect();
    assert_eq!(notices.len(), 1, "{due:?}");
    assert_eq!((notices[0].id.as_str(), notices[0].in_reply_to.as_deref(), notices[0].referral_id.as_deref()), ("w-1", Some("p-1"), Some("r1")));
    assert!(due.iter().all(|d| d.id != "r1"), "a withdrawn referral is not delivered");
    // A send that was under way still leaves its receipt; the entry stays withdrawn.
    assert!(matches!(store.write_batch(&[delivered("r1", 2)]).await.unwrap()[..], [Written::Audited { .. }]));
    assert_eq!(store.write_batch(&[delivered("r1", 2)]).await.unwrap(), vec![Written::AlreadySettled]);
    let r1 = store.delivery("r1").await.unwrap().unwrap();
    assert_eq!((r1.state.as_str(), r1.receipt.as_deref(), r1.packet.as_deref()), ("withdrawn", Some("receipt-r1"), None));
    assert_eq!(store.referral("r1").await.unwrap().unwrap().status.as_str(), "withdrawn");

    // r2 never had a packet: nothing to tell the peer, and none is made after.
    let results = store.write_batch(&[withdraw("r2", "w-2"), keep("r2", "p-2", "k")]).await.unwrap();
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
    let narrow = |entry: &str, notice: &str, from: &str, to: &str| health_withdrawn(entry, notice, (from, to), 1);

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

/// Health withdrawn from referral `entry` at minute `minute`: its payload
/// cut from under key `keys.0` to key `keys.1`, `notice` the withdrawal
/// queued if a packet was made.
fn health_withdrawn(entry: &str, notice: &str, (from, to): (&str, &str), minute: i64) -> Write {
    Write::Narrow {
        referral_id: entry.to_owned(),
        narrowing: Box::new(SentNarrowing {
            categories: vec!["health".to_owned()],
            payload: Some((SealedPayload { sealed: vec![7, 7], key_id: to.to_owned() }, from.to_owned())),
            onward: None,
        }),
        withdrawal: NewWithdrawal {
            packet_id: notice.to_owned(),
            payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() },
            deadline_ms: at(60).timestamp_millis(),
        },
        at_ms: at(minute).timestamp_millis(),
        audit: event(minute, "ITA", Action::ConsentWithdraw).referral(entry),
    }
}

/// The packet `id`, made from the payload under key `from`, kept for entry `entry`.
fn keep(entry: &str, id: &str, from: &str) -> Write {
    Write::KeepPacket { entry_id: entry.to_owned(), packet: StoredPacket { packet_id: id.to_owned(), packet: format!("sealed-{id}") }, sealed_from: from.to_owned() }
}

/// An attempt under way holds its entry for a lease, sealing the payload
/// it claimed. A cut before any packet is kept frees the entry: the packet
/// of the old payload is not kept, and the entry is claimed again at once
/// with the new one, not once the lease runs out. Once a packet is kept,
/// the attempt holding it goes on (the withdrawal follows the packet).
async fn a_cut_before_any_packet_frees_the_entry_an_attempt_holds(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store
        .write_batch(&[submit(referral("r1", "ita-nrm", "key-00001", "s1", true)), submit(referral("r2", "ita-nrm", "key-00002", "s2", true))])
        .await
        .unwrap();
    let lease_ms = 600_000; // ten minutes: longer than the test runs on its clock (`at` counts minutes)
    let claimed = store.claim_deliveries(at(1).timestamp_millis(), lease_ms, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["r1", "r2"]);
    // r2's attempt kept its packet before the cut; r1's had not.
    assert!(matches!(store.write_batch(&[keep("r2", "p-2", "k")]).await.unwrap()[..], [Written::PacketKept(_)]));
    let narrow = |entry: &str, notice: &str| health_withdrawn(entry, notice, ("k", "k-cut"), 2);
    store.write_batch(&[narrow("r1", "w-1"), narrow("r2", "w-2")]).await.unwrap();
    assert_eq!(store.write_batch(&[keep("r1", "p-stale", "k")]).await.unwrap(), vec![Written::AlreadySettled]);

    // Within r1's lease: r1 is claimed again with the cut payload; r2 stays with the attempt holding it.
    let again = store.claim_deliveries(at(3).timestamp_millis(), lease_ms, 10).await.unwrap();
    let r1 = again.iter().find(|d| d.id == "r1").expect("the cut entry is due at once");
    assert_eq!((r1.payload.key_id.as_str(), r1.packet.as_ref()), ("k-cut", None));
    assert!(again.iter().all(|d| d.id != "r2"), "the entry whose packet was kept is still held: {again:?}");
    assert!(again.iter().any(|d| d.id == "w-2"), "the withdrawal of what r2's packet holds is queued");
    // The attempt that took r1 over keeps its packet; the one overtaken is not handed it (it would send it too).
    assert!(matches!(&store.write_batch(&[keep("r1", "p-new", "k-cut")]).await.unwrap()[..], [Written::PacketKept(p)] if p.packet_id == "p-new"));
    assert_eq!(store.write_batch(&[keep("r1", "p-stale", "k")]).await.unwrap(), vec![Written::AlreadySettled]);
    // Two attempts on one payload: the second is handed the packet the first kept, and sends the same bytes.
    assert!(matches!(&store.write_batch(&[keep("r1", "p-twin", "k-cut")]).await.unwrap()[..], [Written::PacketKept(p)] if p.packet_id == "p-new"));

    // Delivered between a cut's read and its write: nothing is written back onto the blanked entry; it is cut again from the blank.
    store.write_batch(&[submit(referral("r3", "ita-nrm", "key-00003", "s3", true))]).await.unwrap();
    store.write_batch(&[delivered("r3", 3)]).await.unwrap();
    assert_eq!(store.write_batch(&[health_withdrawn("r3", "w-3", ("k", "k-cut"), 4)]).await.unwrap(), vec![Written::PayloadMoved]);
    let held = store.sealed_payload("r3").await.unwrap().unwrap();
    assert!(held.sealed.is_empty() && held.key_id == "k", "the delivered entry holds nothing: {held:?}");
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
