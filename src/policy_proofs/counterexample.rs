//! A solver's counterexample in the gateway's terms (DPO's): the recipient,
//! its country roles, the purpose, the category, the case and consent facts.
//!
//! The solver picks any strings it likes for countries (`"A"`, `""`), so a
//! country is shown by its role (in an origin state, acting for one, in the
//! sending country) as well as by the string itself.

use cedar_policy::{Entities, EntityUid, EvalResult, Request};
use cedar_policy_symcc::Env;
use serde::Serialize;

/// The recipient organisation of a counterexample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientShown {
    pub kind: String,
    pub state_actor: bool,
    pub country: String,
    pub state: String,
    pub services: Vec<String>,
    /// Its country is one of the person's origin states.
    pub sits_in_origin_state: bool,
    /// The state it acts for is one of the person's origin states.
    pub acts_for_origin_state: bool,
    pub sits_in_sending_country: bool,
}

/// The case facts of a counterexample (no personal data: these are all the
/// policies ever see).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseShown {
    pub asylum_linked: bool,
    pub child: bool,
    pub profiles: Vec<String>,
    pub origin_states: Vec<String>,
    pub consent_by_guardian: bool,
    pub best_interests_determined: bool,
    pub best_interests_recommend_return: bool,
    pub best_interests_favour_family: bool,
}

/// A request on which a property fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counterexample {
    pub purpose: String,
    pub category: String,
    pub recipient: RecipientShown,
    pub sending_country: String,
    pub case: CaseShown,
    /// A consent scope covers purpose, category and recipient.
    pub consent_covers: bool,
    /// That scope names the category (not only "all").
    pub consent_names_category: bool,
}

fn text(value: Option<&EvalResult>) -> String {
    match value {
        Some(EvalResult::String(s)) => s.clone(),
        Some(EvalResult::EntityUid(uid)) => uid.id().unescaped().to_owned(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn flag(value: Option<&EvalResult>) -> bool {
    matches!(value, Some(EvalResult::Bool(true)))
}

fn texts(value: Option<&EvalResult>) -> Vec<String> {
    let mut found: Vec<String> = match value {
        Some(EvalResult::Set(set)) => set.iter().map(|v| text(Some(v))).collect(),
        _ => Vec::new(),
    };
    found.sort();
    found
}

fn record_field(value: Option<&EvalResult>, field: &str) -> Option<EvalResult> {
    match value {
        Some(EvalResult::Record(record)) => record.get(field).cloned(),
        _ => None,
    }
}

fn uid_text(uid: Option<&EntityUid>) -> String {
    uid.map(|u| u.id().unescaped().to_owned()).unwrap_or_default()
}

fn entity_attr(entities: &Entities, uid: Option<&EntityUid>, attr: &str) -> Option<EvalResult> {
    entities.get(uid?)?.attr(attr)?.ok()
}

impl Counterexample {
    pub fn from_env(env: &Env) -> Self {
        Self::from_request(&env.request, &env.entities)
    }

    fn from_request(request: &Request, entities: &Entities) -> Self {
        let context = |key: &str| request.context().and_then(|c| c.get(key));
        let case = context("case");
        let consent = context("consent");
        let case_field = |field: &str| record_field(case.as_ref(), field);
        let origin_states = texts(case_field("origin_states").as_ref());
        let principal = request.principal();
        let attr = |name: &str| entity_attr(entities, principal, name);
        let country = text(attr("country").as_ref());
        let state = text(attr("state").as_ref());
        let sending_country = text(context("sender_country").as_ref());
        Self {
            purpose: uid_text(request.action()),
            category: uid_text(request.resource()),
            recipient: RecipientShown {
                kind: text(attr("kind").as_ref()),
                state_actor: flag(attr("state_actor").as_ref()),
                services: texts(attr("services").as_ref()),
                sits_in_origin_state: origin_states.contains(&country),
                acts_for_origin_state: origin_states.contains(&state),
                sits_in_sending_country: country == sending_country,
                country,
                state,
            },
            sending_country,
            case: CaseShown {
                asylum_linked: flag(case_field("asylum_linked").as_ref()),
                child: flag(case_field("child").as_ref()),
                profiles: texts(case_field("profiles").as_ref()),
                origin_states,
                consent_by_guardian: flag(case_field("consent_by_guardian").as_ref()),
                best_interests_determined: flag(case_field("best_interests_determined").as_ref()),
                best_interests_recommend_return: flag(case_field("best_interests_recommend_return").as_ref()),
                best_interests_favour_family: flag(case_field("best_interests_favour_family").as_ref()),
            },
            consent_covers: flag(record_field(consent.as_ref(), "covers").as_ref()),
            consent_names_category: flag(record_field(consent.as_ref(), "names_category").as_ref()),
        }
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for Counterexample {
    /// Plain words for a DPO, one fact per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.recipient;
        let c = &self.case;
        writeln!(f, "purpose {}, category {}", self.purpose, self.category)?;
        writeln!(
            f,
            "recipient: {} ({}), in country \"{}\" acting for state \"{}\"; services: {}",
            r.kind,
            if r.state_actor { "a state actor" } else { "not a state actor" },
            r.country,
            r.state,
            listed(&r.services)
        )?;
        writeln!(
            f,
            "  sits in an origin state: {}; acts for an origin state: {}; sits in the sending country (\"{}\"): {}",
            yes_no(r.sits_in_origin_state),
            yes_no(r.acts_for_origin_state),
            self.sending_country,
            yes_no(r.sits_in_sending_country)
        )?;
        writeln!(
            f,
            "case: asylum-linked: {}; child: {}; profiles: {}; origin states: {}",
            yes_no(c.asylum_linked),
            yes_no(c.child),
            listed(&c.profiles),
            listed(&c.origin_states)
        )?;
        writeln!(
            f,
            "  consent given with a guardian: {}; best interests determined: {}, recommending return: {}, favouring the family: {}",
            yes_no(c.consent_by_guardian),
            yes_no(c.best_interests_determined),
            yes_no(c.best_interests_recommend_return),
            yes_no(c.best_interests_favour_family)
        )?;
        write!(
            f,
            "consent: covers purpose, category and recipient: {}; names the category: {}",
            yes_no(self.consent_covers),
            yes_no(self.consent_names_category)
        )
    }
}
