//! A case pushed to a recipient organisation's webhook, signed (JWS, ES256)
//! by the gateway that forwards it, so that the organisation can check it
//! came from its gateway unchanged: against that gateway's signing key in
//! the federation directory. TLS protects it on the way; the signature
//! makes it provable afterwards.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::jose_keys::SigningKey;
use super::packet::SignerDirectory;
use super::signed_json::{self, SignedJsonError};
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
    signed_json::sign(document, signer, CASE_JWS_TYPE).map_err(|e| CasePushError::Sign(e.to_string()))
}

/// What a recipient does with a push: checks that `gateway` (its own
/// country's) signed it with a key the directory lists, and reads it.
pub fn verify(jws: &str, directory: &dyn SignerDirectory, now: DateTime<Utc>, gateway: CountryCode) -> Result<Value, CasePushError> {
    let (signer, document) = signed_json::open(jws, directory, now, CASE_JWS_TYPE).map_err(|e| match e {
        SignedJsonError::Sign(reason) => CasePushError::Sign(reason),
        SignedJsonError::UnknownSigner => CasePushError::UnknownSigner,
        SignedJsonError::BadSignature => CasePushError::BadSignature,
    })?;
    if signer.country != gateway || !signer.active {
        return Err(CasePushError::WrongGateway);
    }
    Ok(document)
}
