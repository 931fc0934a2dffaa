//! The triage stage: parse the failure, localise the fault in the project, and measure what
//! the decision needs (technical debt D, coverage T, context K, capability S).

pub mod analysis;
pub mod handler;
pub mod localise;
pub mod metrics;
pub mod project;
pub mod spectrum;
