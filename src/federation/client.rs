//! The peer client: posts sealed packets, alone or in batches, to member gateways over mutual
//! TLS 1.3, the server pinned through the directory in force at each
//! handshake, our federation certificate presented as the client's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::tls::{self, Members, PeerTlsError};
use crate::wire::{
    BatchAnswer, FailureCode, PacketBatch, JOSE_MEDIA_TYPE, MATCH_FOUND_PATH, MATCH_QUERY_PATH, MAX_BATCH_ANSWER_BYTES, MAX_MATCH_ANSWER_BYTES, PACKETS_PATH,
    PACKET_BATCHES_PATH,
};
use crate::app::matching::{MatchAnswer, MatchFoundNotice, MatchQuery, MatchTransport};
use crate::app::sending::delivery::{PeerTransport, SendFailure};
use crate::wire::PROBLEM_TYPE_BASE;
use crate::domain::CountryCode;

/// Largest receipt read from a peer.
const MAX_RECEIPT_BYTES: usize = 16 * 1024;

/// One HTTP client per peer (each pins that peer), made on first use.
pub struct PeerClient {
    members: Arc<dyn Members>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    timeout: Duration,
    clients: Mutex<HashMap<CountryCode, reqwest::Client>>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerClientError {
    #[error("{0}")]
    Tls(#[from] PeerTlsError),
    #[error("HTTP client: {0}")]
    Http(String),
}

impl PeerClient {
    pub fn new(members: Arc<dyn Members>, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>, timeout: Duration) -> Self {
        Self { members, chain, key, timeout, clients: Mutex::new(HashMap::new()) }
    }

    fn client_for(&self, peer: CountryCode) -> Result<reqwest::Client, PeerClientError> {
        let mut clients = match self.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(client) = clients.get(&peer) {
            return Ok(client.clone());
        }
        let config = tls::client_config(Arc::clone(&self.members), peer, self.chain.clone(), self.key.clone_key())?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            // Peers are reached at the endpoint the directory lists, never elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PeerClientError::Http(e.to_string()))?;
        clients.insert(peer, client.clone());
        Ok(client)
    }
}

#[async_trait]
impl PeerTransport for PeerClient {
    async fn send(&self, peer: CountryCode, endpoint: &str, packet: &str) -> Result<String, SendFailure> {
        let body = self.post_to_peer(peer, endpoint, PACKETS_PATH, JOSE_MEDIA_TYPE, packet.to_owned().into_bytes(), MAX_RECEIPT_BYTES).await?;
        String::from_utf8(body).map_err(|_| SendFailure::Refused { code: FailureCode::ReceiptMalformed.as_str().to_owned() })
    }

    async fn send_batch(&self, peer: CountryCode, endpoint: &str, packets: &[&str]) -> Result<BatchAnswer, SendFailure> {
        let malformed = || SendFailure::Refused { code: FailureCode::ReceiptMalformed.as_str().to_owned() };
        let batch = PacketBatch { packets: packets.iter().map(|packet| (*packet).to_owned()).collect() };
        let body = serde_json::to_vec(&batch).map_err(|_| malformed())?;
        let answer = self.post_to_peer(peer, endpoint, PACKET_BATCHES_PATH, "application/json", body, MAX_BATCH_ANSWER_BYTES).await?;
        serde_json::from_slice(&answer).map_err(|_| malformed())
    }
}

impl PeerClient {
    /// Posts a packet, or a batch, to `path` below the peer's endpoint; a
    /// `200`'s body (at most `limit` bytes), or the failure as a code only
    /// (`federation.md` §8): `5xx` and `429` as `peer-unavailable`, any
    /// other status as the code of our problem it carries or `http-<status>`.
    async fn post_to_peer(&self, peer: CountryCode, endpoint: &str, path: &str, media_type: &'static str, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, SendFailure> {
        let client = self.client_for(peer).map_err(|_| SendFailure::Unreachable { code: FailureCode::PeerTlsSetup.as_str() })?;
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        let response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .header(reqwest::header::ACCEPT, media_type)
            .body(body)
            .send()
            .await
            .map_err(|error| SendFailure::Unreachable { code: transport_code(&error) })?;
        let status = response.status();
        let body = read_up_to(response, limit).await?;
        if status == reqwest::StatusCode::OK {
            return Ok(body);
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(SendFailure::Unreachable { code: FailureCode::PeerUnavailable.as_str() });
        }
        Err(SendFailure::Refused { code: problem_code(&body).unwrap_or_else(|| format!("http-{}", status.as_u16())) })
    }
}

impl PeerClient {
    /// Posts `body` as JSON to `path` below the peer's endpoint; the answer's
    /// body (at most `limit` bytes) on a 2xx, the failure otherwise.
    async fn post_json(&self, peer: CountryCode, endpoint: &str, path: &str, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, SendFailure> {
        let client = self.client_for(peer).map_err(|_| SendFailure::Unreachable { code: FailureCode::PeerTlsSetup.as_str() })?;
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        let response = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| SendFailure::Unreachable { code: transport_code(&error) })?;
        let status = response.status();
        let body = read_up_to(response, limit).await?;
        if status.is_success() {
            return Ok(body);
        }
        if status.is_server_error() {
            return Err(SendFailure::Unreachable { code: FailureCode::PeerUnavailable.as_str() });
        }
        Err(SendFailure::Refused { code: problem_code(&body).unwrap_or_else(|| format!("http-{}", status.as_u16())) })
    }
}

#[async_trait]
impl MatchTransport for PeerClient {
    async fn ask(&self, peer: CountryCode, endpoint: &str, query: &MatchQuery) -> Result<MatchAnswer, SendFailure> {
        let body = serde_json::to_vec(query).map_err(|_| SendFailure::Refused { code: "match-query-unencodable".to_owned() })?;
        let answer = self.post_json(peer, endpoint, MATCH_QUERY_PATH, body, MAX_MATCH_ANSWER_BYTES).await?;
        serde_json::from_slice(&answer).map_err(|_| SendFailure::Refused { code: "match-answer-malformed".to_owned() })
    }

    async fn tell_found(&self, peer: CountryCode, endpoint: &str, notice: &MatchFoundNotice) -> Result<(), SendFailure> {
        let body = serde_json::to_vec(notice).map_err(|_| SendFailure::Refused { code: "match-notice-unencodable".to_owned() })?;
        self.post_json(peer, endpoint, MATCH_FOUND_PATH, body, MAX_RECEIPT_BYTES).await.map(|_| ())
    }
}

async fn read_up_to(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, SendFailure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| SendFailure::Unreachable { code: transport_code(&error) })? {
        if body.len() + chunk.len() > limit {
            return Err(SendFailure::Refused { code: FailureCode::ReceiptTooLarge.as_str().to_owned() });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The stable code of a problem+json answer: the last part of its `type`,
/// if it is one of ours and looks like a code (so nothing else is echoed).
fn problem_code(body: &[u8]) -> Option<String> {
    let problem: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = problem.get("type")?.as_str()?.strip_prefix(PROBLEM_TYPE_BASE)?;
    let looks_like_code = (1..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    looks_like_code.then(|| code.to_owned())
}

fn transport_code(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        FailureCode::PeerTimeout
    } else if error.is_connect() {
        FailureCode::PeerUnreachable
    } else {
        FailureCode::PeerTransport
    }
    .as_str()
}

#[cfg(test)]
mod tests {
    use super::problem_code;

    #[test]
    fn problem_codes_are_taken_only_from_our_problem_types() {
        let ours = br#"{"type": "https://referral-gateway.example/problems/packet-replayed", "status": 409}"#;
        assert_eq!(problem_code(ours).as_deref(), Some("packet-replayed"));
        assert_eq!(problem_code(br#"{"type": "https://elsewhere.example/x"}"#), None);
        assert_eq!(problem_code(br#"{"type": "https://referral-gateway.example/problems/Some Name"}"#), None);
        assert_eq!(problem_code(b"not json"), None);
    }
}
