//! The MRE stage's handler: `Decided` (repair) in, `MreReady` out.

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{MreReady, MreSummary};
use proto::{Message, Stage};
use sandbox::{Sandbox, SandboxConfigExt};
use settings::SandboxConfig;

use crate::run::{self, reproduces};
use crate::{blocked, build};

pub struct MreStage {
    pub sandbox: SandboxConfig,
    /// Each repair's example goes to its `mre_dir`.
    pub workspace: vocab::Workspace,
    /// Resolves the request's project (local path, iteration, or object-store snapshot).
    pub projects: std::sync::Arc<store::projects::Projects>,
}

impl Handler for MreStage {
    fn stage(&self) -> Stage {
        Stage::Mre
    }

    async fn handle(&self, input: Input) -> Outcome {
        let Message::Decided(d) = &*input.message else {
            return Outcome::Reject(format!("mre cannot handle `{}`", input.message.kind()));
        };
        let root = match self.projects.dir(&d.request.project).await {
            Ok(r) => r,
            Err(e) => return bus::runtime::outcome_for(e),
        };
        let Some(kind) = sandbox::detect_project_with(&root, d.request.test_cmd.as_deref()) else {
            return Outcome::Reject(
                "no test command found (no pyproject/setup.cfg/requirements, package.json, go.mod, Cargo.toml, ...): pass --test-cmd".into(),
            );
        };
        let prepared = match sandbox::prepare(
            &self.sandbox,
            &kind,
            &root,
            &sandbox::UserDirs::default(),
        )
        .await
        {
            Ok(p) => p,
            Err(sandbox::PrepareError::Sandbox(e)) if e.is_retryable() => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                };
            }
            // A failed install is not a failing test: the repair stops with its reason.
            Err(sandbox::PrepareError::Env(e)) => {
                return Outcome::Publish(vec![Message::MreReady(MreReady {
                    request: d.request.clone(),
                    triage: d.triage.clone(),
                    decision: d.decision.clone(),
                    mre: MreSummary {
                        whole_project: true,
                        test_cmd: build::shell_words(&kind.test_cmd),
                        notes: vec![format!("the project's environment could not be had: {e}")],
                        blocked: Some(e.blocked()),
                        ..MreSummary::default()
                    },
                })]);
            }
            Err(e) => return Outcome::Reject(e.to_string()),
        };
        let (sb, env) = (&prepared.detected.sandbox, &prepared.env);
        let mut notes = vec![
            format!("sandbox: {} ({})", sb.name(), prepared.detected.reason),
            format!("environment: {}", env.description),
        ];
        if !kind.origin.is_empty() {
            notes.push(format!("test command: {}", kind.origin));
        }
        if let Some(n) = sb.notice() {
            notes.push(n);
        }

        // The whole project first: the baseline every candidate is compared with.
        let mut repro = self.sandbox.clone();
        repro.timeout_secs = run::reproduction_timeout(repro.timeout_secs, &d.request.error_log);
        let whole = match run::run_tests(sb, &repro, env, &kind, &root).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                };
            }
            Err(e) => return Outcome::Reject(format!("the test command could not run: {e}")),
        };
        // Tests that cannot run at all stop here, with what is missing: no candidate could pass.
        // A log that says the run was cut by a time limit reproduces as a run cut by its own
        // (the loop), whatever the log named.
        let looping_log = sandbox::outcomes::cut_by_time_limit(&d.request.error_log);
        let same = |r: &run::TestRun| reproduces(&d.triage, r) || looping_log && r.result.timed_out;
        // Why the tests cannot run here, apart from the bug (a missing runner or package).
        let blocked = (!same(&whole))
            .then(|| blocked::diagnose(&whole, &d.triage, &root, sb.name()))
            .flatten();
        // A whole suite that outlasts its limit, where the log saw no loop, or that cannot run
        // here (a test file outside the log's needs a package this environment lacks: pytest
        // stops at its import): the log's failing tests alone (seconds on any suite) decide
        // whether the failure reproduces, and then they are the baseline. The whole suite is
        // never run a second time.
        let too_long = whole.result.timed_out && !looping_log;
        let long_suite = match run::ended_tests_cmd(&kind, &d.triage.failing_tests) {
            Some(cmd) if too_long || blocked.is_some() => {
                let alone_kind = sandbox::ProjectKind {
                    test_cmd: cmd.clone(),
                    ..kind.clone()
                };
                match run::run_tests(sb, &repro, env, &alone_kind, &root).await {
                    Ok(r) if !r.result.timed_out && reproduces(&d.triage, &r) => Some((cmd, r)),
                    Ok(r) if too_long => {
                        notes.push(format!(
                            "the log's failing tests alone do not fail as in the log: `{}` {}",
                            build::shell_words(&cmd),
                            r.result.verdict()
                        ));
                        None
                    }
                    Err(e) if too_long => {
                        notes.push(format!("the log's failing tests could not run alone: {e}"));
                        None
                    }
                    Ok(_) | Err(_) => None,
                }
            }
            _ => None,
        };
        // The suite is blocked, not long: why the rest of it is not run for candidates.
        let suite_blocked = blocked
            .clone()
            .filter(|_| long_suite.is_some() && !too_long);
        if long_suite.is_none()
            && let Some(blocked) = blocked
        {
            notes.push(format!(
                "the tests cannot run in the sandbox: {} is missing ({})",
                blocked.what,
                whole.result.verdict()
            ));
            return Outcome::Publish(vec![Message::MreReady(MreReady {
                request: d.request.clone(),
                triage: d.triage.clone(),
                decision: d.decision.clone(),
                mre: MreSummary {
                    reproduced: false,
                    whole_project: true,
                    test_cmd: build::shell_words(&kind.test_cmd),
                    failing_tests: whole.failing(),
                    sandbox: sb.name().to_owned(),
                    notes,
                    baseline_ms: whole.result.duration.as_millis() as u64,
                    blocked: Some(blocked),
                    ..MreSummary::default()
                },
            })]);
        }
        if whole.command_not_found() {
            return Outcome::Reject(format!(
                "the test command `{}` was not found in the sandbox ({}): pass an existing one with --test-cmd",
                build::shell_words(&kind.test_cmd),
                whole.result.verdict()
            ));
        }

        // Then the minimal example.
        let dir = self.workspace.mre_dir(d.request.repair_id);
        let _ = std::fs::remove_dir_all(&dir);
        let files = build::select(&root, &d.triage);
        let image = self
            .sandbox
            .image_for(kind.language)
            .unwrap_or("debian:bookworm")
            .to_owned();
        if let Err(e) = build::write(&root, &files, &dir, &image, &kind.test_cmd, &d.triage) {
            return Outcome::Retry {
                after: None,
                reason: format!("cannot write the MRE to {}: {e}", dir.display()),
            };
        }
        // A baseline cut by its limit (a test loops): the minimal example would loop as long,
        // so the whole project is the example, and the tests around the command (which run
        // the looping test too) are not run.
        let looped = whole.result.timed_out && long_suite.is_none();
        let mut baseline_ms = whole.result.duration.as_millis() as u64;
        let minimal = if let Some((cmd, alone)) = &long_suite {
            // What candidates are scaled to: the failing tests alone, which ended.
            baseline_ms = alone.result.duration.as_millis() as u64;
            notes.push(match &suite_blocked {
                Some(b) => format!(
                    "the whole suite cannot run in the sandbox: {} is missing ({}; {}), yet the log's failing tests run alone (`{}` in {:.1} s) and fail as in the log: they are the baseline, and the whole project is the example",
                    b.what,
                    whole.result.verdict(),
                    b.hint,
                    build::shell_words(cmd),
                    alone.result.duration.as_secs_f64()
                ),
                None => format!(
                "the whole suite did not end within its {} s limit, yet the log's failing tests ended alone (`{}` in {:.1} s) and fail as in the log: a suite longer than the limit, not a loop (sandbox.timeout_secs sets the limit); the baseline is the {} test(s) that ended, and the whole project is the example",
                repro.timeout_secs,
                build::shell_words(cmd),
                alone.result.duration.as_secs_f64(),
                whole.passing().len()
                ),
            });
            None
        } else if looped {
            notes.push(format!(
                "the baseline run was cut by its {} s limit (a test loops): the whole project is the example",
                repro.timeout_secs
            ));
            // What candidates are scaled to: the tests that ended, run alone.
            baseline_ms = 0;
            if let Some(cmd) = run::ended_tests_cmd(&kind, &whole.passing()) {
                let ended_kind = sandbox::ProjectKind {
                    test_cmd: cmd.clone(),
                    ..kind.clone()
                };
                match run::run_tests(sb, &repro, env, &ended_kind, &root).await {
                    Ok(r) if !r.result.timed_out => {
                        baseline_ms = r.result.duration.as_millis() as u64;
                        notes.push(format!(
                            "baseline time from the tests that ended: `{}` in {:.1} s",
                            build::shell_words(&cmd),
                            r.result.duration.as_secs_f64()
                        ));
                    }
                    Ok(r) => notes.push(format!(
                        "the tests that ended did not end alone: `{}` {}",
                        build::shell_words(&cmd),
                        r.result.verdict()
                    )),
                    Err(e) => notes.push(format!("the tests that ended could not run alone: {e}")),
                }
            }
            None
        } else {
            match run::run_tests(sb, &repro, env, &kind, &dir).await {
                Ok(r) => Some(r),
                Err(e) => {
                    notes.push(format!("the minimal example could not run: {e}"));
                    None
                }
            }
        };
        let (reproduced, whole_project) = match &minimal {
            Some(m) if same(m) => (true, false),
            _ => {
                if !whole.result.timed_out && suite_blocked.is_none() {
                    notes.push("the minimal example does not reproduce the failure: the whole project is the example".into());
                }
                (same(&whole) || long_suite.is_some(), true)
            }
        };
        if !reproduced {
            notes.push(format!(
                "the failure did not reproduce in the sandbox ({}): a fix can be validated only against the tests that fail there",
                whole.result.verdict()
            ));
        }
        // A narrow command is the target, not the proof: the tests around it that pass now
        // must pass after a fix too.
        let mut passing = whole.passing();
        if let Some((_, alone)) = &long_suite {
            passing.extend(alone.passing());
        }
        let mut wider = vec![];
        // A long suite's candidates run the log's failing tests alone, then their test files
        // (when those end in time), never the whole suite again.
        let mut candidate_cmd = None;
        if let Some((cmd, _)) = &long_suite {
            candidate_cmd = Some(cmd.clone());
            if let Some(files) = run::test_files_cmd(&kind, &d.triage.failing_tests) {
                let files_kind = sandbox::ProjectKind {
                    test_cmd: files.clone(),
                    ..kind.clone()
                };
                match run::run_tests(sb, &self.sandbox, env, &files_kind, &root).await {
                    Ok(r) if !r.result.timed_out => {
                        notes.push(format!(
                            "the tests around the failing ones: `{}` ({} passing, {:.1} s)",
                            build::shell_words(&files),
                            r.passing().len(),
                            r.result.duration.as_secs_f64()
                        ));
                        passing.extend(r.passing());
                        // Candidates' runs are scaled to the slowest command they run.
                        baseline_ms = baseline_ms.max(r.result.duration.as_millis() as u64);
                        wider.push(files);
                    }
                    Ok(r) => notes.push(format!(
                        "the tests around the failing ones were not run: `{}` {}",
                        build::shell_words(&files),
                        r.result.verdict()
                    )),
                    Err(e) => notes.push(format!(
                        "the tests around the failing ones could not run: {e}"
                    )),
                }
            }
            let mut ran = vec![format!("`{}`", build::shell_words(cmd))];
            ran.extend(wider.iter().map(|w| format!("`{}`", build::shell_words(w))));
            let because = match &suite_blocked {
                Some(b) => format!(
                    "it cannot run in the sandbox ({} is missing; {})",
                    b.what, b.hint
                ),
                None => format!(
                    "the whole suite outlasts sandbox.timeout_secs ({} s); raise sandbox.timeout_secs (COVAL_SANDBOX__TIMEOUT_SECS) above the suite's time to validate candidates against the whole suite",
                    repro.timeout_secs
                ),
            };
            notes.push(format!(
                "candidates are validated with {} only: the rest of the suite is NOT run for them, because {because}",
                ran.join(" then ")
            ));
        }
        for level in sandbox::widen(&kind)
            .into_iter()
            .filter(|_| !looped && long_suite.is_none())
        {
            let level_kind = sandbox::ProjectKind {
                test_cmd: level.clone(),
                ..kind.clone()
            };
            match run::run_tests(sb, &self.sandbox, env, &level_kind, &root).await {
                Ok(r) if !r.result.timed_out => {
                    notes.push(format!(
                        "the tests around the command: `{}` ({} passing)",
                        build::shell_words(&level),
                        r.passing().len()
                    ));
                    passing.extend(r.passing());
                    wider.push(level);
                }
                Ok(r) => {
                    notes.push(format!(
                        "the tests around the command were not run: `{}` {}",
                        build::shell_words(&level),
                        r.result.verdict()
                    ));
                    break;
                }
                Err(e) => {
                    notes.push(format!("the tests around the command could not run: {e}"));
                    break;
                }
            }
        }
        passing.sort();
        passing.dedup();
        // A long suite's failures are those of the log's tests alone (the whole run was cut).
        let failing_now = match &long_suite {
            Some((_, alone)) => alone.failing(),
            None => whole.failing(),
        };
        let failing_tests = run::targets(&d.triage, &failing_now, reproduced);
        let others = failing_now.len() - failing_tests.len();
        if others > 0 {
            notes.push(format!(
                "{others} other test(s) fail here before any fix, and the log does not name them: they are neither the target nor regressions"
            ));
        }
        let summary = MreSummary {
            reproduced,
            whole_project,
            files: files.into_iter().collect(),
            test_cmd: build::shell_words(&kind.test_cmd),
            failing_tests,
            passing_tests: passing,
            sandbox: sb.name().to_owned(),
            notes,
            baseline_ms,
            baseline_timed_out: looped,
            blocked: None,
            wider,
            candidate_cmd,
            suite_blocked,
        };
        let _ = std::fs::write(
            dir.join("result.txt"),
            format!("{}\n\n{}", whole.result, whole.output()),
        );
        Outcome::Publish(vec![Message::MreReady(MreReady {
            request: d.request.clone(),
            triage: d.triage.clone(),
            decision: d.decision.clone(),
            mre: summary,
        })])
    }
}

impl MreStage {
    pub fn from_context(ctx: &bus::context::StageContext) -> MreStage {
        MreStage {
            sandbox: ctx.config.settings.sandbox.clone(),
            workspace: ctx.workspace.clone(),
            projects: ctx.projects.clone(),
        }
    }
}
