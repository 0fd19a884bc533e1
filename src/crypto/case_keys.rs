//! Per-case data keys, for crypto-shredding. Each case's personal data at
//! rest is sealed under a fresh AES-256-GCM key of its own. That key exists
//! only wrapped (sealed under the gateway's key-encryption key, the
//! `data.key` file) and only in the case-key store, which lives apart from
//! the data and is never backed up with it: destroying the wrapped key there
//! makes every copy of the case's data (a backup, a WAL file, a stolen
//! database file) unreadable at once, wherever the copy went.

use ring::aead::{self, LessSafeKey, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::at_rest::{open_framed, seal_framed, KeyError, KeyRing};

/// Format version of a value sealed under a case key; its first byte. The
/// gateway-wide format (`at_rest`) uses 1.
const SEALED_CASE_V1: u8 = 2;
/// Random bytes of a case key's id.
const CASE_KEY_ID_LEN: usize = 16;

/// A case key, unwrapped: held in memory only while a case is read or written.
pub struct CaseKey {
    id: String,
    id_bytes: [u8; CASE_KEY_ID_LEN],
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for CaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaseKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A case key as the case-key store keeps it: its id, and the key sealed
/// under the key-encryption key, bound to that id.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedCaseKey {
    pub id: String,
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for WrappedCaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedCaseKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What a wrapped key is bound to: it opens under no other id.
fn wrapping_context(id: &str) -> Vec<u8> {
    [b"referral-gateway case key\0".as_slice(), id.as_bytes()].concat()
}

/// Whether `text` has the shape of a case key id (lower-case hex of 16 bytes).
pub fn is_case_key_id(text: &str) -> bool {
    text.len() == 2 * CASE_KEY_ID_LEN && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh case key, and its wrapped form to store before anything is sealed under it.
pub fn new_case_key(kek: &KeyRing) -> Result<(CaseKey, WrappedCaseKey), KeyError> {
    let rng = SystemRandom::new();
    let mut id_bytes = [0u8; CASE_KEY_ID_LEN];
    rng.fill(&mut id_bytes).map_err(|_| KeyError::Random)?;
    let mut key = [0u8; 32];
    rng.fill(&mut key).map_err(|_| KeyError::Random)?;
    let id = crate::hex::encode(&id_bytes);
    let wrapped = WrappedCaseKey { wrapped: kek.seal(&key, &wrapping_context(&id))?, id };
    Ok((CaseKey::from_parts(id_bytes, &key)?, wrapped))
}

/// The case key a stored wrapped key holds; fails if it was altered, moved
/// to another id, or wrapped by another gateway's key-encryption key.
pub fn unwrap_case_key(kek: &KeyRing, wrapped: &WrappedCaseKey) -> Result<CaseKey, KeyError> {
    if !is_case_key_id(&wrapped.id) {
        return Err(KeyError::SealedMalformed);
    }
    let key = kek.open(&wrapped.wrapped, &wrapping_context(&wrapped.id))?;
    let key: [u8; 32] = key.try_into().map_err(|_| KeyError::SealedMalformed)?;
    let id_bytes = crate::hex::decode(&wrapped.id).and_then(|b| b.try_into().ok()).ok_or(KeyError::SealedMalformed)?;
    CaseKey::from_parts(id_bytes, &key)
}

/// The id of the case key a sealed value needs, or `None` if it was not
/// sealed under a case key.
pub fn case_key_id_of(sealed: &[u8]) -> Option<String> {
    match sealed.split_first() {
        Some((&SEALED_CASE_V1, rest)) => rest.get(..CASE_KEY_ID_LEN).map(crate::hex::encode),
        _ => None,
    }
}

impl CaseKey {
    fn from_parts(id_bytes: [u8; CASE_KEY_ID_LEN], key: &[u8; 32]) -> Result<Self, KeyError> {
        let unbound = UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| KeyError::SealedMalformed)?;
        Ok(Self { id: crate::hex::encode(&id_bytes), id_bytes, key: LessSafeKey::new(unbound), rng: SystemRandom::new() })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` bound to `context` (the record's id), so that a
    /// ciphertext copied to another record does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        seal_framed(&self.key, &self.rng, SEALED_CASE_V1, &self.id_bytes, plaintext, context)
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        open_framed(&self.key, SEALED_CASE_V1, &self.id_bytes, sealed, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::at_rest;

    fn kek() -> (tempfile::TempDir, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        at_rest::init(dir.path()).unwrap();
        let keys = KeyRing::load(dir.path()).unwrap();
        (dir, keys)
    }

    #[test]
    fn a_case_key_seals_what_only_it_opens_in_its_context() {
        let (_dir, kek) = kek();
        let (key, wrapped) = new_case_key(&kek).unwrap();
        let sealed = key.seal(b"Amina Diallo, born 2009", b"referral-1").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"Amina"));
        assert_eq!(case_key_id_of(&sealed).as_deref(), Some(key.id()));
        assert_eq!(key.open(&sealed, b"referral-1").unwrap(), b"Amina Diallo, born 2009");
        assert!(matches!(key.open(&sealed, b"referral-2"), Err(KeyError::Tampered)));
        let unwrapped = unwrap_case_key(&kek, &wrapped).unwrap();
        assert_eq!(unwrapped.open(&sealed, b"referral-1").unwrap(), b"Amina Diallo, born 2009");

        let (other, _) = new_case_key(&kek).unwrap();
        assert!(matches!(other.open(&sealed, b"referral-1"), Err(KeyError::UnknownKey(_))));
        assert_ne!(other.id(), key.id());
    }

    #[test]
    fn the_wrapped_key_holds_no_key_in_clear_and_opens_under_its_own_id_only() {
        let (_dir, kek) = kek();
        let (key, wrapped) = new_case_key(&kek).unwrap();
        assert!(is_case_key_id(&wrapped.id));
        assert_eq!(wrapped.id, key.id());
        // Moved to another key's id, it does not open.
        let (_, second) = new_case_key(&kek).unwrap();
        let moved = WrappedCaseKey { id: second.id.clone(), wrapped: wrapped.wrapped.clone() };
        assert!(matches!(unwrap_case_key(&kek, &moved), Err(KeyError::Tampered)));
        // Altered, it does not open.
        let mut altered = wrapped.clone();
        if let Some(last) = altered.wrapped.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(unwrap_case_key(&kek, &altered), Err(KeyError::Tampered)));
        // Another gateway's key-encryption key cannot unwrap it.
        let (_other_dir, other_kek) = self::kek();
        assert!(matches!(unwrap_case_key(&other_kek, &wrapped), Err(KeyError::UnknownKey(_))));
        // Nor does Debug print it.
        assert!(!format!("{wrapped:?} {key:?}").contains(&format!("{:?}", wrapped.wrapped)));
    }

    #[test]
    fn values_sealed_gateway_wide_are_told_apart_from_case_sealed_ones() {
        let (_dir, kek) = kek();
        let gateway_wide = kek.seal(b"x", b"c").unwrap();
        assert_eq!(case_key_id_of(&gateway_wide), None);
        assert_eq!(case_key_id_of(&[]), None);
        let (key, _) = new_case_key(&kek).unwrap();
        assert!(matches!(key.open(&gateway_wide, b"c"), Err(KeyError::SealedMalformed)));
        assert!(matches!(key.open(&[SEALED_CASE_V1, 1, 2], b"c"), Err(KeyError::SealedMalformed)));
    }

    #[test]
    fn case_key_ids_have_one_shape() {
        assert!(is_case_key_id("0123456789abcdef0123456789abcdef"));
        for bad in ["", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef", "0123456789abcdef0123456789abcdeg", "../../etc/passwd"] {
            assert!(!is_case_key_id(bad), "{bad}");
        }
    }
}
