//! Version 3: a repair whose tests cannot run is its own outcome,
//! [`RepairOutcome::CannotRun`], instead of "no validated fix" or a failure. It changes
//! `RepairCompleted`; every other message is as in version 2.

use serde::{Deserialize, Serialize};

use super::v1;
pub use super::v2::{
    AttemptRecord, Blocked, BlockedReason, Candidate, CandidateResult, CandidateSource, Category,
    DeadLetter, Decided, Decision, Engine, EngineChoice, FixProposed, Frame, FrameKind, Language,
    Metrics, MreReady, MreSummary, Origin, ProjectRef, RepairRequested, RunPaths, StageProgress,
    Suspect, TestOutcome, TestStatus, TriageReport, Triaged, Usage, ValidationFailed,
    ValidationPassed, Verdict, serde_bytes_compat,
};
use crate::{IterationId, RepairId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairOutcome {
    /// A fix passed validation.
    Fixed,
    /// Every attempt failed validation.
    NoFix,
    /// The decision recommends rebuilding.
    RebuildRecommended,
    /// Analysis only was asked for.
    Analyzed,
    /// The repair could not run (bad input, a dead-lettered stage).
    Failed,
    /// The project's tests cannot run in the sandbox (a missing runner, interpreter or
    /// package, a failed install): the MRE's `blocked` says why.
    CannotRun,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairCompleted {
    pub repair_id: RepairId,
    pub outcome: RepairOutcome,
    pub summary: String,
    #[serde(default)]
    pub new_iteration: Option<IterationId>,
    /// Where the report was written (`repairs/repair-<id>/`), relative to the workspace.
    #[serde(default)]
    pub report_dir: Option<String>,
    pub completed_at_ms: u64,
    /// report.json as written, so a client of a remote worker gets the report too.
    #[serde(default)]
    pub report: Option<String>,
    /// Why the tests could not run, with [`RepairOutcome::CannotRun`].
    #[serde(default)]
    pub blocked: Option<Blocked>,
}

impl From<v1::RepairOutcome> for RepairOutcome {
    fn from(o: v1::RepairOutcome) -> RepairOutcome {
        match o {
            v1::RepairOutcome::Fixed => RepairOutcome::Fixed,
            v1::RepairOutcome::NoFix => RepairOutcome::NoFix,
            v1::RepairOutcome::RebuildRecommended => RepairOutcome::RebuildRecommended,
            v1::RepairOutcome::Analyzed => RepairOutcome::Analyzed,
            v1::RepairOutcome::Failed => RepairOutcome::Failed,
        }
    }
}

impl From<v1::RepairCompleted> for RepairCompleted {
    fn from(c: v1::RepairCompleted) -> RepairCompleted {
        RepairCompleted {
            repair_id: c.repair_id,
            outcome: c.outcome.into(),
            summary: c.summary,
            new_iteration: c.new_iteration,
            report_dir: c.report_dir,
            completed_at_ms: c.completed_at_ms,
            report: c.report,
            blocked: None,
        }
    }
}
