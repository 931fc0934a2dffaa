//! Go: panics and goroutine traces, `go test` (text and `-json`), compiler and module
//! errors, and `log.Fatal` output under `go run`.

use proto::messages::{Category, Frame, Language};

use crate::ParsedLog;
use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};

const LANG: Language = Language::Go;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    test_json(log).or_else(|| from_text(log, ""))
}

/// Everything but `-json`: the same rules apply to the text `-json` carries.
fn from_text(log: &Log, format: &str) -> Option<ParsedLog> {
    let failing = failing_tests(log);
    let first_fail = log.find_from(0, |l| l.trim_start().starts_with("--- FAIL: "));
    let message = first_fail.and_then(|f| failure_message(log, f));
    let panicked = panic_line(log);
    // A test that panics is reported `--- FAIL: TestX` with the panic right below it.
    let panic_is_first_failure = match (panicked, first_fail) {
        (Some(pi), Some(fi)) => {
            pi > fi
                && log
                    .lines
                    .get(fi + 1..pi)
                    .is_some_and(|between| between.iter().all(|l| l.trim().is_empty()))
        }
        _ => true,
    };
    let mut p = match (panicked, message) {
        (Some(pi), _) if panic_is_first_failure => panic(log, pi),
        (_, Some(mi)) => test_failure(log, mi),
        (Some(pi), None) => panic(log, pi),
        (None, None) => headerless_panic(log)
            .or_else(|| build(log))
            .or_else(|| (!failing.is_empty()).then(|| test_failure_without_message(&failing)))
            .or_else(|| log_fatal(log))?,
    };
    if !failing.is_empty() {
        p.failing_tests = failing;
        if p.format == "go-panic" {
            p.format = "go-test".into();
        }
    }
    if !format.is_empty() {
        p.format = format.into();
    }
    Some(p)
}

/// The `file_test.go:N: msg` line of the failing test whose `--- FAIL:` line is at `fail`:
/// with `-v` the last such line of its `=== RUN` block (`t.Log` lines come before the
/// failing `t.Fatalf`), else the first one printed under the `--- FAIL:` line.
fn failure_message(log: &Log, fail: usize) -> Option<usize> {
    let msg = regex!(r"^\s+\S+\.go:\d+: ");
    let name = regex!(r"--- FAIL: (\S+)").caps(log.line(fail))?;
    let run = format!("=== RUN   {}", cap(&name, 1));
    match (0..fail).rev().find(|&j| log.line(j) == run) {
        Some(r) => (r + 1..fail).rev().find(|&j| msg.is_match(log.line(j))),
        None => (fail + 1..log.lines.len())
            .take_while(|&j| log.line(j).starts_with([' ', '\t']))
            .find(|&j| msg.is_match(log.line(j))),
    }
}

/// A goroutine dump pasted without its `panic:` line: the frames are still a panic's.
fn headerless_panic(log: &Log) -> Option<ParsedLog> {
    if !log.has(" [running]:") {
        return None;
    }
    let g = log.find_from(0, |l| regex!(r"^goroutine \d+ \[running\]:$").is_match(l))?;
    let frames = goroutine_frames(&log.lines, g + 1);
    if frames.is_empty() {
        return None;
    }
    let mut p = ParsedLog::new(LANG, "go-panic");
    p.set_error("panic", "");
    p.frames = frames;
    Some(p)
}

/// `--- FAIL: TestX (0.00s)`, nested subtests included, in report order.
fn failing_tests(log: &Log) -> Vec<String> {
    let mut names = Vec::new();
    for l in &log.lines {
        if let Some(c) = regex!(r"^\s*--- FAIL: (\S+)").caps(l) {
            push_unique(&mut names, cap(&c, 1));
        }
    }
    names
}

/// `    mathx_test.go:9: Abs(-2) = -2, want 2` (t.Errorf): the location and message.
fn test_failure(log: &Log, i: usize) -> ParsedLog {
    let mut p = ParsedLog::new(LANG, "go-test");
    if let Some(c) = regex!(r"^\s+(\S+\.go):(\d+): (.*)$").caps(log.line(i)) {
        p.location = Some(frame(LANG, cap(&c, 1), num(cap(&c, 2)), None, None));
        p.set_error("test failure", cap(&c, 3));
    }
    p
}

fn test_failure_without_message(failing: &[String]) -> ParsedLog {
    let mut p = ParsedLog::new(LANG, "go-test");
    p.set_error("test failure", failing.first().map_or("", |s| s.as_str()));
    p
}

fn panic_line(log: &Log) -> Option<usize> {
    let i = log.find_from(0, |l| {
        l.starts_with("panic: ") || l.starts_with("fatal error: ")
    })?;
    // "fatal error:" is a Go runtime crash only when a goroutine dump follows.
    let goroutines = || log.find_from(i, |l| l.starts_with("goroutine ")).is_some();
    (log.line(i).starts_with("panic: ") || goroutines()).then_some(i)
}

/// `panic: msg [recovered]`, then the trace of the panicking goroutine.
fn panic(log: &Log, i: usize) -> ParsedLog {
    let mut p = ParsedLog::new(LANG, "go-panic");
    let l = log.line(i);
    let (kind, msg) = match l.strip_prefix("panic: ") {
        Some(m) => ("panic", m),
        None => ("fatal error", l.trim_start_matches("fatal error: ")),
    };
    let msg = regex!(r" \[recovered(?:, repanicked)?\]$").replace(msg, "");
    p.set_error(kind, &msg);
    if let Some(g) = log.find_from(i + 1, |l| regex!(r"^goroutine \d+ \[.*\]:$").is_match(l)) {
        p.frames = goroutine_frames(&log.lines, g + 1);
    }
    p
}

/// Frames of one goroutine: a function line (or `created by …`) then a tab-indented
/// `file:line +0x..` line, until a line that is neither.
fn goroutine_frames(lines: &[&str], mut i: usize) -> Vec<Frame> {
    let location = regex!(r"^\t(.+?):(\d+)(?: \+0x[0-9a-fA-F]+)?$");
    let mut frames = Vec::new();
    while let (Some(func), Some(loc)) = (lines.get(i), lines.get(i + 1)) {
        if func.is_empty() || func.starts_with(['\t', ' ']) {
            break;
        }
        let Some(c) = location.caps(loc) else {
            break;
        };
        let function = match func.strip_prefix("created by ") {
            Some(f) => regex!(r" in goroutine \d+$").replace(f, "").into_owned(),
            None => regex!(r"\(.*\)$").replace(func, "").into_owned(),
        };
        frames.push(frame(
            LANG,
            cap(&c, 1),
            num(cap(&c, 2)),
            None,
            Some(&function),
        ));
        i += 2;
    }
    frames
}

/// Compiler diagnostics (`./main.go:9:20: msg`) and go-command errors (missing module,
/// `go: …`).
fn build(log: &Log) -> Option<ParsedLog> {
    let diag = regex!(r"^(\S+\.go):(\d+):(\d+): (.*)$");
    if let Some(c) = log.lines.iter().find_map(|l| diag.caps(l)) {
        let msg = cap(&c, 4);
        let mut p = ParsedLog::new(LANG, "go-build");
        p.location = Some(frame(
            LANG,
            cap(&c, 1),
            num(cap(&c, 2)),
            num(cap(&c, 3)),
            None,
        ));
        if is_module_error(msg) {
            p.set_error("build error", msg);
            p.category = Category::Import;
        } else {
            p.set_error("compile error", msg);
            p.category = compile_category(msg);
        }
        return Some(p);
    }
    // `go: downloading …` and `go: finding …` are progress, not errors.
    let c = log
        .lines
        .iter()
        .filter(|l| {
            l.starts_with("go: ")
                && !regex!(r"^go: (?:downloading|finding|extracting) ").is_match(l)
        })
        .find_map(|l| regex!(r"^go: (.*)$").caps(l))?;
    let msg = cap(&c, 1);
    let mut p = ParsedLog::new(LANG, "go-build");
    p.set_error("build error", msg);
    if is_module_error(msg) {
        p.category = Category::Import;
    } else if msg.contains("go.mod") {
        p.category = Category::FileConfig;
    }
    Some(p)
}

fn is_module_error(msg: &str) -> bool {
    regex!(
        r"no required module provides package|cannot find package|is not in (?:GOROOT|std)|missing go\.sum entry|cannot find module providing package|found, but does not contain package"
    )
    .is_match(msg)
}

fn compile_category(msg: &str) -> Category {
    if msg.starts_with("syntax error") {
        Category::Syntax
    } else if msg.contains("imported and not used") || msg.starts_with("could not import") {
        Category::Import
    } else if msg.starts_with("undefined:")
        || msg.contains("declared but not used")
        || msg.contains("declared and not used")
    {
        Category::Name
    } else {
        Category::Type
    }
}

/// `log.Fatal` under `go run`: `2024/01/02 15:04:05 msg` then `exit status 1`.
fn log_fatal(log: &Log) -> Option<ParsedLog> {
    if !log
        .lines
        .iter()
        .any(|l| regex!(r"^exit status \d+$").is_match(l))
    {
        return None;
    }
    let stamp = regex!(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)? (.*)$");
    let c = log.lines.iter().rev().find_map(|l| stamp.caps(l))?;
    let mut p = ParsedLog::new(LANG, "go-log");
    let rest = cap(&c, 1);
    match regex!(r"^(\S+\.go):(\d+): (.*)$").caps(rest) {
        Some(s) => {
            p.location = Some(frame(LANG, cap(&s, 1), num(cap(&s, 2)), None, None));
            p.set_error("error", cap(&s, 3));
        }
        None => p.set_error("error", rest),
    }
    Some(p)
}

/// `go test -json`: one test2json event per line. The `Output` strings are joined back into
/// the text run and parsed like it; failing tests also come from `fail` events.
fn test_json(log: &Log) -> Option<ParsedLog> {
    let action = regex!(r#""Action":"(\w+)""#);
    let test = regex!(r#""Test":"((?:[^"\\]|\\.)*)""#);
    let output = regex!(r#""Output":"((?:[^"\\]|\\.)*)""#);
    let mut text = String::new();
    let mut failed = Vec::new();
    let mut events = 0;
    for l in &log.lines {
        if !l.starts_with('{') {
            continue;
        }
        let Some(a) = action.caps(l) else {
            continue;
        };
        events += 1;
        if let Some(o) = output.caps(l) {
            text.push_str(&unescape_json(cap(&o, 1)));
        }
        if cap(&a, 1) == "fail"
            && let Some(t) = test.caps(l)
        {
            failed.push(unescape_json(cap(&t, 1)));
        }
    }
    if events == 0 {
        return None;
    }
    let inner = Log::new(&text);
    let mut p = from_text(&inner, "go-test-json")?;
    for name in &failed {
        push_unique(&mut p.failing_tests, name);
    }
    Some(p)
}

/// Decodes the escapes of a JSON string body (`\n`, `\t`, `\"`, `\\`, `\uXXXX`).
fn unescape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') | Some('f') => {}
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let c = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32);
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_unescape() {
        assert_eq!(
            unescape_json(r#"a\tb\n\"c\"\\ \u00e9 \u12"#),
            "a\tb\n\"c\"\\ é \u{FFFD}"
        );
    }
}
