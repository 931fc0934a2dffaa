//! The parser on fixtures written in the styles real models answer in, including broken
//! answers: each fixture has its expectation here, and every fixture must have one.

use std::path::PathBuf;

use llm::{Edit, parse_response};

/// What one edit must look like: kind, path, text it must and must not contain.
struct Want {
    kind: &'static str,
    path: &'static str,
    has: &'static [&'static str],
    lacks: &'static [&'static str],
}

enum Expect {
    Edits(&'static [Want]),
    /// Parsing fails with a reason containing this.
    Fails(&'static str),
}

const fn w(
    kind: &'static str,
    path: &'static str,
    has: &'static [&'static str],
    lacks: &'static [&'static str],
) -> Want {
    Want {
        kind,
        path,
        has,
        lacks,
    }
}

const D: &str = "unified_diff";
const SR: &str = "search_replace";
const WF: &str = "whole_file";

const CASES: &[(&str, Expect)] = &[
    (
        "qwen25coder_diff_fenced.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            &[
                "--- a/app/calc.py\n+++ b/app/calc.py\n@@ -10,6 +10,8 @@ def divide(a, b):\n \n \n def average(values):\n+    if not values:\n",
            ],
            &["This keeps"],
        )]),
    ),
    (
        "qwen25coder_git_diff_two_files.txt",
        Expect::Edits(&[
            w(
                D,
                "app/calc.py",
                &[
                    "@@ -8,2 +8,4 @@",
                    "+        raise ValueError(\"division by zero\")\n",
                ],
                &["index 3b18e51", "__init__"],
            ),
            w(
                D,
                "app/__init__.py",
                &[
                    "--- a/app/__init__.py\n",
                    "@@ -0,0 +1,1 @@\n+from .calc import add, average, divide\n",
                ],
                &[],
            ),
        ]),
    ),
    (
        "deepseek_coder_plain_diff_unfenced.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            &[
                "--- a/app/calc.py\n+++ b/app/calc.py\n@@ -12,5 +12,7 @@\n",
                "     return total / len(values)\n",
            ],
            &["2024-05-01", "Non-empty lists", "The function now"],
        )]),
    ),
    (
        "deepseek_r1_think_then_diff.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            // The hunk declares 6/8 lines but has 5/7: counts are recomputed.
            &[
                "@@ -12,5 +12,7 @@ def divide(a, b):\n",
                "+    if not values:\n",
            ],
            &["max(len(values), 1)", "ignore previous"],
        )]),
    ),
    (
        "deepseek_r1_orphan_close_think.txt",
        Expect::Edits(&[w(
            SR,
            "shop/prices.py",
            &[
                "def parse_price(text):\n    return float(text.strip())\n=======\n",
                "replace(\",\", \".\")",
            ],
            &["The user wants"],
        )]),
    ),
    (
        "deepseek_r1_unclosed_think.txt",
        Expect::Fails("only reasoning"),
    ),
    (
        "codellama_whole_file_bold_path.txt",
        Expect::Edits(&[w(
            WF,
            "app/calc.py",
            &[
                "\"\"\"Small calculator",
                "    if not values:\n        return 0.0\n",
                "    return total / len(values)\n",
            ],
            &["```", "I added", "**"],
        )]),
    ),
    (
        "codellama_python_tags_file_comment.txt",
        Expect::Edits(&[w(
            WF,
            "app/calc.py",
            &[
                "\"\"\"Small calculator",
                "raise ValueError(\"cannot divide by zero\")",
            ],
            &["# File:", "[PYTHON]", "[/PYTHON]"],
        )]),
    ),
    (
        "mistral_search_replace_two_blocks.txt",
        Expect::Edits(&[
            w(
                SR,
                "app/calc.py",
                &[
                    "def average(values):\n    total = 0\n=======\n",
                    "        return 0.0\n",
                ],
                &["```"],
            ),
            w(
                SR,
                "app/calc.py",
                &[
                    "def divide(a, b):\n    return a / b\n=======\n",
                    "raise ValueError",
                ],
                &["```"],
            ),
        ]),
    ),
    (
        "mistral_whole_file_info_string.txt",
        Expect::Edits(&[w(
            WF,
            "app/utils/strings.py",
            &[
                "def normalise_name(name):\n",
                "    return name.strip().lower()\n",
            ],
            &["```", "The helper"],
        )]),
    ),
    (
        "granite_search_replace_file_header.txt",
        Expect::Edits(&[w(
            SR,
            "src/cart.js",
            &[
                "sum + item.price, 0);\n=======\n",
                "item.price * item.quantity",
            ],
            &["###"],
        )]),
    ),
    (
        "granite_json_files.txt",
        Expect::Edits(&[w(
            WF,
            "app/calc.py",
            &[
                "\"\"\"Small calculator used by the checkout service.\"\"\"\n",
                "    return sum(values) / len(values)\n",
            ],
            &["\\n"],
        )]),
    ),
    (
        "qwen25coder_json_edits_trailing_commas.txt",
        Expect::Edits(&[w(
            SR,
            "shop/prices.py",
            &[
                "    return float(text.strip())\n=======\n    return float(text.strip().replace(\",\", \".\"))\n",
            ],
            &[],
        )]),
    ),
    (
        "granite_json_diff_edit.txt",
        Expect::Edits(&[w(
            D,
            "src/cart.js",
            &[
                "--- a/src/cart.js\n+++ b/src/cart.js\n@@ -4,1 +4,1 @@\n",
                "+  const total = items.reduce((sum, item) => sum + item.price * item.quantity, 0);\n",
            ],
            &[],
        )]),
    ),
    ("malformed_truncated_diff.txt", Expect::Fails("cut off")),
    (
        "malformed_wrong_line_numbers.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            // Starts stay as the model wrote them (the patch module relocates by context);
            // counts are recomputed.
            &["@@ -40,5 +40,7 @@ def divide(a, b):\n"],
            &[],
        )]),
    ),
    (
        "malformed_missing_context.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            &[
                "@@ -17,1 +17,1 @@\n-    return total / len(values)\n+    return total / len(values) if values else 0.0\n",
            ],
            &["Change the return"],
        )]),
    ),
    (
        "malformed_hunk_header_without_counts.txt",
        Expect::Edits(&[
            w(
                D,
                "app/calc.py",
                &["@@ -12,2 +12,4 @@\n def average(values):\n"],
                &["conftest"],
            ),
            w(
                D,
                "tests/conftest.py",
                &["@@ -1,1 +1,2 @@\n import pytest\n+import sys\n"],
                &[],
            ),
        ]),
    ),
    (
        "malformed_prose_refusal.txt",
        Expect::Fails("no edit found"),
    ),
    (
        "malformed_nested_fences.txt",
        Expect::Edits(&[w(
            WF,
            "README.md",
            &[
                "# calc\n",
                "```python\nfrom app.calc import average\n",
                "average([])  # 0.0\n```\n",
                "Division by zero raises `ValueError`.\n",
            ],
            &["```markdown", "Update the usage"],
        )]),
    ),
    (
        "malformed_crlf_diff.txt",
        Expect::Edits(&[w(
            D,
            "src/cart.js",
            &["@@ -3,3 +3,3 @@ function cartTotal(items) {\n   // Sum every line item.\n"],
            &["\r"],
        )]),
    ),
    (
        "malformed_whole_file_merge_markers.txt",
        Expect::Edits(&[w(
            WF,
            "app/calc.py",
            &[
                "def average(values):\n    if not values:\n        return 0.0\n    total = 0\n    for v in values:\n",
            ],
            &["<<<<<<<", "=======", ">>>>>>>", "HEAD"],
        )]),
    ),
    (
        "malformed_json_nested_fence_content.txt",
        Expect::Edits(&[w(
            WF,
            "app/utils/strings.py",
            &["def normalise_name(name):\n    return name.strip().lower()\n"],
            &["```", "Here is"],
        )]),
    ),
    (
        "unsafe_absolute_path_diff.txt",
        Expect::Fails("is absolute"),
    ),
    (
        "unsafe_parent_dir_search_replace.txt",
        Expect::Fails("leaves the project"),
    ),
    (
        "malformed_search_replace_without_path.txt",
        Expect::Fails("names no file"),
    ),
    (
        "malformed_search_replace_truncated.txt",
        Expect::Fails("not closed with `>>>>>>> REPLACE`"),
    ),
    (
        "qwen25coder_headerless_hunk.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            &["--- a/app/calc.py\n+++ b/app/calc.py\n@@ -12,5 +12,7 @@"],
            &[],
        )]),
    ),
    (
        "codellama_unlabelled_snippet.txt",
        Expect::Fails("name no file"),
    ),
    (
        "malformed_context_line_without_space.txt",
        Expect::Fails("neither context"),
    ),
    (
        "qwen25coder_diff_and_full_file.txt",
        Expect::Edits(&[w(
            D,
            "app/calc.py",
            &["@@ -17,1 +17,3 @@ def average(values):\n"],
            &["For reference"],
        )]),
    ),
];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/responses")
}

/// The text an expectation's `has`/`lacks` look in.
fn text_of(e: &Edit) -> String {
    match e {
        Edit::UnifiedDiff { text } => text.clone(),
        Edit::SearchReplace {
            search, replace, ..
        } => format!("{search}=======\n{replace}"),
        Edit::WholeFile { content, .. } => content.clone(),
    }
}

#[test]
fn every_fixture_parses_as_expected() {
    let mut failures = Vec::new();
    for (name, expect) in CASES {
        let path = fixtures_dir().join(name);
        let answer = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = parse_response(&answer);
        match (expect, &got) {
            (Expect::Fails(reason), Err(e)) => {
                if !e.reason.contains(reason) {
                    failures.push(format!("{name}: error {:?} lacks {reason:?}", e.reason));
                }
            }
            (Expect::Fails(reason), Ok(edits)) => {
                failures.push(format!(
                    "{name}: expected failure {reason:?}, got {edits:#?}"
                ));
            }
            (Expect::Edits(_), Err(e)) => failures.push(format!("{name}: {e}")),
            (Expect::Edits(wants), Ok(edits)) => {
                if edits.len() != wants.len() {
                    failures.push(format!(
                        "{name}: {} edits, expected {}: {edits:#?}",
                        edits.len(),
                        wants.len()
                    ));
                    continue;
                }
                for (i, (e, want)) in edits.iter().zip(wants.iter()).enumerate() {
                    let text = text_of(e);
                    if e.kind() != want.kind {
                        failures.push(format!("{name}[{i}]: kind {} != {}", e.kind(), want.kind));
                    }
                    if e.path().as_deref() != Some(want.path) {
                        failures.push(format!("{name}[{i}]: path {:?} != {}", e.path(), want.path));
                    }
                    for h in want.has {
                        if !text.contains(h) {
                            failures.push(format!("{name}[{i}]: lacks {h:?} in\n{text}"));
                        }
                    }
                    for l in want.lacks {
                        if text.contains(l) {
                            failures.push(format!("{name}[{i}]: contains {l:?} in\n{text}"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_fixture_has_an_expectation() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    let known: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !known.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "fixtures without an expectation: {missing:?}"
    );
    assert!(names.len() >= 30, "{} fixtures", names.len());
}

#[test]
fn parsed_diffs_have_consistent_hunk_counts() {
    // Every normalised diff's headers match its bodies, so a strict applier accepts them.
    for (name, _) in CASES {
        let answer = std::fs::read_to_string(fixtures_dir().join(name)).unwrap_or_default();
        for e in parse_response(&answer).unwrap_or_default() {
            let Edit::UnifiedDiff { text } = e else {
                continue;
            };
            let mut lines = text.lines().peekable();
            while let Some(l) = lines.next() {
                let Some(ranges) = l.strip_prefix("@@ ") else {
                    continue;
                };
                let nums: Vec<u32> = ranges
                    .split(" @@")
                    .next()
                    .unwrap_or_default()
                    .split([' ', ',', '-', '+'])
                    .filter_map(|s| s.parse().ok())
                    .collect();
                let (mut old, mut new) = (0, 0);
                while let Some(b) = lines.peek() {
                    if b.starts_with("@@") {
                        break;
                    }
                    match b.as_bytes().first() {
                        Some(b' ') => {
                            old += 1;
                            new += 1
                        }
                        Some(b'-') => old += 1,
                        Some(b'+') => new += 1,
                        _ => {}
                    }
                    lines.next();
                }
                assert_eq!((nums[1], nums[3]), (old, new), "{name}: {l}");
            }
        }
    }
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "",
        "\u{feff}",
        "```",
        "```diff\n@@",
        "--- a\n+++ b\n@@ -1,99999999999 +1 @@\n-x",
        "<<<<<<< SEARCH\n",
        "<<<<<<< SEARCH\n=======\n",
        "{\"files\": [1, 2, {\"path\": 3}]}",
        "{\"edits\": [{\"path\": \"a.py\"}]}",
        "<think>",
        "</think>",
        "[PYTHON]\n",
        "@@ -\u{e9} +\u{e9} @@\n+x",
        "**é.py**\n```\nx\n```",
        "\r\r\r",
        "fileé: x\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE",
        "### Filé:é.py\n```\nx\n```",
    ];
    for s in inputs {
        let _ = parse_response(s);
    }
    // Every prefix of every fixture: truncation at any point is an error or edits, never a panic.
    for (name, _) in CASES {
        let answer = std::fs::read_to_string(fixtures_dir().join(name)).unwrap_or_default();
        let mut cut = 0;
        while cut < answer.len() {
            if answer.is_char_boundary(cut) {
                let _ = parse_response(&answer[..cut]);
            }
            cut += 1;
        }
    }
}

#[test]
fn paths_are_checked() {
    use llm::parse::check_path;
    assert_eq!(check_path("./app/calc.py").unwrap(), "app/calc.py");
    assert_eq!(check_path("app\\calc.py").unwrap(), "app/calc.py");
    for bad in [
        "/etc/passwd",
        "../x.py",
        "a/../../x.py",
        "C:\\x.py",
        "~/x.py",
        "",
    ] {
        assert!(check_path(bad).is_err(), "{bad}");
    }
}

/// `app/calc.py` as the fixtures' diffs expect it before the fix.
const CALC_BEFORE: &str = "\"\"\"Small calculator used by the checkout service.\"\"\"\n\n\ndef add(a, b):\n    return a + b\n\n\ndef divide(a, b):\n    return a / b\n\n\ndef average(values):\n    total = 0\n    for v in values:\n        total += v\n    return total / len(values)\n";

#[test]
fn normalised_diffs_apply_to_the_real_file() {
    for name in [
        "qwen25coder_diff_fenced.txt",
        "deepseek_coder_plain_diff_unfenced.txt",
        "deepseek_r1_think_then_diff.txt",
        "qwen25coder_headerless_hunk.txt",
        "qwen25coder_git_diff_two_files.txt",
    ] {
        let answer = std::fs::read_to_string(fixtures_dir().join(name)).expect("fixture");
        let edits = parse_response(&answer).expect(name);
        let Some(Edit::UnifiedDiff { text }) = edits.first() else {
            panic!("{name}: {edits:?}")
        };
        let patch = diffy::Patch::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        let after =
            diffy::apply(CALC_BEFORE, &patch).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert!(
            after.contains("if not values:")
                || after.contains("if len(values) == 0:")
                || after.contains("if b == 0:"),
            "{name}: {after}"
        );
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    // Splice syntax fragments into every fixture at pseudo-random places (a fixed LCG, so a
    // failure reproduces).
    const PIECES: &[&str] = &[
        "```",
        "```diff\n",
        "@@ ",
        "@@ -1,2 +1,3 @@\n",
        "\n",
        "<<<<<<< SEARCH\n",
        "=======\n",
        ">>>>>>> REPLACE\n",
        "<<<<<<< HEAD\n",
        "{",
        "}",
        ",",
        "\"",
        "é",
        "\r",
        "--- ",
        "+++ ",
        "--- a/x.py\n+++ b/x.py\n",
        "</think>",
        "<think>",
        "[PYTHON]\n",
        "**a.py**\n",
        "\\",
        "{\"files\":[{\"path\":\"a.py\",\"content\":",
        "/dev/null",
        "../",
        "/abs.py",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    for (name, _) in CASES {
        let answer = std::fs::read_to_string(fixtures_dir().join(name)).unwrap_or_default();
        for _ in 0..150 {
            let mut s = answer.clone();
            for _ in 0..1 + next() % 4 {
                let mut at = next() % (s.len() + 1);
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                s.insert_str(at, PIECES[next() % PIECES.len()]);
            }
            let _ = parse_response(&s);
        }
    }
}

#[test]
fn huge_answers_parse_quickly() {
    // Long runs of blank lines inside a hunk, and a long answer overall.
    let mut s = String::from("--- a/x.py\n+++ b/x.py\n@@ @@\n");
    for _ in 0..20_000 {
        s.push_str(" a\n\n");
    }
    s.push_str("-b\n+c\n");
    s.push_str(&"\n".repeat(50_000));
    s.push_str(" d\n");
    let started = std::time::Instant::now();
    let edits = parse_response(&s).expect("diff");
    assert_eq!(edits.len(), 1);
    let Edit::UnifiedDiff { text } = &edits[0] else {
        panic!("{edits:?}")
    };
    // 20,000 `a` lines, 20,000 + 50,000 blank context lines, `b`/`c`, and `d`.
    assert!(
        text.contains("@@ -1,90002 +1,90002 @@\n"),
        "{}",
        &text[..80]
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
