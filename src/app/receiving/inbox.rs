//! Receiving a packet, or a batch of them, from a peer gateway: open each
//! (every check of `crypto::packet`), tell a redelivery from a replay, keep
//! the claims sealed in the inbox, and answer a signed receipt (one per
//! batch). What the transport knows (the
//! member that connected) comes in as `peer`.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::app::{AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::crypto::jose_keys::DecryptionKey;
use crate::crypto::packet::{self, Arrival, OpenError, PacketType, Receiver};
use crate::crypto::receipt::{self, BatchReceiptClaims, ReceiptClaims};
use crate::directory::Directory;
use crate::domain::CountryCode;
use crate::store::{InboxReceipt, NewInboxEntry, SealedPayload, Write, Written};
use crate::wire::{BatchAnswer, BatchRefusal, FailureCode};

/// Most packets of one batch opened at once.
const BATCH_OPENINGS: usize = 8;
/// How far a peer's clock may run ahead of ours.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// Longest packet lifetime accepted; ids are kept at least this long.
pub const MAX_PACKET_LIFETIME: Duration = Duration::days(30);

/// How a packet's receipt is made: signed for it alone, kept with it and
/// answered again for a redelivery; or listed in the receipt of the batch
/// it came in, signed once the whole batch is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receipting {
    Alone,
    InBatch,
}

/// A packet taken, now or before, as the bytes that came.
struct Taken {
    digest: String,
    /// The receipt to answer, for a packet posted alone.
    receipt: Option<String>,
}

/// What one reception (one request) checks packets against: the directory,
/// the keys and the time at its start.
struct Reception {
    directory: Arc<Directory>,
    decryption: Vec<DecryptionKey>,
    now: DateTime<Utc>,
    max_bytes: usize,
    peer: CountryCode,
    actor: Actor,
}

impl Gateway {
    fn reception(&self, peer: CountryCode) -> Result<Reception, AppError> {
        let keys = self.federation.as_ref().ok_or(AppError::NotFederated)?;
        let directory = self.directory();
        let now = self.clock.now();
        let decryption = directory.valid_decryption_keys(self.country, now, &keys.decryption);
        // The limit this gateway publishes in the directory, which its peers check before they send.
        let max_bytes = directory.packet_limit(self.country);
        let actor = Actor { org: None, subject: format!("gateway:{peer}") };
        Ok(Reception { directory, decryption, now, max_bytes, peer, actor })
    }

    /// Takes a sealed packet that `peer` sent and returns the signed receipt
    /// (the same one again for a redelivery of the same bytes).
    #[tracing::instrument(name = "receive_packet", skip_all, fields(peer = %peer))]
    pub async fn receive_packet(&self, sealed: &[u8], peer: CountryCode) -> Result<String, AppError> {
        let reception = self.reception(peer)?;
        match self.take(&reception, sealed, Receipting::Alone).await? {
            Ok(taken) => taken.receipt.ok_or_else(|| AppError::Internal("a packet taken alone without its receipt".to_owned())),
            Err(refusal) => Err(AppError::PacketRefused(refusal)),
        }
    }

    /// Takes a batch of sealed packets that `peer` sent (protocol version 3,
    /// `federation.md` §5c), each exactly as if it had come alone, opened
    /// concurrently; answers one signed receipt listing every packet taken
    /// (now, or before as the same bytes) and the refusal of each other.
    #[tracing::instrument(name = "receive_batch", skip_all, fields(peer = %peer, packets = packets.len()))]
    pub async fn receive_batch(self: &Arc<Self>, packets: Vec<Vec<u8>>, peer: CountryCode) -> Result<BatchAnswer, AppError> {
        let reception = Arc::new(self.reception(peer)?);
        // Nothing is taken that could not be receipted: as alone, where the receipt is signed before the packet is kept.
        let keys = self.federation.as_ref().ok_or(AppError::NotFederated)?;
        let signer = reception.directory.current_signing_key(self.country, reception.now, &keys.signing).ok_or(AppError::NotFederated)?;
        // A member's one request opens at most this many packets at once.
        let opening = Arc::new(tokio::sync::Semaphore::new(BATCH_OPENINGS));
        let mut takings = tokio::task::JoinSet::new();
        for (index, sealed) in packets.into_iter().enumerate() {
            let gateway = Arc::clone(self);
            let reception = Arc::clone(&reception);
            let opening = Arc::clone(&opening);
            takings.spawn(tracing::Instrument::in_current_span(async move {
                let _turn = opening.acquire_owned().await.map_err(|e| AppError::Internal(e.to_string()))?;
                gateway.take(&reception, &sealed, Receipting::InBatch).await.map(|taking| (index, taking))
            }));
        }
        let mut taken = Vec::new();
        let mut refused = Vec::new();
        // Every packet is waited for: one that failed inside is in neither list and is sent again.
        let mut failure = None;
        while let Some(joined) = takings.join_next().await {
            match joined.map_err(|e| AppError::Internal(e.to_string())).and_then(|taking| taking) {
                Ok((index, Ok(packet))) => taken.push((index, packet.digest)),
                Ok((index, Err(refusal))) => refused.push(BatchRefusal { index, code: FailureCode::from(&refusal).as_str().to_owned() }),
                Err(error) => {
                    tracing::error!(%error, "a packet of a batch could not be taken; the sender sends it again");
                    failure.get_or_insert(error);
                }
            }
        }
        if taken.is_empty() && refused.is_empty()
            && let Some(error) = failure
        {
            return Err(error);
        }
        taken.sort_unstable();
        refused.sort_unstable_by_key(|refusal| refusal.index);
        let receipt = if taken.is_empty() {
            None
        } else {
            let claims = BatchReceiptClaims {
                packets_sha256: taken.into_iter().map(|(_, digest)| digest).collect(),
                received_at: reception.now,
                issuer: self.country,
                audience: peer,
            };
            Some(receipt::sign_batch(&claims, signer).map_err(|e| AppError::Internal(e.to_string()))?)
        };
        Ok(BatchAnswer { receipt, refused })
    }

    /// Takes one packet: the same bytes again are a redelivery (audited
    /// `duplicate`), bytes that do not open or reuse a known id are refused
    /// (audited `refused`), any other packet is kept in the inbox.
    async fn take(&self, reception: &Reception, sealed: &[u8], receipting: Receipting) -> Result<Result<Taken, OpenError>, AppError> {
        let peer = reception.peer;
        // The same bytes again from the same member: its first receipt, even
        // if a key it was sealed or signed with has retired since.
        let digest = packet::digest_of(sealed);
        if sealed.len() <= reception.max_bytes
            && let Some(known) = self.store.receipt_for_bytes(&digest, peer.as_str()).await?
        {
            return self.redelivered(known, reception, receipting).await.map(Ok);
        }
        let receiver = Receiver {
            country: self.country,
            keys: &reception.decryption,
            now: reception.now,
            max_skew: MAX_CLOCK_SKEW,
            max_bytes: reception.max_bytes,
            max_lifetime: MAX_PACKET_LIFETIME,
        };
        let claims = match packet::open(sealed, &receiver, reception.directory.as_ref(), Some(peer)) {
            Ok(claims) => claims,
            Err(refusal) => return self.refused(&reception.actor, refusal).await.map(Err),
        };
        // A known id (a replay, or the same bytes on two connections at
        // once) is told apart when the insert finds it, below.
        let receipt = match receipting {
            Receipting::Alone => Some(self.receipt_alone(&claims.packet_id, &digest, claims.issuer, reception.now, reception.now)?),
            Receipting::InBatch => None,
        };
        let plaintext = serde_json::to_vec(&claims).map_err(|e| AppError::Internal(e.to_string()))?;
        let now = reception.now;
        // Each received case under a key of its own, as at the sending gateway;
        // statuses, withdrawals and confirmations carry ids and codes only.
        let sealed_claims = if claims.packet_type == PacketType::Referral {
            let case_key = self.vault.new_case_key(now.timestamp_millis()).await?;
            self.vault.seal(&case_key, &plaintext, claims.packet_id.as_bytes())?
        } else {
            SealedPayload { sealed: self.keys().seal(&plaintext, claims.packet_id.as_bytes())?, key_id: self.keys().data_key_id() }
        };
        let entry = NewInboxEntry {
            packet_id: claims.packet_id.clone(),
            issuer: claims.issuer.to_string(),
            packet_sha256: digest.clone(),
            packet_type: claims.packet_type.as_str().to_owned(),
            recipient_org: claims.recipient.to_string(),
            claims: sealed_claims,
            receipt: receipt.clone(),
            received_ms: now.timestamp_millis(),
            expires_ms: claims.expires_at.timestamp_millis(),
        };
        let audit = AuditEvent::new(now, reception.actor.clone(), Action::PacketReceive, "accepted");
        match self.writer.write(Write::Inbox { entry: Box::new(entry), audit }).await? {
            Written::KnownPacket => {
                // Known already: a replay, or the same bytes first brought by another connection.
                let known = self.store.inbox_receipt(&claims.packet_id).await?.ok_or(AppError::Internal("inbox lost a packet".to_owned()))?;
                match packet::classify_arrival(Some(&known.packet_sha256), &digest) {
                    Arrival::Replay => self.refused(&reception.actor, OpenError::Replayed).await.map(Err),
                    Arrival::Redelivery | Arrival::New => self.redelivered(known, reception, receipting).await.map(Ok),
                }
            }
            _ => {
                self.wake_processing();
                Ok(Ok(Taken { digest, receipt }))
            }
        }
    }

    /// A packet's receipt of its own.
    /// Signed with the key valid `now`; `received_at`: when the packet was taken.
    fn receipt_alone(&self, packet_id: &str, digest: &str, sender: CountryCode, received_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<String, AppError> {
        let keys = self.federation.as_ref().ok_or(AppError::NotFederated)?;
        let signer = self.directory().current_signing_key(self.country, now, &keys.signing).ok_or(AppError::NotFederated)?;
        let claims = ReceiptClaims { packet_id: packet_id.to_owned(), packet_sha256: digest.to_owned(), received_at, issuer: self.country, audience: sender };
        receipt::sign(&claims, signer).map_err(|e| AppError::Internal(e.to_string()))
    }

    /// Audits a redelivery of bytes taken before (`duplicate`), so that a
    /// sender's retries can be told from replays and from first arrivals.
    /// Posted alone, it is answered its first receipt again; one first taken
    /// in a batch, which has none of its own, a receipt signed now, dated
    /// when it was taken.
    async fn redelivered(&self, known: InboxReceipt, reception: &Reception, receipting: Receipting) -> Result<Taken, AppError> {
        let event = AuditEvent::new(self.clock.now(), reception.actor.clone(), Action::PacketReceive, "duplicate");
        self.writer.write(Write::Audit(event)).await?;
        let receipt = match (receipting, known.receipt) {
            (Receipting::InBatch, _) => None,
            (Receipting::Alone, Some(first)) => Some(first),
            (Receipting::Alone, None) => {
                let taken_at = DateTime::from_timestamp_millis(known.received_ms).unwrap_or(reception.now);
                Some(self.receipt_alone(&known.packet_id, &known.packet_sha256, reception.peer, taken_at, reception.now)?)
            }
        };
        Ok(Taken { digest: known.packet_sha256, receipt })
    }

    /// The largest sealed packet this gateway takes, as its directory entry publishes it.
    pub fn packet_limit(&self) -> usize {
        self.directory().packet_limit(self.country)
    }

    /// Refuses (and audits) a packet that `peer` sent but that could not be
    /// read whole: a body over the size limit.
    pub async fn refuse_oversized_packet(&self, peer: CountryCode) -> AppError {
        let actor = Actor { org: None, subject: format!("gateway:{peer}") };
        match self.refused(&actor, OpenError::TooLarge { limit: self.packet_limit() }).await {
            Ok(refusal) => AppError::PacketRefused(refusal),
            Err(error) => error,
        }
    }

    /// Audits a batch that `peer` sent but that could not be read as one
    /// (`code`): none of its packets was looked at.
    pub async fn refuse_batch(&self, peer: CountryCode, code: FailureCode) -> Result<(), AppError> {
        let actor = Actor { org: None, subject: format!("gateway:{peer}") };
        let event = AuditEvent::new(self.clock.now(), actor, Action::PacketReceive, "refused").reasons([code.as_str()]);
        self.writer.write(Write::Audit(event)).await?;
        Ok(())
    }

    /// Audits a refused packet with its code; the refusal to answer.
    async fn refused(&self, actor: &Actor, refusal: OpenError) -> Result<OpenError, AppError> {
        let event = AuditEvent::new(self.clock.now(), actor.clone(), Action::PacketReceive, "refused").reasons([FailureCode::from(&refusal).as_str()]);
        self.writer.write(Write::Audit(event)).await?;
        Ok(refusal)
    }
}
