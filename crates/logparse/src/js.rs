//! JavaScript and TypeScript: Node/V8 uncaught errors (CJS and ESM stacks, `at async`,
//! `[cause]`, unhandled `'error'` events, heap OOM), `node --test` (TAP and spec reporters),
//! Jest, Vitest, and tsc diagnostics (`file(l,c): error TS…` and the pretty form).

use proto::messages::{Category, Frame, Language};

use crate::frames::{external, frame};
use crate::lines::{Caps, Log, cap, first_line, num, push_unique};
use crate::{MAX_CAUSE_DEPTH, ParsedLog};

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    jest(log)
        .or_else(|| vitest(log))
        .or_else(|| node_test_tap(log))
        .or_else(|| node_test_spec(log))
        .or_else(|| tsc(log))
        .or_else(|| v8_fatal(log))
        .or_else(|| node_uncaught(log))
}

/// TypeScript when the error points into a TypeScript source, else JavaScript.
fn language_of(files: &[&Frame]) -> Language {
    let ts = files.iter().filter(|f| f.in_project).any(|f| {
        let file = f.file.split('?').next().unwrap_or("");
        vocab::language_of(file) == Some(Language::TypeScript)
    });
    if ts {
        Language::TypeScript
    } else {
        Language::JavaScript
    }
}

fn finish(mut p: ParsedLog) -> ParsedLog {
    p.language = language_of(&p.location.iter().chain(&p.frames).collect::<Vec<_>>());
    p
}

/// An error header: `TypeError: msg`, `Error [ERR_X]: msg`, `RangeError [Error]: msg`,
/// `Uncaught Error: msg`, a bare `AbortError`. Returns (class, code, message).
fn header(l: &str) -> Option<(&str, &str, &str)> {
    let c = regex!(
        r"^(?:Uncaught )?((?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*)(?: \[([\w.]+)\])?(?:: (.*))?$"
    )
    .caps(l)?;
    let class = c.get(1)?.as_str();
    let errorish = class.ends_with("Error") || class.ends_with("Exception");
    errorish.then(|| (class, cap(&c, 2), cap(&c, 3)))
}

/// One V8 stack entry, without the leading `at `: `fn (file:l:c)`, `file:l:c`,
/// `async fn (file:l:c)`, `Array.map (<anonymous>)`, `fn [as alias] (node:x:1:2)`.
fn stack_entry(s: &str) -> Frame {
    let s = s.trim().trim_end_matches(" {").trim_end();
    let s = s.strip_prefix("async ").unwrap_or(s);
    let (function, location) = match s.strip_suffix(')').and_then(|x| x.split_once(" (")) {
        Some((f, loc)) => (Some(f), loc),
        None => (None, s),
    };
    let (file, line, col) = match regex!(r"^(.*?):(\d+)(?::(\d+))?$").caps(location) {
        Some(c) => (cap(&c, 1), num(cap(&c, 2)), num(cap(&c, 3))),
        None => (location, None, None),
    };
    frame(Language::JavaScript, file, line, col, function)
}

fn at_line(l: &str) -> Option<&str> {
    l.trim_start().strip_prefix("at ")
}

/// Stack entries from `lines` starting at the first `at` line (within `lookahead` lines),
/// continuing through "Emitted 'error' event … at:" and stopping at anything else. Returns
/// the frames and the index just after the stack.
fn stack(lines: &[&str], from: usize, lookahead: usize) -> (Vec<Frame>, usize) {
    let Some(start) = lines
        .iter()
        .skip(from)
        .take(lookahead)
        .position(|l| at_line(l).is_some())
        .map(|p| p + from)
    else {
        return (Vec::new(), from);
    };
    let mut frames = Vec::new();
    let mut i = start;
    while let Some(l) = lines.get(i) {
        if let Some(rest) = at_line(l) {
            frames.push(stack_entry(rest));
        } else if !l.starts_with("Emitted '") {
            break;
        }
        i += 1;
    }
    (frames, i)
}

/// A report for an error header plus the stack below it.
fn error_report(format: &str, header: (&str, &str, &str), frames: Vec<Frame>) -> ParsedLog {
    let (class, code, message) = header;
    let mut p = ParsedLog::new(Language::JavaScript, format);
    p.frames = frames;
    p.set_error(class, message);
    if matches!(code, "ERR_MODULE_NOT_FOUND" | "MODULE_NOT_FOUND") {
        p.category = Category::Import;
    }
    p
}

/// Whether the log looks like Node output at all: a `Node.js v` footer, a `node:` frame, or a
/// V8 frame pointing into a JavaScript/TypeScript file.
fn is_node(log: &Log) -> bool {
    log.lines.iter().any(|l| l.starts_with("Node.js v"))
        || log.lines.iter().any(|l| {
            at_line(l).is_some_and(|rest| {
                rest.contains("(node:")
                    || rest.starts_with("node:")
                    || regex!(r"\.(?:[cm]?[jt]sx?|vue|svelte)(?:\?[^:)]*)?:\d+:\d+\)?(?: \{)?$")
                        .is_match(rest)
            })
        })
}

fn node_uncaught(log: &Log) -> Option<ParsedLog> {
    if !is_node(log) {
        return None;
    }
    // The uncaught error is printed last; `[cause]` blocks are indented, so not candidates.
    // Prefer a header with a stack or a source banner over a stray `Error: …` line.
    let headers = || {
        (0..log.lines.len())
            .rev()
            .filter(|&i| header(log.line(i)).is_some())
    };
    let h = headers()
        .find(|&i| has_stack(&log.lines, i + 1, 40) || banner(log, i).is_some())
        .or_else(|| headers().next())?;
    let head = header(log.line(h))?;
    let (frames, end) = stack(&log.lines, h + 1, 40);
    let mut p = error_report("node", head, frames);
    if let Some(banner) = banner(log, h)
        && (p.error_type == "SyntaxError" || p.frames.is_empty())
    {
        p.location = Some(banner);
    }
    if opens_props(&log.lines, end)
        && let Some(props) = log.lines.get(end..)
    {
        apply_props(&mut p, props, 1);
    }
    Some(finish(p))
}

fn has_stack(lines: &[&str], from: usize, lookahead: usize) -> bool {
    lines
        .iter()
        .skip(from)
        .take(lookahead)
        .any(|l| at_line(l).is_some())
}

/// The source banner Node prints above an uncaught error: `file:line`, the source line, a
/// caret line, a blank line.
fn banner(log: &Log, h: usize) -> Option<Frame> {
    let caret = log.line(h.checked_sub(2)?);
    if !log.line(h - 1).is_empty() || caret.trim() != "^" && !caret.trim_end().ends_with('^') {
        return None;
    }
    let c = regex!(r"^(\S.*?):(\d+)$").caps(log.line(h.checked_sub(4)?))?;
    Some(frame(
        Language::JavaScript,
        cap(&c, 1),
        num(cap(&c, 2)),
        None,
        None,
    ))
}

/// Whether the stack ending before `end` is followed by a property block (`… {`).
fn opens_props(lines: &[&str], end: usize) -> bool {
    end.checked_sub(1)
        .and_then(|i| lines.get(i))
        .is_some_and(|l| l.ends_with('{'))
}

/// Reads the `{ code: 'X', [cause]: Error: … }` block printed after a stack: a `code`
/// sharpens the category, a `[cause]` becomes the cause.
fn apply_props(p: &mut ParsedLog, lines: &[&str], depth: usize) {
    let mut i = 0;
    while let Some(l) = lines.get(i) {
        let t = l.trim();
        if t == "}" && !l.starts_with(' ') || t.starts_with("Node.js v") {
            break;
        }
        if let Some(rest) = t.strip_prefix("[cause]: ")
            && depth <= MAX_CAUSE_DEPTH
            && let Some(head) = header(rest)
        {
            let (frames, end) = stack(lines, i + 1, 1);
            let mut cause = error_report(&p.format, head, frames);
            if opens_props(lines, end)
                && let Some(after) = lines.get(end..)
            {
                apply_props(&mut cause, after, depth + 1);
            }
            p.set_cause(finish(cause));
            i = end;
            continue;
        }
        if let Some(c) = regex!(r"^code: '(\w+)',?$").caps(t)
            && let Some(cat) = crate::category::by_message(cap(&c, 1))
            && matches!(p.category, Category::Runtime | Category::Type)
        {
            p.category = cat;
        }
        i += 1;
    }
}

/// `FATAL ERROR: Reached heap limit …` with V8's native stack.
fn v8_fatal(log: &Log) -> Option<ParsedLog> {
    let i = log.find_from(0, |l| l.starts_with("FATAL ERROR: "))?;
    if !log.has("JS stacktrace") && !log.has("[node]") && !log.has("JavaScript heap") {
        return None;
    }
    let mut p = ParsedLog::new(Language::JavaScript, "v8-fatal");
    p.set_error(
        "FATAL ERROR",
        log.line(i).trim_start_matches("FATAL ERROR: "),
    );
    let native = regex!(r"^\s*\d+: 0x[0-9a-fA-F]+\s*(.*?)\s*(?:\[([^\]]*)\])?$");
    p.frames = log
        .lines
        .iter()
        .skip(i + 1)
        .filter_map(|l| native.caps(l))
        .map(|c| external(cap(&c, 2), Some(cap(&c, 1)).filter(|f| !f.is_empty())))
        .collect();
    Some(p)
}

fn tsc(log: &Log) -> Option<ParsedLog> {
    let plain = regex!(r"^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$");
    let pretty = regex!(r"^(.+?):(\d+):(\d+) - error (TS\d+): (.*)$");
    let c = log
        .lines
        .iter()
        .find_map(|l| plain.caps(l).or_else(|| pretty.caps(l)))?;
    let mut p = ParsedLog::new(Language::TypeScript, "tsc");
    let loc = frame(
        Language::TypeScript,
        cap(&c, 1),
        num(cap(&c, 2)),
        num(cap(&c, 3)),
        None,
    );
    p.location = Some(loc);
    p.set_error(cap(&c, 4), cap(&c, 5));
    p.category = ts_category(cap(&c, 4), cap(&c, 5));
    Some(p)
}

fn ts_category(code: &str, message: &str) -> Category {
    let n: u32 = code.trim_start_matches("TS").parse().unwrap_or(0);
    match n {
        2307 | 2305 | 2614 | 2724 | 2792 | 7016 => Category::Import,
        2304 | 2552 | 2339 | 2551 | 2503 | 2582 | 2708 => Category::Name,
        1000..=1999 => Category::Syntax,
        5000..=6999 => Category::FileConfig,
        _ if message.starts_with("Cannot find module") => Category::Import,
        _ => Category::Type,
    }
}

/// Jest: `● describe › test` blocks with the message, a code frame and `at` lines.
fn jest(log: &Log) -> Option<ParsedLog> {
    let bullet = regex!(r"^\s*● (.+)$");
    if !log.lines.iter().any(|l| bullet.is_match(l))
        || !log
            .lines
            .iter()
            .any(|l| l.starts_with("Tests:") || l.starts_with("FAIL "))
    {
        return None;
    }
    let mut p = ParsedLog::new(Language::JavaScript, "jest");
    let mut suite = "";
    let mut first: Option<usize> = None;
    for (i, l) in log.lines.iter().enumerate() {
        if let Some(f) = l.strip_prefix("FAIL ") {
            suite = f.trim();
        } else if let Some(c) = bullet.caps(l) {
            let name = cap(&c, 1);
            if name.starts_with("Console") {
                continue;
            }
            let name = if name == "Test suite failed to run" {
                suite
            } else {
                name
            };
            push_unique(&mut p.failing_tests, name);
            first = first.or(Some(i));
        }
    }
    let first = first?;
    let end = log
        .find_from(first + 1, |l| {
            bullet.is_match(l) || l.starts_with("Test Suites:")
        })
        .unwrap_or(log.lines.len());
    let block = log.lines.get(first + 1..end).unwrap_or_default();
    let msg = block
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let (class, code, message) = match header(msg) {
        Some(h) => h,
        None if msg.starts_with("expect(") => ("AssertionError", "", msg),
        None => ("Error", "", msg),
    };
    p.frames = block
        .iter()
        .filter_map(|l| at_line(l))
        .map(stack_entry)
        .collect();
    p.set_error(class, message);
    if code == "ERR_MODULE_NOT_FOUND" {
        p.category = Category::Import;
    }
    Some(finish(p))
}

/// Vitest: ` FAIL  file > describe > test` blocks, frames as ` ❯ [fn] file:l:c`.
fn vitest(log: &Log) -> Option<ParsedLog> {
    let fail = regex!(r"^\s*FAIL\s+(.+?)(?:\s+\[ .+ \])?$");
    if !log.has("⎯") && !log.has(" RUN  v") {
        return None;
    }
    let fails: Vec<(usize, &str)> = log
        .lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| fail.caps(l).map(|c| (i, cap(&c, 1))))
        .collect();
    let &(first, _) = fails.first()?;
    let mut p = ParsedLog::new(Language::JavaScript, "vitest");
    for (_, name) in &fails {
        push_unique(&mut p.failing_tests, name);
    }
    let end = log
        .find_from(first + 1, |l| l.starts_with('⎯') || fail.is_match(l))
        .unwrap_or(log.lines.len());
    let block = log.lines.get(first + 1..end).unwrap_or_default();
    let msg = block
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let (class, _, message) = header(msg).unwrap_or(("Error", "", msg));
    let entry = regex!(r"^\s*❯ (?:(\S+) )?(\S+?):(\d+):(\d+)$");
    p.frames = block
        .iter()
        .filter_map(|l| entry.caps(l))
        .map(|c| {
            let function = c.get(1).map(|m| m.as_str());
            frame(
                Language::JavaScript,
                cap(&c, 2),
                num(cap(&c, 3)),
                num(cap(&c, 4)),
                function,
            )
        })
        .collect();
    p.set_error(class, message);
    Some(finish(p))
}

/// `node --test` TAP: `not ok N - name` with a YAML block (`error`, `name`, `stack`).
fn node_test_tap(log: &Log) -> Option<ParsedLog> {
    let not_ok = regex!(r"^(\s*)not ok \d+ - (.*?)(?:\s+# .*)?$");
    if !log.has("TAP version") && !log.has("# Subtest:") {
        return None;
    }
    let mut p = ParsedLog::new(Language::JavaScript, "node-test-tap");
    let mut have_error = false;
    for (i, l) in log.lines.iter().enumerate() {
        let Some(c) = not_ok.caps(l) else {
            continue;
        };
        let indent = cap(&c, 1).len();
        let yaml = yaml_block(&log.lines, i + 1, indent + 2);
        let get = |k: &str| {
            yaml.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_slice())
        };
        if get("failureType")
            .and_then(|v| v.first())
            .is_some_and(|v| v.contains("subtestsFailed"))
        {
            continue;
        }
        push_unique(&mut p.failing_tests, cap(&c, 2));
        if have_error {
            continue;
        }
        have_error = true;
        let one = |k: &str| get(k).and_then(|v| v.first()).map_or("", |v| unquote(v));
        let class = Some(one("name"))
            .filter(|n| !n.is_empty())
            .unwrap_or("Error");
        p.frames = get("stack")
            .unwrap_or_default()
            .iter()
            .map(|s| stack_entry(s))
            .collect();
        p.set_error(class, one("error"));
    }
    (!p.failing_tests.is_empty()).then(|| finish(p))
}

/// The `---` … `...` YAML block of a TAP result at `indent`: each key with its value lines
/// (one for `key: value`, the indented lines for `key: |-`).
fn yaml_block<'a>(lines: &[&'a str], from: usize, indent: usize) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    if lines.get(from).map(|l| l.trim()) != Some("---") {
        return out;
    }
    for l in lines.iter().skip(from + 1) {
        let depth = l.len() - l.trim_start().len();
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if t == "..." && depth <= indent {
            break;
        }
        if depth == indent
            && let Some((k, v)) = t.split_once(':')
        {
            let v = v.trim();
            let value = if v.starts_with('|') || v.starts_with('>') {
                vec![]
            } else {
                vec![v]
            };
            out.push((k, value));
        } else if depth > indent
            && let Some((_, v)) = out.last_mut()
        {
            v.push(t);
        } else if depth < indent {
            break;
        }
    }
    out
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('\'')
        .and_then(|x| x.strip_suffix('\''))
        .or_else(|| v.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
        .unwrap_or(v)
}

/// `node --test --test-reporter=spec`: `✖ name (1.2ms)` then the indented error and stack.
fn node_test_spec(log: &Log) -> Option<ParsedLog> {
    let cross = regex!(r"^\s*✖ (.+?)(?: \([\d.]+m?s\))?$");
    if !log.lines.iter().any(|l| l.trim_start().starts_with("ℹ ")) {
        return None;
    }
    let mut p = ParsedLog::new(Language::JavaScript, "node-test-spec");
    let mut first: Option<usize> = None;
    for (i, l) in log.lines.iter().enumerate() {
        if l.trim() == "✖ failing tests:" {
            break;
        }
        if let Some(c) = cross.caps(l) {
            push_unique(&mut p.failing_tests, cap(&c, 1));
            first = first.or(Some(i));
        }
    }
    let first = first?;
    let h = log.find_from(first + 1, |l| !l.trim().is_empty())?;
    let text = log.line(h).trim();
    let head = header(text).unwrap_or(("Error", "", first_line(text)));
    let (frames, _) = stack(&log.lines, h + 1, 40);
    let mut r = error_report("node-test-spec", head, frames);
    r.failing_tests = p.failing_tests;
    Some(finish(r))
}
