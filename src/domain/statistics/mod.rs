//! Statistics that cannot re-identify anyone (issue 20 §2), for the
//! coordinating body, DPOs and auditors: the periods they are released
//! for, and the disclosure control every released count goes through.
//!
//! Three rules together keep one case from being isolated:
//! - **fixed periods, released once closed**: calendar months and quarters
//!   only, never a range a caller picks, and only after they end, so a
//!   period's table never changes and no two answers differ by a day;
//! - **suppression**: a cell whose true count is under the threshold is
//!   not released at all (flagged `suppressed`);
//! - **rounding**: every released count is rounded to a multiple of the
//!   base, so that two released cells (of two overlapping periods, or of a
//!   total and its parts) never differ by fewer than `base` cases.
//!
//! Pure: counts in, released cells out.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ParseError;

pub mod merge;
pub mod tables;

/// A calendar month or quarter, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Month { year: i32, month: u32 },
    Quarter { year: i32, quarter: u32 },
}

/// How long after a period ends it is released.
pub const SETTLING: chrono::Duration = chrono::Duration::hours(1);

/// Years a period may name: a gateway keeps nothing older or newer.
const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

impl Period {
    /// `2026-11` (a month) or `2026-Q4` (a quarter).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        const INVALID: ParseError = ParseError::new("period", "expected a month (2026-11) or a quarter (2026-Q4)");
        let (year, rest) = text.split_once('-').ok_or(INVALID)?;
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return Err(INVALID);
        }
        let year: i32 = year.parse().map_err(|_| INVALID)?;
        if !YEARS.contains(&year) {
            return Err(INVALID);
        }
        let number = |digits: &str, width: usize| -> Result<u32, ParseError> {
            if digits.len() != width || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(INVALID);
            }
            digits.parse().map_err(|_| INVALID)
        };
        match rest.strip_prefix('Q') {
            Some(quarter) => match number(quarter, 1)? {
                quarter @ 1..=4 => Ok(Self::Quarter { year, quarter }),
                _ => Err(INVALID),
            },
            None => match number(rest, 2)? {
                month @ 1..=12 => Ok(Self::Month { year, month }),
                _ => Err(INVALID),
            },
        }
    }

    /// The first instant of the period.
    pub fn start(self) -> DateTime<Utc> {
        let (year, month) = match self {
            Self::Month { year, month } => (year, month),
            Self::Quarter { year, quarter } => (year, 3 * quarter - 2),
        };
        first_instant(year, month)
    }

    /// The first instant after the period.
    pub fn end(self) -> DateTime<Utc> {
        let (year, month) = match self {
            Self::Month { year, month: 12 } | Self::Quarter { year, quarter: 4 } => (year + 1, 1),
            Self::Month { year, month } => (year, month + 1),
            Self::Quarter { year, quarter } => (year, 3 * quarter + 1),
        };
        first_instant(year, month)
    }

    /// Whether the period has ended at `now`.
    pub fn is_closed_at(self, now: DateTime<Utc>) -> bool {
        self.end() <= now
    }

    /// When the period is released: [`SETTLING`] after it ends, so that
    /// every event of its last moments has been committed (stamped by one
    /// node's clock, committed a moment later, or by a node whose clock is a
    /// little behind) before anything is counted.
    pub fn released_from(self) -> DateTime<Utc> {
        self.end() + SETTLING
    }

    /// Whether the period may be released at `now`.
    pub fn is_released_at(self, now: DateTime<Utc>) -> bool {
        self.released_from() <= now
    }

    /// Whether `at` falls within the period.
    pub fn contains(self, at: DateTime<Utc>) -> bool {
        self.start() <= at && at < self.end()
    }

    /// The months the period is made of.
    pub fn months(self) -> Vec<Period> {
        match self {
            Self::Month { .. } => vec![self],
            Self::Quarter { year, quarter } => (3 * quarter - 2..=3 * quarter).map(|month| Self::Month { year, month }).collect(),
        }
    }

    /// The last period of this kind closed at `now`.
    pub fn last_closed(quarterly: bool, now: DateTime<Utc>) -> Self {
        let (year, month) = (now.year(), now.month());
        let this = if quarterly { Self::Quarter { year, quarter: (month - 1) / 3 + 1 } } else { Self::Month { year, month } };
        this.previous()
    }

    /// The period of the same kind just before this one.
    pub fn previous(self) -> Self {
        match self {
            Self::Month { year, month: 1 } => Self::Month { year: year - 1, month: 12 },
            Self::Month { year, month } => Self::Month { year, month: month - 1 },
            Self::Quarter { year, quarter: 1 } => Self::Quarter { year: year - 1, quarter: 4 },
            Self::Quarter { year, quarter } => Self::Quarter { year, quarter: quarter - 1 },
        }
    }
}

fn first_instant(year: i32, month: u32) -> DateTime<Utc> {
    // Every (year, month) built above is a valid first of a month.
    let date = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Self::Quarter { year, quarter } => write!(f, "{year:04}-Q{quarter}"),
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Period::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Period {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Period".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{4}-(0[1-9]|1[0-2]|Q[1-4])$",
            "description": "A calendar month (2026-11) or quarter (2026-Q4), in UTC."
        })
    }
}

/// The smallest rounding base and suppression threshold a gateway accepts.
pub const MIN_ROUNDING_BASE: u64 = 5;
pub const MIN_THRESHOLD: u64 = 5;

/// How counts are released: rounded to a multiple of `base`, and withheld
/// below `threshold`. Built only within the floors above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DisclosureControl {
    rounding_base: u64,
    threshold: u64,
}

/// A disclosure control below the floors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlTooWeak {
    #[error("the rounding base must be at least {MIN_ROUNDING_BASE}")]
    RoundingBase,
    #[error("the suppression threshold must be at least {MIN_THRESHOLD}")]
    Threshold,
}

impl Default for DisclosureControl {
    /// Counts rounded to base 5; cells under 10 suppressed.
    fn default() -> Self {
        Self { rounding_base: 5, threshold: 10 }
    }
}

impl DisclosureControl {
    pub fn new(rounding_base: u64, threshold: u64) -> Result<Self, ControlTooWeak> {
        if rounding_base < MIN_ROUNDING_BASE {
            return Err(ControlTooWeak::RoundingBase);
        }
        if threshold < MIN_THRESHOLD {
            return Err(ControlTooWeak::Threshold);
        }
        Ok(Self { rounding_base, threshold })
    }

    pub fn rounding_base(self) -> u64 {
        self.rounding_base
    }

    pub fn threshold(self) -> u64 {
        self.threshold
    }

    /// The released form of a true count.
    pub fn release(self, count: u64) -> Cell {
        if count == 0 {
            // A true zero says nobody, which identifies nobody: released as it is.
            return Cell::Released { value: 0 };
        }
        if count < self.threshold {
            return Cell::Suppressed;
        }
        // To the nearest multiple, halves up; but never below the first multiple
        // at or above the threshold: a value under it could only come from
        // counts right at the threshold, and would tell the exact count
        // (base 11, threshold 16: 16 alone would round to 11).
        let base = self.rounding_base;
        let rounded = (count + base / 2) / base * base;
        let floor = self.threshold.div_ceil(base) * base;
        Cell::Released { value: rounded.max(floor) }
    }
}

/// One released count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum Cell {
    /// Rounded to a multiple of the rounding base (0 only for a true zero).
    Released { value: u64 },
    /// Fewer than the threshold, and more than none: not released.
    Suppressed,
    /// Only in a merge of several gateways' tables: the sum of the cells
    /// released, to which some gateways' suppressed cells (each fewer than
    /// its threshold) would add.
    PartlySuppressed { at_least: u64 },
}

impl Cell {
    /// The count, when it is told whole.
    pub fn value(self) -> Option<u64> {
        match self {
            Self::Released { value } => Some(value),
            Self::Suppressed | Self::PartlySuppressed { .. } => None,
        }
    }

    /// The cells of several gateways together: told whole only when each is
    /// (a true zero leaves the other as it was).
    pub fn sum(self, other: Cell) -> Cell {
        let known = |cell: Cell| match cell {
            Self::Released { value } | Self::PartlySuppressed { at_least: value } => value,
            Self::Suppressed => 0,
        };
        match (self, other) {
            // A true zero adds nothing, and takes nothing away from what is told of the other.
            (Self::Released { value: 0 }, cell) | (cell, Self::Released { value: 0 }) => cell,
            (Self::Released { value: a }, Self::Released { value: b }) => Self::Released { value: a.saturating_add(b) },
            _ => Self::PartlySuppressed { at_least: known(self).saturating_add(known(other)) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn periods_parse_print_and_bound_their_time() {
        let q4 = Period::parse("2026-Q4").unwrap();
        assert_eq!(q4.to_string(), "2026-Q4");
        assert_eq!(q4.start(), Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap());
        assert_eq!(q4.end(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        let november = Period::parse("2026-11").unwrap();
        assert_eq!(november.end(), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(q4.months().into_iter().map(|m| m.to_string()).collect::<Vec<_>>(), ["2026-10", "2026-11", "2026-12"]);
        for bad in ["2026", "2026-13", "2026-00", "2026-Q0", "2026-Q5", "26-11", "2026-1", "2026-q4", "+026-11", "2026-11-01", " 2026-11", "1999-01"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        let now = Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).unwrap();
        assert!(november.is_closed_at(now));
        assert!(!q4.is_closed_at(now), "a quarter is released only once it has ended");
        assert!(q4.is_closed_at(q4.end()));
        assert!(!q4.is_released_at(q4.end()) && !q4.is_released_at(q4.end() + chrono::Duration::minutes(59)));
        assert!(q4.is_released_at(q4.end() + chrono::Duration::hours(1)));
        assert_eq!(Period::last_closed(true, now), Period::Quarter { year: 2026, quarter: 3 });
        assert_eq!(Period::last_closed(false, now), november);
        assert_eq!(Period::last_closed(false, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()).to_string(), "2026-12");
        assert_eq!(Period::last_closed(true, Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap()).to_string(), "2026-Q4");
    }

    #[test]
    fn controls_below_the_floors_are_refused() {
        assert_eq!(DisclosureControl::new(4, 10), Err(ControlTooWeak::RoundingBase));
        assert_eq!(DisclosureControl::new(5, 4), Err(ControlTooWeak::Threshold));
        assert!(DisclosureControl::new(5, 5).is_ok());
        let control = DisclosureControl::default();
        let released: Vec<Option<u64>> = [0, 1, 9, 10, 12, 13, 17, 18, 100].iter().map(|c| control.release(*c).value()).collect();
        assert_eq!(released, [Some(0), None, None, Some(10), Some(10), Some(15), Some(15), Some(20), Some(100)]);
        // Found by the property below: the threshold's own count must not round under it, alone.
        let odd = DisclosureControl::new(11, 16).unwrap();
        assert_eq!(odd.release(16), odd.release(17));
        assert_eq!(odd.release(16).value(), Some(22));
    }

    fn controls() -> impl Strategy<Value = DisclosureControl> {
        (MIN_ROUNDING_BASE..=20, MIN_THRESHOLD..=30).prop_map(|(base, threshold)| DisclosureControl::new(base, threshold).unwrap())
    }

    fn periods() -> impl Strategy<Value = Period> {
        prop_oneof![
            (2020..2030i32, 1..=12u32).prop_map(|(year, month)| Period::Month { year, month }),
            (2020..2030i32, 1..=4u32).prop_map(|(year, quarter)| Period::Quarter { year, quarter }),
        ]
    }

    proptest! {
        /// No cell under the threshold is ever released, and nothing
        /// released is other than a multiple of the base.
        #[test]
        fn nothing_under_the_threshold_is_released(control in controls(), count in prop_oneof![0u64..40, 0u64..10_000]) {
            match control.release(count) {
                Cell::Suppressed => prop_assert!(count > 0 && count < control.threshold()),
                Cell::Released { value } => {
                    prop_assert!(count == 0 || count >= control.threshold());
                    prop_assert_eq!(value % control.rounding_base(), 0);
                    // Within half the base; or, near the threshold, the first multiple at or above it.
                    let base = control.rounding_base();
                    let floor = control.threshold().div_ceil(base) * base;
                    prop_assert!(value.abs_diff(count) <= base / 2 || (value == floor && count < floor), "rounded too far");
                    prop_assert_eq!(value == 0, count == 0);
                }
                Cell::PartlySuppressed { .. } => prop_assert!(false, "one gateway never releases a lower bound"),
            }
        }

        /// Rounding never reveals an exact small count: every count that
        /// could be small (one to twice the base) shares its released form
        /// with another true count.
        #[test]
        fn rounding_never_reveals_an_exact_small_count(control in controls(), count in 1u64..200) {
            let released = control.release(count);
            let alike = (count.saturating_sub(control.rounding_base())..=count + control.rounding_base())
                .filter(|other| *other != count && *other > 0 && control.release(*other) == released)
                .count();
            prop_assert!(alike > 0, "{count} is told apart from every count around it");
        }

        /// Two released cells, of overlapping periods or any other two,
        /// never differ by a single case: both are multiples of the base.
        #[test]
        fn two_released_cells_never_differ_by_one_case(control in controls(), a in prop_oneof![0u64..40, 0u64..10_000], b in 0u64..40) {
            if let (Some(x), Some(y)) = (control.release(a).value(), control.release(b).value()) {
                let difference = x.abs_diff(y);
                prop_assert!(difference == 0 || difference >= control.rounding_base());
            }
        }

        #[test]
        fn periods_round_trip_and_tile_time(period in periods()) {
            prop_assert_eq!(Period::parse(&period.to_string()).unwrap(), period);
            prop_assert!(period.start() < period.end());
            prop_assert_eq!(period.previous().end(), period.start());
            let months = period.months();
            prop_assert_eq!(months.first().map(|m| m.start()), Some(period.start()));
            prop_assert_eq!(months.last().map(|m| m.end()), Some(period.end()));
            prop_assert!(period.contains(period.start()) && !period.contains(period.end()));
        }
    }
}
