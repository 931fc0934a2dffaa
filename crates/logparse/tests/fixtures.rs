//! Every real log under `tests/fixtures/logs` parses to what its `.expected.json` says.
//!
//! Each log goes through `text_from_bytes` and `parse`, and every field of the expected file
//! is compared: language, error_type, message, category, innermost project frame (file and
//! line), project and external frame counts, failing tests (as a set) and the cause (present
//! exactly when expected, with its type, message and innermost project frame). All mismatches
//! are printed as one table before the test fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use logparse::{Frame, Language, ParsedLog, parse, text_from_bytes};
use serde_json::Value;

const FIXTURE_COUNT: usize = 118;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/logs")
}

fn fixtures() -> Vec<PathBuf> {
    let mut logs = Vec::new();
    for lang in std::fs::read_dir(fixtures_dir()).expect("fixtures dir") {
        let lang = lang.expect("dir entry").path();
        if !lang.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&lang).expect("language dir") {
            let f = f.expect("dir entry").path();
            if f.extension().is_some_and(|e| e == "log") {
                logs.push(f);
            }
        }
    }
    logs.sort();
    logs
}

/// The fixtures name languages by ecosystem: "javascript" covers TypeScript compiler logs,
/// which the parser reports as TypeScript (recognised by a `.ts` source location).
fn expected_language(name: &str, innermost: &Value) -> Option<Language> {
    let ts_file = innermost["file"].as_str().is_some_and(|f| {
        [".ts", ".tsx", ".mts", ".cts"]
            .iter()
            .any(|e| f.ends_with(e))
    });
    Some(match name {
        "python" => Language::Python,
        "javascript" if ts_file => Language::TypeScript,
        "javascript" => Language::JavaScript,
        "go" => Language::Go,
        "rust" => Language::Rust,
        "java" => Language::Java,
        "ruby" => Language::Ruby,
        "php" => Language::Php,
        "c" => Language::C,
        _ => return None,
    })
}

fn frame_str(f: Option<&Frame>) -> String {
    match f {
        Some(f) => format!(
            "{}:{}",
            f.file,
            f.line.map_or("?".into(), |l| l.to_string())
        ),
        None => "null".into(),
    }
}

fn expected_frame_str(v: &Value) -> String {
    if v.is_null() {
        return "null".into();
    }
    format!("{}:{}", v["file"].as_str().unwrap_or("?"), v["line"])
}

struct Mismatches(Vec<(String, &'static str, String, String)>);

impl Mismatches {
    fn check(&mut self, case: &str, field: &'static str, expected: String, got: String) {
        if expected != got {
            self.0.push((case.to_string(), field, expected, got));
        }
    }
}

fn compare(case: &str, exp: &Value, got: &ParsedLog, m: &mut Mismatches) {
    let lang = exp["language"].as_str().unwrap_or("");
    m.check(
        case,
        "language",
        format!(
            "{:?}",
            expected_language(lang, &exp["innermost_project_frame"])
        ),
        format!("{:?}", Some(got.language)),
    );
    m.check(
        case,
        "error_type",
        exp["error_type"].as_str().unwrap_or("").into(),
        got.error_type.clone(),
    );
    m.check(
        case,
        "message",
        exp["message"].as_str().unwrap_or("").into(),
        got.message.clone(),
    );
    m.check(
        case,
        "category",
        exp["category"].as_str().unwrap_or("").into(),
        got.category.as_str().into(),
    );
    m.check(
        case,
        "innermost",
        expected_frame_str(&exp["innermost_project_frame"]),
        frame_str(got.innermost_project_frame()),
    );
    m.check(
        case,
        "project_frames",
        exp["project_frames"].to_string(),
        got.project_frame_count().to_string(),
    );
    m.check(
        case,
        "external_frames",
        exp["external_frames"].to_string(),
        got.external_frame_count().to_string(),
    );
    let mut want: Vec<String> = exp["failing_tests"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut have = got.failing_tests.clone();
    want.sort();
    have.sort();
    m.check(
        case,
        "failing_tests",
        format!("{want:?}"),
        format!("{have:?}"),
    );
    match (exp.get("cause"), got.cause.as_deref()) {
        (None, None) => {}
        (Some(c), Some(g)) => {
            m.check(
                case,
                "cause.error_type",
                c["error_type"].as_str().unwrap_or("").into(),
                g.error_type.clone(),
            );
            m.check(
                case,
                "cause.message",
                c["message"].as_str().unwrap_or("").into(),
                g.message.clone(),
            );
            m.check(
                case,
                "cause.innermost",
                expected_frame_str(&c["innermost_project_frame"]),
                frame_str(g.innermost_project_frame()),
            );
        }
        (Some(_), None) => m.check(case, "cause", "present".into(), "none".into()),
        (None, Some(g)) => m.check(
            case,
            "cause",
            "none".into(),
            format!("{}: {}", g.error_type, g.message),
        ),
    }
}

fn clip(s: &str) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() > 70 {
        format!("{}…", s.chars().take(69).collect::<String>())
    } else {
        s
    }
}

#[test]
fn every_fixture_matches_its_expected_json() {
    let logs = fixtures();
    assert_eq!(logs.len(), FIXTURE_COUNT, "fixture count changed");
    let mut m = Mismatches(Vec::new());
    let mut failed_cases = std::collections::BTreeSet::new();
    for log in &logs {
        let case = format!(
            "{}/{}",
            log.parent()
                .and_then(|p| p.file_name())
                .and_then(|s| s.to_str())
                .unwrap_or("?"),
            log.file_stem().and_then(|s| s.to_str()).unwrap_or("?")
        );
        let expected_path = log.with_extension("expected.json");
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).expect("expected.json"))
                .expect("valid json");
        let bytes = std::fs::read(log).expect("log");
        let text = text_from_bytes(&bytes).expect("fixture is a text log");
        let got = parse(&text);
        let before = m.0.len();
        compare(&case, &exp, &got, &mut m);
        if m.0.len() > before {
            failed_cases.insert(case);
        }
    }
    if !m.0.is_empty() {
        let mut table = String::new();
        let _ = writeln!(
            table,
            "{:<40} {:<16} {:<72} got",
            "case", "field", "expected"
        );
        for (case, field, exp, got) in &m.0 {
            let _ = writeln!(
                table,
                "{:<40} {:<16} {:<72} {}",
                case,
                field,
                clip(exp),
                clip(got)
            );
        }
        panic!(
            "{} of {} fixtures mismatch ({} fields):\n{table}",
            failed_cases.len(),
            logs.len(),
            m.0.len()
        );
    }
}
