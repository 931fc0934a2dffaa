//! Failing tests first: which command runs only the baseline's failing tests, and when that
//! run alone already rejects a candidate.

use proto::messages::{TestOutcome, TestStatus};
use sandbox::{ProjectKind, RunResult, Runner};

use crate::compare;

/// The command that runs only the baseline's failing tests, when that can be said exactly, for
/// an early verdict on candidates that do not fix them:
/// - `python -m pytest` and a pytest node id (`path.py::name`) for every failing test: those
///   node ids, stopping at the first failure (`-x`) with one-line tracebacks;
/// - the plain `node --test` script (as detected, nothing added by the user) and every failing
///   test's name written literally in one and the same test file: that file run by node itself,
///   which is what `node --test` does per file, without its parent process.
///
/// `test_files` yields the project's JavaScript test files as (path relative to the project,
/// text), only those [`may_name_tests`] accepts; it is called only for a Node project.
pub fn failing_first_cmd<I>(
    kind: &ProjectKind,
    failing: &[String],
    test_files: impl FnOnce() -> I,
) -> Option<Vec<String>>
where
    I: IntoIterator<Item = (String, String)>,
{
    if failing.is_empty() {
        return None;
    }
    match kind.runner {
        Runner::Pytest if sandbox::is_pytest_module_run(&kind.test_cmd) => {
            let node_id = |t: &String| {
                let file = t.split("::").next().unwrap_or("");
                t.contains("::")
                    && file.ends_with(".py")
                    && !t.starts_with('-')
                    && !t.contains('\0')
            };
            if !failing.iter().all(node_id) {
                return None;
            }
            let mut cmd = kind.test_cmd.clone();
            cmd.extend(["-x".to_owned(), "--tb=line".to_owned()]);
            cmd.extend(failing.iter().cloned());
            Some(cmd)
        }
        Runner::NodeTest if kind.test_cmd == sandbox::node_test_cmd("node --test") => {
            let file = file_naming(test_files(), failing)?;
            Some(vec!["node".into(), "--test-reporter=tap".into(), file])
        }
        _ => None,
    }
}

/// Whether a JavaScript file at `rel` (relative to the project) is one whose test names count:
/// a test file, and a path node cannot take for an option.
pub fn may_name_tests(rel: &str) -> bool {
    vocab::is_test_path(rel) && !rel.starts_with('-')
}

/// The one file of `files` (path, text) that names every test in `names` as a string literal,
/// and the only one that names any of them.
pub fn file_naming<I>(files: I, names: &[String]) -> Option<String>
where
    I: IntoIterator<Item = (String, String)>,
{
    let quoted = |text: &str, n: &str| {
        ['\'', '"', '`']
            .iter()
            .any(|q| text.contains(&format!("{q}{n}{q}")))
    };
    let mut found = None;
    for (rel, text) in files {
        let named = names.iter().filter(|n| quoted(&text, n)).count();
        if named == 0 {
            continue;
        }
        if named < names.len() || found.is_some() {
            return None;
        }
        found = Some(rel);
    }
    found
}

/// Whether a run of the failing tests alone already decides that the candidate fails: it was
/// stopped (time, memory, output: the whole suite runs those tests too), or a failing test ran
/// and still failed (the whole suite runs it on the same code). `None`: the whole suite decides.
pub fn early_rejection(
    failing: &[String],
    run: &RunResult,
    tests: &[TestOutcome],
) -> Option<String> {
    if run.timed_out || run.oom_killed || run.output_truncated {
        return Some(format!("the test run {}", run.verdict()));
    }
    let failed: Vec<&str> = failing
        .iter()
        .filter(|t| {
            tests.iter().any(|o| {
                compare::same_test(t, &o.name)
                    && matches!(o.status, TestStatus::Failed | TestStatus::Error)
            })
        })
        .map(String::as_str)
        .collect();
    (!failed.is_empty()).then(|| format!("target tests still fail: {}", failed.join(", ")))
}

/// Whether failing-first runs may use a pytest session collected on a copy of the project:
/// the setting allows it, the attempt runs failing tests first, and the runner is pytest (the
/// only warm server that collects).
pub fn use_collected(collected: bool, has_first_cmd: bool, runner: Runner) -> bool {
    collected && has_first_cmd && runner == Runner::Pytest
}

/// The rank from which candidates use the collected session. Collecting costs about two
/// ordinary runs and saves about two thirds of each later one, so the first two candidates of
/// each lane (often all an attempt needs) run the ordinary way.
pub fn collect_from(lanes: usize) -> usize {
    2 * lanes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixtures::{o, run};

    fn kind(runner: Runner, test_cmd: Vec<String>) -> ProjectKind {
        ProjectKind {
            language: vocab::Language::Python,
            framework: String::new(),
            test_cmd,
            runner,
            reports: vec![],
            env: vec![],
            origin: String::new(),
        }
    }

    fn pytest_kind() -> ProjectKind {
        let cmd = ["python3", "-m", "pytest", "-q", "-rA"];
        kind(Runner::Pytest, cmd.iter().map(|s| s.to_string()).collect())
    }

    fn node_kind(script: &str) -> ProjectKind {
        ProjectKind {
            language: vocab::Language::JavaScript,
            ..kind(Runner::NodeTest, sandbox::node_test_cmd(script))
        }
    }

    fn no_files() -> Vec<(String, String)> {
        panic!("a pytest project's files are never read")
    }

    fn owned(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn failing_first_only_with_node_ids_and_pytest() {
        let kind = pytest_kind();
        let failing = owned(&[
            "tests/test_a.py::test_x",
            "tests/test_a.py::TestK::test_y[1-2]",
        ]);
        let cmd = failing_first_cmd(&kind, &failing, no_files).unwrap();
        let n = kind.test_cmd.len();
        assert_eq!(cmd[..n], kind.test_cmd[..]);
        assert_eq!(cmd[n..n + 2], ["-x", "--tb=line"]);
        assert_eq!(cmd[n + 2..], failing[..]);
        // Nothing failing, a name that is no node id, an option in disguise: the whole suite.
        assert!(failing_first_cmd(&kind, &[], no_files).is_none());
        assert!(failing_first_cmd(&kind, &["tests.test_broken".into()], no_files).is_none());
        assert!(failing_first_cmd(&kind, &["-p.py::evil".into()], no_files).is_none());
        // A user's shell command cannot take node ids.
        let mut custom = kind.clone();
        custom.test_cmd = owned(&["sh", "-c", "pytest -q"]);
        assert!(failing_first_cmd(&custom, &failing, no_files).is_none());
    }

    #[test]
    fn failing_first_runs_the_node_test_file_that_names_the_failing_tests() {
        let files = || {
            vec![
                (
                    "test/math.test.js".to_owned(),
                    "test('adds');\ntest(\"rounds up\");\ntest(`keeps the sign`);\n".to_owned(),
                ),
                (
                    "test/other.test.js".to_owned(),
                    "test('other');\n".to_owned(),
                ),
            ]
        };
        let failing = owned(&["rounds up", "keeps the sign"]);
        assert_eq!(
            failing_first_cmd(&node_kind("node --test"), &failing, files),
            Some(owned(&["node", "--test-reporter=tap", "test/math.test.js"]))
        );
        // A script with options of its own (a loader, a setup file) is the user's to run.
        let custom = node_kind("node --test --require ./setup.js");
        assert_eq!(failing_first_cmd(&custom, &failing, files), None);
        // Other runners never run failing tests first.
        let mut npm = node_kind("node --test");
        npm.runner = Runner::Npm;
        assert_eq!(failing_first_cmd(&npm, &failing, files), None);
    }

    #[test]
    fn one_file_must_name_every_failing_test_and_no_other_file_any() {
        let f = |rel: &str, text: &str| (rel.to_owned(), text.to_owned());
        let names = owned(&["rounds up", "keeps the sign"]);
        let both = f("a.test.js", "it('rounds up'); it(\"keeps the sign\")");
        let one = f("b.test.js", "it(`rounds up`)");
        let none = f("c.test.js", "it('rounds up later'); // rounds up");
        assert_eq!(
            file_naming([both.clone(), none.clone()], &names),
            Some("a.test.js".into())
        );
        // Named only in a comment or inside a longer name: not named.
        assert_eq!(file_naming([none.clone()], &names), None);
        // A file that names only some, before or after the one that names all: no single file.
        assert_eq!(file_naming([both.clone(), one.clone()], &names), None);
        assert_eq!(file_naming([one, both.clone()], &names), None);
        // Two files that name all: no single file either.
        assert_eq!(file_naming([both.clone(), both], &names), None);
    }

    #[test]
    fn test_names_count_only_in_test_files_node_takes_as_files() {
        assert!(may_name_tests("test/math.test.js"));
        assert!(may_name_tests("src/math.spec.mjs"));
        assert!(!may_name_tests("lib/math.js"));
        assert!(!may_name_tests("-r.test.js"));
    }

    #[test]
    fn early_rejection_needs_a_target_that_ran_and_failed() {
        let failing = owned(&["tests/test_a.py::test_x", "tests/test_a.py::test_y"]);
        let both_fail = [
            o("tests/test_a.py::test_x", TestStatus::Failed),
            o("tests/test_a.py::test_y", TestStatus::Passed),
        ];
        assert_eq!(
            early_rejection(&failing, &run(1), &both_fail).as_deref(),
            Some("target tests still fail: tests/test_a.py::test_x")
        );
        let all_pass = [
            o("tests/test_a.py::test_x", TestStatus::Passed),
            o("tests/test_a.py::test_y", TestStatus::Passed),
        ];
        assert_eq!(early_rejection(&failing, &run(0), &all_pass), None);
        // `-x` stopped after one target failed: that one decides already.
        let stopped_early = [o("tests/test_a.py::test_x", TestStatus::Failed)];
        assert_eq!(
            early_rejection(&failing, &run(1), &stopped_early).as_deref(),
            Some("target tests still fail: tests/test_a.py::test_x")
        );
        // No target ran (a renamed node, another rootdir) or one was skipped: the whole suite
        // decides.
        assert_eq!(early_rejection(&failing, &run(4), &[]), None);
        let skipped = [o("tests/test_a.py::test_x", TestStatus::Skipped)];
        assert_eq!(early_rejection(&failing, &run(0), &skipped), None);
        // A stopped run is a failure of the whole suite too.
        let mut stopped = run(0);
        stopped.exit_code = None;
        stopped.signal = Some(9);
        stopped.timed_out = true;
        assert_eq!(
            early_rejection(&failing, &stopped, &[]).as_deref(),
            Some("the test run killed after 10 s timeout")
        );
    }

    #[test]
    fn only_pytest_failing_first_runs_use_a_collected_session() {
        assert!(use_collected(true, true, Runner::Pytest));
        assert!(!use_collected(false, true, Runner::Pytest));
        assert!(!use_collected(true, false, Runner::Pytest));
        assert!(!use_collected(true, true, Runner::NodeTest));
        assert_eq!(collect_from(3), 6);
    }
}
