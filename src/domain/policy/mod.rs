//! DPO sharing policies in Cedar, evaluated together with the built-in rules.
//!
//! Compiling a policy set is pure: it takes policy texts, not files. Loading
//! them from `config/policies/*.cedar` is the caller's IO.

mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

pub use schema::schema_text;

use super::decision::ReasonCode;
use super::recipient::Recipient;
use super::{CountryCode, DataCategory, Profile, Purpose};

const BUILTIN_SOURCE: &str = include_str!("builtin.cedar");
const BUILTIN_FILE: &str = "<built-in rules>";
const BUILTIN_PREFIX: &str = "builtin.";

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy set is invalid:\n{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<PolicyProblem>),
    /// The compiled-in schema or rules do not compile: a defect of the build, not of the DPO.
    #[error("built-in policy definitions are broken: {0}")]
    Builtin(String),
}

/// A compiled, validated policy set: built-in rules plus the DPO's policies.
#[derive(Debug, Clone)]
pub struct SharingPolicy {
    policies: PolicySet,
    schema: Schema,
    version: String,
    builtin_reasons: HashMap<PolicyId, ReasonCode>,
    authorizer: Authorizer,
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
}

/// Case facts prepared once per decision, then reused for every category.
pub struct RequestFacts {
    principal: EntityUid,
    entities: Entities,
    sender_country: String,
    case: RestrictedExpression,
}

/// Facts about the case that policies may use; no personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFacts {
    pub asylum_linked: bool,
    pub child: bool,
    pub profiles: Vec<Profile>,
    pub origin_states: Vec<CountryCode>,
    pub consent_by_guardian: bool,
    pub best_interests_determined: bool,
    pub best_interests_recommend_return: bool,
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

impl SharingPolicy {
    /// Compiles the built-in rules with the DPO's policy files. Every problem is
    /// reported with file, line and column; none is silently skipped.
    pub fn compile(sources: &[PolicySource]) -> Result<Self, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&schema_text()).map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let mut policies = PolicySet::new();
        let mut builtin_reasons = HashMap::new();
        let mut problems = Vec::new();
        // Which file and text each policy came from, to locate validation errors.
        let mut origin: HashMap<PolicyId, (String, &str)> = HashMap::new();

        let builtin = PolicySet::from_str(BUILTIN_SOURCE).map_err(|e| PolicyError::Builtin(e.to_string()))?;
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
        for source in &sorted {
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
                origin.insert(id.clone(), (source.name.clone(), source.text.as_str()));
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
        Ok(Self { policies, schema, version, builtin_reasons, authorizer: Authorizer::new() })
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

    /// Prepares the recipient entity and case facts once per decision.
    pub fn facts(&self, recipient: &Recipient, sender: CountryCode, case: &CaseFacts) -> Result<RequestFacts, PolicyError> {
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
        let entities = Entities::from_entities([organisation], Some(&self.schema))
            .map_err(|e| PolicyError::Builtin(e.to_string()))?;
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
        ])
        .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        Ok(RequestFacts { principal, entities, sender_country: sender.to_string(), case })
    }

    /// Evaluates one category. Any failure to build or evaluate the request is
    /// a withheld category, never an allow.
    pub fn evaluate(
        &self,
        facts: &RequestFacts,
        purpose: Purpose,
        category: DataCategory,
        consent_covers: bool,
        consent_names_category: bool,
    ) -> Verdict {
        let failed = |why: &str| Verdict {
            allowed: false,
            permitted_by: Vec::new(),
            forbidden_by: Vec::new(),
            failed: vec![why.to_owned()],
        };
        let Ok(request) = self.request(facts, purpose, category, consent_covers, consent_names_category) else {
            return failed("request");
        };
        let response = self.authorizer.is_authorized(&request, &self.policies, &facts.entities);
        let diagnostics = response.diagnostics();
        let failed = diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => e.policy_id().to_string(),
            })
            .collect::<Vec<String>>();
        let determining: Vec<&PolicyId> = diagnostics.reason().collect();
        match response.decision() {
            CedarDecision::Allow => Verdict {
                // A forbid that failed to evaluate might have applied: withhold.
                allowed: failed.is_empty(),
                // Sorted: Cedar reports a set, and a decision must be reproducible.
                permitted_by: sorted(determining.iter().map(|id| id.to_string())),
                forbidden_by: Vec::new(),
                failed,
            },
            CedarDecision::Deny => Verdict {
                allowed: false,
                permitted_by: Vec::new(),
                forbidden_by: sorted(
                    determining
                        .iter()
                        .map(|id| (id.to_string(), self.builtin_reasons.get(*id).copied().unwrap_or(ReasonCode::PolicyForbid))),
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
    ) -> Result<Request, PolicyError> {
        let consent = RestrictedExpression::new_record([
            ("covers".to_owned(), RestrictedExpression::new_bool(consent_covers)),
            ("names_category".to_owned(), RestrictedExpression::new_bool(consent_names_category)),
        ])
        .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        let context = Context::from_pairs([
            ("sender_country".to_owned(), RestrictedExpression::new_string(facts.sender_country.clone())),
            ("case".to_owned(), facts.case.clone()),
            ("consent".to_owned(), consent),
        ])
        .map_err(|e| PolicyError::Builtin(e.to_string()))?;
        Request::new(
            facts.principal.clone(),
            entity_uid("Action", purpose.as_str())?,
            entity_uid("Category", category.as_str())?,
            context,
            Some(&self.schema),
        )
        .map_err(|e| PolicyError::Builtin(e.to_string()))
    }
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
