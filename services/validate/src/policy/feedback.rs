//! What a failed attempt tells the fix stage for its next one.

use proto::messages::TestStatus;

use super::Tried;

/// The failing output fed back to the next attempt, capped.
pub const FEEDBACK_CAP: usize = 6000;

/// The output of the candidate that came closest (it applied, fewest tests not passing), its
/// last [`FEEDBACK_CAP`] bytes; else the reasons the first candidates failed; else that there
/// were none.
pub fn feedback(tried: &[Tried]) -> String {
    tried
        .iter()
        .filter(|t| t.diff.is_some())
        .min_by_key(|t| {
            t.result
                .tests
                .iter()
                .filter(|o| o.status != TestStatus::Passed)
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
        })
}

/// The last `n` bytes of `s` (on a character boundary), saying how much was cut: a test run's
/// verdict and summary come at its end.
pub fn cap(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {} earlier bytes cut …]\n{}", start, &s[start..])
}

#[cfg(test)]
mod tests {
    use proto::messages::{CandidateResult, TestOutcome};

    use super::*;

    fn tried(applied: bool, statuses: &[TestStatus], reason: &str, output: &str) -> Tried {
        Tried {
            result: CandidateResult {
                candidate_id: "c".into(),
                passed: false,
                tests: statuses
                    .iter()
                    .map(|s| TestOutcome {
                        name: "t".into(),
                        status: *s,
                    })
                    .collect(),
                regressions: vec![],
                changed_lines: 0,
                reason: Some(reason.into()),
                duration_ms: 0,
                path: String::new(),
            },
            diff: applied.then(String::new),
            output: output.into(),
        }
    }

    #[test]
    fn the_closest_applied_candidate_speaks() {
        use TestStatus::*;
        let t = [
            tried(false, &[], "does not parse", "-"),
            tried(true, &[Failed, Failed, Passed], "two fail", "two"),
            tried(true, &[Failed, Skipped], "two not passed", "skipped"),
            tried(true, &[Passed, Error], "one errors", "one"),
            tried(true, &[Failed], "one fails", "later"),
        ];
        // Fewest tests not passing; the first of equals.
        assert_eq!(feedback(&t), "one");
        assert_eq!(feedback(&t[..3]), "two");
    }

    #[test]
    fn without_an_applied_candidate_the_reasons_speak() {
        assert_eq!(feedback(&[]), "the engine proposed no candidates");
        let t: Vec<Tried> = (0..7)
            .map(|i| tried(false, &[], &format!("reason {i}"), ""))
            .collect();
        assert_eq!(
            feedback(&t),
            "reason 0\nreason 1\nreason 2\nreason 3\nreason 4"
        );
    }

    #[test]
    fn cap_keeps_the_end_on_a_char_boundary() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("0123456789", 4), "[… 6 earlier bytes cut …]\n6789");
        // "é" is two bytes: the cut moves forward past it rather than split it.
        assert_eq!(cap("aéb", 2), "[… 3 earlier bytes cut …]\nb");
        let long = "x".repeat(FEEDBACK_CAP + 10);
        assert!(feedback(&[tried(true, &[], "", &long)]).ends_with(&"x".repeat(FEEDBACK_CAP)));
    }
}
