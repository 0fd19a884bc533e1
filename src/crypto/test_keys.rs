//! Gateways' key pairs and a trust list for the crypto modules' tests.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use josekit::jwk::Jwk;

use super::jose_keys::{generate, public_of, DecryptionKey, EncryptionKey, KeyUse, SigningKey, VerifyingKey};
use super::packet::{PublishedSigner, SignerDirectory};
use crate::domain::CountryCode;

/// One gateway's keys: private halves, and the public halves a directory lists.
pub struct Member {
    pub country: CountryCode,
    pub signing: SigningKey,
    pub signing_public: Jwk,
    pub decryption: DecryptionKey,
    pub encryption: EncryptionKey,
}

pub fn member(country: &str) -> Member {
    let signing = generate(KeyUse::Sig).unwrap();
    let encryption = generate(KeyUse::Enc).unwrap();
    Member {
        country: CountryCode::parse(country).unwrap(),
        signing: SigningKey::from_jwk(&signing).unwrap(),
        signing_public: public_of(&signing).unwrap(),
        decryption: DecryptionKey::from_jwk(&encryption).unwrap(),
        encryption: EncryptionKey::from_jwk(&public_of(&encryption).unwrap()).unwrap(),
    }
}

#[derive(Default)]
pub struct Trust(HashMap<String, PublishedSigner>);

impl Trust {
    pub fn with(mut self, member: &Member, active: bool) -> Self {
        let key = VerifyingKey::from_jwk(&member.signing_public).unwrap();
        self.0.insert(key.kid().to_owned(), PublishedSigner { country: member.country, active, key });
        self
    }
}

impl SignerDirectory for Trust {
    fn signer(&self, kid: &str, _at: DateTime<Utc>) -> Option<PublishedSigner> {
        self.0.get(kid).cloned()
    }
}
