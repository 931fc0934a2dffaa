//! Measured coverage, and spectrum-based localisation where per-test coverage exists. Python:
//! the tests run once in the sandbox under coverage.py with a context per test function; Ochiai
//! ranks the lines that failing tests run and passing tests do not, and T is the share of code
//! statements run. Go (`go test -vet=off -cover`) and Node.js (`node --test --experimental-test-coverage`)
//! give T only.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use proto::messages::{Suspect, TestStatus};
use sandbox::{self, Sandbox};
use settings::SandboxConfig;

use crate::localise::ochiai;
use vocab::{Language, is_test_path};

const REPORT_DIR: &str = ".coval-report";
/// Passing tests run under coverage beside the failing ones, when the log names the failing
/// ones: enough contrast for Ochiai, bounded however large the suite (a formatter's test
/// file of 176 cases took over 300 s under coverage on a loaded machine).
const CONTRAST: usize = 30;

/// Runs pytest under coverage with a context per test function and writes a JSON report.
const SCRIPT: &str = r#"import sys
try:
    import coverage
except ImportError:
    print("coval: coverage.py is not installed", file=sys.stderr)
    sys.exit(97)
cov = coverage.Coverage(data_file=".coval-report/.coverage", config_file=False, source=["."])
cov.set_option("json:show_contexts", True)
cov.start()
import json
import os
import pytest


class Ctx:
    """One coverage context per test item, named by its node id (parameters included: the
    failing and passing cases of one parametrised test are told apart)."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        cov.switch_context(item.nodeid)
        yield
        cov.switch_context("")


class Pick:
    """With COVAL_FAILING (node ids, one a line): those tests and at most COVAL_CONTRAST
    others, siblings of a failing test (the same function, other parameters) first."""

    def pytest_collection_modifyitems(self, session, config, items):
        failing = set(os.environ.get("COVAL_FAILING", "").splitlines())
        keep = [i for i in items if i.nodeid in failing]
        if not keep:
            return
        stems = {f.split("[")[0] for f in failing}
        rest = [i for i in items if i.nodeid not in failing]
        rest.sort(key=lambda i: i.nodeid.split("[")[0] not in stems)
        chosen = keep + rest[: int(os.environ.get("COVAL_CONTRAST", "30"))]
        ids = {i.nodeid for i in chosen}
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in ids])
        items[:] = [i for i in items if i.nodeid in ids]


rc = pytest.main(["-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1", "--junitxml=.coval-report/junit.xml"] + sys.argv[1:], plugins=[Pick(), Ctx()])
cov.stop()
cov.save()
cov.json_report(outfile=".coval-report/full.json")
# Compact: each context named once (`context_names`), lines list their indexes; a large
# project's report with a node id per line and test is megabytes.
with open(".coval-report/full.json") as fh:
    full = json.load(fh)
names, index = [], {}
for f in full.get("files", {}).values():
    f.pop("executed_lines", None)
    f.pop("missing_lines", None)
    f.pop("excluded_lines", None)
    f.pop("functions", None)
    f.pop("classes", None)
    ctxs = f.get("contexts") or {}
    for line, cs in ctxs.items():
        ctxs[line] = [index.setdefault(c, len(index)) for c in cs if c]
names = sorted(index, key=index.get)
full["context_names"] = names
with open(".coval-report/coverage.json", "w") as fh:
    json.dump(full, fh, separators=(",", ":"))
sys.exit(int(rc))
"#;

#[derive(Debug, Clone, Default)]
pub struct Spectrum {
    pub suspects: Vec<Suspect>,
    /// Statements of code files run by the tests / all their statements.
    pub coverage: Option<f64>,
    pub notes: Vec<String>,
}

/// Run the project's tests under coverage in the sandbox. Errors are notes, never failures:
/// triage goes on with the trace alone.
///
/// `failing`: the failing tests the log names. When they name test files of the project, only
/// those files run (their passing tests are the contrast Ochiai needs): a large suite's whole
/// run under coverage would cost minutes before any fix is tried.
pub async fn python(cfg: &SandboxConfig, root: &Path, failing: &[String]) -> Spectrum {
    let prepared = match prepare(cfg, root, Language::Python).await {
        Ok(p) => p,
        Err(e) => return note(format!("coverage not measured: {e}")),
    };
    let detected = &prepared.detected;
    let mut argv: Vec<String> = vec!["python3".into(), "-c".into(), SCRIPT.into()];
    // The project's own path settings (a src layout's `-o pythonpath=src`).
    let test_cmd = sandbox::detect_project(root)
        .map(|k| k.test_cmd)
        .unwrap_or_default();
    for w in test_cmd.windows(2) {
        if w[0] == "-o" && w[1].starts_with("pythonpath=") {
            argv.extend([w[0].clone(), w[1].clone()]);
        }
    }
    let files = test_files_of(root, failing);
    let narrowed = !files.is_empty();
    argv.extend(files);
    let mut spec = prepared.spec(cfg, Language::Python, root, argv);
    if narrowed {
        // The failing tests and a bounded contrast of passing ones (`CONTRAST`).
        spec.env.push(("COVAL_FAILING".into(), failing.join("\n")));
        spec.env
            .push(("COVAL_CONTRAST".into(), CONTRAST.to_string()));
    }
    spec.collect = vec![
        format!("{REPORT_DIR}/junit.xml"),
        format!("{REPORT_DIR}/coverage.json"),
    ];
    let run = match detected.sandbox.run(&spec).await {
        Ok(r) => r,
        Err(e) => return note(format!("coverage not measured: the sandbox failed ({e})")),
    };
    if run.exit_code == Some(97) {
        return note(format!(
            "coverage not measured: coverage.py is not installed in the {} sandbox",
            detected.sandbox.name()
        ));
    }
    let (Some(xml), Some(json)) = (
        run.collected.get(&format!("{REPORT_DIR}/junit.xml")),
        run.collected.get(&format!("{REPORT_DIR}/coverage.json")),
    ) else {
        return note(format!(
            "coverage not measured: the test run left no reports ({})",
            run.verdict()
        ));
    };
    let mut s = analyse(xml, json);
    if narrowed {
        s.notes
            .push(format!("coverage measured on the failing tests and at most {CONTRAST} passing tests of their files"));
    }
    s
}

/// The project's test files that hold `failing` tests (`tests/test_a.py::test_x[p]`), in
/// order, without repeats; nothing when a name has no file of the project.
fn test_files_of(root: &Path, failing: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for t in failing {
        let file = t.split("::").next().unwrap_or("");
        let ok = file.ends_with(".py")
            && vocab::tree::is_safe_relative(file)
            && !file.starts_with('-')
            && root.join(file).is_file();
        if !ok {
            return vec![];
        }
        if !out.iter().any(|f| f == file) {
            out.push(file.to_owned());
        }
    }
    out
}

/// The sandbox and the project's environment (built once per process and key: the MRE and
/// validation reuse it).
async fn prepare(
    cfg: &SandboxConfig,
    root: &Path,
    language: Language,
) -> Result<sandbox::Prepared, sandbox::PrepareError> {
    let kind = sandbox::detect_project(root)
        .filter(|k| k.language == language)
        .unwrap_or(sandbox::ProjectKind {
            language,
            framework: String::new(),
            test_cmd: vec![],
            runner: sandbox::Runner::Custom,
            reports: vec![],
            env: vec![],
            origin: String::new(),
        });
    sandbox::prepare(cfg, &kind, root, &sandbox::UserDirs::default()).await
}

/// Reads a coverage tool's output into T.
type CoverageParser = fn(&str) -> Option<f64>;

/// T for Go and Node.js projects, from their own coverage tools run in the sandbox.
pub async fn tool_coverage(cfg: &SandboxConfig, root: &Path, language: Language) -> Spectrum {
    let (argv, parse): (Vec<String>, CoverageParser) = match language {
        // Without vet: coverage is no verdict, and vet is most of a cold run (in coval/go,
        // 7.9-8.5 s with it, 1.6-2.4 s without, under load).
        Language::Go => (
            vec![
                "go".into(),
                "test".into(),
                "-vet=off".into(),
                "-cover".into(),
                "./...".into(),
            ],
            go_cover,
        ),
        Language::JavaScript => (
            vec![
                "node".into(),
                "--test".into(),
                "--experimental-test-coverage".into(),
            ],
            node_cover,
        ),
        _ => return Spectrum::default(),
    };
    let prepared = match prepare(cfg, root, language).await {
        Ok(p) => p,
        Err(e) => return note(format!("coverage not measured: {e}")),
    };
    let detected = &prepared.detected;
    let spec = prepared.spec(cfg, language, root, argv.clone());
    let run = match detected.sandbox.run(&spec).await {
        Ok(r) => r,
        Err(e) => return note(format!("coverage not measured: the sandbox failed ({e})")),
    };
    match parse(&format!("{}{}", run.stdout, run.stderr)) {
        Some(c) => Spectrum {
            coverage: Some(c),
            notes: vec![format!(
                "coverage T measured by `{}`: {:.0}% of lines",
                argv.join(" "),
                c * 100.0
            )],
            ..Default::default()
        },
        None => note(format!(
            "coverage not measured: `{}` reported none ({})",
            argv.join(" "),
            run.verdict()
        )),
    }
}

/// The mean of `coverage: N% of statements` over the packages `go test -cover` reports.
pub fn go_cover(out: &str) -> Option<f64> {
    let v: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("coverage: ").nth(1))
        .filter_map(|r| r.split('%').next()?.trim().parse::<f64>().ok())
        .collect();
    (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64 / 100.0).clamp(0.0, 1.0))
}

/// The mean line coverage of the code files (not the tests) in node's coverage table.
pub fn node_cover(out: &str) -> Option<f64> {
    let mut in_table = false;
    let mut v = vec![];
    for l in out.lines() {
        let l = l.trim_start_matches('#').trim();
        if l.starts_with("start of coverage report") {
            in_table = true;
            continue;
        }
        if l.starts_with("end of coverage report") {
            break;
        }
        let cols: Vec<&str> = l.split('|').map(str::trim).collect();
        if !in_table
            || cols.len() < 3
            || cols[0] == "file"
            || cols[0] == "all files"
            || cols[0].starts_with('-')
        {
            continue;
        }
        if is_test_path(cols[0]) {
            continue;
        }
        if let Ok(p) = cols[1].parse::<f64>() {
            v.push(p);
        }
    }
    (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64 / 100.0).clamp(0.0, 1.0))
}

pub(crate) fn note(n: String) -> Spectrum {
    Spectrum {
        notes: vec![n],
        ..Default::default()
    }
}

/// Ochiai and coverage from a JUnit report and a coverage.py JSON report with test contexts.
pub fn analyse(junit_xml: &str, coverage_json: &str) -> Spectrum {
    let outcomes = sandbox::outcomes::parse_junit(junit_xml);
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(coverage_json) else {
        return note("coverage not measured: unreadable coverage report".into());
    };
    let Some(files) = doc.get("files").and_then(|f| f.as_object()) else {
        return note("coverage not measured: the coverage report has no files".into());
    };
    // A compact report names each context once and lists indexes.
    let names: Vec<&str> = doc
        .get("context_names")
        .and_then(|n| n.as_array())
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    // A node id context (`tests/test_a.py::test_x[p]`) is the test's own outcome name;
    // `module.test_fn` contexts (coverage's `test_function`) match by module and function.
    let failed_by_context = |ctx: &str| -> Option<bool> {
        if ctx.contains("::") {
            return outcomes
                .iter()
                .find(|o| o.name == ctx)
                .map(|o| matches!(o.status, TestStatus::Failed | TestStatus::Error));
        }
        let (module, func) = ctx.rsplit_once('.')?;
        let module = module.rsplit('.').next().unwrap_or(module);
        outcomes
            .iter()
            .find(|o| {
                let (file, name) = o.name.rsplit_once("::").unwrap_or(("", &o.name));
                name == func
                    && file
                        .rsplit('/')
                        .next()
                        .is_some_and(|f| f.trim_end_matches(".py") == module)
            })
            .map(|o| matches!(o.status, TestStatus::Failed | TestStatus::Error))
    };
    let mut per_test: HashMap<String, (HashSet<(String, u32)>, bool)> = HashMap::new();
    let (mut covered, mut statements) = (0u64, 0u64);
    for (path, f) in files {
        // Only the project's own code: relative paths, no installed packages.
        if is_test_path(path) || path.starts_with('/') || path.contains("-packages/") {
            continue;
        }
        let summary = f.get("summary");
        covered += summary
            .and_then(|s| s.get("covered_lines"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        statements += summary
            .and_then(|s| s.get("num_statements"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        for (line, ctxs) in f
            .get("contexts")
            .and_then(|c| c.as_object())
            .into_iter()
            .flatten()
        {
            let Ok(line) = line.parse::<u32>() else {
                continue;
            };
            for ctx in ctxs.as_array().into_iter().flatten().filter_map(|c| {
                c.as_str().or_else(|| {
                    c.as_u64()
                        .and_then(|i| names.get(usize::try_from(i).ok()?).copied())
                })
            }) {
                let Some(failed) = failed_by_context(ctx) else {
                    continue;
                };
                let e = per_test
                    .entry(ctx.to_owned())
                    .or_insert_with(|| (HashSet::new(), failed));
                e.0.insert((path.clone(), line));
            }
        }
    }
    let runs: Vec<(HashSet<(String, u32)>, bool)> = per_test.into_values().collect();
    let failing = runs.iter().filter(|r| r.1).count();
    let ranked = kept(ochiai(&runs));
    let suspects = ranked
        .into_iter()
        .map(|((file, line), score)| Suspect {
            file,
            line: Some(line),
            score,
            reason: format!(
                "Ochiai {score:.2} over {} tests ({failing} failing)",
                runs.len()
            ),
        })
        .collect();
    let coverage = (statements > 0 && !runs.is_empty()).then(|| covered as f64 / statements as f64);
    let mut notes = vec![];
    if let Some(c) = coverage {
        notes.push(format!(
            "coverage T measured by coverage.py: {covered} of {statements} statements ({:.0}%)",
            c * 100.0
        ));
    }
    Spectrum {
        suspects,
        coverage,
        notes,
    }
}

/// Lines kept as suspects, best first.
const KEPT: usize = 20;

/// The `KEPT` best lines of a ranking. When they are all tied at the top score, the tie says
/// little (code that runs only when a test fails, such as a test helper's debug dump, ties
/// with the bug), so the `KEPT` best lines below that score are kept as well: a bug line that
/// passing tests also run still gets candidates, after the tied ones.
fn kept(ranked: Vec<((String, u32), f64)>) -> Vec<((String, u32), f64)> {
    let Some(top) = ranked.first().map(|r| r.1) else {
        return ranked;
    };
    let flat = ranked.len() > KEPT && ranked[KEPT - 1].1 >= top;
    let mut out: Vec<_> = ranked.iter().take(KEPT).cloned().collect();
    if flat {
        out.extend(ranked.into_iter().filter(|r| r.1 < top).take(KEPT));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_top_keeps_the_next_level_too() {
        let line = |n: u32, score: f64| (("src/a.py".to_owned(), n), score);
        // 20 lines tied at the top (a debug dump run only on failure), the bug line below.
        let mut flat: Vec<_> = (1..=20).map(|n| line(n, 1.0)).collect();
        flat.push(line(42, 0.7));
        flat.extend((100..150).map(|n| line(n, 0.3)));
        let k = kept(flat);
        assert_eq!(k.len(), 2 * KEPT);
        assert_eq!(
            k[KEPT],
            line(42, 0.7),
            "the best line below the tie comes right after it"
        );
        // A ranking whose kept lines differ keeps only the best ones.
        let mut steep: Vec<_> = (1..=5).map(|n| line(n, 1.0)).collect();
        steep.extend((10..60).map(|n| line(n, 0.5)));
        let k = kept(steep);
        assert_eq!(k.len(), KEPT);
        assert!(k.iter().all(|(l, _)| l.1 < 30));
        assert_eq!(kept(vec![line(1, 1.0)]).len(), 1);
        assert!(kept(vec![]).is_empty());
    }

    #[test]
    fn ochiai_from_real_report_shapes() {
        let xml = r#"<testsuites><testsuite><testcase classname="tests.test_p" name="test_a" file="tests/test_p.py"/><testcase classname="tests.test_p" name="test_b" file="tests/test_p.py"><failure message="x"/></testcase></testsuite></testsuites>"#;
        let json = r#"{"files": {"app/p.py": {"summary": {"covered_lines": 3, "num_statements": 4}, "contexts": {"1": [""], "2": ["test_p.test_a", "test_p.test_b"], "3": ["test_p.test_b"]}},
                     "tests/test_p.py": {"summary": {"covered_lines": 9, "num_statements": 9}, "contexts": {}}}}"#;
        let s = analyse(xml, json);
        assert_eq!(s.suspects[0].file, "app/p.py");
        assert_eq!(s.suspects[0].line, Some(3));
        assert!((s.suspects[0].score - 1.0).abs() < 1e-9);
        assert_eq!(s.coverage, Some(0.75));
        assert!(analyse("garbage", "{").coverage.is_none());
    }

    #[test]
    fn node_id_contexts_tell_the_cases_of_a_parametrised_test_apart() {
        // The compact shape the coverage script writes: contexts as indexes into
        // `context_names`, each a node id.
        let xml = r#"<testsuites><testsuite><testcase classname="tests.test_format" name="test_simple_format[numeric_literals]" file="tests/test_format.py"><failure message="x"/></testcase><testcase classname="tests.test_format" name="test_simple_format[comments]" file="tests/test_format.py"/><testcase classname="tests.test_format" name="test_simple_format[strings]" file="tests/test_format.py"/></testsuite></testsuites>"#;
        let json = r#"{"context_names": ["tests/test_format.py::test_simple_format[numeric_literals]", "tests/test_format.py::test_simple_format[comments]", "tests/test_format.py::test_simple_format[strings]"],
                     "files": {"src/black/numerics.py": {"summary": {"covered_lines": 2, "num_statements": 2}, "contexts": {"38": [0, 1], "42": [0]}},
                               "src/black/linegen.py": {"summary": {"covered_lines": 1, "num_statements": 1}, "contexts": {"10": [0, 1, 2]}}}}"#;
        let s = analyse(xml, json);
        assert_eq!(s.suspects[0].file, "src/black/numerics.py");
        assert_eq!(s.suspects[0].line, Some(42));
        assert!((s.suspects[0].score - 1.0).abs() < 1e-9);
        assert!(
            s.suspects
                .iter()
                .all(|x| x.line != Some(42) || x.file.ends_with("numerics.py"))
        );
    }

    #[test]
    fn go_and_node_coverage_from_their_real_output() {
        // `go test -cover ./...` (go 1.19) with a failing test.
        let go = "--- FAIL: TestDiv (0.00s)\n    calc_test.go:13: Div(6, 3) = 18, want 2\nFAIL\ncoverage: 100.0% of statements\nFAIL\texample.com/calc\t0.003s\nFAIL\n";
        assert_eq!(go_cover(go), Some(1.0));
        assert_eq!(
            go_cover(
                "ok  \ta\t0.1s\tcoverage: 50.0% of statements\nok  \tb\t0.1s\tcoverage: 100.0% of statements\n"
            ),
            Some(0.75)
        );
        // `node --test --experimental-test-coverage` (node 20).
        let node = "# start of coverage report\n# ------------------------------------------------------------------\n# file              | line % | branch % | funcs % | uncovered lines\n# ------------------------------------------------------------------\n# calc.js           |  80.00 |   100.00 |  100.00 | 4\n# test/calc.test.js | 100.00 |   100.00 |  100.00 | \n# ------------------------------------------------------------------\n# all files         |  90.00 |   100.00 |  100.00 |\n# ------------------------------------------------------------------\n# end of coverage report\n";
        assert_eq!(node_cover(node), Some(0.8));
        assert_eq!(node_cover("ok 1 - x"), None);
        assert_eq!(go_cover("no coverage here"), None);
    }
}

#[cfg(test)]
mod narrowing_tests {
    use super::test_files_of;

    #[test]
    fn the_coverage_run_takes_the_failing_tests_files_when_all_are_the_projects() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tests")).unwrap();
        std::fs::write(d.path().join("tests/test_format.py"), "").unwrap();
        std::fs::write(d.path().join("tests/test_a.py"), "").unwrap();
        let f = |v: &[&str]| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            test_files_of(d.path(), &v)
        };
        assert_eq!(
            f(&[
                "tests/test_format.py::test_simple_format[numeric_literals]",
                "tests/test_format.py::test_simple_format[x]",
                "tests/test_a.py::T::test_b",
            ]),
            ["tests/test_format.py", "tests/test_a.py"]
        );
        // A name without a file of the project (or outside it): the whole suite.
        assert!(f(&["test_mean"]).is_empty());
        assert!(f(&["tests/test_format.py::a", "tests/gone.py::b"]).is_empty());
        assert!(f(&["../x.py::a"]).is_empty());
        assert!(f(&[]).is_empty());
    }
}
