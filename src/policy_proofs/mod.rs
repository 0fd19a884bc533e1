//! Machine proofs about the sharing policies, for the DPO (`policy prove`).
//!
//! Cedar's symbolic compiler (`cedar-policy-symcc`) turns each question below
//! into SMT-LIB, and cvc5 answers it for every request the Cedar schema
//! allows: every purpose, category, recipient (kind, country, state, state
//! actor or not, services), case facts and consent facts. A property holds
//! only when the solver proves it; a counterexample is rendered in the
//! gateway's own terms, never as SMT.
//!
//! The properties, each checked for every action (each purpose, and onward
//! referral: the schema's request environments):
//! 1. the built-in forbids with a permit of everything deny at least what
//!    `specification.cedar` says must be denied; since a permit can only add
//!    allowed requests, no DPO policy set can loosen them;
//! 2. the built-in rules with this DPO policy set do so too;
//! 3. each built-in forbid matches exactly the requests of the specification
//!    rule that names it (`@specifies`): no over-blocking either;
//! 4. each built-in forbid can match some request (a scope mistake would make
//!    a rule dead);
//! 5. no built-in or DPO policy can raise an evaluation error.

mod counterexample;
mod solver;

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{Policy, PolicyId, PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet, Env};
use serde::Serialize;

pub use counterexample::Counterexample;
pub use solver::{SolverCommand, SolverStartError, CVC5_PYPI_RELEASE};

use crate::domain::policy::{schema_text, BUILTIN_SOURCE};

/// What the built-in rules must deny, written apart from them (see the file).
pub const SPECIFICATION: &str = include_str!("specification.cedar");

/// The gateway's own built-in rules, as compiled into every policy set.
pub const SHIPPED_BUILTIN_RULES: &str = BUILTIN_SOURCE;

const PERMIT_EVERYTHING: &str = r#"@id("any.permit_everything") permit (principal, action, resource);"#;

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("the Cedar schema does not load: {0}")]
    Schema(String),
    #[error("the built-in rules do not parse: {0}")]
    BuiltinRules(String),
    #[error("the specification does not parse: {0}")]
    Specification(String),
    #[error(transparent)]
    SolverStart(#[from] SolverStartError),
    /// The solver failed, timed out or answered `unknown`: nothing is proved.
    #[error("the analysis of {property} for purpose {purpose} did not finish: {reason}")]
    Analysis { property: String, purpose: String, reason: String },
}

/// A property the prover checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Property {
    /// The built-in forbids with a permit of everything deny everything the
    /// specification denies.
    BuiltinRulesCannotBeLoosened,
    /// The built-in rules with the DPO's policies deny everything the
    /// specification denies.
    PolicySetKeepsSpecification,
    /// A built-in rule matches exactly what its specification rule describes.
    BuiltinRuleMatchesSpecification { rule: String, specification: String },
    /// A built-in rule has exactly one specification rule naming it.
    BuiltinRuleIsSpecified { rule: String },
    /// A built-in rule matches some request for some purpose.
    BuiltinRuleCanApply { rule: String },
    /// A policy never raises an evaluation error.
    NeverErrors { policy: String },
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BuiltinRulesCannotBeLoosened => write!(
                f,
                "the built-in rules deny everything the specification requires, whatever a DPO permits"
            ),
            Self::PolicySetKeepsSpecification => {
                write!(f, "this policy set denies everything the specification requires")
            }
            Self::BuiltinRuleMatchesSpecification { rule, specification } => {
                write!(f, "{rule} forbids exactly what {specification} describes")
            }
            Self::BuiltinRuleIsSpecified { rule } => write!(f, "{rule} has one specification rule"),
            Self::BuiltinRuleCanApply { rule } => write!(f, "{rule} can apply"),
            Self::NeverErrors { policy } => write!(f, "{policy} never raises an evaluation error"),
        }
    }
}

/// One property and what the solver found.
#[derive(Debug, Clone, Serialize)]
pub struct PropertyOutcome {
    pub property: Property,
    pub holds: bool,
    /// For a property that fails: a request that shows it, per purpose.
    pub counterexamples: Vec<Counterexample>,
    /// For a rule that can apply: the purposes it applies to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
}

/// Every property, proved or refuted.
#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    pub outcomes: Vec<PropertyOutcome>,
}

impl ProofReport {
    pub fn all_hold(&self) -> bool {
        self.outcomes.iter().all(|o| o.holds)
    }

    pub fn refuted(&self) -> impl Iterator<Item = &PropertyOutcome> {
        self.outcomes.iter().filter(|o| !o.holds)
    }
}

/// Parses Cedar text and names each policy by its `@id` annotation, so that
/// results speak of `builtin.asylum_firewall`, not `policy3`.
fn named_policies(text: &str) -> Result<PolicySet, String> {
    let parsed = PolicySet::from_str(text).map_err(|e| e.to_string())?;
    let mut named = PolicySet::new();
    for policy in parsed.policies() {
        let id = policy.annotation("id").ok_or_else(|| format!("a policy lacks @id: {policy}"))?;
        named.add(policy.new_id(PolicyId::new(id))).map_err(|e| e.to_string())?;
    }
    Ok(named)
}

fn union(sets: &[&PolicySet]) -> PolicySet {
    let mut all = PolicySet::new();
    for set in sets {
        for policy in set.policies() {
            // Ids are unique across the sets: built-in ids are reserved,
            // specification ids start with `spec.`, the permit with `any.`.
            let _ = all.add(policy.clone());
        }
    }
    all
}

fn id_of(policy: &Policy) -> String {
    policy.id().to_string()
}

/// Accumulates per-purpose results into one outcome per property.
#[derive(Default)]
struct Outcomes(BTreeMap<Property, PropertyOutcome>);

impl Outcomes {
    fn entry(&mut self, property: Property) -> &mut PropertyOutcome {
        self.0.entry(property.clone()).or_insert(PropertyOutcome {
            property,
            holds: true,
            counterexamples: Vec::new(),
            purposes: Vec::new(),
        })
    }

    fn record(&mut self, property: Property, counterexample: Option<Env>) {
        let outcome = self.entry(property);
        if let Some(found) = counterexample {
            outcome.holds = false;
            outcome.counterexamples.push(Counterexample::from_env(&found));
        }
    }
}

/// The prover: a solver session and the schema every question ranges over.
struct Prover {
    compiler: CedarSymCompiler<LocalSolver>,
    schema: Schema,
}

impl Prover {
    /// Loads the Cedar schema and starts a solver session.
    fn start(solver: &SolverCommand) -> Result<Self, ProofError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text()).map_err(|e| ProofError::Schema(e.to_string()))?;
        let compiler = CedarSymCompiler::new(solver.start()?).map_err(|e| ProofError::Analysis {
            property: "starting the solver".into(),
            purpose: "any".into(),
            reason: e.to_string(),
        })?;
        Ok(Self { compiler, schema })
    }

    /// The schema's request environments, one per action (each purpose, and
    /// `refer_onward`), in a fixed order
    /// (the schema's is a hash map's), so that a report reads the same on every run.
    fn environments(&self) -> Vec<RequestEnv> {
        let mut envs: Vec<RequestEnv> = self.schema.request_envs().collect();
        envs.sort_by_key(|env| env.action().to_string());
        envs
    }

    fn analysis_error(property: &dyn std::fmt::Display, env: &RequestEnv, error: impl std::fmt::Display) -> ProofError {
        ProofError::Analysis {
            property: property.to_string(),
            purpose: env.action().id().unescaped().to_owned(),
            reason: error.to_string(),
        }
    }

    fn compile_set(&self, set: &PolicySet, env: &RequestEnv, property: &dyn std::fmt::Display) -> Result<CompiledPolicySet, ProofError> {
        CompiledPolicySet::compile(set, env, &self.schema).map_err(|e| Self::analysis_error(property, env, e))
    }

    fn compile(&self, policy: &Policy, env: &RequestEnv, property: &Property) -> Result<CompiledPolicy, ProofError> {
        CompiledPolicy::compile(policy, env, &self.schema).map_err(|e| Self::analysis_error(property, env, e))
    }
}

/// Proves the properties of the module comment for `builtin` (the gateway's
/// built-in rules, or a variant under test) with the DPO's `dpo` policies.
pub async fn prove(builtin: &str, dpo: &PolicySet, solver: &SolverCommand) -> Result<ProofReport, ProofError> {
    let builtin = named_policies(builtin).map_err(ProofError::BuiltinRules)?;
    let specification = named_policies(SPECIFICATION).map_err(ProofError::Specification)?;
    let permit_everything = named_policies(PERMIT_EVERYTHING).map_err(ProofError::Specification)?;
    let mut prover = Prover::start(solver)?;

    let builtin_forbids = union(&[&builtin, &permit_everything]);
    let required = union(&[&specification, &permit_everything]);
    let whole_set = union(&[&builtin, dpo]);
    let mut outcomes = Outcomes::default();

    // Which specification rule describes each built-in rule.
    let mut specified_by: BTreeMap<String, Vec<Policy>> = builtin.policies().map(|p| (id_of(p), Vec::new())).collect();
    for rule in specification.policies() {
        if let Some(target) = rule.annotation("specifies").and_then(|t| specified_by.get_mut(t)) {
            target.push(rule.clone());
        }
    }
    for (rule, specs) in &specified_by {
        outcomes.entry(Property::BuiltinRuleIsSpecified { rule: rule.clone() }).holds = specs.len() == 1;
    }

    for env in &prover.environments() {
        let purpose = env.action().id().unescaped().to_owned();

        let property = Property::BuiltinRulesCannotBeLoosened;
        let (allowed, must) = (prover.compile_set(&builtin_forbids, env, &property)?, prover.compile_set(&required, env, &property)?);
        let found = prover.compiler.check_implies_with_counterexample_opt(&allowed, &must).await;
        outcomes.record(property.clone(), found.map_err(|e| Prover::analysis_error(&property, env, e))?);

        let property = Property::PolicySetKeepsSpecification;
        let whole = prover.compile_set(&whole_set, env, &property)?;
        let found = prover.compiler.check_implies_with_counterexample_opt(&whole, &must).await;
        outcomes.record(property.clone(), found.map_err(|e| Prover::analysis_error(&property, env, e))?);

        for rule in builtin.policies() {
            let property = Property::BuiltinRuleCanApply { rule: id_of(rule) };
            let compiled = prover.compile(rule, env, &property)?;
            let never = prover.compiler.check_never_matches_opt(&compiled).await;
            if !never.map_err(|e| Prover::analysis_error(&property, env, e))? {
                outcomes.entry(property).purposes.push(purpose.clone());
            } else {
                outcomes.entry(property);
            }
            if let [spec] = specified_by.get(&id_of(rule)).map(Vec::as_slice).unwrap_or_default() {
                let property = Property::BuiltinRuleMatchesSpecification { rule: id_of(rule), specification: id_of(spec) };
                let described = prover.compile(spec, env, &property)?;
                let found = prover.compiler.check_matches_equivalent_with_counterexample_opt(&compiled, &described).await;
                outcomes.record(property.clone(), found.map_err(|e| Prover::analysis_error(&property, env, e))?);
            }
        }

        for policy in builtin.policies().chain(dpo.policies()) {
            let property = Property::NeverErrors { policy: id_of(policy) };
            let compiled = prover.compile(policy, env, &property)?;
            let found = prover.compiler.check_never_errors_with_counterexample_opt(&compiled).await;
            outcomes.record(property.clone(), found.map_err(|e| Prover::analysis_error(&property, env, e))?);
        }
    }
    for outcome in outcomes.0.values_mut() {
        if let Property::BuiltinRuleCanApply { .. } = outcome.property {
            outcome.holds = !outcome.purposes.is_empty();
        }
    }
    Ok(ProofReport { outcomes: outcomes.0.into_values().collect() })
}

impl std::fmt::Display for ProofReport {
    /// One line per property; each failure followed by its counterexamples.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for outcome in &self.outcomes {
            let verdict = if outcome.holds { "proved " } else { "REFUTED" };
            write!(f, "{verdict}  {}", outcome.property)?;
            if !outcome.purposes.is_empty() {
                write!(f, " (for {})", outcome.purposes.join(", "))?;
            }
            writeln!(f)?;
            // The first counterexample; the others differ in purpose (all are in --json).
            if let Some((first, others)) = outcome.counterexamples.split_first() {
                writeln!(f, "         counterexample:")?;
                for line in first.to_string().lines() {
                    writeln!(f, "           {line}")?;
                }
                if !others.is_empty() {
                    let purposes: Vec<&str> = others.iter().map(|c| c.purpose.as_str()).collect();
                    writeln!(f, "         (and likewise for {})", purposes.join(", "))?;
                }
            }
        }
        let refuted = self.refuted().count();
        write!(f, "{} properties proved, {refuted} refuted", self.outcomes.len() - refuted)
    }
}

/// How a new version of the DPO's policies changes what is shared,
/// proved for every request (issue 19 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeLabel {
    /// Allows exactly the same requests.
    Equivalent,
    /// Allows only requests the active version allows, and fewer.
    Narrows,
    /// Allows every request the active version allows, and more.
    Widens,
    /// Allows some requests the active version does not, and denies some it allows.
    Mixed,
}

impl std::fmt::Display for ChangeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Equivalent => "equivalent",
            Self::Narrows => "narrows",
            Self::Widens => "widens",
            Self::Mixed => "mixed",
        })
    }
}

/// A new version against the active one: the label, and requests that flip.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub label: ChangeLabel,
    /// Requests the new version allows and the active one denies (one per action at most).
    pub now_allowed: Vec<Counterexample>,
    /// Requests the active version allows and the new one denies (one per action at most).
    pub now_denied: Vec<Counterexample>,
}

/// Compares two DPO policy sets, each with the built-in rules, for every
/// purpose: the new one `widens` if some request goes that did not, and
/// `narrows` if some request that went no longer does.
pub async fn compare(builtin: &str, active: &PolicySet, new: &PolicySet, solver: &SolverCommand) -> Result<Comparison, ProofError> {
    let builtin = named_policies(builtin).map_err(ProofError::BuiltinRules)?;
    let mut prover = Prover::start(solver)?;
    let (active_set, new_set) = (union(&[&builtin, active]), union(&[&builtin, new]));
    let (mut now_allowed, mut now_denied) = (Vec::new(), Vec::new());
    let property = "the comparison of the two versions";
    for env in &prover.environments() {
        let before = prover.compile_set(&active_set, env, &property)?;
        let after = prover.compile_set(&new_set, env, &property)?;
        let lost = prover.compiler.check_implies_with_counterexample_opt(&before, &after).await;
        if let Some(found) = lost.map_err(|e| Prover::analysis_error(&property, env, e))? {
            now_denied.push(Counterexample::from_env(&found));
        }
        let gained = prover.compiler.check_implies_with_counterexample_opt(&after, &before).await;
        if let Some(found) = gained.map_err(|e| Prover::analysis_error(&property, env, e))? {
            now_allowed.push(Counterexample::from_env(&found));
        }
    }
    let label = match (now_allowed.is_empty(), now_denied.is_empty()) {
        (true, true) => ChangeLabel::Equivalent,
        (true, false) => ChangeLabel::Narrows,
        (false, true) => ChangeLabel::Widens,
        (false, false) => ChangeLabel::Mixed,
    };
    Ok(Comparison { label, now_allowed, now_denied })
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.label)?;
        for (heading, examples) in [
            ("now allowed (the active version denies it)", &self.now_allowed),
            ("now denied (the active version allows it)", &self.now_denied),
        ] {
            for example in examples {
                writeln!(f)?;
                writeln!(f, "  {heading}:")?;
                let lines: Vec<String> = example.to_string().lines().map(|l| format!("    {l}")).collect();
                write!(f, "{}", lines.join("\n"))?;
            }
        }
        Ok(())
    }
}
