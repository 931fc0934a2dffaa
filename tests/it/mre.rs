//! The MRE stage on real projects in the real sandbox: an example that reproduces, and one
//! that does not (the test reads a data file the minimal example leaves out), which falls back
//! to the whole project and says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{Decided, Decision, EngineChoice, ProjectRef, RepairRequested};
use proto::{Envelope, Kind, Message, RepairId};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn mre_for(
    project: &Path,
    log: &str,
) -> Result<(proto::messages::MreSummary, tempfile::TempDir)> {
    mre_with(project, log, &[]).await
}

/// The MRE stage's summary of `project` for `log`, in the local sandbox, with these settings
/// (`COVAL_*` variables) too.
async fn mre_with(
    project: &Path,
    log: &str,
    settings: &[(&str, &str)],
) -> Result<(proto::messages::MreSummary, tempfile::TempDir)> {
    let mut env = vec![("COVAL_SANDBOX__BACKEND".to_owned(), "local".to_owned())];
    env.extend(
        settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let cfg = settings::load(&settings::LoadOptions {
        cwd: std::env::temp_dir().join("coval-no-config"),
        env,
        ..Default::default()
    })?;
    let tri = crate::triage::triage_of(log, project)?;
    let repair_id = RepairId::new();
    let request = RepairRequested {
        repair_id,
        project: ProjectRef::LocalPath {
            path: project.display().to_string(),
        },
        error_log: log.to_owned(),
        test_cmd: None,
        iteration: None,
        engine: EngineChoice::Search,
        model: None,
        max_attempts: 1,
        analyze_only: false,
        requested_at_ms: 0,
        no_rebuild: false,
        origin: None,
    };
    let ws = tempfile::tempdir()?;
    let stage = mre::handler::MreStage {
        sandbox: cfg.settings.sandbox.clone(),
        workspace: vocab::Workspace::new(ws.path()),
        projects: store::projects::Projects::local(None),
    };
    let msg = Message::Decided(Decided {
        request,
        triage: tri,
        decision: Decision::default(),
    });
    let out = stage
        .handle(Input {
            envelope: Envelope::origin(Kind::Decided, repair_id),
            message: Arc::new(msg),
            delivered: 1,
        })
        .await;
    let Outcome::Publish(ms) = out else {
        anyhow::bail!("mre did not publish: {out:?}")
    };
    let Some(Message::MreReady(m)) = ms.into_iter().next() else {
        anyhow::bail!("not MreReady")
    };
    Ok((m.mre, ws))
}

#[tokio::test]
async fn an_mre_that_reproduces() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let ex = repo().join("examples/inventory");
    let log = std::fs::read_to_string(ex.join("error.log"))?;
    let (m, ws) = mre_for(&ex, &log).await?;
    assert!(m.reproduced && !m.whole_project, "{m:?}");
    assert!(
        m.files.contains(&"inventory/pricing.py".to_owned())
            && m.files.contains(&"tests/test_pricing.py".to_owned()),
        "{m:?}"
    );
    assert!(
        !m.files.iter().any(|f| f.ends_with("README.md")),
        "docs are not part of the example: {m:?}"
    );
    assert_eq!(m.failing_tests.len(), 2, "{m:?}");
    assert_eq!(m.passing_tests.len(), 5, "{m:?}");
    let dir = std::fs::read_dir(vocab::Workspace::new(ws.path()).repairs_dir())?
        .next()
        .unwrap()?
        .path()
        .join("mre");
    let readme = std::fs::read_to_string(dir.join("README.md"))?;
    assert!(
        readme.contains("python3 -m pytest") && readme.contains("AssertionError"),
        "{readme}"
    );
    assert!(
        std::fs::read_to_string(dir.join("Dockerfile"))?.contains("FROM coval/python:bookworm")
    );
    Ok(())
}

#[tokio::test]
async fn an_mre_that_does_not_reproduce_falls_back_to_the_whole_project() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let project = repo().join("tests/fixtures/mre/data_driven");
    let log = std::fs::read_to_string(repo().join("tests/fixtures/mre/data_driven.log"))?;
    let (m, _ws) = mre_for(&project, &log).await?;
    assert!(m.whole_project, "{m:?}");
    assert!(m.reproduced, "the whole project reproduces: {m:?}");
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("does not reproduce") && n.contains("whole project")),
        "{:?}",
        m.notes
    );
    assert!(!m.files.iter().any(|f| f.ends_with("cases.json")), "{m:?}");
    Ok(())
}

/// A suite longer than the sandbox's limit (slow tests after the failing one), whose log saw
/// no loop: the baseline run is cut once at the limit, the log's failing test run alone ends
/// and fails as in the log, so the failure reproduces and is the target; the stage says it
/// is a long suite, not a loop, and ends within the limit plus the failing test's run.
#[tokio::test]
async fn a_suite_longer_than_the_limit_reproduces_from_the_logs_failing_tests() -> Result<()> {
    coval_tests::ensure_host_pytest()?;
    let project = tempfile::tempdir()?;
    let p = project.path();
    std::fs::create_dir(p.join("tests"))?;
    std::fs::write(p.join("calc.py"), "def add(a, b):\n    return a - b\n")?;
    std::fs::write(
        p.join("tests/test_calc.py"),
        "from calc import add\n\ndef test_add():\n    assert add(2, 3) == 5\n\ndef test_zero():\n    assert add(0, 0) == 0\n",
    )?;
    // Runs after test_calc.py (pytest takes files in name order): 8 s in all.
    let slow: String = (0..4)
        .map(|i| format!("def test_slow_{i}():\n    time.sleep(2)\n\n"))
        .collect();
    std::fs::write(
        p.join("tests/test_slow.py"),
        format!("import time\n\n{slow}"),
    )?;
    std::fs::write(p.join("pytest.ini"), "[pytest]\npythonpath = .\n")?;
    // pytest's own output of the suite (as CI printed it).
    let log = "..F...                                                                   [100%]\n\
=================================== FAILURES ===================================\n\
___________________________________ test_add ___________________________________\n\
\n    def test_add():\n>       assert add(2, 3) == 5\nE       assert -1 == 5\n\
E        +  where -1 = add(2, 3)\n\ntests/test_calc.py:4: AssertionError\n\
=========================== short test summary info ============================\n\
FAILED tests/test_calc.py::test_add - assert -1 == 5\n\
1 failed, 5 passed in 8.14s\n";
    let started = std::time::Instant::now();
    let (m, _ws) = mre_with(p, log, &[("COVAL_SANDBOX__TIMEOUT_SECS", "4")]).await?;
    let took = started.elapsed();
    assert!(m.reproduced, "{m:?}");
    assert_eq!(
        m.failing_tests,
        vec!["tests/test_calc.py::test_add".to_owned()],
        "{m:?}"
    );
    // The candidates' baseline (the failing test alone) ended: not a loop.
    assert!(!m.baseline_timed_out && m.whole_project, "{m:?}");
    // Candidates run the failing test alone, then its file; never the whole suite again.
    let cmd = m.candidate_cmd.clone().unwrap_or_default();
    assert!(
        cmd.last().map(String::as_str) == Some("tests/test_calc.py::test_add"),
        "{m:?}"
    );
    assert_eq!(m.wider.len(), 1, "{m:?}");
    assert_eq!(
        m.wider[0].last().map(String::as_str),
        Some("tests/test_calc.py"),
        "{m:?}"
    );
    assert!(
        m.passing_tests
            .contains(&"tests/test_calc.py::test_zero".to_owned()),
        "{m:?}"
    );
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("the rest of the suite is NOT run")),
        "{:?}",
        m.notes
    );
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("a suite longer than the limit, not a loop")),
        "{:?}",
        m.notes
    );
    assert!(
        !m.notes.iter().any(|n| n.contains("a test loops")),
        "{:?}",
        m.notes
    );
    // One cut run (4 s) and the failing test alone; no second whole-suite run.
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    Ok(())
}

/// What `coval repair` of the calc project said: its exit code, its output, the patch and the
/// report, and how long it took.
struct Repaired {
    code: Option<i32>,
    said: String,
    patch: String,
    report: String,
    took: std::time::Duration,
}

/// `add(a, b)` returns `a - b`; `tests/test_calc.py` has `test_add` (fails) and
/// `test_add_zero` (passes, and fails for `a * b`), beside the `extra` files. The log is
/// pytest's own output of `pytest_args`, as CI printed it; the repair runs the real `coval`
/// binary, search engine, local sandbox, with `env`.
fn repair_calc(
    extra: &[(&str, String)],
    pytest_args: &[&str],
    env: &[(&str, &str)],
) -> Result<Repaired> {
    coval_tests::ensure_host_pytest()?;
    let root = tempfile::tempdir()?;
    let p = root.path().join("proj");
    std::fs::create_dir_all(p.join("tests"))?;
    std::fs::write(p.join("calc.py"), "def add(a, b):\n    return a - b\n")?;
    std::fs::write(
        p.join("tests/test_calc.py"),
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 2) == 4\n\n\ndef test_add_zero():\n    assert add(5, 0) == 5\n",
    )?;
    for (path, text) in extra {
        std::fs::write(p.join(path), text)?;
    }
    std::fs::write(p.join("pytest.ini"), "[pytest]\npythonpath = .\n")?;
    let log = root.path().join("error.log");
    let ci = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "pytest", "-q"])
        .args(pytest_args)
        .current_dir(&p)
        .output()?;
    std::fs::write(&log, [ci.stdout, ci.stderr].concat())?;
    let coval = coval_tests::workspace_binary("coval")?;
    let started = std::time::Instant::now();
    let out = std::process::Command::new(coval)
        .arg("--workspace")
        .arg(root.path().join("ws"))
        .args(["repair", "--engine", "search", "-e"])
        .arg(&log)
        .arg("-s")
        .arg(&p)
        .env("COVAL_SANDBOX__BACKEND", "local")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("VIRTUAL_ENV")
        .output()?;
    let took = started.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let file = |prefix: &str| {
        said.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|f| std::fs::read_to_string(f.trim()).unwrap_or_default())
            .unwrap_or_default()
    };
    Ok(Repaired {
        code: out.status.code(),
        patch: file("patch"),
        report: file("report"),
        said,
        took,
    })
}

/// The checks of `r` that are not met, with everything needed to see why.
fn ensure_met(r: &Repaired, checks: &[(bool, &str)]) -> Result<()> {
    let unmet: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, w)| *w)
        .collect();
    anyhow::ensure!(
        unmet.is_empty(),
        "unmet: {unmet:?} ({:?})\n{}\n{}\n{}",
        r.took,
        r.said,
        r.report,
        r.patch
    );
    Ok(())
}

/// A suite longer than the limit, repaired by the real `coval` binary in the local sandbox
/// (real pytest, a 4 s limit, a suite of 8 s): candidates run the log's failing test alone,
/// then its test file, so the repair is FIXED; and the first candidate that makes the failing
/// test pass (`a * b`, rank 2) breaks a test of that file that passed (`add(5, 0) == 5`), so
/// it must lose to `a + b`. Before candidates ran the MRE's command, every one met the whole
/// suite, which was cut: no fix.
#[test]
fn a_suite_longer_than_the_limit_is_repaired_on_its_failing_tests_and_their_files() -> Result<()> {
    let slow: String = (0..4)
        .map(|i| format!("def test_slow_{i}():\n    time.sleep(2)\n\n"))
        .collect();
    // pytest's own output of the whole suite.
    let r = repair_calc(
        &[("tests/test_slow.py", format!("import time\n\n{slow}"))],
        &[],
        &[("COVAL_SANDBOX__TIMEOUT_SECS", "4")],
    )?;
    let report = &r.report;
    ensure_met(
        &r,
        &[
            (r.code == Some(0), "exit 0 (fixed)"),
            (r.patch.contains("+    return a + b"), "the patch is `a + b`"),
            (
                report.contains("`-` → `*`: breaks tests around the command that passed before: tests/test_calc.py::test_add_zero"),
                "`a * b` passes the failing test alone and loses on its file",
            ),
            (
                report.contains("| `tests/test_calc.py::test_add_zero` | passed | passed |"),
                "the passing test of the target's file passes after",
            ),
            (
                report.contains("The rest of the suite was NOT run for them")
                    && report.contains("COVAL_SANDBOX__TIMEOUT_SECS"),
                "the report says the rest of the suite was not run, and which setting changes that",
            ),
            (!report.contains("test_slow"), "no candidate ran the slow file"),
            // The cut suite once (4 s), the failing test alone, its file, then the candidates.
            (r.took < std::time::Duration::from_secs(40), "under 40 s"),
        ],
    )
}

/// A whole suite that cannot run here, for a reason outside the log's tests: a test file the
/// log never ran imports a package this environment lacks, so pytest stops at collection. The
/// log's own failing test runs alone and fails as in the log, so the repair goes on with it
/// and its file, FIXED, and the report says the rest was not run and what would run it.
/// Before, the repair stopped as "cannot run" (black 24.10 with a virtualenv without
/// `aiohttp`, which only `tests/test_blackd.py` needs).
#[test]
fn a_suite_that_cannot_collect_elsewhere_is_repaired_on_the_logs_tests() -> Result<()> {
    // The user ran the failing file, as the log shows.
    let r = repair_calc(
        &[(
            "tests/test_server.py",
            "import coval_absent_server_pkg\n\n\ndef test_serve():\n    assert coval_absent_server_pkg.serve()\n".into(),
        )],
        &["tests/test_calc.py"],
        &[],
    )?;
    ensure_met(
        &r,
        &[
            (r.code == Some(0), "exit 0 (fixed)"),
            (r.patch.contains("+    return a + b"), "the patch is `a + b`"),
            (
                r.report.contains("breaks tests around the command that passed before: tests/test_calc.py::test_add_zero"),
                "`a * b` passes the failing test alone and loses on its file",
            ),
            (
                r.report.contains("The rest of the suite was NOT run for them: it cannot run in the sandbox")
                    && r.report.contains("coval_absent_server_pkg"),
                "the report says the rest was not run, and the package that is missing",
            ),
        ],
    )
}
