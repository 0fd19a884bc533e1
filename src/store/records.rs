//! What the store takes and gives, in the gateway's terms: the rows it
//! keeps (free of personal data in clear), the writes of a group commit and
//! their results, and the moves of a received packet.

use crate::audit::AuditEvent;
use crate::domain::lifecycle::{CallbackState, InboxEvent, InboxState, OutboxEvent, OutboxState, ReferralEvent, ReferralStatus};
use crate::domain::emergency_override::{OverrideReason, OverrideState};
use crate::domain::priority::{DeadlineKind, Priority};
use crate::domain::signoff::{PolicyVersionState, Verdict};
use crate::domain::RecipientKind;

/// The sealed minimised payload waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPayload {
    pub sealed: Vec<u8>,
    pub key_id: String,
}

/// A decided referral, as stored. Free of personal data: the subject
/// reference and the request are keyed hashes, the decision and consent are
/// summaries of categories, codes and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReferral {
    pub id: String,
    pub sender_org: String,
    pub idempotency_key: String,
    pub request_fingerprint: String,
    pub subject_key: String,
    pub destination_org: String,
    pub destination_country: Option<String>,
    pub purpose: String,
    pub outcome: String,
    pub policy_version: String,
    pub decision: String,
    pub consent: String,
    /// The DPO policy version that decided (the answer is rendered from it and the decision).
    pub policy_number: i64,
    pub status: ReferralStatus,
    pub created_ms: i64,
    /// Case management passes to the recipient when it accepts.
    pub handover: bool,
    pub priority: Priority,
    /// A reply case: the id of the request's packet, received here, that it
    /// answers (its packet carries it as `answers`); `None` otherwise.
    pub answers: Option<String>,
}

/// Referrals sent from here that stand in `status`, of `priority`,
/// accepted at or before `accepted_by_ms`: those past the deadline
/// `deadline` that status awaits, when the caller computed the time so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwaitingCutoff {
    pub status: ReferralStatus,
    pub priority: Priority,
    pub deadline: DeadlineKind,
    pub accepted_by_ms: i64,
}

/// Which of an organisation's referrals to list; every filter optional,
/// combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferralFilter {
    /// Any of these statuses (none: any).
    pub statuses: Vec<ReferralStatus>,
    pub purpose: Option<String>,
    pub priority: Option<Priority>,
    /// Overdue (some cutoff takes it in) or not (none does); the cutoffs
    /// are those of every priority and awaiting status at the time asked.
    pub overdue: Option<(bool, Vec<AwaitingCutoff>)>,
    /// Accepted at or after this.
    pub from_ms: Option<i64>,
    /// Accepted before this.
    pub to_ms: Option<i64>,
    /// Only reply cases (for a caller that follows those alone).
    pub replies_only: bool,
}

/// A referral as an organisation's listing gives it, with its place in the
/// order referrals were recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedReferral {
    pub listed_seq: i64,
    pub referral: StoredReferral,
}

/// An organisation registered for status callbacks, and how long each of
/// its events is retried before it is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSubscription {
    pub org: String,
    pub retry_ms: i64,
}

/// A status callback event claimed for an attempt: a referral's timeline
/// entry, for its organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCallback {
    /// `<referral id>.<position>`: the same at every attempt.
    pub id: String,
    pub referral_id: String,
    pub org: String,
    /// The entry's place in the referral's timeline, from 1.
    pub position: i64,
    pub event: ReferralEvent,
    pub at_ms: i64,
    pub reasons: Vec<String>,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub deadline_ms: i64,
}

/// A referral's callback events not delivered: waiting, and given up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UndeliveredCallbacks {
    pub pending: i64,
    pub failed: i64,
    /// Why the latest failed attempt failed (a code), if one did.
    pub last_error: Option<String>,
}

/// How many callback events of an organisation are in a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackCount {
    pub org: String,
    pub state: CallbackState,
    pub count: i64,
}

/// A referral past a deadline, not yet logged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueReferral {
    pub referral_id: String,
    pub status: ReferralStatus,
    pub priority: Priority,
    pub created_ms: i64,
}

/// A referral to store, with its outbox entry on allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReferral {
    pub record: StoredReferral,
    pub outbox: Option<NewOutboxEntry>,
    /// Allowed only under an emergency override awaiting approval: the
    /// outbox entry is stored held (see [`NewOutboxEntry::held`]).
    pub emergency_override: Option<NewOverride>,
    /// The decision's facts, sealed, kept for impact replays (see [`DecisionFactsAtRest`]).
    pub facts: Option<SealedFacts>,
    /// A family-tracing request's match entry (see [`MatchCandidate`]),
    /// sealed under the case's key.
    pub match_entry: Option<SealedMatchEntry>,
}

/// A decision's facts (`domain::decide::DecisionFacts`) sealed under a case
/// key: the payload's, or (a denied referral) one of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFacts {
    pub sealed: SealedPayload,
    /// The key seals nothing else, and goes when the facts do.
    pub key_for_facts_only: bool,
}

/// A decision's facts as kept for impact replays, with the time it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionFactsAtRest {
    pub referral_id: String,
    pub decided_ms: i64,
    pub facts: SealedFacts,
}

/// A referral as the statistics of the period it was accepted in read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedReferral {
    pub id: String,
    pub created_ms: i64,
    pub destination_country: Option<String>,
    /// The decision as stored (a `DecisionRecord`).
    pub decision: String,
}

/// One timeline step of a referral with a step in a period, as the
/// statistics of that period read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodStep {
    pub referral_id: String,
    /// The step's own number: steps of one referral are in this order.
    pub step: i64,
    /// When the referral was accepted.
    pub accepted_ms: i64,
    /// Whether a packet was made for the referral.
    pub packet_made: bool,
    pub status: ReferralEvent,
    pub at_ms: i64,
    pub reasons: Vec<String>,
}

/// A received packet refused at screening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPacket {
    pub packet_id: String,
    pub refused_ms: i64,
    pub reasons: Vec<String>,
}

/// What the outbox keeps of an allowed referral until it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxEntry {
    pub payload: SealedPayload,
    /// What the recipient may pass on (`domain::onward::OnwardLimits` as
    /// JSON), sealed under the payload's case key; `None`: nothing.
    pub onward: Option<SealedPayload>,
    /// The earliest end of the consent covering what is sent.
    pub consent_expires_ms: Option<i64>,
    /// Past this, nothing more is sent and the referral is `expired`.
    pub deadline_ms: i64,
    /// How long the referral may be kept, kept on the referral's row.
    pub retention: Option<StoredRetention>,
    /// Its packets must be sealed end to end to the recipient organisation
    /// (and wait for a key of its to be valid).
    pub end_to_end: bool,
    /// Not to be delivered before a DPO approves the emergency override it
    /// goes under ([`Write::SettleOverride`]).
    pub held: bool,
}

/// An emergency override asked for with a submission: codes, times, who.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOverride {
    pub reason: OverrideReason,
    pub justification_code: String,
    /// The categories it stands in for consent for.
    pub overridden: Vec<String>,
    pub requested_org: String,
    pub requested_by: String,
    pub requested_ms: i64,
    pub approve_by_ms: i64,
    /// The DPO's standing rule (`overrides.toml#<n>`) under which it takes
    /// effect at once: approved in the same write that stores it, its
    /// packet released.
    pub standing_rule: Option<String>,
}

/// An emergency override as stored, with the referral's routing facts a
/// DPO decides on (never personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOverride {
    pub referral_id: String,
    /// What was asked, as the submission recorded it.
    pub asked: NewOverride,
    pub state: OverrideState,
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub purpose: String,
    pub destination_org: String,
    pub destination_country: Option<String>,
    pub priority: Priority,
}

/// A retention deadline as the store keeps it (see `domain::retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRetention {
    pub until_ms: i64,
    pub days_after_closure: Option<i64>,
}

/// A referral sent from here whose retention deadline has passed and that
/// the sweep has not erased yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredReferral {
    pub referral_id: String,
    /// The case key of its payload, if it was allowed (and so has one).
    pub key_id: Option<String>,
}

/// What the retention sweep erases, each in one transaction with its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionErasure {
    /// A referral sent from here: its payload and kept packet blanked, a
    /// still-pending delivery stopped (`erased`), `retention_expired` in its
    /// timeline, and marked erased.
    Sent { referral_id: String },
    /// A live received case (`available`, `acknowledged`, `pushing`) moved
    /// to `erased`, claims blanked, listed again to its recipient; a case
    /// already pushed to a webhook goes to `erasure_pushing` instead, to be
    /// pushed a notice until `push_until_ms`.
    Received { packet_id: String, erasure_pushed: bool, push_until_ms: i64 },
}

/// A packet to send that is not a referral (a status, say): its body at
/// rest, bound to its packet id, which is also its outbox id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReply {
    pub packet_id: String,
    pub packet_type: String,
    pub destination_country: String,
    pub recipient_org: String,
    pub payload: SealedPayload,
    pub deadline_ms: i64,
    pub created_ms: i64,
}

/// An outbox entry claimed for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The referral id for a referral, the packet id otherwise; the body at
    /// rest is bound to it.
    pub id: String,
    pub referral_id: Option<String>,
    pub packet_type: String,
    pub recipient_org: String,
    pub destination_country: String,
    pub purpose: Option<String>,
    pub policy_version: Option<String>,
    pub payload: SealedPayload,
    /// A referral's onward limits, sealed under its case key, if any.
    pub onward: Option<Vec<u8>>,
    pub consent_expires_ms: Option<i64>,
    pub deadline_ms: i64,
    /// Attempts started, this one included.
    pub attempts: i64,
    pub handover: bool,
    /// A referral's priority (`normal` for any other packet).
    pub priority: Priority,
    /// Sealed end to end to the recipient organisation, or not sent.
    pub end_to_end: bool,
    /// The packet made on an earlier attempt, sent again as it is.
    pub packet: Option<StoredPacket>,
    pub created_ms: i64,
    /// For a withdrawal: the id of the referral packet it withdraws; for a
    /// reply case: the id of the request packet it answers.
    pub in_reply_to: Option<String>,
    /// For a referral: the organisation that submitted it (a request that
    /// expects a reply names it as `requested_by`).
    pub sender_org: Option<String>,
    /// For a referral: its retention deadline, carried in its packet.
    pub retention: Option<StoredRetention>,
}

impl ClaimedDelivery {
    /// A packet queued as a reply (not a referral), as its first claim
    /// reads it: nothing of a referral's, no packet made yet.
    pub fn of_reply(reply: &NewReply) -> Self {
        Self {
            id: reply.packet_id.clone(),
            referral_id: None,
            packet_type: reply.packet_type.clone(),
            recipient_org: reply.recipient_org.clone(),
            destination_country: reply.destination_country.clone(),
            purpose: None,
            policy_version: None,
            payload: reply.payload.clone(),
            onward: None,
            consent_expires_ms: None,
            deadline_ms: reply.deadline_ms,
            attempts: 1,
            handover: false,
            priority: Priority::default(),
            end_to_end: false,
            packet: None,
            created_ms: reply.created_ms,
            in_reply_to: None,
            sender_org: None,
            retention: None,
        }
    }
}

/// A sealed packet as first made for an outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPacket {
    pub packet_id: String,
    /// Compact JWE, readable only by the peer gateway.
    pub packet: String,
}

/// How an outbox entry ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The peer took the packet; its signed receipt.
    Delivered { receipt: String },
    /// The deadline passed first.
    Expired,
}

impl Settlement {
    /// What it does to the outbox entry.
    pub fn event(&self) -> OutboxEvent {
        match self {
            Settlement::Delivered { .. } => OutboxEvent::Delivered,
            Settlement::Expired => OutboxEvent::Expired,
        }
    }

    /// The state it ends a pending entry in.
    pub fn state(&self) -> OutboxState {
        match self {
            Settlement::Delivered { .. } => OutboxState::Delivered,
            Settlement::Expired => OutboxState::Expired,
        }
    }
}

/// The delivery state of a referral's outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub state: OutboxState,
    pub attempts: i64,
    pub packet_id: Option<String>,
    /// The sealed packet as sent (compact JWE).
    pub packet: Option<String>,
    pub receipt: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub status: ReferralEvent,
    pub at_ms: i64,
    /// Reason codes the status came with (a refusal's), if any.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPolicyVersion {
    pub version: String,
    pub author_org: Option<String>,
    pub author_subject: String,
    pub note: Option<String>,
    pub created_ms: i64,
    /// JSON object: file name -> text.
    pub files: String,
    /// A draft, or approved at once when one approval is enough.
    pub state: PolicyVersionState,
    pub effective_from_ms: Option<i64>,
    /// When it takes effect, if approved.
    pub effective_ms: Option<i64>,
    pub restores: Option<i64>,
    /// What was checked at upload, as JSON.
    pub checks: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionRecord {
    pub number: i64,
    pub version: String,
    pub author_org: Option<String>,
    pub author_subject: String,
    pub note: Option<String>,
    pub created_ms: i64,
    pub files: String,
    pub state: PolicyVersionState,
    pub effective_from_ms: Option<i64>,
    pub effective_ms: Option<i64>,
    /// When its sign-off completed or it was rejected.
    pub decided_ms: Option<i64>,
    /// How many sign-offs it has.
    pub reviews: i64,
    pub restores: Option<i64>,
    pub checks: Option<String>,
}

/// The newest policy version's number and the number of sign-offs of all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyMark {
    pub latest_number: i64,
    pub reviews: i64,
}

/// One DPO's verdict on a policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySignOffRecord {
    pub number: i64,
    pub reviewer_org: String,
    pub reviewer_subject: String,
    pub verdict: Verdict,
    pub at_ms: i64,
    pub note: Option<String>,
}

/// A review of a draft and where it leaves the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReview {
    pub sign_off: PolicySignOffRecord,
    /// The number of sign-offs the version had when the review was decided:
    /// nothing is written if another came in since.
    pub seen_reviews: i64,
    pub state: PolicyVersionState,
    pub effective_ms: Option<i64>,
}

/// One unit of a group commit.
#[derive(Debug, Clone)]
pub enum Write {
    /// A decided referral and its audit event; nothing is written (and
    /// [`Written::DuplicateKey`] returned) when the sender already used the key.
    Referral { referral: Box<NewReferral>, audit: AuditEvent },
    /// A new policy version (a draft, or approved) and its audit event.
    Policy { policy: NewPolicyVersion, audit: AuditEvent },
    /// A DPO's verdict on a draft and its audit event; nothing is written
    /// (and [`Written::ReviewedMeanwhile`] returned) if the draft had another
    /// sign-off since it was read, or is no longer a draft.
    PolicyReview { review: Box<PolicyReview>, audit: AuditEvent },
    /// A packet received from a peer gateway and its audit event; nothing is
    /// written (and [`Written::KnownPacket`] returned) when its id is known.
    Inbox { entry: Box<NewInboxEntry>, audit: AuditEvent },
    /// The end of a pending outbox entry (a referral's status and timeline
    /// follow) and its audit event; nothing is written (and
    /// [`Written::AlreadySettled`] returned) when it is no longer pending.
    Settle { entry_id: String, settlement: Settlement, at_ms: i64, audit: AuditEvent },
    /// A received packet moved on from the state it was read in, with what
    /// that brings; nothing is written (and [`Written::AlreadySettled`]
    /// returned) when it is no longer in that state.
    InboxMove { change: Box<InboxChange>, audit: AuditEvent },
    /// As [`Write::InboxMove`], for a move that did several things, each
    /// with its own audit event (the statuses of a coalesced packet).
    InboxMoveAudited { change: Box<InboxChange>, audits: Vec<AuditEvent> },
    /// A packet to send that is not a referral, and its audit event; with
    /// `brings_forward` (a received packet id and a date), that received
    /// case's retention deadline comes forward to the date (a later one is
    /// ignored: a deadline never moves back).
    ///
    /// `answers`: the received case (packet id) the reply is its
    /// recipient's first answer to, if it is one: nothing is awaited of the
    /// recipient any more, and the case leaves the head of its inbox.
    Reply { reply: Box<NewReply>, audit: AuditEvent, brings_forward: Option<(String, i64)>, answers: Option<String> },
    /// The sealed packet of an outbox entry, kept before its first send so
    /// that every retry sends the same bytes. An entry keeps the first
    /// packet it was given until a retry forgets it: the packet it holds
    /// comes back as [`Written::PacketKept`], and
    /// [`Written::AlreadySettled`] if the entry is not pending any more or
    /// its payload is no longer under `sealed_from`.
    ///
    /// `sealed_from` names the key of the payload the packet was made from:
    /// a packet made from a payload replaced meanwhile (some categories
    /// withdrawn) is neither kept nor handed the packet another attempt
    /// kept. A cut that found no packet kept freed the entry, which is
    /// tried again from the new payload at once; a cut after a packet was
    /// kept leaves that packet to the attempt holding it.
    KeepPacket { entry_id: String, packet: StoredPacket, sealed_from: String },
    /// Statuses claimed by this worker for one peer (`members`), carried
    /// from now on by one new entry (`carrier`, of type `statuses`),
    /// inserted as claimed by this worker until `lease_until_ms`: each
    /// member names its carrier, is no longer due on its own, and is
    /// settled with it ([`Write::Settle`]). All or nothing: if a member is
    /// no longer a pending status without a packet, claimed by this
    /// worker, nothing is carried, the members are due at once, and
    /// [`Written::AlreadySettled`] comes back.
    Coalesce { carrier: Box<NewReply>, members: Vec<String>, lease_until_ms: i64 },
    /// A pending carrier the peer cannot have taken (never sent, or
    /// refused), to a peer that no longer takes coalesced statuses: it
    /// goes, and the statuses it carried are due at `now_ms`, each on its
    /// own. [`Written::AlreadySettled`] if it is no longer pending.
    Dissolve { carrier_id: String, now_ms: i64 },
    /// Consent withdrawn for a referral sent from here: its delivery stops
    /// (`pending` becomes `withdrawn`), its payload and kept packet are
    /// blanked, and `withdrawal` is queued for the peer if a packet was ever
    /// made for it (it may have arrived); the referral's status becomes
    /// `withdrawn`. [`Written::AlreadySettled`] if it was withdrawn before.
    Withdraw { referral_id: String, withdrawal: NewWithdrawal, at_ms: i64, audit: AuditEvent },
    /// A DPO approved (`Approved`) or rejected an emergency override, or its
    /// window passed (`Expired`), while the referral still awaited it.
    /// Approved: the held outbox entry is due at once, the timeline records
    /// `override_approved`, the referral is queued. Otherwise the entry's
    /// payload is erased (`erased`), the timeline records
    /// `override_rejected` or `override_expired`, the referral is denied.
    /// [`Written::AlreadySettled`] if it was settled, withdrawn or erased before.
    SettleOverride { referral_id: String, outcome: OverrideState, decided_by: String, at_ms: i64, audit: AuditEvent },
    /// Consent withdrawn for some categories of a referral sent from here:
    /// the rest stays shared. The payload still held (if it is still under
    /// the key `narrowing.sealed_from`) is replaced by `narrowing.payload`,
    /// cut down and under a new key, while the entry is pending; with no
    /// packet made yet, the entry is freed of any attempt's claim and due
    /// at once (that attempt's packet, of the old payload, is not kept:
    /// see `KeepPacket`); `withdrawal` (its body naming the categories) is
    /// queued for the peer if a packet was ever made; the timeline records
    /// `consent_narrowed` with the categories, and the referral's status
    /// stays. [`Written::AlreadySettled`] if the referral
    /// was withdrawn whole or erased before; [`Written::PayloadMoved`] if the
    /// payload is no longer under `sealed_from`, or the entry was settled
    /// (its payload blanked) since it was read.
    Narrow { referral_id: String, narrowing: Box<SentNarrowing>, withdrawal: NewWithdrawal, at_ms: i64, audit: AuditEvent },
    /// A case past its retention deadline, erased here (its case key is
    /// destroyed before), and its audit event. [`Written::AlreadySettled`]
    /// if it was erased, or is no longer live, already.
    RetentionErase { erasure: RetentionErasure, at_ms: i64, audit: AuditEvent },
    /// A case passed on by its recipient: the copy stored and made
    /// available to the onward organisation, and the original sender told,
    /// in one transaction. Nothing is written when the case is no longer
    /// live under the key it was read with ([`Written::AlreadySettled`]),
    /// when its organisation holds a live copy already
    /// ([`Written::KnownPacket`]), or when the case has a copy of that
    /// number already ([`Written::DuplicateKey`]: numbered again).
    ReferOnward { copy: Box<NewOnwardCopy>, audit: AuditEvent },
    /// A refused onward referral told to the original sender (`reply`),
    /// once per case and `told` (the onward kind and the refusal's code):
    /// when it was told before, nothing is sent; the audit event is written
    /// either way.
    OnwardRefused { packet_id: String, told: String, reply: Box<NewReply>, audit: AuditEvent },
    /// An audit event alone.
    /// A search sent from here was found to meet another gateway's: the
    /// referral's timeline records `match_found` with `reasons` (codes
    /// only), and the event is audited. `handle`: the handle a peer named,
    /// which stands for the search no more (one match per handle).
    MatchFound { referral_id: String, reasons: Vec<String>, at_ms: i64, audit: AuditEvent, handle: Option<String> },
    Audit(AuditEvent),
}

/// See [`Write::Narrow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNarrowing {
    /// The categories this withdrawal takes back.
    pub categories: Vec<String>,
    /// The payload without them, replacing the one sealed under `sealed_from`.
    pub payload: Option<(SealedPayload, String)>,
    /// The onward limits cut the same way, sealed under the new payload's
    /// key; `None` when nothing may be passed on any more.
    pub onward: Option<Vec<u8>>,
}

/// The withdrawal packet to queue if the referral's packet may have reached the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWithdrawal {
    pub packet_id: String,
    /// The body at rest holds nothing: the packet's body is made from
    /// `in_reply_to` when it is sealed.
    pub payload: SealedPayload,
    pub deadline_ms: i64,
}

/// A packet as the inbox keeps it: routing facts in clear, claims sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInboxEntry {
    pub packet_id: String,
    pub issuer: String,
    /// SHA-256 of the sealed packet as received, base64url.
    pub packet_sha256: String,
    pub packet_type: String,
    pub recipient_org: String,
    pub claims: SealedPayload,
    /// The signed receipt answered for it alone, and again for any
    /// redelivery; none for a packet taken in a batch (the batch's receipt
    /// lists it, and a redelivery gets a receipt of its own) or a copy made
    /// here. Stored as an empty text.
    pub receipt: Option<String>,
    pub received_ms: i64,
    pub expires_ms: i64,
}

/// How many packets of one kind to one partner gateway stand in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTally {
    pub destination_country: String,
    /// `referral`, or a status, withdrawal or reply packet.
    pub packet_type: String,
    pub state: OutboxState,
    /// Whether an attempt to deliver them already failed.
    pub retried: bool,
    pub count: i64,
}

/// Referrals to one partner gateway whose consent was withdrawn whole after
/// their packet was made, and whose erasure that gateway has not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasuresAwaited {
    pub destination_country: String,
    pub awaited: i64,
    /// Of those, withdrawn longer than the erasure deadline ago.
    pub overdue: i64,
}

/// A packet this gateway sent, as its outbox entry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPacket {
    pub entry_id: String,
    pub referral_id: Option<String>,
    pub destination_country: String,
    pub packet_type: String,
    /// For a withdrawal: the referral packet it withdraws from.
    pub in_reply_to: Option<String>,
    /// When it was queued: for a withdrawal, the moment of the withdrawal
    /// itself (its timeline entry has the same time).
    pub created_ms: i64,
}

/// A received packet's move to its next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxChange {
    pub packet_id: String,
    /// The state it was read in: nothing is written if it moved meanwhile.
    pub from: InboxState,
    pub step: InboxMove,
    pub at_ms: i64,
}

impl InboxChange {
    /// The state the move leads to; `None` if it does not apply to `from`.
    pub fn to(&self) -> Option<InboxState> {
        self.from.after(self.step.event())
    }
}

/// What moves a received packet on, each with what it brings.
// Variants differ in size; a move travels boxed (`Write::InboxMove`), once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxMove {
    /// Screening, or reading it, refused it: its claims are blanked; a
    /// refusal goes back to its sender when `reply` is given.
    Refuse { reasons: Vec<String>, reply: Option<NewReply> },
    /// A referral passed screening: listed to its recipient, or (`pushed`)
    /// pushed to its webhook; with its retention deadline, and its claims
    /// replaced (`reseal`) when a partial withdrawal that came first cut it.
    /// `queue`: where it stands in its recipient's inbox. A reply case
    /// names the referral sent from here it answers (`answers`): linked
    /// to it, and its timeline gets `reply_received` with `reply_reasons`.
    Forward { pushed: bool, retention: StoredRetention, reseal: Option<SealedPayload>, queue: InboxQueue, answers: Option<AnsweredReferral> },
    /// A status or an erasure confirmation about a referral sent from here,
    /// applied: its timeline gets `events` (the last that moves it is its
    /// status), each with `reasons`; a `closed` status brings its retention
    /// deadline forward to `retention_until_ms` (a later one is ignored).
    ApplyToReferral { referral_id: String, events: Vec<ReferralEvent>, reasons: Vec<String>, retention_until_ms: Option<i64> },
    /// A coalesced status packet (`statuses`), applied: each status
    /// applied as [`InboxMove::ApplyToReferral`] would, in its order;
    /// `reasons`: the refusal codes of those not applied (each audited
    /// on its own).
    ApplyStatuses { applied: Vec<AppliedStatus>, reasons: Vec<String> },
    /// A withdrawal from the gateway that sent a case, applied: what it
    /// withdraws is kept (so that a referral packet arriving later is
    /// erased or cut down on arrival), the case held here is erased or cut
    /// (`effect`), and the erasure is confirmed back (`reply`). `categories`:
    /// those it names (none for a whole withdrawal, or one sealed end to end).
    /// The copies passed on from the case here are erased or cut the same
    /// way (`effects`: the case's first, then each copy's); `copies`: the
    /// copies those effects were worked out for. A copy made meanwhile,
    /// not among them, is erased whole in the same write.
    ApplyWithdrawal { categories: Vec<String>, reply: NewReply, tombstone: Tombstone, effects: Vec<WithdrawalEffect>, copies: Vec<String> },
    /// The recipient took the case (pulled and acknowledged, or the push
    /// was answered): `forwarded` goes back.
    Acknowledge { reply: NewReply },
    /// The push never succeeded before the packet expired (or nothing was
    /// left to push); a refusal goes back when `reply` is given.
    GiveUpPush { reasons: Vec<String>, reply: Option<NewReply> },
    /// The recipient takes its cases by pulling now.
    RecipientNowPulls { reasons: Vec<String> },
    /// A notice of an erasure or of a cut was pushed, or given up on.
    SettleNotice { reasons: Vec<String> },
    /// A cut made while the case was being pushed is to be pushed as a notice.
    NarrowingDue,
    /// The organisation erased its copy of an erased case; confirmed back.
    ConfirmErasure { reply: NewReply },
    /// The organisation erased the categories withdrawn from a case it
    /// still holds; confirmed back.
    ConfirmNarrowing { reply: NewReply },
}

/// One status of a coalesced status packet, applied to a referral sent
/// from here, as [`InboxMove::ApplyToReferral`] applies a status packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedStatus {
    pub referral_id: String,
    pub events: Vec<ReferralEvent>,
    pub reasons: Vec<String>,
    pub retention_until_ms: Option<i64>,
}

/// The referral sent from here that a received reply case answers, and
/// what its timeline entry `reply_received` says: the reply's purpose when
/// this gateway can read it (codes only: the organisation finds the reply
/// in its inbox by `answers_referral`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredReferral {
    pub referral_id: String,
    pub reasons: Vec<String>,
}

/// What a received case's recipient owes and by when, which orders its
/// inbox: emergencies first, then by the deadline it awaits (its
/// acknowledgement, then its first answer), then cases awaiting nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxQueue {
    /// `None` for a case sealed end to end: its priority is for the
    /// organisation alone, and it is queued by the normal deadlines.
    pub priority: Option<Priority>,
    pub acknowledge_by_ms: i64,
    pub answer_by_ms: i64,
}

/// A received case's place in its recipient's inbox, as `GET /v1/inbox` orders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuePlace {
    /// 0: an emergency awaiting its recipient; 1: any other case awaiting
    /// it; 2: a case awaiting nothing of it (answered, or erased).
    pub rank: i64,
    /// The deadline awaited (0 for rank 2).
    pub due_ms: i64,
    pub visible_seq: i64,
}

/// What a withdrawal does to the case it withdraws, held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithdrawalEffect {
    /// Erased whole (its claims blanked; its key was destroyed before). A
    /// case its webhook recipient (`pushed`) was pushed is pushed a notice,
    /// tried until `notice_until_ms` at least (a withdrawal may come long
    /// after the packet's own expiry).
    Erase { packet_id: String, pushed: bool, notice_until_ms: i64 },
    /// Cut down by a partial withdrawal.
    Narrow { narrowing: ReceivedNarrowing, notice_until_ms: i64 },
}

impl InboxMove {
    /// The lifecycle event it is.
    pub fn event(&self) -> InboxEvent {
        match self {
            Self::Refuse { .. } => InboxEvent::Refused,
            Self::Forward { pushed, .. } => InboxEvent::Forwarded { pushed: *pushed },
            Self::ApplyToReferral { .. } | Self::ApplyStatuses { .. } | Self::ApplyWithdrawal { .. } => InboxEvent::Applied,
            Self::Acknowledge { .. } => InboxEvent::Acknowledged,
            Self::GiveUpPush { .. } => InboxEvent::PushGivenUp,
            Self::RecipientNowPulls { .. } => InboxEvent::RecipientNowPulls,
            Self::SettleNotice { .. } => InboxEvent::NoticeSettled,
            Self::NarrowingDue => InboxEvent::NarrowingDue,
            Self::ConfirmErasure { .. } => InboxEvent::ErasureConfirmed,
            Self::ConfirmNarrowing { .. } => InboxEvent::NarrowingConfirmed,
        }
    }

    /// The reason codes recorded with the move (and in its audit entry).
    pub fn reasons(&self) -> &[String] {
        match self {
            Self::Refuse { reasons, .. }
            | Self::ApplyToReferral { reasons, .. }
            | Self::ApplyStatuses { reasons, .. }
            | Self::GiveUpPush { reasons, .. }
            | Self::RecipientNowPulls { reasons }
            | Self::SettleNotice { reasons } => reasons,
            Self::ApplyWithdrawal { categories, .. } => categories,
            Self::Forward { .. } | Self::Acknowledge { .. } | Self::NarrowingDue | Self::ConfirmErasure { .. } | Self::ConfirmNarrowing { .. } => &[],
        }
    }

    /// The packet it sends back to the sending gateway, if any.
    pub fn reply(&self) -> Option<&NewReply> {
        match self {
            Self::Refuse { reply, .. } | Self::GiveUpPush { reply, .. } => reply.as_ref(),
            Self::ApplyWithdrawal { reply, .. } | Self::Acknowledge { reply } | Self::ConfirmErasure { reply } | Self::ConfirmNarrowing { reply } => Some(reply),
            _ => None,
        }
    }
}

/// A withdrawal as the receiving gateway keeps it, whether or not it holds
/// the referral packet yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// The withdrawal packet's own id.
    pub withdrawal_id: String,
    /// The referral packet withdrawn, and the gateway that sent it.
    pub packet_id: String,
    pub issuer: String,
    /// Only these categories; `None`: all of it.
    pub categories: Option<Vec<String>>,
    /// For a partial withdrawal sealed end to end (its categories then
    /// empty: unreadable here): its envelope, sealed to the organisation.
    pub end_to_end: Option<String>,
}

/// A partial withdrawal sealed end to end, as its gateway hands it to the
/// organisation beside the case it withdraws from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedWithdrawal {
    pub withdrawal_id: String,
    /// The envelope, sealed to the recipient organisation's own key.
    pub end_to_end: String,
}

/// How much of a referral packet its sender withdrew before it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WithdrawnPart {
    Whole,
    Categories(Vec<String>),
}

/// A received case cut down by a partial withdrawal: its claims replaced,
/// listed again so that its recipient learns what to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedNarrowing {
    pub packet_id: String,
    /// The claims without the withdrawn categories, under a new key (for a
    /// case sealed end to end: its claims as they were).
    pub claims: SealedPayload,
    /// Every category withdrawn from it so far (for a case sealed end to
    /// end: every withdrawal packet, see [`InboxItem::narrowed`]).
    pub categories: Vec<String>,
    /// The recipient takes cases by webhook: a case it was pushed goes to
    /// `narrowing_pushing` and it is pushed a notice.
    pub pushed: bool,
}

/// A received packet as the inbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    pub packet_id: String,
    pub issuer: String,
    pub packet_type: String,
    pub recipient_org: String,
    pub claims: SealedPayload,
    pub state: InboxState,
    pub reasons: Vec<String>,
    pub received_ms: i64,
    /// The packet's expiry: a push is given up after it.
    pub expires_ms: i64,
    /// Pushes to the recipient's webhook started, this one included.
    pub push_attempts: i64,
    /// Its place in the order cases became visible to recipients (once they do).
    pub visible_seq: Option<i64>,
    /// Categories its sender withdrew after it became visible, erased here;
    /// for a case sealed end to end, whose categories this gateway cannot
    /// read, the ids of those withdrawals (handed to its organisation).
    pub narrowed: Vec<String>,
    /// The recipient confirmed it erased them too.
    pub narrowing_confirmed: bool,
    /// Its retention deadline, once it was made available.
    pub retention: Option<StoredRetention>,
    /// A referral's priority, once screened; `None` for a case sealed end
    /// to end (and for any other packet).
    pub priority: Option<Priority>,
    /// Its place in its recipient's inbox, once visible.
    pub queue: Option<QueuePlace>,
    /// A case passed on here by its recipient: what it was passed on from.
    pub onward: Option<OnwardCopyOf>,
    /// A reply case received here: the referral sent from here it answers.
    pub answers: Option<String>,
}

/// What a case passed on at this gateway (a copy in the inbox) was passed
/// on from, and what its original sender is told instead of the onward
/// organisation: the copy's number and that organisation's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnwardCopyOf {
    /// The packet id of the case it was passed on from.
    pub parent: String,
    /// 1, 2, ... among the copies of that case.
    pub number: u32,
    pub kind: RecipientKind,
    /// The organisation that passed it on (the case's recipient).
    pub referred_by: String,
}

/// A copy of a received case passed on by its recipient (see
/// [`Write::ReferOnward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOnwardCopy {
    /// The copy as an inbox entry (its packet id new; no packet, no receipt).
    pub entry: NewInboxEntry,
    pub of: OnwardCopyOf,
    /// The key the case was read under: the copy is made only if the case
    /// is still live under it (no withdrawal cut or erased it meanwhile).
    pub parent_key_id: String,
    /// Its move from `received` to its recipient (listed, or pushed).
    pub forward: InboxChange,
    /// The `onward` status back to the original sender.
    pub reply: NewReply,
}

/// What the inbox holds for a known packet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxReceipt {
    pub packet_id: String,
    pub packet_sha256: String,
    /// See [`NewInboxEntry::receipt`].
    pub receipt: Option<String>,
    /// When it was taken.
    pub received_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Audited { seq: i64 },
    PolicyStored { number: i64, seq: i64 },
    /// A policy version had a sign-off since it was read: read it again.
    ReviewedMeanwhile,
    DuplicateKey,
    /// The inbox already holds a packet with this id; see [`Store::inbox_receipt`].
    KnownPacket,
    /// The outbox entry was settled already (by another worker).
    AlreadySettled,
    /// The packet the outbox entry holds now (see [`Write::KeepPacket`]).
    PacketKept(StoredPacket),
    /// The statuses are carried by the new entry (see [`Write::Coalesce`]).
    Coalesced,
    /// The carrier is gone and what it carried is due (see [`Write::Dissolve`]).
    Dissolved,
    /// Consent withdrawn; whether a withdrawal packet was queued for the peer.
    Withdrawn { seq: i64, peer_notified: bool },
    /// A partial withdrawal found the payload under another key than the one
    /// it was cut from (cut by another withdrawal meanwhile): nothing written;
    /// cut again from the payload as it is now.
    PayloadMoved,
}

/// Filters of the audit log; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub action: Option<String>,
    pub org: Option<String>,
    pub referral_id: Option<String>,
    pub subject_key: Option<String>,
    /// Cursor: entries after this sequence number.
    pub after_seq: Option<i64>,
    pub limit: i64,
}

/// A referral about one subject, with where its delivery stands: what a
/// subject report is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectReferral {
    pub referral_id: String,
    pub sender_org: String,
    pub destination_org: String,
    pub destination_country: Option<String>,
    pub purpose: String,
    pub outcome: String,
    pub decision: String,
    pub consent: String,
    pub policy_version: String,
    pub status: ReferralStatus,
    pub created_ms: i64,
    /// The referral's outbox entry, if it was allowed.
    pub delivery: Option<DeliveryRecord>,
    /// A reply case: the request packet it answers (as [`StoredReferral::answers`]).
    pub answers: Option<String>,
}


/// A family-tracing request sent from here that a match query may meet
/// (issue 22 §2): still searching, not erased. Its entry (the outputs of
/// its match keys, the case facts and the consent) is sealed under the
/// case's key; the sender organisation is who a match is told to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchCandidate {
    pub referral_id: String,
    pub sender_org: String,
    pub entry: SealedPayload,
}

/// What a search keeps for matching, both sealed under its case's key
/// (`entry.key_id`): the entry a query meets, and apart from it the people
/// its own queries are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedMatchEntry {
    pub entry: SealedPayload,
    pub people: Vec<u8>,
}

/// A handle a match answer gave: which request it stands for (none for an
/// entry the asker could not see, or padding), for whom, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchHandle {
    pub handle: String,
    pub referral_id: Option<String>,
    pub asking_gateway: String,
    pub asking_org: String,
    pub expires_ms: i64,
}
