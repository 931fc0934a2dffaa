//! Crashes: a worker process killed with SIGKILL mid-message, and a store writer killed
//! mid-write many times.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use coval_tests::{NatsServer, SyncMode, request, test_bus_config};
use futures::StreamExt;
use proto::subjects::Namespace;
use proto::{Envelope, IterationId, Kind, Message, RepairId, Stage};
use rand::Rng;
use store::{IterationOrigin, RepairStatus, Store};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

struct Proc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Where the process's stderr goes (a file, so a chatty process never blocks on it).
    stderr: tempfile::NamedTempFile,
}

impl Proc {
    fn spawn(args: &[&str]) -> Result<Proc> {
        let stderr = tempfile::NamedTempFile::new()?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_testkit"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr.reopen()?)
            .kill_on_drop(true)
            .spawn()?;
        let lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Proc {
            child,
            lines,
            stderr,
        })
    }

    /// The next stdout line that starts with `prefix`.
    async fn wait_for(&mut self, prefix: &str, within: Duration) -> Result<String> {
        tokio::time::timeout(within, async {
            while let Some(l) = self.lines.next_line().await? {
                if l.starts_with(prefix) {
                    return Ok(l);
                }
            }
            // Say why: the process's own last words.
            let err = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
            bail!("process ended before printing `{prefix}`: {}", err.trim())
        })
        .await
        .with_context(|| format!("no `{prefix}` line within {within:?}"))?
    }

    fn kill9(&mut self) -> Result<()> {
        let pid = self.child.id().context("already dead")?;
        // SAFETY-free: plain syscall through libc with a pid we own.
        let rc = unsafe_kill(pid as i32, libc::SIGKILL);
        ensure!(rc == 0, "kill failed");
        Ok(())
    }

    fn term(&mut self) -> Result<()> {
        let pid = self.child.id().context("already dead")?;
        ensure!(unsafe_kill(pid as i32, libc::SIGTERM) == 0, "kill failed");
        Ok(())
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) }
}

#[tokio::test]
async fn a_worker_killed_mid_message_is_replaced_and_the_repair_completes_once() -> Result<()> {
    let nats = NatsServer::start(SyncMode::Always)?;
    let ns = "kill";
    let dirs: HashMap<&str, tempfile::TempDir> = [
        "triage",
        "decision",
        "mre",
        "fix",
        "validate-a",
        "validate-b",
        "integrate",
    ]
    .into_iter()
    .map(|n| Ok((n, tempfile::tempdir()?)))
    .collect::<Result<_>>()?;
    let path = |n: &str| dirs[n].path().to_str().unwrap().to_owned();
    let mut workers = vec![];
    for stage in ["triage", "decision", "mre", "fix"] {
        workers.push(Proc::spawn(&[
            "worker",
            "--nats",
            &nats.url,
            "--ns",
            ns,
            "--stage",
            stage,
            "--store",
            &path(stage),
        ])?);
    }
    let mut integrate = Proc::spawn(&[
        "worker",
        "--nats",
        &nats.url,
        "--ns",
        ns,
        "--stage",
        "integrate",
        "--store",
        &path("integrate"),
    ])?;
    let mut validate_a = Proc::spawn(&[
        "worker",
        "--nats",
        &nats.url,
        "--ns",
        ns,
        "--stage",
        "validate",
        "--store",
        &path("validate-a"),
        "--slow-ms",
        "600000",
    ])?;
    for w in workers.iter_mut().chain([&mut integrate, &mut validate_a]) {
        w.wait_for("ready", Duration::from_secs(20)).await?;
    }

    let bus = JetStreamBus::connect(&nats.url, Namespace::new(ns)?, test_bus_config()).await?;
    let events = bus
        .context()
        .get_stream(bus.namespace().event_stream())
        .await?;
    let mut completions = events
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: bus.namespace().event_subjects(),
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    let repair = RepairId::new();
    bus.publish(
        &Envelope::origin(Kind::RepairRequested, repair),
        Message::RepairRequested(request(repair)),
    )
    .await?;

    let line = validate_a
        .wait_for("handling", Duration::from_secs(20))
        .await?;
    assert_eq!(line, format!("handling {repair} 1"));
    validate_a.kill9()?;
    validate_a.child.wait().await?;

    let mut validate_b = Proc::spawn(&[
        "worker",
        "--nats",
        &nats.url,
        "--ns",
        ns,
        "--stage",
        "validate",
        "--store",
        &path("validate-b"),
    ])?;
    validate_b
        .wait_for("ready", Duration::from_secs(20))
        .await?;
    // Redelivered once the dead worker's ack wait runs out, with the delivery count raised.
    let line = validate_b
        .wait_for("handling", Duration::from_secs(20))
        .await?;
    assert_eq!(line, format!("handling {repair} 2"));

    let m = tokio::time::timeout(Duration::from_secs(20), completions.next())
        .await
        .context("no completion")?
        .context("stream ended")??;
    let h = m.headers.as_ref().context("headers")?;
    let env = Envelope::from_headers(|n| h.get(n).map(|v| v.as_str()))?;
    assert_eq!((env.kind, env.repair_id), (Kind::RepairCompleted, repair));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), completions.next())
            .await
            .is_err(),
        "a second completion was published"
    );

    // Stop the integration worker gracefully and read its ledger.
    integrate.term()?;
    integrate
        .wait_for("stopped", Duration::from_secs(20))
        .await?;
    integrate.child.wait().await?;
    let store = Store::open(dirs["integrate"].path())?;
    let repairs = store.repairs()?;
    assert_eq!(repairs.len(), 1);
    assert_eq!(
        (repairs[0].id, repairs[0].status),
        (repair, RepairStatus::Completed)
    );
    assert_eq!(
        store.history(None)?.len(),
        1,
        "the completion was recorded more than once"
    );
    let _ = Stage::Validate;
    Ok(())
}

/// Every invariant of the store, checked after a crash.
fn check_invariants(store: &Store, durable: &HashSet<RepairId>) -> Result<usize> {
    let iterations = store.iterations()?;
    let n = iterations.len() as u32;
    for (i, it) in iterations.iter().enumerate() {
        let id = i as u32 + 1;
        ensure!(
            it.id == IterationId(id),
            "iteration ids are not contiguous at {}",
            it.id
        );
        let expected_parent = (id > 1).then(|| IterationId(id - 1));
        ensure!(
            it.parent == expected_parent,
            "{} has parent {:?}",
            it.id,
            it.parent
        );
    }
    ensure!(
        store.next_iteration()? == IterationId(n + 1),
        "next_iteration is out of step"
    );
    let repairs = store.repairs()?;
    let completed: HashMap<RepairId, IterationId> = repairs
        .iter()
        .filter(|r| r.status == RepairStatus::Completed)
        .map(|r| {
            Ok((
                r.id,
                r.new_iteration.context("completed without an iteration")?,
            ))
        })
        .collect::<Result<_>>()?;
    for it in &iterations {
        let IterationOrigin::Repair { repair } = &it.origin else {
            bail!("unexpected origin")
        };
        ensure!(
            completed.get(repair) == Some(&it.id),
            "{} has no completed repair",
            it.id
        );
    }
    ensure!(
        completed.len() == iterations.len(),
        "completed repairs and iterations differ"
    );
    let history = store.history(None)?;
    ensure!(
        history.len() == completed.len(),
        "history has {} records for {} completions",
        history.len(),
        completed.len()
    );
    for h in &history {
        ensure!(
            completed.contains_key(&h.repair),
            "history for an incomplete repair"
        );
    }
    for d in durable {
        ensure!(
            completed.contains_key(d),
            "acknowledged-durable repair {d} was lost"
        );
    }
    Ok(completed.len())
}

#[tokio::test]
async fn the_store_keeps_its_invariants_across_many_kills() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().to_str().context("path")?.to_owned();
    let mut durable = HashSet::new();
    let mut rng = rand::rng();
    let mut last = 0;
    for round in 0..25 {
        let mut w = Proc::spawn(&["store-writer", &db])?;
        w.wait_for("durable", Duration::from_secs(20)).await?;
        let run_for = Duration::from_millis(rng.random_range(5..250));
        let _ = tokio::time::timeout(run_for, async {
            while let Ok(Some(l)) = w.lines.next_line().await {
                if let Some(id) = l.strip_prefix("durable ") {
                    durable.insert(id.parse::<RepairId>()?);
                }
            }
            anyhow::Ok(())
        })
        .await;
        w.kill9()?;
        // Lines printed before the kill still count as acknowledged.
        while let Ok(Some(l)) = w.lines.next_line().await {
            if let Some(id) = l.strip_prefix("durable ") {
                durable.insert(id.parse::<RepairId>()?);
            }
        }
        w.child.wait().await?;
        let store =
            Store::open(dir.path()).with_context(|| format!("reopen after kill {round}"))?;
        let completed =
            check_invariants(&store, &durable).with_context(|| format!("after kill {round}"))?;
        ensure!(completed >= last, "completions went backwards");
        last = completed;
    }
    ensure!(
        last > 25,
        "too few writes happened to prove anything ({last})"
    );
    Ok(())
}
