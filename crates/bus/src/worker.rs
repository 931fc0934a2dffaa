//! A stage worker on NATS JetStream: the small main of every `coval-<stage>` binary and of
//! `coval worker <stage>|all`.
//!
//! A worker connects, makes sure the streams and buckets exist, opens the state it owns, runs
//! its handler(s) through [`runtime::run`] with a durable pull consumer per stage, and on
//! SIGINT/SIGTERM stops pulling, finishes what it holds, and exits. State:
//! - the integration stage owns the workspace ledger (`<workspace>/state`: repairs, iterations,
//!   history); a second integration worker on the same workspace waits as a standby until the
//!   first lets go of it, and answers status requests (`<ns>.ledger.status`) once it holds it;
//! - any other stage keeps its processed-message records in its own database,
//!   `<workspace>/workers/<stage>-<n>` (the first `n` no other process holds), so copies on one
//!   machine never share a sled file.
//!
//! Every handled message also publishes a `StageProgress` event for `coval watch`
//! ([`Announce`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use proto::Stage;
use proto::subjects::Namespace;
use tokio_util::sync::CancellationToken;

use crate::announce::Announce;
use crate::context::StageContext;
use crate::health::Readiness;
use crate::jetstream::JetStreamBus;
use crate::runtime::{self, Handler, Ledger, Stats};
use settings::{Config, LoadOptions};
use store::projects::{Bucket, Projects};
use store::{HistorySource, NoHistory, Store};
use telemetry::LogFormat;
use vocab::exit;
use vocab::workspace::Workspace;

/// How a worker reaches NATS.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// NATS server URL
    #[arg(long, env = "NATS_URL", value_name = "URL")]
    pub nats: String,
    /// Subject prefix (default: bus.namespace from the configuration)
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub auth: crate::jetstream::NatsAuth,
    /// Serve health probes over HTTP on this address: GET /livez (the process answers) and
    /// GET /readyz (NATS connected and every stage consumer bound); e.g. 0.0.0.0:8080 in a pod
    #[arg(long, env = "COVAL_HEALTH", value_name = "ADDR")]
    pub health: Option<std::net::SocketAddr>,
}

/// How a worker names itself in progress events: `host/pid`. A process that is pid 1 is the
/// first of its own pid namespace (a container), where every copy of a scaled service is pid 1
/// and, with host networking, on the same host name: a random suffix tells the copies apart.
pub fn worker_name(host: &str, pid: u32) -> String {
    if pid != 1 {
        return format!("{host}/{pid}");
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{host}/1-{:06x}", h.finish() & 0xff_ffff)
}

/// The command line of a `coval-<stage>` binary.
#[derive(clap::Parser, Debug)]
#[command(
    version,
    about = "A coval stage worker: pulls its stage's work from NATS JetStream",
    long_about = "A coval stage worker: pulls its stage's work from NATS JetStream, handles \
                  it, publishes what comes next. Run more copies to scale; a copy that dies \
                  mid-message has it redelivered to another.\n\nExit codes: 0 stopped by \
                  SIGINT/SIGTERM, 1 internal failure, 2 bad configuration, 3 NATS unreachable."
)]
pub struct ServiceCli {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Workspace directory: this worker's state, caches and (integrate) the ledger
    #[arg(
        long,
        env = "COVAL_WORKSPACE",
        default_value = ".coval",
        value_name = "DIR"
    )]
    pub workspace: PathBuf,
    /// Project settings file (coval.config.yaml)
    #[arg(long, env = "COVAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr
    #[arg(long, env = "COVAL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Internal(String),
}

impl WorkerError {
    pub fn exit_code(&self) -> u8 {
        match self {
            WorkerError::Config(_) => exit::BAD_INPUT,
            WorkerError::Unreachable(_) => exit::UNREACHABLE,
            WorkerError::Internal(_) => exit::INTERNAL,
        }
    }
}

/// A connected worker process: the bus, what stages are built from, and the state it owns.
pub struct Worker {
    pub bus: JetStreamBus,
    pub context: StageContext,
    /// The processed-message ledger of this process (the workspace ledger for integrate).
    pub state: Store,
    pub stop: CancellationToken,
    name: String,
    tasks: Vec<tokio::task::JoinHandle<Result<(), crate::BusError>>>,
    /// What `/readyz` answers from (kept even without `--health`: it costs nothing).
    readiness: Arc<Readiness>,
    /// The `--health` listener, stopped when the worker is dropped.
    _health: Option<AbortOnDrop>,
}

/// A task aborted when this is dropped: the health listener of a worker that failed to
/// start, or that has stopped, must not keep answering.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// Connects and opens state for `stages` (all of them for `coval worker all`).
    pub async fn start(
        args: &WorkerArgs,
        config: Config,
        workspace: &Path,
        stages: &[Stage],
    ) -> Result<Worker, WorkerError> {
        let ns_name = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.settings.bus.namespace.clone());
        let ns = Namespace::new(&ns_name).map_err(|e| WorkerError::Config(e.to_string()))?;
        // The probes answer from the start: live while it connects (or stands by for the
        // ledger), ready only once it pulls.
        let readiness = Arc::new(Readiness::default());
        let health = match args.health {
            Some(addr) => {
                let listener = crate::health::bind(addr).await.map_err(|e| {
                    WorkerError::Config(format!(
                        "--health {addr}: cannot listen there: {e}; pass a free address such as 0.0.0.0:8080"
                    ))
                })?;
                tracing::info!(%addr, "health probes: GET /livez, GET /readyz");
                Some(AbortOnDrop(tokio::spawn(crate::health::serve(
                    listener,
                    readiness.clone(),
                ))))
            }
            None => None,
        };
        std::fs::create_dir_all(workspace).map_err(|e| {
            WorkerError::Config(format!(
                "cannot create the workspace {}: {e}",
                workspace.display()
            ))
        })?;
        JetStreamBus::check_url(&args.nats).map_err(|e| {
            WorkerError::Config(format!(
                "--nats {:?} is not a NATS server URL: {e}; write it as nats://HOST:PORT",
                args.nats
            ))
        })?;
        let bus = JetStreamBus::connect_with(
            &args.nats,
            ns.clone(),
            config.settings.bus.clone(),
            &args.auth,
            crate::jetstream::Role::Worker,
        )
        .await
        .map_err(|e| match e {
            crate::BusError::Auth(_) => WorkerError::Config(e.to_string()),
            e => WorkerError::Unreachable(format!(
                "{e}; start a nats-server with JetStream (scripts/dev-services.sh up) or pass --nats URL"
            )),
        })?;
        readiness.set_client(bus.client().clone());
        // Made here, so a CI identity that may not create buckets finds it.
        bus.submissions()
            .await
            .map_err(|e| WorkerError::Unreachable(e.to_string()))?;
        let replicas = config.settings.bus.replicas;
        let snapshots = Bucket::open_replicated(bus.context(), &ns.snapshot_bucket(), replicas)
            .await
            .map_err(|e| WorkerError::Unreachable(e.to_string()))?;
        let stop = CancellationToken::new();
        let ws = Workspace::new(workspace);
        // What killed workers of this workspace left half-done (their locks died with them).
        let swept = ws.sweep_scratch();
        if swept.removed > 0 {
            tracing::info!(
                removed = swept.removed,
                "removed the scratch dirs of killed workers"
            );
        }
        let (ledger, reports) = if stages.contains(&Stage::Integrate) {
            let reports = Bucket::open_replicated(bus.context(), &ns.report_bucket(), replicas)
                .await
                .map_err(|e| WorkerError::Unreachable(e.to_string()))?;
            (
                Some(open_ledger(&ws.state_dir(), &stop).await?),
                Some(reports),
            )
        } else {
            (None, None)
        };
        let state = match &ledger {
            Some(l) => l.clone(),
            None => open_own_state(&ws, stages)?,
        };
        // History lives in the ledger; a process without it decides without history.
        let history: Arc<dyn HistorySource> = match &ledger {
            Some(l) => Arc::new(l.clone()),
            None => Arc::new(NoHistory),
        };
        let projects = Projects::with_bucket(
            Some(ws.iterations_dir()),
            ws.snapshot_cache_dir(),
            snapshots,
            config.settings.bus.snapshot_max_bytes,
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        Ok(Worker {
            bus,
            context: StageContext {
                config,
                workspace: ws,
                projects,
                history,
                ledger,
                reports,
            },
            state,
            stop,
            name: worker_name(&host, std::process::id()),
            tasks: vec![],
            readiness,
            _health: health,
        })
    }

    /// Runs `handler` until the worker stops; its outputs are announced as progress events.
    pub fn spawn<H: Handler>(&mut self, handler: H) {
        let bus = self.bus.clone();
        let ledger: Arc<dyn Ledger> = Arc::new(self.state.clone());
        let cfg = self.context.config.settings.bus.clone();
        let stop = self.stop.clone();
        // The handler's interim reports (how far a validation is) go out as events, for
        // `coval watch` and `coval repair --nats`; a lost one only delays the next.
        let (interim, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let events = self.bus.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(p) = reports.recv().await {
                let p: proto::messages::StageProgress = p;
                let env = proto::Envelope::origin(proto::Kind::StageProgress, p.repair_id);
                if let Err(e) =
                    crate::Bus::publish(&events, &env, proto::Message::StageProgress(p)).await
                {
                    tracing::debug!(error = %e, "an interim progress event was not published");
                }
            }
            Ok(())
        }));
        if telemetry::metrics_enabled() {
            let (bus, stop, stage) = (self.bus.clone(), self.stop.clone(), handler.stage());
            self.tasks.push(tokio::spawn(async move {
                report_lag(bus, stage, stop).await;
                Ok(())
            }));
        }
        let h = Announce::new(handler, Some(self.name.clone())).with_interim(interim);
        let stats = Arc::new(Stats::default());
        self.readiness.add_stage(h.stage(), stats.clone());
        self.tasks.push(tokio::spawn(async move {
            runtime::run(bus, Arc::new(h), ledger, cfg, stats, stop).await
        }));
    }

    /// Serves until SIGINT or SIGTERM (or until `stop` is cancelled), then drains.
    pub async fn serve(mut self) -> Result<(), WorkerError> {
        if let Some(ledger) = self.context.ledger.clone() {
            let bus = self.bus.clone();
            let subject = self.bus.namespace().status_subject();
            let stop = self.stop.clone();
            let ws = self.context.workspace.clone();
            self.tasks.push(tokio::spawn(async move {
                answer_status(bus, subject, ledger, ws, stop).await;
                Ok(())
            }));
        }
        let stop = self.stop.clone();
        // Ready once every stage's consumer is bound: that can take a while when a cluster
        // is electing a leader (the runtimes retry), and a worker that says "ready" pulls.
        let readiness = self.readiness.clone();
        let name = self.name.clone();
        let namespace = self.bus.namespace().as_str().to_owned();
        let announced = stop.clone();
        // Like every task here it lives until the worker stops: one that ends stops the rest.
        self.tasks.push(tokio::spawn(async move {
            while !readiness.unbound().is_empty() {
                tokio::select! {
                    _ = announced.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            tracing::info!(worker = %name, %namespace, "ready");
            eprintln!("coval worker {name}: ready");
            announced.cancelled().await;
            Ok(())
        }));
        let signals = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut t), Ok(mut i)) => {
                    tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        let mut first_error = None;
        tokio::select! {
            _ = signals => tracing::info!("stopping: finishing the messages in hand"),
            _ = stop.cancelled() => {}
            r = wait_any(&mut self.tasks) => {
                first_error = match r {
                    // Still no consumer after `bus.setup_timeout_secs`: NATS is not usable.
                    Some(Err(e @ (crate::BusError::Setup { .. } | crate::BusError::Connect { .. }))) => {
                        Some(WorkerError::Unreachable(format!("a stage stopped: {e}")))
                    }
                    Some(Err(e)) => Some(WorkerError::Internal(format!("a stage stopped: {e}"))),
                    _ => None,
                };
            }
        }
        self.readiness.set_stopping();
        stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Err(e) = self.state.flush().await {
            tracing::warn!(error = %e, "cannot flush the worker's state");
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// How often the consumer lag is sampled for the `coval.stage.consumer.lag` gauge.
const LAG_EVERY: Duration = Duration::from_secs(2);

/// Samples the stage's consumer: messages waiting for any copy of the stage (`lag`) and
/// messages delivered but not yet acknowledged (`coval.stage.in_flight`), as gauges.
async fn report_lag(bus: JetStreamBus, stage: Stage, stop: CancellationToken) {
    let meter = opentelemetry::global::meter("coval");
    let lag = meter
        .u64_gauge("coval.stage.consumer.lag")
        .with_description("messages in the stage's queue not yet delivered to any worker")
        .build();
    let in_flight = meter
        .u64_gauge("coval.stage.in_flight")
        .with_description("messages delivered to the stage's workers and not yet acknowledged")
        .build();
    let attrs = [opentelemetry::KeyValue::new("stage", stage.as_str())];
    loop {
        if let Some(load) = bus.consumer_load(stage).await {
            lag.record(load.pending, &attrs);
            in_flight.record(load.ack_pending, &attrs);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}

async fn wait_any(
    tasks: &mut [tokio::task::JoinHandle<Result<(), crate::BusError>>],
) -> Option<Result<(), crate::BusError>> {
    if tasks.is_empty() {
        return std::future::pending().await;
    }
    let (r, _, _) = futures::future::select_all(tasks.iter_mut()).await;
    r.ok()
}

/// `<workspace>/workers/<stages>-<n>`: the first slot no other process holds.
fn open_own_state(workspace: &Workspace, stages: &[Stage]) -> Result<Store, WorkerError> {
    let name = stages
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let mut last = String::new();
    for n in 0..64 {
        let dir = workspace.worker_dir(&name, n);
        match Store::open(&dir) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(WorkerError::Config(format!(
        "cannot open a worker database under {}: {last}",
        workspace.workers_dir().display()
    )))
}

/// The ledger, waiting as a standby while another integration worker holds it.
async fn open_ledger(path: &Path, stop: &CancellationToken) -> Result<Store, WorkerError> {
    let mut said = false;
    loop {
        match Store::open(path) {
            Ok(s) => return Ok(s),
            Err(e @ store::StoreError::Schema { .. }) => {
                return Err(WorkerError::Config(e.to_string()));
            }
            Err(e) => {
                if !said {
                    eprintln!(
                        "coval worker: waiting for the ledger {} ({e}); standing by",
                        path.display()
                    );
                    said = true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(WorkerError::Internal("stopped while waiting for the ledger".into())),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The ledger as JSON, as `coval status --json` prints it: iterations (with lineage and
/// whether their files are in the workspace) and repairs.
pub fn ledger_json(store: &Store, workspace: &Workspace) -> serde_json::Value {
    use store::{IterationOrigin, RepairStatus};
    let its = store.iterations().unwrap_or_default();
    let mut repairs = store.repairs().unwrap_or_default();
    repairs.sort_by_key(|r| r.created_ms);
    serde_json::json!({
        "iterations": its.iter().map(|i| serde_json::json!({
            "id": i.id.to_string(),
            "parent": i.parent.map(|p| p.to_string()),
            "origin": match &i.origin {
                IterationOrigin::Import { path } => serde_json::json!({"import": path}),
                IterationOrigin::Repair { repair } => serde_json::json!({"repair": repair.to_string()}),
                IterationOrigin::Generate { description } => serde_json::json!({"generate": description}),
            },
            "created_ms": i.created_ms,
            "on_disk": workspace.iteration_dir(i.id).is_dir(),
        })).collect::<Vec<_>>(),
        "repairs": repairs.iter().map(|r| serde_json::json!({
            "id": r.id.to_string(),
            "status": match r.status { RepairStatus::InFlight => "in_flight", RepairStatus::Completed => "completed" },
            "outcome": r.outcome.map(proto::summary::outcome_label),
            "summary": r.summary,
            "new_iteration": r.new_iteration.map(|i| i.to_string()),
        })).collect::<Vec<_>>(),
    })
}

/// Repairs the event stream has progress for but no completion: in flight in the workers
/// (the ledger hears of a repair only when it completes).
async fn in_flight(bus: &JetStreamBus) -> Vec<String> {
    let ns = bus.namespace();
    let Ok(stream) = bus.context().get_stream(ns.event_stream()).await else {
        return vec![];
    };
    let repairs_with = |kind: proto::Kind| {
        let stream = stream.clone();
        let filter = ns.events_of_kind(kind);
        async move {
            let mut out = std::collections::BTreeSet::new();
            if let Ok(mut subjects) = stream.info_with_subjects(filter).await {
                while let Some(Ok((subject, _))) = subjects.next().await {
                    if let Some(id) = ns.repair_of_event(&subject) {
                        out.insert(id.to_owned());
                    }
                }
            }
            out
        }
    };
    let started = repairs_with(proto::Kind::StageProgress).await;
    let done = repairs_with(proto::Kind::RepairCompleted).await;
    started.difference(&done).cloned().collect()
}

/// Adds the repairs the event stream shows in flight to the ledger's list, except those the
/// ledger already has: the integration worker records a completion before it publishes the
/// `repair_completed` event, so for a moment a repair is both completed and "in flight".
fn add_in_flight(ledger: &mut serde_json::Value, in_flight: Vec<String>) {
    let Some(list) = ledger["repairs"].as_array_mut() else {
        return;
    };
    let known: std::collections::HashSet<String> = list
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    for id in in_flight {
        if !known.contains(&id) {
            list.push(serde_json::json!({
                "id": id, "status": "in_flight", "outcome": null, "summary": "", "new_iteration": null,
            }));
        }
    }
}

async fn answer_status(
    bus: JetStreamBus,
    subject: String,
    store: Store,
    workspace: Workspace,
    stop: CancellationToken,
) {
    let client = bus.client().clone();
    let mut sub = match client
        .queue_subscribe(subject.clone(), "ledger".into())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot answer status requests");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Some(reply) = msg.reply else { continue };
        // The stream first, then the ledger: a repair that completes in between shows once,
        // completed, instead of not at all.
        let running = in_flight(&bus).await;
        let mut v = ledger_json(&store, &workspace);
        add_in_flight(&mut v, running);
        let body = serde_json::to_vec(&v).unwrap_or_default();
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::debug!(error = %e, "status reply not sent");
        }
    }
}

/// The main of a `coval-<stage>` binary: parse the command line, load the configuration,
/// connect, build the handler with `build`, serve until a signal.
pub fn main<H, F>(stage: Stage, build: F) -> ExitCode
where
    H: Handler,
    F: FnOnce(&StageContext) -> Result<H, WorkerError>,
{
    use clap::Parser;
    let cli = ServiceCli::parse();
    let format: LogFormat = cli.log_format.parse().unwrap_or_default();
    let service = format!("coval-{stage}");
    let _telemetry = telemetry::init(&service, format, cli.verbose)
        .map_err(|e| eprintln!("{service}: warning: {e}"))
        .ok();
    let config = match settings::load(&LoadOptions::from_process(cli.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{service}: configuration error: {e}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let r = rt.block_on(async {
        let mut w = Worker::start(&cli.worker, config, &cli.workspace, &[stage]).await?;
        let h = build(&w.context)?;
        w.spawn(h);
        w.serve().await
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::RepairId;
    use proto::messages::RepairOutcome;
    use store::Completion;

    #[test]
    fn a_repair_completed_in_the_ledger_is_not_also_listed_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let done = RepairId::new();
        store
            .complete_repair(&Completion {
                repair: done,
                outcome: RepairOutcome::Fixed,
                summary: "fixed".into(),
                new_iteration_parent: None,
                history: None,
            })
            .unwrap();
        let running = RepairId::new();
        let mut v = ledger_json(&store, &Workspace::new(dir.path()));
        // The completion event of `done` is not in the stream yet, so both look in flight.
        add_in_flight(&mut v, vec![done.to_string(), running.to_string()]);
        let repairs = v["repairs"].as_array().unwrap();
        assert_eq!(repairs.len(), 2, "{repairs:?}");
        assert_eq!(repairs[0]["id"], done.to_string());
        assert_eq!(repairs[0]["status"], "completed");
        assert_eq!(repairs[1]["id"], running.to_string());
        assert_eq!(repairs[1]["status"], "in_flight");
    }

    #[test]
    fn copies_that_are_pid_1_in_their_containers_get_names_of_their_own() {
        assert_eq!(worker_name("vm", 4242), "vm/4242");
        let names: std::collections::HashSet<String> =
            (0..3).map(|_| worker_name("vm", 1)).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("vm/1-") && n.len() == 11)
        );
    }
}
