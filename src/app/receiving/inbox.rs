//! Receiving a packet from a peer gateway: open it (every check of
//! `crypto::packet`), tell a redelivery from a replay, keep the claims sealed
//! in the inbox, and answer a signed receipt. What the transport knows (the
//! member that connected) comes in as `peer`.

use chrono::Duration;

use crate::app::{AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::crypto::packet::{self, Arrival, OpenError, PacketType, Receiver};
use crate::crypto::receipt::{self, ReceiptClaims};
use crate::domain::CountryCode;
use crate::store::{NewInboxEntry, SealedPayload, Write, Written};
use crate::wire::FailureCode;

/// How far a peer's clock may run ahead of ours.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// Longest packet lifetime accepted; ids are kept at least this long.
pub const MAX_PACKET_LIFETIME: Duration = Duration::days(30);

impl Gateway {
    /// Takes a sealed packet that `peer` sent and returns the signed receipt
    /// (the same one again for a redelivery of the same bytes).
    #[tracing::instrument(name = "receive_packet", skip_all, fields(peer = %peer))]
    pub async fn receive_packet(&self, sealed: &[u8], peer: CountryCode) -> Result<String, AppError> {
        let keys = self.federation.as_ref().ok_or(AppError::NotFederated)?;
        let directory = self.directory();
        let now = self.clock.now();
        let decryption = directory.valid_decryption_keys(self.country, now, &keys.decryption);
        // The limit this gateway publishes in the directory, which its peers check before they send.
        let max_bytes = directory.packet_limit(self.country);
        let receiver = Receiver {
            country: self.country,
            keys: &decryption,
            now,
            max_skew: MAX_CLOCK_SKEW,
            max_bytes,
            max_lifetime: MAX_PACKET_LIFETIME,
        };
        let actor = Actor { org: None, subject: format!("gateway:{peer}") };
        // The same bytes again from the same member: its first receipt, even
        // if a key it was sealed or signed with has retired since.
        if sealed.len() <= max_bytes
            && let Some(receipt) = self.store.receipt_for_bytes(&packet::digest_of(sealed), peer.as_str()).await?
        {
            return self.answer_duplicate(receipt, actor).await;
        }
        let claims = match packet::open(sealed, &receiver, directory.as_ref(), Some(peer)) {
            Ok(claims) => claims,
            Err(refusal) => return Err(self.refuse(actor, refusal).await),
        };
        let digest = packet::digest_of(sealed);
        // A known id (a replay, or the same bytes on two connections at
        // once) is told apart when the insert finds it, below.

        let signer = directory.current_signing_key(self.country, now, &keys.signing).ok_or(AppError::NotFederated)?;
        let receipt = receipt::sign(
            &ReceiptClaims {
                packet_id: claims.packet_id.clone(),
                packet_sha256: digest.clone(),
                received_at: now,
                issuer: self.country,
                audience: claims.issuer,
            },
            signer,
        )
        .map_err(|e| AppError::Internal(e.to_string()))?;
        let plaintext = serde_json::to_vec(&claims).map_err(|e| AppError::Internal(e.to_string()))?;
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
        let audit = AuditEvent::new(now, actor.clone(), Action::PacketReceive, "accepted");
        match self.writer.write(Write::Inbox { entry: Box::new(entry), audit }).await? {
            Written::KnownPacket => {
                // Known already: a replay, or the same bytes first brought by another connection.
                self.answer_known(&claims.packet_id, &digest, &actor).await?.ok_or(AppError::Internal("inbox lost a packet".to_owned()))
            }
            _ => {
                self.wake_processing();
                Ok(receipt)
            }
        }
    }

    /// For a packet id already in the inbox: its receipt if these are the
    /// same bytes, a replay refusal otherwise; `None` for a new id.
    async fn answer_known(&self, packet_id: &str, digest: &str, actor: &Actor) -> Result<Option<String>, AppError> {
        let Some(known) = self.store.inbox_receipt(packet_id).await? else {
            return Ok(None);
        };
        match packet::classify_arrival(Some(&known.packet_sha256), digest) {
            Arrival::Redelivery => self.answer_duplicate(known.receipt, actor.clone()).await.map(Some),
            Arrival::New => Ok(Some(known.receipt)),
            Arrival::Replay => Err(self.refuse(actor.clone(), OpenError::Replayed).await),
        }
    }

    /// Audits a redelivery of bytes taken before (`duplicate`), so that a
    /// sender's retries can be told from replays and from first arrivals,
    /// and answers the first receipt again.
    async fn answer_duplicate(&self, receipt: String, actor: Actor) -> Result<String, AppError> {
        let event = AuditEvent::new(self.clock.now(), actor, Action::PacketReceive, "duplicate");
        self.writer.write(Write::Audit(event)).await?;
        Ok(receipt)
    }

    /// The largest sealed packet this gateway takes, as its directory entry publishes it.
    pub fn packet_limit(&self) -> usize {
        self.directory().packet_limit(self.country)
    }

    /// Refuses (and audits) a packet that `peer` sent but that could not be
    /// read whole: a body over the size limit.
    pub async fn refuse_oversized_packet(&self, peer: CountryCode) -> AppError {
        let actor = Actor { org: None, subject: format!("gateway:{peer}") };
        self.refuse(actor, OpenError::TooLarge { limit: self.packet_limit() }).await
    }

    /// Audits a refused packet with its code and returns the error to answer.
    async fn refuse(&self, actor: Actor, refusal: OpenError) -> AppError {
        let event = AuditEvent::new(self.clock.now(), actor, Action::PacketReceive, "refused").reasons([FailureCode::from(&refusal).as_str()]);
        if let Err(error) = self.writer.write(Write::Audit(event)).await {
            return AppError::Store(error);
        }
        AppError::PacketRefused(refusal)
    }
}
