//! Packets between gateways: claims signed by the sending gateway (JWS,
//! ES256) inside encryption to the receiving gateway (JWE, ECDH-ES with
//! AES-256-GCM).
//!
//! The outer JWE header carries only what decryption needs (algorithms and
//! the receiving key's id): whoever sees the sealed packet in transit or in a
//! queue learns nothing about the case, its purpose or its recipient.
//!
//! Opening runs its checks in a fixed order and stops at the first failure,
//! each with its own code, so that a rejection says exactly why and an
//! attacker learns nothing further from a later check.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use josekit::jwe::{JweDecrypter, JweHeader};
use josekit::jws::{JwsHeader, JwsVerifier};
use serde::{Deserialize, Serialize};

use super::jose_keys::{CONTENT_ENC, DecryptionKey, EncryptionKey, KEY_AGREEMENT_ALG, SIGNING_ALG, SigningKey, VerifyingKey, unverified_kid};
use crate::domain::onward::OnwardLimits;
use crate::domain::priority::Priority;
use crate::domain::{CountryCode, OrgId, Purpose};

/// `typ` of the outer JWE.
pub const PACKET_JWE_TYPE: &str = "rgw-packet+jwe";
/// `typ` of the inner JWS: a receipt or a directory can never pass as a packet.
pub const PACKET_JWS_TYPE: &str = "rgw-packet+jws";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PacketType {
    Referral,
    Status,
    Withdrawal,
    ErasureConfirmation,
    /// Statuses about several referrals, to one peer in one packet:
    /// protocol version 2, sent only to a peer whose directory entry lists
    /// it (`federation.md` §5b).
    Statuses,
}

impl PacketType {
    /// The wire name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referral => "referral",
            Self::Status => "status",
            Self::Withdrawal => "withdrawal",
            Self::ErasureConfirmation => "erasure_confirmation",
            Self::Statuses => "statuses",
        }
    }

    /// The type a wire name names.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Referral, Self::Status, Self::Withdrawal, Self::ErasureConfirmation, Self::Statuses].into_iter().find(|t| t.as_str() == name)
    }
}

/// Everything the sending gateway signs. `body` is the minimised payload
/// (for a referral) or the status, withdrawal or confirmation it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketClaims {
    pub packet_id: String,
    #[serde(rename = "type")]
    pub packet_type: PacketType,
    /// Country of the sending gateway.
    pub issuer: CountryCode,
    /// Country of the receiving gateway.
    pub audience: CountryCode,
    /// The organisation behind the receiving gateway that the packet is for.
    pub recipient: OrgId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_expires_at: Option<DateTime<Utc>>,
    /// When the case must be erased at the latest, at both gateways (the
    /// DPO's retention rules and the consent's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_until: Option<DateTime<Utc>>,
    /// Days after the recipient reports the case closed that it may still be
    /// kept, if the sender's retention rule says (the deadline then comes forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days_after_closure: Option<u32>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// A referral whose case management passes to the recipient once it accepts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handover: bool,
    /// A referral's priority; absent means `normal` (as from a gateway of a
    /// version before priorities, which refuses packets that carry it).
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// What the recipient may pass on, and to whom (issue 21 §3); absent:
    /// nothing. A gateway of a version before onward referral refuses
    /// packets that carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onward: Option<OnwardLimits>,
    /// Null in an end-to-end sealed packet, whose body is in `end_to_end`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub body: serde_json::Value,
    /// The inner envelope of a packet sealed end to end to its recipient
    /// organisation ([`super::end_to_end`]): compact JWE, which this
    /// gateway routes but cannot open. Every content field above is then absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_to_end: Option<String>,
    /// An end-to-end sealed withdrawal: the packet it withdraws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// An end-to-end sealed withdrawal of the whole consent: the routing
    /// gateway erases what it holds of the case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erase: bool,
    /// A request that may be answered by a reply case (family tracing, a
    /// family-assessment request) readable by the receiving gateway: the
    /// organisation that asked, which the reply goes back to (issue 22 §1).
    /// A gateway of a version before replies refuses packets that carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<OrgId>,
    /// A reply case: the packet id of the request it answers, which the
    /// requesting gateway sent (kept outside an end-to-end envelope: it
    /// routes the reply to the organisation that asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<String>,
}

impl PacketClaims {
    /// Whether the content is sealed end to end, out of this gateway's reach.
    pub fn is_end_to_end(&self) -> bool {
        self.end_to_end.is_some()
    }
}

/// Why a packet was not sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("packet claims cannot be serialised: {0}")]
    Serialise(String),
    #[error("signing or encryption failed: {0}")]
    Jose(String),
}

/// Why a packet was rejected, in the order the checks run. Its stable
/// problem code is `wire::FailureCode::from`; the messages name no content
/// of the packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the packet is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the packet does not decrypt with any valid key of this gateway")]
    Undecryptable,
    #[error("the packet is signed by a key that no member gateway publishes as valid")]
    UnknownSigner,
    #[error("the packet's signature does not verify")]
    BadSignature,
    #[error("the packet's issuer is not the gateway whose key signed it")]
    IssuerMismatch,
    #[error("the packet came over a connection from another gateway than its issuer")]
    SenderMismatch,
    #[error("the issuing gateway is suspended from the federation")]
    IssuerSuspended,
    #[error("the packet is addressed to another gateway")]
    WrongAudience,
    #[error("the packet has expired")]
    Expired,
    #[error("the packet's lifetime (issued to expiry) is empty or longer than allowed")]
    LifetimeTooLong,
    #[error("the packet is issued too far in the future")]
    IssuedInFuture,
    #[error("a packet with this id was received before with other content")]
    Replayed,
    #[error("the packet's id is not 1 to 64 letters, digits or hyphens")]
    MalformedId,
}

impl OpenError {
    /// Every refusal, once each: for tests that must cover them all, and
    /// to tell a refusal on opening from other answers
    /// (`FailureCode::refused_on_opening`). The match makes adding a
    /// refusal without listing it here a compile error.
    pub(crate) fn every() -> Vec<OpenError> {
        let all = vec![
            Self::TooLarge { limit: 1 },
            Self::Undecryptable,
            Self::UnknownSigner,
            Self::BadSignature,
            Self::IssuerMismatch,
            Self::SenderMismatch,
            Self::IssuerSuspended,
            Self::WrongAudience,
            Self::Expired,
            Self::LifetimeTooLong,
            Self::IssuedInFuture,
            Self::Replayed,
            Self::MalformedId,
        ];
        for error in &all {
            match error {
                Self::TooLarge { .. }
                | Self::Undecryptable
                | Self::UnknownSigner
                | Self::BadSignature
                | Self::IssuerMismatch
                | Self::SenderMismatch
                | Self::IssuerSuspended
                | Self::WrongAudience
                | Self::Expired
                | Self::LifetimeTooLong
                | Self::IssuedInFuture
                | Self::Replayed
                | Self::MalformedId => {}
            }
        }
        all
    }
}

/// Whether `id` has the form of a packet id: 1 to 64 ASCII letters, digits or `-` (a UUID, say).
pub fn is_packet_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A member gateway's signing key as the trust list publishes it.
#[derive(Debug, Clone)]
pub struct PublishedSigner {
    pub country: CountryCode,
    pub active: bool,
    pub key: VerifyingKey,
}

/// Lookup of signing keys in the trust list (the federation directory).
pub trait SignerDirectory {
    /// The key with id `kid` and its gateway, if that key is valid at `at`.
    fn signer(&self, kid: &str, at: DateTime<Utc>) -> Option<PublishedSigner>;
}

/// The sealed form: a JWE in compact serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPacket(String);

impl SealedPacket {
    pub fn from_wire(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the sealed bytes, base64url: what a receipt confirms.
    pub fn digest(&self) -> String {
        digest_of(self.0.as_bytes())
    }
}

/// SHA-256 of `bytes`, base64url without padding.
pub fn digest_of(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Room for one JOSE protected header (type, algorithms, key id, and the
/// ephemeral public key of ECDH-ES), in JSON bytes; the real ones take 80
/// (signature) and 200 (encryption).
const HEADER_ALLOWANCE: usize = 256;
/// Room for every claim but the body: ids, countries, the organisation,
/// purpose, policy version, decision id, five instants, flags and member
/// names. All are bounded (ids at 64 characters); the real ones stay under 700.
const CLAIMS_ALLOWANCE: usize = 1024;
/// ES256 signature and AES-GCM nonce and tag, in bytes.
const SIGNATURE_BYTES: usize = 64;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Length of unpadded base64url of `n` bytes.
fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Length of a compact JWS over `payload` bytes: header, payload and signature.
fn compact_jws_len(payload: usize) -> usize {
    base64_len(HEADER_ALLOWANCE) + 1 + base64_len(payload) + 1 + base64_len(SIGNATURE_BYTES)
}

/// Length of a compact JWE (direct key agreement: empty encrypted key) of `plaintext` bytes.
fn compact_jwe_len(plaintext: usize) -> usize {
    base64_len(HEADER_ALLOWANCE) + 2 + base64_len(NONCE_BYTES) + 1 + base64_len(plaintext) + 1 + base64_len(TAG_BYTES)
}

/// The most bytes a packet whose `body` serialises to `body_len` bytes can
/// take once sealed by [`seal`], and first end to end
/// ([`super::end_to_end::seal_for_organisation`]) when `end_to_end`:
/// what a sending gateway compares with the receiving gateway's limit
/// before it accepts a case it could never deliver. An upper bound, a few
/// hundred bytes above the real size: the sealing itself is not run.
pub fn sealed_size_bound(body_len: usize, end_to_end: bool) -> usize {
    let claims = body_len.saturating_add(CLAIMS_ALLOWANCE);
    let outer_claims = if end_to_end {
        // The inner claims are padded to their bucket, signed and encrypted,
        // and ride as a string member of routing claims.
        let inner = compact_jwe_len(compact_jws_len(super::end_to_end::bucket_for(claims)));
        inner.saturating_add(CLAIMS_ALLOWANCE)
    } else {
        claims
    };
    compact_jwe_len(compact_jws_len(outer_claims))
}

/// The longest body whose packet, sealed gateway to gateway (and first end
/// to end, if `end_to_end`), surely fits `limit` bytes: the inverse of
/// [`sealed_size_bound`], which never decreases as the body grows.
pub fn largest_body_within(limit: usize, end_to_end: bool) -> usize {
    if sealed_size_bound(0, end_to_end) > limit {
        return 0;
    }
    let (mut fits, mut too_large) = (0usize, limit.saturating_add(1));
    while too_large - fits > 1 {
        let middle = fits + (too_large - fits) / 2;
        if sealed_size_bound(middle, end_to_end) <= limit { fits = middle } else { too_large = middle }
    }
    fits
}

/// Signs `claims` with `signer` and encrypts the result to `to`.
pub fn seal(claims: &PacketClaims, signer: &SigningKey, to: &EncryptionKey) -> Result<SealedPacket, SealError> {
    let payload = serde_json::to_vec(claims).map_err(|e| SealError::Serialise(e.to_string()))?;
    let mut jws_header = JwsHeader::new();
    jws_header.set_token_type(PACKET_JWS_TYPE);
    jws_header.set_key_id(signer.kid());
    let signed = josekit::jws::serialize_compact(&payload, &jws_header, signer.signer()).map_err(|e| SealError::Jose(e.to_string()))?;
    let mut jwe_header = JweHeader::new();
    jwe_header.set_token_type(PACKET_JWE_TYPE);
    jwe_header.set_content_encryption(CONTENT_ENC);
    jwe_header.set_key_id(to.kid());
    let sealed = josekit::jwe::serialize_compact(signed.as_bytes(), &jwe_header, to.encrypter()).map_err(|e| SealError::Jose(e.to_string()))?;
    Ok(SealedPacket(sealed))
}

/// What opening needs to know about the receiving gateway and the moment.
#[derive(Debug)]
pub struct Receiver<'a> {
    pub country: CountryCode,
    /// This gateway's decryption keys that the directory lists as valid now.
    pub keys: &'a [DecryptionKey],
    pub now: DateTime<Utc>,
    pub max_skew: Duration,
    pub max_bytes: usize,
    /// Longest `expires_at - issued_at` accepted: ids of received packets
    /// are kept until their packet expires, so expiry must be bounded.
    pub max_lifetime: Duration,
}

/// Decrypts, verifies and checks a sealed packet. `peer` is the member
/// gateway the transport authenticated, when it came over a connection.
pub fn open(
    sealed: &[u8],
    receiver: &Receiver<'_>,
    directory: &dyn SignerDirectory,
    peer: Option<CountryCode>,
) -> Result<PacketClaims, OpenError> {
    if sealed.len() > receiver.max_bytes {
        return Err(OpenError::TooLarge { limit: receiver.max_bytes });
    }
    let text = std::str::from_utf8(sealed).map_err(|_| OpenError::Undecryptable)?;
    if !has_full_iv_and_tag(text) {
        return Err(OpenError::Undecryptable);
    }
    let (signed, _) = josekit::jwe::deserialize_compact_with_selector(text, |header| {
        Ok(decrypter_for(header, receiver.keys, PACKET_JWE_TYPE).map(|key| key.decrypter() as &dyn JweDecrypter))
    })
    .map_err(|_| OpenError::Undecryptable)?;

    let signer_kid = unverified_kid(&signed).ok_or(OpenError::UnknownSigner)?;
    let signer = directory.signer(&signer_kid, receiver.now).ok_or(OpenError::UnknownSigner)?;
    let (payload, jws_header) = josekit::jws::deserialize_compact_with_selector(&signed, |header| {
        Ok((header.algorithm() == Some(SIGNING_ALG) && header.token_type() == Some(PACKET_JWS_TYPE))
            .then_some(signer.key.verifier() as &dyn JwsVerifier))
    })
    .map_err(|_| OpenError::BadSignature)?;
    if jws_header.key_id() != Some(signer_kid.as_str()) {
        return Err(OpenError::BadSignature);
    }
    let claims: PacketClaims = serde_json::from_slice(&payload).map_err(|_| OpenError::BadSignature)?;
    // The id keys the inbox, the audit log and the recipients' cursor: a plain, bounded form only.
    if !is_packet_id(&claims.packet_id) || claims.in_reply_to.as_deref().is_some_and(|id| !is_packet_id(id)) {
        return Err(OpenError::MalformedId);
    }

    if claims.issuer != signer.country {
        return Err(OpenError::IssuerMismatch);
    }
    if peer.is_some_and(|peer| peer != claims.issuer) {
        return Err(OpenError::SenderMismatch);
    }
    if !signer.active {
        return Err(OpenError::IssuerSuspended);
    }
    if claims.audience != receiver.country {
        return Err(OpenError::WrongAudience);
    }
    if claims.expires_at <= receiver.now {
        return Err(OpenError::Expired);
    }
    if claims.expires_at <= claims.issued_at || claims.expires_at - claims.issued_at > receiver.max_lifetime {
        return Err(OpenError::LifetimeTooLong);
    }
    if claims.issued_at > receiver.now + receiver.max_skew {
        return Err(OpenError::IssuedInFuture);
    }
    Ok(claims)
}

/// GCM with its full 96-bit IV and 128-bit tag only. josekit would accept a
/// shortened tag, and then one packet would have several valid byte forms,
/// which breaks telling a redelivery from a replay by digest.
pub(super) fn has_full_iv_and_tag(compact: &str) -> bool {
    let parts: Vec<&str> = compact.split('.').collect();
    let decoded_len = |part: Option<&&str>| part.and_then(|p| URL_SAFE_NO_PAD.decode(p).ok()).map(|bytes| bytes.len());
    parts.len() == 5 && decoded_len(parts.get(2)) == Some(12) && decoded_len(parts.get(4)) == Some(16)
}

/// Chooses our key for the envelope of `token_type`, or none. Runs before decryption, so it
/// also refuses any content encryption but A256GCM and any compression:
/// josekit would otherwise inflate `zip` content, unbounded, before any
/// check of ours.
pub(super) fn decrypter_for<'k>(header: &JweHeader, keys: &'k [DecryptionKey], token_type: &str) -> Option<&'k DecryptionKey> {
    if header.algorithm() != Some(KEY_AGREEMENT_ALG)
        || header.token_type() != Some(token_type)
        || header.content_encryption() != Some(CONTENT_ENC)
        || header.claim("zip").is_some()
    {
        return None;
    }
    let kid = header.key_id()?;
    keys.iter().find(|key| key.kid() == kid)
}

/// What an arriving packet is, given the digest stored for its id, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Never seen: store it and receipt it.
    New,
    /// The same sealed bytes again (the sender retrying): answer the same receipt.
    Redelivery,
    /// Known id, other bytes: refused as a replay.
    Replay,
}

pub fn classify_arrival(stored_digest: Option<&str>, digest: &str) -> Arrival {
    match stored_digest {
        None => Arrival::New,
        Some(stored) if stored == digest => Arrival::Redelivery,
        Some(_) => Arrival::Replay,
    }
}

#[cfg(test)]
mod tests;
