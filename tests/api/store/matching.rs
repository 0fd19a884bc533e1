//! The match store (issue 22 §2), on both backends: which searches a query
//! may meet (family-tracing requests still searching, not erased, not
//! withdrawn or narrowed), the rate limit per asking gateway, the handles
//! an answer gave, and `match_found` on the timeline.

use referral_gateway::store::{MatchHandle, SealedMatchEntry};

use super::*;
use crate::on_both_backends;

on_both_backends!(searches_still_open_are_the_only_candidates);
on_both_backends!(a_gateway_asks_at_most_its_limit_in_a_window);
on_both_backends!(a_handle_names_its_search_to_the_gateway_it_was_given_to_until_it_expires);

/// A family-tracing request with a match entry (its bytes stand for the sealed outputs).
fn search(id: &str, key: &str) -> NewReferral {
    let mut new = referral(id, "ita-child-protection", key, &format!("s-{id}"), true);
    new.record.purpose = "family_tracing".to_owned();
    new.match_entry = Some(SealedMatchEntry {
        entry: SealedPayload { sealed: format!("entry of {id}").into_bytes(), key_id: "k".to_owned() },
        people: format!("people of {id}").into_bytes(),
    });
    new
}

fn ids(candidates: &[referral_gateway::store::MatchCandidate]) -> Vec<&str> {
    candidates.iter().map(|c| c.referral_id.as_str()).collect()
}

async fn searches_still_open_are_the_only_candidates(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store
        .write_batch(&[
            submit(search("t1", "key-00001")),
            submit(search("t2", "key-00002")),
            submit(search("t3", "key-00003")),
            submit(search("t4", "key-00004")),
            // Not a search: no entry.
            submit(referral("r5", "ita-nrm", "key-00005", "s5", true)),
        ])
        .await
        .unwrap();
    let candidates = store.match_candidates().await.unwrap();
    assert_eq!(ids(&candidates), ["t1", "t2", "t3", "t4"]);
    assert_eq!(candidates[0].sender_org, "ita-child-protection");
    assert_eq!(candidates[0].entry, SealedPayload { sealed: b"entry of t1".to_vec(), key_id: "k".to_owned() });
    assert_eq!(store.match_people("t1").await.unwrap(), Some(SealedPayload { sealed: b"people of t1".to_vec(), key_id: "k".to_owned() }));
    assert_eq!(store.match_people("r5").await.unwrap(), None);

    // Withdrawn (t2), narrowed (t3), closed by the recipient (t4): searching no more.
    let withdrawal = |id: &str| NewWithdrawal { packet_id: format!("w-{id}"), payload: SealedPayload { sealed: vec![9], key_id: "k".to_owned() }, deadline_ms: at(60).timestamp_millis() };
    store
        .write_batch(&[
            Write::Withdraw { referral_id: "t2".to_owned(), withdrawal: withdrawal("t2"), at_ms: at(2).timestamp_millis(), audit: event(2, "ITA", Action::ConsentWithdraw).referral("t2") },
            Write::Narrow {
                referral_id: "t3".to_owned(),
                narrowing: Box::new(SentNarrowing { categories: vec!["family".to_owned()], payload: None, onward: None }),
                withdrawal: withdrawal("t3"),
                at_ms: at(2).timestamp_millis(),
                audit: event(2, "ITA", Action::ConsentWithdraw).referral("t3"),
            },
        ])
        .await
        .unwrap();
    raw(&opened, "UPDATE referrals SET status = 'closed' WHERE id = 't4'").await.unwrap();
    assert_eq!(ids(&store.match_candidates().await.unwrap()), ["t1"]);
    // Erased: none.
    raw(&opened, &format!("UPDATE referrals SET erased_ms = {} WHERE id = 't1'", at(3).timestamp_millis())).await.unwrap();
    assert!(store.match_candidates().await.unwrap().is_empty());
}

async fn a_gateway_asks_at_most_its_limit_in_a_window(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    let day = 24 * 60;
    let ask = |gateway: &'static str, minutes: i64| async move {
        store.count_match_query(gateway, at(minutes - day).timestamp_millis(), at(minutes).timestamp_millis(), 2).await.unwrap()
    };
    assert!(ask("GIN", 0).await);
    assert!(ask("GIN", 10).await);
    assert!(!ask("GIN", 20).await, "a third within the day");
    assert!(ask("NGA", 20).await, "another gateway has its own count");
    assert!(!ask("GIN", day - 1).await, "the first still counts a minute short of a day");
    assert!(ask("GIN", day).await, "a day later it left the window");
    assert!(!ask("GIN", day + 1).await, "refused queries are not counted, the second and the last are");
}

async fn a_handle_names_its_search_to_the_gateway_it_was_given_to_until_it_expires(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[submit(search("t1", "key-00001"))]).await.unwrap();
    let handle = MatchHandle {
        handle: "h-1".to_owned(),
        referral_id: Some("t1".to_owned()),
        asking_gateway: "GIN".to_owned(),
        asking_org: "gin-red-cross".to_owned(),
        expires_ms: at(60).timestamp_millis(),
    };
    store.keep_match_handles(std::slice::from_ref(&handle), at(0).timestamp_millis()).await.unwrap();
    assert_eq!(store.match_handle("h-1", "GIN", at(59).timestamp_millis()).await.unwrap(), Some(handle.clone()));
    assert_eq!(store.match_handle("h-1", "NGA", at(59).timestamp_millis()).await.unwrap(), None, "given to another gateway");
    assert_eq!(store.match_handle("h-2", "GIN", at(59).timestamp_millis()).await.unwrap(), None);
    assert_eq!(store.match_handle("h-1", "GIN", at(60).timestamp_millis()).await.unwrap(), None, "expired");
    // Expired handles are forgotten when new ones are kept; a handle of an entry not shown names no search.
    let later = MatchHandle { handle: "h-3".to_owned(), expires_ms: at(200).timestamp_millis(), ..handle.clone() };
    let withheld = MatchHandle { handle: "h-4".to_owned(), referral_id: None, expires_ms: at(200).timestamp_millis(), ..handle };
    store.keep_match_handles(&[later, withheld.clone()], at(61).timestamp_millis()).await.unwrap();
    assert_eq!(store.match_handle("h-4", "GIN", at(62).timestamp_millis()).await.unwrap(), Some(withheld));
    assert_eq!(raw(&opened, "DELETE FROM match_handles WHERE handle = 'h-1'").await.unwrap(), 0);

    // A match found is on the referral's timeline, codes only.
    let found = Write::MatchFound {
        referral_id: "t1".to_owned(),
        reasons: vec!["matched_by:GIN".to_owned()],
        at_ms: at(62).timestamp_millis(),
        audit: event(62, "GIN", Action::MatchFound).referral("t1"),
        handle: Some("h-3".to_owned()),
    };
    assert!(matches!(store.write_batch(&[found]).await.unwrap()[..], [Written::Audited { .. }]));
    let timeline = store.timeline("t1").await.unwrap();
    let last = timeline.last().unwrap();
    assert_eq!((last.status, last.reasons.clone()), (ReferralEvent::MatchFound, vec!["matched_by:GIN".to_owned()]));
    assert_eq!(store.referral("t1").await.unwrap().unwrap().status, ReferralStatus::Queued, "a match changes no status");
    // The handle named stands for the search no more: one match per handle.
    assert_eq!(store.match_handle("h-3", "GIN", at(63).timestamp_millis()).await.unwrap().unwrap().referral_id, None);
}
