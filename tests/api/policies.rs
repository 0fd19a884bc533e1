//! The DPO's sharing policies over the API: history, upload (refused when
//! invalid), the effect on later referrals, and simulation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::helpers::{fixture, policy_files, spawn_app, variant, Backend, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(uploading_a_policy_changes_later_decisions, simulation_decides_without_side_effects, bad_policy_requests);

/// Health data sent under the shipped policy: the returnee to a health provider in Nigeria.
const HEALTH_FIXTURE: &str = "returnee_hiv_reintegration";

const NO_HEALTH: &str = "// No health data leaves this gateway, whoever asks.\n@id(\"no_health\")\nforbid (principal, action, resource == Category::\"health\");\n";

const BROKEN: &str = "// A typo.\n@id(\"broken\")\npermit (principal, action, resource)\nwhen { principal.kind == };\n";

fn with_no_health() -> BTreeMap<String, String> {
    let mut files = policy_files();
    files.insert("30-no-health.cedar".to_owned(), NO_HEALTH.to_owned());
    files
}

async fn policies(app: &TestApp) -> Value {
    let reply = app.get(Who::Dpo, "/v1/policies").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body
}

fn categories(decision: &Value, part: &str) -> BTreeSet<String> {
    decision[part].as_object().unwrap().keys().cloned().collect()
}

async fn uploading_a_policy_changes_later_decisions(backend: Backend) {
    let app = spawn_app(backend).await;

    // Version 1: seeded from config/policies at the first start.
    let initial = policies(&app).await;
    let active = &initial["active"];
    assert_eq!(active["number"], 1);
    assert!(active["author"]["org"].is_null(), "{active}");
    assert!(active["author"]["subject"].as_str().unwrap().contains("configuration"), "{active}");
    let v1 = active["version"].as_str().unwrap().to_owned();
    assert!(v1.starts_with("sha256:"));
    let files: BTreeMap<String, String> = serde_json::from_value(active["files"].clone()).unwrap();
    assert_eq!(files, policy_files());
    let history = initial["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["number"], 1);
    assert_eq!(history[0]["version"], v1.as_str());
    assert!(history[0].get("files").is_none(), "the history lists versions, not their files");

    // Under version 1 the returnee's health goes to the health provider.
    let before = app.submit(Who::IomRome, &variant(HEALTH_FIXTURE, "pol-before", None)).await;
    assert_eq!(before.status, 202, "{}", before.text);
    assert!(categories(&before.body["decision"], "sent").contains("health"));
    assert_eq!(before.body["decision"]["policy_version"], v1.as_str());
    assert_eq!(before.body["policy_number"], 1);

    // An invalid set is refused with file, line and column, and changes nothing.
    let mut broken = policy_files();
    broken.insert("30-broken.cedar".to_owned(), BROKEN.to_owned());
    let refused = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": broken })).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.problem(), "policy-invalid");
    let problems = refused.body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{}", refused.text);
    assert_eq!(problems[0]["file"], "30-broken.cedar");
    assert_eq!(problems[0]["line"], 4);
    assert!(problems[0]["column"].as_u64().unwrap() >= 1, "{}", refused.text);
    assert!(!problems[0]["problem"].as_str().unwrap().is_empty());
    let unchanged = policies(&app).await;
    assert_eq!(unchanged["active"], initial["active"]);
    assert_eq!(unchanged["history"], initial["history"]);

    // A valid set becomes version 2 once a second DPO approves it.
    let upload = json!({ "files": with_no_health(), "note": "no health data abroad" });
    let stored = app.adopt_policy(&upload).await;
    assert_eq!(stored.body["number"], 2);
    let v2 = stored.body["version"].as_str().unwrap().to_owned();
    assert!(v2.starts_with("sha256:") && v2 != v1);

    let now = policies(&app).await;
    assert_eq!(now["active"]["number"], 2);
    assert_eq!(now["active"]["version"], v2.as_str());
    assert_eq!(now["active"]["files"], json!(with_no_health()));
    let history = now["history"].as_array().unwrap();
    let numbers: Vec<i64> = history.iter().map(|h| h["number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [2, 1], "newest first");
    assert_eq!(history[0]["author"]["org"], "ita-nrm");
    assert_eq!(history[0]["author"]["subject"], Who::Dpo.fingerprint().unwrap().as_str());
    assert_eq!(history[0]["note"], "no health data abroad");
    assert_eq!(history[0]["state"], "approved");
    assert_eq!(history[0]["sign_offs"][0]["by"]["subject"], Who::SecondDpo.fingerprint().unwrap().as_str());
    assert_eq!(history[1], initial["history"][0]);

    // A referral submitted now is decided under version 2: health is withheld by the new forbid.
    let after = app.submit(Who::IomRome, &variant(HEALTH_FIXTURE, "pol-after", None)).await;
    assert_eq!(after.status, 202, "{}", after.text);
    let decision = &after.body["decision"];
    assert_eq!(decision["policy_version"], v2.as_str());
    assert_eq!(after.body["policy_number"], 2);
    assert!(!categories(decision, "sent").contains("health"), "{decision}");
    assert!(categories(decision, "sent").contains("identity"), "{decision}");
    assert!(
        decision["withheld"]["health"].as_array().unwrap().contains(&json!({ "reason": "policy_forbid", "policy": "no_health" })),
        "{decision}"
    );

    // The earlier referral keeps the version it was decided under.
    let id = before.body["referral_id"].as_str().unwrap();
    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert_eq!(followed.body["policy_version"], v1.as_str());

    // Each attempt is in the audit log: the seed, the refused upload, the new version.
    let audit = app.get_query(Who::Auditor, "/v1/audit", &[("action", "policy.update")]).await;
    let updates: Vec<(Value, Value, Value)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["outcome"].clone(), e["policy_version"].clone(), e["reasons"].clone()))
        .collect();
    assert_eq!(
        updates,
        [
            (json!("approved"), json!(v1), json!([])),
            (json!("invalid"), Value::Null, json!(["policy_invalid"])),
            (json!("draft"), json!(v2), json!([])),
        ]
    );
}

async fn simulation_decides_without_side_effects(backend: Backend) {
    let app = spawn_app(backend).await;
    let submitted = app.submit(Who::IomRome, &fixture(HEALTH_FIXTURE)).await;
    assert_eq!(submitted.status, 202);
    let active_version = policies(&app).await["active"]["version"].as_str().unwrap().to_owned();
    let simulations = "SELECT COUNT(*) FROM audit_log WHERE action = 'policy.simulate'";
    let audit_before = app.count("audit_log").await;

    // Another recipient than the referral's destination.
    let simulated = app
        .post_json(Who::Dpo, "/v1/policies/simulate", &json!({ "referral": fixture(HEALTH_FIXTURE), "to": "nga-employment-service" }))
        .await;
    assert_eq!(simulated.status, 200, "{}", simulated.text);
    assert_eq!(simulated.body["recipient"], json!({ "org": "nga-employment-service", "country": "NGA" }));
    assert_eq!(simulated.body["candidate_policy"], false);
    let decision = &simulated.body["decision"];
    assert_eq!(decision["outcome"], "allow");
    assert_eq!(decision["policy_version"], active_version.as_str());
    assert_eq!(categories(decision, "sent"), BTreeSet::from(["contact", "documents", "identity", "reintegration_needs"].map(String::from)));
    assert!(decision["withheld"]["health"].is_array(), "health never goes to an employment service: {decision}");

    // Nothing stored or queued; exactly one audit entry, naming no referral.
    assert_eq!(app.count("referrals").await, 1);
    assert_eq!(app.count("outbox").await, 1);
    assert_eq!(app.count("audit_log").await, audit_before + 1);
    assert_eq!(app.sql_scalar(simulations).await, 1);
    let audit = app.get_query(Who::Dpo, "/v1/audit", &[("action", "policy.simulate")]).await;
    let entry = &audit.body["entries"][0];
    assert_eq!((&entry["outcome"], &entry["policy_version"]), (&json!("allow"), &json!(active_version)));
    assert!(entry["referral_id"].is_null() && entry["subject_key"].is_null(), "{entry}");

    // Under a candidate set: another policy version, health withheld by its forbid.
    let candidate =
        app.post_json(Who::Dpo, "/v1/policies/simulate", &json!({ "referral": fixture(HEALTH_FIXTURE), "files": with_no_health() })).await;
    assert_eq!(candidate.status, 200, "{}", candidate.text);
    assert_eq!(candidate.body["candidate_policy"], true);
    assert_eq!(candidate.body["recipient"]["org"], "nga-health-lagos");
    let decision = &candidate.body["decision"];
    let candidate_version = decision["policy_version"].as_str().unwrap();
    assert!(candidate_version.starts_with("sha256:") && candidate_version != active_version);
    assert!(!categories(decision, "sent").contains("health"), "{decision}");
    assert!(decision["withheld"]["health"].as_array().unwrap().contains(&json!({ "reason": "policy_forbid", "policy": "no_health" })));
    // The same referral under the active set still sends health: the candidate was not activated.
    let active = app.post_json(Who::Dpo, "/v1/policies/simulate", &json!({ "referral": fixture(HEALTH_FIXTURE) })).await;
    assert!(categories(&active.body["decision"], "sent").contains("health"), "{}", active.text);
    assert_eq!(policies(&app).await["active"]["number"], 1);

    // As of a later time, when the consent has run out.
    let later = app
        .post_json(Who::Dpo, "/v1/policies/simulate", &json!({ "referral": fixture(HEALTH_FIXTURE), "at": "2028-01-01T00:00:00Z" }))
        .await;
    assert_eq!(later.status, 200, "{}", later.text);
    assert_eq!(later.body["decided_at"], "2028-01-01T00:00:00Z");
    assert_eq!(later.body["decision"]["outcome"], "deny");
    assert!(later.body["decision"]["deny_reasons"].as_array().unwrap().contains(&json!("consent_expired")), "{}", later.text);

    assert_eq!(app.count("referrals").await, 1);
    assert_eq!(app.count("outbox").await, 1);
    assert_eq!(app.sql_scalar(simulations).await, 4);
}

async fn bad_policy_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (json!({ "files": policy_files(), "author": "someone" }), "author"),
        (json!({ "files": policy_files(), "note": 3 }), "note"),
        (json!({ "note": "no files" }), "(body)"),
        (json!({ "files": {} }), "files"),
        (json!({ "files": { "../escape.cedar": NO_HEALTH } }), "files"),
        (json!({ "files": { "readme.txt": NO_HEALTH } }), "files"),
    ];
    for (body, field) in cases {
        let reply = app.put_json(Who::Dpo, "/v1/policies", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.problem(), "invalid-request");
        assert_eq!(reply.body["problems"][0]["field"], field, "{body}: {}", reply.text);
    }
    let simulations = [
        (json!({ "referral": fixture(HEALTH_FIXTURE), "recipient": "nga-health-lagos" }), 400, "invalid-request"),
        (json!({ "referral": { "purpose": "return" } }), 400, "invalid-request"),
        (json!({ "referral": fixture(HEALTH_FIXTURE), "to": "NOT AN ORG" }), 400, "invalid-request"),
        (json!({ "referral": fixture(HEALTH_FIXTURE), "files": { "30-broken.cedar": BROKEN } }), 422, "policy-invalid"),
    ];
    for (body, status, problem) in simulations {
        let reply = app.post_json(Who::Dpo, "/v1/policies/simulate", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert_eq!(reply.problem(), problem);
    }
    // A key that is a person's name is refused without being repeated.
    let identity = &fixture(HEALTH_FIXTURE)["case"]["identity"];
    let name = format!("{} {}", identity["given_names"].as_str().unwrap(), identity["family_name"].as_str().unwrap());
    let mut named = json!({ "referral": fixture(HEALTH_FIXTURE) });
    named[&name] = json!(true);
    let calls = [
        (reqwest::Method::POST, "/v1/policies/simulate", named),
        (reqwest::Method::PUT, "/v1/policies", json!({ "files": policy_files(), name.clone(): 1 })),
    ];
    for (method, path, body) in calls {
        let reply = app.send(app.request(Who::Dpo, method, path).json(&body)).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.body["problems"][0]["field"], "(body)", "{path}");
        for part in name.split(' ') {
            assert!(!reply.text.contains(part), "{path}: the answer repeats a name");
        }
    }

    assert_eq!(policies(&app).await["history"].as_array().unwrap().len(), 1);
    assert_eq!(app.count("referrals").await, 0);
}

/// Two replicas on one PostgreSQL database: a policy uploaded through one is
/// in force in the other at its next refresh round, and both extend one
/// audit chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_picks_up_a_new_policy_version() {
    use std::sync::Arc;
    use std::time::Duration;

    use referral_gateway::startup::Application;

    use crate::helpers::{client_for, fixture_time, send, wait_for, FixedClock};

    let app = spawn_app(Backend::Postgres).await;
    // The replica refreshes every second; its first round is run by hand below.
    let mut replica_config = app.config.clone();
    replica_config.policy.refresh_seconds = 1;
    let replica = Application::build(&replica_config, Arc::new(FixedClock(fixture_time()))).await.unwrap();
    assert_eq!(replica.gateway().policy().number, 1, "the replica finds version 1 and does not seed another");

    let mut files = policy_files();
    files.insert("30-no-health.cedar".to_owned(), NO_HEALTH.to_owned());
    let stored = app.adopt_policy(&json!({ "files": files })).await;

    // One refresh round finds version 2 in the store.
    replica.gateway().refresh_policy().await.unwrap();
    assert_eq!(replica.gateway().policy().number, 2, "the replica kept version 1");

    let url = format!("https://localhost:{}/v1/referrals", replica.local_addr().port());
    let referral = variant("returnee_hiv_reintegration", "replica-00001", None);
    let reply = send(client_for(Who::IomRome).post(url).json(&referral)).await;
    assert_eq!(reply.body["policy_number"], 2, "{}", reply.text);
    assert_eq!(reply.body["decision"]["policy_version"], stored.body["version"]);

    // The replica's own refresh task, every `policy.refresh_seconds`, finds version 3.
    files.remove("30-no-health.cedar");
    app.adopt_policy(&json!({ "files": files })).await;
    wait_for("the replica's refresh task to load version 3", Duration::from_secs(30), || async {
        replica.gateway().policy().number == 3
    })
    .await;

    let chain = referral_gateway::store::verify_audit_chain(app.app.gateway().store.as_ref()).await.unwrap();
    assert!(chain.is_ok(), "{chain:?}");
    replica.stop();
}
