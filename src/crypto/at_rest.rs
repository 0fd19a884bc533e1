//! Personal data at rest: AES-256-GCM (ring) with the gateway's data key, and
//! keyed hashes (HMAC-SHA-256 with a separate index key) for the few values
//! the gateway must look up but never read back: subject references and
//! request fingerprints.
//!
//! Both keys live as files in the gateway's key directory.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

pub const DATA_KEY_FILE: &str = "data.key";
pub const INDEX_KEY_FILE: &str = "index.key";

/// Format version of a sealed value; the first byte of every ciphertext.
const SEALED_V1: u8 = 1;
const KEY_ID_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("key file {0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    #[error("key file {0} does not hold a base64-encoded 32-byte key")]
    Malformed(PathBuf),
    #[error("the system random number generator failed")]
    Random,
    #[error("sealed data is malformed")]
    SealedMalformed,
    #[error("sealed data was made with another key ({0})")]
    UnknownKey(String),
    #[error("sealed data failed authentication: altered, or moved from another record")]
    Tampered,
}

/// The gateway's at-rest keys.
pub struct KeyRing {
    data: LessSafeKey,
    data_key_id: [u8; KEY_ID_LEN],
    index: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("data_key_id", &crate::hex::encode(&self.data_key_id)).finish_non_exhaustive()
    }
}

/// Creates the key directory and fresh random keys in it; never overwrites.
pub fn init(dir: &Path) -> Result<(), KeyError> {
    let rng = SystemRandom::new();
    fs::create_dir_all(dir).map_err(|source| KeyError::Write { path: dir.to_path_buf(), source })?;
    for name in [DATA_KEY_FILE, INDEX_KEY_FILE] {
        let path = dir.join(name);
        if path.exists() {
            return Err(KeyError::Exists(path));
        }
    }
    for name in [DATA_KEY_FILE, INDEX_KEY_FILE] {
        let path = dir.join(name);
        let mut key = [0u8; 32];
        rng.fill(&mut key).map_err(|_| KeyError::Random)?;
        write_private(&path, STANDARD.encode(key).as_bytes())?;
    }
    Ok(())
}

pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let write_error = |source| KeyError::Write { path: path.to_path_buf(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

fn read_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_path_buf(), source })?;
    let bytes = STANDARD.decode(text.trim()).map_err(|_| KeyError::Malformed(path.to_path_buf()))?;
    bytes.try_into().map_err(|_| KeyError::Malformed(path.to_path_buf()))
}

/// AES-256-GCM under `key`, framed as `version`, `key_id`, nonce,
/// ciphertext and tag; bound to `context` as associated data.
pub(crate) fn seal_framed(key: &LessSafeKey, rng: &SystemRandom, version: u8, key_id: &[u8], plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; aead::NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut in_out).map_err(|_| KeyError::Random)?;
    let mut sealed = Vec::with_capacity(1 + key_id.len() + nonce.len() + in_out.len());
    sealed.push(version);
    sealed.extend_from_slice(key_id);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&in_out);
    Ok(sealed)
}

/// Opens what [`seal_framed`] made with the same `version` and `key_id`.
pub(crate) fn open_framed(key: &LessSafeKey, version: u8, key_id: &[u8], sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (&found_version, rest) = sealed.split_first().ok_or(KeyError::SealedMalformed)?;
    if found_version != version {
        return Err(KeyError::SealedMalformed);
    }
    let (found_id, rest) = rest.split_at_checked(key_id.len()).ok_or(KeyError::SealedMalformed)?;
    if found_id != key_id {
        return Err(KeyError::UnknownKey(crate::hex::encode(found_id)));
    }
    let (nonce, ciphertext) = rest.split_at_checked(aead::NONCE_LEN).ok_or(KeyError::SealedMalformed)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::SealedMalformed)?;
    let mut in_out = ciphertext.to_vec();
    let plaintext = key.open_in_place(nonce, Aad::from(context), &mut in_out).map_err(|_| KeyError::Tampered)?;
    Ok(plaintext.to_vec())
}

impl KeyRing {
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let data_path = dir.join(DATA_KEY_FILE);
        let data = read_key(&data_path)?;
        let index = read_key(&dir.join(INDEX_KEY_FILE))?;
        Self::from_keys(&data, &index).ok_or(KeyError::Malformed(data_path))
    }

    fn from_keys(data: &[u8; 32], index: &[u8; 32]) -> Option<Self> {
        let unbound = UnboundKey::new(&aead::AES_256_GCM, data).ok()?;
        let id_tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, data), b"referral-gateway key id");
        let data_key_id = id_tag.as_ref().get(..KEY_ID_LEN)?.try_into().ok()?;
        Some(Self {
            data: LessSafeKey::new(unbound),
            data_key_id,
            index: hmac::Key::new(hmac::HMAC_SHA256, index),
            rng: SystemRandom::new(),
        })
    }

    /// A short public id of the data key, stored beside what it sealed.
    pub fn data_key_id(&self) -> String {
        crate::hex::encode(&self.data_key_id)
    }

    /// Encrypts `plaintext`, bound to `context` (e.g. the record's id), so a
    /// ciphertext copied to another record does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        seal_framed(&self.data, &self.rng, SEALED_V1, &self.data_key_id, plaintext, context)
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, KeyError> {
        open_framed(&self.data, SEALED_V1, &self.data_key_id, sealed, context)
    }

    /// A secret of 32 bytes for `purpose` (e.g. the seed of the match
    /// function), derived from the index key: stable as long as the key
    /// is, and independent of every [`KeyRing::index`] output (another
    /// prefix).
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.index);
        context.update(b"derived-secret\0");
        context.update(purpose.as_bytes());
        let tag = context.sign();
        let mut secret = [0u8; 32];
        // HMAC-SHA256 gives exactly 32 bytes.
        for (byte, value) in secret.iter_mut().zip(tag.as_ref()) {
            *byte = *value;
        }
        secret
    }

    /// A keyed hash of `value` in a named domain, as hex: equal inputs give
    /// equal outputs, and nobody without the index key can test a guess.
    pub fn index(&self, domain: &str, value: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.index);
        context.update(domain.as_bytes());
        context.update(&[0]);
        context.update(value);
        crate::hex::encode(context.sign().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (tempfile::TempDir, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let keys = KeyRing::load(dir.path()).unwrap();
        (dir, keys)
    }

    #[test]
    fn sealed_data_opens_only_in_its_context() {
        let (_dir, keys) = ring();
        let sealed = keys.seal(b"Amina Diallo", b"referral-1").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"Amina"));
        assert_eq!(keys.open(&sealed, b"referral-1").unwrap(), b"Amina Diallo");
        assert!(matches!(keys.open(&sealed, b"referral-2"), Err(KeyError::Tampered)));
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert!(matches!(keys.open(&altered, b"referral-1"), Err(KeyError::Tampered)));
        assert!(matches!(keys.open(&sealed[..10], b"referral-1"), Err(KeyError::SealedMalformed)));
    }

    #[test]
    fn two_seals_of_the_same_text_differ() {
        let (_dir, keys) = ring();
        assert_ne!(keys.seal(b"x", b"c").unwrap(), keys.seal(b"x", b"c").unwrap());
    }

    #[test]
    fn another_gateways_key_is_recognised_as_unknown() {
        let (_dir, ours) = ring();
        let (_other_dir, theirs) = ring();
        let sealed = theirs.seal(b"x", b"c").unwrap();
        assert!(matches!(ours.open(&sealed, b"c"), Err(KeyError::UnknownKey(_))));
        assert_ne!(ours.index("subject", b"ITA-2026-0001"), theirs.index("subject", b"ITA-2026-0001"));
    }

    #[test]
    fn index_is_stable_and_separated_by_domain() {
        let (_dir, keys) = ring();
        assert_eq!(keys.index("subject", b"A1"), keys.index("subject", b"A1"));
        assert_ne!(keys.index("subject", b"A1"), keys.index("request", b"A1"));
        assert_eq!(keys.index("subject", b"A1").len(), 64);
    }

    #[test]
    fn init_never_overwrites_and_load_refuses_bad_files() {
        let (dir, _keys) = ring();
        assert!(matches!(init(dir.path()), Err(KeyError::Exists(_))));
        fs::write(dir.path().join(INDEX_KEY_FILE), "not base64!").unwrap();
        assert!(matches!(KeyRing::load(dir.path()), Err(KeyError::Malformed(_))));
    }
}
