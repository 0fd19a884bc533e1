//! The federation's trust list from the command line, as a coordinator and a
//! joining gateway use it: keys, public entry, signing, verifying.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_referral-gateway")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let output = cli(args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_gateway_joins_a_signed_directory_and_a_tampered_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, coordinator) = (dir.path().join("ita-keys"), dir.path().join("coordinator"));
    ok(&["keys", "init", "--dir", path(&keys)]);
    let again = cli(&["keys", "init", "--dir", path(&keys)]);
    assert_eq!(again.status.code(), Some(2), "init must never overwrite keys");

    let entry: Value = serde_json::from_str(&ok(&["keys", "public", "--dir", path(&keys), "--from", "2026-11-01T00:00:00Z"])).unwrap();
    assert_eq!(entry["keys"].as_array().unwrap().len(), 2);
    assert!(!entry.to_string().contains("\"d\""), "a private key part was printed");

    let mut directory: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/directory.example.json")).unwrap())
            .unwrap();
    directory["serial"] = 3.into();
    let ita = directory["gateways"].as_array_mut().unwrap().iter_mut().find(|g| g["country"] == "ITA").unwrap();
    ita["keys"] = entry["keys"].clone();
    ita["tls_spki_sha256"] = entry["tls_spki_sha256"].clone();
    let unsigned = dir.path().join("directory.json");
    std::fs::write(&unsigned, directory.to_string()).unwrap();

    ok(&["keys", "coordinator", "--dir", path(&coordinator)]);
    let (private, public) = (coordinator.join("coordinator.jwk"), coordinator.join("coordinator.pub.jwk"));
    let signed = dir.path().join("directory.jws");
    ok(&["directory", "sign", "--key", path(&private), "--in", path(&unsigned), "--out", path(&signed)]);
    let verified = ok(&["directory", "verify", "--coordinator", path(&public), path(&signed)]);
    assert!(verified.starts_with("ok: edition 3"), "{verified}");

    // One character of the payload changed: the signature no longer holds.
    let mut text = std::fs::read_to_string(&signed).unwrap();
    let middle = text.find('.').unwrap() + 10;
    let replacement = if &text[middle..=middle] == "A" { "B" } else { "A" };
    text.replace_range(middle..=middle, replacement);
    std::fs::write(&signed, text).unwrap();
    let refused = cli(&["directory", "verify", "--coordinator", path(&public), path(&signed)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("signature does not verify"));

    // The private key is not a coordinator key anyone should configure as trusted.
    let wrong = cli(&["directory", "verify", "--coordinator", path(&private), path(&signed)]);
    assert_eq!(wrong.status.code(), Some(2));
}

#[test]
fn an_invalid_directory_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["keys", "coordinator", "--dir", path(dir.path())]);
    let unsigned = dir.path().join("directory.json");
    std::fs::write(&unsigned, r#"{"gateways":[{"country":"ITA","endpoint":"http://plain.example"}],"organisations":[]}"#).unwrap();
    let output = cli(&[
        "directory",
        "sign",
        "--key",
        path(&dir.path().join("coordinator.jwk")),
        "--in",
        path(&unsigned),
        "--out",
        path(&dir.path().join("out.jws")),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("https://"));
    assert!(!dir.path().join("out.jws").exists());
}
