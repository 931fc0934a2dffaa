//! The search engine on the bug corpus (tests/fixtures/bugs), end to end through the real
//! `coval` binary and sandbox: how many bugs it fixes, seconds per bug (median, worst), and
//! candidates validated per second, per sandbox and validation mode, side by side in one run.
//!
//!   cargo bench -p cli --bench corpus [-- --sandbox docker|local|both] [--mode warm,exec]
//!                                        [--bugs 03,23]  (only bugs whose dir starts so)
//!
//! Modes (comma-separated; default `warm,warm-1,exec`):
//!   warm        the defaults: warm pytest server, failing tests first (in the server's
//!               collected session when a candidate allows it), the warm `node --test`
//!               runner (Docker), one lane per core
//!   warm-nc     the same without the collected session (`validate.collected: false`)
//!   warm-nn     the same without the warm node runner (`sandbox.warm_node: false`)
//!   warm-1      the same in one lane (one candidate at a time)
//!   exec        a fresh process per candidate, the whole suite, one lane (the first path)
//!   warm-full   the warm server, the whole suite every time, one lane
//!   exec-first  a fresh process per candidate, failing tests first, one lane
//!   user-q      the defaults, with the user's command `--test-cmd "pytest -q"` (Python bugs;
//!               JavaScript bugs keep the detected command)
//!   user-m      the same with `python -m pytest -q`
//!   user-sh     the same with `sh -c 'python3 -m pytest -q'`
//!
//! Candidates per second are candidates over the wall-clock time validation took (the
//! attempts' `validation_ms`: from opening the sandbox sessions to closing them), so lanes
//! count only by what they really save; the mean candidate latency is printed beside it.
//! Bugs run in turn per mode (bug 1 in every mode, then bug 2, ...), so a machine that gets
//! busier during the run slows every mode alike.
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
    /// Wall-clock validation time (the attempts' `validation_ms`).
    validation_ms: u64,
    /// The candidates' own durations, summed (latency, not throughput).
    candidate_ms: u64,
    lanes: u64,
    /// Candidates stopped by their timeout, and the time they took.
    timeouts: usize,
    timeout_ms: u64,
    exact: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One way to validate: `sandbox.warm_server`, `validate.failing_first`, `validate.lanes`,
/// `validate.collected`.
#[derive(Clone, Copy)]
struct Mode {
    name: &'static str,
    warm: bool,
    first: bool,
    lanes: u32,
    collected: bool,
    node: bool,
    /// The user's own test command (`--test-cmd`), for Python bugs; `None`: the detected one.
    cmd: Option<&'static str>,
}

const MODES: [Mode; 10] = [
    Mode {
        name: "warm-nn",
        warm: true,
        first: true,
        lanes: 0,
        collected: true,
        node: false,
        cmd: None,
    },
    Mode {
        name: "warm",
        warm: true,
        first: true,
        lanes: 0,
        collected: true,
        node: true,
        cmd: None,
    },
    Mode {
        name: "warm-nc",
        warm: true,
        first: true,
        lanes: 0,
        collected: false,
        node: true,
        cmd: None,
    },
    Mode {
        name: "warm-1",
        warm: true,
        first: true,
        lanes: 1,
        collected: true,
        node: true,
        cmd: None,
    },
    Mode {
        name: "exec",
        warm: false,
        first: false,
        lanes: 1,
        collected: true,
        node: true,
        cmd: None,
    },
    Mode {
        name: "warm-full",
        warm: true,
        first: false,
        lanes: 1,
        collected: true,
        node: true,
        cmd: None,
    },
    Mode {
        name: "exec-first",
        warm: false,
        first: true,
        lanes: 1,
        collected: true,
        node: true,
        cmd: None,
    },
    Mode {
        name: "user-q",
        warm: true,
        first: true,
        lanes: 0,
        collected: true,
        node: true,
        cmd: Some("pytest -q"),
    },
    Mode {
        name: "user-m",
        warm: true,
        first: true,
        lanes: 0,
        collected: true,
        node: true,
        cmd: Some("python -m pytest -q"),
    },
    Mode {
        name: "user-sh",
        warm: true,
        first: true,
        lanes: 0,
        collected: true,
        node: true,
        cmd: Some("sh -c 'python3 -m pytest -q'"),
    },
];

fn run(bug: &Path, sandbox: &str, mode: Mode) -> Row {
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
        .args(
            mode.cmd
                .filter(|_| !name.starts_with("js_"))
                .map(|c| ["--test-cmd", c])
                .into_iter()
                .flatten(),
        )
        .env("COVAL_SANDBOX__BACKEND", sandbox)
        .env("COVAL_SANDBOX__WARM_SERVER", mode.warm.to_string())
        .env("COVAL_VALIDATE__FAILING_FIRST", mode.first.to_string())
        .env("COVAL_VALIDATE__LANES", mode.lanes.to_string())
        .env("COVAL_VALIDATE__COLLECTED", mode.collected.to_string())
        .env("COVAL_SANDBOX__WARM_NODE", mode.node.to_string())
        .env("COVAL_LLM_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "error")
        .output()
        .expect("run coval");
    let seconds = t0.elapsed().as_secs_f64();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let fixed = v["outcome"] == "fixed";
    let mut candidates = 0;
    let (mut validation_ms, mut candidate_ms, mut lanes) = (0, 0, 0);
    let (mut timeouts, mut timeout_ms) = (0, 0);
    for a in v["attempts"].as_array().into_iter().flatten() {
        validation_ms += a["validation_ms"].as_u64().unwrap_or(0);
        lanes = lanes.max(a["lanes"].as_u64().unwrap_or(0));
        for c in a["candidates"].as_array().into_iter().flatten() {
            candidates += 1;
            let ms = c["duration_ms"].as_u64().unwrap_or(0);
            candidate_ms += ms;
            if c["reason"]
                .as_str()
                .is_some_and(|r| r.ends_with(" timeout"))
            {
                timeouts += 1;
                timeout_ms += ms;
            }
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
        candidate_ms,
        lanes,
        timeouts,
        timeout_ms,
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
    let wanted = args
        .iter()
        .position(|a| a == "--mode")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "warm,warm-1,exec".into());
    let mut modes: Vec<Mode> = vec![];
    for m in wanted.split(',') {
        match MODES.iter().find(|x| x.name == m.trim()) {
            Some(found) => modes.push(*found),
            None => {
                eprintln!(
                    "unknown mode `{m}`: use warm, warm-nc, warm-nn, warm-1, exec, warm-full, exec-first, user-q, user-m or user-sh"
                );
                std::process::exit(2);
            }
        }
    }
    // `--bugs 03,23`: only the bugs whose directory starts with one of these.
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--bugs")
        .and_then(|i| args.get(i + 1))
        .map(|b| b.split(',').map(|p| p.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut bugs: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/bugs"))
        .expect("tests/fixtures/bugs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("BUG.json").exists())
        .filter(|p| {
            only.is_empty()
                || p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| only.iter().any(|o| n.starts_with(o.as_str())))
        })
        .collect();
    bugs.sort();
    let mut summary = vec![];
    let per_sec = |n: usize, ms: u64| n as f64 / (ms as f64 / 1000.0).max(1e-9);
    for sb in &sandboxes {
        let mut by_mode: Vec<Vec<Row>> = modes.iter().map(|_| vec![]).collect();
        for b in &bugs {
            for (m, &mode) in modes.iter().enumerate() {
                let r = run(b, sb, mode);
                println!(
                    "{sb:<6} {:<10} {:<28} {:<6} {:>6.2} s {:>4} candidates {:>6.1}/s {} lane(s){}",
                    mode.name,
                    r.bug,
                    if r.fixed { "fixed" } else { "NOT" },
                    r.seconds,
                    r.candidates,
                    per_sec(r.candidates, r.validation_ms),
                    r.lanes,
                    if r.exact { "  (the original line)" } else { "" }
                );
                by_mode[m].push(r);
            }
        }
        for (mode, rows) in modes.iter().zip(by_mode) {
            let name = mode.name;
            let mut secs: Vec<f64> = rows.iter().map(|r| r.seconds).collect();
            secs.sort_by(f64::total_cmp);
            let fixed = rows.iter().filter(|r| r.fixed).count();
            let exact = rows.iter().filter(|r| r.exact).count();
            let sum =
                |f: &dyn Fn(&Row) -> u64, rows: &[&Row]| -> u64 { rows.iter().map(|r| f(r)).sum() };
            let all: Vec<&Row> = rows.iter().collect();
            let cands = sum(&|r| r.candidates as u64, &all) as usize;
            let vms = sum(&|r| r.validation_ms, &all);
            let cms = sum(&|r| r.candidate_ms, &all);
            let tos = sum(&|r| r.timeouts as u64, &all);
            let tms = sum(&|r| r.timeout_ms, &all);
            let lanes = rows.iter().map(|r| r.lanes).max().unwrap_or(0);
            // Python apart from JavaScript.
            let (js, py): (Vec<&Row>, Vec<&Row>) =
                all.iter().partition(|r| r.bug.starts_with("js_"));
            summary.push(format!(
                "{sb:<6} {name:<10} fixed {fixed}/{} ({:.0}%), original line restored {exact}/{fixed}, median {:.2} s, worst {:.2} s per bug, {:.1} candidates validated per second ({cands} in {:.1} s of validation, {lanes} lane(s))",
                rows.len(),
                100.0 * fixed as f64 / rows.len().max(1) as f64,
                secs.get(secs.len() / 2).copied().unwrap_or(0.0),
                secs.last().copied().unwrap_or(0.0),
                per_sec(cands, vms),
                vms as f64 / 1000.0
            ));
            summary.push(format!(
                "{sb:<6} {name:<10}   mean candidate latency {:.0} ms; Python {:.1}/s, JavaScript {:.1}/s; {tos} candidates stopped by their timeout took {:.1} s of candidate time",
                cms as f64 / cands.max(1) as f64,
                per_sec(sum(&|r| r.candidates as u64, &py) as usize, sum(&|r| r.validation_ms, &py)),
                per_sec(sum(&|r| r.candidates as u64, &js) as usize, sum(&|r| r.validation_ms, &js)),
                tms as f64 / 1000.0,
            ));
        }
    }
    println!();
    for s in summary {
        println!("{s}");
    }
}
