//! `PolicyStore`: the DPO's policy versions, on both backends.

use super::*;
use crate::on_both_backends;

on_both_backends!(
    policy_versions_are_numbered,
);

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
