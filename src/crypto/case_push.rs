//! A case pushed to a recipient organisation's webhook, signed (JWS, ES256)
//! by the gateway that forwards it, so that the organisation can check it
//! came from its gateway unchanged: against that gateway's signing key in
//! the federation directory. TLS protects it on the way; the signature
//! makes it provable afterwards.

use chrono::{DateTime, Utc};
use josekit::jws::{JwsHeader, JwsVerifier};
use serde_json::Value;

use super::jose_keys::{unverified_kid, SigningKey, SIGNING_ALG};
use super::packet::SignerDirectory;
use crate::domain::CountryCode;

/// `typ` of a pushed case: it can pass for no packet, receipt or directory.
pub const CASE_JWS_TYPE: &str = "rgw-case+jws";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CasePushError {
    #[error("the case cannot be signed: {0}")]
    Sign(String),
    #[error("the case is signed by a key that no member gateway publishes as valid")]
    UnknownSigner,
    #[error("the case's signature does not verify")]
    BadSignature,
    #[error("the case is signed by another gateway than the recipient's")]
    WrongGateway,
}

pub fn sign(document: &impl serde::Serialize, signer: &SigningKey) -> Result<String, CasePushError> {
    let payload = serde_json::to_vec(document).map_err(|e| CasePushError::Sign(e.to_string()))?;
    let mut header = JwsHeader::new();
    header.set_token_type(CASE_JWS_TYPE);
    header.set_key_id(signer.kid());
    josekit::jws::serialize_compact(&payload, &header, signer.signer()).map_err(|e| CasePushError::Sign(e.to_string()))
}

/// What a recipient does with a push: checks that `gateway` (its own
/// country's) signed it with a key the directory lists, and reads it.
pub fn verify(jws: &str, directory: &dyn SignerDirectory, now: DateTime<Utc>, gateway: CountryCode) -> Result<Value, CasePushError> {
    let kid = unverified_kid(jws.as_bytes()).ok_or(CasePushError::UnknownSigner)?;
    let signer = directory.signer(&kid, now).ok_or(CasePushError::UnknownSigner)?;
    if signer.country != gateway || !signer.active {
        return Err(CasePushError::WrongGateway);
    }
    let (payload, _) = josekit::jws::deserialize_compact_with_selector(jws, |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG) && header.token_type() == Some(CASE_JWS_TYPE) && header.key_id() == Some(kid.as_str()))
            .then_some(signer.key.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| CasePushError::BadSignature)?;
    serde_json::from_slice(&payload).map_err(|_| CasePushError::BadSignature)
}
