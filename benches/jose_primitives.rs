//! Issue 23 §1, one lever measured before it is pulled: primitives of equal
//! strength to the federation's (ES256 signatures, ECDH-ES key agreement on
//! P-256), as josekit offers them: EdDSA over Ed25519, ECDH-ES on X25519.
//!
//!   cargo bench --bench jose_primitives
//!
//! Each pairing seals a referral-sized payload as a packet is sealed (JWS,
//! then JWE with A256GCM to the receiver) and opens it (decrypt, verify),
//! on one core. The four pairings are measured in interleaved rounds, so
//! that the machine's drift falls on all alike, and compared with today's
//! (ES256 with P-256) by the ratio of their medians in the same run. Under
//! `cargo test`, two rounds of a few packets: the code cannot rot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use josekit::jwe::{self, ECDH_ES, JweDecrypter, JweEncrypter, JweHeader};
use josekit::jwk::KeyPair;
use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::alg::ecx::EcxCurve;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jws::{self, ES256, EdDSA, JwsHeader, JwsSigner, JwsVerifier};

/// One way to sign and one to agree keys, with fresh keys of each.
struct Pairing {
    name: &'static str,
    signer: Box<dyn JwsSigner>,
    verifier: Box<dyn JwsVerifier>,
    encrypter: Box<dyn JweEncrypter>,
    decrypter: Box<dyn JweDecrypter>,
}

fn pairing(name: &'static str, edwards_signature: bool, x25519: bool) -> Pairing {
    let (signer, verifier): (Box<dyn JwsSigner>, Box<dyn JwsVerifier>) = if edwards_signature {
        let pair = EdDSA.generate_key_pair(EdCurve::Ed25519).unwrap();
        (Box::new(EdDSA.signer_from_jwk(&pair.to_jwk_key_pair()).unwrap()), Box::new(EdDSA.verifier_from_jwk(&pair.to_jwk_public_key()).unwrap()))
    } else {
        let pair = ES256.generate_key_pair().unwrap();
        (Box::new(ES256.signer_from_jwk(&pair.to_jwk_key_pair()).unwrap()), Box::new(ES256.verifier_from_jwk(&pair.to_jwk_public_key()).unwrap()))
    };
    let (private, public) = if x25519 {
        let pair = ECDH_ES.generate_ecx_key_pair(EcxCurve::X25519).unwrap();
        (pair.to_jwk_key_pair(), pair.to_jwk_public_key())
    } else {
        let pair = ECDH_ES.generate_ec_key_pair(EcCurve::P256).unwrap();
        (pair.to_jwk_key_pair(), pair.to_jwk_public_key())
    };
    Pairing {
        name,
        signer,
        verifier,
        encrypter: Box::new(ECDH_ES.encrypter_from_jwk(&public).unwrap()),
        decrypter: Box::new(ECDH_ES.decrypter_from_jwk(&private).unwrap()),
    }
}

/// Seals `payload` and opens it again; the opened bytes, to be checked.
fn seal_and_open(pairing: &Pairing, payload: &[u8]) -> Vec<u8> {
    let mut jws_header = JwsHeader::new();
    jws_header.set_token_type("JWT");
    let signed = jws::serialize_compact(payload, &jws_header, pairing.signer.as_ref()).unwrap();
    let mut jwe_header = JweHeader::new();
    jwe_header.set_content_encryption("A256GCM");
    let sealed = jwe::serialize_compact(signed.as_bytes(), &jwe_header, pairing.encrypter.as_ref()).unwrap();
    let (opened, _) = jwe::deserialize_compact(&sealed, pairing.decrypter.as_ref()).unwrap();
    let (verified, _) = jws::deserialize_compact(&opened, pairing.verifier.as_ref()).unwrap();
    verified
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let (rounds, per_round) = if full { (15, 200) } else { (2, 3) };
    // A referral as submitted, the size of a packet's body.
    let payload = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/referrals/rejected_asylum_avr.json")).unwrap();
    let pairings = [
        pairing("ES256, ECDH-ES P-256 (today)", false, false),
        pairing("ES256, ECDH-ES X25519", false, true),
        pairing("EdDSA Ed25519, ECDH-ES P-256", true, false),
        pairing("EdDSA Ed25519, ECDH-ES X25519", true, true),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); pairings.len()];
    for _ in 0..rounds {
        for (pairing, times) in pairings.iter().zip(times.iter_mut()) {
            let started = Instant::now();
            for _ in 0..per_round {
                assert_eq!(seal_and_open(pairing, &payload), payload, "{}: what was sealed is what opens", pairing.name);
            }
            times.push(started.elapsed() / per_round);
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    println!("seal and open one packet ({} bytes), one core, median of {rounds} rounds of {per_round}:", payload.len());
    for (pairing, time) in pairings.iter().zip(&medians) {
        println!(
            "  {:<32} {:>9.1?}  {:>6.0}/s  {:.2}x today's rate",
            pairing.name,
            time,
            1.0 / time.as_secs_f64(),
            medians[0].as_secs_f64() / time.as_secs_f64()
        );
    }
}
