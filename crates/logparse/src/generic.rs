//! The fallback for logs no parser recognises: the most error-like line as the message.

use proto::messages::{Category, Language};

use crate::ParsedLog;
use crate::lines::{Caps, Log, cap};

pub(crate) fn parse(log: &Log) -> ParsedLog {
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
