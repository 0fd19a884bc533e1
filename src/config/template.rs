//! The configuration file as an operator first sees it: every key, with its
//! default where it has one and a comment saying what it does.
//!
//! One text serves both `referral-gateway init` (a new gateway's
//! `gateway.toml`) and `config/gateway.example.toml` (a test checks that the
//! file is this text, rendered for [`Template::example`]), so that the two
//! cannot drift apart, nor from `KEY_PATHS` (checked against the example).
//! Defaults are taken from the functions serde uses.

use std::net::SocketAddr;

use crate::auth::oidc::{default_jwks_refresh, default_leeway, default_org_claim, default_roles_claim};
use super::{
    default_acquire_timeout_millis, default_body_limit, default_body_read_timeout, default_connect_timeout_millis, default_database_url,
    default_delivery_hours, default_directory_refresh, default_erasure_deadline, default_log_level,
    default_approvals_required, default_console_idle_minutes, default_console_session_hours, default_impact_days, default_rounding_base, default_threshold, default_max_concurrent_bodies, default_max_connections, default_policy_refresh, default_poll_millis,
    default_readiness_timeout_millis, default_retry_first, default_retry_max, default_send_timeout,
    default_statement_timeout_millis, default_sweep_seconds, default_backlog_share_percent, default_emergency_deadlines, default_urgent_deadlines, default_normal_deadlines, default_callback_retry_hours, default_override_window_minutes, default_match_threshold, default_match_queries_per_day, default_match_handle_hours,
};

/// Files a configuration of [`render`] names, relative to its own directory.
pub const TLS_CERTIFICATE: &str = "tls/api.crt";
pub const TLS_PRIVATE_KEY: &str = "tls/api.key";
pub const KEYS_DIR: &str = "keys";
pub const DIRECTORY_FILE: &str = "directory.jws";
pub const COORDINATOR_KEY: &str = "coordinator.pub.jwk";
pub const POLICY_DIR: &str = "policies";

/// What differs between one gateway's configuration and another's.
#[derive(Debug, Clone)]
pub struct Template {
    /// The country's code, as [`crate::domain::CountryCode`] shows it.
    pub country: String,
    /// The national API's listener.
    pub listen: SocketAddr,
    /// The federation listener (the port the directory entry's endpoint names).
    pub federation_listen: SocketAddr,
    /// A client certificate registered as an example (the example file), or
    /// only a commented-out one to fill in (a new gateway's file).
    pub example_client: bool,
}

impl Template {
    /// What `config/gateway.example.toml` is rendered from.
    pub fn example() -> Self {
        Self {
            country: "ITA".to_owned(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            federation_listen: SocketAddr::from(([0, 0, 0, 0], 9443)),
            example_client: true,
        }
    }
}

/// The configuration file's text.
pub fn render(template: &Template) -> String {
    let clients = if template.example_client {
        "[auth.clients.iom_rome]
fingerprint = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"
org = \"ita-iom-rome\"
roles = [\"submitter\"]"
    } else {
        "# [auth.clients.national_system]
# fingerprint = \"sha256:<64 hex digits>\"
# org = \"<the organisation's id in the directory>\"
# roles = [\"submitter\"]"
    };
    let (emergency, urgent, normal) = (default_emergency_deadlines(), default_urgent_deadlines(), default_normal_deadlines());
    format!(
        r#"# referral-gateway configuration: every key, with its default where it has
# one. A key left out takes the default shown; a commented-out key has none.
#
# Every key can be overridden by an environment variable: RGW_ then the key
# path in capitals, with __ between levels, e.g.
#   RGW_DATABASE__URL=postgres://gateway@db.internal:5432/gateway
#   RGW_SERVER__LISTEN=0.0.0.0:8443
# Relative paths are taken relative to this file's directory.

# The country this gateway serves (ISO 3166-1 alpha-3). Only organisations of
# this country (per the directory) may submit referrals here.
country = "{country}"

[server]
# The national API: address and port to listen on; port 0 picks a free one.
listen = "{listen}"
# Largest accepted request body, in bytes (1024 to 16777216). A body limit
# whose cases could never be delivered (over the federation's packet limit
# once sealed) stops the start.
body_limit_bytes = {body_limit}
# A request body must arrive within this many seconds of its head (1 to 600);
# past it the answer is 408.
body_read_timeout_seconds = {body_read_timeout}
# Request bodies each listener reads at once (1 to 10000); one more is
# answered 503 with Retry-After.
max_concurrent_bodies = {max_concurrent_bodies}

# HTTPS, with client certificates requested (not required). Without this
# table the gateway speaks plain HTTP and must sit behind a TLS-terminating
# proxy; then only bearer tokens can authenticate callers. `init` writes a
# self-signed certificate here: replace it with one your national systems
# trust.
[server.tls]
# PEM: the certificate, then its chain.
certificate = "{tls_certificate}"
# PEM: its private key, readable by the gateway only.
private_key = "{tls_private_key}"

[database]
# sqlite://<path> (embedded; created and migrated on first start, WAL mode)
# or postgres://user@host:port/database (production; several replicas may share it).
url = "{database_url}"
# PostgreSQL only: a schema of its own, created if missing.
# schema = "referral_gateway"
max_connections = {max_connections}
# Each case's data key, wrapped, is kept apart from the data, so that erasing
# a case (destroying its key) reaches every copy of the database. By default
# a file beside the database (gateway.case-keys.db), or on PostgreSQL the
# schema <schema>_case_keys. Back it up apart from the data, if at all.
# case_keys_url = "sqlite://case-keys/gateway.case-keys.db"
# Deadlines, in milliseconds (100 to 600000; docs/operations.md §2). A store
# call that passes statement_timeout_millis answers 503 `unavailable`.
connect_timeout_millis = {connect_timeout}
acquire_timeout_millis = {acquire_timeout}
statement_timeout_millis = {statement_timeout}
readiness_timeout_millis = {readiness_timeout}
# This process's node among replicas (default: the host name); a restart on
# the same node takes back the delivery claims its predecessor left.
# node = "gateway-1"

[keys]
# Holds data.key (AES-256-GCM, personal data at rest), index.key (HMAC-SHA-256
# for subject references) and federation/ (signing, encryption and TLS keys
# for the peer side). `referral-gateway init` (or `keys init`) creates them.
dir = "{keys_dir}"

[directory]
# The federation directory (trust list): member gateways with their keys and
# TLS pins, and recipient organisations, as the federation coordinator signed
# it (compact JWS; `referral-gateway directory add-member --sign`). The
# gateway refuses to start if the signature does not verify.
file = "{directory_file}"
# The coordinator's public key (JWK) the directory must be signed with.
coordinator_key = "{coordinator_key}"
# Seconds between checks of the file for a new edition (1 to 86400). A new
# edition replaces the one in force only if its signature verifies, it is
# valid, it is not older (`serial`), and it still lists this gateway;
# otherwise the last good edition stays.
refresh_seconds = {directory_refresh}

[policy]
# *.cedar files (and retention.toml, the retention rules, end_to_end.toml,
# the end-to-end sealing rules, and overrides.toml, the standing rules for
# emergency overrides) stored as policy version 1 on the first
# start. Later versions are uploaded by a DPO (PUT /v1/policies) as drafts,
# and act once signed off (api.md section 6).
initial_dir = "{policy_dir}"
# Seconds between looks for a policy version another replica (sharing the
# database) stored or signed off (1 to 86400).
refresh_seconds = {policy_refresh}
# Distinct DPOs, the author included, who sign a version off before it acts
# (1 to 5). 1 lets one person change the policy alone: demonstrations only.
approvals_required = {approvals_required}
# Days of sending decisions each upload is replayed on, to show what it
# would change (1 to 366). The facts of each decision are kept that long,
# sealed under the case's key, then forgotten.
impact_days = {impact_days}
# The SMT solver that proves each upload: a cvc5 program, or a Python with
# PyPI's cvc5 package (policy-guide.md section 3.1). Without, uploads are
# tested but not proved.
# cvc5 = "/usr/bin/cvc5"
# cvc5_python = "/opt/cvc5-venv/bin/python"

# OpenID Connect bearer tokens (JWT access tokens, RFC 9068). Optional.
# [auth.oidc]
# The issuer, discovered at start (https://; plain http on loopback only).
# issuer = "https://login.example.org/realms/nrm"
# The `aud` value access tokens must carry for this gateway.
# audience = "https://gateway.example.org"
# The claim naming the caller's organisation, and the one listing its roles
# (an array, or a space-separated string).
# org_claim = "{org_claim}"
# roles_claim = "{roles_claim}"
# Clock tolerance for exp and nbf, in seconds (at most 300).
# leeway_seconds = {leeway}
# An unknown key id fetches the issuer's keys again at most this often, in seconds.
# jwks_min_refresh_seconds = {jwks_refresh}

# Client certificates, pinned by SHA-256 fingerprint of the certificate (DER),
# one table per client under a name of your choosing. Roles: submitter,
# recipient, dpo, auditor. The gateway starts only with a client here or
# [auth.oidc] set. A fingerprint is
#   openssl x509 -in client.pem -outform der | sha256sum
{clients}

# The peer side: a listener for member gateways (mutual TLS 1.3, pinned
# through the directory) and delivery to them. Without this table the
# gateway queues accepted referrals but neither sends nor receives.
[federation]
# Address and port of that listener: the port of the endpoint the directory
# lists for this gateway.
listen = "{federation_listen}"
# How long after acceptance a referral may still be delivered, in hours
# (1 to 720); the consent's end cuts it short.
delivery_window_hours = {delivery_hours}
# The first retry after a failed send, in seconds; it doubles per failure, up
# to retry_max_seconds (1 to 86400), with jitter.
retry_first_seconds = {retry_first}
retry_max_seconds = {retry_max}
# How often the outbox and inbox are looked at when nothing wakes them, in
# milliseconds (10 to 60000).
poll_millis = {poll_millis}
# Time allowed for one send, connection included, in seconds (1 to 600).
send_timeout_seconds = {send_timeout}
# Hours a peer has to confirm an erasure before it shows as overdue (1 to 720).
erasure_deadline_hours = {erasure_deadline}
# PEM file of certificate authorities trusted for recipients' webhooks and
# status callbacks ([callbacks]), besides the usual public ones (a national
# PKI, say).
# webhook_ca_file = "national-ca.pem"

# The retention sweep, on every gateway (federated or not): erases each case
# whose retention deadline has passed (the DPO's policies/retention.toml and
# the consent's end set it): its case key destroyed, its data blanked,
# audited as retention.erase.
[retention]
# Seconds between two sweeps (1 to 86400).
sweep_seconds = {sweep_seconds}
# While more is due than one round erases (after a restart past many
# deadlines), the percentage of the time the sweep works, resting between
# rounds so that the traffic keeps the database (1 to 100; 100 erases a
# backlog flat out).
backlog_share_percent = {backlog_share}

# Statistics for the coordinating body (GET /v1/statistics): every count
# rounded to a multiple of rounding_base, and a count under threshold not
# released at all (neither below 5).
[statistics]
rounding_base = {rounding_base}
threshold = {threshold}

# Deadlines per priority (emergency, urgent or normal, as a submission says),
# in whole hours from a referral's acceptance: to its delivery to the
# recipient's gateway, to the recipient's acknowledgement, and to its first
# answer (accepted or declined). A referral past the one it awaits is
# overdue (GET /v1/referrals/{{id}}, rgw_referrals_overdue); an overdue
# emergency is logged at warn level. Each from 1 to 8784, in that order.
[deadlines.emergency]
delivery_hours = {emergency_delivery}
acknowledgement_hours = {emergency_acknowledgement}
first_status_hours = {emergency_first_status}

[deadlines.urgent]
delivery_hours = {urgent_delivery}
acknowledgement_hours = {urgent_acknowledgement}
first_status_hours = {urgent_first_status}

[deadlines.normal]
delivery_hours = {normal_delivery}
acknowledgement_hours = {normal_acknowledgement}
first_status_hours = {normal_first_status}

# Emergency overrides: a submitter may ask to share without the person's
# consent when a life is at risk (docs/api.md §4.4). It takes effect only
# once a DPO other than the submitter approves it within this many minutes
# (5 to 1440); past them the referral is denied and its payload erased.
[overrides]
approval_window_minutes = {override_window}

# Matching tracing requests across gateways without showing names (docs/
# federation.md §12b): a search sent from here may be found by another
# gateway's, and asks others (POST /v1/referrals/{{id}}/matches).
[matching]
# Families of keys (a name part, its sound, the whole name) that must agree
# for a match (2 to 13): lower finds more, and more wrongly.
threshold = {match_threshold}
# Match queries each member gateway may ask of this one in any 24 hours
# (1 to 10000): what a gateway could learn by guessing names is bounded by it.
queries_per_day = {match_queries_per_day}
# Hours the handle an answer gives stays good for being told of a match (1 to 720).
handle_hours = {match_handle_hours}

# Status callbacks: an organisation of this country told of every entry
# added to its referrals' timelines, each as an event signed with its key
# (JWS, HS256) and POSTed to its URL, a referral's events in timeline order
# (docs/api.md §5.4). Optional: one table per organisation, under a name of
# your choosing. Give every replica the same tables.
# [callbacks.national_system]
# The organisation's id in the directory.
# org = "ita-nrm"
# Where events are POSTed (https://; certificate authorities as for
# recipients' webhooks: the public ones and federation.webhook_ca_file).
# url = "https://referrals.example.org/rgw-events"
# A file holding the key events are signed with, shared with the
# organisation: at least 32 bytes (openssl rand -base64 48 makes one).
# secret_file = "callbacks/national_system.key"
# How long an event is retried, with backoff, before it is given up
# (failed) and the referral's next one goes: 1 to 720 hours.
# retry_hours = {callback_retry}

# The console for DPOs and auditors in the browser, at /console/ on the
# listener above (it needs [server.tls]). Optional: without this table there
# is none. A person signs in with a client certificate registered above for
# a dpo or auditor, imported into the browser, or with [console.oidc].
# [console]
# Where browsers reach this gateway, https://host[:port] without a path: the
# identity provider sends them back to its /console/callback. By default
# https:// and the listen address, which suits a test or a demo only.
# public_url = "https://gateway.example.org"
# Unused this many minutes, a session ends (5 to 240).
# idle_minutes = {console_idle}
# However busy, a session ends this many hours after sign-in (1 to 24), or
# when the access token that signed the person in expires, if earlier.
# session_hours = {console_hours}
# Sign-in with the [auth.oidc] provider (authorization code flow with PKCE),
# as this confidential client. It asks for an access token for the audience
# above (RFC 8707 `resource`), whose org and roles claims decide, as for the
# API.
# [console.oidc]
# client_id = "referral-gateway-console"
# Better set as RGW_CONSOLE__OIDC__CLIENT_SECRET than written here.
# client_secret = "..."
# Scopes asked for besides openid.
# scopes = []

[log]
# A tracing filter, e.g. "info" or "referral_gateway=debug,info".
level = "{log_level}"
# "text" or "json".
format = "text"
"#,
        country = template.country,
        listen = template.listen,
        body_limit = default_body_limit(),
        body_read_timeout = default_body_read_timeout(),
        max_concurrent_bodies = default_max_concurrent_bodies(),
        tls_certificate = TLS_CERTIFICATE,
        tls_private_key = TLS_PRIVATE_KEY,
        database_url = default_database_url(),
        max_connections = default_max_connections(),
        connect_timeout = default_connect_timeout_millis(),
        acquire_timeout = default_acquire_timeout_millis(),
        statement_timeout = default_statement_timeout_millis(),
        readiness_timeout = default_readiness_timeout_millis(),
        keys_dir = KEYS_DIR,
        directory_file = DIRECTORY_FILE,
        coordinator_key = COORDINATOR_KEY,
        directory_refresh = default_directory_refresh(),
        policy_dir = POLICY_DIR,
        policy_refresh = default_policy_refresh(),
        approvals_required = default_approvals_required(),
        impact_days = default_impact_days(),
        rounding_base = default_rounding_base(),
        threshold = default_threshold(),
        emergency_delivery = emergency.delivery_hours,
        emergency_acknowledgement = emergency.acknowledgement_hours,
        emergency_first_status = emergency.first_status_hours,
        urgent_delivery = urgent.delivery_hours,
        urgent_acknowledgement = urgent.acknowledgement_hours,
        urgent_first_status = urgent.first_status_hours,
        normal_delivery = normal.delivery_hours,
        normal_acknowledgement = normal.acknowledgement_hours,
        normal_first_status = normal.first_status_hours,
        org_claim = default_org_claim(),
        roles_claim = default_roles_claim(),
        leeway = default_leeway(),
        jwks_refresh = default_jwks_refresh(),
        clients = clients,
        federation_listen = template.federation_listen,
        delivery_hours = default_delivery_hours(),
        retry_first = default_retry_first(),
        retry_max = default_retry_max(),
        poll_millis = default_poll_millis(),
        send_timeout = default_send_timeout(),
        erasure_deadline = default_erasure_deadline(),
        sweep_seconds = default_sweep_seconds(),
        backlog_share = default_backlog_share_percent(),
        callback_retry = default_callback_retry_hours(),
        override_window = default_override_window_minutes(),
        match_threshold = default_match_threshold(),
        match_queries_per_day = default_match_queries_per_day(),
        match_handle_hours = default_match_handle_hours(),
        console_idle = default_console_idle_minutes(),
        console_hours = default_console_session_hours(),
        log_level = default_log_level(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file in the repository is the template's example; regenerate it
    /// with `referral-gateway config example > config/gateway.example.toml`.
    #[test]
    fn the_example_file_is_the_rendered_example() {
        let shipped = include_str!("../../config/gateway.example.toml");
        assert!(
            shipped == render(&Template::example()),
            "config/gateway.example.toml differs from config::template: regenerate it with \
             `cargo run -- config example > config/gateway.example.toml`"
        );
    }
}
