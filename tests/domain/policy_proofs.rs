//! `referral-gateway policy prove`: the machine proofs of the built-in rules
//! (issue 19 §1), run as a built binary on the cvc5 solver.
//!
//! The solver: `CVC5` (a cvc5 program) or `CVC5_PYTHON` (an interpreter with
//! PyPI's cvc5) if set; otherwise PyPI's cvc5 is installed once into
//! `target/cvc5-venv` (python3 with venv is needed, as for the OpenAPI fuzzer).
//! Each refutation test changes one thing in the shipped rules and expects the
//! prover to name it, with a counterexample that shows it.

use std::process::{Command, Output};

use serde_json::Value;

use crate::cli::TempDir;
use crate::support::repo_path;

const BUILTIN: &str = include_str!("../../src/domain/policy/builtin.cedar");

#[path = "../common/solver.rs"]
mod solver;
pub(crate) use solver::solver_env;

fn prove(args: &[&str]) -> Output {
    let (name, value) = solver_env();
    Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["policy", "prove"])
        .args(args)
        .current_dir(repo_path(""))
        .env_remove("CVC5")
        .env_remove("CVC5_PYTHON")
        .env(name, value)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Proves the shipped DPO policies against built-in rules changed by `change`.
fn prove_changed_builtin(name: &str, change: impl Fn(&str) -> String) -> (Output, Value) {
    let changed = change(BUILTIN);
    assert_ne!(changed, BUILTIN, "the change must change the rules");
    let dir = TempDir::new(&format!("proofs-{name}"));
    let rules = dir.write("builtin.cedar", &changed);
    let rules = rules.to_str().unwrap();
    let text = prove(&["config/policies", "--builtin-rules", rules]);
    let json = prove(&["config/policies", "--builtin-rules", rules, "--json"]);
    (text, serde_json::from_slice(&json.stdout).unwrap())
}

/// The properties that failed, by their text (the first line of each).
fn refuted(output: &Output) -> Vec<String> {
    stdout(output).lines().filter_map(|l| l.strip_prefix("REFUTED  ")).map(str::to_owned).collect()
}

/// The counterexamples of the property whose `kind` (and `rule`, if given) match.
fn counterexamples<'a>(report: &'a Value, kind: &str, rule: Option<&str>) -> &'a Vec<Value> {
    let outcome = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["property"]["kind"] == kind && rule.is_none_or(|r| o["property"]["rule"] == r))
        .unwrap_or_else(|| panic!("no outcome {kind} {rule:?}"));
    outcome["counterexamples"].as_array().unwrap()
}

#[test]
fn the_shipped_rules_and_policies_are_proved() {
    let output = prove(&["config/policies"]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert_eq!(refuted(&output), Vec::<String>::new());
    assert!(text.contains("proved   the built-in rules deny everything the specification requires, whatever a DPO permits"));
    assert!(text.contains("proved   this policy set denies everything the specification requires"));
    // Every built-in rule is matched to its specification, can apply, never errors.
    for rule in BUILTIN.lines().filter_map(|l| l.strip_prefix("@id(\"")).map(|l| l.trim_end_matches("\")")) {
        assert!(text.contains(&format!("proved   {rule} forbids exactly what spec.")), "{rule}");
        assert!(text.contains(&format!("proved   {rule} can apply (for ")), "{rule}");
        assert!(text.contains(&format!("proved   {rule} never raises an evaluation error")), "{rule}");
    }
    // And every DPO policy never errors.
    assert!(text.contains("proved   asylum.only_to_unhcr never raises an evaluation error"));
    assert!(text.lines().last().unwrap().ends_with("proved, 0 refuted"));
}

/// The fixture CI keeps: the firewall forgets the state an authority acts for.
#[test]
fn the_weakened_fixture_is_refuted_with_a_consulate_of_the_origin_state() {
    let output = prove(&["config/policies", "--builtin-rules", "tests/fixtures/policy-proofs/weakened-builtin.cedar"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let refuted = refuted(&output);
    assert!(refuted.contains(&"the built-in rules deny everything the specification requires, whatever a DPO permits".to_owned()), "{text}");
    assert!(refuted.contains(&"this policy set denies everything the specification requires".to_owned()), "{text}");
    assert!(refuted.iter().any(|r| r.starts_with("builtin.asylum_firewall forbids exactly what")), "{text}");
    // In plain words, never SMT.
    assert!(!text.contains("define-fun") && !text.contains("(assert"), "{text}");
    let json = prove(&["config/policies", "--builtin-rules", "tests/fixtures/policy-proofs/weakened-builtin.cedar", "--json"]);
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    let found = counterexamples(&report, "builtin_rules_cannot_be_loosened", None);
    assert_eq!(found.len(), 7, "one per action: each of the six purposes, and refer_onward");
    for example in found {
        let recipient = &example["recipient"];
        assert_eq!(recipient["state_actor"], true);
        assert_eq!(recipient["acts_for_origin_state"], true);
        assert_eq!(recipient["sits_in_origin_state"], false);
        assert_eq!(example["case"]["asylum_linked"], true);
        assert_eq!(example["consent_covers"], true);
    }
}

/// Over-blocking: a firewall that also stopped non-state bodies in the origin
/// country (a Red Cross society tracing a family) is not its specification.
#[test]
fn a_firewall_that_blocks_ngos_in_the_origin_country_is_refuted() {
    let (output, report) = prove_changed_builtin("over-blocking", |rules| {
        rules.replacen("  context.case.asylum_linked &&\n  principal.state_actor &&\n", "  context.case.asylum_linked &&\n", 1)
    });
    assert_eq!(output.status.code(), Some(1));
    // Still safe: it denies at least what must be denied.
    let refuted = refuted(&output);
    assert!(!refuted.iter().any(|r| r.starts_with("the built-in rules deny everything")), "{refuted:?}");
    assert!(refuted.iter().any(|r| r.starts_with("builtin.asylum_firewall forbids exactly what")), "{refuted:?}");
    let found = counterexamples(&report, "builtin_rule_matches_specification", Some("builtin.asylum_firewall"));
    assert!(!found.is_empty());
    for example in found {
        assert_eq!(example["recipient"]["state_actor"], false, "{example}");
        assert_eq!(example["case"]["asylum_linked"], true, "{example}");
    }
}

/// A scope mistake: a rule that can never match is dead, and found.
#[test]
fn a_built_in_rule_that_can_never_apply_is_refuted() {
    let (output, report) = prove_changed_builtin("dead-rule", |rules| {
        rules.replacen(
            "when { context.case.child && !context.case.consent_by_guardian };",
            "when { context.case.child && !context.case.consent_by_guardian && !context.case.child };",
            1,
        )
    });
    assert_eq!(output.status.code(), Some(1));
    let refuted = refuted(&output);
    assert!(refuted.contains(&"builtin.child_guardian_consent can apply".to_owned()), "{refuted:?}");
    // The loss shows as a gap against the specification too, with a child.
    for example in counterexamples(&report, "builtin_rules_cannot_be_loosened", None) {
        assert_eq!(example["case"]["child"], true, "{example}");
        assert_eq!(example["case"]["consent_by_guardian"], false, "{example}");
    }
}

/// A new built-in rule needs its own specification before it can be proved.
#[test]
fn a_built_in_rule_without_a_specification_is_refuted() {
    let (output, _) = prove_changed_builtin("unspecified", |rules| {
        format!(
            "{rules}\n@id(\"builtin.no_health_to_immigration\")\n@reason(\"policy_forbid\")\nforbid (principal, action, resource == Category::\"health\")\nwhen {{ principal.kind == Kind::\"immigration\" }};\n"
        )
    });
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(refuted(&output), vec!["builtin.no_health_to_immigration has one specification rule".to_owned()]);
}

/// A DPO policy that can fail to evaluate is found (the gateway withholds
/// when one does: `a_policy_that_fails_to_evaluate_withholds`).
#[test]
fn a_dpo_policy_that_can_error_is_refuted() {
    let dir = TempDir::new("proofs-erroring-policy");
    dir.write("10-permits.cedar", include_str!("../../config/policies/10-permits.cedar"));
    dir.write(
        "30-limits.cedar",
        "@id(\"limits.overflow\")\nforbid (principal, action, resource)\nwhen { context.case.child && 9223372036854775807 + 1 > 0 };\n",
    );
    let output = prove(&[dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(refuted(&output), vec!["limits.overflow never raises an evaluation error".to_owned()]);
    let text = stdout(&output);
    assert!(text.contains("case: asylum-linked: ") && text.contains("child: yes"), "{text}");
}

fn compare(active: &std::path::Path, new: &std::path::Path) -> Value {
    let (name, value) = solver_env();
    let output = Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(["policy", "compare"])
        .arg(active)
        .arg(new)
        .arg("--json")
        .current_dir(repo_path(""))
        .env_remove("CVC5")
        .env_remove("CVC5_PYTHON")
        .env(name, value)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

const NARROWING: &str = "\n@id(\"identity.never_to_immigration\")\nforbid (principal, action, resource == Category::\"identity\")\nwhen { principal.kind == Kind::\"immigration\" };\n";
const WIDENING: &str = "\n@id(\"reintegration.shelters\")\npermit (principal, action == Action::\"reintegration\", resource)\nwhen { principal.services.contains(Service::\"shelter\") && resource == Category::\"identity\" };\n";

/// A new version is labelled against the active one, for every request,
/// with requests that flip; a reordered or reworded set is `equivalent`.
#[test]
fn a_new_version_is_labelled_against_the_active_one() {
    let active = repo_path("config/policies");
    let append = |dir: &TempDir, file: &str, text: &str| {
        let path = dir.path().join(file);
        let before = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{before}{text}")).unwrap();
    };

    // The same permits, split into two files and reworded: nothing changes.
    let same = crate::policy_tests::shipped_copy("compare-same");
    let permits = std::fs::read_to_string(same.path().join("10-permits.cedar")).unwrap();
    let reworded = permits.replace(
        "when { principal.services.contains(Service::\"family_tracing\") };",
        "when { [Service::\"family_tracing\"].containsAll([Service::\"family_tracing\"]) && principal.services.containsAny([Service::\"family_tracing\"]) };",
    );
    assert_ne!(reworded, permits);
    std::fs::write(same.path().join("10-permits.cedar"), reworded).unwrap();
    let report = compare(&active, same.path());
    assert_eq!(report["label"], "equivalent", "{report}");
    assert_eq!(report["now_allowed"], serde_json::json!([]));
    assert_eq!(report["now_denied"], serde_json::json!([]));

    let narrow = crate::policy_tests::shipped_copy("compare-narrow");
    append(&narrow, "20-restrictions.cedar", NARROWING);
    let report = compare(&active, narrow.path());
    assert_eq!(report["label"], "narrows", "{report}");
    assert_eq!(report["now_allowed"], serde_json::json!([]));
    for example in report["now_denied"].as_array().unwrap() {
        assert_eq!(example["recipient"]["kind"], "immigration", "{example}");
        assert_eq!(example["category"], "identity", "{example}");
    }

    let wide = crate::policy_tests::shipped_copy("compare-wide");
    append(&wide, "10-permits.cedar", WIDENING);
    let report = compare(&active, wide.path());
    assert_eq!(report["label"], "widens", "{report}");
    let gained = report["now_allowed"].as_array().unwrap();
    assert_eq!(gained.len(), 1, "reintegration only: {report}");
    assert_eq!(gained[0]["purpose"], "reintegration");
    assert_eq!(gained[0]["category"], "identity");
    assert!(gained[0]["recipient"]["services"].as_array().unwrap().contains(&Value::from("shelter")));

    let mixed = crate::policy_tests::shipped_copy("compare-mixed");
    append(&mixed, "10-permits.cedar", WIDENING);
    append(&mixed, "20-restrictions.cedar", NARROWING);
    let report = compare(&active, mixed.path());
    assert_eq!(report["label"], "mixed", "{report}");
    assert!(!report["now_allowed"].as_array().unwrap().is_empty() && !report["now_denied"].as_array().unwrap().is_empty());
}
