//! The recipient organisation answers a request it holds with a reply case
//! (issue 22 §1): a tracing request with the traced relative found, a
//! family-assessment request with the assessment. The reply is a referral
//! of this organisation's own, about the person it is about, under that
//! person's consent: decided by this gateway like any referral (the
//! consent, this gateway's DPO policy, the reply purpose's baseline, the
//! built-in rules, rule (d) on a child's whereabouts included) and sent
//! back to the organisation that asked, its packet naming the request.
//! The organisation follows and withdraws it as any sender does
//! (`GET /v1/referrals/{id}`, `POST /v1/referrals/{id}/consent-withdrawal`).

use crate::app::access::{Authorized, Recipients};
use crate::app::sending::referrals::{submission_problem, Submitted};
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::domain::reply_cases::{reply_target, HeldRequest, ReplyNotPossible};
use crate::domain::submission::ReplySubmission;

impl Gateway {
    /// Answers the case `packet_id` of the caller's organisation with the
    /// reply case `body` (JSON, [`ReplySubmission`]): queued, denied, or
    /// the first answer again for a repeated idempotency key.
    #[tracing::instrument(name = "reply", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn reply_to_case(&self, principal: &Authorized<Recipients>, packet_id: &str, body: &str) -> Result<Submitted, AppError> {
        let now = self.now();
        let (item, claims) = self.visible_item(principal, packet_id).await?;
        tracing::Span::current().record("packet_id", tracing::field::display(item.packet_id.as_str()));
        let reply = ReplySubmission::parse(body, now).map_err(submission_problem)?;
        let directory = self.directory();
        // Only an organisation the directory lists behind the gateway that sent the request.
        let listed_there = |org: &&crate::domain::OrgId| directory.recipient(org).is_some_and(|r| r.country == claims.issuer);
        let requested_by = claims.requested_by.as_ref().filter(listed_there);
        let named = reply.to.as_ref().filter(listed_there);
        if reply.to.is_some() && named.is_none() {
            return Err(self.reply_not_possible(principal, &item.packet_id, ReplyNotPossible::NotTheRequester, now).await?);
        }
        let request = HeldRequest {
            purpose: claims.purpose,
            sealed_end_to_end: claims.is_end_to_end(),
            onward_copy: item.onward.is_some(),
            requested_by,
        };
        let destination = match reply_target(&request, reply.purpose.purpose(), named) {
            Ok(org) => org.clone(),
            Err(refusal) => return Err(self.reply_not_possible(principal, &item.packet_id, refusal, now).await?),
        };
        self.accept(principal, reply.into_referral(destination), Some(&item.packet_id), now).await
    }

    /// A reply refused before any decision: audited, nothing recorded.
    async fn reply_not_possible(&self, principal: &Authorized<Recipients>, packet_id: &str, refusal: ReplyNotPossible, now: chrono::DateTime<chrono::Utc>) -> Result<AppError, AppError> {
        let event = AuditEvent::new(now, principal.actor(), Action::ReferralSubmit, "reply_not_possible").referral(packet_id).reasons([refusal.as_str()]);
        self.audit(event).await?;
        Ok(AppError::ReplyNotPossible(refusal))
    }
}
