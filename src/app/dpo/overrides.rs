//! Emergency overrides, for the DPOs: the ones awaiting approval; the
//! approval or rejection of one by a DPO other than the person who asked
//! for it, within the window; and, for the gateway, the window's end. An
//! approved override releases the referral's held packet; a rejected or
//! lapsed one erases its payload (its case key destroyed first) and the
//! referral is denied.

use schemars::JsonSchema;
use serde::Serialize;

use crate::app::access::{Authorized, Dpos};
use crate::app::sending::referrals::OverrideAnswer;
use crate::app::views::{RecipientRef, Timestamp};
use crate::app::{AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::domain::emergency_override::{may_decide, OverrideState};
use crate::domain::lifecycle::ReferralStatus;
use crate::domain::priority::Priority;
use crate::domain::signoff::Verdict;
use crate::store::{StoredOverride, Write, Written};

/// Most overrides one listing shows (the window is short: few wait at once).
const LISTED: i64 = 500;
/// Most lapsed overrides settled per round of the deadline watch.
pub const LAPSED_PER_ROUND: i64 = 100;

/// `GET /v1/overrides`: what awaits a DPO's decision, the window closing first first.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OverrideList {
    pub items: Vec<AwaitingOverride>,
}

/// An override awaiting approval: the routing facts and codes a DPO decides
/// on, never the person's data.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AwaitingOverride {
    pub referral_id: String,
    /// The organisation whose submitter asked for it.
    pub requested_by_org: String,
    pub requested_at: Timestamp,
    pub purpose: String,
    pub recipient: RecipientRef,
    pub priority: Priority,
    #[serde(rename = "override")]
    pub emergency_override: OverrideAnswer,
}

/// `200` to `POST /v1/overrides/{referral_id}/approve` or `.../reject`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OverrideDecided {
    pub referral_id: String,
    /// `queued` once approved (delivery starts), `denied` once rejected.
    pub status: ReferralStatus,
    #[serde(rename = "override")]
    pub emergency_override: OverrideAnswer,
}

impl AwaitingOverride {
    fn of(stored: &StoredOverride) -> Self {
        Self {
            referral_id: stored.referral_id.clone(),
            requested_by_org: stored.asked.requested_org.clone(),
            requested_at: Timestamp(stored.asked.requested_ms),
            purpose: stored.purpose.clone(),
            recipient: RecipientRef { org: stored.destination_org.clone(), country: stored.destination_country.clone() },
            priority: stored.priority,
            emergency_override: OverrideAnswer::of(stored),
        }
    }
}

impl Gateway {
    pub async fn awaiting_overrides(&self, principal: &Authorized<Dpos>) -> Result<OverrideList, AppError> {
        let items = self.store.awaiting_overrides(LISTED).await?.iter().map(AwaitingOverride::of).collect();
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::OverrideDecide, "listed")).await?;
        Ok(OverrideList { items })
    }

    /// A DPO approves or rejects the override a referral awaits.
    pub async fn decide_override(&self, principal: &Authorized<Dpos>, referral_id: &str, verdict: Verdict) -> Result<OverrideDecided, AppError> {
        let now = self.now();
        let Some(stored) = self.store.emergency_override(referral_id).await? else {
            self.audit(AuditEvent::new(now, principal.actor(), Action::OverrideDecide, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        let asked = &stored.asked;
        let requester = Actor { org: Some(asked.requested_org.clone()), subject: asked.requested_by.clone() };
        let decider = (principal.org.as_str(), principal.subject.as_str());
        let allowed = may_decide(stored.state, (&asked.requested_org, &asked.requested_by), decider, asked.approve_by_ms, now.timestamp_millis());
        if let Err(refusal) = allowed {
            let event = AuditEvent::new(now, principal.actor(), Action::OverrideDecide, "refused")
                .referral(referral_id)
                .counterpart(requester)
                .reasons([refusal.code()]);
            self.audit(event).await?;
            return Err(AppError::OverrideDecisionRefused(refusal));
        }
        let outcome = match verdict {
            Verdict::Approve => OverrideState::Approved,
            Verdict::Reject => OverrideState::Rejected,
        };
        let event = AuditEvent::new(now, principal.actor(), Action::OverrideDecide, outcome.as_str())
            .referral(referral_id)
            .counterpart(requester)
            .reasons([format!("override:{}", asked.reason), format!("justification:{}", asked.justification_code)]);
        match self.settle_override(referral_id, outcome, principal.subject.clone(), event).await? {
            Written::AlreadySettled => {
                // Withdrawn, erased or decided by another DPO between the read and the write.
                let state = self.store.emergency_override(referral_id).await?.map_or(OverrideState::Stopped, |o| o.state);
                Err(AppError::OverrideDecisionRefused(crate::domain::emergency_override::OverrideDecisionRefusal::Settled(state)))
            }
            _ => {
                let settled = self.store.emergency_override(referral_id).await?.unwrap_or(stored);
                let status = self.store.referral(referral_id).await?.map_or(ReferralStatus::Denied, |r| r.status);
                Ok(OverrideDecided { referral_id: referral_id.to_owned(), status, emergency_override: OverrideAnswer::of(&settled) })
            }
        }
    }

    /// Denies the referrals whose override was not approved within its
    /// window; returns how many.
    pub async fn lapse_overrides(&self, limit: i64) -> Result<usize, AppError> {
        let now = self.now();
        let lapsed = self.store.lapsed_overrides(now.timestamp_millis(), limit).await?;
        for referral_id in &lapsed {
            let event = AuditEvent::new(now, Actor { org: None, subject: format!("gateway:{}", self.country) }, Action::OverrideDecide, "expired")
                .referral(referral_id);
            self.settle_override(referral_id, OverrideState::Expired, "gateway".to_owned(), event).await?;
        }
        Ok(lapsed.len())
    }

    /// Writes the outcome. A rejection or a lapse blanks the held payload in
    /// the same write; its case key is destroyed after (not before: another
    /// DPO's approval may land first, and its packet must stay readable), so
    /// that no copy of the database can open it either.
    async fn settle_override(&self, referral_id: &str, outcome: OverrideState, decided_by: String, audit: AuditEvent) -> Result<Written, AppError> {
        let held_key = self.store.sealed_payload(referral_id).await?.map(|payload| payload.key_id);
        let at_ms = audit.at.timestamp_millis();
        let written = self.writer.write(Write::SettleOverride { referral_id: referral_id.to_owned(), outcome, decided_by, at_ms, audit }).await?;
        if written == Written::AlreadySettled {
            return Ok(written);
        }
        if outcome == OverrideState::Approved {
            self.wake_delivery();
        } else if let Some(key) = held_key {
            self.vault.destroy(&[key]).await?;
        }
        Ok(written)
    }
}
