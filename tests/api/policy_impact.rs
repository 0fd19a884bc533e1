//! The impact of an uploaded policy version on real traffic (issue 19 §2):
//! the recent sending decisions, replayed from their sealed facts under the
//! version in force and the new one, counted without personal data; an
//! erased case leaves nothing to replay; past the window the facts go.

use serde_json::{json, Value};

use crate::helpers::{policy_files, spawn_app, variant, Backend, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(
    an_upload_shows_what_it_would_change_in_recent_decisions,
    a_whole_withdrawal_erases_the_facts_of_denied_referrals_too,
    a_retried_submission_leaves_the_first_ones_keys_alone,
);

const NO_HEALTH: &str = "@id(\"no_health\")\nforbid (principal, action, resource == Category::\"health\");\n";
const NO_IDENTITY_FOR_REINTEGRATION: &str =
    "@id(\"no_identity_for_reintegration\")\nforbid (principal, action == Action::\"reintegration\", resource == Category::\"identity\");\n";

fn changes(decisions: u64, allow_to_deny: u64, deny_to_allow: u64, sent_to_withheld: u64, withheld_to_sent: u64) -> Value {
    json!({
        "decisions": decisions,
        "allow_to_deny": allow_to_deny,
        "deny_to_allow": deny_to_allow,
        "sent_to_withheld": sent_to_withheld,
        "withheld_to_sent": withheld_to_sent,
    })
}

/// Uploads the shipped policies plus `extra` as a draft; answers its recorded impact.
async fn impact_of(app: &TestApp, who: Who, extra: Option<(&str, &str)>) -> (i64, Value) {
    let mut files = policy_files();
    if let Some((name, text)) = extra {
        files.insert(name.to_owned(), text.to_owned());
    }
    let reply = app.put_json(who, "/v1/policies", &json!({ "files": files })).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let number = reply.body["number"].as_i64().unwrap();
    // The same checks are kept with the version.
    let stored = app.get(Who::Dpo, &format!("/v1/policies/{number}")).await;
    assert_eq!(stored.body["checks"]["impact"], reply.body["checks"]["impact"]);
    (number, reply.body["checks"]["impact"].clone())
}

async fn an_upload_shows_what_it_would_change_in_recent_decisions(backend: Backend) {
    let app = spawn_app(backend).await;
    let gateway = app.app.gateway();
    // Two returnees' health data to a health provider in Nigeria, and one referral the firewall denies.
    let mut sent_categories = 0;
    let mut allowed = Vec::new();
    for key in ["impact-00001", "impact-00002"] {
        let reply = app.submit(Who::IomRome, &variant("returnee_hiv_reintegration", key, None)).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        assert!(reply.body["decision"]["sent"].get("health").is_some(), "{}", reply.text);
        sent_categories = reply.body["decision"]["sent"].as_object().unwrap().len() as u64;
        allowed.push(reply.body["referral_id"].as_str().unwrap().to_owned());
    }
    let denied = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "impact-00003", Some("gmb-immigration"))).await;
    assert_eq!(denied.status, 422, "{}", denied.text);
    // The second returnee withdraws consent for health data: the payload is cut down under a new key,
    // the old key goes, and the facts sealed under it with it.
    let withdrawn =
        app.post_json(Who::IomRome, &format!("/v1/referrals/{}/consent-withdrawal", allowed[1]), &json!({ "categories": ["health"] })).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);

    // The facts are kept sealed, each under a case key.
    let kept = gateway.store.decision_facts_between((0, i64::MAX), None, 10).await.unwrap();
    assert_eq!(kept.len(), 3);
    for facts in &kept {
        let text = String::from_utf8_lossy(&facts.facts.sealed.sealed);
        assert!(!text.contains("asylum_linked") && !text.contains("reintegration"), "facts stored in clear");
    }

    // No health data abroad: the remaining returnee's health would be withheld; the referral still goes.
    let (no_health, impact) = impact_of(&app, Who::Dpo, Some(("30-no-health.cedar", NO_HEALTH))).await;
    let health_withheld = changes(1, 0, 0, 1, 0);
    assert_eq!(impact["status"], "measured", "{impact}");
    assert_eq!(impact["against"], 1);
    assert_eq!((impact["replayed"].clone(), impact["erased"].clone(), impact["unreadable"].clone()), (json!(2), json!(1), json!(0)), "{impact}");
    assert_eq!(impact["changed"], health_withheld);
    assert_eq!(impact["by_recipient"], json!({ "nga-health-lagos": health_withheld }));
    assert_eq!(impact["by_purpose"], json!({ "reintegration": health_withheld }));
    assert_eq!(impact["by_category"], json!({ "health": health_withheld }));
    assert_eq!(impact["since"], json!("2026-10-24T12:00:00.000Z"), "{impact}");

    // Identity withheld from every reintegration: the referral itself would be denied, nothing of it sent.
    let (_, impact) = impact_of(&app, Who::Dpo, Some(("30-no-identity.cedar", NO_IDENTITY_FOR_REINTEGRATION))).await;
    assert_eq!(impact["changed"], changes(1, 1, 0, sent_categories, 0), "{impact}");
    assert_eq!(impact["by_category"]["identity"], changes(1, 0, 0, 1, 0));
    assert_eq!(impact["by_category"].as_object().unwrap().len() as u64, sent_categories);

    // Approved, no-health is in force; putting health back is measured against it.
    let approved = app.post_json(Who::SecondDpo, &format!("/v1/policies/{no_health}/approve"), &json!({})).await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    let (_, impact) = impact_of(&app, Who::SecondDpo, None).await;
    assert_eq!(impact["against"], no_health);
    assert_eq!(impact["changed"], changes(1, 0, 0, 0, 1), "{impact}");
    assert_eq!(impact["by_category"], json!({ "health": changes(1, 0, 0, 0, 1) }));

    // Past the window the facts are forgotten: the denied referral's own key goes first.
    let own_key = kept.iter().find(|f| f.facts.key_for_facts_only).unwrap().facts.sealed.key_id.clone();
    assert!(gateway.vault().case_key(&own_key).await.unwrap().is_some());
    assert_eq!(gateway.forget_decision_facts(gateway.impact_since(), 100).await.unwrap(), 0, "within the window");
    app.clock.advance(chrono::Duration::days(30) + chrono::Duration::seconds(1));
    assert_eq!(gateway.forget_decision_facts(gateway.impact_since(), 100).await.unwrap(), 3);
    assert!(gateway.vault().case_key(&own_key).await.unwrap().is_none(), "the key of the denied referral's facts is destroyed");
    assert_eq!(app.count("decision_facts").await, 0);
    let (_, impact) = impact_of(&app, Who::Dpo, None).await;
    assert_eq!((impact["replayed"].clone(), impact["erased"].clone(), impact["changed"]["decisions"].clone()), (json!(0), json!(0), json!(0)));
}

async fn a_whole_withdrawal_erases_the_facts_of_denied_referrals_too(backend: Backend) {
    let app = spawn_app(backend).await;
    let gateway = app.app.gateway();
    // A rejected asylum seeker's referrals to immigration services, all denied (twice the Gambian one, once the Ethiopian one).
    let mut denied = Vec::new();
    for (key, to) in [("facts-00001", "gmb-immigration"), ("facts-00002", "eth-immigration"), ("facts-00003", "gmb-immigration")] {
        let reply = app.submit(Who::IomRome, &variant("rejected_asylum_avr", key, Some(to))).await;
        assert_eq!(reply.status, 422, "{}", reply.text);
        denied.push(reply.body["referral_id"].as_str().unwrap().to_owned());
    }
    let key_of = |facts: &referral_gateway::store::DecisionFactsAtRest| facts.facts.sealed.key_id.clone();
    let mut keys = Vec::new();
    for id in &denied {
        keys.push(key_of(&gateway.store.decision_facts_of(id).await.unwrap().unwrap()));
    }

    // One referral withdrawn: its facts and their key go.
    let withdrawn = app.post_json(Who::IomRome, &format!("/v1/referrals/{}/consent-withdrawal", denied[0]), &json!({})).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    assert!(gateway.store.decision_facts_of(&denied[0]).await.unwrap().is_none());
    assert!(gateway.vault().case_key(&keys[0]).await.unwrap().is_none());
    assert!(gateway.vault().case_key(&keys[1]).await.unwrap().is_some(), "another referral's facts stay");

    // The person's consent withdrawn for what went to the Gambian service only: that referral's facts go, not the other's.
    let path = "/v1/subjects/ITA-2026-000303/consent-withdrawal";
    let scoped = app.post_json(Who::IomRome, path, &json!({ "recipients": ["gmb-immigration"] })).await;
    assert_eq!(scoped.status, 200, "{}", scoped.text);
    assert!(gateway.store.decision_facts_of(&denied[2]).await.unwrap().is_none());
    assert!(gateway.vault().case_key(&keys[2]).await.unwrap().is_none());
    assert!(gateway.store.decision_facts_of(&denied[1]).await.unwrap().is_some());
    assert_eq!(scoped.body["referrals"], json!([]), "nothing was sent, so no referral is withdrawn");
    // Whole: the rest goes.
    let whole = app.post_json(Who::IomRome, path, &json!({})).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
    // Each erasure of a denied referral's facts through the subject is audited; none is taken for "not found".
    let audit = app.get(Who::Auditor, "/v1/audit?action=consent.withdraw").await;
    let entries: Vec<(String, String)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["outcome"].as_str().unwrap().to_owned(), e["referral_id"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        entries,
        [("withdrawn".to_owned(), denied[0].clone()), ("facts_erased".to_owned(), denied[2].clone()), ("facts_erased".to_owned(), denied[1].clone())],
        "{}",
        audit.text
    );
    assert_eq!(app.count("decision_facts").await, 0);
    assert!(gateway.vault().case_key(&keys[1]).await.unwrap().is_none());
}

async fn a_retried_submission_leaves_the_first_ones_keys_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let gateway = app.app.gateway();
    for (key, to) in [("retry-00001", None), ("retry-00002", Some("gmb-immigration"))] {
        let referral = variant("rejected_asylum_avr", key, to);
        let first = app.submit(Who::IomRome, &referral).await;
        // The retry decides again and makes fresh keys before its write finds the idempotency key taken;
        // those keys go, the first submission's stay.
        let again = app.submit(Who::IomRome, &referral).await;
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{}", again.text);
        let id = first.body["referral_id"].as_str().unwrap();
        let kept = gateway.store.decision_facts_of(id).await.unwrap().unwrap();
        assert!(gateway.vault().case_key(&kept.facts.sealed.key_id).await.unwrap().is_some(), "{key}: the facts' key was destroyed");
        if first.status == 202 {
            let payload = gateway.store.sealed_payload(id).await.unwrap().unwrap();
            assert_eq!(payload.key_id, kept.facts.sealed.key_id, "an allowed referral's facts share its payload's key");
            assert!(gateway.vault().open(&payload.sealed, id.as_bytes()).await.is_ok(), "the payload no longer opens");
        }
    }
    assert_eq!(app.count("decision_facts").await, 2);
}
