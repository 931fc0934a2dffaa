//! decision.md: the triage findings and the decision, every number in plain words.

use std::fmt::Write;

use proto::messages::{Decision, TriageReport, Verdict};

pub fn decision_md(report: &TriageReport, d: &Decision) -> String {
    let mut s = String::new();
    let verdict = match d.verdict {
        Verdict::Repair => "repair",
        Verdict::Rebuild => "rebuild",
    };
    let _ = writeln!(s, "# Decision: {verdict}\n");
    let _ = writeln!(
        s,
        "The failure is a **{}** problem: `{}`{}.\n",
        report.category.as_str(),
        report.error_type,
        if report.message.is_empty() {
            String::new()
        } else {
            format!(": {}", report.message)
        }
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
