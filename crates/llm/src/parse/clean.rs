//! Content cleaning: newlines, `<think>` sections, fences and prose around file content,
//! line numbers copied from the prompt's listings, and merge-conflict markers.

use super::doc::{fence_marker, find_fences};

/// CRLF and lone CR to LF, without a byte-order mark.
pub fn normalize_newlines(s: &str) -> String {
    let s = s.strip_prefix('\u{feff}').unwrap_or(s);
    if !s.contains('\r') {
        return s.to_owned();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// CodeLlama's `[PYTHON]` … `[/PYTHON]` wrappers as ordinary fences.
pub(crate) fn tags_to_fences(s: &str) -> String {
    let tag = |l: &str| -> Option<(bool, String)> {
        let t = l.trim();
        let inner = t.strip_prefix('[')?.strip_suffix(']')?;
        let (closing, word) = match inner.strip_prefix('/') {
            Some(w) => (true, w),
            None => (false, inner),
        };
        let ok = (1..=12).contains(&word.len())
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '+' || c == '#');
        ok.then(|| (closing, word.to_ascii_lowercase()))
    };
    let lines: Vec<&str> = s.split('\n').collect();
    let has_pair = |w: &str| {
        lines.iter().any(|l| tag(l) == Some((false, w.to_owned())))
            && lines.iter().any(|l| tag(l) == Some((true, w.to_owned())))
    };
    lines
        .iter()
        .map(|l| match tag(l) {
            Some((false, w)) if has_pair(&w) => format!("```{w}"),
            Some((true, w)) if has_pair(&w) => "```".to_owned(),
            _ => (*l).to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Remove reasoning sections: `<think>…</think>` (also `<thinking>`), a `</think>` whose
/// opening tag the chat template wrote (everything before it goes), and an unclosed
/// `<think>` (everything after it goes: the model was cut off while reasoning).
pub fn strip_think(s: &str) -> String {
    let mut s = s.to_owned();
    for (open, close) in [("<think>", "</think>"), ("<thinking>", "</thinking>")] {
        loop {
            let lower = s.to_ascii_lowercase();
            match (lower.find(open), lower.find(close)) {
                (Some(o), Some(c)) if o < c => s.replace_range(o..c + close.len(), ""),
                (_, Some(c)) => s.replace_range(..c + close.len(), ""),
                (Some(o), None) => s.truncate(o),
                (None, None) => break,
            }
        }
    }
    s
}

/// Clean a file's content as a model gave it (e.g. in JSON): unwrap a fence around it and
/// the prose introducing it, drop copied line numbers, resolve merge markers, end with one
/// newline.
pub fn clean_content(raw: &str) -> String {
    let text = normalize_newlines(raw);
    let unwrapped = unwrap_fence(&text).unwrap_or(text);
    clean_body(&unwrapped)
}

/// Clean the body of a fenced block (the fence is already gone).
pub(crate) fn clean_body(body: &str) -> String {
    let lines: Vec<&str> = body.split('\n').collect();
    let lines = strip_listing_numbers(&lines);
    let joined = lines.join("\n");
    let resolved = resolve_conflicts(&joined);
    let trimmed = resolved.trim_end_matches(['\n', ' ', '\t']);
    let trimmed = trimmed.trim_start_matches('\n');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
    }
}

/// The body of the one fence that holds the content, when the content is a fence with at
/// most a few lines of prose around it (an introduction ending with `:` before).
fn unwrap_fence(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let fences = find_fences(&lines, 0, lines.len());
    let [f] = fences.as_slice() else {
        return None;
    };
    let non_blank = |r: &[&str]| r.iter().filter(|l| !l.trim().is_empty()).count();
    let before = &lines[..f.open];
    let end = f.close.unwrap_or(lines.len());
    let after = if end < lines.len() {
        &lines[end + 1..]
    } else {
        &[][..]
    };
    let intro_ok = match before.iter().rev().find(|l| !l.trim().is_empty()) {
        None => true,
        Some(l) => l.trim_end().ends_with(':') && non_blank(before) <= 3,
    };
    if !intro_ok || non_blank(after) > 3 {
        return None;
    }
    Some(lines[f.open + 1..end].join("\n"))
}

/// When every non-blank line starts like the prompt's listings (`  12 | `, `  12>| `),
/// the model copied the numbers: remove them.
pub(crate) fn strip_listing_numbers<'a>(lines: &[&'a str]) -> Vec<&'a str> {
    fn numbered(l: &str) -> Option<&str> {
        let t = l.trim_start_matches(' ');
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let rest = &t[digits..];
        let rest = rest
            .strip_prefix(">| ")
            .or_else(|| rest.strip_prefix(" | "))
            .or_else(|| rest.strip_prefix(">|"))
            .or_else(|| rest.strip_prefix(" |"))?;
        Some(rest)
    }
    let non_blank: Vec<&&str> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    if non_blank.len() < 2 || !non_blank.iter().all(|l| numbered(l).is_some()) {
        return lines.to_vec();
    }
    lines.iter().map(|l| numbered(l).unwrap_or(l)).collect()
}

fn is_marker(line: &str, c: char) -> bool {
    let n = line.chars().take_while(|&x| x == c).count();
    n == 7 && line[n..].chars().next().is_none_or(|x| x == ' ')
}

/// Resolve merge-conflict markers left in content: keep the side after `=======` (the
/// proposed change), or the other side when that one is empty. A conflict without its
/// closing marker is left as it is: both sides are never dropped.
pub fn resolve_conflicts(s: &str) -> String {
    let lines: Vec<&str> = s.split('\n').collect();
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let sr = l
            .trim_start_matches('<')
            .trim()
            .eq_ignore_ascii_case("search");
        if !is_marker(l, '<') || sr {
            out.push(l);
            i += 1;
            continue;
        }
        // Find `|||||||` (diff3 base), `=======`, `>>>>>>>`.
        let mut base = None;
        let mut mid = None;
        let mut end = None;
        let mut j = i + 1;
        while j < lines.len() {
            let m = lines[j];
            if is_marker(m, '<') {
                break;
            }
            if mid.is_none() && base.is_none() && is_marker(m, '|') {
                base = Some(j);
            } else if mid.is_none() && m.trim_end() == "=======" {
                mid = Some(j);
            } else if mid.is_some() && is_marker(m, '>') {
                end = Some(j);
                break;
            }
            j += 1;
        }
        let (Some(mid), Some(end)) = (mid, end) else {
            out.push(l);
            i += 1;
            continue;
        };
        let ours = &lines[i + 1..base.unwrap_or(mid)];
        let theirs = &lines[mid + 1..end];
        let has_text = |side: &[&str]| side.iter().any(|x| !x.trim().is_empty());
        if has_text(theirs) || !has_text(ours) {
            out.extend_from_slice(theirs);
        } else {
            out.extend_from_slice(ours);
        }
        i = end + 1;
    }
    out.join("\n")
}

/// Whether a line opens or closes a fence (used to end diff hunks).
pub(crate) fn is_fence_line(line: &str) -> bool {
    fence_marker(line).is_some_and(|(indent, _, _, _)| indent == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_sections_go() {
        assert_eq!(
            strip_think("<think>\nhmm\n</think>\n\nanswer"),
            "\n\nanswer"
        );
        assert_eq!(strip_think("reasoning...\n</think>\nanswer"), "\nanswer");
        assert_eq!(strip_think("<think>\nstill thinking"), "");
        assert_eq!(strip_think("no tags"), "no tags");
    }

    #[test]
    fn conflicts_keep_the_proposed_side() {
        let s = "a\n<<<<<<< HEAD\nold\n=======\nnew\n>>>>>>> fix\nb";
        assert_eq!(resolve_conflicts(s), "a\nnew\nb");
        let s = "<<<<<<< HEAD\nonly ours\n=======\n>>>>>>> fix";
        assert_eq!(resolve_conflicts(s), "only ours");
        let s = "<<<<<<< HEAD\nunterminated\n=======\nx";
        assert_eq!(resolve_conflicts(s), s);
        let s = "<<<<<<< ours\nx\n||||||| base\ny\n=======\nz\n>>>>>>> theirs\n";
        assert_eq!(resolve_conflicts(s), "z\n");
    }

    #[test]
    fn listing_numbers_are_removed_only_when_all_lines_have_them() {
        let l = ["  1 | def f():", "  2>|     return 1"];
        assert_eq!(strip_listing_numbers(&l), ["def f():", "    return 1"]);
        let l = ["x = 1", "  2 | y"];
        assert_eq!(strip_listing_numbers(&l), l);
    }

    #[test]
    fn content_is_unwrapped_from_fences_and_prose() {
        assert_eq!(
            clean_content("Here is the file:\n```python\nx = 1\n```\n"),
            "x = 1\n"
        );
        assert_eq!(clean_content("x = 1"), "x = 1\n");
        let md =
            "# Title\n\nSome text.\n\n```sh\nmake\n```\n\nMore text.\nAnd more.\nEven more.\nLast.";
        assert_eq!(clean_content(md), format!("{md}\n"));
    }
}
