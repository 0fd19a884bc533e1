//! The impact of an uploaded policy version on real traffic (DPO, issue 19
//! §2): the sending decisions of the last `[policy] impact_days` decided
//! again from their stored facts, under the version in force and the new
//! one (`domain::impact`), and how long those facts are kept.
//!
//! Each decision's facts are sealed under its case's key when it is made
//! (`sending::referrals`): the payload's key for an allowed referral, so
//! that a withdrawal or the retention sweep that erases the case erases its
//! facts in the same stroke; a key of their own for a denied one. Past the
//! window, the facts are forgotten and a key of their own destroyed first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::views::Timestamp;
use crate::app::{ActivePolicy, AppError, Gateway};
use crate::domain::decide::DecisionFacts;
use crate::domain::impact::Impact;
use crate::domain::policy::DataProtectionPolicy;
use crate::store::{DecisionFactsAtRest, SealedPayload};

/// Facts read, opened and replayed at a time: bounds the memory a replay
/// holds whatever the traffic.
const FACTS_PER_PAGE: i64 = 1000;

/// What a sealed decision's facts are bound to: they open for no other
/// referral, and never as its payload.
pub(crate) fn facts_context(referral_id: &str) -> Vec<u8> {
    [referral_id.as_bytes(), b"\0decision facts"].concat()
}

/// The impact of a version on the recent decisions, as its upload recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ImpactChecked {
    Measured {
        /// The number of the version in force it was compared with.
        against: i64,
        /// The decisions replayed are those made since this time (`[policy] impact_days` before the upload).
        since: Timestamp,
        /// Decisions whose case was erased since (past its retention, or
        /// cut down by a partial withdrawal): nothing of them is left to
        /// replay. (A whole withdrawal erases the facts with the case.)
        erased: u64,
        /// Decisions whose facts did not open or parse (damaged records; the operator's log names them).
        unreadable: u64,
        #[serde(flatten)]
        impact: Impact,
    },
    NotMeasured { reason: String },
}

impl Default for ImpactChecked {
    /// What versions uploaded before impact replays existed show.
    fn default() -> Self {
        Self::NotMeasured { reason: "uploaded before impact replays were measured".to_owned() }
    }
}

impl Gateway {
    /// Replays the sending decisions made from `since` to `until` (the
    /// upload's time: not those made while it replays) under `in_force`
    /// and `candidate`. Decisions of erased cases are
    /// counted, not replayed.
    pub(crate) async fn measure_impact(
        &self,
        in_force: Arc<ActivePolicy>,
        candidate: Arc<DataProtectionPolicy>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<ImpactChecked, AppError> {
        let against = in_force.number;
        let mut impact = Impact::default();
        let (mut erased, mut unreadable) = (0, 0);
        let mut after = None;
        let window = (since.timestamp_millis(), until.timestamp_millis());
        loop {
            let page = self.store.decision_facts_between(window, after.clone(), FACTS_PER_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.decided_ms, last.referral_id.clone()));
            let contexts: Vec<Vec<u8>> = page.iter().map(|f| facts_context(&f.referral_id)).collect();
            let sealed: Vec<(&[u8], &[u8])> =
                page.iter().zip(&contexts).map(|(f, context)| (f.facts.sealed.sealed.as_slice(), context.as_slice())).collect();
            let mut facts = Vec::with_capacity(page.len());
            for (opened, at_rest) in self.vault.open_all(&sealed).await?.into_iter().zip(&page) {
                match opened.map(|plaintext| serde_json::from_slice::<DecisionFacts>(&plaintext)) {
                    Ok(Ok(read)) => facts.push(read),
                    Err(AppError::Erased) => erased += 1,
                    // One damaged record must not stop a DPO's upload: it is counted, and told to the operator.
                    Ok(Err(_)) | Err(_) => {
                        unreadable += 1;
                        tracing::error!(referral_id = %at_rest.referral_id, "the decision facts kept for impact replays do not open or do not parse");
                    }
                }
            }
            let full = page.len() as i64 == FACTS_PER_PAGE;
            // Deciding is CPU work: off the threads that serve requests.
            let (before, after_version) = (Arc::clone(&in_force), Arc::clone(&candidate));
            let mut page_impact = std::mem::take(&mut impact);
            impact = tokio::task::spawn_blocking(move || {
                for facts in &facts {
                    page_impact.replay(facts, &before.policy, &after_version);
                }
                page_impact
            })
            .await
            .map_err(|e| AppError::Internal(format!("impact replay: {e}")))?;
            if !full {
                break;
            }
        }
        Ok(ImpactChecked::Measured { against, since: Timestamp::of(since), erased, unreadable, impact })
    }

    /// The start of the impact replay window now (`[policy] impact_days` ago).
    pub fn impact_since(&self) -> DateTime<Utc> {
        self.governance.impact_since(self.now())
    }

    /// Forgets up to `limit` decisions' facts made before `before`: the keys
    /// of their own go first, so that no copy of them stays readable.
    /// Answers how many were forgotten.
    pub async fn forget_decision_facts(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, AppError> {
        let stale = self.store.decision_facts_before(before.timestamp_millis(), limit).await?;
        self.forget_kept(stale).await
    }

    /// Erases what is kept of a referral's decision, for a whole consent
    /// withdrawal: a key of the facts' own first, then the row. (Under the
    /// payload's key, the facts went with the payload.)
    /// Answers whether anything was kept.
    pub(crate) async fn erase_decision_facts(&self, referral_id: &str) -> Result<bool, AppError> {
        let Some(kept) = self.store.decision_facts_of(referral_id).await? else {
            return Ok(false);
        };
        self.forget_kept(vec![kept]).await?;
        Ok(true)
    }

    /// Forgets `kept`: the keys that seal nothing else first, then the rows.
    async fn forget_kept(&self, kept: Vec<DecisionFactsAtRest>) -> Result<u64, AppError> {
        if kept.is_empty() {
            return Ok(0);
        }
        let own_keys: Vec<String> = kept.iter().filter(|f| f.facts.key_for_facts_only).map(|f| f.facts.sealed.key_id.clone()).collect();
        self.vault.destroy(&own_keys).await?;
        let ids: Vec<String> = kept.into_iter().map(|f| f.referral_id).collect();
        Ok(self.store.forget_decision_facts(&ids).await?)
    }

    /// `facts` sealed for the referral `referral_id` under `key`.
    pub(crate) fn seal_facts(
        &self,
        key: &crate::crypto::case_keys::CaseKey,
        facts: &DecisionFacts,
        referral_id: &str,
    ) -> Result<SealedPayload, AppError> {
        let plaintext = serde_json::to_vec(facts).map_err(|e| AppError::Internal(e.to_string()))?;
        self.vault.seal(key, &plaintext, &facts_context(referral_id))
    }
}
