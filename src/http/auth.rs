//! Turns credentials into a [`Principal`]: a bearer token if the request has
//! one, else the connection's client certificate.

use chrono::{DateTime, Utc};

use crate::auth::client_cert::ClientCertificates;
use crate::auth::oidc::OidcVerifier;
use crate::auth::{AuthError, Principal};
use crate::config::CertificateFingerprint;

#[derive(Debug)]
pub struct Authenticator {
    pub clients: ClientCertificates,
    pub oidc: Option<OidcVerifier>,
}

impl Authenticator {
    /// The caller of a request. `now` is the gateway's clock: a bearer
    /// token's validity period is checked against it.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        certificate: Option<&CertificateFingerprint>,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        if let Some(header) = authorization {
            let token = std::str::from_utf8(header)
                .ok()
                .and_then(|h| h.split_once(' '))
                .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
                .map(|(_, token)| token.trim())
                .ok_or(AuthError::MalformedAuthorization)?;
            let verifier = self.oidc.as_ref().ok_or(AuthError::BearerNotConfigured)?;
            return Ok(verifier.verify(token, now).await?);
        }
        match certificate {
            Some(fingerprint) => self.clients.authenticate(fingerprint),
            None => Err(AuthError::MissingCredentials),
        }
    }
}
