//! `coval repair`: embedded by default (all stages in this process over the in-process bus).
//! This build runs `--analyze` (triage and the decision); the later stages arrive with their
//! issue, and until then a full repair is refused with a clear message.

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
    if args.nats.is_some() || !args.analyze || args.apply || args.deploy {
        return Err(Failure::input(
            "this build of coval runs `coval repair --analyze` only (triage and the decision); \
             the MRE, fix, validation and integration stages are not in it yet"
                .to_owned(),
        ));
    }
    let log = read_log(&args.error)?;
    let source = if args.iteration.is_some() {
        return Err(Failure::input(
            "--iteration needs stored iterations, which this build does not have yet".to_owned(),
        ));
    } else {
        args.source.clone()
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
        EngineArg::Llm => EngineChoice::Llm,
        EngineArg::Auto => {
            if model_server_answers(&cfg.llm.server.url).await {
                EngineChoice::Llm
            } else {
                tracing::info!(url = %cfg.llm.server.url, "no model server answers: the search engine would repair");
                EngineChoice::Search
            }
        }
    };

    // History from an existing workspace; analysis never creates one.
    let db = workspace.join("state");
    let history: Arc<dyn HistorySource> = if db.exists() {
        match Store::open(&db) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the workspace store: deciding without history");
                Arc::new(NoHistory)
            }
        }
    } else {
        Arc::new(NoHistory)
    };

    let repair_id = RepairId::new();
    let request = RepairRequested {
        repair_id,
        project: ProjectRef::LocalPath {
            path: source.display().to_string(),
        },
        error_log: log,
        test_cmd: args.test_cmd.clone(),
        iteration: None,
        engine,
        model: args.model.clone(),
        max_attempts: args
            .max_attempts
            .unwrap_or(cfg.settings.global.max_iterations),
        analyze_only: true,
        requested_at_ms: pipeline::now_ms(),
    };

    let bus = MemoryBus::default();
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let bus_cfg = cfg.settings.bus.clone();
    let mut tasks = vec![];
    let triage = triage::handler::TriageStage {
        config: triage::analysis::TriageConfig {
            llm: cfg.llm.clone(),
            cost: cfg.settings.cost_calculation.clone(),
            adaptive: cfg.settings.global.adaptive_evaluation.clone(),
        },
        history: history.clone(),
        iterations_dir: Some(workspace.join("iterations")),
    };
    let decision = decision::handler::DecisionStage {
        cost: cfg.settings.cost_calculation.clone(),
        min_samples: cfg.settings.global.adaptive_evaluation.min_samples as usize,
        history,
    };
    tasks.push(spawn(&bus, triage, &bus_cfg, &stop));
    tasks.push(spawn(&bus, decision, &bus_cfg, &stop));
    tasks.push(spawn(&bus, Collect(tx), &bus_cfg, &stop));

    let mut envelope = Envelope::origin(Kind::RepairRequested, repair_id);
    runtime::inject_current_trace(&mut envelope);
    bus.publish(&envelope, Message::RepairRequested(request))
        .await
        .map_err(|e| Failure::internal(format!("cannot start the repair: {e}")))?;

    let outcome = tokio::select! {
        d = rx.recv() => d.ok_or_else(|| Failure::internal("the pipeline stopped".to_owned())),
        ev = bus.next_event() => match ev.map(|(_, m)| m) {
            Some(m) => match &*m {
                Message::DeadLetter(dl) => Err(Failure::input(dl.reason.clone())),
                other => Err(Failure::internal(format!("unexpected `{}`", other.kind()))),
            },
            None => Err(Failure::internal("the pipeline stopped".to_owned())),
        },
    };
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let d = outcome?;
    crate::report::print_analysis(&d, args.json);
    Ok(exit::DONE)
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
