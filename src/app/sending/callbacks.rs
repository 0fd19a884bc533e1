//! Status callbacks, for the sending system: every entry added to the
//! timeline of a referral whose organisation registered a callback
//! (`[callbacks.<name>]`) is pushed to the organisation's URL as an event
//! signed with its key. The store queues each entry in the transaction that
//! records it; this worker sends them, a referral's in timeline order, one
//! at a time, retried with backoff until the event's deadline, then given
//! up (`failed`) so that the referral's next event may go. An event's id is
//! the same at every attempt: a receiver that sees one twice (its 2xx was
//! lost) knows it has it already.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::sending::delivery::SendFailure;
use crate::app::views::Timestamp;
use crate::app::{attempt_each, AppError, Gateway};
use crate::crypto::callback_event::{self, CallbackKey};
use crate::domain::lifecycle::{CallbackState, ReferralEvent};
use crate::domain::{CountryCode, OrgId};
use crate::store::{CallbackCount, CallbackSubscription, DueCallback, UndeliveredCallbacks};

/// The port to organisations' callback URLs: posts a signed event, `Ok` on 2xx.
#[async_trait]
pub trait CallbackPush: Send + Sync + 'static {
    async fn post(&self, url: &str, signed_event: &str) -> Result<(), SendFailure>;
}

/// Media type of a callback event: a compact JWS.
pub const EVENT_MEDIA_TYPE: &str = "application/jose";

/// Where one organisation is told of its referrals' timelines.
#[derive(Debug, Clone)]
pub struct CallbackTarget {
    pub url: String,
    pub key: CallbackKey,
    /// How long an event is retried before it is given up.
    pub retry: Duration,
}

/// The organisations registered, by id.
pub type CallbackTargets = BTreeMap<OrgId, CallbackTarget>;

/// A status callback event, as the organisation's URL receives it (the
/// payload of a JWS, `typ` `rgw-event+jws`, HS256 with the organisation's key).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StatusEvent {
    /// `<referral id>.<position>`: the same at every attempt, so a repeated
    /// event can be recognised and ignored.
    pub event_id: String,
    pub referral_id: String,
    /// The entry's place in the referral's timeline, from 1. A referral's
    /// events are sent in this order, the next only once the one before is
    /// taken or given up; a gap means one was given up.
    pub position: i64,
    /// The timeline entry, as `GET /v1/referrals/{id}` shows it.
    pub status: ReferralEvent,
    pub at: Timestamp,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reason_codes: Vec<String>,
    /// The organisation the event is for (the referral's sender).
    pub organisation: String,
    /// The gateway that sent it.
    pub gateway: CountryCode,
}

/// A referral's callback events not delivered yet, in `GET /v1/referrals/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CallbacksView {
    /// Events waiting for the organisation's 2xx (retried with backoff).
    pub pending: i64,
    /// Events given up at their deadline (`[callbacks.<name>] retry_hours`).
    pub failed: i64,
    /// Why the latest failed attempt failed, e.g. `callback-unreachable`, `callback-http-503`.
    pub last_error: Option<String>,
}

impl From<UndeliveredCallbacks> for CallbacksView {
    fn from(undelivered: UndeliveredCallbacks) -> Self {
        Self { pending: undelivered.pending, failed: undelivered.failed, last_error: undelivered.last_error }
    }
}

/// One organisation's undelivered events, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackBacklog {
    pub org: String,
    pub pending: i64,
    pub failed: i64,
}

impl Gateway {
    /// Records which organisations have callbacks, for the store to queue
    /// their events from now on.
    pub async fn register_callbacks(&self) -> Result<(), AppError> {
        let subscriptions: Vec<CallbackSubscription> = self
            .callbacks
            .iter()
            .map(|(org, target)| CallbackSubscription {
                org: org.as_str().to_owned(),
                retry_ms: i64::try_from(target.retry.as_millis()).unwrap_or(i64::MAX),
            })
            .collect();
        Ok(self.store.register_callbacks(&subscriptions).await?)
    }

    pub fn has_callbacks(&self) -> bool {
        !self.callbacks.is_empty()
    }

    /// Whether `org` has a callback registered here.
    pub fn has_callback(&self, org: &str) -> bool {
        OrgId::parse(org).is_ok_and(|org| self.callbacks.contains_key(&org))
    }

    /// Each registered organisation's undelivered events (zero when none);
    /// `-1` each when the store cannot count them, as the metrics show it.
    pub async fn callback_backlog(&self) -> Vec<CallbackBacklog> {
        let counts = self.store.callback_counts().await;
        let count = |org: &str, state: CallbackState| match &counts {
            Ok(counts) => counts.iter().filter(|c: &&CallbackCount| c.org == org && c.state == state).map(|c| c.count).sum(),
            Err(_) => -1,
        };
        self
            .callbacks
            .keys()
            .map(|org| CallbackBacklog { org: org.as_str().to_owned(), pending: count(org.as_str(), CallbackState::Pending), failed: count(org.as_str(), CallbackState::Failed) })
            .collect()
    }

    /// Sends the callback events due now; returns how many were claimed.
    #[tracing::instrument(name = "callback_round", skip_all)]
    pub async fn push_callbacks_due(self: &Arc<Self>, sender: &Arc<dyn CallbackPush>) -> Result<usize, AppError> {
        let now = self.now();
        let orgs: Vec<OrgId> = self.callbacks.keys().cloned().collect();
        let claimed = self.store.claim_callbacks(&orgs, now.timestamp_millis(), self.lease_ms(), self.delivery.batch).await?;
        let count = claimed.len();
        attempt_each(claimed, "callback", |due| {
            let (gateway, sender) = (Arc::clone(self), Arc::clone(sender));
            async move { gateway.push_callback(sender.as_ref(), due).await }
        })
        .await;
        Ok(count)
    }

    #[tracing::instrument(name = "callback", skip_all, fields(event_id = %due.id))]
    async fn push_callback(&self, sender: &dyn CallbackPush, due: DueCallback) -> Result<(), AppError> {
        let outcome = match OrgId::parse(&due.org).ok().and_then(|org| self.callbacks.get(&org)) {
            Some(target) => {
                let event = StatusEvent {
                    event_id: due.id.clone(),
                    referral_id: due.referral_id.clone(),
                    position: due.position,
                    status: due.event,
                    at: Timestamp(due.at_ms),
                    reason_codes: due.reasons.clone(),
                    organisation: due.org.clone(),
                    gateway: self.country,
                };
                let signed = callback_event::sign(&event, &target.key).map_err(|e| AppError::Internal(e.to_string()))?;
                sender.post(&target.url, &signed).await
            }
            // Claims take only this replica's organisations, so this should not
            // happen; were it to, the event fails as any attempt does.
            None => Err(SendFailure::Unreachable { code: "callback-not-registered-here" }),
        };
        match outcome {
            Ok(()) => Ok(self.store.callback_delivered(&due.id).await?),
            Err(failure) if self.now().timestamp_millis() >= due.deadline_ms => {
                tracing::warn!(code = failure.code(), attempts = due.attempts, "a status callback event was given up at its deadline");
                Ok(self.store.give_up_callback(&due.id, failure.code()).await?)
            }
            Err(failure) => {
                tracing::info!(code = failure.code(), attempts = due.attempts, "status callback failed; will retry");
                Ok(self.store.retry_callback(&due.id, self.next_attempt_ms(due.attempts), failure.code()).await?)
            }
        }
    }
}
