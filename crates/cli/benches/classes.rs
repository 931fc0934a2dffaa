//! The search engine on the defect-class corpus (tests/fixtures/classes: textbook programs in
//! Python, JavaScript and Go with bugs of the program-repair literature's classes seeded in
//! them), end to end through the real `coval` binary: fixed (the tests pass) and exact (the
//! patched file is AST-equal to the program as written) per class and per language, median
//! and worst seconds per bug, the tuned and the held-back split side by side.
//!
//!   cargo bench -p cli --bench classes -- [--sandbox local|docker] [--bugs py_bfs,js_]
//!       [--split tuned|held_back] [--jobs N] [--bin PATH] [--config FILE] [--save FILE]
//!       [--against FILE]
//!
//!   cargo bench -p cli --bench classes -- --ranks [--split held_back]
//!
//! `--ranks` runs no repair: for each bug of the tuned split (the held-back one only when
//! asked), the rank of the reference fix among the search engine's candidates when the buggy
//! line is the only suspect (localisation taken as perfect), the tuning aid of the operators
//! (`CLASSES_SHOW=<bug id>` lists that bug's candidates in order).
//! `--bin` runs another build of coval (the engine before a change); `--save` writes the
//! rows as JSON and `--against` prints a saved run's numbers beside this one's, so a change
//! is measured against its baseline in one table. `--rows F1,F2` runs nothing and prints the
//! tables of saved runs (parts of one run made in parallel), against `--against`. `--jobs` repairs that many bugs at once
//! (seconds per bug are then measured under that load: keep 1 for timings).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use proto::messages::Language;
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/classes")
}

#[derive(Clone)]
struct Row {
    id: String,
    class: String,
    language: String,
    split: String,
    fixed: bool,
    exact: bool,
    seconds: f64,
    candidates: u64,
    timeouts: u64,
    operator: String,
}

fn language(name: &str) -> Language {
    match name {
        "javascript" => Language::JavaScript,
        "go" => Language::Go,
        _ => Language::Python,
    }
}

fn copy_program(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("program dir").flatten() {
        let (p, name) = (e.path(), e.file_name());
        if name == "BUGS.json" {
            continue;
        }
        if p.is_dir() {
            copy_program(&p, &to.join(&name));
        } else {
            std::fs::copy(&p, to.join(&name)).expect("copy");
        }
    }
}

fn run(bin: &Path, bug: &Value, sandbox: &str, config: Option<&str>) -> Row {
    let s = |k: &str| bug[k].as_str().unwrap_or("").to_owned();
    let tmp = tempfile::tempdir().expect("tempdir");
    let program = root().join("programs").join(s("program"));
    let src = tmp.path().join(s("program"));
    copy_program(&program, &src);
    let file = src.join(s("file"));
    let reference = std::fs::read_to_string(program.join(s("file"))).expect("program file");
    let buggy = reference.replacen(&s("fixed"), &s("buggy"), 1);
    std::fs::write(&file, &buggy).expect("write bug");
    let t0 = Instant::now();
    let mut cmd = Command::new(bin);
    if let Some(c) = config {
        cmd.args(["--config", c]);
    }
    let out = cmd
        .args(["--workspace"])
        .arg(tmp.path().join("ws"))
        .args(["repair", "--json", "--apply", "--engine", "search", "-e"])
        .arg(root().join("logs").join(format!("{}.log", s("id"))))
        .arg("-s")
        .arg(&src)
        .env("COVAL_SANDBOX__BACKEND", sandbox)
        .env("COVAL_LLM_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "error")
        .output()
        .expect("run coval");
    let seconds = t0.elapsed().as_secs_f64();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let fixed = v["outcome"] == "fixed";
    if v["outcome"].is_null() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        eprintln!(
            "{}: coval gave no report ({}): {}",
            s("id"),
            out.status,
            tail.join(" | ")
        );
    }
    let patched = std::fs::read_to_string(&file).unwrap_or_default();
    let exact = fixed
        && fix::search::same_ast(language(&s("language")), &s("file"), &patched, &reference)
            .unwrap_or(patched == reference);
    let (mut candidates, mut timeouts) = (0, 0);
    for a in v["attempts"].as_array().into_iter().flatten() {
        for c in a["candidates"].as_array().into_iter().flatten() {
            candidates += 1;
            if c["reason"]
                .as_str()
                .is_some_and(|r| r.ends_with(" timeout"))
            {
                timeouts += 1;
            }
        }
    }
    Row {
        id: s("id"),
        class: s("class"),
        language: s("language"),
        split: s("split"),
        fixed,
        exact,
        seconds,
        candidates,
        timeouts,
        operator: winner_description(&v),
    }
}

/// What the validated candidate did, in the engine's words.
fn winner_description(v: &Value) -> String {
    let id = v["winner"].as_str().unwrap_or("-");
    v["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["candidates"].as_array().into_iter().flatten())
        .find(|c| c["id"] == id)
        .and_then(|c| c["description"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn to_json(r: &Row) -> Value {
    json!({"id": r.id, "class": r.class, "language": r.language, "split": r.split,
           "fixed": r.fixed, "exact": r.exact, "seconds": r.seconds,
           "candidates": r.candidates, "timeouts": r.timeouts, "operator": r.operator})
}

fn from_json(v: &Value) -> Row {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    Row {
        id: s("id"),
        class: s("class"),
        language: s("language"),
        split: s("split"),
        fixed: v["fixed"].as_bool().unwrap_or(false),
        exact: v["exact"].as_bool().unwrap_or(false),
        seconds: v["seconds"].as_f64().unwrap_or(0.0),
        candidates: v["candidates"].as_u64().unwrap_or(0),
        timeouts: v["timeouts"].as_u64().unwrap_or(0),
        operator: s("operator"),
    }
}

/// `fixed/exact/n` of the rows of one split.
fn cell(rows: &[&Row], split: &str) -> String {
    let r: Vec<&&Row> = rows.iter().filter(|r| r.split == split).collect();
    if r.is_empty() {
        return "-".into();
    }
    format!(
        "{}/{}/{}",
        r.iter().filter(|r| r.fixed).count(),
        r.iter().filter(|r| r.exact).count(),
        r.len()
    )
}

fn seconds(rows: &[&Row], split: &str) -> String {
    let mut s: Vec<f64> = rows
        .iter()
        .filter(|r| split == "all" || r.split == split)
        .map(|r| r.seconds)
        .collect();
    if s.is_empty() {
        return "-".into();
    }
    s.sort_by(f64::total_cmp);
    format!(
        "median {:.1} s, worst {:.1} s",
        s[s.len() / 2],
        s[s.len() - 1]
    )
}

/// One table: rows grouped by `key`, this run's tuned and held-back cells, and the saved run's.
fn table(title: &str, rows: &[Row], before: &[Row], key: fn(&Row) -> String) {
    let mut groups: BTreeMap<String, (Vec<&Row>, Vec<&Row>)> = BTreeMap::new();
    for r in rows {
        groups.entry(key(r)).or_default().0.push(r);
    }
    for r in before {
        if rows.iter().any(|x| x.id == r.id) {
            groups.entry(key(r)).or_default().1.push(r);
        }
    }
    let with_before = !before.is_empty();
    println!();
    print!("{title:<34} {:>12} {:>12}", "tuned", "held back");
    if with_before {
        print!(" | {:>12} {:>12}", "before tuned", "before held");
    }
    println!("   (fixed/exact/bugs)");
    let mut all = (vec![], vec![]);
    for (k, (now, old)) in &groups {
        print!(
            "{k:<34} {:>12} {:>12}",
            cell(now, "tuned"),
            cell(now, "held_back")
        );
        if with_before {
            print!(
                " | {:>12} {:>12}",
                cell(old, "tuned"),
                cell(old, "held_back")
            );
        }
        println!();
        all.0.extend(now.iter().copied());
        all.1.extend(old.iter().copied());
    }
    print!(
        "{:<34} {:>12} {:>12}",
        "all",
        cell(&all.0, "tuned"),
        cell(&all.0, "held_back")
    );
    if with_before {
        print!(
            " | {:>12} {:>12}",
            cell(&all.1, "tuned"),
            cell(&all.1, "held_back")
        );
    }
    println!();
}

/// The rank of each bug's reference fix among the engine's candidates (see `--ranks`).
fn ranks(bugs: &[Value]) {
    let (mut found, mut top60, mut total) = (0, 0, 0);
    for b in bugs {
        let s = |k: &str| b[k].as_str().unwrap_or("").to_owned();
        let lang = language(&s("language"));
        let program = root().join("programs").join(s("program"));
        let Ok(reference) = std::fs::read_to_string(program.join(s("file"))) else {
            continue;
        };
        let buggy = reference.replacen(&s("fixed"), &s("buggy"), 1);
        let line = b["line"].as_u64().and_then(|l| u32::try_from(l).ok());
        let targets = [fix::search::Target { line, score: 1.0 }];
        let log = std::fs::read_to_string(root().join("logs").join(format!("{}.log", s("id"))))
            .unwrap_or_default();
        let raises = fix::search::expected_raises(&log, &fix::search::reader_under(&program));
        let ms = fix::search::mutants_guided(
            lang,
            &s("file"),
            &buggy,
            &targets,
            2000,
            &Default::default(),
            &raises,
        );
        let rank = ms.iter().position(|m| {
            fix::search::same_ast(lang, &s("file"), &m.new_text, &reference) == Some(true)
        });
        if std::env::var("CLASSES_SHOW").is_ok_and(|v| v == s("id")) {
            for (i, m) in ms.iter().enumerate().take(400) {
                println!(
                    "  {i:>4} {:.3} {:<20} {}",
                    m.score, m.operator, m.description
                );
            }
        }
        total += 1;
        if let Some(r) = rank {
            found += 1;
            top60 += usize::from(r < 60);
        }
        println!(
            "{:<26} {:<34} {:>5} of {:>5} {}",
            s("id"),
            s("class"),
            rank.map(|r| r.to_string()).unwrap_or("-".into()),
            ms.len(),
            rank.map(|r| ms[r].operator).unwrap_or("")
        );
    }
    println!("reference among candidates: {found}/{total}, in the first 60: {top60}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sandbox = arg("--sandbox").unwrap_or_else(|| "local".into());
    let bin = arg("--bin")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_coval")));
    let jobs: usize = arg("--jobs").and_then(|j| j.parse().ok()).unwrap_or(1);
    let only: Vec<String> = arg("--bugs")
        .map(|b| b.split(',').map(|p| p.trim().to_owned()).collect())
        .unwrap_or_default();
    let split = arg("--split");
    // `--config FILE`: the configuration another build reads (an older build refuses keys
    // it does not know).
    let config = arg("--config");
    let index: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(root().join("index.json")).expect("index.json"),
    )
    .expect("index.json is JSON");
    let bugs: Vec<Value> = index
        .into_iter()
        .filter(|_| arg("--rows").is_none())
        .filter(|b| {
            let id = b["id"].as_str().unwrap_or("");
            (only.is_empty() || only.iter().any(|o| id.starts_with(o.as_str())))
                && split.as_deref().is_none_or(|s| b["split"] == s)
        })
        .collect();
    if args.iter().any(|a| a == "--ranks") {
        // A tuning aid: the held-back split only when asked for by name.
        let tuned: Vec<Value> = bugs
            .into_iter()
            .filter(|b| split.is_some() || b["split"] == "tuned")
            .collect();
        ranks(&tuned);
        return;
    }
    let before: Vec<Row> = arg("--against")
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| serde_json::from_str::<Vec<Value>>(&t).ok())
        .map(|v| v.iter().map(from_json).collect())
        .unwrap_or_default();
    println!(
        "{} bugs, sandbox {sandbox}, {jobs} at a time, coval {}",
        bugs.len(),
        bin.display()
    );
    let queue = std::sync::Mutex::new(bugs.iter().rev().collect::<Vec<_>>());
    let rows = std::sync::Mutex::new(vec![]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                while let Some(bug) = queue.lock().map(|mut q| q.pop()).ok().flatten() {
                    let r = run(&bin, bug, &sandbox, config.as_deref());
                    println!(
                        "{:<26} {:<34} {:<6} {:<6} {:>6.1} s {:>4} candidates {:>3} timeouts {}",
                        r.id,
                        r.class,
                        if r.fixed { "fixed" } else { "NOT" },
                        if r.exact { "exact" } else { "" },
                        r.seconds,
                        r.candidates,
                        r.timeouts,
                        r.operator
                    );
                    if let Ok(mut rows) = rows.lock() {
                        rows.push(r);
                    }
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap_or_default();
    for f in arg("--rows").iter().flat_map(|r| r.split(',')) {
        let saved: Vec<Value> = std::fs::read_to_string(f)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        rows.extend(saved.iter().map(from_json));
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(f) = arg("--save") {
        let v: Vec<Value> = rows.iter().map(to_json).collect();
        let _ = std::fs::write(&f, serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    table("class", &rows, &before, |r| r.class.clone());
    table("language", &rows, &before, |r| r.language.clone());
    let all: Vec<&Row> = rows.iter().collect();
    let old: Vec<&Row> = before
        .iter()
        .filter(|b| rows.iter().any(|r| r.id == b.id))
        .collect();
    println!();
    for split in ["tuned", "held_back", "all"] {
        print!("seconds per bug, {split:<9}: {}", seconds(&all, split));
        if !old.is_empty() {
            print!("   | before: {}", seconds(&old, split));
        }
        println!();
    }
    let under = |rows: &[&Row]| rows.iter().filter(|r| r.seconds <= 30.0).count();
    println!(
        "repaired or given up within 30 s: {}/{}; candidates stopped by their timeout: {}",
        under(&all),
        all.len(),
        rows.iter().map(|r| r.timeouts).sum::<u64>()
    );
}
