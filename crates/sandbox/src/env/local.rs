//! Local environments: the user's own first (an active virtualenv or conda environment, a
//! project `.venv`/`venv`, a project `node_modules`), when a run in the local sandbox shows it
//! has what the tests need; else one under the cache directory
//! (`<cache>/envs/<key>/{venv,node_modules,gomod,cargo}`), built in place under a file lock
//! (a virtualenv cannot move) and marked complete last, so a killed build is rebuilt.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use settings::SandboxConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use vocab::{Language, LanguageExt};

use super::{
    EnvError, Environment, HELPER, INSTALL_PY, Listed, Plan, Progress, UserDirs, cache_dir,
    classify, once, plan, progress, tail,
};
use crate::{LocalSandbox, ProjectKind, RunSpec, default_env};

const COMPLETE: &str = ".complete";
const META: &str = "env.json";

/// A held file lock (released when dropped).
pub(crate) struct Lock(#[allow(dead_code)] std::fs::File);

/// Takes the cross-process lock of `name` under `cache/locks` (waits for another build).
pub(crate) async fn lock(cache: &Path, name: &str) -> Result<Lock, EnvError> {
    let dir = cache.join("locks");
    std::fs::create_dir_all(&dir)
        .map_err(|e| EnvError::io(format!("cannot create {}", dir.display()), e))?;
    let path = dir.join(format!("{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EnvError::io(format!("cannot open {}", path.display()), e))?;
    tokio::task::spawn_blocking(move || crate::sys::flock_exclusive(&f).map(|()| Lock(f)))
        .await
        .map_err(|e| EnvError::io("lock task failed", e))?
        .map_err(|e| EnvError::io(format!("cannot lock {}", path.display()), e))
}

/// A program on coval's own `PATH` (`sandbox.host.path`).
pub(crate) fn which(cfg: &SandboxConfig, name: &str) -> Option<PathBuf> {
    std::env::split_paths(&cfg.host.path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The local environment of `kind`'s project.
pub(crate) async fn prepare(
    sb: &LocalSandbox,
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    root: &Path,
    user: &UserDirs,
) -> Result<Environment, EnvError> {
    let cache = cache_dir(cfg);
    let have = |t: &str| which(cfg, t).is_some();
    let Some(plan) = plan(cfg, kind, root, &have) else {
        return Ok(Environment::none("nothing to install for this project"));
    };
    match kind.language {
        Language::Python => python(sb, cfg, kind, &plan, root, user, &cache).await,
        Language::JavaScript | Language::TypeScript => {
            if let Some(env) = user_node_modules(&plan, user) {
                return Ok(env);
            }
            if !plan.declares {
                return Ok(Environment::none("the project declares no dependencies"));
            }
            let tool = which(cfg, "npm").ok_or_else(|| EnvError::Missing {
                what: "npm (the project's package.json declares dependencies)".into(),
                fix: "install Node.js with npm (Debian: `apt-get install nodejs npm`), or start a Docker engine".into(),
            })?;
            let base = version_of(&tool, &["--version"]).await;
            built(cfg, &plan, root, &cache, &format!("npm {base}"), None).await
        }
        Language::Go | Language::Rust => {
            if !plan.declares {
                return Ok(Environment::none("the project declares no dependencies"));
            }
            let (tool, fix) = if kind.language == Language::Go {
                (
                    "go",
                    "install Go (Debian: `apt-get install golang-go`), or start a Docker engine",
                )
            } else {
                (
                    "cargo",
                    "install Rust (https://rustup.rs), or start a Docker engine",
                )
            };
            let path = which(cfg, tool).ok_or_else(|| EnvError::Missing {
                what: tool.into(),
                fix: fix.into(),
            })?;
            let base = version_of(&path, &["version"]).await;
            built(cfg, &plan, root, &cache, &base, None).await
        }
        _ => built(cfg, &plan, root, &cache, "setup", None).await,
    }
}

async fn version_of(tool: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new(tool).args(args).output().await;
    match out {
        Ok(o) => format!(
            "{} {}",
            tool.display(),
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Err(_) => tool.display().to_string(),
    }
}

/// The user's virtualenvs and conda environments, in the order they are tried: where each
/// says it comes from, and its root.
fn user_pythons(cfg: &SandboxConfig, user: &UserDirs) -> Vec<(String, PathBuf)> {
    let mut out = vec![];
    for (var, v) in [
        ("VIRTUAL_ENV", &cfg.host.virtual_env),
        ("CONDA_PREFIX", &cfg.host.conda_prefix),
    ] {
        if !v.is_empty() {
            out.push((format!("the active environment ({var})"), PathBuf::from(v)));
        }
    }
    if let Some(p) = &user.project {
        for d in [".venv", "venv"] {
            out.push((format!("the project's {d}"), p.join(d)));
        }
    }
    out.retain(|(_, p)| p.join("bin/python").exists());
    out
}

/// Whether running `python` (with `path` first on PATH) in the local sandbox on the project
/// finds `modules` and every declared dependency: `Ok(())`, or what is missing.
async fn check_python(
    sb: &LocalSandbox,
    root: &Path,
    python: &str,
    path: Option<&Path>,
    modules: &[String],
) -> Result<(), String> {
    let mut argv = vec![
        python.to_owned(),
        "-c".into(),
        INSTALL_PY.into(),
        "check".into(),
    ];
    argv.extend(modules.iter().cloned());
    let mut spec = RunSpec::new(root, argv);
    spec.env = default_env();
    if let Some(p) = path {
        let env = Environment {
            path: vec![p.join("bin").display().to_string()],
            vars: vec![("VIRTUAL_ENV".into(), p.display().to_string())],
            ..Environment::default()
        };
        env.apply(&mut spec);
    }
    spec.timeout = Duration::from_secs(60);
    match sb.run(&spec).await {
        Ok(r) if r.success() => Ok(()),
        Ok(r) => {
            let said = format!("{}{}", r.stdout, r.stderr);
            let missing = said
                .lines()
                .find_map(|l| l.strip_prefix("missing: "))
                .map(str::to_owned);
            Err(missing.unwrap_or_else(|| format!("{} ({})", tail(&said, 2), r.verdict())))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn python(
    sb: &LocalSandbox,
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    plan: &Plan,
    root: &Path,
    user: &UserDirs,
    cache: &Path,
) -> Result<Environment, EnvError> {
    let needed: Vec<String> = plan
        .runner_modules
        .iter()
        .filter(|m| *m != "coverage")
        .cloned()
        .collect();
    let mut passed_over = vec![];
    for (from, dir) in user_pythons(cfg, user) {
        let key = format!("local-user-{}", dir.display());
        let (sb2, root2, needed2, from2, dir2) = (
            sb.clone(),
            root.to_path_buf(),
            needed.clone(),
            from.clone(),
            dir.clone(),
        );
        let key2 = key.clone();
        let r = once(&key, move || async move {
            let python = dir2.join("bin/python").display().to_string();
            match check_python(&sb2, &root2, &python, Some(&dir2), &needed2).await {
                Ok(()) => Ok(Environment {
                    key: key2,
                    image: None,
                    path: vec![dir2.join("bin").display().to_string()],
                    vars: vec![("VIRTUAL_ENV".into(), dir2.display().to_string())],
                    description: format!("{from2}: {}", dir2.display()),
                    reused: true,
                    took: Duration::ZERO,
                }),
                Err(why) => Err(EnvError::Missing {
                    what: format!("{from2} ({}) does not serve the tests here", dir2.display()),
                    fix: why,
                }),
            }
        })
        .await;
        match r {
            Ok(env) => return Ok(env),
            Err(e) => passed_over.push(e.to_string()),
        }
    }
    let _ = kind;
    let (exe, version) = base_python(sb, cfg, root).await?;
    if !plan.declares {
        // Nothing declared: the system interpreter the runs find (`python3` on the sandbox's
        // PATH) serves when it has the runner.
        let key = "local-system-python3".to_owned();
        let (sb2, root2, needed2) = (sb.clone(), root.to_path_buf(), needed.clone());
        let system = once(&key, move || async move {
            check_python(&sb2, &root2, "python3", None, &needed2)
                .await
                .map(|()| Environment::none("the system python3 has the test runner"))
                .map_err(|why| EnvError::Missing {
                    what: why,
                    fix: String::new(),
                })
        })
        .await;
        if let Ok(env) = system {
            return Ok(env);
        }
    }
    let mut env = built(
        cfg,
        plan,
        root,
        cache,
        &format!("{exe} {version}"),
        Some(&exe),
    )
    .await?;
    if !env.reused {
        // Built now: prove the sandbox's runs can use it (as their own user), so a run never
        // falls through PATH to another interpreter.
        let venv = PathBuf::from(
            env.vars
                .iter()
                .find(|(k, _)| k == "VIRTUAL_ENV")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        );
        let python = venv.join("bin/python").display().to_string();
        if let Err(why) = check_python(sb, root, &python, Some(&venv), &needed).await {
            return Err(EnvError::Missing {
                what: format!("an environment the local sandbox can run ({} fails there: {why})", venv.display()),
                fix: "its interpreter must be readable by the sandbox's user; set sandbox.cache_dir to a readable place, or use Docker".into(),
            });
        }
    }
    if !passed_over.is_empty() {
        env.description
            .push_str(&format!("; not used: {}", passed_over.join("; ")));
    }
    Ok(env)
}

/// The Python a local environment is made from: the user's `python3` (first on coval's
/// PATH) when the sandbox's runs can start it, else the `python3` they find on their own PATH.
/// Its absolute path and version, found once per process.
async fn base_python(
    sb: &LocalSandbox,
    cfg: &SandboxConfig,
    root: &Path,
) -> Result<(String, String), EnvError> {
    let (sb, root, cfg) = (sb.clone(), root.to_path_buf(), cfg.clone());
    let env = once("local-base-python", move || async move {
        let mut tried = vec![];
        let mut candidates: Vec<String> = which(&cfg, "python3").map(|p| p.display().to_string()).into_iter().collect();
        candidates.push("python3".into());
        for py in candidates {
            let mut spec = RunSpec::new(&root, vec![py.clone(), "-c".into(), "import sys; print(sys.executable); print(sys.version.split()[0])".into()]);
            spec.timeout = Duration::from_secs(30);
            match sb.run(&spec).await {
                Ok(r) if r.success() => {
                    let mut l = r.stdout.lines();
                    let exe = l.next().unwrap_or("").trim().to_owned();
                    let version = l.next().unwrap_or("").trim().to_owned();
                    if !exe.is_empty() {
                        return Ok(Environment { key: exe, description: version, ..Environment::default() });
                    }
                    tried.push(format!("{py}: printed nothing"));
                }
                Ok(r) => tried.push(format!("{py}: {}", r.verdict())),
                Err(e) => tried.push(format!("{py}: {e}")),
            }
        }
        Err(EnvError::Missing {
            what: format!("a python3 the local sandbox can run ({})", tried.join("; ")),
            fix: "install Python 3 with venv (Debian: `apt-get install python3 python3-venv`), or start a Docker engine (`scripts/dev-services.sh up`)".into(),
        })
    })
    .await?;
    Ok((env.key, env.description))
}

/// The project's own `node_modules` (in the user's directory), when every declared
/// dependency is in it.
fn user_node_modules(plan: &Plan, user: &UserDirs) -> Option<Environment> {
    let dir = user.project.as_ref()?.join("node_modules");
    if !dir.is_dir() {
        return None;
    }
    let pkg = plan.manifests.iter().find(|(n, _)| n == "package.json")?;
    let v: serde_json::Value = serde_json::from_slice(&pkg.1).ok()?;
    let all_there = ["dependencies", "devDependencies"].iter().all(|k| {
        v.get(k).and_then(|d| d.as_object()).is_none_or(|o| {
            o.keys()
                .all(|name| dir.join(name).join("package.json").exists())
        })
    });
    all_there.then(|| node_env(&dir, "the project's node_modules".into(), String::new()))
}

fn node_env(modules: &Path, description: String, key: String) -> Environment {
    Environment {
        key,
        image: None,
        path: vec![modules.join(".bin").display().to_string()],
        vars: vec![("NODE_PATH".into(), modules.display().to_string())],
        description,
        reused: true,
        took: Duration::ZERO,
    }
}

/// How runs use the environment built in `dir`.
fn environment(language: Language, dir: &Path, key: &str, description: String) -> Environment {
    match language {
        Language::Python => Environment {
            key: key.to_owned(),
            path: vec![dir.join("venv/bin").display().to_string()],
            vars: vec![("VIRTUAL_ENV".into(), dir.join("venv").display().to_string())],
            description,
            ..Environment::default()
        },
        Language::JavaScript | Language::TypeScript => {
            node_env(&dir.join("node_modules"), description, key.to_owned())
        }
        Language::Go => Environment {
            key: key.to_owned(),
            vars: vec![
                ("GOMODCACHE".into(), dir.join("gomod").display().to_string()),
                ("GOCACHE".into(), dir.join("gocache").display().to_string()),
            ],
            description,
            ..Environment::default()
        },
        Language::Rust => Environment {
            key: key.to_owned(),
            vars: vec![
                ("CARGO_HOME".into(), dir.join("cargo").display().to_string()),
                ("CARGO_NET_OFFLINE".into(), "true".into()),
            ],
            description,
            ..Environment::default()
        },
        _ => Environment {
            key: key.to_owned(),
            description,
            ..Environment::default()
        },
    }
}

/// The environment of `plan` under the cache, built when it is not there (complete).
async fn built(
    cfg: &SandboxConfig,
    plan: &Plan,
    root: &Path,
    cache: &Path,
    base: &str,
    python: Option<&str>,
) -> Result<Environment, EnvError> {
    let key = plan.key("local", base);
    let (cfg, plan, root, cache, python) = (
        cfg.clone(),
        plan.clone(),
        root.to_path_buf(),
        cache.to_path_buf(),
        python.map(str::to_owned),
    );
    once(&format!("local-{key}"), move || async move {
        let started = Instant::now();
        let dir = cache.join("envs").join(&key);
        let describe = |built: Option<Duration>| {
            format!(
                "{} environment {} ({})",
                plan.language.key(),
                dir.display(),
                plan.how(built)
            )
        };
        if dir.join(COMPLETE).exists() {
            let mut e = environment(plan.language, &dir, &key, describe(None));
            e.took = started.elapsed();
            e.reused = true;
            return Ok(e);
        }
        let _lock = lock(&cache, &key).await?;
        if dir.join(COMPLETE).exists() {
            let mut e = environment(plan.language, &dir, &key, describe(None));
            e.took = started.elapsed();
            e.reused = true;
            return Ok(e);
        }
        build(&cfg, &plan, &key, &root, &dir, python.as_deref()).await?;
        let took = started.elapsed();
        let mut e = environment(plan.language, &dir, &key, describe(Some(took)));
        e.reused = false;
        e.took = took;
        Ok(e)
    })
    .await
}

async fn build(
    cfg: &SandboxConfig,
    plan: &Plan,
    key: &str,
    root: &Path,
    dir: &Path,
    python: Option<&str>,
) -> Result<(), EnvError> {
    let started = Instant::now();
    progress(Progress::Started {
        key: key.to_owned(),
        steps: plan.steps.clone(),
        backend: "local",
    });
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)
        .map_err(|e| EnvError::io(format!("cannot create {}", dir.display()), e))?;
    set_mode(dir, 0o755);
    if let Some(p) = dir.parent() {
        set_mode(p, 0o755);
        if let Some(pp) = p.parent() {
            set_mode(pp, 0o755);
        }
    }
    let work = tempfile::Builder::new()
        .prefix("coval-env-")
        .tempdir()
        .map_err(|e| EnvError::io("cannot create the install dir", e))?;
    let src = work.path().join("src");
    let (from, to) = (root.to_path_buf(), src.clone());
    tokio::task::spawn_blocking(move || {
        vocab::tree::copy_tree(&from, &to, vocab::tree::Perms::Keep)
    })
    .await
    .map_err(|e| EnvError::io("copy task failed", e))?
    .map_err(|e| EnvError::io(format!("cannot copy {}", root.display()), e))?;
    std::fs::write(src.join(HELPER), INSTALL_PY)
        .and_then(|()| std::fs::write(src.join(".coval-install.sh"), &plan.script))
        .map_err(|e| EnvError::io("cannot write the install script", e))?;
    let downloads = super::download_cache(dir.parent().and_then(Path::parent).unwrap_or(dir));
    let log_path = dir.join("install.log");
    let mut log = std::fs::File::create(&log_path).ok();
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        "sh -e .coval-install.sh; rc=$?; [ $rc = 0 ] && chmod -R a+rX \"$COVAL_ENV\" 2>/dev/null; exit $rc",
    ])
    .current_dir(&src)
    .env("COVAL_ENV", dir)
    .env("COVAL_NODE_MODULES", dir.join("node_modules"))
    .env("COVAL_PY", python.unwrap_or("python3"))
    .env("PIP_CACHE_DIR", downloads.join("pip"))
    .env("npm_config_cache", downloads.join("npm"))
    .env("PIP_NO_INPUT", "1")
    .env("PIP_PROGRESS_BAR", "off")
    .env_remove("VIRTUAL_ENV")
    .env_remove("PYTHONHOME")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| EnvError::io("cannot start the install step (sh)", e))?;
    let pgid = child.id();
    let mut out = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| EnvError::io("install", "no stdout"))?,
    )
    .lines();
    let mut err = BufReader::new(
        child
            .stderr
            .take()
            .ok_or_else(|| EnvError::io("install", "no stderr"))?,
    )
    .lines();
    let mut output = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.install_timeout_secs);
    let (mut out_open, mut err_open) = (true, true);
    let mut timed_out = false;
    while out_open || err_open {
        let line = tokio::select! {
            l = out.next_line(), if out_open => match l { Ok(Some(l)) => l, _ => { out_open = false; continue } },
            l = err.next_line(), if err_open => match l { Ok(Some(l)) => l, _ => { err_open = false; continue } },
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break }
        };
        if let Some(f) = log.as_mut() {
            use std::io::Write;
            let _ = writeln!(f, "{line}");
        }
        if !line.trim().is_empty() {
            progress(Progress::Line(line.clone()));
        }
        output.push_str(&line);
        output.push('\n');
        if output.len() > 128 << 10 {
            let cut = output.len() - (64 << 10);
            let cut = (cut..output.len())
                .find(|&i| output.is_char_boundary(i))
                .unwrap_or(0);
            output.drain(..cut);
        }
    }
    if timed_out && let Some(p) = pgid {
        crate::sys::kill_group(p);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| EnvError::io("the install step", e))?;
    let ok = !timed_out && status.success();
    progress(Progress::Finished {
        key: key.to_owned(),
        took: started.elapsed(),
        ok,
    });
    if timed_out {
        return Err(EnvError::Timeout {
            secs: cfg.install_timeout_secs,
            tail: tail(&output, 12),
            log: log_path.display().to_string(),
        });
    }
    if !status.success() {
        return Err(classify(plan.language, &output, status.code(), &log_path));
    }
    let meta = serde_json::json!({
        "key": key,
        "language": plan.language.key(),
        "project": root.display().to_string(),
        "steps": plan.steps,
        "created": vocab::now_ms() / 1000,
        "took_ms": started.elapsed().as_millis() as u64,
    });
    std::fs::write(dir.join(META), meta.to_string())
        .and_then(|()| std::fs::write(dir.join(COMPLETE), b""))
        .map_err(|e| EnvError::io(format!("cannot finish {}", dir.display()), e))?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

/// Bytes under `p` (not following symlinks).
pub(crate) fn du(p: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
        .unwrap_or(0)
}

pub(crate) fn list(cache: &Path) -> Vec<Listed> {
    let Ok(rd) = std::fs::read_dir(cache.join("envs")) else {
        return vec![];
    };
    let mut out: Vec<Listed> = rd
        .flatten()
        .filter(|e| e.path().join(COMPLETE).exists())
        .map(|e| {
            let meta: serde_json::Value = std::fs::read(e.path().join(META))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let s = |k: &str| {
                meta.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            Listed {
                key: e.file_name().to_string_lossy().into_owned(),
                backend: "local",
                language: s("language"),
                location: e.path().display().to_string(),
                bytes: du(&e.path()),
                created: meta.get("created").and_then(|v| v.as_u64()).unwrap_or(0),
                project: s("project"),
            }
        })
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(b.created));
    out
}

pub(crate) fn prune(cache: &Path, key: Option<&str>) -> Vec<Listed> {
    let mut removed = vec![];
    for l in list(cache) {
        if key.is_some_and(|k| !l.key.starts_with(k)) {
            continue;
        }
        if std::fs::remove_dir_all(&l.location).is_ok() {
            removed.push(l);
        }
    }
    // Incomplete builds (a killed process) go too.
    if key.is_none()
        && let Ok(rd) = std::fs::read_dir(cache.join("envs"))
    {
        for e in rd.flatten() {
            if !e.path().join(COMPLETE).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    super::forget_resolved();
    removed
}
