//! `PolicyStore`: the DPO's policy versions and their sign-offs, on both backends.

use referral_gateway::domain::signoff::{PolicyVersionState, Verdict};
use referral_gateway::store::{PolicyMark, PolicyReview, PolicySignOffRecord};

use super::*;
use crate::on_both_backends;

on_both_backends!(
    policy_versions_are_numbered,
    a_review_is_stored_only_over_the_sign_offs_it_read,
);

fn policy(version: &str, state: PolicyVersionState) -> Write {
    Write::Policy {
        policy: NewPolicyVersion {
            version: version.to_owned(),
            author_org: Some("ita-nrm".to_owned()),
            author_subject: "dpo".to_owned(),
            note: None,
            created_ms: at(0).timestamp_millis(),
            files: "{}".to_owned(),
            state,
            effective_from_ms: None,
            effective_ms: (state == PolicyVersionState::Approved).then(|| at(0).timestamp_millis()),
            restores: None,
            checks: None,
        },
        audit: event(0, "ita-nrm", Action::PolicyUpdate),
    }
}

async fn policy_versions_are_numbered(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    assert_eq!(store.policy_mark().await.unwrap(), PolicyMark { latest_number: 0, reviews: 0 });
    let results = store.write_batch(&[policy("sha256:a", PolicyVersionState::Approved), policy("sha256:b", PolicyVersionState::Draft)]).await.unwrap();
    assert_eq!(store.policy_mark().await.unwrap(), PolicyMark { latest_number: 2, reviews: 0 });
    assert_eq!(results, vec![Written::PolicyStored { number: 1, seq: 1 }, Written::PolicyStored { number: 2, seq: 2 }]);
    let versions = store.policy_versions().await.unwrap();
    let stored: Vec<_> = versions.iter().map(|v| (v.number, v.version.as_str(), v.state, v.effective_ms, v.decided_ms)).collect();
    let zero = Some(at(0).timestamp_millis());
    assert_eq!(stored, vec![(1, "sha256:a", PolicyVersionState::Approved, zero, zero), (2, "sha256:b", PolicyVersionState::Draft, None, None)]);
}

fn review(by: &str, seen_reviews: i64, state: PolicyVersionState, minutes: i64) -> Write {
    let approved = state == PolicyVersionState::Approved;
    Write::PolicyReview {
        review: Box::new(PolicyReview {
            sign_off: PolicySignOffRecord {
                number: 1,
                reviewer_org: "ita-nrm".to_owned(),
                reviewer_subject: by.to_owned(),
                verdict: Verdict::Approve,
                at_ms: at(minutes).timestamp_millis(),
                note: Some("read the label and the tests".to_owned()),
            },
            seen_reviews,
            state,
            effective_ms: approved.then(|| at(minutes).timestamp_millis()),
        }),
        audit: event(minutes, "ita-nrm", Action::PolicyReview).counterpart(Actor { org: Some("ita-nrm".to_owned()), subject: "dpo".to_owned() }),
    }
}

/// Two reviews decided over the same read: the first is stored, the second
/// finds another came in between and writes nothing, so that two DPOs
/// approving at once are never counted over a stale count.
async fn a_review_is_stored_only_over_the_sign_offs_it_read(backend: Backend) {
    let opened = open(backend).await;
    let store = opened.store.as_ref();
    store.write_batch(&[policy("sha256:a", PolicyVersionState::Draft)]).await.unwrap();
    let results = store
        .write_batch(&[
            review("bruno", 0, PolicyVersionState::Draft, 1),
            review("carla", 0, PolicyVersionState::Approved, 1),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Written::Audited { seq: 2 }, Written::ReviewedMeanwhile]);
    assert_eq!(store.policy_mark().await.unwrap(), PolicyMark { latest_number: 1, reviews: 1 });
    // Read again, carla's approval completes it.
    let results = store.write_batch(&[review("carla", 1, PolicyVersionState::Approved, 2)]).await.unwrap();
    assert_eq!(results, vec![Written::Audited { seq: 3 }]);
    let version = store.policy_versions().await.unwrap().remove(0);
    assert_eq!((version.state, version.reviews), (PolicyVersionState::Approved, 2));
    assert_eq!((version.effective_ms, version.decided_ms), (Some(at(2).timestamp_millis()), Some(at(2).timestamp_millis())));
    // An approved version takes no more reviews, whatever count is given.
    let results = store.write_batch(&[review("dora", 2, PolicyVersionState::Approved, 3)]).await.unwrap();
    assert_eq!(results, vec![Written::ReviewedMeanwhile]);
    let sign_offs: Vec<(String, Verdict)> =
        store.policy_sign_offs().await.unwrap().into_iter().map(|s| (s.reviewer_subject, s.verdict)).collect();
    assert_eq!(sign_offs, vec![("bruno".to_owned(), Verdict::Approve), ("carla".to_owned(), Verdict::Approve)]);
    // The audit entries name the author as the counterpart, and the chain holds.
    let audit = store.audit(&AuditFilter { limit: 10, ..AuditFilter::default() }).await.unwrap();
    assert_eq!(audit.iter().map(|r| r.counterpart_subject.as_deref()).collect::<Vec<_>>(), vec![None, Some("dpo"), Some("dpo")]);
    assert!(verify_audit_chain(store).await.unwrap().is_ok());
}
