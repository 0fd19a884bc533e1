//! Accepting only what can be delivered (issue 17 §3): a case whose sealed
//! packet could exceed the limit its destination's gateway publishes in the
//! directory is refused at submission with 413, and never queued; a limit
//! lowered after acceptance holds the packet at the sender with an exact
//! `last_error`; a gateway sent an oversized packet anyway answers
//! `packet-too-large`, not a reset connection; and a body limit that could
//! never be delivered stops the start.

use std::time::Duration;

use referral_gateway::app::sending::delivery::{PeerTransport, SendFailure};
use referral_gateway::crypto::packet::largest_body_within;
use referral_gateway::directory::DEFAULT_MAX_PACKET_BYTES;
use referral_gateway::domain::CountryCode;
use referral_gateway::startup::Application;
use serde_json::{json, Value};

use crate::helpers::{variant, write_config, Backend, FixedClock, Who};
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation};

on_both_backends!(
    a_case_too_large_for_its_destination_is_refused_at_submission_and_never_queued,
    a_limit_lowered_after_acceptance_holds_the_packet_with_an_exact_error,
    a_case_is_bounded_as_sealed_end_to_end_since_its_organisation_may_publish_a_key,
);

const LIMIT: Duration = Duration::from_secs(40);
/// The smallest limit a gateway may publish.
const SMALL_LIMIT: u32 = 64 * 1024;

/// A reintegration referral to IOM in Nigeria whose consent names case
/// notes, with `notes` notes of 3,500 characters each: about 3.5 KB of
/// payload per note.
fn with_notes(key: &str, notes: usize) -> Value {
    let mut referral = variant("returnee_hiv_reintegration", key, Some("nga-iom-lagos"));
    referral["consent"]["scopes"][1]["categories"].as_array_mut().unwrap().push(json!("case_notes"));
    referral["case"]["case_notes"] = Value::Array((0..notes).map(|n| Value::String(format!("note {n} {}", "x".repeat(3500)))).collect());
    referral
}

async fn a_case_too_large_for_its_destination_is_refused_at_submission_and_never_queued(backend: Backend) {
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.peer_mut("NGA").max_packet_bytes = Some(SMALL_LIMIT);
    federation.launch(&["ITA", "NGA"]).await;
    let ita = federation.peer("ITA");

    // About 45 KB of notes: within the 64 KiB body limit, but sealed (base64
    // twice) the packet could take about 80 KB.
    let large = with_notes("too-large-1", 12);
    let refused = ita.submit(Who::IomRome, &large).await;
    assert_eq!(refused.status, 413, "{}", refused.text);
    assert_eq!(refused.problem(), "referral-too-large-to-deliver");
    assert_eq!(refused.body["destination_limit_bytes"], SMALL_LIMIT);
    assert!(refused.body["packet_bound_bytes"].as_u64().unwrap() > u64::from(SMALL_LIMIT), "{}", refused.text);
    assert_eq!(ita.count("SELECT COUNT(*) FROM referrals").await, 0, "nothing is recorded");
    assert_eq!(ita.count("SELECT COUNT(*) FROM outbox").await, 0, "nothing is queued");

    // A case that fits goes as ever.
    let small = with_notes("too-large-2", 2);
    let queued = ita.submit(Who::IomRome, &small).await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let small_id = queued.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("the small case delivered", LIMIT, || async { status_of(ita, Who::IomRome, &small_id).await == "delivered" }).await;

    // With the federation's default limit, the large case is accepted and
    // delivered: the bound agrees with what the receiving gateway takes.
    federation.peer_mut("NGA").max_packet_bytes = None;
    federation.publish().await;
    let ita = federation.peer("ITA");
    let accepted = ita.submit(Who::IomRome, &with_notes("too-large-3", 12)).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.body["referral_id"].as_str().unwrap().to_owned();
    wait_for("the large case delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
}

async fn a_limit_lowered_after_acceptance_holds_the_packet_with_an_exact_error(backend: Backend) {
    let mut federation = Federation::start(backend, &["ITA", "NGA"]).await;
    federation.stop_peer("NGA").await;
    // Accepted under the default limit while Nigeria's gateway is down...
    let accepted = federation.peer("ITA").submit(Who::IomRome, &with_notes("lowered-1", 12)).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.body["referral_id"].as_str().unwrap().to_owned();
    // ...which then publishes a lower limit and comes up.
    federation.peer_mut("NGA").max_packet_bytes = Some(SMALL_LIMIT);
    federation.start_peer("NGA", true).await;
    federation.publish().await;
    let (ita, nga) = (federation.peer("ITA"), federation.peer("NGA"));
    wait_for("an attempt held back", LIMIT, || async {
        ita.text("SELECT last_error FROM outbox WHERE packet_type = 'referral'").await.as_deref() == Some("packet-too-large")
    })
    .await;
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive'").await, 0, "nothing was sent to be refused");
    assert_eq!(status_of(ita, Who::IomRome, &id).await, "queued");
    // A retry of the accepted submission is answered as the first time, not 413.
    let again = ita.submit(Who::IomRome, &with_notes("lowered-1", 12)).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.body["referral_id"], id.as_str());

    // The limit raised again, the packet goes.
    federation.peer_mut("NGA").max_packet_bytes = None;
    federation.publish().await;
    let ita = federation.peer("ITA");
    wait_for("delivered", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
}

/// An organisation may publish its own key between a case's acceptance and
/// its delivery; every packet to it is then sealed end to end, padded to a
/// bucket and base64-encoded twice more. The case is bounded so from the
/// start: one the destination could take only as a readable packet is
/// refused at submission (it was once accepted, then held until its deadline).
async fn a_case_is_bounded_as_sealed_end_to_end_since_its_organisation_may_publish_a_key(backend: Backend) {
    use referral_gateway::crypto::jose_keys::{generate, KeyUse};
    let mut federation = Federation::prepare(backend, &["ITA", "NGA"]);
    federation.peer_mut("NGA").max_packet_bytes = Some(SMALL_LIMIT);
    // Italy's gateway queues what it accepts, and seals nothing yet.
    federation.launch(&["NGA"]).await;
    let ita = federation.peer("ITA");
    // About 19 KB of payload: some 40 KB as a readable packet, some 110 KB sealed end to end.
    let refused = ita.submit(Who::IomRome, &with_notes("e2e-bound-1", 5)).await;
    assert_eq!(refused.status, 413, "{}", refused.text);
    assert_eq!(refused.problem(), "referral-too-large-to-deliver");
    let accepted = ita.submit(Who::IomRome, &with_notes("e2e-bound-2", 2)).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let id = accepted.body["referral_id"].as_str().unwrap().to_owned();

    // The organisation publishes its key; then Italy's gateway delivers.
    let (from, until) = crate::peers::default_window();
    let key = referral_gateway::directory::published_key(&generate(KeyUse::Enc).unwrap(), from, until, KeyUse::Enc).unwrap();
    federation.organisation_keys.insert("nga-iom-lagos".to_owned(), vec![key]);
    federation.publish().await;
    federation.stop_peer("ITA").await;
    federation.start_peer("ITA", true).await;
    let ita = federation.peer("ITA");
    wait_for("delivered sealed end to end", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    // Sealed end to end: padded to the 8 KiB bucket and encoded twice more, the packet takes some 28 KB,
    // where the readable one took some 15 KB.
    let sealed = ita.count("SELECT CAST(LENGTH(packet) AS BIGINT) FROM outbox WHERE packet_type = 'referral' AND state = 'delivered'").await;
    assert!((25_000..i64::from(SMALL_LIMIT)).contains(&sealed), "{sealed} bytes");
}

/// A packet over the receiver's limit, sent anyway (a sender on an older
/// directory edition): the receiver reads it to the end and answers its
/// refusal, so the sender records `packet-too-large`, not a reset
/// connection. Eight megabytes: far more than the sockets hold in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_packet_sent_anyway_is_refused_with_its_code() {
    let mut federation = Federation::prepare(Backend::Sqlite, &["ITA", "NGA"]);
    federation.peer_mut("NGA").max_packet_bytes = Some(SMALL_LIMIT);
    federation.launch(&["ITA", "NGA"]).await;
    let client = federation.peer_client("ITA", Duration::from_secs(20));
    let endpoint = format!("https://127.0.0.1:{}", federation.peer("NGA").endpoint.unwrap().port());
    let oversized = "a".repeat(8 * 1024 * 1024);
    // Without the read to the end, the sender saw its connection reset in
    // about one try in three here: four tries.
    for _ in 0..4 {
        let refused = client.send(CountryCode::parse("NGA").unwrap(), &endpoint, &oversized).await.unwrap_err();
        assert_eq!(refused, SendFailure::Refused { code: "packet-too-large".to_owned() });
    }
    let nga = federation.peer("NGA");
    assert_eq!(nga.count("SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND outcome = 'refused'").await, 4);
}

/// A body limit whose largest body, sealed, would exceed every peer's packet
/// limit stops the start, naming the key and the largest value that fits.
#[tokio::test]
async fn a_body_limit_that_could_never_be_delivered_stops_the_start() {
    let deliverable = largest_body_within(DEFAULT_MAX_PACKET_BYTES, false);
    assert!((500_000..DEFAULT_MAX_PACKET_BYTES).contains(&deliverable), "{deliverable}");
    // operations.md gives the figures, readable and sealed end to end.
    let figure = |bytes: usize| format!("{},{:03}", bytes / 1000, bytes % 1000);
    let operations = std::fs::read_to_string(crate::helpers::repo_path("docs/operations.md")).unwrap();
    for (bytes, end_to_end) in [(deliverable, false), (largest_body_within(DEFAULT_MAX_PACKET_BYTES, true), true)] {
        let said = format!("at most {} bytes", figure(bytes));
        assert!(operations.contains(&said), "docs/operations.md should say {said} (end to end: {end_to_end})");
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_config(dir.path(), Backend::Sqlite, "");
    let mut config = referral_gateway::config::GatewayConfig::load(&path).unwrap();
    let clock = std::sync::Arc::new(FixedClock(crate::helpers::fixture_time()));

    config.server.body_limit_bytes = deliverable + 1;
    let error = Application::build(&config, clock.clone()).await.map(|_| ()).expect_err("an undeliverable body limit is refused").to_string();
    assert!(error.contains("server.body_limit_bytes") && error.contains(&deliverable.to_string()), "{error}");

    config.server.body_limit_bytes = deliverable;
    let app = Application::build(&config, clock).await.expect("the largest deliverable body limit starts");
    app.shut_down().await;
}
