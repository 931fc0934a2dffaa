//! Tests that cannot run: what a baseline run that did not reproduce the failure says is
//! missing (a runner, an interpreter, a package the tests import), apart from the bug. Such a
//! repair stops with that reason (exit 3) instead of validating candidates that cannot pass.

use std::path::Path;

use proto::messages::{Blocked, BlockedReason, TriageReport};

use crate::run::TestRun;

/// Interpreters and toolchains, with the Debian package that provides each.
const INTERPRETERS: &[(&str, &str)] = &[
    ("python3", "apt install python3"),
    ("python", "apt install python-is-python3"),
    ("node", "apt install nodejs"),
    ("nodejs", "apt install nodejs"),
    ("npm", "apt install npm"),
    ("npx", "apt install npm"),
    ("go", "apt install golang"),
    ("cargo", "apt install cargo"),
    ("rustc", "apt install rustc"),
    ("java", "apt install default-jdk-headless"),
    ("mvn", "apt install maven"),
    ("gradle", "apt install gradle"),
    ("ruby", "apt install ruby"),
    ("bundle", "apt install ruby-bundler"),
    ("php", "apt install php-cli"),
];

/// Why the tests of `run` (the whole project's baseline, which did not reproduce the failure)
/// cannot run, if its output says so. A run where any test passed can run; a missing module
/// that the project itself defines is a bug to repair, not a missing package.
pub fn diagnose(
    run: &TestRun,
    triage: &TriageReport,
    root: &Path,
    sandbox: &str,
) -> Option<Blocked> {
    let r = &run.result;
    if r.success() || r.timed_out || r.oom_killed || !run.passing().is_empty() {
        return None;
    }
    let output = run.output();
    let tail = tail(&output, 15);
    let blocked = |reason, what: String, hint: String| {
        Some(Blocked {
            reason,
            what,
            hint,
            output_tail: tail.clone(),
        })
    };
    let place = if sandbox == "local" {
        "on this machine (or activate the virtualenv that has it)"
    } else {
        "in the sandbox image (or set sandbox.image to an image that has it)"
    };

    if let Some(program) = missing_program(&output).filter(|_| run.outcomes.len() <= 1) {
        return match INTERPRETERS.iter().find(|(p, _)| *p == program) {
            Some((_, apt)) => blocked(
                BlockedReason::Interpreter,
                format!("`{program}`"),
                format!("install `{program}` {place}: `{apt}`"),
            ),
            None => blocked(
                BlockedReason::Runner,
                format!("`{program}`"),
                format!("install `{program}` {place}: {}", install_hint(&program)),
            ),
        };
    }
    for line in output.lines() {
        let line = line.trim_start_matches(['E', ' ', '\t']);
        // `python3 -m pytest` without pytest: "/usr/bin/python3: No module named pytest".
        if let Some((prog, module)) = line.split_once(": No module named ")
            && prog
                .rsplit('/')
                .next()
                .is_some_and(|p| p.starts_with("python"))
        {
            // "No module named pytest.__main__; 'pytest' is a package ..." (a broken install).
            let module = module
                .split([';', ' '])
                .next()
                .unwrap_or("")
                .trim_matches('\'');
            let module = module
                .strip_suffix(".__main__")
                .unwrap_or(module)
                .to_owned();
            return blocked(
                BlockedReason::Runner,
                format!("`{module}`"),
                format!("install `{module}` {place}: {}", install_hint(&module)),
            );
        }
        if let Some(module) = python_missing_module(line)
            && !project_defines(root, &module)
            && !triage_is_about(triage, &module)
        {
            return blocked(
                BlockedReason::Dependency,
                format!("the Python package `{module}`"),
                format!(
                    "install the project's dependencies {place}: `python3 -m pip install {}`",
                    pip_source(root, &module)
                ),
            );
        }
        if let Some(package) = node_missing_package(line)
            && !triage_is_about(triage, &package)
        {
            return blocked(
                BlockedReason::Dependency,
                format!("the npm package `{package}`"),
                format!("install the project's dependencies {place}: `npm install`"),
            );
        }
        if let Some(package) = go_missing_package(line) {
            return blocked(
                BlockedReason::Dependency,
                format!("the Go module providing `{package}`"),
                format!("download the module's dependencies {place}: `go mod download`"),
            );
        }
    }
    None
}

/// The program a shell (or `docker exec`, or the local sandbox) could not find.
fn missing_program(output: &str) -> Option<String> {
    for line in output.lines() {
        let line = line.trim();
        let name = if let Some(rest) = line.strip_suffix(": command not found") {
            rest.rsplit(": ").next()
        } else if let Some(rest) = line.strip_suffix(": not found") {
            // dash: "sh: 1: pytest: not found"
            rest.rsplit(": ").next()
        } else if let Some(rest) = line.split_once("exec: \"") {
            rest.1
                .split_once('"')
                .filter(|(_, after)| after.contains("not found"))
                .map(|(p, _)| p)
        } else if let Some(rest) = line.strip_prefix("env: ") {
            rest.strip_suffix(": No such file or directory")
                .map(|p| p.trim_matches(['\'', '‘', '’']))
        } else {
            None
        };
        if let Some(name) = name.map(|n| n.rsplit('/').next().unwrap_or(n).trim())
            && !name.is_empty()
            && !name.contains(' ')
        {
            return Some(name.to_owned());
        }
    }
    None
}

/// `ModuleNotFoundError: No module named 'requests.adapters'` (and Python 2's
/// `ImportError: No module named requests`): the top-level package.
fn python_missing_module(line: &str) -> Option<String> {
    let rest = line
        .split_once("ModuleNotFoundError: No module named ")
        .or_else(|| line.split_once("ImportError: No module named "))?
        .1;
    let name = rest.trim().trim_matches(['\'', '"']);
    let top = name.split('.').next()?.trim();
    (!top.is_empty() && top.chars().all(|c| c.is_alphanumeric() || c == '_')).then(|| top.into())
}

/// `Error: Cannot find module 'lodash'` / `Cannot find package 'x' imported from ...`: a
/// package name (never a relative or absolute path, which would be the project's own file).
fn node_missing_package(line: &str) -> Option<String> {
    let rest = line
        .split_once("Cannot find module '")
        .or_else(|| line.split_once("Cannot find package '"))?
        .1;
    let spec = rest.split('\'').next()?;
    if spec.is_empty() || spec.starts_with(['.', '/']) || spec.starts_with("node:") {
        return None;
    }
    let mut parts = spec.split('/');
    let first = parts.next()?;
    Some(if first.starts_with('@') {
        format!("{first}/{}", parts.next().unwrap_or(""))
    } else {
        first.to_owned()
    })
}

/// `no required module provides package X` / `cannot find module providing package X`.
fn go_missing_package(line: &str) -> Option<String> {
    let rest = line
        .split_once("no required module provides package ")
        .or_else(|| line.split_once("cannot find module providing package "))?
        .1;
    let pkg = rest.split([';', ' ', ':']).next()?.trim();
    (!pkg.is_empty()).then(|| pkg.to_owned())
}

/// Whether the project has a module or package of that name (top level or under `src/`).
fn project_defines(root: &Path, module: &str) -> bool {
    ["", "src"].iter().any(|base| {
        let dir = root.join(base);
        dir.join(format!("{module}.py")).is_file() || dir.join(module).is_dir()
    })
}

/// The failure the user reported is itself about this name: reproducing it is the point.
fn triage_is_about(triage: &TriageReport, name: &str) -> bool {
    let about_imports = ["ModuleNotFoundError", "ImportError", "MODULE_NOT_FOUND"]
        .iter()
        .any(|e| triage.error_type.contains(e));
    about_imports && triage.message.contains(name)
}

/// `-r requirements.txt` when the project has one, else the package itself.
fn pip_source(root: &Path, module: &str) -> String {
    if root.join("requirements.txt").is_file() {
        "-r requirements.txt".into()
    } else if root.join("pyproject.toml").is_file() || root.join("setup.py").is_file() {
        "-e .".into()
    } else {
        module.into()
    }
}

fn install_hint(program: &str) -> String {
    match program {
        "pytest" | "py.test" | "tox" | "nox" | "coverage" => {
            format!("`python3 -m pip install {program}`")
        }
        "jest" | "mocha" | "vitest" | "ava" | "tap" | "ts-node" | "tsx" => {
            format!("`npm install --save-dev {program}` in the project")
        }
        "make" => "`apt install make`".into(),
        other => format!("the package that provides `{other}`"),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use proto::messages::TestStatus;

    use super::*;

    /// A run whose output says `text` (the diagnosis reads stdout and stderr alike).
    fn run(code: i32, text: &str, outcomes: &[(&str, TestStatus)]) -> TestRun {
        crate::run::test_run(code, text, outcomes)
    }

    fn triage(error_type: &str, message: &str) -> TriageReport {
        TriageReport {
            error_type: error_type.into(),
            message: message.into(),
            ..Default::default()
        }
    }

    fn reason(b: Option<Blocked>) -> Option<(BlockedReason, String)> {
        b.map(|b| (b.reason, b.what))
    }

    #[test]
    fn a_missing_runner_or_interpreter_is_named_as_shells_say_it() {
        let dir = tempfile::tempdir().unwrap();
        let t = triage("ZeroDivisionError", "division by zero");
        let cases = [
            (
                "/usr/bin/python3: No module named pytest",
                BlockedReason::Runner,
                "pytest",
            ),
            ("sh: 1: pytest: not found", BlockedReason::Runner, "pytest"),
            (
                "bash: line 1: jest: command not found",
                BlockedReason::Runner,
                "jest",
            ),
            (
                "coval-local: python: command not found",
                BlockedReason::Interpreter,
                "python",
            ),
            (
                "OCI runtime exec failed: exec: \"go\": executable file not found in $PATH",
                BlockedReason::Interpreter,
                "go",
            ),
            (
                "env: 'node': No such file or directory",
                BlockedReason::Interpreter,
                "node",
            ),
        ];
        for (stderr, want, what) in cases {
            let got = diagnose(&run(127, stderr, &[]), &t, dir.path(), "local");
            assert_eq!(reason(got), Some((want, format!("`{what}`"))), "{stderr}");
        }
        let b = diagnose(&run(1, cases[0].0, &[]), &t, dir.path(), "docker").unwrap();
        assert!(b.hint.contains("pip install pytest") && b.hint.contains("sandbox.image"));
        assert_eq!(b.output_tail, cases[0].0);
    }

    #[test]
    fn an_uninstalled_package_blocks_but_a_project_module_is_the_bug() {
        use TestStatus::*;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inventory.py"), "").unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "requests\n").unwrap();
        let t = triage("AssertionError", "");
        let collection = "ERROR collecting tests/test_api.py\nE   ModuleNotFoundError: No module named 'requests.adapters'\nInterrupted: 1 error during collection";
        let b = diagnose(&run(2, collection, &[]), &t, dir.path(), "local").unwrap();
        assert_eq!(b.reason, BlockedReason::Dependency);
        assert!(b.what.contains("`requests`"), "{}", b.what);
        assert!(b.hint.contains("-r requirements.txt"), "{}", b.hint);
        // A module the project defines (misspelt or broken import) is for the repair.
        let own = "E   ModuleNotFoundError: No module named 'inventory'";
        assert_eq!(diagnose(&run(2, own, &[]), &t, dir.path(), "local"), None);
        // The reported failure is that very import: reproduced, not blocked.
        let about = triage("ModuleNotFoundError", "No module named 'requests'");
        assert_eq!(
            diagnose(&run(2, collection, &[]), &about, dir.path(), "local"),
            None
        );
        // Tests that pass can run: a missing package in one test is that test's failure.
        let some_pass = run(1, collection, &[("a", Passed), ("b", Failed)]);
        assert_eq!(diagnose(&some_pass, &t, dir.path(), "local"), None);
    }

    #[test]
    fn node_and_go_missing_packages_are_told_from_the_projects_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = triage("TypeError", "x is not a function");
        let lodash = "Error: Cannot find module 'lodash/fp'\nRequire stack:\n- /work/src/a.js";
        assert_eq!(
            reason(diagnose(&run(1, lodash, &[]), &t, dir.path(), "docker")),
            Some((BlockedReason::Dependency, "the npm package `lodash`".into()))
        );
        let scoped = "Error [ERR_MODULE_NOT_FOUND]: Cannot find package '@scope/util' imported from /w/a.mjs";
        assert!(
            diagnose(&run(1, scoped, &[]), &t, dir.path(), "docker")
                .unwrap()
                .what
                .contains("@scope/util")
        );
        let own = "Error: Cannot find module './lib/cart'";
        assert_eq!(diagnose(&run(1, own, &[]), &t, dir.path(), "docker"), None);
        let go =
            "main.go:4:2: no required module provides package github.com/google/uuid; to add it:";
        assert_eq!(
            reason(diagnose(&run(1, go, &[]), &t, dir.path(), "docker")),
            Some((
                BlockedReason::Dependency,
                "the Go module providing `github.com/google/uuid`".into()
            ))
        );
    }

    #[test]
    fn ordinary_failures_timeouts_and_passing_runs_are_not_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let t = triage("KeyError", "'sku'");
        assert_eq!(
            diagnose(&run(1, "E   KeyError: 'sku'", &[]), &t, dir.path(), "local"),
            None
        );
        assert_eq!(
            diagnose(
                &run(0, "sh: 1: pytest: not found", &[]),
                &t,
                dir.path(),
                "local"
            ),
            None
        );
        let mut slow = run(137, "sh: 1: pytest: not found", &[]);
        slow.result.timed_out = true;
        assert_eq!(diagnose(&slow, &t, dir.path(), "local"), None);
    }
}
