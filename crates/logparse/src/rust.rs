//! Rust: panics (with and without `RUST_BACKTRACE`), `cargo test` failures, rustc
//! diagnostics (`error[E0308]` with ` --> file:l:c`) and cargo's own errors.

use proto::messages::{Category, Frame, Language};

use crate::ParsedLog;
use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};

const LANG: Language = Language::Rust;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    cargo_test(log)
        .or_else(|| {
            log.find_from(0, is_panic_header)
                .map(|i| panic(log, i, "rust-panic"))
        })
        .or_else(|| rustc(log))
        .or_else(|| cargo_error(log))
        .or_else(|| headerless_backtrace(log))
}

/// A backtrace pasted without its `thread '…' panicked at` header: the frames still show a
/// panic (`core::panicking::…`, `rust_begin_unwind`), though its message is lost.
fn headerless_backtrace(log: &Log) -> Option<ParsedLog> {
    if !log.has("panicking") && !log.has("rust_begin_unwind") {
        return None;
    }
    let start = match log.find_from(0, |l| l.trim() == "stack backtrace:") {
        Some(b) => b + 1,
        None => log.find_from(0, |l| regex!(r"^\s*0: \S").is_match(l))?,
    };
    let frames = backtrace(&log.lines, start);
    let panicking = frames.iter().any(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.contains("panicking") || n.ends_with("rust_begin_unwind"))
    });
    if !panicking {
        return None;
    }
    let mut p = ParsedLog::new(LANG, "rust-panic");
    p.set_error("panic", "");
    p.frames = frames;
    Some(p)
}

fn is_panic_header(l: &str) -> bool {
    regex!(r"^thread '.*' (?:\(\d+\) )?panicked at ").is_match(l)
}

fn cargo_test(log: &Log) -> Option<ParsedLog> {
    let failed = regex!(r"^test (.+?) \.\.\. FAILED$");
    let mut names = Vec::new();
    for l in &log.lines {
        if let Some(c) = failed.caps(l) {
            push_unique(&mut names, cap(&c, 1));
        }
    }
    if names.is_empty() {
        return None;
    }
    let section = log
        .find_from(0, |l| regex!(r"^---- .+ stdout ----$").is_match(l))
        .unwrap_or(0);
    let mut p = match log.find_from(section, is_panic_header) {
        Some(i) => panic(log, i, "cargo-test"),
        None => {
            let mut p = ParsedLog::new(LANG, "cargo-test");
            let msg = log
                .find_from(section, |l| l.starts_with("Error: "))
                .map_or("", |i| log.line(i).trim_start_matches("Error: "));
            p.set_error("test failure", msg);
            p
        }
    };
    p.failing_tests = names;
    Some(p)
}

/// A panic header at `i`, its message and the backtrace below it.
fn panic(log: &Log, i: usize, format: &str) -> ParsedLog {
    let mut p = ParsedLog::new(LANG, format);
    let l = log.line(i);
    let (loc, message) = if let Some(c) = regex!(r"panicked at '(.*)', (.+?):(\d+):(\d+)$").caps(l)
    {
        // Before Rust 1.73 the message was quoted on the header line.
        (
            Some(frame(
                LANG,
                cap(&c, 2),
                num(cap(&c, 3)),
                num(cap(&c, 4)),
                None,
            )),
            cap(&c, 1),
        )
    } else if let Some(c) = regex!(r"panicked at (.+?):(\d+):(\d+):$").caps(l) {
        (
            Some(frame(
                LANG,
                cap(&c, 1),
                num(cap(&c, 2)),
                num(cap(&c, 3)),
                None,
            )),
            log.line(i + 1),
        )
    } else {
        (None, log.line(i + 1))
    };
    p.set_error("panic", message);
    let end = log
        .find_from(i + 1, |l| is_panic_header(l) || l.starts_with("---- "))
        .unwrap_or(log.lines.len());
    if let Some(b) = log.find_from(i + 1, |l| l.trim() == "stack backtrace:")
        && b < end
    {
        p.frames = backtrace(&log.lines, b + 1);
    }
    if !p.frames.iter().any(|f| f.in_project) {
        p.location = loc;
    }
    p
}

/// `   4: crate::f` (or `0x… - crate::f` with `RUST_BACKTRACE=full`) with an optional
/// `at path:line:col` line below.
fn backtrace(lines: &[&str], from: usize) -> Vec<Frame> {
    let entry = regex!(r"^\s*\d+:\s+(?:0x[0-9a-fA-F]+ - )?(.*)$");
    let at = regex!(r"^\s+at (.+?):(\d+)(?::(\d+))?$");
    // (function, (file, line, column) of its `at` line).
    type Entry<'a> = (&'a str, Option<(&'a str, Option<u32>, Option<u32>)>);
    let mut raw: Vec<Entry> = Vec::new();
    for l in lines.iter().skip(from) {
        if let Some(c) = at.caps(l) {
            if let Some(last) = raw.last_mut() {
                last.1 = Some((cap(&c, 1), num(cap(&c, 2)), num(cap(&c, 3))));
            }
        } else if let Some(c) = entry.caps(l) {
            raw.push((cap(&c, 1), None));
        } else {
            break;
        }
    }
    raw.into_iter()
        .map(|(function, at)| {
            let (file, line, col) = at.unwrap_or(("", None, None));
            // `RUST_BACKTRACE=full` adds the symbol hash: `divide::share::h8336fb1fda29cf77`.
            let function = regex!(r"::h[0-9a-f]{16}$").replace(function, "");
            frame(LANG, file, line, col, Some(&function))
        })
        .collect()
}

/// The first rustc error with a ` --> file:l:c` location.
fn rustc(log: &Log) -> Option<ParsedLog> {
    let head = regex!(r"^error(?:\[(E\d{4})\])?: (.*)$");
    let arrow = regex!(r"^\s*--> (.+?):(\d+):(\d+)$");
    for (i, l) in log.lines.iter().enumerate() {
        let Some(h) = head.caps(l) else { continue };
        let Some(a) = (i + 1..i + 4).find_map(|j| arrow.caps(log.line(j))) else {
            continue;
        };
        let mut p = ParsedLog::new(LANG, "rustc");
        p.location = Some(frame(
            LANG,
            cap(&a, 1),
            num(cap(&a, 2)),
            num(cap(&a, 3)),
            None,
        ));
        let code = cap(&h, 1);
        let msg = cap(&h, 2);
        p.set_error(
            if code.is_empty() {
                "compile error"
            } else {
                code
            },
            msg,
        );
        p.category = if code.is_empty() {
            uncoded_category(msg)
        } else {
            code_category(code)
        };
        return Some(p);
    }
    None
}

fn code_category(code: &str) -> Category {
    match code {
        "E0432" | "E0433" | "E0463" | "E0583" | "E0601" => Category::Import,
        "E0425" | "E0412" | "E0411" | "E0422" | "E0423" | "E0424" | "E0531" | "E0603" | "E0405" => {
            Category::Name
        }
        _ => Category::Type,
    }
}

fn uncoded_category(msg: &str) -> Category {
    if regex!(r"^(?:expected|unexpected|unterminated|unclosed|mismatched closing|this file contains an unclosed|missing|unknown start of token)").is_match(msg) {
        Category::Syntax
    } else if msg.starts_with("cannot find") {
        Category::Name
    } else if msg.starts_with("unresolved import") {
        Category::Import
    } else {
        Category::Type
    }
}

/// Cargo's own failures (resolution, manifest, linking): an `error:` line in a cargo log
/// that is not one of the summaries printed after compiler errors.
fn cargo_error(log: &Log) -> Option<ParsedLog> {
    let cargo_log = [
        "Compiling ",
        "Cargo.toml",
        "crates.io",
        "required by package `",
        "cargo ",
    ]
    .iter()
    .any(|k| log.has(k));
    if !cargo_log {
        return None;
    }
    let summary = regex!(
        r"^(?:could not compile|aborting due to|test failed, to rerun|\d+ targets? failed|Some errors have)"
    );
    let msg = log
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("error: ").filter(|m| !summary.is_match(m)))?;
    let mut p = ParsedLog::new(LANG, "cargo");
    if msg.starts_with("linking with") || msg.contains("undefined reference") {
        p.set_error("link error", msg);
        p.category = Category::Name;
        return Some(p);
    }
    p.set_error("build error", msg);
    p.category = if regex!(r"no matching package|failed to select a version|failed to download|failed to get|not found in registry|could not find .* in registry").is_match(msg) {
        Category::Import
    } else if regex!(r"manifest|Cargo\.toml|failed to parse").is_match(msg) {
        Category::FileConfig
    } else {
        Category::Environment
    };
    Some(p)
}
