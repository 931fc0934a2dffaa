//! How many sandbox sessions (lanes) an attempt uses, and whether they outlive it.

/// Lanes for an attempt of `candidates` candidates: as configured, at least one, never more
/// than there are candidates to run (at least one: an attempt without any opens no lane).
pub fn lanes_for(configured: usize, candidates: usize) -> usize {
    configured.clamp(1, candidates)
}

/// Whether an attempt's sessions are kept for the repair's next attempt: only a failed attempt
/// with attempts left has a next one.
pub fn keep_for_next_attempt(attempts_left: u32, any_passed: bool) -> bool {
    attempts_left > 0 && !any_passed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_follow_the_setting_within_the_candidates() {
        assert_eq!(lanes_for(4, 10), 4);
        assert_eq!(lanes_for(4, 2), 2);
        assert_eq!(lanes_for(0, 3), 1);
        assert_eq!(lanes_for(1, 1), 1);
    }

    #[test]
    fn only_a_failed_attempt_with_attempts_left_keeps_its_sessions() {
        assert!(keep_for_next_attempt(2, false));
        assert!(!keep_for_next_attempt(0, false));
        assert!(!keep_for_next_attempt(2, true));
    }
}
