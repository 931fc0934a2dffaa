//! `coval`: repair and generate code with language models, proven by tests.
//!
//! Exit codes (the contract CI scripts rely on): 0 done, 1 no validated fix / rebuild
//! recommended / unhealthy, 2 bad usage or bad input, 3 a required service is unreachable.

use std::path::PathBuf;
use std::process::ExitCode;

/// The workers' allocator (see `stages::Allocator`): `coval` runs the same stages.
#[global_allocator]
static ALLOCATOR: stages::Allocator = stages::Allocator;

use clap::{Args, Parser, Subcommand};
use settings::LoadOptions;
use telemetry::LogFormat;

mod apply;
mod ci;
mod deploy;
mod env;
mod generate;
mod models;
mod progress;
mod remote;
mod repair;
mod report;
mod status;

fn repair_outcome(o: proto::messages::RepairOutcome) -> &'static str {
    proto::summary::outcome_label(o)
}

/// The exit codes (`vocab::exit`, shared with the workers), and the failures that lead to them.
mod exit {
    pub use vocab::exit::{BAD_INPUT, DONE, INTERNAL, NOT_DONE, UNREACHABLE};

    /// A command that could not do its job: what to tell the user, and the exit code.
    #[derive(Debug)]
    pub struct Failure {
        pub code: u8,
        pub message: String,
    }

    impl Failure {
        pub fn input(message: String) -> Failure {
            Failure {
                code: BAD_INPUT,
                message,
            }
        }
        pub fn unreachable(message: String) -> Failure {
            Failure {
                code: UNREACHABLE,
                message,
            }
        }
        pub fn internal(message: String) -> Failure {
            Failure {
                code: INTERNAL,
                message,
            }
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "coval",
    version,
    about = "Repair and generate code with language models, proven by tests",
    long_about = "coval takes a failure (an error log, a stack trace, a red CI job) and a project, \
                  and returns a patch proven by running the project's tests in a sandbox.\n\n\
                  Exit codes: 0 done, 1 no validated fix / rebuild recommended / unhealthy, \
                  2 bad usage or bad input, 3 a required service is unreachable.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Workspace directory: state database, iterations, repair reports
    #[arg(
        long,
        global = true,
        env = "COVAL_WORKSPACE",
        default_value = ".coval",
        value_name = "DIR"
    )]
    workspace: PathBuf,
    /// Project settings file (coval.config.yaml); llm.config.yaml is looked for beside it
    #[arg(long, global = true, env = "COVAL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// More log output: -v info, -vv debug, -vvv trace (`worker`: info, then -v debug, -vv
    /// trace); --log-format json logs info and up; RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr
    #[arg(long, global = true, env = "COVAL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Repair a failure: triage, decide, reproduce, fix, validate, integrate
    Repair(repair::RepairArgs),
    /// Publish a repair to NATS workers and print its id (for CI; follow it with `coval watch`)
    Submit(repair::RepairArgs),
    /// Follow a submitted repair to its end: progress per stage, then the report
    Watch(remote::WatchArgs),
    /// Run stage workers on NATS JetStream: one stage, or `all` six in this process
    Worker(remote::WorkerCmd),
    /// Generate an app from a description: a framework template, features by a model
    Generate(generate::GenerateArgs),
    /// Deploy an iteration blue-green with a health check (rolls back when it is unhealthy)
    Run(deploy::RunArgs),
    /// Stop one deployment or all of this workspace
    Stop(deploy::StopArgs),
    /// The blue-green switch `coval run` starts in a container (internal)
    #[command(hide = true)]
    Proxy(deploy::ProxyArgs),
    /// Iterations, repairs (in flight, done) and deployments of the workspace
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Ask the integration worker on this NATS server for its ledger instead
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        #[command(flatten)]
        auth: bus::jetstream::NatsAuth,
    },
    /// Remove all but the newest N iterations (asks first on a terminal)
    Cleanup {
        /// Iterations to keep
        #[arg(short = 'c', long = "count", value_name = "N")]
        count: usize,
        /// Do not ask
        #[arg(long)]
        force: bool,
    },
    /// List the configured model aliases or pull one onto the model server
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Project environments (the project's own dependencies, built once and cached): build,
    /// list with sizes, prune
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// Print the effective configuration: built-in defaults, files, COVAL_* variables
    Config {
        /// Print JSON instead of `key = value` lines
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format: LogFormat = cli.global.log_format.parse().unwrap_or_default();
    // A person reads `coval repair` and friends: the stage lines and the outcome, with log
    // lines only from -v on; a worker or the deployment proxy logs as a service does.
    let audience = match cli.command {
        Command::Worker(_) | Command::Proxy(_) => telemetry::Audience::Service,
        _ => telemetry::Audience::Person,
    };
    let _telemetry = match telemetry::init_for("coval", format, cli.global.verbose, audience) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("coval: warning: {e}");
            None
        }
    };
    let cfg = match settings::load(&LoadOptions::from_process(cli.global.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("coval: configuration error: {e}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    match cli.command {
        Command::Repair(args) => block_on(repair::run(args, &cfg, &cli.global.workspace)),
        Command::Generate(args) => block_on(generate::run(args, &cfg, &cli.global.workspace)),
        Command::Run(args) => block_on(deploy::run(args, &cfg, &cli.global.workspace)),
        Command::Stop(args) => block_on(deploy::stop(args, &cfg, &cli.global.workspace)),
        Command::Proxy(args) => block_on(deploy::proxy(args)),
        Command::Models(cmd) => block_on(models::run(cmd, &cfg)),
        Command::Env(cmd) => block_on(env::run(cmd, &cfg)),
        Command::Submit(args) => block_on(remote::submit(args, &cfg, &cli.global.workspace)),
        Command::Watch(args) => block_on(remote::watch(args, &cfg, &cli.global.workspace)),
        Command::Worker(cmd) => block_on(remote::worker(cmd, &cfg, &cli.global.workspace)),
        Command::Status {
            json,
            nats: Some(url),
            auth,
        } => block_on(remote::status(&url, &auth, &cfg, json)),
        Command::Status {
            json, nats: None, ..
        } => done(status::status(
            &cli.global.workspace,
            cli.global.verbose > 0,
            json,
            &cfg.settings,
        )),
        Command::Cleanup { count, force } => {
            done(status::cleanup(&cli.global.workspace, count, force))
        }
        Command::Config { json } => {
            let value = serde_json::json!({
                "settings": cfg.settings,
                "llm": cfg.llm,
                "sources": cfg.sources,
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                let mut lines = vec![];
                flatten("", &value, &mut lines);
                for l in lines {
                    println!("{l}");
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, child, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), child, out);
            }
        }
        other => out.push(format!("{prefix} = {other}")),
    }
}

/// Run an async command and turn its result into the process exit code.
fn block_on(f: impl std::future::Future<Output = Result<u8, exit::Failure>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coval: cannot start the async runtime: {e}");
            return ExitCode::from(exit::NOT_DONE);
        }
    };
    match rt.block_on(f) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("coval: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn done(r: Result<u8, exit::Failure>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("coval: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
