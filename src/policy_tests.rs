//! A DPO's policy tests (`policy test <dir>`): expected decisions kept beside
//! the policies, in `<dir>/tests/*.toml`, run against the policy set, with
//! coverage (which of the DPO's policies no test exercises).
//!
//! One `[[test]]` per expected decision (docs/policy-guide.md §7, "Test your
//! policies"): a referral file (relative to the test file, inside the tests
//! folder), the recipient, the sending country, the time, and what must
//! come out: the outcome, the deny reasons, the categories sent (exactly),
//! the policies that permitted them, their fields, and the reasons each
//! listed category is withheld for.
//!
//! Reports name tests, categories, reasons, field names and policy ids only:
//! never a value of the referral, which may hold (fictional) personal data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::directory::Directory;
use crate::domain::decision::{Decision, Outcome, ReasonCode};
use crate::domain::minimise::Payload;
use crate::domain::policy::DataProtectionPolicy;
use crate::domain::submission::ReferralSubmission;
use crate::domain::{CountryCode, DataCategory, OrgId, Purpose};

/// The folder of a policy directory that holds its tests.
pub const TESTS_FOLDER: &str = "tests";

#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{file}: {problem}")]
    Invalid { file: String, problem: String },
}

/// A file of tests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(rename = "test", default)]
    tests: Vec<PolicyTest>,
}

/// One expected decision, as the DPO writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTest {
    pub name: String,
    /// A referral submission (JSON), relative to the test file.
    pub referral: String,
    /// The recipient organisation's id; the referral's destination if absent.
    pub to: Option<String>,
    /// The sending gateway's country.
    pub from: String,
    /// When it is decided (consent validity, directory validity).
    pub at: DateTime<Utc>,
    /// Decide for this purpose instead of the referral's.
    pub purpose: Option<Purpose>,
    pub outcome: Outcome,
    /// Exactly these deny reasons (a deny only).
    pub deny_reasons: Option<BTreeSet<ReasonCode>>,
    /// Exactly these categories are sent.
    pub sent: Option<BTreeSet<DataCategory>>,
    /// Exactly these policies permitted the categories sent.
    pub permitted_by: Option<BTreeSet<String>>,
    /// For a sent category: exactly these of its fields are carried (the
    /// fields the case holds that the purpose baseline lets through).
    #[serde(default)]
    pub fields: BTreeMap<DataCategory, BTreeSet<String>>,
    /// For each category listed: withheld for exactly these reasons.
    #[serde(default)]
    pub withheld: BTreeMap<DataCategory, Vec<ExpectedWithholding>>,
}

/// A reason, or a reason and the policy that must have given it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ExpectedWithholding {
    Reason(ReasonCode),
    ByPolicy { reason: ReasonCode, policy: String },
}

impl ExpectedWithholding {
    fn reason(&self) -> ReasonCode {
        match self {
            Self::Reason(reason) | Self::ByPolicy { reason, .. } => *reason,
        }
    }
}

/// One test's result: what differed, if anything.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    pub differences: Vec<String>,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Every test of a policy directory, and the DPO policies none exercises.
#[derive(Debug, Clone, Serialize)]
pub struct TestRun {
    pub results: Vec<TestResult>,
    /// The DPO's policies (by `@id`), each with the tests that exercise it:
    /// that permitted a category sent, or withheld one.
    pub coverage: BTreeMap<String, Vec<String>>,
}

impl TestRun {
    pub fn all_passed(&self) -> bool {
        self.results.iter().all(TestResult::passed)
    }

    pub fn unexercised(&self) -> impl Iterator<Item = &String> {
        self.coverage.iter().filter(|(_, tests)| tests.is_empty()).map(|(id, _)| id)
    }
}

fn shown<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

/// The field names a category carries: an object's keys, or those of the
/// objects in a list (family members, documents). Names only, never values.
fn carried_fields(value: &Value) -> BTreeSet<String> {
    match value {
        Value::Object(fields) => fields.keys().cloned().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_object).flat_map(|o| o.keys().cloned()).collect(),
        _ => BTreeSet::new(),
    }
}

fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    }
}

/// The ways `decision` differs from what `test` expects.
fn differences(test: &PolicyTest, decision: &Decision, payload: &Payload) -> Vec<String> {
    let mut found = Vec::new();
    if decision.outcome() != test.outcome {
        found.push(format!("outcome: expected {}, got {}", outcome_text(test.outcome), outcome_text(decision.outcome())));
    }
    if let Some(expected) = test.deny_reasons.as_ref().filter(|e| *e != decision.deny_reasons()) {
        found.push(format!("deny reasons: expected {}, got {}", shown(expected), shown(decision.deny_reasons())));
    }
    if let Some(expected) = &test.sent {
        let sent = decision.sent_categories();
        if *expected != sent {
            found.push(format!("sent: expected {}, got {}", shown(expected), shown(&sent)));
        }
    }
    if let Some(expected) = &test.permitted_by {
        let permitted: BTreeSet<&String> = decision.sent().values().flat_map(|s| &s.permitted_by).collect();
        if expected.iter().collect::<BTreeSet<_>>() != permitted {
            found.push(format!("permitted by: expected {}, got {}", shown(expected), shown(permitted)));
        }
    }
    for (category, expected) in &test.fields {
        match payload.get(*category) {
            None => found.push(format!("fields of {category}: expected it sent, but it is not")),
            Some(value) => {
                let carried = carried_fields(value);
                if carried != *expected {
                    found.push(format!("fields of {category}: expected {}, got {}", shown(expected), shown(&carried)));
                }
            }
        }
    }
    for (category, expected) in &test.withheld {
        let got = decision.withheld().get(category);
        let got_reasons: BTreeSet<ReasonCode> = got.into_iter().flatten().map(|w| w.reason).collect();
        let expected_reasons: BTreeSet<ReasonCode> = expected.iter().map(ExpectedWithholding::reason).collect();
        if got_reasons != expected_reasons {
            found.push(format!(
                "withheld {category}: expected for {}, got {}",
                shown(&expected_reasons),
                if got.is_none() { "not withheld".to_owned() } else { format!("for {}", shown(&got_reasons)) }
            ));
            continue;
        }
        for want in expected {
            if let ExpectedWithholding::ByPolicy { reason, policy } = want {
                let given = got.into_iter().flatten().any(|w| w.reason == *reason && w.policy.as_deref() == Some(policy));
                if !given {
                    found.push(format!("withheld {category}: expected {reason} from {policy}, given by another policy"));
                }
            }
        }
    }
    found
}

/// The DPO policies a decision shows at work.
fn exercised(decision: &Decision) -> BTreeSet<String> {
    let permits = decision.sent().values().flat_map(|s| s.permitted_by.iter().cloned());
    let forbids = decision.withheld().values().flatten().filter_map(|w| w.policy.clone());
    permits.chain(forbids).collect()
}

/// A referral path must stay inside the tests folder, so that the folder
/// travels with the policies as one piece.
fn referral_path(tests_dir: &Path, file: &str, relative: &str) -> Result<PathBuf, PolicyTestError> {
    let path = Path::new(relative);
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(PolicyTestError::Invalid {
            file: file.to_owned(),
            problem: format!("referral \"{relative}\" must be a path inside the tests folder"),
        });
    }
    Ok(tests_dir.join(path))
}

fn read(path: &Path) -> Result<String, PolicyTestError> {
    std::fs::read_to_string(path).map_err(|source| PolicyTestError::Read { path: path.to_path_buf(), source })
}

/// Runs every test in `<policy_dir>/tests/*.toml` against `policy`.
pub fn run(policy_dir: &Path, policy: &DataProtectionPolicy, directory: &Directory) -> Result<TestRun, PolicyTestError> {
    let tests_dir = policy_dir.join(TESTS_FOLDER);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&tests_dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| PolicyTestError::Read { path: tests_dir.clone(), source })?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(PolicyTestError::Read { path: tests_dir, source }),
    };
    files.sort();
    let mut coverage: BTreeMap<String, Vec<String>> = policy.dpo_policies().into_keys().map(|id| (id, Vec::new())).collect();
    let mut results = Vec::new();
    let mut names = BTreeSet::new();
    for path in files {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let invalid = |problem: String| PolicyTestError::Invalid { file: file.clone(), problem };
        let parsed: TestFile = toml::from_str(&read(&path)?).map_err(|e| invalid(e.to_string()))?;
        for test in parsed.tests {
            if !names.insert(test.name.clone()) {
                return Err(invalid(format!("test \"{}\" is named twice", test.name)));
            }
            let referral = referral_path(&tests_dir, &file, &test.referral)?;
            let mut submission = ReferralSubmission::parse(&read(&referral)?, test.at)
                .map_err(|e| invalid(format!("test \"{}\": {}: {e}", test.name, test.referral)))?;
            if let Some(purpose) = test.purpose {
                submission.purpose = purpose;
            }
            let sender = CountryCode::parse(&test.from).map_err(|e| invalid(format!("test \"{}\": from: {e}", test.name)))?;
            let to = match &test.to {
                Some(id) => OrgId::parse(id).map_err(|e| invalid(format!("test \"{}\": to: {e}", test.name)))?,
                None => submission.destination.clone(),
            };
            let recipient = directory.recipient_at(&to, test.at);
            if recipient.is_none() {
                return Err(invalid(format!("test \"{}\": {to} is not in the directory at {}", test.name, test.at)));
            }
            let (decision, payload) = submission.decide_and_minimise(sender, recipient.as_ref(), policy, test.at);
            for id in exercised(&decision) {
                if let Some(tests) = coverage.get_mut(&id) {
                    tests.push(test.name.clone());
                }
            }
            results.push(TestResult { file: file.clone(), name: test.name.clone(), differences: differences(&test, &decision, &payload) });
        }
    }
    Ok(TestRun { results, coverage })
}

impl std::fmt::Display for TestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for result in &self.results {
            writeln!(f, "{}  {} ({})", if result.passed() { "ok    " } else { "FAILED" }, result.name, result.file)?;
            for difference in &result.differences {
                writeln!(f, "          {difference}")?;
            }
        }
        let failed = self.results.iter().filter(|r| !r.passed()).count();
        writeln!(f, "{} tests, {} passed, {failed} failed", self.results.len(), self.results.len() - failed)?;
        let unexercised: Vec<&String> = self.unexercised().collect();
        write!(f, "coverage: {} of {} DPO policies exercised", self.coverage.len() - unexercised.len(), self.coverage.len())?;
        if !unexercised.is_empty() {
            write!(f, "; no test exercises {}", shown(unexercised))?;
        }
        Ok(())
    }
}
