//! How long a candidate's test runs may take.

use std::time::Duration;

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

/// The timeout of a candidate's runs when the baseline run was cut by its limit (a test
/// loops): its duration is the limit, not what the tests take, so the timeout follows the runs
/// that ended (the tests that ended in the baseline, run alone, and this attempt's candidates):
/// twice the slowest plus a second, within the limit; before any has ended, at most
/// [`LOOP_PROBE`]. Twice, not the four times of [`candidate_timeout`]: here most candidates
/// loop (only a fix ends the loop), so each one's allowance is paid in full, and those runs
/// are already of the same kind as the candidates'.
pub fn looping_baseline_timeout(full: Duration, slowest_ended_ms: u64) -> Duration {
    if slowest_ended_ms == 0 {
        return full.min(LOOP_PROBE);
    }
    (Duration::from_millis(slowest_ended_ms.saturating_mul(2)) + Duration::from_secs(1)).min(full)
}

/// How long a candidate may run when the baseline looped and no candidate's run has ended yet.
pub const LOOP_PROBE: Duration = Duration::from_secs(10);

/// Candidates that loop must not take most of an attempt: once the runs stopped by their
/// timeout have used a quarter of the attempt's budget, every further run gets at most one
/// and a half times the slowest run that ended, and at least a second (a mutant that loops
/// forever then costs about what a run that ends takes; one that merely runs slowly still
/// finishes within the scaled timeout before that, and a compiled language's candidates,
/// whose runs build first, are not all cut).
pub fn loop_capped(
    timeout: Duration,
    looped_ms: u64,
    budget: Duration,
    slowest_ended_ms: u64,
) -> Duration {
    if Duration::from_millis(looped_ms).saturating_mul(4) >= budget {
        let cap = Duration::from_millis(slowest_ended_ms.saturating_mul(3) / 2)
            .max(Duration::from_secs(1));
        timeout.min(cap)
    } else {
        timeout
    }
}

/// The time earlier attempts of the repair lost to runs stopped by their timeout: loops
/// count against every attempt, so once they have cost a quarter of a budget, a new attempt's
/// candidates are capped from its start instead of paying the probes again.
pub fn looped_before(history: &[proto::messages::AttemptRecord]) -> u64 {
    history
        .iter()
        .flat_map(|a| &a.results)
        .filter(|r| r.reason.as_deref().is_some_and(|x| x.ends_with(" timeout")))
        .map(|r| r.duration_ms)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_timeout_scales_with_the_baseline_within_the_limit() {
        assert_eq!(candidate_timeout(300, 0), Duration::from_secs(300));
        assert_eq!(candidate_timeout(300, 500), Duration::from_secs(3));
        assert_eq!(candidate_timeout(300, 60_000), Duration::from_secs(241));
        assert_eq!(candidate_timeout(30, 60_000), Duration::from_secs(30));
        assert_eq!(candidate_timeout(0, 100), Duration::from_secs(1));
    }

    #[test]
    fn loops_are_capped_after_a_quarter_of_the_budget() {
        let budget = Duration::from_secs(300);
        let t = Duration::from_secs(5);
        assert_eq!(loop_capped(t, 0, budget, 0), t);
        assert_eq!(loop_capped(t, 74_999, budget, 0), t);
        assert_eq!(loop_capped(t, 75_000, budget, 0), Duration::from_secs(1));
        let short = Duration::from_millis(400);
        assert_eq!(loop_capped(short, 100_000, budget, 0), short);
        // Runs that build first (Go) take seconds: the cap follows the slowest that ended.
        assert_eq!(
            loop_capped(t, 75_000, budget, 2_000),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_looping_baseline_scales_candidates_to_the_runs_that_end() {
        let full = Duration::from_secs(300);
        // Nothing ended yet: a probe, never the sandbox's whole limit.
        assert_eq!(looping_baseline_timeout(full, 0), LOOP_PROBE);
        assert_eq!(
            looping_baseline_timeout(Duration::from_secs(3), 0),
            Duration::from_secs(3)
        );
        // Then twice the slowest run that ended, plus a second.
        assert_eq!(
            looping_baseline_timeout(full, 1_500),
            Duration::from_secs(4)
        );
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
    fn earlier_attempts_loops_count_against_the_next_one() {
        let result = |reason: &str, ms: u64| proto::messages::CandidateResult {
            candidate_id: "c".into(),
            passed: false,
            tests: vec![],
            regressions: vec![],
            changed_lines: 1,
            reason: Some(reason.into()),
            duration_ms: ms,
            path: String::new(),
        };
        let attempt = proto::messages::AttemptRecord {
            attempt: 1,
            engine: proto::messages::Engine::Search,
            candidates: vec![],
            results: vec![
                result("the test run killed after 10 s timeout", 10_400),
                result("target tests still fail: t", 900),
                result("the test run killed after 10 s timeout", 10_300),
            ],
            usage: Default::default(),
            validation_ms: 0,
            lanes: 0,
            paths: Default::default(),
        };
        assert_eq!(looped_before(&[attempt]), 20_700);
        assert_eq!(looped_before(&[]), 0);
    }
}
