//! Reading the audit log (filters, paging) and the disclosures of a subject.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{fixture, personal_values, spawn_app, subject_refs, variant, Backend, TestApp, Who};
use crate::on_both_backends;

on_both_backends!(
    audit_filters,
    audit_paging_walks_every_entry_once,
    disclosures_list_what_went_where,
    a_subject_report_tells_who_holds_what_and_nothing_of_anyone_else,
);

const RETURNEE: &str = "returnee_hiv_reintegration";

/// `GET /v1/audit` as the DPO: the entries, and the raw text.
async fn audit(app: &TestApp, query: &[(&str, &str)]) -> (Vec<Value>, String) {
    let reply = app.get_query(Who::Dpo, "/v1/audit", query).await;
    assert_eq!(reply.status, 200, "{query:?}: {}", reply.text);
    (reply.body["entries"].as_array().unwrap().clone(), reply.text)
}

fn field<'a>(entries: &'a [Value], name: &str) -> Vec<&'a Value> {
    entries.iter().map(|e| &e[name]).collect()
}

fn assert_nothing_personal(text: &str) {
    for value in personal_values() {
        assert!(!text.contains(&value), "a personal value is readable");
    }
    for subject_ref in subject_refs() {
        assert!(!text.contains(&subject_ref), "a subject reference is readable");
    }
}

async fn submit(app: &TestApp, who: Who, referral: &Value) -> String {
    let reply = app.submit(who, referral).await;
    assert!(reply.status == 202 || reply.status == 422, "{}", reply.text);
    reply.body["referral_id"].as_str().unwrap().to_owned()
}

async fn audit_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let allowed = submit(&app, Who::IomRome, &fixture(RETURNEE)).await;
    let other = submit(&app, Who::ItaNrm, &fixture("trafficking_victim_reintegration")).await;
    let denied = submit(&app, Who::IomRome, &variant("rejected_asylum_avr", "avr-denied-1", Some("gmb-immigration"))).await;
    assert_eq!(app.get(Who::IomRome, &format!("/v1/referrals/{allowed}")).await.status, 200);

    let (submits, _) = audit(&app, &[("action", "referral.submit")]).await;
    assert_eq!(field(&submits, "referral_id"), [&json!(allowed), &json!(other), &json!(denied)]);
    assert_eq!(field(&submits, "outcome"), [&json!("allow"), &json!("allow"), &json!("deny")]);
    assert_eq!(submits[2]["reasons"], json!(["asylum_firewall"]));
    assert!(submits[0]["reasons"].as_array().unwrap().contains(&json!("sent:health")), "{}", submits[0]);

    let (about_one, _) = audit(&app, &[("referral_id", &allowed)]).await;
    assert_eq!(field(&about_one, "action"), [&json!("referral.submit"), &json!("referral.read")]);
    let (unknown, _) = audit(&app, &[("referral_id", "no-such-referral")]).await;
    assert!(unknown.is_empty());

    // By subject: the keyed hash of the reference is what is stored and matched.
    let subject_ref = fixture(RETURNEE)["subject_ref"].as_str().unwrap().to_owned();
    let (about_subject, _) = audit(&app, &[("subject_ref", &subject_ref)]).await;
    assert_eq!(about_subject.len(), 1, "{about_subject:?}");
    assert_eq!((&about_subject[0]["action"], &about_subject[0]["referral_id"]), (&json!("referral.submit"), &json!(allowed)));
    let subject_key = about_subject[0]["subject_key"].as_str().unwrap();
    assert_ne!(subject_key, subject_ref);
    assert!(!subject_key.contains(&subject_ref));
    let (nobody, _) = audit(&app, &[("subject_ref", "ITA-2026-999999")]).await;
    assert!(nobody.is_empty());

    // By organisation of the actor.
    let (iom, _) = audit(&app, &[("org", "ita-iom-rome")]).await;
    assert_eq!(field(&iom, "action"), [&json!("referral.submit"), &json!("referral.submit"), &json!("referral.read")]);
    let (nrm, _) = audit(&app, &[("org", "ita-nrm")]).await;
    assert!(nrm.iter().all(|e| e["actor"]["org"] == "ita-nrm"));
    assert!(nrm.iter().any(|e| e["referral_id"] == json!(other)));
    assert!(nrm.iter().any(|e| e["action"] == "audit.read"), "the DPO's own reads are entries too");
    let (none, _) = audit(&app, &[("org", "xyz-nobody")]).await;
    assert!(none.is_empty());

    // By time: `from` inclusive, `to` exclusive, any offset. Every entry was made at the fixture time.
    let ranges: [(&[(&str, &str)], usize); 7] = [
        (&[("from", "2026-11-23T11:59:59Z"), ("to", "2026-11-23T12:00:01Z")], 3),
        (&[("from", "2026-11-23T12:00:00Z")], 3),
        (&[("from", "2026-11-23T13:00:00+01:00")], 3),
        (&[("from", "2026-11-23T12:00:00.001Z")], 0),
        (&[("to", "2026-11-23T12:00:00Z")], 0),
        (&[("from", "2026-01-01T00:00:00Z"), ("to", "2026-11-23T11:00:00Z")], 0),
        (&[("to", "2026-11-23T14:00:00+01:00")], 3),
    ];
    for (range, expected) in ranges {
        let query: Vec<(&str, &str)> = range.iter().copied().chain([("action", "referral.submit")]).collect();
        let (entries, _) = audit(&app, &query).await;
        assert_eq!(entries.len(), expected, "{range:?}");
    }
    let (before, _) = audit(&app, &[("from", "2026-01-01T00:00:00Z"), ("to", "2026-11-23T11:00:00Z")]).await;
    assert!(before.is_empty(), "nothing happened before the fixture time");

    // Filters combine.
    let (combined, _) = audit(&app, &[("org", "ita-iom-rome"), ("action", "referral.submit"), ("referral_id", &denied)]).await;
    assert_eq!(combined.len(), 1);

    // Bad parameters.
    let bad: [&[(&str, &str)]; 9] = [
        &[("action", "referral.delete")],
        &[("from", "yesterday")],
        &[("to", "2026-11-23")],
        &[("to", "2026-13-01T00:00:00Z")],
        &[("limit", "ten")],
        &[("limit", "1.5")],
        &[("cursor", "abc")],
        &[("subject", "ITA-2026-000202")],
        &[("action", "referral.submit"), ("verbose", "true")],
    ];
    for query in bad {
        let reply = app.get_query(Who::Dpo, "/v1/audit", query).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.text);
        assert_eq!(reply.problem(), "invalid-request", "{query:?}");
        assert_eq!(reply.body["problems"][0]["field"], "(query)");
    }

    // No entry carries personal data or a readable reference.
    let (all, text) = audit(&app, &[("limit", "1000")]).await;
    assert!(all.len() > 10);
    assert_nothing_personal(&text);
    assert!(all.iter().any(|e| e["subject_key"].is_string()));
}

async fn audit_paging_walks_every_entry_once(backend: Backend) {
    let app = spawn_app(backend).await;
    for (n, name) in ["dual_national_fear", "rejected_asylum_avr", RETURNEE, "separated_child_tracing"].into_iter().enumerate() {
        submit(&app, Who::IomRome, &fixture(name)).await;
        submit(&app, Who::IomRome, &variant(name, &format!("paging-denied-{n}"), Some("gmb-immigration"))).await;
    }
    let stored = app.count("audit_log").await;
    assert_eq!(stored, 9, "the seed policy and eight submissions");

    // Every page read adds an audit.read entry at the end: the walk follows
    // the growing log until it catches up.
    let mut walked: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut query = vec![("limit", "2")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let reply = app.get_query(Who::Auditor, "/v1/audit", &query).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let page = reply.body["entries"].as_array().unwrap();
        assert!(page.len() <= 2);
        walked.extend(page.iter().cloned());
        match &reply.body["next_cursor"] {
            Value::Null => {
                cursor = None;
                break;
            }
            Value::String(next) => {
                assert_eq!(page.len(), 2, "a short page is the last");
                assert_eq!(next.as_str(), page[1]["seq"].to_string(), "the cursor is the last entry's position");
                cursor = Some(next.clone());
            }
            other => panic!("next_cursor {other}"),
        }
    }
    assert!(cursor.is_none(), "the walk ended");
    let seqs: Vec<i64> = walked.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "no duplicates, no gaps");
    assert!(seqs.len() as i64 > stored);

    // The pages are the log as one read shows it.
    let (whole, _) = audit(&app, &[("limit", "1000")]).await;
    assert_eq!(&whole[..walked.len()], walked.as_slice());
    // Each entry links to the one before.
    for pair in whole.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }

    // Paging a filtered view.
    let mut submits = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut query = vec![("action", "referral.submit"), ("limit", "3")];
        if !cursor.is_empty() {
            query.push(("cursor", &cursor));
        }
        let (page, text) = audit(&app, &query).await;
        let reply: Value = serde_json::from_str(&text).unwrap();
        submits.extend(page);
        match reply["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(submits.len(), 8);
    assert!(submits.iter().all(|e| e["action"] == "referral.submit"));
    let distinct: BTreeSet<i64> = submits.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(distinct.len(), 8);
}

async fn disclosures_list_what_went_where(backend: Backend) {
    let app = spawn_app(backend).await;
    let subject_ref = fixture(RETURNEE)["subject_ref"].as_str().unwrap().to_owned();
    let mut allowed = Vec::new();
    for (key, to) in [("disc-health", "nga-health-lagos"), ("disc-employment", "nga-employment-service")] {
        let reply = app.submit(Who::IomRome, &variant(RETURNEE, key, Some(to))).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        allowed.push(reply.body);
    }
    let denied = app.submit(Who::IomRome, &variant(RETURNEE, "disc-immigration", Some("gmb-immigration"))).await;
    assert_eq!(denied.status, 422, "{}", denied.text);
    // Another person's referral is not listed.
    assert_eq!(app.submit(Who::ItaNrm, &fixture("trafficking_victim_reintegration")).await.status, 202);

    let consent = &fixture(RETURNEE)["consent"];
    for who in [Who::Dpo, Who::Auditor] {
        let reply = app.get_query(who, "/v1/disclosures", &[("subject_ref", &subject_ref)]).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["subject_ref"], subject_ref.as_str());
        let disclosures = reply.body["disclosures"].as_array().unwrap();
        assert_eq!(disclosures.len(), 2, "{}", reply.text);
        for submitted in &allowed {
            let id = &submitted["referral_id"];
            let disclosure = disclosures.iter().find(|d| d["referral_id"] == *id).unwrap();
            assert_eq!(disclosure["recipient"], submitted["recipient"]);
            assert_eq!(disclosure["sender_org"], "ita-iom-rome");
            assert_eq!(disclosure["purpose"], "reintegration");
            assert_eq!(disclosure["status"], "queued");
            assert_eq!(disclosure["policy_version"], submitted["decision"]["policy_version"]);
            let categories: BTreeSet<&str> = disclosure["categories"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
            let sent: BTreeSet<&str> = submitted["decision"]["sent"].as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(categories, sent);
            assert_eq!(disclosure["consent"]["given_at"], consent["given_at"]);
            assert_eq!(disclosure["consent"]["method"], consent["method"]);
            assert_eq!(disclosure["consent"]["given_by"], "subject");
        }
        let recipients: BTreeSet<&str> = disclosures.iter().map(|d| d["recipient"]["org"].as_str().unwrap()).collect();
        assert_eq!(recipients, BTreeSet::from(["nga-health-lagos", "nga-employment-service"]));
        assert_eq!(recipients.iter().filter(|r| r.contains("health")).count(), 1);
        for value in personal_values() {
            assert!(!reply.text.contains(&value), "a personal value is in the disclosures");
        }
    }

    // Someone nothing was sent about.
    let unknown = app.get_query(Who::Dpo, "/v1/disclosures", &[("subject_ref", "ITA-2026-999999")]).await;
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.body["disclosures"], json!([]));
    // Only denied referrals about this one: nothing went anywhere.
    let denied_only = fixture("rejected_asylum_avr");
    let reply = app.submit(Who::IomRome, &variant("rejected_asylum_avr", "disc-denied-only", Some("gmb-immigration"))).await;
    assert_eq!(reply.status, 422);
    let none = app.get_query(Who::Dpo, "/v1/disclosures", &[("subject_ref", denied_only["subject_ref"].as_str().unwrap())]).await;
    assert_eq!(none.body["disclosures"], json!([]));

    for query in [&[][..], &[("subject_ref", "")][..], &[("subject_ref", "ITA-2026-000202"), ("org", "x")][..]] {
        let reply = app.get_query(Who::Dpo, "/v1/disclosures", query).await;
        assert_eq!(reply.status, 400, "{query:?}: {}", reply.text);
        assert_eq!(reply.problem(), "invalid-request");
    }

    // Each read is audited under the subject's keyed hash, never the reference.
    let (reads, text) = audit(&app, &[("action", "disclosures.read")]).await;
    assert_eq!(reads.len(), 4);
    assert!(reads.iter().all(|e| e["subject_key"].is_string()));
    assert_nothing_personal(&text);
    let (about, _) = audit(&app, &[("subject_ref", &subject_ref)]).await;
    let actions: Vec<&str> = about.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["referral.submit", "referral.submit", "referral.submit", "disclosures.read", "disclosures.read"]);
}

async fn a_subject_report_tells_who_holds_what_and_nothing_of_anyone_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let subject_ref = fixture(RETURNEE)["subject_ref"].as_str().unwrap().to_owned();
    let kept = app.submit(Who::IomRome, &variant(RETURNEE, "report-health", Some("nga-health-lagos"))).await;
    let withdrawn = app.submit(Who::IomRome, &variant(RETURNEE, "report-employment", Some("nga-employment-service"))).await;
    let denied = app.submit(Who::IomRome, &variant(RETURNEE, "report-immigration", Some("gmb-immigration"))).await;
    assert_eq!((kept.status, withdrawn.status, denied.status), (202, 202, 422));
    let withdrawn_id = withdrawn.body["referral_id"].as_str().unwrap().to_owned();
    assert_eq!(app.post_json(Who::IomRome, &format!("/v1/referrals/{withdrawn_id}/consent-withdrawal"), &json!({})).await.status, 200);
    // Another person's referral.
    let other = app.submit(Who::ItaNrm, &fixture("trafficking_victim_reintegration")).await;
    assert_eq!(other.status, 202);

    let path = format!("/v1/subjects/{subject_ref}/report");
    assert_eq!(app.get(Who::IomRome, &path).await.status, 403, "a submitter does not read reports");
    for who in [Who::Dpo, Who::Auditor] {
        let reply = app.get(who, &path).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.body["subject_ref"], subject_ref.as_str());
        let referrals = reply.body["referrals"].as_array().unwrap();
        assert_eq!(referrals.len(), 3, "allowed, withdrawn and denied: {}", reply.text);
        let by_id = |id: &Value| referrals.iter().find(|r| r["referral_id"] == *id).unwrap().clone();
        let held = |r: &Value| (r["held"]["this_gateway"].as_str().unwrap().to_owned(), r["held"]["recipient_gateway"].as_str().unwrap().to_owned());

        let kept_report = by_id(&kept.body["referral_id"]);
        assert_eq!(held(&kept_report), ("payload_sealed".to_owned(), "nothing".to_owned()));
        let sent: Vec<&str> = kept.body["decision"]["sent"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(kept_report["categories"]["sent"], json!(sent));
        assert_eq!(kept_report["policy_version"], kept.body["decision"]["policy_version"]);
        assert_eq!(kept_report["consent"]["given_by"], "subject");

        let withdrawn_report = by_id(&withdrawn.body["referral_id"]);
        assert_eq!(held(&withdrawn_report), ("erased".to_owned(), "nothing".to_owned()));
        assert_eq!(withdrawn_report["erased"][0]["where"], "this_gateway");
        assert_eq!(withdrawn_report["erasure"]["state"], "nothing_sent");

        let denied_report = by_id(&denied.body["referral_id"]);
        assert_eq!(denied_report["outcome"], "deny");
        assert_eq!(held(&denied_report).0, "decision_only");
        assert_eq!(denied_report["reason_codes"], denied.body["reason_codes"], "{denied_report}");
        assert!(!denied_report["reason_codes"].as_array().unwrap().is_empty());

        // Nothing of anyone else, and nothing personal.
        assert!(!reply.text.contains(other.body["referral_id"].as_str().unwrap()));
        for value in personal_values() {
            assert!(!reply.text.contains(&value), "a personal value is in the report");
        }
    }
    assert_eq!(app.get(Who::Dpo, "/v1/subjects/Lamin%20Jallow/report").await.status, 400, "a name is not a reference");
    let audited = app.count("audit_log WHERE action = 'subject.report' AND outcome = 'ok'").await;
    assert_eq!(audited, 2);
    assert_eq!(app.count(&format!("audit_log WHERE subject_key LIKE '%{subject_ref}%'")).await, 0, "audited under the keyed hash only");

    // The same report at a terminal.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["report", "subject", &subject_ref, "--config"])
        .arg(&app.config_path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut served = app.get(Who::Dpo, &path).await.body;
    // The same report, but for the time it was made.
    printed["generated_at"] = Value::Null;
    served["generated_at"] = Value::Null;
    assert_eq!(printed, served);
    assert_eq!(app.count("audit_log WHERE action = 'subject.report' AND actor_subject = 'cli:report'").await, 1, "the terminal's report is audited too");
    // A name typed by mistake, quoted or not, or looking like an option, is refused and never repeated.
    for mistake in [&["Lamin Jallow"][..], &["Lamin", "Jallow"][..], &["-Lamin"][..]] {
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
            .args(["report", "subject"])
            .args(mistake)
            .arg("--config")
            .arg(&app.config_path)
            .output()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2), "{mistake:?}");
        let said = format!("{}{}", String::from_utf8_lossy(&refused.stderr), String::from_utf8_lossy(&refused.stdout));
        assert!(!said.contains("Lamin") && !said.contains("Jallow") && !said.contains("-L"), "{mistake:?} repeated: {said}");
    }
}
