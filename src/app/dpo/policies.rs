//! The DPO's sharing policies: history, upload, simulation.

use std::collections::BTreeMap;

use chrono::DateTime;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::access::{Authorized, Dpos};
use crate::app::views::{RecipientRef, Timestamp};
use crate::app::{reason_strings, ActivePolicy, AppError, Gateway};
use crate::audit::{Action, Actor, AuditEvent};
use crate::domain::decide::decide;
use crate::domain::decision::DecisionRecord;
use crate::domain::policy::{is_toml_rule_file, PolicySource, DataProtectionPolicy};
use crate::domain::submission::{FieldProblem, ReferralSubmission, SubmissionError};
use crate::domain::OrgId;
use crate::store::{NewPolicyVersion, PolicyVersionRecord, Store, StoreError, Write, Written};

/// At most this many files in one policy set.
const MAX_POLICY_FILES: usize = 64;

/// `PUT /v1/policies`: a whole new policy set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpload {
    /// File name to text: at least one `*.cedar` file (Cedar policies), and
    /// optionally `retention.toml` (retention rules, policy-guide.md 5.6) and
    /// `end_to_end.toml` (end-to-end sealing rules).
    pub files: BTreeMap<String, String>,
    /// Why this version: shown in the history.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/policies/simulate`: a referral decided without side effects.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Simulation {
    /// A referral submission, as `POST /v1/referrals` takes it.
    // Parsed as a submission is (`ReferralSubmission::parse`), with its problems.
    #[schemars(with = "ReferralSubmission")]
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

fn summary(record: &PolicyVersionRecord) -> PolicySummary {
    PolicySummary {
        number: record.number,
        version: record.version.clone(),
        author: PolicyAuthor { org: record.author_org.clone(), subject: record.author_subject.clone() },
        created_at: Timestamp(record.created_ms),
        note: record.note.clone(),
    }
}

/// `GET /v1/policies`: the active version with its files, and every
/// version, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyList {
    pub active: Option<ActivePolicyView>,
    pub history: Vec<PolicySummary>,
}

/// The active policy version, with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ActivePolicyView {
    #[serde(flatten)]
    pub summary: PolicySummary,
    /// File name to text, as uploaded.
    pub files: BTreeMap<String, String>,
}

/// One policy version: who stored it, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicySummary {
    /// Numbered from 1, in the order stored.
    pub number: i64,
    /// `sha256:` of the files.
    pub version: String,
    pub author: PolicyAuthor,
    pub created_at: Timestamp,
    pub note: Option<String>,
}

/// Who stored a policy version: a DPO of an organisation, or the gateway
/// itself (`org` null) for the initial policy from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyAuthor {
    pub org: Option<String>,
    pub subject: String,
}

/// `PUT /v1/policies`: the version stored, which is active from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyStored {
    pub number: i64,
    pub version: String,
    /// Always true: an uploaded version takes effect at once.
    pub active: bool,
}

/// `POST /v1/policies/simulate`: what the gateway would decide; nothing is
/// stored or sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SimulationAnswer {
    /// The recipient decided for, as the directory knows it; `null` if it does not.
    pub recipient: Option<RecipientRef>,
    pub decided_at: DateTime<chrono::Utc>,
    /// Whether the candidate policy files of the request decided, instead of the active version.
    pub candidate_policy: bool,
    pub decision: DecisionRecord,
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
    pub async fn policies(&self, principal: &Authorized<Dpos>) -> Result<PolicyList, AppError> {
        let versions = self.store.policy_versions().await?;
        let active = match versions.last() {
            Some(latest) => Some(ActivePolicyView { summary: summary(latest), files: files_of(latest)? }),
            None => None,
        };
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::PolicyRead, "ok")).await?;
        Ok(PolicyList { active, history: versions.iter().rev().map(summary).collect() })
    }

    /// Validates and stores a new policy set, which becomes active at once.
    pub async fn upload_policy(&self, principal: &Authorized<Dpos>, upload: PolicyUpload) -> Result<PolicyStored, AppError> {
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
        Ok(PolicyStored { number, version, active: true })
    }

    /// Decides a referral without storing or sending anything; only the fact
    /// that a simulation ran is audited.
    pub async fn simulate(&self, principal: &Authorized<Dpos>, simulation: Simulation) -> Result<SimulationAnswer, AppError> {
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
        Ok(SimulationAnswer {
            recipient: recipient.as_ref().map(|r| RecipientRef { org: r.id.to_string(), country: Some(r.country.to_string()) }),
            decided_at: at,
            candidate_policy: candidate.is_some(),
            decision: DecisionRecord::from(&decision),
        })
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
