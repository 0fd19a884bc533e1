//! The pure domain core: no IO, no async, no clock reads (time is a parameter).
//!
//! Everything a packet is decided on lives here: the case model, consent,
//! the DPO's data-protection policy with the built-in rules, the decision and the
//! minimisation of the payload.

pub mod baseline;
pub mod case;
pub mod consent;
pub mod country;
pub mod decide;
pub mod decision;
pub mod duplicate_keys;
pub mod emergency_override;
pub mod impact;
pub mod ids;
pub mod inbound;
pub mod lifecycle;
pub mod match_index;
pub mod matching;
pub mod minimise;
pub mod onward;
pub mod override_rules;
pub mod policy;
pub mod priority;
pub mod recipient;
pub mod replies;
pub mod reply_cases;
pub mod retention;
pub mod sealing;
pub mod signoff;
pub mod statistics;
pub mod status;
pub mod submission;
pub mod text;
pub mod unique;
pub mod vocab;
pub mod withdrawal;

pub use country::CountryCode;
pub use ids::{IdempotencyKey, LanguageCode, OrgId, SubjectRef};
pub use vocab::{AsylumStatus, DataCategory, Profile, ProtectionProfile, Purpose, RecipientKind};

/// A value that is not of its type's form. Deliberately carries no copy of the
/// offending input: the input may be personal data, and this text reaches logs
/// and error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {problem}")]
pub struct ParseError {
    pub kind: &'static str,
    pub problem: &'static str,
}

impl ParseError {
    pub const fn new(kind: &'static str, problem: &'static str) -> Self {
        Self { kind, problem }
    }
}
