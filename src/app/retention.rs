//! The retention sweep: whatever passed its retention deadline is erased,
//! on both sides of the federation. Each gateway holds the deadline itself
//! (the sender on the referral, the receiver on the inbox entry, from the
//! packet's claims), so no packet crosses for it.
//!
//! As for a withdrawal, the case keys go first: from the moment they are
//! destroyed, nothing of the case is readable in any copy of the database.
//! The rows are blanked and the erasure audited afterwards, each case in one
//! transaction. A crash in between leaves a case whose key is gone but
//! whose rows say it is live: the next sweep finds it again and finishes.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::domain::OrgId;
use chrono::{DateTime, Utc};

use crate::domain::retention::RetentionDeadline;
use crate::store::{RetentionErasure, StoredRetention, Write, Written};

/// What one sweep erased.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErasedCounts {
    /// Referrals sent from here.
    pub sent: u64,
    /// Cases received here.
    pub received: u64,
}

/// Erasures since the process started, for the metrics.
#[derive(Debug, Default)]
pub struct ErasureCounters {
    sent: AtomicU64,
    received: AtomicU64,
}

impl ErasureCounters {
    pub fn totals(&self) -> ErasedCounts {
        ErasedCounts { sent: self.sent.load(Ordering::Relaxed), received: self.received.load(Ordering::Relaxed) }
    }

    fn add(&self, counts: ErasedCounts) {
        self.sent.fetch_add(counts.sent, Ordering::Relaxed);
        self.received.fetch_add(counts.received, Ordering::Relaxed);
    }
}

impl Gateway {
    /// Erases up to `limit` referrals sent from here and up to `limit`
    /// received cases whose retention deadline has passed now; returns how
    /// many of each this call erased (another replica may have taken some).
    #[tracing::instrument(name = "retention_sweep", skip_all)]
    pub async fn erase_expired(&self, limit: i64) -> Result<ErasedCounts, AppError> {
        let now = self.now();
        let now_ms = now.timestamp_millis();
        let sent = self.store.expired_referrals(now_ms, limit).await?;
        let received = self.store.expired_received(now_ms, limit).await?;
        if sent.is_empty() && received.is_empty() {
            return Ok(ErasedCounts::default());
        }
        // Keys first: whatever happens below, the cases are unreadable from here on.
        let keys: Vec<String> = sent
            .iter()
            .filter_map(|referral| referral.key_id.clone())
            .chain(received.iter().map(|item| item.claims.key_id.clone()))
            .collect();
        self.vault.destroy(&keys).await?;
        let actor = Actor { org: None, subject: format!("gateway:{}", self.country) };
        let audit = |id: &str, side: &str| {
            AuditEvent::new(now, actor.clone(), Action::RetentionErase, "erased").referral(id).reasons(["retention_passed".to_owned(), format!("side:{side}")])
        };
        // A webhook recipient is pushed a notice of the erasure; it gets as long as a packet would.
        let push_until_ms = self.delivery_deadline(now, None).timestamp_millis();
        let mut writes = Vec::with_capacity(sent.len() + received.len());
        for referral in &sent {
            let erasure = RetentionErasure::Sent { referral_id: referral.referral_id.clone() };
            writes.push(Write::RetentionErase { erasure, at_ms: now_ms, audit: audit(&referral.referral_id, "sent") });
        }
        for item in &received {
            let erasure_pushed = OrgId::parse(&item.recipient_org).is_ok_and(|org| self.takes_webhook_pushes(&org));
            let erasure = RetentionErasure::Received { packet_id: item.packet_id.clone(), erasure_pushed, push_until_ms };
            writes.push(Write::RetentionErase { erasure, at_ms: now_ms, audit: audit(&item.packet_id, "received") });
        }
        let mut counts = ErasedCounts::default();
        for (index, written) in self.writer.write_all(writes).await.into_iter().enumerate() {
            let is_sent = index < sent.len();
            match written {
                Ok(Written::Audited { .. }) if is_sent => counts.sent += 1,
                Ok(Written::Audited { .. }) => counts.received += 1,
                // Erased meanwhile, by another replica or a withdrawal.
                Ok(_) => {}
                // Its key is gone already; the next sweep finds it again and blanks it.
                Err(error) => {
                    let side = if is_sent { "sent" } else { "received" };
                    tracing::error!(%error, side, "recording a retention erasure failed");
                }
            }
        }
        // A partial withdrawal may have put a payload under a new key between the
        // destruction above and the write: that key goes too.
        for referral in &sent {
            if let Some(payload) = self.store.sealed_payload(&referral.referral_id).await?
                && referral.key_id.as_deref() != Some(payload.key_id.as_str())
            {
                self.vault.destroy(&[payload.key_id]).await?;
            }
        }
        self.erasures.add(counts);
        if counts.sent > 0 || counts.received > 0 {
            tracing::info!(sent = counts.sent, received = counts.received, "retention deadlines passed: cases erased");
        }
        if counts.received > 0 {
            self.wake_pushing();
        }
        Ok(counts)
    }

    /// Erasures by the retention sweep since this process started.
    pub fn retention_erasures(&self) -> ErasedCounts {
        self.erasures.totals()
    }
}

/// A retention deadline in the store's terms.
pub(crate) fn stored_retention(deadline: RetentionDeadline) -> StoredRetention {
    StoredRetention { until_ms: deadline.until.timestamp_millis(), days_after_closure: deadline.days_after_closure.map(i64::from) }
}

/// A stored retention deadline in the domain's terms; `None` if its date is out of range.
pub(crate) fn retention_deadline(stored: StoredRetention) -> Option<RetentionDeadline> {
    Some(RetentionDeadline {
        until: DateTime::<Utc>::from_timestamp_millis(stored.until_ms)?,
        days_after_closure: stored.days_after_closure.and_then(|days| u32::try_from(days).ok()),
    })
}

