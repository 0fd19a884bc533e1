//! The recipient organisation's side of end-to-end sealing: what a national
//! system (or `referral-gateway recipient open`) calls to open a case sealed
//! to the organisation's own key ([`crate::crypto::end_to_end`]).
//!
//! [`open_delivered`] takes what the organisation's gateway handed over, in
//! any of its three forms:
//! - the bare inner envelope (compact JWE);
//! - the case document its gateway hands over (as `GET /v1/inbox/{id}`
//!   gives it), holding the envelope in its `end_to_end` member beside the
//!   gateway's routing facts (`packet_id`, `from_country`, ...);
//! - a webhook push: the same document in a JWS signed by the gateway.
//!
//! A case the person has since withdrawn in part comes with `withdrawals`:
//! the sender's withdrawal packets, sealed to the organisation too, since
//! its gateway cannot read which categories they name. [`open_delivered`]
//! opens them, checks they withdraw from this case, and cuts what they name
//! from the content it returns; [`open_withdrawals`] reads them from a
//! pushed notice, which carries no case.
//!
//! It decrypts with the organisation's private keys, verifies the sending
//! gateway's signature against the coordinator-signed directory, and checks
//! that the envelope belongs to the packet the gateway says it is. Nothing
//! the gateway adds is trusted beyond that check. Errors name no content.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use josekit::jwk::Jwk;
use serde::Serialize;
use serde_json::Value;

use crate::crypto::case_push::{self, CasePushError};
use crate::crypto::end_to_end::{belongs_to, open_as_organisation, InnerClaims, InnerError};
use crate::crypto::at_rest::{write_private, KeyError};
use crate::crypto::jose_keys::{self, DecryptionKey, KeyUse};
use crate::directory::{published_key, Directory, PublishedKey};
use crate::directory::signed::{self, SignedDirectoryError};
use crate::crypto::packet::PacketType;
use crate::domain::withdrawal::WithdrawalNotice;
use crate::domain::{CountryCode, DataCategory, OrgId};
use std::collections::BTreeSet;

/// Largest input accepted: an inner envelope at its limit (1 MiB), with the
/// case document around it, base64 again in a push.
const MAX_DELIVERED_BYTES: usize = 2 * 1024 * 1024;

/// Why a delivered case was not opened, or the tool's inputs not read. The
/// messages name files and members, never a value of the case.
#[derive(Debug, thiserror::Error)]
pub enum RecipientError {
    #[error("the input is not an end-to-end envelope, a case document or a pushed case")]
    Unrecognised,
    #[error("the input is larger than any case this federation sends")]
    TooLarge,
    #[error("the case document is not valid: {0}")]
    BadDocument(&'static str),
    #[error("the case was not sealed end to end (its document has no `end_to_end` envelope)")]
    NotSealed,
    #[error("the document is a notice that a case (or some of it) is erased, not a case")]
    Notice,
    #[error("the case document is addressed to another organisation")]
    WrongRecipient,
    #[error("the envelope belongs to another packet than the case document names")]
    WrongPacket,
    #[error("a withdrawal handed over with the case does not withdraw part of it")]
    ForeignWithdrawal,
    #[error("organisation {0} is not in the directory")]
    UnknownOrganisation(OrgId),
    #[error("the pushed case: {0}")]
    Push(#[from] CasePushError),
    #[error(transparent)]
    Envelope(#[from] InnerError),
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error(transparent)]
    KeyFile(#[from] KeyError),
    #[error("{path}: holds no key")]
    NoKey { path: PathBuf },
    #[error("directory: {0}")]
    Directory(#[from] SignedDirectoryError),
}

/// The form a case was handed over in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveredAs {
    /// The bare inner envelope.
    Envelope,
    /// The case document of `GET /v1/inbox/{id}`.
    CaseDocument,
    /// A webhook push, its gateway's signature checked.
    Push,
}

/// What the organisation's gateway said about the packet, alongside the
/// envelope. Only `packet_id` and `from_country` are checked against the
/// sender's signed content; the rest is the gateway's word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutingFacts {
    pub packet_id: String,
    pub from_country: CountryCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The gateway whose push signature was checked (pushes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed_by: Option<CountryCode>,
}

/// An opened case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Opened {
    pub delivered_as: DeliveredAs,
    /// None for a bare envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingFacts>,
    /// What the sending gateway (`content.issuer`, its signature verified)
    /// sealed for this organisation alone. `pad` is emptied: it is only
    /// there to give every envelope of a bucket one size. Categories the
    /// person withdrew since are not in its body.
    pub content: InnerClaims,
    /// Those categories: erase them from any copy kept.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub withdrawn: BTreeSet<DataCategory>,
}

/// What the withdrawals handed over with a case, or pushed in a notice,
/// withdraw from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Withdrawn {
    pub packet_id: String,
    pub from_country: CountryCode,
    pub categories: BTreeSet<DataCategory>,
}

/// Opens what the organisation's gateway delivered: a bare envelope, a case
/// document or a webhook push (see the module documentation), with one of
/// `keys` (the organisation's private keys, several during a rotation),
/// checking the sending gateway's signature against `directory`.
///
/// `now` is when a push is checked: its gateway's signing key must be valid
/// then, as when the push arrives. It plays no part for the other forms,
/// whose inner signature is checked at the time the sender signed.
pub fn open_delivered(
    delivered: &str,
    keys: &[DecryptionKey],
    directory: &Directory,
    organisation: &OrgId,
    now: DateTime<Utc>,
) -> Result<Opened, RecipientError> {
    if delivered.len() > MAX_DELIVERED_BYTES {
        return Err(RecipientError::TooLarge);
    }
    let delivered = delivered.trim();
    if delivered.starts_with('{') {
        let document: Value = serde_json::from_str(delivered).map_err(|_| RecipientError::BadDocument("not JSON"))?;
        return open_document(&document, keys, directory, organisation, DeliveredAs::CaseDocument, None);
    }
    match delivered.split('.').count() {
        5 => {
            let mut content = open_as_organisation(delivered, keys, directory, organisation)?;
            content.pad.clear();
            Ok(Opened { delivered_as: DeliveredAs::Envelope, routing: None, content, withdrawn: BTreeSet::new() })
        }
        3 => {
            let gateway = directory
                .organisation(organisation)
                .map(|entry| entry.country)
                .ok_or_else(|| RecipientError::UnknownOrganisation(organisation.clone()))?;
            let document = case_push::verify(delivered, directory, now, gateway)?;
            open_document(&document, keys, directory, organisation, DeliveredAs::Push, Some(gateway))
        }
        _ => Err(RecipientError::Unrecognised),
    }
}

fn open_document(
    document: &Value,
    keys: &[DecryptionKey],
    directory: &Directory,
    organisation: &OrgId,
    delivered_as: DeliveredAs,
    pushed_by: Option<CountryCode>,
) -> Result<Opened, RecipientError> {
    let member = |name: &str| document.get(name).filter(|value| !value.is_null());
    let text = |name: &str| member(name).map(|value| value.as_str());
    if !document.is_object() {
        return Err(RecipientError::BadDocument("not a JSON object"));
    }
    let packet_id = text("packet_id").flatten().ok_or(RecipientError::BadDocument("`packet_id` is missing or not a string"))?;
    let from_country = text("from_country")
        .flatten()
        .and_then(|code| CountryCode::parse(code).ok())
        .ok_or(RecipientError::BadDocument("`from_country` is missing or not a country code"))?;
    let received_at = match text("received_at") {
        None => None,
        Some(at) => Some(
            at.and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&Utc))
                .ok_or(RecipientError::BadDocument("`received_at` is not an RFC 3339 time"))?,
        ),
    };
    let state = match text("state") {
        None => None,
        Some(state) => Some(state.ok_or(RecipientError::BadDocument("`state` is not a string"))?.to_owned()),
    };
    if let Some(recipient) = text("recipient")
        && recipient != Some(organisation.as_str())
    {
        return Err(RecipientError::WrongRecipient);
    }
    let sealed = match text("end_to_end") {
        // Pushed notices that a case, or some categories of it, are erased carry no case.
        None if matches!(state.as_deref(), Some("erased" | "narrowed")) => return Err(RecipientError::Notice),
        None => return Err(RecipientError::NotSealed),
        Some(sealed) => sealed.ok_or(RecipientError::BadDocument("`end_to_end` is not a string"))?,
    };
    let mut content = open_as_organisation(sealed, keys, directory, organisation)?;
    // The gateway names the packet; the sender's signed content must agree,
    // so that one packet's envelope cannot be handed over as another's.
    if !belongs_to(&content, packet_id, from_country) {
        return Err(RecipientError::WrongPacket);
    }
    content.pad.clear();
    let withdrawn = withdrawn_categories(document, keys, directory, organisation, packet_id, from_country)?;
    if let Some(body) = content.body.as_object_mut() {
        for category in &withdrawn {
            body.remove(category.as_str());
        }
    }
    // What may be passed on is what is still held.
    content.onward = content.onward.as_ref().and_then(|limits| limits.within(&crate::domain::onward::categories_in(&content.body)));
    let routing = RoutingFacts { packet_id: packet_id.to_owned(), from_country, received_at, state, pushed_by };
    Ok(Opened { delivered_as, routing: Some(routing), content, withdrawn })
}

/// Reads what a case document or a pushed notice (see [`open_delivered`])
/// says the person withdrew from the case: the categories its `withdrawals`
/// name, each opened, verified and checked to withdraw from this case. A
/// pushed notice that some of a case is withdrawn carries these alone.
pub fn open_withdrawals(delivered: &str, keys: &[DecryptionKey], directory: &Directory, organisation: &OrgId, now: DateTime<Utc>) -> Result<Withdrawn, RecipientError> {
    if delivered.len() > MAX_DELIVERED_BYTES {
        return Err(RecipientError::TooLarge);
    }
    let delivered = delivered.trim();
    let document: Value = if delivered.starts_with('{') {
        serde_json::from_str(delivered).map_err(|_| RecipientError::BadDocument("not JSON"))?
    } else if delivered.split('.').count() == 3 {
        let gateway = directory
            .organisation(organisation)
            .map(|entry| entry.country)
            .ok_or_else(|| RecipientError::UnknownOrganisation(organisation.clone()))?;
        case_push::verify(delivered, directory, now, gateway)?
    } else {
        return Err(RecipientError::Unrecognised);
    };
    let packet_id = document.get("packet_id").and_then(Value::as_str).ok_or(RecipientError::BadDocument("`packet_id` is missing or not a string"))?;
    let from_country = document
        .get("from_country")
        .and_then(Value::as_str)
        .and_then(|code| CountryCode::parse(code).ok())
        .ok_or(RecipientError::BadDocument("`from_country` is missing or not a country code"))?;
    if let Some(recipient) = document.get("recipient").and_then(Value::as_str)
        && recipient != organisation.as_str()
    {
        return Err(RecipientError::WrongRecipient);
    }
    let categories = withdrawn_categories(&document, keys, directory, organisation, packet_id, from_country)?;
    Ok(Withdrawn { packet_id: packet_id.to_owned(), from_country, categories })
}

/// The categories a document's `withdrawals` name (none without them).
/// Each must be a partial withdrawal the sending gateway signed, of this
/// case: a withdrawal of another case cannot be passed off as this one's.
fn withdrawn_categories(
    document: &Value,
    keys: &[DecryptionKey],
    directory: &Directory,
    organisation: &OrgId,
    packet_id: &str,
    from_country: CountryCode,
) -> Result<BTreeSet<DataCategory>, RecipientError> {
    let withdrawals = match document.get("withdrawals") {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::Array(withdrawals)) => withdrawals,
        Some(_) => return Err(RecipientError::BadDocument("`withdrawals` is not an array")),
    };
    let mut categories = BTreeSet::new();
    for withdrawal in withdrawals {
        let text = |name: &str| withdrawal.get(name).and_then(Value::as_str);
        let (Some(withdrawal_id), Some(sealed)) = (text("packet_id"), text("end_to_end")) else {
            return Err(RecipientError::BadDocument("a withdrawal lacks its `packet_id` or `end_to_end` envelope"));
        };
        let opened = open_as_organisation(sealed, keys, directory, organisation)?;
        if !belongs_to(&opened, withdrawal_id, from_country) || opened.packet_type != PacketType::Withdrawal {
            return Err(RecipientError::WrongPacket);
        }
        let notice: WithdrawalNotice = serde_json::from_value(opened.body).map_err(|_| RecipientError::ForeignWithdrawal)?;
        match notice.categories {
            Some(named) if notice.in_reply_to == packet_id && !named.is_empty() => categories.extend(named),
            _ => return Err(RecipientError::ForeignWithdrawal),
        }
    }
    Ok(categories)
}

/// The organisation's private keys from a file holding one private P-256
/// JWK (`use` `enc`, as `keys init --recipient` writes) or a JWK set
/// (`{"keys": [...]}`).
pub fn read_keys(path: &Path) -> Result<Vec<DecryptionKey>, RecipientError> {
    let bad = |reason: String| RecipientError::Key { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    // The file's own text is never quoted back: it holds private keys.
    let value: Value = serde_json::from_str(&text).map_err(|_| bad("not JSON".to_owned()))?;
    let jwks: Vec<&Value> = match value.get("keys") {
        Some(Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err(bad("`keys` is not an array of JWKs".to_owned())),
        None => vec![&value],
    };
    let mut keys = Vec::with_capacity(jwks.len());
    for (index, jwk) in jwks.into_iter().enumerate() {
        let bad = |reason: String| bad(format!("key {index}: {reason}"));
        let map = jwk.as_object().cloned().ok_or_else(|| bad("not a JWK".to_owned()))?;
        let jwk = Jwk::from_map(map).map_err(|_| bad("not a JWK".to_owned()))?;
        keys.push(DecryptionKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?);
    }
    if keys.is_empty() {
        return Err(RecipientError::NoKey { path: path.to_path_buf() });
    }
    Ok(keys)
}

/// Makes a new end-to-end key for `organisation`: writes the private JWK to
/// `<dir>/<organisation>-enc-<kid>.jwk` (created with mode 0600, never
/// overwriting a file) and returns that path with the directory entry of its
/// public half, valid from `from` until `until`, for the organisation's
/// `keys` in the federation directory.
pub fn make_key(dir: &Path, organisation: &OrgId, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<(PathBuf, PublishedKey), RecipientError> {
    let bad = |path: &Path, reason: String| RecipientError::Key { path: path.to_path_buf(), reason };
    if from >= until {
        return Err(bad(dir, "the key's validity must end after it starts".to_owned()));
    }
    let jwk = jose_keys::generate(KeyUse::Enc).map_err(|e| bad(dir, e.to_string()))?;
    let entry = published_key(&jwk, from, until, KeyUse::Enc).map_err(|e| bad(dir, e.to_string()))?;
    let path = dir.join(format!("{organisation}-enc-{}.jwk", jwk.key_id().unwrap_or_default()));
    std::fs::create_dir_all(dir).map_err(|e| bad(dir, format!("cannot create: {e}")))?;
    write_private(&path, jwk.to_string().as_bytes())?;
    Ok((path, entry))
}

/// The federation directory as the gateway reads it: the coordinator's
/// signed edition at `signed_path`, verified against the coordinator's
/// public key at `coordinator_key_path`.
pub fn read_directory(signed_path: &Path, coordinator_key_path: &Path) -> Result<Directory, RecipientError> {
    let coordinator = signed::read_coordinator_key(coordinator_key_path)?;
    Ok(signed::read_signed(signed_path, &coordinator)?.1)
}

#[cfg(test)]
mod tests;
