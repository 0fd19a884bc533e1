//! Shared fixtures: the shipped directory and policies, the scenario referrals,
//! and a fixed clock.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use referral_gateway::directory::Directory;
use referral_gateway::domain::decide::decide;
use referral_gateway::domain::decision::Decision;
use referral_gateway::domain::minimise::{minimise, Payload};
use referral_gateway::domain::policy::DataProtectionPolicy;
use referral_gateway::domain::submission::ReferralSubmission;
use referral_gateway::domain::{CountryCode, OrgId};
use referral_gateway::policy_files;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The time every scenario is decided at: the instant the fixtures are
/// written for, the one time source of every test.
pub fn now() -> DateTime<Utc> {
    referral_gateway::demo::fixtures::written_at()
}

pub fn italy() -> CountryCode {
    CountryCode::parse("ITA").unwrap()
}

pub fn directory() -> &'static Directory {
    static DIRECTORY: OnceLock<Directory> = OnceLock::new();
    DIRECTORY.get_or_init(|| {
        Directory::parse(&std::fs::read_to_string(repo_path("config/directory.example.json")).unwrap()).unwrap()
    })
}

/// The DPO policies shipped in `config/policies`.
pub fn default_policy() -> &'static DataProtectionPolicy {
    static POLICY: OnceLock<DataProtectionPolicy> = OnceLock::new();
    POLICY.get_or_init(|| policy_files::load(&repo_path("config/policies")).unwrap())
}

/// A reckless DPO policy that permits everything: only the built-in rules stand.
pub fn permit_all_policy() -> &'static DataProtectionPolicy {
    static POLICY: OnceLock<DataProtectionPolicy> = OnceLock::new();
    POLICY.get_or_init(|| policy_files::load(&repo_path("tests/fixtures/policies/permit-all")).unwrap())
}

/// Every scenario fixture, by file name without extension.
pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_path("tests/fixtures/referrals"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("tests/fixtures/referrals/{name}.json"))).unwrap()
}

pub fn fixture(name: &str) -> ReferralSubmission {
    ReferralSubmission::parse(&fixture_text(name), now()).unwrap()
}

/// Decides `submission` for `to` (an organisation id from the example directory).
pub fn decide_for(submission: &ReferralSubmission, to: &str, policy: &DataProtectionPolicy) -> (Decision, Payload) {
    let recipient = directory().recipient(&OrgId::parse(to).unwrap());
    let decision = decide(
        &submission.case,
        &submission.consent,
        italy(),
        recipient.as_ref(),
        submission.purpose,
        policy,
        now(),
    );
    let payload = minimise(&submission.case, &decision);
    (decision, payload)
}
