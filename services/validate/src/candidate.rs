//! Trying one candidate: apply it to a fresh copy of the project, run the baseline's failing
//! tests first when the attempt does, then the whole suite; the policies decide, this runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use patch::Applied;
use proto::messages::{Candidate, CandidateResult, FixProposed, TestOutcome};
use sandbox::{ProjectKind, Session, WarmStats};

use crate::handler::ValidateStage;
use crate::policy::Tried;
use crate::policy::failing_first::early_rejection;
use crate::policy::timeouts::{
    candidate_timeout, first_run_timeout, loop_capped, looping_baseline_timeout,
};
use crate::policy::verdict::{SuiteVerdict, suite_verdict, test_edit_rejection, wider_verdict};

/// What every candidate of one attempt shares.
pub struct Trial<'a> {
    pub stage: &'a ValidateStage,
    pub kind: &'a ProjectKind,
    pub root: &'a Path,
    pub work: &'a Path,
    pub f: &'a FixProposed,
    /// The failing-tests-first command, when this attempt uses one (worked out once: for Node
    /// it reads the project's test files).
    pub first: Option<Vec<String>>,
    /// The slowest failing-tests-first run of this attempt that finished in time, in ms.
    pub slowest_first_ms: AtomicU64,
    /// The slowest whole-suite run of this attempt that ended in time, in ms.
    pub slowest_ended_ms: AtomicU64,
    /// Time this attempt's runs stopped by their timeout took, in ms (loops are capped).
    pub looped_ms: AtomicU64,
    /// A copy of the project as candidates are made from it (pytest failing-first runs only):
    /// the sandbox's warm server may run a candidate in a pytest session collected on it.
    pub base: Option<PathBuf>,
    /// Candidates from this rank on use `base`
    /// ([`crate::policy::failing_first::collect_from`]).
    pub collect_from: usize,
    /// Test runs started for this attempt's candidates (for the report's run paths).
    pub runs: AtomicU64,
}

/// A candidate that failed before a test run decided.
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
            path: String::new(),
        },
        diff: None,
        output: String::new(),
    }
}

/// Tries candidate `c` of rank `n` in `session`.
pub async fn try_one(t: &Trial<'_>, session: &mut Session, c: &Candidate, n: usize) -> Tried {
    let started = Instant::now();
    let applied = match apply(t, c, n) {
        Ok(a) => a,
        Err(reason) => return failed(c, reason, started),
    };
    tracing::debug!(candidate = %c.id, applied_secs = started.elapsed().as_secs_f64(), "candidate applied");
    let mre = &t.f.mre;
    // A looping baseline's measure is the tests that ended in it, run alone: a run that ends.
    let measured = if mre.baseline_timed_out {
        mre.baseline_ms
    } else {
        0
    };
    let ended = t
        .slowest_ended_ms
        .load(Ordering::Relaxed)
        .max(t.slowest_first_ms.load(Ordering::Relaxed))
        .max(measured);
    let limit = t.stage.sandbox.timeout_secs;
    let scaled = if t.f.mre.baseline_timed_out {
        looping_baseline_timeout(Duration::from_secs(limit.max(1)), ended)
    } else {
        candidate_timeout(limit, mre.baseline_ms)
    };
    let timeout = loop_capped(
        scaled,
        t.looped_ms.load(Ordering::Relaxed),
        t.stage.settings.attempt_budget,
        ended,
    );
    let mut paths = vec![];
    if let Some(first) = &t.first {
        let (rejected, path) = run_failing_first(t, session, c, n, first, &applied, timeout).await;
        paths.extend(path.map(|p| format!("first: {p}")));
        if let Some(mut tried) = rejected {
            let _ = std::fs::remove_dir_all(&applied.copy);
            tried.result.duration_ms = started.elapsed().as_millis() as u64;
            tried.result.path = paths.join(", ");
            return tried;
        }
    }
    let mut tried = run_suite(t, session, c, applied, timeout, started, &mut paths).await;
    tried.result.path = paths.join(", ");
    tried
}

/// How `session` served its last run, `before` being its warm statistics before that run.
fn served(session: &Session, before: &WarmStats) -> &'static str {
    let now = session.warm_stats();
    if now.collected > before.collected {
        "collected session"
    } else if now.served > before.served {
        "warm server"
    } else {
        "fresh process"
    }
}

/// A candidate applied to its own copy of the project.
struct AppliedCopy {
    copy: PathBuf,
    applied: Applied,
}

/// Parses `c`'s change, checks what it edits and applies it to a fresh copy of the project
/// (`cand-<n>` in the work dir); else why it cannot be tried.
fn apply(t: &Trial<'_>, c: &Candidate, n: usize) -> Result<AppliedCopy, String> {
    let limits = &t.stage.settings.patch_limits;
    if c.diff.trim().is_empty() {
        return Err(c.description.clone());
    }
    let edits =
        patch::parse(&c.diff, limits).map_err(|e| format!("the change does not parse: {e}"))?;
    if let Some(reason) = test_edit_rejection(&edits, t.stage.settings.allow_test_edits) {
        return Err(reason);
    }
    let copy = t.work.join(format!("cand-{n}"));
    let _ = std::fs::remove_dir_all(&copy);
    match patch::apply_to_copy(t.root, &copy, &edits, limits) {
        Ok(applied) => Ok(AppliedCopy { copy, applied }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&copy);
            Err(format!("the change does not apply: {e}"))
        }
    }
}

/// Runs the baseline's failing tests alone on the applied candidate; `Some` when that run
/// already rejects it (its duration is the caller's to set), and how the run was served.
async fn run_failing_first(
    t: &Trial<'_>,
    session: &mut Session,
    c: &Candidate,
    n: usize,
    first: &[String],
    AppliedCopy { copy, applied }: &AppliedCopy,
    timeout: Duration,
) -> (Option<Tried>, Option<&'static str>) {
    let slowest = t.slowest_first_ms.load(Ordering::Relaxed);
    let first_timeout = first_run_timeout(timeout, t.f.mre.baseline_ms, slowest);
    let changed: Vec<String> = applied.files.iter().map(|a| a.path.clone()).collect();
    t.runs.fetch_add(1, Ordering::Relaxed);
    let before = session.warm_stats().clone();
    let run = match t.base.as_ref().filter(|_| n >= t.collect_from) {
        Some(base) => {
            let changed = sandbox::Changed {
                base,
                changed: &changed,
            };
            session
                .run_changed(copy, first, first_timeout, changed)
                .await
        }
        None => session.run(copy, first, first_timeout).await,
    };
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            tracing::debug!(candidate = %c.id, error = %e, "the failing tests alone did not run; running the whole suite");
            return (None, None);
        }
    };
    let path = Some(served(session, &before));
    if !run.timed_out {
        t.slowest_first_ms
            .fetch_max(run.duration.as_millis() as u64, Ordering::Relaxed);
    } else {
        t.looped_ms
            .fetch_add(run.duration.as_millis() as u64, Ordering::Relaxed);
    }
    let tests = sandbox::parse_outcomes(t.kind, &run);
    let Some(reason) = early_rejection(&t.f.mre.failing_tests, &run, &tests) else {
        return (None, path);
    };
    let tried = Tried {
        result: CandidateResult {
            candidate_id: c.id.clone(),
            passed: false,
            tests,
            regressions: vec![],
            changed_lines: applied.changed_lines,
            reason: Some(reason),
            duration_ms: 0,
            path: String::new(),
        },
        diff: Some(applied.diff.clone()),
        output: format!("{}{}", run.stdout, run.stderr),
    };
    (Some(tried), path)
}

/// Runs the whole suite on the applied candidate (its copy removed after), whose run decides.
async fn run_suite(
    t: &Trial<'_>,
    session: &mut Session,
    c: &Candidate,
    AppliedCopy { copy, applied }: AppliedCopy,
    timeout: Duration,
    started: Instant,
    paths: &mut Vec<String>,
) -> Tried {
    t.runs.fetch_add(1, Ordering::Relaxed);
    let before = session.warm_stats().clone();
    // `go test` without its vet step; a candidate that passes runs again as written.
    let fast = crate::policy::vet::without_vet(&t.kind.test_cmd);
    let run = session
        .run(&copy, fast.as_ref().unwrap_or(&t.kind.test_cmd), timeout)
        .await;
    if run.is_ok() {
        let what = if fast.is_some() {
            "suite without vet"
        } else {
            "suite"
        };
        paths.push(format!("{what}: {}", served(session, &before)));
    }
    if let Ok(r) = &run {
        let ms = r.duration.as_millis() as u64;
        if r.timed_out {
            t.looped_ms.fetch_add(ms, Ordering::Relaxed);
        } else {
            t.slowest_ended_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }
    let run = match run {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&copy);
            return failed(c, format!("the sandbox failed: {e}"), started);
        }
    };
    let mut run = run;
    let mut tests = sandbox::parse_outcomes(t.kind, &run);
    let mre = &t.f.mre;
    let mut verdict = suite_verdict(&run, &tests, &mre.passing_tests, &mre.failing_tests);
    if verdict.passed && fast.is_some() {
        // The command as written (vet included) decides.
        t.runs.fetch_add(1, Ordering::Relaxed);
        let before = session.warm_stats().clone();
        match session.run(&copy, &t.kind.test_cmd, timeout).await {
            Ok(r) => {
                paths.push(format!("suite: {}", served(session, &before)));
                tests = sandbox::parse_outcomes(t.kind, &r);
                verdict = suite_verdict(&r, &tests, &mre.passing_tests, &mre.failing_tests);
                run = r;
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&copy);
                return failed(c, format!("the sandbox failed: {e}"), started);
            }
        }
    }
    if verdict.passed {
        // The command was narrow: the tests around it must still pass too.
        let (wider, around) = run_wider(t, session, &copy, timeout, paths).await;
        tests.extend(around);
        if let Some(wider) = wider {
            verdict = wider;
        }
    }
    let _ = std::fs::remove_dir_all(&copy);
    Tried {
        result: CandidateResult {
            candidate_id: c.id.clone(),
            passed: verdict.passed,
            tests,
            regressions: verdict.regressions,
            changed_lines: applied.changed_lines,
            reason: verdict.reason,
            duration_ms: started.elapsed().as_millis() as u64,
            path: String::new(),
        },
        diff: Some(applied.diff),
        output: format!("{}{}", run.stdout, run.stderr),
    }
}

/// Runs the commands around a narrow test command ([`sandbox::widen`], as the MRE ran them
/// for the baseline) on a candidate that passed it, narrowest first, until one rejects it (a
/// test that passed before fails now, or the run was stopped): that verdict, if any, and the
/// outcomes of every run.
async fn run_wider(
    t: &Trial<'_>,
    session: &mut Session,
    copy: &Path,
    timeout: Duration,
    paths: &mut Vec<String>,
) -> (Option<SuiteVerdict>, Vec<TestOutcome>) {
    let mre = &t.f.mre;
    let mut outcomes = vec![];
    for level in &mre.wider {
        t.runs.fetch_add(1, Ordering::Relaxed);
        let before = session.warm_stats().clone();
        let run = match session.run(copy, level, timeout).await {
            Ok(r) => {
                paths.push(format!("around: {}", served(session, &before)));
                r
            }
            Err(e) => {
                let reason = format!("the tests around the command could not run: {e}");
                let v = SuiteVerdict {
                    passed: false,
                    regressions: vec![],
                    reason: Some(reason),
                };
                return (Some(v), outcomes);
            }
        };
        let tests = sandbox::parse_outcomes(t.kind, &run);
        let v = wider_verdict(&run, &tests, &mre.passing_tests);
        outcomes.extend(tests);
        if !v.passed {
            return (Some(v), outcomes);
        }
    }
    (None, outcomes)
}
