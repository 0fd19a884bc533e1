//! Consent withdrawn at the sending gateway, whole or in part. The case key
//! is destroyed first (the payload, in every copy of the database, is erased
//! at that moment), then delivery stops and, if a packet may have reached the
//! peer, a `withdrawal` packet is queued so that the peer erases its copy too.
//! A partial withdrawal (some categories) cuts the payload still held down
//! under a new key and asks the peer to erase those categories only.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::sending::delivery::onward_context;
use crate::domain::onward::{categories_in, OnwardLimits};
use crate::app::access::{Authorized, SendersAndRepliers};
use crate::app::sending::delivery::WithdrawalAtRest;
use crate::app::{new_id, AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::auth::Principal;
use crate::domain::submission::FieldProblem;
use crate::domain::lifecycle::ReferralStatus;
use crate::domain::withdrawal::{reach, Reach, SentReferral, WithdrawalScope};
use crate::domain::{DataCategory, OrgId, Purpose};
use crate::store::{NewWithdrawal, SealedPayload, SentNarrowing, StoredReferral, Write, Written};

/// What [`Gateway::cut_payload`] did to the payload a referral's outbox entry holds.
enum Cut {
    /// Cut and sealed under a new key; the key it was sealed under (destroyed); its onward limits cut alike.
    Done { payload: SealedPayload, sealed_from: String, onward: Option<Vec<u8>> },
    /// Nothing is held (delivered or expired: the payload at rest is blank, and the key that sealed it went too).
    NothingHeld,
    /// Its key (`key_id`) was gone when it was opened: destroyed since the
    /// read by another withdrawal (to be read again), or for good.
    Moved { key_id: String },
}

impl Gateway {
    /// Withdraws the person's consent for a referral the caller's
    /// organisation sent: whole, or the part `body` names.
    // The id is recorded once found: a path may hold anything a caller typed.
    #[tracing::instrument(name = "withdraw_consent", skip_all, fields(referral_id = tracing::field::Empty))]
    pub async fn withdraw_consent(&self, principal: &Authorized<SendersAndRepliers>, referral_id: &str, scope: &WithdrawalScope) -> Result<WithdrawalAnswer, AppError> {
        let now = self.now();
        let Some(referral) = self.store.referral(referral_id).await?.filter(|r| principal.follows(&r.sender_org, r.answers.is_some())) else {
            self.audit(AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        tracing::Span::current().record("referral_id", tracing::field::display(referral.id.as_str()));
        match self.withdraw_from(principal, &referral, scope).await? {
            Some(answer) => Ok(answer),
            None => {
                let event = AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "untouched").referral(referral_id);
                self.audit(event).await?;
                Ok(WithdrawalAnswer { referral_id: referral.id, status: referral.status, withdrawn: Withdrawn::Nothing, categories: None, peer_notified: None })
            }
        }
    }

    /// Withdraws the person's consent, whole or the part `body` names, from
    /// every referral about them that the caller's organisation sent; one
    /// answer per referral it reaches, oldest first.
    #[tracing::instrument(name = "withdraw_subject_consent", skip_all)]
    pub async fn withdraw_subject_consent(
        &self,
        principal: &Authorized<SendersAndRepliers>,
        subject_ref: &str,
        scope: &WithdrawalScope,
    ) -> Result<SubjectWithdrawalAnswer, AppError> {
        let subject_key = self.subject_key(subject_ref);
        let (mut answers, mut facts_erased) = (Vec::new(), false);
        for summary in self.store.subject_referrals(&subject_key).await? {
            // Its organisation's; for a caller with the recipient role alone, the reply cases it sent.
            if !principal.follows(&summary.sender_org, summary.answers.is_some()) {
                continue;
            }
            // A denied referral sent nothing and holds no payload: nothing to withdraw,
            // but the facts its decision read are the person's, and go when the scope reaches it whole.
            if summary.outcome != "allow" {
                let (Ok(purpose), Ok(recipient)) = (summary.purpose.parse::<Purpose>(), OrgId::parse(&summary.destination_org)) else {
                    continue;
                };
                if reach(scope, SentReferral { purpose, recipient: &recipient, held: &BTreeSet::new() }) == Reach::Whole
                    && self.erase_decision_facts(&summary.referral_id).await?
                {
                    let event = AuditEvent::new(self.now(), principal.actor(), Action::ConsentWithdraw, "facts_erased")
                        .referral(&summary.referral_id)
                        .subject_key(subject_key.clone());
                    self.audit(event).await?;
                    facts_erased = true;
                }
                continue;
            }
            let Some(referral) = self.store.referral(&summary.referral_id).await? else { continue };
            if let Some(answer) = self.withdraw_from(principal, &referral, scope).await? {
                answers.push(answer);
            }
        }
        if answers.is_empty() && !facts_erased {
            // Nothing this organisation sent about that person in that scope; audited, as a referral not found is.
            self.audit(AuditEvent::new(self.now(), principal.actor(), Action::ConsentWithdraw, "not_found").subject_key(subject_key)).await?;
        }
        Ok(SubjectWithdrawalAnswer { subject_ref: subject_ref.to_owned(), referrals: answers })
    }

    /// Withdraws what `scope` reaches of `referral`; `None` if it reaches nothing.
    async fn withdraw_from(&self, principal: &Principal, referral: &StoredReferral, scope: &WithdrawalScope) -> Result<Option<WithdrawalAnswer>, AppError> {
        let (Ok(purpose), Ok(recipient)) = (referral.purpose.parse::<Purpose>(), OrgId::parse(&referral.destination_org)) else {
            return Err(AppError::Internal("referral record: unreadable purpose or recipient".to_owned()));
        };
        let held = self.categories_held(referral).await?;
        match reach(scope, SentReferral { purpose, recipient: &recipient, held: &held }) {
            Reach::Untouched => Ok(None),
            Reach::Whole => self.withdraw_whole(principal, &referral.id, referral.subject_key.clone()).await.map(Some),
            Reach::Categories(categories) => self.withdraw_categories(principal, referral, &categories).await.map(Some),
        }
    }

    /// The categories a referral sent and that were not withdrawn since
    /// (none for a denied referral). Once it is withdrawn whole, all it sent:
    /// a withdrawal reaching it again repeats the whole withdrawal's answer.
    async fn categories_held(&self, referral: &StoredReferral) -> Result<BTreeSet<DataCategory>, AppError> {
        if referral.outcome != "allow" {
            return Ok(BTreeSet::new());
        }
        let mut held = sent_categories(referral)?;
        if referral.status.is_withdrawn_whole() {
            return Ok(held);
        }
        for entry in self.store.timeline(&referral.id).await? {
            if entry.status.records_narrowing() {
                for category in entry.reasons.iter().filter_map(|c| c.parse::<DataCategory>().ok()) {
                    held.remove(&category);
                }
            }
        }
        Ok(held)
    }

    async fn withdraw_whole(&self, principal: &Principal, referral_id: &str, subject_key: String) -> Result<WithdrawalAnswer, AppError> {
        let now = self.now();
        // Keys first: should anything below fail, the payload is already
        // unreadable, and a retry of this request finishes the rest.
        if let Some(payload) = self.store.sealed_payload(referral_id).await? {
            self.vault.destroy(&[payload.key_id]).await?;
        }
        // The facts its decision read go too (a denied referral's are under a key of their own).
        let _ = self.erase_decision_facts(referral_id).await?;
        let withdrawal = self.new_withdrawal(&WithdrawalAtRest::default(), now)?;
        let audit = AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "withdrawn").referral(referral_id).subject_key(subject_key);
        let write = Write::Withdraw { referral_id: referral_id.to_owned(), withdrawal, at_ms: now.timestamp_millis(), audit };
        let written = self.writer.write(write).await?;
        // A partial withdrawal may have put the payload under a new key between
        // the destruction above and this write: that key goes too.
        if let Some(payload) = self.store.sealed_payload(referral_id).await? {
            self.vault.destroy(&[payload.key_id]).await?;
        }
        match written {
            Written::Withdrawn { peer_notified, .. } => {
                if peer_notified {
                    self.wake_delivery();
                }
                Ok(WithdrawalAnswer::whole(referral_id, Some(peer_notified)))
            }
            // Withdrawn before: the same answer, without repeating what was done.
            _ => {
                self.audit(AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "already_withdrawn").referral(referral_id)).await?;
                Ok(WithdrawalAnswer::whole(referral_id, None))
            }
        }
    }

    /// Withdraws some categories of a referral: the payload still held is cut
    /// down under a new key (the old one destroyed first), and the peer is
    /// asked to erase them if a packet may have reached it.
    async fn withdraw_categories(&self, principal: &Principal, referral: &StoredReferral, categories: &BTreeSet<DataCategory>) -> Result<WithdrawalAnswer, AppError> {
        let names: Vec<String> = categories.iter().map(|c| c.as_str().to_owned()).collect();
        // Cut again if another withdrawal replaced the payload meanwhile; a few
        // tries are plenty for requests a person makes by hand.
        let mut unreadable: Option<String> = None;
        for _ in 0..3 {
            let now = self.now();
            let (cut, onward) = match self.cut_payload(referral, categories, now).await? {
                Cut::Done { payload, sealed_from, onward } => (Some((payload, sealed_from)), onward),
                Cut::NothingHeld => (None, None),
                Cut::Moved { key_id } => {
                    // Withdrawn whole meanwhile: all of it is gone already.
                    if self.store.referral(&referral.id).await?.is_some_and(|r| !r.status.still_shared()) {
                        let event = AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "already_withdrawn").referral(&referral.id);
                        self.audit(event).await?;
                        return Ok(WithdrawalAnswer::whole(&referral.id, None));
                    }
                    // The same key gone twice is no race: the payload it sealed is erased for good.
                    if unreadable.as_deref() == Some(key_id.as_str()) {
                        return Err(AppError::Erased);
                    }
                    unreadable = Some(key_id);
                    continue;
                }
            };
            let new_key = cut.as_ref().map(|(sealed, _)| sealed.key_id.clone());
            let withdrawal = self.new_withdrawal(&WithdrawalAtRest { categories: Some(categories.clone()) }, now)?;
            let audit = AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "narrowed")
                .referral(&referral.id)
                .subject_key(referral.subject_key.clone())
                .reasons(names.clone());
            let narrowing = Box::new(SentNarrowing { categories: names.clone(), payload: cut, onward });
            let write = Write::Narrow { referral_id: referral.id.clone(), narrowing, withdrawal, at_ms: now.timestamp_millis(), audit };
            let written = self.writer.write(write).await?;
            let recut = new_key.is_some();
            if !matches!(written, Written::Withdrawn { .. })
                && let Some(new_key) = new_key
            {
                // Not stored: the key of a cut nobody will read goes at once.
                self.vault.destroy(&[new_key]).await?;
            }
            match written {
                Written::Withdrawn { peer_notified, .. } => {
                    // A withdrawal to send, or an entry the cut freed to be sealed again (see `Write::Narrow`).
                    if peer_notified || recut {
                        self.wake_delivery();
                    }
                    let status = self.store.referral(&referral.id).await?.map_or(referral.status, |r| r.status);
                    return Ok(WithdrawalAnswer {
                        referral_id: referral.id.clone(),
                        status,
                        withdrawn: Withdrawn::Categories,
                        categories: Some(names),
                        peer_notified: Some(peer_notified),
                    });
                }
                Written::PayloadMoved => continue,
                // Withdrawn whole (or erased) meanwhile: all of it is gone already.
                _ => {
                    let event = AuditEvent::new(now, principal.actor(), Action::ConsentWithdraw, "already_withdrawn").referral(&referral.id);
                    self.audit(event).await?;
                    return Ok(WithdrawalAnswer::whole(&referral.id, None));
                }
            }
        }
        // Other withdrawals of it kept cutting the payload (or withdrew it whole) while this one ran.
        Err(AppError::Contended)
    }

    /// The payload still held, cut down and sealed under a new case key,
    /// with the key it was sealed under (destroyed here, first, if it is a
    /// case key) and its onward limits cut the same way under the new key.
    /// Payload and limits are read together and opened with one read of
    /// their key: another withdrawal destroying that key meanwhile leaves
    /// both unreadable ([`Cut::Moved`]), never the payload cut without its
    /// limits.
    async fn cut_payload(&self, referral: &StoredReferral, categories: &BTreeSet<DataCategory>, now: chrono::DateTime<chrono::Utc>) -> Result<Cut, AppError> {
        let Some((held, sealed_onward)) = self.store.sealed_payload_and_onward(&referral.id).await? else {
            return Ok(Cut::NothingHeld);
        };
        if held.sealed.is_empty() {
            // Copies taken before delivery still hold the payload under it.
            self.vault.destroy(&[held.key_id]).await?;
            return Ok(Cut::NothingHeld);
        }
        let (plaintext, onward_opened) = self.open_with_onward(&referral.id, &held.sealed, sealed_onward.as_deref()).await?;
        let plaintext = match plaintext {
            Ok(plaintext) => plaintext,
            // Cut (or withdrawn whole) by another request since it was read.
            Err(AppError::Erased) => return Ok(Cut::Moved { key_id: held.key_id }),
            Err(error) => return Err(error),
        };
        let mut body: serde_json::Map<String, Value> =
            serde_json::from_slice(&plaintext).map_err(|_| AppError::Internal("referral payload is not an object".to_owned()))?;
        for category in categories {
            body.remove(category.as_str());
        }
        let remaining = categories_in(&Value::Object(body.clone()));
        let cut = serde_json::to_vec(&body).map_err(|e| AppError::Internal(e.to_string()))?;
        // What may still be passed on is what is still held. Limits that cannot be read though the
        // payload could (sealed under a key since destroyed, as by a replica of a version before they
        // were cut with the payload) let nothing be passed on, as at delivery.
        let onward = match onward_opened {
            Some(Ok(opened)) => {
                let limits: OnwardLimits = serde_json::from_slice(&opened).map_err(|_| AppError::Internal("onward limits are unreadable".to_owned()))?;
                limits.within(&remaining)
            }
            Some(Err(AppError::Erased)) => {
                tracing::warn!("a referral's onward limits are unreadable; they are not kept with its cut");
                None
            }
            Some(Err(error)) => return Err(error),
            None => None,
        };
        let case_key = self.vault.new_case_key(now.timestamp_millis()).await?;
        let sealed = self.vault.seal(&case_key, &cut, referral.id.as_bytes())?;
        let onward = onward
            .map(|limits| serde_json::to_vec(&limits).map_err(|e| AppError::Internal(e.to_string())))
            .transpose()?
            .map(|limits| self.vault.seal(&case_key, &limits, onward_context(&referral.id).as_bytes()).map(|sealed| sealed.sealed))
            .transpose()?;
        // Keys first: the withdrawn categories are unreadable from here on, in every copy.
        // (A payload from before case keys, under data.key, is re-sealed all the same.)
        self.vault.destroy(std::slice::from_ref(&held.key_id)).await?;
        Ok(Cut::Done { payload: sealed, sealed_from: held.key_id, onward })
    }

    fn new_withdrawal(&self, at_rest: &WithdrawalAtRest, now: chrono::DateTime<chrono::Utc>) -> Result<NewWithdrawal, AppError> {
        let packet_id = new_id()?;
        let body = serde_json::to_vec(at_rest).map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(NewWithdrawal {
            payload: SealedPayload { sealed: self.keys().seal(&body, packet_id.as_bytes())?, key_id: self.keys().data_key_id() },
            deadline_ms: self.delivery_deadline(now, None).timestamp_millis(),
            packet_id,
        })
    }
}

/// The categories an allowed referral's decision sent.
fn sent_categories(referral: &StoredReferral) -> Result<BTreeSet<DataCategory>, AppError> {
    let decision: Value = serde_json::from_str(&referral.decision).map_err(|_| AppError::Internal("referral record: unreadable decision".to_owned()))?;
    Ok(decision
        .get("sent")
        .and_then(Value::as_object)
        .map(|sent| sent.keys().filter_map(|c| c.parse().ok()).collect())
        .unwrap_or_default())
}

/// The body of `POST .../consent-withdrawal`: `{}` withdraws the whole
/// consent. Each list narrows it (a list must name at least one value):
/// only referrals of these purposes, only to these recipients, and within
/// them only these categories. Taking back every category still held is a
/// whole withdrawal; categories never sent are ignored.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WithdrawalScope")]
pub struct WithdrawalRequest {
    // Read as text and parsed one by one (`parse`), so that a problem names
    // the entry without repeating it; described as what they must be.
    #[serde(default)]
    #[schemars(with = "Vec<Purpose>", length(min = 1), transform = no_default)]
    purposes: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<OrgId>", length(min = 1), transform = no_default)]
    recipients: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<DataCategory>", length(min = 1), transform = no_default)]
    categories: Option<Vec<String>>,
}

/// A list left out means "all": there is no default value to show.
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

impl WithdrawalRequest {
    /// The scope a withdrawal's body names: `{}` is the whole consent; each of
    /// `purposes`, `recipients` and `categories` narrows it. Problems name the
    /// field, never its value.
    pub fn parse(body: &Value) -> Result<WithdrawalScope, AppError> {
        parse_scope(body)
    }
}

/// What a consent withdrawal did to one referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct WithdrawalAnswer {
    pub referral_id: String,
    /// The referral's status after it: `withdrawn` for a whole withdrawal; unchanged otherwise.
    pub status: ReferralStatus,
    pub withdrawn: Withdrawn,
    /// With `withdrawn: categories`: those taken back by this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Whether a withdrawal packet was queued (absent when nothing new was withdrawn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_notified: Option<bool>,
}

impl WithdrawalAnswer {
    fn whole(referral_id: &str, peer_notified: Option<bool>) -> Self {
        Self { referral_id: referral_id.to_owned(), status: ReferralStatus::Withdrawn, withdrawn: Withdrawn::Whole, categories: None, peer_notified }
    }
}

/// How much of a referral's consent a withdrawal took back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Withdrawn {
    Whole,
    Categories,
    /// The scope does not reach the referral, or took nothing it still held.
    Nothing,
}

/// A subject's withdrawal: one answer per referral the scope reaches,
/// oldest first (none when it reaches none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SubjectWithdrawalAnswer {
    pub subject_ref: String,
    pub referrals: Vec<WithdrawalAnswer>,
}

fn parse_scope(body: &Value) -> Result<WithdrawalScope, AppError> {
    // serde would read a struct from an array, by position: `[]` as `{}`.
    if !body.is_object() {
        return Err(AppError::Invalid(vec![FieldProblem { field: "(body)".to_owned(), problem: "must be a JSON object".to_owned() }]));
    }
    // A null list would read as absent, which widens the withdrawal (to the
    // whole consent when all three are): an irreversible step is not taken
    // on a value that may only be a client's unset field.
    if let Some(name) = ["purposes", "recipients", "categories"].into_iter().find(|name| body.get(name).is_some_and(Value::is_null)) {
        return Err(AppError::Invalid(vec![FieldProblem {
            field: name.to_owned(),
            problem: "must be a list; leave it out to withdraw for all".to_owned(),
        }]));
    }
    let parsed: WithdrawalRequest = serde_json::from_value(body.clone()).map_err(|_| {
        let unknown = body.as_object().and_then(|o| o.keys().find(|k| !["purposes", "recipients", "categories"].contains(&k.as_str())));
        let field = match unknown {
            Some(name) if crate::domain::submission::looks_like_field_name(name) => name.clone(),
            Some(_) => "(field)".to_owned(),
            None => "(body)".to_owned(),
        };
        AppError::Invalid(vec![FieldProblem {
            field,
            problem: "a consent withdrawal is {} (all of it) or names purposes, recipients and/or categories, each a list".to_owned(),
        }])
    })?;
    let mut problems = Vec::new();
    let purposes = parse_list(parsed.purposes, "purposes", |t| t.parse::<Purpose>().ok(), "is not a purpose", &mut problems);
    let recipients = parse_list(parsed.recipients, "recipients", |t| OrgId::parse(t).ok(), "is not an organisation id", &mut problems);
    let categories = parse_list(parsed.categories, "categories", |t| t.parse::<DataCategory>().ok(), "is not a data category", &mut problems);
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems));
    }
    WithdrawalScope::new(purposes, recipients, categories).map_err(|_| {
        AppError::Invalid(vec![FieldProblem {
            field: "(body)".to_owned(),
            problem: "a list must name at least one value; leave it out to withdraw for all".to_owned(),
        }])
    })
}

fn parse_list<T: Ord>(
    values: Option<Vec<String>>,
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
    problem: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<BTreeSet<T>> {
    let values = values?;
    let mut parsed = BTreeSet::new();
    for (index, text) in values.iter().enumerate() {
        match parse(text) {
            Some(value) => {
                parsed.insert(value);
            }
            None => problems.push(FieldProblem { field: format!("{field}[{index}]"), problem: problem.to_owned() }),
        }
    }
    Some(parsed)
}
