//! Who is calling: bearer tokens (OpenID Connect) or client certificates,
//! mapped to an organisation and roles.

pub mod client_cert;
pub mod oidc;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::domain::OrgId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submits referrals and reads its own organisation's referrals.
    Submitter,
    /// Receives referrals for its own organisation (federation inbox).
    Recipient,
    /// Manages sharing policies; reads the audit log and disclosures.
    Dpo,
    /// Reads the audit log and disclosures.
    Auditor,
    /// The coordinating body: reads the released statistics, nothing about anyone.
    Statistics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Recipient => "recipient",
            Role::Dpo => "dpo",
            Role::Auditor => "auditor",
            Role::Statistics => "statistics",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "submitter" => Some(Role::Submitter),
            "recipient" => Some(Role::Recipient),
            "dpo" => Some(Role::Dpo),
            "auditor" => Some(Role::Auditor),
            "statistics" => Some(Role::Statistics),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    BearerToken,
    ClientCertificate,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org: OrgId,
    /// The token's `sub`, or the certificate fingerprint: never a person's name
    /// unless the identity provider puts one there.
    pub subject: String,
    pub roles: BTreeSet<Role>,
    pub method: AuthMethod,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn actor(&self) -> Actor {
        Actor { org: Some(self.org.to_string()), subject: self.subject.clone() }
    }
}

/// Why a caller was not authenticated. Each has a stable code; none carries
/// the token or certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send a bearer token or a client certificate")]
    MissingCredentials,
    #[error("the client certificate is not registered with this gateway")]
    UnknownCertificate,
    #[error("bearer tokens are not accepted by this gateway")]
    BearerNotConfigured,
    #[error("the Authorization header is not a bearer token")]
    MalformedAuthorization,
    #[error(transparent)]
    Token(#[from] oidc::TokenError),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::UnknownCertificate => "unknown_certificate",
            AuthError::BearerNotConfigured => "bearer_not_configured",
            AuthError::MalformedAuthorization => "malformed_authorization",
            AuthError::Token(error) => error.code(),
        }
    }
}
