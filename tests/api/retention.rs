//! Retention deadlines over a real two-gateway federation, with the
//! federation's clock moved by the test: the deadline the DPO's rules give
//! a referral travels in its packet, each gateway keeps it, and once the
//! clock passes it the sweep erases the case at both (keys destroyed,
//! sealed data blanked, the recipient told), audited and counted, without
//! a packet between them. A `closed` status brings it forward at both.
//! Also: the DPO's retention file is stored and checked with the policy set.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use referral_gateway::app::retention::ErasedCounts;
use serde_json::{json, Value};

use crate::helpers::{Captured, client_for, personal_values, policy_files, send, spawn_app, subject_refs, variant, Backend, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation, Peer};

on_both_backends!(
    closure_brings_the_deadline_forward_at_both_gateways,
    the_retention_file_is_stored_with_the_policy_set_and_checked_like_cedar,
);

const LIMIT: Duration = Duration::from_secs(40);
const DAY_MS: i64 = 86_400_000;

/// The DPO's rules for the tests: reintegration cases kept 20 days, 2 after closure.
const RULES: &str = "# test rules\n[[rule]]\npurpose = \"reintegration\"\nmax_days = 20\ndays_after_closure = 2\n";

/// A federation of Italy and Nigeria whose sweeps run every second, Italy's
/// DPO having uploaded `RULES`.
async fn federation(backend: Backend) -> Federation {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    for country in ["ITA", "NGA"] {
        federation.peer_mut(country).config.retention.sweep_seconds = 1;
    }
    federation.launch(&["ITA", "NGA"]).await;
    let mut files = policy_files();
    files.insert("retention.toml".to_owned(), RULES.to_owned());
    let ita = federation.peer("ITA");
    let stored = send(client_for(Who::Dpo).put(ita.url("/v1/policies")).json(&json!({ "files": files, "note": "short retention" }))).await;
    assert_eq!(stored.status, 201, "{}", stored.text);
    let approve = ita.url(&format!("/v1/policies/{}/approve", stored.body["number"]));
    let approved = send(client_for(Who::SecondDpo).post(approve).json(&json!({}))).await;
    assert_eq!(approved.body["state"], "approved", "{}", approved.text);
    federation
}

/// Submits a reintegration referral at Italy and waits for it in Nigeria's
/// inbox; returns the referral id, the packet id and when Italy accepted it.
async fn delivered(federation: &Federation, key: &str) -> (String, String, i64) {
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let reply = ita.submit(Who::IomRome, &variant("returnee_hiv_reintegration", key, None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("the case in the recipient's inbox", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.iter().any(|i| i["state"] == "available"))
    })
    .await;
    let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    let accepted = ita.count(&format!("SELECT created_ms FROM referrals WHERE id = '{id}'")).await;
    (id, packet_id, accepted)
}

fn millis(text: &Value) -> i64 {
    DateTime::parse_from_rfc3339(text.as_str().unwrap()).unwrap().with_timezone(&Utc).timestamp_millis()
}

/// Moves the federation's clock to `at_ms` plus `offset`.
fn move_clock_to(federation: &Federation, at_ms: i64, offset: chrono::Duration) {
    let target = DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap() + offset;
    federation.clock.advance(target - federation.clock_now());
}

/// Runs the sweep of both gateways once, directly.
async fn sweep_both(federation: &Federation) -> (ErasedCounts, ErasedCounts) {
    let ita = federation.peer("ITA").app().gateway().erase_expired(100).await.unwrap();
    let nga = federation.peer("NGA").app().gateway().erase_expired(100).await.unwrap();
    (ita, nga)
}

async fn case_key_exists(peer: &Peer, sql: &str) -> bool {
    let key_id = peer.text(sql).await.unwrap();
    peer.app().gateway().vault().case_key(&key_id).await.unwrap().is_some()
}

async fn metric(peer: &Peer, side: &str) -> String {
    let text = send(client_for(Who::Nobody).get(peer.url("/metrics"))).await.text;
    let prefix = format!("rgw_retention_erasures_total{{side=\"{side}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&prefix)).unwrap_or("absent").to_owned()
}

/// The deadline test runs on one thread, so that every task of both
/// gateways logs to the subscriber it sets for that thread.
mod a_referral_is_erased_at_both_gateways_once_its_deadline_passes {
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite() {
        super::a_referral_is_erased_at_both_gateways_once_its_deadline_passes(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        super::a_referral_is_erased_at_both_gateways_once_its_deadline_passes(crate::helpers::Backend::Postgres).await;
    }
}

async fn a_referral_is_erased_at_both_gateways_once_its_deadline_passes(backend: Backend) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_env_filter("referral_gateway=trace,info").with_ansi(false).finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let federation = federation(backend).await;
    let (id, packet_id, accepted) = delivered(&federation, "retention-test-0001").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));

    // The deadline: accepted + 20 days (the consent runs longer), on the
    // referral, in the packet's claims as the recipient reads them, and on
    // the receiving gateway's inbox entry.
    let deadline = accepted + 20 * DAY_MS;
    assert_eq!(ita.count(&format!("SELECT retention_until_ms FROM referrals WHERE id = '{id}'")).await, deadline);
    assert_eq!(ita.count(&format!("SELECT retention_days_after_closure FROM referrals WHERE id = '{id}'")).await, 2);
    let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(case.status, 200, "{}", case.text);
    assert_eq!(millis(&case.body["retention_until"]), deadline, "{}", case.text);
    assert_eq!(case.body["retention_days_after_closure"], 2);
    assert!(millis(&case.body["consent_expires_at"]) > deadline, "the consent must outlast the rule for this test");
    assert_eq!(nga.count(&format!("SELECT retention_until_ms FROM inbox WHERE packet_id = '{packet_id}'")).await, deadline);

    // An hour before: nothing is erased, on either side.
    move_clock_to(&federation, deadline, chrono::Duration::hours(-1));
    assert_eq!(sweep_both(&federation).await, (ErasedCounts::default(), ErasedCounts::default()));
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.status, 200);
    assert!(case_key_exists(ita, &format!("SELECT key_id FROM outbox WHERE id = '{id}'")).await);
    assert!(case_key_exists(nga, &format!("SELECT key_id FROM inbox WHERE packet_id = '{packet_id}'")).await);
    assert_eq!(ita.count("SELECT COUNT(*) FROM audit_log WHERE action = 'retention.erase'").await, 0);

    // An hour after: the background sweeps erase it at both gateways.
    move_clock_to(&federation, deadline, chrono::Duration::hours(1));
    wait_for("the erasure at the sender", LIMIT, || async {
        ita.count(&format!("SELECT COUNT(*) FROM referrals WHERE id = '{id}' AND erased_ms IS NOT NULL")).await == 1
    })
    .await;
    wait_for("the erasure at the receiving gateway", LIMIT, || async {
        nga.text(&format!("SELECT state FROM inbox WHERE packet_id = '{packet_id}'")).await.as_deref() == Some("erased")
    })
    .await;

    // The sender: key gone, payload and packet blanked (the receipt stays as proof), in the timeline.
    assert!(!case_key_exists(ita, &format!("SELECT key_id FROM outbox WHERE id = '{id}'")).await);
    assert_eq!(
        ita.count(&format!("SELECT COUNT(*) FROM outbox WHERE id = '{id}' AND length(sealed) = 0 AND packet IS NULL AND receipt IS NOT NULL")).await,
        1
    );
    let referral = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    let steps: Vec<&str> = referral["timeline"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(steps.last(), Some(&"retention_expired"), "{steps:?}");
    assert_eq!(referral["status"], "retention_expired");
    // The receiving gateway: key gone, claims blanked, 410 to the recipient, listed as erased.
    assert!(!case_key_exists(nga, &format!("SELECT key_id FROM inbox WHERE packet_id = '{packet_id}'")).await);
    assert_eq!(nga.count(&format!("SELECT COUNT(*) FROM inbox WHERE packet_id = '{packet_id}' AND length(sealed) = 0")).await, 1);
    assert_eq!(nga.text(&format!("SELECT reasons FROM inbox WHERE packet_id = '{packet_id}'")).await.as_deref(), Some(r#"["retention_passed"]"#));
    let gone = nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await;
    assert_eq!(gone.status, 410, "{}", gone.text);
    let listed = nga.get(Who::NgaHealth, "/v1/inbox").await.body;
    assert_eq!(listed["items"][0]["state"], "erased", "{listed}");
    // No packet went between the gateways for it.
    assert_eq!(ita.count("SELECT COUNT(*) FROM outbox WHERE packet_type <> 'referral'").await, 0);
    assert_eq!(nga.count("SELECT COUNT(*) FROM outbox").await, 0);

    // Audited once at each side; counted in the metrics.
    for (peer, side, about) in [(ita, "sent", &id), (nga, "received", &packet_id)] {
        let audited = format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'retention.erase' AND outcome = 'erased' AND referral_id = '{about}' \
             AND actor_subject = 'gateway:{}' AND reasons LIKE '%side:{side}%'",
            peer.country
        );
        assert_eq!(peer.count(&audited).await, 1, "{side}");
        assert_eq!(peer.count("SELECT COUNT(*) FROM audit_log WHERE action = 'retention.erase'").await, 1, "{side}");
        assert_eq!(metric(peer, side).await, "1", "{side}");
    }
    assert_eq!(metric(ita, "received").await, "0");
    // Once erased, nothing more to sweep.
    assert_eq!(sweep_both(&federation).await, (ErasedCounts::default(), ErasedCounts::default()));
    let audit = send(client_for(Who::Auditor).get(ita.url("/v1/audit?action=retention.erase"))).await;
    assert_eq!(audit.status, 200, "{}", audit.text);

    // Nothing personal in what the gateways logged, and the sweep did log.
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("retention deadlines passed"), "the capture must see the sweep's own line");
    for value in personal_values().into_iter().chain(subject_refs()) {
        assert!(!logged.contains(&value), "logged a personal value");
    }
}

async fn closure_brings_the_deadline_forward_at_both_gateways(backend: Backend) {
    let federation = federation(backend).await;
    let (id, packet_id, accepted) = delivered(&federation, "retention-test-0002").await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let by_rule = accepted + 20 * DAY_MS;

    // The recipient closes the case: two days from now at both gateways.
    let closed_at = federation.clock_now().timestamp_millis();
    let reply = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/status"))).json(&json!({ "status": "closed" }))).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let at_nga = nga.count(&format!("SELECT retention_until_ms FROM inbox WHERE packet_id = '{packet_id}'")).await;
    assert!((closed_at + 2 * DAY_MS..closed_at + 2 * DAY_MS + 10_000).contains(&at_nga), "{at_nga} {closed_at}");
    wait_for("the closure at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "closed" }).await;
    let at_ita = ita.count(&format!("SELECT retention_until_ms FROM referrals WHERE id = '{id}'")).await;
    assert!((closed_at + 2 * DAY_MS..closed_at + 2 * DAY_MS + 30_000).contains(&at_ita), "{at_ita} {closed_at}");
    assert!(at_ita < by_rule && at_nga < by_rule);

    // A second closure later never pushes the deadline back.
    move_clock_to(&federation, closed_at, chrono::Duration::hours(12));
    let again = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/status"))).json(&json!({ "status": "closed" }))).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(nga.count(&format!("SELECT retention_until_ms FROM inbox WHERE packet_id = '{packet_id}'")).await, at_nga);

    // A day after the closure: still kept at both.
    move_clock_to(&federation, closed_at, chrono::Duration::days(1));
    assert_eq!(sweep_both(&federation).await, (ErasedCounts::default(), ErasedCounts::default()));
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.status, 200);

    // Past the closure's deadline, long before the rule's: erased at both.
    move_clock_to(&federation, at_ita.max(at_nga), chrono::Duration::minutes(1));
    wait_for("the erasure at both gateways", LIMIT, || async {
        ita.count(&format!("SELECT COUNT(*) FROM referrals WHERE id = '{id}' AND erased_ms IS NOT NULL")).await == 1
            && nga.text(&format!("SELECT state FROM inbox WHERE packet_id = '{packet_id}'")).await.as_deref() == Some("erased")
    })
    .await;
    assert!(federation.clock_now().timestamp_millis() < by_rule);
    assert_eq!(nga.get(Who::NgaHealth, &format!("/v1/inbox/{packet_id}")).await.status, 410);
    assert_eq!(ita.count(&format!("SELECT COUNT(*) FROM outbox WHERE id = '{id}' AND length(sealed) = 0 AND packet IS NULL")).await, 1);
    // The second closure's status, late at Italy, moved nothing back either.
    assert!(ita.count(&format!("SELECT retention_until_ms FROM referrals WHERE id = '{id}'")).await <= at_ita);
}

async fn the_retention_file_is_stored_with_the_policy_set_and_checked_like_cedar(backend: Backend) {
    let app = spawn_app(backend).await;
    // The shipped set has one, loaded at the first start.
    let initial = app.get(Who::Dpo, "/v1/policies").await.body;
    let files: BTreeMap<String, String> = serde_json::from_value(initial["active"]["files"].clone()).unwrap();
    assert!(files.get("retention.toml").is_some_and(|text| text.contains("family_tracing")), "{files:?}");

    // Bad rules: refused like bad Cedar, each problem located, no value repeated.
    let mut bad = policy_files();
    bad.insert("retention.toml".to_owned(), "[[rule]]\npurpose = \"Amina Diallo\"\nmax_days = 30\n\n[[rule]]\nmax_days = 0\n".to_owned());
    let refused = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": bad })).await;
    assert_eq!((refused.status, refused.problem()), (422, "policy-invalid"), "{}", refused.text);
    let problems: Vec<(String, u64, u64)> = refused.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["file"].as_str().unwrap().to_owned(), p["line"].as_u64().unwrap(), p["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(problems, [("retention.toml".to_owned(), 2, 11), ("retention.toml".to_owned(), 6, 12)], "{}", refused.text);
    assert!(!refused.text.contains("Amina"));
    assert_eq!(app.get(Who::Dpo, "/v1/policies").await.body["active"], initial["active"], "nothing stored");

    // Good rules: a new version, whose hash covers them.
    let mut good = policy_files();
    good.insert("retention.toml".to_owned(), RULES.to_owned());
    let stored = app.adopt_policy(&json!({ "files": good })).await;
    assert_ne!(stored.body["version"], initial["active"]["version"]);
    let active = app.get(Who::Dpo, "/v1/policies").await.body;
    assert_eq!(active["active"]["files"]["retention.toml"], RULES);

    // A set of retention rules alone lets nothing be shared: refused.
    let alone = app.put_json(Who::Dpo, "/v1/policies", &json!({ "files": { "retention.toml": RULES } })).await;
    assert_eq!(alone.status, 400, "{}", alone.text);
}
