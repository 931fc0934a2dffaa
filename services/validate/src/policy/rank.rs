//! Which candidates start, in what order, when starting stops, and which passing one wins.

use proto::messages::Candidate;

use super::Tried;

/// The passing candidate that wins, the edit a person would make: fewest regressions, then
/// one that touches a suspected line, then the smallest syntax-tree edit, then fewest changed
/// lines, then the engine's own rank (the order of `tried`, which is `candidates`' order).
/// With the words that say why it ranks first.
pub fn winner<'t>(tried: &'t [Tried], candidates: &[Candidate]) -> Option<(&'t Tried, String)> {
    let meta = |i: usize| candidates.get(i);
    let mut passing: Vec<(usize, &Tried)> = tried
        .iter()
        .enumerate()
        .filter(|(_, t)| t.result.passed)
        .collect();
    passing.sort_by_key(|(i, t)| {
        (
            t.result.regressions.len(),
            !meta(*i).is_some_and(|c| c.at_suspect),
            meta(*i).and_then(|c| c.edit_tokens).unwrap_or(u32::MAX),
            t.result.changed_lines,
            *i,
        )
    });
    let (i, best) = *passing.first()?;
    let c = meta(i);
    let mut why = vec![format!(
        "it passes every test with {} regression{}",
        best.result.regressions.len(),
        if best.result.regressions.len() == 1 {
            ""
        } else {
            "s"
        }
    )];
    if c.is_some_and(|c| c.at_suspect) {
        why.push("it changes a line triage suspected".into());
    }
    if let Some(n) = c.and_then(|c| c.edit_tokens) {
        why.push(format!("its syntax-tree edit is {n} leaves"));
    }
    why.push(format!(
        "{} changed line{}",
        best.result.changed_lines,
        if best.result.changed_lines == 1 {
            ""
        } else {
            "s"
        }
    ));
    let others = passing.len() - 1;
    let tail = if others == 0 {
        format!(
            "the only passing candidate of {} tried (search rank {})",
            tried.len(),
            i + 1
        )
    } else {
        format!(
            "first of {} passing candidates by that order (search rank {})",
            passing.len(),
            i + 1
        )
    };
    Some((best, format!("{}; {tail}", why.join(", "))))
}

/// What to do with a free lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start the candidate of this rank on it.
    Start(usize),
    /// The attempt's time is up: no candidate starts any more.
    BudgetSpent,
    /// No candidate is left to start (all started, or one passed).
    NoMore,
}

/// The order candidates start in: rank order, one per free lane. After a pass (unless every
/// candidate is wanted) or once the attempt's budget is spent no new one starts; those already
/// running finish, so the ranking sees every candidate that was tried.
#[derive(Debug, Clone)]
pub struct Schedule {
    total: usize,
    collect_all: bool,
    next: usize,
    stopped: bool,
}

impl Schedule {
    pub fn new(total: usize, collect_all: bool) -> Schedule {
        Schedule {
            total,
            collect_all,
            next: 0,
            stopped: false,
        }
    }

    /// What a free lane does now; `past_deadline`: the attempt's budget is spent.
    pub fn next(&mut self, past_deadline: bool) -> Next {
        if self.stopped || self.next >= self.total {
            return Next::NoMore;
        }
        if past_deadline {
            self.stopped = true;
            return Next::BudgetSpent;
        }
        self.next += 1;
        Next::Start(self.next - 1)
    }

    /// A started candidate finished; a pass stops the starting unless every one is wanted.
    pub fn finished(&mut self, passed: bool) {
        if passed && !self.collect_all {
            self.stopped = true;
        }
    }

    /// How many candidates have started.
    pub fn started(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use proto::messages::CandidateResult;

    use super::*;

    fn tried(id: &str, passed: bool, regressions: usize, changed_lines: u32) -> Tried {
        Tried {
            result: CandidateResult {
                candidate_id: id.into(),
                passed,
                tests: vec![],
                regressions: vec!["r".into(); regressions],
                changed_lines,
                reason: None,
                duration_ms: 0,
                path: String::new(),
            },
            diff: Some(String::new()),
            output: String::new(),
        }
    }

    fn winner_id(t: &[Tried]) -> Option<&str> {
        winner(t, &[]).map(|(t, _)| t.result.candidate_id.as_str())
    }

    fn candidate(at_suspect: bool, edit_tokens: u32) -> Candidate {
        Candidate {
            id: String::new(),
            source: proto::messages::CandidateSource::Search {
                operator: "x".into(),
            },
            description: String::new(),
            diff: String::new(),
            edit_tokens: Some(edit_tokens),
            at_suspect,
        }
    }

    #[test]
    fn the_smallest_edit_at_a_suspected_line_wins_and_says_why() {
        let t = [
            tried("a", true, 0, 1),
            tried("b", true, 0, 1),
            tried("c", true, 0, 1),
        ];
        let c = [candidate(false, 1), candidate(true, 6), candidate(true, 2)];
        let (w, why) = winner(&t, &c).unwrap();
        assert_eq!(w.result.candidate_id, "c");
        assert!(
            why.contains("suspected") && why.contains("2 leaves"),
            "{why}"
        );
        assert!(
            why.contains("first of 3 passing") && why.contains("rank 3"),
            "{why}"
        );
    }

    #[test]
    fn fewest_regressions_then_fewest_changed_lines_then_rank_wins() {
        assert_eq!(winner_id(&[]), None);
        assert_eq!(winner_id(&[tried("a", false, 0, 1)]), None);
        let t = [
            tried("a", false, 0, 1),
            tried("b", true, 1, 2),
            tried("c", true, 0, 9),
            tried("d", true, 0, 3),
            tried("e", true, 0, 3),
        ];
        assert_eq!(winner_id(&t), Some("d"));
        assert_eq!(winner_id(&t[..3]), Some("c"));
        assert_eq!(winner_id(&t[..2]), Some("b"));
    }

    #[test]
    fn candidates_start_in_rank_order_until_one_passes() {
        let mut s = Schedule::new(4, false);
        assert_eq!(s.next(false), Next::Start(0));
        assert_eq!(s.next(false), Next::Start(1));
        s.finished(false);
        assert_eq!(s.next(false), Next::Start(2));
        s.finished(true);
        assert_eq!(s.next(false), Next::NoMore);
        // Those already running still finish; nothing starts again.
        s.finished(false);
        assert_eq!(s.next(false), Next::NoMore);
        assert_eq!(s.started(), 3);
    }

    #[test]
    fn collect_all_starts_every_candidate() {
        let mut s = Schedule::new(2, true);
        assert_eq!(s.next(false), Next::Start(0));
        s.finished(true);
        assert_eq!(s.next(false), Next::Start(1));
        s.finished(true);
        assert_eq!(s.next(false), Next::NoMore);
    }

    #[test]
    fn a_spent_budget_stops_starting_once_and_for_good() {
        let mut s = Schedule::new(3, true);
        assert_eq!(s.next(false), Next::Start(0));
        assert_eq!(s.next(true), Next::BudgetSpent);
        assert_eq!(s.next(false), Next::NoMore);
        assert_eq!(s.started(), 1);
        // With nothing left to start the budget is not even looked at.
        let mut s = Schedule::new(1, true);
        assert_eq!(s.next(false), Next::Start(0));
        assert_eq!(s.next(true), Next::NoMore);
    }
}
