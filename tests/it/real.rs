//! Real projects with third-party dependencies (the corpus's CI subset; all of it runs in the
//! `real_projects` bench): each is reproduced and repaired in Docker and locally, with its
//! environment built once for all repairs of the project; a failed install is its own
//! outcome (exit 2 for a broken manifest, 3 for an unreachable registry), never a failing test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use coval_tests::real::{self, Run};

fn cache() -> PathBuf {
    // Not under /tmp or /work: the local sandbox maps those to each run's own directories.
    PathBuf::from("/var/tmp/coval-test-env-cache")
}

fn run_one(r: &real::Recipe, backend: &'static str, root: &std::path::Path) -> Result<()> {
    let dir = root.join(format!("{}-{backend}", r.name));
    real::make(r, &dir, &cache().join("downloads"))?;
    let local = Run {
        recipe: r,
        dir: dir.clone(),
        backend: "local",
        cache: cache(),
        workspace: root.join(format!("ws-{}-{backend}", r.name)),
        env: real::user_env(r, &cache().join("downloads")),
    };
    // The error log, as the project's CI prints it: its tests in its local environment.
    let log = local.error_log(&local.build()?)?;
    let run = Run { backend, ..local };
    let first = run.repair(&log)?;
    ensure!(
        first.code == 0,
        "{} ({backend}): exit {}:\n{}",
        r.name,
        first.code,
        first.stderr
    );
    let patch = first.patch.clone().unwrap_or_default();
    ensure!(
        real::undoes(r, &patch),
        "{} ({backend}): the patch does not touch the broken line `{}`:\n{patch}",
        r.name,
        r.bug.replace
    );
    ensure!(
        first.stderr.contains(&format!("sandbox: {backend}")),
        "{} ({backend}): not said which sandbox:\n{}",
        r.name,
        first.stderr
    );
    // A second repair of the same project builds nothing.
    let second = run.repair(&log)?;
    ensure!(
        second.code == 0,
        "{}: second repair exit {}",
        r.name,
        second.code
    );
    ensure!(
        !second.stderr.contains("environment: building"),
        "{} ({backend}): the environment was built again:\n{}",
        r.name,
        second.stderr
    );
    Ok(())
}

#[test]
fn real_projects_with_dependencies_are_repaired_in_docker_and_locally() -> Result<()> {
    let root = tempfile::tempdir_in(coval_tests::repo_root().join("target"))?;
    let mut failures = vec![];
    for r in real::corpus()?.iter().filter(|r| r.ci) {
        for backend in ["docker", "local"] {
            if let Err(e) = run_one(r, backend, root.path()) {
                failures.push(format!("{e:#}"));
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// jest (CommonJS, locally) and vitest (ES modules, in Docker and locally) report each test
/// through their own reporters: the failure reproduces by test name, the passing tests are the
/// baseline, and the search engine repairs the bug, each repair within its bound. vitest
/// locally: a fresh vitest per candidate (about 1.5 CPU-seconds each, here), 31 candidates
/// before the fix; 55 s measured on this machine at load 6, bounded at 90 s. Before each run's
/// copy had a `node_modules` of its own, vitest's results cache write into the read-only
/// environment failed every run (exit 1), so even the right candidate lost.
#[test]
fn jest_and_vitest_projects_report_each_test() -> Result<()> {
    let root = tempfile::tempdir_in(coval_tests::repo_root().join("target"))?;
    let corpus = real::corpus()?;
    let mut failures = vec![];
    for (name, backend, test, bound) in [
        (
            "node_jest_invoice",
            "local",
            "invoice.test.js::subtotal > adds quantity times price",
            120,
        ),
        (
            "node_vitest_stats",
            "docker",
            "test/stats.test.js::median > even count",
            180,
        ),
        (
            "node_vitest_stats",
            "local",
            "test/stats.test.js::median > even count",
            90,
        ),
    ] {
        let r = corpus.iter().find(|r| r.name == name).context(name)?;
        let dir = root.path().join(format!("{name}-{backend}"));
        real::make(r, &dir, &cache().join("downloads"))?;
        let local = Run {
            recipe: r,
            dir,
            backend: "local",
            cache: cache(),
            workspace: root.path().join(format!("ws-{name}-{backend}")),
            env: vec![],
        };
        let log = local.error_log(&local.build()?)?;
        let run = Run { backend, ..local };
        let done = run.repair(&log)?;
        eprintln!(
            "{name} ({backend}): repaired in {:.1} s",
            done.wall.as_secs_f64()
        );
        let report = done
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("report"))
            .map(|p| std::fs::read_to_string(p.trim()).unwrap_or_default())
            .unwrap_or_default();
        let patch = done.patch.clone().unwrap_or_default();
        let checks = [
            (done.code == 0, "exit 0"),
            (real::undoes(r, &patch), "a patch on the broken line"),
            (
                done.stderr.contains("reproduced in"),
                "the failure reproduced",
            ),
            (
                !done.stderr.contains(" 0 passing"),
                "passing tests counted one by one",
            ),
            (
                report.contains(&format!("| `{test}` | failed | passed |")),
                "the failing test fixed, by name, in the report",
            ),
            (
                done.wall < std::time::Duration::from_secs(bound),
                "the repair within its bound",
            ),
        ];
        failures.extend(unmet(
            &format!("{name} ({backend})"),
            &done,
            &checks,
            &report,
        ));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// ES module projects (`"type": "module"`) import their dependencies in both sandboxes: in
/// Docker from the environment's `/node_modules`, locally from the environment's
/// `node_modules` linked into each run's copy (`import` never reads NODE_PATH). The failure
/// reproduces (not an ERR_MODULE_NOT_FOUND) and the search engine repairs it.
#[test]
fn es_module_projects_import_their_dependencies_in_docker_and_locally() -> Result<()> {
    let root = tempfile::tempdir_in(coval_tests::repo_root().join("target"))?;
    let corpus = real::corpus()?;
    let mut failures = vec![];
    for (name, backend) in [
        ("node_esm_columns", "local"),
        ("node_esm_columns", "docker"),
    ] {
        let r = corpus.iter().find(|r| r.name == name).context(name)?;
        let dir = root.path().join(format!("{name}-{backend}"));
        real::make(r, &dir, &cache().join("downloads"))?;
        let local = Run {
            recipe: r,
            dir,
            backend: "local",
            cache: cache(),
            workspace: root.path().join(format!("ws-{name}-{backend}")),
            env: vec![],
        };
        let log = local.error_log(&local.build()?)?;
        // The log is the bug's failure, as CI prints it after `npm ci`: not a failed import.
        let printed = std::fs::read_to_string(&log)?;
        ensure!(
            printed.contains("not ok") && !printed.contains("ERR_MODULE_NOT_FOUND"),
            "{name}: the error log is not the bug's failure:\n{printed}"
        );
        let run = Run { backend, ..local };
        let done = run.repair(&log)?;
        let patch = done.patch.clone().unwrap_or_default();
        let checks = [
            (done.code == 0, "exit 0"),
            (real::undoes(r, &patch), "a patch on the broken line"),
            (
                done.stderr.contains("reproduced in"),
                "the failure reproduced",
            ),
            (
                !done.stderr.contains("ERR_MODULE_NOT_FOUND"),
                "free of ERR_MODULE_NOT_FOUND",
            ),
        ];
        failures.extend(unmet(&format!("{name} ({backend})"), &done, &checks, ""));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// One failure line per check a repair did not meet, with its exit code, its output and
/// `more` (the report, say).
fn unmet(
    what_ran: &str,
    done: &real::Repaired,
    checks: &[(bool, &str)],
    more: &str,
) -> Vec<String> {
    checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| {
            format!(
                "{what_ran}: not {what}; exit {}:\n{}\n{more}",
                done.code, done.stderr
            )
        })
        .collect()
}

/// A Python project of the test's own (`source: app`), with no bug to write.
fn app_recipe(name: &str) -> real::Recipe {
    real::Recipe {
        name: name.into(),
        language: "python".into(),
        source: "app".into(),
        bug: real::Bug {
            file: String::new(),
            find: String::new(),
            replace: String::new(),
        },
        ci: true,
        note: String::new(),
        go_modules: vec![],
    }
}

#[test]
fn a_failed_install_is_its_own_outcome() -> Result<()> {
    let root = tempfile::tempdir_in(coval_tests::repo_root().join("target"))?;
    let dir = root.path().join("p");
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::write(
        dir.join("tests/test_a.py"),
        "import attrs\n\ndef test_a():\n    assert attrs.has(int) is False\n",
    )?;
    std::fs::write(
        dir.join("error.log"),
        "FAILED tests/test_a.py::test_a - AssertionError\n",
    )?;
    let recipe = app_recipe("install");
    let mut run = Run {
        recipe: &recipe,
        dir: dir.clone(),
        backend: "local",
        cache: cache(),
        workspace: root.path().join("ws"),
        env: vec![],
    };
    let log = dir.join("error.log").display().to_string();
    let src = dir.display().to_string();
    // A version that does not exist: the manifest is broken (exit 2), and it is named.
    std::fs::write(dir.join("requirements.txt"), "attrs==99.0.0\n")?;
    let repair = [
        "repair", "-e", &log, "-s", &src, "--engine", "search", "--json",
    ];
    let out = run.coval(&repair)?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2),
        "exit {:?}:\n{said}",
        out.status.code()
    );
    ensure!(
        said.contains("`attrs==99.0.0`") && said.contains("No matching distribution"),
        "{said}"
    );
    // The report says it: the tests cannot run, for this reason; no candidate was tried.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let blocked = &report["mre"]["blocked"];
    ensure!(report["outcome"] == "cannot_run", "{report}");
    ensure!(blocked["reason"] == "manifest", "{report}");
    ensure!(
        blocked["what"]
            .as_str()
            .is_some_and(|w| w.contains("attrs==99.0.0"))
            && blocked["output_tail"]
                .as_str()
                .is_some_and(|t| t.contains("No matching distribution")),
        "{report}"
    );
    ensure!(
        report["attempts"].as_array().map(Vec::len) == Some(0),
        "{report}"
    );
    // A registry that does not answer (a closed port on loopback): exit 3.
    // A fresh key every run: a comment with a nonce (no environment of it exists).
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    std::fs::write(
        dir.join("requirements.txt"),
        format!("attrs==23.2.0  # {nonce}\n"),
    )?;
    run.env = vec![
        ("PIP_INDEX_URL".into(), "http://127.0.0.1:9/simple".into()),
        ("PIP_FIND_LINKS".into(), String::new()),
        ("PIP_NO_CACHE_DIR".into(), "1".into()),
    ];
    for backend in ["local", "docker"] {
        run.backend = backend;
        let out = run.coval(&repair)?;
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(3),
            "{backend}: exit {:?}:\n{said}",
            out.status.code()
        );
        // The package the installer was fetching when it gave up (pip may ask for the runner
        // it installs alongside before the project's own), and the installer's lines.
        ensure!(
            said.contains("cannot be reached") && said.contains("while fetching `"),
            "{backend}: {said}"
        );
        ensure!(
            said.contains("cannot be fetched: the package registry cannot be reached")
                && !said.contains("is missing"),
            "{backend}: {said}"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            report["mre"]["blocked"]["reason"] == "registry",
            "{backend}: {report}"
        );
    }
    Ok(())
}

/// The build containers of a project dir (`dev.coval.env.project` label), running or not.
fn build_containers(dir: &std::path::Path) -> Result<Vec<String>> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.coval.env.project={}", dir.display()))
        .output()?;
    ensure!(out.status.success(), "docker ps failed: {out:?}");
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Polls until `dir` has no build container; how long that took.
fn until_no_build_container(dir: &std::path::Path, limit: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let left = build_containers(dir)?;
        if left.is_empty() {
            return Ok(t0.elapsed());
        }
        ensure!(
            t0.elapsed() < limit,
            "build containers still there after {limit:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Docker environment build does not wait for its container's removal (the engine removes
/// it, AutoRemove), and leaves none behind: after a build, and after a `coval env build`
/// killed in the middle of its install step (the step ends when coval's attached stdin
/// closes, whatever its installer was doing).
#[test]
fn docker_environment_builds_leave_no_container_even_when_killed() -> Result<()> {
    let root = tempfile::tempdir_in(coval_tests::repo_root().join("target"))?;
    let dir = root.path().join("p");
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::write(
        dir.join("tests/test_a.py"),
        "def test_a():\n    assert 1 + 1 == 2\n",
    )?;
    let recipe = app_recipe("env-build-container");
    // A fresh key every run: the nonce is in the setup commands.
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let mut run = Run {
        recipe: &recipe,
        dir: dir.clone(),
        backend: "docker",
        cache: cache(),
        workspace: root.path().join("ws"),
        env: vec![(
            "COVAL_SANDBOX__SETUP".into(),
            format!("echo slow-install-{nonce}; sleep 300"),
        )],
    };
    let src = dir.display().to_string();
    let mut child = run
        .command(&["env", "build", "-s", &src])?
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Killed once its install step runs (the container exists).
    let t0 = Instant::now();
    while build_containers(&dir)?.is_empty() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("coval env build ended before its install step: {status}");
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "no build container after 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    child.kill()?;
    child.wait()?;
    let gone = until_no_build_container(&dir, Duration::from_secs(30))?;
    eprintln!("killed build: its container was gone {gone:?} after the kill");

    // A build that succeeds: the image is there, and its container goes without coval.
    run.env = vec![(
        "COVAL_SANDBOX__SETUP".into(),
        format!("echo quick-install-{nonce}"),
    )];
    let built = run.build()?;
    ensure!(!built.reused, "{built:?}");
    let gone = until_no_build_container(&dir, Duration::from_secs(30))?;
    eprintln!("built: its container was gone {gone:?} after coval env build returned");
    let out = run.coval(&["env", "prune", "--key", &built.key])?;
    ensure!(out.status.success(), "prune failed: {out:?}");
    Ok(())
}
