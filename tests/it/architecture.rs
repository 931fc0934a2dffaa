//! The invariants ARCHITECTURE.md states about the code's shape, checked on the source tree:
//! which crate may depend on which, that stages never depend on each other, which crates may
//! read the process environment, that subjects are only spelled in `proto`, that the
//! codemap names every crate, and that no doc test waits for a run the test command does not
//! make. Each failure says which rule broke and where.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use coval_tests::repo_root;

/// Every workspace crate (by directory) and its layer: a crate may depend only on crates of a
/// lower layer. The stages share one layer, so none can depend on another.
const LAYERS: &[(&str, u8)] = &[
    ("proto", 0),
    ("crates/telemetry", 0),
    ("crates/vocab", 1),
    ("crates/logparse", 2),
    ("crates/settings", 2),
    ("crates/patch", 2),
    ("crates/store", 3),
    ("crates/sandbox", 3),
    ("crates/llm", 3),
    ("crates/bus", 4),
    ("services/triage", 5),
    ("services/decision", 5),
    ("services/mre", 5),
    ("services/fix", 5),
    ("services/validate", 5),
    ("services/integrate", 5),
    ("crates/deploy", 5),
    ("crates/stages", 6),
    ("crates/cli", 7),
    ("tests", 8),
];

/// Crates that may read the process environment, and why. Everything else gets its settings
/// passed in, so a stage behaves the same in the embedded command and in a worker.
const READS_ENVIRONMENT: &[(&str, &str)] = &[
    ("crates/settings", "the COVAL_* layer of the configuration"),
    (
        "crates/telemetry",
        "RUST_LOG, NO_COLOR and OTEL_EXPORTER_OTLP_ENDPOINT",
    ),
    (
        "crates/llm",
        "the API key variable a model server's settings name, NO_COLOR",
    ),
    ("crates/cli", "the command line's own environment"),
    ("tests", "test helpers"),
];

fn members(root: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("a members line in the workspace manifest");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Package name → member directory.
fn package_names(root: &Path, members: &[String]) -> BTreeMap<String, String> {
    members
        .iter()
        .map(|m| {
            let toml = fs::read_to_string(root.join(m).join("Cargo.toml")).unwrap();
            let name = toml
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim().trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("{m}/Cargo.toml has no package name"));
            (name, m.clone())
        })
        .collect()
}

/// The names in a manifest's `[dependencies]` section (not dev- or build-dependencies).
fn normal_dependencies(toml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            inside = l == "[dependencies]";
            continue;
        }
        if inside && !l.is_empty() && !l.starts_with('#') {
            let name = l.split(['=', '.', ' ']).next().unwrap_or("").trim();
            if !name.is_empty() {
                out.push(name.to_owned());
            }
        }
    }
    out
}

#[test]
fn crates_depend_only_on_lower_layers_and_stages_never_on_each_other() {
    let root = repo_root();
    let members = members(&root);
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    for m in &members {
        assert!(
            layer.contains_key(m.as_str()),
            "workspace member {m} has no layer: add it to LAYERS here and to ARCHITECTURE.md's codemap"
        );
    }
    let packages = package_names(&root, &members);
    let mut broken = Vec::new();
    for m in &members {
        let toml = fs::read_to_string(root.join(m).join("Cargo.toml")).unwrap();
        for dep in normal_dependencies(&toml) {
            let Some(dir) = packages.get(&dep) else {
                continue; // not a workspace crate
            };
            if layer[dir.as_str()] >= layer[m.as_str()] {
                broken.push(format!(
                    "{m} (layer {}) depends on {dir} (layer {})",
                    layer[m.as_str()],
                    layer[dir.as_str()]
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies against the layering:\n{}",
        broken.join("\n")
    );
}

/// Every `.rs` file under a member's `src/`.
fn rust_files(member: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![member.join("src")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The Rust sources of a member, without unit-test files (`tests.rs`) and without anything
/// inside or after a `#[cfg(test)]` item: tests may set up environments as they like.
fn production_sources(dir: &Path) -> Vec<(PathBuf, String)> {
    rust_files(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
            let code = text[..cut].to_owned();
            (p, code)
        })
        .collect()
}

/// `path:line: text` of every production line whose code (before a `//`) matches, in every
/// member that `skip` does not leave out.
fn production_lines(
    root: &Path,
    skip: impl Fn(&str) -> bool,
    matches: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for m in members(root) {
        if skip(&m) {
            continue;
        }
        for (path, text) in production_sources(&root.join(&m)) {
            for (i, line) in text.lines().enumerate() {
                if matches(line.split("//").next().unwrap_or("")) {
                    out.push(format!(
                        "{}:{}: {}",
                        path.strip_prefix(root).unwrap_or(&path).display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn only_the_named_crates_read_the_process_environment() {
    let root = repo_root();
    let allowed: BTreeSet<&str> = READS_ENVIRONMENT.iter().map(|(c, _)| *c).collect();
    let broken = production_lines(
        &root,
        |m| allowed.contains(m),
        |code| {
            ["env::var(", "env::var_os(", "env::vars("]
                .iter()
                .any(|p| code.contains(p))
        },
    );
    assert!(
        broken.is_empty(),
        "environment read outside the crates that may (pass the value in through settings):\n{}",
        broken.join("\n")
    );
}

#[test]
fn subjects_are_spelled_only_in_proto() {
    let root = repo_root();
    let broken = production_lines(
        &root,
        |m| m == "proto" || m == "tests",
        |code| {
            [".events.", ".stage.", ".dlq.", ".ledger."]
                .iter()
                .any(|s| code.contains(&format!("\"{{}}{s}")) || code.contains(&format!("}}{s}")))
        },
    );
    assert!(
        broken.is_empty(),
        "subjects built outside proto::subjects::Namespace:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_crate_opens_with_its_purpose_and_the_codemap_names_it() {
    let root = repo_root();
    let architecture = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let headings: BTreeSet<String> = architecture
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .filter_map(|l| l.split('`').next())
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    let mut broken = Vec::new();
    for m in members(&root) {
        if !headings.contains(&m) {
            broken.push(format!(
                "{m}: no `### `{m}/`` heading in ARCHITECTURE.md's codemap"
            ));
        }
        let lib = root.join(&m).join("src/lib.rs");
        let main = root.join(&m).join("src/main.rs");
        let first = fs::read_to_string(if lib.exists() { &lib } else { &main }).unwrap_or_default();
        if !first.starts_with("//!") {
            broken.push(format!(
                "{m}: its lib.rs (or main.rs) does not open with a //! line"
            ));
        }
    }
    for h in &headings {
        if h.contains('*') {
            continue; // a heading about a set of files, like services/*/src/main.rs
        }
        if !root.join(h).exists() {
            broken.push(format!("ARCHITECTURE.md names {h}, which does not exist"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The README's test command runs `cargo test --tests`, which leaves rustdoc's doc tests out
/// (the workspace has none, and running the empty sets took 40 s). A Rust code block in a doc
/// comment would be a doc test that never runs: this says so, so the step is added instead.
#[test]
fn no_doc_comment_holds_a_doc_test_the_test_command_would_skip() {
    let root = repo_root();
    // A fence rustdoc compiles or lists: no info string, or only rustdoc's own attributes.
    let is_doc_test = |info: &str| {
        info.split(',').map(str::trim).all(|t| {
            matches!(
                t,
                "" | "rust"
                    | "ignore"
                    | "no_run"
                    | "should_panic"
                    | "compile_fail"
                    | "test_harness"
            ) || t.starts_with("edition")
        })
    };
    let mut found = vec![];
    for m in members(&root) {
        for p in rust_files(&root.join(&m)) {
            let text = fs::read_to_string(&p).unwrap();
            let mut open = false;
            for (i, line) in text.lines().enumerate() {
                let t = line.trim_start();
                let Some(doc) = t.strip_prefix("///").or_else(|| t.strip_prefix("//!")) else {
                    continue;
                };
                let Some(info) = doc.trim_start().strip_prefix("```") else {
                    continue;
                };
                if !open && is_doc_test(info) {
                    found.push(format!(
                        "{}:{}: {}",
                        p.strip_prefix(&root).unwrap_or(&p).display(),
                        i + 1,
                        line.trim()
                    ));
                }
                open = !open;
            }
        }
    }
    assert!(
        found.is_empty(),
        "doc tests that scripts/test.sh (`cargo test --tests`) does not run; mark the block \
         `text`, or add a `cargo test --workspace --doc` step there:\n{}",
        found.join("\n")
    );
}
