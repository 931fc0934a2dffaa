//! The `coval` binary as a user runs it: flags, help, version, configuration errors and
//! their exit codes.

use std::process::{Command, Output};

fn coval(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coval"));
    c.current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run coval")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = coval(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("coval {}", env!("CARGO_PKG_VERSION"))
    );
    let out = coval(dir.path(), &["--help"], &[]);
    let help = text(&out.stdout);
    for flag in [
        "--workspace",
        "--config",
        "--verbose",
        "--log-format",
        "Exit codes",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    // No subcommand: help on stderr, usage exit code.
    let out = coval(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = coval(dir.path(), &["repair-all-the-things"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = coval(dir.path(), &["--log-format", "xml", "config"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn effective_configuration_shows_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("coval.config.yaml"),
        "project:\n  name: shop\n",
    )
    .unwrap();
    let out = coval(
        dir.path(),
        &["config"],
        &[("COVAL_DOCKER__BASE_PORT", "9100")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("settings.project.name = \"shop\""), "{s}");
    assert!(s.contains("settings.docker.base_port = 9100"), "{s}");
    assert!(
        s.contains("llm.models.qwen.model_name = \"qwen2.5-coder:7b\""),
        "{s}"
    );
    let out = coval(dir.path(), &["config", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["settings"]["project"]["name"], "shop");
}

#[test]
fn configuration_errors_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "global:\n  timeuot: 5\n").unwrap();
    let out = coval(
        dir.path(),
        &["--config", f.to_str().unwrap(), "config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("global.timeuot") && err.contains("timeout"),
        "{err}"
    );
    let out = coval(
        dir.path(),
        &["--config", "/nonexistent/coval.yaml", "config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/coval.yaml"));
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/decide")
}

/// Every file under `dir` with its contents, to prove nothing changed.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `--analyze --json`; `env` adds settings (coverage runs only where a test asks for it).
fn analyze(project: &str, log: &str) -> serde_json::Value {
    analyze_with(project, log, &[("COVAL_TRIAGE__COVERAGE", "false")])
}

fn analyze_with(project: &str, log: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let work = tempfile::tempdir().unwrap();
    let src = fixtures().join(project);
    let before = snapshot(&src);
    let out = coval(
        work.path(),
        &[
            "repair",
            "--analyze",
            "--json",
            "--engine",
            "search",
            "-e",
            fixtures().join(log).to_str().unwrap(),
            "-s",
            src.to_str().unwrap(),
        ],
        env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(snapshot(&src), before, "--analyze changed the project");
    assert!(
        !work.path().join(".coval").exists(),
        "--analyze created a workspace"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn analyze_picks_repair_for_a_small_tested_project_with_a_precise_trace() {
    let v = analyze("small_tested", "small_tested.log");
    assert_eq!(v["decision"]["verdict"], "repair", "{v:#}");
    assert_eq!(v["triage"]["category"], "runtime");
    let top = &v["triage"]["suspects"][0];
    assert_eq!(top["file"], "stats/summary.py", "{v:#}");
    assert_eq!(top["line"], 4, "the definition of `mean`: {v:#}");
    let tests: Vec<&str> = v["triage"]["failing_tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tests.iter().any(|t| t.contains("test_mean")), "{tests:?}");
    let (c_fix, c_new) = (
        v["decision"]["c_fix"].as_f64().unwrap(),
        v["decision"]["c_new"].as_f64().unwrap(),
    );
    assert!(c_fix <= 1.5 * c_new);
    let p = v["decision"]["p_success"].as_f64().unwrap();
    assert!(p > 0.0 && p < 1.0);
    for k in ["D", "T", "K", "S"] {
        let x = v["metrics"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k} = {x}");
    }
}

#[test]
fn analyze_picks_rebuild_for_a_large_untested_tangled_module_with_a_vague_error() {
    let v = analyze("tangled", "tangled.log");
    // The cost model recommends a rebuild; with the search engine (which cannot rebuild) the
    // repair goes on, and the decision says the cost model disagreed.
    assert_eq!(v["decision"]["verdict"], "repair", "{v:#}");
    assert_eq!(
        v["decision"]["overruled"], "the search engine cannot rebuild",
        "{v:#}"
    );
    let reasons = v["decision"]["reasons"].to_string();
    assert!(reasons.contains("recommends a rebuild"), "{v:#}");
    assert!(v["metrics"]["D"].as_f64().unwrap() > 0.4, "{v:#}");
    assert_eq!(v["metrics"]["T"].as_f64().unwrap(), 0.0);
    assert!(v["metrics"]["module_lines"].as_u64().unwrap() > 1000);
}

#[test]
fn analyze_prints_the_decision_in_plain_words() {
    let work = tempfile::tempdir().unwrap();
    let out = coval(
        work.path(),
        &[
            "repair",
            "--analyze",
            "--engine",
            "search",
            "-e",
            fixtures().join("small_tested.log").to_str().unwrap(),
            "-s",
            fixtures().join("small_tested").to_str().unwrap(),
        ],
        &[("COVAL_TRIAGE__COVERAGE", "false")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "verdict   repair",
        "stats/summary.py:4",
        "C_fix",
        "C_new",
        "# Decision: repair",
        "Technical debt D",
        "estimated",
    ] {
        assert!(s.contains(needle), "missing `{needle}` in:\n{s}");
    }
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let src = fixtures().join("small_tested");
    let src = src.to_str().unwrap();
    std::fs::write(w.join("empty.log"), "").unwrap();
    std::fs::write(w.join("blank.log"), "  \n\n ").unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(w.join("garbage.log"), garbage).unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["repair", "--analyze", "-e", "missing.log", "-s", src],
            "missing.log",
        ),
        (
            &["repair", "--analyze", "-e", "empty.log", "-s", src],
            "empty",
        ),
        (
            &["repair", "--analyze", "-e", "blank.log", "-s", src],
            "empty",
        ),
        (
            &["repair", "--analyze", "-e", "garbage.log", "-s", src],
            "garbage.log",
        ),
        (
            &[
                "repair",
                "--analyze",
                "-e",
                "empty.log",
                "-s",
                "/nonexistent/project",
            ],
            "empty",
        ),
    ];
    for (args, needle) in cases {
        let out = coval(w, args, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    std::fs::write(
        w.join("real.log"),
        std::fs::read(fixtures().join("small_tested.log")).unwrap(),
    )
    .unwrap();
    let out = coval(
        w,
        &[
            "repair",
            "--analyze",
            "-e",
            "real.log",
            "-s",
            "/nonexistent/project",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/project"),
        "{}",
        text(&out.stderr)
    );
    let out = coval(
        w,
        &[
            "repair",
            "--analyze",
            "-e",
            "real.log",
            "-s",
            src,
            "--model",
            "gpt-9",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("qwen"));
}

// ---- end-to-end repairs of the example project -------------------------------------------

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python and Node base images, built once per test process (the script skips an existing image).
fn python_image() {
    static BUILT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *BUILT.get_or_init(|| {
        Command::new(repo().join("scripts/build-base-images.sh"))
            .args(["python", "node"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(ok, "scripts/build-base-images.sh python node failed");
}

/// A fresh copy of examples/inventory and a workspace beside it. The local sandbox runs the
/// host's /usr/bin/python3, which needs Debian's pytest.
fn example() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    coval_tests::ensure_host_pytest().expect("pytest for the host's python3");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("inventory");
    let st = Command::new("cp")
        .arg("-a")
        .arg(repo().join("examples/inventory"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let ws = t.path().join("ws");
    (t, src, ws)
}

fn repair(
    src: &std::path::Path,
    ws: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let log = src.join("error.log");
    let mut args = vec![
        "--workspace",
        ws.to_str().unwrap(),
        "repair",
        "-e",
        log.to_str().unwrap(),
        "-s",
        src.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    // No model server is reachable here: keep `auto` from finding one by accident.
    env.push(("COVAL_LLM_URL", "http://127.0.0.1:9"));
    coval(src.parent().unwrap(), &args, &env)
}

fn fixed_line(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("inventory/pricing.py"))
        .unwrap()
        .lines()
        .nth(11)
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn repairs_the_example_in_the_docker_sandbox() {
    python_image();
    let (_t, src, ws) = example();
    let before = snapshot(&src);
    let out = repair(
        &src,
        &ws,
        &["--json"],
        &[("COVAL_SANDBOX__BACKEND", "docker")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "fixed", "{v:#}");
    assert_eq!(v["mre"]["sandbox"], "docker");
    assert_eq!(v["mre"]["reproduced"], true);
    assert_eq!(
        snapshot(&src),
        before,
        "the source tree changed without --apply"
    );
    // The patch applies with git to the untouched source.
    let dir = ws
        .join(v["new_iteration"].as_str().map(|_| "repairs").unwrap())
        .join(format!("repair-{}", v["repair_id"].as_str().unwrap()));
    let st = Command::new("git")
        .args(["apply", "--check"])
        .arg(dir.join("final.patch"))
        .current_dir(&src)
        .status()
        .unwrap();
    assert!(st.success(), "git apply --check refused final.patch");
    let report = std::fs::read_to_string(dir.join("repair_report.md")).unwrap();
    for needle in [
        "**Outcome: fixed**",
        "inventory/pricing.py",
        "| `tests/test_pricing.py::test_discount_starts_at_ten_units` | failed | passed |",
        "| `tests/test_stock.py::test_cannot_oversell` | passed | passed |",
        "## Regression risk",
    ] {
        assert!(
            report.contains(needle),
            "report lacks `{needle}`:\n{report}"
        );
    }
    assert!(
        dir.join("decision.md").exists()
            && dir.join("report.json").exists()
            && dir.join("mre/Dockerfile").exists()
    );
    // The new iteration holds the repaired project, its parent the snapshot of the source.
    let it = v["new_iteration"].as_str().unwrap();
    assert_eq!(
        fixed_line(&ws.join("iterations").join(it)),
        "if quantity >= DISCOUNT_FROM:"
    );
}

#[test]
fn repairs_the_example_in_the_local_sandbox_and_applies_it() {
    let (_t, src, ws) = example();
    let out = repair(
        &src,
        &ws,
        &["--apply"],
        &[("COVAL_SANDBOX__BACKEND", "local")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let so = text(&out.stdout);
    assert!(so.starts_with("fixed:"), "{so}");
    assert!(
        text(&out.stderr).contains("local"),
        "the local sandbox should say so: {}",
        text(&out.stderr)
    );
    assert_eq!(fixed_line(&src), "if quantity >= DISCOUNT_FROM:");
    // The applied tree passes its tests (run in the sandbox: it is code a search engine wrote).
    let sb = sandbox::LocalSandbox::new();
    let spec = sandbox::RunSpec::new(
        &src,
        vec![
            "python3".into(),
            "-m".into(),
            "pytest".into(),
            "-q".into(),
            "-p".into(),
            "no:cacheprovider".into(),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(sandbox::Sandbox::run(&sb, &spec)).unwrap();
    assert!(
        r.success(),
        "tests fail after --apply: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("7 passed"), "{}", r.stdout);
}

/// Where a user stands: a git repository, `cd` into it, the default workspace (`.coval`
/// inside the project), run twice. The snapshot leaves out `.git`, the workspace itself and a
/// symlink back up the tree, no partial tree is left anywhere, and `--apply` changes only the
/// file the patch touches.
#[test]
fn repairs_from_inside_the_project_with_the_default_workspace() {
    let (_t, src, _ws) = example();
    let git = |args: &[&str]| git(&src, args);
    // A link back up the tree would make pytest collect the project again through it.
    std::os::unix::fs::symlink("..", src.join("up")).unwrap();
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "broken"]);
    let env = [
        ("COVAL_SANDBOX__BACKEND", "local"),
        ("COVAL_LLM_URL", "http://127.0.0.1:9"),
    ];
    for run in 1..=2 {
        let args: &[&str] = if run == 1 {
            &["repair", "-e", "error.log"]
        } else {
            &["repair", "-e", "error.log", "--apply"]
        };
        let out = coval(&src, args, &env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {run}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // A person reads the stage lines and the outcome; log lines come with -v.
        assert!(
            !text(&out.stderr).contains(" INFO "),
            "run {run}: log lines among the stage lines: {}",
            text(&out.stderr)
        );
        let iteration = src
            .join(".coval/iterations")
            .join(format!("iter-00{}", 2 * run - 1));
        assert!(
            iteration.join("inventory/pricing.py").is_file(),
            "run {run}"
        );
        for gone in [".coval", ".git", "up"] {
            assert!(
                std::fs::symlink_metadata(iteration.join(gone)).is_err(),
                "run {run}: {gone} was copied into {}",
                iteration.display()
            );
        }
    }
    let partial: Vec<_> = walk(&src)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".partial"))
        .collect();
    assert!(partial.is_empty(), "partial trees left: {partial:?}");
    // Only the patched file changed in the user's tree (and the workspace is new).
    let status = git(&["status", "--porcelain"]);
    let mut changed: Vec<&str> = status.lines().collect();
    changed.sort();
    assert_eq!(
        changed,
        [" M inventory/pricing.py", "?? .coval/"],
        "{status}"
    );
    assert_eq!(fixed_line(&src), "if quantity >= DISCOUNT_FROM:");
}

/// A temporary git repository holding `files`, for running coval from inside it.
fn git_project(files: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("project");
    for (name, body) in files {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    git(&src, &["init", "-q"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-qm", "broken"]);
    (t, src)
}

/// `git ARGS` in `dir` as a test user, on branch main; its stdout.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn tests_that_cannot_run_stop_with_what_is_missing_and_exit_3() {
    coval_tests::ensure_host_pytest().expect("pytest for the host's python3");
    let env = [
        ("COVAL_SANDBOX__BACKEND", "local"),
        ("COVAL_LLM_URL", "http://127.0.0.1:9"),
    ];
    // A package the tests import is not installed where they run.
    let (_t, py) = git_project(&[
        (
            "shop/dates.py",
            "import pendulum\n\n\ndef days_between(a, b):\n    return (pendulum.parse(b) - pendulum.parse(a)).days + 1\n",
        ),
        (
            "tests/test_dates.py",
            "from shop.dates import days_between\n\n\ndef test_days():\n    assert days_between('2026-01-01', '2026-01-03') == 2\n",
        ),
        ("shop/__init__.py", ""),
        (
            "error.log",
            "FAILED tests/test_dates.py::test_days - assert 3 == 2\n    assert days_between('2026-01-01', '2026-01-03') == 2\nE   AssertionError: assert 3 == 2\nshop/dates.py:5: AssertionError\n",
        ),
    ]);
    // The runner of an npm script was never installed (no node_modules).
    let (_t2, js) = git_project(&[
        (
            "package.json",
            r#"{"name": "cart", "version": "1.0.0", "scripts": {"test": "jest"}}"#,
        ),
        (
            "src/cart.js",
            "exports.total = (xs) => xs.reduce((a, b) => a + b, 1);\n",
        ),
        (
            "test/cart.test.js",
            "const { total } = require('../src/cart');\ntest('total', () => expect(total([1, 2])).toBe(3));\n",
        ),
        (
            "error.log",
            "FAIL test/cart.test.js\n  ● total\n    expect(received).toBe(expected)\n    Expected: 3\n    Received: 4\n      at Object.<anonymous> (test/cart.test.js:2:40)\n",
        ),
    ]);
    for (src, what, hint) in [
        (&py, "the Python package `pendulum`", "pip install pendulum"),
        (&js, "`jest`", "npm install --save-dev jest"),
    ] {
        let out = coval(src, &["repair", "-e", "error.log"], &env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!("{what} is missing in the local sandbox")),
            "{stdout}"
        );
        assert!(stdout.contains(hint), "{stdout}");
        assert!(!stdout.contains("no validated fix"), "{stdout}");
        // The report says it too, and no candidate was tried.
        let json = coval(src, &["repair", "-e", "error.log", "--json"], &env);
        assert_eq!(json.status.code(), Some(3), "{}", text(&json.stderr));
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(report["outcome"], "cannot_run", "{report}");
        assert_eq!(report["mre"]["blocked"]["what"], what, "{report}");
        assert_eq!(report["attempts"].as_array().map(Vec::len), Some(0));
    }
}

/// Single-file programs with a one-line bug: (name, program, tests, the failing test, the
/// log as pytest printed it).
const SMALL_BUGS: &[(&str, &str, &str, &str)] = &[
    (
        "gcd",
        "def gcd(a, b):\n    while b:\n        a, b = b, a // b\n    return a\n",
        "from gcd import gcd\n\n\ndef test_coprime():\n    assert gcd(9, 4) == 1\n\n\ndef test_common():\n    assert gcd(12, 18) == 6\n\n\ndef test_zero():\n    assert gcd(7, 0) == 7\n",
        "test_gcd.py::test_common",
    ),
    (
        "leap",
        "def is_leap(year):\n    if year % 400 == 0:\n        return True\n    if year % 100 == 0:\n        return True\n    return year % 4 == 0\n",
        "from leap import is_leap\n\n\ndef test_ordinary():\n    assert is_leap(2024)\n    assert not is_leap(2023)\n\n\ndef test_century():\n    assert not is_leap(1900)\n\n\ndef test_four_hundred():\n    assert is_leap(2000)\n",
        "test_leap.py::test_century",
    ),
];

/// A temporary git repository with one of [`SMALL_BUGS`] and the log of its failing test.
fn small_bug(
    name: &str,
    program: &str,
    tests: &str,
    failing: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let test_file = failing.split("::").next().unwrap();
    let test_name = failing.rsplit("::").next().unwrap();
    let log = format!(
        "=================================== FAILURES ===================================\n\
         ____________________________ {test_name} ____________________________\n\n    \
         def {test_name}():\n>       assert ...\nE       AssertionError\n\n\
         {test_file}:1: AssertionError\n\
         =========================== short test summary info ============================\n\
         FAILED {failing} - AssertionError\n"
    );
    git_project(&[
        (&format!("{name}.py"), program),
        (test_file, tests),
        ("error.log", &log),
        // How some projects run their tests: a script that wraps pytest.
        (
            "run_tests.sh",
            "#!/bin/sh\nexec python3 -m pytest -q \"$@\"\n",
        ),
    ])
}

#[test]
fn the_users_test_command_in_any_usual_form_gives_the_same_fix() {
    coval_tests::ensure_host_pytest().expect("pytest for the host's python3");
    // The cost model would rebuild programs this small; these tests are about the command.
    let env = [
        ("COVAL_SANDBOX__BACKEND", "local"),
        ("COVAL_LLM_URL", "http://127.0.0.1:9"),
        ("COVAL_COST_CALCULATION__REBUILD_THRESHOLD", "100"),
    ];
    // The detected command first: every form of the user's must give what it gives.
    let forms = [
        None,
        Some("pytest -q"),
        Some("python -m pytest -q"),
        Some("python3 -m pytest -v"),
        Some("pytest"),
        Some("sh -c 'python3 -m pytest -q'"),
        Some("sh ./run_tests.sh"),
    ];
    for (name, program, tests, failing) in SMALL_BUGS {
        let mut seen = vec![];
        for form in forms {
            let (_t, src) = small_bug(name, program, tests, failing);
            let mut args = vec!["repair", "-e", "error.log", "--json"];
            args.extend(form.iter().flat_map(|f| ["--test-cmd", f]));
            let out = coval(&src, &args, &env);
            let shown = form.unwrap_or("(detected)");
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} with `{shown}`: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                report["outcome"], "fixed",
                "{name} with `{shown}`: {report}"
            );
            if let Some(form) = form {
                let notes = report["mre"]["notes"].to_string();
                assert!(notes.contains(&format!("`{form}`")), "{notes}");
            }
            // Read as pytest: per-test outcomes, and the warm server serves the candidates;
            // a wrapper script runs fresh, its pytest reporting through PYTEST_ADDOPTS.
            let paths = &report["attempts"][0]["paths"];
            let wrapped = shown.contains("run_tests");
            assert_eq!(
                paths["warm"].as_u64().unwrap() > 0,
                !wrapped,
                "{name} with `{shown}`: {paths}"
            );
            // Each candidate says how its runs were served; together they are the attempt's.
            let each: Vec<String> = report["attempts"][0]["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["path"].as_str().unwrap_or("").to_owned())
                .collect();
            let count = |w: &str| {
                each.iter()
                    .map(|p| p.matches(w).count() as u64)
                    .sum::<u64>()
            };
            assert_eq!(
                count("warm server") + count("collected session"),
                paths["warm"].as_u64().unwrap(),
                "{name} with `{shown}`: {each:?} against {paths}"
            );
            assert_eq!(
                count("collected session"),
                paths["collected"].as_u64().unwrap()
            );
            assert_eq!(
                count(": "),
                paths["runs"].as_u64().unwrap(),
                "{name} with `{shown}`: {each:?} against {paths}"
            );
            let verdicts = (
                report["mre"]["passing_tests"].clone(),
                report["mre"]["failing_tests"].clone(),
                report["patch"].as_str().unwrap_or("").to_owned(),
            );
            assert!(
                !verdicts.0.as_array().unwrap().is_empty(),
                "{name} with `{shown}`: no passing test named: {report}"
            );
            seen.push((shown, verdicts));
        }
        for (shown, v) in &seen[1..] {
            assert_eq!(
                v, &seen[0].1,
                "{name}: `{shown}` and the detected command disagree"
            );
        }
    }
}

#[test]
fn a_test_command_run_in_a_subdirectory_is_served_warm() {
    coval_tests::ensure_host_pytest().expect("pytest for the host's python3");
    let env = [
        ("COVAL_SANDBOX__BACKEND", "local"),
        ("COVAL_LLM_URL", "http://127.0.0.1:9"),
        ("COVAL_COST_CALCULATION__REBUILD_THRESHOLD", "100"),
    ];
    // The program and its tests live in `backend/`; CI runs `cd backend && ...`, and its log
    // names the files as seen from there.
    let (name, program, tests, failing) = SMALL_BUGS[0];
    let test_file = failing.split("::").next().unwrap();
    let log = format!(
        "=================================== FAILURES ===================================\n\
         _________________________________ test_common __________________________________\n\n    \
         def test_common():\n>       assert gcd(12, 18) == 6\nE       assert 18 == 6\n\
         E        +  where 18 = gcd(12, 18)\n\n{test_file}:9: AssertionError\n\
         =========================== short test summary info ============================\n\
         FAILED {failing} - assert 18 == 6\n"
    );
    let (_t, src) = git_project(&[
        (&format!("backend/{name}.py"), program),
        (&format!("backend/{test_file}"), tests),
        ("README.md", "Tests: `cd backend && python -m pytest -q`\n"),
        ("error.log", &log),
    ]);
    for form in [
        "cd backend && python -m pytest -q",
        "sh -c 'cd backend && pytest -q'",
    ] {
        let out = coval(
            &src,
            &["repair", "-e", "error.log", "--json", "--test-cmd", form],
            &env,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "`{form}`: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["outcome"], "fixed", "`{form}`: {report}");
        let patch = report["patch"].as_str().unwrap_or("");
        assert!(
            patch.contains(&format!("+++ b/backend/{name}.py")),
            "{patch}"
        );
        // Per-test outcomes (the JUnit report under backend/), and the warm server served.
        assert!(
            !report["mre"]["passing_tests"]
                .as_array()
                .unwrap()
                .is_empty(),
            "`{form}`: {report}"
        );
        let paths = &report["attempts"][0]["paths"];
        assert!(paths["warm"].as_u64().unwrap() > 0, "`{form}`: {paths}");
    }
}

#[test]
fn a_narrow_test_command_is_proven_on_the_tests_around_it() {
    coval_tests::ensure_host_pytest().expect("pytest for the host's python3");
    let env = [
        ("COVAL_SANDBOX__BACKEND", "local"),
        ("COVAL_LLM_URL", "http://127.0.0.1:9"),
        ("COVAL_COST_CALCULATION__REBUILD_THRESHOLD", "100"),
    ];
    let (name, program, tests, failing) = SMALL_BUGS[1];
    let (_t, src) = small_bug(name, program, tests, failing);
    let narrow = format!("python3 -m pytest -q {failing}");
    let out = coval(
        &src,
        &[
            "repair",
            "-e",
            "error.log",
            "--test-cmd",
            &narrow,
            "--json",
            "--apply",
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mre = &report["mre"];
    // The baseline knows the tests around the target: the file's other two pass.
    let passing: Vec<&str> = mre["passing_tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(passing.len(), 2, "{report}");
    assert!(
        mre["notes"]
            .to_string()
            .contains("the tests around the command"),
        "{report}"
    );
    // Every candidate that passed the narrow command ran the wider ones too: more runs than
    // candidates, and the winner's outcomes name the other tests.
    let attempt = &report["attempts"][0];
    let winner = report["winner"].as_str().unwrap();
    let won = attempt["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == winner)
        .unwrap();
    let names = won["tests"].to_string();
    for p in &passing {
        assert!(
            names.contains(p.rsplit("::").next().unwrap()),
            "{p} not run: {won}"
        );
    }
    // What was applied keeps the whole file passing (Debian's python3, which the test command
    // gives pytest; the `python3` first on PATH may be another one, without it).
    let check = Command::new("/usr/bin/python3")
        .current_dir(&src)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
}

/// Every path under `dir`, without following symlinks.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn apply_refuses_a_tree_that_changed_during_the_repair() {
    python_image();
    let (_t, src, ws) = example();
    let log = src.join("error.log");
    let child = Command::new(env!("CARGO_BIN_EXE_coval"))
        .args([
            "--workspace",
            ws.to_str().unwrap(),
            "repair",
            "--apply",
            "-e",
            log.to_str().unwrap(),
            "-s",
            src.to_str().unwrap(),
        ])
        .env("NO_COLOR", "1")
        .env("COVAL_LLM_URL", "http://127.0.0.1:9")
        .env("COVAL_SANDBOX__BACKEND", "docker")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the snapshot exists, edit the file the fix will touch.
    let snap = ws.join("iterations/iter-001");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !snap.exists() {
        assert!(std::time::Instant::now() < deadline, "no snapshot appeared");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let edited = std::fs::read_to_string(src.join("inventory/pricing.py"))
        .unwrap()
        .replace("DISCOUNT = 0.1", "DISCOUNT = 0.15");
    std::fs::write(src.join("inventory/pricing.py"), &edited).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not applying") && err.contains("inventory/pricing.py"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("inventory/pricing.py")).unwrap(),
        edited,
        "the user's edit was overwritten"
    );
}

#[test]
fn repair_bad_input_and_unreachable_services() {
    let (_t, src, ws) = example();
    // A test command that does not exist.
    let out = repair(
        &src,
        &ws,
        &["--test-cmd", "no-such-test-runner --all"],
        &[("COVAL_SANDBOX__BACKEND", "local")],
    );
    // A runner that is not there: the tests cannot run (exit 3), and the output names it.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("`no-such-test-runner` is missing"),
        "{}",
        text(&out.stdout)
    );
    // Docker asked for explicitly but not reachable.
    let out = repair(
        &src,
        &ws,
        &[],
        &[
            ("COVAL_SANDBOX__BACKEND", "docker"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("docker"),
        "{}",
        text(&out.stderr)
    );
    // A model server asked for explicitly but not reachable.
    let log = src.join("error.log");
    let out = coval(
        src.parent().unwrap(),
        &[
            "--workspace",
            ws.to_str().unwrap(),
            "repair",
            "--engine",
            "llm",
            "-e",
            log.to_str().unwrap(),
            "-s",
            src.to_str().unwrap(),
        ],
        &[("COVAL_LLM_URL", "http://127.0.0.1:9")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ollama serve"),
        "{}",
        text(&out.stderr)
    );
    // --apply with --analyze is a usage error.
    let out = repair(&src, &ws, &["--analyze", "--apply"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_model_path_retries_with_feedback_and_succeeds() {
    use llm::testing::{ProtocolServer, Reply};
    let server = ProtocolServer::start().unwrap();
    let (_t, src, ws) = example();
    // First answer: a plausible but wrong fix; the retry: the right one.
    let wrong = "The discount is too small.\n\n```diff\n--- a/inventory/pricing.py\n+++ b/inventory/pricing.py\n@@ -5,3 +5,3 @@\n DISCOUNT_FROM = 10  # units per line that earn the volume discount\n-DISCOUNT = 0.1\n+DISCOUNT = 0.2\n \n```\n";
    let right = "<think>\nThe boundary is inclusive: 10 units already earn the discount.\n</think>\nThe comparison must include the boundary.\n\n```diff\n--- a/inventory/pricing.py\n+++ b/inventory/pricing.py\n@@ -11,3 +11,3 @@\n     total = unit_price * quantity\n-    if quantity > DISCOUNT_FROM:\n+    if quantity >= DISCOUNT_FROM:\n         total = total * (1 - DISCOUNT)\n```\n";
    for _ in 0..3 {
        server.push(
            "/api/tags",
            Reply::ollama_tags(&["qwen2.5-coder:7b", "deepseek-coder-v2:16b"]),
        );
    }
    server.push("/api/chat", Reply::ollama_chat(wrong));
    server.push("/api/chat", Reply::ollama_chat(right));
    let log = src.join("error.log");
    let out = coval(
        src.parent().unwrap(),
        &[
            "--workspace",
            ws.to_str().unwrap(),
            "repair",
            "--engine",
            "llm",
            "--json",
            "-e",
            log.to_str().unwrap(),
            "-s",
            src.to_str().unwrap(),
        ],
        &[
            ("COVAL_LLM_URL", &server.url()),
            ("COVAL_SANDBOX__BACKEND", "local"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "fixed", "{v:#}");
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{v:#}");
    assert_eq!(attempts[0]["candidates"][0]["passed"], false);
    assert_eq!(attempts[1]["candidates"][0]["passed"], true);
    assert!(
        attempts[1]["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    // The retry prompt carried the failed diff and its test output; every call set num_ctx.
    let chats = server.requests_to("/api/chat");
    assert_eq!(chats.len(), 2);
    let second = chats[1].json().to_string();
    assert!(
        second.contains("DISCOUNT = 0.2"),
        "the retry prompt lacks the previous diff"
    );
    // `16.0 == 18.0` appears only in the wrong candidate's own test run, not in the error log.
    assert!(
        second.contains("16.0 == 18.0"),
        "the retry prompt lacks the failing output of the first candidate"
    );
    // No --model: the configured model with the best expected success was chosen, and said so.
    for c in &chats {
        assert_eq!(c.json()["options"]["num_ctx"], 32768);
        assert_eq!(c.json()["model"], "deepseek-coder-v2:16b");
    }
    let notes = v["triage"]["notes"].to_string();
    assert!(notes.contains("model `deepseek` chosen"), "{notes}");
}

#[test]
fn models_list_and_pull_against_the_protocol_server() {
    use llm::testing::{ProtocolServer, Reply};
    let server = ProtocolServer::start().unwrap();
    server.push(
        "/api/tags",
        Reply::ollama_tags(&["qwen2.5-coder:7b", "mistral:7b"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let env = [("COVAL_LLM_URL", server.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = coval(dir.path(), &["models", "list", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let present = |alias: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["alias"] == alias)
            .unwrap()["present"]
            .clone()
    };
    assert_eq!(present("qwen"), true);
    assert_eq!(present("mistral"), true);
    assert_eq!(present("granite"), false);
    server.push("/api/pull", Reply::ollama_pull(1000, 4));
    let out = coval(dir.path(), &["models", "pull", "granite"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("pulled granite-code:8b"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        server.requests_to("/api/pull")[0].json()["model"],
        "granite-code:8b"
    );
    // Unknown alias: bad input. No server: unreachable.
    assert_eq!(
        coval(dir.path(), &["models", "pull", "gpt-9"], &env)
            .status
            .code(),
        Some(2)
    );
    let out = coval(
        dir.path(),
        &["models", "list"],
        &[("COVAL_LLM_URL", "http://127.0.0.1:9")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ollama serve"),
        "{}",
        text(&out.stderr)
    );
}

/// The search engine, end to end through the real binary and the Docker sandbox, on the bug
/// corpus (tests/fixtures/bugs: 39 real programs, one realistic one-line bug each, with their
/// own tests). Two repairs at a time. The test command runs one bug of each kind and language
/// (the first by name, whether or not the engine fixes it), so every operator family and both
/// languages stay covered in a few minutes; `COVAL_FULL_CORPUS=1` runs all of them, as
/// `cargo bench -p cli --bench corpus` does with timings.
#[test]
fn the_search_engine_repairs_the_bug_corpus() {
    python_image();
    let mut all: Vec<std::path::PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/bugs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("BUG.json").exists())
        .collect();
    all.sort();
    assert!(all.len() >= 30, "the corpus has {} bugs", all.len());
    let full = std::env::var_os("COVAL_FULL_CORPUS").is_some_and(|v| v == "1");
    let mut seen = std::collections::BTreeSet::new();
    let bugs: Vec<std::path::PathBuf> = all
        .into_iter()
        .filter(|p| {
            let bug: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p.join("BUG.json")).unwrap()).unwrap();
            let kind = bug["kind"].as_str().unwrap_or("").to_owned();
            let js = p.file_name().unwrap().to_string_lossy().starts_with("js_");
            full || seen.insert((kind, js))
        })
        .collect();
    eprintln!(
        "{} bugs{}",
        bugs.len(),
        if full {
            ""
        } else {
            " (one per kind and language; COVAL_FULL_CORPUS=1 for all)"
        }
    );
    assert!(
        full || bugs.len() >= 12,
        "the subset has {} bugs",
        bugs.len()
    );
    let queue = std::sync::Mutex::new(bugs.clone());
    let results = std::sync::Mutex::new(vec![]);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let Some(bug) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let t = tempfile::tempdir().unwrap();
                    let src = t.path().join("p");
                    assert!(
                        Command::new("cp")
                            .arg("-a")
                            .arg(&bug)
                            .arg(&src)
                            .status()
                            .unwrap()
                            .success()
                    );
                    let started = std::time::Instant::now();
                    let out = repair(
                        &src,
                        &t.path().join("ws"),
                        &["--json", "--engine", "search"],
                        &[("COVAL_SANDBOX__BACKEND", "docker")],
                    );
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let name = bug.file_name().unwrap().to_string_lossy().into_owned();
                    // Every attempt that validated something says how long it took, on how
                    // many lanes (one sandbox session each).
                    for a in v["attempts"].as_array().into_iter().flatten() {
                        if a["candidates"].as_array().is_some_and(|c| !c.is_empty()) {
                            assert!(a["lanes"].as_u64().unwrap_or(0) >= 1, "{name}: {a:#}");
                            assert!(
                                a["validation_ms"].as_u64().unwrap_or(0) > 0,
                                "{name}: {a:#}"
                            );
                        }
                    }
                    results.lock().unwrap().push((
                        name,
                        v["outcome"].as_str().unwrap_or("error").to_owned(),
                        started.elapsed().as_secs_f64(),
                        text(&out.stderr),
                    ));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let fixed = results.iter().filter(|r| r.1 == "fixed").count();
    for r in &results {
        eprintln!("{:<28} {:<10} {:>6.1} s", r.0, r.1, r.2);
        if r.1 == "error" {
            eprintln!("{}", r.3);
        }
    }
    eprintln!("fixed {fixed} of {}", results.len());
    assert_eq!(results.len(), bugs.len());
    assert!(
        fixed * 10 >= results.len() * 8,
        "fixed {fixed} of {}: below 80%",
        results.len()
    );
}

/// The defect-class corpus (tests/fixtures/classes: bugs of the repair literature's classes
/// seeded in textbook programs) through the real binary and the Docker sandbox: a small fast
/// subset, CLASSES_CI (named bugs of the tuned split, one of each of a few classes in each
/// language), every one of which must be repaired with the reference edit (AST-equal to the
/// program as written). `cargo bench -p cli --bench classes` runs all 113, both splits.
#[test]
fn the_search_engine_repairs_defect_classes_in_python_javascript_and_go() {
    const CLASSES_CI: &[&str] = &[
        "py_binary_search-2",
        "py_roman-3",
        "py_matrix-3",
        "js_islands-2",
        "js_two_sum-2",
        "go_bsearch-2",
    ];
    let ok = Command::new(repo().join("scripts/build-base-images.sh"))
        .args(["python", "node", "go"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "scripts/build-base-images.sh python node go failed");
    let root = repo().join("tests/fixtures/classes");
    let index: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    assert!(index.len() >= 100, "the corpus has {} bugs", index.len());
    let queue = std::sync::Mutex::new(CLASSES_CI.to_vec());
    let results = std::sync::Mutex::new(vec![]);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some(id) = queue.lock().unwrap().pop() {
                    let bug = index.iter().find(|b| b["id"] == id).unwrap();
                    assert_eq!(bug["split"], "tuned", "{id}: CI never runs a held-back bug");
                    let s = |k: &str| bug[k].as_str().unwrap().to_owned();
                    let t = tempfile::tempdir().unwrap();
                    let src = t.path().join("p");
                    let program = root.join("programs").join(s("program"));
                    assert!(
                        Command::new("cp")
                            .arg("-a")
                            .arg(&program)
                            .arg(&src)
                            .status()
                            .unwrap()
                            .success()
                    );
                    let _ = std::fs::remove_file(src.join("BUGS.json"));
                    let reference = std::fs::read_to_string(program.join(s("file"))).unwrap();
                    let buggy = reference.replacen(&s("fixed"), &s("buggy"), 1);
                    std::fs::write(src.join(s("file")), &buggy).unwrap();
                    std::fs::copy(
                        root.join("logs").join(format!("{id}.log")),
                        src.join("error.log"),
                    )
                    .unwrap();
                    let started = std::time::Instant::now();
                    let out = repair(
                        &src,
                        &t.path().join("ws"),
                        &["--json", "--engine", "search", "--apply"],
                        &[("COVAL_SANDBOX__BACKEND", "docker")],
                    );
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let patched = std::fs::read_to_string(src.join(s("file"))).unwrap();
                    let lang = match s("language").as_str() {
                        "javascript" => proto::messages::Language::JavaScript,
                        "go" => proto::messages::Language::Go,
                        _ => proto::messages::Language::Python,
                    };
                    let exact = fix::search::same_ast(lang, &s("file"), &patched, &reference);
                    // A Go candidate's suite runs without vet; the winner again as written.
                    let paths: Vec<String> = v["attempts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|a| a["candidates"].as_array().into_iter().flatten())
                        .filter(|c| c["passed"] == true)
                        .map(|c| c["path"].as_str().unwrap_or("").to_owned())
                        .collect();
                    if lang == proto::messages::Language::Go {
                        assert!(
                            paths
                                .iter()
                                .any(|p| p.contains("suite without vet: ")
                                    && p.contains(", suite: ")),
                            "{id}: the winner was not run again with vet: {paths:?}"
                        );
                    }
                    results.lock().unwrap().push((
                        id,
                        v["outcome"].as_str().unwrap_or("error").to_owned(),
                        exact,
                        v["winner_why"].as_str().unwrap_or("").to_owned(),
                        started.elapsed().as_secs_f64(),
                        text(&out.stderr),
                    ));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(b.0));
    for r in &results {
        eprintln!(
            "{:<22} {:<8} exact {:?} {:>6.1} s  {}",
            r.0, r.1, r.2, r.4, r.3
        );
    }
    for r in &results {
        assert_eq!(r.1, "fixed", "{}: {}", r.0, r.5);
        assert_eq!(
            r.2,
            Some(true),
            "{}: the patch is not the reference edit",
            r.0
        );
        assert!(
            r.3.contains("ranks") || r.3.contains("passing"),
            "{}: no reason given: {}",
            r.0,
            r.3
        );
    }
}

#[test]
fn analyze_measures_coverage_and_ranks_lines_by_spectrum_in_the_sandbox() {
    python_image();
    let v = analyze_with(
        "small_tested",
        "small_tested.log",
        &[("COVAL_SANDBOX__BACKEND", "docker")],
    );
    assert_eq!(v["metrics"]["T_measured"], true, "{v:#}");
    let t = v["metrics"]["T"].as_f64().unwrap();
    assert!(
        t > 0.9 && t <= 1.0,
        "all of stats/ runs under the tests: {t}"
    );
    // The buggy line itself (the division), found by Ochiai, now leads the suspects.
    let top = &v["triage"]["suspects"][0];
    assert_eq!(
        (top["file"].as_str(), top["line"].as_u64()),
        (Some("stats/summary.py"), Some(6)),
        "{v:#}"
    );
    assert!(
        top["reason"].as_str().unwrap().starts_with("Ochiai"),
        "{v:#}"
    );
    assert_eq!(v["decision"]["verdict"], "repair");
}

#[test]
fn analyze_measures_node_coverage_with_nodes_own_tool() {
    let work = tempfile::tempdir().unwrap();
    let projects = repo().join("tests/fixtures/projects");
    let out = coval(
        work.path(),
        &[
            "repair",
            "--analyze",
            "--json",
            "--engine",
            "search",
            "-e",
            projects.join("node-calc.log").to_str().unwrap(),
            "-s",
            projects.join("node-calc").to_str().unwrap(),
        ],
        &[("COVAL_SANDBOX__BACKEND", "local")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metrics"]["T_measured"], true, "{v:#}");
    assert!(
        v["triage"]["notes"]
            .to_string()
            .contains("--experimental-test-coverage"),
        "{v:#}"
    );
}

#[test]
fn status_and_cleanup_after_a_repair() {
    let (_t, src, ws) = example();
    let out = repair(
        &src,
        &ws,
        &[],
        &[
            ("COVAL_SANDBOX__BACKEND", "local"),
            ("COVAL_TRIAGE__COVERAGE", "false"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let w = ws.to_str().unwrap();
    let out = coval(
        src.parent().unwrap(),
        &["--workspace", w, "status", "--json"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["iterations"].as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(v["iterations"][1]["parent"], "iter-001");
    assert_eq!(v["repairs"][0]["outcome"], "fixed");
    let out = coval(src.parent().unwrap(), &["--workspace", w, "status"], &[]);
    assert!(
        text(&out.stdout).contains("iter-002 (parent iter-001)"),
        "{}",
        text(&out.stdout)
    );
    // Not a terminal and no --force: refuses, removes nothing.
    let out = coval(
        src.parent().unwrap(),
        &["--workspace", w, "cleanup", "-c", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(ws.join("iterations/iter-001").exists());
    let out = coval(
        src.parent().unwrap(),
        &["--workspace", w, "cleanup", "-c", "1", "--force"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).trim(), "removed iter-001");
    assert!(!ws.join("iterations/iter-001").exists() && ws.join("iterations/iter-002").exists());
}

#[path = "cli/deploy.rs"]
mod deploy;

/// Whether this test process runs as root (then the unprivileged runs use `setpriv`).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `coval` as an unprivileged user (uid/gid 65534 when the tests run as root, else the
/// user running them), from `dir`.
fn coval_unprivileged(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_coval"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_coval"))
    };
    c.current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run coval as an unprivileged user")
}

/// Sets the mode of `path` and everything under it (no symlink followed).
fn chmod_tree(path: &std::path::Path, dirs: u32, files: u32) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chmod_tree(&e.unwrap().path(), dirs, files);
        }
    }
    let mode = if meta.is_dir() { dirs } else { files };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A project its user may only read (a checkout owned by someone else, a read-only mount):
/// coval repairs it with its copies in a workspace elsewhere; only `--apply` needs write
/// access, and says so (exit 2, nothing changed); with the default workspace inside the
/// project it says to pass --workspace (exit 2). Once the user may write, `--apply` works.
#[test]
fn a_read_only_project_is_repaired_and_only_apply_needs_write_access() {
    use std::os::unix::fs::PermissionsExt;
    let (t, src, _) = example();
    // Everyone may enter the test's directory; only the unprivileged user may write `ws`.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&ws, Some(65534), Some(65534)).unwrap();
    }
    chmod_tree(&src, 0o555, 0o444);
    let before = snapshot(&src);
    let env = [
        ("COVAL_SANDBOX__BACKEND", "local"),
        ("COVAL_LLM_URL", "http://127.0.0.1:9"),
        ("HOME", ws.to_str().unwrap()),
    ];
    let ws_flag = ["--workspace", ws.to_str().unwrap()];
    let repair = |extra: &[&str]| {
        let mut args = ws_flag.to_vec();
        args.extend(["repair", "-e", "error.log"]);
        args.extend_from_slice(extra);
        coval_unprivileged(&src, &args, &env)
    };
    let out = repair(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("fixed:"),
        "{}",
        text(&out.stdout)
    );
    let out = repair(&["--apply"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{err}", text(&out.stdout));
    assert!(
        err.contains("--apply needs write access to")
            && err.contains("nothing was changed")
            && err.contains("git apply"),
        "{err}"
    );
    assert_eq!(snapshot(&src), before, "the read-only project changed");
    // Nothing left in the workspace that a killed or failed step would leave.
    let stray: Vec<_> = walk(&ws)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(".stage-") || n.starts_with(".creating-") || n.starts_with("work-")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // The default workspace would be inside the project.
    let out = coval_unprivileged(&src, &["repair", "-e", "error.log"], &env);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot write the workspace")
            && err.contains(&format!("{}/.coval", src.display()))
            && err.contains("pass --workspace DIR"),
        "{err}"
    );
    assert_eq!(snapshot(&src), before);
    // The user may write now: `--apply` puts the fix in, and the files stay theirs.
    chmod_tree(&src, 0o755, 0o644);
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&src)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = repair(&["--apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(fixed_line(&src), "if quantity >= DISCOUNT_FROM:");
    let meta = std::fs::metadata(src.join("inventory/pricing.py")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.uid(), 65534, "the patched file changed owner");
    }
}

/// The scratch dirs of process `pid` (`vocab::scratch` names carry `p<pid>-`): in the temp
/// dir `tmp`, and anywhere under the workspace `ws`.
fn scratch_of(pid: u32, tmp: &std::path::Path, ws: &std::path::Path) -> Vec<std::path::PathBuf> {
    let tag = format!("-p{pid}-");
    let mine = |p: &std::path::Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(&tag))
    };
    let mut v: Vec<_> = std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| mine(p))
        .collect();
    v.extend(walk(ws).into_iter().filter(|p| mine(p)));
    v
}

/// Kills `coval repair` (SIGKILL) in the middle of its work again and again: what its
/// sandboxes and stages had in the temp dir and the workspace is removed by the next start,
/// while the dirs of a live repair (stopped with SIGSTOP while another one starts and runs
/// to its end) stay, and it then finishes. At the end nothing is left.
#[test]
fn temp_dirs_of_killed_repairs_are_removed_at_the_next_start_and_a_live_ones_stay() {
    use std::time::{Duration, Instant};
    let (t, src, _) = example();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "broken",
        ],
    ] {
        assert!(
            Command::new("git")
                .current_dir(&src)
                .args(args)
                .status()
                .unwrap()
                .success()
        );
    }
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let ws = src.join(".coval");
    let spawn = |dir: &std::path::Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_coval"))
            .current_dir(dir)
            .args(extra)
            .args(["repair", "-e", "error.log"])
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("TMPDIR", &tmp)
            .env("COVAL_SANDBOX__BACKEND", "local")
            .env("COVAL_LLM_URL", "http://127.0.0.1:9")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Waits (at most 60 s) until `child` has a scratch dir; false if it ended first.
    let wait_for_scratch = |child: &mut std::process::Child| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while scratch_of(child.id(), &tmp, &ws).is_empty() {
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    };
    let (mut killed, mut left) = (0, 0);
    for i in 0..8u64 {
        let mut child = spawn(&src, &[]);
        if wait_for_scratch(&mut child) {
            // Kills land in different stages: the MRE's runs, the validation, the iteration.
            std::thread::sleep(Duration::from_millis((i * 330) % 2_000));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
        left += scratch_of(child.id(), &tmp, &ws).len();
    }
    assert!(
        left > 0,
        "{killed} killed repairs left nothing: the kills came too late"
    );
    // The next start removes them; a live repair's dirs stay while another one starts.
    let mut live = spawn(&src, &[]);
    assert!(
        wait_for_scratch(&mut live),
        "the live repair made no scratch dir"
    );
    let st = Command::new("kill")
        .args(["-STOP", &live.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let held = scratch_of(live.id(), &tmp, &ws);
    let other = t.path().join("other");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let _ = std::fs::remove_dir_all(other.join(".coval"));
    let out = spawn(&other, &[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for d in &held {
        assert!(d.exists(), "{} of a live repair was removed", d.display());
    }
    let st = Command::new("kill")
        .args(["-CONT", &live.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = live.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Everything the killed repairs left went at that start; the finished ones left nothing.
    // (The local sandbox's `python` shim is a cache made once per python3, not a leftover.)
    let tmp_left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().contains("coval-python-shim-"))
        .collect();
    assert!(tmp_left.is_empty(), "{tmp_left:?}");
    let ws_left: Vec<_> = walk(&ws)
        .into_iter()
        .chain(walk(&other.join(".coval")))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(".stage-") || n.starts_with(".creating-") || n.starts_with("work-")
        })
        .collect();
    assert!(ws_left.is_empty(), "{ws_left:?}");
    eprintln!(
        "{killed} repairs killed, {left} scratch dirs left behind by them, 0 after the next start"
    );
}

/// The Docker sandbox's containers whose staging dir belongs to process `pid`.
fn containers_of(pid: u32) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=dev.coval.staging",
            "--format",
            "{{.ID}} {{.Label \"dev.coval.staging\"}}",
        ])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("-p{pid}-")))
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// A repair killed while its Docker sandbox runs leaves its containers (a session's sleeps
/// until removed) and staging dirs; the next start removes them.
#[test]
fn containers_of_a_killed_repair_are_removed_at_the_next_start() {
    use std::time::{Duration, Instant};
    python_image();
    let (t, src, ws) = example();
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_coval"))
            .current_dir(&src)
            .args([
                "--workspace",
                ws.to_str().unwrap(),
                "repair",
                "-e",
                "error.log",
            ])
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .env("TMPDIR", &tmp)
            .env("COVAL_SANDBOX__BACKEND", "docker")
            .env("COVAL_LLM_URL", "http://127.0.0.1:9")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut victim = run();
    let deadline = Instant::now() + Duration::from_secs(120);
    while containers_of(victim.id()).is_empty() {
        assert!(
            victim.try_wait().unwrap().is_none() && Instant::now() < deadline,
            "the repair made no container"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    let left = containers_of(victim.id());
    assert!(!left.is_empty());
    let out = run().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        containers_of(victim.id()),
        Vec::<String>::new(),
        "left: {left:?}"
    );
    let dirs: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
}

/// What a person reads. Without a terminal (CI, a pipe): one plain line per stage on stderr,
/// no escape code, no log line, no warning twice; the outcome and what to do next on
/// stdout; with --json the report alone on stdout. On a terminal (a pseudo-terminal made by
/// `script`): the bar while candidates are validated, coloured unless NO_COLOR is set.
#[test]
fn what_a_user_reads_on_a_terminal_and_without_one() {
    let (_t, src, ws) = example();
    let env = [("COVAL_SANDBOX__BACKEND", "local")];
    let out = repair(&src, &ws, &[], &env);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let stages = ["triage", "decision", "mre", "fix", "validate", "integrate"];
    let mut seen = vec![];
    let mut warnings = std::collections::HashSet::new();
    for l in stderr.lines() {
        assert!(
            !l.contains('\u{1b}'),
            "an escape code without a terminal: {l:?}"
        );
        if let Some(w) = l.strip_prefix("coval: warning: ") {
            assert!(warnings.insert(w.to_owned()), "printed twice: {l}");
            continue;
        }
        // The local sandbox says once what it does not isolate; the environment line says
        // which sandbox and environment the repair uses.
        if l.starts_with("coval: ") || l.starts_with("  ") || l.starts_with("sandbox: ") {
            continue;
        }
        let stage = l.split_whitespace().next().unwrap_or_default();
        assert!(stages.contains(&stage), "not a stage line: {l:?}\n{stderr}");
        seen.push(stage);
    }
    assert_eq!(seen, stages, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("fixed: "), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("next    review the patch, then apply it: `git apply ")),
        "{stdout}"
    );
    let out = repair(&src, &ws, &["--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "fixed");
    // A terminal: `script` gives coval one; its output is what the person saw.
    let on_terminal = |no_color: bool| {
        let cmd = format!(
            "{} --workspace {} repair -e {} -s {}",
            env!("CARGO_BIN_EXE_coval"),
            ws.display(),
            src.join("error.log").display(),
            src.display()
        );
        let mut c = Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .env_remove("RUST_LOG")
            .env("COVAL_SANDBOX__BACKEND", "local")
            .env("COVAL_LLM_URL", "http://127.0.0.1:9")
            .env("TERM", "xterm");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c
            .output()
            .expect("script (util-linux) runs coval on a pseudo-terminal");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        text(&out.stdout)
    };
    let plain = on_terminal(true);
    assert!(plain.contains("candidates validated"), "no bar: {plain:?}");
    assert!(plain.contains("validate  passed after"), "{plain:?}");
    assert!(
        !plain.contains("\u{1b}[3"),
        "colour with NO_COLOR: {plain:?}"
    );
    let coloured = on_terminal(false);
    assert!(
        coloured.contains("\u{1b}[36m"),
        "no colour on a terminal: {coloured:?}"
    );
}

/// The corpus of logs as users paste them and the programs that made them.
fn wild(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

fn analyze_wild(log: &str, src: &std::path::Path, json: bool) -> Output {
    let work = tempfile::tempdir().unwrap();
    let log = wild(&format!("logs/wild/{log}"));
    let mut args = vec!["repair", "--analyze", "--engine", "search", "-e"];
    args.push(log.to_str().unwrap());
    args.extend(["-s", src.to_str().unwrap()]);
    if json {
        args.push("--json");
    }
    let out = coval(work.path(), &args, &[("COVAL_TRIAGE__COVERAGE", "false")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    out
}

#[test]
fn analyze_lists_the_frames_and_names_the_innermost_project_frame() {
    // A trace pasted from a Windows machine, against the project it came from.
    let src = wild("programs/wild/python/settings_json");
    let out = analyze_wild("python/settings_windows.log", &src, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inner = &v["triage"]["innermost_project_frame"];
    assert_eq!(inner["resolved"], "app/config.py", "{v:#}");
    assert_eq!(inner["line"], 8);
    assert_eq!(inner["function"], "load");
    assert_eq!(inner["kind"], "project");
    assert_eq!(inner["file"], r"C:\Users\dev\settings-json\app\config.py");
    let frames = v["triage"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 6, "{v:#}");
    assert_eq!(
        frames[0]["kind"], "external",
        "json/decoder.py is the stdlib"
    );
    assert_eq!(frames[3]["resolved"], "app/config.py");
    assert_eq!(frames[5]["resolved"], "main.py");

    // The same log with a directory that does not have the files: named as written.
    let empty = tempfile::tempdir().unwrap();
    let out = analyze_wild("python/settings_windows.log", empty.path(), true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let inner = &v["triage"]["innermost_project_frame"];
    assert_eq!(inner["file"], r"C:\Users\dev\settings-json\app\config.py");
    assert!(inner["resolved"].is_null(), "{v:#}");
    assert_eq!(inner["line"], 8);

    // RSpec: the spec's frame is a test, the innermost project frame is in lib/.
    let out = analyze_wild(
        "ruby/rspec_gha.log",
        &wild("programs/wild/ruby/rspec_cart"),
        false,
    );
    let s = text(&out.stdout);
    for needle in [
        "where     lib/cart.rb:16 in block in total (project), written ./lib/cart.rb",
        "spec/cart_spec.rb:15 in block (3 levels) in <top (required)> (test)",
        "Innermost project frame: `lib/cart.rb:16",
    ] {
        assert!(s.contains(needle), "missing `{needle}` in:\n{s}");
    }
}

/// The model path on a real corpus project (`ms` from the npm registry, our bug): two repairs,
/// each answered by the protocol server as a model answers the prompt (the first a fenced
/// diff, the second SEARCH/REPLACE blocks), both validated in the local sandbox on the
/// project's environment, which the first repair builds and the second reuses.
#[test]
fn the_model_path_repairs_a_real_project_on_an_environment_built_once() {
    use coval_tests::real::{self, Run};
    use llm::testing::{ProtocolServer, Reply};
    let corpus = real::corpus().unwrap();
    let r = corpus
        .iter()
        .find(|r| r.name == "node_ms_durations")
        .unwrap();
    // Not under /tmp or /work: the local sandbox maps those to each run's own directories.
    let shared = std::path::PathBuf::from("/var/tmp/coval-test-env-cache");
    let root = tempfile::tempdir_in("/var/tmp").unwrap();
    let dir = root.path().join("durations");
    real::make(r, &dir, &shared.join("downloads")).unwrap();
    // The error log, as the project's CI prints it (in the tests' shared environment).
    let ci = Run {
        recipe: r,
        dir: dir.clone(),
        backend: "local",
        cache: shared.clone(),
        workspace: root.path().join("ws-ci"),
        env: vec![],
    };
    let log = ci.error_log(&ci.build().unwrap()).unwrap();
    // The repairs' own cache, with no environment yet (the downloads shared: no refetch).
    let cache = root.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::symlink(shared.join("downloads"), cache.join("downloads")).unwrap();
    let server = ProtocolServer::start().unwrap();
    let diff = "`longest` keeps the shorter duration: the comparison is reversed.\n\n```diff\n--- a/durations.js\n+++ b/durations.js\n@@ -12,5 +12,5 @@ function longest(durations) {\n   let best = null;\n   for (const d of durations) {\n-    if (best === null || ms(d) < ms(best)) best = d;\n+    if (best === null || ms(d) > ms(best)) best = d;\n   }\n   return best;\n```\n";
    let blocks = "<think>\nThe test expects '1d', the longest; `<` picks the shortest.\n</think>\nThe comparison must keep the longer duration.\n\ndurations.js\n<<<<<<< SEARCH\n    if (best === null || ms(d) < ms(best)) best = d;\n=======\n    if (best === null || ms(d) > ms(best)) best = d;\n>>>>>>> REPLACE\n";
    for _ in 0..6 {
        server.push("/api/tags", Reply::ollama_tags(&["qwen2.5-coder:7b"]));
    }
    server.push("/api/chat", Reply::ollama_chat(diff));
    server.push("/api/chat", Reply::ollama_chat(blocks));
    let run = Run {
        cache: cache.clone(),
        workspace: root.path().join("ws"),
        env: vec![("COVAL_LLM_URL".into(), server.url())],
        ..ci
    };
    let (log, src) = (log.display().to_string(), dir.display().to_string());
    let args = [
        "repair", "-e", &log, "-s", &src, "--engine", "llm", "--model", "qwen", "--json",
    ];
    let mut built = vec![];
    for n in 0..2 {
        let out = run.coval(&args).unwrap();
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "repair {n}: {said}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["outcome"], "fixed", "repair {n}: {v:#}");
        let patch = v["patch"].as_str().unwrap_or_default();
        assert!(real::undoes(r, patch), "repair {n}: {patch}");
        built.push(said.contains("environment: building"));
    }
    assert_eq!(built, [true, false], "built by the first repair only");
    // Each repair asked the model once, with the project's code in the prompt.
    let chats = server.requests_to("/api/chat");
    assert_eq!(chats.len(), 2);
    assert!(chats[0].json().to_string().contains("ms(d) < ms(best)"));
    // One environment in the repairs' cache.
    let out = run.coval(&["env", "list", "--json"]).unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let local: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["backend"] == "local")
        .collect();
    assert_eq!(local.len(), 1, "{listed:#}");
}
