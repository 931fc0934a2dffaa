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
