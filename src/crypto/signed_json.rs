//! A JSON document signed (JWS, ES256, compact) by a member gateway with
//! its federation signing key, and checked against the key the directory
//! publishes for it. Each kind of document has its own `typ`, so that one
//! can never pass for another (a pushed case for statistics, say).

use chrono::{DateTime, Utc};
use josekit::jws::{JwsHeader, JwsVerifier};
use serde_json::Value;

use super::jose_keys::{unverified_kid, SigningKey, SIGNING_ALG};
use super::packet::{PublishedSigner, SignerDirectory};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedJsonError {
    #[error("the document cannot be signed: {0}")]
    Sign(String),
    #[error("the document is signed by a key that no member gateway publishes as valid")]
    UnknownSigner,
    #[error("the document's signature does not verify, or it is not of the expected type")]
    BadSignature,
}

/// `document` as JSON, signed by `signer` under the type `typ`.
pub fn sign(document: &impl serde::Serialize, signer: &SigningKey, typ: &str) -> Result<String, SignedJsonError> {
    let payload = serde_json::to_vec(document).map_err(|e| SignedJsonError::Sign(e.to_string()))?;
    let mut header = JwsHeader::new();
    header.set_token_type(typ);
    header.set_key_id(signer.kid());
    josekit::jws::serialize_compact(&payload, &header, signer.signer()).map_err(|e| SignedJsonError::Sign(e.to_string()))
}

/// The document `jws` holds, and who signed it: a key the directory lists
/// as valid at `at`, under the type `typ`. Which gateway may sign is the
/// caller's to check.
pub fn open(jws: &str, directory: &dyn SignerDirectory, at: DateTime<Utc>, typ: &str) -> Result<(PublishedSigner, Value), SignedJsonError> {
    let kid = unverified_kid(jws.as_bytes()).ok_or(SignedJsonError::UnknownSigner)?;
    let signer = directory.signer(&kid, at).ok_or(SignedJsonError::UnknownSigner)?;
    let (payload, _) = josekit::jws::deserialize_compact_with_selector(jws, |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG) && header.token_type() == Some(typ) && header.key_id() == Some(kid.as_str()))
            .then_some(signer.key.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| SignedJsonError::BadSignature)?;
    let document = serde_json::from_slice(&payload).map_err(|_| SignedJsonError::BadSignature)?;
    Ok((signer, document))
}
