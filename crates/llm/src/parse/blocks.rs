//! Search/replace blocks (`<<<<<<< SEARCH` … `=======` … `>>>>>>> REPLACE`, the path on a
//! line before or after `SEARCH`) and whole files (a fenced block whose path is in the info
//! string, on the line before, or in a `File:` comment on its first line).

use super::clean::{clean_body, resolve_conflicts, strip_listing_numbers};
use super::doc::{Doc, looks_like_path, path_from_info, path_from_line};
use super::{Edit, ParseError, check_path};

/// `Some(path named after the marker)` when `line` opens a search block.
fn search_marker(line: &str) -> Option<Option<String>> {
    let t = line.trim();
    let n = t.chars().take_while(|&c| c == '<').count();
    if !(5..=9).contains(&n) {
        return None;
    }
    let rest = t[n..].trim();
    let word_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
    let word = &rest[..word_len];
    if !(word.eq_ignore_ascii_case("search") || word.eq_ignore_ascii_case("original")) {
        return None;
    }
    let after = rest[word_len..].trim();
    Some(path_from_line(after))
}

fn is_divider(line: &str) -> bool {
    let t = line.trim();
    (5..=9).contains(&t.len()) && t.chars().all(|c| c == '=')
}

fn replace_marker(line: &str) -> bool {
    let t = line.trim();
    let n = t.chars().take_while(|&c| c == '>').count();
    if !(5..=9).contains(&n) {
        return false;
    }
    let rest = t[n..].trim_start();
    let upper: String = rest
        .chars()
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    upper.starts_with("REPLACE") || upper.starts_with("UPDATED")
}

fn join(lines: &[&str]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }
}

pub fn search_replace(doc: &Doc<'_>) -> Result<Vec<Edit>, ParseError> {
    let lines = &doc.lines;
    let mut out = Vec::new();
    let mut i = 0;
    let mut last_end = 0;
    let mut last_path: Option<String> = None;
    let mut n = 0;
    while i < lines.len() {
        let Some(named) = search_marker(lines[i]) else {
            i += 1;
            continue;
        };
        n += 1;
        let path = named
            .or_else(|| doc.path_before(i, last_end))
            .or_else(|| last_path.clone())
            .ok_or_else(|| {
                ParseError::new(format!(
                    "SEARCH/REPLACE block {n} (line {}) names no file: put the path on the line before `<<<<<<< SEARCH`",
                    i + 1
                ))
            })?;
        let path = check_path(&path)?;
        let mut j = i + 1;
        let mut search = Vec::new();
        while j < lines.len() && !is_divider(lines[j]) {
            if replace_marker(lines[j]) || search_marker(lines[j]).is_some() {
                return Err(ParseError::new(format!(
                    "SEARCH/REPLACE block {n} (line {}) has no `=======` line",
                    i + 1
                )));
            }
            search.push(lines[j]);
            j += 1;
        }
        if j >= lines.len() {
            return Err(ParseError::new(format!(
                "SEARCH/REPLACE block {n} (line {}) is cut off before its `=======` line",
                i + 1
            )));
        }
        j += 1;
        let mut replace = Vec::new();
        while j < lines.len() && !replace_marker(lines[j]) {
            if search_marker(lines[j]).is_some() {
                break;
            }
            replace.push(lines[j]);
            j += 1;
        }
        if j >= lines.len() || !replace_marker(lines[j]) {
            return Err(ParseError::new(format!(
                "SEARCH/REPLACE block {n} (line {}) is not closed with `>>>>>>> REPLACE` (answer cut off?)",
                i + 1
            )));
        }
        let search = join(&strip_listing_numbers(&search));
        let replace = resolve_conflicts(&join(&strip_listing_numbers(&replace)));
        out.push(Edit::SearchReplace {
            path: path.clone(),
            search,
            replace,
        });
        last_path = Some(path);
        i = j + 1;
        last_end = i;
    }
    Ok(out)
}

/// A path in a comment on a block's first line: `(path, labelled)`; a labelled one
/// (`# File: x`) is not part of the file and is dropped from the content.
fn comment_path(line: &str) -> Option<(String, bool)> {
    let t = line.trim();
    let leaders = ["<!--", "/*", "//", "#", "--", ";", "%"];
    let leader = leaders.iter().find(|l| t.starts_with(**l))?;
    let s = t[leader.len()..]
        .trim()
        .trim_end_matches("-->")
        .trim_end_matches("*/")
        .trim();
    let lower = s.to_ascii_lowercase();
    for label in ["file path:", "filepath:", "filename:", "file:", "path:"] {
        if lower.starts_with(label) {
            let p = s[label.len()..].trim().trim_matches('`');
            return looks_like_path(p).then(|| (p.to_owned(), true));
        }
    }
    looks_like_path(s).then(|| (s.to_owned(), false))
}

pub fn whole_files(doc: &Doc<'_>, hints: &mut Vec<String>) -> Result<Vec<Edit>, ParseError> {
    let lines = &doc.lines;
    let mut out: Vec<Edit> = Vec::new();
    let mut unnamed = 0;
    let mut prev_end = 0;
    for f in &doc.fences {
        let lang = f
            .info
            .split(|c: char| c.is_whitespace() || c == ':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let end = f.close.unwrap_or(lines.len());
        let floor = prev_end;
        prev_end = end + 1;
        if lang == "diff" || lang == "patch" {
            continue;
        }
        let body: Vec<&str> = lines[f.open + 1..end]
            .iter()
            .map(|l| dedent(l, f.indent))
            .collect();
        let mut skip_first = false;
        let mut path = path_from_info(&f.info).or_else(|| doc.path_before(f.open, floor));
        if path.is_none()
            && let Some((p, labelled)) = body.first().and_then(|l| comment_path(l))
        {
            path = Some(p);
            skip_first = labelled;
        }
        let Some(path) = path else {
            unnamed += 1;
            continue;
        };
        if f.close.is_none() {
            return Err(ParseError::new(format!(
                "the code block for {path} (line {}) is never closed: the answer was cut off",
                f.open + 1
            )));
        }
        let path = check_path(&path)?;
        let body = if skip_first { &body[1..] } else { &body[..] };
        let content = clean_body(&body.join("\n"));
        if content.is_empty() {
            hints.push(format!("the code block for {path} is empty"));
            continue;
        }
        out.retain(|e| e.path().as_deref() != Some(path.as_str()));
        out.push(Edit::WholeFile { path, content });
    }
    if out.is_empty() && unnamed > 0 {
        hints.push(format!(
            "{unnamed} code block(s) name no file: put the path on the line before each block, or answer with a diff"
        ));
    }
    Ok(out)
}

/// Remove up to `n` leading spaces (a fence indented in a list indents its body too).
fn dedent(line: &str, n: usize) -> &str {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    &line[spaces.min(n)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(search_marker("<<<<<<< SEARCH"), Some(None));
        assert_eq!(
            search_marker("<<<<<<< SEARCH app/x.py"),
            Some(Some("app/x.py".into()))
        );
        assert_eq!(search_marker("<<<<<<< HEAD"), None);
        assert!(replace_marker(">>>>>>> REPLACE"));
        assert!(!replace_marker(">>>>>>> main"));
        assert!(is_divider("======="));
    }

    #[test]
    fn comment_paths() {
        assert_eq!(
            comment_path("# File: app/calc.py"),
            Some(("app/calc.py".into(), true))
        );
        assert_eq!(
            comment_path("// src/app.js"),
            Some(("src/app.js".into(), false))
        );
        assert_eq!(comment_path("#!/usr/bin/env python"), None);
        assert_eq!(comment_path("x = 1"), None);
    }
}
