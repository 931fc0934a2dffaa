//! The fallback for logs no parser recognises: a GitHub Actions error annotation with its
//! location, else the most error-like line as the message.

use proto::messages::{Category, Language};

use crate::ParsedLog;
use crate::frames::frame;
use crate::lines::{Caps, Log, cap, num};

pub(crate) fn parse(log: &Log) -> ParsedLog {
    annotation(log).unwrap_or_else(|| error_like_line(log))
}

/// `::error file=src/app.ts,line=12,col=5::message`: a GitHub Actions workflow command, which
/// linters, type checkers and problem matchers print into job logs.
fn annotation(log: &Log) -> Option<ParsedLog> {
    if !log.has("::error ") {
        return None;
    }
    let re = regex!(
        r"^::error (?:[^:]*,)?file=([^,:]+)(?:,line=(\d+))?(?:,(?:col|column)=(\d+))?[^:]*::(.*)$"
    );
    let c = log.lines.iter().find_map(|l| re.caps(l.trim_start()))?;
    let file = cap(&c, 1);
    let language = vocab::language_of(&file.replace('\\', "/")).unwrap_or_default();
    let mut p = ParsedLog::new(language, "github-annotation");
    p.location = Some(frame(
        language,
        file,
        num(cap(&c, 2)),
        num(cap(&c, 3)),
        None,
    ));
    let message = cap(&c, 4);
    let error_type = regex!(r"\b([A-Z][\w.:]*(?:Error|Exception))\b")
        .caps(message)
        .map_or("", |e| cap(&e, 1));
    p.set_error(error_type, message);
    Some(p)
}

fn error_like_line(log: &Log) -> ParsedLog {
    let errorish = regex!(r"(?i)\b(?:error|exception|fatal|failed|failure|panic)\b");
    let line = log
        .lines
        .iter()
        .rev()
        .find(|l| errorish.is_match(l))
        .or_else(|| log.lines.iter().rev().find(|l| !l.trim().is_empty()))
        .map_or("", |l| l.trim());
    let mut p = ParsedLog::new(Language::Unknown, "unknown");
    p.error_type = regex!(r"\b([A-Z][\w.:]*(?:Error|Exception))\b")
        .caps(line)
        .map(|c| cap(&c, 1).to_string())
        .unwrap_or_default();
    p.message = line.to_string();
    p.category = Category::Other;
    p
}
