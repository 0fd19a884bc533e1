//! Signed receipts: the receiving gateway's proof that it took a packet
//! (non-repudiation). The sender checks the receipt against the packet it
//! sent (id and SHA-256 of the sealed bytes) and keeps it.

use chrono::{DateTime, Utc};
use josekit::jws::{JwsHeader, JwsVerifier};
use serde::{Deserialize, Serialize};

use super::jose_keys::{SIGNING_ALG, SigningKey, unverified_kid};
use super::packet::SignerDirectory;
use crate::domain::CountryCode;

pub const RECEIPT_JWS_TYPE: &str = "rgw-receipt+jws";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptClaims {
    pub packet_id: String,
    /// SHA-256 of the sealed packet as received, base64url.
    pub packet_sha256: String,
    pub received_at: DateTime<Utc>,
    /// The receiving gateway, which signs.
    pub issuer: CountryCode,
    /// The sending gateway.
    pub audience: CountryCode,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt cannot be signed: {0}")]
    Sign(String),
    #[error("the receipt is signed by a key that no member gateway publishes as valid")]
    UnknownSigner,
    #[error("the receipt's signature does not verify")]
    BadSignature,
    #[error("the receipt is signed by a suspended gateway")]
    SignerSuspended,
    #[error("the receipt is not from the gateway the packet was sent to")]
    WrongIssuer,
    #[error("the receipt confirms another packet, or other bytes than were sent")]
    Mismatch,
}

pub fn sign(claims: &ReceiptClaims, signer: &SigningKey) -> Result<String, ReceiptError> {
    let payload = serde_json::to_vec(claims).map_err(|e| ReceiptError::Sign(e.to_string()))?;
    let mut header = JwsHeader::new();
    header.set_token_type(RECEIPT_JWS_TYPE);
    header.set_key_id(signer.kid());
    josekit::jws::serialize_compact(&payload, &header, signer.signer()).map_err(|e| ReceiptError::Sign(e.to_string()))
}

/// What the sender expects the receipt to confirm.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub packet_id: &'a str,
    pub packet_sha256: &'a str,
    /// The gateway the packet was sent to.
    pub from: CountryCode,
    /// This gateway.
    pub to: CountryCode,
}

/// Verifies `receipt` against the trust list and the packet that was sent.
pub fn verify(
    receipt: &str,
    directory: &dyn SignerDirectory,
    now: DateTime<Utc>,
    expected: &Expected<'_>,
) -> Result<ReceiptClaims, ReceiptError> {
    let kid = unverified_kid(receipt.as_bytes()).ok_or(ReceiptError::UnknownSigner)?;
    let signer = directory.signer(&kid, now).ok_or(ReceiptError::UnknownSigner)?;
    let (payload, _) = josekit::jws::deserialize_compact_with_selector(receipt, |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG) && header.token_type() == Some(RECEIPT_JWS_TYPE) && header.key_id() == Some(kid.as_str()))
            .then_some(signer.key.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| ReceiptError::BadSignature)?;
    let claims: ReceiptClaims = serde_json::from_slice(&payload).map_err(|_| ReceiptError::BadSignature)?;
    if !signer.active {
        return Err(ReceiptError::SignerSuspended);
    }
    if signer.country != expected.from || claims.issuer != expected.from || claims.audience != expected.to {
        return Err(ReceiptError::WrongIssuer);
    }
    if claims.packet_id != expected.packet_id || claims.packet_sha256 != expected.packet_sha256 {
        return Err(ReceiptError::Mismatch);
    }
    Ok(claims)
}
