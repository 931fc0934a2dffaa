//! Chains per second and per-hop latency through six no-op stages, on the in-process bus and
//! on JetStream with the default sync setting and with `sync_interval: always`, side by side
//! in one run.
//!
//!   cargo bench -p coval-tests --bench chain [-- --chains N --js-chains N --latency-chains N]
//!
//! Throughput: N chains submitted at once, chains/s = N / time to the last completion.
//! Latency: chains one at a time; a hop is the time from a stage publishing a message (or the
//! client, for the first hop) to the next stage's handler starting on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use bus::memory::MemoryBus;
use bus::runtime::{self, Input, Ledger, NoLedger, Stats};
use coval_tests::{NatsServer, NoopStage, SyncMode, request, test_bus_config};
use futures::StreamExt;
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, RepairId, Stage};
use settings::BusConfig;
use store::Store;
use tokio_util::sync::CancellationToken;

type Starts = Arc<Mutex<HashMap<RepairId, Vec<Instant>>>>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_config() -> BusConfig {
    BusConfig {
        concurrency: 64,
        ack_wait_secs: 30,
        progress_interval_secs: 10,
        ..test_bus_config()
    }
}

/// Something that delivers completions.
trait Completions {
    async fn next(&mut self) -> Result<RepairId>;
}

struct MemCompletions(MemoryBus);

impl Completions for MemCompletions {
    async fn next(&mut self) -> Result<RepairId> {
        let (e, _) = self.0.next_event().await.context("bus closed")?;
        Ok(e.repair_id)
    }
}

struct JsCompletions(async_nats::jetstream::consumer::pull::Stream);

impl Completions for JsCompletions {
    async fn next(&mut self) -> Result<RepairId> {
        let m = self.0.next().await.context("stream ended")??;
        let h = m.headers.as_ref().context("headers")?;
        let env = Envelope::from_headers(|n| h.get(n).map(|v| v.as_str()))?;
        Ok(env.repair_id)
    }
}

struct Row {
    name: String,
    chains_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn measure<B: Bus>(
    name: &str,
    bus: B,
    mut done: impl Completions,
    ledgers: Vec<Arc<dyn Ledger>>,
    chains: usize,
    latency_chains: usize,
) -> Result<Row> {
    let starts: Starts = Arc::default();
    let stop = CancellationToken::new();
    let mut tasks = vec![];
    for (stage, ledger) in Stage::WORKERS.into_iter().zip(ledgers) {
        let s = starts.clone();
        let h = NoopStage {
            stage,
            observe: move |i: &Input| {
                if let Some(v) = s.lock().unwrap().get_mut(&i.envelope.repair_id) {
                    v.push(Instant::now());
                }
            },
        };
        let (bus, stop) = (bus.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            runtime::run(
                bus,
                Arc::new(h),
                ledger,
                bench_config(),
                Arc::new(Stats::default()),
                stop,
            )
            .await
        }));
    }

    // Throughput.
    let requests: Vec<(Envelope, Message)> = (0..chains)
        .map(|_| {
            let r = RepairId::new();
            (
                Envelope::origin(Kind::RepairRequested, r),
                Message::RepairRequested(request(r)),
            )
        })
        .collect();
    let t0 = Instant::now();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            futures::stream::iter(requests)
                .map(|(e, m)| {
                    let bus = bus.clone();
                    async move { bus.publish(&e, m).await }
                })
                .buffer_unordered(256)
                .for_each(|r| async move {
                    r.expect("publish");
                })
                .await
        })
    };
    for _ in 0..chains {
        tokio::time::timeout(Duration::from_secs(120), done.next())
            .await
            .context("throughput run stalled")??;
    }
    let elapsed = t0.elapsed();
    publisher.await?;

    // Latency, one chain at a time.
    let mut hops = vec![];
    for _ in 0..latency_chains {
        let r = RepairId::new();
        let sent = Instant::now();
        starts.lock().unwrap().insert(r, vec![sent]);
        bus.publish(
            &Envelope::origin(Kind::RepairRequested, r),
            Message::RepairRequested(request(r)),
        )
        .await?;
        let got = tokio::time::timeout(Duration::from_secs(30), done.next())
            .await
            .context("latency run stalled")??;
        anyhow::ensure!(got == r, "completion of another chain");
        let times = starts.lock().unwrap().remove(&r).context("times")?;
        anyhow::ensure!(
            times.len() == 7,
            "expected 7 timestamps, got {}",
            times.len()
        );
        hops.extend(times.windows(2).map(|w| w[1] - w[0]));
    }
    hops.sort();
    let pct =
        |p: f64| hops[((hops.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    Ok(Row {
        name: name.to_owned(),
        chains_per_s: chains as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

async fn jetstream(
    name: &str,
    sync: SyncMode,
    chains: usize,
    latency_chains: usize,
    dirs: &[tempfile::TempDir],
) -> Result<Row> {
    let nats = NatsServer::start(sync)?;
    let bus = JetStreamBus::connect(&nats.url, Namespace::new("bench")?, bench_config()).await?;
    let consumer = bus
        .context()
        .get_stream(bus.namespace().event_stream())
        .await?
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: bus.namespace().event_subjects(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let done = JsCompletions(
        consumer
            .stream()
            .max_messages_per_batch(1000)
            .messages()
            .await?,
    );
    let ledgers = dirs
        .iter()
        .map(|d| Ok(Arc::new(Store::open(d.path())?) as Arc<dyn Ledger>))
        .collect::<Result<Vec<_>>>()?;
    measure(name, bus, done, ledgers, chains, latency_chains).await
}

#[tokio::main]
async fn main() -> Result<()> {
    let chains = arg("--chains", 100_000);
    let js_chains = arg("--js-chains", 5_000);
    let latency_chains = arg("--latency-chains", 300);
    let mut rows = vec![];

    let bus = MemoryBus::default();
    let ledgers = (0..6)
        .map(|_| Arc::new(NoLedger) as Arc<dyn Ledger>)
        .collect();
    rows.push(
        measure(
            "in-process",
            bus.clone(),
            MemCompletions(bus),
            ledgers,
            chains,
            latency_chains,
        )
        .await?,
    );

    for (name, sync) in [
        ("jetstream, default sync", SyncMode::Default),
        ("jetstream, sync_interval always", SyncMode::Always),
    ] {
        let dirs: Vec<_> = (0..6)
            .map(|_| tempfile::tempdir())
            .collect::<Result<_, _>>()?;
        rows.push(jetstream(name, sync, js_chains, latency_chains, &dirs).await?);
    }

    println!(
        "six no-op stages; {chains} in-process chains, {js_chains} JetStream chains (sled ledger per stage), {latency_chains} sequential chains for latency"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>10}",
        "bus", "chains/s", "hop p50 ms", "hop p99 ms", "vs in-proc"
    );
    let base = rows[0].chains_per_s;
    for r in &rows {
        println!(
            "{:<34} {:>12.0} {:>12.3} {:>12.3} {:>10.4}",
            r.name,
            r.chains_per_s,
            r.p50_ms,
            r.p99_ms,
            r.chains_per_s / base
        );
    }
    Ok(())
}
