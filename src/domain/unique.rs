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

/// A [`set`] of at least one member.
pub fn non_empty_set<'de, D, T>(deserializer: D) -> Result<BTreeSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    let set = set(deserializer)?;
    if set.is_empty() { Err(D::Error::custom("must name at least one")) } else { Ok(set) }
}

/// A list of at most `MAX` entries: every array of a referral is bounded
/// (the schema says `maxItems`), far beyond what a real case holds, so that
/// no request can queue thousands of entries.
pub fn list_of_at_most<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Vec::<T>::deserialize(deserializer)?;
    if items.len() > MAX {
        return Err(D::Error::custom(format!("must have at most {MAX} entries")));
    }
    Ok(items)
}

/// As [`list_of_at_most`], without duplicates; the order given is kept.
pub fn unique_list_of_at_most<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    let items = list_of_at_most::<D, T, MAX>(deserializer)?;
    let distinct: BTreeSet<&T> = items.iter().collect();
    if distinct.len() != items.len() {
        return Err(D::Error::custom("must not contain duplicates"));
    }
    Ok(items)
}

/// As [`set`], with at most `MAX` members.
pub fn set_of_at_most<'de, D, T, const MAX: usize>(deserializer: D) -> Result<BTreeSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord,
{
    let items = set::<D, T>(deserializer)?;
    if items.len() > MAX {
        return Err(D::Error::custom(format!("must have at most {MAX} entries")));
    }
    Ok(items)
}

/// Weeks of pregnancy: 1 to 45.
pub fn pregnancy_weeks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    match Option::<u8>::deserialize(deserializer)? {
        Some(weeks) if !(1..=45).contains(&weeks) => Err(D::Error::custom("must be between 1 and 45")),
        other => Ok(other),
    }
}
