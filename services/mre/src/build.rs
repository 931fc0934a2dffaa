//! Choosing and writing the files of the minimal reproducible example.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proto::messages::TriageReport;

pub use sandbox::command::shell_words;

/// Manifests and configuration a test run may need, wherever they sit in the tree.
const CONFIG_FILES: &[&str] = &[
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "pytest.ini",
    "tox.ini",
    "conftest.py",
    "requirements.txt",
    "requirements-dev.txt",
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "go.mod",
    "go.sum",
    "Cargo.toml",
    "Cargo.lock",
    "pom.xml",
    "build.gradle",
    "Gemfile",
    "Gemfile.lock",
    "composer.json",
    ".coveragerc",
];

/// Relative, `/`-separated, no `..`, not absolute.
fn safe(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The files of the MRE under `root`: [`choose`], with the files that are there.
pub fn select(root: &Path, triage: &TriageReport) -> BTreeSet<String> {
    choose(triage, |rel| {
        root.join(rel).symlink_metadata().is_ok_and(|m| m.is_file())
    })
}

/// The files of the MRE: suspects and failing tests from triage (already including local
/// imports and the code under test), package markers on their paths, and config files; only
/// safe relative paths `is_file` says are regular files of the project (no symlinks).
pub fn choose(triage: &TriageReport, is_file: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let add = |rel: &str, files: &mut BTreeSet<String>| {
        if safe(rel) && is_file(rel) {
            files.insert(rel.to_owned());
        }
    };
    for s in &triage.suspects {
        add(&s.file, &mut files);
    }
    for t in &triage.failing_tests {
        let file = t.split("::").next().unwrap_or(t);
        add(file, &mut files);
    }
    // Package markers (`__init__.py`) on the way to every chosen Python file.
    let chosen: Vec<String> = files.iter().cloned().collect();
    for f in &chosen {
        let mut dir = PathBuf::from(f);
        while dir.pop() && !dir.as_os_str().is_empty() {
            add(
                &format!("{}/__init__.py", dir.to_string_lossy()),
                &mut files,
            );
            add(
                &format!("{}/conftest.py", dir.to_string_lossy()),
                &mut files,
            );
        }
    }
    for c in CONFIG_FILES {
        add(c, &mut files);
    }
    files
}

/// Copy the chosen files to `dst` and write its Dockerfile and README.
pub fn write(
    root: &Path,
    files: &BTreeSet<String>,
    dst: &Path,
    image: &str,
    test_cmd: &[String],
    triage: &TriageReport,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for f in files {
        let to = dst.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(root.join(f), &to)?;
    }
    let cmd = shell_words(test_cmd);
    let exec_form: Vec<String> = test_cmd.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        dst.join("Dockerfile"),
        format!(
            "# Minimal reproducible example made by coval.\nFROM {image}\nWORKDIR /work\nCOPY . /work\nUSER 65534:65534\nCMD [{}]\n",
            exec_form.join(", ")
        ),
    )?;
    let mut readme = String::from("# Minimal reproducible example\n\n");
    readme.push_str(&format!(
        "Failure: `{}`{}\n\n",
        if triage.error_type.is_empty() {
            "unnamed error"
        } else {
            &triage.error_type
        },
        if triage.message.is_empty() {
            String::new()
        } else {
            format!(": {}", triage.message)
        }
    ));
    readme.push_str("Reproduce:\n\n```sh\n");
    readme.push_str(&format!("{cmd}\n"));
    readme.push_str("# or, isolated:\ndocker build -t coval-mre . && docker run --rm --network none coval-mre\n```\n\n");
    readme.push_str("Files:\n\n");
    for f in files {
        readme.push_str(&format!("- `{f}`\n"));
    }
    std::fs::write(dst.join("README.md"), readme)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::messages::Suspect;

    fn suspect(file: &str) -> Suspect {
        Suspect {
            file: file.into(),
            line: None,
            score: 1.0,
            reason: String::new(),
        }
    }

    #[test]
    fn chooses_suspects_tests_their_markers_and_config_that_exist() {
        let tree = [
            "pkg/__init__.py",
            "pkg/sub/__init__.py",
            "pkg/sub/conftest.py",
            "pkg/sub/calc.py",
            "pkg/other.py",
            "tests/conftest.py",
            "tests/test_calc.py",
            "setup.cfg",
            "package.json",
            "/etc/passwd",
            "docs/x.md",
        ];
        let t = TriageReport {
            suspects: vec![
                suspect("pkg/sub/calc.py"),
                suspect("pkg/missing.py"),
                suspect("pkg/./other.py"),
                suspect("/etc/passwd"),
                suspect("pkg/../setup.py"),
                suspect(""),
            ],
            failing_tests: vec![
                "tests/test_calc.py::TestMean::test_empty".into(),
                "tests/test_calc.py::test_mean".into(),
            ],
            ..Default::default()
        };
        let s: Vec<String> = choose(&t, |rel| tree.contains(&rel)).into_iter().collect();
        assert_eq!(
            s,
            [
                "package.json",
                "pkg/__init__.py",
                "pkg/sub/__init__.py",
                "pkg/sub/calc.py",
                "pkg/sub/conftest.py",
                "setup.cfg",
                "tests/conftest.py",
                "tests/test_calc.py",
            ]
        );
        // Nothing named, nothing there: no files.
        assert!(choose(&TriageReport::default(), |_| false).is_empty());
    }

    #[test]
    fn selects_suspects_tests_markers_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in [
            "app/__init__.py",
            "app/calc.py",
            "app/other.py",
            "tests/test_calc.py",
            "pyproject.toml",
            "docs/x.md",
        ] {
            std::fs::create_dir_all(r.join(f).parent().unwrap()).unwrap();
            std::fs::write(r.join(f), "x = 1\n").unwrap();
        }
        let t = TriageReport {
            suspects: vec![
                Suspect {
                    file: "app/calc.py".into(),
                    line: Some(1),
                    score: 1.0,
                    reason: String::new(),
                },
                Suspect {
                    file: "../etc/passwd".into(),
                    line: None,
                    score: 1.0,
                    reason: String::new(),
                },
            ],
            failing_tests: vec!["tests/test_calc.py::test_mean".into()],
            ..Default::default()
        };
        let s: Vec<String> = select(r, &t).into_iter().collect();
        assert_eq!(
            s,
            [
                "app/__init__.py",
                "app/calc.py",
                "pyproject.toml",
                "tests/test_calc.py"
            ]
        );
        assert_eq!(
            shell_words(&["sh".into(), "-c".into(), "pytest -q".into()]),
            "sh -c 'pytest -q'"
        );
    }
}
