//! Cuts a case down to what a decision allows: only the sent categories, and
//! within them only the fields the purpose baseline names.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::baseline::{Fields, needed_fields};
use super::case::Case;
use super::decision::Decision;
use super::{DataCategory, Purpose};

/// The minimal body of a referral packet: category name to its fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Payload(BTreeMap<DataCategory, Value>);

impl Payload {
    pub(super) fn from_categories(categories: BTreeMap<DataCategory, Value>) -> Self {
        Self(categories)
    }

    pub fn categories(&self) -> impl Iterator<Item = DataCategory> + '_ {
        self.0.keys().copied()
    }

    pub fn get(&self, category: DataCategory) -> Option<&Value> {
        self.0.get(&category)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().map(|(c, v)| (c.as_str().to_owned(), v.clone())).collect())
    }
}

/// The case's data of `category` as JSON, or `None` when it has none.
fn category_value(case: &Case, category: DataCategory) -> Option<Value> {
    let value = match category {
        DataCategory::Identity => serde_json::to_value(case.identity.as_ref()?),
        DataCategory::Contact => serde_json::to_value(case.contact.as_ref()?),
        DataCategory::Documents => serde_json::to_value(&case.documents),
        DataCategory::Family => serde_json::to_value(case.family.as_ref()?),
        DataCategory::Health => serde_json::to_value(case.health.as_ref()?),
        DataCategory::Protection => serde_json::to_value(case.protection.as_ref()?),
        DataCategory::Asylum => serde_json::to_value(case.asylum.as_ref()?),
        DataCategory::ChildSafeguards => serde_json::to_value(case.child_safeguards.as_ref()?),
        DataCategory::ReturnLogistics => serde_json::to_value(case.return_logistics.as_ref()?),
        DataCategory::ReintegrationNeeds => serde_json::to_value(case.reintegration_needs.as_ref()?),
        DataCategory::TracingWishes => serde_json::to_value(case.tracing_wishes.as_ref()?),
        DataCategory::FamilyAssessment => serde_json::to_value(case.family_assessment.as_ref()?),
        DataCategory::CaseNotes => serde_json::to_value(&case.case_notes),
    };
    // Serialising plain data structs cannot fail; treat a failure as "nothing to send".
    value.ok()
}

/// Keeps only the named fields, dropping whatever ends up empty.
fn keep_fields(value: Value, fields: Fields) -> Option<Value> {
    match value {
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> = map.into_iter().filter(|(key, _)| fields.includes(key)).collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(items) => {
            let kept: Vec<Value> = items.into_iter().filter_map(|item| keep_fields(item, fields)).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        Value::Null => None,
        scalar => matches!(fields, Fields::All).then_some(scalar),
    }
}

/// The part of `category` that `purpose` may need, or `None` when that part is empty.
pub fn project(case: &Case, purpose: Purpose, category: DataCategory) -> Option<Value> {
    let fields = needed_fields(purpose, category)?;
    keep_fields(category_value(case, category)?, fields)
}

/// The payload for an allow decision: exactly the sent categories, each cut to
/// the purpose baseline. A deny yields an empty payload.
pub fn minimise(case: &Case, decision: &Decision) -> Payload {
    Payload(
        decision
            .sent()
            .keys()
            .filter_map(|category| project(case, decision.purpose(), *category).map(|value| (*category, value)))
            .collect(),
    )
}
