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
    /// Decide as if the recipient published (or not) an end-to-end key,
    /// whatever the directory says now: a test of the end-to-end rules then
    /// holds on any gateway's directory.
    pub recipient_publishes_key: Option<bool>,
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
/// travels with the policies as one piece (on disk, or in an upload).
fn inside_tests_folder(file: &str, relative: &str) -> Result<Vec<String>, PolicyTestError> {
    let path = Path::new(relative);
    let escapes = path.is_absolute() || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(PolicyTestError::Invalid {
            file: file.to_owned(),
            problem: format!("referral \"{relative}\" must be a path inside the tests folder"),
        });
    }
    Ok(path
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect())
}

/// Where the tests and their referrals are read from.
pub trait TestFiles {
    /// The test files (`*.toml` directly in the tests folder), by name, in order.
    fn test_files(&self) -> Result<Vec<String>, PolicyTestError>;
    /// A file of the tests folder, by its path's parts.
    fn read(&self, parts: &[String]) -> Result<String, PolicyTestError>;
}

/// The tests folder of a policy directory on disk.
pub struct TestsFolder(pub PathBuf);

impl TestsFolder {
    pub fn of(policy_dir: &Path) -> Self {
        Self(policy_dir.join(TESTS_FOLDER))
    }
}

impl TestFiles for TestsFolder {
    fn test_files(&self) -> Result<Vec<String>, PolicyTestError> {
        let tests_dir = &self.0;
        let mut files: Vec<String> = match std::fs::read_dir(tests_dir) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| PolicyTestError::Read { path: tests_dir.clone(), source })?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(PolicyTestError::Read { path: tests_dir.clone(), source }),
        };
        files.sort();
        Ok(files)
    }

    fn read(&self, parts: &[String]) -> Result<String, PolicyTestError> {
        let path = parts.iter().fold(self.0.clone(), |path, part| path.join(part));
        std::fs::read_to_string(&path).map_err(|source| PolicyTestError::Read { path, source })
    }
}

/// The tests of an uploaded policy set: its files named `tests/...`.
pub struct UploadedTests<'a>(pub &'a BTreeMap<String, String>);

impl UploadedTests<'_> {
    fn key(parts: &[String]) -> String {
        std::iter::once(TESTS_FOLDER).chain(parts.iter().map(String::as_str)).collect::<Vec<_>>().join("/")
    }
}

impl TestFiles for UploadedTests<'_> {
    fn test_files(&self) -> Result<Vec<String>, PolicyTestError> {
        let prefix = format!("{TESTS_FOLDER}/");
        Ok(self
            .0
            .keys()
            .filter_map(|name| name.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/') && rest.ends_with(".toml"))
            .map(str::to_owned)
            .collect())
    }

    fn read(&self, parts: &[String]) -> Result<String, PolicyTestError> {
        let key = Self::key(parts);
        self.0.get(&key).cloned().ok_or_else(|| PolicyTestError::Invalid {
            file: key.clone(),
            problem: "is not among the uploaded files".to_owned(),
        })
    }
}

/// Runs every test in `<policy_dir>/tests/*.toml` against `policy`.
pub fn run(policy_dir: &Path, policy: &DataProtectionPolicy, directory: &Directory) -> Result<TestRun, PolicyTestError> {
    run_from(&TestsFolder::of(policy_dir), policy, directory)
}

/// Runs every test `files` holds against `policy`.
pub fn run_from(files: &dyn TestFiles, policy: &DataProtectionPolicy, directory: &Directory) -> Result<TestRun, PolicyTestError> {
    let mut coverage: BTreeMap<String, Vec<String>> = policy.dpo_policies().into_keys().map(|id| (id, Vec::new())).collect();
    let mut results = Vec::new();
    let mut names = BTreeSet::new();
    for file in files.test_files()? {
        let invalid = |problem: String| PolicyTestError::Invalid { file: file.clone(), problem };
        let parsed: TestFile = toml::from_str(&files.read(std::slice::from_ref(&file))?).map_err(|e| invalid(e.to_string()))?;
        for test in parsed.tests {
            if !names.insert(test.name.clone()) {
                return Err(invalid(format!("test \"{}\" is named twice", test.name)));
            }
            let referral = inside_tests_folder(&file, &test.referral)?;
            let mut submission = ReferralSubmission::parse(&files.read(&referral)?, test.at)
                .map_err(|e| invalid(format!("test \"{}\": {}: {e}", test.name, test.referral)))?;
            if let Some(purpose) = test.purpose {
                submission.purpose = purpose;
            }
            let sender = CountryCode::parse(&test.from).map_err(|e| invalid(format!("test \"{}\": from: {e}", test.name)))?;
            let to = match &test.to {
                Some(id) => OrgId::parse(id).map_err(|e| invalid(format!("test \"{}\": to: {e}", test.name)))?,
                None => submission.destination.clone(),
            };
            let Some(mut recipient) = directory.recipient_at(&to, test.at) else {
                return Err(invalid(format!("test \"{}\": {to} is not in the directory at {}", test.name, test.at)));
            };
            if let Some(has_key) = test.recipient_publishes_key {
                recipient = recipient.with_end_to_end_key(has_key);
            }
            let recipient = Some(recipient);
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
