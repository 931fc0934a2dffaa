//! Parsers for the three edit formats. They accept what models and tools really produce
//! (prose around the patch, wrong hunk counts, missing trailing context, CRLF) and never panic.

use super::{Edit, FileDiff, Hunk, Line, PatchError, Refusal};

fn perr(line: usize, reason: impl Into<String>) -> PatchError {
    PatchError::Parse {
        line: line + 1,
        reason: reason.into(),
    }
}

/// Lines without their terminators (`\n`; a `\r` before it stays part of the line).
fn split_lines(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.split('\n').collect();
    if v.last() == Some(&"") {
        v.pop();
    }
    v
}

pub(crate) fn is_search_marker(line: &str) -> bool {
    let t = line.trim_end();
    t.len() >= 12 && t.starts_with("<<<<<<<") && t.trim_start_matches('<').trim() == "SEARCH"
}

fn is_divider(line: &str) -> bool {
    let t = line.trim_end();
    t.len() >= 5 && t.len() <= 9 && t.chars().all(|c| c == '=')
}

fn is_replace_marker(line: &str) -> bool {
    let t = line.trim_end();
    t.starts_with(">>>>>>>") && t.trim_start_matches('>').trim() == "REPLACE"
}

/// The text has unified-diff structure.
pub(crate) fn looks_like_diff(text: &str) -> bool {
    let lines = split_lines(text);
    lines.iter().enumerate().any(|(i, l)| {
        l.starts_with("diff --git ")
            || l.starts_with("@@ -")
            || l.starts_with("GIT binary patch")
            || (l.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")))
    })
}

// ---------------------------------------------------------------- unified diff

/// Parses a unified diff: git-style (`diff --git`, extended headers, renames) or plain
/// (`---`/`+++`), one or many files, with any prose before, between and after the files.
/// Mode changes, symlinks, copies and binary patches are refused here.
pub fn parse_diff(text: &str) -> Result<Vec<FileDiff>, PatchError> {
    let lines = split_lines(text);
    let mut files = vec![];
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("GIT binary patch")
            || (l.starts_with("Binary files ") && l.trim_end().ends_with(" differ"))
        {
            return Err(PatchError::refused(binary_path(l), Refusal::Binary));
        }
        if let Some(rest) = l.strip_prefix("diff --git ") {
            let (f, next) = parse_git_file(&lines, i, rest)?;
            files.push(f);
            i = next;
            continue;
        }
        if l.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")) {
            let old = header_path(&l[4..], i)?;
            let new = header_path(&lines[i + 1][4..], i + 1)?;
            let git_prefixes = old.as_deref().is_none_or(|p| p.starts_with("a/"))
                && new.as_deref().is_none_or(|p| p.starts_with("b/"))
                && (old.is_some() || new.is_some());
            let (hunks, next) = parse_hunks(&lines, i + 2)?;
            if old.is_none() && new.is_none() {
                return Err(perr(i, "both sides of the file header are /dev/null"));
            }
            files.push(FileDiff {
                old_path: old,
                new_path: new,
                hunks,
                git_prefixes,
            });
            i = next;
            continue;
        }
        if l.starts_with("@@ -") {
            return Err(perr(i, "a hunk without a `--- file` / `+++ file` header"));
        }
        i += 1;
    }
    if files.is_empty() {
        return Err(PatchError::Empty(
            "no `diff --git` or `---`/`+++` file headers".into(),
        ));
    }
    Ok(files)
}

fn binary_path(line: &str) -> String {
    // "Binary files a/x and b/x differ"
    line.strip_prefix("Binary files ")
        .and_then(|r| r.split(" and ").nth(1))
        .map(|r| r.trim_end().trim_end_matches(" differ").to_owned())
        .unwrap_or_else(|| "(binary)".into())
}

fn parse_git_file(
    lines: &[&str],
    start: usize,
    header: &str,
) -> Result<(FileDiff, usize), PatchError> {
    let (mut old, mut new) = split_git_header(header);
    let mut created = false;
    let mut deleted = false;
    let mut i = start + 1;
    let mut saw_file_headers = false;
    while i < lines.len() {
        let l = lines[i];
        let path_for_err = || new.clone().or_else(|| old.clone()).unwrap_or_default();
        if l.starts_with("diff --git ") || l.starts_with("@@ ") {
            break;
        }
        if l.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")) {
            old = header_path(&l[4..], i)?;
            new = header_path(&lines[i + 1][4..], i + 1)?;
            saw_file_headers = true;
            i += 2;
            break;
        }
        if l.starts_with("old mode ") || l.starts_with("new mode ") {
            return Err(PatchError::refused(path_for_err(), Refusal::ModeChange));
        }
        if let Some(mode) = l.strip_prefix("new file mode ") {
            created = true;
            check_new_mode(mode.trim(), &path_for_err())?;
        } else if l.starts_with("deleted file mode ") {
            deleted = true;
        } else if let Some(p) = l.strip_prefix("rename from ") {
            old = Some(format!("a/{}", unquote(p.trim_end())));
        } else if let Some(p) = l.strip_prefix("rename to ") {
            new = Some(format!("b/{}", unquote(p.trim_end())));
        } else if l.starts_with("copy from ") || l.starts_with("copy to ") {
            return Err(PatchError::refused(
                path_for_err(),
                Refusal::Unsupported("copying a file".into()),
            ));
        } else if l.starts_with("GIT binary patch")
            || (l.starts_with("Binary files ") && l.trim_end().ends_with(" differ"))
        {
            return Err(PatchError::refused(path_for_err(), Refusal::Binary));
        } else if !(l.starts_with("index ")
            || l.starts_with("similarity index ")
            || l.starts_with("dissimilarity index "))
        {
            // Prose or an unknown header ends the extended header block.
            break;
        }
        i += 1;
    }
    if i < lines.len() && !saw_file_headers && lines[i].starts_with("--- ") {
        // `--- ` without `+++ `: malformed.
        return Err(perr(i, "`---` file header without a `+++` line"));
    }
    let (hunks, next) = parse_hunks(lines, i)?;
    if created {
        old = None;
    }
    if deleted {
        new = None;
    }
    if old.is_none() && new.is_none() {
        return Err(perr(start, "cannot tell which file this diff changes"));
    }
    Ok((
        FileDiff {
            old_path: old,
            new_path: new,
            hunks,
            git_prefixes: true,
        },
        next,
    ))
}

fn check_new_mode(mode: &str, path: &str) -> Result<(), PatchError> {
    match mode {
        "100644" | "644" => Ok(()),
        "120000" => Err(PatchError::refused(path, Refusal::CreatesSymlink)),
        "160000" => Err(PatchError::refused(
            path,
            Refusal::Unsupported("a submodule".into()),
        )),
        _ => Err(PatchError::refused(path, Refusal::ModeChange)),
    }
}

/// `a/x b/x` from a `diff --git` line; paths with spaces are split in the middle when both
/// halves name the same file.
fn split_git_header(rest: &str) -> (Option<String>, Option<String>) {
    let rest = rest.trim_end();
    if rest.starts_with('"') {
        // Quoted paths: "a/x y" "b/x y"
        let mut parts = vec![];
        let mut s = rest;
        while let Some(r) = s.trim_start().strip_prefix('"') {
            let mut end = None;
            let mut esc = false;
            for (i, c) in r.char_indices() {
                if esc {
                    esc = false;
                } else if c == '\\' {
                    esc = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                }
            }
            let Some(e) = end else { break };
            parts.push(unquote(&format!("\"{}\"", &r[..e])));
            s = &r[e + 1..];
        }
        if parts.len() == 2 {
            return (Some(parts[0].clone()), Some(parts[1].clone()));
        }
    }
    // Prefer the split where both halves are the same path.
    for (i, _) in rest.match_indices(" b/") {
        let (a, b) = (&rest[..i], &rest[i + 1..]);
        if a.strip_prefix("a/") == b.strip_prefix("b/") {
            return (Some(a.to_owned()), Some(b.to_owned()));
        }
    }
    match rest.split_once(' ') {
        Some((a, b)) => (Some(a.to_owned()), Some(b.to_owned())),
        None => (None, None),
    }
}

/// The path of a `---`/`+++` header: unquoted, without a timestamp; `None` for /dev/null.
fn header_path(raw: &str, line: usize) -> Result<Option<String>, PatchError> {
    let raw = raw.trim_end_matches(['\r', '\n']);
    let p = if raw.starts_with('"') {
        unquote(raw.split('\t').next().unwrap_or(raw))
    } else {
        // "file.py\t2024-01-01 00:00:00" or "file.py  2024-01-01 ..." (two spaces, diff -u)
        let p = raw.split('\t').next().unwrap_or(raw);
        let p = match p.find("  ") {
            Some(i) if looks_like_timestamp(&p[i..]) => &p[..i],
            _ => p,
        };
        p.trim_end().to_owned()
    };
    if p.is_empty() {
        return Err(perr(line, "empty file name in a `---`/`+++` header"));
    }
    if p == "/dev/null" {
        return Ok(None);
    }
    Ok(Some(p))
}

fn looks_like_timestamp(s: &str) -> bool {
    let s = s.trim();
    s.len() >= 10 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) && s.as_bytes()[4] == b'-'
}

/// C-style quoted path as git writes it (`"a/sp\303\244ce"`); unquoted input is returned as is.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return s.to_owned();
    };
    let mut bytes = Vec::with_capacity(inner.len());
    let mut it = inner.bytes().peekable();
    while let Some(b) = it.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match it.next() {
            Some(b'n') => bytes.push(b'\n'),
            Some(b't') => bytes.push(b'\t'),
            Some(b'"') => bytes.push(b'"'),
            Some(b'\\') => bytes.push(b'\\'),
            Some(d @ b'0'..=b'7') => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    match it.peek() {
                        Some(&n @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(n - b'0');
                            it.next();
                        }
                        _ => break,
                    }
                }
                bytes.push((v & 0xff) as u8);
            }
            Some(other) => bytes.push(other),
            None => bytes.push(b'\\'),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `@@ -a,b +c,d @@ ...`
fn parse_hunk_header(l: &str, line: usize) -> Result<(usize, usize, usize, usize), PatchError> {
    let rest = l
        .strip_prefix("@@ -")
        .ok_or_else(|| perr(line, "expected a hunk header `@@ -a,b +c,d @@`"))?;
    let end = rest
        .find(" @@")
        .ok_or_else(|| perr(line, "hunk header without closing `@@`"))?;
    let (old, new) = rest[..end]
        .split_once(" +")
        .ok_or_else(|| perr(line, "hunk header without a `+` range"))?;
    let range = |r: &str| -> Result<(usize, usize), PatchError> {
        let (s, n) = match r.split_once(',') {
            Some((s, n)) => (s, Some(n)),
            None => (r, None),
        };
        let s = s
            .trim()
            .parse::<usize>()
            .map_err(|_| perr(line, format!("bad line number `{s}` in a hunk header")))?;
        let n = match n {
            Some(n) => n
                .trim()
                .parse::<usize>()
                .map_err(|_| perr(line, format!("bad line count `{n}` in a hunk header")))?,
            None => 1,
        };
        Ok((s, n))
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Ok((a, b, c, d))
}

fn is_body_line(l: &str) -> bool {
    l.starts_with([' ', '+', '-', '\\'])
}

fn is_file_header(lines: &[&str], i: usize) -> bool {
    let l = lines[i];
    l.starts_with("diff --git ")
        || (l.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")))
}

/// Hunks from `start` on; returns them and the index of the first line after them.
fn parse_hunks(lines: &[&str], start: usize) -> Result<(Vec<Hunk>, usize), PatchError> {
    let mut hunks = vec![];
    let mut i = start;
    while i < lines.len() && lines[i].starts_with("@@ ") {
        let (old_start, old_len, new_start, new_len) = parse_hunk_header(lines[i], i)?;
        i += 1;
        let mut body = vec![];
        let (mut seen_old, mut seen_new) = (0usize, 0usize);
        let mut new_no_newline = false;
        while i < lines.len() {
            let l = lines[i];
            if l.starts_with("@@ ") || is_file_header(lines, i) {
                break;
            }
            let counts_done = seen_old >= old_len && seen_new >= new_len;
            if l.is_empty() || l == "\r" {
                // A blank context line whose leading space was stripped (common in pasted
                // patches): part of the hunk only while the header says lines are missing and
                // more hunk lines follow.
                let more = lines
                    .get(i + 1)
                    .is_some_and(|n| is_body_line(n) && !n.starts_with("\\") || n.is_empty());
                if !counts_done && more {
                    body.push(Line::Context(String::new()));
                    seen_old += 1;
                    seen_new += 1;
                    i += 1;
                    continue;
                }
                break;
            }
            if !is_body_line(l) {
                break;
            }
            // Past the header's counts, go on only while lines still look like a hunk (models
            // miscount); a lone `--- ` line followed by `+++ ` is a file header (checked above).
            let _ = counts_done;
            let (tag, text) = l.split_at(1);
            match tag {
                " " => {
                    body.push(Line::Context(text.to_owned()));
                    seen_old += 1;
                    seen_new += 1;
                }
                "-" => {
                    body.push(Line::Remove(text.to_owned()));
                    seen_old += 1;
                }
                "+" => {
                    body.push(Line::Add(text.to_owned()));
                    seen_new += 1;
                }
                _ => {
                    // "\ No newline at end of file": applies to the line before.
                    match body.last() {
                        Some(Line::Add(_)) | Some(Line::Context(_)) => new_no_newline = true,
                        _ => {}
                    }
                }
            }
            i += 1;
        }
        if body.is_empty() {
            return Err(perr(i.saturating_sub(1), "empty hunk"));
        }
        // A trailing "\ No newline" on a context line applies to both sides; a later Add
        // clears it (only the last line matters).
        if new_no_newline && !matches!(body.last(), Some(Line::Add(_)) | Some(Line::Context(_))) {
            new_no_newline = false;
        }
        hunks.push(Hunk {
            old_start,
            old_len: body.iter().filter(|l| !matches!(l, Line::Add(_))).count(),
            new_start,
            new_len: body
                .iter()
                .filter(|l| !matches!(l, Line::Remove(_)))
                .count(),
            lines: body,
            new_no_newline,
        });
        // Keep the header's claim only as a hint: `old_len`/`new_len` are what the body says.
        let _ = (old_len, new_len);
    }
    Ok((hunks, i))
}

// ---------------------------------------------------------------- search/replace

/// A file path written on its own line before a block: `path`, `` `path` ``, `**path**`,
/// `### path`, `File: path`.
fn clean_path_line(l: &str) -> Option<String> {
    let mut t = l.trim();
    for p in ["File:", "file:", "Path:", "path:", "Filename:", "filename:"] {
        if let Some(r) = t.strip_prefix(p) {
            t = r.trim();
        }
    }
    let t = t.trim_start_matches('#').trim();
    let t = t
        .trim_matches(|c| c == '`' || c == '*' || c == '"' || c == '\'')
        .trim();
    let t = t.trim_end_matches(':').trim();
    if t.is_empty() || t.contains(char::is_whitespace) || t.starts_with("```") {
        return None;
    }
    Some(t.to_owned())
}

fn is_fence(l: &str) -> bool {
    l.trim_start().starts_with("```") || l.trim_start().starts_with("~~~")
}

/// Search/replace blocks (Aider's format): a path line, optionally a code fence, then
/// `<<<<<<< SEARCH`, the old text, `=======`, the new text, `>>>>>>> REPLACE`. A block without
/// its own path line uses the previous block's path.
pub fn parse_search_replace(text: &str) -> Result<Vec<Edit>, PatchError> {
    let lines = split_lines(text);
    let mut edits = vec![];
    let mut last_path: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        if !is_search_marker(lines[i]) {
            i += 1;
            continue;
        }
        let marker = i;
        // The path: the nearest non-empty, non-fence line above (but not across another block).
        let mut path = None;
        let mut j = marker;
        while j > 0 {
            j -= 1;
            let l = lines[j];
            if l.trim().is_empty() || is_fence(l) {
                continue;
            }
            if is_replace_marker(l) {
                break;
            }
            path = clean_path_line(l);
            break;
        }
        let path = match path.or_else(|| last_path.clone()) {
            Some(p) => p,
            None => return Err(perr(marker, "a SEARCH block without a file path before it")),
        };
        let mut k = marker + 1;
        let mut search = vec![];
        while k < lines.len() && !is_divider(lines[k]) {
            if is_search_marker(lines[k]) || is_replace_marker(lines[k]) {
                return Err(perr(k, "expected `=======` between SEARCH and REPLACE"));
            }
            search.push(lines[k]);
            k += 1;
        }
        if k >= lines.len() {
            return Err(perr(marker, "SEARCH block without `=======`"));
        }
        k += 1;
        let mut replace = vec![];
        while k < lines.len() && !is_replace_marker(lines[k]) {
            if is_search_marker(lines[k]) {
                return Err(perr(k, "expected `>>>>>>> REPLACE` before the next SEARCH"));
            }
            replace.push(lines[k]);
            k += 1;
        }
        if k >= lines.len() {
            return Err(perr(marker, "SEARCH block without `>>>>>>> REPLACE`"));
        }
        let join = |v: &[&str]| {
            if v.is_empty() {
                String::new()
            } else {
                let mut s = v.join("\n");
                s.push('\n');
                s
            }
        };
        edits.push(Edit::SearchReplace {
            path: path.clone(),
            search: join(&search),
            replace: join(&replace),
        });
        last_path = Some(path);
        i = k + 1;
    }
    if edits.is_empty() {
        return Err(PatchError::Empty("no `<<<<<<< SEARCH` blocks".into()));
    }
    Ok(edits)
}

// ---------------------------------------------------------------- whole files

/// Whole-file edits: a path line directly followed by a fenced block holding the file's new
/// content. Fenced blocks without a path line are taken as prose and ignored.
pub fn parse_whole_files(text: &str) -> Result<Vec<Edit>, PatchError> {
    let lines = split_lines(text);
    let mut edits = vec![];
    let mut i = 0;
    while i < lines.len() {
        if !is_fence(lines[i]) {
            i += 1;
            continue;
        }
        let open = i;
        let fence = if lines[i].trim_start().starts_with("~~~") {
            "~~~"
        } else {
            "```"
        };
        let mut k = open + 1;
        while k < lines.len() && lines[k].trim() != fence {
            k += 1;
        }
        if k >= lines.len() {
            return Err(perr(open, "a code block that is never closed"));
        }
        let path = (0..open)
            .rev()
            .map(|j| lines[j])
            .find(|l| !l.trim().is_empty())
            .filter(|_| open > 0 && !lines[open - 1].trim().is_empty())
            .and_then(clean_path_line)
            .filter(|p| p.contains('.') || p.contains('/'));
        if let Some(path) = path {
            let body = &lines[open + 1..k];
            let mut content = body.join("\n");
            if !body.is_empty() {
                content.push('\n');
            }
            edits.push(Edit::WholeFile { path, content });
        }
        i = k + 1;
    }
    if edits.is_empty() {
        return Err(PatchError::Empty(
            "no diff, no SEARCH/REPLACE blocks and no `path` + code block pairs".into(),
        ));
    }
    Ok(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_diff_with_new_deleted_and_renamed_files() {
        let d = "Here is the fix:\n\ndiff --git a/src/calc.py b/src/calc.py\nindex 3b18e51..a7c4f2d 100644\n--- a/src/calc.py\n+++ b/src/calc.py\n@@ -1,4 +1,4 @@\n def div(a, b):\n-    return a * b\n+    return a / b\n \n def add(a, b):\ndiff --git a/NEW.md b/NEW.md\nnew file mode 100644\nindex 0000000..e69de29\n--- /dev/null\n+++ b/NEW.md\n@@ -0,0 +1,2 @@\n+# New\n+text\ndiff --git a/old.txt b/old.txt\ndeleted file mode 100644\nindex e69de29..0000000\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\ndiff --git a/x.py b/y.py\nsimilarity index 100%\nrename from x.py\nrename to y.py\n\nThat's all.\n";
        let f = parse_diff(d).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].old_path.as_deref(), Some("a/src/calc.py"));
        assert_eq!(f[0].hunks[0].lines.len(), 5);
        assert_eq!(f[1].old_path, None);
        assert_eq!(f[1].new_path.as_deref(), Some("b/NEW.md"));
        assert_eq!(f[2].new_path, None);
        assert_eq!(f[3].old_path.as_deref(), Some("a/x.py"));
        assert_eq!(f[3].new_path.as_deref(), Some("b/y.py"));
        assert!(f[3].hunks.is_empty());
    }

    #[test]
    fn plain_diff_with_timestamps_and_miscounted_hunks() {
        let d = "--- calc.py.orig\t2024-05-01 10:00:00.000000000 +0200\n+++ calc.py\t2024-05-01 10:01:00.000000000 +0200\n@@ -10,2 +10,2 @@\n def f():\n-    return 1\n+    return 2\n     # trailing context the header did not count\n";
        let f = parse_diff(d).unwrap();
        assert_eq!(f[0].old_path.as_deref(), Some("calc.py.orig"));
        assert_eq!(f[0].new_path.as_deref(), Some("calc.py"));
        assert!(!f[0].git_prefixes);
        assert_eq!(f[0].hunks[0].old_len, 3);
        assert_eq!(f[0].hunks[0].new_len, 3);
    }

    #[test]
    fn refusals_at_parse_time() {
        let mode = "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n";
        assert_eq!(
            parse_diff(mode).unwrap_err().refusal(),
            Some(&Refusal::ModeChange)
        );
        let link = "diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n";
        assert_eq!(
            parse_diff(link).unwrap_err().refusal(),
            Some(&Refusal::CreatesSymlink)
        );
        let bin =
            "diff --git a/x.png b/x.png\nindex 1..2 100644\nGIT binary patch\nliteral 5\nabc\n";
        assert_eq!(
            parse_diff(bin).unwrap_err().refusal(),
            Some(&Refusal::Binary)
        );
        let bin2 = "diff -ru a/x.png b/x.png\nBinary files a/x.png and b/x.png differ\n";
        assert_eq!(
            parse_diff(bin2).unwrap_err().refusal(),
            Some(&Refusal::Binary)
        );
        let exec = "diff --git a/x b/x\nnew file mode 100755\n--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+echo\n";
        assert_eq!(
            parse_diff(exec).unwrap_err().refusal(),
            Some(&Refusal::ModeChange)
        );
    }

    #[test]
    fn quoted_paths_and_no_newline_markers() {
        let d = "diff --git \"a/with space.txt\" \"b/with space.txt\"\n--- \"a/with space.txt\"\n+++ \"b/with space.txt\"\n@@ -1 +1 @@\n-old\n\\ No newline at end of file\n+new\n\\ No newline at end of file\n";
        let f = parse_diff(d).unwrap();
        assert_eq!(f[0].new_path.as_deref(), Some("b/with space.txt"));
        assert!(f[0].hunks[0].new_no_newline);
        assert_eq!(unquote("\"a/sp\\303\\244ce\""), "a/späce");
    }

    #[test]
    fn search_replace_blocks() {
        let t = "Change the division:\n\nsrc/calc.py\n```python\n<<<<<<< SEARCH\n    return a * b\n=======\n    return a / b\n>>>>>>> REPLACE\n```\n\n<<<<<<< SEARCH\ndef add(a, b):\n=======\ndef add(a: int, b: int):\n>>>>>>> REPLACE\n\n`tests/test_new.py`\n<<<<<<< SEARCH\n=======\ndef test_new():\n    assert True\n>>>>>>> REPLACE\n";
        let e = parse_search_replace(t).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            Edit::SearchReplace {
                path: "src/calc.py".into(),
                search: "    return a * b\n".into(),
                replace: "    return a / b\n".into()
            }
        );
        let Edit::SearchReplace { path, .. } = &e[1] else {
            panic!()
        };
        assert_eq!(path, "src/calc.py");
        let Edit::SearchReplace { path, search, .. } = &e[2] else {
            panic!()
        };
        assert_eq!((path.as_str(), search.as_str()), ("tests/test_new.py", ""));
        assert!(parse_search_replace("x.py\n<<<<<<< SEARCH\na\n").is_err());
        assert!(parse_search_replace("<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n").is_err());
    }

    #[test]
    fn whole_files() {
        let t = "Here is the new file.\n\n**app/main.py**\n```python\nprint('hi')\n```\n\nAnd an example, not a file:\n\n```\n$ python app/main.py\n```\n";
        let e = parse_whole_files(t).unwrap();
        assert_eq!(
            e,
            [Edit::WholeFile {
                path: "app/main.py".into(),
                content: "print('hi')\n".into()
            }]
        );
        assert!(parse_whole_files("no code here").is_err());
    }
}
