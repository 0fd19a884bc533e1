//! Use cases of the gateway over its ports: submit and follow referrals,
//! manage sharing policies, read the audit log and disclosures.
//!
//! Role checks live here, not in the HTTP layer, so that every entry point
//! gets them. Errors are [`AppError`]; the HTTP edge renders them.

pub mod access;
pub mod backoff;
pub mod dpo;
pub mod matching;
pub mod receiving;
pub mod recipient;
pub mod retention;
pub mod sending;
pub mod statistics;
pub mod vault;
pub mod views;

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::audit::{Action, Actor, AuditEvent};
use crate::auth::AuthError;
use crate::crypto::at_rest::KeyRing;
use crate::directory::Directory;
use crate::directory::signed::{self, SignedDirectoryError};
use crate::domain::policy::DataProtectionPolicy;
use crate::domain::submission::FieldProblem;
use crate::domain::decision::ReasonCode;
use crate::domain::CountryCode;
use crate::store::writer::Writer;
use crate::store::{Store, StoreError, Write};

/// The clock port: the core never reads the time itself.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a chosen instant and runs at the pace of the
/// machine's monotonic timer. For federations run on the fixtures' date
/// (benchmarks, tests): retries and deadlines need time to pass, and
/// nothing may depend on the calendar day the run happens on.
#[derive(Debug, Clone, Copy)]
pub struct SteadyClock {
    start: DateTime<Utc>,
    started: std::time::Instant,
}

impl SteadyClock {
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self { start, started: std::time::Instant::now() }
    }
}

impl Clock for SteadyClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.start.checked_add_signed(elapsed).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The DPO's policy version in force (sharing, retention, end-to-end sealing) and its stored number.
#[derive(Debug)]
pub struct ActivePolicy {
    pub number: i64,
    pub policy: DataProtectionPolicy,
}

/// The approved policy versions in force now or later, compiled, and the
/// store's mark they were read at (see [`crate::store::PolicyStore::policy_mark`]).
#[derive(Debug)]
pub struct PolicySchedule {
    /// The version in force when it was read.
    pub in_force: (crate::domain::signoff::ApprovedVersion, Arc<ActivePolicy>),
    /// The versions approved to take effect later.
    pub later: Vec<(crate::domain::signoff::ApprovedVersion, Arc<ActivePolicy>)>,
    pub mark: crate::store::PolicyMark,
}

impl PolicySchedule {
    pub fn versions(&self) -> impl Iterator<Item = &(crate::domain::signoff::ApprovedVersion, Arc<ActivePolicy>)> {
        std::iter::once(&self.in_force).chain(&self.later)
    }

    /// The version in force at `at`: the one in force when the schedule was
    /// read, or a later one whose time has come.
    fn in_force_at(&self, at: DateTime<Utc>) -> Arc<ActivePolicy> {
        let approved: Vec<_> = self.versions().map(|(v, _)| *v).collect();
        let number = crate::domain::signoff::in_force_at(&approved, at.timestamp_millis()).map(|v| v.number);
        let chosen = number.and_then(|n| self.versions().find(|(v, _)| v.number == n)).unwrap_or(&self.in_force);
        Arc::clone(&chosen.1)
    }
}

/// How the DPO's policy versions are signed off and checked.
#[derive(Debug, Clone)]
pub struct PolicyGovernance {
    pub approvals_required: crate::domain::signoff::ApprovalsRequired,
    /// The solver that proves uploads; none: uploads are not proved.
    pub solver: Option<crate::policy_proofs::SolverCommand>,
    /// Days of sending decisions an upload is replayed on; their facts are kept that long.
    pub impact_days: u32,
}

impl PolicyGovernance {
    /// The start of the replay window at `now`: facts of decisions made earlier are forgotten.
    pub fn impact_since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::days(i64::from(self.impact_days))
    }
}

impl Default for PolicyGovernance {
    fn default() -> Self {
        Self {
            approvals_required: crate::domain::signoff::ApprovalsRequired::FOUR_EYES,
            solver: None,
            impact_days: crate::config::default_impact_days(),
        }
    }
}

/// Everything a use case needs; one per running gateway.
pub struct Gateway {
    pub country: CountryCode,
    directory: RwLock<Arc<Directory>>,
    vault: vault::Vault,
    pub store: Arc<dyn Store>,
    pub writer: Writer,
    pub clock: Arc<dyn Clock>,
    policy: RwLock<Arc<PolicySchedule>>,
    governance: PolicyGovernance,
    /// Signing and decryption keys between gateways; none until federation is set up.
    federation: Option<crate::crypto::federation_keys::FederationKeys>,
    delivery: sending::delivery::DeliverySettings,
    /// Woken when a referral is queued, so the outbox worker need not wait for its next poll.
    queued: tokio::sync::Notify,
    /// Woken when a packet is taken into the inbox.
    received: tokio::sync::Notify,
    /// Woken when a case waits for a push to its recipient's webhook.
    to_push: tokio::sync::Notify,
    /// Cases erased by the retention sweep, for the metrics.
    erasures: retention::ErasureCounters,
    /// How long readiness waits for the database (real time: an IO deadline, not the domain clock).
    readiness_timeout: std::time::Duration,
    /// Told how each delivery attempt ends (the metrics).
    delivery_observer: Arc<dyn sending::delivery_observer::DeliveryObserver>,
    /// How statistics are released.
    statistics: crate::domain::statistics::DisclosureControl,
    /// Deadlines per priority (`[deadlines]`).
    deadlines: crate::domain::priority::DeadlinesByPriority,
    /// Organisations told of their referrals' timelines (`[callbacks]`).
    callbacks: sending::callbacks::CallbackTargets,
    /// How long an emergency override may wait for a DPO's approval (`[overrides]`).
    override_window: chrono::Duration,
    /// This gateway's match function (issue 22 §2), keyed from its keys;
    /// `None` only if the derived key is unusable.
    match_function: Option<Arc<crate::crypto::match_function::MatchFunctionKey>>,
    /// `[matching]`.
    matching: matching::MatchSettings,
    /// The port matching asks peers through, once the federation is up.
    match_transport: std::sync::OnceLock<Arc<dyn matching::MatchTransport>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("country", &self.country).finish_non_exhaustive()
    }
}

/// Why a use case did not complete. Messages never contain submitted values.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("the caller lacks the role this needs")]
    Forbidden { code: &'static str },
    #[error("not found")]
    NotFound,
    #[error("malformed JSON at line {line}, column {column}")]
    MalformedJson { line: usize, column: usize },
    #[error("the request is invalid")]
    Invalid(Vec<FieldProblem>),
    #[error("the idempotency key was already used with another request body")]
    IdempotencyConflict { referral_id: String },
    #[error("the policy set is invalid")]
    PolicyInvalid(Vec<crate::domain::policy::PolicyProblem>),
    /// A policy set that compiles but fails its tests or proofs.
    #[error("the policy set fails its checks")]
    PolicyRefused(dpo::policy_checks::UploadRefusal),
    #[error("{0}")]
    ReviewRefused(crate::domain::signoff::ReviewRefusal),
    #[error("{0}")]
    OverrideDecisionRefused(crate::domain::emergency_override::OverrideDecisionRefusal),
    /// Other writers kept changing what this request read: try again.
    #[error("contended")]
    Contended,
    #[error("packet refused: {0}")]
    PacketRefused(crate::crypto::packet::OpenError),
    /// The case, sealed for its destination, could exceed the largest
    /// packet the destination's gateway takes: it could never be delivered.
    #[error("the sealed packet could take {bound} bytes; the destination gateway takes at most {limit}")]
    Undeliverable { bound: usize, limit: usize },
    #[error("this gateway has no federation keys")]
    NotFederated,
    /// Statistics are released only for a period that has ended.
    #[error("the period has not ended")]
    PeriodOpen(crate::domain::statistics::Period),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The case's key was destroyed: what was sealed under it is gone.
    #[error("the case was erased")]
    Erased,
    /// An erasure was confirmed for a case that was not erased.
    #[error("the case was not erased")]
    NotErased,
    /// An onward referral the limits, the rules or this gateway's policy do not allow.
    #[error("{0}")]
    OnwardRefused(crate::domain::onward::OnwardRefusal),
    /// A reply to a case that no reply can answer.
    #[error("{0}")]
    ReplyNotPossible(crate::domain::reply_cases::ReplyNotPossible),
    /// A match query refused, or a search that cannot be matched.
    #[error("{0}")]
    MatchRefused(matching::MatchRefusal),
    #[error("internal: {0}")]
    Internal(String),
}

impl AppError {
    /// One field's problem, said without its value.
    pub fn invalid_field(field: &str, problem: &str) -> Self {
        Self::Invalid(vec![FieldProblem { field: field.to_owned(), problem: problem.to_owned() }])
    }
}

impl From<crate::crypto::at_rest::KeyError> for AppError {
    fn from(error: crate::crypto::at_rest::KeyError) -> Self {
        AppError::Internal(error.to_string())
    }
}

/// Runs `attempt` on each claimed item at once and waits for them all. An
/// attempt that fails inside the gateway is logged as a `what` attempt and
/// the others go on: the item stays claimed until its lease runs out, and
/// falls due again.
pub(crate) async fn attempt_each<T, F>(items: Vec<T>, what: &'static str, attempt: impl Fn(T) -> F)
where
    F: std::future::Future<Output = Result<(), AppError>> + Send + 'static,
{
    let mut attempts = tokio::task::JoinSet::new();
    for item in items {
        attempts.spawn(tracing::Instrument::in_current_span(attempt(item)));
    }
    while let Some(joined) = attempts.join_next().await {
        if let Err(error) = joined.map_err(|e| AppError::Internal(e.to_string())).and_then(|r| r) {
            tracing::error!(%error, "{what} attempt failed inside the gateway");
        }
    }
}

impl Gateway {
    pub fn new(
        country: CountryCode,
        directory: Directory,
        vault: vault::Vault,
        store: Arc<dyn Store>,
        writer: Writer,
        clock: Arc<dyn Clock>,
        policy: PolicySchedule,
    ) -> Self {
        let match_function =
            crate::crypto::match_function::MatchFunctionKey::from_seed(&vault.keys.derived_secret(matching::index::MATCH_FUNCTION_PURPOSE)).ok().map(Arc::new);
        Self {
            country,
            directory: RwLock::new(Arc::new(directory)),
            vault,
            store,
            writer,
            clock,
            policy: RwLock::new(Arc::new(policy)),
            governance: PolicyGovernance::default(),
            federation: None,
            delivery: sending::delivery::DeliverySettings::default(),
            queued: tokio::sync::Notify::new(),
            received: tokio::sync::Notify::new(),
            to_push: tokio::sync::Notify::new(),
            erasures: retention::ErasureCounters::default(),
            readiness_timeout: std::time::Duration::from_secs(1),
            delivery_observer: Arc::new(sending::delivery_observer::Unobserved),
            statistics: crate::domain::statistics::DisclosureControl::default(),
            deadlines: crate::domain::priority::DeadlinesByPriority::default(),
            callbacks: sending::callbacks::CallbackTargets::new(),
            override_window: chrono::Duration::hours(1),
            match_function,
            matching: matching::MatchSettings::default(),
            match_transport: std::sync::OnceLock::new(),
        }
    }

    /// Sets `[matching]`.
    pub fn with_matching(mut self, config: crate::config::MatchingConfig) -> Self {
        self.matching = config.into();
        self
    }

    /// Gives matching its way to the peers (once the federation client exists).
    pub fn set_match_transport(&self, transport: Arc<dyn matching::MatchTransport>) {
        let _ = self.match_transport.set(transport);
    }

    /// Sets the organisations with status callbacks (`[callbacks]`); the
    /// store learns of them at [`Gateway::register_callbacks`].
    pub fn with_callbacks(mut self, callbacks: sending::callbacks::CallbackTargets) -> Self {
        self.callbacks = callbacks;
        self
    }

    /// Sets how long an emergency override may wait for a DPO's approval (`[overrides]`).
    pub fn with_override_window(mut self, window: chrono::Duration) -> Self {
        self.override_window = window;
        self
    }

    pub(crate) fn override_window(&self) -> chrono::Duration {
        self.override_window
    }

    /// Sets the deadlines per priority (`[deadlines]`).
    pub fn with_deadlines(mut self, deadlines: crate::domain::priority::DeadlinesByPriority) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Sets how statistics are released (`[statistics]`).
    pub fn with_statistics(mut self, control: crate::domain::statistics::DisclosureControl) -> Self {
        self.statistics = control;
        self
    }

    /// Sets how long readiness waits for the database.
    pub fn with_readiness_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.readiness_timeout = timeout;
        self
    }

    /// Whether the database answers within the readiness deadline, which is
    /// shorter than a statement's: a probe must not hang with a black-holed network.
    pub async fn database_ready(&self) -> bool {
        matches!(tokio::time::timeout(self.readiness_timeout, self.store.ping()).await, Ok(Ok(())))
    }

    /// The gateway-wide keys: keyed hashes, and values that are no case's.
    pub fn keys(&self) -> &KeyRing {
        &self.vault.keys
    }

    /// Case keys: sealing and opening each case's personal data at rest.
    pub fn vault(&self) -> &vault::Vault {
        &self.vault
    }

    /// Sets how referrals are delivered to peer gateways.
    pub fn with_delivery(mut self, settings: sending::delivery::DeliverySettings) -> Self {
        self.delivery = settings;
        self
    }

    /// Resolves when a referral has been queued since the last call.
    pub async fn delivery_wanted(&self) {
        self.queued.notified().await;
    }

    /// Wakes the delivery worker: something was queued.
    pub fn wake_delivery(&self) {
        self.queued.notify_one();
    }

    /// Resolves when a packet has been received since the last call.
    pub async fn processing_wanted(&self) {
        self.received.notified().await;
    }

    /// Wakes the inbox worker: a packet was received.
    pub fn wake_processing(&self) {
        self.received.notify_one();
    }

    /// Wakes the push worker: a case waits for a webhook.
    pub fn wake_pushing(&self) {
        self.to_push.notify_one();
    }

    /// Resolves when a case has been queued for a push since the last call.
    pub async fn pushing_wanted(&self) {
        self.to_push.notified().await;
    }

    /// Most outbox entries claimed per delivery round.
    pub fn delivery_batch(&self) -> i64 {
        self.delivery.batch
    }

    /// This gateway's federation keys, when it has them.
    pub fn federation_keys(&self) -> Option<&crate::crypto::federation_keys::FederationKeys> {
        self.federation.as_ref()
    }

    /// Gives the gateway its federation keys (`keys/federation/`).
    pub fn with_federation_keys(mut self, keys: crate::crypto::federation_keys::FederationKeys) -> Self {
        self.federation = Some(keys);
        self
    }

    /// The directory edition in force now.
    pub fn directory(&self) -> Arc<Directory> {
        match self.directory.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts a newly verified directory edition in force, unless it is older
    /// than the one in use or no longer lists this gateway.
    pub fn replace_directory(&self, offered: Directory) -> Result<u64, SignedDirectoryError> {
        let mut guard = match self.directory.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if offered.gateway(self.country).is_none() {
            return Err(SignedDirectoryError::NotListed);
        }
        let accepted = signed::newer_or_same(&guard, offered)?;
        let serial = accepted.serial();
        *guard = Arc::new(accepted);
        Ok(serial)
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<ActivePolicy> {
        self.policy_schedule().in_force_at(self.now())
    }

    fn policy_schedule(&self) -> Arc<PolicySchedule> {
        match self.policy.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Installs `schedule`, unless one read at a later mark already is: an
    /// upload, a review and a refresh may finish in any order.
    fn install_schedule(&self, schedule: PolicySchedule) {
        let mut guard = match self.policy.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (new, old) = (schedule.mark, guard.mark);
        if new.latest_number >= old.latest_number && new.reviews >= old.reviews {
            *guard = Arc::new(schedule);
        }
    }

    /// Sets how policy versions are signed off and proved.
    pub fn with_policy_governance(mut self, governance: PolicyGovernance) -> Self {
        self.governance = governance;
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Keyed hash of a subject reference: how the store and the audit log name a person.
    pub fn subject_key(&self, subject_ref: &str) -> String {
        self.keys().index("subject", subject_ref.as_bytes())
    }

    /// Records a refused request (unauthenticated or forbidden).
    pub async fn audit_refusal(&self, actor: Actor, outcome: &'static str, code: &str) -> Result<(), AppError> {
        let event = AuditEvent::new(self.now(), actor, Action::AccessRefused, outcome).reasons([code]);
        self.writer.write(Write::Audit(event)).await?;
        Ok(())
    }

    /// Appends one audit event.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), AppError> {
        self.writer.write(Write::Audit(event)).await?;
        Ok(())
    }
}

/// The reason codes of a decision, as the audit log stores them.
pub fn reason_strings<'a>(reasons: impl IntoIterator<Item = &'a ReasonCode>) -> Vec<String> {
    reasons.into_iter().map(|r| r.as_str().to_owned()).collect()
}

/// `N` bytes from the system's secure generator.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], AppError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| AppError::Internal("random generator failed".to_owned()))?;
    Ok(bytes)
}

/// A fresh id (UUID v7 form): the machine's time in milliseconds, then 74
/// bits from the system's secure generator. Ids made later sort later, so
/// the indexes keyed on them grow at one end: with random ids every insert
/// dirtied pages all over those B-trees, and SQLite wrote about 70 KB per
/// referral. The time is the machine's, not the gateway's clock port,
/// because it orders storage and decides nothing. An id reveals when it was
/// made; referral ids go only to the submitting organisation, which knows.
pub fn new_id() -> Result<String, AppError> {
    let random = random_bytes::<10>()?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| AppError::Internal("system time before 1970".to_owned()))?
        .as_millis();
    let millis = u64::try_from(millis).map_err(|_| AppError::Internal("system time out of range".to_owned()))?;
    Ok(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid().to_string())
}

/// A time in unix milliseconds as RFC 3339 with milliseconds, in UTC (empty if out of range).
pub fn millis_to_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_are_distinct_version_7_and_sort_in_the_order_they_were_made() {
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(new_id().unwrap());
            if ids.len() % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        for id in &ids {
            assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Within one millisecond the order is random; across the pauses it holds.
        for pair in ids.chunks(50).collect::<Vec<_>>().windows(2) {
            assert!(pair[0].iter().max() < pair[1].iter().min());
        }
    }
}
