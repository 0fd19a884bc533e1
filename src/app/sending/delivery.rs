//! Delivering queued referrals to peer gateways: claim due outbox entries,
//! seal each once into a packet that is kept and sent unchanged on every
//! retry, send it through the [`PeerTransport`] port, verify the peer's
//! signed receipt and keep it; retry with backoff on failure, and expire an
//! entry at its deadline. Delivery is at least once; the peer's inbox makes
//! the effect exactly once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::app::backoff::Backoff;
use crate::app::{new_id, AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::crypto::end_to_end::{self, WithdrawalRouting};
use crate::crypto::packet::{self, PacketClaims, PacketType};
use crate::crypto::receipt::{self, Expected, ReceiptError};
use crate::directory::{MemberStatus, ProtocolVersion};
use crate::domain::onward::OnwardLimits;
use crate::domain::withdrawal::WithdrawalNotice;
use crate::domain::{CountryCode, OrgId, Purpose};
use crate::store::{ClaimedDelivery, Settlement, StoredPacket, Write, Written};
use crate::wire::{BatchAnswer, FailureCode, MAX_BATCH_PACKETS};

/// How delivery is paced and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// How long after acceptance a referral may still be delivered.
    pub window: Duration,
    pub backoff: Backoff,
    /// How long a claimed entry is kept from other workers.
    pub lease: Duration,
    /// Most entries one worker claims at a time.
    pub batch: i64,
    /// How long after a withdrawal the receiving gateway has to confirm its
    /// erasure before the sender shows it as overdue.
    pub erasure_deadline: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(7 * 24 * 3600),
            backoff: Backoff { first: Duration::from_secs(2), max: Duration::from_secs(600) },
            lease: Duration::from_secs(120),
            batch: 64,
            erasure_deadline: Duration::from_secs(72 * 3600),
        }
    }
}

/// Why a send did not bring back a receipt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// The peer answered with a problem: its stable code (`packet-*`).
    #[error("refused by the peer: {code}")]
    Refused { code: String },
    /// No usable answer: connection, TLS handshake, timeout, server error.
    #[error("peer unreachable: {code}")]
    Unreachable { code: &'static str },
}

impl SendFailure {
    pub fn code(&self) -> &str {
        match self {
            SendFailure::Refused { code } => code,
            SendFailure::Unreachable { code } => code,
        }
    }

    /// The code, if it is one the federation knows.
    pub fn known(&self) -> Option<FailureCode> {
        self.code().parse().ok()
    }
}

/// The port to peer gateways: posts a sealed packet, returns the receipt.
#[async_trait]
pub trait PeerTransport: Send + Sync + 'static {
    async fn send(&self, peer: CountryCode, endpoint: &str, packet: &str) -> Result<String, SendFailure>;

    /// Posts several sealed packets in one batch (protocol version 3,
    /// `federation.md` §5c); the peer's answer as it came, unverified.
    async fn send_batch(&self, peer: CountryCode, endpoint: &str, packets: &[&str]) -> Result<BatchAnswer, SendFailure>;
}

/// What one round of delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryRound {
    pub claimed: usize,
    pub delivered: usize,
    pub expired: usize,
    pub retrying: usize,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Expired,
    Retrying,
    /// The entry left the outbox while claimed: nothing to send.
    Gone,
}

/// An entry whose packet is sealed and may go: to whom, and what to do if
/// the peer refuses it.
struct Ready {
    item: ClaimedDelivery,
    peer: CountryCode,
    endpoint: String,
    packet: StoredPacket,
    /// A coalesced packet to a peer that no longer lists version 2.
    carrier_unreadable_by_peer: bool,
    /// The entry's `delivery_attempt` span, for what follows the send.
    span: tracing::Span,
}

/// Before the send: the entry ended (expired, gone, to be retried) or ready.
enum Prepared {
    Ended(Attempt),
    Ready(Box<Ready>),
}

/// What the peer said of one packet.
enum Answer {
    /// A receipt, verified, that confirms this packet.
    Confirmed(String),
    /// An answer that should have been a receipt for it and is not.
    NotConfirmed(ReceiptError),
    Failed(SendFailure),
}

impl Gateway {
    /// Claims the entries due now and attempts each, concurrently: a packet
    /// to a peer that takes no batches is posted alone as soon as it is
    /// sealed; those to a peer that takes batches (protocol version 3),
    /// once all the round's are sealed, together, a batch per peer as the
    /// peer's packet limit allows.
    #[tracing::instrument(name = "delivery_round", skip_all)]
    pub async fn deliver_due(self: &Arc<Self>, transport: &Arc<dyn PeerTransport>) -> Result<DeliveryRound, AppError> {
        let now = self.now();
        let claimed = self.store.claim_deliveries(now.timestamp_millis(), self.lease_ms(), self.delivery.batch).await?;
        let mut round = DeliveryRound { claimed: claimed.len(), ..DeliveryRound::default() };
        let claimed = self.coalesce_statuses(claimed, now).await?;
        let mut count = |attempt: Result<Attempt, AppError>| match attempt {
            Ok(Attempt::Delivered) => round.delivered += 1,
            Ok(Attempt::Expired) => round.expired += 1,
            Ok(Attempt::Retrying) => round.retrying += 1,
            Ok(Attempt::Gone) => {}
            // The lease runs out and the entry falls due again; the other attempts go on.
            Err(error) => tracing::error!(%error, "delivery attempt failed inside the gateway"),
        };
        let mut preparing = tokio::task::JoinSet::new();
        for (place, item) in claimed.into_iter().enumerate() {
            let gateway = Arc::clone(self);
            let transport = Arc::clone(transport);
            let span = attempt_span(&item);
            preparing.spawn(tracing::Instrument::instrument(
                async move {
                    // A packet to a peer that takes no batches goes as soon as it is sealed, as it did before version 3.
                    let attempt = match gateway.prepare(item).await {
                        Ok(Prepared::Ready(entry)) if !gateway.directory().speaks(entry.peer, ProtocolVersion::BATCHES) => {
                            let answer = gateway.post_alone(transport.as_ref(), &entry).await;
                            gateway.conclude(*entry, answer).await.map(Prepared::Ended)
                        }
                        prepared => prepared,
                    };
                    (place, attempt)
                },
                span,
            ));
        }
        let mut ready = Vec::new();
        while let Some(joined) = preparing.join_next().await {
            match joined.map_err(|e| AppError::Internal(e.to_string())) {
                Ok((place, Ok(Prepared::Ready(entry)))) => ready.push((place, *entry)),
                Ok((_, Ok(Prepared::Ended(attempt)))) => count(Ok(attempt)),
                Ok((_, Err(error))) | Err(error) => count(Err(error)),
            }
        }
        // Batched in the order claimed (soonest due first), not the order sealing ended.
        ready.sort_unstable_by_key(|(place, _)| *place);
        let ready: Vec<Ready> = ready.into_iter().map(|(_, entry)| entry).collect();
        let mut sending = tokio::task::JoinSet::new();
        for group in self.posts(ready) {
            let gateway = Arc::clone(self);
            let transport = Arc::clone(transport);
            sending.spawn(tracing::Instrument::in_current_span(async move { gateway.post(&transport, group).await }));
        }
        while let Some(joined) = sending.join_next().await {
            match joined {
                Ok(attempts) => attempts.into_iter().for_each(&mut count),
                Err(error) => count(Err(AppError::Internal(error.to_string()))),
            }
        }
        Ok(round)
    }

    /// The posts of a round (see [`posts`]).
    fn posts(&self, ready: Vec<Ready>) -> Vec<Vec<Ready>> {
        let directory = self.directory();
        posts(ready, |entry| (entry.peer, entry.packet.packet.len()), |peer| {
            directory.speaks(peer, ProtocolVersion::BATCHES).then(|| directory.packet_limit(peer))
        })
    }

    /// One post: a packet alone, or a batch to one peer; then each entry's
    /// attempt concluded by what the peer said of its packet.
    async fn post(self: &Arc<Self>, transport: &Arc<dyn PeerTransport>, group: Vec<Ready>) -> Vec<Result<Attempt, AppError>> {
        let answers: Vec<Answer> = if group.len() == 1
            && let Some(only) = group.first()
        {
            vec![tracing::Instrument::instrument(self.post_alone(transport.as_ref(), only), only.span.clone()).await]
        } else {
            self.post_batch(transport.as_ref(), &group).await
        };
        // Settled concurrently, so that the writer commits a batch's settlements together.
        let mut concluding = tokio::task::JoinSet::new();
        for (entry, answer) in group.into_iter().zip(answers) {
            let gateway = Arc::clone(self);
            let span = entry.span.clone();
            concluding.spawn(tracing::Instrument::instrument(async move { gateway.conclude(entry, answer).await }, span));
        }
        let mut attempts = Vec::new();
        while let Some(joined) = concluding.join_next().await {
            attempts.push(joined.map_err(|e| AppError::Internal(e.to_string())).and_then(|attempt| attempt));
        }
        attempts
    }

    async fn post_alone(&self, transport: &dyn PeerTransport, entry: &Ready) -> Answer {
        let receipt = match transport.send(entry.peer, &entry.endpoint, &entry.packet.packet).await {
            Ok(receipt) => receipt,
            Err(failure) => return Answer::Failed(failure),
        };
        let digest = packet::digest_of(entry.packet.packet.as_bytes());
        let expected = Expected { packet_id: &entry.packet.packet_id, packet_sha256: &digest, from: entry.peer, to: self.country };
        match receipt::verify(&receipt, self.directory().as_ref(), self.now(), &expected) {
            Ok(_) => Answer::Confirmed(receipt),
            Err(refusal) => Answer::NotConfirmed(refusal),
        }
    }

    /// A batch to one peer (`federation.md` §5c): its one receipt verified
    /// once, then asked for each packet.
    #[tracing::instrument(name = "delivery_batch", skip_all, fields(peer = tracing::field::Empty, packets = group.len()))]
    async fn post_batch(&self, transport: &dyn PeerTransport, group: &[Ready]) -> Vec<Answer> {
        let Some(first) = group.first() else { return Vec::new() };
        tracing::Span::current().record("peer", tracing::field::display(first.peer));
        let packets: Vec<&str> = group.iter().map(|entry| entry.packet.packet.as_str()).collect();
        let answer = match transport.send_batch(first.peer, &first.endpoint, &packets).await {
            Ok(answer) => answer,
            Err(failure) => return group.iter().map(|_| Answer::Failed(failure.clone())).collect(),
        };
        let digests: Vec<String> = group.iter().map(|entry| packet::digest_of(entry.packet.packet.as_bytes())).collect();
        // Verified once; asked for each packet. Kept with each packet it
        // confirms, so it may hold nothing but what was sent: the batch's
        // digests, each at most once.
        let receipt = answer.receipt.as_ref().map(|signed| {
            let verified = receipt::verify_batch(signed, self.directory().as_ref(), self.now(), first.peer, self.country).and_then(|claims| {
                let listed: std::collections::HashSet<&String> = claims.packets_sha256.iter().collect();
                let only_ours = listed.len() == claims.packets_sha256.len() && listed.iter().all(|digest| digests.contains(digest));
                if only_ours { Ok(claims) } else { Err(ReceiptError::Mismatch) }
            });
            (signed, verified)
        });
        digests
            .iter()
            .enumerate()
            .map(|(index, digest)| {
                // The signed receipt first: a packet it lists was taken, whatever else the answer says.
                if let Some((signed, Ok(claims))) = &receipt
                    && claims.confirms(digest)
                {
                    return Answer::Confirmed((*signed).clone());
                }
                // A refusal is unsigned: only a code a packet can be refused with is kept, nothing
                // else the peer wrote (§8); the first for a place named twice.
                if let Some(refusal) = answer.refused.iter().find(|refusal| refusal.index == index) {
                    let code = FailureCode::packet_refusal(&refusal.code).unwrap_or(FailureCode::ReceiptMalformed);
                    return Answer::Failed(SendFailure::Refused { code: code.as_str().to_owned() });
                }
                match &receipt {
                    Some((_, Ok(_))) => Answer::NotConfirmed(ReceiptError::Mismatch),
                    Some((_, Err(refusal))) => Answer::NotConfirmed(refusal.clone()),
                    // Neither taken nor refused, and no receipt to read.
                    None => Answer::Failed(SendFailure::Refused { code: FailureCode::ReceiptMalformed.as_str().to_owned() }),
                }
            })
            .collect()
    }

    /// An entry before the send: expired at its deadline, kept back while
    /// its peer is suspended or unlisted, or its packet sealed (once, kept
    /// for every retry) and ready to go.
    async fn prepare(&self, item: ClaimedDelivery) -> Result<Prepared, AppError> {
        if let Some(referral_id) = &item.referral_id {
            tracing::Span::current().record("referral_id", tracing::field::display(referral_id.as_str()));
        }
        let ended = |attempt: Result<Attempt, AppError>| {
            if let Ok(outcome) = &attempt {
                tracing::debug!(?outcome, "delivery attempt ended");
            }
            attempt.map(Prepared::Ended)
        };
        let now = self.now();
        if now.timestamp_millis() >= item.deadline_ms {
            self.settle(&item, Settlement::Expired, now).await?;
            self.observe_expiry(&item);
            return ended(Ok(Attempt::Expired));
        }
        let peer = CountryCode::parse(&item.destination_country).map_err(|_| corrupt("destination country"))?;
        let directory = self.directory();
        let endpoint = match directory.gateway(peer) {
            Some(gateway) if gateway.status == MemberStatus::Active => gateway.endpoint.clone(),
            Some(_) => return ended(self.retry(&item, FailureCode::PeerSuspended.as_str(), false).await),
            None => return ended(self.retry(&item, FailureCode::PeerNotListed.as_str(), false).await),
        };
        // Coalesced for a peer whose entry lists version 2 no more: never sent, its statuses go one by one.
        let carrier_unreadable_by_peer = item.packet_type == PacketType::Statuses.as_str() && !directory.speaks(peer, ProtocolVersion::COALESCED_STATUSES);
        if carrier_unreadable_by_peer && item.packet.is_none() {
            return ended(self.dissolve(&item).await);
        }
        let packet = match &item.packet {
            Some(kept) => kept.clone(),
            None => match self.seal_packet(&item, peer, now).await? {
                // Concurrent attempts' packets are kept in one commit.
                Ok(made) => match self.writer.write(Write::KeepPacket { entry_id: item.id.clone(), packet: made, sealed_from: item.payload.key_id.clone() }).await? {
                    Written::PacketKept(kept) => kept,
                    // Settled, withdrawn, or cut meanwhile: another attempt sends what the entry holds now.
                    _ => return ended(Ok(Attempt::Gone)),
                },
                Err(missing) => return ended(self.retry(&item, missing.as_str(), false).await),
            },
        };
        // The peer would refuse it on arrival (a limit lowered since the case
        // was accepted): said exactly, and tried again only in case the
        // directory raises the limit before the deadline.
        if packet.packet.len() > directory.packet_limit(peer) {
            return ended(self.retry(&item, FailureCode::PacketTooLarge.as_str(), false).await);
        }
        let span = tracing::Span::current();
        Ok(Prepared::Ready(Box::new(Ready { item, peer, endpoint, packet, carrier_unreadable_by_peer, span })))
    }

    /// An entry after the send: settled with its receipt, or retried.
    async fn conclude(&self, entry: Ready, answer: Answer) -> Result<Attempt, AppError> {
        let item = &entry.item;
        let attempt = match answer {
            Answer::Confirmed(receipt) => {
                self.settle(item, Settlement::Delivered { receipt }, self.now()).await?;
                self.observe_delivery(item, self.now());
                Ok(Attempt::Delivered)
            }
            // Refused on opening: the peer did not take it (bytes it took get their receipt
            // again), so the statuses it carries may go one by one without being applied
            // twice. Not on a `receipt-*` code: a `200` whose body is no receipt.
            Answer::Failed(SendFailure::Refused { code }) if entry.carrier_unreadable_by_peer && FailureCode::refused_on_opening(&code) => {
                tracing::info!(code = %code, "a coalesced packet refused by a peer that no longer lists version 2");
                self.dissolve(item).await
            }
            Answer::Failed(failure) => {
                // See `FailureCode::asks_for_a_new_packet`.
                let reseal = failure.known().is_some_and(FailureCode::asks_for_a_new_packet);
                self.retry(item, failure.code(), reseal).await
            }
            Answer::NotConfirmed(refusal) => self.retry(item, FailureCode::from(&refusal).as_str(), false).await,
        };
        if let Ok(outcome) = &attempt {
            tracing::debug!(?outcome, "delivery attempt ended");
        }
        attempt
    }

    /// The packet for an entry, signed with our current key and encrypted
    /// to the peer's, and first to the recipient organisation's own key
    /// whenever it publishes one; or the code of the key the directory
    /// lacks now (the peer's, or the organisation's for an entry that must
    /// be sealed end to end).
    async fn seal_packet(&self, item: &ClaimedDelivery, peer: CountryCode, now: DateTime<Utc>) -> Result<Result<StoredPacket, FailureCode>, AppError> {
        let keys = self.federation.as_ref().ok_or(AppError::NotFederated)?;
        let directory = self.directory();
        let Some(to) = directory.encryption_key(peer, now) else {
            return Ok(Err(FailureCode::PeerKeyMissing));
        };
        let recipient = OrgId::parse(&item.recipient_org).map_err(|_| corrupt("recipient"))?;
        let signer = directory.current_signing_key(self.country, now, &keys.signing).ok_or(AppError::NotFederated)?;
        let packet_type = PacketType::parse(&item.packet_type).ok_or_else(|| corrupt("packet type"))?;
        // Packets to the organisation, not the replies about its cases that leave from its side.
        let addressed_to_organisation = matches!(packet_type, PacketType::Referral | PacketType::Withdrawal);
        let organisation_key = if addressed_to_organisation { directory.organisation_key(&recipient, now) } else { None };
        if item.end_to_end && organisation_key.is_none() {
            return Ok(Err(FailureCode::RecipientKeyMissing));
        }
        let onward_sealed = item.onward.as_deref().filter(|_| packet_type == PacketType::Referral);
        let (plaintext, onward_opened) = self.open_with_onward(&item.id, &item.payload.sealed, onward_sealed).await?;
        let plaintext = plaintext?;
        let mut withdrawal = None;
        let body = if packet_type == PacketType::Withdrawal {
            // At rest: the categories of a partial withdrawal, or nothing.
            let scope: WithdrawalAtRest = serde_json::from_slice(&plaintext).map_err(|_| corrupt("withdrawal"))?;
            let in_reply_to = item.in_reply_to.clone().ok_or_else(|| corrupt("withdrawn packet id"))?;
            withdrawal = Some(WithdrawalRouting { in_reply_to: in_reply_to.clone(), whole: scope.categories.is_none() });
            serde_json::to_value(WithdrawalNotice { in_reply_to, categories: scope.categories }).map_err(|e| AppError::Internal(e.to_string()))?
        } else {
            serde_json::from_slice(&plaintext).map_err(|_| corrupt("payload"))?
        };
        // What the recipient may pass on: sealed with the payload, under its case key.
        // Limits that cannot be read (sealed under a key since destroyed, as
        // by a replica of a version before they were cut with the payload)
        // let nothing be passed on: the case still goes.
        let onward = match onward_opened {
            Some(Ok(opened)) => serde_json::from_slice::<OnwardLimits>(&opened).ok(),
            Some(Err(error)) => {
                tracing::warn!(%error, "a referral's onward limits are unreadable; it goes without them");
                None
            }
            None => None,
        };
        let purpose = item.purpose.as_deref().map(str::parse::<Purpose>).transpose().map_err(|_| corrupt("purpose"))?;
        let claims = PacketClaims {
            // A referral's packet gets its own id; any other entry is known by its packet id from the start.
            packet_id: if packet_type == PacketType::Referral { new_id()? } else { item.id.clone() },
            packet_type,
            issuer: self.country,
            audience: peer,
            recipient,
            purpose,
            policy_version: item.policy_version.clone(),
            // Opaque to the peer, recomputable here: ties a status that comes
            // back to the decision without revealing the referral id.
            decision_id: item.referral_id.as_ref().map(|id| self.keys().index("decision", id.as_bytes())),
            consent_expires_at: item.consent_expires_ms.and_then(DateTime::from_timestamp_millis),
            retention_until: item.retention.and_then(|r| DateTime::from_timestamp_millis(r.until_ms)),
            retention_days_after_closure: item.retention.and_then(|r| r.days_after_closure).and_then(|days| u32::try_from(days).ok()),
            issued_at: now,
            expires_at: DateTime::from_timestamp_millis(item.deadline_ms).ok_or_else(|| corrupt("deadline"))?,
            handover: item.handover,
            priority: item.priority,
            body,
            end_to_end: None,
            in_reply_to: None,
            erase: false,
            onward,
            // Who to answer, for a request a reply answers (inside the envelope of one sealed end to end).
            requested_by: match (packet_type, purpose) {
                (PacketType::Referral, Some(purpose)) if purpose.expects_reply() => {
                    Some(OrgId::parse(item.sender_org.as_deref().ok_or_else(|| corrupt("sender"))?).map_err(|_| corrupt("sender"))?)
                }
                _ => None,
            },
            answers: item.in_reply_to.clone().filter(|_| packet_type == PacketType::Referral),
        };
        let outer = match organisation_key {
            Some(organisation) => end_to_end::seal_for_organisation(&claims, signer, organisation, withdrawal).map_err(|e| AppError::Internal(e.to_string()))?,
            None => claims,
        };
        let sealed = packet::seal(&outer, signer, to).map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(Ok(StoredPacket { packet_id: outer.packet_id, packet: sealed.as_str().to_owned() }))
    }

    /// A carrier removed, the statuses it carried due at once, each alone (see `Write::Dissolve`).
    async fn dissolve(&self, item: &ClaimedDelivery) -> Result<Attempt, AppError> {
        match self.writer.write(Write::Dissolve { carrier_id: item.id.clone(), now_ms: self.now().timestamp_millis() }).await? {
            Written::Dissolved => {
                tracing::info!("coalesced statuses to a peer that no longer takes them go one by one");
                self.wake_delivery();
                Ok(Attempt::Retrying)
            }
            _ => Ok(Attempt::Gone),
        }
    }

    async fn retry(&self, item: &ClaimedDelivery, code: &str, forget_packet: bool) -> Result<Attempt, AppError> {
        let next = self.next_attempt_ms(item.attempts);
        tracing::info!(code, attempts = item.attempts, "delivery attempt failed; will retry");
        self.store.retry_later(&item.id, next, code, forget_packet).await?;
        self.observe_failure(item, code);
        Ok(Attempt::Retrying)
    }

    /// The lease of a claim, in milliseconds.
    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.delivery.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// When to try again after `attempts` failed ones: backoff with jitter from now.
    pub(crate) fn next_attempt_ms(&self, attempts: i64) -> i64 {
        let failed = u32::try_from(attempts).unwrap_or(u32::MAX).max(1);
        let delay = self.delivery.backoff.delay(failed, random_u32());
        self.now().timestamp_millis().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    }

    async fn settle(&self, item: &ClaimedDelivery, settlement: Settlement, at: DateTime<Utc>) -> Result<(), AppError> {
        let outcome = settlement.state().as_str();
        let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let mut audit = AuditEvent::new(at, actor, Action::PacketSend, outcome).reasons([format!("type:{}", item.packet_type)]);
        if let Some(referral_id) = &item.referral_id {
            audit = audit.referral(referral_id);
        }
        let write = Write::Settle { entry_id: item.id.clone(), settlement, at_ms: at.timestamp_millis(), audit };
        self.writer.write(write).await?;
        Ok(())
    }

    /// When an allowed referral must be delivered by: the delivery window,
    /// cut short by the end of the consent covering what is sent.
    pub fn delivery_deadline(&self, accepted: DateTime<Utc>, consent_expires: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let window = chrono::Duration::from_std(self.delivery.window).unwrap_or(chrono::Duration::MAX);
        let by_window = accepted.checked_add_signed(window).unwrap_or(DateTime::<Utc>::MAX_UTC);
        consent_expires.map_or(by_window, |end| end.min(by_window))
    }
}

impl Gateway {
    /// A referral's payload and its onward limits (if any), opened with one
    /// read of their case key: a partial withdrawal destroying that key
    /// meanwhile (to cut both) cannot leave the payload it cuts readable
    /// and the limits not. Each answered on its own.
    pub(crate) async fn open_with_onward(
        &self,
        referral_id: &str,
        payload: &[u8],
        onward: Option<&[u8]>,
    ) -> Result<(Result<Vec<u8>, AppError>, Option<Result<Vec<u8>, AppError>>), AppError> {
        let context = onward_context(referral_id);
        let mut sealed = vec![(payload, referral_id.as_bytes())];
        sealed.extend(onward.map(|onward| (onward, context.as_bytes())));
        let mut opened = self.vault.open_all(&sealed).await?.into_iter();
        let payload = opened.next().unwrap_or_else(|| Err(AppError::Internal("no payload opened".to_owned())));
        Ok((payload, opened.next()))
    }
}

/// The context a referral's onward limits are sealed under at rest: apart
/// from its payload's, so that neither opens as the other.
pub(crate) fn onward_context(referral_id: &str) -> String {
    format!("{referral_id}.onward")
}

/// A withdrawal entry's body at rest: `{}` for a whole withdrawal, or the
/// categories withdrawn.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WithdrawalAtRest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<std::collections::BTreeSet<crate::domain::DataCategory>>,
}

/// Jitter for a retry. Without randomness the retries are merely not spread out.
fn random_u32() -> u32 {
    use ring::rand::SecureRandom;
    let mut random = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut random);
    u32::from_le_bytes(random)
}

/// The posts of a round: the packets to each peer that takes batches
/// (`batch_limit` gives its packet limit), in batches of at most
/// [`MAX_BATCH_PACKETS`] whose bytes together stay within that limit, in
/// the order they come; every other packet alone. `peer_and_size` says
/// where a packet goes and its length.
fn posts<T>(
    packets: Vec<T>,
    peer_and_size: impl Fn(&T) -> (CountryCode, usize),
    batch_limit: impl Fn(CountryCode) -> Option<usize>,
) -> Vec<Vec<T>> {
    let mut posts: Vec<Vec<T>> = Vec::new();
    // Per peer: the batch being filled (its place in `posts`) and its bytes.
    let mut filling: std::collections::HashMap<CountryCode, (usize, usize)> = std::collections::HashMap::new();
    for packet in packets {
        let (peer, size) = peer_and_size(&packet);
        let Some(limit) = batch_limit(peer) else {
            posts.push(vec![packet]);
            continue;
        };
        if let Some((place, bytes)) = filling.get_mut(&peer)
            && bytes.saturating_add(size) <= limit
            && let Some(batch) = posts.get_mut(*place)
            && batch.len() < MAX_BATCH_PACKETS
        {
            *bytes += size;
            batch.push(packet);
            continue;
        }
        filling.insert(peer, (posts.len(), size));
        posts.push(vec![packet]);
    }
    posts
}

/// The span of one entry's attempt, with its ids.
fn attempt_span(item: &ClaimedDelivery) -> tracing::Span {
    tracing::info_span!("delivery_attempt", entry_id = %item.id, referral_id = tracing::field::Empty, packet_type = %item.packet_type)
}

fn corrupt(what: &str) -> AppError {
    AppError::Store(crate::store::StoreError::Corrupt(format!("outbox entry: unreadable {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    /// Each packet as (peer, size, number); the posts as lists of numbers.
    fn grouped(packets: &[(&str, usize)], batching: &[(&str, usize)]) -> Vec<Vec<usize>> {
        let packets: Vec<(CountryCode, usize, usize)> = packets.iter().enumerate().map(|(n, (peer, size))| (country(peer), *size, n)).collect();
        let limits: std::collections::HashMap<CountryCode, usize> = batching.iter().map(|(peer, limit)| (country(peer), *limit)).collect();
        posts(packets, |(peer, size, _)| (*peer, *size), |peer| limits.get(&peer).copied())
            .into_iter()
            .map(|post| post.into_iter().map(|(_, _, n)| n).collect())
            .collect()
    }

    #[test]
    fn packets_to_a_peer_that_takes_batches_go_together_and_others_alone() {
        let packets = [("NGA", 10), ("GMB", 10), ("NGA", 10), ("GMB", 10), ("NGA", 10)];
        assert_eq!(grouped(&packets, &[("NGA", 1000)]), vec![vec![0, 2, 4], vec![1], vec![3]]);
        assert_eq!(grouped(&packets, &[]), vec![vec![0], vec![1], vec![2], vec![3], vec![4]]);
        assert_eq!(grouped(&packets, &[("NGA", 1000), ("GMB", 1000)]), vec![vec![0, 2, 4], vec![1, 3]]);
    }

    #[test]
    fn a_batch_holds_at_most_the_peers_packet_limit_and_the_most_packets() {
        // 40 + 40 fit in 100; a third starts the next batch, which the fourth joins.
        assert_eq!(grouped(&[("NGA", 40), ("NGA", 40), ("NGA", 40), ("NGA", 60), ("NGA", 1)], &[("NGA", 100)]), vec![vec![0, 1], vec![2, 3], vec![4]]);
        // Exactly the limit fits.
        assert_eq!(grouped(&[("NGA", 50), ("NGA", 50)], &[("NGA", 100)]), vec![vec![0, 1]]);
        let many: Vec<(&str, usize)> = (0..MAX_BATCH_PACKETS * 2 + 1).map(|_| ("NGA", 1)).collect();
        let sizes: Vec<usize> = grouped(&many, &[("NGA", usize::MAX)]).iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_BATCH_PACKETS, MAX_BATCH_PACKETS, 1]);
    }
}
