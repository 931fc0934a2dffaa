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

fn analyze(project: &str, log: &str) -> serde_json::Value {
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
        &[],
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
        &[],
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
