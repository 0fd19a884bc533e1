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
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::extract::ConnectionInfo;
use super::problem::Problem;
use crate::app::inbox::MAX_PACKET_BYTES;
use crate::app::Gateway;
use crate::federation::client::{JOSE_MEDIA_TYPE, PACKETS_PATH};
use crate::federation::tls::Members;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(PACKETS_PATH, post(receive_packet).fallback(|| async { Problem::method_not_allowed() }))
        .fallback(|| async { Problem::not_found() })
        .with_state(gateway)
}

async fn receive_packet(
    State(gateway): State<Arc<Gateway>>,
    Extension(connection): Extension<ConnectionInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    // The handshake admitted an active member; a kept-alive connection may
    // outlive its membership, so the directory in force is asked again.
    let peer = connection.spki_pin.as_deref().and_then(|pin| gateway.active_member_by_pin(pin)).ok_or_else(|| {
        Problem::new(StatusCode::FORBIDDEN, "peer-not-member", "Not a member", "The connection's certificate is not an active member's.")
    })?;
    let media_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if media_type.split(';').next().map(str::trim) != Some(JOSE_MEDIA_TYPE) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the packet as application/jose.",
        ));
    }
    let sealed = match Limited::new(body, MAX_PACKET_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(gateway.refuse_oversized_packet(peer).await.into());
        }
        Err(error) => {
            if let Some(stopped) = super::body_guard::BodyReadError::find(error.as_ref()) {
                return Err(Problem::body_read(stopped));
            }
            return Err(Problem::new(StatusCode::BAD_REQUEST, "body-unreadable", "Body unreadable", "The request body could not be read."));
        }
    };
    let receipt = gateway.receive_packet(&sealed, peer).await?;
    let mut response = (StatusCode::OK, receipt).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JOSE_MEDIA_TYPE));
    Ok(response)
}
