//! The committed JSON, OpenAPI and Cedar schemas are the ones the code generates, and
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

/// The contract cannot miss a field the code answers with: every request
/// and response schema in the committed OpenAPI document is generated from
/// the types the use cases take and return.
#[test]
fn committed_openapi_document_is_the_generated_one() {
    let generated = referral_gateway::http::openapi_yaml().unwrap();
    assert!(
        committed("schemas/openapi.yaml") == generated,
        "schemas/openapi.yaml is stale: run `cargo run -- schema openapi > schemas/openapi.yaml`"
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

mod schema_rejects_implies_types_reject {
    //! Random mutations of the fixtures: whatever the published schema rejects,
    //! the parser rejects too. (The parser may be stricter, e.g. dates in the
    //! future, which need the clock.)

    use proptest::prelude::*;
    use referral_gateway::domain::submission::ReferralSubmission;
    use serde_json::{json, Value};

    use crate::support::{fixture_names, fixture_text, now, repo_path};

    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    fn paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(prefix.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    prefix.push(Step::Key(key.clone()));
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    prefix.push(Step::Index(index));
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {}
        }
    }

    fn at<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
        path.iter().try_fold(value, |node, step| match step {
            Step::Key(key) => node.get_mut(key.as_str()),
            Step::Index(index) => node.get_mut(*index),
        })
    }

    /// Values a buggy or hostile client might send: wrong types, near-miss
    /// codes, empty and oversized strings, duplicates of real values.
    fn replacement() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            Just(json!(true)),
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(19)),
            Just(json!(300)),
            Just(json!(2.5)),
            Just(json!("")),
            Just(json!(" ")),
            Just(json!("XYZ")),
            Just(json!("ita")),
            Just(json!("ERI")),
            Just(json!("NGA")),
            Just(json!("return")),
            Just(json!("identity")),
            Just(json!("iom")),
            Just(json!("all")),
            Just(json!("2010-03-14")),
            Just(json!("2026-11-02T10:00:00Z")),
            Just(json!("Zyxwvut Quintana")),
            Just(json!("line\nbreak")),
            Just(json!("x".repeat(201))),
            Just(json!([])),
            Just(json!(["ERI", "ERI"])),
            Just(json!(["identity", "identity"])),
            Just(json!({})),
            Just(json!({"status": "completed"})),
            Just(json!({"type": "guardian"})),
        ]
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(Value),
        Remove,
        AddUnknownKey,
        DuplicateFirstItem,
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => replacement().prop_map(Mutation::Replace),
            2 => Just(Mutation::Remove),
            1 => Just(Mutation::AddUnknownKey),
            1 => Just(Mutation::DuplicateFirstItem),
        ]
    }

    fn apply(document: &mut Value, path: &[Step], mutation: &Mutation) {
        match mutation {
            Mutation::Replace(value) => {
                if let Some(node) = at(document, path) {
                    *node = value.clone();
                }
            }
            Mutation::Remove => {
                if let Some((last, parent)) = path.split_last() {
                    match (at(document, parent), last) {
                        (Some(Value::Object(map)), Step::Key(key)) => {
                            map.remove(key);
                        }
                        (Some(Value::Array(items)), Step::Index(index)) if *index < items.len() => {
                            items.remove(*index);
                        }
                        _ => {}
                    }
                }
            }
            Mutation::AddUnknownKey => {
                if let Some(Value::Object(map)) = at(document, path) {
                    map.insert("nickname".to_owned(), json!("Zyxwvut"));
                }
            }
            Mutation::DuplicateFirstItem => {
                if let Some(Value::Array(items)) = at(document, path)
                    && let Some(first) = items.first().cloned()
                {
                    items.push(first);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(768))]

        #[test]
        fn whatever_the_schema_rejects_the_parser_rejects(
            fixture_index in any::<prop::sample::Index>(),
            path_index in any::<prop::sample::Index>(),
            mutation in mutation(),
        ) {
            // Compiled and read once for all 768 cases: compiling the schema was most of the test's time.
            static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
            static FIXTURES: std::sync::OnceLock<Vec<(String, Value)>> = std::sync::OnceLock::new();
            let validator = VALIDATOR.get_or_init(|| {
                let schema: Value = serde_json::from_str(&std::fs::read_to_string(repo_path("schemas/referral.schema.json")).unwrap()).unwrap();
                jsonschema::draft202012::new(&schema).unwrap()
            });
            let fixtures = FIXTURES.get_or_init(|| {
                fixture_names().into_iter().map(|name| { let text = fixture_text(&name); (name, serde_json::from_str(&text).unwrap()) }).collect()
            });
            let (name, original) = fixture_index.get(fixtures);
            let mut all_paths = Vec::new();
            paths(original, &mut Vec::new(), &mut all_paths);
            let path = path_index.get(&all_paths);
            let mut mutated = original.clone();
            apply(&mut mutated, path, &mutation);
            if !validator.is_valid(&mutated) {
                let parsed = ReferralSubmission::parse(&mutated.to_string(), now());
                prop_assert!(parsed.is_err(), "{name}: schema rejects {path:?} <- {mutation:?}, parser accepts");
            }
        }
    }
}

#[test]
fn committed_directory_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&referral_gateway::schemas::directory_schema()).unwrap() + "\n";
    assert!(
        committed("schemas/directory.schema.json") == generated,
        "schemas/directory.schema.json is stale: run `cargo run -- schema directory > schemas/directory.schema.json`"
    );
}

#[test]
fn the_example_directory_validates_against_its_schema() {
    let schema: serde_json::Value = serde_json::from_str(&committed("schemas/directory.schema.json")).unwrap();
    let instance: serde_json::Value = serde_json::from_str(&committed("config/directory.example.json")).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.instance_path().to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// Every array a referral may hold is bounded: a `maxItems`, or a set
/// (`uniqueItems`) of a closed vocabulary. Nothing lets a client queue
/// thousands of entries (issue 17 §2).
#[test]
fn every_array_of_a_referral_is_bounded() {
    let schema = referral_schema();
    let definitions = schema["$defs"].as_object().unwrap().clone();
    fn resolve(definitions: &serde_json::Map<String, serde_json::Value>, node: &serde_json::Value) -> serde_json::Value {
        match node.get("$ref").and_then(|r| r.as_str()) {
            Some(reference) => resolve(definitions, &definitions[reference.rsplit('/').next().unwrap()]),
            None => node.clone(),
        }
    }
    let closed_vocabulary = |items: &serde_json::Value| {
        let items = resolve(&definitions, items);
        items.get("enum").is_some()
            || items.get("oneOf").and_then(|o| o.as_array()).is_some_and(|variants| {
                variants.iter().all(|v| {
                    let v = resolve(&definitions, v);
                    v.get("const").is_some() || v.get("enum").is_some()
                })
            })
    };
    let mut unbounded = Vec::new();
    let mut stack = vec![("".to_owned(), schema.clone())];
    while let Some((path, node)) = stack.pop() {
        match &node {
            serde_json::Value::Object(members) => {
                let is_array = match members.get("type") {
                    Some(serde_json::Value::String(t)) => t == "array",
                    Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "array"),
                    _ => false,
                };
                let bounded = members.contains_key("maxItems")
                    || (members.get("uniqueItems") == Some(&serde_json::Value::Bool(true)) && members.get("items").is_some_and(closed_vocabulary));
                if is_array && !bounded {
                    unbounded.push(path.clone());
                }
                stack.extend(members.iter().map(|(key, value)| (format!("{path}/{key}"), value.clone())));
            }
            serde_json::Value::Array(items) => {
                stack.extend(items.iter().enumerate().map(|(index, value)| (format!("{path}/{index}"), value.clone())));
            }
            _ => {}
        }
    }
    assert!(unbounded.is_empty(), "arrays without a bound: {unbounded:?}");
}
