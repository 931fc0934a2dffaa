//! The validation stage's decisions, apart from its IO: how long a run may take, when the
//! failing tests run first, whether a candidate passes, which passing candidate wins and when to
//! stop starting candidates, what a failed attempt tells the fix stage, and how many lanes an
//! attempt uses. Everything here takes plain data and returns plain data; the handler and the
//! modules beside it do the reading, running and writing.

use proto::messages::CandidateResult;

pub mod failing_first;
pub mod feedback;
pub mod rank;
pub mod sessions;
pub mod timeouts;
pub mod verdict;
pub mod vet;

/// What trying one candidate came to.
#[derive(Debug, Clone)]
pub struct Tried {
    pub result: CandidateResult,
    /// The change as applied (a unified diff), when it applied.
    pub diff: Option<String>,
    /// The test run's stdout and stderr, when a run decided.
    pub output: String,
}

/// Plain data the policies' tests are written in.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use proto::messages::{TestOutcome, TestStatus};
    use sandbox::RunResult;

    /// A run that exited with `code` after 50 ms, with no output.
    pub fn run(code: i32) -> RunResult {
        RunResult {
            exit_code: Some(code),
            signal: None,
            timed_out: false,
            oom_killed: false,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            duration: Duration::from_millis(50),
            timeout: Duration::from_secs(10),
            output_cap: 1 << 20,
            collected: BTreeMap::new(),
        }
    }

    pub fn o(name: &str, status: TestStatus) -> TestOutcome {
        TestOutcome {
            name: name.into(),
            status,
        }
    }
}
