//! The federation listener's routes: member gateways post sealed packets
//! and get a signed receipt. Served on its own port, behind mutual TLS that
//! admits active members only (`federation::tls::server_config`); nothing
//! of the national API is reachable there.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;

use super::extract::ConnectionInfo;
use super::metrics::{track_federation, FederationTracking, Metrics};
use super::problem::Problem;
use crate::app::Gateway;
use crate::wire::{
    FailureCode, PacketBatch, BATCH_ENVELOPE_BYTES, JOSE_MEDIA_TYPE, MATCH_FOUND_PATH, MATCH_QUERY_PATH, MAX_BATCH_PACKETS, MAX_MATCH_REQUEST_BYTES,
    PACKETS_PATH, PACKET_BATCHES_PATH,
};
use crate::federation::tls::Members;

/// The listener's routes, each request logged and counted into `metrics`
/// as the national API's are.
pub fn router(gateway: Arc<Gateway>, metrics: Arc<Metrics>) -> Router {
    let tracking = FederationTracking { metrics, gateway: Arc::clone(&gateway) };
    Router::new()
        .route(PACKETS_PATH, post(receive_packet).fallback(|| async { Problem::method_not_allowed() }))
        .route(PACKET_BATCHES_PATH, post(receive_batch).fallback(|| async { Problem::method_not_allowed() }))
        .route(MATCH_QUERY_PATH, post(answer_match_query).fallback(|| async { Problem::method_not_allowed() }))
        .route(MATCH_FOUND_PATH, post(match_found).fallback(|| async { Problem::method_not_allowed() }))
        .fallback(|| async { Problem::not_found() })
        .layer(axum::middleware::from_fn(super::head_limits::enforce))
        .layer(axum::middleware::from_fn_with_state(tracking, track_federation))
        .with_state(gateway)
}

/// The member gateway on the other end of the connection. The handshake
/// admitted an active member, but a kept-alive connection may outlive its
/// membership, so the directory in force is asked again.
fn peer_of(gateway: &Gateway, connection: &ConnectionInfo) -> Result<crate::domain::CountryCode, Problem> {
    connection.spki_pin.as_deref().and_then(|pin| gateway.active_member_by_pin(pin)).ok_or_else(|| {
        Problem::new(StatusCode::FORBIDDEN, FailureCode::PeerNotMember.as_str(), "Not a member", "The connection's certificate is not an active member's.")
    })
}

/// A JSON body of at most [`MAX_MATCH_REQUEST_BYTES`], or the problem to answer.
async fn match_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Problem> {
    let malformed = || Problem::from(crate::app::AppError::MatchRefused(crate::app::matching::MatchRefusal::Malformed));
    let bytes = axum::body::to_bytes(body, MAX_MATCH_REQUEST_BYTES).await.map_err(|error| {
        let error = error.into_inner();
        if let Some(stopped) = super::body_guard::BodyReadError::find(error.as_ref()) {
            return Problem::body_read(stopped);
        }
        if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "match-query-too-large", "Match query too large", format!("A match query or notice takes at most {MAX_MATCH_REQUEST_BYTES} bytes."));
        }
        Problem::new(StatusCode::BAD_REQUEST, FailureCode::BodyUnreadable.as_str(), "Body unreadable", "The request body could not be read.")
    })?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// A peer's match query, answered at once (`app::matching::answering`).
async fn answer_match_query(State(gateway): State<Arc<Gateway>>, Extension(connection): Extension<ConnectionInfo>, body: Body) -> Result<Response, Problem> {
    let peer = peer_of(&gateway, &connection)?;
    let query = match_body(body).await?;
    let answer = gateway.answer_match_query(peer, query).await?;
    Ok(axum::Json(answer).into_response())
}

/// A peer tells of a match found: `202` whatever the handle.
async fn match_found(State(gateway): State<Arc<Gateway>>, Extension(connection): Extension<ConnectionInfo>, body: Body) -> Result<Response, Problem> {
    let peer = peer_of(&gateway, &connection)?;
    let notice = match_body(body).await?;
    gateway.match_found(peer, notice).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn receive_packet(
    State(gateway): State<Arc<Gateway>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let peer = peer_of(&gateway, &connection)?;
    require_media_type(&headers, JOSE_MEDIA_TYPE, "packet")?;
    let sealed = match read_packet(body, gateway.packet_limit()).await {
        Ok(sealed) => sealed,
        Err(PacketRead::TooLarge) => return Err(gateway.refuse_oversized_packet(peer).await.into()),
        Err(PacketRead::Failed(error)) => return Err(unreadable(error.as_ref())),
    };
    let receipt = gateway.receive_packet(&sealed, peer).await?;
    let mut response = (StatusCode::OK, receipt).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JOSE_MEDIA_TYPE));
    Ok(response)
}

/// The problem for a body not declared as `expected` (parameters after `;` ignored).
fn require_media_type(headers: &HeaderMap, expected: &str, what: &str) -> Result<(), Problem> {
    let media_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if media_type.split(';').next().map(str::trim) == Some(expected) {
        return Ok(());
    }
    Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, FailureCode::UnsupportedMediaType.as_str(), "Unsupported media type", format!("Send the {what} as {expected}.")))
}

/// The problem for a body that could not be read.
fn unreadable(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Problem {
    if let Some(stopped) = super::body_guard::BodyReadError::find(error) {
        return Problem::body_read(stopped);
    }
    Problem::new(StatusCode::BAD_REQUEST, FailureCode::BodyUnreadable.as_str(), "Body unreadable", "The request body could not be read.")
}

/// A batch of packets (protocol version 3, `federation.md` §5c): each
/// packet taken or refused on its own, one signed receipt for those taken.
/// Only a batch that cannot be read as one is refused whole.
async fn receive_batch(
    State(gateway): State<Arc<Gateway>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let peer = peer_of(&gateway, &connection)?;
    require_media_type(&headers, "application/json", "batch")?;
    let limit = gateway.packet_limit().saturating_add(BATCH_ENVELOPE_BYTES);
    let body = match read_packet(body, limit).await {
        Ok(body) => body,
        Err(PacketRead::TooLarge) => return Err(batch_too_large(&gateway, peer).await),
        Err(PacketRead::Failed(error)) => return Err(unreadable(error.as_ref())),
    };
    let batch = match serde_json::from_slice::<PacketBatch>(&body) {
        Ok(batch) if (1..=MAX_BATCH_PACKETS).contains(&batch.packets.len()) => batch,
        _ => {
            gateway.refuse_batch(peer, FailureCode::BatchMalformed).await?;
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                FailureCode::BatchMalformed.as_str(),
                "Batch malformed",
                format!("A batch is a JSON object whose only member, packets, lists 1 to {MAX_BATCH_PACKETS} sealed packets as strings."),
            ));
        }
    };
    // The packets' bytes together, not the JSON around them, are what the published limit bounds.
    if batch.packets.iter().map(String::len).fold(0usize, usize::saturating_add) > gateway.packet_limit() {
        return Err(batch_too_large(&gateway, peer).await);
    }
    let answer = gateway.receive_batch(batch.packets.into_iter().map(String::into_bytes).collect(), peer).await?;
    Ok(axum::Json(answer).into_response())
}

/// Audits and answers a batch whose packets together exceed the packet limit.
async fn batch_too_large(gateway: &Gateway, peer: crate::domain::CountryCode) -> Problem {
    if let Err(error) = gateway.refuse_batch(peer, FailureCode::BatchTooLarge).await {
        return error.into();
    }
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        FailureCode::BatchTooLarge.as_str(),
        "Batch too large",
        format!("The packets of a batch take at most {} bytes together, as a packet alone.", gateway.packet_limit()),
    )
}

/// How much of an oversized packet is read and dropped before the refusal
/// is answered: a sender still writing when the answer comes would see its
/// connection reset and record a transport failure, not the
/// `packet-too-large` that says why. Beyond this the connection is dropped.
const OVERSIZED_DRAIN_BYTES: usize = 32 * 1024 * 1024;

enum PacketRead {
    TooLarge,
    Failed(axum::BoxError),
}

/// The whole body if it holds at most `limit` bytes; otherwise reads on, up
/// to [`OVERSIZED_DRAIN_BYTES`], and says it was too large.
async fn read_packet(mut body: Body, limit: usize) -> Result<Vec<u8>, PacketRead> {
    let mut sealed = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| PacketRead::Failed(error.into_inner()))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            sealed.extend_from_slice(&data);
        } else if seen > OVERSIZED_DRAIN_BYTES {
            break;
        } else {
            // Nothing over the limit is kept.
            sealed = Vec::new();
        }
    }
    if seen > limit { Err(PacketRead::TooLarge) } else { Ok(sealed) }
}
