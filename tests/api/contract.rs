//! Every reply of the national API that a test receives is held to the
//! OpenAPI document: its status is one the operation documents, and a JSON
//! body validates against the schema documented for that status and media
//! type. The schemas are generated from the answer types, so this catches
//! what generation alone cannot: a hand-written schema override, a
//! serialiser that writes something else, a status the paths forgot.
//!
//! Requests outside the document (the federation endpoint of a peer, an
//! unknown path, a method a path does not take) are not checked here: other
//! tests say what they must answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| referral_gateway::http::openapi_json().unwrap())
}

/// The escaped JSON pointer segment of `text`.
fn segment(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// The documented path template that `path` matches, if any.
fn template_of(path: &str) -> Option<&'static str> {
    let paths = document()["paths"].as_object()?;
    let parts: Vec<&str> = path.split('/').collect();
    // As OpenAPI matches: a concrete path before a templated one
    // (`/v1/policies/simulate` before `/v1/policies/{number}`).
    paths
        .keys()
        .map(String::as_str)
        .filter(|template| {
            let pattern: Vec<&str> = template.split('/').collect();
            pattern.len() == parts.len()
                && pattern.iter().zip(&parts).all(|(p, s)| if p.starts_with('{') { !s.is_empty() } else { p == s })
        })
        .min_by_key(|template| template.matches('{').count())
}

fn validator(pointer: &str) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap().get(pointer) {
        return found.clone();
    }
    // The schema, its references resolved in the document it stands in.
    // A fragment is a URI part: the braces of path templates are escaped.
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let schema = json!({ "$ref": format!("#{fragment}"), "paths": document()["paths"], "components": document()["components"] });
    let compiled = Arc::new(jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{pointer}: {e}")));
    cache.lock().unwrap().insert(pointer.to_owned(), compiled.clone());
    compiled
}

/// Holds one reply to the document; panics with what differs.
pub fn check(method: &str, path: &str, status: u16, content_type: &str, body: &Value, text: &str) {
    let Some(template) = template_of(path) else { return };
    let method = method.to_lowercase();
    let Some(operation) = document()["paths"][template].get(&method) else { return };
    let responses = &operation["responses"];
    let (mut response, mut pointer) = match responses.get(status.to_string()) {
        Some(response) => (response, format!("/paths/{}/{method}/responses/{status}", segment(template))),
        None => panic!("{} {template}: {status} is not a documented response: {text}", method.to_uppercase()),
    };
    if let Some(Value::String(reference)) = response.get("$ref") {
        pointer = reference.trim_start_matches('#').to_owned();
        response = document().pointer(&pointer).unwrap();
    }
    let media = content_type.split(';').next().unwrap_or("").trim();
    let Some(content) = response.get("content") else {
        assert!(text.is_empty(), "{} {template} {status}: a body the document does not describe", method.to_uppercase());
        return;
    };
    if text.is_empty() && status == 204 {
        return;
    }
    assert!(
        content.get(media).is_some(),
        "{} {template} {status}: {media} is not a documented media type ({:?})",
        method.to_uppercase(),
        content.as_object().map(|c| c.keys().collect::<Vec<_>>())
    );
    if !media.ends_with("json") {
        return;
    }
    let schema = format!("{pointer}/content/{}/schema", segment(media));
    let errors: Vec<String> = validator(&schema).iter_errors(body).map(|e| format!("{}: {e}", e.instance_path())).take(5).collect();
    assert!(errors.is_empty(), "{} {template} {status}: the body does not match the document: {errors:#?}\n{text}", method.to_uppercase());
}
