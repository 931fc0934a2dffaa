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

/// Whether `path` is a test file (candidates may not edit tests unless allowed).
pub fn is_test_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path.split('/')
        .rev()
        .skip(1)
        .any(|d| matches!(d, "tests" | "test" | "__tests__" | "spec"))
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || name.ends_with("_test.go")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name.ends_with("Test.java")
        || name == "conftest.py"
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
            is_test_path("tests/test_a.py")
                && is_test_path("src/a.test.js")
                && !is_test_path("app/testing.py")
        );
    }
}
