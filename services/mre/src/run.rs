//! One test run in the sandbox and what it says about the failure.

use std::path::Path;

use proto::messages::{TestOutcome, TestStatus};
use sandbox::{self, ProjectKind, RunResult, RunSpec, Sandbox};
use settings::SandboxConfig;

/// A test run with its per-test outcomes.
pub struct TestRun {
    pub result: RunResult,
    pub outcomes: Vec<TestOutcome>,
}

impl TestRun {
    pub fn failing(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, TestStatus::Failed | TestStatus::Error))
            .map(|o| o.name.clone())
            .collect()
    }

    pub fn passing(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| o.status == TestStatus::Passed)
            .map(|o| o.name.clone())
            .collect()
    }

    /// stdout and stderr together, for error-type matching and reports.
    pub fn output(&self) -> String {
        format!("{}{}", self.result.stdout, self.result.stderr)
    }
}

pub async fn run_tests<S: Sandbox>(
    sb: &S,
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    dir: &Path,
) -> Result<TestRun, sandbox::SandboxError> {
    let mut spec = RunSpec::from_config(cfg, kind.language, dir, kind.test_cmd.clone());
    spec.collect = kind.reports.clone();
    let result = sb.run(&spec).await?;
    let outcomes = sandbox::parse_outcomes(kind, &result);
    Ok(TestRun { result, outcomes })
}
