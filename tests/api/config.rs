//! Configuration: the example file loads, and mistakes are named by key.

use referral_gateway::config::GatewayConfig;

use crate::helpers::repo_path;

#[test]
fn the_example_configuration_is_valid() {
    let config = GatewayConfig::load(&repo_path("config/gateway.example.toml")).unwrap();
    assert_eq!(config.country.as_str(), "ITA");
    assert_eq!(config.server.body_limit_bytes, 262144);
    assert!(config.directory.file.ends_with("config/directory.jws"));
    assert!(config.policy.initial_dir.ends_with("config/policies"));
    assert_eq!(config.auth.clients.len(), 1);
    let federation = config.federation.unwrap();
    assert_eq!((federation.listen.port(), federation.delivery_window_hours, federation.retry_max_seconds), (9443, 168, 600));
    assert_eq!((config.retention.sweep_seconds, config.retention.backlog_share_percent), (60, 10));
    assert_eq!(config.policy.refresh_seconds, 5);
}

fn load_with(replace: &str, by: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_path("config/gateway.example.toml")).unwrap();
    assert!(text.contains(replace), "{replace}");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text.replacen(replace, by, 1)).unwrap();
    GatewayConfig::load(&path).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("country = \"ITA\"", "country = \"XXX\"", "country"),
        ("listen = \"0.0.0.0:8443\"", "listen = \"not an address\"", "server.listen"),
        ("body_limit_bytes = 262144", "body_limit_bytes = 10", "server.body_limit_bytes"),
        ("max_connections = 8", "max_connections = 0", "database.max_connections"),
        ("url = \"sqlite://var/gateway.db\"", "url = \"mysql://x\"", "database.url"),
        ("roles = [\"submitter\"]", "roles = [\"admin\"]", "auth.clients.iom_rome.roles"),
        ("fingerprint = \"sha256:0000", "fingerprint = \"md5:0000", "auth.clients.iom_rome.fingerprint"),
        ("format = \"text\"", "format = \"xml\"", "log.format"),
        ("delivery_window_hours = 168", "delivery_window_hours = 721", "federation.delivery_window_hours"),
        ("retry_first_seconds = 2", "retry_first_seconds = 601", "federation.retry_first_seconds"),
        ("listen = \"0.0.0.0:9443\"", "listen = \"0.0.0.0:8443\"", "federation.listen"),
        ("level = \"info\"", "level = \"info\"\nverbosity = 3", "verbosity"),
        ("sweep_seconds = 60", "sweep_seconds = 0", "retention.sweep_seconds"),
        ("sweep_seconds = 60", "sweep_seconds = 86401", "retention.sweep_seconds"),
        ("backlog_share_percent = 10", "backlog_share_percent = 0", "retention.backlog_share_percent"),
        ("backlog_share_percent = 10", "backlog_share_percent = 101", "retention.backlog_share_percent"),
        ("refresh_seconds = 5", "refresh_seconds = 0", "policy.refresh_seconds"),
        ("rounding_base = 5", "rounding_base = 4", "statistics.rounding_base"),
        ("threshold = 10", "threshold = 3", "statistics.threshold"),
        ("refresh_seconds = 5", "refresh_seconds = 86401", "policy.refresh_seconds"),
        (
            "url = \"sqlite://var/gateway.db\"",
            "url = \"sqlite://var/gateway.db\"\ncase_keys_url = \"sqlite://var/gateway.db\"",
            "database.case_keys_url",
        ),
        ("url = \"sqlite://var/gateway.db\"", "url = \"sqlite://var/gateway.db\"\ncase_keys_url = \"ftp://x\"", "database.case_keys_url"),
    ];
    for (replace, by, key) in cases {
        let error = load_with(replace, by);
        assert!(error.contains(key), "{by:?}: {error}");
    }
}

#[test]
fn environment_variables_override_file_keys() {
    // Run in a child process: the environment is shared by every test here.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["audit", "verify", "--config"])
        .arg(repo_path("config/gateway.example.toml"))
        .env("RGW_DATABASE__URL", "mysql://elsewhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("database.url"), "{stderr}");
}

#[test]
fn errors_do_not_repeat_the_value() {
    let error = load_with("country = \"ITA\"", "country = 12345678");
    assert!(error.contains("country") && !error.contains("12345678"), "{error}");
    let error = load_with("body_limit_bytes = 262144", "body_limit_bytes = \"secret-looking-value\"");
    assert!(error.contains("server.body_limit_bytes") && !error.contains("secret-looking-value"), "{error}");
}

#[test]
fn the_config_file_variable_is_not_taken_for_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["audit", "verify"])
        .env("RGW_CONFIG_FILE", repo_path("config/gateway.example.toml"))
        .env("RGW_DATABASE__URL", format!("sqlite://{}", dir.path().join("absent.db").display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("config_file"), "{stderr}");
    // ...and verifying a database that is not there is an error, not an empty "ok".
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no database file"), "{stderr}");
    assert!(!dir.path().join("absent.db").exists(), "verify must not create the database");
}

#[test]
fn an_unknown_prefixed_variable_is_ignored_with_a_warning_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["audit", "verify", "--config"])
        .arg(repo_path("config/gateway.example.toml"))
        // As a wrapper script would set it.
        .env("RGW_BIN", "/opt/secret-looking-path/referral-gateway")
        // In the style of RUST_LOG: names the [log] table, which it cannot set.
        .env("RGW_LOG", "debug")
        .env("RGW_DATABASE__URL", format!("sqlite://{}", dir.path().join("absent.db").display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RGW_BIN") && stderr.contains("not a configuration key"), "{stderr}");
    assert!(stderr.contains("RGW_LOG names a table, not a key; ignored (set its keys one by one, such as RGW_LOG__LEVEL)"), "{stderr}");
    assert!(!stderr.contains("secret-looking-path"), "{stderr}");
    assert!(!stderr.contains("unknown field"), "{stderr}");
    // The configuration loaded: verify went on to look for the database.
    assert!(stderr.contains("no database file"), "{stderr}");
}

/// A table written inline in one variable is not read; rather than start
/// without it (a gateway without its TLS settings), the start stops.
#[test]
fn a_whole_table_in_a_variable_stops_the_gateway() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["serve", "--config"])
        .arg(repo_path("config/gateway.example.toml"))
        .env("RGW_SERVER__TLS", "{certificate = \"secret-looking.pem\", private_key = \"secret-looking.key\"}")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("RGW_SERVER__TLS sets a whole table, which is not read; set its keys one by one, such as RGW_SERVER__TLS__CERTIFICATE"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-looking"), "{stderr}");
}

#[test]
fn a_near_miss_of_a_key_stops_the_gateway_naming_the_key_meant() {
    for variable in ["RGW_DATABASE__URLL", "RGW_DATABSE__URL"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
            .args(["serve", "--config"])
            .arg(repo_path("config/gateway.example.toml"))
            .env(variable, "postgres://secret-looking-host/db")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(variable) && stderr.contains("did you mean RGW_DATABASE__URL"), "{stderr}");
        assert!(!stderr.contains("secret-looking-host"), "{stderr}");
    }
}

/// The key paths a configuration file shows, set or commented out; one
/// operator-named client (`auth.clients.<name>`) or callback
/// (`callbacks.<name>`) stands for all of them and is left out.
fn shown_keys(text: &str) -> std::collections::BTreeSet<String> {
    let mut shown = std::collections::BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = match header {
                _ if header.starts_with("auth.clients.") => "auth.clients.*".to_owned(),
                _ if header.starts_with("callbacks.") => "callbacks.*".to_owned(),
                _ => header.to_owned(),
            };
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else { continue };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') || table.ends_with(".*") {
            continue;
        }
        shown.insert(if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") });
    }
    shown
}

fn listed_keys() -> std::collections::BTreeSet<String> {
    referral_gateway::config::KEY_PATHS.iter().map(|k| (*k).to_owned()).collect()
}

/// The keys the environment may set are the keys the example file shows,
/// set or commented out: a key added to the types and the example but not to
/// `KEY_PATHS` could not be overridden, and one missing from the example
/// would be undocumented.
#[test]
fn the_environments_key_list_is_the_example_files_key_list() {
    let text = std::fs::read_to_string(repo_path("config/gateway.example.toml")).unwrap();
    assert_eq!(shown_keys(&text), listed_keys(), "config/gateway.example.toml and config::KEY_PATHS disagree");
}

/// `init` writes every key too, and the file it writes starts a gateway once
/// a client is registered in it.
#[test]
fn the_configuration_init_writes_shows_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["init", "--country", "GMB", "--endpoint", "https://gateway.gmb.example:9443", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    assert_eq!(shown_keys(&text), listed_keys(), "the configuration init writes and config::KEY_PATHS disagree");
    assert!(text.contains("country = \"GMB\"") && text.contains("listen = \"0.0.0.0:9443\""), "{text}");
    assert!(text.contains("# [auth.clients.national_system]"), "no client is registered, one is shown: {text}");
}

#[test]
fn identity_provider_settings_are_bounded() {
    let oidc = |lines: &str| format!("[auth.oidc]\naudience = \"urn:gateway\"\n{lines}\n\n[auth.clients.iom_rome]");
    let cases = [
        ("issuer = \"http://localhost.evil.example\"", "auth.oidc.issuer"),
        ("issuer = \"http://127.0.0.1.nip.io\"", "auth.oidc.issuer"),
        ("issuer = \"ftp://idp.example\"", "auth.oidc.issuer"),
        ("issuer = \"https://idp.example\"\nleeway_seconds = 301", "auth.oidc.leeway_seconds"),
        ("issuer = \"https://idp.example\"\njwks_min_refresh_seconds = 0", "auth.oidc.jwks_min_refresh_seconds"),
        ("issuer = \"https://idp.example\"\norg_claim = \"roles\"", "auth.oidc.org_claim"),
    ];
    for (lines, key) in cases {
        let error = load_with("[auth.clients.iom_rome]", &oidc(lines));
        assert!(error.contains(key), "{lines}: {error}");
    }
}

#[test]
fn deadlines_are_whole_hours_in_order() {
    let cases = [
        ("[deadlines.emergency]\ndelivery_hours = 1", "[deadlines.emergency]\ndelivery_hours = 0", "deadlines.emergency.delivery_hours"),
        ("[deadlines.normal]\ndelivery_hours = 24", "[deadlines.normal]\ndelivery_hours = 8785", "deadlines.normal.delivery_hours"),
        ("first_status_hours = 72", "first_status_hours = 8785", "deadlines.urgent.first_status_hours"),
        // Acknowledged before delivered, or answered before acknowledged: out of order.
        ("[deadlines.urgent]\ndelivery_hours = 4", "[deadlines.urgent]\ndelivery_hours = 25", "deadlines.urgent"),
        ("first_status_hours = 24\n", "first_status_hours = 3\n", "deadlines.emergency"),
        ("[deadlines.normal]\ndelivery_hours = 24", "[deadlines.normal]\ndelivery_hours = 24\nreminder_hours = 2", "reminder_hours"),
    ];
    for (replace, by, key) in cases {
        let error = load_with(replace, by);
        assert!(error.contains(key), "{by:?}: {error}");
    }
    // The example's values are the defaults, and a file without the table takes them.
    let example = GatewayConfig::load(&repo_path("config/gateway.example.toml")).unwrap();
    assert_eq!(example.deadlines.deadlines(), referral_gateway::domain::priority::DeadlinesByPriority::default());
    let text = std::fs::read_to_string(repo_path("config/gateway.example.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let mut in_deadlines = false;
    let mut without = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            in_deadlines = line.starts_with("[deadlines.");
        }
        if !in_deadlines {
            without.push_str(line);
            without.push('\n');
        }
    }
    assert!(!without.contains("[deadlines") && without.contains("[statistics]"), "{without}");
    std::fs::write(&path, &without).unwrap();
    let defaults = GatewayConfig::load(&path).unwrap();
    assert_eq!(defaults.deadlines.deadlines(), referral_gateway::domain::priority::DeadlinesByPriority::default());
    // Changed, they change what is awaited.
    std::fs::write(&path, text.replacen("[deadlines.emergency]\ndelivery_hours = 1\nacknowledgement_hours = 4", "[deadlines.emergency]\ndelivery_hours = 2\nacknowledgement_hours = 6", 1)).unwrap();
    let changed = GatewayConfig::load(&path).unwrap().deadlines.deadlines();
    assert_eq!((changed.emergency.delivery.num_hours(), changed.emergency.acknowledgement.num_hours()), (2, 6));
}

/// A callback names an organisation once, an https:// URL without
/// credentials, and a bounded retry; its key file must hold 32 bytes, and
/// the error that says so never shows them.
#[test]
fn callbacks_are_checked() {
    let table = |org: &str, url: &str, retry: u64| {
        format!("[callbacks.national_system]\norg = \"{org}\"\nurl = \"{url}\"\nsecret_file = \"system.key\"\nretry_hours = {retry}\n\n[console]")
    };
    let cases = [
        (table("ITA NRM", "https://nrm.example.org/events", 72), "callbacks.national_system.org"),
        (table("ita-nrm", "http://nrm.example.org/events", 72), "callbacks.national_system.url"),
        (table("ita-nrm", "https://user:pass@nrm.example.org/events", 72), "callbacks.national_system.url"),
        (table("ita-nrm", "https://nrm.example.org/events", 0), "callbacks.national_system.retry_hours"),
        (table("ita-nrm", "https://nrm.example.org/events", 721), "callbacks.national_system.retry_hours"),
        (
            format!("{}\n[callbacks.second]\norg = \"ita-nrm\"\nurl = \"https://b.example.org\"\nsecret_file = \"b.key\"\n\n[console]", table("ita-nrm", "https://a.example.org", 1).trim_end_matches("[console]")),
            "callbacks.second.org",
        ),
    ];
    for (by, key) in cases {
        let error = load_with("# [console]", &by.replacen("[console]", "# [console]", 1));
        assert!(error.contains(key), "{by:?}: {error}");
    }
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_path("config/gateway.example.toml")).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text.replacen("# [console]", &table("ita-nrm", "https://nrm.example.org/events", 72).replacen("[console]", "# [console]", 1), 1)).unwrap();
    let config = GatewayConfig::load(&path).unwrap();
    let callback = &config.callbacks["national_system"];
    assert_eq!((callback.org.as_str(), callback.retry_hours, callback.secret_file.clone()), ("ita-nrm", 72, dir.path().join("system.key")));
}

#[test]
fn console_settings_are_bounded() {
    let oidc = "[auth.oidc]\nissuer = \"https://idp.example\"\naudience = \"urn:gateway\"\n\n";
    let console = |lines: &str| format!("{lines}\n\n[auth.clients.iom_rome]");
    let cases = [
        ("[console]\nidle_minutes = 4".to_owned(), "console.idle_minutes"),
        ("[console]\nidle_minutes = 241".to_owned(), "console.idle_minutes"),
        ("[console]\nsession_hours = 0".to_owned(), "console.session_hours"),
        ("[console]\nsession_hours = 25".to_owned(), "console.session_hours"),
        ("[console]\npublic_url = \"http://gateway.example\"".to_owned(), "console.public_url"),
        ("[console]\npublic_url = \"https://gateway.example/console\"".to_owned(), "console.public_url"),
        ("[console.oidc]\nclient_id = \"c\"\nclient_secret = \"s\"".to_owned(), "`console.oidc`: needs [auth.oidc]"),
        (format!("{oidc}[console]\npublic_url = \"https://gw.example\"\n\n[console.oidc]\nclient_id = \" \"\nclient_secret = \"s\""), "console.oidc.client_id"),
        (format!("{oidc}[console.oidc]\nclient_id = \"c\"\nclient_secret = \"s\""), "`console.public_url`: must be set with [console.oidc]"),
        (format!("{oidc}[console]\npublic_url = \"https://gw.example\"\n\n[console.oidc]\nclient_id = \"c\"\nclient_secret = \"\""), "console.oidc.client_secret"),
    ];
    for (lines, key) in cases {
        let error = load_with("[auth.clients.iom_rome]", &console(&lines));
        assert!(error.contains(key), "{lines}: {error}");
    }
    // Its cookies are Secure: no console without the gateway's own TLS.
    let text = std::fs::read_to_string(repo_path("config/gateway.example.toml")).unwrap();
    assert!(text.contains("\n[server.tls]\n"), "the example serves TLS");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let mut cut = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skipping = line == "[server.tls]";
        }
        if !skipping {
            cut.push_str(line);
            cut.push('\n');
        }
    }
    std::fs::write(&path, cut.replacen("[auth.clients.iom_rome]", "[console]\n\n[auth.clients.iom_rome]", 1)).unwrap();
    let error = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(error.contains("console") && error.contains("server.tls"), "{error}");
}

#[test]
fn verifying_an_empty_audit_log_is_an_error() {
    // A schema no gateway ever used: verify must not call it intact.
    let schema = format!("rgwtest_{}_empty", std::process::id());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["audit", "verify", "--config"])
        .arg(repo_path("config/gateway.example.toml"))
        .env("RGW_DATABASE__URL", crate::helpers::POSTGRES_URL)
        .env("RGW_DATABASE__SCHEMA", &schema)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("audit log is empty"), "{stderr}");
}

#[test]
fn the_example_signed_directory_is_the_example_directory_signed_by_the_example_coordinator() {
    use referral_gateway::directory::signed;
    let key = signed::read_coordinator_key(&repo_path("config/coordinator.example.pub.jwk")).unwrap();
    let (text, directory) = signed::read_signed(&repo_path("config/directory.example.jws"), &key).unwrap();
    let payload = text.split('.').nth(1).unwrap();
    let payload = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap(),
        "config/directory.example.jws is stale: sign config/directory.example.json again with a new coordinator key \
         (`keys coordinator`, `directory sign`) and replace config/coordinator.example.pub.jwk"
    );
    assert!(directory.organisations().count() > 20);
}
