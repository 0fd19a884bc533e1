//! The committed JSON and Cedar schemas are the ones the code generates, and
//! every fixture is valid against them.

use referral_gateway::domain::policy::schema_text;
use referral_gateway::schemas::referral_schema;

use crate::support::{fixture_names, fixture_text, repo_path};

fn committed(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap()
}

#[test]
fn committed_referral_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&referral_schema()).unwrap() + "\n";
    assert!(
        committed("schemas/referral.schema.json") == generated,
        "schemas/referral.schema.json is stale: run `cargo run -- schema referral > schemas/referral.schema.json`"
    );
}

#[test]
fn committed_policy_schema_is_the_generated_one() {
    assert!(
        committed("schemas/policy.cedarschema") == schema_text(),
        "schemas/policy.cedarschema is stale: run `cargo run -- policy schema > schemas/policy.cedarschema`"
    );
}

#[test]
fn every_fixture_validates_against_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&committed("schemas/referral.schema.json")).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let names = fixture_names();
    assert!(names.len() >= 6, "the six scenarios are fixtures");
    for name in names {
        let instance: serde_json::Value = serde_json::from_str(&fixture_text(&name)).unwrap();
        let errors: Vec<String> = validator.iter_errors(&instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}
