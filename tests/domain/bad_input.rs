//! Bad input: every refusal names the field (or the policy file and line) and
//! the rule broken, never panics, and never repeats the submitted value, which
//! may be a name, a date of birth or a note.
//!
//! The bad values are distinctive fakes so that an echo cannot go unnoticed.

use chrono::Duration;
use referral_gateway::domain::policy::{PolicyError, PolicyProblem, PolicySource, DataProtectionPolicy};
use referral_gateway::domain::submission::{ReferralSubmission, SubmissionError};
use serde_json::{json, Value};

use crate::support::{fixture, fixture_names, fixture_text, now};

// ---------------------------------------------------------------------------
// Referral submissions
// ---------------------------------------------------------------------------

const NAME: &str = "Zyxwvut Quintana";

fn girl() -> Value {
    serde_json::from_str(&fixture_text("unaccompanied_girl_tracing")).unwrap()
}

fn refused(text: &str) -> SubmissionError {
    match ReferralSubmission::parse(text, now()) {
        Ok(_) => panic!("a bad submission was accepted"),
        Err(error) => error,
    }
}

fn refused_variant(change: impl FnOnce(&mut Value)) -> SubmissionError {
    let mut value = girl();
    change(&mut value);
    refused(&value.to_string())
}

/// The error names `field` with a problem containing `problem`, and neither its
/// text nor its debug form repeats any of `secrets`.
fn assert_names_field(error: &SubmissionError, field: &str, problem: &str, secrets: &[&str]) {
    let fields: Vec<&str> = error.problems().iter().map(|p| p.field.as_str()).collect();
    let found = error.problems().iter().find(|p| p.field == field);
    assert!(found.is_some(), "expected a problem at {field}, got problems at {fields:?}");
    let found = found.unwrap();
    assert!(found.problem.contains(problem), "{field}: expected a problem saying {problem:?}");
    let shown = error.to_string();
    assert!(shown.contains(field), "the message does not name {field}");
    assert_no_echo(error, secrets);
}

fn assert_no_echo(error: &SubmissionError, secrets: &[&str]) {
    let shown = error.to_string();
    let debug = format!("{error:?}");
    for secret in secrets {
        assert!(!shown.contains(secret) && !debug.contains(secret), "the error repeats the submitted value");
    }
}

#[test]
fn the_fixtures_parse() {
    // The baseline for every variant below: the unchanged body is accepted.
    assert!(ReferralSubmission::parse(&girl().to_string(), now()).is_ok());
}

#[test]
fn malformed_json_reports_line_and_column_only() {
    let text = "{\n  \"purpose\": \"return\",\n  \"destination\": ,\n}";
    let error = refused(text);
    assert_eq!(error, SubmissionError::Syntax { line: 3, column: 18 });
    assert_eq!(error.to_string(), "malformed JSON at line 3, column 18");

    // A trailing comma right after a name: the name is not repeated.
    let text = format!("{{\"case\": {{\"identity\": {{\"given_names\": \"{NAME}\",}}}}}}");
    let error = refused(&text);
    assert!(matches!(error, SubmissionError::Syntax { line: 1, .. }), "{error:?}");
    assert_no_echo(&error, &[NAME, "Zyxwvut"]);

    // An unterminated string holding a name.
    let error = refused(&format!("{{\"subject_ref\": \"{NAME}"));
    assert!(matches!(error, SubmissionError::Syntax { .. }), "{error:?}");
    assert_no_echo(&error, &[NAME, "Zyxwvut"]);
}

#[test]
fn deeply_nested_json_is_refused_without_crashing() {
    let depth = 100_000;
    let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(matches!(refused(&text), SubmissionError::Syntax { line: 1, .. }));
    let text = format!("{{\"case\": {}{NAME}{}}}", "{\"a\": ".repeat(depth), "}".repeat(depth));
    let error = refused(&text);
    assert!(matches!(error, SubmissionError::Syntax { line: 1, .. }), "{error:?}");
}

/// JSON with a repeated key means different things to different parsers
/// (first wins, last wins). Here the first `withdrawn_at` withdraws the
/// consent and the second clears it: a national system that reads the first
/// believes nothing will leave, while the gateway reads the last and sends.
#[test]
fn duplicate_keys_are_refused() {
    let text = fixture_text("trafficking_victim_reintegration")
        .replacen("\"method\": \"written\",", "\"withdrawn_at\": \"2026-11-20T09:00:00Z\", \"method\": \"written\", \"withdrawn_at\": null,", 1);
    assert!(text.contains("withdrawn_at"), "the fixture changed: this test no longer tests anything");
    let error = refused(&text);
    if !matches!(error, SubmissionError::Syntax { .. }) {
        assert_names_field(&error, "consent.withdrawn_at", "", &["2026-11-20"]);
    }

    let text = fixture_text("trafficking_victim_reintegration")
        .replacen("\"purpose\": \"reintegration\",", "\"purpose\": \"return\", \"purpose\": \"reintegration\",", 1);
    assert!(text.contains("\"purpose\": \"return\""), "the fixture changed: this test no longer tests anything");
    let error = refused(&text);
    if !matches!(error, SubmissionError::Syntax { .. }) {
        assert_names_field(&error, "purpose", "", &[]);
    }
}

#[test]
fn every_truncated_referral_is_a_syntax_error() {
    for name in fixture_names() {
        let text = fixture_text(&name);
        let body = text.trim_end();
        for (cut, _) in body.char_indices() {
            let prefix = body.get(..cut).unwrap();
            let error = refused(prefix);
            assert!(matches!(error, SubmissionError::Syntax { .. }), "{name} cut at byte {cut}: not a syntax error");
        }
    }
}

#[test]
fn empty_body_is_a_syntax_error() {
    assert_eq!(refused(""), SubmissionError::Syntax { line: 1, column: 0 });
    assert!(matches!(refused(" \n\t "), SubmissionError::Syntax { line: 2, .. }));
    assert!(refused("").problems().is_empty());
}

#[test]
fn wrong_json_type_names_the_field() {
    // The whole body.
    for body in ["[]".to_owned(), "42".to_owned(), "null".to_owned(), format!("\"{NAME}\"")] {
        let error = refused(&body);
        assert_names_field(&error, "(body)", "must be of type object", &[NAME]);
    }
    // A field that must be an object.
    let error = refused_variant(|v| v["case"] = json!(NAME));
    assert_names_field(&error, "case", "must be of type object", &[NAME]);
    let error = refused_variant(|v| v["consent"]["scopes"] = json!({ "purposes": NAME }));
    assert_names_field(&error, "consent.scopes", "must be of type array", &[NAME]);
    // A field that must be a string.
    let error = refused_variant(|v| v["case"]["identity"]["given_names"] = json!(987_654_321));
    assert_names_field(&error, "case.identity.given_names", "", &["987654321"]);
    // A closed vocabulary.
    let error = refused_variant(|v| v["purpose"] = json!(NAME));
    assert_names_field(&error, "purpose", "is not one of the allowed values", &[NAME]);
}

#[test]
fn unknown_field_at_top_level_is_named() {
    let error = refused_variant(|v| v["patient_name"] = json!(NAME));
    assert_names_field(&error, "patient_name", "unknown field", &[NAME]);
    assert_eq!(error.problems().len(), 1);

    // A key that is itself a name is reported without repeating it.
    let error = refused_variant(|v| v[NAME] = json!("x"));
    assert_names_field(&error, "(body)", "unknown field", &[NAME, "Zyxwvut", "Quintana"]);
}

#[test]
fn unknown_nested_field_is_named_with_its_path() {
    let error = refused_variant(|v| v["case"]["identity"]["nickname"] = json!(NAME));
    assert_names_field(&error, "case.identity.nickname", "unknown field", &[NAME]);

    let error = refused_variant(|v| v["case"]["family"]["members"][1]["nickname"] = json!(NAME));
    assert_names_field(&error, "case.family.members[1].nickname", "unknown field", &[NAME]);

    let error = refused_variant(|v| v["consent"]["scopes"][0]["note"] = json!(NAME));
    assert_names_field(&error, "consent.scopes[0].note", "unknown field", &[NAME]);
}

/// Objects with a `type` or `status` tag (who consented, best-interests
/// procedures) report an unknown field only as "does not match any of the
/// allowed forms" on the parent, without naming the unknown field.
#[test]
fn unknown_field_inside_a_tagged_object_is_named() {
    let error = refused_variant(|v| v["consent"]["given_by"]["name"] = json!(NAME));
    assert_names_field(&error, "consent.given_by.name", "unknown field", &[NAME]);

    let error = refused_variant(|v| v["case"]["child_safeguards"]["best_interests_determination"]["note"] = json!(NAME));
    assert_names_field(&error, "case.child_safeguards.best_interests_determination.note", "unknown field", &[NAME]);
}

#[test]
fn invalid_country_code_is_named_and_not_repeated() {
    let error = refused_variant(|v| v["case"]["identity"]["nationalities"][0] = json!("ZYX"));
    assert_names_field(&error, "case.identity.nationalities[0]", "is not one of the allowed values", &["ZYX"]);

    // Three letters are not enough: a typo for Eritrea would defeat the firewall.
    let error = refused_variant(|v| v["case"]["asylum"] = json!({ "feared_return": ["ERT"] }));
    assert_names_field(&error, "case.asylum.feared_return[0]", "is not one of the allowed values", &["ERT"]);

    let error = refused_variant(|v| v["case"]["identity"]["place_of_birth"]["country"] = json!("gin"));
    assert_names_field(&error, "case.identity.place_of_birth.country", "is not one of the allowed values", &["gin"]);
}

#[test]
fn date_of_birth_in_the_future_is_refused() {
    let error = refused_variant(|v| v["case"]["identity"]["date_of_birth"] = json!("2031-02-03"));
    assert_names_field(&error, "case.identity.date_of_birth", "must not be in the future", &["2031"]);

    // The day after "now" is already the future.
    let error = refused_variant(|v| v["case"]["identity"]["date_of_birth"] = json!("2026-11-24"));
    assert_names_field(&error, "case.identity.date_of_birth", "must not be in the future", &["2026-11-24"]);

    // A family member's too, with the member's index.
    let error = refused_variant(|v| v["case"]["family"]["members"][1]["date_of_birth"] = json!("2030-07-02"));
    assert_names_field(&error, "case.family.members[1].date_of_birth", "must not be in the future", &["2030"]);

    // Not a date at all.
    let error = refused_variant(|v| v["case"]["identity"]["date_of_birth"] = json!(NAME));
    assert_names_field(&error, "case.identity.date_of_birth", "", &[NAME]);
}

#[test]
fn consent_scope_with_an_unknown_category_is_refused() {
    let error = refused_variant(|v| v["consent"]["scopes"][0]["categories"][1] = json!("zyxwvut_records"));
    assert_names_field(&error, "consent.scopes[0].categories[1]", "is not one of the allowed values", &["zyxwvut"]);
    // The message lists what is allowed.
    assert!(error.to_string().contains("child_safeguards"));

    let error = refused_variant(|v| v["consent"]["scopes"][0]["categories"] = json!("everything"));
    assert_names_field(&error, "consent.scopes[0].categories", "", &["everything"]);
}

#[test]
fn subject_ref_that_is_a_name_is_refused() {
    for name in [NAME, "ZyxwvutQuintana", "Zyxwvut.Quintana"] {
        let error = refused_variant(|v| v["subject_ref"] = json!(name));
        assert_names_field(&error, "subject_ref", "does not have the required form", &[name, "Zyxwvut", "Quintana"]);
    }
}

#[test]
fn consent_given_in_the_future_is_refused() {
    let error = refused_variant(|v| v["consent"]["given_at"] = json!("2027-01-01T00:00:00Z"));
    assert_names_field(&error, "consent.given_at", "must not be in the future", &["2027-01-01"]);

    // A national system's clock may run a few minutes ahead, not more.
    let ahead = |minutes| {
        let mut value = girl();
        value["consent"]["given_at"] = json!((now() + Duration::minutes(minutes)).to_rfc3339());
        ReferralSubmission::parse(&value.to_string(), now())
    };
    assert!(ahead(4).is_ok(), "4 minutes of clock skew are tolerated");
    let error = ahead(6).err().unwrap();
    assert_names_field(&error, "consent.given_at", "must not be in the future", &[]);

    let error = refused_variant(|v| v["consent"]["withdrawn_at"] = json!("2027-01-01T00:00:00Z"));
    assert_names_field(&error, "consent.withdrawn_at", "must not be in the future", &["2027-01-01"]);
}

#[test]
fn several_problems_are_all_reported() {
    let error = refused_variant(|v| {
        v["case"]["identity"]["nickname"] = json!(NAME);
        v["case"]["identity"]["nationalities"][0] = json!("ZYX");
        v["subject_ref"] = json!(NAME);
    });
    for field in ["case.identity.nickname", "case.identity.nationalities[0]", "subject_ref"] {
        assert!(error.problems().iter().any(|p| p.field == field), "{field} not reported");
    }
    assert_no_echo(&error, &[NAME, "ZYX"]);
}

// ---------------------------------------------------------------------------
// Cedar policies
// ---------------------------------------------------------------------------

fn source(name: &str, text: &str) -> PolicySource {
    PolicySource { name: name.to_owned(), text: text.to_owned() }
}

fn policy_problems(sources: &[PolicySource]) -> Vec<PolicyProblem> {
    match DataProtectionPolicy::compile(sources) {
        Ok(_) => panic!("an invalid policy set compiled"),
        Err(PolicyError::Invalid(problems)) => problems,
        Err(PolicyError::Builtin(_)) => panic!("the built-in rules were blamed for a DPO's mistake"),
    }
}

/// Exactly one problem, in `file` at `line`, whose text contains `needle`.
fn assert_one_problem(sources: &[PolicySource], file: &str, line: usize, needle: &str) {
    let problems = policy_problems(sources);
    let located: Vec<(&str, usize)> = problems.iter().map(|p| (p.file.as_str(), p.line)).collect();
    assert_eq!(located, [(file, line)], "problems: {problems:?}");
    let problem = problems.first().unwrap();
    assert!(problem.problem.contains(needle), "{file}:{line}: {:?} does not mention {needle:?}", problem.problem);
    assert!(problem.to_string().starts_with(&format!("{file}:{line}:")), "{problem}");
}

const GOOD: &str = "// A DPO's permit.\n@id(\"good.permit\")\npermit (principal, action, resource);\n";

#[test]
fn a_valid_policy_set_compiles() {
    let policy = DataProtectionPolicy::compile(&[source("10-good.cedar", GOOD)]).unwrap();
    assert_eq!(policy.dpo_policies().into_iter().collect::<Vec<_>>(), [("good.permit".to_owned(), "permit")]);
}

#[test]
fn cedar_syntax_error_names_file_and_line() {
    let text = "// Permits.\n@id(\"a\")\npermit (principal, action, resource)\nwhen { principal.kind == };\n";
    assert_one_problem(&[source("10-good.cedar", GOOD), source("20-broken.cedar", text)], "20-broken.cedar", 4, "unexpected token");
}

#[test]
fn cedar_unknown_category_names_file_and_line() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"b\")\npermit (principal, action,\n  resource == Category::\"medical_records\");\n";
    assert_one_problem(&[source("bad.cedar", text)], "bad.cedar", 7, "medical_records");
}

#[test]
fn cedar_unknown_action_names_file_and_line() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"b\")\npermit (principal, action == Action::\"deport\", resource);\n";
    assert_one_problem(&[source("bad.cedar", text)], "bad.cedar", 6, "deport");
}

#[test]
fn cedar_unknown_attribute_names_file_and_line() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"b\")\npermit (principal, action, resource)\nwhen { principal.nationality == \"NGA\" };\n";
    assert_one_problem(&[source("bad.cedar", text)], "bad.cedar", 7, "nationality");
}

#[test]
fn cedar_policy_without_id_names_file_and_line() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\npermit (principal, action, resource)\nwhen { principal.state_actor };\n";
    assert_one_problem(&[source("bad.cedar", text)], "bad.cedar", 5, "@id");
}

#[test]
fn cedar_reserved_builtin_id_is_refused() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"builtin.asylum_firewall\")\npermit (principal, action, resource);\n";
    assert_one_problem(&[source("bad.cedar", text)], "bad.cedar", 5, "reserved");
}

#[test]
fn cedar_duplicate_id_across_files_names_the_second_file_and_the_first() {
    let first = "@id(\"x\")\npermit (principal, action, resource);\n";
    let second = "// b\n\n@id(\"y\")\npermit (principal, action, resource);\n@id(\"x\")\nforbid (principal, action, resource);\n";
    // Files are read in name order whatever order they are given in.
    for sources in [[source("a.cedar", first), source("b.cedar", second)], [source("b.cedar", second), source("a.cedar", first)]] {
        assert_one_problem(&sources, "b.cedar", 5, "already used in a.cedar");
    }
}

#[test]
fn cedar_template_names_file_and_line() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"t\")\npermit (principal == ?principal, action, resource);\n";
    let problems = policy_problems(&[source("bad.cedar", text)]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems.first().unwrap();
    assert_eq!(problem.file, "bad.cedar");
    assert!(problem.problem.contains("template"), "{problem}");
    assert!((5..=6).contains(&problem.line), "the template is on lines 5-6, reported at line {}", problem.line);
}

#[test]
fn cedar_template_is_refused() {
    let text = "// c\n@id(\"a\")\npermit (principal, action, resource);\n\n@id(\"t\")\npermit (principal == ?principal, action, resource);\n";
    let problems = policy_problems(&[source("bad.cedar", text)]);
    assert!(problems.iter().all(|p| p.file == "bad.cedar"), "{problems:?}");
    assert!(problems.iter().any(|p| p.problem.contains("template")), "{problems:?}");
}

#[test]
fn cedar_problems_in_several_files_are_all_reported() {
    let unknown_action = "@id(\"a\")\npermit (principal, action == Action::\"deport\", resource);\n";
    let no_id = "// c\n\npermit (principal, action, resource);\n";
    let problems = policy_problems(&[source("1.cedar", unknown_action), source("2.cedar", GOOD), source("3.cedar", no_id)]);
    let located: std::collections::BTreeSet<(&str, usize)> = problems.iter().map(|p| (p.file.as_str(), p.line)).collect();
    assert_eq!(located, [("1.cedar", 2), ("3.cedar", 3)].into(), "{problems:?}");
    let shown = PolicyError::Invalid(problems).to_string();
    assert!(shown.contains("1.cedar:2:") && shown.contains("3.cedar:3:"), "{shown}");
}

/// A referral formatted with `{:?}` (a stray debug log, a panic message)
/// shows no name, date of birth, document number or note.
#[test]
fn debug_formatting_of_a_referral_hides_personal_data() {
    for name in fixture_names() {
        let submission = fixture(&name);
        let shown = format!("{submission:?}");
        let value: serde_json::Value = serde_json::from_str(&fixture_text(&name)).unwrap();
        let identity = &value["case"]["identity"];
        for key in ["given_names", "family_name", "date_of_birth"] {
            if let Some(text) = identity[key].as_str() {
                assert!(!shown.contains(text), "{name}: {key} visible in {shown}");
            }
        }
        for note in value["case"]["case_notes"].as_array().into_iter().flatten() {
            assert!(!shown.contains(note.as_str().unwrap()), "{name}: a note is visible");
        }
        if let Some(guardian) = value["consent"]["given_by"]["family_name"].as_str() {
            assert!(!shown.contains(guardian), "{name}: the guardian's name is visible");
        }
    }
}

// ---------------------------------------------------------------------------
// Bounded arrays
// ---------------------------------------------------------------------------

/// Every array of a referral has a bound; one entry over it is refused with a
/// field problem, by the schema and by the parser alone.
#[test]
fn arrays_beyond_their_bound_are_refused() {
    let over: [(&str, &[&str], Value, usize); 5] = [
        ("case.identity.languages", &["case", "identity", "languages"], json!("en"), 20),
        ("consent.refusals[0].recipients", &["consent", "refusals", "0", "recipients"], json!({"kind": "police"}), 50),
        ("case.documents", &["case", "documents"], json!({"type": "passport"}), 20),
        ("case.case_notes", &["case", "case_notes"], json!("a note"), 50),
        ("case.identity.other_names", &["case", "identity", "other_names"], json!("Other"), 20),
    ];
    for (field, path, item, bound) in over {
        let mut value = girl();
        let mut at = &mut value;
        for key in path {
            if let Ok(index) = key.parse::<usize>() {
                at = &mut at[index];
                continue;
            }
            if at.get(*key).is_none() {
                at[*key] = json!({});
            }
            at = &mut at[*key];
        }
        // Distinct entries where a set is meant, so only the count is at fault.
        let items: Vec<Value> = if field.ends_with("languages") {
            (0..=bound).map(|i| json!(format!("x{}{}", (b'a' + (i / 26) as u8) as char, (b'a' + (i % 26) as u8) as char))).collect()
        } else {
            vec![item; bound + 1]
        };
        *at = Value::Array(items);
        let error = refused(&value.to_string());
        assert_names_field(&error, field, &format!("at most {bound}"), &[]);
        let parsed: Result<ReferralSubmission, _> = serde_json::from_value(value);
        assert!(parsed.is_err(), "{field}: the parser alone accepted {} entries", bound + 1);
    }
}

#[test]
fn repeated_languages_are_refused() {
    let error = refused_variant(|r| r["case"]["identity"]["languages"] = json!(["en", "ti", "en"]));
    assert_names_field(&error, "case.identity.languages", "duplicates", &[]);
    let mut value = girl();
    value["case"]["identity"]["languages"] = json!(["en", "en"]);
    assert!(serde_json::from_value::<ReferralSubmission>(value).is_err(), "the parser alone accepted a repeated language");
}
