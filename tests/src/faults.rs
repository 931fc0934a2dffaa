//! The fault-injection suite: repairs through a fleet of fast `testkit` workers on a
//! nats-server of its own (loopback, `sync_interval: always`) while a seeded schedule SIGKILLs
//! random workers at random moments, SIGSTOPs workers beyond the ack wait and then SIGCONTs
//! them, restarts the nats-server (SIGKILL, same store) and restarts every worker at once.
//! Each fault is checked to have really happened (the kernel's exit signal, the process state
//! in /proc); at the end every repair must have completed exactly once (one completion event,
//! one completed record, one history record and one iteration in the integration worker's
//! store). The test (`it::faults`) runs a short schedule, the bench (`--bench faults`) a long
//! one.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bus::jetstream::JetStreamBus;
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::fleet::{self, Fleet, proc_state};
use crate::{NatsServer, SyncMode, request, test_bus_config};

/// How much to do; the counts are of faults injected, each checked to have fired.
#[derive(Debug, Clone)]
pub struct Options {
    pub repairs: usize,
    /// Copies of each stage but integrate (which owns the ledger: one copy).
    pub copies: usize,
    pub kills: usize,
    pub stops: usize,
    pub server_restarts: usize,
    pub full_restarts: usize,
    pub seed: u64,
    /// Every repair must complete within this after the last fault.
    pub settle_within: Duration,
    /// The `testkit` binary.
    pub testkit: std::path::PathBuf,
}

impl Options {
    /// The seed from `COVAL_FAULT_SEED`, else a fresh one (printed either way).
    pub fn seed_from_env() -> u64 {
        std::env::var("COVAL_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Stop,
    ServerRestart,
    FullRestart,
}

/// What happened.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub repairs: usize,
    pub kills: usize,
    pub stops: usize,
    pub server_restarts: usize,
    pub full_restarts: usize,
    /// Worker processes SIGKILLed in all (single kills and full restarts).
    pub processes_killed: usize,
    /// Deliveries with a count above 1 that a handler saw.
    pub redeliveries: usize,
    /// Handler runs in all (a chain without faults is 6 per repair).
    pub handler_runs: usize,
    /// Single kills and stops whose victim held a message that was then redelivered (the
    /// fault caught work in hand, not an idle worker).
    pub kills_in_flight: usize,
    pub stops_in_flight: usize,
    pub elapsed: Duration,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} repairs, each completed exactly once, in {:.1} s; faults injected and survived: {} SIGKILLs of one worker ({} with a message in hand), {} SIGSTOPs beyond the ack wait ({} with a message in hand), {} nats-server restarts, {} restarts of every worker ({} worker processes SIGKILLed in all); {} redeliveries, {} handler runs",
            self.seed,
            self.repairs,
            self.elapsed.as_secs_f64(),
            self.kills,
            self.kills_in_flight,
            self.stops,
            self.stops_in_flight,
            self.server_restarts,
            self.full_restarts,
            self.processes_killed,
            self.redeliveries,
            self.handler_runs,
        )
    }
}

/// Runs the suite; an error says which fault or which repair broke, with the seed.
pub async fn run(o: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let seed = o.seed;
    run_inner(o, t0).await.with_context(|| {
        format!(
            "fault suite failed with seed {seed} (COVAL_FAULT_SEED={seed} replays its schedule)"
        )
    })
}

async fn run_inner(o: &Options, t0: Instant) -> Result<Report> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut nats = NatsServer::start(SyncMode::Always)?;
    let ns_name = "faults";
    let cfg = settings::BusConfig {
        max_reconnects: 1000,
        ..test_bus_config()
    };
    let ack_wait = cfg.ack_wait();
    let bus = JetStreamBus::connect(&nats.url, Namespace::new(ns_name)?, cfg).await?;
    let mut fleet = Fleet::new(&o.testkit)?;
    // Enough deliveries that faults alone never dead-letter a message.
    // Handlers take 20 ms, so a wave of repairs keeps every stage busy for a while and a
    // fault lands on messages in hand.
    let extra = ["--max-deliver", "100", "--slow-ms", "20"];
    let mut integrate = None;
    for stage in Stage::WORKERS {
        let copies = if stage == Stage::Integrate {
            1
        } else {
            o.copies.max(1)
        };
        for _ in 0..copies {
            let slot = fleet.add(stage, &nats.url, ns_name, &extra)?;
            if stage == Stage::Integrate {
                integrate = Some(slot);
            }
        }
    }
    let integrate = integrate.context("no integration worker")?;
    fleet.wait_ready(Duration::from_secs(30)).await?;

    let mut schedule: Vec<Fault> = std::iter::repeat_n(Fault::Kill, o.kills)
        .chain(std::iter::repeat_n(Fault::Stop, o.stops))
        .chain(std::iter::repeat_n(Fault::ServerRestart, o.server_restarts))
        .chain(std::iter::repeat_n(Fault::FullRestart, o.full_restarts))
        .collect();
    schedule.shuffle(&mut rng);
    let repairs: Vec<RepairId> = (0..o.repairs).map(|_| RepairId::new()).collect();
    // Repairs go out in as many waves as there are faults (+1), so every fault lands on
    // work in flight.
    let waves = schedule.len() + 1;
    let per_wave = repairs.len().div_ceil(waves);
    let mut report = Report {
        seed: o.seed,
        repairs: repairs.len(),
        ..Default::default()
    };
    let mut chunks = repairs.chunks(per_wave.max(1));
    // Where each slot's `handling` lines of its current process start, and what each single
    // kill or stop caught: (is a kill, the victim's stage, the repairs it had taken).
    let mut started_at = vec![0usize; fleet.slots.len()];
    let mut caught: Vec<(bool, Stage, Vec<RepairId>)> = vec![];
    let taken = |fleet: &Fleet, slot: usize, from: usize| -> Vec<RepairId> {
        let h = fleet.heard.lock().unwrap_or_else(|e| e.into_inner());
        h.handling[from.min(h.handling.len())..]
            .iter()
            .filter(|(s, _, _)| *s == slot)
            .map(|(_, r, _)| *r)
            .collect()
    };
    let heard_len = |fleet: &Fleet| {
        fleet
            .heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handling
            .len()
    };
    for (i, fault) in schedule.iter().enumerate() {
        if let Some(chunk) = chunks.next() {
            submit(&bus, chunk).await?;
        }
        // A random moment into the wave's work.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        let what = format!("fault {} of {} ({fault:?})", i + 1, schedule.len());
        match fault {
            Fault::Kill => {
                let victim = rng.random_range(0..fleet.slots.len());
                fleet.kill9(victim).await.context(what.clone())?;
                let held = taken(&fleet, victim, started_at[victim]);
                caught.push((true, fleet.slots[victim].stage, held));
                started_at[victim] = heard_len(&fleet);
                fleet.start(victim)?;
                report.kills += 1;
                report.processes_killed += 1;
            }
            Fault::Stop => {
                let victim = rng.random_range(0..fleet.slots.len());
                let pid = fleet.pid(victim).context("victim not running")?;
                fleet::signal(pid, libc::SIGSTOP)?;
                let held = taken(&fleet, victim, started_at[victim]);
                caught.push((false, fleet.slots[victim].stage, held));
                let stopped_at = Instant::now();
                wait_state(pid, |s| s == 'T', "stopped")
                    .await
                    .context(what.clone())?;
                // Beyond the ack wait: what it held is redelivered to another copy.
                tokio::time::sleep(ack_wait + Duration::from_millis(rng.random_range(500..1500)))
                    .await;
                ensure!(
                    proc_state(pid) == Some('T') && stopped_at.elapsed() > ack_wait,
                    "{what}: worker {victim} did not stay stopped beyond the ack wait"
                );
                fleet::signal(pid, libc::SIGCONT)?;
                wait_state(pid, |s| s != 'T', "running again")
                    .await
                    .context(what.clone())?;
                report.stops += 1;
            }
            Fault::ServerRestart => {
                nats.restart().context(what.clone())?;
                report.server_restarts += 1;
            }
            Fault::FullRestart => {
                for s in 0..fleet.slots.len() {
                    fleet.kill9(s).await.context(what.clone())?;
                }
                let now = heard_len(&fleet);
                started_at.fill(now);
                for s in 0..fleet.slots.len() {
                    fleet.start(s)?;
                }
                report.full_restarts += 1;
                report.processes_killed += fleet.slots.len();
            }
        }
        fleet
            .wait_ready(Duration::from_secs(30))
            .await
            .context(what)?;
    }
    for chunk in chunks {
        submit(&bus, chunk).await?;
    }

    let events = fleet::completion_events(&bus, &repairs, o.settle_within).await?;
    let done = events.len();
    fleet.stop_all().await?;
    fleet::check_exactly_once(&events, &fleet.slots[integrate].store, &repairs).with_context(
        || {
            format!(
                "{done} of {} repairs completed; integration worker's last words: {}",
                repairs.len(),
                fleet.stderr_tail(integrate)
            )
        },
    )?;
    {
        let heard = fleet.heard.lock().unwrap_or_else(|e| e.into_inner());
        report.handler_runs = heard.handling.len();
        report.redeliveries = heard.handling.iter().filter(|(_, _, d)| *d > 1).count();
        for (kill, stage, held) in &caught {
            let redelivered = heard
                .handling
                .iter()
                .any(|(s, r, d)| *d > 1 && fleet.slots[*s].stage == *stage && held.contains(r));
            if redelivered {
                if *kill {
                    report.kills_in_flight += 1;
                } else {
                    report.stops_in_flight += 1;
                }
            }
        }
    }
    report.elapsed = t0.elapsed();
    // The faults hit work in flight: some messages were delivered again.
    ensure!(
        schedule.is_empty()
            || (report.redeliveries > 0 && report.kills_in_flight + report.stops_in_flight > 0),
        "no kill or stop caught a message in hand: the faults missed the work ({})",
        report.summary()
    );
    Ok(report)
}

async fn submit(bus: &JetStreamBus, repairs: &[RepairId]) -> Result<()> {
    for r in repairs {
        fleet::publish_retrying(
            bus,
            &Envelope::origin(Kind::RepairRequested, *r),
            Message::RepairRequested(request(*r)),
        )
        .await?;
    }
    Ok(())
}

async fn wait_state(pid: u32, want: impl Fn(char) -> bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if proc_state(pid).is_some_and(&want) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "process {pid} is not {what} (state {:?})",
            proc_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
