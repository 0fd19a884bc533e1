//! The audit chain: every action is an entry; editing a stored entry is found.

use referral_gateway::store::{verify_audit_chain, BrokenChain};

use crate::helpers::{spawn_app, variant, Backend, Who};
use crate::on_both_backends;

on_both_backends!(tampering_is_found_at_the_edited_entry);

async fn tampering_is_found_at_the_edited_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    for n in 0..3 {
        let reply = app.submit(Who::IomRome, &variant("rejected_asylum_avr", &format!("avr-tamper-{n}"), None)).await;
        assert_eq!(reply.status, 202);
    }
    let store = &app.app.gateway().store;
    let verified = verify_audit_chain(store.as_ref()).await.unwrap().unwrap();
    // The initial policy, then three submissions.
    assert_eq!(verified.entries, 4);

    // The gateway itself cannot change an entry...
    let refused = app.sql_try("UPDATE audit_log SET outcome = 'deny' WHERE seq = 3").await;
    assert!(refused.unwrap_err().contains("append-only"));
    let refused = app.sql_try("DELETE FROM audit_log WHERE seq = 4").await;
    assert!(refused.unwrap_err().contains("append-only"));

    // ...but someone with direct database access can: verify names the entry.
    let drop_trigger = match backend {
        Backend::Sqlite => "DROP TRIGGER audit_log_no_update",
        Backend::Postgres => "DROP TRIGGER audit_log_append_only ON audit_log",
    };
    app.sql_execute(&[drop_trigger, "UPDATE audit_log SET outcome = 'deny' WHERE seq = 3"]).await;
    let broken = verify_audit_chain(store.as_ref()).await.unwrap().unwrap_err();
    assert!(matches!(&broken, BrokenChain::Entry(b) if b.seq() == 3), "{broken}");

    // The command line says so too, with exit code 1.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["audit", "verify", "--config"])
        .arg(&app.config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("entry 3"), "{stdout}");
}

