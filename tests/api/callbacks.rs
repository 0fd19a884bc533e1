//! Status callbacks over a real two-gateway federation (issue 21 §2): Italy's
//! gateway pushes every timeline entry of IOM Rome's referrals to IOM
//! Rome's HTTPS receiver, signed with the key it registered. The receiver is
//! down, then refuses, then takes them: nothing is lost, a referral's events
//! arrive in timeline order, a repeated event keeps its id, and an event
//! retried past its deadline is given up while the next one still goes.
//! Another organisation, with no callback, is sent nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use referral_gateway::config::CallbackConfig;
use referral_gateway::crypto::callback_event::{self, CallbackKey};
use serde_json::{json, Value};

use crate::helpers::{client_for, personal_values, send, variant, Backend, Who};
use crate::peers::{status_of, wait_for, Federation, Peer, Webhook};

const LIMIT: Duration = Duration::from_secs(40);
const SECRET: &[u8] = b"iom-rome-callback-key-0123456789abcdef";

crate::on_both_backends!(status_callbacks_reach_the_sending_system_in_order_through_an_outage);

/// A key file too short for HS256 stops the start, naming the callback and
/// the file, never the key.
#[tokio::test]
async fn a_callback_key_too_short_stops_the_start_without_showing_it() {
    let mut federation = Federation::prepare(Backend::Sqlite, &["ITA"]);
    let keys = tempfile::tempdir().unwrap();
    let secret_file = keys.path().join("short.key");
    std::fs::write(&secret_file, "short-secret-value\n").unwrap();
    let callback = CallbackConfig { org: "ita-iom-rome".to_owned(), url: "https://localhost:1/events".to_owned(), secret_file, retry_hours: 1 };
    let peer = federation.peer_mut("ITA");
    peer.config.callbacks.insert("iom_rome".to_owned(), callback);
    federation.publish().await;
    let clock: std::sync::Arc<dyn referral_gateway::app::Clock> = federation.clock.clone();
    let error = referral_gateway::startup::Application::build(&federation.peer("ITA").config, clock).await.err().unwrap().to_string();
    assert!(error.contains("callbacks.iom_rome") && error.contains("short.key") && error.contains("18"), "{error}");
    assert!(!error.contains("short-secret-value"), "{error}");
}

async fn metric(peer: &Peer, name: &str) -> f64 {
    let reply = send(client_for(Who::Nobody).get(peer.url("/metrics"))).await;
    let sample = format!("{name}{{organisation=\"ita-iom-rome\"}} ");
    reply.text.lines().find_map(|line| line.strip_prefix(&sample)).unwrap_or_else(|| panic!("no {sample} in {}", reply.text)).trim().parse().unwrap()
}

/// What the receiver was sent, each event checked against the key and read.
fn events(receiver: &Webhook) -> Vec<Value> {
    let key = CallbackKey::new(SECRET).unwrap();
    receiver.received.lock().unwrap().iter().map(|jws| callback_event::verify(jws, &key).unwrap()).collect()
}

async fn reported(nga: &Peer, packet_id: &str, status: &str) {
    let reply = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/status"))).json(&json!({ "status": status }))).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
}

async fn status_callbacks_reach_the_sending_system_in_order_through_an_outage(backend: Backend) {
    let mut receiver = Webhook::reserve();
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    let keys = tempfile::tempdir().unwrap();
    let secret_file = keys.path().join("iom-rome.key");
    std::fs::write(&secret_file, SECRET).unwrap();
    let callback = CallbackConfig { org: "ita-iom-rome".to_owned(), url: receiver.events_url(), secret_file, retry_hours: 1 };
    federation.peer_mut("ITA").config.callbacks.insert("iom_rome".to_owned(), callback);
    federation.launch(&["ITA", "NGA"]).await;

    // The receiver is down while IOM Rome's referral is delivered, taken and accepted.
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    let reply = ita.submit(Who::IomRome, &variant("returnee_hiv_reintegration", "callback-test-0001", None)).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["referral_id"].as_str().unwrap().to_owned();
    let other = ita.submit(Who::ItaNrm, &variant("returnee_hiv_reintegration", "callback-test-0002", None)).await;
    assert_eq!(other.status, 202, "{}", other.text);
    let other_id = other.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let packet_id = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["delivery"]["packet_id"].as_str().unwrap().to_owned();
    let acknowledged = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{packet_id}/ack")))).await;
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.text);
    reported(nga, &packet_id, "accepted").await;
    wait_for("accepted", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "accepted" }).await;
    let timeline: Vec<String> = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(timeline.first().map(String::as_str), Some("queued"));
    assert_eq!(timeline.last().map(String::as_str), Some("accepted"));

    // Every entry waits, none lost; the first has been tried and failed.
    let count = timeline.len() as i64;
    wait_for("a failed attempt recorded", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["callbacks"]["last_error"] == "callback-unreachable"
    })
    .await;
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(shown["callbacks"], json!({ "pending": count, "failed": 0, "last_error": "callback-unreachable" }), "{shown}");
    assert_eq!(metric(ita, "rgw_callbacks_pending").await, count as f64);
    assert_eq!(metric(ita, "rgw_callbacks_failed").await, 0.0);
    let unregistered = ita.get(Who::ItaNrm, &format!("/v1/referrals/{other_id}")).await.body;
    assert_eq!(unregistered["callbacks"], Value::Null, "no callback registered: {unregistered}");

    // It comes back refusing (503): the first event is retried, the others wait behind it.
    receiver.answer.store(503, Ordering::SeqCst);
    receiver.start().await;
    wait_for("the first event refused twice", LIMIT, || async { receiver.received.lock().unwrap().len() >= 2 }).await;
    let refused = events(&receiver);
    assert!(refused.iter().all(|e| e["position"] == 1 && e["event_id"] == format!("{id}.1")), "only the first, again and again: {refused:?}");
    wait_for("the refusal recorded", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["callbacks"]["last_error"] == "callback-http-503"
    })
    .await;

    // It takes them: each entry once more than refused, in timeline order, signed for IOM Rome.
    receiver.answer.store(204, Ordering::SeqCst);
    wait_for("every event taken", LIMIT, || async {
        ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["callbacks"]["pending"] == 0
    })
    .await;
    let sent = events(&receiver);
    let mut first_seen: Vec<&Value> = Vec::new();
    for event in &sent {
        if !first_seen.iter().any(|seen| seen["event_id"] == event["event_id"]) {
            first_seen.push(event);
        }
    }
    assert_eq!(first_seen.len(), timeline.len(), "{sent:?}");
    for (n, (event, status)) in first_seen.iter().zip(&timeline).enumerate() {
        let position = n as i64 + 1;
        assert_eq!(event["event_id"], format!("{id}.{position}"));
        assert_eq!((event["position"].as_i64(), event["status"].as_str()), (Some(position), Some(status.as_str())), "{event}");
        assert_eq!((event["referral_id"].as_str(), event["organisation"].as_str(), event["gateway"].as_str()), (Some(id.as_str()), Some("ita-iom-rome"), Some("ITA")));
        assert!(event["at"].as_str().is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()), "{event}");
    }
    let repeated = sent.len() - first_seen.len();
    assert!(repeated >= 2, "the refused event came again, with its id: {sent:?}");
    let other_key = CallbackKey::new(b"another-organisation-key-0123456789abcdef").unwrap();
    assert!(callback_event::verify(&receiver.received.lock().unwrap()[0], &other_key).is_err(), "signed with IOM Rome's key alone");
    let payloads = serde_json::to_string(&sent).unwrap();
    assert!(!payloads.contains(&other_id), "nothing of the other organisation's referral");
    for value in personal_values() {
        assert!(!payloads.contains(&value), "a personal value in an event");
    }
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!((&shown["callbacks"]["pending"], &shown["callbacks"]["failed"]), (&json!(0), &json!(0)), "{shown}");
    assert_eq!(metric(ita, "rgw_callbacks_pending").await, 0.0);

    // Refused past its deadline (retry_hours = 1), an event is given up; the next one still goes.
    receiver.answer.store(503, Ordering::SeqCst);
    reported(nga, &packet_id, "in_progress").await;
    let position = count + 1;
    wait_for("the new event refused", LIMIT, || async { events(&receiver).iter().any(|e| e["position"] == position) }).await;
    federation.clock.advance(chrono::Duration::minutes(61));
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    wait_for("given up", LIMIT, || async { ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body["callbacks"]["failed"] == 1 }).await;
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body;
    assert_eq!(shown["callbacks"], json!({ "pending": 0, "failed": 1, "last_error": "callback-http-503" }), "{shown}");
    assert_eq!(metric(ita, "rgw_callbacks_failed").await, 1.0);
    receiver.answer.store(204, Ordering::SeqCst);
    reported(nga, &packet_id, "services_delivered").await;
    wait_for("the next event taken", LIMIT, || async { events(&receiver).iter().any(|e| e["position"] == position + 1) }).await;
    let last = events(&receiver).into_iter().last().unwrap();
    assert_eq!((last["event_id"].as_str(), last["status"].as_str()), (Some(format!("{id}.{}", position + 1).as_str()), Some("services_delivered")));
}
