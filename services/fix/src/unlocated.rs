//! Suspects for the search engine when triage localised nothing: a log that only says the job
//! was cut by a time limit (a test loops) names no file or line. The functions the failing
//! tests are named after (`TestReverse` → `Reverse`, `test_reverse` → `reverse`) are the
//! suspects; failing that, every source file of the project, lower.

use std::path::Path;

use proto::messages::Suspect;

/// At most this many source files are searched.
const MAX_FILES: usize = 12;

/// `name` without its runner's decoration: the last `::`/`/`/`.` part, without a `test`
/// prefix, lowercase, without underscores.
fn tested_name(test: &str) -> String {
    let last = test
        .rsplit("::")
        .next()
        .unwrap_or(test)
        .rsplit(['/', '.', ' '])
        .next()
        .unwrap_or(test);
    let lower = last.to_lowercase();
    lower
        .strip_prefix("test")
        .unwrap_or(&lower)
        .replace('_', "")
}

/// The name a line defines as a function (`def f(`, `func f(`, `func (s *T) f(`,
/// `function f(`), if it does.
fn defined_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let rest = t
        .strip_prefix("def ")
        .or_else(|| t.strip_prefix("async def "))
        .or_else(|| t.strip_prefix("function "))
        .or_else(|| t.strip_prefix("export function "))
        .or_else(|| {
            let r = t.strip_prefix("func ")?;
            // A method: skip its receiver.
            Some(match r.strip_prefix('(') {
                Some(m) => m.split_once(')')?.1.trim_start(),
                None => r,
            })
        })?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0 && rest[end..].starts_with('(')).then(|| &rest[..end])
}

/// Source files of a language the engine searches, outside tests and hidden or vendored
/// directories, relative to `root`, in name order.
fn source_files(root: &Path, searchable: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = vec![];
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                if !name.starts_with('.') && !matches!(name.as_str(), "node_modules" | "vendor") {
                    dirs.push(e.path());
                }
            } else if kind.is_file()
                && let Ok(rel) = e.path().strip_prefix(root)
            {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if searchable(&rel) && !vocab::is_test_path(&rel) {
                    out.push(rel);
                }
            }
        }
        if out.len() >= MAX_FILES {
            break;
        }
    }
    out.truncate(MAX_FILES);
    out
}

/// Suspects from the failing tests' names, or every searchable source file.
pub fn suspects(
    root: &Path,
    failing_tests: &[String],
    searchable: &dyn Fn(&str) -> bool,
) -> Vec<Suspect> {
    let files = source_files(root, searchable);
    let wanted: Vec<String> = failing_tests
        .iter()
        .map(|t| tested_name(t))
        .filter(|n| !n.is_empty())
        .collect();
    let mut named = vec![];
    for f in &files {
        let Ok(text) = std::fs::read_to_string(root.join(f)) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            if let Some(name) = defined_name(line)
                && wanted.contains(&name.to_lowercase().replace('_', ""))
            {
                named.push(Suspect {
                    file: f.clone(),
                    line: u32::try_from(i + 1).ok(),
                    score: 0.6,
                    reason: format!("`{name}`, the function the failing test is named after"),
                });
            }
        }
    }
    if !named.is_empty() {
        return named;
    }
    files
        .into_iter()
        .map(|file| Suspect {
            file,
            line: None,
            score: 0.3,
            reason: "a source file of the project (the log localised nothing)".into(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_point_at_the_functions_they_test() {
        assert_eq!(tested_name("example.com/fizz::TestReverse"), "reverse");
        assert_eq!(tested_name("tests/test_x.py::test_merge_sort"), "mergesort");
        assert_eq!(defined_name("func Reverse(n int) int {"), Some("Reverse"));
        assert_eq!(defined_name("func (s *Stack) Push(x int) {"), Some("Push"));
        assert_eq!(defined_name("    def merge_sort(xs):"), Some("merge_sort"));
        assert_eq!(defined_name("function gcd(a, b) {"), Some("gcd"));
        assert_eq!(defined_name("x := f(1)"), None);
    }

    #[test]
    fn suspects_are_the_named_function_else_every_source_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("fizz.go"), "package fizz\n\nfunc FizzBuzz(n int) string {\n\treturn \"\"\n}\n\nfunc Reverse(n int) int {\n\treturn n\n}\n").unwrap();
        std::fs::write(p.join("fizz_test.go"), "package fizz\n").unwrap();
        let go = |f: &str| f.ends_with(".go");
        let s = suspects(p, &["example.com/fizz::TestReverse".into()], &go);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].file.as_str(), s[0].line), ("fizz.go", Some(7)));
        let s = suspects(p, &["example.com/fizz::TestOther".into()], &go);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].file.as_str(), s[0].line), ("fizz.go", None));
    }
}
