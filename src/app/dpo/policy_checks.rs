//! What the gateway checks of a policy version a DPO uploads (DPO): its
//! tests, the proofs, and how it changes what is shared against the version
//! in force. Failing tests and refuted proofs refuse the upload; the rest is
//! kept with the draft for the DPOs who sign it off.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::impact::ImpactChecked;
use crate::directory::Directory;
use crate::domain::override_rules::OVERRIDES_FILE;
use crate::domain::retention::RETENTION_FILE;
use crate::domain::sealing::END_TO_END_FILE;
use crate::domain::policy::agreements::{self, AgreementDue};
use crate::domain::policy::{DataProtectionPolicy, BUILTIN_SOURCE};
use crate::policy_proofs::{self, ChangeLabel, SolverCommand};
use crate::policy_tests::{self, UploadedTests};

/// What was checked when a version was uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UploadChecks {
    pub tests: TestsChecked,
    pub proofs: ProofsChecked,
    /// Against the version in force at upload.
    pub change: ChangeChecked,
    /// Its permits whose sharing agreement, at upload, expired, or expires
    /// or is to be reviewed within 30 days.
    #[serde(default)]
    pub agreements_due: Vec<AgreementDue>,
    /// What it would have changed in the recent sending decisions, against the version in force at upload.
    #[serde(default)]
    pub impact: ImpactChecked,
    /// Its rule files whose rules differ from the version in force at
    /// upload (`retention.toml`, `end_to_end.toml`, `overrides.toml`): the
    /// label reads the Cedar policies only, so a change there (a standing
    /// rule that lets overrides go without a second person, for one) is
    /// named here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_files_changed: Vec<String>,
}

/// The policy tests uploaded with the version (its files under `tests/`):
/// an upload is stored only when all pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TestsChecked {
    pub run: usize,
    pub passed: usize,
    /// The version's DPO policies (by `@id`) that no test exercises.
    pub not_exercised: Vec<String>,
}

/// The machine proofs of docs/policy-guide.md §3.1: a version with a refuted
/// property is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProofsChecked {
    /// Every property holds.
    Proved { properties: usize },
    /// The gateway has no solver configured, or the solver did not decide:
    /// nothing is proved, and the reviewers can see so.
    NotProved { reason: String },
}

/// How the version changes what is shared, proved for every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChangeChecked {
    Labelled {
        /// The number of the version it was compared with.
        against: i64,
        label: ChangeLabel,
        /// Requests it allows that the version in force denies, in plain words (one per action at most: each purpose, and refer_onward).
        now_allowed: Vec<String>,
        /// Requests the version in force allows that it denies.
        now_denied: Vec<String>,
    },
    NotLabelled { reason: String },
}

/// Why an upload is refused after it compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadRefusal {
    /// A test file cannot be read or does not parse; or a test refers to a
    /// referral or recipient that is not there.
    TestsInvalid(String),
    /// Tests whose expectation the version does not meet: test name and what differed.
    TestsFailed(Vec<(String, Vec<String>)>),
    /// Properties refuted, each with a counterexample in plain words.
    ProofRefuted(Vec<(String, Vec<String>)>),
}

const NO_SOLVER: &str = "no SMT solver is configured ([policy] cvc5 or cvc5_python)";

/// Runs the version's tests, proves it and labels it against `in_force`.
pub async fn check_upload(
    files: &BTreeMap<String, String>,
    policy: &DataProtectionPolicy,
    in_force: (i64, &DataProtectionPolicy),
    directory: &Directory,
    solver: Option<&SolverCommand>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<UploadChecks, UploadRefusal> {
    let agreements_due = agreements::due_at(policy.agreements(), now);
    let rule_files_changed = rule_files_changed(policy, in_force.1);
    let run = policy_tests::run_from(&UploadedTests(files), policy, directory).map_err(|e| UploadRefusal::TestsInvalid(e.to_string()))?;
    let failed: Vec<(String, Vec<String>)> =
        run.results.iter().filter(|r| !r.passed()).map(|r| (r.name.clone(), r.differences.clone())).collect();
    if !failed.is_empty() {
        return Err(UploadRefusal::TestsFailed(failed));
    }
    let tests = TestsChecked {
        run: run.results.len(),
        passed: run.results.len(),
        not_exercised: run.unexercised().cloned().collect(),
    };
    let Some(solver) = solver else {
        return Ok(UploadChecks {
            tests,
            proofs: ProofsChecked::NotProved { reason: NO_SOLVER.to_owned() },
            change: ChangeChecked::NotLabelled { reason: NO_SOLVER.to_owned() },
            agreements_due,
            impact: ImpactChecked::default(),
            rule_files_changed,
        });
    };
    let dpo = policy.dpo_policy_set();
    let proofs = match policy_proofs::prove(BUILTIN_SOURCE, &dpo, solver).await {
        Ok(report) if report.all_hold() => ProofsChecked::Proved { properties: report.outcomes.len() },
        Ok(report) => {
            let refuted = report
                .refuted()
                .map(|o| (o.property.to_string(), o.counterexamples.iter().map(|c| c.to_string()).collect()))
                .collect();
            return Err(UploadRefusal::ProofRefuted(refuted));
        }
        Err(error) => ProofsChecked::NotProved { reason: error.to_string() },
    };
    let (against, active) = in_force;
    let change = match policy_proofs::compare(BUILTIN_SOURCE, &active.dpo_policy_set(), &dpo, solver).await {
        Ok(comparison) => ChangeChecked::Labelled {
            against,
            label: comparison.label,
            now_allowed: comparison.now_allowed.iter().map(|c| c.to_string()).collect(),
            now_denied: comparison.now_denied.iter().map(|c| c.to_string()).collect(),
        },
        Err(error) => ChangeChecked::NotLabelled { reason: error.to_string() },
    };
    Ok(UploadChecks { tests, proofs, change, agreements_due, impact: ImpactChecked::default(), rule_files_changed })
}

/// The rule files whose rules differ between `new` and `active`.
fn rule_files_changed(new: &DataProtectionPolicy, active: &DataProtectionPolicy) -> Vec<String> {
    [
        (RETENTION_FILE, new.retention() != active.retention()),
        (END_TO_END_FILE, new.end_to_end() != active.end_to_end()),
        (OVERRIDES_FILE, new.standing_overrides() != active.standing_overrides()),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(file, _)| file.to_owned())
    .collect()
}
