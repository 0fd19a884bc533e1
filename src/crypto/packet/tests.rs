use chrono::TimeZone;

use super::*;
use crate::crypto::test_keys::{member, Member, Trust};
use crate::crypto::receipt::{self, BatchReceiptClaims, Expected, ReceiptClaims, ReceiptError};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn claims(from: &Member, to: &Member) -> PacketClaims {
    PacketClaims {
        packet_id: "0196f3a0-0000-7000-8000-000000000001".to_owned(),
        packet_type: PacketType::Referral,
        issuer: from.country,
        audience: to.country,
        recipient: OrgId::parse("nga-iom-lagos").unwrap(),
        purpose: Some(Purpose::Reintegration),
        policy_version: Some("ita-2026-11".to_owned()),
        decision_id: Some("d-1".to_owned()),
        consent_expires_at: Some(now() + Duration::days(90)),
        retention_until: Some(now() + Duration::days(365)),
        retention_days_after_closure: None,
        issued_at: now(),
        expires_at: now() + Duration::days(7),
        handover: false,
        priority: Default::default(),
        body: serde_json::json!({ "identity": { "given_name": "Blessing" } }),
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    }
}

fn receiver<'a>(member: &Member, keys: &'a [DecryptionKey], at: DateTime<Utc>) -> Receiver<'a> {
    Receiver { country: member.country, keys, now: at, max_skew: Duration::minutes(5), max_bytes: 64 * 1024, max_lifetime: Duration::days(30) }
}

struct Pair {
    ita: Member,
    nga: Member,
    trust: Trust,
}

fn pair() -> Pair {
    let (ita, nga) = (member("ITA"), member("NGA"));
    let trust = Trust::default().with(&ita, true).with(&nga, true);
    Pair { ita, nga, trust }
}

fn open_at_nga(pair: &Pair, sealed: &SealedPacket, at: DateTime<Utc>) -> Result<PacketClaims, OpenError> {
    let keys = [pair.nga.decryption.clone()];
    open(sealed.as_str().as_bytes(), &receiver(&pair.nga, &keys, at), &pair.trust, Some(pair.ita.country))
}

#[test]
fn a_sealed_packet_opens_at_its_audience_with_the_claims_signed() {
    let pair = pair();
    let sent = claims(&pair.ita, &pair.nga);
    let sealed = seal(&sent, &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert_eq!(open_at_nga(&pair, &sealed, now()).unwrap(), sent);
}

#[test]
fn the_outer_header_reveals_nothing_but_what_decryption_needs() {
    let pair = pair();
    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    let header = sealed.as_str().split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let mut names: Vec<&str> = header.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["alg", "enc", "epk", "kid", "typ"]);
    assert_eq!(header["alg"], "ECDH-ES");
    assert_eq!(header["enc"], "A256GCM");
    assert_eq!(header["typ"], PACKET_JWE_TYPE);
    assert_eq!(header["kid"], pair.nga.encryption.kid());
    // The ephemeral key carries only its curve point.
    let mut epk: Vec<&str> = header["epk"].as_object().unwrap().keys().map(String::as_str).collect();
    epk.sort_unstable();
    assert_eq!(epk, ["crv", "kty", "x", "y"]);
}

/// Encrypts the genuine inner JWS to NGA with a chosen outer header.
fn encrypt_with(pair: &Pair, content_encryption: &str, zip: bool) -> SealedPacket {
    let inner = sign_inner(&serde_json::to_value(claims(&pair.ita, &pair.nga)).unwrap(), &pair.ita.signing, PACKET_JWS_TYPE);
    let mut header = JweHeader::new();
    header.set_token_type(PACKET_JWE_TYPE);
    header.set_content_encryption(content_encryption);
    header.set_key_id(pair.nga.encryption.kid());
    if zip {
        header.set_compression("DEF");
    }
    SealedPacket::from_wire(josekit::jwe::serialize_compact(inner.as_bytes(), &header, pair.nga.encryption.encrypter()).unwrap())
}

#[test]
fn only_a256gcm_without_compression_and_with_a_full_tag_is_decrypted() {
    let pair = pair();
    assert!(open_at_nga(&pair, &encrypt_with(&pair, "A256GCM", false), now()).is_ok());
    // Compression would be inflated, unbounded, before any other check.
    assert_eq!(open_at_nga(&pair, &encrypt_with(&pair, "A256GCM", true), now()), Err(OpenError::Undecryptable));
    assert_eq!(open_at_nga(&pair, &encrypt_with(&pair, "A128GCM", false), now()), Err(OpenError::Undecryptable));
    assert_eq!(open_at_nga(&pair, &encrypt_with(&pair, "A256CBC-HS512", false), now()), Err(OpenError::Undecryptable));

    // A shortened tag would give one packet several valid byte forms.
    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    let mut parts: Vec<String> = sealed.as_str().split('.').map(str::to_owned).collect();
    let tag = URL_SAFE_NO_PAD.decode(&parts[4]).unwrap();
    parts[4] = URL_SAFE_NO_PAD.encode(&tag[..12]);
    assert_eq!(open_at_nga(&pair, &SealedPacket::from_wire(parts.join(".")), now()), Err(OpenError::Undecryptable));
}

#[test]
fn a_packet_id_must_be_short_and_plain() {
    let pair = pair();
    for id in ["", "a b", "x/../y", "名前", &"a".repeat(65), "id\nwith newline"] {
        let mut odd = claims(&pair.ita, &pair.nga);
        odd.packet_id = id.to_owned();
        let sealed = seal(&odd, &pair.ita.signing, &pair.nga.encryption).unwrap();
        assert_eq!(open_at_nga(&pair, &sealed, now()), Err(OpenError::MalformedId), "{id:?}");
    }
    let mut plain = claims(&pair.ita, &pair.nga);
    plain.packet_id = "0192f0c4-7b1e-7c3a-9d2e-4f5a6b7c8d9e".to_owned();
    let sealed = seal(&plain, &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert!(open_at_nga(&pair, &sealed, now()).is_ok());
}

#[test]
fn a_packet_whose_lifetime_exceeds_the_bound_is_refused() {
    let pair = pair();
    let mut long = claims(&pair.ita, &pair.nga);
    long.expires_at = now() + Duration::days(31);
    let sealed = seal(&long, &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert_eq!(open_at_nga(&pair, &sealed, now()), Err(OpenError::LifetimeTooLong));
    long.expires_at = now() + Duration::days(30);
    let sealed = seal(&long, &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert!(open_at_nga(&pair, &sealed, now()).is_ok());
}

#[test]
fn an_oversized_packet_is_refused_before_anything_else() {
    let pair = pair();
    let keys = [pair.nga.decryption.clone()];
    let junk = vec![b'x'; 64 * 1024 + 1];
    assert_eq!(
        open(&junk, &receiver(&pair.nga, &keys, now()), &pair.trust, None),
        Err(OpenError::TooLarge { limit: 64 * 1024 })
    );
}

#[test]
fn a_packet_for_another_key_or_altered_in_transit_does_not_decrypt() {
    let pair = pair();
    let other = member("NGA");
    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &other.encryption).unwrap();
    assert_eq!(open_at_nga(&pair, &sealed, now()), Err(OpenError::Undecryptable));

    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    let mut parts: Vec<String> = sealed.as_str().split('.').map(str::to_owned).collect();
    let mut ciphertext = URL_SAFE_NO_PAD.decode(&parts[3]).unwrap();
    ciphertext[10] ^= 1;
    parts[3] = URL_SAFE_NO_PAD.encode(ciphertext);
    let tampered = SealedPacket::from_wire(parts.join("."));
    assert_eq!(open_at_nga(&pair, &tampered, now()), Err(OpenError::Undecryptable));
    assert_eq!(open_at_nga(&pair, &SealedPacket::from_wire("not a packet".to_owned()), now()), Err(OpenError::Undecryptable));
}

#[test]
fn a_packet_signed_by_a_key_outside_the_directory_is_refused() {
    let pair = pair();
    let stranger = member("ITA");
    let sealed = seal(&claims(&pair.ita, &pair.nga), &stranger.signing, &pair.nga.encryption).unwrap();
    assert_eq!(open_at_nga(&pair, &sealed, now()), Err(OpenError::UnknownSigner));
}

/// Encrypts an arbitrary inner JWS to NGA, as a gateway holding NGA's public key could.
fn encrypt_to(to: &Member, inner: &str) -> SealedPacket {
    let mut header = JweHeader::new();
    header.set_token_type(PACKET_JWE_TYPE);
    header.set_content_encryption(CONTENT_ENC);
    header.set_key_id(to.encryption.kid());
    SealedPacket::from_wire(josekit::jwe::serialize_compact(inner.as_bytes(), &header, to.encryption.encrypter()).unwrap())
}

fn sign_inner(claims: &serde_json::Value, signer: &SigningKey, typ: &str) -> String {
    let mut header = JwsHeader::new();
    header.set_token_type(typ);
    header.set_key_id(signer.kid());
    josekit::jws::serialize_compact(&serde_json::to_vec(claims).unwrap(), &header, signer.signer()).unwrap()
}

#[test]
fn altered_claims_under_a_valid_encryption_fail_the_signature() {
    let pair = pair();
    let signed = sign_inner(&serde_json::to_value(claims(&pair.ita, &pair.nga)).unwrap(), &pair.ita.signing, PACKET_JWS_TYPE);
    let parts: Vec<&str> = signed.split('.').collect();
    let mut altered = claims(&pair.ita, &pair.nga);
    altered.recipient = OrgId::parse("nga-immigration").unwrap();
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&altered).unwrap()), parts[2]);
    assert_eq!(open_at_nga(&pair, &encrypt_to(&pair.nga, &forged), now()), Err(OpenError::BadSignature));
}

#[test]
fn a_receipt_or_other_signed_document_never_passes_as_a_packet() {
    let pair = pair();
    let body = serde_json::to_value(claims(&pair.ita, &pair.nga)).unwrap();
    let signed = sign_inner(&body, &pair.ita.signing, crate::crypto::receipt::RECEIPT_JWS_TYPE);
    assert_eq!(open_at_nga(&pair, &encrypt_to(&pair.nga, &signed), now()), Err(OpenError::BadSignature));
}

#[test]
fn the_issuer_must_be_the_gateway_whose_key_signed_and_the_connection_it_came_over() {
    let pair = pair();
    let eri = member("ERI");
    let trust = Trust::default().with(&pair.ita, true).with(&pair.nga, true).with(&eri, true);
    let keys = [pair.nga.decryption.clone()];
    let mut claimed = claims(&pair.ita, &pair.nga);
    claimed.issuer = CountryCode::parse("ERI").unwrap();
    let sealed = seal(&claimed, &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert_eq!(
        open(sealed.as_str().as_bytes(), &receiver(&pair.nga, &keys, now()), &trust, None),
        Err(OpenError::IssuerMismatch)
    );

    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert_eq!(
        open(sealed.as_str().as_bytes(), &receiver(&pair.nga, &keys, now()), &trust, Some(eri.country)),
        Err(OpenError::SenderMismatch)
    );
}

#[test]
fn a_suspended_issuer_is_refused() {
    let pair = pair();
    let trust = Trust::default().with(&pair.ita, false).with(&pair.nga, true);
    let keys = [pair.nga.decryption.clone()];
    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert_eq!(
        open(sealed.as_str().as_bytes(), &receiver(&pair.nga, &keys, now()), &trust, None),
        Err(OpenError::IssuerSuspended)
    );
}

#[test]
fn a_packet_addressed_to_another_gateway_is_refused_even_when_it_decrypts() {
    let pair = pair();
    let mut misaddressed = claims(&pair.ita, &pair.nga);
    misaddressed.audience = CountryCode::parse("GMB").unwrap();
    let sealed = seal(&misaddressed, &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert_eq!(open_at_nga(&pair, &sealed, now()), Err(OpenError::WrongAudience));
}

#[test]
fn expiry_and_clock_skew_bound_when_a_packet_opens() {
    let pair = pair();
    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    assert!(open_at_nga(&pair, &sealed, now() + Duration::days(7) - Duration::seconds(1)).is_ok());
    assert_eq!(open_at_nga(&pair, &sealed, now() + Duration::days(7)), Err(OpenError::Expired));
    assert!(open_at_nga(&pair, &sealed, now() - Duration::minutes(5)).is_ok());
    assert_eq!(open_at_nga(&pair, &sealed, now() - Duration::minutes(6)), Err(OpenError::IssuedInFuture));
}

#[test]
fn an_arrival_is_new_a_redelivery_of_the_same_bytes_or_a_replay() {
    assert_eq!(classify_arrival(None, "abc"), Arrival::New);
    assert_eq!(classify_arrival(Some("abc"), "abc"), Arrival::Redelivery);
    assert_eq!(classify_arrival(Some("abd"), "abc"), Arrival::Replay);
}

#[test]
fn a_receipt_confirms_exactly_the_packet_sent_by_the_gateway_it_was_sent_to() {
    let pair = pair();
    let sealed = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    let issued = ReceiptClaims {
        packet_id: "0196f3a0-0000-7000-8000-000000000001".to_owned(),
        packet_sha256: sealed.digest(),
        received_at: now(),
        issuer: pair.nga.country,
        audience: pair.ita.country,
    };
    let signed = receipt::sign(&issued, &pair.nga.signing).unwrap();
    let digest = sealed.digest();
    let expected = Expected { packet_id: &issued.packet_id, packet_sha256: &digest, from: pair.nga.country, to: pair.ita.country };
    assert_eq!(receipt::verify(&signed, &pair.trust, now(), &expected).unwrap(), issued);

    let other_bytes = Expected { packet_sha256: "AAAA", ..expected.clone() };
    assert_eq!(receipt::verify(&signed, &pair.trust, now(), &other_bytes), Err(ReceiptError::Mismatch));
    let other_gateway = Expected { from: CountryCode::parse("GMB").unwrap(), ..expected.clone() };
    assert_eq!(receipt::verify(&signed, &pair.trust, now(), &other_gateway), Err(ReceiptError::WrongIssuer));
    // A receipt NGA signs on ITA's behalf is still NGA's: the key decides.
    let forged = receipt::sign(&issued, &pair.ita.signing).unwrap();
    assert_eq!(receipt::verify(&forged, &pair.trust, now(), &expected), Err(ReceiptError::WrongIssuer));
    let mut tampered = signed.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert_eq!(receipt::verify(&tampered, &pair.trust, now(), &expected), Err(ReceiptError::BadSignature));
    let stranger = member("NGA");
    let unknown = receipt::sign(&issued, &stranger.signing).unwrap();
    assert_eq!(receipt::verify(&unknown, &pair.trust, now(), &expected), Err(ReceiptError::UnknownSigner));

    // NGA suspended: nothing it signs is taken, receipts included.
    let suspended = Trust::default().with(&pair.ita, true).with(&pair.nga, false);
    assert_eq!(receipt::verify(&signed, &suspended, now(), &expected), Err(ReceiptError::SignerSuspended));

    // A packet's inner JWS, signed by NGA, does not pass as a receipt.
    let packet_jws = sign_inner(&serde_json::to_value(&issued).unwrap(), &pair.nga.signing, PACKET_JWS_TYPE);
    assert_eq!(receipt::verify(&packet_jws, &pair.trust, now(), &expected), Err(ReceiptError::BadSignature));
}

#[test]
fn a_batch_receipt_confirms_the_packets_it_lists_and_nothing_passes_for_another_kind_of_receipt() {
    let pair = pair();
    let (ita, nga) = (pair.ita.country, pair.nga.country);
    let first = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    let second = seal(&claims(&pair.ita, &pair.nga), &pair.ita.signing, &pair.nga.encryption).unwrap();
    let issued = BatchReceiptClaims { packets_sha256: vec![first.digest()], received_at: now(), issuer: nga, audience: ita };
    let signed = receipt::sign_batch(&issued, &pair.nga.signing).unwrap();
    let verified = receipt::verify_batch(&signed, &pair.trust, now(), nga, ita).unwrap();
    assert_eq!(verified, issued);
    assert!(verified.confirms(&first.digest()));
    assert!(!verified.confirms(&second.digest()), "a packet of the same batch that was refused");

    assert_eq!(receipt::verify_batch(&signed, &pair.trust, now(), CountryCode::parse("GMB").unwrap(), ita), Err(ReceiptError::WrongIssuer));
    assert_eq!(receipt::verify_batch(&signed, &pair.trust, now(), nga, nga), Err(ReceiptError::WrongIssuer));
    let forged = receipt::sign_batch(&issued, &pair.ita.signing).unwrap();
    assert_eq!(receipt::verify_batch(&forged, &pair.trust, now(), nga, ita), Err(ReceiptError::WrongIssuer));
    let stranger = member("NGA");
    assert_eq!(receipt::verify_batch(&receipt::sign_batch(&issued, &stranger.signing).unwrap(), &pair.trust, now(), nga, ita), Err(ReceiptError::UnknownSigner));
    let suspended = Trust::default().with(&pair.ita, true).with(&pair.nga, false);
    assert_eq!(receipt::verify_batch(&signed, &suspended, now(), nga, ita), Err(ReceiptError::SignerSuspended));
    let mut tampered = signed.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert_eq!(receipt::verify_batch(&tampered, &pair.trust, now(), nga, ita), Err(ReceiptError::BadSignature));

    // A receipt of one packet never passes as a batch receipt, nor the reverse, whatever the claims say.
    let alone = ReceiptClaims { packet_id: "0196f3a0-0000-7000-8000-000000000001".to_owned(), packet_sha256: first.digest(), received_at: now(), issuer: nga, audience: ita };
    let single = receipt::sign(&alone, &pair.nga.signing).unwrap();
    assert_eq!(receipt::verify_batch(&single, &pair.trust, now(), nga, ita), Err(ReceiptError::BadSignature));
    // By its type alone: batch claims signed as a receipt of one packet.
    let single_typed = sign_inner(&serde_json::to_value(&issued).unwrap(), &pair.nga.signing, receipt::RECEIPT_JWS_TYPE);
    assert_eq!(receipt::verify_batch(&single_typed, &pair.trust, now(), nga, ita), Err(ReceiptError::BadSignature));
    let batch_typed = sign_inner(&serde_json::to_value(&alone).unwrap(), &pair.nga.signing, receipt::BATCH_RECEIPT_JWS_TYPE);
    let digest = first.digest();
    let expected = Expected { packet_id: &alone.packet_id, packet_sha256: &digest, from: nga, to: ita };
    assert_eq!(receipt::verify(&batch_typed, &pair.trust, now(), &expected), Err(ReceiptError::BadSignature));
    assert_eq!(receipt::verify(&signed, &pair.trust, now(), &expected), Err(ReceiptError::BadSignature));
}

#[test]
fn packet_type_names_are_their_wire_names() {
    for kind in [PacketType::Referral, PacketType::Status, PacketType::Withdrawal, PacketType::ErasureConfirmation] {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
}

#[test]
fn the_largest_body_within_a_limit_is_the_inverse_of_the_size_bound() {
    for end_to_end in [false, true] {
        for limit in [0, 4096, 65_536, 1024 * 1024, 16 * 1024 * 1024] {
            let largest = largest_body_within(limit, end_to_end);
            if largest > 0 {
                assert!(sealed_size_bound(largest, end_to_end) <= limit, "{limit}");
            }
            assert!(sealed_size_bound(largest + 1, end_to_end) > limit, "{limit}");
        }
    }
    // Base64 twice: a body fills a little over half its packet; sealed end
    // to end, four times and padded to a bucket: a quarter.
    let megabyte = largest_body_within(1024 * 1024, false);
    assert!((580_000..590_000).contains(&megabyte), "{megabyte}");
    assert_eq!(largest_body_within(1024 * 1024, true), 256 * 1024 - 1024, "the 256 KiB bucket, less the claims' allowance");
}
