//! A gateway receiving packets from a peer: receipt, redelivery, replay,
//! wrong sender, each audited. (The federation listener that will call this
//! over mutual TLS comes next; here the use case is called directly.)

use std::sync::Arc;

use chrono::Duration;
use josekit::jwk::Jwk;
use referral_gateway::app::AppError;
use referral_gateway::audit::Action;
use referral_gateway::config::GatewayConfig;
use referral_gateway::crypto::federation_keys;
use referral_gateway::crypto::jose_keys::{EncryptionKey, KeyUse, SigningKey, generate};
use referral_gateway::crypto::packet::{PacketClaims, PacketType, seal};
use referral_gateway::crypto::receipt::{self, Expected};
use referral_gateway::directory::{DirectoryDocument, published_key, published_keys, signed};
use referral_gateway::domain::{CountryCode, OrgId, Purpose};
use referral_gateway::startup::Application;
use referral_gateway::store::AuditFilter;
use referral_gateway::wire::FailureCode;

use crate::helpers::{Backend, FixedClock, fixture_time, repo_path, write_config};
use crate::on_both_backends;

on_both_backends!(a_packet_is_receipted_once_redelivered_alike_and_refused_when_replayed_or_misrouted);

struct Federated {
    app: Application,
    nga_signing: SigningKey,
    ita_encryption: EncryptionKey,
    _dir: tempfile::TempDir,
}

fn country(code: &str) -> CountryCode {
    CountryCode::parse(code).unwrap()
}

/// Italy's gateway with federation keys, in a directory that also lists
/// Nigeria's keys (held here, in memory, to play Nigeria's gateway).
async fn federated_ita(backend: Backend) -> Federated {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_config(dir.path(), backend, "");
    let config = GatewayConfig::load(&path).unwrap();
    federation_keys::init(&config.keys.dir, &["localhost".to_owned()]).unwrap();
    let ita = federation_keys::load(&config.keys.dir).unwrap();
    let (nga_sig, nga_enc) = (generate(KeyUse::Sig).unwrap(), generate(KeyUse::Enc).unwrap());
    let (from, until) = (fixture_time() - Duration::days(1), fixture_time() + Duration::days(365));

    let mut document: DirectoryDocument =
        serde_json::from_str(&std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap()).unwrap();
    document.serial = 2;
    for gateway in &mut document.gateways {
        match gateway.country.as_str() {
            "ITA" => gateway.keys = published_keys(&ita, from, until).unwrap(),
            "NGA" => {
                gateway.keys = vec![
                    published_key(&nga_sig, from, until, KeyUse::Sig).unwrap(),
                    published_key(&nga_enc, from, until, KeyUse::Enc).unwrap(),
                ]
            }
            _ => {}
        }
    }
    let coordinator_file = config.directory.file.parent().unwrap().join("coordinator.jwk");
    let coordinator = SigningKey::from_jwk(&Jwk::from_bytes(std::fs::read(coordinator_file).unwrap()).unwrap()).unwrap();
    std::fs::write(&config.directory.file, signed::sign(&serde_json::to_string(&document).unwrap(), &coordinator).unwrap()).unwrap();

    let app = Application::build(&config, Arc::new(FixedClock(fixture_time()))).await.unwrap();
    let ita_encryption = app.gateway().directory().encryption_key(country("ITA"), fixture_time()).unwrap().clone();
    Federated { app, nga_signing: SigningKey::from_jwk(&nga_sig).unwrap(), ita_encryption, _dir: dir }
}

fn claims(packet_id: &str) -> PacketClaims {
    PacketClaims {
        packet_id: packet_id.to_owned(),
        packet_type: PacketType::Status,
        issuer: country("NGA"),
        audience: country("ITA"),
        recipient: OrgId::parse("ita-iom-rome").unwrap(),
        purpose: Some(Purpose::Reintegration),
        policy_version: None,
        decision_id: None,
        consent_expires_at: None,
        retention_until: None,
        retention_days_after_closure: None,
        issued_at: fixture_time(),
        expires_at: fixture_time() + Duration::days(7),
        handover: false,
        priority: Default::default(),
        body: serde_json::json!({ "status": "arrived" }),
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    }
}

fn refusal(result: Result<String, AppError>) -> &'static str {
    match result {
        Err(AppError::PacketRefused(cause)) => FailureCode::from(&cause).as_str(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn a_packet_is_receipted_once_redelivered_alike_and_refused_when_replayed_or_misrouted(backend: Backend) {
    let federated = federated_ita(backend).await;
    let gateway = federated.app.gateway();
    let sealed = seal(&claims("0196f3a0-0000-7000-8000-00000000a001"), &federated.nga_signing, &federated.ita_encryption).unwrap();
    let bytes = sealed.as_str().as_bytes();

    let first = gateway.receive_packet(bytes, country("NGA")).await.unwrap();
    let digest = sealed.digest();
    let expected = Expected {
        packet_id: "0196f3a0-0000-7000-8000-00000000a001",
        packet_sha256: &digest,
        from: country("ITA"),
        to: country("NGA"),
    };
    let confirmed = receipt::verify(&first, gateway.directory().as_ref(), fixture_time(), &expected).unwrap();
    assert_eq!(confirmed.received_at, fixture_time());

    // The sender retries with the same bytes: the same receipt, nothing new stored.
    assert_eq!(gateway.receive_packet(bytes, country("NGA")).await.unwrap(), first);

    // The same claims sealed again are other bytes under a known id: a replay.
    let resealed = seal(&claims("0196f3a0-0000-7000-8000-00000000a001"), &federated.nga_signing, &federated.ita_encryption).unwrap();
    assert_ne!(resealed, sealed);
    assert_eq!(refusal(gateway.receive_packet(resealed.as_str().as_bytes(), country("NGA")).await), FailureCode::PacketReplayed.as_str());

    // Nigeria's packet arriving over Gambia's connection.
    let other = seal(&claims("0196f3a0-0000-7000-8000-00000000a002"), &federated.nga_signing, &federated.ita_encryption).unwrap();
    assert_eq!(refusal(gateway.receive_packet(other.as_str().as_bytes(), country("GMB")).await), FailureCode::PacketSenderMismatch.as_str());
    assert_eq!(gateway.store.inbox_receipt("0196f3a0-0000-7000-8000-00000000a002").await.unwrap(), None);

    let filter = AuditFilter { action: Some(Action::PacketReceive.as_str().to_owned()), limit: 10, ..AuditFilter::default() };
    let entries = gateway.store.audit(&filter).await.unwrap();
    let outcomes: Vec<(String, Vec<String>)> = entries.iter().map(|e| (e.outcome.clone(), e.reasons.clone())).collect();
    assert_eq!(
        outcomes,
        vec![
            ("accepted".to_owned(), vec![]),
            // The retry with the same bytes: audited apart from a first arrival and from a replay.
            ("duplicate".to_owned(), vec![]),
            ("refused".to_owned(), vec!["packet-replayed".to_owned()]),
            ("refused".to_owned(), vec!["packet-sender-mismatch".to_owned()]),
        ]
    );
    assert!(entries.iter().all(|e| e.actor_subject.starts_with("gateway:")));
}
