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
use crate::crypto::receipt::{self, Expected};
use crate::directory::{MemberStatus, ProtocolVersion};
use crate::domain::onward::OnwardLimits;
use crate::domain::withdrawal::WithdrawalNotice;
use crate::domain::{CountryCode, OrgId, Purpose};
use crate::store::{ClaimedDelivery, Settlement, StoredPacket, Write, Written};
use crate::wire::FailureCode;

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

impl Gateway {
    /// Claims the entries due now and attempts each, concurrently.
    #[tracing::instrument(name = "delivery_round", skip_all)]
    pub async fn deliver_due(self: &Arc<Self>, transport: &Arc<dyn PeerTransport>) -> Result<DeliveryRound, AppError> {
        let now = self.now();
        let claimed = self.store.claim_deliveries(now.timestamp_millis(), self.lease_ms(), self.delivery.batch).await?;
        let mut round = DeliveryRound { claimed: claimed.len(), ..DeliveryRound::default() };
        let claimed = self.coalesce_statuses(claimed, now).await?;
        let mut attempts = tokio::task::JoinSet::new();
        for item in claimed {
            let gateway = Arc::clone(self);
            let transport = Arc::clone(transport);
            attempts.spawn(tracing::Instrument::in_current_span(async move { gateway.attempt(transport.as_ref(), item).await }));
        }
        while let Some(joined) = attempts.join_next().await {
            match joined.map_err(|e| AppError::Internal(e.to_string())).and_then(|attempt| attempt) {
                Ok(Attempt::Delivered) => round.delivered += 1,
                Ok(Attempt::Expired) => round.expired += 1,
                Ok(Attempt::Retrying) => round.retrying += 1,
                Ok(Attempt::Gone) => {}
                // The lease runs out and the entry falls due again; the other attempts go on.
                Err(error) => tracing::error!(%error, "delivery attempt failed inside the gateway"),
            }
        }
        Ok(round)
    }

    /// One attempt at an entry, in a span of its ids; its outcome logged at debug.
    #[tracing::instrument(name = "delivery_attempt", skip_all, fields(entry_id = %item.id, referral_id = tracing::field::Empty, packet_type = %item.packet_type))]
    async fn attempt(&self, transport: &dyn PeerTransport, item: ClaimedDelivery) -> Result<Attempt, AppError> {
        if let Some(referral_id) = &item.referral_id {
            tracing::Span::current().record("referral_id", tracing::field::display(referral_id.as_str()));
        }
        let attempt = self.attempt_once(transport, item).await;
        if let Ok(outcome) = &attempt {
            tracing::debug!(?outcome, "delivery attempt ended");
        }
        attempt
    }

    async fn attempt_once(&self, transport: &dyn PeerTransport, item: ClaimedDelivery) -> Result<Attempt, AppError> {
        let now = self.now();
        if now.timestamp_millis() >= item.deadline_ms {
            self.settle(&item, Settlement::Expired, now).await?;
            self.observe_expiry(&item);
            return Ok(Attempt::Expired);
        }
        let peer = CountryCode::parse(&item.destination_country).map_err(|_| corrupt("destination country"))?;
        let directory = self.directory();
        let endpoint = match directory.gateway(peer) {
            Some(gateway) if gateway.status == MemberStatus::Active => gateway.endpoint.clone(),
            Some(_) => return self.retry(&item, FailureCode::PeerSuspended.as_str(), false).await,
            None => return self.retry(&item, FailureCode::PeerNotListed.as_str(), false).await,
        };
        // Coalesced for a peer whose entry lists version 2 no more: never sent, its statuses go one by one.
        let carrier_unreadable_by_peer = item.packet_type == PacketType::Statuses.as_str() && !directory.speaks(peer, ProtocolVersion::COALESCED_STATUSES);
        if carrier_unreadable_by_peer && item.packet.is_none() {
            return self.dissolve(&item).await;
        }
        let packet = match &item.packet {
            Some(kept) => kept.clone(),
            None => match self.seal_packet(&item, peer, now).await? {
                // Concurrent attempts' packets are kept in one commit.
                Ok(made) => match self.writer.write(Write::KeepPacket { entry_id: item.id.clone(), packet: made, sealed_from: item.payload.key_id.clone() }).await? {
                    Written::PacketKept(kept) => kept,
                    // Settled, withdrawn, or cut meanwhile: another attempt sends what the entry holds now.
                    _ => return Ok(Attempt::Gone),
                },
                Err(missing) => return self.retry(&item, missing.as_str(), false).await,
            },
        };
        // The peer would refuse it on arrival (a limit lowered since the case
        // was accepted): said exactly, and tried again only in case the
        // directory raises the limit before the deadline.
        if packet.packet.len() > directory.packet_limit(peer) {
            return self.retry(&item, FailureCode::PacketTooLarge.as_str(), false).await;
        }
        let receipt = match transport.send(peer, &endpoint, &packet.packet).await {
            Ok(receipt) => receipt,
            // Refused on opening: the peer did not take it (bytes it took get their receipt
            // again), so the statuses it carries may go one by one without being applied
            // twice. Not on a `receipt-*` code: a `200` whose body is no receipt.
            Err(SendFailure::Refused { code }) if carrier_unreadable_by_peer && FailureCode::refused_on_opening(&code) => {
                tracing::info!(code = %code, "a coalesced packet refused by a peer that no longer lists version 2");
                return self.dissolve(&item).await;
            }
            Err(failure) => {
                // See `FailureCode::asks_for_a_new_packet`.
                let reseal = failure.known().is_some_and(FailureCode::asks_for_a_new_packet);
                return self.retry(&item, failure.code(), reseal).await;
            }
        };
        let digest = packet::digest_of(packet.packet.as_bytes());
        let expected = Expected { packet_id: &packet.packet_id, packet_sha256: &digest, from: peer, to: self.country };
        if let Err(refusal) = receipt::verify(&receipt, directory.as_ref(), self.now(), &expected) {
            return self.retry(&item, FailureCode::from(&refusal).as_str(), false).await;
        }
        self.settle(&item, Settlement::Delivered { receipt }, self.now()).await?;
        self.observe_delivery(&item, self.now());
        Ok(Attempt::Delivered)
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
        let plaintext = self.vault.open(&item.payload.sealed, item.id.as_bytes()).await?;
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
        let onward = match &item.onward {
            Some(sealed) if packet_type == PacketType::Referral => match self.vault.open(sealed, onward_context(&item.id).as_bytes()).await {
                Ok(opened) => serde_json::from_slice::<OnwardLimits>(&opened).ok(),
                Err(error) => {
                    tracing::warn!(%error, "a referral's onward limits are unreadable; it goes without them");
                    None
                }
            },
            _ => None,
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

fn corrupt(what: &str) -> AppError {
    AppError::Store(crate::store::StoreError::Corrupt(format!("outbox entry: unreadable {what}")))
}
