//! Version 1 of every message body.
//!
//! Messages carry forward what later stages need (the request, the triage report, the
//! decision, the MRE summary), so that a stage in another process never has to read another
//! stage's database. Project files never travel in bodies: they are referenced by
//! [`ProjectRef`] (a local path in the embedded mode, an object-store key over NATS).

use serde::{Deserialize, Serialize};

use crate::{IterationId, MessageId, RepairId, Stage};

/// Where the project to repair lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProjectRef {
    /// A directory readable by every stage (embedded mode, or workers sharing a volume).
    LocalPath { path: String },
    /// A tar snapshot in the JetStream object store.
    ObjectStore {
        bucket: String,
        key: String,
        sha256: String,
        size: u64,
    },
    /// A stored iteration of the workspace.
    Iteration { id: IterationId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChoice {
    /// The configured model when it answers, else the search engine.
    #[default]
    Auto,
    Llm,
    Search,
}

/// A client asks for a repair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepairRequested {
    pub repair_id: RepairId,
    pub project: ProjectRef,
    /// The error log, as given (the client caps its size).
    pub error_log: String,
    #[serde(default)]
    pub test_cmd: Option<String>,
    #[serde(default)]
    pub iteration: Option<IterationId>,
    #[serde(default)]
    pub engine: EngineChoice,
    #[serde(default)]
    pub model: Option<String>,
    pub max_attempts: u32,
    /// Stop after the decision: print the analysis, change nothing.
    #[serde(default)]
    pub analyze_only: bool,
    pub requested_at_ms: u64,
    /// Repair even when the cost model recommends a rebuild (`--no-rebuild`).
    #[serde(default)]
    pub no_rebuild: bool,
    /// Where the failure comes from (a CI job's repository, commit, branch and URL), shown
    /// in the report; `None` when nothing was said.
    #[serde(default)]
    pub origin: Option<Origin>,
}

/// What a CI job says about itself when it submits a repair (`coval submit` reads the CI's
/// standard variables, or flags). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `github`, `gitlab`, or empty when given by flags alone.
    #[serde(default)]
    pub ci: Option<String>,
    /// `owner/name`, or the project path.
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// The failing job's page.
    #[serde(default)]
    pub job_url: Option<String>,
    /// The key that made this submission unique (a retried job sends the same one).
    #[serde(default)]
    pub dedup_key: Option<String>,
}

impl Origin {
    /// Whether nothing at all is known.
    pub fn is_empty(&self) -> bool {
        self == &Origin::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
    Go,
    Rust,
    Java,
    Ruby,
    Php,
    C,
    #[default]
    Unknown,
}

/// The problem categories of the original tool, made precise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Syntax,
    Import,
    Type,
    Name,
    Runtime,
    Network,
    FileConfig,
    Environment,
    #[default]
    Other,
}

impl Category {
    pub const ALL: [Category; 9] = [
        Category::Syntax,
        Category::Import,
        Category::Type,
        Category::Name,
        Category::Runtime,
        Category::Network,
        Category::FileConfig,
        Category::Environment,
        Category::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Syntax => "syntax",
            Category::Import => "import",
            Category::Type => "type",
            Category::Name => "name",
            Category::Runtime => "runtime",
            Category::Network => "network",
            Category::FileConfig => "file_config",
            Category::Environment => "environment",
            Category::Other => "other",
        }
    }
}

/// One frame of a stack trace or one location named by a compiler or test runner.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Frame {
    pub file: String,
    #[serde(default)]
    pub line: Option<u32>,
    #[serde(default)]
    pub column: Option<u32>,
    #[serde(default)]
    pub function: Option<String>,
    /// Inside the project (not stdlib, site-packages, node_modules, GOROOT, a registry).
    pub in_project: bool,
    /// The project file `file` resolved to (relative to the project root) when the project
    /// has it: a trace from another machine matches by path suffix. `file` stays as written.
    #[serde(default)]
    pub resolved: Option<String>,
    /// In the project's tests (a test file, by path), not its code.
    #[serde(default)]
    pub test: bool,
}

/// Whose code a frame is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// The project's own code.
    Project,
    /// The project's tests.
    Test,
    /// Stdlib, runtime, dependencies (site-packages, node_modules, GOROOT, module cache,
    /// cargo registry, JDK, Android framework, vendor/, gems).
    External,
}

impl FrameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Project => "project",
            FrameKind::Test => "test",
            FrameKind::External => "external",
        }
    }
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        match (self.in_project, self.test) {
            (false, _) => FrameKind::External,
            (true, true) => FrameKind::Test,
            (true, false) => FrameKind::Project,
        }
    }

    /// `file:line` with the resolved project path when there is one, else the path as written.
    pub fn place(&self) -> String {
        let file = self.resolved.as_deref().unwrap_or(&self.file);
        match self.line {
            Some(l) => format!("{file}:{l}"),
            None => file.to_string(),
        }
    }
}

/// A place the fault may be, with how suspicious it is (0..=1) and why.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Suspect {
    pub file: String,
    #[serde(default)]
    pub line: Option<u32>,
    pub score: f64,
    pub reason: String,
}

/// The decision model's inputs, each on 0..=1.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// Technical debt D.
    pub debt: f64,
    /// Test coverage T.
    pub coverage: f64,
    /// Whether T was measured by a coverage tool (else estimated).
    pub coverage_measured: bool,
    /// Available context K.
    pub context: f64,
    /// Model capability S.
    pub capability: f64,
    /// Lines of code in the project files considered.
    #[serde(default)]
    pub loc: u64,
    /// Lines of the code around the fault (the enclosing function when localisation is
    /// precise, else the whole suspect module).
    #[serde(default)]
    pub region_lines: u64,
    /// Lines of the module(s) a rebuild would replace.
    #[serde(default)]
    pub module_lines: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TriageReport {
    pub language: Language,
    pub error_type: String,
    pub message: String,
    pub category: Category,
    pub frames: Vec<Frame>,
    pub failing_tests: Vec<String>,
    pub suspects: Vec<Suspect>,
    pub metrics: Metrics,
    /// Notes for the report: what could not be determined and why.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The model alias chosen for the fix when the request named none (the one with the best
    /// expected success on this category and size); the reason is in `notes`.
    #[serde(default)]
    pub model: Option<String>,
    /// The innermost frame in the project's code (of the error, else of its nearest cause),
    /// named even when the project directory does not have the file (then `resolved` is None).
    #[serde(default)]
    pub innermost: Option<Frame>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triaged {
    pub request: RepairRequested,
    pub report: TriageReport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Repair,
    Rebuild,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub c_fix: f64,
    pub c_new: f64,
    /// Estimated probability that a repair succeeds.
    pub p_success: f64,
    /// Plain-words reasons, one per line of decision.md.
    pub reasons: Vec<String>,
    /// The success model's features at decision time, recorded with the outcome for refits.
    #[serde(default)]
    pub features: Vec<f64>,
    /// Why the cost model's rebuild recommendation was not followed (the verdict is then
    /// `Repair`): nothing could carry a rebuild out, or the user asked for a repair regardless.
    #[serde(default)]
    pub overruled: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decided {
    pub request: RepairRequested,
    pub triage: TriageReport,
    pub decision: Decision,
}

/// What the MRE stage built and whether the failure reproduced in the sandbox.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MreSummary {
    pub reproduced: bool,
    /// The MRE fell back to the whole project.
    pub whole_project: bool,
    pub files: Vec<String>,
    pub test_cmd: String,
    pub failing_tests: Vec<String>,
    /// Tests that passed before any fix: a fix must keep them passing.
    #[serde(default)]
    pub passing_tests: Vec<String>,
    pub sandbox: String,
    pub notes: Vec<String>,
    /// Wall time of the baseline test run, so a candidate that loops forever is stopped in
    /// proportion to what the tests normally take.
    #[serde(default)]
    pub baseline_ms: u64,
    /// The baseline run was cut by its time limit (a test loops): `baseline_ms` is then the
    /// time of the tests that ended in it, run alone (0 when that could not be measured), and
    /// candidates' timeouts also follow their own runs that end.
    #[serde(default)]
    pub baseline_timed_out: bool,
    /// Set when the tests cannot run at all, for a reason other than the bug (a missing runner,
    /// interpreter or package): the repair stops there instead of validating candidates that
    /// cannot pass.
    #[serde(default)]
    pub blocked: Option<Blocked>,
    /// When the test command is narrow (one test id, one file), the commands that run the
    /// tests around it (its files, then the suite) whose baseline ran in time: a candidate
    /// must keep their passing tests (in `passing_tests`) passing before it wins.
    #[serde(default)]
    pub wider: Vec<Vec<String>>,
    /// The command candidates run instead of the request's, when that one cannot serve: a
    /// suite longer than `sandbox.timeout_secs` (the whole run is cut) has its candidates run
    /// the log's failing tests alone, then `wider` (their test files), never the whole suite.
    /// `None`: candidates run the request's command.
    #[serde(default)]
    pub candidate_cmd: Option<Vec<String>>,
    /// Why the whole suite cannot serve candidates when it is not its length: it cannot run
    /// here (a test file outside the log's needs a package this environment lacks), while the
    /// log's failing tests run alone and fail as in the log. `candidate_cmd` is then set.
    #[serde(default)]
    pub suite_blocked: Option<Blocked>,
}

/// Why a project's tests cannot run in the sandbox, apart from the bug being repaired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub reason: BlockedReason,
    /// What is missing or broken, in a few words: "pytest", "the package `requests`".
    pub what: String,
    /// What to do about it: the one command or setting that provides it.
    pub hint: String,
    /// The last lines of the run that showed it.
    #[serde(default)]
    pub output_tail: String,
}

impl Blocked {
    /// What stops the tests, in a clause: "the package `pytest` (pip) is missing", "... cannot
    /// be fetched: the package registry cannot be reached".
    pub fn problem(&self) -> String {
        match self.reason {
            BlockedReason::Runner | BlockedReason::Interpreter | BlockedReason::Dependency => {
                format!("{} is missing", self.what)
            }
            BlockedReason::Registry => format!(
                "{} cannot be fetched: the package registry cannot be reached",
                self.what
            ),
            BlockedReason::Manifest => format!("{} is refused by the installer", self.what),
            BlockedReason::Install => format!("{} could not be installed", self.what),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedReason {
    /// The test command's program (pytest, jest, npm, ...) is not installed.
    Runner,
    /// The language's interpreter or toolchain (python, node, go, cargo) is not installed.
    Interpreter,
    /// A package the tests import is not installed.
    Dependency,
    /// Installing the project's dependencies failed.
    Install,
    /// A package registry could not be reached while installing.
    Registry,
    /// A manifest (requirements.txt, package.json, go.mod, ...) is broken.
    Manifest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MreReady {
    pub request: RepairRequested,
    pub triage: TriageReport,
    pub decision: Decision,
    pub mre: MreSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CandidateSource {
    Model { name: String },
    Search { operator: String },
}

/// One proposed change, normalised by the fix stage into a unified diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    pub source: CandidateSource,
    pub description: String,
    pub diff: String,
    /// Syntax-tree leaves the change adds and removes (the search engine's measure of how
    /// small an edit is); `None` when not measured.
    #[serde(default)]
    pub edit_tokens: Option<u32>,
    /// Whether the change touches a line triage suspected.
    #[serde(default)]
    pub at_suspect: bool,
}

/// Model usage for the report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub name: String,
    pub status: TestStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    pub candidate_id: String,
    pub passed: bool,
    pub tests: Vec<TestOutcome>,
    /// Tests that passed before and fail with this candidate.
    pub regressions: Vec<String>,
    pub changed_lines: u32,
    /// Why the candidate failed, when it did.
    #[serde(default)]
    pub reason: Option<String>,
    pub duration_ms: u64,
    /// How its test runs were served, in order (`first: warm server`, `suite: fresh
    /// process`, ...); empty when none ran.
    #[serde(default)]
    pub path: String,
}

/// What happened in one earlier attempt, fed back into the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub engine: String,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixProposed {
    pub request: RepairRequested,
    pub triage: TriageReport,
    pub decision: Decision,
    pub mre: MreSummary,
    pub attempt: u32,
    pub engine: String,
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
}

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
}

/// What a stage did with one message of a repair, for `coval watch` and `repair --nats`: an
/// event only, no stage consumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    pub repair_id: RepairId,
    pub stage: Stage,
    /// One line: what came out (e.g. "attempt 1: 12 candidates from search").
    pub summary: String,
    pub elapsed_ms: u64,
    pub at_ms: u64,
    /// The worker that handled it (host and process id).
    #[serde(default)]
    pub worker: Option<String>,
    /// Set while the stage is still working on the message: how far it is, as (done, of),
    /// e.g. candidates validated of those proposed. `None` on the event that says what the
    /// stage did.
    #[serde(default)]
    pub interim: Option<(u32, u32)>,
}

/// A message no stage could handle: undecodable, rejected, or out of deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub repair_id: RepairId,
    pub stage: Stage,
    #[serde(default)]
    pub message_id: Option<MessageId>,
    /// The `Coval-Type` header as received, if any.
    #[serde(default)]
    pub original_kind: Option<String>,
    pub original_subject: String,
    pub reason: String,
    pub deliveries: u32,
    /// The original headers and body, kept so the message can be inspected or replayed.
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes_compat")]
    pub body: Vec<u8>,
    pub dead_at_ms: u64,
}

/// Encodes a byte vector as MessagePack `bin` instead of an array of integers (and reads
/// either): `#[serde(with = "proto::messages::serde_bytes_compat")]`.
pub mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}
