//! The host's client of a session's warm test server, written once for both backends: starting
//! the server, one request per candidate, the reply's checks, the failure counting and the
//! fallback to fresh runs. What differs per backend (how the server is started and stopped,
//! where a candidate is staged, how a verdict is judged) sits behind [`Transport`].

use std::time::{Duration, Instant};

use super::{
    Changed, Channel, Expect, FastRequest, Request, Served, WarmFailure, WarmState, WarmStats,
    to_result,
};
use crate::{RunResult, RunSpec};

/// Host-side slack beyond a candidate's timeout before the server counts as hung.
pub(crate) const GRACE: Duration = Duration::from_secs(15);

/// Where the server finds one staged candidate, as paths it sees.
pub(crate) struct Staged {
    /// The candidate's copy (read-only to the server).
    pub src: String,
    /// The candidate's own fresh work dir (made by the server's copy).
    pub work: String,
    /// The staged base and where the server's collector keeps its copy of it, when the
    /// candidate says how it differs from a base and the base could be staged.
    pub base: Option<(String, String)>,
}

/// A backend's side of its warm server: the process and its byte streams, the staging area,
/// and how a run is judged there.
pub(crate) trait Transport {
    /// Cap on each collected file, as the backend's fresh path caps it.
    const COLLECT_CAP: usize;

    /// Starts a server for `served` and waits for its greeting; the channel is over the
    /// server's stdin and stdout. `spec` is the candidate's (the template, for a prestart): its
    /// environment and limits are the template's; a backend may start from its own template.
    async fn start(&mut self, served: &Served<'_>, spec: &RunSpec) -> Result<Channel, WarmFailure>;

    /// Stops the server (its channel, if one was made) and whatever its candidates left.
    async fn stop(&mut self, channel: Option<Channel>);

    /// Makes candidate `id` (a copy of `spec.dir`, and the base of `changed` if given)
    /// reachable to the running server.
    async fn stage(
        &mut self,
        id: &str,
        spec: &RunSpec,
        changed: Option<Changed<'_>>,
    ) -> Result<Staged, WarmFailure>;

    /// Called once the server has answered for a staged candidate (or failed to).
    async fn unstage(&mut self, staged: Staged);

    /// Output past which the server kills a candidate (≥ the cap): the fresh path's slack.
    fn kill_at(&self, spec: &RunSpec) -> usize;

    /// The OOM-kill count after the previous candidate.
    fn last_oom(&self) -> u64;

    /// The backend's own reading of a served run, as its fresh path would judge it; `oom_after`
    /// is the count the server reported after the candidate.
    fn judge(&mut self, r: RunResult, oom_after: Option<u64>) -> RunResult;
}

/// The running server and what it serves ([`Served::server`]).
struct Running {
    kind: String,
    channel: Channel,
}

/// A session's warm server: at most one runs; after [`super::MAX_FAILURES`] failures, or one
/// that says it cannot run here, the session stops using it.
pub(crate) struct WarmClient {
    state: WarmState,
    server: Option<Running>,
}

/// One candidate for the server.
pub(crate) struct Candidate<'a> {
    pub id: &'a str,
    pub served: &'a Served<'a>,
    /// The template with this candidate's dir, command and timeout.
    pub spec: &'a RunSpec,
    pub changed: Option<Changed<'a>>,
    /// When the host began with this candidate (its staging included).
    pub started: Instant,
}

impl WarmClient {
    pub fn new(enabled: bool) -> WarmClient {
        WarmClient {
            state: WarmState::new(enabled),
            server: None,
        }
    }

    pub fn stats(&self) -> &WarmStats {
        &self.state.stats
    }

    /// The server may be used (or started) for the next candidate.
    pub fn usable(&self) -> bool {
        self.state.usable()
    }

    /// The server cannot run here at all.
    pub fn turn_off(&mut self, why: String) {
        self.state.turn_off(why);
    }

    pub fn running(&self) -> bool {
        self.server.is_some()
    }

    /// The running server's channel.
    pub fn channel(&self) -> Option<&Channel> {
        self.server.as_ref().map(|s| &s.channel)
    }

    /// Starts the server for the session's template command, when none runs yet. A server
    /// that does not start is logged; candidates then try again or run fresh.
    pub async fn prestart<T: Transport>(&mut self, t: &mut T, served: &Served<'_>, spec: &RunSpec) {
        if !self.usable() || self.server.is_some() {
            return;
        }
        self.state.stats.starts += 1;
        match t.start(served, spec).await {
            Ok(channel) => {
                self.server = Some(Running {
                    kind: served.server().to_owned(),
                    channel,
                })
            }
            Err(why) => {
                if super::first_telling(&why.0) {
                    tracing::warn!(reason = %why, "the warm test server did not start; candidates run as fresh processes until it does");
                } else {
                    tracing::debug!(reason = %why, "the warm test server did not start (said already)");
                }
                t.stop(None).await;
                self.state.failed(&why, false);
            }
        }
    }

    /// Stops the server, if one runs (the backend cleans up either way).
    pub async fn stop<T: Transport>(&mut self, t: &mut T) {
        t.stop(self.server.take().map(|s| s.channel)).await;
    }

    /// The candidate's verdict from the warm server (started first if none runs), or `None`
    /// when the server failed: it is then stopped, the failure counted, and the caller runs
    /// the candidate as a fresh process.
    pub async fn serve<T: Transport>(&mut self, t: &mut T, c: Candidate<'_>) -> Option<RunResult> {
        match self.run(t, &c).await {
            Ok(r) => Some(r),
            Err(why) => {
                tracing::warn!(candidate = %c.id, reason = %why, "warm test server failed; running this candidate as a fresh process");
                self.stop(t).await;
                self.state.failed(&why, true);
                None
            }
        }
    }

    async fn run<T: Transport>(
        &mut self,
        t: &mut T,
        c: &Candidate<'_>,
    ) -> Result<RunResult, WarmFailure> {
        let kind = c.served.server();
        if self.server.as_ref().is_some_and(|s| s.kind != kind) {
            return Err(WarmFailure(format!(
                "the session's server serves another command than `{kind}`"
            )));
        }
        if self.server.is_none() {
            self.state.stats.starts += 1;
            let channel = t.start(c.served, c.spec).await?;
            self.server = Some(Running {
                kind: kind.to_owned(),
                channel,
            });
        }
        let (args, cwd, shell, spawn) = match c.served {
            Served::Pytest { args, cwd, .. } => (*args, *cwd, false, false),
            Served::NodeTest { paths, shell } => (paths.as_slice(), "", *shell, false),
            Served::NodeSpawn { argv } => (*argv, "", false, true),
        };
        // Only pytest's collected sessions use a base, collected in the project's root.
        let changed = c
            .changed
            .filter(|_| matches!(c.served, Served::Pytest { cwd: "", .. }));
        let staged = t.stage(c.id, c.spec, changed).await?;
        let Some(server) = self.server.as_mut() else {
            return Err(WarmFailure("no server".into()));
        };
        let spec = c.spec;
        let req = Request {
            id: c.id,
            src: Some(&staged.src),
            work: &staged.work,
            args,
            cwd,
            timeout: spec.timeout.as_secs_f64(),
            cap: spec.limits.output_bytes,
            kill_at: t.kill_at(spec),
            collect: &spec.collect,
            fcap: T::COLLECT_CAP,
            shell,
            spawn,
            fast: staged
                .base
                .as_ref()
                .zip(changed)
                .map(|((base, work), ch)| FastRequest {
                    base,
                    work,
                    changed: ch.changed,
                }),
        };
        let deadline = tokio::time::Instant::now() + spec.timeout + GRACE;
        let staged_secs = c.started.elapsed().as_secs_f64();
        let reply = server.channel.call(&req, deadline).await;
        t.unstage(staged).await;
        let (reply, blobs) = reply?;
        tracing::debug!(
            candidate = %c.id,
            staged_secs,
            server_secs = reply.seconds,
            fast = reply.fast.as_deref().unwrap_or("-"),
            marks = ?reply.marks,
            host_secs = c.started.elapsed().as_secs_f64(),
            "warm run"
        );
        let clean = reply.clean;
        let collected = reply
            .fast
            .as_deref()
            .is_some_and(|f| f.starts_with("served"));
        let oom_after = reply.oom.map(|(_, after)| after);
        let result = to_result(
            reply,
            blobs,
            &Expect {
                id: c.id,
                cap: spec.limits.output_bytes,
                fcap: T::COLLECT_CAP,
                collect: &spec.collect,
                timeout: spec.timeout,
                last_oom: t.last_oom(),
                started: c.started,
            },
        )?;
        let result = t.judge(result, oom_after);
        self.state.stats.served += 1;
        self.state.stats.collected += u64::from(collected);
        if !clean {
            // The verdict stands (the run was over); the next candidate gets a fresh start.
            let why = WarmFailure(
                "the server could not kill every process of a candidate or empty the work area"
                    .into(),
            );
            tracing::warn!(candidate = %c.id, reason = %why, "restarting the warm test server");
            self.stop(t).await;
            self.state.failed(&why, false);
        }
        Ok(result)
    }
}
