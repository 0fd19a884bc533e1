//! Matching without disclosure (issue 22 §2): tracing requests about the
//! same family, open at two gateways, found without either showing the
//! other a name.
//!
//! - `index`: what the responding gateway keeps of each search sent from it.
//! - `answering`: the responding gateway's answer to a query, and what it
//!   records when told of a match.
//! - `asking`: the asking gateway's side, for the organisation that searches.
//! - this file: the messages both sides exchange and the port they cross.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::app::sending::delivery::SendFailure;
use crate::domain::{CountryCode, OrgId};

pub mod answering;
pub mod asking;
pub mod index;

/// A match query: the asking organisation (served by the asking gateway),
/// and exactly [`crate::domain::match_index::QUERY_SLOTS`] blinded
/// elements (hex), real keys and padding alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchQuery {
    pub asking_org: OrgId,
    pub blinded: Vec<String>,
}

/// The answer: the evaluated elements in the order asked and one proof
/// (hex), the function's public key, and the index as the asker may see
/// it, padded. Its size depends only on how many searches the responding
/// gateway holds (rounded up), never on the query or on which it may show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchAnswer {
    pub public_key: String,
    pub evaluated: Vec<String>,
    pub proof: String,
    pub entries: Vec<AnswerEntry>,
}

/// One entry of an answer: a fresh handle, and the outputs of the search's
/// subject and of each relative it seeks, each salted with the handle
/// (so that no two entries, or answers, can be compared) and padded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerEntry {
    pub handle: String,
    pub subject: Vec<String>,
    pub sought: Vec<Vec<String>>,
}

/// The asking gateway tells the responding one that its organisation's
/// search meets the one behind `handle`: the responding gateway tells the
/// organisation that sent that search. Answered the same whether or not
/// the handle is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFoundNotice {
    pub handle: String,
    pub asking_org: OrgId,
    /// The asking organisation's referral id, for the officers to name the
    /// case to each other.
    pub asking_referral: String,
    /// The outputs (hex, unsalted) of the asker's keys that agreed with the
    /// entry: only the asker's own evaluated query gives them, so they show
    /// that the match was found, not made up from the answer. At most
    /// [`crate::domain::match_index::QUERY_SLOTS`].
    pub evidence: Vec<String>,
}

/// The port to peer gateways for matching: a query answered at once, and
/// a notice of a match found.
#[async_trait]
pub trait MatchTransport: Send + Sync + 'static {
    async fn ask(&self, peer: CountryCode, endpoint: &str, query: &MatchQuery) -> Result<MatchAnswer, SendFailure>;
    async fn tell_found(&self, peer: CountryCode, endpoint: &str, notice: &MatchFoundNotice) -> Result<(), SendFailure>;
}

/// The `[matching]` settings the gateway works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchSettings {
    pub threshold: usize,
    pub queries_per_day: i64,
    pub handle_lifetime: chrono::Duration,
}

impl Default for MatchSettings {
    fn default() -> Self {
        let config = crate::config::MatchingConfig::default();
        Self::from(config)
    }
}

impl From<crate::config::MatchingConfig> for MatchSettings {
    fn from(config: crate::config::MatchingConfig) -> Self {
        Self { threshold: config.threshold, queries_per_day: config.queries_per_day, handle_lifetime: chrono::Duration::hours(config.handle_hours) }
    }
}

/// Why a match query or a search's matching was refused. Codes are the
/// last part of the problem `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MatchRefusal {
    /// A query of the wrong size or with elements that are not group elements.
    #[error("the match query is malformed")]
    Malformed,
    /// The asking organisation is not one the asking gateway serves.
    #[error("the asking organisation is not served by the asking gateway")]
    AskerNotServed,
    /// The asking gateway asked its limit in the last 24 hours.
    #[error("the asking gateway asked its limit of match queries")]
    RateLimited,
    /// This gateway cannot match (its match function is unusable).
    #[error("matching is unavailable at this gateway")]
    Unavailable,
    /// The referral is not a family-tracing request still searching, or
    /// its subject has no name to match on.
    #[error("the referral is not a search that can be matched")]
    NotASearch,
    /// A gateway asked for is not an active member, or is this one.
    #[error("a gateway asked for is not another active member")]
    NotAMember,
}

impl MatchRefusal {
    pub const fn code(self) -> &'static str {
        match self {
            Self::Malformed => "match-query-malformed",
            Self::AskerNotServed => "match-asker-not-served",
            Self::RateLimited => "match-rate-limited",
            Self::Unavailable => "matching-unavailable",
            Self::NotASearch => "match-not-possible",
            Self::NotAMember => "match-gateway-unknown",
        }
    }
}
