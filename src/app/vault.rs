//! Sealing personal data at rest: each case under a case key of its own
//! (see `crypto::case_keys`), and opening whatever was sealed, under a case
//! key or, for records older than case keys, under the gateway-wide key.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::AppError;
use crate::crypto::at_rest::KeyRing;
use crate::crypto::case_keys::{case_key_id_of, new_case_key, unwrap_case_key, CaseKey};
use crate::store::case_keys::CaseKeyStore;
use crate::store::SealedPayload;

/// Fresh case keys stored at once: one durable write to the case-key store
/// serves this many cases.
const FRESH_KEYS_PER_WRITE: usize = 32;

pub struct Vault {
    pub keys: KeyRing,
    case_keys: Arc<dyn CaseKeyStore>,
    /// Case keys already stored and not yet given to a case.
    fresh: Mutex<Vec<CaseKey>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(keys: KeyRing, case_keys: Arc<dyn CaseKeyStore>) -> Self {
        Self { keys, case_keys, fresh: Mutex::new(Vec::new()) }
    }

    /// A case key of its own for a new case, already durably stored: the
    /// data sealed under it can never outlive a crash that loses the key.
    pub async fn new_case_key(&self, now_ms: i64) -> Result<CaseKey, AppError> {
        let mut fresh = self.fresh.lock().await;
        if fresh.is_empty() {
            let made = (0..FRESH_KEYS_PER_WRITE).map(|_| new_case_key(&self.keys)).collect::<Result<Vec<_>, _>>()?;
            let wrapped: Vec<_> = made.iter().map(|(_, wrapped)| wrapped.clone()).collect();
            self.case_keys.put(&wrapped, now_ms).await?;
            fresh.extend(made.into_iter().map(|(key, _)| key));
        }
        fresh.pop().ok_or_else(|| AppError::Internal("no fresh case key".to_owned()))
    }

    /// `plaintext` sealed under `key`, bound to `context` (the record's id).
    pub fn seal(&self, key: &CaseKey, plaintext: &[u8], context: &[u8]) -> Result<SealedPayload, AppError> {
        Ok(SealedPayload { sealed: key.seal(plaintext, context)?, key_id: key.id().to_owned() })
    }

    /// Opens a sealed value: under its case key, which must still exist, or
    /// (older records) under the gateway-wide key.
    pub async fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, AppError> {
        let Some(id) = case_key_id_of(sealed) else {
            return Ok(self.keys.open(sealed, context)?);
        };
        let key = self.case_key(&id).await?.ok_or(AppError::Erased)?;
        Ok(key.open(sealed, context)?)
    }

    /// The case key of `id`, unless it was destroyed.
    pub async fn case_key(&self, id: &str) -> Result<Option<CaseKey>, AppError> {
        let wrapped = self.case_keys.get(&[id.to_owned()]).await?;
        wrapped.first().map(|w| unwrap_case_key(&self.keys, w)).transpose().map_err(AppError::from)
    }

    /// Destroys case keys: what was sealed under them is erased, in every copy.
    pub async fn destroy(&self, ids: &[String]) -> Result<u64, AppError> {
        Ok(self.case_keys.destroy(ids).await?)
    }
}
