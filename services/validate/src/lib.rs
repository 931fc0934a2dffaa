//! The validation stage: each candidate is applied to a fresh copy of the project and the tests
//! run in the sandbox (one session per repair, so a candidate costs a process, not a container
//! start). A candidate passes when the run succeeds, the target tests pass and no test that
//! passed before fails. Passing candidates are ranked by regressions, then changed lines.

pub mod compare;
pub mod handler;
