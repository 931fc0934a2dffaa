//! Seconds per candidate for a small pytest project (tests/fixtures/projects/python-bench, five
//! tests), side by side: a fresh Docker container per candidate, one reused container (a
//! session) with one `exec` per candidate, the same session with its warm test server (one
//! fork per candidate), the local sandbox per run and its session's warm server; plus ratios.
//! Then a small `node --test` project in a reused container: one `exec` per candidate against
//! the session's warm node server, for the whole suite and for one test file.
//!
//!   cargo bench -p coval-tests --bench sandbox            (after `scripts/dev-services.sh up`)
//!   COVAL_BENCH_CANDIDATES=20 cargo bench -p coval-tests --bench sandbox
//!
//! Builds the Python base image first if it is missing. Every candidate's run must pass all
//! five tests, so the numbers measure real test runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use proto::messages::TestStatus;
use sandbox::{
    DockerSandbox, LocalSandbox, ProjectKind, RunResult, RunSpec, Sandbox, detect_project,
    parse_outcomes,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn check(kind: &ProjectKind, r: &RunResult) -> Result<()> {
    let t = parse_outcomes(kind, r);
    ensure!(
        r.success() && t.len() == 5 && t.iter().all(|o| o.status == TestStatus::Passed),
        "a benchmark run did not pass its five tests: {} {t:?}\n{}{}",
        r.verdict(),
        r.stdout,
        r.stderr
    );
    Ok(())
}

fn per_candidate(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() / n as f64
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::var("COVAL_BENCH_CANDIDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let status = Command::new(root().join("scripts/build-base-images.sh"))
        .arg("python")
        .status()
        .context("scripts/build-base-images.sh")?;
    ensure!(status.success(), "building the python base image failed");
    let project = root().join("tests/fixtures/projects/python-bench");
    let kind = detect_project(&project).context("python-bench not detected")?;
    let mut spec = RunSpec::new(&project, kind.test_cmd.clone());
    spec.collect = kind.reports.clone();
    spec.timeout = Duration::from_secs(120);

    let docker = DockerSandbox::connect("")
        .await
        .context("Docker must answer: run scripts/dev-services.sh up")?;
    // Warm-up: page cache, image layers, interpreter files.
    check(&kind, &docker.run(&spec).await?)?;

    let t0 = Instant::now();
    for _ in 0..n {
        check(&kind, &docker.run(&spec).await?)?;
    }
    let fresh = per_candidate(t0.elapsed(), n);

    let t0 = Instant::now();
    let mut session = docker
        .clone()
        .with_warm_server(false)
        .open_session(&spec)
        .await?;
    let opened = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for _ in 0..n {
        check(
            &kind,
            &session.run(&project, &spec.argv, spec.timeout).await?,
        )?;
    }
    let reused = per_candidate(t0.elapsed(), n);
    session.close().await?;

    // Opening the session starts the server too (it imports pytest); the first run is
    // timed apart from the others.
    let t0 = Instant::now();
    let mut session = docker.open_session(&spec).await?;
    let warm_opened = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    check(
        &kind,
        &session.run(&project, &spec.argv, spec.timeout).await?,
    )?;
    let warm_first = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for _ in 0..n {
        check(
            &kind,
            &session.run(&project, &spec.argv, spec.timeout).await?,
        )?;
    }
    let warm = per_candidate(t0.elapsed(), n);
    let stats = session.warm_stats().clone();
    ensure!(
        stats.served == n as u64 + 1 && stats.fallbacks == 0,
        "the warm server did not serve every run: {stats:?}"
    );
    session.close().await?;

    let local = LocalSandbox::new();
    check(&kind, &local.run(&spec).await?)?;
    let t0 = Instant::now();
    for _ in 0..n {
        check(&kind, &local.run(&spec).await?)?;
    }
    let local_s = per_candidate(t0.elapsed(), n);
    let t0 = Instant::now();
    let mut lsession = Sandbox::open_session(&local, &spec).await?;
    let local_opened = t0.elapsed().as_secs_f64();
    check(
        &kind,
        &lsession.run(&project, &spec.argv, spec.timeout).await?,
    )?;
    let t0 = Instant::now();
    for _ in 0..n {
        check(
            &kind,
            &lsession.run(&project, &spec.argv, spec.timeout).await?,
        )?;
    }
    let local_warm = per_candidate(t0.elapsed(), n);
    ensure!(
        lsession.warm_stats().served == n as u64 + 1,
        "the local warm server did not serve every run: {:?}",
        lsession.warm_stats()
    );
    lsession.close().await?;
    let node = node_runs(&docker, n).await?;
    let left = docker.containers().await?;
    ensure!(left.is_empty(), "containers left behind: {left:?}");

    println!(
        "sandbox benchmark: {n} candidates of python-bench (pytest, 5 tests), seconds per candidate"
    );
    println!("  fresh container per candidate  {fresh:>7.3} s");
    println!(
        "  reused container, one exec each {reused:>7.3} s   (+ {opened:.3} s once to start it)"
    );
    println!(
        "  reused container, warm server   {warm:>7.3} s   (+ {warm_opened:.3} s once to start it and the server; first run {warm_first:.3} s)"
    );
    println!(
        "  local sandbox, fresh process    {local_s:>7.3} s   ({})",
        local.name()
    );
    println!(
        "  local session, warm server      {local_warm:>7.3} s   (+ {local_opened:.3} s once to start the server)"
    );
    println!(
        "  ratios: fresh/session {:.2}x, session/warm {:.2}x, fresh/warm {:.2}x, local fresh/warm {:.2}x",
        fresh / reused,
        reused / warm,
        fresh / warm,
        local_s / local_warm
    );
    println!(
        "node-bench (node --test, 2 files, 4 tests) in a reused container, seconds per candidate:"
    );
    println!(
        "  whole suite: one exec each {:>7.3} s, warm node server {:>7.3} s ({:.2}x)",
        node.suite_exec,
        node.suite_warm,
        node.suite_exec / node.suite_warm
    );
    println!(
        "  one file (failing-first's `node FILE`): one exec each {:>7.3} s, warm node server {:>7.3} s ({:.2}x)",
        node.file_exec,
        node.file_warm,
        node.file_exec / node.file_warm
    );
    Ok(())
}

struct NodeRuns {
    suite_exec: f64,
    suite_warm: f64,
    file_exec: f64,
    file_warm: f64,
}

/// A passing `node --test` project, run `n` times per way in one reused container: by one
/// `exec` each, and through the session's warm node server.
async fn node_runs(docker: &DockerSandbox, n: usize) -> Result<NodeRuns> {
    let status = Command::new(root().join("scripts/build-base-images.sh"))
        .arg("node")
        .status()
        .context("scripts/build-base-images.sh node")?;
    ensure!(status.success(), "building the node base image failed");
    let dir = tempfile::tempdir()?;
    let p = dir.path();
    std::fs::create_dir_all(p.join("test"))?;
    std::fs::write(
        p.join("package.json"),
        r#"{"name":"node-bench","private":true,"scripts":{"test":"node --test"}}"#,
    )?;
    std::fs::write(
        p.join("calc.js"),
        "exports.add = (a, b) => a + b;\nexports.mul = (a, b) => a * b;\n",
    )?;
    for (file, op, a, b, want) in [("add", "add", 2, 3, 5), ("mul", "mul", 4, 5, 20)] {
        std::fs::write(
            p.join(format!("test/{file}.test.js")),
            format!(
                "const test = require('node:test');\nconst assert = require('node:assert');\nconst c = require('../calc.js');\ntest('{op} small', () => assert.strictEqual(c.{op}({a}, {b}), {want}));\ntest('{op} zero', () => assert.strictEqual(c.{op}(0, 0), 0));\n"
            ),
        )?;
    }
    let kind = detect_project(p).context("node-bench not detected")?;
    let mut spec = RunSpec::new(p, kind.test_cmd.clone());
    spec.image = "coval/node:bookworm".into();
    spec.timeout = Duration::from_secs(120);
    let file: Vec<String> = ["node", "--test-reporter=tap", "test/add.test.js"]
        .map(str::to_owned)
        .into();
    let passed = |r: &RunResult, tests: usize| -> Result<()> {
        let t = parse_outcomes(&kind, r);
        ensure!(
            r.success() && t.len() == tests && t.iter().all(|o| o.status == TestStatus::Passed),
            "a node benchmark run did not pass its {tests} tests: {} {t:?}\n{}{}",
            r.verdict(),
            r.stdout,
            r.stderr
        );
        Ok(())
    };
    let mut times = [0.0; 4];
    for (i, warm) in [false, true].into_iter().enumerate() {
        let mut session = docker
            .clone()
            .with_warm_node(warm)
            .open_session(&spec)
            .await?;
        passed(&session.run(p, &spec.argv, spec.timeout).await?, 4)?;
        passed(&session.run(p, &file, spec.timeout).await?, 2)?;
        let t0 = Instant::now();
        for _ in 0..n {
            passed(&session.run(p, &spec.argv, spec.timeout).await?, 4)?;
        }
        times[i] = per_candidate(t0.elapsed(), n);
        let t0 = Instant::now();
        for _ in 0..n {
            passed(&session.run(p, &file, spec.timeout).await?, 2)?;
        }
        times[2 + i] = per_candidate(t0.elapsed(), n);
        let served = session.warm_stats().served;
        ensure!(
            served == if warm { 2 * n as u64 + 2 } else { 0 },
            "warm node server {warm}: served {served}: {:?}",
            session.warm_stats()
        );
        session.close().await?;
    }
    Ok(NodeRuns {
        suite_exec: times[0],
        suite_warm: times[1],
        file_exec: times[2],
        file_warm: times[3],
    })
}
