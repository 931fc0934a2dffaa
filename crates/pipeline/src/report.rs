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
