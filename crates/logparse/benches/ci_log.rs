//! Parse time of a 50 MB CI job log, in the shapes CI systems write (`cargo bench -p logparse
//! --bench ci_log`). Each shape is a full job: thousands of build and test lines with the
//! system's per-line prefix and colours, and a failing test's traceback near the end (except
//! `no-error`: a Buildkite job that passed, which every parser tries and none recognises). Prints,
//! per shape, the median of several runs of `text_from_bytes` + `parse`, and its ratio to
//! the plain log's time and to a baseline that only splits the same bytes into lines.

use std::hint::black_box;
use std::time::{Duration, Instant};

use logparse::{parse, text_from_bytes};

const SIZE: usize = 50 << 20;
const RUNS: usize = 7;

/// One line of a job's output with `shape`'s prefix; `i` varies timestamps and content.
fn prefixed(shape: &str, i: usize, line: &str) -> String {
    let (s, ms) = (i / 1000 % 60, i % 1000);
    match shape {
        "plain" => format!("{line}\n"),
        "github-actions" => format!("2024-05-14T09:12:{s:02}.{ms:03}1234Z {line}\n"),
        "gitlab" => format!("2024-05-14T09:12:{s:02}.{ms:03}123Z 01O {line}\n"),
        "jenkins" => format!("[2024-05-14T09:12:{s:02}.{ms:03}Z] {line}\n"),
        "buildkite" | "no-error" => format!("\x1b_bk;t=17156779{i:05}\x07{line}\n"),
        _ => unreachable!("unknown shape"),
    }
}

fn job_log(shape: &str) -> Vec<u8> {
    let noise = [
        "\x1b[32m✓\x1b[0m tests/test_orders.py::test_total_{} PASSED [ 42%]",
        "   Compiling serde_json v1.0.{} (registry+https://github.com/rust-lang/crates.io-index)",
        "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/x/{}/1.0/x.jar (12 kB at 4.1 MB/s)",
        "npm warn deprecated inflight@1.0.{}: This module is not supported, and leaks memory.",
        "    at Object.<anonymous> (/home/runner/work/app/app/node_modules/lib/{}.js:1:2)",
        "2024-05-14 09:12:44,123 INFO worker: processed batch id={} items=100 error=none",
    ];
    let trace = [
        "=================================== FAILURES ===================================",
        "___________________________ test_total_unknown_fruit ___________________________",
        "",
        "    def test_total_unknown_fruit():",
        ">       assert total([(\"apple\", 1), (\"kiwi\", 3)]) == 0.5",
        "",
        "tests/test_cart.py:9: ",
        "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ ",
        "",
        ">           s += PRICES[name] * qty",
        "E           KeyError: 'kiwi'",
        "",
        "app/cart.py:7: KeyError",
        "=========================== short test summary info ============================",
        "FAILED tests/test_cart.py::test_total_unknown_fruit - KeyError: 'kiwi'",
        "========================= 1 failed, 41 passed in 0.19s =========================",
    ];
    let mut out = String::with_capacity(SIZE + 4096);
    let mut i = 0;
    while out.len() < SIZE - 4096 {
        let l = noise[i % noise.len()].replace("{}", &i.to_string());
        out.push_str(&prefixed(shape, i, &l));
        i += 1;
    }
    // `no-error`: a passing job, which no parser recognises (the slowest path).
    if shape != "no-error" {
        for l in trace {
            out.push_str(&prefixed(shape, i, l));
            i += 1;
        }
    }
    out.into_bytes()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let shapes = [
        "plain",
        "github-actions",
        "gitlab",
        "jenkins",
        "buildkite",
        "no-error",
    ];
    println!(
        "{:<16} {:>8} {:>12} {:>12} {:>10} {:>12}  result",
        "shape", "MB", "split lines", "parse", "vs plain", "vs split"
    );
    let mut plain = None;
    for shape in shapes {
        let bytes = job_log(shape);
        let mut split = vec![];
        let mut full = vec![];
        let mut result = String::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            black_box(bytes.split(|&b| b == b'\n').count());
            split.push(t.elapsed());
            let t = Instant::now();
            let p = parse(&text_from_bytes(black_box(&bytes)).expect("a text log"));
            full.push(t.elapsed());
            result = format!(
                "{} {} at {}",
                p.format,
                p.error_type,
                p.innermost_project_frame().map_or("-".into(), |f| format!(
                    "{}:{}",
                    f.file,
                    f.line.unwrap_or(0)
                ))
            );
        }
        let (split, full) = (median(split), median(full));
        let base = *plain.get_or_insert(full);
        println!(
            "{shape:<16} {:>8.1} {:>10.1}ms {:>10.1}ms {:>9.2}x {:>11.2}x  {result}",
            bytes.len() as f64 / 1e6,
            split.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            full.as_secs_f64() / base.as_secs_f64(),
            full.as_secs_f64() / split.as_secs_f64(),
        );
    }
}
