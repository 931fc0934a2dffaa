//! The validation stage's handler: `FixProposed` in, `ValidationPassed` or `ValidationFailed`
//! out. Results go to `repairs/repair-<id>/validation/attempt-N.json`. The handler does the IO
//! (lanes, candidate runs, files); every decision is in [`crate::policy`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bus::runtime::{Handler, Input, Outcome};
use futures::StreamExt;
use patch::PatchLimits;
use proto::messages::{AttemptRecord, FixProposed, RunPaths, ValidationFailed, ValidationPassed};
use proto::{Message, Stage};
use sandbox::{self, ProjectKind, Session};
use settings::SandboxConfig;

use crate::candidate::{Trial, try_one};
use crate::lanes::{close_later, log_warm_stats, open_lanes, warm_totals};
pub use crate::parked::Parked;
use crate::parked::{PREWARM_WAIT, park_key};
use crate::policy::failing_first::{collect_from, failing_first_cmd, use_collected};
use crate::policy::rank::{Next, Schedule, winner};
use crate::policy::sessions::{keep_for_next_attempt, lanes_for};
use crate::policy::{Tried, feedback};
use crate::test_files::javascript_test_files;

#[derive(Debug, Clone)]
pub struct ValidateSettings {
    /// Keep validating after the first passing candidate (to rank several).
    pub collect_all: bool,
    pub allow_test_edits: bool,
    /// Wall-clock budget of one attempt's candidates.
    pub attempt_budget: Duration,
    pub patch_limits: PatchLimits,
    /// pytest projects, search candidates: run the baseline-failing tests first; only a
    /// candidate that makes them pass gets the whole suite, whose run alone decides the verdict
    /// (`validate.failing_first`). Model candidates always get the whole suite: there are few
    /// of them, and a retry prompt needs all of a failed candidate's output (its regressions).
    pub failing_first: bool,
    /// Failing-first pytest runs may use the warm server's collected session
    /// (`validate.collected`).
    pub collected: bool,
    /// Candidates validated at once, each in a sandbox session of its own (`validate.lanes`).
    pub lanes: usize,
}

impl Default for ValidateSettings {
    fn default() -> Self {
        ValidateSettings {
            collect_all: false,
            allow_test_edits: false,
            attempt_budget: Duration::from_secs(300),
            patch_limits: PatchLimits::default(),
            failing_first: true,
            collected: true,
            lanes: 1,
        }
    }
}

pub struct ValidateStage {
    pub sandbox: SandboxConfig,
    /// Each repair's validation work trees and results go to its `validation_dir`.
    pub workspace: vocab::Workspace,
    pub settings: ValidateSettings,
    /// Resolves the request's project (local path, iteration, or object-store snapshot).
    pub projects: std::sync::Arc<store::projects::Projects>,
    /// Sessions kept from a repair's failed attempt for its next one.
    pub parked: Parked,
}

/// One attempt's project: where it is, how it is tested, where its files go.
struct Attempt<'a> {
    f: &'a FixProposed,
    kind: ProjectKind,
    root: PathBuf,
    /// `repairs/repair-<id>/validation`
    dir: PathBuf,
    park_key: String,
    attempts_left: u32,
}

impl Handler for ValidateStage {
    fn stage(&self) -> Stage {
        Stage::Validate
    }

    async fn handle(&self, input: Input) -> Outcome {
        let Message::FixProposed(f) = &*input.message else {
            return Outcome::Reject(format!("validate cannot handle `{}`", input.message.kind()));
        };
        let root = match self.projects.dir(&f.request.project).await {
            Ok(r) => r,
            Err(e) => return bus::runtime::outcome_for(e),
        };
        let Some(mut kind) = sandbox::detect_project_with(&root, f.request.test_cmd.as_deref())
        else {
            return Outcome::Reject("no test command found: pass --test-cmd".into());
        };
        // The MRE's command for candidates, when the request's cannot serve (a suite longer
        // than the limit): the log's failing tests alone, then `mre.wider`.
        if let Some(cmd) = f.mre.candidate_cmd.as_ref().filter(|c| !c.is_empty()) {
            kind.test_cmd = cmd.clone();
        }
        let a = Attempt {
            f,
            park_key: park_key(&f.request.repair_id, kind.language, &root),
            kind,
            root,
            dir: self.workspace.validation_dir(f.request.repair_id),
            attempts_left: f.request.max_attempts.saturating_sub(f.attempt),
        };
        let started = Instant::now();
        let (tried, lanes, paths) = if f.candidates.is_empty() {
            // Nothing to validate: the repair ends here, and so do its parked sessions.
            close_later(self.parked.take(&a.park_key));
            (vec![], 0, RunPaths::default())
        } else {
            match self.validate(&a).await {
                Ok(done) => done,
                Err(outcome) => return outcome,
            }
        };
        let record = attempt_record(f, &tried, started.elapsed(), lanes, paths);
        write_attempt_report(&a.dir, f, &tried);
        let mut history = f.history.clone();
        history.push(record);
        if let Some((best, why)) = winner(&tried, &f.candidates) {
            return Outcome::Publish(vec![Message::ValidationPassed(ValidationPassed {
                request: f.request.clone(),
                triage: f.triage.clone(),
                decision: f.decision.clone(),
                mre: f.mre.clone(),
                attempt: f.attempt,
                history,
                winner: best.result.clone(),
                patch: best.diff.clone().unwrap_or_default(),
                why,
            })]);
        }
        // An engine with nothing left to propose ends the repair.
        let exhausted = f.candidates.is_empty() && f.engine.is_search();
        Outcome::Publish(vec![Message::ValidationFailed(ValidationFailed {
            request: f.request.clone(),
            triage: f.triage.clone(),
            decision: f.decision.clone(),
            mre: f.mre.clone(),
            attempt: f.attempt,
            attempts_left: if exhausted { 0 } else { a.attempts_left },
            history,
            feedback: feedback::feedback(&tried),
        })])
    }
}

impl ValidateStage {
    /// Validates the attempt's candidates (at least one) in its lanes: what was tried, in rank
    /// order, and how many lanes ran them; the lanes are then parked for the next attempt or
    /// closed.
    async fn validate(&self, a: &Attempt<'_>) -> Result<(Vec<Tried>, usize, RunPaths), Outcome> {
        let f = a.f;
        // A scratch dir: removed at the end, or, if this process is killed, by the next one
        // that opens the workspace (`Workspace::sweep_scratch`).
        let scratch = std::fs::create_dir_all(&a.dir)
            .and_then(|()| {
                vocab::scratch::ScratchDir::new_in(&a.dir, vocab::workspace::WORK_PREFIX)
            })
            .map_err(|e| Outcome::Retry {
                after: Some(Duration::from_secs(5)),
                reason: format!("cannot make a work dir in {}: {e}", a.dir.display()),
            })?;
        let work = scratch.path().to_owned();
        let mut lanes = self.take_lanes(a).await?;
        let lanes_used = lanes.len();
        let deadline = Instant::now() + self.settings.attempt_budget;
        // A candidate command is already the failing tests alone: no separate first run.
        let first =
            (self.settings.failing_first && f.engine.is_search() && f.mre.candidate_cmd.is_none())
                .then(|| {
                    failing_first_cmd(&a.kind, &f.mre.failing_tests, || {
                        javascript_test_files(&a.root)
                    })
                })
                .flatten();
        let base = use_collected(self.settings.collected, first.is_some(), a.kind.runner)
            .then(|| {
                let base = work.join("base");
                let _ = std::fs::remove_dir_all(&base);
                sandbox::copy_project(&a.root, &base).ok().map(|_| base)
            })
            .flatten();
        let trial = Trial {
            stage: self,
            kind: &a.kind,
            root: &a.root,
            work: &work,
            f,
            first,
            slowest_first_ms: Default::default(),
            slowest_ended_ms: Default::default(),
            looped_ms: crate::policy::timeouts::looped_before(&f.history).into(),
            base,
            collect_from: collect_from(lanes_used),
            runs: Default::default(),
        };
        let before = warm_totals(&lanes);
        let tried = self.run_candidates(&trial, &mut lanes, deadline).await;
        log_warm_stats(&f.request.repair_id, &lanes);
        let after = warm_totals(&lanes);
        let paths = RunPaths {
            runs: trial.runs.load(std::sync::atomic::Ordering::Relaxed),
            warm: after.warm.saturating_sub(before.warm),
            collected: after.collected.saturating_sub(before.collected),
            warm_off: after.warm_off,
        };
        let any_passed = tried.iter().any(|t| t.result.passed);
        if keep_for_next_attempt(a.attempts_left, any_passed) {
            self.parked.park(a.park_key.clone(), lanes);
        } else {
            close_later(lanes);
        }
        drop(scratch);
        Ok((tried, lanes_used, paths))
    }

    /// The attempt's lanes: those parked for it (or being opened ahead for it), and new ones
    /// up to the number it uses. An attempt that has none and cannot open one ends here.
    async fn take_lanes(&self, a: &Attempt<'_>) -> Result<Vec<Session>, Outcome> {
        let lanes = lanes_for(self.settings.lanes, a.f.candidates.len());
        let mut idle = self.parked.take_when_ready(&a.park_key, PREWARM_WAIT).await;
        if idle.len() > lanes {
            close_later(idle.split_off(lanes));
        }
        if idle.len() < lanes {
            match open_lanes(&self.sandbox, &a.kind, &a.root, lanes - idle.len()).await {
                Ok(opened) => idle.extend(opened),
                // Sessions kept from the last attempt can carry on alone.
                Err(e) if !idle.is_empty() => {
                    tracing::warn!(repair = %a.f.request.repair_id, error = %e, "no further validation lane opened");
                }
                Err(e) if e.is_retryable() => {
                    return Err(Outcome::Retry {
                        after: None,
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(Outcome::Reject(e.to_string())),
            }
        }
        Ok(idle)
    }

    /// Runs candidates as the [`Schedule`] starts them, one per idle lane, until none is left
    /// to start and none runs; every lane is back in `idle` after. What was tried, in rank order.
    async fn run_candidates(
        &self,
        trial: &Trial<'_>,
        idle: &mut Vec<Session>,
        deadline: Instant,
    ) -> Vec<Tried> {
        let candidates = &trial.f.candidates;
        let mut schedule = Schedule::new(candidates.len(), self.settings.collect_all);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut done: Vec<(usize, Tried)> = vec![];
        loop {
            while !idle.is_empty() {
                match schedule.next(Instant::now() > deadline) {
                    Next::Start(n) => {
                        let Some(mut session) = idle.pop() else { break };
                        let c = &candidates[n];
                        running.push(async move {
                            let t = try_one(trial, &mut session, c, n).await;
                            (session, n, t)
                        });
                    }
                    Next::BudgetSpent => {
                        tracing::info!(repair = %trial.f.request.repair_id, tried = schedule.started(), "attempt budget spent");
                        break;
                    }
                    Next::NoMore => break,
                }
            }
            let Some((session, n, t)) = running.next().await else {
                break;
            };
            schedule.finished(t.result.passed);
            done.push((n, t));
            idle.push(session);
            let (tried, of) = (done.len(), candidates.len());
            bus::announce::interim(tried as u32, of as u32, || {
                format!("{tried} of {of} candidates validated")
            });
        }
        done.sort_by_key(|(n, _)| *n);
        done.into_iter().map(|(_, t)| t).collect()
    }
}

/// This attempt as the repair's history keeps it.
fn attempt_record(
    f: &FixProposed,
    tried: &[Tried],
    validation: Duration,
    lanes: usize,
    paths: RunPaths,
) -> AttemptRecord {
    AttemptRecord {
        attempt: f.attempt,
        engine: f.engine.clone(),
        candidates: f
            .candidates
            .iter()
            .take(tried.len().max(1))
            .cloned()
            .collect(),
        results: tried.iter().map(|t| t.result.clone()).collect(),
        usage: f.usage.clone(),
        validation_ms: validation.as_millis() as u64,
        lanes: lanes as u32,
        paths,
    }
}

/// Writes `attempt-N.json` to `dir`: each candidate's verdict, reason and tests. Best effort:
/// the report is for people, the messages carry the same.
fn write_attempt_report(dir: &Path, f: &FixProposed, tried: &[Tried]) {
    let _ = std::fs::create_dir_all(dir);
    let json = serde_json::json!({
        "attempt": f.attempt,
        "engine": f.engine.to_string(),
        "results": tried.iter().map(|t| serde_json::json!({
            "candidate": t.result.candidate_id,
            "passed": t.result.passed,
            "reason": t.result.reason,
            "changed_lines": t.result.changed_lines,
            "regressions": t.result.regressions,
            "duration_ms": t.result.duration_ms,
            "tests": t.result.tests.iter().map(|o| serde_json::json!({"name": o.name, "status": o.status})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let _ = std::fs::write(
        dir.join(format!("attempt-{}.json", f.attempt)),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
}

impl ValidateStage {
    /// Opens this repair's validation sessions (containers, warm test servers) in the
    /// background, while triage, the MRE and fix generation run, and parks them for its first
    /// attempt, which waits for them rather than opening its own. Used by the embedded
    /// pipeline, which knows the project at the start; a failure here is only logged (the
    /// attempt then opens sessions itself), and sessions no attempt takes expire like any
    /// parked ones.
    pub async fn prewarm(
        &self,
        repair: proto::RepairId,
        project: &proto::messages::ProjectRef,
        test_cmd: Option<&str>,
    ) {
        let Ok(root) = self.projects.dir(project).await else {
            return;
        };
        let Some(kind) = sandbox::detect_project_with(&root, test_cmd) else {
            return;
        };
        let key = park_key(&repair, kind.language, &root);
        let tx = self.parked.begin_pending(&key);
        let (cfg, parked) = (self.sandbox.clone(), self.parked.clone());
        let lanes = self.settings.lanes.max(1);
        tokio::spawn(async move {
            let opened = open_lanes(&cfg, &kind, &root, lanes)
                .await
                .unwrap_or_default();
            tracing::debug!(repair = %repair, sessions = opened.len(), "validation sessions opened ahead");
            if !opened.is_empty() {
                parked.park(key.clone(), opened);
            }
            parked.end_pending(&key, tx);
        });
    }

    pub fn from_context(ctx: &bus::context::StageContext) -> ValidateStage {
        ValidateStage {
            sandbox: ctx.config.settings.sandbox.clone(),
            workspace: ctx.workspace.clone(),
            settings: ValidateSettings {
                failing_first: ctx.config.settings.validate.failing_first,
                collected: ctx.config.settings.validate.collected,
                lanes: ctx.config.settings.validate.lanes(),
                ..Default::default()
            },
            projects: ctx.projects.clone(),
            parked: Parked::default(),
        }
    }
}
