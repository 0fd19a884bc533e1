//! The DPO's sharing policies: history, upload, simulation.

use std::collections::BTreeMap;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::access::{Authorized, Dpos};
use crate::app::millis_to_rfc3339;
use crate::app::{reason_strings, ActivePolicy, AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::domain::decide::decide;
use crate::domain::policy::{is_toml_rule_file, PolicySource, DataProtectionPolicy};
use crate::domain::submission::{FieldProblem, ReferralSubmission, SubmissionError};
use crate::domain::OrgId;
use crate::store::{NewPolicyVersion, PolicyVersionRecord, Store, StoreError, Write, Written};

/// At most this many files in one policy set.
const MAX_POLICY_FILES: usize = 64;

/// `PUT /v1/policies`: a whole new policy set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpload {
    /// File name (`*.cedar`) -> Cedar text; and optionally `retention.toml`
    /// -> the retention rules (`domain::retention`) and `end_to_end.toml` ->
    /// the end-to-end sealing rules (`domain::sealing`).
    pub files: BTreeMap<String, String>,
    /// Why this version: shown in the history.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/policies/simulate`: a referral decided without side effects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulation {
    /// A referral submission, as `POST /v1/referrals` takes it.
    pub referral: Value,
    /// The recipient to decide for; defaults to the referral's destination.
    #[serde(default)]
    pub to: Option<OrgId>,
    /// Decide as of this time instead of now.
    #[serde(default)]
    pub at: Option<DateTime<chrono::Utc>>,
    /// A candidate policy set to decide under instead of the active one.
    #[serde(default)]
    pub files: Option<BTreeMap<String, String>>,
}

fn sources(files: &BTreeMap<String, String>) -> Result<Vec<PolicySource>, AppError> {
    let mut problems = Vec::new();
    if !files.keys().any(|name| name.ends_with(".cedar")) {
        problems.push(FieldProblem { field: "files".to_owned(), problem: "must hold at least one *.cedar file".to_owned() });
    }
    if files.len() > MAX_POLICY_FILES {
        problems.push(FieldProblem { field: "files".to_owned(), problem: format!("must hold at most {MAX_POLICY_FILES} files") });
    }
    for name in files.keys().filter(|name| !is_toml_rule_file(name)) {
        let stem = name.strip_suffix(".cedar").unwrap_or("");
        let ok = !stem.is_empty() && stem.len() <= 100 && stem.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            problems.push(FieldProblem {
                field: "files".to_owned(),
                problem: "file names must be letters, digits, '-', '_' or '.', ending in .cedar (or be retention.toml or end_to_end.toml)".to_owned(),
            });
            break;
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems));
    }
    Ok(files.iter().map(|(name, text)| PolicySource { name: name.clone(), text: text.clone() }).collect())
}

fn compile(files: &BTreeMap<String, String>) -> Result<DataProtectionPolicy, AppError> {
    DataProtectionPolicy::compile(&sources(files)?).map_err(|error| match error {
        crate::domain::policy::PolicyError::Invalid(problems) => AppError::PolicyInvalid(problems),
        crate::domain::policy::PolicyError::Builtin(reason) => AppError::Internal(reason),
    })
}

fn files_of(record: &PolicyVersionRecord) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(&record.files).map_err(|_| StoreError::Corrupt(format!("policy version {} files", record.number)))
}

/// A stored version compiled again, as at start and when another replica
/// stored it; its files passed the upload checks when they were stored.
fn compile_stored(record: &PolicyVersionRecord) -> Result<ActivePolicy, String> {
    let sources: Vec<PolicySource> =
        files_of(record).map_err(|e| e.to_string())?.into_iter().map(|(name, text)| PolicySource { name, text }).collect();
    let policy = DataProtectionPolicy::compile(&sources).map_err(|e| e.to_string())?;
    Ok(ActivePolicy { number: record.number, policy })
}

fn summary(record: &PolicyVersionRecord) -> Value {
    json!({
        "number": record.number,
        "version": record.version,
        "author": { "org": record.author_org, "subject": record.author_subject },
        "created_at": millis_to_rfc3339(record.created_ms),
        "note": record.note,
    })
}

/// Why the gateway cannot start with its stored or configured policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("active policy version {number} no longer compiles: {reason}")]
    StoredInvalid { number: i64, reason: String },
    #[error("initial policy: {0}")]
    Initial(String),
}

/// The policy to start with: the newest stored version, or, on first start,
/// `initial` stored as version 1. Any invalid set refuses the start.
pub async fn load_active(
    store: &dyn Store,
    writer: &crate::store::writer::Writer,
    initial: impl FnOnce() -> Result<Vec<PolicySource>, String>,
    now: DateTime<chrono::Utc>,
) -> Result<ActivePolicy, PolicyStartError> {
    if let Some(latest) = store.policy_versions().await?.pop() {
        return compile_stored(&latest).map_err(|reason| PolicyStartError::StoredInvalid { number: latest.number, reason });
    }
    let sources = initial().map_err(PolicyStartError::Initial)?;
    let policy = DataProtectionPolicy::compile(&sources).map_err(|e| PolicyStartError::Initial(e.to_string()))?;
    let files: BTreeMap<&str, &str> = sources.iter().map(|s| (s.name.as_str(), s.text.as_str())).collect();
    let record = NewPolicyVersion {
        version: policy.version().to_owned(),
        author_org: None,
        author_subject: "gateway (initial policy from configuration)".to_owned(),
        note: Some("initial policy from the configured directory".to_owned()),
        created_ms: now.timestamp_millis(),
        files: serde_json::to_string(&files).map_err(|e| PolicyStartError::Initial(e.to_string()))?,
    };
    let audit = AuditEvent::new(now, Actor::gateway(), Action::PolicyUpdate, "ok").policy_version(policy.version());
    match writer.write(Write::Policy { policy: record, audit }).await? {
        Written::PolicyStored { number, .. } => Ok(ActivePolicy { number, policy }),
        _ => Err(PolicyStartError::Initial("the store did not number the policy".to_owned())),
    }
}

impl Gateway {
    pub async fn policies(&self, principal: &Authorized<Dpos>) -> Result<Value, AppError> {
        let versions = self.store.policy_versions().await?;
        let active = match versions.last() {
            Some(latest) => {
                let mut active = summary(latest);
                if let Some(object) = active.as_object_mut() {
                    object.insert("files".to_owned(), json!(files_of(latest)?));
                }
                active
            }
            None => Value::Null,
        };
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::PolicyRead, "ok")).await?;
        Ok(json!({ "active": active, "history": versions.iter().rev().map(summary).collect::<Vec<_>>() }))
    }

    /// Validates and stores a new policy set, which becomes active at once.
    pub async fn upload_policy(&self, principal: &Authorized<Dpos>, upload: PolicyUpload) -> Result<Value, AppError> {
        let now = self.now();
        let policy = match compile(&upload.files) {
            Ok(policy) => policy,
            Err(error) => {
                let event = AuditEvent::new(now, principal.actor(), Action::PolicyUpdate, "invalid").reasons(["policy_invalid"]);
                self.audit(event).await?;
                return Err(error);
            }
        };
        let record = NewPolicyVersion {
            version: policy.version().to_owned(),
            author_org: Some(principal.org.to_string()),
            author_subject: principal.subject.clone(),
            note: upload.note.map(|n| n.chars().take(500).collect()),
            created_ms: now.timestamp_millis(),
            files: serde_json::to_string(&upload.files).map_err(|e| AppError::Internal(e.to_string()))?,
        };
        let audit = AuditEvent::new(now, principal.actor(), Action::PolicyUpdate, "ok").policy_version(policy.version());
        let Written::PolicyStored { number, .. } = self.writer.write(Write::Policy { policy: record, audit }).await? else {
            return Err(AppError::Internal("the store did not number the policy".to_owned()));
        };
        let version = policy.version().to_owned();
        self.activate(ActivePolicy { number, policy });
        Ok(json!({ "number": number, "version": version, "active": true }))
    }

    /// Decides a referral without storing or sending anything; only the fact
    /// that a simulation ran is audited.
    pub async fn simulate(&self, principal: &Authorized<Dpos>, simulation: Simulation) -> Result<Value, AppError> {
        let now = self.now();
        let at = simulation.at.unwrap_or(now);
        let text = simulation.referral.to_string();
        let submission = ReferralSubmission::parse(&text, at).map_err(|error| match error {
            SubmissionError::Syntax { line, column } => AppError::MalformedJson { line, column },
            SubmissionError::Invalid(problems) => AppError::Invalid(
                problems.into_iter().map(|p| FieldProblem { field: format!("referral.{}", p.field), problem: p.problem }).collect(),
            ),
            SubmissionError::SchemaUnavailable => AppError::Internal("referral schema unavailable".to_owned()),
        })?;
        let candidate = simulation.files.as_ref().map(compile).transpose()?;
        let active = self.policy();
        let policy = candidate.as_ref().unwrap_or(&active.policy);
        let to = simulation.to.unwrap_or_else(|| submission.destination.clone());
        let recipient = self.directory().recipient_at(&to, at);
        let decision = decide(&submission.case, &submission.consent, self.country, recipient.as_ref(), submission.purpose, policy, at);
        let outcome = if decision.is_allow() { "allow" } else { "deny" };
        let event = AuditEvent::new(now, principal.actor(), Action::PolicySimulate, outcome)
            .policy_version(decision.policy_version())
            .reasons(reason_strings(decision.deny_reasons()));
        self.audit(event).await?;
        Ok(json!({
            "recipient": recipient.as_ref().map(|r| json!({ "org": r.id.as_str(), "country": r.country.as_str() })),
            "decided_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "candidate_policy": candidate.is_some(),
            "decision": decision,
        }))
    }

    /// Picks up a policy version another replica stored: compares the newest
    /// version number, and loads the files only when it changed.
    pub async fn refresh_policy(&self) -> Result<(), AppError> {
        if self.store.latest_policy_number().await? <= self.policy().number {
            return Ok(());
        }
        let Some(latest) = self.store.policy_versions().await?.pop() else { return Ok(()) };
        self.activate(compile_stored(&latest).map_err(AppError::Internal)?);
        Ok(())
    }
}
