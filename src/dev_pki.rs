//! A throw-away PKI for local runs and the demo: a CA, a server certificate
//! for `localhost`, and self-signed client certificates whose fingerprints
//! go into the gateway configuration. Not for production: real deployments
//! use certificates from the federation's and the national PKIs.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::config::CertificateFingerprint;

#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot sign the directory: {0}")]
    Directory(String),
}

/// A directory signed by a throw-away coordinator key.
#[derive(Debug, Clone)]
pub struct SignedDirectoryFiles {
    /// The signed directory (compact JWS): `directory.file`.
    pub directory: PathBuf,
    /// The coordinator's public key: `directory.coordinator_key`.
    pub coordinator_key: PathBuf,
    /// Its private key (mode 0600), to sign later editions.
    pub coordinator_private_key: PathBuf,
}

/// Signs `directory_json` with a fresh coordinator key and writes
/// `directory.jws`, `coordinator.pub.jwk` and `coordinator.jwk` into `dir`.
pub fn sign_directory(dir: &Path, directory_json: &str) -> Result<SignedDirectoryFiles, DevPkiError> {
    use crate::crypto::jose_keys::{self, KeyUse, SigningKey};
    let failed = |e: &dyn std::fmt::Display| DevPkiError::Directory(e.to_string());
    std::fs::create_dir_all(dir).map_err(|source| DevPkiError::Write { path: dir.to_path_buf(), source })?;
    let key = jose_keys::generate(KeyUse::Sig).map_err(|e| failed(&e))?;
    let signer = SigningKey::from_jwk(&key).map_err(|e| failed(&e))?;
    let signed = crate::directory::signed::sign(directory_json, &signer).map_err(|e| failed(&e))?;
    let public = jose_keys::public_of(&key).map_err(|e| failed(&e))?;
    Ok(SignedDirectoryFiles {
        directory: write(dir.join("directory.jws"), &signed)?,
        coordinator_key: write(dir.join("coordinator.pub.jwk"), &public.to_string())?,
        coordinator_private_key: write(dir.join("coordinator.jwk"), &key.to_string())?,
    })
}

/// A client certificate written to disk.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub name: String,
    /// Certificate then key, PEM: what `curl --cert` takes.
    pub pem: PathBuf,
    pub fingerprint: CertificateFingerprint,
}

#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca: PathBuf,
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    pub clients: Vec<ClientFiles>,
}

/// Writes a file readable by its owner only: most of these hold private keys.
fn write(path: PathBuf, contents: &str) -> Result<PathBuf, DevPkiError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let fail = |source| DevPkiError::Write { path: path.clone(), source };
    let mut file = options.open(&path).map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)?;
    Ok(path)
}

/// A development PKI in memory, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Generated {
    pub ca_pem: String,
    pub server_certificate_pem: String,
    pub server_key_pem: String,
    /// Per client name: certificate then key (PEM), and the fingerprint.
    pub clients: Vec<(String, String, CertificateFingerprint)>,
}

/// A CA, a server certificate for `localhost` and `127.0.0.1` signed by it,
/// and a self-signed certificate per client name.
pub fn generate(clients: &[&str]) -> Result<Generated, DevPkiError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "referral-gateway development CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let server_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let mut generated = Vec::new();
    for name in clients {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, *name);
        let cert = params.self_signed(&key)?;
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        generated.push(((*name).to_owned(), pem, CertificateFingerprint::of_der(cert.der())));
    }
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        server_certificate_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        clients: generated,
    })
}

/// Writes `ca.pem`, `server.pem`, `server.key` and `<name>.pem` per client into `dir`.
pub fn create(dir: &Path, clients: &[&str]) -> Result<DevPki, DevPkiError> {
    std::fs::create_dir_all(dir).map_err(|source| DevPkiError::Write { path: dir.to_path_buf(), source })?;
    let generated = generate(clients)?;
    let mut written = Vec::new();
    for (name, pem, fingerprint) in generated.clients {
        let pem = write(dir.join(format!("{name}.pem")), &pem)?;
        written.push(ClientFiles { name, pem, fingerprint });
    }
    Ok(DevPki {
        ca: write(dir.join("ca.pem"), &generated.ca_pem)?,
        server_certificate: write(dir.join("server.pem"), &generated.server_certificate_pem)?,
        server_key: write(dir.join("server.key"), &generated.server_key_pem)?,
        clients: written,
    })
}
