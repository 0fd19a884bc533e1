//! Priority and deadlines over a real two-gateway federation (issue 21 §1):
//! an emergency waits for a peer that is down, becomes overdue for its
//! delivery in the referral, the metrics and one warning logged by id; once
//! delivered, the recipient's inbox lists it before an ordinary case that
//! arrived first; the recipient's acknowledgement and answer end what is
//! awaited, on both sides.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{client_for, personal_values, send, variant, Backend, Captured, Who};
use crate::peers::{status_of, wait_for, Federation, Peer};

const LIMIT: Duration = Duration::from_secs(40);

/// One thread, so that both gateways log to the subscriber the test sets.
mod an_emergency_is_followed_against_its_deadlines_and_heads_the_recipients_inbox {
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite() {
        super::an_emergency_is_followed_against_its_deadlines_and_heads_the_recipients_inbox(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        super::an_emergency_is_followed_against_its_deadlines_and_heads_the_recipients_inbox(crate::helpers::Backend::Postgres).await;
    }
}

async fn submitted(ita: &Peer, key: &str, priority: Option<&str>) -> String {
    let mut referral = variant("returnee_hiv_reintegration", key, None);
    if let Some(priority) = priority {
        referral["priority"] = json!(priority);
    }
    let reply = ita.submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["referral_id"].as_str().unwrap().to_owned()
}

async fn metrics(peer: &Peer) -> String {
    let reply = send(client_for(Who::Nobody).get(peer.url("/metrics"))).await;
    assert_eq!(reply.status, 200);
    reply.text
}

/// The `rgw_referrals_overdue` sample of a priority and deadline.
async fn overdue_count(peer: &Peer, priority: &str, deadline: &str) -> f64 {
    let name = format!("rgw_referrals_overdue{{priority=\"{priority}\",deadline=\"{deadline}\"}} ");
    let text = metrics(peer).await;
    text.lines().find_map(|line| line.strip_prefix(&name)).unwrap_or_else(|| panic!("no {name} in {text}")).trim().parse().unwrap()
}

fn warnings(logs: &Captured) -> Vec<String> {
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    text.lines().filter(|line| line.contains("an emergency referral is overdue")).map(str::to_owned).collect()
}

async fn an_emergency_is_followed_against_its_deadlines_and_heads_the_recipients_inbox(backend: Backend) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_env_filter("referral_gateway=info").with_ansi(false).finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    federation.stop_peer("NGA").await;
    let accepted = federation.clock_now();

    // Nigeria's gateway is down: an ordinary referral, then an emergency, wait at Italy's.
    let ita = federation.peer("ITA");
    let ordinary = submitted(ita, "priority-test-0001", None).await;
    let emergency = submitted(ita, "priority-test-0002", Some("emergency")).await;
    let read = |id: String| async move { ita.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.body };
    let shown = read(emergency.clone()).await;
    assert_eq!((shown["priority"].as_str(), &shown["overdue"]), (Some("emergency"), &Value::Null), "{shown}");
    assert_eq!(read(ordinary.clone()).await["priority"], "normal", "the default");
    assert_eq!(overdue_count(ita, "emergency", "delivery").await, 0.0);

    // An hour on, the emergency is overdue for its delivery; the ordinary one has a day.
    federation.clock.advance(chrono::Duration::minutes(61));
    let ita = federation.peer("ITA");
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{emergency}")).await.body;
    assert_eq!(shown["overdue"]["deadline"], "delivery", "{shown}");
    let since = chrono::DateTime::parse_from_rfc3339(shown["overdue"]["since"].as_str().unwrap()).unwrap();
    let expected = accepted + chrono::Duration::hours(1);
    assert!((since.timestamp_millis() - expected.timestamp_millis()).abs() < 5_000, "an hour after its acceptance: {since}");
    assert_eq!(ita.get(Who::IomRome, &format!("/v1/referrals/{ordinary}")).await.body["overdue"], Value::Null);
    assert_eq!(overdue_count(ita, "emergency", "delivery").await, 1.0);
    assert_eq!(overdue_count(ita, "normal", "delivery").await, 0.0);

    // Logged once, at warn level, by id only, however often the watch runs.
    let gateway = ita.app().gateway();
    gateway.warn_overdue_emergencies(10).await.unwrap();
    gateway.warn_overdue_emergencies(10).await.unwrap();
    let logged = warnings(&logs);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("WARN") && logged[0].contains(&emergency) && logged[0].contains("deadline=\"delivery\""), "{logged:?}");
    for value in personal_values() {
        assert!(!logged[0].contains(&value), "a personal value in the warning");
    }

    // Nigeria's gateway comes back: both are delivered; its recipient's inbox
    // puts the emergency first, though it arrived after the ordinary one.
    federation.start_peer("NGA", true).await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    for id in [&ordinary, &emergency] {
        wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, id).await == "delivered" }).await;
    }
    wait_for("both cases listed", LIMIT, || async {
        nga.get(Who::NgaHealth, "/v1/inbox").await.body["items"].as_array().is_some_and(|items| items.len() == 2)
    })
    .await;
    let listed = nga.get(Who::NgaHealth, "/v1/inbox?order=due").await.body;
    let priorities: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|i| i["priority"].as_str().unwrap()).collect();
    assert_eq!(priorities, ["emergency", "normal"], "{listed}");
    let emergency_packet = listed["items"][0]["packet_id"].as_str().unwrap().to_owned();
    let respond_by = |item: &Value| chrono::DateTime::parse_from_rfc3339(item["respond_by"].as_str().unwrap()).unwrap().timestamp_millis();
    let (first, second) = (respond_by(&listed["items"][0]), respond_by(&listed["items"][1]));
    assert!(second - first > chrono::Duration::hours(60).num_milliseconds(), "4 hours to acknowledge an emergency, 72 a normal case: {listed}");
    // The default stays the order cases became visible, which recipients tail.
    let by_arrival = nga.get(Who::NgaHealth, "/v1/inbox").await.body;
    assert_eq!(by_arrival["items"].as_array().unwrap().len(), 2, "{by_arrival}");
    assert!(by_arrival["next_cursor"].as_str().unwrap().bytes().all(|b| b.is_ascii_digit()), "{by_arrival}");
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox?order=arrival").await.body, by_arrival);
    let case = nga.get(Who::NgaHealth, &format!("/v1/inbox/{emergency_packet}")).await;
    assert_eq!(case.body["priority"], "emergency", "{}", case.text);
    // Paged one at a time, the same order; a cursor keeps its order.
    let page = nga.get(Who::NgaHealth, "/v1/inbox?order=due&limit=1").await.body;
    assert_eq!(page["items"][0]["packet_id"], emergency_packet.as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    assert!(cursor.starts_with('q'), "{page}");
    let next = nga.get(Who::NgaHealth, &format!("/v1/inbox?limit=1&cursor={cursor}")).await.body;
    assert_eq!(next["items"][0]["priority"], "normal", "{next}");
    let mixed = nga.get(Who::NgaHealth, &format!("/v1/inbox?order=arrival&cursor={cursor}")).await;
    assert_eq!(mixed.status, 400, "{}", mixed.text);
    assert_eq!(nga.get(Who::NgaHealth, "/v1/inbox?order=priority").await.status, 400);

    // Delivered: the emergency now awaits its acknowledgement (4 hours), not overdue yet.
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{emergency}")).await.body;
    assert_eq!(shown["overdue"], Value::Null, "{shown}");
    assert_eq!(overdue_count(ita, "emergency", "delivery").await, 0.0);
    federation.clock.advance(chrono::Duration::hours(3));
    let ita = federation.peer("ITA");
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{emergency}")).await.body;
    assert_eq!(shown["overdue"]["deadline"], "acknowledgement", "{shown}");
    assert_eq!(overdue_count(ita, "emergency", "acknowledgement").await, 1.0);
    ita.app().gateway().warn_overdue_emergencies(10).await.unwrap();
    let logged = warnings(&logs);
    assert_eq!(logged.len(), 2, "a new deadline missed, a new warning: {logged:?}");
    assert!(logged[1].contains("deadline=\"acknowledgement\""), "{logged:?}");

    // The recipient acknowledges, then accepts: nothing more is awaited.
    let nga = federation.peer("NGA");
    let acknowledged = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{emergency_packet}/ack")))).await;
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.text);
    wait_for("forwarded at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &emergency).await == "forwarded" }).await;
    let shown = ita.get(Who::IomRome, &format!("/v1/referrals/{emergency}")).await.body;
    assert_eq!(shown["overdue"], Value::Null, "its first answer is due 24 hours after acceptance: {shown}");
    let still_first = nga.get(Who::NgaHealth, "/v1/inbox?order=due").await.body;
    assert_eq!(still_first["items"][0]["packet_id"], emergency_packet.as_str(), "{still_first}");
    let accepted_now = send(client_for(Who::NgaHealth).post(nga.url(&format!("/v1/inbox/{emergency_packet}/status"))).json(&json!({ "status": "accepted" }))).await;
    assert_eq!(accepted_now.status, 202, "{}", accepted_now.text);
    wait_for("accepted at the sender", LIMIT, || async { status_of(ita, Who::IomRome, &emergency).await == "accepted" }).await;
    let answered = nga.get(Who::NgaHealth, "/v1/inbox?order=due").await.body;
    assert_eq!(answered["items"][1]["packet_id"], emergency_packet.as_str(), "answered, it goes last: {answered}");
    assert!(answered["items"][1].get("respond_by").is_none(), "{answered}");
    federation.clock.advance(chrono::Duration::days(30));
    let ita = federation.peer("ITA");
    assert_eq!(ita.get(Who::IomRome, &format!("/v1/referrals/{emergency}")).await.body["overdue"], Value::Null, "answered, never overdue");
    assert_eq!(overdue_count(ita, "emergency", "first_status").await, 0.0);
    // The ordinary one was never acknowledged: 72 hours, long past.
    assert_eq!(ita.get(Who::IomRome, &format!("/v1/referrals/{ordinary}")).await.body["overdue"]["deadline"], "acknowledgement");
    assert_eq!(overdue_count(ita, "normal", "acknowledgement").await, 1.0);
    ita.app().gateway().warn_overdue_emergencies(10).await.unwrap();
    assert_eq!(warnings(&logs).len(), 2, "a normal referral is not logged");
}
