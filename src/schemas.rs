//! JSON Schemas generated from the Rust types, so that the published schema
//! and the parser cannot disagree. The committed copies in `schemas/` are
//! checked against these by the test suite.

use schemars::generate::SchemaSettings;

use crate::directory::DirectoryDocument;

const BASE_ID: &str = "https://referral-gateway.example/schemas";

fn generate<T: schemars::JsonSchema>(file: &str) -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>();
    schema.insert("$id".to_owned(), serde_json::Value::String(format!("{BASE_ID}/{file}")));
    schema.to_value()
}

/// JSON Schema (2020-12) of a referral submission; the parser validates against it.
pub fn referral_schema() -> serde_json::Value {
    crate::domain::submission::json_schema()
}

/// JSON Schema (2020-12) of the federation directory's content.
pub fn directory_schema() -> serde_json::Value {
    generate::<DirectoryDocument>("directory.schema.json")
}
