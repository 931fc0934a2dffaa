//! A fleet of `testkit worker` processes (fast no-op stages, a sled ledger each, the integrate
//! stage recording completions in its store) that tests and benches start, SIGKILL, SIGSTOP,
//! SIGCONT and restart, plus the checks that every repair completed exactly once.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use futures::StreamExt;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use store::{RepairStatus, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What every worker printed, by worker slot: `handling <repair> <delivered>` lines.
#[derive(Default)]
pub struct Heard {
    /// (slot, repair, delivered) of every `handling` line.
    pub handling: Vec<(usize, RepairId, u32)>,
    /// `ready` lines per slot (one per start).
    pub ready: HashMap<usize, usize>,
}

/// One worker process slot: restarted in place with the same arguments and store.
pub struct Slot {
    pub stage: Stage,
    pub store: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    stderr: PathBuf,
    pub starts: usize,
}

pub struct Fleet {
    testkit: PathBuf,
    pub slots: Vec<Slot>,
    pub heard: Arc<Mutex<Heard>>,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

/// How a worker process ended.
pub fn killed_by(status: std::process::ExitStatus) -> Option<i32> {
    status.signal()
}

#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: i32) -> Result<()> {
    let pid = i32::try_from(pid)?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a child of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    ensure!(
        rc == 0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The scheduler state of a process (`R`, `S`, `T` stopped, `Z`...), from /proc.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name in parentheses, which may itself hold spaces.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Fleet {
    /// `testkit`: the helper binary (`env!("CARGO_BIN_EXE_testkit")` in tests and benches).
    pub fn new(testkit: &Path) -> Result<Fleet> {
        let dir = tempfile::tempdir()?;
        Ok(Fleet {
            testkit: testkit.to_owned(),
            slots: vec![],
            heard: Arc::default(),
            dir: dir.path().to_owned(),
            _dir: dir,
        })
    }

    /// Adds and starts a worker of `stage`; `extra`: more `testkit worker` flags.
    pub fn add(&mut self, stage: Stage, url: &str, ns: &str, extra: &[&str]) -> Result<usize> {
        let slot = self.slots.len();
        let store = self.dir.join(format!("{stage}-{slot}"));
        let mut args: Vec<String> = [
            "worker",
            "--nats",
            url,
            "--ns",
            ns,
            "--stage",
            stage.as_str(),
            "--store",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(store.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        self.slots.push(Slot {
            stage,
            store,
            args,
            child: None,
            stderr: self.dir.join(format!("{stage}-{slot}.stderr")),
            starts: 0,
        });
        self.start(slot)?;
        Ok(slot)
    }

    /// Starts slot `i` (again), with its stdout read into `heard`.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let s = &mut self.slots[i];
        ensure!(s.child.is_none(), "slot {i} is running");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.stderr)?;
        let mut child = Command::new(&self.testkit)
            .args(&s.args)
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start testkit")?;
        let out = child.stdout.take().context("stdout")?;
        let heard = self.heard.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut h = heard.lock().unwrap_or_else(|e| e.into_inner());
                if l == "ready" {
                    *h.ready.entry(i).or_default() += 1;
                } else if let Some(rest) = l.strip_prefix("handling ") {
                    let mut w = rest.split(' ');
                    if let (Some(Ok(r)), Some(Ok(d))) = (
                        w.next().map(str::parse::<RepairId>),
                        w.next().map(str::parse::<u32>),
                    ) {
                        h.handling.push((i, r, d));
                    }
                }
            }
        });
        s.child = Some(child);
        s.starts += 1;
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.slots[i].child.as_ref().and_then(Child::id)
    }

    /// Waits until every running slot has printed `ready` once per start.
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let missing: Vec<usize> = {
                let h = self.heard.lock().unwrap_or_else(|e| e.into_inner());
                (0..self.slots.len())
                    .filter(|i| {
                        self.slots[*i].child.is_some()
                            && h.ready.get(i).copied().unwrap_or(0) < self.slots[*i].starts
                    })
                    .collect()
            };
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "workers {missing:?} not ready within {within:?}: {}",
                    self.stderr_tail(missing[0])
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL slot `i` and reap it; errors unless the kernel says SIGKILL ended it.
    pub async fn kill9(&mut self, i: usize) -> Result<()> {
        let mut c = self.slots[i].child.take().context("not running")?;
        let pid = c.id().context("already reaped")?;
        signal(pid, libc::SIGKILL)?;
        let status = c.wait().await?;
        ensure!(
            killed_by(status) == Some(libc::SIGKILL),
            "worker {i} ended with {status}, not by SIGKILL"
        );
        Ok(())
    }

    /// SIGTERM every running slot and wait for each to exit (a graceful stop).
    pub async fn stop_all(&mut self) -> Result<()> {
        for s in &mut self.slots {
            if let Some(mut c) = s.child.take() {
                if let Some(pid) = c.id() {
                    signal(pid, libc::SIGTERM)?;
                }
                tokio::time::timeout(Duration::from_secs(20), c.wait())
                    .await
                    .context("a worker did not stop within 20 s of SIGTERM")??;
            }
        }
        Ok(())
    }

    /// Workers that ended on their own, each with its status and first line of stderr (the
    /// error it stopped on), for a failing test's message; empty when all still run.
    pub fn exited(&mut self) -> String {
        let mut out = vec![];
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(c) = slot.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = c.try_wait() {
                let err = std::fs::read_to_string(&slot.stderr).unwrap_or_default();
                let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                out.push(format!(
                    "worker {i} ({}) exited {status}: {first}",
                    slot.stage
                ));
            }
        }
        out.join("\n")
    }

    pub fn stderr_tail(&self, i: usize) -> String {
        let t = std::fs::read_to_string(&self.slots[i].stderr).unwrap_or_default();
        let tail: Vec<&str> = t.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// Publishes a request until the server stores it (the same id each time, so a retry after a
/// lost ack is dropped as a duplicate).
pub async fn publish_retrying(bus: &JetStreamBus, env: &Envelope, msg: Message) -> Result<()> {
    let mut last = String::new();
    for _ in 0..100 {
        match bus.publish(env, msg.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("cannot publish {}: {last}", env.message_id)
}

/// Counts `RepairCompleted` events per repair in the event stream, from its start, until
/// `expected` repairs have one or `within` passes.
pub async fn completion_events(
    bus: &JetStreamBus,
    expected: &[RepairId],
    within: Duration,
) -> Result<HashMap<RepairId, usize>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut counts: HashMap<RepairId, usize> = HashMap::new();
    // Right after a node of a cluster restarts, a JetStream API request can time out while
    // the stream's replicas catch up: the reader is set up again until the deadline.
    let mut msgs = loop {
        let setup = async {
            let stream = bus
                .context()
                .get_stream(bus.namespace().event_stream())
                .await?;
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    filter_subject: bus.namespace().event_subjects(),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(consumer.messages().await?)
        };
        match setup.await {
            Ok(m) => break m,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context("cannot read the event stream"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let all_in = |c: &HashMap<RepairId, usize>| expected.iter().all(|r| c.contains_key(r));
    while !all_in(&counts) {
        let m = match tokio::time::timeout_at(deadline, msgs.next()).await {
            Err(_) => break,
            Ok(None) => break,
            Ok(Some(m)) => m,
        };
        let Ok(m) = m else { continue };
        let Some(h) = m.headers.as_ref() else {
            continue;
        };
        if let Ok(env) = Envelope::from_headers(|n| h.get(n).map(|v| v.as_str()))
            && env.kind == Kind::RepairCompleted
        {
            *counts.entry(env.repair_id).or_default() += 1;
        }
    }
    // Anything after the last expected completion: a late duplicate would show here.
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(500), msgs.next()).await
    {
        if let Some(h) = m.headers.as_ref()
            && let Ok(env) = Envelope::from_headers(|n| h.get(n).map(|v| v.as_str()))
            && env.kind == Kind::RepairCompleted
        {
            *counts.entry(env.repair_id).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Every expected repair completed exactly once: one completion event each, and in the
/// integration worker's store one completed record and one history record each.
pub fn check_exactly_once(
    events: &HashMap<RepairId, usize>,
    ledger: &Path,
    expected: &[RepairId],
) -> Result<()> {
    let missing: Vec<_> = expected
        .iter()
        .filter(|r| !events.contains_key(r))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {} repairs have no completion event (first: {:?})",
        missing.len(),
        expected.len(),
        missing.first()
    );
    let doubled: Vec<_> = events.iter().filter(|(_, n)| **n != 1).collect();
    ensure!(
        doubled.is_empty(),
        "repairs with more than one completion event: {doubled:?}"
    );
    ensure!(
        events.len() == expected.len(),
        "{} completion events for {} repairs",
        events.len(),
        expected.len()
    );
    let store = Store::open(ledger).context("the integration worker's store")?;
    let repairs = store.repairs()?;
    ensure!(
        repairs.len() == expected.len()
            && repairs.iter().all(|r| r.status == RepairStatus::Completed),
        "the ledger has {} repairs, {} completed, for {} submitted",
        repairs.len(),
        repairs
            .iter()
            .filter(|r| r.status == RepairStatus::Completed)
            .count(),
        expected.len()
    );
    let history = store.history(None)?;
    let mut per: HashMap<RepairId, usize> = HashMap::new();
    for h in &history {
        *per.entry(h.repair).or_default() += 1;
    }
    ensure!(
        history.len() == expected.len() && per.values().all(|n| *n == 1),
        "the ledger has {} history records for {} repairs (completed more than once?)",
        history.len(),
        expected.len()
    );
    for r in expected {
        ensure!(per.contains_key(r), "{r} is not in the ledger's history");
    }
    // One iteration per completion: a repair completed twice would have made two.
    let iterations = store.iterations()?;
    let mut origins: HashMap<RepairId, usize> = HashMap::new();
    for it in &iterations {
        if let store::IterationOrigin::Repair { repair } = &it.origin {
            *origins.entry(*repair).or_default() += 1;
        }
    }
    ensure!(
        iterations.len() == expected.len() && origins.values().all(|n| *n == 1),
        "the ledger has {} iterations for {} repairs (completed more than once?)",
        iterations.len(),
        expected.len()
    );
    Ok(())
}
