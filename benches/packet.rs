//! The federation's crypto-only ceiling: seal (sign ES256, encrypt ECDH-ES +
//! A256GCM) and open (decrypt, verify, check) one referral packet, on one
//! core. Issue 4 reports end-to-end throughput as a fraction of this.
//!
//! Run: `cargo bench --bench packet`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use referral_gateway::crypto::jose_keys::{DecryptionKey, EncryptionKey, KeyUse, SigningKey, VerifyingKey, generate, public_of};
use referral_gateway::crypto::packet::{PacketClaims, PacketType, PublishedSigner, Receiver, SignerDirectory, open, seal};
use referral_gateway::directory::Directory;
use referral_gateway::domain::decide::decide_and_minimise;
use referral_gateway::domain::submission::ReferralSubmission;
use referral_gateway::domain::{CountryCode, OrgId};
use referral_gateway::policy_files;

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)).unwrap()
}

struct OneSigner(PublishedSigner);

impl SignerDirectory for OneSigner {
    fn signer(&self, kid: &str, _at: chrono::DateTime<Utc>) -> Option<PublishedSigner> {
        (kid == self.0.key.kid()).then(|| self.0.clone())
    }
}

fn bench_packet(c: &mut Criterion) {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let (ita, gmb) = (CountryCode::parse("ITA").unwrap(), CountryCode::parse("GMB").unwrap());
    let directory = Directory::parse(&read("config/directory.example.json")).unwrap();
    let policy = policy_files::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies")).unwrap();
    let submission = ReferralSubmission::parse(&read("tests/fixtures/referrals/rejected_asylum_avr.json"), now).unwrap();
    let recipient = OrgId::parse("gmb-iom-banjul").unwrap();
    let (decision, payload) = decide_and_minimise(
        &submission.case,
        &submission.consent,
        ita,
        directory.recipient(&recipient).as_ref(),
        submission.purpose,
        &policy,
        now,
    );
    let claims = PacketClaims {
        packet_id: "0196f3a0-0000-7000-8000-000000000001".to_owned(),
        packet_type: PacketType::Referral,
        issuer: ita,
        audience: gmb,
        recipient,
        purpose: Some(submission.purpose),
        policy_version: Some(decision.policy_version().to_owned()),
        decision_id: Some("0196f3a0-0000-7000-8000-000000000002".to_owned()),
        consent_expires_at: None,
        retention_until: Some(now + Duration::days(365)),
        retention_days_after_closure: None,
        issued_at: now,
        expires_at: now + Duration::days(7),
        handover: false,
        priority: Default::default(),
        body: payload.to_json(),
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    };

    let signing = generate(KeyUse::Sig).unwrap();
    let encryption = generate(KeyUse::Enc).unwrap();
    let signer = SigningKey::from_jwk(&signing).unwrap();
    let to = EncryptionKey::from_jwk(&public_of(&encryption).unwrap()).unwrap();
    let keys = [DecryptionKey::from_jwk(&encryption).unwrap()];
    let trust = OneSigner(PublishedSigner { country: ita, active: true, key: VerifyingKey::from_jwk(&public_of(&signing).unwrap()).unwrap() });
    let receiver = Receiver { country: gmb, keys: &keys, now, max_skew: Duration::minutes(5), max_bytes: 1024 * 1024, max_lifetime: Duration::days(30) };

    let sealed = seal(&claims, &signer, &to).unwrap();
    println!("packet: {} bytes sealed, {} bytes of claims", sealed.as_str().len(), serde_json::to_vec(&claims).unwrap().len());
    let mut group = c.benchmark_group("packet");
    group.bench_function("seal", |b| b.iter(|| seal(black_box(&claims), &signer, &to).unwrap()));
    group.bench_function("open", |b| b.iter(|| open(black_box(sealed.as_str().as_bytes()), &receiver, &trust, Some(ita)).unwrap()));
    group.bench_function("seal+open", |b| {
        b.iter(|| {
            let sealed = seal(black_box(&claims), &signer, &to).unwrap();
            open(sealed.as_str().as_bytes(), &receiver, &trust, Some(ita)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_packet);
criterion_main!(benches);
