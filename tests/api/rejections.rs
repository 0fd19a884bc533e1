//! What a raw client can do to the HTTP edge: broken chunked framing, a body
//! that stalls after its headers, more bodies in flight than allowed. Each is
//! answered with a problem, never held open or mislabelled. Nothing here is
//! stored, so SQLite is enough.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::helpers::{client_pem, spawn_app_configured, test_ca_pem, fixture_time, wait_for, Backend, TestApp, Who};

/// A TLS connection to the national API presenting `who`'s certificate.
async fn connect(app: &TestApp, who: Who) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(test_ca_pem().as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let pem = client_pem(who).unwrap().as_bytes();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem).map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_slice(pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = TcpStream::connect(app.app.local_addr()).await.unwrap();
    TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// Status and JSON body of the one response on `stream` (the request asked
/// to close the connection, so the response ends at end of stream).
async fn read_response(stream: &mut TlsStream<TcpStream>) -> (u16, String, Value) {
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once it has answered.
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_owned()))
        .unwrap_or_default();
    (status, content_type, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn problem_code(body: &Value) -> &str {
    body["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("")
}

fn head(extra: &str) -> String {
    format!("POST /v1/referrals HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_framing_is_a_malformed_body_not_too_large() {
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |_| {}).await;
    let mut stream = connect(&app, Who::IomRome).await;
    stream.write_all(format!("{}5\r\n{{\"a\":\r\nzz\r\n", head("Transfer-Encoding: chunked\r\n")).as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let (status, content_type, body) = read_response(&mut stream).await;
    assert_eq!((status, content_type.as_str()), (400, "application/problem+json"), "{body}");
    assert_eq!(problem_code(&body), "malformed-body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_after_the_configured_deadline() {
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |c| c.server.body_read_timeout_seconds = 1).await;
    let mut stream = connect(&app, Who::IomRome).await;
    // Headers promise 100 bytes; 10 come, then nothing.
    stream.write_all(format!("{}{{\"purpose\"", head("Content-Length: 100\r\n")).as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(30), read_response(&mut stream)).await;
    let (status, content_type, body) = answered.expect("a stalled body must be answered, not held open");
    assert_eq!((status, content_type.as_str()), (408, "application/problem+json"), "{body}");
    assert_eq!(problem_code(&body), "request-timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_cap_are_refused_503_with_retry_after() {
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |c| c.server.max_concurrent_bodies = 1).await;
    // One client holds the only slot with a body that never completes.
    let mut holder = connect(&app, Who::IomRome).await;
    holder.write_all(format!("{}{{", head("Content-Length: 100\r\n")).as_bytes()).await.unwrap();
    holder.flush().await.unwrap();
    // Once its body is being read, another body is refused at once.
    // The refusal's Retry-After header and body, once seen.
    type Refusal = (Option<String>, Value);
    let refused: Arc<std::sync::Mutex<Option<Refusal>>> = Arc::default();
    wait_for("a second body to be refused", Duration::from_secs(20), || {
        let request = app.request(Who::ItaNrm, reqwest::Method::POST, "/v1/referrals").header("content-type", "application/json").body("{}");
        let refused = Arc::clone(&refused);
        async move {
            let response = request.send().await.unwrap();
            if response.status().as_u16() != 503 {
                return false;
            }
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            *refused.lock().unwrap() = Some((retry_after, response.json().await.unwrap()));
            true
        }
    })
    .await;
    let (retry_after, body) = refused.lock().unwrap().take().unwrap();
    assert_eq!(problem_code(&body), "busy", "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()), "a 503 busy says when to retry");
    drop(holder);
    // The slot comes back when the holder goes away.
    wait_for("the slot to come back", Duration::from_secs(20), || async {
        app.post_raw(Who::ItaNrm, "/v1/referrals", "application/json", b"{}".to_vec()).await.status == 400
    })
    .await;
}

/// The answer to a bare `GET path` with `extra` header lines, as `who`.
async fn get_raw(app: &TestApp, who: Who, path: &str, extra: &str) -> (u16, String, Value) {
    let mut stream = connect(app, who).await;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n").as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_response(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_header_fields_are_a_431_problem() {
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |_| {}).await;
    // 500 fields (hyper alone answered a bare 431), one field of 100 KB,
    // and fields that are each small but 70 KB in all.
    let many: String = (0..500).map(|i| format!("x-field-{i}: 1\r\n")).collect();
    let one_large = format!("x-large: {}\r\n", "a".repeat(100 * 1024));
    let large_in_all: String = (0..70).map(|i| format!("x-part-{i}: {}\r\n", "b".repeat(1000))).collect();
    for (what, extra) in [("500 fields", many), ("one 100 KB field", one_large), ("70 KB in all", large_in_all)] {
        let (status, content_type, body) = get_raw(&app, Who::IomRome, "/v1/policies", &extra).await;
        assert_eq!((status, content_type.as_str()), (431, "application/problem+json"), "{what}: {body}");
        assert_eq!(problem_code(&body), "headers-too-large", "{what}");
    }
    // At each bound exactly, the request is served (the DPO's policies; IOM
    // Rome lacks the role, which is the answer that shows it got through);
    // one field or one byte more is refused. `get_raw` sends `Host:
    // localhost` and `Connection: close`: 2 fields, 17 + 19 bytes.
    let fields = |count: usize| -> String { (0..count).map(|i| format!("x-field-{i}: 1\r\n")).collect() };
    let bytes = |total: usize| -> String { format!("x-large: {}\r\n", "a".repeat(total - 17 - 19 - "x-large".len() - 4)) };
    for (what, extra, expected) in [
        ("100 fields", fields(98), 403),
        ("101 fields", fields(99), 431),
        ("65,536 bytes", bytes(65_536), 403),
        ("65,537 bytes", bytes(65_537), 431),
    ] {
        let (status, _, body) = get_raw(&app, Who::IomRome, "/v1/policies", &extra).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_does_not_percent_decode_to_utf8_is_a_problem_on_every_route() {
    let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |_| {}).await;
    let bad = "%FF%FEid";
    for (who, method, path) in [
        (Who::IomRome, "GET", format!("/v1/referrals/{bad}")),
        (Who::IomRome, "POST", format!("/v1/referrals/{bad}/consent-withdrawal")),
        (Who::Dpo, "GET", format!("/v1/subjects/{bad}/report")),
        (Who::Dpo, "POST", format!("/v1/subjects/{bad}/consent-withdrawal")),
        (Who::Recipient, "GET", format!("/v1/inbox/{bad}")),
        (Who::Recipient, "POST", format!("/v1/inbox/{bad}/ack")),
        (Who::Recipient, "POST", format!("/v1/inbox/{bad}/status")),
        (Who::Recipient, "POST", format!("/v1/inbox/{bad}/erasure-confirmed")),
    ] {
        let mut stream = connect(&app, who).await;
        let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        let (status, content_type, body) = read_response(&mut stream).await;
        assert_eq!((status, content_type.as_str()), (400, "application/problem+json"), "{method} {path}: {body}");
        assert_eq!(problem_code(&body), "invalid-request", "{method} {path}");
        assert_eq!(body["problems"][0]["field"], "(path)", "{method} {path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federation_listener_bounds_header_fields_alike() {
    use referral_gateway::wire::PACKETS_PATH;
    let federation = crate::peers::Federation::start(Backend::Sqlite, &["ITA", "GMB"]).await;
    // Italy's gateway as a member would connect (its federation identity);
    // the Gambian certificate is pinned by the real client, not checked here.
    let identity = federation.peer("ITA").app().gateway().federation_keys().unwrap().tls_identity_pem();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .build()
        .unwrap();
    let address = federation.peer("GMB").app().federation_addr().unwrap();
    let url = format!("https://localhost:{}{PACKETS_PATH}", address.port());
    let post = |fields: usize| {
        let mut request = client.post(&url).header("content-type", "application/jose").body("x.y.z");
        for i in 0..fields {
            request = request.header(format!("x-field-{i}"), "1");
        }
        request.send()
    };
    let refused = post(200).await.unwrap();
    assert_eq!(refused.status().as_u16(), 431);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(problem_code(&body), "headers-too-large", "{body}");
    // Within the bound, the packet itself is read (and refused as a packet).
    let read = post(10).await.unwrap();
    assert_ne!(read.status().as_u16(), 431);
}
