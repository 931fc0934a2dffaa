//! Environment images: the base image with the project's dependencies installed, built once
//! per key. The install step alone runs with host networking (and the host's CA bundle,
//! read-only), as root, in a container whose `/tmp` is a tmpfs (caches never reach the image),
//! bounded by `sandbox.install_timeout_secs`, its output logged; the container is committed
//! and tagged `coval-env/<language>:<key>`. Candidates then run on that image exactly as on a
//! base image: network none, read-only root, a non-root user.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CommitContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures::StreamExt;

use super::container::{Staging, wait_exit};
use super::{DockerSandbox, LABEL, ROLE_LABEL, engine};
use crate::SandboxError;
use crate::env::{
    self, DOCKER_ENV_DIR, DOCKER_NODE_MODULES, ENV_LABEL, ENV_REPO, EnvError, Environment, HELPER,
    INSTALL_PY, Listed, Plan, Progress,
};
use settings::SandboxConfig;
use vocab::LanguageExt;

/// Where the shared download cache (`<cache>/downloads`) is mounted during the install step.
const DOWNLOADS_IN: &str = "/coval-downloads";
/// Where the host's CA bundle is mounted during the install step.
const CA_IN: &str = "/coval-ca.crt";
/// The install step's last line: its installer's and its permissions' milliseconds.
const TIMES: &str = "coval-env-times:";

impl DockerSandbox {
    /// The id of `image` (its content, for environment keys).
    pub async fn image_id(&self, image: &str) -> Result<String, SandboxError> {
        self.require_image(image).await?;
        let i = self
            .docker
            .inspect_image(image)
            .await
            .map_err(engine("inspect image"))?;
        Ok(i.id.unwrap_or_else(|| image.to_owned()))
    }
}

fn tag_of(plan: &Plan, key: &str) -> (String, String) {
    (
        format!("{ENV_REPO}/{}", plan.language.key()),
        key.to_owned(),
    )
}

/// How runs use the environment image `image` of `plan`.
fn environment(plan: &Plan, key: &str, image: String, description: String) -> Environment {
    let mut path = vec![];
    let mut vars = vec![];
    match plan.language {
        vocab::Language::Python => {
            path.push(format!("{DOCKER_ENV_DIR}/venv/bin"));
            vars.push(("VIRTUAL_ENV".into(), format!("{DOCKER_ENV_DIR}/venv")));
        }
        vocab::Language::JavaScript | vocab::Language::TypeScript => {
            path.push(format!("{DOCKER_NODE_MODULES}/.bin"));
        }
        vocab::Language::Go => {
            vars.push(("GOMODCACHE".into(), format!("{DOCKER_ENV_DIR}/gomod")));
            vars.push(("GOCACHE".into(), format!("{DOCKER_ENV_DIR}/gocache")));
        }
        vocab::Language::Rust => {
            vars.push(("CARGO_HOME".into(), format!("{DOCKER_ENV_DIR}/cargo")));
            vars.push(("CARGO_NET_OFFLINE".into(), "true".into()));
        }
        _ => {}
    }
    Environment {
        key: key.to_owned(),
        image: Some(image),
        path,
        vars,
        description,
        reused: true,
        took: Duration::ZERO,
    }
}

/// The environment image for `plan`, built when no image has its key.
pub(crate) async fn resolve(
    d: &DockerSandbox,
    cfg: &SandboxConfig,
    plan: &Plan,
    key: &str,
    base: &str,
    root: &Path,
) -> Result<Environment, EnvError> {
    let started = Instant::now();
    let (repo, tag) = tag_of(plan, key);
    let image = format!("{repo}:{tag}");
    let found = |took: Duration, built: bool| {
        let what = plan.how(built.then_some(took));
        let mut e = environment(
            plan,
            key,
            image.clone(),
            format!(
                "{} environment image {image} on {base} ({what})",
                plan.language.key()
            ),
        );
        e.reused = !built;
        e.took = took;
        e
    };
    if d.image_exists(&image).await? {
        return Ok(found(started.elapsed(), false));
    }
    let cache = env::cache_dir(cfg);
    let _lock = env::local::lock(&cache, &format!("docker-{key}")).await?;
    if d.image_exists(&image).await? {
        return Ok(found(started.elapsed(), false));
    }
    build(d, cfg, plan, key, base, root, &repo, &tag, &cache).await?;
    Ok(found(started.elapsed(), true))
}

#[allow(clippy::too_many_arguments)]
async fn build(
    d: &DockerSandbox,
    cfg: &SandboxConfig,
    plan: &Plan,
    key: &str,
    base: &str,
    root: &Path,
    repo: &str,
    tag: &str,
    cache: &Path,
) -> Result<(), EnvError> {
    let started = Instant::now();
    env::progress(Progress::Started {
        key: key.to_owned(),
        steps: plan.steps.clone(),
        backend: "docker",
    });
    let mut phases = Phases::new();
    let staging = Staging::new()?;
    staging.add("src", root).await?;
    let src = staging.path.join("src");
    std::fs::write(src.join(HELPER), INSTALL_PY)
        .and_then(|()| std::fs::write(src.join(".coval-install.sh"), &plan.script))
        .map_err(|e| EnvError::io("cannot write the install script", e))?;
    let logs = cache.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let log_path = logs.join(format!("docker-{key}.log"));

    let downloads = env::download_cache(cache);
    let mut mounts = vec![
        Mount {
            target: Some("/coval-src".into()),
            source: Some(src.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        },
        // The download cache the local builds use too: what one fetched the other reuses.
        Mount {
            target: Some(DOWNLOADS_IN.into()),
            source: Some(downloads.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        },
    ];
    let mut envs = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "HOME=/tmp/coval-home".into(),
        "LANG=C.UTF-8".into(),
        format!("COVAL_ENV={DOCKER_ENV_DIR}"),
        format!("COVAL_NODE_MODULES={DOCKER_NODE_MODULES}"),
        "COVAL_PY=python3".into(),
        // A base image without python3-venv (a user's image, or an older coval image) gets it
        // from Debian's archive in this step.
        "COVAL_APT=1".into(),
        format!("PIP_CACHE_DIR={DOWNLOADS_IN}/pip"),
        "PIP_NO_INPUT=1".into(),
        "PIP_PROGRESS_BAR=off".into(),
        format!("npm_config_cache={DOWNLOADS_IN}/npm"),
        "npm_config_update_notifier=false".into(),
        "GOPATH=/tmp/coval-cache/go".into(),
        "GOCACHE=/tmp/coval-cache/go-build".into(),
    ];
    for (k, v) in &cfg.host.registry {
        if k != "SSL_CERT_FILE" {
            envs.push(format!("{k}={v}"));
        }
    }
    // A registry on disk (`GOPROXY=file:///srv/goproxy`, `PIP_FIND_LINKS=/srv/wheels`) is
    // where the user's variable says, read-only: the install step reads it as on the host.
    for dir in local_registries(&cfg.host.registry) {
        mounts.push(Mount {
            target: Some(dir.clone()),
            source: Some(dir),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let ca = cfg
        .host
        .registry
        .iter()
        .find(|(k, _)| k == "SSL_CERT_FILE")
        .map(|(_, v)| v.clone())
        .filter(|p| Path::new(p).is_file())
        .or_else(|| {
            let p = "/etc/ssl/certs/ca-certificates.crt";
            Path::new(p).is_file().then(|| p.to_owned())
        });
    if let Some(ca) = ca {
        mounts.push(Mount {
            target: Some(CA_IN.into()),
            source: Some(ca),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        });
        for k in [
            "SSL_CERT_FILE",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "CURL_CA_BUNDLE",
        ] {
            envs.push(format!("{k}={CA_IN}"));
        }
    }
    // The cache's new files go back to the user who runs coval (the step runs as root).
    let (uid, gid) = (crate::sys::euid(), crate::sys::egid());
    // The install step ends when coval's attached stdin closes: a watcher waits on it and,
    // when it closes before the installer is done (coval was killed, or gave up), kills
    // every process of the container. The installer itself reads no stdin. Its own times
    // (the installer, then the permissions) and its exit code close the output. On success
    // the step then waits for the watcher: the container is committed while nothing writes
    // any more (so without a pause), and ends when coval closes stdin. The engine removes
    // it then (AutoRemove): coval waits neither for its exit nor for its removal, and no
    // build container outlives coval.
    let script = format!(
        "exec 3<&0; ( read -r _ <&3; [ -e /tmp/.coval-installed ] || kill -s KILL -- -1 ) & w=$!; \
         t0=$(date +%s%N); mkdir -p {DOCKER_ENV_DIR} && sh -e /coval-src/.coval-install.sh </dev/null 3<&-; \
         rc=$?; touch /tmp/.coval-installed; exec 3<&-; \
         t1=$(date +%s%N); chown -R {uid}:{gid} {DOWNLOADS_IN} 2>/dev/null; \
         [ $rc = 0 ] && chmod -R a+rX {DOCKER_ENV_DIR} {DOCKER_NODE_MODULES} 2>/dev/null; \
         t2=$(date +%s%N); echo \"{TIMES} $(( (t1 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 )) $rc\"; \
         if [ $rc = 0 ]; then wait; else kill -s KILL $w; fi; exit $rc"
    );
    let host = HostConfig {
        network_mode: Some("host".into()),
        mounts: Some(mounts),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_owned(),
            "rw,exec,nosuid,nodev,size=4g,mode=1777".to_owned(),
        )])),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(4 << 30),
        memory_swap: Some(4 << 30),
        pids_limit: Some(4096),
        init: Some(true),
        runtime: d.runtime.clone(),
        auto_remove: Some(true),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(base.to_owned()),
        cmd: Some(vec!["sh".into(), "-c".into(), script]),
        user: Some("0:0".into()),
        env: Some(envs),
        working_dir: Some("/coval-src".into()),
        attach_stdin: Some(true),
        open_stdin: Some(true),
        // The container's stdin closes when coval's attached stream ends.
        stdin_once: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        labels: Some(HashMap::from([
            (LABEL.to_owned(), d.instance.clone()),
            (ROLE_LABEL.to_owned(), "env-build".to_owned()),
            // Which project it builds for (`docker ps --filter label=...`).
            (
                "dev.coval.env.project".to_owned(),
                root.display().to_string(),
            ),
        ])),
        host_config: Some(host),
        ..Default::default()
    };
    phases.lap("staging");
    let guard = d.create(body).await?;
    let opts = AttachContainerOptionsBuilder::default()
        .stream(true)
        .logs(true)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = d
        .docker
        .attach_container(&guard.id, Some(opts))
        .await
        .map_err(engine("attach"))?;
    let (mut stream, mut stdin) = (attached.output, attached.input);
    d.docker
        .start_container(&guard.id, None)
        .await
        .map_err(engine("start container"))?;
    phases.lap("container start");
    let mut output = String::new();
    let mut log = std::fs::File::create(&log_path).ok();
    let timeout = Duration::from_secs(cfg.install_timeout_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut timed_out = false;
    let mut lines = Lines::default();
    // The install step's exit code, from its last line (or from the engine when it ended
    // without one).
    let mut reported: Option<i64> = None;
    while reported.is_none() {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(chunk)) => {
                    let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                    if let Some(f) = log.as_mut() {
                        use std::io::Write;
                        let _ = f.write_all(text.as_bytes());
                    }
                    for l in lines.push(&text) {
                        if let Some(times) = l.strip_prefix(TIMES) {
                            reported = phases.inside(times);
                        } else if !l.trim().is_empty() {
                            env::progress(Progress::Line(l));
                        }
                    }
                    keep_tail(&mut output, &text);
                }
                Some(Err(_)) | None => break,
            },
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break }
        }
    }
    if timed_out {
        let _ = d
            .docker
            .kill_container(
                &guard.id,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("KILL")
                        .build(),
                ),
            )
            .await;
    }
    let code = match reported {
        Some(c) => c,
        None if timed_out => -1,
        // Ended without its last line (killed, out of memory): the engine's word, while the
        // container is still there to ask.
        None => wait_exit(&d.docker, &guard.id).await.unwrap_or(-1),
    };
    phases.lap("install step");
    let ok = !timed_out && code == 0;
    let result = if timed_out {
        Err(EnvError::Timeout {
            secs: cfg.install_timeout_secs,
            tail: env::tail(&output, 12),
            log: log_path.display().to_string(),
        })
    } else if code != 0 {
        Err(env::classify(
            plan.language,
            &output,
            i32::try_from(code).ok().filter(|c| *c >= 0),
            &log_path,
        ))
    } else {
        let labels = HashMap::from([
            (ENV_LABEL.to_owned(), key.to_owned()),
            ("dev.coval.env.base".to_owned(), base.to_owned()),
            (
                "dev.coval.env.language".to_owned(),
                plan.language.key().to_owned(),
            ),
            (
                "dev.coval.env.project".to_owned(),
                root.display().to_string(),
            ),
            ("dev.coval.env.steps".to_owned(), plan.steps.join("; ")),
            (
                "dev.coval.env.created".to_owned(),
                (vocab::now_ms() / 1000).to_string(),
            ),
        ]);
        let config = ContainerConfig {
            labels: Some(labels),
            cmd: Some(vec!["sh".into()]),
            working_dir: Some("/".into()),
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "LANG=C.UTF-8".into(),
            ]),
            // The build's stdin settings stay out of the image.
            open_stdin: Some(false),
            stdin_once: Some(false),
            attach_stdin: Some(false),
            ..Default::default()
        };
        let opts = CommitContainerOptionsBuilder::default()
            .container(&guard.id)
            .repo(repo)
            .tag(tag)
            .comment(&format!("coval environment {key}"))
            .pause(false)
            .build();
        d.docker
            .commit_container(opts, config)
            .await
            .map(|_| ())
            .map_err(|e| EnvError::Sandbox(format!("docker commit failed: {e}")))
    };
    phases.lap("commit");
    // The step ends as its stdin closes; the engine removes the container (AutoRemove).
    use tokio::io::AsyncWriteExt;
    let _ = stdin.shutdown().await;
    drop((stdin, stream));
    guard.leave_to_engine();
    drop(staging);
    phases.lap("cleanup");
    // Where a cold build's time goes beside the installer's own (the bench reads it here).
    let said = phases.line();
    if let Some(f) = log.as_mut() {
        use std::io::Write;
        let _ = writeln!(f, "{said}");
    }
    env::progress(Progress::Line(said));
    env::progress(Progress::Finished {
        key: key.to_owned(),
        took: started.elapsed(),
        ok,
    });
    result
}

/// The host directories the registry variables name (`file://` URLs and absolute paths in
/// their comma, pipe or space separated lists), existing ones only, without duplicates.
fn local_registries(vars: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for (k, v) in vars {
        if k == "SSL_CERT_FILE" {
            continue;
        }
        for item in v.split([',', '|', ' ']) {
            let path = item.strip_prefix("file://").unwrap_or(item).trim();
            let p = Path::new(path);
            if p.is_absolute()
                && p.is_dir()
                && !p.components().any(|c| c == std::path::Component::ParentDir)
                && !out.iter().any(|o| o == path)
            {
                out.push(path.to_owned());
            }
        }
    }
    out
}

/// The wall time of a build's phases, in order, and the install step's own split of its
/// time (the installer, then the permissions), as it reports it.
struct Phases {
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
    inside: Option<(u64, u64)>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: Instant::now(),
            laps: vec![],
            inside: None,
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    /// `INSTALLER_MS PERMISSIONS_MS EXIT_CODE`, the install step's last line: its exit code
    /// (`None` when malformed).
    fn inside(&mut self, line: &str) -> Option<i64> {
        let mut it = line.split_whitespace().map(str::parse::<i64>);
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(rc)), None) => {
                self.inside = Some((a.max(0).unsigned_abs(), b.max(0).unsigned_abs()));
                Some(rc)
            }
            _ => None,
        }
    }

    /// `coval-env: phases: staging 0.01 s, ..., installer 40.12 s, permissions 0.20 s`.
    fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .laps
            .iter()
            .map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64()))
            .collect();
        if let Some((a, b)) = self.inside {
            parts.push(format!("installer {:.2} s", a as f64 / 1000.0));
            parts.push(format!("permissions {:.2} s", b as f64 / 1000.0));
        }
        format!("coval-env: phases: {}", parts.join(", "))
    }
}

/// Splits chunks of output into whole lines (a chunk may end inside a line).
#[derive(Default)]
struct Lines {
    partial: String,
}

impl Lines {
    fn push(&mut self, text: &str) -> Vec<String> {
        self.partial.push_str(text);
        let Some(end) = self.partial.rfind('\n') else {
            return vec![];
        };
        let rest = self.partial.split_off(end + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        whole.lines().map(str::to_owned).collect()
    }
}

/// Keeps the last 64 KiB of the installer's output.
fn keep_tail(out: &mut String, more: &str) {
    out.push_str(more);
    const KEEP: usize = 64 << 10;
    if out.len() > KEEP {
        let mut cut = out.len() - KEEP;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out.drain(..cut);
    }
}

/// Every environment image on this engine.
pub async fn list(d: &DockerSandbox) -> Result<Vec<Listed>, SandboxError> {
    let filters = HashMap::from([("label".to_owned(), vec![ENV_LABEL.to_owned()])]);
    let opts = ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = d
        .docker
        .list_images(Some(opts))
        .await
        .map_err(engine("list images"))?;
    let mut base_sizes: HashMap<String, i64> = HashMap::new();
    let mut out = vec![];
    for i in images {
        let label = |k: &str| i.labels.get(k).cloned().unwrap_or_default();
        let base = label("dev.coval.env.base");
        if !base_sizes.contains_key(&base)
            && let Ok(b) = d.docker.inspect_image(&base).await
        {
            base_sizes.insert(base.clone(), b.size.unwrap_or(0));
        }
        let own = i.size - base_sizes.get(&base).copied().unwrap_or(0);
        out.push(Listed {
            key: label(ENV_LABEL),
            backend: "docker",
            language: label("dev.coval.env.language"),
            location: i.repo_tags.first().cloned().unwrap_or(i.id.clone()),
            bytes: u64::try_from(own.max(0)).unwrap_or(0),
            created: label("dev.coval.env.created").parse().unwrap_or(0),
            project: label("dev.coval.env.project"),
        });
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.created));
    Ok(out)
}

/// Removes environment images (all, or those whose key starts with `key`).
pub async fn prune(d: &DockerSandbox, key: Option<&str>) -> Result<Vec<Listed>, SandboxError> {
    let mut removed = vec![];
    for l in list(d).await? {
        if key.is_some_and(|k| !l.key.starts_with(k)) {
            continue;
        }
        let opts = RemoveImageOptionsBuilder::default().force(true).build();
        d.docker
            .remove_image(&l.location, Some(opts), None)
            .await
            .map_err(engine("remove image"))?;
        removed.push(l);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::{Lines, Phases, local_registries};

    #[test]
    fn output_lines_are_whole_even_when_a_chunk_ends_inside_one() {
        let mut l = Lines::default();
        assert!(l.push("coval-env-ti").is_empty());
        assert_eq!(l.push("mes: 1 2 0\nnext"), vec!["coval-env-times: 1 2 0"]);
        assert_eq!(l.push(" line\r\n\nlast\n"), vec!["next line", "", "last"]);
        assert!(l.push("").is_empty());
    }

    #[test]
    fn the_phases_line_has_the_install_steps_own_times() {
        let mut p = Phases::new();
        p.lap("staging");
        assert_eq!(p.inside("not numbers"), None);
        assert_eq!(p.inside("40123 205"), None, "no exit code");
        assert!(!p.line().contains("installer"), "{}", p.line());
        assert_eq!(p.inside(" 40123 205 0"), Some(0));
        let line = p.line();
        assert!(line.starts_with("coval-env: phases: staging 0."), "{line}");
        assert!(
            line.ends_with("installer 40.12 s, permissions 0.20 s"),
            "{line}"
        );
    }

    #[test]
    fn registries_on_disk_are_the_existing_absolute_dirs_the_variables_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        let vars = vec![
            (
                "GOPROXY".to_owned(),
                format!("file://{dir},https://proxy.golang.org|direct"),
            ),
            ("PIP_FIND_LINKS".to_owned(), format!("{dir} /no/such/dir")),
            (
                "PIP_INDEX_URL".to_owned(),
                "https://pypi.org/simple".to_owned(),
            ),
            ("SSL_CERT_FILE".to_owned(), dir.clone()),
            ("GOPROXY".to_owned(), format!("file://{dir}/../x")),
        ];
        assert_eq!(local_registries(&vars), vec![dir]);
    }
}
