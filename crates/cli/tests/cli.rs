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
    assert_eq!(v["decision"]["verdict"], "rebuild", "{v:#}");
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
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .current_dir(&src)
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
    };
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
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("was not found"),
        "{}",
        text(&out.stderr)
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
        "go_primes-1",
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
