//! What a model's answer may do to an iteration: the answer is cleaned and parsed into edits
//! (`llm::parse_response`: fences, prose, `<think>`, merge markers), every edit is checked
//! (no absolute paths, no `..`, nothing under `.git/`, no symlinks created or written through,
//! no file over the size limit, not too many files), applied to the staging copy by
//! `patch` (which checks the same again, and plans every write before the first),
//! and every written file is checked once more for leftovers of fences and merge markers.
//! An answer with any unsafe edit is refused as a whole, with every reason found.

use std::path::{Component, Path};

use patch::PatchLimits;

/// Caps on one generation.
#[derive(Debug, Clone, Copy)]
pub struct GenLimits {
    pub max_file_bytes: usize,
    pub max_files: usize,
}

/// Why an answer was not used: one reason per problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model's answer was refused: {}", reasons.join("; "))]
pub struct Refused {
    pub reasons: Vec<String>,
}

/// Markers that say an answer tries to create a symlink, in any of the formats a model may
/// use (git's mode line, JSON fields). The diff parser drops mode lines, so they are looked
/// for in the raw answer.
fn symlink_declarations(answer: &str) -> Vec<String> {
    let mut out = vec![];
    for line in answer.lines() {
        let t = line.trim();
        let lower = t.to_ascii_lowercase();
        let mode_line = ["new file mode ", "new mode ", "old mode "]
            .iter()
            .any(|p| lower.starts_with(p) && lower.ends_with("120000"));
        let json_field = lower.contains("\"symlink\"")
            || lower.contains("\"type\": \"symlink\"")
            || lower.contains("\"type\":\"symlink\"")
            || lower.contains("\"mode\": \"120000\"")
            || lower.contains("\"mode\":\"120000\"")
            || lower.contains("\"mode\": 120000");
        if mode_line || json_field {
            let shown: String = t.chars().take(80).collect();
            out.push(format!(
                "the answer declares a symlink (`{shown}`): creating symlinks is not allowed"
            ));
        }
    }
    out
}

/// Where a path from the model would go, or why it may not.
fn path_problem(root: &Path, raw: &str) -> Option<String> {
    if raw.starts_with('/') || raw.starts_with('~') || raw.as_bytes().get(1) == Some(&b':') {
        return Some(format!("`{raw}`: absolute paths are not allowed"));
    }
    let mut cur = root.to_path_buf();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(s) => {
                if s.eq_ignore_ascii_case(".git") {
                    return Some(format!("`{raw}`: nothing under .git/ may be written"));
                }
                cur.push(s);
                if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Some(format!(
                        "`{raw}`: `{}` is a symlink; writing through it is not allowed",
                        cur.strip_prefix(root).unwrap_or(&cur).display()
                    ));
                }
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Some(format!("`{raw}`: `..` leaves the iteration"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Some(format!("`{raw}`: absolute paths are not allowed"));
            }
        }
    }
    None
}

fn to_patch_edit(e: &llm::Edit) -> Result<Vec<patch::Edit>, String> {
    Ok(match e {
        llm::Edit::UnifiedDiff { text } => patch::parse_diff(text)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(patch::Edit::Diff)
            .collect(),
        llm::Edit::SearchReplace {
            path,
            search,
            replace,
        } => vec![patch::Edit::SearchReplace {
            path: path.clone(),
            search: search.clone(),
            replace: replace.clone(),
        }],
        llm::Edit::WholeFile { path, content } => vec![patch::Edit::WholeFile {
            path: path.clone(),
            content: content.clone(),
        }],
    })
}

/// The size of what an edit would write, when it says (whole files and replacements).
fn written_bytes(e: &patch::Edit) -> usize {
    match e {
        patch::Edit::WholeFile { content, .. } => content.len(),
        patch::Edit::SearchReplace { replace, .. } => replace.len(),
        patch::Edit::Diff(d) => d
            .hunks
            .iter()
            .flat_map(|h| &h.lines)
            .map(|l| match l {
                patch::Line::Add(s) | patch::Line::Context(s) => s.len() + 1,
                patch::Line::Remove(_) => 0,
            })
            .sum(),
    }
}

fn edit_path(e: &patch::Edit) -> String {
    match e {
        patch::Edit::WholeFile { path, .. } | patch::Edit::SearchReplace { path, .. } => {
            path.clone()
        }
        patch::Edit::Diff(d) => d
            .new_path
            .clone()
            .or_else(|| d.old_path.clone())
            .unwrap_or_default(),
    }
}

/// Leftovers that say the cleaning missed something: a fence line opening or closing the
/// file, merge markers.
pub fn content_problem(path: &str, text: &str) -> Option<String> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let fence = |l: &str| l.trim_start().starts_with("```") || l.trim_start().starts_with("~~~");
    if !path.ends_with(".md") && (fence(first) || fence(last)) {
        return Some(format!("`{path}` still holds a Markdown fence"));
    }
    for l in text.lines() {
        if l.starts_with("<<<<<<< ")
            || l.starts_with(">>>>>>> ")
            || l == "<<<<<<<"
            || l == ">>>>>>>"
        {
            return Some(format!("`{path}` still holds merge-conflict markers"));
        }
    }
    None
}

/// Checks the answer and applies it to `root` (the staging copy of the new iteration).
/// Returns the paths written, or every reason the answer is refused; nothing is written
/// unless every check passes.
pub fn accept_answer(answer: &str, root: &Path, limits: GenLimits) -> Result<Vec<String>, Refused> {
    let mut reasons = symlink_declarations(answer);
    let edits = match llm::parse_response(answer) {
        Ok(e) => e,
        Err(e) => {
            reasons.push(e.reason);
            return Err(Refused { reasons });
        }
    };
    let mut planned = vec![];
    for e in &edits {
        match to_patch_edit(e) {
            Ok(v) => planned.extend(v),
            Err(r) => reasons.push(r),
        }
    }
    if planned.len() > limits.max_files {
        reasons.push(format!(
            "the answer writes {} files, the limit is {}",
            planned.len(),
            limits.max_files
        ));
    }
    for e in &planned {
        let p = edit_path(e);
        if let Some(r) = path_problem(root, &p) {
            reasons.push(r);
        }
        let n = written_bytes(e);
        if n > limits.max_file_bytes {
            reasons.push(format!(
                "`{p}`: too large: {n} bytes, the limit is {}",
                limits.max_file_bytes
            ));
        }
        if let patch::Edit::WholeFile { content, .. } = e
            && let Some(r) = content_problem(&p, content)
        {
            reasons.push(r);
        }
    }
    if !reasons.is_empty() {
        return Err(Refused { reasons });
    }
    let plimits = PatchLimits {
        max_file_bytes: limits.max_file_bytes,
        max_files: limits.max_files,
        ..PatchLimits::default()
    };
    let applied = patch::apply(root, &planned, &plimits).map_err(|e| Refused {
        reasons: vec![e.to_string()],
    })?;
    let mut written = vec![];
    for f in &applied.files {
        let p = root.join(&f.path);
        if let Ok(text) = std::fs::read_to_string(&p)
            && let Some(r) = content_problem(&f.path, &text)
        {
            reasons.push(r);
        }
        written.push(f.path.clone());
    }
    if !reasons.is_empty() {
        return Err(Refused { reasons });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GenLimits = GenLimits {
        max_file_bytes: 1000,
        max_files: 5,
    };

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("main.py"), "print(1)\n").unwrap();
        d
    }

    #[test]
    fn a_clean_answer_is_applied() {
        let d = root();
        let answer = "Here you go:\n```json\n{\"files\":[{\"path\":\"main.py\",\"content\":\"print(2)\\n\"},{\"path\":\"pkg/util.py\",\"content\":\"X = 1\\n\"}]}\n```\n";
        let w = accept_answer(answer, d.path(), LIMITS).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            std::fs::read_to_string(d.path().join("main.py")).unwrap(),
            "print(2)\n"
        );
    }

    #[test]
    fn unsafe_answers_are_refused_whole_with_reasons() {
        let d = root();
        let cases = [
            (
                "{\"files\":[{\"path\":\"ok.py\",\"content\":\"1\"},{\"path\":\"../escape.py\",\"content\":\"x\"}]}",
                "..",
            ),
            (
                "{\"files\":[{\"path\":\"/etc/cron.d/x\",\"content\":\"x\"}]}",
                "absolute",
            ),
            (
                "{\"files\":[{\"path\":\".git/hooks/pre-commit\",\"content\":\"x\"}]}",
                ".git",
            ),
            (
                "diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n+/etc/passwd\n",
                "symlink",
            ),
        ];
        for (answer, why) in cases {
            let err = accept_answer(answer, d.path(), LIMITS).unwrap_err();
            assert!(
                err.reasons.iter().any(|r| r.contains(why)),
                "{why}: {err:?}"
            );
            assert!(!d.path().join("ok.py").exists(), "partial write for {why}");
            assert!(!d.path().join("link").exists());
        }
        let huge = format!(
            "{{\"files\":[{{\"path\":\"big.py\",\"content\":\"{}\"}}]}}",
            "x".repeat(5000)
        );
        let err = accept_answer(&huge, d.path(), LIMITS).unwrap_err();
        assert!(err.reasons[0].contains("too large"), "{err:?}");
        assert!(!d.path().join("big.py").exists());
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let d = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("data")).unwrap();
        let answer = "{\"files\":[{\"path\":\"data/x.py\",\"content\":\"1\"}]}";
        let err = accept_answer(answer, d.path(), LIMITS).unwrap_err();
        assert!(err.reasons[0].contains("symlink"), "{err:?}");
        assert!(!outside.path().join("x.py").exists());
    }

    #[test]
    fn leftovers_are_found() {
        assert!(content_problem("a.py", "```python\nx\n```\n").is_some());
        assert!(content_problem("a.py", "<<<<<<< HEAD\nx\n=======\ny\n>>>>>>> b\n").is_some());
        assert!(content_problem("README.md", "```\nx\n```\n").is_none());
        assert!(content_problem("a.py", "x = 1\n").is_none());
    }
}
