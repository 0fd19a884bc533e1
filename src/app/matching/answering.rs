//! The responding gateway's side of matching (issue 22 §2): it evaluates a
//! peer's blinded query under its match function, with one proof, and
//! shows the index of its searches as that peer's asking organisation may
//! see it; later it records a match the peer tells it of.
//!
//! Every search still open is in every answer, shown or not: an entry the
//! asker may not see (its consent, this gateway's DPO policy or the built-in
//! rules keep it from that organisation) is made of random bytes, through
//! the same steps as one it may see, so that "not found" and "not allowed"
//! look and take the same. Entries come in random order, their number
//! rounded up to a power of two (at least [`MIN_ENTRIES`]).

use chrono::{DateTime, Utc};

use super::index::{entry_context, MatchEntryAtRest};
use super::{AnswerEntry, MatchAnswer, MatchFoundNotice, MatchQuery, MatchRefusal};
use crate::app::{random_bytes, AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::crypto::match_function::{salted, MatchOutput};
use crate::domain::match_index::{match_decision, outside_origin_states, PERSON_SLOTS, QUERY_SLOTS, SOUGHT_PEOPLE};
use crate::domain::CountryCode;
use crate::store::{MatchCandidate, MatchHandle, Write};

/// Entries an answer holds at least: a gateway with few searches does not
/// show how few.
pub const MIN_ENTRIES: usize = 8;
/// Bytes of a handle.
const HANDLE_BYTES: usize = 16;
/// Bytes of the stand-in for an output a slot does not hold.
const FILLER_BYTES: usize = 64;

/// How many entries an answer about `searches` searches holds.
pub fn padded_entries(searches: usize) -> usize {
    searches.max(MIN_ENTRIES).next_power_of_two()
}

/// One block of `PERSON_SLOTS` salted outputs: `outputs` (hex, as kept)
/// first, random stand-ins after; every slot salted alike.
fn block(handle: &[u8], outputs: &[String]) -> Result<Vec<String>, AppError> {
    (0..PERSON_SLOTS)
        .map(|slot| {
            // A stand-in is drawn for every slot, used or not: the same work either way.
            let filler = random_bytes::<FILLER_BYTES>()?.to_vec();
            let output = outputs.get(slot).and_then(|hex| crate::hex::decode(hex)).unwrap_or(filler);
            Ok(crate::hex::encode(&salted(handle, &MatchOutput(output))))
        })
        .collect()
}

/// An answer entry under `handle`: the search's outputs if it is shown,
/// random stand-ins otherwise, through the same steps.
fn answer_entry(handle: &[u8], shown: Option<&MatchEntryAtRest>) -> Result<AnswerEntry, AppError> {
    let none: &[String] = &[];
    let subject = block(handle, shown.map_or(none, |entry| entry.subject.as_slice()))?;
    let sought = (0..SOUGHT_PEOPLE)
        .map(|n| block(handle, shown.and_then(|entry| entry.sought.get(n)).map_or(none, Vec::as_slice)))
        .collect::<Result<_, _>>()?;
    Ok(AnswerEntry { handle: crate::hex::encode(handle), subject, sought })
}

fn peer_actor(peer: CountryCode) -> Actor {
    Actor { org: None, subject: format!("gateway:{peer}") }
}

/// Whether a peer's free text may stand in a timeline entry: an id's
/// characters only, short. Anything else is dropped, never echoed.
fn looks_like_id(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Gateway {
    /// Answers `peer`'s match query (see the module's comment).
    pub async fn answer_match_query(&self, peer: CountryCode, query: MatchQuery) -> Result<MatchAnswer, AppError> {
        let now = self.now();
        match self.evaluate_query(peer, query, now).await {
            Ok(answer) => {
                let event = AuditEvent::new(now, peer_actor(peer), Action::MatchQuery, "answered").reasons([format!("entries:{}", answer.entries.len())]);
                self.audit(event).await?;
                Ok(answer)
            }
            Err(AppError::MatchRefused(refusal)) => {
                self.audit(AuditEvent::new(now, peer_actor(peer), Action::MatchQuery, "refused").reasons([refusal.code()])).await?;
                Err(AppError::MatchRefused(refusal))
            }
            Err(other) => Err(other),
        }
    }

    async fn evaluate_query(&self, peer: CountryCode, query: MatchQuery, now: DateTime<Utc>) -> Result<MatchAnswer, AppError> {
        let function = self.match_function.clone().ok_or(AppError::MatchRefused(MatchRefusal::Unavailable))?;
        let malformed = || AppError::MatchRefused(MatchRefusal::Malformed);
        if query.blinded.len() != QUERY_SLOTS {
            return Err(malformed());
        }
        let blinded: Vec<Vec<u8>> = query.blinded.iter().map(|hex| crate::hex::decode(hex)).collect::<Option<_>>().ok_or_else(malformed)?;
        let asker = self
            .directory()
            .recipient(&query.asking_org)
            .filter(|asker| asker.country == peer)
            .ok_or(AppError::MatchRefused(MatchRefusal::AskerNotServed))?;
        let (since, at) = ((now - chrono::Duration::hours(24)).timestamp_millis(), now.timestamp_millis());
        if !self.store.count_match_query(peer.as_str(), since, at, self.matching.queries_per_day).await? {
            return Err(AppError::MatchRefused(MatchRefusal::RateLimited));
        }
        let evaluated = function.evaluate_blinded(&blinded).map_err(|_| malformed())?;

        let candidates: Vec<MatchCandidate> = self.store.match_candidates().await?;
        let contexts: Vec<Vec<u8>> = candidates.iter().map(|c| entry_context(&c.referral_id)).collect();
        let sealed: Vec<(&[u8], &[u8])> = candidates.iter().zip(&contexts).map(|(c, context)| (c.entry.sealed.as_slice(), context.as_slice())).collect();
        let opened = self.vault.open_all(&sealed).await?;
        let policy = self.policy();
        let expires_ms = (now + self.matching.handle_lifetime).timestamp_millis();
        let mut entries = Vec::with_capacity(padded_entries(candidates.len()));
        // Every entry's handle is kept, the search it stands for only if shown:
        // as many rows written whatever is shown.
        let mut handles = Vec::with_capacity(padded_entries(candidates.len()));
        let keep = |handle: &[u8], referral_id: Option<String>| MatchHandle {
            handle: crate::hex::encode(handle),
            referral_id,
            asking_gateway: peer.as_str().to_owned(),
            asking_org: query.asking_org.as_str().to_owned(),
            expires_ms,
        };
        for (candidate, opened) in candidates.iter().zip(opened) {
            let handle = random_bytes::<HANDLE_BYTES>()?;
            // An entry erased meanwhile, or unreadable, is shown as not allowed.
            let entry = MatchEntryAtRest::read(opened);
            let shown = entry.filter(|entry| {
                let decided = match_decision(&entry.facts, &entry.categories, &entry.consent, self.country, &asker, &policy.policy, now);
                outside_origin_states(&entry.facts, &asker) && decided.is_allow()
            });
            entries.push(answer_entry(&handle, shown.as_ref())?);
            handles.push(keep(&handle, shown.is_some().then(|| candidate.referral_id.clone())));
        }
        while entries.len() < padded_entries(candidates.len()) {
            let handle = random_bytes::<HANDLE_BYTES>()?;
            entries.push(answer_entry(&handle, None)?);
            handles.push(keep(&handle, None));
        }
        // Random handles: sorted by them, the entries are in random order.
        entries.sort_by(|a, b| a.handle.cmp(&b.handle));
        self.store.keep_match_handles(&handles, at).await?;
        Ok(MatchAnswer {
            public_key: crate::hex::encode(&function.public_key()),
            evaluated: evaluated.elements.iter().map(|e| crate::hex::encode(e)).collect(),
            proof: crate::hex::encode(&evaluated.proof),
            entries,
        })
    }

    /// Records what `peer` tells of a match: on the search behind the
    /// handle, if this gateway gave it to that peer for that organisation,
    /// it has not expired nor been used, the search is still searching, and
    /// the notice's evidence holds at least `threshold` of the search's own
    /// outputs (which only an evaluation of agreeing keys gives). Whatever
    /// the handle, the peer learns nothing: the answer is the same.
    pub async fn match_found(&self, peer: CountryCode, notice: MatchFoundNotice) -> Result<(), AppError> {
        let now = self.now();
        let kept = self.store.match_handle(&notice.handle, peer.as_str(), now.timestamp_millis()).await?;
        // A handle of an entry not shown (or padding, or used) stands for no search: as unknown as a forged one.
        let referral_id = kept.filter(|kept| kept.asking_org == notice.asking_org.as_str()).and_then(|kept| kept.referral_id);
        let candidate = match &referral_id {
            Some(id) => self.store.match_candidate(id).await?,
            None => None,
        };
        let Some(candidate) = candidate else {
            return self.audit(AuditEvent::new(now, peer_actor(peer), Action::MatchFound, "unknown_handle")).await;
        };
        let entry = MatchEntryAtRest::read(self.vault.open(&candidate.entry.sealed, &entry_context(&candidate.referral_id)).await);
        let proven = entry.is_some_and(|entry| {
            let held: std::collections::BTreeSet<&String> = entry.subject.iter().chain(entry.sought.iter().flatten()).collect();
            notice.evidence.len() <= QUERY_SLOTS && notice.evidence.iter().collect::<std::collections::BTreeSet<_>>().iter().filter(|output| held.contains(**output)).count() >= self.matching.threshold
        });
        if !proven {
            let event = AuditEvent::new(now, peer_actor(peer), Action::MatchFound, "unproven").referral(&candidate.referral_id);
            return self.audit(event).await;
        }
        let mut reasons = vec![format!("matched_by:{peer}"), format!("asking_org:{}", notice.asking_org)];
        if looks_like_id(&notice.asking_referral) {
            reasons.push(format!("asking_referral:{}", notice.asking_referral));
        }
        let audit = AuditEvent::new(now, peer_actor(peer), Action::MatchFound, "recorded").referral(&candidate.referral_id).reasons(reasons.clone());
        let write = Write::MatchFound { referral_id: candidate.referral_id, reasons, at_ms: now.timestamp_millis(), audit, handle: Some(notice.handle) };
        self.writer.write(write).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_shows_its_number_of_searches_only_rounded_up() {
        assert_eq!([0, 1, 8, 9, 16, 17, 100].map(padded_entries), [8, 8, 8, 16, 16, 32, 128]);
    }

    #[test]
    fn a_shown_entry_and_a_withheld_one_have_the_same_shape() {
        let entry = MatchEntryAtRest {
            facts: serde_json::from_value(serde_json::json!({
                "asylum_linked": false, "child": false, "profiles": [], "origin_states": [], "consent_by_guardian": false,
                "best_interests_determined": false, "best_interests_recommend_return": false
            }))
            .unwrap(),
            categories: Default::default(),
            consent: serde_json::from_value(serde_json::json!({
                "given_by": {"type": "subject"}, "method": "written", "given_at": "2026-10-02T09:30:00Z",
                "scopes": [{"purposes": ["family_tracing"], "categories": ["identity"], "recipients": [{"country": "GIN"}], "valid_until": "2027-10-01T00:00:00Z"}]
            }))
            .unwrap(),
            subject: vec!["ab".repeat(64); 3],
            sought: vec![vec!["cd".repeat(64); 2]],
        };
        let handle = [7u8; HANDLE_BYTES];
        let shown = answer_entry(&handle, Some(&entry)).unwrap();
        let withheld = answer_entry(&handle, None).unwrap();
        let shape = |e: &AnswerEntry| (e.handle.len(), e.subject.len(), e.sought.len(), e.sought.iter().map(Vec::len).collect::<Vec<_>>(), e.subject.iter().map(String::len).max());
        assert_eq!(shape(&shown), shape(&withheld));
        assert_eq!(shown.subject.len(), PERSON_SLOTS);
        // The kept outputs are there, salted with the handle; the stand-ins differ.
        let first = salted(&handle, &MatchOutput(crate::hex::decode(&entry.subject[0]).unwrap()));
        assert_eq!(shown.subject[0], crate::hex::encode(&first));
        assert_ne!(withheld.subject[0], shown.subject[0]);
        // Under another handle the same output looks unrelated.
        let other = answer_entry(&[8u8; HANDLE_BYTES], Some(&entry)).unwrap();
        assert_ne!(other.subject[0], shown.subject[0]);
        assert!(looks_like_id("0191c1f2-aa") && !looks_like_id("Amina Diallo") && !looks_like_id(""));
    }
}
