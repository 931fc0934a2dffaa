//! The Docker Compose fleet as a user runs it: `scripts/fleet.sh images` builds the worker
//! image from the stage binaries cargo built and the NATS image from the nats-server binary
//! (cached by a content hash), `docker-compose.yml` is checked with every profile, the fleet
//! comes up under a project name and on loopback ports of its own, the example is repaired
//! through it, validate is scaled to three copies that all bind to the stage's consumer, a
//! second repair completes, and `down -v` runs on every path. Needs a Docker engine (the
//! README test command starts one) and docker-compose (scripts/test.sh installs it); skipped
//! only when no engine answers outside CI, or with COVAL_SKIP_DOCKER=1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use coval_tests::{free_port, repo_root, workspace_binary};
use proto::Stage;
use proto::subjects::Namespace;

/// The whole test, images included, stays under this (a cold image build here takes ~25 s).
const BUDGET: Duration = Duration::from_secs(480);

/// The worker services, as named in docker-compose.yml.
const WORKERS: [&str; 6] = ["triage", "decision", "mre", "fix", "validate", "integrate"];

/// Every service of the file, profiles included.
const ALL_SERVICES: [&str; 10] = [
    "nats",
    "triage",
    "decision",
    "mre",
    "fix",
    "validate",
    "integrate",
    "ollama",
    "otel-collector",
    "jaeger",
];

/// Runs `cmd` to its end or kills it at `deadline`; stdout and stderr go through files, so a
/// chatty child never blocks on a full pipe.
fn run_until(cmd: &mut Command, deadline: Instant, what: &str) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what} did not finish within the test's budget; its output:\n{}\n{}",
                String::from_utf8_lossy(&std::fs::read(&out)?),
                String::from_utf8_lossy(&std::fs::read(&err)?)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(Output {
        status,
        stdout: std::fs::read(&out)?,
        stderr: std::fs::read(&err)?,
    })
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn engine_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `docker compose` (v2) when the plugin answers, else Debian's `docker-compose` (1.29).
fn compose_cli() -> Result<Vec<String>> {
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if ok(Command::new("docker").args(["compose", "version"])) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    if ok(Command::new("docker-compose").arg("version")) {
        return Ok(vec!["docker-compose".into()]);
    }
    bail!(
        "neither `docker compose` nor `docker-compose` runs: apt-get install docker-compose (scripts/test.sh does)"
    )
}

/// One fleet: a compose project of its own, torn down (`down -v`) when dropped.
struct Fleet {
    cli: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
    nats_url: String,
    deadline: Instant,
    down: bool,
}

impl Fleet {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli[0]);
        c.args(&self.cli[1..])
            .arg("-f")
            .arg(repo_root().join("docker-compose.yml"))
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn compose(&self, args: &[&str]) -> Result<Output> {
        let what = format!("compose {}", args.join(" "));
        let out = run_until(&mut self.command(args), self.deadline, &what)?;
        ensure!(out.status.success(), "{what}: {}", text(&out));
        Ok(out)
    }

    /// The distinct worker names that said "ready", by service, from one `logs` call (each
    /// call of docker-compose 1.29 costs most of a second). Lines look like
    /// `validate_2  | coval worker vm/1-3fa9c2: ready` (v2: `validate-2  | ...`).
    fn ready(&self) -> Result<BTreeMap<String, BTreeSet<String>>> {
        let mut by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let logs = self.compose(&["logs", "--no-color"])?;
        for line in String::from_utf8_lossy(&logs.stdout).lines() {
            let Some((prefix, rest)) = line.split_once('|') else {
                continue;
            };
            let Some(name) = rest
                .split("coval worker ")
                .nth(1)
                .and_then(|r| r.trim_end().strip_suffix(": ready"))
            else {
                continue;
            };
            let prefix = prefix.trim();
            let service = prefix
                .rsplit_once(['_', '-'])
                .filter(|(_, n)| n.bytes().all(|b| b.is_ascii_digit()))
                .map_or(prefix, |(s, _)| s);
            by.entry(service.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
        Ok(by)
    }

    /// Waits until each service has at least its number of copies ready.
    fn wait_ready(&self, want: &[(&str, usize)], within: Duration) -> Result<()> {
        let until = (Instant::now() + within).min(self.deadline);
        loop {
            let by = self.ready()?;
            let missing: Vec<_> = want
                .iter()
                .filter(|(s, n)| by.get(*s).map_or(0, BTreeSet::len) < *n)
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > until {
                let logs = self.compose(&["logs", "--no-color", "--tail", "20"]);
                bail!(
                    "not ready: {missing:?} (ready: {by:?}); the last logs:\n{}",
                    logs.map(|o| text(&o)).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn tear_down(&mut self) -> Result<()> {
        self.down = true;
        let out = run_until(
            &mut self.command(&["down", "-v", "--remove-orphans", "-t", "5"]),
            Instant::now() + Duration::from_secs(120),
            "compose down",
        )?;
        ensure!(out.status.success(), "compose down: {}", text(&out));
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.down
            && let Err(e) = self.tear_down()
        {
            eprintln!("compose fleet {}: tear-down failed: {e:#}", self.project);
        }
    }
}

/// Pull requests open on the validate consumer (one per idle worker copy).
fn validate_waiting(url: &str) -> Result<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ns = Namespace::new("coval")?;
        let client = async_nats::connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(ns.work_stream(Stage::Validate))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = stream
            .consumer_info(ns.consumer(Stage::Validate))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(info.num_waiting)
    })
}

/// `coval repair --nats` of a fresh copy of the example; checks the report says fixed and
/// proven (reproduced first, the winner's tests passed) and returns the client's stderr.
fn repair_example(f: &Fleet, coval: &Path, dir: &Path, n: usize) -> Result<String> {
    let proj = dir.join(format!("project-{n}"));
    vocab::tree::copy_tree(
        &repo_root().join("examples/inventory"),
        &proj,
        vocab::tree::Perms::Keep,
    )
    .context("copying the example")?;
    let started = Instant::now();
    let out = run_until(
        Command::new(coval)
            .current_dir(dir)
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITLAB_CI")
            .env("NO_COLOR", "1")
            .arg("--workspace")
            .arg(dir.join("client"))
            .args(["repair", "--nats", &f.nats_url, "-e"])
            .arg(proj.join("error.log"))
            .arg("-s")
            .arg(&proj)
            .arg("--json"),
        f.deadline,
        "coval repair --nats",
    )?;
    ensure!(out.status.code() == Some(0), "repair {n}: {}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("repair {n}: not a JSON report: {}", text(&out)))?;
    ensure!(report["outcome"] == "fixed", "repair {n}: {report}");
    ensure!(
        report["mre"]["reproduced"] == true,
        "repair {n}: the failure was not reproduced first: {}",
        report["mre"]
    );
    let winner = report["winner"].as_str().context("no winner")?;
    let cand = report["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["candidates"].as_array())
        .flatten()
        .find(|c| c["id"] == winner)
        .with_context(|| format!("winner {winner} is not among the candidates: {report}"))?;
    let tests = cand["tests"].as_array().context("winner without tests")?;
    ensure!(
        cand["passed"] == true
            && !tests.is_empty()
            && tests.iter().all(|t| t["status"] == "passed"),
        "repair {n}: the winner is not proven by its tests: {cand}"
    );
    let id = report["repair_id"].as_str().context("repair_id")?;
    ensure!(
        dir.join(format!("client/repairs/repair-{id}/final.patch"))
            .is_file(),
        "repair {n}: no final.patch came back"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "compose fleet: repair {n} fixed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(err)
}

#[test]
fn the_compose_fleet_repairs_the_example_and_scales_validate_to_three() -> Result<()> {
    if std::env::var("COVAL_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("COVAL_SKIP_DOCKER=1: skipping the compose fleet test");
        return Ok(());
    }
    if !engine_answers() {
        ensure!(
            std::env::var_os("CI").is_none(),
            "no Docker engine answers (DOCKER_HOST={:?}): the README test command starts one, \
             and in CI this test must run",
            std::env::var("DOCKER_HOST").unwrap_or_default()
        );
        eprintln!(
            "skipping the compose fleet test: no Docker engine answers; run `scripts/dev-services.sh up`"
        );
        return Ok(());
    }
    let t0 = Instant::now();
    let deadline = t0 + BUDGET;
    let cli = compose_cli()?;
    let coval = workspace_binary("coval")?;
    let bins: PathBuf = coval.parent().context("binary dir")?.to_owned();

    // The images, from the binaries this test run uses.
    let out = run_until(
        Command::new(repo_root().join("scripts/fleet.sh"))
            .arg("images")
            .env("COVAL_FLEET_BIN_DIR", &bins),
        deadline,
        "scripts/fleet.sh images",
    )?;
    ensure!(out.status.success(), "fleet.sh images: {}", text(&out));
    let mut env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for k in ["COVAL_WORKER_IMAGE", "COVAL_NATS_IMAGE"] {
        ensure!(
            env.iter().any(|(n, v)| n == k && !v.is_empty()),
            "fleet.sh images named no {k}: {}",
            text(&out)
        );
    }
    eprintln!(
        "compose fleet: images in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let (port, monitor) = (free_port()?, free_port()?);
    env.push(("COVAL_FLEET_NATS_PORT".into(), port.to_string()));
    env.push(("COVAL_FLEET_NATS_MONITOR_PORT".into(), monitor.to_string()));
    let project = format!(
        "covalit{}x{}",
        std::process::id(),
        t0.elapsed().subsec_nanos() % 100_000
    );
    let mut fleet = Fleet {
        cli,
        project,
        env,
        nats_url: format!("nats://127.0.0.1:{port}"),
        deadline,
        down: false,
    };

    // The whole file, every profile: valid, every service on the host's loopback (the engine
    // has no bridge), the ports moved where this fleet's variables say.
    let services = fleet.compose(&[
        "--profile",
        "models",
        "--profile",
        "observability",
        "config",
        "--services",
    ])?;
    let listed: BTreeSet<String> = String::from_utf8_lossy(&services.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = ALL_SERVICES.iter().map(|s| s.to_string()).collect();
    ensure!(listed == want, "services: {listed:?}");
    let config = fleet.compose(&[
        "--profile",
        "models",
        "--profile",
        "observability",
        "config",
    ])?;
    let config = String::from_utf8_lossy(&config.stdout).into_owned();
    ensure!(
        config.matches("network_mode: host").count() == ALL_SERVICES.len(),
        "every service must use host networking:\n{config}"
    );
    ensure!(
        !config.contains("ports:") && !config.contains("0.0.0.0"),
        "nothing may be published or bound beyond loopback:\n{config}"
    );
    ensure!(
        config.matches("read_only: true").count() == WORKERS.len(),
        "every worker runs on a read-only root:\n{config}"
    );
    ensure!(
        config.contains(&format!("nats://127.0.0.1:{port}")),
        "the workers do not use this fleet's NATS port:\n{config}"
    );

    // Up: nats (healthy first) and one copy of each stage.
    fleet.compose(&["up", "-d"])?;
    let one: Vec<(&str, usize)> = WORKERS.iter().map(|w| (*w, 1)).collect();
    fleet.wait_ready(&one, Duration::from_secs(120))?;
    eprintln!("compose fleet: up in {:.1} s", t0.elapsed().as_secs_f64());

    let dir = tempfile::tempdir()?;
    let err = repair_example(&fleet, &coval, dir.path(), 1)?;
    // The stages ran in the containers: there each worker is pid 1 and says so in its name.
    let validated = err
        .lines()
        .find(|l| l.starts_with("validate"))
        .with_context(|| format!("no validate line in the client's output:\n{err}"))?;
    ensure!(
        validated.contains("/1-"),
        "validated by a worker outside the fleet? {validated}"
    );

    // Three copies of validate, each bound to the stage's consumer with a pull of its own.
    fleet.compose(&["up", "-d", "--no-recreate", "--scale", "validate=3"])?;
    fleet.wait_ready(&[("validate", 3)], Duration::from_secs(120))?;
    let until = (Instant::now() + Duration::from_secs(60)).min(deadline);
    loop {
        let waiting = validate_waiting(&fleet.nats_url)?;
        if waiting >= 3 {
            break;
        }
        ensure!(
            Instant::now() < until,
            "the validate consumer has {waiting} open pulls with three copies up"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let ps = fleet.compose(&["ps", "-q", "validate"])?;
    let copies = String::from_utf8_lossy(&ps.stdout).lines().count();
    ensure!(copies == 3, "{copies} validate containers");
    repair_example(&fleet, &coval, dir.path(), 2)?;

    fleet.tear_down()?;
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!(
            "label=com.docker.compose.project={}",
            fleet.project
        ))
        .output()?;
    ensure!(
        left.stdout.is_empty(),
        "containers left after down: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    eprintln!("compose fleet: done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
