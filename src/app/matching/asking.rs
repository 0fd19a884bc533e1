//! The asking gateway's side of matching (issue 22 §2), for the
//! organisation whose family-tracing request searches: it asks other
//! member gateways whether any search open there meets its own, without
//! showing them a name, and on a match gives each side's tracing officer a
//! handle to the other's case (never data: that follows as a reply case,
//! under consent).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::{MatchAnswer, MatchFoundNotice, MatchQuery, MatchRefusal};
use crate::app::access::{Authorized, Senders};
use crate::app::{random_bytes, AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::crypto::match_function::{salted, Asking, Evaluated, MatchOutput};
use crate::domain::lifecycle::ReferralStatus;
use super::index::MatchEntryAtRest;
use crate::domain::match_index::{fled_from, match_decision, plan_query, score, PeopleToMatch, Agreement, QueryPlan, PERSON_SLOTS, QUERY_SLOTS, SOUGHT_PEOPLE};
use crate::domain::matching::MatchKey;
use crate::domain::{CountryCode, Purpose};
use crate::store::{StoredReferral, Write};

/// A search's request to be matched: the member gateways to ask, or (left
/// out) every other active member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchRequest {
    #[serde(default)]
    #[schemars(length(min = 1, max = 50))]
    pub gateways: Option<Vec<CountryCode>>,
}

/// What asking the peers found for one search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct MatchReport {
    pub referral_id: String,
    /// One result per gateway asked, in country order.
    pub asked: Vec<PeerMatches>,
}

/// One gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PeerMatches {
    pub gateway: CountryCode,
    /// `answered`, or the code of why there is no answer (the peer's
    /// problem code, or a transport failure's).
    pub outcome: String,
    /// The searches there that meet this one (empty when none does, or
    /// none may be shown: the two are the same).
    pub matches: Vec<FoundMatch>,
}

/// A search at a peer gateway that meets this one: the handle the peer
/// gave it (recorded on this search's timeline; the peer's timeline of its
/// search names this gateway, the asking organisation and this referral),
/// and how many families of keys agreed each way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct FoundMatch {
    pub handle: String,
    /// Agreement of the best relative this search seeks with that search's subject.
    pub sought_found: usize,
    /// Agreement of this search's subject with the best relative that search seeks.
    pub subject_sought: usize,
}

/// The blinded query for `plan`: its keys, then padding to [`QUERY_SLOTS`].
fn blind(plan: &QueryPlan) -> Result<(Asking, Vec<Vec<u8>>), AppError> {
    let mut keys = plan.keys.clone();
    while keys.len() < QUERY_SLOTS {
        keys.push(MatchKey::filler(random_bytes()?));
    }
    Asking::blind(keys).map_err(|e| AppError::Internal(e.to_string()))
}

/// A gateway of the person's origin state, never asked about an asylum-linked search.
const NOT_ASKED_ORIGIN_STATE: &str = "not-asked-origin-state";

/// Why an answer could not be read: the code the report shows.
const ANSWER_MALFORMED: &str = "match-answer-malformed";
const PROOF_REJECTED: &str = "match-proof-rejected";

/// The outputs of the plan's keys, once the proof checks out.
fn outputs_of(asking: Asking, plan: &QueryPlan, answer: &MatchAnswer) -> Result<Vec<MatchOutput>, &'static str> {
    let decode = |hex: &String| crate::hex::decode(hex).ok_or(ANSWER_MALFORMED);
    let evaluated = Evaluated { elements: answer.evaluated.iter().map(decode).collect::<Result<_, _>>()?, proof: decode(&answer.proof)? };
    let public_key = decode(&answer.public_key)?;
    let outputs = asking.finish(&evaluated, &public_key).map_err(|error| match error {
        crate::crypto::match_function::MatchFunctionError::ProofRejected => PROOF_REJECTED,
        _ => ANSWER_MALFORMED,
    })?;
    Ok(outputs.into_iter().take(plan.keys.len()).map(|(_, output)| output).collect())
}

/// The entries of `answer` that meet the search planned, at `threshold`,
/// each with the outputs of the keys that agreed (the evidence a notice carries).
fn matches_in(plan: &QueryPlan, outputs: &[MatchOutput], answer: &MatchAnswer, threshold: usize) -> Result<Vec<(FoundMatch, Vec<MatchOutput>)>, &'static str> {
    let mut found = Vec::new();
    for entry in &answer.entries {
        let handle = crate::hex::decode(&entry.handle).ok_or(ANSWER_MALFORMED)?;
        if entry.subject.len() != PERSON_SLOTS || entry.sought.len() != SOUGHT_PEOPLE || entry.sought.iter().any(|block| block.len() != PERSON_SLOTS) {
            return Err(ANSWER_MALFORMED);
        }
        let set = |block: &[String]| block.iter().map(|hex| crate::hex::decode(hex).ok_or(ANSWER_MALFORMED)).collect::<Result<BTreeSet<Vec<u8>>, _>>();
        let subject = set(&entry.subject)?;
        let sought = entry.sought.iter().map(|block| set(block)).collect::<Result<Vec<_>, _>>()?;
        let mine: Vec<Vec<u8>> = outputs.iter().map(|output| salted(&handle, output)).collect();
        let agreement: Agreement = score(plan, &mine, &subject, &sought);
        if agreement.is_match(threshold) {
            let agreeing: BTreeSet<&MatchOutput> = outputs
                .iter()
                .zip(&mine)
                .filter(|(_, salted)| subject.contains(*salted) || sought.iter().any(|block| block.contains(*salted)))
                .map(|(output, _)| output)
                .collect();
            let found_match = FoundMatch { handle: entry.handle.clone(), sought_found: agreement.sought_found, subject_sought: agreement.subject_sought };
            found.push((found_match, agreeing.into_iter().cloned().collect()));
        }
    }
    Ok(found)
}

impl Gateway {
    /// Asks `gateways` (every other active member when none is named)
    /// whether a search open there meets the family-tracing request
    /// `referral_id` of the caller's organisation; records each match on
    /// the request's timeline (`match_found`, with the peer and the handle)
    /// and tells the peer, which tells the organisation behind its search.
    pub async fn find_matches(&self, principal: &Authorized<Senders>, referral_id: &str, gateways: Option<Vec<CountryCode>>) -> Result<MatchReport, AppError> {
        let now = self.now();
        let Some(referral) = self.store.referral(referral_id).await?.filter(|r| r.sender_org == principal.org.as_str()) else {
            self.audit(AuditEvent::new(now, principal.actor(), Action::MatchQuery, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        let (plan, peers, withheld) = match self.search_of(&referral, gateways).await {
            Ok(found) => found,
            Err(AppError::MatchRefused(refusal)) => {
                let event = AuditEvent::new(now, principal.actor(), Action::MatchQuery, "refused").referral(referral_id).reasons([refusal.code()]);
                self.audit(event).await?;
                return Err(AppError::MatchRefused(refusal));
            }
            Err(other) => return Err(other),
        };
        let transport = self.match_transport.get().cloned().ok_or(AppError::NotFederated)?;
        let directory = self.directory();
        let mut asked: Vec<PeerMatches> = withheld
            .into_iter()
            .map(|peer| PeerMatches { gateway: peer, outcome: NOT_ASKED_ORIGIN_STATE.to_owned(), matches: Vec::new() })
            .collect();
        for peer in peers {
            let endpoint = directory.gateway(peer).map(|g| g.endpoint.clone()).unwrap_or_default();
            let (asking, blinded) = blind(&plan)?;
            let query = MatchQuery { asking_org: principal.org.clone(), blinded: blinded.iter().map(|b| crate::hex::encode(b)).collect() };
            let read = match transport.ask(peer, &endpoint, &query).await {
                Err(failure) => Err(failure.code().to_owned()),
                Ok(answer) => outputs_of(asking, &plan, &answer)
                    .and_then(|outputs| matches_in(&plan, &outputs, &answer, self.matching.threshold))
                    .map_err(str::to_owned),
            };
            let (outcome, matches) = match read {
                Ok(matches) => ("answered".to_owned(), matches),
                Err(code) => (code, Vec::new()),
            };
            let (matches, evidence): (Vec<FoundMatch>, Vec<Vec<MatchOutput>>) = matches.into_iter().unzip();
            let event = AuditEvent::new(now, principal.actor(), Action::MatchQuery, "asked")
                .referral(referral_id)
                .reasons([format!("gateway:{peer}"), format!("outcome:{outcome}"), format!("matches:{}", matches.len())]);
            self.audit(event).await?;
            for (found, evidence) in matches.iter().zip(evidence) {
                self.record_match(principal, &referral, (transport.as_ref(), peer, &endpoint), found, evidence, now).await?;
            }
            asked.push(PeerMatches { gateway: peer, outcome, matches });
        }
        asked.sort_by_key(|result| result.gateway);
        Ok(MatchReport { referral_id: referral.id, asked })
    }

    /// The search `referral` makes, the gateways to ask, and those not to
    /// ask: for an asylum-linked case, the person's origin states (a match
    /// there would tell them of the search and of who holds the case).
    async fn search_of(&self, referral: &StoredReferral, gateways: Option<Vec<CountryCode>>) -> Result<(QueryPlan, Vec<CountryCode>, Vec<CountryCode>), AppError> {
        let not_a_search = || AppError::MatchRefused(MatchRefusal::NotASearch);
        if referral.purpose != Purpose::FamilyTracing.as_str() || !ReferralStatus::SEARCHING.contains(&referral.status) {
            return Err(not_a_search());
        }
        let own = self.store.match_candidate(&referral.id).await?.ok_or_else(not_a_search)?;
        let people = self.store.match_people(&referral.id).await?.ok_or_else(not_a_search)?;
        let opened = self
            .vault
            .open_all(&[(&own.entry.sealed, &super::index::entry_context(&referral.id)), (&people.sealed, &super::index::people_context(&referral.id))])
            .await?;
        let [entry, people] = <[Result<Vec<u8>, AppError>; 2]>::try_from(opened).map_err(|_| AppError::Internal("two values opened".to_owned()))?;
        let (entry, people) = match (entry, people) {
            (Ok(entry), Ok(people)) => (entry, people),
            (Err(AppError::Erased), _) | (_, Err(AppError::Erased)) => return Err(not_a_search()),
            (Err(other), _) | (_, Err(other)) => return Err(other),
        };
        // Fixed messages: a parser's error may quote what it read (a name).
        let entry: MatchEntryAtRest = serde_json::from_slice(&entry).map_err(|_| AppError::Internal("a match entry is unreadable".to_owned()))?;
        let people: PeopleToMatch = serde_json::from_slice(&people).map_err(|_| AppError::Internal("a search's people are unreadable".to_owned()))?;
        // The search may still be made: its consent and this gateway's policy
        // still let it go where it was sent (neither lapsed nor withdrawn).
        let directory = self.directory();
        let destination = crate::domain::OrgId::parse(&referral.destination_org).ok().and_then(|org| directory.recipient(&org)).ok_or_else(not_a_search)?;
        let policy = self.policy();
        if !match_decision(&entry.facts, &entry.categories, &entry.consent, self.country, &destination, &policy.policy, self.now()).is_allow() {
            return Err(not_a_search());
        }
        let members = directory.active_gateways();
        let peers = match gateways {
            None => members.into_iter().filter(|country| *country != self.country).collect(),
            Some(named) => {
                if named.is_empty() || named.iter().any(|country| *country == self.country || !members.contains(country)) {
                    return Err(AppError::MatchRefused(MatchRefusal::NotAMember));
                }
                let mut named = named;
                named.sort();
                named.dedup();
                named
            }
        };
        let (withheld, asked): (Vec<CountryCode>, Vec<CountryCode>) =
            peers.into_iter().partition(|peer| fled_from(&entry.facts, *peer));
        Ok((plan_query(&people), asked, withheld))
    }

    /// A match found: on the request's timeline, and told to the peer.
    async fn record_match(
        &self,
        principal: &Authorized<Senders>,
        referral: &StoredReferral,
        (transport, peer, endpoint): (&dyn super::MatchTransport, CountryCode, &str),
        found: &FoundMatch,
        evidence: Vec<MatchOutput>,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let reasons = vec![format!("matched_at:{peer}"), format!("handle:{}", found.handle)];
        let audit = AuditEvent::new(now, principal.actor(), Action::MatchFound, "found").referral(&referral.id).reasons(reasons.clone());
        self.writer.write(Write::MatchFound { referral_id: referral.id.clone(), reasons, at_ms: now.timestamp_millis(), audit, handle: None }).await?;
        let notice = MatchFoundNotice {
            handle: found.handle.clone(),
            asking_org: principal.org.clone(),
            asking_referral: referral.id.clone(),
            evidence: evidence.iter().map(|MatchOutput(output)| crate::hex::encode(output)).collect(),
        };
        if let Err(failure) = transport.tell_found(peer, endpoint, &notice).await {
            // The match stands here; the peer's officer learns of it only
            // when this search is matched again (it is not retried).
            tracing::warn!(%peer, code = failure.code(), "the peer was not told of a match");
        }
        Ok(())
    }
}
