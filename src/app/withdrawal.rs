//! Consent withdrawn at the sending gateway: the case key is destroyed
//! first (the payload, in every copy of the database, is erased at that
//! moment), then delivery stops and, if a packet may have reached the peer, a
//! `withdrawal` packet is queued so that the peer erases its copy too.

use serde_json::{json, Value};

use super::{new_id, AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::auth::{Principal, Role};
use crate::crypto::case_keys::is_case_key_id;
use crate::domain::submission::FieldProblem;
use crate::store::{NewWithdrawal, SealedPayload, Write, Written};

impl Gateway {
    /// Withdraws the person's consent for a whole referral the caller's organisation sent.
    pub async fn withdraw_consent(&self, principal: &Principal, referral_id: &str, body: &Value) -> Result<Value, AppError> {
        self.require(principal, &[Role::Submitter]).await?;
        whole_withdrawal_only(body)?;
        let now = self.now();
        let Some(referral) = self.store.referral(referral_id).await?.filter(|r| r.sender_org == principal.org.as_str()) else {
            self.audit(AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        self.withdraw_one(principal, referral_id, referral.subject_key).await
    }

    /// Withdraws the person's consent for every referral about them that the
    /// caller's organisation sent; one answer per referral, oldest first.
    pub async fn withdraw_subject_consent(&self, principal: &Principal, subject_ref: &str, body: &Value) -> Result<Value, AppError> {
        self.require(principal, &[Role::Submitter]).await?;
        whole_withdrawal_only(body)?;
        let subject_key = self.subject_key(subject_ref);
        let mut answers = Vec::new();
        for referral in self.store.subject_referrals(&subject_key).await? {
            // A denied referral sent nothing and holds no payload: nothing to withdraw.
            if referral.sender_org == principal.org.as_str() && referral.outcome == "allow" {
                answers.push(self.withdraw_one(principal, &referral.referral_id, subject_key.clone()).await?);
            }
        }
        if answers.is_empty() {
            // Nothing this organisation sent about that person; audited, as a referral not found is.
            self.audit(AuditEvent::new(self.now(), principal.actor(), Action::ConsentWithdraw, "not_found").subject_key(subject_key)).await?;
        }
        Ok(json!({ "subject_ref": subject_ref, "referrals": answers }))
    }

    async fn withdraw_one(&self, principal: &Principal, referral_id: &str, subject_key: String) -> Result<Value, AppError> {
        let now = self.now();
        // Keys first: should anything below fail, the payload is already
        // unreadable, and a retry of this request finishes the rest.
        if let Some(payload) = self.store.sealed_payload(referral_id).await?
            && is_case_key_id(&payload.key_id)
        {
            self.vault.destroy(&[payload.key_id]).await?;
        }
        let packet_id = new_id()?;
        let withdrawal = NewWithdrawal {
            payload: SealedPayload { sealed: self.keys().seal(b"{}", packet_id.as_bytes())?, key_id: self.keys().data_key_id() },
            deadline_ms: self.delivery_deadline(now, None).timestamp_millis(),
            packet_id,
        };
        let audit = AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "withdrawn").referral(referral_id).subject_key(subject_key);
        let write = Write::Withdraw { referral_id: referral_id.to_owned(), withdrawal, at_ms: now.timestamp_millis(), audit };
        match self.writer.write(write).await? {
            Written::Withdrawn { peer_notified, .. } => {
                if peer_notified {
                    self.wake_delivery();
                }
                Ok(json!({ "referral_id": referral_id, "status": "withdrawn", "peer_notified": peer_notified }))
            }
            // Withdrawn before: the same answer, without repeating what was done.
            _ => {
                self.audit(AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "already_withdrawn").referral(referral_id)).await?;
                Ok(json!({ "referral_id": referral_id, "status": "withdrawn" }))
            }
        }
    }
}

/// Narrowing a consent (some categories, purposes or recipients) comes later: the body must be `{}`.
fn whole_withdrawal_only(body: &Value) -> Result<(), AppError> {
    if body.as_object().is_some_and(serde_json::Map::is_empty) {
        return Ok(());
    }
    Err(AppError::Invalid(vec![FieldProblem {
        field: "(body)".to_owned(),
        problem: "must be {}: consent is withdrawn for the whole referral".to_owned(),
    }]))
}
