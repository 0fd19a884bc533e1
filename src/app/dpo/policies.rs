//! The DPO's sharing policies: versions, upload as a draft, four-eyes
//! sign-off (docs/policy-guide.md §8), the schedule of versions in force,
//! and simulation.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::DateTime;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::impact::ImpactChecked;
use crate::app::access::{Authorized, Dpos};
use crate::app::views::{RecipientRef, Timestamp};
use crate::app::dpo::policy_checks::{check_upload, UploadChecks, UploadRefusal};
use crate::app::{reason_strings, ActivePolicy, AppError, Gateway, PolicySchedule};
use crate::audit::{Action, Actor, AuditEvent};
use crate::domain::decide::decide;
use crate::domain::decision::DecisionRecord;
use crate::domain::policy::agreements::AgreementDue;
use crate::domain::policy::{is_toml_rule_file, PolicySource, DataProtectionPolicy};
use crate::domain::submission::{FieldProblem, ReferralSubmission, SubmissionError};
use crate::domain::signoff::{
    self, ApprovalsRequired, ApprovedVersion, DpoIdentity, PolicyVersionState, ReviewOutcome, SignOff, Verdict, VersionUnderReview,
};
use crate::domain::OrgId;
use crate::store::{
    NewPolicyVersion, PolicyReview, PolicySignOffRecord, PolicyVersionRecord, Store, StoreError, Write, Written,
};

/// At most this many files in one policy set.
const MAX_POLICY_FILES: usize = 64;

/// `PUT /v1/policies`: a whole new policy set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpload {
    /// File name to text: at least one `*.cedar` file (Cedar policies), and
    /// optionally `retention.toml` (retention rules, policy-guide.md 5.6),
    /// `end_to_end.toml` (end-to-end sealing rules, 5.7) and `overrides.toml`
    /// (standing rules for emergency overrides, 5.9).
    pub files: BTreeMap<String, String>,
    /// Why this version: shown in the history.
    #[serde(default)]
    pub note: Option<String>,
    /// Take effect no earlier than this, once approved (default: at approval).
    #[serde(default)]
    pub effective_from: Option<DateTime<chrono::Utc>>,
}

/// `POST /v1/policies/{number}/approve` and `.../reject`: a DPO's verdict on a draft.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// Why: kept with the sign-off.
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
    if files.keys().any(|name| !is_policy_file(name) && !is_test_file(name)) {
        problems.push(FieldProblem {
            field: "files".to_owned(),
            problem: "file names must be letters, digits, '-', '_' or '.', ending in .cedar (or be retention.toml, end_to_end.toml or overrides.toml); \
                      tests go under tests/, as *.toml files and the referral *.json files they name"
                .to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid(problems));
    }
    Ok(files
        .iter()
        .filter(|(name, _)| is_policy_file(name))
        .map(|(name, text)| PolicySource { name: name.clone(), text: text.clone() })
        .collect())
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A Cedar file or one of the rule files, at the top of the set.
fn is_policy_file(name: &str) -> bool {
    is_toml_rule_file(name) || name.strip_suffix(".cedar").is_some_and(is_plain_name)
}

/// A file of the set's tests (docs/policy-guide.md §7): `tests/<name>.toml`,
/// or a referral the tests name, `tests/<folders>/<name>.json`.
fn is_test_file(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(crate::policy_tests::TESTS_FOLDER).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let Some((last, folders)) = parts.split_last() else { return false };
    let file_ok = match folders {
        [] => last.ends_with(".toml") || last.ends_with(".json"),
        _ => last.ends_with(".json"),
    };
    file_ok && parts.len() <= 4 && parts.iter().all(|part| is_plain_name(part))
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

fn checks_of(record: &PolicyVersionRecord) -> Result<Option<UploadChecks>, StoreError> {
    record
        .checks
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| StoreError::Corrupt(format!("policy version {} checks", record.number)))
}

/// A stored version compiled again, as at start and when another replica
/// stored it; its files passed the upload checks when they were stored.
fn compile_stored(record: &PolicyVersionRecord) -> Result<ActivePolicy, String> {
    let files = files_of(record).map_err(|e| e.to_string())?;
    // Every file but the tests, whatever its name: a version seeded from the
    // configured directory, or stored under older name rules, keeps all its
    // rules (a dropped forbid would share more than was approved).
    let sources: Vec<PolicySource> = files
        .into_iter()
        .filter(|(name, _)| !name.starts_with(&format!("{}/", crate::policy_tests::TESTS_FOLDER)))
        .map(|(name, text)| PolicySource { name, text })
        .collect();
    let policy = DataProtectionPolicy::compile(&sources).map_err(|e| e.to_string())?;
    Ok(ActivePolicy { number: record.number, policy })
}

fn author_of(record: &PolicyVersionRecord) -> DpoIdentity {
    DpoIdentity { org: record.author_org.clone(), subject: record.author_subject.clone() }
}

fn approved(record: &PolicyVersionRecord) -> Option<ApprovedVersion> {
    match (record.state, record.effective_ms) {
        (PolicyVersionState::Approved, Some(effective_ms)) => {
            Some(ApprovedVersion { number: record.number, effective_ms, approved_ms: record.decided_ms.unwrap_or(effective_ms) })
        }
        _ => None,
    }
}

fn sign_off_of(record: &PolicySignOffRecord) -> SignOff {
    SignOff {
        by: DpoIdentity { org: Some(record.reviewer_org.clone()), subject: record.reviewer_subject.clone() },
        verdict: record.verdict,
        at_ms: record.at_ms,
    }
}

/// Every stored version with its sign-offs, oldest first.
async fn versions_with_sign_offs(store: &dyn Store) -> Result<Vec<(PolicyVersionRecord, Vec<PolicySignOffRecord>)>, StoreError> {
    let versions = store.policy_versions().await?;
    let mut sign_offs: BTreeMap<i64, Vec<PolicySignOffRecord>> = BTreeMap::new();
    for sign_off in store.policy_sign_offs().await? {
        sign_offs.entry(sign_off.number).or_default().push(sign_off);
    }
    Ok(versions.into_iter().map(|v| {
        let signed = sign_offs.remove(&v.number).unwrap_or_default();
        (v, signed)
    }).collect())
}

/// The approved versions in force at `at_ms` or later, compiled (reusing
/// what `current` already compiled). Any of them that no longer compiles
/// refuses the schedule.
fn schedule_of(
    versions: &[PolicyVersionRecord],
    mark: crate::store::PolicyMark,
    at_ms: i64,
    current: Option<&PolicySchedule>,
) -> Result<Option<PolicySchedule>, (i64, String)> {
    let approved: Vec<ApprovedVersion> = versions.iter().filter_map(approved).collect();
    let Some(in_force) = signoff::in_force_at(&approved, at_ms) else { return Ok(None) };
    let compiled = |version: ApprovedVersion| -> Result<(ApprovedVersion, std::sync::Arc<ActivePolicy>), (i64, String)> {
        let known = current.and_then(|c| c.versions().find(|(v, _)| v.number == version.number)).map(|(_, p)| std::sync::Arc::clone(p));
        let policy = match (known, versions.iter().find(|r| r.number == version.number)) {
            (Some(policy), _) => policy,
            (None, Some(record)) => std::sync::Arc::new(compile_stored(record).map_err(|reason| (version.number, reason))?),
            (None, None) => return Err((version.number, "not stored".to_owned())),
        };
        Ok((version, policy))
    };
    let later = signoff::scheduled_after(&approved, at_ms).into_iter().map(compiled).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(PolicySchedule { in_force: compiled(in_force)?, later, mark }))
}

fn summary(record: &PolicyVersionRecord, sign_offs: &[PolicySignOffRecord], required: ApprovalsRequired) -> Result<PolicySummary, StoreError> {
    let approvals = 1 + sign_offs.iter().filter(|s| s.verdict == Verdict::Approve).count();
    Ok(PolicySummary {
        number: record.number,
        version: record.version.clone(),
        state: record.state,
        author: PolicyAuthor { org: record.author_org.clone(), subject: record.author_subject.clone() },
        created_at: Timestamp(record.created_ms),
        note: record.note.clone(),
        effective_from: record.effective_from_ms.map(Timestamp),
        effective_at: record.effective_ms.map(Timestamp),
        decided_at: record.decided_ms.map(Timestamp),
        restores: record.restores,
        approvals: (record.state == PolicyVersionState::Draft).then(|| PolicyApprovals {
            given: u8::try_from(approvals).unwrap_or(u8::MAX),
            required: required.get(),
        }),
        sign_offs: sign_offs
            .iter()
            .map(|s| SignOffView {
                by: PolicyAuthor { org: Some(s.reviewer_org.clone()), subject: s.reviewer_subject.clone() },
                verdict: s.verdict,
                at: Timestamp(s.at_ms),
                note: s.note.clone(),
            })
            .collect(),
        checks: checks_of(record)?,
    })
}

/// `GET /v1/policies`: the version in force with its files, the versions
/// approved to take effect later, the drafts awaiting sign-off, and every
/// version, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyList {
    /// How many distinct DPOs, the author included, sign a version off.
    pub approvals_required: u8,
    pub active: Option<PolicyVersionView>,
    /// Permits of the version in force whose sharing agreement expired, or
    /// expires or is to be reviewed within 30 days (policy-guide.md §5.8).
    pub agreements_due: Vec<AgreementDue>,
    /// Approved, to take effect later, in the order they will.
    pub scheduled: Vec<PolicySummary>,
    /// Awaiting sign-off, newest first.
    pub drafts: Vec<PolicySummary>,
    pub history: Vec<PolicySummary>,
}

/// One policy version, with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyVersionView {
    #[serde(flatten)]
    pub summary: PolicySummary,
    /// File name to text, as uploaded (its tests included).
    pub files: BTreeMap<String, String>,
}

/// One policy version: who stored it, when and why, where its sign-off
/// stands and what was checked at upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicySummary {
    /// Numbered from 1, in the order stored.
    pub number: i64,
    /// `sha256:` of the policy files (tests excluded).
    pub version: String,
    pub state: PolicyVersionState,
    pub author: PolicyAuthor,
    pub created_at: Timestamp,
    pub note: Option<String>,
    /// The earliest time its author asked it to take effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<Timestamp>,
    /// When it takes (or took) effect: approved versions only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<Timestamp>,
    /// When its sign-off completed, or it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    /// The earlier version whose files it restores (a rollback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<i64>,
    /// A draft's approvals so far, its author's included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<PolicyApprovals>,
    /// Other DPOs' verdicts, in the order given.
    pub sign_offs: Vec<SignOffView>,
    /// What was checked at upload; absent for versions stored before checks existed and the initial version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<UploadChecks>,
}

/// Approvals a draft has and needs, its author's included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyApprovals {
    pub given: u8,
    pub required: u8,
}

/// A DPO's verdict on a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SignOffView {
    pub by: PolicyAuthor,
    pub verdict: Verdict,
    pub at: Timestamp,
    pub note: Option<String>,
}

/// Who stored a policy version: a DPO of an organisation, or the gateway
/// itself (`org` null) for the initial policy from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyAuthor {
    pub org: Option<String>,
    pub subject: String,
}

/// `PUT /v1/policies` and `POST /v1/policies/{number}/restore`: the version
/// stored, a draft unless one approval is enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyStored {
    pub number: i64,
    pub version: String,
    pub state: PolicyVersionState,
    /// Approved versions: when it takes effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<Timestamp>,
    pub approvals: PolicyApprovals,
    pub checks: UploadChecks,
}

/// `POST /v1/policies/{number}/approve` or `.../reject`: where the version stands now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PolicyReviewed {
    pub number: i64,
    pub version: String,
    pub state: PolicyVersionState,
    /// Approved versions: when it takes effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<PolicyApprovals>,
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
    #[error("policy version {number} no longer compiles: {reason}")]
    StoredInvalid { number: i64, reason: String },
    #[error("no approved policy version is in force")]
    NoneInForce,
    #[error("initial policy: {0}")]
    Initial(String),
}

/// The policy schedule to start with, from the stored versions; on first
/// start, `initial` stored as version 1, approved by the configuration.
/// Any invalid set in force or scheduled refuses the start.
pub async fn load_active(
    store: &dyn Store,
    writer: &crate::store::writer::Writer,
    initial: impl FnOnce() -> Result<Vec<PolicySource>, String>,
    now: DateTime<chrono::Utc>,
) -> Result<PolicySchedule, PolicyStartError> {
    let mark = store.policy_mark().await?;
    let versions = store.policy_versions().await?;
    if !versions.is_empty() {
        return match schedule_of(&versions, mark, now.timestamp_millis(), None) {
            Ok(Some(schedule)) => Ok(schedule),
            Ok(None) => Err(PolicyStartError::NoneInForce),
            Err((number, reason)) => Err(PolicyStartError::StoredInvalid { number, reason }),
        };
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
        // Whoever deployed the configuration approved it.
        state: PolicyVersionState::Approved,
        effective_from_ms: None,
        effective_ms: Some(now.timestamp_millis()),
        restores: None,
        checks: None,
    };
    let audit = AuditEvent::new(now, Actor::gateway(), Action::PolicyUpdate, "approved").policy_version(policy.version());
    match writer.write(Write::Policy { policy: record, audit }).await? {
        Written::PolicyStored { number, .. } => {
            let at_ms = now.timestamp_millis();
            let version = ApprovedVersion { number, effective_ms: at_ms, approved_ms: at_ms };
            Ok(PolicySchedule {
                in_force: (version, std::sync::Arc::new(ActivePolicy { number, policy })),
                later: Vec::new(),
                mark: crate::store::PolicyMark { latest_number: number, reviews: 0 },
            })
        }
        _ => Err(PolicyStartError::Initial("the store did not number the policy".to_owned())),
    }
}

fn note(text: Option<String>) -> Option<String> {
    text.map(|n| n.chars().take(500).collect())
}

impl Gateway {
    pub async fn policies(&self, principal: &Authorized<Dpos>) -> Result<PolicyList, AppError> {
        let required = self.governance.approvals_required;
        let versions = versions_with_sign_offs(self.store.as_ref()).await?;
        let in_force = self.policy().number;
        let mut list = PolicyList {
            approvals_required: required.get(),
            active: None,
            agreements_due: self.agreements_due(),
            scheduled: Vec::new(),
            drafts: Vec::new(),
            history: Vec::new(),
        };
        let now_ms = self.now().timestamp_millis();
        let approved: Vec<ApprovedVersion> = versions.iter().map(|(v, _)| v).filter_map(approved).collect();
        let later: Vec<i64> = signoff::scheduled_after(&approved, now_ms).iter().map(|v| v.number).collect();
        for (record, sign_offs) in versions.iter().rev() {
            let summary = summary(record, sign_offs, required)?;
            if record.number == in_force {
                list.active = Some(PolicyVersionView { summary: summary.clone(), files: files_of(record)? });
            }
            if record.state == PolicyVersionState::Draft {
                list.drafts.push(summary.clone());
            }
            list.history.push(summary);
        }
        for number in later {
            if let Some(summary) = list.history.iter().find(|s| s.number == number) {
                list.scheduled.push(summary.clone());
            }
        }
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::PolicyRead, "ok")).await?;
        Ok(list)
    }

    /// `GET /v1/policies/{number}`: one version with its files, sign-offs and checks.
    pub async fn policy_version(&self, principal: &Authorized<Dpos>, number: i64) -> Result<PolicyVersionView, AppError> {
        let versions = versions_with_sign_offs(self.store.as_ref()).await?;
        let Some((record, sign_offs)) = versions.iter().find(|(v, _)| v.number == number) else {
            return Err(AppError::NotFound);
        };
        let view = PolicyVersionView { summary: summary(record, sign_offs, self.governance.approvals_required)?, files: files_of(record)? };
        self.audit(AuditEvent::new(self.now(), principal.actor(), Action::PolicyRead, "ok").policy_version(&record.version)).await?;
        Ok(view)
    }

    /// Validates, tests and proves a new policy set and stores it as a
    /// draft (approved at once only when one approval is enough).
    pub async fn upload_policy(&self, principal: &Authorized<Dpos>, upload: PolicyUpload) -> Result<PolicyStored, AppError> {
        self.store_version(principal, upload.files, note(upload.note), upload.effective_from, None).await
    }

    /// `POST /v1/policies/{number}/restore`: an earlier version's files as a
    /// new draft, signed off like any other (a rollback).
    pub async fn restore_policy(&self, principal: &Authorized<Dpos>, number: i64, request: ReviewRequest) -> Result<PolicyStored, AppError> {
        let versions = self.store.policy_versions().await?;
        let Some(earlier) = versions.iter().find(|v| v.number == number) else {
            return Err(AppError::NotFound);
        };
        let note = note(request.note).or_else(|| Some(format!("restores version {number}")));
        self.store_version(principal, files_of(earlier)?, note, None, Some(number)).await
    }

    async fn store_version(
        &self,
        principal: &Authorized<Dpos>,
        files: BTreeMap<String, String>,
        note: Option<String>,
        effective_from: Option<DateTime<chrono::Utc>>,
        restores: Option<i64>,
    ) -> Result<PolicyStored, AppError> {
        let now = self.now();
        let refused = |outcome: &'static str, reason: &'static str| {
            AuditEvent::new(now, principal.actor(), Action::PolicyUpdate, outcome).reasons([reason])
        };
        let policy = match compile(&files) {
            Ok(policy) => policy,
            Err(error) => {
                self.audit(refused("invalid", "policy_invalid")).await?;
                return Err(error);
            }
        };
        let in_force = self.policy();
        let checked =
            check_upload(&files, &policy, (in_force.number, &in_force.policy), &self.directory(), self.governance.solver.as_ref(), now).await;
        let mut checks = match checked {
            Ok(checks) => checks,
            Err(refusal) => {
                let reason = match &refusal {
                    UploadRefusal::TestsInvalid(_) => "policy_tests_invalid",
                    UploadRefusal::TestsFailed(_) => "policy_tests_failed",
                    UploadRefusal::ProofRefuted(_) => "policy_proof_refuted",
                };
                self.audit(refused("invalid", reason).policy_version(policy.version())).await?;
                return Err(AppError::PolicyRefused(refusal));
            }
        };
        let policy = Arc::new(policy);
        // The replay informs the reviewers and refuses nothing: should it fail (the store or the
        // case-key store unavailable), the draft is stored all the same, saying so.
        checks.impact = match self.measure_impact(in_force, Arc::clone(&policy), self.governance.impact_since(now), now).await {
            Ok(impact) => impact,
            Err(error) => {
                tracing::error!(%error, "the impact replay of an uploaded policy version failed; the draft records it as not measured");
                ImpactChecked::NotMeasured { reason: "the replay of recent decisions failed; the operator's log says why".to_owned() }
            }
        };
        let required = self.governance.approvals_required;
        let at_ms = now.timestamp_millis();
        let outcome = signoff::on_upload(required, effective_from.map(|t| t.timestamp_millis()), at_ms);
        let effective_ms = match outcome {
            ReviewOutcome::Approved(approval) => Some(approval.effective_ms),
            _ => None,
        };
        let record = NewPolicyVersion {
            version: policy.version().to_owned(),
            author_org: Some(principal.org.to_string()),
            author_subject: principal.subject.clone(),
            note,
            created_ms: at_ms,
            files: serde_json::to_string(&files).map_err(|e| AppError::Internal(e.to_string()))?,
            state: outcome.state(),
            effective_from_ms: effective_from.map(|t| t.timestamp_millis()),
            effective_ms,
            restores,
            checks: Some(serde_json::to_string(&checks).map_err(|e| AppError::Internal(e.to_string()))?),
        };
        let audit = AuditEvent::new(now, principal.actor(), Action::PolicyUpdate, if effective_ms.is_some() { "approved" } else { "draft" })
            .policy_version(policy.version());
        let Written::PolicyStored { number, .. } = self.writer.write(Write::Policy { policy: record, audit }).await? else {
            return Err(AppError::Internal("the store did not number the policy".to_owned()));
        };
        self.reload_after_commit().await;
        Ok(PolicyStored {
            number,
            version: policy.version().to_owned(),
            state: outcome.state(),
            effective_at: effective_ms.map(Timestamp),
            approvals: PolicyApprovals { given: 1, required: required.get() },
            checks,
        })
    }

    /// A DPO other than the author approves or rejects a draft.
    pub async fn review_policy(
        &self,
        principal: &Authorized<Dpos>,
        number: i64,
        verdict: Verdict,
        request: ReviewRequest,
    ) -> Result<PolicyReviewed, AppError> {
        let required = self.governance.approvals_required;
        let reviewer = DpoIdentity { org: Some(principal.org.to_string()), subject: principal.subject.clone() };
        // Another DPO's review may land between the read and the write: read again.
        for _ in 0..3 {
            let now = self.now();
            let versions = versions_with_sign_offs(self.store.as_ref()).await?;
            let Some((record, sign_offs)) = versions.iter().find(|(v, _)| v.number == number) else {
                return Err(AppError::NotFound);
            };
            let author = author_of(record);
            let author_actor = Actor { org: author.org.clone(), subject: author.subject.clone() };
            let given: Vec<SignOff> = sign_offs.iter().map(sign_off_of).collect();
            let version = VersionUnderReview { state: record.state, author: &author, effective_from_ms: record.effective_from_ms, sign_offs: &given };
            let refused = |reason: &'static str| {
                AuditEvent::new(now, principal.actor(), Action::PolicyReview, "refused")
                    .policy_version(&record.version)
                    .counterpart(author_actor.clone())
                    .reasons([reason])
            };
            let outcome = match signoff::review(&version, &reviewer, verdict, required, now.timestamp_millis()) {
                Ok(outcome) => outcome,
                Err(refusal) => {
                    self.audit(refused(refusal.code())).await?;
                    return Err(AppError::ReviewRefused(refusal));
                }
            };
            let effective_ms = match outcome {
                ReviewOutcome::Approved(approval) => Some(approval.effective_ms),
                _ => None,
            };
            // A draft stored under an older binary may no longer compile: approved,
            // it would stop every replica at its next start.
            if effective_ms.is_some()
                && let Err(reason) = compile_stored(record)
            {
                self.audit(refused("policy_invalid")).await?;
                let problem = crate::domain::policy::PolicyProblem { file: format!("version {number}"), line: 1, column: 1, problem: reason };
                return Err(AppError::PolicyInvalid(vec![problem]));
            }
            let review = PolicyReview {
                sign_off: PolicySignOffRecord {
                    number,
                    reviewer_org: principal.org.to_string(),
                    reviewer_subject: principal.subject.clone(),
                    verdict,
                    at_ms: now.timestamp_millis(),
                    note: note(request.note.clone()),
                },
                seen_reviews: record.reviews,
                state: outcome.state(),
                effective_ms,
            };
            let audit_outcome = match outcome {
                ReviewOutcome::Approved(_) => "approved",
                ReviewOutcome::StillDraft { .. } => "approval_recorded",
                ReviewOutcome::Rejected => "rejected",
            };
            let audit = AuditEvent::new(now, principal.actor(), Action::PolicyReview, audit_outcome)
                .policy_version(&record.version)
                .counterpart(author_actor);
            match self.writer.write(Write::PolicyReview { review: Box::new(review), audit }).await? {
                Written::ReviewedMeanwhile => continue,
                _ => {
                    self.reload_after_commit().await;
                    return Ok(PolicyReviewed {
                        number,
                        version: record.version.clone(),
                        state: outcome.state(),
                        effective_at: effective_ms.map(Timestamp),
                        approvals: match outcome {
                            ReviewOutcome::StillDraft { approvals, required } => Some(PolicyApprovals { given: approvals, required }),
                            _ => None,
                        },
                    });
                }
            }
        }
        Err(AppError::Contended)
    }

    /// The permits of the version in force whose agreement is due now,
    /// the most pressing first.
    pub fn agreements_due(&self) -> Vec<AgreementDue> {
        crate::domain::policy::agreements::due_at(self.policy().policy.agreements(), self.now())
    }

    /// After a version or a sign-off is committed: the answer says what was
    /// stored; a failure to install the schedule now is logged, and the
    /// refresh loop tries again.
    async fn reload_after_commit(&self) {
        if let Err(error) = self.reload_policies().await {
            tracing::error!(%error, "policy versions not reloaded after a change; the refresh loop retries");
        }
    }

    /// Reads the stored versions again and installs the schedule they make.
    async fn reload_policies(&self) -> Result<(), AppError> {
        let mark = self.store.policy_mark().await?;
        let versions = self.store.policy_versions().await?;
        let current = self.policy_schedule();
        match schedule_of(&versions, mark, self.now().timestamp_millis(), Some(&current)) {
            Ok(Some(schedule)) => {
                self.install_schedule(schedule);
                Ok(())
            }
            Ok(None) => Err(AppError::Internal("no approved policy version is in force".to_owned())),
            Err((number, reason)) => Err(AppError::Internal(format!("policy version {number} no longer compiles: {reason}"))),
        }
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

    /// Picks up a policy version another replica stored or signed off:
    /// compares the store's mark, and loads the versions only when it changed.
    pub async fn refresh_policy(&self) -> Result<(), AppError> {
        if self.store.policy_mark().await? == self.policy_schedule().mark {
            return Ok(());
        }
        self.reload_policies().await
    }
}
