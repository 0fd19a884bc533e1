//! Statistics for the coordinating body, DPOs and auditors (issue 20 §2):
//! the predefined tables of a closed period, released through the
//! gateway's disclosure control and signed by the gateway, so that the
//! coordinating body can merge several gateways' answers after checking
//! each against the directory.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::access::{Authorized, StatisticsReaders};
use super::views::Timestamp;
use super::{AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::crypto::jose_keys::SigningKey;
use crate::crypto::packet::SignerDirectory;
use crate::crypto::signed_json::{self, SignedJsonError};
use crate::domain::decision::DecisionRecord;
use crate::domain::statistics::merge::{merge, MergeError, MergedTables};
use crate::domain::statistics::tables::{tables, DecidedReferral, Records, Refusal, Step, Tables, Timeline, TIME_STEP_MINUTES};
use crate::domain::statistics::{DisclosureControl, Period};
use crate::domain::CountryCode;
use crate::store::{Store, StoreError};

/// `typ` of signed statistics: they can pass for no packet, receipt or pushed case.
pub const STATISTICS_JWS_TYPE: &str = "rgw-statistics+jws";

/// The name of the method every answer follows: the tables, periods,
/// rounding and suppression `docs/api.md` §9 describes.
pub const METHOD_NAME: &str = "rgw-statistics/1";

/// Rows read from the store at a time.
const PAGE: i64 = 1_000;

/// How the numbers of an answer were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Method {
    /// `rgw-statistics/1`.
    pub name: String,
    /// Every count released is a multiple of this.
    pub rounding_base: u64,
    /// A count under this (and above zero) is suppressed.
    pub threshold: u64,
    /// Times are told to this many minutes.
    pub time_step_minutes: u64,
    /// An erasure confirmed later than this after its withdrawal is late.
    pub erasure_deadline_hours: u64,
}

/// One gateway's statistics of one period: what its signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayStatistics {
    /// The gateway's country.
    pub gateway: CountryCode,
    pub issued_at: Timestamp,
    pub method: Method,
    pub tables: Tables,
}

/// The answer of `GET /v1/statistics` and `report statistics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatisticsAnswer {
    /// What `signed` holds, to read.
    pub statistics: GatewayStatistics,
    /// `statistics` signed by the gateway: a compact JWS (ES256, `typ`
    /// `rgw-statistics+jws`) under a signing key the federation directory
    /// publishes for it. What `report statistics --merge` takes.
    pub signed: String,
}

/// A gateway's answer as a merge took it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MergedSource {
    pub gateway: CountryCode,
    pub issued_at: Timestamp,
    pub method: Method,
    /// The key that signed it, as the directory lists it.
    pub key_id: String,
}

/// Several gateways' statistics of one period, each checked against the directory, added up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MergedStatistics {
    pub sources: Vec<MergedSource>,
    pub tables: MergedTables,
}

/// Why statistics could not be released or merged. Never about anyone.
#[derive(Debug, thiserror::Error)]
pub enum StatisticsError {
    #[error("the period {0} is not released yet: statistics are released an hour after a period ends")]
    PeriodOpen(Period),
    #[error("this gateway has no signing key the directory publishes: statistics cannot be signed")]
    NotSigned,
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("the statistics cannot be signed: {0}")]
    Sign(String),
    /// The answer kept for a period does not read back (a damaged row).
    #[error("the answer kept for {period} does not read back: {reason}")]
    KeptUnreadable { period: Period, reason: String },
    #[error("answer {index}: {reason}")]
    Unverified { index: usize, reason: String },
    #[error("{0}")]
    Merge(#[from] MergeError),
}

impl From<StatisticsError> for AppError {
    fn from(error: StatisticsError) -> Self {
        match error {
            StatisticsError::PeriodOpen(period) => AppError::PeriodOpen(period),
            StatisticsError::NotSigned => AppError::NotFederated,
            StatisticsError::Store(error) => AppError::Store(error),
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// Everything `period`'s tables are made from, read a page at a time.
pub async fn period_records(store: &dyn Store, period: Period) -> Result<Records, StoreError> {
    period_records_in_pages(store, period, PAGE).await
}

/// As [`period_records`], `page` rows at a time: the same records whatever
/// the page size (a test reads them one row at a time).
pub async fn period_records_in_pages(store: &dyn Store, period: Period, page_size: i64) -> Result<Records, StoreError> {
    let window = (period.start().timestamp_millis(), period.end().timestamp_millis());
    let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let mut records = Records::default();

    let mut after = None;
    loop {
        let page = store.referrals_accepted_between(window, after.take(), page_size).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_ms, last.id.clone()));
        for referral in &page {
            // An unreadable decision is not counted: the store holds only decisions this gateway wrote.
            let Ok(decision) = serde_json::from_str::<DecisionRecord>(&referral.decision) else {
                tracing::warn!("a stored decision is unreadable; left out of the statistics");
                continue;
            };
            let country = referral.destination_country.as_deref().and_then(|c| CountryCode::parse(c).ok());
            records.decided.push(DecidedReferral::from_record(at(referral.created_ms), &decision, country));
        }
        if page.len() < usize::try_from(page_size).unwrap_or(usize::MAX) {
            break;
        }
    }

    let mut after: Option<(String, i64)> = None;
    let mut building: Option<String> = None;
    loop {
        let page = store.steps_of_referrals_active_between(window, after.take(), page_size).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.referral_id.clone(), last.step));
        for step in &page {
            let current = Step { event: step.status, at: at(step.at_ms), categories: step.reasons.iter().cloned().collect() };
            // Steps come by referral: a page boundary may split one referral's, never interleave two.
            match records.timelines.last_mut() {
                Some(timeline) if building.as_deref() == Some(step.referral_id.as_str()) => timeline.steps.push(current),
                _ => {
                    building = Some(step.referral_id.clone());
                    records.timelines.push(Timeline { accepted_at: at(step.accepted_ms), packet_made: step.packet_made, steps: vec![current] });
                }
            }
        }
        if page.len() < usize::try_from(page_size).unwrap_or(usize::MAX) {
            break;
        }
    }

    let mut after = None;
    loop {
        let page = store.refused_between(window, after.take(), page_size).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.refused_ms, last.packet_id.clone()));
        records.refusals.extend(page.iter().map(|r| Refusal { at: at(r.refused_ms), reasons: r.reasons.clone() }));
        if page.len() < usize::try_from(page_size).unwrap_or(usize::MAX) {
            break;
        }
    }
    Ok(records)
}

/// What a gateway needs to release its statistics.
pub struct Release<'a> {
    pub gateway: CountryCode,
    pub control: DisclosureControl,
    pub erasure_deadline: chrono::Duration,
    pub signer: Option<&'a SigningKey>,
    pub now: DateTime<Utc>,
}

/// `period`'s statistics, released and signed; refused for a period not yet closed.
pub async fn release(store: &dyn Store, period: Period, release: Release<'_>) -> Result<StatisticsAnswer, StatisticsError> {
    if !period.is_released_at(release.now) {
        return Err(StatisticsError::PeriodOpen(period));
    }
    // A period is answered once: its first signed answer is kept and given
    // to every later request, so that no two answers of it can be subtracted.
    if let Some(kept) = store.released_statistics(&period.to_string()).await? {
        return serde_json::from_str(&kept).map_err(|e| StatisticsError::KeptUnreadable { period, reason: e.to_string() });
    }
    let signer = release.signer.ok_or(StatisticsError::NotSigned)?;
    let records = period_records(store, period).await?;
    let statistics = GatewayStatistics {
        gateway: release.gateway,
        issued_at: Timestamp::of(release.now),
        method: Method {
            name: METHOD_NAME.to_owned(),
            rounding_base: release.control.rounding_base(),
            threshold: release.control.threshold(),
            time_step_minutes: TIME_STEP_MINUTES,
            erasure_deadline_hours: u64::try_from(release.erasure_deadline.num_hours()).unwrap_or(0),
        },
        tables: tables(period, release.control, release.erasure_deadline, &records),
    };
    let signed = signed_json::sign(&statistics, signer, STATISTICS_JWS_TYPE).map_err(|e| StatisticsError::Sign(e.to_string()))?;
    let answer = StatisticsAnswer { statistics, signed };
    let text = serde_json::to_string(&answer).map_err(|e| StatisticsError::Sign(e.to_string()))?;
    let kept = store.keep_released_statistics(&period.to_string(), &text, release.now.timestamp_millis()).await?;
    serde_json::from_str(&kept).map_err(|e| StatisticsError::KeptUnreadable { period, reason: e.to_string() })
}

/// The statistics in `answers` (each a compact JWS, or a whole answer
/// holding one), each checked against `directory`: signed under a key it
/// lists for the gateway the statistics name, valid when they were issued,
/// of a member still active. Then added up.
pub fn merge_signed(answers: &[String], directory: &dyn SignerDirectory) -> Result<MergedStatistics, StatisticsError> {
    let mut sources = Vec::new();
    let mut parts = Vec::new();
    for (index, text) in answers.iter().enumerate() {
        let unverified = |reason: &str| StatisticsError::Unverified { index: index + 1, reason: reason.to_owned() };
        let text = text.trim();
        let jws = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(answer) => answer.get("signed").and_then(|s| s.as_str()).map(str::to_owned).ok_or_else(|| unverified("a JSON answer without `signed`"))?,
            Err(_) => text.to_owned(),
        };
        // Read once unchecked for the time it claims, then checked against the key valid then.
        let claimed: GatewayStatistics = jws
            .split('.')
            .nth(1)
            .and_then(|payload| base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| unverified("not signed statistics"))?;
        let issued_at = DateTime::<Utc>::from_timestamp_millis(claimed.issued_at.0).unwrap_or_default();
        let (signer, document) = signed_json::open(&jws, directory, issued_at, STATISTICS_JWS_TYPE).map_err(|e| match e {
            SignedJsonError::UnknownSigner => unverified("signed by a key the directory does not list as valid when it was issued"),
            _ => unverified("the signature does not verify"),
        })?;
        let statistics: GatewayStatistics = serde_json::from_value(document).map_err(|_| unverified("not signed statistics"))?;
        if signer.country != statistics.gateway {
            return Err(unverified("signed by another gateway than the one it names"));
        }
        // What a gateway of this method could have released, and only then.
        if statistics.method.name != METHOD_NAME {
            return Err(unverified("made by another method than rgw-statistics/1"));
        }
        let control = DisclosureControl::new(statistics.method.rounding_base, statistics.method.threshold)
            .map_err(|_| unverified("its rounding base or threshold is below the floor of 5"))?;
        if !statistics.tables.could_come_from(control) {
            return Err(unverified("a count is not one its method releases"));
        }
        if issued_at < statistics.tables.period.released_from() {
            return Err(unverified("issued before its period was released"));
        }
        if !signer.active {
            return Err(unverified("its gateway is not an active member"));
        }
        let key_id = crate::crypto::jose_keys::unverified_kid(jws.as_bytes()).unwrap_or_default();
        sources.push(MergedSource { gateway: statistics.gateway, issued_at: statistics.issued_at, method: statistics.method, key_id });
        parts.push((statistics.gateway, statistics.tables));
    }
    Ok(MergedStatistics { sources, tables: merge(&parts)? })
}

impl Gateway {
    /// `period`'s statistics, signed by this gateway. Audited (the period only).
    pub async fn statistics(&self, caller: &Authorized<StatisticsReaders>, period: Period) -> Result<StatisticsAnswer, AppError> {
        let now = self.now();
        let directory = self.directory();
        let signer = self.federation.as_ref().and_then(|keys| directory.current_signing_key(self.country, now, &keys.signing));
        let settings = Release {
            gateway: self.country,
            control: self.statistics,
            erasure_deadline: chrono::Duration::from_std(self.delivery.erasure_deadline).unwrap_or(chrono::Duration::MAX),
            signer,
            now,
        };
        let answer = release(self.store.as_ref(), period, settings).await?;
        self.audit(AuditEvent::new(now, caller.actor(), Action::StatisticsRead, "ok").reasons(vec![period.to_string()])).await?;
        Ok(answer)
    }
}
