//! Status callback events in the store, on both backends: queued with each
//! timeline entry for the organisations registered only, claimed one per
//! referral in timeline order, leased, retried, given up, and left alone by
//! a replica that does not serve their organisation.

use referral_gateway::store::{CallbackCount, CallbackSubscription, DueCallback, UndeliveredCallbacks};
use referral_gateway::domain::lifecycle::CallbackState;
use referral_gateway::domain::OrgId;

use super::*;
use crate::on_both_backends;

on_both_backends!(callback_events_are_queued_for_registered_organisations_and_claimed_in_timeline_order);

const HOUR_MS: i64 = 3_600_000;

/// The organisations a replica with ita-nrm's callback claims for.
fn nrm() -> Vec<OrgId> {
    vec![OrgId::parse("ita-nrm").unwrap()]
}
const LEASE_MS: i64 = 600_000;

fn ids(claimed: &[DueCallback]) -> Vec<&str> {
    claimed.iter().map(|c| c.id.as_str()).collect()
}

async fn callback_events_are_queued_for_registered_organisations_and_claimed_in_timeline_order(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.register_callbacks(&[CallbackSubscription { org: "ita-nrm".to_owned(), retry_ms: HOUR_MS }]).await.unwrap();
    store
        .write_batch(&[
            submit(referral("r1", "ita-nrm", "key-00001", "s1", true)),
            submit(referral("r2", "ita-nrm", "key-00002", "s2", false)),
            submit(referral("r3", "ita-iom-rome", "key-00003", "s3", true)),
            packet("p1", "digest-a"),
        ])
        .await
        .unwrap();
    // r1: refused by the peer (with a reason), then delivered: three entries.
    let refused = InboxChange {
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
    store.write_batch(&[Write::InboxMove { change: Box::new(refused), audit: event(1, "NGA", Action::PacketScreen) }]).await.unwrap();
    store.write_batch(&[delivered("r1", 2)]).await.unwrap();
    assert_eq!(store.timeline("r1").await.unwrap().len(), 3);

    // The first entry of each referral of the registered organisation; nothing of the other's.
    let now = at(5).timestamp_millis();
    let claimed = store.claim_callbacks(&nrm(), now, LEASE_MS, 10).await.unwrap();
    let mut claimed_ids = ids(&claimed);
    claimed_ids.sort();
    assert_eq!(claimed_ids, ["r1.1", "r2.1"]);
    let first = claimed.iter().find(|c| c.id == "r1.1").unwrap();
    assert_eq!(
        first,
        &DueCallback {
            id: "r1.1".to_owned(),
            referral_id: "r1".to_owned(),
            org: "ita-nrm".to_owned(),
            position: 1,
            event: ReferralEvent::Queued,
            at_ms: at(0).timestamp_millis(),
            reasons: Vec::new(),
            attempts: 1,
            deadline_ms: at(0).timestamp_millis() + HOUR_MS,
        }
    );
    assert_eq!(claimed.iter().find(|c| c.id == "r2.1").unwrap().event, ReferralEvent::Denied);
    assert!(store.claim_callbacks(&nrm(), now, LEASE_MS, 10).await.unwrap().is_empty(), "leased, and r1's next entry waits behind its first");

    // Taken: the referral's next entry, with its reasons.
    store.callback_delivered("r1.1").await.unwrap();
    let next = store.claim_callbacks(&nrm(), now, LEASE_MS, 10).await.unwrap();
    assert_eq!(ids(&next), ["r1.2"]);
    assert_eq!((next[0].event, next[0].position, next[0].reasons.clone()), (ReferralEvent::Refused, 2, vec!["policy_no_permit".to_owned()]));

    // Refused: due again later, and r1's third entry still waits.
    store.retry_callback("r1.2", at(7).timestamp_millis(), "callback-http-503").await.unwrap();
    assert!(store.claim_callbacks(&nrm(), at(6).timestamp_millis(), LEASE_MS, 10).await.unwrap().is_empty());
    assert_eq!(
        store.undelivered_callbacks("r1").await.unwrap(),
        UndeliveredCallbacks { pending: 2, failed: 0, last_error: Some("callback-http-503".to_owned()) }
    );
    let retried = store.claim_callbacks(&nrm(), at(7).timestamp_millis(), LEASE_MS, 10).await.unwrap();
    assert_eq!((ids(&retried), retried[0].attempts), (vec!["r1.2"], 2));

    // Given up: the third goes.
    store.give_up_callback("r1.2", "callback-unreachable").await.unwrap();
    let third = store.claim_callbacks(&nrm(), at(7).timestamp_millis(), LEASE_MS, 10).await.unwrap();
    assert_eq!((ids(&third), third[0].event), (vec!["r1.3"], ReferralEvent::Delivered));
    assert_eq!(
        store.undelivered_callbacks("r1").await.unwrap(),
        UndeliveredCallbacks { pending: 1, failed: 1, last_error: Some("callback-unreachable".to_owned()) }
    );
    assert_eq!(store.undelivered_callbacks("r3").await.unwrap(), UndeliveredCallbacks::default());
    assert_eq!(
        store.callback_counts().await.unwrap(),
        [
            CallbackCount { org: "ita-nrm".to_owned(), state: CallbackState::Failed, count: 1 },
            CallbackCount { org: "ita-nrm".to_owned(), state: CallbackState::Pending, count: 2 },
        ]
    );

    // A replica with only another organisation's callback registers it
    // without dropping what is queued for ita-nrm, and claims none of it.
    store.register_callbacks(&[CallbackSubscription { org: "ita-iom-rome".to_owned(), retry_ms: HOUR_MS }]).await.unwrap();
    assert_eq!(store.callback_counts().await.unwrap().len(), 2, "ita-nrm's events stay");
    store.write_batch(&[submit(referral("r5", "ita-iom-rome", "key-00005", "s5", true))]).await.unwrap();
    let rome = vec![OrgId::parse("ita-iom-rome").unwrap()];
    let claimed = store.claim_callbacks(&rome, at(20).timestamp_millis(), LEASE_MS, 10).await.unwrap();
    assert_eq!(ids(&claimed), ["r5.1"], "the newly registered organisation's referral, from its registration on, and nothing of ita-nrm's");
    assert!(store.claim_callbacks(&[], at(20).timestamp_millis(), LEASE_MS, 10).await.unwrap().is_empty());
}
