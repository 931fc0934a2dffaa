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
use crate::warm::{self, Channel, Chunk, WarmFailure, WarmState, WarmStats};
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

/// One repair's container; each [`DockerSession::run`] is one `exec`.
pub struct DockerSession {
    pub(super) docker: Docker,
    pub(super) guard: Option<ContainerGuard>,
    pub(super) staging: Staging,
    pub(super) uid: u32,
    pub(super) template: RunSpec,
    pub(super) counter: u64,
    pub(super) last_oom: u64,
    pub(super) lost: Option<String>,
    pub(super) warm: WarmState,
    /// `node --test` candidates may be served too.
    pub(super) warm_node: bool,
    /// The warm test server's exec, while one runs.
    pub(super) server: Option<WarmServer>,
    /// The base tree staged for collected runs: its host path and staged name.
    pub(super) base: Option<(PathBuf, String)>,
}

pub(super) struct WarmServer {
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
    pub(super) async fn prestart(&mut self) {
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

impl Drop for DockerSession {
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
