//! Submitting and following referrals: the happy path, denials, idempotency.

use serde_json::{json, Value};

use crate::helpers::{personal_values, spawn_app, variant, Backend, Who};
use crate::on_both_backends;

on_both_backends!(
    an_allowed_referral_is_queued_and_followed,
    a_denied_referral_is_recorded_and_explained,
    idempotency,
    a_copy_of_the_database_is_unreadable_once_the_case_key_is_destroyed,
    a_withdrawal_before_delivery_erases_the_payload_and_nothing_leaves,
    a_subjects_withdrawal_reaches_every_referral_the_organisation_sent_about_them,
    a_partial_withdrawal_before_delivery_cuts_the_payload_under_a_new_key,
    a_partial_withdrawal_of_a_payload_whose_key_is_gone_answers_erased,
    an_organisation_lists_its_referrals_filtered_and_in_pages,
);

async fn an_organisation_lists_its_referrals_filtered_and_in_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let submit = |key: &str, to: Option<&str>, priority: Option<&str>| {
        let mut referral = variant("rejected_asylum_avr", key, to);
        if let Some(priority) = priority {
            referral["priority"] = json!(priority);
        }
        referral
    };
    let id = |reply: &crate::helpers::Reply| reply.body["referral_id"].as_str().unwrap().to_owned();
    let ordinary = id(&app.submit(Who::IomRome, &submit("list-0001", None, None)).await);
    let emergency = id(&app.submit(Who::IomRome, &submit("list-0002", None, Some("emergency"))).await);
    let denied = id(&app.submit(Who::IomRome, &submit("list-0003", Some("gmb-immigration"), Some("urgent"))).await);
    let others = app.submit(Who::ItaNrm, &submit("list-0004", None, Some("emergency"))).await;
    assert_eq!(others.status, 202, "{}", others.text);
    // Two hours on (no peer here: nothing is delivered), the emergency is overdue; one more comes in.
    app.clock.advance(chrono::Duration::hours(2));
    let later = id(&app.submit(Who::IomRome, &submit("list-0005", None, None)).await);

    let app = &app;
    let listed = |query: &str| {
        let path = format!("/v1/referrals{query}");
        async move {
            let reply = app.get(Who::IomRome, &path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            reply.body
        }
    };
    let ids = |page: &Value| page["items"].as_array().unwrap().iter().map(|i| i["referral_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let all = listed("").await;
    let first_three = sorted(vec![ordinary.clone(), emergency.clone(), denied.clone()]);
    assert_eq!(ids(&all).len(), 4, "its own four, not the other organisation's: {all}");
    assert_eq!(sorted(ids(&all)[..3].to_vec()), first_three, "in the order accepted (the first three at one time, by id)");
    assert_eq!(ids(&all)[3], later);
    let shown = all["items"].as_array().unwrap().iter().find(|i| i["referral_id"] == emergency.as_str()).unwrap();
    assert_eq!((shown["priority"].as_str(), shown["status"].as_str(), shown["overdue"]["deadline"].as_str()), (Some("emergency"), Some("queued"), Some("delivery")), "{shown}");
    assert!(shown.get("timeline").is_none() && shown.get("decision").is_none(), "a summary: {shown}");
    for value in personal_values() {
        assert!(!all.to_string().contains(&value), "a personal value in the listing");
    }

    assert_eq!(ids(&listed("?status=denied").await), [denied.as_str()]);
    assert_eq!(ids(&listed("?status=queued,denied").await).len(), 4);
    assert_eq!(ids(&listed(&format!("?status={}", vec!["denied"; 2000].join(","))).await), [denied.as_str()], "each status once, however often named");
    assert_eq!(ids(&listed("?priority=emergency").await), [emergency.as_str()]);
    assert_eq!(ids(&listed("?overdue=true").await), [emergency.as_str()]);
    assert_eq!(sorted(ids(&listed("?overdue=false").await)), sorted(vec![ordinary.clone(), denied.clone(), later.clone()]));
    assert_eq!(ids(&listed("?overdue=true&priority=normal").await), Vec::<String>::new());
    assert_eq!(ids(&listed("?purpose=reintegration").await), Vec::<String>::new());
    assert_eq!(ids(&listed("?purpose=return&status=queued&overdue=false").await).len(), 2);
    use referral_gateway::app::Clock;
    let cut = (app.clock.now() - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(ids(&listed(&format!("?from={cut}")).await), [later.as_str()]);
    assert_eq!(ids(&listed(&format!("?to={cut}")).await).len(), 3);

    // Pages of one walk the same list; one accepted meanwhile comes at the end, once.
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = listed(&match &cursor {
            Some(cursor) => format!("?limit=1&cursor={cursor}"),
            None => "?limit=1".to_owned(),
        })
        .await;
        if walked.len() == 1 {
            app.clock.advance(chrono::Duration::minutes(1));
            let meanwhile = app.submit(Who::IomRome, &submit("list-0006", None, None)).await;
            assert_eq!(meanwhile.status, 202, "{}", meanwhile.text);
        }
        let Some(next) = page["next_cursor"].as_str() else { break };
        cursor = Some(next.to_owned());
        walked.extend(ids(&page));
    }
    assert_eq!(walked.len(), 5, "{walked:?}");
    assert_eq!(walked[..4], ids(&all)[..]);

    // Refusals.
    for bad in ["?status=lost", "?status=queued,", "?priority=high", "?overdue=yes", "?limit=ten", "?from=yesterday", "?cursor=-1", "?cursor=1.x", "?cursor=99999999999999999999", "?colour=red", "?status=queued&status=denied"] {
        let reply = app.get(Who::IomRome, &format!("/v1/referrals{bad}")).await;
        assert_eq!((reply.status, reply.problem()), (400, "invalid-request"), "{bad}: {}", reply.text);
    }
    // A recipient organisation lists the reply cases it sent: none here.
    let replies = app.get(Who::Recipient, "/v1/referrals").await;
    assert_eq!((replies.status, replies.body["items"].clone()), (200, serde_json::json!([])), "{}", replies.text);
    assert_eq!(app.get(Who::Nobody, "/v1/referrals").await.status, 401);
    assert!(app.sql_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'referral.read' AND outcome = 'listed'").await >= 10);
}

async fn an_allowed_referral_is_queued_and_followed(backend: Backend) {
    let app = spawn_app(backend).await;
    let referral = variant("rejected_asylum_avr", "avr-0001", None);
    let reply = app.submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.body["status"], "queued");
    assert_eq!(reply.body["recipient"], json!({ "org": "gmb-iom-banjul", "country": "GMB" }));
    let decision = &reply.body["decision"];
    assert_eq!(decision["outcome"], "allow");
    assert!(decision["sent"]["identity"].is_object(), "{decision}");
    assert!(decision["withheld"]["asylum"].is_array(), "the asylum category stays home: {decision}");
    assert!(decision["policy_version"].as_str().unwrap().starts_with("sha256:"));
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();

    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert_eq!(followed.status, 200, "{}", followed.text);
    assert_eq!(followed.body["status"], "queued");
    assert_eq!(followed.body["timeline"][0]["status"], "queued");
    assert_eq!(followed.body["decision"], *decision);

    // Another organisation, even of the same country, does not see it.
    let other = app.get(Who::ItaNrm, &format!("/v1/referrals/{id}")).await;
    assert_eq!(other.status, 404);
    assert_eq!(other.problem(), "not-found");

    assert_eq!(app.count("referrals").await, 1);
    assert_eq!(app.count("outbox").await, 1);

    // Nothing personal is readable in the database.
    let dump = app.database_dump().await;
    for value in personal_values() {
        assert!(!dump.windows(value.len()).any(|w| w == value.as_bytes()), "{value:?} is stored readable");
    }
    let subject_ref = referral["subject_ref"].as_str().unwrap();
    assert!(!dump.windows(subject_ref.len()).any(|w| w == subject_ref.as_bytes()), "the subject reference is stored readable");

    // The sealed payload opens with the case's own key, and holds only what was sent.
    let sealed = app.app.gateway().store.sealed_payload(&id).await.unwrap().unwrap();
    assert!(referral_gateway::crypto::case_keys::is_case_key_id(&sealed.key_id), "{}", sealed.key_id);
    assert_eq!(referral_gateway::crypto::case_keys::case_key_id_of(&sealed.sealed).as_deref(), Some(sealed.key_id.as_str()));
    assert!(app.app.gateway().keys().open(&sealed.sealed, id.as_bytes()).is_err(), "not under the gateway-wide key");
    let payload: serde_json::Value =
        serde_json::from_slice(&app.app.gateway().vault().open(&sealed.sealed, id.as_bytes()).await.unwrap()).unwrap();
    let sent: Vec<&String> = decision["sent"].as_object().unwrap().keys().collect();
    let carried: Vec<&String> = payload.as_object().unwrap().keys().collect();
    assert_eq!(carried, sent);
}

async fn a_denied_referral_is_recorded_and_explained(backend: Backend) {
    let app = spawn_app(backend).await;
    // The same rejected asylum seeker, referred to the Gambian immigration department.
    let referral = variant("rejected_asylum_avr", "avr-0002", Some("gmb-immigration"));
    let reply = app.submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(reply.problem(), "referral-denied");
    assert!(reply.body["reason_codes"].as_array().unwrap().contains(&json!("asylum_firewall")), "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap();

    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert_eq!(followed.status, 200);
    assert_eq!(followed.body["status"], "denied");
    assert_eq!(followed.body["outcome"], "deny");
    assert_eq!(app.count("referrals").await, 1);
    assert_eq!(app.count("outbox").await, 0, "a denied referral is never queued");

    let unknown = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "avr-0003", Some("xyz-nobody"))).await;
    assert_eq!(unknown.status, 422);
    assert_eq!(unknown.body["reason_codes"], json!(["recipient_unknown"]));
}

async fn idempotency(backend: Backend) {
    let app = spawn_app(backend).await;
    let referral = variant("trafficking_victim_reintegration", "nrm-0001", None);
    let first = app.submit(Who::IomRome, &referral).await;
    let again = app.submit(Who::IomRome, &referral).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!((again.status, &again.body), (first.status, &first.body));

    // Key order and whitespace do not make another body.
    let reordered = serde_json::to_string_pretty(&referral).unwrap();
    let same = app.post_raw(Who::IomRome, "/v1/referrals", "application/json", reordered.into_bytes()).await;
    assert_eq!(same.body, first.body);

    let mut changed = referral.clone();
    changed["purpose"] = json!("return");
    let conflict = app.submit(Who::IomRome, &changed).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.problem(), "idempotency-conflict");
    assert_eq!(conflict.body["referral_id"], first.body["referral_id"]);

    // Keys are per organisation: another sender may use the same key.
    let other = app.submit(Who::ItaNrm, &referral).await;
    assert_eq!(other.status, 202);
    assert_ne!(other.body["referral_id"], first.body["referral_id"]);
    assert_eq!(app.count("referrals").await, 2);

    // A denied referral replays as the same denial.
    let denied = variant("rejected_asylum_avr", "avr-00009", Some("gmb-immigration"));
    let first_deny = app.submit(Who::IomRome, &denied).await;
    let second_deny = app.submit(Who::IomRome, &denied).await;
    assert_eq!(first_deny.status, 422);
    assert_eq!((second_deny.status, &second_deny.body), (422, &first_deny.body));
    assert_eq!(app.count("referrals").await, 3);
}

/// The sealed payload of `referral_id` as a copy of the database holds it.
async fn payload_in_copy(backend: Backend, copy: &str, referral_id: &str) -> Vec<u8> {
    use sqlx::Row;
    let sql = "SELECT sealed FROM outbox WHERE referral_id = $1";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{copy}")).await.unwrap();
            let sealed = sqlx::query(sql).bind(referral_id).fetch_one(&pool).await.unwrap().get("sealed");
            pool.close().await;
            sealed
        }
        Backend::Postgres => {
            let pool = crate::helpers::pg_pool_in(copy).await;
            let sealed = sqlx::query(sql).bind(referral_id).fetch_one(&pool).await.unwrap().get("sealed");
            pool.close().await;
            sealed
        }
    }
}

async fn a_copy_of_the_database_is_unreadable_once_the_case_key_is_destroyed(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "avr-shred", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();

    // A backup, taken while the case is live: on SQLite the whole database
    // file; on PostgreSQL the data's tables (a whole-database dump would also
    // hold the default case-key schema: see docs/data-protection.md).
    let backup_dir = tempfile::tempdir().unwrap();
    let copy = match backend {
        Backend::Sqlite => {
            let path = backup_dir.path().join("backup.db").display().to_string();
            app.sql_execute(&[&format!("VACUUM INTO '{path}'")]).await;
            path
        }
        Backend::Postgres => {
            let schema = format!("{}_backup", app.schema.as_deref().unwrap());
            app.sql_execute(&[&format!("CREATE SCHEMA \"{schema}\""), &format!("CREATE TABLE \"{schema}\".outbox AS SELECT * FROM outbox")]).await;
            schema
        }
    };
    let vault = app.app.gateway().vault();
    let in_copy = payload_in_copy(backend, &copy, &id).await;
    let before = vault.open(&in_copy, id.as_bytes()).await.unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&before).unwrap().get("identity").is_some());

    let key_id = referral_gateway::crypto::case_keys::case_key_id_of(&in_copy).unwrap();
    assert_eq!(vault.destroy(std::slice::from_ref(&key_id)).await.unwrap(), 1);

    // The copy still holds the ciphertext, and the gateway cannot open it any more.
    let in_copy = payload_in_copy(backend, &copy, &id).await;
    assert!(matches!(vault.open(&in_copy, id.as_bytes()).await, Err(referral_gateway::app::AppError::Erased)));
    assert!(vault.case_key(&key_id).await.unwrap().is_none());
    // Other cases are untouched.
    let other = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "avr-kept", None)).await;
    let other_id = other.body["referral_id"].as_str().unwrap().to_owned();
    let sealed = app.app.gateway().store.sealed_payload(&other_id).await.unwrap().unwrap();
    assert!(vault.open(&sealed.sealed, other_id.as_bytes()).await.is_ok());
}

async fn a_withdrawal_before_delivery_erases_the_payload_and_nothing_leaves(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "avr-withdrawn", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    let sealed = app.app.gateway().store.sealed_payload(&id).await.unwrap().unwrap();
    let vault = app.app.gateway().vault();
    assert!(vault.case_key(&sealed.key_id).await.unwrap().is_some());
    let path = format!("/v1/referrals/{id}/consent-withdrawal");

    // Only the organisation that sent it may withdraw it, and only a scope it can read.
    assert_eq!(app.post_json(Who::ItaNrm, &path, &json!({})).await.status, 404);
    assert_eq!(app.post_json(Who::Dpo, &path, &json!({})).await.status, 403);
    for bad in [json!({ "categories": [] }), json!({ "categories": ["amina"] }), json!({ "reason": "moved" }), json!({ "purposes": "return" })] {
        let refused = app.post_json(Who::IomRome, &path, &bad).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text);
        assert!(!refused.text.contains("amina") && !refused.text.contains("moved"), "the problem names no value: {}", refused.text);
    }
    // A scope this referral is outside of: nothing withdrawn.
    let elsewhere = app.post_json(Who::IomRome, &path, &json!({ "purposes": ["family_tracing"] })).await;
    assert_eq!((elsewhere.status, &elsewhere.body["withdrawn"]), (200, &json!("nothing")), "{}", elsewhere.text);
    assert!(vault.case_key(&sealed.key_id).await.unwrap().is_some(), "a refused or untouching request erases nothing");

    let withdrawn = app.post_json(Who::IomRome, &path, &json!({})).await;
    assert_eq!(withdrawn.status, 200, "{}", withdrawn.text);
    assert_eq!(withdrawn.body, json!({ "referral_id": id, "status": "withdrawn", "withdrawn": "whole", "peer_notified": false }));
    // The key is gone, the payload blanked, the entry stopped, and no packet is queued.
    assert!(vault.case_key(&sealed.key_id).await.unwrap().is_none());
    assert!(matches!(vault.open(&sealed.sealed, id.as_bytes()).await, Err(referral_gateway::app::AppError::Erased)));
    let entry = app.app.gateway().store.delivery(&id).await.unwrap().unwrap();
    assert_eq!((entry.state.as_str(), entry.packet_id), ("withdrawn", None));
    assert_eq!(app.app.gateway().store.sealed_payload(&id).await.unwrap().unwrap().sealed, Vec::<u8>::new());
    assert_eq!(app.count("outbox").await, 1, "no withdrawal packet: nothing had left");
    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await;
    assert_eq!(followed.body["status"], "withdrawn");
    let timeline: Vec<&str> = followed.body["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(timeline, ["queued", "withdrawn"]);
    assert_eq!(followed.body["erasure"], json!({ "state": "nothing_sent", "due_by": null, "scope": "whole" }));

    // Again: the same answer, nothing done twice.
    let again = app.post_json(Who::IomRome, &path, &json!({})).await;
    assert_eq!((again.status, &again.body), (200, &json!({ "referral_id": id, "status": "withdrawn", "withdrawn": "whole" })));
    let audit = app.get(Who::Auditor, "/v1/audit?action=consent.withdraw").await;
    let outcomes: Vec<&str> = audit.body["entries"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "withdrawn").count(), 1, "{}", audit.text);
}

async fn a_subjects_withdrawal_reaches_every_referral_the_organisation_sent_about_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let returnee = "returnee_hiv_reintegration";
    let subject_ref = crate::helpers::fixture(returnee)["subject_ref"].as_str().unwrap().to_owned();
    let mut ours = Vec::new();
    for (key, to) in [("subject-w-health", "nga-health-lagos"), ("subject-w-employment", "nga-employment-service")] {
        let reply = app.submit(Who::IomRome, &variant(returnee, key, Some(to))).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        ours.push(reply.body["referral_id"].as_str().unwrap().to_owned());
    }
    // The same person referred by another organisation, and another person: theirs to withdraw, not ours.
    let by_other_org = app.submit(Who::ItaNrm, &variant(returnee, "subject-w-nrm", Some("nga-health-lagos"))).await;
    let other_person = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "subject-w-other", None)).await;
    assert_eq!((by_other_org.status, other_person.status), (202, 202));

    let path = format!("/v1/subjects/{subject_ref}/consent-withdrawal");
    assert_eq!(app.post_json(Who::Dpo, &path, &json!({})).await.status, 403);
    assert_eq!(app.post_json(Who::IomRome, &path, &json!({ "purposes": [] })).await.status, 400);
    // A scope that reaches none of them: nothing withdrawn.
    let other_purpose = app.post_json(Who::IomRome, &path, &json!({ "purposes": ["family_tracing"] })).await;
    assert_eq!((other_purpose.status, &other_purpose.body["referrals"]), (200, &json!([])), "{}", other_purpose.text);
    let reply = app.post_json(Who::IomRome, &path, &json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answered: Vec<&str> = reply.body["referrals"].as_array().unwrap().iter().map(|r| r["referral_id"].as_str().unwrap()).collect();
    assert_eq!(answered, ours.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(reply.body["referrals"].as_array().unwrap().iter().all(|r| r["status"] == "withdrawn" && r["peer_notified"] == false));
    for id in &ours {
        assert_eq!(app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["status"], "withdrawn");
    }
    let untouched = [(Who::ItaNrm, &by_other_org), (Who::IomRome, &other_person)];
    for (who, submitted) in untouched {
        let id = submitted.body["referral_id"].as_str().unwrap();
        assert_eq!(app.get(who, &format!("/v1/referrals/{id}")).await.body["status"], "queued");
    }
    // Again: the same referrals, nothing done twice; someone we sent nothing about: nothing.
    let again = app.post_json(Who::IomRome, &path, &json!({})).await;
    assert_eq!(again.body["referrals"].as_array().unwrap().len(), 2);
    assert!(again.body["referrals"].as_array().unwrap().iter().all(|r| r.get("peer_notified").is_none()));
    let nobody = app.post_json(Who::IomRome, "/v1/subjects/ITA-2026-999999/consent-withdrawal", &json!({})).await;
    assert_eq!((nobody.status, &nobody.body["referrals"]), (200, &json!([])));
    assert_eq!(app.post_json(Who::IomRome, "/v1/subjects/Lamin%20Jallow/consent-withdrawal", &json!({})).await.status, 400);
}

async fn a_partial_withdrawal_before_delivery_cuts_the_payload_under_a_new_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.submit(Who::IomRome, &variant("returnee_hiv_reintegration", "narrow-before-1", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    let store = &app.app.gateway().store;
    let vault = app.app.gateway().vault();
    let before = store.sealed_payload(&id).await.unwrap().unwrap();
    let whole: Value = serde_json::from_slice(&vault.open(&before.sealed, id.as_bytes()).await.unwrap()).unwrap();
    assert!(whole.get("health").is_some(), "{whole}");

    let path = format!("/v1/referrals/{id}/consent-withdrawal");
    let narrowed = app.post_json(Who::IomRome, &path, &json!({ "categories": ["health"] })).await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text);
    assert_eq!(narrowed.body, json!({ "referral_id": id, "status": "queued", "withdrawn": "categories", "categories": ["health"], "peer_notified": false }));
    // The old key is gone (health unreadable in any copy); the rest, under a new key, goes on.
    assert!(vault.case_key(&before.key_id).await.unwrap().is_none());
    assert!(matches!(vault.open(&before.sealed, id.as_bytes()).await, Err(referral_gateway::app::AppError::Erased)));
    let after = store.sealed_payload(&id).await.unwrap().unwrap();
    assert_ne!(after.key_id, before.key_id);
    let cut: Value = serde_json::from_slice(&vault.open(&after.sealed, id.as_bytes()).await.unwrap()).unwrap();
    let mut expected = whole.clone();
    expected.as_object_mut().unwrap().remove("health");
    assert_eq!(cut, expected);
    assert_eq!(app.count("outbox").await, 1, "nothing had left: no withdrawal packet");
    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(followed["status"], "queued");
    assert_eq!(followed["erasure"], json!({ "state": "nothing_sent", "due_by": null, "scope": "categories", "categories": ["health"] }));
    let steps: Vec<&str> = followed["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(steps, ["queued", "consent_narrowed_before_sending"], "nothing had left: nothing to erase elsewhere, ever");

    // Health again, or something never sent: nothing more to withdraw.
    for again in [json!({ "categories": ["health"] }), json!({ "categories": ["asylum"] })] {
        let answer = app.post_json(Who::IomRome, &path, &again).await;
        assert_eq!((answer.status, &answer.body["withdrawn"]), (200, &json!("nothing")), "{}", answer.text);
    }
    let audit = app.get(Who::Auditor, "/v1/audit?action=consent.withdraw").await;
    let outcomes: Vec<&str> = audit.body["entries"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "narrowed").count(), 1, "{}", audit.text);
    assert_eq!(outcomes.iter().filter(|o| **o == "untouched").count(), 2, "{}", audit.text);
}

/// A payload whose key is gone for good (as when a withdrawal destroyed it
/// and then failed to write): a partial withdrawal reads it twice, finds
/// the same key gone, and answers `410 erased` at once, not `503 busy`
/// for ever; nothing is recorded.
async fn a_partial_withdrawal_of_a_payload_whose_key_is_gone_answers_erased(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.submit(Who::IomRome, &variant("returnee_hiv_reintegration", "narrow-key-gone-1", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    let held = app.app.gateway().store.sealed_payload(&id).await.unwrap().unwrap();
    app.app.gateway().vault().destroy(std::slice::from_ref(&held.key_id)).await.unwrap();
    let path = format!("/v1/referrals/{id}/consent-withdrawal");
    let answer = app.post_json(Who::IomRome, &path, &json!({ "categories": ["health"] })).await;
    assert_eq!(answer.status, 410, "{}", answer.text);
    assert!(answer.body["type"].as_str().unwrap().ends_with("/erased"), "{}", answer.text);
    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    let steps: Vec<&str> = followed["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(steps, ["queued"], "nothing recorded");
    // The whole consent can still be withdrawn.
    let whole = app.post_json(Who::IomRome, &path, &json!({})).await;
    assert_eq!(whole.status, 200, "{}", whole.text);
}

