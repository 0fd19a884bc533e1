//! The recipient organisation's API: it lists its cases in the order they
//! became visible, reads one (a disclosure, audited), acknowledges it,
//! reports progress (sealed as a status packet back to the sending
//! gateway) and confirms it erased what was withdrawn.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::app::access::{Authorized, Recipients};
use crate::app::receiving::received::CaseDocument;
use crate::app::views::Timestamp;
use crate::app::receiving::received::{closed_deadline, Answer};
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::auth::Principal;
use crate::crypto::packet::{PacketClaims, PacketType};
use crate::domain::status::{is_reason_code, ReferralProgress};
use crate::domain::submission::FieldProblem;
use crate::domain::lifecycle::{InboxEvent, InboxState};
use crate::domain::priority::Priority;
use crate::domain::Purpose;
use crate::domain::withdrawal::{ErasedBy, ErasureNotice};
use crate::store::{InboxItem, InboxMove, QueuePlace, Write};

/// Most inbox entries listed per page.
pub const MAX_INBOX_PAGE: i64 = 100;

impl Gateway {
    /// The caller's organisation's cases after `cursor`, in `order` (a
    /// cursor says which order it continues; `order` must then agree).
    #[tracing::instrument(name = "list_inbox", skip_all)]
    pub async fn inbox(&self, principal: &Authorized<Recipients>, order: Option<InboxOrder>, cursor: Option<&str>, limit: i64) -> Result<InboxPage, AppError> {
        let after = match cursor {
            Some(text) => Some(InboxCursor::parse(text).ok_or_else(|| AppError::invalid_field("cursor", "is not a cursor this API returned"))?),
            None => None,
        };
        let order = match (order, after) {
            (Some(order), Some(after)) if after.order() != order => return Err(AppError::invalid_field("order", "is not the order the cursor continues")),
            (Some(order), _) => order,
            (None, Some(after)) => after.order(),
            // Recipients tail their inbox with the cursor: a listing that
            // names no order keeps the one they tail by.
            (None, None) => InboxOrder::Arrival,
        };
        let limit = limit.clamp(1, MAX_INBOX_PAGE);
        let org = principal.org.as_str();
        let items = match (order, after) {
            (InboxOrder::Arrival, Some(InboxCursor::Arrival(seq))) => self.store.inbox_for(org, &InboxState::LISTED, Some(seq), limit).await?,
            (InboxOrder::Due, Some(InboxCursor::Due(place))) => self.store.inbox_queue(org, &InboxState::LISTED, Some(place), limit).await?,
            (InboxOrder::Arrival, _) => self.store.inbox_for(org, &InboxState::LISTED, None, limit).await?,
            (InboxOrder::Due, _) => self.store.inbox_queue(org, &InboxState::LISTED, None, limit).await?,
        };
        let now = self.now();
        self.audit(AuditEvent::new(now, principal.actor(), Action::InboxRead, "listed")).await?;
        // After the last item, even on a short page: a recipient tails its inbox with it.
        let next = items.last().and_then(|last| match order {
            InboxOrder::Arrival => last.visible_seq.map(|seq| InboxCursor::Arrival(seq).to_string()),
            InboxOrder::Due => last.queue.map(|place| InboxCursor::Due(place).to_string()),
        });
        let mut listed = Vec::with_capacity(items.len());
        for (item, claims) in items.iter().zip(self.opened_claims_all(&items).await?) {
            if item.state == InboxState::Erased {
                // The sender withdrew the person's consent: only the fact is left.
                listed.push(InboxEntry::bare(item, item.state));
                continue;
            }
            let claims = match claims {
                Ok(claims) if !lapsed(&claims, now) => claims,
                // Erased, or past its end: no longer the recipient's to see.
                Ok(_) | Err(AppError::Erased) => continue,
                Err(error) => return Err(error),
            };
            let mut entry = InboxEntry::bare(item, item.state.shown());
            let sealed = claims.is_end_to_end();
            // Sealed to the organisation: its purpose is inside, for it alone.
            if sealed {
                entry.end_to_end = Some(true);
            } else {
                entry.purpose = claims.purpose;
                entry.priority = Some(claims.priority);
                // Cases made visible before deadlines existed have none to show.
                entry.respond_by = item.queue.filter(|place| place.rank < 2 && item.priority.is_some()).map(|place| Timestamp(place.due_ms));
            }
            if !item.narrowed.is_empty() {
                // Listed again because its sender withdrew these: the recipient erases them too
                // (for a sealed case, what the withdrawals handed over with it name).
                let named = if sealed { &mut entry.withdrawals } else { &mut entry.erased_categories };
                *named = Some(item.narrowed.clone());
            }
            listed.push(entry);
        }
        Ok(InboxPage { items: listed, next_cursor: next })
    }

    /// One case of the caller's organisation, whole: a disclosure, audited.
    // Packet ids are recorded once found (see `visible_item`): a path may hold anything a caller typed.
    #[tracing::instrument(name = "read_case", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn inbox_case(&self, principal: &Authorized<Recipients>, packet_id: &str) -> Result<InboxCase, AppError> {
        let (item, claims) = self.visible_item(principal, packet_id).await?;
        let event = AuditEvent::new(self.now(), principal.actor(), Action::InboxRead, "read").referral(&item.packet_id);
        self.audit(event).await?;
        let withdrawals = self.handed_over_withdrawals(&item, &claims).await?;
        Ok(InboxCase { document: CaseDocument::new(&item, &claims, &withdrawals), state: item.state.shown() })
    }

    /// The recipient organisation says it erased its own copy of an erased
    /// case, or of the categories withdrawn from a case it still holds:
    /// `erasure_confirmation` goes back to the sender. Idempotent.
    #[tracing::instrument(name = "confirm_erasure", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn confirm_erasure(&self, principal: &Authorized<Recipients>, packet_id: &str) -> Result<ErasureConfirmed, AppError> {
        let now = self.now();
        let item = self.store.inbox_item(packet_id).await?.filter(|item| {
            item.recipient_org == principal.org.as_str() && item.packet_type == PacketType::Referral.as_str() && item.visible_seq.is_some()
        });
        let Some(item) = item else {
            self.audit(AuditEvent::new(now, principal.actor(), Action::InboxRead, "not_found")).await?;
            return Err(AppError::NotFound);
        };
        tracing::Span::current().record("packet_id", tracing::field::display(item.packet_id.as_str()));
        let state = item.state;
        let narrowed = state.is_live() && !item.narrowed.is_empty();
        // A case sealed end to end was cut by the organisation itself, as its
        // withdrawals said: they are named, since this gateway cannot name the categories.
        let sealed = narrowed && self.opened_claims(&item).await.is_ok_and(|claims| claims.is_end_to_end());
        let answer = if narrowed {
            let named = Some(item.narrowed.clone());
            ErasureConfirmed {
                packet_id: item.packet_id.clone(),
                state: item.state,
                erased_categories: named.clone().filter(|_| !sealed),
                withdrawals: named.filter(|_| sealed),
                erasure: Some(Confirmed::Confirmed),
            }
        } else {
            ErasureConfirmed { packet_id: item.packet_id.clone(), state: InboxState::ErasureConfirmed, erased_categories: None, withdrawals: None, erasure: None }
        };
        if state == InboxState::ErasureConfirmed || (narrowed && item.narrowing_confirmed) {
            return Ok(answer);
        }
        let confirming = if narrowed { InboxEvent::NarrowingConfirmed } else { InboxEvent::ErasureConfirmed };
        if state.after(confirming).is_none() {
            // A case still live and whole: there is nothing to confirm yet.
            return Err(AppError::NotErased);
        }
        let (categories, withdrawals) = match (narrowed, sealed) {
            (false, _) => (None, None),
            (true, false) => (Some(item.narrowed.iter().filter_map(|c| c.parse().ok()).collect()), None),
            (true, true) => (None, Some(item.narrowed.iter().cloned().collect())),
        };
        let erased = ErasureNotice { in_reply_to: item.packet_id.clone(), erased_by: ErasedBy::Organisation, categories, withdrawals };
        let reply = self.answer_back(&item, Answer::Erasure(erased), now).await?;
        let step = if narrowed { InboxMove::ConfirmNarrowing { reply } } else { InboxMove::ConfirmErasure { reply } };
        let change = self.inbox_move(&item, step, now);
        let outcome = if narrowed { "narrowing_confirmed" } else { "erasure_confirmed" };
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, outcome).referral(&item.packet_id);
        self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
        self.wake_delivery();
        Ok(answer)
    }

    /// The recipient has taken the case: `forwarded` goes back to the sender.
    #[tracing::instrument(name = "acknowledge", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn acknowledge(&self, principal: &Authorized<Recipients>, packet_id: &str) -> Result<Acknowledged, AppError> {
        let (item, _) = self.visible_item(principal, packet_id).await?;
        if item.state.shown() == InboxState::Acknowledged {
            return Ok(Acknowledged { packet_id: item.packet_id, state: InboxState::Acknowledged });
        }
        let now = self.now();
        let reply = self.answer_back(&item, Answer::Status(ReferralProgress::Forwarded, Vec::new()), now).await?;
        let change = self.inbox_move(&item, InboxMove::Acknowledge { reply }, now);
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, InboxState::Acknowledged.as_str()).referral(&item.packet_id);
        self.writer.write(Write::InboxMove { change: Box::new(change), audit: event }).await?;
        self.wake_delivery();
        Ok(Acknowledged { packet_id: item.packet_id, state: InboxState::Acknowledged })
    }

    /// The recipient reports progress; sealed back to the sender's gateway.
    #[tracing::instrument(name = "report_status", skip_all, fields(packet_id = tracing::field::Empty))]
    pub async fn report_status(&self, principal: &Authorized<Recipients>, packet_id: &str, report: StatusReportRequest) -> Result<StatusQueued, AppError> {
        let StatusReportRequest { status, reason_code } = report;
        let reason_codes: Vec<String> = reason_code.into_iter().collect();
        let (item, _) = self.visible_item(principal, packet_id).await?;
        let now = self.now();
        let event = AuditEvent::new(now, principal.actor(), Action::InboxUpdate, status.as_str()).referral(&item.packet_id).reasons(reason_codes.clone());
        let reply = self.answer_back(&item, Answer::Status(status, reason_codes), now).await?;
        // Closed: the case's deadline here comes forward by its closure rule, as at the sender.
        let brings_forward = match (status, item.retention) {
            (ReferralProgress::Closed, Some(kept)) => closed_deadline(kept, now).map(|until_ms| (item.packet_id.clone(), until_ms)),
            _ => None,
        };
        // Every status a recipient reports answers the case (`in_progress` and later imply its acceptance).
        let answers = Some(item.packet_id.clone());
        self.writer.write(Write::Reply { reply: Box::new(reply), audit: event, brings_forward, answers }).await?;
        self.wake_delivery();
        Ok(StatusQueued { packet_id: item.packet_id, status })
    }

    /// A case the caller's organisation may see, with its claims opened;
    /// anything else (another's, refused, or past its consent or retention)
    /// is absent.
    pub(super) async fn visible_item(&self, principal: &Principal, packet_id: &str) -> Result<(InboxItem, PacketClaims), AppError> {
        let now = self.now();
        let candidate = self
            .store
            .inbox_item(packet_id)
            .await?
            .filter(|item| {
                item.recipient_org == principal.org.as_str()
                    && (InboxState::LISTED.contains(&item.state) || item.state.is_erased())
                    && item.packet_type == PacketType::Referral.as_str()
            });
        if let Some(item) = &candidate
            && item.state.is_erased()
        {
            // 410 only for a case its recipient could see; any other is absent.
            if item.visible_seq.is_some() {
                return Err(AppError::Erased);
            }
            self.audit(AuditEvent::new(now, principal.actor(), Action::InboxRead, "not_found")).await?;
            return Err(AppError::NotFound);
        }
        let found = match candidate {
            Some(item) => match self.opened_claims(&item).await {
                Ok(claims) => Some((item, claims)).filter(|(_, claims)| !lapsed(claims, now)),
                // Erased: 410, so the recipient knows to erase its own copy.
                Err(AppError::Erased) => return Err(AppError::Erased),
                Err(AppError::Store(error)) => return Err(AppError::Store(error)),
                Err(_) => None,
            },
            None => None,
        };
        match found {
            Some(visible) => {
                // Into the caller's span (a use case's): the id is one this gateway holds.
                tracing::Span::current().record("packet_id", tracing::field::display(visible.0.packet_id.as_str()));
                Ok(visible)
            }
            None => {
                self.audit(AuditEvent::new(self.now(), principal.actor(), Action::InboxRead, "not_found")).await?;
                Err(AppError::NotFound)
            }
        }
    }
}

/// Past the end of the consent it was sent under, or of its retention: no longer to be read.
fn lapsed(claims: &PacketClaims, now: DateTime<Utc>) -> bool {
    claims.consent_expires_at.is_some_and(|end| end <= now) || claims.retention_until.is_some_and(|end| end <= now)
}

/// A cursor as this API returns one: decimal digits only (no sign).
pub fn parse_cursor(text: &str) -> Option<i64> {
    Some(text).filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).and_then(|t| t.parse().ok())
}

/// How `GET /v1/inbox` orders a recipient's cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxOrder {
    /// Emergencies awaiting the recipient first, then every case awaiting
    /// it by the deadline it awaits (its acknowledgement, then its first
    /// answer), then cases awaiting nothing (answered, or erased), in the
    /// order they became visible or were listed again: a worklist, whose
    /// order changes as cases move, to be read from the top again.
    Due,
    /// The order cases became visible, a case listed again (erased, or cut)
    /// last: a recipient tails its inbox with this one. The default, as it
    /// was before there were two orders.
    Arrival,
}

impl std::str::FromStr for InboxOrder {
    type Err = ();
    fn from_str(text: &str) -> Result<Self, ()> {
        match text {
            "due" => Ok(Self::Due),
            "arrival" => Ok(Self::Arrival),
            _ => Err(()),
        }
    }
}

/// Where a page of the inbox ended, in its order: the arrival order's
/// sequence number (decimal digits, as before there were two orders), or
/// the due order's place (`q` and three numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InboxCursor {
    Arrival(i64),
    Due(QueuePlace),
}

impl InboxCursor {
    fn order(self) -> InboxOrder {
        match self {
            Self::Arrival(_) => InboxOrder::Arrival,
            Self::Due(_) => InboxOrder::Due,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        if let Some(place) = text.strip_prefix('q') {
            let mut numbers = place.split('.').map(parse_cursor);
            let (rank, due_ms, visible_seq) = (numbers.next()??, numbers.next()??, numbers.next()??);
            return numbers.next().is_none().then_some(Self::Due(QueuePlace { rank, due_ms, visible_seq }));
        }
        parse_cursor(text).map(Self::Arrival)
    }
}

impl std::fmt::Display for InboxCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Arrival(seq) => write!(f, "{seq}"),
            Self::Due(place) => write!(f, "q{}.{}.{}", place.rank, place.due_ms, place.visible_seq),
        }
    }
}


/// `GET /v1/inbox`: a page of the organisation's cases.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct InboxPage {
    pub items: Vec<InboxEntry>,
    /// The cursor after the last item, even on a short page (to tail the
    /// inbox); `null` when the page is empty.
    pub next_cursor: Option<String>,
}

/// A case as the inbox lists it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct InboxEntry {
    pub packet_id: String,
    pub from_country: String,
    pub received_at: Timestamp,
    /// `available` or `acknowledged`; `erased` once the sender withdrew the
    /// consent or the retention deadline passed: the case is listed again,
    /// last, and the organisation must erase its own copy.
    pub state: InboxState,
    /// Absent once erased, and for a case sealed end to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// `emergency`, `urgent` or `normal`. Absent once erased, and for a
    /// case sealed end to end: its priority is inside, for the organisation
    /// alone (an `emergency` flag is itself something the routing gateway
    /// must not learn), and the organisation's own tool orders such cases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// What this gateway awaits of the organisation by then: its
    /// acknowledgement, then (once acknowledged) its first status. Absent
    /// once it answered, where `priority` is, and for a case made visible
    /// before deadlines existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub respond_by: Option<Timestamp>,
    /// Sealed to the organisation's own key: this gateway cannot read it
    /// (federation.md §5a); present, and true, only then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end: Option<bool>,
    /// Categories the sender withdrew after the case became visible: erased
    /// here, listed again last; the organisation erases them too and confirms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_categories: Option<Vec<String>>,
    /// For a case sealed end to end: the packet ids of the partial
    /// withdrawals handed over with it (this gateway cannot read their
    /// categories); listed again last; the organisation opens them, erases
    /// what they name and confirms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawals: Option<Vec<String>>,
    /// A reply case: the referral of this organisation it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers_referral: Option<String>,
}

impl InboxEntry {
    fn bare(item: &InboxItem, state: InboxState) -> Self {
        Self {
            packet_id: item.packet_id.clone(),
            from_country: item.issuer.clone(),
            received_at: Timestamp(item.received_ms),
            state,
            purpose: None,
            priority: None,
            respond_by: None,
            end_to_end: None,
            erased_categories: None,
            withdrawals: None,
            answers_referral: item.answers.clone(),
        }
    }
}

/// `GET /v1/inbox/{packet_id}`: one case, as its organisation receives it,
/// with its state. Every read is audited.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct InboxCase {
    #[serde(flatten)]
    pub document: CaseDocument,
    /// `available` or `acknowledged`.
    pub state: InboxState,
}

/// `POST /v1/inbox/{packet_id}/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Acknowledged {
    pub packet_id: String,
    /// `acknowledged`.
    pub state: InboxState,
}

/// `POST /v1/inbox/{packet_id}/status`: progress on a case, as the
/// organisation reports it.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "StatusReport", deny_unknown_fields)]
pub struct StatusReportRequest {
    /// One of the statuses an organisation reports.
    #[schemars(schema_with = "reported_statuses")]
    pub status: ReferralProgress,
    /// Why, as a code (`[a-z0-9_]{1,64}`); never free text.
    #[schemars(regex(pattern = r"^[a-z0-9_]{1,64}$"))]
    pub reason_code: Option<String>,
}

/// The statuses a recipient organisation reports: a subset of
/// [`ReferralProgress`], which the gateways also use between themselves.
fn reported_statuses(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = ReferralProgress::REPORTED_BY_RECIPIENTS.iter().map(|status| status.as_str()).collect();
    schemars::json_schema!({ "type": "string", "enum": names })
}

impl StatusReportRequest {
    /// Reads a status report; problems name the field, never its value.
    pub fn parse(body: &Value) -> Result<Self, AppError> {
            let status: ReferralProgress = body
                .get("status")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .filter(|s| ReferralProgress::REPORTED_BY_RECIPIENTS.contains(s))
                .ok_or_else(|| AppError::invalid_field("status", "must be one of accepted, declined, in_progress, arrived, services_delivered, closed"))?;
            let reason_codes = match body.get("reason_code") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(code)) if is_reason_code(code) => vec![code.clone()],
                Some(_) => return Err(AppError::invalid_field("reason_code", "must be a code: 1 to 64 of a-z, 0-9 and _")),
            };
            if let Some(unknown) = body.as_object().and_then(|o| o.keys().find(|k| !["status", "reason_code"].contains(&k.as_str()))) {
                let field = if crate::domain::submission::looks_like_field_name(unknown) { unknown.clone() } else { "(field)".to_owned() };
                return Err(AppError::Invalid(vec![FieldProblem { field, problem: "is not a field of a status report".to_owned() }]));
            }
        Ok(Self { status, reason_code: reason_codes.into_iter().next() })
    }
}

/// `POST /v1/inbox/{packet_id}/status`: the report, queued for the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct StatusQueued {
    pub packet_id: String,
    pub status: ReferralProgress,
}

/// `POST /v1/inbox/{packet_id}/erasure-confirmed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErasureConfirmed {
    pub packet_id: String,
    /// `erasure_confirmed` for an erased case; the case's state when what
    /// was withdrawn from a case it still holds is confirmed.
    pub state: InboxState,
    /// The categories confirmed erased, from a case this gateway could read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_categories: Option<Vec<String>>,
    /// The withdrawals confirmed carried out, for a case sealed end to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawals: Option<Vec<String>>,
    /// `confirmed`, when what was confirmed is part of a case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<Confirmed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Confirmed {
    Confirmed,
}
