//! `coval env build|list|prune`: a project's test environment (its own dependencies, built
//! once and cached, see `sandbox::env`), prepared ahead, listed with sizes, removed; and the
//! same preparation before a repair, so a failed install stops it with its own exit code
//! (3: a registry, an interpreter or the engine cannot be had; 2: a manifest is broken)
//! before triage, and the user reads which sandbox and environment the tests run in.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use sandbox::Sandbox;
use sandbox::env::{Listed, Progress};
use settings::Config;

use crate::exit::{self, Failure};

#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Build (or find) the environment of a project: its declared dependencies and the test
    /// runner, installed once and reused by every repair of the project
    Build {
        /// The project (default: the current directory)
        #[arg(short = 's', long = "source", value_name = "DIR", default_value = ".")]
        source: PathBuf,
        /// The command that runs the project's tests (detected when absent)
        #[arg(long = "test-cmd", value_name = "CMD")]
        test_cmd: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Environments on this machine (Docker images and local ones), with their sizes
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove environments: all, or those whose key starts with KEY
    Prune {
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: EnvCommand, cfg: &Config) -> Result<u8, Failure> {
    match cmd {
        EnvCommand::Build {
            source,
            test_cmd,
            json,
        } => {
            let p = prepare(cfg, &source, test_cmd.as_deref(), json)
                .await
                .map_err(|(f, _)| f)?
                .ok_or_else(|| {
                    Failure::input(format!(
                        "no test command found in {} (no pyproject/setup.cfg/requirements, package.json, go.mod, Cargo.toml, ...): pass --test-cmd",
                        source.display()
                    ))
                })?;
            if json {
                let v = serde_json::json!({
                    "sandbox": p.detected.sandbox.name(),
                    "key": p.env.key,
                    "image": p.env.image,
                    "path": p.env.path,
                    "vars": p.env.vars.iter().map(|(k, v)| serde_json::json!({"name": k, "value": v})).collect::<Vec<_>>(),
                    "reused": p.env.reused,
                    "seconds": p.env.took.as_secs_f64(),
                    "description": p.env.description,
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{}", p.describe());
            }
            Ok(exit::DONE)
        }
        EnvCommand::List { json } => {
            let all = listed(cfg, None, false).await;
            print_listed(&all, json, "no environments");
            Ok(exit::DONE)
        }
        EnvCommand::Prune { key, json } => {
            let removed = listed(cfg, key.as_deref(), true).await;
            print_listed(&removed, json, "nothing to remove");
            Ok(exit::DONE)
        }
    }
}

/// Local environments, and the Docker engine's when one answers; removed first with `prune`.
async fn listed(cfg: &Config, key: Option<&str>, prune: bool) -> Vec<Listed> {
    let sb = &cfg.settings.sandbox;
    let mut out = if prune {
        sandbox::env::prune_local(sb, key)
    } else {
        sandbox::env::list_local(sb)
    };
    if let Ok(d) = sandbox::DockerSandbox::connect(&sb.runtime).await {
        let r = if prune {
            sandbox::docker::env::prune(&d, key).await
        } else {
            sandbox::docker::env::list(&d).await
        };
        match r {
            Ok(l) => out.extend(l),
            Err(e) => eprintln!("coval: docker environments: {e}"),
        }
    }
    out
}

fn print_listed(rows: &[Listed], json: bool, empty: &str) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        return;
    }
    if rows.is_empty() {
        println!("{empty}");
        return;
    }
    println!(
        "{:<17} {:<7} {:<11} {:>9}  {:<40} PROJECT",
        "KEY", "WHERE", "LANGUAGE", "SIZE", "LOCATION"
    );
    for r in rows {
        println!(
            "{:<17} {:<7} {:<11} {:>9}  {:<40} {}",
            r.key,
            r.backend,
            r.language,
            human(r.bytes),
            r.location,
            r.project
        );
    }
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    println!("{} environment(s), {}", rows.len(), human(total));
}

fn human(b: u64) -> String {
    let mb = b as f64 / (1024.0 * 1024.0);
    if mb >= 1024.0 {
        format!("{:.1} GiB", mb / 1024.0)
    } else {
        format!("{mb:.1} MiB")
    }
}

/// Before a repair: the sandbox and the project's environment, resolved here so that every
/// stage reuses them, and a failure is said now with its exit code. Says which sandbox and
/// environment the tests run in. A project without a detectable test command is left to the
/// stages (they say what to do).
pub async fn before_repair(
    cfg: &Config,
    source: &Path,
    test_cmd: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    match prepare(cfg, source, test_cmd, json).await {
        Ok(Some(p)) => eprintln!("{}", p.describe()),
        Ok(None) => {}
        // A failed install goes on: the MRE stops the repair with it as the reason the tests
        // cannot run (the same error, resolved once), and the report says so.
        Err((failure, Some(e))) if e.is_install_failure() => {
            eprintln!("coval: {}", failure.message);
        }
        Err((failure, _)) => return Err(failure),
    }
    Ok(())
}

async fn prepare(
    cfg: &Config,
    source: &Path,
    test_cmd: Option<&str>,
    json: bool,
) -> Result<Option<sandbox::Prepared>, (Failure, Option<sandbox::EnvError>)> {
    let Some(kind) = sandbox::detect_project_with(source, test_cmd) else {
        return Ok(None);
    };
    show_progress(json);
    let user = sandbox::UserDirs {
        project: source.canonicalize().ok(),
    };
    let prepared = sandbox::prepare(&cfg.settings.sandbox, &kind, source, &user).await;
    end_progress();
    match prepared {
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            let failure = Failure {
                code: e.exit_code(),
                message: e.to_string(),
            };
            let env = match e {
                sandbox::PrepareError::Env(e) => Some(e),
                sandbox::PrepareError::Sandbox(_) => None,
            };
            Err((failure, env))
        }
    }
}

static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Shows environment builds on stderr: a spinner with the installer's latest line on a
/// terminal, the start and the end of each build otherwise.
fn show_progress(json: bool) {
    let tty = std::io::stderr().is_terminal() && !json;
    sandbox::env::set_progress(move |p| {
        let mut bar = BAR.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::Started {
                key,
                steps,
                backend,
            } => {
                let line = format!(
                    "environment: building {key} ({backend}): {} (once; later repairs reuse it)",
                    steps.join("; ")
                );
                if tty {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.enable_steady_tick(Duration::from_millis(120));
                    b.println(line);
                    *bar = Some(b);
                } else {
                    eprintln!("{line}");
                }
            }
            Progress::Line(l) => {
                if let Some(b) = bar.as_ref() {
                    let short: String = l.chars().take(100).collect();
                    b.set_message(short);
                }
            }
            Progress::Finished { key, took, ok } => {
                let line = format!(
                    "environment: {key} {} in {:.1} s",
                    if *ok { "built" } else { "FAILED" },
                    took.as_secs_f64()
                );
                match bar.take() {
                    Some(b) => {
                        b.println(line);
                        b.finish_and_clear();
                    }
                    None => eprintln!("{line}"),
                }
            }
        }
    });
}

fn end_progress() {
    if let Some(b) = BAR.lock().unwrap_or_else(|e| e.into_inner()).take() {
        b.finish_and_clear();
    }
}
