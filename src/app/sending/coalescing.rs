//! The outbox worker's statuses to one peer, coalesced (protocol version
//! 2, `federation.md` §5b): the statuses a receiving gateway claimed in one
//! round for one sending gateway go in one packet, under one signature,
//! one request and one receipt, instead of one of each per status. Only
//! to a peer whose directory entry lists version 2; the others get one
//! status packet per status, as before.

use chrono::{DateTime, Utc};

use crate::app::{new_id, AppError, Gateway};
use crate::crypto::packet::PacketType;
use crate::directory::ProtocolVersion;
use crate::domain::status::{StatusBatch, StatusReport};
use crate::domain::CountryCode;
use crate::store::{ClaimedDelivery, NewReply, SealedPayload, Write, Written};

/// How far apart the deadlines of statuses carried together may lie. A
/// carrier expires at the earliest of them: no status goes out of the
/// window it was queued with by more than this.
const DEADLINE_SPREAD_MS: i64 = 3_600_000;

impl Gateway {
    /// The claimed entries to attempt: statuses to a peer that takes
    /// version 2, never sent before, carried two or more at a time by a
    /// new `statuses` entry each; the rest as claimed. Statuses that could
    /// not be carried (one left the outbox meanwhile) are left due at once
    /// for the next round.
    pub(super) async fn coalesce_statuses(&self, claimed: Vec<ClaimedDelivery>, now: DateTime<Utc>) -> Result<Vec<ClaimedDelivery>, AppError> {
        let directory = self.directory();
        let mut attempts = Vec::with_capacity(claimed.len());
        // By peer and by the organisation the statuses are about, which a packet names.
        let mut groups: std::collections::BTreeMap<(String, String), Vec<ClaimedDelivery>> = std::collections::BTreeMap::new();
        for item in claimed {
            let takes_statuses = CountryCode::parse(&item.destination_country).is_ok_and(|peer| directory.speaks(peer, ProtocolVersion::COALESCED_STATUSES));
            if takes_statuses && item.packet_type == PacketType::Status.as_str() && item.packet.is_none() && now.timestamp_millis() < item.deadline_ms {
                groups.entry((item.destination_country.clone(), item.recipient_org.clone())).or_default().push(item);
            } else {
                attempts.push(item);
            }
        }
        for mut group in groups.into_values() {
            group.sort_by_key(|item| item.deadline_ms);
            for members in carried_together(group) {
                if members.len() < 2 {
                    attempts.extend(members);
                } else {
                    match self.carry(&members, now).await {
                        Ok(Carried::By(carrier)) => attempts.push(*carrier),
                        Ok(Carried::NotAll) => {}
                        // Each tried on its own, as before version 2: the round goes on.
                        Ok(Carried::NotTogether) => attempts.extend(members),
                        Err(error) => {
                            tracing::warn!(%error, "coalescing statuses failed; each goes on its own");
                            attempts.extend(members);
                        }
                    }
                }
            }
        }
        Ok(attempts)
    }

    /// One new entry carrying `members`' statuses, claimed by this worker.
    async fn carry(&self, members: &[ClaimedDelivery], now: DateTime<Utc>) -> Result<Carried, AppError> {
        let Some(first) = members.first() else {
            return Ok(Carried::NotAll);
        };
        let sealed: Vec<(&[u8], &[u8])> = members.iter().map(|m| (m.payload.sealed.as_slice(), m.id.as_bytes())).collect();
        let mut statuses = Vec::with_capacity(members.len());
        for opened in self.vault.open_all(&sealed).await? {
            match opened.ok().and_then(|plaintext| serde_json::from_slice::<StatusReport>(&plaintext).ok()) {
                Some(report) => statuses.push(report),
                None => {
                    tracing::warn!("a queued status does not read; its group goes one status at a time");
                    return Ok(Carried::NotTogether);
                }
            }
        }
        let body = serde_json::to_vec(&StatusBatch { statuses }).map_err(|e| AppError::Internal(e.to_string()))?;
        // Signed, then encrypted, each in base64url: well under a quarter of the
        // peer's limit as a body stays under the limit as a packet.
        let peer_limit = CountryCode::parse(&first.destination_country).map_or(0, |peer| self.directory().packet_limit(peer));
        if body.len() > peer_limit / 4 {
            return Ok(Carried::NotTogether);
        }
        let id = new_id()?;
        let payload = SealedPayload { sealed: self.keys().seal(&body, id.as_bytes())?, key_id: self.keys().data_key_id() };
        let deadline_ms = members.iter().map(|m| m.deadline_ms).min().unwrap_or(first.deadline_ms);
        let carrier = NewReply {
            packet_id: id,
            packet_type: PacketType::Statuses.as_str().to_owned(),
            destination_country: first.destination_country.clone(),
            recipient_org: first.recipient_org.clone(),
            payload,
            deadline_ms,
            // Its delivery is timed from when the first status it carries was queued.
            created_ms: members.iter().map(|m| m.created_ms).min().unwrap_or(first.created_ms),
        };
        let claimed = ClaimedDelivery::of_reply(&carrier);
        let members_ids = members.iter().map(|m| m.id.clone()).collect();
        let lease_until_ms = now.timestamp_millis().saturating_add(self.lease_ms());
        match self.writer.write(Write::Coalesce { carrier: Box::new(carrier), members: members_ids, lease_until_ms }).await? {
            Written::Coalesced => {}
            _ => return Ok(Carried::NotAll),
        }
        tracing::debug!(carried = members.len(), "statuses coalesced into one packet");
        Ok(Carried::By(Box::new(claimed)))
    }
}

/// What became of statuses to be carried together.
enum Carried {
    /// By this new entry, claimed by this worker.
    By(Box<ClaimedDelivery>),
    /// Not at all: one was no longer a pending status claimed here. All
    /// are due at once, for the next round.
    NotAll,
    /// Not at all: one did not read, or together they would not fit in
    /// a packet the peer takes. Each goes on its own.
    NotTogether,
}

/// Statuses to one peer about one organisation's cases, soonest deadline
/// first, cut into the groups one packet carries: at most
/// [`StatusBatch::MAX`], deadlines at most [`DEADLINE_SPREAD_MS`] apart.
fn carried_together(sorted: Vec<ClaimedDelivery>) -> Vec<Vec<ClaimedDelivery>> {
    let mut groups: Vec<Vec<ClaimedDelivery>> = Vec::new();
    for item in sorted {
        match groups.last_mut() {
            Some(group) if group.len() < StatusBatch::MAX && group.first().is_some_and(|first| item.deadline_ms - first.deadline_ms <= DEADLINE_SPREAD_MS) => {
                group.push(item)
            }
            _ => groups.push(vec![item]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_due_by(id: usize, deadline_ms: i64) -> ClaimedDelivery {
        ClaimedDelivery::of_reply(&NewReply {
            packet_id: format!("s{id}"),
            packet_type: PacketType::Status.as_str().to_owned(),
            destination_country: "ITA".to_owned(),
            recipient_org: "gmb-iom-banjul".to_owned(),
            payload: SealedPayload { sealed: Vec::new(), key_id: String::new() },
            deadline_ms,
            created_ms: 0,
        })
    }

    fn ids(groups: &[Vec<ClaimedDelivery>]) -> Vec<Vec<&str>> {
        groups.iter().map(|group| group.iter().map(|item| item.id.as_str()).collect()).collect()
    }

    #[test]
    fn deadlines_within_the_spread_go_together_and_a_later_one_starts_a_new_packet() {
        let hour = DEADLINE_SPREAD_MS;
        let sorted = vec![status_due_by(1, 0), status_due_by(2, hour / 2), status_due_by(3, hour), status_due_by(4, hour + 1), status_due_by(5, 2 * hour + 2)];
        assert_eq!(ids(&carried_together(sorted)), [vec!["s1", "s2", "s3"], vec!["s4"], vec!["s5"]]);
    }

    #[test]
    fn no_packet_carries_more_than_the_most_a_receiver_reads() {
        let sorted: Vec<ClaimedDelivery> = (0..StatusBatch::MAX * 2 + 1).map(|n| status_due_by(n, 0)).collect();
        let sizes: Vec<usize> = carried_together(sorted).iter().map(Vec::len).collect();
        assert_eq!(sizes, [StatusBatch::MAX, StatusBatch::MAX, 1]);
    }

    #[test]
    fn nothing_is_left_out_or_carried_twice() {
        assert!(carried_together(Vec::new()).is_empty());
        let sorted: Vec<ClaimedDelivery> = (0..40).map(|n| status_due_by(n, i64::try_from(n).unwrap() * DEADLINE_SPREAD_MS / 7)).collect();
        let carried: Vec<String> = carried_together(sorted).into_iter().flatten().map(|item| item.id).collect();
        assert_eq!(carried, (0..40).map(|n| format!("s{n}")).collect::<Vec<_>>());
    }
}
