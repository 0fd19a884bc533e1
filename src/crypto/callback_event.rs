//! A status callback event, signed (JWS, HS256) with the key the receiving
//! organisation registered with this gateway (`[callbacks.<name>]`), so that
//! the organisation can check the event came from its gateway unchanged
//! without reading the federation directory. A shared key per organisation:
//! an event signed for one organisation never verifies for another.

use josekit::jws::{JwsHeader, HS256};
use serde_json::Value;

/// `typ` of a callback event: it can pass for no packet, receipt or pushed case.
pub const EVENT_JWS_TYPE: &str = "rgw-event+jws";
/// RFC 7518 §3.2: an HMAC key at least as long as the hash's output.
pub const MIN_KEY_BYTES: usize = 32;

/// An organisation's callback key. Its bytes never reach a log or a `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackKey(Vec<u8>);

impl std::fmt::Debug for CallbackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallbackKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackEventError {
    #[error("a callback key has at least {MIN_KEY_BYTES} bytes; this one has {0}")]
    KeyTooShort(usize),
    #[error("the event cannot be signed: {0}")]
    Sign(String),
    #[error("the event's signature does not verify with this key, or it is no callback event")]
    BadSignature,
}

impl CallbackKey {
    /// The key a file holds: its bytes, without a final line break.
    pub fn new(bytes: &[u8]) -> Result<Self, CallbackEventError> {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.len() < MIN_KEY_BYTES {
            return Err(CallbackEventError::KeyTooShort(bytes.len()));
        }
        Ok(Self(bytes.to_vec()))
    }
}

pub fn sign(event: &impl serde::Serialize, key: &CallbackKey) -> Result<String, CallbackEventError> {
    let payload = serde_json::to_vec(event).map_err(|e| CallbackEventError::Sign(e.to_string()))?;
    let mut header = JwsHeader::new();
    header.set_token_type(EVENT_JWS_TYPE);
    let signer = HS256.signer_from_bytes(&key.0).map_err(|e| CallbackEventError::Sign(e.to_string()))?;
    josekit::jws::serialize_compact(&payload, &header, &signer).map_err(|e| CallbackEventError::Sign(e.to_string()))
}

/// What the organisation does with an event: checks it is one, signed with
/// its key, and reads it.
pub fn verify(jws: &str, key: &CallbackKey) -> Result<Value, CallbackEventError> {
    let verifier = HS256.verifier_from_bytes(&key.0).map_err(|_| CallbackEventError::BadSignature)?;
    let (payload, header) = josekit::jws::deserialize_compact(jws, &verifier).map_err(|_| CallbackEventError::BadSignature)?;
    if header.token_type() != Some(EVENT_JWS_TYPE) {
        return Err(CallbackEventError::BadSignature);
    }
    serde_json::from_slice(&payload).map_err(|_| CallbackEventError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8) -> CallbackKey {
        CallbackKey::new(&[fill; MIN_KEY_BYTES]).unwrap()
    }

    #[test]
    fn an_event_verifies_with_its_key_only() {
        let event = serde_json::json!({"event_id": "r1.1", "status": "queued"});
        let jws = sign(&event, &key(7)).unwrap();
        assert_eq!(verify(&jws, &key(7)).unwrap(), event);
        assert_eq!(verify(&jws, &key(8)), Err(CallbackEventError::BadSignature));
        let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
        parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, br#"{"event_id":"r1.2","status":"queued"}"#);
        assert_eq!(verify(&parts.join("."), &key(7)), Err(CallbackEventError::BadSignature));
    }

    #[test]
    fn another_type_signed_with_the_same_key_is_no_event() {
        let mut header = JwsHeader::new();
        header.set_token_type("JWT");
        let signer = HS256.signer_from_bytes([7; MIN_KEY_BYTES]).unwrap();
        let jws = josekit::jws::serialize_compact(b"{}", &header, &signer).unwrap();
        assert_eq!(verify(&jws, &key(7)), Err(CallbackEventError::BadSignature));
    }

    #[test]
    fn a_key_is_long_enough_for_hs256_and_its_bytes_stay_out_of_debug() {
        assert_eq!(CallbackKey::new(&[1; 31]), Err(CallbackEventError::KeyTooShort(31)));
        let mut with_line_break = vec![b'k'; MIN_KEY_BYTES];
        with_line_break.push(b'\n');
        assert_eq!(CallbackKey::new(&with_line_break), Ok(CallbackKey(vec![b'k'; MIN_KEY_BYTES])));
        assert_eq!(format!("{:?}", key(b'k')), "CallbackKey(..)");
    }
}
