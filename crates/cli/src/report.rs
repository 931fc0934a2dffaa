//! What `coval repair --analyze` prints: a human summary, or JSON for machines.

use proto::messages::{Decided, Verdict};

pub fn print_analysis(d: &Decided, json: bool) {
    use integrate::report::{FRAMES_SHOWN, frame_line, frames_json};
    if json {
        let (innermost, frames) = frames_json(&d.triage);
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
                "innermost_project_frame": innermost,
                "frames": frames,
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
    match &t.innermost {
        Some(f) if f.resolved.is_some() => println!("where     {}", frame_line(f)),
        Some(f) => println!("where     {} (not in the source directory)", frame_line(f)),
        None => println!("where     the log names no project code"),
    }
    for (i, f) in t.frames.iter().take(FRAMES_SHOWN).enumerate() {
        println!(
            "{}  {}",
            if i == 0 { "frames  " } else { "        " },
            frame_line(f)
        );
    }
    if t.frames.len() > FRAMES_SHOWN {
        println!("          … {} more", t.frames.len() - FRAMES_SHOWN);
    }
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

/// The end of a repair: the report's path and outcome, and what to do next; or the report
/// itself with `--json`. `applying`: `--apply` follows (and says what it did). Returns the
/// exit code ([`vocab::exit::of_repair`]).
pub fn print_completion(
    c: &proto::messages::RepairCompleted,
    workspace: &std::path::Path,
    json: bool,
    iteration_here: bool,
    applying: bool,
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
        if let Some(b) = &c.blocked {
            println!("to run them: {}", b.hint);
            println!("the run ended with:\n{}", indent(&b.output_tail));
        }
        println!("report  {}", dir.join("repair_report.md").display());
        if let Some(next) = next_step(c.outcome, &dir, applying) {
            println!("next    {next}");
        }
    }
    vocab::exit::of_repair(c)
}

/// What a person does after a repair ended with `outcome` (its report in `dir`); `None` when
/// the lines above say it already (`--apply` follows; the tests cannot run: "to run them").
fn next_step(
    outcome: proto::messages::RepairOutcome,
    dir: &std::path::Path,
    applying: bool,
) -> Option<String> {
    use proto::messages::RepairOutcome;
    match outcome {
        RepairOutcome::Fixed if applying => None,
        RepairOutcome::Fixed => Some(format!(
            "review the patch, then apply it: `git apply {}` in the project (or repair with --apply)",
            dir.join("final.patch").display()
        )),
        RepairOutcome::NoFix => Some(
            "read the report's failing output; then try more attempts (--max-attempts N), a model (--engine llm), or a test command that shows the failure (--test-cmd)".into(),
        ),
        RepairOutcome::RebuildRecommended => Some(format!(
            "read {}: rewriting the module is expected to cost less than repairing it",
            dir.join("decision.md").display()
        )),
        RepairOutcome::Failed => Some("read the report for where it stopped".into()),
        RepairOutcome::Analyzed | RepairOutcome::CannotRun => None,
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::messages::RepairOutcome;

    #[test]
    fn every_outcome_says_what_to_do_next_unless_the_lines_above_do() {
        let dir = std::path::Path::new(".coval/repairs/repair-x");
        let fixed = next_step(RepairOutcome::Fixed, dir, false).unwrap();
        assert!(
            fixed.contains("git apply .coval/repairs/repair-x/final.patch")
                && fixed.contains("--apply"),
            "{fixed}"
        );
        assert_eq!(next_step(RepairOutcome::Fixed, dir, true), None);
        assert!(
            next_step(RepairOutcome::NoFix, dir, false)
                .unwrap()
                .contains("--max-attempts")
        );
        assert!(
            next_step(RepairOutcome::RebuildRecommended, dir, false)
                .unwrap()
                .contains("decision.md")
        );
        assert_eq!(next_step(RepairOutcome::CannotRun, dir, false), None);
    }
}

/// The time each stage took, as its progress events said (one entry per handled message:
/// the fix and validation stages once per attempt), added by the command line that watched
/// the repair to `report.json` (`stages`) and `repair_report.md` ("Time per stage").
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StageTimes {
    pub entries: Vec<(proto::Stage, u64)>,
}

impl StageTimes {
    /// A stage's final event (not an interim one) adds its time.
    pub fn add(&mut self, p: &proto::messages::StageProgress) {
        if p.interim.is_none() {
            self.entries.push((p.stage, p.elapsed_ms));
        }
    }

    /// The entries as report.json's `stages`: `[{"stage": "triage", "ms": 1240}, ...]`.
    pub fn json(&self) -> serde_json::Value {
        self.entries
            .iter()
            .map(|(s, ms)| serde_json::json!({"stage": s.to_string(), "ms": ms}))
            .collect()
    }

    /// The markdown section: one row per entry, then the total per stage.
    pub fn markdown(&self) -> String {
        let mut out = String::from("\n## Time per stage\n\n| stage | seconds |\n|---|---|\n");
        for (s, ms) in &self.entries {
            out.push_str(&format!("| {s} | {:.1} |\n", *ms as f64 / 1000.0));
        }
        let total: u64 = self.entries.iter().map(|(_, ms)| ms).sum();
        out.push_str(&format!("| all stages | {:.1} |\n", total as f64 / 1000.0));
        out
    }

    /// Adds the times to the completion's report and to the report files in `workspace`
    /// (each rewritten whole, by rename). A report that cannot be read is left as it is.
    pub fn record(&self, c: &mut proto::messages::RepairCompleted, workspace: &std::path::Path) {
        if self.entries.is_empty() {
            return;
        }
        let Some(mut report) = c
            .report
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        else {
            return;
        };
        if let Some(o) = report.as_object_mut() {
            o.insert("stages".into(), self.json());
        }
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        c.report = Some(text.clone());
        let Some(dir) = c.report_dir.as_deref().map(|d| workspace.join(d)) else {
            return;
        };
        let write = |name: &str, body: &str| {
            let tmp = dir.join(format!(".{name}.tmp"));
            let _ = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, dir.join(name)));
        };
        if dir.join("report.json").exists() {
            write("report.json", &text);
        }
        if let Ok(md) = std::fs::read_to_string(dir.join("repair_report.md")) {
            write("repair_report.md", &format!("{md}{}", self.markdown()));
        }
    }
}

#[cfg(test)]
mod stage_times_tests {
    use super::StageTimes;
    use proto::Stage;
    use proto::messages::StageProgress;

    fn ev(stage: Stage, ms: u64, interim: Option<(u32, u32)>) -> StageProgress {
        StageProgress {
            repair_id: proto::ids::RepairId::new(),
            stage,
            summary: String::new(),
            elapsed_ms: ms,
            at_ms: 0,
            worker: None,
            interim,
        }
    }

    #[test]
    fn each_stage_final_event_is_a_row_and_interim_ones_are_not() {
        let mut t = StageTimes::default();
        t.add(&ev(Stage::Triage, 1_500, None));
        t.add(&ev(Stage::Validate, 4_000, Some((1, 9))));
        t.add(&ev(Stage::Validate, 9_000, None));
        assert_eq!(
            t.json(),
            serde_json::json!([{"stage": "triage", "ms": 1500}, {"stage": "validate", "ms": 9000}])
        );
        let md = t.markdown();
        assert!(
            md.contains("| triage | 1.5 |") && md.contains("| all stages | 10.5 |"),
            "{md}"
        );
    }
}
