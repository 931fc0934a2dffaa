//! A read-only index of the project's files: which are source, which are tests, manifests and
//! docs, and their text (size-capped). Triage never writes to the project.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use proto::messages::Language;

/// Directories that are never the user's code.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    "target",
    "vendor",
    "__pycache__",
    ".venv",
    "venv",
    "env",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    "dist",
    "build",
    ".coval",
    ".idea",
    ".vscode",
    ".next",
];
const MAX_FILES: usize = 20_000;
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Relative to the project root, with `/` separators.
    pub path: String,
    pub language: Language,
    pub is_test: bool,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct Project {
    pub root: PathBuf,
    /// Source files by relative path.
    pub files: BTreeMap<String, SourceFile>,
    pub manifests: Vec<String>,
    pub docs: Vec<String>,
    /// Files skipped because the scan hit its limits.
    pub truncated: bool,
}

#[derive(Debug)]
pub enum ScanError {
    NotADirectory(PathBuf),
    Unreadable(PathBuf, String),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::NotADirectory(p) => write!(
                f,
                "source directory {} does not exist or is not a directory",
                p.display()
            ),
            ScanError::Unreadable(p, e) => write!(f, "cannot read {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ScanError {}

fn is_manifest(name: &str) -> bool {
    matches!(
        name,
        "pyproject.toml"
            | "setup.py"
            | "setup.cfg"
            | "requirements.txt"
            | "Pipfile"
            | "package.json"
            | "go.mod"
            | "Cargo.toml"
            | "pom.xml"
            | "build.gradle"
            | "build.gradle.kts"
            | "Gemfile"
            | "composer.json"
            | "Makefile"
            | "CMakeLists.txt"
    )
}

fn is_doc(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("readme") || lower.ends_with(".md") || lower.ends_with(".rst")
}

impl Project {
    pub fn scan(root: &Path) -> Result<Project, ScanError> {
        if !root.is_dir() {
            return Err(ScanError::NotADirectory(root.to_owned()));
        }
        let mut p = Project {
            root: root.to_owned(),
            ..Default::default()
        };
        let mut stack = vec![root.to_owned()];
        let mut seen = 0usize;
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if dir == root => return Err(ScanError::Unreadable(dir, e.to_string())),
                Err(_) => continue,
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                // Never follow symlinks: they may lead out of the project.
                let Ok(ft) = e.file_type() else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if ft.is_dir() {
                    if !SKIP_DIRS.contains(&name.as_str()) && !name.starts_with('.') {
                        stack.push(path);
                    }
                    continue;
                }
                if !ft.is_file() {
                    continue;
                }
                seen += 1;
                if seen > MAX_FILES {
                    p.truncated = true;
                    return Ok(p);
                }
                let Some(rel) = relative(root, &path) else {
                    continue;
                };
                if is_manifest(&name) {
                    p.manifests.push(rel.clone());
                }
                if is_doc(&name) {
                    p.docs.push(rel.clone());
                }
                let Some(language) = vocab::language_of(&rel) else {
                    continue;
                };
                if e.metadata()
                    .map(|m| m.len() > MAX_FILE_BYTES)
                    .unwrap_or(true)
                {
                    p.truncated = true;
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let is_test = vocab::is_test_path(&rel);
                p.files.insert(
                    rel.clone(),
                    SourceFile {
                        path: rel,
                        language,
                        is_test,
                        text,
                    },
                );
            }
        }
        Ok(p)
    }

    /// The language most of the non-test code is in.
    pub fn main_language(&self) -> Language {
        let mut counts: BTreeMap<String, (usize, Language)> = BTreeMap::new();
        for f in self.files.values().filter(|f| !f.is_test) {
            let e = counts
                .entry(format!("{:?}", f.language))
                .or_insert((0, f.language));
            e.0 += f.text.lines().count();
        }
        counts
            .into_values()
            .max_by_key(|(n, _)| *n)
            .map(|(_, l)| l)
            .unwrap_or_default()
    }

    pub fn source_files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.values().filter(|f| !f.is_test)
    }

    pub fn test_files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.values().filter(|f| f.is_test)
    }

    /// The project file a path from a log refers to: an exact relative path, or the project
    /// file whose path is the longest component-wise suffix of it (logs often carry absolute
    /// paths from another machine). Ambiguous matches give `None`.
    pub fn resolve(&self, log_path: &str) -> Option<&SourceFile> {
        let cleaned = log_path
            .trim()
            .trim_start_matches("file://")
            .replace('\\', "/");
        let rel = cleaned.trim_start_matches("./");
        if let Some(f) = self.files.get(rel) {
            return Some(f);
        }
        let root = self.root.to_string_lossy().replace('\\', "/");
        if let Some(stripped) = cleaned.strip_prefix(&format!("{}/", root.trim_end_matches('/')))
            && let Some(f) = self.files.get(stripped)
        {
            return Some(f);
        }
        let parts: Vec<&str> = cleaned
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        let mut best: Option<(usize, &SourceFile)> = None;
        let mut tie = false;
        for f in self.files.values() {
            let fp: Vec<&str> = f.path.split('/').collect();
            let n = fp
                .iter()
                .rev()
                .zip(parts.iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            // The whole project path ends the log path (a foreign root), or the log path is
            // a tail of the project path (a bare file name).
            if n == 0 || (n < fp.len() && n < parts.len()) {
                continue;
            }
            match best {
                Some((m, _)) if m > n => {}
                Some((m, _)) if m == n => tie = true,
                _ => {
                    best = Some((n, f));
                    tie = false;
                }
            }
        }
        if tie { None } else { best.map(|(_, f)| f) }
    }
}

fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_foreign_absolute_paths_by_suffix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::create_dir_all(dir.path().join("tests")).unwrap();
        std::fs::write(dir.path().join("app/calc.py"), "def f():\n    return 1\n").unwrap();
        std::fs::write(dir.path().join("app/util.py"), "x = 1\n").unwrap();
        std::fs::write(
            dir.path().join("tests/test_calc.py"),
            "def test_f():\n    pass\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "# x\n").unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), "").unwrap();
        let p = Project::scan(dir.path()).unwrap();
        assert_eq!(
            p.resolve("/ci/build/42/app/calc.py").unwrap().path,
            "app/calc.py"
        );
        assert_eq!(p.resolve("app/calc.py").unwrap().path, "app/calc.py");
        assert_eq!(p.resolve("calc.py").unwrap().path, "app/calc.py");
        assert!(p.resolve("/usr/lib/python3.11/json/decoder.py").is_none());
        assert!(p.resolve("/other/app/nothere.py").is_none());
        assert!(p.files["tests/test_calc.py"].is_test);
        assert_eq!(p.manifests, ["pyproject.toml"]);
        assert_eq!(p.docs, ["README.md"]);
        assert!(Project::scan(&dir.path().join("missing")).is_err());
    }
}
