//! The integration stage's handler: `Decided` (rebuild or analysis), `ValidationPassed`,
//! `ValidationFailed` with no attempts left, or `MreReady` whose tests cannot run, in; `RepairCompleted` out.

use std::path::Path;

use bus::runtime::{Handler, Input, Outcome};
use proto::messages::{
    AttemptRecord, Decision, MreSummary, RepairCompleted, RepairOutcome, RepairRequested,
    TriageReport, Verdict,
};
use proto::{IterationId, Message, RepairId, Stage};
use store::projects::Bucket;
use store::{Completion, HistoryRecord, Store};
use vocab::Workspace;

use crate::iteration;
use crate::report::{self, Facts};

pub struct IntegrateStage {
    pub store: Store,
    /// Reports go to each repair's `repair_dir`, new iterations to their `iteration_dir`.
    pub workspace: Workspace,
    /// Resolves the request's project (local path, iteration, or object-store snapshot).
    pub projects: std::sync::Arc<store::projects::Projects>,
    /// Keep this many iterations after each new one (`docker.auto_cleanup` with
    /// `project.max_iterations`); `None` keeps everything.
    pub retention: Option<usize>,
    /// Where the report files go for clients on other machines (the distributed mode): a
    /// completion is published only once they are there.
    pub reports: Option<Bucket>,
}

/// The files of a repair's report directory that a client takes home.
pub const REPORT_FILES: &[&str] = &[
    "final.patch",
    "decision.md",
    "repair_report.md",
    "report.json",
];

/// Where a report file of `repair` lies in the report bucket.
pub fn report_key(repair: RepairId, name: &str) -> String {
    format!("{}/{name}", vocab::workspace::repair_dir_name(repair))
}

/// Copies the report files of `dir` that exist into the report bucket.
async fn upload_reports(bucket: &Bucket, dir: &Path, repair: RepairId) -> Result<(), String> {
    for name in REPORT_FILES {
        let path = dir.join(name);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        bucket
            .put(&report_key(repair, name), &bytes)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

struct Case<'a> {
    request: &'a RepairRequested,
    triage: &'a TriageReport,
    decision: &'a Decision,
    mre: Option<&'a MreSummary>,
    history: &'a [AttemptRecord],
    outcome: RepairOutcome,
    winner: Option<(&'a str, &'a str)>,
    /// Why the winner ranks first among the passing candidates.
    why: &'a str,
}

fn write(path: &Path, text: &str) -> std::io::Result<()> {
    // Write-then-rename, so a crash never leaves half a report.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

impl IntegrateStage {
    async fn finish(&self, c: Case<'_>) -> Outcome {
        let dir = self.workspace.repair_dir(c.request.repair_id);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Outcome::Retry {
                after: None,
                reason: format!("cannot create {}: {e}", dir.display()),
            };
        }
        let source = match self.projects.dir(&c.request.project).await {
            Ok(r) => r,
            Err(e) => return bus::runtime::outcome_for(e),
        };

        // The ledger first: the completion, its iteration and its history record in one
        // transaction; a redelivered message finds the repair completed and changes nothing.
        let fixed = c.outcome == RepairOutcome::Fixed;
        let parent = if fixed {
            match c.request.iteration {
                Some(id) => Some(id),
                None => match iteration::import(&self.store, &self.workspace, &source) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        return Outcome::Retry {
                            after: None,
                            reason: e.to_string(),
                        };
                    }
                },
            }
        } else {
            None
        };
        let engine = c
            .history
            .last()
            .map(|a| a.engine.to_string())
            .unwrap_or_else(|| "none".into());
        let history = matches!(c.outcome, RepairOutcome::Fixed | RepairOutcome::NoFix).then(|| {
            HistoryRecord {
                repair: c.request.repair_id,
                category: c.triage.category,
                engine,
                success: fixed,
                features: c.decision.features.clone(),
                at_ms: vocab::now_ms(),
                operator: c.winner.and_then(|(id, _)| {
                    c.history
                        .iter()
                        .flat_map(|a| &a.candidates)
                        .find(|x| x.id == id)
                        .and_then(|x| match &x.source {
                            proto::messages::CandidateSource::Search { operator } => {
                                Some(operator.clone())
                            }
                            _ => None,
                        })
                }),
            }
        });
        let facts_summary = {
            let f = Facts {
                request: c.request,
                triage: c.triage,
                decision: c.decision,
                mre: c.mre,
                history: c.history,
                outcome: c.outcome,
                winner: c.winner,
                why: c.why,
                new_iteration: None,
                elapsed_ms: 0,
            };
            report::summary(&f)
        };
        let (record, _first) = match self.store.complete_repair(&Completion {
            repair: c.request.repair_id,
            outcome: c.outcome,
            summary: facts_summary.clone(),
            new_iteration_parent: fixed.then_some(parent),
            history,
        }) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: e.to_string(),
                };
            }
        };
        if let (Some(id), Some((_, patch_text))) = (record.new_iteration, c.winner) {
            let dst = self.workspace.iteration_dir(id);
            if !dst.exists()
                && let Err(e) = iteration::materialise(&source, &dst, Some(patch_text))
            {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot store {id}: {e}"),
                };
            }
        }

        if let (Some(keep), Some(new)) = (self.retention, record.new_iteration) {
            self.retain(keep, &[new]);
        }

        let facts = Facts {
            request: c.request,
            triage: c.triage,
            decision: c.decision,
            mre: c.mre,
            history: c.history,
            outcome: c.outcome,
            winner: c.winner,
            why: c.why,
            new_iteration: record.new_iteration.map(|i| i.to_string()),
            elapsed_ms: vocab::now_ms().saturating_sub(c.request.requested_at_ms),
        };
        let json = serde_json::to_string_pretty(&report::json(&facts)).unwrap_or_default();
        let mut files = vec![
            (
                "decision.md",
                crate::report::decision_md(c.triage, c.decision),
            ),
            ("repair_report.md", report::markdown(&facts)),
            ("report.json", json.clone()),
        ];
        if let Some((_, p)) = c.winner {
            files.push(("final.patch", p.to_owned()));
        }
        for (name, text) in files {
            if let Err(e) = write(&dir.join(name), &text) {
                return Outcome::Retry {
                    after: None,
                    reason: format!("cannot write {name}: {e}"),
                };
            }
        }
        if let Err(e) = self.store.flush_grouped().await {
            return Outcome::Retry {
                after: None,
                reason: e.to_string(),
            };
        }
        if let Some(bucket) = &self.reports
            && let Err(e) = upload_reports(bucket, &dir, c.request.repair_id).await
        {
            return Outcome::Retry {
                after: None,
                reason: format!("cannot hand the report to clients: {e}"),
            };
        }
        let rel = dir
            .strip_prefix(self.workspace.root())
            .unwrap_or(&dir)
            .display()
            .to_string();
        Outcome::Publish(vec![Message::RepairCompleted(RepairCompleted {
            repair_id: c.request.repair_id,
            outcome: c.outcome,
            summary: facts_summary,
            new_iteration: record.new_iteration,
            report_dir: Some(rel),
            completed_at_ms: vocab::now_ms(),
            report: Some(json),
            blocked: c.mre.and_then(|m| m.blocked.clone()),
        })])
    }
}

impl IntegrateStage {
    /// Retention after a new iteration: records first, then files, so a crash in between
    /// leaves an orphan directory rather than a record without files.
    fn retain(&self, keep: usize, protected: &[IterationId]) {
        let doomed = match self.store.retention_plan(keep, protected) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "retention skipped");
                return;
            }
        };
        for id in doomed {
            if let Err(e) = self.store.remove_iteration(id) {
                tracing::warn!(error = %e, %id, "retention: cannot forget the iteration");
                continue;
            }
            let dir = self.workspace.iteration_dir(id);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, dir = %dir.display(), "retention: cannot remove files");
            }
            tracing::info!(%id, keep, "retention removed an old iteration");
        }
    }
}

impl Handler for IntegrateStage {
    fn stage(&self) -> Stage {
        Stage::Integrate
    }

    async fn handle(&self, input: Input) -> Outcome {
        let case = match &*input.message {
            Message::Decided(d) => Case {
                request: &d.request,
                triage: &d.triage,
                decision: &d.decision,
                mre: None,
                history: &[],
                outcome: if d.decision.verdict == Verdict::Rebuild {
                    RepairOutcome::RebuildRecommended
                } else {
                    RepairOutcome::Analyzed
                },
                winner: None,
                why: "",
            },
            Message::ValidationPassed(v) => Case {
                request: &v.request,
                triage: &v.triage,
                decision: &v.decision,
                mre: Some(&v.mre),
                history: &v.history,
                outcome: RepairOutcome::Fixed,
                winner: Some((v.winner.candidate_id.as_str(), v.patch.as_str())),
                why: v.why.as_str(),
            },
            Message::ValidationFailed(v) => Case {
                request: &v.request,
                triage: &v.triage,
                decision: &v.decision,
                mre: Some(&v.mre),
                history: &v.history,
                outcome: RepairOutcome::NoFix,
                winner: None,
                why: "",
            },
            // Only an MRE whose tests cannot run comes here (its route skips fix and validate).
            Message::MreReady(m) if m.mre.blocked.is_some() => Case {
                request: &m.request,
                triage: &m.triage,
                decision: &m.decision,
                mre: Some(&m.mre),
                history: &[],
                outcome: RepairOutcome::CannotRun,
                winner: None,
                why: "",
            },
            other => return Outcome::Reject(format!("integrate cannot handle `{}`", other.kind())),
        };
        self.finish(case).await
    }
}

impl IntegrateStage {
    /// The integration stage owns the ledger: none without it (`ctx.ledger`).
    pub fn from_context(ctx: &bus::context::StageContext) -> Option<IntegrateStage> {
        Some(IntegrateStage {
            store: ctx.ledger.clone()?,
            workspace: ctx.workspace.clone(),
            projects: ctx.projects.clone(),
            retention: ctx
                .config
                .settings
                .docker
                .auto_cleanup
                .then_some(ctx.config.settings.project.max_iterations.max(1) as usize),
            reports: ctx.reports.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_files_are_keyed_by_repair() {
        // `coval repair --nats` fetches under this key what the integration worker put there.
        let id: RepairId = "rep_01J9Z8Q4X7K2M5N8P1R3T6V9W2".parse().unwrap();
        assert_eq!(
            report_key(id, "final.patch"),
            "repair-rep_01J9Z8Q4X7K2M5N8P1R3T6V9W2/final.patch"
        );
    }
}
