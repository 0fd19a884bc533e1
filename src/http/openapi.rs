//! The OpenAPI description as served: `schemas/openapi.yaml` (kept by hand)
//! with the generated JSON Schemas bundled in, so that the document stands
//! alone. Code generators and API fuzzers follow every `$ref`; a reference to
//! a file beside the document resolves to nothing for them.
//!
//! Each generated schema becomes `components/schemas/<name>`, and each of its
//! `$defs` a component of its own; the schema's internal references
//! (`#/$defs/X`) are rewritten to `#/components/schemas/X`, and its `$id` and
//! `$schema` are dropped: kept, `$id` would make those references resolve
//! against the schema's own URL instead of the document. A definition two
//! schemas share must be the same in both; any other clash of names is an
//! error, so that no component is silently replaced.

use serde_json::{Map, Value};

/// The OpenAPI description, kept by hand. Its references to the generated
/// schemas (`#/components/schemas/ReferralSubmission`, ...) resolve only in
/// the bundled document, [`openapi_json`].
pub const OPENAPI_YAML: &str = include_str!("../../schemas/openapi.yaml");

/// The generated schemas bundled into the document, by component name.
fn generated() -> [(&'static str, Value); 2] {
    [
        ("ReferralSubmission", crate::schemas::referral_schema()),
        ("Directory", crate::schemas::directory_schema()),
    ]
}

/// The served OpenAPI 3.1 document: `schemas/openapi.yaml` with the
/// referral and directory schemas under `components/schemas`; every `$ref`
/// in it is internal (`#/...`).
pub fn openapi_json() -> Result<Value, String> {
    let mut document: Value = serde_norway::from_str(OPENAPI_YAML).map_err(|e| format!("schemas/openapi.yaml: {e}"))?;
    let components = document
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(Value::as_object_mut)
        .ok_or("schemas/openapi.yaml: no components.schemas")?;
    for (name, schema) in generated() {
        bundle(components, name, schema)?;
    }
    Ok(document)
}

/// Adds `schema` as component `name`, and its `$defs` as components.
fn bundle(components: &mut Map<String, Value>, name: &str, schema: Value) -> Result<(), String> {
    let Value::Object(mut root) = schema else {
        return Err(format!("the {name} schema is not an object"));
    };
    root.remove("$id");
    root.remove("$schema");
    let defs = match root.remove("$defs") {
        Some(Value::Object(defs)) => defs,
        Some(_) => return Err(format!("the {name} schema's $defs is not an object")),
        None => Map::new(),
    };
    let mut entries = vec![(name.to_owned(), Value::Object(root))];
    entries.extend(defs);
    for (key, mut value) in entries {
        rewrite_refs(&mut value, name)?;
        match components.get(&key) {
            Some(existing) if *existing != value => {
                return Err(format!("components.schemas.{key}: the {name} schema defines it differently"));
            }
            Some(_) => {}
            None => {
                components.insert(key, value);
            }
        }
    }
    Ok(())
}

/// Rewrites the references of a schema bundled as component `name`:
/// `#/$defs/X...` to `#/components/schemas/X...`, and `#` (the schema
/// itself) to `#/components/schemas/<name>`. Any other reference would point
/// outside the document.
fn rewrite_refs(value: &mut Value, name: &str) -> Result<(), String> {
    match value {
        Value::Object(object) => {
            for (key, member) in object.iter_mut() {
                match (key.as_str(), member) {
                    ("$ref", Value::String(reference)) => {
                        *reference = if let Some(rest) = reference.strip_prefix("#/$defs/") {
                            format!("#/components/schemas/{rest}")
                        } else if reference == "#" {
                            format!("#/components/schemas/{name}")
                        } else {
                            return Err(format!("the {name} schema has a reference that cannot be bundled"));
                        };
                    }
                    // A property may be named `$ref`: only a string in
                    // keyword position is a reference.
                    (_, member) => rewrite_refs(member, name)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter_mut().try_for_each(|item| rewrite_refs(item, name)),
        _ => Ok(()),
    }
}
