//! `referral-gateway sandbox`: one gateway (Italy) on fresh demo files, with
//! a client certificate holding every role of the national API, to try the
//! API by hand or to fuzz it (`.ci/openapi-fuzz`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::setup::{self, SetupError};
use super::DemoError;
use crate::app::{Clock, SystemClock};
use crate::config::GatewayConfig;
use crate::dev_pki;
use crate::startup::Application;

/// The organisation the sandbox client speaks for: one the Italian gateway serves.
pub const ORGANISATION: &str = "ita-nrm";
/// Every role of the national API.
pub const ROLES: [&str; 5] = ["submitter", "dpo", "auditor", "statistics", "recipient"];

fn fail(error: impl std::fmt::Display) -> DemoError {
    DemoError::Setup(SetupError(error.to_string()))
}

/// Writes the files under `dir` (cleared first, as the demo's), starts the
/// gateway, prints one JSON line saying where it is and which files to
/// call it with, and serves until Ctrl-C or SIGTERM.
pub async fn run(dir: &Path) -> Result<(), DemoError> {
    let options = setup::Options { countries: &["ITA"], postgres: None, sealed_recipient: false, protocol_versions: None };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let files = setup::create(dir, &options, clock.now())?;
    let client = dev_pki::create(&files.root.join("sandbox-client"), &["sandbox"]).map_err(fail)?;
    let certificate = client.clients.first().ok_or_else(|| fail("no sandbox client certificate"))?;
    let config_path = files.root.join("ita").join("gateway.toml");
    let mut text = std::fs::read_to_string(&config_path).map_err(fail)?;
    text.push_str(&format!(
        "# The sandbox client: every role.\n[auth.clients.sandbox]\nfingerprint = \"{}\"\norg = \"{ORGANISATION}\"\nroles = {}\n",
        certificate.fingerprint.display(),
        json!(ROLES),
    ));
    std::fs::write(&config_path, text).map_err(fail)?;
    let config = GatewayConfig::load(&config_path).map_err(fail)?;
    let app = Application::build(&config, clock)
        .await
        .map_err(|e| DemoError::Start { country: "ITA".to_owned(), reason: e.to_string() })?;
    let port = app.local_addr().port();
    let line = json!({
        "url": format!("https://localhost:{port}"),
        "openapi": format!("https://localhost:{port}/v1/openapi.json"),
        "ca": files.pki.ca,
        "client_certificate": certificate.pem,
        "organisation": ORGANISATION,
        "roles": ROLES,
        "config": config_path,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(fail)?;
    drop(out);
    app.run_until_stopped().await;
    Ok(())
}
