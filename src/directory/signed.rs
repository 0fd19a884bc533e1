//! The directory as the coordinator publishes it: a compact JWS (ES256) over
//! the directory JSON, by the federation coordinator's key. A gateway trusts
//! nothing in it before the signature checks against the coordinator key it
//! was configured with.

use std::path::Path;

use josekit::jws::{JwsHeader, JwsVerifier};

use super::{Directory, DirectoryError};
use crate::crypto::jose_keys::{SIGNING_ALG, SigningKey, VerifyingKey};

pub const DIRECTORY_JWS_TYPE: &str = "rgw-directory+jws";

#[derive(Debug, thiserror::Error)]
pub enum SignedDirectoryError {
    #[error("the directory's signature does not verify against the coordinator key")]
    BadSignature,
    #[error("the signed directory is not valid: {0}")]
    Invalid(#[from] DirectoryError),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("directory edition {offered} is older than edition {current} already in use")]
    Rollback { offered: u64, current: u64 },
    #[error("directory edition {0} differs from the edition {0} in use: a changed directory needs a higher serial")]
    SameSerialOtherContent(u64),
    #[error("the directory does not list this gateway")]
    NotListed,
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// The coordinator's public key, from a JWK file.
pub fn read_coordinator_key(path: &Path) -> Result<VerifyingKey, SignedDirectoryError> {
    let unreadable = |reason: String| SignedDirectoryError::Read { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let jwk = josekit::jwk::Jwk::from_bytes(text.as_bytes()).map_err(|e| unreadable(e.to_string()))?;
    VerifyingKey::from_jwk(&jwk).map_err(|e| unreadable(e.to_string()))
}

/// Reads and verifies the signed directory at `path`; returns its text too,
/// so that a watcher can tell when the file has changed.
pub fn read_signed(path: &Path, coordinator: &VerifyingKey) -> Result<(String, Directory), SignedDirectoryError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SignedDirectoryError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    let directory = verify(&text, coordinator)?;
    Ok((text, directory))
}

/// Checks `json` as a directory, then signs exactly those bytes.
pub fn sign(json: &str, coordinator: &SigningKey) -> Result<String, SignedDirectoryError> {
    Directory::parse(json)?;
    let mut header = JwsHeader::new();
    header.set_token_type(DIRECTORY_JWS_TYPE);
    header.set_key_id(coordinator.kid());
    josekit::jws::serialize_compact(json.as_bytes(), &header, coordinator.signer()).map_err(|e| SignedDirectoryError::Sign(e.to_string()))
}

/// Verifies the coordinator's signature, then parses and checks the directory.
pub fn verify(signed: &str, coordinator: &VerifyingKey) -> Result<Directory, SignedDirectoryError> {
    let (payload, _) = josekit::jws::deserialize_compact_with_selector(signed.trim(), |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG)
            && header.token_type() == Some(DIRECTORY_JWS_TYPE)
            && header.key_id() == Some(coordinator.kid()))
        .then_some(coordinator.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| SignedDirectoryError::BadSignature)?;
    let json = std::str::from_utf8(&payload).map_err(|_| SignedDirectoryError::BadSignature)?;
    Ok(Directory::parse(json)?)
}

/// A newly read edition replaces the one in use only if its serial is
/// higher, or equal with the same content.
pub fn newer_or_same(current: &Directory, offered: Directory) -> Result<Directory, SignedDirectoryError> {
    if offered.serial() < current.serial() {
        return Err(SignedDirectoryError::Rollback { offered: offered.serial(), current: current.serial() });
    }
    if offered.serial() == current.serial() && !offered.same_content(current) {
        return Err(SignedDirectoryError::SameSerialOtherContent(offered.serial()));
    }
    Ok(offered)
}

#[cfg(test)]
mod tests;
