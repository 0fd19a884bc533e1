//! Pushing cases to recipients that take them by webhook: the case, signed
//! by this gateway, posted to the organisation's `https://` URL from the
//! directory; a 2xx answer is the acknowledgement (`forwarded` goes back to
//! the sender). Failures are retried with backoff until the packet expires;
//! then the case is dropped and the sender told `refused`
//! (`recipient_unreachable`).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::app::sending::delivery::SendFailure;
use crate::app::receiving::received::{Answer, CaseDocument, SealedWithdrawalDocument};
use crate::app::{attempt_each, AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::crypto::case_push;
use crate::directory::Delivery;
use crate::domain::status::ReferralProgress;
use crate::domain::OrgId;
use crate::domain::lifecycle::InboxState;
use crate::store::{InboxItem, InboxMove, Write};

/// The port to recipients' webhooks: posts a signed case, `Ok` on 2xx.
#[async_trait]
pub trait RecipientPush: Send + Sync + 'static {
    async fn push(&self, url: &str, signed_case: &str) -> Result<(), SendFailure>;
}

/// Media type of a pushed case.
pub const CASE_MEDIA_TYPE: &str = "application/jose";

impl Gateway {
    /// Pushes the cases due now; returns how many were claimed.
    #[tracing::instrument(name = "push_round", skip_all)]
    pub async fn push_due(self: &Arc<Self>, webhooks: &Arc<dyn RecipientPush>) -> Result<usize, AppError> {
        let now = self.now();
        let claimed = self.store.claim_pushes(now.timestamp_millis(), self.lease_ms(), self.delivery.batch).await?;
        let count = claimed.len();
        attempt_each(claimed, "push", |item| {
            let (gateway, webhooks) = (Arc::clone(self), Arc::clone(webhooks));
            async move { gateway.push_one(webhooks.as_ref(), item).await }
        })
        .await;
        Ok(count)
    }

    #[tracing::instrument(name = "push", skip_all, fields(packet_id = %item.packet_id, state = %item.state))]
    async fn push_one(&self, webhooks: &dyn RecipientPush, item: InboxItem) -> Result<(), AppError> {
        if item.state != InboxState::Pushing {
            return self.push_erasure(webhooks, item).await;
        }
        let now = self.now();
        let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let claims = match self.opened_claims(&item).await {
            Ok(claims) => claims,
            // Cut down by a partial withdrawal since it was claimed: pushed, cut, next time.
            Err(AppError::Erased) if self.store.inbox_item(&item.packet_id).await?.is_some_and(|now| now.claims.key_id != item.claims.key_id) => {
                return self.retry_push(&item, "case-cut-meanwhile").await;
            }
            // Nothing left to push: set aside at once rather than retried until it expires.
            Err(AppError::Erased) => {
                let reasons = vec!["case_erased".to_owned()];
                let change = self.inbox_move(&item, InboxMove::GiveUpPush { reasons: reasons.clone(), reply: None }, now);
                let event = AuditEvent::new(now, actor, Action::PacketScreen, InboxState::Undeliverable.as_str()).referral(&item.packet_id).reasons(reasons);
                self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        if now.timestamp_millis() >= item.expires_ms {
            let reasons = vec!["recipient_unreachable".to_owned()];
            let reply = self.answer_back(&item, Answer::Status(ReferralProgress::Refused, reasons.clone()), now).await?;
            let change = self.inbox_move(&item, InboxMove::GiveUpPush { reasons: reasons.clone(), reply: Some(reply) }, now);
            let event = AuditEvent::new(now, actor, Action::PacketScreen, InboxState::Undeliverable.as_str()).referral(&item.packet_id).reasons(reasons);
            self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
            self.wake_delivery();
            return Ok(());
        }
        let url = match self.directory().organisation(&claims.recipient).map(|o| o.delivery.clone()) {
            Some(Delivery::Webhook { url }) => url,
            // The directory changed meanwhile: the organisation now pulls.
            Some(Delivery::Pull) => {
                let change = self.inbox_move(&item, InboxMove::RecipientNowPulls { reasons: Vec::new() }, now);
                let event = AuditEvent::new(now, actor, Action::PacketScreen, InboxState::Available.as_str()).referral(&item.packet_id).reasons(["recipient_now_pulls"]);
                self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
                return Ok(());
            }
            // No longer listed: kept until the packet expires, in case it comes back.
            None => return self.retry_push(&item, "recipient-not-listed").await,
        };
        let keys = self.federation_keys().ok_or(AppError::NotFederated)?;
        let signer = self.directory().current_signing_key(self.country, now, &keys.signing).cloned().ok_or(AppError::NotFederated)?;
        let withdrawals = self.handed_over_withdrawals(&item, &claims).await?;
        let signed = case_push::sign(&CaseDocument::new(&item, &claims, &withdrawals), &signer).map_err(|e| AppError::Internal(e.to_string()))?;
        match webhooks.push(&url, &signed).await {
            Ok(()) => {
                let reply = self.answer_back(&item, Answer::Status(ReferralProgress::Forwarded, Vec::new()), now).await?;
                let change = self.inbox_move(&item, InboxMove::Acknowledge { reply }, now);
                let event = AuditEvent::new(now, actor, Action::InboxUpdate, "pushed").referral(&item.packet_id);
                self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
                self.wake_delivery();
                self.notify_cuts_made_meanwhile(&item).await
            }
            Err(failure) => self.retry_push(&item, failure.code()).await,
        }
    }

    /// Tells a webhook recipient that a case it was pushed is erased, or
    /// that some of its categories are (`narrowing_pushing`), and must be
    /// erased on its side too: a signed notice, retried like a case until the
    /// packet's own expiry, after which the case is only listed.
    async fn push_erasure(&self, webhooks: &dyn RecipientPush, item: InboxItem) -> Result<(), AppError> {
        let now = self.now();
        let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let narrowing = item.state == InboxState::NarrowingPushing;
        let settle = |outcome: &'static str, reasons: Vec<String>| {
            let change = self.inbox_move(&item, InboxMove::SettleNotice { reasons: reasons.clone() }, now);
            let outcome = match (narrowing, outcome) {
                (true, "erasure_pushed") => "narrowing_pushed",
                (true, "erasure_not_pushed") => "narrowing_not_pushed",
                (true, "erasure_listed") => "narrowing_listed",
                (_, outcome) => outcome,
            };
            let event = AuditEvent::new(now, actor.clone(), Action::InboxUpdate, outcome).referral(&item.packet_id).reasons(reasons);
            Write::InboxMove { change: Box::new(change), audit: event }
        };
        if now.timestamp_millis() >= item.expires_ms {
            self.writer.write(settle("erasure_not_pushed", vec!["recipient_unreachable".to_owned()])).await?;
            return Ok(());
        }
        let recipient = OrgId::parse(&item.recipient_org).map_err(|_| AppError::Internal("inbox entry: unreadable recipient".to_owned()))?;
        let url = match self.directory().organisation(&recipient).map(|o| o.delivery.clone()) {
            Some(Delivery::Webhook { url }) => url,
            // It pulls now: the inbox lists the case as erased, or with what was erased.
            Some(Delivery::Pull) => {
                self.writer.write(settle("erasure_listed", vec!["recipient_now_pulls".to_owned()])).await?;
                return Ok(());
            }
            None => return self.retry_push(&item, "recipient-not-listed").await,
        };
        let keys = self.federation_keys().ok_or(AppError::NotFederated)?;
        let signer = self.directory().current_signing_key(self.country, now, &keys.signing).cloned().ok_or(AppError::NotFederated)?;
        // No case in it: only the fact, so the organisation erases its copy or those categories of it.
        // For a case sealed end to end, the withdrawals themselves: only the organisation can read what they name.
        let sealed = if narrowing { self.store.sealed_withdrawals(&item.packet_id, &item.issuer).await? } else { Vec::new() };
        let notice = PushedNotice {
            packet_id: item.packet_id.clone(),
            recipient: item.recipient_org.clone(),
            from_country: item.issuer.clone(),
            state: if narrowing { NoticeState::Narrowed } else { NoticeState::Erased },
            erased_categories: (narrowing && sealed.is_empty()).then(|| item.narrowed.clone()),
            withdrawals: sealed
                .iter()
                .map(|w| SealedWithdrawalDocument { packet_id: w.withdrawal_id.clone(), end_to_end: w.end_to_end.clone() })
                .collect(),
        };
        let signed = case_push::sign(&notice, &signer).map_err(|e| AppError::Internal(e.to_string()))?;
        match webhooks.push(&url, &signed).await {
            Ok(()) => {
                self.writer.write(settle("erasure_pushed", Vec::new())).await?;
                if narrowing {
                    return self.notify_cuts_made_meanwhile(&item).await;
                }
                Ok(())
            }
            Err(failure) => self.retry_push(&item, failure.code()).await,
        }
    }

    /// A partial withdrawal that cut the case while it (or a notice about it)
    /// was being pushed is not in what was pushed: a notice of it goes next.
    async fn notify_cuts_made_meanwhile(&self, pushed: &InboxItem) -> Result<(), AppError> {
        let Some(current) = self.store.inbox_item(&pushed.packet_id).await? else { return Ok(()) };
        if current.state != InboxState::Acknowledged || current.narrowed == pushed.narrowed {
            return Ok(());
        }
        let now = self.now();
        let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let change = self.inbox_move(&current, InboxMove::NarrowingDue, now);
        let event = AuditEvent::new(now, actor, Action::InboxUpdate, "narrowing_due").referral(&current.packet_id);
        self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
        self.wake_pushing();
        Ok(())
    }

    async fn retry_push(&self, item: &InboxItem, code: &str) -> Result<(), AppError> {
        let next = self.next_attempt_ms(item.push_attempts);
        tracing::info!(code, attempts = item.push_attempts, "push to a recipient failed; will retry");
        self.store.retry_push(&item.packet_id, next, code).await?;
        Ok(())
    }
}

/// What an organisation taking its cases by webhook is pushed when the
/// sender withdrew consent: no case in it, only the fact, so that it erases
/// its copy (`erased`) or what was withdrawn from it (`narrowed`: the
/// categories, or for a case sealed end to end the withdrawals themselves,
/// since only the organisation can read what they name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct PushedNotice {
    packet_id: String,
    recipient: String,
    from_country: String,
    state: NoticeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_categories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    withdrawals: Vec<SealedWithdrawalDocument>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum NoticeState {
    Narrowed,
    Erased,
}
