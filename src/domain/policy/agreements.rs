//! The sharing agreements a DPO's permits rest on (DPO): the annotations
//! `@agreement`, `@legal_basis`, `@review_by` and `@expires` on a permit, read
//! and checked when the set compiles; a permit whose agreement expired stops
//! applying, and permits near their review or expiry are listed.
//!
//! Dates are calendar days in UTC: a permit `@expires("2027-06-30")` applies
//! through 30 June 2027 and no longer from 1 July, 00:00 UTC.

use chrono::{DateTime, Days, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The annotations this module reads.
const ANNOTATIONS: [&str; 4] = ["agreement", "legal_basis", "review_by", "expires"];

/// How long ahead a review or an expiry is listed as due.
pub const DUE_WITHIN_DAYS: u64 = 30;

/// What a permit says of the agreement it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Agreement {
    /// The permit's `@id`.
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_by: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<NaiveDate>,
}

/// Why an agreement needs the DPO's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Due {
    /// It expired: the permit no longer applies.
    Expired,
    /// It expires within [`DUE_WITHIN_DAYS`] days.
    Expires,
    /// Its review date passed or falls within [`DUE_WITHIN_DAYS`] days.
    Review,
}

/// An agreement and why it is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AgreementDue {
    pub due: Due,
    #[serde(flatten)]
    pub agreement: Agreement,
}

fn date(name: &str, text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == text)
        .ok_or_else(|| format!("@{name}(\"{text}\") must be a date written YYYY-MM-DD"))
}

fn text(name: &str, value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 {
        return Err(format!("@{name} must name something, in 1 to 200 characters"));
    }
    Ok(trimmed.to_owned())
}

/// The agreement annotations of one policy, checked: only a permit may
/// carry them (a forbid always applies), dates are `YYYY-MM-DD`, and a
/// review falls no later than the expiry. `None` when it has none.
pub fn read(id: &str, is_permit: bool, annotation: impl Fn(&str) -> Option<String>) -> Result<Option<Agreement>, Vec<String>> {
    let Some(first) = ANNOTATIONS.into_iter().find(|name| annotation(name).is_some()) else {
        return Ok(None);
    };
    if !is_permit {
        return Err(vec![format!("@{first} applies to permits only: a forbid applies whatever the agreements say")]);
    }
    let mut problems = Vec::new();
    let texts = ["agreement", "legal_basis"].map(|name| annotation(name).map(|v| text(name, &v)).transpose());
    let dates = ["review_by", "expires"].map(|name| annotation(name).map(|v| date(name, &v)).transpose());
    let [agreement, legal_basis] = texts.map(|r| r.unwrap_or_else(|p| {
        problems.push(p);
        None
    }));
    let [review_by, expires] = dates.map(|r| r.unwrap_or_else(|p| {
        problems.push(p);
        None
    }));
    if let (Some(review), Some(expiry)) = (review_by, expires)
        && review > expiry
    {
        problems.push(format!("@review_by (\"{review}\") must not fall after @expires (\"{expiry}\")"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Some(Agreement { policy: id.to_owned(), agreement, legal_basis, review_by, expires }))
}

impl Agreement {
    /// Whether the permit still applies at `at`: through its expiry day.
    /// The instant it ends: the end of its last day, UTC; `None` without `@expires`.
    pub fn ends(&self) -> Option<DateTime<Utc>> {
        self.expires.and_then(|last_day| last_day.succ_opt()).and_then(|day| day.and_hms_opt(0, 0, 0)).map(|t| t.and_utc())
    }

    pub fn in_force_at(&self, at: DateTime<Utc>) -> bool {
        self.expires.is_none_or(|last_day| at.date_naive() <= last_day)
    }

    /// Why it is due at `at`, if it is: expired, expiring or to be reviewed
    /// within [`DUE_WITHIN_DAYS`] days (the most pressing first).
    pub fn due_at(&self, at: DateTime<Utc>) -> Option<Due> {
        let today = at.date_naive();
        let horizon = today.checked_add_days(Days::new(DUE_WITHIN_DAYS)).unwrap_or(NaiveDate::MAX);
        if !self.in_force_at(at) {
            Some(Due::Expired)
        } else if self.expires.is_some_and(|d| d <= horizon) {
            Some(Due::Expires)
        } else if self.review_by.is_some_and(|d| d <= horizon) {
            Some(Due::Review)
        } else {
            None
        }
    }
}

/// The agreements of `agreements` due at `at`, the most pressing first.
pub fn due_at<'a>(agreements: impl Iterator<Item = &'a Agreement>, at: DateTime<Utc>) -> Vec<AgreementDue> {
    let mut due: Vec<AgreementDue> =
        agreements.filter_map(|agreement| agreement.due_at(at).map(|due| AgreementDue { due, agreement: agreement.clone() })).collect();
    due.sort_by(|a, b| (a.due, &a.agreement.policy).cmp(&(b.due, &b.agreement.policy)));
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn annotations<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn a_permit_applies_through_its_expiry_day() {
        let pairs = [("agreement", "ITA-NGA MoU 2025"), ("expires", "2027-06-30")];
        let agreement = read("p", true, annotations(&pairs)).unwrap().unwrap();
        assert!(agreement.in_force_at(at(2027, 6, 30, 23)));
        assert!(!agreement.in_force_at(at(2027, 7, 1, 0)));
        assert_eq!(agreement.due_at(at(2027, 7, 1, 0)), Some(Due::Expired));
        assert_eq!(agreement.due_at(at(2027, 6, 1, 0)), Some(Due::Expires));
        assert_eq!(agreement.due_at(at(2027, 5, 30, 0)), None);
        assert_eq!(read("p", true, annotations(&[])), Ok(None));
    }

    #[test]
    fn reviews_are_due_thirty_days_ahead_and_after() {
        let pairs = [("review_by", "2027-01-31")];
        let agreement = read("p", true, annotations(&pairs)).unwrap().unwrap();
        assert_eq!(agreement.due_at(at(2026, 12, 31, 12)), None);
        assert_eq!(agreement.due_at(at(2027, 1, 1, 0)), Some(Due::Review));
        assert_eq!(agreement.due_at(at(2027, 3, 1, 0)), Some(Due::Review), "still due once passed");
        assert!(agreement.in_force_at(at(2030, 1, 1, 0)), "a review date never stops a permit");
    }

    #[test]
    fn malformed_or_misplaced_annotations_are_refused() {
        let refused = |pairs: &[(&str, &str)], is_permit: bool| read("p", is_permit, annotations(pairs)).unwrap_err().join("; ");
        assert!(refused(&[("expires", "2027-6-30")], true).contains("YYYY-MM-DD"));
        assert!(refused(&[("expires", "2027-02-30")], true).contains("YYYY-MM-DD"));
        assert!(refused(&[("agreement", "  ")], true).contains("1 to 200"));
        assert!(refused(&[("review_by", "2028-01-01"), ("expires", "2027-12-31")], true).contains("must not fall after"));
        assert!(refused(&[("expires", "2027-12-31")], false).contains("permits only"));
    }
}
