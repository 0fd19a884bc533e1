//! Four-eyes sign-off of the DPO's policy versions (DPO): how an uploaded
//! draft becomes approved or rejected, and which approved version is in
//! force at a given time. Pure: the caller loads the facts and stores the
//! outcome.
//!
//! `approvals_required` counts distinct DPO identities, the author included:
//! with the default 2, the author's upload and one other DPO's approval.
//! Only with 1 does an upload take effect on its author's word alone.

use schemars::JsonSchema;
use serde::Serialize;

vocabulary! {
    /// Where a policy version stands in its sign-off.
    PolicyVersionState, "policy version state" {
        Draft => "draft",
        Approved => "approved",
        Rejected => "rejected",
    }
}

vocabulary! {
    /// What a reviewing DPO says of a draft.
    Verdict, "verdict" {
        Approve => "approve",
        Reject => "reject",
    }
}

/// A DPO as the gateway authenticated them: the organisation (none for the
/// gateway itself) and the token subject or certificate fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
pub struct DpoIdentity {
    pub org: Option<String>,
    pub subject: String,
}

/// How many distinct DPOs, the author included, must sign a version off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApprovalsRequired(u8);

impl ApprovalsRequired {
    pub const MAX: u8 = 5;
    /// The default: the author and one other DPO.
    pub const FOUR_EYES: ApprovalsRequired = ApprovalsRequired(2);

    pub fn new(count: u8) -> Option<Self> {
        (1..=Self::MAX).contains(&count).then_some(Self(count))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// Whether one person's upload is enough: allowed, never quietly.
    pub fn is_single_person(self) -> bool {
        self.0 == 1
    }
}

/// One DPO's recorded verdict on a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOff {
    pub by: DpoIdentity,
    pub verdict: Verdict,
    pub at_ms: i64,
}

/// What the rules need to know of a stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionUnderReview<'a> {
    pub state: PolicyVersionState,
    pub author: &'a DpoIdentity,
    /// Earliest time the author asked it to take effect, if any.
    pub effective_from_ms: Option<i64>,
    pub sign_offs: &'a [SignOff],
}

/// A version whose sign-off is complete: in force from `effective_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub effective_ms: i64,
}

/// What a review (or an upload) leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewOutcome {
    /// Approved: enough distinct DPOs signed it off.
    Approved(Approval),
    /// The approval is recorded; `approvals` of `required` so far, author included.
    StillDraft { approvals: u8, required: u8 },
    /// Rejected: it will never take effect.
    Rejected,
}

impl ReviewOutcome {
    pub fn state(self) -> PolicyVersionState {
        match self {
            Self::Approved(_) => PolicyVersionState::Approved,
            Self::StillDraft { .. } => PolicyVersionState::Draft,
            Self::Rejected => PolicyVersionState::Rejected,
        }
    }
}

/// Why a review is not taken. The codes are stable (audit reasons, problem types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReviewRefusal {
    #[error("only a draft can be approved or rejected; this version is {0}")]
    NotADraft(PolicyVersionState),
    #[error("the author of a version cannot approve or reject it; another DPO must")]
    OwnVersion,
    #[error("this DPO has already approved this version; another DPO must")]
    AlreadyApproved,
}

impl ReviewRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::NotADraft(_) => "not_a_draft",
            Self::OwnVersion => "own_version",
            Self::AlreadyApproved => "already_approved",
        }
    }
}

/// The approval a version gets once complete at `at_ms`: never before its
/// sign-off, and not before the time its author asked for.
fn approval(effective_from_ms: Option<i64>, at_ms: i64) -> Approval {
    Approval { effective_ms: effective_from_ms.map_or(at_ms, |from| from.max(at_ms)) }
}

/// Where an upload stands at once: its author counts as the first approval.
pub fn on_upload(required: ApprovalsRequired, effective_from_ms: Option<i64>, at_ms: i64) -> ReviewOutcome {
    if required.get() <= 1 {
        ReviewOutcome::Approved(approval(effective_from_ms, at_ms))
    } else {
        ReviewOutcome::StillDraft { approvals: 1, required: required.get() }
    }
}

/// `reviewer`'s verdict on a version at `at_ms`. One rejection by another
/// DPO rejects a draft; it is approved when, with its author, `required`
/// distinct DPOs approved it.
pub fn review(
    version: &VersionUnderReview<'_>,
    reviewer: &DpoIdentity,
    verdict: Verdict,
    required: ApprovalsRequired,
    at_ms: i64,
) -> Result<ReviewOutcome, ReviewRefusal> {
    if version.state != PolicyVersionState::Draft {
        return Err(ReviewRefusal::NotADraft(version.state));
    }
    if reviewer == version.author {
        return Err(ReviewRefusal::OwnVersion);
    }
    let approvers: std::collections::BTreeSet<&DpoIdentity> = version
        .sign_offs
        .iter()
        .filter(|s| s.verdict == Verdict::Approve && &s.by != version.author)
        .map(|s| &s.by)
        .collect();
    if approvers.contains(reviewer) {
        return Err(ReviewRefusal::AlreadyApproved);
    }
    if verdict == Verdict::Reject {
        return Ok(ReviewOutcome::Rejected);
    }
    // The author, the earlier approvers and this one.
    let approvals = u8::try_from(approvers.len() + 2).unwrap_or(u8::MAX);
    if approvals >= required.get() {
        Ok(ReviewOutcome::Approved(approval(version.effective_from_ms, at_ms)))
    } else {
        Ok(ReviewOutcome::StillDraft { approvals, required: required.get() })
    }
}

/// An approved version, as the schedule needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovedVersion {
    pub number: i64,
    pub effective_ms: i64,
    /// When its sign-off completed.
    pub approved_ms: i64,
}

impl ApprovedVersion {
    /// Later effect wins; at the same effect, the later approval; then the higher number.
    fn precedence(&self) -> (i64, i64, i64) {
        (self.effective_ms, self.approved_ms, self.number)
    }
}

/// The version in force at `at_ms`: of the approved versions already in
/// effect, the one that took effect last (at the same time, the one
/// approved last). A version approved for a later date replaces, on that
/// date, whatever is in force then.
pub fn in_force_at(approved: &[ApprovedVersion], at_ms: i64) -> Option<ApprovedVersion> {
    approved.iter().filter(|v| v.effective_ms <= at_ms).max_by_key(|v| v.precedence()).copied()
}

/// The approved versions still to take effect after `at_ms`, in the order they will.
pub fn scheduled_after(approved: &[ApprovedVersion], at_ms: i64) -> Vec<ApprovedVersion> {
    let mut later: Vec<ApprovedVersion> = approved.iter().filter(|v| v.effective_ms > at_ms).copied().collect();
    later.sort_by_key(ApprovedVersion::precedence);
    later
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dpo(subject: &str) -> DpoIdentity {
        DpoIdentity { org: Some("ita-garante".to_owned()), subject: subject.to_owned() }
    }

    fn approve(subject: &str) -> SignOff {
        SignOff { by: dpo(subject), verdict: Verdict::Approve, at_ms: 5 }
    }

    fn draft<'a>(author: &'a DpoIdentity, sign_offs: &'a [SignOff]) -> VersionUnderReview<'a> {
        VersionUnderReview { state: PolicyVersionState::Draft, author, effective_from_ms: None, sign_offs }
    }

    const TWO: ApprovalsRequired = ApprovalsRequired::FOUR_EYES;

    #[test]
    fn the_author_cannot_approve_or_reject_their_own_version() {
        let author = dpo("anna");
        for verdict in Verdict::ALL {
            assert_eq!(review(&draft(&author, &[]), &dpo("anna"), *verdict, TWO, 10), Err(ReviewRefusal::OwnVersion));
        }
        // The same subject of another organisation is another person.
        let other = DpoIdentity { org: Some("gmb-dpo".to_owned()), subject: "anna".to_owned() };
        assert!(matches!(review(&draft(&author, &[]), &other, Verdict::Approve, TWO, 10), Ok(ReviewOutcome::Approved(_))));
    }

    #[test]
    fn a_second_dpo_approves_with_four_eyes() {
        let author = dpo("anna");
        let outcome = review(&draft(&author, &[]), &dpo("bruno"), Verdict::Approve, TWO, 10);
        assert_eq!(outcome, Ok(ReviewOutcome::Approved(Approval { effective_ms: 10 })));
    }

    #[test]
    fn three_required_needs_two_others_and_the_same_one_twice_is_refused() {
        let author = dpo("anna");
        let three = ApprovalsRequired::new(3).unwrap();
        assert_eq!(
            review(&draft(&author, &[]), &dpo("bruno"), Verdict::Approve, three, 10),
            Ok(ReviewOutcome::StillDraft { approvals: 2, required: 3 })
        );
        let signed = [approve("bruno")];
        assert_eq!(review(&draft(&author, &signed), &dpo("bruno"), Verdict::Approve, three, 11), Err(ReviewRefusal::AlreadyApproved));
        assert_eq!(review(&draft(&author, &signed), &dpo("bruno"), Verdict::Reject, three, 11), Err(ReviewRefusal::AlreadyApproved));
        assert!(matches!(review(&draft(&author, &signed), &dpo("carla"), Verdict::Approve, three, 11), Ok(ReviewOutcome::Approved(_))));
    }

    #[test]
    fn one_rejection_rejects_and_only_drafts_are_reviewed() {
        let author = dpo("anna");
        assert_eq!(review(&draft(&author, &[]), &dpo("bruno"), Verdict::Reject, TWO, 10), Ok(ReviewOutcome::Rejected));
        for state in [PolicyVersionState::Approved, PolicyVersionState::Rejected] {
            let version = VersionUnderReview { state, ..draft(&author, &[]) };
            assert_eq!(review(&version, &dpo("bruno"), Verdict::Approve, TWO, 10), Err(ReviewRefusal::NotADraft(state)));
        }
    }

    #[test]
    fn an_approval_takes_effect_when_asked_but_never_before_it_is_given() {
        let author = dpo("anna");
        let later = VersionUnderReview { effective_from_ms: Some(1_000), ..draft(&author, &[]) };
        assert_eq!(review(&later, &dpo("bruno"), Verdict::Approve, TWO, 10), Ok(ReviewOutcome::Approved(Approval { effective_ms: 1_000 })));
        let past = VersionUnderReview { effective_from_ms: Some(3), ..draft(&author, &[]) };
        assert_eq!(review(&past, &dpo("bruno"), Verdict::Approve, TWO, 10), Ok(ReviewOutcome::Approved(Approval { effective_ms: 10 })));
    }

    #[test]
    fn an_upload_alone_is_enough_only_with_one_approval_required() {
        assert_eq!(on_upload(TWO, None, 7), ReviewOutcome::StillDraft { approvals: 1, required: 2 });
        assert_eq!(on_upload(ApprovalsRequired::new(1).unwrap(), Some(9), 7), ReviewOutcome::Approved(Approval { effective_ms: 9 }));
        assert_eq!(ApprovalsRequired::new(0), None);
        assert_eq!(ApprovalsRequired::new(ApprovalsRequired::MAX + 1), None);
    }

    #[test]
    fn the_version_in_force_is_the_one_that_took_effect_last() {
        let v = |number, effective_ms, approved_ms| ApprovedVersion { number, effective_ms, approved_ms };
        // 1 in force from 0; 3 approved at 20 for 100; 2 approved at 30, at once.
        let approved = [v(1, 0, 0), v(3, 100, 20), v(2, 30, 30)];
        assert_eq!(in_force_at(&approved, -1), None);
        assert_eq!(in_force_at(&approved, 29).map(|v| v.number), Some(1));
        assert_eq!(in_force_at(&approved, 30).map(|v| v.number), Some(2));
        assert_eq!(in_force_at(&approved, 100).map(|v| v.number), Some(3));
        assert_eq!(scheduled_after(&approved, 30).iter().map(|v| v.number).collect::<Vec<_>>(), vec![3]);
        // At the same effect, the later approval.
        assert_eq!(in_force_at(&[v(4, 50, 40), v(5, 50, 35)], 60).map(|v| v.number), Some(4));
    }

    fn any_identity() -> impl Strategy<Value = DpoIdentity> {
        (prop::option::of(prop_oneof![Just("a"), Just("b")]), prop_oneof![Just("x"), Just("y"), Just("z")])
            .prop_map(|(org, subject)| DpoIdentity { org: org.map(str::to_owned), subject: subject.to_owned() })
    }

    proptest! {
        /// Whatever the order of reviews, a version is approved only once
        /// `required` distinct people, its author among them, approved it,
        /// and its author's own verdict never counts.
        #[test]
        fn approval_needs_that_many_distinct_people(
            author in any_identity(),
            reviews in prop::collection::vec((any_identity(), prop::bool::ANY), 0..8),
            required in 1..=ApprovalsRequired::MAX,
        ) {
            let required = ApprovalsRequired::new(required).unwrap();
            let mut state = on_upload(required, None, 0).state();
            let mut sign_offs: Vec<SignOff> = Vec::new();
            for (at, (reviewer, approves)) in reviews.into_iter().enumerate() {
                let verdict = if approves { Verdict::Approve } else { Verdict::Reject };
                let version = VersionUnderReview { state, author: &author, effective_from_ms: None, sign_offs: &sign_offs };
                match review(&version, &reviewer, verdict, required, at as i64) {
                    Ok(outcome) => {
                        prop_assert_ne!(&reviewer, &author);
                        sign_offs.push(SignOff { by: reviewer, verdict, at_ms: at as i64 });
                        state = outcome.state();
                    }
                    Err(_) => prop_assert!(state != PolicyVersionState::Draft || reviewer == author || sign_offs.iter().any(|s| s.by == reviewer)),
                }
            }
            let approvers: std::collections::BTreeSet<&DpoIdentity> =
                sign_offs.iter().filter(|s| s.verdict == Verdict::Approve).map(|s| &s.by).collect();
            let rejected = sign_offs.iter().any(|s| s.verdict == Verdict::Reject);
            match state {
                PolicyVersionState::Approved => prop_assert!(approvers.len() + 1 >= usize::from(required.get()) && !rejected),
                PolicyVersionState::Draft => prop_assert!(approvers.len() + 1 < usize::from(required.get()) && !rejected),
                PolicyVersionState::Rejected => prop_assert!(rejected),
            }
        }
    }
}
