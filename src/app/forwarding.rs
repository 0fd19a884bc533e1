//! What happens to a received packet: a referral is screened by this
//! gateway's own rules and either made available to its recipient or
//! refused (a `refused` status goes back; the recipient learns nothing); a
//! status is applied to the referral this gateway sent. Recipients then
//! list, read and acknowledge their cases and report progress, each report
//! sealed as a status packet back to the sending gateway.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::access::{Authorized, Recipients};
use super::referrals::{millis_to_rfc3339, retention_deadline, stored_retention};
use super::{new_id, AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::auth::Principal;
use crate::crypto::packet::{PacketClaims, PacketType};
use crate::domain::decision::ReasonCode;
use crate::domain::OrgId;
use crate::domain::inbound::{screen, screen_routing, Received, Screening};
use crate::domain::retention::RetentionDeadline;
use crate::domain::status::{is_reason_code, ReferralProgress, StatusReport};
use crate::domain::submission::FieldProblem;
use crate::domain::lifecycle::{InboxEvent, InboxState, ReferralEvent};
use crate::domain::withdrawal::{ErasedBy, ErasureNotice, WithdrawalNotice};
use crate::directory::Delivery;
use crate::store::{
    InboxChange, InboxItem, InboxMove, NewReply, ReceivedNarrowing, SealedPayload, SealedWithdrawal, StoredRetention, Tombstone, WithdrawalEffect,
    WithdrawnPart, Write, Written,
};

/// Most reason codes a status report may carry.
const MAX_REASON_CODES: usize = 16;

/// The reasons of a refusal as this gateway records and returns them. The
/// asylum rules are named only as a rule nobody can switch off: a refusal
/// naming the asylum firewall, kept at a gateway of the person's country of
/// origin, would itself tell that gateway's operators the person sought asylum.
fn recorded_reasons(reasons: &std::collections::BTreeSet<ReasonCode>) -> Vec<String> {
    let recorded: std::collections::BTreeSet<&str> = reasons
        .iter()
        .map(|r| match r {
            ReasonCode::AsylumFirewall | ReasonCode::AsylumCategoryToOriginState => "non_negotiable_rule",
            other => other.as_str(),
        })
        .collect();
    recorded.into_iter().map(str::to_owned).collect()
}

/// Most inbox entries listed per page.
pub const MAX_INBOX_PAGE: i64 = 100;

impl Gateway {
    /// Processes received packets still waiting; returns how many moved on.
    /// Their moves are committed together, in the order they arrived.
    #[tracing::instrument(name = "inbox_round", skip_all)]
    pub async fn process_inbox(&self, limit: i64) -> Result<usize, AppError> {
        let mut moves = Vec::new();
        let items = self.store.unprocessed_inbox(limit).await?;
        let opened = self.opened_claims_all(&items).await?;
        // A referral withdrawn by a packet of this same round waits for the
        // next one: decisions here are made before any of the round's writes,
        // so it is screened once the withdrawal's tombstone is committed.
        let withdrawn_now: std::collections::HashSet<String> = items
            .iter()
            .zip(&opened)
            .filter(|(item, _)| item.packet_type == PacketType::Withdrawal.as_str())
            .filter_map(|(_, claims)| claims.as_ref().ok())
            .filter_map(withdrawal_notice)
            .map(|notice| notice.in_reply_to)
            .collect();
        for (item, claims) in items.iter().zip(opened) {
            if item.packet_type == PacketType::Referral.as_str() && withdrawn_now.contains(&item.packet_id) {
                continue;
            }
            match self.next_move(item, claims).await {
                Ok(write) => moves.push(write),
                // Left `received`: tried again on the next round.
                Err(error) => tracing::error!(%error, packet_id = item.packet_id, "processing a received packet failed"),
            }
        }
        // A refused case is blanked by its move; its key goes first, so that
        // nothing of it stays readable in any copy of the database.
        let refused_keys: Vec<String> = moves
            .iter()
            .filter_map(|write| match write {
                Write::InboxMove { change, .. } if matches!(change.step, InboxMove::Refuse { .. }) => items.iter().find(|i| i.packet_id == change.packet_id),
                _ => None,
            })
            .map(|item| item.claims.key_id.clone())
            .collect();
        self.vault.destroy(&refused_keys).await?;
        let mut moved = 0;
        for written in self.writer.write_all(moves).await {
            match written {
                Ok(Written::AlreadySettled) => {}
                Ok(_) => moved += 1,
                Err(error) => tracing::error!(%error, "recording a received packet's next state failed; it stays received"),
            }
        }
        if moved > 0 {
            self.wake_delivery();
            self.wake_pushing();
        }
        Ok(moved)
    }

    /// Whether the directory has `org` take its cases by webhook push.
    pub(super) fn takes_webhook_pushes(&self, org: &OrgId) -> bool {
        self.directory().organisation(org).is_some_and(|o| matches!(o.delivery, Delivery::Webhook { .. }))
    }

    /// Where a received packet goes next, and the audit of that move.
    #[tracing::instrument(name = "screen", skip_all, fields(packet_id = %item.packet_id, packet_type = %item.packet_type))]
    async fn next_move(&self, item: &InboxItem, claims: Result<PacketClaims, AppError>) -> Result<Write, AppError> {
        let now = self.now();
        let Ok(claims) = claims else {
            // Never readable again (a data key gone, say): set aside, so that it holds up nothing behind it.
            let change = self.inbox_move(item, refusal(&["claims_unreadable"]), now);
            let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
            let event = AuditEvent::new(now, actor, Action::PacketScreen, InboxState::Refused.as_str()).referral(&item.packet_id).reasons(["claims_unreadable"]);
            return Ok(Write::InboxMove { change: Box::new(change), audit: event });
        };
        let gateway_actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let change = match claims.packet_type {
            PacketType::Referral => {
                let mut claims = claims;
                // Withdrawn before it arrived, whole or in part: erased or cut down on
                // arrival, so that its recipient never sees what was withdrawn.
                let sealed = claims.is_end_to_end();
                let (cut, whole) = match self.store.withdrawn_part(&item.packet_id, &item.issuer).await? {
                    None => (false, false),
                    Some(WithdrawnPart::Whole) => (true, true),
                    // Out of this gateway's reach: its organisation applies the withdrawal.
                    Some(WithdrawnPart::Categories(_)) if sealed => (false, false),
                    Some(WithdrawnPart::Categories(names)) => {
                        remove_categories(&mut claims.body, &names);
                        (true, body_is_empty(&claims.body))
                    }
                };
                if whole {
                    self.vault.destroy(std::slice::from_ref(&item.claims.key_id)).await?;
                    let change = self.inbox_move(item, refusal(&["consent_withdrawn"]), now);
                    let event = AuditEvent::new(now, gateway_actor, Action::PacketScreen, InboxState::Refused.as_str()).referral(&item.packet_id).reasons(change.step.reasons().to_vec());
                    return Ok(Write::InboxMove { change: Box::new(change), audit: event });
                }
                let recipient = self.directory().recipient(&claims.recipient);
                let screening = match claims.purpose {
                    // The sending gateway's decision is final: nothing here can read the case.
                    _ if sealed => screen_routing(recipient.as_ref(), self.country),
                    Some(purpose) => {
                        let received = Received {
                            sender: claims.issuer,
                            purpose,
                            body: &claims.body,
                            consent_expires_at: claims.consent_expires_at,
                            retention_until: claims.retention_until,
                        };
                        screen(&received, recipient.as_ref(), self.country, &self.policy().policy, now)
                    }
                    None => Screening::Refuse([crate::domain::decision::ReasonCode::PayloadUnreadable].into()),
                };
                match screening {
                    Screening::Forward => {
                        let pushed = self.takes_webhook_pushes(&claims.recipient);
                        let reseal = if cut { Some(self.recut(item, &claims, now).await?) } else { None };
                        let retention = stored_retention(self.received_retention(&claims, recipient.as_ref(), item));
                        self.inbox_move(item, InboxMove::Forward { pushed, retention, reseal }, now)
                    }
                    Screening::Refuse(reasons) => {
                        let reasons = recorded_reasons(&reasons);
                        let reply = self.status_reply(item, ReferralProgress::Refused, reasons.clone(), now)?;
                        self.inbox_move(item, InboxMove::Refuse { reasons, reply: Some(reply) }, now)
                    }
                }
            }
            PacketType::Status => {
                // Codes only cross a border: a report carrying anything else is not applied.
                let report: Option<StatusReport> = serde_json::from_value(claims.body.clone())
                    .ok()
                    .filter(|r: &StatusReport| r.reason_codes.len() <= MAX_REASON_CODES && r.reason_codes.iter().all(|c| is_reason_code(c)));
                let sent = match &report {
                    Some(report) => self.store.sent_packet(&report.in_reply_to).await?,
                    None => None,
                };
                // Only the gateway the referral went to may report on it.
                let about = sent.filter(|s| s.destination_country == claims.issuer.as_str()).and_then(|s| s.referral_id);
                match (report, about) {
                    (Some(report), Some(referral_id)) => {
                        let mut events = vec![ReferralEvent::from(report.status)];
                        // The recipient accepted a handover: case management is now theirs.
                        if report.status == ReferralProgress::Accepted && self.store.referral(&referral_id).await?.is_some_and(|r| r.handover) {
                            events.push(ReferralEvent::Handover);
                        }
                        // Closed: the closure rule the referral was accepted under brings its deadline forward.
                        let retention_until_ms = match report.status {
                            ReferralProgress::Closed => self.store.referral_retention(&referral_id).await?.and_then(|kept| closed_deadline(kept, now)),
                            _ => None,
                        };
                        let applied = InboxMove::ApplyToReferral { referral_id, events, reasons: report.reason_codes, retention_until_ms };
                        self.inbox_move(item, applied, now)
                    }
                    (None, _) => self.inbox_move(item, refusal(&["status_unreadable"]), now),
                    (Some(_), None) => self.inbox_move(item, refusal(&["status_about_unknown_referral"]), now),
                }
            }
            PacketType::Withdrawal => {
                // A sealed one names no categories here, by design; a readable one names at least one, or none for a whole withdrawal.
                let notice = withdrawal_notice(&claims).filter(|notice| claims.is_end_to_end() || notice.is_well_formed());
                let target = match &notice {
                    Some(notice) => self.store.inbox_item(&notice.in_reply_to).await?,
                    None => None,
                };
                // Only the gateway that sent a case may withdraw it. (A packet id not
                // held here may be on its way: its tombstone is kept under this issuer.)
                let foreign = target.as_ref().is_some_and(|t| t.issuer != claims.issuer.as_str() || t.packet_type != PacketType::Referral.as_str());
                match notice {
                    Some(_) if foreign => self.inbox_move(item, refusal(&["withdrawal_not_from_sender"]), now),
                    Some(notice) => {
                        let names = notice.categories.as_ref().map(|c| c.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>());
                        // A partial withdrawal sealed end to end names categories this gateway
                        // cannot read, of a case it cannot read: it hands the withdrawal to the
                        // organisation with the case, and names it, not them, when confirming.
                        let opaque = names.as_ref().is_some_and(Vec::is_empty);
                        // Held or not (the withdrawal may have overtaken its packet),
                        // nothing withdrawn is readable here now: that is what is confirmed.
                        let erased = ErasureNotice {
                            in_reply_to: notice.in_reply_to.clone(),
                            erased_by: ErasedBy::Gateway,
                            categories: notice.categories.clone().filter(|_| !opaque),
                            withdrawals: opaque.then(|| [item.packet_id.clone()].into()),
                        };
                        let reply = self.reply(item, PacketType::ErasureConfirmation, &erased, now)?;
                        let (effect, handed_over) = match target {
                            _ if opaque => self.hand_over_withdrawal(target.as_ref(), &item.packet_id, now).await?,
                            Some(target) => (self.erase_withdrawn(&target, names.as_deref(), now).await?, false),
                            None => (None, false),
                        };
                        let tombstone = Tombstone {
                            withdrawal_id: item.packet_id.clone(),
                            packet_id: notice.in_reply_to,
                            issuer: claims.issuer.to_string(),
                            categories: names.clone(),
                            end_to_end: claims.end_to_end.clone().filter(|_| handed_over),
                        };
                        let applied = InboxMove::ApplyWithdrawal { categories: names.unwrap_or_default(), reply, tombstone, effect };
                        self.inbox_move(item, applied, now)
                    }
                    None => self.inbox_move(item, refusal(&["withdrawal_unreadable"]), now),
                }
            }
            PacketType::ErasureConfirmation => {
                // A partial confirmation names its part one way, and not emptily.
                let notice = serde_json::from_value::<ErasureNotice>(claims.body.clone()).ok().filter(ErasureNotice::is_well_formed);
                let sent = match &notice {
                    Some(notice) => self.store.sent_packet(&notice.in_reply_to).await?,
                    None => None,
                };
                // Only the gateway the referral went to may confirm its erasure.
                let about = sent.filter(|s| s.destination_country == claims.issuer.as_str()).and_then(|s| s.referral_id);
                // Only a referral whose consent was withdrawn (whole, or the part confirmed) can have been erased on request.
                let withdrawn = match (&about, &notice) {
                    (Some(referral_id), Some(notice)) if notice.is_partial() => {
                        self.store.timeline(referral_id).await?.iter().any(|entry| entry.status == ReferralEvent::ConsentNarrowed)
                    }
                    (Some(referral_id), Some(_)) => self
                        .store
                        .referral(referral_id)
                        .await?
                        .is_some_and(|r| r.status.is_withdrawn_whole()),
                    _ => false,
                };
                // The categories confirmed: named, or (for a case sealed end to end) those of the withdrawals named.
                let confirmed = match (&notice, &about) {
                    (Some(ErasureNotice { withdrawals: Some(ids), in_reply_to, .. }), Some(referral_id)) if withdrawn => {
                        self.categories_withdrawn_by(referral_id, in_reply_to, ids, claims.issuer.as_str()).await?
                    }
                    (Some(notice), _) => Some(notice.categories.iter().flatten().map(|c| c.as_str().to_owned()).collect()),
                    (None, _) => None,
                };
                match (notice, about, confirmed) {
                    (Some(notice), Some(referral_id), Some(categories)) if withdrawn => {
                        let events = vec![notice.erased_by.timeline_status(notice.is_partial())];
                        self.inbox_move(item, InboxMove::ApplyToReferral { referral_id, events, reasons: categories, retention_until_ms: None }, now)
                    }
                    (Some(_), Some(_), _) if !withdrawn => self.inbox_move(item, refusal(&["erasure_confirmation_without_withdrawal"]), now),
                    (Some(_), Some(_), _) => self.inbox_move(item, refusal(&["erasure_confirmation_about_unknown_withdrawal"]), now),
                    (None, _, _) => self.inbox_move(item, refusal(&["erasure_confirmation_unreadable"]), now),
                    (Some(_), None, _) => self.inbox_move(item, refusal(&["erasure_confirmation_about_unknown_referral"]), now),
                }
            }
        };
        // Named by the state it leads to: `refused`, `available`, `pushing` or `applied`.
        let outcome = change.to().map_or("unchanged", InboxState::as_str);
        tracing::debug!(outcome, "received packet screened");
        let mut event = AuditEvent::new(now, gateway_actor, Action::PacketScreen, outcome).referral(&item.packet_id).reasons(change.step.reasons().to_vec());
        if let InboxMove::ApplyToReferral { referral_id, .. } = &change.step {
            event = event.referral(referral_id);
        }
        Ok(Write::InboxMove { change: Box::new(change), audit: event })
    }

    /// What this gateway holds of a received packet, as its own operators
    /// could read it with every key it has: its row's routing facts and its
    /// stored claims, an end-to-end envelope shown only by its size. `None`
    /// for an unknown packet. For operators and the demo; not an API route.
    pub async fn routing_view(&self, packet_id: &str) -> Result<Option<Value>, AppError> {
        let Some(item) = self.store.inbox_item(packet_id).await? else {
            return Ok(None);
        };
        let mut claims = serde_json::to_value(self.opened_claims(&item).await?).map_err(|e| AppError::Internal(e.to_string()))?;
        if let Some(sealed) = claims.get_mut("end_to_end") {
            let size = sealed.as_str().map_or(0, str::len);
            *sealed = json!(format!("<{size} bytes sealed to the organisation>"));
        }
        Ok(Some(json!({
            "row": { "packet_id": item.packet_id, "issuer": item.issuer, "type": item.packet_type, "recipient": item.recipient_org, "state": item.state },
            "claims": claims,
        })))
    }

    /// The claims of each item, opened with one read of the case-key store.
    async fn opened_claims_all(&self, items: &[InboxItem]) -> Result<Vec<Result<PacketClaims, AppError>>, AppError> {
        let sealed: Vec<(&[u8], &[u8])> = items.iter().map(|item| (item.claims.sealed.as_slice(), item.packet_id.as_bytes())).collect();
        Ok(self
            .vault
            .open_all(&sealed)
            .await?
            .into_iter()
            .map(|plaintext| serde_json::from_slice(&plaintext?).map_err(|_| AppError::Internal("inbox entry holds unreadable claims".to_owned())))
            .collect())
    }

    pub(super) async fn opened_claims(&self, item: &InboxItem) -> Result<PacketClaims, AppError> {
        let plaintext = self.vault.open(&item.claims.sealed, item.packet_id.as_bytes()).await?;
        serde_json::from_slice(&plaintext).map_err(|_| AppError::Internal("inbox entry holds unreadable claims".to_owned()))
    }

    /// Erases from `target` what a withdrawal withdraws: all of it (`names`
    /// `None`), or those categories; the key that held them is destroyed
    /// first. What is left to do to the case in the store, if anything.
    async fn erase_withdrawn(&self, target: &InboxItem, names: Option<&[String]>, now: DateTime<Utc>) -> Result<Option<WithdrawalEffect>, AppError> {
        let pushed = OrgId::parse(&target.recipient_org).ok().is_some_and(|org| self.takes_webhook_pushes(&org));
        let notice_until_ms = self.delivery_deadline(now, None).timestamp_millis();
        if let Some(names) = names {
            // Not screened yet (it waits for this round's tombstone, which cuts it
            // on arrival); or refused, erased, undeliverable: nothing of it is
            // shown, and its key, if still there, goes.
            if target.state == InboxState::Received {
                return Ok(None);
            }
            if !target.state.is_live() {
                self.vault.destroy(std::slice::from_ref(&target.claims.key_id)).await?;
                return Ok(None);
            }
            let mut claims = match self.opened_claims(target).await {
                Ok(claims) => claims,
                Err(AppError::Erased) => return Ok(None),
                Err(error) => return Err(error),
            };
            remove_categories(&mut claims.body, names);
            if !body_is_empty(&claims.body) {
                let mut categories: std::collections::BTreeSet<String> = target.narrowed.iter().cloned().collect();
                categories.extend(names.iter().cloned());
                let narrowing = ReceivedNarrowing {
                    packet_id: target.packet_id.clone(),
                    claims: self.recut(target, &claims, now).await?,
                    categories: categories.into_iter().collect(),
                    pushed,
                };
                return Ok(Some(WithdrawalEffect::Narrow { narrowing, notice_until_ms }));
            }
            // Nothing left once they are gone: the case is erased whole.
        }
        // Keys first: the case is erased the moment its key is gone.
        self.vault.destroy(std::slice::from_ref(&target.claims.key_id)).await?;
        Ok(Some(WithdrawalEffect::Erase { packet_id: target.packet_id.clone(), pushed, notice_until_ms }))
    }

    /// A partial withdrawal sealed end to end, of a case sealed end to end:
    /// the case is listed again (or its webhook recipient pushed a notice)
    /// with the withdrawal, whose envelope is kept beside it (its tombstone)
    /// and handed over with it; the organisation cuts what it names. What is
    /// to be done to the case, and whether the envelope is to be kept: for a
    /// live sealed case, and for one not held or not screened yet (it gets
    /// it when it is); not for one no longer live, nor for a case this
    /// gateway can read (no organisation is waiting for a sealed withdrawal of it).
    async fn hand_over_withdrawal(
        &self,
        target: Option<&InboxItem>,
        withdrawal_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Option<WithdrawalEffect>, bool), AppError> {
        let target = match target {
            None => return Ok((None, true)),
            Some(target) if target.state == InboxState::Received => return Ok((None, true)),
            Some(target) if !target.state.is_live() => return Ok((None, false)),
            Some(target) => target,
        };
        let sealed = match self.opened_claims(target).await {
            Ok(claims) => claims.is_end_to_end(),
            Err(AppError::Erased) => false,
            Err(error) => return Err(error),
        };
        if !sealed {
            return Ok((None, false));
        }
        let pushed = OrgId::parse(&target.recipient_org).ok().is_some_and(|org| self.takes_webhook_pushes(&org));
        let mut withdrawals: std::collections::BTreeSet<String> = target.narrowed.iter().cloned().collect();
        withdrawals.insert(withdrawal_id.to_owned());
        let narrowing = ReceivedNarrowing {
            packet_id: target.packet_id.clone(),
            claims: target.claims.clone(),
            categories: withdrawals.into_iter().collect(),
            pushed,
        };
        let notice_until_ms = self.delivery_deadline(now, None).timestamp_millis();
        Ok((Some(WithdrawalEffect::Narrow { narrowing, notice_until_ms }), true))
    }

    /// A received case's claims, cut down, sealed under a new key; the key
    /// that held them whole is destroyed first, so that the cut part is
    /// unreadable in every copy of the database from here on.
    async fn recut(&self, item: &InboxItem, claims: &PacketClaims, now: DateTime<Utc>) -> Result<SealedPayload, AppError> {
        let plaintext = serde_json::to_vec(claims).map_err(|e| AppError::Internal(e.to_string()))?;
        let case_key = self.vault.new_case_key(now.timestamp_millis()).await?;
        let sealed = self.vault.seal(&case_key, &plaintext, item.packet_id.as_bytes())?;
        self.vault.destroy(std::slice::from_ref(&item.claims.key_id)).await?;
        Ok(sealed)
    }

    /// `step`, from the state `item` was read in.
    pub(super) fn inbox_move(&self, item: &InboxItem, step: InboxMove, now: DateTime<Utc>) -> InboxChange {
        InboxChange { packet_id: item.packet_id.clone(), from: item.state, step, at_ms: now.timestamp_millis() }
    }

    /// How long this gateway keeps a received referral: the deadline the
    /// sender put in its packet, or this gateway's own rules (counted from
    /// receipt, never past the consent) where they are stricter; the
    /// sender's rules are not this gateway's DPO's, and an older sender may
    /// send no deadline at all.
    fn received_retention(&self, claims: &PacketClaims, recipient: Option<&crate::domain::recipient::Recipient>, item: &InboxItem) -> RetentionDeadline {
        let received = DateTime::<Utc>::from_timestamp_millis(item.received_ms).unwrap_or(claims.issued_at);
        let own = match claims.purpose {
            Some(purpose) => self.policy().policy.retention().period_for(purpose, recipient.map(|r| r.kind)),
            None => crate::domain::retention::RetentionPeriod::FALLBACK,
        }
        .deadline(received, claims.consent_expires_at);
        match claims.retention_until {
            Some(until) => RetentionDeadline { until, days_after_closure: claims.retention_days_after_closure }.stricter(own),
            None => own,
        }
    }

    /// A status about a received referral, back to the gateway that sent
    /// it; its body sealed at rest under its packet id.
    pub(super) fn status_reply(
        &self,
        item: &InboxItem,
        status: ReferralProgress,
        reason_codes: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<NewReply, AppError> {
        let report = StatusReport { in_reply_to: item.packet_id.clone(), status, reason_codes };
        self.reply(item, PacketType::Status, &report, now)
    }

    /// A packet of `packet_type` carrying `body` back to the gateway that
    /// sent `item`; the body sealed at rest under its packet id.
    fn reply(&self, item: &InboxItem, packet_type: PacketType, body: &impl serde::Serialize, now: DateTime<Utc>) -> Result<NewReply, AppError> {
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

    /// The caller's organisation's cases in the order they became visible, after `cursor`.
    #[tracing::instrument(name = "list_inbox", skip_all)]
    pub async fn inbox(&self, principal: &Authorized<Recipients>, cursor: Option<&str>, limit: i64) -> Result<Value, AppError> {
        let after = match cursor {
            Some(text) => Some(parse_cursor(text).ok_or_else(|| invalid("cursor", "is not a cursor this API returned"))?),
            None => None,
        };
        let limit = limit.clamp(1, MAX_INBOX_PAGE);
        let items = self.store.inbox_for(principal.org.as_str(), &InboxState::LISTED, after, limit).await?;
        let now = self.now();
        self.audit(AuditEvent::new(now, principal.actor(), Action::InboxRead, "listed")).await?;
        // After the last item, even on a short page: a recipient tails its inbox with it.
        let next = items.last().and_then(|last| last.visible_seq).map(|seq| seq.to_string());
        let mut listed = Vec::with_capacity(items.len());
        for (item, claims) in items.iter().zip(self.opened_claims_all(&items).await?) {
            if item.state == InboxState::Erased {
                // The sender withdrew the person's consent: only the fact is left.
                listed.push(json!({
                    "packet_id": item.packet_id,
                    "from_country": item.issuer,
                    "received_at": millis_to_rfc3339(item.received_ms),
                    "state": item.state,
                }));
                continue;
            }
            let claims = match claims {
                Ok(claims) if !lapsed(&claims, now) => claims,
                // Erased, or past its end: no longer the recipient's to see.
                Ok(_) | Err(AppError::Erased) => continue,
                Err(error) => return Err(error),
            };
            let mut entry = json!({
                "packet_id": item.packet_id,
                "from_country": item.issuer,
                "received_at": millis_to_rfc3339(item.received_ms),
                "state": item.state.shown(),
            });
            if let Some(fields) = entry.as_object_mut() {
                // Sealed to the organisation: its purpose is inside, for it alone.
                let (name, value) = if claims.is_end_to_end() { ("end_to_end", json!(true)) } else { ("purpose", json!(claims.purpose)) };
                fields.insert(name.to_owned(), value);
            }
            if let (false, Some(fields)) = (item.narrowed.is_empty(), entry.as_object_mut()) {
                // Listed again because its sender withdrew these: the recipient erases them too
                // (for a sealed case, what the withdrawals handed over with it name).
                let name = if claims.is_end_to_end() { "withdrawals" } else { "erased_categories" };
                fields.insert(name.to_owned(), json!(item.narrowed));
            }
            listed.push(entry);
        }
        Ok(json!({ "items": listed, "next_cursor": next }))
    }

    /// One case of the caller's organisation, whole: a disclosure, audited.
    // Packet ids are recorded once found (see `visible_item`): a path may hold anything a caller typed.
    #[tracing::instrument(name = "read_case", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn inbox_case(&self, principal: &Authorized<Recipients>, packet_id: &str) -> Result<Value, AppError> {
        let (item, claims) = self.visible_item(principal, packet_id).await?;
        let event = AuditEvent::new(self.now(), principal.actor(), Action::InboxRead, "read").referral(&item.packet_id);
        self.audit(event).await?;
        let withdrawals = self.handed_over_withdrawals(&item, &claims).await?;
        let mut document = super::pushing::case_document(&item, &claims, &withdrawals);
        if let Some(fields) = document.as_object_mut() {
            fields.insert("state".to_owned(), json!(item.state.shown()));
        }
        Ok(document)
    }

    /// The categories withdrawn by `withdrawals`, the withdrawal packets
    /// this gateway sent to `peer` for `referral_id`'s packet `packet_id`;
    /// `None` if any is not one of them.
    async fn categories_withdrawn_by(
        &self,
        referral_id: &str,
        packet_id: &str,
        withdrawals: &std::collections::BTreeSet<String>,
        peer: &str,
    ) -> Result<Option<Vec<String>>, AppError> {
        let timeline = self.store.timeline(referral_id).await?;
        let mut categories = std::collections::BTreeSet::new();
        for withdrawal_id in withdrawals {
            let Some(sent) = self.store.sent_packet(withdrawal_id).await? else {
                return Ok(None);
            };
            let ours = sent.packet_type == PacketType::Withdrawal.as_str()
                && sent.referral_id.as_deref() == Some(referral_id)
                && sent.in_reply_to.as_deref() == Some(packet_id)
                && sent.destination_country == peer;
            // Queued in the same write as the withdrawal's timeline entry, at the same moment.
            let entry = timeline.iter().find(|entry| entry.status == ReferralEvent::ConsentNarrowed && entry.at_ms == sent.created_ms);
            match entry {
                Some(entry) if ours => categories.extend(entry.reasons.iter().cloned()),
                _ => return Ok(None),
            }
        }
        Ok(Some(categories.into_iter().collect()))
    }

    /// The partial withdrawals sealed end to end to hand over with a case
    /// sealed end to end (none for any other).
    pub(super) async fn handed_over_withdrawals(&self, item: &InboxItem, claims: &PacketClaims) -> Result<Vec<SealedWithdrawal>, AppError> {
        if !claims.is_end_to_end() {
            return Ok(Vec::new());
        }
        Ok(self.store.sealed_withdrawals(&item.packet_id, &item.issuer).await?)
    }

    /// The recipient organisation says it erased its own copy of an erased
    /// case, or of the categories withdrawn from a case it still holds:
    /// `erasure_confirmation` goes back to the sender. Idempotent.
    #[tracing::instrument(name = "confirm_erasure", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn confirm_erasure(&self, principal: &Authorized<Recipients>, packet_id: &str) -> Result<Value, AppError> {
        let now = self.now();
        let item = self.store.inbox_item(packet_id).await?.filter(|item| {
            item.recipient_org == principal.org.as_str() && item.packet_type == PacketType::Referral.as_str() && item.visible_seq.is_some()
        });
        let Some(item) = item else {
            self.audit(AuditEvent::new(now, principal.actor(), Action::InboxRead, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        tracing::Span::current().record("packet_id", tracing::field::display(item.packet_id.as_str()));
        let state = item.state;
        let narrowed = state.is_live() && !item.narrowed.is_empty();
        // A case sealed end to end was cut by the organisation itself, as its
        // withdrawals said: they are named, since this gateway cannot name the categories.
        let sealed = narrowed && self.opened_claims(&item).await.is_ok_and(|claims| claims.is_end_to_end());
        let answer = if narrowed {
            let name = if sealed { "withdrawals" } else { "erased_categories" };
            json!({ "packet_id": packet_id, "state": item.state, name: item.narrowed, "erasure": "confirmed" })
        } else {
            json!({ "packet_id": packet_id, "state": InboxState::ErasureConfirmed })
        };
        if state == InboxState::ErasureConfirmed || (narrowed && item.narrowing_confirmed) {
            return Ok(answer);
        }
        let confirming = if narrowed { InboxEvent::NarrowingConfirmed } else { InboxEvent::ErasureConfirmed };
        if state.after(confirming).is_none() {
            // A case still live and whole: there is nothing to confirm yet.
            return Err(AppError::NotErased);
        }
        let (categories, withdrawals) = match (narrowed, sealed) {
            (false, _) => (None, None),
            (true, false) => (Some(item.narrowed.iter().filter_map(|c| c.parse().ok()).collect()), None),
            (true, true) => (None, Some(item.narrowed.iter().cloned().collect())),
        };
        let erased = ErasureNotice { in_reply_to: item.packet_id.clone(), erased_by: ErasedBy::Organisation, categories, withdrawals };
        let reply = self.reply(&item, PacketType::ErasureConfirmation, &erased, now)?;
        let step = if narrowed { InboxMove::ConfirmNarrowing { reply } } else { InboxMove::ConfirmErasure { reply } };
        let change = self.inbox_move(&item, step, now);
        let outcome = if narrowed { "narrowing_confirmed" } else { "erasure_confirmed" };
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, outcome).referral(&item.packet_id);
        self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
        self.wake_delivery();
        Ok(answer)
    }

    /// The recipient has taken the case: `forwarded` goes back to the sender.
    #[tracing::instrument(name = "acknowledge", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn acknowledge(&self, principal: &Authorized<Recipients>, packet_id: &str) -> Result<Value, AppError> {
        let (item, _) = self.visible_item(principal, packet_id).await?;
        if item.state.shown() == InboxState::Acknowledged {
            return Ok(json!({ "packet_id": item.packet_id, "state": InboxState::Acknowledged }));
        }
        let now = self.now();
        let reply = self.status_reply(&item, ReferralProgress::Forwarded, Vec::new(), now)?;
        let change = self.inbox_move(&item, InboxMove::Acknowledge { reply }, now);
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, InboxState::Acknowledged.as_str()).referral(&item.packet_id);
        self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
        self.wake_delivery();
        Ok(json!({ "packet_id": item.packet_id, "state": InboxState::Acknowledged }))
    }

    /// The recipient reports progress; sealed back to the sender's gateway.
    #[tracing::instrument(name = "report_status", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn report_status(&self, principal: &Authorized<Recipients>, packet_id: &str, body: &Value) -> Result<Value, AppError> {
        let status: ReferralProgress = body
            .get("status")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .filter(|s| ReferralProgress::REPORTED_BY_RECIPIENTS.contains(s))
            .ok_or_else(|| invalid("status", "must be one of accepted, declined, in_progress, arrived, services_delivered, closed"))?;
        let reason_codes = match body.get("reason_code") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(code)) if is_reason_code(code) => vec![code.clone()],
            Some(_) => return Err(invalid("reason_code", "must be a code: 1 to 64 of a-z, 0-9 and _")),
        };
        if let Some(unknown) = body.as_object().and_then(|o| o.keys().find(|k| !["status", "reason_code"].contains(&k.as_str()))) {
            let field = if crate::domain::submission::looks_like_field_name(unknown) { unknown.clone() } else { "(field)".to_owned() };
            return Err(AppError::Invalid(vec![FieldProblem { field, problem: "is not a field of a status report".to_owned() }]));
        }
        let (item, _) = self.visible_item(principal, packet_id).await?;
        let now = self.now();
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, status.as_str()).referral(&item.packet_id).reasons(reason_codes.clone());
        let reply = self.status_reply(&item, status, reason_codes, now)?;
        // Closed: the case's deadline here comes forward by its closure rule, as at the sender.
        let brings_forward = match (status, item.retention) {
            (ReferralProgress::Closed, Some(kept)) => closed_deadline(kept, now).map(|until_ms| (item.packet_id.clone(), until_ms)),
            _ => None,
        };
        self.writer.write(Write::Reply { reply: Box::new(reply), audit: event, brings_forward }).await?;
        self.wake_delivery();
        Ok(json!({ "packet_id": item.packet_id, "status": status.as_str() }))
    }

    /// A case the caller's organisation may see, with its claims opened;
    /// anything else (another's, refused, or past its consent or retention)
    /// is absent.
    async fn visible_item(&self, principal: &Principal, packet_id: &str) -> Result<(InboxItem, PacketClaims), AppError> {
        let now = self.now();
        let candidate = self
            .store
            .inbox_item(packet_id)
            .await?
            .filter(|item| {
                item.recipient_org == principal.org.as_str()
                    && (InboxState::LISTED.contains(&item.state) || item.state.is_erased())
                    && item.packet_type == PacketType::Referral.as_str()
            });
        if let Some(item) = &candidate
            && item.state.is_erased()
        {
            // 410 only for a case its recipient could see; any other is absent.
            if item.visible_seq.is_some() {
                return Err(AppError::Erased);
            }
            self.audit(AuditEvent::new(now, principal.actor(), Action::InboxRead, "not_found")).await?;
            return Err(AppError::NotFound);
        }
        let found = match candidate {
            Some(item) => match self.opened_claims(&item).await {
                Ok(claims) => Some((item, claims)).filter(|(_, claims)| !lapsed(claims, now)),
                // Erased: 410, so the recipient knows to erase its own copy.
                Err(AppError::Erased) => return Err(AppError::Erased),
                Err(AppError::Store(error)) => return Err(AppError::Store(error)),
                Err(_) => None,
            },
            None => None,
        };
        match found {
            Some(visible) => {
                // Into the caller's span (a use case's): the id is one this gateway holds.
                tracing::Span::current().record("packet_id", tracing::field::display(visible.0.packet_id.as_str()));
                Ok(visible)
            }
            None => {
                self.audit(AuditEvent::new(self.now(), principal.actor(), Action::InboxRead, "not_found")).await?;
                Err(AppError::NotFound)
            }
        }
    }
}

/// What a withdrawal packet withdraws, as far as this gateway can read it:
/// for one sealed end to end, which case and whether whole (its categories,
/// if any, are sealed: an empty set stands for them); otherwise its body.
fn withdrawal_notice(claims: &PacketClaims) -> Option<WithdrawalNotice> {
    match &claims.in_reply_to {
        Some(in_reply_to) if claims.is_end_to_end() => {
            Some(WithdrawalNotice { in_reply_to: in_reply_to.clone(), categories: (!claims.erase).then(std::collections::BTreeSet::new) })
        }
        _ => serde_json::from_value(claims.body.clone()).ok(),
    }
}

/// A refusal for `reasons`, with nothing sent back.
fn refusal(reasons: &[&str]) -> InboxMove {
    InboxMove::Refuse { reasons: reasons.iter().map(|r| (*r).to_owned()).collect(), reply: None }
}

/// Removes the named categories from a referral packet's body (category name to its data).
fn remove_categories(body: &mut Value, names: &[String]) {
    if let Some(categories) = body.as_object_mut() {
        for name in names {
            categories.remove(name);
        }
    }
}

/// Whether a referral packet's body holds no category any more.
fn body_is_empty(body: &Value) -> bool {
    body.as_object().is_none_or(serde_json::Map::is_empty)
}

/// A kept deadline after a closure at `closed_at`, if that brings it forward.
fn closed_deadline(kept: StoredRetention, closed_at: DateTime<Utc>) -> Option<i64> {
    let closed = retention_deadline(kept)?.closed_at(closed_at).until.timestamp_millis();
    (closed < kept.until_ms).then_some(closed)
}

/// Past the end of the consent it was sent under, or of its retention: no longer to be read.
fn lapsed(claims: &PacketClaims, now: DateTime<Utc>) -> bool {
    claims.consent_expires_at.is_some_and(|end| end <= now) || claims.retention_until.is_some_and(|end| end <= now)
}

/// A cursor as this API returns one: decimal digits only (no sign).
pub fn parse_cursor(text: &str) -> Option<i64> {
    Some(text).filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).and_then(|t| t.parse().ok())
}

fn invalid(field: &str, problem: &str) -> AppError {
    AppError::Invalid(vec![FieldProblem { field: field.to_owned(), problem: problem.to_owned() }])
}
