//! Ruby: uncaught exceptions (`file:line:in 'meth': msg (Class)` plus `from` lines, both
//! quote styles, the 2.x reversed "Traceback" form), RSpec failure reports and minitest
//! failures.

use proto::messages::{Frame, Language};

use crate::ParsedLog;
use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};

const LANG: Language = Language::Ruby;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    rspec(log)
        .or_else(|| minitest(log))
        .or_else(|| uncaught(log))
}

/// RSpec's report: `Failures:`, then per example `  1) Description`, `Failure/Error: code`,
/// the error (`NoMethodError:` + message, or an expectation's `expected: … got: …`) and
/// `# ./path:line:in …` frames; `Failed examples:` lists `rspec ./spec/x_spec.rb:13 # …`.
fn rspec(log: &Log) -> Option<ParsedLog> {
    let start = log.find_from(0, |l| l == "Failures:")?;
    let example = regex!(r"^\s+\d+\) (.+)$");
    let first = log.find_from(start + 1, |l| example.is_match(l))?;
    let fe = log.find_from(first + 1, |l| l.trim_start().starts_with("Failure/Error:"))?;
    if fe > first + 3 {
        return None;
    }
    let mut p = ParsedLog::new(LANG, "rspec");
    let end = log
        .find_from(first + 1, |l| {
            example.is_match(l) || l.starts_with("Finished in ")
        })
        .unwrap_or(log.lines.len());
    let block = log.lines.get(fe + 1..end).unwrap_or_default();
    let frame_line = regex!(r"^\s+# (.+)$");
    let class_line = regex!(r"^\s+([A-Z]\w*(?:::[A-Z]\w*)*):$");
    let mut error = None;
    for (k, l) in block.iter().enumerate() {
        if frame_line.is_match(l) {
            break;
        }
        if let Some(c) = class_line.caps(l) {
            let msg = block.get(k + 1).map_or("", |m| m.trim());
            error = Some((cap(&c, 1).to_string(), msg.to_string()));
            break;
        }
    }
    match error {
        Some((class, msg)) => p.set_error(&class, &msg),
        None => {
            // An expectation: the report names no class; its first line is the message.
            let msg = block
                .iter()
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("");
            p.set_error("RSpec::Expectations::ExpectationNotMetError", msg);
        }
    }
    p.frames = block
        .iter()
        .filter_map(|l| frame_line.caps(l).and_then(|c| location(cap(&c, 1))))
        .collect();
    let listed = regex!(r"^rspec (\S+:\d+) # (.+)$");
    for l in &log.lines {
        if let Some(c) = listed.caps(l) {
            push_unique(&mut p.failing_tests, cap(&c, 2));
        }
    }
    if p.failing_tests.is_empty()
        && let Some(c) = example.caps(log.line(first))
    {
        push_unique(&mut p.failing_tests, cap(&c, 1));
    }
    Some(p)
}

/// `path:line:in 'meth'` (also `` `meth' ``); the path may be `<internal:…>`.
fn location(s: &str) -> Option<Frame> {
    let c = regex!(r"^(.+?):(\d+):in [`'](.*)'$").caps(s.trim())?;
    Some(frame(
        LANG,
        cap(&c, 1),
        num(cap(&c, 2)),
        None,
        Some(cap(&c, 3)),
    ))
}

fn uncaught(log: &Log) -> Option<ParsedLog> {
    let first = regex!(r"^(.+?):(\d+):in [`'](.+?)': (.*) \(([A-Z][\w:]*)\)$");
    let (h, c) = log
        .lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| first.caps(l).map(|c| (i, c)))?;
    let mut p = ParsedLog::new(LANG, "ruby");
    let class = cap(&c, 5);
    let message = cap(&c, 4);
    p.frames.push(frame(
        LANG,
        cap(&c, 1),
        num(cap(&c, 2)),
        None,
        Some(cap(&c, 3)),
    ));

    // Ruby ≥ 2.5 on a terminal printed the trace reversed above the error: `  2: from …`.
    let numbered = regex!(r"^\s+\d+: from (.+)$");
    for l in log.lines.iter().take(h).rev() {
        match numbered.caps(l).and_then(|c| location(cap(&c, 1))) {
            Some(f) => p.frames.push(f),
            None => break,
        }
    }
    // Otherwise `\tfrom …` lines follow, after any message continuation and error_highlight.
    let from = regex!(r"^\s+from (.+)$");
    let mut started = false;
    for l in log.lines.iter().skip(h + 1) {
        match from.caps(l).and_then(|c| location(cap(&c, 1))) {
            Some(f) => {
                started = true;
                p.frames.push(f);
            }
            None if regex!(r"^\s+\.\.\. \d+ levels\.\.\.$").is_match(l) => {}
            None if started => break,
            None => {}
        }
    }
    // A SyntaxError from require names the broken file inside the message.
    if class == "SyntaxError"
        && let Some(s) = regex!(r"^(.+?\.rb):(\d+): ").caps(message)
    {
        p.location = Some(frame(LANG, cap(&s, 1), num(cap(&s, 2)), None, None));
    }
    p.set_error(class, message);
    Some(p)
}

/// Minitest: `  1) Failure:` / `  1) Error:` blocks.
fn minitest(log: &Log) -> Option<ParsedLog> {
    let block = regex!(r"^\s*\d+\) (Failure|Error):$");
    let mut p: Option<ParsedLog> = None;
    let mut names = Vec::new();
    for (i, l) in log.lines.iter().enumerate() {
        let Some(c) = block.caps(l) else { continue };
        let title = log.line(i + 1);
        if cap(&c, 1) == "Failure" {
            let Some(t) = regex!(r"^(.+?) \[(.+?):(\d+)\]:$").caps(title) else {
                continue;
            };
            push_unique(&mut names, cap(&t, 1));
            if p.is_none() {
                let mut r = ParsedLog::new(LANG, "minitest");
                r.location = Some(frame(LANG, cap(&t, 2), num(cap(&t, 3)), None, None));
                r.set_error("Minitest::Assertion", log.line(i + 2));
                p = Some(r);
            }
        } else {
            let name = title.trim_end_matches(':');
            push_unique(&mut names, name);
            if p.is_none() {
                let mut r = ParsedLog::new(LANG, "minitest");
                let (class, message) = log
                    .line(i + 2)
                    .split_once(": ")
                    .unwrap_or((log.line(i + 2), ""));
                // Ruby ≥ 3.1's error_highlight puts the code and a caret line before the
                // backtrace.
                r.frames = log
                    .lines
                    .iter()
                    .skip(i + 3)
                    .take_while(|l| !block.is_match(l))
                    .skip_while(|l| location(l).is_none())
                    .map_while(|l| location(l))
                    .collect();
                r.set_error(class.trim(), message);
                p = Some(r);
            }
        }
    }
    let mut p = p?;
    p.failing_tests = names;
    Some(p)
}
