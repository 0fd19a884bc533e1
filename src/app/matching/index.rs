//! The responding gateway's match index (issue 22 §2): for each
//! family-tracing request sent from here, the outputs of its match keys
//! under this gateway's match function, made once when it is sent and
//! sealed under the case's key with what the decision on matching reads
//! later (the case facts, the categories it holds, the consent). Apart
//! from it, under the same key, the names, birth years and sexes the
//! search's own queries are made of: the payload is blanked once
//! delivered, and a search asks for as long as it is open.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::super::{AppError, Gateway};
use crate::crypto::case_keys::CaseKey;
use crate::crypto::match_function::{MatchFunctionKey, MatchOutput};
use crate::domain::case::Case;
use crate::domain::consent::Consent;
use crate::domain::decide::DecisionFacts;
use crate::domain::match_index::{categories_matched, index_keys_of, people_of};
use crate::domain::matching::MatchKey;
use crate::domain::policy::CaseFacts;
use crate::domain::DataCategory;
use crate::store::SealedMatchEntry;

/// What a search keeps for matching, sealed under its case key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MatchEntryAtRest {
    /// What the built-in rules and the DPO policy read of the case.
    pub facts: CaseFacts,
    /// Identity and family, where the case holds what family tracing needs of them.
    pub categories: BTreeSet<DataCategory>,
    /// The consent the request was sent under.
    pub consent: Consent,
    /// The outputs of the subject's keys, hex.
    pub subject: Vec<String>,
    /// The outputs of each relative sought's keys, hex.
    pub sought: Vec<Vec<String>>,
}

impl MatchEntryAtRest {
    /// The entry in what the vault opened; `None` if it could not be opened
    /// (erased meanwhile) or read.
    pub(crate) fn read(opened: Result<Vec<u8>, AppError>) -> Option<Self> {
        opened.ok().and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }
}

/// The context an entry is sealed in: its referral, and what it is.
pub(crate) fn entry_context(referral_id: &str) -> Vec<u8> {
    format!("{referral_id}\0match-entry").into_bytes()
}

/// The context a search's people are sealed in.
pub(crate) fn people_context(referral_id: &str) -> Vec<u8> {
    format!("{referral_id}\0match-people").into_bytes()
}

/// The seed of this gateway's match function, derived from its keys.
pub(crate) const MATCH_FUNCTION_PURPOSE: &str = "match-function-v1";

fn outputs(function: &MatchFunctionKey, keys: &[MatchKey]) -> Result<Vec<String>, AppError> {
    keys.iter()
        .map(|key| function.evaluate(key).map(|MatchOutput(output)| crate::hex::encode(&output)))
        .collect::<Result<_, _>>()
        .map_err(|e| AppError::Internal(e.to_string()))
}

impl Gateway {
    /// The match entry of a family-tracing request just decided (allowed:
    /// it has a case key), sealed; `None` when its subject has no name to
    /// match on or this gateway has no match function.
    pub(crate) fn match_entry(
        &self,
        key: &CaseKey,
        case: &Case,
        consent: &Consent,
        facts: &DecisionFacts,
        referral_id: &str,
    ) -> Result<Option<SealedMatchEntry>, AppError> {
        let (Some(function), Some(people)) = (self.match_function.as_deref(), people_of(case)) else {
            return Ok(None);
        };
        let keys = index_keys_of(&people);
        let entry = MatchEntryAtRest {
            facts: facts.case.clone(),
            categories: categories_matched(facts),
            consent: consent.clone(),
            subject: outputs(function, &keys.subject)?,
            sought: keys.sought.iter().map(|relative| outputs(function, relative)).collect::<Result<_, _>>()?,
        };
        let plaintext = serde_json::to_vec(&entry).map_err(|e| AppError::Internal(e.to_string()))?;
        let people = serde_json::to_vec(&people).map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(Some(SealedMatchEntry {
            entry: self.vault.seal(key, &plaintext, &entry_context(referral_id))?,
            people: self.vault.seal(key, &people, &people_context(referral_id))?.sealed,
        }))
    }
}
