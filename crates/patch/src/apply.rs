//! Applying edits to a project tree: path safety (no absolute paths, `..`, `.git/`, symlinks
//! anywhere on the way, nothing outside the root), hunk placement (stated line numbers first,
//! then a unique match of the context, exact before whitespace-tolerant), all-or-nothing
//! planning before any write, writes by rename (so a hard link cannot carry a write outside),
//! and the normalised diff of the result.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::{
    Applied, AppliedFile, Change, Edit, FileDiff, Hunk, Line, PatchError, PatchLimits, Refusal,
};

/// Where a hunk went when it did not apply at its stated line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HunkPlacement {
    /// 1-based hunk number in its file.
    pub hunk: usize,
    /// 1-based line the hunk header named.
    pub stated_line: usize,
    /// 1-based line where its context matched.
    pub actual_line: usize,
    /// Matched only when trailing whitespace was ignored.
    pub whitespace_tolerant: bool,
}

/// Why a hunk did not apply (the caller adds the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HunkError {
    NoMatch { hunk: usize, reason: String },
    Ambiguous { hunk: usize, lines: Vec<usize> },
}

impl HunkError {
    fn with_path(self, path: &str) -> PatchError {
        match self {
            HunkError::NoMatch { hunk, reason } => PatchError::NoMatch {
                path: path.to_owned(),
                hunk,
                reason,
            },
            HunkError::Ambiguous { hunk, lines } => PatchError::Ambiguous {
                path: path.to_owned(),
                hunk,
                count: lines.len(),
                lines: lines
                    .iter()
                    .take(10)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        }
    }
}

/// Applies `hunks` to `old`, returning the new text and the hunks that moved. Pure: no IO.
pub fn apply_hunks(old: &str, hunks: &[Hunk]) -> Result<(String, Vec<HunkPlacement>), HunkError> {
    let old_lines: Vec<&str> = if old.is_empty() {
        vec![]
    } else {
        old.strip_suffix('\n').unwrap_or(old).split('\n').collect()
    };
    let crlf = !old_lines.is_empty()
        && old_lines.iter().filter(|l| l.ends_with('\r')).count() * 2 > old_lines.len();
    let mut ends_newline = old.is_empty() || old.ends_with('\n');
    let mut out: Vec<String> = Vec::with_capacity(old_lines.len() + 16);
    let mut placements = vec![];
    let mut cursor = 0usize;
    for (k, h) in hunks.iter().enumerate() {
        let n = k + 1;
        let expected: Vec<&str> = h
            .lines
            .iter()
            .filter_map(|l| match l {
                Line::Context(s) | Line::Remove(s) => Some(s.as_str()),
                Line::Add(_) => None,
            })
            .collect();
        let (pos, fuzzy) = if expected.is_empty() {
            // Pure insertion: only the line number can place it.
            let at = h.old_start;
            if at < cursor || at > old_lines.len() {
                return Err(HunkError::NoMatch {
                    hunk: n,
                    reason: format!(
                        "inserts after line {at}, but the file has {} lines{}",
                        old_lines.len(),
                        if at < cursor {
                            " and an earlier hunk already covers it"
                        } else {
                            ""
                        }
                    ),
                });
            }
            (at, false)
        } else {
            locate(
                &old_lines,
                &expected,
                h.old_start.saturating_sub(1),
                cursor,
                n,
            )?
        };
        if pos + 1 != h.old_start.max(1) && !expected.is_empty() || fuzzy {
            placements.push(HunkPlacement {
                hunk: n,
                stated_line: h.old_start,
                actual_line: pos + 1,
                whitespace_tolerant: fuzzy,
            });
        }
        out.extend(old_lines[cursor..pos].iter().map(|s| (*s).to_owned()));
        let mut i = pos;
        for l in &h.lines {
            match l {
                Line::Context(_) => {
                    // The file's own text: a whitespace-tolerant match must not rewrite it.
                    out.push(
                        old_lines
                            .get(i)
                            .map_or_else(String::new, |s| (*s).to_owned()),
                    );
                    i += 1;
                }
                Line::Remove(_) => i += 1,
                Line::Add(s) => {
                    let mut s = s.clone();
                    if crlf && !s.ends_with('\r') {
                        s.push('\r');
                    }
                    out.push(s);
                }
            }
        }
        cursor = pos + expected.len();
        if cursor >= old_lines.len() {
            // This hunk reaches the end of the file: it decides the final newline.
            let last_is_removal = matches!(h.lines.last(), Some(Line::Remove(_)));
            ends_newline = if last_is_removal && h.new_no_newline {
                false
            } else {
                !h.new_no_newline
            };
        }
    }
    out.extend(
        old_lines[cursor.min(old_lines.len())..]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let mut text = out.join("\n");
    if !out.is_empty() && ends_newline {
        text.push('\n');
    }
    Ok((text, placements))
}

/// The index where `expected` matches: the stated index when it matches there, else the one
/// place (at or after `cursor`) where it matches exactly, else the one place where it matches
/// ignoring trailing whitespace.
fn locate(
    lines: &[&str],
    expected: &[&str],
    stated: usize,
    cursor: usize,
    hunk: usize,
) -> Result<(usize, bool), HunkError> {
    let fits = |p: usize, eq: &dyn Fn(&str, &str) -> bool| {
        p.checked_add(expected.len())
            .is_some_and(|end| end <= lines.len())
            && lines[p..p + expected.len()]
                .iter()
                .zip(expected)
                .all(|(a, b)| eq(a, b))
    };
    let exact = |a: &str, b: &str| a == b;
    let loose = |a: &str, b: &str| a.trim_end() == b.trim_end();
    if stated >= cursor && fits(stated, &exact) {
        return Ok((stated, false));
    }
    let last = lines.len().saturating_sub(expected.len());
    for (eq, fuzzy) in [
        (&exact as &dyn Fn(&str, &str) -> bool, false),
        (&loose, true),
    ] {
        if fuzzy && stated >= cursor && fits(stated, eq) {
            return Ok((stated, true));
        }
        let found: Vec<usize> = (cursor..=last).filter(|&p| fits(p, eq)).collect();
        match found.len() {
            0 => continue,
            1 => return Ok((found[0], fuzzy)),
            _ => {
                return Err(HunkError::Ambiguous {
                    hunk,
                    lines: found.iter().map(|p| p + 1).collect(),
                });
            }
        }
    }
    let first = expected.first().copied().unwrap_or("");
    Err(HunkError::NoMatch {
        hunk,
        reason: format!(
            "its context and removed lines are not in the file (stated line {}, first expected line `{}`)",
            stated + 1,
            first.chars().take(80).collect::<String>()
        ),
    })
}

// ---------------------------------------------------------------- paths

/// A relative path, checked and normalised (`a/b`), and its place under the root.
#[derive(Debug, Clone)]
struct SafePath {
    rel: String,
    abs: PathBuf,
    exists: bool,
}

fn check_path(root: &Path, root_canon: &Path, raw: &str) -> Result<SafePath, PatchError> {
    let refuse = |r: Refusal| PatchError::refused(raw, r);
    if raw.is_empty() || raw.contains('\0') {
        return Err(refuse(Refusal::InvalidPath("empty or contains NUL".into())));
    }
    if raw.contains('\\') {
        return Err(refuse(Refusal::InvalidPath(
            "backslashes are not path separators here".into(),
        )));
    }
    if raw.starts_with('/') || raw.starts_with('~') || raw.as_bytes().get(1) == Some(&b':') {
        return Err(refuse(Refusal::AbsolutePath));
    }
    let mut parts = vec![];
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(s) => {
                let s = s.to_str().unwrap_or("");
                if s.eq_ignore_ascii_case(".git") {
                    return Err(refuse(Refusal::GitDir));
                }
                parts.push(s.to_owned());
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(Refusal::ParentDir)),
            Component::RootDir | Component::Prefix(_) => return Err(refuse(Refusal::AbsolutePath)),
        }
    }
    if parts.is_empty() {
        return Err(refuse(Refusal::InvalidPath("names no file".into())));
    }
    let rel = parts.join("/");
    let mut abs = root.to_path_buf();
    let mut exists = true;
    for (i, p) in parts.iter().enumerate() {
        abs.push(p);
        if !exists {
            continue;
        }
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refuse(Refusal::ThroughSymlink(parts[..=i].join("/"))));
            }
            Ok(m) if i + 1 < parts.len() && !m.is_dir() => {
                return Err(refuse(Refusal::InvalidPath(format!(
                    "`{}` is not a directory",
                    parts[..=i].join("/")
                ))));
            }
            Ok(m) if i + 1 == parts.len() && !m.is_file() => {
                return Err(refuse(Refusal::InvalidPath(format!(
                    "`{rel}` exists and is not a regular file"
                ))));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => exists = false,
            Err(e) => {
                return Err(PatchError::Io {
                    path: rel,
                    context: "cannot inspect",
                    source: e,
                });
            }
        }
    }
    // Belt and braces: the deepest existing ancestor must resolve inside the root.
    let mut probe = abs.clone();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let canon = probe.canonicalize().map_err(|e| PatchError::Io {
        path: rel.clone(),
        context: "cannot resolve",
        source: e,
    })?;
    if !canon.starts_with(root_canon) {
        return Err(refuse(Refusal::OutsideTree));
    }
    Ok(SafePath { rel, abs, exists })
}

/// Strips git's `a/`/`b/` prefix, or, for a plain diff, the first component when the path as
/// written does not exist but the stripped one does (`patch -p1` guessing).
fn diff_path(
    root: &Path,
    root_canon: &Path,
    raw: &str,
    git: bool,
    must_exist: bool,
) -> Result<SafePath, PatchError> {
    if raw.starts_with('/') {
        return Err(PatchError::refused(raw, Refusal::AbsolutePath));
    }
    if git {
        let stripped = raw
            .strip_prefix("a/")
            .or_else(|| raw.strip_prefix("b/"))
            .unwrap_or(raw);
        return check_path(root, root_canon, stripped);
    }
    let as_is = check_path(root, root_canon, raw);
    match as_is {
        Ok(p) if p.exists || !must_exist => Ok(p),
        Ok(p) => {
            if let Some((_, rest)) = raw.split_once('/')
                && let Ok(q) = check_path(root, root_canon, rest)
                && q.exists
            {
                return Ok(q);
            }
            Ok(p)
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- planning and writing

/// A file's state while edits are planned.
#[derive(Debug, Clone)]
struct Planned {
    abs: PathBuf,
    /// Content on disk before the patch (`None`: did not exist).
    original: Option<String>,
    /// Content after the edits so far (`None`: deleted / not there).
    current: Option<String>,
    renamed_from: Option<String>,
    relocated: Vec<HunkPlacement>,
    order: usize,
}

struct Plan<'a> {
    root: &'a Path,
    root_canon: PathBuf,
    limits: &'a PatchLimits,
    files: BTreeMap<String, Planned>,
}

impl Plan<'_> {
    fn load(&mut self, p: &SafePath) -> Result<&mut Planned, PatchError> {
        if !self.files.contains_key(&p.rel) {
            let original = if p.exists {
                Some(read_text(&p.abs, &p.rel, self.limits)?)
            } else {
                None
            };
            let order = self.files.len();
            self.files.insert(
                p.rel.clone(),
                Planned {
                    abs: p.abs.clone(),
                    current: original.clone(),
                    original,
                    renamed_from: None,
                    relocated: vec![],
                    order,
                },
            );
        }
        self.files
            .get_mut(&p.rel)
            .ok_or_else(|| PatchError::Missing {
                path: p.rel.clone(),
            })
    }

    fn diff(&mut self, d: &FileDiff) -> Result<(), PatchError> {
        let root = self.root;
        let canon = self.root_canon.clone();
        match (&d.old_path, &d.new_path) {
            (None, Some(new)) => {
                let p = diff_path(root, &canon, new, d.git_prefixes, false)?;
                let f = self.load(&p)?;
                if f.current.is_some() {
                    return Err(PatchError::Exists { path: p.rel });
                }
                let (text, _) = apply_hunks("", &d.hunks).map_err(|e| e.with_path(&p.rel))?;
                f.current = Some(text);
            }
            (Some(old), None) => {
                let p = diff_path(root, &canon, old, d.git_prefixes, true)?;
                let f = self.load(&p)?;
                let Some(cur) = f.current.clone() else {
                    return Err(PatchError::Missing { path: p.rel });
                };
                if !d.hunks.is_empty() {
                    let (rest, _) = apply_hunks(&cur, &d.hunks).map_err(|e| e.with_path(&p.rel))?;
                    if !rest.trim().is_empty() {
                        return Err(PatchError::NoMatch {
                            path: p.rel,
                            hunk: d.hunks.len(),
                            reason: "deletes the file but its hunks do not remove all of it".into(),
                        });
                    }
                }
                f.current = None;
            }
            (Some(old), Some(new)) => {
                let from = diff_path(root, &canon, old, d.git_prefixes, true)?;
                let to = diff_path(root, &canon, new, d.git_prefixes, true)?;
                if from.rel == to.rel {
                    let f = self.load(&to)?;
                    let Some(cur) = f.current.clone() else {
                        return Err(PatchError::Missing { path: to.rel });
                    };
                    let (text, moved) =
                        apply_hunks(&cur, &d.hunks).map_err(|e| e.with_path(&to.rel))?;
                    f.current = Some(text);
                    f.relocated.extend(moved);
                } else {
                    // Plain diffs often name a backup as the old file (`x.orig` → `x`): that is
                    // an edit of the new path when it exists.
                    if !d.git_prefixes && to.exists && !from.exists {
                        let f = self.load(&to)?;
                        let Some(cur) = f.current.clone() else {
                            return Err(PatchError::Missing { path: to.rel });
                        };
                        let (text, moved) =
                            apply_hunks(&cur, &d.hunks).map_err(|e| e.with_path(&to.rel))?;
                        f.current = Some(text);
                        f.relocated.extend(moved);
                        return Ok(());
                    }
                    let src = self.load(&from)?;
                    let Some(cur) = src.current.take() else {
                        return Err(PatchError::Missing { path: from.rel });
                    };
                    let (text, moved) =
                        apply_hunks(&cur, &d.hunks).map_err(|e| e.with_path(&from.rel))?;
                    let dst = self.load(&to)?;
                    if dst.current.is_some() {
                        return Err(PatchError::Exists { path: to.rel });
                    }
                    dst.current = Some(text);
                    dst.renamed_from = Some(from.rel.clone());
                    dst.relocated.extend(moved);
                }
            }
            (None, None) => {
                return Err(PatchError::Empty(
                    "a diff with /dev/null on both sides".into(),
                ));
            }
        }
        Ok(())
    }

    fn search_replace(
        &mut self,
        path: &str,
        search: &str,
        replace: &str,
    ) -> Result<(), PatchError> {
        let p = check_path(self.root, &self.root_canon.clone(), path)?;
        let f = self.load(&p)?;
        let cur = f.current.clone();
        let new = match cur {
            None if search.trim().is_empty() => replace.to_owned(),
            None => return Err(PatchError::Missing { path: p.rel }),
            Some(c) if search.trim().is_empty() => {
                if !c.trim().is_empty() {
                    return Err(PatchError::NoMatch {
                        path: p.rel,
                        hunk: 1,
                        reason: "an empty SEARCH block only creates a file; this one exists and is not empty".into(),
                    });
                }
                replace.to_owned()
            }
            Some(c) => replace_once(&c, search, replace).map_err(|e| e.with_path(&p.rel))?,
        };
        f.current = Some(new);
        Ok(())
    }

    fn whole_file(&mut self, path: &str, content: &str) -> Result<(), PatchError> {
        let p = check_path(self.root, &self.root_canon.clone(), path)?;
        if content.len() > self.limits.max_file_bytes {
            return Err(PatchError::refused(
                p.rel,
                Refusal::TooLarge(format!("more than {} bytes", self.limits.max_file_bytes)),
            ));
        }
        let f = self.load(&p)?;
        f.current = Some(content.to_owned());
        Ok(())
    }
}

/// Replaces the one occurrence of `search`: exact first, then line by line ignoring trailing
/// whitespace; two or more occurrences are ambiguous.
fn replace_once(text: &str, search: &str, replace: &str) -> Result<String, HunkError> {
    let exact: Vec<usize> = text.match_indices(search).map(|(i, _)| i).collect();
    match exact.len() {
        1 => {
            let i = exact[0];
            return Ok(format!(
                "{}{}{}",
                &text[..i],
                replace,
                &text[i + search.len()..]
            ));
        }
        n if n > 1 => {
            return Err(HunkError::Ambiguous {
                hunk: 1,
                lines: exact
                    .iter()
                    .map(|&i| text[..i].matches('\n').count() + 1)
                    .collect(),
            });
        }
        _ => {}
    }
    // Whitespace-tolerant: as a hunk of removed lines followed by added lines.
    let mut lines: Vec<Line> = search
        .strip_suffix('\n')
        .unwrap_or(search)
        .split('\n')
        .map(|l| Line::Remove(l.to_owned()))
        .collect();
    if !replace.is_empty() {
        lines.extend(
            replace
                .strip_suffix('\n')
                .unwrap_or(replace)
                .split('\n')
                .map(|l| Line::Add(l.to_owned())),
        );
    }
    let hunk = Hunk {
        // No stated line: only a unique match may place it.
        old_start: usize::MAX,
        old_len: 0,
        new_start: 0,
        new_len: 0,
        lines,
        new_no_newline: false,
    };
    apply_hunks(text, std::slice::from_ref(&hunk))
        .map(|(t, _)| t)
        .map_err(|e| match e {
            HunkError::NoMatch { hunk, .. } => HunkError::NoMatch {
                hunk,
                reason: "the SEARCH text is not in the file".into(),
            },
            other => other,
        })
}

fn read_text(abs: &Path, rel: &str, limits: &PatchLimits) -> Result<String, PatchError> {
    let meta = std::fs::metadata(abs).map_err(|e| PatchError::Io {
        path: rel.to_owned(),
        context: "cannot read",
        source: e,
    })?;
    if meta.len() > limits.max_file_bytes as u64 {
        return Err(PatchError::refused(
            rel,
            Refusal::TooLarge(format!(
                "the file has more than {} bytes",
                limits.max_file_bytes
            )),
        ));
    }
    let bytes = std::fs::read(abs).map_err(|e| PatchError::Io {
        path: rel.to_owned(),
        context: "cannot read",
        source: e,
    })?;
    if bytes.contains(&0) {
        return Err(PatchError::refused(rel, Refusal::Binary));
    }
    String::from_utf8(bytes).map_err(|_| PatchError::refused(rel, Refusal::Binary))
}

/// Writes through a temp file and a rename: a hard link to a file outside the tree is replaced,
/// never written through. The old file's permissions are kept.
fn write_file(abs: &Path, rel: &str, content: &str) -> Result<(), PatchError> {
    let io_err = |context: &'static str| {
        move |e: io::Error| PatchError::Io {
            path: rel.to_owned(),
            context,
            source: e,
        }
    };
    let parent = abs
        .parent()
        .ok_or_else(|| PatchError::refused(rel, Refusal::OutsideTree))?;
    std::fs::create_dir_all(parent).map_err(io_err("cannot create the directory"))?;
    let perms = std::fs::symlink_metadata(abs).ok().map(|m| m.permissions());
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(io_err("cannot write"))?;
    io::Write::write_all(&mut tmp, content.as_bytes()).map_err(io_err("cannot write"))?;
    if let Some(p) = perms {
        std::fs::set_permissions(tmp.path(), p).map_err(io_err("cannot set permissions"))?;
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(io_err("cannot set permissions"))?;
    }
    tmp.persist(abs).map_err(|e| PatchError::Io {
        path: rel.to_owned(),
        context: "cannot replace",
        source: e.error,
    })?;
    Ok(())
}

pub(super) fn apply(
    root: &Path,
    edits: &[Edit],
    limits: &PatchLimits,
) -> Result<Applied, PatchError> {
    let root_canon = root.canonicalize().map_err(|e| PatchError::Io {
        path: root.display().to_string(),
        context: "cannot open the project",
        source: e,
    })?;
    let mut plan = Plan {
        root,
        root_canon,
        limits,
        files: BTreeMap::new(),
    };
    for e in edits {
        match e {
            Edit::Diff(d) => plan.diff(d)?,
            Edit::SearchReplace {
                path,
                search,
                replace,
            } => plan.search_replace(path, search, replace)?,
            Edit::WholeFile { path, content } => plan.whole_file(path, content)?,
        }
    }
    let mut files: Vec<(String, Planned)> = plan.files.into_iter().collect();
    files.sort_by_key(|(_, f)| f.order);
    // The diff of what will change, and its size, before anything is written.
    let mut diff = String::new();
    let mut changed = 0usize;
    let mut applied = vec![];
    let renamed_away: Vec<String> = files
        .iter()
        .filter_map(|(_, f)| f.renamed_from.clone())
        .collect();
    for (rel, f) in &files {
        if f.original == f.current && f.renamed_from.is_none() {
            continue;
        }
        if renamed_away.contains(rel) && f.current.is_none() {
            continue; // shown as the rename's source
        }
        if let Some(c) = &f.current
            && c.len() > limits.max_file_bytes
        {
            return Err(PatchError::refused(
                rel.clone(),
                Refusal::TooLarge(format!("more than {} bytes", limits.max_file_bytes)),
            ));
        }
        let (section, n) = file_diff(rel, f, &files);
        diff.push_str(&section);
        changed += n;
        let change = match (&f.renamed_from, &f.original, &f.current) {
            (Some(from), _, _) => Change::Renamed { from: from.clone() },
            (None, None, Some(_)) => Change::Created,
            (None, Some(_), None) => Change::Deleted,
            _ => Change::Modified,
        };
        applied.push(AppliedFile {
            path: rel.clone(),
            change,
            relocated: f.relocated.clone(),
        });
    }
    if changed > limits.max_changed_lines {
        return Err(PatchError::refused(
            "(patch)",
            Refusal::TooLarge(format!(
                "{changed} changed lines, the limit is {}",
                limits.max_changed_lines
            )),
        ));
    }
    for (rel, f) in &files {
        if f.original == f.current {
            continue;
        }
        match &f.current {
            Some(c) => write_file(&f.abs, rel, c)?,
            None => std::fs::remove_file(&f.abs).map_err(|e| PatchError::Io {
                path: rel.clone(),
                context: "cannot delete",
                source: e,
            })?,
        }
    }
    Ok(Applied {
        files: applied,
        diff,
        changed_lines: u32::try_from(changed).unwrap_or(u32::MAX),
    })
}

/// The git-style diff section of one file and its number of changed lines.
fn file_diff(rel: &str, f: &Planned, all: &[(String, Planned)]) -> (String, usize) {
    let from = f.renamed_from.as_deref().unwrap_or(rel);
    let old = match &f.renamed_from {
        Some(src) => all
            .iter()
            .find(|(r, _)| r == src)
            .and_then(|(_, p)| p.original.clone()),
        None => f.original.clone(),
    };
    let mut head = format!("diff --git a/{from} b/{rel}\n");
    if f.renamed_from.is_some() && old == f.current {
        head.push_str("similarity index 100%\n");
    }
    match (&old, &f.current, &f.renamed_from) {
        (_, _, Some(src)) => {
            head.push_str(&format!("rename from {src}\nrename to {rel}\n"));
        }
        (None, Some(_), None) => head.push_str("new file mode 100644\n"),
        (Some(_), None, None) => head.push_str("deleted file mode 100644\n"),
        _ => {}
    }
    let old_text = old.as_deref().unwrap_or("");
    let new_text = f.current.as_deref().unwrap_or("");
    if old_text == new_text {
        return (head, 0);
    }
    let mut opts = diffy::DiffOptions::new();
    opts.set_original_filename(if old.is_some() {
        format!("a/{from}")
    } else {
        "/dev/null".to_owned()
    });
    opts.set_modified_filename(if f.current.is_some() {
        format!("b/{rel}")
    } else {
        "/dev/null".to_owned()
    });
    let patch = opts.create_patch(old_text, new_text);
    let n = patch
        .hunks()
        .iter()
        .flat_map(|h| h.lines())
        .filter(|l| !matches!(l, diffy::Line::Context(_)))
        .count();
    head.push_str(&patch.to_string());
    (head, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hunk(start: usize, lines: &[&str]) -> Hunk {
        let lines: Vec<Line> = lines
            .iter()
            .map(|l| {
                let (t, s) = l.split_at(1);
                match t {
                    "-" => Line::Remove(s.into()),
                    "+" => Line::Add(s.into()),
                    _ => Line::Context(s.into()),
                }
            })
            .collect();
        Hunk {
            old_start: start,
            old_len: 0,
            new_start: start,
            new_len: 0,
            lines,
            new_no_newline: false,
        }
    }

    #[test]
    fn exact_then_relocated_then_ambiguous() {
        let old = "a\nb\nc\nd\ne\n";
        let (t, moved) = apply_hunks(old, &[hunk(2, &[" b", "-c", "+C", " d"])]).unwrap();
        assert_eq!(t, "a\nb\nC\nd\ne\n");
        assert!(moved.is_empty());
        let (t, moved) = apply_hunks(old, &[hunk(40, &[" b", "-c", "+C", " d"])]).unwrap();
        assert_eq!(t, "a\nb\nC\nd\ne\n");
        assert_eq!(moved[0].actual_line, 2);
        let e = apply_hunks("x\ny\nx\ny\n", &[hunk(9, &[" x", "-y", "+z"])]).unwrap_err();
        assert_eq!(
            e,
            HunkError::Ambiguous {
                hunk: 1,
                lines: vec![1, 3]
            }
        );
        // the stated place wins when it matches, even if others do too
        let (t, _) = apply_hunks("x\ny\nx\ny\n", &[hunk(3, &[" x", "-y", "+z"])]).unwrap();
        assert_eq!(t, "x\ny\nx\nz\n");
    }

    #[test]
    fn whitespace_tolerance_keeps_the_files_text() {
        let (t, moved) = apply_hunks(
            "def f():  \n    return 1\n",
            &[hunk(1, &[" def f():", "-    return 1", "+    return 2"])],
        )
        .unwrap();
        assert_eq!(t, "def f():  \n    return 2\n");
        assert!(moved[0].whitespace_tolerant);
    }

    #[test]
    fn newline_at_eof_and_crlf() {
        let mut h = hunk(1, &["-a", "+b"]);
        h.new_no_newline = true;
        assert_eq!(apply_hunks("a\n", &[h]).unwrap().0, "b");
        assert_eq!(
            apply_hunks("x\r\na\r\n", &[hunk(2, &["-a", "+b"])])
                .unwrap()
                .0,
            "x\r\nb\r\n"
        );
        assert_eq!(apply_hunks("", &[hunk(0, &["+new"])]).unwrap().0, "new\n");
        assert_eq!(
            apply_hunks("keep", &[hunk(0, &["+top"])]).unwrap().0,
            "top\nkeep"
        );
    }

    #[test]
    fn replace_once_is_unique() {
        assert_eq!(replace_once("a\nb\n", "b\n", "c\n").unwrap(), "a\nc\n");
        assert!(matches!(
            replace_once("b\nb\n", "b\n", "c\n"),
            Err(HunkError::Ambiguous { .. })
        ));
        assert_eq!(replace_once("a  \nb\n", "a\nb\n", "z\n").unwrap(), "z\n");
        assert!(matches!(
            replace_once("a\n", "q\n", "c\n"),
            Err(HunkError::NoMatch { .. })
        ));
    }
}
