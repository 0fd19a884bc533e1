//! Bounded free text. Lengths are bounded so that one field cannot carry a
//! document dump; control characters are refused so that text cannot forge
//! log lines or terminal output downstream.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ParseError;

macro_rules! bounded_text {
    ($(#[$meta:meta])* $name:ident, $max:literal, $kind:literal, $allow_newlines:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        /// Free text may hold a name or a story: `{:?}` never shows it, so a
        /// stray debug log or panic message cannot leak it.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "(<{} characters>)"), self.0.chars().count())
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let pattern = if $allow_newlines { r"^[^\u0000-\u0008\u000B-\u001F\u007F]*\S[^\u0000-\u0008\u000B-\u001F\u007F]*$" } else { r"^[^\u0000-\u001F\u007F]*\S[^\u0000-\u001F\u007F]*$" };
                schemars::json_schema!({ "type": "string", "minLength": 1, "maxLength": $max, "pattern": pattern })
            }
        }

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn parse(text: &str) -> Result<Self, ParseError> {
                let chars = text.chars().count();
                if chars == 0 || text.trim().is_empty() {
                    return Err(ParseError::new($kind, "must not be empty"));
                }
                if chars > $max {
                    return Err(ParseError::new($kind, concat!("must be at most ", stringify!($max), " characters")));
                }
                if text.chars().any(|c| c.is_control() && !($allow_newlines && (c == '\n' || c == '\t'))) {
                    return Err(ParseError::new($kind, "must not contain control characters"));
                }
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

bounded_text!(
    /// A name, place or short description: one line, at most 200 characters.
    ShortText, 200, "text", false
);
bounded_text!(
    /// A free-text note: at most 4000 characters, line breaks allowed.
    NoteText, 4000, "note", true
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_control_characters() {
        assert!(ShortText::parse("Lagos").is_ok());
        assert!(ShortText::parse("").is_err());
        assert!(ShortText::parse("   ").is_err());
        assert!(ShortText::parse(&"a".repeat(201)).is_err());
        assert!(ShortText::parse("two\nlines").is_err());
        assert!(NoteText::parse("two\nlines").is_ok());
        assert!(NoteText::parse("bell\u{7}").is_err());
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_text() {
        let name = ShortText::parse("Amina Diallo").unwrap();
        let note = NoteText::parse("Fled forced marriage in Conakry").unwrap();
        assert_eq!(format!("{name:?}"), "ShortText(<12 characters>)");
        assert!(!format!("{note:?}").contains("Conakry"));
    }
}
