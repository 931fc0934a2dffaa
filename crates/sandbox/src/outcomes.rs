//! Per-test outcomes from what a test run left behind: JUnit XML reports (pytest, PHPUnit,
//! Surefire, vitest), jest's JSON results, `go test -json` events, TAP (`node --test`), cargo test, unittest and pytest
//! text output; when none of those is there, one outcome from the exit status. Every parser
//! takes arbitrary text (the sandboxed process wrote it) and never panics.

use proto::messages::{TestOutcome, TestStatus};

use super::RunResult;
use super::project::{ProjectKind, Runner};

/// Whether a test log says its run was cut by a time limit (a test that loops): one of the
/// phrases CI systems and test runners print when they stop a job, in the log's last 20 lines.
pub fn cut_by_time_limit(log: &str) -> bool {
    let tail: String = log
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    [
        "time limit",
        "timed out",
        "timeout",
        "exceeded the maximum execution time",
        "panic: test timed out",
    ]
    .iter()
    .any(|w| tail.contains(w))
}

/// The per-test outcomes of `result`, a run of `kind.test_cmd`.
pub fn parse_outcomes(kind: &ProjectKind, result: &RunResult) -> Vec<TestOutcome> {
    for (path, text) in &result.collected {
        let t = if path.ends_with(".xml") {
            parse_junit(text)
        } else if path.ends_with(".json") {
            parse_jest_json(text)
        } else {
            vec![]
        };
        if !t.is_empty() {
            return t;
        }
    }
    let out = &result.stdout;
    let err = &result.stderr;
    let specific = match kind.runner {
        Runner::GoTest => parse_go_json(out),
        Runner::NodeTest | Runner::Npm => parse_tap(out),
        Runner::Cargo => parse_cargo(out),
        Runner::Unittest => parse_unittest(err),
        Runner::Pytest => parse_pytest_text(out),
        _ => vec![],
    };
    if !specific.is_empty() {
        return specific;
    }
    // A custom command may still run a known tool: recognise its output.
    for text in [out, err] {
        for parse in [
            parse_go_json as fn(&str) -> Vec<TestOutcome>,
            parse_tap,
            parse_cargo,
            parse_pytest_text,
            parse_unittest,
        ] {
            let t = parse(text);
            if !t.is_empty() {
                return t;
            }
        }
    }
    let status = if result.success() {
        TestStatus::Passed
    } else if result.timed_out || result.oom_killed || result.output_truncated {
        TestStatus::Error
    } else {
        TestStatus::Failed
    };
    vec![TestOutcome {
        name: kind.test_cmd.join(" "),
        status,
    }]
}

/// Whether two test names denote the same test: `tests/test_x.py::test_y` and
/// `test_x.py::test_y` do, as do names that differ only in the runner's prefix.
pub fn same_test(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let last = |s: &str| {
        s.rsplit("::")
            .next()
            .unwrap_or(s)
            .rsplit(' ')
            .next()
            .unwrap_or(s)
            .to_owned()
    };
    let file = |s: &str| {
        s.split("::")
            .next()
            .and_then(|f| f.rsplit('/').next())
            .map(str::to_owned)
    };
    last(a) == last(b) && (a.contains("::") != b.contains("::") || file(a) == file(b))
}

fn outcome(name: impl Into<String>, status: TestStatus) -> TestOutcome {
    TestOutcome {
        name: name.into(),
        status,
    }
}

// ---------------------------------------------------------------- JUnit XML

/// Test cases of a JUnit XML report. Tolerates truncated and slightly malformed XML; names are
/// pytest node ids (`tests/test_x.py::TestC::test_y`) when the report carries a `file`
/// attribute (xunit1), else `classname::name`.
pub fn parse_junit(xml: &str) -> Vec<TestOutcome> {
    let mut out = vec![];
    let mut current: Option<TestOutcome> = None;
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = r.find("-->").map_or("", |i| &r[i + 3..]);
            continue;
        }
        if let Some(r) = rest.strip_prefix("<![CDATA[") {
            rest = r.find("]]>").map_or("", |i| &r[i + 3..]);
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            rest = rest.find('>').map_or("", |i| &rest[i + 1..]);
            continue;
        }
        let Some((tag, after)) = take_tag(&rest[1..]) else {
            break;
        };
        rest = after;
        match (tag.closing, tag.name) {
            (false, "testcase") => {
                if let Some(c) = current.take() {
                    out.push(c); // an unclosed testcase before this one
                }
                let t = outcome(junit_name(&tag.attrs), TestStatus::Passed);
                if tag.self_closing {
                    out.push(t);
                } else {
                    current = Some(t);
                }
            }
            (true, "testcase") => {
                if let Some(c) = current.take() {
                    out.push(c);
                }
            }
            (false, name) => {
                if let Some(c) = current.as_mut() {
                    let status = match name {
                        "failure" => Some(TestStatus::Failed),
                        "error" => Some(TestStatus::Error),
                        "skipped" => Some(TestStatus::Skipped),
                        _ => None,
                    };
                    // A failure outranks a skip; an error outranks both.
                    if let Some(s) = status {
                        c.status = match (c.status, s) {
                            (TestStatus::Error, _) | (_, TestStatus::Error) => TestStatus::Error,
                            (TestStatus::Failed, _) | (_, TestStatus::Failed) => TestStatus::Failed,
                            _ => s,
                        };
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    out
}

struct Tag<'a> {
    name: &'a str,
    closing: bool,
    self_closing: bool,
    attrs: Vec<(&'a str, String)>,
}

/// Parses a tag after its `<`; returns it and the text after its `>`.
fn take_tag(s: &str) -> Option<(Tag<'_>, &str)> {
    let (closing, s) = match s.strip_prefix('/') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let name_end = s
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .unwrap_or(s.len());
    let name = &s[..name_end];
    let mut rest = &s[name_end..];
    let mut attrs = vec![];
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("/>") {
            return Some((
                Tag {
                    name,
                    closing,
                    self_closing: true,
                    attrs,
                },
                r,
            ));
        }
        if let Some(r) = rest.strip_prefix('>') {
            return Some((
                Tag {
                    name,
                    closing,
                    self_closing: false,
                    attrs,
                },
                r,
            ));
        }
        if rest.is_empty() {
            return None;
        }
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(rest.len());
        if key_end == 0 {
            // A stray character: skip it.
            let skip = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[skip..];
            continue;
        }
        let key = &rest[..key_end];
        rest = rest[key_end..].trim_start();
        let Some(r) = rest.strip_prefix('=') else {
            attrs.push((key, String::new()));
            continue;
        };
        rest = r.trim_start();
        let quote = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => {
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .unwrap_or(rest.len());
                attrs.push((key, unescape(&rest[..end])));
                rest = &rest[end..];
                continue;
            }
        };
        let body = &rest[1..];
        let end = body.find(quote)?;
        attrs.push((key, unescape(&body[..end])));
        rest = &body[end + 1..];
    }
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';').filter(|&j| j <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .or_else(|| e.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn junit_name(attrs: &[(&str, String)]) -> String {
    let get = |k: &str| {
        attrs
            .iter()
            .find(|(a, _)| *a == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let name = get("name").unwrap_or("?");
    let classname = get("classname").or_else(|| get("class"));
    if let (Some(file), Some(cls)) = (get("file"), classname)
        && let Some(module) = file.strip_suffix(".py")
    {
        let module = module.trim_start_matches("./").replace('/', ".");
        if cls == module {
            return format!("{file}::{name}");
        }
        if let Some(class) = cls.strip_prefix(&format!("{module}.")) {
            return format!("{file}::{}::{name}", class.replace('.', "::"));
        }
    }
    match classname {
        Some(c) => format!("{c}::{name}"),
        None => name.to_owned(),
    }
}

// ---------------------------------------------------------------- jest --json

#[derive(serde::Deserialize)]
struct JestResults {
    #[serde(rename = "testResults", default)]
    files: Vec<JestFile>,
}

#[derive(serde::Deserialize)]
struct JestFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(rename = "assertionResults", default)]
    tests: Vec<JestTest>,
}

#[derive(serde::Deserialize)]
struct JestTest {
    #[serde(rename = "ancestorTitles", default)]
    ancestors: Vec<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    status: String,
}

/// Outcomes from jest's `--json` results: `file::describe > test`, the file relative to the
/// test files' common directory (jest writes absolute paths, which differ between sandboxes),
/// named as vitest's JUnit report names them. A test file that failed without running any test
/// (a syntax or import error) is one `Error` outcome named after the file. Empty when the text
/// is not jest's results (truncated, or another tool's JSON).
pub fn parse_jest_json(text: &str) -> Vec<TestOutcome> {
    let Ok(results) = serde_json::from_str::<JestResults>(text) else {
        return vec![];
    };
    // The common directory, component by component.
    let mut common: Option<Vec<&str>> = None;
    for f in &results.files {
        let dir: Vec<&str> = f
            .name
            .rsplit_once('/')
            .map_or("", |(d, _)| d)
            .split('/')
            .collect();
        common = Some(match common {
            None => dir,
            Some(c) => c
                .iter()
                .zip(&dir)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let common = common.unwrap_or_default().join("/");
    let mut out = vec![];
    for f in &results.files {
        let file = f
            .name
            .strip_prefix(common.as_str())
            .unwrap_or(&f.name)
            .trim_start_matches('/');
        if f.tests.is_empty() {
            if f.status == "failed" {
                out.push(outcome(file, TestStatus::Error));
            }
            continue;
        }
        for t in &f.tests {
            let status = match t.status.as_str() {
                "passed" => TestStatus::Passed,
                "failed" => TestStatus::Failed,
                _ => TestStatus::Skipped, // pending, skipped, todo, disabled, focused-out
            };
            let mut path = t.ancestors.clone();
            path.push(t.title.clone());
            out.push(outcome(format!("{file}::{}", path.join(" > ")), status));
        }
    }
    out
}

// ---------------------------------------------------------------- go test -json

#[derive(serde::Deserialize)]
struct GoEvent {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Package", default)]
    package: String,
    #[serde(rename = "Test", default)]
    test: Option<String>,
}

/// Outcomes from `go test -json` events; a package that failed without any test result (a
/// build failure) is one `Error` outcome named after the package.
pub fn parse_go_json(text: &str) -> Vec<TestOutcome> {
    let mut out: Vec<TestOutcome> = vec![];
    let mut failed_pkgs: Vec<String> = vec![];
    // Tests that started: one that never ended was running when the run stopped (a test
    // that loops, cut by the time limit) and did not pass.
    let mut started: Vec<String> = vec![];
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let Ok(ev) = serde_json::from_str::<GoEvent>(line) else {
            continue;
        };
        let status = match ev.action.as_str() {
            "pass" => TestStatus::Passed,
            "fail" => TestStatus::Failed,
            "skip" => TestStatus::Skipped,
            "run" => {
                if let Some(t) = &ev.test {
                    started.push(format!("{}::{t}", ev.package));
                }
                continue;
            }
            _ => continue,
        };
        match ev.test {
            Some(t) => out.push(outcome(format!("{}::{t}", ev.package), status)),
            None if status == TestStatus::Failed => failed_pkgs.push(ev.package),
            None => {}
        }
    }
    for name in started {
        if !out.iter().any(|o| o.name == name) {
            out.push(outcome(name, TestStatus::Failed));
        }
    }
    for pkg in failed_pkgs {
        let prefix = format!("{pkg}::");
        if !out.iter().any(|o| o.name.starts_with(&prefix)) {
            out.push(outcome(pkg, TestStatus::Error));
        }
    }
    out
}

// ---------------------------------------------------------------- TAP

/// Leaf test points of TAP output (node --test and others). Parents, whose status only
/// summarises their subtests, are left out; names carry their `# Subtest:` ancestors.
pub fn parse_tap(text: &str) -> Vec<TestOutcome> {
    let mut out = vec![];
    let mut stack: Vec<(usize, String)> = vec![];
    let mut prev_indent: Option<usize> = None;
    let mut in_yaml = false;
    for raw in text.lines() {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let line = raw.trim();
        // YAML diagnostics between `---` and `...` may quote anything, even "ok 1".
        if in_yaml {
            in_yaml = line != "...";
            continue;
        }
        if line == "---" {
            in_yaml = true;
            continue;
        }
        if let Some(name) = line.strip_prefix("# Subtest: ") {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            stack.push((indent, name.trim().to_owned()));
            continue;
        }
        let (ok, rest) = if let Some(r) = line.strip_prefix("not ok") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("ok") {
            (true, r)
        } else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue; // "okay", "oking": not a test point
        }
        // "ok 12 - name # SKIP reason"
        let rest = rest.trim_start();
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
        let (desc, directive) = split_directive(rest);
        while stack.last().is_some_and(|(i, _)| *i > indent) {
            stack.pop();
        }
        if stack.last().is_some_and(|(i, _)| *i == indent) {
            stack.pop();
        }
        let is_parent = prev_indent.is_some_and(|p| p > indent);
        prev_indent = Some(indent);
        if is_parent {
            continue;
        }
        let directive = directive.to_ascii_lowercase();
        let status = if directive.starts_with("skip") || directive.starts_with("todo") {
            TestStatus::Skipped
        } else if ok {
            TestStatus::Passed
        } else {
            TestStatus::Failed
        };
        let mut name: Vec<&str> = stack.iter().map(|(_, n)| n.as_str()).collect();
        name.push(&desc);
        out.push(outcome(name.join(" > "), status));
    }
    out
}

/// Splits "desc # DIRECTIVE" at the first unescaped `#`.
fn split_directive(s: &str) -> (String, String) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == b'#' {
            return (
                s[..i].trim().replace("\\#", "#"),
                s[i + 1..].trim().to_owned(),
            );
        }
        i += 1;
    }
    (s.trim().replace("\\#", "#"), String::new())
}

// ---------------------------------------------------------------- cargo, unittest, pytest text

/// `test path::name ... ok|FAILED|ignored` lines of cargo test.
pub fn parse_cargo(text: &str) -> Vec<TestOutcome> {
    text.lines()
        .filter_map(|l| {
            let rest = l.trim_end().strip_prefix("test ")?;
            let (name, result) = rest.rsplit_once(" ... ")?;
            let status = match result {
                "ok" => TestStatus::Passed,
                "FAILED" => TestStatus::Failed,
                r if r.starts_with("ignored") => TestStatus::Skipped,
                _ => return None,
            };
            Some(outcome(name.trim(), status))
        })
        .collect()
}

/// `test_x (module.Class.test_x) ... ok` lines of `python -m unittest -v`.
pub fn parse_unittest(text: &str) -> Vec<TestOutcome> {
    text.lines()
        .filter_map(|l| {
            let (head, result) = l.trim_end().rsplit_once(" ... ")?;
            let status = match result {
                "ok" | "expected failure" => TestStatus::Passed,
                "FAIL" | "unexpected success" => TestStatus::Failed,
                "ERROR" => TestStatus::Error,
                r if r.starts_with("skipped") => TestStatus::Skipped,
                _ => return None,
            };
            let (method, rest) = head.split_once(" (")?;
            let qual = rest.strip_suffix(')')?;
            if method.contains(' ') || qual.contains(' ') {
                return None;
            }
            // 3.11+: (module.Class.method); older: (module.Class)
            let name = if qual.ends_with(&format!(".{method}")) {
                qual.to_owned()
            } else {
                format!("{qual}.{method}")
            };
            Some(outcome(name, status))
        })
        .collect()
}

/// pytest's `-rA` summary (`PASSED tests/x.py::t`) and `-v` lines (`tests/x.py::t PASSED`).
pub fn parse_pytest_text(text: &str) -> Vec<TestOutcome> {
    let status_of = |w: &str| match w {
        "PASSED" | "XFAIL" => Some(TestStatus::Passed),
        "FAILED" | "XPASS" => Some(TestStatus::Failed),
        "ERROR" => Some(TestStatus::Error),
        "SKIPPED" => Some(TestStatus::Skipped),
        _ => None,
    };
    let mut out: Vec<TestOutcome> = vec![];
    for l in text.lines() {
        let mut words = l.split_whitespace();
        let (Some(a), Some(b)) = (words.next(), words.next()) else {
            continue;
        };
        let found = match (status_of(a), status_of(b)) {
            (Some(s), None) if b.contains("::") => Some((b, s)),
            (None, Some(s)) if a.contains("::") => Some((a, s)),
            _ => None,
        };
        if let Some((name, status)) = found {
            // The same test can appear in both forms; keep the first.
            if !out.iter().any(|o| o.name == name) {
                out.push(outcome(name, status));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const PYTEST_XUNIT1: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="0.05" timestamp="2026-01-01T00:00:00" hostname="sandbox"><testcase classname="tests.test_calc" name="test_add" file="tests/test_calc.py" line="3" time="0.001" /><testcase classname="tests.test_calc" name="test_div" file="tests/test_calc.py" line="7" time="0.001"><failure message="assert 2 == 3">def test_div():
&gt;       assert div(6, 3) == 3
E       assert 2 == 3</failure></testcase><testcase classname="tests.test_calc.TestMore" name="test_skip" file="tests/test_calc.py" line="12" time="0.000"><skipped type="pytest.skip" message="later">tests/test_calc.py:13: later</skipped></testcase><testcase classname="tests.test_calc" name="test_&lt;param&gt;[a&amp;b]" file="tests/test_calc.py" line="15"><error message="fixture 'x' not found"/></testcase></testsuite></testsuites>"#;

    #[test]
    fn junit_from_pytest() {
        let t = parse_junit(PYTEST_XUNIT1);
        let got: Vec<(&str, TestStatus)> = t.iter().map(|o| (o.name.as_str(), o.status)).collect();
        assert_eq!(
            got,
            [
                ("tests/test_calc.py::test_add", TestStatus::Passed),
                ("tests/test_calc.py::test_div", TestStatus::Failed),
                (
                    "tests/test_calc.py::TestMore::test_skip",
                    TestStatus::Skipped
                ),
                ("tests/test_calc.py::test_<param>[a&b]", TestStatus::Error),
            ]
        );
    }

    #[test]
    fn junit_survives_garbage() {
        for s in [
            "",
            "<",
            "<testcase",
            "<testcase name=\"x",
            "<testcase name='a' classname=b><failure",
            "<<<>>>&&&;;",
            "<testcase name=\"&#xFFFFFFFF;&#99999999999;&\"/>",
            "<!-- <testcase name=\"hidden\"/>",
            "<testcase name=é/>",
        ] {
            let _ = parse_junit(s);
        }
        let t = parse_junit("<testcase name='a' classname=b><failure");
        assert_eq!(t, vec![outcome("b::a", TestStatus::Passed)]);
        let t = parse_junit("<testcase name=\"x\" classname=\"Calc\"><failure/></testcase>");
        assert_eq!(t, vec![outcome("Calc::x", TestStatus::Failed)]);
    }

    #[test]
    fn go_json() {
        let text = r#"{"Time":"2026-01-01T00:00:00Z","Action":"start","Package":"example.com/calc"}
{"Action":"run","Package":"example.com/calc","Test":"TestAdd"}
{"Action":"output","Package":"example.com/calc","Test":"TestAdd","Output":"=== RUN   TestAdd\n"}
{"Action":"pass","Package":"example.com/calc","Test":"TestAdd","Elapsed":0}
{"Action":"fail","Package":"example.com/calc","Test":"TestSub","Elapsed":0}
{"Action":"skip","Package":"example.com/calc","Test":"TestLater","Elapsed":0}
{"Action":"fail","Package":"example.com/calc","Elapsed":0.01}
# example.com/broken
broken/x.go:3:1: syntax error
{"Action":"fail","Package":"example.com/broken","Elapsed":0}
"#;
        let t = parse_go_json(text);
        assert_eq!(
            t,
            [
                outcome("example.com/calc::TestAdd", TestStatus::Passed),
                outcome("example.com/calc::TestSub", TestStatus::Failed),
                outcome("example.com/calc::TestLater", TestStatus::Skipped),
                outcome("example.com/broken", TestStatus::Error),
            ]
        );
    }

    /// `go test -json` killed by the sandbox's limit while `TestReverse` looped (the run of
    /// the corpus bug go_fizz-2 in the Docker sandbox).
    #[test]
    fn go_json_cut_by_the_limit_fails_the_test_that_was_running() {
        let text = r#"{"Time":"2026-12-02T08:08:14.120235858Z","Action":"run","Package":"example.com/fizz","Test":"TestFizzBuzz"}
{"Time":"2026-12-02T08:08:14.120399853Z","Action":"output","Package":"example.com/fizz","Test":"TestFizzBuzz","Output":"=== RUN   TestFizzBuzz\n"}
{"Time":"2026-12-02T08:08:14.120470849Z","Action":"output","Package":"example.com/fizz","Test":"TestFizzBuzz","Output":"--- PASS: TestFizzBuzz (0.00s)\n"}
{"Time":"2026-12-02T08:08:14.121126327Z","Action":"pass","Package":"example.com/fizz","Test":"TestFizzBuzz","Elapsed":0}
{"Time":"2026-12-02T08:08:14.121358644Z","Action":"run","Package":"example.com/fizz","Test":"TestReverse"}
{"Time":"2026-12-02T08:08:14.121478883Z","Action":"output","Package":"example.com/fizz","Test":"TestReverse","Output":"=== RUN   TestReverse\n"}
Killed
"#;
        assert_eq!(
            parse_go_json(text),
            [
                outcome("example.com/fizz::TestFizzBuzz", TestStatus::Passed),
                outcome("example.com/fizz::TestReverse", TestStatus::Failed),
            ]
        );
    }

    #[test]
    fn cut_by_time_limit_reads_the_end_of_the_log() {
        assert!(cut_by_time_limit(
            "ok 1\nError: the test job exceeded its time limit (20 s) and was cancelled\n"
        ));
        assert!(cut_by_time_limit("panic: test timed out after 10m0s\n"));
        assert!(!cut_by_time_limit(
            "FAILED test_x.py::test_y - AssertionError\n"
        ));
    }

    #[test]
    fn tap_from_node() {
        let text = "TAP version 13
# Subtest: math
    # Subtest: adds
    ok 1 - adds
      ---
      duration_ms: 0.4
      ...
    # Subtest: subtracts
    not ok 2 - subtracts
      ---
      failureType: 'testCodeFailure'
      error: |-
        ok 7 - quoted in a message
      ...
    1..2
not ok 1 - math
  ---
  ...
# Subtest: top level
ok 2 - top level # SKIP not now
# Subtest: file failed to load
not ok 3 - file failed to load
1..3
# tests 3
";
        let t = parse_tap(text);
        assert_eq!(
            t,
            [
                outcome("math > adds", TestStatus::Passed),
                outcome("math > subtracts", TestStatus::Failed),
                outcome("top level", TestStatus::Skipped),
                outcome("file failed to load", TestStatus::Failed),
            ]
        );
    }

    #[test]
    fn jest_results_from_a_real_run() {
        // jest 29.7 `--ci --json` on three files: a failing and passing describe, skipped and
        // todo tests, nested describes, a file that does not parse (failure messages cut).
        let text = include_str!("testdata/jest-results.json");
        let t = parse_jest_json(text);
        assert_eq!(
            t,
            [
                outcome("sum.test.js::sum > adds", TestStatus::Failed),
                outcome("sum.test.js::sum > zero", TestStatus::Passed),
                outcome("sum.test.js::top level", TestStatus::Passed),
                outcome("src/more.test.js::skipped one", TestStatus::Skipped),
                outcome("src/more.test.js::later", TestStatus::Skipped),
                outcome("src/more.test.js::outer > inner > deep", TestStatus::Passed),
                outcome("src/broken.test.js", TestStatus::Error),
            ]
        );
        // Truncated, or some other tool's JSON: nothing, so the other readers get their turn.
        assert!(parse_jest_json(&text[..text.len() / 2]).is_empty());
        assert!(parse_jest_json("{\"a\": [1, 2]}").is_empty());
        assert!(parse_jest_json("[1,2]").is_empty());
    }

    #[test]
    fn cargo_unittest_and_pytest_text() {
        let c = parse_cargo(
            "running 3 tests\ntest a::b ... ok\ntest c ... FAILED\ntest d ... ignored, slow\n",
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[1], outcome("c", TestStatus::Failed));
        let u = parse_unittest(
            "test_add (test_calc.TestCalc.test_add) ... ok\ntest_sub (test_calc.TestCalc) ... FAIL\n",
        );
        assert_eq!(
            u,
            [
                outcome("test_calc.TestCalc.test_add", TestStatus::Passed),
                outcome("test_calc.TestCalc.test_sub", TestStatus::Failed),
            ]
        );
        let p = parse_pytest_text(
            "tests/t.py::test_a PASSED [50%]\nFAILED tests/t.py::test_b - assert 1 == 2\nPASSED tests/t.py::test_a\n",
        );
        assert_eq!(
            p,
            [
                outcome("tests/t.py::test_a", TestStatus::Passed),
                outcome("tests/t.py::test_b", TestStatus::Failed),
            ]
        );
    }

    #[test]
    fn exit_code_is_the_fallback() {
        let kind = ProjectKind {
            language: vocab::Language::Python,
            framework: String::new(),
            test_cmd: vec!["make".into(), "test".into()],
            runner: Runner::Custom,
            reports: vec![],
            env: vec![],
            origin: String::new(),
        };
        let mut r = RunResult {
            exit_code: Some(2),
            signal: None,
            timed_out: false,
            oom_killed: false,
            stdout: "nothing useful".into(),
            stderr: String::new(),
            output_truncated: false,
            duration: Duration::ZERO,
            timeout: Duration::from_secs(1),
            output_cap: 10,
            collected: BTreeMap::new(),
        };
        assert_eq!(
            parse_outcomes(&kind, &r),
            [outcome("make test", TestStatus::Failed)]
        );
        r.exit_code = Some(0);
        assert_eq!(parse_outcomes(&kind, &r)[0].status, TestStatus::Passed);
        r.collected.insert(
            "r.xml".into(),
            "<testcase name=\"t\" classname=\"c\"/>".into(),
        );
        assert_eq!(
            parse_outcomes(&kind, &r),
            [outcome("c::t", TestStatus::Passed)]
        );
    }
}
