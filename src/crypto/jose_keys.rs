//! Federation keys as JWKs (josekit): P-256 keys that sign (ES256) and that
//! receive (ECDH-ES key agreement, content in AES-256-GCM).
//!
//! Key ids are RFC 7638 thumbprints, so a key's id follows from the key and
//! two gateways cannot publish the same id for different keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::ECDH_ES;
use josekit::jwe::alg::ecdh_es::{EcdhEsJweDecrypter, EcdhEsJweEncrypter};
use josekit::jwk::Jwk;
use josekit::jwk::alg::ec::EcCurve;
use josekit::jws::ES256;
use josekit::jws::alg::ecdsa::{EcdsaJwsSigner, EcdsaJwsVerifier};
use serde::{Deserialize, Serialize};

/// The JWS algorithm of every federation signature.
pub const SIGNING_ALG: &str = "ES256";
/// The JWE key agreement of every packet.
pub const KEY_AGREEMENT_ALG: &str = "ECDH-ES";
/// The JWE content encryption of every packet.
pub const CONTENT_ENC: &str = "A256GCM";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    #[error("the key is not a P-256 EC key")]
    NotP256,
    #[error("the key holds a private part where only a public key belongs")]
    PrivatePartPublished,
    #[error("the key has no private part")]
    NotPrivate,
    #[error("the key's `use` is not {0}")]
    WrongUse(&'static str),
    #[error("the key's `kid` is not its RFC 7638 thumbprint")]
    KidMismatch,
    #[error("the key cannot be used: {0}")]
    Unusable(String),
}

/// What a key is for, as the JWK `use` member says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyUse {
    Sig,
    Enc,
}

impl KeyUse {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sig => "sig",
            Self::Enc => "enc",
        }
    }

    fn alg(self) -> &'static str {
        match self {
            Self::Sig => SIGNING_ALG,
            Self::Enc => KEY_AGREEMENT_ALG,
        }
    }
}

/// RFC 7638 thumbprint of a P-256 key: SHA-256 over its required members in
/// lexicographic order, base64url without padding.
pub fn thumbprint(jwk: &Jwk) -> Result<String, JwkError> {
    let member = |name: &str| jwk.parameter(name).and_then(|v| v.as_str()).ok_or(JwkError::NotP256);
    if jwk.key_type() != "EC" || member("crv")? != "P-256" {
        return Err(JwkError::NotP256);
    }
    let canonical = serde_json::json!({ "crv": "P-256", "kty": "EC", "x": member("x")?, "y": member("y")? });
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.to_string().as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// A fresh private key for `use_`, with `kid`, `use` and `alg` set.
pub fn generate(use_: KeyUse) -> Result<Jwk, JwkError> {
    let mut jwk = Jwk::generate_ec_key(EcCurve::P256).map_err(|e| JwkError::Unusable(e.to_string()))?;
    jwk.set_key_use(use_.as_str());
    jwk.set_algorithm(use_.alg());
    jwk.set_key_id(thumbprint(&jwk)?);
    Ok(jwk)
}

/// Checks that `jwk` is a public P-256 key for `use_` whose `kid` is its thumbprint.
pub fn check_public(jwk: &Jwk, use_: KeyUse) -> Result<String, JwkError> {
    if jwk.parameter("d").is_some() {
        return Err(JwkError::PrivatePartPublished);
    }
    check(jwk, use_)
}

fn check(jwk: &Jwk, use_: KeyUse) -> Result<String, JwkError> {
    let kid = thumbprint(jwk)?;
    if jwk.key_use() != Some(use_.as_str()) || jwk.algorithm().is_some_and(|alg| alg != use_.alg()) {
        return Err(JwkError::WrongUse(use_.as_str()));
    }
    if jwk.key_id() != Some(kid.as_str()) {
        return Err(JwkError::KidMismatch);
    }
    Ok(kid)
}

/// The public half of a private key, with the same `kid`, `use` and `alg`.
pub fn public_of(jwk: &Jwk) -> Result<Jwk, JwkError> {
    let mut public = jwk.to_public_key().map_err(|e| JwkError::Unusable(e.to_string()))?;
    if let Some(use_) = jwk.key_use() {
        public.set_key_use(use_);
    }
    if let Some(alg) = jwk.algorithm() {
        public.set_algorithm(alg);
    }
    if let Some(kid) = jwk.key_id() {
        public.set_key_id(kid);
    }
    Ok(public)
}

/// The `kid` of a compact JWS or JWE's protected header, read before
/// verifying so that the right key can be looked up. Nothing else in the
/// header is trusted until the signature or decryption has checked it.
pub fn unverified_kid(compact: &[u8]) -> Option<String> {
    let header = compact.split(|byte| *byte == b'.').next()?;
    let header = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// A key this gateway signs with.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    signer: EcdsaJwsSigner,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        if jwk.parameter("d").is_none() {
            return Err(JwkError::NotPrivate);
        }
        let kid = check(jwk, KeyUse::Sig)?;
        let signer = ES256.signer_from_jwk(jwk).map_err(|e| JwkError::Unusable(e.to_string()))?;
        Ok(Self { kid, signer })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn signer(&self) -> &EcdsaJwsSigner {
        &self.signer
    }
}

/// Another party's key that signatures are checked against.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    verifier: EcdsaJwsVerifier,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        let kid = check_public(jwk, KeyUse::Sig)?;
        let verifier = ES256.verifier_from_jwk(jwk).map_err(|e| JwkError::Unusable(e.to_string()))?;
        Ok(Self { kid, verifier })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn verifier(&self) -> &EcdsaJwsVerifier {
        &self.verifier
    }
}

/// A peer's key that packets are encrypted to.
#[derive(Clone)]
pub struct EncryptionKey {
    kid: String,
    encrypter: EcdhEsJweEncrypter,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl EncryptionKey {
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        let kid = check_public(jwk, KeyUse::Enc)?;
        let encrypter = ECDH_ES.encrypter_from_jwk(jwk).map_err(|e| JwkError::Unusable(e.to_string()))?;
        Ok(Self { kid, encrypter })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn encrypter(&self) -> &EcdhEsJweEncrypter {
        &self.encrypter
    }
}

/// A key of ours that packets addressed to us are decrypted with.
#[derive(Clone)]
pub struct DecryptionKey {
    kid: String,
    decrypter: EcdhEsJweDecrypter,
}

impl std::fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl DecryptionKey {
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        if jwk.parameter("d").is_none() {
            return Err(JwkError::NotPrivate);
        }
        let kid = check(jwk, KeyUse::Enc)?;
        let decrypter = ECDH_ES.decrypter_from_jwk(jwk).map_err(|e| JwkError::Unusable(e.to_string()))?;
        Ok(Self { kid, decrypter })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn decrypter(&self) -> &EcdhEsJweDecrypter {
        &self.decrypter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_named_by_its_thumbprint_and_checks_as_what_it_is_for() {
        let key = generate(KeyUse::Sig).unwrap();
        let public = public_of(&key).unwrap();
        assert_eq!(public.key_id(), Some(thumbprint(&key).unwrap().as_str()));
        assert!(public.parameter("d").is_none());
        assert!(SigningKey::from_jwk(&key).is_ok());
        assert!(VerifyingKey::from_jwk(&public).is_ok());
        assert_eq!(EncryptionKey::from_jwk(&public).unwrap_err(), JwkError::WrongUse("enc"));
        assert_eq!(VerifyingKey::from_jwk(&key).unwrap_err(), JwkError::PrivatePartPublished);
        assert_eq!(SigningKey::from_jwk(&public).unwrap_err(), JwkError::NotPrivate);
    }

    #[test]
    fn a_key_id_that_is_not_the_thumbprint_is_refused() {
        let mut key = public_of(&generate(KeyUse::Enc).unwrap()).unwrap();
        key.set_key_id("gateway-ita-2026");
        assert_eq!(EncryptionKey::from_jwk(&key).unwrap_err(), JwkError::KidMismatch);
    }

    #[test]
    fn the_thumbprint_of_a_known_key_is_the_known_value() {
        // The P-256 key of RFC 7517 appendix A.1; the value was computed
        // independently (Python: sorted compact JSON of crv, kty, x, y; SHA-256; base64url).
        let jwk = Jwk::from_bytes(
            br#"{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"enc","kid":"1"}"#,
        )
        .unwrap();
        assert_eq!(thumbprint(&jwk).unwrap(), "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s");
    }

    #[test]
    fn the_thumbprint_matches_rfc_7638_canonical_form() {
        // Same key, members in another order and extra members: same thumbprint.
        let key = public_of(&generate(KeyUse::Sig).unwrap()).unwrap();
        let map = key.as_ref().clone();
        let reordered = serde_json::json!({
            "y": map["y"], "x": map["x"], "kty": "EC", "crv": "P-256", "use": "sig", "kid": "other"
        });
        let reordered = Jwk::from_map(reordered.as_object().unwrap().clone()).unwrap();
        assert_eq!(thumbprint(&key).unwrap(), thumbprint(&reordered).unwrap());
        assert_eq!(thumbprint(&key).unwrap().len(), 43);
    }
}
