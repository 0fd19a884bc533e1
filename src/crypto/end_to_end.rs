//! End-to-end sealing to a recipient organisation: a second envelope inside
//! the gateway-to-gateway packet, which only the organisation can open.
//!
//! A gateway run by officials of the person's state of origin routes such a
//! packet without being able to read it, or to tell it apart from any other
//! packet to the same organisation:
//! - everything about the case (purpose, policy version, consent end,
//!   retention deadline, handover, priority, body) moves into the inner envelope;
//!   the outer claims keep only what routing needs ([`ROUTING_FIELDS`]);
//! - the inner envelope's signed bytes are padded to a fixed bucket size
//!   ([`BUCKETS`]), so that its length does not tell which categories it holds;
//! - the outer times are whole seconds, so that the outer claims of two
//!   packets of one type to one organisation have the same length too.
//!
//! Inner envelope: the sending gateway signs [`InnerClaims`] (JWS, ES256,
//! its federation signing key) and encrypts them to the organisation's key
//! (JWE, ECDH-ES with A256GCM). The organisation verifies the signature
//! against the federation directory, as a gateway does: the routing gateway
//! cannot forge or alter what it forwards.

use chrono::{DateTime, Utc};
use josekit::jwe::{JweDecrypter, JweHeader};
use josekit::jws::{JwsHeader, JwsVerifier};
use serde::{Deserialize, Serialize};

use super::jose_keys::{CONTENT_ENC, DecryptionKey, EncryptionKey, SIGNING_ALG, SigningKey, unverified_kid};
use super::packet::{decrypter_for, has_full_iv_and_tag, PacketClaims, PacketType, SealError, SignerDirectory};
use crate::domain::onward::OnwardLimits;
use crate::domain::priority::Priority;
use crate::domain::{CountryCode, OrgId, Purpose};

/// `typ` of the inner JWE.
pub const INNER_JWE_TYPE: &str = "rgw-e2e+jwe";
/// `typ` of the inner JWS: an outer packet's signature never passes for an inner one.
pub const INNER_JWS_TYPE: &str = "rgw-e2e+jws";

/// The only members the outer claims of an end-to-end sealed packet have.
/// `in_reply_to` and `erase` are a withdrawal's: which held case it
/// concerns, and whether the routing gateway is to erase what it holds of it.
pub const ROUTING_FIELDS: &[&str] =
    &["packet_id", "type", "issuer", "audience", "recipient", "issued_at", "expires_at", "end_to_end", "in_reply_to", "erase", "answers"];

/// Sizes, in bytes, of the inner envelope's signed content. A referral is
/// padded up to the smallest bucket that holds it; beyond the last, up to a
/// multiple of it. The smallest is large enough that an ordinary minimised
/// referral with or without its optional categories fills the same one.
pub const BUCKETS: &[usize] = &[4 * 1024, 8 * 1024, 16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024, 256 * 1024];

/// Largest inner envelope accepted (compact JWE bytes), well above the
/// content any outer packet can carry.
const MAX_INNER_BYTES: usize = 1024 * 1024;

/// What the sending gateway seals for the recipient organisation alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InnerClaims {
    /// The outer packet's id, type, issuer and recipient: the inner envelope
    /// belongs to that packet and no other.
    pub packet_id: String,
    #[serde(rename = "type")]
    pub packet_type: PacketType,
    pub issuer: CountryCode,
    pub recipient: OrgId,
    pub issued_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days_after_closure: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover: bool,
    /// Here only, never in the outer claims: an `emergency` on an
    /// asylum-linked case would tell the routing gateway something.
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// Here only, like the priority: what the organisation may pass on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onward: Option<OnwardLimits>,
    /// Here only, for a request a reply case answers: the organisation that
    /// asked, which the organisation names when it replies (its gateway
    /// cannot read it; the requesting gateway checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<OrgId>,
    pub body: serde_json::Value,
    /// Spaces bringing the signed bytes to a bucket size; meaningless.
    #[serde(default)]
    pub pad: String,
}

/// For a withdrawal: which held case it withdraws, and whether whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalRouting {
    pub in_reply_to: String,
    /// The whole consent: the routing gateway erases what it holds of the case.
    pub whole: bool,
}

/// Why an inner envelope was not opened. The messages name no content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InnerError {
    #[error("the sealed content is not an end-to-end envelope of this federation")]
    Malformed,
    #[error("the sealed content does not decrypt with this organisation's key")]
    Undecryptable,
    #[error("the sealed content is signed by a key that no member gateway publishes")]
    UnknownSigner,
    #[error("the sealed content's signature does not verify")]
    BadSignature,
    #[error("the sealed content was signed by another gateway than its issuer")]
    IssuerMismatch,
    #[error("the sealed content belongs to another packet or organisation")]
    Mismatch,
}

/// Seals `claims` end to end: the inner envelope to `organisation`, signed
/// by `signer`, inside outer claims holding only the routing fields. The
/// outer claims are then sealed gateway to gateway with [`super::packet::seal`].
pub fn seal_for_organisation(
    claims: &PacketClaims,
    signer: &SigningKey,
    organisation: &EncryptionKey,
    withdrawal: Option<WithdrawalRouting>,
) -> Result<PacketClaims, SealError> {
    let issued_at = whole_seconds(claims.issued_at);
    let mut inner = InnerClaims {
        packet_id: claims.packet_id.clone(),
        packet_type: claims.packet_type,
        issuer: claims.issuer,
        recipient: claims.recipient.clone(),
        issued_at,
        purpose: claims.purpose,
        policy_version: claims.policy_version.clone(),
        decision_id: claims.decision_id.clone(),
        consent_expires_at: claims.consent_expires_at,
        retention_until: claims.retention_until,
        retention_days_after_closure: claims.retention_days_after_closure,
        handover: claims.handover,
        priority: claims.priority,
        onward: claims.onward.clone(),
        requested_by: claims.requested_by.clone(),
        body: claims.body.clone(),
        pad: String::new(),
    };
    let unpadded = serde_json::to_vec(&inner).map_err(|e| SealError::Serialise(e.to_string()))?;
    inner.pad = " ".repeat(bucket_for(unpadded.len()) - unpadded.len());
    let payload = serde_json::to_vec(&inner).map_err(|e| SealError::Serialise(e.to_string()))?;

    let mut jws_header = JwsHeader::new();
    jws_header.set_token_type(INNER_JWS_TYPE);
    jws_header.set_key_id(signer.kid());
    let signed = josekit::jws::serialize_compact(&payload, &jws_header, signer.signer()).map_err(|e| SealError::Jose(e.to_string()))?;
    let mut jwe_header = JweHeader::new();
    jwe_header.set_token_type(INNER_JWE_TYPE);
    jwe_header.set_content_encryption(CONTENT_ENC);
    jwe_header.set_key_id(organisation.kid());
    let sealed = josekit::jwe::serialize_compact(signed.as_bytes(), &jwe_header, organisation.encrypter())
        .map_err(|e| SealError::Jose(e.to_string()))?;

    let (in_reply_to, erase) = match withdrawal {
        Some(routing) => (Some(routing.in_reply_to), routing.whole),
        None => (None, false),
    };
    Ok(PacketClaims {
        packet_id: claims.packet_id.clone(),
        packet_type: claims.packet_type,
        issuer: claims.issuer,
        audience: claims.audience,
        recipient: claims.recipient.clone(),
        purpose: None,
        policy_version: None,
        decision_id: None,
        consent_expires_at: None,
        retention_until: None,
        retention_days_after_closure: None,
        issued_at,
        expires_at: whole_seconds(claims.expires_at),
        handover: false,
        priority: Priority::Normal,
        onward: None,
        body: serde_json::Value::Null,
        end_to_end: Some(sealed),
        in_reply_to,
        erase,
        requested_by: None,
        answers: claims.answers.clone(),
    })
}

/// The bucket a signed content of `len` bytes is padded to, with room for
/// the padding member's own quotes.
pub fn bucket_for(len: usize) -> usize {
    let largest = BUCKETS.last().copied().unwrap_or(4096);
    BUCKETS.iter().copied().find(|bucket| *bucket >= len).unwrap_or_else(|| len.div_ceil(largest) * largest)
}

/// `at` without its fraction of a second: RFC 3339 texts of one length.
fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// Opens an inner envelope as its organisation does: decrypts it with one
/// of `keys`, verifies the sending gateway's signature against `directory`
/// (the key valid when the gateway signed), and checks that it belongs to
/// a packet to `organisation`. What the national systems call; the
/// `recipient open` command runs it.
pub fn open_as_organisation(
    sealed: &str,
    keys: &[DecryptionKey],
    directory: &dyn SignerDirectory,
    organisation: &OrgId,
) -> Result<InnerClaims, InnerError> {
    if sealed.len() > MAX_INNER_BYTES || !has_full_iv_and_tag(sealed) {
        return Err(InnerError::Malformed);
    }
    let (signed, _) = josekit::jwe::deserialize_compact_with_selector(sealed, |header| {
        Ok(decrypter_for(header, keys, INNER_JWE_TYPE).map(|key| key.decrypter() as &dyn JweDecrypter))
    })
    .map_err(|_| InnerError::Undecryptable)?;
    let kid = unverified_kid(&signed).ok_or(InnerError::UnknownSigner)?;
    // The time it claims to be signed at is only known once verified: look
    // the key up at that time, then check the claim against the key's window.
    let unverified: InnerClaims = unverified_payload(&signed).ok_or(InnerError::BadSignature)?;
    let signer = directory.signer(&kid, unverified.issued_at).ok_or(InnerError::UnknownSigner)?;
    let (payload, header) = josekit::jws::deserialize_compact_with_selector(&signed, |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG) && header.token_type() == Some(INNER_JWS_TYPE))
            .then_some(signer.key.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| InnerError::BadSignature)?;
    if header.key_id() != Some(kid.as_str()) {
        return Err(InnerError::BadSignature);
    }
    let claims: InnerClaims = serde_json::from_slice(&payload).map_err(|_| InnerError::BadSignature)?;
    if claims.issuer != signer.country {
        return Err(InnerError::IssuerMismatch);
    }
    if &claims.recipient != organisation {
        return Err(InnerError::Mismatch);
    }
    Ok(claims)
}

/// Whether `inner` is the inner envelope of the packet its gateway names:
/// the same packet id and issuer (the recipient was checked on opening).
/// Run by the organisation on what its gateway hands over with the routing facts.
pub fn belongs_to(inner: &InnerClaims, packet_id: &str, issuer: CountryCode) -> bool {
    inner.packet_id == packet_id && inner.issuer == issuer
}

fn unverified_payload(compact: &[u8]) -> Option<InnerClaims> {
    use base64::Engine;
    let text = std::str::from_utf8(compact).ok()?;
    let payload = text.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests;
