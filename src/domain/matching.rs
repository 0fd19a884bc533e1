//! Match keys (issue 22 §2): how two gateways tell that tracing requests
//! about the same family are open on both sides, without showing each other
//! a name. Pure: the keys are the inputs of an oblivious pseudo-random
//! function the responding gateway evaluates blindly (`crypto`), never sent
//! in the clear.
//!
//! A person is reduced to name parts (transliterated to ASCII, lower case,
//! letters only), each also coded by its sound (Double Metaphone), the
//! whole name, the year of birth and the sex. A key is one of those
//! "families" (a part, a part's sound, the whole name) with a year and a
//! sex. The responding gateway indexes each person once, under the year
//! recorded; the asking gateway asks under the year before, the year and
//! the year after (a birth year is often estimated), and under every sex
//! when it does not know it. Agreement is counted per family, so the three
//! years never count three times: a match needs `threshold` families.

use std::collections::{BTreeMap, BTreeSet};

use rphonetic::{DoubleMetaphone, Encoder};

use super::case::Sex;

/// Domain separation of the keys, versioned with the derivation below.
const VERSION: &str = "rgw-match-v1";
/// Name parts shorter than this say too little to be a key of their own.
const MIN_PART: usize = 2;
/// At most this many name parts of one person are keyed (beyond, names are
/// noise, and a long list would let one query try many names).
pub const MAX_PARTS: usize = 8;

/// A person as matching sees them: names as written (any script), and
/// what narrows them down. Nothing else of a case is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonToMatch {
    pub names: Vec<String>,
    pub birth_year: Option<i32>,
    pub sex: Option<Sex>,
}

/// What a key agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// One name part, spelt the same once transliterated.
    Part,
    /// One name part, sounding the same.
    Sound,
    /// The whole name, its parts in any order.
    WholeName,
}

impl KeyKind {
    const fn tag(self) -> &'static str {
        match self {
            Self::Part => "part",
            Self::Sound => "sound",
            Self::WholeName => "name",
        }
    }
}

/// A family of keys: one agreement, whatever the year or sex variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyFamily {
    pub kind: KeyKind,
    token: String,
}

/// The input of the pseudo-random function for one key. Never logged,
/// never sent: it holds a name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchKey(Vec<u8>);

impl MatchKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Shows nothing of the name the key holds.
impl std::fmt::Debug for MatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MatchKey(..)")
    }
}

/// The name parts of `names`: transliterated to ASCII, lower case, split
/// on anything not a letter, each at least [`MIN_PART`] letters, without
/// repeats, at most [`MAX_PARTS`].
pub fn name_parts(names: &[String]) -> Vec<String> {
    let mut parts = Vec::new();
    for name in names {
        let ascii = deunicode::deunicode(name).to_ascii_lowercase();
        for part in ascii.split(|c: char| !c.is_ascii_lowercase()) {
            if part.len() >= MIN_PART && !parts.iter().any(|p| p == part) && parts.len() < MAX_PARTS {
                parts.push(part.to_owned());
            }
        }
    }
    parts
}

/// The families of keys of a person's names: each part, each part's sound,
/// and the whole name (sorted parts: order differs between registries).
pub fn families(person: &PersonToMatch) -> BTreeSet<KeyFamily> {
    let parts = name_parts(&person.names);
    let coder = DoubleMetaphone::default();
    let mut families = BTreeSet::new();
    for part in &parts {
        families.insert(KeyFamily { kind: KeyKind::Part, token: part.clone() });
        let sound = coder.encode(part);
        if !sound.is_empty() {
            families.insert(KeyFamily { kind: KeyKind::Sound, token: sound });
        }
    }
    if parts.len() > 1 {
        let mut sorted = parts.clone();
        sorted.sort();
        families.insert(KeyFamily { kind: KeyKind::WholeName, token: sorted.join(" ") });
    }
    families
}

fn sex_tag(sex: Option<Sex>) -> &'static str {
    match sex {
        Some(Sex::Female) => "f",
        Some(Sex::Male) => "m",
        Some(Sex::Other) | Some(Sex::Unknown) | None => "u",
    }
}

fn year_tag(year: Option<i32>) -> String {
    year.map_or_else(|| "?".to_owned(), |y| y.to_string())
}

fn key(family: &KeyFamily, year: &str, sex: &str) -> MatchKey {
    MatchKey(format!("{VERSION}\0{}\0{}\0{year}\0{sex}", family.kind.tag(), family.token).into_bytes())
}

/// The keys a responding gateway indexes for a person: one per family,
/// under the year and sex recorded.
pub fn index_keys(person: &PersonToMatch) -> BTreeSet<MatchKey> {
    let (year, sex) = (year_tag(person.birth_year), sex_tag(person.sex));
    families(person).iter().map(|family| key(family, &year, sex)).collect()
}

/// The keys an asking gateway asks about for a person it seeks, by family:
/// each under the year before, the year and the year after (or unknown),
/// and under every sex when the sex is not known.
pub fn query_keys(person: &PersonToMatch) -> BTreeMap<KeyFamily, Vec<MatchKey>> {
    let years: Vec<String> = match person.birth_year {
        Some(year) => (year - 1..=year + 1).map(|y| y.to_string()).collect(),
        None => vec![year_tag(None)],
    };
    let sexes: Vec<&str> = match person.sex {
        Some(Sex::Female | Sex::Male) => vec![sex_tag(person.sex)],
        _ => vec!["f", "m", "u"],
    };
    families(person)
        .into_iter()
        .map(|family| {
            let keys = years.iter().flat_map(|year| sexes.iter().map(|sex| key(&family, year, sex))).collect();
            (family, keys)
        })
        .collect()
}

/// How many families of a query agree with a candidate: a family agrees
/// when any of its keys' outputs is among the candidate's. `T` is the
/// pseudo-random function's output (or, in tests, the key itself).
pub fn agreement<T: Ord>(query: &BTreeMap<KeyFamily, Vec<T>>, candidate: &BTreeSet<T>) -> usize {
    query.values().filter(|outputs| outputs.iter().any(|output| candidate.contains(output))).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(names: &[&str], birth_year: Option<i32>, sex: Option<Sex>) -> PersonToMatch {
        PersonToMatch { names: names.iter().map(|n| (*n).to_owned()).collect(), birth_year, sex }
    }

    /// Agreement of a query about `sought` with the index of `held`, the keys standing for their outputs.
    fn agree(sought: &PersonToMatch, held: &PersonToMatch) -> usize {
        agreement(&query_keys(sought), &index_keys(held))
    }

    #[test]
    fn names_are_transliterated_split_and_deduplicated() {
        assert_eq!(name_parts(&["Hodan Ali".into(), "Hodán  ALI".into()]), ["hodan", "ali"]);
        assert_eq!(name_parts(&["Абди Варсаме".into()]), ["abdi", "varsame"]);
        assert_eq!(name_parts(&["O'Neil-Smith".into(), "J.".into()]), ["neil", "smith"]);
        assert!(name_parts(&["a b c".into()]).is_empty());
    }

    #[test]
    fn the_same_person_agrees_on_every_family_and_within_a_year() {
        let held = person(&["Grace", "Okafor"], Some(1985), Some(Sex::Female));
        let all = families(&held).len();
        assert_eq!(all, 5, "two parts, two sounds, the whole name");
        assert_eq!(agree(&held, &held), all);
        assert_eq!(agree(&person(&["Okafor Grace"], Some(1986), Some(Sex::Female)), &held), all);
        assert_eq!(agree(&person(&["Grace", "Okafor"], Some(1984), None), &held), all);
        // Two years off, or the other sex: nothing.
        assert_eq!(agree(&person(&["Grace", "Okafor"], Some(1987), Some(Sex::Female)), &held), 0);
        assert_eq!(agree(&person(&["Grace", "Okafor"], Some(1985), Some(Sex::Male)), &held), 0);
    }

    #[test]
    fn spellings_that_sound_alike_agree_on_their_sound() {
        let held = person(&["Mohamed", "Warsame"], Some(1980), Some(Sex::Male));
        // Spelt otherwise, one part: its sound still agrees, and the family name on both.
        assert_eq!(agree(&person(&["Mohammed", "Warsame"], Some(1980), Some(Sex::Male)), &held), 3);
        assert_eq!(agree(&person(&["Hassan", "Abdi"], Some(1980), Some(Sex::Male)), &held), 0);
    }

    #[test]
    fn keys_show_no_name_when_printed() {
        let keys = index_keys(&person(&["Grace", "Okafor"], Some(1985), Some(Sex::Female)));
        assert!(!format!("{keys:?}").contains("okafor"));
    }

    #[test]
    fn a_long_list_of_names_is_cut_to_the_most_parts_keyed() {
        let names: Vec<String> = (0..20).map(|i| format!("name{}", "x".repeat(i))).collect();
        assert_eq!(name_parts(&names).len(), MAX_PARTS);
    }
}
