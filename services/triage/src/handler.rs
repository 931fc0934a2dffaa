//! The triage stage's handler: `RepairRequested` in, `Triaged` out.

use std::sync::Arc;

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::Triaged;
use proto::{Message, Stage};
use store::HistorySource;
use vocab::Language;

use crate::analysis::{self, TriageConfig};
use crate::project::Project;

pub struct TriageStage {
    pub config: TriageConfig,
    pub history: Arc<dyn HistorySource>,
    /// Resolves the request's project (local path, iteration, or object-store snapshot).
    pub projects: std::sync::Arc<store::projects::Projects>,
    /// Run the tests under coverage in this sandbox (Python) for measured T and Ochiai.
    pub coverage_sandbox: Option<settings::SandboxConfig>,
}

impl Handler for TriageStage {
    fn stage(&self) -> Stage {
        Stage::Triage
    }

    async fn handle(&self, input: Input) -> Outcome {
        let Message::RepairRequested(rq) = &*input.message else {
            return Outcome::Reject(format!("triage cannot handle `{}`", input.message.kind()));
        };
        let root = match self.projects.dir(&rq.project).await {
            Ok(r) => r,
            Err(e) => return bus::runtime::outcome_for(e),
        };
        let parsed = logparse::parse(&rq.error_log);
        let project = match Project::scan(&root) {
            Ok(p) => p,
            Err(e) => return Outcome::Reject(format!("cannot read the project: {e}")),
        };
        let engine = analysis::engine_for(rq.engine, rq.model.as_deref(), &self.config.llm);
        let history = match self.history.outcomes(parsed.category) {
            Ok(h) => h,
            Err(e) if e.is_retryable() => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot read history: {e}"),
                };
            }
            Err(_) => vec![],
        };
        let spectrum = match &self.coverage_sandbox {
            // A test that loops: coverage.py, `go test -cover` and node's coverage write their
            // report when the run ends, so a run cut by the limit measures nothing and would
            // only wait the whole sandbox limit.
            Some(_) if sandbox::outcomes::cut_by_time_limit(&rq.error_log) => {
                Some(crate::spectrum::note(
                    "coverage not measured: the log says the tests were cut by a time limit (a test loops), and a coverage run reports only when the tests end".into(),
                ))
            }
            Some(sb) if project.test_files().next().is_some() => match project.main_language() {
                Language::Python => {
                    Some(crate::spectrum::python(sb, &root, &parsed.failing_tests).await)
                }
                Language::Go => Some(crate::spectrum::tool_coverage(sb, &root, Language::Go).await),
                // TypeScript runs on node: node's own coverage, in the node image.
                Language::JavaScript | Language::TypeScript => {
                    Some(crate::spectrum::tool_coverage(sb, &root, Language::JavaScript).await)
                }
                _ => None,
            },
            _ => None,
        };
        // Parsing and metrics are CPU work: keep them off the async workers.
        let cfg = self.config.clone();
        let report = match tokio::task::spawn_blocking(move || {
            analysis::triage(
                &cfg,
                &parsed,
                &project,
                &engine,
                &history,
                spectrum.as_ref(),
            )
        })
        .await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Reject(format!("triage failed: {e}")),
        };
        Outcome::Publish(vec![Message::Triaged(Triaged {
            request: rq.clone(),
            report,
        })])
    }
}

impl TriageStage {
    pub fn from_context(ctx: &bus::context::StageContext) -> TriageStage {
        let s = &ctx.config.settings;
        TriageStage {
            config: TriageConfig {
                llm: ctx.config.llm.clone(),
                cost: s.cost_calculation.clone(),
                adaptive: s.global.adaptive_evaluation.clone(),
            },
            history: ctx.history.clone(),
            projects: ctx.projects.clone(),
            coverage_sandbox: s.triage.coverage.then(|| s.sandbox.clone()),
        }
    }
}
