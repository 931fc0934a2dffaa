//! `coval repair`: embedded (all six stages in this process over the in-process bus, the
//! sandbox Docker when it answers else local, the search engine when no model answers).
//! `--analyze` stops after the decision and changes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use bus::memory::MemoryBus;
use bus::runtime::{self, Handler, Input, NoLedger, Outcome, Stats};
use clap::{Args, ValueEnum};
use proto::messages::{Decided, EngineChoice, ProjectRef, RepairRequested};
use proto::{Envelope, Kind, Message, RepairId, Stage};
use settings::Config;
use store::{HistorySource, NoHistory, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// The error log of the failing run (`-` reads standard input)
    #[arg(short, long, value_name = "FILE")]
    pub(crate) error: PathBuf,
    /// The project's source directory
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub(crate) source: PathBuf,
    /// The command that runs the project's tests (detected when absent)
    #[arg(long, value_name = "CMD")]
    pub(crate) test_cmd: Option<String>,
    /// Repair a stored iteration instead of the source directory
    #[arg(short, long, value_name = "ID")]
    pub(crate) iteration: Option<String>,
    /// Model alias from llm.config.yaml
    #[arg(long, value_name = "ALIAS")]
    pub(crate) model: Option<String>,
    /// Where fixes come from: the model when it answers else search, the model, or search only
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    pub(crate) engine: EngineArg,
    /// Fix attempts (default: global.max_iterations from the configuration)
    #[arg(long, value_name = "N")]
    pub(crate) max_attempts: Option<u32>,
    /// Print the triage and the decision, change nothing
    #[arg(long)]
    pub(crate) analyze: bool,
    /// Apply the validated patch to the source tree
    #[arg(long)]
    pub(crate) apply: bool,
    /// Deploy the repaired iteration
    #[arg(long)]
    pub(crate) deploy: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
    /// Submit to NATS workers instead of running embedded
    #[arg(long, value_name = "URL")]
    pub(crate) nats: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum EngineArg {
    Auto,
    Llm,
    Search,
}

/// The largest log read; the end of a log is where the error is.
const MAX_LOG_BYTES: u64 = 64 << 20;

fn read_log(path: &Path) -> Result<String, Failure> {
    let shown = path.display();
    let mut bytes = vec![];
    let read = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_LOG_BYTES)
            .read_to_end(&mut bytes)
            .map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|f| {
            let len = f.metadata()?.len();
            let mut f = f;
            if len > MAX_LOG_BYTES {
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(len - MAX_LOG_BYTES))?;
            }
            f.take(MAX_LOG_BYTES).read_to_end(&mut bytes).map(|_| ())
        })
    };
    read.map_err(|e| {
        Failure::input(format!(
            "cannot read the error log {shown}: {e}; pass the log of the failing run with -e FILE (or -e - for stdin)"
        ))
    })?;
    logparse::text_from_bytes(&bytes)
        .map_err(|e| Failure::input(format!("the error log {shown} is not usable: {e}")))
}

/// Receives what the in-process bus routes to the integration stage.
struct Collect(mpsc::UnboundedSender<Decided>);

impl Handler for Collect {
    fn stage(&self) -> Stage {
        Stage::Integrate
    }
    async fn handle(&self, input: Input) -> Outcome {
        if let Message::Decided(d) = &*input.message {
            let _ = self.0.send(d.clone());
        }
        Outcome::Skip("collected by the command line".into())
    }
}

/// What every kind of repair needs, checked before anything starts.
pub(crate) struct Inputs {
    pub log: String,
    pub iteration: Option<proto::IterationId>,
    /// The tree to repair (the source directory or the stored iteration), canonical.
    pub source: PathBuf,
}

pub(crate) fn inputs(args: &RepairArgs, cfg: &Config, workspace: &Path) -> Result<Inputs, Failure> {
    let log = read_log(&args.error)?;
    let iteration = match &args.iteration {
        Some(i) => Some(
            i.parse::<proto::IterationId>()
                .map_err(|e| Failure::input(e.to_string()))?,
        ),
        None => None,
    };
    let source = match iteration {
        Some(id) => {
            let dir = vocab::Workspace::new(workspace).iteration_dir(id);
            if !dir.is_dir() {
                return Err(Failure::input(format!(
                    "iteration {id} is not stored in {}: see `coval status`",
                    workspace.display()
                )));
            }
            dir
        }
        None => args.source.clone(),
    };
    if !source.is_dir() {
        return Err(Failure::input(format!(
            "the source directory {} does not exist or is not a directory; pass the project with -s DIR",
            source.display()
        )));
    }
    let source = source
        .canonicalize()
        .map_err(|e| Failure::input(format!("cannot resolve {}: {e}", source.display())))?;
    if let Some(m) = &args.model
        && !cfg.llm.models.contains_key(m)
    {
        let known: Vec<&str> = cfg.llm.models.keys().map(String::as_str).collect();
        return Err(Failure::input(format!(
            "unknown model alias `{m}`: use one of {}",
            known.join(", ")
        )));
    }
    Ok(Inputs {
        log,
        iteration,
        source,
    })
}

pub async fn run(args: RepairArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    if args.analyze && (args.apply || args.deploy) {
        return Err(Failure::input(
            "--analyze changes nothing, so it cannot be combined with --apply or --deploy"
                .to_owned(),
        ));
    }
    if args.deploy && args.nats.is_some() {
        return Err(Failure::input(
            "--deploy needs the repaired iteration on this machine: with --nats it lives in the integration worker's workspace; run `coval run -i ID` there (or repair embedded with --deploy)".to_owned(),
        ));
    }
    let Inputs {
        log,
        iteration,
        source,
    } = inputs(&args, cfg, workspace)?;
    if let Some(url) = args.nats.clone() {
        return crate::remote::repair(args, cfg, workspace, &url, log, source).await;
    }

    let engine = match args.engine {
        EngineArg::Search => EngineChoice::Search,
        EngineArg::Llm => {
            if !llm::server_answers(&cfg.llm.server.url).await {
                return Err(Failure::unreachable(format!(
                    "no model server at {}: start `ollama serve` or set COVAL_LLM_URL",
                    cfg.llm.server.url
                )));
            }
            EngineChoice::Llm
        }
        EngineArg::Auto => {
            if llm::server_answers(&cfg.llm.server.url).await {
                EngineChoice::Llm
            } else {
                tracing::info!(url = %cfg.llm.server.url, "no model server answers: the search engine would repair");
                EngineChoice::Search
            }
        }
    };

    // A sandbox asked for explicitly must answer before anything starts.
    if !args.analyze
        && cfg.settings.sandbox.backend == settings::SandboxBackend::Docker
        && let Err(e) = sandbox::detect(&cfg.settings.sandbox).await
    {
        return Err(Failure::unreachable(e.to_string()));
    }

    // Analysis reads history from an existing workspace and never creates one; a repair
    // opens (or creates) the workspace store, which the integration stage owns.
    let db = vocab::Workspace::new(workspace).state_dir();
    let store = if args.analyze {
        None
    } else {
        std::fs::create_dir_all(workspace).map_err(|e| {
            Failure::input(format!(
                "cannot create the workspace {}: {e}",
                workspace.display()
            ))
        })?;
        Some(Store::open(&db).map_err(|e| Failure::input(e.to_string()))?)
    };
    let history: Arc<dyn HistorySource> = match &store {
        Some(s) => Arc::new(s.clone()),
        None if db.exists() => match Store::open(&db) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the workspace store: deciding without history");
                Arc::new(NoHistory)
            }
        },
        None => Arc::new(NoHistory),
    };

    // A repair works on a snapshot: the source is stored as an iteration first, every stage
    // reads that copy, and `--apply` later compares the user's tree with it.
    let (project_dir, iteration) = match (&store, iteration) {
        (Some(store), None) => {
            let it = store
                .add_iteration(
                    None,
                    store::IterationOrigin::Import {
                        path: source.display().to_string(),
                    },
                )
                .map_err(|e| Failure::internal(e.to_string()))?;
            let dir = vocab::Workspace::new(workspace).iteration_dir(it.id);
            let staging = dir.with_extension("partial");
            let _ = std::fs::remove_dir_all(&staging);
            sandbox::copy_project(&source, &staging)
                .and_then(|_| std::fs::rename(&staging, &dir))
                .map_err(|e| {
                    Failure::input(format!("cannot snapshot {}: {e}", source.display()))
                })?;
            (dir, Some(it.id))
        }
        (_, iteration) => (source.clone(), iteration),
    };

    let repair_id = RepairId::new();
    // In flight until the integration stage completes it (or forever, marked so, if this
    // process is killed: `coval status` shows it).
    if let Some(store) = &store
        && let Err(e) = store.begin_repair(repair_id, iteration)
    {
        return Err(Failure::internal(format!("cannot record the repair: {e}")));
    }
    let request = RepairRequested {
        repair_id,
        project: ProjectRef::LocalPath {
            path: project_dir.display().to_string(),
        },
        error_log: log,
        test_cmd: args.test_cmd.clone(),
        iteration,
        engine,
        model: args.model.clone(),
        max_attempts: args
            .max_attempts
            .unwrap_or(cfg.settings.global.max_iterations)
            .max(1),
        analyze_only: args.analyze,
        requested_at_ms: vocab::now_ms(),
    };

    let bus = MemoryBus::default();
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let bus_cfg = cfg.settings.bus.clone();
    let mut tasks = vec![];
    let ctx = bus::context::StageContext {
        config: cfg.clone(),
        workspace: vocab::Workspace::new(workspace),
        projects: store::projects::Projects::local(Some(
            vocab::Workspace::new(workspace).iterations_dir(),
        )),
        history,
    };
    tasks.push(spawn(
        &bus,
        Observed::new(
            triage::handler::TriageStage::from_context(&ctx),
            &progress_tx,
        ),
        &bus_cfg,
        &stop,
    ));
    tasks.push(spawn(
        &bus,
        Observed::new(
            decision::handler::DecisionStage::from_context(&ctx),
            &progress_tx,
        ),
        &bus_cfg,
        &stop,
    ));
    match &store {
        None => tasks.push(spawn(&bus, Collect(tx), &bus_cfg, &stop)),
        Some(store) => {
            drop(tx);
            tasks.push(spawn(
                &bus,
                Observed::new(mre::handler::MreStage::from_context(&ctx), &progress_tx),
                &bus_cfg,
                &stop,
            ));
            tasks.push(spawn(
                &bus,
                Observed::new(fix::handler::FixStage::from_context(&ctx), &progress_tx),
                &bus_cfg,
                &stop,
            ));
            let validate = validate::handler::ValidateStage::from_context(&ctx);
            if !request.analyze_only {
                // Containers and warm test servers start while triage, the MRE and the fix
                // run; the first attempt takes them.
                validate
                    .prewarm(repair_id, &request.project, request.test_cmd.as_deref())
                    .await;
            }
            tasks.push(spawn(
                &bus,
                Observed::new(validate, &progress_tx),
                &bus_cfg,
                &stop,
            ));
            tasks.push(spawn(
                &bus,
                Observed::new(
                    integrate::handler::IntegrateStage::from_context(&ctx, store.clone()),
                    &progress_tx,
                ),
                &bus_cfg,
                &stop,
            ));
        }
    }
    drop(progress_tx);

    let mut envelope = Envelope::origin(Kind::RepairRequested, repair_id);
    runtime::inject_current_trace(&mut envelope);
    bus.publish(&envelope, Message::RepairRequested(request))
        .await
        .map_err(|e| Failure::internal(format!("cannot start the repair: {e}")))?;

    let progress = crate::progress::Progress::new(args.json);
    let end = loop {
        tokio::select! {
            p = progress_rx.recv() => match p {
                Some(p) => progress.stage(&p),
                None => break Err(Failure::internal("the pipeline stopped".to_owned())),
            },
            d = rx.recv(), if store.is_none() => match d {
                Some(d) => break Ok(End::Analyzed(Box::new(d))),
                None => break Err(Failure::internal("the pipeline stopped".to_owned())),
            },
            ev = bus.next_event() => match ev.map(|(_, m)| m) {
                Some(m) => match &*m {
                    Message::RepairCompleted(c) if c.repair_id == repair_id => break Ok(End::Completed(Box::new(c.clone()))),
                    Message::DeadLetter(dl) => break Err(Failure::input(dl.reason.clone())),
                    _ => {}
                },
                None => break Err(Failure::internal("the pipeline stopped".to_owned())),
            },
        }
    };
    progress.finish();
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    match end? {
        End::Analyzed(d) => {
            crate::report::print_analysis(&d, args.json);
            Ok(exit::DONE)
        }
        End::Completed(c) => {
            let code = crate::report::print_completion(&c, workspace, args.json, true);
            if args.apply
                && c.outcome == proto::messages::RepairOutcome::Fixed
                && let Some(store) = &store
            {
                crate::apply::apply(store, workspace, &c, &source)?;
            }
            if args.deploy
                && let Some(store) = &store
            {
                return deploy_repaired(&c, code, cfg, store, workspace, args.json).await;
            }
            Ok(code)
        }
    }
}

/// `--deploy`: the repaired iteration goes out blue-green; nothing is deployed without a fix.
async fn deploy_repaired(
    c: &proto::messages::RepairCompleted,
    code: u8,
    cfg: &Config,
    store: &Store,
    workspace: &Path,
    json: bool,
) -> Result<u8, Failure> {
    match c.new_iteration {
        Some(id) if c.outcome == proto::messages::RepairOutcome::Fixed => {
            let req = deploy::run::RunRequest {
                iteration: Some(id),
                ..Default::default()
            };
            crate::deploy::deploy(&cfg.settings, store, workspace, &req, json).await
        }
        _ => {
            eprintln!("coval: not deployed: the repair produced no validated fix");
            Ok(code)
        }
    }
}

enum End {
    Analyzed(Box<Decided>),
    Completed(Box<proto::messages::RepairCompleted>),
}

/// A stage's progress, as the command line shows it.
pub struct StageEvent {
    pub stage: Stage,
    pub what: String,
    pub elapsed: Duration,
}

/// Wraps a handler to report each handled message.
struct Observed<H> {
    inner: H,
    tx: mpsc::UnboundedSender<StageEvent>,
}

impl<H> Observed<H> {
    fn new(inner: H, tx: &mpsc::UnboundedSender<StageEvent>) -> Self {
        Observed {
            inner,
            tx: tx.clone(),
        }
    }
}

impl<H: Handler> Handler for Observed<H> {
    fn stage(&self) -> Stage {
        self.inner.stage()
    }

    async fn handle(&self, input: Input) -> Outcome {
        let started = std::time::Instant::now();
        let out = self.inner.handle(input).await;
        let what = match &out {
            Outcome::Publish(ms) => ms
                .iter()
                .map(proto::summary::describe)
                .collect::<Vec<_>>()
                .join("; "),
            Outcome::Skip(r) => format!("skipped: {r}"),
            Outcome::Retry { reason, .. } => format!("will retry: {reason}"),
            Outcome::Reject(r) => format!("refused: {r}"),
        };
        let _ = self.tx.send(StageEvent {
            stage: self.inner.stage(),
            what,
            elapsed: started.elapsed(),
        });
        out
    }
}

fn spawn<H: Handler>(
    bus: &MemoryBus,
    h: H,
    cfg: &settings::BusConfig,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let (bus, cfg, stop) = (bus.clone(), cfg.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(e) = runtime::run(
            bus,
            Arc::new(h),
            Arc::new(NoLedger),
            cfg,
            Arc::new(Stats::default()),
            stop,
        )
        .await
        {
            tracing::error!(error = %e, "stage stopped");
        }
    })
}
