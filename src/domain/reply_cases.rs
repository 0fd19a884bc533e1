//! Reply cases (issue 22 §1): the answer to a tracing request or a
//! family-assessment request carries personal data back, about someone
//! else (the traced relative, the family assessed). It is a referral of its
//! own, decided at the replying gateway under that person's consent and its
//! DPO's policy, and received at the requesting gateway only as the answer
//! to a request it sent.
//!
//! Two pure rules, one per side:
//! - the replying gateway's: which organisation a reply to a request goes
//!   to, or why there can be none ([`reply_target`]);
//! - the requesting gateway's: which referral of its own a received reply
//!   answers, or why it is refused ([`answered_request`]).
//!
//! The firewall both ways sits with the other built-in rules: a
//! family-assessment request about an asylum-linked child never reaches an
//! origin state's authorities (rule (b), as for any case), and a reply
//! about a child never tells the family's side where the child is unless
//! the guardian and the best-interests determination allow it (rule (d),
//! `decide::reveals_child_whereabouts`).

use super::replies::ReplyRefusal;
use super::{OrgId, Purpose};

vocabulary! {
    /// Why a recipient organisation cannot answer a case with a reply
    /// (`422 reply-not-possible`): the case is not a request a reply
    /// answers (`not_a_request`: not `family_tracing` or
    /// `family_assessment_request`); the reply answers another kind of
    /// request; the request is sealed end to end (its packet does not say
    /// who asked); the case is a copy passed on here (its sender is the
    /// organisation that passed it on); or the request does not say who
    /// asked (a gateway of a version before replies sent it), or that
    /// organisation left the directory or is not behind the gateway that
    /// sent the request; for a request sealed end to end, the reply does
    /// not name the organisation that asked (`sealed_end_to_end`); or it
    /// names another than the request does (`not_the_requester`).
    ReplyNotPossible, "reply refusal" {
        NotARequest => "not_a_request",
        PurposeMismatch => "reply_purpose_mismatch",
        SealedEndToEnd => "sealed_end_to_end",
        OnwardCopy => "onward_copy",
        RequesterUnknown => "requester_unknown",
        NotTheRequester => "not_the_requester",
    }
}

/// A request held here, as a reply to it finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRequest<'a> {
    /// `None` when this gateway cannot read it (sealed end to end).
    pub purpose: Option<Purpose>,
    pub sealed_end_to_end: bool,
    pub onward_copy: bool,
    /// The organisation that asked, as its packet names it and if the
    /// directory still lists it behind the gateway that sent it.
    pub requested_by: Option<&'a OrgId>,
}

/// The organisation a reply of purpose `reply` to `request` goes to.
/// `named`: the organisation the reply names (needed for a request sealed
/// end to end, whose purpose and requester this gateway cannot read: the
/// requesting gateway then checks both), if listed behind the gateway that
/// sent the request.
pub fn reply_target<'a>(request: &HeldRequest<'a>, reply: Purpose, named: Option<&'a OrgId>) -> Result<&'a OrgId, ReplyNotPossible> {
    if request.onward_copy {
        return Err(ReplyNotPossible::OnwardCopy);
    }
    if request.sealed_end_to_end {
        return named.ok_or(ReplyNotPossible::SealedEndToEnd);
    }
    let purpose = request.purpose.filter(|p| p.expects_reply()).ok_or(ReplyNotPossible::NotARequest)?;
    if reply.answers() != Some(purpose) {
        return Err(ReplyNotPossible::PurposeMismatch);
    }
    let requested_by = request.requested_by.ok_or(ReplyNotPossible::RequesterUnknown)?;
    match named {
        Some(named) if named != requested_by => Err(ReplyNotPossible::NotTheRequester),
        _ => Ok(requested_by),
    }
}

/// A referral this gateway sent, as a reply to it finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentRequest<'a> {
    pub referral_id: &'a str,
    /// The country of the gateway its packet went to.
    pub destination_country: &'a str,
    pub purpose: Purpose,
    pub sender_org: &'a str,
    /// Its consent still stands (not withdrawn whole, not erased).
    pub still_shared: bool,
}

/// A received packet of a referral, as far as this gateway reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedReferral<'a> {
    pub issuer: &'a str,
    /// `None` when sealed end to end.
    pub purpose: Option<Purpose>,
    pub recipient: &'a OrgId,
    /// The request it says it answers.
    pub answers: Option<&'a str>,
}

/// Which referral of this gateway a received referral answers: `None` for
/// a referral that is not a reply; the referral's id for a reply to one;
/// refused when it claims to answer what it may not. Only the gateway the
/// request went to may answer it, with the reply purpose that answers its
/// purpose, and only to the organisation that asked, while the request's
/// consent stands. `sent`: the referral whose packet `answers` names.
pub fn answered_request<'a>(received: &ReceivedReferral<'_>, sent: Option<SentRequest<'a>>) -> Result<Option<&'a str>, ReplyRefusal> {
    let is_reply = received.purpose.is_some_and(Purpose::is_reply);
    if received.answers.is_none() {
        // A reply purpose never travels without the request it answers.
        return if is_reply { Err(ReplyRefusal::ReplyWithoutRequest) } else { Ok(None) };
    }
    // A readable packet that answers something must be a reply.
    if received.purpose.is_some() && !is_reply {
        return Err(ReplyRefusal::ReplyPurposeMismatch);
    }
    let sent = sent.filter(|s| s.destination_country == received.issuer).ok_or(ReplyRefusal::ReplyToUnknownRequest)?;
    match received.purpose {
        Some(purpose) if purpose.answers() != Some(sent.purpose) => return Err(ReplyRefusal::ReplyPurposeMismatch),
        // Sealed end to end: at least a request that expects a reply.
        None if !sent.purpose.expects_reply() => return Err(ReplyRefusal::ReplyPurposeMismatch),
        _ => {}
    }
    if received.recipient.as_str() != sent.sender_org {
        return Err(ReplyRefusal::ReplyToOtherOrganisation);
    }
    if !sent.still_shared {
        return Err(ReplyRefusal::RequestWithdrawn);
    }
    Ok(Some(sent.referral_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(id: &str) -> OrgId {
        OrgId::parse(id).unwrap()
    }

    #[test]
    fn a_reply_goes_to_who_asked_only_for_a_readable_request_of_the_purpose_it_answers() {
        let asked = org("ita-nrm");
        let request = HeldRequest { purpose: Some(Purpose::FamilyTracing), sealed_end_to_end: false, onward_copy: false, requested_by: Some(&asked) };
        let other = org("ita-iom-rome");
        assert_eq!(reply_target(&request, Purpose::TracingReply, None), Ok(&asked));
        assert_eq!(reply_target(&request, Purpose::TracingReply, Some(&asked)), Ok(&asked));
        assert_eq!(reply_target(&request, Purpose::TracingReply, Some(&other)), Err(ReplyNotPossible::NotTheRequester));
        assert_eq!(reply_target(&request, Purpose::FamilyAssessment, None), Err(ReplyNotPossible::PurposeMismatch));
        let assessment = HeldRequest { purpose: Some(Purpose::FamilyAssessmentRequest), ..request };
        assert_eq!(reply_target(&assessment, Purpose::FamilyAssessment, None), Ok(&asked));
        assert_eq!(reply_target(&HeldRequest { purpose: Some(Purpose::Return), ..request }, Purpose::TracingReply, None), Err(ReplyNotPossible::NotARequest));
        assert_eq!(reply_target(&HeldRequest { purpose: Some(Purpose::TracingReply), ..request }, Purpose::TracingReply, None), Err(ReplyNotPossible::NotARequest));
        // Sealed end to end: only the organisation the reply names (the requesting gateway checks it).
        let sealed = HeldRequest { sealed_end_to_end: true, purpose: None, requested_by: None, ..request };
        assert_eq!(reply_target(&sealed, Purpose::TracingReply, None), Err(ReplyNotPossible::SealedEndToEnd));
        assert_eq!(reply_target(&sealed, Purpose::TracingReply, Some(&asked)), Ok(&asked));
        assert_eq!(reply_target(&HeldRequest { onward_copy: true, ..request }, Purpose::TracingReply, Some(&asked)), Err(ReplyNotPossible::OnwardCopy));
        assert_eq!(reply_target(&HeldRequest { requested_by: None, ..request }, Purpose::TracingReply, None), Err(ReplyNotPossible::RequesterUnknown));
    }

    #[test]
    fn a_received_reply_answers_only_a_live_request_of_its_own_organisation_sent_to_the_replying_gateway() {
        let asked = org("ita-nrm");
        let sent = SentRequest { referral_id: "r1", destination_country: "NGA", purpose: Purpose::FamilyTracing, sender_org: "ita-nrm", still_shared: true };
        let reply = ReceivedReferral { issuer: "NGA", purpose: Some(Purpose::TracingReply), recipient: &asked, answers: Some("p1") };
        assert_eq!(answered_request(&reply, Some(sent)), Ok(Some("r1")));
        // Sealed end to end: the purpose is not readable, the request's is.
        assert_eq!(answered_request(&ReceivedReferral { purpose: None, ..reply }, Some(sent)), Ok(Some("r1")));
        assert_eq!(answered_request(&reply, None), Err(ReplyRefusal::ReplyToUnknownRequest));
        assert_eq!(answered_request(&ReceivedReferral { issuer: "GMB", ..reply }, Some(sent)), Err(ReplyRefusal::ReplyToUnknownRequest));
        assert_eq!(
            answered_request(&ReceivedReferral { purpose: Some(Purpose::FamilyAssessment), ..reply }, Some(sent)),
            Err(ReplyRefusal::ReplyPurposeMismatch)
        );
        assert_eq!(answered_request(&ReceivedReferral { purpose: Some(Purpose::Return), ..reply }, Some(sent)), Err(ReplyRefusal::ReplyPurposeMismatch));
        let returned = SentRequest { purpose: Purpose::Return, ..sent };
        assert_eq!(answered_request(&ReceivedReferral { purpose: None, ..reply }, Some(returned)), Err(ReplyRefusal::ReplyPurposeMismatch));
        let other = org("ita-iom-rome");
        assert_eq!(answered_request(&ReceivedReferral { recipient: &other, ..reply }, Some(sent)), Err(ReplyRefusal::ReplyToOtherOrganisation));
        assert_eq!(answered_request(&reply, Some(SentRequest { still_shared: false, ..sent })), Err(ReplyRefusal::RequestWithdrawn));
        // Not a reply at all; a reply purpose without its request.
        let referral = ReceivedReferral { purpose: Some(Purpose::Return), answers: None, ..reply };
        assert_eq!(answered_request(&referral, None), Ok(None));
        assert_eq!(answered_request(&ReceivedReferral { answers: None, ..reply }, Some(sent)), Err(ReplyRefusal::ReplyWithoutRequest));
    }
}
