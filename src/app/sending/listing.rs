//! The sending organisation follows many referrals at once (issue 21 §2):
//! `GET /v1/referrals` lists its own in the order they were recorded,
//! filtered by status, purpose, priority, whether overdue and when
//! accepted, a page at a time.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use crate::app::access::{Authorized, SendersAndRepliers};
use crate::app::sending::referrals::OverdueView;
use crate::app::views::{RecipientRef, Timestamp};
use crate::app::{AppError, Gateway};
use crate::audit::{Action, AuditEvent};
use crate::domain::lifecycle::ReferralStatus;
use crate::domain::priority::Priority;
use crate::domain::Purpose;
use crate::store::{ReferralFilter, StoredReferral};

/// Most referrals listed per page.
pub const MAX_REFERRAL_PAGE: i64 = 100;

/// What to list: every filter optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferralQuery {
    /// Any of these (none: any status).
    pub statuses: Vec<ReferralStatus>,
    pub purpose: Option<Purpose>,
    pub priority: Option<Priority>,
    /// Only those overdue now, or only those not.
    pub overdue: Option<bool>,
    /// Accepted at or after this.
    pub from_ms: Option<i64>,
    /// Accepted before this.
    pub to_ms: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// `GET /v1/referrals`: a page of the organisation's referrals.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReferralPage {
    pub items: Vec<ReferralSummary>,
    /// The cursor after the last item, even on a short page; `null` when
    /// the page is empty (keep the cursor you had).
    pub next_cursor: Option<String>,
}

/// A referral as the listing shows it: where it stands, without its
/// timeline or decision (`GET /v1/referrals/{id}` has them).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReferralSummary {
    pub referral_id: String,
    pub status: ReferralStatus,
    pub purpose: String,
    pub priority: Priority,
    pub recipient: RecipientRef,
    pub submitted_at: Timestamp,
    /// `allow` or `deny`.
    pub outcome: String,
    pub handover: bool,
    /// As in `GET /v1/referrals/{id}`.
    pub overdue: Option<OverdueView>,
}

impl Gateway {
    /// The caller's organisation's referrals that `query` takes in, in the
    /// order they were recorded.
    #[tracing::instrument(name = "list_referrals", skip_all)]
    pub async fn referrals(&self, principal: &Authorized<SendersAndRepliers>, query: ReferralQuery) -> Result<ReferralPage, AppError> {
        let now = self.now();
        let after = match &query.cursor {
            Some(text) => Some(crate::app::recipient::cases::parse_cursor(text).ok_or_else(|| AppError::invalid_field("cursor", "is not a cursor of this listing"))?),
            None => None,
        };
        let limit = query.limit.unwrap_or(MAX_REFERRAL_PAGE).clamp(1, MAX_REFERRAL_PAGE);
        let filter = ReferralFilter {
            statuses: query.statuses,
            purpose: query.purpose.map(|p| p.as_str().to_owned()),
            priority: query.priority,
            overdue: query.overdue.map(|overdue| (overdue, self.overdue_cutoffs(Priority::ALL, now))),
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            replies_only: principal.replies_only(),
        };
        let found = self.store.referrals_of(principal.org.as_str(), &filter, after, limit).await?;
        self.audit(AuditEvent::new(now, principal.actor(), Action::ReferralRead, "listed")).await?;
        let next_cursor = found.last().map(|last| last.listed_seq.to_string());
        let items = found.iter().map(|listed| self.summary(&listed.referral, now)).collect();
        Ok(ReferralPage { items, next_cursor })
    }

    fn summary(&self, referral: &StoredReferral, now: DateTime<Utc>) -> ReferralSummary {
        ReferralSummary {
            referral_id: referral.id.clone(),
            status: referral.status,
            purpose: referral.purpose.clone(),
            priority: referral.priority,
            recipient: RecipientRef { org: referral.destination_org.clone(), country: referral.destination_country.clone() },
            submitted_at: Timestamp(referral.created_ms),
            outcome: referral.outcome.clone(),
            handover: referral.handover,
            overdue: self.overdue_of(referral, now),
        }
    }
}
