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
//! sex. The responding gateway indexes each person under the year and sex
//! recorded; the asking gateway asks under the year before, the year and
//! the year after (a birth year is often estimated). Whatever one side does
//! not know (year or sex) never keeps two people apart, and what both know
//! always does (see [`query_keys`]). Agreement is counted per family, so
//! the variants never count twice: a match needs `threshold` families.

use std::collections::{BTreeMap, BTreeSet};

use rphonetic::{DoubleMetaphone, Encoder};

use super::case::Sex;

/// Domain separation of the keys, versioned with the derivation below.
const VERSION: &str = "rgw-match-v1";
/// Name parts shorter than this say too little to be a key of their own.
const MIN_PART: usize = 2;
/// At most this many name parts of one person are keyed (beyond, names are
/// noise, and a long list would let one query try many names).
pub const MAX_PARTS: usize = 6;

/// A person as matching sees them: names as written (any script), other
/// names they are known by, and what narrows them down. Nothing else of a
/// case is used.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PersonToMatch {
    /// Given and family names: their parts, and the whole name they make.
    pub names: Vec<String>,
    /// Other names: their parts only (an alias never makes the whole name).
    pub other_names: Vec<String>,
    pub birth_year: Option<i32>,
    pub sex: Option<Sex>,
}

/// Shows how much is known, never a name.
impl std::fmt::Debug for PersonToMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonToMatch")
            .field("names", &self.names.len())
            .field("other_names", &self.other_names.len())
            .field("birth_year_known", &self.birth_year.is_some())
            .field("sex_known", &self.sex.is_some())
            .finish()
    }
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
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyFamily {
    pub kind: KeyKind,
    token: String,
}

/// Shows the kind, never the name part.
impl std::fmt::Debug for KeyFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFamily({:?}, ..)", self.kind)
    }
}

/// The input of the pseudo-random function for one key. Never logged,
/// never sent: it holds a name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchKey(Vec<u8>);

impl MatchKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key that stands for no name: padding, made of random bytes the
    /// caller draws (the domain draws none). Never equal to a real key,
    /// whose bytes start with the version tag.
    pub fn filler(random: [u8; 32]) -> Self {
        Self(random.to_vec())
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

/// The families of keys of a person's names: each part (of their names and
/// other names, [`MAX_PARTS`] in all), each part's sound, and the whole
/// name (given and family names only, parts sorted: order differs between
/// registries). A part and its sound are two agreements on purpose: the
/// same spelling says more than the same sound.
pub fn families(person: &PersonToMatch) -> BTreeSet<KeyFamily> {
    let parts = name_parts(&person.names);
    let all_parts = name_parts(&person.names.iter().chain(&person.other_names).cloned().collect::<Vec<_>>());
    let coder = DoubleMetaphone::default();
    let mut families = BTreeSet::new();
    for part in &all_parts {
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

/// The tag of a year or sex no one recorded.
const UNKNOWN: &str = "?";
/// The tag a recorded year or sex is also indexed under, for a query that
/// does not know it. Distinct from [`UNKNOWN`]: a query that knows the
/// year must not meet everyone through it.
const ANY: &str = "*";

fn key(family: &KeyFamily, year: &str, sex: &str) -> MatchKey {
    MatchKey(format!("{VERSION}\0{}\0{}\0{year}\0{sex}", family.kind.tag(), family.token).into_bytes())
}

fn known_sex(sex: Option<Sex>) -> Option<&'static str> {
    match sex {
        Some(Sex::Female) => Some("f"),
        Some(Sex::Male) => Some("m"),
        Some(Sex::Other) => Some("o"),
        Some(Sex::Unknown) | None => None,
    }
}

/// The keys of every family of `person`, under each year and sex tag.
fn keys_under(person: &PersonToMatch, years: &[String], sexes: &[&str]) -> BTreeMap<KeyFamily, Vec<MatchKey>> {
    families(person)
        .into_iter()
        .map(|family| {
            let keys = years.iter().flat_map(|year| sexes.iter().map(|sex| key(&family, year, sex))).collect();
            (family, keys)
        })
        .collect()
}

/// The keys a responding gateway indexes for a person: each family under
/// the year recorded and [`ANY`] (or [`UNKNOWN`] when none is), and
/// likewise the sex.
pub fn index_keys(person: &PersonToMatch) -> BTreeSet<MatchKey> {
    let years = match person.birth_year {
        Some(year) => vec![year.to_string(), ANY.to_owned()],
        None => vec![UNKNOWN.to_owned()],
    };
    let sexes = match known_sex(person.sex) {
        Some(sex) => vec![sex, ANY],
        None => vec![UNKNOWN],
    };
    keys_under(person, &years, &sexes).into_values().flatten().collect()
}

/// The keys an asking gateway asks about for a person it seeks, by family.
/// A known year is asked as the year before, the year and the year after
/// (a birth year is often estimated), and as [`UNKNOWN`] (the other side
/// may not know it); an unknown one as [`UNKNOWN`] and [`ANY`]. The sex
/// likewise, without the neighbours. So two known years meet only within
/// a year of each other, two known sexes only when equal, and whatever one
/// side does not know never keeps the two apart.
pub fn query_keys(person: &PersonToMatch) -> BTreeMap<KeyFamily, Vec<MatchKey>> {
    let years: Vec<String> = match person.birth_year {
        Some(year) => (year - 1..=year + 1).map(|y| y.to_string()).chain([UNKNOWN.to_owned()]).collect(),
        None => vec![UNKNOWN.to_owned(), ANY.to_owned()],
    };
    let sexes = match known_sex(person.sex) {
        Some(sex) => vec![sex, UNKNOWN],
        None => vec![UNKNOWN, ANY],
    };
    keys_under(person, &years, &sexes)
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
        PersonToMatch { names: names.iter().map(|n| (*n).to_owned()).collect(), other_names: vec![], birth_year, sex }
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
    fn what_one_side_does_not_know_never_keeps_two_people_apart() {
        let known = person(&["Fatoumata", "Camara"], Some(1983), Some(Sex::Female));
        let nothing_known = person(&["Fatoumata", "Camara"], None, None);
        assert_eq!(agree(&nothing_known, &known), 5, "a relative's year and sex left blank");
        assert_eq!(agree(&known, &nothing_known), 5, "the other side's record left them blank");
        assert_eq!(agree(&nothing_known, &nothing_known), 5);
        assert_eq!(agree(&person(&["Fatoumata", "Camara"], None, Some(Sex::Male)), &known), 0, "both know the sex, and it differs");
        assert_eq!(agree(&person(&["Fatoumata", "Camara"], Some(1990), None), &known), 0, "both know the year, seven years apart");
        assert_eq!(agree(&person(&["Fatoumata", "Camara"], Some(1990), None), &nothing_known), 5);
    }

    #[test]
    fn spellings_that_sound_alike_agree_on_their_sound() {
        let held = person(&["Mohamed", "Warsame"], Some(1980), Some(Sex::Male));
        // Spelt otherwise, one part: its sound still agrees, and the family name on both.
        assert_eq!(agree(&person(&["Mohammed", "Warsame"], Some(1980), Some(Sex::Male)), &held), 3);
        assert_eq!(agree(&person(&["Hassan", "Abdi"], Some(1980), Some(Sex::Male)), &held), 0);
    }

    #[test]
    fn keys_families_and_people_show_no_name_when_printed() {
        let grace = person(&["Grace", "Okafor"], Some(1985), Some(Sex::Female));
        let printed = format!("{:?} {:?} {:?} {:?}", index_keys(&grace), families(&grace), query_keys(&grace), grace);
        assert!(!printed.to_lowercase().contains("okafor") && !printed.to_lowercase().contains("grace"), "{printed}");
    }

    #[test]
    fn other_names_give_parts_but_never_the_whole_name() {
        let alias = PersonToMatch { other_names: vec!["Mama Grace".into()], ..person(&["Grace", "Okafor"], Some(1985), Some(Sex::Female)) };
        let by_alias = person(&["Mama", "Okafor"], Some(1985), Some(Sex::Female));
        // mama and okafor, each spelt and sounding alike: 4; "mama okafor" is no whole name of hers.
        assert_eq!(agree(&by_alias, &alias), 4);
        assert_eq!(agree(&alias, &alias), families(&alias).len());
        assert_eq!(families(&alias).iter().filter(|f| f.kind == KeyKind::WholeName).count(), 1);
    }

    #[test]
    fn a_sex_recorded_as_other_is_known_and_meets_only_itself_or_the_unknown() {
        let other = person(&["Alex", "Moyo"], Some(1999), Some(Sex::Other));
        assert_eq!(agree(&person(&["Alex", "Moyo"], Some(1999), Some(Sex::Female)), &other), 0);
        assert_eq!(agree(&person(&["Alex", "Moyo"], Some(1999), Some(Sex::Other)), &other), 5);
        assert_eq!(agree(&person(&["Alex", "Moyo"], Some(1999), None), &other), 5);
    }

    #[test]
    fn a_long_list_of_names_is_cut_to_the_most_parts_keyed() {
        let names: Vec<String> = (0..20).map(|i| format!("name{}", "x".repeat(i))).collect();
        assert_eq!(name_parts(&names).len(), MAX_PARTS);
    }
}
