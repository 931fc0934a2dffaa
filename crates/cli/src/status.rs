//! `coval status` and `coval cleanup`: what the workspace holds, and retention.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use store::{IterationOrigin, RepairStatus, Store};

use crate::exit::{self, Failure};

fn open(workspace: &Path) -> Result<Option<Store>, Failure> {
    let db = vocab::Workspace::new(workspace).state_dir();
    if !db.exists() {
        return Ok(None);
    }
    Store::open(&db)
        .map(Some)
        .map_err(|e| Failure::input(e.to_string()))
}

pub fn status(
    workspace: &Path,
    verbose: bool,
    json: bool,
    settings: &settings::Settings,
) -> Result<u8, Failure> {
    let Some(store) = open(workspace)? else {
        if json {
            println!("{{\"iterations\": [], \"repairs\": [], \"deployments\": []}}");
        } else {
            println!(
                "no workspace at {}: run `coval repair` first",
                workspace.display()
            );
        }
        return Ok(exit::DONE);
    };
    let its = store
        .iterations()
        .map_err(|e| Failure::internal(e.to_string()))?;
    let mut repairs = store
        .repairs()
        .map_err(|e| Failure::internal(e.to_string()))?;
    repairs.sort_by_key(|r| r.created_ms);
    if json {
        let mut v = bus::worker::ledger_json(&store, &vocab::Workspace::new(workspace));
        v["deployments"] = crate::deploy::status_json(settings, &store);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::DONE);
    }
    println!("workspace {}", workspace.display());
    println!("iterations: {}", its.len());
    for i in &its {
        let origin = match &i.origin {
            IterationOrigin::Import { path } => format!("snapshot of {path}"),
            IterationOrigin::Repair { repair } => format!("repaired by {repair}"),
            IterationOrigin::Generate { description } => format!("generated: {description}"),
        };
        let parent = i
            .parent
            .map(|p| format!(" (parent {p})"))
            .unwrap_or_default();
        println!("  {}{parent}  {origin}", i.id);
    }
    let done = repairs
        .iter()
        .filter(|r| r.status == RepairStatus::Completed)
        .count();
    println!(
        "repairs: {} ({} completed, {} in flight)",
        repairs.len(),
        done,
        repairs.len() - done
    );
    for r in &repairs {
        let outcome = r.outcome.map(crate::repair_outcome).unwrap_or("in flight");
        if verbose {
            println!("  {}  {outcome}: {}", r.id, r.summary);
        } else {
            println!("  {}  {outcome}", r.id);
        }
    }
    crate::deploy::print_status(settings, &store);
    Ok(exit::DONE)
}

pub fn cleanup(workspace: &Path, keep: usize, force: bool) -> Result<u8, Failure> {
    let Some(store) = open(workspace)? else {
        println!("no workspace at {}: nothing to clean", workspace.display());
        return Ok(exit::DONE);
    };
    let its = store
        .iterations()
        .map_err(|e| Failure::internal(e.to_string()))?;
    let doomed = store
        .retention_plan(keep, &[])
        .map_err(|e| Failure::internal(e.to_string()))?;
    if doomed.is_empty() {
        println!(
            "nothing to remove: {} iteration(s), keeping {keep}",
            its.len()
        );
        return Ok(exit::DONE);
    }
    let list: Vec<String> = doomed.iter().map(|i| i.to_string()).collect();
    if !force {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::input(format!(
                "would remove {}: pass --force to delete without asking",
                list.join(", ")
            )));
        }
        eprint!(
            "remove {} iteration(s) ({})? [y/N] ",
            doomed.len(),
            list.join(", ")
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing removed");
            return Ok(exit::DONE);
        }
    }
    for id in &doomed {
        let dir = vocab::Workspace::new(workspace).iteration_dir(*id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Failure::internal(format!("cannot remove {}: {e}", dir.display())))?;
        }
        store
            .remove_iteration(*id)
            .map_err(|e| Failure::internal(e.to_string()))?;
        println!("removed {id}");
    }
    Ok(exit::DONE)
}
