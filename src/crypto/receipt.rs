//! Signed receipts: the receiving gateway's proof that it took a packet
//! (non-repudiation). The sender checks the receipt against the packet it
//! sent (id and SHA-256 of the sealed bytes) and keeps it. A batch receipt
//! (protocol version 3, `federation.md` §5c) confirms every packet of one
//! request with one signature: it lists the SHA-256 of each packet taken,
//! and nothing else of them, so that the receipt each sender keeps with a
//! referral names no other packet than by a hash of its ciphertext.

use chrono::{DateTime, Utc};
use josekit::jws::{JwsHeader, JwsVerifier};
use serde::{Deserialize, Serialize};

use super::jose_keys::{SIGNING_ALG, SigningKey, unverified_kid};
use super::packet::SignerDirectory;
use crate::domain::CountryCode;

pub const RECEIPT_JWS_TYPE: &str = "rgw-receipt+jws";
/// The `typ` of a batch receipt: never taken for a receipt of one packet, nor the reverse.
pub const BATCH_RECEIPT_JWS_TYPE: &str = "rgw-batch-receipt+jws";

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

/// What a batch receipt confirms: the packets of one request that the
/// receiving gateway took (or had taken before), each by the SHA-256 of
/// its sealed bytes as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchReceiptClaims {
    /// Base64url SHA-256 of each packet taken, in the order of the request.
    pub packets_sha256: Vec<String>,
    pub received_at: DateTime<Utc>,
    /// The receiving gateway, which signs.
    pub issuer: CountryCode,
    /// The sending gateway.
    pub audience: CountryCode,
}

impl BatchReceiptClaims {
    /// Whether the receipt confirms the packet whose sealed bytes have this digest.
    pub fn confirms(&self, packet_sha256: &str) -> bool {
        self.packets_sha256.iter().any(|listed| listed == packet_sha256)
    }
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
    sign_typed(claims, RECEIPT_JWS_TYPE, signer)
}

pub fn sign_batch(claims: &BatchReceiptClaims, signer: &SigningKey) -> Result<String, ReceiptError> {
    sign_typed(claims, BATCH_RECEIPT_JWS_TYPE, signer)
}

fn sign_typed(claims: &impl Serialize, token_type: &str, signer: &SigningKey) -> Result<String, ReceiptError> {
    let payload = serde_json::to_vec(claims).map_err(|e| ReceiptError::Sign(e.to_string()))?;
    let mut header = JwsHeader::new();
    header.set_token_type(token_type);
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
    let (claims, signer): (ReceiptClaims, _) = verified(receipt, RECEIPT_JWS_TYPE, directory, now)?;
    check_parties(signer, claims.issuer, claims.audience, expected.from, expected.to)?;
    if claims.packet_id != expected.packet_id || claims.packet_sha256 != expected.packet_sha256 {
        return Err(ReceiptError::Mismatch);
    }
    Ok(claims)
}

/// Verifies a batch receipt against the trust list and the two gateways:
/// signed by `from`, to which the batch was sent, for `to`, this gateway.
/// Which packets it confirms is for the caller to ask
/// ([`BatchReceiptClaims::confirms`]), once per packet sent.
pub fn verify_batch(
    receipt: &str,
    directory: &dyn SignerDirectory,
    now: DateTime<Utc>,
    from: CountryCode,
    to: CountryCode,
) -> Result<BatchReceiptClaims, ReceiptError> {
    let (claims, signer): (BatchReceiptClaims, _) = verified(receipt, BATCH_RECEIPT_JWS_TYPE, directory, now)?;
    check_parties(signer, claims.issuer, claims.audience, from, to)?;
    Ok(claims)
}

/// The claims of a receipt of `token_type` whose signature verifies under a
/// key the trust list knows, with that key's holder and whether it is active.
fn verified<T: serde::de::DeserializeOwned>(
    receipt: &str,
    token_type: &str,
    directory: &dyn SignerDirectory,
    now: DateTime<Utc>,
) -> Result<(T, (CountryCode, bool)), ReceiptError> {
    let kid = unverified_kid(receipt.as_bytes()).ok_or(ReceiptError::UnknownSigner)?;
    let signer = directory.signer(&kid, now).ok_or(ReceiptError::UnknownSigner)?;
    let (payload, _) = josekit::jws::deserialize_compact_with_selector(receipt, |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG) && header.token_type() == Some(token_type) && header.key_id() == Some(kid.as_str()))
            .then_some(signer.key.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| ReceiptError::BadSignature)?;
    let claims = serde_json::from_slice(&payload).map_err(|_| ReceiptError::BadSignature)?;
    Ok((claims, (signer.country, signer.active)))
}

/// A verified receipt's signer must be active and be the gateway the packet
/// went to, which must name itself and this gateway in the claims.
fn check_parties(
    (signer_country, active): (CountryCode, bool),
    issuer: CountryCode,
    audience: CountryCode,
    from: CountryCode,
    to: CountryCode,
) -> Result<(), ReceiptError> {
    if !active {
        return Err(ReceiptError::SignerSuspended);
    }
    if signer_country != from || issuer != from || audience != to {
        return Err(ReceiptError::WrongIssuer);
    }
    Ok(())
}
