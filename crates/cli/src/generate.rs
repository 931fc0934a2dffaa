//! `coval generate`: a new iteration from a description (the work is in
//! `deploy::generate`), its tests run in the sandbox, and with `--deploy` a blue-green deploy.

use std::path::Path;

use clap::Args;
use deploy::generate::{GenerateRequest, Generated};
use settings::Config;
use store::Store;

use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What the app does
    #[arg(short, long, value_name = "DESC")]
    description: String,
    /// fastapi, flask or express (default: from -l, project.framework, else fastapi)
    #[arg(short, long, value_name = "FRAMEWORK")]
    framework: Option<String>,
    /// python or javascript
    #[arg(short, long, value_name = "LANG")]
    language: Option<String>,
    /// A feature to write (repeat for more)
    #[arg(long = "features", value_name = "F")]
    features: Vec<String>,
    /// Change this iteration instead of starting from a template
    #[arg(long, value_name = "ID")]
    parent: Option<String>,
    /// Model alias from llm.config.yaml (default: llm.default_model)
    #[arg(long, value_name = "ALIAS")]
    model: Option<String>,
    /// Deploy the new iteration when its tests pass
    #[arg(long)]
    deploy: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

fn print(g: &Generated) {
    let parent = g
        .parent
        .as_deref()
        .map(|p| format!(", parent {p}"))
        .unwrap_or_default();
    println!(
        "generated {} ({} app{parent}) in {}",
        g.iteration, g.framework, g.dir
    );
    match &g.model {
        Some(m) => println!(
            "  {m} wrote {} file(s): {}",
            g.model_files.len(),
            g.model_files.join(", ")
        ),
        None => println!("  template only: no model wrote features"),
    }
    for n in &g.notes {
        println!("  note: {n}");
    }
    let t = &g.tests;
    println!(
        "  tests in the sandbox ({}): {} ({} passed, {} failed)",
        t.sandbox,
        if t.passed { "passed" } else { "FAILED" },
        t.passed_tests,
        t.failed_tests
    );
    if !t.passed {
        println!("  {}", t.verdict);
        for l in t.output.lines() {
            println!("    {l}");
        }
    }
}

pub async fn run(args: GenerateArgs, cfg: &Config, workspace: &Path) -> Result<u8, Failure> {
    let parent = args
        .parent
        .as_deref()
        .map(|p| {
            p.parse::<proto::IterationId>()
                .map_err(|e| Failure::input(e.to_string()))
        })
        .transpose()?;
    std::fs::create_dir_all(workspace).map_err(|e| {
        Failure::input(format!(
            "cannot create the workspace {}: {e}",
            workspace.display()
        ))
    })?;
    // What a killed `coval generate` or repair left half-written (its locks died with it).
    vocab::Workspace::new(workspace).sweep_scratch();
    let store = Store::open(&vocab::Workspace::new(workspace).state_dir())
        .map_err(|e| Failure::input(e.to_string()))?;
    let req = GenerateRequest {
        description: args.description.clone(),
        framework: args.framework.clone(),
        language: args.language.clone(),
        features: args.features.clone(),
        parent,
        model: args.model.clone(),
    };
    let g = deploy::generate::generate(cfg, &store, &vocab::Workspace::new(workspace), &req)
        .await
        .map_err(|e| Failure {
            code: e.exit_code(),
            message: e.to_string(),
        })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "generated": g }))
                .unwrap_or_default()
        );
    } else {
        print(&g);
    }
    if !g.tests.passed {
        if args.deploy {
            eprintln!("coval: not deployed: the generated app's tests fail");
        }
        return Ok(exit::NOT_DONE);
    }
    if args.deploy {
        let id = g.iteration.parse().ok();
        let req = deploy::run::RunRequest {
            iteration: id,
            ..Default::default()
        };
        return crate::deploy::deploy(&cfg.settings, &store, workspace, &req, args.json).await;
    }
    Ok(exit::DONE)
}
