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
//!
//! Where things are: `container` (the hardened container body, its removal guard, the
//! staging dir), `session` ([`DockerSession`]), `wrapper.sh` and `wrapper` (the shell wrapper
//! and its arguments), `trailer` (reading what the wrapper reports after its marker),
//! `output` (pumping output into a capture, and the capture into a [`RunResult`]).

mod container;
pub mod env;
mod output;
mod session;
mod trailer;
mod wrapper;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
};

use super::capture::Capture;
use super::{RunResult, RunSpec, Sandbox, SandboxError, Session, ephemeral_uid, random_hex};
use container::{Staging, wait_exit};
use output::{FinishArgs, PumpEnd, finish, pump};
use trailer::Trailer;
use wrapper::{WRAPPER, trailer_budget, wrapper_args};

pub use session::DockerSession;
use session::SessionContainer;

/// Label on every sandbox container; its value is the owning [`DockerSandbox`]'s instance id.
pub const LABEL: &str = "dev.coval.sandbox";
/// `run` (one container per run) or `session`.
pub const ROLE_LABEL: &str = "dev.coval.role";
/// The host staging dir the container mounts: a scratch dir its owning process holds
/// locked, so a container whose owner was killed is known by its unlocked (or gone) dir.
pub const STAGING_LABEL: &str = "dev.coval.staging";

/// Host-side slack beyond the run's timeout (copying in, killing, reporting) before the
/// container itself is killed.
const HOST_GRACE: Duration = Duration::from_secs(15);
/// Deadline for engine calls made while cleaning up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

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
        crate::sweep_stale_dirs();
        let docker = connect_engine().await?;
        reap_orphans(&docker).await;
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
        let container = SessionContainer {
            docker: self.docker.clone(),
            id: guard.id.clone(),
            guard: Some(guard),
            staging,
            uid,
            counter: 0,
            last_oom: 0,
            lost: None,
            base: None,
        };
        let mut session =
            DockerSession::new(container, template.clone(), self.warm, self.warm_node);
        session.prestart().await;
        Ok(session)
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

/// Removes, once per process, the sandbox containers of coval processes that were killed (a
/// session's container sleeps until removed): those whose staging dir no live process holds.
async fn reap_orphans(docker: &Docker) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let filters = HashMap::from([("label".to_owned(), vec![STAGING_LABEL.to_owned()])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = docker.list_containers(Some(opts)).await else {
        return;
    };
    for c in list {
        let staging = c.labels.as_ref().and_then(|l| l.get(STAGING_LABEL));
        if let (Some(id), Some(staging)) = (c.id, staging)
            && !vocab::scratch::owner_alive(std::path::Path::new(staging))
        {
            match container::remove_container(docker, &id).await {
                Ok(()) => {
                    tracing::debug!(container = %id, "removed the container of a killed coval")
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot remove the container of a killed coval")
                }
            }
        }
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
