//! The Docker sandbox, through bollard: network none, read-only root, size-capped tmpfs work
//! area, all capabilities dropped, no-new-privileges, default seccomp, a non-root user of its
//! own, pids/memory(+swap)/CPU limits, nofile/nproc ulimits, an init process, an environment of
//! exactly `RunSpec::env` (`env -i`), a wall-clock timeout, capped output, and removal on every
//! path (a guard removes the container even on panic or cancellation).
//!
//! The project reaches the container as a read-only bind mount of a host staging dir at
//! `/cands`; a small shell wrapper copies one candidate into `/work/<id>`, runs the command
//! under `timeout -s KILL`, kills every process the candidate left, reports the exit status,
//! the cgroup's OOM-kill count and the collected files after a random marker on stderr, and
//! wipes `/work`, `/tmp` and `/dev/shm`. A [`DockerSession`] runs that wrapper by `exec` in one
//! long-lived container, so a candidate costs a process, not a container start; a
//! `python3 -m pytest` candidate costs only a fork of the session's warm test server (one more
//! long-lived `exec`, see `super::warm`), which falls back to the wrapper when it fails.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::{Stream, StreamExt};

use super::capture::{Capture, Flow};
use super::warm::{self, Channel, Chunk, WarmFailure, WarmState, WarmStats};
use super::{RunResult, RunSpec, Sandbox, SandboxError, Session, ephemeral_uid, random_hex};
use vocab::tree::{Perms, copy_tree};

/// Label on every sandbox container; its value is the owning [`DockerSandbox`]'s instance id.
pub const LABEL: &str = "dev.coval.sandbox";
/// `run` (one container per run) or `session`.
pub const ROLE_LABEL: &str = "dev.coval.role";

/// Host-side slack beyond the run's timeout (copying in, killing, reporting) before the
/// container itself is killed.
const HOST_GRACE: Duration = Duration::from_secs(15);
/// Cap on each collected file (e.g. a JUnit report).
const COLLECT_CAP: usize = 4 << 20;
/// Deadline for engine calls made while cleaning up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether a `node --test` candidate in `dir` runs as the server would run it: every test path
/// it names exists (node's runner would exit otherwise) and the project brings no `node` of its
/// own. Always true for other commands.
fn node_servable(dir: &Path, served: &warm::Served<'_>) -> bool {
    let warm::Served::NodeTest { paths, shell } = served else {
        return true;
    };
    let inside = |p: &str| {
        Path::new(p).components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    };
    paths
        .iter()
        .all(|p| inside(p) && std::fs::symlink_metadata(dir.join(p)).is_ok())
        && !(*shell && std::fs::symlink_metadata(dir.join("node_modules/.bin/node")).is_ok())
}

/// Runs in the container as the candidate's user: `sh -c WRAPPER coval-sandbox MODE ...`.
/// `run ID TIMEOUT MARK FILECAP NFILES FILES... ENV... ARGV...` or `clean`.
const WRAPPER: &str = r#"
mode=$1
shift
oomc() {
  for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do
    if [ -r "$f" ]; then sed -n 's/^oom_kill //p' "$f"; return; fi
  done
  echo 0
}
reap() {
  i=0
  while [ "$i" -lt 300 ]; do
    kill -9 -1 2>/dev/null
    alive=
    for p in /proc/[0-9]*; do
      case "${p#/proc/}" in "$$" | 1) continue ;; esac
      [ -O "$p" ] || continue
      s=
      read -r s 2>/dev/null <"$p/stat" || continue
      case "${s##*) }" in Z*) continue ;; esac
      alive=1
      break
    done
    [ -z "$alive" ] && return 0
    i=$((i + 1))
    sleep 0.01
  done
}
wipe() {
  find /work /tmp /dev/shm -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null
}
if [ "$mode" = clean ]; then
  cd /
  reap
  wipe
  echo "oom $(oomc)"
  exit 0
fi
id=$1 t=$2 mark=$3 fcap=$4 nc=$5
shift 5
files=
while [ "$nc" -gt 0 ]; do
  files="$files$1
"
  shift
  nc=$((nc - 1))
done
before=$(oomc)
wipe
if mkdir "/work/$id" 2>/dev/null && cp -a "/cands/$id/." "/work/$id/" && cd "/work/$id"; then
  timeout -s KILL "$t" env -i "$@"
  rc=$?
else
  echo "coval-sandbox: cannot copy the project into the work area (larger than the tmpfs?)" >&2
  rc=125
fi
cd /
reap
after=$(oomc)
printf '\n%s\nrc %s\noom %s %s\n' "$mark" "$rc" "${before:-0}" "${after:-0}" >&2
printf '%s' "$files" | while IFS= read -r f; do
  p="/work/$id/$f"
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    n=$(wc -c <"$p")
    [ "$n" -gt "$fcap" ] && n=$fcap
    printf 'file %s %s\n' "$n" "$f" >&2
    head -c "$n" "$p" >&2
    printf '\n' >&2
  fi
done
wipe
exit "$rc"
"#;

fn engine(op: &'static str) -> impl Fn(bollard::errors::Error) -> SandboxError {
    move |e| SandboxError::Docker {
        op,
        reason: e.to_string(),
    }
}

/// Containers through the local Docker engine (`DOCKER_HOST`, else the default socket).
#[derive(Clone)]
pub struct DockerSandbox {
    docker: Docker,
    runtime: Option<String>,
    instance: String,
    warm: bool,
    warm_node: bool,
}

impl std::fmt::Debug for DockerSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerSandbox")
            .field("runtime", &self.runtime)
            .field("instance", &self.instance)
            .field("warm", &self.warm)
            .field("warm_node", &self.warm_node)
            .finish()
    }
}

async fn connect_engine() -> Result<Docker, SandboxError> {
    let d = Docker::connect_with_defaults().map_err(|e| SandboxError::Unreachable {
        reason: e.to_string(),
    })?;
    // The engine may be older than bollard's default API version (Debian's 20.10 is 1.41).
    let d = tokio::time::timeout(Duration::from_secs(5), d.negotiate_version())
        .await
        .map_err(|_| SandboxError::Unreachable {
            reason: "no answer within 5 s".into(),
        })?
        .map_err(|e| SandboxError::Unreachable {
            reason: e.to_string(),
        })?;
    d.ping().await.map_err(|e| SandboxError::Unreachable {
        reason: e.to_string(),
    })?;
    Ok(d)
}

impl DockerSandbox {
    /// Connects and negotiates the API version; `runtime` is an OCI runtime name such as
    /// `runsc` (empty: the engine's default).
    pub async fn connect(runtime: &str) -> Result<DockerSandbox, SandboxError> {
        let docker = connect_engine().await?;
        Ok(DockerSandbox {
            docker,
            runtime: (!runtime.trim().is_empty()).then(|| runtime.trim().to_owned()),
            instance: random_hex(),
            warm: true,
            warm_node: true,
        })
    }

    /// Whether sessions serve `python3 -m pytest` candidates from a warm test server (on by
    /// default; `sandbox.warm_server`). Off: one fresh process per candidate.
    pub fn with_warm_server(mut self, on: bool) -> DockerSandbox {
        self.warm = on;
        self
    }

    /// Whether sessions (with the warm server on) also serve `node --test` candidates from a
    /// warm test runner (on by default; `sandbox.warm_node`).
    pub fn with_warm_node(mut self, on: bool) -> DockerSandbox {
        self.warm_node = on;
        self
    }

    /// The value of [`LABEL`] on this sandbox's containers.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub async fn image_exists(&self, image: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(engine("inspect image")(e)),
        }
    }

    async fn require_image(&self, image: &str) -> Result<(), SandboxError> {
        if self.image_exists(image).await? {
            return Ok(());
        }
        let lang = image
            .strip_prefix("coval/")
            .and_then(|r| r.split(':').next())
            .unwrap_or("all")
            .to_owned();
        Err(SandboxError::ImageMissing {
            image: image.to_owned(),
            lang,
        })
    }

    /// Ids of this sandbox's containers that still exist (running or not).
    pub async fn containers(&self) -> Result<Vec<String>, SandboxError> {
        list_labelled(&self.docker, Some(&self.instance)).await
    }

    /// One run in a fresh container, removed afterwards.
    pub async fn run(&self, spec: &RunSpec) -> Result<RunResult, SandboxError> {
        spec.validate()?;
        self.require_image(&spec.image).await?;
        let started = Instant::now();
        let staging = Staging::new()?;
        staging.add("c0", &spec.dir).await?;
        let uid = ephemeral_uid();
        let mark = random_hex();
        let mut cmd = vec![
            "sh".to_owned(),
            "-c".into(),
            WRAPPER.into(),
            "coval-sandbox".into(),
        ];
        cmd.extend(wrapper_args(
            "c0",
            spec.timeout,
            &mark,
            &spec.collect,
            &spec.env,
            &spec.argv,
        ));
        let body = self.container_body(spec, &staging.path, uid, "run", cmd);
        let guard = self.create(body).await?;
        let result = self.run_in(&guard.id, spec, &mark, started).await;
        let removed = guard.remove().await;
        drop(staging);
        let result = result?;
        removed?;
        Ok(result)
    }

    async fn run_in(
        &self,
        id: &str,
        spec: &RunSpec,
        mark: &str,
        started: Instant,
    ) -> Result<RunResult, SandboxError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(true)
            .build();
        let attached = self
            .docker
            .attach_container(id, Some(opts))
            .await
            .map_err(engine("attach"))?;
        let mut output = attached.output;
        drop(attached.input);
        self.docker
            .start_container(id, None)
            .await
            .map_err(engine("start container"))?;
        let mut cap = Capture::new(spec.limits.output_bytes, trailer_budget(spec));
        let deadline = tokio::time::Instant::now() + spec.timeout + HOST_GRACE;
        let end = pump(&mut output, &mut cap, deadline).await;
        // Close our end first: the engine's output copier may be blocked writing to it, and a
        // kill waits for that copier.
        drop(output);
        if end != PumpEnd::Eof {
            let _ = self
                .docker
                .kill_container(
                    id,
                    Some(
                        KillContainerOptionsBuilder::default()
                            .signal("KILL")
                            .build(),
                    ),
                )
                .await;
        }
        let code = wait_exit(&self.docker, id).await?;
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine("inspect container"))?;
        let engine_oom = inspect
            .state
            .as_ref()
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        let trailer = cap.split_trailer(mark).map(|t| Trailer::parse(&t));
        Ok(finish(FinishArgs {
            cap,
            trailer,
            fallback_code: code,
            engine_oom,
            oom_before: 0,
            end,
            spec_timeout: spec.timeout,
            output_cap: spec.limits.output_bytes,
            started,
        }))
    }

    /// Starts the container of a [`DockerSession`]: same hardening, `sleep infinity` under
    /// init, as a user the candidates cannot signal. When the template's command is
    /// `python3 -m pytest` and the warm server is on, the server is started now too.
    pub async fn open_session(&self, template: &RunSpec) -> Result<DockerSession, SandboxError> {
        template.validate()?;
        self.require_image(&template.image).await?;
        let staging = Staging::new()?;
        let uid = ephemeral_uid();
        let cmd = vec!["sleep".to_owned(), "infinity".into()];
        let mut body = self.container_body(template, &staging.path, uid + 1, "session", cmd);
        // The keep-alive runs as uid+1; candidates run as uid and can neither signal it nor
        // be mistaken for it by the wrapper's kill sweep.
        body.user = Some(format!("{}:{}", uid + 1, uid + 1));
        let guard = self.create(body).await?;
        if let Err(e) = self.docker.start_container(&guard.id, None).await {
            let _ = guard.remove().await;
            return Err(engine("start container")(e));
        }
        let mut session = DockerSession {
            docker: self.docker.clone(),
            guard: Some(guard),
            staging,
            uid,
            template: template.clone(),
            counter: 0,
            last_oom: 0,
            lost: None,
            warm: WarmState::new(self.warm),
            warm_node: self.warm_node,
            server: None,
            base: None,
        };
        session.prestart().await;
        Ok(session)
    }

    fn container_body(
        &self,
        spec: &RunSpec,
        staging: &Path,
        uid: u32,
        role: &str,
        cmd: Vec<String>,
    ) -> ContainerCreateBody {
        let lim = &spec.limits;
        let mem = i64::try_from(lim.memory_bytes).unwrap_or(i64::MAX);
        let tmpfs_opts = format!("rw,exec,nosuid,nodev,size={},mode=1777", lim.tmpfs_bytes);
        let tmp_size = (lim.tmpfs_bytes / 4).max(16 << 20);
        let tmpfs = HashMap::from([
            ("/work".to_owned(), tmpfs_opts),
            (
                "/tmp".to_owned(),
                format!("rw,exec,nosuid,nodev,size={tmp_size},mode=1777"),
            ),
        ]);
        let ulimit = |name: &str, v: u64| ResourcesUlimits {
            name: Some(name.to_owned()),
            soft: Some(i64::try_from(v).unwrap_or(i64::MAX)),
            hard: Some(i64::try_from(v).unwrap_or(i64::MAX)),
        };
        let host = HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            mounts: Some(vec![Mount {
                target: Some("/cands".into()),
                source: Some(staging.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            }]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            memory: Some(mem),
            memory_swap: Some(mem),
            nano_cpus: Some((lim.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(lim.pids)),
            shm_size: Some(i64::try_from(lim.tmpfs_bytes.min(64 << 20)).unwrap_or(64 << 20)),
            ulimits: Some(vec![
                ulimit("nofile", u64::from(lim.nofile)),
                ulimit("nproc", u64::from(lim.pids)),
                ulimit("core", 0),
            ]),
            init: Some(true),
            runtime: self.runtime.clone(),
            ipc_mode: Some("private".into()),
            auto_remove: Some(false),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(cmd),
            user: Some(format!("{uid}:{uid}")),
            env: Some(vec![]),
            working_dir: Some("/".into()),
            hostname: Some("sandbox".into()),
            network_disabled: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            open_stdin: Some(false),
            labels: Some(HashMap::from([
                (LABEL.to_owned(), self.instance.clone()),
                (ROLE_LABEL.to_owned(), role.to_owned()),
            ])),
            host_config: Some(host),
            ..Default::default()
        }
    }

    async fn create(&self, body: ContainerCreateBody) -> Result<ContainerGuard, SandboxError> {
        let name = format!("coval-sandbox-{}", &random_hex()[..16]);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(engine("create container"))?;
        Ok(ContainerGuard {
            docker: self.docker.clone(),
            id: created.id,
            armed: true,
        })
    }
}

impl Sandbox for DockerSandbox {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn notice(&self) -> Option<String> {
        None
    }

    async fn run(&self, spec: &RunSpec) -> Result<RunResult, SandboxError> {
        DockerSandbox::run(self, spec).await
    }

    async fn open_session(&self, template: &RunSpec) -> Result<Session, SandboxError> {
        Ok(Session::Docker(Box::new(
            DockerSandbox::open_session(self, template).await?,
        )))
    }
}

/// Ids of the containers labelled [`LABEL`] (with `instance` as value, when given).
pub async fn list_labelled(
    docker: &Docker,
    instance: Option<&str>,
) -> Result<Vec<String>, SandboxError> {
    let filter = match instance {
        Some(i) => format!("{LABEL}={i}"),
        None => LABEL.to_owned(),
    };
    let filters = HashMap::from([("label".to_owned(), vec![filter])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(engine("list containers"))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// One repair's container; each [`DockerSession::run`] is one `exec`.
pub struct DockerSession {
    docker: Docker,
    guard: Option<ContainerGuard>,
    staging: Staging,
    uid: u32,
    template: RunSpec,
    counter: u64,
    last_oom: u64,
    lost: Option<String>,
    warm: WarmState,
    /// `node --test` candidates may be served too.
    warm_node: bool,
    /// The warm test server's exec, while one runs.
    server: Option<WarmServer>,
    /// The base tree staged for collected runs: its host path and staged name.
    base: Option<(PathBuf, String)>,
}

struct WarmServer {
    /// What it serves ([`warm::Served::server`]).
    kind: String,
    channel: Channel,
}

impl DockerSession {
    /// The session's container id.
    pub fn container_id(&self) -> Option<&str> {
        self.guard.as_ref().map(|g| g.id.as_str())
    }

    /// How candidates were served by the warm test server.
    pub fn warm_stats(&self) -> &WarmStats {
        &self.warm.stats
    }

    /// How a warm server would serve `argv`, if one of this session's may.
    fn served<'a>(&self, argv: &'a [String]) -> Option<warm::Served<'a>> {
        warm::served(argv).filter(|s| self.warm_node || matches!(s, warm::Served::Pytest { .. }))
    }

    /// Starts the warm server for the template's command, when it is one the server serves.
    /// A server that does not start is logged; candidates then try again or run fresh.
    async fn prestart(&mut self) {
        let Some(served) = self.served(&self.template.argv) else {
            return;
        };
        let Some(id) = self.container_id().map(str::to_owned) else {
            return;
        };
        if !self.warm.usable() || self.server.is_some() {
            return;
        }
        self.warm.stats.starts += 1;
        match self.start_server(&id, &served, &self.template).await {
            Ok(channel) => {
                self.server = Some(WarmServer {
                    kind: served.server().to_owned(),
                    channel,
                })
            }
            Err(why) => {
                tracing::warn!(reason = %why, "the warm test server did not start; candidates run as fresh processes until it does");
                self.stop_server(&id).await;
                self.warm.failed(&why, false);
            }
        }
    }

    /// Runs `argv` on a fresh copy of `dir` in its own subdirectory of the work area, with the
    /// template's env and limits; the copy, its temp files and its processes are gone before
    /// this returns. `python3 -m pytest ...` goes to the session's warm test server (started
    /// with the session, again after a failure) when it is on; if the server fails, that
    /// candidate runs as a fresh process.
    pub async fn run(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
    ) -> Result<RunResult, SandboxError> {
        self.run_changed(dir, argv, timeout, None).await
    }

    /// [`DockerSession::run`], told how `dir` differs from a base tree: the warm server may
    /// then serve it from a pytest session collected on that base (staged once per base).
    pub async fn run_changed(
        &mut self,
        dir: &Path,
        argv: &[String],
        timeout: Duration,
        changed: Option<warm::Changed<'_>>,
    ) -> Result<RunResult, SandboxError> {
        if let Some(why) = &self.lost {
            return Err(SandboxError::SessionLost(why.clone()));
        }
        let Some(id) = self.guard.as_ref().map(|g| g.id.clone()) else {
            return Err(SandboxError::SessionLost("closed".into()));
        };
        let mut spec = self.template.clone();
        spec.argv = argv.to_vec();
        spec.timeout = timeout;
        spec.dir = dir.to_path_buf();
        spec.validate()?;
        let started = Instant::now();
        self.counter += 1;
        let cid = format!("c{}", self.counter);
        self.staging.add(&cid, dir).await?;
        let mut served = None;
        if self.warm.usable()
            && let Some(how) = self.served(&spec.argv)
            && node_servable(dir, &how)
        {
            let base = match changed {
                Some(c) if matches!(how, warm::Served::Pytest { .. }) => {
                    self.stage_base(c.base).await.map(|name| (name, c.changed))
                }
                _ => None,
            };
            match self.run_warm(&id, &cid, &how, &spec, started, base).await {
                Ok(r) => served = Some(r),
                Err(why) => {
                    tracing::warn!(candidate = %cid, reason = %why, "warm test server failed; running this candidate as a fresh process");
                    self.stop_server(&id).await;
                    self.warm.failed(&why, true);
                }
            }
        }
        let result = match served {
            Some(r) => Ok(r),
            None => {
                // The per-candidate wrapper kills every process of the candidates' user, the
                // server included: stop it first, so the session knows it is gone.
                if self.server.is_some() {
                    self.stop_server(&id).await;
                }
                match &self.lost {
                    Some(why) => Err(SandboxError::SessionLost(why.clone())),
                    None => self.run_exec(&id, &cid, &spec, started).await,
                }
            }
        };
        self.staging.remove(&cid).await;
        if let Err(SandboxError::Docker { reason, .. }) = &result
            && (reason.contains("is not running") || reason.contains("No such container"))
        {
            self.lost = Some(format!("the container stopped: {reason}"));
        }
        result
    }

    /// One candidate as a fresh process: the wrapper, by one `exec`.
    async fn run_exec(
        &mut self,
        id: &str,
        cid: &str,
        spec: &RunSpec,
        started: Instant,
    ) -> Result<RunResult, SandboxError> {
        let mark = random_hex();
        let mut cmd = vec![
            "sh".to_owned(),
            "-c".into(),
            WRAPPER.into(),
            "coval-sandbox".into(),
        ];
        cmd.extend(wrapper_args(
            cid,
            spec.timeout,
            &mark,
            &spec.collect,
            &spec.env,
            &spec.argv,
        ));
        self.exec_candidate(id, spec, cmd, &mark, started).await
    }

    /// Stages `base` under `/cands` once (again when another base comes); its staged name.
    async fn stage_base(&mut self, base: &Path) -> Option<String> {
        if let Some((path, name)) = &self.base
            && path == base
        {
            return Some(name.clone());
        }
        if let Some((_, old)) = self.base.take() {
            self.staging.remove(&old).await;
        }
        self.counter += 1;
        let name = format!("base{}", self.counter);
        match self.staging.add(&name, base).await {
            Ok(()) => {
                self.base = Some((base.to_path_buf(), name.clone()));
                Some(name)
            }
            Err(e) => {
                tracing::debug!(error = %e, "the base was not staged; candidates run the normal way");
                None
            }
        }
    }

    /// One candidate through the warm server, started first if none runs.
    #[allow(clippy::too_many_arguments)]
    async fn run_warm(
        &mut self,
        id: &str,
        cid: &str,
        served: &warm::Served<'_>,
        spec: &RunSpec,
        started: Instant,
        base: Option<(String, &[String])>,
    ) -> Result<RunResult, WarmFailure> {
        let kind = served.server();
        if self.server.as_ref().is_some_and(|s| s.kind != kind) {
            return Err(WarmFailure(format!(
                "the session's server serves another command than `{kind}`"
            )));
        }
        if self.server.is_none() {
            self.warm.stats.starts += 1;
            let channel = self.start_server(id, served, spec).await?;
            self.server = Some(WarmServer {
                kind: kind.to_owned(),
                channel,
            });
        }
        let (args, shell, spawn) = match served {
            warm::Served::Pytest { args, .. } => (*args, false, false),
            warm::Served::NodeTest { paths, shell } => (paths.as_slice(), *shell, false),
            warm::Served::NodeSpawn { argv } => (*argv, false, true),
        };
        let Some(server) = self.server.as_mut() else {
            return Err(WarmFailure("no server".into()));
        };
        let src = format!("/cands/{cid}");
        let work = format!("/work/{cid}");
        let base_src = base.as_ref().map(|(name, _)| format!("/cands/{name}"));
        let req = warm::Request {
            id: cid,
            src: Some(&src),
            work: &work,
            args,
            timeout: spec.timeout.as_secs_f64(),
            cap: spec.limits.output_bytes,
            kill_at: spec
                .limits
                .output_bytes
                .saturating_add(trailer_budget(spec)),
            collect: &spec.collect,
            fcap: COLLECT_CAP,
            shell,
            spawn,
            fast: base_src
                .as_deref()
                .zip(base.as_ref())
                .map(|(b, (_, changed))| warm::FastRequest {
                    base: b,
                    work: "/work/base",
                    changed,
                }),
        };
        let deadline = tokio::time::Instant::now() + spec.timeout + HOST_GRACE;
        let staged_secs = started.elapsed().as_secs_f64();
        let (reply, blobs) = server.channel.call(&req, deadline).await?;
        tracing::debug!(
            candidate = %cid,
            staged_secs,
            server_secs = reply.seconds,
            fast = reply.fast.as_deref().unwrap_or("-"),
            marks = ?reply.marks,
            host_secs = started.elapsed().as_secs_f64(),
            "warm run"
        );
        let clean = reply.clean;
        let collected = reply
            .fast
            .as_deref()
            .is_some_and(|f| f.starts_with("served"));
        let oom_after = reply.oom.map(|(_, after)| after);
        let result = warm::to_result(
            reply,
            blobs,
            &warm::Expect {
                id: cid,
                cap: spec.limits.output_bytes,
                fcap: COLLECT_CAP,
                collect: &spec.collect,
                timeout: spec.timeout,
                last_oom: self.last_oom,
                started,
            },
        )?;
        if let Some(n) = oom_after {
            self.last_oom = n;
        }
        self.warm.stats.served += 1;
        self.warm.stats.collected += u64::from(collected);
        if !clean {
            // The verdict stands (the run was over); the next candidate gets a fresh start.
            let why = WarmFailure(
                "the server could not kill every process of a candidate or empty the work area"
                    .into(),
            );
            tracing::warn!(candidate = %cid, reason = %why, "restarting the warm test server");
            self.stop_server(id).await;
            self.warm.failed(&why, false);
        }
        Ok(result)
    }

    /// Starts the warm server as the candidates' user with exactly the session's environment,
    /// and waits until it is ready (pytest imported, or node's runner loaded and the server
    /// out of the candidates' reach).
    async fn start_server(
        &self,
        id: &str,
        served: &warm::Served<'_>,
        spec: &RunSpec,
    ) -> Result<Channel, WarmFailure> {
        let mut cmd = Vec::new();
        if !matches!(served, warm::Served::Pytest { .. }) {
            // Images without the protected node (not coval's) say so in the server's words.
            cmd.extend(
                [
                    "sh",
                    "-c",
                    r#"[ -x "$0" ] || { printf '{"kind":"hello","ready":false,"error":"the image has no %s (coval/node images do)"}\n' "$0"; exit 3; }; exec "$@""#,
                    warm::PROTECTED_NODE,
                ]
                .map(str::to_owned),
            );
        }
        cmd.extend(["env".to_owned(), "-i".into()]);
        cmd.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        match served {
            warm::Served::Pytest { interpreter, .. } => {
                cmd.extend([interpreter, "-c", warm::SERVER, "coval-warm"].map(str::to_owned))
            }
            warm::Served::NodeTest { .. } | warm::Served::NodeSpawn { .. } => cmd.extend(
                [
                    warm::PROTECTED_NODE,
                    "-e",
                    warm::NODE_SERVER,
                    "coval-warm-node",
                    "--node",
                    warm::IMAGE_NODE,
                ]
                .map(str::to_owned),
            ),
        }
        cmd.extend(["--sweep", "--oom", "--wipe", "/work", "/tmp", "/dev/shm"].map(str::to_owned));
        let broke = |op: &str, e: bollard::errors::Error| WarmFailure(format!("{op}: {e}"));
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    user: Some(format!("{0}:{0}", self.uid)),
                    working_dir: Some("/".to_owned()),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| broke("create exec", e))?;
        let started = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| broke("start exec", e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(WarmFailure("the engine detached the server's exec".into()));
        };
        let output = output.map(|item| match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                Chunk::Out(message)
            }
            Ok(LogOutput::StdErr { message }) => Chunk::Log(message),
            Ok(LogOutput::StdIn { .. }) => Chunk::Log(bytes::Bytes::new()),
            Err(e) => Chunk::Broken(e.to_string()),
        });
        let max_body = spec.limits.output_bytes + spec.collect.len() * COLLECT_CAP + 4096;
        let mut channel = Channel::new(input, Box::pin(output), max_body);
        let about = channel.hello().await?;
        tracing::debug!(%about, "warm test server ready");
        Ok(channel)
    }

    /// Stops the warm server (if one runs) and everything the candidates' user runs, and wipes
    /// the work area; when even that fails, the session is lost.
    async fn stop_server(&mut self, id: &str) {
        if let Some(s) = self.server.take() {
            s.channel.close().await;
        }
        match self.clean(id).await {
            Ok(n) => self.last_oom = n,
            Err(e) => {
                self.lost = Some(format!("cannot stop the warm test server: {e}"));
                if let Some(g) = self.guard.take() {
                    let _ = g.remove().await;
                }
            }
        }
    }

    async fn exec_candidate(
        &mut self,
        id: &str,
        spec: &RunSpec,
        cmd: Vec<String>,
        mark: &str,
        started: Instant,
    ) -> Result<RunResult, SandboxError> {
        let user = format!("{0}:{0}", self.uid);
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd),
                    user: Some(user),
                    working_dir: Some("/".to_owned()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(false),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(engine("create exec"))?;
        let started_exec = self
            .docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(engine("start exec"))?;
        let StartExecResults::Attached { mut output, input } = started_exec else {
            return Err(SandboxError::Docker {
                op: "start exec",
                reason: "the engine detached the exec".into(),
            });
        };
        drop(input);
        let mut cap = Capture::new(spec.limits.output_bytes, trailer_budget(spec));
        let deadline = tokio::time::Instant::now() + spec.timeout + HOST_GRACE;
        let end = pump(&mut output, &mut cap, deadline).await;
        drop(output);
        let mut oom_after_cleanup = None;
        if end != PumpEnd::Eof {
            // Stop the candidate from inside (its own user can kill all its processes); if
            // that fails too, the container goes and the session with it.
            match self.clean(id).await {
                Ok(n) => oom_after_cleanup = Some(n),
                Err(e) => {
                    self.lost = Some(format!("cannot stop a runaway candidate: {e}"));
                    if let Some(g) = self.guard.take() {
                        let _ = g.remove().await;
                    }
                }
            }
        }
        let code = exec_exit_code(&self.docker, &exec.id).await;
        let trailer = cap.split_trailer(mark).map(|t| Trailer::parse(&t));
        let oom_before = trailer
            .as_ref()
            .and_then(|t| t.oom.map(|(b, _)| b))
            .unwrap_or(self.last_oom);
        let engine_oom = oom_after_cleanup.is_some_and(|n| n > oom_before);
        if let Some(n) = oom_after_cleanup.or(trailer.as_ref().and_then(|t| t.oom.map(|o| o.1))) {
            self.last_oom = n;
        }
        Ok(finish(FinishArgs {
            cap,
            trailer,
            fallback_code: code,
            engine_oom,
            oom_before,
            end,
            spec_timeout: spec.timeout,
            output_cap: spec.limits.output_bytes,
            started,
        }))
    }

    /// Kills every candidate process and wipes the work area; returns the OOM-kill count.
    async fn clean(&self, id: &str) -> Result<u64, SandboxError> {
        let fut = async {
            let exec = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        cmd: Some(vec![
                            "sh".to_owned(),
                            "-c".into(),
                            WRAPPER.into(),
                            "coval-sandbox".into(),
                            "clean".into(),
                        ]),
                        user: Some(format!("{0}:{0}", self.uid)),
                        working_dir: Some("/".to_owned()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(engine("create exec"))?;
            let mut text = Vec::new();
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(engine("start exec"))?
            {
                while let Some(Ok(m)) = output.next().await {
                    if let LogOutput::StdOut { message } | LogOutput::Console { message } = m
                        && text.len() < 4096
                    {
                        text.extend_from_slice(&message);
                    }
                }
            }
            let text = String::from_utf8_lossy(&text);
            Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("oom "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0))
        };
        tokio::time::timeout(CLEANUP_TIMEOUT, fut)
            .await
            .map_err(|_| SandboxError::Docker {
                op: "clean up",
                reason: format!("no answer within {} s", CLEANUP_TIMEOUT.as_secs()),
            })?
    }

    /// Removes the container.
    pub async fn close(mut self) -> Result<(), SandboxError> {
        match self.guard.take() {
            Some(g) => g.remove().await,
            None => Ok(()),
        }
    }
}

/// Removes its container when dropped, unless [`ContainerGuard::remove`] did already.
struct ContainerGuard {
    docker: Docker,
    id: String,
    armed: bool,
}

impl ContainerGuard {
    async fn remove(mut self) -> Result<(), SandboxError> {
        let r = remove_container(&self.docker, &self.id).await;
        if r.is_ok() {
            self.armed = false;
        }
        r
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let fut = docker.remove_container(id, Some(opts));
    match tokio::time::timeout(CLEANUP_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(()),
        // 409: a removal is already in progress.
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        })) => Ok(()),
        Ok(Err(e)) => Err(engine("remove container")(e)),
        Err(_) => Err(SandboxError::Docker {
            op: "remove container",
            reason: format!("no answer within {} s", CLEANUP_TIMEOUT.as_secs()),
        }),
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A panic or a cancelled future got here. Removal is async; run it on a thread of its
        // own, with its own runtime and its own connection, so it works whatever state the
        // caller's runtime is in (even a current-thread runtime blocked right here).
        let id = std::mem::take(&mut self.id);
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(d) = connect_engine().await
                    && let Err(e) = remove_container(&d, &id).await {
                        tracing::warn!(container = %id, error = %e, "cannot remove a sandbox container");
                    }
            });
        });
        let _ = handle.join();
    }
}

impl Drop for DockerSession {
    fn drop(&mut self) {
        // The guard's own Drop removes the container; this only makes the order explicit:
        // container first, then the staging dir it mounts.
        self.guard.take();
    }
}

/// The host dir mounted read-only at `/cands`, one subdirectory per candidate.
struct Staging {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Staging {
    fn new() -> Result<Staging, SandboxError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("coval-sandbox-")
            .tempdir()
            .map_err(|e| SandboxError::io("cannot create a staging dir", e))?;
        // The container's unprivileged user must be able to enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| SandboxError::io("cannot open up the staging dir", e))?;
        let path = dir.path().to_path_buf();
        Ok(Staging { _dir: dir, path })
    }

    async fn add(&self, name: &str, from: &Path) -> Result<(), SandboxError> {
        let to = self.path.join(name);
        let from = from.to_path_buf();
        tokio::task::spawn_blocking(move || copy_tree(&from, &to, Perms::WorldReadable))
            .await
            .map_err(|e| SandboxError::io("staging task failed", std::io::Error::other(e)))?
            .map_err(|e| SandboxError::io("cannot stage the project for the sandbox", e))?;
        Ok(())
    }

    async fn remove(&self, name: &str) {
        let p = self.path.join(name);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(p)).await;
    }
}

fn wrapper_args(
    id: &str,
    timeout: Duration,
    mark: &str,
    collect: &[String],
    env: &[(String, String)],
    argv: &[String],
) -> Vec<String> {
    let mut a = vec![
        "run".to_owned(),
        id.to_owned(),
        format!("{:.3}", timeout.as_secs_f64()),
        mark.to_owned(),
        COLLECT_CAP.to_string(),
        collect.len().to_string(),
    ];
    a.extend(collect.iter().cloned());
    a.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    a.extend(argv.iter().cloned());
    a
}

fn trailer_budget(spec: &RunSpec) -> usize {
    4096 + spec.collect.len() * (COLLECT_CAP + 512)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    Eof,
    OverCap,
    Deadline,
    Broken,
}

async fn pump<S>(output: &mut S, cap: &mut Capture, deadline: tokio::time::Instant) -> PumpEnd
where
    S: Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    loop {
        tokio::select! {
            item = output.next() => match item {
                None => return PumpEnd::Eof,
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    if cap.push_stdout(&message) == Flow::OverCap {
                        return PumpEnd::OverCap;
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    if cap.push_stderr(&message) == Flow::OverCap {
                        return PumpEnd::OverCap;
                    }
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "sandbox output stream broke");
                    return PumpEnd::Broken;
                }
            },
            _ = tokio::time::sleep_until(deadline) => return PumpEnd::Deadline,
        }
    }
}

/// The container's exit code, once it has stopped.
async fn wait_exit(docker: &Docker, id: &str) -> Result<i64, SandboxError> {
    let opts = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut s = docker.wait_container(id, Some(opts));
    let first = tokio::time::timeout(CLEANUP_TIMEOUT, s.next()).await;
    match first {
        Ok(Some(Ok(r))) => Ok(r.status_code),
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(code),
        Ok(Some(Err(e))) => Err(engine("wait container")(e)),
        Ok(None) => Err(SandboxError::Docker {
            op: "wait container",
            reason: "the engine closed the wait stream".into(),
        }),
        Err(_) => Err(SandboxError::Docker {
            op: "wait container",
            reason: "the container did not stop after being killed".into(),
        }),
    }
}

/// An exec's exit code once it has finished (polls briefly: the stream can end first).
async fn exec_exit_code(docker: &Docker, exec_id: &str) -> i64 {
    for _ in 0..100 {
        match docker.inspect_exec(exec_id).await {
            Ok(i) if i.running != Some(true) => return i.exit_code.unwrap_or(-1),
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return -1,
        }
    }
    -1
}

/// What the wrapper reported after the candidate's output.
#[derive(Debug, Default)]
struct Trailer {
    rc: Option<i64>,
    oom: Option<(u64, u64)>,
    files: BTreeMap<String, String>,
}

impl Trailer {
    fn parse(b: &[u8]) -> Trailer {
        let mut t = Trailer::default();
        let mut rest = b;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
            rest = rest.get(nl + 1..).unwrap_or(&[]);
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("rc"), Some(n), None) => t.rc = n.trim().parse().ok(),
                (Some("oom"), Some(a), Some(b)) => {
                    t.oom = a.trim().parse().ok().zip(b.trim().parse().ok())
                }
                (Some("file"), Some(n), Some(name)) => {
                    let Ok(n) = n.parse::<usize>() else { break };
                    let n = n.min(rest.len());
                    t.files.insert(
                        name.to_owned(),
                        String::from_utf8_lossy(&rest[..n]).into_owned(),
                    );
                    rest = rest.get(n + 1..).unwrap_or(&[]);
                }
                _ => {}
            }
        }
        t
    }
}

struct FinishArgs {
    cap: Capture,
    trailer: Option<Trailer>,
    fallback_code: i64,
    engine_oom: bool,
    oom_before: u64,
    end: PumpEnd,
    spec_timeout: Duration,
    output_cap: usize,
    started: Instant,
}

fn finish(a: FinishArgs) -> RunResult {
    let duration = a.started.elapsed();
    let code = a
        .trailer
        .as_ref()
        .and_then(|t| t.rc)
        .unwrap_or(a.fallback_code);
    let (exit_code, signal) = split_status(code);
    let trailer_oom = a
        .trailer
        .as_ref()
        .and_then(|t| t.oom)
        .is_some_and(|(before, after)| after > before.max(a.oom_before));
    let oom_killed = a.engine_oom || trailer_oom;
    let timed_out = !oom_killed
        && (a.end == PumpEnd::Deadline
            || (signal == Some(9) && duration >= a.spec_timeout && a.end != PumpEnd::OverCap));
    let truncated = a.end == PumpEnd::OverCap || a.cap.truncated();
    let collected = a.trailer.map(|t| t.files).unwrap_or_default();
    let (stdout, stderr) = a.cap.into_strings();
    RunResult {
        exit_code,
        signal,
        timed_out,
        oom_killed,
        stdout,
        stderr,
        output_truncated: truncated,
        duration,
        timeout: a.spec_timeout,
        output_cap: a.output_cap,
        collected,
    }
}

/// A shell-style status: 129..=192 is death by signal `code - 128`.
fn split_status(code: i64) -> (Option<i32>, Option<i32>) {
    match i32::try_from(code) {
        Ok(c) if (129..=192).contains(&c) => (None, Some(c - 128)),
        Ok(c) => (Some(c), None),
        Err(_) => (Some(-1), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_parses_status_oom_and_files() {
        let t = Trailer::parse(b"rc 1\noom 0 2\nfile 5 r/junit.xml\n<a/>\n\nfile 99 x\nab");
        assert_eq!(t.rc, Some(1));
        assert_eq!(t.oom, Some((0, 2)));
        assert_eq!(t.files["r/junit.xml"], "<a/>\n");
        assert_eq!(t.files["x"], "ab");
        let t = Trailer::parse(b"garbage\nfile nope x\n");
        assert_eq!(t.rc, None);
    }

    #[test]
    fn statuses_split_into_code_or_signal() {
        assert_eq!(split_status(0), (Some(0), None));
        assert_eq!(split_status(137), (None, Some(9)));
        assert_eq!(split_status(125), (Some(125), None));
        assert_eq!(split_status(1 << 40), (Some(-1), None));
    }

    #[test]
    fn wrapper_args_keep_env_before_argv() {
        let a = wrapper_args(
            "c1",
            Duration::from_millis(1500),
            "M",
            &["r.xml".into()],
            &[("A".into(), "b c".into())],
            &["python3".into(), "-m".into()],
        );
        assert_eq!(
            a,
            [
                "run",
                "c1",
                "1.500",
                "M",
                &COLLECT_CAP.to_string(),
                "1",
                "r.xml",
                "A=b c",
                "python3",
                "-m"
            ]
        );
    }
}
