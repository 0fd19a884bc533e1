//! Pieces that several answers of the use cases share. Every answer is a
//! typed value (`Serialize` for the HTTP edge to render, `JsonSchema` for the
//! OpenAPI document to describe): what a client receives and what the
//! contract says come from the same type.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize, Serializer};

use crate::app::millis_to_rfc3339;

/// A moment as the API shows it: RFC 3339 in UTC, to the millisecond.
/// Held as milliseconds since the epoch, as the store keeps time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn of(at: DateTime<Utc>) -> Self {
        Self(at.timestamp_millis())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&millis_to_rfc3339(self.0))
    }
}

/// Read back from checks stored as JSON.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        let at = DateTime::parse_from_rfc3339(&text).map_err(|_| serde::de::Error::custom("not an RFC 3339 time"))?;
        Ok(Self(at.timestamp_millis()))
    }
}

impl JsonSchema for Timestamp {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// An organisation a referral is for, and its country when the directory
/// knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct RecipientRef {
    pub org: String,
    pub country: Option<String>,
}

/// The consent facts kept with a decision: how and when it was given and
/// until when it covers; never the guardian's name. Stored with the
/// referral and shown to the DPO as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsentSummary {
    /// `subject` or `guardian`.
    pub given_by: ConsentGivenBy,
    pub method: crate::domain::consent::ConsentMethod,
    pub given_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// How many scopes the consent has.
    pub scopes: usize,
    /// How many refusals it records.
    pub refusals: usize,
    /// The end of the longest scope.
    pub valid_until: Option<DateTime<Utc>>,
    /// Keyed hash of the whole consent record, to tell consents apart.
    pub fingerprint: String,
}

/// Who gave a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentGivenBy {
    Subject,
    Guardian,
}

impl ConsentSummary {
    /// The summary stored with a referral; `None` if it is unreadable (an
    /// answer shows `null` rather than failing over it).
    pub fn read(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok()
    }
}
