//! Deserialisers that refuse what a plain serde collection would silently
//! accept: duplicate set members, and numbers outside a documented range.
//! The published JSON Schema says the same (`uniqueItems`, `minimum`/`maximum`).

use std::collections::BTreeSet;

use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// A set given as a JSON array without duplicates. A duplicate is refused, not
/// folded: it usually means a client bug, and the input is ambiguous.
pub fn set<'de, D, T>(deserializer: D) -> Result<BTreeSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    let items = Vec::<T>::deserialize(deserializer)?;
    let count = items.len();
    let set: BTreeSet<T> = items.into_iter().collect();
    if set.len() == count {
        Ok(set)
    } else {
        Err(D::Error::custom("must not contain duplicates"))
    }
}

/// Weeks of pregnancy: 1 to 45.
pub fn pregnancy_weeks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    match Option::<u8>::deserialize(deserializer)? {
        Some(weeks) if !(1..=45).contains(&weeks) => Err(D::Error::custom("must be between 1 and 45")),
        other => Ok(other),
    }
}
