//! DPO sharing policies in Cedar, evaluated together with the built-in rules.
//!
//! Compiling a policy set is pure: it takes policy texts, not files. Loading
//! them from `config/policies/*.cedar` is the caller's IO.
//!
//! Some 950 lines (190 of them unit tests), on purpose: compiling a set
//! (the schema, the built-in rules, the DPO's files and what they may not
//! say) and evaluating it share their types at every step; the Cedar
//! schema (`schema.rs`) and the retention and end-to-end rule files
//! (`domain::retention`, `domain::sealing`) are modules of their own.

pub mod agreements;
mod schema;

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, ResourceConstraint, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

pub use schema::schema_text;

use super::decision::ReasonCode;
use super::recipient::Recipient;
use super::retention::{RetentionRules, RETENTION_FILE};
use super::sealing::{EndToEndRules, END_TO_END_FILE};
use super::override_rules::{StandingRules, OVERRIDES_FILE};
use super::onward::onward_organisation;
use super::{CountryCode, DataCategory, Profile, Purpose, RecipientKind};

/// The built-in rules' Cedar text, compiled into every policy set.
pub const BUILTIN_SOURCE: &str = include_str!("builtin.cedar");
const BUILTIN_FILE: &str = "<built-in rules>";
const BUILTIN_PREFIX: &str = "builtin.";
/// The built-in rule that withholds whatever consent does not cover.
const CONSENT_RULE: &str = "builtin.consent_required";

/// The files of a policy set that hold TOML rules rather than Cedar: the
/// DPO's retention rules and end-to-end sealing rules.
pub const TOML_RULE_FILES: [&str; 3] = [RETENTION_FILE, END_TO_END_FILE, OVERRIDES_FILE];

/// Whether `name` is one of [`TOML_RULE_FILES`] (and so not a Cedar file).
pub fn is_toml_rule_file(name: &str) -> bool {
    TOML_RULE_FILES.contains(&name)
}

/// One policy file as the DPO wrote it.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

/// A problem in a policy file, located for the DPO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {problem}")]
pub struct PolicyProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub problem: String,
}

impl PolicyProblem {
    /// A problem in `file` at byte `offset` of its `text` (its start when the reader gave none).
    pub(super) fn at(file: &str, text: &str, offset: Option<usize>, problem: String) -> Self {
        let (line, column) = line_and_column(text, offset.unwrap_or(0));
        Self { file: file.to_owned(), line, column, problem }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy set is invalid:\n{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyProblem>),
    /// The compiled-in schema or rules do not compile: a defect of the build, not of the DPO.
    #[error("built-in policy definitions are broken: {0}")]
    Builtin(String),
}

/// Everything a data-protection officer's policy version decides, compiled
/// and validated: whom a case may be shared with and what of it (the
/// built-in Cedar rules plus the DPO's policies), how long it is kept (the
/// retention rules) and when it must be sealed end to end to its recipient
/// (the end-to-end rules). One version, one hash, applied as one.
///
/// The set is validated as a whole, then sliced per (purpose, category) by
/// each policy's action and resource scope, so that evaluating one category
/// only runs the policies that can apply to it. Slicing never drops a policy
/// whose scope might match: only `==` and `in [...]` scopes narrow a slice.
#[derive(Debug, Clone)]
pub struct DataProtectionPolicy {
    policies: PolicySet,
    /// Built-in rules marked `@scope("case")`, by purpose index: run once per decision.
    case_rules: Vec<PolicySet>,
    /// The other built-in rules and the DPO's, by (purpose, category) index:
    /// run for categories the consent covers.
    slices: Vec<PolicySet>,
    /// For each slice whose policies read `resource` only in their scope: a
    /// group shared by every slice of the same policies. Such slices give the
    /// same verdict for any category, so one evaluation per decision serves all.
    slice_groups: Vec<Option<usize>>,
    /// Recipient entities, built once per distinct recipient.
    entities: Arc<RwLock<HashMap<Recipient, (EntityUid, Entities)>>>,
    action_uids: Vec<EntityUid>,
    category_uids: Vec<EntityUid>,
    version: String,
    builtin_reasons: HashMap<PolicyId, ReasonCode>,
    authorizer: Authorizer,
    retention: RetentionRules,
    end_to_end: EndToEndRules,
    standing_overrides: StandingRules,
    /// The agreements the DPO's permits rest on, by permit id.
    agreements: BTreeMap<String, agreements::Agreement>,
}

/// What the policy set says about one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Permits that allowed it (when allowed).
    pub permitted_by: Vec<String>,
    /// Forbids that applied, with their reason code.
    pub forbidden_by: Vec<(String, ReasonCode)>,
    /// Policies whose evaluation failed: undecidable, so the category is withheld.
    pub failed: Vec<String>,
    /// Permits that would have allowed it but whose agreement expired: with
    /// no other permit, the category is withheld.
    pub expired: Vec<String>,
}

/// Case facts prepared once per decision, then reused for every category.
pub struct RequestFacts {
    principal: EntityUid,
    entities: Entities,
    sender_country: String,
    case: RestrictedExpression,
    /// One context per consent-facts combination actually used; there are three.
    contexts: [OnceCell<Option<Context>>; 3],
    /// The case-scoped rules' verdict, per purpose.
    case_verdicts: [OnceCell<Verdict>; Purpose::ALL.len()],
    /// Verdicts of resource-blind slice groups, by (group, context slot).
    group_verdicts: RefCell<Vec<((usize, usize), Verdict)>>,
}

/// Recipient entities kept at most; a directory is far smaller.
const MAX_CACHED_RECIPIENTS: usize = 10_000;

/// Facts about the case that policies may use; no personal data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaseFacts {
    pub asylum_linked: bool,
    pub child: bool,
    pub profiles: Vec<Profile>,
    pub origin_states: Vec<CountryCode>,
    pub consent_by_guardian: bool,
    pub best_interests_determined: bool,
    pub best_interests_recommend_return: bool,
    /// The completed determination recommends that the child rejoin their
    /// family (return to it, or reunification elsewhere): with the
    /// guardian's consent, what lets a reply tell the family where the
    /// child is. Absent from facts recorded before replies: false.
    #[serde(default)]
    pub best_interests_favour_family: bool,
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Byte offsets where each top-level statement starts, skipping comments and
/// string literals; Cedar does not expose a parsed policy's location.
fn statement_offsets(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut awaiting_start = true;
    let mut chars = text.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        match c {
            '/' if chars.peek().is_some_and(|(_, next)| *next == '/') => {
                for (_, skipped) in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {}
            _ => {
                if awaiting_start {
                    starts.push(offset);
                    awaiting_start = false;
                }
                match c {
                    '"' => {
                        while let Some((_, inner)) = chars.next() {
                            match inner {
                                '\\' => {
                                    chars.next();
                                }
                                '"' => break,
                                _ => {}
                            }
                        }
                    }
                    ';' => awaiting_start = true,
                    _ => {}
                }
            }
        }
    }
    starts
}

/// Locates a Cedar diagnostic in `text` and renders its message with any help.
fn problem_from(file: &str, text: &str, diagnostic: &dyn Diagnostic) -> PolicyProblem {
    let offset = diagnostic.labels().and_then(|mut labels| labels.next()).map_or(0, |label| label.offset());
    let (line, column) = line_and_column(text, offset);
    let mut problem = diagnostic.to_string();
    if let Some(help) = diagnostic.help() {
        problem.push_str(&format!(" (help: {help})"));
    }
    PolicyProblem { file: file.to_owned(), line, column, problem }
}

fn entity_uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let type_name = EntityTypeName::from_str(type_name).map_err(|e| PolicyError::Builtin(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(type_name, EntityId::new(id)))
}

fn entity_value(type_name: &str, id: &str) -> Result<RestrictedExpression, PolicyError> {
    entity_uid(type_name, id).map(RestrictedExpression::new_entity_uid)
}

fn well_formed_policy_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

impl DataProtectionPolicy {
    /// Compiles the built-in rules with the DPO's policy files. Every problem is
    /// reported with file, line and column; none is silently skipped.
    pub fn compile(sources: &[PolicySource]) -> Result<Self, PolicyError> {
        let (schema, _warnings): (Schema, _) =
            Schema::from_cedarschema_str(&schema_text()).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let mut policies = PolicySet::new();
        let mut builtin_reasons = HashMap::new();
        let mut problems = Vec::new();
        // Which file and text each policy came from, to locate validation errors.
        let mut origin: HashMap<PolicyId, (String, &str)> = HashMap::new();
        let mut agreements: BTreeMap<String, agreements::Agreement> = BTreeMap::new();

        let builtin = PolicySet::from_str(BUILTIN_SOURCE).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        if !builtin.policies().any(|p| p.annotation("id") == Some(CONSENT_RULE)) {
            return Err(PolicyError::Builtin(format!("{CONSENT_RULE} is missing")));
        }
        for policy in builtin.policies() {
            let (Some(id), Some(reason)) = (policy.annotation("id"), policy.annotation("reason")) else {
                return Err(PolicyError::Builtin("a built-in rule lacks @id or @reason".into()));
            };
            let reason = ReasonCode::from_str(reason).map_err(|_| PolicyError::Builtin(format!("unknown reason in {id}")))?;
            let id = PolicyId::new(id);
            builtin_reasons.insert(id.clone(), reason);
            origin.insert(id.clone(), (BUILTIN_FILE.to_owned(), BUILTIN_SOURCE));
            policies.add(policy.new_id(id)).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        }

        let mut sorted: Vec<&PolicySource> = sources.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        // The DPO's retention and end-to-end sealing rules travel with the
        // set (and count in its version) but are not Cedar.
        let mut retention = RetentionRules::default();
        for source in sorted.iter().filter(|s| s.name == RETENTION_FILE) {
            match RetentionRules::parse(&source.name, &source.text) {
                Ok(rules) => retention = rules,
                Err(found) => problems.extend(found),
            }
        }
        let mut end_to_end = EndToEndRules::default();
        for source in sorted.iter().filter(|s| s.name == END_TO_END_FILE) {
            match EndToEndRules::parse(&source.name, &source.text) {
                Ok(rules) => end_to_end = rules,
                Err(found) => problems.extend(found),
            }
        }
        let mut standing_overrides = StandingRules::default();
        for source in sorted.iter().filter(|s| s.name == OVERRIDES_FILE) {
            match StandingRules::parse(&source.name, &source.text) {
                Ok(rules) => standing_overrides = rules,
                Err(found) => problems.extend(found),
            }
        }
        for source in sorted.iter().filter(|s| !is_toml_rule_file(&s.name)) {
            let parsed = match PolicySet::from_str(&source.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    problems.extend(errors.iter().map(|e| problem_from(&source.name, &source.text, e)));
                    continue;
                }
            };
            let starts = statement_offsets(&source.text);
            // `from_str` names statements policy0, policy1, ... in source order.
            let locate_statement = |id: &PolicyId| {
                let index: usize = id.to_string().strip_prefix("policy").and_then(|n| n.parse().ok()).unwrap_or(0);
                line_and_column(&source.text, starts.get(index).copied().unwrap_or(0))
            };
            for template in parsed.templates() {
                let (line, column) = locate_statement(template.id());
                problems.push(PolicyProblem {
                    file: source.name.clone(),
                    line,
                    column,
                    problem: "templates (?principal, ?resource) are not supported; write plain permit or forbid policies".into(),
                });
            }
            let mut in_order: Vec<&Policy> = parsed.policies().collect();
            in_order.sort_by_key(|p| locate_statement(p.id()));
            for policy in in_order {
                let (line, column) = locate_statement(policy.id());
                let locate = |problem: String| PolicyProblem { file: source.name.clone(), line, column, problem };
                let Some(id) = policy.annotation("id") else {
                    problems.push(locate("every policy needs an @id(\"...\") annotation naming it".into()));
                    continue;
                };
                if !well_formed_policy_id(id) {
                    problems.push(locate(format!(
                        "@id \"{id}\" must be 1 to 100 characters of a-z, 0-9, '.', '_' or '-'"
                    )));
                    continue;
                }
                if id.starts_with(BUILTIN_PREFIX) {
                    problems.push(locate(format!("@id \"{id}\" is reserved: ids starting with \"builtin.\" belong to the built-in rules")));
                    continue;
                }
                let id = PolicyId::new(id);
                if let Some((other_file, _)) = origin.get(&id) {
                    problems.push(locate(format!("@id \"{id}\" is already used in {other_file}")));
                    continue;
                }
                match agreements::read(id.as_ref(), policy.effect() == Effect::Permit, |name| policy.annotation(name).map(str::to_owned)) {
                    Ok(Some(agreement)) => {
                        agreements.insert(id.to_string(), agreement);
                    }
                    Ok(None) => {}
                    Err(found) => problems.extend(found.into_iter().map(&locate)),
                }
                origin.insert(id.clone(), (source.name.clone(), source.text.as_str()));
                for code in unassigned_country_codes(policy) {
                    problems.push(locate(format!(
                        "\"{code}\" looks like a country code but is not an assigned ISO 3166-1 alpha-3 code; a misspelt country never matches, and a forbid using it would never apply"
                    )));
                }
                if let Err(error) = policies.add(policy.new_id(id)) {
                    problems.push(locate(error.to_string()));
                }
            }
        }

        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for error in validation.validation_errors() {
            let (file, text) = origin.get(error.policy_id()).cloned().unwrap_or((BUILTIN_FILE.to_owned(), BUILTIN_SOURCE));
            problems.push(problem_from(&file, text, error));
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }
        let version = version_of(&sorted);
        let case_scoped = |p: &Policy| p.annotation("scope") == Some("case") && builtin_reasons.contains_key(p.id());
        let subset = |keep: &dyn Fn(&Policy) -> bool| -> Result<PolicySet, PolicyError> {
            let mut subset = PolicySet::new();
            for policy in policies.policies().filter(|p| keep(p)) {
                subset.add(policy.clone()).map_err(|e| PolicyError::Builtin(e.to_string()))?;
            }
            Ok(subset)
        };
        let mut case_rules = Vec::new();
        let mut slices = Vec::new();
        for &purpose in Purpose::ALL {
            case_rules.push(subset(&|p| case_scoped(p) && may_apply(p, purpose, DataCategory::Identity))?);
            for &category in DataCategory::ALL {
                // Slices run only when consent covers the category, where the
                // consent rule cannot fire.
                let applies = |p: &Policy| {
                    !case_scoped(p) && p.id().to_string() != CONSENT_RULE && may_apply(p, purpose, category)
                };
                slices.push(subset(&applies)?);
            }
        }
        let mut groups: HashMap<BTreeSet<String>, usize> = HashMap::new();
        let slice_groups = slices
            .iter()
            .map(|slice| {
                if slice.policies().any(reads_resource) {
                    return None;
                }
                let members: BTreeSet<String> = slice.policies().map(|p| id_text(p.id())).collect();
                let next = groups.len();
                Some(*groups.entry(members).or_insert(next))
            })
            .collect();
        let action_uids = Purpose::ALL.iter().map(|p| entity_uid("Action", p.as_str())).collect::<Result<_, _>>()?;
        let category_uids =
            DataCategory::ALL.iter().map(|c| entity_uid("Category", c.as_str())).collect::<Result<_, _>>()?;
        Ok(Self {
            policies,
            case_rules,
            slices,
            slice_groups,
            entities: Arc::default(),
            action_uids,
            category_uids,
            version,
            builtin_reasons,
            authorizer: Authorizer::new(),
            retention,
            end_to_end,
            standing_overrides,
            agreements,
        })
    }

    /// The agreements the DPO's permits rest on, by permit id.
    pub fn agreements(&self) -> impl Iterator<Item = &agreements::Agreement> {
        self.agreements.values()
    }

    /// The DPO's retention rules (`retention.toml`), or none: the fallback for every case.
    pub fn retention(&self) -> &RetentionRules {
        &self.retention
    }

    /// The DPO's end-to-end sealing rules (`end_to_end.toml`), or none. The
    /// built-in rule applies whatever they say
    /// ([`crate::domain::sealing::end_to_end_requirement`]).
    pub fn end_to_end(&self) -> &EndToEndRules {
        &self.end_to_end
    }

    /// The DPO's standing rules for emergency overrides (`overrides.toml`),
    /// or none: every override then waits for a DPO's approval.
    pub fn standing_overrides(&self) -> &StandingRules {
        &self.standing_overrides
    }

    /// A content hash of the built-in rules and every DPO file, names included.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The DPO's policy ids with their effect, for listings.
    pub fn dpo_policies(&self) -> BTreeMap<String, &'static str> {
        self.policies
            .policies()
            .filter(|p| !self.builtin_reasons.contains_key(p.id()))
            .map(|p| {
                let effect = match p.effect() {
                    Effect::Permit => "permit",
                    Effect::Forbid => "forbid",
                };
                (p.id().to_string(), effect)
            })
            .collect()
    }

    /// The DPO's own policies (the built-in rules left out), under their `@id`s.
    pub fn dpo_policy_set(&self) -> PolicySet {
        let mut dpo = PolicySet::new();
        for policy in self.policies.policies().filter(|p| !self.builtin_reasons.contains_key(p.id())) {
            // Ids are unique in `self.policies`, so adding cannot clash.
            let _ = dpo.add(policy.clone());
        }
        dpo
    }

    /// Prepares the recipient entity and case facts once per decision.
    pub fn facts(&self, recipient: &Recipient, sender: CountryCode, case: &CaseFacts) -> Result<RequestFacts, PolicyError> {
        let (principal, entities) = self.recipient_entity(recipient)?;
        let profiles =
            case.profiles.iter().map(|p| entity_value("Profile", p.as_str())).collect::<Result<Vec<_>, _>>()?;
        let origin_states = case.origin_states.iter().map(|c| RestrictedExpression::new_string(c.to_string()));
        let case = RestrictedExpression::new_record([
            ("asylum_linked".to_owned(), RestrictedExpression::new_bool(case.asylum_linked)),
            ("child".to_owned(), RestrictedExpression::new_bool(case.child)),
            ("profiles".to_owned(), RestrictedExpression::new_set(profiles)),
            ("origin_states".to_owned(), RestrictedExpression::new_set(origin_states)),
            ("consent_by_guardian".to_owned(), RestrictedExpression::new_bool(case.consent_by_guardian)),
            ("best_interests_determined".to_owned(), RestrictedExpression::new_bool(case.best_interests_determined)),
            (
                "best_interests_recommend_return".to_owned(),
                RestrictedExpression::new_bool(case.best_interests_recommend_return),
            ),
            ("best_interests_favour_family".to_owned(), RestrictedExpression::new_bool(case.best_interests_favour_family)),
        ])
        .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        Ok(RequestFacts {
            principal,
            entities,
            sender_country: sender.to_string(),
            case,
            contexts: Default::default(),
            case_verdicts: Default::default(),
            group_verdicts: RefCell::default(),
        })
    }

    /// The recipient as a Cedar entity, built once per distinct recipient.
    fn recipient_entity(&self, recipient: &Recipient) -> Result<(EntityUid, Entities), PolicyError> {
        if let Some(found) = self.entities.read().ok().and_then(|cache| cache.get(recipient).cloned()) {
            return Ok(found);
        }
        let principal = entity_uid("Organisation", recipient.id.as_str())?;
        let services = recipient
            .services
            .iter()
            .map(|s| entity_value("Service", s.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let attributes = HashMap::from([
            ("kind".to_owned(), entity_value("Kind", recipient.kind.as_str())?),
            ("country".to_owned(), RestrictedExpression::new_string(recipient.country.to_string())),
            ("state".to_owned(), RestrictedExpression::new_string(recipient.state().to_string())),
            ("state_actor".to_owned(), RestrictedExpression::new_bool(recipient.is_state_actor())),
            ("services".to_owned(), RestrictedExpression::new_set(services)),
        ]);
        let organisation =
            Entity::new(principal.clone(), attributes, HashSet::new()).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        // Built here from typed values; tests check this entity against the schema.
        let entities = Entities::from_entities([organisation], None).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        if let Ok(mut cache) = self.entities.write() {
            if cache.len() >= MAX_CACHED_RECIPIENTS {
                cache.clear();
            }
            cache.insert(recipient.clone(), (principal.clone(), entities.clone()));
        }
        Ok((principal, entities))
    }

    /// Evaluates one category. Any failure to build or evaluate the request is
    /// a withheld category, never an allow.
    ///
    /// Cedar allows when no forbid is satisfied and some permit is; so running
    /// the case-scoped rules once and the rest per category is the same
    /// decision as running all together. The DPO's policies run only when the
    /// consent covers the category: otherwise it is withheld whatever they say.
    ///
    /// A permit whose agreement expired before `at` no longer applies: as if
    /// it were not there, which can only withhold more (a permit never
    /// outweighs a forbid).
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &self,
        facts: &RequestFacts,
        purpose: Purpose,
        category: DataCategory,
        consent_covers: bool,
        consent_names_category: bool,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Verdict {
        // Case-scoped rules read neither category nor consent, so they can share
        // whichever context this call needs anyway.
        let named = consent_covers && consent_names_category;
        let case_verdict = facts
            .case_verdicts
            .get(purpose_index(purpose))
            .map(|cell| cell.get_or_init(|| self.run(facts, self.case_rules.get(purpose_index(purpose)), purpose, category, true, named)));
        let category_verdict = if consent_covers {
            let index = slice_index(purpose, category);
            let run = || self.run(facts, self.slices.get(index), purpose, category, true, consent_names_category);
            match self.slice_groups.get(index).copied().flatten() {
                Some(group) => {
                    let key = (group, usize::from(consent_names_category));
                    let known = facts.group_verdicts.borrow().iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
                    known.unwrap_or_else(|| {
                        let verdict = run();
                        facts.group_verdicts.borrow_mut().push((key, verdict.clone()));
                        verdict
                    })
                }
                None => run(),
            }
        } else {
            // Withheld whatever the policies say. `builtin.consent_required` is
            // the rule that applies; the category-scoped rules it would meet
            // besides (asylum category, case notes) are re-checked by `decide`.
            Verdict {
                allowed: false,
                permitted_by: Vec::new(),
                forbidden_by: vec![(CONSENT_RULE.to_owned(), ReasonCode::ConsentNotGiven)],
                failed: Vec::new(),
                expired: Vec::new(),
            }
        };
        let Some(case_verdict) = case_verdict else {
            return Verdict::failed("case rules");
        };
        let failed = sorted(case_verdict.failed.iter().chain(&category_verdict.failed).cloned());
        let forbidden_by = sorted(case_verdict.forbidden_by.iter().chain(&category_verdict.forbidden_by).cloned());
        let allowed = category_verdict.allowed && forbidden_by.is_empty() && failed.is_empty();
        if !allowed {
            return Verdict { allowed, permitted_by: Vec::new(), forbidden_by, failed, expired: Vec::new() };
        }
        let (permitted_by, expired): (Vec<String>, Vec<String>) = category_verdict
            .permitted_by
            .into_iter()
            .partition(|id| self.agreements.get(id).is_none_or(|agreement| agreement.in_force_at(at)));
        if permitted_by.is_empty() {
            return Verdict { allowed: false, permitted_by, forbidden_by, failed, expired };
        }
        Verdict { allowed, permitted_by, forbidden_by, failed, expired: Vec::new() }
    }

    /// One Cedar call over `rules`.
    fn run(
        &self,
        facts: &RequestFacts,
        rules: Option<&PolicySet>,
        purpose: Purpose,
        category: DataCategory,
        consent_covers: bool,
        consent_names_category: bool,
    ) -> Verdict {
        let (Some(request), Some(rules)) =
            (self.request(facts, purpose, category, consent_covers, consent_names_category), rules)
        else {
            return Verdict::failed("request");
        };
        let response = self.authorizer.is_authorized(&request, rules, &facts.entities);
        let diagnostics = response.diagnostics();
        let failed = diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => id_text(e.policy_id()),
            })
            .collect::<Vec<String>>();
        let determining: Vec<&PolicyId> = diagnostics.reason().collect();
        match response.decision() {
            CedarDecision::Allow => Verdict {
                // A forbid that failed to evaluate might have applied: withhold.
                allowed: failed.is_empty(),
                // Sorted: Cedar reports a set, and a decision must be reproducible.
                permitted_by: sorted(determining.iter().map(|id| id_text(id))),
                forbidden_by: Vec::new(),
                failed: sorted(failed),
                expired: Vec::new(),
            },
            CedarDecision::Deny => Verdict {
                allowed: false,
                permitted_by: Vec::new(),
                expired: Vec::new(),
                forbidden_by: sorted(
                    determining
                        .iter()
                        .map(|id| (id_text(id), self.builtin_reasons.get(*id).copied().unwrap_or(ReasonCode::PolicyForbid))),
                ),
                failed: sorted(failed),
            },
        }
    }

    fn request(
        &self,
        facts: &RequestFacts,
        purpose: Purpose,
        category: DataCategory,
        consent_covers: bool,
        consent_names_category: bool,
    ) -> Option<Request> {
        let slot = match (consent_covers, consent_names_category) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        let context = facts
            .contexts
            .get(slot)?
            .get_or_init(|| context(facts, consent_covers, consent_covers && consent_names_category).ok())
            .clone()?;
        Request::new(
            facts.principal.clone(),
            self.action_uids.get(purpose_index(purpose))?.clone(),
            self.category_uids.get(category_index(category))?.clone(),
            context,
            None,
        )
        .ok()
    }
}

fn context(facts: &RequestFacts, covers: bool, names_category: bool) -> Result<Context, PolicyError> {
    let consent = RestrictedExpression::new_record([
        ("covers".to_owned(), RestrictedExpression::new_bool(covers)),
        ("names_category".to_owned(), RestrictedExpression::new_bool(names_category)),
    ])
    .map_err(|e| PolicyError::Builtin(e.to_string()))?;
    Context::from_pairs([
        ("sender_country".to_owned(), RestrictedExpression::new_string(facts.sender_country.clone())),
        ("case".to_owned(), facts.case.clone()),
        ("consent".to_owned(), consent),
    ])
    .map_err(|e| PolicyError::Builtin(e.to_string()))
}

/// The Cedar action of onward referral (`refer_onward`, issue 21 §3).
pub const ONWARD_ACTION: &str = "refer_onward";

/// What an onward-referral question is about: the referral's recipient
/// passing one category on to an organisation of `onward_kind` in its own
/// country, for `onward_purpose`, under an onward scope of the consent
/// (`named`: the scope lists the category by name).
#[derive(Debug, Clone, Copy)]
pub struct OnwardQuestion {
    pub onward_kind: RecipientKind,
    pub onward_purpose: Purpose,
    pub category: DataCategory,
    pub named: bool,
}

impl DataProtectionPolicy {
    /// Until when the built-in rules and the DPO's policies let
    /// `referred_by` pass a category on as `question` asks (action
    /// `refer_onward`): the end of the last sharing agreement among the
    /// permits that allow it (`DateTime::MAX_UTC` when one has none), or
    /// `None` for no. The principal is the onward organisation as far as it
    /// is known: its kind, the recipient's country, a state actor when the
    /// kind is a government one, no services. Any failure to build or
    /// evaluate the request, a forbid, or only permits whose agreement has
    /// expired at `at`: no.
    pub fn permits_onward(&self, facts: &RequestFacts, referred_by: &Recipient, question: OnwardQuestion, at: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        let onward = onward_organisation(question.onward_kind, referred_by.country)?;
        self.onward_verdict(facts, referred_by, &onward, question, at).ok().flatten()
    }

    /// The same question asked by the receiving gateway, about the onward
    /// organisation itself (`question.onward_kind` is its kind): its own
    /// id, country, state and services are the principal.
    pub fn permits_onward_to(
        &self,
        facts: &RequestFacts,
        referred_by: &Recipient,
        onward: &Recipient,
        question: OnwardQuestion,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        if question.onward_kind != onward.kind {
            return None;
        }
        self.onward_verdict(facts, referred_by, onward, question, at).ok().flatten()
    }

    fn onward_verdict(
        &self,
        facts: &RequestFacts,
        referred_by: &Recipient,
        onward: &Recipient,
        question: OnwardQuestion,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, PolicyError> {
        let (principal, entities) = self.recipient_entity(onward)?;
        let consent = RestrictedExpression::new_record([
            ("covers".to_owned(), RestrictedExpression::new_bool(true)),
            ("names_category".to_owned(), RestrictedExpression::new_bool(question.named)),
        ])
        .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let context = Context::from_pairs([
            ("sender_country".to_owned(), RestrictedExpression::new_string(facts.sender_country.clone())),
            ("case".to_owned(), facts.case.clone()),
            ("consent".to_owned(), consent),
            ("onward_purpose".to_owned(), entity_value("Purpose", question.onward_purpose.as_str())?),
            ("referred_by".to_owned(), entity_value("Kind", referred_by.kind.as_str())?),
        ])
        .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let resource = self.category_uids.get(category_index(question.category)).cloned().ok_or_else(|| PolicyError::Builtin("category".into()))?;
        let request = Request::new(principal, entity_uid("Action", ONWARD_ACTION)?, resource, context, None).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
        if response.decision() != CedarDecision::Allow || response.diagnostics().errors().next().is_some() {
            return Ok(None);
        }
        // Only a permit that names the action counts: one written with
        // `action` left open, for referrals, must not pass cases on unseen.
        // And a permit whose agreement has expired no longer applies.
        Ok(response
            .diagnostics()
            .reason()
            .filter(|id| self.policies.policy(id).is_some_and(names_onward_action))
            .filter_map(|id| match self.agreements.get(&id_text(id)) {
                None => Some(chrono::DateTime::<chrono::Utc>::MAX_UTC),
                Some(agreement) if agreement.in_force_at(at) => Some(agreement.ends().unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)),
                Some(_) => None,
            })
            .max())
    }
}

// Positions in `Purpose::ALL` and `DataCategory::ALL`, the order the tables are built in.
fn purpose_index(purpose: Purpose) -> usize {
    Purpose::ALL.iter().position(|p| *p == purpose).unwrap_or(usize::MAX)
}

fn category_index(category: DataCategory) -> usize {
    DataCategory::ALL.iter().position(|c| *c == category).unwrap_or(usize::MAX)
}

fn slice_index(purpose: Purpose, category: DataCategory) -> usize {
    purpose_index(purpose).saturating_mul(DataCategory::ALL.len()).saturating_add(category_index(category))
}

impl Verdict {
    fn failed(why: &str) -> Self {
        Self { allowed: false, permitted_by: Vec::new(), forbidden_by: Vec::new(), failed: vec![why.to_owned()], expired: Vec::new() }
    }
}

/// The built-in rule that gives `reason`, for reasons only built-in rules give.
pub const fn builtin_rule(reason: ReasonCode) -> Option<&'static str> {
    match reason {
        ReasonCode::ConsentWithdrawn
        | ReasonCode::ConsentRefused
        | ReasonCode::ConsentExpired
        | ReasonCode::ConsentNotYetValid
        | ReasonCode::ConsentNotGiven => Some(CONSENT_RULE),
        ReasonCode::AsylumFirewall => Some("builtin.asylum_firewall"),
        ReasonCode::AsylumCategoryToOriginState => Some("builtin.asylum_category_to_origin_state"),
        ReasonCode::CaseNotesNotNamedByConsent => Some("builtin.case_notes_named_by_consent"),
        ReasonCode::ChildGuardianConsentMissing => Some("builtin.child_guardian_consent"),
        ReasonCode::ChildBestInterestsMissing => Some("builtin.child_return_best_interests"),
        ReasonCode::ChildBestInterestsAgainstReturn => Some("builtin.child_return_against_best_interests"),
        ReasonCode::ChildWhereaboutsToFamily => Some("builtin.child_whereabouts_to_family"),
        ReasonCode::RecipientUnknown
        | ReasonCode::NotNeededForPurpose
        | ReasonCode::RequiredCategoryMissing
        | ReasonCode::PolicyNoPermit
        | ReasonCode::PolicyForbid
        | ReasonCode::PolicyEvaluationError
        | ReasonCode::AgreementExpired
        | ReasonCode::RecipientNotServedHere
        | ReasonCode::RetentionPassed
        | ReasonCode::PayloadUnreadable
        // Given by `builtin.asylum_end_to_end` or by a DPO rule of `end_to_end.toml`.
        | ReasonCode::RecipientKeyRequired => None,
    }
}

/// String literals of three capital letters that are not assigned country
/// codes. Countries are plain strings to Cedar, so its validator cannot catch
/// `principal.country == "NIG"`.
fn unassigned_country_codes(policy: &Policy) -> Vec<String> {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(text)) = map.get("Value") {
                    let looks_like_code = text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase());
                    if looks_like_code && CountryCode::parse(text).is_err() && !out.contains(text) {
                        out.push(text.clone());
                    }
                }
                map.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Ok(json) = policy.to_json() {
        collect(&json, &mut found);
    }
    found
}

/// Whether `policy`'s conditions read the `resource` variable. Unknown means yes.
fn reads_resource(policy: &Policy) -> bool {
    fn mentions(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                map.get("Var").and_then(serde_json::Value::as_str) == Some("resource") || map.values().any(mentions)
            }
            serde_json::Value::Array(items) => items.iter().any(mentions),
            _ => false,
        }
    }
    policy.to_json().map_or(true, |json| json.get("conditions").is_none_or(mentions))
}

/// Whether `policy`'s scope names `Action::"refer_onward"` (not `action` left open).
fn names_onward_action(policy: &Policy) -> bool {
    let onward = |uid: &EntityUid| uid.type_name().to_string() == "Action" && uid.id().unescaped() == ONWARD_ACTION;
    match policy.action_constraint() {
        ActionConstraint::Any => false,
        ActionConstraint::Eq(uid) => onward(&uid),
        ActionConstraint::In(uids) => uids.iter().any(onward),
    }
}

/// Whether `policy`'s scope can match a request for `purpose` and `category`.
fn may_apply(policy: &Policy, purpose: Purpose, category: DataCategory) -> bool {
    let is = |uid: &EntityUid, type_name: &str, id: &str| {
        uid.type_name().to_string() == type_name && uid.id().unescaped() == id
    };
    let action = match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => is(&uid, "Action", purpose.as_str()),
        ActionConstraint::In(uids) => uids.iter().any(|uid| is(uid, "Action", purpose.as_str())),
    };
    // Categories have no parents, so `resource in C` holds exactly when
    // `resource == C`: such a policy belongs to C's slice alone. Putting it in
    // every slice would let it be memoised as if it ignored the category.
    let resource = match policy.resource_constraint() {
        ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => {
            is(&uid, "Category", category.as_str())
        }
        ResourceConstraint::Any | ResourceConstraint::Is(_) => true,
    };
    action && resource
}

/// A policy id's text; `Display` would escape it, at a cost on the hot path.
fn id_text(id: &PolicyId) -> String {
    <PolicyId as AsRef<str>>::as_ref(id).to_owned()
}

fn sorted<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort();
    items
}

fn version_of(sources: &[&PolicySource]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, text) in std::iter::once((BUILTIN_FILE, BUILTIN_SOURCE)).chain(sources.iter().map(|s| (s.name.as_str(), s.text.as_str()))) {
        for part in [name.as_bytes(), b"\0", text.as_bytes(), b"\0"] {
            context.update(part);
        }
    }
    let digest = context.finish();
    let hex: String = digest.as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::recipient::Service;
    use crate::domain::{AsylumStatus, OrgId, ProtectionProfile, RecipientKind};

    fn shipped_policy() -> DataProtectionPolicy {
        let source = |name: &str, text: &str| PolicySource { name: name.to_owned(), text: text.to_owned() };
        DataProtectionPolicy::compile(&[
            source("10-permits.cedar", include_str!("../../../config/policies/10-permits.cedar")),
            source("20-restrictions.cedar", include_str!("../../../config/policies/20-restrictions.cedar")),
        ])
        .unwrap()
    }

    /// The reference: every policy in one Cedar call, as Cedar defines it.
    fn whole_set(policy: &DataProtectionPolicy, facts: &RequestFacts, purpose: Purpose, category: DataCategory, covers: bool, named: bool) -> (bool, BTreeSet<String>, BTreeSet<String>) {
        let request = policy.request(facts, purpose, category, covers, named).unwrap();
        let response = policy.authorizer.is_authorized(&request, &policy.policies, &facts.entities);
        assert_eq!(response.diagnostics().errors().count(), 0);
        let ids: BTreeSet<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
        match response.decision() {
            CedarDecision::Allow => (true, ids, BTreeSet::new()),
            CedarDecision::Deny => (false, BTreeSet::new(), ids),
        }
    }

    fn recipients() -> Vec<Recipient> {
        let country = |c: &str| CountryCode::parse(c).unwrap();
        let make = |id: &str, c: &str, kind: RecipientKind, services: &[Service]| {
            Recipient::new(OrgId::parse(id).unwrap(), country(c), kind, false, services.iter().copied().collect())
        };
        vec![
            make("nga-iom-lagos", "NGA", RecipientKind::Iom, &[Service::ReturnAssistance, Service::ReintegrationAssistance]),
            make("nga-immigration", "NGA", RecipientKind::Immigration, &[]),
            make("nga-health", "NGA", RecipientKind::HealthProvider, &[Service::HealthCare]),
            make("nga-employment", "NGA", RecipientKind::EmploymentService, &[Service::Livelihood]),
            make("gin-red-cross", "GIN", RecipientKind::RedCrossRedCrescent, &[Service::FamilyTracing]),
            make("eth-unhcr", "ETH", RecipientKind::Unhcr, &[Service::ReintegrationAssistance]),
            make("nga-consulate", "ITA", RecipientKind::Consular, &[]).representing(country("NGA")),
        ]
    }

    fn case_variants() -> Vec<CaseFacts> {
        let mut variants = Vec::new();
        for asylum_linked in [false, true] {
            for child in [false, true] {
                for (determined, recommends) in [(false, false), (true, false), (true, true)] {
                    for origin in [&["NGA"][..], &["ETH", "ERI"][..]] {
                        variants.push(CaseFacts {
                            asylum_linked,
                            child,
                            profiles: if asylum_linked {
                                vec![Profile::Asylum(AsylumStatus::Refugee)]
                            } else {
                                vec![Profile::Protection(ProtectionProfile::StrandedMigrant)]
                            },
                            origin_states: origin.iter().map(|c| CountryCode::parse(c).unwrap()).collect(),
                            consent_by_guardian: !child || determined,
                            best_interests_determined: determined,
                            best_interests_recommend_return: recommends, best_interests_favour_family: recommends,
                        });
                    }
                }
            }
        }
        variants
    }

    /// Onward referral (`refer_onward`): only a permit naming the action
    /// counts; the DPO's forbids and the built-in rules apply to it, with
    /// the onward organisation as principal; an expired agreement ends it.
    #[test]
    fn onward_referral_needs_a_permit_naming_it_and_meets_every_forbid() {
        let source = |name: &str, text: &str| PolicySource { name: name.to_owned(), text: text.to_owned() };
        let restrictions = source("20-restrictions.cedar", include_str!("../../../config/policies/20-restrictions.cedar"));
        let open_permit = source("10-open.cedar", "@id(\"everything\")\npermit (principal, action, resource);\n");
        let onward_permit = source(
            "30-onward.cedar",
            "@id(\"onward.reintegration\")\n@expires(\"2027-01-31\")\npermit (principal, action == Action::\"refer_onward\", resource)\n\
             when { context.onward_purpose == Purpose::\"reintegration\" && context.referred_by == Kind::\"iom\" };\n",
        );
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z").unwrap().to_utc();
        let iom = Recipient::new(OrgId::parse("nga-iom-lagos").unwrap(), CountryCode::parse("NGA").unwrap(), RecipientKind::Iom, false, BTreeSet::new());
        let plain = CaseFacts {
            asylum_linked: false,
            child: false,
            profiles: Vec::new(),
            origin_states: vec![CountryCode::parse("NGA").unwrap()],
            consent_by_guardian: false,
            best_interests_determined: false,
            best_interests_recommend_return: false, best_interests_favour_family: false,
        };
        let asks = |policy: &DataProtectionPolicy, case: &CaseFacts, kind, purpose, category, at| {
            let facts = policy.facts(&iom, CountryCode::parse("ITA").unwrap(), case).unwrap();
            policy.permits_onward(&facts, &iom, OnwardQuestion { onward_kind: kind, onward_purpose: purpose, category, named: false }, at).is_some()
        };
        // An action left open does not pass cases on.
        let open_only = DataProtectionPolicy::compile(&[open_permit.clone(), restrictions.clone()]).unwrap();
        assert!(!asks(&open_only, &plain, RecipientKind::HealthProvider, Purpose::Reintegration, DataCategory::Health, at));
        let policy = DataProtectionPolicy::compile(&[open_permit, restrictions, onward_permit]).unwrap();
        assert!(asks(&policy, &plain, RecipientKind::HealthProvider, Purpose::Reintegration, DataCategory::Health, at));
        assert!(!asks(&policy, &plain, RecipientKind::HealthProvider, Purpose::Return, DataCategory::Health, at), "another purpose");
        // The DPO's forbid: health never to a state actor (a government kind is one).
        assert!(!asks(&policy, &plain, RecipientKind::SocialWelfare, Purpose::Reintegration, DataCategory::Health, at));
        assert!(asks(&policy, &plain, RecipientKind::SocialWelfare, Purpose::Reintegration, DataCategory::Identity, at));
        // The built-in asylum firewall: no state actor of the origin state, whatever the category.
        let linked = CaseFacts { asylum_linked: true, ..plain.clone() };
        assert!(!asks(&policy, &linked, RecipientKind::SocialWelfare, Purpose::Reintegration, DataCategory::Identity, at));
        assert!(asks(&policy, &linked, RecipientKind::Ngo, Purpose::Reintegration, DataCategory::Identity, at));
        // (c): case notes only when the onward scope names them.
        assert!(!asks(&policy, &plain, RecipientKind::Ngo, Purpose::Reintegration, DataCategory::CaseNotes, at));
        // Until the agreement behind the permit ends (the end of its last day, UTC); then no more.
        let facts = policy.facts(&iom, CountryCode::parse("ITA").unwrap(), &plain).unwrap();
        let question = OnwardQuestion { onward_kind: RecipientKind::Ngo, onward_purpose: Purpose::Reintegration, category: DataCategory::Identity, named: false };
        let end = chrono::DateTime::parse_from_rfc3339("2027-02-01T00:00:00Z").unwrap().to_utc();
        assert_eq!(policy.permits_onward(&facts, &iom, question, at), Some(end));
        let later = chrono::DateTime::parse_from_rfc3339("2027-02-01T00:00:00Z").unwrap().to_utc();
        assert!(!asks(&policy, &plain, RecipientKind::Ngo, Purpose::Reintegration, DataCategory::Identity, later));
    }

    /// A DPO forbid that fails to evaluate (here an overflow, which the
    /// validator cannot see) might have applied: the category is withheld,
    /// with the policy named, never shared. `policy prove` refutes
    /// `never_errors` for the same policy (tests/domain/policy_proofs.rs).
    #[test]
    fn a_policy_that_fails_to_evaluate_withholds() {
        let source = |name: &str, text: &str| PolicySource { name: name.to_owned(), text: text.to_owned() };
        let policy = DataProtectionPolicy::compile(&[
            source("10-permits.cedar", include_str!("../../../config/policies/10-permits.cedar")),
            source(
                "30-overflow.cedar",
                "@id(\"overflow\")\nforbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };",
            ),
        ])
        .unwrap();
        let recipient = recipients().remove(0);
        let case = case_variants().remove(0);
        let facts = policy.facts(&recipient, CountryCode::parse("ITA").unwrap(), &case).unwrap();
        let verdict = policy.evaluate(&facts, Purpose::Return, DataCategory::Identity, true, true, chrono::DateTime::UNIX_EPOCH);
        assert_eq!(verdict.failed, vec!["overflow".to_owned()]);
        assert!(!verdict.allowed, "{verdict:?}");
        assert_eq!(verdict.permitted_by, Vec::<String>::new());
    }

    /// A permit stops applying once its agreement expired (through its last
    /// day, UTC): alone, its category is withheld and the permit named; with
    /// another permit still in force, the category goes on that one.
    #[test]
    fn an_expired_agreement_stops_its_permit() {
        let source = |name: &str, text: &str| PolicySource { name: name.to_owned(), text: text.to_owned() };
        let mou = "@id(\"return.mou\")\n@agreement(\"ITA-GMB return MoU\")\n@legal_basis(\"GDPR art. 49(1)(d)\")\n@review_by(\"2026-12-01\")\n@expires(\"2026-12-31\")\npermit (principal, action == Action::\"return\", resource);\n";
        let standing = "@id(\"return.identity_standing\")\npermit (principal, action == Action::\"return\", resource == Category::\"identity\");\n";
        let alone = DataProtectionPolicy::compile(&[source("10-mou.cedar", mou)]).unwrap();
        let both = DataProtectionPolicy::compile(&[source("10-mou.cedar", mou), source("20-standing.cedar", standing)]).unwrap();
        let recipient = Recipient::new(OrgId::parse("gmb-iom-banjul").unwrap(), CountryCode::parse("GMB").unwrap(), RecipientKind::Iom, false, BTreeSet::new());
        let case = case_variants().remove(0);
        let at = |text: &str| text.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let verdict = |policy: &DataProtectionPolicy, when: &str| {
            let facts = policy.facts(&recipient, CountryCode::parse("ITA").unwrap(), &case).unwrap();
            policy.evaluate(&facts, Purpose::Return, DataCategory::Identity, true, true, at(when))
        };
        let last_day = verdict(&alone, "2026-12-31T23:59:59Z");
        assert!(last_day.allowed, "{last_day:?}");
        assert_eq!(last_day.permitted_by, vec!["return.mou".to_owned()]);
        let after = verdict(&alone, "2027-01-01T00:00:00Z");
        assert!(!after.allowed, "{after:?}");
        assert_eq!(after.expired, vec!["return.mou".to_owned()]);
        let other = verdict(&both, "2027-01-01T00:00:00Z");
        assert!(other.allowed, "{other:?}");
        assert_eq!(other.permitted_by, vec!["return.identity_standing".to_owned()]);
        assert_eq!(other.expired, Vec::<String>::new());
        let listed: Vec<&str> = both.agreements().map(|a| a.policy.as_str()).collect();
        assert_eq!(listed, ["return.mou"]);
    }

    #[test]
    fn agreement_annotations_are_checked_where_they_stand() {
        let source = |name: &str, text: &str| PolicySource { name: name.to_owned(), text: text.to_owned() };
        let forbid = "@id(\"no_contact\")\n@expires(\"2027-01-01\")\nforbid (principal, action, resource == Category::\"contact\");\n";
        let Err(PolicyError::Invalid(problems)) = DataProtectionPolicy::compile(&[source("30-forbid.cedar", forbid)]) else {
            panic!("a forbid with @expires compiled");
        };
        assert_eq!((problems[0].file.as_str(), problems[0].line), ("30-forbid.cedar", 1), "{problems:?}");
        assert!(problems[0].problem.contains("permits only"), "{problems:?}");
        let misdated = "@id(\"p\")\n@expires(\"31/12/2026\")\npermit (principal, action, resource);\n";
        let Err(PolicyError::Invalid(problems)) = DataProtectionPolicy::compile(&[source("10-p.cedar", misdated)]) else {
            panic!("a misdated permit compiled");
        };
        assert!(problems[0].problem.contains("YYYY-MM-DD"), "{problems:?}");
    }

    #[test]
    fn sliced_evaluation_decides_as_the_whole_policy_set() {
        let policy = shipped_policy();
        let italy = CountryCode::parse("ITA").unwrap();
        let mut allows = 0;
        for recipient in recipients() {
            for case in case_variants() {
                let facts = policy.facts(&recipient, italy, &case).unwrap();
                for &purpose in Purpose::ALL {
                    for &category in DataCategory::ALL {
                        for (covers, named) in [(false, false), (true, false), (true, true)] {
                            let sliced = policy.evaluate(&facts, purpose, category, covers, named, chrono::DateTime::UNIX_EPOCH);
                            let (allowed, permits, forbids) = whole_set(&policy, &facts, purpose, category, covers, named);
                            let context = format!("{} {purpose} {category} covers={covers} named={named} {case:?}", recipient.id);
                            assert_eq!(sliced.allowed, allowed, "{context}");
                            assert!(sliced.failed.is_empty(), "{context}");
                            let sliced_forbids: BTreeSet<String> = sliced.forbidden_by.iter().map(|(id, _)| id.clone()).collect();
                            if covers {
                                assert_eq!(sliced.permitted_by.iter().cloned().collect::<BTreeSet<_>>(), permits, "{context}");
                                assert_eq!(sliced_forbids, forbids, "{context}");
                            } else {
                                // Not consulted beyond the consent rule and the case-scoped rules.
                                assert!(sliced_forbids.is_subset(&forbids), "{context}");
                                assert!(sliced_forbids.contains(CONSENT_RULE), "{context}");
                            }
                            allows += usize::from(allowed);
                        }
                    }
                }
            }
        }
        assert!(allows > 100, "the comparison must cover allows too, not only denies ({allows})");
    }

    #[test]
    fn every_builtin_rule_is_named_for_its_reason() {
        let builtin = PolicySet::from_str(BUILTIN_SOURCE).unwrap();
        for policy in builtin.policies() {
            let reason: ReasonCode = policy.annotation("reason").unwrap().parse().unwrap();
            assert_eq!(builtin_rule(reason), policy.annotation("id"), "{reason}");
        }
        for reason in ReasonCode::ALL {
            if let Some(id) = builtin_rule(*reason) {
                assert!(builtin.policies().any(|p| p.annotation("id") == Some(id)), "{id}");
            }
        }
    }

    #[test]
    fn misspelt_country_codes_are_refused_where_they_stand() {
        let source = PolicySource {
            name: "corridors.cedar".to_owned(),
            text: "@id(\"ok\")\npermit (principal, action, resource) when { principal.country == \"NGA\" };\n\n@id(\"typo\")\nforbid (principal, action, resource)\nwhen { principal.country == \"ERT\" || context.sender_country == \"ita\" };\n".to_owned(),
        };
        let Err(PolicyError::Invalid(problems)) = DataProtectionPolicy::compile(&[source]) else {
            panic!("a misspelt country code must be refused");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        let problem = problems.first().unwrap();
        assert_eq!((problem.file.as_str(), problem.line), ("corridors.cedar", 4));
        assert!(problem.problem.contains("\"ERT\""));
    }

    #[test]
    fn end_to_end_rules_travel_with_the_set_and_count_in_its_version() {
        let source = |name: &str, text: &str| PolicySource { name: name.to_owned(), text: text.to_owned() };
        let cedar = source("10-permits.cedar", "@id(\"all\")\npermit (principal, action, resource);\n");
        let without = DataProtectionPolicy::compile(std::slice::from_ref(&cedar)).unwrap();
        assert!(without.end_to_end().rules().is_empty());
        let rules = source(END_TO_END_FILE, "[[require]]\nrecipient_kinds = [\"ngo\"]\n");
        let with = DataProtectionPolicy::compile(&[cedar.clone(), rules]).unwrap();
        assert_eq!(with.end_to_end().rules().len(), 1);
        assert_ne!(with.version(), without.version());
        assert_eq!(with.dpo_policies().len(), 1, "the TOML file is not read as Cedar");

        let bad = source(END_TO_END_FILE, "[[require]]\ncountries = []\n");
        let Err(PolicyError::Invalid(problems)) = DataProtectionPolicy::compile(&[cedar, bad]) else {
            panic!("an invalid end_to_end.toml must refuse the set");
        };
        let located: Vec<(&str, usize, usize)> = problems.iter().map(|p| (p.file.as_str(), p.line, p.column)).collect();
        assert_eq!(located, [(END_TO_END_FILE, 2, 13)], "{problems:?}");
    }

    #[test]
    fn resource_reads_are_found_in_conditions_only() {
        let parse = |text: &str| Policy::parse(None, text).unwrap();
        assert!(!reads_resource(&parse(r#"permit(principal, action, resource == Category::"health") when { principal.state_actor };"#)));
        assert!(reads_resource(&parse(r#"permit(principal, action, resource) when { [Category::"identity"].contains(resource) };"#)));
        assert!(reads_resource(&parse(r#"forbid(principal, action, resource) unless { resource == Category::"identity" };"#)));
        assert!(!reads_resource(&parse("permit(principal, action, resource);")));
    }

    #[test]
    fn case_scoped_rules_read_neither_category_nor_consent() {
        for policy in PolicySet::from_str(BUILTIN_SOURCE).unwrap().policies() {
            if policy.annotation("scope") == Some("case") {
                let text = policy.to_string();
                let condition = text.split_once("when").map_or("", |(_, c)| c);
                assert!(!condition.contains("resource"), "{}", policy.id());
                assert!(!condition.contains("context.consent"), "{}", policy.id());
                assert!(matches!(policy.resource_constraint(), ResourceConstraint::Any), "{}", policy.id());
            }
        }
    }

    #[test]
    fn decisions_are_reproducible() {
        let policy = shipped_policy();
        let facts = policy.facts(&recipients()[0], CountryCode::parse("ITA").unwrap(), &case_variants()[0]).unwrap();
        let first = policy.evaluate(&facts, Purpose::Reintegration, DataCategory::Identity, true, true, chrono::DateTime::UNIX_EPOCH);
        for _ in 0..20 {
            let again = policy.facts(&recipients()[0], CountryCode::parse("ITA").unwrap(), &case_variants()[0]).unwrap();
            assert_eq!(policy.evaluate(&again, Purpose::Reintegration, DataCategory::Identity, true, true, chrono::DateTime::UNIX_EPOCH), first);
        }
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(statement_offsets("// c;\npermit(a); \"x;\" ;\n forbid(b);"), vec![6, 17, 25]);
    }
}
