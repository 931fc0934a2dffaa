//! The real-projects corpus (`tests/fixtures/real/corpus.json`): projects with third-party
//! dependencies, each made by a recipe (a small app of ours depending on real packages, or a
//! released source distribution downloaded from PyPI) and broken by a one-line bug of ours.
//! No third-party source is committed: packages come from their registries when the
//! project's environment is built.
//!
//! [`Corpus::make`] carries a recipe out; [`Run`] drives the real `coval` binary through one
//! project on one sandbox backend: the environment cold and warm (`coval env build`), the
//! error log (the broken project's own tests, run in that environment), and a repair.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Bug {
    pub file: String,
    /// The line as the program has it (it occurs exactly once).
    pub find: String,
    /// What our bug makes of it.
    pub replace: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Recipe {
    pub name: String,
    pub language: String,
    /// `app` (the fixture directory) or `sdist:NAME==VERSION` (from PyPI).
    pub source: String,
    pub bug: Bug,
    /// Part of the subset CI runs (all run in the bench).
    #[serde(default)]
    pub ci: bool,
    #[serde(default)]
    pub note: String,
    /// Go modules the project requires, served to it from a module proxy on disk
    /// (`GOPROXY=file://…`, the user's Go environment) that the recipe builds from Debian's
    /// packages of their sources (proxy.golang.org cannot be reached here).
    #[serde(default)]
    pub go_modules: Vec<GoModule>,
}

/// One Go module of a recipe, and the Debian package that carries its source.
#[derive(Debug, Clone, Deserialize)]
pub struct GoModule {
    /// The Debian package (`golang-github-google-go-cmp-dev`).
    pub deb: String,
    pub module: String,
    /// The version the proxy serves (the package's upstream version).
    pub version: String,
}

pub fn fixtures() -> PathBuf {
    crate::repo_root().join("tests/fixtures/real")
}

pub fn corpus() -> Result<Vec<Recipe>> {
    let text = std::fs::read_to_string(fixtures().join("corpus.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Makes `r`'s broken project in `dest` (downloads go to `downloads`).
pub fn make(r: &Recipe, dest: &Path, downloads: &Path) -> Result<()> {
    make_as(r, dest, downloads, true)
}

/// Makes `r`'s project in `dest`, with our bug when `broken`.
pub fn make_as(r: &Recipe, dest: &Path, downloads: &Path, broken: bool) -> Result<()> {
    if r.source == "app" {
        let from = fixtures().join(&r.name);
        vocab::tree::copy_tree(&from, dest, vocab::tree::Perms::Keep)?;
    } else if let Some(spec) = r.source.strip_prefix("sdist:") {
        let (name, version) = spec.split_once("==").context("sdist:NAME==VERSION")?;
        std::fs::create_dir_all(downloads)?;
        let archive = std::fs::read_dir(downloads)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_lowercase();
                n.starts_with(&format!(
                    "{}-{version}.",
                    name.to_lowercase().replace('-', "_")
                )) || n.starts_with(&format!("{}-{version}.", name.to_lowercase()))
            });
        let archive = match archive {
            Some(a) => a,
            None => {
                let out = Command::new("python3")
                    .args([
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "--no-binary",
                        ":all:",
                        "-q",
                        "-d",
                    ])
                    .arg(downloads)
                    .arg(spec)
                    .output()?;
                ensure!(
                    out.status.success(),
                    "pip download {spec} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return make_as(r, dest, downloads, broken);
            }
        };
        let unpack = tempfile::tempdir()?;
        let out = Command::new("tar")
            .arg("xzf")
            .arg(&archive)
            .arg("-C")
            .arg(unpack.path())
            .output()?;
        ensure!(out.status.success(), "tar failed on {}", archive.display());
        let top = std::fs::read_dir(unpack.path())?
            .flatten()
            .next()
            .context("empty sdist")?
            .path();
        vocab::tree::copy_tree(&top, dest, vocab::tree::Perms::Keep)?;
    } else {
        bail!("unknown source {}", r.source);
    }
    if !r.go_modules.is_empty() {
        // What the developer committed beside go.mod: the sums of what their proxy serves.
        let sums = go_proxy(r, downloads)?;
        std::fs::write(dest.join("go.sum"), sums)?;
    }
    let file = dest.join(&r.bug.file);
    if !broken {
        return Ok(());
    }
    let text = std::fs::read_to_string(&file)?;
    ensure!(
        text.matches(&r.bug.find).count() == 1,
        "{}: `{}` must occur exactly once in {}",
        r.name,
        r.bug.find,
        r.bug.file
    );
    std::fs::write(&file, text.replacen(&r.bug.find, &r.bug.replace, 1))?;
    Ok(())
}

/// Where `r`'s Go module proxy is built (under `downloads`).
pub fn go_proxy_dir(downloads: &Path) -> PathBuf {
    downloads.join("goproxy")
}

/// The user's Go environment for `r`: its module proxy on disk (nothing for other recipes).
pub fn user_env(r: &Recipe, downloads: &Path) -> Vec<(String, String)> {
    if r.go_modules.is_empty() {
        return vec![];
    }
    vec![(
        "GOPROXY".into(),
        format!("file://{}", go_proxy_dir(downloads).display()),
    )]
}

/// Builds the module proxy of `r`'s Go modules under `downloads` (the layout `go` reads
/// from `GOPROXY=file://…`: `@v/list`, `.info`, `.mod`, `.zip`) from their Debian packages,
/// downloaded with `apt-get download` (or, when apt cannot, the installed package's
/// `/usr/share/gocode/src`), and returns the go.sum lines of what it serves.
pub fn go_proxy(r: &Recipe, downloads: &Path) -> Result<String> {
    let debs = downloads.join("debs");
    std::fs::create_dir_all(&debs)?;
    let root = downloads.join("deb-root");
    for m in &r.go_modules {
        // The package's .deb in `debs`, downloaded now if it is not there yet.
        let find = || -> Result<Option<PathBuf>> {
            let prefix = format!("{}_", m.deb);
            Ok(std::fs::read_dir(&debs)?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .starts_with(&prefix)
                }))
        };
        let deb = match find()? {
            Some(d) => Some(d),
            None => {
                let out = Command::new("apt-get")
                    .args(["download", "-q", &m.deb])
                    .current_dir(&debs)
                    .output();
                match out {
                    Ok(o) if o.status.success() => find()?,
                    _ => None,
                }
            }
        };
        match deb {
            Some(deb) => {
                let out = Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(&deb)
                    .arg(&root)
                    .output()?;
                ensure!(
                    out.status.success(),
                    "dpkg-deb -x {} failed: {}",
                    deb.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => {
                let installed = Path::new("/usr/share/gocode/src").join(&m.module);
                ensure!(
                    installed.is_dir(),
                    "{}: neither `apt-get download {}` nor its installed sources ({}) could be had: apt-get install {}",
                    r.name,
                    m.deb,
                    installed.display(),
                    m.deb
                );
                let to = root.join("usr/share/gocode/src").join(&m.module);
                if !to.is_dir() {
                    vocab::tree::copy_tree(&installed, &to, vocab::tree::Perms::Keep)?;
                }
            }
        }
    }
    let mut c = Command::new("python3");
    c.arg(fixtures().join("goproxy.py"))
        .arg(go_proxy_dir(downloads))
        .arg(root.join("usr/share/gocode/src"));
    for m in &r.go_modules {
        c.arg(format!("{}@{}", m.module, m.version));
    }
    let out = c.output()?;
    ensure!(
        out.status.success(),
        "{}: goproxy.py failed: {}",
        r.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// One project on one backend, through the real `coval` binary.
pub struct Run<'a> {
    pub recipe: &'a Recipe,
    pub dir: PathBuf,
    /// `docker` or `local`.
    pub backend: &'a str,
    /// `sandbox.cache_dir` for local environments and logs.
    pub cache: PathBuf,
    pub workspace: PathBuf,
    /// Extra variables for every coval call.
    pub env: Vec<(String, String)>,
}

/// What `coval env build --json` said.
#[derive(Debug, Clone, Deserialize)]
pub struct Built {
    pub key: String,
    pub reused: bool,
    pub seconds: f64,
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub vars: Vec<NameValue>,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

/// One repair's outcome.
#[derive(Debug, Clone)]
pub struct Repaired {
    pub code: i32,
    pub wall: Duration,
    pub stderr: String,
    /// The final patch, when one was validated.
    pub patch: Option<String>,
}

impl Run<'_> {
    pub fn coval(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args)?.output()?)
    }

    /// The `coval` command of [`Run::coval`], not started.
    pub fn command(&self, args: &[&str]) -> Result<Command> {
        let mut c = Command::new(crate::workspace_binary("coval")?);
        c.args(["--workspace"])
            .arg(&self.workspace)
            .args(args)
            .env("COVAL_SANDBOX__BACKEND", self.backend)
            .env("COVAL_SANDBOX__CACHE_DIR", &self.cache)
            .env_remove("RUST_LOG")
            .env_remove("VIRTUAL_ENV")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        Ok(c)
    }

    /// `coval env build --json`.
    pub fn build(&self) -> Result<Built> {
        let dir = self.dir.display().to_string();
        let out = self.coval(&["env", "build", "-s", &dir, "--json"])?;
        ensure!(
            out.status.success(),
            "{} ({}): coval env build exited {:?}:\n{}",
            self.recipe.name,
            self.backend,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The environment built from nothing: pruned first when it exists.
    pub fn build_cold(&self) -> Result<Built> {
        let b = self.build()?;
        if !b.reused {
            return Ok(b);
        }
        let out = self.coval(&["env", "prune", "--key", &b.key])?;
        ensure!(out.status.success(), "prune failed");
        let again = self.build()?;
        ensure!(!again.reused, "{}: pruned, yet reused", self.recipe.name);
        Ok(again)
    }

    /// Size of the environment `key` (`coval env list --json`), in bytes.
    pub fn size(&self, key: &str) -> Result<u64> {
        let out = self.coval(&["env", "list", "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["key"] == key && e["backend"] == self.backend)
            .and_then(|e| e["bytes"].as_u64())
            .unwrap_or(0))
    }

    /// The broken project's tests, run in the local environment `env` (as its CI would):
    /// their output is the error log. Fails when they pass (the bug breaks nothing).
    pub fn error_log(&self, env: &Built) -> Result<PathBuf> {
        let (ok, log) = self.tests(env)?;
        ensure!(
            !ok,
            "{}: the broken project's tests pass; the bug breaks nothing:\n{log}",
            self.recipe.name
        );
        let file = self.dir.with_extension("error.log");
        std::fs::write(&file, log)?;
        Ok(file)
    }

    /// The project's detected test command, run in the local environment `env`: whether it
    /// passed, and its output.
    pub fn tests(&self, env: &Built) -> Result<(bool, String)> {
        let kind = sandbox::detect_project(&self.dir).context("no test command")?;
        // CI prints `go test ./...`, not its JSON events.
        let argv: Vec<&String> = kind.test_cmd.iter().filter(|a| *a != "-json").collect();
        let mut path = env.path.join(":");
        path.push_str(":/usr/local/bin:/usr/bin:/bin");
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..])
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", path)
            .env("HOME", "/tmp")
            .env("LANG", "C.UTF-8")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for nv in &env.vars {
            c.env(&nv.name, &nv.value);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // Where CI ran `npm ci`, the project has its node_modules: ES modules find their
        // dependencies only there (never through NODE_PATH). Made for this run only, so coval
        // never takes it for the user's own: a directory of links to the environment's entries
        // (as the local sandbox makes it), so what tools write there (vitest's results cache)
        // stays out of the shared environment.
        let modules = self.dir.join("node_modules");
        let linked = match env.vars.iter().find(|nv| nv.name == "NODE_PATH") {
            Some(nv) if std::fs::symlink_metadata(&modules).is_err() => {
                std::fs::create_dir(&modules)?;
                for entry in std::fs::read_dir(&nv.value)? {
                    let name = entry?.file_name();
                    if name != ".vite" && name != ".cache" {
                        let target = Path::new(&nv.value).join(&name);
                        std::os::unix::fs::symlink(target, modules.join(&name))?;
                    }
                }
                true
            }
            _ => false,
        };
        let out = c.output();
        if linked {
            // Removes the links, never what they point at.
            std::fs::remove_dir_all(&modules)?;
        }
        let out = out?;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), log))
    }

    pub fn repair(&self, log: &Path) -> Result<Repaired> {
        let t0 = Instant::now();
        let (log, dir) = (log.display().to_string(), self.dir.display().to_string());
        let out = self.coval(&["repair", "-e", &log, "-s", &dir, "--engine", "search"])?;
        let wall = t0.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let patch = stdout
            .lines()
            .find_map(|l| l.strip_prefix("patch"))
            .map(|p| PathBuf::from(p.trim()))
            .and_then(|p| std::fs::read_to_string(p).ok());
        Ok(Repaired {
            code: out.status.code().unwrap_or(-1),
            wall,
            stderr: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
            patch,
        })
    }
}

/// The patch undoes our bug: it removes the line we broke.
pub fn undoes(r: &Recipe, patch: &str) -> bool {
    let broken = r.bug.replace.trim();
    patch
        .lines()
        .any(|l| l.starts_with('-') && !l.starts_with("---") && l.contains(broken))
}

/// The Python requirements `dir` declares, as pip arguments (`-r FILE`, or the names from
/// pyproject.toml's dependencies and test/tests/testing/dev groups), the way a user would
/// install them by hand.
fn pip_args(dir: &Path) -> Result<Vec<String>> {
    const SCRIPT: &str = r#"
import glob, os, sys, tomllib
os.chdir(sys.argv[1])
reqs = sorted(glob.glob("requirements*.txt"))
if reqs:
    for r in reqs:
        print("-r"); print(r)
elif os.path.exists("pyproject.toml"):
    p = tomllib.load(open("pyproject.toml", "rb")).get("project", {})
    for d in p.get("dependencies", []):
        print(d)
    for g in ("test", "tests", "testing", "dev"):
        for d in p.get("optional-dependencies", {}).get(g, []):
            print(d)
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The installer alone, run by hand on `r`'s project `dir` as a user would (the same
/// installer coval runs: a venv and pip with the runner, `npm ci`, `go mod download`), on
/// `backend`: locally, or with `docker run` on the base image (host networking, no commit).
/// It uses the download cache coval's builds use (`downloads/{pip,npm}`), as a user's
/// installer has its own: both sides then install, neither measures the registry.
/// Its wall time in seconds.
pub fn installer_by_hand(r: &Recipe, dir: &Path, backend: &str, downloads: &Path) -> Result<f64> {
    let scratch = tempfile::tempdir_in("/var/tmp")?;
    let out = if backend == "docker" {
        "/tmp/env".to_owned()
    } else {
        scratch.path().join("env").display().to_string()
    };
    let (script, image) = match r.language.as_str() {
        "python" => {
            let args: Vec<String> = pip_args(dir)?.iter().map(|a| quote(a)).collect();
            (
                format!(
                    "python3 -m venv {out}/venv && {out}/venv/bin/pip install -q --disable-pip-version-check {} pytest coverage",
                    args.join(" ")
                ),
                "coval/python:bookworm",
            )
        }
        "javascript" => (
            format!(
                "mkdir -p {out} && cp package.json package-lock.json {out}/ && cd {out} && npm ci --no-audit --no-fund --loglevel=error"
            ),
            "coval/node:bookworm",
        ),
        "go" => (
            format!("GOMODCACHE={out}/gomod GOFLAGS=-mod=mod go mod download"),
            "coval/go:bookworm",
        ),
        other => bail!("no installer for {other}"),
    };
    let t0 = Instant::now();
    let status = if backend == "docker" {
        let mut c = Command::new("docker");
        c.args([
            "run",
            "--rm",
            "--network",
            "host",
            "--tmpfs",
            "/tmp:exec",
            "-w",
            "/src",
        ])
        .arg("-v")
        .arg(format!("{}:/src:ro", dir.display()))
        .arg("-v")
        .arg(format!("{}:/coval-downloads", downloads.display()))
        .args([
            "-e",
            "HOME=/tmp",
            "-e",
            "npm_config_cache=/coval-downloads/npm",
            "-e",
            "PIP_CACHE_DIR=/coval-downloads/pip",
        ]);
        // The host's CA bundle, as coval's install step has it (a proxy may sign TLS here).
        let ca = std::env::var("SSL_CERT_FILE")
            .ok()
            .filter(|p| Path::new(p).is_file())
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        if Path::new(&ca).is_file() {
            c.arg("-v").arg(format!("{ca}:/ca.crt:ro"));
            for k in [
                "SSL_CERT_FILE",
                "PIP_CERT",
                "REQUESTS_CA_BUNDLE",
                "NODE_EXTRA_CA_CERTS",
            ] {
                c.arg("-e").arg(format!("{k}=/ca.crt"));
            }
        }
        for (k, v) in user_env(r, downloads) {
            let path = v.trim_start_matches("file://");
            c.arg("-v").arg(format!("{path}:{path}:ro"));
            c.arg("-e").arg(format!("{k}={v}"));
        }
        c.args([image, "sh", "-c", &script]).output()?
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .current_dir(dir)
            .env("PIP_CACHE_DIR", downloads.join("pip"))
            .env("npm_config_cache", downloads.join("npm"));
        for (k, v) in user_env(r, downloads) {
            c.env(k, v);
        }
        c.output()?
    };
    let took = t0.elapsed().as_secs_f64();
    ensure!(
        status.status.success(),
        "{} ({backend}): the installer by hand failed: {}{}",
        r.name,
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    Ok(took)
}
