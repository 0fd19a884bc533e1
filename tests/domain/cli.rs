//! The offline command line, run as a built binary from the crate root.
//!
//! Assertion messages never include the command's output: it may hold the
//! (fictional) personal data of a scenario.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::repo_path;

const AT: &str = "2026-11-23T12:00:00Z";
const AVR: &str = "tests/fixtures/referrals/rejected_asylum_avr.json";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_referral-gateway"))
        .args(args)
        .current_dir(repo_path(""))
        .env_remove("RGW_COUNTRY")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("referral-gateway-cli-{}-{name}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).unwrap();
        }
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `policy explain` and parses its JSON report.
fn explain(extra: &[&str]) -> Value {
    let mut args = vec!["policy", "explain", "--from", "ITA", "--at", AT];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert_eq!(output.status.code(), Some(0), "policy explain failed");
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// The keys of a JSON object, sorted (the order of the output is not a contract).
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    keys
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

#[test]
fn policy_check_accepts_the_shipped_policies() {
    let output = run(&["policy", "check", "config/policies"]);
    assert_eq!(output.status.code(), Some(0), "stdout: {}", stdout(&output));
    let text = stdout(&output);
    assert!(text.starts_with("ok: ") && text.contains(" policies in config/policies are valid (version sha256:"), "{text}");
    for line in ["  permit return.return_assistance", "  forbid health.never_to_state_actors"] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in {text}");
    }
}

#[test]
fn policy_check_refuses_an_invalid_file_naming_file_and_line() {
    let dir = TempDir::new("check-invalid");
    dir.write("10-good.cedar", "@id(\"good\")\npermit (principal, action, resource);\n");
    dir.write("20-bad.cedar", "// Tracing.\n@id(\"bad\")\npermit (principal, action, resource)\nwhen { principal.nationality == \"NGA\" };\n");
    let output = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("20-bad.cedar:4:"), "{text}");
    assert!(text.contains("nationality"), "{text}");
    assert!(!text.contains("10-good.cedar"), "{text}");
    assert!(!text.starts_with("ok"), "{text}");
}

#[test]
fn policy_check_refuses_a_directory_without_policies() {
    let dir = TempDir::new("check-empty");
    dir.write("notes.txt", "not a policy");
    let output = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("no *.cedar files"), "{}", stdout(&output));
}

#[test]
fn policy_explain_denies_the_origin_ministry_and_sends_nothing() {
    for policies in ["config/policies", "tests/fixtures/policies/permit-all"] {
        let report = explain(&["--referral", AVR, "--to", "gmb-immigration", "--policies", policies]);
        assert_eq!(report["recipient"]["id"], "gmb-immigration");
        assert_eq!(report["recipient"]["state_actor"], true);
        assert_eq!(report["decided_at"], AT);
        let decision = &report["decision"];
        assert_eq!(decision["outcome"], "deny", "{policies}");
        // Asylum-linked, towards the origin state: end-to-end sealing is
        // required too, but a key would not help: only the firewall is named.
        assert_eq!(decision["end_to_end"], "builtin.asylum_end_to_end", "{policies}");
        assert_eq!(strings(&decision["deny_reasons"]), ["asylum_firewall"], "{policies}");
        assert!(keys(&decision["sent"]).is_empty(), "{policies}: a deny sends nothing");
        assert_eq!(report["payload"], serde_json::json!({}), "{policies}: a deny has an empty payload");
        let identity_reasons: Vec<&str> =
            decision["withheld"]["identity"].as_array().unwrap().iter().filter_map(|w| w["reason"].as_str()).collect();
        assert_eq!(identity_reasons, ["asylum_firewall"]);
        // A deny carries no value from the case.
        let text = report.to_string();
        for personal in ["Lamin", "Jallow", "PC0012345", "Serekunda", "1996-11-30"] {
            assert!(!text.contains(personal), "the deny report holds a value from the case");
        }
    }
}

#[test]
fn policy_explain_to_iom_prints_sent_categories_with_permits_and_the_payload() {
    // Without its asylum history the case is not asylum-linked, so whether
    // IOM Banjul publishes an end-to-end key does not matter here.
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(repo_path(AVR)).unwrap()).unwrap();
    value["case"].as_object_mut().unwrap().remove("asylum");
    let dir = TempDir::new("explain-iom");
    let referral = dir.write("referral.json", &value.to_string());
    let report = explain(&["--referral", referral.to_str().unwrap(), "--to", "gmb-iom-banjul"]);
    let decision = &report["decision"];
    assert_eq!(decision["outcome"], "allow");
    assert!(decision.get("end_to_end").is_none(), "no rule requires end-to-end sealing");
    assert_eq!(decision["purpose"], "return");
    assert!(decision["policy_version"].as_str().unwrap().starts_with("sha256:"));
    let sent = keys(&decision["sent"]);
    assert_eq!(sent, ["contact", "documents", "health", "identity", "protection", "return_logistics"]);
    for category in &sent {
        let permits = strings(&decision["sent"][category]["permitted_by"]);
        assert_eq!(permits, ["return.return_assistance"], "{category}");
    }
    assert_eq!(decision["sent"]["identity"]["fields"], "all");
    assert_eq!(strings(&decision["sent"]["health"]["fields"]), ["fitness_to_travel", "escort_needs"]);
    assert!(decision["withheld"].get("asylum").is_none());
    assert!(decision.get("deny_reasons").is_none(), "an allow has no deny reasons");

    let payload = &report["payload"];
    assert_eq!(keys(payload), sent, "the payload holds exactly the sent categories");
    assert!(payload.get("asylum").is_none());
    assert_eq!(keys(&payload["health"]), ["fitness_to_travel"]);
    assert_eq!(payload["return_logistics"]["destination"]["country"], "GMB");
}

#[test]
fn policy_explain_defaults_to_the_referral_destination() {
    let report = explain(&["--referral", AVR]);
    assert_eq!(report["recipient"]["id"], "gmb-iom-banjul");
    assert_eq!(report, explain(&["--referral", AVR, "--to", "gmb-iom-banjul"]));
}

/// The rejected asylum seeker's return through IOM in The Gambia, the state
/// he left: the packet must be sealed end to end to IOM Banjul's own key, and
/// goes only if the directory lists one.
#[test]
fn policy_explain_names_the_end_to_end_rule_and_a_missing_key() {
    let report = explain(&["--referral", AVR, "--to", "gmb-iom-banjul"]);
    let decision = &report["decision"];
    assert_eq!(decision["end_to_end"], "builtin.asylum_end_to_end");
    let has_key = report["recipient"]["end_to_end_key"].as_bool().unwrap();
    if has_key {
        assert_eq!(decision["outcome"], "allow");
        assert_eq!(keys(&decision["sent"]), ["contact", "documents", "health", "identity", "protection", "return_logistics"]);
    } else {
        assert_eq!(decision["outcome"], "deny");
        assert_eq!(strings(&decision["deny_reasons"]), ["recipient_key_required"]);
        assert_eq!(report["payload"], serde_json::json!({}));
    }
    // The per-category explanation is there either way.
    assert_eq!(decision["withheld"]["asylum"], serde_json::json!([{ "reason": "not_needed_for_purpose" }]));
}

#[test]
fn policy_explain_to_an_unknown_recipient_denies() {
    let report = explain(&["--referral", AVR, "--to", "xyz-not-in-directory"]);
    assert!(report["recipient"].is_null());
    assert_eq!(strings(&report["decision"]["deny_reasons"]), ["recipient_unknown"]);
    assert_eq!(report["payload"], serde_json::json!({}));
}

#[test]
fn policy_explain_refuses_an_invalid_referral_without_repeating_it() {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(repo_path(AVR)).unwrap()).unwrap();
    value["subject_ref"] = Value::String("Zyxwvut Quintana".to_owned());
    let dir = TempDir::new("explain-invalid");
    let referral = dir.write("referral.json", &value.to_string());
    let output = run(&["policy", "explain", "--from", "ITA", "--at", AT, "--referral", referral.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).is_empty());
    let text = stderr(&output);
    assert!(text.contains("subject_ref"), "the error does not name the field");
    assert!(!text.contains("Zyxwvut") && !text.contains("Quintana"), "the error repeats the submitted value");
}

#[test]
fn schema_referral_prints_the_committed_schema() {
    let output = run(&["schema", "referral"]);
    assert_eq!(output.status.code(), Some(0));
    let committed = std::fs::read_to_string(repo_path("schemas/referral.schema.json")).unwrap();
    assert!(stdout(&output) == committed, "`schema referral` differs from schemas/referral.schema.json");
}

#[test]
fn schema_openapi_prints_the_served_self_contained_document() {
    let output = run(&["schema", "openapi"]);
    assert_eq!(output.status.code(), Some(0));
    let printed: serde_json::Value = serde_norway::from_str(&stdout(&output)).unwrap();
    assert!(printed == referral_gateway::http::openapi_json().unwrap(), "`schema openapi` differs from the served document");
    let committed = std::fs::read_to_string(repo_path("schemas/openapi.yaml")).unwrap();
    assert!(stdout(&output) == committed, "`schema openapi` differs from schemas/openapi.yaml");
    assert!(printed["components"]["schemas"]["ReferralSubmission"].is_object(), "the referral schema is not bundled");
    assert!(!stdout(&output).contains("referral.schema.json"), "an external reference is left");
}

#[test]
fn the_demo_runs_the_three_country_federation_and_exits_0() {
    let dir = TempDir::new("demo");
    let output = run(&["demo", "--dir", dir.0.to_str().unwrap()]);
    assert!(output.status.success(), "demo failed: {}", stderr(&output));
    let out = stdout(&output);
    for line in [
        "Three gateways are up",
        "queued -> delivered -> forwarded -> accepted -> handover -> arrived -> services_delivered -> closed",
        "Refused in Italy before anything left: HTTP 422, reasons asylum_firewall",
        "The immigration department's inbox at the Gambian gateway: empty",
        "The Guinean Red Cross took the request and is searching: Italy shows it in_progress",
        "Guinea's own evaluation found one: the daughter sought agrees with its subject in 5 families of keys, and the mother with the relative it seeks in 5",
        "Guinea's search: match_found matched_at:ITA handle:",
        "Italy's: match_found matched_by:GIN asking_org:gin-red-cross asking_referral:",
        "It is in the Italian Red Cross's inbox as the answer to its request (answers_referral), purpose \"tracing_reply\": categories identity, contact, tracing_wishes",
        "The Red Cross closed the request: \"closed\" with reason [\"family_traced\"]",
        "-> in_progress -> match_found -> reply_received -> closed -> withdrawn -> ",
        "The assessment came back, under the mother's consent, to the Italian Red Cross's inbox (answers_referral), purpose \"family_assessment\": categories identity, family_assessment",
        "Refused by the Gambian gateway: packet-undecryptable",
        "The Guinean gateway destroyed its key for the case and confirmed, signed: erased_at_gateway",
        "The Red Cross's inbox lists the case as erased; reading it now answers HTTP 410",
        "-> closed -> withdrawn -> ",
        "erasure_confirmed; erasure \"confirmed\"",
        "Italy's DPO (not the submitter) reviewed the codes, never the case, and approved: \"approved\"",
        "Timeline: awaiting_override -> override_approved -> delivered",
        "Priority \"emergency\"",
        "Five hours on, IOM Banjul has not acknowledged it: the referral shows overdue \"acknowledgement\"",
        "The case came with onward limits decided in Italy: to ngo only",
        "The centre asks to pass it to the Department of Social Welfare: refused by the Gambian gateway, \"onward_not_consented\"",
        "To the reintegration NGO in Banjul: passed on, identity, contact only",
        "social_welfare refused onward_not_consented",
        "onward_1 ngo referred",
        "onward_1 ngo accepted",
        "Italy's timeline shows it: onward_1 ngo erasure_confirmed",
        "All steps behaved as the federation promises",
    ] {
        assert!(out.contains(line), "the narration lacks: {line}");
    }
    assert_eq!(out.matches(" entries, intact ").count(), 3, "three audit chains verified");
    // The narration names categories and codes, never a person.
    let case: Value = serde_json::from_str(&std::fs::read_to_string(repo_path(AVR)).unwrap()).unwrap();
    for value in [&case["case"]["identity"]["family_name"], &case["case"]["identity"]["given_names"]] {
        assert!(!out.contains(value.as_str().unwrap()), "a name in the narration");
    }
    // Nor the girl's or her mother's, whose searches met in step 4 (and whose household was assessed in step 5).
    for name in ["Mariama", "Fatoumata", "Camara"] {
        assert!(!out.contains(name), "a name in the narration: {name}");
    }
    // A second run starts afresh in the same directory.
    assert!(run(&["demo", "--dir", dir.0.to_str().unwrap()]).status.success());
}

#[test]
fn the_demo_refuses_to_clear_a_directory_it_did_not_make() {
    let dir = TempDir::new("not-a-demo");
    std::fs::write(dir.0.join("precious.txt"), "keep me").unwrap();
    let output = run(&["demo", "--dir", dir.0.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("is not a demo directory"));
    assert!(dir.0.join("precious.txt").exists());
}

/// The coordinator's side: a member's entry from `init` goes into a new
/// directory, which is signed and verifies; an existing directory is never
/// replaced by a new one, and a member sent again replaces its own entry.
#[test]
fn add_member_builds_signs_and_never_starts_over_an_existing_directory() {
    let dir = TempDir::new("add-member");
    let path = |name: &str| dir.0.join(name).to_str().unwrap().to_owned();
    assert!(run(&["keys", "coordinator", "--dir", &path("coordinator")]).status.success());
    let init = run(&["init", "--country", "GMB", "--dir", &path("gmb"), "--endpoint", "https://gateway.gmb.example:9443"]);
    assert!(init.status.success(), "{}", stderr(&init));
    // Init never overwrites: a second run into the same directory is refused and changes nothing.
    let entry = std::fs::read_to_string(dir.0.join("gmb/directory-entry.json")).unwrap();
    let again = run(&["init", "--country", "GMB", "--dir", &path("gmb"), "--endpoint", "https://gateway.gmb.example:9443"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(dir.0.join("gmb/directory-entry.json")).unwrap(), entry);

    let (json, entry) = (path("directory.json"), path("gmb/directory-entry.json"));
    let added = run(&["directory", "add-member", "--entry", &entry, "--out", &json, "--sign", "--coordinator-key", &path("coordinator/coordinator.jwk")]);
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(
        stdout(&added),
        format!("ok: GMB added in edition 1 (0 organisations of GMB), written to {json}\nok: edition 1 signed into {}\n", path("directory.jws"))
    );
    let verified = run(&["directory", "verify", "--coordinator", &path("coordinator/coordinator.pub.jwk"), &path("directory.jws")]);
    assert!(stdout(&verified).starts_with("ok: edition 1, 0 organisations"), "{}", stdout(&verified));

    // Without --directory, an existing --out would be lost: refused.
    let written = std::fs::read_to_string(&json).unwrap();
    let refused = run(&["directory", "add-member", "--entry", &entry, "--out", &json]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("pass it as --directory"), "{}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(&json).unwrap(), written);

    // The same member again: replaced, not added twice, in the next edition.
    let replaced = run(&["directory", "add-member", "--directory", &json, "--entry", &entry, "--out", &json]);
    assert!(stdout(&replaced).starts_with("ok: GMB replaced in edition 2"), "{}", stdout(&replaced));
    let directory: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(directory["gateways"].as_array().unwrap().len(), 1);
    assert_eq!(directory["gateways"][0]["endpoint"], "https://gateway.gmb.example:9443");
}
