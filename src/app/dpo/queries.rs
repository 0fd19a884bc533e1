//! The DPO's and auditor's questions: the audit log, and who received what.

use serde_json::{json, Value};

use crate::app::access::{Authorized, Overseers};
use crate::app::millis_to_rfc3339;
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent, AuditRecord};
use crate::store::AuditFilter;

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// Audit log filters as the API takes them.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub action: Option<Action>,
    pub org: Option<String>,
    pub referral_id: Option<String>,
    pub subject_ref: Option<String>,
    pub cursor: Option<i64>,
    pub limit: Option<i64>,
}

fn entry(record: &AuditRecord) -> Value {
    json!({
        "seq": record.seq,
        "at": millis_to_rfc3339(record.at_ms),
        "actor": { "org": record.actor_org, "subject": record.actor_subject },
        "action": record.action,
        "referral_id": record.referral_id,
        "subject_key": record.subject_key,
        "policy_version": record.policy_version,
        "outcome": record.outcome,
        "reasons": record.reasons,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    })
}

impl Gateway {
    pub async fn audit_log(&self, principal: &Authorized<Overseers>, query: AuditQuery) -> Result<Value, AppError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let filter = AuditFilter {
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            action: query.action.map(|a| a.as_str().to_owned()),
            org: query.org,
            referral_id: query.referral_id,
            subject_key: query.subject_ref.as_deref().map(|s| self.subject_key(s)),
            after_seq: query.cursor,
            limit,
        };
        let records = self.store.audit(&filter).await?;
        let next_cursor = (records.len() as i64 == limit).then(|| records.last().map(|r| r.seq)).flatten();
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::AuditRead, "ok")).await?;
        Ok(json!({
            "entries": records.iter().map(entry).collect::<Vec<_>>(),
            "next_cursor": next_cursor.map(|c| c.to_string()),
        }))
    }

    /// Which organisations in which countries were given which categories
    /// about a subject, when, under which policy version and consent.
    pub async fn disclosures(&self, principal: &Authorized<Overseers>, subject_ref: &str) -> Result<Value, AppError> {
        let subject_key = self.subject_key(subject_ref);
        // What went somewhere: the allowed referrals about the subject.
        let rows: Vec<_> = self.store.subject_referrals(&subject_key).await?.into_iter().filter(|r| r.outcome == "allow").collect();
        let event = AuditEvent::new(self.now(), principal.actor(), Action::DisclosuresRead, "ok").subject_key(subject_key);
        self.audit(event).await?;
        let disclosures: Vec<Value> = rows
            .iter()
            .map(|row| {
                let decision: Value = serde_json::from_str(&row.decision).unwrap_or(Value::Null);
                let categories: Vec<String> =
                    decision.get("sent").and_then(Value::as_object).map(|sent| sent.keys().cloned().collect()).unwrap_or_default();
                json!({
                    "referral_id": row.referral_id,
                    "sender_org": row.sender_org,
                    "recipient": { "org": row.destination_org, "country": row.destination_country },
                    "purpose": row.purpose,
                    "categories": categories,
                    "decided_at": millis_to_rfc3339(row.created_ms),
                    "status": row.status,
                    "policy_version": row.policy_version,
                    "consent": serde_json::from_str::<Value>(&row.consent).unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(json!({ "subject_ref": subject_ref, "disclosures": disclosures }))
    }
}
