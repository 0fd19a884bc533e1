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
    std::fs::write(&unsigned, r#"{"serial":1,"gateways":[{"country":"ITA","endpoint":"http://plain.example"}],"organisations":[]}"#).unwrap();
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

mod in_a_running_gateway {
    use std::time::Duration;

    use referral_gateway::crypto::jose_keys::SigningKey;
    use referral_gateway::directory::signed;
    use serde_json::Value;

    use referral_gateway::startup::DirectoryRefresh;

    use crate::helpers::{Backend, FixedClock, Who, fixture_time, repo_path, spawn_app, spawn_app_configured, wait_for, write_config};

    fn example_with(serial: u64, without: Option<&str>) -> String {
        let mut directory: Value = serde_json::from_str(&std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap()).unwrap();
        directory["serial"] = serial.into();
        if let Some(id) = without {
            directory["organisations"].as_array_mut().unwrap().retain(|o| o["id"] != id);
        }
        directory.to_string()
    }

    #[tokio::test]
    async fn a_gateway_refuses_to_start_on_a_directory_its_coordinator_did_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_config(dir.path(), Backend::Sqlite, "");
        let config = referral_gateway::config::GatewayConfig::load(&path).unwrap();
        // Signed by another coordinator: well-formed, but not by the configured key.
        let other = referral_gateway::dev_pki::sign_directory(&dir.path().join("other"), &example_with(1, None)).unwrap();
        std::fs::copy(&other.directory, &config.directory.file).unwrap();
        let error = referral_gateway::startup::Application::build(&config, std::sync::Arc::new(FixedClock(fixture_time())))
            .await
            .expect_err("the gateway started on a directory signed by someone else");
        assert!(error.to_string().contains("signature does not verify"), "{error}");
    }

    /// What IOM Rome's read of an unknown referral answers: `404` while it
    /// is served here, `403` once the directory no longer lists it.
    async fn iom_reads(app: &crate::helpers::TestApp) -> u16 {
        app.send(app.client(Who::IomRome).get(app.url("/v1/referrals/0196f3a0-0000-7000-8000-000000000000"))).await.status
    }

    fn coordinator_of(app: &crate::helpers::TestApp) -> SigningKey {
        let coordinator = app.config.directory.file.parent().unwrap().join("coordinator.jwk");
        SigningKey::from_jwk(&josekit::jwk::Jwk::from_bytes(std::fs::read(&coordinator).unwrap()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_new_edition_is_taken_up_and_a_forged_or_older_one_is_not() {
        // The refresh task would wait a day: each round below is run by hand.
        let app = spawn_app_configured(Backend::Sqlite, fixture_time(), "", |config| config.directory.refresh_seconds = 86_400).await;
        let file = app.config.directory.file.clone();
        let key = coordinator_of(&app);
        let publish = |json: String| std::fs::write(&file, signed::sign(&json, &key).unwrap()).unwrap();
        assert_eq!(iom_reads(&app).await, 404);
        assert_eq!(app.app.refresh_directory().await, DirectoryRefresh::Unchanged);

        // Edition 2 drops IOM Rome: from then on it is not served here.
        publish(example_with(2, Some("ita-iom-rome")));
        assert_eq!(app.app.refresh_directory().await, DirectoryRefresh::InForce(2));
        assert_eq!(iom_reads(&app).await, 403, "edition 2 was not taken up");
        assert_eq!(app.app.refresh_directory().await, DirectoryRefresh::Unchanged, "a file read once is not read again");

        // An older edition that lists it again is refused.
        publish(example_with(1, None));
        assert!(matches!(app.app.refresh_directory().await, DirectoryRefresh::Refused(_)));
        assert_eq!(app.app.gateway().directory().serial(), 2);
        assert_eq!(iom_reads(&app).await, 403);

        // So is another edition 2.
        publish(example_with(2, None));
        assert!(matches!(app.app.refresh_directory().await, DirectoryRefresh::Refused(_)));
        assert_eq!(iom_reads(&app).await, 403);

        // A forged edition 3 (payload changed after signing) is refused.
        let genuine = signed::sign(&example_with(3, Some("ita-iom-rome")), &key).unwrap();
        let parts: Vec<&str> = genuine.split('.').collect();
        let forged_payload =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, example_with(3, None).as_bytes());
        std::fs::write(&file, format!("{}.{forged_payload}.{}", parts[0], parts[2])).unwrap();
        let refused = app.app.refresh_directory().await;
        assert!(matches!(&refused, DirectoryRefresh::Refused(why) if why.contains("signature")), "{refused:?}");
        assert_eq!(app.app.gateway().directory().serial(), 2);
        assert_eq!(iom_reads(&app).await, 403);

        // A genuine edition 3 that lists it again is taken up.
        publish(example_with(3, None));
        assert_eq!(app.app.refresh_directory().await, DirectoryRefresh::InForce(3));
        assert_eq!(iom_reads(&app).await, 404, "edition 3 was not taken up");
        assert_eq!(app.app.gateway().directory().serial(), 3);
    }

    #[tokio::test]
    async fn the_refresh_task_takes_a_new_edition_up_by_itself() {
        // The test configuration checks the file every second.
        let app = spawn_app(Backend::Sqlite).await;
        assert_eq!(app.config.directory.refresh_seconds, 1);
        let key = coordinator_of(&app);
        std::fs::write(&app.config.directory.file, signed::sign(&example_with(2, Some("ita-iom-rome")), &key).unwrap()).unwrap();
        wait_for("the refresh task to put edition 2 in force", Duration::from_secs(30), || async {
            app.app.gateway().directory().serial() == 2
        })
        .await;
        assert_eq!(iom_reads(&app).await, 403);
    }
}
