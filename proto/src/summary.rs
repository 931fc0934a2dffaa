//! One line of plain words for a message (progress lines, `watch`, the ledger) and the names
//! of repair outcomes: the same text wherever a repair is shown.

/// One line saying what a stage's output message means, for progress displays.
pub fn describe(m: &crate::Message) -> String {
    use crate::Message;
    match m {
        Message::Triaged(t) => {
            let top = t.report.suspects.first().map(|s| {
                format!(
                    "{}{}",
                    s.file,
                    s.line.map(|l| format!(":{l}")).unwrap_or_default()
                )
            });
            format!(
                "{} ({}){}",
                if t.report.error_type.is_empty() {
                    "unnamed error"
                } else {
                    &t.report.error_type
                },
                t.report.category.as_str(),
                top.map(|t| format!(", suspect {t}")).unwrap_or_default()
            )
        }
        Message::Decided(d) => format!(
            "{:?} (C_fix {:.3}, C_new {:.3}, p {:.0}%)",
            d.decision.verdict,
            d.decision.c_fix,
            d.decision.c_new,
            d.decision.p_success * 100.0
        )
        .to_lowercase(),
        Message::MreReady(m) if let Some(b) = &m.mre.blocked => {
            if m.mre.sandbox.is_empty() {
                format!("the tests cannot run: {}", b.problem())
            } else {
                format!(
                    "the tests cannot run ({} sandbox): {}",
                    m.mre.sandbox,
                    b.problem()
                )
            }
        }
        Message::MreReady(m) => format!(
            "{} in the {} ({} sandbox), {} failing / {} passing tests",
            if m.mre.reproduced {
                "reproduced"
            } else {
                "NOT reproduced"
            },
            if m.mre.whole_project {
                "whole project"
            } else {
                "minimal example"
            },
            m.mre.sandbox,
            m.mre.failing_tests.len(),
            m.mre.passing_tests.len()
        ),
        Message::FixProposed(f) => format!(
            "attempt {}: {} candidates from {}",
            f.attempt,
            f.candidates.len(),
            f.engine
        ),
        Message::ValidationPassed(v) => {
            let n: usize = v.history.last().map(|a| a.results.len()).unwrap_or(0);
            format!(
                "passed after {n} candidate(s): {} changed lines",
                v.winner.changed_lines
            )
        }
        Message::ValidationFailed(v) => {
            let n: usize = v.history.last().map(|a| a.results.len()).unwrap_or(0);
            format!(
                "{n} candidate(s) failed; {} attempt(s) left",
                v.attempts_left
            )
        }
        Message::RepairCompleted(c) => c.summary.clone(),
        Message::StageProgress(p) => p.summary.clone(),
        other => other.kind().to_string(),
    }
}

/// How an outcome is named in reports, `status` and JSON.
pub fn outcome_label(o: crate::messages::RepairOutcome) -> &'static str {
    use crate::messages::RepairOutcome::*;
    match o {
        Fixed => "fixed",
        NoFix => "no validated fix",
        RebuildRecommended => "rebuild recommended",
        Analyzed => "analyzed",
        Failed => "failed",
        CannotRun => "tests cannot run",
    }
}
