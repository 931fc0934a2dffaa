//! PHP: uncaught exceptions (`PHP Fatal error:  Uncaught X: msg in file:N` with `#N`
//! frames), other fatal and parse errors, and PHPUnit failures.

use proto::messages::{Category, Language};

use crate::ParsedLog;
use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num, push_unique};

const LANG: Language = Language::Php;

pub(crate) fn parse(log: &Log) -> Option<ParsedLog> {
    phpunit(log)
        .or_else(|| fatal(log))
        .or_else(|| laravel(log))
        .or_else(|| headerless(log))
}

/// A `#0 /path/file.php(26): fn()` trace pasted without the error above it: the frames say
/// where, though the error itself is lost.
fn headerless(log: &Log) -> Option<ParsedLog> {
    let start = log.find_from(0, |l| l.starts_with("#0 "))?;
    let frames = stack_trace(&log.lines, start);
    if frames.len() < 2 {
        return None;
    }
    let mut p = ParsedLog::new(LANG, "php");
    p.frames = frames;
    Some(p)
}

/// Laravel's log (Monolog's line format): `[2024-05-14 09:12:44] local.ERROR: msg
/// {"exception":"[object] (RuntimeException(code: 0): msg at /app/X.php:12)`, then
/// `[stacktrace]` and `#N` frames.
fn laravel(log: &Log) -> Option<ParsedLog> {
    if !log.has(r#"{"exception":"[object] ("#) {
        return None;
    }
    let head = regex!(
        r#"^\[\d{4}-\d{2}-\d{2}[ T][^\]]*\] [\w-]+\.(?:ERROR|CRITICAL|ALERT|EMERGENCY): .*?\{"exception":"\[object\] \(([\w\\]+)\(code: [^)]*\): (.*)$"#
    );
    let (i, c) = log
        .lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| head.caps(l).map(|c| (i, c)))?;
    let mut p = ParsedLog::new(LANG, "laravel-log");
    let rest = cap(&c, 2);
    match regex!(r"^(.*) at (.+?):(\d+)\)$").caps(rest) {
        Some(m) => {
            p.location = Some(frame(LANG, cap(&m, 2), num(cap(&m, 3)), None, None));
            p.set_error(cap(&c, 1), cap(&m, 1));
        }
        None => p.set_error(cap(&c, 1), rest),
    }
    if let Some(s) = log.find_from(i + 1, |l| l == "[stacktrace]") {
        p.frames = stack_trace(&log.lines, s + 1);
    }
    Some(p)
}

fn fatal(log: &Log) -> Option<ParsedLog> {
    // PHP's own error_log prefixes a date (`[14-May-2024 09:12:44 UTC] PHP Fatal error: …`),
    // possibly after output the script printed without a line break.
    let uncaught = regex!(r"^(?:.*?\[[^\]]*\] )?(?:PHP )?Fatal error:\s+Uncaught (.*)$");
    let other = regex!(
        r"^(?:.*?\[[^\]]*\] )?(?:PHP )?(Fatal error|Parse error):\s+(.*) in (.+?) on line (\d+)$"
    );
    let (i, l) = log
        .lines
        .iter()
        .enumerate()
        .find(|(_, l)| uncaught.is_match(l) || other.is_match(l))?;
    let mut p = ParsedLog::new(LANG, "php");
    if let Some(c) = uncaught.caps(l) {
        let rest = cap(&c, 1);
        match regex!(r"^([\w\\]+): (.*) in (.+?):(\d+)$").caps(rest) {
            Some(e) => {
                p.location = Some(frame(LANG, cap(&e, 3), num(cap(&e, 4)), None, None));
                p.set_error(cap(&e, 1), cap(&e, 2));
            }
            None => {
                // A multi-line message: the location comes from `thrown in … on line N`.
                let (class, message) = rest.split_once(": ").unwrap_or((rest, ""));
                p.set_error(class, message);
                p.location = log.lines.iter().skip(i).find_map(|l| {
                    let t = regex!(r"^\s+thrown in (.+?) on line (\d+)$").caps(l)?;
                    Some(frame(LANG, cap(&t, 1), num(cap(&t, 2)), None, None))
                });
            }
        }
        p.frames = stack_trace(&log.lines, i + 1);
    } else if let Some(c) = other.caps(l) {
        p.location = Some(frame(LANG, cap(&c, 3), num(cap(&c, 4)), None, None));
        p.set_error(cap(&c, 1), cap(&c, 2));
        if cap(&c, 1) == "Parse error" {
            p.category = Category::Syntax;
        }
    }
    // A warning printed before the fatal error is often the real cause (a file that could
    // not be opened, say).
    if p.category == Category::Runtime {
        let warning = regex!(r"^(?:PHP )?Warning:\s+(.*)$");
        if let Some(c) = log
            .lines
            .iter()
            .take(i)
            .filter_map(|l| warning.caps(l))
            .find_map(|w| crate::category::by_message(cap(&w, 1)))
        {
            p.category = c;
        }
    }
    Some(p)
}

/// `#0 /path/file.php(9): fn()` and `#1 [internal function]: fn()` until `#N {main}`.
fn stack_trace(lines: &[&str], from: usize) -> Vec<proto::messages::Frame> {
    let entry = regex!(r"^#\d+ (?:(\[internal function\])|(.+?)\((\d+)\)): (.*)$");
    let mut frames = Vec::new();
    for l in lines.iter().skip(from) {
        if l.trim() == "Stack trace:" {
            continue;
        }
        let Some(c) = entry.caps(l) else { break };
        let function = Some(cap(&c, 4));
        frames.push(match c.get(1) {
            Some(internal) => frame(LANG, internal.as_str(), None, None, function),
            None => frame(LANG, cap(&c, 2), num(cap(&c, 3)), None, function),
        });
    }
    frames
}

/// PHPUnit: `There was 1 error:` / `There were 2 failures:` then `1) Class::test` blocks
/// with the message and bare `/path/file.php:N` frames.
fn phpunit(log: &Log) -> Option<ParsedLog> {
    if !log.has("PHPUnit") {
        return None;
    }
    let section = regex!(r"^There (?:was|were) \d+ (?:errors?|failures?|risky tests?):$");
    let name = regex!(r"^\d+\) (.+)$");
    let location = regex!(r"^(.+?\.php):(\d+)$");
    let mut in_section = false;
    let mut names = Vec::new();
    let mut p: Option<ParsedLog> = None;
    for (i, l) in log.lines.iter().enumerate() {
        if section.is_match(l) {
            in_section = true;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(c) = name.caps(l) else { continue };
        push_unique(&mut names, cap(&c, 1));
        if p.is_some() {
            continue;
        }
        let mut r = ParsedLog::new(LANG, "phpunit");
        let head = log.line(i + 1);
        match regex!(r"^([\w\\]+): (.*)$").caps(head) {
            Some(e) if !head.starts_with("Failed asserting") => r.set_error(cap(&e, 1), cap(&e, 2)),
            _ => r.set_error("PHPUnit\\Framework\\ExpectationFailedException", head),
        }
        let end = log
            .find_from(i + 1, |l| {
                l == "--" || name.is_match(l) || section.is_match(l)
            })
            .unwrap_or(log.lines.len());
        r.frames = log
            .lines
            .get(i + 2..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|l| location.caps(l))
            .map(|c| frame(LANG, cap(&c, 1), num(cap(&c, 2)), None, None))
            .collect();
        p = Some(r);
    }
    let mut p = p?;
    p.failing_tests = names;
    Some(p)
}
