//! "Who holds what about this person": everything this gateway sent, or
//! refused to send, about one subject, built from its own records and the
//! signed receipts and confirmations it holds from peers. For the DPO and
//! the auditor, through the API or at a terminal (`report subject`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::access::{Authorized, Overseers};
use crate::app::views::{ConsentSummary, RecipientRef, Timestamp};
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::domain::decision::{DecisionRecord, ReasonCode};
use crate::domain::status::ReferralProgress;
use crate::domain::DataCategory;
use crate::domain::lifecycle::{OutboxState, ReferralEvent, ReferralStatus};
use crate::domain::withdrawal::{erasure_progress, ErasedBy, ErasureState};
use crate::app::sending::referrals::OverrideAnswer;
use crate::store::{Store, StoredOverride, SubjectReferral, TimelineEntry};

/// One referral about the subject, as the store holds it.
#[derive(Debug, Clone)]
pub struct SubjectRecord {
    pub referral: SubjectReferral,
    pub timeline: Vec<TimelineEntry>,
    /// The emergency override it was submitted under, if any.
    pub emergency_override: Option<StoredOverride>,
}

/// A subject's referrals with their timelines and overrides, as the store holds them.
pub async fn subject_records(store: &dyn Store, subject_key: &str) -> Result<Vec<SubjectRecord>, AppError> {
    let mut records = Vec::new();
    for referral in store.subject_referrals(subject_key).await? {
        let timeline = store.timeline(&referral.referral_id).await?;
        let emergency_override = store.emergency_override(&referral.referral_id).await?;
        records.push(SubjectRecord { referral, timeline, emergency_override });
    }
    Ok(records)
}

/// `GET /v1/subjects/{subject_ref}/report`: who holds what about a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SubjectReport {
    pub subject_ref: String,
    pub generated_at: Timestamp,
    /// Every referral about the subject this gateway sent or refused, oldest first.
    pub referrals: Vec<ReferralReport>,
}

/// One referral about the subject: what was decided and sent, where it is
/// held, and what was erased when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReferralReport {
    pub referral_id: String,
    pub sender_org: String,
    pub recipient: RecipientRef,
    pub purpose: String,
    pub submitted_at: Timestamp,
    pub outcome: String,
    /// Why a denied referral was denied.
    pub reason_codes: Vec<ReasonCode>,
    pub policy_version: String,
    /// The consent facts kept with the decision; `null` if unreadable.
    pub consent: Option<ConsentSummary>,
    pub categories: CategoriesReport,
    pub delivery: Option<DeliveryReport>,
    pub held: Held,
    /// Each erasure, where and when; a partial withdrawal's with its categories.
    pub erased: Vec<ErasureDone>,
    /// Where the erasure after a whole withdrawal stands; `null` without one.
    pub erasure: Option<ErasureSummary>,
    pub status: ReferralStatus,
    pub timeline: Vec<ReportStep>,
    /// Sent (or asked to be sent) without the person's consent, under an
    /// emergency override: why, for which categories, and who approved it
    /// (a DPO, or the standing rule named); absent for every other referral.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub emergency_override: Option<OverrideAnswer>,
}

/// The categories, as the decision and later withdrawals left them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CategoriesReport {
    pub sent: Vec<String>,
    pub withheld: Vec<String>,
    /// Taken back by partial withdrawals.
    pub withdrawn: BTreeSet<String>,
}

/// The referral's packet and its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct DeliveryReport {
    pub state: OutboxState,
    pub packet_id: Option<String>,
    pub delivered_at: Option<Timestamp>,
    /// The receiving gateway's signed receipt: proof of what it took.
    pub receipt: Option<String>,
}

/// What each place holds about the referral, as far as this gateway knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Held {
    pub this_gateway: HeldHere,
    pub recipient_gateway: HeldAtGateway,
    pub recipient_organisation: HeldAtOrganisation,
}

/// What this gateway holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeldHere {
    /// A denied referral: only its decision.
    DecisionOnly,
    Erased,
    /// The payload, sealed, waiting for delivery.
    PayloadSealed,
    /// Delivered: only the peer's receipt.
    ReceiptOnly,
    /// Expired undelivered: the payload was blanked when it expired.
    Nothing,
}

/// What the recipient's gateway holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeldAtGateway {
    Nothing,
    Erased,
    RefusedAtScreening,
    Held,
    /// A packet was made and perhaps sent, never receipted: it may have arrived.
    Unknown,
}

/// What the recipient organisation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeldAtOrganisation {
    ErasureConfirmed,
    Acknowledged,
    /// Without an acknowledgement or a report, the organisation may still hold the case.
    Unknown,
    Nothing,
}

/// An erasure that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErasureDone {
    #[serde(rename = "where")]
    pub place: ErasurePlace,
    pub at: Timestamp,
    /// For a partial withdrawal: the categories erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

/// Where something was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasurePlace {
    ThisGateway,
    RecipientGateway,
    RecipientOrganisation,
}

/// Where the erasure after a whole withdrawal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErasureSummary {
    pub state: ErasureState,
    pub due_by: Option<Timestamp>,
}

/// One step of the referral's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReportStep {
    pub status: ReferralEvent,
    pub at: Timestamp,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The report itself, from the records alone: no IO, no clock read.
pub fn subject_report(subject_ref: &str, records: &[SubjectRecord], erasure_deadline: chrono::Duration, now: DateTime<Utc>) -> SubjectReport {
    SubjectReport {
        subject_ref: subject_ref.to_owned(),
        generated_at: Timestamp::of(now),
        referrals: records.iter().map(|record| referral_report(record, erasure_deadline, now)).collect(),
    }
}

fn referral_report(record: &SubjectRecord, erasure_deadline: chrono::Duration, now: DateTime<Utc>) -> ReferralReport {
    let (referral, timeline) = (&record.referral, record.timeline.as_slice());
    let decision: Option<DecisionRecord> = serde_json::from_str(&referral.decision).ok();
    let steps: Vec<ReferralEvent> = timeline.iter().map(|t| t.status).collect();
    let first = |status: ReferralEvent| timeline.iter().find(|t| t.status == status).map(|t| Timestamp(t.at_ms));
    let allowed = referral.outcome == "allow";
    let packet_made = referral.delivery.as_ref().is_some_and(|d| d.packet_id.is_some());
    let receipted = referral.delivery.as_ref().is_some_and(|d| d.receipt.is_some());
    let withdrawn = steps.contains(&ReferralEvent::Withdrawn);
    // Erased here by the retention sweep. The receiving gateway erases at the
    // same deadline, but confirms nothing: that side stays as last known.
    let retention_expired = steps.contains(&ReferralEvent::RetentionExpired);

    let here = if !allowed {
        HeldHere::DecisionOnly
    } else if withdrawn || retention_expired {
        HeldHere::Erased
    } else if referral.delivery.as_ref().is_some_and(|d| d.state == OutboxState::Pending) {
        HeldHere::PayloadSealed
    } else if receipted {
        HeldHere::ReceiptOnly
    } else {
        // Expired undelivered: the payload was blanked when it expired.
        HeldHere::Nothing
    };
    let at_gateway = if !packet_made {
        HeldAtGateway::Nothing
    } else if steps.contains(&ErasedBy::Gateway.timeline_status(false)) {
        HeldAtGateway::Erased
    } else if steps.contains(&ReferralEvent::Refused) {
        HeldAtGateway::RefusedAtScreening
    } else if receipted {
        HeldAtGateway::Held
    } else {
        // Made and perhaps sent, never receipted: it may have arrived.
        HeldAtGateway::Unknown
    };
    let taken = steps.iter().any(|s| {
        *s == ReferralEvent::Forwarded || ReferralProgress::REPORTED_BY_RECIPIENTS.iter().any(|p| ReferralEvent::from(*p) == *s)
    });
    // The sender hears of an acknowledgement or a report, not of a read or a
    // webhook push: without one, the organisation may still hold the case.
    let at_organisation = if steps.contains(&ErasedBy::Organisation.timeline_status(false)) {
        HeldAtOrganisation::ErasureConfirmed
    } else if taken {
        HeldAtOrganisation::Acknowledged
    } else if matches!(at_gateway, HeldAtGateway::Held | HeldAtGateway::Unknown) {
        HeldAtOrganisation::Unknown
    } else {
        HeldAtOrganisation::Nothing
    };
    // A denied referral had nothing to erase: its withdrawal only records the consent's end.
    let mut erased: Vec<ErasureDone> = [
        (ReferralEvent::Withdrawn, ErasurePlace::ThisGateway),
        (ReferralEvent::RetentionExpired, ErasurePlace::ThisGateway),
        (ReferralEvent::ErasedAtGateway, ErasurePlace::RecipientGateway),
        (ReferralEvent::ErasureConfirmed, ErasurePlace::RecipientOrganisation),
    ]
    .iter()
    .filter(|_| allowed)
    .filter_map(|(status, place)| first(*status).map(|at| ErasureDone { place: *place, at, categories: None }))
    .collect();
    // Each partial withdrawal's erasures, with the categories they took.
    let partial_places = [
        (ReferralEvent::ConsentNarrowed, ErasurePlace::ThisGateway),
        (ReferralEvent::ConsentNarrowedBeforeSending, ErasurePlace::ThisGateway),
        (ReferralEvent::NarrowedAtGateway, ErasurePlace::RecipientGateway),
        (ReferralEvent::NarrowingConfirmed, ErasurePlace::RecipientOrganisation),
    ];
    erased.extend(timeline.iter().filter_map(|t| {
        let place = partial_places.iter().find(|(status, _)| *status == t.status)?.1;
        Some(ErasureDone { place, at: Timestamp(t.at_ms), categories: Some(t.reasons.clone()) })
    }));
    let withdrawn_categories: BTreeSet<String> = timeline.iter().filter(|t| t.status.records_narrowing()).flat_map(|t| t.reasons.iter().cloned()).collect();
    let erasure = timeline.iter().find(|t| t.status == ReferralEvent::Withdrawn).and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.at_ms)).map(|at| {
        let progress = erasure_progress(at, false, packet_made, &steps, erasure_deadline, now);
        ErasureSummary { state: progress.state, due_by: progress.due_by.map(Timestamp::of) }
    });
    let names = |categories: Vec<DataCategory>| categories.into_iter().map(|c| c.as_str().to_owned()).collect();

    ReferralReport {
        referral_id: referral.referral_id.clone(),
        sender_org: referral.sender_org.clone(),
        recipient: RecipientRef { org: referral.destination_org.clone(), country: referral.destination_country.clone() },
        purpose: referral.purpose.clone(),
        submitted_at: Timestamp(referral.created_ms),
        outcome: referral.outcome.clone(),
        reason_codes: decision.as_ref().map(|d| d.deny_reasons.iter().copied().collect()).unwrap_or_default(),
        policy_version: referral.policy_version.clone(),
        consent: ConsentSummary::read(&referral.consent),
        categories: CategoriesReport {
            sent: names(decision.as_ref().map(|d| d.sent.keys().copied().collect()).unwrap_or_default()),
            withheld: names(decision.as_ref().map(|d| d.withheld.keys().copied().collect()).unwrap_or_default()),
            withdrawn: withdrawn_categories,
        },
        delivery: referral.delivery.as_ref().map(|d| DeliveryReport {
            state: d.state,
            packet_id: d.packet_id.clone(),
            delivered_at: first(ReferralEvent::Delivered),
            receipt: d.receipt.clone(),
        }),
        held: Held { this_gateway: here, recipient_gateway: at_gateway, recipient_organisation: at_organisation },
        erased,
        erasure,
        status: referral.status,
        timeline: timeline.iter().map(|t| ReportStep { status: t.status, at: Timestamp(t.at_ms), reasons: t.reasons.clone() }).collect(),
        emergency_override: record.emergency_override.as_ref().map(OverrideAnswer::of),
    }
}

impl Gateway {
    /// The subject report (role dpo or auditor); audited with the keyed subject reference.
    pub async fn subject_report(&self, principal: &Authorized<Overseers>, subject_ref: &str) -> Result<SubjectReport, AppError> {
        let subject_key = self.subject_key(subject_ref);
        let records = subject_records(self.store.as_ref(), &subject_key).await?;
        let now = self.now();
        self.audit(AuditEvent::new(now, principal.actor(), Action::SubjectReport, "ok").subject_key(subject_key)).await?;
        let deadline = chrono::Duration::from_std(self.delivery.erasure_deadline).unwrap_or(chrono::Duration::MAX);
        Ok(subject_report(subject_ref, &records, deadline, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::millis_to_rfc3339;
    use crate::store::DeliveryRecord;
    use serde_json::{json, Value};
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn referral(outcome: &str, delivery: Option<(&str, bool, bool)>) -> SubjectReferral {
        SubjectReferral {
            answers: None,
            referral_id: "r1".to_owned(),
            sender_org: "ita-iom-rome".to_owned(),
            destination_org: "gmb-iom-banjul".to_owned(),
            destination_country: Some("GMB".to_owned()),
            purpose: "return".to_owned(),
            outcome: outcome.to_owned(),
            decision: r#"{"outcome":"allow","purpose":"return","policy_version":"sha256:0","sent":{"identity":{"fields":"all","permitted_by":["p1"]},"contact":{"fields":["phone"],"permitted_by":["p1"]}},"withheld":{"asylum":[{"reason":"not_needed_for_purpose"}]}}"#.to_owned(),
            consent: "{}".to_owned(),
            policy_version: "sha256:0".to_owned(),
            status: crate::domain::lifecycle::ReferralStatus::Queued,
            created_ms: at(0).timestamp_millis(),
            delivery: delivery.map(|(state, packet, receipt)| DeliveryRecord {
                state: state.parse().unwrap(),
                attempts: 1,
                packet_id: packet.then(|| "p-1".to_owned()),
                packet: None,
                receipt: receipt.then(|| "receipt".to_owned()),
                last_error: None,
            }),
        }
    }

    fn steps(list: &[(&str, i64)]) -> Vec<TimelineEntry> {
        list.iter().map(|(status, minute)| TimelineEntry { status: status.parse().unwrap(), at_ms: at(*minute).timestamp_millis(), reasons: Vec::new() }).collect()
    }

    fn held(report: &Value) -> (String, String, String) {
        let held = &report["referrals"][0]["held"];
        let text = |k: &str| held[k].as_str().unwrap().to_owned();
        (text("this_gateway"), text("recipient_gateway"), text("recipient_organisation"))
    }

    fn report_of(referral: SubjectReferral, timeline: Vec<TimelineEntry>) -> Value {
        let record = SubjectRecord { referral, timeline, emergency_override: None };
        serde_json::to_value(subject_report("ITA-2026-000303", &[record], chrono::Duration::hours(72), at(60))).unwrap()
    }

    #[test]
    fn who_holds_what_follows_the_referral_through_delivery_and_erasure() {
        let pending = report_of(referral("allow", Some(("pending", false, false))), steps(&[("queued", 0)]));
        assert_eq!(held(&pending), ("payload_sealed".into(), "nothing".into(), "nothing".into()));
        assert_eq!(
            pending["referrals"][0]["categories"],
            json!({ "sent": ["identity", "contact"], "withheld": ["asylum"], "withdrawn": [] }),
            "in the order the decision lists them"
        );

        // Some categories withdrawn: each erasure of them, where and when, with the categories.
        let mut narrowed_steps = steps(&[("queued", 0), ("delivered", 1), ("consent_narrowed", 5), ("narrowed_at_gateway", 6)]);
        for step in narrowed_steps.iter_mut().filter(|s| !matches!(s.status, ReferralEvent::Queued | ReferralEvent::Delivered)) {
            step.reasons = vec!["contact".to_owned()];
        }
        let narrowed = report_of(referral("allow", Some(("delivered", true, true))), narrowed_steps);
        assert_eq!(narrowed["referrals"][0]["categories"]["withdrawn"], json!(["contact"]));
        assert_eq!(
            narrowed["referrals"][0]["erased"],
            json!([
                { "where": "this_gateway", "at": millis_to_rfc3339(at(5).timestamp_millis()), "categories": ["contact"] },
                { "where": "recipient_gateway", "at": millis_to_rfc3339(at(6).timestamp_millis()), "categories": ["contact"] },
            ])
        );
        assert_eq!(held(&narrowed).1, "held", "the rest is still held at the peer");

        let taken = report_of(referral("allow", Some(("delivered", true, true))), steps(&[("queued", 0), ("delivered", 1), ("forwarded", 2), ("accepted", 3)]));
        assert_eq!(held(&taken), ("receipt_only".into(), "held".into(), "acknowledged".into()));
        let unread = report_of(referral("allow", Some(("delivered", true, true))), steps(&[("queued", 0), ("delivered", 1)]));
        assert_eq!(held(&unread).2, "unknown", "pushed or read without acknowledging: the sender cannot know");
        let expired = report_of(referral("allow", Some(("expired", true, false))), steps(&[("queued", 0), ("expired", 1)]));
        assert_eq!(held(&expired).0, "nothing", "no receipt, no payload");
        assert_eq!(taken["referrals"][0]["delivery"]["delivered_at"], json!(millis_to_rfc3339(at(1).timestamp_millis())));

        let in_doubt = report_of(referral("allow", Some(("pending", true, false))), steps(&[("queued", 0)]));
        assert_eq!(held(&in_doubt).1, "unknown", "a packet made and not receipted may have arrived");

        let refused = report_of(referral("allow", Some(("delivered", true, true))), steps(&[("queued", 0), ("delivered", 1), ("refused", 2)]));
        assert_eq!(held(&refused).1, "refused_at_screening");

        let erased = report_of(
            referral("allow", Some(("withdrawn", true, true))),
            steps(&[("queued", 0), ("delivered", 1), ("forwarded", 2), ("withdrawn", 10), ("withdrawal_delivered", 11), ("erased_at_gateway", 12), ("erasure_confirmed", 20)]),
        );
        assert_eq!(held(&erased), ("erased".into(), "erased".into(), "erasure_confirmed".into()));
        let places: Vec<&str> = erased["referrals"][0]["erased"].as_array().unwrap().iter().map(|e| e["where"].as_str().unwrap()).collect();
        assert_eq!(places, ["this_gateway", "recipient_gateway", "recipient_organisation"]);
        assert_eq!(erased["referrals"][0]["erasure"]["state"], "confirmed");

        let denied = report_of(referral("deny", None), steps(&[("denied", 0)]));
        assert_eq!(held(&denied), ("decision_only".into(), "nothing".into(), "nothing".into()));
        let denied_withdrawn = report_of(referral("deny", None), steps(&[("denied", 0), ("withdrawn", 5)]));
        assert_eq!(denied_withdrawn["referrals"][0]["erased"], json!([]), "nothing was held to erase");
        assert_eq!(denied["referrals"][0]["erasure"], Value::Null);
    }
}
