//! `coval repair`: embedded (all six stages in this process over the in-process bus, the
//! sandbox Docker when it answers else local, the search engine when no model answers).
//! `--analyze` stops after the decision and changes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use pipeline::bus::Bus;
use pipeline::config::Config;
use pipeline::memory::MemoryBus;
use pipeline::runtime::{self, Handler, Input, NoLedger, Outcome, Stats};
use pipeline::store::{HistorySource, NoHistory, Store};
use proto::messages::{Decided, EngineChoice, ProjectRef, RepairRequested};
use proto::{Envelope, Kind, Message, RepairId, Stage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// The error log of the failing run (`-` reads standard input)
    #[arg(short, long, value_name = "FILE")]
    error: PathBuf,
    /// The project's source directory
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    source: PathBuf,
    /// The command that runs the project's tests (detected when absent)
    #[arg(long, value_name = "CMD")]
    test_cmd: Option<String>,
    /// Repair a stored iteration instead of the source directory
    #[arg(short, long, value_name = "ID")]
    iteration: Option<String>,
    /// Model alias from llm.config.yaml
    #[arg(long, value_name = "ALIAS")]
    model: Option<String>,
    /// Where fixes come from: the model when it answers else search, the model, or search only
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// Fix attempts (default: global.max_iterations from the configuration)
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// Print the triage and the decision, change nothing
    #[arg(long)]
    analyze: bool,
    /// Apply the validated patch to the source tree
    #[arg(long)]
    apply: bool,
    /// Deploy the repaired iteration
    #[arg(long)]
    deploy: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Submit to NATS workers instead of running embedded
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineArg {
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

/// Does something listen at the model server's address? A connect, nothing sent.
async fn model_server_answers(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = if hostport.contains(':') {
        hostport.to_owned()
    } else if url.starts_with("https") {
        format!("{hostport}:443")
    } else {
        format!("{hostport}:80")
    };
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
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

pub async fn run(args: RepairArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    if args.nats.is_some() {
        return Err(Failure::input(
            "this build runs repairs embedded only: `--nats` submission is not in it yet"
                .to_owned(),
        ));
    }
    if args.analyze && (args.apply || args.deploy) {
        return Err(Failure::input(
            "--analyze changes nothing, so it cannot be combined with --apply or --deploy"
                .to_owned(),
        ));
    }
    if args.deploy {
        return Err(Failure::input(
            "--deploy is not in this build yet".to_owned(),
        ));
    }
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
            let dir = workspace.join("iterations").join(id.to_string());
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
    let engine = match args.engine {
        EngineArg::Search => EngineChoice::Search,
        EngineArg::Llm => {
            if !model_server_answers(&cfg.llm.server.url).await {
                return Err(Failure::unreachable(format!(
                    "no model server at {}: start `ollama serve` or set COVAL_LLM_URL",
                    cfg.llm.server.url
                )));
            }
            EngineChoice::Llm
        }
        EngineArg::Auto => {
            if model_server_answers(&cfg.llm.server.url).await {
                EngineChoice::Llm
            } else {
                tracing::info!(url = %cfg.llm.server.url, "no model server answers: the search engine would repair");
                EngineChoice::Search
            }
        }
    };

    // A sandbox asked for explicitly must answer before anything starts.
    if !args.analyze
        && cfg.settings.sandbox.backend == pipeline::config::SandboxBackend::Docker
        && let Err(e) = pipeline::sandbox::detect(&cfg.settings.sandbox).await
    {
        return Err(Failure::unreachable(e.to_string()));
    }

    // Analysis reads history from an existing workspace and never creates one; a repair
    // opens (or creates) the workspace store, which the integration stage owns.
    let db = workspace.join("state");
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
                    pipeline::store::IterationOrigin::Import {
                        path: source.display().to_string(),
                    },
                )
                .map_err(|e| Failure::internal(e.to_string()))?;
            let dir = workspace.join("iterations").join(it.id.to_string());
            let staging = dir.with_extension("partial");
            let _ = std::fs::remove_dir_all(&staging);
            pipeline::sandbox::copy_project(&source, &staging)
                .and_then(|_| std::fs::rename(&staging, &dir))
                .map_err(|e| {
                    Failure::input(format!("cannot snapshot {}: {e}", source.display()))
                })?;
            (dir, Some(it.id))
        }
        (_, iteration) => (source.clone(), iteration),
    };

    let repair_id = RepairId::new();
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
        requested_at_ms: pipeline::now_ms(),
    };

    let bus = MemoryBus::default();
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
    let bus_cfg = cfg.settings.bus.clone();
    let repairs_dir = workspace.join("repairs");
    let mut tasks = vec![];
    let triage = triage::handler::TriageStage {
        config: triage::analysis::TriageConfig {
            llm: cfg.llm.clone(),
            cost: cfg.settings.cost_calculation.clone(),
            adaptive: cfg.settings.global.adaptive_evaluation.clone(),
        },
        history: history.clone(),
        iterations_dir: Some(workspace.join("iterations")),
        coverage_sandbox: cfg
            .settings
            .triage
            .coverage
            .then(|| cfg.settings.sandbox.clone()),
    };
    let decision = decision::handler::DecisionStage {
        cost: cfg.settings.cost_calculation.clone(),
        min_samples: cfg.settings.global.adaptive_evaluation.min_samples as usize,
        history,
    };
    tasks.push(spawn(
        &bus,
        Observed::new(triage, &progress_tx),
        &bus_cfg,
        &stop,
    ));
    tasks.push(spawn(
        &bus,
        Observed::new(decision, &progress_tx),
        &bus_cfg,
        &stop,
    ));
    match &store {
        None => tasks.push(spawn(&bus, Collect(tx), &bus_cfg, &stop)),
        Some(store) => {
            drop(tx);
            let mre = mre::handler::MreStage {
                sandbox: cfg.settings.sandbox.clone(),
                repairs_dir: repairs_dir.clone(),
            };
            let fix = fix::handler::FixStage {
                search: fix::handler::SearchSettings::default(),
                llm: cfg.llm.clone(),
            };
            let validate = validate::handler::ValidateStage {
                sandbox: cfg.settings.sandbox.clone(),
                repairs_dir: repairs_dir.clone(),
                settings: validate::handler::ValidateSettings {
                    failing_first: cfg.settings.validate.failing_first,
                    ..Default::default()
                },
            };
            let integrate = integrate::handler::IntegrateStage {
                store: store.clone(),
                workspace: workspace.to_owned(),
            };
            tasks.push(spawn(
                &bus,
                Observed::new(mre, &progress_tx),
                &bus_cfg,
                &stop,
            ));
            tasks.push(spawn(
                &bus,
                Observed::new(fix, &progress_tx),
                &bus_cfg,
                &stop,
            ));
            tasks.push(spawn(
                &bus,
                Observed::new(validate, &progress_tx),
                &bus_cfg,
                &stop,
            ));
            tasks.push(spawn(
                &bus,
                Observed::new(integrate, &progress_tx),
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
            let code = crate::report::print_completion(&c, workspace, args.json);
            if args.apply
                && c.outcome == proto::messages::RepairOutcome::Fixed
                && let Some(store) = &store
            {
                crate::apply::apply(store, workspace, &c, &source)?;
            }
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
            Outcome::Publish(ms) => ms.iter().map(describe).collect::<Vec<_>>().join("; "),
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

fn describe(m: &Message) -> String {
    match m {
        Message::Triaged(t) => {
            let top = t.report.suspects.first().map(|s| {
                format!(
                    "{}{}",
                    s.file,
                    s.line.map(|l| format!(":{l}")).unwrap_or_default()
                )
            });
            format!(
                "{} ({}){}",
                if t.report.error_type.is_empty() {
                    "unnamed error"
                } else {
                    &t.report.error_type
                },
                t.report.category.as_str(),
                top.map(|t| format!(", suspect {t}")).unwrap_or_default()
            )
        }
        Message::Decided(d) => format!(
            "{:?} (C_fix {:.3}, C_new {:.3}, p {:.0}%)",
            d.decision.verdict,
            d.decision.c_fix,
            d.decision.c_new,
            d.decision.p_success * 100.0
        )
        .to_lowercase(),
        Message::MreReady(m) => format!(
            "{} in the {} ({} sandbox), {} failing / {} passing tests",
            if m.mre.reproduced {
                "reproduced"
            } else {
                "NOT reproduced"
            },
            if m.mre.whole_project {
                "whole project"
            } else {
                "minimal example"
            },
            m.mre.sandbox,
            m.mre.failing_tests.len(),
            m.mre.passing_tests.len()
        ),
        Message::FixProposed(f) => format!(
            "attempt {}: {} candidates from {}",
            f.attempt,
            f.candidates.len(),
            f.engine
        ),
        Message::ValidationPassed(v) => {
            let n: usize = v.history.last().map(|a| a.results.len()).unwrap_or(0);
            format!(
                "passed after {n} candidate(s): {} changed lines",
                v.winner.changed_lines
            )
        }
        Message::ValidationFailed(v) => {
            let n: usize = v.history.last().map(|a| a.results.len()).unwrap_or(0);
            format!(
                "{n} candidate(s) failed; {} attempt(s) left",
                v.attempts_left
            )
        }
        Message::RepairCompleted(c) => c.summary.clone(),
        other => other.kind().to_string(),
    }
}

fn spawn<H: Handler>(
    bus: &MemoryBus,
    h: H,
    cfg: &pipeline::config::BusConfig,
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
