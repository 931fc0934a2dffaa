//! Test-command detection: from a project's files (pyproject.toml, package.json, go.mod,
//! Cargo.toml, pom.xml, build.gradle, Gemfile, composer.json, test files) to its language, app
//! framework, the command that runs its tests with per-test output, and the runner whose output
//! [`super::outcomes::parse_outcomes`] reads. A user's own test command always wins.

use std::path::Path;

use vocab::Language;

/// Where a JUnit report is written, relative to the work dir (collected after the run).
pub const JUNIT_REPORT: &str = ".coval-report/junit.xml";
/// Where jest writes its JSON results (at the root: jest does not create directories).
pub const JEST_REPORT: &str = ".coval-jest.json";

/// Whose output the per-test parser should expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    Pytest,
    Unittest,
    /// `node --test` with the TAP reporter.
    NodeTest,
    /// Another `npm test` script (jest, mocha, ...): TAP if it prints TAP, else the exit code.
    Npm,
    /// `go test -json`.
    GoTest,
    Cargo,
    Maven,
    Gradle,
    Rspec,
    Rake,
    Phpunit,
    /// A user's command: whatever the output looks like, else the exit code.
    Custom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectKind {
    pub language: Language,
    /// The application framework when one is recognised (fastapi, flask, django, express,
    /// next, gin, ...), else empty.
    pub framework: String,
    pub test_cmd: Vec<String>,
    pub runner: Runner,
    /// Report files the command writes (relative to the work dir), for `RunSpec::collect`.
    pub reports: Vec<String>,
    /// Environment the command needs on top of the sandbox's (`PYTEST_ADDOPTS` for a pytest
    /// run inside a user's wrapper).
    pub env: Vec<(String, String)>,
    /// How a user's own command runs (for the report); empty for a detected one.
    pub origin: String,
}

/// The project in `dir`, or `None` when nothing says how to test it.
pub fn detect_project(dir: &Path) -> Option<ProjectKind> {
    detect_project_with(dir, None)
}

/// Like [`detect_project`]; a non-empty `test_cmd` (a shell command) replaces the detected
/// one, read as the tool it runs ([`crate::command::user_kind`]). With an override, an
/// unrecognised project is still returned (as Python, the common case of a bare script
/// directory, unless other files say otherwise).
pub fn detect_project_with(dir: &Path, test_cmd: Option<&str>) -> Option<ProjectKind> {
    let detected = detect(dir);
    match test_cmd.map(str::trim).filter(|c| !c.is_empty()) {
        Some(cmd) => Some(crate::command::user_kind(dir, cmd, detected)),
        None => detected,
    }
}

fn read(dir: &Path, name: &str) -> Option<String> {
    let p = dir.join(name);
    // Manifests are small; refuse to read anything huge or that is not a regular file.
    let meta = std::fs::symlink_metadata(&p).ok()?;
    if !meta.is_file() || meta.len() > 4 << 20 {
        return None;
    }
    std::fs::read_to_string(p).ok()
}

fn exists(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name)).is_ok()
}

fn sv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn kind(language: Language, framework: &str, test_cmd: Vec<String>, runner: Runner) -> ProjectKind {
    ProjectKind {
        language,
        framework: framework.to_owned(),
        test_cmd,
        runner,
        reports: vec![],
        env: vec![],
        origin: String::new(),
    }
}

fn detect(dir: &Path) -> Option<ProjectKind> {
    let python_manifests = [
        "pyproject.toml",
        "setup.cfg",
        "setup.py",
        "pytest.ini",
        "tox.ini",
        "conftest.py",
        "Pipfile",
    ];
    let has_requirements = list(dir)
        .iter()
        .any(|n| n.starts_with("requirements") && n.ends_with(".txt"));
    if python_manifests.iter().any(|m| exists(dir, m)) || has_requirements {
        return Some(python(dir));
    }
    if let Some(gomod) = read(dir, "go.mod") {
        let fw = [
            ("gin-gonic/gin", "gin"),
            ("labstack/echo", "echo"),
            ("gofiber/fiber", "fiber"),
            ("go-chi/chi", "chi"),
        ]
        .iter()
        .find(|(m, _)| gomod.contains(m))
        .map_or("", |(_, f)| f);
        return Some(kind(
            Language::Go,
            fw,
            sv(&["go", "test", "-json", "./..."]),
            Runner::GoTest,
        ));
    }
    if exists(dir, "Cargo.toml") {
        let fw = read(dir, "Cargo.toml")
            .and_then(|c| {
                ["axum", "actix-web", "rocket", "warp"]
                    .into_iter()
                    .find(|f| c.contains(&format!("{f} ")) || c.contains(&format!("{f}=")))
            })
            .unwrap_or("");
        return Some(kind(
            Language::Rust,
            fw,
            sv(&["cargo", "test", "--color", "never"]),
            Runner::Cargo,
        ));
    }
    if let Some(pkg) = read(dir, "package.json") {
        return Some(node(&pkg));
    }
    if exists(dir, "pom.xml") {
        let fw = read(dir, "pom.xml")
            .filter(|p| p.contains("spring-boot"))
            .map_or("", |_| "spring-boot");
        return Some(kind(
            Language::Java,
            fw,
            sv(&["mvn", "-q", "-B", "test"]),
            Runner::Maven,
        ));
    }
    if exists(dir, "build.gradle") || exists(dir, "build.gradle.kts") {
        let cmd = if exists(dir, "gradlew") {
            sv(&["sh", "./gradlew", "test", "--console=plain"])
        } else {
            sv(&["gradle", "test", "--console=plain"])
        };
        return Some(kind(Language::Java, "", cmd, Runner::Gradle));
    }
    if let Some(gemfile) = read(dir, "Gemfile") {
        let fw = if gemfile.contains("rails") {
            "rails"
        } else if gemfile.contains("sinatra") {
            "sinatra"
        } else {
            ""
        };
        return Some(if exists(dir, "spec") || gemfile.contains("rspec") {
            kind(
                Language::Ruby,
                fw,
                sv(&["bundle", "exec", "rspec"]),
                Runner::Rspec,
            )
        } else {
            kind(
                Language::Ruby,
                fw,
                sv(&["bundle", "exec", "rake", "test"]),
                Runner::Rake,
            )
        });
    }
    if let Some(composer) = read(dir, "composer.json") {
        let fw = if composer.contains("laravel/framework") {
            "laravel"
        } else if composer.contains("symfony/") {
            "symfony"
        } else {
            ""
        };
        let bin = if exists(dir, "vendor/bin/phpunit") {
            "vendor/bin/phpunit"
        } else {
            "phpunit"
        };
        let mut k = kind(
            Language::Php,
            fw,
            vec![bin.into(), "--log-junit".into(), JUNIT_REPORT.into()],
            Runner::Phpunit,
        );
        k.reports = vec![JUNIT_REPORT.into()];
        return Some(k);
    }
    if has_python_tests(dir, 0) {
        return Some(python(dir));
    }
    None
}

fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `test_*.py` or `*_test.py` within three directory levels (not in hidden or vendored dirs).
fn has_python_tests(dir: &Path, depth: u32) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in rd.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_file()
            && name.ends_with(".py")
            && (name.starts_with("test_") || name.ends_with("_test.py"))
        {
            return true;
        }
        if ft.is_dir()
            && depth < 3
            && !name.starts_with('.')
            && !matches!(
                name.as_str(),
                "node_modules" | "venv" | "__pycache__" | "site-packages"
            )
            && has_python_tests(&e.path(), depth + 1)
        {
            return true;
        }
    }
    false
}

/// Text of the project's Python manifests and test files (bounded), to look for names in.
/// A src layout: `src/` holds a package (`src/<name>/__init__.py`) and there is none of that
/// name at the root.
fn src_layout(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir.join("src")) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        p.join("__init__.py").is_file() && !dir.join(e.file_name()).exists()
    })
}

/// Whether the project's pytest configuration sets `pythonpath` (the ini key, lowercase:
/// tox's `PYTHONPATH = …` is another tool's variable).
fn pytest_sets_pythonpath(dir: &Path) -> bool {
    ["pyproject.toml", "pytest.ini", "setup.cfg", "tox.ini"]
        .iter()
        .filter_map(|f| read(dir, f))
        .any(|t| {
            t.lines().any(|l| {
                l.trim_start()
                    .strip_prefix("pythonpath")
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
        })
}

fn python_text(dir: &Path) -> String {
    let mut text = String::new();
    for f in [
        "pyproject.toml",
        "setup.cfg",
        "setup.py",
        "pytest.ini",
        "tox.ini",
        "conftest.py",
        "Pipfile",
    ] {
        if let Some(t) = read(dir, f) {
            text.push_str(&t);
        }
    }
    for n in list(dir) {
        if n.starts_with("requirements")
            && n.ends_with(".txt")
            && let Some(t) = read(dir, &n)
        {
            text.push_str(&t);
        }
    }
    text
}

fn uses_only_unittest(dir: &Path, depth: u32, seen: &mut u32) -> Option<bool> {
    // Some(true): every test file imports unittest and none mentions pytest.
    let rd = std::fs::read_dir(dir).ok()?;
    let mut all_unittest = None;
    for e in rd.flatten() {
        if *seen > 200 {
            break;
        }
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_file()
            && name.ends_with(".py")
            && (name.starts_with("test") || name.ends_with("_test.py"))
        {
            *seen += 1;
            let t = read(dir, &name).unwrap_or_default();
            if t.contains("pytest") || !t.contains("unittest") {
                return Some(false);
            }
            all_unittest = Some(true);
        } else if ft.is_dir() && depth < 3 && !name.starts_with('.') && name != "node_modules" {
            match uses_only_unittest(&e.path(), depth + 1, seen) {
                Some(false) => return Some(false),
                Some(true) => all_unittest = Some(true),
                None => {}
            }
        }
    }
    all_unittest
}

fn python(dir: &Path) -> ProjectKind {
    let text = python_text(dir).to_lowercase();
    let fw = [
        "fastapi",
        "flask",
        "django",
        "starlette",
        "aiohttp",
        "tornado",
    ]
    .into_iter()
    .find(|f| text.contains(f))
    .unwrap_or("");
    let unittest = !text.contains("pytest") && uses_only_unittest(dir, 0, &mut 0) == Some(true);
    if unittest {
        return kind(
            Language::Python,
            fw,
            sv(&["python3", "-m", "unittest", "discover", "-v"]),
            Runner::Unittest,
        );
    }
    let mut argv: Vec<String> = vec![
        "python3".into(),
        "-m".into(),
        "pytest".into(),
        "-q".into(),
        "-rA".into(),
        "-p".into(),
        "no:cacheprovider".into(),
        "-o".into(),
        "junit_family=xunit1".into(),
    ];
    if src_layout(dir) && !pytest_sets_pythonpath(dir) {
        // The project is never installed into its environment (an installed or editable
        // copy would be the code under test, not the candidate): its `src/` goes first on
        // `sys.path` (pytest puts it there, in every run and every warm fork).
        argv.extend(["-o".into(), "pythonpath=src".into()]);
    }
    argv.push(format!("--junitxml={JUNIT_REPORT}"));
    let mut k = kind(Language::Python, fw, argv, Runner::Pytest);
    k.reports = vec![JUNIT_REPORT.into()];
    k
}

const NPM_PLACEHOLDER: &str = "no test specified";

/// The command that runs an npm `test` script the way `npm test` would, without npm (not in
/// every image): the project's local bins first on the PATH.
pub fn node_test_cmd(script: &str) -> Vec<String> {
    let script = if script.contains("node --test") && !script.contains("--test-reporter") {
        // `node --test` prints TAP only when asked (its default reporter depends on a TTY).
        script.replacen("node --test", "node --test --test-reporter=tap", 1)
    } else {
        script.to_owned()
    };
    vec![
        "sh".into(),
        "-c".into(),
        format!("PATH=\"$PWD/node_modules/.bin:$PATH\"; {script}"),
    ]
}

fn node(package_json: &str) -> ProjectKind {
    let v: serde_json::Value = serde_json::from_str(package_json).unwrap_or_default();
    let dep = |name: &str| {
        ["dependencies", "devDependencies"]
            .iter()
            .any(|k| v.get(k).and_then(|d| d.get(name)).is_some())
    };
    let fw = ["next", "express", "fastify", "koa", "@nestjs/core", "react"]
        .into_iter()
        .find(|f| dep(f))
        .map(|f| f.trim_start_matches('@').split('/').next().unwrap_or(f))
        .unwrap_or("");
    let script = v
        .get("scripts")
        .and_then(|s| s.get("test"))
        .and_then(|s| s.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.contains(NPM_PLACEHOLDER));
    match script {
        Some(s) => {
            // A plain `jest`/`vitest` script runs with the runner's own report added.
            if let Some((argv, reports)) =
                crate::command::split_plain(s).and_then(|w| crate::command::js_reporter(&w))
            {
                let mut k = kind(
                    Language::JavaScript,
                    fw,
                    node_test_cmd(&crate::command::shell_words(&argv)),
                    Runner::Npm,
                );
                k.reports = reports;
                return k;
            }
            let runner = if s.contains("node --test") {
                Runner::NodeTest
            } else {
                Runner::Npm
            };
            kind(Language::JavaScript, fw, node_test_cmd(s), runner)
        }
        None => kind(
            Language::JavaScript,
            fw,
            sv(&["node", "--test", "--test-reporter=tap"]),
            Runner::NodeTest,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = d.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, c).unwrap();
        }
        d
    }

    #[test]
    fn python_projects() {
        let d = project(&[
            ("requirements.txt", "fastapi\npytest\n"),
            ("tests/test_api.py", "def test_x(): pass\n"),
        ]);
        let k = detect_project(d.path()).unwrap();
        assert_eq!(k.language, Language::Python);
        assert_eq!(k.runner, Runner::Pytest);
        assert_eq!(k.framework, "fastapi");
        assert!(k.test_cmd.contains(&format!("--junitxml={JUNIT_REPORT}")));
        assert_eq!(k.reports, [JUNIT_REPORT]);

        let d = project(&[(
            "test_calc.py",
            "import unittest\nclass T(unittest.TestCase):\n    def test_a(self): pass\n",
        )]);
        let k = detect_project(d.path()).unwrap();
        assert_eq!(k.runner, Runner::Unittest);

        let d = project(&[("pkg/calc_test.py", "def test_a(): pass\n")]);
        assert_eq!(detect_project(d.path()).unwrap().runner, Runner::Pytest);
        // A src layout puts `src` on the tests' path, unless the project's pytest does.
        let src = [
            ("pyproject.toml", "[project]\nname = \"calc\"\n"),
            ("src/calc/__init__.py", ""),
            ("tests/test_calc.py", "import calc\ndef test_a(): pass\n"),
        ];
        let k = detect_project(project(&src).path()).unwrap();
        let w = k.test_cmd.windows(2).any(|w| w == ["-o", "pythonpath=src"]);
        assert!(w, "{:?}", k.test_cmd);
        let own = [
            (
                "pyproject.toml",
                "[tool.pytest.ini_options]\npythonpath = [\"src\", \".\"]\n",
            ),
            ("src/calc/__init__.py", ""),
            ("tests/test_calc.py", "def test_a(): pass\n"),
        ];
        let k = detect_project(project(&own).path()).unwrap();
        assert!(!k.test_cmd.iter().any(|a| a == "pythonpath=src"));
        let flat = [
            ("calc/__init__.py", ""),
            ("tests/test_calc.py", "def test_a(): pass\n"),
        ];
        let k = detect_project(project(&flat).path()).unwrap();
        assert!(!k.test_cmd.iter().any(|a| a == "pythonpath=src"));
    }

    #[test]
    fn node_go_and_others() {
        let d = project(&[(
            "package.json",
            r#"{"scripts":{"test":"node --test test/"},"dependencies":{"express":"4"}}"#,
        )]);
        let k = detect_project(d.path()).unwrap();
        assert_eq!(k.runner, Runner::NodeTest);
        assert_eq!(k.framework, "express");
        assert!(k.test_cmd[2].contains("node --test --test-reporter=tap test/"));

        let d = project(&[(
            "package.json",
            r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#,
        )]);
        assert_eq!(
            detect_project(d.path()).unwrap().test_cmd,
            ["node", "--test", "--test-reporter=tap"]
        );

        let d = project(&[("go.mod", "module example.com/calc\n\ngo 1.19\n")]);
        let k = detect_project(d.path()).unwrap();
        assert_eq!(k.test_cmd, ["go", "test", "-json", "./..."]);

        let d = project(&[("Cargo.toml", "[package]\nname = \"x\"\n")]);
        assert_eq!(detect_project(d.path()).unwrap().runner, Runner::Cargo);
        let d = project(&[("pom.xml", "<project/>")]);
        assert_eq!(detect_project(d.path()).unwrap().runner, Runner::Maven);
        let d = project(&[("build.gradle", ""), ("gradlew", "")]);
        assert_eq!(detect_project(d.path()).unwrap().test_cmd[1], "./gradlew");
        let d = project(&[("Gemfile", "gem 'rspec'\n")]);
        assert_eq!(detect_project(d.path()).unwrap().runner, Runner::Rspec);
        let d = project(&[("composer.json", "{}")]);
        assert_eq!(detect_project(d.path()).unwrap().runner, Runner::Phpunit);
        let d = project(&[("README.md", "hi")]);
        assert_eq!(detect_project(d.path()), None);
    }

    #[test]
    fn override_wins() {
        let d = project(&[("go.mod", "module m\n")]);
        let k = detect_project_with(d.path(), Some("make check")).unwrap();
        assert_eq!(k.language, Language::Go);
        assert_eq!(k.test_cmd, ["sh", "-c", "make check"]);
        assert_eq!(k.runner, Runner::Custom);
        assert!(
            k.env.is_empty(),
            "no PYTEST_ADDOPTS for a Go project's make"
        );
        let k = detect_project_with(d.path(), Some("  ")).unwrap();
        assert_eq!(k.runner, Runner::GoTest);
    }
}
