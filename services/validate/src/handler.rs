//! The validation stage's handler: `FixProposed` in, `ValidationPassed` or `ValidationFailed`
//! out. Results go to `repairs/repair-<id>/validation/attempt-N.json`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bus::runtime::{Handler, Input, Outcome};
use futures::StreamExt;
use patch::PatchLimits;
use proto::messages::{
    AttemptRecord, Candidate, CandidateResult, FixProposed, TestOutcome, TestStatus,
    ValidationFailed, ValidationPassed,
};
use proto::{Message, Stage};
use sandbox::{self, ProjectKind, RunSpec, Sandbox, Session};
use settings::SandboxConfig;

use crate::compare;

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

/// How long a failed attempt's sessions wait for the repair's next attempt (which may go to
/// another worker, or never come) before they are closed.
const PARK_TTL: Duration = Duration::from_secs(60);

/// Sandbox sessions (containers, local servers) kept between one attempt of a repair and the
/// next, so a retry does not pay for new containers and warm servers. Each parking is closed
/// by a timer after [`PARK_TTL`] unless the next attempt took it first; whatever is still
/// parked when the stage is dropped is removed by the sessions' own drop guards.
#[derive(Clone)]
pub struct Parked {
    inner: std::sync::Arc<std::sync::Mutex<ParkedInner>>,
    ttl: Duration,
}

impl Default for Parked {
    fn default() -> Self {
        Parked::with_ttl(PARK_TTL)
    }
}

#[derive(Default)]
struct ParkedInner {
    next_ticket: u64,
    /// key → (ticket, sessions)
    by_key: std::collections::HashMap<String, (u64, Vec<Session>)>,
    /// Keys whose sessions are being opened ahead of time ([`ValidateStage::prewarm`]): the
    /// receiver turns true (or its sender drops) when that is over.
    pending: std::collections::HashMap<String, tokio::sync::watch::Receiver<bool>>,
}

/// The key sessions are parked under: one repair, one language, one project dir.
fn park_key(repair: &proto::RepairId, language: vocab::Language, root: &Path) -> String {
    format!("{repair}|{language:?}|{}", root.display())
}

impl Parked {
    pub fn with_ttl(ttl: Duration) -> Parked {
        Parked {
            inner: Default::default(),
            ttl,
        }
    }

    /// Sessions parked now, over every key.
    pub fn len(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_key.values().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, key: &str) -> Vec<Session> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_key.remove(key).map(|(_, s)| s).unwrap_or_default()
    }

    /// [`Parked::take`], after waiting (at most `wait`) for sessions still being opened ahead
    /// of time for this key.
    async fn take_when_ready(&self, key: &str, wait: Duration) -> Vec<Session> {
        let pending = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.pending.get(key).cloned()
        };
        if let Some(mut rx) = pending {
            let _ = tokio::time::timeout(wait, rx.wait_for(|done| *done)).await;
        }
        self.take(key)
    }

    /// Marks `key` as being opened ahead of time; [`Parked::take_when_ready`] waits until the
    /// returned sender says true or is dropped.
    fn begin_pending(&self, key: &str) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.pending.insert(key.to_owned(), rx);
        tx
    }

    fn end_pending(&self, key: &str, tx: tokio::sync::watch::Sender<bool>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.pending.remove(key);
        let _ = tx.send(true);
    }

    fn park(&self, key: String, sessions: Vec<Session>) {
        let ticket = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.next_ticket += 1;
            let ticket = g.next_ticket;
            if let Some((_, old)) = g.by_key.insert(key.clone(), (ticket, sessions)) {
                close_later(old);
            }
            ticket
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(me.ttl).await;
            let expired = {
                let mut g = me.inner.lock().unwrap_or_else(|p| p.into_inner());
                match g.by_key.get(&key) {
                    Some((t, _)) if *t == ticket => g.by_key.remove(&key).map(|(_, s)| s),
                    _ => None,
                }
            };
            if let Some(sessions) = expired {
                tracing::debug!(key = %key, "parked validation sessions expired");
                futures::future::join_all(sessions.into_iter().map(Session::close)).await;
            }
        });
    }
}

/// The template every lane of an attempt on this project is opened from.
fn lane_template(cfg: &SandboxConfig, kind: &ProjectKind, root: &Path) -> RunSpec {
    let mut template = RunSpec::from_config(cfg, kind.language, root, kind.test_cmd.clone());
    template.collect = kind.reports.clone();
    template
}

/// Opens `n` sandbox sessions for `kind`'s project at once. Lanes that fail are logged and
/// left out; only when none opens is it an error (the last one).
async fn open_lanes(
    cfg: &SandboxConfig,
    kind: &ProjectKind,
    root: &Path,
    n: usize,
) -> Result<Vec<Session>, sandbox::SandboxError> {
    let detected = sandbox::detect_for(cfg, kind.language).await?;
    let template = lane_template(cfg, kind, root);
    let opened =
        futures::future::join_all((0..n).map(|_| detected.sandbox.open_session(&template))).await;
    let mut sessions = vec![];
    let mut last_error = None;
    for o in opened {
        match o {
            Ok(s) => sessions.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "a validation lane did not open");
                last_error = Some(e);
            }
        }
    }
    match last_error {
        Some(e) if sessions.is_empty() => Err(e),
        _ => Ok(sessions),
    }
}

/// Closes sessions in the background: nothing waits for container removal. If the process
/// ends first, dropping the task drops the sessions, whose guards remove what they own.
fn close_later(sessions: Vec<Session>) {
    if sessions.is_empty() {
        return;
    }
    tokio::spawn(async move {
        futures::future::join_all(sessions.into_iter().map(Session::close)).await;
    });
}

/// A candidate gets four times the baseline run plus one second, within the sandbox's limit.
/// Mutants that loop forever are common and must not cost the full limit each; the baseline is
/// a cold run (a fresh process, often a fresh container), so this is many times what a warm
/// candidate of the same suite needs.
pub fn candidate_timeout(limit_secs: u64, baseline_ms: u64) -> Duration {
    let limit = Duration::from_secs(limit_secs.max(1));
    if baseline_ms == 0 {
        return limit;
    }
    (Duration::from_millis(baseline_ms.saturating_mul(4)) + Duration::from_secs(1)).min(limit)
}

/// The failing output fed back to the next attempt, capped.
const FEEDBACK_CAP: usize = 6000;

fn cap(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {} earlier bytes cut …]\n{}", start, &s[start..])
}

struct Tried {
    result: CandidateResult,
    diff: Option<String>,
    output: String,
}

fn failed(c: &Candidate, reason: String, started: Instant) -> Tried {
    Tried {
        result: CandidateResult {
            candidate_id: c.id.clone(),
            passed: false,
            tests: vec![],
            regressions: vec![],
            changed_lines: 0,
            reason: Some(reason),
            duration_ms: started.elapsed().as_millis() as u64,
        },
        diff: None,
        output: String::new(),
    }
}

/// The command that runs only the baseline's failing tests, when that can be said exactly, for
/// an early verdict on candidates that do not fix them:
/// - `python -m pytest` and a pytest node id (`path.py::name`) for every failing test: those
///   node ids, stopping at the first failure (`-x`) with one-line tracebacks;
/// - the plain `node --test` script (as detected, nothing added by the user) and every failing
///   test's name written literally in one and the same test file: that file run by node itself,
///   which is what `node --test` does per file, without its parent process.
pub fn failing_first_cmd(
    kind: &ProjectKind,
    failing: &[String],
    root: &Path,
) -> Option<Vec<String>> {
    if failing.is_empty() {
        return None;
    }
    match kind.runner {
        sandbox::Runner::Pytest if sandbox::is_pytest_module_run(&kind.test_cmd) => {
            let node_id = |t: &String| {
                let file = t.split("::").next().unwrap_or("");
                t.contains("::")
                    && file.ends_with(".py")
                    && !t.starts_with('-')
                    && !t.contains('\0')
            };
            if !failing.iter().all(node_id) {
                return None;
            }
            let mut cmd = kind.test_cmd.clone();
            cmd.extend(["-x".to_owned(), "--tb=line".to_owned()]);
            cmd.extend(failing.iter().cloned());
            Some(cmd)
        }
        sandbox::Runner::NodeTest if kind.test_cmd == sandbox::node_test_cmd("node --test") => {
            let file = node_test_file_naming(root, failing)?;
            Some(vec!["node".into(), "--test-reporter=tap".into(), file])
        }
        _ => None,
    }
}

/// The one JavaScript test file under `root` that names every test in `names` as a string
/// literal (and the only one that names any of them), relative to `root`.
fn node_test_file_naming(root: &Path, names: &[String]) -> Option<String> {
    fn walk(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < 4 && !name.starts_with('.') && name != "node_modules" {
                walk(&e.path(), depth + 1, out);
            } else if ft.is_file()
                && [".js", ".cjs", ".mjs"].iter().any(|x| name.ends_with(x))
                && out.len() < 200
            {
                out.push(e.path());
            }
        }
    }
    let mut files = vec![];
    walk(root, 0, &mut files);
    let quoted = |text: &str, n: &str| {
        ['\'', '"', '`']
            .iter()
            .any(|q| text.contains(&format!("{q}{n}{q}")))
    };
    let mut found = None;
    for f in files {
        let Ok(rel) = f.strip_prefix(root) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if !vocab::is_test_path(&rel) || rel.starts_with('-') {
            continue;
        }
        let Ok(meta) = f.metadata() else { continue };
        if meta.len() > 1 << 20 {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let named = names.iter().filter(|n| quoted(&text, n)).count();
        if named == 0 {
            continue;
        }
        if named < names.len() || found.is_some() {
            return None;
        }
        found = Some(rel);
    }
    found
}

/// Whether a run of the failing tests alone already decides that the candidate fails: it was
/// stopped (time, memory, output: the whole suite runs those tests too), or a failing test ran
/// and still failed (the whole suite runs it on the same code). `None`: the whole suite decides.
fn early_rejection(
    failing: &[String],
    run: &sandbox::RunResult,
    tests: &[TestOutcome],
) -> Option<String> {
    if run.timed_out || run.oom_killed || run.output_truncated {
        return Some(format!("the test run {}", run.verdict()));
    }
    let failed: Vec<&str> = failing
        .iter()
        .filter(|t| {
            tests.iter().any(|o| {
                compare::same_test(t, &o.name)
                    && matches!(o.status, TestStatus::Failed | TestStatus::Error)
            })
        })
        .map(String::as_str)
        .collect();
    (!failed.is_empty()).then(|| format!("target tests still fail: {}", failed.join(", ")))
}

/// What every candidate of one attempt shares.
struct Trial<'a> {
    stage: &'a ValidateStage,
    kind: &'a ProjectKind,
    root: &'a Path,
    work: &'a Path,
    f: &'a FixProposed,
    /// The failing-tests-first command, when this attempt uses one (worked out once: for Node
    /// it reads the project's test files).
    first: Option<Vec<String>>,
    /// The slowest failing-tests-first run of this attempt that finished in time, in ms.
    slowest_first_ms: std::sync::atomic::AtomicU64,
    /// A copy of the project as candidates are made from it (pytest failing-first runs only):
    /// the sandbox's warm server may run a candidate in a pytest session collected on it.
    base: Option<PathBuf>,
    /// Candidates from this rank on use `base`. Collecting costs about two ordinary runs and
    /// saves about two thirds of each later one, so the first candidates of each lane (often
    /// all an attempt needs) run the ordinary way.
    collect_from: usize,
}

/// The timeout of a failing-tests-first run: ten times the slowest such run of this attempt
/// that finished, or, before any has, twice the MRE's baseline run (a cold run of the whole
/// suite); at least one second, never more than the candidate's own timeout. A mutant that
/// loops forever then costs about a second, not the whole-suite allowance.
pub fn first_run_timeout(full: Duration, baseline_ms: u64, slowest_first_ms: u64) -> Duration {
    let guess = match (slowest_first_ms, baseline_ms) {
        (0, 0) => return full,
        (0, b) => b.saturating_mul(2),
        (s, _) => s.saturating_mul(10),
    };
    Duration::from_millis(guess)
        .max(Duration::from_secs(1))
        .min(full)
}

async fn try_one(t: &Trial<'_>, session: &mut Session, c: &Candidate, n: usize) -> Tried {
    let (s, kind, root, work, f) = (t.stage, t.kind, t.root, t.work, t.f);
    let started = Instant::now();
    if c.diff.trim().is_empty() {
        return failed(c, c.description.clone(), started);
    }
    let edits = match patch::parse(&c.diff, &s.settings.patch_limits) {
        Ok(e) => e,
        Err(e) => return failed(c, format!("the change does not parse: {e}"), started),
    };
    if !s.settings.allow_test_edits {
        let touched: Vec<String> = edits
            .iter()
            .filter_map(|e| match e {
                patch::Edit::Diff(d) => d.new_path.clone().or_else(|| d.old_path.clone()),
                patch::Edit::SearchReplace { path, .. } | patch::Edit::WholeFile { path, .. } => {
                    Some(path.clone())
                }
            })
            .map(|p| {
                p.strip_prefix("b/")
                    .or_else(|| p.strip_prefix("a/"))
                    .unwrap_or(&p)
                    .to_owned()
            })
            .filter(|p| vocab::is_test_path(p))
            .collect();
        if !touched.is_empty() {
            return failed(
                c,
                format!(
                    "edits test files ({}), which is not allowed",
                    touched.join(", ")
                ),
                started,
            );
        }
    }
    let copy = work.join(format!("cand-{n}"));
    let _ = std::fs::remove_dir_all(&copy);
    let applied = match patch::apply_to_copy(root, &copy, &edits, &s.settings.patch_limits) {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&copy);
            return failed(c, format!("the change does not apply: {e}"), started);
        }
    };
    tracing::debug!(candidate = %c.id, applied_secs = started.elapsed().as_secs_f64(), "candidate applied");
    let timeout = candidate_timeout(s.sandbox.timeout_secs, f.mre.baseline_ms);
    if let Some(first) = &t.first {
        let slowest = t
            .slowest_first_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let first_timeout = first_run_timeout(timeout, f.mre.baseline_ms, slowest);
        let changed: Vec<String> = applied.files.iter().map(|a| a.path.clone()).collect();
        let run = match t.base.as_ref().filter(|_| n >= t.collect_from) {
            Some(base) => {
                session
                    .run_changed(
                        &copy,
                        first,
                        first_timeout,
                        sandbox::Changed {
                            base,
                            changed: &changed,
                        },
                    )
                    .await
            }
            None => session.run(&copy, first, first_timeout).await,
        };
        match run {
            Ok(run) => {
                if !run.timed_out {
                    t.slowest_first_ms.fetch_max(
                        run.duration.as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                let tests = sandbox::parse_outcomes(kind, &run);
                if let Some(reason) = early_rejection(&f.mre.failing_tests, &run, &tests) {
                    let _ = std::fs::remove_dir_all(&copy);
                    return Tried {
                        result: CandidateResult {
                            candidate_id: c.id.clone(),
                            passed: false,
                            tests,
                            regressions: vec![],
                            changed_lines: applied.changed_lines,
                            reason: Some(reason),
                            duration_ms: started.elapsed().as_millis() as u64,
                        },
                        diff: Some(applied.diff),
                        output: format!("{}{}", run.stdout, run.stderr),
                    };
                }
            }
            Err(e) => {
                tracing::debug!(candidate = %c.id, error = %e, "the failing tests alone did not run; running the whole suite");
            }
        }
    }
    let run = session.run(&copy, &kind.test_cmd, timeout).await;
    let _ = std::fs::remove_dir_all(&copy);
    let run = match run {
        Ok(r) => r,
        Err(e) => return failed(c, format!("the sandbox failed: {e}"), started),
    };
    let tests: Vec<TestOutcome> = sandbox::parse_outcomes(kind, &run);
    let regressions = compare::regressions(&f.mre.passing_tests, &tests);
    let still = compare::still_failing(&f.mre.failing_tests, &tests);
    let passed = run.success() && regressions.is_empty() && still.is_empty();
    let reason = (!passed).then(|| {
        // A stopped run names no test truthfully: say why it stopped.
        if run.timed_out || run.oom_killed || run.output_truncated {
            format!("the test run {}", run.verdict())
        } else if !regressions.is_empty() {
            format!(
                "breaks tests that passed before: {}",
                regressions.join(", ")
            )
        } else if !still.is_empty() {
            format!("target tests still fail: {}", still.join(", "))
        } else {
            format!("the test run {}", run.verdict())
        }
    });
    Tried {
        result: CandidateResult {
            candidate_id: c.id.clone(),
            passed,
            tests,
            regressions,
            changed_lines: applied.changed_lines,
            reason,
            duration_ms: started.elapsed().as_millis() as u64,
        },
        diff: Some(applied.diff),
        output: format!("{}{}", run.stdout, run.stderr),
    }
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
        let Some(kind) = sandbox::detect_project_with(&root, f.request.test_cmd.as_deref()) else {
            return Outcome::Reject("no test command found: pass --test-cmd".into());
        };
        let attempts_left = f.request.max_attempts.saturating_sub(f.attempt);
        let dir = self.workspace.validation_dir(f.request.repair_id);
        let work = dir.join(format!("work-{}", f.attempt));
        let mut tried: Vec<Tried> = vec![];
        let validation_started = Instant::now();
        let mut lanes_used = 0;
        let park_key = park_key(&f.request.repair_id, kind.language, &root);
        if f.candidates.is_empty() {
            // Nothing to validate: the repair ends here, and so do its parked sessions.
            close_later(self.parked.take(&park_key));
        } else {
            let lanes = self.settings.lanes.clamp(1, f.candidates.len());
            let mut idle: Vec<Session> = self.parked.take_when_ready(&park_key, PREWARM_WAIT).await;
            if idle.len() > lanes {
                close_later(idle.split_off(lanes));
            }
            if idle.len() < lanes {
                match open_lanes(&self.sandbox, &kind, &root, lanes - idle.len()).await {
                    Ok(opened) => idle.extend(opened),
                    // Sessions kept from the last attempt can carry on alone.
                    Err(e) if !idle.is_empty() => {
                        tracing::warn!(repair = %f.request.repair_id, error = %e, "no further validation lane opened");
                    }
                    Err(e) if e.is_retryable() => {
                        return Outcome::Retry {
                            after: None,
                            reason: e.to_string(),
                        };
                    }
                    Err(e) => return Outcome::Reject(e.to_string()),
                }
            }
            lanes_used = idle.len();
            let _ = std::fs::create_dir_all(&work);
            let deadline = Instant::now() + self.settings.attempt_budget;
            let first = (self.settings.failing_first && f.engine.is_search())
                .then(|| failing_first_cmd(&kind, &f.mre.failing_tests, &root))
                .flatten();
            let base = (self.settings.collected
                && first.is_some()
                && kind.runner == sandbox::Runner::Pytest)
                .then(|| {
                    let base = work.join("base");
                    let _ = std::fs::remove_dir_all(&base);
                    sandbox::copy_project(&root, &base).ok().map(|_| base)
                })
                .flatten();
            let trial = Trial {
                stage: self,
                kind: &kind,
                root: &root,
                work: &work,
                f,
                first,
                slowest_first_ms: Default::default(),
                base,
                collect_from: 2 * lanes_used,
            };
            let trial = &trial;
            // Candidates start in rank order, one per idle lane. After a pass (unless every
            // candidate is wanted) no new one starts; those already running finish, so the
            // ranking below sees every candidate that was tried.
            let mut running = futures::stream::FuturesUnordered::new();
            let mut next = 0;
            let mut stop = false;
            let mut done: Vec<(usize, Tried)> = vec![];
            loop {
                while !stop && next < f.candidates.len() && !idle.is_empty() {
                    if Instant::now() > deadline {
                        tracing::info!(repair = %f.request.repair_id, tried = next, "attempt budget spent");
                        stop = true;
                        break;
                    }
                    let Some(mut session) = idle.pop() else { break };
                    let (n, c) = (next, &f.candidates[next]);
                    next += 1;
                    running.push(async move {
                        let t = try_one(trial, &mut session, c, n).await;
                        (session, n, t)
                    });
                }
                let Some((session, n, t)) = running.next().await else {
                    break;
                };
                if t.result.passed && !self.settings.collect_all {
                    stop = true;
                }
                done.push((n, t));
                idle.push(session);
            }
            done.sort_by_key(|(n, _)| *n);
            tried = done.into_iter().map(|(_, t)| t).collect();
            for session in &idle {
                let w = session.warm_stats();
                if w.starts > 0 || w.off.is_some() {
                    tracing::info!(
                        repair = %f.request.repair_id,
                        served = w.served,
                        collected = w.collected,
                        fallbacks = w.fallbacks,
                        starts = w.starts,
                        off = w.off.as_deref().unwrap_or(""),
                        "warm test server"
                    );
                }
            }
            // A failed attempt with attempts left keeps its sessions for the next one.
            if attempts_left > 0 && !tried.iter().any(|t| t.result.passed) {
                self.parked.park(park_key, idle);
            } else {
                close_later(idle);
            }
            let _ = std::fs::remove_dir_all(&work);
        }

        let record = AttemptRecord {
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
            validation_ms: validation_started.elapsed().as_millis() as u64,
            lanes: lanes_used as u32,
        };
        let mut history = f.history.clone();
        history.push(record);
        let _ = std::fs::create_dir_all(&dir);
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

        let mut passing: Vec<&Tried> = tried.iter().filter(|t| t.result.passed).collect();
        passing.sort_by_key(|t| (t.result.regressions.len(), t.result.changed_lines));
        if let Some(best) = passing.first() {
            return Outcome::Publish(vec![Message::ValidationPassed(ValidationPassed {
                request: f.request.clone(),
                triage: f.triage.clone(),
                decision: f.decision.clone(),
                mre: f.mre.clone(),
                attempt: f.attempt,
                history,
                winner: best.result.clone(),
                patch: best.diff.clone().unwrap_or_default(),
            })]);
        }
        // Feedback: the output of the candidate that came closest (applied, fewest failures).
        let feedback = tried
            .iter()
            .filter(|t| t.diff.is_some())
            .min_by_key(|t| {
                t.result
                    .tests
                    .iter()
                    .filter(|o| o.status != proto::messages::TestStatus::Passed)
                    .count()
            })
            .map(|t| cap(&t.output, FEEDBACK_CAP))
            .unwrap_or_else(|| {
                if tried.is_empty() {
                    "the engine proposed no candidates".to_owned()
                } else {
                    tried
                        .iter()
                        .filter_map(|t| t.result.reason.clone())
                        .take(5)
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            });
        // An engine with nothing left to propose ends the repair.
        let exhausted = f.candidates.is_empty() && f.engine.is_search();
        Outcome::Publish(vec![Message::ValidationFailed(ValidationFailed {
            request: f.request.clone(),
            triage: f.triage.clone(),
            decision: f.decision.clone(),
            mre: f.mre.clone(),
            attempt: f.attempt,
            attempts_left: if exhausted { 0 } else { attempts_left },
            history,
            feedback,
        })])
    }
}

/// How long an attempt waits for sessions being opened ahead of time before opening its own.
const PREWARM_WAIT: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proto::messages::TestStatus;
    use sandbox::{RunResult, detect_project_with};

    use super::*;

    fn pytest_kind() -> ProjectKind {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.pytest.ini_options]\n",
        )
        .unwrap();
        detect_project_with(dir.path(), None).unwrap()
    }

    fn run(code: i32) -> RunResult {
        RunResult {
            exit_code: Some(code),
            signal: None,
            timed_out: false,
            oom_killed: false,
            stdout: String::new(),
            stderr: String::new(),
            output_truncated: false,
            duration: Duration::from_millis(50),
            timeout: Duration::from_secs(10),
            output_cap: 1 << 20,
            collected: BTreeMap::new(),
        }
    }

    fn o(name: &str, status: TestStatus) -> TestOutcome {
        TestOutcome {
            name: name.into(),
            status,
        }
    }

    #[test]
    fn failing_first_only_with_node_ids_and_pytest() {
        let kind = pytest_kind();
        let failing = vec![
            "tests/test_a.py::test_x".to_owned(),
            "tests/test_a.py::TestK::test_y[1-2]".to_owned(),
        ];
        let root = Path::new("/nonexistent");
        let cmd = failing_first_cmd(&kind, &failing, root).unwrap();
        let n = kind.test_cmd.len();
        assert_eq!(cmd[..n], kind.test_cmd[..]);
        assert_eq!(cmd[n..n + 2], ["-x", "--tb=line"]);
        assert_eq!(cmd[n + 2..], failing[..]);
        // Nothing failing, a name that is no node id, an option in disguise: the whole suite.
        assert!(failing_first_cmd(&kind, &[], root).is_none());
        assert!(failing_first_cmd(&kind, &["tests.test_broken".into()], root).is_none());
        assert!(failing_first_cmd(&kind, &["-p.py::evil".into()], root).is_none());
        // A user's shell command cannot take node ids.
        let mut custom = kind.clone();
        custom.test_cmd = vec!["sh".into(), "-c".into(), "pytest -q".into()];
        assert!(failing_first_cmd(&custom, &failing, root).is_none());
    }

    fn node_project(script: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, ProjectKind) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            format!(r#"{{"name":"p","scripts":{{"test":"{script}"}}}}"#),
        )
        .unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let kind = detect_project_with(dir.path(), None).unwrap();
        (dir, kind)
    }

    #[test]
    fn failing_first_runs_the_one_node_test_file_that_names_the_failing_tests() {
        let test_file = "const test = require('node:test');\n\
             test('adds', () => {});\n\
             test(\"rounds up\", () => {});\n\
             test(`keeps the sign`, () => {});\n";
        let other = "test('other', () => {});\n";
        let failing = vec!["rounds up".to_owned(), "keeps the sign".to_owned()];
        let (dir, kind) = node_project(
            "node --test",
            &[
                ("test/math.test.js", test_file),
                ("test/other.test.js", other),
                ("lib/math.js", "// rounds up\nmodule.exports = {};\n"),
            ],
        );
        assert_eq!(
            failing_first_cmd(&kind, &failing, dir.path()),
            Some(vec![
                "node".to_owned(),
                "--test-reporter=tap".to_owned(),
                "test/math.test.js".to_owned()
            ])
        );
        // A name no file holds, names spread over two files: the whole suite.
        let missing = vec!["rounds up".to_owned(), "nowhere".to_owned()];
        assert_eq!(failing_first_cmd(&kind, &missing, dir.path()), None);
        let spread = vec!["rounds up".to_owned(), "other".to_owned()];
        assert_eq!(failing_first_cmd(&kind, &spread, dir.path()), None);
        // A script with options of its own (a loader, a setup file) is the user's to run.
        let (dir, kind) = node_project(
            "node --test --require ./setup.js",
            &[("test/math.test.js", test_file)],
        );
        assert_eq!(failing_first_cmd(&kind, &failing, dir.path()), None);
    }

    #[test]
    fn candidate_timeout_scales_with_the_baseline_within_the_limit() {
        assert_eq!(candidate_timeout(300, 0), Duration::from_secs(300));
        assert_eq!(candidate_timeout(300, 500), Duration::from_secs(3));
        assert_eq!(candidate_timeout(300, 60_000), Duration::from_secs(241));
        assert_eq!(candidate_timeout(30, 60_000), Duration::from_secs(30));
        assert_eq!(candidate_timeout(0, 100), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn parked_sessions_go_to_the_next_attempt_or_expire() {
        let sandbox = sandbox::LocalSandbox::new();
        let dir = tempfile::tempdir().unwrap();
        let template = RunSpec::new(dir.path(), vec!["true".into()]);
        let open = || async { Sandbox::open_session(&sandbox, &template).await.unwrap() };
        let parked = Parked::with_ttl(Duration::from_millis(300));
        parked.park("rep_a".into(), vec![open().await, open().await]);
        assert_eq!(parked.len(), 2);
        // The next attempt of the same repair takes them; another repair finds none.
        assert!(parked.take("rep_b").is_empty());
        let mut again = parked.take("rep_a");
        assert_eq!(again.len(), 2);
        assert!(parked.is_empty());
        // A session taken back still runs candidates.
        let run = again[0]
            .run(dir.path(), &["true".into()], Duration::from_secs(10))
            .await
            .unwrap();
        assert!(run.success(), "{run:?}");
        // Parked again and never taken: closed when the time is up, not before.
        parked.park("rep_a".into(), again);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(parked.len(), 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(parked.is_empty());
        // Parking over an earlier parking of the same key closes the earlier sessions, and the
        // earlier timer does not take the later ones.
        parked.park("rep_c".into(), vec![open().await]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        parked.park("rep_c".into(), vec![open().await]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(parked.len(), 1, "the first timer took the second parking");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(parked.is_empty());
    }

    #[test]
    fn first_run_timeout_follows_the_slowest_first_run() {
        let full = Duration::from_secs(5);
        assert_eq!(first_run_timeout(full, 0, 0), full);
        // Before any first run finished: twice the cold baseline, at least a second.
        assert_eq!(first_run_timeout(full, 700, 0), Duration::from_millis(1400));
        assert_eq!(first_run_timeout(full, 300, 0), Duration::from_secs(1));
        // Then ten times the slowest that finished.
        assert_eq!(first_run_timeout(full, 700, 80), Duration::from_secs(1));
        assert_eq!(first_run_timeout(full, 700, 300), Duration::from_secs(3));
        assert_eq!(first_run_timeout(full, 700, 2_000), full);
    }

    #[test]
    fn early_rejection_needs_a_target_that_ran_and_failed() {
        let failing = vec![
            "tests/test_a.py::test_x".to_owned(),
            "tests/test_a.py::test_y".to_owned(),
        ];
        let both_fail = [
            o("tests/test_a.py::test_x", TestStatus::Failed),
            o("tests/test_a.py::test_y", TestStatus::Passed),
        ];
        assert_eq!(
            early_rejection(&failing, &run(1), &both_fail).as_deref(),
            Some("target tests still fail: tests/test_a.py::test_x")
        );
        let all_pass = [
            o("tests/test_a.py::test_x", TestStatus::Passed),
            o("tests/test_a.py::test_y", TestStatus::Passed),
        ];
        assert_eq!(early_rejection(&failing, &run(0), &all_pass), None);
        // `-x` stopped after one target failed: that one decides already.
        let stopped_early = [o("tests/test_a.py::test_x", TestStatus::Failed)];
        assert_eq!(
            early_rejection(&failing, &run(1), &stopped_early).as_deref(),
            Some("target tests still fail: tests/test_a.py::test_x")
        );
        // No target ran (a renamed node, another rootdir) or one was skipped: the whole suite
        // decides.
        assert_eq!(early_rejection(&failing, &run(4), &[]), None);
        let skipped = [o("tests/test_a.py::test_x", TestStatus::Skipped)];
        assert_eq!(early_rejection(&failing, &run(0), &skipped), None);
        // A stopped run is a failure of the whole suite too.
        let mut stopped = run(0);
        stopped.exit_code = None;
        stopped.signal = Some(9);
        stopped.timed_out = true;
        assert_eq!(
            early_rejection(&failing, &stopped, &[]).as_deref(),
            Some("the test run killed after 10 s timeout")
        );
    }
}
