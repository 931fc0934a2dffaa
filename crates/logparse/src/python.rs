//! Python: tracebacks (chained, SyntaxError with and without a header, RecursionError),
//! pytest in its output styles (`--tb=long/short/line/native`, `-q`, `-v`, collection
//! errors), and unittest.

use proto::messages::{Category, Language};

use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};
use crate::{MAX_CAUSE_DEPTH, ParsedLog};

const LANG: Language = Language::Python;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    pytest(log)
        .or_else(|| unittest(log))
        .or_else(|| {
            // A traceback pasted with pytest's summary lines: the tests come from those.
            let mut p = traceback_log(log)?;
            if p.failing_tests.is_empty()
                && let Some(s) = summary_lines_only(log)
            {
                p.failing_tests = s.failing_tests;
            }
            Some(p)
        })
        .or_else(|| summary_lines_only(log))
}

/// One printed traceback: frames outermost first, as Python prints them.
#[derive(Default)]
struct Traceback {
    frames: Vec<proto::messages::Frame>,
    error_type: String,
    message: String,
    /// Printed after "During handling…" or "The above exception was the direct cause…".
    chained: bool,
}

fn file_line(l: &str) -> Option<regex::Captures<'_>> {
    regex!(r#"^\s*File "(.+)", line (\d+)(?:, in (.+))?$"#).caps(l)
}

/// `KeyError: 'port'`, `json.decoder.JSONDecodeError: ...`, a bare `MemoryError`.
fn exception_line(l: &str) -> Option<(&str, &str)> {
    let c = regex!(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)(?:: ?(.*))?$").caps(l)?;
    Some((c.get(1)?.as_str(), cap(&c, 2)))
}

/// Every traceback in `lines`, in order.
fn tracebacks(lines: &[&str]) -> Vec<Traceback> {
    let mut out = Vec::new();
    let mut current: Option<Traceback> = None;
    let mut chain_pending = false;
    for &l in lines {
        let t = l.trim_start();
        if t == "Traceback (most recent call last):" {
            current = Some(Traceback {
                chained: std::mem::take(&mut chain_pending),
                ..Traceback::default()
            });
        } else if let Some(c) = file_line(l) {
            let tb = current.get_or_insert_with(|| Traceback {
                chained: std::mem::take(&mut chain_pending),
                ..Traceback::default()
            });
            tb.frames.push(frame(
                LANG,
                cap(&c, 1),
                num(cap(&c, 2)),
                None,
                c.get(3).map(|m| m.as_str()),
            ));
        } else if current.is_some() && (l.is_empty() || l.starts_with([' ', '\t'])) {
            // Source lines, carets, "[Previous line repeated N more times]".
        } else if let Some((mut tb, (ty, msg))) = current.take().zip(exception_line(l)) {
            tb.error_type = ty.to_string();
            tb.message = msg.to_string();
            out.push(tb);
        } else if t.starts_with("During handling of the above exception")
            || t.starts_with("The above exception was the direct cause")
        {
            chain_pending = true;
        } else if !t.is_empty() {
            chain_pending = false;
        }
    }
    out
}

/// The last traceback of `tbs` with its chained causes.
fn report(tbs: &[Traceback], format: &str) -> Option<ParsedLog> {
    let (last, earlier) = tbs.split_last()?;
    let mut p = from_traceback(last, format);
    if last.chained {
        // Build the cause chain innermost-last, capped.
        let mut chain: Vec<ParsedLog> = Vec::new();
        let mut rest = earlier;
        while let Some((tb, before)) = rest.split_last() {
            chain.push(from_traceback(tb, format));
            if !tb.chained || chain.len() == MAX_CAUSE_DEPTH {
                break;
            }
            rest = before;
        }
        let mut cause: Option<ParsedLog> = None;
        for mut c in chain.into_iter().rev() {
            if let Some(inner) = cause.take() {
                c.set_cause(inner);
            }
            cause = Some(c);
        }
        if let Some(c) = cause {
            p.set_cause(c);
        }
    }
    Some(p)
}

fn from_traceback(tb: &Traceback, format: &str) -> ParsedLog {
    let mut p = ParsedLog::new(LANG, format);
    p.frames = tb.frames.iter().rev().cloned().collect();
    p.set_error(&tb.error_type, &tb.message);
    // os.environ["X"] with X unset: a KeyError raised in os's __getitem__.
    if p.error_type == "KeyError"
        && p.frames
            .iter()
            .any(|f| f.file == "<frozen os>" || f.file.ends_with("/os.py"))
    {
        p.category = Category::Environment;
    }
    p
}

fn traceback_log(log: &Log) -> Option<ParsedLog> {
    if !log.has("Traceback (most recent call last):") && !log.has("  File \"") {
        return None;
    }
    report(&tracebacks(&log.lines), "python-traceback")
}

fn pytest(log: &Log) -> Option<ParsedLog> {
    let section = regex!(r"^=+ (FAILURES|ERRORS) =+$");
    let start = log.find_from(0, |l| section.is_match(l));
    let summary = log.find_from(0, |l| {
        regex!(r"^=+ short test summary info =+$").is_match(l)
    });
    if start.is_none() && summary.is_none() {
        return None;
    }
    let mut p = ParsedLog::new(LANG, "pytest");
    if let Some(start) = start {
        let end = log
            .find_from(start + 1, |l| regex!(r"^=+ .* =+$").is_match(l))
            .unwrap_or(log.lines.len());
        let body = log.lines.get(start + 1..end).unwrap_or_default();
        first_failure(body, &mut p);
    } else if let Some(summary) = summary {
        // A log cut at its top (a CI viewer's tail, a paste) lost the FAILURES header: the
        // failures' lines are what comes before the summary.
        first_failure(log.lines.get(..summary).unwrap_or_default(), &mut p);
    }
    p.failing_tests = failing_tests(log, summary);
    if p.error_type.is_empty()
        && let Some(s) = summary_lines_only(log)
    {
        p.set_error(&s.error_type, &s.message);
    }
    if p.error_type.is_empty() && p.failing_tests.is_empty() {
        return None;
    }
    Some(p)
}

/// A log pasted as pytest's short-summary lines alone (`FAILED tests/test_x.py::test_y -
/// assert 1 == 2`), without the FAILURES section or the summary's header: what a CI job's
/// annotations or an issue quote keep. The failing tests are the lines' ids; the error is
/// the first line's message: an exception name as printed, or `AssertionError` for the
/// `assert ...` pytest shows of a failed assert statement.
fn summary_lines_only(log: &Log) -> Option<ParsedLog> {
    let line = regex!(r"^(?:FAILED|ERROR) (\S+\.py(?:::\S+)?)(?: - (.*))?$");
    let mut p = ParsedLog::new(LANG, "pytest-summary");
    let mut first_message = None;
    for l in &log.lines {
        if let Some(c) = line.caps(l) {
            push_unique(&mut p.failing_tests, cap(&c, 1));
            if first_message.is_none() {
                first_message = Some(cap(&c, 2).to_string());
            }
        }
    }
    let message = first_message?;
    match exception_line(&message).filter(|(t, _)| looks_like_class(t)) {
        Some((t, m)) => p.set_error(t, m),
        None if message.starts_with("assert") => p.set_error("AssertionError", &message),
        None => p.set_error("test failure", &message),
    }
    Some(p)
}

/// Test ids from the short summary (`FAILED path::test - msg`, `ERROR path`), else from `-v`
/// result lines.
fn failing_tests(log: &Log, summary: Option<usize>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(s) = summary {
        for l in log.lines.iter().skip(s + 1) {
            if let Some(c) = regex!(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$").caps(l) {
                push_unique(&mut names, cap(&c, 1));
            } else if l.starts_with('=') {
                break;
            }
        }
    }
    if names.is_empty() {
        for l in &log.lines {
            if let Some(c) = regex!(r"^(\S+::\S+) (?:FAILED|ERROR)\b").caps(l) {
                push_unique(&mut names, cap(&c, 1));
            }
        }
    }
    names
}

/// Fills error and frames from the first failure of a FAILURES/ERRORS section body.
fn first_failure(body: &[&str], p: &mut ParsedLog) {
    let header = regex!(r"^_{3,} (.+?) _{3,}$");
    let entry = regex!(r"^([^\s:][^:]*\.py):(\d+):(?:\s+(.*))?$");
    let lines: &[&str] = match body.iter().position(|l| header.is_match(l)) {
        // Long/short styles: from the first header to the next one.
        Some(h) => {
            let rest = body.get(h + 1..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|l| header.is_match(l))
                .unwrap_or(rest.len());
            rest.get(..end).unwrap_or_default()
        }
        // `--tb=line`: `E` lines then one `path:N: ...` line per failure.
        None => {
            let end = body
                .iter()
                .position(|l| entry.is_match(l))
                .map_or(body.len(), |e| e + 1);
            body.get(..end).unwrap_or_default()
        }
    };

    // `--tb=native` prints real tracebacks.
    if let Some(tb) = report(&tracebacks(lines), "pytest") {
        p.frames = tb.frames;
        p.set_error(&tb.error_type, &tb.message);
        p.cause = tb.cause;
        return;
    }

    let mut entries = Vec::new();
    let mut e_line: Option<&str> = None;
    for l in lines {
        if let Some(c) = entry.caps(l) {
            entries.push((cap(&c, 1), num(cap(&c, 2)), cap(&c, 3)));
        } else if let Some(c) = regex!(r"^E\s+(.*)$").caps(l) {
            e_line = e_line.or(c.get(1).map(|m| m.as_str()));
        }
    }
    p.frames = entries
        .iter()
        .rev()
        .map(|(file, line, tail)| frame(LANG, file, *line, None, tail.strip_prefix("in ")))
        .collect();
    // The exception name printed at the end of the innermost entry (`path:9: AssertionError`).
    let tail_exception = entries
        .last()
        .and_then(|(_, _, tail)| exception_line(tail).filter(|(t, _)| looks_like_class(t)));
    let (ty, msg) = match e_line {
        Some(e) => match exception_line(e).filter(|(t, _)| looks_like_class(t)) {
            Some((t, m)) => (t, m),
            None if e.starts_with("assert") => ("AssertionError", e),
            None => (tail_exception.map_or("Error", |(t, _)| t), e),
        },
        None => tail_exception.unwrap_or(("", "")),
    };
    p.set_error(ty, msg);
}

/// `AssertionError`, `json.JSONDecodeError`: the last component starts upper-case.
fn looks_like_class(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
}

fn unittest(log: &Log) -> Option<ParsedLog> {
    let header = regex!(r"^(?:ERROR|FAIL): (.+)$");
    let is_rule =
        |l: &str| l.len() >= 20 && (l.bytes().all(|b| b == b'-') || l.bytes().all(|b| b == b'='));
    let blocks: Vec<(usize, &str)> = log
        .lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let c = header.caps(l)?;
            is_rule(log.line(i + 1)).then(|| (i, cap(&c, 1)))
        })
        .collect();
    let &(first, _) = blocks.first()?;
    let mut p = ParsedLog::new(LANG, "unittest");
    for (_, name) in &blocks {
        push_unique(&mut p.failing_tests, name);
    }
    let end = log.find_from(first + 2, is_rule).unwrap_or(log.lines.len());
    if let Some(tb) = report(
        &tracebacks(log.lines.get(first + 2..end).unwrap_or_default()),
        "unittest",
    ) {
        p.frames = tb.frames;
        p.error_type = tb.error_type;
        p.message = tb.message;
        p.category = tb.category;
        p.cause = tb.cause;
    }
    Some(p)
}
