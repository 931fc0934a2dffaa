//! `coval run` and `coval stop`: build or pick the iteration's image for the strategy, start
//! it beside whatever serves, wait for its health check, switch the proxy that owns the
//! stable port, drain and stop the old version; roll back (remove the new one, keep the old)
//! when it never becomes healthy. Deployments are recorded in the workspace store.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::IterationId;
use settings::{NetworkMode, Settings, VolumeStrategy};
use sha2::{Digest, Sha256};
use store::{DeploymentRecord, Store};
use vocab::Workspace;

use crate::app::{self, AppSpec};
use crate::engine::{self, ContainerSpec, Engine, Net};
use crate::{DeployError, docker_safe, probe, proxy, tarball};

/// The port an app listens on inside its own network namespace (bridge mode).
const BRIDGE_APP_PORT: u16 = 8000;

pub struct Ctx<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub workspace: Workspace,
    pub engine: Engine,
    /// The coval binary the proxy container runs (bind-mounted read-only).
    pub coval_exe: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub iteration: Option<IterationId>,
    pub port: Option<u16>,
    pub strategy: Option<VolumeStrategy>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployed {
    pub iteration: String,
    pub container: String,
    pub image: String,
    /// The strategy used (overlay falls back to copy when it cannot apply).
    pub strategy: String,
    pub notes: Vec<String>,
    pub stable_port: u16,
    pub url: String,
    pub backend: String,
    /// The version it replaced, stopped after draining.
    pub replaced: Vec<String>,
    /// From the start of `coval run` to the new version answering its health check.
    pub seconds_to_healthy: f64,
    /// From the start of `coval run` to traffic on the stable port reaching the new version.
    pub seconds_to_serving: f64,
}

pub fn strategy_name(s: VolumeStrategy) -> &'static str {
    match s {
        VolumeStrategy::Overlay => "overlay",
        VolumeStrategy::Copy => "copy",
        VolumeStrategy::Symlink => "symlink",
    }
}

fn internal(e: impl std::fmt::Display) -> DeployError {
    DeployError::Internal(e.to_string())
}

impl Ctx<'_> {
    fn project(&self) -> String {
        docker_safe(&self.settings.project.name)
    }

    fn proxy_name(&self, port: u16) -> String {
        format!("coval-{}-proxy-{port}", self.project())
    }

    fn net(&self, publish: Option<(u16, u16)>) -> Result<Net, DeployError> {
        match self.settings.docker.network_mode {
            NetworkMode::Host => Ok(Net::Host),
            NetworkMode::Bridge => Ok(Net::Bridge {
                network: self.settings.docker.network_name.clone(),
                publish: publish
                    .map(|(h, c)| (self.settings.docker.host_ip.to_string(), h, c)),
            }),
            NetworkMode::None => Err(DeployError::Input(
                "docker.network_mode is none: a deployment could not be reached; use host or bridge"
                    .into(),
            )),
        }
    }
}

/// Regular files under `root` (relative paths), and whether it holds anything else.
fn files(root: &Path) -> Result<(BTreeMap<String, PathBuf>, Vec<String>), DeployError> {
    let mut out = BTreeMap::new();
    let mut odd = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(internal)?.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map_err(internal)?
                .to_string_lossy()
                .into_owned();
            let m = std::fs::symlink_metadata(&p).map_err(internal)?;
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                out.insert(rel, p);
            } else {
                odd.push(rel);
            }
        }
    }
    Ok((out, odd))
}

fn dockerfile(base: &str, spec: &AppSpec) -> String {
    let cmd = serde_json::to_string(&spec.command).unwrap_or_default();
    format!(
        "FROM {base}\nCOPY app/ /app/\nWORKDIR /app\nENV PYTHONDONTWRITEBYTECODE=1 HOME=/tmp LANG=C.UTF-8\nCMD {cmd}\n"
    )
}

/// Builds (or reuses, when the content is unchanged) the copy image of the iteration in `dir`.
async fn copy_image(
    ctx: &Ctx<'_>,
    id: IterationId,
    dir: &Path,
    spec: &AppSpec,
    notes: &mut Vec<String>,
) -> Result<String, DeployError> {
    let tag = format!("coval-{}:{id}", ctx.project());
    let df = dockerfile(&spec.image, spec);
    let mut tar = tarball::Tar::new();
    tar.add_file("Dockerfile", 0o644, df.as_bytes())
        .map_err(DeployError::Input)?;
    let skipped = tar.add_tree(dir, "app").map_err(DeployError::Input)?;
    if !skipped.is_empty() {
        notes.push(format!(
            "left out of the image (not regular files): {}",
            skipped.join(", ")
        ));
    }
    let context = tar.finish();
    let hash = format!("{:x}", Sha256::digest(&context));
    if let Some(labels) = ctx.engine.image_labels(&tag).await?
        && labels.get(engine::CONTENT) == Some(&hash)
    {
        return Ok(tag);
    }
    let labels = HashMap::from([
        (engine::LABEL.to_owned(), ctx.project()),
        (engine::CONTENT.to_owned(), hash),
    ]);
    ctx.engine.build(&tag, context, &labels).await?;
    Ok(tag)
}

/// The image and mounts of one deployment, and the strategy actually used.
struct Plan {
    image: String,
    mounts: Vec<(String, String, bool)>,
    strategy: VolumeStrategy,
}

async fn plan(
    ctx: &Ctx<'_>,
    id: IterationId,
    dir: &Path,
    spec: &AppSpec,
    strategy: VolumeStrategy,
    notes: &mut Vec<String>,
) -> Result<Plan, DeployError> {
    let copy = |image: String| Plan {
        image,
        mounts: vec![],
        strategy: VolumeStrategy::Copy,
    };
    match strategy {
        VolumeStrategy::Copy => Ok(copy(copy_image(ctx, id, dir, spec, notes).await?)),
        VolumeStrategy::Symlink => {
            let abs = dir.canonicalize().map_err(internal)?;
            Ok(Plan {
                image: spec.image.clone(),
                mounts: vec![(abs.display().to_string(), "/app".into(), true)],
                strategy: VolumeStrategy::Symlink,
            })
        }
        VolumeStrategy::Overlay => {
            let parent = ctx
                .store
                .iterations()
                .map_err(internal)?
                .into_iter()
                .find(|i| i.id == id)
                .and_then(|i| i.parent);
            let fallback = |why: String, notes: &mut Vec<String>| {
                notes.push(format!("overlay: {why}; deployed as copy"));
            };
            let Some(parent) = parent else {
                fallback(format!("{id} has no parent"), notes);
                return Ok(copy(copy_image(ctx, id, dir, spec, notes).await?));
            };
            let pdir = ctx.workspace.iteration_dir(parent);
            let pspec = match app::detect(&pdir, &ctx.settings.deploy) {
                Ok(s) if s.framework == spec.framework => s,
                _ => {
                    fallback(
                        format!("the parent {parent} is not the same kind of app"),
                        notes,
                    );
                    return Ok(copy(copy_image(ctx, id, dir, spec, notes).await?));
                }
            };
            let (mine, odd) = files(dir)?;
            let (theirs, _) = files(&pdir)?;
            let deleted: Vec<&String> = theirs.keys().filter(|k| !mine.contains_key(*k)).collect();
            if !odd.is_empty() || !deleted.is_empty() {
                fallback(
                    if odd.is_empty() {
                        format!("files deleted since {parent} cannot be masked by mounts")
                    } else {
                        "the iteration holds symlinks or special files".into()
                    },
                    notes,
                );
                return Ok(copy(copy_image(ctx, id, dir, spec, notes).await?));
            }
            let mut mounts = vec![];
            for (rel, path) in &mine {
                let same = theirs
                    .get(rel)
                    .is_some_and(|p| std::fs::read(p).ok() == std::fs::read(path).ok());
                if !same {
                    let abs = path.canonicalize().map_err(internal)?;
                    mounts.push((abs.display().to_string(), format!("/app/{rel}"), true));
                }
            }
            let image = copy_image(ctx, parent, &pdir, &pspec, notes).await?;
            notes.push(format!(
                "overlay: {} changed file(s) mounted over the image of {parent}",
                mounts.len()
            ));
            Ok(Plan {
                image,
                mounts,
                strategy: VolumeStrategy::Overlay,
            })
        }
    }
}

fn free_port(ip: &str) -> Result<u16, DeployError> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DeployError::Internal(format!("no free port on {ip}: {e}")))
}

/// Wait for the new version's health check; the reason when it never passes.
async fn wait_healthy(ctx: &Ctx<'_>, name: &str, probe_addr: Option<&str>) -> Result<(), String> {
    let d = &ctx.settings.deploy;
    let deadline = Instant::now() + Duration::from_secs(d.health_timeout_secs);
    let interval = Duration::from_millis(d.health_interval_ms);
    let mut last = String::from("no answer yet");
    loop {
        match ctx.engine.state(name).await {
            Ok(Some(st)) if !st.running => {
                return Err(format!(
                    "it exited (code {}{})",
                    st.exit_code.unwrap_or(-1),
                    if st.oom_killed { ", out of memory" } else { "" }
                ));
            }
            Ok(None) => return Err("its container disappeared".into()),
            Ok(Some(st)) if probe_addr.is_none() && st.health == "healthy" => return Ok(()),
            _ => {}
        }
        if let Some(addr) = probe_addr {
            match probe::get_status(addr, &d.health_path, Duration::from_secs(2)).await {
                Ok(200) => return Ok(()),
                Ok(code) => last = format!("{} answered {code}", d.health_path),
                Err(e) => last = e,
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no healthy answer within {} s (last: {last})",
                d.health_timeout_secs
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

/// The proxy for `port`: started if it is not running. Its directory (socket, state).
async fn ensure_proxy(ctx: &Ctx<'_>, port: u16, image: &str) -> Result<PathBuf, DeployError> {
    let dir = ctx.workspace.proxy_dir(port);
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let dir = dir.canonicalize().map_err(internal)?;
    if dir.join(proxy::SOCKET).as_os_str().len() > 100 {
        return Err(DeployError::Input(format!(
            "the workspace path is too long for the proxy's control socket ({}): use a shorter --workspace",
            dir.display()
        )));
    }
    let name = ctx.proxy_name(port);
    let t = Duration::from_secs(2);
    if let Some(st) = ctx.engine.state(&name).await? {
        if st.running && proxy::control(&dir, "ping", t).await.as_deref() == Ok("pong") {
            return Ok(dir);
        }
        ctx.engine.remove(&name).await?;
    }
    let ip = ctx.settings.docker.host_ip.to_string();
    let bridge = ctx.settings.docker.network_mode == NetworkMode::Bridge;
    if !bridge && std::net::TcpListener::bind((ip.as_str(), port)).is_err() {
        return Err(DeployError::Input(format!(
            "port {port} on {ip} is in use by another program: pick another with -p PORT"
        )));
    }
    let meta = std::fs::metadata(&dir).map_err(internal)?;
    let listen = if bridge {
        format!("0.0.0.0:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let exe = ctx.coval_exe.canonicalize().map_err(internal)?;
    let spec = ContainerSpec {
        name: name.clone(),
        image: image.to_owned(),
        cmd: vec![
            "/coval-proxy-bin/coval".into(),
            "proxy".into(),
            "--listen".into(),
            listen,
            "--dir".into(),
            "/coval-proxy".into(),
        ],
        env: vec!["RUST_LOG=info".into(), "NO_COLOR=1".into()],
        mounts: vec![
            (
                exe.display().to_string(),
                "/coval-proxy-bin/coval".into(),
                true,
            ),
            (dir.display().to_string(), "/coval-proxy".into(), false),
        ],
        net: ctx.net(Some((port, port)))?,
        user: format!("{}:{}", meta.uid(), meta.gid()),
        labels: HashMap::from([
            (engine::LABEL.to_owned(), ctx.project()),
            (engine::ROLE.to_owned(), "proxy".to_owned()),
        ]),
        healthcheck: None,
        memory_bytes: 128 << 20,
        nano_cpus: 1_000_000_000,
        pids: 64,
        workdir: "/".into(),
        restart: true,
    };
    let _ = std::fs::remove_file(dir.join(proxy::SOCKET));
    ctx.engine.create_and_start(&spec).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if proxy::control(&dir, "ping", t).await.as_deref() == Ok("pong") {
            return Ok(dir);
        }
        if Instant::now() > deadline {
            let logs = ctx.engine.logs_tail(&name, 20).await;
            let _ = ctx.engine.remove(&name).await;
            return Err(DeployError::Internal(format!(
                "the proxy {name} did not start:\n{logs}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deploy an iteration blue-green on the stable port.
pub async fn run(ctx: &Ctx<'_>, req: &RunRequest) -> Result<Deployed, DeployError> {
    let t0 = Instant::now();
    let id = match req.iteration {
        Some(i) => i,
        None => ctx
            .store
            .iterations()
            .map_err(internal)?
            .into_iter()
            .map(|i| i.id)
            .max()
            .ok_or_else(|| {
                DeployError::Input(
                    "the workspace has no iteration to run: `coval generate` or `coval repair` first"
                        .into(),
                )
            })?,
    };
    let dir = ctx.workspace.iteration_dir(id);
    if !dir.is_dir() {
        return Err(DeployError::Input(format!(
            "iteration {id} is not stored in {}: see `coval status`",
            ctx.workspace.root().display()
        )));
    }
    let spec = app::detect(&dir, &ctx.settings.deploy)?;
    let port = req.port.unwrap_or(ctx.settings.docker.base_port);
    let strategy = req.strategy.unwrap_or(ctx.settings.volumes.strategy);
    ctx.engine.require_image(&spec.image).await?;
    let _ = ctx.net(None)?;
    let mut notes = vec![];
    if let Ok(Some(g)) = ctx.store.generation(id)
        && g.tests_passed == Some(false)
    {
        notes.push(format!(
            "{id}'s own tests failed when it was generated ({})",
            g.test_summary
        ));
    }
    let plan = plan(ctx, id, &dir, &spec, strategy, &mut notes).await?;

    let project = ctx.project();
    let mut name = format!("coval-{project}-{id}");
    let mut n = 2;
    while ctx.engine.state(&name).await?.is_some() {
        name = format!("coval-{project}-{id}-r{n}");
        n += 1;
    }
    let ip = ctx.settings.docker.host_ip.to_string();
    let bridge = ctx.settings.docker.network_mode == NetworkMode::Bridge;
    let (listen_ip, app_port, backend) = if bridge {
        (
            "0.0.0.0".to_owned(),
            BRIDGE_APP_PORT,
            format!("{name}:{BRIDGE_APP_PORT}"),
        )
    } else {
        let p = free_port(&ip)?;
        (ip.clone(), p, format!("{ip}:{p}"))
    };
    let d = &ctx.settings.deploy;
    let container = ContainerSpec {
        name: name.clone(),
        image: plan.image.clone(),
        cmd: spec.command.clone(),
        env: vec![
            format!("HOST={listen_ip}"),
            format!("PORT={app_port}"),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "HOME=/tmp".into(),
            "LANG=C.UTF-8".into(),
            "PYTHONDONTWRITEBYTECODE=1".into(),
            "PYTHONUNBUFFERED=1".into(),
            "NODE_ENV=production".into(),
        ],
        mounts: plan.mounts.clone(),
        net: ctx.net(None)?,
        user: "65534:65534".into(),
        labels: HashMap::from([
            (engine::LABEL.to_owned(), project.clone()),
            (engine::ROLE.to_owned(), "app".to_owned()),
            ("dev.coval.iteration".to_owned(), id.to_string()),
        ]),
        healthcheck: Some(spec.healthcheck.clone()),
        memory_bytes: i64::try_from(d.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX),
        nano_cpus: (d.cpus * 1e9) as i64,
        pids: i64::from(d.pids),
        workdir: "/app".into(),
        restart: false,
    };
    let old: Vec<DeploymentRecord> = ctx
        .store
        .deployments()
        .map_err(internal)?
        .into_iter()
        .filter(|r| r.stable_port == port)
        .collect();
    let serving = old
        .iter()
        .map(|r| format!("{} keeps serving on port {port}", r.iteration))
        .next()
        .unwrap_or_else(|| format!("nothing serves on port {port}"));

    ctx.engine.create_and_start(&container).await?;
    let probe_addr = (!bridge).then(|| backend.clone());
    if let Err(why) = wait_healthy(ctx, &name, probe_addr.as_deref()).await {
        let logs = ctx.engine.logs_tail(&name, 15).await;
        ctx.engine.remove(&name).await?;
        return Err(DeployError::Unhealthy(format!(
            "rolled back: {id} never became healthy: {why}; its container was removed and {serving}\n--- last output of {name} ---\n{}",
            logs.trim_end()
        )));
    }
    let seconds_to_healthy = t0.elapsed().as_secs_f64();
    ctx.engine.keep_running(&name).await?;
    let record = DeploymentRecord {
        container: name.clone(),
        project: project.clone(),
        iteration: id,
        image: plan.image.clone(),
        strategy: strategy_name(plan.strategy).into(),
        network: if bridge { "bridge" } else { "host" }.into(),
        backend: backend.clone(),
        stable_port: port,
        proxy: ctx.proxy_name(port),
        started_ms: vocab::now_ms(),
    };
    ctx.store.put_deployment(&record).map_err(internal)?;
    let pdir = match ensure_proxy(ctx, port, &spec.image).await {
        Ok(p) => p,
        Err(e) => {
            let _ = ctx.engine.remove(&name).await;
            let _ = ctx.store.remove_deployment(&name);
            return Err(e);
        }
    };
    let t = Duration::from_secs(5);
    let answer = proxy::control(&pdir, &format!("set {backend}"), t)
        .await
        .map_err(DeployError::Internal)?;
    if answer != "ok" {
        return Err(DeployError::Internal(format!(
            "the proxy refused the switch: {answer}"
        )));
    }
    let seconds_to_serving = t0.elapsed().as_secs_f64();
    let mut replaced = vec![];
    for o in &old {
        if o.container == name {
            continue;
        }
        let drain = proxy::control(
            &pdir,
            &format!("drain {} {}", o.backend, d.drain_secs),
            Duration::from_secs(d.drain_secs + 5),
        )
        .await
        .unwrap_or_else(|e| e);
        if drain != "ok 0" {
            notes.push(format!(
                "{}: connections still open after {} s were closed ({drain})",
                o.iteration, d.drain_secs
            ));
        }
        ctx.engine.remove(&o.container).await?;
        ctx.store
            .remove_deployment(&o.container)
            .map_err(internal)?;
        replaced.push(o.iteration.to_string());
    }
    let _ = ctx.store.flush().await;
    Ok(Deployed {
        iteration: id.to_string(),
        container: name,
        image: plan.image,
        strategy: strategy_name(plan.strategy).into(),
        notes,
        stable_port: port,
        url: format!("http://{ip}:{port}"),
        backend,
        replaced,
        seconds_to_healthy,
        seconds_to_serving,
    })
}

/// Stop the deployments of `iteration` (all when `None`) and proxies left without one.
/// Returns the containers removed.
pub async fn stop(
    ctx: &Ctx<'_>,
    iteration: Option<IterationId>,
) -> Result<Vec<String>, DeployError> {
    let all = ctx.store.deployments().map_err(internal)?;
    let mut removed = vec![];
    let mut ports = vec![];
    for d in all
        .iter()
        .filter(|d| iteration.is_none_or(|i| d.iteration == i))
    {
        ctx.engine.remove(&d.container).await?;
        ctx.store
            .remove_deployment(&d.container)
            .map_err(internal)?;
        removed.push(d.container.clone());
        ports.push((d.stable_port, d.proxy.clone()));
    }
    let left = ctx.store.deployments().map_err(internal)?;
    for (port, proxy) in ports {
        if left.iter().all(|d| d.stable_port != port) && ctx.engine.state(&proxy).await?.is_some() {
            ctx.engine.remove(&proxy).await?;
            let _ = std::fs::remove_file(ctx.workspace.proxy_dir(port).join(proxy::STATE));
            removed.push(proxy);
        }
    }
    if iteration.is_none() {
        // Containers of this project the store does not know (a lost workspace record).
        for c in ctx.engine.containers_of(&ctx.project()).await? {
            if !removed.contains(&c) {
                ctx.engine.remove(&c).await?;
                removed.push(c);
            }
        }
    }
    let _ = ctx.store.flush().await;
    Ok(removed)
}

/// One deployment as `coval status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeploymentStatus {
    pub container: String,
    pub iteration: String,
    pub strategy: String,
    pub stable_port: u16,
    pub backend: String,
    /// running, exited, missing, unknown.
    pub state: String,
    /// Docker's health check: healthy, unhealthy, starting, none, unknown.
    pub health: String,
    /// The stable port answered the health path with 200 through the proxy.
    pub serving: bool,
}

/// The recorded deployments with their live state (`unknown` when Docker does not answer).
pub async fn status(settings: &Settings, store: &Store) -> Vec<DeploymentStatus> {
    let Ok(records) = store.deployments() else {
        return vec![];
    };
    if records.is_empty() {
        return vec![];
    }
    let engine = Engine::connect().await.ok();
    let mut out = vec![];
    for r in records {
        let (state, health) = match &engine {
            None => ("unknown".to_owned(), "unknown".to_owned()),
            Some(e) => match e.state(&r.container).await {
                Ok(Some(s)) => (
                    if s.running { "running" } else { "exited" }.to_owned(),
                    s.health,
                ),
                Ok(None) => ("missing".into(), "none".into()),
                Err(_) => ("unknown".into(), "unknown".into()),
            },
        };
        let addr = format!("{}:{}", settings.docker.host_ip, r.stable_port);
        let serving = matches!(
            probe::get_status(&addr, &settings.deploy.health_path, Duration::from_secs(2)).await,
            Ok(200)
        );
        out.push(DeploymentStatus {
            container: r.container,
            iteration: r.iteration.to_string(),
            strategy: r.strategy,
            stable_port: r.stable_port,
            backend: r.backend,
            state,
            health,
            serving,
        });
    }
    out
}
