//! Finds repeated keys in a JSON object. serde_json keeps the last of them
//! silently; for a consent (`withdrawn_at` given twice) that ambiguity is
//! dangerous, so a submission with a repeated key is refused.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::submission::looks_like_field_name;

enum Step {
    Key(String),
    Index(usize),
}

struct State {
    path: Vec<Step>,
    found: Option<String>,
}

impl State {
    /// The path to `key`. A key that does not look like a field name may be
    /// a submitted value (a person's name): the path then stops at its parent.
    fn dotted(&self, key: &str) -> String {
        let mut out = String::new();
        for step in self.path.iter().map(Some).chain(std::iter::once(None)) {
            let name = match step {
                Some(Step::Index(index)) => {
                    out.push_str(&format!("[{index}]"));
                    continue;
                }
                Some(Step::Key(name)) => name.as_str(),
                None => key,
            };
            if !looks_like_field_name(name) {
                break;
            }
            push_name(&mut out, name);
        }
        if out.is_empty() { "(body)".to_owned() } else { out }
    }
}

fn push_name(out: &mut String, name: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(name);
}

struct Walk<'a>(&'a mut State);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            self.0.path.push(Step::Index(index));
            let more = seq.next_element_seed(Walk(&mut *self.0))?;
            self.0.path.pop();
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) && self.0.found.is_none() {
                self.0.found = Some(self.0.dotted(&key));
            }
            self.0.path.push(Step::Key(key));
            map.next_value_seed(Walk(&mut *self.0))?;
            self.0.path.pop();
        }
        Ok(())
    }
}

/// The dotted path of the first repeated key in `json`, if any. Malformed JSON
/// yields `None`: reporting syntax is the parser's job.
pub fn first_repeated_key(json: &str) -> Option<String> {
    let mut state = State { path: Vec::new(), found: None };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    Walk(&mut state).deserialize(&mut deserializer).ok()?;
    state.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_repeats_at_any_depth_with_their_path() {
        assert_eq!(first_repeated_key(r#"{"a": 1, "b": 2}"#), None);
        assert_eq!(first_repeated_key(r#"{"a": 1, "a": 2}"#).as_deref(), Some("a"));
        assert_eq!(
            first_repeated_key(r#"{"consent": {"scopes": [{}, {"x": 1, "x": null}]}}"#).as_deref(),
            Some("consent.scopes[1].x")
        );
        assert_eq!(first_repeated_key(r#"[{"a": {"b": 1, "b": 1}}]"#).as_deref(), Some("[0].a.b"));
        assert_eq!(first_repeated_key("{broken"), None);
    }
}
