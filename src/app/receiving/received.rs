//! What the receiving gateway's work shares about a received packet: its
//! claims opened, its moves, the packets it sends back about it.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::app::retention::retention_deadline;
use crate::app::views::Timestamp;
use crate::app::{new_id, AppError, Gateway};
use crate::crypto::packet::{PacketClaims, PacketType};
use crate::domain::priority::{DeadlineKind, Priority};
use crate::domain::onward::{categories_in, OnwardLimits, OnwardMovement, OnwardStep};
use crate::domain::withdrawal::ErasureNotice;
use crate::domain::{OrgId, Purpose};
use crate::domain::status::{ReferralProgress, StatusReport};
use crate::directory::Delivery;
use crate::store::{InboxChange, InboxItem, InboxMove, InboxQueue, NewReply, SealedPayload, SealedWithdrawal, StoredRetention};

impl Gateway {
    /// Whether the directory has `org` take its cases by webhook push.
    pub(crate) fn takes_webhook_pushes(&self, org: &OrgId) -> bool {
        self.directory().organisation(org).is_some_and(|o| matches!(o.delivery, Delivery::Webhook { .. }))
    }

    /// The claims of each item, opened with one read of the case-key store.
    pub(crate) async fn opened_claims_all(&self, items: &[InboxItem]) -> Result<Vec<Result<PacketClaims, AppError>>, AppError> {
        let sealed: Vec<(&[u8], &[u8])> = items.iter().map(|item| (item.claims.sealed.as_slice(), item.packet_id.as_bytes())).collect();
        Ok(self
            .vault
            .open_all(&sealed)
            .await?
            .into_iter()
            .map(|plaintext| serde_json::from_slice(&plaintext?).map_err(|_| AppError::Internal("inbox entry holds unreadable claims".to_owned())))
            .collect())
    }

    pub(crate) async fn opened_claims(&self, item: &InboxItem) -> Result<PacketClaims, AppError> {
        let plaintext = self.vault.open(&item.claims.sealed, item.packet_id.as_bytes()).await?;
        serde_json::from_slice(&plaintext).map_err(|_| AppError::Internal("inbox entry holds unreadable claims".to_owned()))
    }

    /// `step`, from the state `item` was read in.
    pub(crate) fn inbox_move(&self, item: &InboxItem, step: InboxMove, now: DateTime<Utc>) -> InboxChange {
        InboxChange { packet_id: item.packet_id.clone(), from: item.state, step, at_ms: now.timestamp_millis() }
    }

    /// A status about a received referral, back to the gateway that sent
    /// it; its body sealed at rest under its packet id.
    pub(crate) fn status_reply(
        &self,
        item: &InboxItem,
        status: ReferralProgress,
        reason_codes: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<NewReply, AppError> {
        let report = StatusReport { in_reply_to: item.packet_id.clone(), status, reason_codes };
        self.reply(item, PacketType::Status, &report, now)
    }

    /// A case's place in its recipient's inbox, made visible at `from`:
    /// what is awaited of the recipient by when, by this gateway's
    /// `[deadlines]` for `priority` (`None`, unknown here: counted as normal).
    pub(crate) fn inbox_queue(&self, priority: Option<Priority>, from: DateTime<Utc>) -> InboxQueue {
        let due = |kind| self.deadlines.due(priority.unwrap_or_default(), from, kind).timestamp_millis();
        InboxQueue { priority, acknowledge_by_ms: due(DeadlineKind::Acknowledgement), answer_by_ms: due(DeadlineKind::FirstStatus) }
    }

    /// What goes back to the sender about `item`: the status or erasure
    /// confirmation itself, or, for a copy passed on here, an `onward`
    /// status about the case it was passed on from, naming the copy by its
    /// number and the onward organisation by its kind only.
    pub(crate) async fn answer_back(&self, item: &InboxItem, answer: Answer, now: DateTime<Utc>) -> Result<NewReply, AppError> {
        let Some(copy) = &item.onward else {
            return match answer {
                Answer::Status(status, reasons) => self.status_reply(item, status, reasons, now),
                Answer::Erasure(notice) => self.reply(item, PacketType::ErasureConfirmation, &notice, now),
            };
        };
        let parent = self.store.inbox_item(&copy.parent).await?.ok_or_else(|| AppError::Internal("an onward copy without its case".to_owned()))?;
        let (step, reason) = match answer {
            Answer::Status(status, reasons) => (OnwardStep::reported(status), reasons.into_iter().next()),
            Answer::Erasure(notice) if notice.is_partial() => (OnwardStep::NarrowingConfirmed, None),
            Answer::Erasure(_) => (OnwardStep::ErasureConfirmed, None),
        };
        let movement = OnwardMovement { copy: Some(copy.number), kind: copy.kind, step, reason };
        self.status_reply(&parent, ReferralProgress::Onward, movement.reason_codes(), now)
    }

    /// A packet of `packet_type` carrying `body` back to the gateway that
    /// sent `item`; the body sealed at rest under its packet id.
    pub(crate) fn reply(&self, item: &InboxItem, packet_type: PacketType, body: &impl serde::Serialize, now: DateTime<Utc>) -> Result<NewReply, AppError> {
        let packet_id = new_id()?;
        let body = serde_json::to_vec(body).map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(NewReply {
            packet_id: packet_id.clone(),
            packet_type: packet_type.as_str().to_owned(),
            destination_country: item.issuer.clone(),
            recipient_org: item.recipient_org.clone(),
            payload: SealedPayload { sealed: self.keys().seal(&body, packet_id.as_bytes())?, key_id: self.keys().data_key_id() },
            deadline_ms: self.delivery_deadline(now, None).timestamp_millis(),
            created_ms: now.timestamp_millis(),
        })
    }

    /// The partial withdrawals sealed end to end to hand over with a case
    /// sealed end to end (none for any other).
    pub(crate) async fn handed_over_withdrawals(&self, item: &InboxItem, claims: &PacketClaims) -> Result<Vec<SealedWithdrawal>, AppError> {
        if !claims.is_end_to_end() {
            return Ok(Vec::new());
        }
        Ok(self.store.sealed_withdrawals(&item.packet_id, &item.issuer).await?)
    }
}

/// What a case's recipient did that its sender is told of.
pub(crate) enum Answer {
    /// A status, with its reason codes.
    Status(ReferralProgress, Vec<String>),
    /// It erased its copy, or what was withdrawn from it.
    Erasure(ErasureNotice),
}

/// A kept deadline after a closure at `closed_at`, if that brings it forward.
pub(crate) fn closed_deadline(kept: StoredRetention, closed_at: DateTime<Utc>) -> Option<i64> {
    let closed = retention_deadline(kept)?.closed_at(closed_at).until.timestamp_millis();
    (closed < kept.until_ms).then_some(closed)
}

/// A case as its organisation receives it, pushed to its webhook or read at
/// `GET /v1/inbox/{packet_id}`: readable, or sealed end to end to the
/// organisation's own key.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CaseDocument {
    Readable(Box<ReadableCase>),
    Sealed(SealedCase),
}

/// A case this gateway could read, minimised by the sending gateway.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReadableCase {
    pub packet_id: String,
    /// The organisation the case is for.
    pub recipient: OrgId,
    pub from_country: String,
    pub purpose: Option<Purpose>,
    pub policy_version: Option<String>,
    pub consent_expires_at: Option<DateTime<Utc>>,
    /// When the case must be erased at the latest (the sending DPO's rule and
    /// the consent's end); this gateway erases it then.
    pub retention_until: Option<DateTime<Utc>>,
    /// Once the case is reported closed, it may be kept this many days more at most.
    pub retention_days_after_closure: Option<u32>,
    pub received_at: Timestamp,
    /// Case management passes to this organisation when it reports `accepted`.
    pub handover: bool,
    /// How soon the sender needs an answer: `emergency` (24 hours),
    /// `urgent` (72 hours) or `normal` (two weeks), as the sender's
    /// gateway's `[deadlines]` count them.
    pub priority: Priority,
    /// The minimised case: category name to its fields (the `case` of a ReferralSubmission).
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub case: Value,
    /// What the organisation may pass on, to whom and until when, as the
    /// sending gateway decided it (the person's consent, its DPO's policy,
    /// the built-in rules), cut to the categories of `case`; absent:
    /// nothing may be passed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onward: Option<OnwardLimits>,
    /// For a case passed on here by the organisation that received it from
    /// `from_country`: that organisation. Such a case may not be passed on
    /// again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referred_onward_by: Option<OrgId>,
    /// For a tracing or family-assessment request: the organisation that
    /// asked, which a reply case answering it goes back to
    /// (`POST /v1/inbox/{packet_id}/replies`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<OrgId>,
    /// For a reply case: the referral of this organisation it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers_referral: Option<String>,
    /// Categories withdrawn by the person since the case became visible:
    /// erased here, no longer in `case`, to be erased by the organisation too.
    pub erased_categories: Option<Vec<String>>,
}

/// A case sealed end to end to the organisation's own key: this gateway
/// hands over what it could not open, with the routing facts it knows. The
/// organisation opens it with `referral-gateway recipient open` or
/// `recipient::open_delivered`, which verify the sending gateway's
/// signature; purpose, consent end, retention and the case are inside.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SealedCase {
    pub packet_id: String,
    pub recipient: OrgId,
    pub from_country: String,
    pub received_at: Timestamp,
    /// The inner envelope (compact JWE).
    pub end_to_end: String,
    /// For a reply case: the referral of this organisation it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers_referral: Option<String>,
    /// Its partial withdrawals, each sealed to the organisation too; the
    /// organisation opens them and cuts what they name from the case.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withdrawals: Vec<SealedWithdrawalDocument>,
}

/// A partial withdrawal of a case sealed end to end, as handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SealedWithdrawalDocument {
    pub packet_id: String,
    /// The withdrawal's inner envelope (compact JWE).
    pub end_to_end: String,
}

impl CaseDocument {
    /// The document for `item`, from its opened `claims`; `withdrawals`: for
    /// a case sealed end to end, its partial withdrawals, sealed end to end too.
    pub fn new(item: &InboxItem, claims: &PacketClaims, withdrawals: &[SealedWithdrawal]) -> Self {
        if let Some(sealed) = &claims.end_to_end {
            return Self::Sealed(SealedCase {
                packet_id: item.packet_id.clone(),
                recipient: claims.recipient.clone(),
                from_country: item.issuer.clone(),
                received_at: Timestamp(item.received_ms),
                end_to_end: sealed.clone(),
                answers_referral: item.answers.clone(),
                withdrawals: withdrawals
                    .iter()
                    .map(|w| SealedWithdrawalDocument { packet_id: w.withdrawal_id.clone(), end_to_end: w.end_to_end.clone() })
                    .collect(),
            });
        }
        Self::Readable(Box::new(ReadableCase {
            packet_id: item.packet_id.clone(),
            recipient: claims.recipient.clone(),
            from_country: item.issuer.clone(),
            purpose: claims.purpose,
            policy_version: claims.policy_version.clone(),
            consent_expires_at: claims.consent_expires_at,
            retention_until: claims.retention_until,
            retention_days_after_closure: claims.retention_days_after_closure,
            received_at: Timestamp(item.received_ms),
            handover: claims.handover,
            priority: claims.priority,
            case: claims.body.clone(),
            onward: claims.onward.as_ref().and_then(|limits| limits.within(&categories_in(&claims.body))),
            referred_onward_by: item.onward.as_ref().and_then(|copy| OrgId::parse(&copy.referred_by).ok()),
            requested_by: claims.requested_by.clone(),
            answers_referral: item.answers.clone(),
            erased_categories: (!item.narrowed.is_empty()).then(|| item.narrowed.clone()),
        }))
    }
}
