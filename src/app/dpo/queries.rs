//! The DPO's and auditor's questions: the audit log, who received what, and where deliveries stand.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::app::access::{Authorized, Overseers};
use crate::app::views::{ConsentSummary, RecipientRef, Timestamp};
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent, AuditRecord};
use crate::domain::decision::DecisionRecord;
use crate::domain::lifecycle::{OutboxState, ReferralStatus};
use crate::store::AuditFilter;

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// Audit log filters as the API takes them.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub action: Option<Action>,
    pub org: Option<String>,
    pub referral_id: Option<String>,
    pub subject_ref: Option<String>,
    pub cursor: Option<i64>,
    pub limit: Option<i64>,
}

/// `GET /v1/audit`: a page of the log, in chain order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Set when the page is full: pass it as `cursor` for the entries after it.
    pub next_cursor: Option<String>,
}

/// One entry of the hash-chained audit log. It holds ids, codes and keyed
/// references only, never personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AuditEntry {
    /// The entry's place in the chain.
    pub seq: i64,
    pub at: Timestamp,
    pub actor: AuditActor,
    /// What was done (`referral.submit`, `inbox.read`, ...).
    pub action: String,
    pub referral_id: Option<String>,
    /// The keyed hash of the subject reference, never the reference itself.
    pub subject_key: Option<String>,
    pub policy_version: Option<String>,
    pub outcome: String,
    pub reasons: Vec<String>,
    /// For a DPO's approval or rejection of a policy version: the version's author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counterpart: Option<AuditActor>,
    /// The hash of the entry before it, which this entry's hash covers.
    pub prev_hash: String,
    pub hash: String,
}

/// Who acted: a caller of an organisation, or the gateway itself (`org` null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AuditActor {
    pub org: Option<String>,
    pub subject: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(record: AuditRecord) -> Self {
        Self {
            seq: record.seq,
            at: Timestamp(record.at_ms),
            actor: AuditActor { org: record.actor_org, subject: record.actor_subject },
            action: record.action,
            referral_id: record.referral_id,
            subject_key: record.subject_key,
            policy_version: record.policy_version,
            outcome: record.outcome,
            reasons: record.reasons,
            counterpart: record.counterpart_subject.map(|subject| AuditActor { org: record.counterpart_org, subject }),
            prev_hash: record.prev_hash,
            hash: record.hash,
        }
    }
}

/// `GET /v1/disclosures`: which organisations in which countries were given
/// which categories about a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Disclosures {
    pub subject_ref: String,
    pub disclosures: Vec<Disclosure>,
}

/// What one allowed referral disclosed: to whom, which categories, when,
/// under which policy version and consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Disclosure {
    pub referral_id: String,
    pub sender_org: String,
    pub recipient: RecipientRef,
    pub purpose: String,
    pub categories: Vec<String>,
    pub decided_at: Timestamp,
    pub status: ReferralStatus,
    pub policy_version: String,
    /// The consent facts kept with the decision; `null` if unreadable.
    pub consent: Option<ConsentSummary>,
}

/// The deliveries page: what stands in the outbox, and the erasures
/// awaited, per partner gateway. Counts only: nothing about anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deliveries {
    /// How long a partner gateway has to confirm an erasure.
    pub erasure_deadline_hours: i64,
    /// By partner country, in its code's order.
    pub partners: Vec<PartnerDeliveries>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartnerDeliveries {
    pub country: String,
    pub referrals: PacketStates,
    /// Statuses, withdrawals and replies.
    pub other_packets: PacketStates,
    /// Referrals withdrawn after their packet was made whose erasure the
    /// partner's gateway has not confirmed...
    pub erasures_awaited: i64,
    /// ...and of those, the ones past the deadline.
    pub erasures_overdue: i64,
}

/// Packets by where their delivery stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketStates {
    /// Waiting for their first attempt.
    pub queued: i64,
    /// Waiting after at least one failed attempt.
    pub retrying: i64,
    pub delivered: i64,
    /// Their delivery window passed undelivered: they failed.
    pub expired: i64,
    /// Stopped by a withdrawal before delivery.
    pub withdrawn: i64,
    /// Stopped by an erasure (retention) before delivery.
    pub erased: i64,
}

impl PacketStates {
    fn add(&mut self, tally: &crate::store::DeliveryTally) {
        let slot = match (tally.state, tally.retried) {
            (OutboxState::Pending, false) => &mut self.queued,
            (OutboxState::Pending, true) => &mut self.retrying,
            (OutboxState::Delivered, _) => &mut self.delivered,
            (OutboxState::Expired, _) => &mut self.expired,
            (OutboxState::Withdrawn, _) => &mut self.withdrawn,
            (OutboxState::Erased, _) => &mut self.erased,
        };
        *slot += tally.count;
    }
}

/// The page's rows from the store's tallies (pure: no IO).
pub fn deliveries(tallies: &[crate::store::DeliveryTally], awaited: &[crate::store::ErasuresAwaited], erasure_deadline_hours: i64) -> Deliveries {
    let mut partners: BTreeMap<String, PartnerDeliveries> = BTreeMap::new();
    let empty = |country: &str| PartnerDeliveries {
        country: country.to_owned(),
        referrals: PacketStates::default(),
        other_packets: PacketStates::default(),
        erasures_awaited: 0,
        erasures_overdue: 0,
    };
    for tally in tallies {
        let partner = partners.entry(tally.destination_country.clone()).or_insert_with(|| empty(&tally.destination_country));
        if tally.packet_type == "referral" {
            partner.referrals.add(tally);
        } else {
            partner.other_packets.add(tally);
        }
    }
    for erasures in awaited {
        let partner = partners.entry(erasures.destination_country.clone()).or_insert_with(|| empty(&erasures.destination_country));
        partner.erasures_awaited += erasures.awaited;
        partner.erasures_overdue += erasures.overdue;
    }
    Deliveries { erasure_deadline_hours, partners: partners.into_values().collect() }
}

impl Gateway {
    /// What stands in the outbox and which erasures are awaited, per partner gateway.
    pub async fn deliveries(&self, _principal: &Authorized<Overseers>) -> Result<Deliveries, AppError> {
        let deadline = chrono::Duration::from_std(self.delivery.erasure_deadline).unwrap_or(chrono::Duration::MAX);
        let tallies = self.store.delivery_tallies().await?;
        let awaited = self.store.erasures_awaited(deadline.num_milliseconds(), self.now().timestamp_millis()).await?;
        Ok(deliveries(&tallies, &awaited, deadline.num_hours()))
    }

    pub async fn audit_log(&self, principal: &Authorized<Overseers>, query: AuditQuery) -> Result<AuditPage, AppError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let filter = AuditFilter {
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            action: query.action.map(|a| a.as_str().to_owned()),
            org: query.org,
            referral_id: query.referral_id,
            subject_key: query.subject_ref.as_deref().map(|s| self.subject_key(s)),
            after_seq: query.cursor,
            limit,
        };
        let records = self.store.audit(&filter).await?;
        let next_cursor = (records.len() as i64 == limit).then(|| records.last().map(|r| r.seq)).flatten();
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::AuditRead, "ok")).await?;
        Ok(AuditPage { entries: records.into_iter().map(AuditEntry::from).collect(), next_cursor: next_cursor.map(|c| c.to_string()) })
    }

    /// The whole audit chain recomputed, as `referral-gateway audit verify` does.
    pub async fn audit_chain(&self, _principal: &Authorized<Overseers>) -> Result<Result<crate::store::VerifiedChain, crate::store::BrokenChain>, AppError> {
        Ok(crate::store::verify_audit_chain(self.store.as_ref()).await?)
    }

    /// Which organisations in which countries were given which categories
    /// about a subject, when, under which policy version and consent.
    pub async fn disclosures(&self, principal: &Authorized<Overseers>, subject_ref: &str) -> Result<Disclosures, AppError> {
        let subject_key = self.subject_key(subject_ref);
        // What went somewhere: the allowed referrals about the subject.
        let rows: Vec<_> = self.store.subject_referrals(&subject_key).await?.into_iter().filter(|r| r.outcome == "allow").collect();
        let event = AuditEvent::new(self.now(), principal.actor(), Action::DisclosuresRead, "ok").subject_key(subject_key);
        self.audit(event).await?;
        let disclosures = rows
            .into_iter()
            .map(|row| Disclosure {
                categories: sent_category_names(&row.decision),
                consent: ConsentSummary::read(&row.consent),
                recipient: RecipientRef { org: row.destination_org, country: row.destination_country },
                decided_at: Timestamp(row.created_ms),
                referral_id: row.referral_id,
                sender_org: row.sender_org,
                purpose: row.purpose,
                status: row.status,
                policy_version: row.policy_version,
            })
            .collect();
        Ok(Disclosures { subject_ref: subject_ref.to_owned(), disclosures })
    }
}

/// The names of the categories a stored decision sent, in its order; none
/// if the record is unreadable.
pub(crate) fn sent_category_names(stored_decision: &str) -> Vec<String> {
    serde_json::from_str::<DecisionRecord>(stored_decision)
        .map(|decision| decision.sent.keys().map(|c| c.as_str().to_owned()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeliveryTally, ErasuresAwaited};

    fn tally(country: &str, packet_type: &str, state: OutboxState, retried: bool, count: i64) -> DeliveryTally {
        DeliveryTally { destination_country: country.to_owned(), packet_type: packet_type.to_owned(), state, retried, count }
    }

    #[test]
    fn tallies_land_in_their_partner_and_column() {
        let tallies = [
            tally("NGA", "referral", OutboxState::Pending, false, 2),
            tally("NGA", "referral", OutboxState::Pending, true, 3),
            tally("NGA", "referral", OutboxState::Delivered, true, 5),
            tally("NGA", "referral", OutboxState::Delivered, false, 7),
            tally("NGA", "withdrawal", OutboxState::Expired, true, 1),
            tally("GMB", "referral", OutboxState::Withdrawn, false, 4),
        ];
        let awaited = [ErasuresAwaited { destination_country: "GIN".to_owned(), awaited: 2, overdue: 1 }];
        let page = deliveries(&tallies, &awaited, 72);
        let countries: Vec<&str> = page.partners.iter().map(|p| p.country.as_str()).collect();
        assert_eq!(countries, ["GIN", "GMB", "NGA"], "every partner with anything, in code order");
        let nga = &page.partners[2];
        assert_eq!(nga.referrals, PacketStates { queued: 2, retrying: 3, delivered: 12, ..PacketStates::default() });
        assert_eq!(nga.other_packets, PacketStates { expired: 1, ..PacketStates::default() });
        assert_eq!((page.partners[0].erasures_awaited, page.partners[0].erasures_overdue), (2, 1));
        assert_eq!(page.partners[1].referrals.withdrawn, 4);
    }
}
