//! The data-protection officer's and auditor's use cases: the policy
//! versions, simulations, the audit log, disclosures and subject reports,
//! and the approval of emergency overrides.

pub mod policies;
pub mod impact;
pub mod overrides;
pub mod policy_checks;
pub mod queries;
pub mod subject_report;
