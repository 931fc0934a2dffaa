//! Reports shared by the stages and the command line: decision.md (the triage findings and
//! the decision, every number in plain words).

use std::fmt::Write;

use proto::messages::{Decision, TriageReport, Verdict};

pub fn decision_md(report: &TriageReport, d: &Decision) -> String {
    let mut s = String::new();
    let verdict = match d.verdict {
        Verdict::Repair => "repair",
        Verdict::Rebuild => "rebuild",
    };
    let _ = writeln!(s, "# Decision: {verdict}\n");
    let what = match (report.error_type.is_empty(), report.message.is_empty()) {
        (true, true) => "an error the log does not name".to_owned(),
        (true, false) => format!("\"{}\"", report.message),
        (false, true) => format!("`{}`", report.error_type),
        (false, false) => format!("`{}`: {}", report.error_type, report.message),
    };
    let _ = writeln!(
        s,
        "The failure ({} category) is {what}.\n",
        report.category.as_str()
    );
    if report.suspects.is_empty() {
        let _ = writeln!(s, "No file of the project could be pointed at.\n");
    } else {
        let _ = writeln!(s, "## Where\n");
        for x in report.suspects.iter().take(10) {
            let line = x.line.map(|l| format!(":{l}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "- `{}{line}` (suspicion {:.2}): {}",
                x.file, x.score, x.reason
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Why\n");
    for r in &d.reasons {
        let _ = writeln!(s, "- {r}");
    }
    for n in &report.notes {
        let _ = writeln!(s, "- Note: {n}");
    }
    s
}

/// One line saying what a stage's output message means, for progress displays.
pub fn describe(m: &proto::Message) -> String {
    use proto::Message;
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
pub fn outcome_label(o: proto::messages::RepairOutcome) -> &'static str {
    use proto::messages::RepairOutcome::*;
    match o {
        Fixed => "fixed",
        NoFix => "no validated fix",
        RebuildRecommended => "rebuild recommended",
        Analyzed => "analyzed",
        Failed => "failed",
    }
}
