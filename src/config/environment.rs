//! Which `RGW_...` environment variables are configuration keys.
//!
//! The prefix is shared with wrapper scripts (`RGW_BIN`, say), so a variable
//! that names no key is not an error: it is ignored with a warning. A
//! variable a typo away from a real key is an error, since the operator
//! meant to set that key and would otherwise run with its old value.

/// Every key path of the configuration, nested keys joined with `.`.
/// `tests/api/config.rs` checks it against `config/gateway.example.toml` and
/// against the `gateway.toml` that `init` writes, both rendered from
/// `config::template`, which must show every key: a key added to the types
/// but not here (or not there) is caught there.
pub const KEY_PATHS: &[&str] = &[
    "country",
    "server.listen",
    "server.body_limit_bytes",
    "server.body_read_timeout_seconds",
    "server.max_concurrent_bodies",
    "server.tls.certificate",
    "server.tls.private_key",
    "database.url",
    "database.schema",
    "database.max_connections",
    "database.case_keys_url",
    "database.node",
    "database.connect_timeout_millis",
    "database.acquire_timeout_millis",
    "database.statement_timeout_millis",
    "database.readiness_timeout_millis",
    "keys.dir",
    "directory.file",
    "directory.coordinator_key",
    "directory.refresh_seconds",
    "policy.initial_dir",
    "policy.refresh_seconds",
    "policy.approvals_required",
    "policy.impact_days",
    "policy.cvc5",
    "policy.cvc5_python",
    "auth.oidc.issuer",
    "auth.oidc.audience",
    "auth.oidc.org_claim",
    "auth.oidc.roles_claim",
    "auth.oidc.leeway_seconds",
    "auth.oidc.jwks_min_refresh_seconds",
    "federation.listen",
    "federation.delivery_window_hours",
    "federation.retry_first_seconds",
    "federation.retry_max_seconds",
    "federation.poll_millis",
    "federation.send_timeout_seconds",
    "federation.erasure_deadline_hours",
    "federation.webhook_ca_file",
    "retention.sweep_seconds",
    "retention.backlog_share_percent",
    "statistics.rounding_base",
    "statistics.threshold",
    "deadlines.emergency.delivery_hours",
    "deadlines.emergency.acknowledgement_hours",
    "deadlines.emergency.first_status_hours",
    "deadlines.urgent.delivery_hours",
    "deadlines.urgent.acknowledgement_hours",
    "deadlines.urgent.first_status_hours",
    "deadlines.normal.delivery_hours",
    "deadlines.normal.acknowledgement_hours",
    "deadlines.normal.first_status_hours",
    "overrides.approval_window_minutes",
    "matching.threshold",
    "matching.queries_per_day",
    "matching.handle_hours",
    "console.public_url",
    "console.idle_minutes",
    "console.session_hours",
    "console.oidc.client_id",
    "console.oidc.client_secret",
    "console.oidc.scopes",
    "log.level",
    "log.format",
];

/// Tables whose keys are names chosen by the operator (one client, one
/// callback each), with a key of theirs for the warnings.
const NAMED_TABLES: &[(&str, &str)] = &[("auth.clients", "auth.clients.<name>.roles"), ("callbacks", "callbacks.<name>.url")];

/// Variables with the prefix that name something else than a key: the CLI
/// reads them (see `cli.rs`).
const NOT_KEYS: &[&str] = &["config_file"];

/// At most this many single-character edits away from a key path, a
/// variable is taken for a misspelt key.
const NEAR_MISS_EDITS: usize = 2;

/// What to do with one variable, given its name without the prefix.
#[derive(Debug, PartialEq, Eq)]
pub enum Variable {
    /// A configuration key: read it.
    Key,
    /// Read by the CLI, not a key: skip it silently.
    NotAKey,
    /// Names no key: skip it, with a warning.
    Unknown,
    /// A typo of this key path: refuse to start.
    NearMiss(&'static str),
    /// Names a table of keys (`RGW_LOG`), which a variable cannot set: a
    /// wrapper's own variable, or meant for one of its keys. Skip it, with a
    /// warning naming a key of the table.
    Table(&'static str),
}

/// The key path an environment variable name (without the prefix) stands for.
pub fn key_path(name: &str) -> String {
    name.to_ascii_lowercase().replace("__", ".")
}

/// The variable name (without the prefix) that sets a key path: the inverse of [`key_path`].
pub fn variable_for(path: &str) -> String {
    path.to_ascii_uppercase().replace('.', "__")
}

pub fn classify(name: &str) -> Variable {
    let path = key_path(name);
    if NOT_KEYS.contains(&path.as_str()) {
        return Variable::NotAKey;
    }
    // A key of a client, `auth.clients.<name>.<key>`: the name is the operator's.
    let in_named_table = NAMED_TABLES.iter().any(|(table, _)| {
        path.strip_prefix(&format!("{table}.")).is_some_and(|rest| rest.split('.').filter(|part| !part.is_empty()).count() >= 2)
    });
    if KEY_PATHS.contains(&path.as_str()) || in_named_table {
        return Variable::Key;
    }
    let table_prefix = format!("{path}.");
    if let Some(key) = KEY_PATHS.iter().find(|key| key.starts_with(&table_prefix)) {
        return Variable::Table(key);
    }
    if let Some((_, key)) =
        NAMED_TABLES.iter().find(|(table, _)| *table == path || table.starts_with(&table_prefix) || path.starts_with(&format!("{table}.")))
    {
        return Variable::Table(key);
    }
    match KEY_PATHS.iter().map(|key| (strsim::levenshtein(key, &path), *key)).min() {
        Some((edits, key)) if edits <= NEAR_MISS_EDITS => Variable::NearMiss(key),
        _ => Variable::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_variable_that_names_it() {
        for path in KEY_PATHS {
            assert_eq!(key_path(&variable_for(path)), *path);
            assert_eq!(classify(&variable_for(path)), Variable::Key, "{path}");
        }
    }

    #[test]
    fn keys_tables_and_named_clients_are_read() {
        assert_eq!(classify("DATABASE__URL"), Variable::Key);
        assert_eq!(classify("country"), Variable::Key);
        assert_eq!(classify("SERVER__TLS__CERTIFICATE"), Variable::Key);
        assert_eq!(classify("AUTH__CLIENTS__IOM_ROME__ORG"), Variable::Key);
        assert_eq!(classify("CONFIG_FILE"), Variable::NotAKey);
    }

    #[test]
    fn a_wrapper_scripts_variable_is_unknown_but_a_typo_of_a_key_is_a_near_miss() {
        assert_eq!(classify("BIN"), Variable::Unknown);
        assert_eq!(classify("HOME_DIR"), Variable::Unknown);
        assert_eq!(classify("DATABASE__URLL"), Variable::NearMiss("database.url"));
        assert_eq!(classify("DATABSE__URL"), Variable::NearMiss("database.url"));
        assert_eq!(classify("LOG__LEVLE"), Variable::NearMiss("log.level"));
    }

    /// `RGW_LOG=debug` (in the style of `RUST_LOG`) once stopped the start
    /// with a type error: it was read as the whole `[log]` table.
    #[test]
    fn a_variable_naming_a_table_is_not_read_and_points_at_a_key_of_it() {
        assert_eq!(classify("LOG"), Variable::Table("log.level"));
        assert_eq!(classify("SERVER__TLS"), Variable::Table("server.tls.certificate"));
        assert_eq!(classify("AUTH"), Variable::Table("auth.oidc.issuer"));
        assert_eq!(classify("AUTH__CLIENTS"), Variable::Table("auth.clients.<name>.roles"));
        assert_eq!(classify("AUTH__CLIENTS__IOM_ROME"), Variable::Table("auth.clients.<name>.roles"));
        assert_eq!(classify("CALLBACKS__NATIONAL_SYSTEM__URL"), Variable::Key);
        assert_eq!(classify("CALLBACKS__NATIONAL_SYSTEM"), Variable::Table("callbacks.<name>.url"));
    }
}
