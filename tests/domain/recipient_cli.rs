//! The recipient organisation's command line: `keys init --recipient` and
//! `recipient open`, run as the built binary, against a directory signed by
//! a coordinator key and a packet sealed end to end by Italy's gateway.
//!
//! Assertion messages never include what `recipient open` printed: it is
//! the (fictional) case.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::Duration;
use referral_gateway::crypto::end_to_end::seal_for_organisation;
use referral_gateway::crypto::jose_keys::{generate, public_of, KeyUse, SigningKey};
use referral_gateway::crypto::packet::{PacketClaims, PacketType};
use referral_gateway::directory::{published_key, signed, Directory, DirectoryDocument, PublishedKey};
use referral_gateway::domain::{CountryCode, OrgId, Purpose};
use serde_json::{json, Value};

use crate::support::{now, repo_path};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn red_cross() -> OrgId {
    OrgId::parse("gin-red-cross").unwrap()
}

fn body() -> Value {
    json!({ "identity": { "given_name": "Mariama", "family_name": "Diallo", "date_of_birth": "2009-03-14" },
            "family_links": { "sought": [{ "relationship": "mother", "last_known_place": "Kankan" }] } })
}

/// Every value of the case, and its category names.
const CASE_VALUES: &[&str] = &["Mariama", "Diallo", "2009-03-14", "mother", "Kankan", "identity", "family_links"];

/// `keys init --recipient` in `dir`: the key file it wrote and the entry it printed.
fn make_key(dir: &Path) -> (PathBuf, PublishedKey) {
    // Valid from a day before the test's clock, as a key published in advance is.
    let from = (now() - Duration::days(1)).to_rfc3339();
    let output = run(&["keys", "init", "--recipient", "--organisation", "gin-red-cross", "--from", &from, "--dir", path(dir)], None);
    assert_eq!(output.status.code(), Some(0), "keys init --recipient: {}", String::from_utf8_lossy(&output.stderr));
    let entry: PublishedKey = serde_json::from_slice(&output.stdout).unwrap();
    let kid = entry.jwk["kid"].as_str().unwrap();
    let file = dir.join(format!("gin-red-cross-enc-{kid}.jwk"));
    assert!(file.is_file());
    (file, entry)
}

/// The example directory with Italy's signing key and the Red Cross's
/// `entry`, signed by a fresh coordinator key: the signed file and the
/// coordinator's public key file.
fn signed_directory(dir: &Path, italy: &SigningKey, italy_public: &PublishedKey, entry: &PublishedKey) -> (PathBuf, PathBuf, Directory) {
    let text = std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap();
    let mut document: DirectoryDocument = serde_json::from_str(&text).unwrap();
    document.serial = 2;
    let ita = document.gateways.iter_mut().find(|g| g.country.as_str() == "ITA").unwrap();
    ita.keys = vec![italy_public.clone()];
    document.organisations.iter_mut().find(|o| o.id == red_cross()).unwrap().keys = vec![entry.clone()];
    let json = serde_json::to_string(&document).unwrap();
    let directory = Directory::parse(&json).unwrap();
    assert_eq!(italy.kid(), italy_public.jwk["kid"].as_str().unwrap());

    let coordinator = generate(KeyUse::Sig).unwrap();
    let signed_text = signed::sign(&json, &SigningKey::from_jwk(&coordinator).unwrap()).unwrap();
    let (signed_file, coordinator_file) = (dir.join("directory.jws"), dir.join("coordinator.pub.jwk"));
    std::fs::write(&signed_file, signed_text).unwrap();
    std::fs::write(&coordinator_file, public_of(&coordinator).unwrap().to_string()).unwrap();
    (signed_file, coordinator_file, directory)
}

fn referral() -> PacketClaims {
    let now = now();
    PacketClaims {
        packet_id: "0196f3a0-0000-7000-8000-0000000000e2".to_owned(),
        packet_type: PacketType::Referral,
        issuer: CountryCode::parse("ITA").unwrap(),
        audience: CountryCode::parse("GIN").unwrap(),
        recipient: red_cross(),
        purpose: Some(Purpose::FamilyTracing),
        policy_version: Some("ita-2026-11".to_owned()),
        decision_id: Some("d-1".to_owned()),
        consent_expires_at: Some(now + Duration::days(90)),
        retention_until: Some(now + Duration::days(365)),
        retention_days_after_closure: None,
        issued_at: now,
        expires_at: now + Duration::days(7),
        handover: false,
        priority: Default::default(),
        body: body(),
        end_to_end: None,
        in_reply_to: None,
        erase: false,
        requested_by: None,
        answers: None,
        onward: None,
    }
}

#[test]
fn a_recipient_key_made_and_published_opens_what_a_gateway_sealed_to_it_and_another_key_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("red-cross-keys");
    let (key_file, entry) = make_key(&keys_dir);
    assert!(!entry.jwk.contains_key("d"), "a private key part was printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let italy_jwk = generate(KeyUse::Sig).unwrap();
    let italy = SigningKey::from_jwk(&italy_jwk).unwrap();
    let now = now();
    let italy_public = published_key(&italy_jwk, now - Duration::days(1), now + Duration::days(365), KeyUse::Sig).unwrap();
    let (signed_file, coordinator_file, directory) = signed_directory(dir.path(), &italy, &italy_public, &entry);

    // Italy's gateway seals to the key the directory publishes for the Red Cross.
    let to = directory.organisation_key(&red_cross(), now).unwrap();
    let outer = seal_for_organisation(&referral(), &italy, to, None).unwrap();
    let envelope = outer.end_to_end.clone().unwrap();
    let packet = dir.path().join("packet.jwe");
    std::fs::write(&packet, &envelope).unwrap();
    let at = now.to_rfc3339();
    let open = |key: &Path, packet: &str, stdin: Option<&str>| {
        run(
            &[
                "recipient",
                "open",
                "--key",
                path(key),
                "--organisation",
                "gin-red-cross",
                "--directory",
                path(&signed_file),
                "--coordinator-key",
                path(&coordinator_file),
                "--at",
                &at,
                packet,
            ],
            stdin,
        )
    };

    let output = open(&key_file, path(&packet), None);
    assert_eq!(output.status.code(), Some(0), "recipient open: {}", String::from_utf8_lossy(&output.stderr));
    let opened: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(opened["content"]["body"] == body(), "the opened body differs from the sealed one");
    assert_eq!(opened["content"]["issuer"], "ITA");
    assert_eq!(opened["content"]["purpose"], "family_tracing");
    assert_eq!(opened["delivered_as"], "envelope");
    assert!(opened["content"].get("pad").is_none());

    // The case document its gateway hands over, on stdin.
    let document = json!({ "packet_id": outer.packet_id, "recipient": "gin-red-cross", "from_country": "ITA",
                           "received_at": "2026-11-23T12:00:01Z", "state": "available", "end_to_end": envelope });
    let output = open(&key_file, "-", Some(&document.to_string()));
    assert_eq!(output.status.code(), Some(0), "recipient open -: {}", String::from_utf8_lossy(&output.stderr));
    let opened: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(opened["content"]["body"] == body(), "the opened body differs from the sealed one");
    assert_eq!(opened["routing"]["packet_id"], outer.packet_id.as_str());
    assert_eq!(opened["delivered_as"], "case_document");

    // Identity withdrawn since: the document hands the sealed withdrawal over
    // with the case, and the tool prints the case without it.
    let withdrawal = PacketClaims {
        packet_id: "0196f3a0-0000-7000-8000-0000000000w1".to_owned(),
        packet_type: PacketType::Withdrawal,
        purpose: None,
        policy_version: None,
        decision_id: None,
        body: json!({ "in_reply_to": outer.packet_id, "categories": ["identity"] }),
        ..referral()
    };
    let routing = referral_gateway::crypto::end_to_end::WithdrawalRouting { in_reply_to: outer.packet_id.clone(), whole: false };
    let sealed_withdrawal = seal_for_organisation(&withdrawal, &italy, to, Some(routing)).unwrap();
    let withdrawals = json!([{ "packet_id": sealed_withdrawal.packet_id, "end_to_end": sealed_withdrawal.end_to_end }]);
    let mut narrowed = document.clone();
    narrowed["withdrawals"] = withdrawals.clone();
    let output = open(&key_file, "-", Some(&narrowed.to_string()));
    assert_eq!(output.status.code(), Some(0), "recipient open - (withdrawn in part): {}", String::from_utf8_lossy(&output.stderr));
    let opened: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(opened["content"]["body"] == json!({ "family_links": body()["family_links"] }), "the withdrawn category was not cut");
    assert_eq!(opened["withdrawn"], json!(["identity"]));
    // The notice alone, as a webhook is pushed it: what to erase.
    let notice = json!({ "packet_id": outer.packet_id, "recipient": "gin-red-cross", "from_country": "ITA", "state": "narrowed", "withdrawals": withdrawals });
    let output = open(&key_file, "-", Some(&notice.to_string()));
    assert_eq!(output.status.code(), Some(0), "recipient open - (notice): {}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, json!({ "withdrawn": { "packet_id": outer.packet_id, "from_country": "ITA", "categories": ["identity"] } }));

    // Another key of the same organisation, not the one sealed to: refused in one line, naming nothing of the case.
    let (other_key, _) = make_key(&dir.path().join("other-keys"));
    let output = open(&other_key, path(&packet), None);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "something was printed on stdout");
    let error = String::from_utf8(output.stderr).unwrap();
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("does not decrypt"), "{error}");
    for value in CASE_VALUES {
        assert!(!error.contains(value), "the error names a value of the case");
    }

    // A document naming another packet is refused the same way.
    let mut other_packet = document.clone();
    other_packet["packet_id"] = json!("0196f3a0-0000-7000-8000-0000000000e3");
    let output = open(&key_file, "-", Some(&other_packet.to_string()));
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(error.contains("another packet"), "{error}");
    for value in CASE_VALUES {
        assert!(!error.contains(value), "the error names a value of the case");
    }
}

#[test]
fn keys_init_recipient_adds_beside_and_needs_an_organisation() {
    let dir = tempfile::tempdir().unwrap();
    let (first, entry) = make_key(dir.path());
    let (second, _) = make_key(dir.path());
    assert_ne!(first, second);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    // A year by default.
    let days = (entry.not_after - entry.not_before).num_days();
    assert_eq!(days, 365);

    let output = run(
        &["keys", "init", "--recipient", "--organisation", "gin-red-cross", "--dir", path(dir.path()), "--from", "2027-01-01T00:00:00Z", "--valid-days", "30"],
        None,
    );
    assert_eq!(output.status.code(), Some(0));
    let entry: PublishedKey = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(entry.not_before.to_rfc3339(), "2027-01-01T00:00:00+00:00");
    assert_eq!((entry.not_after - entry.not_before).num_days(), 30);

    let output = run(&["keys", "init", "--recipient", "--dir", path(dir.path())], None);
    assert_eq!(output.status.code(), Some(2), "--recipient without --organisation");
    let output = run(&["keys", "init", "--recipient", "--organisation", "Not An Id", "--dir", path(dir.path())], None);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["keys", "init", "--organisation", "gin-red-cross", "--dir", path(dir.path())], None);
    assert_eq!(output.status.code(), Some(2), "--organisation without --recipient");
}
