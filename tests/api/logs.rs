//! The real binary's logs, at the most verbose level, over a full run: they
//! describe every request and never carry a personal value or a subject
//! reference.
//!
//! The child process runs on the machine's clock, as `serve` does: the test
//! reads the child's time from its `Date` header, never the clock itself,
//! and moves the fixtures to that day, so that the allowed path (sealing,
//! the outbox) is logged on any date.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use referral_gateway::demo::fixtures::{days_since_written, move_dates};

use crate::helpers::{client_for, fixture, personal_values, personal_values_of, send, subject_refs, write_config, Backend, Reply, Who, FIXTURES};

/// Collects a pipe's lines; the first line naming the listening address is also sent on `address`.
fn collect(pipe: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>, address: mpsc::Sender<String>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["fields"]["message"] == "gateway listening"
                && let Some(addr) = event["fields"]["local_addr"].as_str()
            {
                let _ = address.send(addr.to_owned());
            }
            lines.lock().unwrap().push(line);
        }
    })
}

/// Asks the child to stop (SIGTERM), and kills it if it does not.
pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The `serve` child, killed if the test panics before stopping it: a child
/// left running holds the test's pipes, and whatever waits on them (cargo,
/// faketime) would wait for ever.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Gateway {
    base: String,
    requests: usize,
    /// From the fixtures' date to the child's.
    moved_by: chrono::Duration,
}

impl Gateway {
    /// Reads the child's time from its answer's `Date` header and moves the fixtures to its day.
    async fn take_the_childs_date(&mut self) {
        let response = client_for(Who::Nobody).get(format!("{}/healthz", self.base)).send().await.unwrap();
        self.requests += 1;
        let date = response.headers().get("date").expect("the gateway sends a Date header").to_str().unwrap();
        let now = chrono::DateTime::parse_from_rfc2822(date).unwrap().with_timezone(&chrono::Utc);
        self.moved_by = days_since_written(now);
    }

    /// The fixture `name`, its dates moved to the child's day.
    fn fixture(&self, name: &str) -> Value {
        let mut referral = fixture(name);
        move_dates(&mut referral, self.moved_by);
        referral
    }

    async fn call(&mut self, who: Who, method: reqwest::Method, path: &str, body: Option<Body>) -> Reply {
        let mut request = client_for(who).request(method, format!("{}{path}", self.base));
        match body {
            Some(Body::Json(value)) => request = request.json(&value),
            Some(Body::Raw(content_type, bytes)) => request = request.header("content-type", content_type).body(bytes),
            None => {}
        }
        self.requests += 1;
        send(request).await
    }

    async fn submit(&mut self, who: Who, referral: &Value) -> Reply {
        self.call(who, reqwest::Method::POST, "/v1/referrals", Some(Body::Json(referral.clone()))).await
    }

    async fn get(&mut self, who: Who, path: &str) -> Reply {
        self.call(who, reqwest::Method::GET, path, None).await
    }
}

enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

/// A full run against the gateway: submissions (allowed, denied, replayed,
/// conflicting, bad), reads, queries and refusals.
async fn full_run(gateway: &mut Gateway) {
    use reqwest::Method;
    gateway.take_the_childs_date().await;
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    for name in FIXTURES {
        let reply = gateway.submit(Who::IomRome, &gateway.fixture(name)).await;
        statuses.push(reply.status);
        if let Some(id) = reply.body["referral_id"].as_str() {
            ids.push(id.to_owned());
        }
    }
    // As at the fixture time: some allowed, the one to an origin state's immigration denied.
    assert!(statuses.contains(&202) && statuses.contains(&422), "{statuses:?}");
    assert!(statuses.iter().all(|status| [202, 422].contains(status)), "{statuses:?}");
    let first = gateway.fixture(FIXTURES[0]);
    let replay = gateway.submit(Who::IomRome, &first).await;
    assert!([202, 400, 422].contains(&replay.status));
    let mut changed = first.clone();
    changed["purpose"] = json!("return");
    let conflict = gateway.submit(Who::IomRome, &changed).await;
    assert!([409, 400].contains(&conflict.status), "{}", conflict.text);

    // Bad inputs that hold personal values.
    let given_names = first["case"]["identity"]["given_names"].as_str().unwrap().to_owned();
    let mut unknown = first.clone();
    unknown["nickname"] = json!(given_names);
    unknown["case"]["identity"]["nickname"] = json!(given_names);
    assert_eq!(gateway.submit(Who::IomRome, &unknown).await.status, 400);
    let malformed = format!(r#"{{"case": {{"identity": {{"given_names": "{given_names}" "#).into_bytes();
    let reply = gateway.call(Who::IomRome, Method::POST, "/v1/referrals", Some(Body::Raw("application/json", malformed))).await;
    assert_eq!(reply.status, 400);
    let mut duplicated = serde_json::to_string(&first).unwrap();
    duplicated.insert_str(1, &format!(r#""{given_names}":1,"{given_names}":2,"#));
    let reply = gateway.call(Who::IomRome, Method::POST, "/v1/referrals", Some(Body::Raw("application/json", duplicated.into_bytes()))).await;
    assert_eq!(reply.status, 400);
    let mut not_utf8 = serde_json::to_vec(&first).unwrap();
    not_utf8.push(0xff);
    let reply = gateway.call(Who::IomRome, Method::POST, "/v1/referrals", Some(Body::Raw("application/json", not_utf8))).await;
    assert_eq!(reply.status, 400);
    let mut oversized = serde_json::to_vec(&first).unwrap();
    oversized.resize(70_000, b' ');
    let reply = gateway.call(Who::IomRome, Method::POST, "/v1/referrals", Some(Body::Raw("application/json", oversized))).await;
    assert_eq!(reply.status, 413);
    let plain = serde_json::to_vec(&first).unwrap();
    let reply = gateway.call(Who::IomRome, Method::POST, "/v1/referrals", Some(Body::Raw("text/plain", plain))).await;
    assert_eq!(reply.status, 415);

    // Reads and queries.
    for id in &ids {
        assert_eq!(gateway.get(Who::IomRome, &format!("/v1/referrals/{id}")).await.status, 200);
    }
    assert_eq!(gateway.get(Who::IomRome, "/v1/referrals/no-such-referral").await.status, 404);
    for subject_ref in subject_refs() {
        let reply = gateway.get(Who::Dpo, &format!("/v1/disclosures?subject_ref={subject_ref}")).await;
        assert_eq!(reply.status, 200);
        let reply = gateway.get(Who::Auditor, &format!("/v1/audit?subject_ref={subject_ref}")).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(gateway.get(Who::Dpo, "/v1/audit").await.status, 200);
    assert_eq!(gateway.get(Who::Dpo, "/v1/audit?from=yesterday").await.status, 400);
    assert_eq!(gateway.get(Who::Dpo, "/v1/policies").await.status, 200);
    let simulation = json!({ "referral": first, "to": "nga-employment-service" });
    let reply = gateway.call(Who::Dpo, Method::POST, "/v1/policies/simulate", Some(Body::Json(simulation))).await;
    assert!([200, 400].contains(&reply.status), "{}", reply.text);
    let mut bad_simulation = json!({ "referral": first });
    bad_simulation["referral"]["case"]["identity"]["nickname"] = json!(given_names);
    let reply = gateway.call(Who::Dpo, Method::POST, "/v1/policies/simulate", Some(Body::Json(bad_simulation))).await;
    assert_eq!(reply.status, 400);

    // Refusals.
    let second = gateway.fixture(FIXTURES[1]);
    assert_eq!(gateway.submit(Who::Stranger, &second).await.status, 401);
    assert_eq!(gateway.submit(Who::Recipient, &second).await.status, 403);
    assert_eq!(gateway.submit(Who::Foreign, &second).await.status, 403);
    assert_eq!(gateway.get(Who::Nobody, "/v1/audit").await.status, 401);
    assert_eq!(gateway.get(Who::IomRome, "/v1/audit").await.status, 403);
    assert_eq!(gateway.get(Who::Nobody, "/v1/nothing").await.status, 404);
    assert_eq!(gateway.get(Who::Nobody, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_requests_and_nothing_personal() {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, _) = write_config(dir.path(), Backend::Sqlite, "[log]\nlevel = \"trace\"\nformat = \"json\"\n");
    let mut child = Running(Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = mpsc::channel();
    let readers = [
        collect(child.0.stdout.take().unwrap(), Arc::clone(&lines), address_tx.clone()),
        collect(child.0.stderr.take().unwrap(), Arc::clone(&lines), address_tx),
    ];
    let address = match address_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(address) => address,
        Err(_) => {
            stop(&mut child.0);
            panic!("the gateway did not start:\n{}", lines.lock().unwrap().join("\n"));
        }
    };
    let port = address.rsplit(':').next().unwrap();
    let mut gateway = Gateway { base: format!("https://localhost:{port}"), requests: 0, moved_by: chrono::Duration::zero() };

    full_run(&mut gateway).await;
    // Plain HTTP on the TLS port: the failed handshake is logged at debug
    // (sqlx, which logged every statement at debug, no longer logs any).
    // The connection closes once the gateway has given it up, and logged it.
    let mut plain = tokio::net::TcpStream::connect(&address).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let _ = plain.read_to_end(&mut Vec::new()).await;

    stop(&mut child.0);
    for reader in readers {
        reader.join().unwrap();
    }
    let lines = lines.lock().unwrap().clone();
    let output = lines.join("\n");
    assert!(!output.trim().is_empty());
    let events: Vec<Value> = lines.iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert_eq!(events.len(), lines.len(), "every line is a JSON event");
    assert!(events.iter().any(|e| e["level"] == "TRACE" || e["level"] == "DEBUG"), "the level is as configured");

    // One "request" line per request, naming route templates and statuses.
    let requests: Vec<&Value> = events.iter().filter(|e| e["fields"]["message"] == "request").collect();
    assert_eq!(requests.len(), gateway.requests, "one request line per request");
    let routes: std::collections::BTreeSet<&str> = requests.iter().filter_map(|e| e["fields"]["route"].as_str()).collect();
    for route in ["/v1/referrals", "/v1/referrals/{id}", "/v1/audit", "/v1/disclosures", "/v1/policies/simulate", "unmatched"] {
        assert!(routes.contains(route), "no request line for {route}: {routes:?}");
    }
    let statuses: std::collections::BTreeSet<u64> = requests.iter().filter_map(|e| e["fields"]["status"].as_u64()).collect();
    for status in [200, 400, 401, 403, 404, 413, 415] {
        assert!(statuses.contains(&status), "no request line with status {status}: {statuses:?}");
    }

    // Nothing personal, at any level. A failure shows the line with the value blanked out.
    let moved = personal_values_of(FIXTURES.iter().map(|name| gateway.fixture(name)));
    for value in personal_values().into_iter().chain(moved).chain(subject_refs()) {
        if let Some(line) = lines.iter().find(|l| l.contains(&value)) {
            panic!("a personal value or subject reference is in the logs: {}", line.replace(&value, "<REDACTED>"));
        }
    }
}
