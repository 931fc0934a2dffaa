//! Unified diffs in an answer: git-style (`diff --git`, `index`, `--- a/`, `+++ b/`) and
//! plain (`--- path`, `+++ path`), fenced or not, and hunks whose file header is missing but
//! whose path is named just before. Each file becomes one normalised `Edit::UnifiedDiff`;
//! hunk counts are recomputed, since models miscount them. A hunk that stops short of its
//! declared counts at the end of the answer, or on a line that is not a diff line, is an
//! error: applying part of a change is worse than applying none.

use std::fmt::Write as _;

use super::clean::is_fence_line;
use super::doc::Doc;
use super::{Edit, ParseError, check_path};

struct Hunk {
    old_start: Option<u32>,
    new_start: Option<u32>,
    body: Vec<String>,
    context: String,
}

#[derive(Debug, PartialEq)]
enum End {
    /// The answer ended (or the fence holding the diff never closed).
    Eof,
    Fence,
    NextHunk,
    NextFile,
    /// A blank line not followed by more diff lines.
    Blank,
    /// A line that is not a diff line.
    Other(usize),
}

pub fn parse(doc: &Doc<'_>, hints: &mut Vec<String>) -> Result<Vec<Edit>, ParseError> {
    let lines = &doc.lines;
    let mut out = Vec::new();
    let mut i = 0;
    let mut git_paths: Option<(String, String)> = None;
    let mut last_end = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(rest) = l.strip_prefix("diff --git ") {
            git_paths = split_git_paths(rest);
            i += 1;
            continue;
        }
        if is_file_header(lines, i) {
            let old = header_path(&l[4..]);
            let new = header_path(&lines[i + 1][4..]);
            let (hunks, next) = hunks(doc, i + 2)?;
            i = next;
            last_end = next;
            let (old, new) = strip_ab(old, new);
            if let Some(e) = build(old, new, hunks)? {
                out.push(e);
            }
            git_paths = None;
            continue;
        }
        if parse_hunk_header(l).is_some() {
            // Hunks with no `---`/`+++` header: the path from `diff --git`, or named above.
            let path = git_paths
                .take()
                .map(|(_, b)| b)
                .or_else(|| doc.path_before(i, last_end));
            let (hunks, next) = hunks(doc, i)?;
            match path {
                Some(p) => {
                    if let Some(e) = build(Some(p.clone()), Some(p), hunks)? {
                        out.push(e);
                    }
                }
                None => hints.push(format!(
                    "the diff hunk at line {} has no file header (`--- a/PATH` and `+++ b/PATH`)",
                    i + 1
                )),
            }
            i = next.max(i + 1);
            last_end = i;
            continue;
        }
        i += 1;
    }
    Ok(out)
}

fn is_file_header(lines: &[&str], i: usize) -> bool {
    lines[i].starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ "))
}

/// `a/x b/y` from `diff --git a/x b/y` (paths without spaces).
fn split_git_paths(rest: &str) -> Option<(String, String)> {
    let mut parts = rest.split_whitespace();
    let a = parts.next()?;
    let b = parts.next()?;
    Some((
        a.strip_prefix("a/").unwrap_or(a).to_owned(),
        b.strip_prefix("b/").unwrap_or(b).to_owned(),
    ))
}

/// The path of a `---`/`+++` header, without a timestamp; `None` for `/dev/null`.
fn header_path(rest: &str) -> Option<String> {
    let p = rest.split('\t').next().unwrap_or(rest).trim();
    let p = p.trim_matches('"');
    if p == "/dev/null" || p.is_empty() {
        None
    } else {
        Some(p.to_owned())
    }
}

/// Drop git's `a/` and `b/` prefixes when the diff uses them.
fn strip_ab(old: Option<String>, new: Option<String>) -> (Option<String>, Option<String>) {
    let has_a = old.as_deref().is_none_or(|o| o.starts_with("a/"));
    let has_b = new.as_deref().is_none_or(|n| n.starts_with("b/"));
    if has_a && has_b {
        (
            old.map(|o| o.trim_start_matches("a/").to_owned()),
            new.map(|n| n.trim_start_matches("b/").to_owned()),
        )
    } else {
        (old, new)
    }
}

/// `(old_start, old_count, new_start, new_count, context)` of `@@ -a,b +c,d @@ ctx`. A
/// missing or unreadable count or start is `None`: models write `@@ -12 +12 @@`, `@@ @@` and
/// `@@ ... @@` meaning "somewhere here", not "one line".
#[allow(clippy::type_complexity)]
fn parse_hunk_header(
    line: &str,
) -> Option<(Option<u32>, Option<u32>, Option<u32>, Option<u32>, String)> {
    let rest = line.strip_prefix("@@")?;
    // `@@decorator` or `@@@` are not hunk headers.
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let (ranges, context) = match rest.find("@@") {
        Some(k) => (&rest[..k], rest[k + 2..].to_owned()),
        None => (rest, String::new()),
    };
    let mut old = (None, None);
    let mut new = (None, None);
    for token in ranges.split_whitespace() {
        let Some(sign) = token.chars().next() else {
            continue;
        };
        let nums = &token[sign.len_utf8()..];
        let mut parts = nums.splitn(2, ',');
        let start = parts.next().and_then(|s| s.parse::<u32>().ok());
        let count = parts.next().and_then(|s| s.parse::<u32>().ok());
        match sign {
            '-' => old = (start, count),
            '+' => new = (start, count),
            _ => {}
        }
    }
    Some((old.0, old.1, new.0, new.1, context))
}

fn hunks(doc: &Doc<'_>, mut i: usize) -> Result<(Vec<Hunk>, usize), ParseError> {
    let lines = &doc.lines;
    let mut out = Vec::new();
    while i < lines.len() {
        let Some((os, oc, ns, nc, context)) = parse_hunk_header(lines[i]) else {
            break;
        };
        let header_line = i;
        let declared = match (oc, nc) {
            (Some(o), Some(n)) => Some((o, n)),
            _ => None,
        };
        let (body, end, next) = body(doc, i + 1, declared);
        let (old_n, new_n) = counts(&body);
        if let Some((o, n)) = declared
            && (old_n < o || new_n < n)
        {
            let unclosed = doc.fence_at(header_line).is_some_and(|f| f.close.is_none());
            match end {
                End::Eof => {
                    return Err(ParseError::new(format!(
                        "the diff is cut off: the hunk at line {} declares {o} old and {n} new lines but has {old_n} and {new_n}{}",
                        header_line + 1,
                        if unclosed {
                            " and its code block is never closed"
                        } else {
                            ""
                        }
                    )));
                }
                End::Other(k) => {
                    return Err(ParseError::new(format!(
                        "malformed diff: line {} inside the hunk at line {} is neither context (` `), addition (`+`) nor removal (`-`): {:?}",
                        k + 1,
                        header_line + 1,
                        lines[k].chars().take(80).collect::<String>()
                    )));
                }
                // The hunk ended cleanly: the model miscounted.
                End::Fence | End::NextHunk | End::NextFile | End::Blank => {}
            }
        }
        out.push(Hunk {
            old_start: os,
            new_start: ns,
            body,
            context,
        });
        i = next;
        if end != End::NextHunk {
            break;
        }
    }
    Ok((out, i))
}

fn counts(body: &[String]) -> (u32, u32) {
    let mut old = 0;
    let mut new = 0;
    for l in body {
        match l.as_bytes().first() {
            Some(b' ') => {
                old += 1;
                new += 1;
            }
            Some(b'-') => old += 1,
            Some(b'+') => new += 1,
            _ => {}
        }
    }
    (old, new)
}

fn is_body_line(l: &str) -> bool {
    l.starts_with([' ', '+', '-', '\\'])
}

/// The lines of one hunk from line `i`, how the hunk ended, and the line after it.
fn body(doc: &Doc<'_>, mut i: usize, declared: Option<(u32, u32)>) -> (Vec<String>, End, usize) {
    let lines = &doc.lines;
    let fence_close = doc.fence_at(i).and_then(|f| f.close);
    let mut body: Vec<String> = Vec::new();
    // Running counts, so a long hunk is not recounted at every blank line.
    let mut tally = (0u32, 0u32);
    loop {
        let Some(&l) = lines.get(i) else {
            return (body, End::Eof, i);
        };
        if parse_hunk_header(l).is_some() {
            return (body, End::NextHunk, i);
        }
        if l.starts_with("diff --git ") || is_file_header(lines, i) {
            return (body, End::NextFile, i);
        }
        if is_fence_line(l) || fence_close == Some(i) {
            return (body, End::Fence, i);
        }
        if l.trim().is_empty() && !l.starts_with(' ') {
            // A blank line: an empty context line whose space was lost, or the diff's end.
            if declared == Some(tally) {
                return (body, End::Blank, i);
            }
            let next = (i + 1..lines.len()).find(|&k| !lines[k].trim().is_empty());
            match next {
                Some(k)
                    if is_body_line(lines[k])
                        && !is_file_header(lines, k)
                        && !lines[k].starts_with("diff --git ") =>
                {
                    // Every blank line up to the next diff line is an empty context line.
                    let blanks = (k - i) as u32;
                    body.extend((i..k).map(|_| " ".to_owned()));
                    tally = (tally.0 + blanks, tally.1 + blanks);
                    i = k;
                    continue;
                }
                None => return (body, End::Eof, i),
                _ => return (body, End::Blank, i),
            }
        }
        if is_body_line(l) {
            match l.as_bytes().first() {
                Some(b' ') => tally = (tally.0 + 1, tally.1 + 1),
                Some(b'-') => tally.0 += 1,
                Some(b'+') => tally.1 += 1,
                _ => {}
            }
            body.push(l.to_owned());
            i += 1;
            continue;
        }
        return (body, End::Other(i), i);
    }
}

fn build(
    old: Option<String>,
    new: Option<String>,
    hunks: Vec<Hunk>,
) -> Result<Option<Edit>, ParseError> {
    let hunks: Vec<Hunk> = hunks
        .into_iter()
        .filter(|h| h.body.iter().any(|l| l.starts_with(['+', '-'])))
        .collect();
    if hunks.is_empty() {
        return Ok(None);
    }
    let old = old.map(|p| check_path(&p)).transpose()?;
    let new = new.map(|p| check_path(&p)).transpose()?;
    if old.is_none() && new.is_none() {
        return Err(ParseError::new(
            "a diff has /dev/null as both its old and its new file",
        ));
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "--- {}",
        old.as_deref()
            .map_or("/dev/null".to_owned(), |p| format!("a/{p}"))
    );
    let _ = writeln!(
        text,
        "+++ {}",
        new.as_deref()
            .map_or("/dev/null".to_owned(), |p| format!("b/{p}"))
    );
    for h in &hunks {
        let (oc, nc) = counts(&h.body);
        let os = h.old_start.unwrap_or(if oc == 0 { 0 } else { 1 });
        let os = if oc == 0 { os } else { os.max(1) };
        let ns = h.new_start.unwrap_or(os);
        let ns = if nc == 0 { ns.min(os) } else { ns.max(1) };
        let _ = writeln!(text, "@@ -{os},{oc} +{ns},{nc} @@{}", h.context);
        for l in &h.body {
            text.push_str(l);
            text.push('\n');
        }
    }
    Ok(Some(Edit::UnifiedDiff { text }))
}

/// The file a normalised diff changes.
pub fn target_path(text: &str) -> Option<String> {
    let mut old = None;
    for l in text.lines() {
        if let Some(p) = l.strip_prefix("--- ") {
            old = header_path(p).map(|p| p.trim_start_matches("a/").to_owned());
        } else if let Some(p) = l.strip_prefix("+++ ") {
            return header_path(p)
                .map(|p| p.trim_start_matches("b/").to_owned())
                .or(old);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunk_headers() {
        assert_eq!(
            parse_hunk_header("@@ -1,3 +1,4 @@ def f():"),
            Some((Some(1), Some(3), Some(1), Some(4), " def f():".into()))
        );
        assert_eq!(
            parse_hunk_header("@@ -12 +12 @@"),
            Some((Some(12), None, Some(12), None, String::new()))
        );
        assert_eq!(
            parse_hunk_header("@@ @@"),
            Some((None, None, None, None, String::new()))
        );
        assert_eq!(
            parse_hunk_header("@@ ... @@"),
            Some((None, None, None, None, String::new()))
        );
        assert_eq!(parse_hunk_header("@@decorator"), None);
    }
}
