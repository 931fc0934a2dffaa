//! Project environments: a project's own dependencies, installed once into an environment
//! keyed by what decides them, and reused by every run of its tests (triage coverage, the
//! MRE, validation; embedded and on workers).
//!
//! - [`plan`] reads what the project declares (Python `requirements*.txt`, `pyproject.toml`,
//!   `setup.py`/`setup.cfg`; Node `package-lock.json`/`package.json`, pnpm and yarn lockfiles;
//!   Go `go.mod`; Rust `Cargo.lock`) or the user's `sandbox.setup`, and writes the install
//!   script. The runner the test command needs (pytest, and coverage.py for triage) is added
//!   when the project does not bring it.
//! - The key ([`Plan::key`]) hashes the manifests, the base (image id or interpreter) and the
//!   script: a changed dependency rebuilds, a changed line of code does not.
//! - Docker (`crate::docker::env`): an image built from the base image, the install step alone
//!   with host networking, time-bounded and logged, committed and tagged by the key.
//!   Local (`local`): the user's own environment first (an active virtualenv or conda
//!   environment, a project `.venv`, a project `node_modules`) when it has what the tests
//!   need; else a virtualenv / `node_modules` / module cache under the cache directory.
//! - [`prepare`] resolves one environment per key per process (every stage waits for the
//!   same build), and across processes a file lock per key serialises builds.
//! - A failed install is an [`EnvError`], never a failing test: the registry cannot be reached
//!   (exit 3), a manifest is broken (exit 2), with the package and the installer's last lines.

pub(crate) mod local;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use settings::{InstallMode, SandboxConfig};
use vocab::Language;

use crate::{AnySandbox, ProjectKind, RunSpec, SandboxError};

/// The Python installer, written into the install copy as [`HELPER`].
pub(crate) const INSTALL_PY: &str = include_str!("install.py");
/// Its name in the install copy.
pub(crate) const HELPER: &str = ".coval-install.py";
/// Bump when what an environment holds changes for the same inputs: every key changes.
const RECIPE: &str = "coval-env-1";
/// Where an environment lives inside its Docker image.
pub const DOCKER_ENV_DIR: &str = "/opt/coval";
/// Where a Node environment's modules live in its Docker image: at the root, so that module
/// resolution from any `/work/<id>` walks up to them (CommonJS and ES modules alike).
pub const DOCKER_NODE_MODULES: &str = "/node_modules";
/// Label on environment images: the key.
pub const ENV_LABEL: &str = "dev.coval.env";
/// Repository of environment images (`coval-env/<language>:<key>`).
pub const ENV_REPO: &str = "coval-env";

/// What one environment build does for one project.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub language: Language,
    /// The install steps in words ("pip: requirements.txt, pyproject.toml [test]").
    pub steps: Vec<String>,
    /// `sh -e` script run in a copy of the project, with `COVAL_ENV` (the environment's dir),
    /// `COVAL_NODE_MODULES` and `COVAL_PY` (the base interpreter) set.
    pub script: String,
    /// The manifests that decide the environment (relative path, contents), sorted.
    pub manifests: Vec<(String, Vec<u8>)>,
    /// The project declares dependencies (or the user gave `sandbox.setup`): without that,
    /// an interpreter that already has the runner needs no environment.
    pub declares: bool,
    /// Python modules the tests need beyond what is declared (the runner, coverage.py).
    pub runner_modules: Vec<String>,
}

/// Manifests of `language` at the project root, sorted (names are relative paths).
fn manifests(root: &Path, language: Language) -> Vec<(String, Vec<u8>)> {
    let names: Vec<String> = match language {
        Language::Python => {
            let mut v: Vec<String> = ["pyproject.toml", "setup.py", "setup.cfg"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            for (dir, prefix) in [("", ""), ("requirements", "requirements/")] {
                if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
                    for e in rd.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let is_req = if prefix.is_empty() {
                            (n.starts_with("requirements") || n.starts_with("constraints"))
                                && n.ends_with(".txt")
                        } else {
                            n.ends_with(".txt")
                        };
                        if is_req {
                            v.push(format!("{prefix}{n}"));
                        }
                    }
                }
            }
            v
        }
        Language::JavaScript | Language::TypeScript => [
            "package.json",
            "package-lock.json",
            "npm-shrinkwrap.json",
            "pnpm-lock.yaml",
            "yarn.lock",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        Language::Go => vec!["go.mod".into(), "go.sum".into()],
        Language::Rust => vec!["Cargo.toml".into(), "Cargo.lock".into()],
        _ => vec![],
    };
    let mut out: Vec<(String, Vec<u8>)> = names
        .into_iter()
        .filter_map(|n| {
            let p = root.join(&n);
            let meta = std::fs::symlink_metadata(&p).ok()?;
            (meta.is_file() && meta.len() <= 8 << 20)
                .then(|| std::fs::read(&p).ok().map(|b| (n, b)))
                .flatten()
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Whether the Python manifests declare any dependency (a cheap look, not a parse: pip and
/// the installer decide what is installed; this only decides whether to build at all).
fn python_declares(m: &[(String, Vec<u8>)]) -> bool {
    m.iter().any(|(name, bytes)| {
        let text = String::from_utf8_lossy(bytes);
        if name.ends_with(".txt") {
            return text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .any(|l| !l.is_empty());
        }
        if name == "setup.py" || name == "setup.cfg" {
            return ["install_requires", "extras_require", "tests_require"]
                .iter()
                .any(|k| text.contains(k));
        }
        // pyproject.toml
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let mut table = "";
        for l in &lines {
            if l.starts_with('[') {
                table = l;
                if l.starts_with("[project.optional-dependencies")
                    || l.starts_with("[tool.poetry.group")
                    || l.starts_with("[tool.poetry.dev-dependencies")
                    || l.starts_with("[tool.pdm.dev-dependencies")
                    || l.starts_with("[dependency-groups")
                {
                    return true;
                }
                continue;
            }
            if table == "[project]"
                && (l.starts_with("dependencies") && !l.replace(' ', "").contains("=[]")
                    || l.starts_with("dynamic") && l.contains("dependencies"))
            {
                return true;
            }
            if table == "[tool.poetry.dependencies]"
                && !l.is_empty()
                && !l.starts_with('#')
                && !l.starts_with("python")
            {
                return true;
            }
        }
        false
    })
}

/// The node package manager a lockfile asks for, if its tool is usable (`have`), else npm.
fn node_install(m: &[(String, Vec<u8>)], have: &dyn Fn(&str) -> bool) -> (String, String) {
    let has = |n: &str| m.iter().any(|(k, _)| k == n);
    if has("pnpm-lock.yaml") && have("pnpm") {
        return (
            "pnpm install --frozen-lockfile".into(),
            "pnpm (pnpm-lock.yaml)".into(),
        );
    }
    if has("yarn.lock") && have("yarn") {
        return (
            "yarn install --frozen-lockfile --non-interactive".into(),
            "yarn (yarn.lock)".into(),
        );
    }
    if has("package-lock.json") || has("npm-shrinkwrap.json") {
        return (
            "npm ci --no-audit --no-fund --loglevel=error".into(),
            "npm ci (package-lock.json)".into(),
        );
    }
    (
        "npm install --no-audit --no-fund --loglevel=error".into(),
        "npm install (package.json)".into(),
    )
}

/// The environment plan for `kind`'s project at `root`, or `None` when the project's language
/// has nothing coval knows how to install and no `sandbox.setup` is given. `have` says whether
/// an installer tool (pnpm, yarn) exists where the install runs.
pub fn plan(
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    root: &Path,
    have: &dyn Fn(&str) -> bool,
) -> Option<Plan> {
    let m = manifests(root, kind.language);
    let setup = cfg.setup.trim();
    let mut steps = vec![];
    let mut script = String::from("set -e\n");
    let mut runner_modules = vec![];
    let declares;
    match kind.language {
        Language::Python => {
            // Lean (no pip of its own) unless the user's setup commands may call the venv's pip.
            let lean = if setup.is_empty() { " --lean" } else { "" };
            script.push_str(&format!(
                "\"$COVAL_PY\" {HELPER} venv \"$COVAL_ENV/venv\"{lean}\n\
                 export VIRTUAL_ENV=\"$COVAL_ENV/venv\" PATH=\"$COVAL_ENV/venv/bin:$PATH\"\n"
            ));
            // The runner with the dependencies: one pip resolution, and no second Python
            // start to check what that resolution installed.
            let mut with_deps = false;
            if setup.is_empty() {
                declares = python_declares(&m);
                if declares {
                    script.push_str(&format!("python {HELPER} deps pytest coverage\n"));
                    let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
                    steps.push(format!("pip: {}", names.join(", ")));
                    with_deps = true;
                }
            } else {
                declares = true;
                script.push_str(setup);
                script.push('\n');
                steps.push(format!("sandbox.setup: {}", one_line(setup)));
            }
            // pytest runs the tests (and triage's coverage run), whatever the test command:
            // one environment per project, whichever stage asks first.
            runner_modules.push("pytest".to_owned());
            runner_modules.push("coverage".to_owned());
            if !with_deps {
                script.push_str(&format!(
                    "python {HELPER} runner {}\n",
                    runner_modules.join(" ")
                ));
            }
            steps.push(format!("runner: {}", runner_modules.join(", ")));
        }
        Language::JavaScript | Language::TypeScript => {
            if setup.is_empty() {
                if !m.iter().any(|(n, _)| n == "package.json") {
                    return None;
                }
                let (cmd, what) = node_install(&m, have);
                declares = node_declares(&m);
                // An environment image's build (`COVAL_APT=1`, root) on a base without npm
                // (a user's image, an older coval image) gets it from Debian's archive.
                script.push_str(
                    "if ! command -v npm >/dev/null 2>&1 && [ \"${COVAL_APT:-0}\" = 1 ]; then\n\
                     \x20 echo 'coval-env: the base image has no npm: apt-get install npm'\n\
                     \x20 DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null\n\
                     \x20 rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb\n\
                     fi\n",
                );
                script.push_str(&format!("{cmd}\n"));
                steps.push(what);
            } else {
                declares = true;
                script.push_str(setup);
                script.push('\n');
                steps.push(format!("sandbox.setup: {}", one_line(setup)));
            }
            script.push_str(
                "mkdir -p \"$(dirname \"$COVAL_NODE_MODULES\")\"\n\
                 if [ -d node_modules ]; then rm -rf \"$COVAL_NODE_MODULES\"; mv node_modules \"$COVAL_NODE_MODULES\"; else mkdir -p \"$COVAL_NODE_MODULES\"; fi\n",
            );
        }
        Language::Go => {
            if setup.is_empty() {
                if !m.iter().any(|(n, _)| n == "go.mod") {
                    return None;
                }
                declares = m
                    .iter()
                    .any(|(n, b)| n == "go.mod" && String::from_utf8_lossy(b).contains("require"));
                script.push_str(
                    "export GOMODCACHE=\"$COVAL_ENV/gomod\" GOFLAGS=-mod=mod GOTOOLCHAIN=local\n\
                     go mod download -x\n",
                );
                steps.push("go mod download (go.mod, go.sum)".into());
            } else {
                declares = true;
                script.push_str("export GOMODCACHE=\"$COVAL_ENV/gomod\" GOTOOLCHAIN=local\n");
                script.push_str(setup);
                script.push('\n');
                steps.push(format!("sandbox.setup: {}", one_line(setup)));
            }
            // The dependencies compiled once into a build cache the runs read (go reads a
            // cache it cannot write): a candidate then compiles only the project's packages.
            // `-exec true`: the test binaries are built, never run (this step has network).
            script.push_str(
                "GOCACHE=\"$COVAL_ENV/gocache\" go test -count=1 -run '^$' -exec true ./... >/dev/null 2>&1 || true\n\
                 chmod -R a+rX \"$COVAL_ENV\" 2>/dev/null || true\n",
            );
            steps.push("dependencies compiled (GOCACHE)".into());
        }
        Language::Rust => {
            if setup.is_empty() {
                if !m.iter().any(|(n, _)| n == "Cargo.toml") {
                    return None;
                }
                declares = true;
                script.push_str("export CARGO_HOME=\"$COVAL_ENV/cargo\"\ncargo fetch\n");
                steps.push("cargo fetch (Cargo.toml, Cargo.lock)".into());
            } else {
                declares = true;
                script.push_str("export CARGO_HOME=\"$COVAL_ENV/cargo\"\n");
                script.push_str(setup);
                script.push('\n');
                steps.push(format!("sandbox.setup: {}", one_line(setup)));
            }
        }
        _ => {
            if setup.is_empty() {
                return None;
            }
            declares = true;
            script.push_str(setup);
            script.push('\n');
            steps.push(format!("sandbox.setup: {}", one_line(setup)));
        }
    }
    Some(Plan {
        language: kind.language,
        steps,
        script,
        manifests: m,
        declares,
        runner_modules,
    })
}

fn node_declares(m: &[(String, Vec<u8>)]) -> bool {
    m.iter().any(|(n, b)| {
        n == "package.json"
            && serde_json::from_slice::<serde_json::Value>(b).is_ok_and(|v| {
                ["dependencies", "devDependencies", "optionalDependencies"]
                    .iter()
                    .any(|k| {
                        v.get(k)
                            .and_then(|d| d.as_object())
                            .is_some_and(|o| !o.is_empty())
                    })
            })
    })
}

fn one_line(s: &str) -> String {
    let l: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    l.join("; ")
}

impl Plan {
    /// "built in 12.3 s: pip: requirements.txt; runner: pytest, coverage", or "reused".
    pub(crate) fn how(&self, built: Option<Duration>) -> String {
        match built {
            Some(t) => format!(
                "built in {:.1} s: {}",
                t.as_secs_f64(),
                self.steps.join("; ")
            ),
            None => "reused".to_owned(),
        }
    }

    /// The environment's key: the recipe, where it is built (`backend`), the base (image id
    /// or interpreter and version), the script (which holds `sandbox.setup`), the installer
    /// and every manifest. 16 hex digits.
    pub fn key(&self, backend: &str, base: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            RECIPE.as_bytes(),
            backend.as_bytes(),
            base.as_bytes(),
            vocab::LanguageExt::key(self.language).as_bytes(),
            self.script.as_bytes(),
            INSTALL_PY.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for (name, bytes) in &self.manifests {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        let d = h.finalize();
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// What a run needs to use an environment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Environment {
    /// The key (empty: no environment: the image or interpreter as it is).
    pub key: String,
    /// Docker: the environment image the runs use.
    pub image: Option<String>,
    /// Directories put first on `PATH`.
    pub path: Vec<String>,
    /// Variables set for the runs (`VIRTUAL_ENV`, `NODE_PATH`, `GOMODCACHE`, ...).
    pub vars: Vec<(String, String)>,
    /// In words, for the stage notes and the terminal: "python virtualenv 3f2a… under
    /// /var/cache/coval (built in 12.3 s: pip: requirements.txt; runner: pytest)".
    pub description: String,
    /// Reused (not built by this call).
    pub reused: bool,
    /// How long resolving it took (a build, or the look-up of a cached one).
    pub took: Duration,
}

impl Environment {
    /// No environment: the base image or interpreter as it is.
    pub fn none(why: &str) -> Environment {
        Environment {
            description: format!("no project environment ({why})"),
            reused: true,
            ..Environment::default()
        }
    }

    /// Makes `spec` run in this environment.
    pub fn apply(&self, spec: &mut RunSpec) {
        if let Some(img) = &self.image {
            spec.image = img.clone();
        }
        for (k, v) in &self.vars {
            match spec.env.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v.clone(),
                None => spec.env.push((k.clone(), v.clone())),
            }
        }
        if !self.path.is_empty() {
            let prefix = self.path.join(":");
            match spec.env.iter_mut().find(|(n, _)| n == "PATH") {
                Some(slot) => slot.1 = format!("{prefix}:{}", slot.1),
                None => spec.env.push((
                    "PATH".into(),
                    format!("{prefix}:/usr/local/bin:/usr/bin:/bin"),
                )),
            }
        }
    }
}

/// Why an environment could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvError {
    #[error(
        "cannot install the project's dependencies: the package registry cannot be reached ({installer}{pkg}); the installer's last lines:\n{tail}\nfull log: {log}",
        pkg = package.as_deref().map(|p| format!(", while fetching `{p}`")).unwrap_or_default()
    )]
    RegistryUnreachable {
        installer: String,
        package: Option<String>,
        tail: String,
        log: String,
    },
    #[error(
        "cannot install the project's dependencies: {installer} refused what the project declares{pkg}; fix the manifest (or set sandbox.setup). The installer's last lines:\n{tail}\nfull log: {log}",
        pkg = package.as_deref().map(|p| format!(" (`{p}`)")).unwrap_or_default()
    )]
    ManifestBroken {
        installer: String,
        package: Option<String>,
        tail: String,
        log: String,
    },
    #[error(
        "installing the project's dependencies took longer than {secs} s (sandbox.install_timeout_secs); the installer's last lines:\n{tail}\nfull log: {log}"
    )]
    Timeout {
        secs: u64,
        tail: String,
        log: String,
    },
    #[error("{what} is missing: {fix}")]
    Missing { what: String, fix: String },
    #[error("{0}")]
    Sandbox(String),
    #[error("{context}: {reason}")]
    Io { context: String, reason: String },
}

impl EnvError {
    /// The command line's exit code: 3 when something needed cannot be reached or had (the
    /// registry, an interpreter, the engine), 2 when the project's manifests are at fault.
    pub fn exit_code(&self) -> u8 {
        match self {
            EnvError::ManifestBroken { .. } => vocab::exit::BAD_INPUT,
            _ => vocab::exit::UNREACHABLE,
        }
    }

    /// Worth trying again later (the registry or the engine may come back).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EnvError::RegistryUnreachable { .. } | EnvError::Timeout { .. } | EnvError::Sandbox(_)
        )
    }

    /// Whether the repair may still go on to its stages, which then stop at the MRE with
    /// this as the reason the tests cannot run (and a report): an install that failed.
    /// A missing interpreter, tool or engine stops before triage.
    pub fn is_install_failure(&self) -> bool {
        matches!(
            self,
            EnvError::RegistryUnreachable { .. }
                | EnvError::ManifestBroken { .. }
                | EnvError::Timeout { .. }
        )
    }

    /// Why the tests cannot run, for the MRE's summary (and the report and exit code it
    /// leads to: `vocab::exit::of_repair`).
    pub fn blocked(&self) -> proto::messages::Blocked {
        use proto::messages::{Blocked, BlockedReason};
        let what = |installer: &str, package: &Option<String>| match package {
            Some(p) => format!("the package `{p}` ({installer})"),
            None => format!("the project's dependencies ({installer})"),
        };
        let (reason, what, hint, tail) = match self {
            EnvError::RegistryUnreachable {
                installer,
                package,
                tail,
                log,
            } => (
                BlockedReason::Registry,
                what(installer, package),
                format!(
                    "the package registry cannot be reached: check the network or the proxy and index settings ({installer}), then repair again; full log: {log}"
                ),
                tail.clone(),
            ),
            EnvError::ManifestBroken {
                installer,
                package,
                tail,
                log,
            } => (
                BlockedReason::Manifest,
                what(installer, package),
                format!(
                    "{installer} refused what the project declares: fix the manifest, or set sandbox.setup to your install commands; full log: {log}"
                ),
                tail.clone(),
            ),
            EnvError::Timeout { secs, tail, log } => (
                BlockedReason::Install,
                "the project's dependencies".to_owned(),
                format!(
                    "the install took longer than {secs} s: raise sandbox.install_timeout_secs; full log: {log}"
                ),
                tail.clone(),
            ),
            EnvError::Missing { what, fix } => (
                BlockedReason::Interpreter,
                what.clone(),
                fix.clone(),
                String::new(),
            ),
            EnvError::Sandbox(m) | EnvError::Io { context: m, .. } => (
                BlockedReason::Install,
                "the project's environment".to_owned(),
                self.to_string(),
                m.clone(),
            ),
        };
        Blocked {
            reason,
            what,
            hint,
            output_tail: tail,
        }
    }

    /// The package the installer was at, when it said.
    pub fn package(&self) -> Option<&str> {
        match self {
            EnvError::RegistryUnreachable { package, .. }
            | EnvError::ManifestBroken { package, .. } => package.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, e: impl std::fmt::Display) -> EnvError {
        EnvError::Io {
            context: context.into(),
            reason: e.to_string(),
        }
    }
}

impl From<SandboxError> for EnvError {
    fn from(e: SandboxError) -> EnvError {
        EnvError::Sandbox(e.to_string())
    }
}

/// The last `n` lines of `log`.
pub(crate) fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A failed install's error, from the installer's output (`log`) and exit status.
pub(crate) fn classify(
    language: Language,
    output: &str,
    exit_code: Option<i32>,
    log: &Path,
) -> EnvError {
    let installer = match language {
        Language::Python => "pip",
        Language::JavaScript | Language::TypeScript => "npm",
        Language::Go => "go mod download",
        Language::Rust => "cargo fetch",
        _ => "sandbox.setup",
    }
    .to_owned();
    let tail = tail(output, 12);
    let log = log.display().to_string();
    if let Some(line) = output.lines().find(|l| l.contains("COVAL-NO-VENV")) {
        return EnvError::Missing {
            what: "a Python that can make a virtualenv".into(),
            fix: format!(
                "{} (Debian: `apt-get install python3-venv`)",
                line.split("COVAL-NO-VENV:").nth(1).unwrap_or(line).trim()
            ),
        };
    }
    if exit_code == Some(127) {
        let what = output
            .lines()
            .rev()
            .find(|l| l.contains("not found"))
            .unwrap_or("the installer")
            .trim()
            .to_owned();
        let fix = match language {
            Language::Python => {
                "install python3 with venv and pip (Debian: `apt-get install python3-venv python3-pip`; coval's images: `scripts/build-base-images.sh python`)"
            }
            Language::JavaScript | Language::TypeScript => {
                "install npm (Debian: `apt-get install npm`; coval's images: `scripts/build-base-images.sh node`)"
            }
            Language::Go => "install go (Debian: `apt-get install golang-go`)",
            _ => "install the tool the install step runs",
        };
        return EnvError::Missing {
            what: what.clone(),
            fix: fix.into(),
        };
    }
    const NETWORK: &[&str] = &[
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ProxyError",
        "Could not fetch URL",
        "ENOTFOUND",
        "EAI_AGAIN",
        "ECONNREFUSED",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETUNREACH",
        "network request to",
        "dial tcp",
        "no such host",
        "i/o timeout",
        "connection refused",
        "proxyconnect",
        "failed to download",
        "Couldn't resolve host",
    ];
    let package = package_of(output);
    if NETWORK.iter().any(|n| output.contains(n)) {
        return EnvError::RegistryUnreachable {
            installer,
            package,
            tail,
            log,
        };
    }
    EnvError::ManifestBroken {
        installer,
        package,
        tail,
        log,
    }
}

/// The package an installer's error names (pip, npm, go), if any.
fn package_of(output: &str) -> Option<String> {
    let after = |l: &str, marker: &str| -> Option<String> {
        let rest = l.split(marker).nth(1)?.trim();
        let word: String = rest
            .trim_start_matches(['\'', '"', '`'])
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '`' | ')' | '('))
            .collect();
        let word = word.trim_end_matches(['.', ',', ':']).to_owned();
        (!word.is_empty()).then_some(word)
    };
    for l in output.lines().rev() {
        for marker in [
            "No matching distribution found for ",
            "Could not find a version that satisfies the requirement ",
            "Invalid requirement: ",
            "No matching version found for ",
            "404 Not Found - GET https://registry.npmjs.org/",
        ] {
            if l.contains(marker) {
                return after(l, marker).map(|p| p.replace("%2f", "/").replace("%2F", "/"));
            }
        }
        // go: "go: example.com/x@v1.2.3: reading ...: 404 Not Found"
        if let Some(rest) = l.strip_prefix("go: ")
            && let Some(first) = rest.split(':').next()
            && first.contains('@')
        {
            return Some(first.trim().to_owned());
        }
    }
    None
}

/// Where local environments and install logs live: `sandbox.cache_dir`, else
/// `$XDG_CACHE_HOME/coval`, else `~/.cache/coval`; as root (whose runs are users of their
/// own) `/var/cache/coval` unless `$XDG_CACHE_HOME` is reachable by every user (`/root` is
/// not).
pub fn cache_dir(cfg: &SandboxConfig) -> PathBuf {
    if !cfg.cache_dir.trim().is_empty() {
        return PathBuf::from(cfg.cache_dir.trim());
    }
    let root = crate::sys::euid() == 0;
    if !cfg.host.xdg_cache_home.is_empty() {
        let x = PathBuf::from(&cfg.host.xdg_cache_home).join("coval");
        // As root, runs are other users: they must be able to reach the environment.
        if !root || searchable_by_all(&x) {
            return x;
        }
    }
    if root {
        return PathBuf::from("/var/cache/coval");
    }
    match cfg.host.home.as_str() {
        "" => PathBuf::from("/var/tmp/coval-cache"),
        h => PathBuf::from(h).join(".cache").join("coval"),
    }
}

/// The download caches every environment build shares, Docker and local alike
/// (`<cache>/downloads/{pip,npm}`): a package fetched once is not fetched again by the
/// other backend or by the next build.
pub(crate) fn download_cache(cache: &Path) -> PathBuf {
    let d = cache.join("downloads");
    for sub in ["pip", "npm"] {
        let _ = std::fs::create_dir_all(d.join(sub));
    }
    d
}

/// Every existing ancestor of `p` (and `p`) can be searched by any user.
fn searchable_by_all(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.ancestors()
        .filter_map(|a| std::fs::metadata(a).ok())
        .all(|m| m.permissions().mode() & 0o001 != 0)
}

/// What an environment build reports while it runs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A build starts: the key, what it installs, where.
    Started {
        key: String,
        steps: Vec<String>,
        backend: &'static str,
    },
    /// A line of the installer's output.
    Line(String),
    /// The build ended (successfully or not).
    Finished {
        key: String,
        took: Duration,
        ok: bool,
    },
}

type ProgressFn = Box<dyn Fn(&Progress) + Send + Sync>;
static PROGRESS: OnceLock<ProgressFn> = OnceLock::new();

/// Where build progress goes in this process (the command line shows it on a terminal);
/// the first caller wins. Without one, progress is logged at debug level.
pub fn set_progress(f: impl Fn(&Progress) + Send + Sync + 'static) {
    let _ = PROGRESS.set(Box::new(f));
}

pub(crate) fn progress(p: Progress) {
    match PROGRESS.get() {
        Some(f) => f(&p),
        None => tracing::debug!(?p, "environment build"),
    }
}

type Cell = Arc<tokio::sync::OnceCell<Result<Environment, EnvError>>>;
static RESOLVED: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();

/// One resolution per key per process: every stage that asks waits for the same build, and
/// gets its result (or its error) after.
async fn once<F, Fut>(key: &str, f: F) -> Result<Environment, EnvError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Environment, EnvError>>,
{
    let cell = {
        let mut m = RESOLVED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_owned()).or_default().clone()
    };
    let mut first = false;
    let r = cell
        .get_or_init(|| {
            first = true;
            f()
        })
        .await
        .clone();
    if !first && let Ok(env) = &r {
        // Another caller built it: for this one it is reused, found at once.
        let mut env = env.clone();
        env.reused = true;
        env.took = Duration::ZERO;
        return Ok(env);
    }
    r
}

/// Forgets what this process resolved (for `coval env prune`, and tests that build twice).
pub fn forget_resolved() {
    if let Some(m) = RESOLVED.get() {
        m.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Where the user's own project lives, for the local sandbox's look at its `.venv` and
/// `node_modules` (the stages see only a copy, which leaves them out).
#[derive(Debug, Clone, Default)]
pub struct UserDirs {
    pub project: Option<PathBuf>,
}

/// The environment `kind`'s project at `root` runs its tests in, on `sandbox`: built at most
/// once per key (per process, and across processes through the cache), reused after.
pub async fn prepare(
    cfg: &SandboxConfig,
    sandbox: &AnySandbox,
    kind: &ProjectKind,
    root: &Path,
    user: &UserDirs,
) -> Result<Environment, EnvError> {
    if cfg.install == InstallMode::Never {
        return Ok(Environment::none("sandbox.install is never"));
    }
    match sandbox {
        AnySandbox::Docker(d) => {
            let base = crate::base_image(cfg, kind.language);
            let Some(plan) = plan(cfg, kind, root, &|_| false) else {
                return Ok(Environment::none("nothing to install for this project"));
            };
            if !plan.declares {
                // The base image brings the runner (coval's images have pytest and
                // coverage.py); a user's image without it is a test command that cannot run.
                return Ok(Environment::none("the project declares no dependencies"));
            }
            let base_id = d.image_id(&base).await?;
            let key = plan.key("docker", &base_id);
            let (d, cfg, root) = (d.clone(), cfg.clone(), root.to_path_buf());
            once(&format!("docker-{key}"), move || async move {
                crate::docker::env::resolve(&d, &cfg, &plan, &key, &base, &root).await
            })
            .await
        }
        AnySandbox::Local(l) => local::prepare(l, cfg, kind, root, user).await,
    }
}

/// One environment as `coval env list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub key: String,
    /// "docker" or "local".
    pub backend: &'static str,
    pub language: String,
    /// The image tag (Docker) or the directory (local).
    pub location: String,
    pub bytes: u64,
    /// Seconds since the epoch when it was built.
    pub created: u64,
    /// The project it was first built for.
    pub project: String,
}

/// Every local environment under the cache directory.
pub fn list_local(cfg: &SandboxConfig) -> Vec<Listed> {
    local::list(&cache_dir(cfg))
}

/// Removes local environments (all, or those whose key starts with `key`); what was removed.
pub fn prune_local(cfg: &SandboxConfig, key: Option<&str>) -> Vec<Listed> {
    local::prune(&cache_dir(cfg), key)
}

#[cfg(test)]
mod tests;
