//! Candidate patches: parse unified diffs (git-style and plain, many files, new and deleted
//! files, renames), search/replace blocks and whole-file edits into typed [`Edit`]s, and apply
//! them to a copy of a project. Hunks apply at their line numbers when the context matches
//! there; otherwise they are located by their context and removed lines, and only an
//! unambiguous match (exactly one place) is accepted. Unsafe edits are refused with a typed
//! [`Refusal`]: absolute paths, `..`, `.git/`, symlinks (created or written through), mode
//! changes, binary patches, oversize patches. The result carries a normalised, git-applicable
//! unified diff of what was applied and its count of changed lines.
//!
//! Pure file work on a copy: it must never import the sandbox, the bus or a stage.

mod apply;
mod parse;

use std::path::Path;

pub use apply::{HunkPlacement, apply_hunks};
pub use parse::{parse_diff, parse_search_replace, parse_whole_files};

/// One file's unified diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The path before the change (`None`: `/dev/null`, a new file), as written in the patch.
    pub old_path: Option<String>,
    /// The path after the change (`None`: `/dev/null`, a deleted file).
    pub new_path: Option<String>,
    pub hunks: Vec<Hunk>,
    /// Paths carry git's `a/` and `b/` prefixes.
    pub git_prefixes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// 1-based first line in the old file (for an empty old side: the line after which the
    /// new lines go; 0 = the start).
    pub old_start: usize,
    pub old_len: usize,
    pub new_start: usize,
    pub new_len: usize,
    pub lines: Vec<Line>,
    /// `\ No newline at end of file` after the new side's last line.
    pub new_no_newline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Context(String),
    Remove(String),
    Add(String),
}

/// One change to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Diff(FileDiff),
    /// Replace the one occurrence of `search` (empty: create the file with `replace`).
    SearchReplace {
        path: String,
        search: String,
        replace: String,
    },
    /// The file's complete new content.
    WholeFile {
        path: String,
        content: String,
    },
}

/// Caps on what a patch may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchLimits {
    /// Size of the patch text.
    pub max_bytes: usize,
    /// Added plus removed lines.
    pub max_changed_lines: usize,
    pub max_files: usize,
    /// Size of any file read or written.
    pub max_file_bytes: usize,
}

impl Default for PatchLimits {
    fn default() -> PatchLimits {
        PatchLimits {
            max_bytes: 1 << 20,
            max_changed_lines: 10_000,
            max_files: 200,
            max_file_bytes: 8 << 20,
        }
    }
}

/// Why an edit is refused outright (as opposed to failing to apply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("absolute paths are not allowed")]
    AbsolutePath,
    #[error("`..` components are not allowed")]
    ParentDir,
    #[error("nothing under .git/ may be changed")]
    GitDir,
    #[error("creating a symlink is not allowed")]
    CreatesSymlink,
    #[error("`{0}` is a symlink; writing through it is not allowed")]
    ThroughSymlink(String),
    #[error("the path resolves outside the project")]
    OutsideTree,
    #[error("file mode changes are not allowed")]
    ModeChange,
    #[error("binary patches and binary files are not supported")]
    Binary,
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0} is not supported")]
    Unsupported(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("cannot parse the patch at line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("the text holds no edits: {0}")]
    Empty(String),
    #[error("`{path}`: refused: {refusal}")]
    Refused { path: String, refusal: Refusal },
    #[error("`{path}`, hunk {hunk}: {reason}")]
    NoMatch {
        path: String,
        hunk: usize,
        reason: String,
    },
    #[error(
        "`{path}`, hunk {hunk}: the context matches {count} places (lines {lines}); refusing to guess"
    )]
    Ambiguous {
        path: String,
        hunk: usize,
        count: usize,
        lines: String,
    },
    #[error("`{path}` does not exist")]
    Missing { path: String },
    #[error("`{path}` already exists")]
    Exists { path: String },
    #[error("`{path}`: {context}: {source}")]
    Io {
        path: String,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl PatchError {
    /// The typed refusal, if this error is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            PatchError::Refused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }

    pub(crate) fn refused(path: impl Into<String>, refusal: Refusal) -> PatchError {
        PatchError::Refused {
            path: path.into(),
            refusal,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    Modified,
    Deleted,
    Renamed { from: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedFile {
    /// Relative path, `/`-separated.
    pub path: String,
    pub change: Change,
    /// Hunks that applied away from their stated line numbers.
    pub relocated: Vec<HunkPlacement>,
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub files: Vec<AppliedFile>,
    /// A git-applicable unified diff of exactly what changed.
    pub diff: String,
    /// Added plus removed lines in `diff`.
    pub changed_lines: u32,
}

/// Parses any supported format: search/replace blocks when the text has a `SEARCH` marker,
/// a unified diff when it has diff headers or hunks, else whole-file blocks.
pub fn parse(text: &str, limits: &PatchLimits) -> Result<Vec<Edit>, PatchError> {
    if text.len() > limits.max_bytes {
        return Err(PatchError::refused(
            "(patch)",
            Refusal::TooLarge(format!(
                "{} bytes, the limit is {}",
                text.len(),
                limits.max_bytes
            )),
        ));
    }
    let edits = if text.lines().any(parse::is_search_marker) {
        parse_search_replace(text)?
    } else if parse::looks_like_diff(text) {
        parse_diff(text)?.into_iter().map(Edit::Diff).collect()
    } else {
        parse_whole_files(text)?
    };
    check_size(&edits, limits)?;
    Ok(edits)
}

fn check_size(edits: &[Edit], limits: &PatchLimits) -> Result<(), PatchError> {
    if edits.len() > limits.max_files {
        return Err(PatchError::refused(
            "(patch)",
            Refusal::TooLarge(format!(
                "{} file edits, the limit is {}",
                edits.len(),
                limits.max_files
            )),
        ));
    }
    let lines: usize = edits
        .iter()
        .map(|e| match e {
            Edit::Diff(d) => d
                .hunks
                .iter()
                .flat_map(|h| &h.lines)
                .filter(|l| !matches!(l, Line::Context(_)))
                .count(),
            Edit::SearchReplace {
                search, replace, ..
            } => search.lines().count() + replace.lines().count(),
            Edit::WholeFile { content, .. } => content.lines().count(),
        })
        .sum();
    if lines > limits.max_changed_lines {
        return Err(PatchError::refused(
            "(patch)",
            Refusal::TooLarge(format!(
                "{lines} changed lines, the limit is {}",
                limits.max_changed_lines
            )),
        ));
    }
    Ok(())
}

/// Applies `edits` to the tree at `root` (a copy: it is modified in place). Every edit is
/// checked and computed before anything is written, so a refused or failing patch leaves the
/// tree as it was.
pub fn apply(root: &Path, edits: &[Edit], limits: &PatchLimits) -> Result<Applied, PatchError> {
    check_size(edits, limits)?;
    apply::apply(root, edits, limits)
}

/// Copies `src` to `dst` (which must not exist) and applies `edits` there.
pub fn apply_to_copy(
    src: &Path,
    dst: &Path,
    edits: &[Edit],
    limits: &PatchLimits,
) -> Result<Applied, PatchError> {
    if dst.exists() {
        return Err(PatchError::Exists {
            path: dst.display().to_string(),
        });
    }
    vocab::tree::copy_project(src, dst).map_err(|e| PatchError::Io {
        path: src.display().to_string(),
        context: "cannot copy the project",
        source: e,
    })?;
    apply(dst, edits, limits)
}
