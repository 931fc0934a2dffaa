//! Comparing a candidate's test run with the baseline.

use proto::messages::{TestOutcome, TestStatus};

pub use sandbox::outcomes::same_test;

/// Baseline-passing tests that now fail or error.
pub fn regressions(baseline_passing: &[String], now: &[TestOutcome]) -> Vec<String> {
    baseline_passing
        .iter()
        .filter(|p| {
            now.iter().any(|o| {
                same_test(p, &o.name) && matches!(o.status, TestStatus::Failed | TestStatus::Error)
            })
        })
        .cloned()
        .collect()
}

/// Baseline-failing tests that still do not pass.
pub fn still_failing(targets: &[String], now: &[TestOutcome]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| {
            !now.iter()
                .any(|o| same_test(t, &o.name) && o.status == TestStatus::Passed)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(name: &str, status: TestStatus) -> TestOutcome {
        TestOutcome {
            name: name.into(),
            status,
        }
    }

    #[test]
    fn baseline_comparison() {
        let now = vec![
            o("tests/test_a.py::test_x", TestStatus::Passed),
            o("tests/test_a.py::test_y", TestStatus::Failed),
        ];
        assert_eq!(
            regressions(&["tests/test_a.py::test_y".into()], &now),
            ["tests/test_a.py::test_y"]
        );
        assert!(regressions(&["tests/test_a.py::test_x".into()], &now).is_empty());
        assert!(still_failing(&["test_a.py::test_x".into()], &now).is_empty());
        assert_eq!(
            still_failing(&["tests/test_a.py::test_z".into()], &now).len(),
            1
        );
        assert!(
            vocab::is_test_path("tests/test_a.py")
                && vocab::is_test_path("src/a.test.js")
                && !vocab::is_test_path("app/testing.py")
        );
    }
}
