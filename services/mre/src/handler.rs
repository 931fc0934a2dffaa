//! The MRE stage's handler: `Decided` (repair) in, `MreReady` out.

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{MreReady, MreSummary};
use proto::{Message, Stage};
use sandbox::{Sandbox, SandboxConfigExt};
use settings::SandboxConfig;

use crate::build;
use crate::run::{self, reproduces};

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
        let detected = match sandbox::detect_for(&self.sandbox, kind.language).await {
            Ok(d) => d,
            Err(e) if e.is_retryable() => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                };
            }
            Err(e) => return Outcome::Reject(e.to_string()),
        };
        let sb = &detected.sandbox;
        let mut notes = vec![format!("sandbox: {} ({})", sb.name(), detected.reason)];
        if let Some(n) = sb.notice() {
            notes.push(n);
        }

        // The whole project first: the baseline every candidate is compared with.
        let mut repro = self.sandbox.clone();
        repro.timeout_secs = run::reproduction_timeout(repro.timeout_secs, &d.request.error_log);
        let whole = match run::run_tests(sb, &repro, &kind, &root).await {
            Ok(r) => r,
            Err(e) if e.is_retryable() => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                };
            }
            Err(e) => return Outcome::Reject(format!("the test command could not run: {e}")),
        };
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
        let minimal = match run::run_tests(sb, &repro, &kind, &dir).await {
            Ok(r) => Some(r),
            Err(e) => {
                notes.push(format!("the minimal example could not run: {e}"));
                None
            }
        };
        let (reproduced, whole_project) = match &minimal {
            Some(m) if reproduces(&d.triage, m) => (true, false),
            _ => {
                notes.push("the minimal example does not reproduce the failure: the whole project is the example".into());
                (reproduces(&d.triage, &whole), true)
            }
        };
        if !reproduced {
            notes.push(format!(
                "the failure did not reproduce in the sandbox ({}): a fix can be validated only against the tests that fail there",
                whole.result.verdict()
            ));
        }
        let summary = MreSummary {
            reproduced,
            whole_project,
            files: files.into_iter().collect(),
            test_cmd: build::shell_words(&kind.test_cmd),
            failing_tests: whole.failing(),
            passing_tests: whole.passing(),
            sandbox: sb.name().to_owned(),
            notes,
            baseline_ms: whole.result.duration.as_millis() as u64,
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
