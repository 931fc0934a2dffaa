//! Ruby: uncaught exceptions (`file:line:in 'meth': msg (Class)` plus `from` lines, both
//! quote styles, the 2.x reversed "Traceback" form) and minitest failures.

use proto::messages::{Frame, Language};

use crate::ParsedLog;
use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};

const LANG: Language = Language::Ruby;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    minitest(log).or_else(|| uncaught(log))
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
                r.frames = log
                    .lines
                    .iter()
                    .skip(i + 3)
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
