//! The recipient organisation passes a case it holds on to another
//! organisation in its own country (issue 21 §3): this gateway decides it
//! under the limits that came with the case and its own DPO's policy,
//! minimises, and lists the copy to the onward organisation (or pushes it
//! to its webhook) like any case; the original sender is told, as codes.
//!
//! A copy is a case of its own in the inbox, linked to the case it was
//! passed on from: a withdrawal or erasure of that case reaches it (see
//! screening), and what the onward organisation does with it goes back to
//! the original sender as `onward` movements (see `answer_back`). A copy
//! carries no limits: it is never passed on further.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::app::access::{Authorized, Recipients};
use crate::app::{new_id, AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::crypto::packet::{PacketClaims, PacketType};
use crate::domain::lifecycle::InboxState;
use crate::domain::onward::{decide_onward, OnwardAsk, OnwardMovement, OnwardRefusal, OnwardStep};
use crate::domain::status::ReferralProgress;
use crate::domain::submission::{looks_like_field_name, FieldProblem};
use crate::domain::{DataCategory, OrgId, Purpose};
use crate::store::{InboxChange, InboxItem, InboxMove, NewInboxEntry, NewOnwardCopy, OnwardCopyOf, StoredRetention, Write, Written};

/// Times a copy is numbered again when another took its number meanwhile.
const NUMBERING_ATTEMPTS: usize = 3;

impl Gateway {
    /// Passes the case `packet_id` of the caller's organisation on, as
    /// `request` asks: the copy made (`created`), or the one made before
    /// for the same organisation and still held (a retry gets it back).
    #[tracing::instrument(name = "refer_onward", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn refer_onward(&self, principal: &Authorized<Recipients>, packet_id: &str, request: OnwardReferralRequest) -> Result<OnwardReferred, AppError> {
        let (item, claims) = self.visible_item(principal, packet_id).await?;
        let now = self.now();
        let onward = self.directory().recipient(&request.recipient);
        if let Some(copy) = self.copy_held_by(&item, &request.recipient).await? {
            return self.made_before(principal, &item, &copy, now).await;
        }
        let referred_by = self.directory().recipient(&claims.recipient);
        let decided = match &referred_by {
            // The organisation holding the case left the directory: nothing to decide for.
            None => Err(OnwardRefusal::UnknownOrganisation),
            Some(_) if claims.is_end_to_end() => Err(OnwardRefusal::SealedEndToEnd),
            // A copy came without limits: it is never passed on again.
            Some(_) if item.onward.is_some() => Err(OnwardRefusal::NotConsented),
            Some(referred_by) => {
                let ask = OnwardAsk {
                    limits: claims.onward.as_ref(),
                    purpose: request.purpose,
                    onward: onward.as_ref(),
                    referred_by,
                    here: self.country,
                    sender: claims.issuer,
                    body: &claims.body,
                    requested: request.categories.as_ref(),
                };
                decide_onward(&ask, &self.policy().policy, now)
            }
        };
        let copy = match decided {
            Ok(copy) => copy,
            // Told to the sender only about an onward organisation asked for by one the directory still lists.
            Err(refusal) => {
                let kind = onward.as_ref().map(|o| o.kind).filter(|_| referred_by.is_some());
                return Err(self.refuse_onward(principal, &item, kind, refusal, now).await?);
            }
        };
        let onward = onward.ok_or_else(|| AppError::Internal("an onward organisation decided on but unknown".to_owned()))?;
        let held_until = item.retention.ok_or_else(|| AppError::Internal("a visible case without retention".to_owned()))?;
        // Kept no longer than the case is here, nor past what let it go on.
        let retention = StoredRetention { until_ms: held_until.until_ms.min(copy.until.timestamp_millis()), ..held_until };
        let copy_id = new_id()?;
        let copy_claims = PacketClaims {
            packet_id: copy_id.clone(),
            audience: self.country,
            recipient: onward.id.clone(),
            purpose: Some(request.purpose),
            consent_expires_at: Some(claims.consent_expires_at.map_or(copy.until, |end| end.min(copy.until))),
            retention_until: DateTime::<Utc>::from_timestamp_millis(retention.until_ms).or(claims.retention_until),
            handover: false,
            onward: None,
            body: copy.body,
            // A copy is never answered as the request itself, nor a reply's link.
            requested_by: None,
            answers: None,
            ..claims
        };
        let plaintext = serde_json::to_vec(&copy_claims).map_err(|e| AppError::Internal(e.to_string()))?;
        let case_key = self.vault.new_case_key(now.timestamp_millis()).await?;
        let sealed = self.vault.seal(&case_key, &plaintext, copy_id.as_bytes())?;
        let queue = self.inbox_queue(Some(copy_claims.priority), now);
        let pushed = self.takes_webhook_pushes(&onward.id);
        let categories: Vec<DataCategory> = copy.categories.iter().copied().collect();
        for _ in 0..NUMBERING_ATTEMPTS {
            let number = self.store.onward_copies(&item.packet_id).await?.iter().filter_map(|c| c.onward.as_ref()).map(|c| c.number).max().unwrap_or(0) + 1;
            let of = OnwardCopyOf { parent: item.packet_id.clone(), number, kind: onward.kind, referred_by: claims.recipient.to_string() };
            let movement = OnwardMovement { copy: Some(number), kind: onward.kind, step: OnwardStep::Referred, reason: None };
            let reply = self.status_reply(&item, ReferralProgress::Onward, movement.reason_codes(), now)?;
            let entry = NewInboxEntry {
                packet_id: copy_id.clone(),
                issuer: item.issuer.clone(),
                packet_sha256: String::new(),
                packet_type: PacketType::Referral.as_str().to_owned(),
                recipient_org: onward.id.to_string(),
                claims: sealed.clone(),
                receipt: None,
                received_ms: now.timestamp_millis(),
                expires_ms: self.delivery_deadline(now, None).timestamp_millis(),
            };
            let forward = InboxChange {
                packet_id: copy_id.clone(),
                from: InboxState::Received,
                step: InboxMove::Forward { pushed, retention, reseal: None, queue, answers: None },
                at_ms: now.timestamp_millis(),
            };
            // Who received what of which case: the copy, the case, the organisation, the categories.
            let audit = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, "referred_onward")
                .referral(&copy_id)
                .reasons([format!("onward_of:{}", item.packet_id), format!("to:{}", onward.id), format!("onward_{number}")].into_iter().chain(categories.iter().map(|c| c.as_str().to_owned())));
            let parent_key_id = item.claims.key_id.clone();
            let write = Write::ReferOnward { copy: Box::new(NewOnwardCopy { entry, of, parent_key_id, forward, reply }), audit };
            match self.writer.write(write).await? {
                // Another copy of the case took the number meanwhile.
                Written::DuplicateKey => continue,
                // The organisation got a copy meanwhile: that one is its answer.
                Written::KnownPacket => {
                    let copy = self.copy_held_by(&item, &onward.id).await?.ok_or(AppError::Contended)?;
                    return self.made_before(principal, &item, &copy, now).await;
                }
                // A withdrawal cut or erased the case meanwhile: decided on what it was, so nothing goes.
                Written::AlreadySettled => return Err(AppError::Contended),
                _ => {}
            }
            self.wake_delivery();
            if pushed {
                self.wake_pushing();
            }
            tracing::Span::current().record("packet_id", tracing::field::display(item.packet_id.as_str()));
            return Ok(OnwardReferred {
                packet_id: copy_id,
                referred_from: item.packet_id,
                recipient: onward.id,
                purpose: request.purpose,
                categories: categories.iter().map(|c| c.as_str().to_owned()).collect(),
                onward_copy: number,
                state: if pushed { InboxState::Pushing } else { InboxState::Available },
                created: true,
            });
        }
        Err(AppError::Contended)
    }

    /// The live copy of `item` that `org` holds, if any.
    async fn copy_held_by(&self, item: &InboxItem, org: &OrgId) -> Result<Option<InboxItem>, AppError> {
        Ok(self.store.onward_copies(&item.packet_id).await?.into_iter().find(|copy| copy.recipient_org == org.as_str() && copy.state.is_live()))
    }

    /// The answer for a copy made before for the same organisation.
    async fn made_before(&self, principal: &Authorized<Recipients>, item: &InboxItem, copy: &InboxItem, now: DateTime<Utc>) -> Result<OnwardReferred, AppError> {
        let claims = self.opened_claims(copy).await?;
        let of = copy.onward.as_ref().ok_or_else(|| AppError::Internal("an onward copy without its case".to_owned()))?;
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, "replayed").referral(&copy.packet_id).reasons([format!("onward_of:{}", item.packet_id)]);
        self.audit(event).await?;
        Ok(OnwardReferred {
            packet_id: copy.packet_id.clone(),
            referred_from: item.packet_id.clone(),
            recipient: claims.recipient,
            purpose: claims.purpose.ok_or_else(|| AppError::Internal("an onward copy without its purpose".to_owned()))?,
            categories: claims.body.as_object().map(|body| body.keys().cloned().collect()).unwrap_or_default(),
            onward_copy: of.number,
            state: copy.state.shown(),
            created: false,
        })
    }

    /// A refused onward referral: audited, and told to the original sender
    /// (as the onward organisation's kind and the refusal's code, once per
    /// kind and code) when the organisation is known and not the case's own
    /// recipient, and the case is not a copy (whose sender knows nothing of
    /// it: its movements go back only as those of the case it came from).
    async fn refuse_onward(
        &self,
        principal: &Authorized<Recipients>,
        item: &InboxItem,
        kind: Option<crate::domain::RecipientKind>,
        refusal: OnwardRefusal,
        now: DateTime<Utc>,
    ) -> Result<AppError, AppError> {
        let audit = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, "onward_refused").referral(&item.packet_id).reasons([refusal.code()]);
        match kind.filter(|_| refusal != OnwardRefusal::SameOrganisation && item.onward.is_none()) {
            Some(kind) => {
                let movement = OnwardMovement { copy: None, kind, step: OnwardStep::Refused, reason: Some(refusal.code().to_owned()) };
                let reply = self.status_reply(item, ReferralProgress::Onward, movement.reason_codes(), now)?;
                let told = format!("{}:{}", kind.as_str(), refusal.code());
                self.writer.write(Write::OnwardRefused { packet_id: item.packet_id.clone(), told, reply: Box::new(reply), audit }).await?;
                self.wake_delivery();
            }
            None => self.audit(audit).await?,
        }
        Ok(AppError::OnwardRefused(refusal))
    }
}

/// `POST /v1/inbox/{packet_id}/refer-onward`: pass the case on.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "OnwardReferral", deny_unknown_fields)]
pub struct OnwardReferralRequest {
    /// The organisation to pass it to: one in the directory, in this gateway's country.
    pub recipient: OrgId,
    /// What the onward organisation is to do.
    pub purpose: Purpose,
    /// Only these categories (each must be one that may go); absent: all
    /// that may go and that the purpose needs.
    pub categories: Option<BTreeSet<DataCategory>>,
}

impl OnwardReferralRequest {
    /// Reads an onward referral; problems name the field, never its value.
    pub fn parse(body: &Value) -> Result<Self, AppError> {
        let Some(fields) = body.as_object() else {
            return Err(AppError::invalid_field("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = fields.keys().find(|k| !["recipient", "purpose", "categories"].contains(&k.as_str())) {
            let field = if looks_like_field_name(unknown) { unknown.clone() } else { "(field)".to_owned() };
            return Err(AppError::Invalid(vec![FieldProblem { field, problem: "is not a field of an onward referral".to_owned() }]));
        }
        let recipient = fields
            .get("recipient")
            .and_then(Value::as_str)
            .and_then(|id| OrgId::parse(id).ok())
            .ok_or_else(|| AppError::invalid_field("recipient", "must be an organisation id of the directory"))?;
        let purpose = fields
            .get("purpose")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                let known: Vec<&str> = Purpose::ALL.iter().map(|p| p.as_str()).collect();
                AppError::invalid_field("purpose", &format!("must be one of {}", known.join(", ")))
            })?;
        let categories = match fields.get("categories") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let named: BTreeSet<DataCategory> = serde_json::from_value(value.clone())
                    .ok()
                    .filter(|named: &BTreeSet<DataCategory>| !named.is_empty())
                    .ok_or_else(|| AppError::invalid_field("categories", "must be a non-empty list of data categories"))?;
                Some(named)
            }
        };
        Ok(Self { recipient, purpose, categories })
    }
}

/// The answer to an onward referral: the copy listed (or pushed) to the
/// onward organisation. `201` when made now, `200` for one made before for
/// the same organisation and still held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OnwardReferred {
    /// The copy's id in the onward organisation's inbox.
    pub packet_id: String,
    /// The case it was passed on from.
    pub referred_from: String,
    pub recipient: OrgId,
    pub purpose: Purpose,
    /// The categories passed on, each cut to what the purpose needs.
    pub categories: Vec<String>,
    /// Its number among the copies of the case: the original sender's
    /// timeline names it `onward_<n>`.
    pub onward_copy: u32,
    /// `available` (listed), `pushing` (to the organisation's webhook), or
    /// where it stands now.
    pub state: InboxState,
    #[serde(skip)]
    pub created: bool,
}
