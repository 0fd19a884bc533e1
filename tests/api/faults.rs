//! Faults of the database answered as documented: 503 `unavailable` with
//! `Retry-After` while it cannot be reached (refused, locked, or a network
//! path that black-holes), within the configured deadlines, and nothing
//! already accepted lost when it comes back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{fixture_time, spawn_app_configured, variant, wait_for, Backend, TestApp, Who};

/// What the relay in front of PostgreSQL does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Forward,
    /// Closes every connection, old and new, at once.
    Refuse,
    /// Keeps connections open but passes nothing: packets dropped on the way.
    BlackHole,
}

/// A TCP relay to 127.0.0.1:5432 that the test switches.
struct Relay {
    addr: SocketAddr,
    path: watch::Sender<Path>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (path, watching) = watch::channel(Path::Forward);
        let task = tokio::spawn(async move {
            loop {
                if let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, watching.clone()));
                }
            }
        });
        Self { addr, path, task }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/test", self.addr)
    }

    fn set(&self, path: Path) {
        self.path.send_replace(path);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, mut path: watch::Receiver<Path>) {
    let now = *path.borrow_and_update();
    match now {
        Path::Refuse => return,
        Path::BlackHole => {
            let _ = path.wait_for(|p| *p != Path::BlackHole).await;
            return;
        }
        Path::Forward => {}
    }
    let Ok(mut server) = TcpStream::connect("127.0.0.1:5432").await else { return };
    let changed = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => None,
        changed = path.wait_for(|p| *p != Path::Forward) => changed.ok().map(|p| *p),
    };
    if changed == Some(Path::BlackHole) {
        // Both sockets stay open, unread, until the path is switched again.
        let _ = path.wait_for(|p| *p != Path::BlackHole).await;
    }
}

/// A gateway on PostgreSQL through `relay`, with short deadlines.
async fn spawn_behind(relay: &Relay) -> TestApp {
    let url = relay.url();
    spawn_app_configured(Backend::Postgres, fixture_time(), "", move |config| {
        config.database.url = url;
        config.database.acquire_timeout_millis = 800;
        config.database.statement_timeout_millis = 1000;
        config.database.readiness_timeout_millis = 300;
    })
    .await
}

/// Submits `referral`; answers the status, the body and the `Retry-After` header.
async fn submit(app: &TestApp, referral: &Value) -> (u16, Value, Option<String>) {
    let response = app.client(Who::IomRome).post(app.url("/v1/referrals")).json(referral).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == 503 {
        assert_eq!(content_type, "application/problem+json");
    }
    (status, body, retry_after)
}

fn problem_code(body: &Value) -> &str {
    body["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("")
}

/// The unreachable spell is over: the submission refused meanwhile is
/// accepted when retried, and the one accepted before is still there.
async fn nothing_lost(app: &TestApp, accepted_id: &str, refused: &Value) {
    wait_for("the database to be back", Duration::from_secs(20), || async { submit(app, refused).await.0 == 202 }).await;
    let followed = app.get(Who::IomRome, &format!("/v1/referrals/{accepted_id}")).await;
    assert_eq!(followed.status, 200, "{}", followed.text);
    assert_eq!(followed.body["status"], "queued");
    assert_eq!(app.count("referrals").await, 2);
    assert_eq!(app.get(Who::Nobody, "/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_connections_answers_503_unavailable_and_loses_nothing() {
    let relay = Relay::start().await;
    let app = spawn_behind(&relay).await;
    let (status, accepted, _) = submit(&app, &variant("rejected_asylum_avr", "fault-0001", None)).await;
    assert_eq!(status, 202, "{accepted}");
    let accepted_id = accepted["referral_id"].as_str().unwrap().to_owned();

    relay.set(Path::Refuse);
    let refused = variant("rejected_asylum_avr", "fault-0002", None);
    let (status, body, retry_after) = submit(&app, &refused).await;
    assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s > 0)), "a 503 says when to retry");
    assert_eq!(app.get(Who::Nobody, "/readyz").await.status, 503);

    relay.set(Path::Forward);
    nothing_lost(&app, &accepted_id, &refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_fails_readiness_and_submissions_within_their_deadlines() {
    let relay = Relay::start().await;
    let app = spawn_behind(&relay).await;
    let (status, accepted, _) = submit(&app, &variant("rejected_asylum_avr", "hole-0001", None)).await;
    assert_eq!(status, 202, "{accepted}");
    let accepted_id = accepted["referral_id"].as_str().unwrap().to_owned();

    relay.set(Path::BlackHole);
    // Deadlines of 0.3 s (readiness) and 1 s (statements); the bounds are
    // loose, far under the 10 s and 24 s a black hole took without them.
    let started = Instant::now();
    let ready = app.get(Who::Nobody, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["database"], "failing");
    assert!(started.elapsed() < Duration::from_secs(3), "readiness took {:?}", started.elapsed());

    let started = Instant::now();
    let refused = variant("rejected_asylum_avr", "hole-0002", None);
    let (status, body, retry_after) = submit(&app, &refused).await;
    assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{body}");
    assert!(retry_after.is_some());
    assert!(started.elapsed() < Duration::from_secs(5), "the submission took {:?}", started.elapsed());

    relay.set(Path::Forward);
    nothing_lost(&app, &accepted_id, &refused).await;
}

/// SQLite has no network; what makes it unable to serve is another process
/// holding its write lock (a backup, a maintenance command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_answers_503_unavailable_and_loses_nothing() {
    use sqlx::Connection;
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |config| {
        config.database.acquire_timeout_millis = 800;
        config.database.statement_timeout_millis = 1000;
    })
    .await;
    let (status, accepted, _) = submit(&app, &variant("rejected_asylum_avr", "lock-0001", None)).await;
    assert_eq!(status, 202, "{accepted}");
    let accepted_id = accepted["referral_id"].as_str().unwrap().to_owned();

    let path = referral_gateway::config::sqlite_path(&app.config.database.url).unwrap().to_owned();
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut holder).await.unwrap();
    let refused = variant("rejected_asylum_avr", "lock-0002", None);
    let started = Instant::now();
    let (status, body, retry_after) = submit(&app, &refused).await;
    assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{body}");
    assert!(retry_after.is_some());
    assert!(started.elapsed() < Duration::from_secs(5), "the submission took {:?}", started.elapsed());

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    nothing_lost(&app, &accepted_id, &refused).await;
}
