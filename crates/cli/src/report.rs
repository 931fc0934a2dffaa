//! What `coval repair --analyze` prints: a human summary, or JSON for machines.

use proto::messages::{Decided, Verdict};

pub fn print_analysis(d: &Decided, json: bool) {
    if json {
        let v = serde_json::json!({
            "repair_id": d.request.repair_id.to_string(),
            "triage": {
                "language": d.triage.language,
                "error_type": d.triage.error_type,
                "message": d.triage.message,
                "category": d.triage.category,
                "failing_tests": d.triage.failing_tests,
                "suspects": d.triage.suspects.iter().map(|s| serde_json::json!({
                    "file": s.file, "line": s.line, "score": s.score, "reason": s.reason,
                })).collect::<Vec<_>>(),
                "frames": d.triage.frames.len(),
                "notes": d.triage.notes,
            },
            "metrics": {
                "D": d.triage.metrics.debt,
                "T": d.triage.metrics.coverage,
                "T_measured": d.triage.metrics.coverage_measured,
                "K": d.triage.metrics.context,
                "S": d.triage.metrics.capability,
                "loc": d.triage.metrics.loc,
                "region_lines": d.triage.metrics.region_lines,
                "module_lines": d.triage.metrics.module_lines,
            },
            "decision": {
                "verdict": d.decision.verdict,
                "c_fix": d.decision.c_fix,
                "c_new": d.decision.c_new,
                "p_success": d.decision.p_success,
                "reasons": d.decision.reasons,
                "overruled": d.decision.overruled,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    let t = &d.triage;
    let m = &t.metrics;
    let name = if t.error_type.is_empty() {
        "unnamed error"
    } else {
        t.error_type.as_str()
    };
    println!("failure   {name} ({}): {}", t.category.as_str(), t.message);
    if t.suspects.is_empty() {
        println!("suspects  none found in the project");
    }
    for (i, s) in t.suspects.iter().take(5).enumerate() {
        let line = s.line.map(|l| format!(":{l}")).unwrap_or_default();
        println!(
            "{}  {}{line}  {:.2}  {}",
            if i == 0 { "suspects" } else { "        " },
            s.file,
            s.score,
            s.reason
        );
    }
    println!(
        "metrics   D={:.2} T={:.2}{} K={:.2} S={:.2}",
        m.debt,
        m.coverage,
        if m.coverage_measured {
            ""
        } else {
            " (estimated)"
        },
        m.context,
        m.capability
    );
    println!(
        "costs     C_fix={:.3} C_new={:.3}  p(success)={:.0}%",
        d.decision.c_fix,
        d.decision.c_new,
        d.decision.p_success * 100.0
    );
    println!(
        "verdict   {}{}",
        match d.decision.verdict {
            Verdict::Repair => "repair",
            Verdict::Rebuild => "rebuild",
        },
        d.decision
            .overruled
            .as_ref()
            .map(|why| format!(" (the cost model recommends rebuild; {why})"))
            .unwrap_or_default()
    );
    println!();
    print!("{}", integrate::report::decision_md(t, &d.decision));
}

/// The end of a repair: the report's path and outcome, or the report itself with `--json`.
/// Returns the exit code (`vocab::exit`: 0 fixed or analysed, 1 otherwise).
pub fn print_completion(
    c: &proto::messages::RepairCompleted,
    workspace: &std::path::Path,
    json: bool,
    iteration_here: bool,
) -> u8 {
    use proto::messages::RepairOutcome;
    if json {
        println!("{}", c.report.as_deref().unwrap_or("{}"));
    } else {
        let dir = workspace.join(c.report_dir.as_deref().unwrap_or(""));
        let outcome = crate::repair_outcome(c.outcome);
        println!("{outcome}: {}", c.summary);
        match c.new_iteration {
            Some(i) if iteration_here => println!(
                "new iteration {i}: {}",
                vocab::Workspace::new(workspace).iteration_dir(i).display()
            ),
            Some(i) => println!("new iteration {i}, in the integration worker's workspace"),
            None => {}
        }
        if c.outcome == RepairOutcome::Fixed {
            println!("patch   {}", dir.join("final.patch").display());
        }
        println!("report  {}", dir.join("repair_report.md").display());
    }
    match c.outcome {
        RepairOutcome::Fixed | RepairOutcome::Analyzed => crate::exit::DONE,
        _ => crate::exit::NOT_DONE,
    }
}
