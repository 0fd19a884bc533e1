//! OpenID Connect bearer tokens: issuer discovery, JWKS, JWT access token checks.
//! (Interface placeholder; the implementation is being written.)

use crate::config::OidcConfig;

use super::Principal;

/// Why a bearer token was refused; the token itself is never repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed signed JWT")]
    Malformed,
    #[error("the token is signed with a key the issuer does not publish")]
    UnknownKey,
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
    #[error("the token lacks the organisation or roles claim, or they are malformed")]
    MissingClaims,
    #[error("the issuer's keys could not be fetched")]
    IssuerUnavailable,
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    #[error("OpenID Connect discovery of {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
}

/// Verifies access tokens of one issuer for one audience.
#[derive(Debug)]
pub struct OidcVerifier {
    config: OidcConfig,
}

impl OidcVerifier {
    pub async fn discover(config: &OidcConfig) -> Result<Self, OidcSetupError> {
        Err(OidcSetupError::Discovery { issuer: config.issuer.clone(), reason: "not implemented yet".to_owned() })
    }

    pub async fn verify(&self, _token: &str) -> Result<Principal, TokenError> {
        let _ = &self.config;
        Err(TokenError::IssuerUnavailable)
    }
}
