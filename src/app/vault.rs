//! Sealing personal data at rest: each case under a case key of its own
//! (see `crypto::case_keys`), and opening whatever was sealed, under a case
//! key or, for records older than case keys, under the gateway-wide key.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::AppError;
use crate::crypto::at_rest::{KeyError, KeyRing};
use crate::crypto::case_keys::{case_key_id_of, is_case_key_id, new_case_key, unwrap_case_key, CaseKey};
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
        self.open_all(&[(sealed, context)]).await?.pop().unwrap_or_else(|| Err(AppError::Internal("no value opened".to_owned())))
    }

    /// Opens many sealed values with one read of the case-key store, each
    /// answered on its own.
    pub async fn open_all(&self, sealed: &[(&[u8], &[u8])]) -> Result<Vec<Result<Vec<u8>, AppError>>, AppError> {
        let mut ids: Vec<String> = sealed.iter().filter_map(|(value, _)| case_key_id_of(value)).collect();
        ids.sort();
        ids.dedup();
        // A key that does not unwrap fails the values sealed under it, not the others.
        let keys: HashMap<String, Result<CaseKey, KeyError>> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.case_keys.get(&ids).await?.iter().map(|w| (w.id.clone(), unwrap_case_key(&self.keys, w))).collect()
        };
        Ok(sealed
            .iter()
            .map(|(value, context)| match case_key_id_of(value) {
                None => Ok(self.keys.open(value, context)?),
                Some(id) => match keys.get(&id) {
                    None => Err(AppError::Erased),
                    Some(Err(error)) => Err(AppError::Internal(format!("case key {id}: {error}"))),
                    Some(Ok(key)) => Ok(key.open(value, context)?),
                },
            })
            .collect())
    }

    /// The case key of `id`, unless it was destroyed.
    pub async fn case_key(&self, id: &str) -> Result<Option<CaseKey>, AppError> {
        let wrapped = self.case_keys.get(&[id.to_owned()]).await?;
        wrapped.first().map(|w| unwrap_case_key(&self.keys, w)).transpose().map_err(AppError::from)
    }

    /// Destroys the case keys among `ids`: what was sealed under them is
    /// erased, in every copy. Any other id (data.key's, which sealed records
    /// from before case keys) is not a case key and is passed over, so that
    /// callers can hand over whatever key a record names.
    pub async fn destroy(&self, ids: &[String]) -> Result<u64, AppError> {
        let case_keys: Vec<String> = ids.iter().filter(|id| is_case_key_id(id)).cloned().collect();
        if case_keys.is_empty() {
            return Ok(0);
        }
        let destroyed = self.case_keys.destroy(&case_keys).await?;
        // Committed: a failure to wipe the log afterwards is reported, not
        // answered (the next destruction wipes it again).
        if let Err(error) = self.case_keys.scrub_destroyed().await {
            tracing::warn!(%error, "case-key store: the log of destroyed keys was not wiped; it will be at the next destruction");
        }
        Ok(destroyed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::at_rest;
    use crate::store::case_keys::SqliteCaseKeys;

    async fn vault(dir: &std::path::Path) -> Vault {
        at_rest::init(&dir.join("keys")).unwrap();
        let store = SqliteCaseKeys::open(&dir.join("case-keys.db").display().to_string(), 2).await.unwrap();
        Vault::new(KeyRing::load(&dir.join("keys")).unwrap(), Arc::new(store))
    }

    #[tokio::test]
    async fn opens_old_and_case_sealed_values_alike_until_a_key_is_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path()).await;
        let (first, second) = (vault.new_case_key(0).await.unwrap(), vault.new_case_key(0).await.unwrap());
        assert_ne!(first.id(), second.id());
        let old = vault.keys.seal(b"old", b"r0").unwrap();
        let one = vault.seal(&first, b"one", b"r1").unwrap();
        let two = vault.seal(&second, b"two", b"r2").unwrap();
        assert_eq!(one.key_id, first.id());

        let all = [(old.as_slice(), b"r0".as_slice()), (one.sealed.as_slice(), b"r1".as_slice()), (two.sealed.as_slice(), b"r2".as_slice())];
        let opened: Vec<_> = vault.open_all(&all).await.unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(opened, [b"old".to_vec(), b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(vault.open(&one.sealed, b"r1").await.unwrap(), b"one");

        assert_eq!(vault.destroy(&[vault.keys.data_key_id()]).await.unwrap(), 0, "data.key is not a case key");
        assert_eq!(vault.destroy(&[first.id().to_owned(), vault.keys.data_key_id()]).await.unwrap(), 1);
        // The write-ahead log that held the destroyed key's pages is emptied with it.
        let wal = std::fs::metadata(dir.path().join("case-keys.db-wal")).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal, 0, "the log still holds the destroyed key's pages");
        let after = vault.open_all(&all).await.unwrap();
        assert!(matches!(after[1], Err(AppError::Erased)));
        assert_eq!(after[0].as_ref().unwrap(), b"old");
        assert_eq!(after[2].as_ref().unwrap(), b"two");
        assert!(matches!(vault.open(&one.sealed, b"r1").await, Err(AppError::Erased)));
        // Bound to its record: the ciphertext moved to another record does not open.
        assert!(vault.open(&two.sealed, b"r1").await.is_err());
    }

    #[tokio::test]
    async fn fresh_keys_are_stored_before_they_are_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(dir.path()).await;
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..(FRESH_KEYS_PER_WRITE + 3) {
            let key = vault.new_case_key(0).await.unwrap();
            assert!(vault.case_key(key.id()).await.unwrap().is_some(), "handed out before it was stored");
            ids.insert(key.id().to_owned());
        }
        assert_eq!(ids.len(), FRESH_KEYS_PER_WRITE + 3, "every case gets a key of its own");
    }
}
