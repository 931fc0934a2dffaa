//! The search engine on the bug corpus (tests/fixtures/bugs), end to end through the real
//! `coval` binary and sandbox: how many bugs it fixes, seconds per bug (median, worst), and
//! candidates validated per second, per sandbox, side by side in one run.
//!
//!   cargo bench -p cli --bench corpus [-- --sandbox docker|local|both]
//!
//! Docker needs the base image (`scripts/build-base-images.sh python node`); the local sandbox
//! needs python3 with pytest and node on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Row {
    bug: String,
    fixed: bool,
    seconds: f64,
    candidates: usize,
    validation_ms: u64,
    exact: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(bug: &Path, sandbox: &str) -> Row {
    let name = bug
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("p");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(bug)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot copy {}", bug.display());
    let ws = tmp.path().join("ws");
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_coval"))
        .args([
            "--workspace",
            ws.to_str().unwrap_or(""),
            "repair",
            "--json",
            "--engine",
            "search",
        ])
        .arg("-e")
        .arg(src.join("error.log"))
        .arg("-s")
        .arg(&src)
        .env("COVAL_SANDBOX__BACKEND", sandbox)
        .env("COVAL_LLM_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "error")
        .output()
        .expect("run coval");
    let seconds = t0.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let fixed = v["outcome"] == "fixed";
    let mut candidates = 0;
    let mut validation_ms = 0;
    for a in v["attempts"].as_array().into_iter().flatten() {
        for c in a["candidates"].as_array().into_iter().flatten() {
            candidates += 1;
            validation_ms += c["duration_ms"].as_u64().unwrap_or(0);
        }
    }
    // Does the validated patch restore the original line (not merely pass the tests)?
    let exact = fixed && {
        let bug_json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(bug.join("BUG.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let want = bug_json["fixed"].as_str().unwrap_or("").trim().to_owned();
        v["patch"]
            .as_str()
            .unwrap_or("")
            .lines()
            .any(|l| l.starts_with('+') && l[1..].trim() == want)
    };
    Row {
        bug: name,
        fixed,
        seconds,
        candidates,
        validation_ms,
        exact,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args
        .iter()
        .position(|a| a == "--sandbox")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "both".into());
    let sandboxes: Vec<&str> = match which.as_str() {
        "docker" => vec!["docker"],
        "local" => vec!["local"],
        _ => vec!["docker", "local"],
    };
    let mut bugs: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/bugs"))
        .expect("tests/fixtures/bugs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("BUG.json").exists())
        .collect();
    bugs.sort();
    let mut summary = vec![];
    for sb in &sandboxes {
        let mut rows: Vec<Row> = vec![];
        for b in &bugs {
            let r = run(b, sb);
            println!(
                "{sb:<6} {:<28} {:<6} {:>6.2} s {:>4} candidates{}",
                r.bug,
                if r.fixed { "fixed" } else { "NOT" },
                r.seconds,
                r.candidates,
                if r.exact { "  (the original line)" } else { "" }
            );
            rows.push(r);
        }
        let mut secs: Vec<f64> = rows.iter().map(|r| r.seconds).collect();
        secs.sort_by(f64::total_cmp);
        let fixed = rows.iter().filter(|r| r.fixed).count();
        let exact = rows.iter().filter(|r| r.exact).count();
        let cands: usize = rows.iter().map(|r| r.candidates).sum();
        let vms: u64 = rows.iter().map(|r| r.validation_ms).sum();
        summary.push(format!(
            "{sb:<6} fixed {fixed}/{} ({:.0}%), original line restored {exact}/{fixed}, median {:.2} s, worst {:.2} s per bug, {:.1} candidates validated per second ({cands} in {:.1} s of validation)",
            rows.len(),
            100.0 * fixed as f64 / rows.len().max(1) as f64,
            secs.get(secs.len() / 2).copied().unwrap_or(0.0),
            secs.last().copied().unwrap_or(0.0),
            cands as f64 / (vms as f64 / 1000.0).max(1e-9),
            vms as f64 / 1000.0
        ));
    }
    println!();
    for s in summary {
        println!("{s}");
    }
}
