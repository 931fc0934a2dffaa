//! Plans, keys and install failures on data.

use std::path::Path;

use super::*;
use crate::detect_project;

fn cfg() -> SandboxConfig {
    settings::load(&settings::LoadOptions::default())
        .unwrap()
        .settings
        .sandbox
}

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (p, body) in files {
        let path = d.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    d
}

fn plan_of(d: &Path) -> Plan {
    let kind = detect_project(d).unwrap();
    plan(&cfg(), &kind, d, &|_| false).unwrap()
}

#[test]
fn a_changed_dependency_changes_the_key_and_a_changed_line_of_code_does_not() {
    let d = project(&[
        ("requirements.txt", "attrs==23.1.0\n"),
        ("mod.py", "x = 1\n"),
        ("tests/test_mod.py", "def test_x(): pass\n"),
    ]);
    let k1 = plan_of(d.path()).key("local", "py3.11");
    std::fs::write(d.path().join("mod.py"), "x = 2\n").unwrap();
    assert_eq!(plan_of(d.path()).key("local", "py3.11"), k1);
    std::fs::write(d.path().join("requirements.txt"), "attrs==23.2.0\n").unwrap();
    let k2 = plan_of(d.path()).key("local", "py3.11");
    assert_ne!(k2, k1);
    assert_ne!(plan_of(d.path()).key("local", "py3.12"), k2);
    assert_ne!(plan_of(d.path()).key("docker", "py3.11"), k2);
    assert_eq!(k2.len(), 16);
}

#[test]
fn python_projects_say_what_they_declare() {
    let none = project(&[
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\n\n[tool.pytest.ini_options]\n",
        ),
        ("test_x.py", "def test_x(): pass\n"),
    ]);
    let p = plan_of(none.path());
    assert!(!p.declares);
    assert_eq!(p.runner_modules, ["pytest", "coverage"]);
    for (name, body) in [
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = [\"attrs\"]\n",
        ),
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\ndependencies = []\n[project.optional-dependencies]\ntest = [\"hypothesis\"]\n",
        ),
        (
            "pyproject.toml",
            "[tool.poetry.dependencies]\npython = \"^3.8\"\nattrs = \"^23\"\n",
        ),
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\n[dependency-groups]\ntest = [\"pytest\"]\n",
        ),
        (
            "setup.py",
            "from setuptools import setup\nsetup(name='x', install_requires=['attrs'])\n",
        ),
        ("requirements-dev.txt", "# tools\nhypothesis\n"),
    ] {
        let d = project(&[(name, body), ("test_x.py", "def test_x(): pass\n")]);
        let p = plan_of(d.path());
        assert!(p.declares, "{name}: {body}");
        // The runner comes with the dependencies, in one pip call; no second check.
        assert!(p.script.contains(" deps pytest coverage\n"), "{}", p.script);
        assert!(!p.script.contains(" runner "), "{}", p.script);
    }
    assert!(
        plan_of(none.path())
            .script
            .contains(" runner pytest coverage\n")
    );
    let empty = project(&[("requirements.txt", "# nothing\n\n"), ("test_x.py", "")]);
    assert!(!plan_of(empty.path()).declares);
}

#[test]
fn node_go_and_setup_plans() {
    let lock = project(&[
        (
            "package.json",
            r#"{"name":"a","devDependencies":{"jest":"^29"},"scripts":{"test":"jest"}}"#,
        ),
        ("package-lock.json", "{}"),
    ]);
    let p = plan_of(lock.path());
    assert!(p.declares && p.script.contains("npm ci"), "{}", p.script);
    let bare = project(&[(
        "package.json",
        r#"{"name":"a","scripts":{"test":"node --test"}}"#,
    )]);
    let p = plan_of(bare.path());
    assert!(!p.declares && p.script.contains("npm install"));
    let pnpm = project(&[
        ("package.json", r#"{"name":"a","dependencies":{"x":"1"}}"#),
        ("pnpm-lock.yaml", ""),
    ]);
    let kind = detect_project(pnpm.path()).unwrap();
    let with = plan(&cfg(), &kind, pnpm.path(), &|t| t == "pnpm").unwrap();
    assert!(with.script.contains("pnpm install --frozen-lockfile"));
    let without = plan(&cfg(), &kind, pnpm.path(), &|_| false).unwrap();
    assert!(without.script.contains("npm install"));
    let go = project(&[(
        "go.mod",
        "module x\n\ngo 1.19\n\nrequire github.com/google/go-cmp v0.5.9\n",
    )]);
    let p = plan_of(go.path());
    assert!(p.declares && p.script.contains("go mod download"));
    let mut c = cfg();
    c.setup = "pip install -r ci/reqs.txt\n".into();
    let d = project(&[("test_x.py", "")]);
    let kind = detect_project(d.path()).unwrap();
    let p = plan(&c, &kind, d.path(), &|_| false).unwrap();
    assert!(p.declares && p.script.contains("pip install -r ci/reqs.txt"));
    assert!(
        !p.script.contains(" deps"),
        "setup replaces the detected installs"
    );
    let k = p.key("local", "b");
    c.setup = "pip install -r ci/other.txt\n".into();
    assert_ne!(
        plan(&c, &kind, d.path(), &|_| false)
            .unwrap()
            .key("local", "b"),
        k
    );
}

#[test]
fn install_failures_are_told_apart() {
    let log = Path::new("/x/install.log");
    let offline = "WARNING: Retrying (Retry(total=1)) after connection broken by 'NewConnectionError(\"<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno 101] Network is unreachable\")': /simple/attrs/\nERROR: Could not find a version that satisfies the requirement attrs==23.1.0 (from versions: none)\nERROR: No matching distribution found for attrs==23.1.0\n";
    let e = classify(Language::Python, offline, Some(1), log);
    assert!(matches!(e, EnvError::RegistryUnreachable { .. }), "{e}");
    assert_eq!(e.package(), Some("attrs==23.1.0"));
    assert_eq!(e.exit_code(), 3);
    let broken = "ERROR: Could not find a version that satisfies the requirement attrs==99.0 (from versions: 22.1.0, 23.1.0)\nERROR: No matching distribution found for attrs==99.0\n";
    let e = classify(Language::Python, broken, Some(1), log);
    assert!(matches!(e, EnvError::ManifestBroken { .. }), "{e}");
    assert_eq!(e.package(), Some("attrs==99.0"));
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .contains("No matching distribution found for attrs==99.0")
    );
    assert!(e.to_string().contains("/x/install.log"));
    let npm404 = "npm ERR! code E404\nnpm ERR! 404 Not Found - GET https://registry.npmjs.org/left-padd - Not found\n";
    let e = classify(Language::JavaScript, npm404, Some(1), log);
    assert!(matches!(e, EnvError::ManifestBroken { .. }));
    assert_eq!(e.package(), Some("left-padd"));
    let npm_off = "npm ERR! code ENOTFOUND\nnpm ERR! network request to https://registry.npmjs.org/ms failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org\n";
    assert_eq!(
        classify(Language::JavaScript, npm_off, Some(1), log).exit_code(),
        3
    );
    let go = "go: github.com/google/go-cmp@v9.9.9: reading https://proxy.golang.org/github.com/google/go-cmp/@v/v9.9.9.info: 404 Not Found\n";
    let e = classify(Language::Go, go, Some(1), log);
    assert_eq!(e.package(), Some("github.com/google/go-cmp@v9.9.9"));
    assert_eq!(e.exit_code(), 2);
    let missing = "sh: 1: npm: not found\n";
    let e = classify(Language::JavaScript, missing, Some(127), log);
    assert!(
        matches!(e, EnvError::Missing { .. }) && e.exit_code() == 3,
        "{e}"
    );
}

#[test]
fn an_environment_goes_first_on_path() {
    let env = Environment {
        key: "k".into(),
        image: Some("coval-env/python:k".into()),
        path: vec!["/opt/coval/venv/bin".into()],
        vars: vec![("VIRTUAL_ENV".into(), "/opt/coval/venv".into())],
        ..Environment::default()
    };
    let mut spec = RunSpec::new("/x", vec!["python".into()]);
    env.apply(&mut spec);
    assert_eq!(spec.image, "coval-env/python:k");
    let get = |k: &str| {
        spec.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("PATH").unwrap(),
        "/opt/coval/venv/bin:/usr/local/bin:/usr/bin:/bin"
    );
    assert_eq!(get("VIRTUAL_ENV").unwrap(), "/opt/coval/venv");
}
