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
    /// As a PostgreSQL being stopped: open connections cut, new ones
    /// answered `FATAL 57P03 the database system is shutting down`.
    ShuttingDown,
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
        Path::ShuttingDown => return shutting_down(client).await,
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

/// Reads the client's start-up (after refusing TLS, if asked) and answers
/// it with the error a stopping PostgreSQL sends.
async fn shutting_down(mut client: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: u32 = 80_877_103;
    let mut length = [0u8; 4];
    if client.read_exact(&mut length).await.is_err() {
        return;
    }
    let mut message = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
    if client.read_exact(&mut message).await.is_err() {
        return;
    }
    if message.len() == 4 && u32::from_be_bytes(message[..4].try_into().unwrap()) == SSL_REQUEST {
        if client.write_all(b"N").await.is_err() || client.read_exact(&mut length).await.is_err() {
            return;
        }
        let mut startup = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
        if client.read_exact(&mut startup).await.is_err() {
            return;
        }
    }
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "57P03"), (b'M', "the database system is shutting down")] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut error = vec![b'E'];
    error.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    error.extend_from_slice(&fields);
    let _ = client.write_all(&error).await;
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

/// A session of its own holding the audit chain's head (`FOR UPDATE`): the
/// gateway's next write waits for it, mid-transaction. Returns the pool
/// (kept alive by the caller), the open transaction and the session's pid.
async fn hold_audit_head(app: &TestApp) -> (sqlx::PgPool, sqlx::Transaction<'static, sqlx::Postgres>, i32) {
    let holder = crate::helpers::pg_pool_in(app.schema.as_deref().expect("a PostgreSQL app")).await;
    let mut held = holder.begin().await.unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()").fetch_one(&mut *held).await.unwrap();
    sqlx::query("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE").execute(&mut *held).await.unwrap();
    (holder, held, pid)
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

    let refused = variant("rejected_asylum_avr", "fault-0002", None);
    for path in [Path::Refuse, Path::ShuttingDown] {
        relay.set(path);
        let (status, body, retry_after) = submit(&app, &refused).await;
        assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{path:?}: {body}");
        assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s > 0)), "a 503 says when to retry");
        assert_eq!(app.get(Who::Nobody, "/readyz").await.status, 503);
    }

    relay.set(Path::Forward);
    nothing_lost(&app, &accepted_id, &refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_fails_readiness_and_submissions_within_their_deadlines() {
    let relay = Relay::start().await;
    let url = relay.url();
    // The defaults' proportions, shortened: readiness well inside the time
    // to get a connection, which is inside a statement's deadline.
    let app = spawn_app_configured(Backend::Postgres, fixture_time(), "", move |config| {
        config.database.url = url;
        config.database.acquire_timeout_millis = 2000;
        config.database.statement_timeout_millis = 3000;
        config.database.readiness_timeout_millis = 300;
    })
    .await;
    let (status, accepted, _) = submit(&app, &variant("rejected_asylum_avr", "hole-0001", None)).await;
    assert_eq!(status, 202, "{accepted}");
    let accepted_id = accepted["referral_id"].as_str().unwrap().to_owned();

    // A statement under way when the path goes dark: its answer never comes.
    // (Held on the audit head by a direct session until the relay drops packets.)
    let (_holder, held, holder_pid) = hold_audit_head(&app).await;
    let in_flight = variant("rejected_asylum_avr", "hole-0002", None);
    let client = app.client(Who::IomRome).clone();
    let (url, body) = (app.url("/v1/referrals"), in_flight.clone());
    let started = Instant::now();
    let under_way = tokio::spawn(async move {
        let response = client.post(url).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
    });
    let admin = crate::helpers::pg_pool_in(app.schema.as_deref().unwrap()).await;
    wait_for("the submission's write to wait for the head", Duration::from_secs(20), || async {
        sqlx::query("SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))")
            .bind(holder_pid)
            .fetch_optional(&admin)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    relay.set(Path::BlackHole);
    held.rollback().await.unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(20), under_way).await.expect("the submission hangs").unwrap();
    assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "the submission took {:?}", started.elapsed());

    // Readiness answers on its own deadline (0.3 s), not after the 2 s to get a connection.
    let started = Instant::now();
    let ready = app.get(Who::Nobody, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.body["database"], "failing");
    assert!(started.elapsed() < Duration::from_millis(1500), "readiness took {:?}", started.elapsed());

    // A submission started in the dark fails within its deadline.
    let started = Instant::now();
    let refused = variant("rejected_asylum_avr", "hole-0003", None);
    let (status, body, retry_after) = submit(&app, &refused).await;
    assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{body}");
    assert!(retry_after.is_some());
    assert!(started.elapsed() < Duration::from_secs(5), "the submission took {:?}", started.elapsed());

    relay.set(Path::Forward);
    nothing_lost(&app, &accepted_id, &refused).await;
    // The write cut off in the dark may have committed meanwhile: retried with its key, it is there once.
    let (status, _, _) = submit(&app, &in_flight).await;
    assert_eq!(status, 202);
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

/// PostgreSQL stopped or restarted under load terminates the sessions in
/// use (`FATAL 57P01 terminating connection due to administrator command`):
/// a submission whose statement was under way is answered 503 too, not 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_terminated_under_a_submission_answers_503_unavailable_and_loses_nothing() {
    let app = spawn_app_configured(Backend::Postgres, fixture_time(), "", |config| {
        config.database.statement_timeout_millis = 30_000;
    })
    .await;
    let (status, accepted, _) = submit(&app, &variant("rejected_asylum_avr", "term-0001", None)).await;
    assert_eq!(status, 202, "{accepted}");
    let accepted_id = accepted["referral_id"].as_str().unwrap().to_owned();

    // Hold the audit chain's head: the gateway's next write waits for it, mid-transaction.
    let (_holder, held, holder_pid) = hold_audit_head(&app).await;
    let refused = variant("rejected_asylum_avr", "term-0002", None);
    let client = app.client(Who::IomRome).clone();
    let (url, body) = (app.url("/v1/referrals"), refused.clone());
    let under_way = tokio::spawn(async move {
        let response = client.post(url).json(&body).send().await.unwrap();
        let retry_after = response.headers().get("retry-after").is_some();
        (response.status().as_u16(), retry_after, response.json::<Value>().await.unwrap_or(Value::Null))
    });
    let admin = crate::helpers::pg_pool_in(app.schema.as_deref().unwrap()).await;
    let waiting = || async {
        sqlx::query_as::<_, (i32,)>("SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))")
            .bind(holder_pid)
            .fetch_optional(&admin)
            .await
            .unwrap()
    };
    wait_for("the submission's write to wait for the head", Duration::from_secs(20), || async { waiting().await.is_some() }).await;
    let (waiting_pid,) = waiting().await.unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)").bind(waiting_pid).execute(&admin).await.unwrap();

    let (status, retry_after, body) = under_way.await.unwrap();
    assert_eq!((status, problem_code(&body)), (503, "unavailable"), "{body}");
    assert!(retry_after, "a 503 says when to retry");
    held.rollback().await.unwrap();
    nothing_lost(&app, &accepted_id, &refused).await;
}
