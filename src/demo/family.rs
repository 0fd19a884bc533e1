//! The demo's tracing story beyond the girl's request
//! (`unaccompanied_girl_tracing`): in Guinea, the mother's own search for
//! her daughter and the Guinean Red Cross's reply to Italy's request, under
//! the mother's consent; in Italy, the request to assess the mother's
//! household, and in Guinea the assessment. Written as of
//! [`fixtures::written_at`] like the fixtures, and moved the same way, so
//! the daughter the mother seeks keeps the birth date the girl's own search
//! gives on any date. Every person in it is fictional.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::fixtures;

/// The mother's search, registered by the Guinean Red Cross in Conakry and
/// sent to the Italian Red Cross, which her consent names.
pub fn mothers_search(now: DateTime<Utc>) -> Value {
    let mut search = json!({
        "idempotency_key": "gin-rc-2026-000017",
        "purpose": "family_tracing",
        "destination": "ita-red-cross",
        "subject_ref": "GIN-RC-2026-000017",
        "case": {
            "identity": { "given_names": "Fatoumata", "family_name": "Camara", "sex": "female", "date_of_birth": "1984-06-02", "nationalities": ["GIN"] },
            "family": {
                "members": [{ "relationship": "child", "given_names": "Mariama", "family_name": "Camara", "date_of_birth": "2010-03-14" }]
            }
        },
        "consent": {
            "given_by": { "type": "subject" },
            "method": "verbal",
            "given_at": "2026-11-16T10:00:00Z",
            "informed_in_language": "sus",
            "scopes": [{
                "purposes": ["family_tracing"],
                "categories": ["identity", "family"],
                "recipients": [{ "kind": "red_cross_red_crescent", "country": "ITA" }],
                "valid_until": "2027-05-16T00:00:00Z"
            }]
        }
    });
    fixtures::move_dates(&mut search, fixtures::days_since_written(now));
    search
}

/// The Guinean Red Cross's answer to the Italian Red Cross's request to
/// trace the girl's mother: the mother's case, with her consent to be put
/// in touch with the Italian Red Cross only, and her wishes.
pub fn mothers_reply(now: DateTime<Utc>) -> Value {
    let mut reply = json!({
        "idempotency_key": "gin-rc-reply-000017",
        "purpose": "tracing_reply",
        "subject_ref": "GIN-RC-2026-000017",
        "case": {
            "identity": { "given_names": "Fatoumata", "family_name": "Camara", "sex": "female", "nationalities": ["GIN"] },
            "contact": { "phone": "+224 620 55 01 17", "current_location": { "country": "GIN", "locality": "Conakry" } },
            "tracing_wishes": { "contact_with_family": "yes", "whereabouts_shared": "yes", "reunification": "yes" }
        },
        "consent": {
            "given_by": { "type": "subject" },
            "method": "verbal",
            "given_at": "2026-11-20T09:00:00Z",
            "informed_in_language": "sus",
            "scopes": [{
                "purposes": ["tracing_reply"],
                "categories": ["identity", "contact", "tracing_wishes"],
                "recipients": [{ "organisation": "ita-red-cross" }],
                "valid_until": "2027-05-20T00:00:00Z"
            }]
        }
    });
    answered_now(&mut reply, now);
    reply
}

/// The Italian Red Cross's request, for the girl's guardian, that the
/// Guinean Red Cross assess the mother's household before the
/// best-interests determination: the girl's case, under a consent of the
/// guardian's for that purpose and that Red Cross only.
pub fn assessment_request(now: DateTime<Utc>) -> Result<Value, String> {
    let mut request = fixtures::referral_as_of("unaccompanied_girl_tracing", now)?;
    let fields = request.as_object_mut().ok_or("the fixture is not a JSON object")?;
    fields.insert("idempotency_key".to_owned(), json!("ita-rc-2026-000101-fa"));
    fields.insert("purpose".to_owned(), json!("family_assessment_request"));
    let mut scope = json!({
        "purposes": ["family_assessment_request"],
        "categories": ["identity", "family", "child_safeguards"],
        "recipients": [{ "kind": "red_cross_red_crescent", "country": "GIN" }],
        "valid_until": "2027-10-01T00:00:00Z"
    });
    fixtures::move_dates(&mut scope, fixtures::days_since_written(now));
    // A consent of its own, given once the mother was found: the guardian's
    // first (to trace her) did not foresee an assessment. Her refusals stand.
    let consent = fields.get_mut("consent").and_then(Value::as_object_mut).ok_or("the fixture has no consent")?;
    consent.insert("given_at".to_owned(), json!(given_now(now)));
    consent.insert("scopes".to_owned(), json!([scope]));
    Ok(request)
}

/// The Guinean Red Cross's assessment of the mother's household, answering
/// that request, under the mother's consent to the Italian Red Cross only.
/// The household is described without names.
pub fn mothers_assessment(now: DateTime<Utc>) -> Value {
    let mut reply = json!({
        "idempotency_key": "gin-rc-assessment-000017",
        "purpose": "family_assessment",
        "subject_ref": "GIN-RC-2026-000017",
        "case": {
            "identity": { "given_names": "Fatoumata", "family_name": "Camara", "sex": "female" },
            "family_assessment": {
                "assessed_on": "2026-11-21",
                "household": [
                    { "relationship": "mother", "year_of_birth": moved_year("1984-06-02", now), "caregiver": true },
                    { "relationship": "sibling", "year_of_birth": moved_year("2006-07-02", now) },
                    { "relationship": "aunt_or_uncle", "year_of_birth": moved_year("1979-03-01", now), "caregiver": true }
                ],
                "capacity_to_care": "adequate_with_support",
                "risks": ["economic_hardship"],
                // The girl does not wish to return (her consent refuses it): the
                // best-interests determination weighs that too.
                "recommendation": "further_assessment_needed"
            }
        },
        "consent": {
            "given_by": { "type": "subject" },
            "method": "written",
            "given_at": "2026-11-21T09:00:00Z",
            "informed_in_language": "sus",
            "scopes": [{
                "purposes": ["family_assessment"],
                "categories": ["identity", "family_assessment"],
                "recipients": [{ "organisation": "ita-red-cross" }],
                "valid_until": "2027-05-21T00:00:00Z"
            }]
        }
    });
    answered_now(&mut reply, now);
    // Assessed once asked: today.
    if let Some(assessment) = reply.pointer_mut("/case/family_assessment").and_then(Value::as_object_mut) {
        assessment.insert("assessed_on".to_owned(), json!(now.date_naive().format("%Y-%m-%d").to_string()));
    }
    reply
}

/// A reply written as of [`fixtures::written_at`], moved to `now`'s day,
/// and the consent in it given `now`: the person is asked once found,
/// after the request the reply answers.
fn answered_now(reply: &mut Value, now: DateTime<Utc>) {
    fixtures::move_dates(reply, fixtures::days_since_written(now));
    if let Some(consent) = reply.get_mut("consent").and_then(Value::as_object_mut) {
        consent.insert("given_at".to_owned(), json!(given_now(now)));
    }
}

/// `now` as a consent's `given_at`.
fn given_now(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The year of a date written as of [`fixtures::written_at`] (a birth date
/// the mother's search or the girl's fixture gives), moved as they are: a
/// household member is as old on any date as the other cases say.
fn moved_year(date: &str, now: DateTime<Utc>) -> Value {
    let mut moved = json!(date);
    fixtures::move_dates(&mut moved, fixtures::days_since_written(now));
    moved.as_str().and_then(|date| date.get(..4)).and_then(|year| year.parse::<u16>().ok()).map_or(Value::Null, |year| json!(year))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daughter the mother seeks is born on the day the girl's own
    /// search gives, on any date the demo runs.
    #[test]
    fn the_daughter_sought_keeps_the_girls_birth_date_on_any_date() {
        for days in [0, 1, 400, 3 * 365 + 17] {
            let now = fixtures::written_at() + chrono::Duration::days(days);
            let girl = fixtures::referral_as_of("unaccompanied_girl_tracing", now).unwrap();
            let search = mothers_search(now);
            assert_eq!(search["case"]["family"]["members"][0]["date_of_birth"], girl["case"]["identity"]["date_of_birth"], "{days} days on");
            assert_eq!(search["case"]["family"]["members"][0]["given_names"], girl["case"]["identity"]["given_names"]);
            assert_eq!(search["case"]["identity"]["given_names"], girl["case"]["family"]["members"][0]["given_names"]);
            // The household assessed: the mother and the girl's brother born the years the other cases say.
            let household = &mothers_assessment(now)["case"]["family_assessment"]["household"];
            let year = |date: &Value| date.as_str().and_then(|d| d.get(..4)).map(|y| json!(y.parse::<u16>().unwrap()));
            assert_eq!(Some(household[0]["year_of_birth"].clone()), year(&search["case"]["identity"]["date_of_birth"]), "{days} days on");
            assert_eq!(Some(household[1]["year_of_birth"].clone()), year(&girl["case"]["family"]["members"][1]["date_of_birth"]), "{days} days on");
        }
    }

    #[test]
    fn both_bodies_are_valid_submissions() {
        let now = fixtures::written_at() + chrono::Duration::days(100);
        crate::domain::submission::ReferralSubmission::parse(&mothers_search(now).to_string(), now).unwrap();
        let reply = mothers_reply(now);
        crate::domain::submission::ReplySubmission::parse(&reply.to_string(), now).unwrap();
        crate::domain::submission::ReferralSubmission::parse(&assessment_request(now).unwrap().to_string(), now).unwrap();
        crate::domain::submission::ReplySubmission::parse(&mothers_assessment(now).to_string(), now).unwrap();
        assert_eq!(reply["consent"]["scopes"][0]["valid_until"], "2027-08-28T00:00:00Z");
    }
}
