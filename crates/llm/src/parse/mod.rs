//! Parsing a model's answer into typed edits: unified diffs, search/replace blocks, whole
//! files (fenced, with a path), or JSON `{"files": [...]}` / `{"edits": [...]}`.
//!
//! Model answers are untrusted and often sloppy: prose around the edit, `<think>` sections,
//! CRLF, nested fences, miscounted hunk headers, trailing commas, merge markers. What can be
//! repaired is repaired; what cannot (a diff cut off mid-hunk, a block without a path, an
//! absolute path, prose only) is a [`ParseError`] with a reason, so the answer becomes a failed
//! candidate and never a crash. The caller should also treat an answer the server cut at
//! `max_tokens` ([`crate::ChatResponse::truncated`]) as suspect.

mod blocks;
mod clean;
mod diff;
mod doc;
mod json;

pub use clean::{clean_content, resolve_conflicts, strip_think};

use doc::Doc;

/// One change proposed by a model. Paths are relative to the project root and checked for
/// `..` and absolute forms; the patch module applies the full path policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// One file's unified diff, normalised: `--- a/P` / `+++ b/P` headers (or `/dev/null`),
    /// hunk counts recomputed from the hunk bodies.
    UnifiedDiff { text: String },
    /// Replace the exact text `search` in `path` with `replace` (empty `search`: a new file).
    SearchReplace {
        path: String,
        search: String,
        replace: String,
    },
    /// The complete new content of `path`.
    WholeFile { path: String, content: String },
}

impl Edit {
    /// The file the edit changes (for a diff, the new path, or the old one for a deletion).
    pub fn path(&self) -> Option<String> {
        match self {
            Edit::SearchReplace { path, .. } | Edit::WholeFile { path, .. } => Some(path.clone()),
            Edit::UnifiedDiff { text } => diff::target_path(text),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Edit::UnifiedDiff { .. } => "unified_diff",
            Edit::SearchReplace { .. } => "search_replace",
            Edit::WholeFile { .. } => "whole_file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable model answer: {reason}")]
pub struct ParseError {
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(reason: impl Into<String>) -> ParseError {
        ParseError {
            reason: reason.into(),
        }
    }
}

/// Parse an answer into edits. Formats are tried in order of how unambiguous they are: JSON
/// edits, search/replace blocks, unified diffs, then whole files in fenced blocks.
pub fn parse_response(answer: &str) -> Result<Vec<Edit>, ParseError> {
    let text = clean::normalize_newlines(answer);
    let had_think = text.to_ascii_lowercase().contains("think>");
    let text = clean::tags_to_fences(&strip_think(&text));
    if text.trim().is_empty() {
        return Err(ParseError::new(if had_think {
            "the answer is only reasoning (<think> was never closed, or nothing followed it); raise max_tokens or retry"
        } else {
            "the answer is empty"
        }));
    }
    let mut hints: Vec<String> = Vec::new();

    if let Some(edits) = json::parse(&text, &mut hints)? {
        return Ok(edits);
    }
    let doc = Doc::new(&text);
    let sr = blocks::search_replace(&doc)?;
    if !sr.is_empty() {
        return Ok(sr);
    }
    let diffs = diff::parse(&doc, &mut hints)?;
    if !diffs.is_empty() {
        return Ok(diffs);
    }
    let files = blocks::whole_files(&doc, &mut hints)?;
    if !files.is_empty() {
        return Ok(files);
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let mut reason = String::from(
        "no edit found: expected a unified diff, SEARCH/REPLACE blocks, a fenced file with its path, or JSON edits",
    );
    for h in hints {
        reason.push_str("; ");
        reason.push_str(&h);
    }
    reason.push_str(&format!("; the answer begins: {}", snippet(first, 120)));
    Err(ParseError::new(reason))
}

/// A path from a model, normalised (`\` to `/`, no leading `./`), or why it is refused.
pub fn check_path(raw: &str) -> Result<String, ParseError> {
    let p = raw
        .trim()
        .trim_matches(|c| c == '`' || c == '"' || c == '\'')
        .replace('\\', "/");
    let mut p = p.as_str();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    if p.is_empty() {
        return Err(ParseError::new("an edit has an empty file path"));
    }
    if p.chars().any(char::is_control) {
        return Err(ParseError::new(format!(
            "path {} contains control characters",
            snippet(p, 80)
        )));
    }
    let bytes = p.as_bytes();
    let drive = bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic();
    if p.starts_with('/') || p.starts_with('~') || drive {
        return Err(ParseError::new(format!(
            "path {p} is absolute; edits must use paths relative to the project root"
        )));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(ParseError::new(format!(
            "path {p} leaves the project (`..`)"
        )));
    }
    Ok(p.trim_end_matches('/').to_owned())
}

fn snippet(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    if out.is_empty() {
        "(nothing)".into()
    } else {
        format!("{out:?}")
    }
}
