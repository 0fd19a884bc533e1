//! What a new policy version would change on real traffic (DPO, at upload):
//! recent decisions decided again from their stored facts, under the version
//! in force and under the new one, and the differences counted by recipient
//! organisation, purpose, category and direction.
//!
//! Both sides are decided again, rather than the new side compared with the
//! recorded decision: a decision recorded under an older version would
//! otherwise count as changed by this one. Only counts leave this module;
//! no fact of any case does.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::decide::{decide_from, DecisionFacts};
use super::decision::Decision;
use super::policy::DataProtectionPolicy;
use super::{DataCategory, Purpose};

/// How many decisions (or categories) changed, by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Changes {
    /// Decisions whose outcome or categories sent differ.
    pub decisions: u64,
    /// Decisions allowed under the version in force that the new one denies.
    pub allow_to_deny: u64,
    /// Decisions denied under the version in force that the new one allows.
    pub deny_to_allow: u64,
    /// Categories sent under the version in force and no longer sent under
    /// the new one (withheld, or the whole referral denied): one per
    /// category of each decision.
    pub sent_to_withheld: u64,
    /// Categories not sent under the version in force that the new one sends.
    pub withheld_to_sent: u64,
}

impl Changes {
    fn add(&mut self, other: &Changes) {
        self.decisions += other.decisions;
        self.allow_to_deny += other.allow_to_deny;
        self.deny_to_allow += other.deny_to_allow;
        self.sent_to_withheld += other.sent_to_withheld;
        self.withheld_to_sent += other.withheld_to_sent;
    }

    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// The decisions replayed and what the new version changes in them. Each
/// breakdown lists only what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Impact {
    /// Decisions decided again under both versions.
    pub replayed: u64,
    pub changed: Changes,
    /// By recipient organisation (the directory id).
    pub by_recipient: BTreeMap<String, Changes>,
    pub by_purpose: BTreeMap<Purpose, Changes>,
    /// By category: `decisions` counts the decisions in which that category
    /// flipped; `allow_to_deny` and `deny_to_allow` are always 0 (an outcome
    /// is a decision's, not a category's).
    pub by_category: BTreeMap<DataCategory, Changes>,
}

/// What a decision sends: nothing when it denies.
fn sent(decision: &Decision) -> BTreeSet<DataCategory> {
    if decision.is_allow() {
        decision.sent().keys().copied().collect()
    } else {
        BTreeSet::new()
    }
}

/// The difference between two decisions on the same facts, `before` → `after`.
pub fn difference(before: &Decision, after: &Decision) -> (Changes, BTreeMap<DataCategory, Changes>) {
    let (sent_before, sent_after) = (sent(before), sent(after));
    let mut by_category = BTreeMap::new();
    for category in sent_before.difference(&sent_after) {
        by_category.insert(*category, Changes { decisions: 1, sent_to_withheld: 1, ..Changes::default() });
    }
    for category in sent_after.difference(&sent_before) {
        by_category.insert(*category, Changes { decisions: 1, withheld_to_sent: 1, ..Changes::default() });
    }
    let changes = Changes {
        decisions: u64::from(before.is_allow() != after.is_allow() || !by_category.is_empty()),
        allow_to_deny: u64::from(before.is_allow() && !after.is_allow()),
        deny_to_allow: u64::from(!before.is_allow() && after.is_allow()),
        sent_to_withheld: sent_before.difference(&sent_after).count() as u64,
        withheld_to_sent: sent_after.difference(&sent_before).count() as u64,
    };
    (changes, by_category)
}

impl Impact {
    /// Decides `facts` under `in_force` and `candidate` and counts the difference.
    pub fn replay(&mut self, facts: &DecisionFacts, in_force: &DataProtectionPolicy, candidate: &DataProtectionPolicy) {
        let (before, after) = (decide_from(facts, in_force), decide_from(facts, candidate));
        self.replayed += 1;
        let (changes, by_category) = difference(&before, &after);
        if changes.is_empty() {
            return;
        }
        self.changed.add(&changes);
        // A decision without a recipient denies under every version, so never gets here.
        if let Some(recipient) = &facts.recipient {
            self.by_recipient.entry(recipient.id.to_string()).or_default().add(&changes);
        }
        self.by_purpose.entry(facts.purpose).or_default().add(&changes);
        for (category, change) in by_category {
            self.by_category.entry(category).or_default().add(&change);
        }
    }
}

/// Replays every decision of `facts` (see [`Impact::replay`]).
pub fn impact<'a>(facts: impl IntoIterator<Item = &'a DecisionFacts>, in_force: &DataProtectionPolicy, candidate: &DataProtectionPolicy) -> Impact {
    let mut impact = Impact::default();
    for facts in facts {
        impact.replay(facts, in_force, candidate);
    }
    impact
}
