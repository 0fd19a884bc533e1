//! "Who holds what about this person": everything this gateway sent, or
//! refused to send, about one subject, built from its own records and the
//! signed receipts and confirmations it holds from peers. For the DPO and
//! the auditor, through the API or at a terminal (`report subject`).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::app::access::{Authorized, Overseers};
use crate::app::millis_to_rfc3339;
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::domain::status::ReferralProgress;
use crate::domain::lifecycle::{OutboxState, ReferralEvent};
use crate::domain::withdrawal::{erasure_progress, ErasedBy};
use crate::store::{Store, SubjectReferral, TimelineEntry};

/// A subject's referrals with their timelines, as the store holds them.
pub async fn subject_records(store: &dyn Store, subject_key: &str) -> Result<Vec<(SubjectReferral, Vec<TimelineEntry>)>, AppError> {
    let mut records = Vec::new();
    for referral in store.subject_referrals(subject_key).await? {
        let timeline = store.timeline(&referral.referral_id).await?;
        records.push((referral, timeline));
    }
    Ok(records)
}

/// The report itself, from the records alone: no IO, no clock read.
pub fn subject_report(subject_ref: &str, records: &[(SubjectReferral, Vec<TimelineEntry>)], erasure_deadline: chrono::Duration, now: DateTime<Utc>) -> Value {
    json!({
        "subject_ref": subject_ref,
        "generated_at": millis_to_rfc3339(now.timestamp_millis()),
        "referrals": records.iter().map(|(referral, timeline)| referral_report(referral, timeline, erasure_deadline, now)).collect::<Vec<_>>(),
    })
}

fn referral_report(referral: &SubjectReferral, timeline: &[TimelineEntry], erasure_deadline: chrono::Duration, now: DateTime<Utc>) -> Value {
    let decision: Value = serde_json::from_str(&referral.decision).unwrap_or(Value::Null);
    let keys = |member: &str| -> Vec<String> { decision.get(member).and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default() };
    let steps: Vec<ReferralEvent> = timeline.iter().map(|t| t.status).collect();
    let first = |status: ReferralEvent| timeline.iter().find(|t| t.status == status).map(|t| millis_to_rfc3339(t.at_ms));
    let allowed = referral.outcome == "allow";
    let packet_made = referral.delivery.as_ref().is_some_and(|d| d.packet_id.is_some());
    let receipted = referral.delivery.as_ref().is_some_and(|d| d.receipt.is_some());
    let withdrawn = steps.contains(&ReferralEvent::Withdrawn);
    // Erased here by the retention sweep. The receiving gateway erases at the
    // same deadline, but confirms nothing: that side stays as last known.
    let retention_expired = steps.contains(&ReferralEvent::RetentionExpired);

    let here = if !allowed {
        "decision_only"
    } else if withdrawn || retention_expired {
        "erased"
    } else if referral.delivery.as_ref().is_some_and(|d| d.state == OutboxState::Pending) {
        "payload_sealed"
    } else if receipted {
        "receipt_only"
    } else {
        // Expired undelivered: the payload was blanked when it expired.
        "nothing"
    };
    let at_gateway = if !packet_made {
        "nothing"
    } else if steps.contains(&ErasedBy::Gateway.timeline_status(false)) {
        "erased"
    } else if steps.contains(&ReferralEvent::Refused) {
        "refused_at_screening"
    } else if receipted {
        "held"
    } else {
        // Made and perhaps sent, never receipted: it may have arrived.
        "unknown"
    };
    let taken = steps.iter().any(|s| {
        *s == ReferralEvent::Forwarded || ReferralProgress::REPORTED_BY_RECIPIENTS.iter().any(|p| ReferralEvent::from(*p) == *s)
    });
    // The sender hears of an acknowledgement or a report, not of a read or a
    // webhook push: without one, the organisation may still hold the case.
    let at_organisation = if steps.contains(&ErasedBy::Organisation.timeline_status(false)) {
        "erasure_confirmed"
    } else if taken {
        "acknowledged"
    } else if at_gateway == "held" || at_gateway == "unknown" {
        "unknown"
    } else {
        "nothing"
    };
    // A denied referral had nothing to erase: its withdrawal only records the consent's end.
    let mut erased: Vec<Value> = [
        (ReferralEvent::Withdrawn, "this_gateway"),
        (ReferralEvent::RetentionExpired, "this_gateway"),
        (ReferralEvent::ErasedAtGateway, "recipient_gateway"),
        (ReferralEvent::ErasureConfirmed, "recipient_organisation"),
    ]
        .iter()
        .filter(|_| allowed)
        .filter_map(|(status, place)| first(*status).map(|at| json!({ "where": place, "at": at })))
        .collect();
    // Each partial withdrawal's erasures, with the categories they took.
    let partial_places = [
        (ReferralEvent::ConsentNarrowed, "this_gateway"),
        (ReferralEvent::ConsentNarrowedBeforeSending, "this_gateway"),
        (ReferralEvent::NarrowedAtGateway, "recipient_gateway"),
        (ReferralEvent::NarrowingConfirmed, "recipient_organisation"),
    ];
    erased.extend(timeline.iter().filter_map(|t| {
        let place = partial_places.iter().find(|(status, _)| *status == t.status)?.1;
        Some(json!({ "where": place, "at": millis_to_rfc3339(t.at_ms), "categories": t.reasons }))
    }));
    let withdrawn_categories: std::collections::BTreeSet<&str> =
        timeline.iter().filter(|t| t.status.records_narrowing()).flat_map(|t| t.reasons.iter().map(String::as_str)).collect();
    let erasure = timeline.iter().find(|t| t.status == ReferralEvent::Withdrawn).and_then(|t| DateTime::<Utc>::from_timestamp_millis(t.at_ms)).map(|at| {
        let progress = erasure_progress(at, false, packet_made, &steps, erasure_deadline, now);
        json!({ "state": progress.state, "due_by": progress.due_by.map(|t| millis_to_rfc3339(t.timestamp_millis())) })
    });

    json!({
        "referral_id": referral.referral_id,
        "sender_org": referral.sender_org,
        "recipient": { "org": referral.destination_org, "country": referral.destination_country },
        "purpose": referral.purpose,
        "submitted_at": millis_to_rfc3339(referral.created_ms),
        "outcome": referral.outcome,
        "reason_codes": decision.get("deny_reasons").cloned().unwrap_or(json!([])),
        "policy_version": referral.policy_version,
        "consent": serde_json::from_str::<Value>(&referral.consent).unwrap_or(Value::Null),
        "categories": { "sent": keys("sent"), "withheld": keys("withheld"), "withdrawn": withdrawn_categories },
        "delivery": referral.delivery.as_ref().map(|d| json!({
            "state": d.state,
            "packet_id": d.packet_id,
            "delivered_at": first(ReferralEvent::Delivered),
            // The receiving gateway's signed receipt: proof of what it took.
            "receipt": d.receipt,
        })),
        "held": { "this_gateway": here, "recipient_gateway": at_gateway, "recipient_organisation": at_organisation },
        "erased": erased,
        "erasure": erasure,
        "status": referral.status,
        "timeline": timeline.iter().map(|t| {
            if t.reasons.is_empty() {
                json!({ "status": t.status, "at": millis_to_rfc3339(t.at_ms) })
            } else {
                json!({ "status": t.status, "at": millis_to_rfc3339(t.at_ms), "reasons": t.reasons })
            }
        }).collect::<Vec<_>>(),
    })
}

impl Gateway {
    /// The subject report (role dpo or auditor); audited with the keyed subject reference.
    pub async fn subject_report(&self, principal: &Authorized<Overseers>, subject_ref: &str) -> Result<Value, AppError> {
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
    use crate::store::DeliveryRecord;
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn referral(outcome: &str, delivery: Option<(&str, bool, bool)>) -> SubjectReferral {
        SubjectReferral {
            referral_id: "r1".to_owned(),
            sender_org: "ita-iom-rome".to_owned(),
            destination_org: "gmb-iom-banjul".to_owned(),
            destination_country: Some("GMB".to_owned()),
            purpose: "return".to_owned(),
            outcome: outcome.to_owned(),
            decision: r#"{"outcome":"allow","sent":{"identity":{},"contact":{}},"withheld":{"asylum":["purpose_baseline"]}}"#.to_owned(),
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
        subject_report("ITA-2026-000303", &[(referral, timeline)], chrono::Duration::hours(72), at(60))
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
