//! `coval`: repair and generate code with language models, proven by tests.
//!
//! Exit codes (the contract CI scripts rely on): 0 done, 1 no validated fix / rebuild
//! recommended / unhealthy, 2 bad usage or bad input, 3 a required service is unreachable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pipeline::config::{self, LoadOptions};
use pipeline::telemetry::{self, LogFormat};

/// Exit codes of DESIGN.md.
mod exit {
    pub const BAD_INPUT: u8 = 2;
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
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr
    #[arg(long, global = true, env = "COVAL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    let _telemetry = match telemetry::init("coval", format, cli.global.verbose) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("coval: warning: {e}");
            None
        }
    };
    let cfg = match config::load(&LoadOptions::from_process(cli.global.config.clone())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("coval: configuration error: {e}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    match cli.command {
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
