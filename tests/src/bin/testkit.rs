//! Helper processes for the integration tests, run as real child processes so tests can
//! kill them with SIGKILL:
//!   testkit worker --nats URL --stage STAGE --store DIR [--slow-ms N] [--replicas N]
//!                  [--max-deliver N]
//!       a no-op stage on JetStream with a sled ledger; `integrate` records each completion
//!       in its store; prints `ready` and `handling <repair> <delivered>` lines
//!   testkit store-writer DIR
//!       completes repairs in a loop, printing `durable <repair>` after each flush

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use bus::runtime::{self, Handler, Input, Outcome, Stats};
use coval_tests::{NoopStage, advance, test_bus_config};
use proto::messages::{Category, RepairOutcome};
use proto::subjects::Namespace;
use proto::{RepairId, Stage};
use settings::BusConfig;
use store::{Completion, HistoryRecord, Store};
use tokio_util::sync::CancellationToken;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Slow {
    inner: NoopStage,
    delay: Duration,
}

impl Handler for Slow {
    fn stage(&self) -> Stage {
        self.inner.stage
    }
    async fn handle(&self, input: Input) -> Outcome {
        say(&format!(
            "handling {} {}",
            input.envelope.repair_id, input.delivered
        ));
        tokio::time::sleep(self.delay).await;
        self.inner.handle(input).await
    }
}

/// The end of the chain: records the completion in the store (idempotently) and flushes
/// before the runtime acks.
struct Ledgering {
    store: Store,
}

impl Handler for Ledgering {
    fn stage(&self) -> Stage {
        Stage::Integrate
    }
    async fn handle(&self, input: Input) -> Outcome {
        say(&format!(
            "handling {} {}",
            input.envelope.repair_id, input.delivered
        ));
        let Some(done) = advance(Stage::Integrate, &input.message) else {
            return Outcome::Reject("not a validation result".into());
        };
        let c = Completion {
            repair: input.envelope.repair_id,
            outcome: RepairOutcome::Fixed,
            summary: "no-op chain".into(),
            // An iteration per completion: a second completion of one repair would make a
            // second iteration, which the fault tests would see.
            new_iteration_parent: Some(None),
            history: Some(HistoryRecord {
                repair: input.envelope.repair_id,
                category: Category::Runtime,
                engine: "noop".into(),
                success: true,
                features: vec![],
                at_ms: vocab::now_ms(),
                operator: None,
            }),
        };
        if let Err(e) = self.store.complete_repair(&c) {
            return Outcome::Retry {
                after: None,
                reason: e.to_string(),
            };
        }
        if let Err(e) = self.store.flush_grouped().await {
            return Outcome::Retry {
                after: None,
                reason: e.to_string(),
            };
        }
        Outcome::Publish(vec![done])
    }
}

async fn serve<B: Bus, H: Handler>(bus: B, h: H, store: Store, cfg: BusConfig) -> Result<()> {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        term.recv().await;
        token.cancel();
    });
    // "ready" once the consumer is bound, as the stage binaries say it.
    let stats = Arc::new(Stats::default());
    let bound = stats.clone();
    tokio::spawn(async move {
        while !bound.bound.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        say("ready");
    });
    runtime::run(bus, Arc::new(h), Arc::new(store), cfg, stats, shutdown).await?;
    say("stopped");
    Ok(())
}

async fn worker(args: &[String]) -> Result<()> {
    let url = arg(args, "--nats").context("--nats URL")?;
    let stage = arg(args, "--stage")
        .and_then(|s| Stage::parse(&s))
        .context("--stage STAGE")?;
    let store_dir = PathBuf::from(arg(args, "--store").context("--store DIR")?);
    let ns = Namespace::new(&arg(args, "--ns").unwrap_or_else(|| "coval".into()))?;
    let slow = arg(args, "--slow-ms")
        .map(|s| s.parse::<u64>())
        .transpose()?
        .unwrap_or(0);
    let num = |name: &str| arg(args, name).map(|s| s.parse::<usize>()).transpose();
    let mut cfg = test_bus_config();
    if let Some(n) = num("--replicas")? {
        cfg.replicas = n;
    }
    if let Some(n) = num("--max-deliver")? {
        cfg.max_deliver = u32::try_from(n)?;
    }
    // Long enough to ride out a restarted server or a cluster's leader election.
    cfg.max_reconnects = 1000;
    let store = Store::open(&store_dir)?;
    let bus = JetStreamBus::connect(&url, ns, cfg.clone()).await?;
    if stage == Stage::Integrate {
        serve(
            bus,
            Ledgering {
                store: store.clone(),
            },
            store,
            cfg,
        )
        .await
    } else {
        let h = Slow {
            inner: NoopStage::new(stage),
            delay: Duration::from_millis(slow),
        };
        serve(bus, h, store, cfg).await
    }
}

async fn store_writer(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(args.get(2).context("store-writer DIR")?);
    let store = Store::open(&dir)?;
    let mut parent = store.iterations()?.last().map(|i| i.id);
    loop {
        let id = RepairId::new();
        store.begin_repair(id, parent)?;
        let (rec, _) = store.complete_repair(&Completion {
            repair: id,
            outcome: RepairOutcome::Fixed,
            summary: "x".repeat(200),
            new_iteration_parent: Some(parent),
            history: Some(HistoryRecord {
                repair: id,
                category: Category::Runtime,
                engine: "search".into(),
                success: true,
                features: vec![0.5; 8],
                at_ms: vocab::now_ms(),
                operator: None,
            }),
        })?;
        parent = rec.new_iteration;
        store.flush().await?;
        say(&format!("durable {id}"));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => worker(&args).await,
        Some("store-writer") => store_writer(&args).await,
        _ => bail!(
            "usage: testkit worker --nats URL --stage STAGE --store DIR [--slow-ms N] | testkit store-writer DIR"
        ),
    }
}
