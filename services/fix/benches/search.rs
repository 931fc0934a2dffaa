//! The search engine on a large file: time and peak heap of one batch of candidates.
//!
//!   cargo bench -p fix --bench search [-- --file PATH --targets N --files K]
//!
//! Without `--file`, a generated Python module of about 2,500 lines (the size of a code
//! formatter's biggest files) is used. `--targets` suspect lines (default 20) are taken from
//! the middle of each file, all tied at one score (a flat spectrum, the expensive case);
//! `--files` copies of the file (default 4) are each given that many suspects, as a spectrum
//! spread over a real project's modules is. Prints the wall time, the candidates, and the
//! peak bytes allocated while the batch was made.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fix::handler::{SearchSettings, search_candidates};
use proto::messages::Suspect;

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
// (A counting allocator needs `unsafe`: the bench measures peak heap without a profiler.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let now = NOW.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            NOW.fetch_sub(l.size() - new, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A Python module of `functions` small functions with the shapes the operators mutate.
fn generated(functions: usize) -> String {
    let mut s = String::from("import os\n\n\n");
    for i in 0..functions {
        s.push_str(&format!(
            "def step_{i}(items, limit=10, scale=2):\n    total = 0\n    for k, item in enumerate(items):\n        if k >= limit or item is None:\n            break\n        total += item * scale - {i} % 7\n    if total > limit and not items:\n        return os.path.join(str(total), \"x\")\n    return max(total, 0) // (scale + 1)\n\n\n"
        ));
    }
    s
}

fn main() {
    let text = match arg("--file") {
        Some(p) => std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {p}: {e}")),
        None => generated(230),
    };
    let targets: usize = arg("--targets").and_then(|v| v.parse().ok()).unwrap_or(20);
    let files: usize = arg("--files").and_then(|v| v.parse().ok()).unwrap_or(4);
    let dir = tempfile::tempdir().expect("temp dir");
    // Suspect lines: statement lines from the middle of the file.
    let lines: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with("def ")
        })
        .map(|(i, _)| i as u32 + 1)
        .collect();
    let mid = lines.len() / 2;
    let chosen =
        &lines[mid.saturating_sub(targets / 2)..(mid + targets - targets / 2).min(lines.len())];
    let mut suspects = vec![];
    for f in 0..files {
        let name = format!("pkg/module_{f}.py");
        std::fs::create_dir_all(dir.path().join("pkg")).expect("mkdir");
        std::fs::write(dir.path().join(&name), &text).expect("write");
        suspects.extend(chosen.iter().map(|l| Suspect {
            file: name.clone(),
            line: Some(*l),
            score: 0.9,
            reason: "bench".into(),
        }));
    }
    let settings = SearchSettings::default();
    let base = NOW.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let started = Instant::now();
    let batch = search_candidates(
        dir.path(),
        &suspects,
        &HashSet::new(),
        &settings,
        &HashMap::new(),
        &[],
    );
    let wall = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "search: {} file(s) of {} lines ({} KB), {} suspect lines each: {} candidates in {:.2} s, peak heap {:.1} MB ({:.0}x the files' size)",
        files,
        text.lines().count(),
        text.len() / 1024,
        chosen.len(),
        batch.len(),
        wall.as_secs_f64(),
        peak as f64 / 1e6,
        peak as f64 / (text.len() * files) as f64
    );
}
