//! Fault localisation: rank the project's files and lines by suspicion.
//!
//! Evidence, strongest first: the innermost project frames of the trace (each frame further out
//! counts less); when the failure is in a test, the code under test (the test's local imports,
//! and the definitions of the functions called on the failing line); the local imports of the
//! innermost code frame. For Python, `ochiai` ranks lines by spectrum (line coverage of passing
//! and failing tests) when a sandbox has run the tests with coverage.

use std::collections::{BTreeMap, HashMap, HashSet};

use proto::messages::{Frame, Language, Suspect};
use regex::Regex;

use crate::metrics::FileMetrics;
use crate::project::{Project, SourceFile};

const FRAME_DECAY: f64 = 0.7;
const TEST_FRAME_WEIGHT: f64 = 0.5;
const UNDER_TEST: f64 = 0.6;
const CALLED_FROM_TEST: f64 = 0.75;
const IMPORTED: f64 = 0.2;

#[derive(Default)]
struct Ranking {
    by_place: BTreeMap<(String, Option<u32>), (f64, String)>,
}

impl Ranking {
    fn add(&mut self, file: &str, line: Option<u32>, score: f64, reason: String) {
        let e = self
            .by_place
            .entry((file.to_owned(), line))
            .or_insert((0.0, String::new()));
        if score > e.0 {
            *e = (score, reason);
        }
    }

    fn into_suspects(self) -> Vec<Suspect> {
        let mut v: Vec<Suspect> = self
            .by_place
            .into_iter()
            .map(|((file, line), (score, reason))| Suspect {
                file,
                line,
                score: (score * 1000.0).round() / 1000.0,
                reason,
            })
            .collect();
        v.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });
        v.truncate(50);
        v
    }
}

/// Where the frames and failing tests point, in the project.
pub fn localise(
    project: &Project,
    frames: &[Frame],
    failing_tests: &[String],
    metrics: &HashMap<String, FileMetrics>,
) -> Vec<Suspect> {
    let mut r = Ranking::default();
    let mut weight = 1.0;
    let mut innermost_code: Option<&SourceFile> = None;
    let mut test_sites: Vec<(&SourceFile, Option<u32>)> = vec![];
    for f in frames.iter().filter(|f| f.in_project) {
        let Some(sf) = resolve_frame(project, f) else {
            continue;
        };
        let w = if sf.is_test {
            weight * TEST_FRAME_WEIGHT
        } else {
            weight
        };
        let what = f
            .function
            .as_deref()
            .map(|n| format!(" in `{n}`"))
            .unwrap_or_default();
        r.add(&sf.path, f.line, w, format!("trace frame{what}"));
        if sf.is_test {
            test_sites.push((sf, f.line));
        } else if innermost_code.is_none() {
            innermost_code = Some(sf);
        }
        weight *= FRAME_DECAY;
    }
    // Failing tests named by the runner (`tests/test_x.py::test_y`, `TestX`, `x_test.go`).
    for t in failing_tests {
        let file = t.split("::").next().unwrap_or(t);
        if let Some(sf) = project.resolve(file).filter(|s| s.is_test)
            && !test_sites.iter().any(|(s, _)| s.path == sf.path)
        {
            test_sites.push((sf, None));
        }
    }
    // The code under test.
    for (test, line) in &test_sites {
        let imported = local_imports(project, test);
        for dep in &imported {
            r.add(
                &dep.path,
                None,
                UNDER_TEST,
                format!("imported by the failing test {}", test.path),
            );
        }
        let called = line.map(|l| called_names(test, l)).unwrap_or_default();
        let candidates: Vec<&SourceFile> = if imported.is_empty() {
            project.source_files().collect()
        } else {
            imported.clone()
        };
        for dep in candidates {
            let Some(m) = metrics.get(&dep.path) else {
                continue;
            };
            for f in m.functions.iter().filter(|f| called.contains(&f.name)) {
                r.add(
                    &dep.path,
                    Some(f.start_line),
                    CALLED_FROM_TEST,
                    format!(
                        "`{}` is called on the failing line {}:{}",
                        f.name,
                        test.path,
                        line.unwrap_or(0)
                    ),
                );
            }
        }
    }
    if let Some(code) = innermost_code {
        for dep in local_imports(project, code) {
            r.add(
                &dep.path,
                None,
                IMPORTED,
                format!("imported by {}", code.path),
            );
        }
    }
    r.into_suspects()
}

/// Sets `resolved` to the project file `f` names (by path, by suffix for a trace from another
/// machine, by package for Java) and `test` from that file; a frame whose file the project
/// does not have keeps `test` as the log parser judged it from the path.
pub fn resolve_in_place(project: &Project, f: &mut Frame) {
    if !f.in_project {
        return;
    }
    if let Some(sf) = resolve_frame(project, f) {
        f.resolved = Some(sf.path.clone());
        f.test = sf.is_test;
    }
}

fn resolve_frame<'a>(project: &'a Project, f: &Frame) -> Option<&'a SourceFile> {
    if let Some(sf) = project.resolve(&f.file) {
        return Some(sf);
    }
    // Java frames name a file without its package directory: `at com.x.Calc.mean(Calc.java:12)`.
    let func = f.function.as_deref()?;
    let mut parts: Vec<&str> = func.split('.').collect();
    if parts.len() < 3 {
        return None;
    }
    parts.pop();
    parts.pop();
    let dir = parts.join("/");
    project.resolve(&format!("{dir}/{}", f.file))
}

fn called_names(file: &SourceFile, line: u32) -> HashSet<String> {
    static CALL: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    let Some(re) = CALL.get_or_init(|| Regex::new(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(").ok()) else {
        return HashSet::new();
    };
    let text = file
        .text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .unwrap_or("");
    re.captures_iter(text)
        .filter_map(|c| c.get(1).map(|m| m.as_str().to_owned()))
        .filter(|n| {
            !matches!(
                n.as_str(),
                "assert" | "assertEqual" | "expect" | "print" | "len" | "if" | "for" | "while"
            )
        })
        .collect()
}

/// Project files that `file` imports (Python, JavaScript/TypeScript, Go packages).
pub fn local_imports<'a>(project: &'a Project, file: &SourceFile) -> Vec<&'a SourceFile> {
    static PY: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    static JS: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    let mut out: Vec<&SourceFile> = vec![];
    let mut push = |sf: Option<&'a SourceFile>| {
        if let Some(sf) = sf.filter(|s| s.path != file.path && !s.is_test)
            && !out.iter().any(|o| o.path == sf.path)
        {
            out.push(sf);
        }
    };
    let dir = file.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    match file.language {
        Language::Python => {
            let Some(re) = PY.get_or_init(|| {
                Regex::new(r"(?m)^\s*(?:from\s+(\.*[\w.]*)\s+import\s+([\w, ]+)|import\s+([\w.]+))")
                    .ok()
            }) else {
                return out;
            };
            for c in re.captures_iter(&file.text) {
                let module = c
                    .get(1)
                    .or_else(|| c.get(3))
                    .map(|m| m.as_str())
                    .unwrap_or("");
                let dots = module.chars().take_while(|c| *c == '.').count();
                let name = module.trim_start_matches('.').replace('.', "/");
                let base = if dots > 0 {
                    let mut d: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
                    for _ in 1..dots {
                        d.pop();
                    }
                    d.join("/")
                } else {
                    String::new()
                };
                let join = |a: &str, b: &str| {
                    if a.is_empty() {
                        b.to_owned()
                    } else if b.is_empty() {
                        a.to_owned()
                    } else {
                        format!("{a}/{b}")
                    }
                };
                let m = join(&base, &name);
                push(project.files.get(&format!("{m}.py")));
                push(project.files.get(&format!("{m}/__init__.py")));
                // `from pkg import module`
                if let Some(names) = c.get(2) {
                    for n in names
                        .as_str()
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                    {
                        push(project.files.get(&format!("{}.py", join(&m, n))));
                    }
                }
            }
        }
        Language::JavaScript | Language::TypeScript => {
            let Some(re) = JS.get_or_init(|| {
                Regex::new(r#"(?:require\(\s*|from\s+|import\s+)['"](\.{1,2}/[^'"]+)['"]"#).ok()
            }) else {
                return out;
            };
            for c in re.captures_iter(&file.text) {
                let Some(spec) = c.get(1) else { continue };
                let joined = normalise(&format!("{dir}/{}", spec.as_str()));
                for ext in [
                    "",
                    ".js",
                    ".ts",
                    ".mjs",
                    ".cjs",
                    ".jsx",
                    ".tsx",
                    "/index.js",
                    "/index.ts",
                ] {
                    push(project.files.get(&format!("{joined}{ext}")));
                }
            }
        }
        Language::Go => {
            // Same package: the other non-test files of the directory.
            for sf in project.source_files() {
                let d = sf.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                if d == dir && sf.language == Language::Go {
                    push(Some(sf));
                }
            }
        }
        _ => {}
    }
    out
}

fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = vec![];
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            x => parts.push(x),
        }
    }
    parts.join("/")
}

/// Ochiai suspiciousness of each covered line: failed(l) / sqrt(total_failed · (failed(l) +
/// passed(l))). `runs` are (lines covered by one test, whether it failed).
pub fn ochiai(runs: &[(HashSet<(String, u32)>, bool)]) -> Vec<((String, u32), f64)> {
    let total_failed = runs.iter().filter(|(_, f)| *f).count() as f64;
    if total_failed == 0.0 {
        return vec![];
    }
    let mut counts: HashMap<&(String, u32), (f64, f64)> = HashMap::new();
    for (lines, failed) in runs {
        for l in lines {
            let e = counts.entry(l).or_default();
            if *failed {
                e.0 += 1.0;
            } else {
                e.1 += 1.0;
            }
        }
    }
    let mut v: Vec<((String, u32), f64)> = counts
        .into_iter()
        .filter(|(_, (f, _))| *f > 0.0)
        .map(|(l, (f, p))| (l.clone(), f / (total_failed * (f + p)).sqrt()))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ochiai_ranks_lines_run_only_by_failing_tests_first() {
        let l = |f: &str, n: u32| (f.to_owned(), n);
        let runs = vec![
            ([l("a.py", 1), l("a.py", 2)].into_iter().collect(), false),
            ([l("a.py", 1), l("a.py", 3)].into_iter().collect(), true),
            ([l("a.py", 1), l("a.py", 3)].into_iter().collect(), true),
        ];
        let r = ochiai(&runs);
        assert_eq!(r[0].0, l("a.py", 3));
        assert!((r[0].1 - 1.0).abs() < 1e-9);
        assert!(r.iter().all(|(x, _)| x != &l("a.py", 2)));
        let shared = r.iter().find(|(x, _)| x == &l("a.py", 1)).unwrap().1;
        assert!((shared - 2.0 / (2.0f64 * 3.0).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalise("src/app/../lib/./x"), "src/lib/x");
    }
}
