//! The validation stage: each candidate is applied to a fresh copy of the project and the tests
//! run in the sandbox (one session per repair, so a candidate costs a process, not a container
//! start). A candidate passes when the run succeeds, the target tests pass and no test that
//! passed before fails. Passing candidates are ranked by regressions, then changed lines.
//!
//! [`handler`] does the IO and the orchestration: [`lanes`] and [`parked`] hold the sandbox
//! sessions, [`candidate`] runs one candidate, [`test_files`] reads a Node project's test
//! files. Every decision (timeouts, failing tests first, verdicts, ranking, when to stop,
//! feedback, lanes) is a pure function in [`policy`], tested on data.

pub mod candidate;
pub mod compare;
pub mod handler;
pub mod lanes;
pub mod parked;
pub mod policy;
pub mod test_files;
