//! Who may call which use case. A use case takes an [`Authorized`] caller
//! of its audience, never a bare principal: the only way to make one is
//! [`Gateway::authorize`], which checks the caller's organisation and roles
//! once and audits a refusal. So no use case can run unchecked, and none
//! checks again. The HTTP edge authorises before it reads a request's body:
//! a caller who may not call an operation is refused whatever it sends.

use std::marker::PhantomData;
use std::ops::Deref;

use super::{AppError, Gateway};
use crate::auth::{Principal, Role};

/// The callers a use case serves: the roles that may call it.
pub trait Audience {
    const ROLES: &'static [Role];
}

/// Sending organisations: they submit referrals, follow them and withdraw consent.
#[derive(Debug)]
pub struct Senders;
/// Organisations that follow and withdraw what they sent: senders, and
/// recipient organisations for the reply cases they sent back (each sees
/// only its own organisation's).
#[derive(Debug)]
pub struct SendersAndRepliers;
/// Recipient organisations: they read their inbox, acknowledge, report and confirm erasures.
#[derive(Debug)]
pub struct Recipients;
/// Data-protection officers: they manage the policy versions (sharing, retention, sealing) and simulate decisions.
#[derive(Debug)]
pub struct Dpos;
/// Data-protection officers and auditors: they read the audit log, disclosures and subject reports.
#[derive(Debug)]
pub struct Overseers;

/// Who reads the released statistics: the coordinating body, DPOs and auditors.
#[derive(Debug)]
pub struct StatisticsReaders;

impl Audience for Senders {
    const ROLES: &'static [Role] = &[Role::Submitter];
}
impl Audience for SendersAndRepliers {
    const ROLES: &'static [Role] = &[Role::Submitter, Role::Recipient];
}

impl Authorized<SendersAndRepliers> {
    /// Whether the caller follows and withdraws a referral its organisation
    /// sent (`replying`: a reply case): a sender, all of them; a caller
    /// holding only the recipient role, the reply cases alone.
    pub fn follows(&self, sender_org: &str, replying: bool) -> bool {
        sender_org == self.principal.org.as_str() && (replying || self.principal.has(Role::Submitter))
    }

    /// Whether the caller follows only reply cases (it holds no submitter role).
    pub fn replies_only(&self) -> bool {
        !self.principal.has(Role::Submitter)
    }
}
impl Audience for Recipients {
    const ROLES: &'static [Role] = &[Role::Recipient];
}
impl Audience for Dpos {
    const ROLES: &'static [Role] = &[Role::Dpo];
}
impl Audience for Overseers {
    const ROLES: &'static [Role] = &[Role::Dpo, Role::Auditor];
}
impl Audience for StatisticsReaders {
    const ROLES: &'static [Role] = &[Role::Dpo, Role::Auditor, Role::Statistics];
}

/// A caller checked to belong to the audience `A`: served by this gateway
/// and holding one of `A`'s roles. Reads as the principal it wraps.
///
/// Nothing outside this module can make one, so a use case cannot be
/// called with a caller nobody checked:
///
/// ```compile_fail
/// use referral_gateway::app::access::{Authorized, Dpos};
/// fn forge(principal: referral_gateway::auth::Principal) -> Authorized<Dpos> {
///     Authorized { principal, audience: std::marker::PhantomData }
/// }
/// ```
#[derive(Debug)]
pub struct Authorized<A: Audience> {
    principal: Principal,
    audience: PhantomData<A>,
}

impl<A: Audience> Deref for Authorized<A> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl Gateway {
    /// Checks that `principal` may call the use cases of audience `A`:
    /// its organisation is one this gateway serves, and it holds one of
    /// `A`'s roles. A refusal is audited and answered `403`. A token or
    /// certificate of another country's organisation gets nothing here,
    /// whatever roles it claims.
    pub async fn authorize<A: Audience>(&self, principal: &Principal) -> Result<Authorized<A>, AppError> {
        let served_here = self.directory().organisation(&principal.org).is_some_and(|o| o.country == self.country);
        if !served_here {
            self.audit_refusal(principal.actor(), "forbidden", "org_not_served_here").await?;
            return Err(AppError::Forbidden { code: "org_not_served_here" });
        }
        if !A::ROLES.iter().any(|role| principal.has(*role)) {
            self.audit_refusal(principal.actor(), "forbidden", "missing_role").await?;
            return Err(AppError::Forbidden { code: "missing_role" });
        }
        Ok(Authorized { principal: principal.clone(), audience: PhantomData })
    }
}
