//! Bearer tokens against a real OpenID Provider: panva's certified
//! `oidc-provider` (`tests/oidc/provider.mjs`), run by Node.js as a child
//! process, issuing RFC 9068 JWT access tokens by the client-credentials grant.
//! (Some 650 lines: the child process's harness and the token checks
//! against it, each needing the other.)
//!
//! Needs `node` and `npm` on the PATH; `npm ci` runs once if
//! `tests/oidc/node_modules` is missing.
//!
//! Time is the tests': the provider's clock starts at the test clock's
//! instant (the fixture time unless a test asks otherwise), so the tokens it
//! issues agree with the `now` the verifier is given, and a test makes a
//! token expire by moving that `now` past the token's `exp`, not by waiting.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use josekit::jwk::Jwk;
use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jws::{self, JwsHeader, JwsSigner};
use josekit::jwt::{self, JwtPayload};
use referral_gateway::auth::oidc::{OidcSetupError, OidcVerifier, TokenError};
use referral_gateway::auth::{AuthMethod, Principal, Role};
use referral_gateway::config::OidcConfig;
use referral_gateway::domain::OrgId;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

use referral_gateway::app::Clock;

use crate::helpers::{fixture_time, ManualClock};

/// The audience the provider puts in tokens unless another resource is asked for.
pub const AUDIENCE: &str = "urn:referral-gateway:test";
const OTHER_AUDIENCE: &str = "urn:referral-gateway:other";
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `npm ci`, once per test binary, if the provider's packages are not installed.
fn ensure_node_modules() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = provider_dir();
        if dir.join("node_modules").is_dir() {
            return;
        }
        let status = std::process::Command::new("npm")
            .arg("ci")
            .arg("--prefix")
            .arg(&dir)
            .args(["--no-audit", "--no-fund"])
            .status()
            .expect("cannot run npm: Node.js and npm are needed for the OpenID Connect tests");
        assert!(status.success(), "npm ci --prefix tests/oidc failed: {status}");
    });
}

/// How to start a provider; the defaults give a fresh issuer with fresh keys,
/// on a port of its own, whose clock starts at the fixture time.
#[derive(Debug, Default, Clone)]
pub struct ProviderOptions {
    /// The test clock's instant when the provider starts (`OIDC_CLOCK_START`);
    /// the fixture time if `None`.
    pub clock_start: Option<DateTime<Utc>>,
    /// A JWKS file of private keys (`OIDC_JWKS_FILE`); generated at start if `None`.
    pub jwks_file: Option<PathBuf>,
    /// The access tokens' JWS algorithm (`OIDC_ACCESS_TOKEN_ALG`); RS256 if `None`.
    pub alg: Option<&'static str>,
}

/// A running `oidc-provider`, killed on drop.
pub struct OidcProvider {
    child: Child,
    /// Commands to the provider; it exits when this closes, even if we die without killing it.
    stdin: tokio::sync::Mutex<ChildStdin>,
    /// The number of the last command sent.
    commands: AtomicUsize,
    /// The number of the last command the provider answered.
    synced: watch::Receiver<usize>,
    issuer: String,
    token_endpoint: String,
    jwks_served: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl OidcProvider {
    pub async fn start() -> Self {
        Self::start_with(ProviderOptions::default()).await
    }

    pub async fn start_with(options: ProviderOptions) -> Self {
        crate::helpers::repeat_panic_messages_last();
        ensure_node_modules();
        let mut command = Command::new("node");
        command
            .arg(provider_dir().join("provider.mjs"))
            .arg("0")
            .env("OIDC_CLOCK_START", options.clock_start.unwrap_or_else(fixture_time).timestamp_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(file) = &options.jwks_file {
            command.env("OIDC_JWKS_FILE", file);
        }
        if let Some(alg) = options.alg {
            command.env("OIDC_ACCESS_TOKEN_ALG", alg);
        }
        let mut child = command.spawn().expect("cannot run node: Node.js is needed for the OpenID Connect tests");
        let stdin = child.stdin.take().expect("piped stdin");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let forwarding = tokio::spawn(forward_stderr(child.stderr.take().expect("piped stderr"), Arc::clone(&stderr_text)));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();

        let issuer = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = stdout.next_line().await.expect("provider stdout") {
                if let Some(issuer) = line.strip_prefix("ISSUER ") {
                    return Some(issuer.to_owned());
                }
            }
            None
        })
        .await;
        let Ok(Some(issuer)) = issuer else {
            // Said apart: no ISSUER line for the whole timeout (as when Node.js
            // deadlocked generating the keys, now avoided in provider.mjs), or
            // its output closed early.
            let how = if issuer.is_err() { format!("no ISSUER line within {START_TIMEOUT:?}") } else { "its output closed without an ISSUER line".to_owned() };
            // A process whose output just closed may not be reaped yet: given a moment to end.
            let status = match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                Ok(Ok(status)) => format!("it exited: {status}"),
                Ok(Err(error)) => format!("its status is unknown: {error}"),
                Err(_) => "it was still running".to_owned(),
            };
            let _ = child.kill().await;
            // Its stderr to the end: what it said before it went is then all there.
            let _ = tokio::time::timeout(Duration::from_secs(5), forwarding).await;
            panic!("the OpenID Provider did not start ({how}; {status}); its stderr:\n{}", stderr_text.lock().unwrap());
        };

        let jwks_served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&jwks_served);
        let (answered, synced) = watch::channel(0);
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if line == "JWKS_SERVED" {
                    counter.fetch_add(1, Ordering::SeqCst);
                } else if let Some(n) = line.strip_prefix("SYNCED ").and_then(|n| n.parse().ok()) {
                    answered.send_replace(n);
                }
            }
        });

        let http = reqwest::Client::new();
        let metadata: Value = http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("discovery document")
            .json()
            .await
            .expect("discovery JSON");
        let token_endpoint = metadata["token_endpoint"].as_str().expect("token_endpoint").to_owned();
        Self {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            commands: AtomicUsize::new(0),
            synced,
            issuer,
            token_endpoint,
            jwks_served,
            http,
        }
    }

    /// Sends `command` (with its number) and waits for the provider's answer,
    /// which comes after every line it printed before.
    async fn command(&self, command: &str, argument: Option<&str>) {
        let mut stdin = self.stdin.lock().await;
        let n = self.commands.fetch_add(1, Ordering::SeqCst) + 1;
        let line = match argument {
            Some(argument) => format!("{command} {n} {argument}\n"),
            None => format!("{command} {n}\n"),
        };
        stdin.write_all(line.as_bytes()).await.expect("provider stdin");
        stdin.flush().await.expect("provider stdin");
        drop(stdin);
        let mut synced = self.synced.clone();
        tokio::time::timeout(START_TIMEOUT, synced.wait_for(|answered| *answered >= n))
            .await
            .expect("the OpenID Provider answers its commands")
            .expect("the OpenID Provider's output");
    }

    /// The issuer restarts at the same URL, on the same listener, signing
    /// with the keys of `jwks_file` only (and with none of its former state).
    pub async fn restart_with_keys(&self, jwks_file: &Path) {
        self.command("KEYS", Some(jwks_file.to_str().expect("a UTF-8 path"))).await;
    }

    /// Lets the console client (`ita-console`) send browsers back to
    /// `callback`: a gateway's `/console/callback`, known once it listens.
    pub async fn allow_console_redirect(&self, callback: &str) {
        self.command("REDIRECT", Some(callback)).await;
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// How many times the JWKS was served so far: the provider reports each
    /// fetch before answering it, and a command's answer comes after those reports.
    pub async fn jwks_served(&self) -> usize {
        self.command("SYNC", None).await;
        self.jwks_served.load(Ordering::SeqCst)
    }

    /// An access token for `client_id` (client-credentials grant) with `audience`.
    pub async fn token(&self, client_id: &str, audience: &str) -> String {
        let response = self
            .http
            .post(&self.token_endpoint)
            .basic_auth(client_id, Some(format!("{client_id}-secret")))
            .form(&[("grant_type", "client_credentials"), ("resource", audience)])
            .send()
            .await
            .expect("token endpoint reachable");
        let status = response.status();
        let body: Value = response.json().await.expect("token response JSON");
        assert!(status.is_success(), "token request of {client_id} for {audience}: {status} {body}");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// Stops the provider and waits until it is gone.
    pub async fn stop(mut self) {
        self.child.kill().await.expect("kill the OpenID Provider");
    }
}

async fn forward_stderr(stderr: impl AsyncRead + Unpin, text: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("oidc-provider: {line}");
        let mut text = text.lock().unwrap();
        text.push_str(&line);
        text.push('\n');
    }
}

/// Private signing keys of each family, for a provider (`OIDC_JWKS_FILE`) and
/// for tests that sign tokens themselves.
pub struct TestKeys {
    pub rsa: Jwk,
    pub ec: Jwk,
    pub ed: Jwk,
    file: tempfile::NamedTempFile,
}

impl TestKeys {
    pub fn generate(name: &str) -> Self {
        let mut rsa = Jwk::generate_rsa_key(2048).unwrap();
        let mut ec = Jwk::generate_ec_key(EcCurve::P256).unwrap();
        let mut ed = Jwk::generate_ed_key(EdCurve::Ed25519).unwrap();
        for (jwk, family) in [(&mut rsa, "rsa"), (&mut ec, "ec"), (&mut ed, "ed")] {
            jwk.set_key_id(format!("{name}-{family}"));
            jwk.set_key_use("sig");
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        let document = json!({ "keys": [rsa.as_ref(), ec.as_ref(), ed.as_ref()] });
        std::fs::write(file.path(), document.to_string()).unwrap();
        Self { rsa, ec, ed, file }
    }

    pub fn path(&self) -> PathBuf {
        self.file.path().to_owned()
    }
}

/// The tests' time: the fixture time, at which every provider's clock starts.
fn now() -> DateTime<Utc> {
    fixture_time()
}

/// A token's `exp`, read from its (unverified) payload.
pub fn expiry_of(token: &str) -> DateTime<Utc> {
    let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    DateTime::from_timestamp(payload["exp"].as_i64().unwrap(), 0).unwrap()
}

/// The claims the provider gives `ita-nrm-system`'s access tokens.
fn access_token_claims(issuer: &str) -> Value {
    let now = now().timestamp();
    json!({
        "iss": issuer, "sub": "ita-nrm-system", "client_id": "ita-nrm-system", "aud": AUDIENCE,
        "iat": now, "exp": now + 300, "jti": "forged-by-the-test",
        "org_id": "ita-nrm", "roles": ["submitter"],
    })
}

/// A compact JWS of `claims` with JOSE header `typ` (none if `None`); the
/// signer sets `alg`, and `kid` if it has one.
fn sign(signer: &dyn JwsSigner, typ: Option<&str>, claims: &Value) -> String {
    let mut header = JwsHeader::new();
    if let Some(typ) = typ {
        header.set_token_type(typ);
    }
    let payload = JwtPayload::from_map(claims.as_object().unwrap().clone()).unwrap();
    jwt::encode_with_signer(&payload, &header, signer).unwrap()
}

fn config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_owned(),
        audience: AUDIENCE.to_owned(),
        org_claim: "org_id".to_owned(),
        roles_claim: "roles".to_owned(),
        leeway_seconds: 30,
        jwks_min_refresh_seconds: 60,
    }
}

async fn verifier(config: OidcConfig) -> OidcVerifier {
    OidcVerifier::discover(&config).await.expect("discovery of the test OpenID Provider")
}

fn principal(org: &str, subject: &str, roles: &[Role]) -> Principal {
    Principal {
        org: OrgId::parse(org).unwrap(),
        subject: subject.to_owned(),
        roles: roles.iter().copied().collect::<BTreeSet<_>>(),
        method: AuthMethod::BearerToken,
    }
}

#[tokio::test]
async fn tokens_of_the_issuer_are_accepted_with_their_organisation_and_roles() {
    let provider = OidcProvider::start().await;
    let verifier = verifier(config(provider.issuer())).await;
    let cases = [
        ("ita-nrm-system", "ita-nrm", &[Role::Submitter][..]),
        ("ita-dpo-console", "ita-nrm", &[Role::Dpo][..]),
        ("nga-naptip-system", "nga-naptip", &[Role::Submitter][..]),
        // Roles as a space-separated string; the unknown "janitor" is ignored.
        ("ita-audit-tool", "ita-nrm", &[Role::Auditor, Role::Recipient][..]),
    ];
    for (client, org, roles) in cases {
        let token = provider.token(client, AUDIENCE).await;
        assert_eq!(verifier.verify(&token, now()).await, Ok(principal(org, client, roles)), "{client}");
    }
    let debug = format!("{verifier:?}");
    assert!(debug.contains(provider.issuer()) && debug.contains(AUDIENCE), "{debug}");
}

#[tokio::test]
async fn the_configured_claims_name_the_organisation_and_roles() {
    let provider = OidcProvider::start().await;
    let token = provider.token("ita-nrm-system", AUDIENCE).await;
    // Any claim may name the organisation: here the client id, a valid OrgId.
    let by_client = verifier(OidcConfig { org_claim: "client_id".to_owned(), ..config(provider.issuer()) }).await;
    assert_eq!(by_client.verify(&token, now()).await, Ok(principal("ita-nrm-system", "ita-nrm-system", &[Role::Submitter])));
    // A claim the token does not have.
    let by_tenant = verifier(OidcConfig { org_claim: "tenant".to_owned(), ..config(provider.issuer()) }).await;
    assert_eq!(by_tenant.verify(&token, now()).await, Err(TokenError::MissingClaims));
    let by_groups = verifier(OidcConfig { roles_claim: "groups".to_owned(), ..config(provider.issuer()) }).await;
    assert_eq!(by_groups.verify(&token, now()).await, Err(TokenError::MissingClaims));
}

#[tokio::test]
async fn tokens_without_organisation_or_known_role_are_refused() {
    let provider = OidcProvider::start().await;
    let verifier = verifier(config(provider.issuer())).await;
    for client in ["no-org-client", "no-known-role-client"] {
        let token = provider.token(client, AUDIENCE).await;
        assert_eq!(verifier.verify(&token, now()).await, Err(TokenError::MissingClaims), "{client}");
    }
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let provider = OidcProvider::start().await;
    let token = provider.token("ita-nrm-system", OTHER_AUDIENCE).await;
    let ours = verifier(config(provider.issuer())).await;
    assert_eq!(ours.verify(&token, now()).await, Err(TokenError::WrongAudience));
    // The same token is fine for the gateway it was meant for.
    let theirs = verifier(OidcConfig { audience: OTHER_AUDIENCE.to_owned(), ..config(provider.issuer()) }).await;
    assert!(theirs.verify(&token, now()).await.is_ok());
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let provider = OidcProvider::start().await;
    let strict = verifier(OidcConfig { leeway_seconds: 0, ..config(provider.issuer()) }).await;
    let lenient = verifier(OidcConfig { leeway_seconds: 30, ..config(provider.issuer()) }).await;
    // The short-lived client's tokens live 1 s, on the provider's clock, which is the test's.
    let token = provider.token("short-lived", AUDIENCE).await;
    let exp = expiry_of(&token);
    assert!(exp > now() && exp <= now() + chrono::Duration::seconds(60), "the provider's clock is not the test's: exp {exp}");
    let second = chrono::Duration::seconds(1);
    let short_lived = Ok(principal("ita-nrm", "short-lived", &[Role::Submitter]));
    // Valid only before exp.
    assert_eq!(strict.verify(&token, exp - second).await, short_lived);
    assert_eq!(strict.verify(&token, exp).await, Err(TokenError::Expired));
    // Within the tolerated clock difference, and no further.
    assert_eq!(lenient.verify(&token, exp + chrono::Duration::seconds(29)).await, short_lived);
    assert_eq!(lenient.verify(&token, exp + chrono::Duration::seconds(30)).await, Err(TokenError::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_an_unknown_key_is_refused_after_one_jwks_refresh() {
    let provider = OidcProvider::start().await;
    let verifier = verifier(config(provider.issuer())).await;
    // Discovery: the openidconnect crate's fetch and ours.
    let at_start = provider.jwks_served().await;
    assert_eq!(at_start, 2);

    // Many requests at once with an unknown kid: one refresh for them all.
    let stranger = TestKeys::generate("stranger");
    let forged = sign(
        &jws::RS256.signer_from_jwk(&stranger.rsa).unwrap(),
        Some("at+jwt"),
        &access_token_claims(provider.issuer()),
    );
    let verifier = Arc::new(verifier);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (verifier, forged) = (Arc::clone(&verifier), forged.clone());
        requests.spawn(async move { verifier.verify(&forged, now()).await });
    }
    while let Some(result) = requests.join_next().await {
        assert_eq!(result.unwrap(), Err(TokenError::UnknownKey));
    }
    assert_eq!(provider.jwks_served().await, at_start + 1, "an unknown kid refreshes the JWKS once");

    // Within jwks_min_refresh_seconds no further refresh, whatever the kid.
    let forged_ec = sign(
        &jws::ES256.signer_from_jwk(&stranger.ec).unwrap(),
        Some("at+jwt"),
        &access_token_claims(provider.issuer()),
    );
    for token in [&forged, &forged_ec, &forged] {
        assert_eq!(verifier.verify(token, now()).await, Err(TokenError::UnknownKey));
    }
    assert_eq!(provider.jwks_served().await, at_start + 1, "refreshes are rate-limited");

    // The issuer's own keys still work.
    let token = provider.token("ita-nrm-system", AUDIENCE).await;
    assert!(verifier.verify(&token, now()).await.is_ok());
}

#[tokio::test]
async fn altered_and_malformed_tokens_are_refused() {
    let provider = OidcProvider::start().await;
    let verifier = verifier(config(provider.issuer())).await;
    let token = provider.token("ita-nrm-system", AUDIENCE).await;
    let other = provider.token("nga-naptip-system", AUDIENCE).await;
    assert!(verifier.verify(&token, now()).await.is_ok());

    // One character of the signature changed (the middle one: still base64url).
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let middle = signature.len() / 2;
    let replacement = if &signature[middle..=middle] == "A" { "B" } else { "A" };
    let altered = format!("{signed}.{}{replacement}{}", &signature[..middle], &signature[middle + 1..]);
    assert_eq!(verifier.verify(&altered, now()).await, Err(TokenError::BadSignature));

    // Another organisation's claims under this token's header and signature.
    let parts: Vec<&str> = token.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(verifier.verify(&spliced, now()).await, Err(TokenError::BadSignature));

    let too_long = format!("{token}{}", "A".repeat(20 * 1024));
    for malformed in ["", "not a token", "a.b.c", "a.b.c.d.e", &format!("{}.{}", parts[0], parts[1]), &too_long] {
        assert_eq!(verifier.verify(malformed, now()).await, Err(TokenError::Malformed), "{malformed:.40}");
    }
}

#[tokio::test]
async fn a_token_of_another_issuer_is_refused() {
    // Another issuer with its own keys: its kid is not among ours, so the
    // token is refused before its claims are even read.
    let ours = OidcProvider::start().await;
    let theirs = OidcProvider::start().await;
    let verifier = verifier(config(ours.issuer())).await;
    let token = theirs.token("ita-nrm-system", AUDIENCE).await;
    assert_eq!(verifier.verify(&token, now()).await, Err(TokenError::UnknownKey));

    // Two issuers sharing keys: the signature verifies, the issuer does not match.
    let keys = TestKeys::generate("shared");
    let shared = || ProviderOptions { jwks_file: Some(keys.path()), ..ProviderOptions::default() };
    let ours = OidcProvider::start_with(shared()).await;
    let theirs = OidcProvider::start_with(shared()).await;
    let verifier = self::verifier(config(ours.issuer())).await;
    let token = theirs.token("ita-nrm-system", AUDIENCE).await;
    assert_eq!(verifier.verify(&token, now()).await, Err(TokenError::WrongIssuer));
    let ours_token = ours.token("ita-nrm-system", AUDIENCE).await;
    assert!(verifier.verify(&ours_token, now()).await.is_ok());
}

#[tokio::test]
async fn only_access_tokens_are_accepted() {
    // The test holds the provider's keys, so it can sign what the issuer could.
    let keys = TestKeys::generate("issuer");
    let provider =
        OidcProvider::start_with(ProviderOptions { jwks_file: Some(keys.path()), ..ProviderOptions::default() }).await;
    let verifier = verifier(config(provider.issuer())).await;
    let signer = jws::RS256.signer_from_jwk(&keys.rsa).unwrap();
    let claims = access_token_claims(provider.issuer());
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT"] {
        assert!(verifier.verify(&sign(&signer, Some(typ), &claims), now()).await.is_ok(), "{typ}");
    }

    // An ID token: typ JWT, with ID token claims and our audience.
    let at = now().timestamp();
    let id_token = json!({
        "iss": provider.issuer(), "sub": "ita-nrm-system", "aud": AUDIENCE, "azp": AUDIENCE,
        "iat": at, "exp": at + 300, "auth_time": at, "nonce": "n-0S6_WzA2Mj", "at_hash": "77QmUPtjPfzWtF2AnpK9RQ",
        "org_id": "ita-nrm", "roles": ["submitter"],
    });
    assert_eq!(verifier.verify(&sign(&signer, Some("JWT"), &id_token), now()).await, Err(TokenError::WrongTokenType));
    // The access token's claims without typ, or with another typ.
    assert_eq!(verifier.verify(&sign(&signer, None, &claims), now()).await, Err(TokenError::WrongTokenType));
    assert_eq!(verifier.verify(&sign(&signer, Some("JWT"), &claims), now()).await, Err(TokenError::WrongTokenType));
    assert_eq!(verifier.verify(&sign(&signer, Some("logout+jwt"), &claims), now()).await, Err(TokenError::WrongTokenType));
}

#[tokio::test]
async fn unsafe_or_mismatched_algorithms_are_refused() {
    let keys = TestKeys::generate("issuer");
    let provider =
        OidcProvider::start_with(ProviderOptions { jwks_file: Some(keys.path()), ..ProviderOptions::default() }).await;
    let verifier = verifier(config(provider.issuer())).await;
    let claims = access_token_claims(provider.issuer());
    let rsa_kid = keys.rsa.key_id().unwrap();

    // Control: each of the issuer's keys with its own algorithm.
    let signers: [Box<dyn JwsSigner>; 3] = [
        Box::new(jws::PS256.signer_from_jwk(&keys.rsa).unwrap()),
        Box::new(jws::ES256.signer_from_jwk(&keys.ec).unwrap()),
        Box::new(jws::EdDSA.signer_from_jwk(&keys.ed).unwrap()),
    ];
    for signer in &signers {
        let alg = signer.algorithm().name();
        assert!(verifier.verify(&sign(signer.as_ref(), Some("at+jwt"), &claims), now()).await.is_ok(), "{alg}");
    }

    // alg "none", naming the issuer's key.
    let mut header = JwsHeader::new();
    header.set_token_type("at+jwt");
    header.set_key_id(rsa_kid);
    let payload = JwtPayload::from_map(claims.as_object().unwrap().clone()).unwrap();
    let unsecured = jwt::encode_unsecured(&payload, &header).unwrap();
    assert_eq!(verifier.verify(&unsecured, now()).await, Err(TokenError::BadSignature));

    // HS256 keyed with the issuer's public key, as in the classic key-confusion attack.
    let public = keys.rsa.to_public_key().unwrap();
    for secret in
        [public.to_string().into_bytes(), public.parameter("n").unwrap().as_str().unwrap().as_bytes().to_vec()]
    {
        let mut hmac = jws::HS256.signer_from_bytes(&secret).unwrap();
        hmac.set_key_id(rsa_kid);
        assert_eq!(verifier.verify(&sign(&hmac, Some("at+jwt"), &claims), now()).await, Err(TokenError::BadSignature));
    }

    // A valid ES256 signature by the issuer's EC key, but naming its RSA key.
    let mut ec = jws::ES256.signer_from_jwk(&keys.ec).unwrap();
    ec.set_key_id(rsa_kid);
    assert_eq!(verifier.verify(&sign(&ec, Some("at+jwt"), &claims), now()).await, Err(TokenError::BadSignature));
    // An RS256 signature by the issuer's RSA key, naming its EC key.
    let mut rsa = jws::RS256.signer_from_jwk(&keys.rsa).unwrap();
    rsa.set_key_id(keys.ec.key_id().unwrap());
    assert_eq!(verifier.verify(&sign(&rsa, Some("at+jwt"), &claims), now()).await, Err(TokenError::BadSignature));
    // No kid at all.
    let mut rsa = jws::RS256.signer_from_jwk(&keys.rsa).unwrap();
    rsa.remove_key_id();
    assert_eq!(verifier.verify(&sign(&rsa, Some("at+jwt"), &claims), now()).await, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn tokens_signed_with_each_algorithm_of_the_provider_are_accepted() {
    for alg in ["PS256", "ES256", "EdDSA"] {
        let provider = OidcProvider::start_with(ProviderOptions { alg: Some(alg), ..ProviderOptions::default() }).await;
        let verifier = verifier(config(provider.issuer())).await;
        let token = provider.token("ita-nrm-system", AUDIENCE).await;
        let header = jwt::decode_header(&token).unwrap();
        assert_eq!(header.claim("alg"), Some(&json!(alg)), "the provider signs with {alg}");
        assert_eq!(
            verifier.verify(&token, now()).await,
            Ok(principal("ita-nrm", "ita-nrm-system", &[Role::Submitter])),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn rotated_keys_are_fetched_once_per_refresh_interval() {
    let old_keys = TestKeys::generate("old");
    let new_keys = TestKeys::generate("new");
    let provider =
        OidcProvider::start_with(ProviderOptions { jwks_file: Some(old_keys.path()), ..ProviderOptions::default() })
            .await;
    // The verifier is given the time of this clock, which only the test moves.
    let clock = ManualClock::new(now());
    let verifier = verifier(OidcConfig { jwks_min_refresh_seconds: 10, ..config(provider.issuer()) }).await;
    let old_token = provider.token("ita-nrm-system", AUDIENCE).await;
    assert!(verifier.verify(&old_token, clock.now()).await.is_ok());

    // The issuer restarts at the same URL with new keys only.
    let before = provider.jwks_served().await;
    provider.restart_with_keys(&new_keys.path()).await;
    let new_token = provider.token("ita-nrm-system", AUDIENCE).await;
    assert_eq!(
        verifier.verify(&new_token, clock.now()).await,
        Ok(principal("ita-nrm", "ita-nrm-system", &[Role::Submitter]))
    );
    assert_eq!(provider.jwks_served().await, before + 1, "the new key was fetched once");
    assert!(verifier.verify(&new_token, clock.now()).await.is_ok());

    // The old key is gone from the cache too; neither it nor a stranger's key
    // triggers a fetch within the interval, up to its last moment.
    let stranger = TestKeys::generate("stranger");
    let forged =
        sign(&jws::RS256.signer_from_jwk(&stranger.rsa).unwrap(), Some("at+jwt"), &access_token_claims(provider.issuer()));
    assert_eq!(verifier.verify(&old_token, clock.now()).await, Err(TokenError::UnknownKey));
    assert_eq!(verifier.verify(&forged, clock.now()).await, Err(TokenError::UnknownKey));
    clock.advance(chrono::Duration::milliseconds(9_999));
    assert_eq!(verifier.verify(&forged, clock.now()).await, Err(TokenError::UnknownKey));
    assert_eq!(provider.jwks_served().await, before + 1, "no refresh within jwks_min_refresh_seconds");

    // Once the interval has passed, an unknown kid may refresh again (once).
    clock.advance(chrono::Duration::milliseconds(1));
    assert_eq!(verifier.verify(&forged, clock.now()).await, Err(TokenError::UnknownKey));
    assert_eq!(verifier.verify(&forged, clock.now()).await, Err(TokenError::UnknownKey));
    assert_eq!(provider.jwks_served().await, before + 2);
}

#[tokio::test]
async fn discovery_requires_the_configured_issuer() {
    let provider = OidcProvider::start().await;
    // Reachable, but the provider calls itself without the trailing slash.
    let misnamed = OidcVerifier::discover(&config(&format!("{}/", provider.issuer()))).await;
    match misnamed {
        Err(error @ OidcSetupError::Discovery { .. }) => {
            assert!(error.to_string().contains("unexpected issuer"), "{error}")
        }
        other => panic!("expected an issuer mismatch, got {other:?}"),
    }
    let issuer = provider.issuer().to_owned();
    provider.stop().await;
    assert!(matches!(OidcVerifier::discover(&config(&issuer)).await, Err(OidcSetupError::Discovery { .. })));
}
