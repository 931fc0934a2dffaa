//! `coval repair`: embedded (all six stages in this process over the in-process bus, the
//! sandbox Docker when it answers else local, the search engine when no model answers).
//! `--analyze` stops after the decision and changes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bus::Bus;
use bus::announce::Announce;
use bus::context::StageContext;
use bus::memory::MemoryBus;
use bus::runtime::{self, Handler, Input, NoLedger, Outcome, Stats};
use clap::{Args, ValueEnum};
use integrate::iteration::{ImportError, MaterialiseError};
use proto::messages::{Decided, EngineChoice, ProjectRef, RepairRequested, StageProgress};
use proto::{Envelope, IterationId, Kind, Message, RepairId, Stage};
use settings::Config;
use stages::StageHandler;
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
    /// Repair even when the cost model recommends a rebuild (the report says it disagreed)
    #[arg(long)]
    pub(crate) no_rebuild: bool,
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
    #[command(flatten)]
    pub(crate) auth: bus::jetstream::NatsAuth,
    #[command(flatten)]
    pub(crate) origin: crate::ci::OriginArgs,
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
    check_flags(&args)?;
    let Inputs {
        log,
        iteration,
        source,
    } = inputs(&args, cfg, workspace)?;
    if let Some(url) = args.nats.clone() {
        return crate::remote::repair(args, cfg, workspace, &url, log, source).await;
    }
    let engine = choose_engine(args.engine, cfg).await?;
    // A sandbox asked for explicitly must answer before anything starts.
    if !args.analyze
        && cfg.settings.sandbox.backend == settings::SandboxBackend::Docker
        && let Err(e) = sandbox::detect(&cfg.settings.sandbox).await
    {
        return Err(Failure::unreachable(e.to_string()));
    }
    // The sandbox and the project's environment, before triage: a failed install stops here
    // with its own exit code, and every stage reuses what is built.
    if !args.analyze {
        crate::env::before_repair(cfg, &source, args.test_cmd.as_deref(), args.json).await?;
    }
    let (store, history) = open_workspace(workspace, args.analyze)?;
    let (project_dir, iteration) = snapshot(store.as_ref(), workspace, &source, iteration)?;
    let repair_id = RepairId::new();
    // In flight until the integration stage completes it (or forever, marked so, if this
    // process is killed: `coval status` shows it).
    if let Some(store) = &store
        && let Err(e) = store.begin_repair(repair_id, iteration)
    {
        return Err(Failure::internal(format!("cannot record the repair: {e}")));
    }
    let project = ProjectRef::LocalPath {
        path: project_dir.display().to_string(),
    };
    let request = request(&args, cfg, repair_id, project, log, iteration, engine);
    let ctx = StageContext {
        config: cfg.clone(),
        workspace: vocab::Workspace::new(workspace),
        projects: store::projects::Projects::local(Some(
            vocab::Workspace::new(workspace).iterations_dir(),
        )),
        history,
        ledger: store.clone(),
        reports: None,
    };
    let end = Embedded::start(&ctx, &request)
        .await?
        .follow(request, args.json)
        .await?;
    report(end, &args, cfg, store.as_ref(), workspace, &source).await
}

/// The request of `coval repair` and `coval submit`, from the command line and the settings.
pub(crate) fn request(
    args: &RepairArgs,
    cfg: &Config,
    repair_id: RepairId,
    project: ProjectRef,
    log: String,
    iteration: Option<IterationId>,
    engine: EngineChoice,
) -> RepairRequested {
    RepairRequested {
        repair_id,
        project,
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
        no_rebuild: args.no_rebuild,
        // Embedded repairs are never de-duplicated; `remote` sets the key it used.
        origin: Some(proto::messages::Origin {
            dedup_key: None,
            ..crate::ci::origin(&args.origin)
        })
        .filter(|o| !o.is_empty()),
    }
}

fn check_flags(args: &RepairArgs) -> Result<(), Failure> {
    if args.origin.dedup_key.is_some() && args.nats.is_none() {
        return Err(Failure::input(
            "--dedup-key de-duplicates submissions to NATS workers: use it with `coval submit` or `coval repair --nats URL`".to_owned(),
        ));
    }
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
    Ok(())
}

/// Where fixes come from: `--engine llm` needs a model server that answers, `auto` takes
/// one when it answers and the search engine otherwise.
async fn choose_engine(engine: EngineArg, cfg: &Config) -> Result<EngineChoice, Failure> {
    Ok(match engine {
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
    })
}

/// The workspace store, and the history the estimates learn from. Analysis reads history
/// from an existing workspace and never creates one; a repair opens (or creates) the
/// workspace store, which the integration stage owns.
fn open_workspace(
    workspace: &Path,
    analyze: bool,
) -> Result<(Option<Store>, Arc<dyn HistorySource>), Failure> {
    let db = vocab::Workspace::new(workspace).state_dir();
    let store = if analyze {
        None
    } else {
        let shown = std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_owned());
        let unwritable = |e: &dyn std::fmt::Display| {
            Failure::input(format!(
                "cannot write the workspace {}: {e}; coval keeps its state, copies and reports there, so it must be writable even when the project is not: pass --workspace DIR (or set COVAL_WORKSPACE) to a directory you can write",
                shown.display()
            ))
        };
        std::fs::create_dir_all(workspace).map_err(|e| unwritable(&e))?;
        // What a killed `coval repair` left half-done (its locks died with it).
        vocab::Workspace::new(workspace).sweep_scratch();
        Some(Store::open(&db).map_err(|e| unwritable(&e))?)
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
    Ok((store, history))
}

/// The tree the stages read and its iteration. A repair works on a snapshot: the source is
/// stored as an iteration first (as the integration stage stores one), every stage reads
/// that copy, and `--apply` later compares the user's tree with it.
fn snapshot(
    store: Option<&Store>,
    workspace: &Path,
    source: &Path,
    iteration: Option<IterationId>,
) -> Result<(PathBuf, Option<IterationId>), Failure> {
    let (Some(store), None) = (store, iteration) else {
        return Ok((source.to_owned(), iteration));
    };
    let ws = vocab::Workspace::new(workspace);
    match integrate::iteration::import(store, &ws, source) {
        Ok(id) => Ok((ws.iteration_dir(id), Some(id))),
        Err(ImportError::Record(e)) => Err(Failure::internal(e.to_string())),
        Err(ImportError::Files(e)) => {
            let cause: &dyn std::fmt::Display = match &e {
                MaterialiseError::Copy(io) | MaterialiseError::Io(io) => io,
                MaterialiseError::Patch(_) => &e,
            };
            Err(Failure::input(format!(
                "cannot snapshot {}: {cause}",
                source.display()
            )))
        }
    }
}

/// The stages on the in-process bus, and what they say while they work.
struct Embedded {
    bus: MemoryBus,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    progress: mpsc::UnboundedReceiver<StageProgress>,
    /// An analysis ends with the decision, taken where the integration stage would be.
    analysis: bool,
    decided: mpsc::UnboundedReceiver<Decided>,
    /// Where the repair's report is written (the stage times join it).
    workspace: std::path::PathBuf,
}

impl Embedded {
    /// Starts the six stages from the registry (an analysis: triage and the decision),
    /// with the sandbox warming up for `request` while the first stages run.
    async fn start(ctx: &StageContext, request: &RepairRequested) -> Result<Embedded, Failure> {
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let (decided_tx, decided) = mpsc::unbounded_channel();
        let mut e = Embedded {
            bus: MemoryBus::default(),
            stop: CancellationToken::new(),
            tasks: vec![],
            progress,
            analysis: request.analyze_only,
            decided,
            workspace: ctx.workspace.root().to_path_buf(),
        };
        let analysis = [Stage::Triage, Stage::Decision];
        for entry in stages::STAGES {
            if request.analyze_only && !analysis.contains(&entry.stage) {
                continue;
            }
            let h =
                stages::build(entry.stage, ctx).map_err(|e| Failure::internal(e.to_string()))?;
            if let StageHandler::Validate(v) = &h {
                // Containers and warm test servers start while triage, the MRE and the fix
                // run; the first attempt takes them.
                v.prewarm(
                    request.repair_id,
                    &request.project,
                    request.test_cmd.as_deref(),
                )
                .await;
            }
            e.spawn(
                Announce::new(h, None).with_listener(progress_tx.clone()),
                &ctx.config,
            );
        }
        if e.analysis {
            e.spawn(Collect(decided_tx), &ctx.config);
        }
        Ok(e)
    }

    fn spawn<H: Handler>(&mut self, h: H, cfg: &Config) {
        let (bus, cfg, stop) = (
            self.bus.clone(),
            cfg.settings.bus.clone(),
            self.stop.clone(),
        );
        self.tasks.push(tokio::spawn(async move {
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
        }));
    }

    /// Publishes `request`, shows each stage's progress until the repair ends, stops.
    async fn follow(mut self, request: RepairRequested, json: bool) -> Result<End, Failure> {
        let repair_id = request.repair_id;
        let mut envelope = Envelope::origin(Kind::RepairRequested, repair_id);
        runtime::inject_current_trace(&mut envelope);
        self.bus
            .publish(&envelope, Message::RepairRequested(request))
            .await
            .map_err(|e| Failure::internal(format!("cannot start the repair: {e}")))?;
        let stopped = || Failure::internal("the pipeline stopped".to_owned());
        let progress = crate::progress::Progress::new(json);
        let mut times = crate::report::StageTimes::default();
        let end = loop {
            tokio::select! {
                p = self.progress.recv() => match p {
                    Some(p) => {
                        times.add(&p);
                        progress.stage(&p)
                    }
                    None => break Err(stopped()),
                },
                d = self.decided.recv(), if self.analysis => match d {
                    Some(d) => break Ok(End::Analyzed(Box::new(d))),
                    None => break Err(stopped()),
                },
                ev = self.bus.next_event() => match ev.map(|(_, m)| m) {
                    Some(m) => match &*m {
                        Message::RepairCompleted(c) if c.repair_id == repair_id => break Ok(End::Completed(Box::new(c.clone()))),
                        Message::DeadLetter(dl) => break Err(Failure::input(dl.reason.clone())),
                        _ => {}
                    },
                    None => break Err(stopped()),
                },
            }
        };
        // A stage's progress is queued before the message it announces is published, so the
        // last stage's line may still wait here when the completion wins the race above.
        while let Ok(p) = self.progress.try_recv() {
            times.add(&p);
            progress.stage(&p);
        }
        progress.finish();
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        match end {
            Ok(End::Completed(mut c)) => {
                times.record(&mut c, &self.workspace);
                Ok(End::Completed(c))
            }
            other => other,
        }
    }
}

/// Prints how the repair ended, then `--apply` and `--deploy` when asked.
async fn report(
    end: End,
    args: &RepairArgs,
    cfg: &Config,
    store: Option<&Store>,
    workspace: &Path,
    source: &Path,
) -> Result<u8, Failure> {
    let c = match end {
        End::Analyzed(d) => {
            crate::report::print_analysis(&d, args.json);
            return Ok(exit::DONE);
        }
        End::Completed(c) => c,
    };
    let code = crate::report::print_completion(&c, workspace, args.json, true, args.apply);
    if args.apply
        && c.outcome == proto::messages::RepairOutcome::Fixed
        && let Some(store) = store
    {
        crate::apply::apply(store, workspace, &c, source)?;
    }
    if args.deploy
        && let Some(store) = store
    {
        return deploy_repaired(&c, code, cfg, store, workspace, args.json).await;
    }
    Ok(code)
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
