//! The corpus of logs as users paste them (`tests/fixtures/logs/wild`): every log is parsed
//! and compared with the table written from the broken programs (`expected.tsv`).
//!
//! A log scores when the parser names the innermost project frame (the file as a path whose
//! tail is the expected project-relative path, and the line) and the error type. The score
//! per group (language, plus whole CI job logs) is printed; the test fails below 90% overall.
//! Each log is parsed on its own thread with a time bound, so a log that makes the parser
//! panic or hang is reported as such (and fails the test) instead of stopping the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use logparse::{Frame, ParsedLog, parse, text_from_bytes};

/// No log may take longer than this to parse (debug build, shared machine).
const TIME_BOUND: Duration = Duration::from_secs(10);
const PASS_MARK: f64 = 0.90;
const MIN_LOGS: usize = 60;

fn wild_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/logs/wild")
}

struct Expected {
    group: String,
    case: String,
    error_type: String,
    file: String,
    line: u32,
    failing: usize,
}

fn table() -> Vec<Expected> {
    let text = std::fs::read_to_string(wild_dir().join("expected.tsv")).expect("expected.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "bad expected.tsv row: {l}");
            Expected {
                group: f[0].into(),
                case: f[1].into(),
                error_type: f[3].into(),
                file: f[4].into(),
                line: f[5].parse().expect("line number"),
                failing: f[6].parse().expect("failing test count"),
            }
        })
        .collect()
}

/// A log path as written (`C:\x\y.py`, `file:///C:/x/y.js`, `./src/a.rs`) in `/` form.
fn normalise(path: &str) -> String {
    let p = path.trim_start_matches("file://").replace('\\', "/");
    let p = match p.as_bytes() {
        [b'/', d, b':', ..] if d.is_ascii_alphabetic() => p[1..].to_string(),
        _ => p,
    };
    p.trim_start_matches("./").to_string()
}

fn frame_matches(f: Option<&Frame>, e: &Expected) -> bool {
    f.is_some_and(|f| {
        let p = normalise(&f.file);
        (p == e.file || p.ends_with(&format!("/{}", e.file))) && f.line == Some(e.line)
    })
}

enum Outcome {
    Parsed(Box<ParsedLog>, Duration),
    Panicked,
    TimedOut,
}

fn parse_bounded(bytes: Vec<u8>) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let p = text_from_bytes(&bytes)
            .map(|t| parse(&t))
            .unwrap_or_default();
        let _ = tx.send((p, start.elapsed()));
    });
    match rx.recv_timeout(TIME_BOUND) {
        Ok((p, took)) => Outcome::Parsed(Box::new(p), took),
        Err(mpsc::RecvTimeoutError::Disconnected) => Outcome::Panicked,
        Err(mpsc::RecvTimeoutError::Timeout) => Outcome::TimedOut,
    }
}

#[derive(Default)]
struct Score {
    logs: usize,
    frame: usize,
    error_type: usize,
    both: usize,
    tests: usize,
}

#[test]
fn wild_logs_score_at_least_ninety_percent() {
    let rows = table();
    assert!(
        rows.len() >= MIN_LOGS,
        "only {} logs in the table",
        rows.len()
    );
    let mut scores: BTreeMap<String, Score> = BTreeMap::new();
    let mut misses = String::new();
    let mut broken = vec![];
    for e in &rows {
        let log = wild_dir().join(&e.group).join(format!("{}.log", e.case));
        let bytes = std::fs::read(&log).unwrap_or_else(|err| panic!("{}: {err}", log.display()));
        let s = scores.entry(e.group.clone()).or_default();
        s.logs += 1;
        let p = match parse_bounded(bytes) {
            Outcome::Parsed(p, took) => {
                if took > Duration::from_secs(2) {
                    eprintln!("slow: {}/{} took {took:?}", e.group, e.case);
                }
                p
            }
            Outcome::Panicked => {
                broken.push(format!("{}/{}: the parser panicked", e.group, e.case));
                continue;
            }
            Outcome::TimedOut => {
                broken.push(format!(
                    "{}/{}: no result in {TIME_BOUND:?}",
                    e.group, e.case
                ));
                continue;
            }
        };
        let f = p.project_frame();
        let frame_ok = frame_matches(f, e);
        let type_ok = p.error_type == e.error_type;
        let tests_ok = p.failing_tests.len() == e.failing;
        s.frame += usize::from(frame_ok);
        s.error_type += usize::from(type_ok);
        s.both += usize::from(frame_ok && type_ok);
        s.tests += usize::from(tests_ok);
        if !(frame_ok && type_ok && tests_ok) {
            let got = f.map_or("none".to_string(), |f| {
                format!("{}:{}", f.file, f.line.unwrap_or(0))
            });
            let _ = writeln!(
                misses,
                "{:<8} {:<30} want {}:{} `{}` tests={}  got {got} `{}` tests={} ({})",
                e.group,
                e.case,
                e.file,
                e.line,
                e.error_type,
                e.failing,
                p.error_type,
                p.failing_tests.len(),
                p.format
            );
        }
    }
    let mut report =
        String::from("group     logs  frame  type  frame+type  failing-tests  score\n");
    let mut total = Score::default();
    for (g, s) in &scores {
        let _ = writeln!(
            report,
            "{g:<8} {:>5} {:>6} {:>5} {:>11} {:>14}  {:>5.1}%",
            s.logs,
            s.frame,
            s.error_type,
            s.both,
            s.tests,
            100.0 * s.both as f64 / s.logs as f64
        );
        total.logs += s.logs;
        total.frame += s.frame;
        total.error_type += s.error_type;
        total.both += s.both;
        total.tests += s.tests;
    }
    let overall = total.both as f64 / total.logs as f64;
    let _ = writeln!(
        report,
        "{:<8} {:>5} {:>6} {:>5} {:>11} {:>14}  {:>5.1}%",
        "all",
        total.logs,
        total.frame,
        total.error_type,
        total.both,
        total.tests,
        100.0 * overall
    );
    eprintln!("{report}");
    if !misses.is_empty() {
        eprintln!("logs not fully right:\n{misses}");
    }
    assert!(broken.is_empty(), "logs that broke the parser: {broken:#?}");
    assert!(
        overall >= PASS_MARK,
        "corpus score {:.1}% is below {:.0}%",
        100.0 * overall,
        100.0 * PASS_MARK
    );
}
