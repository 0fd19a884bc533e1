//! Identifier newtypes. Each checks its form once, at the edge, and cannot
//! hold an invalid value afterwards.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ParseError;

/// Implements `TryFrom<String>`, `From<Self> for String`, `Display` and `as_str`
/// for a newtype over `String` with a `parse` function.
macro_rules! string_newtype {
    ($name:ident, $pattern:literal, $description:literal) => {
        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "pattern": $pattern, "description": $description })
            }
        }
        impl $name {
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
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype;

/// An organisation's id in the federation directory, e.g. `nga-iom-lagos`:
/// 3 to 64 characters of lower-case letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let well_formed = (3..=64).contains(&text.len())
            && text.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new(
                "organisation id",
                "must be 3 to 64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit",
            ))
        }
    }
}
string_newtype!(OrgId, r"^[a-z0-9][a-z0-9._-]{2,63}$", "Organisation id in the federation directory");

/// The sender's opaque, pseudonymous reference for the person, e.g.
/// `ITA-2026-000417` or a UUID. Never a name: 8 to 64 characters of ASCII
/// letters, digits, `-`, `_`, `.` and `:`, with at least one digit, so that a
/// name typed into this field by mistake is rejected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectRef(String);

impl SubjectRef {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let well_formed = (8..=64).contains(&text.len())
            && text.bytes().any(|b| b.is_ascii_digit())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if well_formed {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new(
                "subject reference",
                "must be an opaque reference of 8 to 64 characters (A-Z, a-z, 0-9, '-', '_', '.', ':') containing a digit; never a name",
            ))
        }
    }
}
string_newtype!(SubjectRef, r"^(?=.*[0-9])[A-Za-z0-9._:-]{8,64}$", "Opaque pseudonymous reference for the person, chosen by the sender; never a name");

/// A language as an ISO 639 code (two or three lower-case letters), e.g. `ti`, `en`, `pcm`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LanguageCode(String);

impl LanguageCode {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if (2..=3).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new("language code", "must be an ISO 639 code of two or three lower-case letters"))
        }
    }
}
string_newtype!(LanguageCode, r"^[a-z]{2,3}$", "ISO 639 language code");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        for ok in ["nga-iom-lagos", "ita.nrm", "iom_rome", "a1b"] {
            assert!(OrgId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "-iom", "IOM-Rome", "iom rome", "iom/rome", &"x".repeat(65)] {
            assert!(OrgId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subject_refs_refuse_anything_that_looks_like_a_name() {
        for ok in ["ITA-2026-000417", "9f1c2a4e-7d1b-4c1e-9a77-0c5e1d2b3a4f", "case:123456"] {
            assert!(SubjectRef::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["AminaDiallo", "Amina Diallo 1990", "short1", "ref/2026/0001", ""] {
            assert!(SubjectRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn language_codes() {
        assert!(LanguageCode::parse("ti").is_ok());
        assert!(LanguageCode::parse("pcm").is_ok());
        assert!(LanguageCode::parse("EN").is_err());
        assert!(LanguageCode::parse("english").is_err());
    }

    #[test]
    fn parse_errors_never_echo_the_input() {
        let secret = "Amina Diallo";
        let message = SubjectRef::parse(secret).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!message.is_empty());
        assert!(!message.contains("Amina"));
    }
}

/// The client's key for safe retries of one submission: 8 to 128 printable
/// ASCII characters without spaces (a UUID is a good choice).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if (8..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ParseError::new("idempotency key", "must be 8 to 128 printable ASCII characters without spaces"))
        }
    }
}
string_newtype!(IdempotencyKey, r"^[!-~]{8,128}$", "Client key for safe retries");
