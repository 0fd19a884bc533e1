//! Submitting and following referrals.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::access::{Authorized, Senders, SendersAndRepliers};
use crate::app::retention::stored_retention;
use crate::app::views::{ConsentGivenBy, ConsentSummary, RecipientRef, Timestamp};
use crate::app::{new_id, reason_strings, AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::auth::Principal;
use crate::crypto::packet::sealed_size_bound;
use crate::domain::consent::{Consent, ConsentGiver};
use crate::domain::decide::decide_and_minimise_keeping_facts;
use crate::domain::decision::{Decision, DecisionRecord, ReasonCode};
use crate::domain::submission::{ReferralSubmission, SubmissionError};
use crate::domain::lifecycle::{OutboxState, ReferralEvent, ReferralStatus};
use crate::domain::priority::{awaited_by_sender, overdue, DeadlineKind, Priority};
use crate::domain::withdrawal::{erasure_progress, ErasureProgress, ErasureState};
use crate::app::sending::callbacks::CallbacksView;
use crate::app::sending::delivery::onward_context;
use crate::domain::onward::{onward_limits, SentUnder};
use crate::domain::emergency_override::{decide_and_minimise_under_override, OverrideReason, OverrideState};
use crate::store::{NewOverride, StoredOverride, UndeliveredCallbacks, DeliveryRecord, NewOutboxEntry, NewReferral, SealedFacts, StoredReferral, TimelineEntry, Write, Written};

/// What a submission came to; the HTTP layer picks the status from it.
/// `replayed`: the answer to a repeated idempotency key, rendered again
/// from what the first request recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Allowed and queued for delivery (`202`).
    Queued { answer: Queued, replayed: bool },
    /// Denied; the decision is recorded (`422`).
    Denied { answer: Denied, replayed: bool },
}

/// Bytes the onward limits add to a packet's claims besides their JSON: the
/// member's name, its quotes and separators (`,"onward":`).
const ONWARD_KEY_LEN: usize = 12;

/// `202` to `POST /v1/referrals`: allowed and queued for delivery, or
/// allowed under an emergency override that waits for a DPO's approval.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Queued {
    pub referral_id: String,
    /// `queued`: the status when the referral was accepted (follow it at
    /// `GET /v1/referrals/{id}`); `awaiting_override` when it is allowed only
    /// under the emergency override asked for, which a DPO must approve first.
    pub status: ReferralStatus,
    pub recipient: Option<RecipientRef>,
    /// What goes once sent: under the override, if one is awaited.
    pub decision: DecisionRecord,
    /// The number of the DPO policy version that decided.
    pub policy_number: i64,
    /// The emergency override the referral waits for; absent otherwise.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub emergency_override: Option<OverrideAnswer>,
}

/// An emergency override asked for with a referral, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct OverrideAnswer {
    pub state: OverrideState,
    pub reason: OverrideReason,
    pub justification_code: String,
    /// The categories it stands in for the person's consent for.
    pub overridden_categories: Vec<String>,
    /// A DPO other than the submitter must approve it before this, or the
    /// referral is denied (`override_expired`) and its payload erased;
    /// absent when a standing rule approved it at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_by: Option<Timestamp>,
    /// When a DPO approved or rejected it, a standing rule approved it, or the window passed.
    pub decided_at: Option<Timestamp>,
    /// The DPO's signed-off standing rule under which it took effect at
    /// once (`overrides.toml#<n>`, emergency priority only); absent when a
    /// DPO decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standing_rule: Option<String>,
}

impl OverrideAnswer {
    /// Where it stood when the submission was answered: approved at once
    /// under a standing rule, or awaiting a DPO's approval.
    fn as_first_answered(asked: &NewOverride) -> Self {
        let (state, decided_at) = match asked.standing_rule {
            Some(_) => (OverrideState::Approved, Some(Timestamp(asked.requested_ms))),
            None => (OverrideState::AwaitingApproval, None),
        };
        Self {
            state,
            reason: asked.reason,
            justification_code: asked.justification_code.clone(),
            overridden_categories: asked.overridden.clone(),
            approve_by: Some(Timestamp(asked.approve_by_ms)).filter(|_| asked.standing_rule.is_none()),
            decided_at,
            standing_rule: asked.standing_rule.clone(),
        }
    }

    /// Where it stands now.
    pub(crate) fn of(stored: &StoredOverride) -> Self {
        Self { state: stored.state, decided_at: stored.decided_ms.map(Timestamp), ..Self::as_first_answered(&stored.asked) }
    }
}

/// `422` to `POST /v1/referrals`: the decision denied the referral. The
/// HTTP edge renders it as a problem (`referral-denied`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Denied {
    pub referral_id: String,
    /// Why, in the decision's order.
    pub reason_codes: Vec<ReasonCode>,
    pub decision: DecisionRecord,
    /// The number of the DPO policy version that decided.
    pub policy_number: i64,
}

/// `GET /v1/referrals/{id}`: a referral of the caller's organisation, with
/// its timeline.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReferralView {
    pub referral_id: String,
    pub status: ReferralStatus,
    pub purpose: String,
    pub recipient: RecipientRef,
    pub submitted_at: Timestamp,
    pub outcome: String,
    /// Case management passes to the recipient when it accepts (timeline entry `handover`).
    pub handover: bool,
    /// As submitted (`normal` if the submission named none).
    pub priority: Priority,
    /// A reply case (`tracing_reply`, `family_assessment`): the packet id
    /// of the request in the organisation's inbox that it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<String>,
    /// The deadline of its priority the referral awaits and has missed
    /// (`[deadlines]`), and since when; `null` while it is on time or
    /// awaits nothing more (answered, denied, refused, expired, withdrawn).
    pub overdue: Option<OverdueView>,
    pub policy_version: String,
    /// The decision as recorded; `null` if the record is unreadable.
    pub decision: Option<DecisionRecord>,
    pub timeline: Vec<TimelineStep>,
    /// The delivery of the referral's packet; `null` for a denied referral.
    pub delivery: Option<DeliveryView>,
    /// After a consent withdrawal: where the erasure it asked for stands; `null` before.
    pub erasure: Option<ErasureView>,
    /// The status callback events of this referral not delivered yet to the
    /// organisation's callback URL; `null` if it has no callback registered.
    pub callbacks: Option<CallbacksView>,
    /// The emergency override it was submitted under, and where it stands;
    /// absent for a referral without one.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub emergency_override: Option<OverrideAnswer>,
}

/// A deadline missed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OverdueView {
    /// `delivery` (to the recipient's gateway), `acknowledgement` (by the
    /// recipient: `forwarded`) or `first_status` (`accepted` or `declined`).
    pub deadline: DeadlineKind,
    /// When the deadline passed.
    pub since: Timestamp,
}

/// One step of a referral's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TimelineStep {
    pub status: ShownStatus,
    pub at: Timestamp,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reason_codes: Vec<String>,
}

/// A recorded timeline event, or a step shown and not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ShownStatus {
    Recorded(ReferralEvent),
    Shown(ShownOnly),
}

/// Steps shown in a timeline but never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShownOnly {
    /// The erasure a withdrawal asked for is past its deadline; shown at the
    /// deadline, ends when the confirmation comes.
    ErasureOverdue,
}

/// The delivery of a referral's packet.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DeliveryView {
    /// `erased`: the retention sweep stopped it before delivery.
    pub state: OutboxState,
    pub attempts: i64,
    pub packet_id: Option<String>,
    /// The receiving gateway's signed receipt (compact JWS): proof of delivery.
    pub receipt: Option<String>,
    pub last_error: Option<String>,
}

/// Where the erasure a consent withdrawal asked for stands. A whole
/// withdrawal is shown if there is one; otherwise the latest partial one.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ErasureView {
    pub state: ErasureState,
    pub due_by: Option<Timestamp>,
    pub scope: ErasureScope,
    /// With scope `categories`: the categories that withdrawal took back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

/// What a withdrawal took back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureScope {
    Whole,
    Categories,
}

/// A submission's parse error as the HTTP edge reports it.
pub(crate) fn submission_problem(error: SubmissionError) -> AppError {
    match error {
        SubmissionError::Syntax { line, column } => AppError::MalformedJson { line, column },
        SubmissionError::Invalid(problems) => AppError::Invalid(problems),
        SubmissionError::SchemaUnavailable => AppError::Internal("referral schema unavailable".to_owned()),
    }
}

/// The answer to a submission, from its decision (and the override it awaits, if any).
fn answer(
    referral_id: String,
    recipient: Option<RecipientRef>,
    decision: DecisionRecord,
    policy_number: i64,
    awaiting: Option<OverrideAnswer>,
    replayed: bool,
) -> Submitted {
    if decision.is_allow() {
        let awaits_approval = awaiting.as_ref().is_some_and(|o| o.state == OverrideState::AwaitingApproval);
        let status = if awaits_approval { ReferralStatus::AwaitingOverride } else { ReferralStatus::Queued };
        let answer = Queued { referral_id, status, recipient, decision, policy_number, emergency_override: awaiting };
        Submitted::Queued { answer, replayed }
    } else {
        let reason_codes = decision.deny_reasons.iter().copied().collect();
        Submitted::Denied { answer: Denied { referral_id, reason_codes, decision, policy_number }, replayed }
    }
}

impl Gateway {
    /// Validates, decides, records and (on allow) queues a referral from the
    /// caller's organisation. `body` is the raw JSON as received.
    #[tracing::instrument(name = "submit", skip_all, fields(referral_id = tracing::field::Empty))]
    pub async fn submit(&self, principal: &Authorized<Senders>, body: &str) -> Result<Submitted, AppError> {
        let now = self.now();
        let submission = ReferralSubmission::parse(body, now).map_err(submission_problem)?;
        // A reply goes only as the answer to a request, to the organisation that asked.
        if submission.purpose.is_reply() {
            return Err(AppError::invalid_field("purpose", "is sent only as a reply to the request it answers: POST /v1/inbox/{packet_id}/replies"));
        }
        self.accept(principal, submission, None, now).await
    }

    /// Decides, records and (on allow) queues `submission` from the
    /// caller's organisation: a referral, or a reply case answering the
    /// request packet `answers` held here (its packet then names it).
    pub(crate) async fn accept(&self, principal: &Principal, submission: ReferralSubmission, answers: Option<&str>, now: DateTime<Utc>) -> Result<Submitted, AppError> {
        let mut canonical = serde_json::to_vec(&submission).map_err(|e| AppError::Internal(e.to_string()))?;
        // The same reply to another request is another request.
        if let Some(request) = answers {
            canonical.extend(format!("\0answers:{request}").as_bytes());
        }
        let fingerprint = self.keys().index("request", &canonical);
        let subject_key = self.subject_key(submission.subject_ref.as_str());

        // A repeated idempotency key is found by the insert itself (below):
        // retries are rare, and a lookup before every decision would cost a
        // database round trip per referral.
        let policy = self.policy();
        let directory = self.directory();
        let recipient = directory.recipient_at(&submission.destination, now);
        let (facts, decision, payload) = decide_and_minimise_keeping_facts(
            &submission.case,
            &submission.consent,
            self.country,
            recipient.as_ref(),
            submission.purpose,
            &policy.policy,
            now,
        );
        // Denied, with an emergency override asked for: decided again with
        // the override standing in for the missing consent. Allowed so, it
        // waits for a DPO's approval; otherwise the first decision stands.
        let (decision, payload, asked_override, override_not_applied) = match &submission.emergency_override {
            Some(request) if !decision.is_allow() => match decide_and_minimise_under_override(
                &submission.case,
                &submission.consent,
                self.country,
                recipient.as_ref(),
                submission.purpose,
                &policy.policy,
                now,
                request,
            ) {
                Ok((under, cut, overridden)) if under.is_allow() => {
                    // An emergency the DPO's signed-off standing rules cover goes at once.
                    let standing_rule = recipient.as_ref().and_then(|recipient| {
                        policy.policy.standing_overrides().standing_rule(submission.priority, request.reason, submission.purpose, recipient)
                    });
                    let asked = NewOverride {
                        reason: request.reason,
                        justification_code: request.justification_code.as_str().to_owned(),
                        // Those it lets go: the rest stay withheld by the policy or the rules.
                        overridden: overridden.iter().filter(|c| under.sent().contains_key(*c)).map(|c| c.as_str().to_owned()).collect(),
                        requested_org: principal.org.to_string(),
                        requested_by: principal.subject.clone(),
                        requested_ms: now.timestamp_millis(),
                        approve_by_ms: (now + self.override_window()).timestamp_millis(),
                        standing_rule: standing_rule.map(|rule| rule.to_string()),
                    };
                    (under, cut, Some(asked), None)
                }
                Ok(_) => (decision, payload, None, Some("still_denied")),
                Err(refusal) => (decision, payload, None, Some(refusal.code())),
            },
            _ => (decision, payload, None, None),
        };
        let referral_id = new_id()?;
        tracing::Span::current().record("referral_id", tracing::field::display(referral_id.as_str()));
        let record_of_decision = DecisionRecord::from(&decision);
        let status = match (&asked_override, decision.is_allow()) {
            (Some(_), _) => ReferralStatus::AwaitingOverride,
            (None, true) => ReferralStatus::Queued,
            (None, false) => ReferralStatus::Denied,
        };
        let (outbox, case_key) = match &recipient {
            Some(recipient) if decision.is_allow() => {
                let plaintext = serde_json::to_vec(&payload.to_json()).map_err(|e| AppError::Internal(e.to_string()))?;
                // What the recipient may pass on: the consent's onward scopes, the DPO's refer_onward, the built-in rules.
                let sent_under = if asked_override.is_some() { SentUnder::EmergencyOverride } else { SentUnder::Consent };
                let consents_onward = submission.consent.scopes().iter().any(|scope| scope.onward().is_some());
                // Facts that cannot be put to the policy let nothing be passed on.
                let request_facts = if consents_onward && sent_under == SentUnder::Consent { policy.policy.facts(recipient, self.country, &facts.case).ok() } else { None };
                let onward = match &request_facts {
                    Some(request_facts) => {
                        let mut limits = onward_limits(&submission.consent, &facts.case, submission.purpose, recipient, &decision.sent_categories(), sent_under, now, |question| {
                            policy.policy.permits_onward(request_facts, recipient, question, now)
                        });
                        // Only refusals of organisations the case could reach onward (here) travel.
                        limits.refused_organisations.retain(|id| directory.recipient(id).is_some_and(|org| org.country == recipient.country));
                        if limits.allow_nothing() { None } else { Some(serde_json::to_vec(&limits).map_err(|e| AppError::Internal(e.to_string()))?) }
                    }
                    None => None,
                };
                // Required, or uniform: once an organisation publishes a key, all its packets go sealed to it.
                let end_to_end = decision.end_to_end_required_by().is_some() || recipient.has_end_to_end_key();
                // Accept only what can be delivered: a packet over the destination's limit would be refused on every attempt.
                // Bounded as sealed end to end whatever the organisation publishes now: it may publish a key before the
                // delivery, and its packets are then all sealed so (falling back to a readable packet for a large
                // case would tell its gateway that the case did not require sealing).
                let bound = sealed_size_bound(plaintext.len() + onward.as_ref().map_or(0, |o| o.len() + ONWARD_KEY_LEN), true);
                let limit = directory.packet_limit(recipient.country);
                if bound > limit {
                    // A retry of a referral accepted before the limit changed is answered as the first time.
                    if let Some(existing) = self.store.referral_by_key(principal.org.as_str(), submission.idempotency_key.as_str()).await? {
                        return self.answer_again(principal, existing, &fingerprint).await;
                    }
                    return Err(AppError::Undeliverable { bound, limit });
                }
                let consent_expires = submission.consent.covers_all_until(submission.purpose, decision.sent_categories(), recipient, now);
                // Kept no longer than the DPO's rule for this purpose and kind of recipient, nor past the consent.
                let retention = policy.policy.retention().period_for(submission.purpose, Some(recipient.kind)).deadline(now, consent_expires);
                // The case's own key: destroying it erases the payload in every copy of the database.
                let case_key = self.vault.new_case_key(now.timestamp_millis()).await?;
                let entry = NewOutboxEntry {
                    payload: self.vault.seal(&case_key, &plaintext, referral_id.as_bytes())?,
                    onward: onward.map(|limits| self.vault.seal(&case_key, &limits, onward_context(&referral_id).as_bytes())).transpose()?,
                    consent_expires_ms: consent_expires.map(|t| t.timestamp_millis()),
                    // A packet delivered after its retention passed would only be erased on arrival.
                    deadline_ms: self.delivery_deadline(now, consent_expires).min(retention.until).timestamp_millis(),
                    retention: Some(stored_retention(retention)),
                    end_to_end,
                    held: asked_override.is_some(),
                };
                (Some(entry), Some(case_key))
            }
            _ => (None, None),
        };
        // The facts decided on, kept for replays of later policy versions: under the
        // payload's key, so that whatever erases the case erases them; a denied
        // referral's under a key of their own, destroyed once the replay window passes.
        let decided_facts = facts;
        let facts = match &case_key {
            Some(key) => SealedFacts { sealed: self.seal_facts(key, &decided_facts, &referral_id)?, key_for_facts_only: false },
            None => {
                let key = self.vault.new_case_key(now.timestamp_millis()).await?;
                SealedFacts { sealed: self.seal_facts(&key, &decided_facts, &referral_id)?, key_for_facts_only: true }
            }
        };
        // A search is kept for matching (issue 22 §2) under the case's key, like the case.
        let match_entry = match &case_key {
            Some(key) if submission.purpose == crate::domain::Purpose::FamilyTracing => {
                self.match_entry(key, &submission.case, &submission.consent, &decided_facts, &referral_id)?
            }
            _ => None,
        };
        // Keys nothing stored will ever use if the idempotency key turns out taken.
        let unused_keys = [outbox.as_ref().map(|o| o.payload.key_id.clone()), Some(facts.sealed.key_id.clone())];
        let record = StoredReferral {
            id: referral_id.clone(),
            sender_org: principal.org.to_string(),
            idempotency_key: submission.idempotency_key.as_str().to_owned(),
            request_fingerprint: fingerprint.clone(),
            subject_key: subject_key.clone(),
            destination_org: submission.destination.to_string(),
            destination_country: recipient.as_ref().map(|r| r.country.as_str().to_owned()),
            purpose: submission.purpose.as_str().to_owned(),
            outcome: if decision.is_allow() { "allow" } else { "deny" }.to_owned(),
            policy_version: decision.policy_version().to_owned(),
            decision: serde_json::to_string(&decision).map_err(|e| AppError::Internal(e.to_string()))?,
            consent: self.consent_summary(&submission.consent)?,
            policy_number: policy.number,
            status,
            created_ms: now.timestamp_millis(),
            handover: submission.handover,
            priority: submission.priority,
            answers: answers.map(str::to_owned),
        };
        let mut audit = self.decision_event(principal, &referral_id, subject_key, &decision, now);
        // Which request a reply answers: the chain links the two cases.
        audit.reasons.extend(answers.map(|request| format!("answers:{request}")));
        if let Some(asked) = &asked_override {
            // What would go, and under what: the chain alone answers who asked to share what without consent.
            audit.outcome = "override_requested";
            audit.reasons.extend([format!("override:{}", asked.reason), format!("justification:{}", asked.justification_code)]);
            audit.reasons.extend(asked.overridden.iter().map(|c| format!("overridden:{c}")));
            // Approved at once: the rule, signed off with the policy version the event names, is the second pair of eyes.
            audit.reasons.extend(asked.standing_rule.iter().map(|rule| format!("standing_rule:{rule}")));
        } else if let Some(code) = override_not_applied {
            audit.reasons.push(format!("override_not_applied:{code}"));
        }
        let awaiting = asked_override.as_ref().map(OverrideAnswer::as_first_answered);
        let referral = NewReferral { record, outbox, facts: Some(facts), match_entry, emergency_override: asked_override };
        match self.writer.write(Write::Referral { referral: Box::new(referral), audit }).await? {
            Written::DuplicateKey => {
                // Tidying only: a retry is still answered if the case-key store is out of reach.
                if let Err(error) = self.vault.destroy(&unused_keys.into_iter().flatten().collect::<Vec<_>>()).await {
                    tracing::warn!(%error, "case keys made for a retried submission were not destroyed; they seal nothing");
                }
                // The key was used before (a retry, or a race): answer as the first time, or 409.
                let existing = self
                    .store
                    .referral_by_key(principal.org.as_str(), submission.idempotency_key.as_str())
                    .await?
                    .ok_or_else(|| AppError::Internal("idempotency key taken but not found".to_owned()))?;
                self.answer_again(principal, existing, &fingerprint).await
            }
            _ => {
                if decision.is_allow() {
                    self.wake_delivery();
                }
                let recipient = recipient.map(|r| RecipientRef { org: r.id.to_string(), country: Some(r.country.to_string()) });
                Ok(answer(referral_id, recipient, record_of_decision, policy.number, awaiting, false))
            }
        }
    }

    fn decision_event(&self, principal: &Principal, id: &str, subject_key: String, decision: &Decision, now: DateTime<Utc>) -> AuditEvent {
        let outcome = if decision.is_allow() { "allow" } else { "deny" };
        let mut reasons = reason_strings(decision.deny_reasons());
        if decision.is_allow() {
            // What went: the categories, so the chain alone answers "who got what".
            reasons = decision.sent().keys().map(|c| format!("sent:{}", c.as_str())).collect();
        }
        AuditEvent::new(now, principal.actor(), Action::ReferralSubmit, outcome)
            .referral(id)
            .subject_key(subject_key)
            .policy_version(decision.policy_version())
            .reasons(reasons)
    }

    /// The stored answer for a repeated idempotency key, or a conflict.
    async fn answer_again(&self, principal: &Principal, existing: StoredReferral, fingerprint: &str) -> Result<Submitted, AppError> {
        let now = self.now();
        if existing.request_fingerprint != fingerprint {
            let event = AuditEvent::new(now, principal.actor(), Action::ReferralSubmit, "conflict")
                .referral(&existing.id)
                .reasons(["idempotency_key_reused"]);
            self.audit(event).await?;
            return Err(AppError::IdempotencyConflict { referral_id: existing.id });
        }
        // Rendered again from the recorded decision: the answer first given.
        let decision: DecisionRecord = serde_json::from_str(&existing.decision)
            .map_err(|_| AppError::Store(crate::store::StoreError::Corrupt("stored decision is unreadable".to_owned())))?;
        let event = AuditEvent::new(now, principal.actor(), Action::ReferralSubmit, "replayed").referral(&existing.id);
        self.audit(event).await?;
        let recipient = Some(RecipientRef { org: existing.destination_org, country: existing.destination_country }).filter(|_| decision.is_allow());
        // Asked with an override: answered as the first time, whatever happened since.
        let awaiting = self.store.emergency_override(&existing.id).await?.map(|stored| OverrideAnswer::as_first_answered(&stored.asked));
        Ok(answer(existing.id, recipient, decision, existing.policy_number, awaiting, true))
    }

    fn consent_summary(&self, consent: &Consent) -> Result<String, AppError> {
        let canonical = serde_json::to_vec(consent).map_err(|e| AppError::Internal(e.to_string()))?;
        let summary = ConsentSummary {
            given_by: match consent.given_by {
                ConsentGiver::Subject {} => ConsentGivenBy::Subject,
                ConsentGiver::Guardian { .. } => ConsentGivenBy::Guardian,
            },
            method: consent.method,
            given_at: consent.given_at,
            withdrawn_at: consent.withdrawn_at,
            scopes: consent.scopes().len(),
            refusals: consent.refusals.len(),
            valid_until: consent.scopes().iter().map(|s| s.valid_until()).max(),
            fingerprint: self.keys().index("consent", &canonical),
        };
        serde_json::to_string(&summary).map_err(|e| AppError::Internal(e.to_string()))
    }

    /// A referral of the caller's own organisation, with its timeline.
    // Ids are recorded once found: a path may hold anything a caller typed.
    #[tracing::instrument(name = "read_referral", skip_all, fields(referral_id = tracing::field::Empty))]
    pub async fn referral(&self, principal: &Authorized<SendersAndRepliers>, id: &str) -> Result<ReferralView, AppError> {
        let now = self.now();
        let found = self.store.referral(id).await?.filter(|r| principal.follows(&r.sender_org, r.answers.is_some()));
        let Some(referral) = found else {
            // Someone else's referral is as absent as one that does not exist.
            self.audit(AuditEvent::new(now, principal.actor(), Action::ReferralRead, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        tracing::Span::current().record("referral_id", tracing::field::display(referral.id.as_str()));
        let timeline = self.store.timeline(&referral.id).await?;
        let record = self.store.delivery(&referral.id).await?;
        let erasure = self.erasure_view(&timeline, record.as_ref(), now);
        let delivery = record.map(|d| DeliveryView {
            state: d.state,
            attempts: d.attempts,
            packet_id: d.packet_id,
            receipt: d.receipt,
            last_error: d.last_error,
        });
        self.audit(AuditEvent::new(now, principal.actor(), Action::ReferralRead, "ok").referral(&referral.id)).await?;
        let mut shown: Vec<TimelineStep> = timeline
            .iter()
            .map(|t| TimelineStep { status: ShownStatus::Recorded(t.status), at: Timestamp(t.at_ms), reason_codes: t.reasons.clone() })
            .collect();
        if let Some((progress, _)) = &erasure
            && progress.state == ErasureState::Overdue
            && let Some(due_by) = progress.due_by
        {
            // Shown, not stored: it ends when the confirmation comes.
            shown.push(TimelineStep { status: ShownStatus::Shown(ShownOnly::ErasureOverdue), at: Timestamp::of(due_by), reason_codes: Vec::new() });
        }
        let overdue = self.overdue_of(&referral, now);
        let undelivered = self.store.undelivered_callbacks(&referral.id).await?;
        let callbacks = (self.has_callback(&referral.sender_org) || undelivered != UndeliveredCallbacks::default()).then(|| undelivered.into());
        let emergency_override = self.store.emergency_override(&referral.id).await?.as_ref().map(OverrideAnswer::of);
        Ok(ReferralView {
            callbacks,
            emergency_override,
            priority: referral.priority,
            overdue,
            decision: serde_json::from_str(&referral.decision).ok(),
            recipient: RecipientRef { org: referral.destination_org, country: referral.destination_country },
            submitted_at: Timestamp(referral.created_ms),
            timeline: shown,
            delivery,
            erasure: erasure.map(|(progress, categories)| ErasureView {
                state: progress.state,
                due_by: progress.due_by.map(Timestamp::of),
                scope: if categories.is_some() { ErasureScope::Categories } else { ErasureScope::Whole },
                categories,
            }),
            referral_id: referral.id,
            status: referral.status,
            purpose: referral.purpose,
            outcome: referral.outcome,
            answers: referral.answers.clone(),
            handover: referral.handover,
            policy_version: referral.policy_version,
        })
    }

    /// The deadline a referral sent from here awaits and missed, if it did.
    pub(crate) fn overdue_of(&self, referral: &StoredReferral, now: DateTime<Utc>) -> Option<OverdueView> {
        let accepted = DateTime::<Utc>::from_timestamp_millis(referral.created_ms)?;
        let late = overdue(referral.priority, accepted, awaited_by_sender(referral.status), &self.deadlines, now)?;
        Some(OverdueView { deadline: late.deadline, since: Timestamp::of(late.since) })
    }

    /// After a withdrawal: where the erasure it asked for stands. A whole
    /// withdrawal is the one shown; otherwise the latest partial one, with
    /// its categories, told by the steps that came after it.
    #[allow(clippy::type_complexity)]
    fn erasure_view(&self, timeline: &[TimelineEntry], delivery: Option<&DeliveryRecord>, now: DateTime<Utc>) -> Option<(ErasureProgress, Option<Vec<String>>)> {
        let (at, partial) = match timeline.iter().position(|t| t.status == ReferralEvent::Withdrawn) {
            Some(at) => (at, false),
            None => (timeline.iter().rposition(|t| t.status.records_narrowing())?, true),
        };
        let withdrawn = timeline.get(at)?;
        let withdrawn_at = DateTime::<Utc>::from_timestamp_millis(withdrawn.at_ms)?;
        // A partial withdrawal is told by the confirmations of its own categories
        // (an earlier one's late confirmation does not count for it).
        let steps: Vec<ReferralEvent> = if partial {
            timeline
                .get(at..)?
                .iter()
                .filter(|t| withdrawn.reasons.iter().all(|c| t.reasons.contains(c)))
                .map(|t| t.status)
                .collect()
        } else {
            timeline.iter().map(|t| t.status).collect()
        };
        let packet_left = if partial { withdrawn.status == ReferralEvent::ConsentNarrowed } else { delivery.is_some_and(|d| d.packet_id.is_some()) };
        let deadline = chrono::Duration::from_std(self.delivery.erasure_deadline).unwrap_or(chrono::Duration::MAX);
        let progress = erasure_progress(withdrawn_at, partial, packet_left, &steps, deadline, now);
        Some((progress, partial.then(|| withdrawn.reasons.clone())))
    }
}

