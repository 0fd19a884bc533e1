//! The hash-chained audit log: typed events, the chain, and its verification.
//!
//! Entries hold who did what to which object, with what outcome and reason
//! codes; never personal data. A subject reference appears only as a keyed
//! hash (see [`crate::crypto::at_rest::KeyRing::index`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The previous hash of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What was done. The names are stable: they are stored and filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Action {
    #[serde(rename = "referral.submit")]
    ReferralSubmit,
    #[serde(rename = "referral.read")]
    ReferralRead,
    #[serde(rename = "policy.read")]
    PolicyRead,
    #[serde(rename = "policy.update")]
    PolicyUpdate,
    #[serde(rename = "policy.simulate")]
    PolicySimulate,
    /// A DPO approved or rejected a policy version (four eyes).
    #[serde(rename = "policy.review")]
    PolicyReview,
    #[serde(rename = "audit.read")]
    AuditRead,
    #[serde(rename = "disclosures.read")]
    DisclosuresRead,
    #[serde(rename = "access.refused")]
    AccessRefused,
    /// A packet from a peer gateway, taken into the inbox or refused.
    #[serde(rename = "packet.receive")]
    PacketReceive,
    /// A referral's packet delivered to the peer gateway (receipt kept), or expired undelivered.
    #[serde(rename = "packet.send")]
    PacketSend,
    /// A received packet screened (forwarded or refused), or a status applied to its referral.
    #[serde(rename = "packet.screen")]
    PacketScreen,
    /// A recipient listed or read its inbox.
    #[serde(rename = "inbox.read")]
    InboxRead,
    /// A recipient acknowledged a case or reported its progress.
    #[serde(rename = "inbox.update")]
    InboxUpdate,
    /// The sender withdrew the person's consent for a referral.
    #[serde(rename = "consent.withdraw")]
    ConsentWithdraw,
    /// A DPO or auditor read a subject report (through the API or the command line).
    #[serde(rename = "subject.report")]
    SubjectReport,
    /// A case erased by the retention sweep: its deadline passed (a referral
    /// sent from here, or a case received here).
    #[serde(rename = "retention.erase")]
    RetentionErase,
    /// Statistics of a period were released (through the API or the command line).
    #[serde(rename = "statistics.read")]
    StatisticsRead,
    /// A DPO listed the emergency overrides awaiting approval, approved or
    /// rejected one (or was refused), or the gateway let one lapse.
    #[serde(rename = "override.decide")]
    OverrideDecide,
    /// A match query: asked of a peer for a search sent from here, or
    /// answered for a peer (or refused). Counts and codes only.
    #[serde(rename = "match.query")]
    MatchQuery,
    /// A match found: by this gateway for a search sent from here, or told
    /// by a peer about one.
    #[serde(rename = "match.found")]
    MatchFound,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::ReferralSubmit,
        Action::ReferralRead,
        Action::PolicyRead,
        Action::PolicyUpdate,
        Action::PolicySimulate,
        Action::PolicyReview,
        Action::AuditRead,
        Action::DisclosuresRead,
        Action::AccessRefused,
        Action::PacketReceive,
        Action::PacketSend,
        Action::PacketScreen,
        Action::InboxRead,
        Action::InboxUpdate,
        Action::ConsentWithdraw,
        Action::SubjectReport,
        Action::RetentionErase,
        Action::StatisticsRead,
        Action::OverrideDecide,
        Action::MatchQuery,
        Action::MatchFound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReferralSubmit => "referral.submit",
            Action::ReferralRead => "referral.read",
            Action::PolicyRead => "policy.read",
            Action::PolicyUpdate => "policy.update",
            Action::PolicySimulate => "policy.simulate",
            Action::PolicyReview => "policy.review",
            Action::AuditRead => "audit.read",
            Action::DisclosuresRead => "disclosures.read",
            Action::AccessRefused => "access.refused",
            Action::PacketReceive => "packet.receive",
            Action::PacketSend => "packet.send",
            Action::PacketScreen => "packet.screen",
            Action::InboxRead => "inbox.read",
            Action::InboxUpdate => "inbox.update",
            Action::ConsentWithdraw => "consent.withdraw",
            Action::SubjectReport => "subject.report",
            Action::RetentionErase => "retention.erase",
            Action::StatisticsRead => "statistics.read",
            Action::OverrideDecide => "override.decide",
            Action::MatchQuery => "match.query",
            Action::MatchFound => "match.found",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == text)
    }
}

/// Who acted: the organisation (when known) and the token subject or
/// certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub org: Option<String>,
    pub subject: String,
}

impl Actor {
    /// The gateway itself, e.g. when it seeds the first policy version.
    pub fn gateway() -> Self {
        Self { org: None, subject: "gateway".to_owned() }
    }
}

/// One event, before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: Action,
    pub referral_id: Option<String>,
    /// Keyed hash of the subject reference, for "everything about X" queries.
    pub subject_key: Option<String>,
    pub policy_version: Option<String>,
    /// `allow`, `deny`, `ok`, `replayed`, `conflict`, `unauthenticated`, `forbidden`, `not_found`.
    pub outcome: &'static str,
    pub reasons: Vec<String>,
    /// The other person of a four-eyes step: the author of the policy
    /// version a DPO approved or rejected.
    pub counterpart: Option<Actor>,
}

impl AuditEvent {
    pub fn new(at: DateTime<Utc>, actor: Actor, action: Action, outcome: &'static str) -> Self {
        Self { at, actor, action, referral_id: None, subject_key: None, policy_version: None, outcome, reasons: Vec::new(), counterpart: None }
    }

    pub fn counterpart(mut self, counterpart: Actor) -> Self {
        self.counterpart = Some(counterpart);
        self
    }

    pub fn referral(mut self, id: &str) -> Self {
        self.referral_id = Some(id.to_owned());
        self
    }

    pub fn subject_key(mut self, key: String) -> Self {
        self.subject_key = Some(key);
        self
    }

    pub fn policy_version(mut self, version: &str) -> Self {
        self.policy_version = Some(version.to_owned());
        self
    }

    pub fn reasons<I: IntoIterator<Item = S>, S: Into<String>>(mut self, reasons: I) -> Self {
        self.reasons = reasons.into_iter().map(Into::into).collect();
        self
    }

    /// The stored form of this event at position `seq` after `prev_hash`.
    pub fn into_record(self, seq: i64, prev_hash: String) -> AuditRecord {
        let mut record = AuditRecord {
            seq,
            at_ms: self.at.timestamp_millis(),
            actor_org: self.actor.org,
            actor_subject: self.actor.subject,
            action: self.action.as_str().to_owned(),
            referral_id: self.referral_id,
            subject_key: self.subject_key,
            policy_version: self.policy_version,
            outcome: self.outcome.to_owned(),
            reasons: self.reasons,
            counterpart_org: self.counterpart.as_ref().and_then(|c| c.org.clone()),
            counterpart_subject: self.counterpart.map(|c| c.subject),
            prev_hash,
            hash: String::new(),
        };
        record.hash = record.computed_hash();
        record
    }
}

/// An entry as stored: every column that the hash covers, and the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub actor_org: Option<String>,
    pub actor_subject: String,
    pub action: String,
    pub referral_id: Option<String>,
    pub subject_key: Option<String>,
    pub policy_version: Option<String>,
    pub outcome: String,
    pub reasons: Vec<String>,
    // Absent from the hashed form when empty, so entries written before
    // these columns existed keep their hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterpart_org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterpart_subject: Option<String>,
    pub prev_hash: String,
    #[serde(skip)]
    pub hash: String,
}

impl AuditRecord {
    /// SHA-256 over the canonical JSON of every column but the hash itself
    /// (fields in declaration order), previous hash included.
    pub fn computed_hash(&self) -> String {
        // Serialising a struct of strings and integers cannot fail; an empty
        // input would still never match a stored hash.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        crate::hex::encode(ring::digest::digest(&ring::digest::SHA256, &canonical).as_ref())
    }
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {seq}: its content does not match its hash (altered)")]
    Altered { seq: i64 },
    #[error("entry {seq}: it does not follow the previous entry's hash (removed, reordered or inserted entries)")]
    Unlinked { seq: i64 },
    #[error("entry {seq}: expected sequence number {expected} (entries missing)")]
    Gap { seq: i64, expected: i64 },
}

impl ChainBreak {
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Altered { seq } | ChainBreak::Unlinked { seq } | ChainBreak::Gap { seq, .. } => *seq,
        }
    }
}

/// Follows a chain, page by page, from the genesis hash.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS_HASH.to_owned() }
    }
}

impl ChainVerifier {
    /// Checks the next entry; the first break found is returned.
    pub fn check(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if record.seq != self.expected_seq {
            return Err(ChainBreak::Gap { seq: record.seq, expected: self.expected_seq });
        }
        if record.computed_hash() != record.hash {
            return Err(ChainBreak::Altered { seq: record.seq });
        }
        if record.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: record.seq });
        }
        self.expected_seq += 1;
        self.prev_hash.clone_from(&record.hash);
        Ok(())
    }

    /// How many entries were checked.
    pub fn verified(&self) -> i64 {
        self.expected_seq - 1
    }

    /// The hash the next entry must follow.
    pub fn head(&self) -> &str {
        &self.prev_hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent::new(
                    DateTime::from_timestamp_millis(1_700_000_000_000 + seq).unwrap(),
                    Actor { org: Some("ita-nrm".into()), subject: "client".into() },
                    Action::ReferralSubmit,
                    "allow",
                )
                .referral(&format!("r{seq}"))
                .reasons(["x"]);
                let record = event.into_record(seq, prev.clone());
                prev.clone_from(&record.hash);
                record
            })
            .collect()
    }

    fn verify(records: &[AuditRecord]) -> Result<i64, ChainBreak> {
        let mut verifier = ChainVerifier::default();
        records.iter().try_for_each(|r| verifier.check(r))?;
        Ok(verifier.verified())
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn every_column_is_covered_by_the_hash() {
        let edits: Vec<fn(&mut AuditRecord)> = vec![
            |r| r.at_ms += 1,
            |r| r.actor_org = None,
            |r| r.actor_subject.push('x'),
            |r| r.action = "referral.read".into(),
            |r| r.referral_id = Some("other".into()),
            |r| r.subject_key = Some("k".into()),
            |r| r.policy_version = Some("sha256:0".into()),
            |r| r.outcome = "deny".into(),
            |r| r.reasons.clear(),
        ];
        for edit in edits {
            let mut records = chain(4);
            edit(&mut records[2]);
            assert_eq!(verify(&records), Err(ChainBreak::Altered { seq: 3 }));
        }
    }

    #[test]
    fn removal_reordering_and_rehashing_are_caught() {
        let mut removed = chain(4);
        removed.remove(1);
        assert_eq!(verify(&removed), Err(ChainBreak::Gap { seq: 3, expected: 2 }));

        // An attacker who edits an entry and recomputes its own hash still
        // breaks the link to the next one.
        let mut rehashed = chain(4);
        rehashed[1].outcome = "deny".into();
        rehashed[1].hash = rehashed[1].computed_hash();
        assert_eq!(verify(&rehashed), Err(ChainBreak::Unlinked { seq: 3 }));

        let mut renumbered = chain(3);
        renumbered.swap(0, 1);
        assert_eq!(verify(&renumbered).map_err(|b| b.seq()), Err(2));
    }

    #[test]
    fn action_names_round_trip() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(*action));
            assert_eq!(serde_json::to_value(action).unwrap(), serde_json::json!(action.as_str()));
        }
    }
}
