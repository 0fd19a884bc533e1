//! The Cedar schema DPO policies are validated against, generated from the
//! Rust vocabularies so that the two cannot drift apart. The committed copy in
//! `schemas/policy.cedarschema` is checked against this text by a test.

use crate::domain::recipient::Service;
use crate::domain::{DataCategory, Profile, Purpose, RecipientKind};

fn quoted<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values.map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}

pub fn schema_text() -> String {
    let categories = quoted(DataCategory::ALL.iter().map(|c| c.as_str()));
    let kinds = quoted(RecipientKind::ALL.iter().map(|k| k.as_str()));
    let services = quoted(Service::ALL.iter().map(|s| s.as_str()));
    let profiles = quoted(Profile::all().map(Profile::as_str));
    let actions = quoted(Purpose::ALL.iter().map(|p| p.as_str()));
    let purposes = actions.clone();
    format!(
        r#"// Cedar schema for referral-gateway sharing policies.
// Generated from the gateway's vocabularies: `referral-gateway policy schema`.
//
// Every request asks: may this recipient organisation (principal) receive this
// data category (resource) about this case for this purpose (action)?

// A data category of the case.
entity Category enum [{categories}];

// The kind of a recipient organisation.
entity Kind enum [{kinds}];

// A service an organisation offers.
entity Service enum [{services}];

// A case type; asylum_seeker, refugee and rejected_asylum_seeker make a case asylum-linked.
entity Profile enum [{profiles}];

// The purpose of a referral, as onward referral names it.
entity Purpose enum [{purposes}];

// A recipient organisation from the federation directory.
entity Organisation = {{
  kind: Kind,
  // Where it sits (behind which gateway): ISO 3166-1 alpha-3, e.g. "ITA".
  country: String,
  // The state it acts for; differs from country for consulates and embassies.
  state: String,
  // True for every government kind, and for any organisation the directory marks.
  state_actor: Bool,
  services: Set<Service>,
}};

// Facts derived from the case. No personal data reaches policy evaluation.
type CaseFacts = {{
  asylum_linked: Bool,
  child: Bool,
  profiles: Set<Profile>,
  // Nationalities, former habitual residence and countries of feared return.
  origin_states: Set<String>,
  consent_by_guardian: Bool,
  // A best-interests determination has been completed.
  best_interests_determined: Bool,
  best_interests_recommend_return: Bool,
  // It recommends the child rejoin the family (return or reunification elsewhere).
  best_interests_favour_family: Bool,
}};

// What the person's consent says about this category and recipient.
type ConsentFacts = {{
  // A valid, unrefused scope covers purpose, category and recipient.
  covers: Bool,
  // That scope lists the category by name (not only "all").
  names_category: Bool,
}};

// One action per purpose.
action {actions} appliesTo {{
  principal: [Organisation],
  resource: [Category],
  context: {{
    // The sending gateway's country.
    sender_country: String,
    case: CaseFacts,
    consent: ConsentFacts,
  }},
}};

// Onward referral: may the referral's recipient pass this category on, in
// its own country, to an organisation like the principal? The sending
// gateway asks for each kind of organisation the person's consent lets the
// case go on to; the principal has that kind, sits in and acts for the
// recipient's country, is a state actor when the kind is a government one,
// and offers no known service. `consent` is the onward scope's.
action "refer_onward" appliesTo {{
  principal: [Organisation],
  resource: [Category],
  context: {{
    sender_country: String,
    case: CaseFacts,
    consent: ConsentFacts,
    // What the onward referral is for.
    onward_purpose: Purpose,
    // The kind of the organisation that passes it on: the referral's recipient.
    referred_by: Kind,
  }},
}};
"#
    )
}
