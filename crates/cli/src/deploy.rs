//! `coval run`, `coval stop` and the hidden `coval proxy` (the blue-green switch that `coval
//! run` starts in a container), and the deployment lines of `coval status`. The work is in
//! the `deploy` crate; this maps it to output and exit codes.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use deploy::DeployError;
use deploy::engine::Engine;
use deploy::run::{Ctx, Deployed, RunRequest};
use proto::IterationId;
use settings::{Config, Settings, VolumeStrategy};
use store::Store;

use crate::exit::{self, Failure};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    /// The parent's image with only the changed files mounted read-only over it
    Overlay,
    /// The whole iteration in the image
    Copy,
    /// The iteration folder bind-mounted (for development)
    Symlink,
}

impl From<StrategyArg> for VolumeStrategy {
    fn from(s: StrategyArg) -> VolumeStrategy {
        match s {
            StrategyArg::Overlay => VolumeStrategy::Overlay,
            StrategyArg::Copy => VolumeStrategy::Copy,
            StrategyArg::Symlink => VolumeStrategy::Symlink,
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The iteration to run (default: the newest)
    #[arg(short, long, value_name = "ID")]
    iteration: Option<String>,
    /// The stable port users connect to (default: docker.base_port)
    #[arg(short, long, value_name = "PORT")]
    port: Option<u16>,
    /// How the iteration gets into its container (default: volumes.strategy)
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Stop only this iteration's deployment (default: all of this workspace)
    #[arg(short, long, value_name = "ID")]
    iteration: Option<String>,
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to serve on
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Directory of the control socket and the state file
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

fn failure(e: DeployError) -> Failure {
    Failure {
        code: e.exit_code(),
        message: e.to_string(),
    }
}

fn parse_iteration(s: &Option<String>) -> Result<Option<IterationId>, Failure> {
    s.as_deref()
        .map(|i| {
            i.parse::<IterationId>()
                .map_err(|e| Failure::input(e.to_string()))
        })
        .transpose()
}

fn open_store(workspace: &Path) -> Result<Store, Failure> {
    let db = vocab::Workspace::new(workspace).state_dir();
    if !db.exists() {
        return Err(Failure::input(format!(
            "no workspace at {}: run `coval generate` or `coval repair` first",
            workspace.display()
        )));
    }
    Store::open(&db).map_err(|e| Failure::input(e.to_string()))
}

async fn ctx<'a>(
    settings: &'a Settings,
    store: &'a Store,
    workspace: &'a Path,
) -> Result<Ctx<'a>, Failure> {
    let engine = Engine::connect().await.map_err(failure)?;
    let coval_exe = std::env::current_exe()
        .map_err(|e| Failure::internal(format!("cannot find the coval binary: {e}")))?;
    Ok(Ctx {
        settings,
        store,
        workspace: vocab::Workspace::new(workspace),
        engine,
        coval_exe,
    })
}

pub fn print_deployed(d: &Deployed, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "deployed": d })).unwrap_or_default()
        );
        return;
    }
    println!(
        "deployed {} as {} ({} strategy): healthy after {:.2} s, serving at {} after {:.2} s",
        d.iteration, d.container, d.strategy, d.seconds_to_healthy, d.url, d.seconds_to_serving
    );
    for r in &d.replaced {
        println!("  replaced {r} (drained and stopped)");
    }
    for n in &d.notes {
        println!("  note: {n}");
    }
}

/// Deploy one iteration (used by `coval run` and by `--deploy` on repair and generate).
pub async fn deploy(
    settings: &Settings,
    store: &Store,
    workspace: &Path,
    req: &RunRequest,
    json: bool,
) -> Result<u8, Failure> {
    let c = ctx(settings, store, workspace).await?;
    let d = deploy::run::run(&c, req).await.map_err(failure)?;
    print_deployed(&d, json);
    Ok(exit::DONE)
}

pub async fn run(args: RunArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    let iteration = parse_iteration(&args.iteration)?;
    let store = open_store(workspace)?;
    let req = RunRequest {
        iteration,
        port: args.port,
        strategy: args.strategy.map(Into::into),
    };
    deploy(&cfg.settings, &store, workspace, &req, args.json).await
}

pub async fn stop(args: StopArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    let iteration = parse_iteration(&args.iteration)?;
    let store = open_store(workspace)?;
    let c = ctx(&cfg.settings, &store, workspace).await?;
    let removed = deploy::run::stop(&c, iteration).await.map_err(failure)?;
    if removed.is_empty() {
        println!("nothing to stop");
    }
    for r in removed {
        println!("stopped {r}");
    }
    Ok(exit::DONE)
}

pub async fn proxy(args: ProxyArgs) -> Result<u8, Failure> {
    deploy::proxy::serve(&args.listen, &args.dir)
        .await
        .map_err(|e| Failure::internal(format!("the proxy stopped: {e}")))?;
    Ok(exit::DONE)
}

fn block<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
        .map(|rt| rt.block_on(f))
}

/// The `deployments` of `coval status --json`.
pub fn status_json(settings: &Settings, store: &Store) -> serde_json::Value {
    let list = block(deploy::run::status(settings, store)).unwrap_or_default();
    serde_json::to_value(list).unwrap_or_default()
}

/// The deployment lines of `coval status`.
pub fn print_status(settings: &Settings, store: &Store) {
    let list = block(deploy::run::status(settings, store)).unwrap_or_default();
    if list.is_empty() {
        println!("deployments: none (`coval run` starts one)");
        return;
    }
    println!("deployments: {}", list.len());
    for d in list {
        println!(
            "  {}  {} on port {} ({}): {}, health {}, {}",
            d.container,
            d.iteration,
            d.stable_port,
            d.strategy,
            d.state,
            d.health,
            if d.serving {
                "serving"
            } else {
                "NOT answering on the stable port"
            }
        );
    }
}
