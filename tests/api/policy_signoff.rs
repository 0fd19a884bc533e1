//! Four-eyes sign-off of the DPO's policy versions over the API (issue 19
//! §4): an upload is a draft with its checks; only another DPO approves or
//! rejects it; it acts from its approval or a later time asked for; a
//! rollback is a draft too; every step is audited with both identities.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::{Captured, policy_files, repo_path, spawn_app, spawn_app_configured, fixture_time, variant, Backend, Reply, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(
    a_version_acts_only_once_another_dpo_approves_it,
    uploads_whose_tests_fail_are_refused,
    uploads_are_proved_and_labelled_with_a_solver,
);

pub const NO_HEALTH: &str = "// No health data leaves this gateway, whoever asks.\n@id(\"no_health\")\nforbid (principal, action, resource == Category::\"health\");\n";

/// Health data sent under the shipped policy: the returnee to a health provider in Nigeria.
const HEALTH_FIXTURE: &str = "returnee_hiv_reintegration";

/// The shipped policies with their tests (`config/policies/tests`), as an upload names them.
pub fn policy_files_with_tests() -> BTreeMap<String, String> {
    referral_gateway::policy_files::read_upload(&repo_path("config/policies")).unwrap()
}

async fn policies(app: &TestApp) -> Value {
    let reply = app.get(Who::Dpo, "/v1/policies").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

async fn review(app: &TestApp, who: Who, number: i64, verdict: &str) -> Reply {
    app.post_json(who, &format!("/v1/policies/{number}/{verdict}"), &json!({ "note": format!("{verdict} after reading the checks") })).await
}

fn numbers(list: &Value) -> Vec<i64> {
    list.as_array().unwrap().iter().map(|v| v["number"].as_i64().unwrap()).collect()
}

async fn health_is_sent(app: &TestApp, key: &str) -> (bool, Value) {
    let reply = app.submit(Who::IomRome, &variant(HEALTH_FIXTURE, key, None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    (reply.body["decision"]["sent"].get("health").is_some(), reply.body["policy_number"].clone())
}

async fn a_version_acts_only_once_another_dpo_approves_it(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(policies(&app).await["approvals_required"], 2);

    // The shipped policies with their tests: all 21 pass; no solver is configured, so nothing is proved.
    let tested = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": policy_files_with_tests(), "note": "the same, with tests" })).await;
    assert_eq!(tested.status, 201, "{}", tested.text);
    assert_eq!(tested.body["state"], "draft");
    assert_eq!(tested.body["approvals"], json!({ "given": 1, "required": 2 }));
    assert_eq!(tested.body["checks"]["tests"], json!({ "run": 21, "passed": 21, "not_exercised": [] }));
    assert_eq!(tested.body["checks"]["proofs"]["status"], "not_proved");
    assert!(tested.body["checks"]["proofs"]["reason"].as_str().unwrap().contains("no SMT solver"), "{}", tested.text);

    // Without health: a draft that changes nothing yet.
    let mut no_health = policy_files();
    no_health.insert("30-no-health.cedar".to_owned(), NO_HEALTH.to_owned());
    let draft = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": no_health, "note": "no health data abroad" })).await;
    assert_eq!(draft.status, 201, "{}", draft.text);
    let number = draft.body["number"].as_i64().unwrap();
    assert_eq!(number, 3);
    let listed = policies(&app).await;
    assert_eq!(listed["active"]["number"], 1);
    assert_eq!(numbers(&listed["drafts"]), [3, 2]);
    assert_eq!(listed["drafts"][0]["approvals"], json!({ "given": 1, "required": 2 }));
    assert_eq!(health_is_sent(&app, "signoff-00001").await, (true, json!(1)), "a draft does not act");

    // Its author can neither approve nor reject it.
    for verdict in ["approve", "reject"] {
        let refused = review(&app, Who::Dpo, number, verdict).await;
        assert_eq!(refused.status, 409, "{}", refused.text);
        assert_eq!(refused.problem(), "policy-review-refused");
        assert_eq!(refused.body["code"], "own_version");
    }
    assert_eq!(policies(&app).await["drafts"][0]["sign_offs"], json!([]), "nothing recorded");

    // Another DPO approves it: it acts at once.
    let approved = review(&app, Who::SecondDpo, number, "approve").await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    assert_eq!(approved.body["state"], "approved");
    assert!(approved.body["effective_at"].is_string(), "{}", approved.text);
    assert_eq!(health_is_sent(&app, "signoff-00002").await, (false, json!(3)));
    let again = review(&app, Who::SecondDpo, number, "approve").await;
    assert_eq!((again.status, again.body["code"].clone()), (409, json!("not_a_draft")), "{}", again.text);
    let version = app.get(Who::Dpo, &format!("/v1/policies/{number}")).await;
    assert_eq!(version.status, 200, "{}", version.text);
    assert_eq!(version.body["files"]["30-no-health.cedar"], NO_HEALTH);
    assert_eq!(version.body["sign_offs"][0]["by"]["subject"], Who::SecondDpo.fingerprint().unwrap().as_str());
    assert_eq!(version.body["sign_offs"][0]["verdict"], "approve");
    assert_eq!(version.body["sign_offs"][0]["note"], "approve after reading the checks");
    for missing in ["/v1/policies/99", "/v1/policies/0", "/v1/policies/two", "/v1/policies/+3"] {
        assert_eq!(app.get(Who::Dpo, missing).await.status, 404, "{missing}");
    }

    // A rollback to version 1 is a draft too; rejected, it never acts.
    let rollback = app.post_json(Who::SecondDpo, "/v1/policies/1/restore", &json!({})).await;
    assert_eq!(rollback.status, 201, "{}", rollback.text);
    assert_eq!(rollback.body["state"], "draft");
    let rollback_number = rollback.body["number"].as_i64().unwrap();
    let rejected = review(&app, Who::Dpo, rollback_number, "reject").await;
    assert_eq!(rejected.body["state"], "rejected", "{}", rejected.text);
    let listed = policies(&app).await;
    assert_eq!(listed["active"]["number"], number);
    assert_eq!(listed["history"][0]["restores"], 1);
    assert_eq!(listed["history"][0]["note"], "restores version 1");
    assert_eq!(numbers(&listed["drafts"]), [2]);

    // A version approved for a later time is scheduled, and acts from then on.
    let later = fixture_time() + chrono::Duration::hours(1);
    let upload = json!({ "files": policy_files(), "note": "health again, from the next hour", "effective_from": later.to_rfc3339() });
    let scheduled = app.put_json(Who::SecondDpo, "/v1/policies", &upload).await;
    let scheduled_number = scheduled.body["number"].as_i64().unwrap();
    let approved = review(&app, Who::Dpo, scheduled_number, "approve").await;
    assert_eq!(approved.body["state"], "approved", "{}", approved.text);
    assert_eq!(approved.body["effective_at"], later.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    let listed = policies(&app).await;
    assert_eq!(numbers(&listed["scheduled"]), [scheduled_number]);
    assert_eq!(listed["active"]["number"], number);
    assert_eq!(health_is_sent(&app, "signoff-00003").await, (false, json!(number)));
    app.clock.advance(chrono::Duration::hours(1));
    assert_eq!(health_is_sent(&app, "signoff-00004").await, (true, json!(scheduled_number)));
    assert_eq!(policies(&app).await["scheduled"], json!([]));

    // Every step is audited with the version's hash, the reviewer and the author.
    let audit = app.get_query(Who::Auditor, "/v1/audit", &[("action", "policy.review")]).await;
    let entries: Vec<(Value, Value, Value, Value)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["outcome"].clone(), e["actor"]["subject"].clone(), e["counterpart"]["subject"].clone(), e["reasons"].clone()))
        .collect();
    let (first, second) = (json!(Who::Dpo.fingerprint().unwrap()), json!(Who::SecondDpo.fingerprint().unwrap()));
    assert_eq!(
        entries,
        [
            (json!("refused"), first.clone(), first.clone(), json!(["own_version"])),
            (json!("refused"), first.clone(), first.clone(), json!(["own_version"])),
            (json!("approved"), second.clone(), first.clone(), json!([])),
            (json!("refused"), second.clone(), first.clone(), json!(["not_a_draft"])),
            (json!("rejected"), first.clone(), second.clone(), json!([])),
            (json!("approved"), first.clone(), second.clone(), json!([])),
        ]
    );
    assert!(audit.body["entries"].as_array().unwrap().iter().all(|e| e["policy_version"].as_str().is_some_and(|v| v.starts_with("sha256:"))));
    let chain = referral_gateway::store::verify_audit_chain(app.app.gateway().store.as_ref()).await.unwrap();
    assert!(chain.is_ok(), "{chain:?}");
}

async fn uploads_whose_tests_fail_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let before = policies(&app).await["history"].clone();

    // The shipped tests expect health data to reach the health provider.
    let mut files = policy_files_with_tests();
    files.insert("30-no-health.cedar".to_owned(), NO_HEALTH.to_owned());
    let refused = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": files })).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.problem(), "policy-tests-failed");
    let failed: Vec<&str> = refused.body["failed"].as_array().unwrap().iter().map(|f| f["test"].as_str().unwrap()).collect();
    assert_eq!(failed, ["returnee_health_to_the_health_provider", "returnee_return_carries_fitness_to_travel_only"], "{}", refused.text);
    assert!(refused.body["failed"][0]["differences"][0].as_str().unwrap().contains("health"), "{}", refused.text);

    // A test naming a referral that was not uploaded cannot run.
    let mut files = policy_files_with_tests();
    files.remove("tests/referrals/returnee_hiv_reintegration.json");
    let invalid = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": files })).await;
    assert_eq!((invalid.status, invalid.problem()), (422, "policy-tests-invalid"), "{}", invalid.text);

    // Test files only under tests/, referrals as JSON.
    for name in ["tests/../escape.toml", "tests/a/b/c/d/deep.json", "tests/referrals/notes.txt", "other/scenarios.toml"] {
        let mut files = policy_files();
        files.insert(name.to_owned(), "[[test]]".to_owned());
        let reply = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": files })).await;
        assert_eq!((reply.status, reply.problem()), (400, "invalid-request"), "{name}: {}", reply.text);
    }

    assert_eq!(policies(&app).await["history"], before, "nothing stored");
    let audit = app.get_query(Who::Auditor, "/v1/audit", &[("action", "policy.update")]).await;
    let reasons: Vec<Value> = audit.body["entries"].as_array().unwrap().iter().skip(1).map(|e| e["reasons"].clone()).collect();
    let mut expected = vec![json!(["policy_tests_failed"]), json!(["policy_tests_invalid"])];
    expected.extend(std::iter::repeat_n(json!(["policy_invalid"]), 4));
    assert_eq!(reasons, expected);
}

/// With one approval required (a demonstration), an upload acts at once,
/// and the start warns about it.
#[tokio::test(flavor = "current_thread")]
async fn one_approval_lets_an_upload_act_at_once() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_env_filter("referral_gateway=info").with_ansi(false).finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |config| config.policy.approvals_required = 1).await;
    let started = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        started.lines().any(|line| line.contains("WARN") && line.contains("ON ONE DPO'S WORD")),
        "no loud warning at the start:\n{started}"
    );
    let mut no_health = policy_files();
    no_health.insert("30-no-health.cedar".to_owned(), NO_HEALTH.to_owned());
    let stored = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": no_health })).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    assert_eq!(stored.body["state"], "approved");
    assert_eq!(stored.body["approvals"], json!({ "given": 1, "required": 1 }));
    assert_eq!(health_is_sent(&app, "single-00001").await, (false, json!(2)));
}

/// A gateway with the solver configured proves each upload and labels it
/// against the version in force; a refuted property refuses the upload.
async fn uploads_are_proved_and_labelled_with_a_solver(backend: Backend) {
    let (kind, path) = crate::solver::solver_env().clone();
    let app = spawn_app_configured(backend, fixture_time(), "", move |config| match kind.as_str() {
        "CVC5" => config.policy.cvc5 = Some(path),
        _ => config.policy.cvc5_python = Some(path),
    })
    .await;
    let mut no_health = policy_files();
    no_health.insert("30-no-health.cedar".to_owned(), NO_HEALTH.to_owned());
    let stored = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": no_health })).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let checks = &stored.body["checks"];
    assert_eq!(checks["proofs"]["status"], "proved", "{}", stored.text);
    assert!(checks["proofs"]["properties"].as_u64().unwrap() > 20, "{}", stored.text);
    assert_eq!(checks["change"]["status"], "labelled");
    assert_eq!(checks["change"]["against"], 1);
    assert_eq!(checks["change"]["label"], "narrows");
    assert_eq!(checks["change"]["now_allowed"], json!([]));
    let denied = checks["change"]["now_denied"].as_array().unwrap();
    assert!(!denied.is_empty() && denied.iter().all(|d| d.as_str().unwrap().contains(", category health\n")), "{}", stored.text);
    // The draft shows the same checks to whoever signs it off.
    let draft = app.get(Who::SecondDpo, &format!("/v1/policies/{}", stored.body["number"])).await;
    assert_eq!(&draft.body["checks"], checks);

    // A policy that can fail to evaluate is refused, with the request that shows it.
    let mut erroring = policy_files();
    erroring.insert(
        "30-overflow.cedar".to_owned(),
        "@id(\"limits.overflow\")\nforbid (principal, action, resource)\nwhen { context.case.child && 9223372036854775807 + 1 > 0 };\n".to_owned(),
    );
    let refused = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": erroring })).await;
    assert_eq!((refused.status, refused.problem()), (422, "policy-proof-refuted"), "{}", refused.text);
    assert_eq!(refused.body["refuted"][0]["property"], "limits.overflow never raises an evaluation error");
    assert!(refused.body["refuted"][0]["counterexamples"][0].as_str().unwrap().contains("purpose"), "{}", refused.text);
    assert_eq!(policies(&app).await["history"].as_array().unwrap().len(), 2, "nothing stored");
}
