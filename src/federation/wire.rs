//! What both sides of the federation endpoint agree on: the sending
//! gateway's client (`federation::client`) and the receiving gateway's
//! listener (`http::federation`) take these from here, so that neither can
//! change alone.

/// Where packets are posted, below a gateway's endpoint.
pub const PACKETS_PATH: &str = "/federation/v1/packets";
/// Media type of a compact JWE or JWS body: a packet, and the receipt that answers it.
pub const JOSE_MEDIA_TYPE: &str = "application/jose";
