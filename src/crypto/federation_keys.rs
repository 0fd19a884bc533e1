//! The gateway's federation keys on disk, under `<keys dir>/federation/`:
//! private JWKs `sig-<kid>.jwk` (signing) and `enc-<kid>.jwk` (receiving),
//! and the TLS key and self-signed certificate it presents to peers
//! (`tls.key`, `tls.crt`). Every private file is created with mode 0600 and
//! never overwritten. Rotation adds a key pair beside the old one; the
//! directory's validity windows decide which is used when.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use josekit::jwk::Jwk;
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};

use super::at_rest::{KeyError, write_private};
use super::jose_keys::{self, DecryptionKey, KeyUse, SigningKey};

pub const FEDERATION_DIR: &str = "federation";
pub const TLS_KEY_FILE: &str = "tls.key";
pub const TLS_CERTIFICATE_FILE: &str = "tls.crt";

#[derive(Debug, thiserror::Error)]
pub enum FederationKeyError {
    #[error(transparent)]
    File(#[from] KeyError),
    #[error("{0} already holds federation keys; use `keys rotate` to add new ones")]
    Exists(PathBuf),
    #[error("{path}: not a usable private key: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{0} holds no signing key and no encryption key")]
    Empty(PathBuf),
    #[error("cannot make the TLS certificate: {0}")]
    Certificate(String),
    #[error("cannot make or publish a key: {0}")]
    Key(String),
}

/// This gateway's private federation keys, as found on disk.
#[derive(Clone)]
pub struct FederationKeys {
    pub signing: Vec<SigningKey>,
    pub decryption: Vec<DecryptionKey>,
    /// The public halves, for `keys public`.
    public: Vec<(KeyUse, Jwk)>,
    tls_key_pem: String,
    tls_certificate_pem: String,
}

/// Names the keys, never their private parts.
impl std::fmt::Debug for FederationKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.public.iter().filter_map(|(_, jwk)| jwk.key_id()).collect();
        f.debug_struct("FederationKeys").field("key_ids", &kids).finish_non_exhaustive()
    }
}

fn federation_dir(keys_dir: &Path) -> PathBuf {
    keys_dir.join(FEDERATION_DIR)
}

/// Creates the federation keys: one signing key, one encryption key, and a
/// TLS key with a self-signed certificate for `tls_names` (host names or IPs).
pub fn init(keys_dir: &Path, tls_names: &[String]) -> Result<(), FederationKeyError> {
    let dir = federation_dir(keys_dir);
    if dir.join(TLS_KEY_FILE).exists() || list(&dir).is_ok_and(|files| !files.is_empty()) {
        return Err(FederationKeyError::Exists(dir));
    }
    // Everything that can fail for a reason other than the disk comes first,
    // so that a refused name leaves no half-made key directory behind.
    let key = KeyPair::generate().map_err(|e| FederationKeyError::Certificate(e.to_string()))?;
    let mut params = CertificateParams::new(tls_names.to_vec()).map_err(|e| FederationKeyError::Certificate(e.to_string()))?;
    params.distinguished_name.push(DnType::CommonName, "referral-gateway federation endpoint");
    let certificate = params.self_signed(&key).map_err(|e| FederationKeyError::Certificate(e.to_string()))?;
    fs::create_dir_all(&dir).map_err(|source| KeyError::Write { path: dir.clone(), source })?;
    add_pair(&dir)?;
    write_private(&dir.join(TLS_KEY_FILE), key.serialize_pem().as_bytes())?;
    write_private(&dir.join(TLS_CERTIFICATE_FILE), certificate.pem().as_bytes())?;
    Ok(())
}

/// Adds a new signing and encryption key pair; returns their key ids.
pub fn rotate(keys_dir: &Path) -> Result<(String, String), FederationKeyError> {
    add_pair(&federation_dir(keys_dir))
}

fn add_pair(dir: &Path) -> Result<(String, String), FederationKeyError> {
    let mut kids = Vec::new();
    for use_ in [KeyUse::Sig, KeyUse::Enc] {
        let jwk = jose_keys::generate(use_).map_err(|e| FederationKeyError::Key(e.to_string()))?;
        let kid = jwk.key_id().unwrap_or_default().to_owned();
        write_private(&dir.join(format!("{}-{kid}.jwk", use_.as_str())), jwk.to_string().as_bytes())?;
        kids.push(kid);
    }
    let enc = kids.pop().unwrap_or_default();
    let sig = kids.pop().unwrap_or_default();
    Ok((sig, enc))
}

fn list(dir: &Path) -> Result<Vec<(KeyUse, PathBuf)>, KeyError> {
    let entries = fs::read_dir(dir).map_err(|source| KeyError::Read { path: dir.to_path_buf(), source })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|source| KeyError::Read { path: dir.to_path_buf(), source })?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let use_ = if name.starts_with("sig-") && name.ends_with(".jwk") {
            KeyUse::Sig
        } else if name.starts_with("enc-") && name.ends_with(".jwk") {
            KeyUse::Enc
        } else {
            continue;
        };
        files.push((use_, path));
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// Reads every key under `<keys dir>/federation/`.
pub fn load(keys_dir: &Path) -> Result<FederationKeys, FederationKeyError> {
    let dir = federation_dir(keys_dir);
    let mut keys = FederationKeys { signing: Vec::new(), decryption: Vec::new(), public: Vec::new(), tls_key_pem: String::new(), tls_certificate_pem: String::new() };
    for (use_, path) in list(&dir)? {
        let malformed = |reason: String| FederationKeyError::Malformed { path: path.clone(), reason };
        let text = fs::read_to_string(&path).map_err(|source| KeyError::Read { path: path.clone(), source })?;
        let jwk = Jwk::from_bytes(text.as_bytes()).map_err(|e| malformed(e.to_string()))?;
        match use_ {
            KeyUse::Sig => keys.signing.push(SigningKey::from_jwk(&jwk).map_err(|e| malformed(e.to_string()))?),
            KeyUse::Enc => keys.decryption.push(DecryptionKey::from_jwk(&jwk).map_err(|e| malformed(e.to_string()))?),
        }
        keys.public.push((use_, jose_keys::public_of(&jwk).map_err(|e| malformed(e.to_string()))?));
    }
    if keys.signing.is_empty() && keys.decryption.is_empty() {
        return Err(FederationKeyError::Empty(dir));
    }
    let tls_key = dir.join(TLS_KEY_FILE);
    keys.tls_key_pem = fs::read_to_string(&tls_key).map_err(|source| KeyError::Read { path: tls_key, source })?;
    let certificate = dir.join(TLS_CERTIFICATE_FILE);
    keys.tls_certificate_pem = fs::read_to_string(&certificate).map_err(|source| KeyError::Read { path: certificate, source })?;
    Ok(keys)
}

impl FederationKeys {
    /// SHA-256 of the TLS key's SubjectPublicKeyInfo, standard base64: the
    /// pin the directory lists for this gateway.
    pub fn tls_spki_pin(&self) -> Result<String, FederationKeyError> {
        let key = KeyPair::from_pem(&self.tls_key_pem).map_err(|e| FederationKeyError::Certificate(e.to_string()))?;
        Ok(spki_pin(&key.subject_public_key_info()))
    }

    /// The TLS certificate chain and private key, for both ends of peer connections.
    pub fn tls_identity(
        &self,
    ) -> Result<(Vec<rustls_pki_types::CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>), FederationKeyError> {
        use rustls_pki_types::pem::PemObject;
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(self.tls_certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FederationKeyError::Certificate(e.to_string()))?;
        if chain.is_empty() {
            return Err(FederationKeyError::Certificate("tls.crt holds no certificate".to_owned()));
        }
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(self.tls_key_pem.as_bytes())
            .map_err(|e| FederationKeyError::Certificate(e.to_string()))?;
        Ok((chain, key))
    }

    /// Certificate then private key, PEM: the client identity this gateway
    /// presents when it pushes cases to recipients' webhooks.
    pub fn tls_identity_pem(&self) -> String {
        format!("{}\n{}", self.tls_certificate_pem.trim_end(), self.tls_key_pem)
    }

    /// The public halves of the federation keys, each with its use: what
    /// the directory publishes (`directory::published_keys`).
    pub fn public_keys(&self) -> &[(KeyUse, Jwk)] {
        &self.public
    }
}

/// SHA-256 of a DER SubjectPublicKeyInfo, standard base64.
pub fn spki_pin(spki_der: &[u8]) -> String {
    STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_private_files_once_and_rotation_adds_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["localhost".to_owned()]).unwrap();
        assert!(matches!(init(dir.path(), &["localhost".to_owned()]), Err(FederationKeyError::Exists(_))));
        let keys = load(dir.path()).unwrap();
        assert_eq!((keys.signing.len(), keys.decryption.len()), (1, 1));
        #[cfg(unix)]
        for entry in fs::read_dir(dir.path().join(FEDERATION_DIR)).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }

        let (sig, enc) = rotate(dir.path()).unwrap();
        let keys = load(dir.path()).unwrap();
        assert_eq!((keys.signing.len(), keys.decryption.len()), (2, 2));
        assert!(keys.signing.iter().any(|k| k.kid() == sig));
        assert!(keys.decryption.iter().any(|k| k.kid() == enc));
        let pin = keys.tls_spki_pin().unwrap();
        assert_eq!(STANDARD.decode(pin).unwrap().len(), 32);
    }

    #[test]
    fn a_damaged_key_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &["localhost".to_owned()]).unwrap();
        fs::write(dir.path().join(FEDERATION_DIR).join("sig-broken.jwk"), "{").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("sig-broken.jwk"), "{error}");
    }
}
