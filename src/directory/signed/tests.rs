use chrono::{DateTime, Duration, TimeZone, Utc};
use josekit::jwk::Jwk;

use super::*;
use crate::crypto::jose_keys::{DecryptionKey, KeyUse, generate, public_of};
use crate::crypto::packet::SignerDirectory;
use crate::directory::{DEFAULT_MAX_PACKET_BYTES, DirectoryDocument, MemberStatus, published_key};
use crate::domain::CountryCode;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn example() -> DirectoryDocument {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/directory.example.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ita() -> CountryCode {
    CountryCode::parse("ITA").unwrap()
}

fn coordinator() -> (SigningKey, VerifyingKey) {
    let key = generate(KeyUse::Sig).unwrap();
    (SigningKey::from_jwk(&key).unwrap(), VerifyingKey::from_jwk(&public_of(&key).unwrap()).unwrap())
}

/// The example directory with ITA publishing `keys`, each valid over its window.
fn with_ita_keys(keys: &[(&Jwk, DateTime<Utc>, DateTime<Utc>, KeyUse)]) -> DirectoryDocument {
    let mut document = example();
    let gateway = document.gateways.iter_mut().find(|g| g.country == ita()).unwrap();
    gateway.keys = keys.iter().map(|(jwk, from, until, use_)| published_key(jwk, *from, *until, *use_).unwrap()).collect();
    document
}

#[test]
fn a_signed_directory_verifies_only_against_its_coordinator_and_unaltered() {
    let (signing, verifying) = coordinator();
    let json = serde_json::to_string(&example()).unwrap();
    let signed = sign(&json, &signing).unwrap();
    let directory = verify(&signed, &verifying).unwrap();
    assert!(directory.gateway(ita()).is_some());

    let (_, stranger) = coordinator();
    assert!(matches!(verify(&signed, &stranger), Err(SignedDirectoryError::BadSignature)));

    let parts: Vec<&str> = signed.split('.').collect();
    let mut altered = example();
    altered.organisations.retain(|o| o.id.as_str() != "nga-immigration");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, serde_json::to_vec(&altered).unwrap()),
        parts[2]
    );
    assert!(matches!(verify(&forged, &verifying), Err(SignedDirectoryError::BadSignature)));
}

#[test]
fn an_invalid_directory_is_neither_signed_nor_accepted() {
    let (signing, _) = coordinator();
    let mut document = example();
    document.gateways[0].endpoint = "http://gateway.ita.example".to_owned();
    let json = serde_json::to_string(&document).unwrap();
    assert!(matches!(sign(&json, &signing), Err(SignedDirectoryError::Invalid(DirectoryError::NotHttps(_)))));
}

#[test]
fn a_published_private_key_or_a_repeated_key_is_refused() {
    let key = generate(KeyUse::Sig).unwrap();
    let mut document = with_ita_keys(&[(&key, now(), now() + Duration::days(30), KeyUse::Sig)]);
    let gateway = document.gateways.iter_mut().find(|g| g.country == ita()).unwrap();
    gateway.keys[0].jwk = key.as_ref().clone();
    let error = Directory::from_document(document).unwrap_err().to_string();
    assert!(error.contains("private part"), "{error}");

    let document = with_ita_keys(&[
        (&key, now(), now() + Duration::days(30), KeyUse::Sig),
        (&key, now() + Duration::days(20), now() + Duration::days(60), KeyUse::Sig),
    ]);
    assert!(matches!(Directory::from_document(document), Err(DirectoryError::DuplicateKey(_))));

    let document = with_ita_keys(&[(&key, now(), now(), KeyUse::Sig)]);
    let error = Directory::from_document(document).unwrap_err().to_string();
    assert!(error.contains("not_before is not before not_after"), "{error}");
}

#[test]
fn one_key_cannot_be_published_for_signing_and_for_encryption() {
    let key = generate(KeyUse::Sig).unwrap();
    let mut as_enc = public_of(&key).unwrap();
    as_enc.set_key_use("enc");
    as_enc.set_algorithm("ECDH-ES");
    let mut document = with_ita_keys(&[(&key, now(), now() + Duration::days(30), KeyUse::Sig)]);
    let nga = document.gateways.iter_mut().find(|g| g.country.as_str() == "NGA").unwrap();
    nga.keys = vec![crate::directory::PublishedKey {
        not_before: now(),
        not_after: now() + Duration::days(30),
        jwk: as_enc.as_ref().clone(),
    }];
    assert!(matches!(Directory::from_document(document), Err(DirectoryError::DuplicateKey(_))));
}

#[test]
fn a_directory_needs_a_serial() {
    let mut document = example();
    document.serial = 0;
    assert!(matches!(Directory::from_document(document), Err(DirectoryError::NoSerial)));
}

#[test]
fn tls_pins_must_be_sha256_digests_and_belong_to_one_gateway() {
    let pin = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let mut document = example();
    document.gateways[0].tls_spki_sha256 = vec![pin.clone()];
    let directory = Directory::from_document(document.clone()).unwrap();
    assert_eq!(directory.gateway_by_pin(&pin).map(|g| g.country), Some(document.gateways[0].country));
    assert!(directory.gateway_by_pin("AAAA").is_none());

    document.gateways[1].tls_spki_sha256 = vec![pin];
    assert!(matches!(Directory::from_document(document.clone()), Err(DirectoryError::DuplicatePin(_))));
    document.gateways[1].tls_spki_sha256 = vec!["not a digest".to_owned()];
    assert!(matches!(Directory::from_document(document), Err(DirectoryError::BadPin(_))));
}

#[test]
fn during_a_rotation_senders_take_the_newest_key_and_the_old_one_still_opens() {
    let (old, new) = (generate(KeyUse::Enc).unwrap(), generate(KeyUse::Enc).unwrap());
    let (old_sig, new_sig) = (generate(KeyUse::Sig).unwrap(), generate(KeyUse::Sig).unwrap());
    let directory = Directory::from_document(with_ita_keys(&[
        (&old, now() - Duration::days(365), now() + Duration::days(7), KeyUse::Enc),
        (&new, now() - Duration::days(1), now() + Duration::days(365), KeyUse::Enc),
        (&old_sig, now() - Duration::days(365), now() + Duration::days(7), KeyUse::Sig),
        (&new_sig, now() - Duration::days(1), now() + Duration::days(365), KeyUse::Sig),
    ]))
    .unwrap();
    let ours = [DecryptionKey::from_jwk(&old).unwrap(), DecryptionKey::from_jwk(&new).unwrap()];
    let signing = [SigningKey::from_jwk(&old_sig).unwrap(), SigningKey::from_jwk(&new_sig).unwrap()];

    assert_eq!(directory.encryption_key(ita(), now()).unwrap().kid(), new.key_id().unwrap());
    assert_eq!(directory.valid_decryption_keys(ita(), now(), &ours).len(), 2);
    assert_eq!(directory.current_signing_key(ita(), now(), &signing).unwrap().kid(), new_sig.key_id().unwrap());
    assert!(directory.signer(old_sig.key_id().unwrap(), now()).is_some());

    let later = now() + Duration::days(8);
    let still_open = directory.valid_decryption_keys(ita(), later, &ours);
    assert_eq!(still_open.iter().map(|k| k.kid()).collect::<Vec<_>>(), [new.key_id().unwrap()]);
    assert!(directory.signer(old_sig.key_id().unwrap(), later).is_none());

    let before = now() - Duration::days(2);
    assert_eq!(directory.encryption_key(ita(), before).unwrap().kid(), old.key_id().unwrap());
    assert!(directory.encryption_key(CountryCode::parse("NGA").unwrap(), now()).is_none());
}

#[test]
fn a_suspended_gateway_keeps_its_keys_listed_but_is_not_active() {
    let sig = generate(KeyUse::Sig).unwrap();
    let mut document = with_ita_keys(&[(&sig, now() - Duration::days(1), now() + Duration::days(30), KeyUse::Sig)]);
    document.gateways.iter_mut().find(|g| g.country == ita()).unwrap().status = MemberStatus::Suspended;
    let directory = Directory::from_document(document).unwrap();
    let signer = directory.signer(sig.key_id().unwrap(), now()).unwrap();
    assert_eq!(signer.country, ita());
    assert!(!signer.active);
}

#[test]
fn an_older_edition_never_replaces_the_one_in_use() {
    let mut document = example();
    document.serial = 7;
    let current = Directory::from_document(document.clone()).unwrap();
    document.serial = 6;
    let older = Directory::from_document(document.clone()).unwrap();
    assert!(matches!(newer_or_same(&current, older), Err(SignedDirectoryError::Rollback { offered: 6, current: 7 })));
    document.serial = 7;
    let same = Directory::from_document(document.clone()).unwrap();
    assert_eq!(newer_or_same(&current, same).unwrap().serial(), 7);
    document.organisations.pop();
    let changed = Directory::from_document(document.clone()).unwrap();
    assert!(matches!(newer_or_same(&current, changed), Err(SignedDirectoryError::SameSerialOtherContent(7))));
    document.serial = 8;
    assert_eq!(newer_or_same(&current, Directory::from_document(document).unwrap()).unwrap().serial(), 8);
}

#[test]
fn a_signature_with_another_type_or_key_id_is_refused() {
    let (signing, verifying) = coordinator();
    let json = serde_json::to_string(&example()).unwrap();
    let mut header = josekit::jws::JwsHeader::new();
    header.set_token_type("rgw-receipt+jws");
    header.set_key_id(signing.kid());
    let wrong_type = josekit::jws::serialize_compact(json.as_bytes(), &header, signing.signer()).unwrap();
    assert!(matches!(verify(&wrong_type, &verifying), Err(SignedDirectoryError::BadSignature)));
    // The right key, but the header names another: josekit's signer would
    // write its own kid, so sign with a copy of the key that has none.
    let key = generate(KeyUse::Sig).unwrap();
    let mut unnamed = key.clone();
    unnamed.set_parameter("kid", None).unwrap();
    let signer = josekit::jws::ES256.signer_from_jwk(&unnamed).unwrap();
    let mut header = josekit::jws::JwsHeader::new();
    header.set_token_type(DIRECTORY_JWS_TYPE);
    header.set_key_id("another");
    let wrong_kid = josekit::jws::serialize_compact(json.as_bytes(), &header, &signer).unwrap();
    assert!(wrong_kid.split('.').next().is_some_and(|h| {
        let header = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, h).unwrap();
        String::from_utf8(header).unwrap().contains("another")
    }));
    let owner = VerifyingKey::from_jwk(&public_of(&key).unwrap()).unwrap();
    assert!(matches!(verify(&wrong_kid, &owner), Err(SignedDirectoryError::BadSignature)));
    let _ = verifying;
}

#[test]
fn a_gateway_publishes_its_packet_limit_within_the_federation_range() {
    let mut document = example();
    let (first, second) = (document.gateways[0].country, document.gateways[1].country);
    let directory = Directory::from_document(document.clone()).unwrap();
    assert_eq!(directory.packet_limit(first), DEFAULT_MAX_PACKET_BYTES);
    assert_eq!(directory.largest_peer_packet_limit(first), DEFAULT_MAX_PACKET_BYTES);

    document.gateways[1].max_packet_bytes = Some(4 * 1024 * 1024);
    let directory = Directory::from_document(document.clone()).unwrap();
    assert_eq!(directory.packet_limit(second), 4 * 1024 * 1024);
    assert_eq!(directory.largest_peer_packet_limit(first), 4 * 1024 * 1024);
    // Its own limit is not a peer's.
    assert_eq!(directory.largest_peer_packet_limit(second), DEFAULT_MAX_PACKET_BYTES);

    for outside in [64 * 1024 - 1, 16 * 1024 * 1024 + 1, 0] {
        document.gateways[1].max_packet_bytes = Some(outside);
        assert!(matches!(Directory::from_document(document.clone()), Err(DirectoryError::BadPacketLimit(_))), "{outside}");
    }
}
