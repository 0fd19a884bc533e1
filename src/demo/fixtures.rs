//! The scenario referrals under `tests/fixtures/referrals`, moved to the
//! date they are used on.
//!
//! The fixtures are written as of one instant ([`written_at`]): a consent
//! given three weeks before, valid for six months, a travel date three
//! weeks ahead. Tests decide them at that instant. The demo runs on the
//! machine's clock, so it moves every date of a fixture by the whole days
//! between [`written_at`] and its own clock: the case keeps its shape (a
//! girl stays fifteen, a consent stays valid for six months) on any date.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde_json::Value;

/// The instant the fixtures are written for, and the time every test clock starts at.
pub fn written_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).single().unwrap_or_default()
}

/// Whole days from the fixtures' date to `now`'s (negative before it).
pub fn days_since_written(now: DateTime<Utc>) -> Duration {
    Duration::days((now.date_naive() - written_at().date_naive()).num_days())
}

/// Moves every date (`YYYY-MM-DD`) and time (RFC 3339) in `value` by `by`,
/// in place; other strings are left alone, so ids that merely contain a
/// year stay as they are.
pub fn move_dates(value: &mut Value, by: Duration) {
    match value {
        Value::String(text) => {
            if let Some(moved) = moved_date(text, by) {
                *text = moved;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| move_dates(item, by)),
        Value::Object(fields) => fields.values_mut().for_each(|field| move_dates(field, by)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn moved_date(text: &str, by: Duration) -> Option<String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date.checked_add_signed(by).map(|d| d.format("%Y-%m-%d").to_string());
    }
    let time = DateTime::parse_from_rfc3339(text).ok()?;
    let moved = time.checked_add_signed(by)?.with_timezone(&Utc);
    Some(moved.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// The fixture `name` (from the repository root), its dates moved to `now`.
pub fn referral_as_of(name: &str, now: DateTime<Utc>) -> Result<Value, String> {
    let path = format!("tests/fixtures/referrals/{name}.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut referral: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    move_dates(&mut referral, days_since_written(now));
    Ok(referral)
}

/// Writes every fixture, its dates moved to `now`, into `dir`: what a person
/// trying the demo's gateways with curl submits on any date.
pub fn write_moved(dir: &std::path::Path, now: DateTime<Utc>) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let listed = std::fs::read_dir("tests/fixtures/referrals").map_err(|e| format!("tests/fixtures/referrals: {e}"))?;
    for entry in listed {
        let path = entry.map_err(|e| e.to_string())?.path();
        let (Some(name), Some("json")) = (path.file_stem().and_then(|n| n.to_str()), path.extension().and_then(|e| e.to_str())) else {
            continue;
        };
        let referral = referral_as_of(name, now)?;
        let text = serde_json::to_string_pretty(&referral).map_err(|e| e.to_string())?;
        let target = dir.join(format!("{name}.json"));
        std::fs::write(&target, text + "\n").map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_and_times_move_by_whole_days_and_other_strings_stay() {
        let mut value = json!({
            "subject_ref": "ITA-2026-000101",
            "date_of_birth": "2010-03-14",
            "consent": { "given_at": "2026-10-02T09:30:00Z", "scopes": [{ "valid_until": "2027-10-01T00:00:00+02:00" }] },
            "documents": [{ "number": "GN-KD-2010-44817", "expiry": "2028-02-29" }],
            "age": 15,
        });
        move_dates(&mut value, Duration::days(1096));
        assert_eq!(
            value,
            json!({
                "subject_ref": "ITA-2026-000101",
                "date_of_birth": "2013-03-14",
                "consent": { "given_at": "2029-10-02T09:30:00Z", "scopes": [{ "valid_until": "2030-09-30T22:00:00Z" }] },
                "documents": [{ "number": "GN-KD-2010-44817", "expiry": "2031-03-01" }],
                "age": 15,
            })
        );
    }

    #[test]
    fn the_shift_counts_calendar_days_whatever_the_hour() {
        let late = Utc.with_ymd_and_hms(2029, 11, 23, 23, 59, 0).unwrap();
        let early = Utc.with_ymd_and_hms(2029, 11, 24, 0, 1, 0).unwrap();
        assert_eq!(days_since_written(late), Duration::days(1096));
        assert_eq!(days_since_written(early), Duration::days(1097));
        assert_eq!(days_since_written(written_at()), Duration::zero());
        assert_eq!(days_since_written(written_at() - Duration::days(3)), Duration::days(-3));
    }

    #[test]
    fn every_fixture_moved_three_years_ahead_was_consented_as_long_before_the_new_date() {
        let names = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/referrals")).unwrap();
        for entry in names {
            let path = entry.unwrap().path();
            let mut referral: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let original = referral.clone();
            let now = written_at() + Duration::days(1096);
            move_dates(&mut referral, days_since_written(now));
            let given = |r: &Value| DateTime::parse_from_rfc3339(r["consent"]["given_at"].as_str().unwrap()).unwrap();
            assert_eq!(given(&referral) - given(&original), Duration::days(1096), "{}", path.display());
            assert!(given(&referral) < now, "{}: consent given after the demo's now", path.display());
        }
    }
}
