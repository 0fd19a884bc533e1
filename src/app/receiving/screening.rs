//! The receiving gateway's screening of what its peers send: a referral is
//! screened by this gateway's own rules and either made available to its
//! recipient (listed, or pushed to its webhook) or refused (a `refused`
//! status goes back; the recipient learns nothing); a withdrawal erases or
//! cuts the case it names and is confirmed back. Statuses and erasure
//! confirmations about referrals this gateway sent are applied to them.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::app::retention::stored_retention;
use crate::app::receiving::received::closed_deadline;
use crate::app::{AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::crypto::packet::{PacketClaims, PacketType};
use crate::domain::decision::ReasonCode;
use crate::domain::OrgId;
use crate::domain::inbound::{screen, screen_routing, Received, Screening};
use crate::domain::retention::RetentionDeadline;
use crate::domain::replies::{
    erasure_confirmation_verdict, readable_status, referral_replied_to, status_events, status_verdict, withdrawal_verdict, ReplyRefusal,
    SentPacketFacts,
};
use crate::domain::reply_cases::{answered_request, ReceivedReferral, SentRequest};
use crate::domain::status::{ReferralProgress, StatusBatch, StatusReport};
use crate::domain::lifecycle::{InboxState, ReferralEvent};
use crate::domain::withdrawal::{ErasureNotice, WithdrawalNotice};
use crate::store::{
    AnsweredReferral, AppliedStatus, InboxItem, InboxMove, InboxQueue, ReceivedNarrowing, SealedPayload, SentPacket, Tombstone, WithdrawalEffect,
    WithdrawnPart, Write, Written,
};

/// A coalesced status packet's body as read: its statuses each read on
/// their own (see [`StatusBatch`]).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceivedStatuses {
    statuses: Vec<Value>,
}

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
                Write::InboxMove { change, .. } | Write::InboxMoveAudited { change, .. } if matches!(change.step, InboxMove::Refuse { .. }) => {
                    items.iter().find(|i| i.packet_id == change.packet_id)
                }
                _ => None,
            })
            .map(|item| item.claims.key_id.clone())
            .collect();
        self.vault.destroy(&refused_keys).await?;
        // The copies each withdrawal worked out its effects for: one made meanwhile is erased whole by its write.
        let withdrawn_copies: Vec<(String, Vec<String>)> = moves
            .iter()
            .filter_map(|write| match write {
                Write::InboxMove { change, .. } => match &change.step {
                    InboxMove::ApplyWithdrawal { tombstone, copies, .. } => Some((tombstone.packet_id.clone(), copies.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        let mut moved = 0;
        for written in self.writer.write_all(moves).await {
            match written {
                Ok(Written::AlreadySettled) => {}
                Ok(_) => moved += 1,
                Err(error) => tracing::error!(%error, "recording a received packet's next state failed; it stays received"),
            }
        }
        self.destroy_keys_of_unseen_copies(&withdrawn_copies).await?;
        if moved > 0 {
            self.wake_delivery();
            self.wake_pushing();
        }
        Ok(moved)
    }

    /// The keys of copies a withdrawal's write erased whole because they
    /// were made after it read the copies of its case (`seen`): destroyed
    /// now, so that no earlier copy of the database can open them either.
    async fn destroy_keys_of_unseen_copies(&self, withdrawn: &[(String, Vec<String>)]) -> Result<(), AppError> {
        for (case, seen) in withdrawn {
            let unseen: Vec<String> = self
                .store
                .onward_copies(case)
                .await?
                .into_iter()
                .filter(|copy| !seen.contains(&copy.packet_id) && copy.state.is_erased())
                .map(|copy| copy.claims.key_id)
                .collect();
            if !unseen.is_empty() {
                self.vault.destroy(&unseen).await?;
            }
        }
        Ok(())
    }

    /// Where a received packet goes next, and the audit of that move.
    #[tracing::instrument(name = "screen", skip_all, fields(packet_id = %item.packet_id, packet_type = %item.packet_type))]
    async fn next_move(&self, item: &InboxItem, claims: Result<PacketClaims, AppError>) -> Result<Write, AppError> {
        let now = self.now();
        let Ok(claims) = claims else {
            // Never readable again (a data key gone, say): set aside, so that it holds up nothing behind it.
            let change = self.inbox_move(item, refusal(ReplyRefusal::ClaimsUnreadable), now);
            let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
            let event = AuditEvent::new(now, actor, Action::PacketScreen, InboxState::Refused.as_str()).referral(&item.packet_id).reasons(change.step.reasons().to_vec());
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
                    let change = self.inbox_move(item, refusal(ReplyRefusal::ConsentWithdrawn), now);
                    let event = AuditEvent::new(now, gateway_actor, Action::PacketScreen, InboxState::Refused.as_str()).referral(&item.packet_id).reasons(change.step.reasons().to_vec());
                    return Ok(Write::InboxMove { change: Box::new(change), audit: event });
                }
                // A reply case: only as the answer to a request this gateway sent, to the organisation that asked.
                let answered = match self.answered_request(&claims).await? {
                    Ok(answered) => answered,
                    Err(refused) => {
                        let reasons = vec![refused.as_str().to_owned()];
                        let reply = self.status_reply(item, ReferralProgress::Refused, reasons.clone(), now)?;
                        let change = self.inbox_move(item, InboxMove::Refuse { reasons, reply: Some(reply) }, now);
                        let event = AuditEvent::new(now, gateway_actor, Action::PacketScreen, InboxState::Refused.as_str()).referral(&item.packet_id).reasons(change.step.reasons().to_vec());
                        return Ok(Write::InboxMove { change: Box::new(change), audit: event });
                    }
                };
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
                        let queue = self.inbox_queue_of(&claims, item);
                        // Codes only: the reply's purpose (if readable); its organisation finds it in the inbox by `answers_referral`.
                        let answers = answered.map(|referral_id| AnsweredReferral {
                            referral_id,
                            reasons: claims.purpose.map(|p| p.as_str().to_owned()).into_iter().collect(),
                        });
                        self.inbox_move(item, InboxMove::Forward { pushed, retention, reseal, queue, answers }, now)
                    }
                    Screening::Refuse(reasons) => {
                        let reasons = recorded_reasons(&reasons);
                        let reply = self.status_reply(item, ReferralProgress::Refused, reasons.clone(), now)?;
                        self.inbox_move(item, InboxMove::Refuse { reasons, reply: Some(reply) }, now)
                    }
                }
            }
            PacketType::Status => {
                let report: Option<StatusReport> = serde_json::from_value(claims.body.clone()).ok().and_then(readable_status);
                match self.status_applied(report, &claims, now).await? {
                    Ok(AppliedStatus { referral_id, events, reasons, retention_until_ms }) => {
                        self.inbox_move(item, InboxMove::ApplyToReferral { referral_id, events, reasons, retention_until_ms }, now)
                    }
                    Err(refused) => self.inbox_move(item, refusal(refused), now),
                }
            }
            PacketType::Statuses => {
                // Each status as if it had come alone, audited on its own; the packet is
                // applied if any one of them is, and refused with their codes if none is.
                // Read status by status: one that does not parse is refused alone.
                let batch = serde_json::from_value::<ReceivedStatuses>(claims.body.clone()).ok().filter(|b| (1..=StatusBatch::MAX).contains(&b.statuses.len()));
                match batch {
                    // Audited as any refusal, below.
                    None => self.inbox_move(item, refusal(ReplyRefusal::StatusUnreadable), now),
                    Some(batch) => return self.statuses_applied(item, &claims, batch, now).await,
                }
            }
            PacketType::Withdrawal => {
                // Facts: what it withdraws, as far as this gateway can read it; the case it names, if held.
                let notice = withdrawal_notice(&claims);
                let target = match &notice {
                    Some(notice) => self.store.inbox_item(&notice.in_reply_to).await?,
                    None => None,
                };
                let foreign = target.as_ref().is_some_and(|t| t.issuer != claims.issuer.as_str() || t.packet_type != PacketType::Referral.as_str());
                match withdrawal_verdict(notice.as_ref(), claims.is_end_to_end(), foreign, &item.packet_id) {
                    Ok(verdict) => {
                        let reply = self.reply(item, PacketType::ErasureConfirmation, &verdict.confirmation, now)?;
                        // A partial withdrawal sealed end to end names categories this gateway
                        // cannot read, of a case it cannot read: it hands the withdrawal to the
                        // organisation with the case.
                        let mut copies = Vec::new();
                        let (effects, handed_over) = match target {
                            _ if verdict.opaque => {
                                let (effect, handed_over) = self.hand_over_withdrawal(target.as_ref(), &item.packet_id, now).await?;
                                (effect.into_iter().collect(), handed_over)
                            }
                            Some(target) => {
                                // The copies passed on from it go the same way (a case sealed end to end has none);
                                // one made after this reads them is erased whole by the write.
                                let names = verdict.categories.as_deref();
                                let mut effects: Vec<WithdrawalEffect> = self.erase_withdrawn(&target, names, now, false).await?.into_iter().collect();
                                for copy in self.store.onward_copies(&target.packet_id).await? {
                                    effects.extend(self.erase_withdrawn(&copy, names, now, true).await?);
                                    copies.push(copy.packet_id);
                                }
                                (effects, false)
                            }
                            None => (Vec::new(), false),
                        };
                        let tombstone = Tombstone {
                            withdrawal_id: item.packet_id.clone(),
                            packet_id: verdict.confirmation.in_reply_to.clone(),
                            issuer: claims.issuer.to_string(),
                            categories: verdict.categories.clone(),
                            end_to_end: claims.end_to_end.clone().filter(|_| handed_over),
                        };
                        let applied = InboxMove::ApplyWithdrawal { categories: verdict.categories.unwrap_or_default(), reply, tombstone, effects, copies };
                        self.inbox_move(item, applied, now)
                    }
                    Err(refused) => self.inbox_move(item, refusal(refused), now),
                }
            }
            PacketType::ErasureConfirmation => {
                // Facts: the notice; the referral it is about; whether its consent was withdrawn; what it confirms.
                let notice = serde_json::from_value::<ErasureNotice>(claims.body.clone()).ok().filter(ErasureNotice::is_well_formed);
                let sent = match &notice {
                    Some(notice) => self.store.sent_packet(&notice.in_reply_to).await?,
                    None => None,
                };
                let about = referral_replied_to(sent.as_ref().map(sent_facts), claims.issuer.as_str());
                let withdrawn = match (about, &notice) {
                    (Some(referral_id), Some(notice)) if notice.is_partial() => {
                        self.store.timeline(referral_id).await?.iter().any(|entry| entry.status == ReferralEvent::ConsentNarrowed)
                    }
                    (Some(referral_id), Some(_)) => self.store.referral(referral_id).await?.is_some_and(|r| r.status.is_withdrawn_whole()),
                    _ => false,
                };
                // The categories confirmed: named, or (for a case sealed end to end) those of the withdrawals named.
                let confirmed = match (&notice, about) {
                    (Some(ErasureNotice { withdrawals: Some(ids), in_reply_to, .. }), Some(referral_id)) if withdrawn => {
                        self.categories_withdrawn_by(referral_id, in_reply_to, ids, claims.issuer.as_str()).await?
                    }
                    (Some(notice), _) => Some(notice.categories.iter().flatten().map(|c| c.as_str().to_owned()).collect()),
                    (None, _) => None,
                };
                match erasure_confirmation_verdict(notice.as_ref(), about, withdrawn, confirmed) {
                    Ok(confirmed) => {
                        let referral_id = confirmed.referral_id.to_owned();
                        let applied = InboxMove::ApplyToReferral { referral_id, events: vec![confirmed.event], reasons: confirmed.categories, retention_until_ms: None };
                        self.inbox_move(item, applied, now)
                    }
                    Err(refused) => self.inbox_move(item, refusal(refused), now),
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

    /// The move of a coalesced status packet that reads as 1 to 256
    /// statuses, with one audit entry per status.
    async fn statuses_applied(&self, item: &InboxItem, claims: &PacketClaims, batch: ReceivedStatuses, now: DateTime<Utc>) -> Result<Write, AppError> {
        let gateway_actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let mut applied = Vec::new();
        let mut refused = std::collections::BTreeSet::new();
        let mut audits = Vec::new();
        for report in batch.statuses {
            let report = serde_json::from_value::<StatusReport>(report).ok().and_then(readable_status);
            match self.status_applied(report, claims, now).await? {
                Ok(status) => {
                    let event = AuditEvent::new(now, gateway_actor.clone(), Action::PacketScreen, InboxState::Applied.as_str());
                    audits.push(event.referral(&status.referral_id).reasons(status.reasons.clone()));
                    applied.push(status);
                }
                Err(reason) => {
                    let event = AuditEvent::new(now, gateway_actor.clone(), Action::PacketScreen, InboxState::Refused.as_str());
                    audits.push(event.referral(&item.packet_id).reasons([reason.as_str().to_owned()]));
                    refused.insert(reason.as_str().to_owned());
                }
            }
        }
        let reasons = refused.into_iter().collect();
        let step = if applied.is_empty() { InboxMove::Refuse { reasons, reply: None } } else { InboxMove::ApplyStatuses { applied, reasons } };
        let change = self.inbox_move(item, step, now);
        tracing::debug!(statuses = audits.len(), "coalesced statuses screened");
        Ok(Write::InboxMoveAudited { change: Box::new(change), audits })
    }

    /// What a status report from the peer that sent `claims` comes to: the
    /// referral sent from here it is about, with the timeline events it
    /// adds and a deadline brought forward; or why it is not applied.
    async fn status_applied(&self, report: Option<StatusReport>, claims: &PacketClaims, now: DateTime<Utc>) -> Result<Result<AppliedStatus, ReplyRefusal>, AppError> {
        // Facts: the report, if readable; the packet it names; that referral's handover and retention.
        let sent = match &report {
            Some(report) => self.store.sent_packet(&report.in_reply_to).await?,
            None => None,
        };
        let about = referral_replied_to(sent.as_ref().map(sent_facts), claims.issuer.as_str());
        let (report, referral_id) = match status_verdict(report, about) {
            Ok(verdict) => verdict,
            Err(refused) => return Ok(Err(refused)),
        };
        let hands_over = report.status == ReferralProgress::Accepted && self.store.referral(referral_id).await?.is_some_and(|r| r.handover);
        // Closed: the closure rule the referral was accepted under brings its deadline forward.
        let retention_until_ms = match report.status {
            ReferralProgress::Closed => self.store.referral_retention(referral_id).await?.and_then(|kept| closed_deadline(kept, now)),
            _ => None,
        };
        let events = status_events(report.status, hands_over);
        Ok(Ok(AppliedStatus { referral_id: referral_id.to_owned(), events, reasons: report.reason_codes, retention_until_ms }))
    }

    /// The referral sent from here that a received referral answers
    /// (`None`: it is not a reply), or why it may not: see
    /// [`answered_request`].
    async fn answered_request(&self, claims: &PacketClaims) -> Result<Result<Option<String>, ReplyRefusal>, AppError> {
        let sent = match claims.answers.as_deref() {
            Some(request) => match self.store.sent_packet(request).await? {
                Some(packet) if packet.packet_type == PacketType::Referral.as_str() => match &packet.referral_id {
                    Some(referral_id) => self.store.referral(referral_id).await?.map(|referral| (packet, referral)),
                    None => None,
                },
                _ => None,
            },
            None => None,
        };
        let request = sent.as_ref().and_then(|(packet, referral)| {
            Some(SentRequest {
                referral_id: &referral.id,
                destination_country: &packet.destination_country,
                purpose: referral.purpose.parse().ok()?,
                sender_org: &referral.sender_org,
                still_shared: referral.status.still_shared(),
            })
        });
        let received = ReceivedReferral { issuer: claims.issuer.as_str(), purpose: claims.purpose, recipient: &claims.recipient, answers: claims.answers.as_deref() };
        Ok(answered_request(&received, request).map(|answered| answered.map(str::to_owned)))
    }

    /// Erases from `target` what a withdrawal withdraws: all of it (`names`
    /// `None`), or those categories; the key that held them is destroyed
    /// first. What is left to do to the case in the store, if anything.
    /// `copy`: a copy passed on here, which may hold none of the categories
    /// named (it is then left as it is, not listed again).
    async fn erase_withdrawn(&self, target: &InboxItem, names: Option<&[String]>, now: DateTime<Utc>, copy: bool) -> Result<Option<WithdrawalEffect>, AppError> {
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
            // A copy is told only of what it holds: the rest of the case is not its to know of.
            let held: Vec<String>;
            let names: &[String] = if copy {
                held = names.iter().filter(|name| claims.body.as_object().is_some_and(|body| body.contains_key(*name))).cloned().collect();
                if held.is_empty() {
                    return Ok(None);
                }
                &held
            } else {
                names
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

    /// What the recipient of a referral passed here owes, by when: from its
    /// receipt here, by this gateway's `[deadlines]` (the recipient cannot
    /// answer before the case arrives; and the sending peer's `issued_at`
    /// is its word, which would let it move its cases up every worklist).
    /// A case sealed end to end is queued by the normal deadlines: its
    /// priority is not this gateway's to read.
    fn inbox_queue_of(&self, claims: &PacketClaims, item: &InboxItem) -> InboxQueue {
        let priority = (!claims.is_end_to_end()).then_some(claims.priority);
        let received = DateTime::<Utc>::from_timestamp_millis(item.received_ms).unwrap_or(DateTime::<Utc>::MIN_UTC);
        self.inbox_queue(priority, received)
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

/// A refusal, with nothing sent back.
fn refusal(reason: ReplyRefusal) -> InboxMove {
    InboxMove::Refuse { reasons: vec![reason.as_str().to_owned()], reply: None }
}

/// What a reply finds of a packet this gateway sent.
fn sent_facts(sent: &SentPacket) -> SentPacketFacts<'_> {
    SentPacketFacts { destination_country: &sent.destination_country, referral_id: sent.referral_id.as_deref() }
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
