//! How a DPO or auditor signs in to the console: with the organisation's
//! OpenID Connect provider (authorization code flow with PKCE, RFC 7636), or
//! with a client certificate the browser presents, registered as the API's are.
//!
//! The provider sign-in asks for an access token for this gateway (the
//! `resource` of RFC 8707, the `[auth.oidc]` audience) besides the ID token:
//! the organisation and roles are read from that access token by the same
//! verifier as the API's bearer tokens, so the console and the API map a
//! person to roles alike, and the session ends when that token does. The ID
//! token proves the sign-in is the one this browser started (nonce) and names
//! the same subject.
//!
//! The provider is discovered at each sign-in, not once at start: sign-ins
//! are rare, and its signing keys are then never stale.

use std::time::Duration;

use chrono::{DateTime, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};

use crate::auth::oidc::{OidcVerifier, TokenError};
use crate::auth::Principal;
use crate::config::{ConsoleOidcConfig, OidcConfig};

const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The path the identity provider sends the browser back to.
pub const CALLBACK_PATH: &str = "/console/callback";

type DiscoveredClient = CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Why a sign-in failed. None carries a token, a code or the crates' messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("the identity provider could not be reached or described itself wrongly")]
    ProviderUnavailable,
    #[error("the sign-in was not started here, was finished already, or took too long")]
    UnknownSignIn,
    #[error("the identity provider refused the sign-in")]
    ProviderRefused,
    #[error("the identity provider's ID token does not verify")]
    BadIdToken,
    #[error("the access token does not verify: {0}")]
    AccessToken(TokenError),
    #[error("the ID token and the access token name different people")]
    SubjectMismatch,
    #[error("the browser presented no registered client certificate")]
    NoCertificate,
}

impl SignInError {
    /// The stable code audited for a refused sign-in.
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::ProviderUnavailable => "console_provider_unavailable",
            SignInError::UnknownSignIn => "console_unknown_sign_in",
            SignInError::ProviderRefused => "console_provider_refused",
            SignInError::BadIdToken => "console_bad_id_token",
            SignInError::AccessToken(cause) => cause.code(),
            SignInError::SubjectMismatch => "console_subject_mismatch",
            SignInError::NoCertificate => "console_no_certificate",
        }
    }
}

/// Sign-in with the identity provider of `[auth.oidc]`, as the client `[console.oidc]`.
pub struct ProviderSignIn {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    /// The audience of the access token asked for: this gateway's.
    resource: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ProviderSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSignIn").field("issuer", &self.issuer).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// What a sign-in under way keeps until the provider sends the browser back.
pub struct SignInSecrets {
    client: DiscoveredClient,
    pkce_verifier: PkceCodeVerifier,
    nonce: Nonce,
}

/// A sign-in to send the browser to.
pub struct Started {
    pub authorize_url: String,
    /// The `state` parameter: it comes back with the browser.
    pub state: String,
    pub secrets: SignInSecrets,
}

impl std::fmt::Debug for SignInSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInSecrets(..)")
    }
}

/// A person the provider vouched for.
#[derive(Debug)]
pub struct SignedIn {
    pub principal: Principal,
    /// When the access token that signed the person in expires (its verified `exp`).
    pub credential_ends: DateTime<Utc>,
}

impl ProviderSignIn {
    /// `public_origin`: where browsers reach this gateway, `https://host[:port]`.
    pub fn new(oidc: &OidcConfig, console: &ConsoleOidcConfig, public_origin: &str) -> Result<Self, String> {
        let issuer = IssuerUrl::new(oidc.issuer.clone()).map_err(|e| format!("auth.oidc.issuer: {e}"))?;
        let redirect = RedirectUrl::new(format!("{public_origin}{CALLBACK_PATH}")).map_err(|e| format!("console.public_url: {e}"))?;
        let http = reqwest::Client::builder()
            // A redirect could lead the gateway to post the code anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(HTTP_CONNECT_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            issuer,
            client_id: ClientId::new(console.client_id.clone()),
            client_secret: ClientSecret::new(console.client_secret.clone()),
            redirect,
            scopes: console.scopes.clone(),
            resource: oidc.audience.clone(),
            http,
        })
    }

    /// Discovers the provider and builds the authorization request: PKCE
    /// (S256), a nonce and a state, all fresh.
    pub async fn start(&self) -> Result<Started, SignInError> {
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|_| SignInError::ProviderUnavailable)?;
        let client = CoreClient::from_provider_metadata(metadata, self.client_id.clone(), Some(self.client_secret.clone()))
            .set_redirect_uri(self.redirect.clone());
        let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge)
            .add_extra_param("resource", self.resource.clone());
        for scope in self.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Started { authorize_url: url.to_string(), state: state.secret().clone(), secrets: SignInSecrets { client, pkce_verifier, nonce } })
    }

    /// Redeems `code` (with the PKCE verifier), checks the ID token (its
    /// signature, issuer, audience, expiry at `now`, nonce) and the access
    /// token, and returns who signed in.
    pub async fn finish(&self, secrets: SignInSecrets, code: String, now: DateTime<Utc>, access: &OidcVerifier) -> Result<SignedIn, SignInError> {
        let SignInSecrets { client, pkce_verifier, nonce } = secrets;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| SignInError::ProviderUnavailable)?
            .set_pkce_verifier(pkce_verifier)
            .add_extra_param("resource", self.resource.clone())
            .request_async(&self.http)
            .await
            .map_err(|_| SignInError::ProviderRefused)?;
        let id_token = token.id_token().ok_or(SignInError::BadIdToken)?;
        let id_verifier = client.id_token_verifier().set_time_fn(move || now);
        let claims = id_token.claims(&id_verifier, &nonce).map_err(|_| SignInError::BadIdToken)?;
        let (principal, expires) = access.verify_until(token.access_token().secret(), now).await.map_err(SignInError::AccessToken)?;
        if principal.subject != claims.subject().as_str() {
            return Err(SignInError::SubjectMismatch);
        }
        Ok(SignedIn { principal, credential_ends: expires })
    }
}
