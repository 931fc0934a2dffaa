//! Whether a candidate passes: the edits it may make, and what the whole suite's run says.

use patch::Edit;
use proto::messages::TestOutcome;
use sandbox::RunResult;

use crate::compare;

/// Why a candidate that edits test files is rejected without a run, or `None` when it edits
/// none (or test edits are allowed): a fix that rewrites the tests proves nothing.
pub fn test_edit_rejection(edits: &[Edit], allow_test_edits: bool) -> Option<String> {
    if allow_test_edits {
        return None;
    }
    let touched: Vec<String> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::Diff(d) => d.new_path.clone().or_else(|| d.old_path.clone()),
            Edit::SearchReplace { path, .. } | Edit::WholeFile { path, .. } => Some(path.clone()),
        })
        .map(|p| {
            p.strip_prefix("b/")
                .or_else(|| p.strip_prefix("a/"))
                .unwrap_or(&p)
                .to_owned()
        })
        .filter(|p| vocab::is_test_path(p))
        .collect();
    (!touched.is_empty()).then(|| {
        format!(
            "edits test files ({}), which is not allowed",
            touched.join(", ")
        )
    })
}

/// What the whole suite's run says about a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteVerdict {
    pub passed: bool,
    /// Tests that passed in the baseline and fail or error now.
    pub regressions: Vec<String>,
    /// Why the candidate failed, when it did.
    pub reason: Option<String>,
}

/// A candidate passes when the run succeeds, no baseline-passing test fails and every
/// baseline-failing test passes (or, when the run names no outcome for it, the run succeeds).
pub fn suite_verdict(
    run: &RunResult,
    tests: &[TestOutcome],
    passing_before: &[String],
    failing_before: &[String],
) -> SuiteVerdict {
    let regressions = compare::regressions(passing_before, tests);
    let mut still = compare::still_failing(failing_before, tests);
    if run.success() {
        // A run that names no outcome for a target (a quiet runner, a wrapper that hides it)
        // is decided by its exit status: it succeeded, so nothing still fails.
        still.retain(|t| tests.iter().any(|o| compare::same_test(t, &o.name)));
    }
    let passed = run.success() && regressions.is_empty() && still.is_empty();
    let reason = (!passed).then(|| {
        // A stopped run names no test truthfully: say why it stopped.
        if run.timed_out || run.oom_killed || run.output_truncated {
            format!("the test run {}", run.verdict())
        } else if !regressions.is_empty() {
            format!(
                "breaks tests that passed before: {}",
                regressions.join(", ")
            )
        } else if !still.is_empty() {
            format!("target tests still fail: {}", still.join(", "))
        } else {
            format!("the test run {}", run.verdict())
        }
    });
    SuiteVerdict {
        passed,
        regressions,
        reason,
    }
}

/// What a run of the tests around a narrow command says about a candidate that passed it:
/// it fails when a test that passed before fails now, or when the run was stopped. Tests that
/// failed before may still fail there (they are not this repair's).
pub fn wider_verdict(
    run: &RunResult,
    tests: &[TestOutcome],
    passing_before: &[String],
) -> SuiteVerdict {
    let regressions = compare::regressions(passing_before, tests);
    let stopped = run.timed_out || run.oom_killed || run.output_truncated;
    let reason = if stopped {
        Some(format!(
            "the tests around the command: the run {}",
            run.verdict()
        ))
    } else if !regressions.is_empty() {
        Some(format!(
            "breaks tests around the command that passed before: {}",
            regressions.join(", ")
        ))
    } else {
        None
    };
    SuiteVerdict {
        passed: reason.is_none(),
        regressions,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use proto::messages::TestStatus;

    use super::*;
    use crate::policy::fixtures::{o, run};

    #[test]
    fn test_edits_are_rejected_unless_allowed() {
        let diff =
            "--- a/tests/test_calc.py\n+++ b/tests/test_calc.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n";
        let mut edits = patch::parse(diff, &patch::PatchLimits::default()).unwrap();
        edits.push(Edit::WholeFile {
            path: "app/calc.py".into(),
            content: "x = 2\n".into(),
        });
        edits.push(Edit::SearchReplace {
            path: "conftest.py".into(),
            search: "a".into(),
            replace: "b".into(),
        });
        assert_eq!(
            test_edit_rejection(&edits, false).as_deref(),
            Some("edits test files (tests/test_calc.py, conftest.py), which is not allowed")
        );
        assert_eq!(test_edit_rejection(&edits, true), None);
        assert_eq!(test_edit_rejection(&edits[1..2], false), None);
    }

    #[test]
    fn a_candidate_passes_when_targets_pass_and_nothing_regresses() {
        let passing = vec!["t.py::a".to_owned()];
        let failing = vec!["t.py::b".to_owned()];
        let fixed = [
            o("t.py::a", TestStatus::Passed),
            o("t.py::b", TestStatus::Passed),
        ];
        let v = suite_verdict(&run(0), &fixed, &passing, &failing);
        assert_eq!(
            v,
            SuiteVerdict {
                passed: true,
                regressions: vec![],
                reason: None
            }
        );
        // Regressions are named before targets that still fail.
        let broken = [
            o("t.py::a", TestStatus::Failed),
            o("t.py::b", TestStatus::Failed),
        ];
        let v = suite_verdict(&run(1), &broken, &passing, &failing);
        assert_eq!(v.regressions, ["t.py::a"]);
        assert_eq!(
            v.reason.as_deref(),
            Some("breaks tests that passed before: t.py::a")
        );
        let still = [
            o("t.py::a", TestStatus::Passed),
            o("t.py::b", TestStatus::Error),
        ];
        let v = suite_verdict(&run(1), &still, &passing, &failing);
        assert_eq!(
            v.reason.as_deref(),
            Some("target tests still fail: t.py::b")
        );
        // A run that succeeded without naming the target (a quiet wrapper): its exit decides.
        let quiet = [
            o("t.py::a", TestStatus::Passed),
            o("make test", TestStatus::Passed),
        ];
        assert!(suite_verdict(&run(0), &quiet, &passing, &failing).passed);
        let v = suite_verdict(&run(1), &quiet, &passing, &failing);
        assert_eq!(
            v.reason.as_deref(),
            Some("target tests still fail: t.py::b")
        );
        // Every test passed but the run did not succeed: the run's own verdict.
        let v = suite_verdict(&run(2), &fixed, &passing, &failing);
        assert!(!v.passed);
        assert_eq!(v.reason.as_deref(), Some("the test run exited 2"));
        // A stopped run says why it stopped, whatever its partial outcomes say.
        let mut stopped = run(0);
        stopped.exit_code = None;
        stopped.timed_out = true;
        let v = suite_verdict(&stopped, &broken, &passing, &failing);
        assert_eq!(v.regressions, ["t.py::a"]);
        assert_eq!(
            v.reason.as_deref(),
            Some("the test run killed after 10 s timeout")
        );
    }

    #[test]
    fn the_tests_around_a_narrow_command_must_keep_passing() {
        let passing = vec!["t.py::a".to_owned(), "t.py::c".to_owned()];
        // Pre-existing failures around the target are not this repair's.
        let same = [
            o("t.py::a", TestStatus::Passed),
            o("t.py::c", TestStatus::Passed),
            o("t.py::old", TestStatus::Failed),
        ];
        assert!(wider_verdict(&run(1), &same, &passing).passed);
        let broken = [
            o("t.py::a", TestStatus::Passed),
            o("t.py::c", TestStatus::Failed),
        ];
        let v = wider_verdict(&run(1), &broken, &passing);
        assert!(!v.passed);
        assert_eq!(v.regressions, ["t.py::c"]);
        let mut slow = run(0);
        slow.timed_out = true;
        assert!(!wider_verdict(&slow, &same, &passing).passed);
    }
}
