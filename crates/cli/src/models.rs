//! `coval models list` and `coval models pull ALIAS`: the configured aliases, which the model
//! server has, and pulling a missing one with a progress bar.

use clap::Subcommand;
use settings::Config;

use crate::exit::{self, Failure};

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Configured aliases, their model names, and whether the server has them
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Pull the model of ALIAS onto the model server (Ollama)
    Pull { alias: String },
}

fn unreachable(cfg: &Config, e: &llm::LlmError) -> Failure {
    if e.is_unreachable() {
        Failure::unreachable(e.to_string())
    } else {
        Failure::internal(format!("{e} (model server {})", cfg.llm.server.url))
    }
}

pub async fn run(cmd: ModelsCommand, cfg: &Config) -> Result<u8, Failure> {
    let client = llm::connect(&cfg.llm).map_err(|e| Failure::input(e.to_string()))?;
    match cmd {
        ModelsCommand::List { json } => {
            let listed = client.list().await.map_err(|e| unreachable(cfg, &e))?;
            let rows: Vec<(String, String, bool, bool)> = cfg
                .llm
                .models
                .iter()
                .map(|(alias, m)| {
                    let present = listed
                        .iter()
                        .any(|l| llm::model_matches(&m.model_name, &l.name));
                    (
                        alias.clone(),
                        m.model_name.clone(),
                        present,
                        *alias == cfg.llm.default_model,
                    )
                })
                .collect();
            if json {
                let v: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(a, n, p, d)| serde_json::json!({"alias": a, "model": n, "present": p, "default": d}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{:<14} {:<26} ON SERVER", "ALIAS", "MODEL");
                for (a, n, p, d) in &rows {
                    println!(
                        "{:<14} {:<26} {}{}",
                        a,
                        n,
                        if *p { "yes" } else { "no" },
                        if *d { "  (default)" } else { "" }
                    );
                }
                println!("server {} ({:?})", cfg.llm.server.url, cfg.llm.server.api);
            }
            Ok(exit::DONE)
        }
        ModelsCommand::Pull { alias } => {
            let m =
                llm::model_config(&cfg.llm, &alias).map_err(|e| Failure::input(e.to_string()))?;
            let mut reporter = llm::progress::PullReporter::stderr(&m.model_name);
            client
                .pull(&m.model_name, &mut reporter.callback())
                .await
                .map_err(|e| unreachable(cfg, &e))?;
            reporter.finish();
            println!("pulled {} ({alias})", m.model_name);
            Ok(exit::DONE)
        }
    }
}
