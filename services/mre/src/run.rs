//! One test run in the sandbox and what it says about the failure.

use std::path::Path;

use proto::messages::{TestOutcome, TestStatus, TriageReport};
use sandbox::outcomes::same_test;
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

    /// Whether the test command itself was not found (exit 127, or the shell saying so with
    /// at most one outcome parsed), rather than tests failing.
    pub fn command_not_found(&self) -> bool {
        self.result.exit_code == Some(127)
            || self.output().contains("command not found") && self.outcomes.len() <= 1
    }
}

/// Whether `run` shows the failure triage saw: the same error type in the output (when the log
/// named one) and, when the log named failing tests, one of them failing again. A test that
/// fails for another reason (a missing data file, say) is not the same failure.
pub fn reproduces(triage: &TriageReport, run: &TestRun) -> bool {
    if run.result.success() {
        return false;
    }
    let failing = run.failing();
    let same_tests = triage.failing_tests.is_empty()
        || triage
            .failing_tests
            .iter()
            .any(|t| failing.iter().any(|f| same_test(t, f)));
    let error = triage.error_type.rsplit('.').next().unwrap_or("");
    let output = run.output();
    // Only an error's name is looked for: a category the parser gave a log without one ("test
    // failure" for `go test`, `cargo test`) is words no run prints. The name as printed, or as
    // the log reader names the run's output (jest prints no `AssertionError` for a failed
    // `expect`, yet the log and the run say the same).
    let named = error.len() >= 4 && !error.contains(' ');
    let same_error = !named
        || output.contains(error)
        || logparse::parse(&output).error_type.rsplit('.').next() == Some(error);
    let named_something = !triage.failing_tests.is_empty() || named;
    named_something && same_tests && same_error
}

/// The tests a fix must make pass: of the baseline's `failing` tests, those the log names,
/// when the failure reproduced and the log names some of them; else all of them. Tests that
/// already fail here for reasons the log does not show (an environment older or newer than
/// the user's) would otherwise be targets no fix of this bug can reach.
pub fn targets(triage: &TriageReport, failing: &[String], reproduced: bool) -> Vec<String> {
    if !reproduced || triage.failing_tests.is_empty() {
        return failing.to_vec();
    }
    let named: Vec<String> = failing
        .iter()
        .filter(|f| {
            triage
                .failing_tests
                .iter()
                .any(|t| sandbox::outcomes::same_test(t, f))
        })
        .cloned()
        .collect();
    if named.is_empty() {
        failing.to_vec()
    } else {
        named
    }
}

/// The sandbox settings of the reproduction runs: when the log says the failing run was cut by
/// a time limit (a test that loops), the reproduction is cut after at most 30 s instead of the
/// configured limit: the loop reproduces as a timeout, and a repair does not wait minutes to
/// learn what the log already says.
pub fn reproduction_timeout(limit_secs: u64, error_log: &str) -> u64 {
    if sandbox::outcomes::cut_by_time_limit(error_log) {
        limit_secs.min(REPRODUCE_LOOP_SECS)
    } else {
        limit_secs
    }
}

/// When the baseline looped: the command that runs only the tests that ended in it, whose
/// time is the baseline candidates are scaled to (the looping run's time is only the limit).
/// `go test` with `-run` over those tests' top-level names; `python -m pytest` with their node
/// ids; none for other runners, or when a name could be taken for something else.
pub fn ended_tests_cmd(kind: &ProjectKind, ended: &[String]) -> Option<Vec<String>> {
    if ended.is_empty() {
        return None;
    }
    match kind.runner {
        sandbox::Runner::GoTest => {
            let mut names: Vec<&str> = ended
                .iter()
                .map(|t| t.rsplit("::").next().unwrap_or(t))
                .map(|t| t.split('/').next().unwrap_or(t))
                .collect();
            names.sort_unstable();
            names.dedup();
            let plain = |n: &&str| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if !names.iter().all(plain) {
                return None;
            }
            let mut cmd = kind.test_cmd.clone();
            cmd.extend(["-run".to_owned(), format!("^({})$", names.join("|"))]);
            Some(cmd)
        }
        sandbox::Runner::Pytest if sandbox::is_pytest_module_run(&kind.test_cmd) => {
            let node_id = |t: &String| t.contains("::") && !t.starts_with('-') && !t.contains('\0');
            if !ended.iter().all(node_id) {
                return None;
            }
            let mut cmd = kind.test_cmd.clone();
            cmd.extend(ended.iter().cloned());
            Some(cmd)
        }
        _ => None,
    }
}

/// A long suite's wider level: the test files of the log's failing tests (pytest node ids),
/// run with the whole command's own options; none for other runners, or when a name is not
/// a node id of a `.py` file. Never the whole suite: it is known to outlast the limit.
pub fn test_files_cmd(kind: &ProjectKind, failing: &[String]) -> Option<Vec<String>> {
    if kind.runner != sandbox::Runner::Pytest || !sandbox::is_pytest_module_run(&kind.test_cmd) {
        return None;
    }
    let mut files: Vec<&str> = vec![];
    for t in failing {
        let (file, rest) = t.split_once("::")?;
        if !file.ends_with(".py") || rest.is_empty() || file.starts_with('-') || t.contains('\0') {
            return None;
        }
        if !files.contains(&file) {
            files.push(file);
        }
    }
    if files.is_empty() {
        return None;
    }
    let mut cmd = kind.test_cmd.clone();
    cmd.extend(files.into_iter().map(str::to_owned));
    Some(cmd)
}

/// How long a reproduction of a failure the log reports as a timeout may run.
pub const REPRODUCE_LOOP_SECS: u64 = 30;

pub async fn run_tests<S: Sandbox>(
    sb: &S,
    cfg: &SandboxConfig,
    env: &sandbox::Environment,
    kind: &ProjectKind,
    dir: &Path,
) -> Result<TestRun, sandbox::SandboxError> {
    let mut spec = RunSpec::for_project(cfg, kind, dir);
    env.apply(&mut spec);
    let result = sb.run(&spec).await?;
    let outcomes = sandbox::parse_outcomes(kind, &result);
    Ok(TestRun { result, outcomes })
}

/// A finished run with `output` on stdout and these outcomes (for tests).
#[cfg(test)]
pub(crate) fn test_run(code: i32, output: &str, outcomes: &[(&str, TestStatus)]) -> TestRun {
    TestRun {
        result: RunResult {
            exit_code: Some(code),
            signal: None,
            timed_out: false,
            oom_killed: false,
            stdout: output.into(),
            stderr: String::new(),
            output_truncated: false,
            duration: std::time::Duration::from_millis(50),
            timeout: std::time::Duration::from_secs(10),
            output_cap: 1 << 20,
            collected: std::collections::BTreeMap::new(),
        },
        outcomes: outcomes
            .iter()
            .map(|(name, status)| TestOutcome {
                name: (*name).into(),
                status: *status,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triage(error_type: &str, failing: &[&str]) -> TriageReport {
        TriageReport {
            error_type: error_type.into(),
            failing_tests: failing.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_failure_needs_the_same_error_and_one_of_the_same_tests() {
        use TestStatus::*;
        let zero_div = test_run(
            1,
            "E   ZeroDivisionError: division by zero",
            &[
                ("tests/test_calc.py::test_mean", Failed),
                ("tests/test_calc.py::test_sum", Passed),
            ],
        );
        let t = triage("builtins.ZeroDivisionError", &["test_calc.py::test_mean"]);
        assert!(reproduces(&t, &zero_div));
        // Only the error, or only the test, named: that one decides.
        assert!(reproduces(&triage("ZeroDivisionError", &[]), &zero_div));
        assert!(reproduces(
            &triage("", &["tests/test_calc.py::test_mean"]),
            &zero_div
        ));
        // Another error, another failing test, a passing run, nothing named: no.
        assert!(!reproduces(&triage("KeyError", &[]), &zero_div));
        assert!(!reproduces(
            &triage("", &["tests/test_calc.py::test_sum"]),
            &zero_div
        ));
        let passing = test_run(
            0,
            "ZeroDivisionError",
            &[("tests/test_calc.py::test_mean", Passed)],
        );
        assert!(!reproduces(&t, &passing));
        assert!(!reproduces(&triage("Err", &[]), &zero_div));
        // `go test`'s failure has no error name: the same failing test decides.
        let go = test_run(
            1,
            "--- FAIL: TestLargest (0.00s)\n    usage_test.go:22: Largest (-want +got):\nFAIL\n",
            &[
                ("example.com/diskusage::TestLargest", Failed),
                ("example.com/diskusage::TestTotal", Passed),
            ],
        );
        assert!(reproduces(&triage("test failure", &["TestLargest"]), &go));
        assert!(!reproduces(&triage("test failure", &["TestTotal"]), &go));
        assert!(!reproduces(&triage("test failure", &[]), &go));
    }

    #[test]
    fn the_targets_are_the_failing_tests_the_log_names() {
        let failing: Vec<String> = [
            "tests/test_format.py::test_simple_format[numeric_literals]",
            "tests/test_black.py::BlackTestCase::test_async_as_identifier",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = triage(
            "AssertionError",
            &["tests/test_format.py::test_simple_format[numeric_literals]"],
        );
        assert_eq!(targets(&t, &failing, true), failing[..1]);
        // Not reproduced, nothing named, or none of the named failing here: all of them.
        assert_eq!(targets(&t, &failing, false), failing);
        assert_eq!(
            targets(&triage("AssertionError", &[]), &failing, true),
            failing
        );
        let other = triage("", &["tests/test_x.py::test_y"]);
        assert_eq!(targets(&other, &failing, true), failing);
    }

    #[test]
    fn a_jest_failure_reproduces_though_jest_prints_no_error_class() {
        use TestStatus::*;
        // What jest prints for a failed `expect` (the user's log and the sandbox's run alike).
        let jest = "FAIL test/invoice.test.js
  subtotal
    \u{2715} adds quantity times price (28 ms)

  \u{25cf} subtotal \u{203a} adds quantity times price

    expect(received).toBe(expected) // Object.is equality

    Expected: 399
    Received: 252

      at Object.toBe (test/invoice.test.js:6:71)
";
        let log = logparse::parse(jest);
        assert_eq!(
            log.failing_tests,
            ["subtotal \u{203a} adds quantity times price"]
        );
        let t = triage(
            &log.error_type,
            &["subtotal \u{203a} adds quantity times price"],
        );
        assert!(t.error_type.len() >= 4, "{}", t.error_type);
        let run = test_run(
            1,
            jest,
            &[
                (
                    "invoice.test.js::subtotal > adds quantity times price",
                    Failed,
                ),
                ("invoice.test.js::subtotal > is zero for no lines", Passed),
            ],
        );
        assert!(reproduces(&t, &run));
        // Another error in the same test does not.
        let other = test_run(
            1,
            "TypeError: subtotal is not a function\n    at Object.<anonymous> (test/invoice.test.js:6:12)",
            &[(
                "invoice.test.js::subtotal > adds quantity times price",
                Failed,
            )],
        );
        assert!(!reproduces(&t, &other));
    }

    #[test]
    fn a_missing_test_command_is_told_from_failing_tests() {
        use TestStatus::*;
        assert!(test_run(127, "", &[]).command_not_found());
        assert!(test_run(2, "sh: pytest: command not found", &[]).command_not_found());
        let ran = [("a", Failed), ("b", Failed)];
        assert!(!test_run(1, "a: command not found", &ran).command_not_found());
        assert!(!test_run(1, "", &[("a", Failed)]).command_not_found());
    }

    #[test]
    fn a_log_cut_by_a_time_limit_caps_the_reproduction() {
        let hang = "..F\nError: the test job exceeded its time limit (20 s) and was cancelled\n";
        assert_eq!(reproduction_timeout(300, hang), REPRODUCE_LOOP_SECS);
        assert_eq!(reproduction_timeout(10, hang), 10);
        let go = "panic: test timed out after 10m0s\n";
        assert_eq!(reproduction_timeout(300, go), REPRODUCE_LOOP_SECS);
        let plain = "FAILED tests/test_a.py::test_x - AssertionError\n1 failed in 0.1s\n";
        assert_eq!(reproduction_timeout(300, plain), 300);
    }

    #[test]
    fn the_tests_that_ended_run_alone() {
        let go = sandbox::ProjectKind {
            language: proto::messages::Language::Go,
            framework: String::new(),
            test_cmd: vec!["go".into(), "test".into(), "-json".into(), "./...".into()],
            runner: sandbox::Runner::GoTest,
            reports: vec![],
            env: vec![],
            origin: String::new(),
        };
        let ended = vec![
            "example.com/fizz::TestFizzBuzz".to_owned(),
            "example.com/fizz::TestSplit/empty".to_owned(),
        ];
        assert_eq!(
            ended_tests_cmd(&go, &ended).unwrap()[4..],
            ["-run", "^(TestFizzBuzz|TestSplit)$"]
        );
        assert_eq!(ended_tests_cmd(&go, &[]), None);
        assert_eq!(ended_tests_cmd(&go, &["p::Test$(x)".into()]), None);
    }

    #[test]
    fn a_long_suites_wider_level_is_the_failing_tests_files_only() {
        let w = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let py = sandbox::ProjectKind {
            language: proto::messages::Language::Python,
            framework: String::new(),
            test_cmd: w(&["python3", "-m", "pytest", "-q"]),
            runner: sandbox::Runner::Pytest,
            reports: vec![],
            env: vec![],
            origin: String::new(),
        };
        let failing = w(&[
            "tests/test_calc.py::test_add",
            "tests/test_calc.py::TestMul::test_zero",
            "tests/test_io.py::test_read[utf-8]",
        ]);
        assert_eq!(
            test_files_cmd(&py, &failing).unwrap(),
            w(&[
                "python3",
                "-m",
                "pytest",
                "-q",
                "tests/test_calc.py",
                "tests/test_io.py"
            ])
        );
        // Nothing to narrow to, or a name that is not a node id of a file: no level (the
        // whole suite is never the answer).
        assert_eq!(test_files_cmd(&py, &[]), None);
        assert_eq!(test_files_cmd(&py, &w(&["test_add"])), None);
        assert_eq!(test_files_cmd(&py, &w(&["-x::y"])), None);
        let go = sandbox::ProjectKind {
            runner: sandbox::Runner::GoTest,
            test_cmd: w(&["go", "test", "./..."]),
            ..py.clone()
        };
        assert_eq!(test_files_cmd(&go, &failing), None);
    }
}
