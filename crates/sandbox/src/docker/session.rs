//! [`DockerSession`]: one long-lived container per repair; each candidate is one `exec` of
//! the wrapper (or a request to the session's warm test server), and the work area is wiped
//! after each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;

use super::container::{ContainerGuard, Staging};
use super::output::{FinishArgs, PumpEnd, finish, pump};
use super::trailer::Trailer;
use super::wrapper::{COLLECT_CAP, WRAPPER, trailer_budget, wrapper_args};
use super::{CLEANUP_TIMEOUT, HOST_GRACE, engine};
use crate::capture::Capture;
use crate::warm::{
    self, Candidate, Channel, Chunk, Staged, Transport, WarmClient, WarmFailure, WarmStats,
};
use crate::{RunResult, RunSpec, SandboxError, random_hex};

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

/// How a session's warm server would serve `argv`, if one may (node's only with `warm_node`).
fn servable(argv: &[String], warm_node: bool) -> Option<warm::Served<'_>> {
    warm::served(argv).filter(|s| warm_node || matches!(s, warm::Served::Pytest { .. }))
}

/// One repair's container; each [`DockerSession::run`] is one `exec`.
pub struct DockerSession {
    container: SessionContainer,
    warm: WarmClient,
    /// `node --test` candidates may be served too.
    warm_node: bool,
    template: RunSpec,
}

/// The session's container and its staging dir: the fresh path (the wrapper, by `exec`) and
/// the warm server's [`Transport`] (its own long-lived `exec`).
pub(super) struct SessionContainer {
    pub docker: Docker,
    /// The container's id (kept after the guard has gone, for the cleanup calls that follow).
    pub id: String,
    pub guard: Option<ContainerGuard>,
    pub staging: Staging,
    pub uid: u32,
    pub counter: u64,
    pub last_oom: u64,
    pub lost: Option<String>,
    /// The base tree staged for collected runs: its host path and staged name.
    pub base: Option<(PathBuf, String)>,
}

impl DockerSession {
    pub(super) fn new(
        container: SessionContainer,
        template: RunSpec,
        warm: bool,
        warm_node: bool,
    ) -> DockerSession {
        DockerSession {
            container,
            warm: WarmClient::new(warm),
            warm_node,
            template,
        }
    }

    /// The session's container id.
    pub fn container_id(&self) -> Option<&str> {
        self.container.guard.as_ref().map(|g| g.id.as_str())
    }

    /// How candidates were served by the warm test server.
    pub fn warm_stats(&self) -> &WarmStats {
        self.warm.stats()
    }

    /// Starts the warm server for the template's command, when it is one the server serves.
    pub(super) async fn prestart(&mut self) {
        let Some(served) = servable(&self.template.argv, self.warm_node) else {
            return;
        };
        if self.container_id().is_none() {
            return;
        }
        self.warm
            .prestart(&mut self.container, &served, &self.template)
            .await;
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
        let c = &mut self.container;
        if let Some(why) = &c.lost {
            return Err(SandboxError::SessionLost(why.clone()));
        }
        if c.guard.is_none() {
            return Err(SandboxError::SessionLost("closed".into()));
        }
        let mut spec = self.template.clone();
        spec.argv = argv.to_vec();
        spec.timeout = timeout;
        spec.dir = dir.to_path_buf();
        spec.validate()?;
        let started = Instant::now();
        c.counter += 1;
        let cid = format!("c{}", c.counter);
        c.staging.add(&cid, dir).await?;
        let mut served = None;
        if self.warm.usable()
            && let Some(how) = servable(&spec.argv, self.warm_node)
            && node_servable(dir, &how)
        {
            let candidate = Candidate {
                id: &cid,
                served: &how,
                spec: &spec,
                changed,
                started,
            };
            served = self.warm.serve(c, candidate).await;
        }
        let result = match served {
            Some(r) => Ok(r),
            None => {
                // The per-candidate wrapper kills every process of the candidates' user, the
                // server included: stop it first, so the session knows it is gone.
                if self.warm.running() {
                    self.warm.stop(c).await;
                }
                match &c.lost {
                    Some(why) => Err(SandboxError::SessionLost(why.clone())),
                    None => c.run_exec(&cid, &spec, started).await,
                }
            }
        };
        c.staging.remove(&cid).await;
        if let Err(SandboxError::Docker { reason, .. }) = &result
            && (reason.contains("is not running") || reason.contains("No such container"))
        {
            c.lost = Some(format!("the container stopped: {reason}"));
        }
        result
    }

    /// Removes the container.
    pub async fn close(mut self) -> Result<(), SandboxError> {
        match self.container.guard.take() {
            Some(g) => g.remove().await,
            None => Ok(()),
        }
    }
}

impl Transport for SessionContainer {
    const COLLECT_CAP: usize = COLLECT_CAP;

    async fn start(
        &mut self,
        served: &warm::Served<'_>,
        spec: &RunSpec,
    ) -> Result<Channel, WarmFailure> {
        self.start_server(served, spec).await
    }

    /// Closes the server's input, then kills everything the candidates' user runs and wipes
    /// the work area; when even that fails, the session is lost.
    async fn stop(&mut self, channel: Option<Channel>) {
        if let Some(channel) = channel {
            channel.close().await;
        }
        match self.clean().await {
            Ok(n) => self.last_oom = n,
            Err(e) => {
                self.lost = Some(format!("cannot stop the warm test server: {e}"));
                if let Some(g) = self.guard.take() {
                    let _ = g.remove().await;
                }
            }
        }
    }

    /// The candidate is staged under `/cands` already (the fresh path needs it too); a base
    /// is staged once per base.
    async fn stage(
        &mut self,
        id: &str,
        _spec: &RunSpec,
        changed: Option<warm::Changed<'_>>,
    ) -> Result<Staged, WarmFailure> {
        let base = match changed {
            Some(c) => self.stage_base(c.base).await,
            None => None,
        };
        Ok(Staged {
            src: format!("/cands/{id}"),
            work: format!("/work/{id}"),
            base: base.map(|name| (format!("/cands/{name}"), "/work/base".to_owned())),
        })
    }

    /// The staged candidate goes with the fresh path's copy, after the run.
    async fn unstage(&mut self, _staged: Staged) {}

    fn kill_at(&self, spec: &RunSpec) -> usize {
        spec.limits
            .output_bytes
            .saturating_add(trailer_budget(spec))
    }

    fn last_oom(&self) -> u64 {
        self.last_oom
    }

    fn judge(&mut self, r: RunResult, oom_after: Option<u64>) -> RunResult {
        if let Some(n) = oom_after {
            self.last_oom = n;
        }
        r
    }
}

impl SessionContainer {
    /// One candidate as a fresh process: the wrapper, by one `exec`.
    async fn run_exec(
        &mut self,
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
        self.exec_candidate(spec, cmd, &mark, started).await
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

    /// Starts the warm server as the candidates' user with exactly the session's environment,
    /// and waits until it is ready (pytest imported, or node's runner loaded and the server
    /// out of the candidates' reach).
    async fn start_server(
        &self,
        served: &warm::Served<'_>,
        spec: &RunSpec,
    ) -> Result<Channel, WarmFailure> {
        let id = self.id.as_str();
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

    async fn exec_candidate(
        &mut self,
        spec: &RunSpec,
        cmd: Vec<String>,
        mark: &str,
        started: Instant,
    ) -> Result<RunResult, SandboxError> {
        let id = self.id.clone();
        let user = format!("{0}:{0}", self.uid);
        let exec = self
            .docker
            .create_exec(
                &id,
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
            match self.clean().await {
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
    async fn clean(&self) -> Result<u64, SandboxError> {
        let id = self.id.as_str();
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
}

impl Drop for SessionContainer {
    fn drop(&mut self) {
        // The guard's own Drop removes the container; this only makes the order explicit:
        // container first, then the staging dir it mounts.
        self.guard.take();
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
