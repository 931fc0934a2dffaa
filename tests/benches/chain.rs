//! Chains per second and per-hop latency through six no-op stages, side by side in one run:
//! in-process, JetStream at the default sync and with `sync_interval: always`, with 1, 2 and 4
//! copies per stage; the ledger's flush strategies (grouped, one flush per message, none);
//! a three-node cluster with R1 and R3 streams; and the idle memory of the stage binaries.
//!
//!   cargo bench -p coval-tests --bench chain [-- --chains N --js-chains N --always-chains N
//!       --latency-chains N --no-rss --per-message --allocs
//!       --only in-process|jetstream|cluster|rss]
//!
//! Throughput: N chains submitted at once, chains/s = N / time to the last completion.
//! Latency: chains one at a time; a hop is the time from a stage publishing a message (or the
//! client, for the first hop) to the next stage's handler starting on it.
//! On JetStream every copy of a stage has its own connection and its own sled ledger, as a
//! worker process does; "records/flush" is how many handled messages shared one ledger flush.
//! CPU ms per chain, over the throughput run: this process (every stage copy and the client)
//! and the nats-server; where their sum per second nears the cores there are, the run was
//! bound by CPU, not by waiting. "busy/steal": the share of all cores' time that was busy
//! during the throughput run (every process), and the share the hypervisor took from this
//! virtual machine (steal): a run with steal had fewer cores than it counts. With `--allocs`,
//! allocations per chain in this process (a count that does not drift with the machine's
//! load, unlike the times).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bus::Bus;
use bus::jetstream::JetStreamBus;
use bus::memory::MemoryBus;
use bus::runtime::{self, Input, Ledger, NoLedger, Stats};
use coval_tests::bench_arg as arg;
use coval_tests::{NatsCluster, NatsServer, NoopStage, SyncMode, request, test_bus_config};
use futures::StreamExt;
use proto::subjects::Namespace;
use proto::{Envelope, Kind, Message, MessageId, Outgoing, RepairId, Stage};
use settings::BusConfig;
use store::{Store, StoreError};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

type Starts = Arc<Mutex<HashMap<RepairId, Vec<Instant>>>>;

/// What workers allocate with (`stages::Allocator`), so the bench measures what they run.
/// With `--allocs` it also counts allocations: one shared counter bumped by every thread
/// costs time, so the counting runs are for the count, not for the chains/s.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn count_alloc() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; only a counter is added.
// (A counting allocator needs `unsafe`: the bench counts allocations without a profiler.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: forwarded with the caller's layout.
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: forwarded with the caller's layout.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by mimalloc through this allocator with this layout.
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// `--only in-process|jetstream|cluster|rss` runs one part (for profiling); default all.
fn part(name: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--only") {
        Some(i) => args.get(i + 1).is_some_and(|v| v == name),
        None => true,
    }
}

fn bench_config() -> BusConfig {
    BusConfig {
        concurrency: 64,
        ack_wait_secs: 30,
        progress_interval_secs: 10,
        max_reconnects: 100,
        ..test_bus_config()
    }
}

/// How a JetStream row's ledgers make their records durable before the ack.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// The runtime's group commit (`Store::flush_grouped`): what workers do.
    Grouped,
    /// One flush of its own per message (what grouping replaces).
    PerMessage,
    /// No flush before the ack (the runtime before the group commit).
    None,
}

/// A worker's sled ledger with the row's flush strategy.
struct BenchLedger {
    store: Store,
    flush: Flush,
    per_message: AtomicU64,
}

impl Ledger for BenchLedger {
    fn outputs(
        &self,
        stage: Stage,
        id: &MessageId,
    ) -> Result<Option<Vec<(Envelope, Message)>>, StoreError> {
        self.store.processed(stage, id)
    }

    fn record(&self, stage: Stage, id: &MessageId, outputs: &[Outgoing]) -> Result<(), StoreError> {
        self.store.record_processed(stage, id, outputs)
    }

    fn durable(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        match self.flush {
            Flush::Grouped => Box::pin(self.store.flush_grouped()),
            Flush::PerMessage => Box::pin(async {
                self.per_message.fetch_add(1, Ordering::Relaxed);
                self.store.flush().await
            }),
            Flush::None => Box::pin(std::future::ready(Ok(()))),
        }
    }
}

impl BenchLedger {
    fn flushes(&self) -> u64 {
        self.store.grouped_flushes() + self.per_message.load(Ordering::Relaxed)
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
    copies: usize,
    chains_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Handled messages per ledger flush (JetStream rows that flush).
    per_flush: Option<f64>,
    /// CPU milliseconds per chain of this process and of the server (one server's rows).
    cpu_ms: (f64, Option<f64>),
    /// Allocations (and reallocations) per chain in this process, with `--allocs`.
    allocs: Option<f64>,
    /// The machine over the throughput run: the share of all cores' time that was busy (in
    /// any process), and the share the hypervisor took (steal).
    machine: Option<(f64, f64)>,
}

/// The machine's CPU time so far, from /proc/stat: (busy, steal, total), in ticks.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let [user, nice, system, idle, iowait, irq, softirq, steal] = *f.get(..8)? else {
        return None;
    };
    let busy = user + nice + system + irq + softirq;
    Some((busy, steal, busy + steal + idle + iowait))
}

/// CPU seconds (user and system) a process has used so far, from /proc.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses: utime and
    // stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // In USER_HZ, which Linux fixes at 100 for user space.
    Some(ticks as f64 / 100.0)
}

/// One stage runtime to start: its bus (a connection of its own on JetStream), stage, ledger.
type Worker<B> = (B, Stage, Arc<dyn Ledger>);

async fn measure<B: Bus>(
    name: &str,
    client: B,
    workers: Vec<Worker<B>>,
    mut done: impl Completions,
    chains: usize,
    latency_chains: usize,
    server: Option<u32>,
) -> Result<Row> {
    let copies = workers.len() / Stage::WORKERS.len();
    let starts: Starts = Arc::default();
    let stop = CancellationToken::new();
    let mut tasks = vec![];
    for (bus, stage, ledger) in workers {
        let s = starts.clone();
        let h = NoopStage {
            stage,
            observe: move |i: &Input| {
                if let Some(v) = s.lock().unwrap().get_mut(&i.envelope.repair_id) {
                    v.push(Instant::now());
                }
            },
        };
        let stop = stop.clone();
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
    let own = std::process::id();
    let cpu0 = (cpu_secs(own), server.and_then(cpu_secs));
    let allocs0 = ALLOCS.load(Ordering::Relaxed);
    let machine0 = machine_ticks();
    let t0 = Instant::now();
    let publisher = {
        let bus = client.clone();
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
        tokio::time::timeout(Duration::from_secs(300), done.next())
            .await
            .with_context(|| format!("{name}: throughput run stalled"))??;
    }
    let elapsed = t0.elapsed();
    let machine = machine0.zip(machine_ticks()).and_then(|(a, b)| {
        let total = b.2.checked_sub(a.2).filter(|t| *t > 0)? as f64;
        Some(((b.0 - a.0) as f64 / total, (b.1 - a.1) as f64 / total))
    });
    let allocs = COUNTING
        .load(Ordering::Relaxed)
        .then(|| (ALLOCS.load(Ordering::Relaxed) - allocs0) as f64 / chains as f64);
    let per_chain =
        |before: Option<f64>, after: Option<f64>| Some((after? - before?) * 1000.0 / chains as f64);
    let cpu_ms = (
        per_chain(cpu0.0, cpu_secs(own)).unwrap_or(f64::NAN),
        per_chain(cpu0.1, server.and_then(cpu_secs)),
    );
    publisher.await?;

    // Latency, one chain at a time.
    let mut hops = vec![];
    for _ in 0..latency_chains {
        let r = RepairId::new();
        let sent = Instant::now();
        starts.lock().unwrap().insert(r, vec![sent]);
        client
            .publish(
                &Envelope::origin(Kind::RepairRequested, r),
                Message::RepairRequested(request(r)),
            )
            .await?;
        let got = tokio::time::timeout(Duration::from_secs(30), done.next())
            .await
            .with_context(|| format!("{name}: latency run stalled"))??;
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
    let pct = |p: f64| {
        hops.get(((hops.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "{name}, {copies} per stage: {:.0} chains/s",
        chains as f64 / elapsed.as_secs_f64()
    );
    Ok(Row {
        name: name.to_owned(),
        copies,
        chains_per_s: chains as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        per_flush: None,
        cpu_ms,
        allocs,
        machine,
    })
}

async fn in_process(copies: usize, chains: usize, latency_chains: usize) -> Result<Row> {
    let bus = MemoryBus::default();
    let workers = Stage::WORKERS
        .into_iter()
        .flat_map(|s| (0..copies).map(move |_| s))
        .map(|s| (bus.clone(), s, Arc::new(NoLedger) as Arc<dyn Ledger>))
        .collect();
    measure(
        "in-process",
        bus.clone(),
        workers,
        MemCompletions(bus),
        chains,
        latency_chains,
        None,
    )
    .await
}

struct JsRow<'a> {
    name: &'a str,
    url: &'a str,
    /// The one server's process, for its CPU time (`None` for a cluster).
    server: Option<u32>,
    copies: usize,
    flush: Flush,
    replicas: usize,
    chains: usize,
    latency_chains: usize,
}

async fn jetstream(r: JsRow<'_>) -> Result<Row> {
    let cfg = BusConfig {
        replicas: r.replicas,
        ..bench_config()
    };
    // A namespace per row, so rows on one server never share streams.
    static ROW: AtomicU64 = AtomicU64::new(0);
    let ns = Namespace::new(&format!("bench{}", ROW.fetch_add(1, Ordering::Relaxed)))?;
    let client = JetStreamBus::connect(r.url, ns.clone(), cfg.clone()).await?;
    let consumer = client
        .context()
        .get_stream(client.namespace().event_stream())
        .await?
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: client.namespace().event_subjects(),
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
    let mut dirs = vec![];
    let mut ledgers = vec![];
    let mut workers = vec![];
    for stage in Stage::WORKERS {
        for _ in 0..r.copies {
            let dir = tempfile::tempdir()?;
            let ledger = Arc::new(BenchLedger {
                store: Store::open(dir.path())?,
                flush: r.flush,
                per_message: AtomicU64::new(0),
            });
            dirs.push(dir);
            ledgers.push(ledger.clone());
            let bus = JetStreamBus::connect(r.url, ns.clone(), cfg.clone()).await?;
            workers.push((bus, stage, ledger as Arc<dyn Ledger>));
        }
    }
    let mut row = measure(
        r.name,
        client,
        workers,
        done,
        r.chains,
        r.latency_chains,
        r.server,
    )
    .await?;
    let flushes: u64 = ledgers.iter().map(|l| l.flushes()).sum();
    if r.flush != Flush::None && flushes > 0 {
        let handled = (r.chains + r.latency_chains) * Stage::WORKERS.len();
        row.per_flush = Some(handled as f64 / flushes as f64);
    }
    Ok(row)
}

/// VmRSS (and its anonymous part: heap and stacks, not mapped code) of each stage binary at
/// rest: started against a server, ready, idle for 2 s.
async fn idle_rss(url: &str) -> Result<Vec<(String, u64, u64)>> {
    let mut out = vec![];
    for stage in Stage::WORKERS {
        let name = format!("coval-{stage}");
        let bin = coval_tests::workspace_binary(&name)?;
        let ws = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(&bin)
            .args(["--nats", url, "--namespace", "rss", "--workspace"])
            .arg(ws.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = tokio::io::BufReader::new(child.stderr.take().context("stderr")?).lines();
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.next_line().await? {
                if l.contains(": ready") {
                    return Ok(());
                }
            }
            anyhow::bail!("{name} ended before it was ready")
        })
        .await
        .with_context(|| format!("{name} not ready within 30 s"))??;
        // Keep reading its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pid = child.id().context("pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |f: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(f))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .with_context(|| format!("no {f}"))
        };
        out.push((name, field("VmRSS:")?, field("RssAnon:")?));
        child.kill().await?;
    }
    Ok(out)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[tokio::main]
async fn main() {
    // Say what failed at once and exit: dropping a run's sled ledgers after its servers went
    // away can block the runtime's shutdown.
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let chains = arg("--chains", 100_000);
    let js_chains = arg("--js-chains", 5_000);
    let always_chains = arg("--always-chains", 1_500);
    let latency_chains = arg("--latency-chains", 200);
    let load_before = load_average();
    COUNTING.store(flag("--allocs"), Ordering::Relaxed);
    let mut rows = vec![];

    for copies in [1, 2, 4] {
        if part("in-process") {
            rows.push(in_process(copies, chains, latency_chains).await?);
        }
    }
    if part("jetstream") {
        jetstream_rows(&mut rows, js_chains, always_chains, latency_chains).await?;
    }
    if part("cluster") {
        cluster_rows(&mut rows, always_chains, latency_chains).await?;
    }
    let rss = if flag("--no-rss") || !part("rss") {
        vec![]
    } else {
        let nats = NatsServer::start(SyncMode::Default)?;
        idle_rss(&nats.url).await?
    };
    print_rows(
        &rows,
        &rss,
        &load_before,
        [chains, js_chains, always_chains, latency_chains],
    );
    Ok(())
}

async fn jetstream_rows(
    rows: &mut Vec<Row>,
    js_chains: usize,
    always_chains: usize,
    latency_chains: usize,
) -> Result<()> {
    let default = NatsServer::start(SyncMode::Default)?;
    let always = NatsServer::start(SyncMode::Always)?;
    /// A row on one server (its CPU time is measured too).
    fn js<'a>(
        name: &'a str,
        server: &'a NatsServer,
        copies: usize,
        flush: Flush,
        chains: usize,
        latency_chains: usize,
    ) -> JsRow<'a> {
        JsRow {
            name,
            url: &server.url,
            server: Some(server.pid()),
            copies,
            flush,
            replicas: 1,
            chains,
            latency_chains,
        }
    }
    for copies in [1, 2, 4] {
        rows.push(
            jetstream(js(
                "jetstream default sync",
                &default,
                copies,
                Flush::Grouped,
                js_chains,
                latency_chains,
            ))
            .await?,
        );
    }
    for copies in [1, 2, 4] {
        rows.push(
            jetstream(js(
                "jetstream sync always",
                &always,
                copies,
                Flush::Grouped,
                always_chains,
                latency_chains,
            ))
            .await?,
        );
    }
    rows.push(
        jetstream(js(
            "default sync, ledger not flushed",
            &default,
            1,
            Flush::None,
            js_chains,
            latency_chains,
        ))
        .await?,
    );
    rows.push(
        jetstream(js(
            "sync always, ledger not flushed",
            &always,
            1,
            Flush::None,
            always_chains,
            latency_chains,
        ))
        .await?,
    );
    // sled's own flush per message (`flush_async`, what the integration stage did before the
    // group commit) stalled here under load (one sequential chain > 30 s): on request only.
    if flag("--per-message") {
        rows.push(
            jetstream(js(
                "sync always, a flush per message",
                &always,
                1,
                Flush::PerMessage,
                // Slow (each handler waits for a flush of its own): a few chains.
                (always_chains / 50).max(20),
                latency_chains,
            ))
            .await?,
        );
    }
    drop((default, always));
    Ok(())
}

async fn cluster_rows(
    rows: &mut Vec<Row>,
    always_chains: usize,
    latency_chains: usize,
) -> Result<()> {
    let cluster = NatsCluster::start(SyncMode::Always)?;
    cluster.wait_jetstream(Duration::from_secs(60)).await?;
    for (name, replicas) in [
        ("cluster of 3, R1, sync always", 1),
        ("cluster of 3, R3, sync always", 3),
    ] {
        rows.push(
            jetstream(JsRow {
                name,
                url: &cluster.url,
                server: None,
                copies: 1,
                flush: Flush::Grouped,
                replicas,
                chains: always_chains,
                latency_chains,
            })
            .await?,
        );
    }
    drop(cluster);
    Ok(())
}

fn print_rows(rows: &[Row], rss: &[(String, u64, u64)], load_before: &str, counts: [usize; 4]) {
    let [chains, js_chains, always_chains, latency_chains] = counts;
    println!(
        "six no-op stages; {chains} in-process chains, {js_chains} JetStream chains at the default sync, {always_chains} with sync always (a fiftieth with `--per-message`; a sled ledger per stage copy), {latency_chains} sequential chains for latency"
    );
    println!(
        "CPU ms/chain: this process (stages and client) + the nats-server, throughput run; busy/steal: the machine over that run"
    );
    println!(
        "load average before: {load_before}, after: {} ({} cores)",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<34} {:>6} {:>10} {:>11} {:>11} {:>13} {:>10} {:>10} {:>14} {:>12} {:>11}",
        "bus",
        "copies",
        "chains/s",
        "hop p50 ms",
        "hop p99 ms",
        "records/flush",
        "vs in-proc",
        "vs default",
        "CPU ms/chain",
        "allocs/chain",
        "busy/steal"
    );
    let base = rows
        .iter()
        .find(|r| r.name == "in-process")
        .map_or(f64::NAN, |r| r.chains_per_s);
    let default_of = |copies: usize| {
        rows.iter()
            .find(|r| r.name == "jetstream default sync" && r.copies == copies)
            .map(|r| r.chains_per_s)
    };
    // A figure a row does not have shows as "-".
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for r in rows {
        let vs_default = or_dash(
            (r.name != "in-process")
                .then(|| default_of(r.copies))
                .flatten()
                .map(|d| format!("{:.3}", r.chains_per_s / d)),
        );
        let cpu = match r.cpu_ms {
            (own, Some(server)) => format!("{own:.3}+{server:.3}"),
            (own, None) => format!("{own:.3}"),
        };
        println!(
            "{:<34} {:>6} {:>10.0} {:>11.3} {:>11.3} {:>13} {:>10.4} {:>10} {:>14} {:>12} {:>11}",
            r.name,
            r.copies,
            r.chains_per_s,
            r.p50_ms,
            r.p99_ms,
            or_dash(r.per_flush.map(|f| format!("{f:.1}"))),
            r.chains_per_s / base,
            vs_default,
            cpu,
            or_dash(r.allocs.map(|a| format!("{a:.0}"))),
            or_dash(r.machine.map(|(busy, steal)| format!(
                "{:.0}%/{:.0}%",
                busy * 100.0,
                steal * 100.0
            ))),
        );
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    for (name, kb, anon) in rss {
        println!(
            "idle RSS {name} ({profile} build): {:.1} MB, of which anonymous {:.1} MB",
            *kb as f64 / 1024.0,
            *anon as f64 / 1024.0
        );
    }
}
