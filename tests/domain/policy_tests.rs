//! `referral-gateway policy test`: a DPO's expected decisions beside the
//! policies (`config/policies/tests/`), with coverage (issue 19 §3).
//!
//! Run as a built binary. The referrals are fictional, and no output may
//! repeat any of their values: the tests check a few of them.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::cli::TempDir;
use crate::support::repo_path;

fn policy_test(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["policy", "test"])
        .arg(dir)
        .args(extra)
        .current_dir(repo_path(""))
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Values of the fixtures that must never be printed.
const PERSONAL_VALUES: &[&str] = &["Emeka", "Okonkwo", "ITA-2026-000202", "+234"];

fn assert_no_personal_data(output: &Output) {
    let all = format!("{}{}", stdout(output), String::from_utf8_lossy(&output.stderr));
    for value in PERSONAL_VALUES {
        assert!(!all.contains(value), "the output repeats a value of a referral");
    }
}

/// A copy of the shipped policy directory, tests and referrals included.
pub(crate) fn shipped_copy(name: &str) -> TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
            }
        }
    }
    let dir = TempDir::new(name);
    copy(&repo_path("config/policies"), dir.path());
    dir
}

#[test]
fn the_shipped_tests_pass_and_exercise_every_shipped_policy() {
    let output = policy_test(&repo_path("config/policies"), &[]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(text.contains("21 tests, 21 passed, 0 failed"), "{text}");
    assert!(text.ends_with("coverage: 13 of 13 DPO policies exercised\n"), "{text}");
    assert_no_personal_data(&output);

    let json = policy_test(&repo_path("config/policies"), &["--json"]);
    let run: Value = serde_json::from_slice(&json.stdout).unwrap();
    let coverage = run["coverage"].as_object().unwrap();
    assert_eq!(coverage.len(), 13);
    assert_eq!(coverage["asylum.only_to_unhcr"], serde_json::json!(["dual_national_asylum_history_only_to_unhcr"]));
}

/// The referrals beside the shipped tests are the guide's scenario fixtures;
/// a change to one must be made to the other.
#[test]
fn the_shipped_test_referrals_are_the_scenario_fixtures() {
    for entry in std::fs::read_dir(repo_path("tests/fixtures/referrals")).unwrap() {
        let path = entry.unwrap().path();
        let copy = repo_path("config/policies/tests/referrals").join(path.file_name().unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&copy).unwrap(), "{}", copy.display());
    }
}

/// Without the DPO's restrictions, the tests that expect them fail, each
/// saying what differs, in names only.
#[test]
fn removing_a_restriction_fails_the_tests_that_expect_it() {
    let dir = shipped_copy("policy-tests-no-restrictions");
    std::fs::remove_file(dir.path().join("20-restrictions.cedar")).unwrap();
    let output = policy_test(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("FAILED  returnee_health_never_to_the_state_employment_service (scenarios.toml)"), "{text}");
    assert!(text.contains("FAILED  trafficking_victim_exploitation_kept_from_naptip (scenarios.toml)"), "{text}");
    // NAPTIP now receives the protection category: sent, and not withheld.
    assert!(text.contains("          sent: expected identity, contact, reintegration_needs, got identity, contact, protection, reintegration_needs"), "{text}");
    assert!(text.contains("          withheld protection: expected for policy_forbid, got not withheld"), "{text}");
    assert!(text.contains("ok      girl_tracing_to_the_red_cross"), "{text}");
    assert!(text.contains("coverage: 9 of 9 DPO policies exercised"), "{text}");
    assert_no_personal_data(&output);
}

/// Every kind of expectation is checked: a wrong one of each fails.
#[test]
fn each_kind_of_expectation_is_checked() {
    let dir = shipped_copy("policy-tests-wrong-expectations");
    std::fs::remove_file(dir.path().join("tests/scenarios.toml")).unwrap();
    dir.write(
        "tests/wrong.toml",
        r#"
[[test]]
name = "wrong_outcome_and_reasons"
referral = "referrals/rejected_asylum_avr.json"
to = "gmb-immigration"
from = "ITA"
at = "2026-11-23T12:00:00Z"
outcome = "allow"
deny_reasons = ["consent_refused"]

[[test]]
name = "wrong_sent_permits_fields_and_withholdings"
referral = "referrals/returnee_hiv_reintegration.json"
to = "nga-health-lagos"
from = "ITA"
at = "2026-11-23T12:00:00Z"
outcome = "allow"
sent = ["identity", "health"]
permitted_by = ["reintegration.livelihood"]
fields.health = ["conditions"]
fields.documents = ["passport"]
withheld.protection = ["consent_refused"]
withheld.asylum = ["not_needed_for_purpose"]

[[test]]
name = "wrong_policy_behind_a_withholding"
referral = "referrals/trafficking_victim_reintegration.json"
to = "nga-naptip"
from = "ITA"
at = "2026-11-23T12:00:00Z"
outcome = "allow"
withheld.protection = [{ reason = "policy_forbid", policy = "health.never_to_state_actors" }]
"#,
    );
    let output = policy_test(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    for line in [
        "FAILED  wrong_outcome_and_reasons (wrong.toml)",
        "          outcome: expected allow, got deny",
        "          deny reasons: expected consent_refused, got asylum_firewall",
        "FAILED  wrong_sent_permits_fields_and_withholdings (wrong.toml)",
        "          sent: expected identity, health, got identity, contact, health",
        "          permitted by: expected reintegration.livelihood, got reintegration.health_providers",
        "          fields of health: expected conditions, got conditions, medication_needs",
        "          fields of documents: expected it sent, but it is not",
        "          withheld protection: expected for consent_refused, got for consent_not_given",
        "          withheld asylum: expected for not_needed_for_purpose, got not withheld",
        "FAILED  wrong_policy_behind_a_withholding (wrong.toml)",
        "          withheld protection: expected policy_forbid from health.never_to_state_actors, given by another policy",
        "3 tests, 0 passed, 3 failed",
        "coverage: 3 of 13 DPO policies exercised; no test exercises asylum.only_to_unhcr, case_notes.never_to_state_actors,",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert_no_personal_data(&output);
}

#[test]
fn a_referral_outside_the_tests_folder_is_refused() {
    let dir = shipped_copy("policy-tests-escape");
    dir.write(
        "tests/scenarios.toml",
        "[[test]]\nname = \"escape\"\nreferral = \"../../secret.json\"\nfrom = \"ITA\"\nat = \"2026-11-23T12:00:00Z\"\noutcome = \"deny\"\n",
    );
    let output = policy_test(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("scenarios.toml: referral \"../../secret.json\" must be a path inside the tests folder"), "{error}");
}
