//! Version 2: the engine that proposed an attempt's candidates is an [`Engine`] instead of a
//! string that fix and validate had to agree on. It changes `FixProposed` and the two
//! validation results (through [`AttemptRecord`]); every other message is still version 1.

use serde::{Deserialize, Serialize};

use super::v1;
pub use super::v1::{
    Blocked, BlockedReason, Candidate, CandidateResult, CandidateSource, Category, DeadLetter,
    Decided, Decision, EngineChoice, Frame, FrameKind, Language, Metrics, MreReady, MreSummary,
    Origin, ProjectRef, RepairCompleted, RepairOutcome, RepairRequested, StageProgress, Suspect,
    TestOutcome, TestStatus, TriageReport, Triaged, Usage, Verdict, serde_bytes_compat,
};

/// What proposed a set of candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Engine {
    /// The built-in search engine: mutation and template operators, no model.
    Search,
    /// A language model, by the alias it was asked under.
    Model { name: String },
}

impl Engine {
    /// Version 1 wrote `search` for the search engine and the model's alias otherwise, so
    /// every string has a meaning and the upgrade cannot fail.
    fn from_v1(engine: String) -> Engine {
        if engine == "search" {
            Engine::Search
        } else {
            Engine::Model { name: engine }
        }
    }

    pub fn is_search(&self) -> bool {
        matches!(self, Engine::Search)
    }
}

/// As version 1 wrote it: the report, the history ledger and the logs keep showing `search`
/// or the model's alias.
impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Search => f.write_str("search"),
            Engine::Model { name } => f.write_str(name),
        }
    }
}

/// What happened in one earlier attempt, fed back into the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub engine: Engine,
    pub candidates: Vec<Candidate>,
    pub results: Vec<CandidateResult>,
    #[serde(default)]
    pub usage: Usage,
    /// Wall-clock milliseconds the validation of this attempt's candidates took, from opening
    /// the sandbox sessions to closing them (0 in records from before it was measured).
    #[serde(default)]
    pub validation_ms: u64,
    /// Candidates validated at once (sandbox sessions), 0 when unknown.
    #[serde(default)]
    pub lanes: u32,
    /// How this attempt's test runs were carried out (all zero when unknown).
    #[serde(default)]
    pub paths: RunPaths,
}

/// How an attempt's test runs were carried out: in the warm test server (a fork of a process
/// that has imported the runner; some in a session already collected on the project) or as
/// fresh processes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunPaths {
    /// Every test run of the attempt's candidates.
    pub runs: u64,
    /// Of `runs`, those the warm server served.
    pub warm: u64,
    /// Of `warm`, those run in a session collected on the candidate's base.
    pub collected: u64,
    /// Why the warm server stopped being used, when it did.
    #[serde(default)]
    pub warm_off: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixProposed {
    pub request: RepairRequested,
    pub triage: TriageReport,
    pub decision: Decision,
    pub mre: MreSummary,
    pub attempt: u32,
    pub engine: Engine,
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub usage: Usage,
    /// Earlier attempts of this repair.
    #[serde(default)]
    pub history: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationFailed {
    pub request: RepairRequested,
    pub triage: TriageReport,
    pub decision: Decision,
    pub mre: MreSummary,
    pub attempt: u32,
    pub attempts_left: u32,
    /// Every attempt so far, this one last.
    pub history: Vec<AttemptRecord>,
    /// The failing output the next attempt gets as feedback (capped).
    pub feedback: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationPassed {
    pub request: RepairRequested,
    pub triage: TriageReport,
    pub decision: Decision,
    pub mre: MreSummary,
    pub attempt: u32,
    pub history: Vec<AttemptRecord>,
    pub winner: CandidateResult,
    /// The winning change as a unified diff against the project.
    pub patch: String,
    /// Why the winner ranks first among the candidates that passed.
    #[serde(default)]
    pub why: String,
}

fn upgrade_history(history: Vec<v1::AttemptRecord>) -> Vec<AttemptRecord> {
    history.into_iter().map(AttemptRecord::from).collect()
}

impl From<v1::AttemptRecord> for AttemptRecord {
    fn from(a: v1::AttemptRecord) -> AttemptRecord {
        AttemptRecord {
            attempt: a.attempt,
            engine: Engine::from_v1(a.engine),
            candidates: a.candidates,
            results: a.results,
            usage: a.usage,
            validation_ms: a.validation_ms,
            lanes: a.lanes,
            paths: RunPaths::default(),
        }
    }
}

impl From<v1::FixProposed> for FixProposed {
    fn from(f: v1::FixProposed) -> FixProposed {
        FixProposed {
            request: f.request,
            triage: f.triage,
            decision: f.decision,
            mre: f.mre,
            attempt: f.attempt,
            engine: Engine::from_v1(f.engine),
            candidates: f.candidates,
            usage: f.usage,
            history: upgrade_history(f.history),
        }
    }
}

impl From<v1::ValidationFailed> for ValidationFailed {
    fn from(f: v1::ValidationFailed) -> ValidationFailed {
        ValidationFailed {
            request: f.request,
            triage: f.triage,
            decision: f.decision,
            mre: f.mre,
            attempt: f.attempt,
            attempts_left: f.attempts_left,
            history: upgrade_history(f.history),
            feedback: f.feedback,
        }
    }
}

impl From<v1::ValidationPassed> for ValidationPassed {
    fn from(p: v1::ValidationPassed) -> ValidationPassed {
        ValidationPassed {
            request: p.request,
            triage: p.triage,
            decision: p.decision,
            mre: p.mre,
            attempt: p.attempt,
            history: upgrade_history(p.history),
            winner: p.winner,
            patch: p.patch,
            why: String::new(),
        }
    }
}
