//! The distributed mode with the real binaries: the six `coval-<stage>` worker processes and
//! a real nats-server; repairs submitted with `coval submit`/`coval repair --nats`, followed
//! through the event stream, and checked in the integration worker's ledger.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use coval_tests::{NatsServer, SyncMode, ensure_host_pytest, repo_root, workspace_binary};
use futures::StreamExt;

pub(crate) const STAGES: [&str; 6] = ["triage", "decision", "mre", "fix", "validate", "integrate"];

/// One worker process; its stderr goes to a log file the test reads.
pub(crate) struct WorkerProc {
    pub(crate) name: String,
    pub(crate) child: Child,
    log: PathBuf,
}

impl WorkerProc {
    pub(crate) fn new(name: &str, child: Child, log: PathBuf) -> WorkerProc {
        WorkerProc {
            name: name.into(),
            child,
            log,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (a worker drains and exits 0).
    pub(crate) fn stop(mut self) -> Result<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("{} did not stop within 30 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A distributed deployment for one test: its namespace, its NATS, its workers' workspaces.
pub(crate) struct Cluster {
    pub(crate) nats: NatsServer,
    pub(crate) ns: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workers: Vec<WorkerProc>,
}

impl Cluster {
    pub(crate) fn new(ns: &str, extra_env: &[(&str, &str)]) -> Result<Cluster> {
        ensure_host_pytest()?;
        let nats = NatsServer::start(SyncMode::Default)?;
        let mut env: Vec<(String, String)> = vec![
            ("COVAL_BUS__NAMESPACE".into(), ns.into()),
            ("COVAL_SANDBOX__BACKEND".into(), "local".into()),
            ("COVAL_BUS__ACK_WAIT_SECS".into(), "3".into()),
            ("COVAL_BUS__PROGRESS_INTERVAL_SECS".into(), "1".into()),
            ("COVAL_BUS__RETRY_BACKOFF_SECS".into(), "1".into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Ok(Cluster {
            nats,
            ns: ns.into(),
            dir: tempfile::tempdir()?,
            env,
            workers: vec![],
        })
    }

    /// Starts `coval-<stage>` with its own workspace (`workers/<stage>` unless `workspace`
    /// names a shared one) and waits until it says it is ready.
    pub(crate) fn start(&mut self, stage: &str, copy: usize) -> Result<()> {
        let name = format!("{stage}-{copy}");
        let bin = workspace_binary(&format!("coval-{stage}"))?;
        let ws = self.dir.path().join("ws").join(stage);
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(&bin)
            .args(["--nats", &self.nats.url, "--workspace"])
            .arg(&ws)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let w = WorkerProc { name, child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !w.log_text().contains(": ready") {
            if Instant::now() > deadline {
                bail!("{} not ready within 30 s:\n{}", w.name, w.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.workers.push(w);
        Ok(())
    }

    pub(crate) fn coval(&self) -> Result<Command> {
        let mut c = Command::new(workspace_binary("coval")?);
        // Run in a CI of its own, a test's submissions must not be taken for a retried job.
        c.current_dir(self.dir.path())
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITLAB_CI")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("--workspace")
            .arg(self.dir.path().join("client"));
        Ok(c)
    }

    /// The integration worker's ledger, through `coval status --nats --json`.
    pub(crate) fn ledger(&self) -> Result<serde_json::Value> {
        let out = self
            .coval()?
            .args(["status", "--json", "--nats", &self.nats.url])
            .output()?;
        ensure!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until the ledger has `n` completed repairs.
    pub(crate) fn wait_completed(&self, n: usize, within: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let l = self.ledger()?;
            let done = l["repairs"]
                .as_array()
                .map(|r| r.iter().filter(|r| r["status"] == "completed").count())
                .unwrap_or(0);
            if done >= n {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!(
                    "{done} of {n} repairs completed within {within:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last lines of each worker's log, for a failure message.
    pub(crate) fn logs(&self) -> String {
        self.workers
            .iter()
            .map(|w| format!("--- {}\n{}", w.name, tail(&w.log_text(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many `repair_completed` events each repair has in the event stream.
    pub(crate) fn completions(&self) -> Result<HashMap<String, usize>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = async_nats::connect(&self.nats.url).await?;
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_stream(format!("{}_EVENTS", self.ns.to_ascii_uppercase()))
                .await?;
            let mut info = stream
                .info_with_subjects(format!("{}.events.*.repair_completed", self.ns))
                .await?;
            let mut out = HashMap::new();
            while let Some(s) = info.next().await {
                let (subject, count) = s?;
                let repair = subject.split('.').nth(2).unwrap_or_default().to_owned();
                out.insert(repair, count);
            }
            Ok(out)
        })
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A copy of the example project shipped in `examples/inventory` (a real multi-file Python
/// project with a one-line bug), optionally slowed down so each test run takes longer.
pub(crate) fn project(dir: &Path, slow_secs: Option<f64>) -> Result<PathBuf> {
    let dst = dir.join("inventory");
    let src = repo_root().join("examples/inventory");
    let status = Command::new("cp").arg("-r").arg(&src).arg(&dst).status()?;
    ensure!(status.success(), "cp failed");
    if let Some(s) = slow_secs {
        std::fs::write(
            dst.join("tests/conftest.py"),
            format!("import time\ntime.sleep({s})\n"),
        )?;
    }
    Ok(dst)
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn twenty_repairs_submitted_at_once_each_complete_exactly_once() -> Result<()> {
    // Retention keeps the newest 25 of the 40 iterations the 20 repairs make (a snapshot and
    // a repaired tree each).
    let mut c = Cluster::new("twenty", &[("COVAL_PROJECT__MAX_ITERATIONS", "25")])?;
    for s in STAGES {
        c.start(s, 0)?;
    }
    let proj = project(c.dir.path(), None)?;
    let log = proj.join("error.log");
    let t0 = Instant::now();
    let submits: Vec<Child> = (0..20)
        .map(|_| -> Result<Child> {
            Ok(c.coval()?
                .args(["submit", "--nats", &c.nats.url, "-e"])
                .arg(&log)
                .arg("-s")
                .arg(&proj)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?)
        })
        .collect::<Result<_>>()?;
    let mut ids = HashSet::new();
    for s in submits {
        let out = s.wait_with_output()?;
        ensure!(out.status.success(), "submit failed: {}", text(&out));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(id.starts_with("rep_"), "submit printed {id:?}");
        ids.insert(id);
    }
    ensure!(ids.len() == 20, "20 distinct repair ids, got {}", ids.len());

    let ledger = c.wait_completed(20, Duration::from_secs(600))?;
    eprintln!(
        "20 repairs over NATS with six worker processes: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let repairs = ledger["repairs"].as_array().context("repairs")?;
    let strangers: Vec<String> = repairs
        .iter()
        .filter(|r| !r["id"].as_str().is_some_and(|id| ids.contains(id)))
        .map(|r| r.to_string())
        .collect();
    ensure!(
        repairs.len() == 20 && strangers.is_empty(),
        "{} repairs in the ledger; not submitted: {strangers:?}\n{}",
        repairs.len(),
        c.logs()
    );
    let mut seen = HashSet::new();
    let mut new_iterations = HashSet::new();
    for r in repairs {
        let id = r["id"].as_str().context("id")?.to_owned();
        ensure!(ids.contains(&id), "unknown repair {id} in the ledger");
        ensure!(seen.insert(id.clone()), "{id} twice in the ledger");
        ensure!(r["outcome"] == "fixed", "{id}: {r}");
        let it = r["new_iteration"].as_str().context("new_iteration")?;
        ensure!(new_iterations.insert(it.to_owned()), "{it} given twice");
    }
    // Every iteration is recorded once; retention kept the newest 25, records and files.
    let its = ledger["iterations"].as_array().context("iterations")?;
    ensure!(
        its.len() == 25,
        "{} iterations kept, expected 25",
        its.len()
    );
    let kept: HashSet<&str> = its.iter().filter_map(|i| i["id"].as_str()).collect();
    ensure!(kept.len() == 25, "duplicate iteration records");
    ensure!(
        its.iter().all(|i| i["on_disk"] == true),
        "a kept iteration lost its files"
    );
    let on_disk = std::fs::read_dir(c.dir.path().join("ws/integrate/iterations"))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().contains('.'))
        .count();
    ensure!(on_disk == 25, "{on_disk} iteration directories on disk");
    for i in its {
        if let Some(r) = i["origin"]["repair"].as_str() {
            ensure!(ids.contains(r), "iteration of unknown repair {r}");
        }
    }
    // And the event stream carries exactly one completion per repair.
    let completions = c.completions()?;
    for id in &ids {
        ensure!(
            completions.get(id) == Some(&1),
            "{id}: {:?} completions",
            completions.get(id)
        );
    }
    // `coval watch` replays a finished repair from the event stream, report included.
    let one = ids.iter().next().context("an id")?;
    let out = c
        .coval()?
        .args(["watch", one, "--nats", &c.nats.url, "--timeout", "60"])
        .output()?;
    ensure!(out.status.code() == Some(0), "watch: {}", text(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).starts_with("fixed"),
        "{}",
        text(&out)
    );
    ensure!(
        c.dir
            .path()
            .join(format!("client/repairs/repair-{one}/final.patch"))
            .is_file(),
        "watch did not fetch the patch"
    );
    // An id nobody submitted: a note, then the timeout (exit 1), not a hang.
    let unknown = proto::RepairId::new().to_string();
    let out = c
        .coval()?
        .args(["watch", &unknown, "--nats", &c.nats.url, "--timeout", "1"])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "watch unknown: {}",
        text(&out)
    );
    ensure!(
        err.contains("no events") && err.contains("did not finish"),
        "{err}"
    );
    // Workers drain and exit 0 on SIGTERM.
    for w in std::mem::take(&mut c.workers) {
        let name = w.name.clone();
        let status = w.stop()?;
        ensure!(status.success(), "{name} exited with {status}");
    }
    Ok(())
}

/// The scratch dirs (`vocab::scratch`, named `…-p<pid>-…`) of process `pid` in `tmp` and
/// anywhere under `ws`.
fn scratch_of(pid: u32, tmp: &Path, ws: &Path) -> Vec<PathBuf> {
    let tag = format!("-p{pid}-");
    let mut out = vec![];
    let mut stack = vec![tmp.to_path_buf(), ws.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(&tag) {
                out.push(p);
            } else if d != tmp && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn a_validation_worker_killed_mid_repair_is_replaced_by_a_second_copy() -> Result<()> {
    // Each test run sleeps 1.5 s, so validation holds its message for seconds. The workers'
    // temp dirs go to a dir of this test's own, to count what the killed one leaves.
    let tmp = tempfile::tempdir()?;
    let tmp_dir = tmp.path().to_str().context("temp dir")?;
    let mut c = Cluster::new(
        "sigkill",
        &[("COVAL_TRIAGE__COVERAGE", "false"), ("TMPDIR", tmp_dir)],
    )?;
    for s in ["triage", "decision", "mre", "fix", "integrate"] {
        c.start(s, 0)?;
    }
    c.start("validate", 0)?;
    let proj = project(c.dir.path(), Some(1.5))?;
    let before = std::fs::read(proj.join("inventory/pricing.py"))?;
    let client = c
        .coval()?
        .args(["repair", "--nats", &c.nats.url, "-e"])
        .arg(proj.join("error.log"))
        .arg("-s")
        .arg(&proj)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    // Wait until the validation worker holds the FixProposed message, then SIGKILL it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let held = rt.block_on(async {
        let client = async_nats::connect(&c.nats.url).await?;
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(s) = js
                .get_stream(format!("{}_WORK_VALIDATE", c.ns.to_ascii_uppercase()))
                .await
                && let Ok(info) = s.consumer_info("validate").await
                && info.num_ack_pending > 0
            {
                return Ok::<_, anyhow::Error>(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    ensure!(held, "the validation worker never took the message");
    let victim = c
        .workers
        .iter()
        .position(|w| w.name == "validate-0")
        .context("validate-0")?;
    let mut victim = c.workers.remove(victim);
    let victim_pid = victim.pid();
    // In the middle of the validation: once it has made its work dir or a sandbox's dir.
    let validate_ws = c.dir.path().join("ws").join("validate");
    let deadline = Instant::now() + Duration::from_secs(60);
    while scratch_of(victim_pid, tmp.path(), &validate_ws).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.child.kill()?; // SIGKILL
    let status = victim.child.wait()?;
    ensure!(!status.success(), "the victim was not killed: {status}");
    let left = scratch_of(victim_pid, tmp.path(), &validate_ws);
    ensure!(
        !left.is_empty(),
        "the killed worker left no scratch dir: was it killed mid-validation?"
    );
    // Meanwhile the ledger's owner reports the repair as in flight.
    let ledger = c.ledger()?;
    let repairs = ledger["repairs"].as_array().context("repairs")?;
    ensure!(
        repairs.len() == 1 && repairs[0]["status"] == "in_flight",
        "while validation is down: {ledger}"
    );
    c.start("validate", 1)?;
    let second = c.workers.last().context("second copy")?.pid();

    let out = client.wait_with_output()?;
    ensure!(out.status.code() == Some(0), "repair: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The validation result came from the second copy, not the killed one.
    let validate_line = stderr
        .lines()
        .find(|l| l.starts_with("validate"))
        .context("no validate progress line")?;
    ensure!(
        validate_line.contains(&format!("/{second}]")),
        "validated by {validate_line:?}, expected pid {second} (killed {victim_pid})"
    );
    let ledger = c.ledger()?;
    let repairs = ledger["repairs"].as_array().context("repairs")?;
    ensure!(repairs.len() == 1, "{} repairs", repairs.len());
    ensure!(repairs[0]["outcome"] == "fixed", "{}", repairs[0]);
    ensure!(
        c.completions()?.values().copied().collect::<Vec<_>>() == vec![1],
        "completions: {:?}",
        c.completions()?
    );
    // The second copy's start removed what the killed one left (its locks died with it).
    let still = scratch_of(victim_pid, tmp.path(), &validate_ws);
    ensure!(
        still.is_empty(),
        "left by the killed worker ({} at the kill): {still:?}",
        left.len()
    );
    // The user's files were not touched (no --apply).
    ensure!(std::fs::read(proj.join("inventory/pricing.py"))? == before);
    Ok(())
}

#[test]
fn an_unreachable_nats_is_exit_code_3_with_what_to_do() -> Result<()> {
    let port = coval_tests::free_port()?;
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir()?;
    let proj = project(dir.path(), None)?;
    let env = [("COVAL_BUS__CONNECT_TIMEOUT_SECS", "2"), ("NO_COLOR", "1")];
    let runs: Vec<(&str, Vec<String>)> = vec![
        ("coval-triage", vec!["--nats".into(), url.clone()]),
        ("coval-integrate", vec!["--nats".into(), url.clone()]),
        (
            "coval",
            vec!["worker".into(), "all".into(), "--nats".into(), url.clone()],
        ),
        (
            "coval",
            vec![
                "repair".into(),
                "--nats".into(),
                url.clone(),
                "-e".into(),
                proj.join("error.log").display().to_string(),
                "-s".into(),
                proj.display().to_string(),
            ],
        ),
        ("coval", vec!["status".into(), "--nats".into(), url.clone()]),
    ];
    for (bin, args) in runs {
        let out = Command::new(workspace_binary(bin)?)
            .args(&args)
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .current_dir(dir.path())
            .envs(env)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(3),
            "{bin} {args:?}: {}",
            text(&out)
        );
        ensure!(
            err.contains(&format!("127.0.0.1:{port}")) && err.contains("nats"),
            "{bin}: the message should name the server: {err}"
        );
        ensure!(!err.contains("panicked"), "{bin} panicked: {err}");
    }
    // Nothing was written into the project.
    let status = Command::new("diff")
        .arg("-r")
        .arg(repo_root().join("examples/inventory"))
        .arg(&proj)
        .status()?;
    ensure!(status.success(), "the project changed");
    Ok(())
}

#[test]
fn a_malformed_nats_url_is_exit_code_2_at_once() -> Result<()> {
    let url = "nats://bad host:x";
    let dir = tempfile::tempdir()?;
    let proj = project(dir.path(), None)?;
    let log = proj.join("error.log").display().to_string();
    let src = proj.display().to_string();
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("coval-triage", vec!["--nats", url]),
        ("coval", vec!["worker", "all", "--nats", url]),
        (
            "coval",
            vec!["repair", "--nats", url, "-e", &log, "-s", &src],
        ),
        (
            "coval",
            vec!["submit", "--nats", url, "-e", &log, "-s", &src],
        ),
        ("coval", vec!["status", "--nats", url]),
    ];
    for (bin, args) in runs {
        let exe = workspace_binary(bin)?;
        let started = std::time::Instant::now();
        let out = Command::new(exe)
            .args(&args)
            .arg("--workspace")
            .arg(dir.path().join("ws"))
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2),
            "{bin} {args:?}: {}",
            text(&out)
        );
        ensure!(
            err.contains("is not a NATS server URL") && err.contains("nats://HOST:PORT"),
            "{bin}: the message should say what is wrong and how to write it: {err}"
        );
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{bin} took {:?}: a malformed URL needs no wait",
            started.elapsed()
        );
    }
    Ok(())
}
