//! A user's own test command, read as the tool it runs. `--test-cmd "python -m pytest -q"` is
//! not an opaque shell line: when it provably runs pytest (or `go test`) the way a detected
//! command does, it becomes that command, with the same per-test report and the same warm
//! server; when it wraps pytest in something else (`make test`, tox, a script), it still runs
//! through the shell and pytest is asked for its JUnit report through `PYTEST_ADDOPTS`.
//! Narrow commands (one test id, as CI reruns and bug reports give) are the target, not the
//! proof: [`widen`] names the commands that run the tests around them.

use std::path::Path;

use vocab::Language;

use crate::project::{JEST_REPORT, JUNIT_REPORT, ProjectKind, Runner};

/// What coval adds to a pytest run for per-test outcomes, whatever the user's flags say.
fn pytest_report_flags(args: &[String]) -> Vec<String> {
    let mut flags = vec!["-rA".to_owned()];
    // The cache plugin writes `.pytest_cache` into the project; its options need it.
    let uses_cache = args.iter().any(|a| {
        [
            "--lf",
            "--last-failed",
            "--ff",
            "--failed-first",
            "--nf",
            "--new-first",
            "--sw",
            "--stepwise",
            "--cache-show",
            "--cache-clear",
        ]
        .iter()
        .any(|o| a == o || a.starts_with(&format!("{o}=")))
    });
    if !uses_cache {
        flags.extend(["-p".to_owned(), "no:cacheprovider".to_owned()]);
    }
    flags.extend([
        "-o".to_owned(),
        "junit_family=xunit1".to_owned(),
        format!("--junitxml={JUNIT_REPORT}"),
    ]);
    flags
}

/// The words of a shell line that the shell would pass unchanged: words separated by blanks,
/// with single or double quotes that hold no expansion. `None` for anything the shell would
/// interpret (operators, redirections, variables, globs, escapes, `cd x &&`).
pub fn split_plain(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' | '\\' | '!' => return None,
                        c => w.push(c),
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || "_-./:=,+@%^".contains(c) => {
                word.get_or_insert_with(String::new).push(c);
            }
            _ => return None,
        }
    }
    words.extend(word);
    (!words.is_empty()).then_some(words)
}

/// The project kind for a user's test command `cmd` in `dir`; `detected` is what the project's
/// files say (for its language and framework). `origin` says how the command runs.
pub fn user_kind(dir: &Path, cmd: &str, detected: Option<ProjectKind>) -> ProjectKind {
    let (language, framework) = detected
        .as_ref()
        .map(|k| (k.language, k.framework.clone()))
        .unwrap_or((Language::Python, String::new()));
    let base = ProjectKind {
        language,
        framework,
        test_cmd: vec![],
        runner: Runner::Custom,
        reports: vec![],
        env: vec![],
        origin: String::new(),
    };
    if let Some(k) = split_plain(cmd)
        .map(unwrap_shell)
        .and_then(|words| form(dir, &words, detected.as_ref(), &base))
        .or_else(|| cd_form(dir, cmd, &base))
    {
        return ProjectKind {
            origin: format!("`{cmd}` {}", k.origin),
            ..k
        };
    }
    // Through the shell, as written. A pytest anywhere inside still reports per test.
    let runner = runner_of_command(cmd);
    let mut k = ProjectKind {
        test_cmd: vec!["sh".into(), "-c".into(), cmd.to_owned()],
        runner,
        origin: format!("`{cmd}` runs through the shell, as fresh processes"),
        ..base
    };
    if k.language == Language::Python || runner == Runner::Pytest {
        let flags = pytest_report_flags(&[]).join(" ");
        k.env = vec![("PYTEST_ADDOPTS".into(), flags)];
        k.reports = vec![JUNIT_REPORT.into()];
        k.origin
            .push_str("; pytest reports each test through PYTEST_ADDOPTS");
    }
    k
}

/// The command a plain command line `words` runs, read as the tool it is, or `None`.
fn form(
    dir: &Path,
    words: &[String],
    detected: Option<&ProjectKind>,
    base: &ProjectKind,
) -> Option<ProjectKind> {
    pytest_form(dir, words, base)
        .or_else(|| go_form(words, base))
        .or_else(|| node_test_form(words, base))
        .or_else(|| js_runner_form(words, base))
        .or_else(|| npm_form(words, detected, base))
}

/// `cd DIR && LINE` (also inside `sh -c`): LINE read as [`form`] reads it, in DIR (a plain
/// subdirectory of the project), run through the shell line the warm server recognises
/// ([`crate::warm::CD_EXEC`]), its reports under DIR.
fn cd_form(dir: &Path, cmd: &str, base: &ProjectKind) -> Option<ProjectKind> {
    let line = match split_plain(cmd).as_deref() {
        Some([sh, c, line]) if (sh == "sh" || sh == "bash") && c == "-c" => line.clone(),
        _ => cmd.to_owned(),
    };
    let (sub, rest) = line.trim().strip_prefix("cd ")?.split_once("&&")?;
    let sub = crate::warm::plain_subdir(sub.trim())?;
    let inner = dir.join(sub);
    if !inner.is_dir() {
        return None;
    }
    let detected = crate::detect_project(&inner);
    let k = form(&inner, &split_plain(rest)?, detected.as_ref(), base)?;
    let mut argv = vec!["sh".into(), "-c".into(), crate::warm::cd_exec_line(sub)];
    argv.extend(k.test_cmd.iter().cloned());
    Some(ProjectKind {
        test_cmd: argv,
        reports: k.reports.iter().map(|r| format!("{sub}/{r}")).collect(),
        origin: format!("{} in `{sub}`", k.origin),
        ..k
    })
}

/// `sh -c 'LINE'` (or bash) around a plain line: the line's words.
fn unwrap_shell(words: Vec<String>) -> Vec<String> {
    match &words[..] {
        [sh, c, line] if (sh == "sh" || sh == "bash") && c == "-c" => {
            split_plain(line).unwrap_or(words)
        }
        _ => words,
    }
}

fn is_python(word: &str) -> bool {
    let name = word.rsplit('/').next().unwrap_or(word);
    name == "python"
        || name == "python3"
        || name
            .strip_prefix("python3.")
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

/// `python -m pytest ARGS` runs as written with the report flags added: the same process a
/// shell would start. `pytest ARGS` differs from it in one thing, the current directory on
/// `sys.path`; where pytest puts the project's root there itself, they are the same, and it
/// runs as `python3 -m pytest ARGS` (warm-servable); otherwise as `pytest ARGS`, fresh.
fn pytest_form(dir: &Path, words: &[String], base: &ProjectKind) -> Option<ProjectKind> {
    let (argv_head, args, how): (Vec<String>, &[String], String) = match words {
        [py, m, pytest, args @ ..] if is_python(py) && m == "-m" && pytest == "pytest" => (
            vec![py.clone(), "-m".into(), "pytest".into()],
            args,
            "runs as written".into(),
        ),
        [pytest, args @ ..] if pytest == "pytest" || pytest == "py.test" => {
            match root_on_sys_path(dir) {
                Some(why) => (
                    vec!["python3".into(), "-m".into(), "pytest".into()],
                    args,
                    format!("runs as `python3 -m pytest`, the same run here ({why})"),
                ),
                None => (
                    vec![pytest.clone()],
                    args,
                    "runs as written (pytest does not put the project root on sys.path here, so `python -m pytest` would differ), as fresh processes".into(),
                ),
            }
        }
        _ => return None,
    };
    let mut argv = argv_head;
    argv.extend(args.iter().cloned());
    argv.extend(pytest_report_flags(args));
    Some(ProjectKind {
        language: Language::Python,
        test_cmd: argv,
        runner: Runner::Pytest,
        reports: vec![JUNIT_REPORT.into()],
        origin: how,
        ..base.clone()
    })
}

/// Why pytest itself puts the project root on `sys.path` in its default import mode (a
/// `conftest.py` or a test module at the root, or a tests package right under it, or
/// `pythonpath = .`), so that `pytest` and `python -m pytest` import the same modules; `None`
/// when that cannot be shown.
fn root_on_sys_path(dir: &Path) -> Option<&'static str> {
    let text = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let config = ["pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini"]
        .iter()
        .map(|f| text(f))
        .collect::<String>();
    if config.contains("importlib") || dir.join("__init__.py").exists() {
        return None;
    }
    if dir.join("conftest.py").is_file() {
        return Some("a conftest.py at the root");
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    if names
        .iter()
        .any(|n| n.ends_with(".py") && (n.starts_with("test_") || n.ends_with("_test.py")))
    {
        return Some("test modules at the root");
    }
    if ["tests", "test"]
        .iter()
        .any(|t| dir.join(t).join("__init__.py").is_file())
    {
        return Some("a tests package under the root");
    }
    if config.lines().any(|l| {
        let l = l.trim();
        l.starts_with("pythonpath")
            && l.split(['=', ' ', '"', '\'', '[', ']', ','])
                .any(|w| w == ".")
    }) {
        return Some("pythonpath = .");
    }
    None
}

/// `go test ARGS` with `-json` added (the same run, reported per test).
fn go_form(words: &[String], base: &ProjectKind) -> Option<ProjectKind> {
    let [go, test, args @ ..] = words else {
        return None;
    };
    if go != "go" || test != "test" {
        return None;
    }
    let mut argv = vec!["go".to_owned(), "test".to_owned()];
    if !args.iter().any(|a| a == "-json") {
        argv.push("-json".into());
    }
    argv.extend(args.iter().cloned());
    Some(ProjectKind {
        language: Language::Go,
        test_cmd: argv,
        runner: Runner::GoTest,
        origin: "runs with -json added".into(),
        ..base.clone()
    })
}

/// `node --test ARGS` with the TAP reporter asked for (its default depends on a terminal).
fn node_test_form(words: &[String], base: &ProjectKind) -> Option<ProjectKind> {
    let [node, test, args @ ..] = words else {
        return None;
    };
    if node != "node" || test != "--test" {
        return None;
    }
    if args.iter().any(|a| a.starts_with("--test-reporter")) {
        return None;
    }
    let mut argv = vec![
        "node".to_owned(),
        "--test".into(),
        "--test-reporter=tap".into(),
    ];
    argv.extend(args.iter().cloned());
    Some(ProjectKind {
        language: if base.language == Language::TypeScript {
            Language::TypeScript
        } else {
            Language::JavaScript
        },
        test_cmd: argv,
        runner: Runner::NodeTest,
        origin: "runs with the TAP reporter".into(),
        ..base.clone()
    })
}

/// `jest ARGS` or `vitest ARGS` (bare, `npx`, or a `node_modules/.bin` path) with the runner's
/// own per-test report asked for, run as `npm test` would (the project's bins first on PATH).
fn js_runner_form(words: &[String], base: &ProjectKind) -> Option<ProjectKind> {
    let (argv, reports) = js_reporter(words)?;
    Some(ProjectKind {
        language: if base.language == Language::TypeScript {
            Language::TypeScript
        } else {
            Language::JavaScript
        },
        test_cmd: crate::project::node_test_cmd(&shell_words(&argv)),
        runner: Runner::Npm,
        reports,
        origin: "runs with the runner's JSON or JUnit report added".into(),
        ..base.clone()
    })
}

/// The words of a jest or vitest run with the runner's per-test report added, and the report
/// files it writes: jest's `--json --outputFile` (its own format), vitest's JUnit reporter next
/// to its default one, in a single run (`vitest run`: never watch mode). `None` for other
/// commands, and when the user already chose where the runner writes (`--outputFile`, `--json`).
pub(crate) fn js_reporter(words: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let at = usize::from(words.first().is_some_and(|w| w == "npx"));
    let tool = words.get(at)?;
    let name = tool.rsplit('/').next().unwrap_or(tool);
    let rest = &words[at + 1..];
    if rest
        .iter()
        .any(|a| a.starts_with("--outputFile") || a == "--json" || a == "--watch")
    {
        return None;
    }
    let mut argv = words[..=at].to_vec();
    match name {
        "jest" => {
            argv.extend(
                ["--ci", "--json", &format!("--outputFile={JEST_REPORT}")].map(String::from),
            );
            argv.extend(rest.iter().cloned());
            Some((argv, vec![JEST_REPORT.to_owned()]))
        }
        "vitest" => {
            // `vitest` alone watches on a terminal; `vitest run` runs once everywhere.
            let args = match rest.first().map(String::as_str) {
                Some("run") => &rest[1..],
                Some("watch" | "dev" | "related" | "bench" | "init" | "list") => return None,
                _ => rest,
            };
            argv.push("run".into());
            if !args.iter().any(|a| a.starts_with("--reporter")) {
                argv.push("--reporter=default".into());
            }
            argv.extend(
                [
                    "--reporter=junit".to_owned(),
                    format!("--outputFile.junit={JUNIT_REPORT}"),
                ]
                .into_iter()
                .chain(args.iter().cloned()),
            );
            Some((argv, vec![JUNIT_REPORT.to_owned()]))
        }
        _ => None,
    }
}

/// A command line a shell reads back as the same words.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `npm test` (`npm t`, `npm run test`) is the package's test script, which the detected
/// command runs the way npm would.
fn npm_form(
    words: &[String],
    detected: Option<&ProjectKind>,
    base: &ProjectKind,
) -> Option<ProjectKind> {
    let is_npm_test = matches!(words, [npm, t] if npm == "npm" && (t == "test" || t == "t"))
        || matches!(words, [npm, run, t] if npm == "npm" && run == "run" && t == "test");
    let d =
        detected.filter(|d| is_npm_test && matches!(d.runner, Runner::NodeTest | Runner::Npm))?;
    Some(ProjectKind {
        framework: base.framework.clone(),
        origin: "runs the package's test script as npm would".into(),
        ..d.clone()
    })
}

pub(crate) fn runner_of_command(cmd: &str) -> Runner {
    let has = |s: &str| cmd.contains(s);
    if has("pytest") {
        Runner::Pytest
    } else if has("unittest") {
        Runner::Unittest
    } else if has("node --test") {
        Runner::NodeTest
    } else if has("go test") {
        Runner::GoTest
    } else if has("cargo test") {
        Runner::Cargo
    } else if has("npm test") || has("npm run test") || has("jest") || has("mocha") {
        Runner::Npm
    } else if has("mvn") {
        Runner::Maven
    } else if has("gradle") {
        Runner::Gradle
    } else if has("rspec") {
        Runner::Rspec
    } else if has("phpunit") {
        Runner::Phpunit
    } else {
        Runner::Custom
    }
}

/// pytest options whose value is the next word.
const PYTEST_VALUE_OPTIONS: &[&str] = &[
    "-k",
    "-m",
    "-o",
    "-p",
    "-c",
    "-W",
    "--rootdir",
    "--basetemp",
    "--deselect",
    "--ignore",
    "--ignore-glob",
    "--confcutdir",
    "--junitxml",
    "--junit-xml",
    "--tb",
    "--maxfail",
    "--override-ini",
    "--pyargs",
    "--durations",
    "--log-level",
    "--import-mode",
];

/// The commands that run the tests around a narrow pytest command, narrowest first: its test
/// ids' files (when it names test ids), then the whole suite (its arguments without test paths
/// and selections). Empty when the command is not narrow (or not a pytest run coval reads).
pub fn widen(kind: &ProjectKind) -> Vec<Vec<String>> {
    let Some(at) = pytest_args_start(&kind.test_cmd) else {
        return vec![];
    };
    let (head, args) = kind.test_cmd.split_at(at);
    let mut kept = vec![]; // options, with their values
    let mut paths = vec![]; // positional test paths and ids
    let mut selections = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let takes_value = PYTEST_VALUE_OPTIONS.contains(&a.as_str());
        if a == "-k" || a == "-m" || a.starts_with("--deselect") || a.starts_with("-k=") {
            selections = true;
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        if a.starts_with('-') {
            kept.push(a.clone());
            if takes_value && let Some(v) = args.get(i + 1) {
                kept.push(v.clone());
                i += 1;
            }
        } else {
            paths.push(a.clone());
        }
        i += 1;
    }
    let with = |paths: &[String]| {
        let mut c = head.to_vec();
        c.extend(kept.iter().cloned());
        c.extend(paths.iter().cloned());
        c
    };
    let mut levels = vec![];
    let files: Vec<String> = {
        let mut f: Vec<String> = paths
            .iter()
            .map(|p| p.split("::").next().unwrap_or(p).to_owned())
            .collect();
        f.dedup();
        f
    };
    if paths.iter().any(|p| p.contains("::")) || (selections && !paths.is_empty()) {
        levels.push(with(&files));
    }
    if !paths.is_empty() || selections {
        levels.push(with(&[]));
    }
    levels.dedup();
    levels.retain(|l| *l != kind.test_cmd);
    levels
}

/// Where pytest's own arguments start in `argv` (`python -m pytest ...` or `pytest ...`).
fn pytest_args_start(argv: &[String]) -> Option<usize> {
    match argv {
        [py, m, pytest, ..] if is_python(py) && m == "-m" && pytest == "pytest" => Some(3),
        [pytest, ..] if pytest == "pytest" || pytest == "py.test" => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|w| (*w).to_owned()).collect()
    }

    fn project(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        d
    }

    #[test]
    fn plain_lines_split_as_the_shell_would_and_others_do_not() {
        assert_eq!(
            split_plain("python3 -m pytest -q 'tests/test a.py::t'"),
            Some(s(&["python3", "-m", "pytest", "-q", "tests/test a.py::t"]))
        );
        assert_eq!(
            split_plain(" pytest  -k \"mean and not slow\" "),
            Some(s(&["pytest", "-k", "mean and not slow"]))
        );
        for shell in [
            "cd sub && pytest",
            "pytest; echo",
            "pytest > out",
            "pytest $ARGS",
            "pytest \"$X\"",
            "pytest tests/*.py",
            "pytest 'unclosed",
            "pytest \\-q",
            "",
        ] {
            assert_eq!(split_plain(shell), None, "{shell}");
        }
    }

    #[test]
    fn pytest_commands_become_the_command_the_warm_server_serves() {
        let root = project(&["conftest.py", "app/calc.py"]);
        let flags = pytest_report_flags(&[]);
        for cmd in [
            "python3 -m pytest -q",
            "sh -c 'python3 -m pytest -q'",
            "pytest -q",
            "bash -c \"pytest -q\"",
        ] {
            let k = user_kind(root.path(), cmd, None);
            let mut want = s(&["python3", "-m", "pytest", "-q"]);
            want.extend(flags.iter().cloned());
            assert_eq!(k.test_cmd, want, "{cmd}");
            assert_eq!(k.runner, Runner::Pytest);
            assert_eq!(k.reports, [JUNIT_REPORT]);
            assert!(crate::is_pytest_module_run(&k.test_cmd), "{cmd}");
        }
        // `python -m pytest` keeps its interpreter.
        let k = user_kind(root.path(), "python -m pytest -v", None);
        assert_eq!(k.test_cmd[..4], s(&["python", "-m", "pytest", "-v"]));
        // Without anything that puts the root on sys.path, bare pytest stays itself.
        let bare = project(&["src/app.py", "tests/test_app.py"]);
        let k = user_kind(bare.path(), "pytest -q", None);
        assert_eq!(k.test_cmd[..2], s(&["pytest", "-q"]));
        assert!(k.origin.contains("fresh"), "{}", k.origin);
        // A tests package, a root test module, or pythonpath = . each put it there.
        for files in [&["tests/__init__.py"][..], &["test_gcd.py"]] {
            let d = project(files);
            assert_eq!(user_kind(d.path(), "pytest", None).test_cmd[0], "python3");
        }
        // The cache options keep the cache plugin.
        let k = user_kind(root.path(), "pytest --lf", None);
        assert!(!k.test_cmd.contains(&"no:cacheprovider".to_owned()));
    }

    #[test]
    fn jest_and_vitest_runs_ask_the_runner_for_its_report() {
        let root = project(&["package.json"]);
        let script = |k: &ProjectKind| k.test_cmd[2].clone();
        for (cmd, want, report) in [
            (
                "npx jest tests/cart.test.js",
                "npx jest --ci --json --outputFile=.coval-jest.json tests/cart.test.js",
                JEST_REPORT,
            ),
            (
                "jest -t 'adds two'",
                "jest --ci --json --outputFile=.coval-jest.json -t 'adds two'",
                JEST_REPORT,
            ),
            (
                "sh -c 'node_modules/.bin/vitest run src'",
                "node_modules/.bin/vitest run --reporter=default --reporter=junit \
                 --outputFile.junit=.coval-report/junit.xml src",
                JUNIT_REPORT,
            ),
            (
                "vitest --reporter=verbose",
                "vitest run --reporter=junit --outputFile.junit=.coval-report/junit.xml \
                 --reporter=verbose",
                JUNIT_REPORT,
            ),
        ] {
            let k = user_kind(root.path(), cmd, None);
            assert_eq!(k.runner, Runner::Npm, "{cmd}");
            assert_eq!(k.reports, [report], "{cmd}");
            assert!(script(&k).ends_with(want), "{cmd}: {}", script(&k));
            assert!(script(&k).starts_with("PATH=\"$PWD/node_modules/.bin:$PATH\""));
        }
        // Where the user already chose the report, or asked to watch, it runs as written.
        for cmd in [
            "jest --json --outputFile=out.json",
            "vitest watch",
            "jest --watch",
        ] {
            let k = crate::detect_project_with(root.path(), Some(cmd)).unwrap();
            assert_eq!(k.test_cmd[..2], s(&["sh", "-c"]), "{cmd}");
            assert_eq!(k.language, Language::JavaScript, "{cmd}");
            assert!(k.reports.is_empty(), "{cmd}");
        }
        // The same for a package's test script, which `npm test` runs.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("package.json"),
            r#"{"scripts":{"test":"jest --silent"}}"#,
        )
        .unwrap();
        let k = crate::detect_project_with(d.path(), Some("npm test")).unwrap();
        assert_eq!(k.reports, [JEST_REPORT]);
        assert!(script(&k).ends_with("jest --ci --json --outputFile=.coval-jest.json --silent"));
    }

    #[test]
    fn a_command_in_a_subdirectory_is_still_the_served_one() {
        let root = project(&[
            "backend/conftest.py",
            "backend/app/calc.py",
            "web/package.json",
        ]);
        for cmd in [
            "cd backend && python3 -m pytest -q",
            "cd backend/ && pytest -q",
            "sh -c 'cd backend && python3 -m pytest -q'",
        ] {
            let k = user_kind(root.path(), cmd, None);
            assert_eq!(
                k.test_cmd[..5],
                s(&[
                    "sh",
                    "-c",
                    &crate::warm::cd_exec_line("backend"),
                    "python3",
                    "-m"
                ]),
                "{cmd}"
            );
            assert_eq!(k.runner, Runner::Pytest);
            assert_eq!(k.reports, [format!("backend/{JUNIT_REPORT}")]);
            assert!(crate::is_pytest_module_run(&k.test_cmd), "{cmd}");
            assert!(k.origin.contains("in `backend`"), "{}", k.origin);
        }
        // The package's own script, in its directory.
        std::fs::write(
            root.path().join("web/package.json"),
            r#"{"scripts":{"test":"jest"}}"#,
        )
        .unwrap();
        let k = user_kind(root.path(), "cd web && npm test", None);
        assert_eq!(k.reports, [format!("web/{JEST_REPORT}")]);
        assert!(
            k.test_cmd[3..].join(" ").contains("jest --ci --json"),
            "{:?}",
            k.test_cmd
        );
        // A directory that is not there, or leaves the project, runs as written.
        for cmd in [
            "cd nowhere && pytest -q",
            "cd .. && pytest -q",
            "cd /tmp && pytest",
        ] {
            let k = user_kind(root.path(), cmd, None);
            assert_eq!(k.test_cmd, s(&["sh", "-c", cmd]), "{cmd}");
            assert!(!crate::is_pytest_module_run(&k.test_cmd), "{cmd}");
        }
    }

    #[test]
    fn wrapped_commands_run_through_the_shell_and_still_report_each_test() {
        let root = project(&["conftest.py"]);
        for cmd in ["make test", "cd sub && pytest -q", "tox -e py311"] {
            let k = user_kind(root.path(), cmd, None);
            assert_eq!(k.test_cmd, s(&["sh", "-c", cmd]));
            assert_eq!(k.reports, [JUNIT_REPORT]);
            let addopts = &k.env.iter().find(|(n, _)| n == "PYTEST_ADDOPTS").unwrap().1;
            assert!(
                addopts.contains("--junitxml=.coval-report/junit.xml"),
                "{addopts}"
            );
        }
        let node = user_kind(root.path(), "node --test test/", None);
        assert_eq!(
            node.test_cmd,
            s(&["node", "--test", "--test-reporter=tap", "test/"])
        );
        assert_eq!(node.runner, Runner::NodeTest);
        let go = user_kind(root.path(), "go test ./...", None);
        assert_eq!(go.test_cmd, s(&["go", "test", "-json", "./..."]));
        assert_eq!(go.runner, Runner::GoTest);
    }

    #[test]
    fn a_narrow_command_widens_to_its_files_then_the_suite() {
        let root = project(&["conftest.py"]);
        let k = user_kind(
            root.path(),
            "python3 -m pytest -q tests/test_sched.py::test_next_run -x",
            None,
        );
        let levels = widen(&k);
        assert_eq!(levels.len(), 2, "{levels:?}");
        assert!(levels[0].contains(&"tests/test_sched.py".to_owned()));
        assert!(!levels[0].iter().any(|a| a.contains("::")));
        assert!(!levels[1].iter().any(|a| a.starts_with("tests/")));
        // Options and their values stay; selections go in the suite.
        let k = user_kind(
            root.path(),
            "pytest -p no:warnings -k mean tests/test_calc.py",
            None,
        );
        let levels = widen(&k);
        assert_eq!(levels.len(), 2, "{levels:?}");
        assert!(levels[1].windows(2).any(|w| w == ["-p", "no:warnings"]));
        assert!(!levels[1].contains(&"-k".to_owned()));
        // A whole-suite command is not narrow.
        assert!(widen(&user_kind(root.path(), "pytest -q", None)).is_empty());
        assert!(widen(&user_kind(root.path(), "make test", None)).is_empty());
    }
}
