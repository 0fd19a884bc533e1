//! OpenID Connect bearer tokens: issuer discovery, JWKS, JWT access token checks.
//! (Some 650 lines, a quarter of them unit tests: the checks below are one sequence
//! and are kept in one place so that their order can be read.)
//!
//! The gateway accepts JWT access tokens (RFC 9068) of one issuer for one
//! audience. At start it discovers the issuer (the discovered `issuer` must be
//! the configured one) and loads its JWKS. Each token is then checked, in this
//! order, so that nothing of an unverified token is trusted:
//!
//! 1. shape: a compact JWS no larger than [`MAX_TOKEN_BYTES`] (`Malformed`);
//! 2. header: `typ` is `at+jwt` (`WrongTokenType`: an ID token is not an access
//!    token), `alg` is an asymmetric algorithm we accept (`BadSignature`: never
//!    `none` nor HMAC, whose "key" would be our public key), `kid` is present;
//! 3. key: the issuer's JWK with that `kid`; an unknown `kid` refreshes the
//!    JWKS, at most once per `jwks_min_refresh_seconds` (`UnknownKey`);
//! 4. signature, with the key and the header's `alg`, which must suit the key
//!    (`BadSignature`);
//! 5. claims, only now that they are authentic: `iss`, `aud`, `exp`, `nbf`,
//!    then subject, organisation and roles.
//!
//! A token of another issuer therefore usually ends at step 3 (`UnknownKey`):
//! its `kid` is not among our issuer's keys. It ends at step 5
//! (`WrongIssuer`) only if it is signed with a key our issuer publishes.
//!
//! The time is the caller's: [`OidcVerifier::verify`] takes `now`, which the
//! gateway reads from its `Clock` port, as the domain's decisions do.
//!
//! Errors and logs never carry the token, its claims or the crates' error
//! messages (which quote header values).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use josekit::jwk::Jwk;
use josekit::jws::{self, JwsHeader, JwsVerifier};
use josekit::jwt::{self, JwtPayload};
use josekit::{JoseError, Value};
use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;
use tokio::sync::{Mutex, RwLock};

use crate::domain::OrgId;
use serde::Deserialize;

use super::{AuthMethod, Principal, Role};

/// The `[auth.oidc]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` is discovered at start.
    pub issuer: String,
    /// The `aud` value access tokens must carry for this gateway.
    pub audience: String,
    /// The claim naming the caller's organisation id.
    #[serde(default = "default_org_claim")]
    pub org_claim: String,
    /// The claim listing the caller's roles (an array, or a space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Tolerated clock difference with the issuer for `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Unknown key ids trigger a JWKS refresh at most this often.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_min_refresh_seconds: u64,
}

pub(crate) fn default_org_claim() -> String {
    "org_id".to_owned()
}

pub(crate) fn default_roles_claim() -> String {
    "roles".to_owned()
}

pub(crate) fn default_leeway() -> u64 {
    30
}

pub(crate) fn default_jwks_refresh() -> u64 {
    10
}

/// Larger bearer tokens are refused unread: ours are well under 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A JWKS larger than this is refused: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The JWS algorithms accepted: asymmetric only, each tied to a key type by josekit.
pub const ACCEPTED_ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

/// Why a bearer token was refused; the token itself is never repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed signed JWT")]
    Malformed,
    /// Also when the token names no key (`kid`).
    #[error("the token is signed with a key the issuer does not publish")]
    UnknownKey,
    /// Also when the algorithm is not one we accept (`none`, HMAC) or does not
    /// suit the key.
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    #[error("the token is not meant for this gateway (audience)")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Also when `exp`, or both `sub` and `client_id`, are missing.
    #[error("the token lacks the organisation or roles claim, or they are malformed")]
    MissingClaims,
    #[error("the issuer's keys could not be fetched")]
    IssuerUnavailable,
    /// The JOSE header's `typ` is not `at+jwt` (RFC 9068): for instance an ID token.
    #[error("the token is not an access token (JOSE header typ must be at+jwt)")]
    WrongTokenType,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::WrongIssuer => "token_wrong_issuer",
            TokenError::WrongAudience => "token_wrong_audience",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::MissingClaims => "token_missing_claims",
            TokenError::IssuerUnavailable => "token_issuer_unavailable",
            TokenError::WrongTokenType => "token_wrong_type",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    #[error("OpenID Connect discovery of {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("the JWKS of {issuer} could not be loaded: {reason}")]
    Jwks { issuer: String, reason: String },
}

/// Verifies access tokens of one issuer for one audience.
///
/// `Send + Sync`: share one per process (behind an `Arc`).
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    org_claim: String,
    roles_claim: String,
    leeway_seconds: u64,
    min_refresh: Duration,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// When an unknown `kid` last made us fetch the JWKS; held during that
    /// fetch, so that concurrent requests with unknown keys fetch once.
    ///
    /// On the gateway's clock (the `now` of [`OidcVerifier::verify`]), not a
    /// monotonic timer: the throttle decides no token's fate, only how often
    /// we ask the issuer, and a clock the caller controls lets a test move
    /// past the interval instead of waiting it out. A clock stepped back
    /// counts as the interval having passed, so it cannot lock refreshes out.
    last_refresh: Mutex<Option<DateTime<Utc>>>,
}

impl fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_uri", &self.jwks_uri)
            .field("org_claim", &self.org_claim)
            .field("roles_claim", &self.roles_claim)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("min_refresh", &self.min_refresh)
            .finish_non_exhaustive()
    }
}

/// The issuer's public signing keys by `kid`.
#[derive(Debug, Default)]
struct KeySet {
    by_kid: HashMap<String, Vec<Jwk>>,
}

impl OidcVerifier {
    pub async fn discover(config: &OidcConfig) -> Result<Self, OidcSetupError> {
        let discovery = |reason: String| OidcSetupError::Discovery { issuer: config.issuer.clone(), reason };
        let http = reqwest::Client::builder()
            // A redirect could lead the gateway to fetch keys from anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(HTTP_CONNECT_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            // Fetches are rare (start, key rotation): no connection worth keeping,
            // and none to find dead after the issuer restarts.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|error| discovery(format!("cannot build the HTTP client: {error}")))?;
        let issuer_url = IssuerUrl::new(config.issuer.clone()).map_err(|error| discovery(error.to_string()))?;
        // The crate refuses metadata whose `issuer` is not exactly the configured one.
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
            .await
            .map_err(|error| discovery(error.to_string()))?;
        let jwks_uri = metadata.jwks_uri().url().to_string();
        let keys = fetch_jwks(&http, &jwks_uri)
            .await
            .map_err(|reason| OidcSetupError::Jwks { issuer: config.issuer.clone(), reason })?;
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            org_claim: config.org_claim.clone(),
            roles_claim: config.roles_claim.clone(),
            leeway_seconds: config.leeway_seconds,
            min_refresh: Duration::from_secs(config.jwks_min_refresh_seconds),
            jwks_uri,
            http,
            keys: RwLock::new(keys),
            last_refresh: Mutex::new(None),
        })
    }

    /// Checks `token` at the time `now` (`exp`, `nbf`, and the JWKS refresh throttle).
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, TokenError> {
        self.verify_until(token, now).await.map(|(principal, _)| principal)
    }

    /// As [`OidcVerifier::verify`], with the token's expiry (`exp`): until when it speaks for its holder.
    pub async fn verify_until(&self, token: &str, now: DateTime<Utc>) -> Result<(Principal, DateTime<Utc>), TokenError> {
        let result = self.verify_inner(token, now).await;
        if let Err(error) = &result {
            tracing::debug!(code = error.code(), "bearer token refused");
        }
        result
    }

    async fn verify_inner(&self, token: &str, now: DateTime<Utc>) -> Result<(Principal, DateTime<Utc>), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = jwt::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // A JWE (five parts) decodes to another header type: not accepted.
        let header = header.as_any().downcast_ref::<JwsHeader>().ok_or(TokenError::Malformed)?;
        if !is_access_token_type(header.token_type()) {
            return Err(TokenError::WrongTokenType);
        }
        let alg = header.algorithm().ok_or(TokenError::Malformed)?;
        if !ACCEPTED_ALGORITHMS.contains(&alg) {
            return Err(TokenError::BadSignature);
        }
        let kid = header.key_id().ok_or(TokenError::UnknownKey)?;
        let verifier = self.verifier_for(kid, alg, now).await?;
        let (payload, _) = jwt::decode_with_verifier(token, verifier.as_ref()).map_err(signature_error)?;
        let principal = self.principal(&payload, now)?;
        // Checked present and in the future by `principal`.
        let expires = payload
            .claim("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| DateTime::from_timestamp(exp, 0))
            .ok_or(TokenError::MissingClaims)?;
        Ok((principal, expires))
    }

    /// The verifier for `kid` and `alg`, refreshing the JWKS once if `kid` is unknown.
    async fn verifier_for(&self, kid: &str, alg: &str, now: DateTime<Utc>) -> Result<Box<dyn JwsVerifier>, TokenError> {
        if let Some(verifier) = self.cached_verifier(kid, alg).await? {
            return Ok(verifier);
        }
        let mut last_refresh = self.last_refresh.lock().await;
        // Another request may have refreshed the keys while we waited.
        if let Some(verifier) = self.cached_verifier(kid, alg).await? {
            return Ok(verifier);
        }
        if last_refresh.is_some_and(|at| throttled(at, now, self.min_refresh)) {
            return Err(TokenError::UnknownKey);
        }
        // Counted even if the fetch fails: an unreachable issuer is not hammered either.
        *last_refresh = Some(now);
        match fetch_jwks(&self.http, &self.jwks_uri).await {
            Ok(keys) => *self.keys.write().await = keys,
            Err(reason) => {
                tracing::warn!(issuer = %self.issuer, %reason, "JWKS refresh failed; keeping the keys we had");
                return Err(TokenError::IssuerUnavailable);
            }
        }
        drop(last_refresh);
        self.cached_verifier(kid, alg).await?.ok_or(TokenError::UnknownKey)
    }

    /// `None` if no key has this `kid`; `BadSignature` if the keys with this
    /// `kid` do not suit `alg` (for instance an RSA key and `ES256`).
    async fn cached_verifier(&self, kid: &str, alg: &str) -> Result<Option<Box<dyn JwsVerifier>>, TokenError> {
        let keys = self.keys.read().await;
        let Some(candidates) = keys.by_kid.get(kid) else {
            return Ok(None);
        };
        candidates.iter().find_map(|jwk| verifier_from_jwk(alg, jwk)).map(Some).ok_or(TokenError::BadSignature)
    }

    /// Checks the claims of a token whose signature has been verified.
    fn principal(&self, payload: &JwtPayload, now: DateTime<Utc>) -> Result<Principal, TokenError> {
        if payload.issuer() != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        if !audience_contains(payload.claim("aud"), &self.audience) {
            return Err(TokenError::WrongAudience);
        }
        check_validity_period(payload.claim("exp"), payload.claim("nbf"), unix_seconds(now), self.leeway_seconds)?;
        let subject = subject_of(payload).ok_or(TokenError::MissingClaims)?;
        let org = match payload.claim(&self.org_claim) {
            Some(Value::String(org)) => OrgId::parse(org).map_err(|_| TokenError::MissingClaims)?,
            _ => return Err(TokenError::MissingClaims),
        };
        let roles = parse_roles(payload.claim(&self.roles_claim))?;
        Ok(Principal { org, subject, roles, method: AuthMethod::BearerToken })
    }
}

/// Fetches and parses the JWKS; the error is for logs and setup errors only
/// (it holds no token data).
async fn fetch_jwks(http: &reqwest::Client, jwks_uri: &str) -> Result<KeySet, String> {
    let mut response = http
        .get(jwks_uri)
        .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(|error| format!("cannot fetch {jwks_uri}: {error}"))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("{jwks_uri} answered HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| format!("cannot read {jwks_uri}: {error}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("{jwks_uri} is larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(&body).map_err(|problem| format!("{jwks_uri}: {problem}"))
}

/// Keeps the signing keys with a `kid`; skips keys josekit cannot read (a
/// future key type must not stop us from using the others).
fn parse_jwks(body: &[u8]) -> Result<KeySet, &'static str> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document = serde_json::from_slice(body).map_err(|_| "not a JSON Web Key Set")?;
    let mut by_kid: HashMap<String, Vec<Jwk>> = HashMap::new();
    for key in document.keys {
        let Value::Object(key) = key else { continue };
        let Ok(jwk) = Jwk::from_map(key) else { continue };
        if jwk.key_use().is_some_and(|key_use| key_use != "sig") {
            continue;
        }
        let Some(kid) = jwk.key_id().map(str::to_owned) else { continue };
        by_kid.entry(kid).or_default().push(jwk);
    }
    if by_kid.is_empty() {
        return Err("no signing key with a kid");
    }
    Ok(KeySet { by_kid })
}

/// josekit refuses a key of another type or curve, or whose own `alg` differs.
fn verifier_from_jwk(alg: &str, jwk: &Jwk) -> Option<Box<dyn JwsVerifier>> {
    fn boxed<V: JwsVerifier + 'static>(verifier: Result<V, JoseError>) -> Option<Box<dyn JwsVerifier>> {
        verifier.ok().map(|verifier| Box::new(verifier) as Box<dyn JwsVerifier>)
    }
    match alg {
        "RS256" => boxed(jws::RS256.verifier_from_jwk(jwk)),
        "RS384" => boxed(jws::RS384.verifier_from_jwk(jwk)),
        "RS512" => boxed(jws::RS512.verifier_from_jwk(jwk)),
        "PS256" => boxed(jws::PS256.verifier_from_jwk(jwk)),
        "PS384" => boxed(jws::PS384.verifier_from_jwk(jwk)),
        "PS512" => boxed(jws::PS512.verifier_from_jwk(jwk)),
        "ES256" => boxed(jws::ES256.verifier_from_jwk(jwk)),
        "ES384" => boxed(jws::ES384.verifier_from_jwk(jwk)),
        "ES512" => boxed(jws::ES512.verifier_from_jwk(jwk)),
        "EdDSA" => boxed(jws::EdDSA.verifier_from_jwk(jwk)),
        _ => None,
    }
}

/// josekit checks the signature before it parses the payload, so a payload
/// that is not a JWT claims set with a valid signature is `Malformed`.
fn signature_error(error: JoseError) -> TokenError {
    match error {
        JoseError::InvalidSignature(_) => TokenError::BadSignature,
        _ => TokenError::Malformed,
    }
}

/// RFC 9068 section 2.1: `at+jwt`, possibly with the `application/` prefix,
/// compared case-insensitively (RFC 7515 section 4.1.9).
fn is_access_token_type(typ: Option<&str>) -> bool {
    let Some(typ) = typ else { return false };
    let typ = typ.to_ascii_lowercase();
    typ == "at+jwt" || typ == "application/at+jwt"
}

/// `aud` is a string or an array of strings (josekit has checked which).
fn audience_contains(aud: Option<&Value>, audience: &str) -> bool {
    match aud {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        _ => false,
    }
}

/// `exp` is required, `nbf` optional; both are NumericDate (josekit has
/// checked they are non-negative numbers). Compared as `f64` so that no value
/// can overflow a time type.
fn check_validity_period(
    exp: Option<&Value>,
    nbf: Option<&Value>,
    now: f64,
    leeway_seconds: u64,
) -> Result<(), TokenError> {
    let leeway = leeway_seconds as f64;
    let exp = exp.and_then(Value::as_f64).ok_or(TokenError::MissingClaims)?;
    // RFC 7519 section 4.1.4: valid only *before* `exp`.
    if now >= exp + leeway {
        return Err(TokenError::Expired);
    }
    match nbf {
        None => Ok(()),
        Some(nbf) => {
            let nbf = nbf.as_f64().ok_or(TokenError::Malformed)?;
            if now + leeway < nbf { Err(TokenError::NotYetValid) } else { Ok(()) }
        }
    }
}

/// `at` as a NumericDate, with its milliseconds.
fn unix_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// Whether a JWKS fetch made at `last` is too close to `now` for another.
/// Close on either side: `now` is read when the request arrives, before the
/// lock, so a request that waited behind the fetch may bring an earlier
/// `now` than `last`; it must not fetch again. Only a clock stepped back
/// by more than the interval lets a fetch through, so that a step back
/// cannot lock refreshes out.
fn throttled(last: DateTime<Utc>, now: DateTime<Utc>, min_refresh: Duration) -> bool {
    (now - last).abs().to_std().is_ok_and(|gap| gap < min_refresh)
}

/// `sub`, or `client_id` for a client acting on its own behalf without `sub`.
fn subject_of(payload: &JwtPayload) -> Option<String> {
    let non_empty = |value: Option<&str>| value.filter(|value| !value.is_empty()).map(str::to_owned);
    non_empty(payload.subject()).or_else(|| non_empty(payload.claim("client_id").and_then(Value::as_str)))
}

/// A JSON array of strings, or one space-separated string (like `scope`).
/// Role names the gateway does not know are ignored; none known at all is
/// refused, since such a caller could do nothing but would look authenticated.
fn parse_roles(claim: Option<&Value>) -> Result<BTreeSet<Role>, TokenError> {
    let names: Vec<&str> = match claim {
        Some(Value::String(names)) => names.split_whitespace().collect(),
        Some(Value::Array(names)) => {
            names.iter().map(Value::as_str).collect::<Option<_>>().ok_or(TokenError::MissingClaims)?
        }
        _ => return Err(TokenError::MissingClaims),
    };
    let roles: BTreeSet<Role> = names.into_iter().filter_map(Role::parse).collect();
    if roles.is_empty() { Err(TokenError::MissingClaims) } else { Ok(roles) }
}

const _: () = {
    const fn shareable<T: Send + Sync + fmt::Debug>() {}
    shareable::<OidcVerifier>();
};

/// `verify` must be usable from a multi-threaded server (axum handlers).
#[allow(dead_code)]
fn verify_future_is_send(
    verifier: &OidcVerifier,
) -> impl std::future::Future<Output = Result<Principal, TokenError>> + Send + '_ {
    verifier.verify("", DateTime::<Utc>::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn roles_from_an_array_ignore_unknown_names() {
        let roles = parse_roles(Some(&json!(["submitter", "janitor", "dpo"]))).unwrap();
        assert_eq!(roles, BTreeSet::from([Role::Submitter, Role::Dpo]));
    }

    #[test]
    fn roles_from_a_space_separated_string() {
        let roles = parse_roles(Some(&json!("  auditor recipient\tjanitor "))).unwrap();
        assert_eq!(roles, BTreeSet::from([Role::Auditor, Role::Recipient]));
    }

    #[test]
    fn roles_are_refused_when_none_is_known_or_the_claim_is_malformed() {
        for claim in
            [json!([]), json!(["janitor"]), json!(""), json!(["submitter", 3]), json!(7), json!({"submitter": true})]
        {
            assert_eq!(parse_roles(Some(&claim)), Err(TokenError::MissingClaims), "{claim}");
        }
        assert_eq!(parse_roles(None), Err(TokenError::MissingClaims));
    }

    #[test]
    fn roles_are_case_sensitive() {
        assert_eq!(parse_roles(Some(&json!(["Submitter", "DPO"]))), Err(TokenError::MissingClaims));
    }

    #[test]
    fn audience_as_a_string_or_an_array() {
        let ours = "urn:gateway";
        assert!(audience_contains(Some(&json!("urn:gateway")), ours));
        assert!(audience_contains(Some(&json!(["urn:other", "urn:gateway"])), ours));
        assert!(!audience_contains(Some(&json!("urn:gateway:other")), ours));
        assert!(!audience_contains(Some(&json!(["urn:other"])), ours));
        assert!(!audience_contains(Some(&json!([])), ours));
        assert!(!audience_contains(Some(&json!("URN:GATEWAY")), ours));
        assert!(!audience_contains(None, ours));
    }

    #[test]
    fn token_type_must_be_at_jwt() {
        for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"] {
            assert!(is_access_token_type(Some(typ)), "{typ}");
        }
        for typ in ["JWT", "jwt", "", "at+jwt ", "application/jwt", "id_token+jwt", "logout+jwt"] {
            assert!(!is_access_token_type(Some(typ)), "{typ}");
        }
        assert!(!is_access_token_type(None));
    }

    #[test]
    fn validity_period_with_leeway() {
        let now = 1_000_000.0;
        let at = |seconds: f64| json!(seconds);
        assert_eq!(check_validity_period(Some(&at(now + 1.0)), None, now, 0), Ok(()));
        // Valid only before exp.
        assert_eq!(check_validity_period(Some(&at(now)), None, now, 0), Err(TokenError::Expired));
        assert_eq!(check_validity_period(Some(&at(now - 10.0)), None, now, 0), Err(TokenError::Expired));
        assert_eq!(check_validity_period(Some(&at(now - 10.0)), None, now, 30), Ok(()));
        assert_eq!(check_validity_period(Some(&at(now - 30.0)), None, now, 30), Err(TokenError::Expired));
        assert_eq!(check_validity_period(None, None, now, 30), Err(TokenError::MissingClaims));
        let exp = at(now + 60.0);
        assert_eq!(check_validity_period(Some(&exp), Some(&at(now)), now, 0), Ok(()));
        assert_eq!(check_validity_period(Some(&exp), Some(&at(now + 10.0)), now, 0), Err(TokenError::NotYetValid));
        assert_eq!(check_validity_period(Some(&exp), Some(&at(now + 10.0)), now, 30), Ok(()));
        // Absurd values do not overflow anything.
        assert_eq!(check_validity_period(Some(&json!(1e300)), None, now, u64::MAX), Ok(()));
        assert_eq!(
            check_validity_period(Some(&json!(u64::MAX)), Some(&json!(1e300)), now, 0),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn the_jwks_refresh_throttle_follows_the_clock_and_survives_a_step_back() {
        let last = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        let ten = Duration::from_secs(10);
        assert!(throttled(last, last, ten));
        assert!(throttled(last, last + chrono::Duration::milliseconds(9_999), ten));
        assert!(!throttled(last, last + chrono::Duration::seconds(10), ten));
        // A request that read the clock before another fetched and took the lock after it.
        assert!(throttled(last, last - chrono::Duration::seconds(1), ten), "a request that waited behind a fetch fetched again");
        assert!(!throttled(last, last - chrono::Duration::seconds(10), ten), "a clock stepped back must not lock refreshes out");
        assert_eq!(unix_seconds(last + chrono::Duration::milliseconds(1_500)), 20_000.0 * 86_400.0 + 1.5);
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        for alg in ["none", "HS256", "HS384", "HS512", "ES256K", "RSA-OAEP", ""] {
            assert!(!ACCEPTED_ALGORITHMS.contains(&alg), "{alg}");
        }
    }

    #[test]
    fn a_key_is_used_only_with_an_algorithm_that_suits_it() {
        let mut rsa = Jwk::generate_rsa_key(2048).unwrap().to_public_key().unwrap();
        assert!(verifier_from_jwk("RS256", &rsa).is_some());
        assert!(verifier_from_jwk("PS256", &rsa).is_some());
        assert!(verifier_from_jwk("ES256", &rsa).is_none());
        assert!(verifier_from_jwk("EdDSA", &rsa).is_none());
        assert!(verifier_from_jwk("HS256", &rsa).is_none());
        rsa.set_algorithm("PS256");
        assert!(verifier_from_jwk("RS256", &rsa).is_none(), "the key's own alg binds it");
        let ec = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap().to_public_key().unwrap();
        assert!(verifier_from_jwk("ES256", &ec).is_some());
        assert!(verifier_from_jwk("ES384", &ec).is_none(), "curve P-256 is for ES256 only");
        assert!(verifier_from_jwk("RS256", &ec).is_none());
    }

    #[test]
    fn jwks_keeps_signing_keys_with_a_kid() {
        let mut signing = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap().to_public_key().unwrap();
        signing.set_key_id("sig-1");
        let mut encryption = signing.clone();
        encryption.set_key_id("enc-1");
        encryption.set_key_use("enc");
        let mut no_kid: serde_json::Map<String, Value> = signing.as_ref().clone();
        no_kid.remove("kid");
        let body = json!({
            "keys": [signing.as_ref(), encryption.as_ref(), no_kid, { "kty": 1, "kid": "odd" }, 42, { "kty": "future", "kid": "f" }]
        });
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&String> = keys.by_kid.keys().collect();
        kids.sort();
        // An unknown key type is kept (josekit reads it); no verifier will ever accept it.
        assert_eq!(kids, vec!["f", "sig-1"]);
        assert!(
            keys.by_kid.get("f").is_some_and(|keys| keys.iter().all(|jwk| verifier_from_jwk("RS256", jwk).is_none()))
        );
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }

    #[test]
    fn josekit_signature_failures_are_bad_signatures_and_the_rest_malformed() {
        let cause = || std::io::Error::other("cause").into();
        assert_eq!(signature_error(JoseError::InvalidSignature(cause())), TokenError::BadSignature);
        assert_eq!(signature_error(JoseError::InvalidJwtFormat(cause())), TokenError::Malformed);
        assert_eq!(signature_error(JoseError::InvalidJwsFormat(cause())), TokenError::Malformed);
        assert_eq!(signature_error(JoseError::InvalidKeyFormat(cause())), TokenError::Malformed);
    }

    #[test]
    fn codes_are_distinct_and_prefixed() {
        let all = [
            TokenError::Malformed,
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::MissingClaims,
            TokenError::IssuerUnavailable,
            TokenError::WrongTokenType,
        ];
        let codes: BTreeSet<&str> = all.iter().map(TokenError::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|code| code.starts_with("token_")));
    }
}
