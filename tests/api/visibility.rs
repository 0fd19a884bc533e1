//! What an operator sees of federation traffic: delivery counted per peer
//! gateway in `/metrics`, inbound packets logged and counted like the
//! national API's requests, redeliveries audited as duplicates.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use referral_gateway::app::sending::delivery::{DeliveryRound, PeerTransport, SendFailure};
use referral_gateway::domain::CountryCode;
use serde_json::Value;

use crate::helpers::{client_for, personal_values, send, variant, write_config, Backend, Captured, Who, POSTGRES_URL};
use crate::logs::Running;
use crate::on_both_backends;
use crate::peers::{status_of, wait_for, Federation, Peer};

on_both_backends!(
    delivery_is_counted_per_peer_with_causes_from_a_closed_list,
    a_case_waiting_for_its_organisations_key_is_counted_under_no_peer,
    a_redelivery_is_answered_with_its_first_receipt_and_audited_as_a_duplicate
);

const LIMIT: Duration = Duration::from_secs(40);

/// The value of the sample `name` (with its labels, as exposed), if present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse().unwrap()))
}

async fn metrics_of(peer: &Peer) -> String {
    let reply = send(client_for(Who::Nobody).get(peer.url("/metrics"))).await;
    assert_eq!(reply.status, 200);
    reply.text
}

/// Submits a referral to Nigeria at Italy's gateway; returns its id.
async fn submit_to_nigeria(federation: &Federation, key: &str) -> String {
    let referral = variant("returnee_hiv_reintegration", &format!("visibility-{key}"), None);
    let reply = federation.peer("ITA").submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    reply.body["referral_id"].as_str().unwrap().to_owned()
}

/// A transport whose every send fails as told.
pub(crate) struct Failing(pub(crate) SendFailure);

#[async_trait]
impl PeerTransport for Failing {
    async fn send(&self, _peer: CountryCode, _endpoint: &str, _packet: &str) -> Result<String, SendFailure> {
        Err(self.0.clone())
    }

    async fn send_batch(&self, _peer: CountryCode, _endpoint: &str, _packets: &[&str]) -> Result<referral_gateway::wire::BatchAnswer, SendFailure> {
        Err(self.0.clone())
    }
}

/// A case that must be sealed end to end (asylum-linked, going to the
/// person's origin state) waits for its organisation's key; counted under
/// its peer, its attempts, failures and expiry would tell whoever reads
/// `/metrics` that such a case is on its way to that country.
async fn a_case_waiting_for_its_organisations_key_is_counted_under_no_peer(backend: Backend) {
    use referral_gateway::crypto::jose_keys::{generate, KeyUse};
    let mut federation = Federation::start_with(backend, &["ITA", "NGA"], &["NGA"]).await;
    // Accepted while the health provider publishes a key, which it then withdraws before the delivery.
    let (from, until) = crate::peers::default_window();
    let key = referral_gateway::directory::published_key(&generate(KeyUse::Enc).unwrap(), from, until, KeyUse::Enc).unwrap();
    federation.organisation_keys.insert("nga-health-lagos".to_owned(), vec![key]);
    federation.publish().await;
    let mut referral = variant("returnee_hiv_reintegration", "visibility-withheld", None);
    referral["case"]["asylum"] = serde_json::json!({ "status": ["rejected_asylum_seeker"] });
    let reply = federation.peer("ITA").submit(Who::IomRome, &referral).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    federation.organisation_keys.clear();
    federation.publish().await;
    let gateway = Arc::clone(federation.peer("ITA").app().gateway());
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    assert_eq!(gateway.deliver_due(&real).await.unwrap().retrying, 1);
    let ita = federation.peer("ITA");
    assert_eq!(ita.text("SELECT last_error FROM outbox").await.as_deref(), Some("recipient-key-missing"));
    federation.clock.advance(chrono::Duration::days(8));
    assert_eq!(gateway.deliver_due(&real).await.unwrap().expired, 1);

    let metrics = metrics_of(ita).await;
    for (name, value) in [
        (r#"rgw_delivery_attempts_total{peer="withheld"}"#, 1.0),
        (r#"rgw_delivery_failures_total{peer="withheld",cause="recipient-key-missing"}"#, 1.0),
        (r#"rgw_delivery_expiries_total{peer="withheld"}"#, 1.0),
    ] {
        assert_eq!(sample(&metrics, name), Some(value), "{name} in\n{metrics}");
    }
    assert!(!metrics.contains(r#"peer="NGA""#), "the origin state is named:\n{metrics}");
}

/// Italy runs no outbox worker: the test drives each round by hand, over a
/// transport that fails as it chooses, then over the real one.
async fn delivery_is_counted_per_peer_with_causes_from_a_closed_list(backend: Backend) {
    let federation = Federation::start_with(backend, &["ITA", "NGA"], &["NGA"]).await;
    let ids = [submit_to_nigeria(&federation, "counted-1").await, submit_to_nigeria(&federation, "counted-2").await];
    let gateway = Arc::clone(federation.peer("ITA").app().gateway());

    // A code of the peer's invention must not become a label of its own.
    let invented: Arc<dyn PeerTransport> = Arc::new(Failing(SendFailure::Refused { code: "a-code-the-peer-made-up".to_owned() }));
    let round = gateway.deliver_due(&invented).await.unwrap();
    assert_eq!(round, DeliveryRound { claimed: 2, retrying: 2, ..DeliveryRound::default() });
    federation.clock.advance(chrono::Duration::minutes(1));
    let unreachable: Arc<dyn PeerTransport> = Arc::new(Failing(SendFailure::Unreachable { code: "peer-unreachable" }));
    let round = gateway.deliver_due(&unreachable).await.unwrap();
    assert_eq!(round, DeliveryRound { claimed: 2, retrying: 2, ..DeliveryRound::default() });
    federation.clock.advance(chrono::Duration::minutes(10));
    let real: Arc<dyn PeerTransport> = Arc::new(federation.peer_client("ITA", Duration::from_secs(5)));
    let round = gateway.deliver_due(&real).await.unwrap();
    assert_eq!(round, DeliveryRound { claimed: 2, delivered: 2, ..DeliveryRound::default() });
    for id in &ids {
        assert_eq!(status_of(federation.peer("ITA"), Who::IomRome, id).await, "delivered");
    }

    // One more, which fails once and then outlives the delivery window (7 days).
    let expiring = submit_to_nigeria(&federation, "counted-3").await;
    assert_eq!(gateway.deliver_due(&unreachable).await.unwrap().retrying, 1);
    federation.clock.advance(chrono::Duration::days(8));
    assert_eq!(gateway.deliver_due(&real).await.unwrap(), DeliveryRound { claimed: 1, expired: 1, ..DeliveryRound::default() });
    assert_eq!(status_of(federation.peer("ITA"), Who::IomRome, &expiring).await, "expired");

    let metrics = metrics_of(federation.peer("ITA")).await;
    let expected = [
        // 2 + 2 + 2 attempts at the first two, 1 at the third; its expiry is no attempt.
        (r#"rgw_delivery_attempts_total{peer="NGA"}"#, 7.0),
        (r#"rgw_delivery_retries_total{peer="NGA"}"#, 4.0),
        (r#"rgw_delivery_failures_total{peer="NGA",cause="other"}"#, 2.0),
        (r#"rgw_delivery_failures_total{peer="NGA",cause="peer-unreachable"}"#, 3.0),
        (r#"rgw_delivery_time_to_deliver_seconds_count{peer="NGA"}"#, 2.0),
        (r#"rgw_delivery_expiries_total{peer="NGA"}"#, 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(sample(&metrics, name), Some(value), "{name} in\n{metrics}");
    }
    // Measured by the gateway's clock from acceptance: the 11 minutes the test moved it, and the little that ran.
    let total = sample(&metrics, r#"rgw_delivery_time_to_deliver_seconds_sum{peer="NGA"}"#).unwrap();
    assert!((2.0 * 660.0..2.0 * 700.0).contains(&total), "{total} in\n{metrics}");
    assert!(!metrics.contains("a-code-the-peer-made-up"), "a peer's code became a label:\n{metrics}");
    for id in ids.iter().chain([&expiring]) {
        assert!(!metrics.contains(id.as_str()), "a referral id is in the metrics");
    }
    for value in personal_values() {
        assert!(!metrics.contains(&value), "a personal value is in the metrics");
    }
}

async fn a_redelivery_is_answered_with_its_first_receipt_and_audited_as_a_duplicate(backend: Backend) {
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submit_to_nigeria(&federation, "duplicate-1").await;
    let ita = federation.peer("ITA");
    wait_for("delivery", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;
    let nga = federation.peer("NGA");
    let received = "SELECT COUNT(*) FROM audit_log WHERE action = 'packet.receive' AND actor_subject = 'gateway:ITA'";
    assert_eq!(nga.count(&format!("{received} AND outcome = 'accepted'")).await, 1);
    assert_eq!(nga.count(&format!("{received} AND outcome = 'duplicate'")).await, 0);

    let packet = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    let first_receipt = ita.text(&format!("SELECT receipt FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    let endpoint = format!("https://127.0.0.1:{}", nga.app().federation_addr().unwrap().port());
    let client = federation.peer_client("ITA", Duration::from_secs(5));
    for _ in 0..2 {
        let again = client.send(CountryCode::parse("NGA").unwrap(), &endpoint, &packet).await.unwrap();
        assert_eq!(again, first_receipt);
    }
    // Taken once; each redelivery audited as such, with nothing of the packet.
    assert_eq!(nga.count("SELECT COUNT(*) FROM inbox").await, 1);
    assert_eq!(nga.count(&format!("{received} AND outcome = 'accepted'")).await, 1);
    assert_eq!(nga.count(&format!("{received} AND outcome = 'duplicate' AND referral_id IS NULL AND reasons = '[]'")).await, 2);
}

// The log capture is the thread's: the gateways run on the test's one thread.
mod inbound_federation_traffic_is_logged_and_counted_like_the_national_api {
    #[tokio::test(flavor = "current_thread")]
    async fn sqlite() {
        super::inbound_federation_traffic_is_logged_and_counted_like_the_national_api(crate::helpers::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        super::inbound_federation_traffic_is_logged_and_counted_like_the_national_api(crate::helpers::Backend::Postgres).await;
    }
}

async fn inbound_federation_traffic_is_logged_and_counted_like_the_national_api(backend: Backend) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().json().with_writer(logs.clone()).with_env_filter("referral_gateway=info").finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let federation = Federation::start(backend, &["ITA", "NGA"]).await;
    let id = submit_to_nigeria(&federation, "inbound-1").await;
    let ita = federation.peer("ITA");
    wait_for("delivery", LIMIT, || async { status_of(ita, Who::IomRome, &id).await == "delivered" }).await;

    // A tampered packet: refused by Nigeria's gateway.
    let packet = ita.text(&format!("SELECT packet FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    let mut parts: Vec<String> = packet.split('.').map(str::to_owned).collect();
    let flipped = if parts[3].starts_with('A') { "B" } else { "A" };
    parts[3] = format!("{flipped}{}", &parts[3][1..]);
    let nga = federation.peer("NGA");
    let endpoint = format!("https://127.0.0.1:{}", nga.app().federation_addr().unwrap().port());
    let refused = federation.peer_client("ITA", Duration::from_secs(5)).send(CountryCode::parse("NGA").unwrap(), &endpoint, &parts.join(".")).await.unwrap_err();
    assert_eq!(refused, SendFailure::Refused { code: "packet-undecryptable".to_owned() });

    let metrics = metrics_of(nga).await;
    for (name, value) in [
        (r#"rgw_http_requests_total{method="POST",route="/federation/v1/packets",status="200"}"#, 1.0),
        (r#"rgw_http_requests_total{method="POST",route="/federation/v1/packets",status="422"}"#, 1.0),
        (r#"rgw_http_request_duration_seconds_count{route="/federation/v1/packets"}"#, 2.0),
    ] {
        assert_eq!(sample(&metrics, name), Some(value), "{name} in\n{metrics}");
    }

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let federation_requests: Vec<&Value> =
        lines.iter().filter(|e| e["fields"]["message"] == "request" && e["fields"]["listener"] == "federation").collect();
    let mut seen: Vec<(String, u64, String)> = federation_requests
        .iter()
        .map(|e| {
            let fields = &e["fields"];
            (fields["route"].as_str().unwrap().to_owned(), fields["status"].as_u64().unwrap(), fields["peer"].as_str().unwrap().to_owned())
        })
        .collect();
    seen.sort();
    let packets = "/federation/v1/packets".to_owned();
    assert_eq!(seen, [(packets.clone(), 200, "ITA".to_owned()), (packets, 422, "ITA".to_owned())], "{text}");
    // The national API's lines say which listener they come from too.
    assert!(lines.iter().any(|e| e["fields"]["message"] == "request" && e["fields"]["listener"] == "api"), "{text}");
    // Ids and outcomes only: nothing of the packet, the case or the person.
    let packet_id = ita.text(&format!("SELECT packet_id FROM outbox WHERE referral_id = '{id}'")).await.unwrap();
    for part in packet.split('.').filter(|part| part.len() > 16).chain([packet_id.as_str()]) {
        assert!(!text.contains(part), "the packet is in the logs");
    }
    for value in personal_values() {
        assert!(!text.contains(&value), "a personal value is in the logs");
    }
}

on_both_backends!(a_gateway_logging_to_a_pipe_writes_no_colour_no_sql_and_no_notices);

/// The text without its ANSI escape sequences (`ESC [ ... letter`).
fn without_escapes(text: &str) -> String {
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The real binary, its text logs at the most verbose level going to a
/// pipe: no colour escapes, no SQL from sqlx, and on PostgreSQL none of the
/// NOTICEs of `CREATE ... IF NOT EXISTS` (the schemas exist already, as at
/// every start but the first).
async fn a_gateway_logging_to_a_pipe_writes_no_colour_no_sql_and_no_notices(backend: Backend) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let (config_path, schema) = write_config(dir.path(), backend, "[log]\nlevel = \"trace\"\nformat = \"text\"\n");
    if let Some(schema) = &schema {
        let pool = sqlx::PgPool::connect(POSTGRES_URL).await.unwrap();
        for name in [schema.clone(), format!("{schema}_case_keys")] {
            sqlx::query(&format!("CREATE SCHEMA \"{name}\"")).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    let reader = {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let plain = without_escapes(&line);
                if plain.contains("gateway listening")
                    && let Some(address) = plain.split_whitespace().find_map(|field| field.strip_prefix("local_addr="))
                {
                    let _ = address_tx.send(address.to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        })
    };
    let Ok(address) = address_rx.recv_timeout(Duration::from_secs(60)) else {
        crate::logs::stop(&mut child.0);
        panic!("the gateway did not start:\n{}", lines.lock().unwrap().join("\n"));
    };
    let port = address.rsplit(':').next().unwrap();
    for path in ["/healthz", "/readyz"] {
        let reply = send(client_for(Who::Nobody).get(format!("https://localhost:{port}{path}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    crate::logs::stop(&mut child.0);
    reader.join().unwrap();

    let lines = lines.lock().unwrap().clone();
    let output = lines.join("\n");
    assert!(lines.iter().any(|line| without_escapes(line).contains(" request ")), "no request line:\n{output}");
    if let Some(line) = lines.iter().find(|line| line.contains('\u{1b}')) {
        panic!("an ANSI escape in logs written to a pipe: {line:?}");
    }
    if let Some(line) = lines.iter().find(|line| line.contains("sqlx::query")) {
        panic!("sqlx logged a statement: {line}");
    }
    if let Some(line) = lines.iter().find(|line| line.contains("sqlx::postgres::notice") || line.contains("already exists, skipping")) {
        panic!("a PostgreSQL notice was logged: {line}");
    }
}

/// Every PostgreSQL pool of the gateway (the store's and the case-key
/// store's) connects with its sessions quiet (warnings and errors only)
/// and bounded: a statement stops a little after the gateway's own
/// deadline, and a transaction a client left idle ends with its locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_are_quiet_and_end_what_a_client_abandons() {
    use referral_gateway::config::DatabaseConfig;
    use referral_gateway::store::case_keys::PostgresCaseKeys;
    use referral_gateway::store::{Connecting, PostgresStore};

    let schema = format!("rgwtest_{}_sessions", std::process::id());
    let config = DatabaseConfig {
        url: POSTGRES_URL.to_owned(),
        schema: Some(schema.clone()),
        statement_timeout_millis: 2500,
        ..DatabaseConfig::default()
    };
    let store = PostgresStore::open(&config.url, Some(&schema), &Connecting::from_config(&config)).await.unwrap();
    let keys = PostgresCaseKeys::open(&config.url, &format!("{schema}_case_keys"), &config).await.unwrap();
    for (name, pool) in [("store", store.pool()), ("case keys", keys.pool())] {
        for (setting, expected) in [("client_min_messages", "warning"), ("idle_in_transaction_session_timeout", "10s"), ("statement_timeout", "3500ms")] {
            // Through every connection the pool holds, the one the migrations ran on included.
            let mut held = Vec::new();
            for _ in 0..pool.size().max(1) {
                held.push(pool.acquire().await.unwrap());
            }
            for connection in &mut held {
                let (value,): (String,) = sqlx::query_as(&format!("SHOW {setting}")).fetch_one(&mut **connection).await.unwrap();
                assert_eq!(value, expected, "{setting} on the {name}'s pool");
            }
        }
    }
    let admin = sqlx::PgPool::connect(POSTGRES_URL).await.unwrap();
    for name in [schema.clone(), format!("{schema}_case_keys")] {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).execute(&admin).await.unwrap();
    }
}
